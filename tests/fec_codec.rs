//! FEC encoder/decoder behaviour (§4.2–§4.6): framing, parity timing, seqid
//! wrap, recovery under loss/reordering/duplication, auto-tune, and hostile
//! input (no panics, bounded memory).

use kcp_session::fec::{
    self, parse_oob, FecDecoder, FecEncoder, FecStats, MAX_SHARD_LEN, TYPE_DATA, TYPE_OOB,
    TYPE_PARITY,
};
use kcp_session::kcp::PacketKind;
use kcp_session::Error;
use proptest::prelude::*;

/// One encoded packet as it would go on the wire (FEC part only).
#[derive(Debug, Clone)]
struct Wire {
    bytes: Vec<u8>,
    group: usize,
    pos: usize,
}

fn seqid(p: &[u8]) -> u32 {
    u32::from_le_bytes(p[0..4].try_into().unwrap())
}

fn kind(p: &[u8]) -> u16 {
    u16::from_le_bytes(p[4..6].try_into().unwrap())
}

fn payload(n: usize, tag: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 + tag * 7 + 1) as u8).collect()
}

/// Encodes `sizes` KCP datagrams (all at the same instant) and returns the
/// wire packets plus, per group, whether parity went out.
fn encode_all(
    enc: &mut FecEncoder,
    sizes: &[usize],
    now: &mut impl FnMut(usize) -> u32,
) -> (Vec<Wire>, Vec<Vec<u8>>) {
    let s = enc.data_shards() + enc.parity_shards();
    let mut wire = Vec::new();
    let mut originals = Vec::new();
    let mut parity = vec![0u8; 1600];
    for (k, &n) in sizes.iter().enumerate() {
        let data = payload(n, k);
        let mut pkt = vec![0u8; 8 + n];
        pkt[8..].copy_from_slice(&data);
        let ready = enc.encode(&mut pkt, n, now(k)).unwrap();
        let id = seqid(&pkt) as usize;
        wire.push(Wire {
            bytes: pkt,
            group: id / s,
            pos: id % s,
        });
        originals.push(data);
        for i in 0..ready {
            let len = enc.take_parity(i, &mut parity).unwrap();
            let id = seqid(&parity) as usize;
            wire.push(Wire {
                bytes: parity[..len].to_vec(),
                group: id / s,
                pos: id % s,
            });
        }
    }
    (wire, originals)
}

#[test]
fn data_packet_layout_matches_spec_example() {
    // §1.8: seqid 27 (10+3, group 2 position 1), one PUSH segment.
    let mut enc = FecEncoder::new(10, 3).unwrap();
    enc.set_next_seqid(27);
    let kcp = hex::decode("7856341251008000e803000005000000030000000500000068656c6c6f").unwrap();
    let mut pkt = vec![0u8; 8 + kcp.len()];
    pkt[8..].copy_from_slice(&kcp);
    assert_eq!(enc.encode(&mut pkt, kcp.len(), 0).unwrap(), 0);
    assert_eq!(
        hex::encode(&pkt),
        format!("1b000000f1001f00{}", hex::encode(&kcp))
    );
    assert_eq!(enc.next_seqid(), 28);
}

#[test]
fn parity_follows_every_group_with_seqids_and_lengths() {
    let mut enc = FecEncoder::new(3, 2).unwrap();
    let sizes = [24, 100, 50, 30, 30, 30, 7];
    let (wire, _) = encode_all(&mut enc, &sizes, &mut |_| 1000);
    let ids: Vec<u32> = wire.iter().map(|w| seqid(&w.bytes)).collect();
    assert_eq!(ids, vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    let kinds: Vec<u16> = wire.iter().map(|w| kind(&w.bytes)).collect();
    let (d, p) = (TYPE_DATA, TYPE_PARITY);
    assert_eq!(kinds, vec![d, d, d, p, p, d, d, d, p, p, d]);
    // Parity packets are as long as the longest data packet of their group.
    assert_eq!(wire[3].bytes.len(), 8 + 100);
    assert_eq!(wire[8].bytes.len(), 8 + 30);
    // Size fields count themselves.
    assert_eq!(&wire[0].bytes[6..8], &26u16.to_le_bytes());
    // Parity is over [size | KCP], zero padded: check against the RS code.
    let mut rs = fec::ReedSolomon::new(3, 2).unwrap();
    let len = 102;
    let mut shards = vec![0u8; 5 * len];
    for i in 0..3 {
        let sh = &wire[i].bytes[6..];
        shards[i * len..i * len + sh.len()].copy_from_slice(sh);
    }
    rs.encode(&mut shards, len).unwrap();
    assert_eq!(&wire[3].bytes[6..], &shards[3 * len..4 * len]);
    assert_eq!(&wire[4].bytes[6..], &shards[4 * len..5 * len]);
}

#[test]
fn parity_skipped_after_a_pause_but_seqids_advance() {
    let mut enc = FecEncoder::new(3, 2).unwrap();
    // Group 0: last gap 499 ms -> parity. Group 1: pause of 500 ms before its
    // last packet -> none. Group 2: pause before its first packet only -> parity.
    let times = [0, 10, 509, 600, 610, 1110, 5000, 5001, 5002];
    let (wire, _) = encode_all(&mut enc, &[40; 9], &mut |k| times[k]);
    let ids: Vec<(u32, u16)> = wire
        .iter()
        .map(|w| (seqid(&w.bytes), kind(&w.bytes)))
        .collect();
    let (d, p) = (TYPE_DATA, TYPE_PARITY);
    assert_eq!(
        ids,
        vec![
            (0, d),
            (1, d),
            (2, d),
            (3, p),
            (4, p),
            (5, d),
            (6, d),
            (7, d),
            (10, d),
            (11, d),
            (12, d),
            (13, p),
            (14, p)
        ]
    );
}

#[test]
fn single_data_shard_first_group_has_no_parity() {
    // kcp-go's reference time starts at 0 (epoch clock): the first gap is huge.
    let mut enc = FecEncoder::new(1, 2).unwrap();
    let mut pkt = [0u8; 8 + 30];
    assert_eq!(enc.encode(&mut pkt, 30, 0).unwrap(), 0);
    assert_eq!(enc.next_seqid(), 3);
    assert_eq!(enc.encode(&mut pkt, 30, 0).unwrap(), 2);
    assert_eq!(enc.parity_len(), 6 + 32);
    let mut out = [0u8; 64];
    assert!(matches!(
        enc.take_parity(2, &mut out),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        enc.take_parity(0, &mut out[..20]),
        Err(Error::BufferTooSmall { .. })
    ));
    // With one data shard the parity is a copy of [size | KCP].
    let n = enc.take_parity(1, &mut out).unwrap();
    assert_eq!(&out[..6], &[5, 0, 0, 0, 0xf2, 0]);
    assert_eq!(&out[6..n], &pkt[6..]);
}

#[test]
fn seqids_wrap_at_paws() {
    let mut enc = FecEncoder::new(10, 3).unwrap();
    let paws = fec::paws(13);
    enc.set_next_seqid(paws - 13);
    let (wire, _) = encode_all(&mut enc, &[50; 20], &mut |_| 0);
    let ids: Vec<u32> = wire.iter().map(|w| seqid(&w.bytes)).collect();
    let want: Vec<u32> = (paws - 13..paws).chain(0..13).collect();
    assert_eq!(ids, want);
    assert_eq!(paws - 1, 4_294_967_286);
}

#[test]
fn encoder_rejects_oversized_and_short_buffers() {
    let mut enc = FecEncoder::new(2, 1).unwrap();
    let mut pkt = vec![0u8; 1600];
    assert!(matches!(
        enc.encode(&mut pkt[..10], 5, 0),
        Err(Error::BufferTooSmall { .. })
    ));
    assert!(matches!(
        enc.encode(&mut pkt, MAX_SHARD_LEN - 1, 0),
        Err(Error::BufferTooSmall { .. })
    ));
    // A failed call does not consume a seqid.
    assert_eq!(enc.next_seqid(), 0);
    assert!(enc.encode(&mut pkt, MAX_SHARD_LEN - 2, 0).is_ok());
}

#[test]
fn oob_framing() {
    let enc = FecEncoder::new(10, 3).unwrap();
    let mut buf = [0u8; 16];
    buf[12..].copy_from_slice(b"ping");
    let n = enc.encode_oob(&mut buf, 7, 4).unwrap();
    assert_eq!(hex::encode(&buf[..n]), "fffffffff3000a000700000070696e67");
    assert_eq!(fec::packet_type(&buf), Some(TYPE_OOB));
    let p = parse_oob(&buf).unwrap();
    assert_eq!((p.conv, p.payload), (7, &b"ping"[..]));
    // Empty payload is legal.
    let n = fec::encode_oob(&mut buf, 7, 0).unwrap();
    assert_eq!(parse_oob(&buf[..n]).unwrap().payload, b"");
}

/// What a decoder handed on, in order.
#[derive(Debug, Default)]
struct Sink {
    regular: Vec<Vec<u8>>,
    recovered: Vec<Vec<u8>>,
}

fn feed(dec: &mut FecDecoder, sink: &mut Sink, pkt: &[u8]) -> Result<(), Error> {
    dec.decode(pkt, &mut |b: &[u8], k| match k {
        PacketKind::Regular => sink.regular.push(b.to_vec()),
        PacketKind::Recovered => sink.recovered.push(b.to_vec()),
    })
}

#[test]
fn recovers_lost_data_and_counts() {
    let mut enc = FecEncoder::new(4, 2).unwrap();
    let (wire, orig) = encode_all(&mut enc, &[24, 90, 300, 33, 24, 24, 24, 24], &mut |_| 0);
    let mut dec = FecDecoder::new(4, 2).unwrap();
    let mut sink = Sink::default();
    for w in &wire {
        // Group 0 loses data 1 and 2; group 1 loses nothing.
        if w.group == 0 && (w.pos == 1 || w.pos == 2) {
            continue;
        }
        feed(&mut dec, &mut sink, &w.bytes).unwrap();
    }
    assert_eq!(sink.recovered, vec![orig[1].clone(), orig[2].clone()]);
    assert_eq!(sink.regular.len(), 6);
    assert_eq!(
        *dec.stats(),
        FecStats {
            fec_recovered: 2,
            fec_parity_shards: 4,
            fec_shard_set: 2,
            fec_shard_min: 1,
            fec_full_shard_set: 1,
            ..FecStats::default()
        }
    );
}

#[test]
fn malformed_packets_are_typed_errors() {
    let mut dec = FecDecoder::new(10, 3).unwrap();
    let mut sink = Sink::default();
    assert!(matches!(
        feed(&mut dec, &mut sink, &[0xf1; 7]),
        Err(Error::Truncated(_))
    ));
    let mut p = [0u8; 8];
    p[4] = 0x51;
    assert!(matches!(
        feed(&mut dec, &mut sink, &p),
        Err(Error::Malformed(_))
    ));
    let mut big = vec![0u8; 1501];
    big[4] = 0xf1;
    assert!(matches!(
        feed(&mut dec, &mut sink, &big),
        Err(Error::Malformed(_))
    ));
    assert_eq!(dec.stats().malformed, 3);
    assert!(sink.regular.is_empty());
    // A minimal data packet is fine: empty KCP payload handed on.
    p[4] = 0xf1;
    feed(&mut dec, &mut sink, &p).unwrap();
    assert_eq!(sink.regular, vec![Vec::<u8>::new()]);
}

#[test]
fn seqid_at_or_above_paws_is_ignored_but_data_delivered() {
    let mut dec = FecDecoder::new(1, 1).unwrap();
    let mut sink = Sink::default();
    let mut p = vec![0u8; 40];
    p[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
    p[4] = 0xf1;
    feed(&mut dec, &mut sink, &p).unwrap();
    assert_eq!(sink.regular.len(), 1);
    assert_eq!(dec.memory().live_sets, 0);
}

#[test]
fn lazy_decoder_tunes_to_peer_10_3() {
    // A side without FEC creates FecDecoder::new(1, 1) on the first FEC packet.
    let mut enc = FecEncoder::new(10, 3).unwrap();
    let (wire, orig) = encode_all(&mut enc, &[60; 100], &mut |_| 0);
    let mut dec = FecDecoder::new(1, 1).unwrap();
    let mut sink = Sink::default();
    for w in &wire {
        // Lose data shard 4 of every group from group 3 on.
        if w.group >= 3 && w.pos == 4 {
            continue;
        }
        feed(&mut dec, &mut sink, &w.bytes).unwrap();
    }
    assert_eq!((dec.data_shards(), dec.parity_shards()), (10, 3));
    let want: Vec<Vec<u8>> = (3..10).map(|g| orig[g * 10 + 4].clone()).collect();
    assert_eq!(sink.recovered, want);
}

/// Parity that arrives after its group was consumed (all data present)
/// can rebuild nothing new: it is counted, a repeat of it is ignored, and
/// none of it is stored (kcp-go keeps it until the set falls behind).
#[test]
fn parity_after_a_consumed_group_is_counted_not_stored() {
    let mut enc = FecEncoder::new(4, 2).unwrap();
    let (wire, orig) = encode_all(&mut enc, &[300; 12], &mut |_| 0);
    let mut dec = FecDecoder::new(4, 2).unwrap();
    let mut sink = Sink::default();
    for w in wire.iter().filter(|w| w.group == 0) {
        feed(&mut dec, &mut sink, &w.bytes).unwrap();
    }
    // A late repeat of group 0's last parity.
    let again = wire.iter().rfind(|w| w.group == 0).unwrap();
    feed(&mut dec, &mut sink, &again.bytes).unwrap();
    assert_eq!(sink.regular, orig[..4].to_vec());
    assert!(sink.recovered.is_empty());
    let st = dec.stats();
    assert_eq!((st.fec_full_shard_set, st.fec_parity_shards), (1, 2));
    let mem = dec.memory();
    assert_eq!((mem.live_sets, mem.held_shards), (1, 0));

    // Later groups still recover a loss (once the layout is confirmed).
    for w in wire
        .iter()
        .filter(|w| w.group == 1 || (w.group == 2 && w.pos != 2))
    {
        feed(&mut dec, &mut sink, &w.bytes).unwrap();
    }
    assert_eq!(sink.recovered, vec![orig[10].clone()]);
    assert_eq!(dec.memory().held_shards, 0);
}

#[test]
fn mismatched_decoder_retunes_to_smaller_peer() {
    let mut enc = FecEncoder::new(3, 1).unwrap();
    let (wire, orig) = encode_all(&mut enc, &[40; 60], &mut |_| 0);
    let mut dec = FecDecoder::new(10, 3).unwrap();
    let mut sink = Sink::default();
    for w in &wire {
        if w.group >= 5 && w.pos == 0 {
            continue;
        }
        feed(&mut dec, &mut sink, &w.bytes).unwrap();
    }
    assert_eq!((dec.data_shards(), dec.parity_shards()), (3, 1));
    let want: Vec<Vec<u8>> = (5..20).map(|g| orig[g * 3].clone()).collect();
    assert_eq!(sink.recovered, want);
}

/// Strategy: (data, parity, sizes, per-group loss picks, shuffle seed, dup picks).
fn scenario() -> impl Strategy<Value = (usize, usize, Vec<usize>, Vec<u64>, u64, Vec<usize>)> {
    (1usize..=12, 1usize..=4).prop_flat_map(|(d, p)| {
        let n = d * 4 + 1;
        (
            Just(d),
            Just(p),
            proptest::collection::vec(0usize..=1300, 1..=n),
            proptest::collection::vec(any::<u64>(), 5),
            any::<u64>(),
            proptest::collection::vec(0usize..200, 0..8),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Every group that got parity survives up to `parity` losses, under
    /// reordering (within a window of one group) and duplication: every data
    /// packet reaches KCP exactly as sent, as Regular or Recovered. The first
    /// two groups with parity arrive whole: the decoder rebuilds only once it
    /// has seen the layout confirmed around a group boundary (§4.5), which a
    /// stream losing packets in every group may never show.
    #[test]
    fn recovers_any_loss_up_to_parity((d, p, sizes, loss, shuffle, dups) in scenario()) {
        let s = d + p;
        let mut enc = FecEncoder::new(d, p).unwrap();
        let (wire, orig) = encode_all(&mut enc, &sizes, &mut |_| 0);
        // Groups with parity on the wire.
        let protected = |g: usize| wire.iter().any(|w| w.group == g && w.pos >= d);
        let clean_until = (0..=wire.len()).filter(|&g| protected(g)).nth(1).unwrap_or(usize::MAX);
        let mut kept: Vec<Wire> = wire
            .iter()
            .filter(|w| {
                if !protected(w.group) || w.group <= clean_until {
                    return true;
                }
                // Lose up to p positions, picked from the group's loss word.
                let word = loss[w.group % loss.len()];
                let lost: Vec<usize> = (0..p).map(|k| ((word >> (k * 8)) as usize) % s).collect();
                !lost.contains(&w.pos)
            })
            .cloned()
            .collect();
        // Reorder: shuffle within consecutive windows of one group's length,
        // so nothing moves further than one group.
        let mut r = shuffle | 1;
        for window in kept.chunks_mut(s) {
            for i in (1..window.len()).rev() {
                r ^= r << 13; r ^= r >> 7; r ^= r << 17;
                window.swap(i, (r as usize) % (i + 1));
            }
        }

        for &k in &dups {
            if !kept.is_empty() {
                // A duplicate arrives within one group's length of the original.
                let from = k % kept.len();
                let w = kept[from].clone();
                kept.insert((from + k % s).min(kept.len()), w);
            }
        }
        let mut dec = FecDecoder::new(d, p).unwrap();
        let mut sink = Sink::default();
        for w in &kept {
            feed(&mut dec, &mut sink, &w.bytes).unwrap();
        }
        for (k, o) in orig.iter().enumerate() {
            if std::env::var("FEC_DEBUG").is_ok() && !(sink.regular.contains(o) || sink.recovered.contains(o)) {
                eprintln!("FAIL {:?}", kept.iter().map(|w| (w.group, w.pos, w.bytes.len())).collect::<Vec<_>>());
            }
            prop_assert!(
                sink.regular.contains(o) || sink.recovered.contains(o),
                "packet {} ({} bytes) never delivered", k, o.len()
            );
        }
        for r in sink.regular.iter().chain(&sink.recovered) {
            prop_assert!(orig.contains(r), "delivered bytes that were never sent");
        }
        let mem = dec.memory();
        prop_assert!(mem.live_sets <= 4);
    }

    /// Random bytes never panic and never leave more than 4 sets.
    #[test]
    fn garbage_never_panics(
        d in 1usize..=20,
        p in 1usize..=10,
        pkts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..200),
        force_type in any::<bool>(),
    ) {
        let mut dec = FecDecoder::new(d, p).unwrap();
        let mut sink = Sink::default();
        for mut pkt in pkts {
            if force_type && pkt.len() >= 6 {
                pkt[4] = if pkt[5] & 1 == 0 { 0xf1 } else { 0xf2 };
                pkt[5] = 0;
                // Keep seqids close so sets and auto-tune get exercised.
                pkt[2] = 0;
                pkt[3] = 0;
            }
            let _ = feed(&mut dec, &mut sink, &pkt);
            prop_assert!(dec.memory().live_sets <= 4);
        }
        let _ = parse_oob(&[0u8; 3]);
    }
}

/// Worst-case storage for one configuration: five sets of `d` shards (the
/// arena may be up to twice that after doubling) plus the recovery buffer.
fn storage_bound(d: usize, p: usize) -> usize {
    2 * 5 * d * 1536 + p * 1536
}

#[test]
fn parity_flood_for_unknown_groups_stays_bounded() {
    let (d, p) = (10, 3);
    let mut dec = FecDecoder::new(d, p).unwrap();
    let mut sink = Sink::default();
    let mut x = 0x1234_5678_9abc_def0u64;
    let mut pkt = vec![0u8; 1500];
    for i in 0..200_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Parity positions of random groups, including near the wrap, with
        // absurd lengths: never enough shards to consume a set.
        let group = match i % 3 {
            0 => (x >> 32) as u32 % (fec::paws(13) / 13),
            1 => fec::paws(13) / 13 - 1 - (x as u32 % 4),
            _ => (x as u32) % 8,
        };
        let seq = group * 13 + 10 + (x as u32 % 3);
        pkt[0..4].copy_from_slice(&seq.to_le_bytes());
        pkt[4..6].copy_from_slice(&TYPE_PARITY.to_le_bytes());
        let len = 8 + (x as usize >> 20) % 1493;
        feed(&mut dec, &mut sink, &pkt[..len]).unwrap();
        let mem = dec.memory();
        assert!(mem.live_sets <= 4, "{mem:?}");
        assert!(mem.held_shards <= 4 * (d - 1), "{mem:?}");
        assert!(mem.buffer_bytes <= storage_bound(d, p), "{mem:?}");
    }
    assert!(sink.recovered.is_empty());
    assert_eq!((dec.data_shards(), dec.parity_shards()), (d, p));
}

#[test]
fn antipodal_seqids_do_not_pile_up_sets() {
    // kcp-go keeps sets that look 2^31 "ahead"; we must not (see discard_old).
    let mut dec = FecDecoder::new(1, 1).unwrap();
    let mut sink = Sink::default();
    let mut pkt = [0u8; 40];
    let mut newest = 0u32;
    for _ in 0..10_000 {
        for seq in [newest, newest.wrapping_add(1 << 31)] {
            // Parity positions (odd seqids) of groups 2^31 apart.
            let seq = (seq | 1) % fec::paws(2);
            pkt[0..4].copy_from_slice(&seq.to_le_bytes());
            pkt[4..6].copy_from_slice(&TYPE_PARITY.to_le_bytes());
            feed(&mut dec, &mut sink, &pkt).unwrap();
            assert!(dec.memory().live_sets <= 4);
        }
        newest = newest.wrapping_add(2);
    }
}

#[test]
fn hostile_tuning_flood_stays_bounded() {
    // A peer that alternates layouts to force re-tunes, with large groups.
    let mut dec = FecDecoder::new(1, 1).unwrap();
    let mut sink = Sink::default();
    let mut pkt = vec![0u8; 1500];
    let mut seq = 0u32;
    for round in 0..40 {
        let (d, p) = if round % 2 == 0 { (200, 50) } else { (3, 2) };
        for _ in 0..2 * (d + p) + 2 {
            let pos = seq as usize % (d + p);
            pkt[0..4].copy_from_slice(&seq.to_le_bytes());
            let t = if pos < d { TYPE_DATA } else { TYPE_PARITY };
            pkt[4..6].copy_from_slice(&t.to_le_bytes());
            pkt[6..8].copy_from_slice(&1400u16.to_le_bytes());
            feed(&mut dec, &mut sink, &pkt[..1400]).unwrap();
            seq += 1;
            let mem = dec.memory();
            assert!(mem.live_sets <= 4);
            assert!(mem.buffer_bytes <= storage_bound(255, 255), "{mem:?}");
        }
    }
}
