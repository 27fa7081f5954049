//! smux (§7.6) and Snappy framing (§7.5) over in-memory pipes: byte-exact
//! transfers with v1 and v2, the exact frames on the wire, v2 flow control
//! (initial window, UPD timing), protocol errors, keepalive and half-close.
//! Timing tests run on tokio's paused clock, so they are deterministic.

use std::time::Duration;

use kcp_session::comp::{masked_crc32c, CompStream, STREAM_IDENTIFIER};
use kcp_session::smux::{
    Config, KeepAlive, Session, Version, CMD_FIN, CMD_NOP, CMD_PSH, CMD_SYN, CMD_UPD,
};
use kcp_session::Error;
use tokio::io::{duplex, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};

fn cfg(version: Version) -> Config {
    Config {
        version,
        keep_alive: KeepAlive::Disabled,
        ..Config::kcptun()
    }
}

/// Deterministic, poorly compressible bytes.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Echo every accepted stream until EOF, then shut it down.
fn spawn_echo_server(server: Session) -> tokio::task::JoinHandle<Session> {
    tokio::spawn(async move {
        while let Ok(s) = server.accept_stream().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(s);
                tokio::io::copy(&mut r, &mut w).await.expect("echo copy");
                w.shutdown().await.expect("echo shutdown");
            });
        }
        server
    })
}

async fn echo_roundtrip<S: AsyncRead + AsyncWrite + Send + 'static>(
    s: S,
    data: Vec<u8>,
) -> Vec<u8> {
    let (mut r, mut w) = tokio::io::split(s);
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.expect("write");
        w.shutdown().await.expect("shutdown");
        w
    });
    let mut back = Vec::new();
    r.read_to_end(&mut back).await.expect("read back");
    drop(writer.await.expect("writer task"));
    back
}

async fn transfer_matrix(version: Version, compress: bool) {
    let (a, b) = duplex(64 * 1024);
    let config = Config {
        max_stream_buffer: 256 * 1024,
        max_receive_buffer: 1 << 20,
        ..cfg(version)
    };
    let (client, server) = if compress {
        (
            Session::client(CompStream::new(a), config).expect("client"),
            Session::server(CompStream::new(b), config).expect("server"),
        )
    } else {
        (
            Session::client(a, config).expect("client"),
            Session::server(b, config).expect("server"),
        )
    };
    let _server = spawn_echo_server(server);
    let sizes = [1usize, 7, 8192, 8193, 65536, 300_000, 2 << 20];
    let mut tasks = Vec::new();
    for (i, &len) in sizes.iter().enumerate() {
        let stream = client.open_stream().await.expect("open");
        assert_eq!(stream.id(), 3 + 2 * i as u32, "client ids are odd from 3");
        let data = if i % 2 == 0 {
            pattern(len, i as u64)
        } else {
            vec![b'a'; len]
        };
        tasks.push(tokio::spawn(async move {
            let back = echo_roundtrip(stream, data.clone()).await;
            assert!(
                back == data,
                "stream {i}: {} bytes echoed, {} sent",
                back.len(),
                data.len()
            );
        }));
    }
    for t in tasks {
        t.await.expect("transfer task");
    }
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_concurrent_byte_exact() {
    transfer_matrix(Version::V1, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_concurrent_byte_exact() {
    transfer_matrix(Version::V2, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_over_snappy_byte_exact() {
    transfer_matrix(Version::V2, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_over_snappy_byte_exact() {
    transfer_matrix(Version::V1, true).await;
}

/// Reads one frame from a raw pipe end: (version, cmd, sid, payload).
async fn read_frame(raw: &mut DuplexStream) -> (u8, u8, u32, Vec<u8>) {
    let mut h = [0u8; 8];
    raw.read_exact(&mut h).await.expect("frame header");
    let len = u16::from_le_bytes([h[2], h[3]]) as usize;
    let mut p = vec![0u8; len];
    raw.read_exact(&mut p).await.expect("frame payload");
    (h[0], h[1], u32::from_le_bytes([h[4], h[5], h[6], h[7]]), p)
}

fn frame(version: u8, cmd: u8, sid: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![version, cmd];
    f.extend_from_slice(&(payload.len() as u16).to_le_bytes());
    f.extend_from_slice(&sid.to_le_bytes());
    f.extend_from_slice(payload);
    f
}

#[tokio::test]
async fn wire_bytes_of_syn_psh_fin() {
    let (a, mut raw) = duplex(1 << 16);
    let client = Session::client(a, cfg(Version::V2)).expect("client");
    let mut s = client.open_stream().await.expect("open");
    s.write_all(b"hi").await.expect("write");
    s.shutdown().await.expect("shutdown");
    let mut got = vec![0u8; 26];
    raw.read_exact(&mut got).await.expect("raw read");
    assert_eq!(
        got,
        [
            2, CMD_SYN, 0, 0, 3, 0, 0, 0, //
            2, CMD_PSH, 2, 0, 3, 0, 0, 0, b'h', b'i', //
            2, CMD_FIN, 0, 0, 3, 0, 0, 0,
        ]
    );
    let s2 = client.open_stream().await.expect("open 2");
    assert_eq!(s2.id(), 5);
}

#[tokio::test]
async fn server_ids_are_even_from_2_and_large_writes_split_at_frame_size() {
    let (a, mut raw) = duplex(1 << 20);
    let config = Config {
        max_frame_size: 1000,
        ..cfg(Version::V1)
    };
    let server = Session::server(a, config).expect("server");
    let mut s = server.open_stream().await.expect("open");
    assert_eq!(s.id(), 2);
    let s4 = server.open_stream().await.expect("open");
    assert_eq!(s4.id(), 4);
    s.write_all(&[9u8; 2500]).await.expect("write");
    s.flush().await.expect("flush");
    assert_eq!(read_frame(&mut raw).await, (1, CMD_SYN, 2, vec![]));
    assert_eq!(read_frame(&mut raw).await, (1, CMD_SYN, 4, vec![]));
    for len in [1000, 1000, 500] {
        assert_eq!(read_frame(&mut raw).await, (1, CMD_PSH, 2, vec![9u8; len]));
    }
}

/// §7.6: the writer stops at the initial peer window of 262144 bytes and
/// resumes exactly as far as a UPD allows.
#[tokio::test(start_paused = true)]
async fn v2_writer_honours_initial_window_and_upd() {
    let (a, mut raw) = duplex(1 << 22);
    let client = Session::client(a, cfg(Version::V2)).expect("client");
    let mut s = client.open_stream().await.expect("open");
    let writer = tokio::spawn(async move {
        s.write_all(&vec![1u8; 1 << 20]).await.expect("write");
        s
    });
    assert_eq!(read_frame(&mut raw).await.1, CMD_SYN);
    let mut got = 0usize;
    while got < 262_144 {
        let (_, cmd, sid, p) = read_frame(&mut raw).await;
        assert_eq!((cmd, sid), (CMD_PSH, 3));
        assert!(p.len() <= 8192, "frame size");
        got += p.len();
    }
    assert_eq!(got, 262_144, "exactly the initial window");
    // On the paused clock this only fires once every task is idle: the
    // writer is blocked, not slow.
    let more = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut raw)).await;
    assert!(more.is_err(), "wrote past the peer window");
    // consumed 100000, window 300000: 300000 - (262144 - 100000) more bytes.
    let mut upd = Vec::new();
    upd.extend_from_slice(&100_000u32.to_le_bytes());
    upd.extend_from_slice(&300_000u32.to_le_bytes());
    raw.write_all(&frame(2, CMD_UPD, 3, &upd))
        .await
        .expect("send UPD");
    let allowed = 300_000 - (262_144 - 100_000);
    let mut more_bytes = 0usize;
    while more_bytes < allowed {
        let (_, cmd, _, p) = read_frame(&mut raw).await;
        assert_eq!(cmd, CMD_PSH);
        more_bytes += p.len();
    }
    assert_eq!(more_bytes, allowed);
    let more = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut raw)).await;
    assert!(more.is_err(), "wrote past the updated window");
    assert!(!writer.is_finished());
    writer.abort();
}

/// §7.6: UPD(consumed, streambuf) on the first read and whenever at least
/// streambuf/2 bytes were read since the last one.
#[tokio::test(start_paused = true)]
async fn v2_reader_sends_upd_on_first_read_and_every_half_buffer() {
    let (a, mut raw) = duplex(1 << 20);
    let config = Config {
        max_stream_buffer: 1000,
        max_receive_buffer: 4000,
        ..cfg(Version::V2)
    };
    let server = Session::server(a, config).expect("server");
    raw.write_all(&frame(2, CMD_SYN, 3, &[]))
        .await
        .expect("syn");
    raw.write_all(&frame(2, CMD_PSH, 3, &[5u8; 10]))
        .await
        .expect("psh");
    let mut s = server.accept_stream().await.expect("accept");
    assert_eq!(s.id(), 3);
    let mut buf = [0u8; 10];
    s.read_exact(&mut buf).await.expect("read 10");
    let upd = |consumed: u32| {
        let mut p = consumed.to_le_bytes().to_vec();
        p.extend_from_slice(&1000u32.to_le_bytes());
        (2u8, CMD_UPD, 3u32, p)
    };
    assert_eq!(read_frame(&mut raw).await, upd(10), "UPD on the first read");
    raw.write_all(&frame(2, CMD_PSH, 3, &[6u8; 499]))
        .await
        .expect("psh");
    let mut buf = vec![0u8; 499];
    s.read_exact(&mut buf).await.expect("read 499");
    let nothing = tokio::time::timeout(Duration::from_secs(1), read_frame(&mut raw)).await;
    assert!(
        nothing.is_err(),
        "499 < 500 read since the last UPD: no UPD yet"
    );
    raw.write_all(&frame(2, CMD_PSH, 3, &[7u8; 1]))
        .await
        .expect("psh");
    let mut one = [0u8; 1];
    s.read_exact(&mut one).await.expect("read 1");
    assert_eq!(
        read_frame(&mut raw).await,
        upd(510),
        "500 read since the last UPD"
    );
}

/// The session receive budget (kcptun `smuxbuf`) bounds what a v1 session
/// buffers for a stream nobody reads: the sender stalls instead.
#[tokio::test(start_paused = true)]
async fn receive_budget_stalls_the_sender_of_an_unread_stream() {
    let (a, b) = duplex(16 * 1024);
    let config = Config {
        max_receive_buffer: 64 * 1024,
        max_stream_buffer: 64 * 1024,
        ..cfg(Version::V1)
    };
    let client = Session::client(a, config).expect("client");
    let server = Session::server(b, config).expect("server");
    let mut c = client.open_stream().await.expect("open");
    let data = pattern(1 << 20, 3);
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        c.write_all(&sent).await.expect("write");
        c.shutdown().await.expect("shutdown");
        c
    });
    let mut s = server.accept_stream().await.expect("accept");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !writer.is_finished(),
        "1 MiB went into a 64 KiB budget + 16 KiB pipe"
    );
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.expect("read");
    assert!(back == data);
    drop(writer.await.expect("writer"));
}

/// A v2 peer that ignores flow control: data a held stream's window allows
/// is read past the session budget (so windows cannot deadlock across
/// streams, tests/smux_flow.rs), but no further. A stream nobody reads holds
/// at most smux's initial window plus the budget; streams not yet accepted
/// stay on the budget alone. The raw peer writes until it stalls; what it
/// got into the pipe is counted.
#[tokio::test(start_paused = true)]
async fn v2_hostile_peer_is_bounded_by_window_and_budget() {
    const PIPE: usize = 16 * 1024;
    const BUDGET: usize = 64 * 1024;
    const INITIAL_WINDOW: usize = 262_144;
    const CHUNK: usize = 32 * 1024;
    for accepted in [true, false] {
        let (a, raw) = duplex(PIPE);
        let config = Config {
            max_receive_buffer: BUDGET,
            max_stream_buffer: 16 * 1024,
            ..cfg(Version::V2)
        };
        let server = Session::server(a, config).expect("server");
        let (mut raw_rd, mut raw_wr) = tokio::io::split(raw);
        tokio::spawn(async move {
            let mut sink = vec![0u8; 4096];
            while let Ok(1..) = raw_rd.read(&mut sink).await {}
        });
        let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let w = written.clone();
        tokio::spawn(async move {
            let v = Version::V2.byte();
            raw_wr
                .write_all(&frame(v, CMD_SYN, 3, &[]))
                .await
                .expect("syn");
            let body = pattern(CHUNK, 9);
            for _ in 0..64 {
                raw_wr
                    .write_all(&frame(v, CMD_PSH, 3, &body))
                    .await
                    .expect("psh");
                w.fetch_add(CHUNK, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let _held = if accepted {
            Some(server.accept_stream().await.expect("accept"))
        } else {
            None
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        let got = written.load(std::sync::atomic::Ordering::Relaxed);
        let bound = if accepted {
            INITIAL_WINDOW + BUDGET
        } else {
            BUDGET
        } + CHUNK
            + PIPE;
        assert!(
            got <= bound,
            "accepted={accepted}: the peer got {got} bytes in, bound {bound}"
        );
        assert!(
            got >= BUDGET,
            "accepted={accepted}: the budget itself was not read ({got} bytes)"
        );
    }
}

#[tokio::test]
async fn version_mismatch_ends_the_session() {
    let (a, mut raw) = duplex(1 << 16);
    let server = Session::server(a, cfg(Version::V2)).expect("server");
    raw.write_all(&frame(1, CMD_SYN, 3, &[]))
        .await
        .expect("v1 syn");
    match server.accept_stream().await {
        Err(Error::SmuxProtocol(_)) => {}
        other => panic!("expected SmuxProtocol, got {other:?}"),
    }
    assert!(server.is_closed());
}

#[tokio::test]
async fn upd_on_v1_and_unknown_cmd_end_the_session() {
    for bad in [
        frame(1, CMD_UPD, 3, &[0u8; 8]),
        frame(1, 9, 3, &[]),
        frame(1, CMD_NOP, 0, &[1]),
    ] {
        let (a, mut raw) = duplex(1 << 16);
        let server = Session::server(a, cfg(Version::V1)).expect("server");
        raw.write_all(&bad).await.expect("send");
        match server.accept_stream().await {
            Err(Error::SmuxProtocol(_)) => {}
            other => panic!("frame {bad:?}: expected SmuxProtocol, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn peer_eof_fails_accept_and_streams() {
    let (a, raw) = duplex(1 << 16);
    let client = Session::client(a, cfg(Version::V2)).expect("client");
    let mut s = client.open_stream().await.expect("open");
    drop(raw);
    let mut buf = [0u8; 4];
    assert!(
        s.read(&mut buf).await.is_err(),
        "read on a dead session must fail, not EOF"
    );
    assert!(matches!(client.accept_stream().await, Err(Error::Io(_))));
}

#[tokio::test(start_paused = true)]
async fn keepalive_timeout_ends_a_silent_session() {
    let (a, mut raw) = duplex(1 << 16);
    let config = Config {
        keep_alive: KeepAlive::Enabled {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(3),
        },
        ..cfg(Version::V2)
    };
    let client = Session::client(a, config).expect("client");
    // The NOPs go out while the peer says nothing.
    assert_eq!(read_frame(&mut raw).await, (2, CMD_NOP, 0, vec![]));
    let t0 = tokio::time::Instant::now();
    match client.accept_stream().await {
        Err(Error::SmuxKeepaliveTimeout) => {}
        other => panic!("expected SmuxKeepaliveTimeout, got {other:?}"),
    }
    let waited = t0.elapsed();
    assert!(waited <= Duration::from_secs(3), "closed after {waited:?}");
}

#[tokio::test(start_paused = true)]
async fn keepalive_keeps_two_idle_peers_alive() {
    let (a, b) = duplex(1 << 16);
    let config = Config {
        keep_alive: KeepAlive::Enabled {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(3),
        },
        ..cfg(Version::V1)
    };
    let client = Session::client(a, config).expect("client");
    let server = Session::server(b, config).expect("server");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!client.is_closed() && !server.is_closed());
}

#[tokio::test]
async fn half_close_lets_the_other_direction_finish() {
    let (a, b) = duplex(1 << 16);
    let client = Session::client(a, cfg(Version::V2)).expect("client");
    let server = Session::server(b, cfg(Version::V2)).expect("server");
    let mut c = client.open_stream().await.expect("open");
    c.write_all(b"request").await.expect("write");
    c.shutdown().await.expect("shutdown");
    let mut s = server.accept_stream().await.expect("accept");
    let mut req = Vec::new();
    s.read_to_end(&mut req).await.expect("server reads to EOF");
    assert_eq!(req, b"request");
    s.write_all(b"response after the client's FIN")
        .await
        .expect("reply");
    s.shutdown().await.expect("server shutdown");
    let mut resp = Vec::new();
    c.read_to_end(&mut resp).await.expect("client reads reply");
    assert_eq!(resp, b"response after the client's FIN");
    assert!(
        c.write_all(b"x").await.is_err(),
        "write after shutdown must fail"
    );
}

#[tokio::test]
async fn dropped_stream_sends_fin_and_closed_session_fails_open() {
    let (a, mut raw) = duplex(1 << 16);
    let client = Session::client(a, cfg(Version::V1)).expect("client");
    drop(client.open_stream().await.expect("open"));
    assert_eq!(read_frame(&mut raw).await, (1, CMD_SYN, 3, vec![]));
    assert_eq!(read_frame(&mut raw).await, (1, CMD_FIN, 3, vec![]));
    client.close().await;
    assert!(matches!(client.open_stream().await, Err(Error::Closed)));
    let mut rest = Vec::new();
    raw.read_to_end(&mut rest).await.expect("EOF after close");
    assert!(rest.is_empty());
}

/// SYNs are not an unbounded queue: with a peer that does not read,
/// `open_stream` waits once the outgoing queue is full, and resumes when the
/// peer drains it.
#[tokio::test(start_paused = true)]
async fn open_stream_waits_for_queue_space() {
    let (a, mut raw) = duplex(64);
    let client = std::sync::Arc::new(Session::client(a, cfg(Version::V1)).expect("client"));
    let opener = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut streams = Vec::new();
            for _ in 0..20_000 {
                streams.push(client.open_stream().await.expect("open"));
            }
            streams.len()
        })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !opener.is_finished(),
        "20000 SYNs (160 kB) queued for a peer that reads nothing"
    );
    let mut syns = 0usize;
    while syns < 20_000 {
        let (_, cmd, sid, _) = read_frame(&mut raw).await;
        assert_eq!((cmd, sid), (CMD_SYN, 3 + 2 * syns as u32));
        syns += 1;
    }
    assert_eq!(opener.await.expect("opener"), 20_000);
}

/// A peer that stops reading cannot pin the connection: `close` gives the
/// writer a bounded linger, and a keepalive timeout releases it at once.
#[tokio::test(start_paused = true)]
async fn stuck_writer_does_not_pin_the_connection() {
    for keepalive_failure in [false, true] {
        let (a, mut raw) = duplex(1024);
        let config = Config {
            keep_alive: KeepAlive::Enabled {
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(3),
            },
            ..cfg(Version::V1)
        };
        let client = Session::client(a, config).expect("client");
        let mut s = client.open_stream().await.expect("open");
        // 64 KiB into a 1 KiB pipe nobody reads: the writer task blocks.
        s.write_all(&vec![0u8; 64 * 1024]).await.expect("queued");
        let t0 = tokio::time::Instant::now();
        if keepalive_failure {
            assert!(matches!(
                client.accept_stream().await,
                Err(Error::SmuxKeepaliveTimeout)
            ));
        } else {
            tokio::time::timeout(Duration::from_secs(60), client.close())
                .await
                .expect("close never returned");
        }
        drop(s);
        drop(client);
        // The connection is released: the raw end reaches EOF.
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), raw.read_to_end(&mut rest))
            .await
            .expect("the connection was never released")
            .expect("EOF");
        let waited = t0.elapsed();
        assert!(
            waited <= Duration::from_secs(11),
            "released after {waited:?}"
        );
        assert!(rest.len() < 64 * 1024, "the stuck data was not all written");
    }
}

/// Tunnels spawn these futures on multi-threaded runtimes.
#[test]
fn session_futures_are_send() {
    fn is_send<T: Send>(_: &T) {}
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("rt");
    let _guard = rt.enter();
    let (a, _b) = duplex(64);
    let s = Session::client(a, cfg(Version::V1)).expect("client");
    is_send(&s.open_stream());
    is_send(&s.accept_stream());
    is_send(&s.close());
}

#[test]
fn config_is_verified() {
    let bad = [
        Config {
            max_frame_size: 65536,
            ..Config::kcptun()
        },
        Config {
            max_frame_size: 0,
            ..Config::kcptun()
        },
        Config {
            max_stream_buffer: 8 << 20,
            ..Config::kcptun()
        },
        Config {
            keep_alive: KeepAlive::Enabled {
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(5),
            },
            ..Config::kcptun()
        },
    ];
    for c in bad {
        assert!(matches!(c.verify(), Err(Error::InvalidConfig(_))), "{c:?}");
    }
    assert!(Config::kcptun().verify().is_ok());
    assert!(Config::default().verify().is_ok());
    assert!(Version::from_number(3).is_err());
}

// ---- Snappy framing (§7.5) ---------------------------------------------

#[tokio::test]
async fn snappy_first_chunk_matches_spec_example() {
    let (a, mut raw) = duplex(1 << 16);
    let mut c = CompStream::new(a);
    // smux v2 SYN for stream 3.
    c.write_all(&[2, 0, 0, 0, 3, 0, 0, 0]).await.expect("write");
    c.flush().await.expect("flush");
    let mut got = [0u8; 26];
    raw.read_exact(&mut got).await.expect("read");
    let expected =
        hex::decode("ff060000734e61507059010c0000bde37d260200000003000000").expect("hex");
    assert_eq!(got.to_vec(), expected);
    assert_eq!(masked_crc32c(&[2, 0, 0, 0, 3, 0, 0, 0]), 0x267d_e3bd);
}

#[tokio::test]
async fn snappy_compresses_repetitive_chunks_and_round_trips() {
    let (a, b) = duplex(1 << 20);
    let mut w = CompStream::new(a);
    let mut raw = b;
    let data = vec![b'z'; 100_000];
    w.write_all(&data).await.expect("write");
    w.shutdown().await.expect("shutdown");
    let mut wire = Vec::new();
    raw.read_to_end(&mut wire).await.expect("read wire");
    assert_eq!(&wire[..10], &STREAM_IDENTIFIER);
    assert_eq!(wire[10], 0x00, "a compressible chunk is sent compressed");
    assert!(wire.len() < 10_000, "{} bytes on the wire", wire.len());
    let mut r = CompStream::new(&wire[..]);
    let mut back = Vec::new();
    r.read_to_end(&mut back).await.expect("decode");
    assert!(back == data);
}

#[tokio::test]
async fn snappy_reader_skips_padding_and_rejects_corruption() {
    let (a, b) = duplex(1 << 20);
    let mut w = CompStream::new(a);
    let mut raw = b;
    let data = pattern(70_000, 7);
    w.write_all(&data).await.expect("write");
    w.shutdown().await.expect("shutdown");
    let mut wire = Vec::new();
    raw.read_to_end(&mut wire).await.expect("read wire");
    // Insert a padding chunk and a skippable chunk after the identifier.
    let mut padded = wire[..10].to_vec();
    padded.extend_from_slice(&[0xfe, 3, 0, 0, 0, 0, 0, 0x80, 1, 0, 0, 0xaa]);
    padded.extend_from_slice(&wire[10..]);
    let mut back = Vec::new();
    CompStream::new(&padded[..])
        .read_to_end(&mut back)
        .await
        .expect("decode padded");
    assert!(back == data);

    let mut bad_crc = wire.clone();
    bad_crc[15] ^= 1; // first chunk's checksum
    let err = CompStream::new(&bad_crc[..])
        .read_to_end(&mut Vec::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("CRC"), "{err}");

    let no_id = wire[10..].to_vec();
    assert!(CompStream::new(&no_id[..])
        .read_to_end(&mut Vec::new())
        .await
        .is_err());

    let mut reserved = wire[..10].to_vec();
    reserved.extend_from_slice(&[0x02, 0, 0, 0]);
    assert!(CompStream::new(&reserved[..])
        .read_to_end(&mut Vec::new())
        .await
        .is_err());

    let truncated = &wire[..wire.len() - 1];
    assert!(CompStream::new(truncated)
        .read_to_end(&mut Vec::new())
        .await
        .is_err());
}
