//! The controller: one reconciler per kind, sharing a Context and the Secret writer.

pub mod apikey;
pub mod credential;
pub mod issuer;
pub mod leader;
pub mod metrics;
pub mod process;
pub mod secret;
mod secret_watch;
pub(crate) use secret_watch::OwnWrites;
pub mod status;
pub mod transition;
pub mod wakes;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1 as events;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::watch;
use tracing::Instrument;

use crate::api::expiry::ExpiryPolicy;
use crate::api::{ApiKey, Credential, Key, reason};
use crate::token::TokenHash;
use crate::watch::{api_in, watch_scopes};
use metrics::Metrics;

/// Timestamps in status and annotations are whole seconds, as Kubernetes stores them: a finer
/// one would never compare equal to what was stored, and every reconcile would write again.
pub fn whole_seconds(at: jiff::Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_second(at.as_second()).unwrap_or(at)
}

/// Events waiting to be written, at most; and written at once.
const EVENTS_QUEUED: usize = 1024;
/// How soon a status write refused as computed from an older version is computed again: the
/// cache has the newer version within moments.
const STATUS_CONFLICT_RETRY: Duration = Duration::from_millis(300);
const EVENTS_IN_FLIGHT: usize = 8;
/// How long an event waits for the reconciles under way to finish: in a burst, events share the
/// API server with the writes that issue tokens, and the tokens come first.
const EVENTS_HOLD: Duration = Duration::from_secs(1);

/// Writes queued events, a few at a time, until every sender is gone. Each waits until no
/// reconcile is running, or at most [`EVENTS_HOLD`].
async fn write_events(
    client: Client,
    metrics: Arc<Metrics>,
    queued: tokio::sync::mpsc::Receiver<events::Event>,
    reconciling: watch::Receiver<usize>,
) {
    futures::stream::unfold(queued, |mut queued| async move { queued.recv().await.map(|event| (event, queued)) })
        .for_each_concurrent(EVENTS_IN_FLIGHT, |event| {
            let api: Api<events::Event> =
                Api::namespaced(client.clone(), event.metadata.namespace.as_deref().unwrap_or("default"));
            let metrics = metrics.clone();
            let mut reconciling = reconciling.clone();
            async move {
                let _ = tokio::time::timeout(EVENTS_HOLD, reconciling.wait_for(|running| *running == 0)).await;
                match api.create(&PostParams::default(), &event).await {
                    Ok(_) => metrics.count_write("events", "create"),
                    Err(error) => tracing::warn!(%error, reason = event.reason, "cannot publish event"),
                }
            }
        })
        .await;
}

/// `reportingController` of our events.
const REPORTER: &str = "keyward-controller";
/// Event types.
pub(crate) const NORMAL: &str = "Normal";
pub(crate) const WARNING: &str = "Warning";

/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "keyward";

/// How the controller was started (`keyward controller` flags).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    pub expiry: ExpiryPolicy,
    /// Reconciles running at once per kind and namespace set.
    pub concurrency: u16,
    /// The signing Secret and its schedule (see [`crate::signing::keeper`]).
    pub signing: crate::signing::keeper::KeeperSettings,
    /// How far wakes are left to the sweeps of the cache (see [`wakes`]).
    pub wakes: wakes::Wakes,
}

/// State shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    /// `reportingInstance` of our events: the pod, or the controller when not in one.
    instance: String,
    /// Events waiting for the writer task (see [`Context::publish`]).
    events: tokio::sync::mpsc::Sender<events::Event>,
    /// Consecutive failures per object, for per-object backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Secret versions we wrote, whose watch events need not wake anyone.
    pub(crate) own_writes: Arc<OwnWrites>,
    /// Which of our Secrets each owner has, for the Credential reconciler (see
    /// [`secret_watch::SecretNames`]).
    pub(crate) secret_names: Arc<secret_watch::SecretNames>,
    /// Status writes whose watch event may not have reached the cache yet.
    pub(crate) status_writes: status::RecentWrites,
    /// The cached objects of every kind and namespace scope, asked whether they record a hash.
    hash_holders: std::sync::RwLock<Vec<HashHolders>>,
    /// Reconciles running now (events wait for none, see [`write_events`]).
    reconciling: watch::Sender<usize>,
    /// Set once every cache has listed.
    caches_synced: std::sync::atomic::AtomicBool,
}

/// Answers whether any cached object records `hash` for a token other than `token` of `uid`.
type HashHolders = Box<dyn Fn(&TokenHash, &str, &str) -> bool + Send + Sync>;

impl Context {
    /// Must be called within the tokio runtime: it starts the event writer.
    pub fn new(client: Client, settings: Settings, metrics: Arc<Metrics>) -> Arc<Self> {
        let (events, queued) = tokio::sync::mpsc::channel(EVENTS_QUEUED);
        let reconciling = watch::Sender::new(0);
        tokio::spawn(write_events(client.clone(), metrics.clone(), queued, reconciling.subscribe()));
        Arc::new(Self {
            reconciling,
            events,
            instance: std::env::var("POD_NAME").ok().filter(|pod| !pod.is_empty()).unwrap_or_else(|| REPORTER.into()),
            client,
            settings,
            metrics,
            failures: Mutex::default(),
            own_writes: Arc::default(),
            secret_names: Arc::default(),
            status_writes: status::RecentWrites::default(),
            hash_holders: Default::default(),
            caches_synced: Default::default(),
        })
    }

    /// Whether the status of any key but token `token` (empty for an ApiKey) of the owner `uid`
    /// records `hash`; `None` until every kind's cache has listed (a reconcile of one kind may
    /// start before another's list is in). Asked only before adopting a Secret that status does
    /// not record, so a scan is fine.
    pub(crate) fn claimed_elsewhere(&self, hash: &TokenHash, uid: &str, token: &str) -> Option<bool> {
        if !self.caches_synced.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let holders = self.hash_holders.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(holders.iter().any(|holds| holds(hash, uid, token)))
    }

    /// Queues an event for the writer task. Events are best-effort: neither their writes nor a
    /// failure hold up a reconcile, and when the API server falls behind a burst (10,000 new
    /// keys, 10,000 `Issued`), events beyond the queue are dropped rather than held in memory.
    /// Each is a new `events.k8s.io/v1` Event: kube's Recorder scans a cache of every event it
    /// published on each publish, which is quadratic at an event per key.
    fn publish<K: Resource<DynamicType = ()>>(&self, object: &K, type_: &'static str, reason: &str, note: String) {
        let regarding = object.object_ref(&());
        let now = jiff::Timestamp::now();
        let name = format!("{}.{:x}", regarding.name.as_deref().unwrap_or_default(), now.as_nanosecond());
        let event = events::Event {
            metadata: ObjectMeta { name: Some(name), namespace: regarding.namespace.clone(), ..Default::default() },
            event_time: Some(MicroTime(now)),
            type_: Some(type_.into()),
            reason: Some(reason.into()),
            note: Some(note),
            action: Some("Reconcile".into()),
            regarding: Some(regarding),
            reporting_controller: Some(REPORTER.into()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        if self.events.try_send(event).is_err() {
            // Told at the 1st, 10th, 100th... drop: a burst must not flood the log instead.
            let dropped = self.metrics.drop_event();
            if dropped.checked_ilog10().is_some_and(|power| 10u64.pow(power) == dropped) {
                tracing::warn!(dropped, "events dropped so far: the API server is not keeping up with them");
            }
        }
    }

    /// Logs a token issued by this pass and publishes `Issued`, or the `TokenReissued` Warning
    /// for a re-issue. Names the Secret and key ID, never the token.
    fn announce<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        secret: &str,
        issued: &secret::Issued,
        fresh: issuer::Fresh,
    ) {
        match fresh {
            issuer::Fresh::No => {}
            issuer::Fresh::First => {
                tracing::info!(key_id = issued.key_id, secret, "issued token");
                let note = format!("issued token {} into Secret {secret}", issued.key_id);
                self.publish(object, NORMAL, reason::ISSUED, note);
            }
            issuer::Fresh::Reissued(cause) => {
                let note = cause.note(secret, &issued.key_id);
                tracing::warn!(key_id = issued.key_id, secret, "re-issued token: {note}");
                self.publish(object, WARNING, reason::TOKEN_REISSUED, note);
            }
        }
    }

    fn backoff(&self, object: &str, error: &crate::Error) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = failures.entry(object.to_string()).or_insert(0);
        *count = count.saturating_add(1);
        crate::retry::reconcile_delay(*count, error.is_transient(), rand::random::<f64>())
    }

    fn reset_backoff(&self, object: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        failures.remove(object);
    }
}

/// `Kind/namespace/name`: the key of per-object state such as backoff.
fn object_key<K: Resource<DynamicType = ()>>(object: &K) -> String {
    format!("{}/{}/{}", K::kind(&()), object.namespace().unwrap_or_default(), object.name_any())
}

/// Runs every controller until `shutdown` fires; `ready` turns true once the initial lists
/// have synced.
pub async fn run(ctx: Arc<Context>, ready: watch::Sender<bool>, shutdown: watch::Receiver<bool>) {
    let mut synced = Vec::new();
    let mut controllers = Vec::new();
    let mut secret_watches = Vec::new();
    for namespace in watch_scopes(&ctx.settings.namespaces) {
        let (secrets, wakes) =
            secret_watch::watch(&ctx.client, namespace.as_deref(), ctx.own_writes.clone(), ctx.secret_names.clone());
        secret_watches.push(secrets);
        for (controller, lists_synced) in [
            controller::<ApiKey>(ctx.clone(), namespace.clone(), wakes.apikeys, shutdown.clone()),
            controller::<Credential>(ctx.clone(), namespace, wakes.credentials, shutdown.clone()),
        ] {
            controllers.push(controller);
            synced.push(lists_synced);
        }
    }
    let caches = ctx.clone();
    let ready_when_synced = async move {
        if futures::future::join_all(synced).await.into_iter().all(|ok| ok) {
            caches.caches_synced.store(true, std::sync::atomic::Ordering::Release);
            ready.send_replace(true);
            tracing::info!("initial lists synced; ready");
        }
    };
    // The Secret watches serve the controllers, and stop with them.
    let controllers = async move {
        tokio::select! {
            _ = futures::future::join_all(controllers) => {}
            _ = futures::future::join_all(secret_watches) => {}
        }
    };
    tokio::join!(ready_when_synced, controllers);
}

/// A future that resolves when the shutdown flag turns true.
async fn shutdown_signal(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// What a kind's reconciler provides to the shared controller plumbing.
pub trait Reconciled: Key {
    type Status: transition::KeyStatus;

    fn status_of(&self) -> Option<&Self::Status>;

    /// One reconcile: read, decide, write.
    fn reconcile(object: Arc<Self>, ctx: Arc<Context>) -> impl Future<Output = crate::Result<Action>> + Send;
}

/// Builds the controller of kind `K` for one namespace (or all), and a future that says
/// whether its initial list synced.
fn controller<K: Reconciled>(
    ctx: Arc<Context>,
    namespace: Option<String>,
    secret_wakes: tokio::sync::mpsc::Receiver<kube::core::PartialObjectMeta<Secret>>,
    shutdown: watch::Receiver<bool>,
) -> (BoxFuture<'static, ()>, BoxFuture<'static, bool>) {
    let (reader, writer) = reflector::store::<K>();
    let cached = reader.clone();
    ctx.hash_holders.write().unwrap_or_else(std::sync::PoisonError::into_inner).push(Box::new(
        move |hash, uid, token| {
            cached.state().iter().any(|object| {
                let same_owner = object.meta().uid.as_deref() == Some(uid);
                object.records().into_iter().any(|(held_by, record)| {
                    record.token_hash.as_deref() == Some(hash.as_str())
                        && !(same_owner && held_by.unwrap_or_default() == token)
                })
            })
        },
    ));
    let cached = reader.clone();
    ctx.metrics.add_census_source(K::KIND.as_str(), move |census| {
        for object in cached.state() {
            census.key(K::KIND.as_str(), object.phase());
            let (namespace, name) = (object.namespace().unwrap_or_default(), object.name_any());
            for (token, record) in object.records() {
                if let Some(at) = &record.expires_at {
                    census.expiry(K::KIND.as_str(), &namespace, &name, token.unwrap_or_default(), at.0);
                }
            }
        }
    });
    let observed = ctx.clone();
    let (listed, listed_rx) = watch::channel(false);
    let events = watcher(api_in::<K>(&ctx.client, namespace.as_deref()), watcher::Config::default())
        .backoff(crate::retry::WatchBackoff::default())
        // The reconcilers read spec, status and identity only: the cache keeps nothing else.
        .modify(move |object: &mut K| {
            let meta = object.meta_mut();
            if let (Some(uid), Some(version)) = (&meta.uid, &meta.resource_version) {
                observed.status_writes.observed(uid, version);
            }
            meta.managed_fields = None;
            meta.annotations = None;
            meta.labels = None;
        })
        // The first list is in once its InitDone passes: told here, not by
        // `Store::wait_until_ready`, whose future wakes only the last of several waiters (kube's
        // runner is one).
        .inspect_ok(move |event| {
            if matches!(event, watcher::Event::InitDone) {
                listed.send_replace(true);
            }
        })
        .reflect(writer)
        .applied_objects()
        // Our own status writes do not change the generation, so they wake nothing.
        .predicate_filter(predicates::generation, Default::default());
    let secrets = secret_watch::stream(secret_wakes);
    let config = ControllerConfig::default().concurrency(ctx.settings.concurrency);
    let (names, scope) = (ctx.secret_names.clone(), namespace.clone());
    // Only Credentials reconcile from the names index: an ApiKey has one Secret, read by name.
    let reads_names = K::KIND == crate::api::Kind::Credential;
    let sweeps = wakes::sweeps(reader.clone(), ctx.settings.wakes, listed_rx.clone());
    let future = Controller::for_stream(events, reader)
        .owns_stream(secrets)
        .reconcile_on(sweeps)
        // Errors of any watch also pause the merged stream of triggers: kube's default pause
        // grows to a minute.
        .trigger_backoff(crate::retry::WatchBackoff::default())
        .with_config(config)
        .graceful_shutdown_on(shutdown_signal(shutdown))
        .run(timed_reconcile::<K>, error_policy::<K>, ctx)
        .for_each(|result| async move {
            // Reconcile errors are logged by error_policy; these are the runtime's own.
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile did not complete");
            }
        });
    let mut listed = listed_rx;
    let synced = async move {
        let ready = listed.wait_for(|listed| *listed).await.is_ok();
        if ready && reads_names {
            names.listed(scope).await;
        }
        ready
    };
    (Box::pin(future), Box::pin(synced))
}

/// Runs one reconcile in a span naming the object, and records its duration and outcome.
async fn timed_reconcile<K: Reconciled>(object: Arc<K>, ctx: Arc<Context>) -> crate::Result<Action> {
    let span = tracing::info_span!(
        "reconcile",
        kind = K::KIND.as_str(),
        namespace = object.namespace().unwrap_or_default(),
        name = object.name_any(),
        key_id = tracing::field::Empty
    );
    let started = std::time::Instant::now();
    let key = object_key(object.as_ref());
    let _running = Running::start(&ctx.reconciling);
    let result = K::reconcile(object, ctx.clone()).instrument(span).await;
    ctx.metrics.observe_reconcile(K::KIND.as_str(), started.elapsed(), result.as_ref().err());
    if result.is_ok() {
        ctx.reset_backoff(&key);
    }
    result
}

/// Counts a reconcile as running while it lives.
struct Running<'a>(&'a watch::Sender<usize>);

impl<'a> Running<'a> {
    fn start(count: &'a watch::Sender<usize>) -> Self {
        count.send_modify(|running| *running += 1);
        Running(count)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|running| *running = running.saturating_sub(1));
    }
}

/// A failed reconcile is retried with a per-object exponential backoff.
fn error_policy<K: Reconciled>(object: Arc<K>, error: &crate::Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(&object_key(object.as_ref()), error);
    tracing::warn!(
        kind = K::KIND.as_str(),
        namespace = object.namespace().unwrap_or_default(),
        name = object.name_any(),
        %error,
        retry_in = ?delay,
        "reconcile failed"
    );
    Action::requeue(delay)
}

impl Context {
    /// Writes `desired` as the object's status if it changed, publishes the events the change
    /// calls for, and says when to look again (see [`transition`]).
    async fn finish<K: Reconciled>(
        &self,
        object: &K,
        desired: &K::Status,
        now: jiff::Timestamp,
    ) -> crate::Result<Action> {
        let current = object.status_of();
        let api: Api<K> = Api::namespaced(self.client.clone(), &object.namespace().unwrap_or_default());
        match status::apply(&api, object, current, desired, &self.status_writes, &self.metrics).await {
            Ok(true) => {
                for note in transition::notes(current, desired) {
                    self.publish(object, note.type_, note.reason, note.message);
                }
            }
            Ok(false) => {}
            // The status was computed from a version someone has since changed (another
            // controller, or our own write the cache has not shown yet): look again soon, from
            // the newer version. Not a failure: no backoff, no warning.
            Err(crate::Error::Kube(kube::Error::Api(status))) if status.code == 409 => {
                tracing::debug!("status computed from an older version; looking again");
                return Ok(Action::requeue(STATUS_CONFLICT_RETRY));
            }
            Err(error) => return Err(error),
        }
        let requeue = transition::requeue(desired, now);
        tracing::debug!(?requeue, "reconciled");
        Ok(self.settings.wakes.action(requeue))
    }

    /// Refuses a bad spec, the same way for both kinds (see [`transition::refused`]).
    async fn refuse<K: Reconciled>(
        &self,
        object: &K,
        error: &crate::api::validate::SpecError,
        now: jiff::Timestamp,
    ) -> crate::Result<Action> {
        tracing::info!(%error, "refusing invalid spec");
        let desired = transition::refused(object.status_of(), error, object.meta().generation, now);
        self.finish(object, &desired, now).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_wait_for_running_reconciles_and_go_once_none_is() {
        let count = watch::Sender::new(0);
        let mut quiet = count.subscribe();
        let (first, second) = (Running::start(&count), Running::start(&count));
        assert_eq!(*count.borrow(), 2);
        drop(first);
        assert_eq!(*count.borrow(), 1);
        let went = tokio::time::timeout(Duration::from_millis(50), quiet.wait_for(|n| *n == 0)).await.is_ok();
        assert!(!went, "an event went out while a reconcile ran");
        drop(second);
        let went = tokio::time::timeout(Duration::from_secs(5), quiet.wait_for(|n| *n == 0)).await.is_ok();
        assert!(went, "an event still waited once no reconcile ran");
    }
}
