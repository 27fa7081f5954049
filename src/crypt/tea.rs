//! TEA (16-round variant) and XTEA block ciphers, big-endian, as Go's
//! `golang.org/x/crypto/tea` and `x/crypto/xtea` compute them (§2.1).
//!
//! No stock Rust crate fits: `tea-soft` has no 8-cycle variant and the `xtea`
//! crate reads words little-endian, so both are written here. They only ever
//! run in the CFB encrypt direction on the wire, but decryption is provided
//! for completeness and for the round-trip tests.

use cipher::consts::U8;
use cipher::generic_array::GenericArray;

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

    #[inline(always)]
    fn encrypt_words(&self, mut v0: u32, mut v1: u32) -> (u32, u32) {
        let [k0, k1, k2, k3] = self.k;
        let mut sum = 0u32;
        for _ in 0..TEA_CYCLES {
            sum = sum.wrapping_add(DELTA);
            v0 = v0.wrapping_add(
                (v1 << 4).wrapping_add(k0) ^ v1.wrapping_add(sum) ^ (v1 >> 5).wrapping_add(k1),
            );
            v1 = v1.wrapping_add(
                (v0 << 4).wrapping_add(k2) ^ v0.wrapping_add(sum) ^ (v0 >> 5).wrapping_add(k3),
            );
        }
        (v0, v1)
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

    #[inline(always)]
    fn encrypt_words(&self, mut v0: u32, mut v1: u32) -> (u32, u32) {
        for pair in self.table.chunks_exact(2) {
            v0 = v0.wrapping_add(((v1 << 4) ^ (v1 >> 5)).wrapping_add(v1) ^ pair[0]);
            v1 = v1.wrapping_add(((v0 << 4) ^ (v0 >> 5)).wrapping_add(v0) ^ pair[1]);
        }
        (v0, v1)
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

#[inline(always)]
fn apply(block: &mut GenericArray<u8, U8>, f: impl FnOnce(u32, u32) -> (u32, u32)) {
    let (v0, v1) = load(block);
    let (v0, v1) = f(v0, v1);
    store(block, v0, v1);
}

cipher::impl_simple_block_encdec!(
    Tea16, U8, cipher, block,
    encrypt: {
        let mut b = *block.get_in();
        apply(&mut b, |v0, v1| cipher.encrypt_words(v0, v1));
        *block.get_out() = b;
    }
    decrypt: {
        let mut b = *block.get_in();
        apply(&mut b, |v0, v1| cipher.decrypt_words(v0, v1));
        *block.get_out() = b;
    }
);

cipher::impl_simple_block_encdec!(
    Xtea, U8, cipher, block,
    encrypt: {
        let mut b = *block.get_in();
        apply(&mut b, |v0, v1| cipher.encrypt_words(v0, v1));
        *block.get_out() = b;
    }
    decrypt: {
        let mut b = *block.get_in();
        apply(&mut b, |v0, v1| cipher.decrypt_words(v0, v1));
        *block.get_out() = b;
    }
);

impl cipher::BlockCipher for Tea16 {}
impl cipher::BlockCipher for Xtea {}

#[cfg(test)]
mod tests {
    use super::*;
    use cipher::{BlockDecrypt, BlockEncrypt};

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
