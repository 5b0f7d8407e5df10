//! `cargo bench --bench usage`: what recording usage (issue 16) costs `keyward verifier`: its
//! answers, its API writes and its memory, on one stack in one run.
//!
//! On the API server named by `KUBECONFIG` (without the controller), the bench creates ApiKeys
//! granting `orders.read` in fresh namespaces and writes each one's status itself, as the
//! controller does (the keys of the verifier bench). It starts the real `keyward verifier` (the
//! release binary) over them, recording (`--usage-flush-interval` and `--usage-resolution 1s`,
//! so that every flush has something new to write) or not (`--usage-flush-interval 0s`). Every
//! request is `GET /v1/auth?scope=orders.read` answered VALID and names an application
//! (`X-Keyward-App`), one of `KEYWARD_BENCH_USAGE_APPS` (4) spread over the keys, so sightings
//! hold applications too.
//!
//! 1. Answers: two verifiers over the same `KEYWARD_BENCH_USAGE_KEYS` (1,000) keys, one
//!    recording with a 5 s flush (so flushes write during the measures), one not. Once the
//!    recording one has created the KeyUsages (part 2 measures that), `wrk` (over keep-alive
//!    loopback connections, `KEYWARD_BENCH_USAGE_CONNECTIONS`, 32, on
//!    `KEYWARD_BENCH_USAGE_THREADS`, 2, threads) presents the tokens in turn to one then the
//!    other, `KEYWARD_BENCH_USAGE_ROUNDS` (3) rounds of `KEYWARD_BENCH_USAGE_SECS` (10) seconds
//!    each, each round starting with the other. Each round with recording follows 5 s (one
//!    flush interval) of the same load, so that it bears the writes of two flushes whatever
//!    their phase, as in a steady state; after it, the bench waits until the recording verifier
//!    has flushed what it saw, so that no round without recording bears any. Goals (medians over the rounds):
//!    recording's req/s at least 0.9 of not recording's, its p99 at most 1.2 times. Beside them,
//!    each verifier's CPU time per request, the control plane's (kube-apiserver and etcd, from
//!    `/proc`) in each round and how long the verifier's threads waited for a core (their
//!    run-queue time, `/proc/<pid>/task/*/schedstat`): all share the machine's cores, and only
//!    the recording verifier makes the control plane work.
//! 2. Writes: one verifier recording with a 10 s flush over `KEYWARD_BENCH_USAGE_MANY_KEYS`
//!    (10,000) keys in another namespace, under a paced load that presents each token about once
//!    a second: `wrk` with one thread, `KEYWARD_BENCH_USAGE_PACED_CONNECTIONS` (120)
//!    connections each waiting `KEYWARD_BENCH_USAGE_PACED_DELAY_MS` (10) ms before each request,
//!    taking turns over the tokens. The bench reads the verifier's counters every quarter second
//!    and, at each flush, the API server's `apiserver_request_total` on keyusages and the control
//!    plane's CPU time. The flushes that create the KeyUsages (a GET, a create and a status write
//!    each) are reported apart, then `KEYWARD_BENCH_USAGE_INTERVALS` (3) flushes: writes per key,
//!    keys touched (the recorder's held applications, one per key), the time between flushes and
//!    writing. Then the load stops and the bench waits for a flush with nothing to write: over
//!    the whole run, from nothing written to nothing left, creates per key (goal 1), status
//!    writes per key per flush (goal at most 1: per key taken, exact whichever flush a write was
//!    counted in), the verifier's count of writes against the API server's, conflicts and
//!    failures, and the control plane's CPU time per write and the verifier's (in the flushes
//!    after the load stopped, where it does little else).
//! 3. Memory: the VmRSS and VmHWM of a verifier not recording over the same 10,000 keys after
//!    `KEYWARD_BENCH_USAGE_OFF_SECS` (5) seconds of the same paced load, of the recording one
//!    once its measured flushes are in, and of the recording one again after
//!    `KEYWARD_BENCH_USAGE_FLOOD_APPS` (10,000) random application names presented with one key
//!    for 3 s (that key's KeyUsage must then hold 64 applications and count the rest).
//!
//! Any answer but 200 fails the run, as does a KeyUsage that does not show the sightings.
//! Figures in a table at the end and in `target/bench/usage.json`; the verifiers' logs in
//! `target/bench/usage-verifier-*.log` (they never hold a token; the `wrk` scripts, which do,
//! live in a temporary directory). `KEYWARD_BENCH_LOG` (`info`) is the verifiers' `RUST_LOG`;
//! `KEYWARD_BENCH_KEEP_NAMESPACES=1` leaves the namespaces. `wrk` is installed with apt-get when
//! missing. Namespaces carry the label `keyward.io/bench=usage`; an interrupted run's are
//! deleted at the start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use jiff::SignedDuration;
use keyward::api::{ApiKey, ApiKeySpec, KeyUsage, Kind};
use keyward::token::Token;
use kube::Client;
use kube::api::Api;
use serde::Serialize;
use tokio::process::Command;

#[path = "../verifier/api.rs"]
mod api;
#[path = "../common/mod.rs"]
mod common;
mod figures;
mod flushes;
mod load;
#[path = "../verifier/wrk.rs"]
mod wrk;

use common::metrics::total;
use common::process::{Process, control_plane_pids, cpu_secs};
use common::{MANAGER, Outcome, Progress, Result, env_number};
use figures::{Creation, Figures, LoadFigures, Memory, Steady, Totals, UsageSample, print_table};
use flushes::{Flush, Phase, Watch};
use load::Background;
use wrk::{WrkRun, ensure_wrk};

/// The value of the label `common::BENCH_LABEL` on this bench's namespaces.
const BENCH_LABEL_VALUE: &str = "usage";
/// The scope every key grants and every request requires.
const SCOPE: &str = "orders.read";
/// The path of every request (and, for `wrk`, of its command line).
const AUTH_PATH: &str = "/v1/auth?scope=orders.read";
/// Expiry of the keys, the operator's default.
const EXPIRY: SignedDuration = SignedDuration::from_secs(keyward::api::expiry::DEFAULT_EXPIRY.as_secs() as i64);
/// `--usage-flush-interval` of the verifier not recording, of part 1's recording one (flushes
/// during every measure) and of part 2's.
pub const OFF: &str = "0s";
pub const FAST_FLUSH: &str = "5s";
pub const FLUSH: &str = "10s";
const FLUSH_SECS: u64 = 10;
/// `--usage-resolution` of the recording verifiers: a key used each second has a new last use
/// at every flush.
pub const RESOLUTION: &str = "1s";
/// A short `wrk` run on each side before part 1's measures.
const WARM_UP_SECS: u64 = 2;
/// The load on the recording verifier just before each of its rounds: one `FAST_FLUSH`.
const PRE_ROLL_SECS: u64 = 5;
/// Seconds of the flood of application names, and its connections.
const FLOOD_SECS: u64 = 3;
const FLOOD_CONNECTIONS: usize = 8;
/// How long part 1's recording verifier may take to create its KeyUsages.
const CREATED_WITHIN: Duration = Duration::from_secs(120);
/// How long the flood's sightings may take to reach the KeyUsage.
const FLOOD_FLUSHED_WITHIN: Duration = Duration::from_secs(90);

fn main() -> ExitCode {
    bench()
}

fn key_spec() -> Result<ApiKeySpec> {
    Ok(serde_json::from_value(serde_json::json!({ "scopes": [SCOPE] }))?)
}

fn key_name(i: usize) -> String {
    format!("key-{i:06}")
}

/// What to run, from `KEYWARD_BENCH_USAGE_*` variables.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// Part 1's ApiKeys, whose tokens `wrk` presents in turn.
    pub keys: usize,
    pub rounds: usize,
    /// Seconds of each `wrk` measure of part 1.
    pub secs: u64,
    pub connections: usize,
    pub threads: usize,
    /// Applications the requests name, spread over the keys.
    pub apps: usize,
    /// Parts 2 and 3's ApiKeys.
    pub many_keys: usize,
    /// Flushes measured after those that create the KeyUsages.
    pub intervals: usize,
    /// The paced load: connections, each waiting this long before each request.
    pub paced_connections: usize,
    pub paced_delay_ms: u64,
    /// Seconds of the paced load on the verifier not recording, before its RSS.
    pub off_secs: u64,
    /// Random application names presented with one key.
    pub flood_apps: usize,
    /// ApiKeys created (and their status written) at once.
    pub concurrency: usize,
    /// Part 1's recording verifier's `--usage-flush-interval` and `--usage-resolution`
    /// (`KEYWARD_BENCH_USAGE_ON_FLUSH`, `_ON_RESOLUTION`; the verifier's defaults are 60s and 1m).
    pub on_flush: String,
    pub on_resolution: String,
}

impl Settings {
    fn from_env() -> Result<Self> {
        let var = |name: &str| format!("KEYWARD_BENCH_USAGE_{name}");
        let connections = env_number(&var("CONNECTIONS"), 32)?.max(1);
        Ok(Self {
            keys: env_number(&var("KEYS"), 1000)?.max(1),
            rounds: env_number(&var("ROUNDS"), 3)?.max(1),
            secs: env_number(&var("SECS"), 10)?.max(1),
            connections,
            threads: env_number(&var("THREADS"), 2)?.clamp(1, connections),
            apps: env_number(&var("APPS"), 4)?.max(1),
            many_keys: env_number(&var("MANY_KEYS"), 10_000)?.max(1),
            intervals: env_number(&var("INTERVALS"), 3)?.max(1),
            paced_connections: env_number(&var("PACED_CONNECTIONS"), 120)?.max(1),
            paced_delay_ms: env_number(&var("PACED_DELAY_MS"), 10)?,
            off_secs: env_number(&var("OFF_SECS"), 5)?.max(1),
            flood_apps: env_number(&var("FLOOD_APPS"), 10_000)?.max(1),
            concurrency: env_number(&var("CONCURRENCY"), 64)?.max(1),
            on_flush: std::env::var(var("ON_FLUSH")).unwrap_or_else(|_| FAST_FLUSH.to_string()),
            on_resolution: std::env::var(var("ON_RESOLUTION")).unwrap_or_else(|_| RESOLUTION.to_string()),
        })
    }
}

#[tokio::main]
async fn bench() -> ExitCode {
    common::main(async { Bench::new(common::out_dir()) }).await
}

struct Bench {
    settings: Settings,
    out_dir: PathBuf,
    /// Holds the `wrk` scripts, which hold tokens.
    scratch: tempfile::TempDir,
    /// The namespaces, deleted at the end.
    namespaces: Option<(Client, Vec<String>)>,
    control_plane: ControlPlane,
    figures: Figures,
    progress: Progress,
}

/// Part 1's two verifiers, in the order of its first round.
const SIDES: [Side; 2] = [Side::On, Side::Off];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    On,
    Off,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::On => "recording on",
            Side::Off => "recording off",
        }
    }
}

impl common::Bench for Bench {
    type Figures = Figures;
    const NAME: &'static str = "usage";

    async fn run(&mut self) -> Result<()> {
        self.progress.say(&format!("settings: {:?}", self.settings));
        if std::env::var_os("KUBECONFIG").is_none() {
            return Err("KUBECONFIG must name the API server (see `make bench`): the verifiers read the keys \
                        from it and write the KeyUsages to it"
                .into());
        }
        let client = Client::try_default().await.map_err(|e| format!("a client from KUBECONFIG: {e}"))?;
        self.figures.wrk = Some(ensure_wrk().await?);
        common::install_crds(&client, MANAGER).await?;
        common::remove_leftovers(&client, BENCH_LABEL_VALUE, |m| self.progress.say(m)).await?;
        let suffix = common::random_suffix();
        let (few, many) = (format!("kwbench-usage-{suffix}"), format!("kwbench-usage-{suffix}-many"));
        for ns in [&few, &many] {
            common::create_namespace(&client, ns, BENCH_LABEL_VALUE).await?;
            self.namespaces.get_or_insert_with(|| (client.clone(), Vec::new())).1.push(ns.clone());
        }

        let (tokens, secs) = self.create_keys(&client, &few, self.settings.keys).await?;
        self.figures.create_keys_secs = Some(secs);
        self.measure_answers(&client, &few, &tokens).await?;
        let (tokens, secs) = self.create_keys(&client, &many, self.settings.many_keys).await?;
        self.figures.create_many_keys_secs = Some(secs);
        self.measure_writes(&client, &many, &tokens).await
    }

    async fn cleanup(&mut self) {
        let Some((client, namespaces)) = self.namespaces.take() else { return };
        common::delete_namespaces_now(&client, &namespaces, &self.progress).await;
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
    fn new(out_dir: PathBuf) -> Result<Self> {
        let settings = Settings::from_env()?;
        std::fs::create_dir_all(&out_dir).map_err(|e| format!("create {}: {e}", out_dir.display()))?;
        Ok(Self {
            figures: Figures { settings: Some(settings.clone()), ..Figures::default() },
            settings,
            out_dir,
            scratch: tempfile::tempdir()?,
            namespaces: None,
            control_plane: ControlPlane::of_kubeconfig(),
            progress: Progress::start(),
        })
    }

    /// `n` ApiKeys with their status in `ns`, `concurrency` at once; returns their tokens (in
    /// the keys' order) and the seconds it took.
    async fn create_keys(&mut self, client: &Client, ns: &str, n: usize) -> Result<(Vec<String>, f64)> {
        self.progress.say(&format!("creating {n} ApiKeys with their status in {ns}"));
        let keys: Api<ApiKey> = Api::namespaced(client.clone(), ns);
        let started = Instant::now();
        let keys = &keys;
        let tokens: Vec<Token> = futures::stream::iter(0..n)
            .map(|i| async move { api::create_active_key(keys, &key_name(i)).await })
            .buffered(self.settings.concurrency)
            .try_collect()
            .await?;
        let secs = started.elapsed().as_secs_f64();
        self.progress.say(&format!("{n} ApiKeys created in {secs:.1} s"));
        Ok((tokens.iter().map(|t| t.expose().to_string()).collect(), secs))
    }

    /// `keyward verifier` over `ns` with `--usage-flush-interval flush`; once ready, checks that
    /// it indexed the `keys`.
    async fn start_verifier(&mut self, ns: &str, flush: &str, label: &str, keys: usize) -> Result<Process> {
        self.start_verifier_at(ns, flush, RESOLUTION, label, keys).await
    }

    /// [`Self::start_verifier`] with `--usage-resolution resolution`.
    async fn start_verifier_at(
        &mut self,
        ns: &str,
        flush: &str,
        resolution: &str,
        label: &str,
        keys: usize,
    ) -> Result<Process> {
        let log = self.out_dir.join(format!("usage-verifier-{label}.log"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_keyward"));
        command
            .args(["verifier", "--namespaces", ns, "--listen", "127.0.0.1:0"])
            .args(["--usage-flush-interval", flush, "--usage-resolution", resolution])
            .env("RUST_LOG", std::env::var("KEYWARD_BENCH_LOG").unwrap_or_else(|_| "info".into()));
        let mut verifier = Process::spawn(&format!("verifier-{label}"), command, &log, false)?;
        self.progress.say(&format!("verifier-{label}: started (pid {}, log {})", verifier.pid, log.display()));
        let ready = verifier.wait_ready(Duration::from_secs(120)).await?;
        self.progress.say(&format!("verifier-{label}: ready after {:.2} s", ready.ready_secs));
        let indexed = total(&verifier.metrics().await?, "keyward_verifier_indexed_tokens").unwrap_or(0.0) as usize;
        if indexed != keys {
            return Err(verifier.explain(format!("the verifier indexed {indexed} tokens, not {keys}").into()));
        }
        Ok(verifier)
    }

    /// Stops a verifier, keeping the warnings it logged.
    async fn stop_verifier(&mut self, verifier: Process) {
        let warnings = verifier.log_levels().samples;
        let name = verifier.name.clone();
        verifier.stop().await;
        if !warnings.is_empty() {
            self.progress.warn(&mut self.figures.outcome, format!("{name} logged warnings: {warnings:?}"));
        }
    }

    /// Part 1: `/v1/auth` on a verifier recording against one not recording, in turns.
    async fn measure_answers(&mut self, client: &Client, ns: &str, tokens: &[String]) -> Result<()> {
        let keys = tokens.len();
        let (flush, resolution) = (self.settings.on_flush.clone(), self.settings.on_resolution.clone());
        let on = self.start_verifier_at(ns, &flush, &resolution, "on", keys).await?;
        let off = self.start_verifier(ns, OFF, "off", keys).await?;
        let script = load::write_app_script(self.scratch.path(), "apps", tokens, self.settings.apps)?;
        let verifiers = [&on, &off];
        for (side, verifier) in SIDES.iter().zip(verifiers) {
            check_valid(verifier, &tokens[0]).await?;
            self.progress.say(&format!("{}: warming up for {WARM_UP_SECS} s", side.name()));
            let addr = verifier.addr().ok_or("the verifier has not said where it listens")?;
            wrk::run(addr, verifier.pid, &script, self.settings.threads, self.settings.connections, WARM_UP_SECS)
                .await?;
        }
        self.progress
            .say("waiting until the recording verifier has created the KeyUsages: the rounds measure its patches");
        wait_created(&on, keys).await?;
        let (threads, connections, secs) = (self.settings.threads, self.settings.connections, self.settings.secs);
        let (flushes_before, writes_before) = recorder_counts(&on).await?;
        let mut runs: [Vec<WrkRun>; SIDES.len()] = Default::default();
        let mut control_plane_cpu: [Vec<f64>; SIDES.len()] = Default::default();
        let mut runqueue_wait: [Vec<f64>; SIDES.len()] = Default::default();
        let mut previous = None;
        for round in 0..self.settings.rounds {
            for s in (0..SIDES.len()).map(|s| (s + round) % SIDES.len()) {
                if SIDES[s] == Side::Off && previous == Some(Side::On) {
                    // Else the recording verifier's writes would load the shared cores during
                    // this round.
                    wait_flushed(&on).await?;
                }
                previous = Some(SIDES[s]);
                let verifier = verifiers[s];
                let addr = verifier.addr().ok_or("the verifier has not said where it listens")?;
                if SIDES[s] == Side::On {
                    // A flush interval of load first: the round then starts in the steady state,
                    // the writes of the flush before running into it as its own run out of it,
                    // whatever the phase of the flushes.
                    wrk::run(addr, verifier.pid, &script, threads, connections, PRE_ROLL_SECS).await?;
                }
                let (cpu_before, wait_before) = (self.control_plane.total_cpu_secs(), runqueue_wait_secs(verifier.pid));
                let run = wrk::run(addr, verifier.pid, &script, threads, connections, secs).await?;
                let cpu = self.control_plane.total_cpu_secs() - cpu_before;
                let wait = runqueue_wait_secs(verifier.pid).zip(wait_before).map(|(after, before)| after - before);
                self.progress.say(&format!(
                    "round {}, {}: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms, verifier CPU {:.1} us/request, verifier \
                     run-queue wait {:.2} s, control plane CPU {cpu:.2} s",
                    round + 1,
                    SIDES[s].name(),
                    run.rps,
                    run.p50_ms,
                    run.p99_ms,
                    run.server_cpu_us_per_request.unwrap_or(f64::NAN),
                    wait.unwrap_or(f64::NAN),
                ));
                if run.socket_errors > 0 {
                    let warning = format!("{}: {} socket errors", SIDES[s].name(), run.socket_errors);
                    self.progress.warn(&mut self.figures.outcome, warning);
                }
                runs[s].push(run);
                control_plane_cpu[s].push(cpu);
                runqueue_wait[s].push(wait.unwrap_or(f64::NAN));
            }
        }
        let (flushes_after, writes_after) = recorder_counts(&on).await?;
        self.figures.flushes_during_rounds = Some(flushes_after - flushes_before);
        self.figures.writes_during_rounds = writes_after
            .iter()
            .map(|(result, n)| (result.clone(), n - writes_before.get(result).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let ([runs_on, runs_off], [cpu_on, cpu_off], [wait_on, wait_off]) = (runs, control_plane_cpu, runqueue_wait);
        let on_figures = LoadFigures::of(connections, threads, runs_on, cpu_on, wait_on);
        let off_figures = LoadFigures::of(connections, threads, runs_off, cpu_off, wait_off);
        self.figures.throughput_ratio = Some(on_figures.rps / off_figures.rps);
        self.figures.p99_ratio = Some(on_figures.p99_ms / off_figures.p99_ms);
        (self.figures.recording_on, self.figures.recording_off) = (Some(on_figures), Some(off_figures));

        // The recording verifier really recorded: the first key's KeyUsage has its use and its application.
        let usage = read_usage(client, ns, &key_name(0)).await?;
        let app = load::app_of(0, self.settings.apps);
        let recorded = usage.as_ref().is_some_and(|u| u.last_used_at.is_some() && u.first_applications.contains(&app));
        self.figures.part1_usage = usage;
        if !recorded {
            return Err(format!(
                "the KeyUsage of {} does not show its use by {app}: {:?}",
                key_name(0),
                self.figures.part1_usage
            )
            .into());
        }
        if self.figures.flushes_during_rounds == Some(0) {
            let warning = "the recording verifier did not flush during the measured rounds".to_string();
            self.progress.warn(&mut self.figures.outcome, warning);
        }
        self.stop_verifier(on).await;
        self.stop_verifier(off).await;
        Ok(())
    }

    /// Parts 2 and 3: the recording verifier's writes under the paced load, and the memory of
    /// verifiers not recording and recording.
    async fn measure_writes(&mut self, client: &Client, ns: &str, tokens: &[String]) -> Result<()> {
        let keys = tokens.len();
        let s = self.settings.clone();
        let dir = self.scratch.path().to_path_buf();
        let paced = load::write_paced_script(&dir, "paced", tokens, s.apps, s.paced_delay_ms)?;
        let flood = load::write_flood_script(&dir, "flood", &tokens[0], &load::random_apps(s.flood_apps))?;

        let off = self.start_verifier(ns, OFF, "off-many", keys).await?;
        let addr = off.addr().ok_or("the verifier has not said where it listens")?;
        self.progress.say(&format!("recording off: the paced load for {} s", s.off_secs));
        let mut background = Background::start(addr, off.pid, &paced, 1, s.paced_connections)?;
        tokio::time::sleep(Duration::from_secs(s.off_secs)).await;
        background.check_running()?;
        let run = background.stop().await?;
        self.progress.say(&format!("recording off: {:.0} req/s", run.rps));
        self.figures.paced_off = Some(run);
        self.figures.memory_off = memory(&off);
        self.stop_verifier(off).await;

        let on = self.start_verifier(ns, FLUSH, "on-many", keys).await?;
        let addr = on.addr().ok_or("the verifier has not said where it listens")?;
        self.progress.say(&format!(
            "recording on: the paced load until {} flushes after the KeyUsages are created",
            s.intervals
        ));
        let mut background = Background::start(addr, on.pid, &paced, 1, s.paced_connections)?;
        // The creating flushes, then the intervals measured, each allowed three times its length.
        let limit = Duration::from_secs(60 + 3 * FLUSH_SECS * (s.intervals as u64 + 2));
        let mut seen: Vec<Flush> = Vec::new();
        let enough = |f: &[Flush]| f.iter().filter(|f| f.phase == Phase::Steady).count() >= s.intervals;
        let progress = self.progress;
        let mut watch = Watch::start(&on, client, &self.control_plane).await?;
        let watched = watch.until(limit, &progress, &mut seen, None, || background.check_running(), enough).await;
        let run = background.stop().await;
        let drained = match watched {
            Ok(()) => {
                progress.say("load stopped; waiting until the recorder has nothing left to write");
                self.figures.memory_on = memory(&on);
                let measured = seen.len();
                let done = move |f: &[Flush]| f.len() > measured && f.last().is_some_and(|f| f.writes.is_empty());
                let limit = Duration::from_secs(30 + 9 * FLUSH_SECS);
                watch.until(limit, &progress, &mut seen, Some(Phase::Drain), || Ok(()), done).await
            }
            Err(error) => Err(error),
        };
        drop(watch);
        self.figures.creation = Creation::of(&seen, keys);
        self.figures.steady = Steady::of(&seen, keys);
        self.figures.totals = Totals::of(&seen, keys, FLUSH_SECS as f64);
        self.figures.flushes = seen;
        drained?;
        let run = run?;
        self.progress.say(&format!("recording on: {:.0} req/s", run.rps));
        self.figures.paced_on = Some(run);
        self.figures.memory_drained = memory(&on);

        self.progress.say(&format!("{} random application names with one key for {FLOOD_SECS} s", s.flood_apps));
        let run = wrk::run(addr, on.pid, &flood, 1, FLOOD_CONNECTIONS, FLOOD_SECS).await?;
        self.figures.flood_requests = Some(run.requests);
        self.figures.memory_after_flood = memory(&on);
        self.progress.say("waiting for the flood to be flushed");
        self.figures.flood_usage = Some(wait_overflow(client, ns, &key_name(0)).await.map_err(|e| on.explain(e))?);
        self.stop_verifier(on).await;
        Ok(())
    }
}

/// A VALID answer for `token`.
async fn check_valid(verifier: &Process, token: &str) -> Result<()> {
    let answer = verifier.get(AUTH_PATH, Some(token)).await?;
    if answer.status != 200 {
        return Err(verifier.explain(format!("a key's token got {}, not 200", answer.status).into()));
    }
    Ok(())
}

/// The recorder's flushes and writes by result.
async fn recorder_counts(verifier: &Process) -> Result<(u64, BTreeMap<String, u64>)> {
    let text = verifier.metrics().await?;
    let flushes = total(&text, "keyward_verifier_usage_flushes_total").unwrap_or(0.0).round() as u64;
    let mut writes = BTreeMap::new();
    for (labels, n) in common::metrics::samples(&text, "keyward_verifier_usage_writes_total") {
        *writes.entry(labels.get("result").cloned().unwrap_or_default()).or_insert(0) += n.round() as u64;
    }
    Ok((flushes, writes))
}

/// Waits (`CREATED_WITHIN` at most) until `verifier` has created `keys` KeyUsages and ended
/// that flush.
async fn wait_created(verifier: &Process, keys: usize) -> Result<()> {
    let deadline = Instant::now() + CREATED_WITHIN;
    let mut created_by: Option<u64> = None;
    loop {
        let (flushes, writes) = recorder_counts(verifier).await?;
        match created_by {
            Some(flush) if flushes > flush => return Ok(()),
            None if writes.get("created").copied().unwrap_or(0) >= keys as u64 => created_by = Some(flushes),
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(verifier.explain(format!("{keys} KeyUsages were not created within {CREATED_WITHIN:?}").into()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits (`CREATED_WITHIN` at most) until `verifier` has flushed every sighting until now: the
/// flush under way took its sightings before now, so it waits for the one after.
async fn wait_flushed(verifier: &Process) -> Result<()> {
    let (flushes, writes) = recorder_counts(verifier).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (now, writes_now) = recorder_counts(verifier).await?;
    let busy = now == flushes && writes_now.values().sum::<u64>() > writes.values().sum::<u64>();
    let until = now + if busy { 2 } else { 1 };
    let deadline = Instant::now() + CREATED_WITHIN;
    while recorder_counts(verifier).await?.0 < until {
        if Instant::now() >= deadline {
            return Err(verifier.explain(format!("the recorder did not flush within {CREATED_WITHIN:?}").into()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Seconds the threads of process `pid` have waited on a run queue (runnable but not running:
/// the cores were busy with something else), from `/proc/<pid>/task/*/schedstat`.
fn runqueue_wait_secs(pid: u32) -> Option<f64> {
    let mut nanos = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        // A thread that has just exited has nothing more to add.
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else { continue };
        nanos += text.split_whitespace().nth(1)?.parse::<u64>().ok()?;
    }
    Some(nanos as f64 / 1e9)
}

/// The local control plane's kube-apiserver and etcd (when `KUBECONFIG` names one that
/// `scripts/control-plane.sh` started), whose CPU time is read from `/proc`.
pub struct ControlPlane {
    pids: BTreeMap<String, u32>,
}

impl ControlPlane {
    fn of_kubeconfig() -> Self {
        let kubeconfig = std::env::var("KUBECONFIG").unwrap_or_default();
        let first = kubeconfig.split(':').next().unwrap_or_default();
        Self { pids: if first.is_empty() { BTreeMap::new() } else { control_plane_pids(Path::new(first)) } }
    }

    /// CPU seconds by process; NaN for one that is gone.
    pub fn cpu_secs(&self) -> BTreeMap<String, f64> {
        self.pids.iter().map(|(name, &pid)| (name.clone(), cpu_secs(pid).unwrap_or(f64::NAN))).collect()
    }

    fn total_cpu_secs(&self) -> f64 {
        self.cpu_secs().values().sum()
    }
}

fn memory(verifier: &Process) -> Option<Memory> {
    Some(Memory { rss_mib: verifier.rss_mib().ok()?, peak_rss_mib: verifier.peak_rss_mib().ok()? })
}

/// The KeyUsage of the ApiKey `key`, when there is one.
async fn read_usage(client: &Client, ns: &str, key: &str) -> Result<Option<UsageSample>> {
    let name = keyward::api::usage::usage_name(Kind::ApiKey, key);
    let usage = Api::<KeyUsage>::namespaced(client.clone(), ns)
        .get_opt(&name)
        .await
        .map_err(|e| format!("get KeyUsage {name}: {e}"))?;
    Ok(usage.map(|usage| {
        let status = usage.status.unwrap_or_default();
        UsageSample {
            name,
            last_used_at: status.last_used_at.map(|t| t.0.to_string()),
            applications: status.applications.len(),
            first_applications: status.applications.iter().take(5).map(|a| a.name.clone()).collect(),
            applications_overflow: status.applications_overflow,
        }
    }))
}

/// Waits until the KeyUsage of `key` counts applications beyond those it lists.
async fn wait_overflow(client: &Client, ns: &str, key: &str) -> Result<UsageSample> {
    let deadline = Instant::now() + FLOOD_FLUSHED_WITHIN;
    loop {
        let usage = read_usage(client, ns, key).await?;
        match usage {
            Some(usage) if usage.applications_overflow > 0 => return Ok(usage),
            _ if Instant::now() >= deadline => {
                return Err(format!(
                    "the KeyUsage of {key} counted no overflow within {FLOOD_FLUSHED_WITHIN:?}: {usage:?}"
                )
                .into());
            }
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}
