//! Salsa20/20 keystream for kcp-go's Salsa20 mode (§2.4): 32-byte key,
//! 8-byte nonce, 64-bit block counter from 0.
//!
//! On x86-64 several blocks are computed at once: every state word lives in
//! one vector whose lanes belong to consecutive blocks. SSE2 (part of the
//! x86-64 baseline) does four blocks; AVX2 eight and AVX-512 sixteen, both
//! detected at run time. Elsewhere the `salsa20` crate is used. Every path's
//! output is checked against that crate.

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
        if super::avx512::available() {
            // SAFETY: `available` checked the features it needs just above.
            unsafe { super::avx512::xor_keystream(&init, data) };
        } else if std::is_x86_feature_detected!("avx2") {
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

/// Sixteen blocks at once with AVX-512 (run-time detected). Against AVX2 it
/// has twice the lanes and a one-instruction rotate (`vprold`), and masked
/// loads and stores cover a short last window in place, without the staging
/// copy. A last window of at most eight blocks runs in 256-bit vectors, so a
/// 1392-byte datagram costs 24 blocks of work rather than 32.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use core::arch::x86_64::*;

    const WIDE: usize = 16 * 64;
    const NARROW: usize = 8 * 64;

    /// Whether the CPU has what [`xor_keystream`] needs.
    pub(super) fn available() -> bool {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
    }

    /// The Salsa20 double rounds, ten times, over `$x` with the given add,
    /// xor and rotate intrinsics (one macro for both vector widths).
    macro_rules! rounds {
        ($x:ident, $add:ident, $xor:ident, $rol:ident) => {
            macro_rules! quarter {
                ($a:literal, $b:literal, $c:literal, $d:literal) => {
                    $x[$b] = $xor($x[$b], $rol::<7>($add($x[$a], $x[$d])));
                    $x[$c] = $xor($x[$c], $rol::<9>($add($x[$b], $x[$a])));
                    $x[$d] = $xor($x[$d], $rol::<13>($add($x[$c], $x[$b])));
                    $x[$a] = $xor($x[$a], $rol::<18>($add($x[$d], $x[$c])));
                };
            }
            for _ in 0..10 {
                quarter!(0, 4, 8, 12);
                quarter!(5, 9, 13, 1);
                quarter!(10, 14, 2, 6);
                quarter!(15, 3, 7, 11);
                quarter!(0, 1, 2, 3);
                quarter!(5, 6, 7, 4);
                quarter!(10, 11, 8, 9);
                quarter!(15, 12, 13, 14);
            }
        };
    }

    /// The keystream of consecutive blocks (one per vector lane, counter
    /// words from `$ctrs`), transposed inside each 128-bit lane: `rows[g][j]`
    /// holds, in 128-bit lane L, words 4g..4g+4 of block 4L + j. One macro
    /// for both vector widths (the intrinsics are passed in); expand it only
    /// inside an `unsafe` block of a function compiled with their features.
    macro_rules! keystream_rows {
        ($init:expr, $ctrs:expr, $zero:ident, $set1:ident, $load:ident,
         [$add:ident, $xor:ident, $rol:ident],
         [$lo32:ident, $hi32:ident, $lo64:ident, $hi64:ident]) => {{
            let mut s = [$zero(); 16];
            for (v, w) in s.iter_mut().zip($init.iter()) {
                *v = $set1(*w as i32);
            }
            let (lo, hi) = $ctrs;
            s[8] = $load(lo.as_ptr().cast());
            s[9] = $load(hi.as_ptr().cast());
            let mut x = s;
            rounds!(x, $add, $xor, $rol);
            for (v, o) in x.iter_mut().zip(s.iter()) {
                *v = $add(*v, *o);
            }
            let mut rows = [[$zero(); 4]; 4];
            for (g, r) in rows.iter_mut().enumerate() {
                let (a, b, c, d) = (x[4 * g], x[4 * g + 1], x[4 * g + 2], x[4 * g + 3]);
                let (ab_lo, cd_lo) = ($lo32(a, b), $lo32(c, d));
                let (ab_hi, cd_hi) = ($hi32(a, b), $hi32(c, d));
                *r = [
                    $lo64(ab_lo, cd_lo),
                    $hi64(ab_lo, cd_lo),
                    $lo64(ab_hi, cd_hi),
                    $hi64(ab_hi, cd_hi),
                ];
            }
            rows
        }};
    }

    /// Low and high counter words of `N` consecutive blocks from `ctr`.
    fn counters<const N: usize>(ctr: u64) -> ([u32; N], [u32; N]) {
        let c: [u64; N] = core::array::from_fn(|j| ctr.wrapping_add(j as u64));
        (
            core::array::from_fn(|j| c[j] as u32),
            core::array::from_fn(|j| (c[j] >> 32) as u32),
        )
    }

    /// Mask of the bytes of a `width`-byte piece at `at` that lie below `len`
    /// (`at < len`).
    #[inline(always)]
    fn piece_mask(len: usize, at: usize, width: usize) -> u64 {
        let n = len - at;
        if n >= width {
            u64::MAX >> (64 - width)
        } else {
            (1u64 << n) - 1
        }
    }

    /// XORs keystream blocks `ctr .. ctr + 16` into `data` (at most 1024
    /// bytes; blocks past its end are computed and dropped).
    ///
    /// # Safety
    ///
    /// The CPU must have avx512f and avx512bw; call only from a function
    /// compiled with them (it is inlined there).
    #[inline(always)]
    #[allow(unused_unsafe)]
    unsafe fn wide(init: &[u32; 16], ctr: u64, data: &mut [u8]) {
        debug_assert!(data.len() <= WIDE);
        let len = data.len();
        let p = data.as_mut_ptr();
        // SAFETY: the caller guarantees the features. Every load and store
        // is masked to the bytes of `data`: a piece at offset `at < len`
        // touches only `at .. min(at + 64, len)`, and masked-off bytes are
        // not accessed.
        unsafe {
            // rows[g][j] lane L holds words 4g..4g+4 of block 4L + j.
            let rows = keystream_rows!(
                init,
                counters::<16>(ctr),
                _mm512_setzero_si512,
                _mm512_set1_epi32,
                _mm512_loadu_si512,
                [_mm512_add_epi32, _mm512_xor_si512, _mm512_rol_epi32],
                [
                    _mm512_unpacklo_epi32,
                    _mm512_unpackhi_epi32,
                    _mm512_unpacklo_epi64,
                    _mm512_unpackhi_epi64
                ]
            );
            // Then a 4x4 transpose of 128-bit lanes across the four groups
            // gives whole 64-byte blocks.
            let [r0, r1, r2, r3] = rows;
            let quads = r0.into_iter().zip(r1).zip(r2).zip(r3);
            for (j, (((a, b), c), d)) in quads.enumerate() {
                let t0 = _mm512_shuffle_i32x4::<0x44>(a, b);
                let t1 = _mm512_shuffle_i32x4::<0xEE>(a, b);
                let t2 = _mm512_shuffle_i32x4::<0x44>(c, d);
                let t3 = _mm512_shuffle_i32x4::<0xEE>(c, d);
                let blocks = [
                    _mm512_shuffle_i32x4::<0x88>(t0, t2),
                    _mm512_shuffle_i32x4::<0xDD>(t0, t2),
                    _mm512_shuffle_i32x4::<0x88>(t1, t3),
                    _mm512_shuffle_i32x4::<0xDD>(t1, t3),
                ];
                for (l, ks) in blocks.iter().enumerate() {
                    let at = 64 * (4 * l + j);
                    if at < len {
                        let m = piece_mask(len, at, 64);
                        let q = p.add(at).cast::<i8>();
                        let v = _mm512_maskz_loadu_epi8(m, q);
                        _mm512_mask_storeu_epi8(q, m, _mm512_xor_si512(v, *ks));
                    }
                }
            }
        }
    }

    /// XORs keystream blocks `ctr .. ctr + 8` into `data` (at most 512
    /// bytes) in 256-bit vectors.
    ///
    /// # Safety
    ///
    /// The CPU must have avx512f, avx512bw and avx512vl; call only from a
    /// function compiled with them (it is inlined there).
    #[inline(always)]
    #[allow(unused_unsafe)]
    unsafe fn narrow(init: &[u32; 16], ctr: u64, data: &mut [u8]) {
        debug_assert!(data.len() <= NARROW);
        let len = data.len();
        let p = data.as_mut_ptr();
        // SAFETY: as in `wide`, with 32-byte pieces.
        unsafe {
            // rows[g][j] half H holds words 4g..4g+4 of block 4H + j.
            let rows = keystream_rows!(
                init,
                counters::<8>(ctr),
                _mm256_setzero_si256,
                _mm256_set1_epi32,
                _mm256_loadu_si256,
                [_mm256_add_epi32, _mm256_xor_si256, _mm256_rol_epi32],
                [
                    _mm256_unpacklo_epi32,
                    _mm256_unpackhi_epi32,
                    _mm256_unpacklo_epi64,
                    _mm256_unpackhi_epi64
                ]
            );
            let [r0, r1, r2, r3] = rows;
            let quads = r0.into_iter().zip(r1).zip(r2).zip(r3);
            for (j, (((a, b), c), d)) in quads.enumerate() {
                // Block j: the low halves of groups 0..4; block 4 + j: the
                // high halves. Each in two 32-byte pieces.
                let pieces = [
                    (64 * j, _mm256_permute2x128_si256::<0x20>(a, b)),
                    (64 * j + 32, _mm256_permute2x128_si256::<0x20>(c, d)),
                    (64 * (4 + j), _mm256_permute2x128_si256::<0x31>(a, b)),
                    (64 * (4 + j) + 32, _mm256_permute2x128_si256::<0x31>(c, d)),
                ];
                for (at, ks) in pieces {
                    if at < len {
                        let m = piece_mask(len, at, 32) as u32;
                        let q = p.add(at).cast::<i8>();
                        let v = _mm256_maskz_loadu_epi8(m, q);
                        _mm256_mask_storeu_epi8(q, m, _mm256_xor_si256(v, ks));
                    }
                }
            }
        }
    }

    /// XORs the keystream from state `init` into `data`: sixteen blocks at a
    /// time, and a last window of at most eight blocks in `narrow`.
    ///
    /// # Safety
    ///
    /// [`available`] must be true.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn xor_keystream(init: &[u32; 16], data: &mut [u8]) {
        let mut ctr = 0u64;
        let mut rest = data;
        while rest.len() > NARROW {
            let n = rest.len().min(WIDE);
            let (head, tail) = rest.split_at_mut(n);
            // SAFETY: this function has the features `wide` needs.
            unsafe { wide(init, ctr, head) };
            ctr = ctr.wrapping_add(16);
            rest = tail;
        }
        if !rest.is_empty() {
            // SAFETY: as above, for `narrow`.
            unsafe { narrow(init, ctr, rest) };
        }
    }

    /// One window (`wide` above 512 bytes, else `narrow`) from block `ctr`.
    ///
    /// # Safety
    ///
    /// [`available`] must be true; `data` at most 1024 bytes.
    #[cfg(test)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn xor_blocks_at(init: &[u32; 16], ctr: u64, data: &mut [u8]) {
        assert!(data.len() <= WIDE);
        if data.len() > NARROW {
            // SAFETY: this function has the features `wide` needs.
            unsafe { wide(init, ctr, data) };
        } else {
            // SAFETY: as above, for `narrow`.
            unsafe { narrow(init, ctr, data) };
        }
    }

    /// The sixteen-block path for tests, even for short data.
    ///
    /// # Safety
    ///
    /// [`available`] must be true.
    #[cfg(test)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn xor_keystream_wide_only(init: &[u32; 16], data: &mut [u8]) {
        let mut ctr = 0u64;
        for chunk in data.chunks_mut(WIDE) {
            // SAFETY: this function has the features `wide` needs.
            unsafe { wide(init, ctr, chunk) };
            ctr = ctr.wrapping_add(16);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_salsa20_crate() {
        let key: [u8; 32] = core::array::from_fn(|i| (i * 11 + 3) as u8);
        let nonce: [u8; 8] = core::array::from_fn(|i| (i * 5 + 200) as u8);
        let data: Vec<u8> = (0..3100u32).map(|i| (i * 7) as u8).collect();
        // Miri interprets every intrinsic: a few window shapes there.
        let lens: Vec<usize> = if cfg!(miri) {
            vec![0, 1, 63, 64, 65, 255, 256, 257, 700]
        } else {
            (0..600)
                .chain([
                    1023, 1024, 1025, 1392, 1492, 1536, 1537, 1700, 2047, 2048, 2049, 3100,
                ])
                .collect()
        };
        for len in lens {
            let mut ours = data[..len].to_vec();
            let mut theirs = ours.clone();
            xor_keystream(&key, &nonce, &mut ours);
            portable(&key, &nonce, &mut theirs);
            assert_eq!(ours, theirs, "len {len}");
            // Every x86-64 path too, whichever is picked at run time.
            #[cfg(target_arch = "x86_64")]
            {
                let init = sse2::initial_state(&key, &nonce);
                let mut sse = data[..len].to_vec();
                sse2::xor_keystream_sse2(&init, &mut sse);
                assert_eq!(sse, theirs, "sse2 len {len}");
                if std::is_x86_feature_detected!("avx2") {
                    let mut v = data[..len].to_vec();
                    // SAFETY: AVX2 presence checked just above.
                    unsafe { avx2::xor_keystream(&init, &mut v) };
                    assert_eq!(v, theirs, "avx2 len {len}");
                }
                if avx512::available() {
                    let mut v = data[..len].to_vec();
                    // SAFETY: `available` checked just above.
                    unsafe { avx512::xor_keystream(&init, &mut v) };
                    assert_eq!(v, theirs, "avx512 len {len}");
                    let mut w = data[..len].to_vec();
                    // SAFETY: as above.
                    unsafe { avx512::xor_keystream_wide_only(&init, &mut w) };
                    assert_eq!(w, theirs, "avx512 wide len {len}");
                }
            }
        }
    }

    /// Block counters crossing 2^32 carry into the high counter word in
    /// every lane (kcp-go datagrams never get there; the keystream must
    /// still be Salsa20's).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn counter_carry_matches_salsa20_crate() {
        use cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
        if cfg!(miri) || !avx512::available() {
            return;
        }
        let key: [u8; 32] = core::array::from_fn(|i| (i * 13 + 1) as u8);
        let nonce: [u8; 8] = core::array::from_fn(|i| (i * 3 + 7) as u8);
        let init = sse2::initial_state(&key, &nonce);
        let first = (1u64 << 32) - 5;
        for len in [1024usize, 1000, 512, 300] {
            let mut theirs = vec![0u8; len];
            let mut c = salsa20::Salsa20::new((&key).into(), (&nonce).into());
            c.seek(first * 64);
            c.apply_keystream(&mut theirs);
            let mut ours = vec![0u8; len];
            // SAFETY: `available` checked above.
            unsafe { avx512::xor_blocks_at(&init, first, &mut ours) };
            assert_eq!(ours, theirs, "len {len}");
        }
    }
}
