//! The API servers the tests run against and clients of them: the shared control plane named by
//! `KUBECONFIG` (`make test` starts one), its unprivileged users, a bare one without the CRDs,
//! and control planes of a test's own that it may stop and start.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::await_condition;
use kube::{Client, ResourceExt};
use tokio::process::Command;

use super::DEADLINE;
use super::process::Operator;

/// A client for the API server the tests run against. Fails loudly when there is none.
pub async fn client() -> Client {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "these tests need a real API server: run them with `make test`, which starts one"
    );
    Client::try_default().await.expect("a client from KUBECONFIG")
}

/// Installs the CRDs by server-side apply (idempotent; every test may call it).
pub async fn install_crds(client: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in keyward::crd::all() {
        let name = crd.name_any();
        crds.patch(&name, &PatchParams::apply("keyward-tests").force(), &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|e| panic!("apply the CRD {name}: {e}"));
        tokio::time::timeout(
            DEADLINE,
            await_condition(crds.clone(), &name, kube::runtime::conditions::is_crd_established()),
        )
        .await
        .expect("CRD established in time")
        .expect("watch the CRD");
    }
}

/// The directory of the control plane the tests run against: `admin.kubeconfig` (the
/// `KUBECONFIG`) and `user-1.kubeconfig`..`user-3.kubeconfig` for users without any RBAC binding.
pub fn control_plane_dir() -> PathBuf {
    let kubeconfig = PathBuf::from(std::env::var_os("KUBECONFIG").expect("KUBECONFIG is set"));
    kubeconfig.parent().expect("KUBECONFIG names a file in a directory").to_path_buf()
}

/// The kubeconfig of the unprivileged user `keyward-user-<n>` (n = 1..=3).
pub fn user_kubeconfig(n: u8) -> PathBuf {
    control_plane_dir().join(format!("user-{n}.kubeconfig"))
}

/// A second API server with no Keyward CRDs (`control-plane.sh bare`, started once and shared);
/// returns the path of its kubeconfig.
pub async fn bare_kubeconfig() -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/control-plane.sh");
    let output =
        Command::new(script).arg("bare").arg(control_plane_dir()).stdin(Stdio::null()).kill_on_drop(true).output();
    // The script waits up to 180 s for another caller's lock, then up to 90 s for readiness.
    let output = tokio::time::timeout(Duration::from_secs(300), output)
        .await
        .expect("control-plane.sh bare finished in time")
        .expect("run control-plane.sh bare");
    assert!(
        output.status.success(),
        "control-plane.sh bare failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    assert!(path.is_file(), "control-plane.sh bare printed {path:?}, which is not a file");
    path
}

/// A control plane of a test's own, in a temporary directory, for tests that stop and start its
/// API server: the shared one must stay up for every other test.
pub struct OwnControlPlane {
    pub dir: tempfile::TempDir,
}

fn control_plane_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/control-plane.sh")
}

/// Runs `control-plane.sh ARGS` to completion and returns its stdout; fails the test on error.
fn control_plane(args: &[&str]) -> String {
    let out = std::process::Command::new(control_plane_script())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run control-plane.sh");
    assert!(out.status.success(), "control-plane.sh {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl OwnControlPlane {
    /// Starts etcd, an API server and a controller-manager, and installs the CRDs.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_str().expect("UTF-8 path").to_string();
        tokio::task::spawn_blocking(move || control_plane(&["start", &path])).await.expect("start task");
        let plane = Self { dir };
        install_crds(&plane.client().await).await;
        plane
    }

    pub fn kubeconfig(&self) -> String {
        self.dir.path().join("admin.kubeconfig").to_str().expect("UTF-8 path").to_string()
    }

    /// A client of this control plane's API server.
    pub async fn client(&self) -> Client {
        client_of(&self.kubeconfig()).await
    }

    fn path(&self) -> String {
        self.dir.path().to_str().expect("UTF-8 path").to_string()
    }

    /// SIGKILLs the API server.
    pub async fn kill_apiserver(&self) {
        let path = self.path();
        tokio::task::spawn_blocking(move || control_plane(&["apiserver-kill", &path])).await.expect("kill task");
    }

    /// Starts the API server again; returns when it answers `/readyz`.
    pub async fn start_apiserver(&self) {
        let path = self.path();
        tokio::task::spawn_blocking(move || control_plane(&["apiserver-start", &path])).await.expect("start task");
    }

    /// Another API server on the same etcd and data, to change objects while the first is down;
    /// dropped with [`OwnControlPlane::stop_twin`].
    pub async fn twin(&self) -> Client {
        let path = self.path();
        let kubeconfig = tokio::task::spawn_blocking(move || control_plane(&["twin", &path])).await.expect("twin task");
        client_of(&kubeconfig).await
    }

    pub async fn stop_twin(&self) {
        let path = self.path();
        tokio::task::spawn_blocking(move || control_plane(&["twin-stop", &path])).await.expect("twin-stop task");
    }

    /// A keyward process (`controller` or `verifier`) of this control plane, in `namespace`.
    pub fn operator(&self, subcommand: &'static str, namespace: &str, extra: &[&str]) -> Operator {
        Operator::run(subcommand, namespace, extra, &[("KUBECONFIG", &self.kubeconfig())])
    }
}

impl Drop for OwnControlPlane {
    fn drop(&mut self) {
        let path = self.path();
        let _ = std::process::Command::new(control_plane_script()).args(["stop", &path]).stdin(Stdio::null()).output();
    }
}

/// A client from a kubeconfig file.
pub async fn client_of(kubeconfig: &str) -> Client {
    let config = kube::config::Kubeconfig::read_from(kubeconfig).expect("read the kubeconfig");
    let options = kube::config::KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(config, &options).await.expect("a config from the kubeconfig");
    Client::try_from(config).expect("a client")
}
