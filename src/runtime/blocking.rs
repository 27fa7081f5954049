//! A blocking API over std sockets and threads, for programs without an
//! async runtime: [`Session`] implements [`std::io::Read`] and
//! [`std::io::Write`], [`Listener`] accepts sessions. Same wire, same rules
//! (the pure [`Connection`]) as the tokio [`crate::Session`]; no tokio here.
//!
//! ```
//! use std::io::{Read, Write};
//! use kcp_session::blocking::{Listener, Session};
//! use kcp_session::Config;
//!
//! # fn main() -> kcp_session::Result<()> {
//! let config = Config::builder().crypt_kcptun("aes", "it's a secrect").fec(10, 3).build()?;
//! let listener = Listener::listen("127.0.0.1:0", &config)?;
//! let addr = listener.local_addr();
//! let server = std::thread::spawn(move || -> kcp_session::Result<()> {
//!     // Echo one message back.
//!     let mut s = listener.accept()?;
//!     let mut buf = [0u8; 64];
//!     let n = s.read(&mut buf)?;
//!     s.write_all(&buf[..n])?;
//!     s.drain()?; // until the client has acknowledged it
//!     Ok(())
//! });
//!
//! let mut session = Session::dial(addr, &config)?;
//! session.set_read_timeout(Some(std::time::Duration::from_secs(5)));
//! session.write_all(b"hello over kcp")?;
//! let mut echo = [0u8; 14];
//! session.read_exact(&mut echo)?;
//! assert_eq!(&echo, b"hello over kcp");
//! server.join().unwrap()?;
//! # Ok(())
//! # }
//! ```
//!
//! # Threads, wake-ups and latency
//!
//! A dialed session has one background thread that owns its socket's
//! receive side and the session's timers; a listener has one thread for the
//! shared socket and the timers of all its sessions. Application threads
//! never wait for these threads to send: a write (or `send_msg`, `close`, a
//! read that reopens the window) runs under the session's lock, takes the
//! datagrams the [`Connection`] produced and sends them itself, and runs a
//! timer pass itself when one is already due. The background thread sleeps
//! in `recv_from` with a socket read timeout equal to the time until the
//! session's next deadline ([`Connection::poll_timeout`]). When an
//! application call moves that deadline earlier (for example, the first
//! write after an idle period arms the retransmission timer), it wakes the
//! thread by sending one empty datagram to the socket's own address on
//! loopback. That happens only when the deadline moves earlier than the one
//! the thread sleeps to, not once per write. The thread ignores such
//! datagrams. The thread also wakes at least every second as a backstop,
//! should a wake-up datagram be lost. So timers fire within the scheduler's
//! latency of their deadline. Received data reaches a blocked reader as
//! soon as the datagram is processed: readers and writers wait on a
//! condition variable that the thread signals.
//!
//! The listener's thread handles datagrams and timers for every session in
//! one loop, so it suits tens or hundreds of sessions. For thousands, use
//! the tokio [`crate::Listener`].
//!
//! A session's thread ends when the session ends (close, idle timeout, dead
//! link, socket error) or its last handle is dropped. Dropping the last
//! handle joins it. The listener's thread ends once the listener and every
//! session it accepted are gone (or closed). As with the tokio session,
//! [`Session::close`] does kcp-go's final flush and sends what it produced
//! before returning, so data written before the close goes out; nothing is
//! retransmitted afterwards (call [`Session::drain`] first to be sure).

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::RngCore;

use crate::codec;
use crate::config::{Config, MTU_LIMIT};
use crate::connection::{CloseReason, Connection};
use crate::endpoint::{Backlog, ConnId, DropReason, Endpoint, Event, Retire};
use crate::error::{Error, Result};
use crate::session::{socket_options, Origin};
use crate::stats::{self, Counters, Publisher, Snmp};
use crate::transport::socket as uio;

/// The longest a background thread sleeps without a deadline (a backstop in
/// case a wake-up datagram is lost).
const BACKSTOP: Duration = Duration::from_secs(1);
/// A deadline that moves earlier by less than this does not wake the thread.
const WAKE_SLACK: Duration = Duration::from_millis(1);

static LIVE_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Background threads of this module still running (sessions' and
/// listeners'); for tests that check none is left behind.
#[doc(hidden)]
pub fn live_threads() -> usize {
    LIVE_THREADS.load(Ordering::SeqCst)
}

static WAKE_DATAGRAMS: AtomicUsize = AtomicUsize::new(0);

/// Wake-up datagrams sent so far (process-wide); for tests that check
/// wake-ups stay rare.
#[doc(hidden)]
pub fn wake_datagrams() -> usize {
    WAKE_DATAGRAMS.load(Ordering::SeqCst)
}

/// Counts a running background thread (also when it panics).
struct Alive;

impl Alive {
    fn new() -> Alive {
        LIVE_THREADS.fetch_add(1, Ordering::SeqCst);
        Alive
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        LIVE_THREADS.fetch_sub(1, Ordering::SeqCst);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn resolve(addr: impl ToSocketAddrs) -> Result<SocketAddr> {
    addr.to_socket_addrs()?.next().ok_or_else(|| {
        Error::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            "address resolved to nothing",
        ))
    })
}

fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
    )
}

/// Wakes a background thread sleeping in `recv_from` by sending an empty
/// datagram to its socket's own address.
struct Wake {
    socket: Arc<UdpSocket>,
    /// The socket's address as seen from itself (loopback if unspecified).
    addr: SocketAddr,
    sleep: Mutex<Sleep>,
}

#[derive(Default)]
struct Sleep {
    /// When the sleeping thread looks next; `None` while it is awake.
    until: Option<Instant>,
    /// Deadlines asked for while it was awake (it may have looked at the
    /// session already), for its next sleep.
    asked: Option<Instant>,
}

impl Wake {
    fn new(socket: Arc<UdpSocket>, local: SocketAddr) -> Wake {
        let mut addr = local;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        Wake {
            socket,
            addr,
            sleep: Mutex::new(Sleep::default()),
        }
    }

    /// The thread is about to sleep until `at`; returns when it must wake,
    /// counting deadlines asked for while it was awake.
    fn sleeping_until(&self, at: Instant) -> Instant {
        let mut s = lock(&self.sleep);
        let t = s.asked.take().map_or(at, |a| a.min(at));
        s.until = Some(t);
        t
    }

    /// The thread woke up.
    fn awake(&self) {
        lock(&self.sleep).until = None;
    }

    /// Something must happen at `at`: wake the thread if it sleeps longer.
    fn need(&self, at: Instant) {
        let mut s = lock(&self.sleep);
        match s.until {
            None => s.asked = Some(s.asked.map_or(at, |a| a.min(at))),
            Some(u) if at + WAKE_SLACK < u => {
                s.until = Some(at);
                drop(s);
                self.now();
            }
            Some(_) => {}
        }
    }

    /// Wakes the thread now.
    fn now(&self) {
        WAKE_DATAGRAMS.fetch_add(1, Ordering::SeqCst);
        let _ = self.socket.send_to(&[], self.addr);
    }

    fn is_wake(&self, n: usize, from: SocketAddr) -> bool {
        n == 0 && from == self.addr
    }
}

/// Stops and joins a background thread when the last handle that needs it
/// goes away.
struct Joiner {
    stop: Arc<AtomicBool>,
    wake: Arc<Wake>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Joiner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.now();
        if let Some(h) = lock(&self.handle).take() {
            // Never join from the thread itself (it may drop the last
            // handle of a session it created).
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

/// A session's state behind its lock.
struct State {
    conn: Connection,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    /// Counted in `CurrEstab`.
    opened: bool,
    /// The background thread has been told the session ended.
    told_closed: bool,
    /// A `drain` is waiting for everything to be acknowledged.
    draining: bool,
    tx: Box<[u8]>,
}

/// What a session's handles and its background thread share.
struct Shared {
    conv: u32,
    peer: SocketAddr,
    local: SocketAddr,
    origin: Origin,
    socket: Arc<UdpSocket>,
    wake: Arc<Wake>,
    state: Mutex<State>,
    /// Signalled when reads or writes may make progress or the session ends.
    cond: Condvar,
}

impl Shared {
    fn new(
        conn: Connection,
        peer: SocketAddr,
        local: SocketAddr,
        origin: Origin,
        socket: Arc<UdpSocket>,
        wake: Arc<Wake>,
        config: &Config,
    ) -> Shared {
        Shared {
            conv: conn.conv(),
            peer,
            local,
            origin,
            socket,
            wake,
            state: Mutex::new(State {
                conn,
                read_timeout: config.read_timeout(),
                write_timeout: config.write_timeout(),
                opened: false,
                told_closed: false,
                draining: false,
                tx: vec![0u8; MTU_LIMIT].into_boxed_slice(),
            }),
            cond: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Sends every datagram the connection has for the peer.
    fn transmit(&self, st: &mut State, now: Instant) {
        let State { conn, tx, .. } = st;
        while let Some(n) = conn.poll_transmit(now, tx) {
            match self.socket.send_to(&tx[..n], self.peer) {
                Ok(_) => {}
                Err(e) if transient(&e) => conn.counters().in_errs += 1,
                Err(e) => {
                    conn.end(now, CloseReason::Io(e.kind(), e.to_string()));
                }
            }
        }
    }

    /// After anything changed the connection: send, signal waiters, and
    /// make sure the background thread looks again in time. `app` is true
    /// on application threads (which run a due timer pass themselves).
    fn settle(&self, st: &mut State, now: Instant, app: bool) {
        self.transmit(st, now);
        st.conn.take_needs_drive();
        if app && st.conn.poll_timeout().is_some_and(|t| t <= now) {
            st.conn.handle_timeout(now);
            self.transmit(st, now);
        }
        let mut signal = false;
        while st.conn.poll_event().is_some() {
            signal = true;
        }
        if st.draining && (st.conn.is_drained() || st.conn.is_closed()) {
            st.draining = false;
            signal = true;
        }
        if signal {
            self.cond.notify_all();
        }
        if st.conn.is_closed() {
            if st.opened {
                st.opened = false;
                stats::session_closed();
            }
            if app && !st.told_closed {
                st.told_closed = true;
                st.conn.publish();
                self.wake.now();
            }
        } else if let (true, Some(t)) = (app, st.conn.poll_timeout()) {
            self.wake.need(t);
        }
    }

    /// Runs the timers if due (background thread); the next deadline.
    fn tick(&self, st: &mut State, now: Instant) -> Option<Instant> {
        if st.conn.poll_timeout().is_some_and(|t| t <= now) {
            st.conn.handle_timeout(now);
        }
        self.settle(st, now, false);
        st.conn.publish();
        st.conn.poll_timeout()
    }

    fn mark_opened(&self) {
        let mut st = self.lock();
        if !st.opened {
            st.opened = true;
            stats::session_opened();
            st.conn.trace_opened(self.peer, self.origin.name());
            if self.origin == Origin::Dialed {
                st.conn.count_active_open();
            }
        }
    }

    fn close(&self) -> Result<()> {
        let mut st = self.lock();
        let now = Instant::now();
        let r = st.conn.close(now);
        self.settle(&mut st, now, true);
        r
    }

    /// Runs `op` until it stops reporting `WouldBlock`, waiting on the
    /// condition variable (and the rate limiter's clock) in between, for at
    /// most `timeout` (taken from the state) in total.
    fn wait_op<T>(
        &self,
        timeout: impl Fn(&State) -> Option<Duration>,
        mut op: impl FnMut(&mut State, Instant) -> Result<T>,
    ) -> Result<T> {
        let mut st = self.lock();
        let deadline = timeout(&st).map(|t| Instant::now() + t);
        loop {
            let now = Instant::now();
            let r = op(&mut st, now);
            self.settle(&mut st, now, true);
            match r {
                Err(Error::WouldBlock) => {}
                r => return r,
            }
            if deadline.is_some_and(|d| now >= d) {
                return Err(Error::Timeout);
            }
            let until = match (deadline, st.conn.pace_until()) {
                (Some(d), Some(p)) => Some(d.min(p)),
                (d, p) => d.or(p),
            };
            st = match until {
                None => self.cond.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(u) => {
                    let wait = u.saturating_duration_since(now);
                    self.cond
                        .wait_timeout(st, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        Ok(self.wait_op(|st| st.read_timeout, |st, _| st.conn.read(buf))?)
    }

    fn write(&self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        Ok(self.wait_op(|st| st.write_timeout, |st, now| st.conn.write(now, data))?)
    }

    fn now_op<T>(&self, op: impl FnOnce(&mut Connection, Instant) -> Result<T>) -> Result<T> {
        let mut st = self.lock();
        let now = Instant::now();
        let r = op(&mut st.conn, now);
        self.settle(&mut st, now, true);
        r
    }
}

/// Closes the session when the last handle goes away; for a dialed session
/// it also stops and joins its thread (through the `Joiner`), for an
/// accepted one it keeps the listener's thread alive.
struct Guard {
    shared: Arc<Shared>,
    _joiner: Arc<Joiner>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.shared.close();
    }
}

/// A blocking KCP session, wire-compatible with kcp-go's `UDPSession`.
///
/// Implements [`Read`] and [`Write`], also for `&Session`, so one thread may
/// read while another writes (a `Session` is `Send + Sync`). Reads and
/// writes wait at most their timeout ([`set_read_timeout`](Self::set_read_timeout),
/// initially [`Config::read_timeout`]) and then fail with
/// [`Error::Timeout`] (`io::ErrorKind::TimedOut`). As with the tokio
/// [`crate::Session`], a read after the session has ended and everything
/// received was read returns the session's error (KCP has no end of stream),
/// e.g. [`Error::Closed`] as `BrokenPipe`. A write takes as much as the send
/// window holds and returns how much (`write_all` loops). Dropping the last
/// handle closes the session.
pub struct Session {
    shared: Arc<Shared>,
    _guard: Guard,
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

impl Session {
    /// Dials `addr` (kcp-go `DialWithOptions`): binds an ephemeral UDP
    /// socket of the peer's family with the config's socket options, picks
    /// a random conv from the OS RNG, starts the session's thread and
    /// returns at once; nothing is sent until the first write.
    pub fn dial(addr: impl ToSocketAddrs, config: &Config) -> Result<Session> {
        config.validate()?;
        let peer = resolve(addr)?;
        let bind: SocketAddr = if peer.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = uio::bind_std(bind, &socket_options(config))?;
        let conv = rand::rngs::OsRng.next_u32();
        let local = socket.local_addr()?;
        let socket = Arc::new(socket);
        let wake = Arc::new(Wake::new(socket.clone(), local));
        let conn = Connection::new(conv, config, Instant::now())?;
        let shared = Arc::new(Shared::new(
            conn,
            peer,
            local,
            Origin::Dialed,
            socket,
            wake.clone(),
            config,
        ));
        shared.mark_opened();
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let shared = shared.clone();
            let stop = stop.clone();
            let alive = Alive::new();
            std::thread::Builder::new()
                .name("kcp-session".into())
                .spawn(move || {
                    let _alive = alive;
                    dialed_thread(&shared, &stop)
                })?
        };
        let joiner = Arc::new(Joiner {
            stop,
            wake,
            handle: Mutex::new(Some(handle)),
        });
        Ok(Session::new(shared, joiner))
    }

    fn new(shared: Arc<Shared>, joiner: Arc<Joiner>) -> Session {
        Session {
            _guard: Guard {
                shared: shared.clone(),
                _joiner: joiner,
            },
            shared,
        }
    }

    /// The conversation id.
    pub fn conv(&self) -> u32 {
        self.shared.conv
    }
    /// The local socket address (a listener's for an accepted session).
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
    /// This session's counters (kcp-go names; §6.5).
    pub fn stats(&self) -> Snmp {
        self.shared.lock().conn.stats()
    }
    /// Smoothed RTT in ms (kcp-go `GetSRTT`).
    pub fn srtt(&self) -> i32 {
        self.shared.lock().conn.srtt()
    }
    /// Segments queued or in flight (kcp-go `WaitSnd`).
    pub fn wait_snd(&self) -> usize {
        self.shared.lock().conn.wait_snd()
    }
    /// Whether the session has ended (closed locally or by an error).
    pub fn is_closed(&self) -> bool {
        self.shared.lock().conn.is_closed()
    }
    /// Why the session ended, if it has.
    pub fn error(&self) -> Option<Error> {
        self.shared
            .lock()
            .conn
            .close_reason()
            .map(CloseReason::error)
    }
    /// Each read or `recv_msg` waiting longer than this fails with
    /// [`Error::Timeout`]; `None` waits without limit. Applies to the next
    /// read that starts.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) {
        self.shared.lock().read_timeout = timeout;
    }
    /// Each write, `send_msg` or `drain` waiting longer than this fails
    /// with [`Error::Timeout`]; `None` waits without limit.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) {
        self.shared.lock().write_timeout = timeout;
    }
    /// Bytes the next read returns without waiting (given a large enough
    /// buffer): the rest of a message a short read cut, else the next whole
    /// message; 0 when nothing is ready. More may be queued behind it.
    pub fn available(&self) -> usize {
        self.shared.lock().conn.readable_len()
    }
    /// A read that never waits: `Ok(n)` with data, `WouldBlock` when
    /// nothing is ready, the session's error once it has ended and
    /// everything was read; `Ok(0)` only for an empty `buf`.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        Ok(self.shared.now_op(|c, _| c.read(buf))?)
    }
    /// Sends one message (message mode: it arrives whole in one
    /// [`recv_msg`](Self::recv_msg)), waiting while the send window is
    /// full. The rules on message size are those of
    /// [`crate::Session::send_msg`] ([`Error::MessageTooLarge`]).
    pub fn send_msg(&self, msg: &[u8]) -> Result<()> {
        self.shared
            .wait_op(|st| st.write_timeout, |st, now| st.conn.send_msg(now, msg))
    }
    /// Receives one whole message into `buf`, waiting for one;
    /// [`Error::BufferTooSmall`] (the message stays queued) if it does not
    /// fit.
    pub fn recv_msg(&self, buf: &mut [u8]) -> Result<usize> {
        self.shared
            .wait_op(|st| st.read_timeout, |st, _| st.conn.recv_msg(buf))
    }
    /// [`recv_msg`](Self::recv_msg) without waiting: [`Error::WouldBlock`]
    /// when no message is ready.
    pub fn try_recv_msg(&self, buf: &mut [u8]) -> Result<usize> {
        self.shared.now_op(|c, _| c.recv_msg(buf))
    }
    /// Waits until everything written has been acknowledged by the peer,
    /// the session ends (its error), or the write timeout passes.
    pub fn drain(&self) -> Result<()> {
        self.shared.wait_op(
            |st| st.write_timeout,
            |st, _| {
                if st.conn.is_drained() {
                    Ok(())
                } else if let Some(f) = st.conn.close_reason() {
                    Err(f.error())
                } else {
                    st.draining = true;
                    Err(Error::WouldBlock)
                }
            },
        )
    }
    /// Closes the session (kcp-go `Close`): one final flush, sent before
    /// this returns; nothing is retransmitted afterwards. Buffered received
    /// data can still be read. A second call returns [`Error::Closed`].
    /// Dropping the last handle does the same.
    pub fn close(&self) -> Result<()> {
        self.shared.close()
    }
}

impl Read for &Session {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.shared.read(buf)
    }
}

impl Read for Session {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.shared.read(buf)
    }
}

impl Write for &Session {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.shared.write(buf)
    }
    /// With write delay on, asks for queued data to go out at once.
    fn flush(&mut self) -> io::Result<()> {
        self.shared.now_op(|c, _| {
            c.flush();
            Ok(())
        })?;
        Ok(())
    }
}

impl Write for Session {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.shared.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        (&*self).flush()
    }
}

/// The receive loop and timers of a dialed session.
fn dialed_thread(shared: &Shared, stop: &AtomicBool) {
    let span = shared.lock().conn.span().clone();
    let _g = span.enter();
    let mut buf = vec![0u8; MTU_LIMIT];
    loop {
        let wait = {
            let mut st = shared.lock();
            if stop.load(Ordering::SeqCst) || st.conn.is_closed() {
                st.conn.publish();
                return;
            }
            let now = Instant::now();
            let next = shared.tick(&mut st, now);
            if st.conn.is_closed() {
                continue;
            }
            let until = next.map_or(now + BACKSTOP, |t| t.min(now + BACKSTOP));
            shared
                .wake
                .sleeping_until(until)
                .saturating_duration_since(now)
        };
        if !wait.is_zero() {
            let _ = shared.socket.set_read_timeout(Some(wait));
            let got = shared.socket.recv_from(&mut buf);
            shared.wake.awake();
            match got {
                Ok((n, from)) => {
                    if shared.wake.is_wake(n, from) {
                        continue;
                    }
                    let mut st = shared.lock();
                    let now = Instant::now();
                    if from == shared.peer {
                        st.conn.handle_datagram(now, &mut buf[..n]);
                    } else {
                        st.conn.counters().in_errs += 1;
                    }
                    shared.settle(&mut st, now, false);
                }
                Err(e) if transient(&e) => {}
                Err(e) => {
                    let mut st = shared.lock();
                    let now = Instant::now();
                    st.conn.end(now, CloseReason::Io(e.kind(), e.to_string()));
                    shared.settle(&mut st, now, false);
                }
            }
        } else {
            shared.wake.awake();
        }
    }
}

/// What the listener handle, its thread and its sessions share.
struct ListenerShared {
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    config: Config,
    inner: Mutex<ListenerState>,
    /// Signalled when the backlog grows or the listener ends.
    cond: Condvar,
    /// Counters of datagrams dropped before any session saw them.
    c: Mutex<Counters>,
    /// Sessions closed by the eviction rule.
    evictions: AtomicU64,
}

struct ListenerState {
    /// The routing rules (shared with the tokio listener).
    ep: Endpoint,
    sessions: HashMap<ConnId, Arc<Shared>>,
    backlog: VecDeque<Session>,
    error: Option<(io::ErrorKind, String)>,
}

/// Accepts blocking KCP sessions on one UDP socket (kcp-go `Listener`).
///
/// The rules are the tokio [`crate::Listener`]'s (the same pure
/// `Endpoint` decides): sessions are found by the sender's address; a
/// different conv from a known address replaces the session only when the
/// segment's sn is 0; datagrams failing decryption, parity from unknown
/// addresses and first datagrams with no valid KCP segment create no
/// session; at most [`Config::max_sessions`] sessions (a full table evicts
/// an unproven or long-silent one, see
/// [`ConfigBuilder::max_sessions`](crate::ConfigBuilder::max_sessions)) and
/// [`Config::accept_backlog`] waiting ones; every refusal is counted.
/// Dropping the listener stops accepting; accepted sessions keep working on
/// its socket.
pub struct Listener {
    shared: Arc<ListenerShared>,
    joiner: Arc<Joiner>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("local", &self.shared.local)
            .finish()
    }
}

impl Listener {
    /// Binds `addr` with the config's socket options and starts the
    /// listener's thread (kcp-go `ListenWithOptions`).
    pub fn listen(addr: impl ToSocketAddrs, config: &Config) -> Result<Listener> {
        config.validate()?;
        let addr = resolve(addr)?;
        let socket = uio::bind_std(addr, &socket_options(config))?;
        let local = socket.local_addr()?;
        let socket = Arc::new(socket);
        let wake = Arc::new(Wake::new(socket.clone(), local));
        let shared = Arc::new(ListenerShared {
            socket,
            local,
            config: config.clone(),
            inner: Mutex::new(ListenerState {
                ep: {
                    let mut ep = Endpoint::new(config.max_sessions());
                    ep.set_local(local);
                    ep
                },
                sessions: HashMap::new(),
                backlog: VecDeque::new(),
                error: None,
            }),
            cond: Condvar::new(),
            c: Mutex::new(Counters::default()),
            evictions: AtomicU64::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let joiner = Arc::new(Joiner {
            stop: stop.clone(),
            wake: wake.clone(),
            handle: Mutex::new(None),
        });
        let handle = {
            let shared = shared.clone();
            let joiner = Arc::downgrade(&joiner);
            let alive = Alive::new();
            std::thread::Builder::new()
                .name("kcp-listener".into())
                .spawn(move || {
                    let _alive = alive;
                    ListenThread {
                        shared,
                        wake,
                        stop,
                        joiner,
                        c: Counters::default(),
                        publisher: Publisher::default(),
                    }
                    .run()
                })?
        };
        *lock(&joiner.handle) = Some(handle);
        Ok(Listener { shared, joiner })
    }

    /// Waits for the next new session. Sessions that ended while waiting
    /// in the backlog are skipped. Errors: [`Error::Closed`] after
    /// [`close`](Self::close), or the socket error that stopped the listener.
    pub fn accept(&self) -> Result<Session> {
        self.accept_until(None)
    }

    /// [`accept`](Self::accept), waiting at most `timeout`:
    /// [`Error::Timeout`] if no session arrived by then.
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Session> {
        self.accept_until(Some(Instant::now() + timeout))
    }

    fn accept_until(&self, deadline: Option<Instant>) -> Result<Session> {
        let mut inner = lock(&self.shared.inner);
        loop {
            while let Some(s) = inner.backlog.pop_front() {
                if !s.is_closed() {
                    return Ok(s);
                }
            }
            if inner.ep.is_closed() {
                return Err(match &inner.error {
                    Some((kind, msg)) => Error::Io(io::Error::new(*kind, msg.clone())),
                    None => Error::Closed,
                });
            }
            inner = match deadline {
                None => self
                    .shared
                    .cond
                    .wait(inner)
                    .unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Err(Error::Timeout);
                    }
                    self.shared
                        .cond
                        .wait_timeout(inner, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// Live sessions (accepted or waiting in the backlog).
    pub fn session_count(&self) -> usize {
        lock(&self.shared.inner).ep.len()
    }

    /// Sessions closed so far to make room for new peers when the table was
    /// full.
    pub fn evictions(&self) -> u64 {
        self.shared.evictions.load(Ordering::Relaxed)
    }

    /// The listener's own counters: datagrams it dropped before any session
    /// saw them, and `PassiveOpens`.
    pub fn stats(&self) -> Snmp {
        lock(&self.shared.c).snapshot()
    }

    /// Stops accepting: new addresses are ignored and sessions still in the
    /// backlog are closed. Accepted sessions keep working.
    pub fn close(&self) {
        let backlog: Vec<Session> = {
            let mut inner = lock(&self.shared.inner);
            inner.ep.close();
            inner.backlog.drain(..).collect()
        };
        self.shared.cond.notify_all();
        drop(backlog);
        self.joiner.wake.now();
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.close();
    }
}

/// The listener's receive loop and its sessions' timers.
struct ListenThread {
    shared: Arc<ListenerShared>,
    wake: Arc<Wake>,
    stop: Arc<AtomicBool>,
    /// For the sessions it creates (weak: the thread must not keep itself).
    joiner: Weak<Joiner>,
    c: Counters,
    publisher: Publisher,
}

impl ListenThread {
    fn run(mut self) {
        let span = lock(&self.shared.inner).ep.span().clone();
        let _g = span.enter();
        let mut buf = vec![0u8; MTU_LIMIT];
        let mut next_sweep = Instant::now();
        loop {
            let now = Instant::now();
            if now >= next_sweep {
                match self.sweep(now) {
                    Some(next) => next_sweep = next,
                    None => break,
                }
            }
            self.flush_counters();
            next_sweep = self.wake.sleeping_until(next_sweep);
            let wait = next_sweep.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                self.wake.awake();
                continue;
            }
            let _ = self.shared.socket.set_read_timeout(Some(wait));
            let got = self.shared.socket.recv_from(&mut buf);
            self.wake.awake();
            match got {
                Ok((n, from)) => {
                    if self.wake.is_wake(n, from) {
                        // A deadline moved or something closed: look now.
                        next_sweep = Instant::now();
                        continue;
                    }
                    let now = Instant::now();
                    if let Some(t) = self.handle(&mut buf[..n], from, now) {
                        next_sweep = next_sweep.min(t);
                    }
                }
                Err(e) if transient(&e) => {}
                Err(e) => {
                    self.fail(e);
                    break;
                }
            }
        }
        self.flush_counters();
    }

    /// Timers of every session, removal of ended ones; the next deadline,
    /// or `None` when the thread should end.
    fn sweep(&mut self, now: Instant) -> Option<Instant> {
        let sessions: Vec<(ConnId, Arc<Shared>)> = {
            let inner = lock(&self.shared.inner);
            if self.stop.load(Ordering::SeqCst) || (inner.ep.is_closed() && inner.ep.is_empty()) {
                return None;
            }
            inner
                .sessions
                .iter()
                .map(|(id, s)| (*id, s.clone()))
                .collect()
        };
        let mut next = now + BACKSTOP;
        let mut ended = Vec::new();
        for (id, s) in sessions {
            let mut st = s.lock();
            match s.tick(&mut st, now) {
                Some(t) => next = next.min(t),
                None if st.conn.is_closed() => ended.push(id),
                None => {}
            }
        }
        if !ended.is_empty() {
            let mut inner = lock(&self.shared.inner);
            for id in ended {
                inner.ep.remove(id);
                inner.sessions.remove(&id);
            }
            if inner.ep.is_closed() && inner.ep.is_empty() {
                return None;
            }
        }
        Some(next)
    }

    fn flush_counters(&mut self) {
        lock(&self.shared.inner).ep.drain_counters(&mut self.c);
        if !self.c.is_zero() {
            let mut c = lock(&self.shared.c);
            c.absorb(&mut self.c);
            self.publisher.publish(&c.snapshot());
        }
    }

    /// Routes one datagram as the `Endpoint` decides (§6.2); the session's
    /// next deadline if it went to one. Holds the listener's lock
    /// throughout (the order is always listener, then session).
    fn handle(&mut self, d: &mut [u8], from: SocketAddr, now: Instant) -> Option<Instant> {
        let opened = codec::open(self.shared.config.crypt(), d);
        let mut guard = lock(&self.shared.inner);
        let inner = &mut *guard;
        let range = match opened {
            Ok(r) => r,
            Err(e) => {
                inner.ep.refuse(now, from, e.into());
                return None;
            }
        };
        let Some(plain) = d.get(range) else {
            inner.ep.refuse(now, from, DropReason::BadRange);
            return None;
        };
        let backlog = if inner.backlog.len() < self.shared.config.accept_backlog() {
            Backlog::Room
        } else {
            Backlog::Full
        };
        match inner.ep.handle(now, from, plain, backlog) {
            Event::Route(id) => {
                let Some(s) = inner.sessions.get(&id).cloned() else {
                    inner.ep.refuse(now, from, DropReason::SessionClosed);
                    return None;
                };
                let mut st = s.lock();
                if st.conn.is_closed() {
                    // Closed but not yet swept out of the table.
                    inner.ep.refuse(now, from, DropReason::SessionClosed);
                    return None;
                }
                let rep = st.conn.handle_plain(now, plain);
                if rep.kcp_errors == 0 {
                    inner.ep.note_heard(id, now);
                }
                if !inner.ep.is_proven(id) && st.conn.is_proven() {
                    inner.ep.note_proven(id);
                }
                s.settle(&mut st, now, false);
                st.conn.poll_timeout()
            }
            Event::Drop { replaced, .. } => {
                if let Some(id) = replaced {
                    self.retire(inner, id, Retire::Replaced, now);
                }
                None
            }
            Event::Open(adm) => {
                if let Some((id, why)) = adm.retire() {
                    self.retire(inner, id, why, now);
                }
                let Some(joiner) = self.joiner.upgrade() else {
                    inner.ep.reject(now, adm, DropReason::NotAccepting);
                    return None;
                };
                let Ok(conn) = Connection::new(adm.conv(), &self.shared.config, now) else {
                    inner.ep.reject(now, adm, DropReason::BuildFailed);
                    return None;
                };
                let shared = Arc::new(Shared::new(
                    conn,
                    adm.from(),
                    self.shared.local,
                    Origin::Accepted,
                    self.shared.socket.clone(),
                    self.wake.clone(),
                    &self.shared.config,
                ));
                let next = {
                    let mut st = shared.lock();
                    let first = st.conn.handle_plain(now, plain);
                    // None: nothing in it was a valid segment, no session.
                    let id = inner.ep.commit(adm, now, &first)?;
                    inner.sessions.insert(id, shared.clone());
                    shared.settle(&mut st, now, false);
                    st.conn.poll_timeout()
                };
                shared.mark_opened();
                inner.backlog.push_back(Session::new(shared, joiner));
                drop(guard);
                self.shared.cond.notify_all();
                next
            }
        }
    }

    /// Closes a session the endpoint has already removed (replaced by its
    /// peer's restart, or evicted).
    fn retire(&self, inner: &mut ListenerState, id: ConnId, why: Retire, now: Instant) {
        let Some(s) = inner.sessions.remove(&id) else {
            return;
        };
        let reason = match why {
            Retire::Replaced => CloseReason::Closed,
            Retire::Evicted => CloseReason::Evicted,
        };
        let mut st = s.lock();
        if st.conn.end(now, reason) && why == Retire::Evicted {
            self.shared.evictions.fetch_add(1, Ordering::Relaxed);
        }
        s.settle(&mut st, now, false);
    }

    /// The socket failed: every session and the listener end with it.
    fn fail(&mut self, e: io::Error) {
        let sessions: Vec<Arc<Shared>> = {
            let mut inner = lock(&self.shared.inner);
            inner.error = Some((e.kind(), e.to_string()));
            inner.ep.close();
            inner.sessions.drain().map(|(_, s)| s).collect()
        };
        self.shared.cond.notify_all();
        let now = Instant::now();
        for s in sessions {
            let mut st = s.lock();
            st.conn.end(now, CloseReason::Io(e.kind(), e.to_string()));
            s.settle(&mut st, now, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync() {
        send_sync::<Session>();
        send_sync::<Listener>();
    }
}
