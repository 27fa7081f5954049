//! Session and listener configuration: kcp-go's knobs, kcptun's presets.
//!
//! A [`Config`] is built with [`Config::builder`] (or taken from a preset such
//! as [`Config::kcptun`]) and checked by [`ConfigBuilder::build`], which
//! returns [`Error::InvalidConfig`] for values that cannot work (an mtu too
//! small for the headers, zero windows, more than 256 FEC shards, ...).
//!
//! Wire-visible defaults are kcp-go's (`DialWithOptions` with no cipher and
//! no FEC): mtu 1400, windows 32/32, `NoDelay(0, 100, 0, 0)`, message mode,
//! no write delay, no ack-no-delay (§5.1, §6.3).
//!
//! The lifetime defaults are not kcp-go's: kcp-go keeps a session whose peer
//! died or closed (there is no close on the wire) forever, and a listener
//! accepts every new address. Here every session ends after
//! [`DEFAULT_IDLE_TIMEOUT`] without a datagram from its peer
//! ([`Error::IdleTimeout`]) or when a segment is due for transmission
//! [`DEFAULT_DEAD_LINK`]` + 1` ([`Error::DeadLink`]), and a listener holds at
//! most [`DEFAULT_MAX_SESSIONS`] sessions, evicting unproven or silent ones
//! for newcomers (README, "Running a public server"). Nothing of this is
//! visible on the wire except that a silent peer's session is gone when it
//! speaks again. Set `None` to get kcp-go's behaviour.

use std::fmt;
use std::time::Duration;

use crate::crypt::{CipherKind, Crypt};
use crate::error::{Error, Result};
use crate::kcp::{RttSamples, TimeoutResend};
use crate::rate::RateLimiter;

/// Largest UDP payload we receive: kcp-go v5.6's `mtuLimit`, the size of its
/// receive buffers and of what a v5.6 peer at mtu 1500 sends (§1.9). Our
/// receive buffers are this long so such peers are still heard.
pub const MTU_LIMIT: usize = 1500;

/// Most receive shards a listener may run
/// ([`ConfigBuilder::listener_shards`]).
pub const MAX_LISTENER_SHARDS: usize = 64;
/// Largest UDP payload we send and the largest mtu accepted: kcp-go v5.7's
/// `maxPacketSize` (§12). v5.7 reads into 1472-byte buffers, so a longer
/// datagram reaches it truncated and fails its CRC/AEAD check; 1472 is also
/// what fits an IPv4 packet in a 1500-byte Ethernet frame without
/// fragmentation. Every v5.6 and v5.7 peer accepts datagrams of this size.
pub const MAX_PACKET_SIZE: usize = 1472;
/// kcp-go's default mtu (`IKCP_MTU_DEF`).
pub const DEFAULT_MTU: usize = 1400;
/// kcptun's default mtu (§7.4).
pub const KCPTUN_MTU: usize = 1350;
/// kcp-go's default send window (`IKCP_WND_SND`).
pub const DEFAULT_SND_WND: u32 = 32;
/// kcp-go's default receive window (`IKCP_WND_RCV`).
pub const DEFAULT_RCV_WND: u32 = 32;
/// kcp-go's listener accept backlog (`acceptBacklog`).
pub const DEFAULT_ACCEPT_BACKLOG: usize = 128;
/// Default idle timeout: a session ends with [`Error::IdleTimeout`] after this
/// long without a valid datagram from its peer. As long as smux's default
/// keepalive timeout, so kcptun peers (keepalive every 10 s) never hit it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default dead-link threshold: kcp-go's `IKCP_DEADLINK`, the transmission
/// count at which kcp-go marks (but never closes) a dead link.
pub const DEFAULT_DEAD_LINK: u32 = crate::kcp::IKCP_DEADLINK;
/// Default cap on a listener's sessions (accepted or in the backlog). With
/// the default windows (32/32) one session holds at most about 0.3 MB
/// (every queue full), so a full table is bounded by roughly 1.2 GB in the
/// worst case and far less in practice (README, "Running a public server").
pub const DEFAULT_MAX_SESSIONS: usize = 4096;
/// Reed-Solomon over GF(2^8) cannot have more shards than this (§4.1).
pub const MAX_FEC_SHARDS: usize = 256;
/// kcptun's default passphrase (sic, §7.2).
pub const KCPTUN_DEFAULT_KEY: &str = "it's a secrect";

/// KCP header size; the KCP mtu must leave room for at least one payload byte.
const IKCP_OVERHEAD: usize = 24;
/// `NoDelay` clamps the interval to this range (§5.1).
const IKCP_INTERVAL_MIN: u32 = 10;
const IKCP_INTERVAL_MAX: u32 = 5000;

/// Whether the sender packs a byte stream or keeps message boundaries (§5.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamMode {
    /// kcp-go's default: every write (split at mss) is a separate KCP message.
    #[default]
    Message,
    /// Bytes are packed into full segments (kcptun sets this).
    Stream,
}

/// UDP segmentation offload on Linux (`UDP_SEGMENT` sends, `UDP_GRO`
/// receives) for the sockets a [`Session`](crate::session::Session) or
/// [`Listener`](crate::listener::Listener) makes from a config. Offload only
/// changes how many datagrams one system call moves: the datagrams on the
/// wire are the same bytes with the same boundaries either way, so a kcp-go
/// peer cannot tell. It never sets the don't-fragment bit (some offload
/// stacks force it; kcp-go does not). Elsewhere, and on kernels without it,
/// both settings behave as [`Off`](Self::Off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UdpOffload {
    /// Use what the kernel supports, probed per socket, and fall back to
    /// plain `sendmmsg` for good on a socket whose path refuses a segmented
    /// send. GSO on every socket; GRO only on listener sockets (a dialed
    /// session keeps its small receive buffers; see
    /// [`UdpTransport`](crate::transport::UdpTransport)).
    #[default]
    Auto,
    /// Plain `sendmmsg`/`recvmmsg`, one datagram per buffer.
    Off,
}

/// Congestion window on or off (`nc` of `NoDelay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Congestion {
    /// Classic KCP congestion window (`nc = 0`, kcp-go's default).
    #[default]
    On,
    /// No congestion window, only the send and remote windows (`nc = 1`).
    Off,
}

/// KCP's `NoDelay(nodelay, interval, resend, nc)` (§5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoDelay {
    /// `nodelay != 0`: minimum RTO 30 ms instead of 100 ms and gentler RTO backoff.
    pub nodelay: bool,
    /// Flush interval in milliseconds; KCP clamps it to 10..=5000.
    pub interval: u32,
    /// Fast-retransmit threshold in duplicate ACKs; 0 disables fast retransmit.
    pub resend: u32,
    /// Congestion window on or off.
    pub congestion: Congestion,
}

impl Default for NoDelay {
    fn default() -> Self {
        NoDelay {
            nodelay: false,
            interval: 100,
            resend: 0,
            congestion: Congestion::On,
        }
    }
}

/// kcptun's `--mode` presets (§7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `NoDelay(0, 40, 2, 1)`.
    Normal,
    /// `NoDelay(0, 30, 2, 1)`, kcptun's default.
    Fast,
    /// `NoDelay(1, 20, 2, 1)`.
    Fast2,
    /// `NoDelay(1, 10, 2, 1)`.
    Fast3,
}

impl Mode {
    /// The `NoDelay` parameters of this preset.
    pub fn nodelay(self) -> NoDelay {
        let (nodelay, interval) = match self {
            Mode::Normal => (false, 40),
            Mode::Fast => (false, 30),
            Mode::Fast2 => (true, 20),
            Mode::Fast3 => (true, 10),
        };
        NoDelay {
            nodelay,
            interval,
            resend: 2,
            congestion: Congestion::Off,
        }
    }

    /// Parses kcptun's mode names (`normal`, `fast`, `fast2`, `fast3`).
    pub fn from_name(name: &str) -> Result<Mode> {
        match name {
            "normal" => Ok(Mode::Normal),
            "fast" => Ok(Mode::Fast),
            "fast2" => Ok(Mode::Fast2),
            "fast3" => Ok(Mode::Fast3),
            other => Err(Error::InvalidConfig(format!(
                "unknown mode {other:?}; valid modes are normal, fast, fast2, fast3"
            ))),
        }
    }
}

/// How datagrams are protected (§1.2, §2, §7.2).
#[derive(Clone, PartialEq, Eq, Default)]
pub enum CryptSpec {
    /// No crypto header at all (kcp-go `block == nil`, kcptun `null`).
    #[default]
    Null,
    /// A cipher with a raw key (kcp-go's `New*BlockCrypt(key)`).
    Cipher {
        /// The cipher.
        kind: CipherKind,
        /// The key bytes, length as the cipher requires.
        key: Vec<u8>,
    },
    /// kcptun's cipher name and passphrase: PBKDF2-SHA1 key derivation, then the
    /// per-name key truncation (§7.2).
    Kcptun {
        /// kcptun `--crypt` name (`aes`, `aes-128`, `salsa20`, `none`, `null`, ...).
        name: String,
        /// kcptun `--key`.
        passphrase: String,
    },
}

impl fmt::Debug for CryptSpec {
    // Keys and passphrases stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CryptSpec::Null => f.write_str("Null"),
            CryptSpec::Cipher { kind, key } => f
                .debug_struct("Cipher")
                .field("kind", kind)
                .field("key_len", &key.len())
                .finish(),
            CryptSpec::Kcptun { name, .. } => f
                .debug_struct("Kcptun")
                .field("name", name)
                .finish_non_exhaustive(),
        }
    }
}

impl CryptSpec {
    /// Builds the datagram cipher this spec describes.
    pub fn build(&self) -> Result<Crypt> {
        match self {
            CryptSpec::Null => Crypt::new(CipherKind::Null, &[]),
            CryptSpec::Cipher { kind, key } => Crypt::new(*kind, key),
            CryptSpec::Kcptun { name, passphrase } => Crypt::from_kcptun(name, passphrase),
        }
    }
}

/// How the sessions of a config limit their writes (§12, [`crate::rate`]).
#[derive(Clone, Debug, Default)]
enum RateLimit {
    #[default]
    Off,
    /// Each session gets a bucket of its own at this rate (`SetRateLimit`).
    PerSession(u32),
    /// Every session draws from this one bucket (`SetBucket`).
    Shared(RateLimiter),
}

/// The values a [`ConfigBuilder`] collects and a [`Config`] keeps, in one place.
#[derive(Clone, Debug)]
struct Settings {
    crypt: CryptSpec,
    data_shards: usize,
    parity_shards: usize,
    mtu: usize,
    snd_wnd: u32,
    rcv_wnd: u32,
    nodelay: NoDelay,
    stream_mode: StreamMode,
    write_delay: bool,
    ack_nodelay: bool,
    dscp: Option<u8>,
    recv_buffer: Option<usize>,
    send_buffer: Option<usize>,
    rate_limit: RateLimit,
    idle_timeout: Option<Duration>,
    dead_link: Option<u32>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    accept_backlog: usize,
    max_sessions: Option<usize>,
    listener_shards: usize,
    udp_offload: UdpOffload,
    rtt_samples: RttSamples,
    timeout_resend: TimeoutResend,
}

/// Everything a [`Session`](crate::session::Session) or
/// [`Listener`](crate::listener::Listener) needs. Build one with
/// [`Config::builder`]; every `Config` in existence has passed
/// [`Config::validate`].
#[derive(Clone)]
pub struct Config {
    s: Settings,
    /// Built once, cloned into every session: kcptun's PBKDF2 is slow.
    pub(crate) crypt: Crypt,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config").field("settings", &self.s).finish()
    }
}

impl Default for Config {
    /// kcp-go's defaults: no crypto, no FEC, mtu 1400, windows 32/32.
    fn default() -> Self {
        Config::builder()
            .build()
            .expect("the default configuration is valid")
    }
}

impl Config {
    /// A builder starting from kcp-go's defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            s: Settings {
                crypt: CryptSpec::Null,
                data_shards: 0,
                parity_shards: 0,
                mtu: DEFAULT_MTU,
                snd_wnd: DEFAULT_SND_WND,
                rcv_wnd: DEFAULT_RCV_WND,
                nodelay: NoDelay::default(),
                stream_mode: StreamMode::Message,
                write_delay: false,
                ack_nodelay: false,
                dscp: None,
                recv_buffer: None,
                send_buffer: None,
                rate_limit: RateLimit::Off,
                idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
                dead_link: Some(DEFAULT_DEAD_LINK),
                read_timeout: None,
                write_timeout: None,
                accept_backlog: DEFAULT_ACCEPT_BACKLOG,
                max_sessions: Some(DEFAULT_MAX_SESSIONS),
                listener_shards: 1,
                udp_offload: UdpOffload::Auto,
                rtt_samples: RttSamples::LatestTransmission,
                timeout_resend: TimeoutResend::ProbeWhileSilent,
            },
        }
    }

    /// A builder preset like kcptun's server side (§7.4): AES-256 with the
    /// default passphrase, FEC 10/3, mtu 1350, windows 1024/1024, stream mode,
    /// 4 MiB socket buffers and the given mode.
    ///
    /// No dead-link rule: kcptun finds dead tunnels with smux keepalives
    /// (30 s), and in the fast modes 20 transmissions pass within about 3.5 s,
    /// so the default rule would end every tunnel on a short outage. The idle
    /// timeout (30 s, smux's keepalive timeout) still reclaims dead peers.
    pub fn kcptun(mode: Mode) -> ConfigBuilder {
        Config::builder()
            .dead_link(None)
            .crypt_kcptun("aes", KCPTUN_DEFAULT_KEY)
            .fec(10, 3)
            .mtu(KCPTUN_MTU)
            .window(1024, 1024)
            .mode(mode)
            .stream_mode(StreamMode::Stream)
            .socket_buffers(4 * 1024 * 1024)
    }

    /// A builder holding this configuration's values, to derive a variant.
    pub fn to_builder(&self) -> ConfigBuilder {
        ConfigBuilder { s: self.s.clone() }
    }

    /// Re-checks every value (see [`ConfigBuilder::build`] for the rules).
    pub fn validate(&self) -> Result<()> {
        self.to_builder().check(&self.crypt)
    }

    /// The crypto spec.
    pub fn crypt_spec(&self) -> &CryptSpec {
        &self.s.crypt
    }
    /// The datagram cipher built from the spec.
    pub fn crypt(&self) -> &Crypt {
        &self.crypt
    }
    /// FEC `(data_shards, parity_shards)`; FEC is on only when both are non-zero.
    pub fn fec(&self) -> (usize, usize) {
        (self.s.data_shards, self.s.parity_shards)
    }
    /// Whether this side sends FEC-encoded datagrams.
    pub fn fec_enabled(&self) -> bool {
        self.s.data_shards > 0 && self.s.parity_shards > 0
    }
    /// The configured mtu: the largest UDP payload sent.
    pub fn mtu(&self) -> usize {
        self.s.mtu
    }
    /// Bytes in front of the KCP bytes: crypto header plus FEC header (§1.2).
    pub fn header_len(&self) -> usize {
        header_len(&self.crypt, self.fec_enabled())
    }
    /// The mtu handed to KCP (§1.9): mtu − header − AEAD tag.
    pub fn kcp_mtu(&self) -> usize {
        kcp_mtu(self.s.mtu, &self.crypt, self.fec_enabled())
    }
    /// `(snd_wnd, rcv_wnd)` in segments.
    pub fn window(&self) -> (u32, u32) {
        (self.s.snd_wnd, self.s.rcv_wnd)
    }
    /// KCP `NoDelay` parameters.
    pub fn nodelay(&self) -> NoDelay {
        self.s.nodelay
    }
    /// Stream or message mode.
    pub fn stream_mode(&self) -> StreamMode {
        self.s.stream_mode
    }
    /// kcp-go `SetWriteDelay`.
    pub fn write_delay(&self) -> bool {
        self.s.write_delay
    }
    /// kcp-go `SetACKNoDelay`.
    pub fn ack_nodelay(&self) -> bool {
        self.s.ack_nodelay
    }
    /// DSCP applied to owned sockets.
    pub fn dscp(&self) -> Option<u8> {
        self.s.dscp
    }
    /// `(receive, send)` socket buffer sizes applied to owned sockets.
    pub fn socket_buffers(&self) -> (Option<usize>, Option<usize>) {
        (self.s.recv_buffer, self.s.send_buffer)
    }
    /// Write rate limit in bytes per second (0: unlimited): the per-session
    /// rate of [`ConfigBuilder::rate_limit`], or the rate of the shared
    /// [`rate_limiter`](Self::rate_limiter).
    pub fn rate_limit(&self) -> u32 {
        match &self.s.rate_limit {
            RateLimit::Off => 0,
            RateLimit::PerSession(bps) => *bps,
            RateLimit::Shared(l) => l.rate(),
        }
    }
    /// The limiter every session made with this config shares, if one was
    /// given ([`ConfigBuilder::rate_limiter`]).
    pub fn rate_limiter(&self) -> Option<&RateLimiter> {
        match &self.s.rate_limit {
            RateLimit::Shared(l) => Some(l),
            _ => None,
        }
    }
    /// The limiter a new session starts with.
    pub(crate) fn session_limiter(&self) -> Option<RateLimiter> {
        match &self.s.rate_limit {
            RateLimit::Off => None,
            RateLimit::PerSession(bps) => RateLimiter::new(*bps).ok(),
            RateLimit::Shared(l) => Some(l.clone()),
        }
    }
    /// Idle timeout: the session ends with [`Error::IdleTimeout`] when nothing
    /// arrives from the peer for this long.
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.s.idle_timeout
    }
    /// Dead-link threshold: the session ends with [`Error::DeadLink`] when a
    /// segment transmitted this many times is due again without an ACK.
    pub fn dead_link(&self) -> Option<u32> {
        self.s.dead_link
    }
    /// Default read timeout of new sessions.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.s.read_timeout
    }
    /// Default write timeout of new sessions.
    pub fn write_timeout(&self) -> Option<Duration> {
        self.s.write_timeout
    }
    /// Listener accept backlog.
    pub fn accept_backlog(&self) -> usize {
        self.s.accept_backlog
    }
    /// Listener cap on concurrent sessions.
    pub fn max_sessions(&self) -> Option<usize> {
        self.s.max_sessions
    }
    /// Receive shards a [`Listener::listen`](crate::listener::Listener::listen)
    /// asks for (see [`ConfigBuilder::listener_shards`]).
    pub fn listener_shards(&self) -> usize {
        self.s.listener_shards
    }
    /// UDP GSO/GRO for the sockets made from this config.
    pub fn udp_offload(&self) -> UdpOffload {
        self.s.udp_offload
    }
    /// Which ACKs feed the RTT estimate (see [`ConfigBuilder::rtt_samples`]).
    pub fn rtt_samples(&self) -> RttSamples {
        self.s.rtt_samples
    }
    /// What an expired retransmission timer sends (see
    /// [`ConfigBuilder::timeout_resend`]).
    pub fn timeout_resend(&self) -> TimeoutResend {
        self.s.timeout_resend
    }
}

/// Crypto header plus FEC header in front of the KCP bytes (§1.2).
pub(crate) fn header_len(crypt: &Crypt, fec: bool) -> usize {
    crypt.header_len() + if fec { FEC_HEADER_SIZE_PLUS2 } else { 0 }
}

/// §1.9: kcp mtu = mtu − headerSize − AEAD tag, the mtu capped at
/// [`MAX_PACKET_SIZE`] (a validated config never exceeds it).
pub(crate) fn kcp_mtu(mtu: usize, crypt: &Crypt, fec: bool) -> usize {
    mtu.min(MAX_PACKET_SIZE)
        .saturating_sub(header_len(crypt, fec) + crypt.trailer_len())
}

/// [`Error::MtuTooLarge`] for an mtu above [`MAX_PACKET_SIZE`] (§12).
pub(crate) fn check_mtu_limit(mtu: usize) -> Result<()> {
    if mtu > MAX_PACKET_SIZE {
        return Err(Error::MtuTooLarge {
            mtu,
            max: MAX_PACKET_SIZE,
        });
    }
    Ok(())
}

/// FEC header with the size field (§1.5); duplicated here so the config does
/// not depend on the FEC module's internals.
const FEC_HEADER_SIZE_PLUS2: usize = 8;

/// Builder for [`Config`]. Setters never fail; [`build`](Self::build) checks.
#[derive(Clone, Debug)]
#[must_use]
pub struct ConfigBuilder {
    s: Settings,
}

impl ConfigBuilder {
    /// Sets the crypto spec directly.
    pub fn crypt(mut self, spec: CryptSpec) -> Self {
        self.s.crypt = spec;
        self
    }
    /// A cipher with a raw key (kcp-go `New*BlockCrypt(key)`).
    pub fn cipher(self, kind: CipherKind, key: &[u8]) -> Self {
        self.crypt(CryptSpec::Cipher {
            kind,
            key: key.to_vec(),
        })
    }
    /// kcptun's `--crypt NAME --key PASSPHRASE` (§7.2).
    pub fn crypt_kcptun(self, name: &str, passphrase: &str) -> Self {
        self.crypt(CryptSpec::Kcptun {
            name: name.to_owned(),
            passphrase: passphrase.to_owned(),
        })
    }
    /// FEC shards; `(0, 0)` (or either zero) turns FEC off for sending. FEC
    /// datagrams from the peer are decoded either way (§4.3).
    pub fn fec(mut self, data_shards: usize, parity_shards: usize) -> Self {
        self.s.data_shards = data_shards;
        self.s.parity_shards = parity_shards;
        self
    }
    /// Largest UDP payload to send, crypto/FEC headers and AEAD tag
    /// included: at most [`MAX_PACKET_SIZE`] (1472). [`build`](Self::build)
    /// rejects more with [`Error::MtuTooLarge`]: kcp-go v5.7 truncates longer
    /// datagrams to 1472 bytes, so they would fail its CRC/AEAD check (kcp-go
    /// v5.7's own `SetMtu` clamps silently). Datagrams up to 1500 bytes from
    /// kcp-go v5.6 peers are received whatever this is set to.
    pub fn mtu(mut self, mtu: usize) -> Self {
        self.s.mtu = mtu;
        self
    }
    /// Send and receive windows in segments.
    pub fn window(mut self, snd_wnd: u32, rcv_wnd: u32) -> Self {
        self.s.snd_wnd = snd_wnd;
        self.s.rcv_wnd = rcv_wnd;
        self
    }
    /// KCP `NoDelay` parameters.
    pub fn nodelay(mut self, nodelay: NoDelay) -> Self {
        self.s.nodelay = nodelay;
        self
    }
    /// A kcptun mode preset (§7.3).
    pub fn mode(self, mode: Mode) -> Self {
        self.nodelay(mode.nodelay())
    }
    /// Stream or message mode (§5.4).
    pub fn stream_mode(mut self, mode: StreamMode) -> Self {
        self.s.stream_mode = mode;
        self
    }
    /// kcp-go `SetWriteDelay`: when true, writes wait for the next interval
    /// tick instead of flushing at once (§5.6).
    pub fn write_delay(mut self, delay: bool) -> Self {
        self.s.write_delay = delay;
        self
    }
    /// kcp-go `SetACKNoDelay`: acknowledge every input at once (§5.6).
    pub fn ack_nodelay(mut self, nodelay: bool) -> Self {
        self.s.ack_nodelay = nodelay;
        self
    }
    /// DSCP (0..=63) for sockets the session or listener owns.
    pub fn dscp(mut self, dscp: u8) -> Self {
        self.s.dscp = Some(dscp);
        self
    }
    /// Both socket buffer sizes (kcptun `--sockbuf`).
    pub fn socket_buffers(mut self, bytes: usize) -> Self {
        self.s.recv_buffer = Some(bytes);
        self.s.send_buffer = Some(bytes);
        self
    }
    /// Socket receive buffer size.
    pub fn recv_buffer(mut self, bytes: usize) -> Self {
        self.s.recv_buffer = Some(bytes);
        self
    }
    /// Socket send buffer size.
    pub fn send_buffer(mut self, bytes: usize) -> Self {
        self.s.send_buffer = Some(bytes);
        self
    }
    /// kcp-go `SetRateLimit` for every session: each gets its own bucket of
    /// `bytes_per_second` (burst one second's worth). Limits application
    /// bytes accepted by writes, as kcp-go v5.7 does (v5.6 paced datagrams;
    /// see [`crate::rate`]). 0 disables. Replaces a
    /// [`rate_limiter`](Self::rate_limiter).
    pub fn rate_limit(mut self, bytes_per_second: u32) -> Self {
        self.s.rate_limit = match bytes_per_second {
            0 => RateLimit::Off,
            bps => RateLimit::PerSession(bps),
        };
        self
    }
    /// kcp-go v5.7 `SetBucket` for every session made with this config: they
    /// all draw from `limiter`'s one bucket, so the limit is for all of them
    /// together (for a listener: everything its sessions write). Configs
    /// cloned from this one share it too. Replaces a
    /// [`rate_limit`](Self::rate_limit).
    pub fn rate_limiter(mut self, limiter: RateLimiter) -> Self {
        self.s.rate_limit = RateLimit::Shared(limiter);
        self
    }
    /// End the session with [`Error::IdleTimeout`] after this long without a
    /// valid datagram from the peer (default [`DEFAULT_IDLE_TIMEOUT`], 30 s;
    /// `None` is kcp-go's behaviour: never). This is what reclaims the
    /// sessions of peers that died or closed: kcp-go sends nothing on close.
    /// A peer that may stay silent longer must send keepalives (kcptun's
    /// smux does, every 10 s) or both sides must raise or disable this.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.s.idle_timeout = timeout;
        self
    }
    /// End the session with [`Error::DeadLink`] when a segment sent this many
    /// times is still unacknowledged when its next retransmission is due
    /// (default [`DEFAULT_DEAD_LINK`], 20, kcp-go's `IKCP_DEADLINK`; kcp-go
    /// itself never acts on it; `None` disables). With linear RTO back-off
    /// this takes about `rto × 210` (about 21 s at the 100 ms minimum RTO,
    /// about 3.5 s in fast3), so the idle timeout is the bound that also
    /// covers a session with nothing in flight.
    pub fn dead_link(mut self, transmissions: Option<u32>) -> Self {
        self.s.dead_link = transmissions;
        self
    }
    /// Default read timeout of sessions (each read that waits this long fails
    /// with [`Error::Timeout`]).
    pub fn read_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.s.read_timeout = timeout;
        self
    }
    /// Default write timeout of sessions.
    pub fn write_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.s.write_timeout = timeout;
        self
    }
    /// Listener accept backlog (kcp-go: 128).
    pub fn accept_backlog(mut self, backlog: usize) -> Self {
        self.s.accept_backlog = backlog;
        self
    }
    /// Listener cap on concurrent sessions, accepted or waiting in the
    /// backlog (default [`DEFAULT_MAX_SESSIONS`]; `None`: unbounded, as in
    /// kcp-go).
    ///
    /// When the table is full, a datagram from a new address that would
    /// open a session evicts one ([`Error::Evicted`] for its user): first
    /// the session heard from least recently whose peer has never
    /// acknowledged data we sent (unproven: a spoofed address cannot
    /// acknowledge what it never received) and which is at least 1 s old
    /// (time to complete the round trip that proves it), else the proven session silent
    /// the longest if silent for at least 3 s (a closed kcp-go client just
    /// goes silent); if neither exists the datagram is dropped and the new
    /// peer retransmits. A flood from new addresses therefore only churns
    /// unproven sessions and never displaces a peer that has completed a
    /// round trip and is still talking. With the `null`/`none` ciphers an
    /// attacker who sees our datagrams can still prove itself.
    pub fn max_sessions(mut self, max: Option<usize>) -> Self {
        self.s.max_sessions = max;
        self
    }

    /// How many receive shards [`Listener::listen`](crate::listener::Listener::listen)
    /// runs (default 1; at most [`MAX_LISTENER_SHARDS`]). With `n > 1` on
    /// Linux it binds `n` sockets to the one address with `SO_REUSEPORT`; the
    /// kernel hashes each peer's address onto one of them, and each shard
    /// owns its socket, its receive task and the sessions of its peers, with
    /// no lock shared between shards on the datagram path, so a
    /// multi-thread runtime decrypts and drives them on several cores. The
    /// wire is unchanged (kcp-go routes by address too). The session cap
    /// ([`max_sessions`](Self::max_sessions)) is split evenly, rounded up,
    /// over the shards; the accept backlog is shared. Elsewhere than Linux,
    /// and for [`Listener::from_socket`](crate::listener::Listener::from_socket)
    /// and [`Listener::with_transport`](crate::listener::Listener::with_transport),
    /// and for the [blocking](crate::blocking) listener, a listener has one
    /// shard whatever this says. Another process of the same user that
    /// binds the port with `SO_REUSEPORT` too would get a share of the
    /// peers, as with any `SO_REUSEPORT` server.
    ///
    /// More shards than cores pay where many peers start at once: each
    /// shard's socket and task absorb a share of the burst. On a 2-core
    /// machine, 2,000 kcp-go clients each sending 64 KiB at once overflowed
    /// the sockets of 2 shards (thousands of drops, recovered only by the
    /// clients' retransmission timers) and of none in 16 (`docs/benchmarks.md`,
    /// many sessions).
    pub fn listener_shards(mut self, n: usize) -> Self {
        self.s.listener_shards = n;
        self
    }

    /// UDP segmentation offload (Linux GSO/GRO) for the sockets that
    /// [`Session::dial`](crate::session::Session::dial),
    /// [`Listener::listen`](crate::listener::Listener::listen) and their
    /// `from_socket` variants wrap. Default [`UdpOffload::Auto`]; a
    /// transport given to `with_transport` keeps its own setting
    /// ([`UdpTransport::with_offload`](crate::transport::UdpTransport::with_offload)).
    pub fn udp_offload(mut self, offload: UdpOffload) -> Self {
        self.s.udp_offload = offload;
        self
    }

    /// Which ACKs feed the RTT estimate and so the retransmission timeout.
    /// Default [`RttSamples::LatestTransmission`]: an ACK echoing an old copy
    /// of a segment (one FEC rebuilt late) is not taken as a sample, so
    /// late recoveries do not inflate the RTO as they do in kcp-go.
    /// [`RttSamples::EveryAck`] is kcp-go's rule. Either way every datagram
    /// is one kcp-go could send (docs/wire.md §5.3).
    pub fn rtt_samples(mut self, rule: RttSamples) -> Self {
        self.s.rtt_samples = rule;
        self
    }

    /// What an expired retransmission timer sends. Default
    /// [`TimeoutResend::ProbeWhileSilent`]: while the peer acknowledges
    /// nothing sent since, one segment probes per RTO and the rest of the
    /// window waits for its ACK, so a peer that is only slow (a busy server,
    /// thousands of sessions starting at once) is not sent the whole window
    /// again every RTO. [`TimeoutResend::EverySegment`] is kcp-go's rule.
    /// Either way every datagram is one kcp-go could send (docs/wire.md
    /// §5.2.5).
    pub fn timeout_resend(mut self, rule: TimeoutResend) -> Self {
        self.s.timeout_resend = rule;
        self
    }

    /// Checks every value and builds the cipher.
    ///
    /// Errors ([`Error::InvalidConfig`] unless the cipher says otherwise):
    /// mtu above [`MAX_PACKET_SIZE`] (1472; [`Error::MtuTooLarge`]) or leaving no room for one KCP payload byte after the
    /// crypto/FEC headers and AEAD tag; a zero window or one above 65535
    /// (the wire field is 16 bits); more than 256 FEC shards; a zero accept
    /// backlog or session cap; DSCP above 63; a zero idle/read/write timeout or
    /// dead-link count; a key the cipher rejects ([`Error::InvalidKey`],
    /// [`Error::UnknownCipher`]).
    pub fn build(self) -> Result<Config> {
        let crypt = self.s.crypt.build()?;
        self.check(&crypt)?;
        Ok(Config { s: self.s, crypt })
    }

    fn check(&self, crypt: &Crypt) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidConfig(msg));
        check_mtu_limit(self.s.mtu)?;
        let fec = self.s.data_shards > 0 && self.s.parity_shards > 0;
        let overhead = header_len(crypt, fec) + crypt.trailer_len();
        if self.s.mtu <= overhead + IKCP_OVERHEAD {
            return bad(format!(
                "mtu {} is too small: {overhead} bytes of crypto/FEC headers plus the \
                 {IKCP_OVERHEAD}-byte KCP header leave no room for data (minimum {})",
                self.s.mtu,
                overhead + IKCP_OVERHEAD + 1
            ));
        }
        for (name, wnd) in [("send", self.s.snd_wnd), ("receive", self.s.rcv_wnd)] {
            if wnd == 0 {
                return bad(format!("{name} window must be at least 1 segment"));
            }
            if wnd > u32::from(u16::MAX) {
                return bad(format!(
                    "{name} window {wnd} exceeds 65535, the largest the 16-bit wnd field can carry"
                ));
            }
        }
        if self
            .s
            .data_shards
            .checked_add(self.s.parity_shards)
            .is_none_or(|total| total > MAX_FEC_SHARDS)
        {
            return bad(format!(
                "FEC {}+{} has more than {MAX_FEC_SHARDS} shards (Reed-Solomon over GF(2^8))",
                self.s.data_shards, self.s.parity_shards
            ));
        }
        if !(IKCP_INTERVAL_MIN..=IKCP_INTERVAL_MAX).contains(&self.s.nodelay.interval) {
            return bad(format!(
                "interval {} ms is outside {IKCP_INTERVAL_MIN}..={IKCP_INTERVAL_MAX}",
                self.s.nodelay.interval
            ));
        }
        if self.s.accept_backlog == 0 {
            return bad("accept backlog must be at least 1".into());
        }
        if self.s.max_sessions == Some(0) {
            return bad("max_sessions must be at least 1".into());
        }
        if !(1..=MAX_LISTENER_SHARDS).contains(&self.s.listener_shards) {
            return bad(format!(
                "listener_shards {} is outside 1..={MAX_LISTENER_SHARDS}",
                self.s.listener_shards
            ));
        }
        if let Some(dscp) = self.s.dscp {
            if dscp > 63 {
                return bad(format!("DSCP {dscp} exceeds 63 (6 bits)"));
            }
        }
        for (name, t) in [
            ("idle timeout", self.s.idle_timeout),
            ("read timeout", self.s.read_timeout),
            ("write timeout", self.s.write_timeout),
        ] {
            if t == Some(Duration::ZERO) {
                return bad(format!("{name} must be positive (use None to disable)"));
            }
        }
        if self.s.dead_link == Some(0) {
            return bad("dead-link transmission count must be at least 1".into());
        }
        for (name, b) in [
            ("receive", self.s.recv_buffer),
            ("send", self.s.send_buffer),
        ] {
            if b == Some(0) {
                return bad(format!("{name} socket buffer must be positive"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(b: ConfigBuilder) -> String {
        match b.build() {
            Err(Error::InvalidConfig(msg)) => msg,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_kcp_go_on_the_wire_and_a_server_s_for_lifetimes() {
        let c = Config::default();
        assert_eq!(c.mtu(), 1400);
        assert_eq!(c.window(), (32, 32));
        assert_eq!(c.nodelay(), NoDelay::default());
        assert_eq!(c.stream_mode(), StreamMode::Message);
        assert!(!c.fec_enabled());
        assert_eq!(c.header_len(), 0);
        assert_eq!(c.kcp_mtu(), 1400);
        assert_eq!(c.accept_backlog(), 128);
        // Lifetime defaults are a public server's, not kcp-go's (none of them).
        assert_eq!(c.idle_timeout(), Some(Duration::from_secs(30)));
        assert_eq!(c.dead_link(), Some(20));
        assert_eq!(c.max_sessions(), Some(4096));
        let kcp_go = Config::builder()
            .idle_timeout(None)
            .dead_link(None)
            .max_sessions(None)
            .build()
            .unwrap();
        assert_eq!(kcp_go.idle_timeout(), None);
        assert_eq!(kcp_go.max_sessions(), None);
    }

    #[test]
    fn mode_presets_match_kcptun() {
        let t = |m: Mode| {
            let n = m.nodelay();
            (n.nodelay, n.interval, n.resend, n.congestion)
        };
        assert_eq!(t(Mode::Normal), (false, 40, 2, Congestion::Off));
        assert_eq!(t(Mode::Fast), (false, 30, 2, Congestion::Off));
        assert_eq!(t(Mode::Fast2), (true, 20, 2, Congestion::Off));
        assert_eq!(t(Mode::Fast3), (true, 10, 2, Congestion::Off));
        assert_eq!(Mode::from_name("fast2").ok(), Some(Mode::Fast2));
        assert!(Mode::from_name("turbo").is_err());
    }

    #[test]
    fn kcp_mtu_table_of_section_1_9() {
        // (crypt, fec, mtu) -> kcp mtu, from docs/wire.md §1.9.
        let aes = CryptSpec::Kcptun {
            name: "aes".into(),
            passphrase: "k".into(),
        };
        let gcm = CryptSpec::Kcptun {
            name: "aes-128-gcm".into(),
            passphrase: "k".into(),
        };
        let cases = [
            (CryptSpec::Null, false, 1400, 1400),
            (aes.clone(), false, 1400, 1380),
            (CryptSpec::Null, true, 1400, 1392),
            (aes.clone(), true, 1350, 1322),
            (gcm.clone(), false, 1400, 1372),
            (gcm, true, 1350, 1314),
        ];
        for (spec, fec, mtu, want) in cases {
            let (d, p) = if fec { (10, 3) } else { (0, 0) };
            let c = Config::builder()
                .crypt(spec.clone())
                .fec(d, p)
                .mtu(mtu)
                .build()
                .unwrap();
            assert_eq!(c.kcp_mtu(), want, "{spec:?} fec={fec} mtu={mtu}");
        }
    }

    #[test]
    fn impossible_values_are_rejected() {
        for mtu in [1473, 1500, 1501, 65535] {
            let r = Config::builder().mtu(mtu).build();
            assert!(
                matches!(r, Err(Error::MtuTooLarge { mtu: m, max: 1472 }) if m == mtu),
                "{r:?}"
            );
            let msg = r.unwrap_err().to_string();
            assert!(msg.contains("1472") && msg.contains("v5.7"), "{msg}");
        }
        assert_eq!(Config::builder().mtu(1472).build().unwrap().mtu(), 1472);
        assert!(invalid(Config::builder().mtu(24)).contains("too small"));
        // 20 crypto + 8 FEC + 24 KCP = 52: 52 leaves no data byte, 53 does.
        let aes_fec = || Config::builder().crypt_kcptun("aes", "k").fec(1, 1);
        assert!(invalid(aes_fec().mtu(52)).contains("too small"));
        assert!(aes_fec().mtu(53).build().is_ok());
        assert!(invalid(Config::builder().window(0, 32)).contains("send window"));
        assert!(invalid(Config::builder().window(32, 0)).contains("receive window"));
        assert!(invalid(Config::builder().window(32, 70000)).contains("65535"));
        assert!(invalid(Config::builder().fec(200, 57)).contains("256"));
        assert!(Config::builder().fec(128, 128).build().is_ok());
        assert!(invalid(Config::builder().accept_backlog(0)).contains("backlog"));
        assert!(invalid(Config::builder().max_sessions(Some(0))).contains("max_sessions"));
        assert!(invalid(Config::builder().dscp(64)).contains("DSCP"));
        assert!(invalid(Config::builder().idle_timeout(Some(Duration::ZERO))).contains("idle"));
        assert!(invalid(Config::builder().dead_link(Some(0))).contains("dead-link"));
        let nd = NoDelay {
            interval: 5,
            ..NoDelay::default()
        };
        assert!(invalid(Config::builder().nodelay(nd)).contains("interval"));
    }

    #[test]
    fn bad_keys_surface_the_cipher_error() {
        let r = Config::builder()
            .cipher(CipherKind::Aes128, &[0u8; 7])
            .build();
        assert!(matches!(r, Err(Error::InvalidKey { .. })), "{r:?}");
    }

    #[test]
    fn to_builder_round_trips() {
        let c = Config::kcptun(Mode::Fast3).build().unwrap();
        let d = c.to_builder().build().unwrap();
        assert_eq!(format!("{c:?}"), format!("{d:?}"));
        assert!(c.validate().is_ok());
        assert_eq!(c.fec(), (10, 3));
        assert_eq!(c.kcp_mtu(), 1322);
    }
}
