//! `keyward crd`: the CustomResourceDefinitions as YAML, the source of `crds/`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::api::{ApiKey, Credential, KeyUsage};
use crate::error::{Error, Result};

/// Every CRD of the operator.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![ApiKey::crd(), Credential::crd(), key_usage()]
}

/// The KeyUsage CRD, without a status subresource: the verifier is its only writer, and with
/// one its first write would be two (the create drops status; a status patch follows).
fn key_usage() -> CustomResourceDefinition {
    let mut crd = KeyUsage::crd();
    for version in &mut crd.spec.versions {
        version.subresources = None;
    }
    crd
}

/// Every CRD of the operator as one multi-document YAML string.
pub fn yaml() -> Result<String> {
    let mut out = String::new();
    for crd in all() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd).map_err(Error::Yaml)?);
    }
    Ok(out)
}
