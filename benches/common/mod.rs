//! What both benches need: settings from the environment, medians, the output file, the CRDs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};
use serde::Serialize;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A number from the environment variable `name`, else `default`.
pub fn env_number<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(text) => text.trim().parse().map_err(|_| format!("{name}={text:?} is not a number").into()),
        Err(_) => Ok(default),
    }
}

/// The median, `None` for no values.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        len if len % 2 == 1 => Some(sorted[mid]),
        _ => Some((sorted[mid - 1] + sorted[mid]) / 2.0),
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
