//! The sending side: data shards and parity packets (§4.2).

use super::rs::ReedSolomon;
use super::{
    encode_oob, paws, put_u16, put_u32, FecStats, FEC_HEADER_SIZE, FEC_HEADER_SIZE_PLUS2,
    MAX_FEC_ENCODE_LATENCY_MS, MAX_SHARD_LEN, TYPE_DATA, TYPE_PARITY,
};
use crate::error::{Error, Result};

/// Distance between shard buffers in the encoder's arenas (>= MAX_SHARD_LEN,
/// a multiple of 64 so vector loads of different shards stay apart).
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
    /// `data_shards` shard buffers of SHARD_STRIDE bytes.
    data: Vec<u8>,
    /// `parity_shards` shard buffers of SHARD_STRIDE bytes.
    parity: Vec<u8>,
    lens: Vec<usize>,
    src_offs: Vec<usize>,
    dst_offs: Vec<usize>,
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
    /// `Error::InvalidConfig` otherwise). Shard buffers are allocated here.
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
            data: vec![0; data_shards * SHARD_STRIDE],
            parity: vec![0; parity_shards * SHARD_STRIDE],
            lens: vec![0; data_shards],
            src_offs: (0..data_shards).map(|i| i * SHARD_STRIDE).collect(),
            dst_offs: (0..parity_shards).map(|j| j * SHARD_STRIDE).collect(),
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

        let at = self.count * SHARD_STRIDE;
        self.data[at..at + shard_len].copy_from_slice(&pkt[FEC_HEADER_SIZE..need]);
        self.lens[self.count] = shard_len;
        self.count += 1;
        self.max_len = self.max_len.max(shard_len);

        if self.count == self.data_shards {
            // Only the gap between the last two data packets decides (§4.2);
            // a negative gap counts as short, as with kcp-go's int64 clock.
            let continuous = self.last_ms.is_some_and(|last| {
                (now_ms.wrapping_sub(last) as i32) < MAX_FEC_ENCODE_LATENCY_MS as i32
            });
            // Parity seqids are used up whether or not parity went out. kcp-go
            // steps one seqid per sealed parity packet, but skips with one u32
            // addition; the two differ only for a misaligned `next` near 2^32.
            if continuous && self.make_parity() {
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
        }
        self.last_ms = Some(now_ms);
        Ok(self.ready)
    }

    fn make_parity(&mut self) -> bool {
        let max = self.max_len;
        // Shards shorter than the group's longest are zero padded (§4.2).
        for (i, &len) in self.lens.iter().enumerate() {
            self.data[i * SHARD_STRIDE + len..i * SHARD_STRIDE + max].fill(0);
        }
        match self.rs.encode_offsets(
            &self.data,
            &self.src_offs,
            &mut self.parity,
            &self.dst_offs,
            max,
        ) {
            Ok(()) => true,
            Err(_) => {
                self.stats.fec_errs += 1;
                false
            }
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
        out[FEC_HEADER_SIZE..len]
            .copy_from_slice(&self.parity[i * SHARD_STRIDE..i * SHARD_STRIDE + self.parity_len]);
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
