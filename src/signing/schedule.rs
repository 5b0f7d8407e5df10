//! When signing keys are added and dropped: a pure plan from the keys there are and the time.
//!
//! Key `i` signs from its `signsFrom` until the next key's `signsFrom`. A new key is published
//! `publish_ahead` before it signs (so that verifiers fetching the key set on a schedule know it
//! before they meet a token it signed), one `rotation` after the newest key began signing; a key
//! that stopped signing is kept `retain` longer, until every token it signed has expired.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// `--signing-key-rotation`, `--signing-key-publish-ahead` and `--signing-key-retain`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub rotation: Duration,
    pub publish_ahead: Duration,
    pub retain: Duration,
}

/// Most keys a schedule may keep at once: the Secret stays small and the JWKS short.
pub const MAX_KEYS: u64 = 64;

impl Default for Schedule {
    fn default() -> Self {
        Self {
            rotation: Duration::from_secs(30 * 86_400),
            publish_ahead: Duration::from_secs(3_600),
            retain: super::MAX_TOKEN_LIFETIME,
        }
    }
}

impl Schedule {
    /// Refuses a schedule that could never publish ahead, or would keep too many keys.
    pub fn check(&self) -> Result<(), String> {
        if self.publish_ahead >= self.rotation {
            return Err(format!(
                "--signing-key-publish-ahead {} must be shorter than --signing-key-rotation {}",
                crate::duration::format(self.publish_ahead),
                crate::duration::format(self.rotation)
            ));
        }
        if self.rotation < Duration::from_secs(1) {
            return Err("--signing-key-rotation must be at least 1s".into());
        }
        // The current key, the next one, and the retired keys still kept.
        let kept = self.retain.as_secs().div_ceil(self.rotation.as_secs().max(1)) + 2;
        if kept > MAX_KEYS {
            return Err(format!(
                "--signing-key-rotation {} with --signing-key-retain {} would keep {kept} keys; at most {MAX_KEYS}",
                crate::duration::format(self.rotation),
                crate::duration::format(self.retain)
            ));
        }
        Ok(())
    }
}

/// What to change in the key set now, and when to look again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Add a key that signs from this time.
    pub add: Option<Timestamp>,
    /// Drop these keys (by `kid`): retired longer ago than `retain`.
    pub drop: Vec<String>,
    /// The next time the plan can change without the key set changing.
    pub next_look: Timestamp,
}

impl Plan {
    pub fn changes(&self) -> bool {
        self.add.is_some() || !self.drop.is_empty()
    }
}

fn after(at: Timestamp, span: Duration) -> Timestamp {
    SignedDuration::try_from(span).ok().and_then(|span| at.checked_add(span).ok()).unwrap_or(Timestamp::MAX)
}

fn before(at: Timestamp, span: Duration) -> Timestamp {
    SignedDuration::try_from(span).ok().and_then(|span| at.checked_sub(span).ok()).unwrap_or(Timestamp::MIN)
}

/// The plan for `keys` (`kid` and `signsFrom` of each, in any order) at `now`.
pub fn plan(keys: &[(&str, Timestamp)], now: Timestamp, schedule: &Schedule) -> Plan {
    let mut keys = keys.to_vec();
    keys.sort_by_key(|&(kid, from)| (from, kid));
    let Some(&(_, newest)) = keys.last() else {
        return Plan { add: Some(now), drop: Vec::new(), next_look: after(now, schedule.publish_ahead) };
    };
    let mut add = None;
    let mut next_look = if newest <= now {
        // No key is waiting to sign: publish the next one ahead, on time or late.
        let due = before(after(newest, schedule.rotation), schedule.publish_ahead);
        if now >= due {
            let signs_from = after(newest, schedule.rotation).max(after(now, schedule.publish_ahead));
            add = Some(signs_from);
            signs_from
        } else {
            due
        }
    } else {
        // The next key takes over then; the one it replaces starts its retention.
        newest
    };
    let mut drop = Vec::new();
    for pair in keys.windows(2) {
        let (retired, successor) = (pair[0], pair[1].1);
        if successor > now {
            continue;
        }
        let gone_at = after(successor, schedule.retain);
        if now >= gone_at {
            drop.push(retired.0.to_string());
        } else {
            next_look = next_look.min(gone_at);
        }
    }
    Plan { add, drop, next_look }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600;

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    fn schedule() -> Schedule {
        Schedule {
            rotation: Duration::from_secs(30 * 24 * HOUR),
            publish_ahead: Duration::from_secs(HOUR),
            retain: Duration::from_secs(26 * HOUR),
        }
    }

    #[test]
    fn an_empty_set_gets_a_key_that_signs_at_once() {
        let now = ts("2026-12-01T00:00:00Z");
        let plan = plan(&[], now, &schedule());
        assert_eq!(plan.add, Some(now));
        assert!(plan.drop.is_empty());
    }

    #[test]
    fn the_next_key_is_published_exactly_publish_ahead_before_it_signs() {
        let first = ts("2026-12-01T00:00:00Z");
        let due = ts("2026-12-30T23:00:00Z");
        let one_second_early = plan(&[("a", first)], ts("2026-12-30T22:59:59Z"), &schedule());
        assert_eq!(one_second_early, Plan { add: None, drop: vec![], next_look: due });
        let on_time = plan(&[("a", first)], due, &schedule());
        assert_eq!(on_time.add, Some(ts("2026-12-31T00:00:00Z")));
        assert_eq!(on_time.next_look, ts("2026-12-31T00:00:00Z"));
    }

    #[test]
    fn a_late_controller_still_publishes_ahead_rather_than_signing_with_an_unpublished_key() {
        let first = ts("2026-12-01T00:00:00Z");
        let now = ts("2027-02-01T12:00:00Z");
        assert_eq!(plan(&[("a", first)], now, &schedule()).add, Some(ts("2027-02-01T13:00:00Z")));
    }

    #[test]
    fn a_waiting_key_means_no_write_until_it_signs() {
        let keys = [("a", ts("2026-12-01T00:00:00Z")), ("b", ts("2026-12-31T00:00:00Z"))];
        let plan = plan(&keys, ts("2026-12-30T23:30:00Z"), &schedule());
        assert_eq!(plan, Plan { add: None, drop: vec![], next_look: ts("2026-12-31T00:00:00Z") });
    }

    #[test]
    fn a_retired_key_is_dropped_exactly_retain_after_its_successor_began_signing() {
        let keys = [("a", ts("2026-12-01T00:00:00Z")), ("b", ts("2026-12-31T00:00:00Z"))];
        let kept = plan(&keys, ts("2027-01-01T01:59:59Z"), &schedule());
        assert!(kept.drop.is_empty());
        assert_eq!(kept.next_look, ts("2027-01-01T02:00:00Z"));
        let dropped = plan(&keys, ts("2027-01-01T02:00:00Z"), &schedule());
        assert_eq!(dropped.drop, vec!["a".to_string()]);
        assert_eq!(dropped.next_look, ts("2027-01-29T23:00:00Z"));
    }

    #[test]
    fn schedules_that_cannot_publish_ahead_or_keep_too_many_keys_are_refused() {
        let mut bad = schedule();
        bad.publish_ahead = bad.rotation;
        assert!(bad.check().unwrap_err().contains("--signing-key-publish-ahead"));
        let many = Schedule { rotation: Duration::from_secs(60), publish_ahead: Duration::from_secs(10), ..schedule() };
        assert!(many.check().unwrap_err().contains("would keep"));
        assert_eq!(schedule().check(), Ok(()));
    }
}
