//! kcp-go's CFB variant (§2.2): full-block feedback, the fixed IV truncated to
//! the block size, a fresh state for every datagram, the final partial block
//! XORed with a keystream prefix. Only the cipher's encrypt direction is used.
//!
//! The loops run inside `encrypt_with_backend`, so a RustCrypto cipher hands
//! over its (runtime-detected, e.g. AES-NI) backend once per datagram instead
//! of dispatching per block. Decryption is not chained — keystream block i is
//! E(C[i-1]) of *ciphertext* that is all known up front — so it is computed
//! `ParBlocksSize` blocks at a time (8 for AES-NI). The result is byte-identical
//! to the serial definition; `tests/crypt_vectors.rs` checks it against Go.

use cipher::generic_array::GenericArray;
use cipher::typenum::Unsigned;
use cipher::{BlockBackend, BlockClosure, BlockEncrypt, BlockSizeUser, ParBlocks};

/// kcp-go's `initialVector` (§2.2); 8-byte ciphers use the first 8 bytes.
pub const INITIAL_VECTOR: [u8; 16] = [
    0xa7, 0x73, 0x4f, 0x9c, 0x12, 0xac, 0x1b, 0x01, 0xa4, 0x15, 0xf2, 0xc1, 0xfc, 0x78, 0xe6, 0x6b,
];

#[inline(always)]
fn xor_in_place(dst: &mut [u8], ks: &[u8]) {
    for (d, k) in dst.iter_mut().zip(ks) {
        *d ^= *k;
    }
}

fn iv_block<N: cipher::ArrayLength<u8>>() -> GenericArray<u8, N> {
    let mut iv = GenericArray::<u8, N>::default();
    let n = iv.len().min(INITIAL_VECTOR.len());
    iv[..n].copy_from_slice(&INITIAL_VECTOR[..n]);
    iv
}

struct EncryptClosure<'a, BS> {
    buf: &'a mut [u8],
    _bs: core::marker::PhantomData<BS>,
}

impl<BS: cipher::ArrayLength<u8>> BlockSizeUser for EncryptClosure<'_, BS> {
    type BlockSize = BS;
}

impl<BS: cipher::ArrayLength<u8>> BlockClosure for EncryptClosure<'_, BS> {
    #[inline(always)]
    fn call<B: BlockBackend<BlockSize = BS>>(self, backend: &mut B) {
        let mut fb = iv_block::<BS>();
        backend.proc_block((&mut fb).into());
        let mut chunks = self.buf.chunks_exact_mut(BS::USIZE);
        for chunk in &mut chunks {
            // C[i] = P[i] ^ E(C[i-1]); the ciphertext becomes the next input.
            xor_in_place(chunk, &fb);
            fb.copy_from_slice(chunk);
            backend.proc_block((&mut fb).into());
        }
        xor_in_place(chunks.into_remainder(), &fb);
    }
}

struct DecryptClosure<'a, BS> {
    buf: &'a mut [u8],
    _bs: core::marker::PhantomData<BS>,
}

impl<BS: cipher::ArrayLength<u8>> BlockSizeUser for DecryptClosure<'_, BS> {
    type BlockSize = BS;
}

impl<BS: cipher::ArrayLength<u8>> BlockClosure for DecryptClosure<'_, BS> {
    #[inline(always)]
    fn call<B: BlockBackend<BlockSize = BS>>(self, backend: &mut B) {
        let bs = BS::USIZE;
        let par = B::ParBlocksSize::USIZE;
        // `prev` is the last ciphertext block consumed (the IV at the start).
        let mut prev = iv_block::<BS>();
        let mut rest: &mut [u8] = self.buf;
        if par > 1 {
            let group = bs * par;
            let mut ks = ParBlocks::<B>::default();
            while rest.len() >= group {
                let (head, tail) = core::mem::take(&mut rest).split_at_mut(group);
                ks[0] = prev.clone();
                for (k, c) in ks.iter_mut().skip(1).zip(head.chunks_exact(bs)) {
                    k.copy_from_slice(c);
                }
                prev.copy_from_slice(&head[group - bs..]);
                backend.proc_par_blocks((&mut ks).into());
                for (chunk, k) in head.chunks_exact_mut(bs).zip(ks.iter()) {
                    xor_in_place(chunk, k);
                }
                rest = tail;
            }
        }
        let mut fb = prev;
        backend.proc_block((&mut fb).into());
        let mut chunks = rest.chunks_exact_mut(bs);
        for chunk in &mut chunks {
            let mut next = GenericArray::<u8, BS>::default();
            next.copy_from_slice(chunk);
            xor_in_place(chunk, &fb);
            fb = next;
            backend.proc_block((&mut fb).into());
        }
        xor_in_place(chunks.into_remainder(), &fb);
    }
}

/// Encrypts `buf` in place with kcp-go's CFB (§2.2).
#[inline]
pub fn encrypt<C: BlockEncrypt>(cipher: &C, buf: &mut [u8]) {
    cipher.encrypt_with_backend(EncryptClosure::<C::BlockSize> {
        buf,
        _bs: core::marker::PhantomData,
    });
}

/// Decrypts `buf` in place with kcp-go's CFB (§2.2).
#[inline]
pub fn decrypt<C: BlockEncrypt>(cipher: &C, buf: &mut [u8]) {
    cipher.encrypt_with_backend(DecryptClosure::<C::BlockSize> {
        buf,
        _bs: core::marker::PhantomData,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::Aes128;
    use cipher::{AsyncStreamCipher, KeyInit, KeyIvInit};

    /// The parallel decryptor and the serial encryptor agree with the
    /// reference `cfb-mode` crate at every length around the 8-block groups.
    #[test]
    fn matches_cfb_mode_crate() {
        let key: [u8; 16] = core::array::from_fn(|i| i as u8);
        let aes = Aes128::new(&key.into());
        let data: Vec<u8> = (0..600u32).map(|i| (i * 31 + 7) as u8).collect();
        for len in 0..data.len() {
            let mut ours = data[..len].to_vec();
            encrypt(&aes, &mut ours);
            let mut theirs = data[..len].to_vec();
            cfb_mode::Encryptor::<Aes128>::new(&key.into(), &INITIAL_VECTOR.into())
                .encrypt(&mut theirs);
            assert_eq!(ours, theirs, "encrypt len {len}");
            decrypt(&aes, &mut ours);
            assert_eq!(ours, &data[..len], "decrypt len {len}");
        }
    }
}
