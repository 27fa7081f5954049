//! The async session: a reliable, ordered byte stream (or message channel)
//! over UDP, speaking kcp-go's wire format.
//!
//! Shape (design.md, "Runtime shape that scales"): one `State` per session
//! behind a mutex that is never held across an `.await`, shared by the
//! user's handle and one driver task. Wakers connect them, not channels:
//! `poll_read` parks its waker in the state and input that makes data
//! readable wakes it; a write queues KCP output and wakes the driver; the
//! driver seals (FEC + crypt) and sends in batches, and sleeps until the next
//! KCP deadline, or not at all when nothing is queued, in flight or
//! unacknowledged.
//!
//! A dialed session's driver also owns the socket's receive side. A
//! listener's sessions are fed by the listener's single receive task, which
//! decrypts once and calls straight into the session's state.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use rand::RngCore;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{lookup_host, ToSocketAddrs, UdpSocket};

use crate::transport::{Transport, UdpTransport};
use tokio::sync::Notify;
use tokio::time::{Instant as TokioInstant, Sleep};

use crate::codec::{self, InputReport, Outgoing, Sealer};
use crate::config::{Config, NoDelay, StreamMode};
use crate::connection::{CloseReason, Connection};
use crate::crypt::Crypt;
use crate::error::{Error, Result};
use crate::io::{self as uio, PacketPool, RecvBatch, SendBatch, SocketOptions};
use crate::listener::ListenerShared;
use crate::rate::{poll_pace, RateLimiter};
use crate::stats::{self, Counters, Snmp};

/// Datagrams a dialed session reads per `recvmmsg`.
const SESSION_RECV_BATCH: usize = 16;
/// Idle buffers a session's driver keeps for itself.
const SESSION_POOL: usize = 32;
/// Driver loop iterations before yielding to the scheduler.
const DRIVER_BUDGET: usize = 32;

/// Who created the session (decides socket ownership, §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// [`Session::dial`] / [`Session::from_socket`]: owns its socket.
    Dialed,
    /// Accepted from a [`Listener`](crate::listener::Listener): shares its socket.
    Accepted,
}

/// Why a session ended (the pure layer's name is [`CloseReason`]).
pub(crate) type Fate = CloseReason;

/// Readable-notification callback (kcp-go v5.7 `SetReadNotify`).
type ReadNotify = Box<dyn FnMut() + Send>;

/// A dialed session's own receive path: cipher, buffers, opened ranges.
type Opener = (Crypt, RecvBatch, Vec<Option<Range<usize>>>);

/// Now on tokio's clock, as the pure layer takes it (virtual under a paused
/// runtime, so idle expiry and eviction follow a paused clock in tests).
pub(crate) fn now() -> Instant {
    TokioInstant::now().into_std()
}

/// The pure [`Connection`] plus what the tokio shell needs around it:
/// wakers and per-operation timeouts. Behind one lock.
pub(crate) struct State {
    pub(crate) conn: Connection,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    driver_waker: Option<Waker>,
    /// Wakes every [`Session::readable`] waiter (there can be many, unlike
    /// the single `read_waker`).
    ready: Arc<Notify>,
    /// `readable` futures currently waiting; `ready` is only signalled then.
    read_watchers: usize,
    read_notify: Option<ReadNotify>,
}

impl State {
    fn new(conn: Connection, config: &Config) -> State {
        State {
            conn,
            read_timeout: config.read_timeout(),
            write_timeout: config.write_timeout(),
            read_waker: None,
            write_waker: None,
            driver_waker: None,
            ready: Arc::new(Notify::new()),
            read_watchers: 0,
            read_notify: None,
        }
    }

    /// Feeds one opened plaintext into the connection.
    pub(crate) fn input(&mut self, plain: &[u8], now: Instant) -> InputReport {
        self.conn.handle_plain(now, plain)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    fn fate(&self) -> Option<&Fate> {
        self.conn.close_reason()
    }

    /// Wakes the user side when it can make progress.
    pub(crate) fn wake_io(&mut self) {
        let ended = self.conn.is_closed();
        if self.conn.is_readable() || ended {
            if let Some(w) = self.read_waker.take() {
                w.wake();
            }
            if self.read_watchers > 0 {
                self.ready.notify_waiters();
            }
            if let Some(f) = self.read_notify.as_mut() {
                f();
            }
        }
        if self.conn.is_writable() || ended {
            if let Some(w) = self.write_waker.take() {
                w.wake();
            }
        }
    }

    pub(crate) fn wake_driver(&mut self) {
        if let Some(w) = self.driver_waker.take() {
            w.wake();
        }
    }

    /// Wakes the driver if the last connection call asked for a timer pass.
    fn drive_if_needed(&mut self) {
        if self.conn.take_needs_drive() {
            self.wake_driver();
        }
    }
}

/// What the handle, the driver and the listener share.
pub(crate) struct Shared {
    pub(crate) conv: u32,
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) origin: Origin,
    pub(crate) listener: Option<Weak<ListenerShared>>,
    /// Counted in `CurrEstab` (a listener builds candidates it may discard).
    opened: AtomicBool,
    /// Times the driver task was polled (observability: an idle session must
    /// not be woken at all).
    wakeups: AtomicU64,
    state: Mutex<State>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave KCP half-updated in a
        // way that matters more than losing the session; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the session (first caller wins). A local close does kcp-go's
    /// final flush; nothing special goes on the wire (§6.4).
    pub(crate) fn close_with(self: &Arc<Self>, fate: Fate) -> bool {
        {
            let mut st = self.lock();
            if !st.conn.end(now(), fate) {
                return false;
            }
            st.wake_io();
            st.wake_driver();
        }
        self.after_close();
        true
    }

    /// What follows the end of a session outside its lock: `CurrEstab` and
    /// the listener's table.
    fn after_close(self: &Arc<Self>) {
        if self.opened.swap(false, Ordering::AcqRel) {
            stats::session_closed();
        }
        if let Some(l) = self.listener.as_ref().and_then(Weak::upgrade) {
            l.remove(self);
        }
    }
}

/// Closes the session when the last user handle goes away.
struct CloseGuard(Arc<Shared>);

impl Drop for CloseGuard {
    fn drop(&mut self) {
        self.0.close_with(Fate::Closed);
    }
}

/// Per-direction timeout sleep of a handle (armed when an operation starts
/// waiting, cleared when it completes).
#[derive(Default)]
struct Timeout {
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
    /// Write side: when the rate limiter will have tokens again.
    pace: Option<Pin<Box<Sleep>>>,
}

impl Timeout {
    /// True when the wait that started earlier has lasted `limit`.
    fn expired(&mut self, limit: Option<Duration>, cx: &mut Context<'_>) -> bool {
        let Some(limit) = limit else {
            self.armed = false;
            return false;
        };
        let at = tokio::time::Instant::now() + limit;
        if !self.armed {
            match self.sleep.as_mut() {
                Some(s) => s.as_mut().reset(at),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
            }
            self.armed = true;
        }
        let fired = match self.sleep.as_mut() {
            Some(s) => s.as_mut().poll(cx).is_ready(),
            None => false,
        };
        if fired {
            self.armed = false;
        }
        fired
    }

    fn clear(&mut self) {
        self.armed = false;
    }
}

/// A KCP session over UDP, wire-compatible with kcp-go's `UDPSession`.
///
/// Implements [`AsyncRead`] and [`AsyncWrite`]; [`into_split`](Self::into_split)
/// gives owned halves. Dropping every handle closes the session.
pub struct Session {
    shared: Arc<Shared>,
    guard: Arc<CloseGuard>,
    rd: Timeout,
    wr: Timeout,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("conv", &self.shared.conv)
            .field("peer", &self.shared.peer)
            .field("origin", &self.shared.origin)
            .finish()
    }
}

/// Socket options a session or listener applies to a socket it owns.
pub(crate) fn socket_options(config: &Config) -> SocketOptions {
    let (recv_buffer, send_buffer) = config.socket_buffers();
    SocketOptions {
        dscp: config.dscp(),
        recv_buffer,
        send_buffer,
    }
}

impl Session {
    /// Dials `addr` (kcp-go `DialWithOptions`, §6.1): binds an ephemeral
    /// unconnected UDP socket of the peer's family, picks a random conv from
    /// the OS RNG and returns at once; nothing is sent until the first write.
    pub async fn dial(addr: impl ToSocketAddrs, config: &Config) -> Result<Session> {
        config.validate()?;
        let peer = lookup_host(addr).await?.next().ok_or_else(|| {
            Error::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "address resolved to nothing",
            ))
        })?;
        let bind: SocketAddr = if peer.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = uio::bind(bind, &socket_options(config))?;
        let conv = rand::rngs::OsRng.next_u32();
        Session::from_socket(socket, peer, conv, config)
    }

    /// A session on a caller-supplied socket with an explicit conv (kcp-go
    /// `NewConn3`). The session owns the socket: it reads every datagram
    /// arriving on it and counts those not from `peer` as `InErrs`. Socket
    /// options in `config` are applied. Outside a tokio runtime this fails
    /// with [`Error::Io`].
    pub fn from_socket(
        socket: UdpSocket,
        peer: SocketAddr,
        conv: u32,
        config: &Config,
    ) -> Result<Session> {
        config.validate()?;
        uio::apply(&socket, &socket_options(config))?;
        Session::with_transport(Arc::new(UdpTransport::new(socket)), peer, conv, config)
    }

    /// A session over any datagram [`Transport`] with an explicit conv: the
    /// session owns the transport's receive side (datagrams not from `peer`
    /// count as `InErrs`) and sends to `peer` through it. Socket options in
    /// `config` are not applied (the transport's own setters are used by
    /// [`set_dscp`](Self::set_dscp) and friends). Outside a tokio runtime
    /// this fails with [`Error::Io`].
    pub fn with_transport(
        transport: Arc<dyn Transport>,
        peer: SocketAddr,
        conv: u32,
        config: &Config,
    ) -> Result<Session> {
        config.validate()?;
        let runtime = runtime_handle()?;
        let local = transport.local_addr()?;
        let (session, driver) =
            Session::build(conv, peer, local, transport, Origin::Dialed, None, config)?;
        session.mark_opened();
        runtime.spawn(driver);
        Ok(session)
    }

    /// Builds the shared state, the user handle and the driver (not spawned).
    pub(crate) fn build(
        conv: u32,
        peer: SocketAddr,
        local: SocketAddr,
        transport: Arc<dyn Transport>,
        origin: Origin,
        listener: Option<Weak<ListenerShared>>,
        config: &Config,
    ) -> Result<(Session, Driver)> {
        let mut conn = Connection::new(conv, config, now())?;
        let sealer = conn
            .take_sealer()
            .ok_or_else(|| Error::InvalidConfig("connection without a sealer".into()))?;
        let state = State::new(conn, config);
        let shared = Arc::new(Shared {
            conv,
            peer,
            local,
            transport,
            origin,
            listener,
            opened: AtomicBool::new(false),
            wakeups: AtomicU64::new(0),
            state: Mutex::new(state),
        });
        let driver = Driver::new(shared.clone(), sealer, origin, config.crypt().clone());
        let session = Session {
            guard: Arc::new(CloseGuard(shared.clone())),
            shared,
            rd: Timeout::default(),
            wr: Timeout::default(),
        };
        Ok((session, driver))
    }

    /// Counts the session as established (`CurrEstab`, `Active/PassiveOpens`).
    pub(crate) fn mark_opened(&self) {
        if !self.shared.opened.swap(true, Ordering::AcqRel) {
            stats::session_opened();
            // PassiveOpens is the listener's counter (Listener::stats).
            if self.shared.origin == Origin::Dialed {
                self.shared.lock().conn.count_active_open();
            }
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Splits into owned read and write halves; the session closes when both
    /// are dropped (or on an explicit [`OwnedWriteHalf::close`]).
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        let Session {
            shared,
            guard,
            rd,
            wr,
        } = self;
        (
            OwnedReadHalf {
                shared: shared.clone(),
                _guard: guard.clone(),
                rd,
            },
            OwnedWriteHalf {
                shared,
                _guard: guard,
                wr,
            },
        )
    }

    /// The conversation id.
    pub fn conv(&self) -> u32 {
        self.shared.conv
    }
    /// The local socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }
    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.shared.peer
    }
    /// Whether the session was dialed or accepted.
    pub fn origin(&self) -> Origin {
        self.shared.origin
    }
    /// Current retransmission timeout in ms (kcp-go `GetRTO`).
    pub fn rto(&self) -> u32 {
        self.shared.lock().conn.rto()
    }
    /// Smoothed RTT in ms (kcp-go `GetSRTT`).
    pub fn srtt(&self) -> i32 {
        self.shared.lock().conn.srtt()
    }
    /// RTT variance in ms (kcp-go `GetSRTTVar`).
    pub fn rttvar(&self) -> i32 {
        self.shared.lock().conn.rttvar()
    }
    /// Segments queued or in flight (kcp-go `WaitSnd`).
    pub fn wait_snd(&self) -> usize {
        self.shared.lock().conn.wait_snd()
    }
    /// This session's counters (kcp-go names; §6.5).
    pub fn stats(&self) -> Snmp {
        self.shared.lock().conn.stats()
    }
    /// How many times this session's driver task has run. An idle session
    /// (nothing queued, in flight or to acknowledge) arms no KCP timer, only
    /// its idle-timeout deadline (if any), so this stops growing; useful to check that in tests and diagnostics.
    pub fn driver_wakeups(&self) -> u64 {
        self.shared.wakeups.load(Ordering::Relaxed)
    }
    /// Whether the session has ended (closed locally or by an error).
    pub fn is_closed(&self) -> bool {
        self.shared.lock().conn.is_closed()
    }
    /// Why the session ended, if it has.
    pub fn error(&self) -> Option<Error> {
        self.shared.lock().fate().map(Fate::error)
    }

    /// kcp-go `SetNoDelay`.
    pub fn set_nodelay(&self, nd: NoDelay) {
        let mut st = self.shared.lock();
        st.conn.set_nodelay(nd);
        st.drive_if_needed();
    }
    /// kcp-go `SetWindowSize`; zero leaves a window unchanged.
    pub fn set_window(&self, snd_wnd: u32, rcv_wnd: u32) {
        let mut st = self.shared.lock();
        st.conn.set_window(snd_wnd, rcv_wnd);
        st.wake_io();
        st.drive_if_needed();
    }
    /// kcp-go `SetMtu`: the largest UDP payload this session sends from now
    /// on, headers and AEAD tag included; KCP gets mtu − headers − tag (§1.9).
    ///
    /// # Errors
    ///
    /// [`Error::MtuTooLarge`] above
    /// [`MAX_PACKET_SIZE`](crate::config::MAX_PACKET_SIZE) (1472): kcp-go
    /// v5.7 truncates longer datagrams to 1472 bytes, so they would fail its
    /// CRC/AEAD check. kcp-go v5.7's own `SetMtu` clamps to 1472 silently and
    /// v5.6's to 1500; we refuse instead so the caller learns why. What the
    /// peer sends is received up to 1500 bytes whatever this is.
    /// [`Error::InvalidConfig`] if the mtu leaves no room for data after the
    /// headers. The mtu is unchanged on error.
    pub fn set_mtu(&self, mtu: usize) -> Result<()> {
        self.shared.lock().conn.set_mtu(mtu)
    }
    /// kcp-go `SetStreamMode`.
    pub fn set_stream_mode(&self, mode: StreamMode) {
        self.shared.lock().conn.set_stream_mode(mode);
    }
    /// kcp-go `SetACKNoDelay`.
    pub fn set_ack_nodelay(&self, nodelay: bool) {
        self.shared.lock().conn.set_ack_nodelay(nodelay);
    }
    /// kcp-go `SetWriteDelay`.
    pub fn set_write_delay(&self, delay: bool) {
        self.shared.lock().conn.set_write_delay(delay);
    }
    /// kcp-go `SetRateLimit` in bytes per second; 0 disables. Gives this
    /// session a bucket of its own ([`RateLimiter::new`]: burst = one
    /// second's worth), replacing any limiter it had. As in kcp-go v5.7 it
    /// limits application bytes accepted by writes, not datagrams (see
    /// [`crate::rate`] for the difference from v5.6).
    pub fn set_rate_limit(&self, bytes_per_second: u32) {
        self.set_rate_limiter(RateLimiter::new(bytes_per_second).ok());
    }
    /// kcp-go v5.7 `SetBucket`: limit this session's writes with `limiter`,
    /// which other sessions may share (clones share one bucket); `None`
    /// removes the limit. A write already waiting for tokens re-checks at once.
    pub fn set_rate_limiter(&self, limiter: Option<RateLimiter>) {
        set_rate_limiter_impl(&self.shared, limiter);
    }
    /// The limiter this session's writes draw from, if any (a clone sharing
    /// its bucket, e.g. to give another session the same limit).
    pub fn rate_limiter(&self) -> Option<RateLimiter> {
        self.shared.lock().conn.rate_limiter().cloned()
    }
    /// kcp-go v5.7 `ResetRTO` ([`Kcp::reset_rto`](crate::kcp::Kcp::reset_rto)): every unacknowledged
    /// segment becomes due for retransmission at the next timer tick (within
    /// one interval; nothing is sent by this call), with its backed-off RTO
    /// reset. For when the application knows connectivity is back (a new
    /// route, a network change) and wants data moving without waiting out
    /// the timers. The resends count as `LostSegs` and, with congestion
    /// control on, shrink the window as a timeout would.
    pub fn reset_rto(&self) {
        let mut st = self.shared.lock();
        st.conn.reset_rto(now());
        st.drive_if_needed();
    }
    /// Each read waiting longer than this fails with [`Error::Timeout`].
    pub fn set_read_timeout(&self, timeout: Option<Duration>) {
        let mut st = self.shared.lock();
        st.read_timeout = timeout;
        if let Some(w) = st.read_waker.take() {
            w.wake();
        }
    }
    /// Each write waiting longer than this fails with [`Error::Timeout`].
    pub fn set_write_timeout(&self, timeout: Option<Duration>) {
        let mut st = self.shared.lock();
        st.write_timeout = timeout;
        if let Some(w) = st.write_waker.take() {
            w.wake();
        }
    }
    /// End the session with [`Error::IdleTimeout`] after this long without a
    /// valid datagram from the peer.
    pub fn set_idle_timeout(&self, timeout: Option<Duration>) {
        let mut st = self.shared.lock();
        st.conn.set_idle_timeout(timeout);
        st.drive_if_needed();
    }
    /// End the session with [`Error::DeadLink`] when a segment sent this many
    /// times is still unacknowledged when its next retransmission is due.
    pub fn set_dead_link(&self, transmissions: Option<u32>) {
        self.shared.lock().conn.set_dead_link(transmissions);
    }
    /// kcp-go `SetDSCP`; only for a session that owns its socket.
    pub fn set_dscp(&self, dscp: u8) -> Result<()> {
        self.owned_socket("SetDSCP")?;
        if dscp > 63 {
            return Err(Error::InvalidConfig(format!("DSCP {dscp} exceeds 63")));
        }
        Ok(self.shared.transport.set_dscp(dscp)?)
    }
    /// kcp-go `SetReadBuffer`; only for a session that owns its socket.
    pub fn set_recv_buffer(&self, bytes: usize) -> Result<()> {
        self.owned_socket("SetReadBuffer")?;
        Ok(self.shared.transport.set_recv_buffer(bytes)?)
    }
    /// kcp-go `SetWriteBuffer`; only for a session that owns its socket.
    pub fn set_send_buffer(&self, bytes: usize) -> Result<()> {
        self.owned_socket("SetWriteBuffer")?;
        Ok(self.shared.transport.set_send_buffer(bytes)?)
    }
    fn owned_socket(&self, what: &str) -> Result<()> {
        match self.shared.origin {
            Origin::Dialed => Ok(()),
            Origin::Accepted => Err(Error::InvalidConfig(format!(
                "{what} is not allowed on a session sharing its listener's socket"
            ))),
        }
    }

    /// Registers the handler for OOB payloads (§4.6); it runs on the receive
    /// path and must not block.
    pub fn set_oob_handler(&self, handler: impl FnMut(&[u8]) + Send + 'static) -> Result<()> {
        self.shared.lock().conn.set_oob_handler(handler)
    }
    /// Largest OOB payload (kcp-go `GetOOBMaxSize`); 0 without FEC.
    pub fn oob_max_size(&self) -> usize {
        self.shared.lock().conn.oob_max_size()
    }
    /// Sends an unreliable out-of-band datagram (kcp-go `SendOOB`, §4.6).
    pub fn send_oob(&self, data: &[u8]) -> Result<()> {
        let mut st = self.shared.lock();
        st.conn.send_oob(data)?;
        st.drive_if_needed();
        Ok(())
    }

    /// Closes the session (kcp-go `Close`): one final flush, nothing else on
    /// the wire; buffered received data can still be read. A second call
    /// returns [`Error::Closed`]. Dropping every handle does the same.
    ///
    /// Data written before the close is not discarded: everything the final
    /// flush emits is still sent, after the handles are gone, as long as the
    /// tokio runtime runs (kcp-go v5.6.72 behaves the same; kcp-go v5.7.x
    /// drops datagrams still queued for sending on Close, so an accepted
    /// session there that writes then closes at once loses its data, §12).
    /// Like kcp-go, the final flush sends only what the windows allow and
    /// nothing is retransmitted afterwards: a dialed session that has not
    /// heard from its peer yet may only have the initial remote window of 32
    /// segments in flight, and a lost datagram stays lost. To be sure the
    /// peer has everything, await [`drain`](Self::drain) before closing.
    pub fn close(&self) -> Result<()> {
        close_shared(&self.shared)
    }

    /// Waits until everything written has been acknowledged by the peer (or
    /// the session ends, or the write timeout passes).
    pub async fn drain(&mut self) -> Result<()> {
        let shared = self.shared.clone();
        let wr = &mut self.wr;
        std::future::poll_fn(|cx| poll_drain(&shared, wr, cx)).await
    }

    /// Sends one message (message mode: it arrives whole in one
    /// [`recv_msg`](Self::recv_msg)). Waits while the send window is full.
    ///
    /// In message mode a message is cut into `mss`-byte fragments, and a
    /// kcp-go receiver can only assemble a message of at most its receive
    /// window's worth of fragments (a longer one fills its queue and stops
    /// the session for good). So a message needing more fragments than
    /// `min(255, W)` fails at once with [`Error::MessageTooLarge`] (nothing
    /// is queued; the session is unaffected), where `W` is the largest
    /// window the peer has advertised so far (a lower bound of its receive
    /// window). A dialed session that has heard nothing from its peer yet
    /// does not guess: a message of more than 32 fragments (kcp-go's default
    /// receive window) waits while the session asks the peer's window with
    /// a KCP window probe (`IKCP_CMD_WASK`, answered by every KCP peer), then
    /// goes out or is refused against the answer (the write timeout bounds
    /// the wait). An accepted session has always heard its peer. In stream
    /// mode there is no such limit (fragments are independent).
    pub async fn send_msg(&mut self, msg: &[u8]) -> Result<()> {
        let shared = self.shared.clone();
        let wr = &mut self.wr;
        std::future::poll_fn(|cx| poll_send_msg(&shared, wr, cx, msg)).await
    }

    /// Receives one whole message into `buf`; [`Error::BufferTooSmall`] (the
    /// message stays queued) if it does not fit.
    pub async fn recv_msg(&mut self, buf: &mut [u8]) -> Result<usize> {
        let shared = self.shared.clone();
        let rd = &mut self.rd;
        std::future::poll_fn(|cx| poll_recv_msg(&shared, rd, cx, buf)).await
    }

    /// A read that never waits (tokio's `try_read`; kcp-go v5.7 `TryRead`):
    /// `Ok(n)` with `n > 0` bytes of data, `Err` of kind
    /// [`WouldBlock`](io::ErrorKind::WouldBlock) when nothing is ready yet,
    /// and, once the session has ended and everything received has been read,
    /// the same error [`AsyncRead`] reports then (KCP has no end-of-stream, so
    /// that is an error such as [`Error::Closed`] as `BrokenPipe`, not
    /// `Ok(0)`). `Ok(0)` only for an empty `buf`. Byte-stream semantics as
    /// for `AsyncRead`: the tail of a message that does not fit stays for the
    /// next read. Pair it with [`readable`](Self::readable) or
    /// [`set_read_notify`](Self::set_read_notify).
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        try_read_impl(&self.shared, buf)
    }
    /// [`recv_msg`](Self::recv_msg) without waiting: [`Error::WouldBlock`]
    /// when no message is ready, [`Error::BufferTooSmall`] (the message stays
    /// queued) when it does not fit, the session's error once it has ended
    /// and nothing is left.
    pub fn try_recv_msg(&self, buf: &mut [u8]) -> Result<usize> {
        try_recv_msg_impl(&self.shared, buf)
    }
    /// Waits until data is ready to read or the session has ended, i.e.
    /// until [`try_read`](Self::try_read) would not return `WouldBlock`
    /// (like tokio's `UdpSocket::readable`). Another reader may take the data
    /// first, so loop on `WouldBlock`. Any number of tasks may wait at once;
    /// cancel-safe. No read timeout applies (wrap it in `tokio::time::timeout`).
    pub async fn readable(&self) {
        readable_impl(&self.shared).await
    }
    /// kcp-go v5.7 `SetReadNotify`: `f` is called when data may have become
    /// ready to read (after input that leaves data queued, possibly again for
    /// data already announced) and when the session ends, and once at
    /// registration if either already holds. For driving
    /// [`try_read`](Self::try_read) from outside async code (an event loop, a
    /// channel). It runs on the receive path under the session's lock: it
    /// must be quick, must not block, and must not call into this session
    /// (that deadlocks). Replaces any earlier callback.
    pub fn set_read_notify(&self, f: impl FnMut() + Send + 'static) {
        set_read_notify_impl(&self.shared, Some(Box::new(f)));
    }
    /// Removes the [`set_read_notify`](Self::set_read_notify) callback.
    pub fn clear_read_notify(&self) {
        set_read_notify_impl(&self.shared, None);
    }
}

fn set_rate_limiter_impl(shared: &Shared, limiter: Option<RateLimiter>) {
    let mut st = shared.lock();
    st.conn.set_rate_limiter(limiter);
    if let Some(w) = st.write_waker.take() {
        w.wake();
    }
}

/// The current tokio runtime, or an error instead of tokio's panic.
pub(crate) fn runtime_handle() -> Result<tokio::runtime::Handle> {
    tokio::runtime::Handle::try_current().map_err(|_| {
        Error::Io(io::Error::other(
            "kcp-session needs a tokio runtime (call from within one)",
        ))
    })
}

fn close_shared(shared: &Arc<Shared>) -> Result<()> {
    if shared.close_with(Fate::Closed) {
        Ok(())
    } else {
        Err(Error::Closed)
    }
}

/// A byte-stream read that does not wait: `Some(Ok(n))` with data (`dst` is
/// not empty), `Some(Err)` once the session has ended and nothing is left,
/// `None` when a read would have to wait.
fn read_ready(st: &mut State, dst: &mut [u8]) -> Option<io::Result<usize>> {
    let r = match st.conn.read(dst) {
        Err(Error::WouldBlock) => None,
        r => Some(r.map_err(Into::into)),
    };
    st.drive_if_needed();
    r
}

/// `try_read` of every handle: see [`Session::try_read`].
fn try_read_impl(shared: &Shared, buf: &mut [u8]) -> io::Result<usize> {
    if buf.is_empty() {
        return Ok(0);
    }
    read_ready(&mut shared.lock(), buf).unwrap_or_else(|| Err(io::ErrorKind::WouldBlock.into()))
}

fn poll_read_impl(
    shared: &Shared,
    rd: &mut Timeout,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    if buf.remaining() == 0 {
        return Poll::Ready(Ok(()));
    }
    let mut st = shared.lock();
    let st = &mut *st;
    // Checked first so a waiting read does not initialise `buf` every poll.
    if st.conn.is_readable() || st.conn.is_closed() {
        if let Some(r) = read_ready(st, buf.initialize_unfilled()) {
            rd.clear();
            return Poll::Ready(r.map(|n| buf.advance(n)));
        }
    }
    st.read_waker = Some(cx.waker().clone());
    let limit = st.read_timeout;
    if rd.expired(limit, cx) {
        st.read_waker = None;
        return Poll::Ready(Err(Error::Timeout.into()));
    }
    Poll::Pending
}

/// A message read that does not wait; `None` when it would have to.
fn recv_msg_ready(st: &mut State, buf: &mut [u8]) -> Option<Result<usize>> {
    let r = match st.conn.recv_msg(buf) {
        Err(Error::WouldBlock) => None,
        r => Some(r),
    };
    st.drive_if_needed();
    r
}

/// `try_recv_msg` of every handle: see [`Session::try_recv_msg`].
fn try_recv_msg_impl(shared: &Shared, buf: &mut [u8]) -> Result<usize> {
    recv_msg_ready(&mut shared.lock(), buf).unwrap_or(Err(Error::WouldBlock))
}

/// Completes once a `try_read`/`try_recv_msg` would not report `WouldBlock`:
/// data is ready or the session has ended. Many may wait at once.
async fn readable_impl(shared: &Shared) {
    /// Keeps `read_watchers` exact even if the future is dropped mid-wait.
    struct Watch<'a>(&'a Shared);
    impl Drop for Watch<'_> {
        fn drop(&mut self) {
            self.0.lock().read_watchers -= 1;
        }
    }
    let ready = shared.lock().ready.clone();
    loop {
        let notified = ready.notified();
        tokio::pin!(notified);
        {
            let mut st = shared.lock();
            if st.conn.is_readable() || st.conn.is_closed() {
                return;
            }
            // Registered under the lock that every producer holds when it
            // signals, so no wakeup can fall between the check and the wait.
            notified.as_mut().enable();
            st.read_watchers += 1;
        }
        let _watch = Watch(shared);
        notified.await;
    }
}

/// `set_read_notify` of every handle: see [`Session::set_read_notify`].
fn set_read_notify_impl(shared: &Shared, f: Option<ReadNotify>) {
    let mut st = shared.lock();
    st.read_notify = f;
    let now = st.conn.is_readable() || st.conn.is_closed();
    if let (true, Some(f)) = (now, st.read_notify.as_mut()) {
        // Data that arrived before registration must not go unannounced.
        f();
    }
}

fn poll_recv_msg(
    shared: &Shared,
    rd: &mut Timeout,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<Result<usize>> {
    let mut st = shared.lock();
    let st = &mut *st;
    if let Some(r) = recv_msg_ready(st, buf) {
        rd.clear();
        return Poll::Ready(r);
    }
    st.read_waker = Some(cx.waker().clone());
    let limit = st.read_timeout;
    if rd.expired(limit, cx) {
        st.read_waker = None;
        return Poll::Ready(Err(Error::Timeout));
    }
    Poll::Pending
}

/// Runs a write-side connection call until it stops reporting `WouldBlock`
/// for a rate-limiter wait that is already over; `Pending` (with wakers and
/// the write timeout armed) when it has to wait.
fn poll_write_op<T>(
    shared: &Shared,
    wr: &mut Timeout,
    cx: &mut Context<'_>,
    mut op: impl FnMut(&mut Connection, Instant) -> Result<T>,
) -> Poll<Result<T>> {
    let mut st = shared.lock();
    loop {
        let r = op(&mut st.conn, now());
        st.drive_if_needed();
        match r {
            Err(Error::WouldBlock) => {}
            r => {
                wr.clear();
                return Poll::Ready(r);
            }
        }
        // Out of tokens (the window had room): wait on the timer, unless
        // the wait is already over.
        match st.conn.pace_until() {
            Some(at) if poll_pace(at, &mut wr.pace, cx) => continue,
            _ => break,
        }
    }
    st.write_waker = Some(cx.waker().clone());
    let limit = st.write_timeout;
    if wr.expired(limit, cx) {
        st.write_waker = None;
        return Poll::Ready(Err(Error::Timeout));
    }
    Poll::Pending
}

fn poll_write_impl(
    shared: &Shared,
    wr: &mut Timeout,
    cx: &mut Context<'_>,
    data: &[u8],
) -> Poll<io::Result<usize>> {
    if data.is_empty() {
        return Poll::Ready(Ok(0));
    }
    poll_write_op(shared, wr, cx, |c, now| c.write(now, data)).map_err(Into::into)
}

fn poll_send_msg(
    shared: &Shared,
    wr: &mut Timeout,
    cx: &mut Context<'_>,
    msg: &[u8],
) -> Poll<Result<()>> {
    poll_write_op(shared, wr, cx, |c, now| c.send_msg(now, msg))
}

fn poll_drain(shared: &Shared, wr: &mut Timeout, cx: &mut Context<'_>) -> Poll<Result<()>> {
    let mut st = shared.lock();
    if st.conn.is_drained() {
        wr.clear();
        return Poll::Ready(Ok(()));
    }
    if let Some(f) = st.fate() {
        return Poll::Ready(Err(f.error()));
    }
    st.write_waker = Some(cx.waker().clone());
    let limit = st.write_timeout;
    if wr.expired(limit, cx) {
        st.write_waker = None;
        return Poll::Ready(Err(Error::Timeout));
    }
    Poll::Pending
}

fn poll_flush_impl(shared: &Shared) -> Poll<io::Result<()>> {
    let mut st = shared.lock();
    st.conn.flush();
    st.drive_if_needed();
    Poll::Ready(Ok(()))
}

impl AsyncRead for Session {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        poll_read_impl(&this.shared, &mut this.rd, cx, buf)
    }
}

impl AsyncWrite for Session {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        poll_write_impl(&this.shared, &mut this.wr, cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        poll_flush_impl(&self.shared)
    }
    /// Closes the session like [`Session::close`] (there is no half-close in
    /// KCP); a second shutdown is a no-op.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _ = close_shared(&self.shared);
        Poll::Ready(Ok(()))
    }
}

/// The read half of a [`Session`].
pub struct OwnedReadHalf {
    shared: Arc<Shared>,
    _guard: Arc<CloseGuard>,
    rd: Timeout,
}

impl std::fmt::Debug for OwnedReadHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedReadHalf")
            .field("conv", &self.shared.conv)
            .finish()
    }
}

impl OwnedReadHalf {
    /// The conversation id.
    pub fn conv(&self) -> u32 {
        self.shared.conv
    }
    /// The session's counters.
    pub fn stats(&self) -> Snmp {
        self.shared.lock().conn.stats()
    }
    /// See [`Session::recv_msg`].
    pub async fn recv_msg(&mut self, buf: &mut [u8]) -> Result<usize> {
        let shared = self.shared.clone();
        let rd = &mut self.rd;
        std::future::poll_fn(|cx| poll_recv_msg(&shared, rd, cx, buf)).await
    }
    /// See [`Session::try_read`].
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        try_read_impl(&self.shared, buf)
    }
    /// See [`Session::try_recv_msg`].
    pub fn try_recv_msg(&self, buf: &mut [u8]) -> Result<usize> {
        try_recv_msg_impl(&self.shared, buf)
    }
    /// See [`Session::readable`].
    pub async fn readable(&self) {
        readable_impl(&self.shared).await
    }
    /// See [`Session::set_read_notify`].
    pub fn set_read_notify(&self, f: impl FnMut() + Send + 'static) {
        set_read_notify_impl(&self.shared, Some(Box::new(f)));
    }
    /// See [`Session::clear_read_notify`].
    pub fn clear_read_notify(&self) {
        set_read_notify_impl(&self.shared, None);
    }
}

impl AsyncRead for OwnedReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        poll_read_impl(&this.shared, &mut this.rd, cx, buf)
    }
}

/// The write half of a [`Session`].
pub struct OwnedWriteHalf {
    shared: Arc<Shared>,
    _guard: Arc<CloseGuard>,
    wr: Timeout,
}

impl std::fmt::Debug for OwnedWriteHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedWriteHalf")
            .field("conv", &self.shared.conv)
            .finish()
    }
}

impl OwnedWriteHalf {
    /// The conversation id.
    pub fn conv(&self) -> u32 {
        self.shared.conv
    }
    /// The session's counters.
    pub fn stats(&self) -> Snmp {
        self.shared.lock().conn.stats()
    }
    /// See [`Session::send_msg`].
    pub async fn send_msg(&mut self, msg: &[u8]) -> Result<()> {
        let shared = self.shared.clone();
        let wr = &mut self.wr;
        std::future::poll_fn(|cx| poll_send_msg(&shared, wr, cx, msg)).await
    }
    /// See [`Session::drain`].
    pub async fn drain(&mut self) -> Result<()> {
        let shared = self.shared.clone();
        let wr = &mut self.wr;
        std::future::poll_fn(|cx| poll_drain(&shared, wr, cx)).await
    }
    /// Closes the whole session (see [`Session::close`]).
    pub fn close(&self) -> Result<()> {
        close_shared(&self.shared)
    }
    /// See [`Session::set_rate_limit`].
    pub fn set_rate_limit(&self, bytes_per_second: u32) {
        set_rate_limiter_impl(&self.shared, RateLimiter::new(bytes_per_second).ok());
    }
    /// See [`Session::set_rate_limiter`].
    pub fn set_rate_limiter(&self, limiter: Option<RateLimiter>) {
        set_rate_limiter_impl(&self.shared, limiter);
    }
    /// See [`Session::rate_limiter`].
    pub fn rate_limiter(&self) -> Option<RateLimiter> {
        self.shared.lock().conn.rate_limiter().cloned()
    }
}

impl AsyncWrite for OwnedWriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        poll_write_impl(&this.shared, &mut this.wr, cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        poll_flush_impl(&self.shared)
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _ = close_shared(&self.shared);
        Poll::Ready(Ok(()))
    }
}

fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
    )
}

type WritableFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

/// The per-session task: timers, sealing, sending, and (for dialed sessions)
/// receiving.
pub(crate) struct Driver {
    shared: Arc<Shared>,
    sealer: Sealer,
    /// Dialed sessions open their own datagrams.
    opener: Option<Opener>,
    out: SendBatch,
    taken: Vec<Outgoing>,
    pool: PacketPool,
    timer: Pin<Box<Sleep>>,
    timer_at: Option<TokioInstant>,
    writable: Option<WritableFuture>,
    c: Counters,
}

impl Driver {
    fn new(shared: Arc<Shared>, sealer: Sealer, origin: Origin, crypt: Crypt) -> Driver {
        let opener = match origin {
            Origin::Dialed => Some((crypt, RecvBatch::new(SESSION_RECV_BATCH), Vec::new())),
            Origin::Accepted => None,
        };
        Driver {
            shared,
            sealer,
            opener,
            out: SendBatch::new(),
            taken: Vec::new(),
            pool: PacketPool::new(SESSION_POOL),
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            timer_at: None,
            writable: None,
            c: Counters::default(),
        }
    }

    /// Reads one batch from the owned socket and opens it. Returns how many
    /// datagrams were read, or the fatal error.
    fn poll_socket(&mut self, cx: &mut Context<'_>) -> std::result::Result<usize, io::Error> {
        let Some((crypt, rx, plains)) = self.opener.as_mut() else {
            return Ok(0);
        };
        loop {
            rx.clear();
            match self.shared.transport.poll_recv(cx, rx) {
                Poll::Pending => return Ok(0),
                Poll::Ready(Err(e)) if transient(&e) => continue,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Ready(Ok(n)) => {
                    plains.clear();
                    for i in 0..n {
                        let Some((d, from)) = rx.get_mut(i) else {
                            plains.push(None);
                            continue;
                        };
                        if from != self.shared.peer {
                            self.c.in_errs += 1;
                            plains.push(None);
                            continue;
                        }
                        plains.push(codec::open_counted(crypt, d, &mut self.c));
                    }
                    return Ok(n);
                }
            }
        }
    }

    /// Sends what is queued. The rate limit applies to writes (kcp-go v5.7,
    /// [`crate::rate`]), not here: ACKs and retransmissions are never held.
    fn send(&mut self, cx: &mut Context<'_>) -> std::result::Result<(), io::Error> {
        while !self.out.is_empty() {
            if let Some(w) = self.writable.as_mut() {
                match w.as_mut().poll(cx) {
                    Poll::Pending => return Ok(()),
                    Poll::Ready(_) => self.writable = None,
                }
            }
            let (pkts, bytes) = self.out.try_send(
                &*self.shared.transport,
                self.shared.peer,
                usize::MAX,
                &mut self.pool,
            )?;
            self.c.out_pkts += pkts as u64;
            self.c.out_bytes += bytes as u64;
            if !self.out.is_empty() {
                // Socket buffer full: wait for writability. Boxed once per
                // stall, not per packet; works with many sessions sharing a
                // listener's socket (poll_send_ready keeps only one waker).
                let transport = self.shared.transport.clone();
                self.writable = Some(Box::pin(async move { transport.writable().await }));
            }
        }
        Ok(())
    }

    fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.shared.wakeups.fetch_add(1, Ordering::Relaxed);
        for _ in 0..DRIVER_BUDGET {
            let mut fatal: Option<Fate> = None;
            let got = match self.poll_socket(cx) {
                Ok(n) => n,
                Err(e) => {
                    self.c.in_errs += 1;
                    fatal = Some(Fate::Io(e.kind(), e.to_string()));
                    0
                }
            };
            let now = now();
            let (deadline, finished, newly_closed, now_ms);
            {
                let mut guard = self.shared.lock();
                let st = &mut *guard;
                st.conn.counters().absorb(&mut self.c);
                if got > 0 {
                    if let Some((_, rx, plains)) = self.opener.as_mut() {
                        for (i, range) in plains.iter().enumerate().take(got) {
                            let Some(range) = range.clone() else { continue };
                            match rx.get_mut(i).and_then(|(d, _)| d.get(range)) {
                                Some(plain) => {
                                    st.conn.handle_plain(now, plain);
                                }
                                None => st.conn.counters().in_errs += 1,
                            }
                        }
                    }
                }
                let was_closed = st.conn.is_closed();
                st.conn.handle_timeout(now);
                if let Some(f) = fatal.take() {
                    st.conn.end(now, f);
                }
                newly_closed = !was_closed && st.conn.is_closed();
                now_ms = st.conn.now_ms();
                st.conn.take_outgoing(&mut self.taken);
                st.wake_io();
                st.driver_waker = Some(cx.waker().clone());
                deadline = st.conn.poll_timeout().map(TokioInstant::from_std);
                // Abnormal endings discard unsent data; a local close sends it.
                finished = st.conn.close_reason().is_some_and(|f| *f != Fate::Closed);
                st.conn.publish();
            }
            if newly_closed {
                self.shared.after_close();
            }
            if finished {
                self.taken.clear();
                self.out.clear(&mut self.pool);
                return Poll::Ready(());
            }
            for item in self.taken.drain(..) {
                self.sealer
                    .seal(item, now_ms, &mut self.pool, &mut self.out, &mut self.c);
            }
            match self.send(cx) {
                Ok(()) => {}
                Err(e) => {
                    self.shared.close_with(Fate::Io(e.kind(), e.to_string()));
                    continue;
                }
            };
            {
                // Done once closed with nothing left to send: neither in
                // `out` nor queued since this pass took the outgoing queue.
                // A write and close landing between that take and here leave
                // their datagrams queued (the last data of a session that
                // writes then closes at once); ending now would drop them.
                let mut st = self.shared.lock();
                if st.conn.is_closed() && self.out.is_empty() {
                    if st.conn.has_outgoing() {
                        continue;
                    }
                    st.conn.counters().absorb(&mut self.c);
                    st.conn.publish();
                    return Poll::Ready(());
                }
            }
            let mut fired = false;
            if let Some(at) = deadline {
                if self.timer_at != Some(at) {
                    self.timer.as_mut().reset(at);
                    self.timer_at = Some(at);
                }
                if self.timer.as_mut().poll(cx).is_ready() {
                    self.timer_at = None;
                    fired = true;
                }
            } else {
                self.timer_at = None;
                if self.out.is_empty() {
                    // Idle: hand cached buffers back to the shared pool so
                    // thousands of idle sessions hold none.
                    self.pool.release();
                    self.shared.lock().conn.release_buffers();
                }
            }
            if !fired && got == 0 {
                return Poll::Pending;
            }
        }
        // Used the budget: let other tasks run, then continue.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Future for Driver {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.get_mut().poll_drive(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync() {
        send_sync::<Session>();
        send_sync::<OwnedReadHalf>();
        send_sync::<OwnedWriteHalf>();
        send_sync::<crate::listener::Listener>();
    }
}
