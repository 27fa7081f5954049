//! The datagram transport under a [`Session`](crate::Session) or
//! [`Listener`](crate::Listener) (kcp-go's `net.PacketConn`).
//!
//! Sessions and listeners run over any [`Transport`]: [`UdpTransport`]
//! (tokio UDP with `recvmmsg`/`sendmmsg` batching, the default that
//! [`Session::dial`](crate::Session::dial) and
//! [`Listener::listen`](crate::Listener::listen) use), [`MemoryNetwork`]
//! (in-process, for tests and simulations), or the caller's own: a fake-TCP
//! or obfuscating wrapper, or a packet source the caller pushes datagrams
//! into, as kcp-go's `PacketPusher` does (see `examples/custom_transport.rs`).
//!
//! The contract is UDP's: datagrams may be lost, duplicated or reordered
//! (KCP repairs that), each one arrives whole or not at all, and a transport
//! never blocks: [`try_send`](Transport::try_send) sends what fits and says
//! how many, and [`writable`](Transport::writable) waits for room.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::net::UdpSocket;

// recvmmsg/sendmmsg through libc: the only `unsafe` in the transports.
#[allow(unsafe_code)]
mod batch;
pub(crate) mod socket;

pub use crate::config::UdpOffload;
#[cfg(feature = "testing")]
pub use batch::faults;
pub(crate) use batch::SendBatch;
pub use batch::{OffloadStats, RecvBatch, Transmits};

/// A future a transport returns from [`Transport::writable`].
pub type Writable<'a> = Pin<Box<dyn Future<Output = io::Result<()>> + Send + 'a>>;

/// A datagram transport (kcp-go's `net.PacketConn`), shared by everything
/// that uses it: one dialed session, or a listener and all its sessions.
///
/// Exactly one task receives (the session's driver, or the listener's
/// receive task); any number send.
pub trait Transport: Send + Sync + fmt::Debug + 'static {
    /// The local address (what peers see as our address, if known).
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// Waits for datagrams and appends them to `batch` (which the caller
    /// has cleared) with [`RecvBatch::push`] or faster means; returns how
    /// many it appended (at least 1), or the error that ends the transport.
    /// A datagram longer than
    /// [`MTU_LIMIT`](crate::config::MTU_LIMIT) is truncated, as UDP would.
    fn poll_recv(&self, cx: &mut Context<'_>, batch: &mut RecvBatch) -> Poll<io::Result<usize>>;

    /// Sends `datagrams`, in order, to `to` without waiting; returns how
    /// many were sent from the front (0 when the transport is full: wait for
    /// [`writable`](Self::writable) and try again). A datagram that cannot
    /// reach `to` may be dropped silently, as UDP does.
    fn try_send(&self, to: SocketAddr, datagrams: &Transmits<'_>) -> io::Result<usize>;

    /// Completes when [`try_send`](Self::try_send) may make progress. Many
    /// senders may wait at once, each with its own future.
    fn writable(&self) -> Writable<'_>;

    /// kcp-go `SetDSCP`; `Unsupported` unless the transport has IP headers.
    fn set_dscp(&self, dscp: u8) -> io::Result<()> {
        let _ = dscp;
        Err(unsupported("SetDSCP"))
    }

    /// kcp-go `SetReadBuffer`; `Unsupported` unless the transport has one.
    fn set_recv_buffer(&self, bytes: usize) -> io::Result<()> {
        let _ = bytes;
        Err(unsupported("SetReadBuffer"))
    }

    /// kcp-go `SetWriteBuffer`; `Unsupported` unless the transport has one.
    fn set_send_buffer(&self, bytes: usize) -> io::Result<()> {
        let _ = bytes;
        Err(unsupported("SetWriteBuffer"))
    }
}

fn unsupported(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("{what} is not supported by this transport"),
    )
}

/// A tokio UDP socket as a [`Transport`]: batched `recvmmsg`/`sendmmsg` on
/// Linux, one datagram per call elsewhere.
///
/// On Linux, with [`UdpOffload::Auto`], sends are segmented (UDP GSO, 4.18+):
/// a run of equal-size datagrams to one peer goes down as one message that
/// the kernel (or the NIC) cuts back into exactly those datagrams, so the
/// wire is the same as without it. The socket is probed when wrapped, and a
/// send the path refuses turns GSO off for that socket and goes again plain.
/// The don't-fragment setting is left as the socket has it (kcp-go never
/// forces DF; quinn-udp does, for its path MTU discovery).
///
/// Receives are coalesced (UDP GRO, 5.0+) only while a batch with 64 KiB
/// buffers reads the socket: a [`Listener`](crate::Listener)'s, which pays
/// for them once (16 x 64 KiB, allocated on first use) for all its
/// sessions. A dialed [`Session`](crate::Session) keeps its 16 buffers of
/// 1500 bytes and leaves GRO off: per-session memory matters more there
/// (thousands of dialed sessions per process), and GRO needs every buffer
/// of the batch to be 64 KiB, since the kernel would cut a coalesced run
/// short in a small one.
#[derive(Debug)]
pub struct UdpTransport {
    socket: UdpSocket,
    offload: batch::Offload,
}

impl UdpTransport {
    /// Wraps a bound socket, with [`UdpOffload::Auto`].
    pub fn new(socket: UdpSocket) -> UdpTransport {
        UdpTransport::with_offload(socket, UdpOffload::Auto)
    }

    /// Wraps a bound socket; `offload` says whether GSO/GRO may be used.
    pub fn with_offload(socket: UdpSocket, offload: UdpOffload) -> UdpTransport {
        let offload = batch::Offload::new(&socket, offload);
        UdpTransport { socket, offload }
    }

    /// What segmentation offload is doing on this socket.
    pub fn offload_stats(&self) -> OffloadStats {
        self.offload.stats()
    }

    /// The socket.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }
}

impl Transport for UdpTransport {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    fn poll_recv(&self, cx: &mut Context<'_>, batch: &mut RecvBatch) -> Poll<io::Result<usize>> {
        batch.poll_recv(&self.socket, &self.offload, cx)
    }

    fn try_send(&self, to: SocketAddr, datagrams: &Transmits<'_>) -> io::Result<usize> {
        batch::udp_try_send(&self.socket, &self.offload, to, datagrams)
    }

    fn writable(&self) -> Writable<'_> {
        // Not `poll_send_ready`: tokio keeps one waker there, and every
        // session of a listener may be waiting.
        Box::pin(self.socket.writable())
    }

    fn set_dscp(&self, dscp: u8) -> io::Result<()> {
        socket::set_dscp(&self.socket, dscp)
    }

    fn set_recv_buffer(&self, bytes: usize) -> io::Result<()> {
        socket::set_recv_buffer(&self.socket, bytes)
    }

    fn set_send_buffer(&self, bytes: usize) -> io::Result<()> {
        socket::set_send_buffer(&self.socket, bytes)
    }
}

/// Datagrams one [`MemoryTransport`] holds before dropping newcomers, as a
/// full socket receive buffer would.
pub const MEMORY_INBOX: usize = 4096;

/// An in-process datagram network: transports bound to addresses exchange
/// datagrams through bounded inboxes. Sending to an address nobody holds
/// drops the datagram, like UDP. Clones share the network.
#[derive(Debug, Clone, Default)]
pub struct MemoryNetwork {
    inner: Arc<Mutex<Net>>,
}

#[derive(Debug, Default)]
struct Net {
    inboxes: std::collections::HashMap<SocketAddr, Inbox>,
    /// Spare datagram buffers, so steady traffic does not allocate.
    spare: Vec<Vec<u8>>,
    next_port: u16,
}

#[derive(Debug, Default)]
struct Inbox {
    queue: VecDeque<(Vec<u8>, SocketAddr)>,
    waker: Option<Waker>,
    dropped: u64,
}

impl MemoryNetwork {
    /// An empty network.
    pub fn new() -> MemoryNetwork {
        MemoryNetwork::default()
    }

    fn lock(&self) -> MutexGuard<'_, Net> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A transport at `addr` (port 0: a free port of that IP is chosen).
    /// `AddrInUse` if the address is taken.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<MemoryTransport> {
        let mut net = self.lock();
        let mut addr = addr;
        if addr.port() == 0 {
            loop {
                net.next_port = net.next_port.wrapping_add(1).max(1);
                addr.set_port(net.next_port);
                if !net.inboxes.contains_key(&addr) {
                    break;
                }
            }
        }
        if net.inboxes.contains_key(&addr) {
            return Err(io::ErrorKind::AddrInUse.into());
        }
        net.inboxes.insert(addr, Inbox::default());
        Ok(MemoryTransport {
            net: self.clone(),
            addr,
        })
    }

    /// Datagrams dropped at `addr` because its inbox was full.
    pub fn dropped_at(&self, addr: SocketAddr) -> u64 {
        self.lock().inboxes.get(&addr).map_or(0, |i| i.dropped)
    }
}

/// One address on a [`MemoryNetwork`]. Dropping it frees the address.
#[derive(Debug)]
pub struct MemoryTransport {
    net: MemoryNetwork,
    addr: SocketAddr,
}

impl Drop for MemoryTransport {
    fn drop(&mut self) {
        self.net.lock().inboxes.remove(&self.addr);
    }
}

impl Transport for MemoryTransport {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }

    fn poll_recv(&self, cx: &mut Context<'_>, batch: &mut RecvBatch) -> Poll<io::Result<usize>> {
        let mut net = self.net.lock();
        let Net { inboxes, spare, .. } = &mut *net;
        let Some(inbox) = inboxes.get_mut(&self.addr) else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        let mut n = 0;
        while let Some((d, from)) = inbox.queue.front() {
            if !batch.push(d, *from) {
                break;
            }
            n += 1;
            if let Some((buf, _)) = inbox.queue.pop_front() {
                spare.push(buf);
            }
        }
        if n > 0 {
            return Poll::Ready(Ok(n));
        }
        inbox.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn try_send(&self, to: SocketAddr, datagrams: &Transmits<'_>) -> io::Result<usize> {
        let mut net = self.net.lock();
        let Net { inboxes, spare, .. } = &mut *net;
        let Some(inbox) = inboxes.get_mut(&to) else {
            // Nobody there: gone, like UDP to a closed port.
            return Ok(datagrams.len());
        };
        for d in datagrams.iter() {
            if inbox.queue.len() >= MEMORY_INBOX {
                inbox.dropped += 1;
                continue;
            }
            let mut buf = spare.pop().unwrap_or_default();
            buf.clear();
            buf.extend_from_slice(d);
            inbox.queue.push_back((buf, self.addr));
        }
        if let Some(w) = inbox.waker.take() {
            w.wake();
        }
        Ok(datagrams.len())
    }

    fn writable(&self) -> Writable<'_> {
        // Never full: a full inbox drops instead, as UDP does.
        Box::pin(std::future::ready(Ok(())))
    }
}
