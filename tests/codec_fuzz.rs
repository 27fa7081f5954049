//! The whole receive pipeline (crypt open -> demux -> FEC decode -> KCP input)
//! fed hostile datagrams: pure garbage, and real datagrams that were
//! truncated, bit-flipped or duplicated. Nothing may panic, every datagram
//! must be accounted for in the SNMP counters (§3), and per-session state must
//! stay within its bounds whatever arrives.

#![cfg(feature = "testing")]

use kcp_session::codec::{open_counted, Receiver};
use kcp_session::crypt::{CipherKind, Crypt};
use kcp_session::fec::{FecEncoder, FEC_HEADER_SIZE_PLUS2};
use kcp_session::kcp::{FlushKind, Kcp};
use kcp_session::stats::Counters;
use proptest::prelude::*;

const CONV: u32 = 0x1234_5678;
const RCV_WND: u32 = 64;

/// The cipher/FEC set-ups under test: header layouts of §1.7.
fn setup(i: usize) -> (Crypt, usize, usize) {
    let key = [7u8; 32];
    match i % 6 {
        0 => (Crypt::new(CipherKind::Null, &[]).unwrap(), 0, 0),
        1 => (Crypt::new(CipherKind::None, &[]).unwrap(), 10, 3),
        2 => (Crypt::new(CipherKind::Aes128, &key[..16]).unwrap(), 0, 0),
        3 => (Crypt::new(CipherKind::Salsa20, &key).unwrap(), 3, 2),
        4 => (Crypt::new(CipherKind::AesGcm, &key[..16]).unwrap(), 2, 1),
        _ => (Crypt::new(CipherKind::Xor, &key).unwrap(), 1, 1),
    }
}

/// Real wire datagrams for `payload`, as a sender with this set-up emits them.
fn real_datagrams(crypt: &mut Crypt, ds: usize, ps: usize, payload: &[u8]) -> Vec<Vec<u8>> {
    let mut kcp = Kcp::new(CONV);
    kcp.set_wndsize(128, 128);
    // No congestion window, so one flush emits the whole (window-sized) payload.
    kcp.set_nodelay(1, 10, 2, 1);
    for chunk in payload.chunks(3000) {
        kcp.send(chunk).unwrap();
    }
    let mut segs: Vec<Vec<u8>> = Vec::new();
    kcp.flush(FlushKind::Full, 0, &mut |d: &[u8]| segs.push(d.to_vec()));

    let ch = crypt.header_len();
    let mut fec = (ds > 0).then(|| FecEncoder::new(ds, ps).unwrap());
    let mut out = Vec::new();
    for (t, seg) in segs.iter().enumerate() {
        let mut buf = vec![0u8; 1600];
        let plain_len = match fec.as_mut() {
            Some(enc) => {
                let start = ch + FEC_HEADER_SIZE_PLUS2;
                buf[start..start + seg.len()].copy_from_slice(seg);
                let ready = enc
                    .encode(&mut buf[ch..], seg.len(), t as u32 * 10)
                    .unwrap();
                let n = crypt
                    .seal(&mut buf, FEC_HEADER_SIZE_PLUS2 + seg.len())
                    .unwrap();
                out.push(buf[..n].to_vec());
                for i in 0..ready {
                    let mut pb = vec![0u8; 1600];
                    let len = enc.take_parity(i, &mut pb[ch..]).unwrap();
                    let n = crypt.seal(&mut pb, len).unwrap();
                    out.push(pb[..n].to_vec());
                }
                continue;
            }
            None => {
                buf[ch..ch + seg.len()].copy_from_slice(seg);
                seg.len()
            }
        };
        let n = crypt.seal(&mut buf, plain_len).unwrap();
        out.push(buf[..n].to_vec());
    }
    out
}

#[derive(Debug, Clone)]
enum Mutation {
    Keep,
    Truncate(usize),
    FlipBit(usize),
    Duplicate,
    Garbage(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => Just(Mutation::Keep),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        2 => any::<usize>().prop_map(Mutation::FlipBit),
        1 => Just(Mutation::Duplicate),
        1 => proptest::collection::vec(any::<u8>(), 0..1600).prop_map(Mutation::Garbage),
    ]
}

/// Feeds `dgrams` to a receiving session and checks the accounting and bounds.
fn feed(crypt: &Crypt, ds: usize, ps: usize, dgrams: Vec<Vec<u8>>) {
    let mut kcp = Kcp::new(CONV);
    kcp.set_wndsize(32, RCV_WND);
    let mut rx = Receiver::new(ds, ps);
    let mut c = Counters::default();
    let mut oob = 0usize;
    for (t, mut d) in dgrams.into_iter().enumerate() {
        let before = c.snapshot();
        let opened = open_counted(crypt, &mut d, &mut c);
        match opened {
            Some(r) => {
                let plain = &d[r];
                rx.input(
                    plain,
                    &mut kcp,
                    false,
                    t as u32,
                    &mut |_: &[u8]| {},
                    &mut c,
                    &mut |_: &[u8]| oob += 1,
                );
                // Every opened datagram is either counted as input or as a KCP error (§3).
                let c = c.snapshot();
                assert!(
                    c.in_pkts == before.in_pkts + 1 || c.kcp_in_errors > before.kcp_in_errors,
                    "opened datagram not accounted for"
                );
            }
            None => {
                // A refused datagram changes no session state and at most the
                // checksum counter.
                let c = c.snapshot();
                assert!(c.in_pkts == before.in_pkts && c.in_csum_errors >= before.in_csum_errors);
            }
        }
        // Bounds: KCP keeps at most a window of out-of-order segments and
        // queued messages; the FEC decoder at most 4 shard sets of <=1500 B.
        assert!(kcp.rcv_buf_len() <= RCV_WND as usize, "rcv_buf over window");
        assert!(
            kcp.rcv_queue_len() <= RCV_WND as usize,
            "rcv_queue over window"
        );
        if let Some(dec) = rx.decoder() {
            let m = dec.memory();
            assert!(m.live_sets <= 4, "FEC live sets {}", m.live_sets);
            assert!(
                m.buffer_bytes <= 512 * 1024,
                "FEC buffers {}",
                m.buffer_bytes
            );
        }
        let mut buf = vec![0u8; 1 << 20];
        while let Ok(Some(_)) = kcp.recv(&mut buf) {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn garbage_never_panics(setup_i in 0usize..6,
                            dgrams in proptest::collection::vec(
                                proptest::collection::vec(any::<u8>(), 0..1600), 1..40)) {
        let (crypt, ds, ps) = setup(setup_i);
        feed(&crypt, ds, ps, dgrams);
    }

    #[test]
    fn mutated_real_datagrams_never_panic(setup_i in 0usize..6,
                                          payload_len in 1usize..40_000,
                                          muts in proptest::collection::vec(mutation(), 1..64)) {
        let (mut crypt, ds, ps) = setup(setup_i);
        let payload: Vec<u8> = (0..payload_len).map(|i| (i * 31 % 251) as u8).collect();
        let real = real_datagrams(&mut crypt, ds, ps, &payload);
        let mut wire = Vec::new();
        for (i, d) in real.iter().enumerate() {
            match &muts[i % muts.len()] {
                Mutation::Keep => wire.push(d.clone()),
                Mutation::Truncate(n) => wire.push(d[..n % (d.len() + 1)].to_vec()),
                Mutation::FlipBit(b) => {
                    let mut d = d.clone();
                    if !d.is_empty() {
                        let bit = b % (d.len() * 8);
                        d[bit / 8] ^= 1 << (bit % 8);
                    }
                    wire.push(d);
                }
                Mutation::Duplicate => {
                    wire.push(d.clone());
                    wire.push(d.clone());
                }
                Mutation::Garbage(g) => wire.push(g.clone()),
            }
        }
        feed(&crypt, ds, ps, wire);
    }
}

/// The pipeline must also deliver: unmodified real datagrams reassemble the
/// exact payload (otherwise the fuzz tests above could pass by dropping all).
#[test]
fn clean_datagrams_deliver_the_payload() {
    for i in 0..6 {
        let (mut crypt, ds, ps) = setup(i);
        let payload: Vec<u8> = (0..30_000).map(|i| (i * 7 % 253) as u8).collect();
        let wire = real_datagrams(&mut crypt, ds, ps, &payload);
        let mut kcp = Kcp::new(CONV);
        kcp.set_wndsize(128, 128);
        let mut rx = Receiver::new(ds, ps);
        let mut c = Counters::default();
        let mut got = Vec::new();
        for mut d in wire {
            let r = open_counted(&crypt, &mut d, &mut c).expect("clean datagram opens");
            rx.input(
                &d[r],
                &mut kcp,
                false,
                0,
                &mut |_: &[u8]| {},
                &mut c,
                &mut |_: &[u8]| {},
            );
            let mut buf = vec![0u8; 1 << 16];
            while let Ok(Some(n)) = kcp.recv(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
        }
        assert_eq!(got.len(), payload.len(), "set-up {i}: delivered length");
        assert!(got == payload, "set-up {i}: delivered bytes differ");
        let c = c.snapshot();
        assert_eq!(
            c.in_csum_errors + c.kcp_in_errors + c.in_errs,
            0,
            "set-up {i}"
        );
    }
}
