//! Ten thousand sessions on one listener: all served, and once idle none of
//! them is ever woken (no per-session busy timers).

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kcp_session::{Config, Listener, Session};
use support::{bounded, wait_until};
use tokio::io::AsyncReadExt;
use tokio::net::UdpSocket;

const N: usize = 10_000;

/// Live heap bytes, to bound the cost of an idle session.
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A raw KCP PUSH segment.
fn push(conv: u32, sn: u32, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(24 + data.len());
    v.extend_from_slice(&conv.to_le_bytes());
    v.extend_from_slice(&[81, 0]);
    v.extend_from_slice(&128u16.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&sn.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(data);
    v
}

#[tokio::test(flavor = "current_thread")]
async fn ten_thousand_sessions_then_idle_costs_nothing() {
    // kcp-go's lifetime rules (no cap, no idle timeout): what is measured
    // here is the cost of sessions that stay idle forever. The defaults
    // reclaim them instead (tests/server_defaults.rs).
    let cfg = Config::builder()
        .crypt_kcptun("null", "")
        .socket_buffers(8 << 20)
        .max_sessions(None)
        .idle_timeout(None)
        .build()
        .unwrap();
    let listener = Arc::new(Listener::listen("127.0.0.1:0", &cfg).await.unwrap());
    let addr = listener.local_addr();
    let accepted: Arc<Mutex<Vec<Session>>> = Arc::default();
    let (l, acc) = (listener.clone(), accepted.clone());
    let acceptor = tokio::spawn(async move {
        while let Ok(s) = l.accept().await {
            acc.lock().unwrap().push(s);
        }
    });
    let live0 = LIVE.load(Ordering::Relaxed);
    // Clients are plain UDP sockets speaking raw KCP: cheap enough to have
    // ten thousand in one test process.
    let mut clients = Vec::with_capacity(N);
    bounded(Duration::from_secs(120), "open sessions", async {
        for batch in 0..N / 100 {
            for i in batch * 100..(batch + 1) * 100 {
                // Spread clients over 127.1.x.y so ten thousand sockets do
                // not drain 127.0.0.1's ephemeral ports (other tests run too).
                let ip = std::net::Ipv4Addr::new(127, 1, (i / 200) as u8, (i % 200 + 1) as u8);
                let s = UdpSocket::bind((ip, 0)).await.unwrap();
                s.send_to(&push(i as u32 + 1, 0, &(i as u32).to_le_bytes()), addr)
                    .await
                    .unwrap();
                clients.push(s);
            }
            // Stay within the accept backlog (128).
            let want = (batch + 1) * 100;
            assert!(
                wait_until(Duration::from_secs(10), || accepted.lock().unwrap().len()
                    == want)
                .await,
                "stuck at {} sessions",
                accepted.lock().unwrap().len()
            );
        }
    })
    .await;
    assert_eq!(listener.session_count(), N);
    // Every session got its own client's bytes.
    let mut sessions = std::mem::take(&mut *accepted.lock().unwrap());
    for s in sessions.iter_mut() {
        let mut b = [0u8; 4];
        bounded(Duration::from_secs(10), "read", s.read_exact(&mut b))
            .await
            .unwrap();
        assert_eq!(u32::from_le_bytes(b) + 1, s.conv());
        assert_eq!(
            s.peer_addr(),
            clients[u32::from_le_bytes(b) as usize]
                .local_addr()
                .unwrap()
        );
    }
    // Let the last ACKs go out, then freeze the clock and sleep an hour.
    tokio::time::pause();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let before: u64 = sessions.iter().map(Session::driver_wakeups).sum();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let after: u64 = sessions.iter().map(Session::driver_wakeups).sum();
    assert_eq!(
        after,
        before,
        "idle sessions were woken {} times",
        after - before
    );
    // Heap per idle session, client sockets included.
    let per = (LIVE.load(Ordering::Relaxed) - live0) / N as isize;
    eprintln!("{per} heap bytes per idle session (client socket included)");
    assert!(per < 16 * 1024, "{per} bytes per idle session");
    tokio::time::resume();
    // Closing them empties the table.
    drop(sessions);
    assert!(wait_until(Duration::from_secs(30), || listener.session_count() == 0).await);
    acceptor.abort();
}
