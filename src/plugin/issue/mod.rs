//! Commands that make keys and show their token once: `create`, `credential create`,
//! `credential add-token`, and `credential remove-token`, which takes one away.
//!
//! The token is read from its Secret after the controller has issued it, checked against the
//! hash in status, printed on stdout and nowhere else.
//!
//! One file per step: `flags` (the arguments), `create` (build, check and send the key or the
//! token change), `wait` (until the controller has issued the token) and `reveal` (show it).

mod create;
mod flags;
mod reveal;
mod wait;

use jiff::Timestamp;

pub use create::{add_token, create_apikey, create_credential, remove_token};
pub use flags::{
    AddTokenArgs, CreateArgs, CreateCredentialArgs, DryRun, ExpiryArgs, PolicyArgs, RemoveTokenArgs, RevealArgs,
};

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
