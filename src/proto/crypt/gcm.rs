//! AES-GCM (12-byte nonce, 16-byte tag, no associated data — §1.4, §2.6)
//! with AES-NI and PCLMULQDQ on x86-64.
//!
//! Counter-mode keystream is made eight blocks at a time and GHASH folds
//! eight blocks per reduction (aggregated reduction: the carry-less products
//! with H^8..H^1 are summed unreduced, then shifted and reduced once, in the
//! bit-reflected domain of Gueron & Kounavis, "Intel Carry-Less
//! Multiplication Instruction and its Usage for Computing the GCM Mode",
//! algorithm 5). Used only when the CPU has AES-NI, PCLMULQDQ and SSSE3;
//! otherwise the `aes-gcm` crate is used. Checked against that crate for all
//! key sizes and many lengths here, and against kcp-go's vectors in
//! `tests/crypt_vectors.rs`.

use core::arch::x86_64::*;

use super::aesni::{encrypt1, encrypt_lanes, AesNi};

/// An AES-GCM key: the AES schedule plus H^1..H^8 (byte-reflected).
#[derive(Clone, Copy)]
pub(crate) struct GcmNi {
    aes: AesNi,
    h: Powers,
    encoding: Encoding,
}

/// Which instruction encoding a [`GcmNi`] runs, fixed when it is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// VEX-encoded (three-operand AVX forms) when the CPU has AVX, else legacy SSE.
    Best,
    /// Legacy SSE encoding even on AVX machines, so tests and Miri exercise
    /// the code CPUs without AVX run.
    Sse,
}

/// H^1..H^8 for aggregated GHASH, with their Karatsuba halves.
///
/// Kept as bytes (alignment 1) and read with unaligned loads: no access to
/// it depends on the 16-byte alignment of the place it lives in. (Built as
/// `__m128i` arrays, the AddressSanitizer build of the fuzz targets on
/// nightly 1.97 wrote it through an 8-byte-aligned return slot with an
/// aligned store and crashed; Miri finds no fault in the Rust code.)
#[derive(Clone, Copy)]
struct Powers {
    /// `h[i]` = H^(i+1).
    h: [[u8; 16]; 8],
    /// `hk[i]` low 64 bits = high ^ low 64 bits of `h[i]`.
    hk: [[u8; 16]; 8],
}

impl Powers {
    /// `h[k]` and `hk[k]` as vectors.
    ///
    /// # Safety
    ///
    /// SSE2 (always present on x86-64).
    #[inline(always)]
    #[allow(unused_unsafe)]
    unsafe fn get(&self, k: usize) -> (__m128i, __m128i) {
        // SAFETY: unaligned 16-byte loads from 16-byte arrays.
        unsafe {
            (
                _mm_loadu_si128(self.h[k].as_ptr().cast()),
                _mm_loadu_si128(self.hk[k].as_ptr().cast()),
            )
        }
    }
}

/// Unreduced GHASH accumulator: Karatsuba low, middle and high products.
#[derive(Clone, Copy)]
struct Acc {
    lo: __m128i,
    mid: __m128i,
    hi: __m128i,
}

impl Acc {
    #[inline(always)]
    fn new() -> Acc {
        let zero = [0u8; 16];
        // SAFETY: SSE2 is part of the x86-64 baseline; an unaligned load of
        // a 16-byte local.
        let z = unsafe { _mm_loadu_si128(zero.as_ptr().cast()) };
        Acc {
            lo: z,
            mid: z,
            hi: z,
        }
    }

    /// Adds y·H^(k+1) (y already byte-reflected), unreduced.
    ///
    /// # Safety
    ///
    /// The CPU must have PCLMULQDQ and SSSE3; call only from a function compiled
    /// with those features (it is inlined there).
    #[inline(always)]
    #[allow(unused_unsafe)]
    unsafe fn mul_add(&mut self, y: __m128i, p: &Powers, k: usize) {
        // SAFETY: register-only intrinsics; the caller guarantees the features.
        unsafe {
            let yk = _mm_xor_si128(y, _mm_shuffle_epi32::<0x4e>(y));
            let (h, hk) = p.get(k);
            self.lo = _mm_xor_si128(self.lo, _mm_clmulepi64_si128::<0x00>(y, h));
            self.hi = _mm_xor_si128(self.hi, _mm_clmulepi64_si128::<0x11>(y, h));
            self.mid = _mm_xor_si128(self.mid, _mm_clmulepi64_si128::<0x00>(yk, hk));
        }
    }

    /// Combines the Karatsuba parts and reduces.
    ///
    /// # Safety
    ///
    /// As [`Acc::mul_add`].
    #[inline(always)]
    #[allow(unused_unsafe)]
    unsafe fn finish(self) -> __m128i {
        // SAFETY: register-only intrinsics; the caller guarantees the features.
        unsafe {
            let mid = _mm_xor_si128(self.mid, _mm_xor_si128(self.lo, self.hi));
            reduce(
                _mm_xor_si128(self.lo, _mm_slli_si128::<8>(mid)),
                _mm_xor_si128(self.hi, _mm_srli_si128::<8>(mid)),
            )
        }
    }
}

impl core::fmt::Debug for GcmNi {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GcmNi").finish_non_exhaustive()
    }
}

fn available() -> bool {
    super::aesni::available()
        && std::is_x86_feature_detected!("pclmulqdq")
        && std::is_x86_feature_detected!("ssse3")
}

/// The PSHUFB mask that reverses the 16 bytes of a block.
#[inline(always)]
fn bswap_mask() -> __m128i {
    let mask: [u8; 16] = core::array::from_fn(|i| 15 - i as u8);
    // SAFETY: SSE2 is part of the x86-64 baseline; an unaligned load of a
    // 16-byte local.
    unsafe { _mm_loadu_si128(mask.as_ptr().cast()) }
}

/// Reduces the 256-bit product `[hi:lo]` modulo the GCM polynomial with two
/// carry-less folds by 0xc2 << 56 (Gueron's method). Because H is stored
/// pre-multiplied by x^-1, the product needs no one-bit shift first.
///
/// # Safety
///
/// The CPU must have PCLMULQDQ and SSSE3; call only from a function compiled
/// with those features (it is inlined there).
#[inline(always)]
#[allow(unused_unsafe)]
unsafe fn reduce(lo: __m128i, hi: __m128i) -> __m128i {
    // SAFETY: register-only intrinsics; the caller guarantees the features.
    unsafe {
        let poly = _mm_set_epi64x(0xc200_0000_0000_0000_u64 as i64, 1);
        let t = _mm_clmulepi64_si128::<0x10>(lo, poly);
        let lo = _mm_xor_si128(_mm_shuffle_epi32::<0x4e>(lo), t);
        let t = _mm_clmulepi64_si128::<0x10>(lo, poly);
        let lo = _mm_xor_si128(_mm_shuffle_epi32::<0x4e>(lo), t);
        _mm_xor_si128(lo, hi)
    }
}

/// a·b·x mod P for byte-reflected a, b; with b = H·x^-1 this is a·H.
///
/// # Safety
///
/// The CPU must have PCLMULQDQ and SSSE3; call only from a function compiled
/// with those features (it is inlined there).
#[inline(always)]
#[allow(unused_unsafe)]
unsafe fn gfmul(a: __m128i, b: __m128i) -> __m128i {
    // SAFETY: register-only intrinsics; the caller guarantees the features.
    unsafe {
        let lo = _mm_clmulepi64_si128::<0x00>(a, b);
        let hi = _mm_clmulepi64_si128::<0x11>(a, b);
        let mid = _mm_xor_si128(
            _mm_clmulepi64_si128::<0x10>(a, b),
            _mm_clmulepi64_si128::<0x01>(a, b),
        );
        reduce(
            _mm_xor_si128(lo, _mm_slli_si128::<8>(mid)),
            _mm_xor_si128(hi, _mm_srli_si128::<8>(mid)),
        )
    }
}

impl GcmNi {
    /// `None` if the key is not 16/24/32 bytes or the CPU lacks the
    /// instructions.
    pub(crate) fn new(key: &[u8], encoding: Encoding) -> Option<GcmNi> {
        if !available() {
            return None;
        }
        let aes = AesNi::new(key)?;
        let mut zero = [0u8; 16];
        aes.encrypt_block(&mut zero);
        // SAFETY: AES-NI/PCLMULQDQ/SSE2/SSSE3 checked by `available()`.
        let h = unsafe { powers(&zero) };
        let encoding = match encoding {
            Encoding::Best if std::is_x86_feature_detected!("avx") => Encoding::Best,
            _ => Encoding::Sse,
        };
        Some(GcmNi { aes, h, encoding })
    }

    /// The encoding this key runs: `Best` only if the CPU has AVX.
    #[cfg(test)]
    pub(crate) fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Encrypts `data` in place under `nonce`; returns the tag.
    pub(crate) fn seal(&self, nonce: &[u8; 12], data: &mut [u8]) -> [u8; 16] {
        let (rk, rounds) = self.aes.round_keys();
        // SAFETY: AES-NI/PCLMULQDQ/SSSE3 were checked when `self` was built,
        // and AVX too if `encoding` is `Best`.
        unsafe {
            match rounds {
                10 => crypt::<10, true>(self.encoding, rk, &self.h, nonce, data),
                12 => crypt::<12, true>(self.encoding, rk, &self.h, nonce, data),
                _ => crypt::<14, true>(self.encoding, rk, &self.h, nonce, data),
            }
        }
    }

    /// Verifies `tag` and decrypts `data` in place. On failure `data` is
    /// zeroed (like Go's `Open`, no unauthenticated plaintext is left).
    pub(crate) fn open(&self, nonce: &[u8; 12], data: &mut [u8], tag: &[u8]) -> bool {
        let (rk, rounds) = self.aes.round_keys();
        // SAFETY: as in `seal`.
        let want = unsafe {
            match rounds {
                10 => crypt::<10, false>(self.encoding, rk, &self.h, nonce, data),
                12 => crypt::<12, false>(self.encoding, rk, &self.h, nonce, data),
                _ => crypt::<14, false>(self.encoding, rk, &self.h, nonce, data),
            }
        };
        // Constant-time comparison.
        let diff = want
            .iter()
            .zip(tag.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        let ok = diff == 0 && tag.len() == want.len();
        if !ok {
            data.fill(0);
        }
        ok
    }
}

/// H^1..H^8 (and their Karatsuba halves) from the raw hash key E_K(0).
///
/// # Safety
///
/// The CPU must have PCLMULQDQ and SSSE3 (`available()`).
#[target_feature(enable = "aes,pclmulqdq,sse2,ssse3")]
unsafe fn powers(h_raw: &[u8; 16]) -> Powers {
    // SAFETY: caller checked the features; unaligned load of a 16-byte array.
    unsafe {
        let h = _mm_shuffle_epi8(_mm_loadu_si128(h_raw.as_ptr().cast()), bswap_mask());
        // H·x^-1: a one-bit left shift of the reflected value, folding the
        // bit shifted out back in with the polynomial.
        let poly = _mm_set_epi64x(0xc200_0000_0000_0000_u64 as i64, 1);
        let top = _mm_and_si128(_mm_srai_epi32::<31>(_mm_shuffle_epi32::<0xff>(h)), poly);
        let carries = _mm_slli_si128::<4>(_mm_srli_epi32::<31>(h));
        let h = _mm_xor_si128(_mm_xor_si128(_mm_slli_epi32::<1>(h), carries), top);
        let mut p = [h; 8];
        for i in 1..8 {
            p[i] = gfmul(p[i - 1], h);
        }
        let mut out = Powers {
            h: [[0; 16]; 8],
            hk: [[0; 16]; 8],
        };
        for (i, v) in p.iter().enumerate() {
            let k = _mm_xor_si128(*v, _mm_shuffle_epi32::<0x4e>(*v));
            _mm_storeu_si128(out.h[i].as_mut_ptr().cast(), *v);
            _mm_storeu_si128(out.hk[i].as_mut_ptr().cast(), k);
        }
        out
    }
}

/// Encrypts the eight blocks `ks` and, interleaved with the AES rounds,
/// folds the raw blocks `gh` (1..=8 of them) into the GHASH accumulator `x`:
/// (x ^ gh0)·H^n ^ gh1·H^(n-1) ^ ... ^ gh(n-1)·H.
///
/// # Safety
///
/// The CPU must have AES-NI, PCLMULQDQ and SSSE3; call only from a function
/// compiled with those features (it is inlined there).
#[inline(always)]
#[allow(unused_unsafe)]
unsafe fn aes8_ghash<const NR: usize>(
    rk: &[__m128i; 15],
    ks: &mut [__m128i; 8],
    gh: &[__m128i],
    x: __m128i,
    h: &Powers,
    bs: __m128i,
) -> __m128i {
    // SAFETY: register-only intrinsics; the caller guarantees the features.
    unsafe {
        let n = gh.len();
        let mut acc = Acc::new();
        for b in ks.iter_mut() {
            *b = _mm_xor_si128(*b, rk[0]);
        }
        // NR - 1 >= 9 middle rounds: each of the first eight carries at
        // most one GHASH multiplication.
        for (j, k) in rk[1..NR].iter().enumerate() {
            for b in ks.iter_mut() {
                *b = _mm_aesenc_si128(*b, *k);
            }
            if j < 8 && j < n {
                let mut y = _mm_shuffle_epi8(gh[j], bs);
                if j == 0 {
                    y = _mm_xor_si128(y, x);
                }
                acc.mul_add(y, h, n - 1 - j);
            }
        }
        for b in ks.iter_mut() {
            *b = _mm_aesenclast_si128(*b, rk[NR]);
        }
        acc.finish()
    }
}

/// GHASH of `blocks` (1..=8 raw blocks) into the accumulator `x` with one
/// reduction: (x ^ b0)·H^n ^ b1·H^(n-1) ^ ... ^ b(n-1)·H.
///
/// # Safety
///
/// The CPU must have PCLMULQDQ and SSSE3; call only from a function compiled
/// with those features (it is inlined there).
#[inline(always)]
#[allow(unused_unsafe)]
unsafe fn fold(x: __m128i, blocks: &[__m128i], h: &Powers, bs: __m128i) -> __m128i {
    // SAFETY: register-only intrinsics; the caller guarantees the features.
    unsafe {
        let n = blocks.len();
        let mut acc = Acc::new();
        for (j, b) in blocks.iter().enumerate() {
            let mut y = _mm_shuffle_epi8(*b, bs);
            if j == 0 {
                y = _mm_xor_si128(y, x);
            }
            acc.mul_add(y, h, n - 1 - j);
        }
        acc.finish()
    }
}

/// CTR encryption (`SEAL`) or decryption plus GHASH over the ciphertext;
/// returns the tag. VEX-encoded build.
///
/// # Safety
///
/// The CPU must have AES-NI, PCLMULQDQ, SSSE3 and AVX.
#[target_feature(enable = "aes,pclmulqdq,sse2,ssse3,avx")]
unsafe fn crypt_avx<const NR: usize, const SEAL: bool>(
    rk: &[__m128i; 15],
    h: &Powers,
    nonce: &[u8; 12],
    data: &mut [u8],
) -> [u8; 16] {
    // SAFETY: the caller checked the features.
    unsafe { crypt_body::<NR, SEAL>(rk, h, nonce, data) }
}

/// [`crypt_avx`] in legacy SSE encoding, for CPUs without AVX.
///
/// # Safety
///
/// The CPU must have AES-NI, PCLMULQDQ and SSSE3.
#[target_feature(enable = "aes,pclmulqdq,sse2,ssse3")]
unsafe fn crypt_sse<const NR: usize, const SEAL: bool>(
    rk: &[__m128i; 15],
    h: &Powers,
    nonce: &[u8; 12],
    data: &mut [u8],
) -> [u8; 16] {
    // SAFETY: the caller checked the features.
    unsafe { crypt_body::<NR, SEAL>(rk, h, nonce, data) }
}

/// Runs the VEX-encoded build (three-operand forms, fewer register copies)
/// for `Encoding::Best`, the legacy SSE build otherwise.
///
/// # Safety
///
/// The CPU must have AES-NI, PCLMULQDQ, SSE2 and SSSE3, and AVX as well if
/// `encoding` is `Best` (`GcmNi::new` establishes both).
#[inline(always)]
unsafe fn crypt<const NR: usize, const SEAL: bool>(
    encoding: Encoding,
    rk: &[__m128i; 15],
    h: &Powers,
    nonce: &[u8; 12],
    data: &mut [u8],
) -> [u8; 16] {
    // SAFETY: the features each build enables are guaranteed by the caller.
    unsafe {
        match encoding {
            Encoding::Best => crypt_avx::<NR, SEAL>(rk, h, nonce, data),
            Encoding::Sse => crypt_sse::<NR, SEAL>(rk, h, nonce, data),
        }
    }
}

/// The body of [`crypt_avx`] and [`crypt_sse`], inlined into each.
///
/// # Safety
///
/// The CPU must have AES-NI, PCLMULQDQ and SSSE3; call only from a function
/// compiled with those features.
#[inline(always)]
unsafe fn crypt_body<const NR: usize, const SEAL: bool>(
    rk: &[__m128i; 15],
    h: &Powers,
    nonce: &[u8; 12],
    data: &mut [u8],
) -> [u8; 16] {
    // SAFETY: the caller guarantees the features. Every unaligned load and
    // store is 16 bytes at offset 16*j < 128 of a 128-byte chunk from
    // `chunks_exact_mut`, into a 16-byte chunk of `whole`, or into a 16-byte
    // local; each raw pointer is derived from the borrow it is used under,
    // just before its use (Miri checks this in CI).
    unsafe {
        let bs = bswap_mask();
        let mut j0 = [0u8; 16];
        j0[..12].copy_from_slice(nonce);
        j0[15] = 1;
        let j0 = _mm_loadu_si128(j0.as_ptr().cast());
        // Byte-reversed J0 holds the 32-bit block counter in lane 0, so
        // inc32 is a 32-bit add (wrapping, as GCM specifies).
        let ctr_rev = _mm_shuffle_epi8(j0, bs);
        let counters = |first: u32| {
            let mut ks = [_mm_setzero_si128(); 8];
            for (j, k) in ks.iter_mut().enumerate() {
                let i = first.wrapping_add(j as u32);
                *k = _mm_shuffle_epi8(_mm_add_epi32(ctr_rev, _mm_set_epi32(0, 0, 0, i as i32)), bs);
            }
            ks
        };
        let len = data.len();
        let mut x = _mm_setzero_si128();
        let mut next: u32 = 1;

        // Full 8-block groups. AES of one group is interleaved with GHASH of
        // eight ciphertext blocks: for sealing those of the previous group
        // (its ciphertext is only known after its AES), for opening those of
        // the same group. Both units then stay busy together.
        let mut groups = data.chunks_exact_mut(128);
        let mut pending: Option<[__m128i; 8]> = None;
        for g in &mut groups {
            let p = g.as_mut_ptr();
            let mut ks = counters(next);
            next = next.wrapping_add(8);
            let mut d = [_mm_setzero_si128(); 8];
            for (j, v) in d.iter_mut().enumerate() {
                *v = _mm_loadu_si128(p.add(16 * j).cast());
            }
            if SEAL {
                match &pending {
                    Some(prev) => x = aes8_ghash::<NR>(rk, &mut ks, prev, x, h, bs),
                    None => encrypt_lanes::<NR, 8>(rk, &mut ks),
                }
            } else {
                x = aes8_ghash::<NR>(rk, &mut ks, &d, x, h, bs);
            }
            let mut out = [_mm_setzero_si128(); 8];
            for j in 0..8 {
                out[j] = _mm_xor_si128(d[j], ks[j]);
                _mm_storeu_si128(p.add(16 * j).cast(), out[j]);
            }
            if SEAL {
                pending = Some(out);
            }
        }

        // The rest (< 8 blocks, the last maybe short) takes one more 8-wide
        // AES batch, which also yields E(J0) for the tag when a slot is free.
        let rest = groups.into_remainder();
        let r = rest.len();
        let m = r.div_ceil(16);
        let mut ks = counters(next);
        if m < 8 {
            ks[m] = j0;
        }
        // Whole blocks are read and written in place; only a final short
        // block is staged, zero-padded, in `last`. Every access goes through
        // a fresh borrow of `whole` or `last` (no raw pointer outlives a
        // later `&mut` of the same buffer, which Stacked Borrows forbids).
        let full = r / 16;
        let part = r % 16;
        let (whole, short) = rest.split_at_mut(16 * full);
        let mut last = [0u8; 16];
        last[..part].copy_from_slice(short);
        // Blocks still to hash: the rest's ciphertext, zero-padded, then the
        // length block (64-bit bit lengths of AD, always empty, and data).
        let mut tail = [_mm_setzero_si128(); 9];
        let mut lens = [0u8; 16];
        lens[8..].copy_from_slice(&((len as u64) * 8).to_be_bytes());
        tail[m] = _mm_loadu_si128(lens.as_ptr().cast());
        if SEAL {
            match &pending {
                Some(prev) => x = aes8_ghash::<NR>(rk, &mut ks, prev, x, h, bs),
                None => encrypt_lanes::<NR, 8>(rk, &mut ks),
            }
        } else {
            for (c, b) in tail.iter_mut().zip(whole.chunks_exact(16)) {
                *c = _mm_loadu_si128(b.as_ptr().cast());
            }
            if part > 0 {
                tail[full] = _mm_loadu_si128(last.as_ptr().cast());
            }
            let first = (m + 1).min(8);
            x = aes8_ghash::<NR>(rk, &mut ks, &tail[..first], x, h, bs);
            if first <= m {
                x = fold(x, &tail[first..=m], h, bs);
            }
        }
        for (j, b) in whole.chunks_exact_mut(16).enumerate() {
            let q = b.as_mut_ptr().cast::<__m128i>();
            let c = _mm_xor_si128(_mm_loadu_si128(q), ks[j]);
            _mm_storeu_si128(q, c);
            if SEAL {
                tail[j] = c;
            }
        }
        if part > 0 {
            let mut k = [0u8; 16];
            _mm_storeu_si128(k.as_mut_ptr().cast(), ks[full]);
            for (d, kk) in last[..part].iter_mut().zip(k.iter()) {
                *d ^= *kk;
            }
            short.copy_from_slice(&last[..part]);
            if SEAL {
                // GHASH sees the ciphertext zero-padded to a whole block.
                tail[full] = _mm_loadu_si128(last.as_ptr().cast());
            }
        }
        if SEAL {
            for chunk in tail[..=m].chunks(8) {
                x = fold(x, chunk, h, bs);
            }
        }

        let ej0 = if m < 8 { ks[m] } else { encrypt1::<NR>(rk, j0) };
        let tag = _mm_xor_si128(_mm_shuffle_epi8(x, bs), ej0);
        let mut out = [0u8; 16];
        _mm_storeu_si128(out.as_mut_ptr().cast(), tag);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::aead::AeadInPlace;
    use aes_gcm::{AesGcm, KeyInit, Nonce};
    use cipher::consts::U12;

    fn reference(key: &[u8], nonce: &[u8; 12], data: &mut [u8]) -> [u8; 16] {
        let n = Nonce::<U12>::from_slice(nonce);
        let tag = match key.len() {
            16 => AesGcm::<aes::Aes128, U12>::new_from_slice(key)
                .unwrap()
                .encrypt_in_place_detached(n, &[], data),
            24 => AesGcm::<aes::Aes192, U12>::new_from_slice(key)
                .unwrap()
                .encrypt_in_place_detached(n, &[], data),
            _ => AesGcm::<aes::Aes256, U12>::new_from_slice(key)
                .unwrap()
                .encrypt_in_place_detached(n, &[], data),
        }
        .unwrap();
        tag.into()
    }

    /// Every tail shape (0..=15 trailing bytes, 0..=8 whole blocks after
    /// the 8-block groups) and a few datagram sizes. Miri runs the short
    /// list: it interprets each intrinsic and is ~10^4 times slower.
    fn lens() -> Vec<usize> {
        if cfg!(miri) {
            vec![0, 1, 15, 16, 17, 47, 127, 128, 129, 143, 255, 273]
        } else {
            (0..300)
                .chain([511, 512, 513, 1372, 1400, 1500, 1600])
                .collect()
        }
    }

    #[test]
    fn matches_aes_gcm_crate() {
        if !available() {
            return;
        }
        let data: Vec<u8> = (0..1600u32).map(|i| (i * 97 + 3) as u8).collect();
        for klen in [16usize, 24, 32] {
            let key: Vec<u8> = (0..klen as u8).map(|i| i.wrapping_mul(53) ^ 0xa5).collect();
            for encoding in [Encoding::Best, Encoding::Sse] {
                let g = GcmNi::new(&key, encoding).expect("features present");
                if encoding == Encoding::Sse {
                    assert_eq!(g.encoding(), Encoding::Sse, "SSE build forced");
                }
                for len in lens() {
                    let nonce: [u8; 12] = core::array::from_fn(|i| (i * 7 + len) as u8);
                    let mut ours = data[..len].to_vec();
                    let mut theirs = ours.clone();
                    let t1 = g.seal(&nonce, &mut ours);
                    let t2 = reference(&key, &nonce, &mut theirs);
                    assert_eq!(ours, theirs, "ciphertext key {klen} len {len}");
                    assert_eq!(t1, t2, "tag key {klen} len {len}");
                    assert!(g.open(&nonce, &mut ours, &t1), "open key {klen} len {len}");
                    assert_eq!(ours, &data[..len]);
                    let mut bad = t1;
                    bad[len % 16] ^= 1;
                    let mut again = theirs.clone();
                    assert!(!g.open(&nonce, &mut again, &bad));
                    assert!(
                        again.iter().all(|&b| b == 0),
                        "plaintext left after failure"
                    );
                }
            }
        }
    }
}
