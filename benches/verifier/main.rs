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
//!    the index. The baseline is the same HTTP stack (`keyward::http::serve`, the health routes
//!    merged in as in the verifier) with a `/v1/auth` handler that answers 200 without looking
//!    at anything, loaded with the very same requests. The index is filled in-process: each
//!    server is this bench binary started again as a child process (`#[tokio::main]` defaults
//!    and mimalloc, as the `keyward` binary), measured one at a time, taking turns over
//!    `KEYWARD_BENCH_VERIFIER_ROUNDS` (3) rounds of `KEYWARD_BENCH_VERIFIER_SECS` (10) seconds
//!    per load; the medians are compared. Any answer but 200 fails the run. To explain the
//!    gap, a third server, the sized baseline, answers the very headers and body of a verifier's
//!    200 without looking at anything, and each server's CPU time per request is read from
//!    `/proc` (the load generator shares the machine's cores with the server measured).
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
//! `KEYWARD_BENCH_VERIFIER_API=0` skips part 2 (no API server needed then);
//! `KEYWARD_BENCH_VERIFIER_THREADS` (2) is wrk's threads with many connections;
//! `KEYWARD_BENCH_LOG` (`info`) is the real verifier's `RUST_LOG`;
//! `KEYWARD_BENCH_KEEP_NAMESPACES=1` leaves the namespace for inspection. `wrk` is installed
//! with apt-get when missing. The servers' logs go to `target/bench/verifier-*.log`. Every
//! namespace the bench makes carries the label `keyward.io/bench=verifier`; leftovers of an
//! interrupted run are deleted at the start, and the bench's own namespace at the end (without
//! waiting: `make bench` throws the control plane away afterwards).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::routing::any;
use futures::{StreamExt, TryStreamExt};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keyward::api::{ApiKey, ApiKeySpec, ApiKeyStatus, CONDITION_READY, Phase, reason};
use keyward::token::Token;
use keyward::verifier::Verifier;
use keyward::verifier::index::{Kind, ObjectKey, apikey_entries};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;

/// As in the `keyward` binary, so that the servers measured allocate as it does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../common/mod.rs"]
mod common;

use common::metrics::{samples, total};
use common::process::{Process, cpu_secs};
use common::report::show;
use common::{Error, MANAGER, Outcome, Progress, Result, Table, env_number, install_crds, median};

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
const EXPIRY: SignedDuration = SignedDuration::from_hours(90 * 24);
/// A short `wrk` run before a server's first measure.
const WARM_UP_SECS: u64 = 2;

fn main() -> ExitCode {
    match std::env::var(ROLE_VAR) {
        Ok(role) => serve(role),
        Err(_) => bench(),
    }
}

// ---------------------------------------------------------------------------------------------
// The servers measured in part 1, each a child process running this binary.

/// Serves `/v1/auth` on a loopback port the kernel picks: the verifier with `ROLE_KEYS_VAR`
/// keys indexed, or the baseline. Prints `listening <addr>`, a `token <token>` line for each
/// of the first `ROLE_TOKENS_VAR` keys, then `ready`; stops on SIGTERM, as `keyward` does.
#[tokio::main]
async fn serve(role: String) -> ExitCode {
    keyward::telemetry::init_logging(keyward::telemetry::LogFormat::Text);
    match serve_role(&role).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("verifier bench server {role}: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve_role(role: &str) -> Result<()> {
    let (_ready_tx, ready) = watch::channel(true);
    let (router, tokens) = match role {
        "baseline" => {
            let metrics = keyward::telemetry::VerifierMetrics::default();
            let router = Router::new()
                .route("/v1/auth", any(|| async { StatusCode::OK }))
                .merge(keyward::telemetry::health_routes(metrics.registry(), ready));
            (router, Vec::new())
        }
        "baseline-sized" => {
            let metrics = keyward::telemetry::VerifierMetrics::default();
            let answer = sized_answer()?;
            let router = Router::new()
                .route("/v1/auth", any(move || std::future::ready(answer.clone())))
                .merge(keyward::telemetry::health_routes(metrics.registry(), ready));
            (router, Vec::new())
        }
        "verifier" => {
            let keys = env_number(ROLE_KEYS_VAR, 0)?;
            let sample = env_number(ROLE_TOKENS_VAR, 0)?;
            let (verifier, tokens) = filled_verifier(keys, sample)?;
            let registry = verifier.metrics.registry();
            let router =
                keyward::verifier::http::routes(verifier).merge(keyward::telemetry::health_routes(registry, ready));
            (router, tokens)
        }
        other => return Err(format!("{ROLE_VAR}={other:?}: baseline or verifier").into()),
    };
    let listener = keyward::http::bind(([127, 0, 0, 1], 0).into(), &format!("/v1/auth ({role})")).await?;
    let mut out = format!("listening {}\n", listener.local_addr()?);
    for token in &tokens {
        out.push_str(&format!("token {token}\n"));
    }
    out.push_str("ready\n");
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(out.as_bytes())?;
        stdout.flush()?;
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let (shutdown_tx, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        terminate.recv().await;
        shutdown_tx.send_replace(true);
    });
    keyward::http::serve(listener, router, shutdown).await?;
    Ok(())
}

/// The headers and body of a verifier's 200 on `/v1/auth` for one of the bench's keys, fixed:
/// what the sized baseline answers, to tell the cost of the answer's bytes from the cost of
/// the judgement.
fn sized_answer() -> Result<([(HeaderName, HeaderValue); 5], Bytes)> {
    let token = Token::generate("kw");
    let expires_at = Timestamp::now().checked_add(EXPIRY)?;
    let body = serde_json::to_vec(&serde_json::json!({
        "valid": true,
        "code": "VALID",
        "key": {
            "kind": "ApiKey",
            "namespace": "bench",
            "name": key_name(0),
            "token": null,
            "keyId": token.key_id(),
            "scopes": [SCOPE],
            "expiresAt": expires_at.to_string(),
        },
    }))?;
    let header = |name: &'static str, value: String| Ok::<_, Error>((HeaderName::from_static(name), value.try_into()?));
    let headers = [
        header("content-type", "application/json".into())?,
        header("x-keyward-code", "VALID".into())?,
        header("x-keyward-key", format!("bench/{}", key_name(0)))?,
        header("x-keyward-key-id", token.key_id())?,
        header("x-keyward-scopes", SCOPE.into())?,
    ];
    Ok((headers, Bytes::from(body)))
}

/// A verifier with `keys` Active ApiKeys granting [`SCOPE`], built as its watch would from
/// objects with a status; returns the tokens of the first `sample` keys.
fn filled_verifier(keys: usize, sample: usize) -> Result<(Arc<Verifier>, Vec<String>)> {
    let verifier = Arc::new(Verifier::new(Vec::new()));
    let now = Timestamp::now();
    let expires_at = now.checked_add(EXPIRY)?;
    let mut tokens = Vec::with_capacity(sample.min(keys));
    for i in 0..keys {
        let token = Token::generate("kw");
        let key = active_key(&key_name(i), &token, now, expires_at)?;
        let entries = apikey_entries(&key);
        if entries.len() != 1 {
            return Err(format!("ApiKey {} gave {} index entries, not 1", key.name_any(), entries.len()).into());
        }
        verifier.update(|index| index.replace(ObjectKey::of(Kind::ApiKey, &key), entries));
        if i < sample {
            tokens.push(token.expose().to_string());
        }
    }
    Ok((verifier, tokens))
}

/// An ApiKey as the watch would deliver it once the controller issued its token.
fn active_key(name: &str, token: &Token, created: Timestamp, expires_at: Timestamp) -> Result<ApiKey> {
    let mut key = ApiKey::new(name, key_spec()?);
    key.metadata.namespace = Some("bench".into());
    key.metadata.generation = Some(1);
    key.metadata.creation_timestamp = Some(Time(created));
    key.status = Some(ApiKeyStatus {
        phase: Some(Phase::Active),
        observed_generation: Some(1),
        key_id: Some(token.key_id()),
        token_hash: Some(token.hash().to_string()),
        secret_name: Some(format!("{name}-apikey")),
        issued_at: Some(Time(created)),
        expires_at: Some(Time(expires_at)),
        ..ApiKeyStatus::default()
    });
    Ok(key)
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
    /// Whether to measure part 2 on the API server.
    api: bool,
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
            api: env_number("KEYWARD_BENCH_VERIFIER_API", 1u8)? != 0,
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

/// Every figure the bench measures; empty or `None` for what it did not get to.
#[derive(Debug, Default, Serialize)]
struct Figures {
    settings: Option<Settings>,
    /// `wrk --version`'s first line.
    wrk: Option<String>,
    /// Part 1: the baseline at each load.
    baseline: Vec<LoadFigures>,
    /// Part 1, to explain the others: a baseline that answers, without looking at anything,
    /// the very headers and body of a verifier's 200. Its ratios are to the baseline.
    sized_baseline: Vec<LoadFigures>,
    /// Part 1: the verifier at each key count and load, against the baseline at that load.
    verifier: Vec<LoadFigures>,
    /// Part 1: memory of the server processes at the end of their measures.
    servers: Vec<ServerFigures>,
    /// Part 2, one entry per key count.
    api: Vec<ApiFigures>,
    #[serde(flatten)]
    outcome: Outcome,
}

/// One server at one load, over the rounds.
#[derive(Debug, Default, Serialize)]
struct LoadFigures {
    /// Keys indexed; 0 for the baseline.
    keys: usize,
    connections: usize,
    threads: usize,
    /// Medians over the rounds.
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// CPU time (user and system) of the server process per request answered.
    cpu_us_per_request: Option<f64>,
    /// This server's median requests per second over the baseline's (goal >= 0.8).
    throughput_ratio: Option<f64>,
    /// This server's median p99 over the baseline's (goal <= 1.5 with many connections).
    p99_ratio: Option<f64>,
    rounds: Vec<WrkRun>,
}

#[derive(Debug, Default, Serialize)]
struct ServerFigures {
    role: String,
    keys: usize,
    /// Status line, headers and body of a 200 on `/v1/auth`.
    answer_bytes: usize,
    rss_mib: Option<f64>,
    peak_rss_mib: Option<f64>,
    /// `keyward_verifier_requests_total` of `/v1/auth` by code, for the verifier.
    auth_answers: BTreeMap<String, u64>,
}

/// Part 2 at one key count.
#[derive(Debug, Default, Serialize)]
struct ApiFigures {
    keys: usize,
    /// Keys created (and their status written) to reach `keys`, and how long that took.
    created: usize,
    create_secs: f64,
    created_per_sec: f64,
    /// Seconds from the verifier's start until `/readyz` answered 200: median, each round.
    rebuild_secs: Option<f64>,
    rebuild_rounds_secs: Vec<f64>,
    /// Seconds from start until the verifier logged its listen address (process start and
    /// client set-up, before any list), median.
    listening_secs: Option<f64>,
    /// CPU time the verifier had used once ready, median: far below the rebuild time, the
    /// wait was the API server's.
    rebuild_cpu_secs: Option<f64>,
    /// `keyward_verifier_indexed_tokens` once ready (must equal `keys`).
    indexed_tokens: Option<u64>,
    /// Of the last verifier started: VmRSS and VmHWM once ready, and after the `wrk` run.
    rss_ready_mib: Option<f64>,
    peak_rss_ready_mib: Option<f64>,
    rss_after_load_mib: Option<f64>,
    peak_rss_after_load_mib: Option<f64>,
    /// The highest VmHWM of all the verifiers started at this count.
    peak_rss_max_mib: Option<f64>,
    /// `wrk` against that verifier (many connections), tokens of the API server's keys.
    load: Option<WrkRun>,
    /// A paged LIST of every key by the bench, 500 a page as the verifier's watch asks, and one
    /// LIST served from the API server's watch cache (`resourceVersion=0`), for comparison.
    list_paged_secs: Option<f64>,
    list_cached_secs: Option<f64>,
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
        self.progress(&format!("settings: {:?}", self.settings));
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
        self.requests().await?;
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

    fn progress(&self, message: &str) {
        self.progress.say(message);
    }

    fn warn(&mut self, warning: String) {
        self.progress.warn(&mut self.figures.outcome, warning);
    }

    // -- Part 1 ---------------------------------------------------------------------------

    /// Part 1: the baseline, the sized baseline and a verifier per key count, measured in turn
    /// over the rounds.
    async fn requests(&mut self) -> Result<()> {
        let mut servers = vec![self.start_server("baseline", 0).await?, self.start_server("baseline-sized", 0).await?];
        for n in self.settings.sizes() {
            servers.push(self.start_server("verifier", n).await?);
        }
        // The baselines get the very same requests as the first verifier.
        let tokens = match servers.get(2) {
            Some(verifier) => verifier.tokens.clone(),
            None => vec![Token::generate("kw").expose().to_string()],
        };
        (servers[0].tokens, servers[1].tokens) = (tokens.clone(), tokens);
        for server in &mut servers {
            server.answer_bytes = server.check_answers().await?;
            server.script = Some(write_script(self.scratch.path(), &server.name, &server.tokens)?);
        }
        for server in &servers {
            self.progress(&format!(
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
                    self.progress(&format!(
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
                        self.warn(format!(
                            "{} at {connections} connection(s): {} socket errors",
                            server.name, run.socket_errors
                        ));
                    }
                    runs[s][l].push(run);
                }
            }
        }
        for (s, server) in servers.iter().enumerate() {
            for (l, &(threads, connections)) in loads.iter().enumerate() {
                let figures = LoadFigures::of(server.keys, threads, connections, std::mem::take(&mut runs[s][l]));
                match s {
                    0 => self.figures.baseline.push(figures),
                    1 => self.figures.sized_baseline.push(figures),
                    _ => self.figures.verifier.push(figures),
                }
            }
        }
        for other in self.figures.verifier.iter_mut().chain(&mut self.figures.sized_baseline) {
            if let Some(baseline) = self.figures.baseline.iter().find(|b| b.connections == other.connections) {
                other.throughput_ratio = Some(other.rps / baseline.rps);
                other.p99_ratio = Some(other.p99_ms / baseline.p99_ms);
            }
        }
        for server in servers {
            let answers = if server.role == "verifier" { server.auth_answers().await? } else { BTreeMap::new() };
            // Every answer but one (the check's 401 for an unknown token) was VALID.
            let refused: u64 = answers.iter().filter(|(code, _)| *code != "VALID").map(|(_, n)| n).sum();
            if refused > 1 {
                self.warn(format!("{}: {refused} /v1/auth answers were not VALID: {answers:?}", server.name));
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
        self.progress(&format!("{name}: starting (log {})", log.display()));
        let server = Server::start(name, role, keys, self.settings.tokens, &log).await?;
        self.progress(&format!("{}: listening on {} (pid {})", server.name, server.addr, server.process.pid));
        Ok(server)
    }

    // -- Part 2 ---------------------------------------------------------------------------

    /// Part 2: the keys on the API server, and the real verifier rebuilding its index from them.
    async fn api(&mut self, client: Client) -> Result<()> {
        install_crds(&client, MANAGER).await?;
        common::remove_leftovers(&client, BENCH_LABEL_VALUE, |m| self.progress(m)).await?;
        let suffix: String = (0..5).map(|_| char::from(b'a' + rand::random_range(0..26u8))).collect();
        let ns = format!("kwbench-verifier-{suffix}");
        common::create_namespace(&client, &ns, BENCH_LABEL_VALUE).await?;
        self.namespace = Some((client.clone(), ns.clone()));
        let keys: Api<ApiKey> = Api::namespaced(client.clone(), &ns);
        let mut tokens = Vec::new();
        let mut created = 0;
        for n in self.settings.sizes() {
            let mut figures = ApiFigures { keys: n, created: n - created, ..ApiFigures::default() };
            self.progress(&format!("creating ApiKeys {created} to {n} with their status in {ns}"));
            let started = Instant::now();
            self.create_keys(&keys, created..n, &mut tokens).await?;
            figures.create_secs = started.elapsed().as_secs_f64();
            figures.created_per_sec = figures.created as f64 / figures.create_secs;
            created = n;
            self.progress(&format!(
                "{} ApiKeys created in {:.1} s ({:.0} a second)",
                figures.created, figures.create_secs, figures.created_per_sec
            ));
            self.rebuild(&ns, n, &tokens, &mut figures).await?;
            self.list_floor(&keys, n, &mut figures).await?;
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
                self.progress(&format!("  {count} of {total} ApiKeys (from key {first}) created and Active"));
                said = Instant::now();
            }
        }
        Ok(())
    }

    /// Starts the verifier over the namespace's `n` keys `rounds` times and times each until
    /// ready; loads the last one with `wrk` and reads its memory before and after.
    async fn rebuild(&mut self, ns: &str, n: usize, tokens: &[String], figures: &mut ApiFigures) -> Result<()> {
        let rounds = self.settings.rounds;
        let (mut listening, mut cpu) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            let log = self.out_dir.join(format!("verifier-rebuild-{n}-{round}.log"));
            let args = ["verifier", "--namespaces", ns, "--listen", "127.0.0.1:0"].map(String::from);
            let mut verifier = Process::keyward(Path::new(env!("CARGO_BIN_EXE_keyward")), &args, &log)?;
            let limit = Duration::from_secs(120) + Duration::from_millis(2) * u32::try_from(n).unwrap_or(u32::MAX);
            let ready = verifier.wait_ready(limit).await?;
            let (listened, ready) = (ready.listening_secs, ready.ready_secs);
            let used = verifier.cpu_secs()?;
            listening.push(listened);
            cpu.push(used);
            figures.rebuild_rounds_secs.push(ready);
            self.progress(&format!(
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
                let script = write_script(self.scratch.path(), &format!("api-{n}"), tokens)?;
                let (threads, connections) = (self.settings.threads, self.settings.connections);
                self.progress(&format!("wrk on that verifier: {connections} connections, {} s", self.settings.secs));
                let addr = verifier.addr().ok_or("the verifier has not said where it listens")?;
                let run = wrk(addr, verifier.pid, &script, threads, connections, self.settings.secs).await?;
                self.progress(&format!("  {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms", run.rps, run.p50_ms, run.p99_ms));
                figures.load = Some(run);
                figures.rss_after_load_mib = Some(verifier.rss_mib()?);
                let peak = verifier.peak_rss_mib()?;
                figures.peak_rss_after_load_mib = Some(peak);
                figures.peak_rss_max_mib = figures.peak_rss_max_mib.map(|max| max.max(peak));
            }
            let warnings = verifier.log_levels().samples;
            verifier.stop().await;
            if !warnings.is_empty() {
                self.warn(format!("the verifier over {n} keys logged warnings: {warnings:?}"));
            }
        }
        figures.rebuild_secs = median(&figures.rebuild_rounds_secs);
        figures.listening_secs = median(&listening);
        figures.rebuild_cpu_secs = median(&cpu);
        Ok(())
    }

    /// For comparison with the rebuild: the same keys LISTed by the bench.
    async fn list_floor(&self, keys: &Api<ApiKey>, n: usize, figures: &mut ApiFigures) -> Result<()> {
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
        self.progress(&format!(
            "LIST of {n} ApiKeys: {paged:.2} s in pages of 500, {cached_secs:.2} s from the watch cache"
        ));
        (figures.list_paged_secs, figures.list_cached_secs) = (Some(paged), Some(cached_secs));
        Ok(())
    }
}

/// A server of part 1: this binary in a role, as a child process.
struct Server {
    name: String,
    role: String,
    keys: usize,
    process: Process,
    addr: SocketAddr,
    /// Valid tokens of this server's keys (for the baseline: those of a verifier).
    tokens: Vec<String>,
    script: Option<PathBuf>,
    answer_bytes: usize,
}

impl Server {
    /// Starts the server and reads, from its stdout (never a file: it holds tokens), where it
    /// listens and the tokens of its first keys.
    async fn start(name: String, role: &str, keys: usize, tokens: usize, log: &Path) -> Result<Self> {
        let mut command = Command::new(std::env::current_exe()?);
        command.env(ROLE_VAR, role).env(ROLE_KEYS_VAR, keys.to_string()).env(ROLE_TOKENS_VAR, tokens.to_string());
        let mut process = Process::spawn(&name, command, log, true)?;
        let stdout = process.take_stdout().ok_or("no stdout of the server")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut addr = None;
        let mut sample = Vec::new();
        let read = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(a) = line.strip_prefix("listening ") {
                    addr = Some(a.parse::<SocketAddr>()?);
                } else if let Some(token) = line.strip_prefix("token ") {
                    sample.push(token.to_string());
                } else if line == "ready" {
                    return Ok(true);
                }
            }
            Ok::<_, Error>(false)
        };
        let ready = tokio::time::timeout(Duration::from_secs(300), read)
            .await
            .map_err(|_| format!("the {name} server was not ready within 300 s; log {}", log.display()))??;
        let addr =
            addr.filter(|_| ready).ok_or_else(|| format!("the {name} server ended early; log {}", log.display()))?;
        process.set_addr(addr);
        Ok(Self { name, role: role.to_string(), keys, process, addr, tokens: sample, script: None, answer_bytes: 0 })
    }

    /// One good token gets 200 (from the verifier with its key's headers), and, from the
    /// verifier, an unknown one 401: the server really judges. Returns the 200's length.
    async fn check_answers(&self) -> Result<usize> {
        let token = self.tokens.first().ok_or("no token to present")?;
        let answer = self.process.get(AUTH_PATH, Some(token)).await?;
        if answer.status != 200 {
            return Err(format!("{}: a valid token got {}: {}", self.name, answer.status, answer.text).into());
        }
        if self.role == "verifier" {
            if !answer.text.to_ascii_lowercase().contains("x-keyward-key: bench/key-") {
                return Err(format!("{}: a 200 without X-Keyward-Key: {}", self.name, answer.text).into());
            }
            let unknown = self.process.get(AUTH_PATH, Some(Token::generate("kw").expose())).await?;
            if unknown.status != 401 {
                return Err(format!("{}: an unknown token got {}", self.name, unknown.status).into());
            }
        }
        Ok(answer.text.len())
    }

    async fn load(&self, threads: usize, connections: usize, secs: u64) -> Result<WrkRun> {
        let script = self.script.as_deref().ok_or("no wrk script")?;
        wrk(self.addr, self.process.pid, script, threads, connections, secs).await
    }

    /// The verifier's `/v1/auth` answers by code, from its `/metrics`.
    async fn auth_answers(&self) -> Result<BTreeMap<String, u64>> {
        let text = self.process.metrics().await?;
        let mut answers = BTreeMap::new();
        for (labels, value) in samples(&text, "keyward_verifier_requests_total") {
            if labels.get("endpoint").map(String::as_str) == Some("auth") {
                let code = labels.get("code").cloned().unwrap_or_default();
                *answers.entry(code).or_insert(0) += value.round() as u64;
            }
        }
        Ok(answers)
    }

    async fn stop(self) {
        self.process.stop().await;
    }
}

/// A verifier's `keyward_verifier_indexed_tokens` gauge.
async fn indexed_tokens(verifier: &Process) -> Result<u64> {
    let text = verifier.metrics().await?;
    let indexed = total(&text, "keyward_verifier_indexed_tokens");
    Ok(indexed.ok_or("no keyward_verifier_indexed_tokens in the verifier's /metrics")?.round() as u64)
}

// ---------------------------------------------------------------------------------------------
// wrk

/// Installs the Debian package `wrk` when `wrk` is not on the PATH; returns its version line.
async fn ensure_wrk() -> Result<String> {
    if let Some(version) = wrk_version().await {
        return Ok(version);
    }
    common::apt_install("wrk").await?;
    wrk_version().await.ok_or_else(|| "wrk is still not on the PATH after apt-get install wrk".into())
}

async fn wrk_version() -> Option<String> {
    // `wrk -v` prints its version and usage, and exits 1.
    let output = Command::new("wrk").arg("-v").output().await.ok()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    Some(text.lines().next().unwrap_or("wrk").trim().to_string())
}

/// A `wrk` script whose requests take turns presenting `tokens`, built once per thread.
fn write_script(dir: &Path, name: &str, tokens: &[String]) -> Result<PathBuf> {
    let list: Vec<String> = tokens.iter().map(|t| format!("  \"{t}\",")).collect();
    let script = format!(
        r#"-- {name}: GET {AUTH_PATH}, each request with the next of {count} tokens.
local tokens = {{
{list}
}}
local requests = {{}}
local turn = 0

function init(args)
  for i, token in ipairs(tokens) do
    requests[i] = wrk.format("GET", "{AUTH_PATH}", {{
      ["Host"] = wrk.headers["Host"],
      ["Authorization"] = "Bearer " .. token,
    }})
  end
end

function request()
  turn = turn % #requests + 1
  return requests[turn]
end
"#,
        count = tokens.len(),
        list = list.join("\n"),
    );
    let path = dir.join(format!("{name}.lua"));
    std::fs::write(&path, script)?;
    Ok(path)
}

/// What one `wrk --latency` run measured.
#[derive(Clone, Debug, Default, Serialize)]
struct WrkRun {
    rps: f64,
    p50_ms: f64,
    p75_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    requests: u64,
    /// connect, read, write and timeout errors together.
    socket_errors: u64,
    /// CPU time (user and system) of the server process during the run, per request.
    server_cpu_us_per_request: Option<f64>,
}

/// Runs `wrk` against `addr`, served by the process `pid`; fails when any answer was not 2xx
/// or 3xx.
async fn wrk(
    addr: SocketAddr,
    pid: u32,
    script: &Path,
    threads: usize,
    connections: usize,
    secs: u64,
) -> Result<WrkRun> {
    let cpu_before = cpu_secs(pid);
    let output = Command::new("wrk")
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{secs}s"))
        .arg("--latency")
        .arg("-s")
        .arg(script)
        .arg(format!("http://{addr}{AUTH_PATH}"))
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("run wrk: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!("wrk failed ({}): {text}{}", output.status, String::from_utf8_lossy(&output.stderr)).into());
    }
    let cpu = cpu_secs(pid).zip(cpu_before).map(|(after, before)| after - before);
    let mut run = parse_wrk(&text).map_err(|e| format!("{e} in wrk's output:\n{text}"))?;
    // wrk counts the answers it got in time; the server also answered the few in flight then.
    run.server_cpu_us_per_request = cpu.filter(|_| run.requests > 0).map(|s| s * 1e6 / run.requests as f64);
    let non_2xx = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .map(|n| n.trim().parse::<u64>())
        .transpose()?
        .unwrap_or(0);
    if non_2xx > 0 {
        return Err(format!("{non_2xx} answers of {} were not 2xx or 3xx:\n{text}", run.requests).into());
    }
    if run.requests == 0 {
        return Err(format!("wrk made no request:\n{text}").into());
    }
    Ok(run)
}

fn parse_wrk(text: &str) -> Result<WrkRun> {
    let mut run = WrkRun::default();
    let mut percentiles = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() == 2 && words[0].ends_with('%') {
            // "50%  315.00us", under "Latency Distribution".
            percentiles.insert(words[0], wrk_ms(words[1])?);
        } else if words.first() == Some(&"Latency") && words.len() >= 4 {
            // "Latency   351.01us  201.45us   9.61ms   91.57%": average, deviation, maximum.
            run.max_ms = wrk_ms(words[3])?;
        } else if let Some(rps) = line.strip_prefix("Requests/sec:") {
            run.rps = rps.trim().parse()?;
        } else if line.contains(" requests in ") {
            run.requests = words.first().ok_or("no request count")?.parse()?;
        } else if let Some(errors) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            run.socket_errors =
                errors.split(',').filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok()).sum();
        }
    }
    let percentile = |p: &str| percentiles.get(p).copied().ok_or_else(|| format!("no {p} latency"));
    (run.p50_ms, run.p75_ms, run.p90_ms, run.p99_ms) =
        (percentile("50%")?, percentile("75%")?, percentile("90%")?, percentile("99%")?);
    if run.rps <= 0.0 {
        return Err("no Requests/sec".into());
    }
    Ok(run)
}

/// A duration as wrk prints it (`315.00us`, `1.05ms`, `2.00s`, `1.00m`), in milliseconds.
fn wrk_ms(text: &str) -> Result<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic()).ok_or_else(|| format!("no unit in {text:?}"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("not a duration: {text:?}"))?;
    let scale = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return Err(format!("unknown unit in {text:?}").into()),
    };
    Ok(number * scale)
}

impl LoadFigures {
    fn of(keys: usize, threads: usize, connections: usize, rounds: Vec<WrkRun>) -> Self {
        let of = |f: fn(&WrkRun) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN);
        Self {
            keys,
            connections,
            threads,
            rps: of(|r| r.rps),
            p50_ms: of(|r| r.p50_ms),
            p99_ms: of(|r| r.p99_ms),
            cpu_us_per_request: median(&rounds.iter().filter_map(|r| r.server_cpu_us_per_request).collect::<Vec<_>>()),
            throughput_ratio: None,
            p99_ratio: None,
            rounds,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The API server

/// Creates one ApiKey granting [`SCOPE`] and writes the status the controller would (the
/// Secret it names is not made: the verifier never reads one). Returns its token. A failed
/// request is tried again a few times: one hiccup of the API server must not end a long run.
async fn create_active_key(keys: &Api<ApiKey>, name: &str) -> Result<Token> {
    let key = &ApiKey::new(name, key_spec()?);
    let created = retry(&format!("create ApiKey {name}"), || async move {
        match keys.create(&PostParams::default(), key).await {
            // An earlier try that got through but whose answer was lost.
            Err(kube::Error::Api(status)) if status.code == 409 => keys.get(name).await,
            other => other,
        }
    })
    .await?;
    let now = Timestamp::now();
    let created_at = created.creation_timestamp().map_or(now, |t| t.0);
    let expires_at = created_at.checked_add(EXPIRY)?;
    let token = Token::generate("kw");
    let generation = created.metadata.generation;
    let secret_name = format!("{name}-apikey");
    let patch = serde_json::json!({
        "apiVersion": "keyward.io/v1alpha1",
        "kind": "ApiKey",
        "status": {
            "phase": "Active",
            "observedGeneration": generation,
            "keyId": token.key_id(),
            "tokenHash": token.hash().to_string(),
            "secretName": secret_name,
            "issuedAt": Time(now),
            "expiresAt": Time(expires_at),
            "conditions": [{
                "type": CONDITION_READY,
                "status": "True",
                "reason": reason::ISSUED,
                "message": format!("token issued to Secret {secret_name}"),
                "observedGeneration": generation,
                "lastTransitionTime": Time(now),
            }],
        },
    });
    let (apply, patch) = (&PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch));
    retry(&format!("apply the status of ApiKey {name}"), move || keys.patch_status(name, apply, patch)).await?;
    Ok(token)
}

/// `attempt` up to 5 times, 1, 2, 4, 8 s apart.
async fn retry<T, F, Fut>(what: &str, attempt: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut pause = Duration::from_secs(1);
    for _ in 1..5 {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) => {
                eprintln!("{what}: {error}; trying again in {pause:?}");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
    }
    attempt().await.map_err(|e| format!("{what}: {e}").into())
}

// ---------------------------------------------------------------------------------------------
// The table

/// The figures as tables with the goals, on stdout.
fn print_table(f: &Figures) {
    let Some(settings) = &f.settings else { return };
    let rounds = settings.rounds;
    let title = format!(
        "keyward verifier bench: /v1/auth with {:?} keys, wrk {} s x {rounds} rounds, {} and 1 connection(s), \
         {} tokens presented; {}",
        settings.sizes(),
        settings.secs,
        settings.connections,
        settings.tokens,
        f.wrk.as_deref().unwrap_or("wrk")
    );
    let mut table = Table::new(title);
    let ms = |v: f64| format!("{v:.3} ms");
    let mib = show::mib;
    let secs = |v: Option<f64>| show::secs(v, 2);
    let ratio = |v: Option<f64>| show::num(v, 2);
    let mut row = |figure: String, value: String, goal: &str, ok: Option<bool>| table.goal(figure, value, goal, ok);
    let cpu = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1} us"));
    for baseline in &f.baseline {
        let c = baseline.connections;
        let load = format!("{c} conn");
        row(format!("{load}, baseline: req/s (median of {rounds})"), format!("{:.0}", baseline.rps), "", None);
        row(
            format!("{load}, baseline: p50 / p99"),
            format!("{} / {}", ms(baseline.p50_ms), ms(baseline.p99_ms)),
            "",
            None,
        );
        row(format!("{load}, baseline: server CPU per request"), cpu(baseline.cpu_us_per_request), "", None);
        for sized in f.sized_baseline.iter().filter(|v| v.connections == c) {
            row(
                format!("{load}, sized baseline: req/s (/ baseline)"),
                format!("{:.0} ({})", sized.rps, ratio(sized.throughput_ratio)),
                "",
                None,
            );
            row(
                format!("{load}, sized baseline: p50 / p99"),
                format!("{} / {}", ms(sized.p50_ms), ms(sized.p99_ms)),
                "",
                None,
            );
            row(format!("{load}, sized baseline: server CPU per request"), cpu(sized.cpu_us_per_request), "", None);
        }
        for v in f.verifier.iter().filter(|v| v.connections == c) {
            let keys = v.keys;
            row(format!("{load}, verifier {keys} keys: req/s"), format!("{:.0}", v.rps), "", None);
            row(
                format!("{load}, verifier {keys} keys: req/s / baseline"),
                ratio(v.throughput_ratio),
                ">= 0.80",
                v.throughput_ratio.map(|r| r >= 0.8),
            );
            row(
                format!("{load}, verifier {keys} keys: p50 / p99"),
                format!("{} / {}", ms(v.p50_ms), ms(v.p99_ms)),
                "",
                None,
            );
            if c == 1 {
                row(format!("{load}, verifier {keys} keys: p99"), ms(v.p99_ms), "< 1 ms", Some(v.p99_ms < 1.0));
                row(format!("{load}, verifier {keys} keys: p99 / baseline"), ratio(v.p99_ratio), "", None);
            } else {
                row(
                    format!("{load}, verifier {keys} keys: p99 / baseline"),
                    ratio(v.p99_ratio),
                    "<= 1.50",
                    v.p99_ratio.map(|r| r <= 1.5),
                );
            }
            row(format!("{load}, verifier {keys} keys: server CPU per request"), cpu(v.cpu_us_per_request), "", None);
        }
    }
    for server in &f.servers {
        let name = if server.keys == 0 { server.role.clone() } else { format!("{} {} keys", server.role, server.keys) };
        row(
            format!("in-process {name}: RSS / peak after its loads"),
            format!("{} / {}", mib(server.rss_mib), mib(server.peak_rss_mib)),
            "",
            None,
        );
        row(format!("in-process {name}: bytes of a 200 on /v1/auth"), server.answer_bytes.to_string(), "", None);
    }
    let largest = settings.sizes().last().copied().unwrap_or(0);
    for api in &f.api {
        let n = api.keys;
        let goal = n == largest;
        row(
            format!("API: create {} ApiKeys (+ status) to reach {n}", api.created),
            format!("{:.1} s ({:.0}/s)", api.create_secs, api.created_per_sec),
            "",
            None,
        );
        row(
            format!("API: rebuild after restart, {n} keys (median of {})", api.rebuild_rounds_secs.len()),
            secs(api.rebuild_secs),
            if goal { "< 5 s" } else { "" },
            api.rebuild_secs.filter(|_| goal).map(|s| s < 5.0),
        );
        row(format!("API: of which until listening, {n} keys"), secs(api.listening_secs), "", None);
        row(format!("API: verifier CPU time until ready, {n} keys"), secs(api.rebuild_cpu_secs), "", None);
        row(
            format!("API: LIST {n} keys, pages of 500 / watch cache"),
            format!("{} / {}", secs(api.list_paged_secs), secs(api.list_cached_secs)),
            "",
            None,
        );
        row(
            format!("API: verifier RSS / peak once ready, {n} keys"),
            format!("{} / {}", mib(api.rss_ready_mib), mib(api.peak_rss_ready_mib)),
            "",
            None,
        );
        row(
            format!("API: verifier RSS / peak after wrk, {n} keys"),
            format!("{} / {}", mib(api.rss_after_load_mib), mib(api.peak_rss_after_load_mib)),
            "",
            None,
        );
        row(
            format!("API: verifier highest peak RSS, {n} keys"),
            mib(api.peak_rss_max_mib),
            if goal { "< 128 MiB" } else { "" },
            api.peak_rss_max_mib.filter(|_| goal).map(|m| m < 128.0),
        );
        if let Some(load) = &api.load {
            row(
                format!("API: verifier {n} keys, {} conn: req/s, p50 / p99", settings.connections),
                format!("{:.0}, {} / {}", load.rps, ms(load.p50_ms), ms(load.p99_ms)),
                "",
                None,
            );
            row(
                format!("API: verifier {n} keys: server CPU per request"),
                cpu(load.server_cpu_us_per_request),
                "",
                None,
            );
        }
    }
    row("whole run".into(), secs(f.outcome.total_secs), "", None);
    table.print();
    let each = |runs: &[WrkRun]| {
        runs.iter().map(|r| format!("{:.0} ({:.3}/{:.3})", r.rps, r.p50_ms, r.p99_ms)).collect::<Vec<_>>().join(", ")
    };
    if !f.baseline.is_empty() {
        println!("\nrounds, req/s (p50/p99 ms):");
        let baselines = f.baseline.iter().map(|b| ("baseline".to_string(), b));
        let sized = f.sized_baseline.iter().map(|b| ("sized baseline".to_string(), b));
        let verifiers = f.verifier.iter().map(|v| (format!("verifier {}", v.keys), v));
        for (name, figures) in baselines.chain(sized).chain(verifiers) {
            println!("  {:>3} conn {name:<16} {}", figures.connections, each(&figures.rounds));
        }
    }
    for api in f.api.iter().filter(|a| !a.rebuild_rounds_secs.is_empty()) {
        let each: Vec<String> = api.rebuild_rounds_secs.iter().map(|s| format!("{s:.2}")).collect();
        println!("\nrebuilds over {} keys, seconds: {}", api.keys, each.join(", "));
    }
    f.outcome.print();
}
