//! UDP I/O: batched receive and send, the packet buffer pool, socket options
//! and the millisecond clock handed to the pure layers.
//!
//! On Linux datagrams are moved with `recvmmsg`/`sendmmsg` inside tokio's
//! [`UdpSocket::try_io`](tokio::net::UdpSocket::try_io), like kcp-go's
//! `ReadBatch`/`WriteBatch` (§5.8); elsewhere a loop of `try_recv_from` /
//! `try_send_to` does the same job. Every buffer is [`MTU_LIMIT`] (1500)
//! bytes, what a kcp-go v5.6 peer sends at most; a longer datagram received
//! is truncated by the kernel and then fails its check (§1.9). Nothing longer
//! than [`MAX_PACKET_SIZE`] (1472) is sent: kcp-go v5.7 reads into 1472-byte
//! buffers (§12).

// recvmmsg/sendmmsg through libc: the only `unsafe` in io.
#[allow(unsafe_code)]
mod batch;
mod pool;

use std::io;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Instant;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::UdpSocket;

/// Send-path fault injection for tests (feature `testing`).
#[cfg(feature = "testing")]
pub use batch::faults;
pub(crate) use batch::udp_try_send;
pub use batch::{RecvBatch, SendBatch, Transmits};
pub use pool::{Packet, PacketPool};

pub use crate::config::{MAX_PACKET_SIZE, MTU_LIMIT};

/// Milliseconds since the first call in this process, truncated to u32 like
/// kcp-go's `currentMs` (§1.6). Only differences of it are ever used.
pub fn now_ms() -> u32 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    epoch.elapsed().as_millis() as u32
}

/// Socket options kcp-go exposes (`SetDSCP`, `SetReadBuffer`, `SetWriteBuffer`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SocketOptions {
    /// DSCP (6 bits); IPv4 TOS and IPv6 traffic class = dscp << 2 (§6.3, §12).
    pub dscp: Option<u8>,
    /// `SO_RCVBUF`.
    pub recv_buffer: Option<usize>,
    /// `SO_SNDBUF`.
    pub send_buffer: Option<usize>,
}

/// Binds a non-blocking UDP socket and applies `opts`.
pub fn bind(addr: SocketAddr, opts: &SocketOptions) -> io::Result<UdpSocket> {
    let socket = bind_socket2(addr)?;
    socket.set_nonblocking(true)?;
    let std: std::net::UdpSocket = socket.into();
    let socket = UdpSocket::from_std(std)?;
    apply(&socket, opts)?;
    Ok(socket)
}

/// Binds a blocking std UDP socket and applies `opts` (the sockets of
/// [`crate::blocking`]).
pub(crate) fn bind_std(addr: SocketAddr, opts: &SocketOptions) -> io::Result<std::net::UdpSocket> {
    let socket = bind_socket2(addr)?;
    apply_ref(SockRef::from(&socket), opts)?;
    Ok(socket.into())
}

fn bind_socket2(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Dual-stack where the OS allows it, like Go's "udp" network on "[::]".
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Applies `opts` to an existing socket.
pub fn apply(socket: &UdpSocket, opts: &SocketOptions) -> io::Result<()> {
    apply_ref(SockRef::from(socket), opts)
}

fn apply_ref(sock: SockRef<'_>, opts: &SocketOptions) -> io::Result<()> {
    if let Some(n) = opts.recv_buffer {
        sock.set_recv_buffer_size(n)?;
    }
    if let Some(n) = opts.send_buffer {
        sock.set_send_buffer_size(n)?;
    }
    if let Some(dscp) = opts.dscp {
        dscp_ref(sock, dscp)?;
    }
    Ok(())
}

/// `SO_RCVBUF`.
pub fn set_recv_buffer(socket: &UdpSocket, bytes: usize) -> io::Result<()> {
    SockRef::from(socket).set_recv_buffer_size(bytes)
}

/// `SO_SNDBUF`.
pub fn set_send_buffer(socket: &UdpSocket, bytes: usize) -> io::Result<()> {
    SockRef::from(socket).set_send_buffer_size(bytes)
}

/// kcp-go `SetDSCP`: IPv4 TOS and IPv6 traffic class = dscp << 2, the DSCP
/// field being the upper six bits of both; succeeds if either works. kcp-go
/// v5.6 put the unshifted value into the IPv6 traffic class, v5.7 fixed it;
/// we follow v5.7 (§12).
pub fn set_dscp(socket: &UdpSocket, dscp: u8) -> io::Result<()> {
    dscp_ref(SockRef::from(socket), dscp)
}

fn dscp_ref(sock: SockRef<'_>, dscp: u8) -> io::Result<()> {
    let v4 = sock.set_tos(u32::from(dscp) << 2);
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "freebsd"
    ))]
    let v6 = sock.set_tclass_v6(u32::from(dscp) << 2);
    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "freebsd"
    )))]
    let v6: io::Result<()> = Err(io::Error::from(io::ErrorKind::Unsupported));
    match (v4, v6) {
        (Ok(()), _) | (_, Ok(())) => Ok(()),
        (Err(e), _) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn dscp_is_the_upper_six_bits_of_tos_and_traffic_class() {
        let v4 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        set_dscp(&v4, 46).unwrap();
        assert_eq!(SockRef::from(&v4).tos().unwrap(), 46 << 2);
        // IPv6 may be unavailable on the machine; then there is nothing to check.
        if let Ok(v6) = UdpSocket::bind("[::1]:0").await {
            set_dscp(&v6, 46).unwrap();
            assert_eq!(SockRef::from(&v6).tclass_v6().unwrap(), 46 << 2);
        }
    }
}
