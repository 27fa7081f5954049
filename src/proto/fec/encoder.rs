//! The sending side: data shards and parity packets (§4.2).

use super::rs::ReedSolomon;
use super::slots::Slots;
use super::{
    encode_oob, paws, put_u16, put_u32, FecStats, FEC_HEADER_SIZE, FEC_HEADER_SIZE_PLUS2,
    MAX_FEC_ENCODE_LATENCY_MS, MAX_SHARD_LEN, TYPE_DATA, TYPE_PARITY,
};
use crate::error::{Error, Result};

/// Largest distance between shard buffers (>= MAX_SHARD_LEN, a multiple of
/// 64 so vector loads of different shards stay apart); buffers use less
/// when no shard that long was seen (see `slots`).
pub(super) const SHARD_STRIDE: usize = 1536;

/// kcp-go's `fecEncoder`: numbers every outgoing KCP datagram as a data shard
/// and produces `parity_shards` parity packets after every `data_shards` of
/// them.
///
/// ```
/// use kcp_session::fec::FecEncoder;
/// let mut enc = FecEncoder::new(2, 1).unwrap();
/// let mut pkt = [0u8; 8 + 3];
/// pkt[8..].copy_from_slice(b"abc");
/// assert_eq!(enc.encode(&mut pkt, 3, 0).unwrap(), 0);
/// assert_eq!(enc.encode(&mut pkt, 3, 10).unwrap(), 1); // group complete
/// let mut parity = [0u8; 64];
/// let n = enc.take_parity(0, &mut parity).unwrap();
/// assert_eq!(&parity[..6], &[2, 0, 0, 0, 0xf2, 0]); // seqid 2, type 0xF2
/// assert_eq!(n, 6 + 2 + 3);
/// ```
#[derive(Clone)]
pub struct FecEncoder {
    data_shards: usize,
    parity_shards: usize,
    paws: u32,
    /// Next seqid.
    next: u32,
    /// Data shards collected in the current group.
    count: usize,
    /// Longest shard (`2 + KCP length`) of the current group.
    max_len: usize,
    /// Time of the previous data packet; `None` before the first, which makes
    /// the first gap "long" as in kcp-go, whose reference starts at 0 on an
    /// epoch clock.
    last_ms: Option<u32>,
    rs: ReedSolomon,
    /// `parity_shards` parity accumulators: each data shard is added in as
    /// it is sent, so data shards are not kept (memory: parity only, at the
    /// stride of the longest shard seen). Bytes `0..max_len` are valid.
    parity: Slots,
    /// Offset of each parity buffer in `parity` (follows its stride).
    dst_offs: Vec<usize>,
    /// A kernel call failed for the current group (a bug, never peer data):
    /// its parity is not sent.
    failed: bool,
    /// Parity packets of the last completed group, valid until the next
    /// `encode`.
    ready: usize,
    parity_seqid: u32,
    parity_len: usize,
    stats: FecStats,
}

impl std::fmt::Debug for FecEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FecEncoder")
            .field("data_shards", &self.data_shards)
            .field("parity_shards", &self.parity_shards)
            .field("next_seqid", &self.next)
            .field("in_group", &self.count)
            .field("parity_ready", &self.ready)
            .finish_non_exhaustive()
    }
}

impl FecEncoder {
    /// An encoder for `data_shards` + `parity_shards` (both >= 1, total <= 256;
    /// `Error::InvalidConfig` otherwise). Parity buffers are allocated on
    /// first use and grow with the longest shard sent (a few times at most).
    pub fn new(data_shards: usize, parity_shards: usize) -> Result<FecEncoder> {
        let shard_size = super::checked_layout("FEC encoder", data_shards, parity_shards)? as u32;
        let rs = ReedSolomon::new(data_shards, parity_shards)?;
        Ok(FecEncoder {
            data_shards,
            parity_shards,
            paws: paws(shard_size),
            next: 0,
            count: 0,
            max_len: 0,
            last_ms: None,
            rs,
            parity: Slots::default(),
            dst_offs: vec![0; parity_shards],
            failed: false,
            ready: 0,
            parity_seqid: 0,
            parity_len: 0,
            stats: FecStats::default(),
        })
    }

    /// Data shards per group.
    pub fn data_shards(&self) -> usize {
        self.data_shards
    }

    /// Parity shards per group.
    pub fn parity_shards(&self) -> usize {
        self.parity_shards
    }

    /// Seqid the next data packet gets.
    pub fn next_seqid(&self) -> u32 {
        self.next
    }

    /// Test hook (kcp-go's tests set `next` the same way) to exercise the
    /// seqid wrap: the next data packet gets `seqid % paws`. Call it at a
    /// group boundary to keep groups aligned.
    #[doc(hidden)]
    pub fn set_next_seqid(&mut self, seqid: u32) {
        self.next = seqid % self.paws;
    }

    /// Wraps one KCP datagram as a data shard. `pkt[0..8]` is room for the
    /// FEC header and size field, `pkt[8..8 + kcp_len]` the KCP bytes; the
    /// header (seqid, 0xF1, size = 2 + kcp_len) is written in place. The data
    /// packet is `pkt[..8 + kcp_len]`.
    ///
    /// Returns the number of parity packets now ready (0 or `parity_shards`),
    /// to be fetched with [`take_parity`](Self::take_parity) before the next
    /// call and sent right after this data packet. Parity is produced when
    /// this packet completes a group and came less than 500 ms after the
    /// previous data packet; otherwise the group's parity seqids are skipped.
    ///
    /// `Error::BufferTooSmall` if `pkt` is shorter than `8 + kcp_len` or the
    /// packet would exceed 1500 bytes.
    pub fn encode(&mut self, pkt: &mut [u8], kcp_len: usize, now_ms: u32) -> Result<usize> {
        let need = FEC_HEADER_SIZE_PLUS2 + kcp_len;
        if pkt.len() < need {
            return Err(Error::BufferTooSmall {
                need,
                have: pkt.len(),
            });
        }
        let shard_len = 2 + kcp_len;
        if shard_len > MAX_SHARD_LEN {
            return Err(Error::BufferTooSmall {
                need: shard_len,
                have: MAX_SHARD_LEN,
            });
        }
        self.ready = 0;
        put_u32(pkt, 0, self.next);
        put_u16(pkt, 4, TYPE_DATA);
        put_u16(pkt, 6, shard_len as u16);
        self.next = (self.next + 1) % self.paws;

        self.accumulate(pkt, shard_len);
        self.count += 1;

        if self.count == self.data_shards {
            // Only the gap between the last two data packets decides (§4.2);
            // a negative gap counts as short, as with kcp-go's int64 clock.
            let continuous = self.last_ms.is_some_and(|last| {
                (now_ms.wrapping_sub(last) as i32) < MAX_FEC_ENCODE_LATENCY_MS as i32
            });
            // Parity seqids are used up whether or not parity went out. kcp-go
            // steps one seqid per sealed parity packet, but skips with one u32
            // addition; the two differ only for a misaligned `next` near 2^32.
            let made = continuous && !self.failed;
            if continuous && self.failed {
                self.stats.fec_errs += 1;
            }
            if made {
                self.parity_seqid = self.next;
                self.parity_len = self.max_len;
                self.ready = self.parity_shards;
                self.next =
                    ((self.next as u64 + self.parity_shards as u64) % self.paws as u64) as u32;
            } else {
                self.next = self.next.wrapping_add(self.parity_shards as u32) % self.paws;
            }
            self.count = 0;
            self.max_len = 0;
            self.failed = false;
        }
        self.last_ms = Some(now_ms);
        Ok(self.ready)
    }

    /// Adds the data shard `pkt[FEC_HEADER_SIZE..][..shard_len]` into the
    /// parity accumulators. Parity bytes past the group's longest shard so
    /// far are zeroed before a longer shard is added: shorter shards count as
    /// zero padded (§4.2), exactly as if the group were encoded at once.
    fn accumulate(&mut self, pkt: &[u8], shard_len: usize) {
        if self.parity.count() == 0 {
            self.parity.fit_len(shard_len);
            self.parity.set_count(self.parity_shards);
            self.update_offsets();
        } else if self.parity.fit_len(shard_len) {
            self.update_offsets();
        }
        if shard_len > self.max_len {
            for &o in &self.dst_offs {
                self.parity.bytes_mut()[o + self.max_len..o + shard_len].fill(0);
            }
            self.max_len = shard_len;
        }
        if self
            .rs
            .accumulate_data_shard(
                self.count,
                pkt,
                FEC_HEADER_SIZE,
                self.parity.bytes_mut(),
                &self.dst_offs,
                shard_len,
            )
            .is_err()
        {
            self.failed = true;
        }
    }

    fn update_offsets(&mut self) {
        for (j, o) in self.dst_offs.iter_mut().enumerate() {
            *o = self.parity.offset(j);
        }
    }

    /// Length of each ready parity packet (0 if none is ready).
    pub fn parity_len(&self) -> usize {
        if self.ready > 0 {
            FEC_HEADER_SIZE + self.parity_len
        } else {
            0
        }
    }

    /// Writes parity packet `i` (`i < ` the count `encode` returned): seqid,
    /// type 0xF2, then the parity bytes, as long as the group's longest data
    /// packet. Returns its length. `Error::InvalidConfig` if no such packet is
    /// ready, `Error::BufferTooSmall` if `out` is too short.
    pub fn take_parity(&self, i: usize, out: &mut [u8]) -> Result<usize> {
        if i >= self.ready {
            return Err(Error::InvalidConfig(format!(
                "parity packet {i} is not ready ({} are)",
                self.ready
            )));
        }
        let len = FEC_HEADER_SIZE + self.parity_len;
        if out.len() < len {
            return Err(Error::BufferTooSmall {
                need: len,
                have: out.len(),
            });
        }
        let seqid = ((self.parity_seqid as u64 + i as u64) % self.paws as u64) as u32;
        put_u32(out, 0, seqid);
        put_u16(out, 4, TYPE_PARITY);
        let at = self.parity.offset(i);
        out[FEC_HEADER_SIZE..len].copy_from_slice(&self.parity.bytes()[at..at + self.parity_len]);
        Ok(len)
    }

    /// Frames an OOB packet (see [`encode_oob`](super::encode_oob)); kcp-go
    /// only sends OOB when an encoder exists. Encoder state is not touched.
    pub fn encode_oob(&self, pkt: &mut [u8], conv: u32, payload_len: usize) -> Result<usize> {
        encode_oob(pkt, conv, payload_len)
    }

    /// Counters (only `fec_errs` applies to the encoder).
    pub fn stats(&self) -> &FecStats {
        &self.stats
    }
}
