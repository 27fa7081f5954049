//! Crypto-layer throughput, named like kcp-go's crypt_test.go benchmarks.
//!
//! * `datagram/<Name>`: one iteration = `seal` + `open` of one 1400-byte
//!   datagram (fresh nonce, CRC, encrypt, decrypt, verify); throughput counts
//!   1400 bytes per iteration.
//! * `raw/<Name>`: kcp-go's `benchCrypt` shape — `Encrypt` + `Decrypt` of
//!   1500 bytes with the bare cipher; throughput counts 3000 bytes per
//!   iteration, as Go's `b.SetBytes(len*2)` does.
//!
//! The Go side of the comparison is interop/vectors/crypt_bench_test.go
//! (`cd interop && go test ./vectors/ -run XXX -bench Crypt`).

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use kcp_session::crypt::{CipherKind, Crypt};

const DATAGRAM: usize = 1400;
const RAW: usize = 1500;

/// kcp-go's benchmark names, with the key kcp-go's benchmarks use (its
/// `pass`, truncated per cipher; here the kcptun key of the default passphrase).
const CASES: &[(&str, CipherKind, usize)] = &[
    ("AES128", CipherKind::Aes128, 16),
    ("AES192", CipherKind::Aes192, 24),
    ("AES256", CipherKind::Aes256, 32),
    ("Salsa20", CipherKind::Salsa20, 32),
    ("Blowfish", CipherKind::Blowfish, 32),
    ("Cast5", CipherKind::Cast5, 16),
    ("TripleDES", CipherKind::TripleDes, 24),
    ("TEA", CipherKind::Tea, 16),
    ("XTEA", CipherKind::Xtea, 16),
    ("Twofish", CipherKind::Twofish, 32),
    ("SM4", CipherKind::Sm4, 16),
    ("XOR", CipherKind::Xor, 32),
    ("None", CipherKind::None, 0),
    ("AESGCM", CipherKind::AesGcm, 16),
];

fn make(kind: CipherKind, key_len: usize) -> Crypt {
    let key = Crypt::kcptun_key("it's a secrect");
    Crypt::new(kind, &key[..key_len]).expect("valid benchmark key")
}

fn datagram(c: &mut Criterion) {
    let mut g = c.benchmark_group("datagram");
    g.throughput(Throughput::Bytes(DATAGRAM as u64));
    for &(name, kind, key_len) in CASES {
        let mut tx = make(kind, key_len);
        let rx = tx.clone();
        let payload_len = DATAGRAM - tx.overhead();
        let mut buf = [0u8; 1500];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i * 37 + 11) as u8;
        }
        g.bench_function(name, |b| {
            b.iter(|| {
                let n = tx.seal(&mut buf, payload_len).expect("seal");
                let r = rx.open(black_box(&mut buf[..n])).expect("open");
                black_box(r);
            })
        });
    }
    g.finish();
}

fn raw(c: &mut Criterion) {
    let mut g = c.benchmark_group("raw");
    g.throughput(Throughput::Bytes(2 * RAW as u64));
    for &(name, kind, key_len) in CASES {
        if kind.is_aead() {
            continue;
        }
        let cr = make(kind, key_len);
        let mut buf = [0u8; RAW];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i * 37 + 11) as u8;
        }
        g.bench_function(name, |b| {
            b.iter(|| {
                cr.encrypt_raw(black_box(&mut buf)).expect("raw");
                cr.decrypt_raw(black_box(&mut buf)).expect("raw");
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = datagram, raw
}
criterion_main!(benches);
