//! Single-process demo: a listener and a dialer with AES-256 + FEC 10/3 move
//! 64 MiB over loopback through an in-process relay that drops datagrams,
//! then print the throughput and kcp-go's SNMP counters.
//!
//! `cargo run --release --example demo -- [--bytes N] [--loss 0.02] [--seed S] [--direct] [--no-offload]`
//! (`--direct` skips the relay, to see what the relay itself costs;
//! `--no-offload` turns Linux UDP GSO/GRO off, for an A/B of the offload).
//!
//! With `--features tracing` the library's events go to stderr: sessions
//! opening and closing in their spans, and a rate-limited warning for the
//! garbage a stray sender throws at the listener first. `RUST_LOG` picks
//! the levels (default `kcp_session=info`; `kcp_session=trace` logs every
//! datagram and segment, so use it with a small `--bytes`).

#[path = "../tests/support/relay.rs"]
mod relay;

use std::time::Instant;

use kcp_session::{stats, Config, Listener, Mode, Session};
use relay::{Impairment, Relay};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Sends the library's `tracing` events to stderr, filtered by `RUST_LOG`.
#[cfg(feature = "tracing")]
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    let filter: tracing_subscriber::filter::Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| "kcp_session=info".parse().expect("a valid filter"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let subscriber = tracing_subscriber::registry().with(fmt).with(filter);
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
}

#[cfg(not(feature = "tracing"))]
fn init_logging() {
    eprintln!("(run with --features tracing to see the library's events)");
}

#[tokio::main]
async fn main() -> kcp_session::Result<()> {
    init_logging();
    let total: usize = arg("--bytes", 64 << 20);
    let loss: f64 = arg("--loss", 0.02);
    let seed: u64 = arg("--seed", 1);
    let config = Config::builder()
        .crypt_kcptun("aes", "it's a secrect")
        .fec(10, 3)
        .mode(Mode::Fast3)
        .mtu(1350)
        .window(1024, 1024)
        .stream_mode(kcp_session::StreamMode::Stream)
        .socket_buffers(4 << 20)
        .udp_offload(if std::env::args().any(|a| a == "--no-offload") {
            kcp_session::UdpOffload::Off
        } else {
            kcp_session::UdpOffload::Auto
        })
        .build()?;

    let listener = Listener::listen("127.0.0.1:0", &config).await?;
    let listen_addr = listener.local_addr();
    let relay = Relay::start(listener.local_addr(), Impairment::loss(seed, loss)).await;
    println!(
        "listener {} <- relay {} ({:.1}% loss each way) <- dialer; AES-256, FEC 10/3, {} MiB",
        listener.local_addr(),
        relay.addr(),
        loss * 100.0,
        total >> 20
    );

    // A stray sender: its datagrams fail the CRC and are dropped, counted
    // (InCsumErrors) and, with tracing, warned of once, not 100 times.
    let stray = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    for i in 0..100u8 {
        stray.send_to(&[i; 64], listen_addr).await?;
    }

    let receiver = tokio::spawn(async move {
        let mut s = listener.accept().await?;
        let mut buf = vec![0u8; 1 << 16];
        let mut crc = crc32fast::Hasher::new();
        let mut got = 0usize;
        while got < total {
            let n = s.read(&mut buf).await?;
            crc.update(&buf[..n]);
            got += n;
        }
        // Tell the sender everything arrived (KCP has no close handshake).
        s.write_all(&crc.finalize().to_le_bytes()).await?;
        s.drain().await?;
        Ok::<_, kcp_session::Error>(s.stats())
    });

    let direct = std::env::args().any(|a| a == "--direct");
    let target = if direct {
        println!("--direct: dialing the listener itself, no relay, no loss");
        listen_addr
    } else {
        relay.addr()
    };
    let mut s = Session::dial(target, &config).await?;
    let mut data = vec![0u8; 1 << 16];
    let mut crc = crc32fast::Hasher::new();
    let start = Instant::now();
    let mut sent = 0usize;
    let mut x = seed;
    while sent < total {
        for w in data.chunks_exact_mut(8) {
            // xorshift64: cheap, not compressible, deterministic.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let n = data.len().min(total - sent);
        crc.update(&data[..n]);
        s.write_all(&data[..n]).await?;
        sent += n;
    }
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).await?;
    let elapsed = start.elapsed();
    let server_stats = receiver.await.map_err(std::io::Error::other)??;
    let ok = u32::from_le_bytes(ack) == crc.finalize();
    let mib = total as f64 / (1 << 20) as f64;
    println!(
        "moved {mib:.0} MiB in {:.2} s: {:.1} MiB/s, checksum {}",
        elapsed.as_secs_f64(),
        mib / elapsed.as_secs_f64(),
        if ok { "OK" } else { "MISMATCH" }
    );
    let r = relay.stats();
    println!(
        "relay: {} datagrams in, {} dropped",
        r.received.load(std::sync::atomic::Ordering::Relaxed),
        r.dropped.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!("sender   RTO {} ms, SRTT {} ms", s.rto(), s.srtt());
    println!(
        "receiver FECRecovered={} FECParityShards={}",
        server_stats.fec_recovered, server_stats.fec_parity_shards
    );
    println!("SNMP (process-wide):");
    for (name, v) in stats::global().fields() {
        println!("  {name:<20} {v}");
    }
    if ok {
        Ok(())
    } else {
        Err(kcp_session::Error::Closed)
    }
}
