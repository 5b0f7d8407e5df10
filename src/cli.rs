//! The command line: `keyward controller`, `keyward crd`. Every flag can also be set through a
//! `KEYWARD_*` environment variable.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::sync::watch;

use crate::api::validate::ExpiryPolicy;
use crate::controller::{self, Context, Settings};
use crate::error::{Error, Result};
use crate::telemetry::{self, LogFormat, Metrics};
use crate::{crd, duration};

#[derive(Parser, Debug)]
#[command(name = "keyward", version, about = "API keys as Kubernetes custom resources")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller: issue tokens into Secrets, enforce expiry and state.
    Controller(ControllerArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
}

#[derive(clap::Args, Debug)]
pub struct ControllerArgs {
    /// Namespaces to manage, comma-separated; all namespaces when absent.
    #[arg(long, env = "KEYWARD_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Lifetime of keys that set neither expiresAfter nor expiresAt.
    #[arg(long, env = "KEYWARD_DEFAULT_EXPIRY", default_value = "90d", value_parser = parse_duration)]
    pub default_expiry: Duration,
    /// Longest lifetime a key may ask for; longer specs are refused with InvalidSpec.
    #[arg(long, env = "KEYWARD_MAX_EXPIRY", value_parser = parse_duration)]
    pub max_expiry: Option<Duration>,
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, env = "KEYWARD_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Log format.
    #[arg(long, env = "KEYWARD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Reconciles run at once.
    #[arg(long, env = "KEYWARD_CONCURRENCY", default_value_t = 32)]
    pub concurrency: u16,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    duration::parse(text)
}

impl Cli {
    pub async fn run(self) -> Result<()> {
        match self.command {
            Command::Crd => {
                print!("{}", crd::yaml()?);
                Ok(())
            }
            Command::Controller(args) => run_controller(args).await,
        }
    }
}

async fn run_controller(args: ControllerArgs) -> Result<()> {
    telemetry::init_logging(args.log_format);
    if let Some(max) = args.max_expiry
        && args.default_expiry > max
    {
        return Err(Error::Usage(format!(
            "--default-expiry {} is longer than --max-expiry {}",
            duration::format(args.default_expiry),
            duration::format(max)
        )));
    }
    let client = kube::Client::try_default().await.map_err(Error::KubeConfig)?;
    let settings = Settings {
        namespaces: args.namespaces.into_iter().filter(|ns| !ns.is_empty()).collect(),
        expiry: ExpiryPolicy { default: args.default_expiry, max: args.max_expiry },
        concurrency: args.concurrency,
    };
    tracing::info!(namespaces = ?settings.namespaces, default_expiry = %duration::format(settings.expiry.default), "starting controller");
    let metrics = Arc::new(Metrics::default());
    let (ready_tx, ready_rx) = watch::channel(false);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        shutdown_tx.send_replace(true);
    });
    let ctx = Context::new(client, settings, metrics.clone());
    let server = telemetry::serve(args.listen, metrics, ready_rx, shutdown_rx.clone());
    let (served, ()) = tokio::join!(server, controller::run(ctx, ready_tx, shutdown_rx));
    served
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
