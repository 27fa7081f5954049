//! Shard buffers grow with the longest shard seen (issue 14): parity and
//! recovery must not depend on when that happens. Shards get longer during
//! the run, so buffers are relaid out while the encoder is inside a group and
//! while the decoder holds shards of several sets.

use kcp_session::fec::{FecDecoder, FecEncoder, ReedSolomon};
use kcp_session::kcp::PacketKind;
use proptest::prelude::*;

/// Parity the encoder must send for one group: Reed-Solomon over the data
/// shards (`[size | KCP bytes]`) zero padded to the longest.
fn expected_parity(rs: &mut ReedSolomon, shards: &[Vec<u8>], p: usize) -> Vec<Vec<u8>> {
    let len = shards.iter().map(Vec::len).max().unwrap();
    let d = shards.len();
    let mut flat = vec![0u8; (d + p) * len];
    for (i, s) in shards.iter().enumerate() {
        flat[i * len..i * len + s.len()].copy_from_slice(s);
    }
    rs.encode(&mut flat, len).unwrap();
    (0..p)
        .map(|j| flat[(d + j) * len..(d + j + 1) * len].to_vec())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parity_and_recovery_survive_buffer_growth(
        d in 1usize..12,
        p in 1usize..5,
        lens in prop::collection::vec(0usize..1490, 1..12),
        seed in any::<u64>(),
    ) {
        // Lengths grow over the run, each group mixing short and long.
        let mut lens = lens;
        lens.sort_unstable();
        let mut enc = FecEncoder::new(d, p).unwrap();
        let mut dec = FecDecoder::new(d, p).unwrap();
        let mut rs = ReedSolomon::new(d, p).unwrap();
        let mut x = seed | 1;
        let mut group: Vec<Vec<u8>> = Vec::new();
        let mut lost: Vec<Vec<u8>> = Vec::new();
        let mut recovered: Vec<Vec<u8>> = Vec::new();
        let mut pkt = vec![0u8; 1500];
        let mut par = vec![0u8; 1500];
        let groups = 12;
        for k in 0..groups * d {
            let g = k / d;
            // Spread the sorted lengths over the run; a few short ones stay.
            // Up to 1492 bytes: a 1500-byte packet, the longest accepted.
            let kcp_len =
                (24 + lens[(k * lens.len() / (groups * d) + k % 2) % lens.len()]).min(1492);
            for b in &mut pkt[8..8 + kcp_len] {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let ready = enc.encode(&mut pkt, kcp_len, k as u32).unwrap();
            group.push(pkt[6..8 + kcp_len].to_vec());
            // From the fourth group on (the layout is confirmed by then),
            // lose one data packet of each group.
            let lose = g >= 3 && k % d == d / 2;
            let mut sink = |b: &[u8], kind| {
                if kind == PacketKind::Recovered {
                    recovered.push(b.to_vec());
                }
            };
            if lose {
                lost.push(pkt[8..8 + kcp_len].to_vec());
            } else {
                dec.decode(&pkt[..8 + kcp_len], &mut sink).unwrap();
            }
            if ready > 0 {
                prop_assert_eq!(ready, p);
                let want = expected_parity(&mut rs, &group, p);
                for (i, w) in want.iter().enumerate() {
                    let n = enc.take_parity(i, &mut par).unwrap();
                    prop_assert_eq!(&par[6..n], &w[..]);
                    dec.decode(&par[..n], &mut sink).unwrap();
                }
            }
            if k % d == d - 1 {
                // The first group has no parity (no previous packet to
                // measure the gap from), but it is complete all the same.
                group.clear();
            }
        }
        // Parity arriving after its set was consumed can rebuild shards
        // again when parity >= data (kcp-go does the same), so recovered
        // packets may repeat; every lost one must be among them.
        prop_assert_eq!(lost.len(), groups - 3);
        for l in &lost {
            prop_assert!(recovered.contains(l), "a lost packet was not rebuilt");
        }
    }
}
