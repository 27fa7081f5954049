//! No allocation per packet: after a warm-up, encoding, taking parity and
//! decoding (with losses and recovery) must not touch the heap.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use kcp_session::fec::{FecDecoder, FecEncoder};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Whether the `n`th packet sent is lost: about one in seven, scattered by a
/// hash (splitmix64): a strictly periodic loss shorter than a group would
/// never let the decoder confirm the layout, so nothing would be rebuilt.
fn lost(n: usize) -> bool {
    let mut x = (n as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (x ^ (x >> 31)).is_multiple_of(7)
}

/// Runs `packets` KCP datagrams of varying size through encoder and decoder,
/// losing one packet in seven. Returns how many were recovered.
fn pump(
    enc: &mut FecEncoder,
    dec: &mut FecDecoder,
    pkt: &mut [u8],
    par: &mut [u8],
    packets: usize,
    k0: usize,
) -> usize {
    let mut recovered = 0usize;
    let mut sent = 0usize;
    for k in k0..k0 + packets {
        let kcp_len = 24 + (k * 97) % 1300;
        let ready = enc.encode(pkt, kcp_len, k as u32).unwrap();
        sent += 1;
        let mut sink = |_: &[u8], kind| {
            if kind == kcp_session::kcp::PacketKind::Recovered {
                recovered += 1;
            }
        };
        if !lost(sent) {
            dec.decode(&pkt[..8 + kcp_len], &mut sink).unwrap();
        }
        for i in 0..ready {
            let n = enc.take_parity(i, par).unwrap();
            sent += 1;
            if !lost(sent) {
                dec.decode(&par[..n], &mut sink).unwrap();
            }
        }
    }
    recovered
}

#[test]
fn steady_state_does_not_allocate() {
    for (d, p) in [(10, 3), (3, 2), (20, 10)] {
        let mut enc = FecEncoder::new(d, p).unwrap();
        let mut dec = FecDecoder::new(d, p).unwrap();
        let mut pkt = vec![0u8; 1500];
        let mut par = vec![0u8; 1500];
        // Warm-up: arenas grow, decode matrices get cached.
        let warm = pump(&mut enc, &mut dec, &mut pkt, &mut par, 20_000, 0);
        assert!(warm > 0);
        let before = ALLOCS.load(Ordering::Relaxed);
        let recovered = pump(&mut enc, &mut dec, &mut pkt, &mut par, 20_000, 20_000);
        let allocs = ALLOCS.load(Ordering::Relaxed) - before;
        assert!(recovered > 100, "({d},{p}) recovered only {recovered}");
        assert_eq!(
            allocs, 0,
            "({d},{p}) allocated {allocs} times in steady state"
        );
    }
}
