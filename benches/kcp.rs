//! KCP engine benchmarks (feature `testing`):
//!
//! * `flush_none_due/N`: a full flush with N segments in flight and none due,
//!   as kcp-go's `BenchmarkFlush` (which uses 1024).
//! * `ack_with_hole/N`: one ACK datagram while the first of N in-flight
//!   segments is lost, the case that collapses kcp-go (issue #338).
//! * `transfer/…`: 16 MiB through two engines over the simulated link, in
//!   bytes per second of real time.
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kcp_session::kcp::{FlushKind, Kcp, PacketKind, SegmentHeader, IKCP_CMD_ACK};
use kcp_session::testing::{run_transfer, LinkConfig, TransferConfig};

fn in_flight(n: u32) -> Kcp {
    let mut k = Kcp::new(1);
    k.set_nodelay(1, 10, 2, 1);
    k.set_wndsize(n, n);
    let mss = k.mss();
    for _ in 0..n {
        k.send(&vec![0u8; mss]).unwrap();
    }
    // Open the peer's window (a WINS with wnd = n, capped to u16).
    let mut w = Vec::new();
    SegmentHeader {
        conv: 1,
        cmd: 84,
        wnd: n.min(65535) as u16,
        ..Default::default()
    }
    .encode_to(&mut w);
    k.input(&w, PacketKind::Regular, false, 0, &mut |_: &[u8]| {})
        .unwrap();
    k.flush(FlushKind::Full, 0, &mut |_: &[u8]| {});
    assert_eq!(k.snd_buf_len(), n as usize);
    k
}

fn flush_none_due(c: &mut Criterion) {
    let mut g = c.benchmark_group("flush_none_due");
    g.measurement_time(Duration::from_secs(2));
    for n in [32u32, 128, 1024] {
        let mut k = in_flight(n);
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| k.flush(FlushKind::Full, 1, &mut |_: &[u8]| {}))
        });
    }
    g.finish();
}

fn ack_with_hole(c: &mut Criterion) {
    let mut g = c.benchmark_group("ack_with_hole");
    g.measurement_time(Duration::from_secs(2));
    for n in [1024u32, 32768] {
        let mut k = in_flight(n);
        let mut sn = 0u32;
        let mut d = Vec::new();
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                // ACK sn 1..n-1 in turn; sn 0 never arrives, so una stays 0.
                sn = sn % (n - 1) + 1;
                d.clear();
                SegmentHeader {
                    conv: 1,
                    cmd: IKCP_CMD_ACK,
                    wnd: 65535,
                    ts: 0,
                    sn,
                    una: 0,
                    ..Default::default()
                }
                .encode_to(&mut d);
                k.input(&d, PacketKind::Regular, false, 1, &mut |_: &[u8]| {})
            })
        });
    }
    g.finish();
}

fn transfer(c: &mut Criterion) {
    let mut g = c.benchmark_group("transfer");
    g.measurement_time(Duration::from_secs(3));
    g.sample_size(10);
    let bytes = 16usize << 20;
    g.throughput(Throughput::Bytes(bytes as u64));
    for loss in [0.0, 0.1] {
        let mut cfg = TransferConfig::new(bytes, loss, 1);
        cfg.link = LinkConfig::lossy(loss);
        cfg.nodelay = (1, 10, 2, 1);
        cfg.window = (1024, 1024);
        g.bench_function(format!("16MiB_loss{}", (loss * 100.0) as u32), |b| {
            b.iter(|| run_transfer(&cfg).unwrap())
        });
    }
    // 61K segments of 276 bytes through a 32768-segment window (issue #338
    // territory for kcp-go).
    let mut cfg = TransferConfig::new(bytes, 0.01, 1);
    cfg.nodelay = (1, 10, 2, 1);
    cfg.window = (32768, 32768);
    cfg.mtu = 300;
    g.bench_function("16MiB_wnd32768_mtu300_loss1", |b| {
        b.iter(|| run_transfer(&cfg).unwrap())
    });
    g.finish();
}

criterion_group!(benches, flush_none_due, ack_with_hole, transfer);
criterion_main!(benches);
