//! What can go wrong in `kubectl apikey`, as one line that says what to do, and the exit code
//! scripts tell the cases apart by.

use std::fmt;
use std::process::ExitCode;

/// Why a command failed. Each variant has its own exit code (see [`PluginError::exit_code`]).
///
/// No variant ever carries a token: messages name keys, Secrets and key IDs only.
#[derive(Debug, PartialEq, Eq)]
pub enum PluginError {
    /// Anything the other variants do not cover: an unexpected API answer, I/O.
    Other(String),
    /// A flag or argument with a bad value, or a spec the API server refused (its schema, or an
    /// admission webhook at once: 422).
    Invalid(String),
    /// No kubeconfig, an unknown context, or an API server that cannot be reached.
    NoCluster(String),
    /// The API server does not know the `keyward.io` resources.
    CrdsMissing,
    /// The API server refused the request (401 or 403): RBAC, or an admission webhook's refusal of
    /// a scope the user may not grant.
    Forbidden(String),
    /// The named object (or Credential token) does not exist.
    NotFound(String),
    /// An object of that name exists already.
    AlreadyExists(String),
    /// The controller refused the key, or the key can no longer be used.
    Unusable(String),
    /// The controller did not finish in time.
    Timeout(String),
    /// The token is not valid: `verify`'s verdict (printed already: `None`), or the issuer's
    /// refusal of it at `exchange` (`invalid_client`).
    TokenRefused(Option<String>),
    /// `exchange`: the issuer refused the request itself (RFC 6749 `invalid_scope`,
    /// `invalid_request`, `invalid_grant`, `unsupported_grant_type`).
    ExchangeRefused(String),
    /// `exchange`: the issuer could not be reached, did not answer in time or as a token
    /// endpoint, or cannot issue yet (`temporarily_unavailable`): worth trying again.
    IssuerUnavailable(String),
    /// The object changed between the read an edit was computed from and its write (409
    /// Conflict on the resourceVersion): nothing was written, so another edit is never lost.
    Conflict(String),
}

impl PluginError {
    /// The process exit code, documented in the README and in `--help`.
    pub fn exit_code(&self) -> u8 {
        match self {
            PluginError::Other(_) => 1,
            PluginError::Invalid(_) => 2,
            PluginError::NoCluster(_) => 3,
            PluginError::CrdsMissing => 4,
            PluginError::Forbidden(_) => 5,
            PluginError::NotFound(_) => 6,
            PluginError::AlreadyExists(_) => 7,
            PluginError::Unusable(_) => 8,
            PluginError::Timeout(_) => 9,
            PluginError::TokenRefused(_) => 10,
            PluginError::ExchangeRefused(_) => 11,
            PluginError::IssuerUnavailable(_) => 12,
            PluginError::Conflict(_) => 13,
        }
    }

    /// Prints the error (when it has something to say) and returns the exit code.
    pub fn report(&self) -> ExitCode {
        if *self != PluginError::TokenRefused(None) {
            eprintln!("error: {self}");
        }
        ExitCode::from(self.exit_code())
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginError::Other(message)
            | PluginError::Invalid(message)
            | PluginError::NoCluster(message)
            | PluginError::Forbidden(message)
            | PluginError::NotFound(message)
            | PluginError::AlreadyExists(message)
            | PluginError::Unusable(message)
            | PluginError::Timeout(message)
            | PluginError::TokenRefused(Some(message))
            | PluginError::ExchangeRefused(message)
            | PluginError::IssuerUnavailable(message)
            | PluginError::Conflict(message) => f.write_str(message),
            PluginError::CrdsMissing => f.write_str(
                "the Keyward CRDs are not installed in this cluster (no keyward.io/v1alpha1 resources): \
                 install them with `kubectl apply -f crds/` or the Helm chart",
            ),
            PluginError::TokenRefused(None) => f.write_str("the token is not valid"),
        }
    }
}

impl std::error::Error for PluginError {}

/// The exit codes as `--help` lists them.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0   success (verify: the token is valid)
  1   any other error
  2   invalid argument, or a spec the API server (or its admission webhook) refused
  3   no cluster: no kubeconfig, unknown context, or the API server cannot be reached
  4   the Keyward CRDs are not installed
  5   forbidden or unauthorized, or a scope you may not grant (admission webhook)
  6   not found
  7   already exists
  8   the key cannot be used: the controller refused it (Failed), or it expired
  9   timed out waiting for the controller
  10  verify: the token is not valid; exchange: the issuer refused the token (invalid_client)
  11  exchange: the issuer refused the request (invalid_scope, invalid_request, ...)
  12  exchange: the issuer cannot be reached, timed out, or cannot issue yet
  13  the key changed while it was being edited (someone else wrote it): nothing was written; run again";

pub type Result<T, E = PluginError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_has_its_own_exit_code_and_the_help_lists_each() {
        let all = [
            PluginError::Other(String::new()),
            PluginError::Invalid(String::new()),
            PluginError::NoCluster(String::new()),
            PluginError::CrdsMissing,
            PluginError::Forbidden(String::new()),
            PluginError::NotFound(String::new()),
            PluginError::AlreadyExists(String::new()),
            PluginError::Unusable(String::new()),
            PluginError::Timeout(String::new()),
            PluginError::TokenRefused(None),
            PluginError::ExchangeRefused(String::new()),
            PluginError::IssuerUnavailable(String::new()),
            PluginError::Conflict(String::new()),
        ];
        let codes: std::collections::BTreeSet<u8> = all.iter().map(PluginError::exit_code).collect();
        assert_eq!(codes.len(), all.len(), "two errors share an exit code");
        for code in codes {
            assert!(
                EXIT_CODES_HELP.lines().any(|line| line.trim_start().starts_with(&format!("{code} "))),
                "exit code {code} is not in the help"
            );
        }
    }
}
