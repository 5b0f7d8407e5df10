//! Shared test support, by concern: the API servers and their clients ([`cluster`]), a namespace
//! per test and what tests do in it ([`namespace`]), tokens as tests see them ([`tokens`]), the
//! `keyward` processes tests start ([`process`]) and the HTTP they speak to them ([`http`]),
//! commands run to their end such as `kubectl apikey` ([`command`]), the webhook registered for a
//! test ([`webhook`]), and waits that end on a condition or fail at a deadline ([`wait`]).
#![allow(dead_code)]

pub mod cluster;
pub mod command;
pub mod http;
pub mod namespace;
pub mod process;
pub mod tokens;
pub mod wait;
pub mod webhook;

// What most tests use, at `support::`; a test binary that uses none of one is fine.
#[allow(unused_imports)]
pub use cluster::{OwnControlPlane, bare_kubeconfig, client, client_of, control_plane_dir, user_kubeconfig};
#[allow(unused_imports)]
pub use http::{HttpResponse, http, sample};
#[allow(unused_imports)]
pub use namespace::{TestNamespace, create_keys, key, token_states, wait_all_active};
#[allow(unused_imports)]
pub use process::Operator;
#[allow(unused_imports)]
pub use tokens::{TokenHistory, assert_tokens_match_status, token_in};
#[allow(unused_imports)]
pub use wait::{DEADLINE, wait_for};
