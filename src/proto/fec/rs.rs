//! Reed-Solomon erasure code over GF(2^8), byte-identical to
//! `reedsolomon.New(data, parity)` of klauspost/reedsolomon (no options), the
//! codec kcp-go uses (§4.1), and to the `reed-solomon-erasure` crate's
//! `galois_8` (proved by tests/fec_rs.rs and the Go vectors).
//!
//! Encoding matrix: the (total x data) Vandermonde matrix with entry (r, c) =
//! r^c, multiplied by the inverse of its top square so the top becomes the
//! identity. Only the parity rows are stored.

use super::gf::{self, KernelArgsError};
use crate::error::{Error, Result};

/// Largest `data + parity` the GF(2^8) code supports. klauspost switches to a
/// different (GF(2^16)) code above it, which kcp-go would then use.
pub const MAX_TOTAL_SHARDS: usize = 256;

/// Slots of the decode-matrix cache (direct mapped by the set of shards used).
const DECODE_CACHE_SLOTS: usize = 64;

/// Bit set of up to 256 shard positions.
type Mask = [u64; 4];

/// Inverted matrices of recent loss patterns, in flat buffers: every
/// decoder that ever recovers keeps one, so its size counts per session.
/// Direct mapped: slot `cache_slot(key)` holds the last pattern hashed there.
#[derive(Debug, Clone, Default)]
struct DecodeCache {
    /// Per slot: 1 + index of its row block in `rows`, 0 while unused
    /// (blocks are appended in order of first use, so a code that sees few
    /// patterns keeps few blocks).
    block_of: Vec<u8>,
    /// Per slot: its key, `words` u64s (the key's upper words are zero).
    keys: Vec<u64>,
    /// Row blocks of `block` bytes: the rows of the inverted sub-matrix for
    /// the missing data shards, in ascending position order, `data` bytes
    /// each.
    rows: Vec<u8>,
}

/// A Reed-Solomon code with `data` data shards and `parity` parity shards.
///
/// Shards live in flat buffers; all shards of one operation have the same
/// length. Reconstruction caches the inverted matrices it computes, so steady
/// loss patterns cost no matrix inversion.
#[derive(Clone)]
pub struct ReedSolomon {
    data: usize,
    parity: usize,
    /// `parity x data` coefficients, row-major.
    parity_rows: Vec<u8>,
    /// The same, column-major: data shard `i`'s coefficients for every
    /// parity shard, contiguous (for [`Self::accumulate_data_shard`]).
    parity_cols: Vec<u8>,
    /// Empty until the first reconstruction: an encoder never needs it.
    cache: DecodeCache,
    // Scratch, reused between calls.
    sub: Vec<u8>,
    inv: Vec<u8>,
    inv_scratch: InvertScratch,
    missing: Vec<usize>,
    offs: Vec<usize>,
}

impl std::fmt::Debug for ReedSolomon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReedSolomon")
            .field("data_shards", &self.data)
            .field("parity_shards", &self.parity)
            .finish_non_exhaustive()
    }
}

impl ReedSolomon {
    /// A code for `data` + `parity` shards. Both must be at least 1 and the
    /// total at most [`MAX_TOTAL_SHARDS`] (`Error::InvalidConfig` otherwise).
    pub fn new(data: usize, parity: usize) -> Result<ReedSolomon> {
        super::checked_layout("Reed-Solomon", data, parity)?;
        let parity_rows = build_parity_rows(data, parity)
            .ok_or_else(|| Error::InvalidConfig("singular Vandermonde matrix".into()))?;
        let parity_cols = (0..data * parity)
            .map(|k| parity_rows[(k % parity) * data + k / parity])
            .collect();
        Ok(ReedSolomon {
            data,
            parity,
            parity_rows,
            parity_cols,
            cache: DecodeCache::default(),
            sub: Vec::new(),
            inv: Vec::new(),
            inv_scratch: InvertScratch::default(),
            missing: Vec::with_capacity(data),
            offs: Vec::new(),
        })
    }

    /// Number of data shards.
    pub fn data_shards(&self) -> usize {
        self.data
    }

    /// Number of parity shards.
    pub fn parity_shards(&self) -> usize {
        self.parity
    }

    /// Coefficient `(row, col)` of the encoding matrix (`row < data + parity`,
    /// `col < data`); rows below `data` are the identity.
    pub fn matrix_coefficient(&self, row: usize, col: usize) -> u8 {
        if row < self.data {
            u8::from(row == col)
        } else {
            self.parity_rows[(row - self.data) * self.data + col]
        }
    }

    /// Computes the parity shards. `shards` holds `data + parity` shards of
    /// `shard_len` bytes back to back: the data shards first, then the parity
    /// shards, which are overwritten.
    pub fn encode(&mut self, shards: &mut [u8], shard_len: usize) -> Result<()> {
        self.encode_with(gf::KernelPath::best(), shards, shard_len)
    }

    /// [`encode`](Self::encode) on a chosen kernel path (falls back to
    /// `Scalar` if the CPU lacks it); for benchmarks and tests.
    pub fn encode_with(
        &mut self,
        path: gf::KernelPath,
        shards: &mut [u8],
        shard_len: usize,
    ) -> Result<()> {
        let total = self.data + self.parity;
        let need = total.checked_mul(shard_len).ok_or(Error::BufferTooSmall {
            need: usize::MAX,
            have: shards.len(),
        })?;
        if shards.len() < need {
            return Err(Error::BufferTooSmall {
                need,
                have: shards.len(),
            });
        }
        let (src, dst) = shards.split_at_mut(self.data * shard_len);
        self.offs.clear();
        self.offs.extend((0..self.data).map(|i| i * shard_len));
        self.offs.extend((0..self.parity).map(|j| j * shard_len));
        let (src_offs, dst_offs) = self.offs.split_at(self.data);
        gf::matmul_with(
            path,
            &self.parity_rows,
            src,
            src_offs,
            dst,
            dst_offs,
            shard_len,
        )
        .map_err(|_| Error::InvalidConfig("inconsistent shard layout".into()))
    }

    /// Adds data shard `i` (`src[src_off..][..len]`), times its column of
    /// the encoding matrix, into every parity shard (`dst` at `dst_offs`,
    /// one offset per parity shard). The encoder's hot path: parity is
    /// linear in the data, so summing this over a group's data shards
    /// (starting from zeroed parity, shorter shards counting as zero padded)
    /// gives exactly what [`encode`](Self::encode) computes, without keeping
    /// the data shards until the group is complete.
    pub(crate) fn accumulate_data_shard(
        &self,
        i: usize,
        src: &[u8],
        src_off: usize,
        dst: &mut [u8],
        dst_offs: &[usize],
        len: usize,
    ) -> std::result::Result<(), KernelArgsError> {
        let p = self.parity;
        if i >= self.data || dst_offs.len() != p {
            return Err(KernelArgsError);
        }
        gf::matmul_acc(
            &self.parity_cols[i * p..(i + 1) * p],
            src,
            &[src_off],
            dst,
            dst_offs,
            len,
        )
    }

    /// Rebuilds missing data shards like klauspost's `ReconstructData`.
    /// `shards` holds `data + parity` shards of `shard_len` bytes back to back;
    /// `present[i]` says whether shard `i` holds valid bytes. Missing data
    /// shards are overwritten; missing parity shards are left alone. Returns
    /// how many data shards were rebuilt. Fails (`Error::InvalidConfig`) when
    /// fewer than `data` shards are present or `present` has the wrong length.
    /// (This convenience form allocates small scratch per call; the FEC
    /// decoder uses an allocation-free internal path.)
    pub fn reconstruct_data(
        &mut self,
        shards: &mut [u8],
        shard_len: usize,
        present: &[bool],
    ) -> Result<usize> {
        let total = self.data + self.parity;
        let need = total.checked_mul(shard_len).ok_or(Error::BufferTooSmall {
            need: usize::MAX,
            have: shards.len(),
        })?;
        if shards.len() < need {
            return Err(Error::BufferTooSmall {
                need,
                have: shards.len(),
            });
        }
        if present.len() != total {
            return Err(Error::InvalidConfig(format!(
                "present has {} entries, want {total}",
                present.len()
            )));
        }
        let positions: Vec<usize> = (0..total).filter(|&i| present[i]).collect();
        if positions.len() < self.data {
            return Err(Error::InvalidConfig(format!(
                "{} shards present, at least {} needed",
                positions.len(),
                self.data
            )));
        }
        let missing: Vec<usize> = (0..self.data).filter(|&i| !present[i]).collect();
        if missing.is_empty() {
            return Ok(0);
        }
        // Rebuilt shards go to a side buffer, then into place: the kernel's
        // input and output must be distinct slices.
        let mut out = vec![0u8; missing.len() * shard_len];
        let out_offs: Vec<usize> = (0..missing.len()).map(|k| k * shard_len).collect();
        let src_offs: Vec<usize> = positions.iter().map(|&p| p * shard_len).collect();
        self.reconstruct_offsets(
            &positions, shards, &src_offs, &mut out, &out_offs, shard_len,
        )
        .map_err(|_| Error::InvalidConfig("inconsistent shard layout".into()))?;
        for (k, &m) in missing.iter().enumerate() {
            shards[m * shard_len..(m + 1) * shard_len]
                .copy_from_slice(&out[k * shard_len..(k + 1) * shard_len]);
        }
        Ok(missing.len())
    }

    /// The decoder's hot path. `positions` are the present shard positions in
    /// ascending order (at least `data`), `src_offs[i]` where shard
    /// `positions[i]` starts in `src`. Like klauspost, the first `data`
    /// present shards are used. Rebuilt data shards are written to `dst` at
    /// `dst_offs`, one per missing data position in ascending order.
    pub(crate) fn reconstruct_offsets(
        &mut self,
        positions: &[usize],
        src: &[u8],
        src_offs: &[usize],
        dst: &mut [u8],
        dst_offs: &[usize],
        len: usize,
    ) -> std::result::Result<(), KernelArgsError> {
        let d = self.data;
        let total = d + self.parity;
        if positions.len() < d || src_offs.len() != positions.len() {
            return Err(KernelArgsError);
        }
        let valid = &positions[..d];
        let mut key: Mask = [0; 4];
        let mut prev = None;
        for &p in valid {
            // Strictly ascending and in range, so `valid` is a set.
            if p >= total || prev.is_some_and(|q| p <= q) {
                return Err(KernelArgsError);
            }
            prev = Some(p);
            key[p / 64] |= 1 << (p % 64);
        }
        self.missing.clear();
        self.missing
            .extend((0..d).filter(|&i| key[i / 64] & (1 << (i % 64)) == 0));
        if self.missing.len() != dst_offs.len() {
            return Err(KernelArgsError);
        }
        if self.missing.is_empty() {
            return Ok(());
        }
        let words = self.key_words();
        if self.cache.block_of.is_empty() {
            self.cache.block_of = vec![0; DECODE_CACHE_SLOTS];
            self.cache.keys = vec![0; DECODE_CACHE_SLOTS * words];
        }
        let slot = cache_slot(&key);
        let hit = self.cache.block_of[slot] != 0
            && self.cache.keys[slot * words..(slot + 1) * words] == key[..words];
        if !hit {
            self.fill_cache_slot(slot, key, valid)?;
        }
        let at = (self.cache.block_of[slot] as usize - 1) * self.block_len();
        let rows = &self.cache.rows[at..at + self.missing.len() * d];
        gf::matmul(rows, src, &src_offs[..d], dst, dst_offs, len)
    }

    fn fill_cache_slot(
        &mut self,
        slot: usize,
        key: Mask,
        valid: &[usize],
    ) -> std::result::Result<(), KernelArgsError> {
        let d = self.data;
        self.sub.clear();
        for &r in valid {
            for c in 0..d {
                let v = if r < d {
                    u8::from(r == c)
                } else {
                    self.parity_rows[(r - d) * d + c]
                };
                self.sub.push(v);
            }
        }
        if !invert(&self.sub, &mut self.inv, d, &mut self.inv_scratch) {
            return Err(KernelArgsError);
        }
        let block = self.block_len();
        let words = self.key_words();
        let cache = &mut self.cache;
        if cache.block_of[slot] == 0 {
            // A new block, allocated once per slot: at most
            // DECODE_CACHE_SLOTS small allocations over the code's life.
            cache.rows.reserve_exact(block);
            cache.rows.resize(cache.rows.len() + block, 0);
            cache.block_of[slot] = (cache.rows.len() / block) as u8;
        }
        let at = (cache.block_of[slot] as usize - 1) * block;
        for (k, &m) in self.missing.iter().enumerate() {
            cache.rows[at + k * d..at + (k + 1) * d].copy_from_slice(&self.inv[m * d..(m + 1) * d]);
        }
        cache.keys[slot * words..(slot + 1) * words].copy_from_slice(&key[..words]);
        Ok(())
    }

    /// Bytes of one cached row block: the most rows any pattern needs.
    fn block_len(&self) -> usize {
        self.parity.min(self.data) * self.data
    }

    /// u64 words that can be non-zero in a key.
    fn key_words(&self) -> usize {
        (self.data + self.parity).div_ceil(64)
    }
}

fn cache_slot(key: &Mask) -> usize {
    let mut h = 0u64;
    for &w in key {
        h = (h ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    (h >> 58) as usize % DECODE_CACHE_SLOTS
}

/// Scratch of [`invert`], kept by the codec so cache misses do not allocate.
#[derive(Debug, Clone, Default)]
struct InvertScratch {
    /// The augmented matrix `[m | I]`, `n x 2n`.
    aug: Vec<u8>,
    pivot: Vec<u8>,
    coefs: Vec<u8>,
    offs: Vec<usize>,
}

/// Inverts the `n x n` matrix `m` into `out` by Gauss-Jordan elimination on
/// `[m | I]`. Returns false if it is singular. The inverse is unique, so the
/// elimination order does not affect the result. Row eliminations for one
/// column are a single multiply-accumulate kernel call (one source row, all
/// other rows as outputs), which keeps large (e.g. 128x128) inversions fast.
fn invert(m: &[u8], out: &mut Vec<u8>, n: usize, s: &mut InvertScratch) -> bool {
    let w = 2 * n;
    s.aug.clear();
    s.aug.resize(n * w, 0);
    for r in 0..n {
        s.aug[r * w..r * w + n].copy_from_slice(&m[r * n..(r + 1) * n]);
        s.aug[r * w + n + r] = 1;
    }
    for col in 0..n {
        let Some(pivot) = (col..n).find(|&r| s.aug[r * w + col] != 0) else {
            return false;
        };
        if pivot != col {
            for c in 0..w {
                s.aug.swap(pivot * w + c, col * w + c);
            }
        }
        let Some(scale) = gf::inv(s.aug[col * w + col]) else {
            return false;
        };
        // Columns left of `col` are already zero in the pivot row.
        for v in &mut s.aug[col * w + col..(col + 1) * w] {
            *v = gf::mul(*v, scale);
        }
        s.pivot.clear();
        s.pivot
            .extend_from_slice(&s.aug[col * w + col..(col + 1) * w]);
        s.coefs.clear();
        s.offs.clear();
        for r in (0..n).filter(|&r| r != col) {
            let f = s.aug[r * w + col];
            if f != 0 {
                s.coefs.push(f);
                s.offs.push(r * w + col);
            }
        }
        if gf::matmul_acc(&s.coefs, &s.pivot, &[0], &mut s.aug, &s.offs, w - col).is_err() {
            return false;
        }
    }
    out.clear();
    for r in 0..n {
        out.extend_from_slice(&s.aug[r * w + n..(r + 1) * w]);
    }
    true
}

/// Parity rows (`parity x data`) of the systematic Vandermonde code:
/// the bottom rows of the Vandermonde matrix times the inverse of its top.
fn build_parity_rows(data: usize, parity: usize) -> Option<Vec<u8>> {
    let vand = |r: usize, c: usize| gf::exp(r as u8, c);
    let top: Vec<u8> = (0..data * data).map(|i| vand(i / data, i % data)).collect();
    let mut top_inv = Vec::new();
    if !invert(&top, &mut top_inv, data, &mut InvertScratch::default()) {
        return None;
    }
    let bottom: Vec<u8> = (0..parity * data)
        .map(|i| vand(data + i / data, i % data))
        .collect();
    let src_offs: Vec<usize> = (0..data).map(|k| k * data).collect();
    let dst_offs: Vec<usize> = (0..parity).map(|j| j * data).collect();
    let mut rows = vec![0u8; parity * data];
    gf::matmul(&bottom, &top_inv, &src_offs, &mut rows, &dst_offs, data).ok()?;
    Some(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_configs() {
        assert!(matches!(
            ReedSolomon::new(0, 1),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            ReedSolomon::new(1, 0),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            ReedSolomon::new(200, 57),
            Err(Error::InvalidConfig(_))
        ));
        assert!(ReedSolomon::new(128, 128).is_ok());
        assert!(ReedSolomon::new(255, 1).is_ok());
    }

    #[test]
    fn single_data_shard_parity_is_a_copy() {
        // With one data shard every normalised Vandermonde row is [1].
        let rs = ReedSolomon::new(1, 3).unwrap();
        for r in 1..4 {
            assert_eq!(rs.matrix_coefficient(r, 0), 1);
        }
    }

    #[test]
    fn accumulated_parity_matches_encode() {
        let (d, p, len) = (5, 3, 41);
        let mut rs = ReedSolomon::new(d, p).unwrap();
        let mut shards: Vec<u8> = (0..(d + p) * len).map(|i| (i * 13 + 1) as u8).collect();
        // Shorter shards are zero padded, as the FEC encoder pads them.
        let lens = [41, 7, 0, 41, 30];
        for (i, &l) in lens.iter().enumerate() {
            shards[i * len + l..(i + 1) * len].fill(0);
        }
        rs.encode(&mut shards, len).unwrap();
        let mut acc = vec![0u8; p * len];
        let offs: Vec<usize> = (0..p).map(|j| j * len).collect();
        for (i, &l) in lens.iter().enumerate() {
            rs.accumulate_data_shard(i, &shards, i * len, &mut acc, &offs, l)
                .unwrap();
        }
        assert_eq!(acc, shards[d * len..]);
        assert!(rs
            .accumulate_data_shard(d, &shards, 0, &mut acc, &offs, 1)
            .is_err());
    }

    #[test]
    fn reconstruct_uses_cache_consistently() {
        let mut rs = ReedSolomon::new(4, 2).unwrap();
        let len = 37;
        let mut shards: Vec<u8> = (0..6 * len).map(|i| (i * 7 + 3) as u8).collect();
        rs.encode(&mut shards, len).unwrap();
        let orig = shards.clone();
        for _ in 0..3 {
            let mut s = orig.clone();
            s[len..3 * len].fill(0xEE);
            let present = [true, false, false, true, true, true];
            assert_eq!(rs.reconstruct_data(&mut s, len, &present).unwrap(), 2);
            assert_eq!(s, orig);
        }
    }
}
