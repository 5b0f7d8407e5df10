//! The README's first command, as a newcomer runs it: `make run` in a fresh clone with no kube
//! context answering. It must start the local control plane, the controller and the verifier;
//! the first example must get a token the verifier accepts; and Ctrl-C, then `make stop`, must
//! stop everything, as the README says.
//!
//! The clone builds into a target directory of its own (a debug build, `KEYWARD_PROFILE=debug`,
//! to keep `make test` short): sharing the suite's would overwrite the binaries the other tests
//! run with the clone's.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use support::command::CommandLine;
use support::wait::wait_for_every;
use support::{DEADLINE, wait_for};
use tokio::process::Command;

/// The first run builds the crate from the clone and starts a control plane.
const FIRST_RUN: Duration = Duration::from_secs(900);

/// `N` different free ports below the kernel's ephemeral range (each held until all are
/// chosen). The control plane that `make run` starts takes its own ports from that range (port
/// 0) after these are chosen, so a port chosen that way could be handed to etcd before Keyward
/// binds it: CI saw the webhook refused its address for that.
fn free_ports<const N: usize>() -> [u16; N] {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let low = range.split_whitespace().next().and_then(|n| n.parse::<u16>().ok()).unwrap_or(32768);
    let below = 10_000..low.max(10_001);
    let held: Vec<std::net::TcpListener> = (0..10_000)
        .filter_map(|_| std::net::TcpListener::bind(("127.0.0.1", rand::random_range(below.clone()))).ok())
        .take(N)
        .collect();
    std::array::from_fn(|i| {
        held.get(i).expect("free ports below the ephemeral range").local_addr().expect("address").port()
    })
}

/// Runs a command to completion in `dir`; fails the test with its output on error.
async fn run(dir: &Path, program: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `GET path` from a loopback port: the status, or 0 when nothing answers (refused, reset).
async fn status_of(port: u16, path: &str, headers: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = format!("127.0.0.1:{port}");
    let Ok(mut stream) = tokio::net::TcpStream::connect(&addr).await else { return 0 };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return 0;
    }
    let mut answer = Vec::new();
    match tokio::time::timeout(support::DEADLINE, stream.read_to_end(&mut answer)).await {
        Ok(Ok(_)) => String::from_utf8_lossy(&answer).split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0),
        _ => 0,
    }
}

/// Stops whatever the test started if it fails half-way: the process group of `make run`, and
/// the clone's control plane.
struct Cleanup {
    clone: PathBuf,
    group: Option<u32>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(group) = self.group {
            let _ = std::process::Command::new("kill").args(["-s", "KILL", "--", &format!("-{group}")]).status();
        }
        let _ = std::process::Command::new(self.clone.join("scripts/control-plane.sh"))
            .arg("stop")
            .current_dir(&self.clone)
            .stdin(Stdio::null())
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_run_in_a_fresh_clone_without_a_context_serves_the_first_example_and_stops_as_the_readme_says() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir().expect("temp dir");
    let clone = work.path().join("keyward");
    let clone_arg = clone.to_str().expect("UTF-8 path");
    run(&repo, "git", &["clone", "--quiet", "--no-hardlinks", repo.to_str().expect("UTF-8 path"), clone_arg], &[])
        .await;
    let mut cleanup = Cleanup { clone: clone.clone(), group: None };
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| repo.join("target"));
    let target = target.join("make-run-test");
    let [controller_port, verifier_port, webhook_port] = free_ports();
    let no_context = work.path().join("no-kubeconfig");

    let log_path = work.path().join("make-run.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let mut make = Command::new("make")
        .arg("run")
        .current_dir(&clone)
        .env("KUBECONFIG", &no_context)
        .env_remove("KEYWARD_CONTROL_PLANE_DIR")
        .env("CARGO_TARGET_DIR", &target)
        .env("KEYWARD_PROFILE", "debug")
        .env("KEYWARD_CONTROLLER_LISTEN", format!("127.0.0.1:{controller_port}"))
        .env("KEYWARD_VERIFIER_LISTEN", format!("127.0.0.1:{verifier_port}"))
        .env("KEYWARD_WEBHOOK_LISTEN", format!("127.0.0.1:{webhook_port}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("start make run");
    cleanup.group = make.id();
    let logs = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // Serving, and done setting up: the help is the last thing make run prints.
    let running = std::cell::RefCell::new(&mut make);
    wait_for_every("make run serving", FIRST_RUN, Duration::from_millis(500), || async {
        if let Ok(Some(exit)) = running.borrow_mut().try_wait() {
            panic!("make run exited ({exit}) before serving:\n{}", logs());
        }
        let serving = status_of(controller_port, "/readyz", "").await == 200
            && status_of(verifier_port, "/readyz", "").await == 200
            && logs().contains("make stop");
        if serving { Ok(()) } else { Err(logs()) }
    })
    .await;
    let printed = logs();
    assert!(printed.contains("no Kubernetes context answers; starting the local control plane"), "{printed}");
    // The help is printed for the reader's shell, not run by the script's.
    assert!(printed.contains("TOKEN=$(kubectl get secret ci-deploy-apikey"), "{printed}");
    assert!(printed.contains("make stop"), "{printed}");

    // The README's next steps, in the clone: its control plane's kubeconfig, the first example.
    let env_lines = run(&clone, "scripts/control-plane.sh", &["env"], &[]).await;
    let kubeconfig = env_lines
        .lines()
        .find_map(|line| line.strip_prefix("export KUBECONFIG="))
        .expect("control-plane.sh env names the kubeconfig")
        .to_string();
    let kubectl_env = [("KUBECONFIG", kubeconfig.as_str())];
    // The webhook is in the path: a bad spec is refused at apply, naming the field.
    let bad = "apiVersion: keyward.io/v1alpha1\nkind: ApiKey\nmetadata: {name: bad}\nspec: {expiresAfter: 3x}\n";
    let refused =
        CommandLine::new("kubectl").args(&["apply", "-f", "-"]).env("KUBECONFIG", &kubeconfig).stdin(bad).run().await;
    let said = &refused.stderr;
    assert!(!refused.success() && said.contains("spec.expiresAfter: invalid value \"3x\""), "{said}\n{}", logs());
    run(&clone, "kubectl", &["apply", "-f", "examples/apikey-basic.yaml"], &kubectl_env).await;
    let phase = ["get", "apikey", "ci-deploy", "-o", "jsonpath={.status.phase}"];
    wait_for("ci-deploy Active", DEADLINE, || async {
        let phase = run(&clone, "kubectl", &phase, &kubectl_env).await;
        if phase == "Active" { Ok(()) } else { Err(format!("phase {phase:?}; the log:\n{}", logs())) }
    })
    .await;
    let data =
        run(&clone, "kubectl", &["get", "secret", "ci-deploy-apikey", "-o", "jsonpath={.data.token}"], &kubectl_env)
            .await;
    let bytes: k8s_openapi::ByteString = serde_json::from_value(serde_json::json!(data)).expect("base64");
    let token = String::from_utf8(bytes.0).expect("a text token");
    let bearer = format!("Authorization: Bearer {token}\r\n");
    wait_for("the verifier accepting the example's token", DEADLINE, || async {
        let status = status_of(verifier_port, "/v1/auth", &bearer).await;
        if status == 200 { Ok(()) } else { Err(format!("{status}; the log:\n{}", logs())) }
    })
    .await;
    // The exchange the help prints: the controller's signing keys, the verifier's /v1/token,
    // and the access token accepted where the API token was.
    let plugin = target.join("debug").join("kubectl-apikey");
    let issuer = format!("http://127.0.0.1:{verifier_port}");
    let access = wait_for("an access token for the example's token", DEADLINE, || async {
        let out = CommandLine::new(&plugin).args(&["exchange", "--issuer", &issuer]).stdin(&token).run().await;
        let access = out.stdout.trim().to_string();
        if out.success() && access.split('.').count() == 3 {
            Ok(access)
        } else {
            Err(format!("{out}; the log:\n{}", logs()))
        }
    })
    .await;
    let status = status_of(verifier_port, "/v1/auth", &format!("Authorization: Bearer {access}\r\n")).await;
    assert_eq!(status, 200, "the access token at /v1/auth; the log:\n{}", logs());

    // Ctrl-C: the terminal sends SIGINT to the whole foreground process group.
    let group = make.id().expect("make's PID");
    run(&clone, "kill", &["-s", "INT", "--", &format!("-{group}")], &[]).await;
    let exited = tokio::time::timeout(support::DEADLINE, make.wait()).await;
    assert!(exited.is_ok(), "make run still running {:?} after Ctrl-C:\n{}", support::DEADLINE, logs());
    cleanup.group = None;
    assert_eq!(status_of(controller_port, "/readyz", "").await, 0, "the controller outlived make run");
    assert_eq!(status_of(verifier_port, "/readyz", "").await, 0, "the verifier outlived make run");
    let registered =
        run(&clone, "kubectl", &["get", "validatingwebhookconfigurations", "-o", "name"], &kubectl_env).await;
    assert!(!registered.contains("keyward-make-run"), "the webhook's registration outlived it: {registered}");

    run(&clone, "make", &["stop"], &[]).await;
    let stopped = std::process::Command::new(clone.join("scripts/control-plane.sh"))
        .arg("status")
        .current_dir(&clone)
        .stdin(Stdio::null())
        .output()
        .expect("control-plane.sh status");
    assert!(!stopped.status.success(), "the local control plane still answers after make stop");
}
