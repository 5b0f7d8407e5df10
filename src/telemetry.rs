//! Logs, metrics and the health endpoints.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::api::Phase;
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
    // Colours only for a person at a terminal, never into files and log collectors.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    // A second initialisation (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.fmt_fields(JsonFields::new()).event_format(FlatJson).try_init(),
    };
}

/// One JSON object per line: timestamp, level, target, message, the fields of every span the
/// event happened in (a reconcile's `kind`, `namespace`, `name` and `key_id`), then the event's
/// own fields, all at the top level so that log queries need no nesting.
struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut fields = serde_json::Map::new();
        fields.insert("timestamp".into(), jiff::Timestamp::now().to_string().into());
        fields.insert("level".into(), meta.level().as_str().into());
        fields.insert("target".into(), meta.target().into());
        for span in ctx.event_scope().into_iter().flat_map(|scope| scope.from_root()) {
            let extensions = span.extensions();
            // JsonFields keeps each span's fields as the text of a JSON object.
            if let Some(stored) = extensions.get::<FormattedFields<N>>()
                && let Ok(serde_json::Value::Object(span_fields)) = serde_json::from_str(stored.as_str())
            {
                fields.extend(span_fields);
            }
        }
        event.record(&mut JsonVisitor(&mut fields));
        let line = serde_json::to_string(&fields).map_err(|_| std::fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

/// Collects an event's fields as JSON values.
struct JsonVisitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
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
    census: Arc<Mutex<Vec<CensusSource>>>,
    leader: Gauge,
    events_dropped: Counter,
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
        let census = Arc::<Mutex<Vec<CensusSource>>>::default();
        registry.register_collector(Box::new(KeyCollector { sources: census.clone() }));
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this process reconciles (holds the leader Lease, if elections are on)",
            leader.clone(),
        );
        let events_dropped = Counter::default();
        registry.register(
            "events_dropped",
            "Events not written because too many were waiting (the API server fell behind)",
            events_dropped.clone(),
        );
        Self { registry: Arc::new(registry), census, leader, events_dropped, writes, reconciles, errors, duration }
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

    /// Counts a dropped event; returns how many were dropped so far.
    pub fn drop_event(&self) -> u64 {
        self.events_dropped.inc() + 1
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Adds a cache of `kind` to the key census taken at each scrape.
    pub fn add_census_source(&self, kind: &'static str, source: impl Fn(&mut KeyCensus) + Send + Sync + 'static) {
        self.census.lock().unwrap_or_else(PoisonError::into_inner).push(CensusSource { kind, visit: Box::new(source) });
    }
}

/// Keys by phase and each token's expiry, counted from the controller's caches at scrape time:
/// always in step with the cluster, deleted keys included, at no cost between scrapes.
#[derive(Debug, Default)]
pub struct KeyCensus {
    phases: BTreeMap<(&'static str, &'static str), i64>,
    expiries: Vec<(ExpiryLabels, i64)>,
}

impl KeyCensus {
    /// Counts one key of `kind` in `phase` (`None`: not reconciled yet, counted as Pending).
    pub fn key(&mut self, kind: &'static str, phase: Option<Phase>) {
        *self.phases.entry((kind, phase.unwrap_or(Phase::Pending).as_str())).or_default() += 1;
    }

    /// Records when a token expires (`token` is empty for an ApiKey).
    pub fn expiry(&mut self, kind: &'static str, namespace: &str, name: &str, token: &str, at: jiff::Timestamp) {
        let labels =
            ExpiryLabels { kind, namespace: namespace.to_string(), name: name.to_string(), token: token.to_string() };
        self.expiries.push((labels, at.as_second()));
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExpiryLabels {
    kind: &'static str,
    namespace: String,
    name: String,
    token: String,
}

struct CensusSource {
    kind: &'static str,
    visit: Box<dyn Fn(&mut KeyCensus) + Send + Sync>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    kind: &'static str,
    phase: &'static str,
}

struct KeyCollector {
    sources: Arc<Mutex<Vec<CensusSource>>>,
}

impl std::fmt::Debug for KeyCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyCollector")
    }
}

impl Collector for KeyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let mut census = KeyCensus::default();
        for source in self.sources.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            // Every phase of a watched kind is shown, at zero when no key is in it.
            for phase in [Phase::Pending, Phase::Active, Phase::Inactive, Phase::Expired, Phase::Failed] {
                census.phases.entry((source.kind, phase.as_str())).or_default();
            }
            (source.visit)(&mut census);
        }
        let mut keys = encoder.encode_descriptor("keys", "Keys by kind and phase", None, MetricType::Gauge)?;
        for ((kind, phase), count) in &census.phases {
            ConstGauge::new(*count).encode(keys.encode_family(&PhaseLabels { kind, phase })?)?;
        }
        let mut expiry = encoder.encode_descriptor(
            "key_expiration_timestamp_seconds",
            "When each token expires, in seconds since the Unix epoch (token is empty for an ApiKey)",
            None,
            MetricType::Gauge,
        )?;
        for (labels, at) in &census.expiries {
            ConstGauge::new(*at).encode(expiry.encode_family(labels)?)?;
        }
        Ok(())
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdmissionLabels {
    kind: &'static str,
    operation: &'static str,
    result: &'static str,
}

/// The webhook's Prometheus metrics: admissions by kind, operation and result (fixed strings),
/// and how long SubjectAccessReviews take.
pub struct WebhookMetrics {
    registry: Arc<Registry>,
    admissions: Family<AdmissionLabels, Counter>,
    reviews: Histogram,
}

impl Default for WebhookMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("keyward_webhook");
        let admissions = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admissions",
            "Admission requests answered, by kind, operation and result (allowed, denied_grant, denied_spec, ...)",
            admissions.clone(),
        );
        let reviews = Histogram::new([0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]);
        registry.register(
            "subject_access_review_duration_seconds",
            "Time a SubjectAccessReview took (answers served from the cache are not counted)",
            reviews.clone(),
        );
        Self { registry: Arc::new(registry), admissions, reviews }
    }
}

impl WebhookMetrics {
    pub fn observe_admission(&self, kind: &'static str, operation: &'static str, result: &'static str) {
        self.admissions.get_or_create(&AdmissionLabels { kind, operation, result }).inc();
    }

    pub fn observe_review(&self, took: Duration) {
        self.reviews.observe(took.as_secs_f64());
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
