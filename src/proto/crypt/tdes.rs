//! Table-driven Triple DES (EDE, three keys), as Go's crypto/des computes it
//! (FIPS 46-3 / SP 800-67): S-boxes and the P permutation folded into eight
//! 64-entry tables, the initial and final permutations done with byte-indexed
//! tables, and the FP·IP pairs between the three DES passes cancelled.
//!
//! The `des` crate permutes bit by bit in every round and is about three
//! times slower than Go in kcp-go's CFB mode; this one is checked against it
//! block for block (unit test) and against kcp-go's vectors.

use std::sync::OnceLock;

use cipher::consts::{U4, U8};
use cipher::inout::InOut;
use cipher::{
    Block, BlockBackend, BlockClosure, BlockDecrypt, BlockEncrypt, BlockSizeUser, ParBlocks,
    ParBlocksSizeUser,
};

/// FIPS 46-3 S-boxes S1..S8, rows of 16.
const S: [[u8; 64]; 8] = [
    [
        14, 4, 13, 1, 2, 15, 11, 8, 3, 10, 6, 12, 5, 9, 0, 7, 0, 15, 7, 4, 14, 2, 13, 1, 10, 6, 12,
        11, 9, 5, 3, 8, 4, 1, 14, 8, 13, 6, 2, 11, 15, 12, 9, 7, 3, 10, 5, 0, 15, 12, 8, 2, 4, 9,
        1, 7, 5, 11, 3, 14, 10, 0, 6, 13,
    ],
    [
        15, 1, 8, 14, 6, 11, 3, 4, 9, 7, 2, 13, 12, 0, 5, 10, 3, 13, 4, 7, 15, 2, 8, 14, 12, 0, 1,
        10, 6, 9, 11, 5, 0, 14, 7, 11, 10, 4, 13, 1, 5, 8, 12, 6, 9, 3, 2, 15, 13, 8, 10, 1, 3, 15,
        4, 2, 11, 6, 7, 12, 0, 5, 14, 9,
    ],
    [
        10, 0, 9, 14, 6, 3, 15, 5, 1, 13, 12, 7, 11, 4, 2, 8, 13, 7, 0, 9, 3, 4, 6, 10, 2, 8, 5,
        14, 12, 11, 15, 1, 13, 6, 4, 9, 8, 15, 3, 0, 11, 1, 2, 12, 5, 10, 14, 7, 1, 10, 13, 0, 6,
        9, 8, 7, 4, 15, 14, 3, 11, 5, 2, 12,
    ],
    [
        7, 13, 14, 3, 0, 6, 9, 10, 1, 2, 8, 5, 11, 12, 4, 15, 13, 8, 11, 5, 6, 15, 0, 3, 4, 7, 2,
        12, 1, 10, 14, 9, 10, 6, 9, 0, 12, 11, 7, 13, 15, 1, 3, 14, 5, 2, 8, 4, 3, 15, 0, 6, 10, 1,
        13, 8, 9, 4, 5, 11, 12, 7, 2, 14,
    ],
    [
        2, 12, 4, 1, 7, 10, 11, 6, 8, 5, 3, 15, 13, 0, 14, 9, 14, 11, 2, 12, 4, 7, 13, 1, 5, 0, 15,
        10, 3, 9, 8, 6, 4, 2, 1, 11, 10, 13, 7, 8, 15, 9, 12, 5, 6, 3, 0, 14, 11, 8, 12, 7, 1, 14,
        2, 13, 6, 15, 0, 9, 10, 4, 5, 3,
    ],
    [
        12, 1, 10, 15, 9, 2, 6, 8, 0, 13, 3, 4, 14, 7, 5, 11, 10, 15, 4, 2, 7, 12, 9, 5, 6, 1, 13,
        14, 0, 11, 3, 8, 9, 14, 15, 5, 2, 8, 12, 3, 7, 0, 4, 10, 1, 13, 11, 6, 4, 3, 2, 12, 9, 5,
        15, 10, 11, 14, 1, 7, 6, 0, 8, 13,
    ],
    [
        4, 11, 2, 14, 15, 0, 8, 13, 3, 12, 9, 7, 5, 10, 6, 1, 13, 0, 11, 7, 4, 9, 1, 10, 14, 3, 5,
        12, 2, 15, 8, 6, 1, 4, 11, 13, 12, 3, 7, 14, 10, 15, 6, 8, 0, 5, 9, 2, 6, 11, 13, 8, 1, 4,
        10, 7, 9, 5, 0, 15, 14, 2, 3, 12,
    ],
    [
        13, 2, 8, 4, 6, 15, 11, 1, 10, 9, 3, 14, 5, 0, 12, 7, 1, 15, 13, 8, 10, 3, 7, 4, 12, 5, 6,
        11, 0, 14, 9, 2, 7, 11, 4, 1, 9, 12, 14, 2, 0, 6, 10, 13, 15, 3, 5, 8, 2, 1, 14, 7, 4, 10,
        8, 13, 15, 12, 9, 0, 3, 5, 6, 11,
    ],
];

/// Permutation P (1-based source bit for each output bit, MSB first).
const P: [u8; 32] = [
    16, 7, 20, 21, 29, 12, 28, 17, 1, 15, 23, 26, 5, 18, 31, 10, 2, 8, 24, 14, 32, 27, 3, 9, 19,
    13, 30, 6, 22, 11, 4, 25,
];

/// Initial permutation IP.
const IP: [u8; 64] = [
    58, 50, 42, 34, 26, 18, 10, 2, 60, 52, 44, 36, 28, 20, 12, 4, 62, 54, 46, 38, 30, 22, 14, 6,
    64, 56, 48, 40, 32, 24, 16, 8, 57, 49, 41, 33, 25, 17, 9, 1, 59, 51, 43, 35, 27, 19, 11, 3, 61,
    53, 45, 37, 29, 21, 13, 5, 63, 55, 47, 39, 31, 23, 15, 7,
];

/// Permuted choice 1 (64-bit key -> 56 bits).
const PC1: [u8; 56] = [
    57, 49, 41, 33, 25, 17, 9, 1, 58, 50, 42, 34, 26, 18, 10, 2, 59, 51, 43, 35, 27, 19, 11, 3, 60,
    52, 44, 36, 63, 55, 47, 39, 31, 23, 15, 7, 62, 54, 46, 38, 30, 22, 14, 6, 61, 53, 45, 37, 29,
    21, 13, 5, 28, 20, 12, 4,
];

/// Permuted choice 2 (56 bits -> 48-bit round key).
const PC2: [u8; 48] = [
    14, 17, 11, 24, 1, 5, 3, 28, 15, 6, 21, 10, 23, 19, 12, 4, 26, 8, 16, 7, 27, 20, 13, 2, 41, 52,
    31, 37, 47, 55, 30, 40, 51, 45, 33, 48, 44, 49, 39, 56, 34, 53, 46, 42, 50, 36, 29, 32,
];

/// Left rotations of the two 28-bit key halves per round.
const SHIFTS: [u8; 16] = [1, 1, 2, 2, 2, 2, 2, 2, 1, 2, 2, 2, 2, 2, 2, 1];

/// Applies a bit permutation given as 1-based source positions, MSB first,
/// reading `in_bits` bits of `x`.
fn permute(x: u64, table: &[u8], in_bits: u32) -> u64 {
    table.iter().fold(0u64, |acc, &src| {
        (acc << 1) | ((x >> (in_bits - u32::from(src))) & 1)
    })
}

struct Tables {
    /// S-box i followed by P, indexed by the 6-bit S-box input.
    sp: [[u32; 64]; 8],
    /// IP and its inverse, split by input byte (byte 0 = most significant).
    ip: [[u64; 256]; 8],
    fp: [[u64; 256]; 8],
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Box<Tables>> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut sp = [[0u32; 64]; 8];
        for (i, table) in sp.iter_mut().enumerate() {
            for (v, out) in table.iter_mut().enumerate() {
                let row = ((v >> 4) & 2) | (v & 1);
                let col = (v >> 1) & 0xf;
                let s = u64::from(S[i][16 * row + col]) << (28 - 4 * i);
                *out = permute(s, &P, 32) as u32;
            }
        }
        let mut inverse = [0u8; 64];
        for (j, &src) in IP.iter().enumerate() {
            inverse[usize::from(src) - 1] = j as u8 + 1;
        }
        let byte_tables = |perm: &[u8; 64]| {
            let mut t = [[0u64; 256]; 8];
            for (b, table) in t.iter_mut().enumerate() {
                for (v, out) in table.iter_mut().enumerate() {
                    *out = permute((v as u64) << (56 - 8 * b), perm, 64);
                }
            }
            t
        };
        Box::new(Tables {
            sp,
            ip: byte_tables(&IP),
            fp: byte_tables(&inverse),
        })
    })
}

/// The sixteen 48-bit round keys of one DES key. Each is split into its
/// even and odd 6-bit chunks, placed at bit offsets 26, 18, 10 and 2 to line
/// up with the E-expansion windows used in `feistel`.
fn round_keys(key: &[u8]) -> [[u32; 2]; 16] {
    let mut k = [0u8; 8];
    k.copy_from_slice(key);
    let cd = permute(u64::from_be_bytes(k), &PC1, 64);
    let (mut c, mut d) = ((cd >> 28) as u32, (cd & 0x0fff_ffff) as u32);
    let rot28 = |x: u32, n: u8| ((x << n) | (x >> (28 - n))) & 0x0fff_ffff;
    let mut out = [[0u32; 2]; 16];
    for (round, shift) in SHIFTS.iter().enumerate() {
        c = rot28(c, *shift);
        d = rot28(d, *shift);
        let k48 = permute((u64::from(c) << 28) | u64::from(d), &PC2, 56);
        for i in 0..8 {
            let chunk = ((k48 >> (42 - 6 * i)) & 0x3f) as u32;
            out[round][i % 2] |= chunk << (26 - 8 * (i / 2));
        }
    }
    out
}

/// Triple DES EDE with three independent keys (Go's `NewTripleDESCipher`).
#[derive(Clone)]
pub struct TripleDes {
    /// Round keys in application order for encryption: k1 forward, k2
    /// reversed (its decryption), k3 forward.
    enc: [[[u32; 2]; 16]; 3],
    tables: &'static Tables,
}

impl TripleDes {
    /// Key setup from a 24-byte key (k1 || k2 || k3); `None` for any other
    /// length. Parity bits are ignored, as in Go.
    pub fn new(key: &[u8]) -> Option<TripleDes> {
        if key.len() != 24 {
            return None;
        }
        let k1 = round_keys(&key[0..8]);
        let mut k2 = round_keys(&key[8..16]);
        k2.reverse();
        let k3 = round_keys(&key[16..24]);
        Some(TripleDes {
            enc: [k1, k2, k3],
            tables: tables(),
        })
    }

    /// Sixteen DES rounds on `N` independent blocks at once: their
    /// dependency chains interleave, which hides the table-load latency.
    #[inline(always)]
    fn feistel<const N: usize>(&self, l: &mut [u32; N], r: &mut [u32; N], keys: &[[u32; 2]; 16]) {
        let sp = &self.tables.sp;
        for k in keys {
            for j in 0..N {
                // E expansion: with R rotated right by one, the even 6-bit
                // chunks of E(R) sit at bits 26, 18, 10, 2; rotated four
                // more bits left, so do the odd ones (the last wrapping).
                let e = r[j].rotate_right(1) ^ k[0];
                let o = r[j].rotate_left(3) ^ k[1];
                let w = |x: u32, sh: u32| ((x >> sh) & 0x3f) as usize;
                let f = sp[0][w(e, 26)]
                    | sp[1][w(o, 26)]
                    | sp[2][w(e, 18)]
                    | sp[3][w(o, 18)]
                    | sp[4][w(e, 10)]
                    | sp[5][w(o, 10)]
                    | sp[6][w(e, 2)]
                    | sp[7][w(o, 2)];
                let t = r[j];
                r[j] = l[j] ^ f;
                l[j] = t;
            }
        }
        // Undo the last swap: the pre-output is R16 || L16.
        core::mem::swap(l, r);
    }

    #[inline(always)]
    fn permute_bytes(t: &[[u64; 256]; 8], x: u64) -> u64 {
        x.to_be_bytes()
            .iter()
            .zip(t.iter())
            .fold(0, |acc, (&b, table)| acc | table[usize::from(b)])
    }

    #[inline(always)]
    fn crypt<const N: usize>(
        &self,
        blocks: [u64; N],
        order: [usize; 3],
        reverse: bool,
    ) -> [u64; N] {
        let t = self.tables;
        let mut l = [0u32; N];
        let mut r = [0u32; N];
        for j in 0..N {
            let x = Self::permute_bytes(&t.ip, blocks[j]);
            (l[j], r[j]) = ((x >> 32) as u32, x as u32);
        }
        // FP then IP between passes cancel, so the halves go straight on.
        for idx in order {
            let keys = &self.enc[idx];
            if reverse {
                let mut rev = *keys;
                rev.reverse();
                self.feistel(&mut l, &mut r, &rev);
            } else {
                self.feistel(&mut l, &mut r, keys);
            }
        }
        core::array::from_fn(|j| {
            Self::permute_bytes(&t.fp, (u64::from(l[j]) << 32) | u64::from(r[j]))
        })
    }
}

fn load(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(b);
    u64::from_be_bytes(w)
}

// Encryption gets a 4-block backend: kcp-go's CFB decryption computes the
// keystream of independent ciphertext blocks (`cfb.rs`), so four 48-round
// chains can run side by side. Decryption is only needed for completeness.

impl BlockSizeUser for TripleDes {
    type BlockSize = U8;
}

impl BlockEncrypt for TripleDes {
    fn encrypt_with_backend(&self, f: impl BlockClosure<BlockSize = U8>) {
        f.call(&mut Backend {
            des: self,
            decrypt: false,
        })
    }
}

impl BlockDecrypt for TripleDes {
    fn decrypt_with_backend(&self, f: impl BlockClosure<BlockSize = U8>) {
        f.call(&mut Backend {
            des: self,
            decrypt: true,
        })
    }
}

struct Backend<'a> {
    des: &'a TripleDes,
    decrypt: bool,
}

impl BlockSizeUser for Backend<'_> {
    type BlockSize = U8;
}

impl ParBlocksSizeUser for Backend<'_> {
    type ParBlocksSize = U4;
}

impl Backend<'_> {
    #[inline(always)]
    fn run<const N: usize>(&self, blocks: [u64; N]) -> [u64; N] {
        if self.decrypt {
            self.des.crypt(blocks, [2, 1, 0], true)
        } else {
            self.des.crypt(blocks, [0, 1, 2], false)
        }
    }
}

impl BlockBackend for Backend<'_> {
    #[inline(always)]
    fn proc_block(&mut self, mut block: InOut<'_, '_, Block<Self>>) {
        let [v] = self.run([load(block.get_in())]);
        block.get_out().copy_from_slice(&v.to_be_bytes());
    }

    #[inline(always)]
    fn proc_par_blocks(&mut self, mut blocks: InOut<'_, '_, ParBlocks<Self>>) {
        let input: [u64; 4] = core::array::from_fn(|j| load(&blocks.get_in()[j]));
        let out = self.run(input);
        for (b, v) in blocks.get_out().iter_mut().zip(out) {
            b.copy_from_slice(&v.to_be_bytes());
        }
    }
}

impl cipher::BlockCipher for TripleDes {}

#[cfg(test)]
mod tests {
    use super::*;
    use cipher::generic_array::GenericArray;
    use cipher::{BlockDecrypt, BlockEncrypt, KeyInit};

    #[test]
    fn s_box_rows_are_permutations() {
        for s in &S {
            for row in s.chunks_exact(16) {
                let mut seen = [false; 16];
                for &v in row {
                    assert!(!seen[usize::from(v)]);
                    seen[usize::from(v)] = true;
                }
            }
        }
    }

    #[test]
    fn matches_des_crate() {
        for seed in 0..8u8 {
            let key: Vec<u8> = (0..24u8)
                .map(|i| i.wrapping_mul(61).wrapping_add(seed.wrapping_mul(17)))
                .collect();
            let ours = TripleDes::new(&key).expect("24 bytes");
            let theirs = des::TdesEde3::new_from_slice(&key).expect("24 bytes");
            let mut blk = GenericArray::from([seed; 8]);
            for _ in 0..64 {
                let mut a = blk;
                let mut b = blk;
                ours.encrypt_block(&mut a);
                theirs.encrypt_block(&mut b);
                assert_eq!(a, b, "seed {seed}");
                ours.decrypt_block(&mut a);
                assert_eq!(a, blk);
                blk = b;
            }
        }
        assert!(TripleDes::new(&[0u8; 16]).is_none());
    }
}
