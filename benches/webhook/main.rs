//! `cargo bench --bench webhook`: what `keyward webhook` costs a burst of ApiKey creates by a
//! user with grants, measured on the real API server named by `KUBECONFIG`.
//!
//! The process measured is the release binary `target/release/keyward` (`make bench` builds it;
//! the bench stops at once, saying so, when it is missing): `keyward webhook --listen
//! 127.0.0.1:0` with a certificate from `scripts/control-plane.sh webhook-cert` (logs in
//! `target/bench/webhook.log`), registered by URL on loopback, validating and mutating, failing
//! closed, for the namespaces carrying the label `keyward.io/bench-webhook=admitted` only. The
//! control plane's token-file user `keyward-user-1` (the `user-1.kubeconfig` beside
//! `KUBECONFIG`) writes the keys, bound in each namespace to a ClusterRole that allows `create`
//! on apikeys and `grant` on `scopes.keyward.io` named `orders.>`. No controller runs: only the
//! API writes are measured.
//!
//! A round creates `KEYWARD_BENCH_WEBHOOK_KEYS` (1,000) ApiKeys with the scopes
//! `["orders.read"]`, `KEYWARD_BENCH_WEBHOOK_CONCURRENCY` (32) in flight, in a fresh namespace,
//! timed from the first create until the last answer, each create timed on its own too. There
//! are `KEYWARD_BENCH_WEBHOOK_ROUNDS` (3) rounds through the webhook and as many in namespaces it
//! does not select, taking turns (through it first in odd rounds, directly first in even ones),
//! after an unmeasured warm-up of each. Figures, printed as a table at the end and written to
//! `target/bench/webhook.json`:
//!
//! 1. The time of a round through the webhook against one without it, medians of the rounds,
//!    and their ratio (goal at most 1.3).
//! 2. The admission time added per create: p50 and p99 of the creates through the webhook minus
//!    those of the creates without it (all rounds pooled; goal p99 under 10 ms). The webhook has
//!    no histogram of its own handling time; for comparison, the API server's own timing of its
//!    calls to the two webhooks (`apiserver_admission_webhook_admission_duration_seconds`): the
//!    mean per create, and the bucket each call's p99 falls in (the API server's buckets are
//!    coarse).
//! 3. SubjectAccessReviews per create with the cache: the count of the webhook's
//!    `keyward_webhook_subject_access_review_duration_seconds` over the rounds (its `/metrics`
//!    over TLS, verified against the bench's CA), against the API server's own count of
//!    `subjectaccessreviews` POSTs in the same windows. Without the cache every create costs
//!    the covering names asked until the granted one: for `orders.read` and a grant of
//!    `orders.>` that is 2 (`orders.read` refused, `orders.>` allowed), computed from the
//!    webhook's own `covering_names`, and measured once by a single create in a fresh namespace
//!    before the warm-up.
//!
//! Each round checks that the webhook answered a validate and a mutate per create through it
//! (and nothing without it), and that a key through it carries `keyward.io/created-by`. Also:
//! the mean SubjectAccessReview latency; the CPU time per create of the local control plane's
//! kube-apiserver and etcd (pids from the `pids` file of `scripts/control-plane.sh` beside
//! `KUBECONFIG`; left out against another API server) without the webhook and through it, and
//! of the webhook and of the bench's own client (every round, in the JSON), to tell where the
//! time goes on a small machine; the webhook's peak RSS, WARN and ERROR lines in its log.
//! `KEYWARD_BENCH_LOG` (`info`) is the webhook's `RUST_LOG`; `KEYWARD_BENCH_KEEP_NAMESPACES=1`
//! leaves the namespaces for inspection.
//!
//! The API server's counters are global: nothing else may write on it during a run. The
//! namespaces carry the label `keyward.io/bench=webhook`; leftovers of an interrupted run (and
//! its webhook configurations and ClusterRole) are deleted at the start, and the bench's own at
//! the end, the configurations first (without waiting for the namespaces: `make bench` throws
//! the control plane away afterwards).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use keyward::api::{ANNOTATION_CREATED_BY, ApiKey, ApiKeySpec, KeyPolicy};
use keyward::webhook::grant::covering_names;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

#[path = "../common/mod.rs"]
mod common;

use common::controller::parse_labels;
use common::{Error, MANAGER, Result, env_number, install_crds, median, target_dir};

/// The value of the label `common::BENCH_LABEL` on this bench's namespaces.
const BENCH_LABEL_VALUE: &str = "webhook";
/// The label (and its value) the webhook configurations select namespaces by.
const ADMITTED_LABEL: &str = "keyward.io/bench-webhook";
const ADMITTED_VALUE: &str = "admitted";
/// Name of the Validating and Mutating configurations and of the ClusterRole.
const CONFIGURATION: &str = "keyward-bench-webhook";
/// The control plane's token-file user who writes the keys, and its kubeconfig beside
/// `KUBECONFIG`.
const USER: &str = "keyward-user-1";
const USER_KUBECONFIG: &str = "user-1.kubeconfig";
/// The scope every key gets, and the one name the user may grant.
const SCOPE: &str = "orders.read";
const GRANTED: &str = "orders.>";
/// The webhook's SubjectAccessReview histogram and admissions counter.
const SAR_HISTOGRAM: &str = "keyward_webhook_subject_access_review_duration_seconds";
const ADMISSIONS: &str = "keyward_webhook_admissions_total";
/// The API server's histogram of its calls to admission webhooks.
const APISERVER_WEBHOOK_HISTOGRAM: &str = "apiserver_admission_webhook_admission_duration_seconds";
/// The webhook's log line that names the address it bound.
const LISTEN_LINE: &str = "serving /healthz";
/// Keys created in each warm-up namespace.
const WARM_UP_KEYS: usize = 100;
/// How long the API server, its authorizer and the webhook may take to catch up with a change.
const CATCH_UP: Duration = Duration::from_secs(60);

/// What to run, from `KEYWARD_BENCH_WEBHOOK_*` variables.
#[derive(Clone, Debug, Serialize)]
struct Settings {
    /// ApiKeys created per round.
    keys: usize,
    /// Creates in flight.
    concurrency: usize,
    /// Rounds through the webhook, and as many without it.
    rounds: usize,
}

impl Settings {
    fn from_env() -> Result<Self> {
        Ok(Self {
            keys: env_number("KEYWARD_BENCH_WEBHOOK_KEYS", 1000)?.max(1),
            concurrency: env_number("KEYWARD_BENCH_WEBHOOK_CONCURRENCY", 32)?.max(1),
            rounds: env_number("KEYWARD_BENCH_WEBHOOK_ROUNDS", 3)?.max(1),
        })
    }
}

/// Through the webhook, or in a namespace it does not select.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
enum Route {
    Webhook,
    Direct,
}

impl Route {
    fn name(self) -> &'static str {
        match self {
            Route::Webhook => "webhook",
            Route::Direct => "direct",
        }
    }
}

/// Every figure the bench measures; empty or `None` for what it did not get to.
#[derive(Debug, Default, Serialize)]
struct Figures {
    settings: Option<Settings>,
    /// The rounds in the order they ran.
    rounds: Vec<RoundFigures>,
    /// Medians of the rounds' times, and webhook / direct.
    webhook_secs: Option<f64>,
    direct_secs: Option<f64>,
    ratio: Option<f64>,
    /// Per-create latency, all rounds of a route pooled (nearest rank).
    webhook_latency: Option<Latency>,
    direct_latency: Option<Latency>,
    /// Webhook minus direct.
    added_p50_ms: Option<f64>,
    added_p99_ms: Option<f64>,
    /// The API server's timing of its calls to each webhook during the rounds through it.
    apiserver_webhook_calls: Vec<WebhookCalls>,
    /// Sum of the API server's webhook call times over the creates through the webhook.
    apiserver_webhook_ms_per_create: Option<f64>,
    /// The webhook's SubjectAccessReviews during the rounds through it, per create.
    sars: Option<u64>,
    sars_per_create: Option<f64>,
    /// The API server's count of subjectaccessreviews POSTs in the same windows.
    apiserver_sar_posts: Option<u64>,
    /// Mean SubjectAccessReview latency seen by the webhook during the rounds.
    sar_mean_ms: Option<f64>,
    /// SubjectAccessReviews of one create without the cache: the covering names of `orders.read`
    /// asked until `orders.>` (computed), and those of a single create in a fresh namespace.
    uncached_sars_computed: Option<usize>,
    uncached_sars_measured: Option<u64>,
    /// CPU time per create (medians of the rounds) of the local control plane's kube-apiserver
    /// and etcd together, without the webhook and through it, and of the webhook; `None` when
    /// the control plane's processes are not known (another API server than the local one).
    control_plane_cpu_ms_direct: Option<f64>,
    control_plane_cpu_ms_webhook: Option<f64>,
    webhook_cpu_ms: Option<f64>,
    /// Peak RSS (VmHWM) of the webhook at the end.
    webhook_peak_rss_mib: Option<f64>,
    /// Lines the webhook logged at WARN and ERROR (the kube client's note that the local
    /// control plane's kubeconfig skips TLS verification left out), and the first few.
    webhook_log_warnings: u64,
    webhook_log_errors: u64,
    webhook_log_samples: Vec<String>,
    total_secs: Option<f64>,
    warnings: Vec<String>,
    error: Option<String>,
}

/// One round of one route.
#[derive(Debug, Serialize)]
struct RoundFigures {
    round: usize,
    route: Route,
    namespace: String,
    /// First create sent to last answer.
    secs: f64,
    latency: Latency,
    /// Creates that had to be tried again, and the first error of one.
    retried: usize,
    first_retry_error: Option<String>,
    /// Admissions the webhook answered and SubjectAccessReviews it asked during the round.
    admissions: u64,
    sars: u64,
    /// subjectaccessreviews POSTs the API server counted during the round.
    apiserver_sar_posts: u64,
    /// CPU time (user + system) per create of each process measured, by name.
    cpu_ms_per_create: BTreeMap<String, f64>,
}

#[derive(Clone, Debug, Serialize)]
struct Latency {
    creates: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Latency {
    fn of(ms: &[f64]) -> Self {
        let mut sorted = ms.to_vec();
        sorted.sort_by(f64::total_cmp);
        Self {
            creates: sorted.len(),
            p50_ms: nearest_rank(&sorted, 0.50),
            p99_ms: nearest_rank(&sorted, 0.99),
            max_ms: sorted.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// The API server's calls to one webhook (`mutate.keyward.io`, `validate.keyward.io`).
#[derive(Debug, Serialize)]
struct WebhookCalls {
    name: String,
    calls: u64,
    mean_ms: f64,
    /// The upper bound (le) of the bucket the 50th and 99th percentile call fall in; `None` past
    /// the last finite bucket.
    p50_at_most_ms: Option<f64>,
    p99_at_most_ms: Option<f64>,
}

#[tokio::main]
async fn main() -> ExitCode {
    common::main(Bench::new(common::out_dir())).await
}

struct Bench {
    client: Client,
    /// Acts as `USER`.
    user: Client,
    settings: Settings,
    out_dir: PathBuf,
    keyward: PathBuf,
    /// Holds the webhook's certificate, key and CA.
    certs: tempfile::TempDir,
    webhook: Option<WebhookServer>,
    /// The local control plane's processes whose CPU time is measured, by name.
    control_plane: BTreeMap<String, u32>,
    /// What the bench made, to remove at the end.
    namespaces: Vec<String>,
    registered: bool,
    role: bool,
    /// Collected over the rounds through the webhook, and without it: the creates' times by
    /// route, the seconds the webhook's SubjectAccessReviews took, the API server's calls to each
    /// webhook.
    latencies: BTreeMap<Route, Vec<f64>>,
    sar_secs: f64,
    webhook_calls: BTreeMap<String, Histogram>,
    figures: Figures,
    started: Instant,
}

impl common::Bench for Bench {
    type Figures = Figures;
    const NAME: &'static str = "webhook";

    async fn run(&mut self) -> Result<()> {
        self.progress(&format!("settings: {:?}", self.settings));
        self.progress(&format!("binary: {}", self.keyward.display()));
        install_crds(&self.client, MANAGER).await?;
        self.remove_leftovers().await?;
        self.start_webhook().await?;
        self.create_role().await?;
        self.register().await?;

        let suffix: String = (0..5).map(|_| char::from(b'a' + rand::random_range(0..26u8))).collect();
        self.uncached_create(&format!("kwbench-webhook-{suffix}-cold")).await?;
        for route in [Route::Webhook, Route::Direct] {
            let ns = format!("kwbench-webhook-{suffix}-warm-{}", route.name());
            self.prepare(&ns, route).await?;
            self.progress(&format!("warm-up: {WARM_UP_KEYS} creates in {ns}"));
            self.burst(&ns, WARM_UP_KEYS).await?;
        }

        for round in 1..=self.settings.rounds {
            let order = if round % 2 == 1 { [Route::Webhook, Route::Direct] } else { [Route::Direct, Route::Webhook] };
            for route in order {
                let ns = format!("kwbench-webhook-{suffix}-{round}-{}", route.name());
                self.round(round, &ns, route).await?;
            }
        }
        self.summarize();
        self.webhook()?.check_alive()?;
        Ok(())
    }

    /// Removes the configurations first (they fail closed once the webhook is gone), stops the
    /// webhook (counting its log's warnings), then removes the ClusterRole and the namespaces.
    async fn cleanup(&mut self) {
        if self.registered {
            self.progress("cleanup: removing the webhook configurations");
            delete_if_there::<ValidatingWebhookConfiguration>(&self.client, CONFIGURATION).await;
            delete_if_there::<MutatingWebhookConfiguration>(&self.client, CONFIGURATION).await;
            self.registered = false;
        }
        if let Some(webhook) = self.webhook.take() {
            self.figures.webhook_peak_rss_mib = webhook.peak_rss_mib().ok();
            let (warnings, errors, samples) = webhook.log_levels();
            self.figures.webhook_log_warnings = warnings;
            self.figures.webhook_log_errors = errors;
            self.figures.webhook_log_samples = samples;
            webhook.stop().await;
        }
        if self.role {
            delete_if_there::<ClusterRole>(&self.client, CONFIGURATION).await;
            self.role = false;
        }
        let namespaces = std::mem::take(&mut self.namespaces);
        if namespaces.is_empty() {
            return;
        }
        if std::env::var_os("KEYWARD_BENCH_KEEP_NAMESPACES").is_some() {
            self.progress(&format!("keeping {namespaces:?} for inspection; the next run deletes them first"));
            return;
        }
        self.progress(&format!("cleanup: deleting {} namespaces (not waiting for them to be gone)", namespaces.len()));
        let api: Api<Namespace> = Api::all(self.client.clone());
        for ns in &namespaces {
            if let Err(error) = api.delete(ns, &DeleteParams::default()).await {
                self.progress(&format!("cannot delete namespace {ns}: {error}"));
            }
        }
    }

    fn conclude(&mut self, error: Option<String>, total_secs: f64) {
        self.figures.error = error;
        self.figures.total_secs = Some(total_secs);
    }

    fn figures(&self) -> &Figures {
        &self.figures
    }

    fn print_table(figures: &Figures) {
        print_table(figures)
    }
}

impl Bench {
    async fn new(out_dir: PathBuf) -> Result<Self> {
        let settings = Settings::from_env()?;
        let keyward = release_binary("keyward")?;
        let Some(kubeconfig) = std::env::var_os("KUBECONFIG").map(PathBuf::from) else {
            return Err("KUBECONFIG must name the API server to measure (see `make bench`)".into());
        };
        let client = Client::try_default().await.map_err(|e| format!("a client from KUBECONFIG: {e}"))?;
        let user_kubeconfig = kubeconfig.parent().unwrap_or(Path::new(".")).join(USER_KUBECONFIG);
        let user = client_of(&user_kubeconfig).await.map_err(|e| {
            format!(
                "a client for {USER} from {}: {e} (the local control plane of scripts/control-plane.sh writes it)",
                user_kubeconfig.display()
            )
        })?;
        std::fs::create_dir_all(&out_dir).map_err(|e| format!("create {}: {e}", out_dir.display()))?;
        Ok(Self {
            client,
            user,
            figures: Figures { settings: Some(settings.clone()), ..Figures::default() },
            settings,
            out_dir,
            keyward,
            certs: tempfile::tempdir()?,
            webhook: None,
            control_plane: control_plane_pids(&kubeconfig),
            namespaces: Vec::new(),
            registered: false,
            role: false,
            latencies: BTreeMap::new(),
            sar_secs: 0.0,
            webhook_calls: BTreeMap::new(),
            started: Instant::now(),
        })
    }

    fn progress(&self, message: &str) {
        eprintln!("[{:>7.1}s] {message}", self.started.elapsed().as_secs_f64());
    }

    fn warn(&mut self, warning: String) {
        self.progress(&format!("warning: {warning}"));
        self.figures.warnings.push(warning);
    }

    fn webhook(&self) -> Result<&WebhookServer> {
        self.webhook.as_ref().ok_or_else(|| "no webhook running".into())
    }

    // -- Set-up ---------------------------------------------------------------------------

    /// What an interrupted run left: its configurations first (they fail closed on a webhook
    /// that is gone), its ClusterRole, its namespaces.
    async fn remove_leftovers(&self) -> Result<()> {
        delete_if_there::<ValidatingWebhookConfiguration>(&self.client, CONFIGURATION).await;
        delete_if_there::<MutatingWebhookConfiguration>(&self.client, CONFIGURATION).await;
        delete_if_there::<ClusterRole>(&self.client, CONFIGURATION).await;
        common::remove_leftovers(&self.client, BENCH_LABEL_VALUE, |m| self.progress(m)).await
    }

    /// Makes the certificate and starts `keyward webhook`; returns once `/readyz` answers.
    async fn start_webhook(&mut self) -> Result<()> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/control-plane.sh");
        let output = Command::new(&script)
            .arg("webhook-cert")
            .arg(self.certs.path())
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("run {} webhook-cert: {e}", script.display()))?;
        if !output.status.success() {
            return Err(format!(
                "control-plane.sh webhook-cert failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )
            .into());
        }
        let log = self.out_dir.join("webhook.log");
        self.progress(&format!("starting keyward webhook (log {})", log.display()));
        let mut webhook = WebhookServer::start(&self.keyward, self.certs.path(), &log)?;
        webhook.wait_ready(Duration::from_secs(30)).await?;
        self.progress(&format!("keyward webhook serves on {}", webhook.addr));
        self.webhook = Some(webhook);
        Ok(())
    }

    /// The ClusterRole the user is bound to in every namespace: create keys, grant `orders.>`.
    async fn create_role(&mut self) -> Result<()> {
        let role: ClusterRole = serde_json::from_value(json!({
            "metadata": {"name": CONFIGURATION, "labels": {common::BENCH_LABEL: BENCH_LABEL_VALUE}},
            "rules": [
                {"apiGroups": ["keyward.io"], "resources": ["apikeys"], "verbs": ["create"]},
                {"apiGroups": ["keyward.io"], "resources": ["scopes"], "verbs": ["grant"], "resourceNames": [GRANTED]},
            ],
        }))?;
        Api::<ClusterRole>::all(self.client.clone())
            .create(&PostParams::default(), &role)
            .await
            .map_err(|e| format!("create ClusterRole {CONFIGURATION}: {e}"))?;
        self.role = true;
        Ok(())
    }

    /// Registers `/validate` and `/mutate` by URL for the namespaces labelled as admitted.
    async fn register(&mut self) -> Result<()> {
        let addr = self.webhook()?.addr;
        let ca = std::fs::read(self.certs.path().join("ca.crt"))?;
        let hook = |path: &str| {
            json!({
                "name": format!("{path}.keyward.io"),
                "clientConfig": {"url": format!("https://{addr}/{path}"), "caBundle": k8s_openapi::ByteString(ca.clone())},
                "rules": [{"apiGroups": ["keyward.io"], "apiVersions": ["v1alpha1"], "operations": ["CREATE", "UPDATE"],
                           "resources": ["apikeys", "credentials"], "scope": "Namespaced"}],
                "namespaceSelector": {"matchLabels": {ADMITTED_LABEL: ADMITTED_VALUE}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "timeoutSeconds": 5,
                "admissionReviewVersions": ["v1"],
            })
        };
        let metadata = json!({"name": CONFIGURATION, "labels": {common::BENCH_LABEL: BENCH_LABEL_VALUE}});
        let validating: ValidatingWebhookConfiguration =
            serde_json::from_value(json!({"metadata": metadata, "webhooks": [hook("validate")]}))?;
        let mutating: MutatingWebhookConfiguration =
            serde_json::from_value(json!({"metadata": metadata, "webhooks": [hook("mutate")]}))?;
        self.registered = true;
        Api::<ValidatingWebhookConfiguration>::all(self.client.clone())
            .create(&PostParams::default(), &validating)
            .await
            .map_err(|e| format!("register /validate: {e}"))?;
        Api::<MutatingWebhookConfiguration>::all(self.client.clone())
            .create(&PostParams::default(), &mutating)
            .await
            .map_err(|e| format!("register /mutate: {e}"))?;
        Ok(())
    }

    /// A fresh namespace for `path`, the user bound in it, and (through the webhook) the webhook
    /// in the path of its writes: every step waited for, so that the round measures none of it.
    async fn prepare(&mut self, ns: &str, route: Route) -> Result<()> {
        let mut labels = BTreeMap::from([(common::BENCH_LABEL.to_string(), BENCH_LABEL_VALUE.to_string())]);
        if route == Route::Webhook {
            labels.insert(ADMITTED_LABEL.into(), ADMITTED_VALUE.into());
        }
        let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns, "labels": labels}}))?;
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .map_err(|e| format!("create namespace {ns}: {e}"))?;
        self.namespaces.push(ns.to_string());
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": CONFIGURATION, "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CONFIGURATION},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}],
        }))?;
        Api::<RoleBinding>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &binding)
            .await
            .map_err(|e| format!("create RoleBinding in {ns}: {e}"))?;
        self.wait_authorized(ns).await?;
        if route == Route::Webhook {
            self.wait_admitted(ns).await?;
        }
        Ok(())
    }

    /// Waits until the authorizer, which reads bindings from a cache, lets the user create keys
    /// and grant `orders.>` in `ns`.
    async fn wait_authorized(&self, ns: &str) -> Result<()> {
        let deadline = Instant::now() + CATCH_UP;
        let reviews: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let ask = |resource: &str, verb: &str, name: Option<&str>| -> Result<SubjectAccessReview> {
            Ok(serde_json::from_value(json!({"spec": {"user": USER, "resourceAttributes": {
                "group": "keyward.io", "resource": resource, "verb": verb, "namespace": ns, "name": name,
            }}}))?)
        };
        let questions = [ask("apikeys", "create", None)?, ask("scopes", "grant", Some(GRANTED))?];
        loop {
            let mut allowed = true;
            for question in &questions {
                let answer = reviews.create(&PostParams::default(), question).await?;
                allowed &= answer.status.is_some_and(|s| s.allowed);
            }
            if allowed {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{USER} was not allowed to create keys and grant {GRANTED} in {ns} within {CATCH_UP:?}"
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until a write in `ns` goes through the webhook: a dry-run create with a bad spec,
    /// which the CRD schema lets through and the webhook refuses naming the field.
    async fn wait_admitted(&self, ns: &str) -> Result<()> {
        let deadline = Instant::now() + CATCH_UP;
        let keys: Api<ApiKey> = Api::namespaced(self.client.clone(), ns);
        let probe =
            ApiKey::new("probe", ApiKeySpec { expires_after: Some("not-a-duration".into()), ..ApiKeySpec::default() });
        loop {
            match keys.create(&PostParams { dry_run: true, ..PostParams::default() }, &probe).await {
                Err(kube::Error::Api(status)) if status.message.contains("spec.expiresAfter") => return Ok(()),
                other if Instant::now() >= deadline => {
                    return Err(format!(
                        "the webhook did not refuse a bad spec in {ns} within {CATCH_UP:?}; the last answer: {other:?}"
                    )
                    .into());
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    // -- Measures -------------------------------------------------------------------------

    /// SubjectAccessReviews of one create with nothing cached: a single create, alone, in a
    /// fresh namespace through the webhook.
    async fn uncached_create(&mut self, ns: &str) -> Result<()> {
        let computed = covering_names(SCOPE)
            .iter()
            .position(|name| name == GRANTED)
            .map(|at| at + 1)
            .ok_or_else(|| format!("{GRANTED} does not cover {SCOPE}"))?;
        self.figures.uncached_sars_computed = Some(computed);
        self.prepare(ns, Route::Webhook).await?;
        let before = self.webhook()?.metrics().await?;
        self.burst(ns, 1).await?;
        let after = self.webhook()?.metrics().await?;
        let sars = after.sars - before.sars;
        self.progress(&format!(
            "one create with nothing cached: {sars} SubjectAccessReviews (covering names until {GRANTED}: {computed})"
        ));
        self.figures.uncached_sars_measured = Some(sars);
        Ok(())
    }

    /// One timed round of `path` in the fresh namespace `ns`.
    async fn round(&mut self, round: usize, ns: &str, route: Route) -> Result<()> {
        let n = self.settings.keys;
        self.prepare(ns, route).await?;
        let webhook_before = self.webhook()?.metrics().await?;
        let apiserver_before = ApiServerMetrics::scrape(&self.client).await?;
        let cpu_before = self.cpu_secs();
        let started = Instant::now();
        let burst = self.burst(ns, n).await?;
        let secs = started.elapsed().as_secs_f64();
        let cpu_after = self.cpu_secs();
        let cpu_ms_per_create = cpu_after
            .iter()
            .filter_map(|(name, after)| Some((name.clone(), (after - cpu_before.get(name)?) * 1000.0 / n as f64)))
            .collect();
        let webhook_after = self.webhook()?.metrics().await?;
        let apiserver_after = ApiServerMetrics::scrape(&self.client).await?;

        let admissions = webhook_after.admissions - webhook_before.admissions;
        let sars = webhook_after.sars - webhook_before.sars;
        let sar_posts = apiserver_after.sar_posts - apiserver_before.sar_posts;
        let expected = match route {
            Route::Webhook => 2 * n as u64,
            Route::Direct => 0,
        };
        // Retries that reached the webhook are answered again: at least the expected number.
        if admissions < expected || (route == Route::Direct && admissions > 0) {
            return Err(format!(
                "round {round} {}: the webhook answered {admissions} admissions for {n} creates, not {expected}",
                route.name()
            )
            .into());
        }
        if route == Route::Webhook {
            self.check_created_by(ns, n - 1).await?;
            self.sar_secs += webhook_after.sar_sum_secs - webhook_before.sar_sum_secs;
            for (name, after) in &apiserver_after.webhook_calls {
                let round = match apiserver_before.webhook_calls.get(name) {
                    Some(before) => after.since(before),
                    None => after.clone(),
                };
                self.webhook_calls.entry(name.clone()).or_default().add(&round);
            }
        }
        let latency = Latency::of(&burst.ms);
        self.progress(&format!(
            "round {round} {}: {n} creates in {secs:.2} s, p50 {:.1} ms, p99 {:.1} ms, {sars} SubjectAccessReviews \
             ({sar_posts} POSTs counted by the API server), {admissions} admissions",
            route.name(),
            latency.p50_ms,
            latency.p99_ms,
        ));
        if burst.retried > 0 {
            self.warn(format!(
                "round {round} {}: {} creates were tried again (the first error: {})",
                route.name(),
                burst.retried,
                burst.first_error.as_deref().unwrap_or("-")
            ));
        }
        self.latencies.entry(route).or_default().extend(&burst.ms);
        self.figures.rounds.push(RoundFigures {
            round,
            route,
            namespace: ns.to_string(),
            secs,
            latency,
            retried: burst.retried,
            first_retry_error: burst.first_error,
            admissions,
            sars,
            apiserver_sar_posts: sar_posts,
            cpu_ms_per_create,
        });
        Ok(())
    }

    /// The key `bench-<i>` records its creator: the mutating webhook was in the path.
    async fn check_created_by(&self, ns: &str, i: usize) -> Result<()> {
        let key = Api::<ApiKey>::namespaced(self.client.clone(), ns).get(&format!("bench-{i}")).await?;
        let creator = key.annotations().get(ANNOTATION_CREATED_BY).map(String::as_str);
        if creator != Some(USER) {
            return Err(format!("bench-{i} in {ns} has {ANNOTATION_CREATED_BY}={creator:?}, not {USER:?}").into());
        }
        Ok(())
    }

    /// Creates `bench-0..n` in `ns` as the user, the settings' number in flight; each create
    /// timed from its first try to its answer.
    async fn burst(&self, ns: &str, n: usize) -> Result<Burst> {
        let keys: Api<ApiKey> = Api::namespaced(self.user.clone(), ns);
        let creates = futures::stream::iter(0..n)
            .map(|i| {
                let keys = keys.clone();
                async move {
                    let started = Instant::now();
                    let tries = create_key(&keys, &format!("bench-{i}")).await?;
                    Ok::<_, Error>((started.elapsed().as_secs_f64() * 1000.0, tries))
                }
            })
            .buffer_unordered(self.settings.concurrency)
            .try_collect::<Vec<_>>()
            .await?;
        let mut burst = Burst::default();
        for (ms, tries) in creates {
            burst.ms.push(ms);
            if let Some(error) = tries {
                burst.retried += 1;
                burst.first_error.get_or_insert(error);
            }
        }
        Ok(burst)
    }

    /// CPU seconds used so far by the control plane's processes, the webhook and the bench, by
    /// name.
    fn cpu_secs(&self) -> BTreeMap<String, f64> {
        let webhook = self.webhook.as_ref().map(|w| ("keyward-webhook".to_string(), w.pid));
        // The bench's own client too: with it, the processes that share the machine's cores.
        let bench = ("bench-client".to_string(), std::process::id());
        self.control_plane
            .iter()
            .map(|(name, pid)| (name.clone(), *pid))
            .chain(webhook)
            .chain([bench])
            .filter_map(|(name, pid)| Some((name, cpu_secs(pid)?)))
            .collect()
    }

    fn summarize(&mut self) {
        let secs_of = |route: Route| {
            let secs: Vec<f64> = self.figures.rounds.iter().filter(|r| r.route == route).map(|r| r.secs).collect();
            median(&secs)
        };
        let (webhook_secs, direct_secs) = (secs_of(Route::Webhook), secs_of(Route::Direct));
        // The API server and etcd together: a write costs both, and the webhook's calls too.
        let cpu_of = |route: Route, names: &[&str]| {
            let per_round: Vec<f64> = self
                .figures
                .rounds
                .iter()
                .filter(|r| r.route == route)
                .filter_map(|r| names.iter().map(|name| r.cpu_ms_per_create.get(*name)).sum::<Option<f64>>())
                .collect();
            median(&per_round)
        };
        let control_plane = ["kube-apiserver", "etcd"];
        let cpu = (
            cpu_of(Route::Direct, &control_plane),
            cpu_of(Route::Webhook, &control_plane),
            cpu_of(Route::Webhook, &["keyward-webhook"]),
        );
        let f = &mut self.figures;
        (f.webhook_secs, f.direct_secs) = (webhook_secs, direct_secs);
        (f.control_plane_cpu_ms_direct, f.control_plane_cpu_ms_webhook, f.webhook_cpu_ms) = cpu;
        f.ratio = f.webhook_secs.zip(f.direct_secs).map(|(w, d)| w / d);
        f.webhook_latency = self.latencies.get(&Route::Webhook).map(|ms| Latency::of(ms));
        f.direct_latency = self.latencies.get(&Route::Direct).map(|ms| Latency::of(ms));
        if let (Some(w), Some(d)) = (&f.webhook_latency, &f.direct_latency) {
            f.added_p50_ms = Some(w.p50_ms - d.p50_ms);
            f.added_p99_ms = Some(w.p99_ms - d.p99_ms);
        }
        let through: Vec<&RoundFigures> = f.rounds.iter().filter(|r| r.route == Route::Webhook).collect();
        let creates: usize = through.iter().map(|r| r.latency.creates).sum();
        let sars: u64 = through.iter().map(|r| r.sars).sum();
        f.sars = Some(sars);
        f.apiserver_sar_posts = Some(through.iter().map(|r| r.apiserver_sar_posts).sum());
        f.apiserver_webhook_calls = self.webhook_calls.iter().map(|(name, h)| h.calls(name)).collect();
        if creates > 0 {
            f.sars_per_create = Some(sars as f64 / creates as f64);
            if !self.webhook_calls.is_empty() {
                let secs: f64 = self.webhook_calls.values().map(|h| h.sum).sum();
                f.apiserver_webhook_ms_per_create = Some(secs * 1000.0 / creates as f64);
            }
        }
        f.sar_mean_ms = (sars > 0).then(|| self.sar_secs * 1000.0 / sars as f64);
    }
}

/// The creates of one burst.
#[derive(Default)]
struct Burst {
    ms: Vec<f64>,
    retried: usize,
    first_error: Option<String>,
}

/// Creates one ApiKey with the scope `orders.read`; `Some(first error)` when it had to be
/// tried again. A failed request is tried again a few times, 1, 2, 4 and 8 s apart (the
/// create's time then tells it): one hiccup of the API server must not end the run.
async fn create_key(keys: &Api<ApiKey>, name: &str) -> Result<Option<String>> {
    let spec = ApiKeySpec {
        policy: KeyPolicy { scopes: vec![SCOPE.into()], ..KeyPolicy::default() },
        ..ApiKeySpec::default()
    };
    let key = ApiKey::new(name, spec);
    let mut pause = Duration::from_secs(1);
    let mut first_error = None;
    loop {
        match keys.create(&PostParams::default(), &key).await {
            Ok(_) => return Ok(first_error),
            // 409: an earlier try that got through but whose answer was lost.
            Err(kube::Error::Api(status)) if status.code == 409 && first_error.is_some() => return Ok(first_error),
            Err(error) if pause <= Duration::from_secs(8) => {
                first_error.get_or_insert_with(|| error.to_string());
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(error) => return Err(format!("create ApiKey {name}: {error}").into()),
        }
    }
}

/// Deletes the cluster-scoped object `name` of kind `K`, when it is there (best effort).
async fn delete_if_there<K>(client: &Client, name: &str)
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    match Api::<K>::all(client.clone()).delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => eprintln!("cannot delete {} {name}: {error}", K::kind(&K::DynamicType::default())),
    }
}

/// A client from a kubeconfig file.
async fn client_of(path: &Path) -> Result<Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// A release binary of the package, which must have been built.
fn release_binary(name: &str) -> Result<PathBuf> {
    let path = target_dir().join("release").join(name);
    if !path.is_file() {
        return Err(format!(
            "{} is missing: this bench runs the release binaries; build them first with \
             `cargo build --release --bins` (`make bench` does)",
            path.display()
        )
        .into());
    }
    Ok(path)
}

/// The pids of the local control plane's kube-apiserver and etcd, from the `pids` file that
/// `scripts/control-plane.sh` keeps beside the kubeconfig (each checked against
/// `/proc/<pid>/comm`); empty for another API server.
fn control_plane_pids(kubeconfig: &Path) -> BTreeMap<String, u32> {
    let Some(text) = kubeconfig.parent().and_then(|dir| std::fs::read_to_string(dir.join("pids")).ok()) else {
        return BTreeMap::new();
    };
    text.lines()
        .filter_map(|line| {
            let (name, pid) = line.split_once(' ')?;
            let pid: u32 = pid.trim().parse().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (["kube-apiserver", "etcd"].contains(&name) && comm.trim() == name).then(|| (name.to_string(), pid))
        })
        .collect()
}

/// CPU seconds (user + system) the process `pid` has used, from `/proc/<pid>/stat`; `None`
/// when it is gone.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: count the fields after it. utime and
    // stime are fields 14 and 15 of the line; the state, field 3, comes first after the name.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // In USER_HZ, which Linux fixes at 100 for what it reports to user space.
    Some(ticks as f64 / 100.0)
}

/// The `p`th percentile of sorted values, nearest rank.
fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied().unwrap_or(f64::NAN)
}

// ---------------------------------------------------------------------------------------------
// Metrics

/// The samples of the metric `name` (exactly that name, any labels) in Prometheus text.
fn samples<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = (BTreeMap<String, String>, f64)> + 'a {
    text.lines().filter(|line| !line.starts_with('#')).filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        let (labels, value) = match rest.strip_prefix('{') {
            Some(rest) => rest.rsplit_once('}').map(|(labels, value)| (parse_labels(labels), value))?,
            // A longer name that starts with this one has neither `{` nor a space here.
            None if rest.starts_with(' ') => (BTreeMap::new(), rest),
            None => return None,
        };
        // Values may be printed in exponent form ("1.2e+06").
        Some((labels, value.split_whitespace().next()?.parse().ok()?))
    })
}

/// One histogram: cumulative counts by upper bound (ascending), the count and the sum.
#[derive(Clone, Debug, Default)]
struct Histogram {
    buckets: Vec<(f64, u64)>,
    count: u64,
    sum: f64,
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

    fn add(&mut self, other: &Histogram) {
        for &(le, n) in &other.buckets {
            self.observe_bucket(le, n);
        }
        self.count += other.count;
        self.sum += other.sum;
    }

    /// What was observed between `before` and this snapshot.
    fn since(&self, before: &Histogram) -> Histogram {
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

    fn calls(&self, name: &str) -> WebhookCalls {
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
struct ApiServerMetrics {
    /// `apiserver_request_total` of POSTs on subjectaccessreviews.
    sar_posts: u64,
    /// Its calls to each admission webhook (every operation and answer added up), by name.
    webhook_calls: BTreeMap<String, Histogram>,
}

impl ApiServerMetrics {
    async fn scrape(client: &Client) -> Result<Self> {
        // `Request::new("")` with the name `metrics` builds a plain `GET /metrics`.
        let request = kube::core::Request::new("")
            .get("metrics", &Default::default())
            .map_err(|e| format!("build GET /metrics: {e}"))?;
        let text = client.request_text(request).await.map_err(|e| format!("the API server's /metrics: {e}"))?;
        Ok(Self::parse(&text))
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
struct WebhookMetrics {
    /// Admissions answered, every kind, operation and result added up.
    admissions: u64,
    /// SubjectAccessReviews asked (answers from the cache are not counted), and their seconds.
    sars: u64,
    sar_sum_secs: f64,
}

impl WebhookMetrics {
    fn parse(text: &str) -> Result<Self> {
        let total = |name: &str| samples(text, name).map(|(_, v)| v).reduce(|a, b| a + b);
        let count = format!("{SAR_HISTOGRAM}_count");
        Ok(Self {
            admissions: total(ADMISSIONS).unwrap_or(0.0).round() as u64,
            sars: total(&count).ok_or_else(|| format!("no {count} in the webhook's /metrics"))?.round() as u64,
            sar_sum_secs: total(&format!("{SAR_HISTOGRAM}_sum")).unwrap_or(0.0),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The webhook

/// `keyward webhook` as a child process, killed when dropped.
struct WebhookServer {
    child: Child,
    pid: u32,
    log: PathBuf,
    /// Where it listens (it binds port 0), once known.
    addr: SocketAddr,
    /// Trusts the CA that signed its certificate, and nothing else.
    tls: tokio_rustls::TlsConnector,
}

impl WebhookServer {
    /// Starts `program webhook --listen 127.0.0.1:0` with the certificate in `certs`, its output
    /// in `log`.
    fn start(program: &Path, certs: &Path, log: &Path) -> Result<Self> {
        let file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(program)
            .args(["webhook", "--listen", "127.0.0.1:0", "--tls-cert-file"])
            .arg(certs.join("tls.crt"))
            .arg("--tls-key-file")
            .arg(certs.join("tls.key"))
            .env("RUST_LOG", std::env::var("KEYWARD_BENCH_LOG").unwrap_or_else(|_| "info".into()))
            // Plain text logs, which the bench reads.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("start keyward webhook: {e}"))?;
        let pid = child.id().ok_or("the webhook exited at once")?;
        Ok(Self {
            child,
            pid,
            log: log.to_path_buf(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: tls_connector(&certs.join("ca.crt"))?,
        })
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the address in the log, then for `/readyz` to answer 200.
    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.addr.port() == 0 {
                let text = self.log_text();
                let bound = text
                    .lines()
                    .find(|l| l.contains(LISTEN_LINE))
                    .and_then(|l| l.split("addr=").nth(1))
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|addr| addr.parse().ok());
                if let Some(addr) = bound {
                    self.addr = addr;
                }
            }
            if self.addr.port() != 0 && matches!(self.get("/readyz").await, Ok((200, _))) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                return Err(self.explain(format!("the webhook exited ({status}) before it was ready").into()));
            }
            if Instant::now() >= deadline {
                return Err(self.explain(format!("the webhook was not ready within {timeout:?}").into()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn check_alive(&self) -> Result<()> {
        match std::fs::metadata(format!("/proc/{}", self.pid)) {
            Ok(_) => Ok(()),
            Err(_) => Err(self.explain("the webhook died".into())),
        }
    }

    /// Its counters from `/metrics`.
    async fn metrics(&self) -> Result<WebhookMetrics> {
        match self.get("/metrics").await {
            Ok((200, body)) => WebhookMetrics::parse(&body),
            Ok((status, _)) => Err(self.explain(format!("the webhook's /metrics answered {status}").into())),
            Err(error) => Err(self.explain(format!("the webhook's /metrics: {error}").into())),
        }
    }

    /// A GET over TLS, HTTP/1.0 (the server closes the connection after its answer): the
    /// status code and the body.
    async fn get(&self, path: &str) -> Result<(u16, String)> {
        let addr = self.addr;
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let mut tls = self.tls.connect(ServerName::IpAddress(addr.ip().into()), tcp).await?;
            tls.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
            let mut bytes = Vec::new();
            match tls.read_to_end(&mut bytes).await {
                Ok(_) => {}
                // A close without TLS close_notify, after the whole answer.
                Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof && !bytes.is_empty() => {}
                Err(error) => return Err(error),
            }
            Ok::<_, std::io::Error>(bytes)
        };
        let bytes = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| format!("GET https://{addr}{path}: no answer within 10 s"))?
            .map_err(|e| format!("GET https://{addr}{path}: {e}"))?;
        let text = String::from_utf8_lossy(&bytes);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("GET https://{addr}{path}: no status line in {:?}", head.lines().next()))?;
        Ok((status, body.to_string()))
    }

    /// Peak resident set size (VmHWM), in MiB.
    fn peak_rss_mib(&self) -> Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or("no VmHWM in /proc/<pid>/status")?;
        Ok(kib as f64 / 1024.0)
    }

    /// Lines logged at WARN and at ERROR, and the first few of them, without the kube client's
    /// warning that the local control plane's kubeconfig skips TLS verification.
    fn log_levels(&self) -> (u64, u64, Vec<String>) {
        let text = self.log_text();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .filter(|l| !l.contains("Server cert bypassed"))
            .collect();
        let errors = lines.iter().filter(|l| l.contains(" ERROR ")).count() as u64;
        let samples = lines.iter().take(5).map(|l| l.to_string()).collect();
        (lines.len() as u64 - errors, errors, samples)
    }

    /// Adds the webhook's last log lines to an error, to say what it was doing.
    fn explain(&self, error: Error) -> Error {
        let text = self.log_text();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("{error}\nlast webhook log lines ({}):\n{}", self.log.display(), tail.join("\n")).into()
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A TLS client that trusts only the CA in `ca` (the one `webhook-cert` made).
fn tls_connector(ca: &Path) -> Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        roots.add(cert.map_err(|e| format!("{}: {e}", ca.display()))?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

// ---------------------------------------------------------------------------------------------
// The table

/// The figures as a table with the goals, on stdout.
fn print_table(f: &Figures) {
    let Some(settings) = &f.settings else { return };
    let (n, rounds, concurrency) = (settings.keys, settings.rounds, settings.concurrency);
    let secs = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2} s"));
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1} ms"));
    let num = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "ok",
        Some(false) => "MISSED",
        None => "",
    };
    let mut rows: Vec<[String; 4]> = Vec::new();
    let mut row = |figure: String, value: String, goal: &str, ok: Option<bool>| {
        rows.push([figure, value, goal.to_string(), verdict(ok).to_string()]);
    };
    row(
        format!("{n} creates, {concurrency} in flight, without the webhook (median of {rounds})"),
        secs(f.direct_secs),
        "",
        None,
    );
    row(
        format!("{n} creates, {concurrency} in flight, through the webhook (median of {rounds})"),
        secs(f.webhook_secs),
        "",
        None,
    );
    row("through the webhook / without".into(), num(f.ratio), "<= 1.30", f.ratio.map(|r| r <= 1.3));
    let latency = |l: &Option<Latency>, p99: bool| ms(l.as_ref().map(|l| if p99 { l.p99_ms } else { l.p50_ms }));
    row(
        "create latency without the webhook: p50 / p99".into(),
        format!("{} / {}", latency(&f.direct_latency, false), latency(&f.direct_latency, true)),
        "",
        None,
    );
    row(
        "create latency through the webhook: p50 / p99".into(),
        format!("{} / {}", latency(&f.webhook_latency, false), latency(&f.webhook_latency, true)),
        "",
        None,
    );
    row("admission time added per create: p50".into(), ms(f.added_p50_ms), "", None);
    row("admission time added per create: p99".into(), ms(f.added_p99_ms), "< 10 ms", f.added_p99_ms.map(|v| v < 10.0));
    row(
        "API server's calls to the webhooks, per create (mean, mutate + validate)".into(),
        ms(f.apiserver_webhook_ms_per_create),
        "",
        None,
    );
    for calls in &f.apiserver_webhook_calls {
        let bound = |v: Option<f64>| v.map_or("-".into(), |v| format!("<= {v:.0} ms"));
        row(
            format!("  {}: {} calls, mean; p50 / p99 bucket", calls.name, calls.calls),
            format!("{:.1} ms; {} / {}", calls.mean_ms, bound(calls.p50_at_most_ms), bound(calls.p99_at_most_ms)),
            "",
            None,
        );
    }
    let per_create = f.sars_per_create.map_or("-".into(), |v| format!("{v:.3}"));
    row(
        format!(
            "SubjectAccessReviews per create, with the cache ({} in {rounds} x {n})",
            f.sars.map_or("-".into(), |s| s.to_string())
        ),
        per_create,
        "",
        None,
    );
    row(
        "  the API server's count of subjectaccessreviews POSTs, same windows".into(),
        f.apiserver_sar_posts.map_or("-".into(), |s| s.to_string()),
        "",
        None,
    );
    row(
        format!("SubjectAccessReviews per create, without the cache ({SCOPE} until {GRANTED}: computed / one create)"),
        format!(
            "{} / {}",
            f.uncached_sars_computed.map_or("-".into(), |v| v.to_string()),
            f.uncached_sars_measured.map_or("-".into(), |v| v.to_string())
        ),
        "",
        None,
    );
    row("SubjectAccessReview latency, mean".into(), ms(f.sar_mean_ms), "", None);
    row(
        "CPU per create, kube-apiserver + etcd: without / through the webhook (medians)".into(),
        format!("{} / {}", ms(f.control_plane_cpu_ms_direct), ms(f.control_plane_cpu_ms_webhook)),
        "",
        None,
    );
    row("CPU per create, the webhook (median)".into(), ms(f.webhook_cpu_ms), "", None);
    row("webhook peak RSS".into(), f.webhook_peak_rss_mib.map_or("-".into(), |v| format!("{v:.1} MiB")), "", None);
    row(
        "webhook log lines at WARN / ERROR".into(),
        format!("{} / {}", f.webhook_log_warnings, f.webhook_log_errors),
        "",
        None,
    );
    row("whole run".into(), secs(f.total_secs), "", None);

    let title = format!(
        "keyward webhook bench: {n} ApiKeys with scopes [{SCOPE}] by {USER} (grant {GRANTED}), {concurrency} in \
         flight, {rounds} rounds through the webhook and {rounds} without, taking turns; release binary"
    );
    common::print_figures(&title, &rows);
    if !f.rounds.is_empty() {
        println!("\nrounds, in order:");
        for r in &f.rounds {
            println!(
                "  {} {:<7} {:>6.2} s  p50 {:>6.1} ms  p99 {:>6.1} ms  max {:>7.1} ms  {} SubjectAccessReviews  \
                 CPU per create {}",
                r.round,
                r.route.name(),
                r.secs,
                r.latency.p50_ms,
                r.latency.p99_ms,
                r.latency.max_ms,
                r.sars,
                r.cpu_ms_per_create
                    .iter()
                    .map(|(name, ms)| format!("{name} {ms:.2} ms"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    if !f.webhook_log_samples.is_empty() {
        println!("\nwebhook warnings and errors (first {}):", f.webhook_log_samples.len());
        for line in &f.webhook_log_samples {
            println!("  {line}");
        }
    }
    common::print_ending(&f.warnings, f.error.as_deref());
}
