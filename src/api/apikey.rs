//! The `ApiKey` resource: one token in one Secret.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{KeyPolicy, TokenRecord};

/// An API key: the operator issues one token into a Secret and keeps only its hash here.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "keyward.io",
    version = "v1alpha1",
    kind = "ApiKey",
    plural = "apikeys",
    shortname = "ak",
    category = "keyward",
    namespaced,
    status = "ApiKeyStatus",
    doc = "An API key: one token, issued into a Secret, with only its hash in status.",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Key ID","type":"string","jsonPath":".status.keyId"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","jsonPath":".status.expiresAt"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeySpec {
    /// Description, scopes, state, allowed CIDRs, token prefix and Secret template.
    #[serde(flatten)]
    pub policy: KeyPolicy,

    /// Lifetime counted from the key's creation, in s, m, h, d and w units (`90d`, `12h`,
    /// `1w2d`). Exclusive with expiresAt; when both are absent the operator's default applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_after: Option<String>,

    /// Absolute expiry as an RFC 3339 timestamp. Exclusive with expiresAfter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,

    /// Name of the Secret that receives the token; `<metadata.name>-apikey` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

/// What the operator observed and did. Holds the token's hash, never the token.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = describe_record)]
pub struct ApiKeyStatus {
    /// The key's phase (its token's), the token's identity and Secret, and when it was issued
    /// and expires.
    #[serde(flatten)]
    pub record: TokenRecord,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` is True only when the phase is Active.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// What the record's fields mean for an ApiKey's one token.
fn describe_record(schema: &mut schemars::Schema) {
    super::describe(
        schema,
        &[
            ("keyId", "Public identifier of the token: prefix, '_' and the first 8 characters of its body."),
            ("issuedAt", "When the current token was issued."),
            ("expiresAt", "When the key expires."),
        ],
    );
}

impl ApiKey {
    /// The Secret that receives the token.
    pub fn secret_name(&self) -> String {
        match &self.spec.secret_name {
            Some(name) => name.clone(),
            None => format!("{}-apikey", self.metadata.name.as_deref().unwrap_or_default()),
        }
    }
}
