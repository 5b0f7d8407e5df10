//! The custom resources of `keyward.io/v1alpha1` and the names the contract fixes.

pub mod apikey;
pub mod applications;
pub mod credential;
pub mod expiry;
mod key;
pub mod names;
mod record;
pub mod usage;
pub mod validate;

pub use apikey::{ApiKey, ApiKeySpec, ApiKeyStatus};
pub use applications::{AppDefault, AppState, Applications};
pub use credential::{Credential, CredentialSpec, CredentialStatus, CredentialToken, TokenStatus};
pub use key::Key;
pub use record::TokenRecord;
pub use usage::{AppUsage, KeyUsage, KeyUsageSpec, KeyUsageStatus, TokenUsage};

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "keyward.io";
pub const VERSION: &str = "v1alpha1";

/// Label on every Secret the operator writes; the only Secrets it watches or caches.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "keyward";
pub const LABEL_OWNER_UID: &str = "keyward.io/owner-uid";

pub const ANNOTATION_TOKEN_HASH: &str = "keyward.io/token-hash";
pub const ANNOTATION_KEY_ID: &str = "keyward.io/key-id";
pub const ANNOTATION_ISSUED_AT: &str = "keyward.io/issued-at";
pub const ANNOTATION_EXPIRES_AT: &str = "keyward.io/expires-at";
pub const ANNOTATION_OWNER: &str = "keyward.io/owner";
/// Who created a key: set by the mutating webhook on create (the requesting user), immutable.
pub const ANNOTATION_CREATED_BY: &str = "keyward.io/created-by";
/// Which label, annotation and data keys came from `secretTemplate`, so that a key removed
/// from the template is removed from the Secret while keys added by others stay.
pub const ANNOTATION_TEMPLATE_KEYS: &str = "keyward.io/template-keys";

/// `type` of every Secret the operator writes.
pub const SECRET_TYPE: &str = "keyward.io/token";
/// The Secret data key that holds the token.
pub const SECRET_TOKEN_KEY: &str = "token";

/// The most scopes one key grants, and the longest scope: a granted request carries every scope
/// in one `X-Keyward-Scopes` header, which must fit a proxy's header buffer (64 × 128 is 8 KiB).
pub const MAX_KEY_SCOPES: usize = 64;
pub const MAX_SCOPE_LENGTH: usize = 128;

/// Condition type: the only one, true only when the key can be used.
pub const CONDITION_READY: &str = "Ready";

/// Condition reasons and event reasons.
pub mod reason {
    pub const ISSUED: &str = "Issued";
    pub const INACTIVE: &str = "Inactive";
    pub const EXPIRED: &str = "Expired";
    pub const SECRET_CONFLICT: &str = "SecretConflict";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const PENDING: &str = "Pending";
    pub const TOKEN_REISSUED: &str = "TokenReissued";
}

/// The kinds of key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    ApiKey,
    Credential,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ApiKey => "ApiKey",
            Kind::Credential => "Credential",
        }
    }
}

/// Whether a key may be used. Absent means `Active`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum KeyState {
    #[default]
    Active,
    Inactive,
}

/// Where a key is in its life.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    Pending,
    Active,
    Inactive,
    Expired,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Active => "Active",
            Phase::Inactive => "Inactive",
            Phase::Expired => "Expired",
            Phase::Failed => "Failed",
        }
    }
}

/// What every kind of key shares: what it is for, what it grants, from where, and how its
/// tokens and Secrets look. Flattened into each spec, so the fields sit directly under `spec`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyPolicy {
    /// What the key is for, shown to people (at most 1024 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,

    /// Scopes granted: dot-separated segments of A-Z, a-z, 0-9, '_' and '-'; '*' matches one
    /// segment and a final '>' one or more (`orders.read`, `deploy.>`). At most 64, each at most
    /// 128 characters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_KEY_SCOPES), inner(length(max = MAX_SCOPE_LENGTH)))]
    pub scopes: Vec<String>,

    /// Active (the default) or Inactive. An inactive key keeps its Secrets but is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "state_schema")]
    pub state: Option<KeyState>,

    /// Client networks allowed to use the key, as CIDRs; empty allows any address.
    #[serde(default, rename = "allowedCIDRs", skip_serializing_if = "Vec::is_empty")]
    pub allowed_cidrs: Vec<String>,

    /// Token prefix, `^[a-z][a-z0-9]{0,15}$`; `kw` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_prefix: Option<String>,

    /// Labels, annotations and extra data copied onto the token Secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<SecretTemplate>,

    /// Which applications (named by `X-Keyward-App` or the `app` field) may use the key;
    /// absent allows every one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applications: Option<Applications>,
}

/// Copied onto the Secret that holds the token.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplate {
    /// Labels added to the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Extra plain-text entries written beside the token (the key `token` is reserved).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
}

/// Schema of an optional `state`: a plain string enum (schemars would add `null` to the enum,
/// which kubectl's client-side validation refuses).
pub(crate) fn state_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "enum": ["Active", "Inactive"]})
}

/// Drops the `default` schemars derives from `#[serde(default)]`: the API server would write it
/// into every stored spec, and the operator never adds defaults to spec (GitOps tools would see
/// drift).
pub(crate) fn no_default(schema: &mut schemars::Schema) {
    schema.remove("default");
}

/// Sets the descriptions of some of an object schema's properties: a record shared by two kinds
/// says what each field means for each.
pub(crate) fn describe(schema: &mut schemars::Schema, descriptions: &[(&str, &str)]) {
    let Some(properties) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) else { return };
    for (field, description) in descriptions {
        if let Some(property) = properties.get_mut(*field).and_then(|p| p.as_object_mut()) {
            property.insert("description".into(), (*description).into());
        }
    }
}

/// Schema of an optional `phase`, for the same reason.
pub(crate) fn phase_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "enum": ["Pending", "Active", "Inactive", "Expired", "Failed"]})
}
