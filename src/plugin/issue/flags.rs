//! The flags of the commands that make keys, and the mapping from a refused spec field back to
//! the flag it came from.

use std::time::Duration;

use crate::api::KeyPolicy;
use crate::api::validate::SpecError;
use crate::plugin::error::PluginError;
use crate::plugin::render::Format;

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
    pub(super) fn policy(&self) -> KeyPolicy {
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

/// A refused spec field, named by the flag it came from.
pub(super) fn invalid_flag(error: SpecError) -> PluginError {
    PluginError::Invalid(format!("invalid {} {:?}: {}", flag_of(&error.field), error.value, error.problem))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
