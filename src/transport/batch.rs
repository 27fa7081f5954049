//! Batched datagram receive and send.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::task::{Context, Poll};

use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::config::{UdpOffload, MAX_PACKET_SIZE, MTU_LIMIT};
use crate::proto::codec::PacketSink;
use crate::proto::packet::{Packet, PacketPool};
use crate::transport::Transport;

/// Most datagrams moved by one `sendmmsg` call (kcp-go's `maxBatchSize`).
const SEND_BATCH: usize = 64;

/// Most datagrams in one segmented (GSO) message: the kernel's
/// `UDP_MAX_SEGMENTS`; more is `EINVAL`.
#[cfg(target_os = "linux")]
const GSO_MAX_SEGMENTS: usize = 64;
/// Most payload bytes in one segmented message: the largest IPv4 UDP
/// payload (65535 - 20 - 8), which IPv6 also accepts. Above it the kernel
/// says `EMSGSIZE`, which is not a reason to give up GSO, so never ask.
#[cfg(target_os = "linux")]
const GSO_MAX_BYTES: usize = 65_507;
/// One GRO receive buffer: the kernel coalesces at most 64 KiB (and 64
/// segments) into one buffer, and a smaller buffer would silently cut a
/// coalesced run short.
#[cfg(target_os = "linux")]
const GRO_BUF: usize = 1 << 16;

/// `UDP_GRO` state of one socket.
const GRO_NEVER: u8 = 0;
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
const GRO_OFF: u8 = 1;
const GRO_ON: u8 = 2;

/// What UDP segmentation offload did on one
/// [`UdpTransport`](crate::transport::UdpTransport)'s socket (Linux; all
/// zero elsewhere or with [`UdpOffload::Off`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OffloadStats {
    /// Sends may be segmented (`UDP_SEGMENT`): the kernel has it, the
    /// config allows it, and no send was refused yet.
    pub gso: bool,
    /// `UDP_GRO` is on for the socket now (only while a receive batch with
    /// room for coalesced buffers reads it: a listener's).
    pub gro: bool,
    /// Segmented messages sent, each carrying 2 or more datagrams.
    pub gso_sends: u64,
    /// Datagrams that went out inside segmented messages.
    pub gso_datagrams: u64,
    /// Times a segmented send was refused and GSO was turned off for the
    /// socket (the refused datagrams were then sent one per message).
    pub gso_fallbacks: u64,
    /// Coalesced receive buffers split into datagrams.
    pub gro_buffers: u64,
    /// Datagrams taken out of coalesced receive buffers.
    pub gro_datagrams: u64,
}

/// Per-socket offload state: what was probed, what is in use, counters.
/// Shared by every sender of the socket, so all of it is atomic; counters
/// move once per system call, not per datagram.
#[derive(Debug)]
pub(crate) struct Offload {
    gso: AtomicBool,
    gro: AtomicU8,
    gso_sends: AtomicU64,
    gso_datagrams: AtomicU64,
    gso_fallbacks: AtomicU64,
    gro_buffers: AtomicU64,
    gro_datagrams: AtomicU64,
    /// The fault hook ([`faults::reject_gso`]): the next segmented message
    /// is refused as a kernel path without offload would refuse it.
    #[cfg(any(test, feature = "testing"))]
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    reject_gso: AtomicBool,
}

impl Offload {
    /// Probes `sock`: GSO where `getsockopt(UDP_SEGMENT)` works (Linux
    /// 4.18+). A kernel without it ignores a `UDP_SEGMENT` cmsg and would
    /// send one big datagram, so the probe is what keeps the wire right
    /// there. GRO is tried lazily, by the first receive that can use it.
    pub(crate) fn new(sock: &UdpSocket, mode: UdpOffload) -> Offload {
        let auto = mode == UdpOffload::Auto;
        #[cfg(target_os = "linux")]
        let (gso, gro) = (
            auto && linux::gso_supported(sock),
            if auto { GRO_OFF } else { GRO_NEVER },
        );
        #[cfg(not(target_os = "linux"))]
        let (gso, gro) = {
            let _ = (sock, auto);
            (false, GRO_NEVER)
        };
        Offload {
            gso: AtomicBool::new(gso),
            gro: AtomicU8::new(gro),
            gso_sends: AtomicU64::new(0),
            gso_datagrams: AtomicU64::new(0),
            gso_fallbacks: AtomicU64::new(0),
            gro_buffers: AtomicU64::new(0),
            gro_datagrams: AtomicU64::new(0),
            #[cfg(any(test, feature = "testing"))]
            reject_gso: AtomicBool::new(false),
        }
    }

    pub(crate) fn stats(&self) -> OffloadStats {
        OffloadStats {
            gso: self.gso.load(Ordering::Relaxed),
            gro: self.gro.load(Ordering::Relaxed) == GRO_ON,
            gso_sends: self.gso_sends.load(Ordering::Relaxed),
            gso_datagrams: self.gso_datagrams.load(Ordering::Relaxed),
            gso_fallbacks: self.gso_fallbacks.load(Ordering::Relaxed),
            gro_buffers: self.gro_buffers.load(Ordering::Relaxed),
            gro_datagrams: self.gro_datagrams.load(Ordering::Relaxed),
        }
    }

    #[cfg(target_os = "linux")]
    fn rejects_gso(&self) -> bool {
        #[cfg(any(test, feature = "testing"))]
        return self.reject_gso.load(Ordering::Relaxed);
        #[cfg(not(any(test, feature = "testing")))]
        false
    }

    /// Turns `UDP_GRO` on or off to match the batch about to read (`want`:
    /// it has room for coalesced buffers); whether it is on. With GRO on,
    /// a coalesced run read into a 1500-byte buffer would lose all but its
    /// first datagram, so it is on only while such a batch reads. Only one
    /// task receives on a transport, so this flips at most once in
    /// practice.
    #[cfg(target_os = "linux")]
    fn sync_gro(&self, sock: &UdpSocket, want: bool) -> bool {
        match (self.gro.load(Ordering::Relaxed), want) {
            (GRO_NEVER, _) => false,
            (GRO_ON, true) => true,
            (GRO_OFF, false) => false,
            (_, true) => {
                // ENOPROTOOPT before Linux 5.0: never ask again.
                let on = linux::set_gro(sock, true).is_ok();
                self.gro
                    .store(if on { GRO_ON } else { GRO_NEVER }, Ordering::Relaxed);
                on
            }
            (_, false) => {
                let off = linux::set_gro(sock, false).is_ok();
                if off {
                    self.gro.store(GRO_OFF, Ordering::Relaxed);
                }
                !off
            }
        }
    }
}

/// Send-path fault injection for tests (feature `testing`): on loopback the
/// kernel practically never returns a partial `sendmmsg` count or
/// `EWOULDBLOCK` (the datagram leaves the send buffer as soon as it is
/// queued to the receiver), so the paths that keep unsent datagrams queued
/// are forced here instead.
#[cfg(feature = "testing")]
pub mod faults {
    use std::sync::atomic::{AtomicUsize, Ordering};

    static MAX_PER_CALL: AtomicUsize = AtomicUsize::new(0);
    static BLOCK_EVERY: AtomicUsize = AtomicUsize::new(0);
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    static PARTIAL: AtomicUsize = AtomicUsize::new(0);
    static BLOCKED: AtomicUsize = AtomicUsize::new(0);

    /// Process-wide: every send call moves at most `max_per_call` datagrams
    /// (0: no limit), and every `block_every`-th call sends nothing and is
    /// treated as `WouldBlock` (0: never), as a full socket buffer would.
    pub fn set_send_faults(max_per_call: usize, block_every: usize) {
        MAX_PER_CALL.store(max_per_call, Ordering::Relaxed);
        BLOCK_EVERY.store(block_every, Ordering::Relaxed);
    }

    /// `(partial sends, injected WouldBlocks)` so far, to prove the paths ran.
    pub fn send_faults_seen() -> (usize, usize) {
        (
            PARTIAL.load(Ordering::Relaxed),
            BLOCKED.load(Ordering::Relaxed),
        )
    }

    /// From now on `transport` refuses its next segmented (GSO) send with
    /// `EIO`, as a device without checksum offload does, after sending the
    /// messages in front of it: the socket must fall back to one datagram
    /// per message for good, losing and repeating nothing. Per transport,
    /// so other tests in the process are not affected.
    pub fn reject_gso(transport: &crate::transport::UdpTransport) {
        transport.offload.reject_gso.store(true, Ordering::Relaxed);
    }

    /// How many of `want` datagrams this call may send; `None`: the socket
    /// is to look full.
    pub(super) fn limit(want: usize) -> Option<usize> {
        let every = BLOCK_EVERY.load(Ordering::Relaxed);
        let call = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        if every > 0 && call.is_multiple_of(every) {
            BLOCKED.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        match MAX_PER_CALL.load(Ordering::Relaxed) {
            max if max > 0 && want > max => {
                PARTIAL.fetch_add(1, Ordering::Relaxed);
                Some(max)
            }
            _ => Some(want),
        }
    }
}

/// Without the `testing` feature nothing is injected.
#[cfg(not(feature = "testing"))]
mod faults {
    #[inline(always)]
    pub(super) fn limit(want: usize) -> Option<usize> {
        Some(want)
    }
}

/// A set of receive buffers filled by one batched read.
pub struct RecvBatch {
    pkts: Vec<Packet>,
    addrs: Vec<SocketAddr>,
    count: usize,
    #[cfg(target_os = "linux")]
    sys: linux::RecvSys,
    /// 64 KiB buffers to read coalesced (GRO) runs into, where the socket
    /// can coalesce; 0: never turn GRO on for this batch.
    #[cfg(target_os = "linux")]
    gro_buffers: usize,
    /// The GRO buffers, allocated by the first receive that uses them (a
    /// listener over a custom transport never pays for them).
    #[cfg(target_os = "linux")]
    gro: Option<Box<GroSpace>>,
    /// The last receive went into `gro`: its entries are `gro.segs`.
    #[cfg(target_os = "linux")]
    in_gro: bool,
}

/// Coalesced receive buffers and the datagrams found in them.
#[cfg(target_os = "linux")]
struct GroSpace {
    /// `n` buffers of [`GRO_BUF`] bytes, back to back.
    arena: Box<[u8]>,
    /// The datagrams of the last receive, in arrival order.
    segs: Vec<Seg>,
    sys: linux::GroSys,
}

/// One datagram inside [`GroSpace::arena`].
#[cfg(target_os = "linux")]
#[derive(Clone, Copy)]
struct Seg {
    start: usize,
    len: usize,
    addr: SocketAddr,
}

#[cfg(target_os = "linux")]
impl GroSpace {
    fn new(n: usize) -> GroSpace {
        GroSpace {
            arena: vec![0u8; n * GRO_BUF].into_boxed_slice(),
            // The kernel coalesces at most 64 datagrams per buffer, so this
            // never grows.
            segs: Vec::with_capacity(n * 64),
            sys: linux::GroSys::new(n),
        }
    }
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("capacity", &self.pkts.len())
            .field("count", &self.count)
            .finish()
    }
}

impl RecvBatch {
    /// `n` buffers of [`MTU_LIMIT`] bytes (at least one).
    pub fn new(n: usize) -> RecvBatch {
        let n = n.max(1);
        RecvBatch {
            pkts: (0..n).map(|_| Packet::new()).collect(),
            addrs: vec![SocketAddr::from(([0, 0, 0, 0], 0)); n],
            count: 0,
            #[cfg(target_os = "linux")]
            sys: linux::RecvSys::new(n),
            #[cfg(target_os = "linux")]
            gro_buffers: 0,
            #[cfg(target_os = "linux")]
            gro: None,
            #[cfg(target_os = "linux")]
            in_gro: false,
        }
    }

    /// Like [`new`](Self::new), and on a [`UdpTransport`] whose socket can
    /// coalesce (Linux `UDP_GRO`, [`UdpOffload::Auto`]) the batch reads
    /// into `gro_buffers` buffers of 64 KiB instead, each holding up to 64
    /// datagrams of one sender, which it splits back into the datagrams
    /// sent. Those buffers are allocated by the first such receive.
    ///
    /// [`UdpTransport`]: crate::transport::UdpTransport
    pub(crate) fn with_gro(n: usize, gro_buffers: usize) -> RecvBatch {
        #[cfg(target_os = "linux")]
        {
            let mut b = RecvBatch::new(n);
            b.gro_buffers = gro_buffers;
            b
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = gro_buffers;
            RecvBatch::new(n)
        }
    }

    /// Datagrams held from the last receive.
    pub fn len(&self) -> usize {
        self.count
    }

    /// How many datagrams one receive can hold.
    pub fn capacity(&self) -> usize {
        self.pkts.len()
    }

    /// Forgets the datagrams held (the runtime does this before each
    /// [`Transport::poll_recv`](crate::transport::Transport::poll_recv)).
    pub fn clear(&mut self) {
        self.count = 0;
        #[cfg(target_os = "linux")]
        {
            self.in_gro = false;
        }
    }

    /// Appends one received datagram (a custom transport's receive path):
    /// its bytes are copied, truncated to
    /// [`MTU_LIMIT`] as a UDP socket would. False, and
    /// nothing is taken, when the batch is full.
    pub fn push(&mut self, data: &[u8], from: SocketAddr) -> bool {
        #[cfg(target_os = "linux")]
        if self.in_gro {
            // Holding a coalesced receive that was not cleared: full.
            return false;
        }
        let (Some(p), Some(a)) = (
            self.pkts.get_mut(self.count),
            self.addrs.get_mut(self.count),
        ) else {
            return false;
        };
        let n = data.len().min(MTU_LIMIT);
        p.buf_mut()[..n].copy_from_slice(&data[..n]);
        p.set_len(n);
        *a = from;
        self.count += 1;
        true
    }

    /// Whether the last receive returned nothing.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Datagram `i` of the last receive: its bytes (mutable, for in-place
    /// decryption) and its source address. `None` past the end.
    pub fn get_mut(&mut self, i: usize) -> Option<(&mut [u8], SocketAddr)> {
        if i >= self.count {
            return None;
        }
        #[cfg(target_os = "linux")]
        if self.in_gro {
            let g = self.gro.as_mut()?;
            let seg = *g.segs.get(i)?;
            return Some((g.arena.get_mut(seg.start..seg.start + seg.len)?, seg.addr));
        }
        let addr = *self.addrs.get(i)?;
        Some((self.pkts.get_mut(i)?.as_mut_slice(), addr))
    }

    /// Waits until the socket is readable and reads as many datagrams as are
    /// queued, up to the batch size. Returns how many were read (at least 1).
    pub(crate) fn poll_recv(
        &mut self,
        sock: &UdpSocket,
        offload: &Offload,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        self.clear();
        loop {
            match sock.poll_recv_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
            match sock.try_io(Interest::READABLE, || self.recv_now(sock, offload)) {
                Ok(n) => {
                    self.count = n;
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    #[cfg(target_os = "linux")]
    fn recv_now(&mut self, sock: &UdpSocket, offload: &Offload) -> io::Result<usize> {
        if offload.sync_gro(sock, self.gro_buffers > 0) && self.gro_buffers > 0 {
            return self.recv_gro(sock, offload);
        }
        let n = self.sys.recvmmsg(sock, &mut self.pkts)?;
        for i in 0..n {
            let (len, addr) = self.sys.result(i);
            if let Some(p) = self.pkts.get_mut(i) {
                p.set_len(len);
            }
            if let Some(slot) = self.addrs.get_mut(i) {
                // Never leave the previous batch's source in place: a
                // datagram without a readable address must not be taken for
                // one from that peer.
                *slot = addr.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
            }
        }
        Ok(n)
    }

    /// One `recvmmsg` into the 64 KiB buffers; each buffer that carries a
    /// `UDP_GRO` segment size is split at multiples of it (the kernel
    /// coalesces only equal-size datagrams of one flow, the last one
    /// possibly shorter), so the entries are exactly the datagrams sent.
    #[cfg(target_os = "linux")]
    fn recv_gro(&mut self, sock: &UdpSocket, offload: &Offload) -> io::Result<usize> {
        let n = self.gro_buffers;
        let g = self.gro.get_or_insert_with(|| Box::new(GroSpace::new(n)));
        let msgs = g.sys.recvmmsg(sock, &mut g.arena)?;
        g.segs.clear();
        let (mut coalesced, mut split) = (0u64, 0u64);
        for m in 0..msgs {
            let (len, seg_size, addr) = g.sys.result(m);
            // As in the plain path: never keep an old source.
            let addr = addr.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
            // No cmsg (or one segment): one datagram, as a plain read.
            let step = seg_size.filter(|&size| size > 0 && size < len);
            let first = g.segs.len();
            let base = m * GRO_BUF;
            let mut off = 0;
            loop {
                let take = step.map_or(len, |size| size.min(len - off));
                g.segs.push(Seg {
                    start: base + off,
                    // Truncated to MTU_LIMIT like a plain receive, so what
                    // the stack sees does not depend on the offload.
                    len: take.min(MTU_LIMIT),
                    addr,
                });
                off += take;
                if off >= len {
                    break;
                }
            }
            if step.is_some() {
                coalesced += 1;
                split += (g.segs.len() - first) as u64;
            }
        }
        if coalesced > 0 {
            offload.gro_buffers.fetch_add(coalesced, Ordering::Relaxed);
            offload.gro_datagrams.fetch_add(split, Ordering::Relaxed);
        }
        self.in_gro = true;
        Ok(g.segs.len())
    }

    #[cfg(not(target_os = "linux"))]
    fn recv_now(&mut self, sock: &UdpSocket, offload: &Offload) -> io::Result<usize> {
        let _ = offload;
        let mut n = 0;
        while n < self.pkts.len() {
            let p = &mut self.pkts[n];
            match sock.try_recv_from(p.buf_mut()) {
                Ok((len, addr)) => {
                    p.set_len(len);
                    self.addrs[n] = addr;
                    n += 1;
                }
                Err(e) if n > 0 && e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }
}

/// Datagrams waiting to be sent to one destination, oldest first.
#[derive(Debug, Default)]
pub struct SendBatch {
    queue: VecDeque<Packet>,
    bytes: usize,
}

impl SendBatch {
    /// An empty queue.
    pub fn new() -> SendBatch {
        SendBatch::default()
    }

    /// Queues one datagram.
    pub fn push(&mut self, p: Packet) {
        debug_assert!(p.len() <= MAX_PACKET_SIZE);
        self.bytes += p.len();
        self.queue.push_back(p);
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Bytes queued.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Drops everything queued (buffers go back to `pool`).
    pub fn clear(&mut self, pool: &mut PacketPool) {
        for p in self.queue.drain(..) {
            pool.put(p);
        }
        self.bytes = 0;
    }

    /// Sends up to `max` queued datagrams to `dest` through `transport`
    /// without waiting. Sent buffers go back to `pool`. Returns `(datagrams,
    /// bytes)` sent; when the transport is full the rest stays queued (`Ok`
    /// with fewer sent).
    pub(crate) fn try_send(
        &mut self,
        transport: &dyn Transport,
        dest: SocketAddr,
        max: usize,
        pool: &mut PacketPool,
    ) -> io::Result<(usize, usize)> {
        let mut pkts = 0;
        let mut bytes = 0;
        while pkts < max && !self.queue.is_empty() {
            let want = (max - pkts).min(SEND_BATCH).min(self.queue.len());
            // An injected "socket full" takes the full branch without
            // clearing the socket's readiness, so nothing waits forever for
            // a writability edge that will never come.
            let Some(cap) = faults::limit(want) else {
                break;
            };
            // With injected faults `cap < want`: the call then returns fewer
            // than asked, exactly like a kernel's partial `sendmmsg` count.
            let n = transport.try_send(dest, &Transmits::new(&self.queue, cap))?;
            if n == 0 {
                break;
            }
            let n = n.min(cap);
            for p in self.queue.drain(..n) {
                bytes += p.len();
                self.bytes -= p.len();
                pool.put(p);
            }
            pkts += n;
        }
        Ok((pkts, bytes))
    }
}

impl PacketSink for SendBatch {
    fn push_packet(&mut self, p: Packet) {
        self.push(p);
    }
}

/// The datagrams a runtime hands to [`Transport::try_send`], oldest first:
/// all for one destination.
#[derive(Debug, Clone, Copy)]
pub struct Transmits<'a> {
    queue: &'a VecDeque<Packet>,
    n: usize,
}

impl<'a> Transmits<'a> {
    fn new(queue: &'a VecDeque<Packet>, n: usize) -> Transmits<'a> {
        Transmits {
            queue,
            n: n.min(queue.len()),
        }
    }

    /// How many datagrams.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Datagram `i`.
    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        if i < self.n {
            self.queue.get(i).map(Packet::as_slice)
        } else {
            None
        }
    }

    /// The datagrams in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.queue.range(..self.n).map(Packet::as_slice)
    }
}

/// Sends `datagrams` to `dest` on a tokio UDP socket without waiting
/// (`sendmmsg` on Linux, segmented where `offload` allows); how many went,
/// 0 when the socket buffer is full.
pub(crate) fn udp_try_send(
    sock: &UdpSocket,
    offload: &Offload,
    dest: SocketAddr,
    datagrams: &Transmits<'_>,
) -> io::Result<usize> {
    match sock.try_io(Interest::WRITABLE, || {
        udp_send_now(sock, offload, dest, datagrams)
    }) {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(e),
    }
}

#[cfg(target_os = "linux")]
fn udp_send_now(
    sock: &UdpSocket,
    offload: &Offload,
    dest: SocketAddr,
    datagrams: &Transmits<'_>,
) -> io::Result<usize> {
    // One header scratch per thread: many sessions share a listener's
    // socket, and none of them should allocate or lock per send.
    thread_local! {
        static SEND_SYS: std::cell::RefCell<linux::SendSys> = std::cell::RefCell::default();
    }
    SEND_SYS.with(|sys| match sys.try_borrow_mut() {
        Ok(mut sys) => send_on(&mut sys, sock, offload, dest, datagrams),
        // Re-entered on this thread (cannot happen: sendmmsg does not call
        // back); fall back to a scratch of its own.
        Err(_) => send_on(
            &mut linux::SendSys::default(),
            sock,
            offload,
            dest,
            datagrams,
        ),
    })
}

/// One `sendmmsg`, segmented while the socket allows it. When the kernel
/// refuses a segmented message with an error that means "no GSO on this
/// path" ([`linux::means_no_gso`]), GSO is turned off for the socket for
/// good and the same datagrams go again one per message in the same call.
/// Nothing is lost or sent twice: `sendmmsg` reports an error only when its
/// first message failed, so none of this call's datagrams left, and a
/// refused GSO message is refused whole (the kernel checks before it
/// queues anything).
#[cfg(target_os = "linux")]
fn send_on(
    sys: &mut linux::SendSys,
    sock: &UdpSocket,
    offload: &Offload,
    dest: SocketAddr,
    datagrams: &Transmits<'_>,
) -> io::Result<usize> {
    let gso = offload.gso.load(Ordering::Relaxed);
    match sys.send(
        sock,
        dest,
        datagrams.iter(),
        gso,
        gso && offload.rejects_gso(),
    ) {
        Ok(sent) => {
            if sent.gso_msgs > 0 {
                offload
                    .gso_sends
                    .fetch_add(sent.gso_msgs as u64, Ordering::Relaxed);
                offload
                    .gso_datagrams
                    .fetch_add(sent.gso_datagrams as u64, Ordering::Relaxed);
            }
            Ok(sent.datagrams)
        }
        Err((e, true)) if linux::means_no_gso(&e) => {
            // Several senders may see the refusal at once; count it once.
            if offload.gso.swap(false, Ordering::Relaxed) {
                offload.gso_fallbacks.fetch_add(1, Ordering::Relaxed);
            }
            sys.send(sock, dest, datagrams.iter(), false, false)
                .map(|sent| sent.datagrams)
                .map_err(|(e, _)| e)
        }
        Err((e, _)) => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn udp_send_now(
    sock: &UdpSocket,
    offload: &Offload,
    dest: SocketAddr,
    datagrams: &Transmits<'_>,
) -> io::Result<usize> {
    let _ = offload;
    let mut n = 0;
    for d in datagrams.iter() {
        match sock.try_send_to(d, dest) {
            Ok(_) => n += 1,
            Err(e) if n > 0 && e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(target_os = "linux")]
mod linux {
    //! `recvmmsg`/`sendmmsg` with preallocated headers. The header arrays hold
    //! raw pointers into the packet buffers; they are rebuilt before every
    //! call, so they never outlive or alias a buffer between calls.

    use std::io;
    use std::mem;
    use std::net::SocketAddr;
    use std::os::fd::AsRawFd;
    use std::ptr;

    use socket2::SockAddr;
    use tokio::net::UdpSocket;

    use crate::config::MTU_LIMIT;
    use crate::proto::packet::Packet;

    pub(super) struct RecvSys {
        hdrs: Vec<libc::mmsghdr>,
        iovs: Vec<libc::iovec>,
        names: Vec<libc::sockaddr_storage>,
    }

    // SAFETY: the raw pointers inside are only meaningful during a syscall
    // made through `&mut self`; between calls they are stale and unused.
    unsafe impl Send for RecvSys {}
    // SAFETY: `&RecvSys` gives no access to the pointers (every method that
    // touches them takes `&mut self`).
    unsafe impl Sync for RecvSys {}

    impl RecvSys {
        pub(super) fn new(n: usize) -> RecvSys {
            // SAFETY: all-zero bytes are valid for these plain C structs.
            let zero_hdr: libc::mmsghdr = unsafe { mem::zeroed() };
            // SAFETY: as above (an all-zero sockaddr_storage is AF_UNSPEC).
            let zero_name: libc::sockaddr_storage = unsafe { mem::zeroed() };
            RecvSys {
                hdrs: vec![zero_hdr; n],
                iovs: vec![
                    libc::iovec {
                        iov_base: ptr::null_mut(),
                        iov_len: 0
                    };
                    n
                ],
                names: vec![zero_name; n],
            }
        }

        pub(super) fn recvmmsg(
            &mut self,
            sock: &UdpSocket,
            pkts: &mut [Packet],
        ) -> io::Result<usize> {
            let n = pkts.len().min(self.hdrs.len());
            for (iov, p) in self.iovs.iter_mut().zip(pkts.iter_mut()).take(n) {
                *iov = libc::iovec {
                    iov_base: p.buf_mut().as_mut_ptr().cast(),
                    iov_len: MTU_LIMIT,
                };
            }
            // Element pointers come from one base pointer per array, taken
            // after the last write through the arrays, so no later borrow of
            // a whole array invalidates them before the kernel uses them.
            let iovs = self.iovs.as_mut_ptr();
            let names = self.names.as_mut_ptr();
            for (i, h) in self.hdrs.iter_mut().enumerate().take(n) {
                h.msg_hdr.msg_name = names.wrapping_add(i).cast();
                h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_hdr.msg_iov = iovs.wrapping_add(i);
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_control = ptr::null_mut();
                h.msg_hdr.msg_controllen = 0;
                h.msg_hdr.msg_flags = 0;
                h.msg_len = 0;
            }
            // SAFETY: every header points at a live iovec, sockaddr_storage and
            // 1500-byte buffer owned by `self`/`pkts`, all borrowed mutably for
            // the duration of the call; `n` does not exceed any array.
            let r = unsafe {
                libc::recvmmsg(
                    sock.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    ptr::null_mut(),
                )
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(r as usize)
        }

        /// Length and source of message `i` of the last call.
        pub(super) fn result(&self, i: usize) -> (usize, Option<SocketAddr>) {
            let h = &self.hdrs[i];
            let len = (h.msg_len as usize).min(MTU_LIMIT);
            (len, sockaddr(&self.names[i], h.msg_hdr.msg_namelen))
        }
    }

    /// `SOL_UDP` options (Linux UAPI `linux/udp.h`; stable numbers, given
    /// here because not every libc target of the crate exports them).
    const UDP_SEGMENT: libc::c_int = 103;
    const UDP_GRO: libc::c_int = 104;

    /// Control-message space for one message: room for the one `u16`
    /// (`UDP_SEGMENT`) or `int` (`UDP_GRO`) we use, and on receive for an
    /// option the caller may have enabled on a socket it gave us. The
    /// kernel puts `UDP_GRO` first, so it always fits.
    const CTRL_LEN: usize = 64;

    #[repr(C, align(8))]
    #[derive(Clone, Copy)]
    pub(super) struct Ctrl([u8; CTRL_LEN]);

    impl Default for Ctrl {
        fn default() -> Ctrl {
            Ctrl([0; CTRL_LEN])
        }
    }

    fn int_opt(sock: &UdpSocket, name: libc::c_int, value: Option<libc::c_int>) -> io::Result<()> {
        let fd = sock.as_raw_fd();
        let mut v: libc::c_int = value.unwrap_or(0);
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` are live locals of the sizes passed; the
        // kernel reads (setsockopt) or writes (getsockopt) at most `len`
        // bytes of `v`.
        let r = unsafe {
            match value {
                Some(_) => libc::setsockopt(fd, libc::SOL_UDP, name, ptr::addr_of!(v).cast(), len),
                None => libc::getsockopt(
                    fd,
                    libc::SOL_UDP,
                    name,
                    ptr::addr_of_mut!(v).cast(),
                    &mut len,
                ),
            }
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Whether the kernel knows `UDP_SEGMENT` (4.18+; `ENOPROTOOPT`
    /// before). Not a guarantee that the route's device can segment: that
    /// shows at the first send ([`means_no_gso`]).
    pub(super) fn gso_supported(sock: &UdpSocket) -> bool {
        int_opt(sock, UDP_SEGMENT, None).is_ok()
    }

    /// `UDP_GRO` on or off (5.0+; `ENOPROTOOPT` before).
    pub(super) fn set_gro(sock: &UdpSocket, on: bool) -> io::Result<()> {
        int_opt(sock, UDP_GRO, Some(libc::c_int::from(on)))
    }

    /// Errors from a segmented send that mean this socket's path cannot do
    /// GSO, rather than that the datagrams are bad: `EIO` (the device has no
    /// checksum offload, or an IPsec policy applies: `udp_send_skb`),
    /// `EINVAL` (a segment plus headers exceeds the route's MTU, or UDP
    /// checksums are off), and `EOPNOTSUPP`/`ENOPROTOOPT` from emulated
    /// kernels that parse but do not implement the option. Only consulted
    /// when the refused message was a segmented one; a plain datagram
    /// with a real problem fails again on the plain resend, so nothing is
    /// hidden.
    pub(super) fn means_no_gso(e: &io::Error) -> bool {
        matches!(
            e.raw_os_error(),
            Some(libc::EIO | libc::EINVAL | libc::EOPNOTSUPP | libc::ENOPROTOOPT)
        )
    }

    /// Writes a `UDP_SEGMENT` control message for segments of `size`
    /// bytes into `c`; the control length to pass.
    fn segment_cmsg(c: &mut Ctrl, size: u16) -> usize {
        // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
        let mut mh: libc::msghdr = unsafe { mem::zeroed() };
        mh.msg_control = c.0.as_mut_ptr().cast();
        mh.msg_controllen = CTRL_LEN as _;
        // SAFETY: `mh` describes `c`, 8-aligned and CTRL_LEN (64) bytes,
        // more than CMSG_SPACE(2) (24); CMSG_FIRSTHDR returns its start
        // (non-null as the buffer holds a header), and the header and its
        // 2 data bytes lie inside `c`, which we borrow mutably.
        unsafe {
            let cm = libc::CMSG_FIRSTHDR(&mh);
            if cm.is_null() {
                return 0;
            }
            (*cm).cmsg_level = libc::SOL_UDP;
            (*cm).cmsg_type = UDP_SEGMENT;
            (*cm).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as libc::c_uint) as _;
            ptr::write_unaligned(libc::CMSG_DATA(cm).cast::<u16>(), size);
            libc::CMSG_SPACE(mem::size_of::<u16>() as libc::c_uint) as usize
        }
    }

    /// A run of datagrams sent as one message: `count` iovecs from `start`,
    /// all `size` bytes but possibly the last, which may be shorter.
    #[derive(Clone, Copy)]
    struct Group {
        start: usize,
        count: usize,
        size: usize,
        /// Bytes of `UDP_SEGMENT` control written for it (segmented only).
        ctrl_len: usize,
    }

    /// What one [`SendSys::send`] moved.
    #[derive(Default)]
    pub(super) struct Sent {
        pub(super) datagrams: usize,
        pub(super) gso_msgs: usize,
        pub(super) gso_datagrams: usize,
    }

    /// Header, iovec and control scratch for `sendmmsg`, reused call after
    /// call (one per thread), so a send allocates nothing once warm.
    #[derive(Default)]
    pub(super) struct SendSys {
        hdrs: Vec<libc::mmsghdr>,
        iovs: Vec<libc::iovec>,
        groups: Vec<Group>,
        ctrl: Vec<Ctrl>,
    }

    impl std::fmt::Debug for SendSys {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("SendSys")
        }
    }

    // SAFETY: as for RecvSys.
    unsafe impl Send for SendSys {}
    // SAFETY: as for RecvSys.
    unsafe impl Sync for SendSys {}

    impl SendSys {
        /// One `sendmmsg` of `pkts` to `dest`. With `gso`, each run of
        /// consecutive equal-size datagrams (the last may be shorter; at
        /// most 64 and 65507 bytes) is one message with a `UDP_SEGMENT`
        /// cmsg: the kernel cuts it back into exactly those datagrams, so
        /// the wire does not change. A lone datagram is sent without the
        /// cmsg, as the plain path sends it. `reject_gso` (fault hook):
        /// the first segmented message fails with `EIO` without reaching
        /// the kernel, after the messages in front of it are sent.
        ///
        /// Returns the datagrams sent from the front, or the error and
        /// whether the message that failed (always the first: `sendmmsg`
        /// otherwise reports a partial count) was a segmented one.
        pub(super) fn send<'a>(
            &mut self,
            sock: &UdpSocket,
            dest: SocketAddr,
            pkts: impl Iterator<Item = &'a [u8]>,
            gso: bool,
            reject_gso: bool,
        ) -> Result<Sent, (io::Error, bool)> {
            let name = SockAddr::from(dest);
            self.hdrs.clear();
            self.iovs.clear();
            self.groups.clear();
            for s in pkts {
                self.iovs.push(libc::iovec {
                    iov_base: s.as_ptr() as *mut libc::c_void,
                    iov_len: s.len(),
                });
            }
            let n = self.iovs.len();
            if n == 0 {
                return Ok(Sent::default());
            }
            let mut i = 0;
            while i < n {
                let size = self.iovs[i].iov_len;
                let (mut count, mut bytes) = (1, size);
                // An empty datagram has no segment size; a segment must fit
                // the cmsg's u16 (it always does: at most 1500 bytes).
                if gso && size > 0 && size <= usize::from(u16::MAX) {
                    while i + count < n && count < super::GSO_MAX_SEGMENTS {
                        let len = self.iovs[i + count].iov_len;
                        if len == 0 || len > size || bytes + len > super::GSO_MAX_BYTES {
                            break;
                        }
                        count += 1;
                        bytes += len;
                        if len < size {
                            // Only the last segment may be short.
                            break;
                        }
                    }
                }
                self.groups.push(Group {
                    start: i,
                    count,
                    size,
                    ctrl_len: 0,
                });
                i += count;
            }
            let mut msgs = self.groups.len();
            if reject_gso {
                if let Some(first) = self.groups.iter().position(|g| g.count > 1) {
                    if first == 0 {
                        return Err((io::Error::from_raw_os_error(libc::EIO), true));
                    }
                    msgs = first;
                }
            }
            if self.ctrl.len() < msgs {
                self.ctrl.resize(msgs, Ctrl::default());
            }
            for (g, c) in self.groups.iter_mut().zip(self.ctrl.iter_mut()).take(msgs) {
                if g.count > 1 {
                    // `size` fits u16: checked when the group was formed.
                    g.ctrl_len = segment_cmsg(c, g.size as u16);
                    if g.ctrl_len == 0 {
                        // Never: the buffer holds a header. But without the
                        // cmsg the kernel would send one long datagram, so
                        // refuse the way a kernel without GSO does.
                        return Err((io::Error::from_raw_os_error(libc::EINVAL), true));
                    }
                }
            }
            // One base pointer per array, taken after the last write (see
            // RecvSys).
            let iovs = self.iovs.as_mut_ptr();
            let ctrl = self.ctrl.as_mut_ptr();
            for (k, g) in self.groups.iter().enumerate().take(msgs) {
                // SAFETY: zeroed mmsghdr is valid; pointers set below.
                let mut h: libc::mmsghdr = unsafe { mem::zeroed() };
                h.msg_hdr.msg_name = name.as_ptr() as *mut libc::c_void;
                h.msg_hdr.msg_namelen = name.len();
                h.msg_hdr.msg_iov = iovs.wrapping_add(g.start);
                h.msg_hdr.msg_iovlen = g.count as _;
                if g.count > 1 {
                    h.msg_hdr.msg_control = ctrl.wrapping_add(k).cast();
                    h.msg_hdr.msg_controllen = g.ctrl_len as _;
                }
                self.hdrs.push(h);
            }
            // SAFETY: headers point at `name`, at iovecs describing packet
            // bytes and at control buffers in `self.ctrl`, all alive and
            // unmoved until the call returns (no push after the base
            // pointers were taken); the kernel only reads them (and writes
            // msg_len). `msgs` does not exceed `self.hdrs.len()`.
            let r = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    msgs as libc::c_uint,
                    0,
                )
            };
            if r < 0 {
                let first_gso = self.groups.first().is_some_and(|g| g.count > 1);
                return Err((io::Error::last_os_error(), first_gso));
            }
            let mut sent = Sent::default();
            for g in self.groups.iter().take(r as usize) {
                sent.datagrams += g.count;
                if g.count > 1 {
                    sent.gso_msgs += 1;
                    sent.gso_datagrams += g.count;
                }
            }
            Ok(sent)
        }
    }

    /// `recvmmsg` into 64 KiB buffers with room for the `UDP_GRO` cmsg.
    pub(super) struct GroSys {
        hdrs: Vec<libc::mmsghdr>,
        iovs: Vec<libc::iovec>,
        names: Vec<libc::sockaddr_storage>,
        ctrl: Vec<Ctrl>,
    }

    // SAFETY: as for RecvSys.
    unsafe impl Send for GroSys {}
    // SAFETY: as for RecvSys.
    unsafe impl Sync for GroSys {}

    impl GroSys {
        pub(super) fn new(n: usize) -> GroSys {
            // SAFETY: all-zero bytes are valid for these plain C structs.
            let zero_hdr: libc::mmsghdr = unsafe { mem::zeroed() };
            // SAFETY: as above.
            let zero_name: libc::sockaddr_storage = unsafe { mem::zeroed() };
            GroSys {
                hdrs: vec![zero_hdr; n],
                iovs: vec![
                    libc::iovec {
                        iov_base: ptr::null_mut(),
                        iov_len: 0
                    };
                    n
                ],
                names: vec![zero_name; n],
                ctrl: vec![Ctrl::default(); n],
            }
        }

        /// Reads up to `hdrs.len()` messages, message `i` into
        /// `arena[i * GRO_BUF..][..GRO_BUF]`.
        pub(super) fn recvmmsg(&mut self, sock: &UdpSocket, arena: &mut [u8]) -> io::Result<usize> {
            let n = self.hdrs.len().min(arena.len() / super::GRO_BUF);
            for (iov, chunk) in self
                .iovs
                .iter_mut()
                .zip(arena.chunks_exact_mut(super::GRO_BUF))
                .take(n)
            {
                *iov = libc::iovec {
                    iov_base: chunk.as_mut_ptr().cast(),
                    iov_len: chunk.len(),
                };
            }
            let iovs = self.iovs.as_mut_ptr();
            let names = self.names.as_mut_ptr();
            let ctrl = self.ctrl.as_mut_ptr();
            for (i, h) in self.hdrs.iter_mut().enumerate().take(n) {
                h.msg_hdr.msg_name = names.wrapping_add(i).cast();
                h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_hdr.msg_iov = iovs.wrapping_add(i);
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_control = ctrl.wrapping_add(i).cast();
                h.msg_hdr.msg_controllen = CTRL_LEN as _;
                h.msg_hdr.msg_flags = 0;
                h.msg_len = 0;
            }
            // SAFETY: every header points at a live iovec (describing a
            // GRO_BUF chunk of `arena`), sockaddr_storage and CTRL_LEN
            // control buffer, all owned by `self`/`arena` and borrowed
            // mutably for the call; `n` does not exceed any array.
            let r = unsafe {
                libc::recvmmsg(
                    sock.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    ptr::null_mut(),
                )
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(r as usize)
        }

        /// Message `i` of the last call: bytes, the `UDP_GRO` segment size
        /// if the kernel coalesced it, and the source.
        pub(super) fn result(&self, i: usize) -> (usize, Option<usize>, Option<SocketAddr>) {
            let h = &self.hdrs[i];
            let len = (h.msg_len as usize).min(super::GRO_BUF);
            let mut seg = None;
            // A fresh msghdr over our own control buffer and the length the
            // kernel wrote, rather than the stale pointers in `h`.
            // SAFETY: all-zero is a valid msghdr.
            let mut mh: libc::msghdr = unsafe { mem::zeroed() };
            mh.msg_control = self.ctrl[i].0.as_ptr() as *mut libc::c_void;
            // `msg_controllen` is a usize on glibc, a socklen_t on musl.
            #[allow(clippy::unnecessary_cast)]
            let filled = (h.msg_hdr.msg_controllen as usize).min(CTRL_LEN);
            mh.msg_controllen = filled as _;
            // SAFETY: `mh` describes `self.ctrl[i]` (8-aligned, CTRL_LEN
            // bytes) up to the length the kernel filled; CMSG_FIRSTHDR and
            // CMSG_NXTHDR return headers inside it or null, and each read
            // stays within the header's `cmsg_len`, which they check lies
            // within `msg_controllen`. Nothing is written.
            unsafe {
                let mut cm = libc::CMSG_FIRSTHDR(&mh);
                while !cm.is_null() {
                    let c = ptr::read_unaligned(cm);
                    let need = libc::CMSG_LEN(mem::size_of::<libc::c_int>() as libc::c_uint);
                    if c.cmsg_level == libc::SOL_UDP
                        && c.cmsg_type == UDP_GRO
                        && c.cmsg_len as usize >= need as usize
                    {
                        let v = ptr::read_unaligned(libc::CMSG_DATA(cm).cast::<libc::c_int>());
                        seg = usize::try_from(v).ok();
                    }
                    cm = libc::CMSG_NXTHDR(&mh, cm);
                }
            }
            (len, seg, sockaddr(&self.names[i], h.msg_hdr.msg_namelen))
        }
    }

    /// The address the kernel wrote into `name` (`len` bytes).
    fn sockaddr(name: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
        let mut storage = socket2::SockAddrStorage::zeroed();
        // SAFETY: SockAddrStorage is a sockaddr_storage (socket2's own
        // contract for `view_as`); the kernel wrote a valid address of
        // `len` bytes into `name`; SockAddr only reads within it.
        let addr = unsafe {
            *storage.view_as::<libc::sockaddr_storage>() = *name;
            SockAddr::new(storage, len)
        };
        addr.as_socket()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MTU_LIMIT;
    use std::task::Poll;

    #[tokio::test]
    async fn batch_round_trip_over_loopback() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b_addr = b.local_addr().unwrap();
        let a_addr = a.local_addr().unwrap();
        let ta = crate::transport::UdpTransport::new(a);
        let plain = Offload::new(&b, UdpOffload::Off);
        let mut pool = PacketPool::new(8);
        let mut out = SendBatch::new();
        for i in 0..100u8 {
            let mut p = pool.get();
            p.set_len(usize::from(i) + 1);
            p.as_mut_slice().fill(i);
            out.push(p);
        }
        let total: usize = (1..=100).sum();
        assert_eq!(out.bytes(), total);
        let mut sent = (0, 0);
        while !out.is_empty() {
            let (n, bytes) = out.try_send(&ta, b_addr, usize::MAX, &mut pool).unwrap();
            sent.0 += n;
            sent.1 += bytes;
            if n == 0 {
                ta.socket().writable().await.unwrap();
            }
        }
        assert_eq!(sent, (100, total));
        let mut rx = RecvBatch::new(16);
        let mut got = Vec::new();
        while got.len() < 100 {
            let n = std::future::poll_fn(|cx| rx.poll_recv(&b, &plain, cx))
                .await
                .unwrap();
            assert!((1..=16).contains(&n));
            for i in 0..n {
                let (bytes, from) = rx.get_mut(i).unwrap();
                assert_eq!(from, a_addr);
                got.push(bytes.to_vec());
            }
            assert!(rx.get_mut(n).is_none());
        }
        for (i, d) in got.iter().enumerate() {
            assert_eq!(d.len(), i + 1);
            assert!(d.iter().all(|&x| usize::from(x) == i));
        }
        // Nothing left: a poll must be pending, not return stale data.
        let pending = std::future::poll_fn(|cx| Poll::Ready(rx.poll_recv(&b, &plain, cx))).await;
        assert!(pending.is_pending());
    }

    #[tokio::test]
    async fn oversized_datagrams_are_truncated_to_the_limit() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        a.send_to(&[9u8; 2000], b.local_addr().unwrap())
            .await
            .unwrap();
        let mut rx = RecvBatch::new(4);
        let plain = Offload::new(&b, UdpOffload::Off);
        let n = std::future::poll_fn(|cx| rx.poll_recv(&b, &plain, cx))
            .await
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(rx.get_mut(0).unwrap().0.len(), MTU_LIMIT);
    }

    /// Offload tests: every datagram carries its index, its length and a
    /// CRC-32 of the rest, so the receiver checks boundaries and bytes
    /// without trusting any of our code.
    #[cfg(target_os = "linux")]
    mod offload {
        use super::*;
        use crate::transport::{Transport, UdpTransport};
        use std::time::Duration;

        fn datagram(i: u32, len: usize) -> Vec<u8> {
            assert!(len >= 10);
            let mut d = vec![0u8; len];
            d[..4].copy_from_slice(&i.to_le_bytes());
            d[4..6].copy_from_slice(&(len as u16).to_le_bytes());
            for (k, b) in d[6..len - 4].iter_mut().enumerate() {
                *b = (i as usize).wrapping_mul(131).wrapping_add(k * 7) as u8;
            }
            let crc = crc32fast::hash(&d[..len - 4]);
            d[len - 4..].copy_from_slice(&crc.to_le_bytes());
            d
        }

        /// The index of a well-formed datagram, `None` if it was cut,
        /// merged or altered.
        fn check(d: &[u8]) -> Option<u32> {
            if d.len() < 10 || usize::from(u16::from_le_bytes([d[4], d[5]])) != d.len() {
                return None;
            }
            let (body, crc) = d.split_at(d.len() - 4);
            (crc32fast::hash(body).to_le_bytes() == crc)
                .then(|| u32::from_le_bytes([d[0], d[1], d[2], d[3]]))
        }

        /// Runs of equal sizes (full 64-segment groups, groups cut by the
        /// 64 KiB limit, short last segments, longer datagrams that must
        /// start a new group) and pseudo-random mixed sizes.
        fn sizes() -> Vec<usize> {
            let mut v = vec![1000; 64];
            v.extend([1472; 64]);
            v.extend([1400; 10]);
            v.push(700);
            v.extend([1400; 3]);
            v.extend([500; 5]);
            v.extend([600, 600, 10]);
            v.extend([10; 70]);
            let mut x = 12345u32;
            for _ in 0..150 {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let len = 10 + (x >> 8) as usize % 1463;
                let reps = 1 + (x >> 24) as usize % 4;
                v.extend(std::iter::repeat_n(len, reps));
            }
            v
        }

        async fn pair() -> (UdpTransport, UdpSocket) {
            let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            socket2::SockRef::from(&b)
                .set_recv_buffer_size(1 << 20)
                .unwrap();
            (UdpTransport::new(a), b)
        }

        /// Queues `sizes` 64 at a time (one `try_send` call's worth) and
        /// drains each burst before the next, so the receiver's buffer never
        /// has to hold more than one burst.
        async fn send_burst(ta: &UdpTransport, to: SocketAddr, first: u32, sizes: &[usize]) {
            let mut pool = PacketPool::new(64);
            let mut out = SendBatch::new();
            for (k, &len) in sizes.iter().enumerate() {
                let mut p = pool.get();
                p.set_len(len);
                p.as_mut_slice()
                    .copy_from_slice(&datagram(first + k as u32, len));
                out.push(p);
            }
            let mut sent = 0;
            while !out.is_empty() {
                let (n, _) = out.try_send(ta, to, usize::MAX, &mut pool).unwrap();
                sent += n;
                if n == 0 {
                    ta.writable().await.unwrap();
                }
            }
            assert_eq!(sent, sizes.len());
        }

        /// Sends every size through `ta` and reads each datagram with a
        /// plain `recv_from` into a 64 KiB buffer, so a merged or cut
        /// datagram would show.
        async fn send_and_check_plain(ta: &UdpTransport, b: &UdpSocket) {
            let to = b.local_addr().unwrap();
            let sizes = sizes();
            let mut buf = vec![0u8; 1 << 16];
            let mut next = 0u32;
            for chunk in sizes.chunks(64) {
                send_burst(ta, to, next, chunk).await;
                for &len in chunk {
                    let (n, _) =
                        tokio::time::timeout(Duration::from_secs(10), b.recv_from(&mut buf))
                            .await
                            .expect("a datagram went missing")
                            .unwrap();
                    assert_eq!(n, len, "datagram {next}: length");
                    assert_eq!(check(&buf[..n]), Some(next), "datagram {next}: bytes");
                    next += 1;
                }
            }
            assert_eq!(next as usize, sizes.len());
        }

        /// Whether the kernel has UDP GSO; if not, says why the test
        /// checks nothing.
        fn gso_or_skip(t: &UdpTransport, test: &str) -> bool {
            if t.offload_stats().gso {
                return true;
            }
            assert!(
                !linux::gso_supported(t.socket()),
                "{test}: the kernel has UDP_SEGMENT but the transport did not enable it"
            );
            eprintln!("{test}: SKIPPED: this kernel lacks UDP_SEGMENT (Linux < 4.18)");
            false
        }

        #[tokio::test]
        async fn gso_burst_arrives_as_the_same_datagrams() {
            let (ta, b) = pair().await;
            if !gso_or_skip(&ta, "gso_burst_arrives_as_the_same_datagrams") {
                return;
            }
            send_and_check_plain(&ta, &b).await;
            let st = ta.offload_stats();
            assert!(st.gso, "{st:?}");
            assert_eq!(st.gso_fallbacks, 0, "{st:?}");
            assert!(
                st.gso_sends > 0 && st.gso_datagrams > st.gso_sends,
                "{st:?}"
            );
        }

        #[tokio::test]
        async fn gso_groups_are_cut_at_64_segments_and_64_kib() {
            let (ta, b) = pair().await;
            if !gso_or_skip(&ta, "gso_groups_are_cut_at_64_segments_and_64_kib") {
                return;
            }
            let to = b.local_addr().unwrap();
            // 64 x 1000 B: one message. 64 x 1472 B: 44 (64768 B) + 20.
            send_burst(&ta, to, 0, &[1000; 64]).await;
            let st = ta.offload_stats();
            assert_eq!((st.gso_sends, st.gso_datagrams), (1, 64), "{st:?}");
            send_burst(&ta, to, 64, &[1472; 64]).await;
            let st = ta.offload_stats();
            assert_eq!((st.gso_sends, st.gso_datagrams), (3, 128), "{st:?}");
            let mut buf = vec![0u8; 1 << 16];
            for i in 0..128u32 {
                let (n, _) = b.recv_from(&mut buf).await.unwrap();
                assert_eq!(n, if i < 64 { 1000 } else { 1472 });
                assert_eq!(check(&buf[..n]), Some(i));
            }
        }

        #[tokio::test]
        async fn refused_gso_falls_back_without_loss_or_duplicates() {
            let (ta, b) = pair().await;
            if !gso_or_skip(&ta, "refused_gso_falls_back_without_loss_or_duplicates") {
                return;
            }
            ta.offload.reject_gso.store(true, Ordering::Relaxed);
            // Starts with lone datagrams, so the first refused call has
            // sent some messages before the segmented one (a partial
            // count), and the next call meets the refusal first.
            let to = b.local_addr().unwrap();
            let lead = [100, 200, 300, 400, 400, 400];
            send_burst(&ta, to, 0, &lead).await;
            let mut buf = vec![0u8; 1 << 16];
            for (i, &len) in lead.iter().enumerate() {
                let (n, _) = b.recv_from(&mut buf).await.unwrap();
                assert_eq!((n, check(&buf[..n])), (len, Some(i as u32)));
            }
            let st = ta.offload_stats();
            assert!(!st.gso, "{st:?}");
            assert_eq!((st.gso_fallbacks, st.gso_sends), (1, 0), "{st:?}");
            // And from now on everything goes plain, exactly as sent.
            send_and_check_plain(&ta, &b).await;
            let st = ta.offload_stats();
            assert_eq!((st.gso_fallbacks, st.gso_sends), (1, 0), "{st:?}");
        }

        #[tokio::test]
        async fn offload_off_never_segments() {
            let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let ta = UdpTransport::with_offload(a, UdpOffload::Off);
            let (_, b) = pair().await;
            send_and_check_plain(&ta, &b).await;
            assert_eq!(ta.offload_stats(), OffloadStats::default());
        }

        #[tokio::test]
        async fn gro_batch_splits_coalesced_runs_into_the_datagrams_sent() {
            let (ta, b) = pair().await;
            if !gso_or_skip(
                &ta,
                "gro_batch_splits_coalesced_runs_into_the_datagrams_sent",
            ) {
                return;
            }
            let rt = UdpTransport::new(b);
            let to = rt.local_addr().unwrap();
            let from = ta.local_addr().unwrap();
            let mut rx = RecvBatch::with_gro(16, 4);
            let sizes = sizes();
            let mut next = 0u32;
            for chunk in sizes.chunks(64) {
                send_burst(&ta, to, next, chunk).await;
                let mut got = 0;
                while got < chunk.len() {
                    let n = tokio::time::timeout(
                        Duration::from_secs(10),
                        std::future::poll_fn(|cx| rt.poll_recv(cx, &mut rx)),
                    )
                    .await
                    .expect("a datagram went missing")
                    .unwrap();
                    for i in 0..n {
                        let (d, src) = rx.get_mut(i).unwrap();
                        assert_eq!(src, from);
                        assert_eq!(d.len(), chunk[got], "datagram {next}: length");
                        assert_eq!(check(d), Some(next), "datagram {next}: bytes");
                        next += 1;
                        got += 1;
                    }
                    assert!(rx.get_mut(n).is_none());
                }
            }
            let st = rt.offload_stats();
            if !st.gro {
                eprintln!("gro test: SKIPPED the coalescing check: this kernel lacks UDP_GRO");
                return;
            }
            // Loopback hands a segmented send up whole to a GRO socket.
            assert!(
                st.gro_buffers > 0 && st.gro_datagrams > st.gro_buffers,
                "{st:?}"
            );
        }
    }
}
