//! smux stream multiplexing, wire-compatible with `github.com/xtaci/smux`
//! v1 and v2 as kcptun uses it (§7.6).
//!
//! A [`Session`] runs over any `AsyncRead + AsyncWrite` byte stream (a KCP
//! `crate::session::Session`, usually behind [`crate::comp::CompStream`], or
//! an in-memory pipe in tests). It spawns three tokio tasks: a reader that
//! demultiplexes frames into per-stream buffers, a writer that drains one
//! bounded frame queue, and (unless disabled) a keepalive timer. Streams are
//! tokio `AsyncRead + AsyncWrite`; `poll_shutdown` sends FIN.
//!
//! ```text
//! frame: version(1) | cmd(1) | length u16 LE | stream id u32 LE | payload
//! cmds:  SYN 0, FIN 1, PSH 2, NOP 3, UPD 4 (v2: consumed u32, window u32)
//! ```
//!
//! Memory is bounded everywhere: received data is limited by the session
//! receive budget (`max_receive_buffer`, kcptun's `smuxbuf`) and, in v2, by
//! the per-stream window the peer honours (`max_stream_buffer`, kcptun's
//! `streambuf`; a held stream may use its window past the budget, so
//! windows cannot deadlock across streams: `docs/wire.md` §7.6); outgoing frames wait in one queue of about 64 KiB; the
//! accept backlog holds at most 1024 streams (smux's `defaultAcceptBacklog`).

mod frame;
mod session;
mod stream;

use std::time::Duration;

use crate::error::{Error, Result};

pub use frame::{
    FrameHeader, CMD_FIN, CMD_NOP, CMD_PSH, CMD_SYN, CMD_UPD, HEADER_SIZE, INITIAL_PEER_WINDOW,
    MAX_FRAME_SIZE, UPD_SIZE,
};
pub use session::Session;
pub use stream::Stream;

/// smux protocol version; both ends must use the same one (§7.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// Version 1: no per-stream flow control.
    V1,
    /// Version 2: UPD frames carry per-stream consumed counts and windows.
    V2,
}

impl Version {
    /// The version byte on the wire.
    pub fn byte(self) -> u8 {
        match self {
            Version::V1 => 1,
            Version::V2 => 2,
        }
    }

    /// Parses kcptun's `smuxver` value.
    pub fn from_number(n: u64) -> Result<Version> {
        match n {
            1 => Ok(Version::V1),
            2 => Ok(Version::V2),
            _ => Err(Error::InvalidConfig(format!(
                "smux version {n}: only 1 and 2 exist"
            ))),
        }
    }
}

/// Which end of the session this is: it decides stream id parity (§7.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Opens odd stream ids 3, 5, 7, ...
    Client,
    /// Opens even stream ids 2, 4, 6, ...
    Server,
}

/// Keepalive policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// No NOP frames, no liveness check.
    Disabled,
    /// Send NOP every `interval`; end the session with
    /// [`Error::SmuxKeepaliveTimeout`] if a whole `timeout` period passes
    /// with no frame from the peer (unless the receive budget is exhausted,
    /// i.e. we are deliberately not reading).
    Enabled {
        /// Time between NOP frames (kcptun `keepalive`).
        interval: Duration,
        /// Liveness period (smux default 30 s, kcptun leaves it).
        timeout: Duration,
    },
}

/// smux session settings, named as smux's `Config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Protocol version.
    pub version: Version,
    /// Keepalive policy.
    pub keep_alive: KeepAlive,
    /// Largest PSH payload sent (≤ 65535).
    pub max_frame_size: usize,
    /// Session receive budget: bytes received but not yet read by any stream
    /// before the reader stops reading the connection.
    pub max_receive_buffer: usize,
    /// v2 per-stream window advertised to the peer.
    pub max_stream_buffer: usize,
}

impl Default for Config {
    /// smux's `DefaultConfig()`: v1, keepalive 10 s / 30 s, frame 32768,
    /// receive 4 MiB, stream 64 KiB.
    fn default() -> Config {
        Config {
            version: Version::V1,
            keep_alive: KeepAlive::Enabled {
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(30),
            },
            max_frame_size: 32768,
            max_receive_buffer: 4_194_304,
            max_stream_buffer: 65536,
        }
    }
}

impl Config {
    /// kcptun's defaults (§7.4): v2, keepalive 10 s / 30 s, frame 8192,
    /// smuxbuf 4 MiB, streambuf 2 MiB.
    pub fn kcptun() -> Config {
        Config {
            version: Version::V2,
            max_frame_size: 8192,
            max_receive_buffer: 4_194_304,
            max_stream_buffer: 2_097_152,
            ..Config::default()
        }
    }

    /// smux's `VerifyConfig` rules.
    pub fn verify(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidConfig(format!("smux: {m}")));
        if let KeepAlive::Enabled { interval, timeout } = self.keep_alive {
            if interval.is_zero() {
                return bad("keep-alive interval must be positive");
            }
            if timeout < interval {
                return bad("keep-alive timeout must not be shorter than the interval");
            }
        }
        if self.max_frame_size == 0 || self.max_frame_size > MAX_FRAME_SIZE {
            return bad("max frame size must be 1..=65535");
        }
        if self.max_receive_buffer == 0 || self.max_receive_buffer > i32::MAX as usize {
            return bad("max receive buffer must be 1..=2147483647");
        }
        if self.max_stream_buffer == 0 || self.max_stream_buffer > i32::MAX as usize {
            return bad("max stream buffer must be 1..=2147483647");
        }
        if self.max_stream_buffer > self.max_receive_buffer {
            return bad("max stream buffer must not be larger than max receive buffer");
        }
        Ok(())
    }
}
