//! `cargo bench --bench plugin`: how long `kubectl apikey` takes at a terminal, and how it
//! does as the namespace grows, measured on the real API server named by `KUBECONFIG`.
//!
//! The processes measured are the release binaries `target/release/kubectl-apikey` and
//! `target/release/keyward` (`make bench` builds them; the bench stops at once, saying so, when
//! either is missing), each started as a child process. Before anything is measured, the bench
//! makes a fresh namespace and starts `keyward controller --namespaces <ns> --listen
//! 127.0.0.1:0` for it (logs in `target/bench/plugin-controller.log`), which runs until the end.
//!
//! Figures, printed as a table at the end and written to `target/bench/plugin.json`:
//!
//! 1. `create` end to end: `kubectl-apikey -n <ns> create bench-<i>`, run
//!    `KEYWARD_BENCH_PLUGIN_CREATES` (20) times one after another; the wall time of each from
//!    spawn to exit, reported as p50, p95 (the max when fewer than 20 runs) and max. Every run
//!    must exit 0 and print a token on stdout; the token is never printed nor stored, only its
//!    hash, which must be the one the key's status records. For comparison, the median wall
//!    time of `kubectl-apikey -n <ns> describe bench-0` over as many runs (one process start, a
//!    GET and an events LIST): the difference is, roughly, the controller issuing the token
//!    and the plugin's wait for it.
//! 2. `list` and `verify` as the namespace grows: the bench fills the namespace (the `bench-*`
//!    keys included) to `KEYWARD_BENCH_PLUGIN_SMALL` (1,000) and then to
//!    `KEYWARD_BENCH_PLUGIN_KEYS` (10,000) ApiKeys, created through the API
//!    `KEYWARD_BENCH_PLUGIN_CONCURRENCY` (64) at a time and issued by the running controller
//!    (a watch waits, with a deadline, until every one is Active; then until the controller has
//!    gone idle). At each size, the median wall time over `KEYWARD_BENCH_PLUGIN_ROUNDS` (5)
//!    rounds of `list` (the table), `list -o json`, and `verify` with bench-0's token on stdin
//!    (read from its Secret by the bench, held in memory only); each output is checked (every
//!    key listed, `VALID`). In each round `list -o json` and `verify` also run once more under
//!    GNU time (`/usr/bin/time -f %M`; the Debian package `time` is installed with apt-get when
//!    missing) for the plugin process's peak RSS: the highest of the rounds is reported. The
//!    time to fill is reported too, for information.
//!
//! Also: WARN and ERROR lines in the controller's log. `KEYWARD_BENCH_PLUGIN_SMALL=0` (or
//! `KEYWARD_BENCH_PLUGIN_KEYS=0`) skips that size; a size below the number of `create` runs is
//! refused. `KEYWARD_BENCH_LOG` (`info`) is the controller's `RUST_LOG`;
//! `KEYWARD_BENCH_KEEP_NAMESPACES=1` leaves the namespace for inspection.
//!
//! The namespace carries the label `keyward.io/bench=plugin`; leftovers of an interrupted run
//! are deleted (and waited for) at the start, and the bench's own namespace at the end (without
//! waiting: `make bench` throws the control plane away afterwards).

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use keyward::api::{ApiKey, ApiKeySpec, Phase, SECRET_TOKEN_KEY};
use keyward::token::Token;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde::Serialize;

#[path = "../common/mod.rs"]
mod common;
mod figures;
mod kubectl;

use common::process::Process;
use common::{MANAGER, Outcome, Progress, Result, env_number, install_crds, median, nearest_rank, release_binary};
use figures::{CreateFigures, Figures, SizeFigures, print_table};
use kubectl::{Plugin, check_json, check_table, check_verify, ensure_gnu_time};

/// The value of the label `common::BENCH_LABEL` on this bench's namespaces.
const BENCH_LABEL_VALUE: &str = "plugin";
/// GNU time, which reports a child's peak RSS (`%M`, in KiB).
const GNU_TIME: &str = "/usr/bin/time";
/// The longest any one plugin process may take.
const PROCESS_LIMIT: Duration = Duration::from_secs(300);
/// The key whose token `verify` is given, and which `describe` shows.
const PROBE: &str = "bench-0";

/// What to run, from `KEYWARD_BENCH_PLUGIN_*` variables.
#[derive(Clone, Debug, Serialize)]
struct Settings {
    /// `create` runs, one after another (and as many `describe` runs).
    creates: usize,
    /// The namespace's key counts at which `list` and `verify` are measured; 0 skips one.
    small: usize,
    keys: usize,
    /// Runs per command and size.
    rounds: usize,
    /// ApiKey creates in flight while filling the namespace.
    concurrency: usize,
}

impl Settings {
    fn from_env() -> Result<Self> {
        let settings = Self {
            creates: env_number("KEYWARD_BENCH_PLUGIN_CREATES", 20)?,
            small: env_number("KEYWARD_BENCH_PLUGIN_SMALL", 1000)?,
            keys: env_number("KEYWARD_BENCH_PLUGIN_KEYS", 10_000)?,
            rounds: env_number("KEYWARD_BENCH_PLUGIN_ROUNDS", 5)?.max(1),
            concurrency: env_number("KEYWARD_BENCH_PLUGIN_CONCURRENCY", 64)?.max(1),
        };
        if settings.creates == 0 {
            return Err("KEYWARD_BENCH_PLUGIN_CREATES must be at least 1: verify and describe use bench-0".into());
        }
        if let Some(&size) = settings.sizes().first()
            && size < settings.creates
        {
            return Err(format!(
                "a namespace size of {size} keys is below the {} keys `create` makes; raise \
                 KEYWARD_BENCH_PLUGIN_SMALL (or set it to 0 to skip it)",
                settings.creates
            )
            .into());
        }
        Ok(settings)
    }

    /// The namespace sizes measured, smallest first.
    fn sizes(&self) -> Vec<usize> {
        let mut sizes: Vec<usize> = [self.small, self.keys].into_iter().filter(|&n| n > 0).collect();
        sizes.sort_unstable();
        sizes.dedup();
        sizes
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
    /// The release binaries.
    keyward: PathBuf,
    plugin: PathBuf,
    /// Where GNU time writes what it measured.
    scratch: tempfile::TempDir,
    namespace: Option<String>,
    controller: Option<Process>,
    figures: Figures,
    progress: Progress,
}

impl common::Bench for Bench {
    type Figures = Figures;
    const NAME: &'static str = "plugin";

    async fn run(&mut self) -> Result<()> {
        self.progress.say(&format!("settings: {:?}", self.settings));
        self.progress.say(&format!("binaries: {} and {}", self.plugin.display(), self.keyward.display()));
        self.figures.gnu_time = Some(ensure_gnu_time().await?);
        install_crds(&self.client, MANAGER).await?;
        common::remove_leftovers(&self.client, BENCH_LABEL_VALUE, |m| self.progress.say(m)).await?;
        let ns = format!("kwbench-plugin-{}", common::random_suffix());
        common::create_namespace(&self.client, &ns, BENCH_LABEL_VALUE).await?;
        self.namespace = Some(ns.clone());
        let log = self.out_dir.join("plugin-controller.log");
        self.progress.say(&format!("starting keyward controller for {ns} (log {})", log.display()));
        let args = ["controller", "--namespaces", &ns, "--listen", "127.0.0.1:0"].map(String::from);
        let mut controller = Process::keyward(&self.keyward, &args, &log)?;
        controller.wait_ready(Duration::from_secs(120)).await?;
        self.controller = Some(controller);
        let plugin = Plugin { path: self.plugin.clone(), namespace: ns.clone() };

        self.creates(&plugin).await?;
        let keys: Api<ApiKey> = Api::namespaced(self.client.clone(), &ns);
        let token = self.probe_token(&ns).await?;
        let mut count = self.settings.creates;
        for n in self.settings.sizes() {
            let mut figures = SizeFigures { keys: n, created: n - count, ..SizeFigures::default() };
            self.fill(&keys, count, n, &mut figures).await?;
            count = n;
            self.measure(&plugin, &token, &mut figures).await?;
            self.figures.sizes.push(figures);
        }
        self.controller()?.check_alive()?;
        Ok(())
    }

    /// Stops the controller (counting its log's warnings) and deletes the namespace.
    async fn cleanup(&mut self) {
        if let Some(controller) = self.controller.take() {
            let levels = controller.log_levels();
            self.figures.controller_log_warnings = levels.warnings;
            self.figures.controller_log_errors = levels.errors;
            self.figures.controller_log_samples = levels.samples;
            controller.stop().await;
        }
        let namespaces: Vec<String> = self.namespace.take().into_iter().collect();
        common::delete_namespaces_now(&self.client, &namespaces, &self.progress).await;
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
        let settings = Settings::from_env()?;
        let keyward = release_binary("keyward")?;
        let plugin = release_binary("kubectl-apikey")?;
        if std::env::var_os("KUBECONFIG").is_none() {
            return Err("KUBECONFIG must name the API server to measure (see `make bench`)".into());
        }
        let client = Client::try_default().await.map_err(|e| format!("a client from KUBECONFIG: {e}"))?;
        std::fs::create_dir_all(&out_dir).map_err(|e| format!("create {}: {e}", out_dir.display()))?;
        Ok(Self {
            client,
            figures: Figures { settings: Some(settings.clone()), ..Figures::default() },
            settings,
            out_dir,
            keyward,
            plugin,
            scratch: tempfile::tempdir()?,
            namespace: None,
            controller: None,
            progress: Progress::start(),
        })
    }

    fn controller(&self) -> Result<&Process> {
        self.controller.as_ref().ok_or_else(|| "no controller running".into())
    }

    // -- Part 1 ---------------------------------------------------------------------------

    /// `create bench-<i>` one after another, then `describe bench-0` as many times.
    async fn creates(&mut self, plugin: &Plugin) -> Result<()> {
        let n = self.settings.creates;
        self.progress.say(&format!("create: {n} runs of `kubectl-apikey -n {} create bench-<i>`", plugin.namespace));
        let mut figures = CreateFigures::default();
        // Only the hashes of the tokens printed are kept, to be checked against the statuses.
        let mut hashes = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("bench-{i}");
            let run = plugin.run(&["create", &name], None).await?;
            if !run.status.success() {
                // stderr never holds the token; stdout is left out all the same.
                return Err(self.controller()?.explain(run.failure(&format!("create {name}"))));
            }
            let printed = std::str::from_utf8(&run.stdout).ok().and_then(|text| Token::parse(text.trim()).ok());
            let Some(token) = printed else {
                return Err(format!(
                    "create {name} exited 0 but its stdout ({} bytes, not shown) is not one token",
                    run.stdout.len()
                )
                .into());
            };
            hashes.push((name, token.hash().to_string()));
            figures.runs_ms.push(run.ms);
            if (i + 1) % 5 == 0 || i + 1 == n {
                self.progress.say(&format!("  {} of {n} created, the last in {:.0} ms", i + 1, run.ms));
            }
        }
        let keys: Api<ApiKey> = Api::namespaced(self.client.clone(), &plugin.namespace);
        for (name, hash) in &hashes {
            let key = keys.get(name).await.map_err(|e| format!("get ApiKey {name}: {e}"))?;
            let recorded = key.status.as_ref().and_then(|s| s.record.token_hash.as_deref());
            if recorded != Some(hash.as_str()) {
                return Err(format!("the token create printed for {name} is not the one its status records").into());
            }
            figures.tokens_matching_status += 1;
        }
        let mut sorted = figures.runs_ms.clone();
        sorted.sort_by(f64::total_cmp);
        figures.p50_ms = median(&sorted).unwrap_or(f64::NAN);
        figures.max_ms = sorted.last().copied().unwrap_or(f64::NAN);
        figures.p95_is_max = n < 20;
        figures.p95_ms = if figures.p95_is_max { figures.max_ms } else { nearest_rank(&sorted, 0.95) };
        self.progress.say(&format!(
            "create: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms; describe {PROBE}: {n} runs",
            figures.p50_ms, figures.p95_ms, figures.max_ms
        ));
        for _ in 0..n {
            let run = plugin.run(&["describe", PROBE], None).await?;
            if !run.status.success() {
                return Err(run.failure(&format!("describe {PROBE}")));
            }
            if !String::from_utf8_lossy(&run.stdout).contains(PROBE) {
                return Err(format!("describe {PROBE} exited 0 without naming {PROBE}").into());
            }
            figures.describe_runs_ms.push(run.ms);
        }
        figures.describe_median_ms = median(&figures.describe_runs_ms).unwrap_or(f64::NAN);
        figures.create_over_describe_ms = figures.p50_ms - figures.describe_median_ms;
        self.progress.say(&format!("describe {PROBE}: median {:.0} ms", figures.describe_median_ms));
        self.figures.create = Some(figures);
        Ok(())
    }

    /// The token of [`PROBE`], from its Secret: held in memory, handed to `verify` on stdin.
    async fn probe_token(&self, ns: &str) -> Result<String> {
        let key = Api::<ApiKey>::namespaced(self.client.clone(), ns).get(PROBE).await?;
        let secret_name = key.status.and_then(|s| s.record.secret_name).unwrap_or_else(|| format!("{PROBE}-apikey"));
        let secret = Api::<Secret>::namespaced(self.client.clone(), ns)
            .get(&secret_name)
            .await
            .map_err(|e| format!("get Secret {secret_name}: {e}"))?;
        let bytes = secret.data.and_then(|mut data| data.remove(SECRET_TOKEN_KEY)).map(|b| b.0).unwrap_or_default();
        let token = String::from_utf8(bytes).map_err(|_| format!("Secret {secret_name} holds no text token"))?;
        Token::parse(&token).map_err(|_| format!("Secret {secret_name} holds no well-formed token"))?;
        Ok(token)
    }

    // -- Part 2 ---------------------------------------------------------------------------

    /// Creates ApiKeys until the namespace holds `n`, `concurrency` in flight, and waits until
    /// the controller has issued every one and gone idle.
    async fn fill(&mut self, keys: &Api<ApiKey>, from: usize, n: usize, figures: &mut SizeFigures) -> Result<()> {
        let names: Vec<String> = (from..n).map(|i| format!("key-{i:05}")).collect();
        self.progress.say(&format!("fill: creating {} ApiKeys to reach {n}", names.len()));
        let started = Instant::now();
        futures::stream::iter(&names)
            .map(|name| create_key(keys, name))
            .buffer_unordered(self.settings.concurrency)
            .try_collect::<()>()
            .await?;
        self.progress.say(&format!(
            "fill: {} created in {:.1} s; waiting until all are Active",
            names.len(),
            started.elapsed().as_secs_f64()
        ));
        let deadline = Duration::from_secs(120) + Duration::from_millis(50) * u32::try_from(n).unwrap_or(u32::MAX);
        if let Err(error) = self.wait_all_active(keys.clone(), names.into_iter().collect(), deadline).await {
            return Err(self.controller()?.explain(error));
        }
        figures.fill_secs = started.elapsed().as_secs_f64();
        self.progress.say(&format!("fill: all {n} ApiKeys Active after {:.1} s", figures.fill_secs));
        let settled = Instant::now();
        if !wait_idle(self.controller()?, Duration::from_secs(300)).await? {
            self.progress.warn(
                &mut self.figures.outcome,
                format!("the controller was still busy 5 minutes after {n} keys were Active"),
            );
        }
        figures.settle_secs = settled.elapsed().as_secs_f64();
        self.progress.say(&format!("fill: the controller idle {:.1} s later", figures.settle_secs));
        Ok(())
    }

    /// Waits until a watch has seen every one of `names` Active at its current generation, as
    /// tests/support's `wait_all_active` does; fails at once when one is refused.
    async fn wait_all_active(&self, keys: Api<ApiKey>, mut pending: HashSet<String>, deadline: Duration) -> Result<()> {
        let total = pending.len();
        let mut events = watcher(keys, watcher::Config::default().any_semantic()).default_backoff().boxed();
        let until = tokio::time::Instant::now() + deadline;
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        tick.tick().await;
        while !pending.is_empty() {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(watcher::Event::Apply(key) | watcher::Event::InitApply(key))) => {
                        let status = key.status.as_ref();
                        if status.and_then(|s| s.record.phase) == Some(Phase::Failed) {
                            return Err(format!("the controller refused ApiKey {}", key.name_any()).into());
                        }
                        let current = status.is_some_and(|s| s.observed_generation == key.metadata.generation);
                        if current && status.and_then(|s| s.record.phase) == Some(Phase::Active) {
                            pending.remove(&key.name_any());
                        }
                    }
                    Some(Ok(_)) => {}
                    // The backoff tries again; a re-list applies everything anew.
                    Some(Err(error)) => self.progress.say(&format!("the ApiKey watch failed ({error}); trying again")),
                    None => return Err("the ApiKey watch ended".into()),
                },
                _ = tick.tick() => self.progress.say(&format!("  {} of {total} Active", total - pending.len())),
                () = tokio::time::sleep_until(until) => {
                    let some: Vec<&String> = pending.iter().take(5).collect();
                    return Err(format!(
                        "{} of {total} ApiKeys were not Active within {deadline:?}, e.g. {some:?}",
                        pending.len()
                    )
                    .into());
                }
            }
        }
        Ok(())
    }

    /// `list`, `list -o json` and `verify` over the rounds, each timed, and the last two once
    /// more per round under GNU time for their peak RSS.
    async fn measure(&mut self, plugin: &Plugin, token: &str, figures: &mut SizeFigures) -> Result<()> {
        let (n, rounds) = (figures.keys, self.settings.rounds);
        let rss_file = self.scratch.path().join("max-rss");
        for round in 1..=rounds {
            let run = plugin.run(&["list"], None).await?;
            check_table(&run, n)?;
            figures.list_table.push(run.ms);
            let table_ms = run.ms;

            let run = plugin.run(&["list", "-o", "json"], None).await?;
            check_json(&run, n)?;
            figures.list_json.push(run.ms);
            figures.list_json_bytes = run.stdout.len();
            let json_ms = run.ms;

            let run = plugin.run(&["verify"], Some(token)).await?;
            check_verify(&run)?;
            figures.verify.push(run.ms);
            let verify_ms = run.ms;

            let (run, json_mib) = plugin.peak_rss(&["list", "-o", "json"], None, &rss_file).await?;
            check_json(&run, n)?;
            figures.list_json_rss.push(json_mib);
            let (run, verify_mib) = plugin.peak_rss(&["verify"], Some(token), &rss_file).await?;
            check_verify(&run)?;
            figures.verify_rss.push(verify_mib);
            self.progress.say(&format!(
                "{n} keys, round {round} of {rounds}: list {table_ms:.0} ms, list -o json {json_ms:.0} ms \
                 ({json_mib:.1} MiB peak RSS), verify {verify_ms:.0} ms ({verify_mib:.1} MiB)"
            ));
        }
        Ok(())
    }

    // -- The namespace --------------------------------------------------------------------
}

/// Creates one ApiKey with the default spec. A failed request is tried again a few times, 1,
/// 2, 4 and 8 s apart: one hiccup of the API server must not end a long run.
async fn create_key(keys: &Api<ApiKey>, name: &str) -> Result<()> {
    let key = ApiKey::new(name, ApiKeySpec::default());
    let mut pause = Duration::from_secs(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match keys.create(&PostParams::default(), &key).await {
            // 409: an earlier try that got through but whose answer was lost.
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => return Ok(()),
            Err(error) if attempt < 5 => {
                eprintln!("create ApiKey {name}: {error}; trying again in {pause:?}");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(error) => return Err(format!("create ApiKey {name}: {error}").into()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The controller

/// Waits until the controller has run no reconcile and sent no write for 3 s; `false` when
/// `limit` passes first.
async fn wait_idle(controller: &Process, limit: Duration) -> Result<bool> {
    const QUIET: Duration = Duration::from_secs(3);
    let deadline = Instant::now() + limit;
    let mut last = activity(controller).await?;
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = activity(controller).await?;
        if now != last {
            (last, quiet_since) = (now, Instant::now());
        } else if quiet_since.elapsed() >= QUIET {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `keyward_reconciles_total` and `keyward_api_writes_total`, every series added up.
async fn activity(controller: &Process) -> Result<u64> {
    controller.check_alive()?;
    let writes: u64 = controller.counter("keyward_api_writes_total").await?.values().sum();
    Ok(controller.reconciles().await? + writes)
}
