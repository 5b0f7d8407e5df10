//! The verifier's usage recorder: when each key was last used, and which applications
//! presented it, kept in the key's `KeyUsage`.
//!
//! A request only adds its sighting to memory ([`Recorder::saw`]: a short lock on one of a few
//! shards, no allocation once the key was seen in this flush interval). Every
//! `--usage-flush-interval` the [`writer`] takes what was seen and merges it into each key's
//! KeyUsage ([`seen::merge`]), writing only what changed at `--usage-resolution`: at most one
//! write per object per interval per replica (a new KeyUsage: its create, then its status), none
//! for a key at rest. Writes are create-only
//! or guarded by the resourceVersion they merged into, so replicas never lose each other's
//! sightings. A write that fails gives its sightings back for the next interval; no answer ever
//! waits for one.

pub mod seen;
pub mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;

use crate::judge::{Code, Entry, ObjectKey};
use seen::{Seen, Sighting};

/// `--usage-flush-interval` and `--usage-resolution`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub flush_interval: Duration,
    pub resolution: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self { flush_interval: Duration::from_secs(60), resolution: Duration::from_secs(60) }
    }
}

/// Shards of the recorder's memory: requests for different keys rarely wait for each other.
const SHARDS: usize = 16;

/// The last sighting an index entry recorded, as a digest of its resolution step, its
/// application and whether it was a use: a request that would record the same again (the
/// common case, a key used by its usual application many times a step) only reads it, takes
/// no lock and writes no shared memory. What it would have added is already taken or written,
/// at the same truncated times. A changed key gets a new entry, and so a fresh mark.
#[derive(Debug, Default)]
pub struct Mark(AtomicU64);

impl Clone for Mark {
    fn clone(&self) -> Self {
        Mark::default()
    }
}

/// The mark of a sighting (never 0, the mark of none).
fn mark_of(at: Timestamp, valid: bool, app: Option<&str>) -> u64 {
    // FNV-1a: a few nanoseconds for a name of some tens of bytes.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |byte: u8| hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    at.as_second().to_le_bytes().into_iter().for_each(&mut eat);
    eat(u8::from(valid));
    app.unwrap_or_default().bytes().for_each(&mut eat);
    eat(u8::from(app.is_some()));
    hash.max(1)
}

/// What was seen of one key since the last flush, and which key it is.
#[derive(Debug)]
pub struct Pending {
    pub object: Arc<ObjectKey>,
    pub seen: Seen,
}

/// Sightings per key (by `metadata.uid`) since the last flush. Holds only keys in the index
/// that were presented, each bounded (see [`Seen`]), so a flood of application names or of
/// requests cannot grow it.
pub struct Recorder {
    resolution: i64,
    shards: Box<[Shard]>,
}

/// One shard: sightings by key UID.
type Shard = Mutex<HashMap<Arc<str>, Pending>>;

impl Recorder {
    pub fn new(settings: &Settings) -> Self {
        let resolution = i64::try_from(settings.resolution.as_secs()).unwrap_or(i64::MAX).max(1);
        Self { resolution, shards: (0..SHARDS).map(|_| Mutex::default()).collect() }
    }

    fn shard(&self, uid: &str) -> &Shard {
        // UIDs are random: their last characters spread keys evenly.
        let spread = uid.bytes().rev().take(2).fold(0usize, |acc, b| acc * 31 + b as usize);
        &self.shards[spread % SHARDS]
    }

    /// Records one answer for `entry`'s key: a use when VALID, and the application it named
    /// whenever the application was judged (the token itself was good) from an allowed network.
    pub fn saw(&self, entry: &Entry, code: Code, app: Option<&str>, now: Timestamp) {
        let valid = code == Code::Valid;
        // Not from outside the key's networks either: whoever may use the key from there is no
        // application of it, and must not fill its list.
        let app_judged = app.is_some() && !matches!(code, Code::Expired | Code::Inactive | Code::IpNotAllowed);
        let Some(uid) = entry.uid.as_ref().filter(|_| valid || app_judged) else { return };
        let (at, app) = (seen::truncate(now, self.resolution), app.filter(|_| app_judged));
        let mark = mark_of(at, valid, app);
        if entry.usage_mark.0.load(Ordering::Relaxed) == mark {
            return;
        }
        let sighting = Sighting {
            valid,
            token: entry.token.as_deref(),
            app: app.map(|app| (app, entry.policy.app_state(Some(app)))),
            at,
        };
        let mut shard = self.shard(uid).lock().unwrap_or_else(PoisonError::into_inner);
        match shard.get_mut(&**uid) {
            Some(pending) => pending.seen.add(sighting),
            None => {
                let mut seen = Seen::default();
                seen.add(sighting);
                shard.insert(uid.clone(), Pending { object: entry.object.clone(), seen });
            }
        }
        entry.usage_mark.0.store(mark, Ordering::Relaxed);
    }

    /// Takes everything seen since the last take.
    pub fn take(&self) -> Vec<(Arc<str>, Pending)> {
        let mut taken = Vec::new();
        for shard in self.shards.iter() {
            let drained = std::mem::take(&mut *shard.lock().unwrap_or_else(PoisonError::into_inner));
            taken.extend(drained);
        }
        taken
    }

    /// Gives back what a failed write took, merged with what was seen since.
    pub fn restore(&self, uid: Arc<str>, pending: Pending) {
        let mut shard = self.shard(&uid).lock().unwrap_or_else(PoisonError::into_inner);
        match shard.get_mut(&uid) {
            Some(now) => now.seen.absorb(pending.seen),
            None => {
                shard.insert(uid, pending);
            }
        }
    }

    /// Keys with sightings not yet flushed.
    pub fn pending(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::AppState;
    use crate::judge::fixtures::{apikey, ts};
    use crate::token::Token;

    fn entry(spec: serde_json::Value) -> Entry {
        let mut key = apikey(&Token::generate("kw"), spec, "2026-03-01T00:00:00Z");
        key.metadata.uid = Some("0b4c5b2e-6d3a-4f0e-9a57-1c2d3e4f5a6b".into());
        crate::judge::apikey_entries(&key).remove(0)
    }

    #[test]
    fn only_valid_answers_are_uses_and_only_judged_applications_are_seen() {
        let recorder = Recorder::new(&Settings::default());
        let entry = entry(serde_json::json!({"applications": {"default": "Pending", "allowed": ["billing"]}}));
        let now = ts("2026-02-01T10:05:42Z");
        recorder.saw(&entry, Code::Expired, Some("billing"), now);
        recorder.saw(&entry, Code::Inactive, Some("billing"), now);
        assert_eq!(recorder.pending(), 0, "an expired or inactive key judges no application");
        recorder.saw(&entry, Code::AppPending, Some("report"), now);
        recorder.saw(&entry, Code::InsufficientScope, Some("billing"), now);
        let taken = recorder.take();
        assert_eq!(taken.len(), 1);
        let seen = &taken[0].1.seen;
        assert_eq!(seen.last_used, None);
        let apps: Vec<(&str, AppState)> = seen.apps.iter().map(|a| (&*a.name, a.state)).collect();
        assert_eq!(apps, [("report", AppState::Pending), ("billing", AppState::Allowed)]);
        assert_eq!(seen.apps[0].first, ts("2026-02-01T10:05:00Z"), "truncated to the minute");

        recorder.saw(&entry, Code::Valid, Some("billing"), now);
        let taken = recorder.take();
        assert_eq!(taken[0].1.seen.last_used, Some(ts("2026-02-01T10:05:00Z")));
        assert_eq!(recorder.pending(), 0, "taken");
    }

    #[test]
    fn the_same_sighting_again_in_one_step_takes_no_lock_and_adds_nothing() {
        let recorder = Recorder::new(&Settings::default());
        let entry = entry(serde_json::json!({}));
        let now = ts("2026-02-01T10:05:42Z");
        recorder.saw(&entry, Code::Valid, Some("a"), now);
        let first = recorder.take();
        assert_eq!(first.len(), 1);
        // Taken (and so written at the same truncated times): the same again records nothing.
        recorder.saw(&entry, Code::Valid, Some("a"), ts("2026-02-01T10:05:59Z"));
        assert_eq!(recorder.pending(), 0, "already recorded for this step");
        // Anything else does: another application, a refusal, the next step, a changed key.
        recorder.saw(&entry, Code::Valid, Some("b"), now);
        recorder.saw(&entry, Code::InsufficientScope, Some("a"), now);
        recorder.saw(&entry, Code::Valid, Some("a"), ts("2026-02-01T10:06:00Z"));
        let (_, pending) = recorder.take().pop().unwrap();
        assert_eq!(pending.seen.last_used, Some(ts("2026-02-01T10:06:00Z")));
        assert_eq!(pending.seen.apps.iter().map(|a| &*a.name).collect::<Vec<_>>(), ["b", "a"]);
        let changed = entry.clone();
        recorder.saw(&changed, Code::Valid, Some("a"), ts("2026-02-01T10:06:01Z"));
        assert_eq!(recorder.pending(), 1, "a rebuilt entry starts with no mark");
        assert_ne!(mark_of(now, true, None), mark_of(now, true, Some("")), "no name is not the empty name");
    }

    #[test]
    fn a_failed_write_is_given_back_and_merged_with_later_sightings() {
        let recorder = Recorder::new(&Settings { resolution: Duration::from_secs(1), ..Default::default() });
        let entry = entry(serde_json::json!({}));
        recorder.saw(&entry, Code::Valid, Some("a"), ts("2026-02-01T10:05:42Z"));
        let (uid, pending) = recorder.take().pop().unwrap();
        recorder.saw(&entry, Code::Valid, Some("b"), ts("2026-02-01T10:05:43Z"));
        recorder.restore(uid, pending);
        let (_, pending) = recorder.take().pop().unwrap();
        assert_eq!(pending.seen.last_used, Some(ts("2026-02-01T10:05:43Z")));
        assert_eq!(pending.seen.apps.iter().map(|a| &*a.name).collect::<Vec<_>>(), ["b", "a"]);
    }
}
