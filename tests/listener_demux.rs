//! Listener behaviour on real sockets: many sessions, garbage floods,
//! kcp-go's demultiplexing rules (§6.2), close semantics.

mod support;

use std::sync::Arc;
use std::time::Duration;

use kcp_session::{Config, Error, Listener, Mode, Session};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use support::{bounded, echo_round_trip, echo_server, pattern, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

const LIMIT: Duration = Duration::from_secs(30);

fn cfg(cipher: &str) -> Config {
    Config::builder()
        .crypt_kcptun(cipher, "listener test")
        .mode(Mode::Fast2)
        .socket_buffers(8 << 20)
        .build()
        .unwrap()
}

/// A raw KCP PUSH segment (24-byte header + data) as kcp-go would send it.
fn push(conv: u32, sn: u32, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(24 + data.len());
    v.extend_from_slice(&conv.to_le_bytes());
    v.push(81); // IKCP_CMD_PUSH
    v.push(0); // frg
    v.extend_from_slice(&32u16.to_le_bytes()); // wnd
    v.extend_from_slice(&0u32.to_le_bytes()); // ts
    v.extend_from_slice(&sn.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes()); // una
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(data);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_sessions_echo_distinct_data() {
    let config = Config::builder()
        .crypt_kcptun("aes-128", "many")
        .mode(Mode::Fast)
        .socket_buffers(8 << 20)
        .build()
        .unwrap();
    let server = echo_server(&config).await;
    const N: usize = 1000;
    let mut tasks = Vec::with_capacity(N);
    for i in 0..N {
        let config = config.clone();
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let s = Session::dial(addr, &config).await.expect("dial");
            let data = Arc::new(pattern(i as u64, 2000 + i));
            let (got, _) = echo_round_trip(s, data.clone()).await;
            assert!(got == *data, "session {i}: echo differs");
        }));
    }
    bounded(Duration::from_secs(120), "1000 sessions", async {
        for t in tasks {
            t.await.expect("session task");
        }
    })
    .await;
    assert_eq!(server.listener.stats().passive_opens, N as u64);
    // The server side never learns that a client closed (no FIN in KCP), so
    // its sessions stay, except where a later client reused a closed
    // client's port with a new conv and sn 0, which replaces it (§6.2).
    assert!(server.listener.session_count() <= N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_wrong_key_datagrams_create_no_sessions() {
    let server = echo_server(&cfg("aes")).await;
    let wrong = Config::builder()
        .crypt_kcptun("aes", "not the key")
        .build()
        .unwrap();
    let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut rng = SmallRng::seed_from_u64(7);
    let mut sent = 0u64;
    let mut short = 0u64;
    for i in 0..2000 {
        let len = rng.gen_range(0..1500);
        let mut d = vec![0u8; len];
        rng.fill_bytes(&mut d);
        if i % 2 == 0 && len >= 44 {
            // A well-formed KCP segment sealed with the wrong key.
            let seg = push(0x1234, 0, &d[..len - 44]);
            let mut c = wrong.crypt().clone();
            let mut buf = [0u8; 1500];
            buf[20..20 + seg.len()].copy_from_slice(&seg);
            let n = c.seal(&mut buf, seg.len()).unwrap();
            d = buf[..n].to_vec();
        }
        attacker.send_to(&d, server.addr).await.unwrap();
        if d.len() >= 20 {
            sent += 1;
        } else {
            short += 1;
        }
    }
    // Every datagram of at least a crypto header fails the CRC; shorter ones
    // cannot be checked and count as InErrs (kcp-go counts nothing, §3).
    assert!(
        wait_until(LIMIT, || server.listener.stats().in_csum_errors == sent).await,
        "in_csum_errors {} != {sent}",
        server.listener.stats().in_csum_errors
    );
    assert!(
        wait_until(LIMIT, || server.listener.stats().in_errs == short).await,
        "in_errs {} != {short}",
        server.listener.stats().in_errs
    );
    assert_eq!(server.listener.session_count(), 0);
    assert_eq!(server.listener.stats().passive_opens, 0);
    // The listener still serves legitimate clients afterwards.
    let s = Session::dial(server.addr, &cfg("aes")).await.unwrap();
    let data = Arc::new(pattern(1, 10_000));
    let (got, _) = bounded(LIMIT, "echo after flood", echo_round_trip(s, data.clone())).await;
    assert!(got == *data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_cipher_junk_creates_no_sessions() {
    let listener = Listener::listen("127.0.0.1:0", &cfg("null")).await.unwrap();
    let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut rng = SmallRng::seed_from_u64(11);
    for _ in 0..500 {
        let mut d = vec![0u8; rng.gen_range(24..1400)];
        rng.fill_bytes(&mut d);
        // Never a valid KCP command, never an FEC/OOB type.
        d[4] = rng.gen_range(0..81);
        attacker.send_to(&d, listener.local_addr()).await.unwrap();
    }
    // Then one valid segment from the same address: it must be accepted,
    // which also proves every junk datagram before it was processed.
    attacker
        .send_to(&push(99, 0, b"hello"), listener.local_addr())
        .await
        .unwrap();
    let mut s = bounded(LIMIT, "accept", listener.accept()).await.unwrap();
    assert_eq!(s.conv(), 99);
    let mut buf = [0u8; 5];
    bounded(LIMIT, "read", s.read_exact(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf, b"hello");
    assert_eq!(listener.session_count(), 1);
    // UDP may drop under machine-wide load before we see a datagram; the
    // kernel counts those per socket. Every junk datagram is either counted
    // by us or dropped by the kernel, never turned into a session.
    let kernel_drops = kernel_udp_drops(listener.local_addr());
    assert_eq!(listener.stats().kcp_in_errors + kernel_drops, 500);
}

/// Datagrams the kernel dropped for the socket bound to `addr` (the `drops`
/// column of /proc/net/udp); 0 where that file does not exist.
fn kernel_udp_drops(addr: std::net::SocketAddr) -> u64 {
    let port = format!(":{:04X}", addr.port());
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|t| t.lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|a| a.ends_with(&port))
        })
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conv_change_replaces_session_only_with_sn_zero() {
    let listener = Listener::listen("127.0.0.1:0", &cfg("null")).await.unwrap();
    let addr = listener.local_addr();
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    peer.send_to(&push(1, 0, b"a"), addr).await.unwrap();
    let mut first = bounded(LIMIT, "accept 1", listener.accept()).await.unwrap();
    assert_eq!(first.conv(), 1);
    let mut b = [0u8; 1];
    first.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"a");

    // Another conv with sn != 0 from the same address: dropped.
    peer.send_to(&push(2, 5, b"b"), addr).await.unwrap();
    // sn == 0 with the old conv still goes to the old session.
    peer.send_to(&push(1, 1, b"c"), addr).await.unwrap();
    first.read_exact(&mut b).await.unwrap();
    assert_eq!(
        &b, b"c",
        "the sn!=0 conv change must not have replaced the session"
    );
    assert!(!first.is_closed());

    // A new conv with sn == 0: the old session is closed and replaced.
    peer.send_to(&push(2, 0, b"d"), addr).await.unwrap();
    let mut second = bounded(LIMIT, "accept 2", listener.accept()).await.unwrap();
    assert_eq!(second.conv(), 2);
    second.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"d");
    assert!(first.is_closed());
    assert!(
        matches!(first.read(&mut b).await, Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    );
    assert_eq!(listener.session_count(), 1);

    // Parity (no conv) from an unknown address creates nothing.
    let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut parity = vec![0u8; 40];
    parity[4] = 0xF2;
    other.send_to(&parity, addr).await.unwrap();
    // An OOB packet from an unknown address does create a session (§4.6).
    let mut oob = vec![0u8; 16];
    oob[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
    oob[4] = 0xF3;
    oob[6..8].copy_from_slice(&10u16.to_le_bytes());
    oob[8..12].copy_from_slice(&77u32.to_le_bytes());
    other.send_to(&oob, addr).await.unwrap();
    let third = bounded(LIMIT, "accept oob", listener.accept())
        .await
        .unwrap();
    assert_eq!(third.conv(), 77);
    assert_eq!(third.peer_addr(), other.local_addr().unwrap());
    assert_eq!(third.stats().oob_packets, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_listener_keeps_accepted_sessions_and_closed_sessions_leave_the_table() {
    let config = cfg("salsa20");
    let listener = Listener::listen("127.0.0.1:0", &config).await.unwrap();
    let mut client = Session::dial(listener.local_addr(), &config).await.unwrap();
    client.write_all(b"ping").await.unwrap();
    let mut server_side = bounded(LIMIT, "accept", listener.accept()).await.unwrap();
    let mut b = [0u8; 4];
    server_side.read_exact(&mut b).await.unwrap();
    assert_eq!(listener.session_count(), 1);

    listener.close();
    assert!(matches!(listener.accept().await, Err(Error::Closed)));
    // The accepted session still works both ways.
    server_side.write_all(b"pong").await.unwrap();
    bounded(LIMIT, "pong", client.read_exact(&mut b))
        .await
        .unwrap();
    assert_eq!(&b, b"pong");
    client.write_all(b"more").await.unwrap();
    bounded(LIMIT, "more", server_side.read_exact(&mut b))
        .await
        .unwrap();
    assert_eq!(&b, b"more");
    // A new client is not accepted any more.
    let mut late = Session::dial(listener.local_addr(), &config).await.unwrap();
    late.write_all(b"late").await.unwrap();
    assert_eq!(listener.session_count(), 1);

    server_side.close().unwrap();
    assert!(matches!(server_side.close(), Err(Error::Closed)));
    assert!(wait_until(LIMIT, || listener.session_count() == 0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_backlog_and_session_cap_are_bounded() {
    let config = Config::builder()
        .crypt_kcptun("null", "")
        .accept_backlog(3)
        .max_sessions(Some(5))
        .build()
        .unwrap();
    let listener = Listener::listen("127.0.0.1:0", &config).await.unwrap();
    let addr = listener.local_addr();
    let mut socks = Vec::new();
    for i in 0..10u32 {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.send_to(&push(100 + i, 0, b"x"), addr).await.unwrap();
        socks.push(s);
    }
    // Nobody accepts: only the backlog's worth of sessions exist.
    assert!(wait_until(LIMIT, || listener.session_count() == 3).await);
    // Accepting frees backlog slots, but the cap (5) holds overall.
    let mut accepted = Vec::new();
    for _ in 0..3 {
        accepted.push(listener.accept().await.unwrap());
    }
    // Past the eviction grace (1 s), the accepted sessions are evictable.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for (i, s) in socks.iter().enumerate() {
        s.send_to(&push(100 + i as u32, 1, b"y"), addr)
            .await
            .unwrap();
    }
    // The cap (5) holds overall. The table being full, newcomers evict the
    // unproven session heard from least recently (the server never sent
    // anything, so none is proven) while the backlog has room.
    assert!(
        wait_until(LIMIT, || listener.session_count() == 5
            && listener.evictions() >= 1
            && listener.stats().passive_opens == 5 + listener.evictions())
        .await,
        "sessions {} evictions {} passive opens {}",
        listener.session_count(),
        listener.evictions(),
        listener.stats().passive_opens
    );
    assert_eq!(listener.session_count(), 5);
    let evicted = accepted
        .iter()
        .filter(|s| matches!(s.error(), Some(Error::Evicted)))
        .count() as u64;
    assert!(evicted <= listener.evictions());
}
