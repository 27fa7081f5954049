//! CRC-32C of the kcptun framing layer: the `crc32c` crate against the
//! slicing-by-8 table code it replaced (tests/support/crc32c_slice8.rs).
//!
//! Run: `cargo bench --bench crc32c`. The crate was adopted because it was
//! not slower (2x to 13x faster here); the figures are in CHANGELOG.md.

#[allow(dead_code)]
#[path = "../tests/support/crc32c_slice8.rs"]
mod oracle;

use criterion::{black_box, criterion_group, Criterion, Throughput};

fn bench_crc(c: &mut Criterion) {
    for len in [64usize, 1400, 65536] {
        let data: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
        let mut g = c.benchmark_group(format!("crc32c_{len}B"));
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function("crc32c_crate", |b| {
            b.iter(|| kcp_session::comp::crc32c(black_box(&data)))
        });
        g.bench_function("slice8_tables", |b| {
            b.iter(|| oracle::crc32c_slice8(black_box(&data)))
        });
        g.finish();
    }
}

criterion_group!(benches, bench_crc);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
