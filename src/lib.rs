//! `obo-native`: the OAuth 2.0 On-Behalf-Of token exchange for Node.js.
//!
//! The core (every module but the napi layer at the end of this file) knows
//! nothing of Node.js and is tested with `cargo test --no-default-features`.

pub mod cache;
pub mod claims;
pub mod config;
pub mod credentials;
pub mod engine;
pub mod error;
pub mod events;
pub mod flight;
pub mod generations;
pub mod grant;
pub mod http;
pub mod key;
pub mod outcome;
pub mod redis_tier;
pub mod retry;
pub mod routing;
pub mod runtime;
pub mod session;
pub mod shared;
pub mod stats;
pub mod throttle;
pub mod token_exchange;

#[cfg(feature = "node")]
mod lent_string;
#[cfg(feature = "node")]
mod node;

/// Only in the addon: see Cargo.toml for why.
#[cfg(feature = "node")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(test)]
mod fuzz;
