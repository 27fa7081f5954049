//! No datagram either side sends is longer than 1472 bytes, kcp-go v5.7's
//! `maxPacketSize` (§12): v5.7 reads into 1472-byte buffers, so a longer
//! datagram arrives truncated and fails its CRC/AEAD check. Checked for every
//! cipher with FEC on (parity packets follow the longest data shard, OOB
//! packets, the AEAD tag), dialer and accepted session, at the largest mtu
//! the API accepts, through `Config` and through `Session::set_mtu`. The
//! lengths are what the relay's own socket received, not what our code
//! reports.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kcp_session::config::MAX_PACKET_SIZE;
use kcp_session::crypt::CipherKind;
use kcp_session::{Config, ConfigBuilder, Error, Listener, Mode, Session};
use support::relay::{Impairment, Relay};
use support::{bounded, echo, echo_round_trip, pattern};

const LIMIT: Duration = Duration::from_secs(60);
const TRANSFER: usize = 256 << 10;

fn builder(kind: CipherKind, mtu: usize) -> ConfigBuilder {
    Config::builder()
        .crypt_kcptun(kind.name(), "packet size")
        .fec(10, 3)
        .mode(Mode::Fast3)
        .window(1024, 1024)
        .mtu(mtu)
}

/// The largest mtu in 1400..=1500 that `build` accepts for this cipher.
fn largest_config_mtu(kind: CipherKind) -> usize {
    (1400..=1500)
        .rev()
        .find(|&m| builder(kind, m).build().is_ok())
        .expect("mtu 1400 must be accepted")
}

/// The largest mtu in 1400..=1500 that `set_mtu` accepts; leaves it set.
fn raise_mtu(s: &Session) -> usize {
    (1400..=1500)
        .rev()
        .find(|&m| s.set_mtu(m).is_ok())
        .expect("mtu 1400 must be accepted")
}

/// Echoes `TRANSFER` bytes and one OOB packet of the largest size each way
/// through a relay; returns the longest datagram seen (client → server,
/// server → client).
async fn transfer(config: &Config, raise: bool) -> (u64, u64) {
    let listener = Arc::new(
        Listener::listen("127.0.0.1:0", config)
            .await
            .expect("listen"),
    );
    let relay = Relay::start(listener.local_addr(), Impairment::default()).await;
    let l = listener.clone();
    let server = tokio::spawn(async move {
        let s = l.accept().await.expect("accept");
        if raise {
            raise_mtu(&s);
        }
        let n = s.oob_max_size();
        s.send_oob(&vec![0x5a; n]).expect("server oob");
        echo(s).await;
    });
    let client = Session::dial(relay.addr(), config).await.expect("dial");
    if raise {
        raise_mtu(&client);
    }
    client
        .send_oob(&vec![0xa5; client.oob_max_size()])
        .expect("client oob");
    let data = Arc::new(pattern(7, TRANSFER));
    let (got, _) = echo_round_trip(client, data.clone()).await;
    assert!(got == *data, "echo differs");
    server.abort();
    let s = relay.stats();
    (
        s.max_up.load(Ordering::Relaxed),
        s.max_down.load(Ordering::Relaxed),
    )
}

fn check(kind: CipherKind, how: &str, (up, down): (u64, u64)) {
    let max = MAX_PACKET_SIZE as u64;
    assert!(
        up <= max && down <= max,
        "{}, {how}: longest datagram client->server {up}, server->client {down}; kcp-go v5.7 reads at most {max}",
        kind.name()
    );
    // Full-size datagrams did go out, so the bound was really exercised.
    assert!(
        up > 1400 && down > 1400,
        "{}, {how}: longest datagrams {up}/{down}",
        kind.name()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_datagram_exceeds_1472_at_the_largest_config_mtu() {
    for kind in CipherKind::ALL {
        let mtu = largest_config_mtu(kind);
        let config = builder(kind, mtu).build().expect("config");
        let sizes = bounded(LIMIT, kind.name(), transfer(&config, false)).await;
        check(kind, &format!("Config mtu {mtu}"), sizes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_datagram_exceeds_1472_after_set_mtu() {
    for kind in [CipherKind::AesGcm, CipherKind::Aes256, CipherKind::Null] {
        let config = builder(kind, 1200).build().expect("config");
        let sizes = bounded(LIMIT, kind.name(), transfer(&config, true)).await;
        check(kind, "set_mtu to the largest accepted", sizes);
    }
}

#[tokio::test]
async fn mtu_above_1472_is_refused_with_a_typed_error() {
    let r = builder(CipherKind::Aes256, 1500).build();
    assert!(
        matches!(
            r,
            Err(Error::MtuTooLarge {
                mtu: 1500,
                max: 1472
            })
        ),
        "{r:?}"
    );
    let config = builder(CipherKind::Aes256, 1472)
        .build()
        .expect("1472 is accepted");
    let listener = Listener::listen("127.0.0.1:0", &config)
        .await
        .expect("listen");
    let s = Session::dial(listener.local_addr(), &config)
        .await
        .expect("dial");
    let r = s.set_mtu(1473);
    assert!(
        matches!(
            r,
            Err(Error::MtuTooLarge {
                mtu: 1473,
                max: 1472
            })
        ),
        "{r:?}"
    );
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains("1472") && msg.contains("kcp-go v5.7"), "{msg}");
    // The mtu is unchanged by the refused call: OOB room still follows 1472.
    assert_eq!(s.oob_max_size(), config.kcp_mtu() - 4);
    s.set_mtu(1472).expect("1472 is accepted");
}
