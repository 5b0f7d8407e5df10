//! The usage recorder's API writes: every flush interval, each key seen since the last one has
//! its sightings merged into its KeyUsage, written only when the merge changed something.
//!
//! The writer remembers what it last read or wrote of each KeyUsage (its resourceVersion and
//! status), so a single replica merges without reading. A KeyUsage is created bare (a create
//! cannot set what the status subresource holds) and its status written at once; every status
//! write is a merge patch guarded by the resourceVersion it was merged into: when another replica wrote in between, the patch is refused
//! (409), the object is read again and merged again. A KeyUsage whose controller is not this
//! key (a previous key of the same name awaiting garbage collection, or one made by hand) is
//! never written.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::seen::{Seen, merge};
use super::{Pending, Recorder, Settings};
use crate::api::usage::usage_name;
use crate::api::{KeyUsage, KeyUsageSpec, KeyUsageStatus, LABEL_MANAGED_BY, MANAGED_BY_VALUE};
use crate::judge::ObjectKey;

/// The field manager of the verifier's writes.
pub const FIELD_MANAGER: &str = "keyward-verifier";

/// KeyUsages written at once during a flush.
const IN_FLIGHT: usize = 8;
/// Reads and writes of one KeyUsage in one flush before its sightings wait for the next.
const ATTEMPTS: usize = 3;

/// What the writer last read or wrote of one KeyUsage.
#[derive(Clone, Debug)]
struct Known {
    resource_version: String,
    /// The UID of the key its controller ownerReference names.
    owner: Option<String>,
    status: KeyUsageStatus,
}

impl Known {
    fn of(usage: &KeyUsage) -> Option<Self> {
        Some(Known {
            resource_version: usage.resource_version()?,
            owner: usage.owner_references().iter().find(|o| o.controller == Some(true)).map(|o| o.uid.clone()),
            status: usage.status.clone().unwrap_or_default(),
        })
    }
}

/// How one key's flush ended.
enum Flushed {
    /// Written (created or patched), or found already holding everything seen.
    Current(Known),
    /// Not written this time (an API error, or other writers kept winning): the sightings wait
    /// for the next flush.
    Later(Seen),
    /// Never to be written: the KeyUsage belongs to something else, or the key's name is too
    /// long for one.
    Refused(&'static str),
}

/// Every flush interval, writes what `recorder` saw. `indexed` says whether a key UID is still
/// in the index (a deleted key's sightings and memory are dropped).
pub async fn run(
    client: Client,
    recorder: Arc<Recorder>,
    settings: Settings,
    metrics: Arc<UsageMetrics>,
    indexed: impl Fn(&str) -> bool,
) {
    let mut known: HashMap<Arc<str>, Known> = HashMap::new();
    let mut ticks = tokio::time::interval(settings.flush_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        known.retain(|uid, _| indexed(uid));
        let taken: Vec<(Arc<str>, Pending)> = recorder.take().into_iter().filter(|(uid, _)| indexed(uid)).collect();
        metrics.held(taken.iter().map(|(_, pending)| pending.seen.apps.len()).sum());
        let flushes: Vec<_> = taken
            .into_iter()
            .map(|(uid, pending)| {
                let was = known.get(&uid).cloned();
                (uid, pending, was)
            })
            .collect();
        let flushes = flushes.into_iter().map(|(uid, pending, was)| {
            let (client, metrics) = (client.clone(), metrics.clone());
            async move {
                let flushed = flush_one(&client, &metrics, &uid, &pending.object, &pending.seen, was).await;
                (uid, pending, flushed)
            }
        });
        let mut results = futures::stream::iter(flushes).buffer_unordered(IN_FLIGHT);
        while let Some((uid, pending, flushed)) = results.next().await {
            match flushed {
                Ok(Flushed::Current(now)) => {
                    known.insert(uid, now);
                }
                Ok(Flushed::Later(seen)) => {
                    metrics.wrote("deferred");
                    known.remove(&uid);
                    recorder.restore(uid, Pending { object: pending.object, seen });
                }
                Ok(Flushed::Refused(why)) => {
                    metrics.wrote("refused");
                    tracing::warn!(namespace = %pending.object.namespace, key = %pending.object.name, why, "not recording usage");
                    known.remove(&uid);
                }
                Err(error) => {
                    metrics.wrote("failed");
                    tracing::warn!(namespace = %pending.object.namespace, key = %pending.object.name, %error, "writing the KeyUsage failed; retrying at the next flush");
                    known.remove(&uid);
                    recorder.restore(uid, pending);
                }
            }
        }
        drop(results);
        metrics.set_known(known.len(), recorder.pending());
        metrics.flushes.inc();
    }
}

/// Merges `seen` into the KeyUsage of `object` (key UID `uid`), starting from what was known.
async fn flush_one(
    client: &Client,
    metrics: &UsageMetrics,
    uid: &str,
    object: &ObjectKey,
    seen: &Seen,
    mut known: Option<Known>,
) -> Result<Flushed, kube::Error> {
    let name = usage_name(object.kind, &object.name);
    if crate::api::names::dns_subdomain(&name).is_err() {
        return Ok(Flushed::Refused("the key's name is too long for a KeyUsage name"));
    }
    let api: Api<KeyUsage> = Api::namespaced(client.clone(), &object.namespace);
    for _ in 0..ATTEMPTS {
        let current = match known.take() {
            Some(known) => known,
            None => match api.get_opt(&name).await? {
                Some(usage) => match Known::of(&usage) {
                    Some(known) => known,
                    None => return Ok(Flushed::Later(seen.clone())),
                },
                // Created bare (a create cannot set status): the status follows at once.
                None => match create(&api, &name, uid, object).await? {
                    Some(created) => {
                        metrics.wrote("created");
                        created
                    }
                    None => {
                        metrics.wrote("conflict");
                        continue;
                    }
                },
            },
        };
        if current.owner.as_deref() != Some(uid) {
            return Ok(match current.owner {
                // The KeyUsage of a deleted key of the same name: gone once collected.
                Some(_) => Flushed::Later(seen.clone()),
                None => Flushed::Refused("a KeyUsage of that name exists without this key as its controller"),
            });
        }
        let Some(status) = merge(Some(&current.status), seen) else { return Ok(Flushed::Current(current)) };
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": current.resource_version},
            "status": status,
        });
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        match api.patch_status(&name, &params, &Patch::Merge(patch)).await {
            Ok(written) => {
                metrics.wrote("patched");
                return Ok(Known::of(&written).map_or_else(|| Flushed::Later(seen.clone()), Flushed::Current));
            }
            // Another replica wrote in between: read it and merge again.
            Err(kube::Error::Api(status)) if status.code == 409 => metrics.wrote("conflict"),
            // Deleted in between (its key went): created again if the key is still indexed.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error),
        }
    }
    Ok(Flushed::Later(seen.clone()))
}

/// Creates the KeyUsage of `object` (without status, which the API server would drop); `None`
/// when one was created meanwhile.
async fn create(api: &Api<KeyUsage>, name: &str, uid: &str, object: &ObjectKey) -> Result<Option<Known>, kube::Error> {
    let kind = object.kind.as_str();
    let owner = OwnerReference {
        api_version: crate::api::ApiKey::api_version(&()).into_owned(),
        kind: kind.into(),
        name: object.name.to_string(),
        uid: uid.into(),
        controller: Some(true),
        // Setting it needs update on the key's finalizers, which the verifier does not have.
        block_owner_deletion: None,
    };
    let usage = KeyUsage {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(object.namespace.to_string()),
            labels: Some([(LABEL_MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string())].into()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: KeyUsageSpec { kind: kind.into(), name: object.name.to_string() },
        status: None,
    };
    let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    match api.create(&params, &usage).await {
        Ok(created) => Ok(Known::of(&created)),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
        Err(error) => Err(error),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    result: &'static str,
}

/// The recorder's metrics, in the verifier's registry (prefix `keyward_verifier`).
#[derive(Debug, Default)]
pub struct UsageMetrics {
    writes: Family<WriteLabels, Counter>,
    flushes: Counter,
    known: Gauge,
    pending: Gauge,
    applications: Gauge,
}

impl UsageMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "usage_writes",
            "KeyUsage flushes by result: created, patched, conflict (another replica wrote first), deferred (retried at the next flush), failed, refused (not ours)",
            self.writes.clone(),
        );
        registry.register("usage_flushes", "Flushes of the usage recorder, written or not", self.flushes.clone());
        registry.register("usage_known_objects", "KeyUsages whose last version the recorder holds", self.known.clone());
        registry.register("usage_pending_keys", "Keys with sightings not yet flushed", self.pending.clone());
        registry.register(
            "usage_held_applications",
            "Application sightings the recorder held at the last flush (at most 64 per key)",
            self.applications.clone(),
        );
    }

    fn held(&self, applications: usize) {
        self.applications.set(i64::try_from(applications).unwrap_or(i64::MAX));
    }

    fn wrote(&self, result: &'static str) {
        self.writes.get_or_create(&WriteLabels { result }).inc();
    }

    fn set_known(&self, known: usize, pending: usize) {
        self.known.set(i64::try_from(known).unwrap_or(i64::MAX));
        self.pending.set(i64::try_from(pending).unwrap_or(i64::MAX));
    }
}
