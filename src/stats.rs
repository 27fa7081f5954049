//! kcp-go's SNMP counters (§6.5), process-wide and per session.
//!
//! [`Snmp`] has one `u64` per kcp-go `Snmp` field, same names (snake case)
//! and same meaning. [`global()`] is the process-wide view (kcp-go's
//! `DefaultSnmp`); [`Session::stats`](crate::session::Session::stats) and
//! [`Listener::stats`](crate::listener::Listener::stats) give one session's
//! or one listener's share.
//!
//! Sessions keep plain per-session [`Counters`] (no atomics on the packet
//! path) and publish the difference to the global atomics once per batch of
//! work.
//!
//! # Compiling the counters out (feature `snmp`)
//!
//! Counting is the default-on cargo feature `snmp`, the counterpart of
//! kcp-go v5.7's `kcp_no_snmp` build tag (§12). Built with
//! `--no-default-features` (and without `snmp`), [`Counters`] is zero-sized
//! and every increment compiles to nothing, the per-pass snapshot and
//! publication and the process-wide atomics are gone, and [`Snmp`] still
//! exists with the same fields, all of which read 0 (from
//! [`Session::stats`](crate::session::Session::stats),
//! [`Listener::stats`](crate::listener::Listener::stats) and [`global()`]).
//! The pure layers' own per-instance statistics
//! ([`Kcp::stats`](crate::kcp::Kcp::stats), the FEC decoder's and encoder's
//! `stats`) are not SNMP and are kept either way: they are a few adds on the
//! engine's own struct, and the engine's tests compare them.

use std::fmt;
use std::ops::AddAssign;
#[cfg(feature = "snmp")]
use std::sync::atomic::{AtomicU64, Ordering};

/// One counter of [`Counters`]: a `u64`, or nothing without feature `snmp`.
#[cfg(feature = "snmp")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counter(u64);

/// One counter of [`Counters`]: a `u64`, or nothing without feature `snmp`.
#[cfg(not(feature = "snmp"))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counter;

impl Counter {
    #[inline(always)]
    fn get(self) -> u64 {
        #[cfg(feature = "snmp")]
        return self.0;
        #[cfg(not(feature = "snmp"))]
        0
    }
}

impl AddAssign<u64> for Counter {
    #[inline(always)]
    fn add_assign(&mut self, n: u64) {
        #[cfg(feature = "snmp")]
        {
            self.0 = self.0.wrapping_add(n);
        }
        #[cfg(not(feature = "snmp"))]
        let _ = n;
    }
}

/// Without counters there is nothing to store: no cost left on the hot path.
#[cfg(not(feature = "snmp"))]
const _: () = assert!(std::mem::size_of::<Counters>() == 0);

/// Whether a field accumulates (published as a delta) or reports a current
/// level (published by storing the latest value, as kcp-go does).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Counter,
    Gauge,
    /// Maintained directly on the global (CurrEstab, MaxConn).
    Direct,
}

macro_rules! snmp {
    ($( $(#[doc = $doc:literal])* $field:ident = $name:literal, $kind:ident; )*) => {
        /// A snapshot of kcp-go's SNMP counters, in kcp-go's struct field order (§6.5).
        ///
        /// Without the default feature `snmp` every field reads 0 (see the
        /// [module documentation](self)).
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Snmp {
            $( $(#[doc = $doc])* pub $field: u64, )*
        }

        /// The counters one owner (a session, its driver, a listener) adds
        /// to as datagrams pass; the datagram pipeline (`codec`)
        /// takes them by `&mut`. Read them with [`snapshot`](Self::snapshot).
        /// Zero-sized without the feature `snmp`: every increment is then
        /// compiled out and the snapshot reads 0.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Counters {
            $( pub(crate) $field: Counter, )*
        }

        impl Counters {
            /// The current values as an [`Snmp`] (all 0 without `snmp`).
            pub fn snapshot(&self) -> Snmp {
                Snmp { $( $field: self.$field.get(), )* }
            }

            /// Adds every field of `other` to `self` and zeroes `other`.
            #[inline]
            pub(crate) fn absorb(&mut self, other: &mut Counters) {
                $( self.$field += other.$field.get(); )*
                *other = Counters::default();
            }

            /// Whether nothing has been counted (always, without `snmp`).
            #[inline]
            pub(crate) fn is_zero(&self) -> bool {
                *self == Counters::default()
            }
        }

        #[cfg(feature = "snmp")]
        struct GlobalSnmp {
            $( $field: AtomicU64, )*
        }

        #[cfg(feature = "snmp")]
        #[allow(clippy::declare_interior_mutable_const)]
        const ZERO: AtomicU64 = AtomicU64::new(0);

        #[cfg(feature = "snmp")]
        static GLOBAL: GlobalSnmp = GlobalSnmp { $( $field: ZERO, )* };

        const FIELDS: &[(&str, Kind)] = &[ $( ($name, Kind::$kind), )* ];

        impl Snmp {
            /// kcp-go's field names, in struct order.
            pub fn header() -> Vec<&'static str> {
                FIELDS.iter().map(|(n, _)| *n).collect()
            }

            /// The values, in [`header`](Self::header) order.
            pub fn to_vec(&self) -> Vec<u64> {
                vec![ $( self.$field, )* ]
            }

            /// `(name, value)` pairs in struct order.
            pub fn fields(&self) -> impl Iterator<Item = (&'static str, u64)> {
                Self::header().into_iter().zip(self.to_vec())
            }

            /// The value of a field by its kcp-go name (`"InPkts"`, ...).
            pub fn get(&self, name: &str) -> Option<u64> {
                self.fields().find(|(n, _)| *n == name).map(|(_, v)| v)
            }

            #[cfg(feature = "snmp")]
            fn load_global() -> Snmp {
                Snmp { $( $field: GLOBAL.$field.load(Ordering::Relaxed), )* }
            }

            /// Adds `self − published` of every counter to the global and
            /// stores every gauge; then `published = self`.
            #[cfg(feature = "snmp")]
            fn publish_delta(&self, published: &mut Snmp) {
                let mut i = 0usize;
                $(
                    match FIELDS[i].1 {
                        Kind::Counter => {
                            let d = self.$field.wrapping_sub(published.$field);
                            if d != 0 {
                                GLOBAL.$field.fetch_add(d, Ordering::Relaxed);
                            }
                        }
                        Kind::Gauge => {
                            if self.$field != published.$field {
                                GLOBAL.$field.store(self.$field, Ordering::Relaxed);
                            }
                        }
                        Kind::Direct => {}
                    }
                    #[allow(unused_assignments)]
                    { i += 1; }
                )*
                *published = *self;
            }

            #[cfg(feature = "snmp")]
            fn reset_global() {
                $( GLOBAL.$field.store(0, Ordering::Relaxed); )*
            }
        }
    };
}

snmp! {
    /// Bytes accepted by writes from the application.
    bytes_sent = "BytesSent", Counter;
    /// Bytes handed to the application by reads.
    bytes_received = "BytesReceived", Counter;
    /// Highest number of concurrently established sessions.
    max_conn = "MaxConn", Direct;
    /// Sessions dialed.
    active_opens = "ActiveOpens", Counter;
    /// Sessions created by a listener.
    passive_opens = "PassiveOpens", Counter;
    /// Sessions currently established.
    curr_estab = "CurrEstab", Direct;
    /// Datagrams from an unexpected address at a dialed session, datagrams
    /// shorter than the crypto header, FEC packets shorter than their
    /// header, socket read errors; at a listener also datagrams it cannot
    /// place: no conv from an unknown address, a session refused (listener
    /// closed, `max_sessions` reached, backlog full), a session already closed.
    in_errs = "InErrs", Counter;
    /// Datagrams failing the CRC32 or AEAD check.
    in_csum_errors = "InCsumErrors", Counter;
    /// Datagrams (or recovered shards) that KCP rejected, plaintexts
    /// shorter than 12 bytes, raw KCP shorter than a segment header, and at
    /// a listener a segment of another conv from a known address (§6.2).
    kcp_in_errors = "KCPInErrors", Counter;
    /// Datagrams that passed decryption and reached the demultiplexer.
    in_pkts = "InPkts", Counter;
    /// Datagrams written to the socket.
    out_pkts = "OutPkts", Counter;
    /// KCP segments parsed.
    in_segs = "InSegs", Counter;
    /// KCP segments encoded.
    out_segs = "OutSegs", Counter;
    /// Plaintext bytes of the datagrams counted by `InPkts`.
    in_bytes = "InBytes", Counter;
    /// UDP payload bytes written to the socket.
    out_bytes = "OutBytes", Counter;
    /// All retransmitted segments (fast + early + RTO).
    retrans_segs = "RetransSegs", Counter;
    /// Fast retransmissions (duplicate ACK threshold reached).
    fast_retrans_segs = "FastRetransSegs", Counter;
    /// Early retransmissions (kcp-go specific, §5.2).
    early_retrans_segs = "EarlyRetransSegs", Counter;
    /// Segments retransmitted after an RTO (inferred lost).
    lost_segs = "LostSegs", Counter;
    /// Duplicate or out-of-window PUSH segments in regular packets.
    repeat_segs = "RepeatSegs", Counter;
    /// FEC shard sets that arrived complete (nothing to recover).
    fec_full_shard_set = "FECFullShardSet", Counter;
    /// Data shards rebuilt by Reed-Solomon.
    fec_recovered = "FECRecovered", Counter;
    /// Failed reconstructions or encodings.
    fec_errs = "FECErrs", Counter;
    /// Parity shards received.
    fec_parity_shards = "FECParityShards", Counter;
    /// Live FEC shard sets at the decoder (a level).
    fec_shard_set = "FECShardSet", Gauge;
    /// Newest FEC shard id seen by the decoder (kcp-go's misnamed `FECShardMin`).
    fec_shard_min = "FECShardMin", Gauge;
    /// Segments in the KCP send queue (a level).
    ring_buffer_snd_queue = "RingBufferSndQueue", Gauge;
    /// Segments in the KCP receive queue (a level).
    ring_buffer_rcv_queue = "RingBufferRcvQueue", Gauge;
    /// Segments in the KCP send buffer, i.e. in flight (a level).
    ring_buffer_snd_buffer = "RingBufferSndBuffer", Gauge;
    /// Out-of-band (0xF3) datagrams received.
    oob_packets = "OOBPackets", Counter;
}

impl fmt::Display for Snmp {
    /// `Name=value` pairs separated by spaces, kcp-go names.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (name, v) in self.fields() {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{name}={v}")?;
        }
        Ok(())
    }
}

/// The process-wide counters (kcp-go's `DefaultSnmp`): the sum over every
/// session and listener of this process, including closed ones. All 0
/// without the feature `snmp`.
pub fn global() -> Snmp {
    #[cfg(feature = "snmp")]
    return Snmp::load_global();
    #[cfg(not(feature = "snmp"))]
    Snmp::default()
}

/// Zeroes the process-wide counters (kcp-go's `DefaultSnmp.Reset()`).
/// `CurrEstab` is a level and is zeroed too, like kcp-go; it will go out of
/// step if sessions are alive, so use this only in quiet moments.
pub fn reset_global() {
    #[cfg(feature = "snmp")]
    Snmp::reset_global()
}

/// Publishes one owner's counters to the global in deltas.
#[derive(Debug, Default)]
pub(crate) struct Publisher {
    #[cfg(feature = "snmp")]
    published: Snmp,
}

impl Publisher {
    /// Adds what changed since the last call to the global counters.
    #[inline]
    pub(crate) fn publish(&mut self, current: &Snmp) {
        #[cfg(feature = "snmp")]
        if *current != self.published {
            current.publish_delta(&mut self.published);
        }
        #[cfg(not(feature = "snmp"))]
        let _ = current;
    }
}

/// Bookkeeping for `CurrEstab`/`MaxConn` when a session is established.
pub(crate) fn session_opened() {
    #[cfg(feature = "snmp")]
    {
        let cur = GLOBAL.curr_estab.fetch_add(1, Ordering::Relaxed) + 1;
        GLOBAL.max_conn.fetch_max(cur, Ordering::Relaxed);
    }
}

/// Bookkeeping for `CurrEstab` when a session closes.
pub(crate) fn session_closed() {
    // Never wrap below zero, even after a `reset_global` with sessions alive.
    #[cfg(feature = "snmp")]
    let _ = GLOBAL
        .curr_estab
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(1))
        });
}

/// The SNMP counter a dropped datagram is counted in (each refusal maps to
/// one, see `endpoint::DropReason::counter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropCounter {
    /// `InErrs`.
    InErrs,
    /// `KCPInErrors`.
    KcpInErrors,
    /// `InCsumErrors`.
    InCsumErrors,
}

impl DropCounter {
    /// kcp-go's name for the counter.
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) fn name(self) -> &'static str {
        match self {
            DropCounter::InErrs => "InErrs",
            DropCounter::KcpInErrors => "KCPInErrors",
            DropCounter::InCsumErrors => "InCsumErrors",
        }
    }

    /// Increments the counter in `c`.
    pub(crate) fn count(self, c: &mut Counters) {
        match self {
            DropCounter::InErrs => c.in_errs += 1,
            DropCounter::KcpInErrors => c.kcp_in_errors += 1,
            DropCounter::InCsumErrors => c.in_csum_errors += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_has_kcp_go_names_in_struct_order() {
        let h = Snmp::header();
        assert_eq!(h.len(), 30);
        assert_eq!(h[0], "BytesSent");
        assert_eq!(h[9], "InPkts");
        assert_eq!(h[20], "FECFullShardSet");
        assert_eq!(h[29], "OOBPackets");
        let s = Snmp {
            in_pkts: 7,
            fec_recovered: 3,
            ..Snmp::default()
        };
        assert_eq!(s.get("InPkts"), Some(7));
        assert_eq!(s.get("FECRecovered"), Some(3));
        assert_eq!(s.get("Nope"), None);
        let text = s.to_string();
        assert!(text.starts_with("BytesSent=0 BytesReceived=0"), "{text}");
        assert!(text.contains(" InPkts=7 "), "{text}");
    }

    #[test]
    #[cfg(feature = "snmp")]
    fn publisher_adds_deltas_and_stores_gauges() {
        // The global is shared with other tests running in parallel: only
        // check that our own increments are visible (monotone counters).
        let before = global();
        let mut p = Publisher::default();
        let mut s = Snmp {
            oob_packets: 5,
            fec_shard_set: 2,
            ..Snmp::default()
        };
        p.publish(&s);
        s.oob_packets = 8;
        p.publish(&s);
        p.publish(&s);
        let after = global();
        assert!(after.oob_packets >= before.oob_packets + 8);
    }
}
