//! The ApiKey reconciler: read (spec, Secret, clock), decide (pure), write (Secret, then status).

use std::sync::Arc;

use jiff::Timestamp;
use kube::Resource;
use kube::runtime::controller::Action;

use super::issuer::{
    self, CONFLICT_RECHECK, Converged, FirstRead, LONGEST_REQUEUE, PENDING_RECHECK, Plan, Provenance, Recorded,
    TokenTarget, until,
};
use super::secret::{self, Found, Identity, Issued, Owner, SecretStore, TokenSecret};
use super::status::{self, ready_condition};
use super::{Context, Reconciled};
use crate::api::validate::{self, SpecError, ValidApiKey};
use crate::api::{ApiKey, ApiKeyStatus, KeyState, Phase, reason};
use crate::error::Result;

/// Decides what the key's Secret needs: the shared token decision, with the status's record of
/// a live token in this very Secret (a renamed Secret gets a fresh token).
pub fn decide(
    now: Timestamp,
    key: &ValidApiKey,
    found: &Found,
    status: Option<&ApiKeyStatus>,
    provenance: Provenance,
) -> Plan {
    issuer::decide(now, key.expires_at, found, recorded(key, status), provenance)
}

fn recorded<'a>(key: &ValidApiKey, status: Option<&'a ApiKeyStatus>) -> Recorded<'a> {
    let Some((status, hash)) = status.and_then(|s| Some((s, s.token_hash.as_deref()?))) else {
        return Recorded::Nothing;
    };
    let same_secret = status.secret_name.as_deref() == Some(key.secret_name.as_str());
    if status.phase == Some(Phase::Expired) || !same_secret { Recorded::Retired(hash) } else { Recorded::Live(hash) }
}

/// What the write step ended with, from which the status is built.
enum Outcome {
    Holds(Issued),
    Expired(Option<Issued>),
    Conflict,
    Pending(&'static str),
    Invalid(SpecError),
}

impl Reconciled for ApiKey {
    const KIND: &'static str = "ApiKey";

    async fn reconcile(key: Arc<ApiKey>, ctx: Arc<Context>) -> Result<Action> {
        reconcile_key(&key, &ctx).await
    }

    fn census(&self) -> (Option<Phase>, Vec<(&str, Timestamp)>) {
        let status = self.status.as_ref();
        (
            status.and_then(|s| s.phase),
            status.and_then(|s| s.expires_at.as_ref()).map(|at| ("", at.0)).into_iter().collect(),
        )
    }

    fn recorded_hashes(&self) -> Vec<(&str, &str)> {
        self.status.as_ref().and_then(|s| s.token_hash.as_deref()).map(|hash| ("", hash)).into_iter().collect()
    }
}

async fn reconcile_key(key: &ApiKey, ctx: &Context) -> Result<Action> {
    let Identity { owner, namespace, created } = Identity::of(key)?;
    let secrets = SecretStore::new(ctx, &namespace);
    let now = Timestamp::now();

    let valid = match validate::api_key(key, created, &ctx.settings.expiry) {
        Ok(valid) => valid,
        Err(error) => {
            tracing::info!(%error, "refusing invalid spec");
            finish(key, ctx, None, Outcome::Invalid(error), now).await?;
            return Ok(Action::await_change());
        }
    };
    let target = TokenTarget {
        secret: TokenSecret {
            name: &valid.secret_name,
            owner: &owner,
            expires_at: valid.expires_at,
            template: &valid.template,
        },
        prefix: &valid.prefix,
        recorded: recorded(&valid, key.status.as_ref()),
        claimed_elsewhere: &|hash| ctx.claimed_elsewhere(hash, &owner.uid, ""),
        issued_at: now,
        // A key never issued has no Secret yet, unless a crash left one: create-only finds out.
        // A status we wrote that the cache does not show yet means it was issued: read.
        first_read: if key.status.as_ref().and_then(|s| s.token_hash.as_ref()).is_none()
            && !ctx.status_writes.pending(&owner.uid)
        {
            FirstRead::AssumeMissing
        } else {
            FirstRead::Get
        },
    };
    let outcome = match issuer::converge(&secrets, &target, now).await? {
        Converged::Holds { issued, fresh } => {
            // One token per key: its ID names the whole reconcile in the logs.
            tracing::Span::current().record("key_id", issued.key_id.as_str());
            ctx.announce(key, &valid.secret_name, &issued, fresh);
            Outcome::Holds(issued)
        }
        Converged::Expired(issued) => Outcome::Expired(issued),
        Converged::Conflict => Outcome::Conflict,
        Converged::Pending(why) => Outcome::Pending(why),
        // Someone keeps writing the Secret between our reads and writes; back off.
        Converged::Busy => return Ok(Action::requeue(PENDING_RECHECK)),
    };
    if let Outcome::Holds(_) = outcome {
        remove_renamed_secret(&secrets, key, &valid, &owner).await?;
    }
    let requeue = match &outcome {
        Outcome::Holds(_) => Some(until(now, valid.expires_at).min(LONGEST_REQUEUE)),
        Outcome::Conflict => Some(CONFLICT_RECHECK),
        Outcome::Pending(_) => Some(PENDING_RECHECK),
        Outcome::Expired(_) | Outcome::Invalid(_) => None,
    };
    finish(key, ctx, Some(&valid), outcome, now).await?;
    tracing::debug!(?requeue, "reconciled");
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// After `secretName` changed, deletes the Secret the status still names, if it is ours: the
/// key's token now lives only in its new Secret.
async fn remove_renamed_secret(secrets: &SecretStore, key: &ApiKey, valid: &ValidApiKey, owner: &Owner) -> Result<()> {
    let Some(old) = key.status.as_ref().and_then(|s| s.secret_name.as_deref()) else {
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

/// Builds the status for an outcome, writes it if it changed, and publishes transition events.
async fn finish(
    key: &ApiKey,
    ctx: &Context,
    valid: Option<&ValidApiKey>,
    outcome: Outcome,
    now: Timestamp,
) -> Result<()> {
    let previous = key.status.clone().unwrap_or_default();
    let desired = desired_status(key, &previous, valid, &outcome, now);
    ctx.write_status(key, key.status.as_ref(), &desired, &previous.conditions, &desired.conditions).await
}

/// The status an outcome calls for. Audit fields (hash, key ID, issue time) survive expiry and
/// failures so that the last token stays identifiable.
fn desired_status(
    key: &ApiKey,
    previous: &ApiKeyStatus,
    valid: Option<&ValidApiKey>,
    outcome: &Outcome,
    now: Timestamp,
) -> ApiKeyStatus {
    let generation = key.meta().generation;
    let secret_name = valid.map(|v| v.secret_name.clone()).or_else(|| previous.secret_name.clone());
    let shown_secret = secret_name.clone().unwrap_or_default();
    let mut status = ApiKeyStatus {
        phase: None,
        observed_generation: generation,
        key_id: previous.key_id.clone(),
        token_hash: previous.token_hash.clone(),
        secret_name,
        issued_at: previous.issued_at.clone(),
        expires_at: valid.map(|v| status::time(v.expires_at)).or_else(|| previous.expires_at.clone()),
        conditions: Vec::new(),
    };
    let record = |status: &mut ApiKeyStatus, issued: &Issued| {
        status.key_id = Some(issued.key_id.clone());
        status.token_hash = Some(issued.hash.to_string());
        status.issued_at = issued.issued_at.map(status::time).or_else(|| status.issued_at.clone());
    };
    let (phase, ready, reason, message) = match outcome {
        Outcome::Holds(issued) => {
            record(&mut status, issued);
            match valid.map(|v| v.state) {
                Some(KeyState::Inactive) => (
                    Phase::Inactive,
                    false,
                    reason::INACTIVE,
                    format!("key is inactive: its token in Secret {shown_secret} is refused until state is Active"),
                ),
                _ => (Phase::Active, true, reason::ISSUED, format!("token issued to Secret {shown_secret}")),
            }
        }
        Outcome::Expired(issued) => {
            if let Some(issued) = issued {
                record(&mut status, issued);
            }
            let at = valid.map(|v| v.expires_at.to_string()).unwrap_or_default();
            let message = if status.token_hash.is_some() {
                format!("key expired at {at}; its Secret {shown_secret} was deleted")
            } else {
                format!("key expired at {at}, before a token was issued; no Secret was written")
            };
            (Phase::Expired, false, reason::EXPIRED, message)
        }
        Outcome::Conflict => (
            Phase::Failed,
            false,
            reason::SECRET_CONFLICT,
            format!("Secret {shown_secret} exists and is not owned by this ApiKey; nothing was written to it"),
        ),
        Outcome::Pending(why) => (Phase::Pending, false, reason::PENDING, format!("Secret {shown_secret} {why}")),
        Outcome::Invalid(error) => (Phase::Failed, false, reason::INVALID_SPEC, error.to_string()),
    };
    status.phase = Some(phase);
    status.conditions = vec![ready_condition(&previous.conditions, ready, reason, message, generation, now)];
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SecretTemplate;
    use crate::controller::issuer::ReissueCause;
    use crate::token::TokenHash;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

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

    fn active_status() -> ApiKeyStatus {
        ApiKeyStatus {
            phase: Some(Phase::Active),
            token_hash: Some(issued().hash.to_string()),
            secret_name: Some("ci-apikey".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_renamed_secret_gets_a_fresh_token_without_a_lost_warning() {
        let moved = ApiKeyStatus { secret_name: Some("old-name".into()), ..active_status() };
        let plan = decide(ts(BEFORE), &valid(KeyState::Active), &Found::Missing, Some(&moved), Provenance::Unclaimed);
        assert_eq!(plan, Plan::Issue(None));
    }

    const BEFORE: &str = "2026-11-30T23:59:59Z";

    #[test]
    fn a_new_key_gets_its_first_token() {
        assert_eq!(
            decide(ts(BEFORE), &valid(KeyState::Active), &Found::Missing, None, Provenance::Unclaimed),
            Plan::Issue(None)
        );
    }

    #[test]
    fn an_inactive_key_is_issued_too_so_that_activation_needs_no_new_token() {
        assert_eq!(
            decide(ts(BEFORE), &valid(KeyState::Inactive), &Found::Missing, None, Provenance::Unclaimed),
            Plan::Issue(None)
        );
    }

    #[test]
    fn a_lost_secret_is_reissued_with_a_cause() {
        let plan = decide(
            ts(BEFORE),
            &valid(KeyState::Active),
            &Found::Missing,
            Some(&active_status()),
            Provenance::Unclaimed,
        );
        assert_eq!(plan, Plan::Issue(Some(ReissueCause::SecretLost)));
    }

    #[test]
    fn a_tampered_secret_is_replaced() {
        assert_eq!(
            decide(
                ts(BEFORE),
                &valid(KeyState::Active),
                &Found::Tampered,
                Some(&active_status()),
                Provenance::Unclaimed
            ),
            Plan::Replace
        );
    }

    #[test]
    fn an_intact_secret_holding_another_token_than_the_status_records_is_replaced() {
        let other = ApiKeyStatus { token_hash: Some(TokenHash::of(b"kw_other").to_string()), ..active_status() };
        let plan =
            decide(ts(BEFORE), &valid(KeyState::Active), &Found::Intact(issued()), Some(&other), Provenance::Unclaimed);
        assert_eq!(plan, Plan::Replace);
        // Once expired, the status's hash is an audit record: a new expiry's Secret is judged alone.
        let expired = ApiKeyStatus { phase: Some(Phase::Expired), ..other };
        let plan = decide(
            ts(BEFORE),
            &valid(KeyState::Active),
            &Found::Intact(issued()),
            Some(&expired),
            Provenance::Unclaimed,
        );
        assert_eq!(plan, Plan::Keep(issued()));
    }

    #[test]
    fn an_intact_secret_is_kept_when_it_holds_the_recorded_token_or_none_is_recorded() {
        for status in [None, Some(active_status()), Some(ApiKeyStatus::default())] {
            let plan = decide(
                ts(BEFORE),
                &valid(KeyState::Active),
                &Found::Intact(issued()),
                status.as_ref(),
                Provenance::Unclaimed,
            );
            assert_eq!(plan, Plan::Keep(issued()));
        }
    }

    #[test]
    fn a_foreign_secret_is_a_conflict_and_never_written() {
        assert_eq!(
            decide(ts(BEFORE), &valid(KeyState::Active), &Found::Foreign, None, Provenance::Unclaimed),
            Plan::Conflict
        );
    }

    #[test]
    fn an_expired_key_is_never_reissued_by_a_state_change() {
        let expired =
            ApiKeyStatus { phase: Some(Phase::Expired), token_hash: Some("sha256:x".into()), ..Default::default() };
        for state in [KeyState::Active, KeyState::Inactive] {
            let plan = decide(
                ts("2026-12-02T00:00:00Z"),
                &valid(state),
                &Found::Missing,
                Some(&expired),
                Provenance::Unclaimed,
            );
            assert_eq!(plan, Plan::Expire { delete_secret: false });
        }
    }

    #[test]
    fn a_new_expiry_after_expiring_issues_a_fresh_token_without_a_warning() {
        let expired =
            ApiKeyStatus { phase: Some(Phase::Expired), token_hash: Some("sha256:x".into()), ..Default::default() };
        let plan = decide(ts(BEFORE), &valid(KeyState::Active), &Found::Missing, Some(&expired), Provenance::Unclaimed);
        assert_eq!(plan, Plan::Issue(None));
    }

    #[test]
    fn a_secret_of_a_deleted_namesake_or_being_deleted_is_waited_for() {
        assert!(matches!(
            decide(ts(BEFORE), &valid(KeyState::Active), &Found::PreviousOwner, None, Provenance::Unclaimed),
            Plan::Wait(_)
        ));
        assert!(matches!(
            decide(ts(BEFORE), &valid(KeyState::Active), &Found::Deleting, None, Provenance::Unclaimed),
            Plan::Wait(_)
        ));
        // ... but expiry does not wait: nothing of ours is left to delete.
        assert_eq!(
            decide(
                ts("2026-12-02T00:00:00Z"),
                &valid(KeyState::Active),
                &Found::PreviousOwner,
                None,
                Provenance::Unclaimed
            ),
            Plan::Expire { delete_secret: false }
        );
    }

    fn key() -> ApiKey {
        let mut key = ApiKey::new("ci", Default::default());
        key.metadata.generation = Some(3);
        key
    }

    #[test]
    fn status_of_an_active_key_holds_only_the_hash() {
        let now = ts(BEFORE);
        let status = desired_status(
            &key(),
            &ApiKeyStatus::default(),
            Some(&valid(KeyState::Active)),
            &Outcome::Holds(issued()),
            now,
        );
        assert_eq!(status.phase, Some(Phase::Active));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.token_hash.as_deref(), Some(issued().hash.as_str()));
        assert_eq!(status.key_id.as_deref(), Some("kw_abcdefgh"));
        assert_eq!(status.conditions[0].status, "True");
        assert_eq!(status.conditions[0].reason, "Issued");
        // A second reconcile with nothing new yields the same status: no write.
        let again = desired_status(
            &key(),
            &status,
            Some(&valid(KeyState::Active)),
            &Outcome::Holds(issued()),
            ts("2026-11-30T23:59:59Z"),
        );
        assert_eq!(again, status);
    }

    #[test]
    fn status_of_an_expired_key_keeps_the_hash_for_audit() {
        let previous = desired_status(
            &key(),
            &ApiKeyStatus::default(),
            Some(&valid(KeyState::Active)),
            &Outcome::Holds(issued()),
            ts(BEFORE),
        );
        let status = desired_status(
            &key(),
            &previous,
            Some(&valid(KeyState::Active)),
            &Outcome::Expired(None),
            ts("2026-12-01T00:00:00Z"),
        );
        assert_eq!(status.phase, Some(Phase::Expired));
        assert_eq!(status.token_hash, previous.token_hash);
        assert_eq!(status.conditions[0].reason, "Expired");
        assert_eq!(status.conditions[0].status, "False");
    }

    #[test]
    fn a_key_created_already_expired_says_no_secret_was_written() {
        let status = desired_status(
            &key(),
            &ApiKeyStatus::default(),
            Some(&valid(KeyState::Active)),
            &Outcome::Expired(None),
            ts("2026-12-02T00:00:00Z"),
        );
        assert_eq!(status.phase, Some(Phase::Expired));
        assert_eq!(status.token_hash, None);
        let message = &status.conditions[0].message;
        assert!(message.contains("before a token was issued; no Secret was written"), "{message}");
        assert!(!message.contains("was deleted"), "{message}");
    }

    #[test]
    fn status_of_a_bad_spec_names_the_field() {
        let error = SpecError { field: "spec.expiresAfter".into(), value: "3x".into(), problem: "bad".into() };
        let status = desired_status(&key(), &ApiKeyStatus::default(), None, &Outcome::Invalid(error), ts(BEFORE));
        assert_eq!(status.phase, Some(Phase::Failed));
        assert_eq!(status.conditions[0].reason, "InvalidSpec");
        assert!(status.conditions[0].message.contains("spec.expiresAfter"));
        assert!(status.conditions[0].message.contains("3x"));
    }

    #[test]
    fn status_of_a_conflict_names_the_secret() {
        let status = desired_status(
            &key(),
            &ApiKeyStatus::default(),
            Some(&valid(KeyState::Active)),
            &Outcome::Conflict,
            ts(BEFORE),
        );
        assert_eq!(status.phase, Some(Phase::Failed));
        assert_eq!(status.conditions[0].reason, "SecretConflict");
        assert!(status.conditions[0].message.contains("ci-apikey"));
    }

    #[test]
    fn status_of_an_inactive_key_is_not_ready() {
        let status = desired_status(
            &key(),
            &ApiKeyStatus::default(),
            Some(&valid(KeyState::Inactive)),
            &Outcome::Holds(issued()),
            ts(BEFORE),
        );
        assert_eq!(status.phase, Some(Phase::Inactive));
        assert_eq!(status.conditions[0].status, "False");
        assert_eq!(status.conditions[0].reason, "Inactive");
    }
}
