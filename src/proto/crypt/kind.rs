//! Cipher catalogue (§2.1) and kcptun's `--crypt` names (§7.2).

use core::fmt;
use core::str::FromStr;

use crate::error::Error;

/// Every packet-security mode kcp-go and kcptun put on the wire.
///
/// The `FromStr`/`Display` spelling is kcptun's `--crypt` name (§7.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CipherKind {
    /// AES-128 in kcp-go's CFB (`aes-128`; 16-byte key).
    Aes128,
    /// AES-192 in kcp-go's CFB (`aes-192`; 24-byte key).
    Aes192,
    /// AES-256 in kcp-go's CFB (`aes`, kcptun's default; 32-byte key).
    Aes256,
    /// AES-GCM AEAD: 12-byte nonce, 16-byte tag, no CRC (§1.4). The key
    /// length (16/24/32) picks AES-128/192/256; kcptun's `aes-128-gcm` uses 16.
    AesGcm,
    /// Salsa20/20 keyed with 32 bytes, nonce = datagram bytes 0..8 (§2.4).
    Salsa20,
    /// Blowfish in CFB-64 (key 1..=56 bytes; kcptun passes 32).
    Blowfish,
    /// CAST5 (CAST-128) in CFB-64 (16-byte key).
    Cast5,
    /// Triple DES EDE with three keys in CFB-64 (`3des`; 24-byte key).
    TripleDes,
    /// TEA with kcp-go's 16 rounds (8 cycles) in CFB-64 (16-byte key).
    Tea,
    /// XTEA in CFB-64 (16-byte key).
    Xtea,
    /// Twofish in CFB-128 (key 16/24/32 bytes; kcptun passes 32).
    Twofish,
    /// SM4 in CFB-128 (16-byte key).
    Sm4,
    /// XOR with a 1500-byte PBKDF2 pad (§2.5); any key length.
    Xor,
    /// kcptun `none`: the 20-byte nonce + CRC header is present, nothing is
    /// encrypted. The key is ignored.
    None,
    /// kcptun `null`: no crypto header at all (kcp-go `block == nil`).
    Null,
}

/// kcptun's names, in the order of its `--crypt` help text.
pub(crate) const VALID_NAMES: &str =
    "null, none, aes, aes-128, aes-192, aes-128-gcm, salsa20, blowfish, twofish, cast5, 3des, \
     tea, xtea, sm4, xor";

impl CipherKind {
    /// Every kind, for tests and benchmarks that cover the catalogue.
    pub const ALL: [CipherKind; 15] = [
        CipherKind::Aes128,
        CipherKind::Aes192,
        CipherKind::Aes256,
        CipherKind::AesGcm,
        CipherKind::Salsa20,
        CipherKind::Blowfish,
        CipherKind::Cast5,
        CipherKind::TripleDes,
        CipherKind::Tea,
        CipherKind::Xtea,
        CipherKind::Twofish,
        CipherKind::Sm4,
        CipherKind::Xor,
        CipherKind::None,
        CipherKind::Null,
    ];

    /// kcptun's `--crypt` name for this kind.
    pub fn name(self) -> &'static str {
        match self {
            CipherKind::Aes128 => "aes-128",
            CipherKind::Aes192 => "aes-192",
            CipherKind::Aes256 => "aes",
            CipherKind::AesGcm => "aes-128-gcm",
            CipherKind::Salsa20 => "salsa20",
            CipherKind::Blowfish => "blowfish",
            CipherKind::Cast5 => "cast5",
            CipherKind::TripleDes => "3des",
            CipherKind::Tea => "tea",
            CipherKind::Xtea => "xtea",
            CipherKind::Twofish => "twofish",
            CipherKind::Sm4 => "sm4",
            CipherKind::Xor => "xor",
            CipherKind::None => "none",
            CipherKind::Null => "null",
        }
    }

    /// How many leading bytes of the 32-byte kcptun key (§7.2) kcptun hands
    /// to this cipher's constructor (0 when the key is unused).
    pub fn kcptun_key_len(self) -> usize {
        match self {
            CipherKind::Aes128
            | CipherKind::AesGcm
            | CipherKind::Cast5
            | CipherKind::Tea
            | CipherKind::Xtea
            | CipherKind::Sm4 => 16,
            CipherKind::Aes192 | CipherKind::TripleDes => 24,
            CipherKind::Aes256
            | CipherKind::Salsa20
            | CipherKind::Blowfish
            | CipherKind::Twofish
            | CipherKind::Xor => 32,
            CipherKind::None | CipherKind::Null => 0,
        }
    }

    /// Whether this is the AEAD mode (12-byte nonce, tag, no CRC).
    pub fn is_aead(self) -> bool {
        self == CipherKind::AesGcm
    }

    /// Bytes in front of the payload (§1.2): 0 for `Null`, 12 for AEAD,
    /// 20 (nonce + CRC) for everything else including `None`.
    pub fn header_len(self) -> usize {
        match self {
            CipherKind::Null => 0,
            CipherKind::AesGcm => super::AEAD_NONCE_SIZE,
            _ => super::CRYPT_HEADER_SIZE,
        }
    }

    /// Bytes after the payload: the 16-byte GCM tag for AEAD, else 0.
    pub fn trailer_len(self) -> usize {
        if self.is_aead() {
            super::AEAD_TAG_SIZE
        } else {
            0
        }
    }

    /// The nonce length `seal_with_nonce` expects: 16, 12 (AEAD) or 0 (`Null`).
    pub fn nonce_len(self) -> usize {
        match self {
            CipherKind::Null => 0,
            CipherKind::AesGcm => super::AEAD_NONCE_SIZE,
            _ => super::NONCE_SIZE,
        }
    }
}

impl FromStr for CipherKind {
    type Err = Error;

    /// Parses a kcptun `--crypt` name. Unlike kcptun, which silently falls
    /// back to AES-256, an unknown name is an error listing the valid ones.
    fn from_str(name: &str) -> Result<CipherKind, Error> {
        CipherKind::ALL
            .iter()
            .copied()
            .find(|k| k.name() == name)
            .ok_or_else(|| Error::UnknownCipher {
                name: name.to_owned(),
                valid: VALID_NAMES,
            })
    }
}

impl fmt::Display for CipherKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
