//! The counters the webhook bench reads: the API server's (its calls to admission webhooks,
//! its SubjectAccessReviews) and `keyward webhook`'s own.

use std::collections::BTreeMap;

use kube::Client;

use super::figures::WebhookCalls;
use crate::common::Result;
use crate::common::metrics::{samples, scrape_apiserver, total};

/// The webhook's SubjectAccessReview histogram and admissions counter.
const SAR_HISTOGRAM: &str = "keyward_webhook_subject_access_review_duration_seconds";
const ADMISSIONS: &str = "keyward_webhook_admissions_total";
/// The API server's histogram of its calls to admission webhooks.
const APISERVER_WEBHOOK_HISTOGRAM: &str = "apiserver_admission_webhook_admission_duration_seconds";

/// One histogram: cumulative counts by upper bound (ascending), the count and the sum.
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    buckets: Vec<(f64, u64)>,
    count: u64,
    pub sum: f64,
}

impl Histogram {
    fn observe_bucket(&mut self, le: f64, n: u64) {
        match self.buckets.iter_mut().find(|(bound, _)| *bound == le) {
            Some((_, count)) => *count += n,
            None => {
                self.buckets.push((le, n));
                self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn add(&mut self, other: &Histogram) {
        for &(le, n) in &other.buckets {
            self.observe_bucket(le, n);
        }
        self.count += other.count;
        self.sum += other.sum;
    }

    /// What was observed between `before` and this snapshot.
    pub fn since(&self, before: &Histogram) -> Histogram {
        let earlier = |le: f64| before.buckets.iter().find(|(bound, _)| *bound == le).map_or(0, |(_, n)| *n);
        Histogram {
            buckets: self.buckets.iter().map(|&(le, n)| (le, n.saturating_sub(earlier(le)))).collect(),
            count: self.count.saturating_sub(before.count),
            sum: self.sum - before.sum,
        }
    }

    /// The upper bound of the bucket the `p`th quantile falls in, in ms; `None` past the last
    /// finite bound or with nothing observed.
    fn at_most_ms(&self, p: f64) -> Option<f64> {
        let rank = (p * self.count as f64).ceil() as u64;
        let (le, _) = self.buckets.iter().find(|(_, n)| *n >= rank.max(1))?;
        le.is_finite().then_some(le * 1000.0)
    }

    pub fn calls(&self, name: &str) -> WebhookCalls {
        WebhookCalls {
            name: name.to_string(),
            calls: self.count,
            mean_ms: if self.count > 0 { self.sum * 1000.0 / self.count as f64 } else { f64::NAN },
            p50_at_most_ms: self.at_most_ms(0.50),
            p99_at_most_ms: self.at_most_ms(0.99),
        }
    }
}

/// A snapshot of the API server's counters the bench reads.
#[derive(Debug, Default)]
pub struct ApiServerMetrics {
    /// `apiserver_request_total` of POSTs on subjectaccessreviews.
    pub sar_posts: u64,
    /// Its calls to each admission webhook (every operation and answer added up), by name.
    pub webhook_calls: BTreeMap<String, Histogram>,
}

impl ApiServerMetrics {
    pub async fn scrape(client: &Client) -> Result<Self> {
        Ok(Self::parse(&scrape_apiserver(client).await?))
    }

    fn parse(text: &str) -> Self {
        let mut metrics = Self::default();
        for (labels, value) in samples(text, "apiserver_request_total") {
            let label = |name: &str| labels.get(name).map(String::as_str);
            if label("resource") == Some("subjectaccessreviews") && label("verb") == Some("POST") {
                metrics.sar_posts += value.round() as u64;
            }
        }
        let bucket = format!("{APISERVER_WEBHOOK_HISTOGRAM}_bucket");
        let (count, sum) =
            (format!("{APISERVER_WEBHOOK_HISTOGRAM}_count"), format!("{APISERVER_WEBHOOK_HISTOGRAM}_sum"));
        for (labels, value) in samples(text, &bucket) {
            let Some(le) = labels.get("le").and_then(|le| le.parse::<f64>().ok()) else { continue };
            let name = labels.get("name").cloned().unwrap_or_default();
            metrics.webhook_calls.entry(name).or_default().observe_bucket(le, value.round() as u64);
        }
        for (labels, value) in samples(text, &count) {
            let name = labels.get("name").cloned().unwrap_or_default();
            metrics.webhook_calls.entry(name).or_default().count += value.round() as u64;
        }
        for (labels, value) in samples(text, &sum) {
            let name = labels.get("name").cloned().unwrap_or_default();
            metrics.webhook_calls.entry(name).or_default().sum += value;
        }
        metrics
    }
}

/// A snapshot of the webhook's own counters.
#[derive(Debug, Default)]
pub struct WebhookMetrics {
    /// Admissions answered, every kind, operation and result added up.
    pub admissions: u64,
    /// SubjectAccessReviews asked (answers from the cache are not counted), and their seconds.
    pub sars: u64,
    pub sar_sum_secs: f64,
}

impl WebhookMetrics {
    pub fn parse(text: &str) -> Result<Self> {
        let count = format!("{SAR_HISTOGRAM}_count");
        Ok(Self {
            admissions: total(text, ADMISSIONS).unwrap_or(0.0).round() as u64,
            sars: total(text, &count).ok_or_else(|| format!("no {count} in the webhook's /metrics"))?.round() as u64,
            sar_sum_secs: total(text, &format!("{SAR_HISTOGRAM}_sum")).unwrap_or(0.0),
        })
    }
}
