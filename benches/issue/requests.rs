//! The API server's own count of requests (`apiserver_request_total`), which the issue bench
//! measures writes and reads by, and the waits for quiet it allows.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kube::Client;

use super::Controller;
use crate::common::Result;
use crate::common::metrics::{samples, scrape_apiserver, total};

/// Verbs of `apiserver_request_total` that change something. `APPLY` is a server-side apply
/// PATCH, which the API server counts under its own verb.
const MUTATING: [&str; 6] = ["POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"];

/// Waits until the controller has gone idle, and returns the counter as it then stands.
pub async fn wait_idle(client: &Client, controller: &Controller) -> Result<Requests> {
    match wait_quiet(client, Duration::from_secs(300)).await? {
        Some(requests) => Ok(requests),
        None => Err(controller.explain("the controller was still busy after 5 minutes".into())),
    }
}

/// Waits until the API server has served no request (watches aside) on secrets, apikeys or
/// events for 3 s, and returns the counter as it then stands; `None` when `limit` passes first.
pub async fn wait_quiet(client: &Client, limit: Duration) -> Result<Option<Requests>> {
    const QUIET: Duration = Duration::from_secs(3);
    let deadline = Instant::now() + limit;
    let mut last = Requests::scrape(client).await?;
    let mut quiet_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = Requests::scrape(client).await?;
        if now.since(&last).count(|r| is_watched(r) && r.verb != "WATCH") > 0 {
            quiet_since = Instant::now();
            last = now;
        } else if quiet_since.elapsed() >= QUIET {
            return Ok(Some(now));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
    }
}

/// One series of `apiserver_request_total`, without the labels the bench does not need.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Series {
    pub resource: String,
    pub subresource: String,
    pub verb: String,
    pub code: String,
}

impl Series {
    fn is_mutating(&self) -> bool {
        MUTATING.contains(&self.verb.as_str())
    }

    pub fn is_read(&self) -> bool {
        matches!(self.verb.as_str(), "GET" | "LIST")
    }
}

/// The resources the controller writes or reads.
pub fn is_watched(series: &Series) -> bool {
    matches!(series.resource.as_str(), "secrets" | "apikeys" | "credentials" | "events")
}

/// A write the issuing of a key causes on the operator's resources and Secrets, leaving out
/// the bench's own ApiKey creates (the controller never creates an ApiKey or a Credential).
pub fn is_key_write(series: &Series) -> bool {
    match (series.resource.as_str(), series.subresource.as_str()) {
        ("secrets", _) => true,
        ("apikeys" | "credentials", "") => series.verb != "POST",
        ("apikeys" | "credentials", _) => true,
        _ => false,
    }
}

pub fn is_event(series: &Series) -> bool {
    series.resource == "events"
}

/// Every write the controller makes: what issuing causes, and events.
pub fn is_operator_write(series: &Series) -> bool {
    is_key_write(series) || is_event(series)
}

/// A snapshot of the API server's `apiserver_request_total` counter, with its CPU time
/// (`process_cpu_seconds_total`) and the summed durations of its requests
/// (`apiserver_request_duration_seconds`, by `resource[/subresource] VERB`) for the profile.
#[derive(Clone, Debug, Default)]
pub struct Requests {
    counts: BTreeMap<Series, u64>,
    pub cpu_secs: f64,
    /// `resource[/subresource] VERB` -> (seconds, requests).
    durations: BTreeMap<String, (f64, u64)>,
}

impl Requests {
    pub async fn scrape(client: &Client) -> Result<Self> {
        Ok(Self::parse(&scrape_apiserver(client).await?))
    }

    fn parse(text: &str) -> Self {
        let mut counts = BTreeMap::new();
        for (labels, value) in samples(text, "apiserver_request_total") {
            let label = |name: &str| labels.get(name).cloned().unwrap_or_default();
            let series = Series {
                resource: label("resource"),
                subresource: label("subresource"),
                verb: label("verb"),
                code: label("code"),
            };
            // Series differing only in labels left out (group, version, scope...) add up.
            *counts.entry(series).or_insert(0) += value.round() as u64;
        }
        let mut durations: BTreeMap<String, (f64, u64)> = BTreeMap::new();
        for (suffix, seconds) in [("_sum", true), ("_count", false)] {
            for (labels, value) in samples(text, &format!("apiserver_request_duration_seconds{suffix}")) {
                let label = |name: &str| labels.get(name).cloned().unwrap_or_default();
                let entry = durations.entry(request_name(&label("resource"), &label("subresource"), &label("verb")));
                let (sum, count) = entry.or_insert((0.0, 0));
                if seconds {
                    *sum += value;
                } else {
                    *count += value.round() as u64;
                }
            }
        }
        Self { counts, cpu_secs: total(text, "process_cpu_seconds_total").unwrap_or(0.0), durations }
    }

    pub fn add(&mut self, other: &Requests) {
        for (series, n) in &other.counts {
            *self.counts.entry(series.clone()).or_insert(0) += n;
        }
        for (name, (sum, count)) in &other.durations {
            let entry = self.durations.entry(name.clone()).or_insert((0.0, 0));
            entry.0 += sum;
            entry.1 += count;
        }
        self.cpu_secs += other.cpu_secs;
    }

    /// Requests made between `before` and this snapshot.
    pub fn since(&self, before: &Requests) -> Requests {
        let counts = self
            .counts
            .iter()
            .filter_map(|(series, &after)| {
                let spent = after.saturating_sub(before.counts.get(series).copied().unwrap_or(0));
                (spent > 0).then(|| (series.clone(), spent))
            })
            .collect();
        let durations = self
            .durations
            .iter()
            .filter_map(|(name, &(sum, count))| {
                let (sum_before, count_before) = before.durations.get(name).copied().unwrap_or_default();
                let count = count.saturating_sub(count_before);
                (count > 0).then(|| (name.clone(), (sum - sum_before, count)))
            })
            .collect();
        Requests { counts, cpu_secs: self.cpu_secs - before.cpu_secs, durations }
    }

    pub fn count(&self, keep: impl Fn(&Series) -> bool) -> u64 {
        self.counts.iter().filter(|(s, _)| keep(s)).map(|(_, n)| n).sum()
    }

    /// Mean milliseconds the API server took per request, by `resource[/subresource] VERB`, for
    /// the resources the controller uses (watches aside).
    pub fn mean_ms(&self) -> BTreeMap<String, f64> {
        self.durations
            .iter()
            .filter(|(name, _)| {
                ["secrets", "apikeys", "credentials", "events"].iter().any(|r| name.starts_with(r))
                    && !name.ends_with(" WATCH")
            })
            .map(|(name, &(sum, count))| (format!("{name} ({count})"), sum * 1000.0 / count as f64))
            .collect()
    }

    /// Mutating requests of the series `keep` accepts.
    pub fn writes(&self, keep: impl Fn(&Series) -> bool) -> u64 {
        self.count(|s| s.is_mutating() && keep(s))
    }

    /// `resource[/subresource] VERB code` -> requests.
    pub fn breakdown(&self, keep: impl Fn(&Series) -> bool) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (series, n) in self.counts.iter().filter(|(s, _)| keep(s)) {
            let name = request_name(&series.resource, &series.subresource, &series.verb);
            *out.entry(format!("{name} {}", series.code)).or_insert(0) += n;
        }
        out
    }
}

/// `resource[/subresource] VERB`.
fn request_name(resource: &str, subresource: &str, verb: &str) -> String {
    if subresource.is_empty() { format!("{resource} {verb}") } else { format!("{resource}/{subresource} {verb}") }
}
