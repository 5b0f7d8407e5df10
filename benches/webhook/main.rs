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
//! are `KEYWARD_BENCH_WEBHOOK_ROUNDS` (3) rounds through the webhook, as many through a no-op
//! webhook and as many in namespaces neither selects, taking turns (each round starts with the
//! next route), after an unmeasured warm-up of each. The no-op webhook is the floor: a minimal
//! AdmissionReview server run by the bench itself (on `keyward::http::serve_tls`, threads of its
//! own), registered the same way (`keyward.io/bench-webhook=noop`), that allows every review
//! with its uid and nothing else. Figures, printed as a table at the end and written to
//! `target/bench/webhook.json`:
//!
//! 1. The time of a round through the webhook against one without it, medians of the rounds,
//!    and their ratio (goal at most 1.3); beside it, no-op webhook / without (what any webhook
//!    costs the API server) and webhook / no-op webhook (the part of the cost that is ours).
//! 2. The admission time added per create: p50 and p99 of the creates through the webhook minus
//!    those of the creates without it (all rounds pooled; goal p99 under 10 ms), and how much of
//!    it the no-op webhook adds already. The webhook has
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
//! `KUBECONFIG`; left out against another API server) on each route, and of the webhook, of the
//! no-op webhook's threads and of the bench's own client (every round, in the JSON), to tell
//! where the time goes on a small machine; the webhook's peak RSS, WARN and ERROR lines in its log.
//! `KEYWARD_BENCH_LOG` (`info`) is the webhook's `RUST_LOG`; `KEYWARD_BENCH_KEEP_NAMESPACES=1`
//! leaves the namespaces for inspection.
//!
//! The API server's counters are global: nothing else may write on it during a run. The
//! namespaces carry the label `keyward.io/bench=webhook`; leftovers of an interrupted run (and
//! its webhook configurations, the no-op's too, and ClusterRole) are deleted at the start, and the bench's own at
//! the end, the configurations first (without waiting for the namespaces: `make bench` throws
//! the control plane away afterwards).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::rbac::v1::ClusterRole;
use keyward::api::{ANNOTATION_CREATED_BY, ApiKey, ApiKeySpec, KeyPolicy};
use keyward::webhook::grant::covering_names;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde::Serialize;

#[path = "../common/mod.rs"]
mod common;
mod figures;
mod metrics;
mod noop;
mod setup;

use common::process::{Process, control_plane_pids, cpu_secs};
use common::{Error, MANAGER, Outcome, Progress, Result, env_number, install_crds, median, release_binary};
use figures::{Figures, Latency, RoundFigures};
use metrics::{ApiServerMetrics, Histogram, WebhookMetrics};
use noop::NoopWebhook;
use setup::{client_of, delete_if_there, register};

/// The value of the label `common::BENCH_LABEL` on this bench's namespaces.
const BENCH_LABEL_VALUE: &str = "webhook";
/// The label the webhook configurations select namespaces by, and its value for keyward's
/// webhook and for the no-op one.
const ADMITTED_LABEL: &str = "keyward.io/bench-webhook";
const ADMITTED_VALUE: &str = "admitted";
const NOOP_VALUE: &str = "noop";
/// Name of the Validating and Mutating configurations and of the ClusterRole; and of the no-op
/// webhook's configurations.
const CONFIGURATION: &str = "keyward-bench-webhook";
const NOOP_CONFIGURATION: &str = "keyward-bench-noop-webhook";
/// The no-op webhook's hooks are `mutate.noop.keyward.io` and `validate.noop.keyward.io`.
const NOOP_HOOKS: &str = "noop.keyward.io";
/// The control plane's token-file user who writes the keys, and its kubeconfig beside
/// `KUBECONFIG`.
const USER: &str = "keyward-user-1";
const USER_KUBECONFIG: &str = "user-1.kubeconfig";
/// The scope every key gets, and the one name the user may grant.
const SCOPE: &str = "orders.read";
const GRANTED: &str = "orders.>";
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
    /// Rounds through the webhook, and as many through the no-op webhook and without.
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

/// Through the webhook, through the no-op webhook, or in a namespace neither selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
enum Route {
    Webhook,
    Noop,
    Direct,
}

impl Route {
    const ALL: [Route; 3] = [Route::Webhook, Route::Noop, Route::Direct];

    fn name(self) -> &'static str {
        match self {
            Route::Webhook => "webhook",
            Route::Noop => "noop",
            Route::Direct => "direct",
        }
    }

    /// The value of `ADMITTED_LABEL` that sends a namespace's writes this way.
    fn admitted(self) -> Option<&'static str> {
        match self {
            Route::Webhook => Some(ADMITTED_VALUE),
            Route::Noop => Some(NOOP_VALUE),
            Route::Direct => None,
        }
    }
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
    webhook: Option<Process>,
    noop: Option<NoopWebhook>,
    /// The local control plane's processes whose CPU time is measured, by name.
    control_plane: BTreeMap<String, u32>,
    /// What the bench made, to remove at the end.
    namespaces: Vec<String>,
    registered: bool,
    noop_registered: bool,
    role: bool,
    /// Collected over the rounds: the creates' times by route, the seconds the webhook's
    /// SubjectAccessReviews took, the API server's calls to each webhook (keyward's and the
    /// no-op's).
    latencies: BTreeMap<Route, Vec<f64>>,
    sar_secs: f64,
    webhook_calls: BTreeMap<String, Histogram>,
    figures: Figures,
    progress: Progress,
}

impl common::Bench for Bench {
    type Figures = Figures;
    const NAME: &'static str = "webhook";

    async fn run(&mut self) -> Result<()> {
        self.progress.say(&format!("settings: {:?}", self.settings));
        self.progress.say(&format!("binary: {}", self.keyward.display()));
        install_crds(&self.client, MANAGER).await?;
        self.remove_leftovers().await?;
        self.start_webhook().await?;
        self.create_role().await?;
        self.register().await?;
        let noop = NoopWebhook::start(self.certs.path())?;
        self.progress.say(&format!("the no-op webhook serves on {}", noop.addr));
        let noop_addr = noop.addr;
        self.noop = Some(noop);
        self.noop_registered = true;
        register(
            &self.client,
            NOOP_CONFIGURATION,
            NOOP_HOOKS,
            noop_addr,
            &self.certs.path().join("ca.crt"),
            NOOP_VALUE,
        )
        .await?;

        let suffix = common::random_suffix();
        self.uncached_create(&format!("kwbench-webhook-{suffix}-cold")).await?;
        for route in Route::ALL {
            let ns = format!("kwbench-webhook-{suffix}-warm-{}", route.name());
            self.prepare(&ns, route).await?;
            self.progress.say(&format!("warm-up: {WARM_UP_KEYS} creates in {ns}"));
            self.burst(&ns, WARM_UP_KEYS).await?;
        }

        for round in 1..=self.settings.rounds {
            // Each round starts with the next route, so that none always follows the same.
            let order = (0..Route::ALL.len()).map(|i| Route::ALL[(i + round - 1) % Route::ALL.len()]);
            for route in order {
                let ns = format!("kwbench-webhook-{suffix}-{round}-{}", route.name());
                self.round(round, &ns, route).await?;
            }
        }
        self.summarize();
        self.webhook()?.check_alive()?;
        Ok(())
    }

    /// Removes the configurations first (they fail closed once a webhook is gone), stops the
    /// webhooks (counting the log's warnings of keyward's), then removes the ClusterRole and the
    /// namespaces.
    async fn cleanup(&mut self) {
        for (registered, name) in
            [(&mut self.registered, CONFIGURATION), (&mut self.noop_registered, NOOP_CONFIGURATION)]
        {
            if std::mem::take(registered) {
                self.progress.say(&format!("cleanup: removing the webhook configurations {name}"));
                delete_if_there::<ValidatingWebhookConfiguration>(&self.client, name).await;
                delete_if_there::<MutatingWebhookConfiguration>(&self.client, name).await;
            }
        }
        if let Some(noop) = self.noop.take() {
            noop.stop();
        }
        if let Some(webhook) = self.webhook.take() {
            self.figures.webhook_peak_rss_mib = webhook.peak_rss_mib().ok();
            let levels = webhook.log_levels();
            self.figures.webhook_log_warnings = levels.warnings;
            self.figures.webhook_log_errors = levels.errors;
            self.figures.webhook_log_samples = levels.samples;
            webhook.stop().await;
        }
        if self.role {
            delete_if_there::<ClusterRole>(&self.client, CONFIGURATION).await;
            self.role = false;
        }
        let namespaces = std::mem::take(&mut self.namespaces);
        common::delete_namespaces_now(&self.client, &namespaces, &self.progress).await;
    }

    fn outcome(&mut self) -> &mut Outcome {
        &mut self.figures.outcome
    }

    fn figures(&self) -> &Figures {
        &self.figures
    }

    fn print_table(figures: &Figures) {
        figures::print_table(figures)
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
            noop: None,
            control_plane: control_plane_pids(&kubeconfig),
            namespaces: Vec::new(),
            registered: false,
            noop_registered: false,
            role: false,
            latencies: BTreeMap::new(),
            sar_secs: 0.0,
            webhook_calls: BTreeMap::new(),
            progress: Progress::start(),
        })
    }

    fn webhook(&self) -> Result<&Process> {
        self.webhook.as_ref().ok_or_else(|| "no webhook running".into())
    }

    fn noop(&self) -> Result<&NoopWebhook> {
        self.noop.as_ref().ok_or_else(|| "no no-op webhook running".into())
    }

    /// Where the webhook listens.
    fn webhook_addr(&self) -> Result<SocketAddr> {
        self.webhook()?.addr().ok_or_else(|| "the webhook has not said where it listens".into())
    }

    /// The webhook's own counters, from its `/metrics`.
    async fn webhook_metrics(&self) -> Result<WebhookMetrics> {
        let webhook = self.webhook()?;
        WebhookMetrics::parse(&webhook.metrics().await?).map_err(|e| webhook.explain(e))
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
        let before = self.webhook_metrics().await?;
        self.burst(ns, 1).await?;
        let after = self.webhook_metrics().await?;
        let sars = after.sars - before.sars;
        self.progress.say(&format!(
            "one create with nothing cached: {sars} SubjectAccessReviews (covering names until {GRANTED}: {computed})"
        ));
        self.figures.uncached_sars_measured = Some(sars);
        Ok(())
    }

    /// One timed round of `path` in the fresh namespace `ns`.
    async fn round(&mut self, round: usize, ns: &str, route: Route) -> Result<()> {
        let n = self.settings.keys;
        self.prepare(ns, route).await?;
        let webhook_before = self.webhook_metrics().await?;
        let noop_before = self.noop()?.reviews();
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
        let webhook_after = self.webhook_metrics().await?;
        let noop_reviews = self.noop()?.reviews() - noop_before;
        let apiserver_after = ApiServerMetrics::scrape(&self.client).await?;

        let admissions = webhook_after.admissions - webhook_before.admissions;
        let sars = webhook_after.sars - webhook_before.sars;
        let sar_posts = apiserver_after.sar_posts - apiserver_before.sar_posts;
        // Each webhook answers a mutate and a validate per create on its route, and nothing on
        // the others; retries that reached it are answered again: at least the expected number.
        for (webhook, answered, on) in
            [("the webhook", admissions, Route::Webhook), ("the no-op webhook", noop_reviews, Route::Noop)]
        {
            let expected = if route == on { 2 * n as u64 } else { 0 };
            if answered < expected || (expected == 0 && answered > 0) {
                return Err(format!(
                    "round {round} {}: {webhook} answered {answered} admissions for {n} creates, not {expected}",
                    route.name()
                )
                .into());
            }
        }
        if route == Route::Webhook {
            self.check_created_by(ns, n - 1).await?;
            self.sar_secs += webhook_after.sar_sum_secs - webhook_before.sar_sum_secs;
        }
        if route != Route::Direct {
            for (name, after) in &apiserver_after.webhook_calls {
                let round = match apiserver_before.webhook_calls.get(name) {
                    Some(before) => after.since(before),
                    None => after.clone(),
                };
                self.webhook_calls.entry(name.clone()).or_default().add(&round);
            }
        }
        let latency = Latency::of(&burst.ms);
        self.progress.say(&format!(
            "round {round} {}: {n} creates in {secs:.2} s, p50 {:.1} ms, p99 {:.1} ms, {sars} SubjectAccessReviews \
             ({sar_posts} POSTs counted by the API server), {admissions} admissions, {noop_reviews} no-op reviews",
            route.name(),
            latency.p50_ms,
            latency.p99_ms,
        ));
        if burst.retried > 0 {
            self.progress.warn(
                &mut self.figures.outcome,
                format!(
                    "round {round} {}: {} creates were tried again (the first error: {})",
                    route.name(),
                    burst.retried,
                    burst.first_error.as_deref().unwrap_or("-")
                ),
            );
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
            noop_reviews,
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

    /// CPU seconds used so far by the control plane's processes, the webhook, the no-op
    /// webhook's threads and the rest of the bench, by name.
    fn cpu_secs(&self) -> BTreeMap<String, f64> {
        let webhook = self.webhook.as_ref().map(|w| ("keyward-webhook".to_string(), w.pid));
        let mut secs: BTreeMap<String, f64> = self
            .control_plane
            .iter()
            .map(|(name, pid)| (name.clone(), *pid))
            .chain(webhook)
            .filter_map(|(name, pid)| Some((name, cpu_secs(pid)?)))
            .collect();
        // The bench's own client too: with it, the processes that share the machine's cores.
        let noop = self.noop.as_ref().map_or(0.0, NoopWebhook::cpu_secs);
        if let Some(bench) = cpu_secs(std::process::id()) {
            secs.insert("bench-client".into(), bench - noop);
        }
        secs.insert("noop-webhook".into(), noop);
        secs
    }

    fn summarize(&mut self) {
        let secs_of = |route: Route| {
            let secs: Vec<f64> = self.figures.rounds.iter().filter(|r| r.route == route).map(|r| r.secs).collect();
            median(&secs)
        };
        let (webhook_secs, noop_secs, direct_secs) =
            (secs_of(Route::Webhook), secs_of(Route::Noop), secs_of(Route::Direct));
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
        let cpu = [
            cpu_of(Route::Direct, &control_plane),
            cpu_of(Route::Noop, &control_plane),
            cpu_of(Route::Webhook, &control_plane),
            cpu_of(Route::Webhook, &["keyward-webhook"]),
            cpu_of(Route::Noop, &["noop-webhook"]),
        ];
        let f = &mut self.figures;
        [
            f.control_plane_cpu_ms_direct,
            f.control_plane_cpu_ms_noop,
            f.control_plane_cpu_ms_webhook,
            f.webhook_cpu_ms,
            f.noop_webhook_cpu_ms,
        ] = cpu;
        (f.webhook_secs, f.noop_secs, f.direct_secs) = (webhook_secs, noop_secs, direct_secs);
        let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
        f.ratio = ratio(webhook_secs, direct_secs);
        f.noop_ratio = ratio(noop_secs, direct_secs);
        f.webhook_over_noop_ratio = ratio(webhook_secs, noop_secs);
        let latency = |route| self.latencies.get(&route).map(|ms| Latency::of(ms));
        (f.webhook_latency, f.noop_latency, f.direct_latency) =
            (latency(Route::Webhook), latency(Route::Noop), latency(Route::Direct));
        let added = |a: &Option<Latency>, b: &Option<Latency>| match (a, b) {
            (Some(a), Some(b)) => (Some(a.p50_ms - b.p50_ms), Some(a.p99_ms - b.p99_ms)),
            _ => (None, None),
        };
        (f.added_p50_ms, f.added_p99_ms) = added(&f.webhook_latency, &f.direct_latency);
        (f.noop_added_p50_ms, f.noop_added_p99_ms) = added(&f.noop_latency, &f.direct_latency);
        (f.webhook_over_noop_p50_ms, f.webhook_over_noop_p99_ms) = added(&f.webhook_latency, &f.noop_latency);
        let creates =
            |route: Route| -> usize { f.rounds.iter().filter(|r| r.route == route).map(|r| r.latency.creates).sum() };
        let (through, through_noop) = (creates(Route::Webhook), creates(Route::Noop));
        let through_webhook: Vec<&RoundFigures> = f.rounds.iter().filter(|r| r.route == Route::Webhook).collect();
        let sars: u64 = through_webhook.iter().map(|r| r.sars).sum();
        f.sars = Some(sars);
        f.apiserver_sar_posts = Some(through_webhook.iter().map(|r| r.apiserver_sar_posts).sum());
        f.apiserver_webhook_calls =
            self.webhook_calls.iter().filter(|(_, h)| h.count() > 0).map(|(name, h)| h.calls(name)).collect();
        // The API server's time in each webhook's calls, per create through that webhook.
        let call_ms = |noop: bool, creates: usize| {
            let calls: Vec<&Histogram> = self
                .webhook_calls
                .iter()
                .filter(|(name, _)| name.ends_with(NOOP_HOOKS) == noop)
                .map(|(_, h)| h)
                .collect();
            (creates > 0 && !calls.is_empty())
                .then(|| calls.iter().map(|h| h.sum).sum::<f64>() * 1000.0 / creates as f64)
        };
        f.apiserver_webhook_ms_per_create = call_ms(false, through);
        f.apiserver_noop_webhook_ms_per_create = call_ms(true, through_noop);
        if through > 0 {
            f.sars_per_create = Some(sars as f64 / through as f64);
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
