//! Commands that make keys and show their token once: `create`, `credential create`,
//! `credential add-token`, and `credential remove-token`, which takes one away.
//!
//! The token is read from its Secret after the controller has issued it, checked against the
//! hash in status, printed on stdout and nowhere else.

use std::io::IsTerminal;
use std::time::Duration;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde::Serialize;

use crate::api::credential::MAX_TOKENS;
use crate::api::expiry::{DEFAULT_EXPIRY, ExpiryPolicy};
use crate::api::names;
use crate::api::validate::{self, SpecError};
use crate::api::{
    ApiKey, ApiKeySpec, CONDITION_READY, Credential, CredentialSpec, CredentialToken, KeyPolicy, Phase,
    SECRET_TOKEN_KEY,
};
use crate::plugin::cluster::{Cluster, ConnectArgs, Subject};
use crate::plugin::error::{PluginError, Result};
use crate::plugin::keys::{self, FIELD_MANAGER, KeyResource};
use crate::plugin::render::{self, Format};
use crate::token::{Token, TokenHash};

/// What every key shares, as flags.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PolicyArgs {
    /// A scope to grant (repeat for more): `orders.read`, `orders.*`, `deploy.>`.
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// A client network allowed to use the key, as a CIDR (repeat for more); any when absent.
    #[arg(long = "cidr", value_name = "CIDR")]
    pub cidrs: Vec<String>,
    /// What the key is for.
    #[arg(long)]
    pub description: Option<String>,
    /// Token prefix; `kw` when absent.
    #[arg(long, value_name = "PREFIX")]
    pub token_prefix: Option<String>,
}

impl PolicyArgs {
    fn policy(&self) -> KeyPolicy {
        KeyPolicy {
            description: self.description.clone(),
            scopes: self.scopes.clone(),
            allowed_cidrs: self.cidrs.clone(),
            token_prefix: self.token_prefix.clone(),
            ..Default::default()
        }
    }
}

/// When a token expires.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ExpiryArgs {
    /// Lifetime: `30d`, `12h`, `1w2d` (units s, m, h, d, w), from the key's creation (a
    /// Credential token's: from its first issue). The operator's default (90d unless
    /// configured) when neither this nor --expires-at is given.
    // A value starting with '-' (`-5d`) is taken as the value, for validation to refuse naming
    // the flag, rather than failing as an unknown flag.
    #[arg(long, value_name = "DURATION", conflicts_with = "expires_at", allow_hyphen_values = true)]
    pub expires_after: Option<String>,
    /// Absolute expiry, RFC 3339: `2027-01-01T00:00:00Z`.
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub expires_at: Option<String>,
}

/// How the result is shown.
#[derive(clap::Args, Debug, Clone)]
pub struct RevealArgs {
    /// How long to wait for the controller to issue the token.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = crate::duration::parse)]
    pub timeout: Duration,
    /// Print a JSON or YAML document (with the token) instead of the bare token.
    #[arg(short, long, value_enum)]
    pub output: Option<Format>,
}

/// `--dry-run`: show the object instead of creating it.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DryRun {
    /// Print the manifest as built here, for a GitOps repository; nothing is sent.
    Client,
    /// Send it to the API server for validation, without storing it; print what it returned.
    Server,
}

/// `kubectl apikey create`.
#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Name of the ApiKey.
    pub name: String,
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub expiry: ExpiryArgs,
    /// Secret that receives the token; `<NAME>-apikey` when absent.
    #[arg(long, value_name = "NAME")]
    pub secret_name: Option<String>,
    /// Print the ApiKey manifest (YAML, or JSON with -o json) instead of creating it.
    #[arg(long, value_enum, num_args = 0..=1, require_equals = true, default_missing_value = "client")]
    pub dry_run: Option<DryRun>,
    #[command(flatten)]
    pub reveal: RevealArgs,
}

/// `kubectl apikey credential create`.
#[derive(clap::Args, Debug)]
pub struct CreateCredentialArgs {
    /// Name of the Credential.
    pub name: String,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// A first token to issue, by name (`primary`); more with `credential add-token`.
    #[arg(long, value_name = "NAME")]
    pub token: Option<String>,
    #[command(flatten)]
    pub expiry: ExpiryArgs,
    /// Print the Credential manifest instead of creating it.
    #[arg(long, value_enum, num_args = 0..=1, require_equals = true, default_missing_value = "client")]
    pub dry_run: Option<DryRun>,
    #[command(flatten)]
    pub reveal: RevealArgs,
}

/// `kubectl apikey credential add-token`.
#[derive(clap::Args, Debug)]
pub struct AddTokenArgs {
    /// Name of the Credential.
    pub credential: String,
    /// Name of the new token: a DNS label of at most 20 characters (`next`, `2026-q4`).
    pub token: String,
    #[command(flatten)]
    pub expiry: ExpiryArgs,
    #[command(flatten)]
    pub reveal: RevealArgs,
}

/// `kubectl apikey credential remove-token`.
#[derive(clap::Args, Debug)]
pub struct RemoveTokenArgs {
    /// Name of the Credential.
    pub credential: String,
    /// Name of the token to remove; it stops working at once and its Secret is deleted.
    pub token: String,
}

/// The flag a spec field comes from, so that a refusal names what the user typed.
fn flag_of(field: &str) -> &str {
    let leaf = field.rsplit('.').next().unwrap_or(field);
    match leaf.split('[').next().unwrap_or(leaf) {
        "expiresAfter" => "--expires-after",
        "expiresAt" => "--expires-at",
        "scopes" => "--scope",
        "allowedCIDRs" => "--cidr",
        "tokenPrefix" => "--token-prefix",
        "description" => "--description",
        "secretName" => "--secret-name",
        "name" => "token name",
        "tokens" => "tokens",
        _ => field,
    }
}

fn invalid_flag(error: SpecError) -> PluginError {
    PluginError::Invalid(format!("invalid {} {:?}: {}", flag_of(&error.field), error.value, error.problem))
}

/// A key that would be expired the moment it is made is a typo, not a wish.
fn check_not_past(expiry: &ExpiryArgs, now: Timestamp) -> Result<()> {
    match expiry.expires_at.as_deref().map(|text| (text, text.parse::<Timestamp>())) {
        Some((text, Ok(at))) if at <= now => Err(PluginError::Invalid(format!(
            "invalid --expires-at {text:?}: it is in the past (now is {}); the key would be expired at once",
            now.round(jiff::Unit::Second).unwrap_or(now)
        ))),
        _ => Ok(()),
    }
}

fn check_name(what: &str, name: &str) -> Result<()> {
    names::dns_subdomain(name).map_err(|problem| PluginError::Invalid(format!("invalid {what} {name:?}: {problem}")))
}

/// The checks the controller would make, done before anything is sent. The operator's own
/// `--max-expiry` is not known here: a key beyond it is refused by the controller instead.
const LOCAL_POLICY: ExpiryPolicy = ExpiryPolicy { default: DEFAULT_EXPIRY, max: None };

/// `kubectl apikey create`.
pub async fn create_apikey(connect: &ConnectArgs, args: CreateArgs) -> Result<()> {
    check_name("ApiKey name", &args.name)?;
    let spec = ApiKeySpec {
        policy: args.policy.policy(),
        expires_after: args.expiry.expires_after.clone(),
        expires_at: args.expiry.expires_at.clone(),
        secret_name: args.secret_name.clone(),
    };
    let mut key = ApiKey::new(&args.name, spec);
    key.metadata.namespace = connect.namespace.clone();
    validate::api_key(&key, Timestamp::now(), &LOCAL_POLICY).map_err(invalid_flag)?;
    check_not_past(&args.expiry, Timestamp::now())?;
    let Some((cluster, key)) = post(connect, key, args.dry_run, args.reveal.output).await? else { return Ok(()) };
    let issued = await_token(&cluster, &key, None, args.reveal.timeout).await?;
    reveal(&cluster, &issued, args.reveal.output).await
}

/// `kubectl apikey credential create`.
pub async fn create_credential(connect: &ConnectArgs, args: CreateCredentialArgs) -> Result<()> {
    check_name("Credential name", &args.name)?;
    if args.token.is_none() && (args.expiry.expires_after.is_some() || args.expiry.expires_at.is_some()) {
        return Err(PluginError::Invalid(
            "--expires-after and --expires-at set the expiry of a token: name it with --token".into(),
        ));
    }
    let tokens = args.token.iter().map(|name| token_spec(name, &args.expiry)).collect();
    let spec = CredentialSpec { policy: args.policy.policy(), tokens };
    let mut credential = Credential::new(&args.name, spec);
    credential.metadata.namespace = connect.namespace.clone();
    validate::credential(&credential, Timestamp::now(), &LOCAL_POLICY).map_err(invalid_flag)?;
    check_not_past(&args.expiry, Timestamp::now())?;
    let Some((cluster, credential)) = post(connect, credential, args.dry_run, args.reveal.output).await? else {
        return Ok(());
    };
    match &args.token {
        Some(token) => {
            let issued = await_token(&cluster, &credential, Some(token), args.reveal.timeout).await?;
            reveal(&cluster, &issued, args.reveal.output).await
        }
        None => render::print_stdout(&format!(
            "credential.keyward.io/{0} created; add a token with `kubectl apikey credential add-token {0} NAME`\n",
            args.name
        )),
    }
}

fn token_spec(name: &str, expiry: &ExpiryArgs) -> CredentialToken {
    CredentialToken {
        name: name.to_string(),
        expires_after: expiry.expires_after.clone(),
        expires_at: expiry.expires_at.clone(),
    }
}

/// Creates `object`, or prints it for `--dry-run`; returns the cluster and the object as
/// stored, `None` for a dry run. A client-side dry run prints the manifest as built, with a
/// namespace only when `-n` names one, as `kubectl create --dry-run=client` does.
async fn post<K: KeyResource>(
    connect: &ConnectArgs,
    mut object: K,
    dry_run: Option<DryRun>,
    output: Option<Format>,
) -> Result<Option<(Cluster, K)>> {
    let format = output.unwrap_or(Format::Yaml);
    if dry_run == Some(DryRun::Client) {
        render::print_document(&object, format)?;
        return Ok(None);
    }
    let cluster = Cluster::connect(connect).await?;
    object.meta_mut().namespace = Some(cluster.namespace.clone());
    let name = object.name_any();
    let params = PostParams { dry_run: dry_run == Some(DryRun::Server), field_manager: Some(FIELD_MANAGER.into()) };
    let created = match keys::api::<K>(&cluster).create(&params, &object).await {
        Ok(created) => created,
        Err(e) => return Err(cluster.explain(e, keys::subject::<K>(&cluster, Some(&name))).await),
    };
    if dry_run == Some(DryRun::Server) {
        render::print_document(&render::shown(created), format)?;
        return Ok(None);
    }
    Ok(Some((cluster, created)))
}

/// `kubectl apikey credential add-token`.
pub async fn add_token(cluster: &Cluster, args: AddTokenArgs) -> Result<()> {
    check_not_past(&args.expiry, Timestamp::now())?;
    let token = token_spec(&args.token, &args.expiry);
    let credential = change_tokens(cluster, &args.credential, |credential| {
        if credential.spec.tokens.iter().any(|t| t.name == args.token) {
            return Err(PluginError::AlreadyExists(format!(
                "{} already has a token {:?}",
                keys::subject::<Credential>(cluster, Some(&args.credential)),
                args.token
            )));
        }
        let subject = keys::subject::<Credential>(cluster, Some(&args.credential));
        if credential.spec.tokens.len() >= MAX_TOKENS {
            return Err(PluginError::Invalid(format!(
                "{subject} holds {MAX_TOKENS} tokens, the most a Credential may; remove one first"
            )));
        }
        let new = format!("spec.tokens[{}]", credential.spec.tokens.len());
        credential.spec.tokens.push(token.clone());
        // The new token's lifetime counts from its first issue, which is about now.
        match validate::credential(credential, Timestamp::now(), &LOCAL_POLICY) {
            Ok(_) => Ok(()),
            Err(error) if error.field.starts_with(&new) => Err(invalid_flag(error)),
            Err(error) => Err(PluginError::Invalid(format!("{subject} has an invalid spec already: {error}"))),
        }
    })
    .await?;
    let issued = await_token(cluster, &credential, Some(&args.token), args.reveal.timeout).await?;
    reveal(cluster, &issued, args.reveal.output).await
}

/// `kubectl apikey credential remove-token`.
pub async fn remove_token(cluster: &Cluster, args: RemoveTokenArgs) -> Result<()> {
    let credential = change_tokens(cluster, &args.credential, |credential| {
        let before = credential.spec.tokens.len();
        credential.spec.tokens.retain(|t| t.name != args.token);
        if credential.spec.tokens.len() == before {
            return Err(PluginError::NotFound(format!(
                "{} has no token {:?}",
                keys::subject::<Credential>(cluster, Some(&args.credential)),
                args.token
            )));
        }
        Ok(())
    })
    .await?;
    render::print_stdout(&format!(
        "credential.keyward.io/{}: token {:?} removed; it is refused from now on and Secret {:?} is deleted\n",
        credential.name_any(),
        args.token,
        credential.secret_name(&args.token)
    ))
}

/// Changes a Credential's token list with optimistic concurrency: the patch carries the
/// resourceVersion it was computed from, so a concurrent change makes it fail (409) and it is
/// computed again from a fresh read rather than overwriting the other change.
async fn change_tokens(
    cluster: &Cluster,
    name: &str,
    mut change: impl FnMut(&mut Credential) -> Result<()>,
) -> Result<Credential> {
    const ATTEMPTS: usize = 5;
    let api = keys::api::<Credential>(cluster);
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut credential: Credential = keys::get(cluster, name).await?;
        change(&mut credential)?;
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": credential.resource_version()},
            "spec": {"tokens": credential.spec.tokens},
        });
        match api.patch(name, &params, &Patch::Merge(&patch)).await {
            Ok(changed) => return Ok(changed),
            Err(kube::Error::Api(status)) if status.code == 409 && attempt < ATTEMPTS => continue,
            Err(e) => return Err(cluster.explain(e, keys::subject::<Credential>(cluster, Some(name))).await),
        }
    }
}

/// A token the controller has issued, as the key's status records it: what the plugin waits
/// for, then reveals.
struct NewToken {
    kind: &'static str,
    namespace: String,
    name: String,
    /// The Credential token's name.
    token_name: Option<String>,
    key_id: String,
    token_hash: String,
    secret_name: String,
    expires_at: Option<Timestamp>,
}

/// Where the controller is with the token being waited for.
enum Progress {
    Waiting(String),
    Issued(NewToken),
    Refused(String),
}

trait Issuable: KeyResource {
    /// The progress of the token (`token` names a Credential's) at the current generation.
    fn progress(&self, token: Option<&str>) -> Progress;
}

fn ready_message(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> String {
    conditions
        .iter()
        .find(|c| c.type_ == CONDITION_READY)
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_else(|| "no Ready condition".into())
}

impl Issuable for ApiKey {
    fn progress(&self, _: Option<&str>) -> Progress {
        let Some(status) = &self.status else { return Progress::Waiting("no status yet".into()) };
        if status.observed_generation < self.metadata.generation {
            return Progress::Waiting("the controller has not seen this generation yet".into());
        }
        match (status.phase, &status.token_hash, &status.key_id) {
            (Some(Phase::Active | Phase::Inactive), Some(hash), Some(key_id)) => Progress::Issued(NewToken {
                kind: "ApiKey",
                namespace: self.namespace().unwrap_or_default(),
                name: self.name_any(),
                token_name: None,
                key_id: key_id.clone(),
                token_hash: hash.clone(),
                secret_name: status.secret_name.clone().unwrap_or_else(|| self.secret_name()),
                expires_at: status.expires_at.as_ref().map(|t| t.0),
            }),
            (Some(Phase::Failed), ..) => {
                Progress::Refused(format!("the controller refused it: {}", ready_message(&status.conditions)))
            }
            (Some(Phase::Expired), ..) => {
                Progress::Refused(format!("it expired: {}", ready_message(&status.conditions)))
            }
            (phase, ..) => Progress::Waiting(format!("phase {}", phase.map_or("-", Phase::as_str))),
        }
    }
}

impl Issuable for Credential {
    fn progress(&self, token: Option<&str>) -> Progress {
        let Some(status) = &self.status else { return Progress::Waiting("no status yet".into()) };
        if status.observed_generation < self.metadata.generation {
            return Progress::Waiting("the controller has not seen this generation yet".into());
        }
        if status.phase == Some(Phase::Failed) {
            return Progress::Refused(format!("the controller refused it: {}", ready_message(&status.conditions)));
        }
        let name = token.unwrap_or_default();
        let Some(issued) = status.tokens.iter().find(|t| t.name == name) else {
            return Progress::Waiting(format!("token {name:?} not issued yet"));
        };
        match (issued.phase, &issued.token_hash, &issued.key_id) {
            (Some(Phase::Active | Phase::Inactive), Some(hash), Some(key_id)) => Progress::Issued(NewToken {
                kind: "Credential",
                namespace: self.namespace().unwrap_or_default(),
                name: self.name_any(),
                token_name: Some(name.to_string()),
                key_id: key_id.clone(),
                token_hash: hash.clone(),
                secret_name: issued.secret_name.clone().unwrap_or_else(|| self.secret_name(name)),
                expires_at: issued.expires_at.as_ref().map(|t| t.0),
            }),
            (Some(Phase::Failed | Phase::Expired), ..) => Progress::Refused(format!(
                "token {name:?} is {}: {}",
                issued.phase.map_or("-", Phase::as_str),
                ready_message(&status.conditions)
            )),
            (phase, ..) => Progress::Waiting(format!("token {name:?} phase {}", phase.map_or("-", Phase::as_str))),
        }
    }
}

/// Watches the key until the controller has issued the token, refused it, or `timeout` passed.
/// On a terminal, a spinner on stderr says what it is waiting for.
async fn await_token<K: Issuable>(
    cluster: &Cluster,
    created: &K,
    token: Option<&str>,
    timeout: Duration,
) -> Result<NewToken> {
    let name = created.name_any();
    let subject = keys::subject::<K>(cluster, Some(&name));
    let mut last = created.progress(token);
    let spinner =
        Spinner::start(&format!("waiting for the controller to issue the token of {}/{name}", K::NOUN), "created");
    let deadline = tokio::time::Instant::now() + timeout;
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(keys::api::<K>(cluster), config).boxed();
    loop {
        let what = match last {
            Progress::Issued(issued) => return Ok(issued),
            Progress::Refused(why) => return Err(PluginError::Unusable(format!("{subject} cannot be used: {why}"))),
            Progress::Waiting(what) => what,
        };
        spinner.say(&what);
        let event = match tokio::time::timeout_at(deadline, events.next()).await {
            Err(_) => {
                return Err(PluginError::Timeout(format!(
                    "{subject} was created, but the controller has not issued its token within {} ({what}); is the \
                     Keyward controller running and watching this namespace? The token will be in its Secret once \
                     issued; see `kubectl apikey {}describe {name}`",
                    crate::duration::format(timeout),
                    K::COMMANDS,
                )));
            }
            Ok(None) => return Err(PluginError::Other(format!("the watch of {subject} ended"))),
            Ok(Some(event)) => event,
        };
        last = match event {
            Ok(watcher::Event::Apply(key) | watcher::Event::InitApply(key)) => key.progress(token),
            Ok(watcher::Event::Delete(_)) => {
                return Err(PluginError::NotFound(format!("{subject} was deleted while waiting for its token")));
            }
            Ok(_) => Progress::Waiting(what),
            Err(error) => return Err(cluster.explain(watch_source(error), subject).await),
        };
    }
}

/// The API error inside a watch error, for [`Cluster::explain`].
fn watch_source(error: watcher::Error) -> kube::Error {
    match error {
        watcher::Error::InitialListFailed(e) | watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
            e
        }
        watcher::Error::WatchError(status) => kube::Error::Api(status),
        other => kube::Error::Service(Box::new(other)),
    }
}

/// A progress line on stderr while waiting, only when stderr is a terminal.
struct Spinner(ProgressBar);

impl Spinner {
    fn start(what: &str, first: &str) -> Self {
        let target =
            if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let style = ProgressStyle::with_template("{spinner} {prefix} ({msg}, {elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        // Built whole before the first draw, so no half-filled line flashes by.
        let bar = ProgressBar::with_draw_target(None, target)
            .with_style(style)
            .with_prefix(what.to_string())
            .with_message(first.to_string());
        bar.enable_steady_tick(Duration::from_millis(100));
        Self(bar)
    }

    fn say(&self, what: &str) {
        self.0.set_message(what.to_string());
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// The document `-o json|yaml` prints for an issued token.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Revealed<'a> {
    kind: &'a str,
    namespace: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_name: Option<&'a str>,
    key_id: &'a str,
    secret_name: &'a str,
    expires_at: Option<String>,
    token: &'a str,
}

/// Reads the token from its Secret, checks it against the hash in status, and prints it once.
async fn reveal(cluster: &Cluster, issued: &NewToken, output: Option<Format>) -> Result<()> {
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let owner = match &issued.token_name {
        Some(token) => format!("token {token:?} of {}/{}", issued.kind.to_lowercase(), issued.name),
        None => format!("{}/{}", issued.kind.to_lowercase(), issued.name),
    };
    let secret = match secrets.get(&issued.secret_name).await {
        Ok(secret) => secret,
        Err(kube::Error::Api(status)) if status.code == 403 => {
            return Err(PluginError::Forbidden(format!(
                "{owner} is issued, but you may not read Secret {:?} that holds its token ({}); ask for `get` on \
                 secrets, or mount the Secret where the token is used",
                issued.secret_name, status.message
            )));
        }
        Err(e) => {
            let subject = Subject {
                resource: "secret",
                name: Some(&issued.secret_name),
                namespace: Some(&cluster.namespace),
                ours: false,
            };
            return Err(cluster.explain(e, subject).await);
        }
    };
    let bytes = secret.data.as_ref().and_then(|d| d.get(SECRET_TOKEN_KEY)).map(|b| b.0.as_slice()).unwrap_or_default();
    let token = std::str::from_utf8(bytes).ok().and_then(|text| Token::parse(text).ok());
    let token = match token {
        Some(token) if TokenHash::of(token.expose().as_bytes()).as_str() == issued.token_hash => token,
        _ => {
            return Err(PluginError::Other(format!(
                "Secret {:?} does not hold the token whose hash {owner} records; the controller issues a new one: \
                 run the command again in a moment",
                issued.secret_name
            )));
        }
    };
    let now = Timestamp::now();
    let expiry = issued.expires_at.map_or_else(|| "unknown".into(), |at| render::when(at, now));
    match output {
        Some(format) => render::print_document(
            &Revealed {
                kind: issued.kind,
                namespace: &issued.namespace,
                name: &issued.name,
                token_name: issued.token_name.as_deref(),
                key_id: &issued.key_id,
                secret_name: &issued.secret_name,
                expires_at: issued.expires_at.map(|t| t.to_string()),
                token: token.expose(),
            },
            format,
        )?,
        None => {
            eprintln!("{owner} issued: key ID {}, expires {expiry}", issued.key_id);
            render::print_stdout(&format!("{}\n", token.expose()))?;
        }
    }
    eprintln!(
        "warning: this token is shown only once, here; save it now. It is kept only in Secret {}/{}.",
        issued.namespace, issued.secret_name
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expiry_in_the_past_is_refused_before_anything_is_sent() {
        let now: Timestamp = "2026-11-23T12:00:00Z".parse().unwrap();
        let at = |text: &str| ExpiryArgs { expires_at: Some(text.into()), ..Default::default() };
        let error = check_not_past(&at("2026-11-23T11:59:59Z"), now).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains(r#"invalid --expires-at "2026-11-23T11:59:59Z": it is in the past"#));
        assert!(check_not_past(&at("2026-11-23T12:00:01Z"), now).is_ok());
        assert!(check_not_past(&ExpiryArgs::default(), now).is_ok());
    }

    #[test]
    fn a_refused_field_is_named_by_its_flag() {
        assert_eq!(flag_of("spec.expiresAfter"), "--expires-after");
        assert_eq!(flag_of("spec.tokens[2].expiresAt"), "--expires-at");
        assert_eq!(flag_of("spec.scopes[1]"), "--scope");
        assert_eq!(flag_of("spec.allowedCIDRs[0]"), "--cidr");
        assert_eq!(flag_of("spec.tokens[0].name"), "token name");
        let error = invalid_flag(SpecError {
            field: "spec.expiresAfter".into(),
            value: "3x".into(),
            problem: "expected a duration".into(),
        });
        assert_eq!(error.to_string(), r#"invalid --expires-after "3x": expected a duration"#);
        assert_eq!(error.exit_code(), 2);
    }

    fn apikey(value: serde_json::Value) -> ApiKey {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_key_is_issued_once_its_current_generation_is_active() {
        let meta = serde_json::json!({"name": "ci", "namespace": "team-a", "generation": 2});
        let stale = apikey(serde_json::json!({"metadata": meta, "spec": {},
            "status": {"phase": "Active", "observedGeneration": 1, "keyId": "kw_1", "tokenHash": "sha256:00"}}));
        assert!(matches!(stale.progress(None), Progress::Waiting(_)));
        let active = apikey(serde_json::json!({"metadata": meta, "spec": {},
            "status": {"phase": "Active", "observedGeneration": 2, "keyId": "kw_1", "tokenHash": "sha256:00"}}));
        let Progress::Issued(issued) = active.progress(None) else { panic!("not issued") };
        assert_eq!((issued.secret_name.as_str(), issued.key_id.as_str()), ("ci-apikey", "kw_1"));
        let failed = apikey(serde_json::json!({"metadata": meta, "spec": {}, "status": {"phase": "Failed",
            "observedGeneration": 2, "conditions": [{"type": "Ready", "status": "False", "reason": "InvalidSpec",
            "message": "spec.expiresAfter: too long", "lastTransitionTime": "2026-11-23T00:00:00Z"}]}}));
        let Progress::Refused(why) = failed.progress(None) else { panic!("not refused") };
        assert_eq!(why, "the controller refused it: InvalidSpec: spec.expiresAfter: too long");
    }

    #[test]
    fn a_credential_token_is_issued_when_its_own_entry_is_active() {
        let credential: Credential = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "billing", "generation": 3},
            "spec": {"tokens": [{"name": "primary"}, {"name": "next"}]},
            "status": {"phase": "Active", "observedGeneration": 3, "tokens": [
                {"name": "primary", "phase": "Active", "keyId": "kw_1", "tokenHash": "sha256:00"},
            ]},
        }))
        .unwrap();
        assert!(matches!(credential.progress(Some("primary")), Progress::Issued(_)));
        assert!(matches!(credential.progress(Some("next")), Progress::Waiting(_)));
    }
}
