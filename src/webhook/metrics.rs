//! The webhook's Prometheus metrics (prefix `keyward_webhook`).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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
