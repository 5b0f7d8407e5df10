//! The per-token pipeline every kind shares: given where a token should live and until when,
//! decide (pure) what its Secret needs, then carry it out through the [`SecretStore`], retrying
//! when another writer wins a race. ApiKeys run it once; Credentials once per token.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;

use super::secret::{Found, Issued, SecretStore, TokenSecret, Write, classify};
use super::transition::TokenOutcome;
use crate::api::{Phase, TokenRecord};
use crate::error::{Error, Result};
use crate::token::{Token, TokenHash};

/// How often a token is re-read and retried after losing a write race to another writer.
const RACE_ATTEMPTS: usize = 3;

/// How long to wait before looking again at a token whose Secret name is taken by someone else:
/// the foreign Secret carries no label of ours, so no watch event will say it went away.
pub const CONFLICT_RECHECK: Duration = Duration::from_secs(30);
/// Longest single wait: a token expiring years ahead is looked at again daily (a read, no write),
/// and the last wait still ends at the exact expiry instant. Waits this long are left to the
/// sweeps of the cache (see [`super::wakes`]), which look at each key once a day.
pub const LONGEST_REQUEUE: Duration = Duration::from_secs(86_400);
/// How long to wait for a Secret that is being deleted or garbage collected.
pub const PENDING_RECHECK: Duration = Duration::from_secs(2);

/// Why a token is issued again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReissueCause {
    SecretLost,
    SecretTampered,
}

impl ReissueCause {
    /// The message of the `TokenReissued` event.
    pub fn note(self, secret: &str, key_id: &str) -> String {
        let why = match self {
            ReissueCause::SecretLost => format!("Secret {secret} was deleted"),
            ReissueCause::SecretTampered => format!("the token in Secret {secret} no longer matched its recorded hash"),
        };
        format!("{why}; issued a new token {key_id} into it (expiry unchanged)")
    }
}

/// What to do about one token's Secret.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// Issue a token into a new Secret (create-only).
    Issue(Option<ReissueCause>),
    /// Replace a tampered token (guarded by the Secret's resourceVersion).
    Replace,
    /// Keep the token that is there; bring the Secret's metadata in line.
    Keep(Issued),
    /// Past expiry: delete our Secret if there is one.
    Expire { delete_secret: bool },
    /// The Secret's name is taken by a Secret that is not ours.
    Conflict,
    /// Our Secret is going away (deleted, or of a deleted namesake); look again shortly.
    Wait(&'static str),
}

/// What the owner's status records of the token in this very Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded<'a> {
    /// No token: a new key, or a crash between the Secret's create and the status write.
    Nothing,
    /// A token the key held and must not hold again (as status writes it, `sha256:...`): it
    /// expired, or it lived in a Secret the key has since left (`secretName` changed).
    Retired(&'a str),
    /// The live token, with this hash.
    Live(&'a str),
}

impl<'a> Recorded<'a> {
    /// What `record` says of the token in Secret `secret_name`: a live token only while it
    /// has not expired and the record names this very Secret (a key moved to another Secret
    /// gets a fresh token there).
    pub fn of(record: Option<&'a TokenRecord>, secret_name: &str) -> Self {
        let Some((record, hash)) = record.and_then(|r| Some((r, r.token_hash.as_deref()?))) else {
            return Recorded::Nothing;
        };
        let same_secret = record.secret_name.as_deref() == Some(secret_name);
        if record.phase == Some(Phase::Expired) || !same_secret {
            Recorded::Retired(hash)
        } else {
            Recorded::Live(hash)
        }
    }
}

/// What is known of an intact Secret's token beyond the Secret and the status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provenance {
    /// This process wrote this very version of the Secret: the token is one it issued, whose
    /// status write may have failed.
    OwnWrite,
    /// Another key's status records its hash: it was copied in.
    ClaimedElsewhere,
    /// No other key's status records it.
    Unclaimed,
    /// Not every key is in the cache yet, so whether another holds it is not known.
    Unknown,
}

/// Decides what a token's Secret needs. Pure: every input, the clock included, is an argument.
///
/// The status is the record of which token a key holds; a Secret that says otherwise was
/// written by someone else, who may have chosen the token. So an intact Secret is kept when
/// its hash is the recorded one or this process wrote it; when status records no live token
/// (the crash between the two writes), only if no other key holds that hash and it is not a
/// token the key already retired. Anything else is replaced, with a warning.
pub fn decide(
    now: Timestamp,
    expires_at: Timestamp,
    found: &Found,
    recorded: Recorded,
    provenance: Provenance,
) -> Plan {
    if now >= expires_at {
        return Plan::Expire { delete_secret: matches!(found, Found::Intact(_) | Found::Tampered) };
    }
    match found {
        Found::Missing => Plan::Issue(matches!(recorded, Recorded::Live(_)).then_some(ReissueCause::SecretLost)),
        Found::Foreign => Plan::Conflict,
        Found::PreviousOwner => Plan::Wait("belongs to a deleted owner of the same name and awaits garbage collection"),
        Found::Deleting => Plan::Wait("is being deleted"),
        Found::Tampered => Plan::Replace,
        Found::Intact(issued) => match keeps(issued, recorded, provenance) {
            Some(true) => Plan::Keep(issued.clone()),
            Some(false) => Plan::Replace,
            None => Plan::Wait("is adopted once every key is in the cache"),
        },
    }
}

/// Whether the key may hold an intact Secret's token (see [`decide`]); `None` while that
/// depends on keys not yet cached.
fn keeps(issued: &Issued, recorded: Recorded, provenance: Provenance) -> Option<bool> {
    let hash = issued.hash.as_str();
    match (recorded, provenance) {
        (_, Provenance::OwnWrite) => Some(true),
        (Recorded::Live(live), _) => Some(hash == live),
        (Recorded::Retired(retired), _) if hash == retired => Some(false),
        (_, Provenance::Unclaimed) => Some(true),
        (_, Provenance::ClaimedElsewhere) => Some(false),
        (_, Provenance::Unknown) => None,
    }
}

/// Whether a token hash is recorded in the status of any key but this one (this token of this
/// owner): `None` while not every key is in the cache.
pub type ClaimedElsewhere<'a> = &'a (dyn Fn(&TokenHash) -> Option<bool> + Send + Sync);

/// What is known of a token's Secret before converging, to spare a read.
#[derive(Clone, Debug)]
pub enum FirstRead {
    /// Nothing: read it.
    Get,
    /// Just read by a LIST.
    Listed(Box<Secret>),
    /// Nothing suggests it exists: write create-only at once, and read only on a conflict.
    AssumeMissing,
}

/// Where a token lives and what its Secret records.
pub struct TokenTarget<'a> {
    pub secret: TokenSecret<'a>,
    pub prefix: &'a str,
    pub recorded: Recorded<'a>,
    pub claimed_elsewhere: ClaimedElsewhere<'a>,
    /// The issue time a new token records: now for an ApiKey, the first issue of a Credential
    /// token (its expiry counts from there).
    pub issued_at: Timestamp,
    pub first_read: FirstRead,
}

/// Whether the token in the Secret was issued by this pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fresh {
    /// The token that was there is kept.
    No,
    /// A first token.
    First,
    /// A new token in place of a lost or tampered one.
    Reissued(ReissueCause),
}

/// Where a token's Secret ended up.
#[derive(Clone, Debug, PartialEq)]
pub enum Converged {
    /// A usable token is in the Secret.
    Holds {
        issued: Issued,
        fresh: Fresh,
    },
    /// Past expiry, our Secret is gone; the record of its last token, if the Secret still had it.
    Expired(Option<Issued>),
    Conflict,
    Pending(&'static str),
    /// Other writers kept changing the Secret between our reads and writes.
    Busy,
}

impl Converged {
    /// What the token's record says of this pass, and whether its token is new; `None` when
    /// other writers kept winning (the caller backs off or says it waits).
    pub fn outcome(self) -> Option<(TokenOutcome, Fresh)> {
        Some(match self {
            Converged::Holds { issued, fresh } => (TokenOutcome::Holds(issued), fresh),
            Converged::Expired(issued) => (TokenOutcome::Expired(issued), Fresh::No),
            Converged::Conflict => (TokenOutcome::Conflict, Fresh::No),
            Converged::Pending(why) => (TokenOutcome::Pending(why), Fresh::No),
            Converged::Busy => return None,
        })
    }
}

/// Brings a token's Secret to what the target needs.
pub async fn converge(secrets: &SecretStore, target: &TokenTarget<'_>, now: Timestamp) -> Result<Converged> {
    let name = target.secret.name;
    for attempt in 0..RACE_ATTEMPTS {
        let existing = match (&target.first_read, attempt) {
            (FirstRead::Listed(secret), 0) => Some(secret.as_ref().clone()),
            // A Secret past its expiry must be looked at: it may need deleting.
            (FirstRead::AssumeMissing, 0) if now < target.secret.expires_at => None,
            _ => secrets.read(name).await?,
        };
        let found = classify(existing.as_ref(), target.secret.owner);
        let provenance = match (&found, existing.as_ref()) {
            (Found::Intact(_), Some(secret)) if secrets.wrote(secret) => Provenance::OwnWrite,
            // Only a Secret that could be adopted needs the (cache-wide) look for other holders.
            (Found::Intact(issued), _) if !matches!(target.recorded, Recorded::Live(_)) => {
                match (target.claimed_elsewhere)(&issued.hash) {
                    Some(true) => Provenance::ClaimedElsewhere,
                    Some(false) => Provenance::Unclaimed,
                    None => Provenance::Unknown,
                }
            }
            _ => Provenance::Unclaimed,
        };
        let written = match decide(now, target.secret.expires_at, &found, target.recorded, provenance) {
            Plan::Issue(cause) => {
                let (token, issued) = new_token(target)?;
                match secrets.create(&target.secret.build(&token, target.issued_at)).await? {
                    Write::Done(_) => {
                        Some(Converged::Holds { issued, fresh: cause.map_or(Fresh::First, Fresh::Reissued) })
                    }
                    Write::LostRace => None,
                }
            }
            Plan::Replace => {
                let existing = existing.as_ref().ok_or_else(|| Error::MissingObjectField(name.into(), "data"))?;
                let (token, issued) = new_token(target)?;
                match secrets.replace(existing, target.secret.build(&token, target.issued_at)).await? {
                    Write::Done(_) => {
                        Some(Converged::Holds { issued, fresh: Fresh::Reissued(ReissueCause::SecretTampered) })
                    }
                    Write::LostRace => None,
                }
            }
            Plan::Keep(issued) => {
                let patch = existing.as_ref().and_then(|e| target.secret.metadata_patch(e).map(|p| (e, p)));
                match patch {
                    Some((existing, patch)) => match secrets.patch_metadata(existing, patch).await? {
                        Write::Done(_) => Some(Converged::Holds { issued, fresh: Fresh::No }),
                        Write::LostRace => None,
                    },
                    None => Some(Converged::Holds { issued, fresh: Fresh::No }),
                }
            }
            Plan::Expire { delete_secret } => {
                if delete_secret && let Some(existing) = existing.as_ref() {
                    secrets.delete(existing).await?;
                    tracing::info!(secret = name, "expired; deleted its Secret");
                }
                // The audit record keeps the last token the key really held, not a planted one.
                Some(Converged::Expired(match found {
                    Found::Intact(issued) if keeps(&issued, target.recorded, provenance) == Some(true) => Some(issued),
                    _ => None,
                }))
            }
            Plan::Conflict => Some(Converged::Conflict),
            Plan::Wait(why) => Some(Converged::Pending(why)),
        };
        if let Some(converged) = written {
            return Ok(converged);
        }
    }
    Ok(Converged::Busy)
}

/// A new token and its public record; the token itself goes only into the Secret.
fn new_token(target: &TokenTarget<'_>) -> Result<(Token, Issued)> {
    let token = Token::try_generate(target.prefix).map_err(Error::Random)?;
    let issued = Issued { hash: token.hash(), key_id: token.key_id(), issued_at: Some(target.issued_at) };
    Ok((token, issued))
}

/// Time from `now` until `at`, rounded up to the millisecond so the wake-up is never early.
pub fn until(now: Timestamp, at: Timestamp) -> Duration {
    let left = at.duration_since(now);
    Duration::try_from(left).unwrap_or_default() + Duration::from_millis(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::TokenHash;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    const EXPIRY: &str = "2026-12-01T00:00:00Z";
    const BEFORE: &str = "2026-11-30T23:59:59Z";

    fn issued() -> Issued {
        Issued {
            hash: TokenHash::of(b"kw_x"),
            key_id: "kw_abcdefgh".into(),
            issued_at: Some(ts("2026-11-01T00:00:00Z")),
        }
    }

    const RECORDED: Recorded<'static> = Recorded::Live("sha256:recorded");

    fn plan(now: &str, found: &Found, recorded: Recorded) -> Plan {
        decide(ts(now), ts(EXPIRY), found, recorded, Provenance::Unclaimed)
    }

    fn intact(recorded: Recorded, provenance: Provenance) -> Plan {
        decide(ts(BEFORE), ts(EXPIRY), &Found::Intact(issued()), recorded, provenance)
    }

    #[test]
    fn a_missing_secret_is_a_first_issue_unless_it_held_a_live_token() {
        assert_eq!(plan(BEFORE, &Found::Missing, Recorded::Nothing), Plan::Issue(None));
        assert_eq!(plan(BEFORE, &Found::Missing, Recorded::Retired("sha256:old")), Plan::Issue(None));
        assert_eq!(plan(BEFORE, &Found::Missing, RECORDED), Plan::Issue(Some(ReissueCause::SecretLost)));
    }

    #[test]
    fn expiry_is_exact_to_the_second() {
        let hash = issued().hash.to_string();
        let live = Recorded::Live(&hash);
        assert_eq!(plan(BEFORE, &Found::Intact(issued()), live), Plan::Keep(issued()));
        assert_eq!(plan(EXPIRY, &Found::Intact(issued()), live), Plan::Expire { delete_secret: true });
        assert_eq!(until(ts(BEFORE), ts(EXPIRY)), Duration::from_millis(1001));
        assert_eq!(until(ts(EXPIRY), ts(BEFORE)), Duration::from_millis(1));
    }

    #[test]
    fn only_our_secrets_are_deleted_at_expiry() {
        for found in [Found::Foreign, Found::PreviousOwner, Found::Missing, Found::Deleting] {
            assert_eq!(plan(EXPIRY, &found, RECORDED), Plan::Expire { delete_secret: false });
        }
        assert_eq!(plan(EXPIRY, &Found::Tampered, RECORDED), Plan::Expire { delete_secret: true });
    }

    #[test]
    fn a_secret_whose_token_is_not_the_recorded_one_is_replaced_even_if_self_consistent() {
        // Someone rewrote data.token and the hash annotation together: the Secret checks out
        // against itself, but not against the status.
        assert_eq!(intact(RECORDED, Provenance::Unclaimed), Plan::Replace);
        let hash = issued().hash.to_string();
        assert_eq!(intact(Recorded::Live(&hash), Provenance::ClaimedElsewhere), Plan::Keep(issued()));
    }

    #[test]
    fn a_token_this_process_wrote_is_kept_though_its_status_write_failed() {
        // A re-issue whose status write failed: status still names the old token. Replacing it
        // again would issue a token per retry.
        assert_eq!(intact(RECORDED, Provenance::OwnWrite), Plan::Keep(issued()));
    }

    #[test]
    fn a_secret_is_adopted_without_a_recorded_hash_only_if_no_other_key_holds_its_hash() {
        // The crash between the Secret's create and the status write: the Secret is the record.
        assert_eq!(intact(Recorded::Nothing, Provenance::Unclaimed), Plan::Keep(issued()));
        // Another key's token copied in: never adopted, whatever the Secret says.
        assert_eq!(intact(Recorded::Nothing, Provenance::ClaimedElsewhere), Plan::Replace);
        // Not every key cached yet: neither adopted nor replaced, but looked at again.
        assert!(matches!(intact(Recorded::Nothing, Provenance::Unknown), Plan::Wait(_)));
    }

    #[test]
    fn a_retired_token_never_comes_back() {
        let hash = issued().hash.to_string();
        // An expired key given a new expiry, or a renamed Secret: the old token is not adopted.
        assert_eq!(intact(Recorded::Retired(&hash), Provenance::Unclaimed), Plan::Replace);
        assert_eq!(intact(Recorded::Retired("sha256:other"), Provenance::Unclaimed), Plan::Keep(issued()));
    }

    fn record(hash: &str, secret: &str, phase: Phase) -> TokenRecord {
        TokenRecord {
            token_hash: Some(hash.into()),
            secret_name: Some(secret.into()),
            phase: Some(phase),
            ..Default::default()
        }
    }

    #[test]
    fn a_record_holds_a_live_token_only_in_its_own_secret_until_it_expires() {
        let hash = issued().hash.to_string();
        let live = record(&hash, "ci-apikey", Phase::Active);
        assert_eq!(Recorded::of(Some(&live), "ci-apikey"), Recorded::Live(&hash));
        assert_eq!(Recorded::of(Some(&TokenRecord::default()), "ci-apikey"), Recorded::Nothing);
        assert_eq!(Recorded::of(None, "ci-apikey"), Recorded::Nothing);
        // The decisions production makes from them, through the same `decide`:
        let decide_for = |record: &TokenRecord, found: &Found| {
            decide(ts(BEFORE), ts(EXPIRY), found, Recorded::of(Some(record), "ci-apikey"), Provenance::Unclaimed)
        };
        assert_eq!(decide_for(&live, &Found::Missing), Plan::Issue(Some(ReissueCause::SecretLost)));
        assert_eq!(decide_for(&live, &Found::Intact(issued())), Plan::Keep(issued()));
        // A renamed Secret gets a fresh token, without a warning that the old one was lost,
        // and the old token is never adopted into the new Secret.
        let moved = record(&hash, "old-name", Phase::Active);
        assert_eq!(Recorded::of(Some(&moved), "ci-apikey"), Recorded::Retired(&hash));
        assert_eq!(decide_for(&moved, &Found::Missing), Plan::Issue(None));
        assert_eq!(decide_for(&moved, &Found::Intact(issued())), Plan::Replace);
        // An expired token is an audit record: a new expiry issues a fresh one, without a warning.
        let expired = record(&hash, "ci-apikey", Phase::Expired);
        assert_eq!(Recorded::of(Some(&expired), "ci-apikey"), Recorded::Retired(&hash));
        assert_eq!(decide_for(&expired, &Found::Missing), Plan::Issue(None));
        // Another token than the recorded one is replaced; once expired, a Secret holding some
        // other token is judged alone.
        let other = record("sha256:other", "ci-apikey", Phase::Active);
        assert_eq!(decide_for(&other, &Found::Intact(issued())), Plan::Replace);
        let other_expired = record("sha256:other", "ci-apikey", Phase::Expired);
        assert_eq!(decide_for(&other_expired, &Found::Intact(issued())), Plan::Keep(issued()));
    }

    #[test]
    fn reissue_notes_name_the_secret_and_the_new_key_id_only() {
        let note = ReissueCause::SecretTampered.note("ci-apikey", "kw_abcdefgh");
        assert!(note.contains("ci-apikey") && note.contains("kw_abcdefgh") && note.contains("no longer matched"));
        assert!(ReissueCause::SecretLost.note("s", "k").contains("was deleted"));
    }
}
