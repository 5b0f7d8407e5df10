//! Commands that make keys and show their token once (see `create`).

mod create;

pub use create::*;
