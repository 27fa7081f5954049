//! Issue 12 item 8: the defaults a public server runs on. A dead peer ends
//! in a typed error in bounded time, closed clients' sessions are reclaimed,
//! the session table is bounded, and a flood of unproven sessions cannot
//! lock out a client that proves itself. Every wait is bounded; idle expiry
//! runs on tokio's paused clock.

mod support;

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kcp_session::config::{DEFAULT_DEAD_LINK, DEFAULT_IDLE_TIMEOUT};
use kcp_session::{Config, Error, Mode, Session};
use support::relay::{Impairment, Relay};
use support::{bounded, echo_server, pattern, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

const LIMIT: Duration = Duration::from_secs(30);

/// The default configuration, with only the cipher and the mode changed
/// (neither touches a lifetime rule).
fn defaults(cipher: &str) -> kcp_session::ConfigBuilder {
    Config::builder()
        .crypt_kcptun(cipher, "server-defaults")
        .mode(Mode::Fast3)
}

/// A raw KCP PUSH (null cipher: no crypto header).
fn push(conv: u32, sn: u32, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&conv.to_le_bytes());
    v.extend_from_slice(&[81, 0]); // IKCP_CMD_PUSH, frg 0
    v.extend_from_slice(&32u16.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes()); // ts
    v.extend_from_slice(&sn.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes()); // una
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(data);
    v
}

async fn echo_once(s: &mut Session, data: &[u8]) {
    s.write_all(data).await.unwrap();
    let mut back = vec![0u8; data.len()];
    bounded(LIMIT, "echo", s.read_exact(&mut back))
        .await
        .unwrap();
    assert!(back == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_peer_ends_the_session_with_dead_link_by_default() {
    let server = echo_server(&defaults("aes").build().unwrap()).await;
    let relay = Relay::start(server.addr, Impairment::default()).await;
    let cfg = defaults("aes").build().unwrap();
    let mut s = Session::dial(relay.addr(), &cfg).await.unwrap();
    echo_once(&mut s, b"alive").await;
    // The peer dies: nothing it sends arrives any more, nothing reaches it.
    drop(relay);
    let t = Instant::now();
    s.write_all(b"anyone there?").await.unwrap();
    let mut b = [0u8; 1];
    let e = bounded(LIMIT, "read", s.read(&mut b)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionAborted, "{e}");
    assert!(
        matches!(s.error(), Some(Error::DeadLink(DEFAULT_DEAD_LINK))),
        "{:?}",
        s.error()
    );
    eprintln!("fast3: dead peer reported after {:?}", t.elapsed());
}

#[tokio::test(flavor = "current_thread")]
async fn a_silent_peer_ends_the_session_with_idle_timeout_by_default() {
    // A UDP socket that never answers; nothing is written, so no KCP timer
    // runs and the paused clock jumps straight to the idle deadline.
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let cfg = defaults("aes").build().unwrap();
    let mut s = Session::dial(peer.local_addr().unwrap(), &cfg)
        .await
        .unwrap();
    tokio::time::pause();
    let t = tokio::time::Instant::now();
    let mut b = [0u8; 1];
    // Bounded in virtual time too (before the default existed, this read
    // waited forever).
    let e = bounded(Duration::from_secs(120), "read", s.read(&mut b))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut);
    assert!(matches!(s.error(), Some(Error::IdleTimeout)));
    let waited = t.elapsed();
    assert!(
        waited >= DEFAULT_IDLE_TIMEOUT - Duration::from_millis(50)
            && waited < DEFAULT_IDLE_TIMEOUT + Duration::from_secs(1),
        "{waited:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn closed_clients_sessions_are_reclaimed_by_the_default_idle_timeout() {
    let cfg = defaults("aes").build().unwrap();
    let server = echo_server(&cfg).await;
    const N: usize = 50;
    for i in 0..N {
        // Each client from its own loopback address: a dialed socket's
        // ephemeral port can be handed to the next client once the closed
        // one is gone, and the listener would (rightly, §6.2) take that as
        // the same peer restarting and replace its session.
        let socket = UdpSocket::bind((Ipv4Addr::new(127, 4, 0, i as u8 + 1), 0))
            .await
            .unwrap();
        let mut c = Session::from_socket(socket, server.addr, 0x7000 + i as u32, &cfg).unwrap();
        echo_once(&mut c, &pattern(i as u64, 300)).await;
        c.drain().await.unwrap();
        // kcp-go has no close on the wire: the client just goes silent.
        c.close().unwrap();
    }
    // The listener registers a session from its receive task, which may
    // still be handling the last client's datagrams: wait for it (bounded).
    assert!(
        wait_until(Duration::from_secs(5), || server.listener.session_count()
            == N)
        .await,
        "{} of {N} sessions in the table",
        server.listener.session_count()
    );
    // Let the last ACKs go out, then let virtual time pass the idle timeout.
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::time::pause();
    tokio::time::sleep(DEFAULT_IDLE_TIMEOUT + Duration::from_secs(1)).await;
    tokio::time::resume();
    assert!(
        wait_until(Duration::from_secs(5), || server.listener.session_count()
            == 0)
        .await,
        "{} sessions left",
        server.listener.session_count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_echo_close_cycles_keep_the_table_bounded_and_open() {
    const MAX: usize = 8;
    const CYCLES: usize = 24;
    let cfg = defaults("aes").max_sessions(Some(MAX)).build().unwrap();
    let server = echo_server(&cfg).await;
    let t = Instant::now();
    for i in 0..CYCLES {
        let mut c = Session::dial(server.addr, &cfg).await.unwrap();
        // Once the table is full, each new client gets in as soon as a
        // closed (silent) one has been quiet for 3 s.
        echo_once(&mut c, &pattern(i as u64, 1000)).await;
        c.drain().await.unwrap();
        c.close().unwrap();
        assert!(server.listener.session_count() <= MAX);
    }
    assert!(server.listener.evictions() >= (CYCLES - MAX) as u64);
    eprintln!(
        "{CYCLES} cycles through a table of {MAX} in {:?}",
        t.elapsed()
    );
}

/// Binds `n` sockets on distinct loopback addresses 127.`net`.x.y.
async fn flood_sockets(net: u8, n: usize) -> Vec<UdpSocket> {
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let ip = Ipv4Addr::new(127, net, (i / 250) as u8, (i % 250 + 1) as u8);
        v.push(UdpSocket::bind((ip, 0)).await.unwrap());
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unproven_sessions_cannot_lock_out_a_real_client() {
    const MAX: usize = 32;
    let cfg = Config::builder()
        .crypt_kcptun("null", "")
        .mode(Mode::Fast3)
        .max_sessions(Some(MAX))
        .build()
        .unwrap();
    let server = echo_server(&cfg).await;
    let addr: SocketAddr = server.addr;
    // Attackers fill the table and keep their sessions busy: valid PUSH
    // segments from MAX addresses every 10 ms, which the echo application
    // accepts and answers; they never acknowledge anything.
    let attackers = Arc::new(flood_sockets(7, 400).await);
    let flood = |from: usize, to: usize| {
        let attackers = attackers.clone();
        tokio::spawn(async move {
            for round in 0u32.. {
                for (i, s) in attackers[from..to].iter().enumerate() {
                    let conv = 0xa000 + (from + i) as u32;
                    let _ = s.send_to(&push(conv, round % 32, b"junk"), addr).await;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let busy = flood(0, MAX);
    assert!(wait_until(LIMIT, || server.listener.session_count() == MAX).await);
    // Before the eviction rule, this was a lockout for good: the table full
    // of live attacker sessions. A real client gets in by evicting an
    // unproven one (older than the 1 s grace) and proves itself with one
    // round trip.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut c = Session::dial(addr, &cfg).await.unwrap();
    echo_once(&mut c, &pattern(999, 2000)).await;
    // Now a flood from 368 further addresses: it churns the unproven
    // sessions but never displaces the proven client, which keeps working.
    let fresh = flood(MAX, 400);
    let evictions0 = server.listener.evictions();
    for i in 0..40 {
        echo_once(&mut c, &pattern(1000 + i, 2000)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(server.listener.session_count() <= MAX);
    }
    assert!(c.error().is_none(), "{:?}", c.error());
    assert!(
        server.listener.evictions() > evictions0,
        "the flood did churn unproven sessions"
    );
    busy.abort();
    fresh.abort();
}

/// The figure for the report: how long a session on the unmodified default
/// configuration (normal mode: interval 100 ms, minimum RTO 100 ms, linear
/// back-off) takes to report a peer that died mid-conversation. Real time
/// (tens of seconds), so not part of the normal run:
/// `cargo test --test server_defaults -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_default_dead_peer_time() {
    let cfg = Config::default();
    let server = echo_server(&cfg).await;
    let relay = Relay::start(server.addr, Impairment::default()).await;
    let mut s = Session::dial(relay.addr(), &cfg).await.unwrap();
    for i in 0..20 {
        echo_once(&mut s, &pattern(i, 500)).await;
    }
    drop(relay);
    let t = Instant::now();
    s.write_all(b"anyone there?").await.unwrap();
    let mut b = [0u8; 1];
    let e = bounded(Duration::from_secs(90), "read", s.read(&mut b))
        .await
        .unwrap_err();
    eprintln!(
        "default config: dead peer with data in flight reported after {:?} as {:?} ({e}); rto {} ms",
        t.elapsed(),
        s.error(),
        s.rto()
    );
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut s = Session::dial(peer.local_addr().unwrap(), &cfg)
        .await
        .unwrap();
    let t = Instant::now();
    let e = bounded(Duration::from_secs(90), "read", s.read(&mut b))
        .await
        .unwrap_err();
    eprintln!(
        "default config: silent peer, nothing in flight, reported after {:?} as {:?} ({e})",
        t.elapsed(),
        s.error()
    );
}
