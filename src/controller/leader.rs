//! Leader election for `keyward controller --leader-election`: the replicas share the Lease
//! `--lease-name` (default `keyward-controller`) in `POD_NAMESPACE`, and only its holder
//! reconciles.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use rand::TryRng;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// The Lease the replicas share when `--lease-name` is not given.
pub const DEFAULT_LEASE_NAME: &str = "keyward-controller";
/// How long a Lease lasts unrenewed: a killed leader is replaced within this time.
pub const LEASE_DURATION_SECS: u64 = 15;
/// The holder renews this long before the Lease would run out.
const LEASE_GRACE_SECS: u64 = 5;

/// A running campaign for the Lease.
pub struct Campaign {
    pub identity: String,
    pub namespace: String,
    leading: watch::Receiver<bool>,
    task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

/// This process's identity: `POD_NAME`, else the host name and a random suffix, so that two
/// processes on one host never share one.
pub fn identity() -> String {
    if let Some(pod) = std::env::var("POD_NAME").ok().filter(|p| !p.is_empty()) {
        return pod;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "keyward".into());
    let mut suffix = [0u8; 4];
    // A failing OS RNG only makes the suffix zero; the host name still tells processes apart
    // across hosts, and the Lease itself is what keeps two holders out.
    let _ = rand::rngs::SysRng.try_fill_bytes(&mut suffix);
    format!("{host}-{}", suffix.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Starts campaigning for the Lease `lease` in `namespace`.
pub async fn campaign(client: Client, lease: &str, namespace: String, identity: String) -> Result<Campaign> {
    let manager = LeaseManagerBuilder::new(client, lease)
        .with_namespace(namespace.clone())
        .with_identity(identity.clone())
        .with_duration(LEASE_DURATION_SECS)
        .with_grace(LEASE_GRACE_SECS)
        .build()
        .await
        .map_err(Error::LeaderElection)?;
    let (leading, task) = manager.watch().await;
    Ok(Campaign { identity, namespace, leading, task })
}

impl Campaign {
    /// Waits until this process holds the Lease; false if `shutdown` came first.
    pub async fn lead(&mut self, shutdown: &mut watch::Receiver<bool>) -> bool {
        tokio::select! {
            held = self.leading.wait_for(|leading| *leading) => held.is_ok(),
            _ = shutdown.wait_for(|stop| *stop) => false,
        }
    }

    /// A flag that turns true when `shutdown` does or when the Lease is lost, whichever is
    /// first; and a receiver that tells, afterwards, whether the Lease was lost.
    pub fn until_lost(&self, mut shutdown: watch::Receiver<bool>) -> (watch::Receiver<bool>, watch::Receiver<bool>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (lost_tx, lost_rx) = watch::channel(false);
        let mut leading = self.leading.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => {}
                _ = leading.wait_for(|leading| !*leading) => {
                    tracing::error!("lost the leader Lease; stopping so as not to write beside the new leader");
                    lost_tx.send_replace(true);
                }
            }
            stop_tx.send_replace(true);
        });
        (stop_rx, lost_rx)
    }

    /// Lets go of the Lease (so that another replica takes over at once) and waits, briefly,
    /// for that to reach the API server.
    pub async fn resign(self) {
        drop(self.leading);
        match tokio::time::timeout(Duration::from_secs(5), self.task).await {
            Ok(Ok(Ok(_))) => tracing::info!("released the leader Lease"),
            Ok(Ok(Err(error))) => tracing::warn!(%error, "cannot release the leader Lease; it will run out"),
            Ok(Err(error)) => tracing::warn!(%error, "the Lease task failed"),
            Err(_) => tracing::warn!("releasing the leader Lease timed out; it will run out"),
        }
    }
}
