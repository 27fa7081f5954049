//! kcptun's Quantum Permutation Pad (`--QPP`, `--QPPCount`), byte-compatible
//! with github.com/xtaci/qpp as kcptun uses it.
//!
//! A [`QppPad`] is a set of `count` byte permutations (and their inverses)
//! derived from a seed; kcptun derives it once from `--key` with
//! `--QPPCount` pads (default 61). Each direction of each smux stream then
//! runs its own [`QppState`], a xoshiro256** generator also seeded from
//! `--key`, so both ends start every stream from the same state:
//!
//! ```text
//! keystream word w_k = k-th xoshiro256** output (k = 0, 1, ...)
//! stream byte p (p = 0, 1, ... over the whole direction):
//!     w = w_{p / 8},  r = byte (p % 8) of w (little-endian),  P = pad[(w as u16) % count]
//!     encrypt: c = P[x ^ r]        decrypt: x = P⁻¹[c] ^ r
//! ```
//!
//! The position in the stream is all that matters, so any split of the bytes
//! into writes or reads gives the same result. [`QppStream`] applies this to
//! an async byte stream: writes are encrypted, reads decrypted.
//!
//! Pad derivation (all PBKDF2 are HMAC-SHA1, 32-byte outputs):
//! a seed shorter than 32 bytes is first stretched with PBKDF2 (128 rounds);
//! it is then laid cyclically over [`SEED_CHUNKS`] chunks of 32 bytes, each
//! expanded with PBKDF2 (1024 rounds) and turned into an AES-256 key with
//! PBKDF2 (128 rounds). Pad `i` starts as the identity and is Fisher–Yates
//! shuffled from position 255 down to 1 by a 32-byte value that starts as
//! HMAC-SHA256(chunk `i % 7`, `"QPP_" + binary(i)`) and, before each swap,
//! is AES-encrypted (as two blocks) once under every chunk key; the swap
//! partner is that value, read as a big-endian integer, modulo `pos + 1`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
use aes::Aes256;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// kcptun's default `--QPPCount`.
pub const DEFAULT_PAD_COUNT: u16 = 61;
/// Number of 32-byte seed chunks: enough bytes to index all 256! byte
/// permutations (log2(256!) rounds up to 211 bytes, so 7 chunks); also the
/// minimum pad count the Go package recommends.
pub const SEED_CHUNKS: usize = 7;
/// Bytes of one seed chunk.
const CHUNK_LEN: usize = 32;
/// Bytes of the pseudo-random word that selects a pad and masks 8 bytes.
const WORD_BYTES: u8 = 8;

const PAD_IDENTIFIER_PREFIX: &str = "QPP_";
const PM_SELECTOR_IDENTIFIER: &[u8] = b"PERMUTATION_MATRIX_SELECTOR";
const SHUFFLE_SALT: &[u8] = b"___QUANTUM_PERMUTATION_PAD_SHUFFLE_SALT___";
const PRNG_SALT: &[u8] = b"___QUANTUM_PERMUTATION_PAD_PRNG_SALT___";
const CHUNK_DERIVE_SALT: &[u8] = b"___QUANTUM_PERMUTATION_PAD_SEED_DERIVE___";
const PBKDF2_ROUNDS: u32 = 128;
const CHUNK_DERIVE_ROUNDS: u32 = 1024;

/// Bytes [`QppStream`] encrypts per `poll_write` (its one write buffer).
pub const WRITE_CHUNK: usize = 32 * 1024;

/// Why a [`QppPad`] cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QppError {
    /// The pad count must be 1..=65535 (kcptun refuses 0; Go's `uint16`
    /// conversion would silently wrap larger values, so they are refused).
    #[error("QPP pad count {0} is out of range: it must be 1..=65535")]
    PadCount(u64),
}

type HmacSha256 = Hmac<Sha256>;

fn pbkdf2_sha1(password: &[u8], salt: &[u8], rounds: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password, salt, rounds, &mut out);
    out
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// A set of byte permutations and their inverses, shared read-only by every
/// stream of a tunnel.
#[derive(Clone)]
pub struct QppPad {
    pads: Box<[[u8; 256]]>,
    rpads: Box<[[u8; 256]]>,
}

impl std::fmt::Debug for QppPad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The pads are key material.
        f.debug_struct("QppPad")
            .field("count", &self.pads.len())
            .finish_non_exhaustive()
    }
}

impl QppPad {
    /// Derives `count` pads from `seed` as `qpp.NewQPP(seed, count)` does
    /// (kcptun: `seed` = `--key`, `count` = `--QPPCount`).
    pub fn new(seed: &[u8], count: u64) -> Result<Self, QppError> {
        let count = match u16::try_from(count) {
            Ok(c) if c > 0 => c,
            _ => return Err(QppError::PadCount(count)),
        };
        let chunks = seed_chunks(seed);
        let blocks: Vec<Aes256> = chunks
            .iter()
            .map(|chunk| {
                let key = pbkdf2_sha1(chunk, SHUFFLE_SALT, PBKDF2_ROUNDS);
                Aes256::new(GenericArray::from_slice(&key))
            })
            .collect();
        let mut pads = vec![[0u8; 256]; usize::from(count)].into_boxed_slice();
        let mut rpads = vec![[0u8; 256]; usize::from(count)].into_boxed_slice();
        for (id, (pad, rpad)) in pads.iter_mut().zip(rpads.iter_mut()).enumerate() {
            shuffle(pad, &chunks[id % SEED_CHUNKS], id, &blocks);
            for (i, &p) in pad.iter().enumerate() {
                rpad[usize::from(p)] = i as u8;
            }
        }
        Ok(QppPad { pads, rpads })
    }

    /// Number of pads.
    pub fn count(&self) -> u16 {
        // `new` bounds the count to u16.
        self.pads.len() as u16
    }

    /// The encryption permutations, `count` of them (for tests and vectors).
    pub fn pads(&self) -> &[[u8; 256]] {
        &self.pads
    }

    /// Encrypts `data` in place, continuing the stream `state` is at.
    pub fn encrypt(&self, data: &mut [u8], state: &mut QppState) {
        self.apply(data, state, &self.pads, |pad, x, r| pad[usize::from(x ^ r)]);
    }

    /// Decrypts `data` in place, continuing the stream `state` is at.
    pub fn decrypt(&self, data: &mut [u8], state: &mut QppState) {
        self.apply(data, state, &self.rpads, |rpad, c, r| {
            rpad[usize::from(c)] ^ r
        });
    }

    #[inline(always)]
    fn apply(
        &self,
        mut data: &mut [u8],
        state: &mut QppState,
        table: &[[u8; 256]],
        f: impl Fn(&[u8; 256], u8, u8) -> u8,
    ) {
        let count = table.len();
        let select = |w: u64| &table[usize::from(w as u16) % count];
        // Finish the word a previous call left partly used.
        if state.used != 0 {
            let take = data.len().min(usize::from(WORD_BYTES - state.used));
            let (head, rest) = std::mem::take(&mut data).split_at_mut(take);
            let pad = select(state.word);
            for b in head {
                *b = f(pad, *b, (state.word >> (8 * state.used)) as u8);
                state.used += 1;
            }
            if state.used == WORD_BYTES {
                state.advance();
            }
            data = rest;
        }
        let mut words = data.chunks_exact_mut(usize::from(WORD_BYTES));
        for block in &mut words {
            let w = state.word;
            let pad = select(w);
            for (i, b) in block.iter_mut().enumerate() {
                *b = f(pad, *b, (w >> (8 * i)) as u8);
            }
            state.advance();
        }
        let tail = words.into_remainder();
        if !tail.is_empty() {
            let pad = select(state.word);
            for b in tail {
                *b = f(pad, *b, (state.word >> (8 * state.used)) as u8);
                state.used += 1;
            }
        }
    }
}

/// The seed laid over [`SEED_CHUNKS`] expanded 32-byte chunks.
fn seed_chunks(seed: &[u8]) -> [[u8; CHUNK_LEN]; SEED_CHUNKS] {
    let stretched;
    let seed = if seed.len() < CHUNK_LEN {
        stretched = pbkdf2_sha1(seed, CHUNK_DERIVE_SALT, PBKDF2_ROUNDS);
        &stretched[..]
    } else {
        seed
    };
    let mut chunks = [[0u8; CHUNK_LEN]; SEED_CHUNKS];
    let mut cyclic = seed.iter().cycle();
    for chunk in &mut chunks {
        for b in chunk.iter_mut() {
            // `seed` has at least 32 bytes here, so the cycle never ends.
            *b = *cyclic.next().unwrap_or(&0);
        }
        *chunk = pbkdf2_sha1(chunk, CHUNK_DERIVE_SALT, CHUNK_DERIVE_ROUNDS);
    }
    chunks
}

/// Shuffles the identity permutation into pad number `id`.
fn shuffle(pad: &mut [u8; 256], chunk: &[u8], id: usize, blocks: &[Aes256]) {
    for (i, p) in pad.iter_mut().enumerate() {
        *p = i as u8;
    }
    let message = format!("{PAD_IDENTIFIER_PREFIX}{id:b}");
    let mut sum = hmac_sha256(chunk, message.as_bytes());
    for pos in (1..256usize).rev() {
        for block in blocks {
            for half in sum.chunks_exact_mut(16) {
                block.encrypt_block(GenericArray::from_mut_slice(half));
            }
        }
        let modulus = pos as u32 + 1;
        let j = sum
            .iter()
            .fold(0u32, |rem, &b| (rem * 256 + u32::from(b)) % modulus);
        pad.swap(pos, j as usize);
    }
}

/// The per-direction position in a QPP stream: a xoshiro256** generator,
/// its current word and how many bytes of that word are used.
#[derive(Clone, PartialEq, Eq)]
pub struct QppState {
    xoshiro: [u64; 4],
    word: u64,
    used: u8,
}

impl std::fmt::Debug for QppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QppState")
            .field("used", &self.used)
            .finish_non_exhaustive()
    }
}

impl QppState {
    /// A stream's starting state, as `qpp.CreatePRNG(seed)` (kcptun: `seed`
    /// = `--key`, for both directions of every stream).
    pub fn new(seed: &[u8]) -> Self {
        let mac = hmac_sha256(seed, PM_SELECTOR_IDENTIFIER);
        let key = pbkdf2_sha1(&mac, PRNG_SALT, PBKDF2_ROUNDS);
        let mut xoshiro = [0u64; 4];
        for (s, bytes) in xoshiro.iter_mut().zip(key.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(bytes);
            *s = u64::from_le_bytes(b);
        }
        let mut state = QppState {
            xoshiro,
            word: 0,
            used: 0,
        };
        state.advance();
        state
    }

    /// The generator's four state words (for tests and vectors).
    pub fn xoshiro(&self) -> [u64; 4] {
        self.xoshiro
    }

    /// The current keystream word and how many of its bytes are used
    /// (0..8; for tests and vectors).
    pub fn position(&self) -> (u64, u8) {
        (self.word, self.used)
    }

    fn advance(&mut self) {
        let s = &mut self.xoshiro;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        self.word = result;
        self.used = 0;
    }
}

/// An async byte stream with QPP applied: bytes written are encrypted, bytes
/// read are decrypted, each direction with its own [`QppState`]. This is
/// kcptun's `QPPPort` around one smux stream.
///
/// Writes are encrypted into one internal buffer of [`WRITE_CHUNK`] bytes
/// (allocated once): `poll_write` accepts up to that many bytes and may
/// return before the inner stream has taken them all, so call `flush`
/// (`tokio::io::copy` does) before waiting on the peer.
pub struct QppStream<S> {
    inner: S,
    pad: Arc<QppPad>,
    enc: QppState,
    dec: QppState,
    wbuf: Box<[u8]>,
    wpos: usize,
    wlen: usize,
}

impl<S> std::fmt::Debug for QppStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QppStream")
            .field("pending", &(self.wlen - self.wpos))
            .finish_non_exhaustive()
    }
}

impl<S> QppStream<S> {
    /// Wraps `inner` as kcptun does for every stream: both directions start
    /// from `QppState::new(seed)` (kcptun passes `--key`).
    pub fn new(inner: S, pad: Arc<QppPad>, seed: &[u8]) -> Self {
        let state = QppState::new(seed);
        Self::with_state(inner, pad, state)
    }

    /// Wraps `inner` with both directions starting at `initial`; lets a
    /// tunnel derive the state once and clone it for every stream.
    pub fn with_state(inner: S, pad: Arc<QppPad>, initial: QppState) -> Self {
        QppStream {
            inner,
            pad,
            enc: initial.clone(),
            dec: initial,
            wbuf: vec![0u8; WRITE_CHUNK].into_boxed_slice(),
            wpos: 0,
            wlen: 0,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped stream, mutably (bytes written to it directly bypass QPP
    /// and desynchronise the peer).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: AsyncWrite + Unpin> QppStream<S> {
    /// Writes out the encrypted bytes still buffered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wpos < self.wlen {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.wbuf[self.wpos..self.wlen]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wpos += n;
        }
        self.wpos = 0;
        self.wlen = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for QppStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.pad
            .decrypt(&mut buf.filled_mut()[before..], &mut this.dec);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for QppStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(this.wbuf.len());
        this.wbuf[..n].copy_from_slice(&buf[..n]);
        this.pad.encrypt(&mut this.wbuf[..n], &mut this.enc);
        this.wlen = n;
        // The bytes are committed to the keystream now; try to pass them on
        // at once, and leave what the inner stream does not take for the
        // next write or flush.
        match Pin::new(&mut this.inner).poll_write(cx, &this.wbuf[..n]) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(k)) => this.wpos = k,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        if this.wpos == this.wlen {
            this.wpos = 0;
            this.wlen = 0;
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 256! needs 211 bytes, hence 7 chunks of 32 (Go computes this with
    /// big.Int at run time; we check the constant the same way).
    #[test]
    fn seed_chunks_cover_all_permutations() {
        // Little-endian base-2^32 bignum.
        let mut n: Vec<u64> = vec![1];
        for k in 1..=256u64 {
            let mut carry = 0u64;
            for limb in n.iter_mut() {
                let v = *limb * k + carry;
                *limb = v & 0xffff_ffff;
                carry = v >> 32;
            }
            if carry > 0 {
                n.push(carry);
            }
        }
        let top = *n.last().unwrap();
        let bits = (n.len() - 1) * 32 + (64 - top.leading_zeros() as usize);
        let bytes = bits.div_ceil(8);
        assert_eq!(bytes, 211);
        assert_eq!(bytes.div_ceil(CHUNK_LEN), SEED_CHUNKS);
    }

    #[test]
    fn pad_count_bounds() {
        assert_eq!(QppPad::new(b"k", 0).unwrap_err(), QppError::PadCount(0));
        assert_eq!(
            QppPad::new(b"k", 65536).unwrap_err(),
            QppError::PadCount(65536)
        );
        assert_eq!(QppPad::new(b"k", 3).unwrap().count(), 3);
    }

    #[test]
    fn pads_are_permutations_with_inverses() {
        let pad = QppPad::new(b"it's a secrect", 5).unwrap();
        for (p, r) in pad.pads.iter().zip(pad.rpads.iter()) {
            let mut seen = [false; 256];
            for &b in p.iter() {
                seen[usize::from(b)] = true;
            }
            assert!(seen.iter().all(|&s| s));
            for x in 0..256 {
                assert_eq!(usize::from(r[usize::from(p[x])]), x);
            }
        }
    }
}
