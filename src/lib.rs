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
//! Without an async runtime, [`blocking`] offers the same sessions over std
//! sockets and threads (`std::io::Read`/`Write`, a blocking listener).
//!
//! Everything below the session is pure, deterministic code: it takes bytes
//! and a timestamp and returns bytes and the next deadline. No sockets, no
//! clocks, no tasks. That is what makes it fuzzable, testable over a
//! simulated lossy network, and checkable against Go byte for byte.
//!
//! ## Dial and listen
//!
//! ```
//! use kcp_session::{Config, Listener, Mode, Session};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> kcp_session::Result<()> {
//! // kcptun-style settings: AES-256 from a passphrase, FEC 10/3, "fast" mode.
//! let config = Config::builder()
//!     .crypt_kcptun("aes", "it's a secrect")
//!     .fec(10, 3)
//!     .mode(Mode::Fast)
//!     .build()?;
//!
//! let listener = Listener::listen("127.0.0.1:0", &config).await?;
//! let addr = listener.local_addr();
//! tokio::spawn(async move {
//!     // Echo server: every accepted session gets its bytes back.
//!     while let Ok(mut s) = listener.accept().await {
//!         tokio::spawn(async move {
//!             let mut buf = vec![0u8; 4096];
//!             // Until EOF (Ok(0)) or an error.
//!             while let Ok(n @ 1..) = s.read(&mut buf).await {
//!                 if s.write_all(&buf[..n]).await.is_err() {
//!                     break;
//!                 }
//!             }
//!         });
//!     }
//! });
//!
//! let mut session = Session::dial(addr, &config).await?;
//! session.write_all(b"hello over kcp").await?;
//! let mut echo = [0u8; 14];
//! session.read_exact(&mut echo).await?;
//! assert_eq!(&echo, b"hello over kcp");
//! println!("rtt {} ms, {}", session.srtt(), session.stats());
//! # Ok(())
//! # }
//! ```
//!
//! ## kcp-go v5.7 API, and ours
//!
//! kcp-go v5.7 (§12) added these to `UDPSession`; here is where each one is,
//! in Rust's idiom:
//!
//! | kcp-go v5.7 | kcp-session |
//! |---|---|
//! | `TryRead(b)`: `(0, nil)` when nothing is ready | [`Session::try_read`] / [`OwnedReadHalf::try_read`]: `Err` of kind `WouldBlock` when nothing is ready (tokio's convention), data first and then the session's error once it has ended; for messages [`Session::try_recv_msg`] ([`Error::WouldBlock`]) |
//! | `SetReadNotify(fn)` | [`Session::set_read_notify`] / [`clear_read_notify`](Session::clear_read_notify) (runs under the session lock, as in Go); in async code [`Session::readable`]`.await`, which any number of tasks may wait on |
//! | `ResetRTO()` | [`Session::reset_rto`]; on the pure engine [`Kcp::reset_rto`](kcp::Kcp::reset_rto) |
//! | `SetRateLimit(bps)`: limits application bytes accepted by `Write` | [`Session::set_rate_limit`], [`ConfigBuilder::rate_limit`]: the same (v5.6 paced datagrams instead; see [`rate`]) |
//! | `SetBucket(*ratelimit.Bucket)`: a caller's bucket, shareable | [`RateLimiter`] (clones share one bucket): [`Session::set_rate_limiter`] at run time, or [`ConfigBuilder::rate_limiter`] for every session of a config, i.e. a whole [`Listener`] |
//! | build tag `kcp_no_snmp` | cargo feature `snmp`, on by default: `--no-default-features` compiles counting out and every [`Snmp`] field reads 0 (see [`stats`]) |
//! | `PacketPusher` (feed datagrams from elsewhere) | implement [`transport::Transport`] (any datagram source and sink) and use [`Session::with_transport`] / [`Listener::with_transport`]; see `examples/custom_transport.rs` |
//!
//! Empty writes complete with `Ok(0)` and flush nothing, as in v5.7.
//!
//! ## Observability
//!
//! Counters: [`Snmp`] (kcp-go's SNMP, process-wide, per session and per
//! listener). Logs: the cargo feature `tracing` gives each session and
//! listener a span and reports opens, closes with their [`CloseReason`](connection::CloseReason),
//! dead links, idle timeouts, evictions, FEC retunes and (rate-limited)
//! dropped datagrams, with per-datagram and per-segment events at `trace`
//! level; without the feature none of it is compiled.
// `unsafe` lives only in the small modules that allow it (crypt::aesni,
// crypt::gcm, crypt::salsa, fec::gf, transport::batch); each unsafe fn documents
// its contract in a `# Safety` section (clippy.toml makes clippy check
// private items too) and each unsafe block says why it holds.
#![deny(unsafe_code)]
#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

// The tree shows the layers: `proto/` is the pure core, `runtime/` the
// shells, `transport/` the datagram transports, `tunnel/` kcptun's layers
// above a session. Public paths stay flat (`kcp_session::kcp`,
// `kcp_session::session`, ...). The datagram codec and the batched socket
// I/O are internals; fuzz targets and codec tests reach the codec with the
// `testing` feature (as quinn-proto exposes its fuzzing hooks behind a cfg).
pub mod config;
pub mod error;
mod proto;
mod runtime;
pub mod stats;
#[cfg(feature = "testing")]
pub mod testing;
mod trace;
pub mod transport;
pub mod tunnel;

#[cfg(feature = "testing")]
pub use proto::codec;
#[cfg(not(feature = "testing"))]
pub(crate) use proto::codec;
pub(crate) use proto::endpoint;
pub use proto::{connection, crypt, fec, kcp, rate};
pub use runtime::{blocking, listener, session};
pub use tunnel::{comp, qpp, smux};

pub use config::{
    Config, ConfigBuilder, Congestion, CryptSpec, Mode, NoDelay, StreamMode, UdpOffload,
};
pub use error::{Error, Result};
pub use kcp::{RttSamples, TimeoutResend};
pub use listener::Listener;
pub use rate::RateLimiter;
pub use session::{Origin, OwnedReadHalf, OwnedWriteHalf, Session};
pub use stats::Snmp;

/// Compiles the README's code blocks as doctests, so the README cannot drift from the API.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
