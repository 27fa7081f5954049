//! Property tests: the segment codec round-trips and lays fields out as §1.6
//! says, and `Kcp::input` never panics and keeps its buffers within the
//! window whatever it is fed.

use kcp_session::kcp::{
    FlushKind, Kcp, PacketKind, SegmentHeader, Segments, IKCP_CMD_PUSH, IKCP_CMD_WINS,
    IKCP_OVERHEAD,
};
use proptest::prelude::*;

const CONV: u32 = 0xdead_beef;

fn header() -> impl Strategy<Value = SegmentHeader> {
    (
        any::<u32>(),
        any::<u8>(),
        any::<u8>(),
        any::<u16>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(conv, cmd, frg, wnd, ts, sn, una, len)| SegmentHeader {
            conv,
            cmd,
            frg,
            wnd,
            ts,
            sn,
            una,
            len,
        })
}

/// A well-formed segment for conversation CONV with hostile field values:
/// sn near or far from the window, huge una, zero windows, any ts.
fn hostile_segment() -> impl Strategy<Value = Vec<u8>> {
    (
        81u8..=84,
        any::<u8>(),
        prop_oneof![Just(0u16), Just(1u16), any::<u16>()],
        any::<u32>(),
        prop_oneof![0u32..64, any::<u32>(), (u32::MAX - 64)..=u32::MAX],
        prop_oneof![0u32..64, any::<u32>()],
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(cmd, frg, wnd, ts, sn, una, data)| {
            let data = if cmd == IKCP_CMD_PUSH {
                data
            } else {
                Vec::new()
            };
            let mut v = Vec::new();
            SegmentHeader {
                conv: CONV,
                cmd,
                frg,
                wnd,
                ts,
                sn,
                una,
                len: data.len() as u32,
            }
            .encode_to(&mut v);
            v.extend_from_slice(&data);
            v
        })
}

fn datagram() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Raw bytes, sometimes starting with the right conv.
        (
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..400)
        )
            .prop_map(|(conv, mut b)| {
                if conv && b.len() >= 4 {
                    b[..4].copy_from_slice(&CONV.to_le_bytes());
                }
                b
            }),
        // One to six hostile but well-formed segments, maybe cut short.
        (
            proptest::collection::vec(hostile_segment(), 1..6),
            any::<u16>()
        )
            .prop_map(|(segs, cut)| {
                let mut d: Vec<u8> = segs.concat();
                if cut % 5 == 0 {
                    let n = usize::from(cut) % (d.len() + 1);
                    d.truncate(n);
                }
                d
            }),
    ]
}

fn check_bounds(k: &Kcp) {
    let rcv_wnd = k.rcv_wnd() as usize;
    assert!(
        k.rcv_buf_len() <= rcv_wnd,
        "rcv_buf {} > {rcv_wnd}",
        k.rcv_buf_len()
    );
    // An incomplete message may grow the queue past rcv_wnd, up to its
    // fragment count (at most 256), so a long message cannot wedge us.
    assert!(
        k.rcv_queue_len() <= rcv_wnd.max(256),
        "rcv_queue {}",
        k.rcv_queue_len()
    );
    let ack_cap = (2 * rcv_wnd).max(2 * k.mtu() / IKCP_OVERHEAD).max(1024);
    assert!(k.pending_acks() <= ack_cap, "acks {}", k.pending_acks());
    assert!(k.snd_buf_len() <= k.snd_wnd() as usize);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn codec_round_trip(h in header(), data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let b = h.to_bytes();
        // Independent layout check: conv, cmd, frg, wnd, ts, sn, una, len, little-endian.
        let mut want = Vec::new();
        want.extend(h.conv.to_le_bytes());
        want.push(h.cmd);
        want.push(h.frg);
        want.extend(h.wnd.to_le_bytes());
        want.extend(h.ts.to_le_bytes());
        want.extend(h.sn.to_le_bytes());
        want.extend(h.una.to_le_bytes());
        want.extend(h.len.to_le_bytes());
        prop_assert_eq!(&b[..], &want[..]);
        prop_assert_eq!(SegmentHeader::decode(&b).unwrap(), h);
        // With a matching length, Segments yields it with its data.
        let h2 = SegmentHeader { len: data.len() as u32, ..h };
        let mut d = h2.to_bytes().to_vec();
        d.extend_from_slice(&data);
        let got: Vec<_> = Segments::new(&d).collect();
        prop_assert_eq!(got.len(), 1);
        let (gh, gd) = got[0].as_ref().unwrap();
        prop_assert_eq!(*gh, h2);
        prop_assert_eq!(*gd, &data[..]);
    }

    #[test]
    fn input_never_panics_and_stays_bounded(
        dgs in proptest::collection::vec((datagram(), any::<bool>(), any::<bool>(), 0u32..3000), 1..40),
        wnd in prop_oneof![Just(1u32), Just(32u32), Just(300u32)],
        start in any::<u32>(),
        stream in any::<bool>(),
        resend in 0i32..4,
    ) {
        let mut k = Kcp::new(CONV);
        k.set_wndsize(wnd, wnd);
        k.set_nodelay(1, 10, resend, 0);
        k.set_stream_mode(stream);
        // Something in flight so ACKs and una have targets.
        for i in 0..10u8 {
            k.send(&[i; 700]).unwrap();
        }
        let mut now = start;
        let mut out_bytes = 0usize;
        let mut sink = |d: &[u8]| {
            assert!(d.len() <= 1400, "datagram of {} bytes", d.len());
            out_bytes += d.len();
        };
        k.flush(FlushKind::Full, now, &mut sink);
        let mut buf = vec![0u8; 1 << 19];
        for (d, regular, and, dt) in &dgs {
            now = now.wrapping_add(*dt);
            let kind = if *regular { PacketKind::Regular } else { PacketKind::Recovered };
            let _ = k.input(d, kind, *and, now, &mut sink);
            check_bounds(&k);
            if dt % 3 == 0 {
                k.update(now, &mut sink);
                check_bounds(&k);
            }
            if dt % 7 == 0 {
                while let Ok(Some(_)) = k.recv(&mut buf) {}
            }
            let _ = k.next_deadline(now);
        }
    }

    #[test]
    fn far_ahead_pushes_are_not_stored(sn_off in 32u32..u32::MAX / 2, len in 0usize..1400) {
        let mut k = Kcp::new(CONV);
        let mut d = Vec::new();
        SegmentHeader { conv: CONV, cmd: IKCP_CMD_PUSH, frg: 0, wnd: 0, ts: 0, sn: sn_off, una: 0, len: len as u32 }
            .encode_to(&mut d);
        d.resize(IKCP_OVERHEAD + len, 0xaa);
        k.input(&d, PacketKind::Regular, false, 0, &mut |_: &[u8]| {}).unwrap();
        prop_assert_eq!(k.rcv_buf_len(), 0);
        prop_assert_eq!(k.pending_acks(), 0);
        prop_assert_eq!(k.stats().repeat_segs, 1);
        prop_assert_eq!(k.rmt_wnd(), 0);
        // A zero window from the peer: the engine keeps probing, never idles.
        let mut w = Vec::new();
        SegmentHeader { conv: CONV, cmd: IKCP_CMD_WINS, ..Default::default() }.encode_to(&mut w);
        k.input(&w, PacketKind::Regular, false, 0, &mut |_: &[u8]| {}).unwrap();
        prop_assert!(k.next_deadline(0).is_some());
    }
}
