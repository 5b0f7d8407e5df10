//! `kubectl apikey`: the kubectl plugin for people at a terminal. Installed as the binary
//! `kubectl-apikey` on the PATH, it takes kubectl's habits: `-n`, `--context`, `--kubeconfig`,
//! `-o json|yaml`, `-A`, aligned tables, and one exit code per kind of failure.

pub mod apps;
pub mod cluster;
pub mod error;
pub mod exchange;
pub mod issue;
pub mod keys;
pub mod render;
pub mod usage;
pub mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::api::{ApiKey, Credential, KeyState};
use cluster::{Cluster, ConnectArgs};
use error::{EXIT_CODES_HELP, Result};
use render::Format;

#[derive(Parser, Debug)]
#[command(
    name = "kubectl-apikey",
    bin_name = "kubectl apikey",
    version,
    about = "Create, inspect and check Keyward API keys",
    long_about = "Create, inspect and check Keyward API keys (ApiKeys and Credentials of keyward.io/v1alpha1).\n\n\
                  A new token is printed once, on stdout, and kept only in its Secret. Every other command shows \
                  key IDs and hashes, never a token.",
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create an ApiKey, wait until its token is issued, and print the token once.
    Create(issue::CreateArgs),
    #[command(flatten)]
    Key(KeyCommand),
    /// Read a token from stdin and say which key it belongs to and whether it is valid.
    Verify(verify::VerifyArgs),
    /// Read a token from stdin, trade it at the verifier (--issuer) for a short-lived access token
    /// (OAuth 2.0 client credentials), and print that.
    Exchange(exchange::ExchangeArgs),
    /// The same for Credentials, which hold several tokens each.
    #[command(subcommand, visible_alias = "cred")]
    Credential(CredentialCommand),
}

#[derive(Subcommand, Debug)]
pub enum CredentialCommand {
    /// Create a Credential, optionally with a first token (printed once).
    Create(issue::CreateCredentialArgs),
    /// Add a token to a Credential, wait until it is issued, and print it once.
    AddToken(issue::AddTokenArgs),
    /// Remove a token from a Credential: it is refused at once and its Secret deleted.
    RemoveToken(issue::RemoveTokenArgs),
    #[command(flatten)]
    Key(KeyCommand),
}

/// The commands ApiKeys and Credentials share.
#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// List as a table: name, phase, key ID (or tokens), scopes, expiry, last use (from the
    /// KeyUsage the verifier records), creator, age; -A for every namespace.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show spec, status, last use, applications, conditions and recent events (never a token).
    Describe(NameArgs),
    /// Set state Active: the tokens work again (an expired key stays expired).
    Activate(NameArgs),
    /// Set state Inactive: refused everywhere at once; the Secrets are kept.
    Deactivate(NameArgs),
    /// Delete it; its Secrets go with it.
    Delete(NameArgs),
    /// Allow, deny or forget an application in spec.applications. The edit carries the
    /// resourceVersion it was computed from: if the key changed meanwhile, nothing is written
    /// (exit code 13).
    #[command(subcommand, after_help = apps::GITOPS)]
    App(apps::AppCommand),
}

impl KeyCommand {
    async fn run<K: keys::KeyResource>(self, cluster: &Cluster) -> Result<()> {
        match self {
            KeyCommand::List(ListArgs { all_namespaces, selector, created_by, output }) => {
                let filter = keys::Filter { created_by: created_by.as_deref() };
                keys::list::<K>(cluster, all_namespaces, selector.as_deref(), filter, output).await
            }
            KeyCommand::Describe(args) => keys::describe::<K>(cluster, &args.name).await,
            KeyCommand::Activate(args) => keys::set_state::<K>(cluster, &args.name, KeyState::Active).await,
            KeyCommand::Deactivate(args) => keys::set_state::<K>(cluster, &args.name, KeyState::Inactive).await,
            KeyCommand::Delete(args) => keys::delete::<K>(cluster, &args.name).await,
            KeyCommand::App(command) => apps::run::<K>(cluster, command).await,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// List across every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Only keys whose labels match this selector (`team=a`).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Only keys created by this user, as the admission webhook recorded it (annotation
    /// keyward.io/created-by, exact match); keys without a recorded creator never match.
    #[arg(long, value_name = "NAME", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub created_by: Option<String>,
    /// Print a kubectl List document instead of a table.
    #[arg(short, long, value_enum)]
    pub output: Option<Format>,
}

#[derive(clap::Args, Debug)]
pub struct NameArgs {
    /// The object's name.
    pub name: String,
}

impl Cli {
    pub async fn run(self) -> Result<()> {
        // Creation connects only when it has something to send: a client-side dry run works
        // without any cluster, for a GitOps repository. Every other command needs one.
        let connect = &self.connect;
        let cluster = || Cluster::connect(connect);
        match self.command {
            Command::Create(args) => issue::create_apikey(connect, args).await,
            Command::Key(command) => command.run::<ApiKey>(&cluster().await?).await,
            Command::Verify(args) => verify::verify(&cluster().await?, args).await,
            // The issuer is the verifier's URL: no cluster needed.
            Command::Exchange(args) => exchange::exchange(args).await,
            Command::Credential(command) => match command {
                CredentialCommand::Create(args) => issue::create_credential(connect, args).await,
                CredentialCommand::AddToken(args) => issue::add_token(&cluster().await?, args).await,
                CredentialCommand::RemoveToken(args) => issue::remove_token(&cluster().await?, args).await,
                CredentialCommand::Key(command) => command.run::<Credential>(&cluster().await?).await,
            },
        }
    }
}

/// The `kubectl-apikey` binary's whole life: parse, run, exit with the error's code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return error::PluginError::Other(format!("cannot start the async runtime: {e}")).report(),
    };
    match runtime.block_on(cli.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => error.report(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn dry_run_takes_its_mode_only_after_an_equals_sign() {
        let cli = Cli::try_parse_from(["kubectl-apikey", "create", "--dry-run", "ci", "--scope", "a.b"]).unwrap();
        let Command::Create(args) = cli.command else { panic!("not create") };
        assert_eq!((args.name.as_str(), args.dry_run), ("ci", Some(issue::DryRun::Client)));
        let cli = Cli::try_parse_from(["kubectl-apikey", "create", "ci", "--dry-run=server"]).unwrap();
        let Command::Create(args) = cli.command else { panic!("not create") };
        assert_eq!(args.dry_run, Some(issue::DryRun::Server));
    }

    #[test]
    fn expires_after_and_expires_at_are_exclusive() {
        let both = ["kubectl-apikey", "create", "ci", "--expires-after", "1d", "--expires-at", "2027-01-01T00:00:00Z"];
        assert!(Cli::try_parse_from(both).is_err());
    }

    #[test]
    fn an_expiry_starting_with_a_hyphen_is_a_value_for_validation_to_refuse() {
        for (flag, value) in [("--expires-after", "-5d"), ("--expires-at", "-1")] {
            let cli = Cli::try_parse_from(["kubectl-apikey", "create", "ci", flag, value]).unwrap();
            let Command::Create(args) = cli.command else { panic!("not create") };
            let got = args.expiry.expires_after.or(args.expiry.expires_at);
            assert_eq!(got.as_deref(), Some(value), "{flag}");
        }
        let cli =
            Cli::try_parse_from(["kubectl-apikey", "credential", "add-token", "b", "t", "--expires-after", "-5d"]);
        assert!(cli.is_ok(), "add-token");
    }

    #[test]
    fn created_by_names_someone() {
        let cli = Cli::try_parse_from(["kubectl-apikey", "credential", "list", "--created-by", "alice"]).unwrap();
        let Command::Credential(CredentialCommand::Key(KeyCommand::List(args))) = cli.command else { panic!("list") };
        assert_eq!(args.created_by.as_deref(), Some("alice"));
        assert!(Cli::try_parse_from(["kubectl-apikey", "list", "--created-by", ""]).is_err());
    }

    #[test]
    fn exchange_takes_scopes_repeated_and_the_issuer_from_the_environment() {
        let line =
            ["kubectl-apikey", "exchange", "--issuer", "https://k.example", "--scope", "a.b c.d", "--scope", "e"];
        let cli = Cli::try_parse_from(line).unwrap();
        let Command::Exchange(args) = cli.command else { panic!("not exchange") };
        assert_eq!(args.issuer.as_deref(), Some("https://k.example"));
        assert_eq!(args.scopes, ["a.b c.d", "e"]);
        assert_eq!(args.timeout, std::time::Duration::from_secs(30));
        let issuer = Cli::command().find_subcommand("exchange").and_then(|c| {
            c.get_arguments().find(|a| a.get_id() == "issuer").and_then(|a| a.get_env().map(|e| e.to_owned()))
        });
        assert_eq!(issuer.as_deref(), Some(std::ffi::OsStr::new("KEYWARD_ISSUER")));
    }

    #[test]
    fn app_commands_take_a_key_and_a_well_formed_application_for_both_kinds() {
        let cli = Cli::try_parse_from(["kubectl-apikey", "app", "allow", "ci", "billing-worker", "-n", "a"]).unwrap();
        let Command::Key(KeyCommand::App(apps::AppCommand::Allow(args))) = cli.command else { panic!("app allow") };
        assert_eq!((args.name.as_str(), args.app.as_str()), ("ci", "billing-worker"));
        let cli = Cli::try_parse_from(["kubectl-apikey", "credential", "app", "forget", "billing", "cron"]).unwrap();
        let Command::Credential(CredentialCommand::Key(KeyCommand::App(apps::AppCommand::Forget(args)))) = cli.command
        else {
            panic!("credential app forget")
        };
        assert_eq!(args.app, "cron");
        for bad in ["a b", "ä", ".hidden", &"a".repeat(64)] {
            let error = Cli::try_parse_from(["kubectl-apikey", "app", "deny", "ci", bad]).unwrap_err();
            assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation, "{bad:?}");
            assert_eq!(error.exit_code(), 2, "{bad:?}");
            assert!(error.to_string().contains(&format!("'{bad}'")), "{error}");
        }
        assert!(Cli::try_parse_from(["kubectl-apikey", "app", "allow", "ci"]).is_err(), "no application");
    }

    #[test]
    fn app_help_says_that_gitops_reverts_the_edit() {
        let mut command = Cli::command();
        let app = command.find_subcommand_mut("app").expect("app");
        let help = app.render_long_help().to_string();
        assert!(help.contains("a self-healing sync reverts it"), "{help}");
        let allow = app.find_subcommand_mut("allow").expect("allow").render_long_help().to_string();
        assert!(allow.contains("unless the same change is committed"), "{allow}");
    }

    #[test]
    fn namespace_and_context_go_anywhere_on_the_line() {
        let cli = Cli::try_parse_from(["kubectl-apikey", "list", "-n", "team-a", "--context", "prod"]).unwrap();
        assert_eq!(cli.connect.namespace.as_deref(), Some("team-a"));
        assert_eq!(cli.connect.context.as_deref(), Some("prod"));
    }
}
