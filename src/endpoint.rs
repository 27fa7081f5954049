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

use crate::codec::InputReport;
use crate::codec::{self, Demux, OpenError, PacketType, MIN_PLAINTEXT};
use crate::stats::Counters;

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

/// The SNMP counter a [`DropReason`] is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropCounter {
    /// `InErrs`.
    InErrs,
    /// `KCPInErrors`.
    KcpInErrors,
    /// `InCsumErrors`.
    InCsumErrors,
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
        }
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

    /// Counts a refusal: the one place every dropped datagram is counted.
    pub(crate) fn refuse(&mut self, reason: DropReason) {
        match reason.counter() {
            DropCounter::InErrs => self.c.in_errs += 1,
            DropCounter::KcpInErrors => self.c.kcp_in_errors += 1,
            DropCounter::InCsumErrors => self.c.in_csum_errors += 1,
        }
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

    fn drop_with(&mut self, reason: DropReason, replaced: Option<ConnId>) -> Event {
        self.refuse(reason);
        Event::Drop { reason, replaced }
    }

    /// Decides what an opened plaintext `plain` from `from` is for.
    pub(crate) fn handle(
        &mut self,
        now: Instant,
        from: SocketAddr,
        plain: &[u8],
        backlog: Backlog,
    ) -> Event {
        if plain.len() < MIN_PLAINTEXT {
            return self.drop_with(DropReason::ShortPlaintext, None);
        }
        let dm = codec::demux(plain);
        let mut replaced = None;
        match dm {
            Demux::Drop => return self.drop_with(DropReason::NotKcp, None),
            _ => {
                if let Some(id) = self.lookup(from) {
                    let conv = self.conn(id).map(|c| c.conv);
                    match dm {
                        Demux::Conv(ci) if Some(ci.conv) != conv => {
                            if ci.sn != 0 {
                                // Not a restart (§6.2): a segment of another conv.
                                return self.drop_with(DropReason::ForeignConv, None);
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
            return self.drop_with(DropReason::NoConv, replaced);
        };
        if self.accepting == Accepting::Closed {
            return self.drop_with(DropReason::NotAccepting, replaced);
        }
        if backlog == Backlog::Full {
            return self.drop_with(DropReason::BacklogFull, replaced);
        }
        let mut retire = replaced.map(|id| (id, Retire::Replaced));
        if self.max.is_some_and(|max| self.len >= max) {
            let victim = match retire {
                None => self.pick_victim(now),
                // Cannot happen (the replaced one made room); never exceed max.
                Some(_) => None,
            };
            let Some(victim) = victim else {
                return self.drop_with(DropReason::TableFull, replaced);
            };
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
            self.refuse(DropReason::KcpRejected);
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
    pub(crate) fn reject(&mut self, adm: Admission, reason: DropReason) {
        let _ = adm;
        self.refuse(reason);
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
