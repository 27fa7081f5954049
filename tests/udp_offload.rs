//! UDP segmentation offload (Linux GSO/GRO) under whole sessions: a 16 MiB
//! echo over loopback, byte-exact, with offload on, off, and refused by the
//! path (the fault hook), and proof from the counters that the offloaded
//! paths really ran. The datagram-level checks (boundaries, bytes, group
//! limits, GRO splitting) are the unit tests in `src/transport/batch.rs`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use kcp_session::transport::{OffloadStats, Transport, UdpOffload, UdpTransport};
use kcp_session::{Config, Listener, Mode, Session, StreamMode};
use support::{bounded, checked_echo, echo_round_trip, pattern, serve_echo};

fn config() -> Config {
    Config::builder()
        .crypt_kcptun("aes", "offload test key")
        .mode(Mode::Fast3)
        .window(512, 512)
        .stream_mode(StreamMode::Stream)
        .build()
        .expect("config")
}

async fn transport(offload: UdpOffload) -> Arc<UdpTransport> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let t = UdpTransport::with_offload(sock, offload);
    // `with_transport` applies no socket options; the echo needs room.
    t.set_recv_buffer(4 << 20).unwrap();
    t.set_send_buffer(4 << 20).unwrap();
    Arc::new(t)
}

/// Echoes 16 MiB from a dialed session through a listener, both on UDP
/// transports with `offload`; the client's and the server's stats after.
async fn echo_16mib(offload: UdpOffload, reject_gso: bool) -> (OffloadStats, OffloadStats) {
    let cfg = config();
    let server_t = transport(offload).await;
    let client_t = transport(offload).await;
    if reject_gso {
        reject(&server_t, &client_t);
    }
    let listener = Arc::new(Listener::with_transport(server_t.clone(), &cfg).unwrap());
    let accept = serve_echo(listener.clone());
    let session =
        Session::with_transport(client_t.clone(), listener.local_addr(), 0x6a50_0001, &cfg)
            .unwrap();
    let data = Arc::new(pattern(77, 16 << 20));
    let what = format!("16 MiB echo, offload {offload:?}, reject_gso {reject_gso}");
    checked_echo(session, data, &what).await;
    listener.close();
    accept.abort();
    (client_t.offload_stats(), server_t.offload_stats())
}

#[cfg(feature = "testing")]
fn reject(server: &UdpTransport, client: &UdpTransport) {
    kcp_session::transport::faults::reject_gso(server);
    kcp_session::transport::faults::reject_gso(client);
}

#[cfg(not(feature = "testing"))]
fn reject(_: &UdpTransport, _: &UdpTransport) {
    unreachable!("the fault hook needs feature `testing`");
}

/// Whether this kernel has UDP GSO (a fresh socket's probe); if not, says so.
async fn gso_here(test: &str) -> bool {
    let t = transport(UdpOffload::Auto).await;
    let ok = t.offload_stats().gso;
    if !ok {
        eprintln!("{test}: SKIPPED the offload checks: no UDP_SEGMENT on this system");
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_echo_with_offload() {
    let (client, server) = echo_16mib(UdpOffload::Auto, false).await;
    eprintln!("client {client:?}\nserver {server:?}");
    if !gso_here("sixteen_mib_echo_with_offload").await {
        assert_eq!((client.gso_sends, server.gso_sends), (0, 0));
        return;
    }
    // Both directions carried bulk data in segmented sends, and none was
    // refused on loopback.
    assert!(client.gso && client.gso_sends > 0, "client {client:?}");
    assert!(server.gso && server.gso_sends > 0, "server {server:?}");
    assert_eq!(client.gso_fallbacks + server.gso_fallbacks, 0);
    // The dialed session never turns GRO on (its buffers stay small)...
    assert!(!client.gro && client.gro_buffers == 0, "client {client:?}");
    // ...the listener does (where the kernel has it, 5.0+), and loopback
    // hands it the client's segmented sends whole.
    if server.gro {
        assert!(server.gro_buffers > 0, "server {server:?}");
    } else {
        eprintln!("sixteen_mib_echo_with_offload: no UDP_GRO here; receive side unchecked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_echo_without_offload() {
    let (client, server) = echo_16mib(UdpOffload::Off, false).await;
    assert_eq!(client, OffloadStats::default());
    assert_eq!(server, OffloadStats::default());
}

#[cfg(feature = "testing")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_echo_when_the_path_refuses_gso() {
    let (client, server) = echo_16mib(UdpOffload::Auto, true).await;
    if !gso_here("sixteen_mib_echo_when_the_path_refuses_gso").await {
        return;
    }
    // Each socket met the refusal once, gave GSO up, and the transfer went
    // on plain and byte-exact.
    for (who, st) in [("client", client), ("server", server)] {
        assert!(!st.gso, "{who} {st:?}");
        assert_eq!((st.gso_fallbacks, st.gso_sends), (1, 0), "{who} {st:?}");
    }
}

/// The config knob reaches the sockets `dial`/`listen` make: with it off a
/// transfer still works (the counters are not reachable there; the
/// transport-level tests above cover what each setting does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_can_turn_offload_off() {
    let cfg = Config::builder()
        .mode(Mode::Fast3)
        .udp_offload(UdpOffload::Off)
        .build()
        .unwrap();
    assert_eq!(cfg.udp_offload(), UdpOffload::Off);
    assert_eq!(Config::default().udp_offload(), UdpOffload::Auto);
    let server = support::echo_server(&cfg).await;
    let session = Session::dial(server.addr, &cfg).await.unwrap();
    let data = Arc::new(pattern(5, 1 << 20));
    let (got, _) = bounded(
        Duration::from_secs(30),
        "1 MiB echo, config offload off",
        echo_round_trip(session, data.clone()),
    )
    .await;
    assert!(got == *data);
}
