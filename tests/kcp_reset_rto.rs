//! `Kcp::reset_rto` (kcp-go v5.7 `ResetRTO`, §12) on the pure engine, with
//! expected datagrams worked out by hand from v5.7.6's `kcp.go`: every
//! unacknowledged segment that was sent gets `rto = rx_rto` and
//! `resendts = now`; `xmit` and `fastack` stay; the next full flush then takes
//! the RTO branch (`rto += rx_rto` with nodelay 0, `LostSegs` counted).

use kcp_session::kcp::{
    FlushKind, Kcp, PacketKind, RttSamples, SegmentHeader, Segments, TimeoutResend, IKCP_CMD_ACK,
};

const CONV: u32 = 0x0a0b_0c0d;

fn flush(k: &mut Kcp, kind: FlushKind, now: u32) -> Vec<u32> {
    let mut sns = Vec::new();
    k.flush(kind, now, &mut |d: &[u8]| {
        for s in Segments::new(d) {
            let (h, _) = s.unwrap();
            if h.cmd != IKCP_CMD_ACK {
                sns.push(h.sn);
            }
        }
    });
    sns
}

fn ack(k: &mut Kcp, sn: u32, una: u32, ts: u32, now: u32) {
    let mut v = Vec::new();
    SegmentHeader {
        conv: CONV,
        cmd: IKCP_CMD_ACK,
        frg: 0,
        wnd: 32,
        ts,
        sn,
        una,
        len: 0,
    }
    .encode_to(&mut v);
    let mut out = 0;
    k.input(&v, PacketKind::Regular, false, now, &mut |_: &[u8]| {
        out += 1
    })
    .unwrap();
    assert_eq!(out, 0, "the ACK alone must not trigger a flush");
}

/// nodelay 0, interval 10, no fast resend, congestion window off; sn 0..=2
/// sent at t=100 (rto 200, due at 300), sn 2 acknowledged at t=120 with an
/// echoed ts of 99 (no fast-ack: 99 < 100; RTT 21 gives rx_rto 100), and sn 3
/// queued and moved to the send buffer by an ACK-only flush, never sent.
fn scenario() -> Kcp {
    scenario_with(TimeoutResend::EverySegment)
}

fn scenario_with(resend: TimeoutResend) -> Kcp {
    let mut k = Kcp::new(CONV);
    // kcp-go's RTT rule: the hand-made ACK echoes ts 99, a copy never sent.
    k.set_rtt_samples(RttSamples::EveryAck);
    // kcp-go's timeout rule (the ACK's ts 99 precedes every send, so the
    // peer counts as silent under this crate's default).
    k.set_timeout_resend(resend);
    k.set_nodelay(0, 10, 0, 1);
    for d in [b"a", b"b", b"c"] {
        k.send(d).unwrap();
    }
    assert_eq!(flush(&mut k, FlushKind::Full, 100), [0, 1, 2]);
    ack(&mut k, 2, 0, 99, 120);
    assert_eq!(
        k.rto(),
        100,
        "srtt 21 + max(10, 4 * 10) = 61, raised to minrto"
    );
    k.send(b"d").unwrap();
    assert_eq!(flush(&mut k, FlushKind::AckOnly, 130), Vec::<u32>::new());
    k
}

#[test]
fn without_reset_the_original_timers_hold() {
    let mut k = scenario();
    assert_eq!(flush(&mut k, FlushKind::Full, 150), [3], "only the new one");
    // sn 3 (rto = rx_rto = 100) is due at 250; sn 0 and 1 still at 300.
    assert_eq!(flush(&mut k, FlushKind::Full, 249), Vec::<u32>::new());
    assert_eq!(flush(&mut k, FlushKind::Full, 250), [3]);
    assert_eq!(flush(&mut k, FlushKind::Full, 299), Vec::<u32>::new());
    assert_eq!(flush(&mut k, FlushKind::Full, 300), [0, 1]);
    assert_eq!(k.stats().lost_segs, 3);
}

#[test]
fn reset_makes_every_unacked_sent_segment_due_at_the_next_flush() {
    let mut k = scenario();
    let before = *k.stats();
    k.reset_rto(150);
    // Nothing is sent by the reset itself.
    assert_eq!(k.stats().out_segs, before.out_segs);
    // sn 0 and 1 by RTO, sn 3 as its first transmission; sn 2 is acknowledged.
    assert_eq!(flush(&mut k, FlushKind::Full, 150), [0, 1, 3]);
    assert_eq!(k.stats().lost_segs - before.lost_segs, 2);
    assert_eq!(k.stats().retrans_segs - before.retrans_segs, 2);
    // sn 3: rto = rx_rto = 100, due at 250. sn 0 and 1: rto = 100 + 100
    // (the RTO branch backs off from the reset value), due at 350. The
    // pre-reset deadline (300) is gone.
    assert_eq!(flush(&mut k, FlushKind::Full, 249), Vec::<u32>::new());
    assert_eq!(flush(&mut k, FlushKind::Full, 250), [3]);
    assert_eq!(flush(&mut k, FlushKind::Full, 300), Vec::<u32>::new());
    assert_eq!(flush(&mut k, FlushKind::Full, 349), Vec::<u32>::new());
    assert_eq!(flush(&mut k, FlushKind::Full, 350), [0, 1]);
}

#[test]
fn repeated_resets_act_like_one() {
    let mut once = scenario();
    let mut many = scenario();
    once.reset_rto(150);
    for t in 140..=150 {
        for _ in 0..100 {
            many.reset_rto(t);
        }
    }
    let times = [150, 249, 250, 300, 349, 350, 700, 1400];
    for t in times {
        assert_eq!(
            flush(&mut once, FlushKind::Full, t),
            flush(&mut many, FlushKind::Full, t),
            "t={t}"
        );
    }
    assert_eq!(once.stats(), many.stats());
}

#[test]
fn reset_with_nothing_in_flight_does_nothing() {
    let mut k = Kcp::new(CONV);
    k.reset_rto(5);
    assert_eq!(flush(&mut k, FlushKind::Full, 5), Vec::<u32>::new());
    // All acknowledged: nothing to reset either.
    let mut k = scenario();
    ack(&mut k, 0, 4, 99, 140);
    assert_eq!(k.snd_buf_len(), 0);
    k.reset_rto(150);
    assert_eq!(flush(&mut k, FlushKind::Full, 150), Vec::<u32>::new());
}

/// Under this crate's default the peer here counts as silent (the only ACK
/// echoes ts 99, before every send), so a timeout sends one probe; a reset
/// is the application saying the path works, and sends everything, as in
/// kcp-go.
#[test]
fn under_probe_while_silent_a_reset_still_sends_every_segment() {
    let mut k = scenario_with(TimeoutResend::ProbeWhileSilent);
    assert_eq!(flush(&mut k, FlushKind::Full, 150), [3]);
    assert_eq!(flush(&mut k, FlushKind::Full, 300), [0], "one probe");
    k.reset_rto(310);
    assert_eq!(flush(&mut k, FlushKind::Full, 310), [0, 1, 3]);
}
