//! kcptun's layers above a session: [`smux`] stream multiplexing and
//! [`comp`] Snappy framing, plus kcptun's per-stream [`qpp`] Quantum
//! Permutation Pad. They run over any byte stream.
//!
//! With the feature `tunnel`, also kcptun itself as a library: `Client` and
//! `Server` a Rust program can embed, configured by `config` from kcptun's
//! flags or JSON. The binary `kcptun-rs` is a thin shell over them.
#![cfg_attr(
    feature = "tunnel",
    doc = "\n\nSee [`Client`], [`Server`] and [`config`]."
)]

pub mod comp;
pub mod qpp;
pub mod smux;

#[cfg(feature = "tunnel")]
pub mod client;
#[cfg(feature = "tunnel")]
pub mod config;
#[cfg(feature = "tunnel")]
pub mod log;
#[cfg(feature = "tunnel")]
pub(crate) mod pool;
#[cfg(feature = "tunnel")]
pub mod pump;
#[cfg(feature = "tunnel")]
pub mod server;

#[cfg(feature = "tunnel")]
pub use client::Client;
#[cfg(feature = "tunnel")]
pub use server::Server;

/// Why a tunnel cannot start or stopped.
#[cfg(feature = "tunnel")]
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// A malformed command line or JSON config.
    #[error("{0}")]
    Usage(String),
    /// A flag with a value kcptun would also reject, or one out of range.
    #[error("invalid --{flag} {reason}")]
    InvalidFlag {
        /// The flag (kcptun's name).
        flag: &'static str,
        /// What is wrong with the value.
        reason: String,
    },
    /// A kcptun flag this tunnel does not implement.
    #[error("{flag} is not supported: {reason}")]
    Refused {
        /// The flag as written on kcptun's command line.
        flag: &'static str,
        /// Why.
        reason: String,
    },
    /// Binding, opening a file, or another I/O failure.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The session layer refused something.
    #[error("{what}: {source}")]
    Session {
        /// What was being done.
        what: String,
        /// The cause.
        source: crate::Error,
    },
}
