//! Measures a default server under a flood (issue 12 item 8): valid KCP
//! PUSH segments (cipher `none`: nonce + CRC, no encryption, so anyone can
//! forge them) from many loopback addresses, 127.10.x.y:40000, against a
//! listener with the default configuration whose application accepts every
//! session and echoes it. Prints the process RSS, the session count and the
//! evictions after every round.
//!
//! ```text
//! cargo run --release --example flood_rss -- [ADDRESSES] [ROUNDS] [kcp-go]
//! ```
//!
//! `kcp-go` switches the lifetime rules off (no session cap, no idle
//! timeout, no dead link), as kcp-go runs; the run then stops once RSS
//! passes 1.5 GB. Linux only (127/8 source addresses, /proc/self/status).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kcp_session::crypt::Crypt;
use kcp_session::{Config, Listener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PER_ROUND: u32 = 4;
const PAYLOAD: usize = 1000;
const RSS_STOP_KB: u64 = 1_500_000;

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn push(crypt: &mut Crypt, conv: u32, sn: u32, out: &mut Vec<u8>) {
    let h = crypt.header_len();
    out.clear();
    out.resize(h, 0);
    out.extend_from_slice(&conv.to_le_bytes());
    out.extend_from_slice(&[81, 0]); // IKCP_CMD_PUSH, frg 0
    out.extend_from_slice(&32u16.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&sn.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(PAYLOAD as u32).to_le_bytes());
    out.resize(h + 24 + PAYLOAD, 0x5a);
    let len = out.len() - h;
    out.resize(h + len + crypt.trailer_len(), 0);
    let n = crypt.seal(out, len).expect("seal");
    out.truncate(n);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addresses: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let rounds: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let kcp_go = args.iter().any(|a| a == "kcp-go");
    let mut b = Config::builder().crypt_kcptun("none", "flood");
    if kcp_go {
        b = b.max_sessions(None).idle_timeout(None).dead_link(None);
    }
    let cfg = b.build().expect("config");
    let listener = Arc::new(Listener::listen("127.0.0.1:0", &cfg).await.expect("listen"));
    let target: SocketAddr = listener.local_addr();
    let l = listener.clone();
    tokio::spawn(async move {
        while let Ok(mut s) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let rss0 = rss_kb();
    println!(
        "config: {} max_sessions={:?} idle_timeout={:?} dead_link={:?}; {addresses} addresses, \
         {PER_ROUND} PUSH of {PAYLOAD} B each per round; RSS at start {} MB",
        if kcp_go {
            "kcp-go lifetime rules"
        } else {
            "default"
        },
        cfg.max_sessions(),
        cfg.idle_timeout(),
        cfg.dead_link(),
        rss0 / 1024
    );
    let mut crypt = cfg.crypt().clone();
    let t0 = Instant::now();
    let mut peak = 0;
    let mut dgram = Vec::with_capacity(1500);
    for round in 0..rounds {
        for i in 0..addresses {
            let ip = Ipv4Addr::new(127, 10, (i / 250) as u8, (i % 250 + 1) as u8);
            let Ok(sock) = UdpSocket::bind((ip, 40000)) else {
                continue;
            };
            for j in 0..PER_ROUND {
                push(&mut crypt, i as u32 + 1, round * PER_ROUND + j, &mut dgram);
                let _ = sock.send_to(&dgram, target);
            }
            if i % 500 == 499 {
                // Let the server keep up instead of losing most datagrams in
                // the socket buffer.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let rss = rss_kb();
        peak = peak.max(rss);
        println!(
            "round {round:3} t={:6.1}s sessions={:6} evictions={:7} RSS={:5} MB (peak {} MB)",
            t0.elapsed().as_secs_f64(),
            listener.session_count(),
            listener.evictions(),
            rss / 1024,
            peak / 1024
        );
        if rss > RSS_STOP_KB {
            println!("stopping: RSS above {} MB", RSS_STOP_KB / 1024);
            break;
        }
    }
    // After the flood: what the defaults give back.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        println!(
            "after flood t={:6.1}s sessions={:6} RSS={:5} MB",
            t0.elapsed().as_secs_f64(),
            listener.session_count(),
            rss_kb() / 1024
        );
    }
}
