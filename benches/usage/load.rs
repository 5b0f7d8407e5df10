//! The usage bench's loads: `wrk` scripts whose every request names an application, and a paced
//! `wrk` run in the background, whose length is the flushes it takes to measure.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::AUTH_PATH;
use super::wrk::{self, WrkRun};
use crate::common::Result;
use crate::common::process::cpu_secs;

/// The applications the requests name: `bench-app-0`, `bench-app-1`...
const APP_PREFIX: &str = "bench-app-";
/// How long a stopped background `wrk` may take to print its figures.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// The application the requests of key number `i` name, of `apps`.
pub fn app_of(i: usize, apps: usize) -> String {
    format!("{APP_PREFIX}{}", i % apps.max(1))
}

/// `GET /v1/auth` taking turns over `tokens`, each naming the application [`app_of`] its place.
pub fn write_app_script(dir: &Path, name: &str, tokens: &[String], apps: usize) -> Result<PathBuf> {
    let apps = apps.max(1);
    // `i` counts from 1 in Lua; `app_of` from 0.
    let request = format!(
        r#"wrk.format("GET", "{AUTH_PATH}", {{ ["Host"] = wrk.headers["Host"], ["Authorization"] = "Bearer " .. value, ["X-Keyward-App"] = "{APP_PREFIX}" .. ((i - 1) % {apps}) }})"#
    );
    let what = format!("GET {AUTH_PATH} with the next of {} tokens, naming one of {apps} applications", tokens.len());
    wrk::write_turns(dir, name, &what, tokens, &request)
}

/// [`write_app_script`], each connection waiting `delay_ms` before each of its requests: a
/// connection makes about `1000 / (delay_ms + latency)` requests a second, whatever the server.
pub fn write_paced_script(dir: &Path, name: &str, tokens: &[String], apps: usize, delay_ms: u64) -> Result<PathBuf> {
    let path = write_app_script(dir, name, tokens, apps)?;
    let mut script = std::fs::OpenOptions::new().append(true).open(&path)?;
    writeln!(script, "\n-- wrk waits this many milliseconds before each request of a connection.")?;
    writeln!(script, "function delay()\n  return {delay_ms}\nend")?;
    Ok(path)
}

/// `GET /v1/auth` presenting `token` every time, naming the next of `apps` in turn.
pub fn write_flood_script(dir: &Path, name: &str, token: &str, apps: &[String]) -> Result<PathBuf> {
    let request = format!(
        r#"wrk.format("GET", "{AUTH_PATH}", {{ ["Host"] = wrk.headers["Host"], ["Authorization"] = "Bearer {token}", ["X-Keyward-App"] = value }})"#
    );
    let what = format!("GET {AUTH_PATH} with one token, naming the next of {} applications", apps.len());
    wrk::write_turns(dir, name, &what, apps, &request)
}

/// `count` application names no one would choose twice: `flood-` and 12 random letters and digits.
pub fn random_apps(count: usize) -> Vec<String> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..count)
        .map(|_| {
            let tail: String = (0..12).map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())])).collect();
            format!("flood-{tail}")
        })
        .collect()
}

/// `wrk` running until stopped: SIGINT makes it stop and print its figures as at the end of a
/// timed run.
pub struct Background {
    child: Child,
    pid: u32,
    /// The server's pid and CPU seconds at the start.
    server: (u32, Option<f64>),
}

impl Background {
    pub fn start(addr: SocketAddr, server_pid: u32, script: &Path, threads: usize, connections: usize) -> Result<Self> {
        let cpu_before = cpu_secs(server_pid);
        let child = Command::new("wrk")
            .arg(format!("-t{threads}"))
            .arg(format!("-c{connections}"))
            // Longer than any run: it is stopped.
            .arg("-d3600s")
            .arg("--latency")
            .arg("-s")
            .arg(script)
            .arg(format!("http://{addr}{AUTH_PATH}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("start wrk: {e}"))?;
        let pid = child.id().ok_or("wrk exited at once")?;
        Ok(Self { child, pid, server: (server_pid, cpu_before) })
    }

    /// Fails when `wrk` has exited by itself.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(format!("the background wrk exited ({status}) before it was stopped").into()),
        }
    }

    /// Stops it and reads what it measured (failing when any answer was not 2xx or 3xx).
    pub async fn stop(self) -> Result<WrkRun> {
        let signalled = Command::new("kill")
            .args(["-INT", &self.pid.to_string()])
            .stdin(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        if !signalled {
            return Err("cannot send SIGINT to the background wrk".into());
        }
        let output = tokio::time::timeout(STOP_GRACE, self.child.wait_with_output())
            .await
            .map_err(|_| format!("wrk did not stop within {STOP_GRACE:?} of SIGINT"))??;
        let (server_pid, cpu_before) = self.server;
        let cpu = cpu_secs(server_pid).zip(cpu_before).map(|(after, before)| after - before);
        wrk::finish(&output, cpu)
    }
}
