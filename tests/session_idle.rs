//! Scaling properties: an idle session arms no timer (its driver is never
//! woken), and the steady-state packet path does not allocate.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kcp_session::{Config, Listener, Mode, Session, StreamMode};
use support::bounded;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

const LIMIT: Duration = Duration::from_secs(30);

fn config() -> Config {
    Config::builder()
        .crypt_kcptun("aes", "idle")
        .fec(10, 3)
        .mode(Mode::Fast)
        .window(256, 256)
        .stream_mode(StreamMode::Stream)
        .socket_buffers(4 << 20)
        // No idle timeout (kcp-go's rule): the hour of idling below must not
        // end the sessions; the default timeout's expiry is tested in
        // tests/server_defaults.rs.
        .idle_timeout(None)
        .build()
        .unwrap()
}

/// One client and one accepted session, connected.
async fn pair(cfg: &Config) -> (Listener, Session, Session) {
    let listener = Listener::listen("127.0.0.1:0", cfg).await.unwrap();
    let mut client = Session::dial(listener.local_addr(), cfg).await.unwrap();
    client.write_all(b"hello").await.unwrap();
    let mut server = bounded(LIMIT, "accept", listener.accept()).await.unwrap();
    let mut b = [0u8; 5];
    server.read_exact(&mut b).await.unwrap();
    (listener, client, server)
}

/// Moves `n` bytes client -> server -> client in 64 KiB chunks.
async fn ping_pong(client: &mut Session, server: &mut Session, n: usize) {
    let data = vec![0x5a; 65536];
    let mut buf = vec![0u8; 65536];
    let mut moved = 0;
    while moved < n {
        client.write_all(&data).await.unwrap();
        server.read_exact(&mut buf).await.unwrap();
        server.write_all(&buf).await.unwrap();
        client.read_exact(&mut buf).await.unwrap();
        moved += data.len();
    }
}

#[tokio::test(flavor = "current_thread")]
async fn idle_sessions_are_never_woken() {
    let cfg = config();
    let (_listener, mut client, mut server) = pair(&cfg).await;
    bounded(
        LIMIT,
        "traffic",
        ping_pong(&mut client, &mut server, 1 << 20),
    )
    .await;
    // Freeze the clock: from now on time only moves when every task is idle
    // and jumps straight to the next armed timer. A session with a periodic
    // timer (kcp-go's update every interval) would be woken ~120,000 times
    // in the hour below; an idle one must not be woken at all once the last
    // ACKs are out.
    tokio::time::pause();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (c0, s0) = (client.driver_wakeups(), server.driver_wakeups());
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let (c1, s1) = (client.driver_wakeups(), server.driver_wakeups());
    eprintln!("wakeups before {c0}/{s0} after {c1}/{s1}");
    assert_eq!((c1 - c0, s1 - s0), (0, 0), "idle drivers were woken");
    assert_eq!(client.wait_snd(), 0);
    // And the session still works after the long sleep.
    tokio::time::resume();
    bounded(
        LIMIT,
        "after idle",
        ping_pong(&mut client, &mut server, 65536),
    )
    .await;
    assert!(client.driver_wakeups() > c1);
}

#[tokio::test(flavor = "current_thread")]
async fn steady_state_transfer_does_not_allocate_per_packet() {
    let cfg = config();
    let (_listener, mut client, mut server) = pair(&cfg).await;
    // Warm up pools, queues and buffers.
    bounded(
        LIMIT,
        "warm-up",
        ping_pong(&mut client, &mut server, 4 << 20),
    )
    .await;
    let pkts0 = client.stats().out_pkts + server.stats().out_pkts;
    let a0 = ALLOCS.load(Ordering::Relaxed);
    bounded(
        LIMIT,
        "measured",
        ping_pong(&mut client, &mut server, 8 << 20),
    )
    .await;
    let allocs = ALLOCS.load(Ordering::Relaxed) - a0;
    let pkts = client.stats().out_pkts + server.stats().out_pkts - pkts0;
    eprintln!("{allocs} allocations for {pkts} datagrams");
    assert!(pkts > 10_000, "only {pkts} datagrams");
    // Allow a handful of one-off allocations (a grown queue, a tokio
    // internal), never one per datagram.
    assert!(
        allocs * 100 < pkts as usize,
        "{allocs} allocations for {pkts} datagrams"
    );
}
