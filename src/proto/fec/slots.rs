//! Shard buffers sized by the shards actually seen.
//!
//! Encoder parity and decoder shard storage used to be laid out at a fixed
//! stride of [`SHARD_STRIDE`] bytes per shard, reserved for the most shards
//! a layout could ever hold. Most sessions never hold that many, and a
//! session whose packets are short never needs that stride, so both are now
//! grown on demand: the stride to the longest shard stored so far (rounded
//! to 64 bytes), the slot count by the caller. Growth happens a bounded
//! number of times (the stride only increases, up to [`SHARD_STRIDE`]), so
//! steady traffic after warm-up does not allocate.

use super::encoder::SHARD_STRIDE;

/// Slot sizes are multiples of this, so vector loads of different shards
/// stay apart and a slightly longer packet rarely forces a relayout.
const STRIDE_ALIGN: usize = 64;

/// `count` equal slots of `stride` bytes, back to back in one buffer (the
/// Reed-Solomon kernel addresses shards by offsets into one flat slice).
#[derive(Debug, Clone, Default)]
pub(super) struct Slots {
    buf: Vec<u8>,
    stride: usize,
    count: usize,
}

impl Slots {
    /// Bytes per slot.
    #[cfg(test)]
    pub(super) fn stride(&self) -> usize {
        self.stride
    }

    /// Slots in use.
    pub(super) fn count(&self) -> usize {
        self.count
    }

    /// Offset of slot `i` in [`bytes`](Self::bytes).
    pub(super) fn offset(&self, i: usize) -> usize {
        i * self.stride
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// Bytes allocated.
    pub(super) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Makes every slot at least `len` bytes (`len <= SHARD_STRIDE`). Slot
    /// contents move with their slot; bytes past a slot's old end are
    /// unspecified, which callers allow for by zero padding explicitly.
    /// Returns whether the stride changed (slot offsets moved).
    pub(super) fn fit_len(&mut self, len: usize) -> bool {
        let new = len.next_multiple_of(STRIDE_ALIGN).min(SHARD_STRIDE);
        if new <= self.stride {
            return false;
        }
        let old = self.stride;
        let total = self.count * new;
        self.buf.reserve_exact(total.saturating_sub(self.buf.len()));
        self.buf.resize(total, 0);
        // Back to front: every slot moves up, so no unmoved slot is
        // overwritten.
        for i in (1..self.count).rev() {
            self.buf.copy_within(i * old..(i + 1) * old, i * new);
        }
        self.stride = new;
        true
    }

    /// Adds one slot and returns its index. When the buffer is full it grows
    /// by `step` slots at once (at least one), so filling up costs a few
    /// allocations, not one per slot.
    pub(super) fn push(&mut self, step: usize) -> usize {
        let need = (self.count + 1) * self.stride;
        if need > self.buf.capacity() {
            self.buf.reserve_exact(step.max(1) * self.stride);
        }
        self.buf.resize(need, 0);
        self.count += 1;
        self.count - 1
    }

    /// Sets the number of slots to `count`, allocating for exactly that many
    /// (the encoder's parity: one slot per parity shard).
    pub(super) fn set_count(&mut self, count: usize) {
        let total = count * self.stride;
        self.buf.reserve_exact(total.saturating_sub(self.buf.len()));
        self.buf.resize(total, 0);
        self.count = count;
    }

    /// Drops every slot and gives the memory back.
    pub(super) fn release(&mut self) {
        self.buf = Vec::new();
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayout_keeps_slot_contents() {
        let mut s = Slots::default();
        s.fit_len(10);
        assert_eq!(s.stride(), 64);
        for i in 0..3 {
            let at = s.push(2);
            assert_eq!(at, i);
            let o = s.offset(at);
            s.bytes_mut()[o..o + 64].fill(i as u8 + 1);
        }
        assert!(s.fit_len(65));
        assert!(!s.fit_len(100));
        assert_eq!(s.stride(), 128);
        for i in 0..3 {
            let o = s.offset(i);
            assert!(s.bytes()[o..o + 64].iter().all(|&b| b == i as u8 + 1));
        }
        assert!(s.fit_len(5000));
        assert_eq!(s.stride(), SHARD_STRIDE);
        assert_eq!(s.count(), 3);
        s.release();
        assert_eq!((s.count(), s.capacity()), (0, 0));
    }
}
