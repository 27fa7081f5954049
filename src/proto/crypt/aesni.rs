//! AES-NI fast path for kcp-go's AES-CFB (§2.2) on x86-64.
//!
//! CFB encryption is a serial chain (each block's input is the previous
//! ciphertext), so its speed is the latency of one AES block plus the
//! feedback. Through the `aes` crate's backend every block makes a round
//! trip through memory and an out-of-line call; here the feedback and all
//! round keys stay in XMM registers. Decryption is not chained and runs
//! eight blocks at once. Used only when the CPU reports AES-NI at run time;
//! otherwise `cfb.rs` over the `aes` crate is used. Output is checked
//! against that path and against kcp-go's vectors (`tests/crypt_vectors.rs`).

use core::arch::x86_64::*;

use super::cfb::INITIAL_VECTOR;

/// Maximum round keys (AES-256: 14 rounds + 1).
const MAX_ROUND_KEYS: usize = 15;

/// An expanded AES-128/192/256 encryption key for AES-NI.
#[derive(Clone, Copy)]
pub(crate) struct AesNi {
    rk: [__m128i; MAX_ROUND_KEYS],
    rounds: usize,
}

impl core::fmt::Debug for AesNi {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AesNi")
            .field("rounds", &self.rounds)
            .finish()
    }
}

/// Whether this CPU can run [`AesNi`].
pub(crate) fn available() -> bool {
    std::is_x86_feature_detected!("aes") && std::is_x86_feature_detected!("sse2")
}

/// AES S-box on each byte of a word, via AESENCLAST: with all four columns
/// equal, ShiftRows is the identity, so the first column is SubWord(w).
///
/// # Safety
///
/// The CPU must have AES-NI (see [`available`]).
#[target_feature(enable = "aes,sse2")]
#[allow(unused_unsafe)] // intrinsics are safe here on newer compilers only
unsafe fn sub_word(w: u32) -> u32 {
    // SAFETY: register-only intrinsics of the features this fn enables.
    unsafe {
        let v = _mm_set1_epi32(w as i32);
        _mm_cvtsi128_si32(_mm_aesenclast_si128(v, _mm_setzero_si128())) as u32
    }
}

impl AesNi {
    /// Expands a 16/24/32-byte key (FIPS-197 section 5.2); `None` for any other
    /// length or when the CPU lacks AES-NI.
    pub(crate) fn new(key: &[u8]) -> Option<AesNi> {
        let nk = match key.len() {
            16 | 24 | 32 => key.len() / 4,
            _ => return None,
        };
        if !available() {
            return None;
        }
        const RCON: [u32; 10] = [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x1b, 0x36];
        let rounds = nk + 6;
        let total = 4 * (rounds + 1);
        let mut w = [0u32; 4 * MAX_ROUND_KEYS];
        for (word, chunk) in w.iter_mut().zip(key.chunks_exact(4)) {
            let mut b = [0u8; 4];
            b.copy_from_slice(chunk);
            *word = u32::from_le_bytes(b);
        }
        for i in nk..total {
            let mut t = w[i - 1];
            if i % nk == 0 {
                // RotWord is a byte rotation; words are little-endian here.
                // SAFETY: AES-NI presence was checked above.
                t = unsafe { sub_word(t.rotate_right(8)) } ^ RCON[i / nk - 1];
            } else if nk > 6 && i % nk == 4 {
                // SAFETY: as above.
                t = unsafe { sub_word(t) };
            }
            w[i] = w[i - nk] ^ t;
        }
        let mut bytes = [0u8; 16 * MAX_ROUND_KEYS];
        for (chunk, word) in bytes.chunks_exact_mut(4).zip(w.iter()) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        // SAFETY: SSE2 is present; unaligned loads from a local array.
        let rk = unsafe {
            let mut rk = [_mm_setzero_si128(); MAX_ROUND_KEYS];
            for (k, chunk) in rk.iter_mut().zip(bytes.chunks_exact(16)) {
                *k = _mm_loadu_si128(chunk.as_ptr().cast());
            }
            rk
        };
        Some(AesNi { rk, rounds })
    }

    /// kcp-go CFB encryption of `buf` in place.
    pub(crate) fn cfb_encrypt(&self, buf: &mut [u8]) {
        // SAFETY: an `AesNi` only exists after `available()` returned true.
        unsafe {
            match self.rounds {
                10 => cfb_encrypt::<10>(&self.rk, buf),
                12 => cfb_encrypt::<12>(&self.rk, buf),
                _ => cfb_encrypt::<14>(&self.rk, buf),
            }
        }
    }

    /// [`cfb_encrypt`](Self::cfb_encrypt) of four independent buffers,
    /// their chains interleaved: one chain leaves the AES unit idle between
    /// rounds, four keep it busy. Same bytes as four single calls.
    pub(crate) fn cfb_encrypt4(&self, bufs: [&mut [u8]; 4]) {
        // SAFETY: an `AesNi` only exists after `available()` returned true.
        unsafe {
            match self.rounds {
                10 => cfb_encrypt4::<10>(&self.rk, bufs),
                12 => cfb_encrypt4::<12>(&self.rk, bufs),
                _ => cfb_encrypt4::<14>(&self.rk, bufs),
            }
        }
    }

    /// kcp-go CFB decryption of `buf` in place.
    pub(crate) fn cfb_decrypt(&self, buf: &mut [u8]) {
        // SAFETY: an `AesNi` only exists after `available()` returned true.
        unsafe {
            match self.rounds {
                10 => cfb_decrypt::<10>(&self.rk, buf),
                12 => cfb_decrypt::<12>(&self.rk, buf),
                _ => cfb_decrypt::<14>(&self.rk, buf),
            }
        }
    }

    /// Encrypts one block (for GCM and tests).
    pub(crate) fn encrypt_block(&self, block: &mut [u8; 16]) {
        // SAFETY: AES-NI checked at construction; unaligned load/store on a
        // 16-byte array.
        unsafe {
            let x = _mm_loadu_si128(block.as_ptr().cast());
            let y = match self.rounds {
                10 => encrypt1::<10>(&self.rk, x),
                12 => encrypt1::<12>(&self.rk, x),
                _ => encrypt1::<14>(&self.rk, x),
            };
            _mm_storeu_si128(block.as_mut_ptr().cast(), y);
        }
    }

    /// The round keys, for the GCM code that shares this key schedule.
    pub(crate) fn round_keys(&self) -> (&[__m128i; MAX_ROUND_KEYS], usize) {
        (&self.rk, self.rounds)
    }
}

/// AES-`NR` encryption of one block with the expanded key `rk`.
///
/// # Safety
///
/// The CPU must have AES-NI; call only from a function compiled with
/// `target_feature(enable = "aes")` (it is inlined there).
#[inline(always)]
#[allow(unused_unsafe)]
pub(crate) unsafe fn encrypt1<const NR: usize>(
    rk: &[__m128i; MAX_ROUND_KEYS],
    x: __m128i,
) -> __m128i {
    // SAFETY: register-only AES-NI intrinsics; the caller guarantees AES-NI.
    unsafe {
        let mut x = _mm_xor_si128(x, rk[0]);
        for k in &rk[1..NR] {
            x = _mm_aesenc_si128(x, *k);
        }
        _mm_aesenclast_si128(x, rk[NR])
    }
}

/// `N` independent blocks through AES at once, rounds interleaved so the
/// AES unit's pipeline stays full.
///
/// # Safety
///
/// As [`encrypt1`]: the CPU must have AES-NI.
#[inline(always)]
#[allow(unused_unsafe)]
pub(crate) unsafe fn encrypt_lanes<const NR: usize, const N: usize>(
    rk: &[__m128i; MAX_ROUND_KEYS],
    x: &mut [__m128i; N],
) {
    // SAFETY: register-only AES-NI intrinsics; the caller guarantees AES-NI.
    unsafe {
        for b in x.iter_mut() {
            *b = _mm_xor_si128(*b, rk[0]);
        }
        for k in &rk[1..NR] {
            for b in x.iter_mut() {
                *b = _mm_aesenc_si128(*b, *k);
            }
        }
        for b in x.iter_mut() {
            *b = _mm_aesenclast_si128(*b, rk[NR]);
        }
    }
}

/// kcp-go's CFB IV as a vector.
#[inline(always)]
fn iv() -> __m128i {
    // SAFETY: SSE2 is part of the x86-64 baseline; an unaligned load of the
    // 16-byte constant.
    unsafe { _mm_loadu_si128(INITIAL_VECTOR.as_ptr().cast()) }
}

/// XORs the first `tail.len()` (< 16) bytes of `ks` into `tail`.
#[inline(always)]
fn xor_tail(tail: &mut [u8], ks: __m128i) {
    let mut k = [0u8; 16];
    // SAFETY: SSE2 is baseline; an unaligned store into a 16-byte local.
    unsafe { _mm_storeu_si128(k.as_mut_ptr().cast(), ks) };
    for (d, s) in tail.iter_mut().zip(k.iter()) {
        *d ^= *s;
    }
}

/// kcp-go's CFB encryption (§2.2) of `buf` in place.
///
/// # Safety
///
/// The CPU must have AES-NI.
#[target_feature(enable = "aes,sse2")]
unsafe fn cfb_encrypt<const NR: usize>(rk: &[__m128i; MAX_ROUND_KEYS], buf: &mut [u8]) {
    // SAFETY: caller guarantees AES-NI, which both helpers need.
    unsafe { cfb_chain::<NR>(rk, buf, encrypt1::<NR>(rk, iv())) }
}

/// The CFB encryption chain over `buf` from the keystream block `fb` (the
/// encrypted previous ciphertext block, or the encrypted IV at the start).
///
/// # Safety
///
/// As [`encrypt1`]: the CPU must have AES-NI; inlined into callers compiled
/// with `target_feature(enable = "aes")`.
#[inline(always)]
#[allow(unused_unsafe)]
unsafe fn cfb_chain<const NR: usize>(
    rk: &[__m128i; MAX_ROUND_KEYS],
    buf: &mut [u8],
    mut fb: __m128i,
) {
    // SAFETY: every load/store is on a 16-byte chunk produced by
    // `chunks_exact_mut(16)`; the caller guarantees AES-NI.
    unsafe {
        let mut chunks = buf.chunks_exact_mut(16);
        for c in &mut chunks {
            let ct = _mm_xor_si128(_mm_loadu_si128(c.as_ptr().cast()), fb);
            _mm_storeu_si128(c.as_mut_ptr().cast(), ct);
            fb = encrypt1::<NR>(rk, ct);
        }
        xor_tail(chunks.into_remainder(), fb);
    }
}

/// kcp-go's CFB encryption of four buffers in place: the blocks all four
/// have are done in lockstep, the rest of each buffer alone.
///
/// # Safety
///
/// The CPU must have AES-NI.
#[target_feature(enable = "aes,sse2")]
unsafe fn cfb_encrypt4<const NR: usize>(rk: &[__m128i; MAX_ROUND_KEYS], mut bufs: [&mut [u8]; 4]) {
    // SAFETY: caller guarantees AES-NI; every load/store here is at
    // `16 * i` with `i < common` and `16 * common <= b.len()` for every
    // buffer `b` (`cfb_chain` keeps to 16-byte chunks of what remains).
    unsafe {
        // Every chain starts from the same IV, so from the same keystream.
        let first = encrypt1::<NR>(rk, iv());
        let mut fb = [first; 4];
        let common = bufs.iter().map(|b| b.len() / 16).min().unwrap_or(0);
        // Raw pointers end their use before `bufs` is used again below.
        let ptrs: [*mut u8; 4] = core::array::from_fn(|k| bufs[k].as_mut_ptr());
        for i in 0..common {
            for (p, f) in ptrs.iter().zip(fb.iter_mut()) {
                let at = p.add(16 * i);
                let ct = _mm_xor_si128(_mm_loadu_si128(at.cast()), *f);
                _mm_storeu_si128(at.cast(), ct);
                *f = ct;
            }
            encrypt_lanes::<NR, 4>(rk, &mut fb);
        }
        for (b, f) in bufs.into_iter().zip(fb) {
            cfb_chain::<NR>(rk, &mut b[16 * common..], f);
        }
    }
}

/// kcp-go's CFB decryption of `buf` in place, eight blocks at a time (the
/// keystream blocks of CFB decryption are independent).
///
/// # Safety
///
/// The CPU must have AES-NI.
#[target_feature(enable = "aes,sse2")]
unsafe fn cfb_decrypt<const NR: usize>(rk: &[__m128i; MAX_ROUND_KEYS], buf: &mut [u8]) {
    // SAFETY: caller guarantees AES-NI; loads/stores stay inside 128-byte
    // or 16-byte chunks produced by `chunks_exact_mut`.
    unsafe {
        // `prev` is the last ciphertext block consumed (the IV at first).
        let mut prev = iv();
        let mut groups = buf.chunks_exact_mut(128);
        for g in &mut groups {
            let p = g.as_mut_ptr();
            let mut c = [_mm_setzero_si128(); 8];
            for (j, b) in c.iter_mut().enumerate() {
                *b = _mm_loadu_si128(p.add(16 * j).cast());
            }
            let mut ks = [prev, c[0], c[1], c[2], c[3], c[4], c[5], c[6]];
            prev = c[7];
            encrypt_lanes::<NR, 8>(rk, &mut ks);
            for j in 0..8 {
                _mm_storeu_si128(p.add(16 * j).cast(), _mm_xor_si128(c[j], ks[j]));
            }
        }
        let mut fb = encrypt1::<NR>(rk, prev);
        let mut chunks = groups.into_remainder().chunks_exact_mut(16);
        for ch in &mut chunks {
            let ct = _mm_loadu_si128(ch.as_ptr().cast());
            _mm_storeu_si128(ch.as_mut_ptr().cast(), _mm_xor_si128(ct, fb));
            fb = encrypt1::<NR>(rk, ct);
        }
        xor_tail(chunks.into_remainder(), fb);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cipher::{BlockEncrypt, KeyInit};

    fn reference(key: &[u8], buf: &mut [u8], decrypt: bool) {
        match key.len() {
            16 => {
                let c = aes::Aes128::new_from_slice(key).unwrap();
                if decrypt {
                    super::super::cfb::decrypt(&c, buf)
                } else {
                    super::super::cfb::encrypt(&c, buf)
                }
            }
            24 => {
                let c = aes::Aes192::new_from_slice(key).unwrap();
                if decrypt {
                    super::super::cfb::decrypt(&c, buf)
                } else {
                    super::super::cfb::encrypt(&c, buf)
                }
            }
            _ => {
                let c = aes::Aes256::new_from_slice(key).unwrap();
                if decrypt {
                    super::super::cfb::decrypt(&c, buf)
                } else {
                    super::super::cfb::encrypt(&c, buf)
                }
            }
        }
    }

    #[test]
    fn matches_aes_crate_for_all_key_sizes_and_lengths() {
        if !available() {
            return;
        }
        let data: Vec<u8> = (0..700u32).map(|i| (i * 13 + 5) as u8).collect();
        for klen in [16usize, 24, 32] {
            let key: Vec<u8> = (0..klen as u8).map(|i| i.wrapping_mul(29) ^ 0x5a).collect();
            let ni = AesNi::new(&key).expect("AES-NI present");
            let mut blk = [0x33u8; 16];
            let mut want = blk.into();
            match klen {
                16 => aes::Aes128::new_from_slice(&key)
                    .unwrap()
                    .encrypt_block(&mut want),
                24 => aes::Aes192::new_from_slice(&key)
                    .unwrap()
                    .encrypt_block(&mut want),
                _ => aes::Aes256::new_from_slice(&key)
                    .unwrap()
                    .encrypt_block(&mut want),
            }
            ni.encrypt_block(&mut blk);
            assert_eq!(&blk[..], want.as_slice(), "block, key {klen}");
            // Miri interprets every intrinsic: every tail shape once there.
            let lens: Vec<usize> = if cfg!(miri) {
                vec![0, 1, 15, 16, 17, 127, 128, 129, 150, 271]
            } else {
                (0..data.len()).collect()
            };
            for len in lens {
                let mut ours = data[..len].to_vec();
                let mut theirs = ours.clone();
                ni.cfb_encrypt(&mut ours);
                reference(&key, &mut theirs, false);
                assert_eq!(ours, theirs, "encrypt key {klen} len {len}");
                ni.cfb_decrypt(&mut ours);
                assert_eq!(ours, &data[..len], "decrypt key {klen} len {len}");
                reference(&key, &mut theirs, true);
                assert_eq!(theirs, &data[..len]);
            }
        }
    }

    #[test]
    fn four_chains_at_once_match_four_single_calls() {
        if !available() {
            return;
        }
        let data: Vec<u8> = (0..1500u32).map(|i| (i * 7 + 3) as u8).collect();
        // Equal lengths (a bulk flush), each one shorter or longer, empty
        // ones, tails of every shape.
        // Miri interprets every intrinsic: short buffers only there.
        let mut shapes: Vec<[usize; 4]> = vec![
            [64; 4],
            [64, 64, 64, 9],
            [0, 16, 17, 47],
            [0; 4],
            [15, 1, 31, 48],
        ];
        if !cfg!(miri) {
            shapes.extend([[1400; 4], [1400, 1400, 1400, 99], [0, 16, 17, 1472]]);
            for a in (0..300).step_by(7) {
                shapes.push([a, 300 - a, a / 2, 1472 - a]);
            }
        }
        for klen in [16usize, 24, 32] {
            let key: Vec<u8> = (0..klen as u8).map(|i| i.wrapping_mul(31) ^ 0xa5).collect();
            let ni = AesNi::new(&key).expect("AES-NI present");
            for lens in &shapes {
                let mut ours: Vec<Vec<u8>> = lens
                    .iter()
                    .enumerate()
                    .map(|(k, &n)| data[k..k + n].to_vec())
                    .collect();
                let mut theirs = ours.clone();
                let [a, b, c, d] = &mut ours[..] else {
                    unreachable!()
                };
                ni.cfb_encrypt4([a, b, c, d]);
                for t in &mut theirs {
                    reference(&key, t, false);
                }
                assert_eq!(ours, theirs, "key {klen} lengths {lens:?}");
            }
        }
    }
}
