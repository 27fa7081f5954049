//! Ring-indexed bit sets over send-buffer sequence numbers.
//!
//! A position is `sn & mask`; the capacity is kept at least 64 larger than the
//! span `snd_nxt - snd_una`, so two live sequence numbers never share a
//! position and never share a 64-bit word from different "laps" of the ring.
//! A summary level (one bit per non-empty word) lets a search skip 4096 empty
//! positions per step, so walking a sparse set over a 32K-segment window
//! costs a few dozen word reads.

/// A set of sequence numbers living in a window smaller than the capacity.
#[derive(Debug, Clone)]
pub(crate) struct RingBits {
    words: Vec<u64>,
    summary: Vec<u64>,
    mask: u32,
}

impl RingBits {
    /// `cap` must be a power of two and at least 64.
    pub(crate) fn new(cap: u32) -> RingBits {
        debug_assert!(cap.is_power_of_two() && cap >= 64);
        let n = (cap / 64) as usize;
        RingBits {
            words: vec![0; n],
            summary: vec![0; n.div_ceil(64)],
            mask: cap - 1,
        }
    }

    #[inline]
    fn at(&self, sn: u32) -> (usize, u32) {
        let pos = sn & self.mask;
        ((pos >> 6) as usize, pos & 63)
    }

    #[inline]
    pub(crate) fn insert(&mut self, sn: u32) {
        let (w, b) = self.at(sn);
        if let Some(word) = self.words.get_mut(w) {
            *word |= 1 << b;
            if let Some(s) = self.summary.get_mut(w / 64) {
                *s |= 1 << (w % 64);
            }
        }
    }

    /// Removes `sn`; returns true if its 64-bit word is now empty.
    #[inline]
    pub(crate) fn remove(&mut self, sn: u32) -> bool {
        let (w, b) = self.at(sn);
        match self.words.get_mut(w) {
            Some(word) => {
                *word &= !(1 << b);
                if *word == 0 {
                    if let Some(s) = self.summary.get_mut(w / 64) {
                        *s &= !(1 << (w % 64));
                    }
                    true
                } else {
                    false
                }
            }
            None => true,
        }
    }

    /// Index of the 64-position block holding `sn`.
    #[inline]
    pub(crate) fn block(&self, sn: u32) -> usize {
        self.at(sn).0
    }

    /// Distance in words from word `w` to the first non-empty word at or
    /// after it (cyclically), if that is less than `max`.
    fn next_nonempty_word(&self, w: usize, max: usize) -> Option<usize> {
        let n = self.words.len();
        let mut dist = 0usize;
        while dist < max {
            let i = (w + dist) % n;
            let bits = self.summary.get(i / 64).copied().unwrap_or(0) >> (i % 64);
            // Only the words up to the end of this summary word (and not past
            // the end of the ring) are covered by `bits`.
            let span = (64 - i % 64).min(n - i);
            let bits = if span < 64 {
                bits & ((1u64 << span) - 1)
            } else {
                bits
            };
            if bits != 0 {
                let d = dist + bits.trailing_zeros() as usize;
                return (d < max).then_some(d);
            }
            dist += span;
        }
        None
    }

    /// The first member in `from, from+1, ..., from+len-1` (wrapping), if any.
    /// `len` must not exceed the capacity.
    pub(crate) fn next_in(&self, from: u32, len: u32) -> Option<u32> {
        let mut off = 0u32;
        while off < len {
            let sn = from.wrapping_add(off);
            let (w, b) = self.at(sn);
            let word = self.words.get(w).copied().unwrap_or(0) >> b;
            if word != 0 {
                let tz = word.trailing_zeros();
                return (off + tz < len).then(|| sn.wrapping_add(tz));
            }
            off += 64 - b;
            if off >= len {
                break;
            }
            // `from + off` starts word w+1: jump over empty words.
            let left = (len - off).div_ceil(64) as usize;
            let skip = self.next_nonempty_word((w + 1) % self.words.len(), left)?;
            off += 64 * skip as u32;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeSet;

    #[test]
    fn next_in_matches_a_plain_set() {
        let mut rng = SmallRng::seed_from_u64(1);
        for cap in [64u32, 128, 4096, 1 << 13, 1 << 17] {
            for _ in 0..40 {
                let mut bits = RingBits::new(cap);
                let base: u32 = rng.gen();
                let span = rng.gen_range(1..=cap);
                let density = [0.001, 0.01, 0.3][rng.gen_range(0..3)];
                let mut set = BTreeSet::new();
                for off in 0..span {
                    if rng.gen_bool(density) {
                        set.insert(off);
                        bits.insert(base.wrapping_add(off));
                    }
                }
                // Remove some again.
                for &off in set.clone().iter().step_by(3) {
                    set.remove(&off);
                    bits.remove(base.wrapping_add(off));
                }
                for _ in 0..50 {
                    let from = rng.gen_range(0..span);
                    let len = rng.gen_range(0..=span - from);
                    let want = set
                        .range(from..from + len)
                        .next()
                        .map(|&o| base.wrapping_add(o));
                    assert_eq!(
                        bits.next_in(base.wrapping_add(from), len),
                        want,
                        "cap {cap}"
                    );
                }
            }
        }
    }
}
