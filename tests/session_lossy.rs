//! Transfers over a seeded lossy loopback relay: 10% loss each way, with and
//! without FEC, plus reordering and duplication.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kcp_session::{Config, Mode, Session, StreamMode};
use support::relay::{Impairment, Relay};
use support::{bounded, echo_round_trip, echo_server, pattern};

const LIMIT: Duration = Duration::from_secs(90);

fn config(fec: (usize, usize)) -> Config {
    Config::builder()
        .crypt_kcptun("aes", "lossy")
        .fec(fec.0, fec.1)
        .mode(Mode::Fast3)
        .window(512, 512)
        .stream_mode(StreamMode::Stream)
        .socket_buffers(4 << 20)
        .build()
        .unwrap()
}

async fn lossy_echo(fec: (usize, usize), imp: Impairment, size: usize) -> kcp_session::Snmp {
    let cfg = config(fec);
    let server = echo_server(&cfg).await;
    let relay = Relay::start(server.addr, imp).await;
    let s = Session::dial(relay.addr(), &cfg).await.unwrap();
    let data = Arc::new(pattern(imp.seed, size));
    let what = format!("fec {fec:?} {imp:?}");
    let (got, stats) = bounded(LIMIT, &what, echo_round_trip(s, data.clone())).await;
    assert!(got == *data, "{what}: echo differs");
    let dropped = relay.stats().dropped.load(Ordering::Relaxed);
    let received = relay.stats().received.load(Ordering::Relaxed);
    // The relay really lost about 10% (both directions together).
    assert!(received > 500, "{what}: only {received} datagrams");
    let rate = dropped as f64 / received as f64;
    assert!((0.07..0.13).contains(&rate), "{what}: loss rate {rate}");
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_percent_loss_without_fec_recovers_by_retransmission() {
    let stats = lossy_echo((0, 0), Impairment::loss(1, 0.10), 2 << 20).await;
    assert!(stats.retrans_segs > 0, "{stats}");
    assert_eq!(stats.fec_recovered, 0, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_percent_loss_with_fec_recovers_shards() {
    let stats = lossy_echo((10, 3), Impairment::loss(2, 0.10), 2 << 20).await;
    assert!(stats.fec_recovered > 0, "{stats}");
    assert!(stats.fec_parity_shards > 0, "{stats}");
    assert_eq!(stats.fec_errs, 0, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_reordering_and_duplication_together() {
    let imp = Impairment {
        seed: 3,
        loss: 0.10,
        duplicate: 0.05,
        reorder: 0.05,
    };
    let stats = lossy_echo((4, 2), imp, 1 << 20).await;
    assert!(stats.repeat_segs > 0 || stats.fec_recovered > 0, "{stats}");
    assert_eq!(stats.in_csum_errors, 0, "{stats}");
}
