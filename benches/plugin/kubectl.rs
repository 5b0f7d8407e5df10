//! `kubectl-apikey` as the bench runs it: a child process timed from spawn to exit (or under
//! GNU time for its peak RSS), and the checks of what it printed.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::{GNU_TIME, PROBE, PROCESS_LIMIT};
use crate::common::{Error, Result};

/// `kubectl-apikey -n <namespace> ...`, run as a child process with the bench's KUBECONFIG.
pub struct Plugin {
    pub path: PathBuf,
    pub namespace: String,
}

/// How one plugin process ended. `stdout` may hold a token: it is checked, never shown.
pub struct Exited {
    /// Wall time from spawn to exit.
    pub ms: f64,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Exited {
    /// A failed run as an error: the exit status and the end of stderr (which never holds a
    /// token; stdout might, and is left out).
    pub fn failure(&self, what: &str) -> Error {
        let lines: Vec<&str> = self.stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join("\n  ");
        format!("kubectl-apikey {what}: {} after {:.0} ms; stderr:\n  {tail}", self.status, self.ms).into()
    }
}

impl Plugin {
    pub fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command.env("NO_COLOR", "1");
        command
    }

    pub async fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<Exited> {
        let mut command = self.command(&self.path);
        command.arg("-n").arg(&self.namespace).args(args);
        exec(command, stdin, args).await
    }

    /// The same command under GNU time; returns how it ended and its peak RSS in MiB.
    pub async fn peak_rss(&self, args: &[&str], stdin: Option<&str>, out: &Path) -> Result<(Exited, f64)> {
        let _ = std::fs::remove_file(out);
        let mut command = self.command(Path::new(GNU_TIME));
        command.args(["-f", "%M", "-o"]).arg(out).arg(&self.path).arg("-n").arg(&self.namespace).args(args);
        let exited = exec(command, stdin, args).await?;
        let text = std::fs::read_to_string(out).map_err(|e| format!("read GNU time's {}: {e}", out.display()))?;
        // After "Command exited with non-zero status N", when it did.
        let kib: f64 = text
            .lines()
            .last()
            .and_then(|line| line.trim().parse().ok())
            .ok_or_else(|| format!("GNU time wrote no peak RSS for {args:?}: {text:?}"))?;
        Ok((exited, kib / 1024.0))
    }
}

/// Runs `command` to its end, `stdin` written to it, stdout and stderr collected.
async fn exec(mut command: Command, stdin: Option<&str>, args: &[&str]) -> Result<Exited> {
    command
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = command.spawn().map_err(|e| format!("start kubectl-apikey {args:?}: {e}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A process that fails before reading says so by its exit status.
        let _ = pipe.write_all(text.as_bytes()).await;
    }
    let output = tokio::time::timeout(PROCESS_LIMIT, child.wait_with_output())
        .await
        .map_err(|_| format!("kubectl-apikey {args:?} did not exit within {PROCESS_LIMIT:?}"))?
        .map_err(|e| format!("wait for kubectl-apikey {args:?}: {e}"))?;
    Ok(Exited {
        ms: started.elapsed().as_secs_f64() * 1000.0,
        status: output.status,
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// `list`: a header and a row per key.
pub fn check_table(run: &Exited, n: usize) -> Result<()> {
    if !run.status.success() {
        return Err(run.failure("list"));
    }
    let rows = String::from_utf8_lossy(&run.stdout).lines().count();
    if rows != n + 1 {
        return Err(format!("list printed {rows} lines, not a header and {n} rows").into());
    }
    Ok(())
}

/// `list -o json`: a List of every key.
pub fn check_json(run: &Exited, n: usize) -> Result<()> {
    if !run.status.success() {
        return Err(run.failure("list -o json"));
    }
    let document: serde_json::Value =
        serde_json::from_slice(&run.stdout).map_err(|e| format!("list -o json printed no JSON: {e}"))?;
    let items = document.get("items").and_then(|items| items.as_array()).map_or(0, Vec::len);
    if items != n {
        return Err(format!("list -o json listed {items} items, not {n}").into());
    }
    Ok(())
}

/// `verify`: the probe's token is valid.
pub fn check_verify(run: &Exited) -> Result<()> {
    if !run.status.success() {
        return Err(run.failure("verify"));
    }
    let text = String::from_utf8_lossy(&run.stdout);
    if !text.starts_with("VALID:") || !text.contains(PROBE) {
        return Err(format!("verify did not find {PROBE}'s token valid: {}", text.trim()).into());
    }
    Ok(())
}

/// Installs the Debian package `time` when `/usr/bin/time` is not GNU time; returns its
/// version line.
pub async fn ensure_gnu_time() -> Result<String> {
    if let Some(version) = gnu_time_version().await {
        return Ok(version);
    }
    crate::common::apt_install("time").await?;
    gnu_time_version()
        .await
        .ok_or_else(|| format!("{GNU_TIME} is still not GNU time after apt-get install time").into())
}

async fn gnu_time_version() -> Option<String> {
    let output = Command::new(GNU_TIME).arg("--version").output().await.ok()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    let line = text.lines().next()?.trim();
    line.contains("GNU").then(|| line.to_string())
}
