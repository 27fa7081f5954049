//! TEA (16-round variant) and XTEA block ciphers, big-endian, as Go's
//! `golang.org/x/crypto/tea` and `x/crypto/xtea` compute them (§2.1).
//!
//! No stock Rust crate fits: `tea-soft` has no 8-cycle variant and the `xtea`
//! crate reads words little-endian, so both are written here. They only ever
//! run in the CFB encrypt direction on the wire, but decryption is provided
//! for completeness and for the round-trip tests.

use cipher::consts::{U1, U4, U8};
use cipher::inout::InOut;
use cipher::{
    Block, BlockBackend, BlockClosure, BlockDecrypt, BlockEncrypt, BlockSizeUser, ParBlocks,
    ParBlocksSizeUser,
};

const DELTA: u32 = 0x9e37_79b9;

/// kcp-go calls `tea.NewCipherWithRounds(key, 16)`: x/crypto counts Feistel
/// rounds and runs `rounds / 2` cycles, so the wire uses 8 cycles, not the
/// textbook 32 (§2.1).
const TEA_CYCLES: u32 = 8;

/// XTEA with x/crypto's `numRounds = 64` (32 cycles, the standard count).
const XTEA_ROUNDS: usize = 64;

#[inline(always)]
fn load(block: &[u8]) -> (u32, u32) {
    let mut a = [0u8; 4];
    let mut b = [0u8; 4];
    a.copy_from_slice(&block[0..4]);
    b.copy_from_slice(&block[4..8]);
    (u32::from_be_bytes(a), u32::from_be_bytes(b))
}

#[inline(always)]
fn store(block: &mut [u8], v0: u32, v1: u32) {
    block[0..4].copy_from_slice(&v0.to_be_bytes());
    block[4..8].copy_from_slice(&v1.to_be_bytes());
}

fn key_words(key: &[u8; 16]) -> [u32; 4] {
    let mut k = [0u32; 4];
    for (w, chunk) in k.iter_mut().zip(key.chunks_exact(4)) {
        let mut b = [0u8; 4];
        b.copy_from_slice(chunk);
        *w = u32::from_be_bytes(b);
    }
    k
}

/// TEA with 16 rounds (8 cycles), big-endian words: kcp-go's `NewTEABlockCrypt`.
#[derive(Clone)]
pub struct Tea16 {
    k: [u32; 4],
}

impl Tea16 {
    /// Builds the cipher from a 16-byte key.
    pub fn new(key: &[u8; 16]) -> Tea16 {
        Tea16 { k: key_words(key) }
    }

    /// Encrypts `N` independent blocks, interleaved.
    #[inline(always)]
    fn encrypt_lanes<const N: usize>(&self, v0: &mut [u32; N], v1: &mut [u32; N]) {
        let [k0, k1, k2, k3] = self.k;
        let mut sum = 0u32;
        for _ in 0..TEA_CYCLES {
            sum = sum.wrapping_add(DELTA);
            for (a, b) in v0.iter_mut().zip(v1.iter_mut()) {
                *a = a.wrapping_add(
                    (*b << 4).wrapping_add(k0) ^ b.wrapping_add(sum) ^ (*b >> 5).wrapping_add(k1),
                );
                *b = b.wrapping_add(
                    (*a << 4).wrapping_add(k2) ^ a.wrapping_add(sum) ^ (*a >> 5).wrapping_add(k3),
                );
            }
        }
    }

    #[inline(always)]
    fn decrypt_words(&self, mut v0: u32, mut v1: u32) -> (u32, u32) {
        let [k0, k1, k2, k3] = self.k;
        let mut sum = DELTA.wrapping_mul(TEA_CYCLES);
        for _ in 0..TEA_CYCLES {
            v1 = v1.wrapping_sub(
                (v0 << 4).wrapping_add(k2) ^ v0.wrapping_add(sum) ^ (v0 >> 5).wrapping_add(k3),
            );
            v0 = v0.wrapping_sub(
                (v1 << 4).wrapping_add(k0) ^ v1.wrapping_add(sum) ^ (v1 >> 5).wrapping_add(k1),
            );
            sum = sum.wrapping_sub(DELTA);
        }
        (v0, v1)
    }
}

/// XTEA (64 rounds), big-endian words: kcp-go's `NewXTEABlockCrypt`.
#[derive(Clone)]
pub struct Xtea {
    table: [u32; XTEA_ROUNDS],
}

impl Xtea {
    /// Builds the cipher from a 16-byte key; the per-round key additions are
    /// precomputed as in x/crypto.
    pub fn new(key: &[u8; 16]) -> Xtea {
        let k = key_words(key);
        let mut table = [0u32; XTEA_ROUNDS];
        let mut sum = 0u32;
        for pair in table.chunks_exact_mut(2) {
            pair[0] = sum.wrapping_add(k[(sum & 3) as usize]);
            sum = sum.wrapping_add(DELTA);
            pair[1] = sum.wrapping_add(k[((sum >> 11) & 3) as usize]);
        }
        Xtea { table }
    }

    /// Encrypts `N` independent blocks, interleaved.
    #[inline(always)]
    fn encrypt_lanes<const N: usize>(&self, v0: &mut [u32; N], v1: &mut [u32; N]) {
        for pair in self.table.chunks_exact(2) {
            for (a, b) in v0.iter_mut().zip(v1.iter_mut()) {
                *a = a.wrapping_add(((*b << 4) ^ (*b >> 5)).wrapping_add(*b) ^ pair[0]);
                *b = b.wrapping_add(((*a << 4) ^ (*a >> 5)).wrapping_add(*a) ^ pair[1]);
            }
        }
    }

    #[inline(always)]
    fn decrypt_words(&self, mut v0: u32, mut v1: u32) -> (u32, u32) {
        for pair in self.table.chunks_exact(2).rev() {
            v1 = v1.wrapping_sub(((v0 << 4) ^ (v0 >> 5)).wrapping_add(v0) ^ pair[1]);
            v0 = v0.wrapping_sub(((v1 << 4) ^ (v1 >> 5)).wrapping_add(v1) ^ pair[0]);
        }
        (v0, v1)
    }
}

// Encryption gets a 4-block backend: kcp-go's CFB decryption computes the
// keystream of independent ciphertext blocks (`cfb.rs`), so four round
// chains can run side by side.
macro_rules! lanes_backend {
    ($cipher:ident, $enc:ident, $dec:ident) => {
        impl BlockSizeUser for $cipher {
            type BlockSize = U8;
        }

        impl BlockEncrypt for $cipher {
            fn encrypt_with_backend(&self, f: impl BlockClosure<BlockSize = U8>) {
                f.call(&mut $enc(self))
            }
        }

        impl BlockDecrypt for $cipher {
            fn decrypt_with_backend(&self, f: impl BlockClosure<BlockSize = U8>) {
                f.call(&mut $dec(self))
            }
        }

        struct $enc<'a>(&'a $cipher);

        impl BlockSizeUser for $enc<'_> {
            type BlockSize = U8;
        }

        impl ParBlocksSizeUser for $enc<'_> {
            type ParBlocksSize = U4;
        }

        impl BlockBackend for $enc<'_> {
            #[inline(always)]
            fn proc_block(&mut self, mut block: InOut<'_, '_, Block<Self>>) {
                let (a, b) = load(block.get_in());
                let (mut v0, mut v1) = ([a], [b]);
                self.0.encrypt_lanes(&mut v0, &mut v1);
                store(block.get_out(), v0[0], v1[0]);
            }

            #[inline(always)]
            fn proc_par_blocks(&mut self, mut blocks: InOut<'_, '_, ParBlocks<Self>>) {
                let mut v0 = [0u32; 4];
                let mut v1 = [0u32; 4];
                for (j, b) in blocks.get_in().iter().enumerate() {
                    (v0[j], v1[j]) = load(b);
                }
                self.0.encrypt_lanes(&mut v0, &mut v1);
                for (j, b) in blocks.get_out().iter_mut().enumerate() {
                    store(b, v0[j], v1[j]);
                }
            }
        }

        struct $dec<'a>(&'a $cipher);

        impl BlockSizeUser for $dec<'_> {
            type BlockSize = U8;
        }

        impl ParBlocksSizeUser for $dec<'_> {
            type ParBlocksSize = U1;
        }

        impl BlockBackend for $dec<'_> {
            #[inline(always)]
            fn proc_block(&mut self, mut block: InOut<'_, '_, Block<Self>>) {
                let (a, b) = load(block.get_in());
                let (v0, v1) = self.0.decrypt_words(a, b);
                store(block.get_out(), v0, v1);
            }
        }

        impl cipher::BlockCipher for $cipher {}
    };
}

lanes_backend!(Tea16, TeaEnc, TeaDec);
lanes_backend!(Xtea, XteaEnc, XteaDec);

#[cfg(test)]
mod tests {
    use super::*;
    use cipher::generic_array::GenericArray;

    #[test]
    fn tea_and_xtea_invert() {
        let key: [u8; 16] = core::array::from_fn(|i| i as u8 * 7 + 1);
        let tea = Tea16::new(&key);
        let xtea = Xtea::new(&key);
        let plain = GenericArray::from([1u8, 2, 3, 4, 5, 6, 7, 8]);
        let mut b = plain;
        tea.encrypt_block(&mut b);
        assert_ne!(b, plain);
        tea.decrypt_block(&mut b);
        assert_eq!(b, plain);
        let mut b = plain;
        xtea.encrypt_block(&mut b);
        assert_ne!(b, plain);
        xtea.decrypt_block(&mut b);
        assert_eq!(b, plain);
    }

    /// Published XTEA test vector (all-zero key and block, 32 cycles):
    /// ciphertext dee9d4d8f7131ed9, as the x/crypto tests use.
    #[test]
    fn xtea_known_answer() {
        let xtea = Xtea::new(&[0u8; 16]);
        let mut b = GenericArray::from([0u8; 8]);
        xtea.encrypt_block(&mut b);
        assert_eq!(
            b.as_slice(),
            &[0xde, 0xe9, 0xd4, 0xd8, 0xf7, 0x13, 0x1e, 0xd9]
        );
    }
}
