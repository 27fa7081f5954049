//! Shard counts are validated with checked arithmetic everywhere a layout
//! enters (config builder, encoder, decoder, Reed-Solomon, the codec's lazy
//! decoder): an absurd `(data, parity)` is a typed error, never a panic or
//! an overflowing allocation (issue 12 item 4).

#![cfg(feature = "testing")]

use kcp_session::codec::Receiver;
use kcp_session::fec::{FecDecoder, FecEncoder, ReedSolomon};
use kcp_session::kcp::Kcp;
use kcp_session::stats::Counters;
use kcp_session::{Config, Error};
use proptest::prelude::*;

fn is_invalid_config<T: std::fmt::Debug>(r: Result<T, Error>) -> bool {
    matches!(r, Err(Error::InvalidConfig(_)))
}

/// A 10+3 data packet at seqid 0 and a parity packet at seqid 10, enough to
/// make the codec create its decoder.
fn fec_packets() -> Vec<Vec<u8>> {
    let mut data = vec![0u8; 8 + 24];
    data[4] = 0xF1;
    data[6] = 26;
    let mut parity = vec![0u8; 6 + 26];
    parity[0] = 10;
    parity[4] = 0xF2;
    vec![data, parity]
}

#[test]
fn overflowing_sums_are_rejected() {
    for (d, p) in [
        (usize::MAX, 2),
        (2, usize::MAX),
        (usize::MAX, usize::MAX),
        (usize::MAX - 1, 2),
        (1 << 63, 1 << 63),
    ] {
        assert!(
            is_invalid_config(Config::builder().fec(d, p).build()),
            "config {d}+{p}"
        );
        assert!(is_invalid_config(FecDecoder::new(d, p)), "decoder {d}+{p}");
        assert!(is_invalid_config(FecEncoder::new(d, p)), "encoder {d}+{p}");
        assert!(is_invalid_config(ReedSolomon::new(d, p)), "rs {d}+{p}");
    }
}

#[test]
fn codec_with_an_absurd_layout_drops_and_counts() {
    let mut rx = Receiver::new(usize::MAX, 2);
    let mut kcp = Kcp::new(0);
    let mut snmp = Counters::default();
    for pkt in fec_packets() {
        let mut out = |_: &[u8]| {};
        rx.input(&pkt, &mut kcp, false, 0, &mut out, &mut snmp, &mut |_| {});
    }
    assert!(rx.decoder().is_none());
    assert_eq!(snmp.snapshot().in_errs, 2);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Nothing panics for any pair; exactly the pairs with both >= 1 and a
    /// total of at most 256 are accepted, identically by every constructor.
    #[test]
    fn any_pair_is_accepted_or_rejected_without_panic(
        d in prop_oneof![0usize..300, any::<usize>(), Just(usize::MAX)],
        p in prop_oneof![0usize..300, any::<usize>(), Just(usize::MAX)],
    ) {
        let valid = d >= 1 && p >= 1 && d.checked_add(p).is_some_and(|s| s <= 256);
        prop_assert_eq!(FecDecoder::new(d, p).is_ok(), valid);
        prop_assert_eq!(FecEncoder::new(d, p).is_ok(), valid);
        prop_assert_eq!(ReedSolomon::new(d, p).is_ok(), valid);
        // The builder also accepts FEC off (either count zero), as long as
        // the pair still sums to at most 256.
        let off = (d == 0 || p == 0) && d.checked_add(p).is_some_and(|s| s <= 256);
        let built = Config::builder().fec(d, p).build();
        prop_assert_eq!(built.is_ok(), valid || off);
        if !(valid || off) {
            prop_assert!(is_invalid_config(built));
        }
        let mut rx = Receiver::new(d, p);
        let mut kcp = Kcp::new(0);
        let mut snmp = Counters::default();
        for pkt in fec_packets() {
            let mut out = |_: &[u8]| {};
            rx.input(&pkt, &mut kcp, false, 0, &mut out, &mut snmp, &mut |_| {});
        }
    }
}
