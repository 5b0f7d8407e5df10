//! The servers of part 1: this bench binary started again in a role (the verifier with its
//! index filled in-process, or a baseline), or NGINX, and the bench's handle on one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Response};
use futures::future::Either;
use hyper::body::Incoming;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keyward::api::{ApiKey, Kind};
use keyward::http::Respond;
use keyward::judge::{ObjectKey, apikey_entries};
use keyward::token::Token;
use keyward::verifier::Verifier;
use kube::ResourceExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;

use super::wrk::{self, WrkRun};
use super::{AUTH_PATH, EXPIRY, ROLE_KEYS_VAR, ROLE_TOKENS_VAR, ROLE_VAR, SCOPE, key_name, key_spec};
use crate::common::metrics::samples;
use crate::common::process::Process;
use crate::common::status::issued_apikey;
use crate::common::{Error, Result, env_number};

/// Serves `/v1/auth` on a loopback port the kernel picks: the verifier with `ROLE_KEYS_VAR`
/// keys indexed, or the baseline. Prints `listening <addr>`, a `token <token>` line for each
/// of the first `ROLE_TOKENS_VAR` keys, then `ready`; stops on SIGTERM, as `keyward` does.
#[tokio::main]
pub async fn serve(role: String) -> ExitCode {
    keyward::logging::init_logging(keyward::logging::LogFormat::Text);
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
    match role {
        "baseline" | "baseline-sized" => {
            let metrics = keyward::verifier::metrics::VerifierMetrics::default();
            let router = keyward::metrics::health_routes(metrics.registry(), ready);
            let answer = match role {
                "baseline" => Vec::new(),
                _ => sized_answer()?.to_vec(),
            };
            serve_on(role, Fixed { answer: answer.into(), router }, &[]).await
        }
        "verifier" => {
            let keys = env_number(ROLE_KEYS_VAR, 0)?;
            let sample = env_number(ROLE_TOKENS_VAR, 0)?;
            let (verifier, tokens) = filled_verifier(keys, sample)?;
            let registry = verifier.metrics.registry();
            let router = keyward::verifier::http::routes(verifier.clone())
                .merge(keyward::metrics::health_routes(registry, ready));
            serve_on(role, keyward::verifier::http::Server::new(verifier, router), &tokens).await
        }
        other => Err(format!("{ROLE_VAR}={other:?}: baseline, baseline-sized or verifier").into()),
    }
}

/// A baseline: `/v1/auth` (the one path the bench asks) answered at once with `answer`'s
/// headers and no body, before any routing as by the verifier's
/// [`keyward::verifier::http::Server`]; every other path (the health routes) routed.
#[derive(Clone)]
struct Fixed {
    answer: Arc<[(HeaderName, HeaderValue)]>,
    router: Router,
}

impl Respond for Fixed {
    fn respond(
        &self,
        request: hyper::Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send + use<> {
        if request.uri().path() != "/v1/auth" {
            return Either::Right(self.router.respond(request, peer));
        }
        let mut response = Response::new(Body::empty());
        response.headers_mut().extend(self.answer.iter().cloned());
        Either::Left(std::future::ready(response))
    }
}

/// Serves `responder` on a loopback port the kernel picks, after printing the lines
/// [`serve`] promises; until SIGTERM.
async fn serve_on(role: &str, responder: impl Respond, tokens: &[String]) -> Result<()> {
    let listener = keyward::http::bind(([127, 0, 0, 1], 0).into(), &format!("/v1/auth ({role})")).await?;
    let mut out = format!("listening {}\n", listener.local_addr()?);
    for token in tokens {
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
    keyward::http::serve(listener, responder, shutdown).await?;
    Ok(())
}

/// The headers of a verifier's 200 on `/v1/auth` for one of the bench's keys, fixed (a granted
/// answer has no body): what the sized baseline answers, to tell the cost of the answer's bytes
/// from the cost of the judgement. The table's "bytes of a 200" row shows both sizes.
fn sized_answer() -> Result<[(HeaderName, HeaderValue); 4]> {
    let token = Token::generate("kw");
    let header = |name: &'static str, value: String| Ok::<_, Error>((HeaderName::from_static(name), value.try_into()?));
    Ok([
        header("x-keyward-code", "VALID".into())?,
        header("x-keyward-key", format!("bench/{}", key_name(0)))?,
        header("x-keyward-key-id", token.key_id())?,
        header("x-keyward-scopes", SCOPE.into())?,
    ])
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
    let status = issued_apikey(token, &format!("{name}-apikey"), Some(1), created, expires_at);
    key.status = Some(serde_json::from_value(status)?);
    Ok(key)
}

/// A server of part 1: this binary in a role, as a child process.
pub struct Server {
    pub name: String,
    pub role: String,
    pub keys: usize,
    pub process: Process,
    pub addr: SocketAddr,
    /// Valid tokens of this server's keys (for the baseline: those of a verifier).
    pub tokens: Vec<String>,
    pub script: Option<PathBuf>,
    pub answer_bytes: usize,
}

impl Server {
    /// Starts the server and reads, from its stdout (never a file: it holds tokens), where it
    /// listens and the tokens of its first keys.
    pub async fn start(name: String, role: &str, keys: usize, tokens: usize, log: &Path) -> Result<Self> {
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

    /// NGINX answering `return 200;` on `/v1/auth` (see [`super::nginx`]), with its files in
    /// `dir`; `tokens` are those its requests present (a verifier's).
    pub async fn start_nginx(binary: &Path, dir: &Path, log: &Path, tokens: Vec<String>) -> Result<Self> {
        let (process, addr) = super::nginx::start(binary, dir, log).await?;
        Ok(Self {
            name: "nginx".into(),
            role: "nginx".into(),
            keys: 0,
            process,
            addr,
            tokens,
            script: None,
            answer_bytes: 0,
        })
    }

    /// One good token gets 200 (from the verifier with its key's headers), and, from the
    /// verifier, an unknown one 401: the server really judges. Returns the 200's length.
    pub async fn check_answers(&self) -> Result<usize> {
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

    pub async fn load(&self, threads: usize, connections: usize, secs: u64) -> Result<WrkRun> {
        let script = self.script.as_deref().ok_or("no wrk script")?;
        wrk::run(self.addr, self.process.pid, script, threads, connections, secs).await
    }

    /// The verifier's `/v1/auth` answers by code, from its `/metrics`.
    pub async fn auth_answers(&self) -> Result<BTreeMap<String, u64>> {
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

    pub async fn stop(self) {
        self.process.stop().await;
    }
}
