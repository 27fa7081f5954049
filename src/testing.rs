//! Deterministic simulated network for tests, examples and benchmarks
//! (feature `testing`).
//!
//! * [`Link`] carries opaque datagrams between two sides, [`Side::A`] and
//!   [`Side::B`], with seeded loss, duplication, reordering, delay and jitter on
//!   a virtual millisecond clock. It knows nothing about KCP, so any layer
//!   that turns bytes into datagrams (KCP alone, or KCP+FEC+crypt) can be put
//!   on it.
//! * [`Pair`] drives two [`Endpoint`]s over a `Link` the way kcp-go's
//!   session does (timer ticks at `next_deadline`, immediate flush after each
//!   write, reads after each input). [`KcpEndpoint`] is a bare [`Kcp`];
//!   later layers implement [`Endpoint`] for KCP behind FEC and encryption
//!   and reuse the same harness.
//! * [`transfer`] moves a byte stream or a sequence of messages across any
//!   pair and checks it arrives intact; [`run_transfer`] does that for two
//!   bare engines described by a [`TransferConfig`].
//!
//! Everything is reproducible from the seed: same seed, same datagrams, same
//! virtual time.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

use crate::kcp::{FlushKind, Kcp, KcpStats, PacketKind};

/// One end of a [`Link`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The first endpoint.
    A,
    /// The second endpoint.
    B,
}

impl Side {
    /// The other end.
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// Impairments of one direction of a [`Link`]. Probabilities are in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// Probability that a datagram is dropped.
    pub loss: f64,
    /// Probability that a delivered datagram arrives twice (the copy has its
    /// own delay).
    pub duplicate: f64,
    /// Probability that a datagram is held back by up to `reorder_delay_ms`
    /// extra, so later datagrams overtake it. Otherwise a direction keeps
    /// its order (jitter does not reorder).
    pub reorder: f64,
    /// Largest extra delay of a reordered datagram or a duplicate (ms).
    pub reorder_delay_ms: u64,
    /// Base one-way delay (ms).
    pub delay_ms: u64,
    /// Uniform extra delay in `[0, jitter_ms]` (ms).
    pub jitter_ms: u64,
}

impl LinkConfig {
    /// A lossless link with a fixed one-way delay.
    pub fn perfect(delay_ms: u64) -> LinkConfig {
        LinkConfig {
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay_ms: 0,
            delay_ms,
            jitter_ms: 0,
        }
    }

    /// `loss` drop probability, 20 ms ± 5 ms delay, and (when `loss > 0`) 5%
    /// reordering by 15 ms and 2% duplication.
    pub fn lossy(loss: f64) -> LinkConfig {
        let impaired = loss > 0.0;
        LinkConfig {
            loss,
            duplicate: if impaired { 0.02 } else { 0.0 },
            reorder: if impaired { 0.05 } else { 0.0 },
            reorder_delay_ms: 15,
            delay_ms: 20,
            jitter_ms: 5,
        }
    }
}

/// Counters of a [`Link`], both directions together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams handed to [`Link::send`].
    pub sent: u64,
    /// Bytes handed to [`Link::send`].
    pub sent_bytes: u64,
    /// Datagrams dropped.
    pub dropped: u64,
    /// Extra copies created.
    pub duplicated: u64,
    /// Datagrams held back for reordering (duplicates included).
    pub reordered: u64,
    /// Datagrams delivered (copies included).
    pub delivered: u64,
}

#[derive(Debug)]
struct InFlight {
    at: u64,
    seq: u64,
    to: Side,
    bytes: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for InFlight {
    // Min-heap on (arrival time, send order).
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// A seeded two-ended datagram channel on a virtual clock (ms, `u64`).
#[derive(Debug)]
pub struct Link {
    a_to_b: LinkConfig,
    b_to_a: LinkConfig,
    rng: SmallRng,
    queue: BinaryHeap<InFlight>,
    seq: u64,
    /// Latest in-order arrival time per direction (A→B, B→A).
    last_at: [u64; 2],
    stats: LinkStats,
}

impl Link {
    /// The same impairments in both directions.
    pub fn new(config: LinkConfig, seed: u64) -> Link {
        Link::asymmetric(config.clone(), config, seed)
    }

    /// Different impairments per direction.
    pub fn asymmetric(a_to_b: LinkConfig, b_to_a: LinkConfig, seed: u64) -> Link {
        Link {
            a_to_b,
            b_to_a,
            rng: SmallRng::seed_from_u64(seed),
            queue: BinaryHeap::new(),
            seq: 0,
            last_at: [0; 2],
            stats: LinkStats::default(),
        }
    }

    /// Sends `bytes` from `from` at virtual time `now`.
    pub fn send(&mut self, from: Side, bytes: &[u8], now: u64) {
        self.stats.sent += 1;
        self.stats.sent_bytes += bytes.len() as u64;
        let cfg = match from {
            Side::A => &self.a_to_b,
            Side::B => &self.b_to_a,
        };
        let (loss, dup) = (cfg.loss, cfg.duplicate);
        if self.rng.gen_bool(loss.clamp(0.0, 1.0)) {
            self.stats.dropped += 1;
            return;
        }
        let copies = if self.rng.gen_bool(dup.clamp(0.0, 1.0)) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for copy in 0..copies {
            let cfg = match from {
                Side::A => &self.a_to_b,
                Side::B => &self.b_to_a,
            };
            let (delay, jitter, reorder, rdelay) = (
                cfg.delay_ms,
                cfg.jitter_ms,
                cfg.reorder,
                cfg.reorder_delay_ms,
            );
            let mut at = now + delay;
            if jitter > 0 {
                at += self.rng.gen_range(0..=jitter);
            }
            let held_back = copy > 0 || self.rng.gen_bool(reorder.clamp(0.0, 1.0));
            let last = match from {
                Side::A => &mut self.last_at[0],
                Side::B => &mut self.last_at[1],
            };
            if held_back {
                self.stats.reordered += 1;
                at += self.rng.gen_range(1..=rdelay.max(1));
            } else {
                // Jitter alone keeps a direction in order, like a real path's
                // queue; only `reorder` (and copies) overtake.
                at = at.max(*last);
                *last = at;
            }
            self.seq += 1;
            self.queue.push(InFlight {
                at,
                seq: self.seq,
                to: from.other(),
                bytes: bytes.to_vec(),
            });
        }
    }

    /// Arrival time of the next datagram, if any is in flight.
    pub fn next_event_time(&self) -> Option<u64> {
        self.queue.peek().map(|f| f.at)
    }

    /// The next datagram due at or before `now`: (receiving side, bytes).
    pub fn pop_due(&mut self, now: u64) -> Option<(Side, Vec<u8>)> {
        if self.queue.peek()?.at > now {
            return None;
        }
        let f = self.queue.pop()?;
        self.stats.delivered += 1;
        Some((f.to, f.bytes))
    }

    /// All datagrams due at or before `now`, in arrival order.
    pub fn deliver(&mut self, now: u64) -> Vec<(Side, Vec<u8>)> {
        let mut v = Vec::new();
        while let Some(d) = self.pop_due(now) {
            v.push(d);
        }
        v
    }

    /// Datagrams in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// Counters so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }
}

/// Something the harness can put at one end of a [`Link`]: a KCP engine
/// alone ([`KcpEndpoint`]), or one behind FEC and encryption. Datagrams go out
/// through `out`; time is the engines' `now_ms` clock.
pub trait Endpoint {
    /// Queues application bytes (one message in message mode).
    fn send(&mut self, data: &[u8]) -> crate::Result<()>;
    /// Reads the next message (message mode) or chunk (stream mode), if ready.
    fn recv(&mut self, buf: &mut [u8]) -> crate::Result<Option<usize>>;
    /// Whether a writer must wait before sending more (kcp-go's `Write`
    /// blocks while `WaitSnd >= snd_wnd`).
    fn send_blocked(&self) -> bool;
    /// Transmits what was queued (kcp-go's `Write` ends with `flush(FULL)`).
    fn flush(&mut self, now_ms: u32, out: &mut dyn FnMut(&[u8]));
    /// Takes one datagram from the link.
    fn input(&mut self, datagram: &[u8], now_ms: u32, out: &mut dyn FnMut(&[u8]));
    /// When [`Endpoint::tick`] must run next (`None`: idle, no timer).
    fn next_deadline(&self, now_ms: u32) -> Option<u32>;
    /// Timer tick.
    fn tick(&mut self, now_ms: u32, out: &mut dyn FnMut(&[u8]));
    /// The KCP counters of the engine inside.
    fn kcp_stats(&self) -> KcpStats;
}

/// A bare [`Kcp`] as an [`Endpoint`]: every datagram is fed as
/// [`PacketKind::Regular`].
#[derive(Debug)]
pub struct KcpEndpoint {
    /// The engine.
    pub kcp: Kcp,
    /// Passed to [`Kcp::input`].
    pub ack_no_delay: bool,
}

impl KcpEndpoint {
    /// Wraps an engine.
    pub fn new(kcp: Kcp) -> KcpEndpoint {
        KcpEndpoint {
            kcp,
            ack_no_delay: false,
        }
    }
}

impl Endpoint for KcpEndpoint {
    fn send(&mut self, data: &[u8]) -> crate::Result<()> {
        self.kcp.send(data)
    }
    fn recv(&mut self, buf: &mut [u8]) -> crate::Result<Option<usize>> {
        self.kcp.recv(buf)
    }
    fn send_blocked(&self) -> bool {
        self.kcp.wait_snd() >= self.kcp.snd_wnd() as usize
    }
    fn flush(&mut self, now_ms: u32, mut out: &mut dyn FnMut(&[u8])) {
        self.kcp.flush(FlushKind::Full, now_ms, &mut out);
    }
    fn input(&mut self, datagram: &[u8], now_ms: u32, mut out: &mut dyn FnMut(&[u8])) {
        // A broken datagram is dropped (a session would count it); only a
        // deliberately hostile test produces one.
        let _ = self.kcp.input(
            datagram,
            PacketKind::Regular,
            self.ack_no_delay,
            now_ms,
            &mut out,
        );
    }
    fn next_deadline(&self, now_ms: u32) -> Option<u32> {
        self.kcp.next_deadline(now_ms)
    }
    fn tick(&mut self, now_ms: u32, mut out: &mut dyn FnMut(&[u8])) {
        self.kcp.update(now_ms, &mut out);
    }
    fn kcp_stats(&self) -> KcpStats {
        *self.kcp.stats()
    }
}

/// Two endpoints joined by a [`Link`], on a virtual clock. The endpoints see
/// `now as u32 + clock_offset`, so a test can start near the u32 wrap.
#[derive(Debug)]
pub struct Pair<A, B> {
    /// Endpoint at [`Side::A`].
    pub a: A,
    /// Endpoint at [`Side::B`].
    pub b: B,
    /// The link between them.
    pub link: Link,
    /// Virtual time (ms since the start).
    pub now: u64,
    /// Added to `now` (wrapping) to get the endpoints' `now_ms`.
    pub clock_offset: u32,
}

/// Two bare KCP engines over a [`Link`].
pub type KcpPair = Pair<KcpEndpoint, KcpEndpoint>;

impl<A: Endpoint, B: Endpoint> Pair<A, B> {
    /// Joins two endpoints.
    pub fn new(a: A, b: B, link: Link) -> Pair<A, B> {
        Pair {
            a,
            b,
            link,
            now: 0,
            clock_offset: 0,
        }
    }

    /// The endpoints' clock at virtual time `now`.
    pub fn kcp_now(&self) -> u32 {
        (self.now as u32).wrapping_add(self.clock_offset)
    }

    fn deadline_of(&self, d: Option<u32>) -> Option<u64> {
        let now32 = self.kcp_now();
        d.map(|d| self.now + u64::from(d.wrapping_sub(now32).min(i32::MAX as u32)))
    }

    /// The next time something happens (a datagram arrives or a timer fires).
    pub fn next_event_time(&self) -> Option<u64> {
        let now32 = self.kcp_now();
        [
            self.link.next_event_time(),
            self.deadline_of(self.a.next_deadline(now32)),
            self.deadline_of(self.b.next_deadline(now32)),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Queues `data` on one side and flushes at once (kcp-go `Write` without
    /// write delay).
    pub fn write(&mut self, side: Side, data: &[u8]) -> crate::Result<()> {
        let now32 = self.kcp_now();
        let now = self.now;
        let link = &mut self.link;
        let mut out = |d: &[u8]| link.send(side, d, now);
        match side {
            Side::A => {
                self.a.send(data)?;
                self.a.flush(now32, &mut out);
            }
            Side::B => {
                self.b.send(data)?;
                self.b.flush(now32, &mut out);
            }
        }
        Ok(())
    }

    /// Advances to the next event (never backwards), delivers what is due and
    /// runs due timers. Returns false if nothing at all is pending.
    pub fn step(&mut self) -> bool {
        let Some(t) = self.next_event_time() else {
            return false;
        };
        self.now = self.now.max(t);
        let now = self.now;
        let now32 = self.kcp_now();
        while let Some((to, bytes)) = self.link.pop_due(now) {
            let link = &mut self.link;
            let mut out = |d: &[u8]| link.send(to, d, now);
            match to {
                Side::A => self.a.input(&bytes, now32, &mut out),
                Side::B => self.b.input(&bytes, now32, &mut out),
            }
        }
        let due = |d: Option<u32>| d.is_some_and(|d| (d.wrapping_sub(now32) as i32) <= 0);
        if due(self.a.next_deadline(now32)) {
            let link = &mut self.link;
            self.a
                .tick(now32, &mut |d: &[u8]| link.send(Side::A, d, now));
        }
        if due(self.b.next_deadline(now32)) {
            let link = &mut self.link;
            self.b
                .tick(now32, &mut |d: &[u8]| link.send(Side::B, d, now));
        }
        true
    }
}

/// How the sender cuts the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferMode {
    /// Stream mode; writes of `write_size` bytes.
    Stream {
        /// Bytes per write.
        write_size: usize,
    },
    /// Message mode; messages of random length in `1..=max_len` (at most
    /// 255·mss), whose boundaries must survive.
    Message {
        /// Longest message.
        max_len: usize,
    },
}

/// Parameters of [`run_transfer`].
#[derive(Debug, Clone)]
pub struct TransferConfig {
    /// Bytes to move from A to B.
    pub bytes: usize,
    /// Impairments (both directions).
    pub link: LinkConfig,
    /// Seed of the link and of the data.
    pub seed: u64,
    /// Stream or message mode.
    pub mode: TransferMode,
    /// `set_nodelay` arguments on both sides.
    pub nodelay: (i32, i32, i32, i32),
    /// Send and receive windows on both sides.
    pub window: (u32, u32),
    /// KCP mtu.
    pub mtu: usize,
    /// `ack_no_delay` on both sides.
    pub ack_no_delay: bool,
    /// Offset added to the virtual clock (test the u32 wrap).
    pub clock_offset: u32,
    /// Give up after this much virtual time (ms).
    pub max_virtual_ms: u64,
}

impl TransferConfig {
    /// `bytes` in stream mode over [`LinkConfig::lossy`]`(loss)`, kcptun
    /// "fast2"-like settings (nodelay 1, 20 ms, resend 2, nc 1), windows
    /// 128/128.
    pub fn new(bytes: usize, loss: f64, seed: u64) -> TransferConfig {
        TransferConfig {
            bytes,
            link: LinkConfig::lossy(loss),
            seed,
            mode: TransferMode::Stream { write_size: 4096 },
            nodelay: (1, 20, 2, 1),
            window: (128, 128),
            mtu: 1400,
            ack_no_delay: false,
            clock_offset: 0,
            max_virtual_ms: 3_600_000,
        }
    }

    /// A configured engine for one side.
    pub fn engine(&self, conv: u32) -> crate::Result<Kcp> {
        let mut k = Kcp::new(conv);
        let (n, i, r, c) = self.nodelay;
        k.set_nodelay(n, i, r, c);
        k.set_wndsize(self.window.0, self.window.1);
        k.set_mtu(self.mtu)?;
        k.set_stream_mode(matches!(self.mode, TransferMode::Stream { .. }));
        Ok(k)
    }
}

/// Outcome of a successful transfer.
#[derive(Debug, Clone)]
pub struct TransferReport {
    /// Bytes delivered (equal to the request).
    pub bytes: usize,
    /// Messages delivered (message mode) or reads (stream mode).
    pub messages: usize,
    /// Virtual time taken (ms).
    pub virtual_ms: u64,
    /// Sender counters.
    pub sender: KcpStats,
    /// Receiver counters.
    pub receiver: KcpStats,
    /// Link counters.
    pub link: LinkStats,
}

/// Deterministic pseudo-random bytes.
pub fn test_data(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    SmallRng::seed_from_u64(seed ^ 0x5eed_da7a).fill_bytes(&mut v);
    v
}

/// Moves `cfg.bytes` from A to B between two bare KCP engines configured by
/// `cfg`; see [`transfer`].
pub fn run_transfer(cfg: &TransferConfig) -> Result<TransferReport, String> {
    let conv = 0x1122_3344;
    let mut a = KcpEndpoint::new(cfg.engine(conv).map_err(|e| e.to_string())?);
    let mut b = KcpEndpoint::new(cfg.engine(conv).map_err(|e| e.to_string())?);
    a.ack_no_delay = cfg.ack_no_delay;
    b.ack_no_delay = cfg.ack_no_delay;
    let mut pair = Pair::new(a, b, Link::new(cfg.link.clone(), cfg.seed));
    pair.clock_offset = cfg.clock_offset;
    transfer(&mut pair, cfg.bytes, cfg.mode, cfg.seed, cfg.max_virtual_ms)
}

/// Moves `bytes` pseudo-random bytes from A to B over the pair's link and
/// checks every byte (and in message mode every boundary). The writer
/// behaves like kcp-go's `Write`: it sends while [`Endpoint::send_blocked`]
/// is false and flushes after each write; the reader drains B after every
/// event. Works for any [`Endpoint`]s.
pub fn transfer<A: Endpoint, B: Endpoint>(
    pair: &mut Pair<A, B>,
    bytes: usize,
    mode: TransferMode,
    seed: u64,
    max_virtual_ms: u64,
) -> Result<TransferReport, String> {
    let data = test_data(bytes, seed);
    let mut rng = SmallRng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(7));
    let mut sent_lens = Vec::new();
    let mut offset = 0usize;
    let mut received = Vec::with_capacity(bytes);
    let mut recv_lens = Vec::new();
    let max_msg = match mode {
        TransferMode::Stream { .. } => 0,
        TransferMode::Message { max_len } => max_len,
    };
    let mut rbuf = vec![0u8; max_msg.max(1 << 16)];
    let start = pair.now;

    loop {
        while offset < data.len() && !pair.a.send_blocked() {
            let n = match mode {
                TransferMode::Stream { write_size } => write_size.max(1),
                TransferMode::Message { max_len } => rng.gen_range(1..=max_len.max(1)),
            }
            .min(data.len() - offset);
            pair.write(Side::A, &data[offset..offset + n])
                .map_err(|e| format!("write of {n} bytes failed: {e}"))?;
            sent_lens.push(n);
            offset += n;
        }
        while let Some(n) = pair
            .b
            .recv(&mut rbuf)
            .map_err(|e| format!("recv failed: {e}"))?
        {
            received.extend_from_slice(&rbuf[..n]);
            recv_lens.push(n);
        }
        if received.len() >= data.len() {
            break;
        }
        if pair.now - start > max_virtual_ms {
            return Err(format!(
                "gave up after {} virtual ms with {}/{} bytes delivered",
                pair.now - start,
                received.len(),
                data.len()
            ));
        }
        if !pair.step() {
            return Err(format!(
                "stalled at {} ms with {}/{} bytes delivered",
                pair.now,
                received.len(),
                data.len()
            ));
        }
    }
    if received != data {
        let at = received
            .iter()
            .zip(&data)
            .position(|(x, y)| x != y)
            .unwrap_or(data.len().min(received.len()));
        return Err(format!(
            "data differs at byte {at} (got {} bytes, want {})",
            received.len(),
            data.len()
        ));
    }
    if matches!(mode, TransferMode::Message { .. }) && recv_lens != sent_lens {
        return Err(format!(
            "message boundaries differ: sent {} messages, received {}",
            sent_lens.len(),
            recv_lens.len()
        ));
    }
    Ok(TransferReport {
        bytes: received.len(),
        messages: recv_lens.len(),
        virtual_ms: pair.now - start,
        sender: pair.a.kcp_stats(),
        receiver: pair.b.kcp_stats(),
        link: pair.link.stats(),
    })
}

/// Two pure [`Connection`](crate::connection::Connection)s joined by a
/// [`Link`] on virtual time: the session rules (idle timeout, dead link,
/// write delay, rate limit, OOB, close) run exactly as under the tokio
/// runtime, deterministically and without sockets.
///
/// Virtual time is milliseconds since `start`; [`now`](Self::now) is the
/// instant the connections see. Each [`step`](Self::step) advances to the
/// next event (a datagram due, a connection's
/// [`poll_timeout`](crate::connection::Connection::poll_timeout)), delivers
/// and runs timers, and moves every datagram the connections produce onto
/// the link, as a runtime would.
#[derive(Debug)]
pub struct ConnectionPair {
    /// The connection at [`Side::A`] (usually the dialer).
    pub a: crate::connection::Connection,
    /// The connection at [`Side::B`].
    pub b: crate::connection::Connection,
    /// The link between them.
    pub link: Link,
    start: std::time::Instant,
    /// Virtual time, ms since `start`.
    pub now_ms: u64,
    buf: Vec<u8>,
}

impl ConnectionPair {
    /// Two connections with conversation id `conv` over `link`, created at
    /// virtual time 0.
    pub fn new(
        conv: u32,
        a: &crate::Config,
        b: &crate::Config,
        link: Link,
    ) -> crate::Result<ConnectionPair> {
        let start = std::time::Instant::now();
        Ok(ConnectionPair {
            a: crate::connection::Connection::new(conv, a, start)?,
            b: crate::connection::Connection::new(conv, b, start)?,
            link,
            start,
            now_ms: 0,
            buf: vec![0u8; crate::config::MTU_LIMIT],
        })
    }

    /// The instant the connections see at the current virtual time.
    pub fn now(&self) -> std::time::Instant {
        self.start + std::time::Duration::from_millis(self.now_ms)
    }

    /// Virtual ms of an instant (rounded up).
    fn ms_of(&self, t: std::time::Instant) -> u64 {
        let d = t.saturating_duration_since(self.start);
        let ms = d.as_millis() as u64;
        if std::time::Duration::from_millis(ms) < d {
            ms + 1
        } else {
            ms
        }
    }

    /// One side's connection.
    pub fn side(&mut self, side: Side) -> &mut crate::connection::Connection {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    /// Moves every datagram `side` has ready onto the link; returns how many.
    pub fn transmit(&mut self, side: Side) -> usize {
        let now = self.now();
        let at = self.now_ms;
        let mut n = 0;
        loop {
            let conn = match side {
                Side::A => &mut self.a,
                Side::B => &mut self.b,
            };
            let Some(len) = conn.poll_transmit(now, &mut self.buf) else {
                break;
            };
            self.link.send(side, &self.buf[..len], at);
            n += 1;
        }
        n
    }

    /// The next virtual time something happens, if anything is pending.
    pub fn next_event_ms(&self) -> Option<u64> {
        [
            self.link.next_event_time(),
            self.a.poll_timeout().map(|t| self.ms_of(t)),
            self.b.poll_timeout().map(|t| self.ms_of(t)),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Advances to the next event (never backwards), delivers what is due,
    /// runs due timers and transmits. False if nothing at all is pending.
    pub fn step(&mut self) -> bool {
        let Some(t) = self.next_event_ms() else {
            return false;
        };
        self.advance(t);
        true
    }

    /// Sets the clock to `ms` (if later) and does what is due then.
    fn advance(&mut self, ms: u64) {
        self.now_ms = self.now_ms.max(ms);
        let now = self.now();
        while let Some((to, mut bytes)) = self.link.pop_due(self.now_ms) {
            self.side(to).handle_datagram(now, &mut bytes);
        }
        for side in [Side::A, Side::B] {
            let conn = self.side(side);
            if conn.poll_timeout().is_some_and(|t| t <= now) {
                conn.handle_timeout(now);
            }
        }
        self.transmit(Side::A);
        self.transmit(Side::B);
    }

    /// Steps until `done` holds or virtual time passes `limit_ms`; true if
    /// `done` held. With nothing pending the clock jumps to `limit_ms`.
    pub fn run_until(
        &mut self,
        limit_ms: u64,
        mut done: impl FnMut(&mut ConnectionPair) -> bool,
    ) -> bool {
        loop {
            if done(self) {
                return true;
            }
            match self.next_event_ms() {
                Some(t) if t <= limit_ms => self.advance(t),
                _ => {
                    self.advance(limit_ms);
                    return done(self);
                }
            }
        }
    }
}
