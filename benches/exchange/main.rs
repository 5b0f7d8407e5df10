//! `cargo bench --bench exchange`: what token exchange costs in `keyward verifier`, on one
//! stack in one run.
//!
//! On the API server named by `KUBECONFIG` (without the controller), the bench creates
//! `KEYWARD_BENCH_EXCHANGE_KEYS` (1,000) ApiKeys granting `orders.read` in a fresh namespace and
//! writes each one's status itself, as the controller does (the keys of the verifier bench), and
//! the signing Secret with one P-256 key, as the controller's keeper would. It starts the real
//! `keyward verifier --issuer` (the release binary) over that namespace and exchanges every
//! key's API token once for an access token. Then, with `wrk` over keep-alive loopback
//! connections (`KEYWARD_BENCH_EXCHANGE_CONNECTIONS`, 32, on `KEYWARD_BENCH_EXCHANGE_THREADS`, 2,
//! threads), three loads take turns over `KEYWARD_BENCH_EXCHANGE_ROUNDS` (3) rounds of
//! `KEYWARD_BENCH_EXCHANGE_SECS` (10) seconds, each round starting with another:
//!
//! 1. `GET /v1/auth?scope=orders.read` presenting the 1,000 API tokens in turn;
//! 2. the same presenting the 1,000 access tokens (JWTs: checked once each, then from the
//!    verifier's cache until `exp`; the key judged by its UID in the index);
//! 3. `POST /v1/token` client-credentials exchanges, HTTP Basic over the 1,000 keys in turn.
//!
//! Goals (medians over the rounds): access-token throughput at least 0.8 of the API-token
//! throughput and its p99 at most 1.5 times; at least 5,000 exchanges a second. The verifier's
//! CPU time per request (from `/proc`, its user and system time over the requests `wrk`
//! counted) is given for each; the load generator shares the machine's cores. Any answer but
//! 200 fails the run. The verifier's own counters (answers by code, access-token checks by
//! cache hit or miss, exchanges by result) are kept in the figures.
//!
//! Figures in a table at the end and in `target/bench/exchange.json`; the verifier's log in
//! `target/bench/exchange-verifier.log` (it never holds a token; the `wrk` scripts, which do,
//! live in a temporary directory). `KEYWARD_BENCH_LOG` (`info`) is the verifier's `RUST_LOG`;
//! `KEYWARD_BENCH_KEEP_NAMESPACES=1` leaves the namespace. `wrk` is installed with apt-get when
//! missing. Namespaces carry the label `keyward.io/bench=exchange`; an interrupted run's are
//! deleted at the start.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::{StreamExt, TryStreamExt};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use keyward::api::{ApiKey, ApiKeySpec};
use keyward::signing::{self, Stored, StoredKey};
use keyward::token::Token;
use kube::Client;
use kube::api::{Api, PostParams};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

#[path = "../verifier/api.rs"]
mod api;
#[path = "../common/mod.rs"]
mod common;
mod figures;
#[path = "../verifier/wrk.rs"]
mod wrk;

use common::metrics::{samples, total};
use common::process::Process;
use common::{Error, MANAGER, Outcome, Progress, Result, env_number};
use figures::{Figures, LoadFigures, print_table};
use wrk::{WrkRun, ensure_wrk, write_script};

/// The value of the label `common::BENCH_LABEL` on this bench's namespaces.
const BENCH_LABEL_VALUE: &str = "exchange";
/// The scope every key grants and every `/v1/auth` request requires.
const SCOPE: &str = "orders.read";
/// The path of the `/v1/auth` loads (and, for `wrk`, of its command line: each script's
/// requests name their own).
const AUTH_PATH: &str = "/v1/auth?scope=orders.read";
/// Expiry of the keys, the operator's default.
const EXPIRY: SignedDuration = SignedDuration::from_secs(keyward::api::expiry::DEFAULT_EXPIRY.as_secs() as i64);
/// The verifier's `--issuer`: only a name in the tokens (`iss`, `aud`), never dialled.
const ISSUER: &str = "https://keyward-bench.example";
/// Access tokens must outlive the run: the contract's longest.
const ACCESS_TOKEN_TTL: &str = "2h";
/// A short `wrk` run of each load before the first measure.
const WARM_UP_SECS: u64 = 2;
/// Exchanges in flight while the bench gets its access tokens.
const FETCH_CONCURRENCY: usize = 16;

fn main() -> ExitCode {
    bench()
}

fn key_spec() -> Result<ApiKeySpec> {
    Ok(serde_json::from_value(serde_json::json!({ "scopes": [SCOPE] }))?)
}

fn key_name(i: usize) -> String {
    format!("key-{i:06}")
}

/// What to run, from `KEYWARD_BENCH_EXCHANGE_*` variables.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// ApiKeys, each with its API token and one access token presented.
    pub keys: usize,
    pub rounds: usize,
    /// Seconds of each `wrk` measure.
    pub secs: u64,
    pub connections: usize,
    pub threads: usize,
    /// ApiKeys created (and their status written) at once.
    pub concurrency: usize,
}

impl Settings {
    fn from_env() -> Result<Self> {
        let connections = env_number("KEYWARD_BENCH_EXCHANGE_CONNECTIONS", 32)?.max(1);
        Ok(Self {
            keys: env_number("KEYWARD_BENCH_EXCHANGE_KEYS", 1000)?.max(1),
            rounds: env_number("KEYWARD_BENCH_EXCHANGE_ROUNDS", 3)?.max(1),
            secs: env_number("KEYWARD_BENCH_EXCHANGE_SECS", 10)?.max(1),
            connections,
            threads: env_number("KEYWARD_BENCH_EXCHANGE_THREADS", 2)?.clamp(1, connections),
            concurrency: env_number("KEYWARD_BENCH_EXCHANGE_CONCURRENCY", 64)?.max(1),
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
    /// The namespace, deleted at the end.
    namespace: Option<(Client, String)>,
    figures: Figures,
    progress: Progress,
}

/// The three loads, in the order of the first round.
const LOADS: [Load; 3] = [Load::ApiTokens, Load::AccessTokens, Load::Exchange];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Load {
    ApiTokens,
    AccessTokens,
    Exchange,
}

impl Load {
    fn name(self) -> &'static str {
        match self {
            Load::ApiTokens => "/v1/auth, API tokens",
            Load::AccessTokens => "/v1/auth, access tokens",
            Load::Exchange => "POST /v1/token",
        }
    }

    fn file_name(self) -> &'static str {
        match self {
            Load::ApiTokens => "api-tokens",
            Load::AccessTokens => "access-tokens",
            Load::Exchange => "exchange",
        }
    }
}

impl common::Bench for Bench {
    type Figures = Figures;
    const NAME: &'static str = "exchange";

    async fn run(&mut self) -> Result<()> {
        self.progress.say(&format!("settings: {:?}", self.settings));
        if std::env::var_os("KUBECONFIG").is_none() {
            return Err("KUBECONFIG must name the API server (see `make bench`): the verifier reads the keys \
                        and the signing Secret from it"
                .into());
        }
        let client = Client::try_default().await.map_err(|e| format!("a client from KUBECONFIG: {e}"))?;
        self.figures.wrk = Some(ensure_wrk().await?);
        common::install_crds(&client, MANAGER).await?;
        common::remove_leftovers(&client, BENCH_LABEL_VALUE, |m| self.progress.say(m)).await?;
        let ns = format!("kwbench-exchange-{}", common::random_suffix());
        common::create_namespace(&client, &ns, BENCH_LABEL_VALUE).await?;
        self.namespace = Some((client.clone(), ns.clone()));

        let tokens = self.create_keys(&client, &ns).await?;
        write_signing_secret(&client, &ns).await?;
        let verifier = self.start_verifier(&ns).await?;
        let result = self.measure(&verifier, &tokens).await;
        self.figures.rss_mib = verifier.rss_mib().ok();
        self.figures.peak_rss_mib = verifier.peak_rss_mib().ok();
        let warnings = verifier.log_levels().samples;
        verifier.stop().await;
        if !warnings.is_empty() {
            self.progress.warn(&mut self.figures.outcome, format!("the verifier logged warnings: {warnings:?}"));
        }
        result
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

    /// The ApiKeys with their status, `concurrency` at once; returns their tokens.
    async fn create_keys(&mut self, client: &Client, ns: &str) -> Result<Vec<Token>> {
        let n = self.settings.keys;
        self.progress.say(&format!("creating {n} ApiKeys with their status in {ns}"));
        let keys: Api<ApiKey> = Api::namespaced(client.clone(), ns);
        let started = Instant::now();
        let keys = &keys;
        let tokens: Vec<Token> = futures::stream::iter(0..n)
            .map(|i| async move { api::create_active_key(keys, &key_name(i)).await })
            .buffer_unordered(self.settings.concurrency)
            .try_collect()
            .await?;
        let secs = started.elapsed().as_secs_f64();
        self.progress.say(&format!("{n} ApiKeys created in {secs:.1} s"));
        self.figures.create_keys_secs = Some(secs);
        Ok(tokens)
    }

    /// `keyward verifier --issuer` over the namespace, reading the signing Secret there; once
    /// ready, checks that it indexed every key and waits until it can sign.
    async fn start_verifier(&mut self, ns: &str) -> Result<Process> {
        let log = self.out_dir.join("exchange-verifier.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_keyward"));
        command
            .args(["verifier", "--namespaces", ns, "--listen", "127.0.0.1:0", "--issuer", ISSUER])
            .args(["--access-token-ttl", ACCESS_TOKEN_TTL])
            .env("POD_NAMESPACE", ns)
            .env("RUST_LOG", std::env::var("KEYWARD_BENCH_LOG").unwrap_or_else(|_| "info".into()));
        let mut verifier = Process::spawn("verifier", command, &log, false)?;
        self.progress.say(&format!("verifier: started (pid {}, log {})", verifier.pid, log.display()));
        let ready = verifier.wait_ready(Duration::from_secs(120)).await?;
        self.progress.say(&format!("verifier: ready after {:.2} s", ready.ready_secs));
        let indexed = total(&verifier.metrics().await?, "keyward_verifier_indexed_tokens").unwrap_or(0.0) as usize;
        if indexed != self.settings.keys {
            return Err(
                verifier.explain(format!("the verifier indexed {indexed} tokens, not {}", self.settings.keys).into())
            );
        }
        Ok(verifier)
    }

    async fn measure(&mut self, verifier: &Process, tokens: &[Token]) -> Result<()> {
        let addr = verifier.addr().ok_or("the verifier has not said where it listens")?;
        let basics: Vec<String> = tokens.iter().map(basic_authorization).collect();
        wait_signing(addr, &basics[0]).await.map_err(|e| verifier.explain(e))?;
        self.progress.say(&format!("exchanging each of the {} API tokens once", tokens.len()));
        let started = Instant::now();
        let access_tokens = fetch_access_tokens(addr, &basics).await.map_err(|e| verifier.explain(e))?;
        let secs = started.elapsed().as_secs_f64();
        self.progress.say(&format!("{} access tokens in {secs:.2} s (one connection each)", access_tokens.len()));
        let api_tokens: Vec<String> = tokens.iter().map(|t| t.expose().to_string()).collect();
        check_answers(verifier, &api_tokens[0], &access_tokens[0]).await?;

        let dir = self.scratch.path();
        let scripts = [
            write_script(dir, Load::ApiTokens.file_name(), &api_tokens)?,
            write_script(dir, Load::AccessTokens.file_name(), &access_tokens)?,
            write_exchange_script(dir, Load::Exchange.file_name(), &basics)?,
        ];
        drop((api_tokens, access_tokens, basics));
        let (threads, connections, secs) = (self.settings.threads, self.settings.connections, self.settings.secs);
        for (load, script) in LOADS.iter().zip(&scripts) {
            self.progress.say(&format!("{}: warming up for {WARM_UP_SECS} s", load.name()));
            wrk::run(addr, verifier.pid, script, threads, connections, WARM_UP_SECS).await?;
        }
        let checks_before = counter_by(verifier, "keyward_verifier_access_token_checks_total", "result").await?;
        let mut runs: [Vec<WrkRun>; LOADS.len()] = Default::default();
        for round in 0..self.settings.rounds {
            for l in (0..LOADS.len()).map(|l| (l + round) % LOADS.len()) {
                let run = wrk::run(addr, verifier.pid, &scripts[l], threads, connections, secs).await?;
                self.progress.say(&format!(
                    "round {}, {}: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms, verifier CPU {:.1} us/request",
                    round + 1,
                    LOADS[l].name(),
                    run.rps,
                    run.p50_ms,
                    run.p99_ms,
                    run.server_cpu_us_per_request.unwrap_or(f64::NAN),
                ));
                if run.socket_errors > 0 {
                    let warning = format!("{}: {} socket errors", LOADS[l].name(), run.socket_errors);
                    self.progress.warn(&mut self.figures.outcome, warning);
                }
                runs[l].push(run);
            }
        }
        let checks_after = counter_by(verifier, "keyward_verifier_access_token_checks_total", "result").await?;
        let [api, access, exchange] = runs.map(|rounds| LoadFigures::of(connections, threads, rounds));
        self.figures.access_token_throughput_ratio = Some(access.rps / api.rps);
        self.figures.access_token_p99_ratio = Some(access.p99_ms / api.p99_ms);
        (self.figures.api_tokens, self.figures.access_tokens, self.figures.exchange) =
            (Some(api), Some(access), Some(exchange));
        // Signature checks during the measures: every access token was checked before them.
        self.figures.access_token_checks_during_measures = checks_after
            .iter()
            .map(|(result, n)| (result.clone(), n - checks_before.get(result).copied().unwrap_or(0)))
            .collect();
        self.figures.auth_answers = counter_by_endpoint(verifier, "auth").await?;
        self.figures.exchanges = counter_by(verifier, "keyward_verifier_token_exchanges_total", "result").await?;
        let misses = self.figures.access_token_checks_during_measures.get("miss").copied().unwrap_or(0);
        if misses > 0 {
            let warning = format!("{misses} access-token signature checks during the measures: the cache missed");
            self.progress.warn(&mut self.figures.outcome, warning);
        }
        Ok(())
    }
}

/// `Basic base64(key ID ":" token)`: both are base62 and `_`, so form-urlencoding (RFC 6749
/// 2.3.1) leaves them as they are.
fn basic_authorization(token: &Token) -> String {
    let credentials = format!("{}:{}", token.key_id(), token.expose());
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credentials))
}

/// The signing Secret as the controller's keeper writes it: one P-256 key, signing from now.
async fn write_signing_secret(client: &Client, ns: &str) -> Result<()> {
    let key = StoredKey::generate(Timestamp::now())?;
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some(signing::DEFAULT_SECRET_NAME.into()), ..Default::default() },
        type_: Some(signing::SECRET_TYPE.into()),
        data: Some(signing::secret_data(&Stored { keys: vec![key] })),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .map_err(|e| format!("create the signing Secret in {ns}: {e}"))?;
    Ok(())
}

/// `POST /v1/token` (client credentials) with `authorization`, on a connection of its own:
/// the status and the JSON answer.
async fn exchange_once(addr: SocketAddr, authorization: &str) -> Result<(u16, serde_json::Value)> {
    let body = "grant_type=client_credentials";
    let request = format!(
        "POST /v1/token HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {authorization}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let talk = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), talk)
        .await
        .map_err(|_| format!("POST http://{addr}/v1/token: no answer within 10 s"))?
        .map_err(|e| format!("POST http://{addr}/v1/token: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("no status line")?;
    let json = text.split_once("\r\n\r\n").and_then(|(_, body)| serde_json::from_str(body).ok());
    Ok((status, json.unwrap_or_default()))
}

/// Waits (30 s at most) until the verifier has read the signing Secret and exchanges.
async fn wait_signing(addr: SocketAddr, authorization: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, answer) = exchange_once(addr, authorization).await?;
        if status == 200 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("the verifier did not exchange within 30 s: {status} {}", answer["error"]).into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One access token per key, in the keys' order.
async fn fetch_access_tokens(addr: SocketAddr, basics: &[String]) -> Result<Vec<String>> {
    futures::stream::iter(basics)
        .map(|basic| async move {
            let (status, answer) = exchange_once(addr, basic).await?;
            match answer["access_token"].as_str() {
                Some(token) if status == 200 => Ok(token.to_string()),
                _ => Err(Error::from(format!("an exchange got {status} {}", answer["error"]))),
            }
        })
        .buffered(FETCH_CONCURRENCY)
        .try_collect()
        .await
}

/// The verifier judges both kinds of token: each gets a 200 naming its key, an unknown API
/// token and a forged access token 401.
async fn check_answers(verifier: &Process, api_token: &str, access_token: &str) -> Result<()> {
    for (what, token) in [("an API token", api_token), ("an access token", access_token)] {
        let answer = verifier.get(AUTH_PATH, Some(token)).await?;
        if answer.status != 200 || !answer.text.to_ascii_lowercase().contains("x-keyward-key: kwbench-exchange-") {
            return Err(format!("{what} got {} without its key's headers", answer.status).into());
        }
    }
    let unknown = verifier.get(AUTH_PATH, Some(Token::generate("kw").expose())).await?;
    // A signature character changed (not the last, part of which is padding): a well-formed
    // JWT whose signature fails.
    let mut forged = access_token.as_bytes().to_vec();
    let at = forged.len().saturating_sub(10);
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let forged = verifier.get(AUTH_PATH, Some(&String::from_utf8_lossy(&forged))).await?;
    if unknown.status != 401 || forged.status != 401 {
        return Err(
            format!("an unknown API token got {}, a forged access token {}", unknown.status, forged.status).into()
        );
    }
    Ok(())
}

/// A `wrk` script whose requests are client-credentials exchanges, each with the next of the
/// Basic `authorizations`, built once per thread.
fn write_exchange_script(dir: &Path, name: &str, authorizations: &[String]) -> Result<PathBuf> {
    let request = r#"wrk.format("POST", "/v1/token", { ["Host"] = wrk.headers["Host"], ["Authorization"] = value, ["Content-Type"] = "application/x-www-form-urlencoded" }, "grant_type=client_credentials")"#;
    let what = format!("POST /v1/token (client credentials) with the next of {} keys", authorizations.len());
    wrk::write_turns(dir, name, &what, authorizations, request)
}

/// A counter of the verifier's, summed by the label `label`.
async fn counter_by(verifier: &Process, name: &str, label: &str) -> Result<BTreeMap<String, u64>> {
    let text = verifier.metrics().await?;
    let mut by = BTreeMap::new();
    for (labels, value) in samples(&text, name) {
        *by.entry(labels.get(label).cloned().unwrap_or_default()).or_insert(0) += value.round() as u64;
    }
    Ok(by)
}

/// `keyward_verifier_requests_total` of one endpoint, by code.
async fn counter_by_endpoint(verifier: &Process, endpoint: &str) -> Result<BTreeMap<String, u64>> {
    let text = verifier.metrics().await?;
    let mut by = BTreeMap::new();
    for (labels, value) in samples(&text, "keyward_verifier_requests_total") {
        if labels.get("endpoint").map(String::as_str) == Some(endpoint) {
            *by.entry(labels.get("code").cloned().unwrap_or_default()).or_insert(0) += value.round() as u64;
        }
    }
    Ok(by)
}
