//! Ring-indexed bit sets over send-buffer sequence numbers.
//!
//! A position is `sn & mask`; the capacity is kept at least 64 larger than the
//! span `snd_nxt - snd_una`, so two live sequence numbers never share a
//! position and never share a 64-bit word from different "laps" of the ring.

/// A set of sequence numbers living in a window smaller than the capacity.
#[derive(Debug, Clone)]
pub(crate) struct RingBits {
    words: Vec<u64>,
    mask: u32,
}

impl RingBits {
    /// `cap` must be a power of two and at least 64.
    pub(crate) fn new(cap: u32) -> RingBits {
        debug_assert!(cap.is_power_of_two() && cap >= 64);
        RingBits {
            words: vec![0; (cap / 64) as usize],
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
        }
    }

    /// Removes `sn`; returns true if its 64-bit word is now empty.
    #[inline]
    pub(crate) fn remove(&mut self, sn: u32) -> bool {
        let (w, b) = self.at(sn);
        match self.words.get_mut(w) {
            Some(word) => {
                *word &= !(1 << b);
                *word == 0
            }
            None => true,
        }
    }

    /// Index of the 64-position block holding `sn`.
    #[inline]
    pub(crate) fn block(&self, sn: u32) -> usize {
        self.at(sn).0
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
        }
        None
    }
}
