//! KCP ARQ engine, behaviour-identical on the wire to kcp-go v5.6.72's `kcp.go`
//! (spec §5), as a sans-IO state machine.
//!
//! * [`SegmentHeader`] is the 24-byte segment codec (§1.6).
//! * [`Kcp`] is the engine: bytes and a millisecond timestamp go in, datagrams
//!   go out through an [`Output`] sink, and [`Kcp::next_deadline`] says when to
//!   call [`Kcp::update`] again (never, while the session is idle).
//!
//! Where kcp-go's data structures are O(window) per acknowledgement (kcp-go
//! issue #338), this engine keeps the same observable behaviour with indexed
//! structures; see the module documentation of `engine.rs` for how.
//!
//! ```
//! use kcp_session::kcp::{FlushKind, Kcp, PacketKind};
//!
//! let (mut a, mut b) = (Kcp::new(7), Kcp::new(7));
//! a.set_nodelay(1, 10, 2, 1); // kcptun "fast3"
//! a.send(b"hello")?;
//! let mut wire = Vec::new();
//! a.flush(FlushKind::Full, 0, &mut |d: &[u8]| wire.push(d.to_vec()));
//! for d in &wire {
//!     b.input(d, PacketKind::Regular, false, 20, &mut |_: &[u8]| {})?;
//! }
//! let mut buf = [0u8; 64];
//! assert_eq!(b.recv(&mut buf)?, Some(5));
//! assert_eq!(&buf[..5], b"hello");
//! // b owes an ACK: its timer is armed; a has data in flight.
//! assert!(b.next_deadline(20).is_some() && a.next_deadline(20).is_some());
//! # Ok::<(), kcp_session::Error>(())
//! ```

mod bits;
mod engine;
#[cfg(test)]
mod reference;
mod segment;

pub use engine::Kcp;
pub use segment::{SegmentHeader, Segments};

/// Minimum retransmission timeout in no-delay mode (ms).
pub const IKCP_RTO_NDL: u32 = 30;
/// Minimum retransmission timeout in normal mode (ms).
pub const IKCP_RTO_MIN: u32 = 100;
/// Initial retransmission timeout (ms).
pub const IKCP_RTO_DEF: u32 = 200;
/// Maximum retransmission timeout computed by the RTT estimator (ms).
pub const IKCP_RTO_MAX: u32 = 60000;

/// Segment command: data.
pub const IKCP_CMD_PUSH: u8 = 81;
/// Segment command: acknowledgement.
pub const IKCP_CMD_ACK: u8 = 82;
/// Segment command: window probe (ask the peer for its window).
pub const IKCP_CMD_WASK: u8 = 83;
/// Segment command: window tell (answer to a probe).
pub const IKCP_CMD_WINS: u8 = 84;

/// Probe flag: a WASK is scheduled.
pub const IKCP_ASK_SEND: u32 = 1;
/// Probe flag: a WINS is scheduled.
pub const IKCP_ASK_TELL: u32 = 2;

/// Default send window (segments).
pub const IKCP_WND_SND: u32 = 32;
/// Default receive window (segments); kcp-go has no 128 floor (§5.1).
pub const IKCP_WND_RCV: u32 = 32;
/// Default MTU of the KCP layer (bytes).
pub const IKCP_MTU_DEF: usize = 1400;
/// Largest MTU [`Kcp::set_mtu`] accepts (not a kcp-go constant).
pub const IKCP_MTU_MAX: usize = 65535;

/// Classic fast-retransmit threshold (not a default in kcp-go; kept for reference).
pub const IKCP_ACK_FAST: u32 = 3;
/// Default flush interval (ms).
pub const IKCP_INTERVAL: u32 = 100;
/// Size of a segment header (bytes).
pub const IKCP_OVERHEAD: usize = 24;
/// Transmissions of one segment after which the link is reported dead.
pub const IKCP_DEADLINK: u32 = 20;
/// Initial slow-start threshold (segments).
pub const IKCP_THRESH_INIT: u32 = 2;
/// Minimum slow-start threshold (segments).
pub const IKCP_THRESH_MIN: u32 = 2;
/// Initial window-probe wait (ms); C KCP uses 7000 (§5.1).
pub const IKCP_PROBE_INIT: u32 = 500;
/// Maximum window-probe wait (ms).
pub const IKCP_PROBE_LIMIT: u32 = 120000;
/// Byte offset of `sn` within a segment header.
pub const IKCP_SN_OFFSET: usize = 12;
/// Most fragments one message may have in message mode (kcp-go `Send` returns −2 above).
pub const IKCP_MAX_FRAGMENTS: usize = 255;

/// Whether a datagram arrived as sent or was rebuilt by FEC (kcp-go's
/// `IKCP_PACKET_REGULAR` / `IKCP_PACKET_FEC`). Recovered packets do not update
/// the remote window or RTT (spec §4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// Received from the network as sent.
    Regular,
    /// Rebuilt from FEC parity.
    Recovered,
}

/// Which ACKs feed the RTT estimate, and so the RTO (docs/wire.md §5.3).
/// Neither changes a datagram's format; they differ only in when a
/// segment is retransmitted after an ACK that echoes a stale `ts`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RttSamples {
    /// Only the first ACK of a segment's latest transmission (Karn's rule
    /// with KCP's echoed `ts`). An ACK of a segment already acknowledged, or
    /// one echoing an earlier copy (which FEC rebuilt, or the network held,
    /// after the segment was sent again), carries the FEC group's or the
    /// queue's delay rather than the path's, and is not a sample.
    #[default]
    LatestTransmission,
    /// kcp-go's rule: the `ts` of the last ACK in each regular datagram is a
    /// sample, whatever it acknowledges. One late FEC recovery then raises
    /// the RTO of every later retransmission; the Go-generated engine
    /// vectors run with this.
    EveryAck,
}

/// What an expired retransmission timer sends (docs/wire.md §5.2.5).
/// Neither changes a datagram's format; they differ only in how many copies
/// go out while the peer acknowledges nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TimeoutResend {
    /// While no ACK shows that the peer received anything sent at or after
    /// an expired segment's last transmission, only the lowest such segment
    /// is sent again, once per its backed-off RTO (a probe, as TCP resends
    /// one segment on a timeout); the other expired segments wait, their
    /// RTO and transmission count unchanged. The first ACK echoing a
    /// transmission no older than a waiting segment's sends it at once. A
    /// single lost segment, or a loss among segments the peer acknowledges
    /// around, is resent exactly as kcp-go does. A peer that is slow rather
    /// than gone (a busy server, a full queue) no longer gets the whole
    /// window again every RTO, which would only lengthen its queue.
    #[default]
    ProbeWhileSilent,
    /// kcp-go's rule: every segment whose timer expired, at every flush.
    /// The Go-generated engine vectors run with this.
    EverySegment,
}

/// What a flush sends (kcp-go `IKCP_FLUSH_ACKONLY` / `IKCP_FLUSH_FULL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushKind {
    /// Pending ACKs and window probes only (new segments still move from the
    /// send queue into the send buffer, §5.2 step 4, but are not transmitted).
    AckOnly,
    /// Everything: ACKs, probes, first transmissions and retransmissions.
    Full,
}

/// Where the send queue stands against the send window
/// ([`Kcp::send_window`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendWindow {
    /// Nothing is queued.
    Idle,
    /// Queued segments can enter the window at the next full flush.
    Open,
    /// Queued segments wait for acknowledgements or a larger peer window.
    Full,
}

/// Where the engine writes datagrams. Each call is one datagram of at most
/// `mtu` bytes holding whole KCP segments.
pub trait Output {
    /// Takes one datagram. The slice is only valid for the call.
    fn output(&mut self, datagram: &[u8]);
}

impl<F: FnMut(&[u8])> Output for F {
    fn output(&mut self, datagram: &[u8]) {
        self(datagram)
    }
}

/// Counters kcp-go keeps for the KCP layer (names of §6.5), for one engine.
/// All are monotonically increasing totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KcpStats {
    /// Segments parsed from datagrams that were accepted whole (`InSegs`;
    /// like kcp-go, a datagram that ends in an error adds nothing).
    pub in_segs: u64,
    /// Segment headers encoded (`OutSegs`).
    pub out_segs: u64,
    /// Retransmitted segments of any kind (`RetransSegs`).
    pub retrans_segs: u64,
    /// Fast retransmissions (`FastRetransSegs`).
    pub fast_retrans_segs: u64,
    /// Early retransmissions (`EarlyRetransSegs`).
    pub early_retrans_segs: u64,
    /// Retransmissions after a timeout (`LostSegs`).
    pub lost_segs: u64,
    /// Duplicate or out-of-window PUSH segments in regular packets (`RepeatSegs`).
    pub repeat_segs: u64,
}
