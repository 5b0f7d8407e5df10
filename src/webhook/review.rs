//! What admission decides about one write of a key, purely: whether its spec is valid (the very
//! checks the controller runs), whether `keyward.io/created-by` is kept, which scopes the
//! writer must be allowed to grant, and the patch that records the creator. The grant check
//! itself needs the API server and is made by the caller for the scopes returned here.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use super::grant::{InUse, scopes_to_grant};
use crate::api::expiry::ExpiryPolicy;
use crate::api::validate;
use crate::api::{ANNOTATION_CREATED_BY, ApiKey, Credential};

/// A key as admission sees it.
#[derive(Debug)]
pub enum Key {
    ApiKey(ApiKey),
    Credential(Credential),
}

impl Key {
    /// Reads the object of an AdmissionReview of `kind`; a body that is not a key of that kind
    /// is named, never repeated.
    pub fn parse(kind: &str, object: Value) -> Result<Self, Refusal> {
        // serde's message may quote a value, which may be a token: only its class is told.
        let malformed = |e: serde_json::Error| {
            Refusal::Malformed(format!("not a valid {kind}: {:?} error in the object", e.classify()).to_lowercase())
        };
        match kind {
            "ApiKey" => serde_json::from_value(object).map(Key::ApiKey).map_err(malformed),
            "Credential" => serde_json::from_value(object).map(Key::Credential).map_err(malformed),
            other => Err(Refusal::Malformed(format!("keyward webhook admits ApiKeys and Credentials, not {other}"))),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Key::ApiKey(_) => "ApiKey",
            Key::Credential(_) => "Credential",
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Key::ApiKey(key) => &key.metadata,
            Key::Credential(credential) => &credential.metadata,
        }
    }

    /// Its creation time, or `now` for an object not created yet.
    fn created(&self, now: Timestamp) -> Timestamp {
        self.meta().creation_timestamp.as_ref().map_or(now, |t| t.0)
    }

    fn validate(&self, created: Timestamp, expiry: &ExpiryPolicy) -> Result<(), validate::SpecError> {
        match self {
            Key::ApiKey(key) => validate::api_key(key, created, expiry).map(drop),
            Key::Credential(credential) => validate::credential(credential, created, expiry).map(drop),
        }
    }

    /// What of this spec is in use, with expiries counted as the controller counts them.
    /// `issued` is the key as stored (its status says when each Credential token was first
    /// issued; a write of the main resource cannot change status).
    fn in_use(&self, issued: &Key, now: Timestamp, expiry: &ExpiryPolicy) -> InUse {
        match self {
            Key::ApiKey(key) => InUse::of_apikey(key, issued.created(now), expiry),
            Key::Credential(credential) => {
                let tokens = match issued {
                    Key::Credential(stored) => stored.status.as_ref().map(|s| s.tokens.as_slice()).unwrap_or_default(),
                    Key::ApiKey(_) => &[],
                };
                let first_issue = |name: &str| {
                    tokens
                        .iter()
                        .find(|t| t.name == name)
                        .and_then(|t| t.record.issued_at.as_ref())
                        .map_or(now, |t| t.0)
                };
                InUse::of_credential(credential, first_issue, expiry)
            }
        }
    }

    fn created_by(&self) -> Option<&str> {
        self.meta().annotations.as_ref()?.get(ANNOTATION_CREATED_BY).map(String::as_str)
    }
}

/// Why a write is refused, with the HTTP code the AdmissionReview answers with.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The writer may not grant a scope (403).
    Grant(String),
    /// The spec breaks a rule of the contract (422), naming the field and the value.
    Spec(String),
    /// `keyward.io/created-by` changed (422).
    CreatedBy(String),
    /// The request is not a key of a kind this webhook admits (400).
    Malformed(String),
    /// A check could not be made (the SubjectAccessReview failed): refused, never let through
    /// (500, so that it reads as the outage it is, not as a missing permission).
    Unavailable(String),
}

impl Refusal {
    pub fn code(&self) -> u16 {
        match self {
            Refusal::Grant(_) => 403,
            Refusal::Spec(_) | Refusal::CreatedBy(_) => 422,
            Refusal::Malformed(_) => 400,
            Refusal::Unavailable(_) => 500,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Refusal::Grant(m)
            | Refusal::Spec(m)
            | Refusal::CreatedBy(m)
            | Refusal::Malformed(m)
            | Refusal::Unavailable(m) => m,
        }
    }

    /// A fixed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Grant(_) => "denied_grant",
            Refusal::Spec(_) => "denied_spec",
            Refusal::CreatedBy(_) => "denied_created_by",
            Refusal::Malformed(_) => "denied_malformed",
            Refusal::Unavailable(_) => "error",
        }
    }
}

/// The checks of `/validate` that need no API server. `Ok` holds the scopes the writer must be
/// allowed to grant (none on an update that puts nothing new into use).
pub fn validate(
    user: &str,
    new: &Key,
    old: Option<&Key>,
    now: Timestamp,
    expiry: &ExpiryPolicy,
) -> Result<Vec<String>, Refusal> {
    let field = format!("metadata.annotations[{ANNOTATION_CREATED_BY}]");
    match (old.map(Key::created_by), new.created_by()) {
        // A create: the mutating webhook has set it to the writer (unless it is not installed).
        (None, Some(by)) if by != user => {
            return Err(Refusal::CreatedBy(format!(
                "{field}: invalid value {by:?}: it is set to the creating user ({user:?}) and cannot be chosen"
            )));
        }
        (Some(Some(was)), now_by) if now_by != Some(was) => {
            return Err(Refusal::CreatedBy(format!(
                "{field}: invalid value {:?}: it records who created the key ({was:?}) and cannot be changed",
                now_by.unwrap_or_default()
            )));
        }
        // A key from before the webhook has no creator, and gets none: one would be made up.
        (Some(None), Some(by)) => {
            return Err(Refusal::CreatedBy(format!(
                "{field}: invalid value {by:?}: it is set only when a key is created, and this key was created without it"
            )));
        }
        _ => {}
    }
    new.validate(new.created(now), expiry).map_err(|error| Refusal::Spec(error.to_string()))?;
    let stored = old.unwrap_or(new);
    let before = old.map(|old| old.in_use(stored, now, expiry));
    Ok(scopes_to_grant(before.as_ref(), &new.in_use(stored, now, expiry)))
}

/// The JSON patch of `/mutate`: on a create, `keyward.io/created-by` is the writer, whatever the
/// request said; on an update that dropped it (a `kubectl replace`, a GitOps apply without it)
/// it is carried over. `None` when nothing needs changing.
pub fn created_by_patch(user: &str, new: &ObjectMeta, old: Option<&ObjectMeta>) -> Option<Value> {
    let annotation = |meta: &ObjectMeta| meta.annotations.as_ref()?.get(ANNOTATION_CREATED_BY).cloned();
    let wanted = match old {
        None => user.to_string(),
        Some(old) => match (annotation(old), annotation(new)) {
            (Some(was), None) => was,
            _ => return None,
        },
    };
    if annotation(new).as_deref() == Some(wanted.as_str()) {
        return None;
    }
    // JSON Pointer escapes '/' as '~1'.
    let path = format!("/metadata/annotations/{}", ANNOTATION_CREATED_BY.replace('~', "~0").replace('/', "~1"));
    Some(match &new.annotations {
        Some(_) => json!([{ "op": "add", "path": path, "value": wanted }]),
        None => json!([{ "op": "add", "path": "/metadata/annotations", "value": { ANNOTATION_CREATED_BY: wanted } }]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-12-01T00:00:00Z".parse().expect("ts")
    }

    fn key(spec: Value, created_by: Option<&str>) -> Key {
        let mut object = json!({"apiVersion": "keyward.io/v1alpha1", "kind": "ApiKey", "metadata": {"name": "k", "namespace": "team-a"}, "spec": spec});
        if let Some(by) = created_by {
            object["metadata"]["annotations"] = json!({ ANNOTATION_CREATED_BY: by });
        }
        Key::parse("ApiKey", object).expect("a key")
    }

    #[test]
    fn a_create_grants_its_scopes_after_the_controllers_own_validation() {
        let new = key(json!({"scopes": ["orders.read"]}), Some("alice"));
        assert_eq!(validate("alice", &new, None, now(), &ExpiryPolicy::default()), Ok(vec!["orders.read".into()]));
        let bad = key(json!({"expiresAfter": "3x"}), Some("alice"));
        let refused = validate("alice", &bad, None, now(), &ExpiryPolicy::default()).expect_err("bad spec");
        assert_eq!(refused.code(), 422);
        assert!(refused.message().starts_with("spec.expiresAfter: invalid value \"3x\""), "{refused:?}");
        let capped = ExpiryPolicy { max: Some(std::time::Duration::from_secs(86_400)), ..Default::default() };
        let long = key(json!({"expiresAfter": "2d"}), Some("alice"));
        assert!(
            validate("alice", &long, None, now(), &capped)
                .expect_err("beyond --max-expiry")
                .message()
                .contains("max-expiry")
        );
    }

    #[test]
    fn created_by_is_the_creator_and_never_changes() {
        let expiry = ExpiryPolicy::default();
        let forged = key(json!({}), Some("mallory"));
        assert_eq!(validate("alice", &forged, None, now(), &expiry).expect_err("forged").code(), 422);
        let old = key(json!({}), Some("alice"));
        let changed = key(json!({"description": "x"}), Some("bob"));
        let refused = validate("bob", &changed, Some(&old), now(), &expiry).expect_err("changed");
        assert!(refused.message().contains("cannot be changed"), "{refused:?}");
        let dropped = key(json!({}), None);
        assert!(validate("bob", &dropped, Some(&old), now(), &expiry).is_err(), "dropped after mutation failed");
        let kept = key(json!({"description": "x"}), Some("alice"));
        assert_eq!(validate("bob", &kept, Some(&old), now(), &expiry), Ok(vec![]));
        let unrecorded = key(json!({}), None);
        assert_eq!(
            validate("bob", &key(json!({}), None), Some(&unrecorded), now(), &expiry),
            Ok(vec![]),
            "a key from before the webhook"
        );
        let invented = validate("bob", &key(json!({}), Some("alice")), Some(&unrecorded), now(), &expiry);
        assert_eq!(invented.expect_err("a creator made up later").code(), 422);
    }

    #[test]
    fn the_patch_sets_the_creator_on_create_and_carries_it_over_on_update() {
        let meta = |by: Option<&str>| key(json!({}), by).meta().clone();
        assert_eq!(
            created_by_patch("alice", &meta(None), None),
            Some(json!([{"op": "add", "path": "/metadata/annotations", "value": {"keyward.io/created-by": "alice"}}]))
        );
        assert_eq!(
            created_by_patch("alice", &meta(Some("mallory")), None),
            Some(json!([{"op": "add", "path": "/metadata/annotations/keyward.io~1created-by", "value": "alice"}]))
        );
        assert_eq!(created_by_patch("alice", &meta(Some("alice")), None), None);
        assert_eq!(
            created_by_patch("bob", &meta(None), Some(&meta(Some("alice")))),
            Some(json!([{"op": "add", "path": "/metadata/annotations", "value": {"keyward.io/created-by": "alice"}}]))
        );
        assert_eq!(
            created_by_patch("bob", &meta(Some("eve")), Some(&meta(Some("alice")))),
            None,
            "validate refuses it"
        );
        assert_eq!(created_by_patch("bob", &meta(None), Some(&meta(None))), None);
    }

    fn credential(tokens: Value, issued: &[(&str, &str)]) -> Key {
        let status: Vec<Value> = issued.iter().map(|(name, at)| json!({"name": name, "issuedAt": at})).collect();
        Key::parse(
            "Credential",
            json!({"apiVersion": "keyward.io/v1alpha1", "kind": "Credential",
                   "metadata": {"name": "c", "namespace": "team-a", "creationTimestamp": "2026-01-01T00:00:00Z"},
                   "spec": {"scopes": ["a.read"], "tokens": tokens}, "status": {"tokens": status}}),
        )
        .expect("a credential")
    }

    #[test]
    fn a_credential_tokens_expiry_is_judged_from_its_first_issue_as_the_controller_judges_it() {
        // Issued on June 1 until July 1; then rewritten to "90d": from June 1 that is August 30,
        // later than July 1, though from the Credential's creation (January 1) it looks earlier.
        let old = credential(
            json!([{"name": "next", "expiresAt": "2026-07-01T00:00:00Z"}]),
            &[("next", "2026-06-01T00:00:00Z")],
        );
        let new = credential(json!([{"name": "next", "expiresAfter": "90d"}]), &[("next", "2026-06-01T00:00:00Z")]);
        let at = "2026-06-15T00:00:00Z".parse().expect("ts");
        assert_eq!(validate("bob", &new, Some(&old), at, &ExpiryPolicy::default()), Ok(vec!["a.read".to_string()]));
        let shorter = credential(json!([{"name": "next", "expiresAfter": "10d"}]), &[("next", "2026-06-01T00:00:00Z")]);
        assert_eq!(validate("bob", &shorter, Some(&old), at, &ExpiryPolicy::default()), Ok(vec![]));
    }

    #[test]
    fn shortening_a_key_beyond_a_newer_cap_needs_no_grant() {
        let capped = ExpiryPolicy { max: Some(std::time::Duration::from_secs(86_400)), ..Default::default() };
        let old = key(json!({"scopes": ["a.read"], "expiresAfter": "30d"}), Some("alice"));
        let shorter = key(json!({"scopes": ["a.read"], "expiresAfter": "20d"}), Some("alice"));
        // Still beyond the cap: refused as a spec, not as a grant.
        let refused = validate("bob", &shorter, Some(&old), now(), &capped).expect_err("beyond the cap");
        assert_eq!(refused.code(), 422);
        let within = key(json!({"scopes": ["a.read"], "expiresAfter": "12h"}), Some("alice"));
        assert_eq!(validate("bob", &within, Some(&old), now(), &capped), Ok(vec![]));
    }

    #[test]
    fn a_body_that_is_not_a_key_is_named_without_its_content() {
        let refused = Key::parse("ApiKey", json!({"spec": {"scopes": "kw_secret"}})).expect_err("not a key");
        assert_eq!(refused.code(), 400);
        assert!(!refused.message().contains("kw_secret"), "{refused:?}");
        assert_eq!(Key::parse("Secret", json!({})).expect_err("other kind").code(), 400);
    }
}
