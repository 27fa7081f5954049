//! The 24-byte KCP segment header (§1.6): little-endian, segments back to back.

use super::IKCP_OVERHEAD;
use crate::error::{Error, Result};

/// One segment header as it is on the wire (§1.6). `cmd` is kept raw so that
/// a header with an unknown command can still be decoded and reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegmentHeader {
    /// Conversation id.
    pub conv: u32,
    /// Command (`IKCP_CMD_PUSH` ... `IKCP_CMD_WINS`).
    pub cmd: u8,
    /// Fragment countdown (message mode), else 0.
    pub frg: u8,
    /// Sender's free receive window (segments).
    pub wnd: u16,
    /// Timestamp: send time for PUSH, echoed send time for ACK.
    pub ts: u32,
    /// Sequence number (PUSH) or the sequence number acknowledged (ACK).
    pub sn: u32,
    /// Sender's next expected sequence number (cumulative acknowledgement).
    pub una: u32,
    /// Length of the data that follows the header.
    pub len: u32,
}

impl SegmentHeader {
    /// Writes the header into the first 24 bytes of `out`.
    ///
    /// # Panics
    /// If `out` is shorter than [`IKCP_OVERHEAD`]; callers size their buffers.
    pub fn encode(&self, out: &mut [u8]) {
        let out = &mut out[..IKCP_OVERHEAD];
        out[0..4].copy_from_slice(&self.conv.to_le_bytes());
        out[4] = self.cmd;
        out[5] = self.frg;
        out[6..8].copy_from_slice(&self.wnd.to_le_bytes());
        out[8..12].copy_from_slice(&self.ts.to_le_bytes());
        out[12..16].copy_from_slice(&self.sn.to_le_bytes());
        out[16..20].copy_from_slice(&self.una.to_le_bytes());
        out[20..24].copy_from_slice(&self.len.to_le_bytes());
    }

    /// Returns the header as an array.
    pub fn to_bytes(&self) -> [u8; IKCP_OVERHEAD] {
        let mut b = [0u8; IKCP_OVERHEAD];
        self.encode(&mut b);
        b
    }

    /// Appends the header to `out`.
    pub fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }

    /// Reads a header from the start of `data` (anything after 24 bytes is
    /// ignored). Errors with [`Error::Truncated`] if fewer than 24 bytes.
    pub fn decode(data: &[u8]) -> Result<SegmentHeader> {
        let h: &[u8; IKCP_OVERHEAD] = data
            .get(..IKCP_OVERHEAD)
            .and_then(|s| s.try_into().ok())
            .ok_or(Error::Truncated("KCP segment header shorter than 24 bytes"))?;
        let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        Ok(SegmentHeader {
            conv: u32_at(0),
            cmd: h[4],
            frg: h[5],
            wnd: u16::from_le_bytes([h[6], h[7]]),
            ts: u32_at(8),
            sn: u32_at(12),
            una: u32_at(16),
            len: u32_at(20),
        })
    }
}

/// Iterator over the segments of one datagram: yields each header with its
/// data, stops silently when fewer than 24 bytes remain (kcp-go ignores such a
/// tail), and yields one [`Error::Truncated`] and then stops if a segment
/// declares more data than the datagram holds. Commands and conv are not
/// checked here; that is [`Kcp::input`](super::Kcp::input)'s job.
#[derive(Debug, Clone)]
pub struct Segments<'a> {
    rest: &'a [u8],
}

impl<'a> Segments<'a> {
    /// Iterates over the segments in `datagram`.
    pub fn new(datagram: &'a [u8]) -> Segments<'a> {
        Segments { rest: datagram }
    }
}

impl<'a> Iterator for Segments<'a> {
    type Item = Result<(SegmentHeader, &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        let h = SegmentHeader::decode(self.rest).ok()?;
        let body = &self.rest[IKCP_OVERHEAD..];
        match usize::try_from(h.len).ok().and_then(|n| body.get(..n)) {
            Some(data) => {
                self.rest = &body[data.len()..];
                Some(Ok((h, data)))
            }
            None => {
                self.rest = &[];
                Some(Err(Error::Truncated(
                    "KCP segment data shorter than its len field",
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kcp::{IKCP_CMD_ACK, IKCP_CMD_PUSH, IKCP_CMD_WASK, IKCP_CMD_WINS};

    #[test]
    fn spec_1_8_segment_bytes() {
        // §1.8: conv 0x12345678, PUSH, frg 0, wnd 128, ts 1000, sn 5, una 3, "hello".
        let h = SegmentHeader {
            conv: 0x1234_5678,
            cmd: IKCP_CMD_PUSH,
            frg: 0,
            wnd: 128,
            ts: 1000,
            sn: 5,
            una: 3,
            len: 5,
        };
        let mut d = Vec::new();
        h.encode_to(&mut d);
        d.extend_from_slice(b"hello");
        let want = "78563412 51 00 8000 e8030000 05000000 03000000 05000000 68656c6c6f";
        let want: Vec<u8> = hex_decode(want);
        assert_eq!(d, want);
        let mut it = Segments::new(&d);
        let (got, data) = it.next().unwrap().unwrap();
        assert_eq!(got, h);
        assert_eq!(data, b"hello");
        assert!(it.next().is_none());
    }

    #[test]
    fn every_command_and_extremes() {
        for (cmd, frg, wnd) in [
            (IKCP_CMD_PUSH, 255u8, 65535u16),
            (IKCP_CMD_ACK, 0, 0),
            (IKCP_CMD_WASK, 0, 1),
            (IKCP_CMD_WINS, 0, 32),
        ] {
            let h = SegmentHeader {
                conv: u32::MAX,
                cmd,
                frg,
                wnd,
                ts: u32::MAX,
                sn: 0x8000_0000,
                una: 1,
                len: 0,
            };
            let b = h.to_bytes();
            assert_eq!(b[4], cmd);
            assert_eq!(b[5], frg);
            assert_eq!(&b[6..8], &wnd.to_le_bytes());
            assert_eq!(&b[0..4], &[0xff; 4]);
            assert_eq!(&b[12..16], &[0, 0, 0, 0x80]);
            assert_eq!(SegmentHeader::decode(&b).unwrap(), h);
        }
    }

    #[test]
    fn truncation() {
        assert!(matches!(
            SegmentHeader::decode(&[0u8; 23]),
            Err(Error::Truncated(_))
        ));
        let mut d = SegmentHeader {
            len: 10,
            ..Default::default()
        }
        .to_bytes()
        .to_vec();
        d.extend_from_slice(&[1; 9]);
        let v: Vec<_> = Segments::new(&d).collect();
        assert_eq!(v.len(), 1);
        assert!(matches!(v[0], Err(Error::Truncated(_))));
        // A tail shorter than a header is ignored, as in kcp-go.
        let mut d = SegmentHeader::default().to_bytes().to_vec();
        d.extend_from_slice(&[7; 23]);
        assert_eq!(Segments::new(&d).count(), 1);
    }

    fn hex_decode(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
