//! The ApiKey reconciler: read (spec, Secret, clock), decide (pure), write (Secret, then status).

use std::sync::Arc;

use jiff::Timestamp;
use kube::Resource;
use kube::runtime::controller::Action;

use super::issuer::{self, FirstRead, PENDING_RECHECK, Recorded, TokenTarget};
use super::secret::{self, Found, Identity, Owner, SecretStore, TokenSecret};
use super::status::ready_condition;
use super::transition::TokenOutcome;
use super::{Context, Reconciled};
use crate::api::validate::{self, ValidApiKey};
use crate::api::{ApiKey, ApiKeyStatus, KeyState, TokenRecord, reason};
use crate::error::Result;

impl Reconciled for ApiKey {
    type Status = ApiKeyStatus;

    fn status_of(&self) -> Option<&ApiKeyStatus> {
        self.status.as_ref()
    }

    async fn reconcile(key: Arc<ApiKey>, ctx: Arc<Context>) -> Result<Action> {
        reconcile_key(&key, &ctx).await
    }
}

async fn reconcile_key(key: &ApiKey, ctx: &Context) -> Result<Action> {
    let Identity { owner, namespace, created } = Identity::of(key)?;
    let secrets = SecretStore::new(ctx, &namespace);
    let now = Timestamp::now();

    let valid = match validate::api_key(key, created, &ctx.settings.expiry) {
        Ok(valid) => valid,
        Err(error) => return ctx.refuse(key, &error, now).await,
    };
    let record = key.status.as_ref().map(|s| &s.record);
    let target = TokenTarget {
        secret: TokenSecret {
            name: &valid.secret_name,
            owner: &owner,
            expires_at: valid.expires_at,
            template: &valid.template,
        },
        prefix: &valid.prefix,
        recorded: Recorded::of(record, &valid.secret_name),
        claimed_elsewhere: &|hash| ctx.claimed_elsewhere(hash, &owner.uid, ""),
        issued_at: now,
        // A key never issued has no Secret yet, unless a crash left one: create-only finds out.
        // A status we wrote that the cache does not show yet means it was issued: read.
        first_read: if record.and_then(|r| r.token_hash.as_ref()).is_none() && !ctx.status_writes.pending(&owner.uid) {
            FirstRead::AssumeMissing
        } else {
            FirstRead::Get
        },
    };
    // Someone keeps writing the Secret between our reads and writes: back off.
    let Some((outcome, fresh)) = issuer::converge(&secrets, &target, now).await?.outcome() else {
        return Ok(Action::requeue(PENDING_RECHECK));
    };
    if let TokenOutcome::Holds(issued) = &outcome {
        // One token per key: its ID names the whole reconcile in the logs.
        tracing::Span::current().record("key_id", issued.key_id.as_str());
        ctx.announce(key, &valid.secret_name, issued, fresh);
        remove_renamed_secret(&secrets, key, &valid, &owner).await?;
    }
    let previous = key.status.clone().unwrap_or_default();
    ctx.finish(key, &desired_status(key, &previous, &valid, &outcome, now), now).await
}

/// After `secretName` changed, deletes the Secret the status still names, if it is ours: the
/// key's token now lives only in its new Secret.
async fn remove_renamed_secret(secrets: &SecretStore, key: &ApiKey, valid: &ValidApiKey, owner: &Owner) -> Result<()> {
    let Some(old) = key.status.as_ref().and_then(|s| s.record.secret_name.as_deref()) else {
        return Ok(());
    };
    if old == valid.secret_name {
        return Ok(());
    }
    if let Some(existing) = secrets.read(old).await?
        && matches!(secret::classify(Some(&existing), owner), Found::Intact(_) | Found::Tampered)
    {
        secrets.delete(&existing).await?;
        tracing::info!(old, new = valid.secret_name, "secretName changed; deleted the old Secret");
    }
    Ok(())
}

/// The status an outcome calls for: the token's record (see [`TokenRecord::after`]) and a Ready
/// condition that says what happened in the key's own words.
fn desired_status(
    key: &ApiKey,
    previous: &ApiKeyStatus,
    valid: &ValidApiKey,
    outcome: &TokenOutcome,
    now: Timestamp,
) -> ApiKeyStatus {
    let generation = key.meta().generation;
    let inactive = valid.state == KeyState::Inactive;
    let record = TokenRecord::after(Some(&previous.record), &valid.secret_name, valid.expires_at, outcome, inactive);
    let secret = &valid.secret_name;
    let (ready, reason, message) = match outcome {
        TokenOutcome::Holds(_) if inactive => (
            false,
            reason::INACTIVE,
            format!("key is inactive: its token in Secret {secret} is refused until state is Active"),
        ),
        TokenOutcome::Holds(_) => (true, reason::ISSUED, format!("token issued to Secret {secret}")),
        TokenOutcome::Expired(_) => {
            let at = valid.expires_at;
            let message = if record.token_hash.is_some() {
                format!("key expired at {at}; its Secret {secret} was deleted")
            } else {
                format!("key expired at {at}, before a token was issued; no Secret was written")
            };
            (false, reason::EXPIRED, message)
        }
        TokenOutcome::Conflict => (
            false,
            reason::SECRET_CONFLICT,
            format!("Secret {secret} exists and is not owned by this ApiKey; nothing was written to it"),
        ),
        TokenOutcome::Pending(why) => (false, reason::PENDING, format!("Secret {secret} {why}")),
    };
    ApiKeyStatus {
        record,
        observed_generation: generation,
        conditions: vec![ready_condition(&previous.conditions, ready, reason, message, generation, now)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Phase, SecretTemplate};
    use crate::controller::secret::Issued;
    use crate::token::TokenHash;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    const BEFORE: &str = "2026-11-30T23:59:59Z";

    fn valid(state: KeyState) -> ValidApiKey {
        ValidApiKey {
            state,
            prefix: "kw".into(),
            secret_name: "ci-apikey".into(),
            expires_at: ts("2026-12-01T00:00:00Z"),
            template: SecretTemplate::default(),
        }
    }

    fn issued() -> Issued {
        Issued {
            hash: TokenHash::of(b"kw_x"),
            key_id: "kw_abcdefgh".into(),
            issued_at: Some(ts("2026-11-01T00:00:00Z")),
        }
    }

    fn key() -> ApiKey {
        let mut key = ApiKey::new("ci", Default::default());
        key.metadata.generation = Some(3);
        key
    }

    fn status(previous: &ApiKeyStatus, state: KeyState, outcome: &TokenOutcome, now: &str) -> ApiKeyStatus {
        desired_status(&key(), previous, &valid(state), outcome, ts(now))
    }

    #[test]
    fn status_of_an_active_key_holds_only_the_hash() {
        let status = status(&ApiKeyStatus::default(), KeyState::Active, &TokenOutcome::Holds(issued()), BEFORE);
        assert_eq!(status.record.phase, Some(Phase::Active));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.record.token_hash.as_deref(), Some(issued().hash.as_str()));
        assert_eq!(status.record.key_id.as_deref(), Some("kw_abcdefgh"));
        assert_eq!(status.record.secret_name.as_deref(), Some("ci-apikey"));
        assert_eq!(status.conditions[0].status, "True");
        assert_eq!(status.conditions[0].reason, "Issued");
        // A second reconcile with nothing new yields the same status: no write.
        let again =
            desired_status(&key(), &status, &valid(KeyState::Active), &TokenOutcome::Holds(issued()), ts(BEFORE));
        assert_eq!(again, status);
    }

    #[test]
    fn status_of_an_expired_key_keeps_the_hash_for_audit() {
        let previous = status(&ApiKeyStatus::default(), KeyState::Active, &TokenOutcome::Holds(issued()), BEFORE);
        let status = status(&previous, KeyState::Active, &TokenOutcome::Expired(None), "2026-12-01T00:00:00Z");
        assert_eq!(status.record.phase, Some(Phase::Expired));
        assert_eq!(status.record.token_hash, previous.record.token_hash);
        assert_eq!(status.conditions[0].reason, "Expired");
        assert_eq!(status.conditions[0].status, "False");
        assert!(status.conditions[0].message.contains("its Secret ci-apikey was deleted"));
    }

    #[test]
    fn a_key_created_already_expired_says_no_secret_was_written() {
        let status =
            status(&ApiKeyStatus::default(), KeyState::Active, &TokenOutcome::Expired(None), "2026-12-02T00:00:00Z");
        assert_eq!(status.record.phase, Some(Phase::Expired));
        assert_eq!(status.record.token_hash, None);
        let message = &status.conditions[0].message;
        assert!(message.contains("before a token was issued; no Secret was written"), "{message}");
        assert!(!message.contains("was deleted"), "{message}");
    }

    #[test]
    fn status_of_a_conflict_names_the_secret() {
        let status = status(&ApiKeyStatus::default(), KeyState::Active, &TokenOutcome::Conflict, BEFORE);
        assert_eq!(status.record.phase, Some(Phase::Failed));
        assert_eq!(status.conditions[0].reason, "SecretConflict");
        assert!(status.conditions[0].message.contains("ci-apikey"));
    }

    #[test]
    fn state_decides_whether_a_held_token_is_ready() {
        let active = status(&ApiKeyStatus::default(), KeyState::Active, &TokenOutcome::Holds(issued()), BEFORE);
        let inactive = status(&active, KeyState::Inactive, &TokenOutcome::Holds(issued()), BEFORE);
        assert_eq!(inactive.record.phase, Some(Phase::Inactive));
        assert_eq!(inactive.conditions[0].status, "False");
        assert_eq!(inactive.conditions[0].reason, "Inactive");
        assert_eq!(inactive.record.token_hash, active.record.token_hash, "the same token, refused until Active");
        let again = status(&inactive, KeyState::Active, &TokenOutcome::Holds(issued()), BEFORE);
        assert_eq!((again.record.phase, again.conditions[0].status.as_str()), (Some(Phase::Active), "True"));
        // Past expiry, state no longer matters: the key is expired either way.
        for state in [KeyState::Active, KeyState::Inactive] {
            let expired = status(&active, state, &TokenOutcome::Expired(None), "2026-12-01T00:00:00Z");
            assert_eq!(expired.record.phase, Some(Phase::Expired), "{state:?}");
        }
    }
}
