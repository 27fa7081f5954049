//! The write rate limiter (kcp-go v5.7 `SetRateLimit` / `SetBucket`, §12):
//! one [`RateLimiter`] shared by a whole listener or by sessions given it at
//! run time, against per-session buckets. Timed on tokio's paused clock: the
//! limiter's waits are the only thing that moves virtual time, so the bounds
//! are exact, not a guess at scheduling (ACKs go out at once, so no KCP timer
//! is involved while data moves on loopback).

mod support;

use std::time::Duration;

use kcp_session::{Config, ConfigBuilder, Listener, Mode, RateLimiter, Session};
use support::{bounded, pattern};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio::time::Instant;

const LIMIT: Duration = Duration::from_secs(60);
const EACH: usize = 150_000;
const RATE: u32 = 100_000;

fn base() -> ConfigBuilder {
    Config::builder()
        .crypt_kcptun("aes-128", "rate")
        .mode(Mode::Fast3)
        .window(512, 512)
        .ack_nodelay(true)
}

/// Dials `n` clients to a listener made with `server_cfg`; returns the
/// clients and the accepted sessions, in the same order.
async fn sessions(server_cfg: &Config, n: usize) -> (Listener, Vec<Session>, Vec<Session>) {
    let client_cfg = base().build().unwrap();
    let listener = Listener::listen("127.0.0.1:0", server_cfg).await.unwrap();
    let (mut clients, mut servers) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let mut c = Session::dial(listener.local_addr(), &client_cfg)
            .await
            .unwrap();
        c.write_all(b"!").await.unwrap();
        let mut s = bounded(LIMIT, "accept", listener.accept()).await.unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        clients.push(c);
        servers.push(s);
    }
    (listener, clients, servers)
}

/// Each writer sends `EACH` bytes of its own pattern; each reader checks them.
/// Returns the virtual time from the start until the last write completed.
async fn transfer(writers: Vec<Session>, readers: Vec<Session>) -> Duration {
    let t0 = Instant::now();
    let mut tasks: Vec<JoinHandle<Instant>> = Vec::new();
    let mut checks = Vec::new();
    for (i, (mut w, mut r)) in writers.into_iter().zip(readers).enumerate() {
        tasks.push(tokio::spawn(async move {
            w.write_all(&pattern(i as u64, EACH)).await.unwrap();
            let done = Instant::now();
            // Keep the writer alive until its reader is done.
            w.drain().await.unwrap();
            done
        }));
        checks.push(tokio::spawn(async move {
            let mut got = vec![0u8; EACH];
            r.read_exact(&mut got).await.unwrap();
            assert!(got == pattern(i as u64, EACH), "stream {i}: bytes differ");
        }));
    }
    let mut last = t0;
    for t in tasks {
        last = last.max(bounded(LIMIT, "writer", t).await.unwrap());
    }
    for c in checks {
        bounded(LIMIT, "reader", c).await.unwrap();
    }
    last - t0
}

#[tokio::test(start_paused = true)]
async fn a_listener_wide_limiter_is_shared_by_all_its_sessions() {
    // 2 x 150 KB at 100 KB/s shared, bucket starting full at 100 KB: the last
    // byte cannot be accepted before (300 - 100) / 100 = 2 s.
    let limiter = RateLimiter::new(RATE).unwrap();
    let cfg = base().rate_limiter(limiter.clone()).build().unwrap();
    let (_l, clients, servers) = sessions(&cfg, 2).await;
    for s in &servers {
        let l = s.rate_limiter().expect("accepted session has the limiter");
        assert!(l.shares_bucket_with(&limiter));
    }
    let took = transfer(servers, clients).await;
    eprintln!("shared limiter: {took:?}");
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(took < Duration::from_millis(2100), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn per_session_limits_are_independent() {
    // The same numbers with `rate_limit`: each session has its own 100 KB/s
    // bucket, so each needs only (150 - 100) / 100 = 0.5 s.
    let cfg = base().rate_limit(RATE).build().unwrap();
    let (_l, clients, servers) = sessions(&cfg, 2).await;
    let (a, b) = (
        servers[0].rate_limiter().unwrap(),
        servers[1].rate_limiter().unwrap(),
    );
    assert!(!a.shares_bucket_with(&b));
    let took = transfer(servers, clients).await;
    eprintln!("per-session limit: {took:?}");
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_millis(600), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_limiter_given_at_run_time_is_shared_and_can_be_removed() {
    let cfg = base().build().unwrap();
    let (_l, clients, servers) = sessions(&cfg, 2).await;
    // Dialed sessions writing this time, sharing a 50 KB/s bucket of 10 KB.
    let limiter = RateLimiter::with_burst(RATE / 2, 10_000).unwrap();
    clients[0].set_rate_limiter(Some(limiter.clone()));
    clients[1].set_rate_limiter(clients[0].rate_limiter());
    assert!(clients[1]
        .rate_limiter()
        .unwrap()
        .shares_bucket_with(&limiter));
    let took = transfer(clients, servers).await;
    eprintln!("run-time limiter: {took:?}");
    // (300 - 10) / 50 = 5.8 s.
    assert!(took >= Duration::from_millis(5800), "{took:?}");
    assert!(took < Duration::from_millis(5900), "{took:?}");

    // No limiter: no virtual time passes at all.
    let (_l, clients, servers) = sessions(&cfg, 2).await;
    clients[0].set_rate_limit(1000);
    clients[0].set_rate_limiter(None);
    clients[1].set_rate_limit(0);
    assert!(clients[1].rate_limiter().is_none());
    let took = transfer(clients, servers).await;
    assert_eq!(took, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_paced_write_still_honours_the_write_timeout() {
    let cfg = base().build().unwrap();
    let (_l, clients, _servers) = sessions(&cfg, 1).await;
    let c = clients.into_iter().next().unwrap();
    c.set_write_timeout(Some(Duration::from_secs(1)));
    // The write half has the same limiter setters.
    let (_r, mut w) = c.into_split();
    w.set_rate_limiter(Some(RateLimiter::with_burst(1000, 1000).unwrap()));
    assert_eq!(w.rate_limiter().map(|l| l.rate()), Some(1000));
    // 1000 bytes pass at once; the next 10 000 would need 10 s.
    let t0 = Instant::now();
    let e = w.write_all(&[7u8; 11_000]).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(2),
        "{took:?}"
    );
}
