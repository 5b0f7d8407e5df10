//! The controller as a process: its health endpoints, and reconciling and keeping the signing
//! keys either at once or, with `--leader-election`, only while holding the leader Lease; both
//! end on `shutdown`.

use std::net::SocketAddr;
use std::sync::Arc;

use kube::Client;
use tokio::sync::watch;

use super::metrics::Metrics;
use super::{Context, Settings, leader};
use crate::error::{Error, Result};
use crate::http;

/// Runs the controller until `shutdown` turns true, serving `/healthz`, `/readyz` and
/// `/metrics` on `listen`; with a `lease`, it reconciles only while holding that Lease.
pub async fn run(
    client: Client,
    settings: Settings,
    listen: SocketAddr,
    lease: Option<&str>,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let metrics = Arc::new(Metrics::default());
    let (ready_tx, ready_rx) = watch::channel(false);
    let ctx = Context::new(client.clone(), settings, metrics.clone());
    let listener = http::bind(listen, "/healthz, /readyz and /metrics").await?;
    let (done_tx, done_rx) = watch::channel(false);
    let work = async {
        let worked = match lease {
            Some(lease) => reconcile_while_leading(client, lease, ctx, ready_tx, shutdown).await,
            None => {
                metrics.set_leader(true);
                work(client, ctx, ready_tx, shutdown).await;
                Ok(())
            }
        };
        // The health endpoints stop with the work, whether it ended by signal or by a lost Lease.
        done_tx.send_replace(true);
        worked
    };
    let server = http::serve(listener, crate::metrics::health_routes(metrics.registry(), ready_rx), done_rx);
    let (served, worked) = tokio::join!(server, work);
    worked.and(served)
}

/// Campaigns for the leader Lease, reconciles while holding it, and lets go of it on shutdown.
/// Losing it ends the process with an error: a fresh start rejoins as a standby, with no
/// reconcile of the old term still running beside the new leader's.
async fn reconcile_while_leading(
    client: Client,
    lease: &str,
    ctx: Arc<Context>,
    ready: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let mut campaign =
        leader::campaign(client.clone(), lease, crate::watch::own_namespace(&client), leader::identity()).await?;
    tracing::info!(identity = %campaign.identity, namespace = %campaign.namespace, lease, "standing by for the leader Lease");
    // A standby is healthy and ready to take over.
    ready.send_replace(true);
    if !campaign.lead(&mut shutdown).await {
        campaign.resign().await;
        return Ok(());
    }
    tracing::info!(identity = %campaign.identity, "holding the leader Lease; reconciling");
    ctx.metrics.set_leader(true);
    let (stop, lost) = campaign.until_lost(shutdown);
    work(client, ctx.clone(), ready, stop).await;
    ctx.metrics.set_leader(false);
    let lost = *lost.borrow();
    campaign.resign().await;
    if lost { Err(Error::LostLeadership) } else { Ok(()) }
}

/// What a leader (or the only controller) does until `stop`: reconcile every kind, and keep the
/// signing keys.
async fn work(client: Client, ctx: Arc<Context>, ready: watch::Sender<bool>, stop: watch::Receiver<bool>) {
    let keeper = crate::signing::keeper::run(
        client.clone(),
        crate::watch::own_namespace(&client),
        ctx.settings.signing.clone(),
        ctx.metrics.clone(),
        stop.clone(),
    );
    tokio::join!(super::run(ctx, ready, stop), keeper);
}
