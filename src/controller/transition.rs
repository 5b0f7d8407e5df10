//! What a status change means, for both kinds: the record a pass leaves of each token, the
//! status of a refused spec, which events a change publishes and when to look again. Pure: the
//! old and new status and the clock are arguments, so each is tested like `decide`.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde::Serialize;

use super::issuer::{CONFLICT_RECHECK, LONGEST_REQUEUE, PENDING_RECHECK, until};
use super::secret::Issued;
use super::status::{self, ready_condition};
use super::{NORMAL, WARNING};
use crate::api::validate::SpecError;
use crate::api::{ApiKeyStatus, CONDITION_READY, CredentialStatus, Phase, TokenRecord, reason};

/// Where one token ended up in this pass.
#[derive(Clone, Debug, PartialEq)]
pub enum TokenOutcome {
    /// A usable token is in its Secret.
    Holds(Issued),
    /// Past expiry; the record of the last token if its Secret still had it.
    Expired(Option<Issued>),
    /// The Secret's name is taken by a Secret that is not ours.
    Conflict,
    /// The Secret is going away, or others keep writing it; why.
    Pending(&'static str),
}

impl TokenRecord {
    /// Records an issued token: its identity, and its issue time when the Secret says one.
    pub fn record(&mut self, issued: &Issued) {
        self.key_id = Some(issued.key_id.clone());
        self.token_hash = Some(issued.hash.to_string());
        self.issued_at = issued.issued_at.map(status::time).or_else(|| self.issued_at.take());
    }

    /// The record a pass leaves of a token in Secret `secret_name`, until `expires_at`: the
    /// previous record's identity and issue time survive expiry and failures, so that the last
    /// token stays identifiable.
    pub fn after(
        previous: Option<&TokenRecord>,
        secret_name: &str,
        expires_at: Timestamp,
        outcome: &TokenOutcome,
        inactive: bool,
    ) -> TokenRecord {
        let mut record = TokenRecord {
            secret_name: Some(secret_name.to_string()),
            expires_at: Some(status::time(expires_at)),
            ..previous.cloned().unwrap_or_default()
        };
        record.phase = Some(match outcome {
            TokenOutcome::Holds(issued) => {
                record.record(issued);
                if inactive { Phase::Inactive } else { Phase::Active }
            }
            TokenOutcome::Expired(issued) => {
                if let Some(issued) = issued {
                    record.record(issued);
                }
                Phase::Expired
            }
            TokenOutcome::Conflict => Phase::Failed,
            TokenOutcome::Pending(_) => Phase::Pending,
        });
        record
    }
}

/// A status of either kind, as the transitions see it.
pub trait KeyStatus: Serialize + PartialEq + Clone + Default + Send + Sync {
    fn conditions(&self) -> &[Condition];
    /// The record of each token, with its name (`None` for an ApiKey's one token).
    fn records(&self) -> Vec<(Option<&str>, &TokenRecord)>;
    /// This status, refusing the spec of `generation` with `ready` (False): the tokens'
    /// records are kept for audit, and none counts as usable.
    fn refused(self, generation: Option<i64>, ready: Condition) -> Self;
}

impl KeyStatus for ApiKeyStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }

    fn records(&self) -> Vec<(Option<&str>, &TokenRecord)> {
        vec![(None, &self.record)]
    }

    fn refused(self, generation: Option<i64>, ready: Condition) -> Self {
        ApiKeyStatus {
            record: TokenRecord { phase: Some(Phase::Failed), ..self.record },
            observed_generation: generation,
            conditions: vec![ready],
        }
    }
}

impl KeyStatus for CredentialStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }

    fn records(&self) -> Vec<(Option<&str>, &TokenRecord)> {
        self.tokens.iter().map(|t| (Some(t.name.as_str()), &t.record)).collect()
    }

    fn refused(self, generation: Option<i64>, ready: Condition) -> Self {
        CredentialStatus {
            phase: Some(Phase::Failed),
            observed_generation: generation,
            active_tokens: Some(0),
            tokens: self.tokens,
            conditions: vec![ready],
        }
    }
}

/// The status that refuses a bad spec, the same way for both kinds: Failed, `InvalidSpec`
/// naming the field and the value, the tokens' records kept.
pub fn refused<S: KeyStatus>(previous: Option<&S>, error: &SpecError, generation: Option<i64>, now: Timestamp) -> S {
    let previous = previous.cloned().unwrap_or_default();
    let ready = ready_condition(previous.conditions(), false, reason::INVALID_SPEC, error.to_string(), generation, now);
    previous.refused(generation, ready)
}

/// An event to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub type_: &'static str,
    pub reason: &'static str,
    pub message: String,
}

fn ready(conditions: &[Condition]) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == CONDITION_READY)
}

/// The events a written status change publishes: the Ready condition moving to a reason worth
/// telling (a conflict or a bad spec as Warnings, expiry or inactivity as Normal), and each
/// named token that expired in this change. Issues and re-issues are told where the Secret is
/// written, since the status cannot tell a lost Secret from a tampered one.
pub fn notes<S: KeyStatus>(was: Option<&S>, now: &S) -> Vec<Note> {
    let mut notes = Vec::new();
    let before = was.and_then(|s| ready(s.conditions()));
    if let Some(after) = ready(now.conditions())
        && before.map(|c| (&c.reason, &c.message)) != Some((&after.reason, &after.message))
    {
        let told = match after.reason.as_str() {
            reason::SECRET_CONFLICT => Some((WARNING, reason::SECRET_CONFLICT)),
            reason::INVALID_SPEC => Some((WARNING, reason::INVALID_SPEC)),
            reason::EXPIRED => Some((NORMAL, reason::EXPIRED)),
            reason::INACTIVE => Some((NORMAL, reason::INACTIVE)),
            _ => None,
        };
        if let Some((type_, reason)) = told {
            notes.push(Note { type_, reason, message: after.message.clone() });
        }
    }
    let was_records = was.map(KeyStatus::records).unwrap_or_default();
    for (name, record) in now.records() {
        let Some(name) = name else { continue };
        let expired_now = record.phase == Some(Phase::Expired)
            && was_records.iter().any(|(n, r)| *n == Some(name) && r.phase != Some(Phase::Expired));
        if expired_now {
            let at = record.expires_at.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
            let secret = record.secret_name.as_deref().unwrap_or_default();
            let message = format!("token {name} expired at {at}; its Secret {secret} was deleted");
            notes.push(Note { type_: NORMAL, reason: reason::EXPIRED, message });
        }
    }
    notes
}

/// When to look at a key again after writing `status`: at its next token's expiry (at most a
/// day ahead), soon for a Secret being deleted, later for a name taken by someone else, and
/// never for a refused spec or expired tokens, which only a change can help.
pub fn requeue<S: KeyStatus>(status: &S, now: Timestamp) -> Option<Duration> {
    if is_refused(status) {
        return None;
    }
    status
        .records()
        .into_iter()
        .filter_map(|(_, record)| match record.phase? {
            Phase::Active | Phase::Inactive => Some(until(now, record.expires_at.as_ref()?.0).min(LONGEST_REQUEUE)),
            Phase::Pending => Some(PENDING_RECHECK),
            Phase::Failed => Some(CONFLICT_RECHECK),
            Phase::Expired => None,
        })
        .min()
}

/// The expiries of a key's live (Active or Inactive) tokens, which [`requeue`] waits for;
/// none for a refused spec.
pub fn live_expiries<S: KeyStatus>(status: &S) -> impl Iterator<Item = Timestamp> + '_ {
    let records = if is_refused(status) { Vec::new() } else { status.records() };
    records.into_iter().filter_map(|(_, record)| match record.phase? {
        Phase::Active | Phase::Inactive => Some(record.expires_at.as_ref()?.0),
        _ => None,
    })
}

fn is_refused<S: KeyStatus>(status: &S) -> bool {
    ready(status.conditions()).is_some_and(|c| c.reason == reason::INVALID_SPEC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TokenStatus;
    use crate::token::TokenHash;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    const EXPIRY: &str = "2026-12-01T00:00:00Z";
    const BEFORE: &str = "2026-11-30T23:59:59Z";

    fn issued(n: u8) -> Issued {
        Issued { hash: TokenHash::of(&[n]), key_id: format!("kw_0000000{n}"), issued_at: None }
    }

    fn record(outcome: &TokenOutcome) -> TokenRecord {
        TokenRecord::after(None, "s", ts(EXPIRY), outcome, false)
    }

    fn with_ready(reason: &str, message: &str) -> Vec<Condition> {
        vec![ready_condition(&[], reason == reason::ISSUED, reason, message.into(), Some(1), ts(BEFORE))]
    }

    fn apikey(outcome: &TokenOutcome, reason: &str, message: &str) -> ApiKeyStatus {
        ApiKeyStatus { record: record(outcome), observed_generation: Some(1), conditions: with_ready(reason, message) }
    }

    fn credential(tokens: &[(&str, TokenOutcome)], reason: &str) -> CredentialStatus {
        CredentialStatus {
            tokens: tokens.iter().map(|(name, o)| TokenStatus { name: (*name).into(), record: record(o) }).collect(),
            conditions: with_ready(reason, "m"),
            ..Default::default()
        }
    }

    #[test]
    fn a_record_keeps_its_identity_through_expiry_and_failure() {
        let held = TokenRecord::after(None, "ci-apikey", ts(EXPIRY), &TokenOutcome::Holds(issued(1)), false);
        assert_eq!((held.phase, held.key_id.as_deref()), (Some(Phase::Active), Some("kw_00000001")));
        for outcome in [TokenOutcome::Expired(None), TokenOutcome::Conflict, TokenOutcome::Pending("p")] {
            let after = TokenRecord::after(Some(&held), "ci-apikey", ts(EXPIRY), &outcome, false);
            assert_eq!((&after.token_hash, &after.key_id), (&held.token_hash, &held.key_id), "{outcome:?}");
        }
        let inactive = TokenRecord::after(Some(&held), "ci-apikey", ts(EXPIRY), &TokenOutcome::Holds(issued(2)), true);
        assert_eq!((inactive.phase, inactive.key_id.as_deref()), (Some(Phase::Inactive), Some("kw_00000002")));
    }

    #[test]
    fn a_refused_spec_keeps_the_records_and_names_the_field_for_both_kinds() {
        let error = SpecError { field: "spec.expiresAfter".into(), value: "3x".into(), problem: "bad".into() };
        let key = apikey(&TokenOutcome::Holds(issued(1)), reason::ISSUED, "issued");
        let refused_key = refused(Some(&key), &error, Some(2), ts(BEFORE));
        assert_eq!(refused_key.record.phase, Some(Phase::Failed));
        assert_eq!(refused_key.record.token_hash, key.record.token_hash);
        let cred = credential(&[("primary", TokenOutcome::Holds(issued(1)))], reason::ISSUED);
        let refused_cred = refused(Some(&cred), &error, Some(2), ts(BEFORE));
        assert_eq!((refused_cred.phase, refused_cred.active_tokens), (Some(Phase::Failed), Some(0)));
        assert_eq!(refused_cred.tokens, cred.tokens);
        for conditions in [&refused_key.conditions, &refused_cred.conditions] {
            let ready = &conditions[0];
            assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", reason::INVALID_SPEC));
            assert!(ready.message.contains("spec.expiresAfter") && ready.message.contains("3x"), "{ready:?}");
            assert_eq!(ready.observed_generation, Some(2));
        }
        assert_eq!(requeue(&refused_key, ts(BEFORE)), None, "only a change can help");
        let notes = notes(Some(&key), &refused_key);
        assert_eq!(notes.iter().map(|n| (n.type_, n.reason)).collect::<Vec<_>>(), [(WARNING, reason::INVALID_SPEC)]);
    }

    #[test]
    fn the_ready_condition_is_told_once_when_it_moves_to_a_reason_worth_telling() {
        let active = apikey(&TokenOutcome::Holds(issued(1)), reason::ISSUED, "issued");
        let inactive = apikey(&TokenOutcome::Holds(issued(1)), reason::INACTIVE, "inactive");
        let told = notes(Some(&active), &inactive);
        assert_eq!(told, [Note { type_: NORMAL, reason: reason::INACTIVE, message: "inactive".into() }]);
        assert!(notes(Some(&inactive), &inactive).is_empty(), "nothing moved");
        assert!(notes(Some(&inactive), &active).is_empty(), "becoming ready is told by the issue itself");
        assert!(notes(None, &active).is_empty());
        let conflict = apikey(&TokenOutcome::Conflict, reason::SECRET_CONFLICT, "taken");
        assert_eq!(notes(None, &conflict)[0].type_, WARNING, "a first status can be worth telling too");
    }

    #[test]
    fn a_credential_token_that_expires_is_told_once() {
        let both = [("primary", TokenOutcome::Holds(issued(1))), ("next", TokenOutcome::Holds(issued(2)))];
        let before = credential(&both, reason::ISSUED);
        let one_expired = credential(&[("primary", TokenOutcome::Expired(None)), both[1].clone()], reason::ISSUED);
        let told = notes(Some(&before), &one_expired);
        assert_eq!(told.len(), 1, "{told:?}");
        assert_eq!(told[0].reason, reason::EXPIRED);
        assert!(told[0].message.starts_with("token primary expired at 2026-12-01T00:00:00Z"), "{}", told[0].message);
        assert!(notes(Some(&one_expired), &one_expired).is_empty(), "already expired");
        assert!(notes(None, &one_expired).is_empty(), "never seen live: a token created past its expiry");
    }

    #[test]
    fn requeue_is_at_the_next_expiry_to_the_second_and_at_most_a_day() {
        let active = apikey(&TokenOutcome::Holds(issued(1)), reason::ISSUED, "issued");
        assert_eq!(requeue(&active, ts(BEFORE)), Some(Duration::from_millis(1001)));
        assert_eq!(requeue(&active, ts("2026-11-01T00:00:00Z")), Some(LONGEST_REQUEUE));
        let expired = apikey(&TokenOutcome::Expired(None), reason::EXPIRED, "expired");
        assert_eq!(requeue(&expired, ts(EXPIRY)), None);
        let waiting = apikey(&TokenOutcome::Pending("is being deleted"), reason::PENDING, "waiting");
        assert_eq!(requeue(&waiting, ts(BEFORE)), Some(PENDING_RECHECK));
        let conflict = apikey(&TokenOutcome::Conflict, reason::SECRET_CONFLICT, "taken");
        assert_eq!(requeue(&conflict, ts(BEFORE)), Some(CONFLICT_RECHECK));
        let mixed = credential(
            &[("primary", TokenOutcome::Expired(None)), ("next", TokenOutcome::Holds(issued(2)))],
            reason::ISSUED,
        );
        assert_eq!(requeue(&mixed, ts(BEFORE)), Some(Duration::from_millis(1001)), "the soonest live token");
        assert_eq!(requeue(&CredentialStatus::default(), ts(BEFORE)), None, "no tokens");
    }
}
