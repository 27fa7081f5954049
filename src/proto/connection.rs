//! One session's rules as pure, deterministic code: datagrams and time in;
//! datagrams, the next deadline and events out.
//!
//! A [`Connection`] owns everything a session decides: the KCP engine, the
//! receive pipeline (open, FEC, KCP), the send pipeline (FEC, seal), the
//! idle-timeout and dead-link rules, write delay, the rate limiter, the
//! leftover of a message a short read could not take, and OOB. It has no
//! socket, reads no clock (every call that needs the time takes an
//! [`Instant`]) and spawns nothing, so the same code runs under the tokio
//! [`Session`](crate::Session), under a blocking loop, and on virtual time in
//! tests (`testing::ConnectionPair`, feature `testing`). quinn-proto's `Connection` is the model.
//!
//! Driving it:
//! - a datagram from the peer: [`handle_datagram`](Connection::handle_datagram);
//! - when [`poll_timeout`](Connection::poll_timeout) passes:
//!   [`handle_timeout`](Connection::handle_timeout);
//! - after either, and after writes: send every
//!   [`poll_transmit`](Connection::poll_transmit) datagram to the peer;
//! - [`poll_event`](Connection::poll_event) says when reads or writes can
//!   make progress and why the session ended.
//!
//! Per-operation timeouts (a read waiting at most so long) belong to whoever
//! waits, not here: a pure call never waits. The idle timeout and the dead
//! link rule are session rules and live here.
//!
//! KCP counts time in u32 milliseconds (§1.6). A connection's clock starts at
//! 0 when it is created; only differences are ever used on the wire (the
//! peer echoes our `ts`), so a peer cannot tell.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use crate::codec::{self, InputReport, KcpSink, OutKind, Outgoing, Receiver, Sealer, CONV_SIZE};
use crate::config::{check_mtu_limit, Config, Congestion, NoDelay, StreamMode};
use crate::crypt::Crypt;
use crate::error::{Error, Result};
use crate::kcp::{FlushKind, Kcp, SendWindow, IKCP_OVERHEAD};
use crate::proto::packet::{Packet, PacketPool};
use crate::rate::RateLimiter;
#[cfg(feature = "snmp")]
use crate::stats::Publisher;
use crate::stats::{Counters, DropCounter, Snmp};
use crate::trace::{self, DropWarnings, Span};

/// Idle buffers a connection keeps for itself.
const CONNECTION_POOL: usize = 32;

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// Closed locally ([`Connection::close`], or every handle dropped).
    Closed,
    /// No valid datagram from the peer within the idle timeout.
    IdleTimeout,
    /// A segment sent this many times was due for yet another transmission.
    DeadLink(u32),
    /// A full listener closed it to make room for a newcomer.
    Evicted,
    /// The transport failed.
    Io(io::ErrorKind, String),
}

impl CloseReason {
    /// The error reads and writes report once the session has ended this way.
    pub fn error(&self) -> Error {
        match self {
            CloseReason::Closed => Error::Closed,
            CloseReason::IdleTimeout => Error::IdleTimeout,
            CloseReason::DeadLink(n) => Error::DeadLink(*n),
            CloseReason::Evicted => Error::Evicted,
            CloseReason::Io(kind, msg) => Error::Io(io::Error::new(*kind, msg.clone())),
        }
    }
}

/// Something the application may act on, from [`Connection::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Data (or the end of the session) is ready to read.
    Readable,
    /// A write that found the send window full may go on.
    Writable,
    /// The session ended; reads still return what was received.
    Closed(CloseReason),
}

/// Callback for OOB payloads (§4.6).
pub(crate) type OobHandler = Box<dyn FnMut(&[u8]) + Send>;

/// Edge flags behind [`Connection::poll_event`].
#[derive(Debug, Default)]
struct Pending {
    readable: bool,
    writable: bool,
    closed: bool,
    /// A write found the window full: report `Writable` when it reopens.
    write_blocked: bool,
}

/// One KCP session's state and rules, without I/O. See the module docs.
pub struct Connection {
    conv: u32,
    kcp: Kcp,
    rx: Receiver,
    /// Opens the peer's datagrams in [`handle_datagram`](Self::handle_datagram).
    crypt: Crypt,
    /// Seals for [`poll_transmit`](Self::poll_transmit); the tokio shell
    /// takes it to seal outside its lock.
    sealer: Option<Sealer>,
    /// KCP and OOB datagrams waiting for the sealer.
    pending: Vec<Outgoing>,
    /// Sealed datagrams waiting for `poll_transmit`.
    sealed: VecDeque<Packet>,
    pool: PacketPool,
    /// Crypto + FEC header room in front of KCP bytes.
    room: usize,
    /// Crypto trailer (AEAD tag).
    trailer: usize,
    fec_enabled: bool,
    c: Counters,
    #[cfg(feature = "snmp")]
    publisher: Publisher,
    ack_nodelay: bool,
    write_delay: bool,
    /// Limits application bytes accepted by writes (kcp-go v5.7, §12).
    limiter: Option<RateLimiter>,
    /// When a write refused by the limiter may try again.
    pace_until: Option<Instant>,
    idle_timeout: Option<Duration>,
    dead_link: Option<u32>,
    /// Rest of a message a short read could not take.
    leftover: Vec<u8>,
    leftover_pos: usize,
    fate: Option<CloseReason>,
    /// Time 0 of the KCP millisecond clock.
    epoch: Instant,
    /// The latest time passed in (for [`poll_timeout`](Self::poll_timeout)).
    now: Instant,
    last_recv: Instant,
    /// Flush at the next `handle_timeout` (write delay, window probe).
    flush_now: bool,
    /// A write found the last flush's datagrams not yet taken by the
    /// runtime and left its bytes queued: they leave in the same send, in
    /// whole segments (flushed by the next `handle_timeout`, or by
    /// `poll_transmit` once it has handed out the rest).
    corked: bool,
    /// A datagram has gone to the peer, so it has heard this side's window.
    told_window: bool,
    /// The runtime should run `handle_timeout` soon (state changed).
    needs_drive: bool,
    oob_handler: Option<OobHandler>,
    events: Pending,
    /// This session's `tracing` span (zero-sized without the feature).
    span: Span,
    warnings: DropWarnings,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("conv", &self.conv)
            .field("fate", &self.fate)
            .finish_non_exhaustive()
    }
}

fn apply_nodelay(kcp: &mut Kcp, nd: NoDelay) {
    kcp.set_nodelay(
        i32::from(nd.nodelay),
        nd.interval as i32,
        nd.resend.min(i32::MAX as u32) as i32,
        i32::from(nd.congestion == Congestion::Off),
    );
}

impl Connection {
    /// A session with conversation id `conv` configured by `config`, created
    /// at `now`. Nothing is sent until the first write.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] if the config's mtu or FEC shard counts are
    /// refused by KCP or FEC (a built [`Config`] never is).
    pub fn new(conv: u32, config: &Config, now: Instant) -> Result<Connection> {
        let mut kcp = Kcp::new(conv);
        kcp.set_mtu(config.kcp_mtu())?;
        let (snd, rcv) = config.window();
        kcp.set_wndsize(snd, rcv);
        apply_nodelay(&mut kcp, config.nodelay());
        kcp.set_stream_mode(config.stream_mode() == StreamMode::Stream);
        kcp.set_rtt_samples(config.rtt_samples());
        kcp.set_timeout_resend(config.timeout_resend());
        let (d, p) = config.fec();
        let mut conn = Connection {
            conv,
            kcp,
            rx: Receiver::new(d, p),
            crypt: config.crypt().clone(),
            sealer: Some(Sealer::new(config.crypt().clone(), d, p)?),
            pending: Vec::new(),
            sealed: VecDeque::new(),
            pool: PacketPool::new(CONNECTION_POOL),
            room: config.header_len(),
            trailer: config.crypt().trailer_len(),
            fec_enabled: config.fec_enabled(),
            c: Counters::default(),
            #[cfg(feature = "snmp")]
            publisher: Publisher::default(),
            ack_nodelay: config.ack_nodelay(),
            write_delay: config.write_delay(),
            limiter: config.session_limiter(),
            pace_until: None,
            idle_timeout: config.idle_timeout(),
            dead_link: config.dead_link(),
            leftover: Vec::new(),
            leftover_pos: 0,
            fate: None,
            epoch: now,
            now,
            last_recv: now,
            flush_now: false,
            corked: false,
            told_window: false,
            needs_drive: false,
            oob_handler: None,
            events: Pending::default(),
            span: trace::session_span(conv),
            warnings: DropWarnings::default(),
        };
        // kcp-go runs the first update when it creates a session. Besides
        // starting the timer, it opens the congestion window (cwnd 0 -> 1),
        // so the first write goes out at once rather than at the next tick.
        conn.flush_with(0, true);
        Ok(conn)
    }

    /// The conversation id.
    pub fn conv(&self) -> u32 {
        self.conv
    }

    /// This session's `tracing` span, for shells that work for it outside
    /// the connection's own methods (sealing, sending).
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// Names the peer and origin in the session's span and logs the
    /// opening (the shells call it once the session is established: a
    /// listener builds candidates it may still discard).
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn trace_opened(&self, peer: std::net::SocketAddr, origin: &'static str) {
        #[cfg(feature = "tracing")]
        {
            trace::record_peer(&self.span, peer, origin);
            let _g = self.span.enter();
            trace::info!("session opened");
        }
    }

    /// Warns (rate-limited) of a datagram the shell dropped and counted
    /// itself (a dialed session's driver opens outside the lock).
    #[inline(always)]
    pub(crate) fn warn_drop(
        &mut self,
        now: Instant,
        counter: DropCounter,
        reason: &'static str,
        peer: Option<std::net::SocketAddr>,
    ) {
        let _g = self.span.enter();
        self.warnings.note(now, counter, &reason, peer);
    }

    /// Counts a dropped datagram and warns (rate-limited).
    fn refuse(&mut self, now: Instant, counter: DropCounter, reason: &'static str) {
        counter.count(&mut self.c);
        self.warnings.note(now, counter, &reason, None);
    }

    /// The latest time passed in, on the KCP millisecond clock.
    pub(crate) fn now_ms(&self) -> u32 {
        self.now.saturating_duration_since(self.epoch).as_millis() as u32
    }

    /// `now` on the KCP millisecond clock (wraps like kcp-go's, §1.6).
    ///
    /// The clock never runs backward: a `now` earlier than one already
    /// passed in reads as that later time. Shells may run a timer slightly
    /// before its deadline by passing the deadline itself (see
    /// [`poll_timeout`](Self::poll_timeout)), and a datagram read just
    /// after must not carry an older `ts` than the flush before it.
    fn ms(&mut self, now: Instant) -> u32 {
        if now > self.now {
            self.now = now;
        }
        self.now_ms()
    }

    /// Opens one datagram from the peer in place (decrypt, check) and feeds
    /// it through FEC into KCP. A datagram that fails is dropped and counted
    /// (`InCsumErrors`, `KCPInErrors`, ...), never an error.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &mut [u8]) -> InputReport {
        let span = self.span.clone();
        let _g = span.enter();
        let range = match codec::open(&self.crypt, datagram) {
            Ok(r) => r,
            Err(e) => {
                let counter = match e {
                    codec::OpenError::Integrity => DropCounter::InCsumErrors,
                    codec::OpenError::Short => DropCounter::InErrs,
                };
                self.refuse(now, counter, e.name());
                return InputReport::default();
            }
        };
        match datagram.get(range) {
            Some(plain) => self.input_plain(now, plain),
            None => {
                self.refuse(now, DropCounter::InErrs, "BadRange");
                InputReport::default()
            }
        }
    }

    /// Feeds one already opened plaintext into FEC/KCP (the listener opens
    /// once, before demultiplexing). KCP's answers (ACKs) are queued.
    pub(crate) fn handle_plain(&mut self, now: Instant, plain: &[u8]) -> InputReport {
        let span = self.span.clone();
        let _g = span.enter();
        self.input_plain(now, plain)
    }

    /// [`handle_plain`](Self::handle_plain) inside the span.
    fn input_plain(&mut self, now: Instant, plain: &[u8]) -> InputReport {
        trace::trace!(len = plain.len(), "datagram in");
        if self.fate.is_some() {
            // Arrived after the session ended.
            self.refuse(now, DropCounter::InErrs, "SessionClosed");
            return InputReport::default();
        }
        let now_ms = self.ms(now);
        let Connection {
            kcp,
            rx,
            pending,
            pool,
            room,
            c,
            ack_nodelay,
            oob_handler,
            ..
        } = self;
        let mut sink = KcpSink {
            pending,
            pool,
            room: *room,
        };
        let mut oob = |d: &[u8]| {
            if let Some(h) = oob_handler.as_mut() {
                h(d)
            }
        };
        let before = kcp.send_window();
        let rep = rx.input(plain, kcp, *ack_nodelay, now_ms, &mut sink, c, &mut oob);
        if before == SendWindow::Full && kcp.send_window() == SendWindow::Open {
            // A larger peer window (a WINS, or an ACK's wnd field) unblocked
            // queued data without moving una, so KCP did not flush; kcp-go
            // would wait for the next tick. Sending now changes only when
            // the peer sees the data (docs/wire.md §5.6).
            kcp.flush(FlushKind::Full, now_ms, &mut sink);
        }
        if !self.told_window && kcp.pending_acks() > 0 {
            // The peer still assumes kcp-go's 32-segment window for us: its
            // first flight waits for this ACK, so it goes now, not at the
            // next tick (docs/wire.md §5.6).
            kcp.flush(FlushKind::AckOnly, now_ms, &mut sink);
        }
        self.told_window |= !sink.pending.is_empty();
        if rep.kcp_errors == 0 {
            self.last_recv = now;
        } else {
            // Already counted (KCPInErrors) by the receiver.
            #[cfg(feature = "tracing")]
            for _ in 0..rep.kcp_errors {
                self.warnings
                    .note(now, DropCounter::KcpInErrors, &"KcpRejected", None);
            }
        }
        self.note_progress();
        rep
    }

    /// Sets the edge flags after input or a timer pass.
    fn note_progress(&mut self) {
        if self.is_readable() {
            self.events.readable = true;
        }
        if self.events.write_blocked && self.is_writable() {
            self.events.write_blocked = false;
            self.events.writable = true;
        }
    }

    /// Runs the timers due at `now`: KCP's update (retransmissions, ACKs,
    /// window probes), a delayed flush, and the dead-link and idle rules,
    /// which may end the session.
    pub fn handle_timeout(&mut self, now: Instant) {
        let span = self.span.clone();
        let _g = span.enter();
        self.needs_drive = false;
        if self.fate.is_some() {
            return;
        }
        let now_ms = self.ms(now);
        let due = self
            .kcp
            .next_deadline(now_ms)
            .is_some_and(|d| d.wrapping_sub(now_ms) as i32 <= 0);
        if due {
            self.flush_with(now_ms, true);
        } else if self.flush_now || self.corked {
            self.flush_with(now_ms, false);
        }
        self.flush_now = false;
        self.corked = false;
        if let Some(limit) = self.dead_link {
            // Dead once a segment sent `limit` times is due for yet another
            // transmission (that one is not sent).
            if self.kcp.max_xmit() > limit {
                trace::warn!(
                    transmissions = limit,
                    "dead link: a segment sent that many times is due again"
                );
                self.end(now, CloseReason::DeadLink(limit));
                return;
            }
        }
        if let Some(idle) = self.idle_timeout {
            if now.saturating_duration_since(self.last_recv) >= idle {
                trace::warn!(
                    idle_ms = idle.as_millis() as u64,
                    "idle timeout: nothing valid heard from the peer"
                );
                self.end(now, CloseReason::IdleTimeout);
                return;
            }
        }
        self.note_progress();
    }

    /// When [`handle_timeout`](Self::handle_timeout) should run next: the
    /// next KCP deadline or the idle deadline; `None` when nothing is queued,
    /// in flight or unacknowledged and there is no idle timeout (or the
    /// session has ended).
    ///
    /// A KCP deadline is the first instant at which the millisecond clock
    /// reads it, not the latest `now` plus whole milliseconds: that would
    /// fire up to a millisecond late, where kcp-go's timers fire within a
    /// millisecond of the deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.fate.is_some() {
            return None;
        }
        let now = self.now;
        let since = now.saturating_duration_since(self.epoch);
        let now_ms = since.as_millis() as u32;
        // The start of the millisecond `now` is in.
        let tick = now - Duration::from_nanos(u64::from(since.subsec_nanos() % 1_000_000));
        let kcp = self.kcp.next_deadline(now_ms).map(|d| {
            let delta = d.wrapping_sub(now_ms) as i32;
            if delta <= 0 {
                now
            } else {
                tick + Duration::from_millis(delta as u64)
            }
        });
        let idle = self.idle_timeout.map(|t| self.last_recv + t);
        let flush = (self.flush_now || self.corked).then_some(now);
        [kcp, idle, flush].into_iter().flatten().min()
    }

    /// The next sealed datagram for the peer, copied into `buf` (which needs
    /// room for [`MTU_LIMIT`](crate::config::MTU_LIMIT) bytes); its length,
    /// or `None` when nothing is waiting.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if self.corked && self.sealed.is_empty() && self.pending.is_empty() {
            // Everything before the corked bytes is out: they follow now.
            let now_ms = self.ms(now);
            self.flush_with(now_ms, false);
        }
        if self.sealed.is_empty() && !self.pending.is_empty() {
            let now_ms = self.ms(now);
            if let Some(sealer) = self.sealer.as_mut() {
                sealer.seal_all(
                    self.pending.drain(..),
                    now_ms,
                    &mut self.pool,
                    &mut self.sealed,
                    &mut self.c,
                );
            }
        }
        let p = self.sealed.pop_front()?;
        let n = p.len().min(buf.len());
        buf[..n].copy_from_slice(&p.as_slice()[..n]);
        self.c.out_pkts += 1;
        self.c.out_bytes += n as u64;
        self.pool.put(p);
        Some(n)
    }

    /// Moves the unsealed datagrams out (the tokio driver seals them
    /// outside the session lock with the sealer from `take_sealer`).
    pub(crate) fn take_outgoing(&mut self, into: &mut Vec<Outgoing>) {
        std::mem::swap(into, &mut self.pending);
    }

    /// Whether unsealed datagrams are waiting.
    pub(crate) fn has_outgoing(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Hands the send pipeline to a runtime that seals elsewhere; afterwards
    /// [`poll_transmit`](Self::poll_transmit) returns nothing.
    pub(crate) fn take_sealer(&mut self) -> Option<Sealer> {
        self.sealer.take()
    }

    /// The next event, if any. `Readable` and `Writable` are edges: after
    /// one, read (or write) until it would block before waiting again.
    pub fn poll_event(&mut self) -> Option<Event> {
        if let (true, Some(f)) = (self.events.closed, &self.fate) {
            self.events.closed = false;
            return Some(Event::Closed(f.clone()));
        }
        if std::mem::take(&mut self.events.readable) {
            return Some(Event::Readable);
        }
        if std::mem::take(&mut self.events.writable) {
            return Some(Event::Writable);
        }
        None
    }

    /// Whether a read would return data (or the session's end) now.
    pub fn is_readable(&self) -> bool {
        self.leftover_pos < self.leftover.len() || self.kcp.peek_size().is_some()
    }

    /// Bytes the next [`read`](Self::read) can return without waiting (with
    /// a large enough buffer): the rest of a message a short read cut, else
    /// the size of the next complete message; 0 when nothing is ready. More
    /// may be queued behind it (one read returns at most one message).
    pub fn readable_len(&self) -> usize {
        if self.leftover_pos < self.leftover.len() {
            self.leftover.len() - self.leftover_pos
        } else {
            self.kcp.peek_size().unwrap_or(0)
        }
    }

    /// Whether the send window has room.
    pub fn is_writable(&self) -> bool {
        self.kcp.wait_snd() < self.kcp.snd_wnd() as usize
    }

    /// Why the session ended, once it has.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.fate.as_ref()
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.fate.is_some()
    }

    /// Takes the "run `handle_timeout` soon" flag: set by calls that queued
    /// something the timer pass must look at (a delayed flush, a window the
    /// peer should hear about).
    pub(crate) fn take_needs_drive(&mut self) -> bool {
        std::mem::take(&mut self.needs_drive)
    }

    /// Ends the session (first reason wins; false if it had ended). A local
    /// close does kcp-go's final flush; nothing special goes on the wire
    /// (§6.4). Abnormal endings discard what is still unsealed.
    pub(crate) fn end(&mut self, now: Instant, reason: CloseReason) -> bool {
        if self.fate.is_some() {
            return false;
        }
        {
            let _g = self.span.enter();
            trace::info!(?reason, "session closed");
        }
        if reason == CloseReason::Closed {
            let now_ms = self.ms(now);
            self.flush_with(now_ms, false);
        }
        if reason != CloseReason::Closed {
            // Abnormal endings send nothing more (the dead-link rule's
            // next transmission, ACKs for a peer that is gone).
            for item in self.pending.drain(..) {
                self.pool.put(item.packet);
            }
            for p in self.sealed.drain(..) {
                self.pool.put(p);
            }
        }
        self.fate = Some(reason);
        self.events.closed = true;
        self.events.readable = true;
        self.publish();
        true
    }

    /// Closes the session (kcp-go `Close`): one final flush, whose datagrams
    /// [`poll_transmit`](Self::poll_transmit) still returns; buffered
    /// received data can still be read. [`Error::Closed`] if it had ended.
    pub fn close(&mut self, now: Instant) -> Result<()> {
        if self.end(now, CloseReason::Closed) {
            Ok(())
        } else {
            Err(Error::Closed)
        }
    }

    fn flush_with(&mut self, now_ms: u32, tick: bool) {
        let Connection {
            kcp,
            pending,
            pool,
            room,
            ..
        } = self;
        let mut sink = KcpSink {
            pending,
            pool,
            room: *room,
        };
        if tick {
            kcp.update(now_ms, &mut sink);
        } else {
            kcp.flush(FlushKind::Full, now_ms, &mut sink);
        }
        self.told_window |= !sink.pending.is_empty();
        self.corked = false;
    }

    /// Byte-stream read: `Ok(n)` with data (`buf` not empty); the session's
    /// error once it has ended and nothing is left; [`Error::WouldBlock`]
    /// otherwise. The tail of a message that does not fit stays for the next
    /// read.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        let span = self.span.clone();
        let _g = span.enter();
        if self.leftover_pos < self.leftover.len() {
            let rest = &self.leftover[self.leftover_pos..];
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            self.leftover_pos += n;
            self.c.bytes_received += n as u64;
            return Ok(n);
        }
        if let Some(size) = self.kcp.peek_size() {
            let n = if buf.len() >= size {
                let mut n = self.kcp.recv(buf)?.unwrap_or(0);
                if self.kcp.is_stream_mode() {
                    // A stream has no boundaries to keep: fill `buf` with
                    // every whole segment that fits, one lock and one wake
                    // per read instead of per segment.
                    while let Some(size) = self.kcp.peek_size() {
                        if buf.len() - n < size {
                            break;
                        }
                        n += self.kcp.recv(&mut buf[n..])?.unwrap_or(0);
                    }
                }
                n
            } else {
                self.leftover.resize(size, 0);
                let got = self.kcp.recv(&mut self.leftover)?.unwrap_or(0);
                self.leftover.truncate(got);
                let n = got.min(buf.len());
                buf[..n].copy_from_slice(&self.leftover[..n]);
                self.leftover_pos = n;
                n
            };
            self.c.bytes_received += n as u64;
            self.tell_reopened_window();
            return Ok(n);
        }
        Err(self.ended_or_would_block())
    }

    /// After a read: if it reopened a receive window that was full (§5.4),
    /// flush the owed WINS at the next drive instead of the next tick. The
    /// sender is stalled until it hears the window, so every millisecond
    /// of delay here is a millisecond of idle link; kcp-go waits for the
    /// tick (docs/wire.md §5.6).
    fn tell_reopened_window(&mut self) {
        if self.kcp.owes_window_tell() {
            self.flush_now = true;
            self.needs_drive = true;
        }
    }

    fn ended_or_would_block(&self) -> Error {
        match &self.fate {
            Some(f) => f.error(),
            None => Error::WouldBlock,
        }
    }

    /// Receives one whole message into `buf`: [`Error::BufferTooSmall`] (the
    /// message stays queued) if it does not fit, [`Error::WouldBlock`] when
    /// none is ready, the session's error once it has ended and nothing is
    /// left.
    pub fn recv_msg(&mut self, buf: &mut [u8]) -> Result<usize> {
        let span = self.span.clone();
        let _g = span.enter();
        if self.leftover_pos < self.leftover.len() {
            // The tail of a message a byte-stream read cut short.
            let rest = &self.leftover[self.leftover_pos..];
            if buf.len() < rest.len() {
                return Err(Error::BufferTooSmall {
                    need: rest.len(),
                    have: buf.len(),
                });
            }
            let n = rest.len();
            buf[..n].copy_from_slice(rest);
            self.leftover_pos = self.leftover.len();
            self.c.bytes_received += n as u64;
            return Ok(n);
        }
        if let Some(size) = self.kcp.peek_size() {
            if buf.len() < size {
                return Err(Error::BufferTooSmall {
                    need: size,
                    have: buf.len(),
                });
            }
            let n = self.kcp.recv(buf)?.unwrap_or(0);
            self.c.bytes_received += n as u64;
            self.tell_reopened_window();
            return Ok(n);
        }
        Err(self.ended_or_would_block())
    }

    /// Queues data and flushes unless write delay is on (kcp-go `Write`,
    /// §5.6).
    fn queue_and_flush(
        &mut self,
        now: Instant,
        pieces: &mut dyn Iterator<Item = &[u8]>,
    ) -> Result<usize> {
        let mut n = 0;
        for piece in pieces {
            self.kcp.send(piece)?;
            n += piece.len();
        }
        self.c.bytes_sent += n as u64;
        if !self.write_delay || !self.is_writable() {
            if self.pending.is_empty() && self.sealed.is_empty() {
                let now_ms = self.ms(now);
                self.flush_with(now_ms, false);
            } else {
                // Autocork (as Linux TCP's): the runtime has not yet taken
                // the last flush's datagrams, so these bytes would leave in
                // the same send anyway. Flushed then, they fill whole
                // segments instead of one short segment per write; the peer
                // sees the same stream (wire.md §5.6).
                self.corked = true;
            }
        }
        self.needs_drive = true;
        Ok(n)
    }

    /// Takes tokens for a write of `want` bytes (at least `at_least`), or
    /// records when to try again.
    fn pace(&mut self, now: Instant, want: usize, at_least: usize) -> Option<usize> {
        match &self.limiter {
            None => Some(want),
            Some(l) => match l.try_take(now, want, at_least) {
                Ok(n) => {
                    self.pace_until = None;
                    Some(n)
                }
                Err(at) => {
                    self.pace_until = Some(at);
                    None
                }
            },
        }
    }

    /// Byte-stream write: takes as much of `data` as the send window holds
    /// (and the rate limiter allows) and returns how much; nothing is lost
    /// behind the caller's back. [`Error::WouldBlock`] when the window is
    /// full ([`Event::Writable`] follows) or the limiter is empty
    /// ([`pace_until`](Self::pace_until) says when to retry).
    pub fn write(&mut self, now: Instant, data: &[u8]) -> Result<usize> {
        let span = self.span.clone();
        let _g = span.enter();
        self.pace_until = None;
        if let Some(f) = &self.fate {
            return Err(f.error());
        }
        if data.is_empty() {
            return Ok(0);
        }
        let wait = self.kcp.wait_snd();
        let wnd = self.kcp.snd_wnd() as usize;
        if wait >= wnd {
            self.events.write_blocked = true;
            return Err(Error::WouldBlock);
        }
        let mss = self.kcp.mss().max(1);
        // Back-pressure: take no more than the free window holds, so a huge
        // write cannot queue without bound (kcp-go would take it all).
        let take = data.len().min((wnd - wait).saturating_mul(mss));
        // At least a segment's worth (or all of a short write), so a slow
        // limit does not chop the stream into tiny segments.
        let Some(take) = self.pace(now, take, take.min(mss)) else {
            return Err(Error::WouldBlock);
        };
        self.queue_and_flush(now, &mut data[..take].chunks(mss))
    }

    /// Sends one message (message mode: it arrives whole). Refuses what the
    /// peer could not assemble with [`Error::MessageTooLarge`] (see
    /// [`Session::send_msg`](crate::Session::send_msg));
    /// [`Error::WouldBlock`] while the window is full, the limiter is empty,
    /// or the peer's window is being asked (a dialed session that has heard
    /// nothing yet).
    pub fn send_msg(&mut self, now: Instant, msg: &[u8]) -> Result<()> {
        let span = self.span.clone();
        let _g = span.enter();
        self.pace_until = None;
        if msg.is_empty() {
            return Err(Error::EmptyMessage);
        }
        if let Some(f) = &self.fate {
            return Err(f.error());
        }
        if !self.kcp.is_stream_mode() {
            // Before the peer has told us its window, a message over kcp-go's
            // assumed 32 fragments (but within 255) waits for a window
            // probe's answer instead of being refused on a guess.
            let mss = self.kcp.mss().max(1);
            let fragments = msg.len().div_ceil(mss);
            let max = self.kcp.max_message_fragments();
            if fragments > max {
                if fragments <= crate::kcp::IKCP_MAX_FRAGMENTS && !self.kcp.window_heard() {
                    self.kcp.ask_window();
                    self.flush_now = true;
                    self.needs_drive = true;
                    return Err(Error::WouldBlock);
                }
                return Err(Error::MessageTooLarge {
                    len: msg.len(),
                    fragments,
                    max,
                });
            }
        }
        if !self.is_writable() {
            self.events.write_blocked = true;
            return Err(Error::WouldBlock);
        }
        if self.pace(now, msg.len(), msg.len()).is_none() {
            return Err(Error::WouldBlock);
        }
        self.queue_and_flush(now, &mut std::iter::once(msg))
            .map(|_| ())
    }

    /// When a write the rate limiter refused may try again.
    pub fn pace_until(&self) -> Option<Instant> {
        self.pace_until
    }

    /// Whether everything written has been acknowledged.
    pub fn is_drained(&self) -> bool {
        self.kcp.wait_snd() == 0
    }

    /// Asks for the queued data to be flushed at the next timer pass (with
    /// write delay on, writes wait for it).
    pub fn flush(&mut self) {
        let span = self.span.clone();
        let _g = span.enter();
        if self.write_delay && self.fate.is_none() {
            self.flush_now = true;
            self.needs_drive = true;
        }
    }

    /// Sends an unreliable out-of-band datagram (kcp-go `SendOOB`, §4.6).
    pub fn send_oob(&mut self, data: &[u8]) -> Result<()> {
        let span = self.span.clone();
        let _g = span.enter();
        if let Some(f) = &self.fate {
            return Err(f.error());
        }
        if !self.fec_enabled {
            return Err(Error::InvalidConfig(
                "OOB requires FEC to be enabled".into(),
            ));
        }
        let max = self.oob_max_size();
        if data.len() > max {
            return Err(Error::MessageTooLarge {
                len: data.len(),
                fragments: 1,
                max,
            });
        }
        let room = self.room;
        let mut p = self.pool.get();
        let buf = p.buf_mut();
        buf[room..room + CONV_SIZE].copy_from_slice(&self.conv.to_le_bytes());
        buf[room + CONV_SIZE..room + CONV_SIZE + data.len()].copy_from_slice(data);
        p.set_len(room + CONV_SIZE + data.len());
        self.pending.push(Outgoing {
            packet: p,
            kind: OutKind::Oob,
        });
        self.needs_drive = true;
        Ok(())
    }

    /// Largest OOB payload (kcp-go `GetOOBMaxSize`); 0 without FEC.
    pub fn oob_max_size(&self) -> usize {
        if self.fec_enabled {
            self.kcp.mtu().saturating_sub(CONV_SIZE)
        } else {
            0
        }
    }

    /// Registers the handler for OOB payloads (§4.6); it runs inside
    /// `handle_datagram`. [`Error::InvalidConfig`] without FEC.
    pub fn set_oob_handler(&mut self, handler: impl FnMut(&[u8]) + Send + 'static) -> Result<()> {
        if !self.fec_enabled {
            return Err(Error::InvalidConfig(
                "OOB requires FEC to be enabled".into(),
            ));
        }
        self.oob_handler = Some(Box::new(handler));
        Ok(())
    }

    /// kcp-go `SetNoDelay`.
    pub fn set_nodelay(&mut self, nd: NoDelay) {
        apply_nodelay(&mut self.kcp, nd);
        self.needs_drive = true;
    }

    /// kcp-go `SetWindowSize`; zero leaves a window unchanged.
    pub fn set_window(&mut self, snd_wnd: u32, rcv_wnd: u32) {
        self.kcp.set_wndsize(snd_wnd, rcv_wnd);
        self.note_progress();
        self.needs_drive = true;
    }

    /// kcp-go `SetMtu` (see [`Session::set_mtu`](crate::Session::set_mtu)).
    pub fn set_mtu(&mut self, mtu: usize) -> Result<()> {
        check_mtu_limit(mtu)?;
        let kmtu = mtu.saturating_sub(self.room + self.trailer);
        if kmtu <= IKCP_OVERHEAD {
            return Err(Error::InvalidConfig(format!(
                "mtu {mtu} leaves no room for data after {} header bytes",
                self.room + self.trailer
            )));
        }
        self.kcp.set_mtu(kmtu)
    }

    /// kcp-go `SetStreamMode`.
    pub fn set_stream_mode(&mut self, mode: StreamMode) {
        self.kcp.set_stream_mode(mode == StreamMode::Stream);
    }

    /// kcp-go `SetACKNoDelay`.
    pub fn set_ack_nodelay(&mut self, nodelay: bool) {
        self.ack_nodelay = nodelay;
    }

    /// kcp-go `SetWriteDelay`.
    pub fn set_write_delay(&mut self, delay: bool) {
        self.write_delay = delay;
    }

    /// kcp-go v5.7 `SetBucket`: the limiter writes draw from, or none.
    pub fn set_rate_limiter(&mut self, limiter: Option<RateLimiter>) {
        self.limiter = limiter;
        self.pace_until = None;
    }

    /// The limiter writes draw from, if any.
    pub fn rate_limiter(&self) -> Option<&RateLimiter> {
        self.limiter.as_ref()
    }

    /// kcp-go v5.7 `ResetRTO` ([`Kcp::reset_rto`](crate::kcp::Kcp::reset_rto)).
    pub fn reset_rto(&mut self, now: Instant) {
        let now_ms = self.ms(now);
        self.kcp.reset_rto(now_ms);
        self.needs_drive = true;
    }

    /// End the session with [`CloseReason::IdleTimeout`] after this long
    /// without a valid datagram from the peer.
    pub fn set_idle_timeout(&mut self, timeout: Option<Duration>) {
        self.idle_timeout = timeout;
        self.needs_drive = true;
    }

    /// End the session with [`CloseReason::DeadLink`] when a segment sent
    /// this many times is still unacknowledged when its next transmission is
    /// due.
    pub fn set_dead_link(&mut self, transmissions: Option<u32>) {
        self.dead_link = transmissions;
    }

    /// Current retransmission timeout in ms (kcp-go `GetRTO`).
    pub fn rto(&self) -> u32 {
        self.kcp.rto()
    }
    /// Smoothed RTT in ms (kcp-go `GetSRTT`).
    pub fn srtt(&self) -> i32 {
        self.kcp.srtt()
    }
    /// RTT variance in ms (kcp-go `GetSRTTVar`).
    pub fn rttvar(&self) -> i32 {
        self.kcp.rttvar()
    }
    /// Segments queued or in flight (kcp-go `WaitSnd`).
    pub fn wait_snd(&self) -> usize {
        self.kcp.wait_snd()
    }
    /// Counters the runtime adds (datagrams it sent, errors it saw).
    pub(crate) fn counters(&mut self) -> &mut Counters {
        &mut self.c
    }

    /// Hands cached buffers back to the shared pool (an idle session holds
    /// none).
    pub(crate) fn release_buffers(&mut self) {
        self.pool.release();
    }

    /// Whether the peer has acknowledged data we sent (KCP's `snd_una`
    /// moved): an address spoofer cannot do that without the key.
    pub(crate) fn is_proven(&self) -> bool {
        self.kcp.snd_una() != 0
    }

    /// Counts the session as dialed (`ActiveOpens`).
    pub(crate) fn count_active_open(&mut self) {
        self.c.active_opens += 1;
    }

    /// This session's counters (kcp-go names; §6.5).
    #[cfg(not(feature = "snmp"))]
    pub fn stats(&self) -> Snmp {
        Snmp::default()
    }

    /// This session's counters (kcp-go names; §6.5).
    #[cfg(feature = "snmp")]
    pub fn stats(&self) -> Snmp {
        let mut s = self.c.snapshot();
        let k = self.kcp.stats();
        s.in_segs = k.in_segs;
        s.out_segs = k.out_segs;
        s.retrans_segs = k.retrans_segs;
        s.fast_retrans_segs = k.fast_retrans_segs;
        s.early_retrans_segs = k.early_retrans_segs;
        s.lost_segs = k.lost_segs;
        s.repeat_segs = k.repeat_segs;
        s.ring_buffer_snd_queue = self.kcp.snd_queue_len() as u64;
        s.ring_buffer_rcv_queue = self.kcp.rcv_queue_len() as u64;
        s.ring_buffer_snd_buffer = self.kcp.snd_buf_len() as u64;
        if let Some(dec) = self.rx.decoder() {
            let f = dec.stats();
            s.fec_full_shard_set = f.fec_full_shard_set;
            s.fec_recovered = f.fec_recovered;
            s.fec_errs += f.fec_errs;
            s.fec_parity_shards = f.fec_parity_shards;
            s.fec_shard_set = f.fec_shard_set;
            s.fec_shard_min = f.fec_shard_min;
        }
        s.curr_estab = u64::from(self.fate.is_none());
        s.max_conn = 1;
        s
    }

    /// Adds what changed since the last call to the process-wide counters
    /// (`stats::global`); without `snmp` it is empty.
    #[inline]
    pub(crate) fn publish(&mut self) {
        #[cfg(feature = "snmp")]
        {
            let snap = self.stats();
            self.publisher.publish(&snap);
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Moves every datagram `from` has for `to`.
    fn shuttle(from: &mut Connection, to: &mut Connection, now: Instant) {
        let mut buf = vec![0u8; crate::config::MTU_LIMIT];
        while let Some(n) = from.poll_transmit(now, &mut buf) {
            to.handle_datagram(now, &mut buf[..n]);
        }
    }

    #[test]
    fn readable_len_is_the_leftover_or_the_next_message() {
        // Congestion control off, so both messages leave at once.
        let config = Config::builder()
            .mode(crate::config::Mode::Fast3)
            .stream_mode(StreamMode::Message)
            .build()
            .unwrap();
        let now = Instant::now();
        let mut a = Connection::new(7, &config, now).unwrap();
        let mut b = Connection::new(7, &config, now).unwrap();
        assert_eq!(b.readable_len(), 0);
        a.send_msg(now, &[1u8; 100]).unwrap();
        a.send_msg(now, &[2u8; 30]).unwrap();
        shuttle(&mut a, &mut b, now);
        assert_eq!(b.readable_len(), 100);
        let mut small = [0u8; 40];
        assert_eq!(b.read(&mut small).unwrap(), 40);
        assert_eq!(b.readable_len(), 60);
        let mut big = [0u8; 200];
        assert_eq!(b.read(&mut big).unwrap(), 60);
        assert_eq!(b.readable_len(), 30);
        assert_eq!(b.recv_msg(&mut big).unwrap(), 30);
        assert_eq!(b.readable_len(), 0);
    }
}
