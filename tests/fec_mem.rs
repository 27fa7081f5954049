//! Bytes held by one active FEC session (encoder + decoder), measured with a
//! counting allocator (issue 14: 10,000 active FEC sessions must fit in well
//! under 0.5 GB).
//!
//! The allocator keeps, per thread, the net bytes allocated while a
//! "bucket" (encoder or decoder) is armed, so the test harness's own threads
//! and the test's packet buffers are not counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use kcp_session::fec::{FecDecoder, FecEncoder};
use kcp_session::kcp::PacketKind;

struct Counting;

const NONE: usize = usize::MAX;
const ENC: usize = 0;
const DEC: usize = 1;

thread_local! {
    static BUCKET: Cell<usize> = const { Cell::new(NONE) };
    static HELD: [Cell<isize>; 2] = const { [Cell::new(0), Cell::new(0)] };
}

fn account(delta: isize) {
    // `try_with` keeps the allocator usable during thread teardown.
    let _ = BUCKET.try_with(|b| {
        let b = b.get();
        if b == NONE {
            return;
        }
        let _ = HELD.try_with(|h| {
            let now = h[b].get() + delta;
            h[b].set(now);
        });
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        account(layout.size() as isize);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        account(layout.size() as isize);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        account(-(layout.size() as isize));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        account(new_size as isize - layout.size() as isize);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` with allocations charged to `bucket`.
fn charged<T>(bucket: usize, f: impl FnOnce() -> T) -> T {
    BUCKET.with(|b| b.set(bucket));
    let r = f();
    BUCKET.with(|b| b.set(NONE));
    r
}

fn held(bucket: usize) -> isize {
    HELD.with(|h| h[bucket].get())
}

/// Whether the `n`th packet sent is lost (splitmix64 hash, about one in
/// `one_in`).
fn lost(n: usize, one_in: u64) -> bool {
    let mut x = (n as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (x ^ (x >> 31)).is_multiple_of(one_in)
}

struct Run {
    enc: FecEncoder,
    dec: FecDecoder,
    recovered: usize,
    /// Most shards the decoder held at once.
    most_held: usize,
}

/// A bulk transfer at mtu 1400 (AES: 20-byte crypto header, so KCP
/// datagrams up to 1372 bytes, most of them full) through `d`/`p` FEC,
/// losing one packet in `one_in`.
fn transfer(d: usize, p: usize, packets: usize, one_in: u64) -> Run {
    let mut enc = charged(ENC, || FecEncoder::new(d, p).unwrap());
    let mut dec = charged(DEC, || FecDecoder::new(d, p).unwrap());
    let mut pkt = vec![0u8; 1500];
    let mut par = vec![0u8; 1500];
    let mut recovered = 0usize;
    let mut most_held = 0usize;
    let mut sent = 0usize;
    for k in 0..packets {
        // Mostly full segments, some ACK-sized and mid-sized ones.
        let kcp_len = match k % 8 {
            0 => 24,
            1 => 24 + (k * 97) % 1348,
            _ => 1372,
        };
        for (i, b) in pkt[8..8 + kcp_len].iter_mut().enumerate() {
            *b = (i ^ k) as u8;
        }
        let ready = charged(ENC, || enc.encode(&mut pkt, kcp_len, k as u32).unwrap());
        let mut sink = |_: &[u8], kind| {
            if kind == PacketKind::Recovered {
                recovered += 1;
            }
        };
        sent += 1;
        if !lost(sent, one_in) {
            charged(DEC, || dec.decode(&pkt[..8 + kcp_len], &mut sink).unwrap());
        }
        for i in 0..ready {
            let n = charged(ENC, || enc.take_parity(i, &mut par).unwrap());
            sent += 1;
            if !lost(sent, one_in) {
                charged(DEC, || dec.decode(&par[..n], &mut sink).unwrap());
            }
        }
        most_held = most_held.max(dec.memory().held_shards);
    }
    Run {
        enc,
        dec,
        recovered,
        most_held,
    }
}

/// Slot size for shards of a mtu-1400 session: 2 + 1372 bytes rounded up
/// to 64.
const STRIDE_1400: isize = 1408;

/// One active 10/3 session at mtu 1400 after a bulk transfer of 20,000
/// datagrams losing one packet in 20, which exercises recovery.
///
/// Before issue 14 this was 24,358 bytes of encoder (a copy of every data
/// shard of the group plus parity, 1536 bytes each, and an unused
/// decode-matrix cache) and 97,032 bytes of decoder (an arena reserved for
/// 5 x 10 shards of 1536 bytes, a recovery buffer, a 16-byte-a-sample
/// auto-tune ring with its own sort buffer): 121 KB, 1.2 GB for 10,000
/// sessions.
///
/// The bounds, for this layout:
/// * encoder: its 3 parity accumulators at the stride of the longest shard
///   (3 x 1408 bytes) plus 512 bytes for the coefficient tables and
///   offsets; data shards are not kept;
/// * decoder: its arena is exactly as many 1408-byte chunks as shards were
///   held at once (`most_held`, plus the packet that completes a set), plus
///   8 KB of fixed tables (auto-tune ring 2 KB, set tables and scratch
///   about 1 KB, decode-matrix cache at most 64 x 30 bytes of rows and
///   0.6 KB of keys and index, inversion scratch);
/// * together under 40,000 bytes, so 10,000 such sessions need under
///   0.4 GB of FEC state (45,530 bytes before consumed sets stopped storing
///   their stragglers).
///
/// Shards held: a set being filled (up to 9) and sets that lost more than 3
/// shards, kept until they fall 3 groups behind (kcp-go's rule, §4.3).
/// Parity arriving after its set was consumed (3 for each of the 3 older
/// live sets) is counted and not stored (`docs/wire.md` §4.3; kcp-go stores
/// it).
#[test]
fn active_session_memory() {
    // Per-thread scratch shared by all sessions on a thread (rebuilt shards,
    // the auto-tune sort buffer) is not part of a session: let a first
    // session create it, uncharged.
    drop(transfer(10, 3, 2_000, 7));
    HELD.with(|h| h.iter().for_each(|c| c.set(0)));
    for one_in in [20, 7, 100, u64::MAX] {
        let before = (held(ENC), held(DEC));
        let run = transfer(10, 3, 20_000, one_in);
        let enc = held(ENC) - before.0;
        let dec = held(DEC) - before.1;
        let loss = match one_in {
            u64::MAX => "no loss".to_string(),
            n => format!("loss 1/{n}"),
        };
        println!(
            "10/3, mtu 1400, {loss}: encoder {enc} B, decoder {dec} B, \
             {} recovered, at most {} shards held",
            run.recovered, run.most_held,
        );
        assert_eq!(run.enc.data_shards(), 10);
        assert!(enc <= 3 * STRIDE_1400 + 512, "encoder holds {enc} B");
        let arena = (run.most_held as isize + 1) * STRIDE_1400;
        assert!(run.dec.memory().buffer_bytes as isize <= arena);
        assert!(
            dec <= arena + 8 * 1024,
            "decoder holds {dec} B, {} shards at most",
            run.most_held
        );
        if one_in == 20 {
            assert!(run.recovered > 500, "recovery not exercised");
            assert!(enc + dec < 40_000, "session holds {} B", enc + dec);
        }
        drop(run);
    }
}
