//! `cargo bench --bench verifier`: how `keyward verifier` answers `/v1/auth` with many keys
//! indexed, and how long its index takes to rebuild from the API server after a restart.
//!
//! Figures, printed as a table at the end and written to `target/bench/verifier.json`:
//!
//! 1. Requests per second and p50/p99 latency of `GET /v1/auth?scope=orders.read` with
//!    `KEYWARD_BENCH_VERIFIER_SMALL` (10,000) and `KEYWARD_BENCH_VERIFIER_KEYS` (100,000) keys
//!    indexed, measured by `wrk` over keep-alive loopback connections, with
//!    `KEYWARD_BENCH_VERIFIER_CONNECTIONS` (32) connections and with one. Each request presents
//!    the next of `KEYWARD_BENCH_VERIFIER_TOKENS` (1,000) valid tokens, so lookups spread over
//!    the index. The floor is NGINX answering `return 200;` with one worker (`nginx.rs`), the
//!    proxy a user already runs: the verifier's req/s over NGINX's (goal at least 0.8) and p99
//!    over NGINX's (goal at most 1.5). Beside it, the same-stack baseline: the same HTTP stack
//!    (`keyward::http::serve`, `/v1/auth` answered before the router as the verifier's
//!    `Server` does, the health routes routed behind it) answering 200 without looking at
//!    anything. Every server gets the
//!    very same requests. The index is filled in-process: each server but NGINX is this bench
//!    binary started again as a child process (`#[tokio::main]` defaults and mimalloc, as the
//!    `keyward` binary). The servers are measured one at a time, taking turns over
//!    `KEYWARD_BENCH_VERIFIER_ROUNDS` (3) rounds of `KEYWARD_BENCH_VERIFIER_SECS` (10) seconds
//!    per load; the medians are compared, and against NGINX also each round's pair (the goal
//!    is on the median of the rounds' ratios, as for the rebuild). Any answer but 200 fails the
//!    run. To explain the gap, a third server, the sized baseline, answers the very headers of
//!    a verifier's 200 (which has no body) without looking at anything, and each server's CPU
//!    time per request is read from `/proc` (the load generator shares the machine's cores with
//!    the server measured).
//! 2. From the API server named by `KUBECONFIG`, without the controller: the bench creates the
//!    ApiKeys in a fresh namespace and writes each one's status itself (server-side apply, as
//!    the controller does), `KEYWARD_BENCH_VERIFIER_CONCURRENCY` (64) keys in flight, first up
//!    to the small count, then up to the large one. At each count it starts the real
//!    `keyward verifier` for that namespace `KEYWARD_BENCH_VERIFIER_ROUNDS` times and measures
//!    the time from process start until `/readyz` answers 200 (the index rebuild after a
//!    restart), checks that the index holds every key, reads the process's RSS (VmRSS and
//!    VmHWM) once ready and again after a `wrk` run against it, and times a plain paged LIST of
//!    the same keys (and one from the API server's watch cache) for comparison.
//!
//!    The rounds take turns with that paged LIST (one round the rebuild first, the next the LIST
//!    first), so both see the same machine; the table gives the median of the per-round ratios
//!    rebuild / paged LIST (goal at most 1.1: the rebuild costs no more than a tenth over the
//!    LIST itself).
//!
//! `KEYWARD_BENCH_VERIFIER_API=0` skips part 2 (no API server needed then);
//! `KEYWARD_BENCH_VERIFIER_HTTP=0` skips part 1 (only the rebuild and the LISTs are measured);
//! `KEYWARD_BENCH_VERIFIER_REUSE=NAMESPACE` measures part 2 over the ApiKeys already in
//! `NAMESPACE` (left by `KEYWARD_BENCH_KEEP_NAMESPACES=1`, at least `KEYWARD_BENCH_VERIFIER_KEYS`
//! of them, the small count set to 0) instead of creating them: to iterate on the rebuild in
//! minutes, without `wrk` on that verifier (its tokens are not known) and keeping the namespace;
//! `KEYWARD_BENCH_VERIFIER_BIN` is the `keyward` binary part 2 starts (default: the one this
//! bench was built with), to compare two builds over the same keys;
//! `KEYWARD_BENCH_VERIFIER_THREADS` (2) is wrk's threads with many connections;
//! `KEYWARD_BENCH_LOG` (`info`) is the real verifier's `RUST_LOG`;
//! `KEYWARD_BENCH_KEEP_NAMESPACES=1` leaves the namespace for inspection. `wrk` and `nginx`
//! are installed with apt-get when missing. The servers' logs go to
//! `target/bench/verifier-*.log`. Every namespace the bench makes carries the label `keyward.io/bench=verifier`; leftovers of an
//! interrupted run are deleted at the start, and the bench's own namespace at the end (without
//! waiting: `make bench` throws the control plane away afterwards).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use jiff::SignedDuration;
use keyward::api::{ApiKey, ApiKeySpec};
use keyward::token::Token;
use kube::Client;
use kube::api::{Api, ListParams};
use serde::Serialize;

/// As in the `keyward` binary, so that the servers measured allocate as it does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod api;
#[path = "../common/mod.rs"]
mod common;
mod figures;
mod nginx;
mod servers;
mod wrk;

use api::create_active_key;
use common::metrics::total;
use common::process::Process;
use common::{Error, MANAGER, Outcome, Progress, Result, env_number, install_crds, median};
use figures::{ApiFigures, Figures, LoadFigures, ServerFigures, print_table};
use servers::{Server, serve};
use wrk::{WrkRun, ensure_wrk, write_script};

/// Set on the child processes this binary starts as servers: `baseline` or `verifier`.
const ROLE_VAR: &str = "KEYWARD_BENCH_VERIFIER_ROLE";
/// Keys a `verifier` child indexes, and how many of their tokens it prints.
const ROLE_KEYS_VAR: &str = "KEYWARD_BENCH_VERIFIER_ROLE_KEYS";
const ROLE_TOKENS_VAR: &str = "KEYWARD_BENCH_VERIFIER_ROLE_TOKENS";
/// The value of the label `common::BENCH_LABEL` on this bench's namespaces.
const BENCH_LABEL_VALUE: &str = "verifier";
/// The scope every key grants and every request requires.
const SCOPE: &str = "orders.read";
const AUTH_PATH: &str = "/v1/auth?scope=orders.read";
/// Expiry of the keys, the operator's default.
const EXPIRY: SignedDuration = SignedDuration::from_secs(keyward::api::expiry::DEFAULT_EXPIRY.as_secs() as i64);
/// A short `wrk` run before a server's first measure.
const WARM_UP_SECS: u64 = 2;

fn main() -> ExitCode {
    match std::env::var(ROLE_VAR) {
        Ok(role) => serve(role),
        Err(_) => bench(),
    }
}

fn key_spec() -> Result<ApiKeySpec> {
    Ok(serde_json::from_value(serde_json::json!({ "scopes": [SCOPE] }))?)
}

fn key_name(i: usize) -> String {
    format!("key-{i:06}")
}

// ---------------------------------------------------------------------------------------------
// The bench itself.

/// What to run, from `KEYWARD_BENCH_VERIFIER_*` variables.
#[derive(Clone, Debug, Serialize)]
struct Settings {
    /// The large key count (the goals' 100,000).
    keys: usize,
    /// The small key count (10,000), measured first; 0 skips it.
    small: usize,
    rounds: usize,
    /// Seconds of each `wrk` measure.
    secs: u64,
    connections: usize,
    /// `wrk` threads with many connections (one with one connection).
    threads: usize,
    /// Distinct valid tokens the requests take turns presenting.
    tokens: usize,
    /// Whether to measure part 1 (requests) and part 2 on the API server.
    http: bool,
    api: bool,
    /// A namespace whose ApiKeys part 2 measures instead of creating its own.
    reuse: Option<String>,
    /// ApiKeys created (and their status written) at once in part 2.
    concurrency: usize,
}

impl Settings {
    fn from_env() -> Result<Self> {
        let keys = env_number("KEYWARD_BENCH_VERIFIER_KEYS", 100_000)?;
        let connections = env_number("KEYWARD_BENCH_VERIFIER_CONNECTIONS", 32)?.max(1);
        Ok(Self {
            keys,
            small: env_number("KEYWARD_BENCH_VERIFIER_SMALL", 10_000)?,
            rounds: env_number("KEYWARD_BENCH_VERIFIER_ROUNDS", 3)?.max(1),
            secs: env_number("KEYWARD_BENCH_VERIFIER_SECS", 10)?.max(1),
            connections,
            threads: env_number("KEYWARD_BENCH_VERIFIER_THREADS", 2)?.clamp(1, connections),
            tokens: env_number("KEYWARD_BENCH_VERIFIER_TOKENS", 1000)?.clamp(1, keys.max(1)),
            http: env_number("KEYWARD_BENCH_VERIFIER_HTTP", 1u8)? != 0,
            api: env_number("KEYWARD_BENCH_VERIFIER_API", 1u8)? != 0,
            reuse: std::env::var("KEYWARD_BENCH_VERIFIER_REUSE").ok().filter(|ns| !ns.is_empty()),
            concurrency: env_number("KEYWARD_BENCH_VERIFIER_CONCURRENCY", 64)?.max(1),
        })
    }

    /// The key counts measured, smallest first.
    fn sizes(&self) -> Vec<usize> {
        let mut sizes: Vec<usize> = [self.small, self.keys].into_iter().filter(|&n| n > 0).collect();
        sizes.sort_unstable();
        sizes.dedup();
        sizes
    }

    /// The loads: `(threads, connections)`, many connections first.
    fn loads(&self) -> Vec<(usize, usize)> {
        let mut loads = vec![(self.threads, self.connections)];
        if self.connections != 1 {
            loads.push((1, 1));
        }
        loads
    }
}

#[tokio::main]
async fn bench() -> ExitCode {
    common::main(async { Bench::new(common::out_dir()) }).await
}

struct Bench {
    settings: Settings,
    out_dir: PathBuf,
    /// Holds the `wrk` scripts.
    scratch: tempfile::TempDir,
    /// The namespace of part 2, deleted at the end.
    namespace: Option<(Client, String)>,
    figures: Figures,
    progress: Progress,
}

impl common::Bench for Bench {
    type Figures = Figures;
    const NAME: &'static str = "verifier";

    async fn run(&mut self) -> Result<()> {
        self.progress.say(&format!("settings: {:?}", self.settings));
        let client = if self.settings.api {
            if std::env::var_os("KUBECONFIG").is_none() {
                return Err("KUBECONFIG must name the API server to measure (see `make bench`), \
                            or KEYWARD_BENCH_VERIFIER_API=0 skips that part"
                    .into());
            }
            Some(Client::try_default().await.map_err(|e| format!("a client from KUBECONFIG: {e}"))?)
        } else {
            None
        };
        self.figures.wrk = Some(ensure_wrk().await?);
        if self.settings.http {
            let nginx = nginx::ensure_nginx().await?;
            self.figures.nginx_version = nginx::nginx_version(&nginx).await;
            self.requests(&nginx).await?;
        }
        if let Some(client) = client {
            self.api(client).await?;
        }
        Ok(())
    }

    async fn cleanup(&mut self) {
        let Some((client, ns)) = self.namespace.take() else { return };
        common::delete_namespaces_now(&client, &[ns], &self.progress).await;
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
            namespace: None,
            progress: Progress::start(),
        })
    }

    // -- Part 1 ---------------------------------------------------------------------------

    /// Part 1: the baseline, the sized baseline, a verifier per key count and NGINX, measured
    /// in turn over the rounds.
    async fn requests(&mut self, nginx: &Path) -> Result<()> {
        let mut servers = vec![self.start_server("baseline", 0).await?, self.start_server("baseline-sized", 0).await?];
        for n in self.settings.sizes() {
            servers.push(self.start_server("verifier", n).await?);
        }
        // The baselines get the very same requests as the first verifier.
        let tokens = match servers.get(2) {
            Some(verifier) => verifier.tokens.clone(),
            None => vec![Token::generate("kw").expose().to_string()],
        };
        (servers[0].tokens, servers[1].tokens) = (tokens.clone(), tokens.clone());
        let nginx_dir = self.scratch.path().join("nginx");
        std::fs::create_dir_all(&nginx_dir)?;
        let nginx_log = self.out_dir.join("verifier-server-nginx.log");
        self.progress.say(&format!("nginx: starting {} (log {})", nginx.display(), nginx_log.display()));
        servers.push(Server::start_nginx(nginx, &nginx_dir, &nginx_log, tokens).await?);
        for server in &mut servers {
            server.answer_bytes = server.check_answers().await?;
            server.script = Some(write_script(self.scratch.path(), &server.name, &server.tokens)?);
        }
        for server in &servers {
            self.progress.say(&format!(
                "{}: a 200 on /v1/auth is {} bytes; warming up for {WARM_UP_SECS} s",
                server.name, server.answer_bytes
            ));
            server.load(self.settings.threads, self.settings.connections, WARM_UP_SECS).await?;
        }
        let loads = self.settings.loads();
        // runs[server][load] = the runs of every round.
        let mut runs: Vec<Vec<Vec<WrkRun>>> = vec![vec![Vec::new(); loads.len()]; servers.len()];
        for round in 0..self.settings.rounds {
            for (l, &(threads, connections)) in loads.iter().enumerate() {
                // Each round starts with another server, so that none always follows the same.
                for s in (0..servers.len()).map(|s| (s + round) % servers.len()) {
                    let server = &servers[s];
                    let run = server.load(threads, connections, self.settings.secs).await?;
                    self.progress.say(&format!(
                        "round {}, {connections} connection(s), {}: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms, \
                         server CPU {:.1} us/request",
                        round + 1,
                        server.name,
                        run.rps,
                        run.p50_ms,
                        run.p99_ms,
                        run.server_cpu_us_per_request.unwrap_or(f64::NAN),
                    ));
                    if run.socket_errors > 0 {
                        self.progress.warn(
                            &mut self.figures.outcome,
                            format!(
                                "{} at {connections} connection(s): {} socket errors",
                                server.name, run.socket_errors
                            ),
                        );
                    }
                    runs[s][l].push(run);
                }
            }
        }
        for (s, server) in servers.iter().enumerate() {
            for (l, &(threads, connections)) in loads.iter().enumerate() {
                let figures = LoadFigures::of(server.keys, threads, connections, std::mem::take(&mut runs[s][l]));
                match server.role.as_str() {
                    "baseline" => self.figures.baseline.push(figures),
                    "baseline-sized" => self.figures.sized_baseline.push(figures),
                    "nginx" => self.figures.nginx.push(figures),
                    _ => self.figures.verifier.push(figures),
                }
            }
        }
        let Figures { baseline, sized_baseline, nginx, verifier, .. } = &mut self.figures;
        for other in verifier.iter_mut().chain(sized_baseline.iter_mut()).chain(nginx.iter_mut()) {
            if let Some(baseline) = baseline.iter().find(|b| b.connections == other.connections) {
                other.throughput_ratio = Some(other.rps / baseline.rps);
                other.p99_ratio = Some(other.p99_ms / baseline.p99_ms);
            }
        }
        for v in verifier.iter_mut() {
            if let Some(nginx) = nginx.iter().find(|n| n.connections == v.connections) {
                v.nginx_throughput_ratio = Some(v.rps / nginx.rps);
                v.nginx_throughput_ratio_rounds =
                    v.rounds.iter().zip(&nginx.rounds).map(|(v, n)| v.rps / n.rps).collect();
                v.nginx_throughput_ratio_paired = median(&v.nginx_throughput_ratio_rounds);
                v.nginx_p99_ratio = Some(v.p99_ms / nginx.p99_ms);
            }
        }
        for server in servers {
            let answers = if server.role == "verifier" { server.auth_answers().await? } else { BTreeMap::new() };
            // Every answer but one (the check's 401 for an unknown token) was VALID.
            let refused: u64 = answers.iter().filter(|(code, _)| *code != "VALID").map(|(_, n)| n).sum();
            if refused > 1 {
                self.progress.warn(
                    &mut self.figures.outcome,
                    format!("{}: {refused} /v1/auth answers were not VALID: {answers:?}", server.name),
                );
            }
            self.figures.servers.push(ServerFigures {
                role: server.role.clone(),
                keys: server.keys,
                answer_bytes: server.answer_bytes,
                rss_mib: server.process.rss_mib().ok(),
                peak_rss_mib: server.process.peak_rss_mib().ok(),
                auth_answers: answers,
            });
            server.stop().await;
        }
        Ok(())
    }

    async fn start_server(&self, role: &str, keys: usize) -> Result<Server> {
        let name = if keys == 0 { role.to_string() } else { format!("{role}-{keys}") };
        let log = self.out_dir.join(format!("verifier-server-{name}.log"));
        self.progress.say(&format!("{name}: starting (log {})", log.display()));
        let server = Server::start(name, role, keys, self.settings.tokens, &log).await?;
        self.progress.say(&format!("{}: listening on {} (pid {})", server.name, server.addr, server.process.pid));
        Ok(server)
    }

    // -- Part 2 ---------------------------------------------------------------------------

    /// Part 2: the keys on the API server, and the real verifier rebuilding its index from them.
    async fn api(&mut self, client: Client) -> Result<()> {
        install_crds(&client, MANAGER).await?;
        let ns = match self.settings.reuse.clone() {
            Some(ns) => ns,
            None => {
                common::remove_leftovers(&client, BENCH_LABEL_VALUE, |m| self.progress.say(m)).await?;
                let suffix: String = (0..5).map(|_| char::from(b'a' + rand::random_range(0..26u8))).collect();
                let ns = format!("kwbench-verifier-{suffix}");
                common::create_namespace(&client, &ns, BENCH_LABEL_VALUE).await?;
                self.namespace = Some((client.clone(), ns.clone()));
                ns
            }
        };
        let keys: Api<ApiKey> = Api::namespaced(client.clone(), &ns);
        let mut tokens = Vec::new();
        let mut created = 0;
        for n in self.settings.sizes() {
            let mut figures = ApiFigures { keys: n, ..ApiFigures::default() };
            if self.settings.reuse.is_some() {
                self.progress.say(&format!("measuring over the ApiKeys already in {ns}"));
            } else {
                figures.created = n - created;
                self.progress.say(&format!("creating ApiKeys {created} to {n} with their status in {ns}"));
                let started = Instant::now();
                self.create_keys(&keys, created..n, &mut tokens).await?;
                figures.create_secs = started.elapsed().as_secs_f64();
                figures.created_per_sec = figures.created as f64 / figures.create_secs;
                created = n;
                self.progress.say(&format!(
                    "{} ApiKeys created in {:.1} s ({:.0} a second)",
                    figures.created, figures.create_secs, figures.created_per_sec
                ));
            }
            self.rebuild(&ns, &keys, n, &tokens, &mut figures).await?;
            self.figures.api.push(figures);
        }
        Ok(())
    }

    /// Creates the ApiKeys `range` and writes their status, `concurrency` keys in flight;
    /// keeps the tokens of the first `settings.tokens` keys.
    async fn create_keys(
        &self,
        keys: &Api<ApiKey>,
        range: std::ops::Range<usize>,
        tokens: &mut Vec<String>,
    ) -> Result<()> {
        let (total, first) = (range.len(), range.start);
        let sample = self.settings.tokens;
        let mut done = futures::stream::iter(range)
            .map(|i| async move {
                let token = create_active_key(keys, &key_name(i)).await?;
                Ok::<_, Error>((i < sample).then(|| token.expose().to_string()))
            })
            .buffer_unordered(self.settings.concurrency);
        let mut count = 0;
        let mut said = Instant::now();
        while let Some(token) = done.try_next().await? {
            tokens.extend(token);
            count += 1;
            if said.elapsed() >= Duration::from_secs(10) {
                self.progress.say(&format!("  {count} of {total} ApiKeys (from key {first}) created and Active"));
                said = Instant::now();
            }
        }
        Ok(())
    }

    /// Starts the verifier over the namespace's `n` keys `rounds` times and times each until
    /// ready, taking turns with a paged LIST of the same keys; loads the last one with `wrk`
    /// (when the tokens are known) and reads its memory before and after.
    async fn rebuild(
        &mut self,
        ns: &str,
        keys: &Api<ApiKey>,
        n: usize,
        tokens: &[String],
        figures: &mut ApiFigures,
    ) -> Result<()> {
        let rounds = self.settings.rounds;
        let (mut listening, mut cpu, mut paged, mut cached) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 1..=rounds {
            // Every other round the LIST goes first, so that neither always follows the other.
            let list_first = round % 2 == 0;
            if list_first {
                let (p, c) = self.list_floor(keys, n).await?;
                paged.push(p);
                cached.push(c);
            }
            let log = self.out_dir.join(format!("verifier-rebuild-{n}-{round}.log"));
            let args = ["verifier", "--namespaces", ns, "--listen", "127.0.0.1:0"].map(String::from);
            let binary = std::env::var_os("KEYWARD_BENCH_VERIFIER_BIN")
                .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_keyward")), PathBuf::from);
            let mut verifier = Process::keyward(&binary, &args, &log)?;
            let limit = Duration::from_secs(120) + Duration::from_millis(2) * u32::try_from(n).unwrap_or(u32::MAX);
            let ready = verifier.wait_ready(limit).await?;
            let (listened, ready) = (ready.listening_secs, ready.ready_secs);
            let used = verifier.cpu_secs()?;
            listening.push(listened);
            cpu.push(used);
            figures.rebuild_rounds_secs.push(ready);
            self.progress.say(&format!(
                "rebuild {round} of {rounds}, {n} keys: listening after {listened:.3} s, ready after {ready:.3} s, \
                 {used:.2} s of CPU (pid {}, log {})",
                verifier.pid,
                log.display()
            ));
            let indexed = indexed_tokens(&verifier).await?;
            figures.indexed_tokens = Some(indexed);
            if indexed != n as u64 {
                return Err(format!("the verifier was ready with {indexed} tokens indexed, not {n}").into());
            }
            let peak = verifier.peak_rss_mib()?;
            figures.peak_rss_max_mib = Some(figures.peak_rss_max_mib.map_or(peak, |max| max.max(peak)));
            if round == rounds {
                figures.rss_ready_mib = Some(verifier.rss_mib()?);
                figures.peak_rss_ready_mib = Some(peak);
            }
            if round == rounds && !tokens.is_empty() {
                let script = write_script(self.scratch.path(), &format!("api-{n}"), tokens)?;
                let (threads, connections) = (self.settings.threads, self.settings.connections);
                self.progress
                    .say(&format!("wrk on that verifier: {connections} connections, {} s", self.settings.secs));
                let addr = verifier.addr().ok_or("the verifier has not said where it listens")?;
                let run = wrk::run(addr, verifier.pid, &script, threads, connections, self.settings.secs).await?;
                self.progress
                    .say(&format!("  {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms", run.rps, run.p50_ms, run.p99_ms));
                figures.load = Some(run);
                figures.rss_after_load_mib = Some(verifier.rss_mib()?);
                let peak = verifier.peak_rss_mib()?;
                figures.peak_rss_after_load_mib = Some(peak);
                figures.peak_rss_max_mib = figures.peak_rss_max_mib.map(|max| max.max(peak));
            }
            let warnings = verifier.log_levels().samples;
            verifier.stop().await;
            if !warnings.is_empty() {
                self.progress.warn(
                    &mut self.figures.outcome,
                    format!("the verifier over {n} keys logged warnings: {warnings:?}"),
                );
            }
            if !list_first {
                let (p, c) = self.list_floor(keys, n).await?;
                paged.push(p);
                cached.push(c);
            }
            let ratio = ready / paged[paged.len() - 1];
            figures.rebuild_over_list_rounds.push(ratio);
            self.progress.say(&format!("  round {round}: rebuild / paged LIST = {ratio:.3}"));
        }
        figures.rebuild_secs = median(&figures.rebuild_rounds_secs);
        figures.listening_secs = median(&listening);
        figures.rebuild_cpu_secs = median(&cpu);
        figures.list_paged_secs = median(&paged);
        figures.list_cached_secs = median(&cached);
        figures.list_paged_rounds_secs = paged;
        figures.rebuild_over_list = median(&figures.rebuild_over_list_rounds);
        Ok(())
    }

    /// For comparison with the rebuild: the same keys LISTed by the bench, in pages of 500 as
    /// the verifier's watch asks, and at once from the watch cache. Seconds of each.
    async fn list_floor(&self, keys: &Api<ApiKey>, n: usize) -> Result<(f64, f64)> {
        let started = Instant::now();
        let mut params = ListParams::default().limit(500);
        let mut listed = 0;
        loop {
            let page = keys.list(&params).await?;
            listed += page.items.len();
            match page.metadata.continue_ {
                Some(next) if !next.is_empty() => params = params.continue_token(&next),
                _ => break,
            }
        }
        let paged = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let cached = keys.list(&ListParams::default().match_any()).await?.items.len();
        let cached_secs = started.elapsed().as_secs_f64();
        if listed != n || cached != n {
            return Err(format!("the LISTs found {listed} and {cached} ApiKeys, not {n}").into());
        }
        self.progress.say(&format!(
            "LIST of {n} ApiKeys: {paged:.2} s in pages of 500, {cached_secs:.2} s from the watch cache"
        ));
        Ok((paged, cached_secs))
    }
}

/// A verifier's `keyward_verifier_indexed_tokens` gauge.
async fn indexed_tokens(verifier: &Process) -> Result<u64> {
    let text = verifier.metrics().await?;
    let indexed = total(&text, "keyward_verifier_indexed_tokens");
    Ok(indexed.ok_or("no keyward_verifier_indexed_tokens in the verifier's /metrics")?.round() as u64)
}
