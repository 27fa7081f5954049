//! Forward error correction: kcp-go's Reed-Solomon shards (types 0xF1 data,
//! 0xF2 parity) and out-of-band packets (0xF3), byte-identical to kcp-go
//! (§1.5, §4).
//!
//! Versions: the FEC header, the encoder and OOB framing are the same in
//! kcp-go v5.6.x and v5.7.x, and so is our output. The decoder's auto-tune
//! changed in v5.7 (§12: a new period finder, a 256-shard bound instead of
//! 255, `newestShardId` reset on a retune); we follow v5.7.6, which
//! recovers more and which no peer can tell apart on the wire (a decoder
//! sends nothing). Where we differ from every kcp-go version, on purpose,
//! is in what reaches KCP: a rebuilt shard only when its layout is
//! confirmed, and a fresh decoder does not discard upper-half seqids (see
//! [`FecDecoder`]'s module notes in `decoder.rs`, and [`FecStats::fec_withheld`]).
//! Go-generated vectors for each version live in `tests/vectors/fec_*.json`.
//!
//! All functions here work on the FEC part of a datagram, i.e. the bytes after
//! the crypto header (§1.7):
//!
//! ```text
//! data:   seqid u32 LE | 0xF1 u16 LE | size u16 LE (= 2 + KCP length) | KCP bytes
//! parity: seqid u32 LE | 0xF2 u16 LE | Reed-Solomon parity of [size | KCP bytes]
//! OOB:    0xFFFFFFFF   | 0xF3 u16 LE | size u16 LE (= 2 + 4 + len)   | conv u32 LE | payload
//! ```
//!
//! * [`FecEncoder`] wraps every KCP datagram as a data shard and emits parity
//!   packets after every `data_shards` datagrams.
//! * [`FecDecoder`] hands data shards on at once, rebuilds lost ones from
//!   parity once the layout is confirmed, and follows the peer's shard
//!   counts by itself (auto-tune).
//! * [`encode_oob`] / [`parse_oob`] frame OOB packets.
//! * [`ReedSolomon`] is the code itself, with a SIMD GF(2^8) kernel chosen at
//!   run time ([`KernelPath`]).
//!
//! The layer is pure: no clocks (time is passed in), no I/O, and no
//! allocation per packet once warmed up.

mod autotune;
mod decoder;
mod encoder;
// SIMD GF(2^8) kernels (SSSE3, AVX2, AVX-512, GFNI): the only `unsafe` in FEC.
#[allow(unsafe_code)]
mod gf;
mod rs;
mod slots;

pub use autotune::{AutoTune, AUTO_TUNE_SAMPLES};
pub use decoder::{FecDecoder, FecMemory};
pub use encoder::FecEncoder;
pub use gf::KernelPath;
pub use rs::{ReedSolomon, MAX_TOTAL_SHARDS};

use crate::error::{Error, Result};

/// FEC header: seqid (4) + type (2).
pub const FEC_HEADER_SIZE: usize = 6;
/// FEC header plus the size field of data and OOB packets.
pub const FEC_HEADER_SIZE_PLUS2: usize = FEC_HEADER_SIZE + 2;
/// Type of a data shard.
pub const TYPE_DATA: u16 = 0xF1;
/// Type of a parity shard.
pub const TYPE_PARITY: u16 = 0xF2;
/// Type of an out-of-band packet.
pub const TYPE_OOB: u16 = 0xF3;
/// Seqid of every OOB packet.
pub const OOB_SEQID: u32 = 0xFFFF_FFFF;
/// Size of the conversation id in an OOB packet.
pub const CONV_SIZE: usize = 4;
/// kcp-go's receive buffer size (`mtuLimit`): no FEC packet is longer.
pub const MTU_LIMIT: usize = 1500;
/// Longest shard (`[size | KCP bytes]` or parity bytes) of a packet that fits
/// in [`MTU_LIMIT`].
pub const MAX_SHARD_LEN: usize = MTU_LIMIT - FEC_HEADER_SIZE;
/// Shard sets kept behind the newest one (kcp-go's `maxShardSets`).
pub const MAX_SHARD_SETS: u32 = 3;
/// Parity is emitted only when the last two data packets of a group are
/// closer than this (kcp-go's `maxFECEncodeLatency`, §4.2).
pub const MAX_FEC_ENCODE_LATENCY_MS: u32 = 500;

/// FEC counters, kcp-go's SNMP names (§6.5) in snake case, for one encoder or
/// decoder. The codec sums them into the session and global statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FecStats {
    /// `FECErrs`: Reed-Solomon encoding or reconstruction failures.
    pub fec_errs: u64,
    /// `FECRecovered`: data shards rebuilt (including ones whose size field
    /// then turned out invalid and were not delivered).
    pub fec_recovered: u64,
    /// `FECParityShards`: parity shards accepted into a shard set.
    pub fec_parity_shards: u64,
    /// `FECShardSet`: shard sets alive after the last packet (kcp-go
    /// increments it per new set, then overwrites it with the live count).
    pub fec_shard_set: u64,
    /// `FECShardMin`: the newest shard id seen (kcp-go's name is misleading).
    pub fec_shard_min: u64,
    /// `FECFullShardSet`: sets that filled up with data shards only.
    pub fec_full_shard_set: u64,
    /// Not a kcp-go counter: data shards that could have been rebuilt but
    /// were not delivered because the layout they would have been rebuilt
    /// with was not confirmed (§4.5; kcp-go delivers them, possibly as
    /// garbage).
    pub fec_withheld: u64,
    /// Not a kcp-go counter: packets rejected with `Error::Truncated` or
    /// `Error::Malformed` (the codec counts these as `InErrs`, §3).
    pub malformed: u64,
}

#[inline]
fn put_u16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

#[inline]
fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[inline]
fn get_u16(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

#[inline]
fn get_u32(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

/// The FEC type of a plaintext packet: the u16 LE at offset 4 that the codec
/// demultiplexes on (§1.5). `None` if the packet is shorter than 6 bytes.
pub fn packet_type(pkt: &[u8]) -> Option<u16> {
    get_u16(pkt, 4)
}

/// Frames an OOB packet in place (§4.6). `pkt[0..8]` is room for the FEC
/// header and size field, `pkt[12..12 + payload_len]` already holds the
/// payload; `conv` is written at `pkt[8..12]`. Returns the packet length
/// `12 + payload_len`. OOB packets do not touch any encoder state.
pub fn encode_oob(pkt: &mut [u8], conv: u32, payload_len: usize) -> Result<usize> {
    let len = FEC_HEADER_SIZE_PLUS2 + CONV_SIZE + payload_len;
    if pkt.len() < len {
        return Err(Error::BufferTooSmall {
            need: len,
            have: pkt.len(),
        });
    }
    let size = u16::try_from(2 + CONV_SIZE + payload_len).map_err(|_| Error::BufferTooSmall {
        need: 2 + CONV_SIZE + payload_len,
        have: u16::MAX as usize,
    })?;
    put_u32(pkt, 0, OOB_SEQID);
    put_u16(pkt, 4, TYPE_OOB);
    put_u16(pkt, 6, size);
    put_u32(pkt, 8, conv);
    Ok(len)
}

/// A parsed OOB packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OobPacket<'a> {
    /// Sender's conversation id (kcp-go's session does not check it; its
    /// listener uses it to find or create the session).
    pub conv: u32,
    /// The size field as sent (kcp-go ignores it).
    pub size: u16,
    /// Everything after the conv, as kcp-go hands it to the OOB handler.
    pub payload: &'a [u8],
}

/// Parses an OOB packet (type 0xF3) like kcp-go's receiver: the payload is
/// everything after the conv; seqid and size are not checked.
/// `Error::Truncated` below 12 bytes, `Error::Malformed` for another type.
pub fn parse_oob(pkt: &[u8]) -> Result<OobPacket<'_>> {
    if pkt.len() < FEC_HEADER_SIZE_PLUS2 + CONV_SIZE {
        return Err(Error::Truncated("OOB packet shorter than 12 bytes"));
    }
    if get_u16(pkt, 4) != Some(TYPE_OOB) {
        return Err(Error::Malformed("not an OOB packet"));
    }
    let (Some(size), Some(conv)) = (get_u16(pkt, 6), get_u32(pkt, 8)) else {
        return Err(Error::Truncated("OOB packet shorter than 12 bytes"));
    };
    Ok(OobPacket {
        conv,
        size,
        payload: &pkt[FEC_HEADER_SIZE_PLUS2 + CONV_SIZE..],
    })
}

/// Validates a `(data, parity)` layout and returns the group size: both at
/// least 1 and a total of at most [`MAX_TOTAL_SHARDS`], summed with checked
/// arithmetic so that no pair (however absurd) can overflow or reach an
/// allocation. `what` names the caller in the error.
pub(crate) fn checked_layout(what: &str, data: usize, parity: usize) -> Result<usize> {
    if data == 0 || parity == 0 {
        return Err(Error::InvalidConfig(format!(
            "{what} needs at least one data and one parity shard (got {data}+{parity})"
        )));
    }
    match data.checked_add(parity) {
        Some(total) if total <= MAX_TOTAL_SHARDS => Ok(total),
        _ => Err(Error::InvalidConfig(format!(
            "{what}: {data}+{parity} shards, at most {MAX_TOTAL_SHARDS} in total are supported \
             (kcp-go would switch to an incompatible GF(2^16) code)"
        ))),
    }
}

/// kcp-go's `paws` (§4.2): the largest multiple of the group size that fits
/// in a u32; seqids run from 0 to `paws - 1`, so no group straddles the wrap.
pub fn paws(shard_size: u32) -> u32 {
    0xFFFF_FFFF / shard_size * shard_size
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oob_round_trip() {
        let mut buf = [0u8; 20];
        buf[12..17].copy_from_slice(b"hello");
        let n = encode_oob(&mut buf, 0x1234_5678, 5).unwrap();
        assert_eq!(n, 17);
        assert_eq!(
            &buf[..12],
            &[0xff, 0xff, 0xff, 0xff, 0xf3, 0, 11, 0, 0x78, 0x56, 0x34, 0x12]
        );
        let p = parse_oob(&buf[..n]).unwrap();
        assert_eq!(
            (p.conv, p.size, p.payload),
            (0x1234_5678, 11, &b"hello"[..])
        );
        assert!(matches!(
            encode_oob(&mut buf, 1, 9),
            Err(Error::BufferTooSmall { .. })
        ));
        assert!(matches!(parse_oob(&buf[..11]), Err(Error::Truncated(_))));
        buf[4] = 0xf1;
        assert!(matches!(parse_oob(&buf[..n]), Err(Error::Malformed(_))));
    }

    #[test]
    fn paws_values() {
        assert_eq!(paws(13), 4_294_967_287);
        assert_eq!(paws(2), 0xFFFF_FFFE);
        assert_eq!(paws(256) % 256, 0);
    }
}
