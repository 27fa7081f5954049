//! Issue 12 item 6 at the engine: a message with more fragments than the
//! receiver's window. kcp-go's receiver moves at most `rcv_wnd` segments
//! into its queue and only delivers a message once all its fragments are
//! there, so such a message used to wedge the session forever (queue full
//! of fragments, advertised window 0). Our receiver lets an incomplete
//! message grow the queue past the window while nothing in the queue is
//! deliverable; the sender's side of the rule (a bound learnt from the
//! peer's advertised windows) is checked too. All on the deterministic
//! simulated link, virtual time.
#![cfg(feature = "testing")]

use kcp_session::kcp::{Kcp, IKCP_MAX_FRAGMENTS, IKCP_WND_RCV};
use kcp_session::testing::{test_data, KcpEndpoint, KcpPair, Link, LinkConfig, Pair, Side};

const CONV: u32 = 0x600d_f00d;

fn engine(snd: u32, rcv: u32) -> Kcp {
    let mut k = Kcp::new(CONV);
    k.set_wndsize(snd, rcv);
    k.set_nodelay(1, 10, 2, 1);
    k
}

fn pair(a: Kcp, b: Kcp, link: LinkConfig, seed: u64) -> KcpPair {
    Pair::new(
        KcpEndpoint::new(a),
        KcpEndpoint::new(b),
        Link::new(link, seed),
    )
}

/// Runs until B has delivered `want.len()` messages or `limit_ms` of virtual
/// time passed; returns what B delivered.
fn deliver(p: &mut KcpPair, want: usize, limit_ms: u64) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 256 * 1500];
    let start = p.now;
    while got.len() < want && p.now - start < limit_ms {
        while let Some(n) = p.b.kcp.recv(&mut buf).unwrap() {
            got.push(buf[..n].to_vec());
        }
        if got.len() >= want || !p.step() {
            break;
        }
    }
    while let Some(n) = p.b.kcp.recv(&mut buf).unwrap() {
        got.push(buf[..n].to_vec());
    }
    got
}

fn oversized_is_delivered(rcv_wnd: u32, fragments: usize, link: LinkConfig, seed: u64) {
    let a = engine(rcv_wnd.max(32), rcv_wnd.max(32));
    let b = engine(32, rcv_wnd);
    let mss = a.mss();
    let mut p = pair(a, b, link, seed);
    let big = test_data(mss * fragments, seed);
    let after = test_data(1000, seed + 1);
    // The bare engine does not apply the session's bound: this is what an
    // older or foreign sender (C KCP, kcp-go's raw Send) can do.
    p.write(Side::A, &big).unwrap();
    p.write(Side::A, &after).unwrap();
    let got = deliver(&mut p, 2, 120_000);
    assert_eq!(
        got.len(),
        2,
        "rcv_wnd {rcv_wnd}, {fragments} fragments: {} of 2 messages delivered \
         (B queue {}, advertised-window owner A sees rmt_wnd {})",
        got.len(),
        p.b.kcp.rcv_queue_len(),
        p.a.kcp.rmt_wnd()
    );
    assert!(got[0] == big, "the oversized message arrived intact");
    assert!(got[1] == after, "the message after it arrived too");
    // Once read, the queue is empty and the full window is advertised again.
    assert_eq!(p.b.kcp.rcv_queue_len(), 0);
}

#[test]
fn a_message_larger_than_the_receive_window_is_delivered() {
    oversized_is_delivered(32, 33, LinkConfig::perfect(5), 1);
    oversized_is_delivered(64, 65, LinkConfig::perfect(5), 2);
    oversized_is_delivered(8, IKCP_MAX_FRAGMENTS, LinkConfig::perfect(5), 3);
    oversized_is_delivered(1, 2, LinkConfig::perfect(5), 4);
}

#[test]
fn oversized_messages_survive_loss_and_reordering() {
    for seed in 0..6 {
        let mut l = LinkConfig::lossy(0.2);
        l.delay_ms = 10;
        oversized_is_delivered(16, 100, l, 100 + seed);
    }
}

/// The queue never grows past the larger of the window and one whole
/// message, and a complete message at the front stops it at the window as
/// before (an application that does not read is still bounded).
#[test]
fn the_queue_stays_bounded_when_the_application_does_not_read() {
    let a = engine(64, 64);
    let b = engine(32, 8);
    let mss = a.mss();
    let mut p = pair(a, b, LinkConfig::perfect(5), 9);
    for i in 0..20 {
        p.write(Side::A, &test_data(mss * 12, i)).unwrap();
    }
    let mut max_queue = 0;
    for _ in 0..20_000 {
        max_queue = max_queue.max(p.b.kcp.rcv_queue_len());
        if !p.step() {
            break;
        }
    }
    // 12 fragments: the first message completes at 12 > 8; nothing moves
    // after it while it waits to be read.
    assert_eq!(max_queue, 12);
    assert_eq!(p.b.kcp.rcv_queue_len(), 12);
}

#[test]
fn sender_learns_a_lower_bound_of_the_peer_window() {
    let a = engine(32, 32);
    let b = engine(32, 64);
    let mss = a.mss();
    let mut p = pair(a, b, LinkConfig::perfect(5), 5);
    // Nothing heard yet: kcp-go assumes the peer's window is IKCP_WND_RCV.
    assert_eq!(p.a.kcp.max_message_fragments(), IKCP_WND_RCV as usize);
    p.write(Side::A, &test_data(mss, 5)).unwrap();
    assert_eq!(deliver(&mut p, 1, 10_000).len(), 1);
    while p.step() {}
    // B's ACK left while the message was still in its queue (63 free).
    assert_eq!(p.a.kcp.max_message_fragments(), 63);
    // B's own data, sent after it read everything, shows the whole window.
    p.write(Side::B, b"reply").unwrap();
    while p.step() {}
    assert_eq!(p.a.kcp.max_message_fragments(), 64);
    // A peer window above 255 is capped by the frg field.
    let mut big = engine(32, 1024);
    let mut small = engine(32, 32);
    let mut wire = Vec::new();
    small.send(b"x").unwrap();
    small.flush(kcp_session::kcp::FlushKind::Full, 0, &mut |d: &[u8]| {
        wire.push(d.to_vec())
    });
    for d in &wire {
        big.input(
            d,
            kcp_session::kcp::PacketKind::Regular,
            false,
            1,
            &mut |_: &[u8]| {},
        )
        .unwrap();
    }
    let mut acks = Vec::new();
    big.flush(kcp_session::kcp::FlushKind::Full, 2, &mut |d: &[u8]| {
        acks.push(d.to_vec())
    });
    for d in &acks {
        small
            .input(
                d,
                kcp_session::kcp::PacketKind::Regular,
                false,
                3,
                &mut |_: &[u8]| {},
            )
            .unwrap();
    }
    assert_eq!(small.max_message_fragments(), IKCP_MAX_FRAGMENTS);
}

/// Issue 12 item 8, the pure part of the dead-link default: with kcp-go's
/// default engine settings (normal mode, linear RTO back-off) a segment to a
/// peer that never answers is due for its 21st transmission, the default
/// dead-link point, after a bounded time: about 210 × the 200 ms initial RTO.
#[test]
fn the_default_dead_link_point_is_reached_in_bounded_virtual_time() {
    let a = Kcp::new(CONV);
    let b = Kcp::new(CONV);
    let mut l = LinkConfig::perfect(5);
    l.loss = 1.0; // the peer is gone
    let mut p = pair(a, b, l, 77);
    p.write(Side::A, b"hello?").unwrap();
    let limit = kcp_session::config::DEFAULT_DEAD_LINK;
    while p.a.kcp.max_xmit() < limit && p.now < 600_000 {
        assert!(p.step());
    }
    // The 20th transmission has gone out; the 21st is due one RTO later,
    // which is when the session reports DeadLink.
    let at = p.now + u64::from(p.a.kcp.rto()) * u64::from(limit);
    eprintln!(
        "20th transmission at {} ms, dead link at about {at} ms",
        p.now
    );
    assert_eq!(p.a.kcp.max_xmit(), limit);
    assert!((38_000..=43_000).contains(&p.now), "{}", p.now);
}
