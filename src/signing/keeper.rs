//! The controller's keeper of the signing keys: it alone writes the signing Secret, in the
//! controller's own namespace. It reads what is there ([`classify`]), asks the pure
//! [`schedule::plan`] what to change, writes only when the plan changes something, and waits
//! until the plan's next look or a change of that one Secret (a watch by name, so a deleted
//! Secret is created again at once). Every write is create-only or guarded by the
//! resourceVersion and UID that were read: of two controllers that write at once one wins, and
//! the other reads again and plans from what won.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use super::schedule::{self, Plan, Schedule};
use super::{KeySet, KeysError, SECRET_TYPE, Stored, StoredKey, read_stored, secret_data};
use crate::api::{LABEL_MANAGED_BY, MANAGED_BY_VALUE};
use crate::controller::metrics::Metrics;

/// `--signing-secret` and the schedule of `--signing-key-*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeeperSettings {
    pub secret: String,
    pub schedule: Schedule,
}

impl Default for KeeperSettings {
    fn default() -> Self {
        Self { secret: super::DEFAULT_SECRET_NAME.into(), schedule: Schedule::default() }
    }
}

/// A Secret that is not ours is looked at again this often (and at each change of it).
const REFUSED_RETRY: Duration = Duration::from_secs(60);
/// The keeper looks at least this often, whatever the plan says: a wall clock that jumped is
/// noticed, and a look is only a GET.
const MAX_WAIT: Duration = Duration::from_secs(600);

/// What is found under the signing Secret's name.
#[derive(Debug)]
pub enum Found {
    /// Nothing: the first key set is created.
    Missing,
    /// Not a key set ours (another type, or content [`KeySet`] refuses): never written.
    Refused(KeysError),
    /// Ours, but being deleted: created anew once it is gone.
    Deleting,
    /// Ours.
    Ours(Stored),
}

/// Classifies the Secret named `name` as read (`None`: it does not exist).
pub fn classify(name: &str, secret: Option<&Secret>) -> Found {
    let Some(secret) = secret else { return Found::Missing };
    let stored = match read_stored(name, secret) {
        Ok(stored) => stored,
        Err(error) => return Found::Refused(error),
    };
    if let Err(error) = KeySet::from_stored(name, &stored) {
        return Found::Refused(error);
    }
    if secret.metadata.deletion_timestamp.is_some() {
        return Found::Deleting;
    }
    Found::Ours(stored)
}

/// The plan for a stored key set at `now`.
pub fn plan_for(stored: &Stored, now: Timestamp, schedule: &Schedule) -> Plan {
    let keys: Vec<(&str, Timestamp)> = stored.keys.iter().map(|key| (key.kid.as_str(), key.signs_from)).collect();
    schedule::plan(&keys, now, schedule)
}

/// The key set after `plan`: its dropped keys gone, `added` (the key [`Plan::add`] asked for)
/// in, oldest first.
pub fn apply(stored: &Stored, plan: &Plan, added: Option<StoredKey>) -> Stored {
    let mut keys: Vec<StoredKey> = stored.keys.iter().filter(|key| !plan.drop.contains(&key.kid)).cloned().collect();
    keys.extend(added);
    keys.sort_by_key(|key| key.signs_from);
    Stored { keys }
}

/// What the gauges show for keys signing from `signs_from` (any order) at `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gauges {
    /// Seconds since the current key began to sign.
    pub age_seconds: i64,
    /// When the next key begins to sign: the waiting key's `signsFrom`, else the newest key's
    /// plus one rotation (seconds since the Unix epoch).
    pub next_rotation: i64,
    pub keys: i64,
}

pub fn gauges(signs_from: &[Timestamp], now: Timestamp, rotation: Duration) -> Option<Gauges> {
    let mut sorted = signs_from.to_vec();
    sorted.sort();
    let first = *sorted.first()?;
    let current = sorted.iter().rev().find(|from| **from <= now).copied().unwrap_or(first);
    let next_rotation = match sorted.iter().find(|from| **from > now) {
        Some(waiting) => waiting.as_second(),
        None => sorted.last().map_or(0, |newest| newest.as_second().saturating_add(rotation.as_secs() as i64)),
    };
    Some(Gauges {
        age_seconds: now.as_second().saturating_sub(current.as_second()).max(0),
        next_rotation,
        keys: sorted.len() as i64,
    })
}

/// The outcome of a write that may lose a race.
enum Written {
    /// Written: the new resourceVersion.
    Done(Option<String>),
    /// Another writer came first (the Secret exists, changed or vanished since it was read).
    LostRace,
}

/// The signing Secret, written only create-only or guarded by the resourceVersion and UID read.
struct SigningStore {
    api: Api<Secret>,
    name: String,
    metrics: Arc<Metrics>,
}

impl SigningStore {
    fn params() -> PostParams {
        PostParams { field_manager: Some(crate::controller::FIELD_MANAGER.into()), ..Default::default() }
    }

    async fn read(&self) -> kube::Result<Option<Secret>> {
        self.metrics.count_signing_look();
        self.api.get_opt(&self.name).await
    }

    /// Creates the Secret; never replaces one that exists.
    async fn create(&self, stored: &Stored) -> kube::Result<Written> {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some([(LABEL_MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string())].into()),
                ..Default::default()
            },
            type_: Some(SECRET_TYPE.into()),
            data: Some(secret_data(stored)),
            ..Default::default()
        };
        self.metrics.count_signing_write("create");
        Self::written(self.api.create(&Self::params(), &secret).await)
    }

    /// Replaces the key set of `existing`, only if it is still the version that was read; its
    /// other labels, annotations and data entries stay.
    async fn replace(&self, existing: &Secret, stored: &Stored) -> kube::Result<Written> {
        let mut secret = existing.clone();
        secret.metadata.managed_fields = None;
        secret.metadata.labels.get_or_insert_default().insert(LABEL_MANAGED_BY.into(), MANAGED_BY_VALUE.into());
        secret.data.get_or_insert_default().extend(secret_data(stored));
        self.metrics.count_signing_write("update");
        Self::written(self.api.replace(&existing.name_any(), &Self::params(), &secret).await)
    }

    fn written(result: kube::Result<Secret>) -> kube::Result<Written> {
        match result {
            Ok(secret) => Ok(Written::Done(secret.metadata.resource_version)),
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Ok(Written::LostRace),
            Err(error) => Err(error),
        }
    }
}

/// What one look ended with.
enum Looked {
    /// Nothing more to do until then (or a change).
    Until(Timestamp),
    /// Another writer won: read again now.
    Again,
    /// Not ours: look again later, or at a change.
    Refused,
    /// Being deleted: look again at the change that removes it.
    Deleting,
}

#[derive(Debug, thiserror::Error)]
enum LookError {
    #[error("{0}")]
    Kube(#[from] crate::Error),
    #[error("cannot make a signing key: {0}")]
    Generate(String),
}

struct Keeper {
    store: SigningStore,
    namespace: String,
    schedule: Schedule,
    metrics: Arc<Metrics>,
}

impl Keeper {
    /// Reads the Secret, and writes what the plan changes.
    async fn look(&self, now: Timestamp) -> Result<Looked, LookError> {
        let name = &self.store.name;
        let existing = self.store.read().await.map_err(crate::Error::Kube)?;
        let (stored, plan) = match classify(name, existing.as_ref()) {
            Found::Refused(error) => {
                self.metrics.count_signing_refusal();
                tracing::error!(
                    secret = name,
                    namespace = self.namespace,
                    %error,
                    "the signing Secret is not a key set of ours and is never overwritten: token exchange has no \
                     signing keys until it is removed or --signing-secret names another Secret"
                );
                return Ok(Looked::Refused);
            }
            Found::Deleting => return Ok(Looked::Deleting),
            Found::Missing => (Stored::default(), schedule::plan(&[], now, &self.schedule)),
            Found::Ours(stored) => {
                let plan = plan_for(&stored, now, &self.schedule);
                (stored, plan)
            }
        };
        if !plan.changes() {
            self.show(&stored);
            return Ok(Looked::Until(plan.next_look));
        }
        let added = plan.add.map(StoredKey::generate).transpose().map_err(LookError::Generate)?;
        let next = apply(&stored, &plan, added.clone());
        let written = match &existing {
            None => self.store.create(&next).await,
            Some(existing) => self.store.replace(existing, &next).await,
        };
        let written = written.map_err(crate::Error::Kube)?;
        let Written::Done(resource_version) = written else {
            self.metrics.count_signing_conflict();
            tracing::info!(secret = name, "another controller wrote the signing Secret first; reading it again");
            return Ok(Looked::Again);
        };
        if let Some(key) = &added {
            let signs_from = key.signs_from.to_string();
            if existing.is_none() {
                tracing::info!(
                    secret = name,
                    namespace = self.namespace,
                    kid = key.kid,
                    signs_from,
                    "created the signing Secret"
                );
            } else {
                tracing::info!(secret = name, kid = key.kid, signs_from, "published the next signing key");
            }
        }
        for kid in &plan.drop {
            tracing::info!(secret = name, kid, "dropped a retired signing key: every token it signed has expired");
        }
        tracing::debug!(secret = name, resource_version, "wrote the signing Secret");
        self.show(&next);
        // The plan for what was written says when to look next; the watch's event of this very
        // write wakes a look that finds nothing to do.
        Ok(Looked::Until(plan_for(&next, now, &self.schedule).next_look))
    }

    fn show(&self, stored: &Stored) {
        let signs_from: Vec<Timestamp> = stored.keys.iter().map(|key| key.signs_from).collect();
        self.metrics.set_signing_keys(signs_from, self.schedule.rotation);
    }
}

/// How long to wait for `until`, at most [`MAX_WAIT`].
fn wait_until(until: Timestamp, now: Timestamp) -> Duration {
    let left = until.duration_since(now);
    // A few milliseconds past the time, so that the next look finds it come.
    let left = Duration::try_from(left).unwrap_or(Duration::ZERO) + Duration::from_millis(5);
    left.min(MAX_WAIT)
}

/// Keeps the signing Secret `settings.secret` in `namespace` until `shutdown` turns true.
pub async fn run(
    client: Client,
    namespace: String,
    settings: KeeperSettings,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let by_name = watcher::Config::default().fields(&format!("metadata.name={}", settings.secret));
    let metadata: Api<kube::core::PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), &namespace);
    let mut changes = watcher(metadata, by_name).backoff(crate::retry::WatchBackoff::default()).boxed();
    let keeper = Keeper {
        store: SigningStore { api, name: settings.secret.clone(), metrics: metrics.clone() },
        namespace: namespace.clone(),
        schedule: settings.schedule,
        metrics,
    };
    tracing::info!(secret = settings.secret, namespace, "keeping the signing keys");
    let mut failures = 0u32;
    let mut conflicts = 0u32;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let wait = match keeper.look(Timestamp::now()).await {
            Ok(Looked::Until(next_look)) => {
                (failures, conflicts) = (0, 0);
                wait_until(next_look, Timestamp::now())
            }
            Ok(Looked::Again) => {
                conflicts += 1;
                // A lost race means another writer's version is there to read; only a storm of
                // them (a write that can never win) waits.
                if conflicts < 5 {
                    continue;
                }
                crate::retry::reconcile_delay(conflicts, true, rand::random::<f64>())
            }
            Ok(Looked::Refused) => REFUSED_RETRY,
            Ok(Looked::Deleting) => MAX_WAIT,
            Err(error) => {
                failures = failures.saturating_add(1);
                let transient = matches!(&error, LookError::Kube(e) if e.is_transient());
                let delay = crate::retry::reconcile_delay(failures, transient, rand::random::<f64>());
                tracing::warn!(secret = settings.secret, namespace = keeper.namespace, %error, retry_in = ?delay, "cannot keep the signing keys");
                delay
            }
        };
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        // Wait for the time, a change of the Secret, or the end.
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                _ = &mut sleep => break,
                event = changes.next() => match event {
                    Some(Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone)) => break,
                    Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => {}
                    Some(Err(error)) => tracing::debug!(%error, "the signing Secret's watch failed; retrying"),
                    // The watch never ends with a backoff; if it did, the timer still runs.
                    None => {
                        (&mut sleep).await;
                        break;
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    fn secret(stored: &Stored) -> Secret {
        Secret { type_: Some(SECRET_TYPE.into()), data: Some(secret_data(stored)), ..Default::default() }
    }

    fn schedule() -> Schedule {
        Schedule {
            rotation: Duration::from_secs(30 * 86_400),
            publish_ahead: Duration::from_secs(3_600),
            retain: Duration::from_secs(26 * 3_600),
        }
    }

    #[test]
    fn what_is_found_is_missing_ours_or_refused_and_never_ours_when_foreign() {
        assert!(matches!(classify("s", None), Found::Missing));
        let stored = Stored { keys: vec![StoredKey::generate(ts("2026-12-01T00:00:00Z")).unwrap()] };
        assert!(matches!(classify("s", Some(&secret(&stored))), Found::Ours(found) if found == stored));
        let mut opaque = secret(&stored);
        opaque.type_ = Some("Opaque".into());
        assert!(matches!(classify("s", Some(&opaque)), Found::Refused(KeysError::NotOurs(..))));
        let mut garbage = secret(&stored);
        garbage.data = Some([(super::super::DATA_KEY.to_string(), k8s_openapi::ByteString(b"{}".to_vec()))].into());
        assert!(matches!(classify("s", Some(&garbage)), Found::Refused(KeysError::Malformed { .. })));
        let mut empty = secret(&stored);
        empty.data = None;
        assert!(matches!(classify("s", Some(&empty)), Found::Refused(KeysError::Missing(_))));
        let mut forged = stored.clone();
        forged.keys[0].kid = "x".into();
        assert!(matches!(classify("s", Some(&secret(&forged))), Found::Refused(KeysError::BadKey { .. })));
        let mut deleting = secret(&stored);
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts("2026-12-01T00:00:00Z")));
        assert!(matches!(classify("s", Some(&deleting)), Found::Deleting));
    }

    #[test]
    fn applying_a_plan_drops_retired_keys_and_adds_the_next_one_in_order() {
        let a = StoredKey::generate(ts("2026-12-01T00:00:00Z")).unwrap();
        let b = StoredKey::generate(ts("2026-12-31T00:00:00Z")).unwrap();
        let stored = Stored { keys: vec![b.clone(), a.clone()] };
        let plan = plan_for(&stored, ts("2027-01-29T23:00:00Z"), &schedule());
        assert_eq!(plan.drop, vec![a.kid.clone()]);
        assert_eq!(plan.add, Some(ts("2027-01-30T00:00:00Z")));
        let c = StoredKey::generate(plan.add.unwrap()).unwrap();
        let next = apply(&stored, &plan, Some(c.clone()));
        assert_eq!(next.keys.iter().map(|k| k.kid.clone()).collect::<Vec<_>>(), [b.kid, c.kid]);
        let again = plan_for(&next, ts("2027-01-29T23:00:00Z"), &schedule());
        assert!(!again.changes(), "what was written needs no second write: {again:?}");
        assert_eq!(again.next_look, ts("2027-01-30T00:00:00Z"));
    }

    #[test]
    fn the_gauges_show_the_current_keys_age_and_the_next_rotation() {
        let rotation = Duration::from_secs(30 * 86_400);
        let first = ts("2026-12-01T00:00:00Z");
        let waiting = ts("2026-12-31T00:00:00Z");
        let at = ts("2026-12-30T23:30:00Z");
        assert_eq!(
            gauges(&[waiting, first], at, rotation),
            Some(Gauges { age_seconds: 29 * 86_400 + 23 * 3_600 + 1_800, next_rotation: waiting.as_second(), keys: 2 })
        );
        let later = ts("2026-12-31T00:00:10Z");
        assert_eq!(
            gauges(&[first, waiting], later, rotation),
            Some(Gauges { age_seconds: 10, next_rotation: ts("2027-01-30T00:00:00Z").as_second(), keys: 2 })
        );
        assert_eq!(gauges(&[], later, rotation), None);
        // A clock behind the key's: the first key, aged zero.
        assert_eq!(gauges(&[first], ts("2026-11-30T00:00:00Z"), rotation).map(|g| g.age_seconds), Some(0));
    }

    #[test]
    fn the_wait_reaches_just_past_the_next_look_and_never_beyond_the_longest_wait() {
        let now = ts("2026-12-01T00:00:00Z");
        assert_eq!(wait_until(ts("2026-12-01T00:00:03Z"), now), Duration::from_millis(3_005));
        assert_eq!(wait_until(ts("2026-11-30T00:00:00Z"), now), Duration::from_millis(5));
        assert_eq!(wait_until(ts("2027-12-01T00:00:00Z"), now), MAX_WAIT);
    }
}
