//! Moves 16 MiB between two KCP engines over a simulated lossy link and checks
//! every byte.
//!
//! ```text
//! cargo run --release --features testing --example simulated_transfer [MiB] [loss%] [seed]
//! ```
use std::time::Instant;

use kcp_session::testing::{run_transfer, LinkConfig, TransferConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(16);
    let loss: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10.0) / 100.0;
    let seed: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);

    let mut cfg = TransferConfig::new(mib << 20, loss, seed);
    cfg.link = LinkConfig {
        loss,
        duplicate: 0.02,
        reorder: 0.05,
        reorder_delay_ms: 15,
        delay_ms: 20,
        jitter_ms: 5,
    };
    // kcptun "fast3" and a window large enough for the 40 ms round trip.
    cfg.nodelay = (1, 10, 2, 1);
    cfg.window = (1024, 1024);

    println!(
        "transferring {mib} MiB over a link with {:.0}% loss, 2% duplication, 5% reordering, \
         20±5 ms one-way delay (seed {seed})",
        loss * 100.0
    );
    let started = Instant::now();
    let report = match run_transfer(&cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("transfer failed: {e}");
            std::process::exit(1);
        }
    };
    let real = started.elapsed();
    let s = &report.sender;
    println!("verified:        {} bytes, byte for byte", report.bytes);
    println!(
        "virtual time:    {} ms ({:.2} MB/s goodput on the simulated link)",
        report.virtual_ms,
        report.bytes as f64 / 1e3 / report.virtual_ms.max(1) as f64
    );
    println!(
        "datagrams:       {} sent, {} dropped, {} duplicated, {} reordered",
        report.link.sent, report.link.dropped, report.link.duplicated, report.link.reordered
    );
    println!(
        "retransmissions: {} total = {} fast + {} early + {} after timeout; receiver saw {} repeats",
        s.retrans_segs, s.fast_retrans_segs, s.early_retrans_segs, s.lost_segs, report.receiver.repeat_segs
    );
    println!(
        "real time:       {:.3} s ({:.0} MB/s through both engines)",
        real.as_secs_f64(),
        report.bytes as f64 / 1e6 / real.as_secs_f64()
    );
}
