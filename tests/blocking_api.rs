//! The blocking API (`kcp_session::blocking`) over real loopback sockets:
//! against the tokio listener and session, and against itself. Tests run
//! one at a time (they count the module's background threads) and each
//! ends by checking that no thread is left.

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

mod support;

use kcp_session::blocking;
use kcp_session::{Config, Error, Mode, StreamMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

static SERIAL: Mutex<()> = Mutex::new(());

/// Serializes the tests; on drop (after the test's own values are gone)
/// checks that every background thread has ended.
struct Serial(#[allow(dead_code)] MutexGuard<'static, ()>);

fn serial() -> Serial {
    Serial(SERIAL.lock().unwrap_or_else(|e| e.into_inner()))
}

impl Drop for Serial {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert!(
                wait_until(Duration::from_secs(5), || blocking::live_threads() == 0),
                "{} blocking threads still running",
                blocking::live_threads()
            );
        }
    }
}

/// Polls `cond` until it holds or `limit` passes.
fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    cond()
}

fn config(stream: StreamMode) -> Config {
    Config::builder()
        .crypt_kcptun("aes", "blocking test key")
        .fec(10, 3)
        .mode(Mode::Fast3)
        .window(512, 512)
        .stream_mode(stream)
        .socket_buffers(4 << 20)
        .read_timeout(Some(Duration::from_secs(30)))
        .write_timeout(Some(Duration::from_secs(30)))
        .build()
        .expect("config")
}

fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Writes `data` from one thread while reading its echo on this one.
fn blocking_echo_round_trip(s: &blocking::Session, data: &[u8]) -> Vec<u8> {
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut w = s;
            w.write_all(data).expect("write");
        });
        let mut got = vec![0u8; data.len()];
        let mut r = s;
        r.read_exact(&mut got).expect("read echo");
        got
    })
}

/// A blocking echo server on its own thread: every session gets its bytes
/// back until it ends. Stops (closing its sessions) when the returned
/// `Stop` is dropped.
fn blocking_echo_server(cfg: &Config) -> (SocketAddr, Stop) {
    let listener = blocking::Listener::listen("127.0.0.1:0", cfg).expect("listen");
    let addr = listener.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let h = std::thread::spawn(move || {
        std::thread::scope(|scope| {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept_timeout(Duration::from_millis(20)) {
                    Ok(s) => {
                        let flag = &flag;
                        scope.spawn(move || {
                            let mut buf = vec![0u8; 64 * 1024];
                            let mut s = s;
                            s.set_read_timeout(Some(Duration::from_millis(20)));
                            loop {
                                match s.read(&mut buf) {
                                    Ok(n) => {
                                        if s.write_all(&buf[..n]).is_err() {
                                            break;
                                        }
                                    }
                                    Err(e) if e.kind() == ErrorKind::TimedOut => {
                                        if flag.load(Ordering::SeqCst) {
                                            break;
                                        }
                                    }
                                    Err(_) => break,
                                }
                            }
                        });
                    }
                    Err(Error::Timeout) => {}
                    Err(e) => panic!("accept: {e}"),
                }
            }
        });
    });
    (addr, Stop(stop, Some(h)))
}

/// Stops a [`blocking_echo_server`] and waits for its threads.
struct Stop(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
        if let Some(h) = self.1.take() {
            let r = h.join();
            if !std::thread::panicking() {
                r.expect("echo server");
            }
        }
    }
}

#[test]
fn blocking_client_echoes_1mib_through_tokio_listener() {
    let _s = serial();
    let cfg = config(StreamMode::Stream);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(kcp_session::Listener::listen("127.0.0.1:0", &cfg))
        .unwrap();
    let addr = listener.local_addr();
    rt.spawn(async move {
        while let Ok(s) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = r.read(&mut buf).await {
                    if w.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let data = pattern(1 << 20);
    let s = blocking::Session::dial(addr, &cfg).unwrap();
    let got = blocking_echo_round_trip(&s, &data);
    assert!(got == data, "echo differs");
    let st = s.stats();
    assert!(st.fec_parity_shards > 0, "{st}");
    assert_eq!(st.in_csum_errors, 0, "{st}");
    drop(s);
    rt.shutdown_timeout(Duration::from_secs(1));
}

#[test]
fn blocking_echo_over_a_lossy_link_and_quiet_when_idle() {
    let _s = serial();
    let cfg = config(StreamMode::Stream);
    let (addr, stop) = blocking_echo_server(&cfg);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let relay = rt.block_on(support::relay::Relay::start(
        addr,
        support::relay::Impairment::loss(7, 0.1),
    ));
    let data = pattern(256 * 1024);
    let s = blocking::Session::dial(relay.addr(), &cfg).unwrap();
    let wakes0 = blocking::wake_datagrams();
    let got = blocking_echo_round_trip(&s, &data);
    assert!(got == data, "echo differs");
    s.drain().unwrap();
    let st = s.stats();
    assert!(st.retrans_segs + st.fec_recovered > 0, "{st}");
    let wakes = blocking::wake_datagrams() - wakes0;
    eprintln!("lossy echo: {wakes} wake-up datagrams, {st}");
    // Wake-ups only when a deadline moves earlier, not per write.
    assert!(wakes < 200, "{wakes} wake-ups");
    // Once the link is quiet (the server may still retransmit its last
    // segments, whose ACKs were lost), an idle session wakes nobody: no
    // datagram out for 300 ms and no wake-up meanwhile.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let (out0, wakes0) = (s.stats().out_pkts, blocking::wake_datagrams());
        std::thread::sleep(Duration::from_millis(300));
        if s.stats().out_pkts == out0 {
            assert_eq!(blocking::wake_datagrams(), wakes0, "wake-ups while idle");
            break;
        }
        assert!(Instant::now() < end, "the link never went quiet");
    }
    drop(s);
    drop(stop);
    drop(relay);
    rt.shutdown_timeout(Duration::from_secs(1));
}

#[test]
fn tokio_client_echoes_1mib_through_blocking_listener() {
    let _s = serial();
    let cfg = config(StreamMode::Stream);
    let (addr, stop) = blocking_echo_server(&cfg);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let data = pattern(1 << 20);
    let got = rt.block_on(async {
        let s = kcp_session::Session::dial(addr, &cfg).await.unwrap();
        let (mut r, mut w) = s.into_split();
        let d = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&d).await.unwrap();
            w
        });
        let mut got = vec![0u8; data.len()];
        tokio::time::timeout(Duration::from_secs(60), r.read_exact(&mut got))
            .await
            .expect("echo in time")
            .unwrap();
        drop(writer.await.unwrap());
        got
    });
    assert!(got == data, "echo differs");
    drop(rt);
    drop(stop);
}

#[test]
fn blocking_to_blocking_stream_and_messages() {
    let _s = serial();
    let cfg = config(StreamMode::Stream);
    let (addr, stop) = blocking_echo_server(&cfg);
    let data = pattern(1 << 20);
    let s = blocking::Session::dial(addr, &cfg).unwrap();
    assert_eq!(s.peer_addr(), addr);
    assert_ne!(s.local_addr().port(), 0);
    let got = blocking_echo_round_trip(&s, &data);
    assert!(got == data, "echo differs");
    drop(s);

    // Message mode: every message arrives whole, in order.
    let mcfg = config(StreamMode::Message);
    let listener = blocking::Listener::listen("127.0.0.1:0", &mcfg).unwrap();
    let c = blocking::Session::dial(listener.local_addr(), &mcfg).unwrap();
    let sizes = [1usize, 7, 100, 1200, 1400, 5000, 20_000, 30_000];
    for (i, &n) in sizes.iter().enumerate() {
        c.send_msg(&pattern(n + i)[i..]).unwrap();
    }
    let srv = listener.accept_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(srv.conv(), c.conv());
    let mut buf = vec![0u8; 64 * 1024];
    for (i, &n) in sizes.iter().enumerate() {
        let got = srv.recv_msg(&mut buf).unwrap();
        assert_eq!(&buf[..got], &pattern(n + i)[i..], "message {i}");
        // And back.
        srv.send_msg(&buf[..got]).unwrap();
    }
    let mut small = [0u8; 4];
    for (i, &n) in sizes.iter().enumerate() {
        if n > small.len() {
            assert!(wait_until(Duration::from_secs(10), || c.available() == n));
            match c.recv_msg(&mut small) {
                Err(Error::BufferTooSmall { need, .. }) => assert_eq!(need, n),
                other => panic!("expected BufferTooSmall, got {other:?}"),
            }
        }
        let got = c.recv_msg(&mut buf).unwrap();
        assert_eq!(&buf[..got], &pattern(n + i)[i..], "echoed message {i}");
    }
    drop((c, srv, listener));
    drop(stop);
}

#[test]
fn read_timeout_fires_as_timed_out() {
    let _s = serial();
    let cfg = config(StreamMode::Stream);
    let listener = blocking::Listener::listen("127.0.0.1:0", &cfg).unwrap();
    let mut c = blocking::Session::dial(listener.local_addr(), &cfg).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(200)));
    let t0 = Instant::now();
    let mut buf = [0u8; 16];
    let e = c.read(&mut buf).unwrap_err();
    let took = t0.elapsed();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    assert!(
        took >= Duration::from_millis(195) && took < Duration::from_secs(2),
        "{took:?}"
    );
    // recv_msg too, as Error::Timeout.
    let t0 = Instant::now();
    assert!(matches!(c.recv_msg(&mut buf), Err(Error::Timeout)));
    assert!(t0.elapsed() >= Duration::from_millis(195));
    // The session still works afterwards.
    c.write_all(b"after").unwrap();
    let srv = listener.accept_timeout(Duration::from_secs(10)).unwrap();
    srv.set_read_timeout(Some(Duration::from_secs(10)));
    let mut got = [0u8; 5];
    (&srv).read_exact(&mut got).unwrap();
    assert_eq!(&got, b"after");
}

#[test]
fn try_read_would_block_then_data() {
    let _s = serial();
    let cfg = config(StreamMode::Stream);
    let listener = blocking::Listener::listen("127.0.0.1:0", &cfg).unwrap();
    let c = blocking::Session::dial(listener.local_addr(), &cfg).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(
        c.try_read(&mut buf).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    assert!(matches!(c.try_recv_msg(&mut buf), Err(Error::WouldBlock)));
    assert_eq!(c.available(), 0);
    (&c).write_all(b"ping").unwrap();
    let srv = listener.accept_timeout(Duration::from_secs(10)).unwrap();
    assert!(wait_until(Duration::from_secs(10), || srv.available() == 4));
    assert_eq!(srv.try_read(&mut buf).unwrap(), 4);
    assert_eq!(&buf[..4], b"ping");
    assert_eq!(
        srv.try_read(&mut buf).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    (&srv).write_all(b"pong!").unwrap();
    assert!(wait_until(Duration::from_secs(10), || c.available() > 0));
    assert_eq!(c.try_read(&mut buf).unwrap(), 5);
    assert_eq!(&buf[..5], b"pong!");
}

#[test]
fn accept_timeout_times_out() {
    let _s = serial();
    let cfg = config(StreamMode::Stream);
    let listener = blocking::Listener::listen("127.0.0.1:0", &cfg).unwrap();
    let t0 = Instant::now();
    assert!(matches!(
        listener.accept_timeout(Duration::from_millis(150)),
        Err(Error::Timeout)
    ));
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(145) && took < Duration::from_secs(2),
        "{took:?}"
    );
    listener.close();
    assert!(matches!(listener.accept(), Err(Error::Closed)));
}

#[test]
fn close_delivers_data_written_just_before() {
    let _s = serial();
    let cfg = config(StreamMode::Stream);
    let listener = blocking::Listener::listen("127.0.0.1:0", &cfg).unwrap();
    let data = pattern(20_000);
    for round in 0..5 {
        let mut c = blocking::Session::dial(listener.local_addr(), &cfg).unwrap();
        c.write_all(&data).unwrap();
        if round % 2 == 0 {
            c.close().unwrap();
            assert!(matches!(c.close(), Err(Error::Closed)));
            assert!(c.is_closed());
        }
        drop(c);
        let mut srv = listener.accept_timeout(Duration::from_secs(10)).unwrap();
        let mut got = vec![0u8; data.len()];
        srv.read_exact(&mut got).unwrap();
        assert!(got == data, "round {round}");
    }
}

#[test]
fn threads_end_when_handles_drop() {
    let _s = serial();
    let base = blocking::live_threads();
    assert_eq!(base, 0);
    let cfg = config(StreamMode::Stream);
    let listener = blocking::Listener::listen("127.0.0.1:0", &cfg).unwrap();
    let c = blocking::Session::dial(listener.local_addr(), &cfg).unwrap();
    assert_eq!(blocking::live_threads(), 2);
    (&c).write_all(b"x").unwrap();
    let srv = listener.accept_timeout(Duration::from_secs(10)).unwrap();
    // The dialed session's thread is joined when it is dropped.
    drop(c);
    assert_eq!(blocking::live_threads(), 1);
    // The listener's thread outlives the listener while an accepted
    // session uses its socket.
    drop(listener);
    let mut b = [0u8; 1];
    (&srv).read_exact(&mut b).unwrap();
    assert_eq!(blocking::live_threads(), 1);
    drop(srv);
    assert_eq!(blocking::live_threads(), 0);

    // A closed (not dropped) session's thread ends by itself.
    let listener = blocking::Listener::listen("127.0.0.1:0", &cfg).unwrap();
    let c = blocking::Session::dial(listener.local_addr(), &cfg).unwrap();
    drop(listener);
    assert!(wait_until(
        Duration::from_secs(5),
        || blocking::live_threads() == 1
    ));
    c.close().unwrap();
    assert!(wait_until(
        Duration::from_secs(5),
        || blocking::live_threads() == 0
    ));
    assert!(matches!(c.error(), Some(Error::Closed)));
}

#[test]
fn listener_drops_and_counts_junk() {
    let _s = serial();
    let cfg = config(StreamMode::Stream);
    let listener = blocking::Listener::listen("127.0.0.1:0", &cfg).unwrap();
    let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..5u8 {
        junk.send_to(&[i; 100], listener.local_addr()).unwrap();
    }
    // A client with another key: its datagrams fail the check too.
    let other = Config::builder()
        .crypt_kcptun("aes", "another key")
        .build()
        .unwrap();
    let c = blocking::Session::dial(listener.local_addr(), &other).unwrap();
    (&c).write_all(b"hello").unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || listener.stats().in_csum_errors
            >= 6),
        "{}",
        listener.stats()
    );
    assert_eq!(listener.session_count(), 0);
    assert!(matches!(
        listener.accept_timeout(Duration::from_millis(50)),
        Err(Error::Timeout)
    ));
    // A right client still gets in.
    let good = blocking::Session::dial(listener.local_addr(), &cfg).unwrap();
    (&good).write_all(b"hi").unwrap();
    let srv = listener.accept_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(srv.peer_addr().port(), good.local_addr().port());
    assert_eq!(listener.session_count(), 1);
    assert_eq!(listener.stats().passive_opens, 1);
}
