//! What the profile of a burst samples besides the API server's counters: the TCP connections
//! a process holds to the API server (each new one is a TLS handshake: the client speaks
//! HTTP/1.1, one request per connection at a time), and when the Events of a burst arrive.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::common::Result;

/// How often `ss` is asked.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// The connections of one process to the API server over a window, from `ss` samples.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Connections {
    /// Open when sampling began.
    pub open_at_start: usize,
    /// Opened during the window (seen in a sample, not open at the start): TLS handshakes.
    pub opened: usize,
    /// Most open at once.
    pub peak: usize,
    pub samples: usize,
}

/// Samples the established TCP connections of `pid` to the API server's `port` until stopped.
pub struct ConnectionSampler {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Connections>,
}

impl ConnectionSampler {
    pub fn start(pid: u32, port: u16) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut first: Option<HashSet<String>> = None;
            let mut seen = HashSet::new();
            let mut out = Connections::default();
            loop {
                if let Some(open) = connections(pid, port).await {
                    out.samples += 1;
                    out.peak = out.peak.max(open.len());
                    let start = first.get_or_insert_with(|| open.clone());
                    seen.extend(open.into_iter().filter(|local| !start.contains(local)));
                }
                tokio::select! {
                    _ = &mut stopped => break,
                    () = tokio::time::sleep(SAMPLE_EVERY) => {}
                }
            }
            out.open_at_start = first.map_or(0, |f| f.len());
            out.opened = seen.len();
            out
        });
        Self { stop, task }
    }

    pub async fn stop(self) -> Connections {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

/// The local addresses of `pid`'s established connections to `port`; `None` when `ss` fails.
async fn connections(pid: u32, port: u16) -> Option<HashSet<String>> {
    let output = tokio::process::Command::new("ss")
        .args(["-tnpH", "state", "established", "dport", &format!("= :{port}")])
        .output()
        .await
        .ok()?;
    let owner = format!("pid={pid},");
    let text = String::from_utf8_lossy(&output.stdout);
    // With a state filter the columns are Recv-Q Send-Q Local Peer Process.
    Some(
        text.lines()
            .filter(|line| line.contains(&owner))
            .filter_map(|line| line.split_whitespace().nth(2).map(String::from))
            .collect(),
    )
}

/// When each Event of a namespace was first seen, from a watch started before the burst.
pub struct EventTimes {
    seen: Arc<Mutex<BTreeMap<String, Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

/// The Events of a burst against its window.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EventTiming {
    pub events: usize,
    /// Seen before the last key was seen Active: written while keys were still being issued.
    pub before_done: usize,
    /// Seconds from the start of the window to the first and the last Event, and to the
    /// moment the last key was seen Active.
    pub first_secs: Option<f64>,
    pub last_secs: Option<f64>,
    pub done_secs: f64,
}

impl EventTimes {
    pub async fn start(api: Api<Event>) -> Result<Self> {
        let seen: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
        let (ready_tx, ready_rx) = oneshot::channel();
        let record = seen.clone();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut events = watcher(api, watcher::Config::default().any_semantic()).default_backoff().boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(());
                        }
                    }
                    Ok(watcher::Event::Apply(e) | watcher::Event::InitApply(e)) => {
                        let at = Instant::now();
                        record
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .entry(e.name_any())
                            .or_insert(at);
                    }
                    _ => {}
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .map_err(|_| "the Event watch did not list within 30 s")?
            .map_err(|_| "the Event watch ended")?;
        Ok(Self { seen, task })
    }

    /// The Events seen so far against a window that began at `started` and whose last key was
    /// seen Active at `done`.
    pub fn timing(&self, started: Instant, done: Instant) -> EventTiming {
        let seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let secs = |at: &Instant| at.saturating_duration_since(started).as_secs_f64();
        EventTiming {
            events: seen.len(),
            before_done: seen.values().filter(|at| **at <= done).count(),
            first_secs: seen.values().min().map(secs),
            last_secs: seen.values().max().map(secs),
            done_secs: secs(&done),
        }
    }
}

impl Drop for EventTimes {
    fn drop(&mut self) {
        self.task.abort();
    }
}
