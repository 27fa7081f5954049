//! The listener: one shared UDP socket, one receive task, many sessions
//! (or, with `ConfigBuilder::listener_shards`, several such shards on one
//! port, each with its own socket, task, table and sessions).
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
//! Every one of these decisions, and the counting of every refused datagram,
//! is made by the pure `endpoint::Endpoint` (no I/O, no clock, no lock); this
//! module is the glue that owns the socket, the sessions (by `ConnId`) and
//! the backlog, and does what the endpoint's event says.
//!
//! Two deliberate differences from kcp-go: a first datagram that KCP rejects
//! entirely (junk that happened to decrypt, e.g. with the `null` cipher)
//! creates no session; and closing the listener stops accepting but keeps
//! the socket serving already accepted sessions until the last one closes.

use crate::trace::Span;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use tokio::net::{lookup_host, ToSocketAddrs, UdpSocket};
use tokio::sync::mpsc;

use crate::codec;
use crate::config::Config;
use crate::endpoint::{Admission, Backlog, ConnId, DropReason, Endpoint, Event, Retire};
use crate::error::{Error, Result};
use crate::session::{
    runtime_handle, socket_options, Fate, Origin, Registry, Session, Shared, State,
};
use crate::stats::{Counters, Publisher, Snmp};
use crate::transport::socket as uio;
use crate::transport::RecvBatch;
use crate::transport::{Transport, UdpTransport};

/// Datagrams read per `recvmmsg` on the shared socket.
const LISTENER_RECV_BATCH: usize = 64;
/// 64 KiB GRO buffers the listener reads into where its UDP socket can
/// coalesce (1 MiB, once per listener, allocated on first use). Each holds
/// up to 64 datagrams of one peer, so a bulk peer fills a receive with far
/// more than 64 datagrams; many peers sending a datagram each get 16 per
/// call instead of 64, a syscall-count cost accepted for the bulk case.
const LISTENER_GRO_BUFFERS: usize = 16;
/// Receive batches handled before yielding to the scheduler.
const LISTENER_BUDGET: usize = 16;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The endpoint and the sessions its ids name.
///
/// Lock order: this table may be locked before a session's state or the
/// listener's counters, never while closing a session (closing calls
/// [`ListenerShared::remove`]).
struct Table {
    ep: Endpoint,
    /// By [`ConnId::index`].
    conns: Vec<Option<(ConnId, Arc<Shared>)>>,
}

impl Table {
    fn session(&self, id: ConnId) -> Option<&Arc<Shared>> {
        match self.conns.get(id.index()) {
            Some(Some((cur, s))) if *cur == id => Some(s),
            _ => None,
        }
    }

    fn insert(&mut self, id: ConnId, s: Arc<Shared>) {
        if self.conns.len() <= id.index() {
            self.conns.resize_with(id.index() + 1, || None);
        }
        self.conns[id.index()] = Some((id, s));
    }

    /// The session of `id`, which the endpoint no longer has.
    fn take(&mut self, id: ConnId) -> Option<Arc<Shared>> {
        let slot = self.conns.get_mut(id.index())?;
        match slot {
            Some((cur, _)) if *cur == id => slot.take().map(|(_, s)| s),
            _ => None,
        }
    }

    fn all(&self) -> Vec<Arc<Shared>> {
        self.conns
            .iter()
            .flatten()
            .map(|(_, s)| s.clone())
            .collect()
    }
}

/// State shared by the [`Listener`] handle, its receive task and its sessions.
pub(crate) struct ListenerShared {
    transport: Arc<dyn Transport>,
    local: SocketAddr,
    config: Config,
    table: Mutex<Table>,
    /// Sessions closed by the eviction rule.
    evictions: AtomicU64,
    task_waker: Mutex<Option<Waker>>,
    c: Mutex<Counters>,
    error: Mutex<Option<(io::ErrorKind, String)>>,
}

impl Registry for ListenerShared {
    fn remove(&self, s: &Arc<Shared>) {
        ListenerShared::remove(self, s);
    }
}

impl ListenerShared {
    /// Removes a closed session from the table (if it is still the one
    /// registered for its address).
    pub(crate) fn remove(&self, s: &Arc<Shared>) {
        {
            let mut t = lock(&self.table);
            if let Some(id) = t.ep.lookup(s.peer) {
                if t.session(id).is_some_and(|cur| Arc::ptr_eq(cur, s)) {
                    t.ep.remove(id);
                    t.take(id);
                }
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

/// Accepts KCP sessions on one UDP port (kcp-go `Listener`).
pub struct Listener {
    /// One per receive shard (at least one); all on the same local address.
    shards: Vec<Arc<ListenerShared>>,
    accept_rx: Mutex<mpsc::Receiver<Session>>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("local", &self.local_addr())
            .field("shards", &self.shards.len())
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
        let shards = if cfg!(target_os = "linux") {
            config.listener_shards()
        } else {
            1
        };
        let sockets = uio::bind_shards(addr, shards, &socket_options(config))?;
        let transports = sockets
            .into_iter()
            .map(|s| {
                Arc::new(UdpTransport::with_offload(s, config.udp_offload())) as Arc<dyn Transport>
            })
            .collect();
        Listener::start(transports, config)
    }

    /// Serves on a caller-supplied socket (kcp-go `ServeConn`). Socket
    /// options in `config` are applied. Outside a tokio runtime this fails
    /// with [`Error::Io`].
    pub fn from_socket(socket: UdpSocket, config: &Config) -> Result<Listener> {
        config.validate()?;
        uio::apply(&socket, &socket_options(config))?;
        Listener::with_transport(
            Arc::new(UdpTransport::with_offload(socket, config.udp_offload())),
            config,
        )
    }

    /// Serves on any datagram [`Transport`] (kcp-go `ServeConn` on a custom
    /// `net.PacketConn`): sessions are told apart by the source address the
    /// transport reports. Socket options in `config` are not applied.
    /// Outside a tokio runtime this fails with [`Error::Io`].
    pub fn with_transport(transport: Arc<dyn Transport>, config: &Config) -> Result<Listener> {
        config.validate()?;
        Listener::start(vec![transport], config)
    }

    /// Starts one shard per transport (all bound to one address), sharing
    /// the accept backlog and splitting the session cap.
    fn start(transports: Vec<Arc<dyn Transport>>, config: &Config) -> Result<Listener> {
        let runtime = runtime_handle()?;
        let (tx, rx) = mpsc::channel(config.accept_backlog());
        let n = transports.len().max(1);
        let cap = config.max_sessions().map(|m| m.div_ceil(n));
        // Every task keeps every shard's socket open until the last task
        // ends: a socket closing early would make the kernel rehash the
        // peers of the shards still serving onto other sockets.
        let group: Arc<[Arc<dyn Transport>]> = transports.iter().cloned().collect();
        let mut shards = Vec::with_capacity(n);
        let mut tasks = Vec::with_capacity(n);
        for transport in transports {
            let local = transport.local_addr()?;
            let mut ep = Endpoint::new(cap);
            ep.set_local(local);
            let span = ep.span().clone();
            let shared = Arc::new(ListenerShared {
                transport,
                local,
                config: config.clone(),
                table: Mutex::new(Table {
                    ep,
                    conns: Vec::new(),
                }),
                evictions: AtomicU64::new(0),
                task_waker: Mutex::new(None),
                c: Mutex::new(Counters::default()),
                error: Mutex::new(None),
            });
            tasks.push(ListenTask {
                span,
                rx: RecvBatch::with_gro(LISTENER_RECV_BATCH, LISTENER_GRO_BUFFERS),
                glue: Glue {
                    shared: shared.clone(),
                    accept_tx: tx.clone(),
                    touched: Vec::new(),
                    note: None,
                    c: Counters::default(),
                    publisher: Publisher::default(),
                },
                _group: group.clone(),
            });
            shards.push(shared);
        }
        for task in tasks {
            runtime.spawn(task);
        }
        Ok(Listener {
            shards,
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
        for shard in &self.shards {
            if let Some((kind, msg)) = &*lock(&shard.error) {
                return Error::Io(io::Error::new(*kind, msg.clone()));
            }
        }
        Error::Closed
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shards[0].local
    }

    /// Receive shards (see [`ConfigBuilder::listener_shards`](crate::ConfigBuilder::listener_shards)).
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Live sessions (accepted or waiting in the backlog), per shard.
    pub fn shard_session_counts(&self) -> Vec<usize> {
        self.shards
            .iter()
            .map(|s| lock(&s.table).ep.len())
            .collect()
    }

    /// Live sessions (accepted or waiting in the backlog).
    pub fn session_count(&self) -> usize {
        self.shard_session_counts().into_iter().sum()
    }

    /// Sessions closed so far to make room for new peers when the table was
    /// full (see [`ConfigBuilder::max_sessions`](crate::ConfigBuilder::max_sessions)).
    pub fn evictions(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.evictions.load(Ordering::Relaxed))
            .sum()
    }

    /// The listener's own counters: datagrams it dropped before any session
    /// saw them (`InCsumErrors`, ...), and `PassiveOpens`. Per-session
    /// counters are in [`Session::stats`]; everything is in
    /// [`stats::global`](crate::stats::global).
    pub fn stats(&self) -> Snmp {
        let mut total = Counters::default();
        for shard in &self.shards {
            let mut c = *lock(&shard.c);
            total.absorb(&mut c);
        }
        total.snapshot()
    }

    /// Stops accepting: new addresses are ignored and sessions still in the
    /// backlog are closed. Accepted sessions keep working; the socket is
    /// released when the last of them closes.
    pub fn close(&self) {
        // Not held below: dropping backlogged sessions removes them.
        for shard in &self.shards {
            lock(&shard.table).ep.close();
        }
        let mut rx = lock(&self.accept_rx);
        rx.close();
        while let Ok(s) = rx.try_recv() {
            drop(s);
        }
        drop(rx);
        for shard in &self.shards {
            shard.wake_task();
        }
    }

    /// kcp-go `Listener.SetDSCP` on the shared socket (every shard's).
    pub fn set_dscp(&self, dscp: u8) -> Result<()> {
        if dscp > 63 {
            return Err(Error::InvalidConfig(format!("DSCP {dscp} exceeds 63")));
        }
        for shard in &self.shards {
            shard.transport.set_dscp(dscp)?;
        }
        Ok(())
    }
    /// kcp-go `Listener.SetReadBuffer` (every shard's socket).
    pub fn set_recv_buffer(&self, bytes: usize) -> Result<()> {
        for shard in &self.shards {
            shard.transport.set_recv_buffer(bytes)?;
        }
        Ok(())
    }
    /// kcp-go `Listener.SetWriteBuffer` (every shard's socket).
    pub fn set_send_buffer(&self, bytes: usize) -> Result<()> {
        for shard in &self.shards {
            shard.transport.set_send_buffer(bytes)?;
        }
        Ok(())
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

/// The receive task: the socket's batches, and the glue that does what the
/// [`Endpoint`] decides.
struct ListenTask {
    rx: RecvBatch,
    glue: Glue,
    /// The endpoint's span, entered on every poll.
    span: Span,
    /// Every shard's transport (see `Listener::start`).
    _group: Arc<[Arc<dyn Transport>]>,
}

/// What a routed datagram taught about its connection, told to the endpoint
/// the next time the table is locked anyway (before any other decision).
struct Note {
    id: ConnId,
    /// Its session accepted the datagram (no KCP error): heard now.
    heard: Option<Instant>,
    /// KCP `snd_una` moved for the first time.
    proven: bool,
}

/// Everything of the task but the receive buffers (so a datagram borrowed
/// from them can be handled).
struct Glue {
    shared: Arc<ListenerShared>,
    accept_tx: mpsc::Sender<Session>,
    touched: Vec<Arc<Shared>>,
    note: Option<Note>,
    c: Counters,
    publisher: Publisher,
}

/// Whether the peer acknowledged our data (see `Connection::is_proven`).
fn is_proven(st: &State) -> bool {
    st.conn.is_proven()
}

/// Locks the table, first telling the endpoint the pending [`Note`].
fn table<'a>(shared: &'a ListenerShared, note: &mut Option<Note>) -> MutexGuard<'a, Table> {
    let mut t = lock(&shared.table);
    if let Some(n) = note.take() {
        if let Some(at) = n.heard {
            t.ep.note_heard(n.id, at);
        }
        if n.proven {
            t.ep.note_proven(n.id);
        }
    }
    t
}

impl Glue {
    fn handle(&mut self, d: &mut [u8], from: SocketAddr, now: Instant) {
        // Decrypt before locking; the endpoint counts every refusal.
        let opened = codec::open(self.shared.config.crypt(), d);
        let backlog = if self.accept_tx.capacity() > 0 {
            Backlog::Room
        } else {
            Backlog::Full
        };
        let mut t = table(&self.shared, &mut self.note);
        let range = match opened {
            Ok(r) => r,
            Err(e) => return t.ep.refuse(now, from, e.into()),
        };
        let Some(plain) = d.get(range) else {
            return t.ep.refuse(now, from, DropReason::BadRange);
        };
        match t.ep.handle(now, from, plain, backlog) {
            Event::Route(id) => {
                let Some(s) = t.session(id).cloned() else {
                    return t.ep.refuse(now, from, DropReason::SessionClosed);
                };
                let proven = t.ep.is_proven(id);
                drop(t);
                self.route(id, s, proven, plain, now);
            }
            Event::Drop { replaced, .. } => {
                let old = replaced.and_then(|id| t.take(id));
                drop(t);
                if let Some(old) = old {
                    old.close_with(Fate::Closed);
                }
            }
            Event::Open(adm) => {
                let old = adm.retire().and_then(|(id, why)| Some((t.take(id)?, why)));
                drop(t);
                if let Some((old, why)) = old {
                    let fate = match why {
                        Retire::Replaced => Fate::Closed,
                        Retire::Evicted => Fate::Evicted,
                    };
                    if old.close_with(fate) && why == Retire::Evicted {
                        self.shared.evictions.fetch_add(1, Ordering::Relaxed);
                    }
                }
                self.open(adm, plain, now);
            }
        }
    }

    fn route(
        &mut self,
        id: ConnId,
        s: Arc<Shared>,
        known_proven: bool,
        plain: &[u8],
        now: Instant,
    ) {
        {
            let mut st = s.lock();
            if st.is_closed() {
                // Closed but not yet out of the table.
                drop(st);
                return table(&self.shared, &mut self.note).ep.refuse(
                    now,
                    s.peer,
                    DropReason::SessionClosed,
                );
            }
            let rep = st.input(plain, now);
            st.wake_io();
            self.note = Some(Note {
                id,
                heard: (rep.kcp_errors == 0).then_some(now),
                proven: !known_proven && is_proven(&st),
            });
        }
        if !self.touched.last().is_some_and(|t| Arc::ptr_eq(t, &s)) {
            self.touched.push(s);
        }
    }

    fn open(&mut self, adm: Admission, plain: &[u8], now: Instant) {
        let Ok(permit) = self.accept_tx.try_reserve() else {
            return table(&self.shared, &mut self.note).ep.reject(
                now,
                adm,
                DropReason::BacklogFull,
            );
        };
        let Ok((session, driver)) = Session::build(
            adm.conv(),
            adm.from(),
            self.shared.local,
            self.shared.transport.clone(),
            Origin::Accepted,
            Some(Arc::downgrade(&(self.shared.clone() as Arc<dyn Registry>))),
            &self.shared.config,
        ) else {
            return table(&self.shared, &mut self.note).ep.reject(
                now,
                adm,
                DropReason::BuildFailed,
            );
        };
        let shared = session.shared().clone();
        let first = shared.lock().input(plain, now);
        {
            let mut t = table(&self.shared, &mut self.note);
            let Some(id) = t.ep.commit(adm, now, &first) else {
                // Nothing in it was a valid segment for this conv: no
                // session (dropping it closes it, which locks the table).
                drop(t);
                return;
            };
            session.mark_opened();
            // Counters (PassiveOpens) before the session is visible, so
            // whoever sees it (table or accept) sees everything before it.
            t.ep.drain_counters(&mut self.c);
            flush_counters(&mut self.c, &self.shared, &mut self.publisher);
            t.insert(id, shared.clone());
        }
        permit.send(session);
        tokio::spawn(driver);
        self.touched.push(shared);
    }

    fn finish_batch(&mut self) {
        for s in self.touched.drain(..) {
            s.lock().wake_driver();
        }
        table(&self.shared, &mut self.note)
            .ep
            .drain_counters(&mut self.c);
        flush_counters(&mut self.c, &self.shared, &mut self.publisher);
    }

    fn fail(&mut self, e: io::Error) {
        *lock(&self.shared.error) = Some((e.kind(), e.to_string()));
        let sessions = {
            let mut t = table(&self.shared, &mut self.note);
            t.ep.close();
            t.all()
        };
        for s in sessions {
            s.close_with(Fate::Io(e.kind(), e.to_string()));
        }
    }
}

impl std::future::Future for ListenTask {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let ListenTask { rx, glue, span, .. } = this;
        let _g = span.enter();
        *lock(&glue.shared.task_waker) = Some(cx.waker().clone());
        for _ in 0..LISTENER_BUDGET {
            let done = {
                let t = table(&glue.shared, &mut glue.note);
                t.ep.is_closed() && t.ep.is_empty()
            };
            if done {
                return Poll::Ready(());
            }
            rx.clear();
            match glue.shared.transport.poll_recv(cx, rx) {
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
                    glue.fail(e);
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(n)) => {
                    // The tokio clock, which sessions use (and tests pause).
                    let now = crate::session::now();
                    for i in 0..n {
                        if let Some((d, from)) = rx.get_mut(i) {
                            glue.handle(d, from, now);
                        }
                    }
                    glue.finish_batch();
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn listener_is_send_and_sync() {
        send_sync::<super::Listener>();
    }
}
