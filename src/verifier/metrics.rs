//! The verifier's Prometheus metrics (prefix `keyward_verifier`).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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
        Self { registry: Arc::new(registry), requests, duration, tokens, shared_hashes }
    }
}

impl VerifierMetrics {
    /// Counts one answer; `code` is a contract code such as `VALID`, or `BAD_REQUEST`.
    pub fn observe(&self, endpoint: &'static str, code: &'static str, took: Duration) {
        self.requests.get_or_create(&RequestLabels { endpoint, code }).inc();
        self.duration.get_or_create(&EndpointLabels { endpoint }).observe(took.as_secs_f64());
    }

    pub fn set_indexed_tokens(&self, count: usize, shared_hashes: usize) {
        self.tokens.set(i64::try_from(count).unwrap_or(i64::MAX));
        self.shared_hashes.set(i64::try_from(shared_hashes).unwrap_or(i64::MAX));
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }
}
