//! From ApiKeys and Credentials (their spec and status; never a Secret) to the entries judged.
//!
//! Spec is read as well as status so that a change takes effect at once, before the controller
//! has reconciled it: `state: Inactive`, a removed Credential token, a shorter expiry.

use std::sync::Arc;
use std::time::Duration;

use super::{Entry, ObjectKey, Policy, Standing};
use crate::api::validate::{self, ExpiryPolicy};
use crate::api::{ApiKey, Credential, Key, KeyPolicy, KeyState, Kind, Phase};
use crate::token::TokenHash;

/// Expiry as the spec alone sets it: a spec naming none leaves it to status (the operator's
/// `--default-expiry` is not known here), because the default saturates to the end of time.
const SPEC_ONLY: ExpiryPolicy = ExpiryPolicy { default: Duration::MAX, max: None };

fn policy(policy: &KeyPolicy, valid: Option<KeyState>, failed_now: bool) -> Arc<Policy> {
    let standing = match valid {
        _ if failed_now => Standing::Invalid,
        None => Standing::Invalid,
        Some(KeyState::Active) => Standing::Active,
        Some(KeyState::Inactive) => Standing::Inactive,
    };
    let cidrs = policy.allowed_cidrs.iter().filter_map(|c| validate::parse_cidr(c).ok()).collect();
    let scopes = policy.scopes.iter().map(|s| s.as_str().into()).collect();
    let applications = policy.applications.as_ref().filter(|apps| !apps.allows_all()).cloned().map(Box::new);
    Arc::new(Policy { scopes, cidrs, standing, applications })
}

/// Whether the controller marked this very generation as failed (a spec the verifier cannot
/// check alone, such as one beyond `--max-expiry`).
fn failed_now(meta: &kube::api::ObjectMeta, phase: Option<Phase>, observed: Option<i64>) -> bool {
    phase == Some(Phase::Failed) && observed.is_some() && observed == meta.generation
}

/// A kind of key whose objects hold tokens to judge.
pub trait Judged: Key {
    /// The entries of this object's tokens (none while pending or being deleted).
    fn entries(&self) -> Vec<Entry>;
}

impl Judged for ApiKey {
    fn entries(&self) -> Vec<Entry> {
        apikey_entries(self)
    }
}

impl Judged for Credential {
    fn entries(&self) -> Vec<Entry> {
        credential_entries(self)
    }
}

/// The index entry of an ApiKey that holds a token; none while pending or being deleted.
pub fn apikey_entries(key: &ApiKey) -> Vec<Entry> {
    let Some(status) = &key.status else { return Vec::new() };
    let (Some(hash), Some(status_expiry), Some(key_id)) = (
        status.record.token_hash.as_deref().and_then(TokenHash::parse),
        &status.record.expires_at,
        &status.record.key_id,
    ) else {
        return Vec::new();
    };
    let Some(created) = &key.metadata.creation_timestamp else { return Vec::new() };
    if key.metadata.deletion_timestamp.is_some() {
        return Vec::new();
    }
    let valid = validate::api_key(key, created.0, &SPEC_ONLY).ok();
    let expires_at = valid.as_ref().map_or(status_expiry.0, |v| v.expires_at.min(status_expiry.0));
    let failed = failed_now(&key.metadata, status.record.phase, status.observed_generation);
    vec![Entry {
        digest: hash.digest(),
        object: Arc::new(ObjectKey::of(Kind::ApiKey, key)),
        uid: key.metadata.uid.as_deref().map(Arc::from),
        token: None,
        key_id: key_id.as_str().into(),
        expires_at,
        policy: policy(&key.spec.policy, valid.map(|v| v.state), failed),
        usage_mark: Default::default(),
    }]
}

/// The index entries of a Credential: one per issued token still named in spec.
pub fn credential_entries(credential: &Credential) -> Vec<Entry> {
    let Some(status) = &credential.status else { return Vec::new() };
    let Some(created) = &credential.metadata.creation_timestamp else { return Vec::new() };
    if credential.metadata.deletion_timestamp.is_some() {
        return Vec::new();
    }
    let valid = validate::credential(credential, created.0, &SPEC_ONLY).ok();
    let failed = failed_now(&credential.metadata, status.phase, status.observed_generation);
    let shared = policy(&credential.spec.policy, valid.as_ref().map(|v| v.state), failed);
    let object = Arc::new(ObjectKey::of(Kind::Credential, credential));
    let uid: Option<Arc<str>> = credential.metadata.uid.as_deref().map(Arc::from);
    status
        .tokens
        .iter()
        // A token removed from spec stops working now, whatever status still says.
        .filter(|issued| credential.spec.tokens.iter().any(|t| t.name == issued.name))
        .filter_map(|issued| {
            let hash = TokenHash::parse(issued.record.token_hash.as_deref()?)?;
            let status_expiry = issued.record.expires_at.as_ref()?.0;
            let spec_expiry = valid
                .as_ref()
                .and_then(|v| v.tokens.iter().find(|t| t.name == issued.name))
                .zip(issued.record.issued_at.as_ref())
                .and_then(|(token, first_issued)| token.expires_at(first_issued.0, &SPEC_ONLY).ok());
            Some(Entry {
                digest: hash.digest(),
                object: object.clone(),
                uid: uid.clone(),
                token: Some(issued.name.as_str().into()),
                key_id: issued.record.key_id.as_deref()?.into(),
                expires_at: spec_expiry.map_or(status_expiry, |at| at.min(status_expiry)),
                policy: shared.clone(),
                usage_mark: Default::default(),
            })
        })
        .collect()
}
