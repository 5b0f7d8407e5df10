//! Every process a bench starts to measure (`keyward controller`, `verifier`, `webhook`, and the
//! verifier bench's own servers) as one child-process type: started with its output in a log
//! file, waited for on `/readyz`, its `/metrics`, memory, CPU time and log levels read, stopped
//! by SIGTERM; and the pids of the local control plane's processes, whose CPU time benches read
//! too.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::{Child, ChildStdout, Command};

use super::metrics::{self, Labels};
use super::{Error, Result};

/// The log line of every `keyward` server that names the address it bound.
const LISTEN_LINE: &str = "serving /healthz";
/// How long a stopped process may take to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// A child process, killed when dropped.
pub struct Process {
    /// What it is, for messages: `controller`, `webhook`, `verifier-100000`...
    pub name: String,
    child: Child,
    pub pid: u32,
    pub log: PathBuf,
    /// Just before it was spawned.
    pub started: Instant,
    /// Where it listens (it binds port 0), once known.
    addr: OnceLock<SocketAddr>,
    /// For a server over TLS: trusts the CA that signed its certificate, and nothing else.
    tls: Option<tokio_rustls::TlsConnector>,
}

/// Seconds from spawn until a server logged its address and until `/readyz` answered 200.
pub struct Ready {
    pub listening_secs: f64,
    pub ready_secs: f64,
}

/// Lines a process logged at WARN and at ERROR, and the first few of them.
#[derive(Debug, Default)]
pub struct LogLevels {
    pub warnings: u64,
    pub errors: u64,
    pub samples: Vec<String>,
}

/// An HTTP answer: the status code, and the whole text (status line, headers and body).
pub struct Answer {
    pub status: u16,
    pub text: String,
}

impl Answer {
    pub fn body(&self) -> &str {
        self.text.split_once("\r\n\r\n").map_or("", |(_, body)| body)
    }
}

impl Process {
    /// Starts `program args...` (a `keyward` binary), with `KEYWARD_BENCH_LOG` (`info`) as its
    /// `RUST_LOG` and its output in `log`. Its name is its subcommand.
    pub fn keyward(program: &Path, args: &[String], log: &Path) -> Result<Self> {
        let name = args.first().cloned().unwrap_or_else(|| "keyward".into());
        let mut command = Command::new(program);
        command.args(args).env("RUST_LOG", std::env::var("KEYWARD_BENCH_LOG").unwrap_or_else(|_| "info".into()));
        Self::spawn(&name, command, log, false)
    }

    /// Spawns `command` with stdin closed, stderr in `log` (a fresh file) and stdout too, or
    /// piped (see [`Process::take_stdout`]); plain text logs; killed when dropped.
    pub fn spawn(name: &str, mut command: Command, log: &Path, pipe_stdout: bool) -> Result<Self> {
        let file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let stdout = if pipe_stdout { Stdio::piped() } else { file.try_clone()?.into() };
        let started = Instant::now();
        let child = command
            // Plain text logs, which the bench reads.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("start {name}: {e}"))?;
        let pid = child.id().ok_or_else(|| format!("{name} exited at once"))?;
        Ok(Self {
            name: name.to_string(),
            child,
            pid,
            log: log.to_path_buf(),
            started,
            addr: OnceLock::new(),
            tls: None,
        })
    }

    /// Speaks TLS to it, trusting only the CA in `ca`.
    pub fn with_tls(mut self, ca: &Path) -> Result<Self> {
        self.tls = Some(tls_connector(ca)?);
        Ok(self)
    }

    /// Its stdout, when the command piped it.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// Records where it listens, for a server that says so elsewhere than in its log.
    pub fn set_addr(&self, addr: SocketAddr) {
        let _ = self.addr.set(addr);
    }

    /// Where it listens: as set, or as its log names it.
    pub fn addr(&self) -> Option<SocketAddr> {
        if let Some(addr) = self.addr.get() {
            return Some(*addr);
        }
        let bound = self
            .log_text()
            .lines()
            .find(|l| l.contains(LISTEN_LINE))
            .and_then(|l| l.split("addr=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())?;
        Some(*self.addr.get_or_init(|| bound))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls every 10 ms, first for its address, then until `/readyz` answers 200.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<Ready> {
        let mut listening = None;
        loop {
            if listening.is_none() && self.addr().is_some() {
                listening = Some(self.started.elapsed().as_secs_f64());
            }
            if let Some(listening_secs) = listening
                && matches!(self.get("/readyz", None).await, Ok(Answer { status: 200, .. }))
            {
                return Ok(Ready { listening_secs, ready_secs: self.started.elapsed().as_secs_f64() });
            }
            if let Some(status) = self.child.try_wait()? {
                return Err(self.explain(format!("{} exited ({status}) before it was ready", self.name).into()));
            }
            if self.started.elapsed() >= timeout {
                return Err(self.explain(format!("{} was not ready within {timeout:?}", self.name).into()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A GET on its address (over TLS when it speaks TLS), with a bearer token when given;
    /// the connection closed after the answer.
    pub async fn get(&self, path: &str, bearer: Option<&str>) -> Result<Answer> {
        let addr = self.addr().ok_or_else(|| format!("{} has not said where it listens", self.name))?;
        let authorization = bearer.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Connection: close\r\n\r\n");
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            match &self.tls {
                Some(tls) => exchange(tls.connect(ServerName::IpAddress(addr.ip().into()), tcp).await?, &request).await,
                None => exchange(tcp, &request).await,
            }
        };
        let bytes = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| format!("GET {scheme}://{addr}{path}: no answer within 10 s"))?
            .map_err(|e| format!("GET {scheme}://{addr}{path}: {e}"))?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("GET {scheme}://{addr}{path}: no status line in {:?}", text.lines().next()))?;
        Ok(Answer { status, text })
    }

    /// Its `/metrics` text.
    pub async fn metrics(&self) -> Result<String> {
        match self.get("/metrics", None).await {
            Ok(answer) if answer.status == 200 => Ok(answer.body().to_string()),
            Ok(answer) => Err(self.explain(format!("{}'s /metrics answered {}", self.name, answer.status).into())),
            Err(error) => Err(self.explain(format!("{}'s /metrics: {error}", self.name).into())),
        }
    }

    /// One counter's series from its `/metrics`: labels -> value.
    pub async fn counter(&self, name: &str) -> Result<BTreeMap<Labels, u64>> {
        Ok(metrics::counter(&self.metrics().await?, name))
    }

    /// A controller's `keyward_reconciles_total`, every series added up.
    pub async fn reconciles(&self) -> Result<u64> {
        Ok(self.counter("keyward_reconciles_total").await?.values().sum())
    }

    /// A controller's own count of its writes, `keyward_api_writes_total`: `resource verb` ->
    /// writes; `None` (and said) when it cannot be read.
    pub async fn api_writes(&self) -> Option<BTreeMap<String, u64>> {
        match self.counter("keyward_api_writes_total").await {
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
                eprintln!("cannot read the {}'s keyward_api_writes_total: {error}", self.name);
                None
            }
        }
    }

    pub fn check_alive(&self) -> Result<()> {
        match std::fs::metadata(format!("/proc/{}", self.pid)) {
            Ok(_) => Ok(()),
            Err(_) => Err(self.explain(format!("{} died", self.name).into())),
        }
    }

    /// Peak resident set size (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> Result<f64> {
        memory_mib(self.pid, "VmHWM")
    }

    /// Resident set size now (VmRSS), in MiB: beside the peak, it tells memory a process keeps
    /// from memory it needed only for a while.
    pub fn rss_mib(&self) -> Result<f64> {
        memory_mib(self.pid, "VmRSS")
    }

    /// CPU time (user and system) it has used, in seconds.
    pub fn cpu_secs(&self) -> Result<f64> {
        cpu_secs(self.pid).ok_or_else(|| format!("cannot read /proc/{}/stat ({})", self.pid, self.name).into())
    }

    /// Lines logged at WARN and at ERROR, and the first five. The kube client's warning that
    /// the kubeconfig skips TLS verification (as the local control plane's does) is left out:
    /// it says nothing about the process.
    pub fn log_levels(&self) -> LogLevels {
        let text = self.log_text();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .filter(|l| !l.contains("Server cert bypassed"))
            .collect();
        let errors = lines.iter().filter(|l| l.contains(" ERROR ")).count() as u64;
        let samples = lines.iter().take(5).map(|l| l.to_string()).collect();
        LogLevels { warnings: lines.len() as u64 - errors, errors, samples }
    }

    /// Adds its last log lines to an error, to say what it was doing.
    pub fn explain(&self, error: Error) -> Error {
        let text = self.log_text();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("{error}\nlast {} log lines ({}):\n{}", self.name, self.log.display(), tail.join("\n")).into()
    }

    /// SIGTERM, then SIGKILL if it has not exited within 15 s.
    pub async fn stop(mut self) {
        let signalled = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        if !signalled || tokio::time::timeout(STOP_GRACE, self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

/// Writes `request`, reads to the end of the connection.
async fn exchange(mut stream: impl AsyncRead + AsyncWrite + Unpin, request: &str) -> std::io::Result<Vec<u8>> {
    stream.write_all(request.as_bytes()).await?;
    let mut bytes = Vec::new();
    match stream.read_to_end(&mut bytes).await {
        Ok(_) => Ok(bytes),
        // A TLS close without close_notify, after the whole answer.
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof && !bytes.is_empty() => Ok(bytes),
        Err(error) => Err(error),
    }
}

/// A TLS client that trusts only the CA in `ca`.
pub fn tls_connector(ca: &Path) -> Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        roots.add(cert.map_err(|e| format!("{}: {e}", ca.display()))?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// CPU seconds (user + system) the process `pid` has used, from `/proc/<pid>/stat`; `None`
/// when it is gone.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    stat_cpu_secs(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// CPU seconds in the text of a `/proc/.../stat` file (of a process or of one thread).
pub fn stat_cpu_secs(stat: &str) -> Option<f64> {
    // The command name, in parentheses, may hold spaces: count the fields after it. utime and
    // stime are fields 14 and 15 of the line; the state, field 3, comes first after the name.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // In USER_HZ, which Linux fixes at 100 for what it reports to user space.
    Some(ticks as f64 / 100.0)
}

/// VmRSS, VmHWM... of a process, in MiB.
pub fn memory_mib(pid: u32, field: &str) -> Result<f64> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("read /proc/{pid}/status: {e}"))?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(kib as f64 / 1024.0)
}

/// The pids of the local control plane's kube-apiserver and etcd, from the `pids` file that
/// `scripts/control-plane.sh` keeps beside the kubeconfig (each checked against
/// `/proc/<pid>/comm`); empty for another API server.
pub fn control_plane_pids(kubeconfig: &Path) -> BTreeMap<String, u32> {
    let Some(text) = kubeconfig.parent().and_then(|dir| std::fs::read_to_string(dir.join("pids")).ok()) else {
        return BTreeMap::new();
    };
    text.lines()
        .filter_map(|line| {
            let (name, pid) = line.split_once(' ')?;
            let pid: u32 = pid.trim().parse().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (["kube-apiserver", "etcd"].contains(&name) && comm.trim() == name).then(|| (name.to_string(), pid))
        })
        .collect()
}
