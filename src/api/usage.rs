//! The `KeyUsage` resource: when a key was last used and which applications presented it.
//! Written only by the verifier's usage recorder ([`crate::usage`]); one per key, beside it,
//! owned by it (so it goes with the key).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{AppState, Kind};

/// The most applications one KeyUsage lists (those seen most recently); the others are counted
/// in `applicationsOverflow`.
pub const MAX_APPLICATIONS: usize = 64;

/// Which key a KeyUsage describes. The object's name says it too (`apikey.<name>`,
/// `credential.<name>`), and its controller ownerReference names the key's UID.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "keyward.io",
    version = "v1alpha1",
    kind = "KeyUsage",
    plural = "keyusages",
    shortname = "ku",
    category = "keyward",
    namespaced,
    status = "KeyUsageStatus",
    doc = "When a key was last used and which applications presented it, written by the verifier.",
    printcolumn = r#"{"name":"Last Used","type":"date","jsonPath":".status.lastUsedAt"}"#,
    printcolumn = r#"{"name":"Apps","type":"integer","jsonPath":".status.applicationCount"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct KeyUsageSpec {
    /// ApiKey or Credential.
    #[schemars(schema_with = "kind_schema")]
    pub kind: String,
    /// The key's metadata.name.
    pub name: String,
}

fn kind_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "enum": ["ApiKey", "Credential"]})
}

/// What the verifiers saw. Times are truncated to the verifier's `--usage-resolution` and only
/// move forward; replicas merge what they saw.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyUsageStatus {
    /// The last request answered VALID (an API token, an access token or an exchange).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<Time>,
    /// A Credential's tokens, each with its last VALID answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub tokens: Vec<TokenUsage>,
    /// Applications that presented the key (at most 64), with the verdict at the last sighting.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_APPLICATIONS))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub applications: Vec<AppUsage>,
    /// How many applications are listed (the Apps printer column).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub application_count: i64,
    /// How many times an application was left out of the list, or gave its place to one seen
    /// later, because 64 were listed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub applications_overflow: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// The last use of one Credential token.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    /// The token's name in spec.tokens.
    pub name: String,
    /// Its last VALID answer.
    pub last_used_at: Time,
}

/// One application that presented the key.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppUsage {
    /// The application's name, as X-Keyward-App or the app field gave it.
    pub name: String,
    /// The verdict at the last sighting: Allowed, Pending or Denied.
    pub state: AppState,
    /// Its first sighting.
    pub first_seen_at: Time,
    /// Its last sighting, whatever the answer.
    pub last_seen_at: Time,
}

/// The KeyUsage of key `name` of `kind`.
pub fn usage_name(kind: Kind, name: &str) -> String {
    match kind {
        Kind::ApiKey => format!("apikey.{name}"),
        Kind::Credential => format!("credential.{name}"),
    }
}
