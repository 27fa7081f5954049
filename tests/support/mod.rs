//! Helpers shared by the loopback tests.
#![allow(dead_code)]

pub mod relay;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kcp_session::{Config, Listener, Session};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// Deterministic test data.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    SmallRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Polls `cond` every few milliseconds until it holds or `limit` passes.
pub async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs `fut` with a hard bound so a hung test fails instead of hanging.
pub async fn bounded<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: did not finish within {limit:?}"),
    }
}

/// A listener whose sessions echo everything back.
pub struct EchoServer {
    pub listener: Arc<Listener>,
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn echo_server(config: &Config) -> EchoServer {
    let listener = Arc::new(
        Listener::listen("127.0.0.1:0", config)
            .await
            .expect("listen"),
    );
    let addr = listener.local_addr();
    let task = serve_echo(listener.clone());
    EchoServer {
        listener,
        addr,
        task,
    }
}

/// Accepts on `listener` until it closes, echoing every session.
pub fn serve_echo(listener: Arc<Listener>) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok(s) = listener.accept().await {
            tokio::spawn(echo(s));
        }
    })
}

/// [`echo_round_trip`] bounded by 60 s, asserting the echo is byte-exact
/// and that the session refused nothing (`InCsumErrors`, `KCPInErrors`);
/// returns its counters for further checks. `what` names the case.
pub async fn checked_echo(s: Session, data: Arc<Vec<u8>>, what: &str) -> kcp_session::Snmp {
    let (got, stats) = bounded(
        Duration::from_secs(60),
        what,
        echo_round_trip(s, data.clone()),
    )
    .await;
    assert!(got == *data, "{what}: echo differs");
    assert_eq!(stats.in_csum_errors, 0, "{what}: {stats}");
    assert_eq!(stats.kcp_in_errors, 0, "{what}: {stats}");
    stats
}

/// Echoes one session until it fails.
pub async fn echo(s: Session) {
    let (mut r, mut w) = s.into_split();
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 || w.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

/// Writes `data` while reading the echo concurrently; returns what came back
/// and the session (for its counters).
pub async fn echo_round_trip(s: Session, data: Arc<Vec<u8>>) -> (Vec<u8>, kcp_session::Snmp) {
    let (mut r, mut w) = s.into_split();
    let d = data.clone();
    let writer = tokio::spawn(async move {
        for chunk in d.chunks(65536) {
            w.write_all(chunk).await.expect("write");
        }
        w
    });
    let mut got = vec![0u8; data.len()];
    r.read_exact(&mut got).await.expect("read echo");
    let w = writer.await.expect("writer");
    let stats = w.stats();
    drop(w);
    (got, stats)
}
