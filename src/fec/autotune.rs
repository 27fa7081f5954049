//! Detection of the peer's (data, parity) shard counts from the pattern of
//! data and parity seqids it sends (§4.5, kcp-go's `autoTune`).

/// Samples kept: 256 + 2 so a full pulse of up to 255 shards plus both edges fits.
pub const AUTO_TUNE_SAMPLES: usize = 258;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Pulse {
    data: bool,
    seq: u32,
}

/// Ring of the last [`AUTO_TUNE_SAMPLES`] (is-data, seqid) samples and the
/// period finder over them.
#[derive(Clone)]
pub struct AutoTune {
    pulses: [Pulse; AUTO_TUNE_SAMPLES],
    sorted: [Pulse; AUTO_TUNE_SAMPLES],
    /// Next write position.
    tail: usize,
    count: usize,
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
            sorted: [Pulse::default(); AUTO_TUNE_SAMPLES],
            tail: 0,
            count: 0,
        }
    }

    /// Records one received FEC packet: `data` is true for type 0xF1.
    pub fn sample(&mut self, data: bool, seq: u32) {
        self.pulses[self.tail] = Pulse { data, seq };
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

    /// kcp-go's `FindPeriod(bit)`: the width of the first complete run of
    /// `data`-typed samples in seqid order, or -1.
    pub fn find_period(&mut self, data: bool) -> i32 {
        if !self.sort() {
            return -1;
        }
        period(&self.sorted[..self.count], data)
    }

    /// `(FindPeriod(true), FindPeriod(false))` with a single sort.
    pub fn find_periods(&mut self) -> (i32, i32) {
        if !self.sort() {
            return (-1, -1);
        }
        let s = &self.sorted[..self.count];
        (period(s, true), period(s, false))
    }

    /// Copies the samples (oldest first) into `sorted` and sorts them by
    /// seqid in wrap-aware order. Returns false with fewer than 3 samples.
    ///
    /// Go sorts with the comparator `int32(a - b) < 0`, which is a total
    /// order only while all seqids lie within 2^31 of each other. Ordering by
    /// `int32(seq - newest)` is the same order in that case and stays a total
    /// order otherwise (Rust's sort may panic on an inconsistent comparator).
    /// The sort is stable, as Go's is for the small inputs where ties can
    /// matter; ties only differ with a peer sending one seqid as both types.
    fn sort(&mut self) -> bool {
        if self.count < 3 {
            return false;
        }
        let head = (self.tail + AUTO_TUNE_SAMPLES - self.count) % AUTO_TUNE_SAMPLES;
        for i in 0..self.count {
            self.sorted[i] = self.pulses[(head + i) % AUTO_TUNE_SAMPLES];
        }
        let newest = self.pulses[(self.tail + AUTO_TUNE_SAMPLES - 1) % AUTO_TUNE_SAMPLES].seq;
        self.sorted[..self.count].sort_by_key(|p| p.seq.wrapping_sub(newest) as i32);
        true
    }
}

/// Left edge: first transition into `bit`; right edge: first transition out
/// of it after that; any seqid gap before the right edge means no period.
fn period(sorted: &[Pulse], bit: bool) -> i32 {
    let Some(first) = sorted.first() else {
        return -1;
    };
    let mut last = *first;
    let mut left = None;
    for (idx, p) in sorted.iter().enumerate().skip(1) {
        if last.seq.wrapping_add(1) != p.seq {
            return -1;
        }
        if last.data != bit && p.data == bit {
            left = Some(idx);
            break;
        }
        last = *p;
    }
    let Some(left) = left else {
        return -1;
    };
    let mut last = sorted[left];
    for (idx, p) in sorted.iter().enumerate().skip(left + 1) {
        if last.seq.wrapping_add(1) != p.seq {
            return -1;
        }
        if last.data == bit && p.data != bit {
            return (idx - left) as i32;
        }
        last = *p;
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
    fn gap_breaks_detection_until_it_leaves_the_ring() {
        let mut t = AutoTune::new();
        feed(&mut t, 4, 2, 0, 5);
        feed(&mut t, 4, 2, 6, 30);
        assert_eq!(t.find_periods(), (-1, -1));
        feed(&mut t, 4, 2, 36, AUTO_TUNE_SAMPLES as u32);
        assert_eq!(t.find_periods(), (4, 2));
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
