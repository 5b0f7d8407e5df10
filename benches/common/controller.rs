//! `keyward controller` as a child process of a bench: started, waited for, its memory, log
//! levels and `/metrics` counters read, stopped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::{Error, Result};

/// The controller's log line once its caches are filled.
const READY_LINE: &str = "initial lists synced";
/// The controller's log line that names the address it bound.
const LISTEN_LINE: &str = "serving /healthz";

/// `keyward controller` for one namespace, as a child process killed when dropped.
pub struct Controller {
    child: Child,
    pub pid: u32,
    pub namespace: String,
    pub log: PathBuf,
}

impl Controller {
    /// Starts `program controller --namespaces <namespace> --listen 127.0.0.1:0` with `extra`
    /// arguments, its output in `log`.
    pub fn start(program: &Path, namespace: &str, extra: &[String], log: &Path) -> Result<Self> {
        let file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(program)
            .args(["controller", "--namespaces", namespace, "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", std::env::var("KEYWARD_BENCH_LOG").unwrap_or_else(|_| "info".into()))
            // Plain text logs, which the bench reads.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("start keyward controller: {e}"))?;
        let pid = child.id().ok_or("the controller exited at once")?;
        Ok(Self { child, pid, namespace: namespace.to_string(), log: log.to_path_buf() })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the log line that says the controller's caches are filled.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log_text().contains(READY_LINE) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                return Err(self.explain(format!("the controller exited ({status}) before it was ready").into()));
            }
            if Instant::now() >= deadline {
                return Err(
                    self.explain(format!("the controller did not log {READY_LINE:?} within {timeout:?}").into())
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn check_alive(&self) -> Result<()> {
        match std::fs::metadata(format!("/proc/{}", self.pid)) {
            Ok(_) => Ok(()),
            Err(_) => Err(self.explain("the controller died".into())),
        }
    }

    /// Peak resident set size (VmHWM) of the controller process, in MiB.
    pub fn peak_rss_mib(&self) -> Result<f64> {
        self.memory_mib("VmHWM")
    }

    /// Resident set size now (VmRSS), in MiB: beside the peak, it tells memory the controller
    /// keeps from memory it needed only for a while.
    pub fn rss_mib(&self) -> Result<f64> {
        self.memory_mib("VmRSS")
    }

    pub fn memory_mib(&self, field: &str) -> Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .map_err(|e| format!("read the controller's /proc status: {e}"))?;
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("no {field} in /proc/<pid>/status"))?;
        Ok(kib as f64 / 1024.0)
    }

    /// Lines logged at WARN and at ERROR, and the first few of them. The kube client's warning
    /// that the kubeconfig skips TLS verification (as the local control plane's does) is left
    /// out: it says nothing about the controller.
    pub fn log_levels(&self) -> (u64, u64, Vec<String>) {
        let text = self.log_text();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .filter(|l| !l.contains("Server cert bypassed"))
            .collect();
        let errors = lines.iter().filter(|l| l.contains(" ERROR ")).count() as u64;
        let samples = lines.iter().take(5).map(|l| l.to_string()).collect();
        (lines.len() as u64 - errors, errors, samples)
    }

    /// The controller's `keyward_reconciles` counter.
    pub fn reconciles(&self) -> Result<u64> {
        Ok(self.counter("keyward_reconciles_total")?.values().sum())
    }

    /// The controller's own count of its writes, `keyward_api_writes_total`: `resource verb` ->
    /// writes; `None` (and said) when it cannot be read.
    pub fn api_writes(&self) -> Option<BTreeMap<String, u64>> {
        match self.counter("keyward_api_writes_total") {
            Ok(series) => Some(
                series
                    .into_iter()
                    .map(|(labels, n)| {
                        let label = |name: &str| labels.get(name).cloned().unwrap_or_default();
                        (format!("{} {}", label("resource"), label("verb")), n)
                    })
                    .collect(),
            ),
            Err(error) => {
                eprintln!("cannot read the controller's keyward_api_writes_total: {error}");
                None
            }
        }
    }

    /// One counter's series from the controller's `/metrics`, on the address its log names (it
    /// listens on a port the kernel picked): labels -> value.
    pub fn counter(&self, name: &str) -> Result<BTreeMap<BTreeMap<String, String>, u64>> {
        let text = self.log_text();
        let addr = text
            .lines()
            .find(|l| l.contains(LISTEN_LINE))
            .and_then(|l| l.split("addr=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .ok_or("no listen address in the controller's log")?;
        let metrics = http_get(addr, "/metrics")?;
        let mut series = BTreeMap::new();
        for line in metrics.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            let (labels, value) = match rest.strip_prefix('{').and_then(|r| r.rsplit_once('}')) {
                Some((labels, value)) => (parse_labels(labels), value),
                None => (BTreeMap::new(), rest),
            };
            // A longer name that starts with this one has no space here and fails to parse.
            if let Ok(value) = value.trim_start_matches(' ').parse::<f64>() {
                *series.entry(labels).or_insert(0) += value.round() as u64;
            }
        }
        Ok(series)
    }

    /// Adds the controller's last log lines to an error, to say what it was doing.
    pub fn explain(&self, error: Error) -> Error {
        let text = self.log_text();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("{error}\nlast controller log lines ({}):\n{}", self.log.display(), tail.join("\n")).into()
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A plain HTTP/1.0 GET on the loopback interface. Blocking, but local and small: the bench
/// has no HTTP client of its own and needs none for this.
pub fn http_get(addr: &str, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}

/// Parses `a="x",b="y"` as Prometheus writes labels (values escape `\`, `"` and newlines).
pub fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((name, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, escaped)) => value.push(escaped),
                    None => {}
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(name.trim_start_matches(',').trim().to_string(), value);
        rest = &after[end..];
    }
    labels
}
