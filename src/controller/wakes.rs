//! When each key is looked at again without a change.
//!
//! A key wants a look at the next expiry of one of its tokens, and once a day besides (a read,
//! no write, in case something was missed). The runtime's scheduler could hold that wake for
//! every key, but it keeps two copies of the object's reference per entry: with 10,000 keys
//! about 6 MB for wakes that are mostly weeks away. So a reconcile keeps its own wake only
//! when it is near (within [`Wakes::direct`]); a sweep of the cache, every
//! [`Wakes::interval`], wakes the keys whose expiry or daily look comes within
//! [`Wakes::lookahead`], and their reconcile then keeps the exact wake. Each key's daily look
//! is at its own second of the day, from its UID, so that keys created together are not all
//! looked at together.
//!
//! The windows of successive sweeps follow on without a gap, so no wake falls between two of
//! them, however late a sweep runs. A reconcile leaves to the sweeps only a wake later than
//! `direct`, two intervals past the lookahead: the sweep that wakes it runs at least an interval
//! after the reconcile, when the cache shows the status the reconcile wrote.

use std::time::Duration;

use futures::{Stream, StreamExt};
use jiff::{SignedDuration, Timestamp};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};

use super::Reconciled;
use super::transition::{self, KeyStatus};

/// Seconds in the day of the daily look.
const DAY: i64 = 86_400;

/// How far ahead the sweeps look, and so how often they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wakes {
    lookahead: Duration,
}

impl Default for Wakes {
    fn default() -> Self {
        Self::new(Duration::from_secs(300))
    }
}

impl Wakes {
    /// Sweeps waking what comes within `lookahead` (at least a second).
    pub fn new(lookahead: Duration) -> Self {
        Self { lookahead: lookahead.max(Duration::from_secs(1)) }
    }

    pub fn lookahead(&self) -> Duration {
        self.lookahead
    }

    /// How often the cache is swept: a fifth of the lookahead.
    pub fn interval(&self) -> Duration {
        self.lookahead / 5
    }

    /// The farthest wake a reconcile keeps itself.
    pub fn direct(&self) -> Duration {
        self.lookahead + 2 * self.interval()
    }

    /// What a reconcile that wants to look again after `requeue` returns: the wake itself when
    /// near, else nothing (a sweep wakes it in time).
    pub fn action(&self, requeue: Option<Duration>) -> Action {
        match requeue {
            Some(wait) if wait <= self.direct() => Action::requeue(wait),
            _ => Action::await_change(),
        }
    }

    /// The first sweep's window, at `now`. Wakes before it are the reconciles' own: the
    /// controller looks at every key when it starts.
    pub fn first(&self, now: Timestamp) -> Window {
        Window { from: now, to: self.ahead(now) }
    }

    /// The window of the sweep at `now` after one over `last`: from where that one ended.
    pub fn next(&self, last: &Window, now: Timestamp) -> Window {
        Window { from: last.to, to: last.to.max(self.ahead(now)) }
    }

    fn ahead(&self, now: Timestamp) -> Timestamp {
        let ahead = SignedDuration::try_from(self.lookahead).unwrap_or(SignedDuration::MAX);
        now.saturating_add(ahead).unwrap_or(Timestamp::MAX)
    }
}

/// The wakes one sweep covers: from `from` (included) to `to` (excluded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    from: Timestamp,
    to: Timestamp,
}

impl Window {
    fn holds(&self, at: Timestamp) -> bool {
        self.from <= at && at < self.to
    }

    /// Whether a whole second at `second` of the day falls in the window.
    fn holds_second_of_day(&self, second: i64) -> bool {
        // The whole seconds in [from, to): from the first at or after `from`.
        let first = self.from.as_second() + i64::from(self.from.subsec_nanosecond() > 0);
        let last = self.to.as_second() + i64::from(self.to.subsec_nanosecond() > 0);
        let width = last - first;
        width >= DAY || (width > 0 && (second - first).rem_euclid(DAY) < width)
    }
}

/// The second of the day of a key's daily look, spread by its UID.
fn second_of_day(uid: &str) -> i64 {
    i64::from(crc32fast::hash(uid.as_bytes())) % DAY
}

/// Whether the sweep over `window` at `now` wakes a key with `status` and `uid`: one with a live
/// token (a key refused, expired or without tokens waits for a change) whose next expiry or
/// daily look falls in it, or whose token is past its expiry and still live. That last is a wake
/// missed (the cache lagged behind a status write while the sweep over its expiry ran, or the
/// clock stepped back): the next sweep makes up for it.
pub fn due<S: KeyStatus>(status: &S, uid: &str, window: &Window, now: Timestamp) -> bool {
    let mut expiries = transition::live_expiries(status).peekable();
    if expiries.peek().is_none() {
        return false;
    }
    expiries.any(|at| window.holds(at) || at < now) || window.holds_second_of_day(second_of_day(uid))
}

/// The sweeps over `store`, once `listed` says its watch has listed: each yields the keys it
/// wakes. (Not `Store::wait_until_ready`: its future wakes only the last of several waiters.)
pub fn sweeps<K: Reconciled>(
    store: Store<K>,
    wakes: Wakes,
    mut listed: tokio::sync::watch::Receiver<bool>,
) -> impl Stream<Item = ObjectRef<K>> + Send + 'static {
    let start = async move {
        let ready = listed.wait_for(|listed| *listed).await.is_ok();
        let mut ticks = tokio::time::interval(wakes.interval());
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ready.then_some((store, ticks, None::<Window>))
    };
    futures::stream::once(start).filter_map(futures::future::ready).flat_map(move |state| {
        futures::stream::unfold(state, move |(store, mut ticks, last)| async move {
            ticks.tick().await;
            let now = Timestamp::now();
            let window = last.map_or_else(|| wakes.first(now), |last| wakes.next(&last, now));
            let woken: Vec<ObjectRef<K>> = store
                .state()
                .iter()
                .filter(|object| {
                    let uid = object.meta().uid.as_deref().unwrap_or_default();
                    object.status_of().is_some_and(|status| due(status, uid, &window, now))
                })
                .map(|object| ObjectRef::from_obj(object.as_ref()))
                .collect();
            if !woken.is_empty() {
                tracing::debug!(kind = K::KIND.as_str(), woken = woken.len(), "sweep wakes keys near a deadline");
            }
            Some((futures::stream::iter(woken), (store, ticks, Some(window))))
        })
        .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ApiKeyStatus, CredentialStatus, Phase, TokenRecord, TokenStatus, reason};
    use crate::controller::status::ready_condition;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    const UID: &str = "5f0c7b1e-8a55-4d3e-9c1a-2b7d4e6f8a90";

    fn active_until(expiry: &str) -> ApiKeyStatus {
        ApiKeyStatus {
            record: TokenRecord {
                phase: Some(Phase::Active),
                expires_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts(expiry))),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// `due` at a sweep long before the test's times, so that no token is past its expiry.
    fn due_early<S: KeyStatus>(status: &S, uid: &str, window: &Window) -> bool {
        due(status, uid, window, ts("2026-01-01T00:00:00Z"))
    }

    fn wakes() -> Wakes {
        Wakes::new(Duration::from_secs(300))
    }

    #[test]
    fn a_reconcile_keeps_only_a_near_wake() {
        let wakes = wakes();
        assert_eq!((wakes.interval(), wakes.direct()), (Duration::from_secs(60), Duration::from_secs(420)));
        assert_eq!(wakes.action(Some(Duration::from_secs(420))), Action::requeue(Duration::from_secs(420)));
        assert_eq!(wakes.action(Some(Duration::from_millis(420_001))), Action::await_change());
        assert_eq!(wakes.action(Some(Duration::from_millis(1))), Action::requeue(Duration::from_millis(1)));
        assert_eq!(wakes.action(None), Action::await_change());
    }

    #[test]
    fn windows_follow_on_without_a_gap_however_late_a_sweep_runs() {
        let wakes = wakes();
        let first = wakes.first(ts("2026-12-01T10:00:00Z"));
        assert_eq!(first, Window { from: ts("2026-12-01T10:00:00Z"), to: ts("2026-12-01T10:05:00Z") });
        let on_time = wakes.next(&first, ts("2026-12-01T10:01:00Z"));
        assert_eq!(on_time, Window { from: ts("2026-12-01T10:05:00Z"), to: ts("2026-12-01T10:06:00Z") });
        let late = wakes.next(&on_time, ts("2026-12-01T11:00:00Z"));
        assert_eq!(late, Window { from: ts("2026-12-01T10:06:00Z"), to: ts("2026-12-01T11:05:00Z") });
        // A clock stepped back never moves a window backwards: it is empty until time catches up.
        let stepped_back = wakes.next(&late, ts("2026-12-01T09:00:00Z"));
        assert_eq!(stepped_back, Window { from: ts("2026-12-01T11:05:00Z"), to: ts("2026-12-01T11:05:00Z") });
    }

    #[test]
    fn an_expiry_is_woken_by_the_one_window_it_falls_in_to_the_second() {
        let window = Window { from: ts("2026-12-01T10:05:00Z"), to: ts("2026-12-01T10:06:00Z") };
        let uid = UID;
        assert!(!window.holds_second_of_day(second_of_day(uid)), "the key's daily look is elsewhere in the day");
        assert!(due_early(&active_until("2026-12-01T10:05:00Z"), uid, &window), "at its start");
        assert!(due_early(&active_until("2026-12-01T10:05:59Z"), uid, &window));
        assert!(!due_early(&active_until("2026-12-01T10:06:00Z"), uid, &window), "its end is the next one's");
        assert!(!due_early(&active_until("2026-12-01T10:04:59Z"), uid, &window), "the last one's");
    }

    #[test]
    fn the_daily_look_comes_once_a_day_at_the_keys_own_second() {
        let second = second_of_day(UID);
        let midnight = ts("2026-12-01T00:00:00Z");
        let at = midnight.saturating_add(SignedDuration::from_secs(second)).expect("in range");
        let status = active_until("2027-03-01T00:00:00Z");
        let window = |from: Timestamp, secs: i64| Window {
            from,
            to: from.saturating_add(SignedDuration::from_secs(secs)).expect("in range"),
        };
        assert!(due_early(&status, UID, &window(at, 1)), "the second itself");
        let just_after = at.saturating_add(SignedDuration::from_millis(1)).expect("in range");
        assert!(!due_early(&status, UID, &window(just_after, 1)), "a window starting just after it");
        assert!(due_early(
            &status,
            UID,
            &window(at.saturating_sub(SignedDuration::from_secs(60)).expect("in range"), 61)
        ));
        assert!(!due_early(
            &status,
            UID,
            &window(at.saturating_sub(SignedDuration::from_secs(60)).expect("in range"), 60)
        ));
        let next_day = at.saturating_add(SignedDuration::from_hours(24)).expect("in range");
        assert!(due_early(&status, UID, &window(next_day, 1)), "and the next day");
        assert!(due_early(&status, UID, &window(just_after, DAY)), "a window of a day holds it, wherever it starts");
        assert!(!due_early(&status, UID, &window(just_after, 0)), "an empty one nothing");
        // Keys created together look at different seconds.
        let seconds: std::collections::BTreeSet<i64> =
            (0..100).map(|n| second_of_day(&format!("5f0c7b1e-8a55-4d3e-9c1a-{n:012}"))).collect();
        assert!(seconds.len() > 95, "{}", seconds.len());
    }

    #[test]
    fn only_a_key_with_a_live_token_is_woken() {
        let all_day = Window { from: ts("2026-12-01T00:00:00Z"), to: ts("2026-12-02T00:00:00Z") };
        assert!(due_early(&active_until("2026-12-01T10:00:00Z"), UID, &all_day));
        let mut expired = active_until("2026-12-01T10:00:00Z");
        expired.record.phase = Some(Phase::Expired);
        assert!(!due_early(&expired, UID, &all_day), "expired");
        assert!(!due_early(&ApiKeyStatus::default(), UID, &all_day), "never issued");
        let mut refused = active_until("2026-12-01T10:00:00Z");
        let now = ts("2026-12-01T00:00:00Z");
        refused.conditions = vec![ready_condition(&[], false, reason::INVALID_SPEC, "bad".into(), Some(2), now)];
        assert!(!due_early(&refused, UID, &all_day), "refused: only a change helps");
        let credential = CredentialStatus {
            tokens: vec![
                TokenStatus { name: "old".into(), record: expired.record.clone() },
                TokenStatus { name: "new".into(), record: active_until("2026-12-01T10:00:00Z").record },
            ],
            ..Default::default()
        };
        let before_it = Window { from: ts("2026-12-01T09:00:00Z"), to: ts("2026-12-01T09:00:01Z") };
        assert!(due_early(&credential, UID, &all_day), "a Credential with one live token");
        assert!(!due_early(&credential, UID, &before_it));
    }

    #[test]
    fn a_live_token_past_its_expiry_is_woken_by_the_next_sweep_whatever_the_window() {
        // The sweep over its expiry saw a stale cache (or the clock stepped back): the window
        // has moved past it, and the key is still live.
        let window = Window { from: ts("2026-12-01T10:05:00Z"), to: ts("2026-12-01T10:06:00Z") };
        assert!(!window.holds_second_of_day(second_of_day(UID)));
        let missed = active_until("2026-12-01T09:00:00Z");
        assert!(due(&missed, UID, &window, ts("2026-12-01T10:00:00Z")), "past its expiry and live");
        assert!(!due(&missed, UID, &window, ts("2026-12-01T09:00:00Z")), "at its expiry second it is not past it");
        let mut expired = missed.clone();
        expired.record.phase = Some(Phase::Expired);
        assert!(!due(&expired, UID, &window, ts("2026-12-01T10:00:00Z")), "once expired, nothing to make up");
    }
}
