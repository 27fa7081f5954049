//! Every datagram a listener or session drops is counted (issue 12, item 7):
//! one test per drop path, on real loopback sockets. Datagrams are built
//! here by hand (the `none` cipher: 16-byte nonce, CRC-32 of the plaintext,
//! plaintext in clear, §2.6), independently of the crate's crypt code.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use kcp_session::{Config, Listener, Session, Snmp};
use support::wait_until;
use tokio::net::UdpSocket;

const LIMIT: Duration = Duration::from_secs(10);

fn cfg(cipher: &str) -> Config {
    Config::builder()
        .crypt_kcptun(cipher, "drop counters")
        .build()
        .unwrap()
}

/// A `none`-cipher datagram carrying `plain`.
fn none_datagram(plain: &[u8]) -> Vec<u8> {
    let mut d = vec![0x5au8; 16];
    d.extend_from_slice(&crc32fast::hash(plain).to_le_bytes());
    d.extend_from_slice(plain);
    d
}

/// A raw KCP PUSH segment (24-byte header + data).
fn push(conv: u32, sn: u32, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(24 + data.len());
    v.extend_from_slice(&conv.to_le_bytes());
    v.extend_from_slice(&[81, 0]);
    v.extend_from_slice(&32u16.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&sn.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(data);
    v
}

async fn send_all(sock: &UdpSocket, to: SocketAddr, datagrams: &[Vec<u8>]) {
    for d in datagrams {
        sock.send_to(d, to).await.unwrap();
    }
}

/// Waits until `stats()` shows `want` in the field `name`, then checks that
/// the listener created no session from any of it.
async fn listener_counts(l: &Listener, name: &str, want: u64) -> Snmp {
    let ok = wait_until(LIMIT, || l.stats().get(name) == Some(want)).await;
    let s = l.stats();
    assert!(ok, "{name}: want {want}, listener stats {s}");
    s
}

#[tokio::test]
async fn listener_counts_datagrams_shorter_than_the_crypt_header() {
    for (cipher, header) in [("aes", 20usize), ("aes-128-gcm", 28), ("none", 20)] {
        let l = Listener::listen("127.0.0.1:0", &cfg(cipher)).await.unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let short: Vec<Vec<u8>> = (1..header).map(|n| vec![0xa5; n]).collect();
        send_all(&peer, l.local_addr(), &short).await;
        let s = listener_counts(&l, "InErrs", short.len() as u64).await;
        assert_eq!(s.in_csum_errors, 0, "{cipher}");
        assert_eq!(l.session_count(), 0, "{cipher}");
    }
}

#[tokio::test]
async fn listener_counts_short_and_conv_less_plaintexts_from_unknown_addresses() {
    let l = Listener::listen("127.0.0.1:0", &cfg("none")).await.unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Shorter than the 12-byte minimum plaintext (§3).
    send_all(&peer, l.local_addr(), &[none_datagram(&[1; 11])]).await;
    listener_counts(&l, "KCPInErrors", 1).await;
    // Raw KCP shorter than a segment header.
    send_all(&peer, l.local_addr(), &[none_datagram(&[1; 20])]).await;
    listener_counts(&l, "KCPInErrors", 2).await;
    // FEC parity carries no conv: from an unknown address it cannot be placed.
    let mut parity = vec![0u8; 40];
    parity[4] = 0xf2;
    send_all(&peer, l.local_addr(), &[none_datagram(&parity)]).await;
    listener_counts(&l, "InErrs", 1).await;
    assert_eq!(l.session_count(), 0);
}

#[tokio::test]
async fn listener_counts_a_foreign_conv_from_a_known_address() {
    let l = Listener::listen("127.0.0.1:0", &cfg("none")).await.unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    send_all(
        &peer,
        l.local_addr(),
        &[none_datagram(&push(7, 0, b"hello"))],
    )
    .await;
    let s = l.accept().await.unwrap();
    assert_eq!(s.conv(), 7);
    // A different conv with sn != 0 is not a restart (§6.2): dropped, counted.
    send_all(&peer, l.local_addr(), &[none_datagram(&push(8, 5, b"x"))]).await;
    listener_counts(&l, "KCPInErrors", 1).await;
    assert_eq!(l.session_count(), 1);
    assert_eq!(s.conv(), 7);
}

#[tokio::test]
async fn listener_counts_new_addresses_it_refuses() {
    let config = Config::builder()
        .crypt_kcptun("none", "")
        .max_sessions(Some(1))
        .build()
        .unwrap();
    let l = Listener::listen("127.0.0.1:0", &config).await.unwrap();
    let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    send_all(&a, l.local_addr(), &[none_datagram(&push(1, 0, b"a"))]).await;
    let _s = l.accept().await.unwrap();
    // Table full: b's session is refused, and that is visible.
    send_all(&b, l.local_addr(), &[none_datagram(&push(2, 0, b"b"))]).await;
    listener_counts(&l, "InErrs", 1).await;
    // Closed listener: new addresses are ignored, and counted.
    l.close();
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    send_all(&c, l.local_addr(), &[none_datagram(&push(3, 0, b"c"))]).await;
    listener_counts(&l, "InErrs", 2).await;
}

#[tokio::test]
async fn dialed_session_counts_datagrams_shorter_than_the_crypt_header() {
    for (cipher, header) in [("aes", 20usize), ("aes-128-gcm", 28)] {
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let s = Session::from_socket(sock, peer.local_addr().unwrap(), 1, &cfg(cipher)).unwrap();
        let short: Vec<Vec<u8>> = (1..header).map(|n| vec![0xa5; n]).collect();
        send_all(&peer, s.local_addr(), &short).await;
        let want = short.len() as u64;
        let ok = wait_until(LIMIT, || s.stats().in_errs == want).await;
        assert!(
            ok,
            "{cipher}: want InErrs {want}, session stats {}",
            s.stats()
        );
        assert_eq!(s.stats().in_csum_errors, 0);
    }
}
