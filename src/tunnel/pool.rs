//! The client's pool of smux sessions: `--conn` slots picked round-robin,
//! `--autoexpire` replacing a slot's session, the scavenger closing expired
//! sessions `--scavengettl` seconds after they expired (kcptun's client
//! `main.go`), and `--remoteaddr` port ranges.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex};
use tokio::time::Instant;

use super::config::ClientPlan;
use super::pump::{Counters, Shared};
use crate::comp::CompStream;
use crate::session::Session;
use crate::smux;

/// kcptun's scavenger period.
const SCAVENGE_PERIOD: Duration = Duration::from_secs(5);
/// kcptun's scavenger channel capacity.
const SCAVENGE_QUEUE: usize = 128;
/// kcptun's pause between failed dials.
const REDIAL_PAUSE: Duration = Duration::from_secs(1);

struct Slot {
    session: Option<Arc<smux::Session>>,
    expires: Instant,
}

/// A session the scavenger watches, with the time it is closed at.
pub(crate) struct Timed {
    session: Arc<smux::Session>,
    deadline: Instant,
}

pub(crate) struct Pool {
    slots: Vec<Mutex<Slot>>,
    rr: AtomicUsize,
    plan: Arc<ClientPlan>,
    shared: Shared,
    scavenger: mpsc::Sender<Timed>,
}

impl Pool {
    /// The pool and the receiving end its scavenger task reads.
    pub(crate) fn new(plan: Arc<ClientPlan>, shared: Shared) -> (Arc<Pool>, mpsc::Receiver<Timed>) {
        let (tx, rx) = mpsc::channel(SCAVENGE_QUEUE);
        let now = Instant::now();
        let pool = Pool {
            slots: (0..plan.conn)
                .map(|_| {
                    Mutex::new(Slot {
                        session: None,
                        expires: now,
                    })
                })
                .collect(),
            rr: AtomicUsize::new(0),
            plan,
            shared,
            scavenger: tx,
        };
        (Arc::new(pool), rx)
    }

    /// The session the next local connection goes to: the next slot in
    /// round-robin order, (re)dialled if empty, closed or expired.
    pub(crate) async fn next(&self) -> Arc<smux::Session> {
        let idx = self.rr.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[idx].lock().await;
        let now = Instant::now();
        let expired = self.plan.autoexpire.is_some() && now >= slot.expires;
        match &slot.session {
            Some(s) if !s.is_closed() && !expired => return s.clone(),
            Some(s) if !s.is_closed() => {
                Counters::add(&self.shared.counters.sessions_expired, 1);
                self.shared
                    .log
                    .line("session expired, replaced by a new one");
            }
            _ => {}
        }
        let s = self.wait_conn().await;
        slot.session = Some(s.clone());
        if let Some(ttl) = self.plan.autoexpire {
            slot.expires = Instant::now() + ttl;
            let t = Timed {
                session: s.clone(),
                deadline: slot.expires + self.plan.scavenge_ttl,
            };
            // kcptun blocks here when the scavenger lags; so do we (bounded queue).
            let _ = self.scavenger.send(t).await;
        }
        s
    }

    /// Dials until a session is up, pausing between failures (kcptun's `waitConn`).
    async fn wait_conn(&self) -> Arc<smux::Session> {
        loop {
            match self.dial().await {
                Ok(s) => return s,
                Err(e) => {
                    self.shared.log.line(&format!("re-connecting: {e}"));
                    tokio::time::sleep(REDIAL_PAUSE).await;
                }
            }
        }
    }

    async fn dial(&self) -> Result<Arc<smux::Session>, String> {
        let port = self.plan.remote.port_for(rand::random::<u64>());
        let addr = match self.plan.remote.host.as_str() {
            "" => format!("127.0.0.1:{port}"),
            h => format!("{h}:{port}"),
        };
        let sess = Session::dial(addr.as_str(), &self.plan.common.kcp)
            .await
            .map_err(|e| format!("dial {addr}: {e}"))?;
        self.shared.log.line(&format!(
            "smux version: {} on connection: {} -> {}",
            self.plan.common.smux.version.byte(),
            sess.local_addr(),
            sess.peer_addr()
        ));
        let sm = self.plan.common.smux;
        let mux = if self.plan.common.compression {
            smux::Session::client(CompStream::new(sess), sm)
        } else {
            smux::Session::client(sess, sm)
        }
        .map_err(|e| e.to_string())?;
        self.shared.counters.session_on(port);
        Ok(Arc::new(mux))
    }
}

/// Closes what is past its deadline and forgets what closed by itself;
/// returns how many it closed.
async fn scavenge(list: &mut Vec<Timed>, now: Instant) -> u64 {
    let mut closed = 0;
    let mut keep = Vec::with_capacity(list.len());
    for t in list.drain(..) {
        if t.session.is_closed() {
            continue;
        }
        if now >= t.deadline {
            t.session.close().await;
            closed += 1;
        } else {
            keep.push(t);
        }
    }
    *list = keep;
    closed
}

/// kcptun's scavenger: every 5 s, closes expired sessions whose TTL is up.
pub(crate) async fn scavenger(mut rx: mpsc::Receiver<Timed>, shared: Shared) {
    let mut list = Vec::new();
    let mut tick = tokio::time::interval(SCAVENGE_PERIOD);
    loop {
        tokio::select! {
            t = rx.recv() => match t {
                Some(t) => list.push(t),
                None => return,
            },
            _ = tick.tick() => {
                let n = scavenge(&mut list, Instant::now()).await;
                if n > 0 {
                    Counters::add(&shared.counters.sessions_scavenged, n);
                    shared.log.line(&format!("{n} session(s) closed due to ttl"));
                }
            }
        }
    }
}
