//! smux over our own KCP `Session`/`Listener` on loopback, with and without
//! the Snappy framing: many concurrent streams, byte-exact, v1 and v2 — the
//! kcptun stack (§7.1) with Rust on both ends.

use kcp_session::comp::CompStream;
use kcp_session::config::{Config, Mode};
use kcp_session::listener::Listener;
use kcp_session::session::Session;
use kcp_session::smux;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (i / 2048) % 2 == 0 {
                (x >> 24) as u8
            } else {
                b'r'
            }
        })
        .collect()
}

async fn stack(version: smux::Version, compress: bool) {
    let config = Config::kcptun(Mode::Fast3)
        .crypt_kcptun("aes", "smux over kcp")
        .build()
        .expect("config");
    let listener = Listener::listen("127.0.0.1:0", &config)
        .await
        .expect("listen");
    let addr = listener.local_addr();
    let sm = smux::Config {
        version,
        ..smux::Config::kcptun()
    };
    let server = tokio::spawn(async move {
        let sess = listener.accept().await.expect("accept kcp");
        let mux = if compress {
            smux::Session::server(CompStream::new(sess), sm)
        } else {
            smux::Session::server(sess, sm)
        }
        .expect("smux server");
        let mut handlers = Vec::new();
        while let Ok(s) = mux.accept_stream().await {
            handlers.push(tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(s);
                tokio::io::copy(&mut r, &mut w).await.expect("echo");
                w.shutdown().await.expect("fin");
            }));
            if handlers.len() == 12 {
                break;
            }
        }
        for h in handlers {
            h.await.expect("handler");
        }
        drop(listener);
        mux
    });
    let kcp = Session::dial(addr, &config).await.expect("dial");
    let mux = if compress {
        smux::Session::client(CompStream::new(kcp), sm)
    } else {
        smux::Session::client(kcp, sm)
    }
    .expect("smux client");
    let sizes = [
        1usize,
        100,
        8191,
        8192,
        8193,
        65536,
        100_000,
        500_000,
        1 << 20,
        3 << 20,
        7,
        0,
    ];
    let mut tasks = Vec::new();
    for (i, &len) in sizes.iter().enumerate() {
        let s = mux.open_stream().await.expect("open");
        tasks.push(tokio::spawn(async move {
            let data = pattern(len, i as u64);
            let (mut r, mut w) = tokio::io::split(s);
            let sent = data.clone();
            let wr = tokio::spawn(async move {
                w.write_all(&sent).await.expect("write");
                w.shutdown().await.expect("shutdown");
                w
            });
            let mut back = Vec::new();
            r.read_to_end(&mut back).await.expect("read");
            drop(wr.await.expect("writer"));
            assert!(
                back == data,
                "stream {i}: {} of {} bytes",
                back.len(),
                data.len()
            );
        }));
    }
    for t in tasks {
        t.await.expect("stream task");
    }
    let server_mux = server.await.expect("server");
    assert_eq!(server_mux.version(), version);
    mux.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smux_v2_snappy_over_kcp() {
    stack(smux::Version::V2, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smux_v1_raw_over_kcp() {
    stack(smux::Version::V1, false).await;
}
