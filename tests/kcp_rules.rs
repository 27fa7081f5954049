//! One test per kcp-go-specific rule of spec §5, with expected values worked
//! out by hand from kcp-go v5.6.72's `kcp.go` (where C KCP would differ, the
//! test says so).

use kcp_session::kcp::{
    FlushKind, Kcp, PacketKind, RttSamples, SegmentHeader, Segments, TimeoutResend, IKCP_CMD_ACK,
    IKCP_CMD_PUSH, IKCP_CMD_WASK, IKCP_CMD_WINS,
};
use kcp_session::Error;

const CONV: u32 = 0x0102_0304;

/// An engine with kcp-go's timeout rule (this crate's default,
/// `TimeoutResend::ProbeWhileSilent`, has its own tests at the end).
fn kcp_go() -> Kcp {
    let mut k = Kcp::new(CONV);
    k.set_timeout_resend(TimeoutResend::EverySegment);
    k
}

fn seg(cmd: u8, sn: u32, una: u32, ts: u32, wnd: u16, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    SegmentHeader {
        conv: CONV,
        cmd,
        frg: 0,
        wnd,
        ts,
        sn,
        una,
        len: data.len() as u32,
    }
    .encode_to(&mut v);
    v.extend_from_slice(data);
    v
}

fn ack(sn: u32, una: u32, ts: u32) -> Vec<u8> {
    seg(IKCP_CMD_ACK, sn, una, ts, 32, &[])
}

fn push(sn: u32, una: u32, ts: u32) -> Vec<u8> {
    seg(IKCP_CMD_PUSH, sn, una, ts, 32, b"x")
}

fn headers(dgs: &[Vec<u8>]) -> Vec<SegmentHeader> {
    dgs.iter()
        .flat_map(|d| Segments::new(d).map(|s| s.unwrap().0))
        .collect()
}

fn flush(k: &mut Kcp, kind: FlushKind, now: u32) -> (Vec<SegmentHeader>, u32) {
    let mut out = Vec::new();
    let d = k.flush(kind, now, &mut |b: &[u8]| out.push(b.to_vec()));
    (headers(&out), d)
}

fn input(k: &mut Kcp, data: &[u8], kind: PacketKind, now: u32) -> Vec<SegmentHeader> {
    let mut out = Vec::new();
    k.input(data, kind, false, now, &mut |b: &[u8]| out.push(b.to_vec()))
        .unwrap();
    headers(&out)
}

fn pushes(h: &[SegmentHeader]) -> Vec<u32> {
    h.iter()
        .filter(|h| h.cmd == IKCP_CMD_PUSH)
        .map(|h| h.sn)
        .collect()
}

/// A sender with congestion control off and `n` one-byte segments sent at `now`.
fn sender(n: usize, resend: i32, now: u32) -> Kcp {
    let mut k = kcp_go();
    k.set_nodelay(1, 10, resend, 1);
    k.set_wndsize(128, 128);
    for _ in 0..n {
        k.send(b"d").unwrap();
    }
    let (h, _) = flush(&mut k, FlushKind::Full, now);
    assert_eq!(pushes(&h), (0..n as u32).collect::<Vec<_>>());
    k
}

#[test]
fn acks_below_rcv_nxt_are_dropped_except_the_last() {
    let mut k = kcp_go();
    // sn 0 and 1 arrive in order, then 3: rcv_nxt = 2, pending acks [0, 1, 3].
    let mut d = push(0, 0, 10);
    d.extend(push(1, 0, 11));
    d.extend(push(3, 0, 13));
    input(&mut k, &d, PacketKind::Regular, 20);
    let (h, _) = flush(&mut k, FlushKind::AckOnly, 20);
    let acks: Vec<_> = h.iter().map(|h| (h.cmd, h.sn, h.ts, h.una)).collect();
    // C KCP would send all three.
    assert_eq!(acks, vec![(IKCP_CMD_ACK, 3, 13, 2)]);

    // When every pending ack is below rcv_nxt, the last one still goes out.
    let mut k = kcp_go();
    let mut d = push(0, 0, 10);
    d.extend(push(1, 0, 11));
    input(&mut k, &d, PacketKind::Regular, 20);
    let (h, _) = flush(&mut k, FlushKind::AckOnly, 20);
    let acks: Vec<_> = h
        .iter()
        .map(|h| (h.cmd, h.sn, h.ts, h.una, h.wnd))
        .collect();
    // wnd = rcv_wnd 32 - 2 queued segments.
    assert_eq!(acks, vec![(IKCP_CMD_ACK, 1, 11, 2, 30)]);
}

#[test]
fn fast_retransmit_once_per_rto_with_the_sentinel() {
    let mut k = sender(8, 2, 1000);
    // ACKs for 2 and 3 (sent at ts 1000): segments 0 and 1 reach fastack 2.
    let mut d = ack(2, 0, 1000);
    d.extend(ack(3, 0, 1000));
    let h = input(&mut k, &d, PacketKind::Regular, 1010);
    // The threshold was reached, so kcp-go flushes at once (v5.6.43+).
    assert_eq!(pushes(&h), vec![0, 1]);
    assert_eq!(k.stats().fast_retrans_segs, 2);
    // Many more ACKs: the sentinel blocks a second fast retransmit.
    for sn in 4..8 {
        let h = input(&mut k, &ack(sn, 0, 1000), PacketKind::Regular, 1020);
        assert_eq!(pushes(&h), Vec::<u32>::new(), "ack {sn}");
    }
    let (h, _) = flush(&mut k, FlushKind::Full, 1030);
    assert_eq!(pushes(&h), Vec::<u32>::new());
    assert_eq!(k.stats().fast_retrans_segs, 2);
    // rto is the initial 200 ms: the timeout resends them and clears the sentinel.
    let (h, _) = flush(&mut k, FlushKind::Full, 1010 + 200);
    assert_eq!(pushes(&h), vec![0, 1]);
    assert_eq!(k.stats().lost_segs, 2);
    assert_eq!(k.stats().retrans_segs, 4);
}

#[test]
fn early_retransmit_fires_even_with_resend_0() {
    // resend 0 disables fast retransmit (threshold 0xFFFFFFFF) but any
    // fast-ack increment triggers an immediate flush, and with no new segment
    // moved in that flush, early retransmit sends every fast-acked segment.
    let mut k = sender(3, 0, 0);
    let h = input(&mut k, &ack(2, 0, 0), PacketKind::Regular, 5);
    assert_eq!(pushes(&h), vec![0, 1]);
    assert_eq!(k.stats().early_retrans_segs, 2);
    assert_eq!(k.stats().fast_retrans_segs, 0);
    // Early retransmit is suppressed while new segments enter the window.
    let mut k = sender(3, 0, 0);
    k.send(b"new").unwrap();
    let h = input(&mut k, &ack(2, 0, 0), PacketKind::Regular, 5);
    assert_eq!(pushes(&h), vec![3]);
    assert_eq!(k.stats().early_retrans_segs, 0);
}

#[test]
fn window_probe_after_500_ms() {
    let mut k = kcp_go();
    // The peer advertises a zero window.
    input(
        &mut k,
        &seg(IKCP_CMD_WINS, 0, 0, 0, 0, &[]),
        PacketKind::Regular,
        0,
    );
    assert_eq!(k.rmt_wnd(), 0);
    let (h, _) = flush(&mut k, FlushKind::Full, 1000); // arms the probe: 1000 + 500
    assert!(h.is_empty());
    let (h, _) = flush(&mut k, FlushKind::Full, 1499);
    assert!(h.is_empty());
    let (h, _) = flush(&mut k, FlushKind::AckOnly, 1500); // ACKONLY probes too (v5.6.34+)
    let w: Vec<_> = h.iter().map(|h| (h.cmd, h.sn, h.ts)).collect();
    assert_eq!(w, vec![(IKCP_CMD_WASK, 0, 0)]);
    // probe_wait grew by half to 750: next at 2250 (C KCP starts at 7000).
    assert!(flush(&mut k, FlushKind::Full, 2249).0.is_empty());
    assert_eq!(flush(&mut k, FlushKind::Full, 2250).0.len(), 1);
    // The peer is never idle for the timer while its window is closed.
    assert!(k.next_deadline(2250).is_some());
}

#[test]
fn wask_is_answered_by_wins_reusing_the_last_ack() {
    let mut k = kcp_go();
    let mut d = push(0, 0, 77);
    d.extend(seg(IKCP_CMD_WASK, 0, 0, 0, 32, &[]));
    input(&mut k, &d, PacketKind::Regular, 100);
    let (h, _) = flush(&mut k, FlushKind::AckOnly, 100);
    let w: Vec<_> = h.iter().map(|h| (h.cmd, h.sn, h.ts, h.wnd)).collect();
    assert_eq!(
        w,
        vec![(IKCP_CMD_ACK, 0, 77, 31), (IKCP_CMD_WINS, 0, 77, 31)]
    );
}

#[test]
fn remote_window_only_from_regular_packets() {
    let mut k = kcp_go();
    // ACKs of nothing in flight: kcp-go samples them, the default does not.
    k.set_rtt_samples(RttSamples::EveryAck);
    input(
        &mut k,
        &seg(IKCP_CMD_WINS, 0, 0, 0, 7, &[]),
        PacketKind::Recovered,
        0,
    );
    assert_eq!(k.rmt_wnd(), 32);
    input(
        &mut k,
        &seg(IKCP_CMD_WINS, 0, 0, 0, 7, &[]),
        PacketKind::Regular,
        0,
    );
    assert_eq!(k.rmt_wnd(), 7);
    // Recovered ACKs give no RTT sample either.
    input(&mut k, &ack(0, 0, 0), PacketKind::Recovered, 100);
    assert_eq!(k.srtt(), 0);
    input(&mut k, &ack(0, 0, 0), PacketKind::Regular, 100);
    assert_eq!(k.srtt(), 100);
}

#[test]
fn immediate_full_flush_when_una_advances() {
    let mut k = kcp_go();
    k.set_nodelay(0, 100, 0, 1);
    k.set_wndsize(2, 32);
    for _ in 0..4 {
        k.send(b"z").unwrap();
    }
    assert_eq!(pushes(&flush(&mut k, FlushKind::Full, 0).0), vec![0, 1]);
    // A recovered packet still processes una (§4.4) and the window slides.
    let h = input(&mut k, &ack(0, 1, 0), PacketKind::Recovered, 10);
    assert_eq!(pushes(&h), vec![2]);
    // Nothing new: no flush at all.
    let h = input(&mut k, &ack(1, 1, 0), PacketKind::Regular, 10);
    assert_eq!(h, vec![]);
}

#[test]
fn ack_clocking_and_ack_no_delay() {
    let mut k = kcp_go();
    k.set_mtu(120).unwrap(); // clocking threshold: 120 / 24 = 5 pending acks
    k.send(b"queued data that must not go out in an ACK-only flush")
        .unwrap();
    let mut d = Vec::new();
    for sn in 0..4 {
        d.extend(push(sn, 0, sn));
    }
    assert!(input(&mut k, &d, PacketKind::Regular, 1).is_empty());
    assert_eq!(k.pending_acks(), 4);
    let h = input(&mut k, &push(4, 0, 4), PacketKind::Regular, 2);
    // All five below rcv_nxt = 5 except the last: one ACK, no data.
    let w: Vec<_> = h.iter().map(|h| (h.cmd, h.sn)).collect();
    assert_eq!(w, vec![(IKCP_CMD_ACK, 4)]);
    assert_eq!(k.pending_acks(), 0);

    let mut out = Vec::new();
    k.input(
        &push(5, 0, 9),
        PacketKind::Regular,
        true,
        3,
        &mut |b: &[u8]| out.push(b.to_vec()),
    )
    .unwrap();
    let w: Vec<_> = headers(&out).iter().map(|h| (h.cmd, h.sn, h.ts)).collect();
    assert_eq!(w, vec![(IKCP_CMD_ACK, 5, 9)]);
}

#[test]
fn rtt_estimator_matches_hand_computed_values() {
    let mut k = kcp_go();
    // ACKs of nothing in flight: kcp-go samples them, the default does not.
    k.set_rtt_samples(RttSamples::EveryAck);
    let mut now: u32 = 10_000;
    let mut sample = |k: &mut Kcp, rtt: u32| {
        now += 1000;
        input(
            k,
            &ack(0, 0, now.wrapping_sub(rtt)),
            PacketKind::Regular,
            now,
        );
        (k.srtt(), k.rttvar(), k.rto())
    };
    // 100: srtt 100, rttvar 50, rto 100 + max(100, 200).
    assert_eq!(sample(&mut k, 100), (100, 50, 300));
    // 120: delta 20, srtt 102, rttvar 50 + (20-50)>>2 = 42, rto 102 + 168.
    assert_eq!(sample(&mut k, 120), (102, 42, 270));
    // 40: delta -62, srtt 102 + (-62>>3 = -8) = 94; 40 < 94-42 so the
    // variation moves by (62-42)>>5 = 0 (C KCP would give 47).
    assert_eq!(sample(&mut k, 40), (94, 42, 262));
    // 1000: delta 906, srtt 94+113 = 207, rttvar 42 + (864>>2) = 258, rto 207+1032.
    assert_eq!(sample(&mut k, 1000), (207, 258, 1239));
    // The RTO is capped at 60 s.
    assert_eq!(sample(&mut k, 900_000).2, 60_000);

    // Only the last ACK of a datagram gives the sample.
    let mut k = kcp_go();
    k.set_rtt_samples(RttSamples::EveryAck);
    let mut d = ack(0, 0, 900);
    d.extend(ack(0, 0, 950));
    input(&mut k, &d, PacketKind::Regular, 1000);
    assert_eq!(k.srtt(), 50);
}

/// sn 0 and 1 sent at 1000 and, by RTO, again at 1200 (ts 1200).
fn resent_pair(rule: RttSamples) -> Kcp {
    let mut k = sender(2, 0, 1000);
    k.set_rtt_samples(rule);
    assert_eq!(pushes(&flush(&mut k, FlushKind::Full, 1200).0), [0, 1]);
    k
}

#[test]
fn rtt_samples_come_from_the_latest_transmission_only() {
    use RttSamples::{EveryAck, LatestTransmission};
    // An ACK echoing the first copy (ts 1000), as after a late FEC recovery:
    // kcp-go takes 210 ms; the default ignores it and keeps the first RTO.
    // (srtt 210, rttvar 105: rto 210 + 4 * 105.)
    for (rule, srtt, rto) in [(EveryAck, 210, 630), (LatestTransmission, 0, 200)] {
        let mut k = resent_pair(rule);
        input(&mut k, &ack(0, 0, 1000), PacketKind::Regular, 1210);
        assert_eq!((k.srtt(), k.rto()), (srtt, rto), "{rule:?}");
    }
    // The ACK of the second copy is a sample under both; a repeat of it,
    // for a segment already acknowledged, only under kcp-go's rule.
    for (rule, after_repeat) in [(EveryAck, 15 + (85 >> 3)), (LatestTransmission, 15)] {
        let mut k = resent_pair(rule);
        input(&mut k, &ack(1, 0, 1200), PacketKind::Regular, 1215);
        assert_eq!(k.srtt(), 15, "{rule:?}");
        input(&mut k, &ack(1, 0, 1200), PacketKind::Regular, 1300);
        assert_eq!(k.srtt(), after_repeat, "{rule:?}");
    }
    // A stale ACK after a fresh one in the same datagram: kcp-go takes the
    // last ACK's ts, the default the last fresh one's.
    for (rule, srtt) in [(EveryAck, 230), (LatestTransmission, 30)] {
        let mut k = resent_pair(rule);
        let mut d = ack(1, 0, 1200);
        d.extend(ack(0, 0, 1000));
        input(&mut k, &d, PacketKind::Regular, 1230);
        assert_eq!(k.srtt(), srtt, "{rule:?}");
    }
    // The usual in-order ACK, whose own una frees the segment before the ACK
    // is read, is a sample under both.
    for rule in [EveryAck, LatestTransmission] {
        let mut k = sender(1, 0, 1000);
        k.set_rtt_samples(rule);
        input(&mut k, &ack(0, 1, 1000), PacketKind::Regular, 1020);
        assert_eq!(k.srtt(), 20, "{rule:?}");
        assert_eq!(k.snd_buf_len(), 0);
    }
}

#[test]
fn rto_backoff_nodelay_0_and_1() {
    for (nodelay, resends) in [(0, [200u32, 600, 1200]), (1, [200, 500, 900])] {
        let mut k = kcp_go();
        k.set_nodelay(nodelay, 5000, 0, 1);
        k.send(b"a").unwrap();
        let (h, delay) = flush(&mut k, FlushKind::Full, 0);
        assert_eq!(pushes(&h), vec![0]);
        assert_eq!(
            delay, 200,
            "next flush at the resend time, not the interval"
        );
        let mut lost = 0;
        for t in resends {
            assert!(pushes(&flush(&mut k, FlushKind::Full, t - 1).0).is_empty());
            assert_eq!(
                pushes(&flush(&mut k, FlushKind::Full, t).0),
                vec![0],
                "nodelay {nodelay} at {t}"
            );
            lost += 1;
            assert_eq!(k.stats().lost_segs, lost);
        }
        assert_eq!(k.max_xmit(), 4);
    }
}

#[test]
fn congestion_window() {
    let mut k = kcp_go();
    k.set_nodelay(0, 100, 2, 0);
    for _ in 0..20 {
        k.send(b"c").unwrap();
    }
    // cwnd starts at 0: the first flush moves nothing, then raises it to 1.
    assert!(pushes(&flush(&mut k, FlushKind::Full, 0).0).is_empty());
    assert_eq!(k.cwnd(), 1);
    assert_eq!(pushes(&flush(&mut k, FlushKind::Full, 1).0), vec![0]);
    // Slow start: cwnd 2, incr 2·mss; the immediate flush sends two more.
    let h = input(&mut k, &ack(0, 1, 1), PacketKind::Regular, 10);
    assert_eq!((k.cwnd(), pushes(&h)), (2, vec![1, 2]));
    // Congestion avoidance: incr += mss²/incr + mss/16 = 2752 + 774 < 3·mss.
    input(&mut k, &ack(1, 2, 10), PacketKind::Regular, 20);
    assert_eq!(k.cwnd(), 2);
    // Fast retransmit (resend 2): ssthresh = inflight/2, cwnd = ssthresh + 2.
    let mut k = sender(10, 2, 0);
    k.set_nodelay(-1, -1, -1, 0);
    let mut d = ack(8, 0, 0);
    d.extend(ack(9, 0, 0));
    input(&mut k, &d, PacketKind::Regular, 5);
    assert_eq!((k.ssthresh(), k.cwnd()), (5, 7));
    // Timeout: ssthresh = effective window / 2 (floor 2), cwnd 1.
    flush(&mut k, FlushKind::Full, 10_000);
    assert_eq!((k.ssthresh(), k.cwnd()), (3, 1));
}

#[test]
fn early_retransmit_with_resend_0_wraps_cwnd_to_ssthresh_minus_1() {
    let mut k = sender(10, 0, 0);
    k.set_nodelay(-1, -1, -1, 0);
    input(&mut k, &ack(9, 0, 0), PacketKind::Regular, 5);
    assert_eq!(k.stats().early_retrans_segs, 9);
    // ssthresh = 10 / 2; cwnd = 5 + 0xFFFFFFFF = 4 in u32 arithmetic.
    assert_eq!((k.ssthresh(), k.cwnd()), (5, 4));
}

#[test]
fn send_limits_and_modes() {
    let mut k = kcp_go();
    assert!(matches!(k.send(&[]), Err(Error::EmptyMessage)));
    let mss = k.mss();
    k.send(&vec![0; 255 * mss]).unwrap();
    assert!(matches!(
        k.send(&vec![0; 255 * mss + 1]),
        Err(Error::MessageTooLarge {
            fragments: 256,
            max: 255,
            ..
        })
    ));
    assert_eq!(k.wait_snd(), 255);
    // Message mode: frg counts down.
    let mut k = kcp_go();
    k.set_nodelay(0, 100, 0, 1);
    k.send(&vec![1; mss * 2 + 1]).unwrap();
    let frg: Vec<_> = flush(&mut k, FlushKind::Full, 0)
        .0
        .iter()
        .map(|h| h.frg)
        .collect();
    assert_eq!(frg, vec![2, 1, 0]);
    // Stream mode tops up the last queued segment.
    let mut k = kcp_go();
    k.set_stream_mode(true);
    k.send(&[1; 10]).unwrap();
    k.send(&vec![2; mss]).unwrap();
    assert_eq!(k.wait_snd(), 2);
    k.set_nodelay(0, 100, 0, 1);
    let lens: Vec<_> = flush(&mut k, FlushKind::Full, 0)
        .0
        .iter()
        .map(|h| (h.frg, h.len))
        .collect();
    assert_eq!(lens, vec![(0, mss as u32), (0, 10)]);
}

#[test]
fn recv_messages_and_buffer_too_small() {
    let mut tx = kcp_go();
    tx.set_nodelay(0, 100, 0, 1);
    let mut rx = kcp_go();
    let mss = tx.mss();
    let msg: Vec<u8> = (0..mss * 3).map(|i| i as u8).collect();
    tx.send(&msg).unwrap();
    tx.send(b"second").unwrap();
    let mut wire = Vec::new();
    tx.flush(FlushKind::Full, 0, &mut |b: &[u8]| wire.push(b.to_vec()));
    // Deliver in reverse: nothing is readable until the first message is whole.
    for (i, d) in wire.iter().rev().enumerate() {
        if i + 1 < wire.len() {
            rx.input(d, PacketKind::Regular, false, 1, &mut |_: &[u8]| {})
                .unwrap();
            assert_eq!(rx.peek_size(), None);
        } else {
            rx.input(d, PacketKind::Regular, false, 1, &mut |_: &[u8]| {})
                .unwrap();
        }
    }
    assert_eq!(rx.peek_size(), Some(msg.len()));
    let mut small = vec![0; msg.len() - 1];
    assert!(matches!(
        rx.recv(&mut small),
        Err(Error::BufferTooSmall { need, have }) if need == msg.len() && have == msg.len() - 1
    ));
    let mut buf = vec![0; 1 << 20];
    assert_eq!(rx.recv(&mut buf).unwrap(), Some(msg.len()));
    assert_eq!(&buf[..msg.len()], &msg[..]);
    assert_eq!(rx.recv(&mut buf).unwrap(), Some(6));
    assert_eq!(&buf[..6], b"second");
    assert_eq!(rx.recv(&mut buf).unwrap(), None);
}

#[test]
fn input_errors_keep_earlier_segments() {
    let mut k = kcp_go();
    let mut sink = |_: &[u8]| {};
    assert!(matches!(
        k.input(&[0; 23], PacketKind::Regular, false, 0, &mut sink),
        Err(Error::Truncated(_))
    ));
    // A good PUSH, then a segment of another conversation.
    let mut d = push(0, 0, 0);
    let mut other = push(1, 0, 0);
    other[0] ^= 1;
    d.extend(other);
    let e = k
        .input(&d, PacketKind::Regular, false, 0, &mut sink)
        .unwrap_err();
    assert!(matches!(e, Error::ConvMismatch { expected: CONV, got } if got == CONV ^ 1));
    assert_eq!(k.rcv_nxt(), 1, "the first segment was applied");
    assert_eq!(
        k.stats().in_segs,
        0,
        "kcp-go counts InSegs only for whole datagrams"
    );
    // Declared length beyond the datagram.
    let mut d = push(1, 0, 0);
    d[20] = 200;
    assert!(matches!(
        k.input(&d, PacketKind::Regular, false, 0, &mut sink),
        Err(Error::Truncated(_))
    ));
    // Unknown command.
    let d = seg(85, 1, 0, 0, 32, &[]);
    assert!(matches!(
        k.input(&d, PacketKind::Regular, false, 0, &mut sink),
        Err(Error::Malformed(_))
    ));
    // A trailing fragment shorter than a header is ignored.
    let mut d = push(1, 0, 0);
    d.extend([9; 23]);
    k.input(&d, PacketKind::Regular, false, 0, &mut sink)
        .unwrap();
    assert_eq!((k.rcv_nxt(), k.stats().in_segs), (2, 1));
}

#[test]
fn repeat_segments_counted_for_regular_packets_only() {
    let mut k = kcp_go();
    let mut sink = |_: &[u8]| {};
    k.input(&push(0, 0, 0), PacketKind::Regular, false, 0, &mut sink)
        .unwrap();
    k.input(&push(0, 0, 0), PacketKind::Recovered, false, 0, &mut sink)
        .unwrap();
    assert_eq!(k.stats().repeat_segs, 0);
    k.input(&push(0, 0, 0), PacketKind::Regular, false, 0, &mut sink)
        .unwrap();
    // Beyond the receive window: also a repeat, and not acknowledged.
    k.input(&push(1000, 0, 0), PacketKind::Regular, false, 0, &mut sink)
        .unwrap();
    assert_eq!(k.stats().repeat_segs, 2);
    assert_eq!(k.pending_acks(), 3);
}

#[test]
fn packing_respects_mtu() {
    let mut k = kcp_go();
    k.set_mtu(100).unwrap(); // mss 76
    k.set_nodelay(0, 100, 0, 1);
    for _ in 0..5 {
        k.send(&[7; 26]).unwrap(); // 50 bytes on the wire each: two per datagram
    }
    let mut out = Vec::new();
    k.flush(FlushKind::Full, 0, &mut |b: &[u8]| out.push(b.len()));
    assert_eq!(out, vec![100, 100, 50]);
}

#[test]
fn dead_link_after_20_transmissions() {
    let mut k = kcp_go();
    k.set_nodelay(1, 10, 0, 1);
    k.send(b"lost").unwrap();
    let mut now = 0;
    for i in 1..=20 {
        flush(&mut k, FlushKind::Full, now);
        assert_eq!(k.max_xmit(), i);
        assert_eq!(k.is_dead_link(), i >= 20);
        now += 1_000_000;
    }
}

#[test]
fn next_deadline_is_none_only_when_idle() {
    let mut tx = kcp_go();
    tx.set_nodelay(0, 100, 0, 1);
    let mut rx = kcp_go();
    assert_eq!(tx.next_deadline(5), None);
    tx.send(b"hi").unwrap();
    assert_eq!(tx.next_deadline(5), Some(5), "first tick is due now");
    let mut wire = Vec::new();
    tx.update(5, &mut |b: &[u8]| wire.push(b.to_vec()));
    assert_eq!(tx.next_deadline(6), Some(105), "then one interval later");
    let mut back = Vec::new();
    rx.input(&wire[0], PacketKind::Regular, false, 10, &mut |_: &[u8]| {})
        .unwrap();
    assert!(rx.next_deadline(10).is_some(), "an ACK is pending");
    rx.update(10, &mut |b: &[u8]| back.push(b.to_vec()));
    assert_eq!(rx.next_deadline(11), None);
    tx.input(&back[0], PacketKind::Regular, false, 20, &mut |_: &[u8]| {})
        .unwrap();
    assert_eq!(tx.next_deadline(21), None, "all acknowledged");
}

#[test]
fn zero_window_blocks_new_data_until_reopened() {
    let mut k = kcp_go();
    k.set_nodelay(0, 100, 0, 1);
    input(
        &mut k,
        &seg(IKCP_CMD_WINS, 0, 0, 0, 0, &[]),
        PacketKind::Regular,
        0,
    );
    k.send(b"held").unwrap();
    assert!(pushes(&flush(&mut k, FlushKind::Full, 0).0).is_empty());
    let h = input(
        &mut k,
        &seg(IKCP_CMD_WINS, 0, 0, 0, 4, &[]),
        PacketKind::Regular,
        1,
    );
    assert!(h.is_empty(), "a window update alone does not flush");
    assert_eq!(pushes(&flush(&mut k, FlushKind::Full, 2).0), vec![0]);
}

#[test]
fn receive_window_beyond_u16_buffers_far_segments_sparsely() {
    // A peer that respects our (u16) advertised window never sends 65536 or
    // more ahead; one that does is still handled as kcp-go would (buffered
    // and acknowledged), without a dense allocation per slot.
    let mut k = kcp_go();
    k.set_wndsize(32, 200_000);
    let far = 150_000u32;
    let mut d = seg(IKCP_CMD_PUSH, far, 0, 1, 32, b"far");
    d.extend(seg(IKCP_CMD_PUSH, far + 40_000, 0, 1, 32, b"farther"));
    input(&mut k, &d, PacketKind::Regular, 0);
    assert_eq!(k.rcv_buf_len(), 2);
    assert_eq!(k.pending_acks(), 2);
    input(
        &mut k,
        &seg(IKCP_CMD_PUSH, far, 0, 1, 32, b"far"),
        PacketKind::Regular,
        0,
    );
    assert_eq!(k.stats().repeat_segs, 1);
    // Fill the gap below `far`, 50 one-byte segments per datagram.
    let mut sn = 0;
    while sn < far {
        let mut d = Vec::new();
        for _ in 0..50.min(far - sn) {
            d.extend(seg(IKCP_CMD_PUSH, sn, 0, 1, 32, &[sn as u8]));
            sn += 1;
        }
        input(&mut k, &d, PacketKind::Regular, 0);
    }
    assert_eq!(k.rcv_nxt(), far + 1);
    let mut buf = [0u8; 16];
    let mut last = Vec::new();
    let mut n = 0;
    while let Some(len) = k.recv(&mut buf).unwrap() {
        last = buf[..len].to_vec();
        n += 1;
    }
    assert_eq!((n, last.as_slice()), (far as usize + 1, &b"far"[..]));
    assert_eq!(k.rcv_buf_len(), 1, "the farther one still waits");
}

// ---- TimeoutResend::ProbeWhileSilent (this crate's default; docs/wire.md §5.2.5)

/// (cmd, sn) of every segment in `dgs`, read straight from the bytes (KCP
/// header: conv 4, cmd 1, frg 1, wnd 2, ts 4, sn 4, una 4, len 4, then
/// `len` bytes), not with this crate's decoder.
fn raw_segments(dgs: &[Vec<u8>]) -> Vec<(u8, u32)> {
    let mut v = Vec::new();
    for d in dgs {
        let mut at = 0;
        while at + 24 <= d.len() {
            let word = |o: usize| u32::from_le_bytes([d[o], d[o + 1], d[o + 2], d[o + 3]]);
            v.push((d[at + 4], word(at + 12)));
            at += 24 + word(at + 20) as usize;
        }
        assert_eq!(at, d.len(), "a datagram ends on a segment boundary");
    }
    v
}

fn raw_pushes(dgs: &[Vec<u8>]) -> Vec<u32> {
    raw_segments(dgs)
        .into_iter()
        .filter(|&(cmd, _)| cmd == IKCP_CMD_PUSH)
        .map(|(_, sn)| sn)
        .collect()
}

/// fast3-like engine (nodelay 1, interval 10, no fast resend, no cwnd),
/// `n` one-byte segments sent at t=0; the initial RTO is 200 ms.
fn silent_sender(rule: TimeoutResend, n: usize) -> Kcp {
    let mut k = Kcp::new(CONV);
    k.set_timeout_resend(rule);
    k.set_nodelay(1, 10, 0, 1);
    k.set_wndsize(128, 128);
    for _ in 0..n {
        k.send(b"d").unwrap();
    }
    let mut out = Vec::new();
    k.flush(FlushKind::Full, 0, &mut |b: &[u8]| out.push(b.to_vec()));
    assert_eq!(raw_pushes(&out), (0..n as u32).collect::<Vec<_>>());
    k
}

/// Every 10 ms tick from `from` to `to` (inclusive): (time, PUSH sns).
fn ticks(k: &mut Kcp, from: u32, to: u32) -> Vec<(u32, Vec<u32>)> {
    let mut sent = Vec::new();
    for t in (from..=to).step_by(10) {
        let mut out = Vec::new();
        k.flush(FlushKind::Full, t, &mut |b: &[u8]| out.push(b.to_vec()));
        let p = raw_pushes(&out);
        if !p.is_empty() {
            sent.push((t, p));
        }
    }
    sent
}

#[test]
fn a_silent_peer_gets_one_probe_per_rto_not_the_whole_window() {
    // Nothing ever comes back. kcp-go resends all 20 at every timeout; the
    // default resends sn 0 alone, on the same schedule: rto 200, then
    // + rx_rto/2 = 100 per timeout (nodelay), so at 200, 500, 900, 1400.
    let mut k = silent_sender(TimeoutResend::ProbeWhileSilent, 20);
    let sent = ticks(&mut k, 10, 1500);
    let want: Vec<(u32, Vec<u32>)> = [200, 500, 900, 1400].map(|t| (t, vec![0])).to_vec();
    assert_eq!(sent, want);
    assert_eq!(k.stats().lost_segs, 4);

    let mut go = silent_sender(TimeoutResend::EverySegment, 20);
    let sent = ticks(&mut go, 10, 1500);
    let all: Vec<u32> = (0..20).collect();
    let want: Vec<(u32, Vec<u32>)> = [200, 500, 900, 1400].map(|t| (t, all.clone())).to_vec();
    assert_eq!(sent, want, "kcp-go's rule");
}

#[test]
fn the_first_ack_after_silence_sends_what_waited_at_once() {
    let mut k = silent_sender(TimeoutResend::ProbeWhileSilent, 20);
    assert_eq!(ticks(&mut k, 10, 600), [(200, vec![0]), (500, vec![0])]);
    // The peer answers the probe sent at 500: sn 0 acknowledged (una 1),
    // echoing ts 500. Every held segment was sent at 0 <= 500: all of them
    // go out in the flush this input triggers, not a probe interval later.
    let mut out = Vec::new();
    k.input(
        &ack(0, 1, 500),
        PacketKind::Regular,
        false,
        505,
        &mut |b: &[u8]| out.push(b.to_vec()),
    )
    .unwrap();
    assert_eq!(raw_pushes(&out), (1..20).collect::<Vec<_>>());
    // Their timers restart from the current RTO: nothing more before it.
    let rto = k.rto();
    assert!(ticks(&mut k, 510, 505 + rto - 1).is_empty());
}

#[test]
fn an_ack_of_an_older_send_releases_nothing() {
    // sn 0..4 at t=0, sn 5..9 at t=100. At 150 the peer acknowledges sn 0
    // echoing ts 0: evidence up to t=0 only, so sn 5..9 (sent at 100) stay
    // silent when they time out, while sn 1..4 (sent at 0) are resent as
    // kcp-go would.
    let mut k = silent_sender(TimeoutResend::ProbeWhileSilent, 5);
    for _ in 0..5 {
        k.send(b"e").unwrap();
    }
    let mut out = Vec::new();
    k.flush(FlushKind::Full, 100, &mut |b: &[u8]| out.push(b.to_vec()));
    assert_eq!(raw_pushes(&out), (5..10).collect::<Vec<_>>());
    input(&mut k, &ack(0, 1, 0), PacketKind::Regular, 150);
    // rx_rto after the 150 ms sample: 150 + max(10, 4 * 75) = 450.
    assert_eq!(k.rto(), 450);
    let sent = ticks(&mut k, 160, 320);
    // sn 1..4 time out at 200 (rto 200): evidence covers them, all resent.
    // sn 5..9 time out at 300: no evidence, one probe (sn 5).
    assert_eq!(sent, [(200, vec![1, 2, 3, 4]), (300, vec![5])]);
}

#[test]
fn with_acks_flowing_both_rules_send_the_same_datagrams() {
    // A lossy bulk transfer where the peer keeps acknowledging: every
    // timeout has evidence, so the default must match kcp-go byte for byte.
    let run = |rule: TimeoutResend| {
        let (mut tx, mut rx) = (Kcp::new(CONV), Kcp::new(CONV));
        for k in [&mut tx, &mut rx] {
            k.set_timeout_resend(rule);
            k.set_nodelay(1, 10, 0, 1);
            k.set_wndsize(64, 64);
        }
        let mut wire = Vec::new();
        let mut n = 0u64;
        for t in (0..3000u32).step_by(10) {
            if t < 1500 {
                // Three segments per tick.
                tx.send(&[t as u8; 3500]).unwrap();
            }
            let mut out = Vec::new();
            tx.flush(FlushKind::Full, t, &mut |b: &[u8]| out.push(b.to_vec()));
            for d in out {
                n += 1;
                // Two datagrams in a row lost of every 11 (so timeouts
                // fire for several segments in one flush), the rest
                // delivered at once.
                if n % 11 > 1 {
                    let mut back = Vec::new();
                    rx.input(&d, PacketKind::Regular, true, t, &mut |b: &[u8]| {
                        back.push(b.to_vec())
                    })
                    .unwrap();
                    for b in back {
                        tx.input(&b, PacketKind::Regular, false, t, &mut |o: &[u8]| {
                            wire.push(o.to_vec())
                        })
                        .unwrap();
                    }
                }
                wire.push(d);
            }
            let mut buf = vec![0u8; 1 << 16];
            while let Ok(Some(_)) = rx.recv(&mut buf) {}
        }
        assert!(
            tx.stats().lost_segs > 50,
            "the run must have timeouts: {:?}",
            tx.stats()
        );
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(Some(_)) = rx.recv(&mut buf) {}
        assert_eq!(rx.rcv_nxt(), tx.snd_nxt(), "everything arrived");
        wire
    };
    assert_eq!(
        run(TimeoutResend::ProbeWhileSilent),
        run(TimeoutResend::EverySegment)
    );
}

#[test]
fn once_the_probe_is_acknowledged_the_next_loss_is_not_paced() {
    // Probe at 200, acknowledged at 205 (ts 200): the silence is over. A new
    // segment sent at 210 and lost times out after the current RTO (5 ms
    // sample: 5 + max(10, 4 * 2) = 15, raised to the 30 ms floor) and goes
    // out then, not at the old probe's next slot (200 + 300).
    let mut k = silent_sender(TimeoutResend::ProbeWhileSilent, 1);
    assert_eq!(ticks(&mut k, 10, 200), [(200, vec![0])]);
    input(&mut k, &ack(0, 1, 200), PacketKind::Regular, 205);
    assert_eq!(k.rto(), 30);
    k.send(b"f").unwrap();
    assert_eq!(ticks(&mut k, 210, 210), [(210, vec![1])]);
    let sent = ticks(&mut k, 220, 600);
    assert_eq!(sent.first(), Some(&(240, vec![1])));
}
