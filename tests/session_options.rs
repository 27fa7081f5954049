//! Runtime options: rate limit, OOB datagrams, socket options and setters.

mod support;

use std::time::{Duration, Instant};

use kcp_session::{Config, Error, Listener, Mode, NoDelay, Session};
use support::{bounded, echo_server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(30);

fn base() -> kcp_session::ConfigBuilder {
    Config::builder()
        .crypt_kcptun("salsa20", "options")
        .mode(Mode::Fast2)
        .window(256, 256)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_paces_the_sender() {
    let cfg = base().build().unwrap();
    let server = echo_server(&cfg).await;
    let s = Session::dial(server.addr, &cfg).await.unwrap();
    // kcp-go v5.7's bucket: burst = one second's worth, then `rate` bytes/s
    // of written application bytes.
    s.set_rate_limit(200_000);
    let data = vec![1u8; 400_000];
    let mut back = vec![0u8; data.len()];
    let t = Instant::now();
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w
    });
    bounded(LIMIT, "paced echo", r.read_exact(&mut back))
        .await
        .unwrap();
    let elapsed = t.elapsed();
    let _w = writer.await.unwrap();
    // At least (400000 - 200000) / 200000 s of pacing.
    assert!(elapsed >= Duration::from_millis(950), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oob_datagrams_reach_the_handler() {
    let cfg = base().fec(4, 2).build().unwrap();
    let listener = Listener::listen("127.0.0.1:0", &cfg).await.unwrap();
    let mut c = Session::dial(listener.local_addr(), &cfg).await.unwrap();
    c.write_all(b"hi").await.unwrap();
    let mut s = bounded(LIMIT, "accept", listener.accept()).await.unwrap();
    let mut b = [0u8; 2];
    s.read_exact(&mut b).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    s.set_oob_handler(move |d| {
        let _ = tx.send(d.to_vec());
    })
    .unwrap();
    assert_eq!(c.oob_max_size(), 1400 - 20 - 8 - 4);
    assert!(matches!(
        c.send_oob(&vec![0u8; c.oob_max_size() + 1]),
        Err(Error::MessageTooLarge { .. })
    ));
    // OOB is unreliable: keep sending until one arrives (loopback: the first).
    let got = bounded(LIMIT, "oob", async {
        loop {
            c.send_oob(b"out of band").unwrap();
            if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
                break d;
            }
        }
    })
    .await;
    assert_eq!(got, b"out of band");
    assert!(s.stats().oob_packets >= 1);
    // OOB did not disturb the reliable stream.
    c.write_all(b"ok").await.unwrap();
    s.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_options_and_setters() {
    let cfg = base().dscp(46).socket_buffers(1 << 20).build().unwrap();
    let listener = Listener::listen("127.0.0.1:0", &cfg).await.unwrap();
    listener.set_dscp(10).unwrap();
    listener.set_recv_buffer(1 << 20).unwrap();
    listener.set_send_buffer(1 << 20).unwrap();
    let mut c = Session::dial(listener.local_addr(), &cfg).await.unwrap();
    c.set_dscp(46).unwrap();
    assert!(matches!(c.set_dscp(64), Err(Error::InvalidConfig(_))));
    c.set_recv_buffer(1 << 20).unwrap();
    c.set_send_buffer(1 << 20).unwrap();
    c.set_nodelay(NoDelay {
        nodelay: true,
        interval: 10,
        resend: 2,
        congestion: kcp_session::Congestion::Off,
    });
    c.set_window(64, 64);
    c.set_ack_nodelay(true);
    c.set_write_delay(true);
    c.set_stream_mode(kcp_session::StreamMode::Stream);
    c.set_mtu(1200).unwrap();
    // With write delay on, data still goes out at the next tick.
    c.write_all(b"delayed").await.unwrap();
    let mut s = bounded(LIMIT, "accept", listener.accept()).await.unwrap();
    let mut b = [0u8; 7];
    bounded(LIMIT, "read", s.read_exact(&mut b)).await.unwrap();
    assert_eq!(&b, b"delayed");
    // Sessions sharing the listener's socket refuse socket-level options.
    assert!(matches!(s.set_dscp(1), Err(Error::InvalidConfig(_))));
    assert!(matches!(s.set_recv_buffer(1), Err(Error::InvalidConfig(_))));
    assert_eq!(s.origin(), kcp_session::Origin::Accepted);
    assert_eq!(c.origin(), kcp_session::Origin::Dialed);
    // The client socket is bound to 0.0.0.0; the server sees 127.0.0.1.
    assert_eq!(s.peer_addr().port(), c.local_addr().port());
    assert_eq!(s.conv(), c.conv());
    assert!(c.rto() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_socket_with_explicit_conv() {
    let cfg = base().build().unwrap();
    let server = echo_server(&cfg).await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut s = Session::from_socket(sock, server.addr, 0xC0FFEE, &cfg).unwrap();
    assert_eq!(s.conv(), 0xC0FFEE);
    s.write_all(b"conv").await.unwrap();
    let mut b = [0u8; 4];
    bounded(LIMIT, "echo", s.read_exact(&mut b)).await.unwrap();
    assert_eq!(&b, b"conv");
    // Datagrams from a stranger to the session's socket are counted, not used.
    let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    stranger.send_to(&[0u8; 100], s.local_addr()).await.unwrap();
    assert!(support::wait_until(LIMIT, || s.stats().in_errs == 1).await);
    s.close().unwrap();
    assert!(matches!(s.close(), Err(Error::Closed)));
    assert!(s.write(b"x").await.is_err());
}

#[test]
fn outside_a_runtime_is_an_error_not_a_panic() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Sockets made inside a runtime, used to build sessions outside it.
    let (a, b) = rt.block_on(async {
        (
            tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        )
    });
    let cfg = Config::default();
    let peer = b.local_addr().unwrap();
    assert!(matches!(
        Session::from_socket(a, peer, 1, &cfg),
        Err(Error::Io(_))
    ));
    assert!(matches!(Listener::from_socket(b, &cfg), Err(Error::Io(_))));
}
