//! What a session's handles, its driver and its listener share: the
//! [`Connection`] behind one lock with the wakers around it, and the
//! non-waiting read/write steps every handle polls.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::ReadBuf;
use tokio::sync::Notify;
use tokio::time::{Instant as TokioInstant, Sleep};

use crate::codec::InputReport;
use crate::config::Config;
use crate::connection::{CloseReason, Connection};
use crate::error::{Error, Result};
use crate::io::SocketOptions;
use crate::rate::{poll_pace, RateLimiter};
use crate::stats;
use crate::transport::Transport;

use super::Origin;

/// Why a session ended (the pure layer's name is [`CloseReason`]).
pub(crate) type Fate = CloseReason;

/// Readable-notification callback (kcp-go v5.7 `SetReadNotify`).
pub(super) type ReadNotify = Box<dyn FnMut() + Send>;

/// Now on tokio's clock, as the pure layer takes it (virtual under a paused
/// runtime, so idle expiry and eviction follow a paused clock in tests).
pub(crate) fn now() -> Instant {
    TokioInstant::now().into_std()
}

/// The pure [`Connection`] plus what the tokio shell needs around it:
/// wakers and per-operation timeouts. Behind one lock.
pub(crate) struct State {
    pub(crate) conn: Connection,
    pub(super) read_timeout: Option<Duration>,
    pub(super) write_timeout: Option<Duration>,
    pub(super) read_waker: Option<Waker>,
    pub(super) write_waker: Option<Waker>,
    pub(super) driver_waker: Option<Waker>,
    /// Wakes every [`Session::readable`] waiter (there can be many, unlike
    /// the single `read_waker`).
    pub(super) ready: Arc<Notify>,
    /// `readable` futures currently waiting; `ready` is only signalled then.
    pub(super) read_watchers: usize,
    pub(super) read_notify: Option<ReadNotify>,
}

impl State {
    pub(super) fn new(conn: Connection, config: &Config) -> State {
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

    pub(super) fn fate(&self) -> Option<&Fate> {
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
    pub(super) fn drive_if_needed(&mut self) {
        if self.conn.take_needs_drive() {
            self.wake_driver();
        }
    }
}

/// What a session tells the table it is registered in (a listener's) when
/// it ends, so the session layer needs nothing from the listener.
pub(crate) trait Registry: Send + Sync {
    /// `session` has ended: forget it if it is still the one registered.
    fn remove(&self, session: &Arc<Shared>);
}

/// What the handle, the driver and the listener share.
pub(crate) struct Shared {
    pub(crate) conv: u32,
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) origin: Origin,
    pub(crate) listener: Option<Weak<dyn Registry>>,
    /// Counted in `CurrEstab` (a listener builds candidates it may discard).
    pub(super) opened: AtomicBool,
    /// Times the driver task was polled (observability: an idle session must
    /// not be woken at all).
    pub(super) wakeups: AtomicU64,
    pub(super) state: Mutex<State>,
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
    pub(super) fn after_close(self: &Arc<Self>) {
        if self.opened.swap(false, Ordering::AcqRel) {
            stats::session_closed();
        }
        if let Some(l) = self.listener.as_ref().and_then(Weak::upgrade) {
            l.remove(self);
        }
    }
}

/// Closes the session when the last user handle goes away.
pub(super) struct CloseGuard(pub(super) Arc<Shared>);

impl Drop for CloseGuard {
    fn drop(&mut self) {
        self.0.close_with(Fate::Closed);
    }
}

/// Per-direction timeout sleep of a handle (armed when an operation starts
/// waiting, cleared when it completes).
#[derive(Default)]
pub(super) struct Timeout {
    pub(super) sleep: Option<Pin<Box<Sleep>>>,
    pub(super) armed: bool,
    /// Write side: when the rate limiter will have tokens again.
    pub(super) pace: Option<Pin<Box<Sleep>>>,
}

impl Timeout {
    /// True when the wait that started earlier has lasted `limit`.
    pub(super) fn expired(&mut self, limit: Option<Duration>, cx: &mut Context<'_>) -> bool {
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

    pub(super) fn clear(&mut self) {
        self.armed = false;
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

pub(super) fn set_rate_limiter_impl(shared: &Shared, limiter: Option<RateLimiter>) {
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

pub(super) fn close_shared(shared: &Arc<Shared>) -> Result<()> {
    if shared.close_with(Fate::Closed) {
        Ok(())
    } else {
        Err(Error::Closed)
    }
}

/// A byte-stream read that does not wait: `Some(Ok(n))` with data (`dst` is
/// not empty), `Some(Err)` once the session has ended and nothing is left,
/// `None` when a read would have to wait.
pub(super) fn read_ready(st: &mut State, dst: &mut [u8]) -> Option<io::Result<usize>> {
    let r = match st.conn.read(dst) {
        Err(Error::WouldBlock) => None,
        r => Some(r.map_err(Into::into)),
    };
    st.drive_if_needed();
    r
}

/// `try_read` of every handle: see [`Session::try_read`].
pub(super) fn try_read_impl(shared: &Shared, buf: &mut [u8]) -> io::Result<usize> {
    if buf.is_empty() {
        return Ok(0);
    }
    read_ready(&mut shared.lock(), buf).unwrap_or_else(|| Err(io::ErrorKind::WouldBlock.into()))
}

pub(super) fn poll_read_impl(
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
pub(super) fn recv_msg_ready(st: &mut State, buf: &mut [u8]) -> Option<Result<usize>> {
    let r = match st.conn.recv_msg(buf) {
        Err(Error::WouldBlock) => None,
        r => Some(r),
    };
    st.drive_if_needed();
    r
}

/// `try_recv_msg` of every handle: see [`Session::try_recv_msg`].
pub(super) fn try_recv_msg_impl(shared: &Shared, buf: &mut [u8]) -> Result<usize> {
    recv_msg_ready(&mut shared.lock(), buf).unwrap_or(Err(Error::WouldBlock))
}

/// Completes once a `try_read`/`try_recv_msg` would not report `WouldBlock`:
/// data is ready or the session has ended. Many may wait at once.
pub(super) async fn readable_impl(shared: &Shared) {
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
pub(super) fn set_read_notify_impl(shared: &Shared, f: Option<ReadNotify>) {
    let mut st = shared.lock();
    st.read_notify = f;
    let now = st.conn.is_readable() || st.conn.is_closed();
    if let (true, Some(f)) = (now, st.read_notify.as_mut()) {
        // Data that arrived before registration must not go unannounced.
        f();
    }
}

pub(super) fn poll_recv_msg(
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
pub(super) fn poll_write_op<T>(
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

pub(super) fn poll_write_impl(
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

pub(super) fn poll_send_msg(
    shared: &Shared,
    wr: &mut Timeout,
    cx: &mut Context<'_>,
    msg: &[u8],
) -> Poll<Result<()>> {
    poll_write_op(shared, wr, cx, |c, now| c.send_msg(now, msg))
}

pub(super) fn poll_drain(
    shared: &Shared,
    wr: &mut Timeout,
    cx: &mut Context<'_>,
) -> Poll<Result<()>> {
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

pub(super) fn poll_flush_impl(shared: &Shared) -> Poll<io::Result<()>> {
    let mut st = shared.lock();
    st.conn.flush();
    st.drive_if_needed();
    Poll::Ready(Ok(()))
}
