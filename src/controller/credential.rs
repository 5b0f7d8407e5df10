//! The Credential reconciler: the ApiKey pipeline once per token, plus removal of the Secrets of
//! tokens taken out of spec.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::issuer::{self, FirstRead, Recorded, TokenTarget};
use super::secret::{Found, Identity, Owner, SecretStore, TokenSecret, annotation, classify};
use super::status::ready_condition;
use super::transition::TokenOutcome;
use super::{Context, Reconciled};
use crate::api::validate::{self, ValidCredential, ValidToken};
use crate::api::{
    ANNOTATION_ISSUED_AT, Credential, CredentialStatus, KeyState, Phase, TokenRecord, TokenStatus, reason,
};
use crate::error::Result;
use crate::token::TokenHash;

impl Reconciled for Credential {
    type Status = CredentialStatus;

    fn status_of(&self) -> Option<&CredentialStatus> {
        self.status.as_ref()
    }

    async fn reconcile(credential: Arc<Credential>, ctx: Arc<Context>) -> Result<Action> {
        reconcile_credential(&credential, &ctx).await
    }
}

async fn reconcile_credential(credential: &Credential, ctx: &Context) -> Result<Action> {
    let Identity { owner, namespace, created } = Identity::of(credential)?;
    let now = Timestamp::now();
    let previous = credential.status.clone().unwrap_or_default();

    let valid = match validate::credential(credential, created, &ctx.settings.expiry) {
        Ok(valid) => valid,
        Err(error) => return ctx.refuse(credential, &error, now).await,
    };
    let secrets = SecretStore::new(ctx, &namespace);
    let owned = owned_secrets(ctx, &secrets, &namespace, &owner, &previous).await?;
    let previous_tokens: BTreeMap<&str, &TokenStatus> = previous.tokens.iter().map(|t| (t.name.as_str(), t)).collect();

    // Expiries first: a token whose lifetime exceeds the cap refuses the whole spec.
    let mut planned = Vec::with_capacity(valid.tokens.len());
    for token in &valid.tokens {
        let before = previous_tokens.get(token.name.as_str()).copied();
        // Whole seconds: the first issue is recorded in an annotation and in status, both in seconds.
        let first_issued =
            first_issue(owned.get(&token.secret_name), &owner, before).unwrap_or(super::whole_seconds(now));
        match token.expires_at(first_issued, &ctx.settings.expiry) {
            Ok(expires_at) => planned.push((token, before, first_issued, expires_at)),
            Err(error) => return ctx.refuse(credential, &error, now).await,
        }
    }
    // Tokens are independent: converge them at once.
    let (owner, valid, owned, secrets) = (&owner, &valid, &owned, &secrets);
    let results = futures::future::try_join_all(planned.into_iter().map(
        |(token, before, first_issued, expires_at)| async move {
            let claimed_elsewhere = |hash: &TokenHash| ctx.claimed_elsewhere(hash, &owner.uid, &token.name);
            let target = TokenTarget {
                secret: TokenSecret { name: &token.secret_name, owner, expires_at, template: &valid.template },
                prefix: &valid.prefix,
                recorded: Recorded::of(before.map(|t| &t.record), &token.secret_name),
                claimed_elsewhere: &claimed_elsewhere,
                issued_at: first_issued,
                // The LIST saw every Secret of ours; any other name is free or foreign, and a
                // create-only write tells which.
                first_read: owned
                    .get(&token.secret_name)
                    .map_or(FirstRead::AssumeMissing, |s| FirstRead::Listed(Box::new(s.clone()))),
            };
            converge_token(credential, ctx, secrets, token, target, now).await
        },
    ))
    .await?;
    remove_dropped_tokens(secrets, owner, valid, owned.values()).await?;
    ctx.finish(credential, &desired_status(credential, &previous, valid, &results, now), now).await
}

/// Converges one token, telling of a token issued by this pass.
async fn converge_token<'a>(
    credential: &Credential,
    ctx: &Context,
    secrets: &SecretStore,
    token: &'a ValidToken,
    target: TokenTarget<'_>,
    now: Timestamp,
) -> Result<(&'a ValidToken, Timestamp, TokenOutcome)> {
    let expires_at = target.secret.expires_at;
    let outcome = match issuer::converge(secrets, &target, now).await?.outcome() {
        Some((outcome, fresh)) => {
            if let TokenOutcome::Holds(issued) = &outcome {
                ctx.announce(credential, &token.secret_name, issued, fresh);
            }
            outcome
        }
        None => TokenOutcome::Pending("is being written by someone else"),
    };
    Ok((token, expires_at, outcome))
}

/// The Secrets the Credential has, by name. Once the Secret watch has listed, only those it saw
/// (and those status names, which it may not have seen yet) are read, each with a fresh GET;
/// a new Credential reads none. Before that, one LIST of the owner's Secrets.
async fn owned_secrets(
    ctx: &Context,
    secrets: &SecretStore,
    namespace: &str,
    owner: &Owner,
    previous: &CredentialStatus,
) -> Result<BTreeMap<String, Secret>> {
    let Some(mut names) = ctx.secret_names.of(namespace, &owner.uid) else {
        return Ok(secrets.list_owned(&owner.uid).await?.into_iter().map(|s| (s.name_any(), s)).collect());
    };
    names.extend(previous.tokens.iter().filter_map(|t| t.record.secret_name.clone()));
    let read = futures::future::try_join_all(
        names
            .into_iter()
            .map(|name| async move { Ok::<_, crate::Error>(secrets.read(&name).await?.map(|secret| (name, secret))) }),
    )
    .await?;
    Ok(read.into_iter().flatten().collect())
}

/// A token's first issue, from which its expiresAfter counts: the status records it; else its
/// Secret does (a wiped status, or the crash between the two writes); else the token is new.
/// Status first: a writer of Secrets could move the annotation and extend the token's life.
fn first_issue(secret: Option<&Secret>, owner: &Owner, before: Option<&TokenStatus>) -> Option<Timestamp> {
    let from_status =
        before.filter(|t| t.record.token_hash.is_some()).and_then(|t| t.record.issued_at.as_ref()).map(|t| t.0);
    from_status.or_else(|| {
        secret
            .filter(|s| matches!(classify(Some(s), owner), Found::Intact(_) | Found::Tampered))
            .and_then(|s| annotation(s, ANNOTATION_ISSUED_AT))
            .and_then(|t| t.parse().ok())
    })
}

/// Deletes the Secrets of tokens no longer in spec: they stop working at once.
async fn remove_dropped_tokens<'a>(
    secrets: &SecretStore,
    owner: &Owner,
    valid: &ValidCredential,
    owned: impl Iterator<Item = &'a Secret>,
) -> Result<()> {
    for secret in owned {
        let name = secret.name_any();
        let wanted = valid.tokens.iter().any(|t| t.secret_name == name);
        if !wanted && matches!(classify(Some(secret), owner), Found::Intact(_) | Found::Tampered) {
            secrets.delete(secret).await?;
            tracing::info!(secret = name, "token removed from spec; deleted its Secret");
        }
    }
    Ok(())
}

/// The status the tokens' outcomes call for.
fn desired_status(
    credential: &Credential,
    previous: &CredentialStatus,
    valid: &ValidCredential,
    results: &[(&ValidToken, Timestamp, TokenOutcome)],
    now: Timestamp,
) -> CredentialStatus {
    let generation = credential.meta().generation;
    let inactive = valid.state == KeyState::Inactive;
    let tokens: Vec<TokenStatus> = results
        .iter()
        .map(|(token, expires_at, outcome)| {
            let before = previous.tokens.iter().find(|t| t.name == token.name).map(|t| &t.record);
            let record = TokenRecord::after(before, &token.secret_name, *expires_at, outcome, inactive);
            TokenStatus { name: token.name.clone(), record }
        })
        .collect();
    let active = tokens.iter().filter(|t| t.record.phase == Some(Phase::Active)).count();
    let conflicts: Vec<&str> = results
        .iter()
        .filter(|(_, _, o)| *o == TokenOutcome::Conflict)
        .map(|(t, _, _)| t.secret_name.as_str())
        .collect();
    let (phase, ready, reason, message) = if !conflicts.is_empty() {
        (
            Phase::Failed,
            false,
            reason::SECRET_CONFLICT,
            format!(
                "Secret {} exists and is not owned by this Credential; nothing was written to it",
                conflicts.join(", ")
            ),
        )
    } else if inactive && !tokens.is_empty() {
        (
            Phase::Inactive,
            false,
            reason::INACTIVE,
            "credential is inactive: its tokens are refused until state is Active".into(),
        )
    } else if active > 0 {
        let names: Vec<&str> =
            tokens.iter().filter(|t| t.record.phase == Some(Phase::Active)).map(|t| t.name.as_str()).collect();
        (Phase::Active, true, reason::ISSUED, format!("{active} token(s) issued: {}", names.join(", ")))
    } else if !tokens.is_empty() && tokens.iter().all(|t| t.record.phase == Some(Phase::Expired)) {
        (Phase::Expired, false, reason::EXPIRED, "every token has expired; add a token to spec.tokens".into())
    } else if tokens.is_empty() {
        (Phase::Pending, false, reason::PENDING, "no tokens: add one to spec.tokens".into())
    } else {
        let waiting: Vec<String> = results
            .iter()
            .filter_map(|(t, _, o)| match o {
                TokenOutcome::Pending(why) => Some(format!("Secret {} {why}", t.secret_name)),
                _ => None,
            })
            .collect();
        (Phase::Pending, false, reason::PENDING, waiting.join("; "))
    };
    CredentialStatus {
        phase: Some(phase),
        observed_generation: generation,
        active_tokens: Some(i32::try_from(active).unwrap_or(i32::MAX)),
        tokens,
        conditions: vec![ready_condition(&previous.conditions, ready, reason, message, generation, now)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::validate::ExpiryPolicy;
    use crate::controller::secret::Issued;
    use crate::controller::status;
    use crate::token::TokenHash;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn credential(spec: serde_json::Value) -> (Credential, ValidCredential) {
        let mut credential = Credential::new("billing", serde_json::from_value(spec).expect("spec"));
        credential.metadata.generation = Some(2);
        let valid =
            validate::credential(&credential, ts("2026-11-01T00:00:00Z"), &ExpiryPolicy::default()).expect("valid");
        (credential, valid)
    }

    fn issued(n: u8) -> Issued {
        Issued {
            hash: TokenHash::of(&[n]),
            key_id: format!("kw_0000000{n}"),
            issued_at: Some(ts("2026-11-01T00:00:00Z")),
        }
    }

    #[test]
    fn active_tokens_are_counted_and_the_credential_is_ready() {
        let (cred, valid) = credential(serde_json::json!({"tokens": [{"name": "primary"}, {"name": "next"}]}));
        let at = ts("2027-01-01T00:00:00Z");
        let results = vec![
            (&valid.tokens[0], at, TokenOutcome::Holds(issued(1))),
            (&valid.tokens[1], at, TokenOutcome::Expired(None)),
        ];
        let status = desired_status(&cred, &CredentialStatus::default(), &valid, &results, ts("2026-11-02T00:00:00Z"));
        assert_eq!(status.phase, Some(Phase::Active));
        assert_eq!(status.active_tokens, Some(1));
        assert_eq!(status.tokens[0].record.token_hash.as_deref(), Some(issued(1).hash.as_str()));
        assert_eq!(status.tokens[0].record.secret_name.as_deref(), Some("billing-primary"));
        assert_eq!(status.tokens[1].record.phase, Some(Phase::Expired));
        assert_eq!(status.conditions[0].status, "True");
    }

    #[test]
    fn a_conflict_on_any_token_fails_the_credential_naming_the_secret() {
        let (cred, valid) = credential(serde_json::json!({"tokens": [{"name": "primary"}, {"name": "next"}]}));
        let at = ts("2027-01-01T00:00:00Z");
        let results = vec![
            (&valid.tokens[0], at, TokenOutcome::Holds(issued(1))),
            (&valid.tokens[1], at, TokenOutcome::Conflict),
        ];
        let status = desired_status(&cred, &CredentialStatus::default(), &valid, &results, at);
        assert_eq!(status.phase, Some(Phase::Failed));
        assert_eq!(status.conditions[0].reason, "SecretConflict");
        assert!(status.conditions[0].message.contains("billing-next"));
    }

    #[test]
    fn inactive_credentials_keep_their_tokens_but_are_not_ready() {
        let (cred, valid) = credential(serde_json::json!({"state": "Inactive", "tokens": [{"name": "primary"}]}));
        let results = vec![(&valid.tokens[0], ts("2027-01-01T00:00:00Z"), TokenOutcome::Holds(issued(1)))];
        let status = desired_status(&cred, &CredentialStatus::default(), &valid, &results, ts("2026-11-02T00:00:00Z"));
        assert_eq!(status.phase, Some(Phase::Inactive));
        assert_eq!(status.active_tokens, Some(0));
        assert_eq!(status.tokens[0].record.phase, Some(Phase::Inactive));
    }

    #[test]
    fn the_first_issue_comes_from_the_status_then_the_secret() {
        let owner = Owner {
            kind: "Credential",
            api_version: "keyward.io/v1alpha1".into(),
            name: "billing".into(),
            uid: "u".into(),
        };
        let before = TokenStatus {
            name: "primary".into(),
            record: TokenRecord {
                token_hash: Some("sha256:x".into()),
                issued_at: Some(status::time(ts("2026-10-01T00:00:00Z"))),
                ..Default::default()
            },
        };
        assert_eq!(first_issue(None, &owner, Some(&before)), Some(ts("2026-10-01T00:00:00Z")));
        assert_eq!(first_issue(None, &owner, None), None);
        let template = Default::default();
        let spec = TokenSecret {
            name: "billing-primary",
            owner: &owner,
            expires_at: ts("2027-01-01T00:00:00Z"),
            template: &template,
        };
        let secret = spec.build(&crate::token::Token::generate("kw"), ts("2026-09-01T00:00:00Z"));
        assert_eq!(first_issue(Some(&secret), &owner, Some(&before)), Some(ts("2026-10-01T00:00:00Z")), "status first");
        assert_eq!(first_issue(Some(&secret), &owner, None), Some(ts("2026-09-01T00:00:00Z")), "a wiped status");
    }
}
