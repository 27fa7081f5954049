//! When a session's driver wakes for its next deadline, and what time the
//! pass it wakes for runs at.
//!
//! tokio rounds a sleep's instant up to its next millisecond tick and then
//! parks in whole milliseconds from the current tick: measured here, a sleep
//! ends 1-2 ms after the instant it was given. kcp-go's timers end within a
//! millisecond after theirs, so a retransmission of ours came later than
//! kcp-go's (the p99 of request/response under loss is one retransmission
//! timeout plus that lateness). An [`Alarm`] arms the sleep [`TIMER_SLACK`]
//! early and, should it end before the deadline, runs the pass at the
//! deadline itself: the connection's clock never runs backward, so the whole
//! pass and everything after it see the deadline as reached. Timers then run
//! within about a millisecond after the deadline, and since the sleep never
//! ends before the armed instant, the driver never spins waiting for it.

use std::time::{Duration, Instant};

/// How far before a deadline the driver's sleep is armed.
pub(super) const TIMER_SLACK: Duration = Duration::from_millis(1);

/// The deadline a driver's sleep is armed for.
#[derive(Debug, Default)]
pub(super) struct Alarm {
    /// The deadline the sleep is armed for ([`TIMER_SLACK`] before it).
    armed: Option<Instant>,
    /// The deadline whose sleep just ended, for the next pass's clock.
    fired: Option<Instant>,
}

impl Alarm {
    /// Arms for `deadline`. Returns the instant to reset the sleep to, or
    /// `None` when it is already armed for that deadline.
    pub(super) fn arm(&mut self, deadline: Instant) -> Option<Instant> {
        if self.armed == Some(deadline) {
            return None;
        }
        self.armed = Some(deadline);
        Some(deadline.checked_sub(TIMER_SLACK).unwrap_or(deadline))
    }

    /// No deadline: the sleep is not polled.
    pub(super) fn disarm(&mut self) {
        self.armed = None;
    }

    /// The sleep ended. The next [`arm`](Self::arm) resets it even for the
    /// same deadline, and the next [`clock`](Self::clock) reads that deadline.
    pub(super) fn fire(&mut self) {
        self.fired = self.armed.take();
    }

    /// The time a pass that starts at `now` runs at: the armed (or just
    /// fired) deadline when `now` is less than [`TIMER_SLACK`] before it,
    /// otherwise `now`. Never earlier than `now`.
    pub(super) fn clock(&mut self, now: Instant) -> Instant {
        match self.fired.take().or(self.armed) {
            Some(at) if now < at && at - now <= TIMER_SLACK => at,
            _ => now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_sleep_is_armed_one_slack_early_and_once_per_deadline() {
        let t0 = Instant::now();
        let mut a = Alarm::default();
        assert_eq!(a.arm(t0 + ms(30)), Some(t0 + ms(29)));
        assert_eq!(a.arm(t0 + ms(30)), None, "same deadline: keep the sleep");
        assert_eq!(a.arm(t0 + ms(40)), Some(t0 + ms(39)));
        a.fire();
        assert_eq!(
            a.arm(t0 + ms(40)),
            Some(t0 + ms(39)),
            "a sleep that ended must be reset even for the same deadline"
        );
    }

    /// An alarm armed for `d` whose sleep has ended.
    fn fired_for(d: Instant) -> Alarm {
        let mut a = Alarm::default();
        a.arm(d);
        a.fire();
        a
    }

    #[test]
    fn a_pass_woken_within_the_slack_runs_at_the_deadline() {
        let d = Instant::now() + ms(30);
        // The earliest the sleep can end, and anywhere up to the deadline.
        for early_us in [1000u64, 999, 500, 1] {
            let now = d - Duration::from_micros(early_us);
            assert_eq!(fired_for(d).clock(now), d, "{early_us} us early");
        }
        // Woken by input just before the deadline: its timers run too.
        let mut a = Alarm::default();
        a.arm(d);
        assert_eq!(a.clock(d - Duration::from_micros(200)), d);
    }

    #[test]
    fn otherwise_a_pass_runs_at_now() {
        let t0 = Instant::now();
        let d = t0 + ms(30);
        let mut a = Alarm::default();
        assert_eq!(a.clock(t0), t0, "nothing armed");
        a.arm(d);
        let long_before = d - ms(1) - Duration::from_micros(1);
        assert_eq!(a.clock(long_before), long_before);
        assert_eq!(a.clock(d + ms(2)), d + ms(2), "late: never set back");
        a.disarm();
        assert_eq!(
            a.clock(d - Duration::from_micros(10)),
            d - Duration::from_micros(10)
        );
    }

    #[test]
    fn a_fired_deadline_is_read_once() {
        let d = Instant::now() + ms(30);
        let mut a = fired_for(d);
        let now = d - Duration::from_micros(300);
        assert_eq!(a.clock(now), d);
        // Nothing armed since: the next pass reads its own time.
        assert_eq!(a.clock(now), now);
    }
}
