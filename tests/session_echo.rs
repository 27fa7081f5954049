//! Echo over real loopback sockets through every cipher, FEC on and off,
//! 1 byte to 16 MiB.

mod support;

use std::sync::Arc;
use std::time::Duration;

use kcp_session::{Config, Mode, Session, StreamMode};
use support::{bounded, checked_echo, echo_round_trip, echo_server, pattern};

/// kcptun's names plus the extra GCM sizes: every cipher the crate speaks.
const CIPHERS: &[&str] = &[
    "null",
    "none",
    "aes",
    "aes-128",
    "aes-192",
    "aes-128-gcm",
    "salsa20",
    "blowfish",
    "twofish",
    "cast5",
    "3des",
    "tea",
    "xtea",
    "sm4",
    "xor",
];

fn config(cipher: &str, fec: (usize, usize), stream: StreamMode) -> Config {
    Config::builder()
        .crypt_kcptun(cipher, "echo test key")
        .fec(fec.0, fec.1)
        .mode(Mode::Fast3)
        .window(512, 512)
        .stream_mode(stream)
        .socket_buffers(4 << 20)
        .build()
        .expect("config")
}

async fn echo_case(cipher: &str, fec: (usize, usize), stream: StreamMode, size: usize, seed: u64) {
    let cfg = config(cipher, fec, stream);
    let server = echo_server(&cfg).await;
    let session = Session::dial(server.addr, &cfg).await.expect("dial");
    let data = Arc::new(pattern(seed, size));
    let what = format!("{cipher} fec={fec:?} {stream:?} {size} B");
    let stats = checked_echo(session, data, &what).await;
    assert!(stats.in_pkts > 0 && stats.out_pkts > 0, "{what}: {stats}");
    if fec.0 > 0 && size > 64 * 1024 {
        // The echo server sends FEC; parity shards must have arrived.
        assert!(stats.fec_parity_shards > 0, "{what}: {stats}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_byte_plain() {
    echo_case("null", (0, 0), StreamMode::Message, 1, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_aes_no_fec() {
    echo_case("aes", (0, 0), StreamMode::Stream, 16 << 20, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_aes_gcm_with_fec() {
    echo_case("aes-128-gcm", (10, 3), StreamMode::Stream, 16 << 20, 3).await;
}

/// Sizes from 1 byte to 4 MiB, around the mss and FEC group boundaries.
const SIZES: &[usize] = &[
    1,
    23,
    1297,
    1298,
    1299,
    4096,
    13 * 1298,
    65_536,
    100_003,
    1 << 20,
    4 << 20,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cipher_with_and_without_fec() {
    let mut cases = Vec::new();
    for (i, c) in CIPHERS.iter().enumerate() {
        for (j, fec) in [(0, 0), (10, 3)].into_iter().enumerate() {
            let mut size = SIZES[(i * 2 + j) % SIZES.len()];
            if matches!(*c, "twofish" | "3des") {
                // RustCrypto's Twofish and 3DES run at a few MB/s: keep the
                // big sizes for the fast ciphers so the suite stays quick.
                size = size.min(100_003);
            }
            let mode = if (i + j) % 2 == 0 {
                StreamMode::Stream
            } else {
                StreamMode::Message
            };
            cases.push(tokio::spawn(echo_case(
                c,
                fec,
                mode,
                size,
                (i * 2 + j) as u64,
            )));
        }
    }
    for c in cases {
        c.await.expect("echo case");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aes_gcm_192_and_256_keys_and_odd_fec() {
    for (n, fec) in [(24usize, (3, 2)), (32, (1, 1))] {
        let key = kcp_session::crypt::Crypt::kcptun_key("gcm");
        let cfg = Config::builder()
            .cipher(kcp_session::crypt::CipherKind::AesGcm, &key[..n])
            .fec(fec.0, fec.1)
            .mode(Mode::Fast2)
            .build()
            .unwrap();
        let server = echo_server(&cfg).await;
        let s = Session::dial(server.addr, &cfg).await.unwrap();
        let data = Arc::new(pattern(n as u64, 300_000));
        let (got, stats) = bounded(
            Duration::from_secs(30),
            "gcm",
            echo_round_trip(s, data.clone()),
        )
        .await;
        assert!(got == *data);
        assert_eq!(stats.in_csum_errors, 0);
    }
}
