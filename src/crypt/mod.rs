//! Packet security layer: kcp-go's nonce + CRC32 framing with CFB block
//! ciphers, Salsa20, XOR and the AES-GCM AEAD (§1.2–1.4, §2, §7.2).
//!
//! Pure code: a [`Crypt`] seals and opens one datagram at a time in the
//! caller's buffer, without allocating.
//!
//! Non-AEAD datagram (every kind except `AesGcm` and `Null`), §1.3:
//!
//! ```text
//! 0        16     20
//! | nonce  | CRC  | payload ... |      CRC32-IEEE(payload), little-endian
//! `---------- encrypted from byte 0 (Salsa20: from byte 8; None: not at all)
//! ```
//!
//! AEAD datagram, §1.4: `nonce(12) || AES-GCM(payload) || tag(16)`, no CRC,
//! no associated data. `Null` has no header at all.
//!
//! ```
//! use kcp_session::crypt::{CipherKind, Crypt};
//! let mut tx = Crypt::from_kcptun("aes-128", "it's a secrect")?;
//! let rx = tx.clone();
//! let mut buf = [0u8; 1500];
//! let h = tx.header_len();
//! buf[h..h + 5].copy_from_slice(b"hello");
//! let n = tx.seal(&mut buf, 5)?;
//! let payload = rx.open(&mut buf[..n])?;
//! assert_eq!(&buf[payload], b"hello");
//! # Ok::<(), kcp_session::Error>(())
//! ```

#[cfg(target_arch = "x86_64")]
mod aesni;
mod cfb;
#[cfg(target_arch = "x86_64")]
mod gcm;
mod kind;
mod nonce;
mod salsa;
mod tea;
mod twofish_fast;

use core::fmt;
use core::ops::Range;
use std::sync::Arc;

use aes::{Aes128, Aes192, Aes256};
use aes_gcm::aead::AeadInPlace;
use aes_gcm::{AesGcm, Nonce, Tag};
use cipher::consts::U12;
use cipher::KeyInit;

use crate::error::{Error, Result};

pub use cfb::INITIAL_VECTOR;
pub use kind::CipherKind;
pub use tea::{Tea16, Xtea};

use nonce::NonceSource;

/// Nonce at the front of every non-AEAD datagram (kcp-go `nonceSize`).
pub const NONCE_SIZE: usize = 16;
/// CRC32 field after the nonce (kcp-go `crcSize`).
pub const CRC_SIZE: usize = 4;
/// Nonce + CRC (kcp-go `cryptHeaderSize`).
pub const CRYPT_HEADER_SIZE: usize = NONCE_SIZE + CRC_SIZE;
/// AES-GCM nonce at the front of an AEAD datagram (`cipher.NewGCM`).
pub const AEAD_NONCE_SIZE: usize = 12;
/// AES-GCM tag appended to an AEAD datagram.
pub const AEAD_TAG_SIZE: usize = 16;
/// kcp-go's `mtuLimit`: receive buffer size and the XOR pad length (§1.9, §2.5).
pub const MTU_LIMIT: usize = 1500;
/// PBKDF2 salt of the XOR pad (kcp-go `saltxor`, §2.5).
pub const XOR_SALT: &[u8] = b"sH3CIVoF#rWLtJo6";
/// PBKDF2 iterations of the XOR pad (§2.5).
pub const XOR_ITERATIONS: u32 = 32;
/// PBKDF2 salt of kcptun's key derivation (§7.2).
pub const KCPTUN_SALT: &[u8] = b"kcp-go";
/// PBKDF2 iterations of kcptun's key derivation (§7.2).
pub const KCPTUN_ITERATIONS: u32 = 4096;

type Aes192Gcm = AesGcm<Aes192, U12>;

/// The keyed cipher state, shared by clones of a [`Crypt`].
// Lives once behind an `Arc`; boxing the big key schedules would only add a
// second indirection on the hot path.
#[allow(clippy::large_enum_variant)]
enum Engine {
    Null,
    None,
    Aes128(Aes128),
    Aes192(Aes192),
    Aes256(Aes256),
    /// AES of any key size with the AES-NI fast path (x86-64 only).
    #[cfg(target_arch = "x86_64")]
    AesNi(aesni::AesNi),
    Salsa20([u8; 32]),
    Blowfish(blowfish::Blowfish),
    Cast5(cast5::Cast5),
    TripleDes(des::TdesEde3),
    Tea(Tea16),
    Xtea(Xtea),
    Twofish(twofish_fast::Twofish),
    Sm4(sm4::Sm4),
    Xor([u8; MTU_LIMIT]),
    Gcm128(aes_gcm::Aes128Gcm),
    Gcm192(Aes192Gcm),
    Gcm256(aes_gcm::Aes256Gcm),
    /// AES-GCM of any key size with AES-NI + PCLMULQDQ (x86-64 only).
    #[cfg(target_arch = "x86_64")]
    GcmNi(gcm::GcmNi),
}

/// Seals and opens datagrams for one cipher and key.
///
/// Cloning is cheap (the key schedule is shared behind an `Arc`); each clone
/// draws its own nonces from a CSPRNG seeded from the OS on first use, so
/// clones never repeat each other's nonces.
#[derive(Clone)]
pub struct Crypt {
    kind: CipherKind,
    engine: Arc<Engine>,
    nonces: NonceSource,
}

impl fmt::Debug for Crypt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("Crypt").field("kind", &self.kind).finish()
    }
}

fn bad_key(kind: CipherKind, len: usize, accepted: &'static str) -> Error {
    Error::InvalidKey {
        cipher: kind.name(),
        len,
        accepted,
    }
}

fn exact<const N: usize>(kind: CipherKind, key: &[u8], accepted: &'static str) -> Result<[u8; N]> {
    key.try_into()
        .map_err(|_| bad_key(kind, key.len(), accepted))
}

impl Crypt {
    /// Builds a `Crypt` with the key-length rules of kcp-go's constructors
    /// (§2.1): AES-128/192/256 need exactly 16/24/32 bytes, `AesGcm` and
    /// `Twofish` 16, 24 or 32, `Cast5`, `Tea`, `Xtea` and `Sm4` 16,
    /// `TripleDes` 24, `Blowfish` 1..=56; `Salsa20` copies the key into 32
    /// bytes (zero-padded or truncated, as Go does); `Xor` takes any key;
    /// `None` and `Null` ignore it. Anything else is [`Error::InvalidKey`].
    pub fn new(kind: CipherKind, key: &[u8]) -> Result<Crypt> {
        let engine = match kind {
            CipherKind::Null => Engine::Null,
            CipherKind::None => Engine::None,
            CipherKind::Aes128 => {
                aes_engine(Aes128::new(&exact::<16>(kind, key, "16")?.into()), key)
            }
            CipherKind::Aes192 => {
                aes_engine(Aes192::new(&exact::<24>(kind, key, "24")?.into()), key)
            }
            CipherKind::Aes256 => {
                aes_engine(Aes256::new(&exact::<32>(kind, key, "32")?.into()), key)
            }
            CipherKind::AesGcm => gcm_engine(key)?,
            CipherKind::Salsa20 => {
                let mut k = [0u8; 32];
                let n = key.len().min(32);
                k[..n].copy_from_slice(&key[..n]);
                Engine::Salsa20(k)
            }
            CipherKind::Blowfish => Engine::Blowfish(blowfish_key(key)?),
            CipherKind::Cast5 => {
                let k = exact::<16>(kind, key, "16")?;
                Engine::Cast5(cast5::Cast5::new(&k.into()))
            }
            CipherKind::TripleDes => {
                Engine::TripleDes(des::TdesEde3::new(&exact::<24>(kind, key, "24")?.into()))
            }
            CipherKind::Tea => Engine::Tea(Tea16::new(&exact::<16>(kind, key, "16")?)),
            CipherKind::Xtea => Engine::Xtea(Xtea::new(&exact::<16>(kind, key, "16")?)),
            CipherKind::Twofish => Engine::Twofish(
                twofish_fast::Twofish::new(key)
                    .ok_or_else(|| bad_key(kind, key.len(), "16, 24 or 32"))?,
            ),
            CipherKind::Sm4 => Engine::Sm4(sm4::Sm4::new(&exact::<16>(kind, key, "16")?.into())),
            CipherKind::Xor => Engine::Xor(Crypt::xor_pad(key)),
        };
        Ok(Crypt {
            kind,
            engine: Arc::new(engine),
            nonces: NonceSource::default(),
        })
    }

    /// Builds the cipher kcptun uses for `--crypt name --key passphrase`:
    /// the 32-byte [`kcptun_key`](Crypt::kcptun_key), truncated per name
    /// (§7.2). Unknown names are [`Error::UnknownCipher`] (kcptun itself
    /// would silently fall back to AES-256).
    pub fn from_kcptun(name: &str, passphrase: &str) -> Result<Crypt> {
        let kind: CipherKind = name.parse()?;
        let key = Crypt::kcptun_key(passphrase);
        Crypt::new(kind, &key[..kind.kcptun_key_len()])
    }

    /// kcptun's key: PBKDF2-HMAC-SHA1(passphrase, "kcp-go", 4096, 32) (§7.2).
    pub fn kcptun_key(passphrase: &str) -> [u8; 32] {
        let mut key = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<sha1::Sha1>(
            passphrase.as_bytes(),
            KCPTUN_SALT,
            KCPTUN_ITERATIONS,
            &mut key,
        );
        key
    }

    /// The XOR cipher's pad for `key`: PBKDF2-HMAC-SHA1(key,
    /// "sH3CIVoF#rWLtJo6", 32, 1500) (§2.5).
    pub fn xor_pad(key: &[u8]) -> [u8; MTU_LIMIT] {
        let mut pad = [0u8; MTU_LIMIT];
        pbkdf2::pbkdf2_hmac::<sha1::Sha1>(key, XOR_SALT, XOR_ITERATIONS, &mut pad);
        pad
    }

    /// Which cipher this is.
    pub fn kind(&self) -> CipherKind {
        self.kind
    }

    /// Bytes in front of the payload: 0 (`Null`), 12 (AEAD) or 20.
    pub fn header_len(&self) -> usize {
        self.kind.header_len()
    }

    /// Bytes after the payload: 16 for AEAD, else 0.
    pub fn trailer_len(&self) -> usize {
        self.kind.trailer_len()
    }

    /// `header_len() + trailer_len()`: what sealing adds to a payload.
    pub fn overhead(&self) -> usize {
        self.header_len() + self.trailer_len()
    }

    /// Seals the datagram whose plaintext payload is
    /// `buf[header_len() .. header_len() + payload_len]`: draws a fresh nonce,
    /// writes the CRC (non-AEAD), encrypts in place and, for AEAD, appends
    /// the tag. Returns the datagram length (`payload_len + overhead()`).
    ///
    /// Errors: [`Error::BufferTooSmall`] if `buf` cannot hold the datagram;
    /// [`Error::Io`] if the OS cannot seed the nonce generator.
    pub fn seal(&mut self, buf: &mut [u8], payload_len: usize) -> Result<usize> {
        let total = self.check_seal(buf.len(), payload_len)?;
        let n = self.kind.nonce_len();
        if let Some(nonce) = buf.get_mut(..n) {
            self.nonces.fill(nonce)?;
        }
        self.seal_in_place(buf, payload_len)?;
        Ok(total)
    }

    /// [`seal`](Crypt::seal) with a caller-chosen nonce, for deterministic
    /// test vectors. `nonce` must be [`CipherKind::nonce_len`] bytes (16,
    /// 12 for AEAD, 0 for `Null`), else [`Error::InvalidNonce`].
    pub fn seal_with_nonce(
        &self,
        buf: &mut [u8],
        payload_len: usize,
        nonce: &[u8],
    ) -> Result<usize> {
        let expected = self.kind.nonce_len();
        if nonce.len() != expected {
            return Err(Error::InvalidNonce {
                len: nonce.len(),
                expected,
            });
        }
        let total = self.check_seal(buf.len(), payload_len)?;
        if let Some(dst) = buf.get_mut(..expected) {
            dst.copy_from_slice(nonce);
        }
        self.seal_in_place(buf, payload_len)?;
        Ok(total)
    }

    /// Decrypts and verifies the datagram `buf` in place and returns the
    /// range of `buf` holding the plaintext payload.
    ///
    /// Errors (the datagram must be dropped and counted, §3):
    /// [`Error::Truncated`] if shorter than the header (20 bytes, or 28 for
    /// AEAD), [`Error::Checksum`] on a CRC mismatch,
    /// [`Error::Authentication`] if the AEAD tag does not verify.
    pub fn open(&self, buf: &mut [u8]) -> Result<Range<usize>> {
        let len = buf.len();
        match &*self.engine {
            Engine::Null => Ok(0..len),
            Engine::Gcm128(g) => open_aead(g, buf),
            Engine::Gcm192(g) => open_aead(g, buf),
            Engine::Gcm256(g) => open_aead(g, buf),
            #[cfg(target_arch = "x86_64")]
            Engine::GcmNi(g) => open_gcm_ni(g, buf),
            engine => {
                if len < CRYPT_HEADER_SIZE {
                    return Err(Error::Truncated(
                        "datagram shorter than the 20-byte crypto header",
                    ));
                }
                engine.decrypt_raw(buf);
                let (header, payload) = buf.split_at(CRYPT_HEADER_SIZE);
                let mut crc = [0u8; CRC_SIZE];
                crc.copy_from_slice(&header[NONCE_SIZE..]);
                if crc32fast::hash(payload) != u32::from_le_bytes(crc) {
                    return Err(Error::Checksum);
                }
                Ok(CRYPT_HEADER_SIZE..len)
            }
        }
    }

    /// Applies the bare cipher to `buf` in place, exactly like kcp-go's
    /// `BlockCrypt.Encrypt(buf, buf)`: no nonce, no CRC. For test vectors
    /// and benchmarks. `Null` leaves `buf` unchanged; AEAD has no raw
    /// stream and returns [`Error::InvalidConfig`].
    pub fn encrypt_raw(&self, buf: &mut [u8]) -> Result<()> {
        self.check_raw()?;
        self.engine.encrypt_raw(buf);
        Ok(())
    }

    /// The inverse of [`encrypt_raw`](Crypt::encrypt_raw), like kcp-go's
    /// `BlockCrypt.Decrypt(buf, buf)`.
    pub fn decrypt_raw(&self, buf: &mut [u8]) -> Result<()> {
        self.check_raw()?;
        self.engine.decrypt_raw(buf);
        Ok(())
    }

    fn check_raw(&self) -> Result<()> {
        if self.kind.is_aead() {
            return Err(Error::InvalidConfig(
                "AES-GCM has no raw cipher stream; use seal/open".into(),
            ));
        }
        Ok(())
    }

    fn check_seal(&self, have: usize, payload_len: usize) -> Result<usize> {
        let need = payload_len.saturating_add(self.overhead());
        if have < need {
            return Err(Error::BufferTooSmall { need, have });
        }
        Ok(need)
    }

    /// Seals with the nonce already in place; `buf` is known to be large enough.
    fn seal_in_place(&self, buf: &mut [u8], payload_len: usize) -> Result<()> {
        match &*self.engine {
            Engine::Null => Ok(()),
            Engine::Gcm128(g) => seal_aead(g, buf, payload_len),
            Engine::Gcm192(g) => seal_aead(g, buf, payload_len),
            Engine::Gcm256(g) => seal_aead(g, buf, payload_len),
            #[cfg(target_arch = "x86_64")]
            Engine::GcmNi(g) => {
                let (nonce, rest) = buf.split_at_mut(AEAD_NONCE_SIZE);
                let (payload, trailer) = rest.split_at_mut(payload_len);
                let nonce: &[u8; AEAD_NONCE_SIZE] = (&*nonce)
                    .try_into()
                    .map_err(|_| Error::Truncated("AEAD nonce"))?;
                let tag = g.seal(nonce, payload);
                trailer[..AEAD_TAG_SIZE].copy_from_slice(&tag);
                Ok(())
            }
            engine => {
                let end = CRYPT_HEADER_SIZE + payload_len;
                let datagram = &mut buf[..end];
                let crc = crc32fast::hash(&datagram[CRYPT_HEADER_SIZE..]);
                datagram[NONCE_SIZE..CRYPT_HEADER_SIZE].copy_from_slice(&crc.to_le_bytes());
                engine.encrypt_raw(datagram);
                Ok(())
            }
        }
    }
}

fn seal_aead<A: AeadInPlace<NonceSize = U12>>(
    aead: &A,
    buf: &mut [u8],
    payload_len: usize,
) -> Result<()> {
    let (nonce, rest) = buf.split_at_mut(AEAD_NONCE_SIZE);
    let (payload, trailer) = rest.split_at_mut(payload_len);
    let tag = aead
        .encrypt_in_place_detached(Nonce::<U12>::from_slice(nonce), &[], payload)
        .map_err(|_| Error::Malformed("AEAD payload too long"))?;
    trailer[..AEAD_TAG_SIZE].copy_from_slice(&tag);
    Ok(())
}

fn open_aead<A: AeadInPlace<NonceSize = U12>>(aead: &A, buf: &mut [u8]) -> Result<Range<usize>> {
    let len = buf.len();
    if len < AEAD_NONCE_SIZE + AEAD_TAG_SIZE {
        return Err(Error::Truncated("AEAD datagram shorter than nonce + tag"));
    }
    let end = len - AEAD_TAG_SIZE;
    let (nonce, rest) = buf.split_at_mut(AEAD_NONCE_SIZE);
    let (payload, tag) = rest.split_at_mut(end - AEAD_NONCE_SIZE);
    aead.decrypt_in_place_detached(
        Nonce::<U12>::from_slice(nonce),
        &[],
        payload,
        Tag::from_slice(tag),
    )
    .map_err(|_| Error::Authentication)?;
    Ok(AEAD_NONCE_SIZE..end)
}

#[cfg(target_arch = "x86_64")]
fn open_gcm_ni(g: &gcm::GcmNi, buf: &mut [u8]) -> Result<Range<usize>> {
    let len = buf.len();
    if len < AEAD_NONCE_SIZE + AEAD_TAG_SIZE {
        return Err(Error::Truncated("AEAD datagram shorter than nonce + tag"));
    }
    let end = len - AEAD_TAG_SIZE;
    let (nonce, rest) = buf.split_at_mut(AEAD_NONCE_SIZE);
    let (payload, tag) = rest.split_at_mut(end - AEAD_NONCE_SIZE);
    let nonce: &[u8; AEAD_NONCE_SIZE] = (&*nonce)
        .try_into()
        .map_err(|_| Error::Truncated("AEAD nonce"))?;
    if g.open(nonce, payload, tag) {
        Ok(AEAD_NONCE_SIZE..end)
    } else {
        Err(Error::Authentication)
    }
}

/// AES-GCM with AES-NI + PCLMULQDQ when available, else the `aes-gcm` crate.
fn gcm_engine(key: &[u8]) -> Result<Engine> {
    #[cfg(target_arch = "x86_64")]
    if let Some(g) = gcm::GcmNi::new(key) {
        return Ok(Engine::GcmNi(g));
    }
    Ok(match key.len() {
        16 => Engine::Gcm128(aes_gcm::Aes128Gcm::new(key.into())),
        24 => Engine::Gcm192(Aes192Gcm::new(key.into())),
        32 => Engine::Gcm256(aes_gcm::Aes256Gcm::new(key.into())),
        n => return Err(bad_key(CipherKind::AesGcm, n, "16, 24 or 32")),
    })
}

/// Picks the AES-NI CFB path when the CPU has it, else the `aes` crate
/// (which itself autodetects AES-NI, but pays a call and a memory round trip
/// per block in the serial CFB chain).
fn aes_engine<C: IntoAesEngine>(portable: C, key: &[u8]) -> Engine {
    #[cfg(target_arch = "x86_64")]
    if let Some(ni) = aesni::AesNi::new(key) {
        return Engine::AesNi(ni);
    }
    let _ = key;
    portable.into_engine()
}

trait IntoAesEngine {
    fn into_engine(self) -> Engine;
}
impl IntoAesEngine for Aes128 {
    fn into_engine(self) -> Engine {
        Engine::Aes128(self)
    }
}
impl IntoAesEngine for Aes192 {
    fn into_engine(self) -> Engine {
        Engine::Aes192(self)
    }
}
impl IntoAesEngine for Aes256 {
    fn into_engine(self) -> Engine {
        Engine::Aes256(self)
    }
}

/// Go's Blowfish accepts 1..=56 key bytes, RustCrypto 4..=56. The key
/// schedule reads the key cyclically, so repeating a short key until it is
/// at least 4 bytes long yields the identical schedule.
fn blowfish_key(key: &[u8]) -> Result<blowfish::Blowfish> {
    let invalid = || bad_key(CipherKind::Blowfish, key.len(), "1 to 56");
    if key.is_empty() || key.len() > 56 {
        return Err(invalid());
    }
    let mut expanded = [0u8; 6];
    let k: &[u8] = if key.len() < 4 {
        let reps = 4usize.div_ceil(key.len());
        for (i, b) in expanded.iter_mut().take(reps * key.len()).enumerate() {
            *b = key[i % key.len()];
        }
        &expanded[..reps * key.len()]
    } else {
        key
    };
    blowfish::Blowfish::new_from_slice(k).map_err(|_| invalid())
}

impl Engine {
    fn encrypt_raw(&self, buf: &mut [u8]) {
        match self {
            Engine::Aes128(c) => cfb::encrypt(c, buf),
            Engine::Aes192(c) => cfb::encrypt(c, buf),
            Engine::Aes256(c) => cfb::encrypt(c, buf),
            #[cfg(target_arch = "x86_64")]
            Engine::AesNi(c) => c.cfb_encrypt(buf),
            Engine::Blowfish(c) => cfb::encrypt(c, buf),
            Engine::Cast5(c) => cfb::encrypt(c, buf),
            Engine::TripleDes(c) => cfb::encrypt(c, buf),
            Engine::Tea(c) => cfb::encrypt(c, buf),
            Engine::Xtea(c) => cfb::encrypt(c, buf),
            Engine::Twofish(c) => cfb::encrypt(c, buf),
            Engine::Sm4(c) => cfb::encrypt(c, buf),
            _ => self.symmetric_raw(buf),
        }
    }

    fn decrypt_raw(&self, buf: &mut [u8]) {
        match self {
            Engine::Aes128(c) => cfb::decrypt(c, buf),
            Engine::Aes192(c) => cfb::decrypt(c, buf),
            Engine::Aes256(c) => cfb::decrypt(c, buf),
            #[cfg(target_arch = "x86_64")]
            Engine::AesNi(c) => c.cfb_decrypt(buf),
            Engine::Blowfish(c) => cfb::decrypt(c, buf),
            Engine::Cast5(c) => cfb::decrypt(c, buf),
            Engine::TripleDes(c) => cfb::decrypt(c, buf),
            Engine::Tea(c) => cfb::decrypt(c, buf),
            Engine::Xtea(c) => cfb::decrypt(c, buf),
            Engine::Twofish(c) => cfb::decrypt(c, buf),
            Engine::Sm4(c) => cfb::decrypt(c, buf),
            _ => self.symmetric_raw(buf),
        }
    }

    /// Ciphers whose encryption and decryption are the same operation.
    fn symmetric_raw(&self, buf: &mut [u8]) {
        match self {
            Engine::Salsa20(key) => {
                // §2.4: bytes 0..8 stay clear and are the Salsa20 nonce;
                // Go does nothing at all below 8 bytes.
                if buf.len() < 8 {
                    return;
                }
                let (nonce, data) = buf.split_at_mut(8);
                if let Ok(nonce) = <&[u8; 8]>::try_from(&*nonce) {
                    salsa::xor_keystream(key, nonce, data);
                }
            }
            // §2.5: pad aligned to byte 0; bytes past the 1500-byte pad are
            // left as they are, like Go's subtle.XORBytes.
            Engine::Xor(pad) => {
                for (b, p) in buf.iter_mut().zip(pad.iter()) {
                    *b ^= *p;
                }
            }
            // None, Null, and AEAD (unreachable through the public API).
            _ => {}
        }
    }
}
