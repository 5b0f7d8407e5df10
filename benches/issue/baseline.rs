//! The floor the controller is measured against: a minimal client that issues each key itself,
//! writing what the controller would (the Secret by the controller's own builder, the status by
//! server-side apply), for ApiKeys that already exist as they do when the controller starts;
//! and the raw status writes of the profile.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1 as events;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use keyward::api::Key;
use keyward::api::{ApiKey, Credential, SecretTemplate};
use keyward::controller::Reconciled;
use keyward::controller::secret::{Identity, TokenSecret};
use keyward::token::Token;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};

use super::{DEFAULT_EXPIRY, credential_name, new_credential};
use crate::common::{MANAGER, Result, status};

/// The floor's work for one key that already exists, as the controller does it: the
/// operator's Secret (create-only), then a status like the controller's (server-side apply,
/// forced); with `event`, also an `Issued` Event like the controller's.
pub async fn issue_directly(keys: Api<ApiKey>, secrets: Api<Secret>, key: ApiKey, event: bool) -> Result<()> {
    let name = key.name_any();
    let created = key.creation_timestamp().ok_or("an ApiKey without creationTimestamp")?.0;
    let expires_at = created.checked_add(DEFAULT_EXPIRY).map_err(|e| format!("expiry of {name}: {e}"))?;
    let now = Timestamp::now();
    let token = Token::generate("kw");
    let secret_name = format!("{name}-apikey");
    let template = key.spec.policy.secret_template.clone().unwrap_or_default();
    create_token_secret(&secrets, &key, &template, &secret_name, &token, now, expires_at).await?;
    let status = status::issued_apikey(&token, &secret_name, key.meta().generation, now, expires_at);
    apply_status(&keys, &name, status).await?;
    if event {
        let events: Api<events::Event> = Api::namespaced(keys.into_client(), &key.namespace().unwrap_or_default());
        events
            .create(&PostParams::default(), &issued_event(&key, &token, &secret_name))
            .await
            .map_err(|e| format!("create the Event of {name}: {e}"))?;
    }
    Ok(())
}

/// How a status is written, for the profile's comparison of the two.
#[derive(Clone, Copy, Debug)]
pub enum StatusWrite {
    /// Server-side apply, forced: what the controller does.
    Apply,
    /// A JSON merge patch of the whole status.
    Merge,
}

/// Only the status write of an issued key (the Secret left out), `how` it is sent.
pub async fn write_status(keys: Api<ApiKey>, key: ApiKey, how: StatusWrite) -> Result<()> {
    let name = key.name_any();
    let now = Timestamp::now();
    let expires_at = now.checked_add(DEFAULT_EXPIRY).map_err(|e| format!("expiry of {name}: {e}"))?;
    let token = Token::generate("kw");
    let status = status::issued_apikey(&token, &format!("{name}-apikey"), key.meta().generation, now, expires_at);
    match how {
        StatusWrite::Apply => apply_status(&keys, &name, status).await,
        StatusWrite::Merge => {
            let params = PatchParams { field_manager: Some(MANAGER.into()), ..PatchParams::default() };
            keys.patch_status(&name, &params, &Patch::Merge(&serde_json::json!({ "status": status })))
                .await
                .map_err(|e| format!("merge-patch the status of ApiKey {name}: {e}"))?;
            Ok(())
        }
    }
}

/// An `Issued` Event like the controller's (`Context::publish`).
fn issued_event(key: &ApiKey, token: &Token, secret_name: &str) -> events::Event {
    let regarding = key.object_ref(&());
    let now = Timestamp::now();
    events::Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{:x}", key.name_any(), now.as_nanosecond())),
            namespace: regarding.namespace.clone(),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some("Normal".into()),
        reason: Some("Issued".into()),
        note: Some(format!("issued token {} into Secret {secret_name}", token.key_id())),
        action: Some("Reconcile".into()),
        regarding: Some(regarding),
        reporting_controller: Some("keyward-controller".into()),
        reporting_instance: Some("keyward-controller".into()),
        ..events::Event::default()
    }
}

/// What a minimal client does for one Credential: the Credential, then the operator's Secret
/// for each token (create-only, one after the other as the controller's reconcile
/// writes them), then one status like the controller's with every token.
pub async fn issue_credential_directly(
    credentials: Api<Credential>,
    secrets: Api<Secret>,
    i: usize,
    tokens: usize,
) -> Result<()> {
    let name = credential_name(i);
    let credential = credentials
        .create(&PostParams::default(), &new_credential(&name, tokens))
        .await
        .map_err(|e| format!("create Credential {name}: {e}"))?;
    let template = credential.spec.policy.secret_template.clone().unwrap_or_default();
    // A token's expiresAfter (here the operator's default) counts from its first issue.
    let now = Timestamp::now();
    let expires_at = now.checked_add(DEFAULT_EXPIRY).map_err(|e| format!("expiry of {name}: {e}"))?;
    let mut entries = Vec::with_capacity(tokens);
    for token_spec in &credential.spec.tokens {
        let token = Token::generate("kw");
        let secret_name = credential.secret_name(&token_spec.name);
        create_token_secret(&secrets, &credential, &template, &secret_name, &token, now, expires_at).await?;
        entries.push(serde_json::json!({
            "name": token_spec.name,
            "keyId": token.key_id(),
            "tokenHash": token.hash().to_string(),
            "secretName": secret_name,
            "issuedAt": Time(now),
            "expiresAt": Time(expires_at),
            "phase": "Active",
        }));
    }
    let generation = credential.meta().generation;
    let names: Vec<&str> = credential.spec.tokens.iter().map(|t| t.name.as_str()).collect();
    let status = serde_json::json!({
        "phase": "Active",
        "observedGeneration": generation,
        "activeTokens": entries.len(),
        "tokens": entries,
        "conditions": [status::issued_condition(format!("{tokens} token(s) issued: {}", names.join(", ")), generation, now)],
    });
    apply_status(&credentials, &name, status).await
}

/// Creates the Secret the controller would for one token of `object`, built by the
/// controller's own builder (`TokenSecret::build`) so that the baseline cannot drift from it.
async fn create_token_secret<K: Reconciled>(
    secrets: &Api<Secret>,
    object: &K,
    template: &SecretTemplate,
    secret_name: &str,
    token: &Token,
    issued_at: Timestamp,
    expires_at: Timestamp,
) -> Result<()> {
    let identity = Identity::of(object)?;
    let secret =
        TokenSecret { name: secret_name, owner: &identity.owner, expires_at, template }.build(token, issued_at);
    secrets.create(&PostParams::default(), &secret).await.map_err(|e| format!("create Secret {secret_name}: {e}"))?;
    Ok(())
}

/// Writes a status the way the controller does: server-side apply, forced.
async fn apply_status<K: Key>(api: &Api<K>, name: &str, status: serde_json::Value) -> Result<()> {
    let patch = status::apply_patch::<K>(status);
    api.patch_status(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(|e| format!("apply the status of {} {name}: {e}", K::kind(&())))?;
    Ok(())
}
