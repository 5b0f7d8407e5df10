//! The recorder's flushes as the bench sees them from outside: the verifier's own counters
//! (`keyward_verifier_usage_flushes_total`, `..._usage_writes_total{result}`,
//! `..._usage_held_applications`) read every quarter second, and at each flush the API server's
//! count of requests on `keyusages` (`apiserver_request_total`), to check one against the other,
//! and the control plane's CPU time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kube::Client;
use serde::Serialize;

use super::ControlPlane;
use crate::common::metrics::{samples, scrape_apiserver, total};
use crate::common::process::Process;
use crate::common::{Progress, Result};

/// How often the verifier's counters are read.
const POLL: Duration = Duration::from_millis(250);

/// Where a flush falls in the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Before anything was written: a flush with nothing seen.
    Idle,
    /// It created KeyUsages (the first sightings of their keys).
    Creating,
    /// Every KeyUsage existed: the steady state measured.
    Steady,
    /// After the load stopped: what was seen until then, and then nothing.
    Drain,
}

/// One flush: what it wrote and what the API server counted, from the end of the one before.
///
/// Flushes that take longer than the interval run back to back: the reading at one's end may
/// already hold the first writes of the next, so a few writes can be counted a flush early.
/// Sums over flushes from a quiet start to a quiet end are exact.
#[derive(Clone, Debug, Serialize)]
pub struct Flush {
    /// `keyward_verifier_usage_flushes_total` once it was done.
    pub number: u64,
    pub phase: Phase,
    /// From the end of the flush before (or from when the watch began) to its end.
    pub secs_since_previous: f64,
    /// From the first write the bench saw to its end (a quarter second's resolution); `None`
    /// when it wrote nothing.
    pub writing_secs: Option<f64>,
    /// `keyward_verifier_usage_held_applications` while it wrote (set when it took its
    /// sightings): with one application named per key, the keys it took.
    pub keys_touched: u64,
    /// `/v1/auth` answered VALID since the flush before, and per second.
    pub valid_answers: u64,
    pub rps: f64,
    /// `keyward_verifier_usage_writes_total` by result.
    pub writes: BTreeMap<String, u64>,
    /// `apiserver_request_total` on keyusages: `VERB [status] code` -> requests.
    pub apiserver: BTreeMap<String, u64>,
    /// CPU seconds of kube-apiserver and etcd, and of the verifier.
    pub control_plane_cpu_secs: BTreeMap<String, f64>,
    pub verifier_cpu_secs: f64,
}

impl Flush {
    /// The API server's requests of `verb` on keyusages, whatever their answer.
    pub fn apiserver_requests(&self, verb: &str) -> u64 {
        count_verb(&self.apiserver, verb)
    }

    /// The API server's writes on keyusages: creates and status patches.
    pub fn apiserver_writes(&self) -> u64 {
        self.apiserver_requests("POST") + self.apiserver_requests("PATCH")
    }
}

/// Requests of `verb` in `VERB [status] code` -> requests.
pub fn count_verb(requests: &BTreeMap<String, u64>, verb: &str) -> u64 {
    requests.iter().filter(|(series, _)| series.split(' ').next() == Some(verb)).map(|(_, n)| n).sum()
}

/// The verifier's counters at one moment.
struct Reading {
    at: Instant,
    flushes: u64,
    writes: BTreeMap<String, u64>,
    held: u64,
    valid: u64,
    cpu_secs: f64,
}

impl Reading {
    async fn of(verifier: &Process) -> Result<Self> {
        let text = verifier.metrics().await?;
        let mut writes = BTreeMap::new();
        for (labels, value) in samples(&text, "keyward_verifier_usage_writes_total") {
            *writes.entry(labels.get("result").cloned().unwrap_or_default()).or_insert(0) += value.round() as u64;
        }
        let valid = samples(&text, "keyward_verifier_requests_total")
            .filter(|(l, _)| l.get("endpoint").map(String::as_str) == Some("auth"))
            .filter(|(l, _)| l.get("code").map(String::as_str) == Some("VALID"))
            .map(|(_, v)| v.round() as u64)
            .sum();
        Ok(Self {
            at: Instant::now(),
            flushes: total(&text, "keyward_verifier_usage_flushes_total").unwrap_or(0.0).round() as u64,
            writes,
            held: total(&text, "keyward_verifier_usage_held_applications").unwrap_or(0.0).round() as u64,
            valid,
            cpu_secs: verifier.cpu_secs().unwrap_or(f64::NAN),
        })
    }

    fn writes_total(&self) -> u64 {
        self.writes.values().sum()
    }
}

/// The API server's requests on keyusages, and the control plane's CPU seconds.
struct ApiServer {
    requests: BTreeMap<String, u64>,
    cpu_secs: BTreeMap<String, f64>,
}

impl ApiServer {
    async fn scrape(client: &Client, control_plane: &ControlPlane) -> Result<Self> {
        let text = scrape_apiserver(client).await?;
        let mut requests = BTreeMap::new();
        for (labels, value) in samples(&text, "apiserver_request_total") {
            let label = |name: &str| labels.get(name).map(String::as_str).unwrap_or_default();
            if label("resource") != "keyusages" {
                continue;
            }
            let subresource = match label("subresource") {
                "" => String::new(),
                sub => format!("{sub} "),
            };
            let series = format!("{} {subresource}{}", label("verb"), label("code"));
            *requests.entry(series).or_insert(0) += value.round() as u64;
        }
        Ok(Self { requests, cpu_secs: control_plane.cpu_secs() })
    }
}

/// `after - before`, series by series, leaving out those that did not move.
fn since(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v.saturating_sub(before.get(k).copied().unwrap_or(0))))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// The flushes of one verifier, watched from the moment [`Watch::start`] read its counters
/// (and the API server's): flushes seen by successive [`Watch::until`] calls add up exactly.
pub struct Watch<'a> {
    verifier: &'a Process,
    client: &'a Client,
    control_plane: &'a ControlPlane,
    last: Reading,
    last_api: ApiServer,
    /// When the flush under way was first seen writing, and the keys it took.
    writing: Option<(Instant, u64)>,
}

impl<'a> Watch<'a> {
    pub async fn start(verifier: &'a Process, client: &'a Client, control_plane: &'a ControlPlane) -> Result<Self> {
        Ok(Self {
            last: Reading::of(verifier).await?,
            last_api: ApiServer::scrape(client, control_plane).await?,
            verifier,
            client,
            control_plane,
            writing: None,
        })
    }

    /// Adds each flush to `flushes` (as `phase` when given) until `enough` says the ones so far
    /// are enough, `limit` at most; `alive` is called at each reading and fails the watch when
    /// the load died.
    pub async fn until(
        &mut self,
        limit: Duration,
        progress: &Progress,
        flushes: &mut Vec<Flush>,
        phase: Option<Phase>,
        mut alive: impl FnMut() -> Result<()>,
        enough: impl Fn(&[Flush]) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            tokio::time::sleep(POLL).await;
            self.verifier.check_alive()?;
            alive()?;
            let now = Reading::of(self.verifier).await?;
            if now.flushes == self.last.flushes {
                // Writes are made only by a flush, once it has taken its sightings (and set the gauge).
                if self.writing.is_none() && now.writes_total() > self.last.writes_total() {
                    self.writing = Some((now.at, now.held));
                }
            } else {
                let api = ApiServer::scrape(self.client, self.control_plane).await?;
                let flush = self.flush(&now, &api, phase, flushes.last().map(|f| f.phase));
                progress.say(&format!(
                    "flush {} ({:?}): {:.1} s since the last, writing {} s, {} keys touched, {:.0} VALID/s; \
                     verifier writes {:?}; API server on keyusages {:?}; control plane CPU {:.1} s",
                    flush.number,
                    flush.phase,
                    flush.secs_since_previous,
                    flush.writing_secs.map_or("-".into(), |s| format!("{s:.1}")),
                    flush.keys_touched,
                    flush.rps,
                    flush.writes,
                    flush.apiserver,
                    flush.control_plane_cpu_secs.values().sum::<f64>(),
                ));
                flushes.push(flush);
                (self.last, self.last_api, self.writing) = (now, api, None);
                if enough(flushes) {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the flushes awaited were not all in within {limit:?} ({} so far: the flushes take longer \
                     than the API server can write)",
                    flushes.len()
                )
                .into());
            }
        }
    }

    /// The flush that ended between the last readings and these.
    fn flush(&self, now: &Reading, api: &ApiServer, phase: Option<Phase>, previous: Option<Phase>) -> Flush {
        let writes = since(&now.writes, &self.last.writes);
        let created = writes.get("created").copied().unwrap_or(0);
        let wrote = !writes.is_empty();
        let phase = match (phase, previous) {
            (Some(phase), _) => phase,
            _ if created > 0 => Phase::Creating,
            (None, None | Some(Phase::Idle)) if !wrote => Phase::Idle,
            _ => Phase::Steady,
        };
        let secs = now.at.duration_since(self.last.at).as_secs_f64();
        let valid_answers = now.valid.saturating_sub(self.last.valid);
        let control_plane_cpu_secs = api
            .cpu_secs
            .iter()
            .map(|(name, secs)| (name.clone(), secs - self.last_api.cpu_secs.get(name).copied().unwrap_or(f64::NAN)))
            .collect();
        Flush {
            number: now.flushes,
            phase,
            secs_since_previous: secs,
            writing_secs: wrote.then(|| now.at.duration_since(self.writing.map_or(now.at, |w| w.0)).as_secs_f64()),
            // A flush seen only at its end: the gauge as it then stands.
            keys_touched: self.writing.map_or(now.held, |w| w.1),
            valid_answers,
            rps: valid_answers as f64 / secs,
            writes,
            apiserver: since(&api.requests, &self.last_api.requests),
            control_plane_cpu_secs,
            verifier_cpu_secs: now.cpu_secs - self.last.cpu_secs,
        }
    }
}
