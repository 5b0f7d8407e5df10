//! Status writes: a Ready condition that keeps its transition time, server-side apply of the
//! status subresource, and a guard against re-writing a status the cache has not caught up with.

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::FIELD_MANAGER;
use super::metrics::Metrics;
use crate::api::CONDITION_READY;
use crate::error::Result;

/// A status timestamp, in whole seconds (see [`super::whole_seconds`]).
pub fn time(at: Timestamp) -> Time {
    Time(super::whole_seconds(at))
}

/// The Ready condition for a new status, keeping `lastTransitionTime` when `status` is unchanged
/// so that a reconcile with nothing new produces an identical status (and so no write).
pub fn ready_condition(
    previous: &[Condition],
    ready: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if ready { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == CONDITION_READY && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| time(now));
    Condition {
        type_: CONDITION_READY.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// Remembers, per object UID, the resourceVersion an object had when its status was last
/// written and a digest of the status written, until the cache shows a later version. A
/// reconcile that sees that same resourceVersion in its cache is looking at the object from
/// before the write and must not write the same status again. Only writes the cache has not
/// caught up with are kept (the watch tells, see [`RecentWrites::observed`]), and a digest, not
/// the status: with many objects this stays small.
#[derive(Default)]
pub struct RecentWrites {
    writes: Mutex<HashMap<String, Recent>>,
}

enum Recent {
    /// A write over `before` is under way; `moved` once the cache showed another version.
    Writing { before: String, moved: bool },
    /// `digest` was written over `before`, and the cache still shows `before`.
    Written { before: String, digest: u64 },
}

/// A status write under way (see [`RecentWrites::begin`]); forgotten unless recorded.
struct Writing<'a> {
    recent: &'a RecentWrites,
    uid: &'a str,
}

impl Writing<'_> {
    /// The write succeeded: remembered, unless the cache has already moved past `before`.
    fn written(self, status: &serde_json::Value) {
        let mut writes = self.recent.lock();
        if let Some(entry) = writes.get_mut(self.uid)
            && let Recent::Writing { before, moved: false } = entry
        {
            *entry = Recent::Written { before: std::mem::take(before), digest: digest(status) };
        }
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        let mut writes = self.recent.lock();
        if matches!(writes.get(self.uid), Some(Recent::Writing { .. })) {
            writes.remove(self.uid);
        }
    }
}

impl RecentWrites {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Recent>> {
        self.writes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// True when `desired` was already written over the version of the object in hand.
    fn already_written(&self, uid: &str, resource_version: &str, desired: &serde_json::Value) -> bool {
        let mut writes = self.lock();
        match writes.get(uid) {
            Some(Recent::Written { before, digest: written }) if before == resource_version => {
                *written == digest(desired)
            }
            Some(Recent::Written { .. }) => {
                // The cache has moved past our write; it is the truth again.
                writes.remove(uid);
                false
            }
            Some(Recent::Writing { .. }) | None => false,
        }
    }

    /// True once this process has written the object's status (the cache may not show it yet).
    pub fn pending(&self, uid: &str) -> bool {
        self.lock().contains_key(uid)
    }

    /// Marks a write of the status over `before` under way.
    fn begin<'a>(&'a self, uid: &'a str, before: &str) -> Writing<'a> {
        self.lock().insert(uid.to_string(), Recent::Writing { before: before.to_string(), moved: false });
        Writing { recent: self, uid }
    }

    /// The watch saw the object `uid` at `resource_version`: a write over an older version is
    /// in the cache now (or was overtaken), and need not be remembered.
    pub fn observed(&self, uid: &str, resource_version: &str) {
        let mut writes = self.lock();
        match writes.get_mut(uid) {
            Some(Recent::Written { before, .. }) if before != resource_version => {
                writes.remove(uid);
            }
            Some(Recent::Writing { before, moved }) if before != resource_version => *moved = true,
            _ => {}
        }
    }

    #[cfg(test)]
    fn record(&self, uid: &str, before: &str, written: &serde_json::Value) {
        self.begin(uid, before).written(written);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// A digest of a status that ignores condition transition times: a reconcile working from a
/// cache that predates our write sees no condition and stamps a fresh transition time, which
/// is no reason to write the same status again.
fn digest(status: &serde_json::Value) -> u64 {
    use std::hash::{Hash, Hasher};
    fn strip(value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => serde_json::Value::Object(
                map.iter()
                    .filter(|(k, _)| k.as_str() != "lastTransitionTime")
                    .map(|(k, v)| (k.clone(), strip(v)))
                    .collect(),
            ),
            serde_json::Value::Array(items) => serde_json::Value::Array(items.iter().map(strip).collect()),
            other => other.clone(),
        }
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    strip(status).to_string().hash(&mut hasher);
    hasher.finish()
}

/// Whether `desired` empties a top-level list that `current` holds entries in.
fn empties_a_list(current: Option<&serde_json::Value>, desired: &serde_json::Value) -> bool {
    let (Some(serde_json::Value::Object(current)), serde_json::Value::Object(desired)) = (current, desired) else {
        return false;
    };
    desired.iter().any(|(field, value)| {
        value.as_array().is_some_and(Vec::is_empty)
            && current.get(field).and_then(serde_json::Value::as_array).is_some_and(|items| !items.is_empty())
    })
}

/// The metrics label of a kind's status subresource.
fn status_resource<K: Resource<DynamicType = ()>>() -> &'static str {
    match K::kind(&()).as_ref() {
        "ApiKey" => "apikeys/status",
        "Credential" => "credentials/status",
        _ => "status",
    }
}

/// Writes `desired` as the object's status by server-side apply, unless the object already
/// has it, guarded by the object's resourceVersion (a stale object gets a 409 conflict).
/// Returns whether a write was made.
pub async fn apply<K, S>(
    api: &Api<K>,
    object: &K,
    current: Option<&S>,
    desired: &S,
    recent: &RecentWrites,
    metrics: &Metrics,
) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if current == Some(desired) {
        return Ok(false);
    }
    let uid = object.uid().unwrap_or_default();
    let resource_version = object.resource_version().unwrap_or_default();
    let desired_json =
        serde_json::to_value(desired).map_err(|source| crate::Error::Serialize { what: "status", source })?;
    if recent.already_written(&uid, &resource_version, &desired_json) {
        return Ok(false);
    }
    let writing = recent.begin(&uid, &resource_version);
    let current_json = current.map(serde_json::to_value).transpose().ok().flatten();
    // Guarded by the version the status was computed from: a writer whose view is stale (a
    // second controller whose cache lags the first's write) gets a conflict and looks again,
    // instead of writing, say, a pending status over the other's issued token.
    let guard = serde_json::json!({ "resourceVersion": resource_version });
    if empties_a_list(current_json.as_ref(), &desired_json) {
        // Server-side apply on Kubernetes 1.20 turns a list-map whose last entry goes into
        // `null`, which the schema refuses (and then every later apply). A merge patch of the
        // whole status replaces the list with `[]`; applies work again after it.
        let patch = serde_json::json!({ "metadata": guard, "status": desired_json });
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        api.patch_status(&object.name_any(), &params, &Patch::Merge(&patch)).await?;
        metrics.count_write(status_resource::<K>(), "patch");
    } else {
        let patch = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "metadata": guard,
            "status": desired_json,
        });
        api.patch_status(&object.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
        metrics.count_write(status_resource::<K>(), "apply");
    }
    writing.written(&desired_json);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-11-22T10:00:00Z".parse().expect("ts")
    }

    #[test]
    fn transition_time_is_kept_while_the_condition_status_holds() {
        let first = ready_condition(&[], true, "Issued", "m".into(), Some(1), now());
        let later: Timestamp = "2026-11-23T10:00:00Z".parse().expect("ts");
        let same = ready_condition(std::slice::from_ref(&first), true, "Issued", "m".into(), Some(1), later);
        assert_eq!(same, first);
        let flipped = ready_condition(&[first], false, "Inactive", "m".into(), Some(2), later);
        assert_eq!(flipped.last_transition_time, Time(later));
    }

    #[test]
    fn status_times_are_whole_seconds_like_the_stored_ones() {
        let precise: Timestamp = "2026-11-22T10:00:00.987654Z".parse().expect("ts");
        let stored: Time = serde_json::from_value(serde_json::to_value(Time(precise)).expect("json")).expect("time");
        assert_eq!(time(precise), stored);
    }

    #[test]
    fn a_write_is_remembered_only_against_the_version_it_was_made_over() {
        let recent = RecentWrites::default();
        let status = serde_json::json!({"phase": "Active"});
        recent.record("u", "10", &status);
        assert!(recent.already_written("u", "10", &status));
        assert!(!recent.already_written("u", "10", &serde_json::json!({"phase": "Inactive"})));
        // A newer version in the cache ends the guard, whatever it holds.
        assert!(!recent.already_written("u", "11", &status));
        assert!(!recent.already_written("u", "10", &status));
    }

    #[test]
    fn a_write_is_forgotten_once_the_cache_shows_a_later_version_or_if_it_failed() {
        let recent = RecentWrites::default();
        let status = serde_json::json!({"phase": "Active"});
        // The watch shows the write after its answer: remembered until then.
        recent.record("u", "10", &status);
        recent.observed("u", "10");
        assert!(recent.pending("u"), "the cache still shows the version written over");
        recent.observed("u", "11");
        assert!(!recent.pending("u") && recent.len() == 0, "the cache caught up");
        // The watch shows it before its answer: not remembered at all.
        let writing = recent.begin("v", "20");
        assert!(recent.pending("v"), "under way");
        recent.observed("v", "21");
        writing.written(&status);
        assert!(!recent.pending("v") && !recent.already_written("v", "20", &status));
        // A failed write is forgotten.
        drop(recent.begin("w", "30"));
        assert_eq!(recent.len(), 0);
        // Other objects' events change nothing.
        recent.record("u", "12", &status);
        recent.observed("x", "99");
        assert!(recent.already_written("u", "12", &status));
    }

    #[test]
    fn emptying_a_list_is_told_apart_from_keeping_one_empty() {
        let tokens =
            |n: usize| serde_json::json!({"phase": "Active", "tokens": vec![serde_json::json!({"name": "a"}); n]});
        assert!(empties_a_list(Some(&tokens(1)), &tokens(0)));
        assert!(!empties_a_list(Some(&tokens(0)), &tokens(0)), "already empty");
        assert!(!empties_a_list(None, &tokens(0)), "a first status");
        assert!(!empties_a_list(Some(&tokens(2)), &tokens(1)), "one entry left");
    }

    #[test]
    fn a_fresh_transition_time_alone_is_no_reason_to_write_again() {
        let recent = RecentWrites::default();
        let written =
            serde_json::json!({"conditions": [{"type": "Ready", "lastTransitionTime": "2026-11-22T10:00:00Z"}]});
        let again =
            serde_json::json!({"conditions": [{"type": "Ready", "lastTransitionTime": "2026-11-22T10:00:01Z"}]});
        recent.record("u", "10", &written);
        assert!(recent.already_written("u", "10", &again));
    }
}
