//! Sessions and listeners over transports other than a UDP socket: the
//! in-memory network, and a caller's own wrapper.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use kcp_session::transport::{
    MemoryNetwork, RecvBatch, Transmits, Transport, UdpTransport, Writable,
};
use kcp_session::{Config, Listener, Mode, Session};
use support::{bounded, echo, echo_round_trip, pattern};

fn config() -> Config {
    Config::builder()
        .crypt_kcptun("aes", "transport test")
        .fec(10, 3)
        .mode(Mode::Fast3)
        .window(256, 256)
        .build()
        .expect("config")
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

/// Many sessions over one in-memory listener: every echoed byte checked,
/// no socket anywhere.
#[tokio::test]
async fn memory_network_listener_echoes_many_sessions_byte_exact() {
    let net = MemoryNetwork::new();
    let cfg = config();
    let server = net.bind(addr("10.0.0.1:4000")).unwrap();
    let listener = Arc::new(Listener::with_transport(Arc::new(server), &cfg).unwrap());
    assert_eq!(listener.local_addr(), addr("10.0.0.1:4000"));
    let l = listener.clone();
    let accept = tokio::spawn(async move {
        while let Ok(s) = l.accept().await {
            tokio::spawn(echo(s));
        }
    });
    let mut tasks = Vec::new();
    for i in 0..16u64 {
        let t = net.bind(addr("10.0.0.2:0")).unwrap();
        let s = Session::with_transport(Arc::new(t), addr("10.0.0.1:4000"), 100 + i as u32, &cfg)
            .unwrap();
        assert_eq!(s.peer_addr(), addr("10.0.0.1:4000"));
        let data = Arc::new(pattern(i, 100_000 + i as usize * 1000));
        tasks.push(tokio::spawn(async move {
            let (got, stats) = echo_round_trip(s, data.clone()).await;
            assert!(got == *data, "session {i}: echo differs");
            assert_eq!(stats.in_csum_errors, 0);
        }));
    }
    bounded(Duration::from_secs(60), "16 echoes", async {
        for t in tasks {
            t.await.expect("echo task");
        }
    })
    .await;
    assert_eq!(listener.stats().passive_opens, 16);
    accept.abort();
}

/// A memory transport has no socket options: the setters say so instead of
/// pretending.
#[tokio::test]
async fn socket_options_on_a_memory_transport_are_unsupported() {
    let net = MemoryNetwork::new();
    let t = net.bind(addr("10.0.0.3:1")).unwrap();
    let s = Session::with_transport(Arc::new(t), addr("10.0.0.4:1"), 1, &config()).unwrap();
    let e = s.set_dscp(46).unwrap_err();
    assert!(e.to_string().contains("not supported"), "{e}");
    assert!(s.set_recv_buffer(1 << 20).is_err());
    assert!(net.bind(addr("10.0.0.3:1")).is_err(), "address in use");
}

/// The caller's own transport: every byte XORed with a key on the way out
/// and in, over UDP (an obfuscating wrapper). Both ends must use it: a
/// plain client reaches nothing.
#[derive(Debug)]
struct Xor {
    inner: UdpTransport,
    key: u8,
    sent: AtomicU64,
}

impl Transport for Xor {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        batch: &mut RecvBatch,
    ) -> Poll<std::io::Result<usize>> {
        let mut inner = RecvBatch::new(batch.capacity());
        let n = match self.inner.poll_recv(cx, &mut inner) {
            Poll::Ready(Ok(n)) => n,
            other => return other,
        };
        for i in 0..n {
            if let Some((d, from)) = inner.get_mut(i) {
                d.iter_mut().for_each(|b| *b ^= self.key);
                batch.push(d, from);
            }
        }
        Poll::Ready(Ok(n))
    }
    fn try_send(&self, to: SocketAddr, datagrams: &Transmits<'_>) -> std::io::Result<usize> {
        let sock = self.inner.socket();
        for (i, d) in datagrams.iter().enumerate() {
            let x: Vec<u8> = d.iter().map(|b| b ^ self.key).collect();
            match sock.try_send_to(&x, to) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(i),
                Err(e) => return Err(e),
            }
            self.sent.fetch_add(1, Ordering::Relaxed);
        }
        Ok(datagrams.len())
    }
    fn writable(&self) -> Writable<'_> {
        self.inner.writable()
    }
}

async fn xor(key: u8) -> Arc<Xor> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    Arc::new(Xor {
        inner: UdpTransport::new(sock),
        key,
        sent: AtomicU64::new(0),
    })
}

#[tokio::test]
async fn a_custom_transport_carries_sessions_both_ways() {
    let cfg = config();
    let server_t = xor(0x5a).await;
    let server_addr = server_t.local_addr().unwrap();
    let listener = Arc::new(Listener::with_transport(server_t.clone(), &cfg).unwrap());
    let l = listener.clone();
    let accept = tokio::spawn(async move {
        while let Ok(s) = l.accept().await {
            tokio::spawn(echo(s));
        }
    });
    let client_t = xor(0x5a).await;
    let s = Session::with_transport(client_t.clone(), server_addr, 77, &cfg).unwrap();
    let data = Arc::new(pattern(9, 300_000));
    let (got, _) = bounded(
        Duration::from_secs(30),
        "xor echo",
        echo_round_trip(s, data.clone()),
    )
    .await;
    assert!(got == *data, "echo differs");
    assert!(client_t.sent.load(Ordering::Relaxed) > 0);
    assert!(server_t.sent.load(Ordering::Relaxed) > 0);

    // A plain UDP client: its datagrams arrive XORed, fail the check and
    // are counted, never a session.
    let before = listener.stats().in_csum_errors;
    let plain = Session::dial(server_addr, &cfg).await.unwrap();
    let mut w = plain;
    tokio::io::AsyncWriteExt::write_all(&mut w, b"hello")
        .await
        .unwrap();
    let counted = support::wait_until(Duration::from_secs(5), || {
        listener.stats().in_csum_errors > before
    })
    .await;
    assert!(counted, "the plain client's datagrams were not refused");
    assert_eq!(listener.stats().passive_opens, 1);
    accept.abort();
}
