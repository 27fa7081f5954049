//! 1500-byte packet buffers, recycled so the packet path does not allocate.

use std::sync::Mutex;

use crate::config::MTU_LIMIT;

/// One datagram buffer of [`MTU_LIMIT`] bytes plus the length in use.
pub struct Packet {
    buf: Box<[u8; MTU_LIMIT]>,
    len: usize,
}

impl std::fmt::Debug for Packet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packet").field("len", &self.len).finish()
    }
}

impl Packet {
    /// A fresh zeroed buffer (prefer [`PacketPool::get`]).
    pub fn new() -> Packet {
        Packet {
            buf: Box::new([0u8; MTU_LIMIT]),
            len: 0,
        }
    }
    /// Bytes in use.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the datagram is empty.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Sets the bytes in use (clamped to the buffer size).
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(MTU_LIMIT);
    }
    /// The bytes in use.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    /// The bytes in use, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }
    /// The whole buffer regardless of the length in use.
    pub fn buf_mut(&mut self) -> &mut [u8; MTU_LIMIT] {
        &mut self.buf
    }
    /// The whole buffer regardless of the length in use.
    pub fn buf(&self) -> &[u8; MTU_LIMIT] {
        &self.buf
    }
}

impl Default for Packet {
    fn default() -> Self {
        Packet::new()
    }
}

/// Buffers shared by every owner in the process, so a session that had a
/// burst does not keep its buffers forever. Bounded: 6 MB of idle buffers.
static SHARED: Mutex<Vec<Packet>> = Mutex::new(Vec::new());
const SHARED_CAP: usize = 4096;
/// How many buffers move between a local cache and the shared pool at once,
/// so the shared lock is taken once per batch, not once per packet.
const REFILL: usize = 32;

/// A small per-owner cache of packet buffers backed by a process-wide pool.
#[derive(Debug)]
pub struct PacketPool {
    local: Vec<Packet>,
    cap: usize,
}

impl PacketPool {
    /// A cache keeping at most `cap` idle buffers locally.
    pub fn new(cap: usize) -> PacketPool {
        PacketPool {
            local: Vec::new(),
            cap: cap.max(1),
        }
    }

    /// A buffer with length 0.
    pub fn get(&mut self) -> Packet {
        if let Some(mut p) = self.local.pop() {
            p.len = 0;
            return p;
        }
        if let Ok(mut shared) = SHARED.lock() {
            let take = shared.len().min(REFILL.min(self.cap));
            let from = shared.len() - take;
            self.local.extend(shared.drain(from..));
        }
        match self.local.pop() {
            Some(mut p) => {
                p.len = 0;
                p
            }
            None => Packet::new(),
        }
    }

    /// Returns a buffer.
    pub fn put(&mut self, p: Packet) {
        self.local.push(p);
        if self.local.len() > self.cap {
            self.spill(self.cap / 2);
        }
    }

    /// Hands every idle buffer back to the shared pool (owner going idle or away).
    pub fn release(&mut self) {
        self.spill(0);
    }

    fn spill(&mut self, keep: usize) {
        if self.local.len() <= keep {
            return;
        }
        if let Ok(mut shared) = SHARED.lock() {
            let room = SHARED_CAP.saturating_sub(shared.len());
            let give = (self.local.len() - keep).min(room);
            let from = self.local.len() - give;
            shared.extend(self.local.drain(from..));
        }
        self.local.truncate(keep);
    }
}

impl Drop for PacketPool {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_recycled() {
        let mut pool = PacketPool::new(4);
        let mut p = pool.get();
        p.set_len(10);
        p.as_mut_slice()[0] = 7;
        let addr = p.buf().as_ptr();
        pool.put(p);
        let q = pool.get();
        assert_eq!(q.buf().as_ptr(), addr);
        assert_eq!(q.len(), 0);
        let mut r = Packet::new();
        r.set_len(5000);
        assert_eq!(r.len(), MTU_LIMIT);
    }

    #[test]
    fn local_cache_is_bounded() {
        let mut pool = PacketPool::new(4);
        for _ in 0..20 {
            pool.put(Packet::new());
        }
        assert!(pool.local.len() <= 4);
    }
}
