//! `keyward` processes a test starts (controller, verifier, webhook): the real binary as a
//! child process with its log in a file, killed when dropped, and its HTTP endpoints.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::http::{HttpResponse, http, sample};
use super::wait::{DEADLINE, wait_for, wait_for_every};

/// `keyward controller` (or `keyward verifier`) as a child process, killed when dropped.
pub struct Operator {
    subcommand: &'static str,
    child: Option<Child>,
    pub log: PathBuf,
    /// Where in the log the current process's output starts.
    started_at: usize,
    namespace: String,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    _dir: std::sync::Arc<tempfile::TempDir>,
}

impl Operator {
    pub fn start(namespace: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::run("controller", namespace, extra, env)
    }

    pub fn run(subcommand: &'static str, namespace: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
        let mut operator = Operator {
            subcommand,
            child: None,
            log: dir.path().join(format!("{subcommand}.log")),
            started_at: 0,
            namespace: namespace.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            _dir: dir,
        };
        operator.spawn();
        operator
    }

    fn spawn(&mut self) {
        self.started_at = self.logs().len();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("open the log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_keyward"));
        command.arg(self.subcommand);
        // The webhook serves whatever the API server sends it: it has no namespaces to watch.
        if self.subcommand != "webhook" {
            command.args(["--namespaces", &self.namespace]);
        }
        // Port 0 unless the test chose one (an issuer URL must name the port it serves on).
        if !self.extra.iter().any(|a| a == "--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        command
            .args(&self.extra)
            .env("RUST_LOG", std::env::var("KEYWARD_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .kill_on_drop(true);
        for (k, v) in &self.env {
            command.env(k, v);
        }
        self.child = Some(command.spawn().unwrap_or_else(|e| panic!("start keyward {}: {e}", self.subcommand)));
    }

    /// SIGKILL, no goodbye.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap_or_else(|e| panic!("kill keyward {}: {e}", self.subcommand));
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill before restart");
        self.spawn();
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A failing test shows the tail of each process's log: the only record of what the process
/// saw, since its temporary directory goes with it. (The logs hold no token: the secrecy tests
/// scan them.)
impl Drop for Operator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs();
            let lines: Vec<&str> = logs.lines().collect();
            let tail = &lines[lines.len().saturating_sub(400)..];
            eprintln!("--- keyward {} log ({}), last {} lines ---", self.subcommand, self.log.display(), tail.len());
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

impl Operator {
    /// The address the process serves HTTP on (it listens on port 0), from its log.
    pub async fn listen_addr(&self) -> String {
        wait_for(format!("keyward {} saying where it listens", self.subcommand), DEADLINE, || async {
            let logs = self.logs();
            logs[self.started_at.min(logs.len())..]
                .lines()
                .filter(|l| l.contains("serving /healthz"))
                .find_map(|line| {
                    let start = line.find("127.0.0.1:")?;
                    let rest = &line[start..];
                    let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':')).unwrap_or(rest.len());
                    Some(rest[..end].to_string())
                })
                .ok_or_else(|| format!("the log:\n{logs}"))
        })
        .await
    }

    /// GET `path` from the process's HTTP endpoint; returns the status line and body.
    pub async fn http_get(&self, path: &str) -> (String, String) {
        let addr = self.listen_addr().await;
        let response = http(&addr, format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await;
        (response.status_line, response.body)
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        wait_for(format!("keyward {} ready", self.subcommand), DEADLINE, || async {
            let (status, _) = self.http_get("/readyz").await;
            if status.contains(" 200 ") { Ok(()) } else { Err(format!("{status}; the log:\n{}", self.logs())) }
        })
        .await
    }

    /// The process's `/metrics`, as text.
    pub async fn metrics(&self) -> String {
        let (status, metrics) = self.http_get("/metrics").await;
        assert!(status.contains(" 200 "), "/metrics answered {status}");
        metrics
    }

    /// Reads `/metrics` until the value of `series` (`None` when absent) satisfies `condition`;
    /// returns the metrics that did. Fails at the deadline naming `what`.
    pub async fn wait_metric(&self, series: &str, what: &str, condition: impl Fn(Option<f64>) -> bool) -> String {
        wait_for(format!("{series}: {what}"), DEADLINE, || async {
            let metrics = self.metrics().await;
            if condition(sample(&metrics, series)) { Ok(metrics) } else { Err(metrics) }
        })
        .await
    }

    /// `POST /v1/verify` with `body`; returns the status code and the JSON answer.
    pub async fn verify(&self, body: serde_json::Value) -> (u16, serde_json::Value) {
        let addr = self.listen_addr().await;
        let body = body.to_string();
        let request = format!(
            "POST /v1/verify HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let response = http(&addr, request.as_bytes()).await;
        let json = serde_json::from_str(&response.body).unwrap_or_else(|e| {
            panic!("/v1/verify answered {} with no JSON ({e}): {:?}", response.status, response.body)
        });
        (response.status, json)
    }

    /// The verdict code `POST /v1/verify` gives for `token` with `scopes` from `ip`.
    pub async fn verify_code(&self, token: &str, scopes: &[&str], ip: Option<&str>) -> String {
        let (status, answer) = self.verify(serde_json::json!({"token": token, "scopes": scopes, "ip": ip})).await;
        assert_eq!(status, 200, "{answer}");
        answer["code"].as_str().unwrap_or_else(|| panic!("no code in {answer}")).to_string()
    }

    /// Asks `/v1/verify` until it answers `want` for `token`, or fails after `within`; returns
    /// how long the change took to show.
    pub async fn wait_code(&self, token: &str, want: &str, within: Duration) -> Duration {
        let started = tokio::time::Instant::now();
        // Every 10 ms: some callers hold the answer to a bound of a second.
        wait_for_every(format!("the verifier answering {want}"), within, Duration::from_millis(10), || async {
            let code = self.verify_code(token, &[], None).await;
            if code == want { Ok(()) } else { Err(code) }
        })
        .await;
        started.elapsed()
    }

    /// `GET` `path_and_query` from `/v1/auth` with extra header lines.
    pub async fn auth(&self, path_and_query: &str, headers: &[(&str, &str)]) -> HttpResponse {
        let addr = self.listen_addr().await;
        let mut request = format!("GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        http(&addr, request.as_bytes()).await
    }
}
