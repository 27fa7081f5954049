//! The framing layer's CRC-32C (now the `crc32c` crate) gives the same values
//! as the table implementation it replaced, over many random inputs of every
//! length and alignment, and the catalogue check value.

#[allow(dead_code)]
#[path = "support/crc32c_slice8.rs"]
mod oracle;

use kcp_session::comp::{crc32c, masked_crc32c};
use rand::{rngs::SmallRng, Rng, SeedableRng};

#[test]
fn check_value() {
    assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    assert_eq!(oracle::crc32c_slice8(b"123456789"), 0xe306_9283);
    assert_eq!(oracle::crc32c_bytewise(b"123456789"), 0xe306_9283);
}

#[test]
fn crate_matches_the_old_table_code_on_random_inputs() {
    let mut rng = SmallRng::seed_from_u64(0x5eed_c3c3);
    let mut buf = vec![0u8; 70_000];
    rng.fill(&mut buf[..]);
    // Every short length at every start offset modulo 16 (the crate's
    // hardware path works in 8-byte words plus a head and tail).
    for start in 0..16 {
        for len in 0..300 {
            let d = &buf[start..start + len];
            assert_eq!(
                crc32c(d),
                oracle::crc32c_slice8(d),
                "start {start} len {len}"
            );
        }
    }
    // Random slices up to a whole framing chunk (64 KiB) and a bit more.
    for _ in 0..2000 {
        let start = rng.gen_range(0..4096);
        let len = rng.gen_range(0..buf.len() - start);
        let d = &buf[start..start + len];
        let want = oracle::crc32c_slice8(d);
        assert_eq!(crc32c(d), want, "start {start} len {len}");
        let masked = want.rotate_right(15).wrapping_add(0xa282_ead8);
        assert_eq!(masked_crc32c(d), masked);
    }
    // The oracle itself against the bytewise definition.
    for len in [0, 1, 7, 8, 9, 63, 64, 65, 1400, 4099] {
        let d = &buf[3..3 + len];
        assert_eq!(oracle::crc32c_slice8(d), oracle::crc32c_bytewise(d));
    }
}
