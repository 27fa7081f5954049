//! Table-driven Twofish (Schneier et al., 1998), as Go's x/crypto/twofish
//! computes it: the key-dependent S-boxes and the MDS matrix are folded into
//! four 256-entry tables at key setup, so a round is eight table lookups.
//!
//! The RustCrypto `twofish` crate evaluates the S-box chain on every round
//! and runs at about 1 MB/s in kcp-go's CFB mode, some 50x slower than Go;
//! this one is checked against it block for block (unit test) and against
//! kcp-go's vectors.

use cipher::consts::{U1, U16, U4};
use cipher::inout::InOut;
use cipher::{
    Block, BlockBackend, BlockClosure, BlockDecrypt, BlockEncrypt, BlockSizeUser, ParBlocks,
    ParBlocksSizeUser,
};

/// The 4-bit permutations t0..t3 defining q0 and q1 (Twofish paper, section 4.3.5).
const Q_NIBBLES: [[[u8; 16]; 4]; 2] = [
    [
        [8, 1, 7, 13, 6, 15, 3, 2, 0, 11, 5, 9, 14, 12, 10, 4],
        [14, 12, 11, 8, 1, 2, 3, 5, 15, 4, 10, 6, 7, 0, 9, 13],
        [11, 10, 5, 14, 6, 13, 9, 0, 12, 8, 15, 3, 2, 4, 7, 1],
        [13, 7, 15, 4, 1, 2, 6, 14, 9, 11, 3, 0, 8, 5, 12, 10],
    ],
    [
        [2, 8, 11, 13, 15, 7, 6, 14, 3, 1, 9, 4, 0, 10, 12, 5],
        [1, 14, 2, 11, 4, 12, 3, 7, 6, 13, 10, 5, 15, 9, 0, 8],
        [4, 12, 7, 5, 1, 6, 9, 10, 0, 14, 13, 8, 2, 11, 3, 15],
        [11, 9, 5, 1, 12, 3, 13, 14, 6, 4, 7, 15, 2, 0, 8, 10],
    ],
];

/// MDS matrix over GF(2^8) mod x^8+x^6+x^5+x^3+1.
const MDS: [[u8; 4]; 4] = [
    [0x01, 0xef, 0x5b, 0x5b],
    [0x5b, 0xef, 0xef, 0x01],
    [0xef, 0x5b, 0x01, 0xef],
    [0xef, 0x01, 0xef, 0x5b],
];
const MDS_POLY: u16 = 0x169;

/// Reed-Solomon matrix over GF(2^8) mod x^8+x^6+x^3+x^2+1.
const RS: [[u8; 8]; 4] = [
    [0x01, 0xa4, 0x55, 0x87, 0x5a, 0x58, 0xdb, 0x9e],
    [0xa4, 0x56, 0x82, 0xf3, 0x1e, 0xc6, 0x68, 0xe5],
    [0x02, 0xa1, 0xfc, 0xc1, 0x47, 0xae, 0x3d, 0x19],
    [0xa4, 0x55, 0x87, 0x5a, 0x58, 0xdb, 0x9e, 0x03],
];
const RS_POLY: u16 = 0x14d;

fn gf_mul(a: u8, b: u8, poly: u16) -> u8 {
    let (mut a, mut b, mut r) = (a as u16, b, 0u16);
    while b != 0 {
        if b & 1 != 0 {
            r ^= a;
        }
        a <<= 1;
        if a & 0x100 != 0 {
            a ^= poly;
        }
        b >>= 1;
    }
    r as u8
}

fn q_byte(which: usize, x: u8) -> u8 {
    let t = &Q_NIBBLES[which];
    let ror4 = |v: u8| ((v >> 1) | (v << 3)) & 0xf;
    let (a0, b0) = (x >> 4, x & 0xf);
    let a1 = a0 ^ b0;
    let b1 = (a0 ^ ror4(b0) ^ (a0 << 3)) & 0xf;
    let (a2, b2) = (t[0][a1 as usize], t[1][b1 as usize]);
    let a3 = a2 ^ b2;
    let b3 = (a2 ^ ror4(b2) ^ (a2 << 3)) & 0xf;
    let (a4, b4) = (t[2][a3 as usize], t[3][b3 as usize]);
    (b4 << 4) | a4
}

struct Q {
    q: [[u8; 256]; 2],
}

impl Q {
    fn new() -> Q {
        let mut q = [[0u8; 256]; 2];
        for (which, table) in q.iter_mut().enumerate() {
            for (x, v) in table.iter_mut().enumerate() {
                *v = q_byte(which, x as u8);
            }
        }
        Q { q }
    }

    /// The S-box chain of byte position `pos` (0..4) of h(), keyed by the
    /// word list `l` (2, 3 or 4 words), before the MDS multiplication.
    fn chain(&self, pos: usize, x: u8, l: &[u32]) -> u8 {
        let (q0, q1) = (&self.q[0], &self.q[1]);
        let b = |i: usize| l[i].to_le_bytes()[pos];
        let mut y = x;
        if l.len() == 4 {
            y = [q1, q0, q0, q1][pos][y as usize] ^ b(3);
        }
        if l.len() >= 3 {
            y = [q1, q1, q0, q0][pos][y as usize] ^ b(2);
        }
        let (first, second, third) = match pos {
            0 => (q0, q0, q1),
            1 => (q1, q0, q0),
            2 => (q0, q1, q1),
            _ => (q1, q1, q0),
        };
        third[(second[(first[y as usize] ^ b(1)) as usize] ^ b(0)) as usize]
    }

    fn h(&self, x: u32, l: &[u32]) -> u32 {
        let xb = x.to_le_bytes();
        let y: [u8; 4] = core::array::from_fn(|pos| self.chain(pos, xb[pos], l));
        mds(y)
    }
}

fn mds_column(col: usize, v: u8) -> u32 {
    u32::from_le_bytes(core::array::from_fn(|row| {
        gf_mul(MDS[row][col], v, MDS_POLY)
    }))
}

fn mds(y: [u8; 4]) -> u32 {
    (0..4).fold(0, |acc, col| acc ^ mds_column(col, y[col]))
}

/// A Twofish key: 40 round subkeys and the four key-dependent tables.
#[derive(Clone)]
pub struct Twofish {
    k: [u32; 40],
    t: [[u32; 256]; 4],
}

impl Twofish {
    /// Key setup for a 16-, 24- or 32-byte key; `None` for other lengths.
    pub fn new(key: &[u8]) -> Option<Twofish> {
        let k = match key.len() {
            16 | 24 | 32 => key.len() / 8,
            _ => return None,
        };
        let q = Q::new();
        let mut me = [0u32; 4];
        let mut mo = [0u32; 4];
        let mut s = [0u32; 4];
        for i in 0..k {
            let word = |j: usize| {
                let mut b = [0u8; 4];
                b.copy_from_slice(&key[4 * j..4 * j + 4]);
                u32::from_le_bytes(b)
            };
            me[i] = word(2 * i);
            mo[i] = word(2 * i + 1);
            let chunk = &key[8 * i..8 * i + 8];
            let rs: [u8; 4] = core::array::from_fn(|row| {
                RS[row]
                    .iter()
                    .zip(chunk)
                    .fold(0u8, |acc, (&r, &kb)| acc ^ gf_mul(r, kb, RS_POLY))
            });
            // S is used in reverse order: S = (S[k-1], ..., S[0]).
            s[k - 1 - i] = u32::from_le_bytes(rs);
        }
        let (me, mo, s) = (&me[..k], &mo[..k], &s[..k]);
        const RHO: u32 = 0x0101_0101;
        let mut sub = [0u32; 40];
        for i in 0..20u32 {
            let a = q.h((2 * i).wrapping_mul(RHO), me);
            let b = q.h((2 * i + 1).wrapping_mul(RHO), mo).rotate_left(8);
            sub[2 * i as usize] = a.wrapping_add(b);
            sub[2 * i as usize + 1] = a.wrapping_add(b.wrapping_mul(2)).rotate_left(9);
        }
        let mut t = [[0u32; 256]; 4];
        for (pos, table) in t.iter_mut().enumerate() {
            for (x, v) in table.iter_mut().enumerate() {
                *v = mds_column(pos, q.chain(pos, x as u8, s));
            }
        }
        Some(Twofish { k: sub, t })
    }

    #[inline(always)]
    fn g(&self, x: u32) -> u32 {
        let b = x.to_le_bytes();
        self.t[0][b[0] as usize]
            ^ self.t[1][b[1] as usize]
            ^ self.t[2][b[2] as usize]
            ^ self.t[3][b[3] as usize]
    }

    /// Encrypts `N` independent blocks (as little-endian words), their
    /// rounds interleaved to hide the table-load latency.
    #[inline(always)]
    fn encrypt_lanes<const N: usize>(&self, w: &mut [[u32; 4]; N]) {
        let k = &self.k;
        for b in w.iter_mut() {
            for (x, kk) in b.iter_mut().zip(&k[..4]) {
                *x ^= kk;
            }
        }
        for round in 0..8 {
            // Two rounds per iteration so the word swap is a renaming:
            // b = [r0, r1, r2, r3].
            for b in w.iter_mut() {
                let t0 = self.g(b[0]);
                let t1 = self.g(b[1].rotate_left(8));
                let f0 = t0.wrapping_add(t1).wrapping_add(k[4 * round + 8]);
                let f1 = t0
                    .wrapping_add(t1.wrapping_mul(2))
                    .wrapping_add(k[4 * round + 9]);
                b[2] = (b[2] ^ f0).rotate_right(1);
                b[3] = b[3].rotate_left(1) ^ f1;
            }
            for b in w.iter_mut() {
                let t0 = self.g(b[2]);
                let t1 = self.g(b[3].rotate_left(8));
                let f0 = t0.wrapping_add(t1).wrapping_add(k[4 * round + 10]);
                let f1 = t0
                    .wrapping_add(t1.wrapping_mul(2))
                    .wrapping_add(k[4 * round + 11]);
                b[0] = (b[0] ^ f0).rotate_right(1);
                b[1] = b[1].rotate_left(1) ^ f1;
            }
        }
        for b in w.iter_mut() {
            *b = [b[2] ^ k[4], b[3] ^ k[5], b[0] ^ k[6], b[1] ^ k[7]];
        }
    }

    #[inline(always)]
    fn decrypt_words(&self, w: [u32; 4]) -> [u32; 4] {
        let k = &self.k;
        let (mut r2, mut r3, mut r0, mut r1) = (w[0] ^ k[4], w[1] ^ k[5], w[2] ^ k[6], w[3] ^ k[7]);
        for round in (0..8).rev() {
            let t0 = self.g(r2);
            let t1 = self.g(r3.rotate_left(8));
            let f0 = t0.wrapping_add(t1).wrapping_add(k[4 * round + 10]);
            let f1 = t0
                .wrapping_add(t1.wrapping_mul(2))
                .wrapping_add(k[4 * round + 11]);
            r0 = r0.rotate_left(1) ^ f0;
            r1 = (r1 ^ f1).rotate_right(1);
            let t0 = self.g(r0);
            let t1 = self.g(r1.rotate_left(8));
            let f0 = t0.wrapping_add(t1).wrapping_add(k[4 * round + 8]);
            let f1 = t0
                .wrapping_add(t1.wrapping_mul(2))
                .wrapping_add(k[4 * round + 9]);
            r2 = r2.rotate_left(1) ^ f0;
            r3 = (r3 ^ f1).rotate_right(1);
        }
        [r0 ^ k[0], r1 ^ k[1], r2 ^ k[2], r3 ^ k[3]]
    }
}

fn load(b: &[u8]) -> [u32; 4] {
    core::array::from_fn(|i| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&b[4 * i..4 * i + 4]);
        u32::from_le_bytes(w)
    })
}

fn store(b: &mut [u8], w: [u32; 4]) {
    for (chunk, v) in b.chunks_exact_mut(4).zip(w) {
        chunk.copy_from_slice(&v.to_le_bytes());
    }
}

// Encryption gets a 4-block backend: kcp-go's CFB decryption computes the
// keystream of independent ciphertext blocks (`cfb.rs`), so four round
// chains can run side by side.

impl BlockSizeUser for Twofish {
    type BlockSize = U16;
}

impl BlockEncrypt for Twofish {
    fn encrypt_with_backend(&self, f: impl BlockClosure<BlockSize = U16>) {
        f.call(&mut EncBackend(self))
    }
}

impl BlockDecrypt for Twofish {
    fn decrypt_with_backend(&self, f: impl BlockClosure<BlockSize = U16>) {
        f.call(&mut DecBackend(self))
    }
}

struct EncBackend<'a>(&'a Twofish);

impl BlockSizeUser for EncBackend<'_> {
    type BlockSize = U16;
}

impl ParBlocksSizeUser for EncBackend<'_> {
    type ParBlocksSize = U4;
}

impl BlockBackend for EncBackend<'_> {
    #[inline(always)]
    fn proc_block(&mut self, mut block: InOut<'_, '_, Block<Self>>) {
        let mut w = [load(block.get_in())];
        self.0.encrypt_lanes(&mut w);
        store(block.get_out(), w[0]);
    }

    #[inline(always)]
    fn proc_par_blocks(&mut self, mut blocks: InOut<'_, '_, ParBlocks<Self>>) {
        let mut w: [[u32; 4]; 4] = core::array::from_fn(|j| load(&blocks.get_in()[j]));
        self.0.encrypt_lanes(&mut w);
        for (b, v) in blocks.get_out().iter_mut().zip(w) {
            store(b, v);
        }
    }
}

struct DecBackend<'a>(&'a Twofish);

impl BlockSizeUser for DecBackend<'_> {
    type BlockSize = U16;
}

impl ParBlocksSizeUser for DecBackend<'_> {
    type ParBlocksSize = U1;
}

impl BlockBackend for DecBackend<'_> {
    #[inline(always)]
    fn proc_block(&mut self, mut block: InOut<'_, '_, Block<Self>>) {
        let w = self.0.decrypt_words(load(block.get_in()));
        store(block.get_out(), w);
    }
}

impl cipher::BlockCipher for Twofish {}

#[cfg(test)]
mod tests {
    use super::*;
    use cipher::generic_array::GenericArray;
    use cipher::KeyInit;

    #[test]
    fn matches_twofish_crate() {
        for klen in [16usize, 24, 32] {
            for seed in 0..4u8 {
                let key: Vec<u8> = (0..klen as u8)
                    .map(|i| i.wrapping_mul(37).wrapping_add(seed.wrapping_mul(91)))
                    .collect();
                let ours = Twofish::new(&key).expect("valid length");
                let theirs = ::twofish::Twofish::new_from_slice(&key).expect("valid length");
                let mut blk = GenericArray::from([seed; 16]);
                for _ in 0..50 {
                    let mut a = blk;
                    let mut b = blk;
                    ours.encrypt_block(&mut a);
                    theirs.encrypt_block(&mut b);
                    assert_eq!(a, b, "key {klen} seed {seed}");
                    ours.decrypt_block(&mut a);
                    assert_eq!(a, blk);
                    blk = b;
                }
            }
        }
        assert!(Twofish::new(&[0u8; 20]).is_none());
    }

    /// Known answer from the Twofish paper: 128-bit all-zero key and block.
    #[test]
    fn known_answer() {
        let tf = Twofish::new(&[0u8; 16]).expect("valid length");
        let mut b = GenericArray::from([0u8; 16]);
        tf.encrypt_block(&mut b);
        assert_eq!(
            b.as_slice(),
            &[
                0x9f, 0x58, 0x9f, 0x5c, 0xf6, 0x12, 0x2c, 0x32, 0xb6, 0xbf, 0xec, 0x2f, 0x2a, 0xe8,
                0xc3, 0x5a
            ]
        );
    }
}
