//! The KCP state machine (§5), written from a reading of kcp-go v5.6.72
//! `kcp.go` and checked against hand-computed traces.
//!
//! # Scaling (kcp-go issue #338)
//!
//! kcp-go walks the whole send buffer for every ACK segment (`parse_ack`,
//! `parse_fastack`) and for every flush; at ~18K segments in flight that
//! collapses. This engine produces the same datagrams with indexed state:
//!
//! * `snd_buf` is a `VecDeque` holding exactly `[snd_una, snd_nxt)`, indexed by
//!   `sn - snd_una`: `parse_ack` is O(1), `parse_una` is O(segments freed).
//! * Fast-ack counting is done once per datagram, not once per ACK: the ACKs
//!   of the datagram are collected, and after the segment loop every segment
//!   below the highest ACKed sn gets `fastack += #{acks with sn > seg.sn and
//!   ts >= seg.ts}`, which is what kcp-go's per-ACK loop adds up to (nothing
//!   else reads or writes `fastack` inside `Input`). Only segments whose count
//!   can still matter are visited: a ring bit set (`T`) holds the segments that
//!   are not sentinel and are either unacknowledged or acknowledged but not yet
//!   "ripe". An acknowledged segment is ripe once its next increment must reach
//!   the threshold; after that its only effect is to make kcp-go flush at once
//!   when an ACK with a higher sn and a later-or-equal ts arrives, and that is
//!   answered from minima of the ripe segments' send times per 64 and per
//!   4096 positions (`R`) instead of a walk. The bit sets have a summary level,
//!   so skipping empty stretches costs one word read per 4096 segments. With
//!   no loss the work is O(ACKs); with loss it is O(holes + window/4096).
//! * `flush` does not walk the buffer either: candidates for fast/early
//!   retransmit are a bit set (`F`), timeouts come from a min-heap of resend
//!   deadlines (lazily invalidated by the transmission count), and segments
//!   never sent are the suffix after `sent_upto`. They are then sent in sn
//!   order, exactly as kcp-go's single pass would.
//!
//! Time is an unwrapped `i64` millisecond clock derived from the `now_ms`
//! arguments with `_itimediff` steps, so heap and block-minimum keys order
//! correctly across the u32 wrap. The equivalence with kcp-go's wrapping
//! comparisons holds while a segment stays in flight for less than 2^30 ms
//! (12 days) and the peer's echoed timestamps are within 2^30 ms of now
//! (other ACK timestamps take an exact slow path).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use super::bits::RingBits;
use super::segment::SegmentHeader;
use super::*;
use crate::error::{Error, Result};

const SENTINEL: u32 = 0xFFFF_FFFF;
/// Timestamps within this distance of now compare exactly as unwrapped keys.
const NEAR: i32 = 1 << 30;
/// Spare segment buffers kept for reuse.
const POOL_MAX: usize = 512;
/// Smallest ring capacity of the send-buffer index.
const MIN_RING: u32 = 128;
/// Receive-buffer slots kept as a dense ring; a peer that respects our
/// advertised window (a u16) never sends further ahead.
const RCV_DENSE: usize = 1 << 16;

#[inline]
fn itimediff(later: u32, earlier: u32) -> i32 {
    later.wrapping_sub(earlier) as i32
}

/// A segment waiting in the send queue.
#[derive(Debug)]
struct QueuedSeg {
    frg: u8,
    data: Vec<u8>,
}

/// A segment in the send buffer (`sn = snd_una + index`).
#[derive(Debug)]
struct SndSeg {
    frg: u8,
    acked: bool,
    in_t: bool,
    in_f: bool,
    in_r: bool,
    /// Held back by [`TimeoutResend::ProbeWhileSilent`]: expired, not sent,
    /// listed in `Kcp::held`.
    held: bool,
    ts: u32,
    /// Unwrapped clock at the last transmission (valid when `xmit > 0`).
    ts_key: i64,
    xmit: u32,
    rto: u32,
    resendts: u32,
    /// Unwrapped `resendts`.
    due: i64,
    fastack: u32,
    data: Vec<u8>,
}

/// A received segment.
#[derive(Debug)]
struct RcvSeg {
    frg: u8,
    data: Vec<u8>,
}

/// An ACK collected while parsing a datagram: (sn or offset, ts).
type AckItem = (u32, u32);

/// The KCP ARQ engine for one conversation. See the module documentation of
/// [`crate::kcp`] and `docs/architecture.md`.
#[derive(Debug)]
pub struct Kcp {
    conv: u32,
    mtu: usize,
    mss: usize,
    dead: bool,

    snd_una: u32,
    snd_nxt: u32,
    rcv_nxt: u32,

    ssthresh: u32,
    rx_rttvar: i32,
    rx_srtt: i32,
    rx_rto: u32,
    rx_minrto: u32,
    snd_wnd: u32,
    rcv_wnd: u32,
    rmt_wnd: u32,
    /// Largest window the peer has advertised in a segment that came off the
    /// wire: a lower bound of its `rcv_wnd` (kcp-go advertises `rcv_wnd`
    /// minus its queue length).
    rmt_wnd_max: u32,
    /// Whether a segment off the wire has told us the peer's window.
    rmt_wnd_heard: bool,
    /// `ask_window` was called: send WASK probes until the window is heard.
    window_wanted: bool,
    /// When the next of those probes is due (`None`: at the next flush).
    ts_window_ask: Option<u32>,
    cwnd: u32,
    incr: u32,

    probe: u32,
    ts_probe: u32,
    probe_wait: u32,

    interval: u32,
    nodelay: u32,
    dead_link: u32,
    fastresend: i32,
    nocwnd: i32,
    stream: bool,

    snd_queue: VecDeque<QueuedSeg>,
    rcv_queue: VecDeque<RcvSeg>,
    snd_buf: VecDeque<SndSeg>,
    /// Out-of-order segments, indexed by `sn - rcv_nxt`.
    rcv_buf: VecDeque<Option<RcvSeg>>,
    /// Segments `RCV_DENSE` or more ahead of `rcv_nxt` (only a peer that
    /// ignores our advertised window, which is at most 65535, sends these),
    /// keyed by unwrapped sn so memory follows the data actually held.
    rcv_far: BTreeMap<u64, RcvSeg>,
    /// `rcv_nxt` without wrapping.
    rcv_nxt_u: u64,
    acklist: Vec<AckItem>,

    buffer: Vec<u8>,
    pool: Vec<Vec<u8>>,

    // Send-buffer index (see module docs).
    ring_mask: u32,
    t_bits: RingBits,
    f_bits: RingBits,
    r_bits: RingBits,
    r_min: Vec<i64>,
    /// Minimum of `r_min` per 64 blocks (4096 positions).
    r_min2: Vec<i64>,
    r_count: usize,
    rto_heap: BinaryHeap<Reverse<(i64, u32, u32)>>,
    /// Every unacknowledged segment before this sn has been sent.
    sent_upto: u32,

    // Scratch space reused across calls.
    batch: Vec<AckItem>,
    /// The echo `ts` each segment that `una` freed during the current
    /// `input` was last sent with (`None` if it was already acknowledged),
    /// indexed from `una_freed_from`; see `acks_last_transmission`.
    una_freed: Vec<Option<u32>>,
    una_freed_from: u32,
    rtt_samples: RttSamples,
    timeout_resend: TimeoutResend,
    /// Unwrapped send time of the latest of our transmissions an ACK has
    /// echoed (`i64::MIN`: none yet).
    heard_upto: i64,
    /// `heard_upto` when held segments were last checked against it.
    heard_released: i64,
    /// When the next silent-peer probe may go (see `TimeoutResend`).
    silent_probe_due: i64,
    /// When the last silent-peer probe went; an ACK echoing it or anything
    /// later ends the silence (`silent_probe_due` back to `i64::MIN`).
    silent_probe_sent: i64,
    /// Sequence numbers of held segments: each segment whose `SndSeg::held`
    /// is set is listed (entries whose segment was since sent or
    /// acknowledged, and repeats, are dropped lazily).
    held: Vec<u32>,
    suffix_min: Vec<i64>,
    cands: Vec<u32>,

    clock: i64,
    last_now: u32,
    clock_init: bool,
    next_tick: Option<u32>,

    stats: KcpStats,
}

impl Kcp {
    /// A new engine with kcp-go's defaults (§5.1): mtu 1400, windows 32/32,
    /// interval 100 ms, no nodelay, fast resend off, congestion control on,
    /// message mode.
    pub fn new(conv: u32) -> Kcp {
        Kcp {
            conv,
            mtu: IKCP_MTU_DEF,
            mss: IKCP_MTU_DEF - IKCP_OVERHEAD,
            dead: false,
            snd_una: 0,
            snd_nxt: 0,
            rcv_nxt: 0,
            ssthresh: IKCP_THRESH_INIT,
            rx_rttvar: 0,
            rx_srtt: 0,
            rx_rto: IKCP_RTO_DEF,
            rx_minrto: IKCP_RTO_MIN,
            snd_wnd: IKCP_WND_SND,
            rcv_wnd: IKCP_WND_RCV,
            rmt_wnd: IKCP_WND_RCV,
            rmt_wnd_max: IKCP_WND_RCV,
            rmt_wnd_heard: false,
            window_wanted: false,
            ts_window_ask: None,
            cwnd: 0,
            incr: 0,
            probe: 0,
            ts_probe: 0,
            probe_wait: 0,
            interval: IKCP_INTERVAL,
            nodelay: 0,
            dead_link: IKCP_DEADLINK,
            fastresend: 0,
            nocwnd: 0,
            stream: false,
            snd_queue: VecDeque::new(),
            rcv_queue: VecDeque::new(),
            snd_buf: VecDeque::new(),
            rcv_buf: VecDeque::new(),
            rcv_far: BTreeMap::new(),
            rcv_nxt_u: 0,
            acklist: Vec::new(),
            buffer: Vec::with_capacity(IKCP_MTU_DEF),
            pool: Vec::new(),
            ring_mask: MIN_RING - 1,
            t_bits: RingBits::new(MIN_RING),
            f_bits: RingBits::new(MIN_RING),
            r_bits: RingBits::new(MIN_RING),
            r_min: vec![i64::MAX; (MIN_RING / 64) as usize],
            r_min2: vec![i64::MAX; 1],
            r_count: 0,
            rto_heap: BinaryHeap::new(),
            sent_upto: 0,
            batch: Vec::new(),
            una_freed: Vec::new(),
            una_freed_from: 0,
            rtt_samples: RttSamples::default(),
            timeout_resend: TimeoutResend::default(),
            heard_upto: i64::MIN,
            heard_released: i64::MIN,
            silent_probe_due: i64::MIN,
            silent_probe_sent: i64::MIN,
            held: Vec::new(),
            suffix_min: Vec::new(),
            cands: Vec::new(),
            clock: 0,
            last_now: 0,
            clock_init: false,
            next_tick: None,
            stats: KcpStats::default(),
        }
    }

    // ------------------------------------------------------------------
    // configuration and queries
    // ------------------------------------------------------------------

    /// The conversation id.
    pub fn conv(&self) -> u32 {
        self.conv
    }

    /// kcp-go `NoDelay(nodelay, interval, resend, nc)`: a negative argument
    /// leaves that value unchanged; `nodelay != 0` sets the minimum RTO to 30
    /// ms (else 100); `interval` is clamped to [10, 5000]; `resend` is the
    /// fast-retransmit threshold (0 disables it); `nc = 1` disables the
    /// congestion window (§5.1).
    pub fn set_nodelay(&mut self, nodelay: i32, interval: i32, resend: i32, nc: i32) {
        if nodelay >= 0 {
            self.nodelay = nodelay as u32;
            self.rx_minrto = if nodelay != 0 {
                IKCP_RTO_NDL
            } else {
                IKCP_RTO_MIN
            };
        }
        if interval >= 0 {
            self.interval = interval.clamp(10, 5000) as u32;
        }
        if resend >= 0 && resend != self.fastresend {
            self.fastresend = resend;
            // Ripeness depends on the threshold. Segments already in R have
            // not been counted since they ripened: lowering `resend` keeps
            // them ripe (exact), but raising it mid-transfer while
            // acknowledged segments linger behind a hole re-evaluates them
            // from their count at ripening (a lower bound), the one case
            // where the immediate-flush decision may differ from kcp-go.
            self.reindex(self.ring_mask + 1);
        }
        if nc >= 0 {
            self.nocwnd = nc;
        }
    }

    /// kcp-go `WndSize`: sets the send and receive windows in segments; 0
    /// leaves a value unchanged. No 128 floor on the receive window (§5.1).
    pub fn set_wndsize(&mut self, snd: u32, rcv: u32) {
        if snd > 0 {
            self.snd_wnd = snd;
        }
        if rcv > 0 {
            self.rcv_wnd = rcv;
        }
    }

    /// kcp-go `SetMtu`: the largest datagram the engine emits, in 25..=65535
    /// (kcp-go has no upper bound here, but no datagram can exceed 64 KiB and
    /// its session clamps to 1500). Segments already queued keep their size.
    pub fn set_mtu(&mut self, mtu: usize) -> Result<()> {
        if mtu <= IKCP_OVERHEAD || mtu > IKCP_MTU_MAX {
            return Err(Error::InvalidConfig(format!(
                "KCP mtu {mtu} must be in {}..={IKCP_MTU_MAX}",
                IKCP_OVERHEAD + 1
            )));
        }
        self.mtu = mtu;
        self.mss = mtu - IKCP_OVERHEAD;
        self.buffer = Vec::with_capacity(mtu);
        self.pool.clear();
        Ok(())
    }

    /// Largest datagram the engine emits.
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// Largest segment payload (`mtu - 24`).
    pub fn mss(&self) -> usize {
        self.mss
    }

    /// Stream mode packs bytes into full segments and never sets `frg`;
    /// message mode (the default) keeps message boundaries (§5.4).
    pub fn set_stream_mode(&mut self, on: bool) {
        self.stream = on;
    }

    /// Whether stream mode is on.
    pub fn is_stream_mode(&self) -> bool {
        self.stream
    }

    /// Chooses which ACKs feed the RTT estimate (default
    /// [`RttSamples::LatestTransmission`]).
    pub fn set_rtt_samples(&mut self, rule: RttSamples) {
        self.rtt_samples = rule;
    }

    /// Chooses what an expired retransmission timer sends (default
    /// [`TimeoutResend::ProbeWhileSilent`]).
    pub fn set_timeout_resend(&mut self, rule: TimeoutResend) {
        self.timeout_resend = rule;
        if rule == TimeoutResend::EverySegment {
            self.release_held(i64::MAX);
        }
    }

    /// Segments queued or in flight (kcp-go `WaitSnd`).
    pub fn wait_snd(&self) -> usize {
        self.snd_buf.len() + self.snd_queue.len()
    }

    /// Segments waiting to enter the send window (`RingBufferSndQueue`).
    pub fn snd_queue_len(&self) -> usize {
        self.snd_queue.len()
    }

    /// Segments in the send window, sent or not (`RingBufferSndBuffer`).
    pub fn snd_buf_len(&self) -> usize {
        self.snd_buf.len()
    }

    /// In-order segments ready to be read (`RingBufferRcvQueue`).
    pub fn rcv_queue_len(&self) -> usize {
        self.rcv_queue.len()
    }

    /// Out-of-order segments held (at most one per sn within the receive
    /// window; walks the receive buffer).
    pub fn rcv_buf_len(&self) -> usize {
        self.rcv_buf.iter().filter(|s| s.is_some()).count() + self.rcv_far.len()
    }

    /// ACKs waiting for the next flush.
    pub fn pending_acks(&self) -> usize {
        self.acklist.len()
    }

    /// Send window (segments).
    pub fn snd_wnd(&self) -> u32 {
        self.snd_wnd
    }

    /// Receive window (segments).
    pub fn rcv_wnd(&self) -> u32 {
        self.rcv_wnd
    }

    /// The peer's last advertised free window (segments).
    pub fn rmt_wnd(&self) -> u32 {
        self.rmt_wnd
    }

    /// Most fragments a message may have so that the peer can surely
    /// assemble it: `min(255, W)`, where `W` is the largest window the peer
    /// has advertised so far, or [`IKCP_WND_RCV`] (kcp-go's own assumption)
    /// before anything was heard.
    ///
    /// A kcp-go receiver moves at most `rcv_wnd` segments into its receive
    /// queue and delivers a message only once all its fragments are there,
    /// so a message of more than `rcv_wnd` fragments can never be delivered
    /// and stops the conversation for good (its queue stays full, it
    /// advertises a zero window). Every window it advertises is `rcv_wnd`
    /// minus its queue length, so the largest one seen is a lower bound of
    /// `rcv_wnd`. [`Kcp::send`] itself does not apply this bound (kcp-go's
    /// does not either); the session's `send_msg` does.
    pub fn max_message_fragments(&self) -> usize {
        IKCP_MAX_FRAGMENTS.min(self.rmt_wnd_max as usize)
    }

    /// Whether a segment from the peer has told us its window yet (until
    /// then [`Kcp::max_message_fragments`] is kcp-go's assumption).
    pub fn window_heard(&self) -> bool {
        self.rmt_wnd_heard
    }

    /// Asks the peer for its window: until a segment from it arrives, each
    /// full flush sends a window probe (`IKCP_CMD_WASK`, which every KCP
    /// peer answers with `IKCP_CMD_WINS`) at most once per RTO. A message
    /// sender uses it to learn the bound of [`Kcp::max_message_fragments`]
    /// before the peer has sent anything. No effect once the window is heard.
    pub fn ask_window(&mut self) {
        if !self.rmt_wnd_heard && !self.window_wanted {
            self.window_wanted = true;
            self.ts_window_ask = None;
        }
    }

    /// Congestion window (segments; meaningless with `nc = 1`).
    pub fn cwnd(&self) -> u32 {
        self.cwnd
    }

    /// Slow-start threshold (segments).
    pub fn ssthresh(&self) -> u32 {
        self.ssthresh
    }

    /// Current retransmission timeout (ms).
    pub fn rto(&self) -> u32 {
        self.rx_rto
    }

    /// Smoothed RTT (ms).
    pub fn srtt(&self) -> i32 {
        self.rx_srtt
    }

    /// RTT variation (ms).
    pub fn rttvar(&self) -> i32 {
        self.rx_rttvar
    }

    /// Flush interval (ms).
    pub fn interval(&self) -> u32 {
        self.interval
    }

    /// Oldest unacknowledged sequence number.
    pub fn snd_una(&self) -> u32 {
        self.snd_una
    }

    /// Next sequence number to assign.
    pub fn snd_nxt(&self) -> u32 {
        self.snd_nxt
    }

    /// Next sequence number expected from the peer.
    pub fn rcv_nxt(&self) -> u32 {
        self.rcv_nxt
    }

    /// Transmissions of one segment after which [`Kcp::is_dead_link`] turns on (20).
    pub fn dead_link(&self) -> u32 {
        self.dead_link
    }

    /// True once any segment has been transmitted `dead_link` times (kcp-go's
    /// `state = 0xFFFFFFFF`; sticky). kcp-go itself never acts on it; the
    /// session layer may close with [`Error::DeadLink`].
    pub fn is_dead_link(&self) -> bool {
        self.dead
    }

    /// Highest transmission count among segments still in flight (walks the
    /// send buffer; [`Kcp::is_dead_link`] is the O(1) check).
    pub fn max_xmit(&self) -> u32 {
        self.snd_buf
            .iter()
            .filter(|s| !s.acked)
            .map(|s| s.xmit)
            .max()
            .unwrap_or(0)
    }

    /// Counters since creation.
    pub fn stats(&self) -> &KcpStats {
        &self.stats
    }

    // ------------------------------------------------------------------
    // user side: send / recv
    // ------------------------------------------------------------------

    /// Queues `data` for sending (kcp-go `Send`). Message mode splits it into
    /// at most 255 fragments of `mss` bytes; stream mode first tops up the
    /// last queued segment. Nothing is transmitted until the next flush.
    /// Unlike kcp-go, a refused call leaves the queue untouched.
    pub fn send(&mut self, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Err(Error::EmptyMessage);
        }
        crate::trace::trace!(len = data.len(), stream = self.stream, "send");
        let mss = self.mss;
        let mut rest = data;
        if self.stream {
            let room = match self.snd_queue.back() {
                Some(last) if last.data.len() < mss => mss - last.data.len(),
                _ => 0,
            };
            let take = room.min(rest.len());
            let fragments = (rest.len() - take).div_ceil(mss);
            if fragments > IKCP_MAX_FRAGMENTS {
                return Err(Error::MessageTooLarge {
                    len: data.len(),
                    fragments,
                    max: IKCP_MAX_FRAGMENTS,
                });
            }
            if take > 0 {
                if let Some(last) = self.snd_queue.back_mut() {
                    last.data.extend_from_slice(&rest[..take]);
                }
                rest = &rest[take..];
            }
            if rest.is_empty() {
                return Ok(());
            }
        }
        let count = rest.len().div_ceil(mss).max(1);
        if count > IKCP_MAX_FRAGMENTS {
            return Err(Error::MessageTooLarge {
                len: data.len(),
                fragments: count,
                max: IKCP_MAX_FRAGMENTS,
            });
        }
        for i in 0..count {
            let size = rest.len().min(mss);
            let mut buf = self.get_buf();
            buf.extend_from_slice(&rest[..size]);
            rest = &rest[size..];
            let frg = if self.stream {
                0
            } else {
                (count - i - 1) as u8
            };
            self.snd_queue.push_back(QueuedSeg { frg, data: buf });
        }
        Ok(())
    }

    /// Size of the next complete message, if one is ready (kcp-go `PeekSize`).
    pub fn peek_size(&self) -> Option<usize> {
        let front = self.rcv_queue.front()?;
        if front.frg == 0 {
            return Some(front.data.len());
        }
        if self.rcv_queue.len() < usize::from(front.frg) + 1 {
            return None;
        }
        let mut n = 0;
        for seg in &self.rcv_queue {
            n += seg.data.len();
            if seg.frg == 0 {
                break;
            }
        }
        Some(n)
    }

    /// Reads the next complete message (in stream mode: the next segment's
    /// bytes) into `buf` (kcp-go `Recv`). `Ok(None)` when nothing is ready;
    /// [`Error::BufferTooSmall`] if `buf` cannot hold it (nothing is consumed).
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>> {
        let Some(size) = self.peek_size() else {
            return Ok(None);
        };
        if size > buf.len() {
            return Err(Error::BufferTooSmall {
                need: size,
                have: buf.len(),
            });
        }
        let fast_recover = self.rcv_queue.len() >= self.rcv_wnd as usize;
        let mut n = 0;
        while let Some(seg) = self.rcv_queue.pop_front() {
            let end = (n + seg.data.len()).min(buf.len());
            let len = end - n;
            buf[n..end].copy_from_slice(&seg.data[..len]);
            n = end;
            let frg = seg.frg;
            self.put_buf(seg.data);
            if frg == 0 {
                break;
            }
        }
        self.move_rcv_buf();
        crate::trace::trace!(len = n, "recv");
        if self.rcv_queue.len() < self.rcv_wnd as usize && fast_recover {
            // §5.4 fast recover: tell the peer our window has reopened.
            self.probe |= IKCP_ASK_TELL;
        }
        Ok(Some(n))
    }

    // ------------------------------------------------------------------
    // network side: input
    // ------------------------------------------------------------------

    /// Feeds one datagram's KCP bytes (kcp-go `Input`, §5.3). `kind` says
    /// whether it arrived as sent or was rebuilt by FEC (§4.4);
    /// `ack_no_delay` flushes pending ACKs at once. May call `out` (the
    /// immediate flushes of §5.3).
    ///
    /// Errors, like kcp-go's return codes (§3): [`Error::Truncated`] if
    /// shorter than 24 bytes (-1) or a segment's data is cut short (-2),
    /// [`Error::ConvMismatch`] (-1), [`Error::Malformed`] for an unknown
    /// command (-3). Segments before the bad one stay applied; RTT, cwnd and
    /// the immediate flush are skipped.
    ///
    /// Only datagrams that end in an error can pile up ACKs between flushes
    /// (a good one triggers ack clocking), so a flood of them could grow the
    /// ACK list without bound until the next timer flush. It is capped at
    /// `max(2·rcv_wnd, 2·mtu/24, 1024)` entries; further ACKs are dropped
    /// until a flush (kcp-go has no cap; no well-formed traffic reaches it).
    pub fn input(
        &mut self,
        data: &[u8],
        kind: PacketKind,
        ack_no_delay: bool,
        now_ms: u32,
        out: &mut impl Output,
    ) -> Result<()> {
        self.advance_clock(now_ms);
        let prior_una = self.snd_una;
        if data.len() < IKCP_OVERHEAD {
            return Err(Error::Truncated("KCP datagram shorter than 24 bytes"));
        }
        self.batch.clear();
        self.una_freed.clear();
        self.una_freed_from = self.snd_una;
        let mut latest = 0u32;
        let mut update_rtt = false;
        let mut in_segs = 0u64;
        let mut flush_segments = false;
        let mut rest = data;
        let result = loop {
            let Ok(h) = SegmentHeader::decode(rest) else {
                break Ok(());
            };
            rest = &rest[IKCP_OVERHEAD..];
            if h.conv != self.conv {
                break Err(Error::ConvMismatch {
                    expected: self.conv,
                    got: h.conv,
                });
            }
            let Some(body) = usize::try_from(h.len).ok().and_then(|n| rest.get(..n)) else {
                break Err(Error::Truncated(
                    "KCP segment data shorter than its len field",
                ));
            };
            if !(IKCP_CMD_PUSH..=IKCP_CMD_WINS).contains(&h.cmd) {
                break Err(Error::Malformed("unknown KCP command"));
            }
            trace_segment("in", &h, kind != PacketKind::Regular);
            // §4.4: only packets that came off the wire carry a fresh window.
            if kind == PacketKind::Regular {
                self.rmt_wnd = u32::from(h.wnd);
                self.rmt_wnd_max = self.rmt_wnd_max.max(self.rmt_wnd);
                self.rmt_wnd_heard = true;
            }
            if self.parse_una(h.una) > 0 {
                flush_segments = true;
            }
            match h.cmd {
                IKCP_CMD_ACK => {
                    // Evidence the peer got what we sent at `ts`, on our
                    // clock (a ts from the future counts as now; one over
                    // 2^30 ms old as none).
                    let age = itimediff(now_ms, h.ts);
                    if age < 1 << 30 {
                        let at = self.clock - i64::from(age.max(0));
                        self.heard_upto = self.heard_upto.max(at);
                    }
                    let fresh = self.acks_last_transmission(h.sn, h.ts);
                    self.parse_ack(h.sn);
                    if itimediff(h.sn, self.snd_una) >= 0 && itimediff(h.sn, self.snd_nxt) < 0 {
                        self.batch.push((h.sn, h.ts));
                    }
                    if fresh || self.rtt_samples == RttSamples::EveryAck {
                        update_rtt = true;
                        latest = h.ts;
                    }
                }
                IKCP_CMD_PUSH => {
                    let mut repeat = true;
                    if itimediff(h.sn, self.rcv_nxt.wrapping_add(self.rcv_wnd)) < 0 {
                        if self.acklist.len() < self.ack_limit() {
                            self.acklist.push((h.sn, h.ts));
                        }
                        if itimediff(h.sn, self.rcv_nxt) >= 0 {
                            repeat = self.parse_data(h.sn, h.frg, body);
                        }
                    }
                    if kind == PacketKind::Regular && repeat {
                        self.stats.repeat_segs += 1;
                    }
                }
                IKCP_CMD_WASK => self.probe |= IKCP_ASK_TELL,
                _ => {} // IKCP_CMD_WINS: the window was taken above.
            }
            in_segs += 1;
            rest = &rest[body.len()..];
        };
        let fast_ack = self.apply_fastacks(!flush_segments && result.is_ok(), now_ms);
        result?;
        // Segments held while the peer was silent go out now if an ACK showed
        // it received something sent no earlier than they were.
        let released =
            self.heard_upto > self.heard_released && self.release_held(self.heard_upto) > 0;
        self.heard_released = self.heard_upto;
        if self.heard_upto >= self.silent_probe_sent {
            // The peer got the last probe: no more pacing for the next loss.
            self.silent_probe_due = i64::MIN;
        }
        self.stats.in_segs += in_segs;

        if update_rtt && kind == PacketKind::Regular {
            let rtt = itimediff(now_ms, latest);
            if rtt >= 0 {
                self.update_ack(rtt);
            }
        }

        if self.nocwnd == 0 && itimediff(self.snd_una, prior_una) > 0 && self.cwnd < self.rmt_wnd {
            let mss = self.mss as u32;
            if self.cwnd < self.ssthresh {
                self.cwnd += 1;
                self.incr = self.incr.wrapping_add(mss);
            } else {
                if self.incr < mss {
                    self.incr = mss;
                }
                let step = mss.wrapping_mul(mss) / self.incr.max(1) + mss / 16;
                self.incr = self.incr.wrapping_add(step);
                if (self.cwnd.wrapping_add(1)).wrapping_mul(mss) <= self.incr {
                    self.cwnd = self.incr.wrapping_add(mss - 1) / mss.max(1);
                }
            }
            if self.cwnd > self.rmt_wnd {
                self.cwnd = self.rmt_wnd;
                self.incr = self.rmt_wnd.wrapping_mul(mss);
            }
        }

        // §5.3 end: immediate flushes.
        if flush_segments || fast_ack || released {
            self.flush(FlushKind::Full, now_ms, out);
        } else if self.acklist.len() >= self.mtu / IKCP_OVERHEAD {
            // Ack clocking (v5.6.29+).
            self.flush(FlushKind::AckOnly, now_ms, out);
        } else if ack_no_delay && !self.acklist.is_empty() {
            self.flush(FlushKind::AckOnly, now_ms, out);
        }
        Ok(())
    }

    // ------------------------------------------------------------------
    // output side: flush / update / deadline
    // ------------------------------------------------------------------

    /// kcp-go `flush` (§5.2): writes pending ACKs, window probes and (for
    /// [`FlushKind::Full`]) due transmissions to `out`, packed into datagrams
    /// of at most `mtu` bytes. Returns kcp-go's suggested delay (ms) before
    /// the next flush: the interval, or less if a retransmission is due sooner.
    pub fn flush(&mut self, kind: FlushKind, now_ms: u32, out: &mut impl Output) -> u32 {
        self.advance_clock(now_ms);
        let now = now_ms;
        let mtu = self.mtu;
        let mut buf = std::mem::take(&mut self.buffer);
        buf.clear();
        let mut tmpl = SegmentHeader {
            conv: self.conv,
            cmd: IKCP_CMD_ACK,
            frg: 0,
            wnd: self.wnd_unused(),
            ts: 0,
            sn: 0,
            una: self.rcv_nxt,
            len: 0,
        };

        // Phase 1: ACKs. §5.2.1: acks below rcv_nxt are already covered by
        // una and are dropped, except the last one.
        let n_acks = self.acklist.len();
        for (i, &(sn, ts)) in self.acklist.iter().enumerate() {
            if itimediff(sn, self.rcv_nxt) >= 0 || i + 1 == n_acks {
                tmpl.sn = sn;
                tmpl.ts = ts;
                put_header(&mut buf, &tmpl, 0, mtu, out, &mut self.stats);
            }
        }
        self.acklist.clear();

        // Phase 2: window probe timer.
        if self.rmt_wnd == 0 {
            if self.probe_wait == 0 {
                self.probe_wait = IKCP_PROBE_INIT;
                self.ts_probe = now.wrapping_add(self.probe_wait);
            } else if itimediff(now, self.ts_probe) >= 0 {
                if self.probe_wait < IKCP_PROBE_INIT {
                    self.probe_wait = IKCP_PROBE_INIT;
                }
                self.probe_wait += self.probe_wait / 2;
                if self.probe_wait > IKCP_PROBE_LIMIT {
                    self.probe_wait = IKCP_PROBE_LIMIT;
                }
                self.ts_probe = now.wrapping_add(self.probe_wait);
                self.probe |= IKCP_ASK_SEND;
            }
        } else {
            self.ts_probe = 0;
            self.probe_wait = 0;
        }

        // A window asked for by `ask_window` (not a kcp-go rule: only sent
        // on request, and WASK is an ordinary probe to the peer).
        if self.window_wanted {
            if self.rmt_wnd_heard {
                self.window_wanted = false;
            } else if self.ts_window_ask.is_none_or(|t| itimediff(now, t) >= 0) {
                self.probe |= IKCP_ASK_SEND;
                self.ts_window_ask = Some(now.wrapping_add(self.rx_rto.max(IKCP_RTO_MIN)));
            }
        }

        // Phase 3: probes reuse the template, so they carry the last ACK's sn/ts.
        if self.probe & IKCP_ASK_SEND != 0 {
            tmpl.cmd = IKCP_CMD_WASK;
            put_header(&mut buf, &tmpl, 0, mtu, out, &mut self.stats);
        }
        if self.probe & IKCP_ASK_TELL != 0 {
            tmpl.cmd = IKCP_CMD_WINS;
            put_header(&mut buf, &tmpl, 0, mtu, out, &mut self.stats);
        }
        self.probe = 0;

        // Phase 4: queue -> buffer within the effective window.
        let cwnd = self.effective_window();
        let mut new_segs = 0u32;
        while itimediff(self.snd_nxt, self.snd_una.wrapping_add(cwnd)) < 0 {
            let Some(q) = self.snd_queue.pop_front() else {
                break;
            };
            self.ensure_ring(self.snd_buf.len() + 1);
            let sn = self.snd_nxt;
            self.snd_buf.push_back(SndSeg {
                frg: q.frg,
                acked: false,
                in_t: true,
                in_f: false,
                in_r: false,
                held: false,
                ts: 0,
                ts_key: 0,
                xmit: 0,
                rto: 0,
                resendts: 0,
                due: 0,
                fastack: 0,
                data: q.data,
            });
            self.t_bits.insert(sn);
            self.snd_nxt = sn.wrapping_add(1);
            new_segs += 1;
        }

        let resent = if self.fastresend > 0 {
            self.fastresend as u32
        } else {
            SENTINEL
        };

        // Phase 5.
        let mut next_update = self.interval;
        let (mut lost, mut fast, mut early) = (0u64, 0u64, 0u64);
        if kind == FlushKind::Full {
            let clock = self.clock;
            let una = self.snd_una;
            let len = self.snd_buf.len() as u32;
            let mut cands = std::mem::take(&mut self.cands);
            cands.clear();
            let mut cur = 0u32;
            while let Some(sn) = self.f_bits.next_in(una.wrapping_add(cur), len - cur) {
                let off = sn.wrapping_sub(una);
                cands.push(off);
                cur = off + 1;
            }
            while let Some(&Reverse((due, sn, xmit))) = self.rto_heap.peek() {
                if due > clock {
                    break;
                }
                self.rto_heap.pop();
                let off = sn.wrapping_sub(una);
                if let Some(seg) = self.snd_buf.get(off as usize) {
                    if !seg.acked && seg.xmit == xmit {
                        cands.push(off);
                    }
                }
            }
            cands.sort_unstable();
            cands.dedup();
            let unsent_from = itimediff(self.sent_upto, una).max(0) as u32;
            let rx_rto = self.rx_rto;
            let back_off = if self.nodelay == 0 {
                rx_rto
            } else {
                rx_rto / 2
            };
            let unsent = (unsent_from.min(len))..len;
            let silent_rule = self.timeout_resend == TimeoutResend::ProbeWhileSilent;
            for off in cands.iter().copied().chain(unsent) {
                let Some(seg) = self.snd_buf.get_mut(off as usize) else {
                    continue;
                };
                if seg.acked {
                    continue;
                }
                let sn = una.wrapping_add(off);
                if seg.xmit == 0 {
                    seg.rto = rx_rto;
                } else if seg.fastack >= resent && seg.fastack != SENTINEL {
                    seg.fastack = SENTINEL;
                    seg.rto = rx_rto;
                    fast += 1;
                } else if seg.fastack > 0 && seg.fastack != SENTINEL && new_segs == 0 {
                    seg.fastack = SENTINEL;
                    seg.rto = rx_rto;
                    early += 1;
                } else if seg.due <= clock {
                    // No ACK has shown the peer got anything sent since this
                    // segment: one probe per backed-off RTO, the rest wait
                    // (docs/wire.md §5.2.5).
                    let silent = silent_rule && seg.ts_key > self.heard_upto;
                    if silent && clock < self.silent_probe_due {
                        seg.due = self.silent_probe_due.max(clock + 1);
                        seg.resendts = now.wrapping_add((seg.due - clock) as u32);
                        if !seg.held {
                            seg.held = true;
                            self.held.push(sn);
                        }
                        self.rto_heap.push(Reverse((seg.due, sn, seg.xmit)));
                        continue;
                    }
                    seg.rto = seg.rto.wrapping_add(back_off).min(i32::MAX as u32);
                    seg.fastack = 0;
                    lost += 1;
                    if silent {
                        // The next probe no sooner than this one's own RTO.
                        self.silent_probe_due = clock + i64::from(seg.rto);
                        self.silent_probe_sent = clock;
                    }
                } else {
                    continue;
                }
                seg.held = false;
                seg.resendts = now.wrapping_add(seg.rto);
                seg.due = clock + i64::from(seg.rto);
                seg.xmit = seg.xmit.wrapping_add(1);
                seg.ts = now;
                seg.ts_key = clock;
                if seg.xmit >= self.dead_link {
                    self.dead = true;
                }
                // Index upkeep for the new fastack value.
                let f_now = seg.fastack > 0 && seg.fastack != SENTINEL;
                if seg.fastack == SENTINEL {
                    if seg.in_t {
                        seg.in_t = false;
                        self.t_bits.remove(sn);
                    }
                } else if !seg.in_t {
                    seg.in_t = true;
                    self.t_bits.insert(sn);
                }
                if f_now != seg.in_f {
                    seg.in_f = f_now;
                    if f_now {
                        self.f_bits.insert(sn);
                    } else {
                        self.f_bits.remove(sn);
                    }
                }
                self.rto_heap.push(Reverse((seg.due, sn, seg.xmit)));
                let h = SegmentHeader {
                    conv: self.conv,
                    cmd: IKCP_CMD_PUSH,
                    frg: seg.frg,
                    wnd: tmpl.wnd,
                    ts: seg.ts,
                    sn,
                    una: tmpl.una,
                    len: seg.data.len() as u32,
                };
                put_header(&mut buf, &h, seg.data.len(), mtu, out, &mut self.stats);
                buf.extend_from_slice(&seg.data);
            }
            self.cands = cands;
            self.sent_upto = self.snd_nxt;

            // Nearest resend deadline among unacknowledged segments.
            while let Some(&Reverse((due, sn, xmit))) = self.rto_heap.peek() {
                let live = self
                    .snd_buf
                    .get(sn.wrapping_sub(una) as usize)
                    .is_some_and(|s| !s.acked && s.xmit == xmit);
                if live {
                    let d = due - clock;
                    if d > 0 && d < i64::from(next_update) {
                        next_update = d as u32;
                    }
                    break;
                }
                self.rto_heap.pop();
            }
            if self.rto_heap.len() > 2 * self.snd_buf.len() + 64 {
                self.rebuild_heap();
            }
            if self.held.len() > 2 * self.snd_buf.len() + 64 {
                self.compact_held();
            }
        }
        if !buf.is_empty() {
            out.output(&buf);
        }
        self.buffer = buf;

        // Phase 6: counters and congestion window.
        let change = fast + early;
        self.stats.lost_segs += lost;
        self.stats.fast_retrans_segs += fast;
        self.stats.early_retrans_segs += early;
        self.stats.retrans_segs += lost + change;
        if self.nocwnd == 0 {
            if change > 0 {
                let inflight = self.snd_nxt.wrapping_sub(self.snd_una);
                self.ssthresh = (inflight / 2).max(IKCP_THRESH_MIN);
                // §5.2.7 quirk: with resend <= 0 this wraps to ssthresh - 1.
                self.cwnd = self.ssthresh.wrapping_add(resent);
                self.incr = self.cwnd.wrapping_mul(self.mss as u32);
            }
            if lost > 0 {
                self.ssthresh = (cwnd / 2).max(IKCP_THRESH_MIN);
                self.cwnd = 1;
                self.incr = self.mss as u32;
            }
            if self.cwnd < 1 {
                self.cwnd = 1;
                self.incr = self.mss as u32;
            }
        }
        next_update
    }

    /// The timer tick: `flush(Full)` and remember when the next tick is due
    /// (`now + ` the returned delay), as kcp-go's session `update` does.
    /// Flushes triggered by input or writes do not move the tick.
    pub fn update(&mut self, now_ms: u32, out: &mut impl Output) -> u32 {
        let delay = self.flush(FlushKind::Full, now_ms, out);
        self.next_tick = Some(now_ms.wrapping_add(delay));
        delay
    }

    /// The send window a flush fills: `snd_wnd`, the peer's window and, with
    /// congestion control on, `cwnd` (§5.2).
    fn effective_window(&self) -> u32 {
        let wnd = self.snd_wnd.min(self.rmt_wnd);
        if self.nocwnd == 0 {
            wnd.min(self.cwnd)
        } else {
            wnd
        }
    }

    /// Whether queued segments wait for the send window
    /// ([`SendWindow::Full`]), could enter it at the next full flush
    /// ([`SendWindow::Open`]), or nothing is queued ([`SendWindow::Idle`]).
    pub fn send_window(&self) -> SendWindow {
        if self.snd_queue.is_empty() {
            SendWindow::Idle
        } else if itimediff(
            self.snd_nxt,
            self.snd_una.wrapping_add(self.effective_window()),
        ) < 0
        {
            SendWindow::Open
        } else {
            SendWindow::Full
        }
    }

    /// Whether a window tell (`IKCP_CMD_WINS`) is owed to the peer: it asked
    /// (WASK), or a read reopened a receive window that was full (§5.4).
    pub fn owes_window_tell(&self) -> bool {
        self.probe & IKCP_ASK_TELL != 0
    }

    /// When [`Kcp::update`] should run next (absolute, on the `now_ms` clock),
    /// or `None` when there is nothing to do at all: nothing queued or in
    /// flight, no ACK or window probe pending, and the peer's window open. An
    /// overdue tick (or the first one) is reported as `now_ms`.
    pub fn next_deadline(&self, now_ms: u32) -> Option<u32> {
        let asking_window = self.window_wanted && !self.rmt_wnd_heard;
        let idle = self.snd_queue.is_empty()
            && self.snd_buf.is_empty()
            && self.acklist.is_empty()
            && self.probe == 0
            && !asking_window
            && self.rmt_wnd != 0;
        if idle {
            return None;
        }
        match self.next_tick {
            Some(t) if itimediff(t, now_ms) > 0 => Some(t),
            _ => Some(now_ms),
        }
    }

    /// kcp-go v5.7 `ResetRTO` (§12): makes every unacknowledged segment that
    /// has been sent due for retransmission at the next
    /// [`FlushKind::Full`] flush, for when the caller knows the path is back
    /// and does not want to wait out backed-off timers.
    ///
    /// Like kcp-go, each such segment's own RTO goes back to the current
    /// `rx_rto` and its resend time becomes `now_ms`; `xmit` and `fastack`
    /// are left alone. Nothing is sent here. At that next flush the segments
    /// take kcp-go's usual branches (a fast- or early-retransmit candidate
    /// still counts as one; the rest are RTO retransmissions, counted in
    /// `lost_segs`, backed off from `rx_rto`, and with congestion control on
    /// they collapse `cwnd` to 1 exactly as a timeout would). Segments never
    /// sent yet go out at that flush anyway and are not touched.
    pub fn reset_rto(&mut self, now_ms: u32) {
        self.advance_clock(now_ms);
        let (clock, rx_rto) = (self.clock, self.rx_rto);
        for seg in self.snd_buf.iter_mut() {
            if seg.acked || seg.xmit == 0 {
                continue;
            }
            seg.rto = rx_rto;
            seg.resendts = now_ms;
            seg.due = clock;
            seg.held = false;
        }
        self.held.clear();
        self.silent_probe_due = i64::MIN;
        // The application vouches that the path works again: everything
        // sent so far goes out at the next flush, as in kcp-go, not one probe.
        self.heard_upto = self.heard_upto.max(clock);
        // Every live deadline changed: rebuild rather than push, so repeated
        // calls cannot grow the heap.
        self.rebuild_heap();
    }

    // ------------------------------------------------------------------
    // internals
    // ------------------------------------------------------------------

    fn advance_clock(&mut self, now: u32) {
        if self.clock_init {
            self.clock += i64::from(itimediff(now, self.last_now));
        } else {
            self.clock_init = true;
            self.clock = i64::from(now);
        }
        self.last_now = now;
    }

    fn ack_limit(&self) -> usize {
        (2 * (self.rcv_wnd as usize).min(RCV_DENSE))
            .max(2 * self.mtu / IKCP_OVERHEAD)
            .max(1024)
    }

    fn get_buf(&mut self) -> Vec<u8> {
        self.pool
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.mss))
    }

    fn put_buf(&mut self, mut v: Vec<u8>) {
        if self.pool.len() < POOL_MAX && v.capacity() >= self.mss {
            v.clear();
            self.pool.push(v);
        }
    }

    fn wnd_unused(&self) -> u16 {
        let used = self.rcv_queue.len();
        let free = if used < self.rcv_wnd as usize {
            // kcp-go truncates to u16 as well.
            (self.rcv_wnd as usize - used) as u16
        } else {
            0
        };
        if self.front_incomplete() {
            // The queue holds only part of a message and nothing deliverable:
            // invite the fragments still missing (at most a window's worth at
            // a time), or a sender of a message longer than our window would
            // see a zero window forever. Any value up to rcv_wnd is one
            // kcp-go could have sent; it never exceeds rcv_wnd, so a peer's
            // lower bound of our window (`max_message_fragments`) stays true.
            let missing = usize::from(self.rcv_queue.front().map_or(0, |f| f.frg)) + 1 - used;
            free.max(missing.min(self.rcv_wnd as usize) as u16)
        } else {
            free
        }
    }

    /// The queue holds an incomplete message and nothing else: its front
    /// message (the only one `recv` can deliver next) lacks fragments. The
    /// queue then may grow past `rcv_wnd`, up to that message's fragment
    /// count (at most 256), so no sender can wedge us with a message longer
    /// than our window; kcp-go caps the queue at `rcv_wnd` and wedges.
    fn front_incomplete(&self) -> bool {
        self.rcv_queue
            .front()
            .is_some_and(|f| self.rcv_queue.len() < usize::from(f.frg) + 1)
    }

    /// Drops `held` entries whose segment is no longer held, and repeats
    /// (a segment held, sent and held again is listed twice).
    fn compact_held(&mut self) {
        let una = self.snd_una;
        let snd_buf = &self.snd_buf;
        self.held.sort_unstable();
        self.held.dedup();
        self.held.retain(|&sn| {
            snd_buf
                .get(sn.wrapping_sub(una) as usize)
                .is_some_and(|s| s.held && !s.acked)
        });
    }

    /// Makes every held segment sent no later than `upto` due now; returns
    /// how many.
    fn release_held(&mut self, upto: i64) -> usize {
        if self.held.is_empty() {
            return 0;
        }
        let (una, clock) = (self.snd_una, self.clock);
        let mut held = std::mem::take(&mut self.held);
        let mut released = 0;
        held.retain(|&sn| {
            let Some(seg) = self.snd_buf.get_mut(sn.wrapping_sub(una) as usize) else {
                return false;
            };
            if !seg.held || seg.acked {
                seg.held = false;
                return false;
            }
            if seg.ts_key > upto {
                return true;
            }
            seg.held = false;
            seg.due = clock;
            seg.resendts = self.last_now;
            self.rto_heap.push(Reverse((clock, sn, seg.xmit)));
            released += 1;
            false
        });
        self.held = held;
        released
    }

    /// RTT estimator of kcp-go (§5.3), not C KCP's.
    fn update_ack(&mut self, rtt: i32) {
        if self.rx_srtt == 0 {
            self.rx_srtt = rtt;
            self.rx_rttvar = rtt >> 1;
        } else {
            let mut delta = rtt.wrapping_sub(self.rx_srtt);
            self.rx_srtt = self.rx_srtt.wrapping_add(delta >> 3);
            delta = delta.wrapping_abs();
            let adj = delta.wrapping_sub(self.rx_rttvar);
            if rtt < self.rx_srtt.wrapping_sub(self.rx_rttvar) {
                // Samples below the expected range get 1/8 of the usual weight.
                self.rx_rttvar = self.rx_rttvar.wrapping_add(adj >> 5);
            } else {
                self.rx_rttvar = self.rx_rttvar.wrapping_add(adj >> 2);
            }
        }
        let rto = (self.rx_srtt as u32)
            .wrapping_add(self.interval.max((self.rx_rttvar as u32).wrapping_shl(2)));
        self.rx_rto = rto.max(self.rx_minrto).min(IKCP_RTO_MAX);
    }

    /// Drops every segment below `una`; returns how many.
    fn parse_una(&mut self, una: u32) -> usize {
        let mut count = 0;
        while itimediff(una, self.snd_una) > 0 {
            let Some(mut seg) = self.snd_buf.pop_front() else {
                break;
            };
            let sn = self.snd_una;
            self.una_freed.push((!seg.acked).then_some(seg.ts));
            self.unindex(sn, &seg);
            seg.in_t = false;
            let data = std::mem::take(&mut seg.data);
            self.put_buf(data);
            self.snd_una = sn.wrapping_add(1);
            count += 1;
        }
        if self.snd_buf.is_empty() {
            self.snd_una = self.snd_nxt;
        }
        count
    }

    fn unindex(&mut self, sn: u32, seg: &SndSeg) {
        if seg.in_t {
            self.t_bits.remove(sn);
        }
        if seg.in_f {
            self.f_bits.remove(sn);
        }
        if seg.in_r {
            self.r_count -= 1;
            if self.r_bits.remove(sn) {
                let b = self.r_bits.block(sn);
                if let Some(m) = self.r_min.get_mut(b) {
                    *m = i64::MAX;
                }
                let sb = b / 64;
                let lo = sb * 64;
                let hi = (lo + 64).min(self.r_min.len());
                let m2 = self
                    .r_min
                    .get(lo..hi)
                    .map_or(i64::MAX, |r| r.iter().copied().min().unwrap_or(i64::MAX));
                if let Some(m) = self.r_min2.get_mut(sb) {
                    *m = m2;
                }
            }
        }
    }

    fn is_ripe(&self, fastack: u32) -> bool {
        fastack != SENTINEL && fastack + 1 >= self.fastresend as u32
    }

    /// Whether an ACK of `sn` echoing `ts` is the first news of the
    /// segment's latest transmission, the only ACK the RTT estimate learns
    /// from (docs/wire.md §5.3). It is not when the segment was acknowledged
    /// before, or when it echoes an earlier copy: a copy that FEC recovered
    /// or the network held after the segment was sent again, whose delay is
    /// the FEC group's or the queue's and not the path's.
    ///
    /// Called after this segment's `una` was applied, so a segment that `una`
    /// freed in this same datagram is looked up in `una_freed`.
    fn acks_last_transmission(&mut self, sn: u32, ts: u32) -> bool {
        if itimediff(sn, self.snd_una) >= 0 {
            let off = sn.wrapping_sub(self.snd_una) as usize;
            return itimediff(sn, self.snd_nxt) < 0
                && self
                    .snd_buf
                    .get(off)
                    .is_some_and(|seg| !seg.acked && seg.ts == ts);
        }
        let off = sn.wrapping_sub(self.una_freed_from) as usize;
        self.una_freed
            .get_mut(off)
            .is_some_and(|slot| slot.take() == Some(ts))
    }

    fn parse_ack(&mut self, sn: u32) {
        if itimediff(sn, self.snd_una) < 0 || itimediff(sn, self.snd_nxt) >= 0 {
            return;
        }
        let off = sn.wrapping_sub(self.snd_una) as usize;
        let thr = self.fastresend as u32;
        let Some(seg) = self.snd_buf.get_mut(off) else {
            return;
        };
        if seg.acked {
            return;
        }
        seg.acked = true;
        let data = std::mem::take(&mut seg.data);
        if seg.in_f {
            seg.in_f = false;
            self.f_bits.remove(sn);
        }
        if seg.in_t && seg.xmit > 0 && seg.fastack != SENTINEL && seg.fastack + 1 >= thr {
            seg.in_t = false;
            seg.in_r = true;
            let key = seg.ts_key;
            self.t_bits.remove(sn);
            self.insert_r(sn, key);
        }
        self.put_buf(data);
    }

    fn insert_r(&mut self, sn: u32, key: i64) {
        self.r_bits.insert(sn);
        self.r_count += 1;
        let b = self.r_bits.block(sn);
        if let Some(m) = self.r_min.get_mut(b) {
            *m = (*m).min(key);
        }
        if let Some(m) = self.r_min2.get_mut(b / 64) {
            *m = (*m).min(key);
        }
    }

    /// Stores a PUSH in the receive buffer; true if it was a duplicate or
    /// outside the window.
    fn parse_data(&mut self, sn: u32, frg: u8, data: &[u8]) -> bool {
        if itimediff(sn, self.rcv_nxt.wrapping_add(self.rcv_wnd)) >= 0
            || itimediff(sn, self.rcv_nxt) < 0
        {
            return true;
        }
        let idx = sn.wrapping_sub(self.rcv_nxt) as usize;
        if idx >= RCV_DENSE {
            let key = self.rcv_nxt_u + idx as u64;
            if self.rcv_far.contains_key(&key) {
                return true;
            }
            let mut buf = self.get_buf();
            buf.extend_from_slice(data);
            self.rcv_far.insert(key, RcvSeg { frg, data: buf });
            return false;
        }
        if idx >= self.rcv_buf.len() {
            self.rcv_buf.resize_with(idx + 1, || None);
        }
        let repeat = match self.rcv_buf.get(idx) {
            Some(Some(_)) => true,
            _ => {
                let mut buf = self.get_buf();
                buf.extend_from_slice(data);
                if let Some(slot) = self.rcv_buf.get_mut(idx) {
                    *slot = Some(RcvSeg { frg, data: buf });
                }
                false
            }
        };
        self.move_rcv_buf();
        repeat
    }

    fn move_rcv_buf(&mut self) {
        loop {
            // Far segments that are now within the dense range move in.
            while let Some(entry) = self.rcv_far.first_entry() {
                let idx = (*entry.key() - self.rcv_nxt_u) as usize;
                if idx >= RCV_DENSE {
                    break;
                }
                let seg = entry.remove();
                if idx >= self.rcv_buf.len() {
                    self.rcv_buf.resize_with(idx + 1, || None);
                }
                if let Some(slot) = self.rcv_buf.get_mut(idx) {
                    *slot = Some(seg);
                }
            }
            if !matches!(self.rcv_buf.front(), Some(Some(_)))
                || (self.rcv_queue.len() >= self.rcv_wnd as usize && !self.front_incomplete())
            {
                break;
            }
            if let Some(Some(seg)) = self.rcv_buf.pop_front() {
                self.rcv_queue.push_back(seg);
                self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
                self.rcv_nxt_u += 1;
            }
        }
    }

    /// Applies the fast-ack increments of the ACKs collected from one
    /// datagram (see module docs). Returns kcp-go's `shouldFastAck`; the
    /// ripe-acknowledged part of it is only evaluated if `check_ripe` (it
    /// cannot change anything when una advanced, as kcp-go flushes anyway).
    fn apply_fastacks(&mut self, check_ripe: bool, now: u32) -> bool {
        if self.batch.is_empty() {
            return false;
        }
        let mut batch = std::mem::take(&mut self.batch);
        let una = self.snd_una;
        // Offsets from the final una; ACKs at or below it touch no survivor.
        batch.retain_mut(|a| {
            a.0 = a.0.wrapping_sub(una);
            (a.0 as i32) > 0
        });
        let mut trigger = false;
        if !batch.is_empty() {
            batch.sort_unstable_by_key(|a| a.0);
            let b = batch.len();
            let mut all_near = true;
            self.suffix_min.clear();
            self.suffix_min.resize(b + 1, i64::MAX);
            for i in (0..b).rev() {
                let rel = itimediff(batch[i].1, now);
                all_near &= rel > -NEAR && rel < NEAR;
                self.suffix_min[i] = self.suffix_min[i + 1].min(i64::from(rel));
            }
            let max_off = batch[b - 1].0;
            let thr = self.fastresend as u32;
            // Ripe segments first: those that ripen in the sweep below have
            // already had this batch counted exactly.
            if check_ripe && self.r_count > 0 {
                trigger = self.ripe_trigger(&batch, all_near, now);
            }

            let mut idx = 0usize;
            let mut cur = 0u32;
            while let Some(sn) = self.t_bits.next_in(una.wrapping_add(cur), max_off - cur) {
                let off = sn.wrapping_sub(una);
                cur = off + 1;
                while idx < b && batch[idx].0 <= off {
                    idx += 1;
                }
                if idx == b {
                    break;
                }
                let Some(seg) = self.snd_buf.get_mut(off as usize) else {
                    break;
                };
                let rel_s = itimediff(seg.ts, now);
                let c = if all_near
                    && rel_s > -NEAR
                    && rel_s < NEAR
                    && self.suffix_min[idx] >= i64::from(rel_s)
                {
                    b - idx
                } else {
                    batch[idx..]
                        .iter()
                        .filter(|a| itimediff(seg.ts, a.1) <= 0)
                        .count()
                };
                if c == 0 || seg.fastack == SENTINEL {
                    continue;
                }
                // kcp-go stops incrementing at the sentinel.
                let f = seg.fastack.saturating_add(c as u32);
                seg.fastack = f;
                if f >= thr {
                    trigger = true;
                }
                if f == SENTINEL {
                    seg.in_t = false;
                    self.t_bits.remove(sn);
                    if seg.in_f {
                        seg.in_f = false;
                        self.f_bits.remove(sn);
                    }
                } else if seg.acked {
                    if seg.xmit > 0 && f + 1 >= thr {
                        seg.in_t = false;
                        seg.in_r = true;
                        let key = seg.ts_key;
                        self.t_bits.remove(sn);
                        self.insert_r(sn, key);
                    }
                } else if seg.xmit > 0 && !seg.in_f {
                    seg.in_f = true;
                    self.f_bits.insert(sn);
                }
            }
        }
        batch.clear();
        self.batch = batch;
        trigger
    }

    /// Whether an ACK of the batch (offsets from una, ascending) lands above a
    /// ripe acknowledged segment sent no later than the ACK's echoed ts.
    fn ripe_trigger(&self, batch: &[AckItem], all_near: bool, now: u32) -> bool {
        let una = self.snd_una;
        let key_of = |off: u32| self.snd_buf.get(off as usize).map(|s| (s.ts, s.ts_key));
        if !all_near {
            // Exact slow path for far-off echoed timestamps (hostile peers).
            let Some(max_off) = batch.last().map(|a| a.0) else {
                return false;
            };
            let mut cur = 0u32;
            while let Some(sn) = self.r_bits.next_in(una.wrapping_add(cur), max_off - cur) {
                let off = sn.wrapping_sub(una);
                cur = off + 1;
                if let Some((ts, _)) = key_of(off) {
                    if batch.iter().any(|a| a.0 > off && itimediff(ts, a.1) <= 0) {
                        return true;
                    }
                }
            }
            return false;
        }
        let mut run_min = i64::MAX;
        let mut cur = 0u32;
        for &(off_a, ts_a) in batch {
            while cur < off_a {
                let sn = una.wrapping_add(cur);
                let bit = sn & 63;
                // A whole aligned block (or 64 of them) in range: its members
                // are all live, since the ring keeps 64 spare slots.
                if sn & 4095 == 0 && off_a - cur >= 4096 {
                    if let Some(&m) = self.r_min2.get(self.r_bits.block(sn) / 64) {
                        run_min = run_min.min(m);
                    }
                    cur += 4096;
                    continue;
                }
                if bit == 0 && off_a - cur >= 64 {
                    if let Some(&m) = self.r_min.get(self.r_bits.block(sn)) {
                        run_min = run_min.min(m);
                    }
                    cur += 64;
                    continue;
                }
                let end = off_a.min(cur + (64 - bit));
                let mut c = cur;
                while let Some(rsn) = self.r_bits.next_in(una.wrapping_add(c), end - c) {
                    let off = rsn.wrapping_sub(una);
                    if let Some((_, k)) = key_of(off) {
                        run_min = run_min.min(k);
                    }
                    c = off + 1;
                }
                cur = end;
            }
            let k_a = self.clock + i64::from(itimediff(ts_a, now));
            if run_min <= k_a {
                return true;
            }
        }
        false
    }

    /// Makes the index ring hold `span` segments plus a 64-slot guard.
    fn ensure_ring(&mut self, span: usize) {
        let need = span as u64 + 64;
        if need <= u64::from(self.ring_mask) + 1 {
            return;
        }
        let cap = need.next_power_of_two().max(u64::from(MIN_RING));
        self.reindex(cap as u32);
    }

    /// Rebuilds the bit sets (and R membership under the current threshold).
    fn reindex(&mut self, cap: u32) {
        self.ring_mask = cap - 1;
        self.t_bits = RingBits::new(cap);
        self.f_bits = RingBits::new(cap);
        self.r_bits = RingBits::new(cap);
        self.r_min = vec![i64::MAX; (cap / 64) as usize];
        self.r_min2 = vec![i64::MAX; (cap / 4096).max(1) as usize];
        self.r_count = 0;
        let una = self.snd_una;
        for i in 0..self.snd_buf.len() {
            let sn = una.wrapping_add(i as u32);
            let fastack = self.snd_buf[i].fastack;
            let ripe = self.is_ripe(fastack);
            let seg = &mut self.snd_buf[i];
            seg.in_r = seg.acked && seg.xmit > 0 && ripe;
            seg.in_t = fastack != SENTINEL && !seg.in_r;
            seg.in_f = !seg.acked && seg.xmit > 0 && fastack > 0 && fastack != SENTINEL;
            let (t, f, r, key) = (seg.in_t, seg.in_f, seg.in_r, seg.ts_key);
            if t {
                self.t_bits.insert(sn);
            }
            if f {
                self.f_bits.insert(sn);
            }
            if r {
                self.insert_r(sn, key);
            }
        }
    }

    fn rebuild_heap(&mut self) {
        self.rto_heap.clear();
        let una = self.snd_una;
        for (i, s) in self.snd_buf.iter().enumerate() {
            if !s.acked && s.xmit > 0 {
                self.rto_heap
                    .push(Reverse((s.due, una.wrapping_add(i as u32), s.xmit)));
            }
        }
    }
}

/// Writes a header (and reserves room for `data_len` bytes that the caller
/// appends), first emitting the buffer as a datagram if it would overflow
/// `mtu` (kcp-go's `makeSpace`).
/// The per-segment trace (kcp-go's `IKCP_LOG_INPUT`/`OUT_*` points): `dir`
/// is "in" or "out", `rebuilt` marks segments FEC recovered.
#[inline(always)]
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
fn trace_segment(dir: &'static str, h: &SegmentHeader, rebuilt: bool) {
    crate::trace::trace!(
        dir,
        cmd = match h.cmd {
            IKCP_CMD_PUSH => "PUSH",
            IKCP_CMD_ACK => "ACK",
            IKCP_CMD_WASK => "WASK",
            IKCP_CMD_WINS => "WINS",
            _ => "?",
        },
        sn = h.sn,
        una = h.una,
        ts = h.ts,
        wnd = h.wnd,
        frg = h.frg,
        len = h.len,
        rebuilt,
        "segment"
    );
}

fn put_header(
    buf: &mut Vec<u8>,
    h: &SegmentHeader,
    data_len: usize,
    mtu: usize,
    out: &mut impl Output,
    stats: &mut KcpStats,
) {
    if !buf.is_empty() && buf.len() + IKCP_OVERHEAD + data_len > mtu {
        out.output(buf);
        buf.clear();
    }
    trace_segment("out", h, false);
    h.encode_to(buf);
    stats.out_segs += 1;
}

#[cfg(test)]
impl Kcp {
    /// (sn, fastack, xmit, ts) of unacknowledged send-buffer segments.
    pub(crate) fn debug_unacked(&self) -> Vec<(u32, u32, u32, u32)> {
        let una = self.snd_una;
        self.snd_buf
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.acked)
            .map(|(i, s)| (una.wrapping_add(i as u32), s.fastack, s.xmit, s.ts))
            .collect()
    }
}

#[cfg(test)]
impl Kcp {
    /// (sn, fastack, in_t, in_r, ts_key, ts) of acknowledged segments.
    pub(crate) fn debug_acked(&self) -> Vec<(u32, u32, bool, bool, i64, u32)> {
        let una = self.snd_una;
        self.snd_buf
            .iter()
            .enumerate()
            .filter(|(_, s)| s.acked)
            .map(|(i, s)| {
                (
                    una.wrapping_add(i as u32),
                    s.fastack,
                    s.in_t,
                    s.in_r,
                    s.ts_key,
                    s.ts,
                )
            })
            .collect()
    }
}
