//! Issue 12 item 6 on loopback: `send_msg` refuses a message the peer's
//! receive window cannot hold instead of wedging the session, and the
//! session keeps working afterwards in both directions.

mod support;

use std::time::Duration;

use kcp_session::{Config, Error, Listener, Mode, Session};
use support::{bounded, pattern};

const LIMIT: Duration = Duration::from_secs(20);

fn cfg(snd: u32, rcv: u32) -> Config {
    Config::builder()
        .crypt_kcptun("aes", "message-window")
        .mode(Mode::Fast3)
        .window(snd, rcv)
        .build()
        .unwrap()
}

fn mss(c: &Config) -> usize {
    c.kcp_mtu() - 24
}

fn too_large(r: kcp_session::Result<()>) -> (usize, usize) {
    match r {
        Err(Error::MessageTooLarge { fragments, max, .. }) => (fragments, max),
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
}

async fn recv(s: &mut Session, buf: &mut [u8]) -> Vec<u8> {
    let n = bounded(LIMIT, "recv_msg", s.recv_msg(buf)).await.unwrap();
    buf[..n].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_longer_than_the_peer_window_is_refused_not_wedged() {
    // kcp-go's defaults: windows 32/32, message mode.
    let c = cfg(32, 32);
    let mss = mss(&c);
    let listener = Listener::listen("127.0.0.1:0", &c).await.unwrap();
    let mut client = Session::dial(listener.local_addr(), &c).await.unwrap();
    // Nothing heard yet: the session asks the window (WASK), hears 32.
    assert_eq!(
        too_large(client.send_msg(&pattern(1, mss * 33)).await),
        (33, 32)
    );
    let fits = pattern(2, mss * 32);
    client.send_msg(&fits).await.unwrap();
    let later = pattern(3, 777);
    client.send_msg(&later).await.unwrap();
    let mut server = bounded(LIMIT, "accept", listener.accept()).await.unwrap();
    let mut buf = vec![0u8; 256 * 1500];
    assert!(recv(&mut server, &mut buf).await == fits);
    assert!(recv(&mut server, &mut buf).await == later);
    // The accepted side heard the client's window (32) with its first datagram.
    assert_eq!(
        too_large(server.send_msg(&pattern(4, mss * 33)).await),
        (33, 32)
    );
    let back = pattern(5, mss * 32);
    server.send_msg(&back).await.unwrap();
    assert!(recv(&mut client, &mut buf).await == back);
    assert!(client.error().is_none() && server.error().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bound_follows_the_window_the_peer_advertises() {
    let server_cfg = cfg(64, 64);
    let client_cfg = cfg(128, 128);
    let mss = mss(&server_cfg);
    let listener = Listener::listen("127.0.0.1:0", &server_cfg).await.unwrap();
    let mut client = Session::dial(listener.local_addr(), &client_cfg)
        .await
        .unwrap();
    client.send_msg(b"hello").await.unwrap();
    let mut server = bounded(LIMIT, "accept", listener.accept()).await.unwrap();
    let mut buf = vec![0u8; 256 * 1500];
    assert_eq!(recv(&mut server, &mut buf).await, b"hello");
    // The server's reply carries its window with an empty queue: 64.
    server.send_msg(b"hi").await.unwrap();
    assert_eq!(recv(&mut client, &mut buf).await, b"hi");
    assert_eq!(
        too_large(client.send_msg(&pattern(6, mss * 65)).await),
        (65, 64)
    );
    let big = pattern(7, mss * 64);
    client.send_msg(&big).await.unwrap();
    assert!(recv(&mut server, &mut buf).await == big);
    // The client advertised 128; the server may send that many fragments.
    assert_eq!(
        too_large(server.send_msg(&pattern(8, mss * 129)).await),
        (129, 128)
    );
    let big = pattern(9, mss * 128);
    server.send_msg(&big).await.unwrap();
    assert!(recv(&mut client, &mut buf).await == big);
    // 255 fragments is the frg field's limit, whatever the window.
    let c1024 = cfg(1024, 1024);
    let l2 = Listener::listen("127.0.0.1:0", &c1024).await.unwrap();
    let mut c2 = Session::dial(l2.local_addr(), &c1024).await.unwrap();
    c2.send_msg(b"x").await.unwrap();
    let mut s2 = bounded(LIMIT, "accept", l2.accept()).await.unwrap();
    assert_eq!(recv(&mut s2, &mut buf).await, b"x");
    assert_eq!(
        too_large(s2.send_msg(&pattern(10, mss * 256)).await),
        (256, 255)
    );
    let big = pattern(11, mss * 255);
    s2.send_msg(&big).await.unwrap();
    assert!(recv(&mut c2, &mut buf).await == big);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_first_message_waits_for_the_window_instead_of_a_guess() {
    // A dialed session that has heard nothing yet: 100 fragments exceed
    // kcp-go's assumed 32 but fit the peer's 128, so the message must go out
    // (it used to be refused on the guess) and arrive whole; 129 fragments
    // are refused once the probe's answer says 128.
    let c = cfg(128, 128);
    let mss = mss(&c);
    let listener = Listener::listen("127.0.0.1:0", &c).await.unwrap();
    let mut client = Session::dial(listener.local_addr(), &c).await.unwrap();
    let first = pattern(7, mss * 100);
    bounded(LIMIT, "send_msg", client.send_msg(&first))
        .await
        .unwrap();
    let mut server = bounded(LIMIT, "accept", listener.accept()).await.unwrap();
    let mut buf = vec![0u8; 256 * 1500];
    assert!(recv(&mut server, &mut buf).await == first);
    assert_eq!(
        too_large(client.send_msg(&pattern(8, mss * 129)).await),
        (129, 128)
    );
    assert!(client.error().is_none() && server.error().is_none());
}
