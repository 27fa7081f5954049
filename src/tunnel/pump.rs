//! Joining a local connection and an smux stream, kcptun's `std.Pipe`, and
//! the per-stream wrapping hook (kcptun's QPP port).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::config::{CommonPlan, QppSetting};
use super::qpp::{QppPad, QppState, QppStream};
use super::TunnelError;
use crate::smux;

/// Copy buffer per direction per stream.
const COPY_BUF: usize = 32 * 1024;

/// A bidirectional byte stream the pump can join.
pub trait Duplex: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Duplex for T {}

/// Counters a running tunnel keeps; read them with [`snapshot`](Self::snapshot).
#[derive(Debug, Default)]
pub struct Counters {
    pub(crate) sessions_opened: AtomicU64,
    pub(crate) sessions_expired: AtomicU64,
    pub(crate) sessions_scavenged: AtomicU64,
    pub(crate) streams_opened: AtomicU64,
    pub(crate) streams_closed: AtomicU64,
    pub(crate) bytes_to_remote: AtomicU64,
    pub(crate) bytes_from_remote: AtomicU64,
    pub(crate) ports: std::sync::Mutex<std::collections::BTreeMap<u16, u64>>,
}

/// A copy of a tunnel's [`Counters`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// KCP sessions (smux sessions) dialled (client) or accepted (server).
    pub sessions_opened: u64,
    /// Client sessions retired by `--autoexpire`.
    pub sessions_expired: u64,
    /// Expired client sessions closed by the scavenger (`--scavengettl`).
    pub sessions_scavenged: u64,
    /// Streams joined to a local connection or target.
    pub streams_opened: u64,
    /// Streams whose pump has finished.
    pub streams_closed: u64,
    /// Payload bytes carried from the local side into the tunnel (client)
    /// or from the tunnel to the target (server).
    pub bytes_to_remote: u64,
    /// Payload bytes carried the other way.
    pub bytes_from_remote: u64,
    /// Sessions per UDP port: the server port dialled (client) or the
    /// listening port they arrived on (server), ascending.
    pub sessions_per_port: Vec<(u16, u64)>,
}

impl Counters {
    /// The current values.
    pub fn snapshot(&self) -> Stats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            sessions_opened: g(&self.sessions_opened),
            sessions_expired: g(&self.sessions_expired),
            sessions_scavenged: g(&self.sessions_scavenged),
            streams_opened: g(&self.streams_opened),
            streams_closed: g(&self.streams_closed),
            bytes_to_remote: g(&self.bytes_to_remote),
            bytes_from_remote: g(&self.bytes_from_remote),
            sessions_per_port: self
                .ports
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(p, n)| (*p, *n))
                .collect(),
        }
    }

    pub(crate) fn session_on(&self, port: u16) {
        Self::add(&self.sessions_opened, 1);
        *self
            .ports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(port)
            .or_insert(0) += 1;
    }

    pub(crate) fn add(a: &AtomicU64, n: u64) {
        a.fetch_add(n, Ordering::Relaxed);
    }
}

/// What is put around every smux stream before it is joined: nothing, or
/// (kcptun's `--QPP`) the Quantum Permutation Pad keyed by `--key`.
///
/// The pad set is built once at startup (it costs a few thousand PBKDF2 and
/// AES rounds) and shared; every stream starts both directions from the same
/// state, as kcptun's `QPPPort` does. Both roles wrap the smux side.
#[derive(Debug, Clone)]
pub enum StreamWrap {
    /// Streams are joined as they are.
    Plain,
    /// Every stream goes through QPP.
    Qpp {
        /// The shared pads (`--QPPCount` of them).
        pad: Arc<QppPad>,
        /// Each stream's starting state in both directions.
        start: QppState,
    },
}

impl StreamWrap {
    /// The wrap `plan` asks for.
    pub fn new(plan: &CommonPlan) -> Result<StreamWrap, TunnelError> {
        match plan.qpp {
            None => Ok(StreamWrap::Plain),
            Some(QppSetting { count }) => {
                let seed = plan.key.as_bytes();
                let pad =
                    QppPad::new(seed, u64::from(count)).map_err(|e| TunnelError::InvalidFlag {
                        flag: "QPPCount",
                        reason: e.to_string(),
                    })?;
                Ok(StreamWrap::Qpp {
                    pad: Arc::new(pad),
                    start: QppState::new(seed),
                })
            }
        }
    }

    /// Wraps one smux stream.
    pub fn wrap_stream(&self, stream: smux::Stream) -> Box<dyn Duplex> {
        match self {
            StreamWrap::Plain => Box::new(stream),
            StreamWrap::Qpp { pad, start } => Box::new(QppStream::with_state(
                stream,
                Arc::clone(pad),
                start.clone(),
            )),
        }
    }
}

/// Copies `r` to `w` until EOF or an error, counting into `count`.
///
/// As `tokio::io::copy`, `w` is flushed whenever `r` has nothing to give:
/// a writer that buffers (QPP's encrypted chunk, smux's frame queue) then
/// never holds bytes back while the other end waits for them.
async fn copy<R, W>(mut r: R, mut w: W, count: &AtomicU64) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; COPY_BUF];
    let mut unflushed = false;
    loop {
        let n = std::future::poll_fn(|cx| {
            let mut rb = ReadBuf::new(&mut buf);
            match Pin::new(&mut r).poll_read(cx, &mut rb) {
                Poll::Ready(res) => Poll::Ready(res.map(|()| rb.filled().len())),
                Poll::Pending => {
                    if unflushed {
                        match Pin::new(&mut w).poll_flush(cx) {
                            Poll::Ready(Ok(())) => unflushed = false,
                            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                            Poll::Pending => {}
                        }
                    }
                    Poll::Pending
                }
            }
        })
        .await?;
        if n == 0 {
            let _ = w.flush().await;
            return Ok(());
        }
        w.write_all(&buf[..n]).await?;
        unflushed = true;
        Counters::add(count, n as u64);
    }
}

/// Joins `local` and `tunnel` (kcptun's `std.Pipe`). When one direction
/// ends, the other may go on for `close_wait` (kcptun's `--closewait`), then
/// both are closed: a Go smux FIN is a full close, so there is no half-open
/// state to keep beyond that.
pub(crate) async fn pipe(
    local: Box<dyn Duplex>,
    tunnel: Box<dyn Duplex>,
    close_wait: Duration,
    counters: &Counters,
    local_is_source: bool,
) {
    let (lr, lw) = tokio::io::split(local);
    let (tr, tw) = tokio::io::split(tunnel);
    let (up, down) = if local_is_source {
        (&counters.bytes_to_remote, &counters.bytes_from_remote)
    } else {
        (&counters.bytes_from_remote, &counters.bytes_to_remote)
    };
    let a = copy(lr, tw, up);
    let b = copy(tr, lw, down);
    tokio::pin!(a, b);
    tokio::select! {
        _ = &mut a => { let _ = tokio::time::timeout(close_wait, &mut b).await; }
        _ = &mut b => { let _ = tokio::time::timeout(close_wait, &mut a).await; }
    }
}

/// Shared state of a running tunnel's streams.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub counters: Arc<Counters>,
    pub wrap: StreamWrap,
    pub close_wait: Duration,
    pub quiet: bool,
    pub log: super::log::Log,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn closewait_lets_the_other_direction_finish() {
        // local: we write "ping" then close our write side at once; the
        // tunnel side answers after 200 ms. With close_wait 0 the answer is
        // lost, with 2 s it arrives.
        for (wait, want) in [
            (Duration::ZERO, &b""[..]),
            (Duration::from_secs(2), &b"pong"[..]),
        ] {
            let (local, mut local_peer) = tokio::io::duplex(1024);
            let (tunnel, mut tunnel_peer) = tokio::io::duplex(1024);
            let counters = Arc::new(Counters::default());
            let c2 = counters.clone();
            let task = tokio::spawn(async move {
                pipe(Box::new(local), Box::new(tunnel), wait, &c2, true).await
            });
            local_peer.write_all(b"ping").await.expect("write");
            let mut got = [0u8; 4];
            tunnel_peer.read_exact(&mut got).await.expect("read");
            assert_eq!(&got, b"ping");
            // End the local->tunnel direction.
            local_peer.shutdown().await.expect("shutdown");
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = tunnel_peer.write_all(b"pong").await;
            let mut back = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), local_peer.read_to_end(&mut back))
                .await;
            assert_eq!(back, want, "close_wait {wait:?}");
            drop(tunnel_peer);
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("pipe ends")
                .expect("join");
            assert_eq!(counters.snapshot().bytes_to_remote, 4);
        }
    }
}
