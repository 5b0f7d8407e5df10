//! What the controller, the verifier, the plugin and the benches know of every kind of key.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{ApiKey, Credential, KeyPolicy, Kind, Phase, TokenRecord};

/// An ApiKey or a Credential: a policy in spec; a phase, conditions and token records in status.
pub trait Key:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    const KIND: Kind;
    fn policy(&self) -> &KeyPolicy;
    fn phase(&self) -> Option<Phase>;
    fn observed_generation(&self) -> Option<i64>;
    fn conditions(&self) -> &[Condition];
    /// The record of each token in status, with the token's name (`None` for an ApiKey's one).
    fn records(&self) -> Vec<(Option<&str>, &TokenRecord)>;
}

impl Key for ApiKey {
    const KIND: Kind = Kind::ApiKey;

    fn policy(&self) -> &KeyPolicy {
        &self.spec.policy
    }

    fn phase(&self) -> Option<Phase> {
        self.status.as_ref()?.record.phase
    }

    fn observed_generation(&self) -> Option<i64> {
        self.status.as_ref()?.observed_generation
    }

    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default()
    }

    fn records(&self) -> Vec<(Option<&str>, &TokenRecord)> {
        self.status.as_ref().map(|s| (None, &s.record)).into_iter().collect()
    }
}

impl Key for Credential {
    const KIND: Kind = Kind::Credential;

    fn policy(&self) -> &KeyPolicy {
        &self.spec.policy
    }

    fn phase(&self) -> Option<Phase> {
        self.status.as_ref()?.phase
    }

    fn observed_generation(&self) -> Option<i64> {
        self.status.as_ref()?.observed_generation
    }

    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default()
    }

    fn records(&self) -> Vec<(Option<&str>, &TokenRecord)> {
        let tokens = self.status.as_ref().map(|s| s.tokens.as_slice()).unwrap_or_default();
        tokens.iter().map(|t| (Some(t.name.as_str()), &t.record)).collect()
    }
}
