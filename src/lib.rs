//! Keyward: API keys as Kubernetes custom resources.

pub mod api;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod duration;
pub mod error;
pub mod exchange;
pub mod http;
pub mod judge;
pub mod logging;
pub mod metrics;
pub mod plugin;
pub mod retry;
pub mod scope;
pub mod signing;
pub mod tls;
pub mod token;
pub mod usage;
pub mod verifier;
pub mod watch;
pub mod webhook;

pub use error::{Error, Result};
