//! The smux session: shared state, the reader/writer/keepalive tasks and the
//! public [`Session`] handle.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::Notify;
use tokio::task::{AbortHandle, JoinHandle};

use super::frame::{
    FrameHeader, CMD_FIN, CMD_NOP, CMD_PSH, CMD_SYN, CMD_UPD, HEADER_SIZE, INITIAL_PEER_WINDOW,
    MAX_FRAME_SIZE, UPD_SIZE,
};
use super::stream::Stream;
use super::{Config, KeepAlive, Role, Version};
use crate::error::{Error, Result};

/// smux's `defaultAcceptBacklog`: streams opened by the peer and not yet
/// accepted. When full, the reader stops reading the connection.
pub(crate) const ACCEPT_BACKLOG: usize = 1024;
/// Data frames are queued only while the outgoing queue is below this;
/// control frames (SYN, FIN, UPD, NOP) always go in, so a window update can
/// never be starved by data.
pub(crate) const OUT_QUEUE_LIMIT: usize = 65536;
/// After a local close, how long the writer may go on writing queued frames
/// (FINs, last data) before it is stopped.
pub(crate) const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the session ended. Kept small and `Clone` so every stream can report it.
#[derive(Debug, Clone)]
pub(crate) enum CloseReason {
    /// `Session::close` or the handle was dropped.
    Local,
    /// The peer broke the protocol.
    Protocol(&'static str),
    /// Nothing arrived within the keepalive timeout.
    KeepaliveTimeout,
    /// The underlying connection failed or ended.
    Io(io::ErrorKind, String),
}

impl CloseReason {
    pub(crate) fn to_error(&self) -> Error {
        match self {
            CloseReason::Local => Error::Closed,
            CloseReason::Protocol(m) => Error::SmuxProtocol(m),
            CloseReason::KeepaliveTimeout => Error::SmuxKeepaliveTimeout,
            CloseReason::Io(kind, msg) => Error::Io(io::Error::new(*kind, msg.clone())),
        }
    }
}

/// Per-stream state, owned by the session map.
#[derive(Debug)]
pub(crate) struct StreamState {
    /// Received payload not yet read.
    pub(crate) recv: VecDeque<u8>,
    /// The peer sent FIN: reads drain `recv`, then return EOF.
    pub(crate) fin_received: bool,
    /// We sent FIN (shutdown or drop).
    pub(crate) fin_sent: bool,
    pub(crate) read_waker: Option<Waker>,
    /// Woken by window updates, queue space and writer progress.
    pub(crate) write_waker: Option<Waker>,
    // v2 flow control (§7.6), u32 arithmetic wraps as in smux.
    pub(crate) num_read: u32,
    pub(crate) incr: u32,
    pub(crate) num_written: u32,
    pub(crate) peer_consumed: u32,
    pub(crate) peer_window: u32,
    /// `State::enqueued` after this stream's last frame: flush waits for it.
    pub(crate) last_enqueued: u64,
    /// The application holds this stream (opened here or accepted): its
    /// v2 window is read past the session budget (see `reader_loop`).
    pub(crate) held: bool,
}

impl StreamState {
    fn new() -> StreamState {
        StreamState {
            recv: VecDeque::new(),
            fin_received: false,
            fin_sent: false,
            read_waker: None,
            write_waker: None,
            num_read: 0,
            incr: 0,
            num_written: 0,
            peer_consumed: 0,
            peer_window: INITIAL_PEER_WINDOW,
            last_enqueued: 0,
            held: false,
        }
    }

    fn wake_all(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) config: Config,
    pub(crate) closed: Option<CloseReason>,
    pub(crate) streams: HashMap<u32, StreamState>,
    accept_queue: VecDeque<u32>,
    accept_waker: Option<Waker>,
    /// Receive budget left (smux `bucket`); may go negative by one frame.
    pub(crate) bucket: i64,
    /// Encoded frames waiting for the writer task.
    pub(crate) out: Vec<u8>,
    /// Bytes ever queued in `out` / ever written and flushed by the writer.
    pub(crate) enqueued: u64,
    pub(crate) flushed: u64,
    /// A frame arrived since the last keepalive check.
    data_ready: bool,
    next_id: u32,
    go_away: bool,
    /// Reader and keepalive tasks, aborted when the session ends.
    aborts: Vec<AbortHandle>,
    /// The writer task: aborted at once when the session fails, and
    /// [`CLOSE_LINGER`] after a local close if it is still writing (a dead
    /// peer must not pin the connection forever).
    writer_abort: Option<AbortHandle>,
}

impl State {
    /// Queues a frame; `Stream` checks `OUT_QUEUE_LIMIT` for data frames.
    pub(crate) fn push_frame(&mut self, cmd: u8, sid: u32, payload: &[u8]) {
        debug_assert!(payload.len() <= MAX_FRAME_SIZE);
        let h = FrameHeader {
            version: self.config.version.byte(),
            cmd,
            length: payload.len() as u16,
            sid,
        };
        h.append(payload, &mut self.out);
        self.enqueued += (HEADER_SIZE + payload.len()) as u64;
    }

    /// Returns received bytes to the budget; true if the reader may resume.
    pub(crate) fn return_tokens(&mut self, n: usize) -> bool {
        let was_blocked = self.bucket <= 0;
        self.bucket += n as i64;
        was_blocked && self.bucket > 0
    }

    /// Ends the session once; wakes everyone. Returns the tasks to abort
    /// now and the writer to abort after the linger (do it after releasing
    /// the lock).
    pub(crate) fn close(&mut self, reason: CloseReason) -> (Vec<AbortHandle>, Option<AbortHandle>) {
        if self.closed.is_some() {
            return (Vec::new(), None);
        }
        let mut now = std::mem::take(&mut self.aborts);
        let mut later = None;
        match reason {
            CloseReason::Local => later = self.writer_abort.take(),
            _ => now.extend(self.writer_abort.take()),
        }
        self.closed = Some(reason);
        for s in self.streams.values_mut() {
            s.wake_all();
        }
        if let Some(w) = self.accept_waker.take() {
            w.wake();
        }
        (now, later)
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Frames queued or session closed: the writer task should look.
    pub(crate) writer_notify: Notify,
    /// Budget returned, backlog space or session closed: the reader may go on.
    pub(crate) reader_notify: Notify,
    /// The writer made room in the outgoing queue (for `open_stream`).
    space_notify: Notify,
    writer_task: Mutex<Option<JoinHandle<()>>>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough state for
        // shutdown paths; never propagate poisoning to drop handlers.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the session with `reason` and stops the background tasks.
    pub(crate) fn close(&self, reason: CloseReason) {
        let (now, later) = self.lock().close(reason);
        for a in now {
            a.abort();
        }
        if let (Some(writer), Ok(rt)) = (later, tokio::runtime::Handle::try_current()) {
            if !writer.is_finished() {
                rt.spawn(async move {
                    tokio::time::sleep(CLOSE_LINGER).await;
                    writer.abort();
                });
            }
        }
        self.writer_notify.notify_one();
        self.reader_notify.notify_one();
        self.space_notify.notify_waiters();
    }
}

/// An smux session over one byte stream. Dropping it closes the session
/// (streams then fail with [`Error::Closed`] once their buffered data is read).
#[derive(Debug)]
pub struct Session {
    shared: Arc<Shared>,
    role: Role,
}

impl Session {
    /// Starts a client session (odd stream ids) over `conn`.
    pub fn client<T>(conn: T, config: Config) -> Result<Session>
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        Session::new(conn, config, Role::Client)
    }

    /// Starts a server session (even stream ids) over `conn`.
    pub fn server<T>(conn: T, config: Config) -> Result<Session>
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        Session::new(conn, config, Role::Server)
    }

    /// Starts a session over `conn`, spawning its tasks on the current tokio
    /// runtime. `InvalidConfig` if `config` fails smux's `VerifyConfig`.
    pub fn new<T>(conn: T, config: Config, role: Role) -> Result<Session>
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        config.verify()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                config,
                closed: None,
                streams: HashMap::new(),
                accept_queue: VecDeque::new(),
                accept_waker: None,
                bucket: config.max_receive_buffer as i64,
                out: Vec::new(),
                enqueued: 0,
                flushed: 0,
                data_ready: false,
                // §7.6: +2 before use gives 3, 5, ... and 2, 4, ...
                next_id: match role {
                    Role::Client => 1,
                    Role::Server => 0,
                },
                go_away: false,
                aborts: Vec::new(),
                writer_abort: None,
            }),
            writer_notify: Notify::new(),
            reader_notify: Notify::new(),
            space_notify: Notify::new(),
            writer_task: Mutex::new(None),
        });
        let (r, w) = tokio::io::split(conn);
        let reader = tokio::spawn(reader_loop(shared.clone(), r));
        let writer = tokio::spawn(writer_loop(shared.clone(), w));
        let mut aborts = vec![reader.abort_handle()];
        if let KeepAlive::Enabled { interval, timeout } = config.keep_alive {
            let ka = tokio::spawn(keepalive_loop(shared.clone(), interval, timeout));
            aborts.push(ka.abort_handle());
        }
        let writer_abort = writer.abort_handle();
        *shared.writer_task.lock().unwrap_or_else(|e| e.into_inner()) = Some(writer);
        {
            let mut st = shared.lock();
            if st.closed.is_some() {
                drop(st);
                aborts.iter().for_each(AbortHandle::abort);
                writer_abort.abort();
            } else {
                st.aborts = aborts;
                st.writer_abort = Some(writer_abort);
            }
        }
        Ok(Session { shared, role })
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The protocol version in use.
    pub fn version(&self) -> Version {
        self.shared.lock().config.version
    }

    /// Opens a stream: queues its SYN (waiting only while the outgoing queue
    /// is full) and returns. Stream ids run out after 2^31 opens
    /// ([`Error::SmuxGoAway`]).
    pub async fn open_stream(&self) -> Result<Stream> {
        loop {
            let space = self.shared.space_notify.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            // No guard may live across the await: the future must be Send.
            let full = {
                let st = self.shared.lock();
                if let Some(r) = &st.closed {
                    return Err(r.to_error());
                }
                st.out.len() >= OUT_QUEUE_LIMIT
            };
            if !full {
                break;
            }
            space.await;
        }
        let mut st = self.shared.lock();
        if let Some(r) = &st.closed {
            return Err(r.to_error());
        }
        if st.go_away {
            return Err(Error::SmuxGoAway);
        }
        let sid = st.next_id.wrapping_add(2);
        if sid < 2 {
            // smux's `sid == sid%2` overflow check.
            st.go_away = true;
            return Err(Error::SmuxGoAway);
        }
        st.next_id = sid;
        st.push_frame(CMD_SYN, sid, &[]);
        let mut s = StreamState::new();
        s.last_enqueued = st.enqueued;
        s.held = true;
        st.streams.insert(sid, s);
        drop(st);
        self.shared.writer_notify.notify_one();
        Ok(Stream::new(self.shared.clone(), sid))
    }

    /// Waits for the next stream the peer opens. Fails with the reason the
    /// session ended once it has.
    pub async fn accept_stream(&self) -> Result<Stream> {
        let sid = poll_fn(|cx| {
            let mut st = self.shared.lock();
            if let Some(sid) = st.accept_queue.pop_front() {
                if let Some(s) = st.streams.get_mut(&sid) {
                    s.held = true;
                }
                return Poll::Ready(Ok(sid));
            }
            if let Some(r) = &st.closed {
                return Poll::Ready(Err(r.to_error()));
            }
            st.accept_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await?;
        // The reader may be waiting for backlog space.
        self.shared.reader_notify.notify_one();
        Ok(Stream::new(self.shared.clone(), sid))
    }

    /// Streams currently open (including ones not yet accepted).
    pub fn num_streams(&self) -> usize {
        self.shared.lock().streams.len()
    }

    /// True once the session has ended, for whatever reason.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed.is_some()
    }

    /// The error that ended the session, if it has ended (`Closed` for a
    /// local close).
    pub fn close_reason(&self) -> Option<Error> {
        self.shared
            .lock()
            .closed
            .as_ref()
            .map(CloseReason::to_error)
    }

    /// Closes the session: frames already queued (e.g. FINs) are written,
    /// then the connection is shut down; a writer still blocked after 10 s
    /// (a peer that stopped reading) is stopped. Streams fail afterwards.
    pub async fn close(&self) {
        self.shared.close(CloseReason::Local);
        let writer = self
            .shared
            .writer_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(w) = writer {
            let _ = w.await;
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shared.close(CloseReason::Local);
    }
}

fn io_reason(e: &io::Error) -> CloseReason {
    CloseReason::Io(e.kind(), e.to_string())
}

/// The most a v2 peer that honours flow control can have sent to one stream
/// beyond what we have read: our window, or smux's initial window, which it
/// assumes until our first UPD (§7.6).
fn window_bound(config: &Config) -> usize {
    config.max_stream_buffer.max(INITIAL_PEER_WINDOW as usize)
}

/// Reads frames and hands them to streams, pausing while the receive budget
/// is spent or the accept backlog is full.
async fn reader_loop<T: AsyncRead>(shared: Arc<Shared>, mut r: ReadHalf<T>) {
    let mut hdr = [0u8; HEADER_SIZE];
    let mut payload = vec![0u8; MAX_FRAME_SIZE];
    let version = shared.lock().config.version;
    loop {
        if shared.lock().closed.is_some() {
            return;
        }
        if let Err(e) = r.read_exact(&mut hdr).await {
            shared.close(io_reason(&e));
            return;
        }
        let h = FrameHeader::decode(&hdr);
        let fail = |m| {
            shared.close(CloseReason::Protocol(m));
        };
        if h.version != version.byte() {
            return fail("frame version differs from the session's");
        }
        shared.lock().data_ready = true;
        match h.cmd {
            CMD_NOP | CMD_SYN | CMD_FIN if h.length != 0 => {
                return fail("SYN/FIN/NOP frame with a payload");
            }
            CMD_NOP => {}
            CMD_SYN => loop {
                {
                    let mut st = shared.lock();
                    if st.closed.is_some() {
                        return;
                    }
                    if st.streams.contains_key(&h.sid) {
                        break;
                    }
                    if st.accept_queue.len() < ACCEPT_BACKLOG {
                        st.streams.insert(h.sid, StreamState::new());
                        st.accept_queue.push_back(h.sid);
                        if let Some(w) = st.accept_waker.take() {
                            w.wake();
                        }
                        break;
                    }
                }
                shared.reader_notify.notified().await;
            },
            CMD_FIN => {
                let mut st = shared.lock();
                if let Some(s) = st.streams.get_mut(&h.sid) {
                    s.fin_received = true;
                    s.wake_all();
                }
            }
            CMD_PSH => {
                let len = h.length as usize;
                if len == 0 {
                    continue;
                }
                // The receive budget gates data only. xtaci/smux stops before
                // every header, which leaves UPD frames unread behind data
                // and can deadlock an echo once the windows in flight fill
                // the budget (fuzz finding, tests/smux_flow.rs); control
                // frames are small and bounded (accept backlog), so they are
                // still read. In v2, data a held stream's window allows is
                // read even past the budget: with several streams whose
                // windows add up to more than the budget, one stream's
                // unread data could otherwise stop a PSH of another stream
                // in front of the UPDs that would free the first (the same
                // deadlock across streams). Memory stays bounded: a
                // compliant peer keeps at most `window_bound` unread per
                // stream, streams waiting for accept stay on the budget,
                // and anything beyond a window waits for the budget too.
                loop {
                    {
                        let st = shared.lock();
                        if st.closed.is_some() {
                            return;
                        }
                        if st.bucket > 0 {
                            break;
                        }
                        let within_window = version == Version::V2
                            && st.streams.get(&h.sid).is_some_and(|s| {
                                s.held && s.recv.len() + len <= window_bound(&st.config)
                            });
                        if within_window {
                            break;
                        }
                    }
                    shared.reader_notify.notified().await;
                }
                let buf = &mut payload[..len];
                if let Err(e) = r.read_exact(buf).await {
                    shared.close(io_reason(&e));
                    return;
                }
                let mut st = shared.lock();
                // Data for a stream we already closed is dropped, as in smux.
                if let Some(s) = st.streams.get_mut(&h.sid) {
                    s.recv.extend(buf.iter());
                    if let Some(w) = s.read_waker.take() {
                        w.wake();
                    }
                    st.bucket -= len as i64;
                }
            }
            CMD_UPD => {
                if version == Version::V1 {
                    return fail("UPD frame on a v1 session");
                }
                if h.length as usize != UPD_SIZE {
                    return fail("UPD frame length is not 8");
                }
                let mut upd = [0u8; UPD_SIZE];
                if let Err(e) = r.read_exact(&mut upd).await {
                    shared.close(io_reason(&e));
                    return;
                }
                let mut st = shared.lock();
                if let Some(s) = st.streams.get_mut(&h.sid) {
                    s.peer_consumed = u32::from_le_bytes([upd[0], upd[1], upd[2], upd[3]]);
                    s.peer_window = u32::from_le_bytes([upd[4], upd[5], upd[6], upd[7]]);
                    if let Some(w) = s.write_waker.take() {
                        w.wake();
                    }
                }
            }
            _ => return fail("unknown command"),
        }
    }
}

/// Writes queued frames in batches (double-buffered: streams fill one
/// buffer while the other is written) and flushes after each batch.
async fn writer_loop<T: AsyncWrite>(shared: Arc<Shared>, mut w: WriteHalf<T>) {
    let mut batch: Vec<u8> = Vec::new();
    loop {
        let finished = {
            let mut st = shared.lock();
            match &st.closed {
                Some(CloseReason::Local) | None => {}
                Some(_) => return,
            }
            if !st.out.is_empty() {
                std::mem::swap(&mut batch, &mut st.out);
            }
            batch.is_empty() && st.closed.is_some()
        };
        if finished {
            // Local close: everything queued before it has been written.
            let _ = w.shutdown().await;
            return;
        }
        if batch.is_empty() {
            shared.writer_notify.notified().await;
            continue;
        }
        let res = async {
            w.write_all(&batch).await?;
            w.flush().await
        }
        .await;
        if let Err(e) = res {
            shared.close(io_reason(&e));
            return;
        }
        let mut st = shared.lock();
        st.flushed += batch.len() as u64;
        batch.clear();
        // Queue space and flush progress: wake every waiting writer.
        for s in st.streams.values_mut() {
            if let Some(w) = s.write_waker.take() {
                w.wake();
            }
        }
        drop(st);
        shared.space_notify.notify_waiters();
    }
}

/// Sends NOP every `interval`; ends the session if a whole `timeout` passes
/// without a frame while we are willing to read (§7.6).
async fn keepalive_loop(
    shared: Arc<Shared>,
    interval: std::time::Duration,
    timeout: std::time::Duration,
) {
    let start = tokio::time::Instant::now();
    let mut ping = tokio::time::interval_at(start + interval, interval);
    let mut check = tokio::time::interval_at(start + timeout, timeout);
    loop {
        tokio::select! {
            _ = ping.tick() => {
                {
                    let mut st = shared.lock();
                    if st.closed.is_some() {
                        return;
                    }
                    // Skipped when the queue is full: the link is busy anyway.
                    if st.out.len() < OUT_QUEUE_LIMIT {
                        st.push_frame(CMD_NOP, 0, &[]);
                    }
                }
                shared.writer_notify.notify_one();
            }
            _ = check.tick() => {
                let mut st = shared.lock();
                if st.closed.is_some() {
                    return;
                }
                if st.data_ready {
                    st.data_ready = false;
                } else if st.bucket > 0 {
                    drop(st);
                    shared.close(CloseReason::KeepaliveTimeout);
                    return;
                }
            }
        }
    }
}
