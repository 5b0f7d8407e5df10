//! Logs, metrics and the health endpoints.

use std::net::SocketAddr;
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
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

use crate::error::{Error, Result};

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
    registry: Registry,
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
        Self { registry, writes, reconciles, errors, duration }
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

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[derive(Clone)]
struct Health {
    metrics: Arc<Metrics>,
    ready: watch::Receiver<bool>,
}

/// Serves `/healthz`, `/readyz` and `/metrics` on `addr` until `shutdown` fires.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Health { metrics, ready });
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|source| Error::Http { addr: addr.to_string(), source })?;
    let bound = listener.local_addr().map_err(|source| Error::Http { addr: addr.to_string(), source })?;
    tracing::info!(addr = %bound, "serving /healthz, /readyz and /metrics");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
        .map_err(|source| Error::Http { addr: addr.to_string(), source })
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    if *health.ready.borrow() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "initial lists not synced")
    }
}

async fn metrics_text(State(health): State<Health>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], health.metrics.encode())
}
