//! A listener with several receive shards on one port (SO_REUSEPORT,
//! `ConfigBuilder::listener_shards`): peers spread over the shards, each
//! peer keeps to one, the cap is split, and the listener behaves as one.

#![cfg(target_os = "linux")]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kcp_session::{Config, Error, Listener, Mode, Session};
use support::{bounded, echo_round_trip, pattern, serve_echo, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

const LIMIT: Duration = Duration::from_secs(30);

fn cfg(shards: usize) -> kcp_session::ConfigBuilder {
    Config::builder()
        .crypt_kcptun("aes-128", "shards")
        .fec(10, 3)
        .mode(Mode::Fast3)
        .listener_shards(shards)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_spread_over_shards_keep_to_one_and_echo_exactly() {
    const PEERS: usize = 48;
    let config = cfg(4).build().unwrap();
    let listener = Arc::new(Listener::listen("127.0.0.1:0", &config).await.unwrap());
    assert_eq!(listener.shard_count(), 4);
    let addr = listener.local_addr();
    assert_ne!(addr.port(), 0);
    let server = serve_echo(listener.clone());
    let mut clients = Vec::new();
    for i in 0..PEERS {
        let config = config.clone();
        clients.push(tokio::spawn(async move {
            let s = Session::dial(addr, &config).await.unwrap();
            let data = Arc::new(pattern(i as u64, 40_000 + i * 997));
            let (back, _) = echo_round_trip(s, data.clone()).await;
            assert!(back == *data, "peer {i}: the echo differs");
        }));
    }
    for c in clients {
        bounded(LIMIT, "echo", c).await.unwrap();
    }
    // One session per peer in all: a peer whose datagrams reached two
    // shards would have opened a session in each.
    let stats = listener.stats();
    assert_eq!(stats.passive_opens, PEERS as u64);
    // The accepted sessions are still there (idle timeout far away).
    let per_shard = listener.shard_session_counts();
    assert_eq!(per_shard.iter().sum::<usize>(), PEERS, "{per_shard:?}");
    assert!(
        per_shard.iter().filter(|&&n| n > 0).count() >= 2,
        "48 peers all hashed onto one of 4 shards: {per_shard:?}"
    );
    server.abort();
}

#[tokio::test]
async fn a_current_thread_runtime_serves_shards_too() {
    let config = cfg(2).build().unwrap();
    let listener = Arc::new(Listener::listen("127.0.0.1:0", &config).await.unwrap());
    let addr = listener.local_addr();
    let server = serve_echo(listener.clone());
    for i in 0..8u64 {
        let s = Session::dial(addr, &config).await.unwrap();
        let data = Arc::new(pattern(100 + i, 20_000));
        let (back, _) = bounded(LIMIT, "echo", echo_round_trip(s, data.clone())).await;
        assert_eq!(back, *data);
    }
    assert_eq!(listener.stats().passive_opens, 8);
    server.abort();
}

/// A valid first PUSH (conv, sn 0) for a "null"-crypt, FEC-less listener.
fn push(conv: u32) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&conv.to_le_bytes());
    p.extend_from_slice(&[81, 0]); // IKCP_CMD_PUSH, frg 0
    p.extend_from_slice(&128u16.to_le_bytes());
    p.extend_from_slice(&[0; 12]); // ts, sn, una
    p.extend_from_slice(&1u32.to_le_bytes());
    p.push(b'x');
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cap_is_split_over_the_shards() {
    // 4 shards of a cap of 6: at most 2 each, 8 in all.
    let config = Config::builder()
        .crypt_kcptun("null", "")
        .mode(Mode::Fast3)
        .listener_shards(4)
        .max_sessions(Some(6))
        .build()
        .unwrap();
    let listener = Arc::new(Listener::listen("127.0.0.1:0", &config).await.unwrap());
    let addr: SocketAddr = listener.local_addr();
    let mut peers = Vec::new();
    for i in 0..64u32 {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.send_to(&push(0x100 + i), addr).await.unwrap();
        peers.push(s);
    }
    // Every first datagram either opened a session or was dropped as
    // TableFull (InErrs): wait until all 64 are accounted for.
    let l = listener.clone();
    assert!(
        wait_until(LIMIT, || {
            let st = l.stats();
            st.passive_opens + st.in_errs == 64
        })
        .await,
        "{}",
        listener.stats()
    );
    let per_shard = listener.shard_session_counts();
    assert!(per_shard.iter().all(|&n| n <= 2), "{per_shard:?}");
    assert_eq!(listener.session_count(), per_shard.iter().sum::<usize>());
    assert!(listener.session_count() <= 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_sharded_listener_keeps_accepted_sessions() {
    let config = cfg(3).build().unwrap();
    let listener = Listener::listen("127.0.0.1:0", &config).await.unwrap();
    let addr = listener.local_addr();
    let mut clients = Vec::new();
    let mut accepted = Vec::new();
    for _ in 0..6 {
        let mut c = Session::dial(addr, &config).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        let mut a = bounded(LIMIT, "accept", listener.accept()).await.unwrap();
        let mut b = [0u8; 5];
        bounded(LIMIT, "read", a.read_exact(&mut b)).await.unwrap();
        clients.push(c);
        accepted.push(a);
    }
    listener.close();
    assert!(matches!(listener.accept().await, Err(Error::Closed)));
    // Every shard still serves its sessions, both ways.
    for (i, (c, a)) in clients.iter_mut().zip(accepted.iter_mut()).enumerate() {
        let msg = pattern(i as u64, 3000);
        a.write_all(&msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        bounded(LIMIT, "read after close", c.read_exact(&mut got))
            .await
            .unwrap();
        assert_eq!(got, msg);
    }
}

#[test]
fn shard_counts_outside_the_range_are_refused() {
    for n in [0, 65] {
        let e = Config::builder().listener_shards(n).build().unwrap_err();
        assert!(
            matches!(&e, Error::InvalidConfig(m) if m.contains("listener_shards")),
            "{e}"
        );
    }
    assert_eq!(
        Config::builder()
            .listener_shards(64)
            .build()
            .unwrap()
            .listener_shards(),
        64
    );
}
