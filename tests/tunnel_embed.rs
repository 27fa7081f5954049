//! The tunnel as a library: a `Client` and a `Server` embedded in one
//! process over loopback, carrying bytes to an echo target byte-exact
//! (several concurrent streams), kcptun's multiport on both sides, unix
//! socket `--localaddr` / `--target`, `--autoexpire` with the scavenger, and
//! the `--snmplog` CSV file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kcp_session::tunnel::client::LocalAddr;
use kcp_session::tunnel::config::{ClientConfig, ServerConfig};
use kcp_session::tunnel::log::Log;
use kcp_session::tunnel::pump::Counters;
use kcp_session::tunnel::{Client, Server};
use kcp_session::Snmp;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const BOUND: Duration = Duration::from_secs(20);

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kcp-tunnel-embed-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(s: S) {
    let (mut r, mut w) = tokio::io::split(s);
    let _ = tokio::io::copy(&mut r, &mut w).await;
}

async fn tcp_echo() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = l.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(echo(s));
        }
    });
    addr
}

fn unix_echo(path: &Path) {
    let l = UnixListener::bind(path).expect("bind unix echo");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(echo(s));
        }
    });
}

fn quiet_log() -> Log {
    Log::open(
        std::env::temp_dir()
            .join(format!("kcp-tunnel-embed-{}.log", std::process::id()))
            .to_str()
            .expect("utf8"),
    )
    .expect("log")
}

/// A running server or client and the way to stop it.
struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    counters: Arc<Counters>,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        tokio::time::timeout(BOUND, &mut self.task)
            .await
            .expect("stops")
            .expect("join");
    }
}

fn common(c: &mut kcp_session::tunnel::config::Common) {
    c.key = "embed-test".into();
    c.mode = "fast3".into();
    c.quiet = true;
}

/// Binds a server on `listen` (a free port range is retried) in front of `target`.
async fn server(target: &str, span: u16, tweak: impl Fn(&mut ServerConfig)) -> (Running, u16) {
    for attempt in 0..50u32 {
        let base = 20_000 + ((std::process::id() * 7 + attempt * 101) % 40_000) as u16;
        let listen = if span == 1 {
            format!("127.0.0.1:{base}")
        } else {
            format!("127.0.0.1:{base}-{}", base + span - 1)
        };
        let mut cfg = ServerConfig {
            listen,
            target: target.into(),
            ..Default::default()
        };
        common(&mut cfg.common);
        tweak(&mut cfg);
        let Ok(s) = Server::bind_with_log(&cfg, quiet_log()).await else {
            continue;
        };
        assert_eq!(
            s.local_addrs().len(),
            span as usize,
            "one listener per port"
        );
        let counters = s.counters();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            s.run_until(async move {
                let _ = rx.await;
            })
            .await
            .expect("server runs")
        });
        return (
            Running {
                stop: Some(tx),
                task,
                counters,
            },
            base,
        );
    }
    panic!("no free UDP port range");
}

async fn client(
    remote: String,
    local: &str,
    tweak: impl Fn(&mut ClientConfig),
) -> (Running, LocalAddr) {
    let mut cfg = ClientConfig {
        localaddr: local.into(),
        remoteaddr: remote,
        ..Default::default()
    };
    common(&mut cfg.common);
    tweak(&mut cfg);
    let c = Client::bind_with_log(&cfg, quiet_log())
        .await
        .expect("client binds");
    let addr = c.local_addr().clone();
    let counters = c.counters();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        c.run_until(async move {
            let _ = rx.await;
        })
        .await
        .expect("client runs")
    });
    (
        Running {
            stop: Some(tx),
            task,
            counters,
        },
        addr,
    )
}

fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Sends `data` and reads it back through the echo, byte-exact.
async fn round_trip<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(s: S, data: Vec<u8>) -> S {
    let (mut r, mut w) = tokio::io::split(s);
    let want = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.expect("write");
        w
    });
    let mut got = vec![0u8; want.len()];
    tokio::time::timeout(BOUND, r.read_exact(&mut got))
        .await
        .expect("echo in time")
        .expect("read");
    assert!(got == want, "echoed bytes differ");
    let w = writer.await.expect("writer");
    r.unsplit(w)
}

async fn connect(addr: &LocalAddr) -> TcpStream {
    let LocalAddr::Tcp(a) = addr else {
        panic!("tcp expected")
    };
    TcpStream::connect(a).await.expect("connect to client")
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < BOUND, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_are_byte_exact() {
    for (nocomp, smuxver) in [(false, 2), (true, 1)] {
        let target = tcp_echo().await;
        let (srv, port) = server(&target, 1, |c| {
            c.common.nocomp = nocomp;
            c.common.smuxver = smuxver;
        })
        .await;
        let (cli, addr) = client(format!("127.0.0.1:{port}"), "127.0.0.1:0", |c| {
            c.conn = 2;
            c.common.nocomp = nocomp;
            c.common.smuxver = smuxver;
        })
        .await;
        let mut jobs = Vec::new();
        for i in 0..8u64 {
            let addr = addr.clone();
            jobs.push(tokio::spawn(async move {
                let len = 1 + (i as usize * 37_001) % 300_000;
                round_trip(connect(&addr).await, payload(i, len)).await;
                len as u64
            }));
        }
        let mut total = 0;
        for j in jobs {
            total += j.await.expect("stream job");
        }
        let st = cli.counters.snapshot();
        assert_eq!(st.streams_opened, 8);
        assert_eq!(st.sessions_opened, 2, "--conn 2");
        wait_for("all bytes counted", || {
            let c = cli.counters.snapshot();
            c.bytes_to_remote == total && c.bytes_from_remote == total
        })
        .await;
        assert_eq!(srv.counters.snapshot().streams_opened, 8);
        cli.stop().await;
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiport_spreads_sessions_over_the_range() {
    let target = tcp_echo().await;
    let (srv, base) = server(&target, 2, |_| {}).await;
    const CONN: u64 = 24;
    let (cli, addr) = client(
        format!("127.0.0.1:{base}-{}", base + 1),
        "127.0.0.1:0",
        |c| c.conn = CONN as i64,
    )
    .await;
    // Each connection takes the next of the CONN slots, so each dials a new
    // session, to a random port of the range (kcptun: min + r mod span).
    // All 24 on one port has probability 2^-23.
    let mut keep = Vec::new();
    for i in 0..CONN {
        keep.push(round_trip(connect(&addr).await, payload(i, 1000)).await);
    }
    let per_port = cli.counters.snapshot().sessions_per_port;
    assert_eq!(
        per_port.iter().map(|(_, n)| n).sum::<u64>(),
        CONN,
        "{per_port:?}"
    );
    assert_eq!(
        per_port.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        [base, base + 1],
        "sessions on both ports of the range and nowhere else: {per_port:?}"
    );
    wait_for("the server saw the same sessions per port", || {
        srv.counters.snapshot().sessions_per_port == per_port
    })
    .await;
    drop(keep);
    cli.stop().await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_localaddr_and_target() {
    let dir = tmp("unix");
    let target = dir.join("target.sock");
    unix_echo(&target);
    let (srv, port) = server(target.to_str().expect("utf8"), 1, |_| {}).await;
    let local = dir.join("local.sock");
    let (cli, addr) = client(
        format!("127.0.0.1:{port}"),
        local.to_str().expect("utf8"),
        |_| {},
    )
    .await;
    assert_eq!(addr, LocalAddr::Unix(local.clone()));
    for i in 0..3 {
        let s = UnixStream::connect(&local)
            .await
            .expect("connect unix client");
        round_trip(s, payload(i, 70_000)).await;
    }
    assert_eq!(srv.counters.snapshot().streams_opened, 3);
    cli.stop().await;
    assert!(
        !local.exists(),
        "the client removes its socket file on shutdown"
    );
    srv.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoexpire_replaces_the_session_while_old_streams_keep_working() {
    let target = tcp_echo().await;
    let (srv, port) = server(&target, 1, |_| {}).await;
    let (cli, addr) = client(format!("127.0.0.1:{port}"), "127.0.0.1:0", |c| {
        c.autoexpire = 1;
        c.scavengettl = 1;
    })
    .await;
    let a = round_trip(connect(&addr).await, payload(1, 5000)).await;
    let opened = Instant::now();
    assert_eq!(cli.counters.snapshot().sessions_opened, 1);
    // The session expires 1 s after it was dialled; wait that out.
    tokio::time::sleep(Duration::from_millis(1200).saturating_sub(opened.elapsed())).await;
    let b = round_trip(connect(&addr).await, payload(2, 5000)).await;
    let st = cli.counters.snapshot();
    assert_eq!(
        (st.sessions_opened, st.sessions_expired),
        (2, 1),
        "a new session replaced the expired one"
    );
    // The old stream still works until the scavenger's TTL runs out.
    let mut a = round_trip(a, payload(3, 5000)).await;
    wait_for("the scavenger closes the expired session", || {
        cli.counters.snapshot().sessions_scavenged >= 1
    })
    .await;
    let mut buf = [0u8; 16];
    let _ = a.write_all(b"after ttl").await;
    let n = tokio::time::timeout(BOUND, a.read(&mut buf))
        .await
        .expect("old stream ends in time");
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "the scavenged session's stream is closed: {n:?}"
    );
    // kcptun closes every session at its expiry + TTL, the current one too
    // (the new one's may have come by now); a new connection still gets a
    // live session, redialled if need be.
    drop(b);
    round_trip(connect(&addr).await, payload(4, 5000)).await;
    cli.stop().await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snmplog_writes_kcptuns_csv() {
    let dir = tmp("snmp");
    let target = tcp_echo().await;
    let (srv, port) = server(&target, 1, |_| {}).await;
    let pattern = format!("{}/snmp-20060102.csv", dir.display());
    let (cli, addr) = client(format!("127.0.0.1:{port}"), "127.0.0.1:0", |c| {
        c.common.snmplog = pattern.clone();
        c.common.snmpperiod = 1;
    })
    .await;
    round_trip(connect(&addr).await, payload(9, 20_000)).await;
    let file = || {
        std::fs::read_dir(&dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .next()
    };
    wait_for("two rows in the snmp log", || {
        file()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .is_some_and(|t| t.lines().count() >= 3)
    })
    .await;
    let path = file().expect("file");
    let name = path
        .file_name()
        .expect("name")
        .to_string_lossy()
        .to_string();
    assert!(
        name.len() == "snmp-20240101.csv".len()
            && name.starts_with("snmp-20")
            && name.ends_with(".csv"),
        "{name}"
    );
    assert!(
        !name.contains("20060102"),
        "the layout is formatted: {name}"
    );
    let text = std::fs::read_to_string(&path).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        kcp_session::tunnel::log::snmp_csv_header(),
        "kcptun's header, once"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    for row in &lines[1..] {
        let cols: Vec<&str> = row.split(',').collect();
        assert_eq!(cols.len(), Snmp::header().len() + 1, "{row}");
        let t: u64 = cols[0].parse().expect("unix time");
        assert!(t <= now && now - t < 60, "{row}");
        assert!(cols[1..].iter().all(|c| c.parse::<u64>().is_ok()), "{row}");
    }
    let last: Vec<u64> = lines
        .last()
        .expect("row")
        .split(',')
        .skip(1)
        .map(|c| c.parse().expect("n"))
        .collect();
    // Without the feature `snmp` every counter reads 0 (kcp-go's kcp_no_snmp).
    if cfg!(feature = "snmp") {
        assert!(
            last[0] > 20_000,
            "BytesSent counts the transfer: {}",
            last[0]
        );
    }
    cli.stop().await;
    srv.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--QPP` on both ends: concurrent streams byte-exact, and a short
/// request answered before anything else is written (the pump flushes the
/// pad's buffered chunk when its reader goes idle).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qpp_streams_are_byte_exact() {
    let target = tcp_echo().await;
    let (srv, port) = server(&target, 1, |c| {
        c.common.qpp = true;
        c.common.qpp_count = 61;
    })
    .await;
    let (cli, addr) = client(format!("127.0.0.1:{port}"), "127.0.0.1:0", |c| {
        c.common.qpp = true;
        c.common.qpp_count = 61;
    })
    .await;
    let mut jobs = Vec::new();
    for i in 0..6u64 {
        let addr = addr.clone();
        jobs.push(tokio::spawn(async move {
            let mut s = connect(&addr).await;
            // Ping-pong first: 7 bytes, then wait for exactly those back.
            s.write_all(b"request").await.expect("write");
            let mut small = [0u8; 7];
            tokio::time::timeout(BOUND, s.read_exact(&mut small))
                .await
                .expect("short echo in time")
                .expect("read");
            assert_eq!(&small, b"request");
            round_trip(s, payload(100 + i, 1 + (i as usize * 91_001) % 400_000)).await;
        }));
    }
    for j in jobs {
        j.await.expect("stream job");
    }
    cli.stop().await;
    srv.stop().await;
}

/// The pad is really applied on the wire: a QPP client in front of a plain
/// server delivers to the target exactly `QppPad::encrypt` of what the
/// application wrote (the pad itself is checked byte for byte against Go's
/// in tests/qpp_vectors.rs), not the plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qpp_client_scrambles_what_a_plain_server_sees() {
    use kcp_session::qpp::{QppPad, QppState};
    let sink = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
    let target = sink.local_addr().expect("addr").to_string();
    let (got_tx, got_rx) = oneshot::channel::<Vec<u8>>();
    tokio::spawn(async move {
        let (mut s, _) = sink.accept().await.expect("accept");
        let mut all = vec![0u8; 150_000];
        s.read_exact(&mut all).await.expect("sink reads");
        let _ = got_tx.send(all);
    });
    let (srv, port) = server(&target, 1, |_| {}).await;
    let (cli, addr) = client(format!("127.0.0.1:{port}"), "127.0.0.1:0", |c| {
        c.common.qpp = true;
        c.common.qpp_count = 13;
    })
    .await;
    let data = payload(7, 150_000);
    let mut s = connect(&addr).await;
    s.write_all(&data).await.expect("write");
    let got = tokio::time::timeout(BOUND, got_rx)
        .await
        .expect("target got the bytes in time")
        .expect("sink result");
    let pad = QppPad::new(b"embed-test", 13).expect("pad");
    let mut want = data.clone();
    pad.encrypt(&mut want, &mut QppState::new(b"embed-test"));
    assert_eq!(got.len(), data.len());
    assert!(got != data, "plaintext reached the target");
    assert!(got == want, "target bytes are not the QPP encryption");
    drop(s);
    cli.stop().await;
    srv.stop().await;
}
