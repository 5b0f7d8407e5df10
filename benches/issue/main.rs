//! `cargo bench --bench issue`: how `keyward controller` does when many ApiKeys arrive at once,
//! measured on the real API server named by `KUBECONFIG`.
//!
//! Figures, printed as a table at the end and written to `target/bench/issue.json`:
//!
//! 1. Time to Active for `KEYWARD_BENCH_KEYS` (1,000) ApiKeys applied at once, against a
//!    baseline from the same run: a minimal client that creates each key, its Secret and its
//!    status itself, with as many requests in flight as the controller's `--concurrency`. Both
//!    runs are timed the same way, from the first ApiKey create until a watch has seen every key
//!    Active, so the ratio says how far the controller is from the floor the API server sets.
//! 2. API writes per key, from the API server's own `apiserver_request_total` counter.
//! 3. Writes during `KEYWARD_BENCH_REST_SECS` (60) seconds at rest.
//! 4. The controller's peak RSS (VmHWM) with 1,000 keys and with `KEYWARD_BENCH_LARGE` (10,000)
//!    keys, the latter in a fresh namespace with a fresh controller, and the time to Active there.
//! 5. Expiry latency: how long after `status.expiresAt` the Secrets of `KEYWARD_BENCH_EXPIRING`
//!    (5) keys with `expiresAfter: 5s` are seen deleted.
//! 6. Figures 1 to 3 for `KEYWARD_BENCH_CREDENTIALS` (200) Credentials of
//!    `KEYWARD_BENCH_CREDENTIAL_TOKENS` (5) tokens each: time until a watch sees every one Active
//!    with all its tokens (for its current generation), against a baseline that creates the
//!    Credential, its Secrets and one status itself; API writes per token; writes at rest with
//!    the Credentials present. The controller's own `keyward_api_writes_total` is read beside the
//!    API server's counter, as a check of both.
//!
//! And, to explain them: reads and reconciles per key, the breakdown of the writes by request,
//! and the requests of a fresh controller restarted over the settled keys (the at-rest rule
//! says it has nothing to write either).
//!
//! Figure 1 is measured `KEYWARD_BENCH_ROUNDS` (3) times, baseline and controller taking turns,
//! each in a fresh namespace (and with a fresh controller); the medians are compared.
//!
//! Other settings: `KEYWARD_BENCH_CONCURRENCY` (32) is the controller's `--concurrency` and the
//! bench's own requests in flight; `KEYWARD_BENCH_LOG` (`info`) is the controller's `RUST_LOG`
//! (its logs go to `target/bench/issue-*.log`); `KEYWARD_BENCH_KEEP_NAMESPACES=1` leaves the
//! namespaces for inspection. `KEYWARD_BENCH_LARGE=0`, `KEYWARD_BENCH_EXPIRING=0` or
//! `KEYWARD_BENCH_CREDENTIALS=0` skip those parts.
//!
//! The request counter is global to the API server: nothing else may use it during a run.
//! Every namespace the bench makes carries the label `keyward.io/bench=issue`; they are deleted
//! (and waited for) at the end, and leftovers of an interrupted run are removed at the start, so
//! that their garbage collection never lands inside a measure.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keyward::api::{
    ApiKey, ApiKeySpec, CONDITION_READY, Credential, CredentialSpec, CredentialToken, Phase, SecretTemplate,
    credential::MAX_TOKENS, reason,
};
use keyward::controller::Reconciled;
use keyward::controller::secret::{Identity, TokenSecret};
use keyward::token::Token;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::NamespaceResourceScope;
use kube::runtime::wait::await_condition;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

#[path = "../common/mod.rs"]
mod common;

use common::metrics::{samples, scrape_apiserver};
use common::process::Process;
use common::report::{self, show};
use common::{Error, MANAGER, Outcome, Progress, Result, Table, env_number, install_crds, median};

/// The value of the label `common::BENCH_LABEL` on this bench's namespaces.
const BENCH_LABEL_VALUE: &str = "issue";
/// Lifetime of the keys of the expiry probe, and the label their Secrets get (through
/// `secretTemplate`) so that one watch sees only them.
const EXPIRING_AFTER: &str = "5s";
const EXPIRING_LABEL: &str = "keyward-bench";
const EXPIRING_LABEL_VALUE: &str = "expiry";
/// Default expiry of the operator (`--default-expiry`), mirrored by the baseline's status.
const DEFAULT_EXPIRY: SignedDuration = SignedDuration::from_hours(90 * 24);
/// How long after a CRD is created its discovery by the garbage collector can still come.
const CRD_DISCOVERY: Duration = Duration::from_secs(40);
/// Verbs of `apiserver_request_total` that change something. `APPLY` is a server-side apply
/// PATCH, which the API server counts under its own verb.
const MUTATING: [&str; 6] = ["POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"];

/// What to run, from `KEYWARD_BENCH_*` variables.
#[derive(Clone, Debug, Serialize)]
struct Settings {
    keys: usize,
    rounds: usize,
    large: usize,
    concurrency: usize,
    rest_secs: u64,
    expiring: usize,
    credentials: usize,
    credential_tokens: usize,
}

impl Settings {
    fn from_env() -> Result<Self> {
        Ok(Self {
            keys: env_number("KEYWARD_BENCH_KEYS", 1000)?,
            rounds: env_number("KEYWARD_BENCH_ROUNDS", 3)?.max(1),
            large: env_number("KEYWARD_BENCH_LARGE", 10_000)?,
            concurrency: env_number("KEYWARD_BENCH_CONCURRENCY", 32)?.max(1),
            rest_secs: env_number("KEYWARD_BENCH_REST_SECS", 60)?,
            expiring: env_number("KEYWARD_BENCH_EXPIRING", 5)?,
            credentials: env_number("KEYWARD_BENCH_CREDENTIALS", 200)?,
            credential_tokens: match env_number("KEYWARD_BENCH_CREDENTIAL_TOKENS", 5)? {
                tokens @ 1..=MAX_TOKENS => tokens,
                tokens => return Err(format!("KEYWARD_BENCH_CREDENTIAL_TOKENS={tokens}: 1 to {MAX_TOKENS}").into()),
            },
        })
    }
}

/// Every figure the bench measures; `None` for what it did not get to.
#[derive(Debug, Default, Serialize)]
struct Figures {
    settings: Option<Settings>,
    /// Seconds from the first create until every key was seen Active: the median over the
    /// rounds, and each round.
    baseline_secs: Option<f64>,
    controller_secs: Option<f64>,
    baseline_rounds_secs: Vec<f64>,
    controller_rounds_secs: Vec<f64>,
    /// controller_secs / baseline_secs; goal <= 1.3.
    ratio: Option<f64>,
    /// Mutating requests on secrets and apikeys (the bench's own ApiKey creates excluded),
    /// per key, over all rounds; goal 2.
    controller_writes_per_key: Option<f64>,
    /// Mutating requests on events during the controller runs (all rounds together).
    controller_event_writes: Option<u64>,
    /// GET requests on secrets, apikeys and events per key (the bench makes none). LISTs are
    /// left out: the API server also served apikeys LISTs to someone else (~20 a second while
    /// keys were being written, in the baseline too); the request breakdown shows them.
    controller_gets_per_key: Option<f64>,
    /// Reconciles per key, from the controller's own `keyward_reconciles` counter.
    controller_reconciles_per_key: Option<f64>,
    /// The same count for the baseline: a check of the method, which must say 2.
    baseline_writes_per_key: Option<f64>,
    /// `resource[/subresource] VERB code` -> requests (watches aside), for the controller runs
    /// (all rounds).
    controller_requests: BTreeMap<String, u64>,
    /// Mutating requests on secrets, apikeys and events during the rest window; goal 0.
    rest_writes: Option<u64>,
    /// Reads (GET, LIST) on those resources during the rest window, for information.
    rest_reads: Option<u64>,
    rest_requests: BTreeMap<String, u64>,
    /// Writes (secrets, apikeys, events) and reads made by a fresh controller started over the
    /// settled keys of the controller run; the same rule as at rest says 0 writes.
    restart_writes: Option<u64>,
    restart_reads: Option<u64>,
    restart_requests: BTreeMap<String, u64>,
    peak_rss_mib: Option<f64>,
    /// VmRSS once idle, of the last controller of the rounds.
    rss_idle_mib: Option<f64>,
    large_secs: Option<f64>,
    large_writes_per_key: Option<f64>,
    /// Goal: under 64 MiB at 10,000 keys.
    large_peak_rss_mib: Option<f64>,
    large_rss_idle_mib: Option<f64>,
    /// Milliseconds from `status.expiresAt` to the Secret's DELETE watch event, per key.
    expiry_latency_ms: Vec<f64>,
    expiry_latency_max_ms: Option<f64>,
    expiry_latency_mean_ms: Option<f64>,
    /// Figure 6, when `KEYWARD_BENCH_CREDENTIALS` is not 0.
    credentials: Option<CredentialFigures>,
    /// Warnings and errors in the controllers' logs.
    controller_log_warnings: u64,
    controller_log_errors: u64,
    /// The first few of those lines.
    controller_log_samples: Vec<String>,
    /// With the warnings about measure windows that someone else's requests polluted.
    #[serde(flatten)]
    outcome: Outcome,
}

/// The Credential part (figure 6): the figures 1 to 3 for Credentials of several tokens.
#[derive(Debug, Default, Serialize)]
struct CredentialFigures {
    /// Seconds from the first create until every Credential was seen Active with all its
    /// tokens: the median over the rounds, and each round.
    baseline_secs: Option<f64>,
    controller_secs: Option<f64>,
    baseline_rounds_secs: Vec<f64>,
    controller_rounds_secs: Vec<f64>,
    /// controller_secs / baseline_secs.
    ratio: Option<f64>,
    /// Mutating requests on secrets and credentials (the bench's own Credential creates
    /// excluded) per token, over all rounds; the floor is one Secret per token and one status
    /// per Credential, which the baseline's figure checks.
    controller_writes_per_token: Option<f64>,
    baseline_writes_per_token: Option<f64>,
    /// Mutating requests on events during the controller runs (all rounds together).
    controller_event_writes: Option<u64>,
    /// The same writes (secrets, credentials, events) as the API server counted them and as the
    /// controllers' own `keyward_api_writes_total` did, all rounds; the two should agree.
    apiserver_writes: Option<u64>,
    controller_counted_writes: Option<u64>,
    /// `resource verb` -> writes, from the controllers' own counter.
    controller_counted_breakdown: BTreeMap<String, u64>,
    controller_gets_per_token: Option<f64>,
    controller_reconciles_per_credential: Option<f64>,
    /// `resource[/subresource] VERB code` -> requests (watches aside), controller runs.
    controller_requests: BTreeMap<String, u64>,
    /// Mutating requests on secrets, apikeys, credentials and events during the rest window,
    /// the Credentials' controller running; goal 0. Its own counter over the same window.
    rest_writes: Option<u64>,
    rest_counted_writes: Option<u64>,
    rest_reads: Option<u64>,
    rest_requests: BTreeMap<String, u64>,
}

#[tokio::main]
async fn main() -> ExitCode {
    common::main(Bench::new(common::out_dir())).await
}

struct Bench {
    client: Client,
    settings: Settings,
    out_dir: PathBuf,
    /// Random suffix shared by this run's namespaces.
    suffix: String,
    namespaces: Vec<String>,
    figures: Figures,
    progress: Progress,
}

impl common::Bench for Bench {
    type Figures = Figures;
    const NAME: &'static str = "issue";

    async fn run(&mut self) -> Result<()> {
        self.progress(&format!("settings: {:?}", self.settings));
        let crd_age = install_crds(&self.client, MANAGER).await?;
        // On a fresh control plane, apikeys were once LISTed from outside the bench at ~20 a
        // second (kube-controller-manager's client rate) for two minutes; most likely its garbage
        // collector taking up the new resource, which it finds by discovery every 30 s. Let it
        // find the CRD before waiting for quiet.
        if let Some(wait) = CRD_DISCOVERY.checked_sub(crd_age) {
            self.progress(&format!("a CRD is new: giving the garbage collector {wait:.0?} to discover it"));
            tokio::time::sleep(wait).await;
        }
        self.remove_leftovers().await?;
        // The counter is global: wait out whatever else is still at work on these resources
        // (tests, the garbage collector after an earlier run) before measuring anything.
        self.progress("waiting until nothing else uses secrets, apikeys or events");
        if wait_quiet(&self.client, Duration::from_secs(900)).await?.is_none() {
            return Err("secrets, apikeys or events kept being used for 15 minutes: this bench needs \
                        the API server to itself"
                .into());
        }
        let rounds = self.settings.rounds;
        let n = self.settings.keys;
        let mut baseline = Burst::default();
        let mut through = Burst::default();
        let mut kept = None;
        // Baseline and controller take turns, so that a slow spell of the machine (or of etcd's
        // disk) hits both alike; their medians are compared.
        for round in 1..=rounds {
            baseline.secs.push(self.baseline(round, &mut baseline.spent).await?);
            let controller = self.controller_run(round, &mut through).await?;
            if round < rounds {
                self.count_log_lines(&controller);
                controller.stop().await;
            } else {
                kept = Some(controller);
            }
        }
        let keys = (n * rounds) as f64;
        let f = &mut self.figures;
        (f.baseline_secs, f.controller_secs, f.ratio) = compare(&baseline.secs, &through.secs);
        f.baseline_rounds_secs = baseline.secs;
        f.controller_rounds_secs = through.secs;
        f.baseline_writes_per_key = Some(baseline.spent.writes(is_key_write) as f64 / keys);
        f.controller_writes_per_key = Some(through.spent.writes(is_key_write) as f64 / keys);
        f.controller_event_writes = Some(through.spent.writes(is_event));
        f.controller_gets_per_key = Some(through.spent.count(|r| is_watched(r) && r.verb == "GET") as f64 / keys);
        f.controller_requests = through.spent.breakdown(|r| is_watched(r) && r.verb != "WATCH");
        f.controller_reconciles_per_key = through.reconciles.map(|r| r as f64 / keys);
        let Some(controller) = kept else {
            return Err("KEYWARD_BENCH_ROUNDS must be at least 1".into());
        };
        self.rest(&controller).await?;
        self.expiry(&controller).await?;
        self.count_log_lines(&controller);
        let namespace = controller.namespace.clone();
        controller.stop().await;
        self.restart(&namespace).await?;
        if self.settings.credentials > 0 {
            self.credentials().await?;
        }
        if self.settings.large > 0 {
            self.large_run().await?;
        }
        Ok(())
    }

    async fn cleanup(&mut self) {
        if self.namespaces.is_empty() {
            return;
        }
        if common::keep_namespaces() {
            self.progress(&format!("keeping {:?} for inspection; the next run deletes them first", self.namespaces));
            return;
        }
        self.progress(&format!("cleanup: deleting {:?} (waiting for them to be gone)", self.namespaces));
        delete_namespaces(&self.client, &self.namespaces).await;
        self.namespaces.clear();
    }

    fn outcome(&mut self) -> &mut Outcome {
        &mut self.figures.outcome
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
        if std::env::var_os("KUBECONFIG").is_none() {
            return Err("KUBECONFIG must name the API server to measure (see `make bench`)".into());
        }
        let settings = Settings::from_env()?;
        let client = Client::try_default().await.map_err(|e| format!("a client from KUBECONFIG: {e}"))?;
        std::fs::create_dir_all(&out_dir).map_err(|e| format!("create {}: {e}", out_dir.display()))?;
        let suffix = common::random_suffix();
        Ok(Self {
            client,
            figures: Figures { settings: Some(settings.clone()), ..Figures::default() },
            settings,
            out_dir,
            suffix,
            namespaces: Vec::new(),
            progress: Progress::start(),
        })
    }

    fn active_progress(&self, run: &str, plural: &str, seen: usize, of: usize) {
        self.progress(&format!("{run}: {seen} of {of} {plural} Active"));
    }

    fn progress(&self, message: &str) {
        self.progress.say(message);
    }

    /// Figure 1, the floor: per key, create the ApiKey, create a Secret like the operator's and
    /// apply a status like the controller's, with `concurrency` keys in flight. No controller
    /// watches this namespace. Returns the seconds until every key was seen Active.
    async fn baseline(&mut self, round: usize, spent: &mut Requests) -> Result<f64> {
        let issue = |keys, secrets, i| issue_directly(keys, secrets, key_name(i));
        let (secs, window) =
            self.baseline_burst(&format!("baseline-{round}"), self.settings.keys, issue, key_active).await?;
        spent.add(&window);
        Ok(secs)
    }

    /// A baseline burst: `n` objects issued by `issue` (the object, its Secrets, its status),
    /// `concurrency` of them in flight, in a fresh namespace no controller watches. Returns the
    /// seconds from the first create until `active` held for all, and the requests meanwhile.
    async fn baseline_burst<K: BenchKey, Fut>(
        &mut self,
        run: &str,
        n: usize,
        issue: impl Fn(Api<K>, Api<Secret>, usize) -> Fut,
        active: impl Fn(&K) -> bool + Send + 'static,
    ) -> Result<(f64, Requests)>
    where
        Fut: Future<Output = Result<()>>,
    {
        let ns = self.namespace(run).await?;
        let objects: Api<K> = Api::namespaced(self.client.clone(), &ns);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        let plural = K::plural(&()).into_owned();
        let watch = ActiveWatch::start(objects.clone(), n, active).await?;
        let before = Requests::scrape(&self.client).await?;
        self.progress(&format!("{run}: issuing {n} {plural} directly in {ns}"));
        let started = Instant::now();
        futures::stream::iter(0..n)
            .map(|i| issue(objects.clone(), secrets.clone(), i))
            .buffer_unordered(self.settings.concurrency)
            .try_collect::<()>()
            .await?;
        let done = watch.wait(active_deadline(n), |seen, of| self.active_progress(run, &plural, seen, of)).await?;
        let secs = done.duration_since(started).as_secs_f64();
        // Nothing runs after the last status write: the counter can be read at once.
        let after = Requests::scrape(&self.client).await?;
        let window = after.since(&before);
        self.check_foreign(run, &window, &[(&plural, n)]);
        self.progress(&format!("{run}: {n} {plural} Active in {secs:.2} s"));
        Ok((secs, window))
    }

    /// Figures 1, 2 and 4 (at 1,000 keys): the same keys through a fresh controller.
    async fn controller_run(&mut self, round: usize, burst: &mut Burst) -> Result<Controller> {
        let new_key = |i| ApiKey::new(&key_name(i), ApiKeySpec::default());
        let (secs, window, controller) =
            self.controller_burst(&format!("controller-{round}"), self.settings.keys, new_key, key_active).await?;
        burst.secs.push(secs);
        burst.spent.add(&window);
        let rss = controller.peak_rss_mib()?;
        self.figures.peak_rss_mib = Some(self.figures.peak_rss_mib.map_or(rss, |peak| peak.max(rss)));
        self.figures.rss_idle_mib = Some(controller.rss_mib()?);
        self.count_reconciles(&controller, burst).await;
        Ok(controller)
    }

    /// A controller burst: `n` objects (`make(i)`) created at once, `concurrency` in flight, in
    /// a fresh namespace watched by a fresh controller. Returns the seconds from the first
    /// create until `active` held for all, the requests from then until the controller went
    /// idle, and the controller, still running.
    async fn controller_burst<K: BenchKey>(
        &mut self,
        run: &str,
        n: usize,
        make: impl Fn(usize) -> K,
        active: impl Fn(&K) -> bool + Send + 'static,
    ) -> Result<(f64, Requests, Controller)> {
        let ns = self.namespace(run).await?;
        let controller = self.start_controller(&ns, run).await?;
        let objects: Api<K> = Api::namespaced(self.client.clone(), &ns);
        let plural = K::plural(&()).into_owned();
        let watch = ActiveWatch::start(objects.clone(), n, active).await?;
        let before = Requests::scrape(&self.client).await?;
        self.progress(&format!("{run}: creating {n} {plural} in {ns}"));
        let started = Instant::now();
        create_all(&objects, (0..n).map(make), self.settings.concurrency).await?;
        let done = match watch.wait(active_deadline(n), |seen, of| self.active_progress(run, &plural, seen, of)).await {
            Ok(done) => done,
            Err(error) => return Err(controller.explain(error)),
        };
        let secs = done.duration_since(started).as_secs_f64();
        self.progress(&format!("{run}: {n} {plural} Active in {secs:.2} s; waiting for it to go idle"));
        let after = wait_idle(&self.client, &controller).await?;
        let window = after.since(&before);
        self.check_foreign(run, &window, &[(&plural, n)]);
        Ok((secs, window, controller))
    }

    /// Diagnostic only: the controller's own count says how often each object was looked at.
    async fn count_reconciles(&self, controller: &Controller, burst: &mut Burst) {
        match controller.reconciles().await {
            Ok(count) => burst.reconciles = Some(burst.reconciles.unwrap_or(0) + count),
            Err(error) => self.progress(&format!("cannot read the controller's reconcile count: {error}")),
        }
    }

    /// Figure 3: requests made while nothing changes.
    async fn rest(&mut self, controller: &Controller) -> Result<()> {
        let spent = self.rest_window("rest", controller).await?;
        self.figures.rest_writes = Some(spent.writes(is_watched));
        self.figures.rest_reads = Some(spent.count(|r| is_watched(r) && r.is_read()));
        self.figures.rest_requests = spent.breakdown(|r| is_watched(r) && r.verb != "WATCH");
        Ok(())
    }

    /// The requests of `KEYWARD_BENCH_REST_SECS` in which nothing changes, `controller` running.
    async fn rest_window(&mut self, window: &str, controller: &Controller) -> Result<Requests> {
        let secs = self.settings.rest_secs;
        self.progress(&format!("{window}: counting requests for {secs} s"));
        let before = Requests::scrape(&self.client).await?;
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let after = Requests::scrape(&self.client).await?;
        controller.check_alive()?;
        let spent = after.since(&before);
        self.check_foreign(window, &spent, &[]);
        Ok(spent)
    }

    /// Figure 6: figures 1 to 3 for Credentials of several tokens, baseline and controller
    /// taking turns over the rounds as for the keys, then the rest window with the last
    /// controller running over its settled Credentials.
    async fn credentials(&mut self) -> Result<()> {
        let (n, tokens, rounds) = (self.settings.credentials, self.settings.credential_tokens, self.settings.rounds);
        let active = move |credential: &Credential| credential_active(credential, tokens);
        let issue = move |credentials, secrets, i| issue_credential_directly(credentials, secrets, i, tokens);
        let make = move |i| new_credential(&credential_name(i), tokens);
        let (mut baseline, mut through) = (Burst::default(), Burst::default());
        // The controllers' own write counts, summed; `None` once one could not be read.
        let mut counted = Some(BTreeMap::new());
        let mut kept = None;
        for round in 1..=rounds {
            let (secs, window) = self.baseline_burst(&format!("credential-baseline-{round}"), n, issue, active).await?;
            baseline.secs.push(secs);
            baseline.spent.add(&window);
            let run = format!("credential-controller-{round}");
            let (secs, window, controller) = self.controller_burst(&run, n, make, active).await?;
            through.secs.push(secs);
            through.spent.add(&window);
            self.count_reconciles(&controller, &mut through).await;
            counted = counted.zip(controller.api_writes().await).map(|(mut sum, writes)| {
                for (series, n) in writes {
                    *sum.entry(series).or_insert(0) += n;
                }
                sum
            });
            if round < rounds {
                self.count_log_lines(&controller);
                controller.stop().await;
            } else {
                kept = Some(controller);
            }
        }
        let controller = kept.ok_or("KEYWARD_BENCH_ROUNDS must be at least 1")?;
        let before_rest = controller.api_writes().await;
        let rest = self.rest_window("credential-rest", &controller).await?;
        let total = |writes: BTreeMap<String, u64>| writes.values().sum::<u64>();
        let rest_counted =
            controller.api_writes().await.zip(before_rest).map(|(after, before)| total(after) - total(before));
        self.count_log_lines(&controller);
        controller.stop().await;

        let issued = (n * tokens * rounds) as f64;
        let (baseline_secs, controller_secs, ratio) = compare(&baseline.secs, &through.secs);
        self.figures.credentials = Some(CredentialFigures {
            baseline_secs,
            controller_secs,
            ratio,
            controller_writes_per_token: Some(through.spent.writes(is_key_write) as f64 / issued),
            baseline_writes_per_token: Some(baseline.spent.writes(is_key_write) as f64 / issued),
            controller_event_writes: Some(through.spent.writes(is_event)),
            apiserver_writes: Some(through.spent.writes(is_operator_write)),
            controller_counted_writes: counted.clone().map(total),
            controller_counted_breakdown: counted.unwrap_or_default(),
            controller_gets_per_token: Some(through.spent.count(|r| is_watched(r) && r.verb == "GET") as f64 / issued),
            controller_reconciles_per_credential: through.reconciles.map(|r| r as f64 / (n * rounds) as f64),
            controller_requests: through.spent.breakdown(|r| is_watched(r) && r.verb != "WATCH"),
            rest_writes: Some(rest.writes(is_watched)),
            rest_counted_writes: rest_counted,
            rest_reads: Some(rest.count(|r| is_watched(r) && r.is_read())),
            rest_requests: rest.breakdown(|r| is_watched(r) && r.verb != "WATCH"),
            baseline_rounds_secs: baseline.secs,
            controller_rounds_secs: through.secs,
        });
        Ok(())
    }

    /// Figure 5: how long after its expiry a key's Secret is seen gone.
    async fn expiry(&mut self, controller: &Controller) -> Result<()> {
        let count = self.settings.expiring;
        if count == 0 {
            return Ok(());
        }
        let ns = controller.namespace.clone();
        self.progress(&format!("expiry: {count} keys with expiresAfter {EXPIRING_AFTER} in {ns}"));
        let keys: Api<ApiKey> = Api::namespaced(self.client.clone(), &ns);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        let mut deletions = DeletionWatch::start(secrets).await?;
        let names: Vec<String> = (0..count).map(|i| format!("expiring-{i}")).collect();
        for name in &names {
            let spec = serde_json::json!({
                "expiresAfter": EXPIRING_AFTER,
                "secretTemplate": {"labels": {EXPIRING_LABEL: EXPIRING_LABEL_VALUE}},
            });
            let key = ApiKey::new(name, serde_json::from_value::<ApiKeySpec>(spec)?);
            keys.create(&PostParams::default(), &key).await.map_err(|e| format!("create ApiKey {name}: {e}"))?;
        }
        // Creation is second-precise, so expiry is at most 5 s away: 30 s is ample.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut deleted: BTreeMap<String, Timestamp> = BTreeMap::new();
        while deleted.len() < count {
            match tokio::time::timeout_at(deadline, deletions.next()).await {
                Ok(Some((owner, at))) => {
                    deleted.entry(owner).or_insert(at);
                }
                Ok(None) => return Err("the Secret watch ended".into()),
                Err(_) => {
                    return Err(controller.explain(
                        format!("only {} of {count} expiring Secrets were deleted within 30 s", deleted.len()).into(),
                    ));
                }
            }
        }
        let mut latencies = Vec::new();
        for name in &names {
            let key = keys.get(name).await?;
            let expires_at = key
                .status
                .as_ref()
                .and_then(|s| s.expires_at.as_ref())
                .map(|t| t.0)
                .ok_or_else(|| format!("ApiKey {name} has no status.expiresAt"))?;
            let at = deleted.get(name).ok_or_else(|| format!("no deletion seen for the Secret of {name}"))?;
            latencies.push(at.duration_since(expires_at).as_secs_f64() * 1000.0);
        }
        self.figures.expiry_latency_max_ms = latencies.iter().copied().reduce(f64::max);
        self.figures.expiry_latency_mean_ms = Some(latencies.iter().sum::<f64>() / latencies.len() as f64);
        self.figures.expiry_latency_ms = latencies;
        Ok(())
    }

    /// Not one of the goals' figures but the same rule as at rest: a controller that restarts
    /// over keys that are all settled (Active or Expired) has nothing to write.
    async fn restart(&mut self, namespace: &str) -> Result<()> {
        let before = Requests::scrape(&self.client).await?;
        let controller = self.start_controller(namespace, "restart").await?;
        let after = wait_idle(&self.client, &controller).await?;
        let spent = after.since(&before);
        self.check_foreign("restart", &spent, &[]);
        self.figures.restart_writes = Some(spent.writes(is_operator_write));
        self.figures.restart_reads = Some(spent.count(|r| is_watched(r) && r.is_read()));
        self.figures.restart_requests = spent.breakdown(|r| is_watched(r) && r.verb != "WATCH");
        self.count_log_lines(&controller);
        controller.stop().await;
        Ok(())
    }

    /// Figure 4 at 10,000 keys: a fresh controller in a fresh namespace, so its peak RSS and
    /// time to Active belong to this many keys alone.
    async fn large_run(&mut self) -> Result<()> {
        let n = self.settings.large;
        let new_key = |i| ApiKey::new(&key_name(i), ApiKeySpec::default());
        let (secs, spent, controller) = self.controller_burst("large", n, new_key, key_active).await?;
        self.figures.large_secs = Some(secs);
        self.figures.large_writes_per_key = Some(spent.writes(is_key_write) as f64 / n as f64);
        self.figures.large_peak_rss_mib = Some(controller.peak_rss_mib()?);
        self.figures.large_rss_idle_mib = Some(controller.rss_mib()?);
        self.count_log_lines(&controller);
        controller.stop().await;
        Ok(())
    }

    async fn start_controller(&self, namespace: &str, run: &str) -> Result<Controller> {
        let log = self.out_dir.join(format!("issue-{run}.log"));
        let args = ["controller", "--namespaces", namespace, "--listen", "127.0.0.1:0", "--concurrency"];
        let args: Vec<String> =
            args.map(String::from).into_iter().chain([self.settings.concurrency.to_string()]).collect();
        let mut process = Process::keyward(Path::new(env!("CARGO_BIN_EXE_keyward")), &args, &log)?;
        process.wait_ready(Duration::from_secs(60)).await?;
        let controller = Controller { process, namespace: namespace.to_string() };
        self.progress(&format!("{run}: keyward controller ready (pid {}, log {})", controller.pid, log.display()));
        Ok(controller)
    }

    /// Notes a measure window in which someone else used the API server: it saw ApiKey or
    /// Credential creates beyond the bench's own (`bench_creates`, by plural), or ApiKey,
    /// Credential or Event deletes, which neither the bench nor the controller ever makes. Its
    /// figures then count the intruder's requests too.
    fn check_foreign(&mut self, window: &str, spent: &Requests, bench_creates: &[(&str, usize)]) {
        let others = |resource: &str| {
            let creates = spent.count(|r| r.resource == resource && r.subresource.is_empty() && r.verb == "POST");
            let own = bench_creates.iter().filter(|(plural, _)| *plural == resource).map(|(_, n)| *n as u64).sum();
            creates.saturating_sub(own)
        };
        let (creates, credentials) = (others("apikeys"), others("credentials"));
        let deletes = spent.count(|r| {
            matches!(r.resource.as_str(), "apikeys" | "credentials" | "events")
                && matches!(r.verb.as_str(), "DELETE" | "DELETECOLLECTION")
        });
        if creates + credentials + deletes > 0 {
            let warning = format!(
                "{window}: someone else used the API server ({creates} other ApiKey creates, {credentials} other \
                 Credential creates, {deletes} deletes of ApiKeys, Credentials or Events); this window's figures \
                 include their requests"
            );
            self.progress.warn(&mut self.figures.outcome, warning);
        }
    }

    fn count_log_lines(&mut self, controller: &Controller) {
        let levels = controller.log_levels();
        self.figures.controller_log_warnings += levels.warnings;
        self.figures.controller_log_errors += levels.errors;
        for sample in levels.samples {
            if self.figures.controller_log_samples.len() < 10 {
                self.figures.controller_log_samples.push(sample);
            }
        }
    }

    /// A fresh namespace for one part of the run.
    async fn namespace(&mut self, part: &str) -> Result<String> {
        let name = format!("kwbench-{part}-{}", self.suffix);
        common::create_namespace(&self.client, &name, BENCH_LABEL_VALUE).await?;
        self.namespaces.push(name.clone());
        Ok(name)
    }

    /// Deletes the namespaces of an earlier, interrupted run and waits until they are gone.
    async fn remove_leftovers(&mut self) -> Result<()> {
        let leftovers = common::leftover_namespaces(&self.client, BENCH_LABEL_VALUE).await?;
        if !leftovers.is_empty() {
            self.progress(&format!("removing namespaces left by an earlier run: {leftovers:?}"));
            delete_namespaces(&self.client, &leftovers).await;
        }
        Ok(())
    }
}

/// Deletes namespaces and waits (up to 10 minutes) until they are gone.
///
/// The Secrets go first, then the ApiKeys and Credentials, then the namespace. Left to the namespace
/// controller, owners and dependents vanish together and the garbage collector then checks
/// every orphaned Secret with a GET, at kube-controller-manager's 20 requests a second: some
/// ten minutes of traffic after a full run, which would land in the next run's measures.
async fn delete_namespaces(client: &Client, names: &[String]) {
    let api: Api<Namespace> = Api::all(client.clone());
    for name in names {
        if let Err(error) = empty(&Api::<Secret>::namespaced(client.clone(), name)).await {
            eprintln!("cannot delete the Secrets of {name}: {error}");
        }
        if let Err(error) = empty(&Api::<ApiKey>::namespaced(client.clone(), name)).await {
            eprintln!("cannot delete the ApiKeys of {name}: {error}");
        }
        if let Err(error) = empty(&Api::<Credential>::namespaced(client.clone(), name)).await {
            eprintln!("cannot delete the Credentials of {name}: {error}");
        }
        if let Err(error) = api.delete(name, &DeleteParams::default()).await {
            eprintln!("cannot delete namespace {name}: {error}");
        }
    }
    let gone = futures::future::join_all(
        names.iter().map(|name| await_condition(api.clone(), name, |ns: Option<&Namespace>| ns.is_none())),
    );
    if tokio::time::timeout(Duration::from_secs(600), gone).await.is_err() {
        eprintln!("namespaces {names:?} were still terminating after 10 minutes");
    }
}

/// Deletes every object of one kind in a namespace, a page at a time (a DELETECOLLECTION of
/// ten thousand objects could outlast the API server's request timeout).
async fn empty<K>(api: &Api<K>) -> Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let page = ListParams::default().limit(500);
    loop {
        if api.list_metadata(&ListParams::default().limit(1)).await?.items.is_empty() {
            return Ok(());
        }
        api.delete_collection(&DeleteParams::default(), &page).await?;
    }
}

/// A `keyward controller` and the namespace it watches.
struct Controller {
    process: Process,
    namespace: String,
}

impl std::ops::Deref for Controller {
    type Target = Process;

    fn deref(&self) -> &Process {
        &self.process
    }
}

impl Controller {
    async fn stop(self) {
        self.process.stop().await;
    }
}

fn key_name(i: usize) -> String {
    format!("key-{i:05}")
}

/// How long to wait for `n` keys to become Active before calling it a failure: generous, as
/// the API server of a small machine manages a few hundred writes a second.
fn active_deadline(n: usize) -> Duration {
    Duration::from_secs(120) + Duration::from_millis(50) * u32::try_from(n).unwrap_or(u32::MAX)
}

/// What the bench creates in bulk and waits to see issued: ApiKeys and Credentials.
trait BenchKey:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> BenchKey for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// The bench's test that an ApiKey is issued.
fn key_active(key: &ApiKey) -> bool {
    key.status.as_ref().and_then(|s| s.phase) == Some(Phase::Active)
}

fn credential_name(i: usize) -> String {
    format!("cred-{i:05}")
}

/// A Credential of `tokens` tokens with the default expiry, named `t0`, `t1`...
fn new_credential(name: &str, tokens: usize) -> Credential {
    let tokens = (0..tokens).map(|t| CredentialToken { name: format!("t{t}"), ..CredentialToken::default() }).collect();
    Credential::new(name, CredentialSpec { tokens, ..CredentialSpec::default() })
}

/// The bench's test that a Credential is issued: its status describes its current spec and
/// holds every one of its `tokens` Active.
fn credential_active(credential: &Credential, tokens: usize) -> bool {
    credential.status.as_ref().is_some_and(|s| {
        s.phase == Some(Phase::Active)
            && s.active_tokens.and_then(|n| usize::try_from(n).ok()) == Some(tokens)
            && s.observed_generation.is_some()
            && s.observed_generation == credential.metadata.generation
    })
}

/// Creates `objects`, `concurrency` creates in flight.
async fn create_all<K: BenchKey>(api: &Api<K>, objects: impl Iterator<Item = K>, concurrency: usize) -> Result<()> {
    futures::stream::iter(objects)
        .map(|object| async move {
            api.create(&PostParams::default(), &object)
                .await
                .map(drop)
                .map_err(|e| Error::from(format!("create {} {}: {e}", K::kind(&()), object.name_any())))
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await
}

/// What a minimal client does for one key: the ApiKey, then the operator's Secret
/// (create-only), then a status like the controller's (server-side apply, forced).
async fn issue_directly(keys: Api<ApiKey>, secrets: Api<Secret>, name: String) -> Result<()> {
    let key = keys
        .create(&PostParams::default(), &ApiKey::new(&name, ApiKeySpec::default()))
        .await
        .map_err(|e| format!("create ApiKey {name}: {e}"))?;
    let created = key.creation_timestamp().ok_or("a created ApiKey without creationTimestamp")?.0;
    let expires_at = created.checked_add(DEFAULT_EXPIRY).map_err(|e| format!("expiry of {name}: {e}"))?;
    let now = Timestamp::now();
    let token = Token::generate("kw");
    let secret_name = format!("{name}-apikey");
    let template = key.spec.policy.secret_template.clone().unwrap_or_default();
    create_token_secret(&secrets, &key, &template, &secret_name, &token, now, expires_at).await?;
    let generation = key.meta().generation;
    let status = serde_json::json!({
        "phase": "Active",
        "observedGeneration": generation,
        "keyId": token.key_id(),
        "tokenHash": token.hash().to_string(),
        "secretName": secret_name,
        "issuedAt": Time(now),
        "expiresAt": Time(expires_at),
        "conditions": [issued_condition(format!("token issued to Secret {secret_name}"), generation, now)],
    });
    apply_status(&keys, &name, status).await
}

/// What a minimal client does for one Credential: the Credential, then the operator's Secret
/// for each token (create-only, one after the other as the controller's reconcile
/// writes them), then one status like the controller's with every token.
async fn issue_credential_directly(
    credentials: Api<Credential>,
    secrets: Api<Secret>,
    i: usize,
    tokens: usize,
) -> Result<()> {
    let name = credential_name(i);
    let credential = credentials
        .create(&PostParams::default(), &new_credential(&name, tokens))
        .await
        .map_err(|e| format!("create Credential {name}: {e}"))?;
    let template = credential.spec.policy.secret_template.clone().unwrap_or_default();
    // A token's expiresAfter (here the operator's default) counts from its first issue.
    let now = Timestamp::now();
    let expires_at = now.checked_add(DEFAULT_EXPIRY).map_err(|e| format!("expiry of {name}: {e}"))?;
    let mut entries = Vec::with_capacity(tokens);
    for token_spec in &credential.spec.tokens {
        let token = Token::generate("kw");
        let secret_name = credential.secret_name(&token_spec.name);
        create_token_secret(&secrets, &credential, &template, &secret_name, &token, now, expires_at).await?;
        entries.push(serde_json::json!({
            "name": token_spec.name,
            "keyId": token.key_id(),
            "tokenHash": token.hash().to_string(),
            "secretName": secret_name,
            "issuedAt": Time(now),
            "expiresAt": Time(expires_at),
            "phase": "Active",
        }));
    }
    let generation = credential.meta().generation;
    let names: Vec<&str> = credential.spec.tokens.iter().map(|t| t.name.as_str()).collect();
    let status = serde_json::json!({
        "phase": "Active",
        "observedGeneration": generation,
        "activeTokens": entries.len(),
        "tokens": entries,
        "conditions": [issued_condition(format!("{tokens} token(s) issued: {}", names.join(", ")), generation, now)],
    });
    apply_status(&credentials, &name, status).await
}

/// Creates the Secret the controller would for one token of `object`, built by the
/// controller's own builder (`TokenSecret::build`) so that the baseline cannot drift from it.
async fn create_token_secret<K: Reconciled>(
    secrets: &Api<Secret>,
    object: &K,
    template: &SecretTemplate,
    secret_name: &str,
    token: &Token,
    issued_at: Timestamp,
    expires_at: Timestamp,
) -> Result<()> {
    let identity = Identity::of(object)?;
    let secret =
        TokenSecret { name: secret_name, owner: &identity.owner, expires_at, template }.build(token, issued_at);
    secrets.create(&PostParams::default(), &secret).await.map_err(|e| format!("create Secret {secret_name}: {e}"))?;
    Ok(())
}

/// The Ready condition of an issued object, as the controller writes it.
fn issued_condition(message: String, generation: Option<i64>, now: Timestamp) -> serde_json::Value {
    serde_json::json!({
        "type": CONDITION_READY,
        "status": "True",
        "reason": reason::ISSUED,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": Time(now),
    })
}

/// Writes a status the way the controller does: server-side apply, forced.
async fn apply_status<K: BenchKey>(api: &Api<K>, name: &str, status: serde_json::Value) -> Result<()> {
    let patch = serde_json::json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
    api.patch_status(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(|e| format!("apply the status of {} {name}: {e}", K::kind(&())))?;
    Ok(())
}

/// What the bursts of one kind (baseline or controller) measured over the rounds.
#[derive(Default)]
struct Burst {
    secs: Vec<f64>,
    spent: Requests,
    reconciles: Option<u64>,
}

/// The medians of the baseline's and the controller's rounds, and their ratio.
fn compare(baseline: &[f64], controller: &[f64]) -> (Option<f64>, Option<f64>, Option<f64>) {
    let (baseline, controller) = (median(baseline), median(controller));
    (baseline, controller, controller.zip(baseline).map(|(c, b)| c / b))
}

/// Counts objects that `active` accepts, from a watch that has listed the namespace before the
/// first create, and notes the moment the expected count is reached.
struct ActiveWatch {
    done: oneshot::Receiver<Instant>,
    active: Arc<AtomicUsize>,
    expected: usize,
    kind: String,
    task: tokio::task::JoinHandle<()>,
}

impl ActiveWatch {
    async fn start<K: BenchKey>(
        api: Api<K>,
        expected: usize,
        is_active: impl Fn(&K) -> bool + Send + 'static,
    ) -> Result<Self> {
        let kind = K::kind(&()).into_owned();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        let active = Arc::new(AtomicUsize::new(0));
        let seen = active.clone();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut done = Some(done_tx);
            let mut names: HashSet<String> = HashSet::new();
            let mut events = watcher(api, watcher::Config::default().any_semantic()).default_backoff().boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(());
                        }
                    }
                    Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                        if is_active(&object) {
                            names.insert(object.name_any());
                        } else {
                            names.remove(&object.name_any());
                        }
                    }
                    Ok(watcher::Event::Delete(object)) => {
                        names.remove(&object.name_any());
                    }
                    // A watch error is retried by the backoff; a re-list re-applies everything.
                    Ok(watcher::Event::Init) | Err(_) => {}
                }
                seen.store(names.len(), Ordering::Relaxed);
                if names.len() >= expected
                    && let Some(done) = done.take()
                {
                    let _ = done.send(Instant::now());
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .map_err(|_| format!("the {kind} watch did not list within 30 s"))?
            .map_err(|_| format!("the {kind} watch ended"))?;
        Ok(Self { done, active, expected, kind, task })
    }

    /// The moment the last object was seen Active; `progress` hears the count every 10 s.
    async fn wait(mut self, deadline: Duration, progress: impl Fn(usize, usize)) -> Result<Instant> {
        let deadline = tokio::time::Instant::now() + deadline;
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        tick.tick().await;
        loop {
            tokio::select! {
                done = &mut self.done => break done.map_err(|_| Error::from(format!("the {} watch ended", self.kind))),
                _ = tick.tick() => progress(self.active.load(Ordering::Relaxed), self.expected),
                () = tokio::time::sleep_until(deadline) => {
                    break Err(format!(
                        "only {} of {} {} objects were Active in time",
                        self.active.load(Ordering::Relaxed),
                        self.expected,
                        self.kind,
                    )
                    .into());
                }
            }
        }
    }
}

impl Drop for ActiveWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reports, for each deleted Secret of the expiry probe, its owner's name and the wall-clock
/// time its DELETE watch event arrived.
struct DeletionWatch {
    deleted: mpsc::UnboundedReceiver<(String, Timestamp)>,
    task: tokio::task::JoinHandle<()>,
}

impl DeletionWatch {
    async fn start(secrets: Api<Secret>) -> Result<Self> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (tx, deleted) = mpsc::unbounded_channel();
        let selector = format!("{EXPIRING_LABEL}={EXPIRING_LABEL_VALUE}");
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut events = watcher(secrets, watcher::Config::default().labels(&selector)).default_backoff().boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(());
                        }
                    }
                    Ok(watcher::Event::Delete(secret)) => {
                        // Stamp first: the latency is the event's arrival.
                        let at = Timestamp::now();
                        let owner = secret.owner_references().first().map(|o| o.name.clone()).unwrap_or_default();
                        let _ = tx.send((owner, at));
                    }
                    _ => {}
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .map_err(|_| "the Secret watch did not list within 30 s")?
            .map_err(|_| "the Secret watch ended")?;
        Ok(Self { deleted, task })
    }

    async fn next(&mut self) -> Option<(String, Timestamp)> {
        self.deleted.recv().await
    }
}

impl Drop for DeletionWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until the controller has gone idle, and returns the counter as it then stands.
async fn wait_idle(client: &Client, controller: &Controller) -> Result<Requests> {
    match wait_quiet(client, Duration::from_secs(300)).await? {
        Some(requests) => Ok(requests),
        None => Err(controller.explain("the controller was still busy after 5 minutes".into())),
    }
}

/// Waits until the API server has served no request (watches aside) on secrets, apikeys or
/// events for 3 s, and returns the counter as it then stands; `None` when `limit` passes first.
async fn wait_quiet(client: &Client, limit: Duration) -> Result<Option<Requests>> {
    const QUIET: Duration = Duration::from_secs(3);
    let deadline = Instant::now() + limit;
    let mut last = Requests::scrape(client).await?;
    let mut quiet_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = Requests::scrape(client).await?;
        if now.since(&last).count(|r| is_watched(r) && r.verb != "WATCH") > 0 {
            quiet_since = Instant::now();
            last = now;
        } else if quiet_since.elapsed() >= QUIET {
            return Ok(Some(now));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
    }
}

/// One series of `apiserver_request_total`, without the labels the bench does not need.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Series {
    resource: String,
    subresource: String,
    verb: String,
    code: String,
}

impl Series {
    fn is_mutating(&self) -> bool {
        MUTATING.contains(&self.verb.as_str())
    }

    fn is_read(&self) -> bool {
        matches!(self.verb.as_str(), "GET" | "LIST")
    }
}

/// The resources the controller writes or reads.
fn is_watched(series: &Series) -> bool {
    matches!(series.resource.as_str(), "secrets" | "apikeys" | "credentials" | "events")
}

/// A write the issuing of a key causes on the operator's resources and Secrets, leaving out
/// the bench's own ApiKey creates (the controller never creates an ApiKey or a Credential).
fn is_key_write(series: &Series) -> bool {
    match (series.resource.as_str(), series.subresource.as_str()) {
        ("secrets", _) => true,
        ("apikeys" | "credentials", "") => series.verb != "POST",
        ("apikeys" | "credentials", _) => true,
        _ => false,
    }
}

fn is_event(series: &Series) -> bool {
    series.resource == "events"
}

/// Every write the controller makes: what issuing causes, and events.
fn is_operator_write(series: &Series) -> bool {
    is_key_write(series) || is_event(series)
}

/// A snapshot of the API server's `apiserver_request_total` counter.
#[derive(Clone, Debug, Default)]
struct Requests(BTreeMap<Series, u64>);

impl Requests {
    async fn scrape(client: &Client) -> Result<Self> {
        Ok(Self::parse(&scrape_apiserver(client).await?))
    }

    fn parse(text: &str) -> Self {
        let mut counts = BTreeMap::new();
        for (labels, value) in samples(text, "apiserver_request_total") {
            let label = |name: &str| labels.get(name).cloned().unwrap_or_default();
            let series = Series {
                resource: label("resource"),
                subresource: label("subresource"),
                verb: label("verb"),
                code: label("code"),
            };
            // Series differing only in labels left out (group, version, scope...) add up.
            *counts.entry(series).or_insert(0) += value.round() as u64;
        }
        Self(counts)
    }

    fn add(&mut self, other: &Requests) {
        for (series, n) in &other.0 {
            *self.0.entry(series.clone()).or_insert(0) += n;
        }
    }

    /// Requests made between `before` and this snapshot.
    fn since(&self, before: &Requests) -> Requests {
        Requests(
            self.0
                .iter()
                .filter_map(|(series, &after)| {
                    let spent = after.saturating_sub(before.0.get(series).copied().unwrap_or(0));
                    (spent > 0).then(|| (series.clone(), spent))
                })
                .collect(),
        )
    }

    fn count(&self, keep: impl Fn(&Series) -> bool) -> u64 {
        self.0.iter().filter(|(s, _)| keep(s)).map(|(_, n)| n).sum()
    }

    /// Mutating requests of the series `keep` accepts.
    fn writes(&self, keep: impl Fn(&Series) -> bool) -> u64 {
        self.count(|s| s.is_mutating() && keep(s))
    }

    /// `resource[/subresource] VERB code` -> requests.
    fn breakdown(&self, keep: impl Fn(&Series) -> bool) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (series, n) in self.0.iter().filter(|(s, _)| keep(s)) {
            let resource = if series.subresource.is_empty() {
                series.resource.clone()
            } else {
                format!("{}/{}", series.resource, series.subresource)
            };
            *out.entry(format!("{resource} {} {}", series.verb, series.code)).or_insert(0) += n;
        }
        out
    }
}

/// The figures as a table with the goals, on stdout.
fn print_table(f: &Figures) {
    let Some(settings) = &f.settings else {
        return;
    };
    let n = settings.keys;
    let rounds = settings.rounds;
    let each = |values: &[f64]| show::each(values, 2);
    let large = settings.large;
    let secs = |v: Option<f64>| show::secs(v, 2);
    let num = |v: Option<f64>| show::num(v, 2);
    // Per-key counts get three decimals: 2.004 is not 2.
    let per_key = |v: Option<f64>| show::num(v, 3);
    let mib = show::mib;
    let title = format!(
        "keyward issue bench: {n} keys, {} credentials x {} tokens, --concurrency {}, rest {} s, large run {large} keys",
        settings.credentials, settings.credential_tokens, settings.concurrency, settings.rest_secs
    );
    let mut table = Table::new(title);
    let mut row = |figure: String, value: String, goal: &str, ok: Option<bool>| table.goal(figure, value, goal, ok);
    row(format!("time to Active, {n} keys, baseline (median of {rounds})"), secs(f.baseline_secs), "", None);
    row(format!("time to Active, {n} keys, controller (median of {rounds})"), secs(f.controller_secs), "", None);
    row("controller / baseline".into(), num(f.ratio), "<= 1.30", f.ratio.map(|r| r <= 1.3));
    row(
        "API writes per key, controller (secrets+apikeys)".into(),
        per_key(f.controller_writes_per_key),
        "2",
        f.controller_writes_per_key.map(|w| w <= 2.0),
    );
    row(
        format!("event writes, controller, all {} keys", n * rounds),
        f.controller_event_writes.map_or("-".into(), |n| n.to_string()),
        "",
        None,
    );
    row("API GETs per key, controller".into(), per_key(f.controller_gets_per_key), "", None);
    row("reconciles per key, controller".into(), per_key(f.controller_reconciles_per_key), "", None);
    row("API writes per key, baseline (method check)".into(), per_key(f.baseline_writes_per_key), "2", None);
    row(
        format!("writes in {} s at rest", settings.rest_secs),
        f.rest_writes.map_or("-".into(), |n| n.to_string()),
        "0",
        f.rest_writes.map(|n| n == 0),
    );
    row(
        format!("reads in {} s at rest", settings.rest_secs),
        f.rest_reads.map_or("-".into(), |n| n.to_string()),
        "",
        None,
    );
    row(
        format!("writes after a controller restart over {n} settled keys"),
        f.restart_writes.map_or("-".into(), |n| n.to_string()),
        "0",
        f.restart_writes.map(|n| n == 0),
    );
    row("reads after that restart".into(), f.restart_reads.map_or("-".into(), |n| n.to_string()), "", None);
    row(format!("controller peak RSS, {n} keys (highest of {rounds})"), mib(f.peak_rss_mib), "", None);
    row(
        format!("controller peak RSS, {large} keys"),
        mib(f.large_peak_rss_mib),
        "< 64 MiB",
        f.large_peak_rss_mib.map(|m| m < 64.0),
    );
    row(format!("controller RSS once idle, {n} keys"), mib(f.rss_idle_mib), "", None);
    row(format!("controller RSS once idle, {large} keys"), mib(f.large_rss_idle_mib), "", None);
    row(format!("time to Active, {large} keys, controller"), secs(f.large_secs), "", None);
    row(
        format!("API writes per key, {large} keys"),
        per_key(f.large_writes_per_key),
        "2",
        f.large_writes_per_key.map(|w| w <= 2.0),
    );
    let ms = |v: Option<f64>| show::ms(v, 0);
    row(
        format!("expiry latency, max of {}", f.expiry_latency_ms.len()),
        ms(f.expiry_latency_max_ms),
        "< 1000 ms",
        f.expiry_latency_max_ms.map(|m| m < 1000.0),
    );
    row(
        "expiry latency, mean".into(),
        ms(f.expiry_latency_mean_ms),
        "< 1000 ms",
        f.expiry_latency_mean_ms.map(|m| m < 1000.0),
    );
    if let Some(c) = &f.credentials {
        let (m, t) = (settings.credentials, settings.credential_tokens);
        let tokens = m * t * rounds;
        // One Secret per token and one status per Credential.
        let floor = (t + 1) as f64 / t as f64;
        let count = show::count;
        row(
            format!("time to Active, {m} credentials x {t} tokens, baseline (median)"),
            secs(c.baseline_secs),
            "",
            None,
        );
        row(
            format!("time to Active, {m} credentials x {t} tokens, controller (median)"),
            secs(c.controller_secs),
            "",
            None,
        );
        row("controller / baseline, credentials".into(), num(c.ratio), "<= 1.30", c.ratio.map(|r| r <= 1.3));
        row(
            "API writes per token, controller (secrets+credentials)".into(),
            per_key(c.controller_writes_per_token),
            &format!("{floor:.3}"),
            c.controller_writes_per_token.map(|w| w <= floor + 1e-9),
        );
        row("API writes per token, baseline (method check)".into(), per_key(c.baseline_writes_per_token), "", None);
        row(format!("event writes, controller, all {tokens} tokens"), count(c.controller_event_writes), "", None);
        row(
            "writes incl. events: API server / controller's own counter".into(),
            format!("{} / {}", count(c.apiserver_writes), count(c.controller_counted_writes)),
            "equal",
            c.apiserver_writes.zip(c.controller_counted_writes).map(|(a, b)| a == b),
        );
        row("API GETs per token, controller".into(), per_key(c.controller_gets_per_token), "", None);
        row("reconciles per credential, controller".into(), per_key(c.controller_reconciles_per_credential), "", None);
        row(
            format!("writes in {} s at rest, {m} credentials (controller's count)", settings.rest_secs),
            format!("{} ({})", count(c.rest_writes), count(c.rest_counted_writes)),
            "0",
            c.rest_writes.map(|n| n == 0),
        );
        row(format!("reads in {} s at rest, {m} credentials", settings.rest_secs), count(c.rest_reads), "", None);
    }
    row(
        "controller log lines at WARN / ERROR".into(),
        format!("{} / {}", f.controller_log_warnings, f.controller_log_errors),
        "",
        None,
    );
    row("whole run".into(), secs(f.outcome.total_secs), "", None);
    table.print();
    if !f.baseline_rounds_secs.is_empty() {
        println!("\nrounds, seconds to Active: baseline {}", each(&f.baseline_rounds_secs));
        println!("                          controller {}", each(&f.controller_rounds_secs));
    }
    report::print_counts(&format!("controller runs, requests (all {} keys)", n * rounds), &f.controller_requests);
    report::print_counts("requests at rest", &f.rest_requests);
    report::print_counts("requests after the restart", &f.restart_requests);
    if let Some(c) = &f.credentials {
        if !c.baseline_rounds_secs.is_empty() {
            println!("\ncredential rounds, seconds to Active: baseline {}", each(&c.baseline_rounds_secs));
            println!("                                     controller {}", each(&c.controller_rounds_secs));
        }
        let lists = [
            ("credential controller runs, requests", &c.controller_requests),
            ("credential controller runs, writes by the controller's own counter", &c.controller_counted_breakdown),
            ("requests at rest with the credentials", &c.rest_requests),
        ];
        for (title, list) in lists {
            report::print_counts(title, list);
        }
    }
    report::print_log_samples("controller", &f.controller_log_samples);
    if !f.expiry_latency_ms.is_empty() {
        let each: Vec<String> = f.expiry_latency_ms.iter().map(|ms| format!("{ms:.0}")).collect();
        println!("\nexpiry latencies (ms): {}", each.join(", "));
    }
    f.outcome.print();
}
