//! The datagram pipeline shared by sessions and the listener, one type per
//! direction, pure (no sockets, no clock: time is an argument).
//!
//! Send ([`Sealer`]): KCP bytes, already copied behind the header room of a
//! pooled 1500-byte buffer by [`KcpSink`] → FEC data header (+ parity packets
//! when a group completes) → crypt seal (nonce, CRC or AEAD tag) → wire (§1.1).
//!
//! Receive: [`open`] (decrypt, CRC/AEAD check, once per datagram even at a
//! listener) → [`Receiver::input`]: demultiplex on the u16 at plaintext
//! offset 4 (§1.5): 0xF1/0xF2 → FEC decoder (created lazily as (1,1) when the
//! local side has no FEC, §4.3) with data fed to KCP at once and recovered
//! shards after; 0xF3 → OOB; anything else → raw KCP. Every drop is counted
//! in [`Counters`] (§3).

use std::ops::Range;

use crate::config::MAX_PACKET_SIZE;
use crate::crypt::Crypt;
use crate::error::{Error, Result};
use crate::fec::{FecDecoder, FecEncoder, FEC_HEADER_SIZE_PLUS2, TYPE_DATA, TYPE_OOB, TYPE_PARITY};
use crate::kcp::{Kcp, Output, PacketKind, IKCP_OVERHEAD};
use crate::proto::packet::{Packet, PacketPool};
use crate::stats::Counters;

/// Offset of the KCP `sn` field in a segment (`IKCP_SN_OFFSET`).
pub const IKCP_SN_OFFSET: usize = 12;
/// Size of the conv field that starts a KCP segment and an OOB payload.
pub const CONV_SIZE: usize = 4;
/// kcp-go v5.6.60+: a plaintext shorter than min(24, 8 + 4) is dropped (§3).
pub const MIN_PLAINTEXT: usize = if IKCP_OVERHEAD < FEC_HEADER_SIZE_PLUS2 + CONV_SIZE {
    IKCP_OVERHEAD
} else {
    FEC_HEADER_SIZE_PLUS2 + CONV_SIZE
};

/// What a decrypted datagram is, from the u16 at plaintext offset 4 (§1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    /// FEC data shard (0xF1): KCP bytes after the 8-byte FEC header.
    FecData,
    /// FEC parity shard (0xF2).
    FecParity,
    /// Out-of-band packet (0xF3): conv + payload after the FEC header.
    Oob,
    /// Raw KCP segments (the u16 is `cmd | frg << 8`, never 0xF1..0xF3).
    Kcp,
}

/// Classifies a plaintext. Shorter than 6 bytes reads as raw KCP (which
/// KCP then rejects).
pub fn classify(plain: &[u8]) -> PacketType {
    match plain.get(4..6) {
        Some(&[lo, hi]) => match u16::from_le_bytes([lo, hi]) {
            TYPE_DATA => PacketType::FecData,
            TYPE_PARITY => PacketType::FecParity,
            TYPE_OOB => PacketType::Oob,
            _ => PacketType::Kcp,
        },
        _ => PacketType::Kcp,
    }
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// The conversation a plaintext belongs to, as kcp-go's listener reads it
/// (§6.2). `None` when it carries none (parity, short FEC data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvInfo {
    /// Conversation id.
    pub conv: u32,
    /// `sn` of the first segment (0 for OOB); a conv change from a known
    /// address is accepted only with sn 0.
    pub sn: u32,
}

/// What the listener learns from a plaintext before choosing a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Demux {
    /// Carries a conv (raw KCP ≥ 24 bytes, FEC data ≥ 32 bytes, OOB).
    Conv(ConvInfo),
    /// Has no conv (parity, short FEC data): only for a known address.
    NoConv,
    /// Raw KCP shorter than a segment header: dropped (kcp-go silently, §3;
    /// the listener counts it as `KCPInErrors`).
    Drop,
}

/// kcp-go `Listener.packetInput`'s conv extraction (§6.2).
pub fn demux(plain: &[u8]) -> Demux {
    let h = FEC_HEADER_SIZE_PLUS2;
    match classify(plain) {
        PacketType::FecData => match (le_u32(plain, h), le_u32(plain, h + IKCP_SN_OFFSET)) {
            (Some(conv), Some(sn)) if plain.len() >= h + IKCP_OVERHEAD => {
                Demux::Conv(ConvInfo { conv, sn })
            }
            _ => Demux::NoConv,
        },
        PacketType::FecParity => Demux::NoConv,
        PacketType::Oob => match le_u32(plain, h) {
            Some(conv) => Demux::Conv(ConvInfo { conv, sn: 0 }),
            None => Demux::NoConv,
        },
        PacketType::Kcp => match (le_u32(plain, 0), le_u32(plain, IKCP_SN_OFFSET)) {
            (Some(conv), Some(sn)) if plain.len() >= IKCP_OVERHEAD => {
                Demux::Conv(ConvInfo { conv, sn })
            }
            _ => Demux::Drop,
        },
    }
}

/// Why [`open`] refused a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Shorter than the crypto header (or nonce + tag). kcp-go drops it
    /// without counting (§3); we count it as `InErrs`.
    Short,
    /// CRC or AEAD failure: counted as `InCsumErrors`.
    Integrity,
}

impl OpenError {
    /// The refusal's name in drop warnings (the listener's `DropReason`
    /// names, so both read alike).
    pub fn name(self) -> &'static str {
        match self {
            OpenError::Short => "Truncated",
            OpenError::Integrity => "Integrity",
        }
    }
}

/// Decrypts and verifies `dgram` in place; returns the plaintext range
/// (after the crypto header, before any AEAD tag).
pub fn open(crypt: &Crypt, dgram: &mut [u8]) -> std::result::Result<Range<usize>, OpenError> {
    match crypt.open(dgram) {
        Ok(r) => Ok(r),
        Err(Error::Checksum) | Err(Error::Authentication) => Err(OpenError::Integrity),
        Err(_) => Err(OpenError::Short),
    }
}

/// [`open`] plus the counting of every refusal into `c`: `InCsumErrors`
/// for a failed check (§3), `InErrs` for a datagram too short to check.
#[cfg_attr(not(feature = "testing"), allow(dead_code))]
pub fn open_counted(crypt: &Crypt, dgram: &mut [u8], c: &mut Counters) -> Option<Range<usize>> {
    match open(crypt, dgram) {
        Ok(r) => Some(r),
        Err(OpenError::Integrity) => {
            c.in_csum_errors += 1;
            None
        }
        Err(OpenError::Short) => {
            c.in_errs += 1;
            None
        }
    }
}

/// The KCP output callback: copies each KCP datagram behind `room` bytes of
/// header space in a pooled buffer and queues it for the [`Sealer`] (§5.9).
pub struct KcpSink<'a> {
    /// Where finished KCP datagrams go.
    pub pending: &'a mut Vec<Outgoing>,
    /// Buffer source.
    pub pool: &'a mut PacketPool,
    /// Crypto + FEC header bytes to leave in front.
    pub room: usize,
}

/// A datagram waiting for the sealer.
#[derive(Debug)]
pub struct Outgoing {
    /// The buffer: header room, then `len − room` payload bytes.
    pub packet: Packet,
    /// What the payload is.
    pub kind: OutKind,
}

/// The payload of an [`Outgoing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutKind {
    /// KCP segments.
    Kcp,
    /// An OOB payload: conv + data (§4.6).
    Oob,
}

impl Output for KcpSink<'_> {
    fn output(&mut self, datagram: &[u8]) {
        // kcp-go's output callback ignores buffers shorter than a segment.
        // Nothing longer than MAX_PACKET_SIZE leaves us (§12); a validated mtu
        // keeps KCP below it, so this drop is only a last line of defence.
        if datagram.len() < IKCP_OVERHEAD || self.room + datagram.len() > MAX_PACKET_SIZE {
            return;
        }
        let mut p = self.pool.get();
        let end = self.room + datagram.len();
        p.buf_mut()[self.room..end].copy_from_slice(datagram);
        p.set_len(end);
        self.pending.push(Outgoing {
            packet: p,
            kind: OutKind::Kcp,
        });
    }
}

/// Where sealed datagrams go: a socket batch, or a queue a pure
/// [`Connection`](crate::connection::Connection) hands out.
pub trait PacketSink {
    /// Appends one sealed datagram.
    fn push_packet(&mut self, p: Packet);
}

impl PacketSink for std::collections::VecDeque<Packet> {
    fn push_packet(&mut self, p: Packet) {
        self.push_back(p);
    }
}

/// The send direction: FEC encoding and sealing.
pub struct Sealer {
    crypt: Crypt,
    /// Created on the first datagram: an encoder holds its parity buffers
    /// (a few KB), which a session that never sends should not pay for.
    fec: Option<FecEncoder>,
    /// `(data, parity)` when FEC is on.
    shards: Option<(usize, usize)>,
    /// Datagrams ready but for the cipher, waiting to be encrypted together
    /// (see [`Crypt::seal_width`]): `(packet, plaintext length, parity)`.
    staged: Vec<(Packet, usize, bool)>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("crypt", &self.crypt.kind())
            .field("fec", &self.shards)
            .finish()
    }
}

impl Sealer {
    /// FEC is on when both shard counts are non-zero (§4.1).
    pub fn new(crypt: Crypt, data_shards: usize, parity_shards: usize) -> Result<Sealer> {
        let shards = if data_shards > 0 && parity_shards > 0 {
            // Build the encoder when first used; reject what it would refuse.
            if data_shards + parity_shards > crate::config::MAX_FEC_SHARDS {
                return Err(Error::InvalidConfig(format!(
                    "FEC {data_shards}+{parity_shards} exceeds {} shards",
                    crate::config::MAX_FEC_SHARDS
                )));
            }
            Some((data_shards, parity_shards))
        } else {
            None
        };
        Ok(Sealer {
            crypt,
            fec: None,
            shards,
            staged: Vec::new(),
        })
    }

    /// Header room in front of the KCP bytes (§1.2).
    pub fn header_len(&self) -> usize {
        self.crypt.header_len()
            + if self.shards.is_some() {
                FEC_HEADER_SIZE_PLUS2
            } else {
                0
            }
    }

    /// Turns queued datagrams, in order, into wire datagrams (each, then any
    /// parity packets it completes) appended to `out`; counts encoding
    /// failures as `FECErrs`. Where the cipher gains from it, four datagrams
    /// at a time are encrypted together, so a flush should come here whole.
    /// Everything is in `out` on return.
    pub fn seal_all(
        &mut self,
        items: impl IntoIterator<Item = Outgoing>,
        now_ms: u32,
        pool: &mut PacketPool,
        out: &mut impl PacketSink,
        c: &mut Counters,
    ) {
        for item in items {
            self.seal_item(item, now_ms, pool, out, c);
        }
        self.flush_staged(pool, out);
    }

    fn seal_item(
        &mut self,
        item: Outgoing,
        now_ms: u32,
        pool: &mut PacketPool,
        out: &mut impl PacketSink,
        c: &mut Counters,
    ) {
        let ch = self.crypt.header_len();
        let mut p = item.packet;
        let payload_len = p.len().saturating_sub(self.header_len());
        let mut parity = 0;
        if let (None, Some((d, p))) = (&self.fec, self.shards) {
            self.fec = FecEncoder::new(d, p).ok();
        }
        let plain_len = match (&mut self.fec, item.kind) {
            (Some(fec), OutKind::Kcp) => {
                match fec.encode(&mut p.buf_mut()[ch..], payload_len, now_ms) {
                    Ok(n) => parity = n,
                    Err(_) => {
                        c.fec_errs += 1;
                        pool.put(p);
                        return;
                    }
                }
                FEC_HEADER_SIZE_PLUS2 + payload_len
            }
            (Some(fec), OutKind::Oob) => {
                let conv = le_u32(p.buf(), ch + FEC_HEADER_SIZE_PLUS2).unwrap_or(0);
                let data_len = payload_len.saturating_sub(CONV_SIZE);
                match fec.encode_oob(&mut p.buf_mut()[ch..], conv, data_len) {
                    Ok(n) => n,
                    Err(_) => {
                        c.fec_errs += 1;
                        pool.put(p);
                        return;
                    }
                }
            }
            (None, _) if self.shards.is_some() => {
                // Cannot happen with validated shard counts; never send a
                // datagram without the FEC header the peer expects.
                c.fec_errs += 1;
                pool.put(p);
                return;
            }
            (None, _) => payload_len,
        };
        self.stage(p, plain_len, false, pool, out);
        for i in 0..parity {
            let mut q = pool.get();
            let r = match &self.fec {
                Some(fec) => fec.take_parity(i, &mut q.buf_mut()[ch..]),
                None => break,
            };
            match r {
                Ok(len) => self.stage(q, len, true, pool, out),
                Err(_) => {
                    c.fec_errs += 1;
                    pool.put(q);
                }
            }
        }
    }

    /// Queues a datagram for the cipher; seals the queue once it is as
    /// long as the cipher seals at once.
    fn stage(
        &mut self,
        p: Packet,
        plain_len: usize,
        parity: bool,
        pool: &mut PacketPool,
        out: &mut impl PacketSink,
    ) {
        self.staged.push((p, plain_len, parity));
        if self.staged.len() >= self.crypt.seal_width() {
            self.flush_staged(pool, out);
        }
    }

    /// Seals the staged datagrams (`plain_len` bytes at the crypto header
    /// offset) and appends them to `out` in order; one whose buffer is too
    /// small (cannot happen with a validated mtu) goes back to the pool.
    fn flush_staged(&mut self, pool: &mut PacketPool, out: &mut impl PacketSink) {
        let mut results = [const { None }; 4];
        if let [a, b, c, d] = &mut self.staged[..] {
            let r = self.crypt.seal4([
                (a.0.buf_mut(), a.1),
                (b.0.buf_mut(), b.1),
                (c.0.buf_mut(), c.1),
                (d.0.buf_mut(), d.1),
            ]);
            for (slot, r) in results.iter_mut().zip(r) {
                *slot = Some(r);
            }
        }
        for (k, (mut p, plain_len, parity)) in self.staged.drain(..).enumerate() {
            let r = match results.get_mut(k).and_then(Option::take) {
                Some(r) => r,
                None => self.crypt.seal(p.buf_mut(), plain_len),
            };
            match r {
                Ok(n) => {
                    p.set_len(n);
                    if parity {
                        crate::trace::trace!(len = n, "datagram out: FEC parity");
                    } else {
                        crate::trace::trace!(len = n, "datagram out");
                    }
                    out.push_packet(p);
                }
                Err(_) => pool.put(p),
            }
        }
    }
}

/// What [`Receiver::input`] did with one plaintext.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InputReport {
    /// KCP input calls that succeeded.
    pub kcp_ok: u32,
    /// KCP input calls that failed (counted as `KCPInErrors`).
    pub kcp_errors: u32,
}

/// The receive direction of one session: demultiplexing and FEC decoding.
pub struct Receiver {
    /// Created on the first FEC datagram (decoders are large).
    fec: Option<FecDecoder>,
    /// Local `(data, parity)`, or (1, 1) when FEC is off locally (§4.3).
    shards: (usize, usize),
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("fec", &self.fec.is_some())
            .finish()
    }
}

impl Receiver {
    /// The decoder is created on the first FEC datagram: with the local
    /// shard counts when FEC is on locally, else as kcp-go's lazy (1,1)
    /// decoder that auto-tune then adjusts (§4.3).
    pub fn new(data_shards: usize, parity_shards: usize) -> Receiver {
        let shards = if data_shards > 0 && parity_shards > 0 {
            (data_shards, parity_shards)
        } else {
            (1, 1)
        };
        Receiver { fec: None, shards }
    }

    /// The decoder, if one exists yet.
    #[cfg_attr(not(any(feature = "snmp", feature = "testing")), allow(dead_code))]
    pub fn decoder(&self) -> Option<&FecDecoder> {
        self.fec.as_ref()
    }

    /// Feeds one plaintext (already opened) to KCP, through the FEC decoder
    /// when it is an FEC packet. `oob` receives OOB payloads.
    #[allow(clippy::too_many_arguments)]
    pub fn input(
        &mut self,
        plain: &[u8],
        kcp: &mut Kcp,
        ack_nodelay: bool,
        now_ms: u32,
        out: &mut impl Output,
        c: &mut Counters,
        oob: &mut dyn FnMut(&[u8]),
    ) -> InputReport {
        let mut rep = InputReport::default();
        if plain.len() < MIN_PLAINTEXT {
            c.kcp_in_errors += 1;
            rep.kcp_errors += 1;
            return rep;
        }
        c.in_pkts += 1;
        c.in_bytes += plain.len() as u64;
        match classify(plain) {
            PacketType::FecData | PacketType::FecParity => {
                if plain.len() < FEC_HEADER_SIZE_PLUS2 {
                    c.in_errs += 1;
                    return rep;
                }
                if self.fec.is_none() {
                    self.fec = FecDecoder::new(self.shards.0, self.shards.1).ok();
                }
                let Some(dec) = self.fec.as_mut() else {
                    c.in_errs += 1;
                    return rep;
                };
                let mut feed = |bytes: &[u8], kind: PacketKind| match kcp.input(
                    bytes,
                    kind,
                    ack_nodelay,
                    now_ms,
                    out,
                ) {
                    Ok(()) => rep.kcp_ok += 1,
                    Err(_) => rep.kcp_errors += 1,
                };
                if dec.decode(plain, &mut feed).is_err() {
                    c.in_errs += 1;
                }
            }
            PacketType::Oob => {
                c.oob_packets += 1;
                if let Some(payload) = plain.get(FEC_HEADER_SIZE_PLUS2 + CONV_SIZE..) {
                    oob(payload);
                }
            }
            PacketType::Kcp => {
                match kcp.input(plain, PacketKind::Regular, ack_nodelay, now_ms, out) {
                    Ok(()) => rep.kcp_ok += 1,
                    Err(_) => rep.kcp_errors += 1,
                }
            }
        }
        c.kcp_in_errors += u64::from(rep.kcp_errors);
        rep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kcp_header(conv: u32, cmd: u8, sn: u32) -> Vec<u8> {
        let mut v = vec![0u8; 24];
        v[0..4].copy_from_slice(&conv.to_le_bytes());
        v[4] = cmd;
        v[12..16].copy_from_slice(&sn.to_le_bytes());
        v
    }

    /// A flush sealed four at a time (AES-NI) gives datagrams that the
    /// RustCrypto `aes` crate opens, in order, with every payload intact;
    /// with FEC the parity packets come out too and open as well.
    #[test]
    fn batched_sealing_opens_with_an_independent_cipher() {
        use crate::crypt::{Backend, CipherKind};
        let key = [7u8; 16];
        for (d, p) in [(0, 0), (3, 2)] {
            let fast = Crypt::with_backend(CipherKind::Aes128, &key, Backend::Fastest).unwrap();
            let reference =
                Crypt::with_backend(CipherKind::Aes128, &key, Backend::Portable).unwrap();
            let mut sealer = Sealer::new(fast, d, p).unwrap();
            let head = sealer.header_len();
            let mut pool = PacketPool::new(64);
            let payloads: Vec<Vec<u8>> = (0..11u32)
                .map(|i| {
                    let n = [
                        1376usize, 24, 1376, 100, 1376, 1376, 1376, 47, 1376, 1376, 600,
                    ][i as usize];
                    (0..n as u32).map(|b| (b * 31 + i * 7) as u8).collect()
                })
                .collect();
            let items: Vec<Outgoing> = payloads
                .iter()
                .map(|pl| {
                    let mut pk = pool.get();
                    pk.buf_mut()[head..head + pl.len()].copy_from_slice(pl);
                    pk.set_len(head + pl.len());
                    Outgoing {
                        packet: pk,
                        kind: OutKind::Kcp,
                    }
                })
                .collect();
            let mut out = std::collections::VecDeque::new();
            let mut c = Counters::default();
            sealer.seal_all(items, 1000, &mut pool, &mut out, &mut c);
            let parity = 11usize.checked_div(d).map_or(0, |g| g * p);
            assert_eq!(out.len(), 11 + parity, "fec {d}/{p}");
            let mut data = payloads.iter();
            for pk in out {
                let mut dg = pk.as_slice().to_vec();
                let range = reference.open(&mut dg).expect("opens with the aes crate");
                let plain = &dg[range];
                if d == 0 {
                    assert_eq!(plain, &data.next().unwrap()[..]);
                } else if plain[4] == TYPE_DATA as u8 {
                    assert_eq!(&plain[FEC_HEADER_SIZE_PLUS2..], &data.next().unwrap()[..]);
                }
            }
            assert!(data.next().is_none(), "every payload came out, fec {d}/{p}");
        }
    }

    #[test]
    fn demux_reads_conv_like_kcp_go() {
        let raw = kcp_header(0xAABBCCDD, 81, 7);
        assert_eq!(classify(&raw), PacketType::Kcp);
        assert_eq!(
            demux(&raw),
            Demux::Conv(ConvInfo {
                conv: 0xAABBCCDD,
                sn: 7
            })
        );
        // Raw KCP shorter than a segment header is dropped.
        assert_eq!(demux(&raw[..20]), Demux::Drop);

        let mut fec = vec![0u8; 8];
        fec[4] = 0xF1;
        fec.extend_from_slice(&kcp_header(5, 82, 0));
        assert_eq!(classify(&fec), PacketType::FecData);
        assert_eq!(demux(&fec), Demux::Conv(ConvInfo { conv: 5, sn: 0 }));
        assert_eq!(demux(&fec[..31]), Demux::NoConv);

        let mut parity = vec![0u8; 40];
        parity[4] = 0xF2;
        assert_eq!(demux(&parity), Demux::NoConv);

        let mut oob = vec![0u8; 12];
        oob[4] = 0xF3;
        oob[8..12].copy_from_slice(&9u32.to_le_bytes());
        assert_eq!(demux(&oob), Demux::Conv(ConvInfo { conv: 9, sn: 0 }));
        assert_eq!(MIN_PLAINTEXT, 12);
    }
}
