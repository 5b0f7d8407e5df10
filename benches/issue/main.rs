//! `cargo bench --bench issue`: how `keyward controller` does when many ApiKeys arrive at once,
//! measured on the real API server named by `KUBECONFIG`.
//!
//! Figures, printed as a table at the end and written to `target/bench/issue.json`:
//!
//! 1. Time to Active for `KEYWARD_BENCH_KEYS` (1,000) ApiKeys applied before the controller
//!    starts, from its start (spawn) and from its readiness until a watch has seen every key
//!    Active, against a floor measured just before and just after in the same round: a minimal
//!    client, fresh like the controller's, that makes the controller's own writes for keys that
//!    already exist (a Secret create and a status apply per key, the ApiKeys created untimed
//!    beforehand), with as many in flight as the controller's `--concurrency`, timed from its
//!    first write until the same watch sees every key Active. So the ratio says how far the
//!    controller is from the floor the API server sets for its own writes.
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
//! says it has nothing to write either). With `KEYWARD_BENCH_PROFILE` (1), a profile of the
//! bursts of figure 1: the API server's mean time per request and its CPU time against the
//! floor's, the connections (TLS handshakes) controller and floor open, when the controller's
//! Events arrive against the keys going Active, 1,000 raw status writes by server-side apply
//! against as many merge patches, the floor with an Event per key, and, each round, the floor
//! with the controller's own watches open (its ApiKeys, Credentials and Secrets' metadata,
//! listed before the clock starts): what the API server spends sending a controller its own
//! writes back, which the bare floor does not pay.
//!
//! Figure 1 is measured `KEYWARD_BENCH_ROUNDS` (3) times, floor, controller and floor again,
//! each in a fresh namespace (and with a fresh controller) that is deleted, and waited out, once
//! it is measured, so that no part runs beside the objects of the ones before it; figures 3 and
//! 5 and the restart come from one more controller run, not recorded. The medians are compared,
//! and each round's controller with the mean of its own two floors (the median of those ratios
//! is the figure least moved by a slow spell of this machine).
//!
//! Other settings: `KEYWARD_BENCH_CONCURRENCY` (32) is the controller's `--concurrency` and the
//! bench's own requests in flight; `KEYWARD_BENCH_LOG` (`info`) is the controller's `RUST_LOG`
//! (its logs go to `target/bench/issue-*.log`); `KEYWARD_BENCH_KEEP_NAMESPACES=1` leaves the
//! namespaces for inspection (figure 1's parts then run beside the earlier parts' objects).
//! `KEYWARD_BENCH_LARGE=0`, `KEYWARD_BENCH_EXPIRING=0` or `KEYWARD_BENCH_CREDENTIALS=0` skip
//! those parts.
//!
//! The request counter is global to the API server: nothing else may use it during a run.
//! Every namespace the bench makes carries the label `keyward.io/bench=issue`; figure 1's are
//! deleted (and waited for) once measured, the others at the end, and leftovers of an
//! interrupted run are removed at the start, so that their garbage collection never lands
//! inside a measure.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use keyward::api::{
    ApiKey, ApiKeySpec, Credential, CredentialSpec, CredentialToken, Key, Phase, credential::MAX_TOKENS,
};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;

mod baseline;
#[path = "../common/mod.rs"]
mod common;
mod figures;
mod profile;
mod requests;
mod watch;

use baseline::{StatusWrite, issue_credential_directly, issue_directly, write_status};
use common::process::Process;
use common::{Error, MANAGER, Outcome, Progress, Result, ensure_signing_keys, env_number, install_crds, median};
use figures::{CredentialFigures, Figures, Profile, print_table};
use profile::{ConnectionSampler, EventTimes};
use requests::{Requests, is_event, is_key_write, is_operator_write, is_watched, wait_idle, wait_quiet};
use watch::{ActiveWatch, ControllerWatches, DeletionWatch};

/// The value of the label `common::BENCH_LABEL` on this bench's namespaces.
const BENCH_LABEL_VALUE: &str = "issue";
/// Lifetime of the keys of the expiry probe, and the label their Secrets get (through
/// `secretTemplate`) so that one watch sees only them.
const EXPIRING_AFTER: &str = "5s";
const EXPIRING_LABEL: &str = "keyward-bench";
const EXPIRING_LABEL_VALUE: &str = "expiry";
/// Default expiry of the operator (`--default-expiry`), mirrored by the baseline's status.
const DEFAULT_EXPIRY: SignedDuration = SignedDuration::from_secs(keyward::api::expiry::DEFAULT_EXPIRY.as_secs() as i64);
/// How long after a CRD is created its discovery by the garbage collector can still come.
const CRD_DISCOVERY: Duration = Duration::from_secs(40);

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
    profile: bool,
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
            profile: env_number("KEYWARD_BENCH_PROFILE", 1)? != 0,
        })
    }
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
    /// The API server's port, whose connections the profile counts.
    apiserver_port: Option<u16>,
}

impl common::Bench for Bench {
    type Figures = Figures;
    const NAME: &'static str = "issue";

    async fn run(&mut self) -> Result<()> {
        self.progress.say(&format!("settings: {:?}", self.settings));
        let crd_age = install_crds(&self.client, MANAGER).await?;
        ensure_signing_keys(&self.client).await?;
        // On a fresh control plane, apikeys were once LISTed from outside the bench at ~20 a
        // second (kube-controller-manager's client rate) for two minutes; most likely its garbage
        // collector taking up the new resource, which it finds by discovery every 30 s. Let it
        // find the CRD before waiting for quiet.
        if let Some(wait) = CRD_DISCOVERY.checked_sub(crd_age) {
            self.progress.say(&format!("a CRD is new: giving the garbage collector {wait:.0?} to discover it"));
            tokio::time::sleep(wait).await;
        }
        self.remove_leftovers().await?;
        // The counter is global: wait out whatever else is still at work on these resources
        // (tests, the garbage collector after an earlier run) before measuring anything.
        self.progress.say("waiting until nothing else uses secrets, apikeys or events");
        if wait_quiet(&self.client, Duration::from_secs(900)).await?.is_none() {
            return Err("secrets, apikeys or events kept being used for 15 minutes: this bench needs \
                        the API server to itself"
                .into());
        }
        let rounds = self.settings.rounds;
        let n = self.settings.keys;
        let (mut before, mut after) = (Burst::default(), Burst::default());
        let mut through = Burst::default();
        let mut watched = Burst::default();
        // The floor before and after each controller run, so that a slow spell of the machine
        // (or of etcd's disk) hits both alike; medians are compared. Each part's namespace is
        // deleted once it is measured, so every timed part finds the API server holding the same
        // objects. That does not narrow the spread: identical floors, each cleared, took 2.5 to
        // 4.7 s within one run on a 2-core machine, which is why rounds are paired and medians
        // taken.
        for round in 1..=rounds {
            self.floor(&format!("floor-{round}-before"), Extra::None, &mut before).await?;
            self.clear().await?;
            let controller = self.controller_run(&format!("controller-{round}"), Some(&mut through)).await?;
            self.count_log_lines(&controller);
            controller.stop().await;
            self.clear().await?;
            self.floor(&format!("floor-{round}-after"), Extra::None, &mut after).await?;
            self.clear().await?;
            if self.settings.profile {
                self.floor(&format!("floor-{round}-watched"), Extra::Watches, &mut watched).await?;
                self.clear().await?;
            }
        }
        let keys = (n * rounds) as f64;
        let f = &mut self.figures;
        f.floor_before_secs = median(&before.secs);
        f.floor_after_secs = median(&after.secs);
        f.controller_start_secs = median(&through.secs);
        f.controller_ready_secs = median(&through.ready_secs);
        let ratio = |c: Option<f64>, b: Option<f64>| c.zip(b).map(|(c, b)| c / b);
        f.ratio_start_before = ratio(f.controller_start_secs, f.floor_before_secs);
        f.ratio_start_after = ratio(f.controller_start_secs, f.floor_after_secs);
        f.ratio_ready_before = ratio(f.controller_ready_secs, f.floor_before_secs);
        f.ratio_ready_after = ratio(f.controller_ready_secs, f.floor_after_secs);
        // Round by round: the controller over the mean of the floors either side of it.
        let paired = |controller: &[f64]| -> Vec<f64> {
            controller.iter().zip(before.secs.iter().zip(&after.secs)).map(|(c, (b, a))| c / ((b + a) / 2.0)).collect()
        };
        f.ratio_start_rounds = paired(&through.secs);
        f.ratio_ready_rounds = paired(&through.ready_secs);
        f.ratio_start_paired = median(&f.ratio_start_rounds);
        f.ratio_ready_paired = median(&f.ratio_ready_rounds);
        f.floor_before_rounds_secs = before.secs.clone();
        f.floor_after_rounds_secs = after.secs.clone();
        f.controller_start_rounds_secs = through.secs.clone();
        f.controller_ready_rounds_secs = through.ready_secs.clone();
        let mut floor = before;
        floor.spent.add(&after.spent);
        f.baseline_writes_per_key = Some(floor.spent.writes(is_key_write) as f64 / (2.0 * keys));
        let profile = f.profile.get_or_insert_with(Profile::default);
        profile.floor_apiserver_ms = floor.spent.mean_ms();
        profile.controller_apiserver_ms = through.spent.mean_ms();
        profile.floor_apiserver_cpu_secs_per_run = floor.spent.cpu_secs / (2 * rounds) as f64;
        profile.controller_apiserver_cpu_secs_per_run = through.spent.cpu_secs / rounds as f64;
        profile.floor_requests = floor.spent.breakdown(|r| is_watched(r) && r.verb != "WATCH");
        profile.floor_watched_rounds_secs = watched.secs.clone();
        profile.ratio_ready_watched = ratio(f.controller_ready_secs, median(&watched.secs));
        profile.floor_watched_apiserver_cpu_secs_per_run = watched.spent.cpu_secs / rounds as f64;
        f.controller_writes_per_key = Some(through.spent.writes(is_key_write) as f64 / keys);
        f.controller_event_writes = Some(through.spent.writes(is_event));
        f.controller_gets_per_key = Some(through.spent.count(|r| is_watched(r) && r.verb == "GET") as f64 / keys);
        f.controller_requests = through.spent.breakdown(|r| is_watched(r) && r.verb != "WATCH");
        f.controller_reconciles_per_key = through.reconciles.map(|r| r as f64 / keys);
        // At rest, expiry and restart: over one more controller run's keys, not recorded.
        let controller = self.controller_run("controller-kept", None).await?;
        self.rest(&controller).await?;
        self.expiry(&controller).await?;
        self.count_log_lines(&controller);
        let namespace = controller.namespace.clone();
        controller.stop().await;
        self.restart(&namespace).await?;
        self.clear().await?;
        if self.settings.profile {
            self.status_writes().await?;
            self.clear().await?;
            let mut with_events = Burst::default();
            self.floor("floor-events", Extra::Event, &mut with_events).await?;
            let profile = self.figures.profile.get_or_insert_with(Profile::default);
            profile.floor_with_events_secs = with_events.secs.first().copied();
            profile.floor_with_events_requests = with_events.spent.breakdown(|r| is_watched(r) && r.verb != "WATCH");
        }
        if self.settings.credentials > 0 {
            self.clear().await?;
            self.credentials().await?;
        }
        if self.settings.large > 0 {
            self.clear().await?;
            self.large_run().await?;
        }
        Ok(())
    }

    async fn cleanup(&mut self) {
        if self.namespaces.is_empty() {
            return;
        }
        if common::keep_namespaces() {
            self.progress
                .say(&format!("keeping {:?} for inspection; the next run deletes them first", self.namespaces));
            return;
        }
        self.progress.say(&format!("cleanup: deleting {:?} (waiting for them to be gone)", self.namespaces));
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
        let apiserver_port = kube::Config::infer().await.ok().and_then(|c| c.cluster_url.port_u16());
        Ok(Self {
            apiserver_port,
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
        self.progress.say(&format!("{run}: {seen} of {of} {plural} Active"));
    }

    /// Figure 1, the floor: for `keys` ApiKeys created untimed beforehand, the controller's
    /// own writes (a Secret create and a status apply per key, and what `extra` says) by a
    /// fresh client, `concurrency` keys in flight, in a namespace no controller watches. Adds
    /// the seconds from the first write until every key was seen Active, and the requests
    /// meanwhile, to `burst`.
    async fn floor(&mut self, run: &str, extra: Extra, burst: &mut Burst) -> Result<()> {
        let n = self.settings.keys;
        let ns = self.namespace(run).await?;
        let keys = self.pre_apply(run, &ns, n).await?;
        let objects: Api<ApiKey> = Api::namespaced(self.client.clone(), &ns);
        let watch = ActiveWatch::start(objects, n, key_active).await?;
        // A fresh client, as the controller starts with one: its connections are the floor's.
        let client = keyward::retry::client().await.map_err(|e| format!("a client from KUBECONFIG: {e}"))?;
        // Listed before the clock starts, as a controller's are before it is ready.
        let _watches = match extra {
            Extra::Watches => Some(ControllerWatches::start(&client, &ns).await?),
            Extra::None | Extra::Event => None,
        };
        let (keys_api, secrets) = (Api::<ApiKey>::namespaced(client.clone(), &ns), Api::namespaced(client, &ns));
        let plain = extra == Extra::None;
        let sampler =
            self.apiserver_port.filter(|_| plain).map(|port| ConnectionSampler::start(std::process::id(), port));
        let before = Requests::scrape(&self.client).await?;
        self.progress.say(&format!("{run}: the controller's writes for {n} keys, directly, in {ns}"));
        let cpu_before = common::process::cpu_secs(std::process::id());
        let started = Instant::now();
        futures::stream::iter(keys)
            .map(|key| issue_directly(keys_api.clone(), secrets.clone(), key, extra == Extra::Event))
            .buffer_unordered(self.settings.concurrency)
            .try_collect::<()>()
            .await?;
        let done = watch.wait(active_deadline(n), |seen, of| self.active_progress(run, "apikeys", seen, of)).await?;
        let secs = done.duration_since(started).as_secs_f64();
        let cpu = common::process::cpu_secs(std::process::id()).zip(cpu_before).map(|(after, before)| after - before);
        let after = Requests::scrape(&self.client).await?;
        if plain {
            self.figures.profile.get_or_insert_with(Profile::default).floor_cpu_secs.extend(cpu);
        }
        if let Some(sampler) = sampler {
            let connections = sampler.stop().await;
            self.figures.profile.get_or_insert_with(Profile::default).floor_connections.push(connections);
        }
        let window = after.since(&before);
        self.check_foreign(run, &window, &[]);
        self.progress.say(&format!("{run}: {n} apikeys Active in {secs:.2} s"));
        burst.secs.push(secs);
        burst.spent.add(&window);
        Ok(())
    }

    /// Creates `n` ApiKeys in `ns`, untimed; returns them as created.
    async fn pre_apply(&self, run: &str, ns: &str, n: usize) -> Result<Vec<ApiKey>> {
        self.progress.say(&format!("{run}: creating {n} apikeys in {ns} (not timed)"));
        let api: Api<ApiKey> = Api::namespaced(self.client.clone(), ns);
        let keys = create_all(
            &api,
            (0..n).map(|i| ApiKey::new(&key_name(i), ApiKeySpec::default())),
            self.settings.concurrency,
        )
        .await?;
        Ok(keys)
    }

    /// The profile's status writes: 1,000 raw status writes by server-side apply against as
    /// many by merge patch, each over keys created untimed beforehand, in the order apply,
    /// merge, merge, apply.
    async fn status_writes(&mut self) -> Result<()> {
        let n = self.settings.keys;
        for (i, how) in
            [StatusWrite::Apply, StatusWrite::Merge, StatusWrite::Merge, StatusWrite::Apply].into_iter().enumerate()
        {
            let run = format!("status-{}-{i}", format!("{how:?}").to_lowercase());
            let ns = self.namespace(&run).await?;
            let keys = self.pre_apply(&run, &ns, n).await?;
            let client = keyward::retry::client().await.map_err(|e| format!("a client from KUBECONFIG: {e}"))?;
            let api: Api<ApiKey> = Api::namespaced(client, &ns);
            let before = Requests::scrape(&self.client).await?;
            let started = Instant::now();
            futures::stream::iter(keys)
                .map(|key| write_status(api.clone(), key, how))
                .buffer_unordered(self.settings.concurrency)
                .try_collect::<()>()
                .await?;
            let secs = started.elapsed().as_secs_f64();
            let after = Requests::scrape(&self.client).await?;
            let window = after.since(&before);
            self.progress.say(&format!("{run}: {n} status writes in {secs:.2} s"));
            let profile = self.figures.profile.get_or_insert_with(Profile::default);
            match how {
                StatusWrite::Apply => profile.status_apply_secs.push(secs),
                StatusWrite::Merge => profile.status_merge_secs.push(secs),
            }
            profile.status_apiserver_ms.extend(window.mean_ms().into_iter().map(|(k, v)| (format!("{run}: {k}"), v)));
        }
        Ok(())
    }

    /// A baseline burst: `n` objects issued by `issue` (the object, its Secrets, its status),
    /// `concurrency` of them in flight, in a fresh namespace no controller watches. Returns the
    /// seconds from the first create until `active` held for all, and the requests meanwhile.
    async fn baseline_burst<K: Key, Fut>(
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
        self.progress.say(&format!("{run}: issuing {n} {plural} directly in {ns}"));
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
        self.progress.say(&format!("{run}: {n} {plural} Active in {secs:.2} s"));
        Ok((secs, window))
    }

    /// Figures 1, 2 and 4 (at 1,000 keys): keys created first, untimed, then a fresh
    /// controller started over them; timed from its spawn and from its readiness until every
    /// key was seen Active, into `burst` and the profile. Without a `burst`, the same run
    /// recorded nowhere: the keys and controller that figures 3 and 5 and the restart use.
    async fn controller_run(&mut self, run: &str, burst: Option<&mut Burst>) -> Result<Controller> {
        let n = self.settings.keys;
        let ns = self.namespace(run).await?;
        self.pre_apply(run, &ns, n).await?;
        let objects: Api<ApiKey> = Api::namespaced(self.client.clone(), &ns);
        let watch = ActiveWatch::start(objects, n, key_active).await?;
        let events = EventTimes::start(Api::namespaced(self.client.clone(), &ns)).await?;
        let before = Requests::scrape(&self.client).await?;
        let mut process = self.spawn_controller(&ns, run)?;
        let sampler = self.apiserver_port.map(|port| ConnectionSampler::start(process.pid, port));
        let ready = process.wait_ready(Duration::from_secs(60)).await?;
        let controller = Controller { process, namespace: ns.clone() };
        self.progress
            .say(&format!("{run}: keyward controller ready after {:.2} s (pid {})", ready.ready_secs, controller.pid));
        let waited = watch.wait(active_deadline(n), |seen, of| self.active_progress(run, "apikeys", seen, of)).await;
        let done = waited.map_err(|error| controller.explain(error))?;
        let from_start = done.duration_since(controller.started).as_secs_f64();
        let from_ready = from_start - ready.ready_secs;
        self.progress.say(&format!(
            "{run}: {n} apikeys Active {from_start:.2} s after the controller's start, {from_ready:.2} s after it was \
             ready; waiting for it to go idle"
        ));
        let cpu = controller.cpu_secs().ok();
        let after = wait_idle(&self.client, &controller).await?;
        let connections = match sampler {
            Some(sampler) => Some(sampler.stop().await),
            None => None,
        };
        let window = after.since(&before);
        self.check_foreign(run, &window, &[]);
        let Some(burst) = burst else {
            return Ok(controller);
        };
        burst.secs.push(from_start);
        burst.ready_secs.push(from_ready);
        burst.spent.add(&window);
        let rss = controller.peak_rss_mib()?;
        self.figures.peak_rss_mib = Some(self.figures.peak_rss_mib.map_or(rss, |peak| peak.max(rss)));
        self.figures.rss_idle_mib = Some(controller.rss_mib()?);
        self.count_reconciles(&controller, burst).await;
        let profile = self.figures.profile.get_or_insert_with(Profile::default);
        profile.controller_connections.extend(connections);
        profile.controller_cpu_secs.extend(cpu);
        profile.controller_events.push(events.timing(controller.started, done));
        Ok(controller)
    }

    /// A controller burst: `n` objects (`make(i)`) created at once, `concurrency` in flight, in
    /// a fresh namespace watched by a fresh controller. Returns the seconds from the first
    /// create until `active` held for all, the requests from then until the controller went
    /// idle, and the controller, still running.
    async fn controller_burst<K: Key>(
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
        self.progress.say(&format!("{run}: creating {n} {plural} in {ns}"));
        let started = Instant::now();
        create_all(&objects, (0..n).map(make), self.settings.concurrency).await?;
        let done = match watch.wait(active_deadline(n), |seen, of| self.active_progress(run, &plural, seen, of)).await {
            Ok(done) => done,
            Err(error) => return Err(controller.explain(error)),
        };
        let secs = done.duration_since(started).as_secs_f64();
        self.progress.say(&format!("{run}: {n} {plural} Active in {secs:.2} s; waiting for it to go idle"));
        let after = wait_idle(&self.client, &controller).await?;
        let window = after.since(&before);
        self.check_foreign(run, &window, &[(&plural, n)]);
        Ok((secs, window, controller))
    }

    /// Diagnostic only: the controller's own count says how often each object was looked at.
    async fn count_reconciles(&self, controller: &Controller, burst: &mut Burst) {
        match controller.reconciles().await {
            Ok(count) => burst.reconciles = Some(burst.reconciles.unwrap_or(0) + count),
            Err(error) => self.progress.say(&format!("cannot read the controller's reconcile count: {error}")),
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
        self.progress.say(&format!("{window}: counting requests for {secs} s"));
        let before = Requests::scrape(&self.client).await?;
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let after = Requests::scrape(&self.client).await?;
        controller.check_alive()?;
        let spent = after.since(&before);
        self.check_foreign(window, &spent, &[]);
        Ok(spent)
    }

    /// Figure 6: figures 1 to 3 for Credentials of several tokens, baseline and controller
    /// taking turns over the rounds as for the keys (but their namespaces kept until the end),
    /// then the rest window with the last controller running over its settled Credentials.
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
        self.progress.say(&format!("expiry: {count} keys with expiresAfter {EXPIRING_AFTER} in {ns}"));
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
                .and_then(|s| s.record.expires_at.as_ref())
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
        let mut process = self.spawn_controller(namespace, run)?;
        process.wait_ready(Duration::from_secs(60)).await?;
        let controller = Controller { process, namespace: namespace.to_string() };
        self.progress.say(&format!(
            "{run}: keyward controller ready (pid {}, log {})",
            controller.pid,
            controller.log.display()
        ));
        Ok(controller)
    }

    /// A `keyward controller` over `namespace`, just spawned, its log named after `run`.
    fn spawn_controller(&self, namespace: &str, run: &str) -> Result<Process> {
        let log = self.out_dir.join(format!("issue-{run}.log"));
        let args = ["controller", "--namespaces", namespace, "--listen", "127.0.0.1:0", "--concurrency"];
        let args: Vec<String> =
            args.map(String::from).into_iter().chain([self.settings.concurrency.to_string()]).collect();
        Process::keyward(Path::new(env!("CARGO_BIN_EXE_keyward")), &args, &log)
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

    /// Deletes the namespaces of the parts measured so far (unless they are kept for
    /// inspection) and waits until nothing else uses secrets, apikeys, credentials or events.
    async fn clear(&mut self) -> Result<()> {
        if self.namespaces.is_empty() {
            return Ok(());
        }
        if !common::keep_namespaces() {
            let names = std::mem::take(&mut self.namespaces);
            delete_namespaces(&self.client, &names).await;
        }
        match wait_quiet(&self.client, Duration::from_secs(300)).await? {
            Some(_) => Ok(()),
            None => {
                Err("secrets, apikeys, credentials or events were still in use 5 minutes after a part was measured"
                    .into())
            }
        }
    }

    /// Deletes the namespaces of an earlier, interrupted run and waits until they are gone.
    async fn remove_leftovers(&mut self) -> Result<()> {
        let leftovers = common::leftover_namespaces(&self.client, BENCH_LABEL_VALUE).await?;
        if !leftovers.is_empty() {
            self.progress.say(&format!("removing namespaces left by an earlier run: {leftovers:?}"));
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

/// The bench's test that an ApiKey is issued.
fn key_active(key: &ApiKey) -> bool {
    key.status.as_ref().and_then(|s| s.record.phase) == Some(Phase::Active)
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

/// Creates `objects`, `concurrency` creates in flight; returns them as created.
async fn create_all<K: Key>(api: &Api<K>, objects: impl Iterator<Item = K>, concurrency: usize) -> Result<Vec<K>> {
    futures::stream::iter(objects)
        .map(|object| async move {
            api.create(&PostParams::default(), &object)
                .await
                .map_err(|e| Error::from(format!("create {} {}: {e}", K::kind(&()), object.name_any())))
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await
}

/// What a floor run does beside the controller's two writes per key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Extra {
    None,
    /// An `Issued` Event per key, as the controller writes.
    Event,
    /// The controller's watches kept open by the floor's client, listed before the clock starts:
    /// what the API server spends sending a controller its own writes back.
    Watches,
}

/// What the bursts of one kind (baseline or controller) measured over the rounds.
#[derive(Default)]
struct Burst {
    /// For a controller, from its start.
    secs: Vec<f64>,
    /// For a controller, from its readiness.
    ready_secs: Vec<f64>,
    spent: Requests,
    reconciles: Option<u64>,
}

/// The medians of the baseline's and the controller's rounds, and their ratio.
fn compare(baseline: &[f64], controller: &[f64]) -> (Option<f64>, Option<f64>, Option<f64>) {
    let (baseline, controller) = (median(baseline), median(controller));
    (baseline, controller, controller.zip(baseline).map(|(c, b)| c / b))
}
