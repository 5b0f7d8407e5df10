//! The command line: `keyward controller`, `keyward verifier`, `keyward webhook`, `keyward crd`. Every flag can also
//! be set through a `KEYWARD_*` environment variable.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::sync::watch;

use ipnet::IpNet;

use crate::api::expiry::{DEFAULT_EXPIRY, ExpiryPolicy};
use crate::api::{names, validate};
use crate::controller::{self, Settings, leader};
use crate::error::{Error, Result};
use crate::logging::{self, LogFormat};
use crate::signing::{self, keeper::KeeperSettings, schedule::Schedule};
use crate::{crd, duration, exchange, usage, verifier, webhook};

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
    /// Answer whether a token is good, for gateways (forward auth) and services (JSON).
    Verifier(VerifierArgs),
    /// Serve the admission webhooks for ApiKeys and Credentials: who may grant which scope, spec
    /// checks at `kubectl apply`, and the creator of each key.
    Webhook(WebhookArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
}

#[derive(clap::Args, Debug)]
pub struct ControllerArgs {
    /// Namespaces to manage, comma-separated; all namespaces when absent.
    #[arg(long, env = "KEYWARD_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Lifetime of keys that set neither expiresAfter nor expiresAt [default: 90d, or
    /// --max-expiry when that is shorter].
    #[arg(long, env = "KEYWARD_DEFAULT_EXPIRY", value_parser = parse_duration)]
    pub default_expiry: Option<Duration>,
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
    /// How far ahead the sweeps of the cache wake keys near an expiry or their daily look
    /// (a fifth of it between sweeps); nearer wakes are the scheduler's. For tests.
    #[arg(long, hide = true, default_value = "5m", value_parser = parse_duration)]
    pub wake_lookahead: Duration,
    /// Reconcile only while holding the Lease --lease-name in POD_NAMESPACE, so that several
    /// replicas can run (identity: POD_NAME, else host name and a random suffix).
    #[arg(long, env = "KEYWARD_LEADER_ELECTION")]
    pub leader_election: bool,
    /// The Lease of --leader-election; one per installation (the chart names it per release).
    #[arg(long, env = "KEYWARD_LEASE_NAME", default_value = leader::DEFAULT_LEASE_NAME, value_parser = parse_lease_name)]
    pub lease_name: String,
    /// The Secret of the token exchange's signing keys, in the controller's namespace
    /// (POD_NAMESPACE, else the kubeconfig's); the controller creates and rotates it.
    #[arg(long, env = "KEYWARD_SIGNING_SECRET", default_value = signing::DEFAULT_SECRET_NAME, value_parser = parse_secret_name)]
    pub signing_secret: String,
    /// A new signing key begins to sign this long after the newest one did.
    #[arg(long, env = "KEYWARD_SIGNING_KEY_ROTATION", default_value = "30d", value_parser = parse_duration)]
    pub signing_key_rotation: Duration,
    /// A new signing key is published (in the JWKS) this long before it begins to sign.
    #[arg(long, env = "KEYWARD_SIGNING_KEY_PUBLISH_AHEAD", default_value = "1h", value_parser = parse_duration)]
    pub signing_key_publish_ahead: Duration,
    /// A retired signing key is kept this long after its successor began to sign: at least the
    /// longest life of a token it signed (access token TTL plus refresh grace, at most 26h).
    #[arg(long, env = "KEYWARD_SIGNING_KEY_RETAIN", default_value = "26h", value_parser = parse_duration)]
    pub signing_key_retain: Duration,
}

#[derive(clap::Args, Debug)]
pub struct VerifierArgs {
    /// Namespaces whose keys are accepted, comma-separated; all namespaces when absent.
    #[arg(long, env = "KEYWARD_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Address for /v1/verify, /v1/auth, /healthz, /readyz and /metrics.
    #[arg(long, env = "KEYWARD_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Peers whose X-Forwarded-For is believed (the proxies in front), as CIDRs, comma-separated.
    #[arg(long, env = "KEYWARD_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_cidr)]
    pub trusted_proxies: Vec<IpNet>,
    /// Make the first list of each watch a streaming list (Kubernetes 1.27 and later, with the
    /// WatchList feature) instead of paged LISTs.
    #[arg(long, env = "KEYWARD_STREAMING_LISTS")]
    pub streaming_lists: bool,
    /// Turn token exchange on: the external URL clients use (iss of every token); serves
    /// /v1/token and /.well-known. Without it those paths answer 404.
    #[arg(long, env = "KEYWARD_ISSUER")]
    pub issuer: Option<String>,
    /// aud of access tokens; the issuer when not given.
    #[arg(long, env = "KEYWARD_AUDIENCE")]
    pub audience: Option<String>,
    /// Lifetime of an access token, at most 2h; never past the key's own expiry.
    #[arg(long, env = "KEYWARD_ACCESS_TOKEN_TTL", default_value = "15m", value_parser = parse_duration)]
    pub access_token_ttl: Duration,
    /// A refresh token expires this long after its access token, at most 1d.
    #[arg(long, env = "KEYWARD_REFRESH_GRACE", default_value = "1h", value_parser = parse_duration)]
    pub refresh_grace: Duration,
    /// Every session (its refreshes) ends this long after its first exchange.
    #[arg(long, env = "KEYWARD_SESSION_MAX", default_value = "24h", value_parser = parse_duration)]
    pub session_max: Duration,
    /// The Secret of signing keys the controller writes, in POD_NAMESPACE (else the kubeconfig's
    /// namespace); the verifier only reads it.
    #[arg(long, env = "KEYWARD_SIGNING_SECRET", default_value = crate::signing::DEFAULT_SECRET_NAME)]
    pub signing_secret: String,
    /// Write each key's KeyUsage (last use, applications seen) at most this often; 0s turns usage
    /// recording off.
    #[arg(long, env = "KEYWARD_USAGE_FLUSH_INTERVAL", default_value = "60s", value_parser = parse_duration_or_off)]
    pub usage_flush_interval: Duration,
    /// Times in KeyUsages are truncated to this (at least 1s): uses within one step write nothing.
    #[arg(long, env = "KEYWARD_USAGE_RESOLUTION", default_value = "1m", value_parser = parse_duration)]
    pub usage_resolution: Duration,
    /// Log format.
    #[arg(long, env = "KEYWARD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(clap::Args, Debug)]
pub struct WebhookArgs {
    /// Address for /validate, /mutate, /healthz, /readyz and /metrics, all over TLS.
    #[arg(long, env = "KEYWARD_LISTEN", default_value = "0.0.0.0:9443")]
    pub listen: SocketAddr,
    /// The serving certificate (PEM, with its chain); read again when it changes.
    #[arg(long, env = "KEYWARD_TLS_CERT_FILE")]
    pub tls_cert_file: std::path::PathBuf,
    /// The serving certificate's private key (PEM); read again when it changes.
    #[arg(long, env = "KEYWARD_TLS_KEY_FILE")]
    pub tls_key_file: std::path::PathBuf,
    /// As the controller's: keys without an expiry are checked against it [default: 90d, or
    /// --max-expiry when that is shorter].
    #[arg(long, env = "KEYWARD_DEFAULT_EXPIRY", value_parser = parse_duration)]
    pub default_expiry: Option<Duration>,
    /// As the controller's: longer lifetimes are refused at admission.
    #[arg(long, env = "KEYWARD_MAX_EXPIRY", value_parser = parse_duration)]
    pub max_expiry: Option<Duration>,
    /// `enforce`: every scope a change puts into use needs verb grant on scopes.keyward.io;
    /// `off`: no grant check (spec checks and created-by still apply).
    #[arg(long, env = "KEYWARD_GRANTS", value_enum, default_value = "enforce")]
    pub grants: webhook::Grants,
    /// Log format.
    #[arg(long, env = "KEYWARD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    duration::parse(text)
}

/// A duration, or `0s` (also `0`) for off.
fn parse_duration_or_off(text: &str) -> Result<Duration, String> {
    match text {
        "0" | "0s" => Ok(Duration::ZERO),
        _ => duration::parse(text).map_err(|problem| format!("{problem}; 0s turns it off")),
    }
}

fn parse_lease_name(text: &str) -> Result<String, String> {
    names::dns_subdomain(text).map(|()| text.to_string())
}

fn parse_secret_name(text: &str) -> Result<String, String> {
    names::dns_subdomain(text).map(|()| text.to_string())
}

/// The signing keeper's settings from the flags; a schedule that cannot work is refused at start.
fn keeper_settings(args: &ControllerArgs) -> Result<KeeperSettings> {
    let schedule = Schedule {
        rotation: args.signing_key_rotation,
        publish_ahead: args.signing_key_publish_ahead,
        retain: args.signing_key_retain,
    };
    schedule.check().map_err(Error::Usage)?;
    Ok(KeeperSettings { secret: args.signing_secret.clone(), schedule })
}

/// The expiry policy the flags ask for: `--max-expiry` alone lowers the default to the cap when
/// the cap is shorter; an explicit `--default-expiry` beyond the cap is a mistake worth refusing.
pub fn expiry_policy(default: Option<Duration>, max: Option<Duration>) -> Result<ExpiryPolicy> {
    let default = match (default, max) {
        (Some(default), Some(max)) if default > max => {
            return Err(Error::Usage(format!(
                "--default-expiry {} is longer than --max-expiry {}",
                duration::format(default),
                duration::format(max)
            )));
        }
        (Some(default), _) => default,
        (None, Some(max)) => DEFAULT_EXPIRY.min(max),
        (None, None) => DEFAULT_EXPIRY,
    };
    Ok(ExpiryPolicy { default, max })
}

fn parse_cidr(text: &str) -> Result<IpNet, String> {
    validate::parse_cidr(text.trim())
}

/// Namespaces from a comma-separated flag; none means all.
fn namespaces(flag: Vec<String>) -> Vec<String> {
    flag.into_iter().map(|ns| ns.trim().to_string()).filter(|ns| !ns.is_empty()).collect()
}

impl Cli {
    pub async fn run(self) -> Result<()> {
        match self.command {
            Command::Crd => {
                print!("{}", crd::yaml()?);
                Ok(())
            }
            Command::Controller(args) => run_controller(args).await,
            Command::Verifier(args) => run_verifier(args).await,
            Command::Webhook(args) => run_webhook(args).await,
        }
    }
}

async fn run_controller(args: ControllerArgs) -> Result<()> {
    logging::init_logging(args.log_format);
    let expiry = expiry_policy(args.default_expiry, args.max_expiry)?;
    let signing = keeper_settings(&args)?;
    let client = crate::retry::client().await.map_err(Error::KubeConfig)?;
    let settings = Settings {
        namespaces: namespaces(args.namespaces),
        expiry,
        concurrency: args.concurrency,
        signing,
        wakes: controller::wakes::Wakes::new(args.wake_lookahead),
    };
    tracing::info!(namespaces = ?settings.namespaces, default_expiry = %duration::format(settings.expiry.default), "starting controller");
    let lease = args.leader_election.then_some(args.lease_name);
    controller::process::run(client, settings, args.listen, lease.as_deref(), shutdown_on_signal()).await
}

/// The exchange's settings from the verifier's flags; `None` without `--issuer`.
pub fn exchange_settings(args: &VerifierArgs) -> Result<Option<exchange::Settings>> {
    let Some(issuer) = args.issuer.clone() else { return Ok(None) };
    let settings = exchange::Settings {
        audience: args.audience.clone().unwrap_or_else(|| issuer.clone()),
        issuer,
        access_ttl: args.access_token_ttl,
        refresh_grace: args.refresh_grace,
        session_max: args.session_max,
        signing_secret: args.signing_secret.clone(),
    };
    settings.check().map_err(Error::Usage)?;
    Ok(Some(settings))
}

/// The usage recorder's settings from the verifier's flags; `None` when turned off.
pub fn usage_settings(args: &VerifierArgs) -> Result<Option<usage::Settings>> {
    if args.usage_flush_interval.is_zero() {
        return Ok(None);
    }
    if args.usage_resolution.is_zero() {
        return Err(Error::Usage("--usage-resolution must be at least 1s".into()));
    }
    Ok(Some(usage::Settings { flush_interval: args.usage_flush_interval, resolution: args.usage_resolution }))
}

async fn run_verifier(args: VerifierArgs) -> Result<()> {
    logging::init_logging(args.log_format);
    let exchange = exchange_settings(&args)?;
    let usage = usage_settings(&args)?;
    let client = crate::retry::client().await.map_err(Error::KubeConfig)?;
    let settings = verifier::Settings {
        namespaces: namespaces(args.namespaces),
        trusted_proxies: args.trusted_proxies,
        streaming_lists: args.streaming_lists,
        exchange,
        usage,
    };
    tracing::info!(namespaces = ?settings.namespaces, trusted_proxies = ?settings.trusted_proxies, "starting verifier");
    verifier::run(client, settings, args.listen, shutdown_on_signal()).await
}

async fn run_webhook(args: WebhookArgs) -> Result<()> {
    logging::init_logging(args.log_format);
    let settings = webhook::Settings {
        expiry: expiry_policy(args.default_expiry, args.max_expiry)?,
        grants: args.grants,
        cert: args.tls_cert_file,
        key: args.tls_key_file,
    };
    let client = crate::retry::client().await.map_err(Error::KubeConfig)?;
    tracing::info!(grants = ?settings.grants, default_expiry = %duration::format(settings.expiry.default), "starting webhook");
    webhook::run(client, settings, args.listen, shutdown_on_signal()).await
}

/// A flag that turns true on SIGTERM or Ctrl-C. Signals belong to the process, so they are
/// caught here, once for every subcommand; each component only reads the flag.
fn shutdown_on_signal() -> watch::Receiver<bool> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        shutdown_tx.send_replace(true);
    });
    shutdown_rx
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

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn max_expiry_alone_lowers_the_default_to_the_cap() {
        assert_eq!(expiry_policy(None, None).unwrap(), ExpiryPolicy { default: DEFAULT_EXPIRY, max: None });
        assert_eq!(expiry_policy(None, Some(7 * DAY)).unwrap(), ExpiryPolicy { default: 7 * DAY, max: Some(7 * DAY) });
        assert_eq!(
            expiry_policy(None, Some(365 * DAY)).unwrap(),
            ExpiryPolicy { default: DEFAULT_EXPIRY, max: Some(365 * DAY) },
            "a longer cap leaves the default"
        );
        assert_eq!(expiry_policy(Some(DAY), Some(7 * DAY)).unwrap().default, DAY);
        let refused = expiry_policy(Some(30 * DAY), Some(7 * DAY)).unwrap_err().to_string();
        assert!(refused.contains("--default-expiry 4w2d is longer than --max-expiry 1w"), "{refused}");
    }

    #[test]
    fn usage_recording_is_on_by_default_and_off_with_a_zero_interval() {
        let parse = |extra: &[&str]| {
            let cli = Cli::try_parse_from([&["keyward", "verifier"], extra].concat()).map_err(|e| e.to_string())?;
            let Command::Verifier(args) = cli.command else { panic!("verifier") };
            usage_settings(&args).map_err(|e| e.to_string())
        };
        let default = parse(&[]).unwrap().expect("on by default");
        assert_eq!((default.flush_interval, default.resolution), (Duration::from_secs(60), Duration::from_secs(60)));
        assert_eq!(parse(&["--usage-flush-interval", "0s"]).unwrap(), None);
        assert_eq!(parse(&["--usage-flush-interval", "0"]).unwrap(), None);
        let fast = parse(&["--usage-flush-interval", "1s", "--usage-resolution", "1s"]).unwrap().unwrap();
        assert_eq!(fast.resolution, Duration::from_secs(1));
        assert!(parse(&["--usage-resolution", "0s"]).unwrap_err().contains("--usage-resolution"));
        assert!(parse(&["--usage-flush-interval", "soon"]).unwrap_err().contains("0s turns it off"));
    }

    #[test]
    fn exchange_flags_are_checked_at_start_and_off_without_an_issuer() {
        let parse = |extra: &[&str]| {
            let cli = Cli::try_parse_from([&["keyward", "verifier"], extra].concat()).unwrap();
            let Command::Verifier(args) = cli.command else { panic!("verifier") };
            exchange_settings(&args)
        };
        assert_eq!(parse(&[]).unwrap(), None);
        let on = parse(&["--issuer", "https://kw.example"]).unwrap().expect("on");
        assert_eq!(
            (on.audience.as_str(), on.access_ttl, on.session_max),
            ("https://kw.example", Duration::from_secs(900), DAY)
        );
        assert_eq!(on.signing_secret, "keyward-signing-keys");
        let too_long = parse(&["--issuer", "https://kw.example", "--access-token-ttl", "3h"]).unwrap_err().to_string();
        assert!(too_long.contains("--access-token-ttl 3h"), "{too_long}");
        let bad = parse(&["--issuer", "kw.example"]).unwrap_err().to_string();
        assert!(bad.contains("--issuer \"kw.example\""), "{bad}");
    }

    #[test]
    fn the_lease_name_is_a_kubernetes_name() {
        let cli = Cli::try_parse_from(["keyward", "controller", "--lease-name", "team-a-keyward"]).unwrap();
        let Command::Controller(args) = cli.command else { panic!("controller") };
        assert_eq!(args.lease_name, "team-a-keyward");
        let Command::Controller(args) = Cli::try_parse_from(["keyward", "controller"]).unwrap().command else {
            panic!("controller")
        };
        assert_eq!(args.lease_name, "keyward-controller");
        assert!(Cli::try_parse_from(["keyward", "controller", "--lease-name", "Not_A_Name"]).is_err());
    }

    fn controller_args(flags: &[&str]) -> ControllerArgs {
        let cli = Cli::try_parse_from([&["keyward", "controller"], flags].concat()).expect("flags");
        let Command::Controller(args) = cli.command else { panic!("controller") };
        args
    }

    #[test]
    fn the_signing_flags_default_to_the_contract_and_a_schedule_that_cannot_work_is_refused() {
        let settings = keeper_settings(&controller_args(&[])).expect("defaults");
        assert_eq!(settings, KeeperSettings::default());
        assert_eq!(settings.schedule.retain, signing::MAX_TOKEN_LIFETIME, "--signing-key-retain defaults to 26h");
        let short = ["--signing-key-rotation", "6s", "--signing-key-publish-ahead", "3s", "--signing-key-retain", "4s"];
        let settings = keeper_settings(&controller_args(&short)).expect("short settings");
        assert_eq!(settings.schedule.rotation, Duration::from_secs(6));
        let refused = keeper_settings(&controller_args(&["--signing-key-publish-ahead", "30d"])).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("--signing-key-publish-ahead 4w2d must be shorter than --signing-key-rotation 4w2d"),
            "{refused}"
        );
        let refused =
            keeper_settings(&controller_args(&["--signing-key-rotation", "20m", "--signing-key-publish-ahead", "1m"]))
                .unwrap_err()
                .to_string();
        assert!(refused.contains("--signing-key-retain") && refused.contains("would keep"), "{refused}");
        assert!(Cli::try_parse_from(["keyward", "controller", "--signing-secret", "Not_A_Name"]).is_err());
    }
}
