//! Logs, metrics and the health endpoints.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

use crate::error::Error;

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Sets up logging to stderr; the level comes from `RUST_LOG` (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second initialisation (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: &'static str,
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    resource: &'static str,
    verb: &'static str,
}

/// The controller's Prometheus metrics.
pub struct Metrics {
    registry: Arc<Registry>,
    writes: Family<WriteLabels, Counter>,
    reconciles: Family<KindLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<KindLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("keyward");
        let reconciles = Family::<KindLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
        });
        registry.register("reconciles", "Reconciles run, by kind", reconciles.clone());
        registry.register("reconcile_errors", "Reconciles that failed, by kind and error class", errors.clone());
        registry.register("reconcile_duration_seconds", "Time a reconcile took, by kind", duration.clone());
        let writes = Family::<WriteLabels, Counter>::default();
        registry.register("api_writes", "Writes sent to the API server, by resource and verb", writes.clone());
        Self { registry: Arc::new(registry), writes, reconciles, errors, duration }
    }
}

impl Metrics {
    pub fn observe_reconcile(&self, kind: &'static str, took: Duration, error: Option<&Error>) {
        self.reconciles.get_or_create(&KindLabels { kind }).inc();
        self.duration.get_or_create(&KindLabels { kind }).observe(took.as_secs_f64());
        if let Some(error) = error {
            self.errors.get_or_create(&ErrorLabels { kind, error: error.metric_label() }).inc();
        }
    }

    /// Counts one write to the API server (`resource` like `secrets` or `apikeys/status`).
    pub fn count_write(&self, resource: &'static str, verb: &'static str) {
        self.writes.get_or_create(&WriteLabels { resource, verb }).inc();
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
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
        Self { registry: Arc::new(registry), requests, duration, tokens }
    }
}

impl VerifierMetrics {
    /// Counts one answer; `code` is a contract code such as `VALID`, or `BAD_REQUEST`.
    pub fn observe(&self, endpoint: &'static str, code: &'static str, took: Duration) {
        self.requests.get_or_create(&RequestLabels { endpoint, code }).inc();
        self.duration.get_or_create(&EndpointLabels { endpoint }).observe(took.as_secs_f64());
    }

    pub fn set_indexed_tokens(&self, count: usize) {
        self.tokens.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }
}

#[derive(Clone)]
struct Health {
    registry: Arc<Registry>,
    ready: watch::Receiver<bool>,
}

/// `/healthz`, `/readyz` (200 once `ready` turns true) and `/metrics` (the text of `registry`).
pub fn health_routes(registry: Arc<Registry>, ready: watch::Receiver<bool>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Health { registry, ready })
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    if *health.ready.borrow() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "initial lists not synced")
    }
}

async fn metrics_text(State(health): State<Health>) -> impl IntoResponse {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &health.registry);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], out)
}
