//! The verifier's Prometheus metrics (prefix `keyward_verifier`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::exchange::metrics::ExchangeMetrics;
use crate::judge::Code;
use crate::usage::writer::UsageMetrics;

/// The endpoints whose answers are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Verify,
    Auth,
}

impl Endpoint {
    const COUNT: usize = 2;

    fn label(self) -> &'static str {
        match self {
            Endpoint::Verify => "verify",
            Endpoint::Auth => "auth",
        }
    }
}

/// What a request was answered, as counted: a contract code, or why there was none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answered {
    Judged(Code),
    BadRequest,
    /// `/v1/auth` without any token.
    MissingToken,
}

impl Answered {
    const COUNT: usize = Code::ALL.len() + 2;

    fn label(self) -> &'static str {
        match self {
            Answered::Judged(code) => code.as_str(),
            Answered::BadRequest => "BAD_REQUEST",
            Answered::MissingToken => "MISSING_TOKEN",
        }
    }

    fn slot(self) -> usize {
        match self {
            Answered::Judged(code) => code as usize,
            Answered::BadRequest => Code::ALL.len(),
            Answered::MissingToken => Code::ALL.len() + 1,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

/// The verifier's Prometheus metrics. Labels are fixed strings: an endpoint and a result code.
pub struct VerifierMetrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    duration: Family<EndpointLabels, Histogram>,
    tokens: Gauge,
    shared_hashes: Gauge,
    /// Each series' handle once it exists, so that a request neither hashes labels nor takes
    /// the family's lock; a series still appears only once something was counted in it.
    request_series: [[OnceLock<Counter>; Answered::COUNT]; Endpoint::COUNT],
    duration_series: [OnceLock<Histogram>; Endpoint::COUNT],
    /// Token exchange's series, in the same registry.
    pub exchange: Arc<ExchangeMetrics>,
    /// The usage recorder's series, in the same registry.
    pub usage: Arc<UsageMetrics>,
}

impl Default for VerifierMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("keyward_verifier");
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1])
        });
        let tokens = Gauge::default();
        registry.register("requests", "Verification requests answered, by endpoint and result code", requests.clone());
        registry.register(
            "request_duration_seconds",
            "Time spent answering a verification request, by endpoint",
            duration.clone(),
        );
        registry.register("indexed_tokens", "Token hashes in the index", tokens.clone());
        let shared_hashes = Gauge::default();
        registry.register(
            "shared_token_hashes",
            "Token hashes that two or more keys claim; each is refused for all of them",
            shared_hashes.clone(),
        );
        let exchange = Arc::new(ExchangeMetrics::default());
        exchange.register(&mut registry);
        let usage = Arc::new(UsageMetrics::default());
        usage.register(&mut registry);
        Self {
            exchange,
            usage,
            registry: Arc::new(registry),
            requests,
            duration,
            tokens,
            shared_hashes,
            request_series: Default::default(),
            duration_series: Default::default(),
        }
    }
}

impl VerifierMetrics {
    /// Counts one answer of `endpoint`, which took `took`.
    pub fn observe(&self, endpoint: Endpoint, answered: Answered, took: Duration) {
        let labels = || RequestLabels { endpoint: endpoint.label(), code: answered.label() };
        self.request_series[endpoint as usize][answered.slot()]
            .get_or_init(|| self.requests.get_or_create_owned(&labels()))
            .inc();
        self.duration_series[endpoint as usize]
            .get_or_init(|| self.duration.get_or_create_owned(&EndpointLabels { endpoint: endpoint.label() }))
            .observe(took.as_secs_f64());
    }

    pub fn set_indexed_tokens(&self, count: usize, shared_hashes: usize) {
        self.tokens.set(i64::try_from(count).unwrap_or(i64::MAX));
        self.shared_hashes.set(i64::try_from(shared_hashes).unwrap_or(i64::MAX));
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    fn text(metrics: &VerifierMetrics) -> String {
        let mut out = String::new();
        encode(&mut out, &metrics.registry()).unwrap();
        out
    }

    #[test]
    fn each_answer_is_counted_in_its_series_which_appears_once_used() {
        let metrics = VerifierMetrics::default();
        assert!(!text(&metrics).contains("keyward_verifier_requests_total{"), "no series before a request");
        metrics.observe(Endpoint::Auth, Answered::Judged(Code::Valid), Duration::from_micros(30));
        metrics.observe(Endpoint::Auth, Answered::Judged(Code::Valid), Duration::from_micros(30));
        metrics.observe(Endpoint::Auth, Answered::MissingToken, Duration::from_micros(30));
        metrics.observe(Endpoint::Verify, Answered::BadRequest, Duration::from_millis(2));
        let out = text(&metrics);
        for line in [
            r#"keyward_verifier_requests_total{endpoint="auth",code="VALID"} 2"#,
            r#"keyward_verifier_requests_total{endpoint="auth",code="MISSING_TOKEN"} 1"#,
            r#"keyward_verifier_requests_total{endpoint="verify",code="BAD_REQUEST"} 1"#,
            r#"keyward_verifier_request_duration_seconds_count{endpoint="auth"} 3"#,
            r#"keyward_verifier_request_duration_seconds_count{endpoint="verify"} 1"#,
        ] {
            assert!(out.contains(line), "{line} missing from\n{out}");
        }
        assert_eq!(out.matches("keyward_verifier_requests_total{").count(), 3, "{out}");
    }

    #[test]
    fn every_answer_has_a_slot_of_its_own() {
        let mut answers: Vec<Answered> = Code::ALL.into_iter().map(Answered::Judged).collect();
        answers.extend([Answered::BadRequest, Answered::MissingToken]);
        let mut slots: Vec<usize> = answers.iter().map(|a| a.slot()).collect();
        slots.sort_unstable();
        assert_eq!(slots, (0..Answered::COUNT).collect::<Vec<_>>());
    }
}
