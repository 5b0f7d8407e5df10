//! Watches that time the bench's measures: until every object is Active, and when each Secret
//! of the expiry probe is deleted.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::BoxStream;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use keyward::api::{ApiKey, Credential, Key, LABEL_MANAGED_BY, MANAGED_BY_VALUE};
use keyward::retry::WatchBackoff;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::{mpsc, oneshot};

use super::{EXPIRING_LABEL, EXPIRING_LABEL_VALUE};
use crate::common::{Error, Result};

/// Counts objects that `active` accepts, from a watch that has listed the namespace before the
/// first create, and notes the moment the expected count is reached.
pub struct ActiveWatch {
    pub done: oneshot::Receiver<Instant>,
    pub active: Arc<AtomicUsize>,
    pub expected: usize,
    pub kind: String,
    pub task: tokio::task::JoinHandle<()>,
}

impl ActiveWatch {
    pub async fn start<K: Key>(
        api: Api<K>,
        expected: usize,
        is_active: impl Fn(&K) -> bool + Send + 'static,
    ) -> Result<Self> {
        let kind = K::kind(&()).into_owned();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        let active = Arc::new(AtomicUsize::new(0));
        let seen = active.clone();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut done = Some(done_tx);
            let mut names: HashSet<String> = HashSet::new();
            let mut events = watcher(api, watcher::Config::default().any_semantic()).default_backoff().boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(());
                        }
                    }
                    Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                        if is_active(&object) {
                            names.insert(object.name_any());
                        } else {
                            names.remove(&object.name_any());
                        }
                    }
                    Ok(watcher::Event::Delete(object)) => {
                        names.remove(&object.name_any());
                    }
                    // A watch error is retried by the backoff; a re-list re-applies everything.
                    Ok(watcher::Event::Init) | Err(_) => {}
                }
                seen.store(names.len(), Ordering::Relaxed);
                if names.len() >= expected
                    && let Some(done) = done.take()
                {
                    let _ = done.send(Instant::now());
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .map_err(|_| format!("the {kind} watch did not list within 30 s"))?
            .map_err(|_| format!("the {kind} watch ended"))?;
        Ok(Self { done, active, expected, kind, task })
    }

    /// The moment the last object was seen Active; `progress` hears the count every 10 s.
    pub async fn wait(mut self, deadline: Duration, progress: impl Fn(usize, usize)) -> Result<Instant> {
        let deadline = tokio::time::Instant::now() + deadline;
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        tick.tick().await;
        loop {
            tokio::select! {
                done = &mut self.done => break done.map_err(|_| Error::from(format!("the {} watch ended", self.kind))),
                _ = tick.tick() => progress(self.active.load(Ordering::Relaxed), self.expected),
                () = tokio::time::sleep_until(deadline) => {
                    break Err(format!(
                        "only {} of {} {} objects were Active in time",
                        self.active.load(Ordering::Relaxed),
                        self.expected,
                        self.kind,
                    )
                    .into());
                }
            }
        }
    }
}

impl Drop for ActiveWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reports, for each deleted Secret of the expiry probe, its owner's name and the wall-clock
/// time its DELETE watch event arrived.
pub struct DeletionWatch {
    pub deleted: mpsc::UnboundedReceiver<(String, Timestamp)>,
    pub task: tokio::task::JoinHandle<()>,
}

impl DeletionWatch {
    pub async fn start(secrets: Api<Secret>) -> Result<Self> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (tx, deleted) = mpsc::unbounded_channel();
        let selector = format!("{EXPIRING_LABEL}={EXPIRING_LABEL_VALUE}");
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut events = watcher(secrets, watcher::Config::default().labels(&selector)).default_backoff().boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(());
                        }
                    }
                    Ok(watcher::Event::Delete(secret)) => {
                        // Stamp first: the latency is the event's arrival.
                        let at = Timestamp::now();
                        let owner = secret.owner_references().first().map(|o| o.name.clone()).unwrap_or_default();
                        let _ = tx.send((owner, at));
                    }
                    _ => {}
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .map_err(|_| "the Secret watch did not list within 30 s")?
            .map_err(|_| "the Secret watch ended")?;
        Ok(Self { deleted, task })
    }

    pub async fn next(&mut self) -> Option<(String, Timestamp)> {
        self.deleted.recv().await
    }
}

impl Drop for DeletionWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The watches a controller keeps in one namespace, opened by the floor's own client: its
/// ApiKeys and Credentials, and the metadata of the Secrets it labelled. Each event is taken
/// (parsed) and dropped, until this is dropped; a failed watch retries with the controller's
/// backoff.
pub struct ControllerWatches {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ControllerWatches {
    /// Returns once every watch has listed.
    pub async fn start(client: &Client, ns: &str) -> Result<Self> {
        let selector = format!("{LABEL_MANAGED_BY}={MANAGED_BY_VALUE}");
        fn initdone<K>(event: watcher::Result<watcher::Event<K>>) -> bool {
            matches!(event, Ok(watcher::Event::InitDone))
        }
        let secrets = Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), ns);
        let streams: [BoxStream<'static, bool>; 3] = [
            watcher(Api::<ApiKey>::namespaced(client.clone(), ns), watcher::Config::default())
                .backoff(WatchBackoff::default())
                .map(initdone)
                .boxed(),
            watcher(Api::<Credential>::namespaced(client.clone(), ns), watcher::Config::default())
                .backoff(WatchBackoff::default())
                .map(initdone)
                .boxed(),
            watcher(secrets, watcher::Config::default().labels(&selector))
                .backoff(WatchBackoff::default())
                .map(initdone)
                .boxed(),
        ];
        let mut tasks = Vec::new();
        let mut listed = Vec::new();
        for mut events in streams {
            let (listed_tx, listed_rx) = oneshot::channel();
            listed.push(listed_rx);
            tasks.push(tokio::spawn(async move {
                let mut listed_tx = Some(listed_tx);
                while let Some(done) = events.next().await {
                    if done && let Some(tx) = listed_tx.take() {
                        let _ = tx.send(());
                    }
                }
            }));
        }
        let watches = Self { tasks };
        tokio::time::timeout(Duration::from_secs(30), futures::future::try_join_all(listed))
            .await
            .map_err(|_| "the controller's watches did not list within 30 s")?
            .map_err(|_| "a controller's watch ended")?;
        Ok(watches)
    }
}

impl Drop for ControllerWatches {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
