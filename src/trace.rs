//! Optional `tracing` instrumentation (cargo feature `tracing`).
//!
//! Every event the crate emits goes through the macros here, so that with
//! the feature off they expand to nothing: no callsite, no field
//! evaluation, no dependency. With it on, each [`Connection`] carries a
//! `session` span (conv, peer, origin) and each listener's endpoint a
//! `listener` span (local address), entered around the work done for them,
//! so every event below is attributed without repeating those fields:
//!
//! | level | event |
//! |---|---|
//! | `info` | session opened, session closed (`reason`), session evicted for a newcomer, FEC layout retuned |
//! | `warn` | dead link, idle timeout; dropped datagrams (`counter`, `reason`, `peer`), rate-limited |
//! | `trace` | every datagram in and out, every KCP segment in and out, application sends and receives (kcp-go's `SetLogger`) |
//!
//! Drop warnings are rate-limited per counter on the caller's clock (the
//! pure layers never read a clock): the first drop warns at once, later ones
//! at most once per [`WARN_INTERVAL`], carrying how many were dropped since
//! the previous warning and the total so far. A flood of garbage therefore
//! costs one log line a second, not one per datagram.
//!
//! [`Connection`]: crate::connection::Connection

#[cfg(feature = "tracing")]
use std::net::SocketAddr;
#[cfg(feature = "tracing")]
use std::time::Duration;
#[cfg(feature = "tracing")]
use std::time::Instant;

use crate::stats::DropCounter;

/// The least time between two drop warnings for one counter.
#[cfg(feature = "tracing")]
pub(crate) const WARN_INTERVAL: Duration = Duration::from_secs(1);

#[cfg(feature = "tracing")]
macro_rules! trace_event {
    ($($t:tt)*) => { ::tracing::trace!($($t)*) };
}
#[cfg(not(feature = "tracing"))]
macro_rules! trace_event {
    ($($t:tt)*) => {};
}
#[cfg(feature = "tracing")]
macro_rules! info_event {
    ($($t:tt)*) => { ::tracing::info!($($t)*) };
}
#[cfg(not(feature = "tracing"))]
macro_rules! info_event {
    ($($t:tt)*) => {};
}
#[cfg(feature = "tracing")]
macro_rules! warn_event {
    ($($t:tt)*) => { ::tracing::warn!($($t)*) };
}
#[cfg(not(feature = "tracing"))]
macro_rules! warn_event {
    ($($t:tt)*) => {};
}
pub(crate) use {info_event as info, trace_event as trace, warn_event as warn};

/// A span: `tracing::Span` with the feature, a zero-sized stand-in without.
#[cfg(feature = "tracing")]
pub(crate) type Span = tracing::Span;

/// Zero-sized stand-in for `tracing::Span` (feature `tracing` off).
#[cfg(not(feature = "tracing"))]
#[derive(Debug, Clone, Default)]
pub(crate) struct Span;

/// What [`Span::enter`] returns without the feature (as `tracing`'s guard,
/// held for its scope).
#[cfg(not(feature = "tracing"))]
pub(crate) struct Entered;

#[cfg(not(feature = "tracing"))]
impl Span {
    /// Does nothing.
    #[inline(always)]
    pub(crate) fn enter(&self) -> Entered {
        Entered
    }
}

/// The span of one session; `peer` and `origin` are filled in by
/// [`record_peer`] once the shell knows them.
#[inline(always)]
pub(crate) fn session_span(conv: u32) -> Span {
    #[cfg(feature = "tracing")]
    {
        tracing::info_span!(
            "session",
            conv,
            peer = tracing::field::Empty,
            origin = tracing::field::Empty
        )
    }
    #[cfg(not(feature = "tracing"))]
    {
        let _ = conv;
        Span
    }
}

/// Records the peer address and origin ("dialed", "accepted") of a session span.
#[cfg(feature = "tracing")]
pub(crate) fn record_peer(span: &Span, peer: SocketAddr, origin: &'static str) {
    span.record("peer", tracing::field::display(peer));
    span.record("origin", origin);
}

/// The span of one listener (its endpoint); `local` is filled in by
/// [`record_local`].
#[inline(always)]
pub(crate) fn listener_span() -> Span {
    #[cfg(feature = "tracing")]
    {
        tracing::info_span!("listener", local = tracing::field::Empty)
    }
    #[cfg(not(feature = "tracing"))]
    {
        Span
    }
}

/// Records a listener span's local address.
#[cfg(feature = "tracing")]
pub(crate) fn record_local(span: &Span, local: SocketAddr) {
    span.record("local", tracing::field::display(local));
}

/// Per-counter state of [`DropWarnings`].
#[cfg(feature = "tracing")]
#[derive(Debug, Default, Clone, Copy)]
struct WarnSlot {
    /// Dropped since the last warning.
    pending: u64,
    /// Dropped in all.
    total: u64,
    /// No warning before this time.
    quiet_until: Option<Instant>,
}

/// Rate-limited warnings for dropped datagrams, one limit per counter (see
/// the module docs). Zero-sized without the feature.
#[derive(Debug, Default)]
pub(crate) struct DropWarnings {
    #[cfg(feature = "tracing")]
    slots: [WarnSlot; 3],
}

impl DropWarnings {
    /// Notes one datagram dropped at `now` and counted in `counter`, for
    /// `reason` (a `Debug` name), from `peer` if known; warns if the
    /// counter's quiet time is over.
    #[inline(always)]
    pub(crate) fn note(
        &mut self,
        now: std::time::Instant,
        counter: DropCounter,
        reason: &dyn std::fmt::Debug,
        peer: Option<std::net::SocketAddr>,
    ) {
        #[cfg(feature = "tracing")]
        {
            let slot = &mut self.slots[counter as usize];
            slot.pending += 1;
            slot.total += 1;
            if slot.quiet_until.is_some_and(|t| now < t) {
                return;
            }
            let dropped = std::mem::take(&mut slot.pending);
            slot.quiet_until = Some(now + WARN_INTERVAL);
            match peer {
                Some(peer) => warn_event!(
                    counter = counter.name(),
                    reason = ?reason,
                    %peer,
                    dropped,
                    total = slot.total,
                    "datagrams dropped"
                ),
                None => warn_event!(
                    counter = counter.name(),
                    reason = ?reason,
                    dropped,
                    total = slot.total,
                    "datagrams dropped"
                ),
            }
        }
        #[cfg(not(feature = "tracing"))]
        {
            let _ = (now, counter, reason, peer);
        }
    }
}

#[cfg(all(test, feature = "tracing"))]
mod tests {
    use super::*;

    /// The limiter's bookkeeping, on a virtual clock (what it warns is
    /// checked by tests/tracing_events.rs with a capturing subscriber).
    #[test]
    fn warns_first_then_once_per_interval_per_counter() {
        let t0 = Instant::now();
        let mut w = DropWarnings::default();
        for i in 0..1000u64 {
            // 1000 drops over 2.5 s of virtual time.
            let now = t0 + Duration::from_micros(i * 2500);
            w.note(now, DropCounter::InCsumErrors, &"x", None);
        }
        let s = w.slots[DropCounter::InCsumErrors as usize];
        assert_eq!(s.total, 1000);
        // Warnings at 0, 1.0 and 2.0 s: drops 0, 400 and 800; 199 pending.
        assert_eq!(s.pending, 199);
        assert_eq!(s.quiet_until, Some(t0 + Duration::from_millis(3000)));
        // Another counter has its own limit.
        w.note(t0, DropCounter::InErrs, &"y", None);
        assert_eq!(w.slots[DropCounter::InErrs as usize].pending, 0);
    }
}
