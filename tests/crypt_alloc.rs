//! Sealing and opening must not allocate per datagram (hot path rule).
//!
//! A counting global allocator counts allocations made by *this* thread
//! while armed, so the test harness's own threads cannot disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use kcp_session::crypt::{Backend, CipherKind, Crypt};

struct Counting;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // `try_with` keeps the allocator usable during thread teardown.
        let _ = ARMED.try_with(|armed| {
            if armed.get() {
                let _ = COUNT.try_with(|c| c.set(c.get() + 1));
            }
        });
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ARMED.try_with(|armed| {
            if armed.get() {
                let _ = COUNT.try_with(|c| c.set(c.get() + 1));
            }
        });
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> u64 {
    COUNT.with(|c| c.set(0));
    ARMED.with(|a| a.set(true));
    f();
    ARMED.with(|a| a.set(false));
    COUNT.with(|c| c.get())
}

#[test]
fn seal_and_open_do_not_allocate() {
    // Prove the counter works at all, so a zero below means something.
    let probe = allocations_during(|| {
        let v: Vec<u8> = std::hint::black_box(Vec::with_capacity(16));
        drop(v);
    });
    assert_eq!(probe, 1, "the counting allocator must see a Vec allocation");

    let cases = CipherKind::ALL
        .iter()
        .flat_map(|k| [Backend::Fastest, Backend::Sse, Backend::Portable].map(|b| (*k, b)));
    for (kind, backend) in cases {
        let key = Crypt::kcptun_key("alloc test");
        let mut crypt =
            Crypt::with_backend(kind, &key[..kind.kcptun_key_len()], backend).expect("valid key");
        let opener = crypt.clone();
        let mut buf = [0u8; 1500];
        let payload_len = 1400 - crypt.overhead();
        let round = |crypt: &mut Crypt, buf: &mut [u8; 1500], i: usize| {
            let h = crypt.header_len();
            for (j, b) in buf[h..h + payload_len].iter_mut().enumerate() {
                *b = (i + j) as u8;
            }
            let n = crypt.seal(buf, payload_len).expect("seal");
            let range = opener.open(&mut buf[..n]).expect("open");
            assert_eq!(range.len(), payload_len);
        };
        // Warm-up: the first seal seeds the nonce generator from the OS.
        round(&mut crypt, &mut buf, 0);
        let count = allocations_during(|| {
            for i in 0..1000 {
                round(&mut crypt, &mut buf, i);
            }
        });
        assert_eq!(
            count, 0,
            "{kind} {backend:?}: {count} allocations in 1000 seal+open"
        );
    }
}
