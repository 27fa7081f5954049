//! The listener: one shared UDP socket, one receive task, many sessions.
//!
//! The receive task drains the socket in batches, decrypts every datagram
//! once, and hands it straight to the session found by the sender's address
//! (§6.2), under that session's lock, without copying it into a channel.
//! New addresses create sessions, which wait in a bounded accept backlog.
//! kcp-go's rules are kept: a different conv from a known address replaces
//! the session only when the segment's sn is 0; parity (no conv) from an
//! unknown address is dropped; datagrams failing decryption are counted and
//! dropped and never create sessions.
//!
//! The table is bounded (`max_sessions`, 4096 by default); when it is full a
//! newcomer evicts an unproven or long-silent session (the rule is on
//! `ConfigBuilder::max_sessions`), or is dropped.
//!
//! Two deliberate differences from kcp-go: a first datagram that KCP rejects
//! entirely (junk that happened to decrypt, e.g. with the `null` cipher)
//! creates no session; and closing the listener stops accepting but keeps
//! the socket serving already accepted sessions until the last one closes.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use std::time::Instant;

use tokio::net::{lookup_host, ToSocketAddrs, UdpSocket};
use tokio::sync::mpsc;

use crate::codec::{self, Demux, PacketType, MIN_PLAINTEXT};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::io::{self as uio, RecvBatch};
use crate::session::{runtime_handle, socket_options, Fate, Origin, Session, Shared};
use crate::stats::{Counters, Publisher, Snmp};

/// Datagrams read per `recvmmsg` on the shared socket.
const LISTENER_RECV_BATCH: usize = 64;
/// Receive batches handled before yielding to the scheduler.
const LISTENER_BUDGET: usize = 16;
/// A proven session (its peer acknowledged our data) may be evicted for a
/// newcomer only after this long without a datagram from its peer. kcp-go
/// has no close on the wire: a closed client just goes silent, and this is
/// how its slot is reused before the idle timeout.
pub(crate) const EVICT_SILENT_AFTER: Duration = Duration::from_secs(3);
/// A new session cannot be evicted before it is this old, so a client can
/// complete the round trip that proves it even while a flood of new
/// addresses keeps the table full.
pub(crate) const EVICT_GRACE: Duration = Duration::from_secs(1);
/// Eviction candidates remembered per scan of the table.
const EVICT_BATCH: usize = 64;
/// After a scan found nothing evictable, newcomers are dropped without
/// another scan for this long (a flood against a table of live, proven
/// sessions must not cost a table walk per datagram).
const EVICT_RESCAN: Duration = Duration::from_millis(50);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// State shared by the [`Listener`] handle, its receive task and its sessions.
pub(crate) struct ListenerShared {
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    config: Config,
    table: Mutex<HashMap<SocketAddr, Arc<Shared>>>,
    closed: AtomicBool,
    /// Sessions closed by the eviction rule.
    evictions: AtomicU64,
    task_waker: Mutex<Option<Waker>>,
    c: Mutex<Counters>,
    error: Mutex<Option<(io::ErrorKind, String)>>,
}

/// Chooses which session a full listener closes for a newcomer.
///
/// Rule: first the unproven session heard from least recently (its peer
/// never acknowledged anything we sent: a spoofed or junk source, or a
/// client that has not completed one round trip) among those at least
/// [`EVICT_GRACE`] old; failing that, the proven
/// session silent for longest, if silent for at least
/// [`EVICT_SILENT_AFTER`]; failing that, nobody, and the newcomer's datagram
/// is dropped (a real client retransmits). So a flood of new addresses can
/// only displace other unproven sessions, never a peer that has proven
/// itself and is still talking.
///
/// A table scan collects up to [`EVICT_BATCH`] candidates in eviction order;
/// each newcomer takes the first that is still evictable (re-checked), so a
/// flood costs one O(table) scan per batch, and at most one per
/// [`EVICT_RESCAN`] when nothing is evictable.
#[derive(Default)]
struct Evictor {
    /// Candidates, best last.
    victims: Vec<std::sync::Weak<Shared>>,
    no_scan_until: Option<Instant>,
}

impl Evictor {
    fn pick(&mut self, table: &Mutex<HashMap<SocketAddr, Arc<Shared>>>) -> Option<Arc<Shared>> {
        let now = crate::session::now();
        for scanned in [false, true] {
            while let Some(w) = self.victims.pop() {
                let Some(s) = w.upgrade() else { continue };
                if s.lock()
                    .eviction_rank(now, EVICT_GRACE, EVICT_SILENT_AFTER)
                    .is_some()
                {
                    return Some(s);
                }
            }
            if scanned || self.no_scan_until.is_some_and(|t| now < t) {
                break;
            }
            let sessions: Vec<Arc<Shared>> = lock(table).values().cloned().collect();
            let mut ranked: Vec<((u8, Instant), Arc<Shared>)> = sessions
                .into_iter()
                .filter_map(|s| {
                    let r = s
                        .lock()
                        .eviction_rank(now, EVICT_GRACE, EVICT_SILENT_AFTER)?;
                    Some((r, s))
                })
                .collect();
            if ranked.is_empty() {
                self.no_scan_until = Some(now + EVICT_RESCAN);
                break;
            }
            self.no_scan_until = None;
            let keep = ranked.len().min(EVICT_BATCH);
            ranked.select_nth_unstable_by_key(keep - 1, |(r, _)| *r);
            ranked.truncate(keep);
            ranked.sort_unstable_by_key(|(r, _)| std::cmp::Reverse(*r));
            self.victims = ranked.iter().map(|(_, s)| Arc::downgrade(s)).collect();
        }
        None
    }
}

impl ListenerShared {
    /// Removes a closed session from the table (if it is still the one
    /// registered for its address).
    pub(crate) fn remove(&self, s: &Arc<Shared>) {
        {
            let mut t = lock(&self.table);
            if t.get(&s.peer).is_some_and(|cur| Arc::ptr_eq(cur, s)) {
                t.remove(&s.peer);
            }
        }
        self.wake_task();
    }

    fn wake_task(&self) {
        if let Some(w) = lock(&self.task_waker).take() {
            w.wake();
        }
    }
}

/// Accepts KCP sessions on one UDP socket (kcp-go `Listener`).
pub struct Listener {
    shared: Arc<ListenerShared>,
    accept_rx: Mutex<mpsc::Receiver<Session>>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("local", &self.shared.local)
            .finish()
    }
}

impl Listener {
    /// Binds `addr` and starts serving (kcp-go `ListenWithOptions`).
    pub async fn listen(addr: impl ToSocketAddrs, config: &Config) -> Result<Listener> {
        config.validate()?;
        let addr = lookup_host(addr).await?.next().ok_or_else(|| {
            Error::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "address resolved to nothing",
            ))
        })?;
        let socket = uio::bind(addr, &socket_options(config))?;
        Listener::from_socket(socket, config)
    }

    /// Serves on a caller-supplied socket (kcp-go `ServeConn`). Socket
    /// options in `config` are applied. Outside a tokio runtime this fails
    /// with [`Error::Io`].
    pub fn from_socket(socket: UdpSocket, config: &Config) -> Result<Listener> {
        config.validate()?;
        let runtime = runtime_handle()?;
        uio::apply(&socket, &socket_options(config))?;
        let local = socket.local_addr()?;
        let (tx, rx) = mpsc::channel(config.accept_backlog());
        let shared = Arc::new(ListenerShared {
            socket: Arc::new(socket),
            local,
            config: config.clone(),
            table: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            evictions: AtomicU64::new(0),
            task_waker: Mutex::new(None),
            c: Mutex::new(Counters::default()),
            error: Mutex::new(None),
        });
        let task = ListenTask {
            shared: shared.clone(),
            rx: RecvBatch::new(LISTENER_RECV_BATCH),
            accept_tx: tx,
            touched: Vec::new(),
            evictor: Evictor::default(),
            c: Counters::default(),
            publisher: Publisher::default(),
        };
        runtime.spawn(task);
        Ok(Listener {
            shared,
            accept_rx: Mutex::new(rx),
        })
    }

    /// Waits for the next new session. Call from one task at a time.
    /// Sessions that ended while waiting in the backlog (evicted, idle
    /// timeout) are skipped. Errors: [`Error::Closed`] after
    /// [`close`](Self::close), or the socket error that stopped the listener.
    pub async fn accept(&self) -> Result<Session> {
        std::future::poll_fn(|cx| {
            let mut rx = lock(&self.accept_rx);
            loop {
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(s)) if s.is_closed() => continue,
                    Poll::Ready(Some(s)) => return Poll::Ready(Ok(s)),
                    Poll::Ready(None) => return Poll::Ready(Err(self.terminal_error())),
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await
    }

    fn terminal_error(&self) -> Error {
        match &*lock(&self.shared.error) {
            Some((kind, msg)) => Error::Io(io::Error::new(*kind, msg.clone())),
            None => Error::Closed,
        }
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// Live sessions (accepted or waiting in the backlog).
    pub fn session_count(&self) -> usize {
        lock(&self.shared.table).len()
    }

    /// Sessions closed so far to make room for new peers when the table was
    /// full (see [`ConfigBuilder::max_sessions`](crate::ConfigBuilder::max_sessions)).
    pub fn evictions(&self) -> u64 {
        self.shared.evictions.load(Ordering::Relaxed)
    }

    /// The listener's own counters: datagrams it dropped before any session
    /// saw them (`InCsumErrors`, ...), and `PassiveOpens`. Per-session
    /// counters are in [`Session::stats`]; everything is in
    /// [`stats::global`](crate::stats::global).
    pub fn stats(&self) -> Snmp {
        lock(&self.shared.c).snapshot()
    }

    /// Stops accepting: new addresses are ignored and sessions still in the
    /// backlog are closed. Accepted sessions keep working; the socket is
    /// released when the last of them closes.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        let mut rx = lock(&self.accept_rx);
        rx.close();
        while let Ok(s) = rx.try_recv() {
            drop(s);
        }
        drop(rx);
        self.shared.wake_task();
    }

    /// kcp-go `Listener.SetDSCP` on the shared socket.
    pub fn set_dscp(&self, dscp: u8) -> Result<()> {
        if dscp > 63 {
            return Err(Error::InvalidConfig(format!("DSCP {dscp} exceeds 63")));
        }
        Ok(uio::set_dscp(&self.shared.socket, dscp)?)
    }
    /// kcp-go `Listener.SetReadBuffer`.
    pub fn set_recv_buffer(&self, bytes: usize) -> Result<()> {
        Ok(uio::set_recv_buffer(&self.shared.socket, bytes)?)
    }
    /// kcp-go `Listener.SetWriteBuffer`.
    pub fn set_send_buffer(&self, bytes: usize) -> Result<()> {
        Ok(uio::set_send_buffer(&self.shared.socket, bytes)?)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.close();
    }
}

/// Moves the task's counters into the listener's (and the global's).
fn flush_counters(local: &mut Counters, shared: &ListenerShared, publisher: &mut Publisher) {
    if !local.is_zero() {
        let mut c = lock(&shared.c);
        c.absorb(local);
        publisher.publish(&c.snapshot());
    }
}

/// The receive task.
struct ListenTask {
    shared: Arc<ListenerShared>,
    rx: RecvBatch,
    accept_tx: mpsc::Sender<Session>,
    touched: Vec<Arc<Shared>>,
    evictor: Evictor,
    c: Counters,
    publisher: Publisher,
}

impl ListenTask {
    fn handle(&mut self, i: usize, now: Instant) {
        let Some((d, from)) = self.rx.get_mut(i) else {
            return;
        };
        // Every refusal below is counted (the docs promise it; kcp-go
        // counts only CRC failures here): InCsumErrors for a failed check,
        // KCPInErrors for a plaintext no KCP could accept, InErrs for a
        // datagram that is malformed or cannot be placed in a session.
        let Some(range) = codec::open_counted(self.shared.config.crypt(), d, &mut self.c) else {
            return;
        };
        let Some(plain) = d.get(range) else {
            self.c.in_errs += 1;
            return;
        };
        if plain.len() < MIN_PLAINTEXT {
            self.c.kcp_in_errors += 1;
            return;
        }
        let dm = codec::demux(plain);
        if dm == Demux::Drop {
            self.c.kcp_in_errors += 1;
            return;
        }
        let existing = lock(&self.shared.table).get(&from).cloned();
        if let Some(s) = existing {
            match dm {
                Demux::Conv(ci) if ci.conv != s.conv => {
                    if ci.sn != 0 {
                        // Not a restart (§6.2): a segment of another conv.
                        self.c.kcp_in_errors += 1;
                        return;
                    }
                    // The peer restarted with a new conv: replace (§6.2).
                    s.close_with(Fate::Closed);
                }
                _ => {
                    {
                        let mut st = s.lock();
                        if st.is_closed() {
                            // Closed but not yet out of the table.
                            self.c.in_errs += 1;
                            return;
                        }
                        st.input(plain, now);
                        st.wake_io();
                    }
                    if !self.touched.last().is_some_and(|t| Arc::ptr_eq(t, &s)) {
                        self.touched.push(s);
                    }
                    return;
                }
            }
        }
        // From here on the datagram would open a session; each refusal is
        // an InErrs.
        let Demux::Conv(ci) = dm else {
            // Parity or short FEC data from an unknown address (§6.2).
            self.c.in_errs += 1;
            return;
        };
        if self.shared.closed.load(Ordering::Acquire) {
            self.c.in_errs += 1;
            return;
        }
        let Ok(permit) = self.accept_tx.try_reserve() else {
            // Accept backlog full.
            self.c.in_errs += 1;
            return;
        };
        if let Some(max) = self.shared.config.max_sessions() {
            if lock(&self.shared.table).len() >= max {
                // Full: make room by the eviction rule, or drop the datagram.
                let Some(victim) = self.evictor.pick(&self.shared.table) else {
                    self.c.in_errs += 1;
                    return;
                };
                victim.close_with(Fate::Evicted);
                self.shared.evictions.fetch_add(1, Ordering::Relaxed);
                if lock(&self.shared.table).len() >= max {
                    self.c.in_errs += 1;
                    return;
                }
            }
        }
        let Ok((session, driver)) = Session::build(
            ci.conv,
            from,
            self.shared.local,
            self.shared.socket.clone(),
            Origin::Accepted,
            Some(Arc::downgrade(&self.shared)),
            &self.shared.config,
        ) else {
            self.c.in_errs += 1;
            return;
        };
        let shared = session.shared().clone();
        {
            let mut st = shared.lock();
            let rep = st.input(plain, now);
            if rep.kcp_ok == 0 && codec::classify(plain) != PacketType::Oob {
                // Nothing in it was a valid segment for this conv: no session.
                self.c.kcp_in_errors += 1;
                return;
            }
        }
        session.mark_opened();
        self.c.passive_opens += 1;
        // Counters first, so whoever sees the session (table or accept) sees
        // everything that came before it.
        flush_counters(&mut self.c, &self.shared, &mut self.publisher);
        lock(&self.shared.table).insert(from, shared.clone());
        permit.send(session);
        tokio::spawn(driver);
        self.touched.push(shared);
    }

    fn finish_batch(&mut self) {
        for s in self.touched.drain(..) {
            s.lock().wake_driver();
        }
        flush_counters(&mut self.c, &self.shared, &mut self.publisher);
    }

    fn fail(&mut self, e: io::Error) {
        *lock(&self.shared.error) = Some((e.kind(), e.to_string()));
        self.shared.closed.store(true, Ordering::Release);
        let sessions: Vec<_> = lock(&self.shared.table).values().cloned().collect();
        for s in sessions {
            s.close_with(Fate::Io(e.kind(), e.to_string()));
        }
    }
}

impl std::future::Future for ListenTask {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        *lock(&this.shared.task_waker) = Some(cx.waker().clone());
        for _ in 0..LISTENER_BUDGET {
            if this.shared.closed.load(Ordering::Acquire) && lock(&this.shared.table).is_empty() {
                return Poll::Ready(());
            }
            match this.rx.poll_recv(&this.shared.socket, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted
                            | io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    continue
                }
                Poll::Ready(Err(e)) => {
                    this.fail(e);
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(n)) => {
                    let now = crate::session::now();
                    for i in 0..n {
                        this.handle(i, now);
                    }
                    this.finish_batch();
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
