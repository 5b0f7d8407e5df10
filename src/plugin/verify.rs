//! `kubectl apikey verify`: which key a token belongs to and whether it is good, judged here
//! from the hashes in the cluster's statuses by the verifier's own rules. No verifier needed.

use std::io::{IsTerminal, Read};
use std::net::IpAddr;

use jiff::Timestamp;

use super::cluster::Cluster;
use super::error::{PluginError, Result};
use super::keys;
use super::render::{self, Format};
use crate::api::{ApiKey, Credential, Kind};
use crate::judge::{self, Answer, Code, Entry, ObjectKey};
use crate::scope;

/// `kubectl apikey verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// A scope the token must grant (repeat for more).
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// The client address to check against the key's allowed CIDRs.
    #[arg(long)]
    pub ip: Option<IpAddr>,
    /// The application presenting the token, judged against the key's spec.applications.
    #[arg(long, value_name = "NAME", value_parser = parse_app)]
    pub app: Option<String>,
    /// Look for the key in every namespace, not only the current one.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Print the verifier's JSON answer (`valid`, `code`, `key`) as JSON or YAML.
    #[arg(short, long, value_enum)]
    pub output: Option<Format>,
}

fn parse_app(name: &str) -> std::result::Result<String, String> {
    crate::api::names::app_name(name).map(|()| name.to_string())
}

/// The most a token read from stdin may be: far above any token, far below harm.
const MAX_INPUT: u64 = 4096;

pub async fn verify(cluster: &Cluster, args: VerifyArgs) -> Result<()> {
    for (i, required) in args.scopes.iter().enumerate() {
        scope::validate_required(required)
            .map_err(|problem| PluginError::Invalid(format!("invalid --scope {required:?} (#{}): {problem}", i + 1)))?;
    }
    let token = read_token("verify")?;
    let entries = entries_of(cluster, args.all_namespaces).await?;
    let request = judge::Request { scopes: &args.scopes, client: args.ip, app: args.app.as_deref() };
    let verdict = judge::verify(&token, &request, Timestamp::now(), |digest| {
        judge::unique(&entries, digest).cloned().map(std::sync::Arc::new)
    });
    drop(token);
    match args.output {
        Some(format) => render::print_document(&Answer::from(&verdict), format)?,
        None => render::print_stdout(&sentence(&verdict, cluster, args.all_namespaces, &args))?,
    }
    if verdict.code == Code::IpNotAllowed && args.ip.is_none() {
        // Without an address, a key limited to some networks can only be refused.
        eprintln!(
            "note: the key accepts only clients from its allowedCIDRs, and no client address was given: pass \
             the client's with --ip ADDRESS"
        );
    }
    if verdict.code == Code::Valid { Ok(()) } else { Err(PluginError::TokenRefused(None)) }
}

/// The token from stdin, without the line end a shell or `base64 -d` leaves; `command` names
/// the command in the hint when there is none.
pub(super) fn read_token(command: &str) -> Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("Paste the token, then press Enter and Ctrl-D:");
    }
    let mut text = String::new();
    stdin
        .lock()
        .take(MAX_INPUT)
        .read_to_string(&mut text)
        .map_err(|e| PluginError::Invalid(format!("cannot read a token from stdin: {e}")))?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(PluginError::Invalid(format!(
            "no token on stdin; pipe it in, for example: kubectl get secret NAME -o jsonpath='{{.data.token}}' | \
             base64 -d | kubectl apikey {command}"
        )));
    }
    Ok(token)
}

/// The entries of every token of the ApiKeys and Credentials in the namespace (or all of
/// them), read a page at a time so that only the entries, not every object, are held at once.
async fn entries_of(cluster: &Cluster, all_namespaces: bool) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    keys::each_page::<ApiKey>(cluster, all_namespaces, None, |key| entries.extend(judge::apikey_entries(&key))).await?;
    keys::each_page::<Credential>(cluster, all_namespaces, None, |credential| {
        entries.extend(judge::credential_entries(&credential))
    })
    .await?;
    Ok(entries)
}

/// The command that approves `app` for the key `object`: the key's kind's `app allow`, with
/// `-n` when the key is in another namespace than the current one (found with `-A`).
fn allow_command(object: &ObjectKey, app: &str, current_namespace: &str) -> String {
    let kind = match object.kind {
        Kind::ApiKey => "",
        Kind::Credential => "credential ",
    };
    let namespace = match *object.namespace == *current_namespace {
        true => String::new(),
        false => format!(" -n {}", object.namespace),
    };
    format!("kubectl apikey {kind}app allow {} {app}{namespace}", object.name)
}

/// The verdict as one line: the code first, then whose token it is.
fn sentence(verdict: &judge::Verdict, cluster: &Cluster, all_namespaces: bool, args: &VerifyArgs) -> String {
    let with_ip = args.ip.is_some();
    let Some(entry) = &verdict.entry else {
        return match verdict.code {
            Code::Malformed => "MALFORMED: this is not a Keyward token (wrong format or checksum)\n".into(),
            _ if all_namespaces => "NOT_FOUND: no ApiKey or Credential in any namespace holds this token\n".into(),
            _ => format!(
                "NOT_FOUND: no ApiKey or Credential in namespace {:?} holds this token (search every namespace with -A)\n",
                cluster.namespace
            ),
        };
    };
    let object = &entry.object;
    let whose = match &entry.token {
        Some(token) => format!("token {token:?} of Credential {}/{}", object.namespace, object.name),
        None => format!("ApiKey {}/{}", object.namespace, object.name),
    };
    let now = Timestamp::now();
    let detail = match verdict.code {
        Code::Valid => format!(
            "valid; scopes {}; expires {}",
            render::joined(&entry.policy.scopes).replace(',', ", "),
            render::when(entry.expires_at, now)
        ),
        Code::Expired => format!("expired {}", render::when(entry.expires_at, now)),
        Code::Inactive => "the key is inactive (or its spec is invalid)".into(),
        Code::IpNotAllowed if with_ip => "the address is not in the key's allowed CIDRs".into(),
        Code::IpNotAllowed => "the key is limited to its allowed CIDRs and no address was given (--ip)".into(),
        Code::InsufficientScope => {
            format!("the key's scopes ({}) do not grant all of those required", render::joined(&entry.policy.scopes))
        }
        Code::AppPending => match &args.app {
            Some(app) => {
                format!("application {app:?} awaits approval ({})", allow_command(object, app, &cluster.namespace))
            }
            None => "the key lets in only approved applications and none was named (--app NAME)".into(),
        },
        Code::AppDenied => match &args.app {
            Some(app) => format!("application {app:?} is denied"),
            None => "the key lets in only named applications and none was named (--app NAME)".into(),
        },
        Code::NotFound | Code::Malformed => String::new(),
    };
    format!("{}: {whose} (key ID {}): {detail}\n", verdict.code.as_str(), entry.key_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_application_is_approved_with_the_command_of_the_keys_kind_and_namespace() {
        let key = |kind, namespace: &str| ObjectKey { kind, namespace: namespace.into(), name: "billing".into() };
        let here = allow_command(&key(Kind::ApiKey, "team-a"), "worker", "team-a");
        assert_eq!(here, "kubectl apikey app allow billing worker");
        let there = allow_command(&key(Kind::Credential, "team-b"), "worker", "team-a");
        assert_eq!(there, "kubectl apikey credential app allow billing worker -n team-b");
    }
}
