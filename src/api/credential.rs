//! The `Credential` resource: one identity with shared scopes and state, holding several
//! tokens, each with its own expiry and its own Secret (for rotation without downtime).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{KeyPolicy, Phase, TokenRecord};

/// The most tokens one Credential holds.
pub const MAX_TOKENS: usize = 16;
/// The longest token name.
pub const MAX_TOKEN_NAME: usize = 20;

/// A credential: one identity whose tokens rotate with overlap.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "keyward.io",
    version = "v1alpha1",
    kind = "Credential",
    plural = "credentials",
    shortname = "cred",
    category = "keyward",
    namespaced,
    status = "CredentialStatus",
    doc = "A credential: one identity with shared scopes and state, and several tokens, each in its own Secret.",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Tokens","type":"integer","description":"Active tokens","jsonPath":".status.activeTokens"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CredentialSpec {
    /// Description, scopes, state, allowed CIDRs, token prefix and Secret template, shared by
    /// every token: a change applies to all of them at once.
    #[serde(flatten)]
    pub policy: KeyPolicy,

    /// The tokens, at most 16, keyed by name. Each lives in Secret `<credential>-<name>`.
    #[serde(default)]
    #[schemars(length(max = 16), transform = super::no_default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub tokens: Vec<CredentialToken>,
}

/// One token of a Credential.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialToken {
    /// A DNS label of at most 20 characters, unique in the Credential.
    pub name: String,

    /// Lifetime counted from the token's first issue (`30d`, `12h`, `1w2d`). Exclusive with
    /// expiresAt; when both are absent the operator's default applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_after: Option<String>,

    /// Absolute expiry as an RFC 3339 timestamp. Exclusive with expiresAfter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// What the operator observed and did. Holds token hashes, never tokens.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialStatus {
    /// Pending, Active, Inactive, Expired or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::phase_schema")]
    pub phase: Option<Phase>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// How many tokens are usable now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_tokens: Option<i32>,
    /// One entry per token in spec.
    // Written even when empty: a status that empties it is then told apart and written by a
    // merge patch (see `controller::status::apply`), since server-side apply on 1.20 leaves
    // `tokens: null` behind when the last entry goes, which the schema refuses.
    #[serde(default)]
    #[schemars(transform = super::no_default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub tokens: Vec<TokenStatus>,
    /// `Ready` is True only when the phase is Active.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The public record of one Credential token.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = describe_record)]
pub struct TokenStatus {
    /// The token's name in spec.tokens.
    pub name: String,
    /// Its phase, identity and Secret, and when it was first issued and expires.
    #[serde(flatten)]
    pub record: TokenRecord,
}

/// What the record's fields mean for one token of several.
fn describe_record(schema: &mut schemars::Schema) {
    super::describe(
        schema,
        &[
            ("keyId", "Public identifier of the token."),
            ("issuedAt", "When this token was first issued; its expiresAfter counts from here, also across re-issues."),
            ("expiresAt", "When the token expires."),
        ],
    );
}

impl Credential {
    /// The Secret of the token named `token`.
    pub fn secret_name(&self, token: &str) -> String {
        format!("{}-{token}", self.metadata.name.as_deref().unwrap_or_default())
    }
}
