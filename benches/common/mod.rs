//! What every bench needs: the shell of its `main`, settings from the environment, the output
//! file, the release binaries, the CRDs and the namespaces; the report (`report`), the
//! processes measured (`process`), Prometheus text (`metrics`) and the statuses a bench writes
//! as the controller would (`status`).
// Each bench uses only part of what is here.
#![allow(dead_code)]

pub mod metrics;
pub mod process;
pub mod report;
pub mod status;

#[allow(unused_imports)]
pub use report::{Outcome, Progress, Table, median, nearest_rank};

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};
use serde::Serialize;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Label on every namespace a bench creates (its value names the bench), to find the
/// leftovers of an interrupted run.
pub const BENCH_LABEL: &str = "keyward.io/bench";
/// Field manager of the benches' own writes.
pub const MANAGER: &str = "keyward-bench";

/// One bench, as [`main`] runs it.
pub trait Bench {
    type Figures: Serialize;
    /// Names the output file `target/bench/<NAME>.json` and the bench's messages.
    const NAME: &'static str;
    /// Measures, filling in the figures.
    fn run(&mut self) -> impl Future<Output = Result<()>>;
    /// Removes what the bench made (best effort), whether the run succeeded or not.
    fn cleanup(&mut self) -> impl Future<Output = ()>;
    /// How the run ended, part of the figures: the main fills in the error and the duration.
    fn outcome(&mut self) -> &mut Outcome;
    fn figures(&self) -> &Self::Figures;
    fn print_table(figures: &Self::Figures);
}

/// The `main` of every bench: set up, run, clean up, print the table and write the figures
/// (also those of a failed run, with its error). Fails when set-up or the run failed.
pub async fn main<B: Bench>(set_up: impl Future<Output = Result<B>>) -> ExitCode {
    let started = Instant::now();
    let mut bench = match set_up.await {
        Ok(bench) => bench,
        Err(error) => {
            eprintln!("{} bench: {error}", B::NAME);
            return ExitCode::FAILURE;
        }
    };
    let outcome = bench.run().await;
    if let Err(error) = &outcome {
        eprintln!("{} bench failed: {error}", B::NAME);
    }
    bench.cleanup().await;
    let ended = bench.outcome();
    ended.error = outcome.as_ref().err().map(ToString::to_string);
    ended.total_secs = Some(started.elapsed().as_secs_f64());
    B::print_table(bench.figures());
    let json = out_dir().join(format!("{}.json", B::NAME));
    match write_json(&json, bench.figures()) {
        Ok(()) => println!("figures written to {}", json.display()),
        Err(error) => eprintln!("cannot write {}: {error}", json.display()),
    }
    if outcome.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// Where the benches write their figures and logs: `target/bench`.
pub fn out_dir() -> PathBuf {
    target_dir().join("bench")
}

/// A release binary of the package, which must have been built.
pub fn release_binary(name: &str) -> Result<PathBuf> {
    let path = target_dir().join("release").join(name);
    if !path.is_file() {
        return Err(format!(
            "{} is missing: this bench runs the release binaries; build them first with \
             `cargo build --release --bins` (`make bench` does)",
            path.display()
        )
        .into());
    }
    Ok(path)
}

/// Five random letters, shared by the names of one run's namespaces.
pub fn random_suffix() -> String {
    (0..5).map(|_| char::from(b'a' + rand::random_range(0..26u8))).collect()
}

/// Whether `KEYWARD_BENCH_KEEP_NAMESPACES` asks to leave the namespaces for inspection.
pub fn keep_namespaces() -> bool {
    std::env::var_os("KEYWARD_BENCH_KEEP_NAMESPACES").is_some()
}

/// Deletes the namespaces `names` without waiting for them to be gone (`make bench` throws the
/// control plane away afterwards), or keeps them when asked to; `progress` hears what happens.
pub async fn delete_namespaces_now(client: &Client, names: &[String], progress: &Progress) {
    if names.is_empty() {
        return;
    }
    if keep_namespaces() {
        progress.say(&format!("keeping {names:?} for inspection; the next run deletes them first"));
        return;
    }
    progress.say(&format!("cleanup: deleting {names:?} (not waiting for them to be gone)"));
    let api: Api<Namespace> = Api::all(client.clone());
    for name in names {
        if let Err(error) = api.delete(name, &DeleteParams::default()).await {
            progress.say(&format!("cannot delete namespace {name}: {error}"));
        }
    }
}

/// Installs the Debian package `package` with apt-get (through sudo unless root), for a tool
/// a bench runs.
pub async fn apt_install(package: &str) -> Result<()> {
    eprintln!("installing the Debian package {package}");
    let root = tokio::process::Command::new("id").arg("-u").output().await?.stdout.starts_with(b"0\n");
    let as_root = |args: &[&str]| {
        let mut command = tokio::process::Command::new(if root { args[0] } else { "sudo" });
        command.args(if root { &args[1..] } else { args }).stdin(Stdio::null()).stdout(Stdio::null());
        command
    };
    for args in [
        &["apt-get", "update", "-qq"][..],
        &["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq", package][..],
    ] {
        let status = as_root(args).status().await.map_err(|e| format!("run {args:?}: {e}"))?;
        if !status.success() {
            return Err(format!("{args:?} failed ({status}); install the Debian package {package} by hand").into());
        }
    }
    Ok(())
}

/// A number from the environment variable `name`, else `default`.
pub fn env_number<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(text) => text.trim().parse().map_err(|_| format!("{name}={text:?} is not a number").into()),
        Err(_) => Ok(default),
    }
}

/// Cargo's target directory: benches run from the package root.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Writes the figures as pretty JSON.
pub fn write_json(path: &Path, figures: &impl Serialize) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(figures)? + "\n")?;
    Ok(())
}

/// Installs the operator's CRDs (the controller waits for every kind it watches) by
/// server-side apply, idempotent, and waits until they are served. Returns the age of the
/// youngest.
pub async fn install_crds(client: &Client, manager: &str) -> Result<Duration> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut youngest = Duration::MAX;
    for crd in keyward::crd::all() {
        let name = crd.name_any();
        crds.patch(&name, &PatchParams::apply(manager).force(), &Patch::Apply(&crd))
            .await
            .map_err(|e| format!("apply the CRD {name}: {e}"))?;
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .map_err(|_| format!("the CRD {name} was not established within 30 s"))??;
        let created = crds
            .get(&name)
            .await?
            .creation_timestamp()
            .map(|t| t.0)
            .ok_or_else(|| format!("the CRD {name} has no creationTimestamp"))?;
        youngest = youngest.min(Timestamp::now().duration_since(created).unsigned_abs());
    }
    Ok(youngest)
}

/// Creates the controller's signing keys in the client's default namespace (where a controller
/// started without `POD_NAMESPACE` keeps them) unless they exist, so that no controller the bench
/// starts writes them: its writes are then only the keys' own.
pub async fn ensure_signing_keys(client: &Client) -> Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), client.default_namespace());
    let key = keyward::signing::StoredKey::generate(Timestamp::now())?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(keyward::signing::DEFAULT_SECRET_NAME.into()),
            labels: Some(
                [(keyward::api::LABEL_MANAGED_BY.to_string(), keyward::api::MANAGED_BY_VALUE.to_string())].into(),
            ),
            ..Default::default()
        },
        type_: Some(keyward::signing::SECRET_TYPE.into()),
        data: Some(keyward::signing::secret_data(&keyward::signing::Stored { keys: vec![key] })),
        ..Default::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(format!("create the signing keys: {error}").into()),
    }
}

/// Creates the namespace `name`, labelled as the bench `bench`'s.
pub async fn create_namespace(client: &Client, name: &str, bench: &str) -> Result<()> {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some([(BENCH_LABEL.into(), bench.into())].into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .map_err(|e| format!("create namespace {name}: {e}"))?;
    Ok(())
}

/// The namespaces an earlier, interrupted run of the bench `bench` left.
pub async fn leftover_namespaces(client: &Client, bench: &str) -> Result<Vec<String>> {
    let selector = format!("{BENCH_LABEL}={bench}");
    let list = Api::<Namespace>::all(client.clone()).list(&ListParams::default().labels(&selector)).await?;
    Ok(list.items.iter().map(ResourceExt::name_any).collect())
}

/// Deletes the namespaces of an earlier, interrupted run of the bench `bench` and waits (15
/// minutes at most) until they are gone; `progress` hears what happens.
pub async fn remove_leftovers(client: &Client, bench: &str, progress: impl Fn(&str)) -> Result<()> {
    let leftovers = leftover_namespaces(client, bench).await?;
    if leftovers.is_empty() {
        return Ok(());
    }
    progress(&format!("removing namespaces left by an earlier run: {leftovers:?}"));
    let api: Api<Namespace> = Api::all(client.clone());
    for name in &leftovers {
        if let Err(error) = api.delete(name, &DeleteParams::default()).await {
            progress(&format!("cannot delete namespace {name}: {error}"));
        }
    }
    let gone = futures::future::join_all(
        leftovers.iter().map(|name| await_condition(api.clone(), name, |ns: Option<&Namespace>| ns.is_none())),
    );
    tokio::time::timeout(Duration::from_secs(900), gone)
        .await
        .map_err(|_| format!("namespaces {leftovers:?} were still terminating after 15 minutes"))?;
    Ok(())
}
