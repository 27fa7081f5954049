//! The kcp-go v5.7 API equivalents over real loopback sessions (§12):
//! `try_read` / `try_recv_msg` / `readable` / `set_read_notify` (ready, not
//! ready, closed), and `reset_rto` against a peer that never answers.

mod support;

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kcp_session::kcp::{SegmentHeader, IKCP_CMD_PUSH};
use kcp_session::{Config, Congestion, Error, Listener, Mode, NoDelay, Session};
use support::{bounded, pattern};
use tokio::io::AsyncWriteExt;
use tokio::net::UdpSocket;

const LIMIT: Duration = Duration::from_secs(30);

fn config() -> Config {
    Config::builder()
        .crypt_kcptun("aes", "v5.7 api")
        .mode(Mode::Fast3)
        .window(256, 256)
        .build()
        .unwrap()
}

/// A listener, a dialed client and the accepted server side.
async fn pair(cfg: &Config) -> (Listener, Session, Session) {
    let listener = Listener::listen("127.0.0.1:0", cfg).await.unwrap();
    let mut client = Session::dial(listener.local_addr(), cfg).await.unwrap();
    client.write_all(b"hi").await.unwrap();
    let server = bounded(LIMIT, "accept", listener.accept()).await.unwrap();
    bounded(LIMIT, "first bytes", server.readable()).await;
    let mut b = [0u8; 2];
    assert_eq!(server.try_read(&mut b).unwrap(), 2);
    assert_eq!(&b, b"hi");
    (listener, client, server)
}

fn would_block<T: std::fmt::Debug>(r: std::io::Result<T>) -> bool {
    matches!(r, Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_read_ready_not_ready_and_closed() {
    let cfg = config();
    let (_l, mut client, server) = pair(&cfg).await;
    let mut buf = [0u8; 3];
    // Not ready: nothing in flight.
    assert!(would_block(server.try_read(&mut buf)));
    assert_eq!(server.try_read(&mut []).unwrap(), 0, "empty buffer");
    assert!(
        tokio::time::timeout(Duration::from_millis(100), server.readable())
            .await
            .is_err(),
        "readable() completed with nothing to read"
    );
    // Ready: a 5-byte message read 3 + 2 (the tail is kept for the next read).
    client.write_all(b"hello").await.unwrap();
    bounded(LIMIT, "readable", server.readable()).await;
    assert_eq!(server.try_read(&mut buf).unwrap(), 3);
    assert_eq!(&buf, b"hel");
    assert_eq!(server.try_read(&mut buf).unwrap(), 2);
    assert_eq!(&buf[..2], b"lo");
    assert!(would_block(server.try_read(&mut buf)));
    // Closed with data still queued: the data first, then the session's error.
    client.write_all(b"bye").await.unwrap();
    bounded(LIMIT, "readable", server.readable()).await;
    server.close().unwrap();
    bounded(LIMIT, "readable after close", server.readable()).await;
    assert_eq!(server.try_read(&mut buf).unwrap(), 3);
    assert_eq!(&buf, b"bye");
    let e = server.try_read(&mut buf).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readable_wakes_every_waiter_on_data_and_on_close() {
    let cfg = config();
    let (_l, mut client, server) = pair(&cfg).await;
    let server = Arc::new(server);
    let spawn_waiters = |n: usize| {
        (0..n)
            .map(|_| {
                let s = server.clone();
                tokio::spawn(async move { s.readable().await })
            })
            .collect::<Vec<_>>()
    };
    // Several waiters at once, woken by data.
    let waiters = spawn_waiters(3);
    tokio::task::yield_now().await;
    client.write_all(b"x").await.unwrap();
    for w in waiters {
        bounded(LIMIT, "waiter woken by data", w).await.unwrap();
    }
    let mut b = [0u8; 8];
    assert_eq!(server.try_read(&mut b).unwrap(), 1);
    // A cancelled wait leaves nothing behind that breaks the next one.
    for _ in 0..10 {
        let r = tokio::time::timeout(Duration::from_millis(1), server.readable()).await;
        assert!(r.is_err());
    }
    // Waiters parked with nothing to read are woken by close.
    let waiters = spawn_waiters(2);
    tokio::time::sleep(Duration::from_millis(20)).await;
    server.close().unwrap();
    for w in waiters {
        bounded(LIMIT, "waiter woken by close", w).await.unwrap();
    }
    assert!(!would_block(server.try_read(&mut b)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_driven_only_by_read_notify_and_try_read() {
    let cfg = config();
    let (_l, client, server) = pair(&cfg).await;
    let (tx, rx) = mpsc::sync_channel::<()>(1);
    let tx2 = tx.clone();
    server.set_read_notify(move || {
        let _ = tx2.try_send(());
    });
    // Not ready: registering with nothing to read does not call it.
    assert!(rx.try_recv().is_err(), "notified with nothing to read");
    let want = pattern(57, 256 * 1024);
    let (_cr, mut cw) = client.into_split();
    let data = want.clone();
    let writer = tokio::spawn(async move {
        cw.write_all(&data).await.unwrap();
        cw
    });
    // The consumer is a plain thread: no async reads at all.
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 1500];
        let deadline = Instant::now() + LIMIT;
        while got.len() < 256 * 1024 {
            match server.try_read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    rx.recv_timeout(left).expect("no notification in time");
                }
                Err(e) => panic!("{e}"),
            }
        }
        // Closed: the callback hears about it too.
        while rx.try_recv().is_ok() {}
        server.close().unwrap();
        rx.recv_timeout(LIMIT).expect("no notification on close");
        assert!(!would_block(server.try_read(&mut buf)));
        // Registering when the session is already over calls at once.
        let (tx3, rx3) = mpsc::channel();
        server.set_read_notify(move || {
            let _ = tx3.send(());
        });
        assert!(rx3.try_recv().is_ok());
        got
    });
    let _cw = bounded(LIMIT, "writer", writer).await.unwrap();
    let got = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    assert!(got == want, "bytes differ");
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_notify_fires_at_once_when_data_is_already_there() {
    let cfg = config();
    let (_l, mut client, server) = pair(&cfg).await;
    client.write_all(b"queued").await.unwrap();
    bounded(LIMIT, "readable", server.readable()).await;
    let (tx, rx) = mpsc::channel();
    server.set_read_notify(move || {
        let _ = tx.send(());
    });
    assert!(rx.try_recv().is_ok(), "not told about data already queued");
    server.clear_read_notify();
    while rx.try_recv().is_ok() {}
    client.write_all(b"more").await.unwrap();
    bounded(LIMIT, "readable", server.readable()).await;
    assert!(rx.try_recv().is_err(), "cleared callback still called");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_recv_msg_ready_not_ready_too_small_and_closed() {
    let cfg = config();
    let (_l, mut client, server) = pair(&cfg).await;
    let (rd, _wr) = server.into_split();
    let mut buf = [0u8; 64];
    assert!(matches!(rd.try_recv_msg(&mut buf), Err(Error::WouldBlock)));
    let io: std::io::Error = Error::WouldBlock.into();
    assert_eq!(io.kind(), std::io::ErrorKind::WouldBlock);
    client.send_msg(b"one message").await.unwrap();
    bounded(LIMIT, "readable", rd.readable()).await;
    let mut small = [0u8; 4];
    assert!(matches!(
        rd.try_recv_msg(&mut small),
        Err(Error::BufferTooSmall { need: 11, have: 4 })
    ));
    assert_eq!(rd.try_recv_msg(&mut buf).unwrap(), 11);
    assert_eq!(&buf[..11], b"one message");
    assert!(matches!(rd.try_recv_msg(&mut buf), Err(Error::WouldBlock)));
    _wr.close().unwrap();
    assert!(matches!(rd.try_recv_msg(&mut buf), Err(Error::Closed)));
}

/// Receives datagrams on a socket that never answers; returns when the next
/// PUSH of `sn` arrived.
async fn next_push(sock: &UdpSocket, sn: u32) -> Instant {
    let mut buf = [0u8; 1500];
    loop {
        let (n, _) = sock.recv_from(&mut buf).await.unwrap();
        let h = SegmentHeader::decode(&buf[..n]).unwrap();
        if h.cmd == IKCP_CMD_PUSH && h.sn == sn {
            return Instant::now();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_rto_resends_at_the_next_tick_instead_of_the_backed_off_timer() {
    // No crypto, no FEC: datagrams are bare KCP. nodelay off: rto 200 ms,
    // backed off by 200 ms each time, so sn 0 goes at 0, 200, 600, 1200 ms.
    let cfg = Config::builder()
        .nodelay(NoDelay {
            nodelay: false,
            interval: 10,
            resend: 0,
            congestion: Congestion::Off,
        })
        .build()
        .unwrap();
    let sink = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut s = Session::dial(sink.local_addr().unwrap(), &cfg)
        .await
        .unwrap();
    s.write_all(b"are you there?").await.unwrap();
    let t0 = bounded(LIMIT, "first", next_push(&sink, 0)).await;
    let t1 = bounded(LIMIT, "second", next_push(&sink, 0)).await;
    let t2 = bounded(LIMIT, "third", next_push(&sink, 0)).await;
    // The session's own timers, for scale (at least 200 then 400 ms apart).
    assert!(t1 - t0 >= Duration::from_millis(190), "{:?}", t1 - t0);
    assert!(t2 - t1 >= Duration::from_millis(390), "{:?}", t2 - t1);
    let lost = s.stats().lost_segs;
    // The next natural resend is 600 ms after the third; reset it instead.
    let reset_at = Instant::now();
    s.reset_rto();
    let t3 = bounded(LIMIT, "after reset", next_push(&sink, 0)).await;
    let waited = t3 - reset_at;
    assert!(
        waited < Duration::from_millis(300),
        "resent {waited:?} after reset_rto (tick 10 ms, timer 600 ms)"
    );
    assert_eq!(s.stats().lost_segs, lost + 1);
    // The timer restarts from rx_rto: the next resend is 400 ms later again
    // (rto = 200 + 200), not 600 + 200.
    let t4 = bounded(LIMIT, "after that", next_push(&sink, 0)).await;
    assert!(t4 - t3 >= Duration::from_millis(390), "{:?}", t4 - t3);
    assert!(t4 - t3 < Duration::from_millis(590), "{:?}", t4 - t3);
}
