//! `wrk`, the load generator of the verifier bench: installed when missing, scripted to present
//! many tokens, run and read.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Serialize;
use tokio::process::Command;

use super::AUTH_PATH;
use crate::common::Result;
use crate::common::process::cpu_secs;

/// Installs the Debian package `wrk` when `wrk` is not on the PATH; returns its version line.
pub async fn ensure_wrk() -> Result<String> {
    if let Some(version) = wrk_version().await {
        return Ok(version);
    }
    crate::common::apt_install("wrk").await?;
    wrk_version().await.ok_or_else(|| "wrk is still not on the PATH after apt-get install wrk".into())
}

async fn wrk_version() -> Option<String> {
    // `wrk -v` prints its version and usage, and exits 1.
    let output = Command::new("wrk").arg("-v").output().await.ok()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    Some(text.lines().next().unwrap_or("wrk").trim().to_string())
}

/// A `wrk` script whose requests take turns presenting `tokens`, built once per thread.
// The usage bench's requests name applications too: it writes its scripts with `write_turns`.
#[allow(dead_code)]
pub fn write_script(dir: &Path, name: &str, tokens: &[String]) -> Result<PathBuf> {
    let request = format!(
        r#"wrk.format("GET", "{AUTH_PATH}", {{ ["Host"] = wrk.headers["Host"], ["Authorization"] = "Bearer " .. value }})"#
    );
    write_turns(dir, name, &format!("GET {AUTH_PATH} with the next of {} tokens", tokens.len()), tokens, &request)
}

/// A `wrk` script whose requests take turns over `values`: `request` is the Lua expression
/// that makes one from `value` (and its place in `values`, `i`, from 1), built once per thread
/// in `init`.
pub fn write_turns(dir: &Path, name: &str, what: &str, values: &[String], request: &str) -> Result<PathBuf> {
    let list: Vec<String> = values.iter().map(|v| format!("  \"{v}\",")).collect();
    let script = format!(
        r#"-- {name}: {what}.
local values = {{
{list}
}}
local requests = {{}}
local turn = 0

function init(args)
  for i, value in ipairs(values) do
    requests[i] = {request}
  end
end

function request()
  turn = turn % #requests + 1
  return requests[turn]
end
"#,
        list = list.join("\n"),
    );
    let path = dir.join(format!("{name}.lua"));
    std::fs::write(&path, script)?;
    Ok(path)
}

/// What one `wrk --latency` run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WrkRun {
    pub rps: f64,
    pub p50_ms: f64,
    pub p75_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub requests: u64,
    /// connect, read, write and timeout errors together.
    pub socket_errors: u64,
    /// CPU time (user and system) of the server process during the run, per request.
    pub server_cpu_us_per_request: Option<f64>,
}

/// Runs `wrk` against `addr`, served by the process `pid`; fails when any answer was not 2xx
/// or 3xx.
pub async fn run(
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
    let cpu = cpu_secs(pid).zip(cpu_before).map(|(after, before)| after - before);
    finish(&output, cpu)
}

/// What a `wrk --latency` run that has ended measured, given its output and the server's CPU
/// seconds during it; fails when any answer was not 2xx or 3xx.
pub fn finish(output: &std::process::Output, cpu: Option<f64>) -> Result<WrkRun> {
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!("wrk failed ({}): {text}{}", output.status, String::from_utf8_lossy(&output.stderr)).into());
    }
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
