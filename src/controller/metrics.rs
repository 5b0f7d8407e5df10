//! The controller's Prometheus metrics (prefix `keyward`): reconciles, API writes, the leader
//! gauge, dropped events, the key census taken from the caches at each scrape, and the signing
//! keys' age, next rotation and writes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::api::Phase;
use crate::error::Error;

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
    reads: Family<WriteLabels, Counter>,
    reconciles: Family<KindLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<KindLabels, Histogram>,
    signing: Arc<Mutex<Option<SigningKeys>>>,
    signing_writes: Family<VerbLabels, Counter>,
    signing_refusals: Counter,
    signing_conflicts: Counter,
    signing_looks: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabels {
    verb: &'static str,
}

/// The signing keys as last read or written: each key's `signsFrom`, and the rotation.
struct SigningKeys {
    signs_from: Vec<jiff::Timestamp>,
    rotation: Duration,
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
        registry.register("api_writes", "Writes the reconcilers and events send to the API server, by resource and verb (the signing Secret's: keyward_signing_key_writes_total)", writes.clone());
        let reads = Family::<WriteLabels, Counter>::default();
        registry.register(
            "api_reads",
            "Reads a reconcile sends to the API server (not the watches), by resource and verb",
            reads.clone(),
        );
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
        let signing = Arc::<Mutex<Option<SigningKeys>>>::default();
        registry.register_collector(Box::new(SigningCollector { keys: signing.clone() }));
        let signing_writes = Family::<VerbLabels, Counter>::default();
        registry.register(
            "signing_key_writes",
            "Writes of the signing Secret sent to the API server, by verb (create or update)",
            signing_writes.clone(),
        );
        let signing_refusals = Counter::default();
        registry.register(
            "signing_secret_refusals",
            "Looks at a signing Secret that is not a key set of ours (another type, or content refused); it is never overwritten",
            signing_refusals.clone(),
        );
        let signing_conflicts = Counter::default();
        registry.register(
            "signing_key_write_conflicts",
            "Writes of the signing Secret another writer won (it was read again and planned anew)",
            signing_conflicts.clone(),
        );
        let signing_looks = Counter::default();
        registry.register(
            "signing_key_looks",
            "Reads of the signing Secret: at start, at each change of it, and when the schedule is due",
            signing_looks.clone(),
        );
        Self {
            signing_looks,
            signing,
            signing_writes,
            signing_refusals,
            signing_conflicts,
            registry: Arc::new(registry),
            census,
            leader,
            events_dropped,
            writes,
            reads,
            reconciles,
            errors,
            duration,
        }
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

    /// Counts one read a reconcile made (`verb` `get` or `list`).
    pub fn count_read(&self, resource: &'static str, verb: &'static str) {
        self.reads.get_or_create(&WriteLabels { resource, verb }).inc();
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

    /// Counts one write of the signing Secret (`create` or `update`).
    pub fn count_signing_write(&self, verb: &'static str) {
        self.signing_writes.get_or_create(&VerbLabels { verb }).inc();
    }

    pub fn count_signing_look(&self) {
        self.signing_looks.inc();
    }

    pub fn count_signing_refusal(&self) {
        self.signing_refusals.inc();
    }

    pub fn count_signing_conflict(&self) {
        self.signing_conflicts.inc();
    }

    /// Records the signing keys (their `signsFrom`) as last read or written; the gauges are
    /// computed from them at each scrape.
    pub fn set_signing_keys(&self, signs_from: Vec<jiff::Timestamp>, rotation: Duration) {
        *self.signing.lock().unwrap_or_else(PoisonError::into_inner) = Some(SigningKeys { signs_from, rotation });
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

/// The signing key gauges, from the keys last seen and the time of the scrape.
struct SigningCollector {
    keys: Arc<Mutex<Option<SigningKeys>>>,
}

impl std::fmt::Debug for SigningCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningCollector")
    }
}

impl Collector for SigningCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let gauges = {
            let keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
            keys.as_ref()
                .and_then(|k| crate::signing::keeper::gauges(&k.signs_from, jiff::Timestamp::now(), k.rotation))
        };
        // Nothing until this process has read the keys (a standby never does).
        let Some(gauges) = gauges else { return Ok(()) };
        for (name, help, value) in [
            ("signing_key_age_seconds", "Seconds since the current signing key began to sign", gauges.age_seconds),
            (
                "signing_key_next_rotation_timestamp_seconds",
                "When the next signing key begins to sign, in seconds since the Unix epoch",
                gauges.next_rotation,
            ),
            ("signing_keys", "Keys in the signing Secret: current, next and retired ones still kept", gauges.keys),
        ] {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value).encode(metric)?;
        }
        Ok(())
    }
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
