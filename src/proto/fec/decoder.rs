//! The receiving side: shard sets, recovery and auto-tune (§4.3, §4.5).
//!
//! Behaviour follows kcp-go v5.7.6 where v5.6 and v5.7 differ (§12): the
//! v5.7 period finder (see [`super::autotune`]), auto-tune accepting
//! `data + parity <= 256` (v5.6: `< 256`, so a 128+128 peer was never
//! followed), and `newestShardId` recomputed from the current seqid on a
//! retune (v5.6 kept it in the old layout's units, so after tuning to a
//! bigger group every new set looked too old and was discarded until the
//! seqids caught up). v5.7 is the behaviour that recovers more, and a v5.6
//! peer cannot observe the difference: the decoder sends nothing.
//!
//! Two deliberate differences from every kcp-go version:
//!
//! * **Recovered shards need a confirmed layout.** Reed-Solomon with the
//!   wrong `(data, parity)` rebuilds garbage that can look like a valid KCP
//!   segment (right conv, XOR-ed sn/frg), and a set can fill with packets
//!   that all fit the local layout while the peer uses another one (peer
//!   3+2, local 4+4, parity 3 delayed: 0..2 and 4 fit 4+4). So a rebuilt
//!   shard reaches KCP only when the layout is *confirmed*: since the last
//!   retune or layout mismatch, the auto-tuner has seen a complete data
//!   pulse of width `data` starting on a group boundary and a complete
//!   parity pulse of width `parity` ending on one (seqids contiguous, each
//!   with the type its position predicts; `AutoTune::confirms`). Every run
//!   of an encoder that keeps one layout has that layout's widths and
//!   alignment, so confirmation is sound for it; a packet whose type
//!   contradicts the layout withdraws the confirmation, and evidence from
//!   before it no longer counts.
//!   A set that fills while the layout is unconfirmed waits (at most while
//!   it stays among the 4 live sets, holding `data` shards, so memory stays
//!   bounded) and is rebuilt when confirmation is found (looked for at
//!   each group's pulse edges and when a set starts waiting); one that is
//!   discarded, retuned away or overtaken by a mismatch first is dropped,
//!   and its missing data shards are counted in
//!   [`FecStats::fec_withheld`]. A decoder meeting an honest peer with the
//!   same layout confirms once it has seen `data + 2` and `parity + 2`
//!   consecutive packets around group boundaries, typically in the second
//!   group. Not covered: a peer that restarts with another layout
//!   and seqids overlapping a set still waiting, whose packets all fit.
//! * **A fresh decoder takes its first set's id as the newest.** kcp-go
//!   starts `newestShardId` at 0, so sets whose seqids lie in the upper half
//!   of the u32 space (a long-running encoder, a peer restart) look more
//!   than 2^31 behind and are discarded until the seqids wrap. The encoder
//!   is unaffected: seqids still run up to `paws - 1` and wrap to 0, which
//!   the wrap-aware comparisons treat as moving forward.

use std::cell::Cell;

use super::autotune::{AutoTune, AUTO_TUNE_SAMPLES};
use super::encoder::SHARD_STRIDE;
use super::rs::ReedSolomon;
use super::slots::Slots;
use super::{
    checked_layout, get_u16, get_u32, paws, FecStats, FEC_HEADER_SIZE, FEC_HEADER_SIZE_PLUS2,
    MAX_SHARD_SETS, MAX_TOTAL_SHARDS, MTU_LIMIT, TYPE_DATA, TYPE_PARITY,
};
use crate::error::{Error, Result};
use crate::kcp::PacketKind;

/// Shard sets alive after a packet: the newest and `MAX_SHARD_SETS` behind it.
const MAX_LIVE_SETS: usize = MAX_SHARD_SETS as usize + 1;
/// Slots: the live sets plus one for the packet being processed.
const SET_SLOTS: usize = MAX_LIVE_SETS + 1;

thread_local! {
    /// Rebuilt data shards of the recovery in progress. Shared by every
    /// decoder on the thread: a recovery is over before `rebuild` returns, so
    /// a per-decoder buffer (up to `parity` full shards) would sit unused
    /// between recoveries in every session. Taken out while in use, so a
    /// decoder driven from inside another's output callback just gets a
    /// fresh one.
    static RECOVERED: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

#[derive(Debug, Clone, Copy)]
struct Held {
    /// Position in the group (seqid mod group size).
    pos: u16,
    data: bool,
    /// Shard length (packet length - 6).
    len: u16,
    /// Index of the arena chunk holding the shard.
    chunk: u32,
}

#[derive(Debug, Clone, Default)]
struct ShardSet {
    active: bool,
    /// Full but not rebuilt yet: waiting for the layout to be confirmed.
    pending: bool,
    /// Consumed: every data shard arrived or was rebuilt. Later shards of
    /// the set (parity sent after its data, duplicates) can only rebuild
    /// what was delivered already, so they are counted and not stored;
    /// kcp-go stores them until the set falls behind (about 12 KB a
    /// session at 10/3). A set dropped unrebuilt is not consumed.
    done: bool,
    id: u32,
    /// Auto-tune arrival number of the set's first shard.
    born: u64,
    /// Positions held (kcp-go's `marks`; cleared when the set is consumed).
    marks: [u64; 4],
    held: Vec<Held>,
}

/// Memory held by a decoder, for tests and monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FecMemory {
    /// Shard sets alive (at most 4).
    pub live_sets: usize,
    /// Shards stored in those sets.
    pub held_shards: usize,
    /// Bytes of shard storage allocated: the arena, grown as shards are held
    /// (the buffer for rebuilt shards is shared per thread, not counted).
    pub buffer_bytes: usize,
}

/// kcp-go's `fecDecoder` (v5.7.6) with its session-side handling of data
/// packets and recovered shards (§4.3), plus the layout confirmation that
/// keeps wrongly rebuilt shards out of KCP (module docs of `fec::decoder`).
///
/// Memory is bounded whatever the peer sends: packets over 1500 bytes are
/// rejected, at most 4 shard sets live at once, each holds at most
/// `data_shards` shards (exactly that many only while waiting for the layout
/// to be confirmed), and shard storage is a reused arena that grows only as
/// far as shards are actually held at once, at the stride of the longest
/// shard seen.
#[derive(Clone)]
pub struct FecDecoder {
    data_shards: usize,
    parity_shards: usize,
    shard_size: u32,
    paws: u32,
    /// Built on the first recovery after (re)configuration: tuning to a new
    /// pair is then cheap even when a peer flips patterns on purpose.
    rs: Option<ReedSolomon>,
    sets: [ShardSet; SET_SLOTS],
    newest: u32,
    /// False until the first shard is stored (then `newest` is its set).
    newest_known: bool,
    autotune: Box<AutoTune>,
    should_tune: bool,
    /// The layout has been seen whole since `since` (module docs).
    confirmed: bool,
    /// Auto-tune arrival number from which evidence counts: the sample after
    /// the last layout mismatch.
    since: u64,
    /// Shard storage: one chunk per held shard, at most `SET_SLOTS * data`.
    arena: Slots,
    free: Vec<u32>,
    positions: Vec<usize>,
    src_offs: Vec<usize>,
    dst_offs: Vec<usize>,
    missing: Vec<usize>,
    stats: FecStats,
}

impl std::fmt::Debug for FecDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FecDecoder")
            .field("data_shards", &self.data_shards)
            .field("parity_shards", &self.parity_shards)
            .field("newest_shard_id", &self.newest)
            .field("should_tune", &self.should_tune)
            .field("confirmed", &self.confirmed)
            .field("memory", &self.memory())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl FecDecoder {
    /// A decoder expecting `data_shards` + `parity_shards` (both >= 1, total
    /// <= 256; `Error::InvalidConfig` otherwise). It re-tunes itself to what
    /// the peer actually sends, so `new(1, 1)` is the right choice for a side
    /// that has no FEC configured but receives FEC packets (kcp-go does that).
    pub fn new(data_shards: usize, parity_shards: usize) -> Result<FecDecoder> {
        let shard_size = checked_layout("FEC decoder", data_shards, parity_shards)? as u32;
        let mut dec = FecDecoder {
            data_shards,
            parity_shards,
            shard_size,
            paws: paws(shard_size),
            rs: None,
            sets: Default::default(),
            newest: 0,
            newest_known: false,
            autotune: Box::new(AutoTune::new()),
            should_tune: false,
            confirmed: false,
            since: 0,
            arena: Slots::default(),
            free: Vec::new(),
            positions: Vec::new(),
            src_offs: Vec::new(),
            dst_offs: Vec::new(),
            missing: Vec::new(),
            stats: FecStats::default(),
        };
        dec.reserve_scratch();
        Ok(dec)
    }

    /// Sizes the small per-recovery scratch (offsets, positions) for the
    /// current layout up front, so the first occurrence of a bigger loss
    /// pattern does not allocate. Shard storage is not reserved: it grows
    /// in `alloc_chunk`.
    fn reserve_scratch(&mut self) {
        let d = self.data_shards;
        for v in [
            &mut self.positions,
            &mut self.src_offs,
            &mut self.dst_offs,
            &mut self.missing,
        ] {
            v.clear();
            v.reserve_exact(d);
        }
        self.free
            .reserve_exact((SET_SLOTS * d).saturating_sub(self.free.len()));
        for set in &mut self.sets {
            set.held.reserve_exact(d.saturating_sub(set.held.len()));
        }
    }

    /// Data shards per group currently expected (after auto-tune).
    pub fn data_shards(&self) -> usize {
        self.data_shards
    }

    /// Parity shards per group currently expected (after auto-tune).
    pub fn parity_shards(&self) -> usize {
        self.parity_shards
    }

    /// Counters.
    pub fn stats(&self) -> &FecStats {
        &self.stats
    }

    /// Memory currently held.
    pub fn memory(&self) -> FecMemory {
        let live = self.sets.iter().filter(|s| s.active);
        FecMemory {
            live_sets: live.clone().count(),
            held_shards: live.map(|s| s.held.len()).sum(),
            buffer_bytes: self.arena.capacity(),
        }
    }

    /// Processes one FEC packet (type 0xF1 or 0xF2; `pkt` is the plaintext
    /// after the crypto header). A data packet's KCP bytes (after the size
    /// field) go to `out(.., PacketKind::Regular)` at once; then every data
    /// shard this packet allowed to rebuild goes to `out(.., Recovered)` in
    /// group order (its bytes `2..size`, only when `2 <= size <= length`).
    /// Rebuilding needs a confirmed layout (module docs): a set that fills
    /// before that waits, and is rebuilt by the packet that confirms it, sets
    /// oldest first.
    ///
    /// `Error::Truncated` below 8 bytes; `Error::Malformed` for another type
    /// or a packet over 1500 bytes. Both are counted in `malformed`; nothing
    /// is delivered for them. Old, duplicate or unexpected packets are not
    /// errors: kcp-go ignores them silently.
    pub fn decode(&mut self, pkt: &[u8], out: &mut impl FnMut(&[u8], PacketKind)) -> Result<()> {
        if pkt.len() < FEC_HEADER_SIZE_PLUS2 {
            self.stats.malformed += 1;
            return Err(Error::Truncated("FEC packet shorter than 8 bytes"));
        }
        if pkt.len() > MTU_LIMIT {
            // kcp-go reads into 1500-byte buffers: no peer sends more (§1.9).
            self.stats.malformed += 1;
            return Err(Error::Malformed("FEC packet longer than 1500 bytes"));
        }
        let (Some(seqid), Some(kind)) = (get_u32(pkt, 0), get_u16(pkt, 4)) else {
            self.stats.malformed += 1;
            return Err(Error::Truncated("FEC packet shorter than 8 bytes"));
        };
        let is_data = match kind {
            TYPE_DATA => true,
            TYPE_PARITY => false,
            _ => {
                self.stats.malformed += 1;
                return Err(Error::Malformed("not an FEC data or parity packet"));
            }
        };
        if is_data {
            out(&pkt[FEC_HEADER_SIZE_PLUS2..], PacketKind::Regular);
        }

        self.autotune.sample(is_data, seqid);
        if seqid >= self.paws {
            return Ok(());
        }
        let pos = seqid % self.shard_size;
        if (pos < self.data_shards as u32) != is_data {
            self.should_tune = true;
            self.mismatch();
        }
        if self.should_tune {
            self.tune(seqid);
            return Ok(());
        }

        let shard_id = seqid / self.shard_size;
        let slot = match self.sets.iter().position(|s| s.active && s.id == shard_id) {
            Some(slot) => slot,
            None => {
                // At most MAX_LIVE_SETS are active between packets, so a slot
                // is free.
                let Some(slot) = self.sets.iter().position(|s| !s.active) else {
                    return Err(Error::Malformed("FEC shard set table full"));
                };
                let set = &mut self.sets[slot];
                set.active = true;
                set.pending = false;
                set.done = false;
                set.id = shard_id;
                set.born = self.autotune.arrivals() - 1;
                set.marks = [0; 4];
                set.held.clear();
                self.stats.fec_shard_set += 1;
                slot
            }
        };
        let bit = 1u64 << (pos % 64);
        // A waiting set already holds all it needs; more shards for it are
        // dropped like duplicates.
        if self.sets[slot].pending || self.sets[slot].marks[pos as usize / 64] & bit != 0 {
            return Ok(());
        }
        if !is_data {
            self.stats.fec_parity_shards += 1;
        }
        // A consumed set only remembers the position (so a repeat is
        // ignored as kcp-go ignores it); its shard is not stored.
        let done = self.sets[slot].done;
        if done {
            self.sets[slot].marks[pos as usize / 64] |= bit;
        } else {
            let shard = &pkt[FEC_HEADER_SIZE..];
            let chunk = self.alloc_chunk(shard.len());
            let at = self.arena.offset(chunk as usize);
            self.arena.bytes_mut()[at..at + shard.len()].copy_from_slice(shard);
            let set = &mut self.sets[slot];
            set.marks[pos as usize / 64] |= bit;
            set.held.push(Held {
                pos: pos as u16,
                data: is_data,
                len: shard.len() as u16,
                chunk,
            });
        }

        let s = self.shard_size;
        if !self.newest_known
            || (shard_id
                .wrapping_mul(s)
                .wrapping_sub(self.newest.wrapping_mul(s)) as i32)
                > 0
        {
            self.newest = shard_id;
            self.newest_known = true;
            self.stats.fec_shard_min = shard_id as u64;
        }

        let mut now_pending = false;
        if !done && self.sets[slot].held.len() >= self.data_shards {
            self.filled(slot, out);
            now_pending = self.sets[slot].pending;
        }
        self.discard_old();

        // Looked for until found, at the packets that end a pulse (group
        // position 0 or `data`) and when a set starts waiting: a window
        // completed by a late packet is then seen at the next edge while
        // still in the 258-sample ring, and the sort (at most 258 samples)
        // runs about three times per group, not per packet. With groups over
        // 127 shards the two pulses fill half the ring or more and may be
        // visible for a few packets only, so those look after every stored
        // packet (kcp-go sorts twice per packet while tuning).
        let edge = pos == 0 || pos == self.data_shards as u32;
        let big = 2 * self.shard_size as usize + 4 > AUTO_TUNE_SAMPLES;
        if !self.confirmed
            && (edge || big || now_pending)
            && self
                .autotune
                .confirms(self.data_shards, self.parity_shards, self.paws, self.since)
        {
            self.confirmed = true;
            self.release_pending(out);
        }
        Ok(())
    }

    /// A packet's type contradicts the layout: the confirmation goes, with
    /// everything it would have covered (sets waiting for it are dropped).
    fn mismatch(&mut self) {
        self.confirmed = false;
        self.since = self.autotune.arrivals();
        for slot in 0..SET_SLOTS {
            if self.sets[slot].active && self.sets[slot].pending {
                self.withhold(slot);
            }
        }
    }

    /// Drops a full set unrebuilt, counting its missing data shards. The set
    /// stays alive and empty, like a consumed one.
    fn withhold(&mut self, slot: usize) {
        let set = &mut self.sets[slot];
        let data = set.held.iter().filter(|h| h.data).count();
        self.stats.fec_withheld += self.data_shards.saturating_sub(data) as u64;
        self.clear_set(slot);
    }

    fn clear_set(&mut self, slot: usize) {
        let set = &mut self.sets[slot];
        for h in set.held.drain(..) {
            self.free.push(h.chunk);
        }
        set.marks = [0; 4];
        set.pending = false;
    }

    /// The set holds `data_shards` shards.
    fn filled(&mut self, slot: usize, out: &mut impl FnMut(&[u8], PacketKind)) {
        let set = &self.sets[slot];
        if set.held.iter().filter(|h| h.data).count() == self.data_shards {
            self.stats.fec_full_shard_set += 1;
            self.clear_set(slot);
            self.sets[slot].done = true;
        } else if set.born < self.since {
            // Started before the last mismatch: part of it may come from
            // another layout.
            self.withhold(slot);
        } else if self.confirmed {
            self.rebuild(slot, out);
        } else {
            self.sets[slot].pending = true;
        }
    }

    /// Rebuilds the waiting sets, oldest first, once the layout is confirmed.
    fn release_pending(&mut self, out: &mut impl FnMut(&[u8], PacketKind)) {
        let s = self.shard_size;
        let newest = self.newest.wrapping_mul(s);
        loop {
            let oldest = (0..SET_SLOTS)
                .filter(|&i| self.sets[i].active && self.sets[i].pending)
                .max_by_key(|&i| newest.wrapping_sub(self.sets[i].id.wrapping_mul(s)) as i32);
            let Some(slot) = oldest else { break };
            self.rebuild(slot, out);
        }
    }

    /// Auto-tune step while packet types disagree with the expected layout
    /// (kcp-go v5.7: a total of up to 256 is accepted, and `newestShardId`
    /// restarts from the seqid that completed the retune).
    fn tune(&mut self, seqid: u32) {
        let (ds, ps) = self.autotune.find_periods();
        if ds > 0 && ps > 0 && ds + ps <= MAX_TOTAL_SHARDS as i32 {
            let (ds, ps) = (ds as usize, ps as usize);
            if ds != self.data_shards || ps != self.parity_shards {
                crate::trace::info!(
                    data_shards = ds,
                    parity_shards = ps,
                    was_data = self.data_shards,
                    was_parity = self.parity_shards,
                    "FEC layout retuned to the peer's"
                );
                for slot in 0..SET_SLOTS {
                    if self.sets[slot].active && self.sets[slot].pending {
                        self.withhold(slot);
                    }
                }
                self.data_shards = ds;
                self.parity_shards = ps;
                self.shard_size = (ds + ps) as u32;
                self.paws = paws(self.shard_size);
                self.rs = None;
                self.confirmed = false;
                for set in &mut self.sets {
                    set.active = false;
                    set.pending = false;
                    set.held.clear();
                }
                // Every chunk is free now; drop storage grown for the old
                // layout (it grows again as the new one needs).
                self.free.clear();
                self.arena.release();
                self.reserve_scratch();
                self.newest = seqid / self.shard_size;
                self.newest_known = true;
                self.stats.fec_shard_min = self.newest as u64;
            }
            self.should_tune = false;
        }
    }

    /// A chunk for a shard of `len` bytes. The arena grows by one chunk when
    /// every chunk is in use, and its stride only when a longer shard than
    /// ever before arrives: it ends up exactly as large as the most shards
    /// held at once, and allocates only when that high-water mark rises (at
    /// most `SET_SLOTS * data` times per layout), never in steady traffic.
    /// It never holds more than `SET_SLOTS * data` chunks of at most
    /// `SHARD_STRIDE` bytes: chunks go back to `free` whenever a set is
    /// consumed or dropped, and a set holds at most `data` shards.
    fn alloc_chunk(&mut self, len: usize) -> u32 {
        self.arena.fit_len(len);
        if let Some(c) = self.free.pop() {
            return c;
        }
        self.arena.push(1) as u32
    }

    /// The full set lacks data shards and its layout is confirmed: rebuild
    /// what is missing, deliver it, and empty the set (it stays alive, so
    /// its stragglers are known and dropped, `docs/wire.md` §4.3).
    fn rebuild(&mut self, slot: usize, out: &mut impl FnMut(&[u8], PacketKind)) {
        let d = self.data_shards;
        let set = &mut self.sets[slot];
        {
            let max_len = set.held.iter().map(|h| h.len as usize).max().unwrap_or(0);
            set.held.sort_unstable_by_key(|h| h.pos);
            self.positions.clear();
            self.src_offs.clear();
            for h in &set.held {
                let at = self.arena.offset(h.chunk as usize);
                self.arena.bytes_mut()[at + h.len as usize..at + max_len].fill(0);
                self.positions.push(h.pos as usize);
                self.src_offs.push(at);
            }
            self.missing.clear();
            self.missing
                .extend((0..d).filter(|&i| set.marks[i / 64] & (1 << (i % 64)) == 0));
            let mut recovered = RECOVERED.take();
            let need = self.missing.len() * max_len;
            if recovered.len() < need {
                // Sized once for the worst case of this layout, so varying
                // loss patterns and lengths do not grow it step by step.
                let most = d.min(self.parity_shards) * SHARD_STRIDE;
                recovered.resize(need.max(most), 0);
            }
            self.dst_offs.clear();
            self.dst_offs
                .extend((0..self.missing.len()).map(|k| k * max_len));
            let rs = match &mut self.rs {
                Some(rs) => Ok(rs),
                None => ReedSolomon::new(d, self.parity_shards).map(|rs| self.rs.insert(rs)),
            };
            let ok = rs.is_ok_and(|rs| {
                rs.reconstruct_offsets(
                    &self.positions,
                    self.arena.bytes(),
                    &self.src_offs,
                    &mut recovered,
                    &self.dst_offs,
                    max_len,
                )
                .is_ok()
            });
            if ok {
                for k in 0..self.missing.len() {
                    let r = &recovered[k * max_len..(k + 1) * max_len];
                    if let Some(size) = get_u16(r, 0) {
                        let size = size as usize;
                        if (2..=r.len()).contains(&size) {
                            out(&r[2..size], PacketKind::Recovered);
                        }
                    }
                }
                self.stats.fec_recovered += self.missing.len() as u64;
            } else {
                self.stats.fec_errs += 1;
            }
            RECOVERED.set(recovered);
        }
        self.clear_set(slot);
        self.sets[slot].done = true;
    }

    /// Drops sets more than `MAX_SHARD_SETS` groups behind the newest.
    ///
    /// kcp-go keeps a set when `int32(newest*S - id*S) <= 3*S`, which also
    /// keeps sets that look more than 2^31 "ahead"; a peer jumping seqids by
    /// ~2^31 could then pile up sets without bound. Here such sets go too,
    /// so at most 4 stay. Both rules agree for any peer whose seqids move
    /// forward by less than 2^31 at a time.
    fn discard_old(&mut self) {
        let s = self.shard_size;
        let newest = self.newest.wrapping_mul(s);
        let mut live = 0;
        for set in &mut self.sets {
            if !set.active {
                continue;
            }
            let behind = newest.wrapping_sub(set.id.wrapping_mul(s)) as i32;
            if (0..=(MAX_SHARD_SETS * s) as i32).contains(&behind) {
                live += 1;
            } else {
                if set.pending {
                    let data = set.held.iter().filter(|h| h.data).count();
                    self.stats.fec_withheld += self.data_shards.saturating_sub(data) as u64;
                }
                set.active = false;
                set.pending = false;
                for h in set.held.drain(..) {
                    self.free.push(h.chunk);
                }
            }
        }
        self.stats.fec_shard_set = live;
    }
}
