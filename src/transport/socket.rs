//! UDP socket setup: binding with kcp-go's options (DSCP, buffer sizes).

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::UdpSocket;

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
    bind_socket2_with(addr, false)
}

fn bind_socket2_with(addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Dual-stack where the OS allows it, like Go's "udp" network on "[::]".
        let _ = socket.set_only_v6(false);
    }
    #[cfg(target_os = "linux")]
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = reuse_port;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Binds `n` non-blocking UDP sockets to one address with `SO_REUSEPORT`
/// (Linux: the kernel spreads peers over them by a hash of their address,
/// so each peer keeps to one socket while the set is unchanged) and applies
/// `opts` to each. A port of 0 is resolved by the first bind and reused by
/// the others. Only on Linux; elsewhere `n` must be 1.
pub(crate) fn bind_shards(
    addr: SocketAddr,
    n: usize,
    opts: &SocketOptions,
) -> io::Result<Vec<UdpSocket>> {
    if n <= 1 {
        return Ok(vec![bind(addr, opts)?]);
    }
    if !cfg!(target_os = "linux") {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "listener shards need SO_REUSEPORT load balancing (Linux)",
        ));
    }
    let mut out = Vec::with_capacity(n);
    let mut at = addr;
    for _ in 0..n {
        let socket = bind_socket2_with(at, true)?;
        socket.set_nonblocking(true)?;
        let std: std::net::UdpSocket = socket.into();
        let socket = UdpSocket::from_std(std)?;
        apply(&socket, opts)?;
        at = socket.local_addr()?;
        out.push(socket);
    }
    Ok(out)
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
    let v4 = sock.set_tos_v4(u32::from(dscp) << 2);
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
        assert_eq!(SockRef::from(&v4).tos_v4().unwrap(), 46 << 2);
        // IPv6 may be unavailable on the machine; then there is nothing to check.
        if let Ok(v6) = UdpSocket::bind("[::1]:0").await {
            set_dscp(&v6, 46).unwrap();
            assert_eq!(SockRef::from(&v6).tclass_v6().unwrap(), 46 << 2);
        }
    }
}
