//! kcptun's QPP against vectors from the real Go package (github.com/xtaci/qpp),
//! plus split-independence and a `QppStream` over an in-memory pipe.
//! Provenance of tests/vectors/qpp_vectors.json: tests/vectors/README-qpp.md.

use std::sync::Arc;

use kcp_session::qpp::{QppPad, QppState, QppStream};
use proptest::prelude::*;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Deserialize)]
struct File {
    qpp_commit: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct StateDump {
    word: String,
    count: u8,
}

#[derive(Deserialize)]
struct Chunk {
    len: usize,
    hex: Option<String>,
    sha256: Option<String>,
    state_after: StateDump,
}

#[derive(Deserialize)]
struct Stream {
    direction: String,
    prng_seed_hex: String,
    input_seed: u64,
    writes: Vec<Chunk>,
    /// Go writes `null` for an empty stream.
    read_splits: Option<Vec<usize>>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    pad_seed_hex: String,
    pads: u64,
    pads_hex: Option<String>,
    pads_sha256: String,
    initial_xoshiro: Vec<String>,
    initial_state: StateDump,
    streams: Vec<Stream>,
}

fn load() -> File {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/qpp_vectors.json"
    );
    let text = std::fs::read_to_string(path).expect("read qpp vectors");
    serde_json::from_str(&text).expect("parse qpp vectors")
}

/// The generator's input stream: xorshift64 (13, 7, 17), bits 24..31 per step.
fn input(seed: u64, n: usize) -> Vec<u8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

fn position(s: &QppState) -> (String, u8) {
    let (w, c) = s.position();
    (format!("{w:016x}"), c)
}

#[derive(Clone, Copy)]
enum Dir {
    Encrypt,
    Decrypt,
}

fn apply(pad: &QppPad, dir: Dir, data: &mut [u8], st: &mut QppState) {
    match dir {
        Dir::Encrypt => pad.encrypt(data, st),
        Dir::Decrypt => pad.decrypt(data, st),
    }
}

fn inverse(d: Dir) -> Dir {
    match d {
        Dir::Encrypt => Dir::Decrypt,
        Dir::Decrypt => Dir::Encrypt,
    }
}

#[test]
fn go_vectors_cover_what_they_claim() {
    let f = load();
    assert_eq!(f.qpp_commit.len(), 40);
    let counts: Vec<u64> = f.cases.iter().map(|c| c.pads).collect();
    for want in [1, 61, 256, 1021] {
        assert!(counts.contains(&want), "no case with {want} pads");
    }
    let longest = f
        .cases
        .iter()
        .flat_map(|c| c.streams.iter())
        .flat_map(|s| s.writes.iter())
        .map(|w| w.len)
        .max();
    assert!(longest.unwrap_or(0) > 64 * 1024);
}

#[test]
fn pads_match_go() {
    for case in load().cases {
        let key = hex::decode(&case.pad_seed_hex).unwrap();
        let pad = QppPad::new(&key, case.pads).unwrap();
        assert_eq!(u64::from(pad.count()), case.pads, "{}", case.name);
        let flat: Vec<u8> = pad.pads().iter().flatten().copied().collect();
        if let Some(h) = &case.pads_hex {
            assert_eq!(hex::encode(&flat), *h, "{}: pads", case.name);
        }
        assert_eq!(
            hex::encode(Sha256::digest(&flat)),
            case.pads_sha256,
            "{}: pads sha256",
            case.name
        );
        let st = QppState::new(&key);
        let xo: Vec<String> = st.xoshiro().iter().map(|w| format!("{w:016x}")).collect();
        assert_eq!(xo, case.initial_xoshiro, "{}: xoshiro seed", case.name);
        assert_eq!(
            position(&st),
            (case.initial_state.word.clone(), case.initial_state.count),
            "{}: first word",
            case.name
        );
    }
}

#[test]
fn streams_match_go_byte_for_byte() {
    let f = load();
    let mut pads = std::collections::HashMap::new();
    let mut checked = 0usize;
    for case in &f.cases {
        let key = hex::decode(&case.pad_seed_hex).unwrap();
        let pad = pads
            .entry((case.pad_seed_hex.clone(), case.pads))
            .or_insert_with(|| QppPad::new(&key, case.pads).unwrap());
        for (si, s) in case.streams.iter().enumerate() {
            let dir = match s.direction.as_str() {
                "encrypt" => Dir::Encrypt,
                "decrypt" => Dir::Decrypt,
                other => panic!("unknown direction {other}"),
            };
            let seed = hex::decode(&s.prng_seed_hex).unwrap();
            let total: usize = s.writes.iter().map(|w| w.len).sum();
            let plain = input(s.input_seed, total);
            let mut data = plain.clone();
            let mut st = QppState::new(&seed);
            let mut off = 0;
            for (wi, w) in s.writes.iter().enumerate() {
                let chunk = &mut data[off..off + w.len];
                apply(pad, dir, chunk, &mut st);
                let ctx = format!("{} stream {si} write {wi} (len {})", case.name, w.len);
                match (&w.hex, &w.sha256) {
                    (Some(h), _) => assert_eq!(hex::encode(&*chunk), *h, "{ctx}"),
                    (None, Some(d)) => {
                        assert_eq!(hex::encode(Sha256::digest(&*chunk)), *d, "{ctx}")
                    }
                    (None, None) => assert_eq!(w.len, 0, "{ctx}: no expected bytes"),
                }
                assert_eq!(
                    position(&st),
                    (w.state_after.word.clone(), w.state_after.count),
                    "{ctx}: state"
                );
                off += w.len;
                checked += w.len;
            }
            // The inverse under Go's other split restores the input.
            let mut st = QppState::new(&seed);
            let mut off = 0;
            for &n in s.read_splits.iter().flatten() {
                apply(pad, inverse(dir), &mut data[off..off + n], &mut st);
                off += n;
            }
            assert_eq!(off, total);
            assert!(data == plain, "{} stream {si}: inverse", case.name);
        }
    }
    assert!(checked > 1_000_000, "only {checked} bytes checked");
}

fn cut(total: usize, splits: &[usize]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut left = total;
    let mut i = 0;
    while left > 0 {
        let n = splits[i % splits.len()].clamp(1, left);
        out.push(n);
        left -= n;
        i += 1;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any split of the same bytes gives the same ciphertext, and decrypting
    /// under another split gives the plaintext back.
    #[test]
    fn split_independent_roundtrip(
        data in proptest::collection::vec(any::<u8>(), 0..2000),
        wsplits in proptest::collection::vec(0usize..40, 1..8),
        rsplits in proptest::collection::vec(0usize..40, 1..8),
        count in 1u64..70,
    ) {
        let pad = QppPad::new(b"proptest key", count).unwrap();
        let mut whole = data.clone();
        pad.encrypt(&mut whole, &mut QppState::new(b"proptest key"));

        let mut split = data.clone();
        let mut st = QppState::new(b"proptest key");
        let mut off = 0;
        for n in cut(split.len(), &wsplits) {
            pad.encrypt(&mut split[off..off + n], &mut st);
            // Empty calls must not move the stream.
            pad.encrypt(&mut [], &mut st);
            off += n;
        }
        prop_assert_eq!(&split, &whole);

        let mut st = QppState::new(b"proptest key");
        let mut off = 0;
        for n in cut(split.len(), &rsplits) {
            pad.decrypt(&mut split[off..off + n], &mut st);
            off += n;
        }
        prop_assert_eq!(split, data);
    }
}

/// Deterministic split sizes for the pipe test.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, max: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize % max) + 1
    }
}

#[tokio::test]
async fn qpp_stream_over_duplex_is_byte_exact() {
    let key = b"it's a secrect";
    let pad = Arc::new(QppPad::new(key, 61).unwrap());
    let plain = input(0x1234_5678_9abc_def0, 300_000);
    let mut expect_wire = plain.clone();
    pad.encrypt(&mut expect_wire, &mut QppState::new(key));

    for seed in 1..=4u64 {
        // A small pipe forces partial inner writes and Pending.
        let (a, b) = tokio::io::duplex(97 * seed as usize);
        let (b_read, mut b_write) = tokio::io::split(b);
        let mut tx = QppStream::new(a, pad.clone(), key);
        let sender = {
            let plain = plain.clone();
            tokio::spawn(async move {
                let mut rng = Lcg(seed);
                let mut off = 0;
                while off < plain.len() {
                    let n = rng.next(70_000).min(plain.len() - off);
                    tx.write_all(&plain[off..off + n]).await.unwrap();
                    off += n;
                }
                tx.flush().await.unwrap();
                // Echoed bytes come back encrypted under the peer's own state.
                let mut back = vec![0u8; 4096];
                tx.read_exact(&mut back).await.unwrap();
                tx.shutdown().await.unwrap();
                back
            })
        };
        // Raw side: the wire bytes must be exactly Go's one-shot ciphertext.
        let mut raw = b_read;
        let mut wire = vec![0u8; plain.len()];
        let mut rng = Lcg(seed ^ 0xff);
        let mut off = 0;
        while off < wire.len() {
            let n = rng.next(5000).min(wire.len() - off);
            raw.read_exact(&mut wire[off..off + n]).await.unwrap();
            off += n;
        }
        assert!(wire == expect_wire, "seed {seed}: wire bytes differ");
        // Send the first 4096 wire bytes back raw: a peer's stream starts
        // from the same state, so the wrapper decrypts them to the plaintext.
        b_write.write_all(&expect_wire[..4096]).await.unwrap();
        let back = tokio::time::timeout(std::time::Duration::from_secs(20), sender)
            .await
            .expect("sender finished")
            .unwrap();
        assert_eq!(&back[..], &plain[..4096], "seed {seed}: read side");
    }
}

#[tokio::test]
async fn two_qpp_streams_roundtrip_with_random_splits() {
    let key = b"0123456789abcdef0123456789abcdef!";
    let pad = Arc::new(QppPad::new(key, 13).unwrap());
    let plain = input(42, 200_001);
    let (a, b) = tokio::io::duplex(1000);
    let mut tx = QppStream::new(a, pad.clone(), key);
    let mut rx = QppStream::new(b, pad, key);
    let data = plain.clone();
    let w = tokio::spawn(async move {
        let mut rng = Lcg(7);
        let mut off = 0;
        while off < data.len() {
            let n = rng.next(3000).min(data.len() - off);
            tx.write_all(&data[off..off + n]).await.unwrap();
            off += n;
        }
        tx.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(20), rx.read_to_end(&mut got))
        .await
        .expect("read finished")
        .unwrap();
    w.await.unwrap();
    assert!(got == plain, "roundtrip differs");
}
