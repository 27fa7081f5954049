//! A seeded lossy UDP relay on loopback: clients send to `Relay::addr()`, the
//! relay forwards to the upstream address from a separate socket per client
//! (so the server still sees one address per client) and forwards replies
//! back. Each direction drops, duplicates and reorders datagrams with the
//! given probabilities, reproducibly from the seed.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Impairments applied independently to each direction.
#[derive(Clone, Copy, Debug, Default)]
pub struct Impairment {
    /// Seed of the per-direction random generators.
    pub seed: u64,
    /// Probability that a datagram is dropped.
    pub loss: f64,
    /// Probability that a datagram is sent twice.
    pub duplicate: f64,
    /// Probability that a datagram is held back and sent after the next one.
    pub reorder: f64,
}

impl Impairment {
    /// Drop `loss` of all datagrams, nothing else.
    pub fn loss(seed: u64, loss: f64) -> Impairment {
        Impairment {
            seed,
            loss,
            ..Impairment::default()
        }
    }
}

/// Counters of what the relay did, both directions summed.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Datagrams received by the relay.
    pub received: AtomicU64,
    /// Datagrams forwarded (duplicates counted once more each).
    pub forwarded: AtomicU64,
    /// Datagrams dropped.
    pub dropped: AtomicU64,
    /// Extra copies sent.
    pub duplicated: AtomicU64,
    /// Datagrams held back behind a later one.
    pub reordered: AtomicU64,
    /// Longest UDP payload received from a client (client → server), as the
    /// relay's own socket saw it.
    pub max_up: AtomicU64,
    /// Longest UDP payload received from the upstream server (server → client).
    pub max_down: AtomicU64,
}

/// A running relay; dropping it stops every task.
pub struct Relay {
    addr: SocketAddr,
    stats: Arc<RelayStats>,
    tasks: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    /// Starts a relay on 127.0.0.1 (ephemeral port) towards `upstream`.
    pub async fn start(upstream: SocketAddr, imp: Impairment) -> Relay {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind relay"));
        set_buffers(&front);
        let addr = front.local_addr().expect("relay addr");
        let stats = Arc::new(RelayStats::default());
        let tasks = Arc::new(std::sync::Mutex::new(Vec::new()));
        let t = tokio::spawn(front_loop(
            front,
            upstream,
            imp,
            stats.clone(),
            tasks.clone(),
        ));
        tasks.lock().unwrap().push(t);
        Relay { addr, stats, tasks }
    }

    /// The address clients should send to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the relay did so far.
    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.lock() {
            for t in tasks.iter() {
                t.abort();
            }
        }
    }
}

fn connected_to(peer: SocketAddr) -> Option<UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(peer),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .ok()?;
    s.connect(&peer.into()).ok()?;
    s.set_nonblocking(true).ok()?;
    UdpSocket::from_std(s.into()).ok()
}

fn set_buffers(s: &UdpSocket) {
    let r = socket2::SockRef::from(s);
    let _ = r.set_recv_buffer_size(4 << 20);
    let _ = r.set_send_buffer_size(4 << 20);
}

/// One direction's impairment state.
struct Lane {
    rng: SmallRng,
    imp: Impairment,
    held: Option<Vec<u8>>,
    stats: Arc<RelayStats>,
}

impl Lane {
    fn new(imp: Impairment, salt: u64, stats: Arc<RelayStats>) -> Lane {
        Lane {
            rng: SmallRng::seed_from_u64(imp.seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            imp,
            held: None,
            stats,
        }
    }

    /// Decides what to send for one received datagram: returns the datagrams
    /// to send now, in order.
    fn process(&mut self, d: &[u8], out: &mut Vec<Vec<u8>>) {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        if self.rng.gen_bool(self.imp.loss.clamp(0.0, 1.0)) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let copies = if self.rng.gen_bool(self.imp.duplicate.clamp(0.0, 1.0)) {
            self.stats.duplicated.fetch_add(1, Ordering::Relaxed);
            2
        } else {
            1
        };
        if self.held.is_none() && self.rng.gen_bool(self.imp.reorder.clamp(0.0, 1.0)) {
            self.stats.reordered.fetch_add(1, Ordering::Relaxed);
            self.held = Some(d.to_vec());
            return;
        }
        for _ in 0..copies {
            out.push(d.to_vec());
        }
        if let Some(h) = self.held.take() {
            out.push(h);
        }
    }

    fn release(&mut self, out: &mut Vec<Vec<u8>>) {
        if let Some(h) = self.held.take() {
            out.push(h);
        }
    }
}

/// How long a held datagram waits for a successor before it is sent anyway.
const HOLD: Duration = Duration::from_millis(3);

async fn front_loop(
    front: Arc<UdpSocket>,
    upstream: SocketAddr,
    imp: Impairment,
    stats: Arc<RelayStats>,
    tasks: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
) {
    let mut clients: HashMap<SocketAddr, (Arc<UdpSocket>, Lane)> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::new();
    let mut n_clients = 0u64;
    loop {
        let held_any = clients.values().any(|(_, l)| l.held.is_some());
        let r = if held_any {
            tokio::time::timeout(HOLD, front.recv_from(&mut buf))
                .await
                .ok()
        } else {
            Some(front.recv_from(&mut buf).await)
        };
        let Some(r) = r else {
            for (up, lane) in clients.values_mut() {
                lane.release(&mut out);
                for d in out.drain(..) {
                    let _ = up.send_to(&d, upstream).await;
                    stats.forwarded.fetch_add(1, Ordering::Relaxed);
                }
            }
            continue;
        };
        let Ok((n, from)) = r else { continue };
        stats.max_up.fetch_max(n as u64, Ordering::Relaxed);
        #[allow(clippy::map_entry)] // the insert needs an await first
        if !clients.contains_key(&from) {
            // Connected from the moment it has a port, like interop/relay's
            // DialUDP (connect on an unbound socket binds and connects in one
            // step): the kernel then only delivers the upstream's datagrams.
            // An unconnected socket, or one bound first and connected later,
            // also gets what other processes still send to this reused
            // ephemeral port (dead peers' sessions retransmitting); forwarding
            // that makes the client count "corrupt" datagrams the server never
            // sent (issue 12, item 1).
            let Some(up) = connected_to(upstream) else {
                continue;
            };
            set_buffers(&up);
            let up = Arc::new(up);
            n_clients += 1;
            let back = Lane::new(imp, n_clients * 2 + 1, stats.clone());
            let t = tokio::spawn(back_loop(up.clone(), front.clone(), from, back));
            tasks.lock().unwrap().push(t);
            clients.insert(from, (up, Lane::new(imp, n_clients * 2, stats.clone())));
        }
        let Some((up, lane)) = clients.get_mut(&from) else {
            continue;
        };
        lane.process(&buf[..n], &mut out);
        for d in out.drain(..) {
            let _ = up.send_to(&d, upstream).await;
            stats.forwarded.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn back_loop(up: Arc<UdpSocket>, front: Arc<UdpSocket>, client: SocketAddr, mut lane: Lane) {
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::new();
    loop {
        let r = if lane.held.is_some() {
            tokio::time::timeout(HOLD, up.recv_from(&mut buf))
                .await
                .ok()
        } else {
            Some(up.recv_from(&mut buf).await)
        };
        match r {
            None => lane.release(&mut out),
            Some(Ok((n, _))) => {
                lane.stats.max_down.fetch_max(n as u64, Ordering::Relaxed);
                lane.process(&buf[..n], &mut out)
            }
            Some(Err(_)) => continue,
        }
        for d in out.drain(..) {
            let _ = front.send_to(&d, client).await;
            lane.stats.forwarded.fetch_add(1, Ordering::Relaxed);
        }
    }
}
