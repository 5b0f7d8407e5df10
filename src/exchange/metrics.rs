//! The exchange's Prometheus metrics, in the verifier's registry (prefix `keyward_verifier`).
//! Labels are fixed strings: a grant, a result, a cache outcome.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExchangeLabels {
    grant: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    result: &'static str,
}

/// How a presented access token was checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessCheck {
    /// Found good in the cache: no signature check.
    Hit,
    /// Checked in full (signature and claims) and found good.
    Miss,
    /// Refused before the key was judged (form, signature, claims, expiry).
    Refused,
}

impl AccessCheck {
    fn label(self) -> &'static str {
        match self {
            AccessCheck::Hit => "hit",
            AccessCheck::Miss => "miss",
            AccessCheck::Refused => "refused",
        }
    }
}

#[derive(Debug, Default)]
pub struct ExchangeMetrics {
    exchanges: Family<ExchangeLabels, Counter>,
    checks: Family<CheckLabels, Counter>,
    signing_keys: Gauge,
    refused_secrets: Counter,
}

impl ExchangeMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "token_exchanges",
            "POST /v1/token answers, by grant (client_credentials, refresh_token, other) and result (issued or the RFC 6749 error)",
            self.exchanges.clone(),
        );
        registry.register(
            "access_token_checks",
            "Access tokens presented to /v1/auth and /v1/verify, by result: hit (cached), miss (signature checked) or refused",
            self.checks.clone(),
        );
        registry.register("signing_keys", "Signing keys known from the signing Secret", self.signing_keys.clone());
        registry.register(
            "signing_secret_refused",
            "Versions of the signing Secret that could not be read; the last good key set is kept",
            self.refused_secrets.clone(),
        );
    }

    pub fn exchanged(&self, grant: &'static str, result: &'static str) {
        self.exchanges.get_or_create(&ExchangeLabels { grant, result }).inc();
    }

    pub fn checked(&self, check: AccessCheck) {
        self.checks.get_or_create(&CheckLabels { result: check.label() }).inc();
    }

    pub fn set_signing_keys(&self, count: usize) {
        self.signing_keys.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn secret_refused(&self) {
        self.refused_secrets.inc();
    }
}
