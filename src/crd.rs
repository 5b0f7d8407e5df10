//! `keyward crd`: the CustomResourceDefinitions as YAML, the source of `crds/`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::api::{ApiKey, Credential, KeyUsage};
use crate::error::{Error, Result};

/// Every CRD of the operator.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![ApiKey::crd(), Credential::crd(), KeyUsage::crd()]
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
