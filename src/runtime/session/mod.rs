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

mod alarm;
mod driver;
mod halves;
mod shared;

pub use halves::{OwnedReadHalf, OwnedWriteHalf};
pub(crate) use shared::{now, runtime_handle, socket_options, Fate, Registry, Shared, State};

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use rand::RngCore;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{lookup_host, ToSocketAddrs, UdpSocket};

use crate::config::{Config, NoDelay, StreamMode};
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::rate::RateLimiter;
use crate::stats::{self, Snmp};
use crate::transport::socket as uio;
use crate::transport::{Transport, UdpTransport};
use driver::Driver;
use shared::*;

/// Who created the session (decides socket ownership, §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// [`Session::dial`] / [`Session::from_socket`]: owns its socket.
    Dialed,
    /// Accepted from a [`Listener`](crate::listener::Listener): shares its socket.
    Accepted,
}

impl Origin {
    /// Lower-case name, as in trace spans.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Origin::Dialed => "dialed",
            Origin::Accepted => "accepted",
        }
    }
}

/// A KCP session over UDP, wire-compatible with kcp-go's `UDPSession`.
///
/// Implements [`AsyncRead`] and [`AsyncWrite`]; [`into_split`](Self::into_split)
/// gives owned halves. Dropping every handle closes the session.
pub struct Session {
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("conv", &self.read.shared.conv)
            .field("peer", &self.read.shared.peer)
            .field("origin", &self.read.shared.origin)
            .finish()
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
        let transport = UdpTransport::with_offload(socket, config.udp_offload());
        Session::with_transport(Arc::new(transport), peer, conv, config)
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
        listener: Option<Weak<dyn Registry>>,
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
        let guard = Arc::new(CloseGuard(shared.clone()));
        let session = Session {
            read: OwnedReadHalf {
                shared: shared.clone(),
                _guard: guard.clone(),
                rd: Timeout::default(),
            },
            write: OwnedWriteHalf {
                shared,
                _guard: guard,
                wr: Timeout::default(),
            },
        };
        Ok((session, driver))
    }

    /// Counts the session as established (`CurrEstab`, `Active/PassiveOpens`).
    pub(crate) fn mark_opened(&self) {
        if !self.read.shared.opened.swap(true, Ordering::AcqRel) {
            stats::session_opened();
            let shared = &self.read.shared;
            let mut st = shared.lock();
            st.conn.trace_opened(shared.peer, shared.origin.name());
            // PassiveOpens is the listener's counter (Listener::stats).
            if shared.origin == Origin::Dialed {
                st.conn.count_active_open();
            }
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.read.shared
    }

    /// Splits into owned read and write halves; the session closes when both
    /// are dropped (or on an explicit [`OwnedWriteHalf::close`]).
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        (self.read, self.write)
    }

    /// The conversation id.
    pub fn conv(&self) -> u32 {
        self.read.shared.conv
    }
    /// The local socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.read.shared.local
    }
    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.read.shared.peer
    }
    /// Whether the session was dialed or accepted.
    pub fn origin(&self) -> Origin {
        self.read.shared.origin
    }
    /// Current retransmission timeout in ms (kcp-go `GetRTO`).
    pub fn rto(&self) -> u32 {
        self.read.shared.lock().conn.rto()
    }
    /// Smoothed RTT in ms (kcp-go `GetSRTT`).
    pub fn srtt(&self) -> i32 {
        self.read.shared.lock().conn.srtt()
    }
    /// RTT variance in ms (kcp-go `GetSRTTVar`).
    pub fn rttvar(&self) -> i32 {
        self.read.shared.lock().conn.rttvar()
    }
    /// Segments queued or in flight (kcp-go `WaitSnd`).
    pub fn wait_snd(&self) -> usize {
        self.read.shared.lock().conn.wait_snd()
    }
    /// This session's counters (kcp-go names; §6.5).
    pub fn stats(&self) -> Snmp {
        self.read.shared.lock().conn.stats()
    }
    /// How many times this session's driver task has run. An idle session
    /// (nothing queued, in flight or to acknowledge) arms no KCP timer, only
    /// its idle-timeout deadline (if any), so this stops growing; useful to check that in tests and diagnostics.
    pub fn driver_wakeups(&self) -> u64 {
        self.read.shared.wakeups.load(Ordering::Relaxed)
    }
    /// Whether the session has ended (closed locally or by an error).
    pub fn is_closed(&self) -> bool {
        self.read.shared.lock().conn.is_closed()
    }
    /// Why the session ended, if it has.
    pub fn error(&self) -> Option<Error> {
        self.read.shared.lock().fate().map(Fate::error)
    }

    /// kcp-go `SetNoDelay`.
    pub fn set_nodelay(&self, nd: NoDelay) {
        let mut st = self.read.shared.lock();
        st.conn.set_nodelay(nd);
        st.drive_if_needed();
    }
    /// kcp-go `SetWindowSize`; zero leaves a window unchanged.
    pub fn set_window(&self, snd_wnd: u32, rcv_wnd: u32) {
        let mut st = self.read.shared.lock();
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
        self.read.shared.lock().conn.set_mtu(mtu)
    }
    /// kcp-go `SetStreamMode`.
    pub fn set_stream_mode(&self, mode: StreamMode) {
        self.read.shared.lock().conn.set_stream_mode(mode);
    }
    /// kcp-go `SetACKNoDelay`.
    pub fn set_ack_nodelay(&self, nodelay: bool) {
        self.read.shared.lock().conn.set_ack_nodelay(nodelay);
    }
    /// kcp-go `SetWriteDelay`.
    pub fn set_write_delay(&self, delay: bool) {
        self.read.shared.lock().conn.set_write_delay(delay);
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
        set_rate_limiter_impl(&self.read.shared, limiter);
    }
    /// The limiter this session's writes draw from, if any (a clone sharing
    /// its bucket, e.g. to give another session the same limit).
    pub fn rate_limiter(&self) -> Option<RateLimiter> {
        self.read.shared.lock().conn.rate_limiter().cloned()
    }
    /// kcp-go v5.7 `ResetRTO` ([`Kcp::reset_rto`](crate::kcp::Kcp::reset_rto)): every unacknowledged
    /// segment becomes due for retransmission at the next timer tick (within
    /// one interval; nothing is sent by this call), with its backed-off RTO
    /// reset. For when the application knows connectivity is back (a new
    /// route, a network change) and wants data moving without waiting out
    /// the timers. The resends count as `LostSegs` and, with congestion
    /// control on, shrink the window as a timeout would.
    pub fn reset_rto(&self) {
        let mut st = self.read.shared.lock();
        st.conn.reset_rto(now());
        st.drive_if_needed();
    }
    /// Each read waiting longer than this fails with [`Error::Timeout`].
    pub fn set_read_timeout(&self, timeout: Option<Duration>) {
        let mut st = self.read.shared.lock();
        st.read_timeout = timeout;
        if let Some(w) = st.read_waker.take() {
            w.wake();
        }
    }
    /// Each write waiting longer than this fails with [`Error::Timeout`].
    pub fn set_write_timeout(&self, timeout: Option<Duration>) {
        let mut st = self.read.shared.lock();
        st.write_timeout = timeout;
        if let Some(w) = st.write_waker.take() {
            w.wake();
        }
    }
    /// End the session with [`Error::IdleTimeout`] after this long without a
    /// valid datagram from the peer.
    pub fn set_idle_timeout(&self, timeout: Option<Duration>) {
        let mut st = self.read.shared.lock();
        st.conn.set_idle_timeout(timeout);
        st.drive_if_needed();
    }
    /// End the session with [`Error::DeadLink`] when a segment sent this many
    /// times is still unacknowledged when its next retransmission is due.
    pub fn set_dead_link(&self, transmissions: Option<u32>) {
        self.read.shared.lock().conn.set_dead_link(transmissions);
    }
    /// kcp-go `SetDSCP`; only for a session that owns its socket.
    pub fn set_dscp(&self, dscp: u8) -> Result<()> {
        self.owned_socket("SetDSCP")?;
        if dscp > 63 {
            return Err(Error::InvalidConfig(format!("DSCP {dscp} exceeds 63")));
        }
        Ok(self.read.shared.transport.set_dscp(dscp)?)
    }
    /// kcp-go `SetReadBuffer`; only for a session that owns its socket.
    pub fn set_recv_buffer(&self, bytes: usize) -> Result<()> {
        self.owned_socket("SetReadBuffer")?;
        Ok(self.read.shared.transport.set_recv_buffer(bytes)?)
    }
    /// kcp-go `SetWriteBuffer`; only for a session that owns its socket.
    pub fn set_send_buffer(&self, bytes: usize) -> Result<()> {
        self.owned_socket("SetWriteBuffer")?;
        Ok(self.read.shared.transport.set_send_buffer(bytes)?)
    }
    fn owned_socket(&self, what: &str) -> Result<()> {
        match self.read.shared.origin {
            Origin::Dialed => Ok(()),
            Origin::Accepted => Err(Error::InvalidConfig(format!(
                "{what} is not allowed on a session sharing its listener's socket"
            ))),
        }
    }

    /// Registers the handler for OOB payloads (§4.6); it runs on the receive
    /// path and must not block.
    pub fn set_oob_handler(&self, handler: impl FnMut(&[u8]) + Send + 'static) -> Result<()> {
        self.read.shared.lock().conn.set_oob_handler(handler)
    }
    /// Largest OOB payload (kcp-go `GetOOBMaxSize`); 0 without FEC.
    pub fn oob_max_size(&self) -> usize {
        self.read.shared.lock().conn.oob_max_size()
    }
    /// Sends an unreliable out-of-band datagram (kcp-go `SendOOB`, §4.6).
    pub fn send_oob(&self, data: &[u8]) -> Result<()> {
        let mut st = self.read.shared.lock();
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
        close_shared(&self.read.shared)
    }

    /// Waits until everything written has been acknowledged by the peer (or
    /// the session ends, or the write timeout passes).
    pub async fn drain(&mut self) -> Result<()> {
        self.write.drain().await
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
        self.write.send_msg(msg).await
    }

    /// Receives one whole message into `buf`; [`Error::BufferTooSmall`] (the
    /// message stays queued) if it does not fit.
    pub async fn recv_msg(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.read.recv_msg(buf).await
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
        try_read_impl(&self.read.shared, buf)
    }
    /// [`recv_msg`](Self::recv_msg) without waiting: [`Error::WouldBlock`]
    /// when no message is ready, [`Error::BufferTooSmall`] (the message stays
    /// queued) when it does not fit, the session's error once it has ended
    /// and nothing is left.
    pub fn try_recv_msg(&self, buf: &mut [u8]) -> Result<usize> {
        try_recv_msg_impl(&self.read.shared, buf)
    }
    /// Waits until data is ready to read or the session has ended, i.e.
    /// until [`try_read`](Self::try_read) would not return `WouldBlock`
    /// (like tokio's `UdpSocket::readable`). Another reader may take the data
    /// first, so loop on `WouldBlock`. Any number of tasks may wait at once;
    /// cancel-safe. No read timeout applies (wrap it in `tokio::time::timeout`).
    pub async fn readable(&self) {
        readable_impl(&self.read.shared).await
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
        set_read_notify_impl(&self.read.shared, Some(Box::new(f)));
    }
    /// Removes the [`set_read_notify`](Self::set_read_notify) callback.
    pub fn clear_read_notify(&self) {
        set_read_notify_impl(&self.read.shared, None);
    }
}

impl AsyncRead for Session {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().read).poll_read(cx, buf)
    }
}

impl AsyncWrite for Session {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().write).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().write).poll_flush(cx)
    }
    /// Closes the session like [`Session::close`] (there is no half-close in
    /// KCP); a second shutdown is a no-op.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().write).poll_shutdown(cx)
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
    }
}
