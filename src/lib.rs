//! # kcp-session
//!
//! Reliable, encrypted, loss-tolerant sessions over UDP that speak the exact
//! wire format of Go's [kcp-go](https://github.com/xtaci/kcp-go) (v5), and so
//! talk to kcptun and every other kcp-go peer.
//!
//! ## Layers
//!
//! ```text
//! application bytes  <->  Session (tokio AsyncRead/AsyncWrite) / Listener
//!                    <->  kcp    KCP ARQ engine (sans-IO state machine, time passed in)
//!                    <->  fec    Reed-Solomon shards, 0xF1 data / 0xF2 parity, seqid
//!                    <->  crypt  16-byte nonce + CRC32, CFB ciphers, Salsa20, AEAD
//!                    <->  UDP socket
//! ```
//!
//! Everything below the session is pure, deterministic code: it takes bytes
//! and a timestamp and returns bytes and the next deadline. No sockets, no
//! clocks, no tasks. That is what makes it fuzzable, testable over a
//! simulated lossy network, and checkable against Go byte for byte.
#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod codec;
pub mod comp;
pub mod config;
pub mod crypt;
pub mod error;
pub mod fec;
pub mod io;
pub mod kcp;
pub mod listener;
pub mod session;
pub mod smux;
pub mod stats;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{Error, Result};
