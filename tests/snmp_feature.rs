//! The `snmp` cargo feature (default on; kcp-go v5.7's `kcp_no_snmp` build
//! tag inverted, §12). The same loopback transfer is run either way; with the
//! feature it is counted, without it every counter reads 0 and the per-owner
//! counter storage is zero-sized. CI runs this file both ways
//! (`cargo test --no-default-features --test snmp_feature`).

mod support;

use std::time::Duration;

use kcp_session::stats::{self, Counters};
use kcp_session::{Config, Listener, Mode, Session, Snmp};
use support::{bounded, pattern};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(30);
const LEN: usize = 100_000;

struct Seen {
    client: Snmp,
    server: Snmp,
    listener: Snmp,
    global: Snmp,
}

/// 100 KB client -> server through FEC and AES, plus one datagram with a bad
/// checksum at the listener; returns every counter view.
async fn transfer() -> Seen {
    let cfg = Config::builder()
        .crypt_kcptun("aes", "snmp")
        .fec(4, 2)
        .mode(Mode::Fast3)
        .window(256, 256)
        .build()
        .unwrap();
    let listener = Listener::listen("127.0.0.1:0", &cfg).await.unwrap();
    let mut client = Session::dial(listener.local_addr(), &cfg).await.unwrap();
    let data = pattern(3, LEN);
    client.write_all(&data).await.unwrap();
    let mut server = bounded(LIMIT, "accept", listener.accept()).await.unwrap();
    let mut got = vec![0u8; LEN];
    bounded(LIMIT, "read", server.read_exact(&mut got))
        .await
        .unwrap();
    assert!(got == data, "bytes differ");
    bounded(LIMIT, "drain", client.drain()).await.unwrap();
    // Garbage from a stranger: dropped by the listener, counted (or not).
    let junk = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    junk.send_to(&[0x55; 64], listener.local_addr())
        .await
        .unwrap();
    let counted = support::wait_until(Duration::from_millis(500), || {
        listener.stats().in_csum_errors > 0
    })
    .await;
    assert_eq!(counted, cfg!(feature = "snmp"));
    Seen {
        client: client.stats(),
        server: server.stats(),
        listener: listener.stats(),
        global: stats::global(),
    }
}

#[cfg(feature = "snmp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_snmp_everything_is_counted() {
    let s = transfer().await;
    assert_eq!(s.client.bytes_sent, LEN as u64);
    assert_eq!(s.server.bytes_received, LEN as u64);
    assert!(s.client.out_pkts > 0 && s.client.out_segs > 0);
    assert!(s.server.in_pkts > 0 && s.server.in_segs > 0);
    assert!(s.server.fec_parity_shards > 0, "{}", s.server);
    assert_eq!(s.client.active_opens, 1);
    assert_eq!(s.listener.passive_opens, 1);
    assert_eq!(s.listener.in_csum_errors, 1);
    // The global view includes this process's sessions (tests run in
    // parallel, so only lower bounds).
    assert!(s.global.bytes_sent >= LEN as u64);
    assert!(s.global.curr_estab >= 2);
    assert!(std::mem::size_of::<Counters>() > 0);
}

#[cfg(not(feature = "snmp"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_snmp_every_counter_reads_zero() {
    let s = transfer().await;
    for (who, snap) in [
        ("client", s.client),
        ("server", s.server),
        ("listener", s.listener),
        ("global", s.global),
    ] {
        assert_eq!(snap, Snmp::default(), "{who}: {snap}");
        assert!(snap.fields().all(|(_, v)| v == 0), "{who}");
    }
    // The snapshot type keeps its shape; the storage behind it is gone.
    assert_eq!(Snmp::header().len(), 30);
    assert_eq!(std::mem::size_of::<Counters>(), 0);
    assert_eq!(Counters::default().snapshot(), Snmp::default());
}
