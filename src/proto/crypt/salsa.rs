//! Salsa20/20 keystream for kcp-go's Salsa20 mode (§2.4): 32-byte key,
//! 8-byte nonce, 64-bit block counter from 0.
//!
//! On x86-64 four blocks are computed at once with SSE2 (part of the x86-64
//! baseline, so no run-time detection): every state word lives in one vector
//! whose four lanes belong to four consecutive blocks. Elsewhere the
//! `salsa20` crate is used. The SSE2 output is checked against that crate.

/// XORs the Salsa20 keystream for (`key`, `nonce`), counter 0, into `data`.
pub(crate) fn xor_keystream(key: &[u8; 32], nonce: &[u8; 8], data: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        sse2::xor_keystream(key, nonce, data);
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        portable(key, nonce, data);
    }
}

/// [`xor_keystream`] with the four-block SSE2 code even where AVX2 is present.
#[cfg(target_arch = "x86_64")]
pub(crate) fn xor_keystream_sse2(key: &[u8; 32], nonce: &[u8; 8], data: &mut [u8]) {
    sse2::xor_keystream_sse2(&sse2::initial_state(key, nonce), data);
}

/// The `salsa20` crate's keystream (the portable backend).
pub(crate) fn xor_keystream_portable(key: &[u8; 32], nonce: &[u8; 8], data: &mut [u8]) {
    portable(key, nonce, data);
}

fn portable(key: &[u8; 32], nonce: &[u8; 8], data: &mut [u8]) {
    use cipher::{KeyIvInit, StreamCipher};
    salsa20::Salsa20::new(key.into(), nonce.into()).apply_keystream(data);
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use core::arch::x86_64::*;

    /// "expand 32-byte k" as four little-endian words.
    const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

    const BATCH: usize = 4 * 64;

    fn le_words<const N: usize>(bytes: &[u8]) -> [u32; N] {
        let mut w = [0u32; N];
        for (word, chunk) in w.iter_mut().zip(bytes.chunks_exact(4)) {
            let mut b = [0u8; 4];
            b.copy_from_slice(chunk);
            *word = u32::from_le_bytes(b);
        }
        w
    }

    macro_rules! rotl {
        ($x:expr, $n:literal) => {
            _mm_or_si128(_mm_slli_epi32::<$n>($x), _mm_srli_epi32::<{ 32 - $n }>($x))
        };
    }

    macro_rules! quarter {
        ($x:ident, $a:literal, $b:literal, $c:literal, $d:literal) => {
            $x[$b] = _mm_xor_si128($x[$b], rotl!(_mm_add_epi32($x[$a], $x[$d]), 7));
            $x[$c] = _mm_xor_si128($x[$c], rotl!(_mm_add_epi32($x[$b], $x[$a]), 9));
            $x[$d] = _mm_xor_si128($x[$d], rotl!(_mm_add_epi32($x[$c], $x[$b]), 13));
            $x[$a] = _mm_xor_si128($x[$a], rotl!(_mm_add_epi32($x[$d], $x[$c]), 18));
        };
    }

    /// XORs four keystream blocks for counters `ctr .. ctr + 4` into `out`
    /// in stream order (block `ctr` first).
    #[inline(always)]
    #[allow(unused_unsafe)]
    fn blocks4(init: &[u32; 16], ctr: u64, out: &mut [u8; BATCH]) {
        // SAFETY: SSE2 is part of the x86-64 baseline; loads and stores go to
        // 16-byte windows inside `out` (offsets 64*j + 16*g + 16 <= 256).
        unsafe {
            let mut s = [_mm_setzero_si128(); 16];
            for (v, w) in s.iter_mut().zip(init.iter()) {
                *v = _mm_set1_epi32(*w as i32);
            }
            let c: [u64; 4] = core::array::from_fn(|j| ctr.wrapping_add(j as u64));
            s[8] = _mm_set_epi32(c[3] as i32, c[2] as i32, c[1] as i32, c[0] as i32);
            s[9] = _mm_set_epi32(
                (c[3] >> 32) as i32,
                (c[2] >> 32) as i32,
                (c[1] >> 32) as i32,
                (c[0] >> 32) as i32,
            );
            let mut x = s;
            for _ in 0..10 {
                // Column round.
                quarter!(x, 0, 4, 8, 12);
                quarter!(x, 5, 9, 13, 1);
                quarter!(x, 10, 14, 2, 6);
                quarter!(x, 15, 3, 7, 11);
                // Row round.
                quarter!(x, 0, 1, 2, 3);
                quarter!(x, 5, 6, 7, 4);
                quarter!(x, 10, 11, 8, 9);
                quarter!(x, 15, 12, 13, 14);
            }
            for (v, o) in x.iter_mut().zip(s.iter()) {
                *v = _mm_add_epi32(*v, *o);
            }
            // Transpose each group of four words so one vector holds 16
            // consecutive output bytes of one block.
            let p = out.as_mut_ptr();
            for g in 0..4 {
                let (a, b, c, d) = (x[4 * g], x[4 * g + 1], x[4 * g + 2], x[4 * g + 3]);
                let ab_lo = _mm_unpacklo_epi32(a, b);
                let cd_lo = _mm_unpacklo_epi32(c, d);
                let ab_hi = _mm_unpackhi_epi32(a, b);
                let cd_hi = _mm_unpackhi_epi32(c, d);
                let rows = [
                    _mm_unpacklo_epi64(ab_lo, cd_lo),
                    _mm_unpackhi_epi64(ab_lo, cd_lo),
                    _mm_unpacklo_epi64(ab_hi, cd_hi),
                    _mm_unpackhi_epi64(ab_hi, cd_hi),
                ];
                for (j, r) in rows.iter().enumerate() {
                    let q = p.add(64 * j + 16 * g).cast::<__m128i>();
                    _mm_storeu_si128(q, _mm_xor_si128(_mm_loadu_si128(q), *r));
                }
            }
        }
    }

    pub(super) fn initial_state(key: &[u8; 32], nonce: &[u8; 8]) -> [u32; 16] {
        let k: [u32; 8] = le_words(key);
        let n: [u32; 2] = le_words(nonce);
        [
            SIGMA[0], k[0], k[1], k[2], k[3], SIGMA[1], n[0], n[1], 0, 0, SIGMA[2], k[4], k[5],
            k[6], k[7], SIGMA[3],
        ]
    }

    /// Runs `f` over `data` in `N`-byte windows; a short last window is
    /// staged through a zeroed local buffer.
    #[inline(always)]
    pub(super) fn windows<const N: usize>(data: &mut [u8], mut f: impl FnMut(u64, &mut [u8; N])) {
        let blocks_per = (N / 64) as u64;
        let mut ctr = 0u64;
        let mut chunks = data.chunks_exact_mut(N);
        for chunk in &mut chunks {
            if let Ok(w) = <&mut [u8; N]>::try_from(chunk) {
                f(ctr, w);
            }
            ctr = ctr.wrapping_add(blocks_per);
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let mut buf = [0u8; N];
            buf[..tail.len()].copy_from_slice(tail);
            f(ctr, &mut buf);
            let n = tail.len();
            tail.copy_from_slice(&buf[..n]);
        }
    }

    pub(super) fn xor_keystream(key: &[u8; 32], nonce: &[u8; 8], data: &mut [u8]) {
        let init = initial_state(key, nonce);
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 presence checked just above.
            unsafe { super::avx2::xor_keystream(&init, data) };
        } else {
            xor_keystream_sse2(&init, data);
        }
    }

    pub(super) fn xor_keystream_sse2(init: &[u32; 16], data: &mut [u8]) {
        windows::<BATCH>(data, |ctr, w| blocks4(init, ctr, w));
    }
}

/// Eight blocks at once with AVX2 (run-time detected).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use core::arch::x86_64::*;

    const BATCH: usize = 8 * 64;

    macro_rules! rotl {
        ($x:expr, $n:literal) => {
            _mm256_or_si256(
                _mm256_slli_epi32::<$n>($x),
                _mm256_srli_epi32::<{ 32 - $n }>($x),
            )
        };
    }

    macro_rules! quarter {
        ($x:ident, $a:literal, $b:literal, $c:literal, $d:literal) => {
            $x[$b] = _mm256_xor_si256($x[$b], rotl!(_mm256_add_epi32($x[$a], $x[$d]), 7));
            $x[$c] = _mm256_xor_si256($x[$c], rotl!(_mm256_add_epi32($x[$b], $x[$a]), 9));
            $x[$d] = _mm256_xor_si256($x[$d], rotl!(_mm256_add_epi32($x[$c], $x[$b]), 13));
            $x[$a] = _mm256_xor_si256($x[$a], rotl!(_mm256_add_epi32($x[$d], $x[$c]), 18));
        };
    }

    /// XORs eight keystream blocks (counters `ctr .. ctr + 8`) into `out`.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX2; call only from a function compiled with it
    /// (it is inlined there).
    #[inline(always)]
    #[allow(unused_unsafe)]
    unsafe fn blocks8(init: &[u32; 16], ctr: u64, out: &mut [u8; BATCH]) {
        // SAFETY: the caller is an AVX2 function; loads and stores go to
        // 16-byte windows inside `out` (64*(j+4) + 16*g + 16 <= 512).
        unsafe {
            let mut s = [_mm256_setzero_si256(); 16];
            for (v, w) in s.iter_mut().zip(init.iter()) {
                *v = _mm256_set1_epi32(*w as i32);
            }
            let c: [u64; 8] = core::array::from_fn(|j| ctr.wrapping_add(j as u64));
            s[8] = _mm256_set_epi32(
                c[7] as i32,
                c[6] as i32,
                c[5] as i32,
                c[4] as i32,
                c[3] as i32,
                c[2] as i32,
                c[1] as i32,
                c[0] as i32,
            );
            s[9] = _mm256_set_epi32(
                (c[7] >> 32) as i32,
                (c[6] >> 32) as i32,
                (c[5] >> 32) as i32,
                (c[4] >> 32) as i32,
                (c[3] >> 32) as i32,
                (c[2] >> 32) as i32,
                (c[1] >> 32) as i32,
                (c[0] >> 32) as i32,
            );
            let mut x = s;
            for _ in 0..10 {
                quarter!(x, 0, 4, 8, 12);
                quarter!(x, 5, 9, 13, 1);
                quarter!(x, 10, 14, 2, 6);
                quarter!(x, 15, 3, 7, 11);
                quarter!(x, 0, 1, 2, 3);
                quarter!(x, 5, 6, 7, 4);
                quarter!(x, 10, 11, 8, 9);
                quarter!(x, 15, 12, 13, 14);
            }
            for (v, o) in x.iter_mut().zip(s.iter()) {
                *v = _mm256_add_epi32(*v, *o);
            }
            // 4x4 transposes inside each 128-bit half: the low half then
            // holds blocks 0..4, the high half blocks 4..8.
            let p = out.as_mut_ptr();
            for g in 0..4 {
                let (a, b, c, d) = (x[4 * g], x[4 * g + 1], x[4 * g + 2], x[4 * g + 3]);
                let ab_lo = _mm256_unpacklo_epi32(a, b);
                let cd_lo = _mm256_unpacklo_epi32(c, d);
                let ab_hi = _mm256_unpackhi_epi32(a, b);
                let cd_hi = _mm256_unpackhi_epi32(c, d);
                let rows = [
                    _mm256_unpacklo_epi64(ab_lo, cd_lo),
                    _mm256_unpackhi_epi64(ab_lo, cd_lo),
                    _mm256_unpacklo_epi64(ab_hi, cd_hi),
                    _mm256_unpackhi_epi64(ab_hi, cd_hi),
                ];
                for (j, r) in rows.iter().enumerate() {
                    for (half, v) in [
                        _mm256_castsi256_si128(*r),
                        _mm256_extracti128_si256::<1>(*r),
                    ]
                    .into_iter()
                    .enumerate()
                    {
                        let q = p.add(64 * (j + 4 * half) + 16 * g).cast::<__m128i>();
                        _mm_storeu_si128(q, _mm_xor_si128(_mm_loadu_si128(q), v));
                    }
                }
            }
        }
    }

    /// XORs the keystream from state `init` into `data`, eight blocks at a time.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn xor_keystream(init: &[u32; 16], data: &mut [u8]) {
        super::sse2::windows::<BATCH>(data, |ctr, w| {
            // SAFETY: the caller guarantees AVX2 (this closure is inlined
            // into this AVX2 function).
            unsafe { blocks8(init, ctr, w) }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_salsa20_crate() {
        let key: [u8; 32] = core::array::from_fn(|i| (i * 11 + 3) as u8);
        let nonce: [u8; 8] = core::array::from_fn(|i| (i * 5 + 200) as u8);
        let data: Vec<u8> = (0..1700u32).map(|i| (i * 7) as u8).collect();
        // Miri interprets every intrinsic: a few window shapes there.
        let lens: Vec<usize> = if cfg!(miri) {
            vec![0, 1, 63, 64, 65, 255, 256, 257, 700]
        } else {
            (0..600)
                .chain([1023, 1024, 1025, 1392, 1492, 1700])
                .collect()
        };
        for len in lens {
            let mut ours = data[..len].to_vec();
            let mut theirs = ours.clone();
            xor_keystream(&key, &nonce, &mut ours);
            portable(&key, &nonce, &mut theirs);
            assert_eq!(ours, theirs, "len {len}");
            // The SSE2 path too, even where AVX2 is picked at run time.
            #[cfg(target_arch = "x86_64")]
            {
                let mut sse = data[..len].to_vec();
                sse2::xor_keystream_sse2(&sse2::initial_state(&key, &nonce), &mut sse);
                assert_eq!(sse, theirs, "sse2 len {len}");
            }
        }
    }
}
