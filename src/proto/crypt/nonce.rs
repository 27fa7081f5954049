//! Per-datagram nonce source (§2.7).
//!
//! The peer never interprets the nonce, but with a fixed CFB IV it is what
//! makes two datagrams with equal payloads differ, so it must be
//! unpredictable and never repeat across clones. A ChaCha-based `StdRng`
//! seeded from the OS gives that without a syscall per datagram; like kcp-go
//! it reseeds after 2^24 draws to bound how much output one key produces.

use rand::rngs::{OsRng, StdRng};
use rand::{RngCore, SeedableRng};

use crate::error::{Error, Result};

/// Draws between reseeds; kcp-go's `reseedInterval`.
const RESEED_INTERVAL: u32 = 1 << 24;

/// After a failed reseed, try again this many draws later.
const RESEED_RETRY: u32 = 1 << 10;

/// A lazily seeded CSPRNG for nonces. A fresh (unseeded) value is cheap and
/// allocation-free; the OS is asked for a seed on the first draw.
#[derive(Default)]
pub(crate) struct NonceSource {
    rng: Option<StdRng>,
    left: u32,
}

impl NonceSource {
    /// Fills `out` with fresh random bytes.
    #[inline]
    pub(crate) fn fill(&mut self, out: &mut [u8]) -> Result<()> {
        if self.left == 0 {
            self.reseed()?;
        }
        self.left -= 1;
        match self.rng.as_mut() {
            Some(rng) => {
                rng.fill_bytes(out);
                Ok(())
            }
            None => Err(Error::Io(std::io::Error::other("nonce source not seeded"))),
        }
    }

    #[cold]
    fn reseed(&mut self) -> Result<()> {
        match StdRng::from_rng(OsRng) {
            Ok(rng) => {
                self.rng = Some(rng);
                self.left = RESEED_INTERVAL;
                Ok(())
            }
            // An existing generator stays safe to use for a while longer;
            // without one there is nothing secure to draw from.
            Err(e) if self.rng.is_none() => Err(Error::Io(e.into())),
            Err(_) => {
                self.left = RESEED_RETRY;
                Ok(())
            }
        }
    }
}

impl Clone for NonceSource {
    /// A clone must never replay its original's nonces: it starts unseeded
    /// and draws its own OS seed on first use.
    fn clone(&self) -> Self {
        NonceSource::default()
    }
}

impl core::fmt::Debug for NonceSource {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NonceSource")
            .field("seeded", &self.rng.is_some())
            .finish()
    }
}
