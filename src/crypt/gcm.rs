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

use super::aesni::{encrypt1, encrypt8, AesNi};

/// An AES-GCM key: the AES schedule plus H^1..H^8 (byte-reflected).
#[derive(Clone, Copy)]
pub(crate) struct GcmNi {
    aes: AesNi,
    /// `h[i]` = H^(i+1).
    h: [__m128i; 8],
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

#[inline(always)]
#[allow(unused_unsafe)]
unsafe fn bswap_mask() -> __m128i {
    unsafe { _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15) }
}

/// The 256-bit carry-less product `[hi:lo]` of `a` and `b`.
#[inline(always)]
#[allow(unused_unsafe)]
unsafe fn clmul(a: __m128i, b: __m128i) -> (__m128i, __m128i) {
    unsafe {
        let lo = _mm_clmulepi64_si128::<0x00>(a, b);
        let mid = _mm_xor_si128(
            _mm_clmulepi64_si128::<0x10>(a, b),
            _mm_clmulepi64_si128::<0x01>(a, b),
        );
        let hi = _mm_clmulepi64_si128::<0x11>(a, b);
        (
            _mm_xor_si128(lo, _mm_slli_si128::<8>(mid)),
            _mm_xor_si128(hi, _mm_srli_si128::<8>(mid)),
        )
    }
}

/// Shifts the reflected 256-bit product left by one bit and reduces it
/// modulo the GCM polynomial. Linear, so sums of products may share it.
#[inline(always)]
#[allow(unused_unsafe)]
unsafe fn reduce(lo: __m128i, hi: __m128i) -> __m128i {
    unsafe {
        let c_lo = _mm_srli_epi32::<31>(lo);
        let c_hi = _mm_srli_epi32::<31>(hi);
        let mut lo = _mm_slli_epi32::<1>(lo);
        let mut hi = _mm_slli_epi32::<1>(hi);
        let carry_across = _mm_srli_si128::<12>(c_lo);
        lo = _mm_or_si128(lo, _mm_slli_si128::<4>(c_lo));
        hi = _mm_or_si128(hi, _mm_slli_si128::<4>(c_hi));
        hi = _mm_or_si128(hi, carry_across);

        let a = _mm_xor_si128(
            _mm_xor_si128(_mm_slli_epi32::<31>(lo), _mm_slli_epi32::<30>(lo)),
            _mm_slli_epi32::<25>(lo),
        );
        let a_hi = _mm_srli_si128::<4>(a);
        lo = _mm_xor_si128(lo, _mm_slli_si128::<12>(a));
        let b = _mm_xor_si128(
            _mm_xor_si128(_mm_srli_epi32::<1>(lo), _mm_srli_epi32::<2>(lo)),
            _mm_xor_si128(_mm_srli_epi32::<7>(lo), a_hi),
        );
        _mm_xor_si128(hi, _mm_xor_si128(lo, b))
    }
}

#[inline(always)]
#[allow(unused_unsafe)]
unsafe fn gfmul(a: __m128i, b: __m128i) -> __m128i {
    unsafe {
        let (lo, hi) = clmul(a, b);
        reduce(lo, hi)
    }
}

impl GcmNi {
    /// `None` if the key is not 16/24/32 bytes or the CPU lacks the
    /// instructions.
    pub(crate) fn new(key: &[u8]) -> Option<GcmNi> {
        if !available() {
            return None;
        }
        let aes = AesNi::new(key)?;
        let mut zero = [0u8; 16];
        aes.encrypt_block(&mut zero);
        // SAFETY: PCLMULQDQ/SSSE3 checked by `available()`.
        let h = unsafe { powers(&zero) };
        Some(GcmNi { aes, h })
    }

    /// Encrypts `data` in place under `nonce`; returns the tag.
    pub(crate) fn seal(&self, nonce: &[u8; 12], data: &mut [u8]) -> [u8; 16] {
        let (rk, rounds) = self.aes.round_keys();
        // SAFETY: instructions checked when `self` was built.
        unsafe {
            match rounds {
                10 => crypt::<10, true>(rk, &self.h, nonce, data),
                12 => crypt::<12, true>(rk, &self.h, nonce, data),
                _ => crypt::<14, true>(rk, &self.h, nonce, data),
            }
        }
    }

    /// Verifies `tag` and decrypts `data` in place. On failure `data` is
    /// zeroed (like Go's `Open`, no unauthenticated plaintext is left).
    pub(crate) fn open(&self, nonce: &[u8; 12], data: &mut [u8], tag: &[u8]) -> bool {
        let (rk, rounds) = self.aes.round_keys();
        // SAFETY: instructions checked when `self` was built.
        let want = unsafe {
            match rounds {
                10 => crypt::<10, false>(rk, &self.h, nonce, data),
                12 => crypt::<12, false>(rk, &self.h, nonce, data),
                _ => crypt::<14, false>(rk, &self.h, nonce, data),
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

#[target_feature(enable = "aes,pclmulqdq,sse2,ssse3")]
unsafe fn powers(h_raw: &[u8; 16]) -> [__m128i; 8] {
    // SAFETY: caller checked the features; unaligned load of a 16-byte array.
    unsafe {
        let h = _mm_shuffle_epi8(_mm_loadu_si128(h_raw.as_ptr().cast()), bswap_mask());
        let mut p = [h; 8];
        for i in 1..8 {
            p[i] = gfmul(p[i - 1], h);
        }
        p
    }
}

/// CTR encryption (`SEAL`) or decryption plus GHASH over the ciphertext;
/// returns the tag.
#[target_feature(enable = "aes,pclmulqdq,sse2,ssse3")]
unsafe fn crypt<const NR: usize, const SEAL: bool>(
    rk: &[__m128i; 15],
    h: &[__m128i; 8],
    nonce: &[u8; 12],
    data: &mut [u8],
) -> [u8; 16] {
    // SAFETY: caller checked the features. Loads/stores stay inside
    // 128-byte or 16-byte chunks from `chunks_exact_mut`, or local arrays.
    unsafe {
        let bs = bswap_mask();
        let mut j0 = [0u8; 16];
        j0[..12].copy_from_slice(nonce);
        j0[15] = 1;
        let j0 = _mm_loadu_si128(j0.as_ptr().cast());
        // Byte-reversed J0 holds the 32-bit block counter in lane 0, so
        // inc32 is a 32-bit add (wrapping, as GCM specifies).
        let ctr_rev = _mm_shuffle_epi8(j0, bs);
        let counter =
            |i: u32| _mm_shuffle_epi8(_mm_add_epi32(ctr_rev, _mm_set_epi32(0, 0, 0, i as i32)), bs);
        let len = data.len();
        let mut x = _mm_setzero_si128();
        let mut next: u32 = 1;

        let mut groups = data.chunks_exact_mut(128);
        for g in &mut groups {
            let p = g.as_mut_ptr();
            let mut ks = [_mm_setzero_si128(); 8];
            for (j, k) in ks.iter_mut().enumerate() {
                *k = counter(next + j as u32);
            }
            next = next.wrapping_add(8);
            encrypt8::<NR>(rk, &mut ks);
            let mut c = [_mm_setzero_si128(); 8];
            for j in 0..8 {
                let d = _mm_loadu_si128(p.add(16 * j).cast());
                let out = _mm_xor_si128(d, ks[j]);
                _mm_storeu_si128(p.add(16 * j).cast(), out);
                c[j] = if SEAL { out } else { d };
            }
            let y0 = _mm_xor_si128(x, _mm_shuffle_epi8(c[0], bs));
            let (mut lo, mut hi) = clmul(y0, h[7]);
            for j in 1..8 {
                let (l, hh) = clmul(_mm_shuffle_epi8(c[j], bs), h[7 - j]);
                lo = _mm_xor_si128(lo, l);
                hi = _mm_xor_si128(hi, hh);
            }
            x = reduce(lo, hi);
        }

        let mut blocks = groups.into_remainder().chunks_exact_mut(16);
        for b in &mut blocks {
            let ks = encrypt1::<NR>(rk, counter(next));
            next = next.wrapping_add(1);
            let d = _mm_loadu_si128(b.as_ptr().cast());
            let out = _mm_xor_si128(d, ks);
            _mm_storeu_si128(b.as_mut_ptr().cast(), out);
            let c = if SEAL { out } else { d };
            x = gfmul(_mm_xor_si128(x, _mm_shuffle_epi8(c, bs)), h[0]);
        }

        let tail = blocks.into_remainder();
        if !tail.is_empty() {
            let ks = encrypt1::<NR>(rk, counter(next));
            let mut k = [0u8; 16];
            _mm_storeu_si128(k.as_mut_ptr().cast(), ks);
            // GHASH sees the ciphertext zero-padded to a block.
            let mut padded = [0u8; 16];
            for (i, (d, kk)) in tail.iter_mut().zip(k.iter()).enumerate() {
                if !SEAL {
                    padded[i] = *d;
                }
                *d ^= *kk;
                if SEAL {
                    padded[i] = *d;
                }
            }
            let c = _mm_loadu_si128(padded.as_ptr().cast());
            x = gfmul(_mm_xor_si128(x, _mm_shuffle_epi8(c, bs)), h[0]);
        }

        // Length block: 64-bit bit lengths of AD (always empty) and data.
        let mut lens = [0u8; 16];
        lens[8..].copy_from_slice(&((len as u64) * 8).to_be_bytes());
        let l = _mm_loadu_si128(lens.as_ptr().cast());
        x = gfmul(_mm_xor_si128(x, _mm_shuffle_epi8(l, bs)), h[0]);

        let tag = _mm_xor_si128(_mm_shuffle_epi8(x, bs), encrypt1::<NR>(rk, j0));
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

    #[test]
    fn matches_aes_gcm_crate() {
        if !available() {
            return;
        }
        let data: Vec<u8> = (0..1600u32).map(|i| (i * 97 + 3) as u8).collect();
        for klen in [16usize, 24, 32] {
            let key: Vec<u8> = (0..klen as u8).map(|i| i.wrapping_mul(53) ^ 0xa5).collect();
            let g = GcmNi::new(&key).expect("features present");
            let lens = (0..300).chain([511, 512, 513, 1372, 1400, 1500, 1600]);
            for len in lens {
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
