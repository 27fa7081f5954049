//! smux frame layout (§7.6): `version(1) | cmd(1) | length u16 LE | sid u32 LE | payload`.

/// Stream open; no payload.
pub const CMD_SYN: u8 = 0;
/// Stream close (EOF mark); no payload.
pub const CMD_FIN: u8 = 1;
/// Data push; `length` payload bytes.
pub const CMD_PSH: u8 = 2;
/// No operation (keepalive), stream id 0; no payload.
pub const CMD_NOP: u8 = 3;
/// v2 window update: consumed (u32 LE) then window (u32 LE).
pub const CMD_UPD: u8 = 4;
/// Frame header size.
pub const HEADER_SIZE: usize = 8;
/// Payload size of a UPD frame.
pub const UPD_SIZE: usize = 8;
/// Largest payload a frame can carry (the length field is 16 bits).
pub const MAX_FRAME_SIZE: usize = 65535;
/// A v2 stream's assumed peer window before the first UPD arrives.
pub const INITIAL_PEER_WINDOW: u32 = 262_144;

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Protocol version byte (1 or 2).
    pub version: u8,
    /// Command (`CMD_*`).
    pub cmd: u8,
    /// Payload length.
    pub length: u16,
    /// Stream id.
    pub sid: u32,
}

impl FrameHeader {
    /// Parses the 8 header bytes.
    pub fn decode(b: &[u8; HEADER_SIZE]) -> FrameHeader {
        FrameHeader {
            version: b[0],
            cmd: b[1],
            length: u16::from_le_bytes([b[2], b[3]]),
            sid: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    /// The 8 header bytes.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let l = self.length.to_le_bytes();
        let s = self.sid.to_le_bytes();
        [self.version, self.cmd, l[0], l[1], s[0], s[1], s[2], s[3]]
    }

    /// Appends this header and `payload` (whose length must equal
    /// `self.length`) to `out`.
    pub(crate) fn append(&self, payload: &[u8], out: &mut Vec<u8>) {
        debug_assert_eq!(payload.len(), self.length as usize);
        out.extend_from_slice(&self.encode());
        out.extend_from_slice(payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_is_little_endian() {
        let h = FrameHeader {
            version: 2,
            cmd: CMD_PSH,
            length: 0x1234,
            sid: 0x0a0b_0c0d,
        };
        let b = h.encode();
        assert_eq!(b, [2, 2, 0x34, 0x12, 0x0d, 0x0c, 0x0b, 0x0a]);
        assert_eq!(FrameHeader::decode(&b), h);
    }
}
