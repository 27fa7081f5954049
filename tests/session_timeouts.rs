//! Timeouts, idle expiry, dead links, back-pressure and argument errors.

mod support;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use kcp_session::{Config, Error, Listener, Mode, Session, StreamMode};
use support::{bounded, echo_server, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

const LIMIT: Duration = Duration::from_secs(20);

fn base() -> kcp_session::ConfigBuilder {
    Config::builder()
        .crypt_kcptun("aes-128", "timeouts")
        .mode(Mode::Fast3)
}

/// A UDP socket that receives and never answers.
async fn silent_peer() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_timeout_fires_and_the_session_survives() {
    let cfg = base().build().unwrap();
    let server = echo_server(&cfg).await;
    let mut s = Session::dial(server.addr, &cfg).await.unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)));
    let t = Instant::now();
    let mut b = [0u8; 4];
    let r = bounded(LIMIT, "read", s.read(&mut b)).await;
    assert_eq!(r.unwrap_err().kind(), ErrorKind::TimedOut);
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(190), "{waited:?}");
    // A timeout is not fatal: the session still echoes.
    s.write_all(b"ping").await.unwrap();
    bounded(LIMIT, "echo", s.read_exact(&mut b)).await.unwrap();
    assert_eq!(&b, b"ping");
    assert!(s.error().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_apply_back_pressure_and_time_out() {
    let peer = silent_peer().await;
    let cfg = base()
        .window(8, 8)
        .stream_mode(StreamMode::Stream)
        .write_timeout(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let mut s = Session::dial(peer.local_addr().unwrap(), &cfg)
        .await
        .unwrap();
    let chunk = vec![7u8; 100_000];
    let mut accepted = 0usize;
    let err = bounded(LIMIT, "writes", async {
        loop {
            match s.write(&chunk).await {
                Ok(n) => accepted += n,
                Err(e) => break e,
            }
        }
    })
    .await;
    assert_eq!(err.kind(), ErrorKind::TimedOut);
    // Nothing is acknowledged, so at most one window's worth was queued.
    let mss = 1400 - 20 - 24;
    assert!(accepted <= 8 * mss, "accepted {accepted} bytes");
    assert!(accepted > 0);
    assert!(s.wait_snd() <= 8, "wait_snd {}", s.wait_snd());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_ends_a_silent_session() {
    let peer = silent_peer().await;
    let cfg = base()
        .idle_timeout(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let mut s = Session::dial(peer.local_addr().unwrap(), &cfg)
        .await
        .unwrap();
    let t = Instant::now();
    let mut b = [0u8; 1];
    let e = bounded(LIMIT, "read", s.read(&mut b)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut);
    assert!(
        matches!(s.error(), Some(Error::IdleTimeout)),
        "{:?}",
        s.error()
    );
    assert!(t.elapsed() >= Duration::from_millis(290));
    assert!(s.is_closed());
    assert!(s.write(b"x").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_link_ends_the_session() {
    let peer = silent_peer().await;
    let cfg = base().dead_link(Some(4)).build().unwrap();
    let mut s = Session::dial(peer.local_addr().unwrap(), &cfg)
        .await
        .unwrap();
    s.write_all(b"anyone there?").await.unwrap();
    let mut b = [0u8; 1];
    let e = bounded(LIMIT, "read", s.read(&mut b)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionAborted);
    assert!(
        matches!(s.error(), Some(Error::DeadLink(4))),
        "{:?}",
        s.error()
    );
    assert!(s.stats().retrans_segs >= 3, "{}", s.stats());
    // The silent peer saw exactly the transmissions (1 + 3 retransmissions).
    let mut buf = [0u8; 1500];
    let mut n = 0;
    while let Ok(Ok(_)) =
        tokio::time::timeout(Duration::from_millis(50), peer.recv_from(&mut buf)).await
    {
        n += 1;
    }
    assert_eq!(n, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_idle_sessions_expire_and_leave_the_table() {
    let cfg = base()
        .idle_timeout(Some(Duration::from_millis(400)))
        .build()
        .unwrap();
    let listener = Listener::listen("127.0.0.1:0", &cfg).await.unwrap();
    let client_cfg = base().build().unwrap();
    let mut c = Session::dial(listener.local_addr(), &client_cfg)
        .await
        .unwrap();
    c.write_all(b"hi").await.unwrap();
    let mut s = bounded(LIMIT, "accept", listener.accept()).await.unwrap();
    let mut b = [0u8; 2];
    s.read_exact(&mut b).await.unwrap();
    assert_eq!(listener.session_count(), 1);
    drop(c); // the client vanishes without a trace on the wire
    let e = bounded(LIMIT, "server read", s.read(&mut b))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut);
    assert!(matches!(s.error(), Some(Error::IdleTimeout)));
    assert!(wait_until(LIMIT, || listener.session_count() == 0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_api_keeps_boundaries_and_reports_argument_errors() {
    let cfg = base()
        .fec(4, 2)
        .window(256, 256)
        .stream_mode(StreamMode::Message)
        .build()
        .unwrap();
    // A message echo: recv_msg/send_msg keep boundaries both ways (a byte
    // write would split at mss like kcp-go's Write).
    let listener = Listener::listen("127.0.0.1:0", &cfg).await.unwrap();
    let addr = listener.local_addr();
    let echo = tokio::spawn(async move {
        let mut s = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 1 << 20];
        while let Ok(n) = s.recv_msg(&mut buf).await {
            s.send_msg(&buf[..n]).await.unwrap();
        }
    });
    let mut s = Session::dial(addr, &cfg).await.unwrap();
    let sizes = [1usize, 10, 1000, 1300, 5000, 60_000];
    for (i, &n) in sizes.iter().enumerate() {
        s.send_msg(&vec![i as u8; n]).await.unwrap();
    }
    let mut buf = vec![0u8; 65536];
    for (i, &n) in sizes.iter().enumerate() {
        let got = bounded(LIMIT, "recv_msg", s.recv_msg(&mut buf))
            .await
            .unwrap();
        assert_eq!(got, n);
        assert!(buf[..n].iter().all(|&x| x == i as u8));
    }
    assert!(matches!(s.send_msg(&[]).await, Err(Error::EmptyMessage)));
    assert!(matches!(
        s.send_msg(&vec![0u8; 300 * 1400]).await,
        Err(Error::MessageTooLarge { .. })
    ));
    s.send_msg(&[9u8; 100]).await.unwrap();
    let mut small = [0u8; 10];
    assert!(matches!(
        bounded(LIMIT, "small", s.recv_msg(&mut small)).await,
        Err(Error::BufferTooSmall {
            need: 100,
            have: 10
        })
    ));
    assert_eq!(
        bounded(LIMIT, "retry", s.recv_msg(&mut buf)).await.unwrap(),
        100
    );
    assert!(matches!(s.set_mtu(40), Err(Error::InvalidConfig(_))));
    s.set_mtu(1200).unwrap();
    assert!(s.oob_max_size() > 0);

    echo.abort();
    let plain = base().build().unwrap();
    let t = Session::dial(addr, &plain).await.unwrap();
    assert!(matches!(t.send_oob(b"x"), Err(Error::InvalidConfig(_))));
    assert_eq!(t.oob_max_size(), 0);
    assert!(matches!(
        Config::builder().mtu(24).build(),
        Err(Error::InvalidConfig(m)) if m.contains("too small")
    ));
    assert!(matches!(
        Config::builder().crypt_kcptun("rot13", "k").build(),
        Err(Error::UnknownCipher { .. })
    ));
}
