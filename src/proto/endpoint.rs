//! The listener's routing rules as a pure state machine: which session a
//! datagram belongs to, when a new one opens, which one a full table gives
//! up, and how every refusal is counted.
//!
//! Why a separate type: these rules are what kcp-go interoperability and
//! the flood resistance of a listener rest on, and they are easiest to get
//! right (and to prove right) without sockets, tasks, locks or clocks. The
//! [`Endpoint`] sees only a sender address, an opened plaintext, the time
//! (passed in) and what the caller tells it; it answers with an [`Event`].
//! `listener::ListenTask` is the glue that owns the socket and the sessions
//! and does what the event says.
//!
//! Rules forced by the wire (docs/wire.md §6.2): the conv is read from the
//! plaintext (after the FEC header for 0xF1 data and OOB); a different conv
//! from a known address replaces the session only when the segment's sn is
//! 0 (a restarted kcp-go client), any other sn is a segment of a foreign
//! conversation; parity and short FEC data carry no conv and so can only
//! go to a known address. Our own additions: every refusal is counted
//! (§3), the table is bounded with the eviction rule below, and a first
//! datagram that KCP rejects entirely opens nothing.
//!
//! Eviction (a full table, a newcomer): first the unproven connection
//! (its peer never acknowledged our data) heard from least recently, among
//! those at least [`EVICT_GRACE`] old; else the proven one silent longest,
//! if silent at least [`EVICT_SILENT_AFTER`]; else the newcomer is dropped.
//! One table scan remembers up to [`EVICT_BATCH`] candidates in that order,
//! and each newcomer takes the first still evictable; a scan that finds
//! nothing holds off the next one for [`EVICT_RESCAN`], so a flood against
//! live, proven peers does not cost a table walk per datagram.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::codec::{self, Demux, InputReport, OpenError, PacketType, MIN_PLAINTEXT};
use crate::stats::{Counters, DropCounter};
use crate::trace::{self, DropWarnings, Span};

/// A proven connection may be evicted for a newcomer only after this long
/// without a datagram from its peer. kcp-go has no close on the wire: a
/// closed client just goes silent, and this is how its slot is reused
/// before the idle timeout.
pub(crate) const EVICT_SILENT_AFTER: Duration = Duration::from_secs(3);
/// A new connection cannot be evicted before it is this old, so a client
/// can complete the round trip that proves it even while a flood of new
/// addresses keeps the table full.
pub(crate) const EVICT_GRACE: Duration = Duration::from_secs(1);
/// Eviction candidates remembered per scan of the table.
const EVICT_BATCH: usize = 64;
/// After a scan found nothing evictable, newcomers are dropped without
/// another scan for this long.
const EVICT_RESCAN: Duration = Duration::from_millis(50);

/// Names one connection of an [`Endpoint`]. The index is small and dense
/// (the caller can keep its sessions in a `Vec` by [`index`](Self::index));
/// the generation makes an id of a removed connection never match the
/// connection that later reuses its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ConnId {
    index: u32,
    generation: u32,
}

impl ConnId {
    /// The slot of this connection, below the number of slots ever used.
    pub(crate) fn index(self) -> usize {
        self.index as usize
    }
}

/// Whether the accept backlog can take one more session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backlog {
    /// There is room.
    Room,
    /// Full: newcomers are refused.
    Full,
}

/// Why the caller must close a connection before opening the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retire {
    /// Its peer restarted with a new conv (§6.2): closed like a local close.
    Replaced,
    /// The table is full and it lost by the eviction rule.
    Evicted,
}

/// Why a datagram was refused; each maps to one SNMP counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// Shorter than the crypto header (`InErrs`; kcp-go does not count it).
    Truncated,
    /// CRC or AEAD check failed (`InCsumErrors`).
    Integrity,
    /// The cipher returned a plaintext range outside the datagram (`InErrs`).
    BadRange,
    /// Plaintext shorter than [`MIN_PLAINTEXT`] (`KCPInErrors`).
    ShortPlaintext,
    /// Raw KCP shorter than a segment header (`KCPInErrors`).
    NotKcp,
    /// A known address sent another conv with sn ≠ 0 (`KCPInErrors`, §6.2).
    ForeignConv,
    /// The address's session is closed but not yet removed (`InErrs`).
    SessionClosed,
    /// Parity or short FEC data from an unknown address (`InErrs`, §6.2).
    NoConv,
    /// The endpoint no longer accepts (`InErrs`).
    NotAccepting,
    /// The accept backlog is full (`InErrs`).
    BacklogFull,
    /// The table is full and nobody is evictable (`InErrs`).
    TableFull,
    /// The caller could not build the session (`InErrs`).
    BuildFailed,
    /// The first datagram had no segment KCP accepted and is not OOB
    /// (`KCPInErrors`).
    KcpRejected,
}

impl DropReason {
    /// Where this refusal is counted (unchanged from the listener before the
    /// endpoint existed, so Snmp figures stay the same).
    pub(crate) fn counter(self) -> DropCounter {
        use DropReason::*;
        match self {
            Integrity => DropCounter::InCsumErrors,
            ShortPlaintext | NotKcp | ForeignConv | KcpRejected => DropCounter::KcpInErrors,
            Truncated | BadRange | SessionClosed | NoConv | NotAccepting | BacklogFull
            | TableFull | BuildFailed => DropCounter::InErrs,
        }
    }
}

impl From<OpenError> for DropReason {
    fn from(e: OpenError) -> DropReason {
        match e {
            OpenError::Short => DropReason::Truncated,
            OpenError::Integrity => DropReason::Integrity,
        }
    }
}

/// A newcomer the endpoint admits, pending the caller's session: pass it to
/// [`Endpoint::commit`] with the session's result for the first datagram,
/// or to [`Endpoint::reject`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "an admission must be committed or rejected"]
pub(crate) struct Admission {
    from: SocketAddr,
    conv: u32,
    kind: PacketType,
    retire: Option<(ConnId, Retire)>,
}

impl Admission {
    /// The newcomer's address.
    pub(crate) fn from(&self) -> SocketAddr {
        self.from
    }
    /// The new connection's conv.
    pub(crate) fn conv(&self) -> u32 {
        self.conv
    }
    /// A connection already removed from the table that the caller must
    /// close first, and why.
    pub(crate) fn retire(&self) -> Option<(ConnId, Retire)> {
        self.retire
    }
}

/// What the caller does with a datagram.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// Feed it to this connection's session.
    Route(ConnId),
    /// Open a session for a newcomer (closing `retire` first).
    Open(Admission),
    /// Drop it (already counted). `replaced` is a connection removed because
    /// its peer restarted, which the caller must still close.
    Drop {
        /// Why.
        reason: DropReason,
        /// A connection the caller must close (with `Retire::Replaced`).
        replaced: Option<ConnId>,
    },
}

/// Whether the endpoint takes newcomers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accepting {
    Open,
    Closed,
}

/// Whether a connection's peer has acknowledged data we sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proof {
    Unproven,
    Proven,
}

/// Eviction order: lower goes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    /// Unproven and past its grace period.
    Unproven,
    /// Proven but silent for at least [`EVICT_SILENT_AFTER`].
    Silent,
}

/// Class, then least recently heard, then slot (for a deterministic order).
type Rank = (Class, Instant, u32);

#[derive(Debug)]
struct Conn {
    addr: SocketAddr,
    conv: u32,
    born: Instant,
    heard: Instant,
    proof: Proof,
}

impl Conn {
    fn class(&self, now: Instant) -> Option<Class> {
        match self.proof {
            Proof::Unproven => {
                (now.saturating_duration_since(self.born) >= EVICT_GRACE).then_some(Class::Unproven)
            }
            Proof::Proven => (now.saturating_duration_since(self.heard) >= EVICT_SILENT_AFTER)
                .then_some(Class::Silent),
        }
    }
}

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    conn: Option<Conn>,
}

/// Remembered eviction candidates (see the module doc).
#[derive(Debug, Default)]
struct Evictor {
    /// Best last.
    victims: Vec<ConnId>,
    no_scan_until: Option<Instant>,
    /// Reused by every scan.
    scratch: Vec<(Rank, ConnId)>,
}

/// The listener's address table and routing rules (see the module doc).
#[derive(Debug)]
pub(crate) struct Endpoint {
    by_addr: HashMap<SocketAddr, ConnId>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    len: usize,
    max: Option<usize>,
    accepting: Accepting,
    evictor: Evictor,
    c: Counters,
    /// The listener's `tracing` span (zero-sized without the feature).
    span: Span,
    warnings: DropWarnings,
}

impl Endpoint {
    /// An empty, accepting endpoint holding at most `max` connections
    /// (`None`: unbounded).
    pub(crate) fn new(max: Option<usize>) -> Endpoint {
        Endpoint {
            by_addr: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            max,
            accepting: Accepting::Open,
            evictor: Evictor::default(),
            c: Counters::default(),
            span: trace::listener_span(),
            warnings: DropWarnings::default(),
        }
    }

    /// Names the local address in the listener's span.
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn set_local(&mut self, local: SocketAddr) {
        #[cfg(feature = "tracing")]
        trace::record_local(&self.span, local);
    }

    /// The listener's span; the shells enter it around their receive
    /// work, so drops, evictions and the sessions' own events nest in it.
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// Live connections.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no connections.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stops taking newcomers; known addresses are still routed.
    pub(crate) fn close(&mut self) {
        self.accepting = Accepting::Closed;
    }

    /// Whether [`close`](Self::close) was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.accepting == Accepting::Closed
    }

    /// The connection registered for `addr`.
    pub(crate) fn lookup(&self, addr: SocketAddr) -> Option<ConnId> {
        self.by_addr.get(&addr).copied()
    }

    fn conn(&self, id: ConnId) -> Option<&Conn> {
        let s = self.slots.get(id.index())?;
        (s.generation == id.generation).then_some(s.conn.as_ref()?)
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        let s = self.slots.get_mut(id.index())?;
        if s.generation != id.generation {
            return None;
        }
        s.conn.as_mut()
    }

    /// The peer of `id` sent a datagram its session accepted at `now`.
    pub(crate) fn note_heard(&mut self, id: ConnId, now: Instant) {
        if let Some(c) = self.conn_mut(id) {
            c.heard = now;
        }
    }

    /// The peer of `id` acknowledged data we sent (KCP `snd_una` moved).
    pub(crate) fn note_proven(&mut self, id: ConnId) {
        if let Some(c) = self.conn_mut(id) {
            c.proof = Proof::Proven;
        }
    }

    /// Whether [`note_proven`](Self::note_proven) was called for `id`.
    pub(crate) fn is_proven(&self, id: ConnId) -> bool {
        self.conn(id).is_some_and(|c| c.proof == Proof::Proven)
    }

    /// Removes `id` (its session closed); its address takes newcomers again.
    /// Returns whether it was there.
    pub(crate) fn remove(&mut self, id: ConnId) -> bool {
        let Some(slot) = self.slots.get_mut(id.index()) else {
            return false;
        };
        if slot.generation != id.generation {
            return false;
        }
        let Some(conn) = slot.conn.take() else {
            return false;
        };
        slot.generation = slot.generation.wrapping_add(1);
        self.by_addr.remove(&conn.addr);
        self.free.push(id.index);
        self.len -= 1;
        true
    }

    /// Counts a refusal of a datagram from `from` at `now`: the one place
    /// every dropped datagram is counted (and warned of, rate-limited).
    pub(crate) fn refuse(&mut self, now: Instant, from: SocketAddr, reason: DropReason) {
        let counter = reason.counter();
        counter.count(&mut self.c);
        self.warnings.note(now, counter, &reason, Some(from));
    }

    /// Moves the counts so far into `into`.
    pub(crate) fn drain_counters(&mut self, into: &mut Counters) {
        into.absorb(&mut self.c);
    }

    /// The counts not yet drained.
    #[cfg(test)]
    fn counters(&self) -> &Counters {
        &self.c
    }

    fn drop_with(
        &mut self,
        now: Instant,
        from: SocketAddr,
        reason: DropReason,
        replaced: Option<ConnId>,
    ) -> Event {
        self.refuse(now, from, reason);
        Event::Drop { reason, replaced }
    }

    /// Decides what an opened plaintext `plain` from `from` is for. Drops
    /// are counted here; the route case touches only the address map and
    /// one slot (no scan, no allocation).
    #[must_use]
    pub(crate) fn handle(
        &mut self,
        now: Instant,
        from: SocketAddr,
        plain: &[u8],
        backlog: Backlog,
    ) -> Event {
        if plain.len() < MIN_PLAINTEXT {
            return self.drop_with(now, from, DropReason::ShortPlaintext, None);
        }
        let dm = codec::demux(plain);
        let mut replaced = None;
        match dm {
            Demux::Drop => return self.drop_with(now, from, DropReason::NotKcp, None),
            _ => {
                if let Some(id) = self.lookup(from) {
                    let conv = self.conn(id).map(|c| c.conv);
                    match dm {
                        Demux::Conv(ci) if Some(ci.conv) != conv => {
                            if ci.sn != 0 {
                                // Not a restart (§6.2): a segment of another conv.
                                return self.drop_with(now, from, DropReason::ForeignConv, None);
                            }
                            // The peer restarted with a new conv (§6.2).
                            self.remove(id);
                            replaced = Some(id);
                        }
                        _ => return Event::Route(id),
                    }
                }
            }
        }
        let Demux::Conv(ci) = dm else {
            // Parity or short FEC data from an unknown address (§6.2).
            return self.drop_with(now, from, DropReason::NoConv, replaced);
        };
        if self.accepting == Accepting::Closed {
            return self.drop_with(now, from, DropReason::NotAccepting, replaced);
        }
        if backlog == Backlog::Full {
            return self.drop_with(now, from, DropReason::BacklogFull, replaced);
        }
        let mut retire = replaced.map(|id| (id, Retire::Replaced));
        if self.max.is_some_and(|max| self.len >= max) {
            let victim = match retire {
                None => self.pick_victim(now),
                // Cannot happen (the replaced one made room); never exceed max.
                Some(_) => None,
            };
            let Some(victim) = victim else {
                return self.drop_with(now, from, DropReason::TableFull, replaced);
            };
            #[cfg(feature = "tracing")]
            if let Some(v) = self.conn(victim) {
                trace::info!(
                    peer = %v.addr,
                    conv = v.conv,
                    newcomer = %from,
                    "evicting a session for a newcomer"
                );
            }
            self.remove(victim);
            retire = Some((victim, Retire::Evicted));
        }
        Event::Open(Admission {
            from,
            conv: ci.conv,
            kind: codec::classify(plain),
            retire,
        })
    }

    /// Registers the admitted newcomer once its session took the first
    /// datagram with result `first`, and counts `PassiveOpens`. `None` (and
    /// `KCPInErrors`) when KCP accepted nothing of it and it was not OOB:
    /// junk that happened to decrypt opens no session.
    pub(crate) fn commit(
        &mut self,
        adm: Admission,
        now: Instant,
        first: &InputReport,
    ) -> Option<ConnId> {
        if first.kcp_ok == 0 && adm.kind != PacketType::Oob {
            self.refuse(now, adm.from, DropReason::KcpRejected);
            return None;
        }
        debug_assert!(!self.by_addr.contains_key(&adm.from));
        let conn = Conn {
            addr: adm.from,
            conv: adm.conv,
            born: now,
            heard: now,
            proof: Proof::Unproven,
        };
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.conn = Some(conn);
        let id = ConnId {
            index,
            generation: slot.generation,
        };
        self.by_addr.insert(adm.from, id);
        self.len += 1;
        self.c.passive_opens += 1;
        Some(id)
    }

    /// Drops the admitted newcomer for `reason` (the caller could not build
    /// or queue its session).
    pub(crate) fn reject(&mut self, now: Instant, adm: Admission, reason: DropReason) {
        self.refuse(now, adm.from, reason);
    }

    /// The next eviction victim at `now`, by the rule in the module doc.
    fn pick_victim(&mut self, now: Instant) -> Option<ConnId> {
        let Endpoint { slots, evictor, .. } = self;
        let class_of = |id: ConnId| {
            let s = slots.get(id.index())?;
            if s.generation != id.generation {
                return None;
            }
            s.conn.as_ref()?.class(now)
        };
        for scanned in [false, true] {
            while let Some(id) = evictor.victims.pop() {
                if class_of(id).is_some() {
                    return Some(id);
                }
            }
            if scanned || evictor.no_scan_until.is_some_and(|t| now < t) {
                break;
            }
            evictor.scratch.clear();
            for (index, s) in slots.iter().enumerate() {
                let Some(c) = s.conn.as_ref() else { continue };
                let Some(class) = c.class(now) else { continue };
                let id = ConnId {
                    index: index as u32,
                    generation: s.generation,
                };
                evictor.scratch.push(((class, c.heard, id.index), id));
            }
            if evictor.scratch.is_empty() {
                evictor.no_scan_until = Some(now + EVICT_RESCAN);
                break;
            }
            evictor.no_scan_until = None;
            let keep = evictor.scratch.len().min(EVICT_BATCH);
            evictor
                .scratch
                .select_nth_unstable_by_key(keep - 1, |(r, _)| *r);
            evictor.scratch.truncate(keep);
            evictor
                .scratch
                .sort_unstable_by_key(|(r, _)| std::cmp::Reverse(*r));
            evictor.victims.clear();
            evictor
                .victims
                .extend(evictor.scratch.iter().map(|(_, id)| *id));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    //! The rules on virtual time: no sockets, no clock, exact events and
    //! counts.

    use super::*;
    use crate::stats::Snmp;

    /// A raw KCP PUSH segment header (docs/wire.md §5.1) plus `data`.
    fn push(conv: u32, sn: u32, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&conv.to_le_bytes());
        v.push(81); // IKCP_CMD_PUSH
        v.push(0); // frg
        v.extend_from_slice(&32u16.to_le_bytes()); // wnd
        v.extend_from_slice(&0u32.to_le_bytes()); // ts
        v.extend_from_slice(&sn.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes()); // una
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(data);
        v
    }

    /// An 8-byte FEC header (seqid, flag, size) in front of `body` (§4.2).
    fn fec(flag: u16, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&7u32.to_le_bytes());
        v.extend_from_slice(&flag.to_le_bytes());
        v.extend_from_slice(&((body.len() + 2) as u16).to_le_bytes());
        v.extend_from_slice(body);
        v
    }

    fn fec_data(conv: u32, sn: u32) -> Vec<u8> {
        fec(0xF1, &push(conv, sn, b"x"))
    }

    fn parity() -> Vec<u8> {
        fec(0xF2, &[0xAB; 40])
    }

    fn oob(conv: u32) -> Vec<u8> {
        let mut body = conv.to_le_bytes().to_vec();
        body.extend_from_slice(b"out of band");
        fec(0xF3, &body)
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    const OK: InputReport = InputReport {
        kcp_ok: 1,
        kcp_errors: 0,
    };
    const REJECTED: InputReport = InputReport {
        kcp_ok: 0,
        kcp_errors: 1,
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// `(InErrs, KCPInErrors, InCsumErrors, PassiveOpens)` counted so far
    /// (all 0 without feature `snmp`).
    fn counts(ep: &Endpoint) -> (u64, u64, u64, u64) {
        let s: Snmp = ep.counters().snapshot();
        (
            s.in_errs,
            s.kcp_in_errors,
            s.in_csum_errors,
            s.passive_opens,
        )
    }

    /// What [`counts`] must read: the arguments, or 0s without `snmp`.
    fn expect(in_errs: u64, kcp: u64, csum: u64, opens: u64) -> (u64, u64, u64, u64) {
        if cfg!(feature = "snmp") {
            (in_errs, kcp, csum, opens)
        } else {
            (0, 0, 0, 0)
        }
    }

    /// Opens a connection for `conv` from `from` at `now`, asserting it
    /// needed no retirement.
    fn open(ep: &mut Endpoint, now: Instant, from: SocketAddr, conv: u32) -> ConnId {
        let adm = match ep.handle(now, from, &push(conv, 0, b"hi"), Backlog::Room) {
            Event::Open(adm) => adm,
            e => panic!("expected Open, got {e:?}"),
        };
        assert_eq!(adm.conv(), conv);
        assert_eq!(adm.retire(), None);
        ep.commit(adm, now, &OK).expect("commit")
    }

    fn dropped(reason: DropReason) -> Event {
        Event::Drop {
            reason,
            replaced: None,
        }
    }

    /// The newcomer's admission, asserting what it retires.
    fn admitted(ev: Event, retire: Option<(ConnId, Retire)>) -> Admission {
        match ev {
            Event::Open(adm) => {
                assert_eq!(adm.retire(), retire);
                adm
            }
            e => panic!("expected Open retiring {retire:?}, got {e:?}"),
        }
    }

    #[test]
    fn datagrams_are_routed_by_sender_address() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(None);
        let a = open(&mut ep, t0, addr(1), 10);
        let b = open(&mut ep, t0, addr(2), 20);
        assert_ne!(a, b);
        assert_eq!(ep.len(), 2);
        let t = t0 + ms(5);
        assert_eq!(
            ep.handle(t, addr(1), &push(10, 1, b"a"), Backlog::Room),
            Event::Route(a)
        );
        assert_eq!(
            ep.handle(t, addr(2), &push(20, 1, b"b"), Backlog::Full),
            Event::Route(b)
        );
        // Parity and FEC data carry (or lack) a conv; the address decides.
        assert_eq!(
            ep.handle(t, addr(1), &parity(), Backlog::Room),
            Event::Route(a)
        );
        assert_eq!(
            ep.handle(t, addr(2), &fec_data(20, 3), Backlog::Room),
            Event::Route(b)
        );
        assert_eq!(
            ep.handle(t, addr(1), &oob(10), Backlog::Room),
            Event::Route(a)
        );
        assert_eq!(ep.lookup(addr(1)), Some(a));
        assert_eq!(ep.lookup(addr(3)), None);
        assert_eq!(counts(&ep), expect(0, 0, 0, 2));
    }

    #[test]
    fn a_new_conv_with_sn_zero_replaces_the_session() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(None);
        let a = open(&mut ep, t0, addr(1), 10);
        let adm = admitted(
            ep.handle(t0, addr(1), &push(11, 0, b"restart"), Backlog::Room),
            Some((a, Retire::Replaced)),
        );
        assert_eq!(adm.conv(), 11);
        // The old one is gone at once; the new one is there after commit.
        assert_eq!(ep.lookup(addr(1)), None);
        assert!(ep.is_empty());
        let a2 = ep.commit(adm, t0, &OK).unwrap();
        assert_ne!(a2, a);
        assert_eq!(ep.lookup(addr(1)), Some(a2));
        assert_eq!(
            ep.handle(t0, addr(1), &push(11, 5, b""), Backlog::Room),
            Event::Route(a2)
        );
        // FEC data and OOB (sn reads 0) with a new conv replace too.
        let adm = admitted(
            ep.handle(t0, addr(1), &fec_data(12, 0), Backlog::Room),
            Some((a2, Retire::Replaced)),
        );
        let a3 = ep.commit(adm, t0, &OK).unwrap();
        let adm = admitted(
            ep.handle(t0, addr(1), &oob(13), Backlog::Room),
            Some((a3, Retire::Replaced)),
        );
        assert_eq!(adm.conv(), 13);
        assert!(ep.commit(adm, t0, &REJECTED).is_some(), "OOB needs no KCP");
        assert_eq!(ep.len(), 1);
        assert_eq!(counts(&ep), expect(0, 0, 0, 4));
    }

    #[test]
    fn a_new_conv_with_sn_nonzero_is_a_foreign_segment() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(None);
        let a = open(&mut ep, t0, addr(1), 10);
        assert_eq!(
            ep.handle(t0, addr(1), &push(11, 1, b""), Backlog::Room),
            dropped(DropReason::ForeignConv)
        );
        assert_eq!(
            ep.handle(t0, addr(1), &fec_data(11, 9), Backlog::Room),
            dropped(DropReason::ForeignConv)
        );
        assert_eq!(counts(&ep), expect(0, 2, 0, 1));
        assert_eq!(
            ep.handle(t0, addr(1), &push(10, 1, b""), Backlog::Room),
            Event::Route(a)
        );
    }

    #[test]
    fn conv_less_datagrams_from_unknown_addresses_are_dropped() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(None);
        assert_eq!(
            ep.handle(t0, addr(1), &parity(), Backlog::Room),
            dropped(DropReason::NoConv)
        );
        // 0xF1 data too short to hold a segment header has no conv either.
        let short = fec(0xF1, &[1; 10]);
        assert!(short.len() >= MIN_PLAINTEXT);
        assert_eq!(
            ep.handle(t0, addr(1), &short, Backlog::Room),
            dropped(DropReason::NoConv)
        );
        assert!(ep.is_empty());
        assert_eq!(counts(&ep), expect(2, 0, 0, 0));
    }

    #[test]
    fn short_and_junk_plaintexts_are_kcp_errors() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(None);
        let a = open(&mut ep, t0, addr(1), 10);
        for from in [addr(1), addr(2)] {
            assert_eq!(
                ep.handle(t0, from, &[], Backlog::Room),
                dropped(DropReason::ShortPlaintext)
            );
            assert_eq!(
                ep.handle(t0, from, &[0; MIN_PLAINTEXT - 1], Backlog::Room),
                dropped(DropReason::ShortPlaintext)
            );
            // Raw KCP at least MIN_PLAINTEXT long but under a header.
            assert_eq!(
                ep.handle(t0, from, &push(10, 0, b"")[..20], Backlog::Room),
                dropped(DropReason::NotKcp)
            );
        }
        assert_eq!(counts(&ep), expect(0, 6, 0, 1));
        assert_eq!(ep.lookup(addr(1)), Some(a));
        assert_eq!(ep.len(), 1);
    }

    #[test]
    fn a_closed_endpoint_refuses_newcomers_but_routes_known_addresses() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(None);
        let a = open(&mut ep, t0, addr(1), 10);
        let b = open(&mut ep, t0, addr(2), 20);
        assert!(!ep.is_closed());
        ep.close();
        assert!(ep.is_closed());
        assert_eq!(
            ep.handle(t0, addr(3), &push(30, 0, b""), Backlog::Room),
            dropped(DropReason::NotAccepting)
        );
        assert_eq!(
            ep.handle(t0, addr(1), &push(10, 1, b""), Backlog::Room),
            Event::Route(a)
        );
        // A restart from a known address still retires the old session.
        assert_eq!(
            ep.handle(t0, addr(2), &push(21, 0, b""), Backlog::Room),
            Event::Drop {
                reason: DropReason::NotAccepting,
                replaced: Some(b)
            }
        );
        assert_eq!(ep.lookup(addr(2)), None);
        assert_eq!(ep.len(), 1);
        assert_eq!(counts(&ep), expect(2, 0, 0, 2));
    }

    #[test]
    fn a_full_backlog_refuses_newcomers() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(Some(8));
        let a = open(&mut ep, t0, addr(1), 10);
        assert_eq!(
            ep.handle(t0, addr(2), &push(20, 0, b""), Backlog::Full),
            dropped(DropReason::BacklogFull)
        );
        assert_eq!(
            ep.handle(t0, addr(1), &push(11, 0, b""), Backlog::Full),
            Event::Drop {
                reason: DropReason::BacklogFull,
                replaced: Some(a)
            }
        );
        assert!(ep.is_empty());
        assert_eq!(counts(&ep), expect(2, 0, 0, 1));
    }

    #[test]
    fn a_first_datagram_kcp_rejects_opens_nothing() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(None);
        let adm = admitted(
            ep.handle(t0, addr(1), &push(10, 0, b""), Backlog::Room),
            None,
        );
        assert_eq!(ep.commit(adm, t0, &REJECTED), None);
        assert!(ep.is_empty());
        assert_eq!(ep.lookup(addr(1)), None);
        assert_eq!(counts(&ep), expect(0, 1, 0, 0));
        // The caller's own refusals, counted here too.
        let adm = admitted(ep.handle(t0, addr(1), &oob(10), Backlog::Room), None);
        ep.reject(t0, adm, DropReason::BuildFailed);
        let adm = admitted(
            ep.handle(t0, addr(1), &fec_data(10, 0), Backlog::Room),
            None,
        );
        ep.reject(t0, adm, DropReason::BacklogFull);
        ep.refuse(t0, addr(1), DropReason::SessionClosed);
        assert!(ep.is_empty());
        assert_eq!(counts(&ep), expect(3, 1, 0, 0));
    }

    #[test]
    fn open_failures_map_to_the_counters_they_always_had() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(None);
        ep.refuse(t0, addr(1), OpenError::Integrity.into());
        ep.refuse(t0, addr(1), OpenError::Integrity.into());
        ep.refuse(t0, addr(1), OpenError::Short.into());
        ep.refuse(t0, addr(1), DropReason::BadRange);
        assert_eq!(counts(&ep), expect(2, 0, 2, 0));
        let mut into = Counters::default();
        ep.drain_counters(&mut into);
        assert_eq!(counts(&ep), (0, 0, 0, 0));
        assert_eq!(
            into.snapshot().in_csum_errors,
            if cfg!(feature = "snmp") { 2 } else { 0 }
        );
    }

    #[test]
    fn a_removed_connection_frees_its_address_and_its_id_goes_stale() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(Some(1));
        let a = open(&mut ep, t0, addr(1), 10);
        assert!(ep.remove(a));
        assert!(!ep.remove(a), "removing twice");
        assert!(ep.is_empty());
        // Same address, same conv: a new connection (in the reused slot).
        let a2 = open(&mut ep, t0, addr(1), 10);
        assert_eq!(a2.index(), a.index());
        assert_ne!(a2, a);
        // The stale id touches nothing.
        ep.note_proven(a);
        ep.note_heard(a, t0 + ms(100));
        assert!(!ep.is_proven(a2));
        assert!(!ep.remove(a));
        assert_eq!(ep.lookup(addr(1)), Some(a2));
        assert_eq!(counts(&ep), expect(0, 0, 0, 2));
    }

    #[test]
    fn a_full_table_evicts_unproven_past_grace_least_recently_heard_first() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(Some(3));
        let a = open(&mut ep, t0, addr(1), 1);
        let b = open(&mut ep, t0, addr(2), 2);
        let c = open(&mut ep, t0, addr(3), 3);
        ep.note_heard(a, t0 + ms(300));
        ep.note_heard(c, t0 + ms(200));
        ep.note_proven(b);
        assert!(ep.is_proven(b));
        // Everyone is in the grace period (or proven and talking).
        assert_eq!(
            ep.handle(t0 + ms(900), addr(4), &push(4, 0, b""), Backlog::Room),
            dropped(DropReason::TableFull)
        );
        assert_eq!(ep.len(), 3);
        // Past grace: the unproven one heard least recently (c), then a.
        let t1 = t0 + EVICT_GRACE;
        let adm = admitted(
            ep.handle(t1, addr(4), &push(4, 0, b""), Backlog::Room),
            Some((c, Retire::Evicted)),
        );
        assert_eq!(ep.lookup(addr(3)), None);
        let d = ep.commit(adm, t1, &OK).unwrap();
        let adm = admitted(
            ep.handle(t1, addr(5), &push(5, 0, b""), Backlog::Room),
            Some((a, Retire::Evicted)),
        );
        let e = ep.commit(adm, t1, &OK).unwrap();
        // Left: b (proven, heard at t0, silent < 3 s) and two newcomers in
        // their grace period: nobody.
        assert_eq!(
            ep.handle(t1 + ms(500), addr(6), &push(6, 0, b""), Backlog::Room),
            dropped(DropReason::TableFull)
        );
        // Once d and e are past grace, they go before the proven b.
        ep.note_heard(d, t1 + ms(20));
        ep.note_heard(e, t1 + ms(10));
        let t2 = t1 + EVICT_GRACE;
        let adm = admitted(
            ep.handle(t2, addr(6), &push(6, 0, b""), Backlog::Room),
            Some((e, Retire::Evicted)),
        );
        ep.commit(adm, t2, &OK).unwrap();
        assert_eq!(ep.lookup(addr(2)), Some(b));
        assert_eq!(ep.lookup(addr(4)), Some(d));
        assert_eq!(ep.len(), 3);
        assert_eq!(counts(&ep), expect(2, 0, 0, 6));
    }

    #[test]
    fn a_proven_peer_is_evicted_only_once_silent() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(Some(2));
        let a = open(&mut ep, t0, addr(1), 1);
        let b = open(&mut ep, t0, addr(2), 2);
        ep.note_proven(a);
        ep.note_proven(b);
        ep.note_heard(a, t0 + ms(1000));
        ep.note_heard(b, t0 + ms(2000));
        // Talking peers are never evicted, however old.
        let t = t0 + ms(3900);
        assert_eq!(
            ep.handle(t, addr(3), &push(3, 0, b""), Backlog::Room),
            dropped(DropReason::TableFull)
        );
        // a silent for 3 s: it goes; b (silent 2 s) stays.
        let t = t0 + ms(1000) + EVICT_SILENT_AFTER;
        let adm = admitted(
            ep.handle(t, addr(3), &push(3, 0, b""), Backlog::Room),
            Some((a, Retire::Evicted)),
        );
        let c = ep.commit(adm, t, &OK).unwrap();
        ep.note_proven(c);
        // b keeps talking; c is proven and just heard: nobody, for ever.
        for s in 0..10u64 {
            let t = t + Duration::from_secs(s);
            ep.note_heard(b, t);
            ep.note_heard(c, t);
            assert_eq!(
                ep.handle(t, addr(9), &push(9, 0, b""), Backlog::Room),
                dropped(DropReason::TableFull)
            );
        }
        assert_eq!(ep.lookup(addr(2)), Some(b));
        assert_eq!(ep.lookup(addr(3)), Some(c));
        assert_eq!(counts(&ep), expect(11, 0, 0, 3));
    }

    #[test]
    fn unproven_sessions_go_before_silent_proven_ones_heard_earlier() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(Some(2));
        let a = open(&mut ep, t0, addr(1), 1);
        let b = open(&mut ep, t0, addr(2), 2);
        ep.note_proven(a);
        ep.note_heard(b, t0 + Duration::from_secs(2));
        // Both evictable at t0 + 4 s; a was heard less recently but is
        // proven, so the unproven b goes first, then a.
        let t = t0 + Duration::from_secs(4);
        let adm = admitted(
            ep.handle(t, addr(3), &push(3, 0, b""), Backlog::Room),
            Some((b, Retire::Evicted)),
        );
        ep.commit(adm, t, &OK).unwrap();
        let adm = admitted(
            ep.handle(t, addr(4), &push(4, 0, b""), Backlog::Room),
            Some((a, Retire::Evicted)),
        );
        ep.commit(adm, t, &OK).unwrap();
        assert_eq!(counts(&ep), expect(0, 0, 0, 4));
    }

    #[test]
    fn a_fruitless_scan_holds_off_the_next_for_the_rescan_period() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(Some(1));
        let a = open(&mut ep, t0, addr(1), 1);
        ep.note_proven(a);
        // Silent 3 s at t0 + 3 s; the scan at t0 + 2.99 s finds nobody.
        let t = t0 + ms(2990);
        assert_eq!(
            ep.handle(t, addr(2), &push(2, 0, b""), Backlog::Room),
            dropped(DropReason::TableFull)
        );
        // a became evictable at t0 + 3 s, but no rescan before t + 50 ms.
        for at in [ms(10), ms(30), EVICT_RESCAN - ms(1)] {
            assert_eq!(
                ep.handle(t + at, addr(2), &push(2, 0, b""), Backlog::Room),
                dropped(DropReason::TableFull),
                "{at:?}"
            );
        }
        let adm = admitted(
            ep.handle(t + EVICT_RESCAN, addr(2), &push(2, 0, b""), Backlog::Room),
            Some((a, Retire::Evicted)),
        );
        ep.commit(adm, t + EVICT_RESCAN, &OK).unwrap();
        assert_eq!(counts(&ep), expect(4, 0, 0, 2));
    }

    #[test]
    fn remembered_candidates_are_rechecked_before_eviction() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(Some(2));
        let a = open(&mut ep, t0, addr(1), 1);
        let b = open(&mut ep, t0, addr(2), 2);
        ep.note_heard(b, t0 + ms(1));
        let t1 = t0 + EVICT_GRACE;
        // One scan remembers [a, b]; a goes first.
        let adm = admitted(
            ep.handle(t1, addr(3), &push(3, 0, b""), Backlog::Room),
            Some((a, Retire::Evicted)),
        );
        ep.commit(adm, t1, &OK).unwrap();
        // b proves itself and talks: the remembered b is skipped, the
        // rescan finds nobody (the newcomer is in its grace period).
        ep.note_proven(b);
        ep.note_heard(b, t1);
        assert_eq!(
            ep.handle(t1, addr(4), &push(4, 0, b""), Backlog::Room),
            dropped(DropReason::TableFull)
        );
        assert_eq!(ep.lookup(addr(2)), Some(b));
        // A remembered candidate removed meanwhile is skipped too.
        let mut ep = Endpoint::new(Some(2));
        let a = open(&mut ep, t0, addr(1), 1);
        let b = open(&mut ep, t0, addr(2), 2);
        ep.note_heard(b, t0 + ms(1));
        let adm = admitted(
            ep.handle(t1, addr(3), &push(3, 0, b""), Backlog::Room),
            Some((a, Retire::Evicted)),
        );
        ep.commit(adm, t1, &OK).unwrap();
        assert!(ep.remove(b));
        let c = open(&mut ep, t1, addr(4), 4);
        // Table full again, b's slot now holds c (in grace): nobody.
        assert_eq!(c.index(), b.index());
        assert_eq!(
            ep.handle(t1, addr(5), &push(5, 0, b""), Backlog::Room),
            dropped(DropReason::TableFull)
        );
        assert_eq!(ep.lookup(addr(4)), Some(c));
    }

    #[test]
    fn an_unbounded_table_never_evicts() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(None);
        for p in 1..=200u16 {
            open(&mut ep, t0, addr(p), u32::from(p));
        }
        let t = t0 + Duration::from_secs(60);
        let adm = admitted(
            ep.handle(t, addr(999), &push(999, 0, b""), Backlog::Room),
            None,
        );
        ep.commit(adm, t, &OK).unwrap();
        assert_eq!(ep.len(), 201);
    }

    #[test]
    fn the_batch_scan_evicts_in_order_across_batches() {
        // More candidates than one scan remembers: order holds across scans.
        let t0 = Instant::now();
        let n = EVICT_BATCH * 2 + 5;
        let mut ep = Endpoint::new(Some(n));
        let mut ids = Vec::new();
        for i in 0..n {
            let id = open(&mut ep, t0, addr(1000 + i as u16), i as u32);
            // Heard in reverse order: the last opened was heard first.
            ep.note_heard(id, t0 + ms((n - i) as u64));
            ids.push(id);
        }
        let t = t0 + Duration::from_secs(2);
        for k in 0..n {
            let from = addr(5000 + k as u16);
            let adm = admitted(
                ep.handle(t, from, &push(7, 0, b""), Backlog::Room),
                Some((ids[n - 1 - k], Retire::Evicted)),
            );
            ep.commit(adm, t, &OK).unwrap();
        }
        // Only newcomers in their grace period are left.
        assert_eq!(
            ep.handle(t, addr(9999), &push(7, 0, b""), Backlog::Room),
            dropped(DropReason::TableFull)
        );
    }
}
