//! Batched datagram receive and send.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::config::{MAX_PACKET_SIZE, MTU_LIMIT};
use crate::proto::codec::PacketSink;
use crate::proto::packet::{Packet, PacketPool};
use crate::transport::Transport;

/// Most datagrams moved by one `sendmmsg` call (kcp-go's `maxBatchSize`).
const SEND_BATCH: usize = 64;

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
    }

    /// Appends one received datagram (a custom transport's receive path):
    /// its bytes are copied, truncated to
    /// [`MTU_LIMIT`] as a UDP socket would. False, and
    /// nothing is taken, when the batch is full.
    pub fn push(&mut self, data: &[u8], from: SocketAddr) -> bool {
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
        let addr = *self.addrs.get(i)?;
        Some((self.pkts.get_mut(i)?.as_mut_slice(), addr))
    }

    /// Waits until the socket is readable and reads as many datagrams as are
    /// queued, up to the batch size. Returns how many were read (at least 1).
    pub(crate) fn poll_recv(
        &mut self,
        sock: &UdpSocket,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        self.count = 0;
        loop {
            match sock.poll_recv_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
            match sock.try_io(Interest::READABLE, || self.recv_now(sock)) {
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
    fn recv_now(&mut self, sock: &UdpSocket) -> io::Result<usize> {
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

    #[cfg(not(target_os = "linux"))]
    fn recv_now(&mut self, sock: &UdpSocket) -> io::Result<usize> {
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
/// (`sendmmsg` on Linux); how many went, 0 when the socket buffer is full.
pub(crate) fn udp_try_send(
    sock: &UdpSocket,
    dest: SocketAddr,
    datagrams: &Transmits<'_>,
) -> io::Result<usize> {
    match sock.try_io(Interest::WRITABLE, || udp_send_now(sock, dest, datagrams)) {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(e),
    }
}

#[cfg(target_os = "linux")]
fn udp_send_now(
    sock: &UdpSocket,
    dest: SocketAddr,
    datagrams: &Transmits<'_>,
) -> io::Result<usize> {
    // One header scratch per thread: many sessions share a listener's
    // socket, and none of them should allocate or lock per send.
    thread_local! {
        static SEND_SYS: std::cell::RefCell<linux::SendSys> = std::cell::RefCell::default();
    }
    SEND_SYS.with(|sys| match sys.try_borrow_mut() {
        Ok(mut sys) => sys.sendmmsg(sock, dest, datagrams.iter()),
        // Re-entered on this thread (cannot happen: sendmmsg does not call
        // back); fall back to a scratch of its own.
        Err(_) => linux::SendSys::default().sendmmsg(sock, dest, datagrams.iter()),
    })
}

#[cfg(not(target_os = "linux"))]
fn udp_send_now(
    sock: &UdpSocket,
    dest: SocketAddr,
    datagrams: &Transmits<'_>,
) -> io::Result<usize> {
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
            let mut storage = socket2::SockAddrStorage::zeroed();
            // SAFETY: SockAddrStorage is a sockaddr_storage (socket2's own
            // contract for `view_as`); the kernel wrote a valid address of
            // `msg_namelen` bytes into ours; SockAddr only reads within it.
            let addr = unsafe {
                *storage.view_as::<libc::sockaddr_storage>() = self.names[i];
                SockAddr::new(storage, h.msg_hdr.msg_namelen)
            };
            (len, addr.as_socket())
        }
    }

    #[derive(Default)]
    pub(super) struct SendSys {
        hdrs: Vec<libc::mmsghdr>,
        iovs: Vec<libc::iovec>,
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
        pub(super) fn sendmmsg<'a>(
            &mut self,
            sock: &UdpSocket,
            dest: SocketAddr,
            pkts: impl Iterator<Item = &'a [u8]>,
        ) -> io::Result<usize> {
            let name = SockAddr::from(dest);
            self.hdrs.clear();
            self.iovs.clear();
            for s in pkts {
                self.iovs.push(libc::iovec {
                    iov_base: s.as_ptr() as *mut libc::c_void,
                    iov_len: s.len(),
                });
            }
            let n = self.iovs.len();
            if n == 0 {
                return Ok(0);
            }
            // One base pointer, taken after the last push (see RecvSys).
            let iovs = self.iovs.as_mut_ptr();
            for i in 0..n {
                // SAFETY: zeroed mmsghdr is valid; pointers set below.
                let mut h: libc::mmsghdr = unsafe { mem::zeroed() };
                h.msg_hdr.msg_name = name.as_ptr() as *mut libc::c_void;
                h.msg_hdr.msg_namelen = name.len();
                h.msg_hdr.msg_iov = iovs.wrapping_add(i);
                h.msg_hdr.msg_iovlen = 1;
                self.hdrs.push(h);
            }
            // SAFETY: headers point at `name` and at iovecs describing packet
            // bytes, all alive and unmoved until the call returns; the kernel
            // only reads them (and writes msg_len).
            let r = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    0,
                )
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(r as usize)
        }
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
            let n = std::future::poll_fn(|cx| rx.poll_recv(&b, cx))
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
        let pending = std::future::poll_fn(|cx| Poll::Ready(rx.poll_recv(&b, cx))).await;
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
        let n = std::future::poll_fn(|cx| rx.poll_recv(&b, cx))
            .await
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(rx.get_mut(0).unwrap().0.len(), MTU_LIMIT);
    }
}
