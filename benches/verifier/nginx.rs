//! The floor a user compares the verifier against: the proxy they already run. NGINX with one
//! worker answering `return 200;` on `/v1/auth`, loaded by the same `wrk` as the verifier.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::common::Result;
use crate::common::process::Process;

/// One process that is the one worker (`master_process off`: no worker outlives the bench,
/// and the pid measured is the one serving). No access log: the verifier logs no request
/// either. Keep-alive connections are never closed by NGINX, as the verifier never closes them.
/// `@DIR@` and `@ADDR@` are filled in.
const NGINX_CONF: &str = r#"
master_process off;
worker_processes 1;
pid @DIR@/nginx.pid;
error_log @DIR@/error.log warn;
events { worker_connections 1024; }

http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 75s;
    client_body_temp_path @DIR@/client_body;
    proxy_temp_path @DIR@/proxy;
    fastcgi_temp_path @DIR@/fastcgi;
    uwsgi_temp_path @DIR@/uwsgi;
    scgi_temp_path @DIR@/scgi;

    server {
        listen @ADDR@;
        location /v1/auth { return 200; }
    }
}
"#;

/// The NGINX binary: `/usr/sbin/nginx` or on the PATH, installed with apt-get (the Debian
/// package `nginx`) when missing.
pub async fn ensure_nginx() -> Result<PathBuf> {
    if let Some(binary) = nginx_binary() {
        return Ok(binary);
    }
    crate::common::apt_install("nginx").await?;
    nginx_binary().ok_or_else(|| "nginx is still missing after apt-get install nginx".into())
}

fn nginx_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join("nginx")).collect::<Vec<_>>())
        .unwrap_or_default();
    [PathBuf::from("/usr/sbin/nginx")].into_iter().chain(on_path).find(|candidate| candidate.is_file())
}

/// `nginx -v`'s line, such as `nginx version: nginx/1.26.3`.
pub async fn nginx_version(binary: &Path) -> Option<String> {
    let output = Command::new(binary).arg("-v").output().await.ok()?;
    let text = String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout);
    Some(text.lines().next()?.trim().to_string())
}

/// Starts NGINX with its files in `dir`, on a free loopback port; returns it once it accepts
/// connections. Its output goes to `log`.
pub async fn start(binary: &Path, dir: &Path, log: &Path) -> Result<(Process, SocketAddr)> {
    // A free port, found by binding port 0 and letting go of it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let conf = NGINX_CONF.replace("@DIR@", &dir.display().to_string()).replace("@ADDR@", &addr.to_string());
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let mut command = Command::new(binary);
    command
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf_path)
        // The log for messages before the configuration is read (else /var/log/nginx).
        .arg("-e")
        .arg(dir.join("error.log"))
        .args(["-g", "daemon off;"]);
    let process = Process::spawn("nginx", command, log, false)?;
    process.set_addr(addr);
    let started = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        process.check_alive().map_err(|e| format!("{e}; its error log: {}", dir.join("error.log").display()))?;
        if started.elapsed() > Duration::from_secs(10) {
            return Err(format!("nginx did not listen on {addr} within 10 s; log {}", log.display()).into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((process, addr))
}
