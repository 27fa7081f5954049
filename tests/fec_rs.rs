//! Our Reed-Solomon code against the `reed-solomon-erasure` crate (galois_8),
//! whose matrix construction is the one klauspost/reedsolomon and so kcp-go
//! use (§4.1): same matrix, same parity, same reconstruction — also from
//! inconsistent shards, where the result depends on which shards are used.

use kcp_session::fec::{KernelPath, ReedSolomon};
use kcp_session::Error;
use proptest::prelude::*;
use reed_solomon_erasure::galois_8::ReedSolomon as Crate;

fn flat(shards: &[Vec<u8>]) -> Vec<u8> {
    shards.concat()
}

#[test]
fn matrix_equals_crate() {
    for &(d, p) in &[
        (1, 1),
        (2, 1),
        (3, 2),
        (4, 2),
        (10, 3),
        (20, 10),
        (1, 255),
        (255, 1),
        (100, 100),
        (128, 128),
    ] {
        let ours = ReedSolomon::new(d, p).unwrap();
        let theirs = Crate::new(d, p).unwrap();
        // Data shard i = unit vector e_i, so parity shard r, byte c = M[d + r][c].
        let mut shards: Vec<Vec<u8>> = (0..d)
            .map(|i| (0..d).map(|c| u8::from(i == c)).collect())
            .collect();
        shards.extend((0..p).map(|_| vec![0u8; d]));
        theirs.encode(&mut shards).unwrap();
        for (r, row) in shards[d..].iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                assert_eq!(
                    ours.matrix_coefficient(d + r, c),
                    v,
                    "({d},{p}) row {r} col {c}"
                );
            }
        }
    }
}

#[test]
fn rejects_more_than_256_shards() {
    assert!(matches!(
        ReedSolomon::new(200, 57),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        ReedSolomon::new(0, 3),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        kcp_session::fec::FecEncoder::new(129, 128),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        kcp_session::fec::FecDecoder::new(256, 1),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn big_config_parity_equals_crate() {
    let (d, p, len) = (128, 128, 200);
    let mut shards: Vec<Vec<u8>> = (0..d + p)
        .map(|i| {
            (0..len)
                .map(|b| {
                    if i < d {
                        (i * 131 + b * 7 + 1) as u8
                    } else {
                        0
                    }
                })
                .collect()
        })
        .collect();
    let mut ours = flat(&shards);
    ReedSolomon::new(d, p)
        .unwrap()
        .encode(&mut ours, len)
        .unwrap();
    Crate::new(d, p).unwrap().encode(&mut shards).unwrap();
    assert_eq!(ours, flat(&shards));
}

#[test]
fn kernel_paths_reported() {
    let paths = KernelPath::available();
    assert_eq!(paths.last(), Some(&KernelPath::Scalar));
    assert_eq!(KernelPath::best(), paths[0]);
}

fn config() -> impl Strategy<Value = (usize, usize, usize)> {
    (1usize..=24, 1usize..=12, 1usize..=300)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn parity_equals_crate((d, p, len) in config(), seed in any::<u64>()) {
        let mut rng = seed;
        let mut byte = move || { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; rng as u8 };
        let mut shards: Vec<Vec<u8>> = (0..d + p).map(|i| (0..len).map(|_| if i < d { byte() } else { 0 }).collect()).collect();
        let input = flat(&shards);
        Crate::new(d, p).unwrap().encode(&mut shards).unwrap();
        let mut rs = ReedSolomon::new(d, p).unwrap();
        // Every kernel this CPU can run, including the portable fallback.
        for path in KernelPath::available() {
            let mut ours = input.clone();
            rs.encode_with(path, &mut ours, len).unwrap();
            prop_assert_eq!(&ours, &flat(&shards), "{:?}", path);
        }
    }

    /// Erase up to `p` shards of a consistent codeword: both rebuild the
    /// original data. Then the same from random (inconsistent) shards: the
    /// output depends on the chosen sub-matrix, and must still agree.
    #[test]
    fn reconstruct_equals_crate(
        (d, p, len) in config(),
        seed in any::<u64>(),
        erase_bits in any::<u64>(),
        consistent in any::<bool>(),
    ) {
        let mut rng = seed;
        let mut byte = move || { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; rng as u8 };
        let total = d + p;
        let mut shards: Vec<Vec<u8>> = (0..total).map(|_| (0..len).map(|_| byte()).collect()).collect();
        if consistent {
            Crate::new(d, p).unwrap().encode(&mut shards).unwrap();
        }
        let original = shards.clone();
        // Pick up to p erasures from the bit pattern.
        let mut present = vec![true; total];
        let mut erased = 0;
        for (i, ok) in present.iter_mut().enumerate() {
            if erased < p && (erase_bits >> (i % 64)) & 1 == 1 {
                *ok = false;
                erased += 1;
            }
        }
        let mut theirs: Vec<Option<Vec<u8>>> =
            shards.iter().zip(&present).map(|(s, &ok)| ok.then(|| s.clone())).collect();
        Crate::new(d, p).unwrap().reconstruct_data(&mut theirs).unwrap();

        let mut ours = flat(&shards);
        for (i, &ok) in present.iter().enumerate() {
            if !ok {
                ours[i * len..(i + 1) * len].fill(0x5A);
            }
        }
        let mut rs = ReedSolomon::new(d, p).unwrap();
        let rebuilt = rs.reconstruct_data(&mut ours, len, &present).unwrap();
        prop_assert_eq!(rebuilt, present[..d].iter().filter(|&&ok| !ok).count());
        for i in 0..d {
            prop_assert_eq!(&ours[i * len..(i + 1) * len], theirs[i].as_deref().unwrap(), "data shard {}", i);
            if consistent {
                prop_assert_eq!(&ours[i * len..(i + 1) * len], &original[i][..]);
            }
        }
    }
}
