//! Crypto-layer throughput, named like kcp-go's crypt_test.go benchmarks.
//!
//! * `datagram/<Name>`: one iteration = `seal` + `open` of one 1400-byte
//!   datagram (fresh nonce, CRC, encrypt, decrypt, verify); throughput counts
//!   1400 bytes per iteration.
//! * `raw/<Name>`: kcp-go's `benchCrypt` shape — `Encrypt` + `Decrypt` of
//!   1500 bytes with the bare cipher; throughput counts 3000 bytes per
//!   iteration, as Go's `b.SetBytes(len*2)` does.
//!
//! Time is the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), and
//! throughput is printed in decimal MB/s like Go's: the build machines are
//! shared, and wall-clock numbers there swing by 3x between runs while CPU
//! time stays comparable. The Go side of the comparison,
//! interop/vectors/crypt_bench_test.go, reports the same `cpuMB/s`
//! (`cd interop && go test ./vectors/ -run XXX -bench Crypt`).

use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use kcp_session::crypt::{CipherKind, Crypt};

/// Criterion measurement: CPU time consumed by the calling thread, in ns.
struct ThreadCpu;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Measurement for ThreadCpu {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (div, unit) = if typical < 1e3 {
            (1.0, "ns cpu")
        } else if typical < 1e6 {
            (1e3, "µs cpu")
        } else {
            (1e6, "ms cpu")
        };
        values.iter_mut().for_each(|v| *v /= div);
        unit
    }
    fn scale_throughputs(&self, _typical: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        let per_iter = match t {
            Throughput::Bytes(n) | Throughput::BytesDecimal(n) | Throughput::Elements(n) => {
                *n as f64
            }
        };
        // ns per iteration -> decimal MB/s, Go's unit.
        values.iter_mut().for_each(|v| *v = per_iter * 1e3 / *v);
        "MB/s"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

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

fn datagram(c: &mut Criterion<ThreadCpu>) {
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

fn raw(c: &mut Criterion<ThreadCpu>) {
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

fn config() -> Criterion<ThreadCpu> {
    Criterion::default()
        .with_measurement(ThreadCpu)
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
