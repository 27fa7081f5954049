//! The per-session tokio task: it drives the [`Connection`] (timers,
//! input), seals outside the session lock, sends in batches, and for a
//! dialed session owns the transport's receive side.

use std::future::Future;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant as TokioInstant, Sleep};

use crate::codec::{self, Outgoing, Sealer};
use crate::crypt::Crypt;
use crate::proto::packet::PacketPool;
use crate::stats::{Counters, DropCounter};
use crate::trace::Span;
use crate::transport::{RecvBatch, SendBatch};

use super::alarm::Alarm;
use super::shared::{now, Fate, Shared};
use super::Origin;

/// Datagrams a dialed session reads per `recvmmsg`.
const SESSION_RECV_BATCH: usize = 16;
/// Idle buffers a session's driver keeps for itself.
const SESSION_POOL: usize = 32;
/// Driver loop iterations before yielding to the scheduler.
const DRIVER_BUDGET: usize = 32;

/// Why the driver refused a datagram it read: the counter (already counted)
/// and the reason's name, for the session's drop warnings.
type Refused = (DropCounter, &'static str);

/// A dialed session's own receive path: cipher, buffers, opened ranges.
type Opener = (
    Crypt,
    RecvBatch,
    Vec<std::result::Result<Range<usize>, Refused>>,
);

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
    alarm: Alarm,
    writable: Option<WritableFuture>,
    c: Counters,
    /// The session's span, entered on every poll.
    span: Span,
}

impl Driver {
    pub(super) fn new(shared: Arc<Shared>, sealer: Sealer, origin: Origin, crypt: Crypt) -> Driver {
        let opener = match origin {
            Origin::Dialed => Some((crypt, RecvBatch::new(SESSION_RECV_BATCH), Vec::new())),
            Origin::Accepted => None,
        };
        let span = shared.lock().conn.span().clone();
        Driver {
            span,
            shared,
            sealer,
            opener,
            out: SendBatch::new(),
            taken: Vec::new(),
            pool: PacketPool::new(SESSION_POOL),
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            alarm: Alarm::default(),
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
                            plains.push(Err((DropCounter::InErrs, "BadRange")));
                            continue;
                        };
                        if from != self.shared.peer {
                            self.c.in_errs += 1;
                            plains.push(Err((DropCounter::InErrs, "ForeignSource")));
                            continue;
                        }
                        plains.push(codec::open(crypt, d).map_err(|e| {
                            let counter = match e {
                                codec::OpenError::Integrity => DropCounter::InCsumErrors,
                                codec::OpenError::Short => DropCounter::InErrs,
                            };
                            counter.count(&mut self.c);
                            (counter, e.name())
                        }));
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
            let now = self.alarm.clock(now());
            let (deadline, finished, newly_closed, now_ms);
            {
                let mut guard = self.shared.lock();
                let st = &mut *guard;
                st.conn.counters().absorb(&mut self.c);
                if got > 0 {
                    if let Some((_, rx, plains)) = self.opener.as_mut() {
                        for (i, opened) in plains.iter().enumerate().take(got) {
                            let range = match opened {
                                Ok(r) => r.clone(),
                                Err((counter, reason)) => {
                                    let from = rx.get_mut(i).map(|(_, from)| from);
                                    st.conn.warn_drop(now, *counter, reason, from);
                                    continue;
                                }
                            };
                            match rx.get_mut(i).and_then(|(d, _)| d.get(range)) {
                                Some(plain) => {
                                    st.conn.handle_plain(now, plain);
                                }
                                None => {
                                    st.conn.counters().in_errs += 1;
                                    st.conn
                                        .warn_drop(now, DropCounter::InErrs, "BadRange", None);
                                }
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
                deadline = st.conn.poll_timeout();
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
            self.sealer.seal_all(
                self.taken.drain(..),
                now_ms,
                &mut self.pool,
                &mut self.out,
                &mut self.c,
            );
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
                if let Some(sleep_until) = self.alarm.arm(at) {
                    self.timer
                        .as_mut()
                        .reset(TokioInstant::from_std(sleep_until));
                }
                if self.timer.as_mut().poll(cx).is_ready() {
                    self.alarm.fire();
                    fired = true;
                }
            } else {
                self.alarm.disarm();
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
        let this = self.get_mut();
        let span = this.span.clone();
        let _g = span.enter();
        this.poll_drive(cx)
    }
}
