//! The crate's one error type.
//!
//! Every fallible public function returns [`Error`]. Datagram-level variants
//! (`Truncated`, `Checksum`, ...) are what the pure layers report for input
//! that is dropped and counted; argument variants (`InvalidConfig`,
//! `InvalidKey`, ...) are what a caller gets for a bad argument.

use std::io;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in kcp-session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- bad arguments -------------------------------------------------
    /// A configuration value is out of range or inconsistent with another.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// An mtu above [`MAX_PACKET_SIZE`](crate::config::MAX_PACKET_SIZE): kcp-go
    /// v5.7 reads datagrams into 1472-byte buffers, so a longer one would
    /// arrive truncated and fail its CRC/AEAD check (§12).
    #[error(
        "mtu {mtu} exceeds {max}, the largest UDP payload kcp-go v5.7 reads \
         (longer datagrams are truncated by its {max}-byte receive buffers and fail CRC/AEAD); \
         set the mtu to {max} or less"
    )]
    MtuTooLarge {
        /// The mtu asked for.
        mtu: usize,
        /// The largest mtu accepted (1472).
        max: usize,
    },
    /// A key has a length the cipher does not accept.
    #[error("invalid key length {len} for {cipher} (accepted: {accepted})")]
    InvalidKey {
        /// Cipher name.
        cipher: &'static str,
        /// Length given.
        len: usize,
        /// Human-readable list of accepted lengths.
        accepted: &'static str,
    },
    /// A cipher name (kcptun `--crypt`) that is not known.
    #[error("unknown cipher {name:?}; valid names are: {valid}")]
    UnknownCipher {
        /// The name given.
        name: String,
        /// The valid names, comma separated.
        valid: &'static str,
    },
    /// `send` was given an empty buffer (KCP cannot send a zero-length message).
    #[error("cannot send an empty message")]
    EmptyMessage,
    /// A message would need more KCP fragments than the protocol allows.
    #[error("message of {len} bytes needs {fragments} fragments; at most {max} are allowed")]
    MessageTooLarge {
        /// Message length in bytes.
        len: usize,
        /// Fragments it would need.
        fragments: usize,
        /// Maximum fragments: 255 (the 8-bit `frg` field), or for
        /// [`Session::send_msg`](crate::Session::send_msg) the peer's
        /// receive window if smaller, as far as it is known (the largest
        /// window the peer advertised, 32 before anything was heard).
        /// For an OOB datagram, the largest payload in bytes.
        max: usize,
    },
    /// The caller's buffer is too small for the next message or datagram.
    #[error("buffer too small: need {need} bytes, have {have}")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },

    // ---- dropped datagrams (counted, never panics) ----------------------
    /// A datagram or segment is shorter than its headers say it must be.
    #[error("truncated datagram: {0}")]
    Truncated(&'static str),
    /// The CRC32 of a non-AEAD datagram does not match (wrong key or corruption).
    #[error("checksum mismatch")]
    Checksum,
    /// AEAD authentication failed (wrong key, tampering or corruption).
    #[error("authentication failed")]
    Authentication,
    /// A datagram is structurally invalid (unknown command, bad FEC type, ...).
    #[error("malformed datagram: {0}")]
    Malformed(&'static str),
    /// A KCP segment carries a conversation id other than the session's.
    #[error("conversation id mismatch: expected {expected:#010x}, got {got:#010x}")]
    ConvMismatch {
        /// The session's conv.
        expected: u32,
        /// The conv in the segment.
        got: u32,
    },

    // ---- session life --------------------------------------------------
    /// The session or listener was closed.
    #[error("closed")]
    Closed,
    /// A read or write deadline expired.
    #[error("timed out")]
    Timeout,
    /// A non-blocking call (`try_recv_msg`) found nothing ready; it would
    /// have had to wait. Converts to [`io::ErrorKind::WouldBlock`].
    #[error("operation would block")]
    WouldBlock,
    /// No datagram arrived from the peer within the idle timeout.
    #[error("idle timeout: nothing received from the peer in time")]
    IdleTimeout,
    /// A full listener closed this session to make room for a new peer (see
    /// [`ConfigBuilder::max_sessions`](crate::ConfigBuilder::max_sessions)):
    /// its peer had never acknowledged our data, or had been silent for a
    /// while.
    #[error("evicted: the listener's session table was full")]
    Evicted,
    /// A segment was retransmitted too often: the peer is unreachable.
    #[error("dead link: a segment was retransmitted {0} times without an acknowledgement")]
    DeadLink(u32),
    /// An I/O error from the socket.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// A caller-supplied nonce (`Crypt::seal_with_nonce`) has the wrong length.
    #[error("invalid nonce length {len} (expected {expected})")]
    InvalidNonce {
        /// Length given.
        len: usize,
        /// Length the cipher needs (16, 12 for AEAD, 0 for no crypto).
        expected: usize,
    },

    // ---- kcptun layers: smux and Snappy framing (§7.5, §7.6) -------------
    /// The smux peer broke the protocol: wrong version byte, unknown command,
    /// UPD on a v1 session, or a frame length its command does not allow.
    /// Ends the smux session (smux `ErrInvalidProtocol`).
    #[error("smux protocol error: {0}")]
    SmuxProtocol(&'static str),
    /// No smux frame arrived within the keepalive timeout: the peer is gone.
    /// Ends the smux session.
    #[error("smux keepalive timeout: nothing received from the peer in time")]
    SmuxKeepaliveTimeout,
    /// The smux stream id space is used up; open a new session (`ErrGoAway`).
    #[error("smux stream ids exhausted; start a new session")]
    SmuxGoAway,
    /// A v2 peer acknowledged more bytes than were sent on a stream
    /// (`ErrConsumed`). Fails writes on that stream.
    #[error("smux peer consumed more than was sent")]
    SmuxConsumed,
    /// The Snappy framing stream is malformed (bad chunk, CRC-32C mismatch).
    #[error("malformed snappy frame: {0}")]
    SnappyFrame(&'static str),
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::Io(inner) => return io::Error::new(inner.kind(), e),
            Error::Closed => io::ErrorKind::BrokenPipe,
            Error::WouldBlock => io::ErrorKind::WouldBlock,
            Error::Timeout | Error::IdleTimeout => io::ErrorKind::TimedOut,
            Error::DeadLink(_) | Error::Evicted => io::ErrorKind::ConnectionAborted,
            Error::InvalidConfig(_)
            | Error::MtuTooLarge { .. }
            | Error::InvalidKey { .. }
            | Error::UnknownCipher { .. }
            | Error::EmptyMessage
            | Error::MessageTooLarge { .. }
            | Error::BufferTooSmall { .. }
            | Error::InvalidNonce { .. } => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}
