//! Detection of the peer's (data, parity) shard counts from the pattern of
//! data and parity seqids it sends (§4.5, kcp-go's `autoTune`), and the
//! layout confirmation that gates recovered shards (§4.5, see
//! [`super::decoder`]).
//!
//! The period finder follows kcp-go v5.7.6 (§12): duplicate seqids are
//! collapsed, a seqid seen as both data and parity is dropped, and the first
//! complete pulse anywhere in the window counts. v5.6 gave up at the first
//! gap or duplicate in seqid order, so one lost packet early in the window
//! kept it blind until that packet left the ring.

use std::cell::Cell;

/// Samples kept: 256 + 2 so a full pulse of up to 256 shards plus both edges fits.
pub const AUTO_TUNE_SAMPLES: usize = 258;

/// One sample. Its arrival number is not stored: samples enter the ring in
/// arrival order, so it follows from the ring position (this keeps the two
/// 258-sample arrays, held by every decoder, at 8 bytes a sample).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Pulse {
    data: bool,
    seq: u32,
}

thread_local! {
    /// Sort buffer of the period finder and the layout check, shared by
    /// every sampler on the thread: it is scratch for one call, and the
    /// decoders of idle or settled sessions would otherwise each keep one.
    /// Taken out while in use, so a nested use gets a fresh one.
    static SORTED: Cell<Vec<Pulse>> = const { Cell::new(Vec::new()) };
}

/// Ring of the last [`AUTO_TUNE_SAMPLES`] (is-data, seqid) samples and the
/// period finder over them.
#[derive(Clone)]
pub struct AutoTune {
    pulses: [Pulse; AUTO_TUNE_SAMPLES],
    /// Next write position.
    tail: usize,
    count: usize,
    /// Samples recorded so far.
    arrivals: u64,
}

impl std::fmt::Debug for AutoTune {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoTune")
            .field("samples", &self.count)
            .finish_non_exhaustive()
    }
}

impl Default for AutoTune {
    fn default() -> Self {
        AutoTune::new()
    }
}

impl AutoTune {
    /// An empty sampler.
    pub fn new() -> AutoTune {
        AutoTune {
            pulses: [Pulse::default(); AUTO_TUNE_SAMPLES],
            tail: 0,
            count: 0,
            arrivals: 0,
        }
    }

    /// Records one received FEC packet: `data` is true for type 0xF1.
    pub fn sample(&mut self, data: bool, seq: u32) {
        self.pulses[self.tail] = Pulse { data, seq };
        self.arrivals += 1;
        self.tail = (self.tail + 1) % AUTO_TUNE_SAMPLES;
        if self.count < AUTO_TUNE_SAMPLES {
            self.count += 1;
        }
    }

    /// Number of samples held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when no sample was recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Samples recorded since creation: the arrival number the next sample
    /// gets (the decoder marks evidence windows with it).
    pub(crate) fn arrivals(&self) -> u64 {
        self.arrivals
    }

    /// kcp-go v5.7's `FindPeriod(bit)`: the width of the first complete run
    /// of `data`-typed samples in seqid order, or -1.
    pub fn find_period(&mut self, data: bool) -> i32 {
        if self.count < 3 {
            return -1;
        }
        self.with_sorted(0, |s| period(s, data))
    }

    /// `(FindPeriod(true), FindPeriod(false))` with a single sort.
    pub fn find_periods(&mut self) -> (i32, i32) {
        if self.count < 3 {
            return (-1, -1);
        }
        self.with_sorted(0, |s| (period(s, true), period(s, false)))
    }

    /// Whether the samples that arrived at or after arrival number `since`
    /// confirm the layout `data + parity` (group size `S`, seqids below
    /// `paws`): they hold a complete data pulse of width `data` starting on
    /// a group boundary (seqids `g*S - 1 ..= g*S + data`: parity, `data`
    /// data, parity) and a complete parity pulse of width `parity` ending on
    /// one (seqids `h*S + data - 1 ..= (h+1)*S`: data, `parity` parity,
    /// data), each seqid present, contiguous, conflicting duplicates dropped
    /// as in [`AutoTune::find_periods`].
    ///
    /// All runs of an encoder that keeps one layout `(d', p')` have widths
    /// `d'` and `p'` and start on multiples of `d' + p'`, so these two pulses
    /// prove `d' = data`, `p' = parity` and the group alignment. The
    /// contiguity requirement keeps a lost or skipped packet from hiding a
    /// transition.
    pub(crate) fn confirms(&mut self, data: usize, parity: usize, paws: u32, since: u64) -> bool {
        let s = (data + parity) as u32;
        let (d, p) = (data as u32, parity as u32);
        // (first position, samples): the data pulse with both edges, then
        // the parity pulse with both edges.
        self.with_sorted(since, |sorted| {
            has_run(sorted, d, s, paws, s - 1, d + 2) && has_run(sorted, d, s, paws, d - 1, p + 2)
        })
    }

    /// Runs `f` on the samples that arrived at or after `since`, prepared as
    /// by [`Self::prepare`], in the thread's sort buffer.
    fn with_sorted<R>(&self, since: u64, f: impl FnOnce(&[Pulse]) -> R) -> R {
        let mut buf = SORTED.take();
        if buf.len() < AUTO_TUNE_SAMPLES {
            buf.resize(AUTO_TUNE_SAMPLES, Pulse::default());
        }
        let n = self.prepare(since, &mut buf);
        let r = f(&buf[..n]);
        SORTED.set(buf);
        r
    }

    /// Copies the samples that arrived at or after `since` (oldest first)
    /// into `sorted` (at least [`AUTO_TUNE_SAMPLES`] long), sorts them by seqid in wrap-aware order and collapses
    /// duplicate seqids, dropping every seqid seen with both types (kcp-go
    /// v5.7). Returns the number of samples left.
    ///
    /// Go sorts with the comparator `int32(a - b) < 0`, which is a total
    /// order only while all seqids lie within 2^31 of each other. Ordering by
    /// `int32(seq - newest)` is the same order in that case and stays a total
    /// order otherwise (Rust's sort may panic on an inconsistent comparator).
    /// After the collapse equal seqids carry equal samples, so stability
    /// cannot matter.
    fn prepare(&self, since: u64, sorted: &mut [Pulse]) -> usize {
        let head = (self.tail + AUTO_TUNE_SAMPLES - self.count) % AUTO_TUNE_SAMPLES;
        // The oldest sample held arrived as number `arrivals - count`.
        let oldest = self.arrivals - self.count as u64;
        let mut n = 0;
        for i in 0..self.count {
            let p = self.pulses[(head + i) % AUTO_TUNE_SAMPLES];
            if oldest + i as u64 >= since {
                sorted[n] = p;
                n += 1;
            }
        }
        if n == 0 {
            return 0;
        }
        let newest = self.pulses[(self.tail + AUTO_TUNE_SAMPLES - 1) % AUTO_TUNE_SAMPLES].seq;
        let sorted = &mut sorted[..n];
        sorted.sort_unstable_by_key(|p| p.seq.wrapping_sub(newest) as i32);
        let mut unique = 0;
        let mut i = 0;
        while i < n {
            let first = sorted[i];
            let mut end = i + 1;
            let mut conflict = false;
            while end < n && sorted[end].seq == first.seq {
                conflict |= sorted[end].data != first.data;
                end += 1;
            }
            if !conflict {
                sorted[unique] = first;
                unique += 1;
            }
            i = end;
        }
        unique
    }
}

/// Whether `sorted` holds `len` contiguous seqids, the first at position
/// `first` of a group of `s` (first `d` positions data), each with the type
/// its position gives.
fn has_run(sorted: &[Pulse], d: u32, s: u32, paws: u32, first: u32, len: u32) -> bool {
    let mut prev: Option<u32> = None;
    let mut anchor: Option<u32> = None;
    for p in sorted {
        let fits = p.seq < paws && ((p.seq % s) < d) == p.data;
        if !fits || prev.is_none_or(|q| q.wrapping_add(1) != p.seq) {
            anchor = None;
        }
        if fits && anchor.is_none() && p.seq % s == first {
            anchor = Some(p.seq);
        }
        if anchor.is_some_and(|a| p.seq.wrapping_sub(a) + 1 >= len) {
            return true;
        }
        prev = Some(p.seq);
    }
    false
}

/// The first complete pulse of `bit` in seqid order: a left edge (previous
/// sample the other type, seqids contiguous), then contiguous samples up to
/// the first one of the other type. A gap inside a candidate abandons it and
/// the search goes on from the next left edge.
fn period(sorted: &[Pulse], bit: bool) -> i32 {
    for left in 1..sorted.len() {
        let (a, b) = (sorted[left - 1], sorted[left]);
        if a.data == bit || b.data != bit || a.seq.wrapping_add(1) != b.seq {
            continue;
        }
        for right in left + 1..sorted.len() {
            if sorted[right - 1].seq.wrapping_add(1) != sorted[right].seq {
                break;
            }
            if sorted[right].data != bit {
                return sorted[right].seq.wrapping_sub(b.seq) as i32;
            }
        }
    }
    -1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(t: &mut AutoTune, d: u32, p: u32, from: u32, n: u32) {
        for s in from..from + n {
            t.sample(s % (d + p) < d, s);
        }
    }

    #[test]
    fn finds_10_3() {
        let mut t = AutoTune::new();
        feed(&mut t, 10, 3, 0, 26);
        assert_eq!(t.find_periods(), (10, 3));
    }

    #[test]
    fn needs_three_samples_and_full_pulse() {
        let mut t = AutoTune::new();
        t.sample(true, 0);
        t.sample(false, 1);
        assert_eq!(t.find_periods(), (-1, -1));
        t.sample(true, 2);
        // data: left edge at seq 2, no right edge yet; parity: 1..2.
        assert_eq!(t.find_periods(), (-1, 1));
        t.sample(false, 3);
        assert_eq!(t.find_periods(), (1, 1));
    }

    #[test]
    fn a_pulse_after_a_gap_is_found() {
        // v5.6 returned (-1, -1) here until seqid 5 left the ring; v5.7
        // looks past the gap.
        let mut t = AutoTune::new();
        feed(&mut t, 4, 2, 0, 5);
        feed(&mut t, 4, 2, 6, 30);
        assert_eq!(t.find_periods(), (4, 2));
    }

    #[test]
    fn conflicting_duplicates_are_dropped() {
        let mut t = AutoTune::new();
        feed(&mut t, 3, 2, 0, 16);
        // Seqid 8 (parity) also claimed as data: 8 is dropped, which breaks
        // the data pulse at 5..7; the next one (10..12) is complete. v5.6
        // saw a non-contiguous sequence and returned -1.
        t.sample(true, 8);
        assert_eq!(t.find_periods(), (3, 2));
        // A plain duplicate collapses.
        t.sample(false, 13);
        assert_eq!(t.find_periods(), (3, 2));
        // Conflicts at 3 and 13 too: every pulse now has a hole.
        t.sample(true, 3);
        t.sample(true, 13);
        assert_eq!(t.find_periods(), (-1, -1));
    }

    #[test]
    fn confirmation_needs_aligned_pulses_since_the_mark() {
        let mut t = AutoTune::new();
        let paws = super::super::paws(5);
        feed(&mut t, 3, 2, 0, 8);
        // Parity pulse 2..5 seen; the data pulse needs 4..8.
        assert!(!t.confirms(3, 2, paws, 0));
        feed(&mut t, 3, 2, 8, 1);
        assert!(t.confirms(3, 2, paws, 0));
        // The same samples do not prove 4+1 or 2+3 (types disagree).
        assert!(!t.confirms(4, 1, paws, 0));
        assert!(!t.confirms(2, 3, paws, 0));
        // Evidence before the mark does not count.
        let mark = t.arrivals();
        assert!(!t.confirms(3, 2, paws, mark));
        feed(&mut t, 3, 2, 9, 5);
        assert!(!t.confirms(3, 2, paws, mark));
        feed(&mut t, 3, 2, 14, 5);
        assert!(t.confirms(3, 2, paws, mark));
        // Pulses of the right widths but off the group boundary do not
        // confirm: a 3+2 stream shifted by one seqid.
        let mut t = AutoTune::new();
        for seq in 0..40u32 {
            t.sample((seq + 1) % 5 < 3, seq);
        }
        assert_eq!(t.find_periods(), (3, 2));
        assert!(!t.confirms(3, 2, paws, 0));
    }

    #[test]
    fn out_of_order_and_wrap() {
        let mut t = AutoTune::new();
        let base = 0xFFFF_FFF0u32;
        let mut seqs: Vec<u32> = (0..40).map(|i| base.wrapping_add(i)).collect();
        seqs.swap(3, 17);
        seqs.swap(20, 21);
        for s in seqs {
            t.sample(s.wrapping_sub(base) % 9 < 7, s);
        }
        assert_eq!(t.find_periods(), (7, 2));
    }

    #[test]
    fn hostile_spread_does_not_panic() {
        let mut t = AutoTune::new();
        for i in 0..1000u32 {
            t.sample(i % 3 == 0, i.wrapping_mul(0x9E37_79B9));
            let _ = t.find_periods();
        }
    }
}
