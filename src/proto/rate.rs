//! A token bucket that limits application bytes accepted by writes, and can
//! be shared by many sessions (kcp-go v5.7 `SetRateLimit` / `SetBucket`, §12).
//!
//! # What is limited
//!
//! Like kcp-go v5.7, the bytes the application hands to a session's writes
//! ([`AsyncWrite::poll_write`](tokio::io::AsyncWrite::poll_write),
//! [`Session::send_msg`](crate::Session::send_msg)), before KCP. Headers,
//! ACKs, retransmissions, FEC parity and OOB datagrams are not counted, so
//! the wire carries somewhat more than the limit. A writer that runs out of
//! tokens waits (back-pressure, honouring the write timeout); nothing is
//! queued or dropped behind its back.
//!
//! kcp-go v5.6 (`x/time/rate`, burst 64 × 1500) instead paced every datagram
//! the session wrote to its socket, ACKs and retransmissions included. That
//! limits the wire, but delays ACKs (which hurts the peer) and lets
//! retransmissions pile up behind the limit; with one bucket shared by a whole
//! listener, one busy session's datagrams would hold back every other
//! session's ACKs. We follow v5.7.
//!
//! # Bucket
//!
//! Tokens are bytes. A bucket starts full, holds at most `burst` tokens and
//! gains `rate` tokens per second on the clock the caller passes in. A
//! stream write takes what the bucket holds (up to what the window allows), and waits while the bucket has less than one segment's
//! worth (or the whole write, if smaller), so a slow limit does not chop the
//! stream into tiny segments. A message waits for its whole length, or for a
//! full bucket if it is longer than `burst`, and may then leave the bucket in
//! debt; the next writer waits until the debt is paid, so over time no more
//! than `burst + rate × t` bytes pass in `t` seconds.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The bucket runs on instants the caller passes in; it reads no clock (the
/// tokio session passes tokio's, so paused-time tests stay deterministic).
type Instant = std::time::Instant;

use crate::error::{Error, Result};

/// Token shortfall treated as rounding error (bytes).
const DUST: f64 = 1e-6;
/// Shortest wait for tokens: tokio's timer resolution.
const MIN_WAIT: Duration = Duration::from_millis(1);

/// A shareable token-bucket rate limiter for application bytes written.
///
/// Cheap to clone; clones share one bucket. Give one to
/// [`ConfigBuilder::rate_limiter`](crate::ConfigBuilder::rate_limiter) to
/// limit every session made with that config together (for a listener: all
/// its sessions), or to
/// [`Session::set_rate_limiter`](crate::Session::set_rate_limiter) at run
/// time. See the [module documentation](self) for what is counted.
///
/// ```
/// use kcp_session::{Config, RateLimiter};
///
/// // 1 MB/s for everything a listener's sessions write, together.
/// let limit = RateLimiter::new(1_000_000)?;
/// let config = Config::builder().rate_limiter(limit.clone()).build()?;
/// assert_eq!(config.rate_limiter().map(|l| l.rate()), Some(1_000_000));
/// # Ok::<(), kcp_session::Error>(())
/// ```
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Mutex<Bucket>>,
}

struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    /// When tokens were last added; `None` until first used (full then).
    last: Option<Instant>,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let Some(last) = self.last.replace(now) else {
            return;
        };
        let dt = now.saturating_duration_since(last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("rate", &self.rate())
            .field("burst", &self.burst())
            .finish()
    }
}

impl RateLimiter {
    /// `bytes_per_second` with a burst of one second's worth, as kcp-go v5.7's
    /// `SetRateLimit` builds it (juju/ratelimit, capacity = rate). Zero is
    /// [`Error::InvalidConfig`] (no limiter means no limit).
    pub fn new(bytes_per_second: u32) -> Result<RateLimiter> {
        RateLimiter::with_burst(bytes_per_second, bytes_per_second)
    }

    /// `bytes_per_second` with a bucket of `burst` bytes (it starts full).
    /// Either being zero is [`Error::InvalidConfig`].
    pub fn with_burst(bytes_per_second: u32, burst: u32) -> Result<RateLimiter> {
        if bytes_per_second == 0 || burst == 0 {
            return Err(Error::InvalidConfig(format!(
                "rate limiter needs a positive rate and burst (got {bytes_per_second} B/s, \
                 burst {burst} B); use no limiter for no limit"
            )));
        }
        Ok(RateLimiter {
            inner: Arc::new(Mutex::new(Bucket {
                rate: f64::from(bytes_per_second),
                burst: f64::from(burst),
                tokens: f64::from(burst),
                last: None,
            })),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bucket> {
        // The bucket is a few numbers; a panic elsewhere cannot break them.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes per second.
    pub fn rate(&self) -> u32 {
        self.lock().rate as u32
    }

    /// Bucket capacity in bytes.
    pub fn burst(&self) -> u32 {
        self.lock().burst as u32
    }

    /// Whole tokens (bytes) available at `now`; 0 while the bucket is in
    /// debt.
    pub fn available(&self, now: Instant) -> u64 {
        let mut b = self.lock();
        b.refill(now);
        b.tokens.max(0.0) as u64
    }

    /// Whether `self` and `other` are clones sharing one bucket.
    pub fn shares_bucket_with(&self, other: &RateLimiter) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Takes between `at_least` and `want` tokens (`at_least <= want`) at
    /// `now`, or returns when `min(at_least, burst)` will be there.
    pub(crate) fn try_take(
        &self,
        now: Instant,
        want: usize,
        at_least: usize,
    ) -> std::result::Result<usize, Instant> {
        let at_least = at_least.min(want);
        let mut b = self.lock();
        b.refill(now);
        let need = (at_least as f64).min(b.burst);
        // Refills are float sums: forgive rounding dust, or a writer could
        // be woken at its deadline to find 9.999… of 10 bytes and wait 0 ns
        // again, forever.
        if b.tokens + DUST >= need {
            let n = ((b.tokens + DUST).floor().max(0.0) as usize).clamp(at_least, want);
            b.tokens -= n as f64;
            return Ok(n);
        }
        let secs = (need - b.tokens) / b.rate;
        // At least the timer's resolution, so time always moves on.
        Err(now + Duration::from_secs_f64(secs).max(MIN_WAIT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_rate_or_burst_is_refused() {
        assert!(matches!(RateLimiter::new(0), Err(Error::InvalidConfig(_))));
        assert!(matches!(
            RateLimiter::with_burst(10, 0),
            Err(Error::InvalidConfig(_))
        ));
        let l = RateLimiter::with_burst(10, 20).unwrap();
        assert_eq!((l.rate(), l.burst()), (10, 20));
        assert!(l.shares_bucket_with(&l.clone()));
        assert!(!l.shares_bucket_with(&RateLimiter::new(10).unwrap()));
    }

    /// Waits for tokens like a writer does; returns what it got.
    async fn take(l: &RateLimiter, want: usize, at_least: usize) -> usize {
        loop {
            match l.try_take(tokio::time::Instant::now().into_std(), want, at_least) {
                Ok(n) => return n,
                Err(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stream_takes_what_is_there_and_messages_may_overdraw() {
        use tokio::time::Instant;
        let l = RateLimiter::with_burst(1000, 1000).unwrap();
        let t0 = Instant::now();
        // Full bucket: a big stream write gets all of it, at once.
        assert_eq!(take(&l, 5000, 100).await, 1000);
        assert_eq!(t0.elapsed(), Duration::ZERO);
        // Empty: the next waits for its minimum (100 bytes = 100 ms), not for
        // one byte, and then takes only what is there.
        assert_eq!(take(&l, 5000, 100).await, 100);
        let waited = t0.elapsed();
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        assert!(waited <= Duration::from_millis(101), "{waited:?}");
        // A short write waits only for itself.
        assert_eq!(take(&l, 10, 10).await, 10);
        assert!(t0.elapsed() <= Duration::from_millis(111));
        // A message longer than the bucket waits for a full bucket, takes
        // its whole length and leaves a debt the next writer pays.
        let t1 = Instant::now();
        assert_eq!(take(&l, 3000, 3000).await, 3000);
        assert!(t1.elapsed() >= Duration::from_secs(1));
        assert_eq!(l.available(Instant::now().into_std()), 0);
        let t2 = Instant::now();
        assert_eq!(take(&l, 10, 10).await, 10);
        let paid = t2.elapsed();
        assert!(paid >= Duration::from_millis(2010), "{paid:?}");
        assert!(paid <= Duration::from_millis(2012), "{paid:?}");
        // Waits that end a hair short of their tokens (float dust) still end.
        let l = RateLimiter::with_burst(3, 3).unwrap();
        for _ in 0..50 {
            assert_eq!(take(&l, 1, 1).await, 1);
        }
        assert!(t0.elapsed() < Duration::from_secs(20));
    }
}
