//! Python bindings for kcp-session (module `kcp_session._kcp_session`).
//!
//! Two shells over the crate:
//!
//! - the blocking API ([`Socket`], [`Listener`]) wraps
//!   `kcp_session::blocking`, releasing the GIL for every call that waits;
//! - the asyncio API's core ([`AsyncSession`], [`AsyncListener`]) runs the
//!   crate's tokio `Session`/`Listener` on one Rust-owned tokio runtime and
//!   reports each finished operation to the asyncio loop that asked for it
//!   with `loop.call_soon_threadsafe(callback, value, exception)`. The
//!   Python side (`kcp_session/_aio.py`) turns those callbacks into futures
//!   and StreamReader/StreamWriter-shaped objects. Nothing polls: a tokio
//!   task waits on the session, and the loop is woken only when a result
//!   exists.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kcp_session as kcp;
use kcp_session::crypt::CipherKind;
use pyo3::exceptions::{PyBlockingIOError, PyOSError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Largest single read the asyncio core asks the session for.
const MAX_READ: usize = 256 * 1024;

/// Maps a crate error to the Python exception a socket user expects:
/// timeouts are `TimeoutError`, would-block is `BlockingIOError`, bad
/// settings are `ValueError`, everything else an `OSError` subclass chosen
/// from the I/O error kind (`BrokenPipeError` for a closed session, ...).
fn to_py(e: kcp::Error) -> PyErr {
    match e {
        kcp::Error::Timeout => PyTimeoutError::new_err("timed out"),
        kcp::Error::WouldBlock => PyBlockingIOError::new_err("operation would block"),
        kcp::Error::InvalidConfig(_)
        | kcp::Error::UnknownCipher { .. }
        | kcp::Error::MtuTooLarge { .. } => PyValueError::new_err(e.to_string()),
        other => {
            let msg = other.to_string();
            let io: io::Error = other.into();
            PyErr::from(io::Error::new(io.kind(), msg))
        }
    }
}

/// A failed send as Python sees it: a full window is `BlockingIOError` in
/// non-blocking mode and `TimeoutError` after a timeout.
fn send_error(e: io::Error, wait: Wait) -> PyErr {
    match e.kind() {
        io::ErrorKind::TimedOut if wait == Wait::Never => {
            PyBlockingIOError::new_err("send window full")
        }
        io::ErrorKind::TimedOut => PyTimeoutError::new_err("timed out"),
        _ => io_to_py(e),
    }
}

fn io_to_py(e: io::Error) -> PyErr {
    PyErr::from(e)
}

fn duration(secs: f64, what: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(secs).map_err(|_| {
        PyValueError::new_err(format!("{what} must be a non-negative number of seconds"))
    })
}

fn addr_tuple(a: SocketAddr) -> (String, u16) {
    (a.ip().to_string(), a.port())
}

/// Session settings, kcp-go/kcptun compatible (a frozen `kcp_session::Config`).
///
/// The cipher is chosen in one of three ways: `crypt=NAME` with `key=str`
/// derives the key from a passphrase as kcptun does (PBKDF2-SHA1, then
/// truncation per cipher); `crypt=NAME` with `key=bytes` uses a raw key
/// (kcp-go's `New*BlockCrypt(key)`); `crypt=NAME` alone uses kcptun's default
/// passphrase. The methods [`Config::crypt_kcptun`] and [`Config::cipher`]
/// return a copy with the cipher replaced.
#[pyclass(frozen, module = "kcp_session")]
#[derive(Clone)]
struct Config {
    inner: kcp::Config,
}

fn crypt_spec(name: &str, key: Option<&Bound<'_, PyAny>>) -> PyResult<kcp::CryptSpec> {
    match key {
        None => Ok(kcp::CryptSpec::Kcptun {
            name: name.to_owned(),
            passphrase: kcp::config::KCPTUN_DEFAULT_KEY.to_owned(),
        }),
        Some(k) => {
            if let Ok(pass) = k.extract::<String>() {
                Ok(kcp::CryptSpec::Kcptun {
                    name: name.to_owned(),
                    passphrase: pass,
                })
            } else if let Ok(raw) = k.extract::<Vec<u8>>() {
                let kind: CipherKind = name.parse().map_err(to_py)?;
                Ok(kcp::CryptSpec::Cipher { kind, key: raw })
            } else {
                Err(PyValueError::new_err(
                    "key must be str (kcptun passphrase) or bytes (raw key)",
                ))
            }
        }
    }
}

#[pymethods]
impl Config {
    /// Builds a config; every argument left out keeps kcp-go's default.
    #[new]
    #[pyo3(signature = (*, crypt=None, key=None, data_shards=None, parity_shards=None,
        mode=None, nodelay=None, mtu=None, sndwnd=None, rcvwnd=None, stream=None,
        write_delay=None, ack_nodelay=None, sockbuf=None, rate_limit=None,
        idle_timeout=None, dead_link=None, accept_backlog=None, max_sessions=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        crypt: Option<&str>,
        key: Option<&Bound<'_, PyAny>>,
        data_shards: Option<usize>,
        parity_shards: Option<usize>,
        mode: Option<&str>,
        nodelay: Option<(bool, u32, u32, bool)>,
        mtu: Option<usize>,
        sndwnd: Option<u32>,
        rcvwnd: Option<u32>,
        stream: Option<bool>,
        write_delay: Option<bool>,
        ack_nodelay: Option<bool>,
        sockbuf: Option<usize>,
        rate_limit: Option<u32>,
        idle_timeout: Option<f64>,
        dead_link: Option<u32>,
        accept_backlog: Option<usize>,
        max_sessions: Option<usize>,
    ) -> PyResult<Config> {
        let mut b = kcp::Config::builder();
        match (crypt, key) {
            (Some(name), k) => b = b.crypt(crypt_spec(name, k)?),
            (None, Some(_)) => return Err(PyValueError::new_err("key given without crypt")),
            (None, None) => {}
        }
        if data_shards.is_some() || parity_shards.is_some() {
            b = b.fec(data_shards.unwrap_or(0), parity_shards.unwrap_or(0));
        }
        if mode.is_some() && nodelay.is_some() {
            return Err(PyValueError::new_err("give mode or nodelay, not both"));
        }
        if let Some(m) = mode {
            b = b.mode(kcp::Mode::from_name(m).map_err(to_py)?);
        }
        if let Some((nd, interval, resend, nc)) = nodelay {
            b = b.nodelay(kcp::NoDelay {
                nodelay: nd,
                interval,
                resend,
                congestion: if nc {
                    kcp::Congestion::Off
                } else {
                    kcp::Congestion::On
                },
            });
        }
        if let Some(m) = mtu {
            b = b.mtu(m);
        }
        if sndwnd.is_some() || rcvwnd.is_some() {
            let (s, r) = kcp::Config::default().window();
            b = b.window(sndwnd.unwrap_or(s), rcvwnd.unwrap_or(r));
        }
        if let Some(s) = stream {
            b = b.stream_mode(if s {
                kcp::StreamMode::Stream
            } else {
                kcp::StreamMode::Message
            });
        }
        if let Some(w) = write_delay {
            b = b.write_delay(w);
        }
        if let Some(a) = ack_nodelay {
            b = b.ack_nodelay(a);
        }
        if let Some(s) = sockbuf {
            b = b.socket_buffers(s);
        }
        if let Some(r) = rate_limit {
            b = b.rate_limit(r);
        }
        if let Some(t) = idle_timeout {
            b = b.idle_timeout(Some(duration(t, "idle_timeout")?));
        }
        if let Some(d) = dead_link {
            b = b.dead_link(Some(d));
        }
        if let Some(n) = accept_backlog {
            b = b.accept_backlog(n);
        }
        if let Some(n) = max_sessions {
            b = b.max_sessions(Some(n));
        }
        Ok(Config {
            inner: b.build().map_err(to_py)?,
        })
    }

    /// A copy with kcptun's cipher `name` and key derived from `passphrase`.
    fn crypt_kcptun(&self, name: &str, passphrase: &str) -> PyResult<Config> {
        let inner = self
            .inner
            .to_builder()
            .crypt_kcptun(name, passphrase)
            .build()
            .map_err(to_py)?;
        Ok(Config { inner })
    }

    /// A copy with cipher `name` (kcptun's names) and a raw `key`.
    fn cipher(&self, name: &str, key: Vec<u8>) -> PyResult<Config> {
        let kind: CipherKind = name.parse().map_err(to_py)?;
        let inner = self
            .inner
            .to_builder()
            .cipher(kind, &key)
            .build()
            .map_err(to_py)?;
        Ok(Config { inner })
    }

    /// The cipher's kcptun name (`"null"` without crypto).
    #[getter]
    fn crypt(&self) -> String {
        self.inner.crypt().kind().name().to_owned()
    }
    /// `(data_shards, parity_shards)`.
    #[getter]
    fn fec(&self) -> (usize, usize) {
        self.inner.fec()
    }
    /// The UDP payload limit.
    #[getter]
    fn mtu(&self) -> usize {
        self.inner.mtu()
    }
    /// `(sndwnd, rcvwnd)` in segments.
    #[getter]
    fn window(&self) -> (u32, u32) {
        self.inner.window()
    }
    /// `(nodelay, interval, resend, nc)` as KCP's `NoDelay`.
    #[getter]
    fn nodelay(&self) -> (bool, u32, u32, bool) {
        let n = self.inner.nodelay();
        (
            n.nodelay,
            n.interval,
            n.resend,
            n.congestion == kcp::Congestion::Off,
        )
    }
    /// True in stream mode, False in message mode.
    #[getter]
    fn stream(&self) -> bool {
        self.inner.stream_mode() == kcp::StreamMode::Stream
    }
    fn __repr__(&self) -> String {
        let (d, p) = self.inner.fec();
        let (s, r) = self.inner.window();
        format!(
            "Config(crypt={:?}, fec=({d}, {p}), mtu={}, window=({s}, {r}), nodelay={:?}, stream={})",
            self.crypt(),
            self.inner.mtu(),
            self.nodelay(),
            self.stream()
        )
    }
}

fn config_of(config: Option<&Config>) -> kcp::Config {
    config.map(|c| c.inner.clone()).unwrap_or_default()
}

// ---------------------------------------------------------------- blocking

/// How a blocking [`Socket`] or [`Listener`] waits (`settimeout`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Wait {
    Forever,
    Upto(Duration),
    Never,
}

fn wait_of(t: Option<f64>) -> PyResult<Wait> {
    match t {
        None => Ok(Wait::Forever),
        Some(0.0) => Ok(Wait::Never),
        Some(s) => Ok(Wait::Upto(duration(s, "timeout")?)),
    }
}

fn wait_secs(w: Wait) -> Option<f64> {
    match w {
        Wait::Forever => None,
        Wait::Upto(d) => Some(d.as_secs_f64()),
        Wait::Never => Some(0.0),
    }
}

/// A blocking, socket-like KCP session (`kcp_session::blocking::Session`).
#[pyclass(frozen, module = "kcp_session")]
struct Socket {
    s: kcp::blocking::Session,
    wait: Mutex<Wait>,
    eof: AtomicBool,
    closed: AtomicBool,
}

impl Socket {
    fn wrap(s: kcp::blocking::Session) -> Socket {
        Socket {
            s,
            wait: Mutex::new(Wait::Forever),
            eof: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }
    fn wait(&self) -> Wait {
        *self.wait.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn check_open(&self) -> PyResult<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(PyOSError::new_err((9, "socket is closed")))
        } else {
            Ok(())
        }
    }
    /// A read error once the session has ended means end of stream.
    fn read_result(&self, py: Python<'_>, r: io::Result<usize>, buf: &[u8]) -> PyResult<PyObject> {
        match r {
            Ok(n) => Ok(PyBytes::new(py, &buf[..n]).into_any().unbind()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                Ok(PyBytes::new(py, b"").into_any().unbind())
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut && !self.s.is_closed() => {
                Err(PyTimeoutError::new_err("timed out"))
            }
            Err(_) if self.s.is_closed() => {
                self.eof.store(true, Ordering::Release);
                Ok(PyBytes::new(py, b"").into_any().unbind())
            }
            Err(e) => Err(io_to_py(e)),
        }
    }
}

#[pymethods]
impl Socket {
    /// Receives up to `bufsize` bytes. Blocking: waits (up to the timeout,
    /// then `TimeoutError`). Non-blocking: `b""` when nothing is ready. In
    /// both modes `b""` is also returned once the session has ended and all
    /// data was read; then `eof` is True.
    fn recv(&self, py: Python<'_>, bufsize: usize) -> PyResult<PyObject> {
        self.check_open()?;
        let mut buf = vec![0u8; bufsize];
        if bufsize == 0 {
            return Ok(PyBytes::new(py, b"").into_any().unbind());
        }
        let r = match self.wait() {
            Wait::Never => self.s.try_read(&mut buf),
            _ => py.allow_threads(|| (&self.s).read(&mut buf)),
        };
        self.read_result(py, r, &buf)
    }

    /// Sends as much of `data` as the send window takes; returns the count.
    /// Non-blocking with a full window: `BlockingIOError`.
    fn send(&self, py: Python<'_>, data: &[u8]) -> PyResult<usize> {
        self.check_open()?;
        let wait = self.wait();
        let r = py.allow_threads(|| (&self.s).write(data));
        r.map_err(|e| send_error(e, wait))
    }

    /// Sends all of `data`, waiting for window space (timeout applies to
    /// each wait).
    fn sendall(&self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        self.check_open()?;
        let wait = self.wait();
        let r = py.allow_threads(|| (&self.s).write_all(data));
        r.map_err(|e| send_error(e, wait))
    }

    /// Message mode: sends `data` as one message.
    fn send_msg(&self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        self.check_open()?;
        py.allow_threads(|| self.s.send_msg(data)).map_err(to_py)
    }

    /// Message mode: receives one whole message of at most `bufsize` bytes.
    fn recv_msg(&self, py: Python<'_>, bufsize: usize) -> PyResult<PyObject> {
        self.check_open()?;
        let mut buf = vec![0u8; bufsize];
        let r = match self.wait() {
            Wait::Never => self.s.try_recv_msg(&mut buf),
            _ => py.allow_threads(|| self.s.recv_msg(&mut buf)),
        };
        self.read_result(py, r.map_err(io::Error::from), &buf)
    }

    /// Waits until the peer has acknowledged everything sent.
    fn drain(&self, py: Python<'_>) -> PyResult<()> {
        self.check_open()?;
        py.allow_threads(|| self.s.drain()).map_err(to_py)
    }

    /// `None` blocks forever, `0` is non-blocking, `t > 0` waits at most
    /// `t` seconds per call (`TimeoutError`).
    #[pyo3(signature = (value))]
    fn settimeout(&self, value: Option<f64>) -> PyResult<()> {
        let w = wait_of(value)?;
        let t = match w {
            Wait::Forever => None,
            Wait::Upto(d) => Some(d),
            Wait::Never => Some(Duration::ZERO),
        };
        self.s
            .set_read_timeout(if w == Wait::Never { None } else { t });
        self.s.set_write_timeout(t);
        *self.wait.lock().unwrap_or_else(|e| e.into_inner()) = w;
        Ok(())
    }
    fn gettimeout(&self) -> Option<f64> {
        wait_secs(self.wait())
    }
    /// `setblocking(False)` is `settimeout(0)`, `True` is `settimeout(None)`.
    fn setblocking(&self, flag: bool) -> PyResult<()> {
        self.settimeout(if flag { None } else { Some(0.0) })
    }
    /// True once the session has ended and every received byte was read.
    #[getter]
    fn eof(&self) -> bool {
        self.eof.load(Ordering::Acquire)
    }
    /// Why the session ended (`None` while it is live).
    #[getter]
    fn error(&self) -> Option<String> {
        self.s.error().map(|e| e.to_string())
    }
    /// Bytes the next `recv` returns without waiting.
    fn pending(&self) -> usize {
        self.s.available()
    }
    /// The KCP conversation id.
    #[getter]
    fn conv(&self) -> u32 {
        self.s.conv()
    }
    /// Smoothed RTT in ms.
    fn srtt(&self) -> i32 {
        self.s.srtt()
    }
    fn getpeername(&self) -> (String, u16) {
        addr_tuple(self.s.peer_addr())
    }
    fn getsockname(&self) -> (String, u16) {
        addr_tuple(self.s.local_addr())
    }
    /// Closes the session (kcp-go `Close`: one final flush). Idempotent.
    fn close(&self, py: Python<'_>) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            let _ = py.allow_threads(|| self.s.close());
        }
    }
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }
    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close(py);
        false
    }
    fn __repr__(&self) -> String {
        format!(
            "<kcp_session.Socket conv={} peer={}>",
            self.s.conv(),
            self.s.peer_addr()
        )
    }
}

/// A blocking KCP listener (`kcp_session::blocking::Listener`).
#[pyclass(frozen, module = "kcp_session")]
struct Listener {
    l: kcp::blocking::Listener,
    wait: Mutex<Wait>,
}

#[pymethods]
impl Listener {
    /// Waits for the next session; returns `(Socket, (host, port))`.
    fn accept(&self, py: Python<'_>) -> PyResult<(Socket, (String, u16))> {
        let wait = *self.wait.lock().unwrap_or_else(|e| e.into_inner());
        let r = py.allow_threads(|| match wait {
            Wait::Forever => self.l.accept(),
            Wait::Upto(d) => self.l.accept_timeout(d),
            Wait::Never => self.l.accept_timeout(Duration::ZERO),
        });
        match r {
            Ok(s) => {
                let peer = addr_tuple(s.peer_addr());
                Ok((Socket::wrap(s), peer))
            }
            Err(kcp::Error::Timeout) if wait == Wait::Never => {
                Err(PyBlockingIOError::new_err("no session waiting"))
            }
            Err(e) => Err(to_py(e)),
        }
    }
    #[pyo3(signature = (value))]
    fn settimeout(&self, value: Option<f64>) -> PyResult<()> {
        *self.wait.lock().unwrap_or_else(|e| e.into_inner()) = wait_of(value)?;
        Ok(())
    }
    fn gettimeout(&self) -> Option<f64> {
        wait_secs(*self.wait.lock().unwrap_or_else(|e| e.into_inner()))
    }
    fn setblocking(&self, flag: bool) -> PyResult<()> {
        self.settimeout(if flag { None } else { Some(0.0) })
    }
    fn getsockname(&self) -> (String, u16) {
        addr_tuple(self.l.local_addr())
    }
    /// Stops accepting; accepted sessions keep working.
    fn close(&self) {
        self.l.close();
    }
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }
    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close();
        false
    }
}

/// Dials `(host, port)` with the blocking API.
#[pyfunction]
#[pyo3(signature = (address, config=None, timeout=None))]
fn connect(
    py: Python<'_>,
    address: (String, u16),
    config: Option<&Config>,
    timeout: Option<f64>,
) -> PyResult<Socket> {
    let cfg = config_of(config);
    let s = py
        .allow_threads(|| kcp::blocking::Session::dial((address.0.as_str(), address.1), &cfg))
        .map_err(to_py)?;
    let sock = Socket::wrap(s);
    sock.settimeout(timeout)?;
    Ok(sock)
}

/// Binds `(host, port)` with the blocking API.
#[pyfunction]
#[pyo3(signature = (address, config=None))]
fn listen(py: Python<'_>, address: (String, u16), config: Option<&Config>) -> PyResult<Listener> {
    let cfg = config_of(config);
    let l = py
        .allow_threads(|| kcp::blocking::Listener::listen((address.0.as_str(), address.1), &cfg))
        .map_err(to_py)?;
    Ok(Listener {
        l,
        wait: Mutex::new(Wait::Forever),
    })
}

// ----------------------------------------------------------------- asyncio

/// The runtime every asyncio session runs on; `None` before the first use
/// and after [`_shutdown`].
static RT: Mutex<Option<tokio::runtime::Runtime>> = Mutex::new(None);
/// Set by [`_shutdown`]: no new runtime, and no more calls into Python.
static STOPPED: AtomicBool = AtomicBool::new(false);

fn runtime() -> PyResult<tokio::runtime::Handle> {
    let mut rt = RT.lock().unwrap_or_else(|e| e.into_inner());
    if STOPPED.load(Ordering::Acquire) {
        return Err(PyOSError::new_err(
            "kcp_session: the interpreter is shutting down",
        ));
    }
    if rt.is_none() {
        // One worker runs every session's driver and the operations Python
        // asked for; Python threads never block on it.
        let built = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kcp-session-py")
            .enable_all()
            .build()
            .map_err(|e| PyOSError::new_err(format!("cannot start the tokio runtime: {e}")))?;
        *rt = Some(built);
    }
    Ok(rt.as_ref().expect("just set").handle().clone())
}

/// Stops the asyncio runtime; registered with `atexit` by the package.
///
/// Python runs `atexit` callbacks while threads may still take the GIL.
/// After that, a non-Python thread that asks for the GIL is ended by
/// `pthread_exit`, whose forced unwind through Rust frames aborts the whole
/// process ("FATAL: exception not rethrown"). So the runtime's worker must
/// be gone before finalization: stop replying, then shut it down with the
/// GIL released so a worker already waiting for the GIL can finish.
#[pyfunction]
fn _shutdown(py: Python<'_>) {
    STOPPED.store(true, Ordering::Release);
    let rt = RT.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(rt) = rt {
        py.allow_threads(|| rt.shutdown_timeout(Duration::from_secs(2)));
    }
}

/// Where an asyncio operation's result goes: `loop.call_soon_threadsafe(cb, value, exc)`.
struct Reply {
    event_loop: PyObject,
    cb: PyObject,
}

impl Reply {
    fn send(self, r: PyResult<PyObject>) {
        if STOPPED.load(Ordering::Acquire) {
            // Finalizing: nobody will run the loop again (see `_shutdown`).
            return;
        }
        Python::with_gil(|py| {
            let (value, exc) = match r {
                Ok(v) => (v, py.None()),
                Err(e) => (py.None(), e.into_value(py).into_any()),
            };
            // A closed loop raises; nobody is waiting then.
            let _ = self
                .event_loop
                .call_method1(py, "call_soon_threadsafe", (self.cb, value, exc));
        });
    }
    fn send_with(self, f: impl FnOnce(Python<'_>) -> PyResult<PyObject>) {
        if STOPPED.load(Ordering::Acquire) {
            return;
        }
        let r = Python::with_gil(f);
        self.send(r);
    }
}

enum WriteOp {
    Data(Vec<u8>),
    Drain(Reply),
    DrainAcked(Reply),
    Close(Reply),
}

/// The Rust half of an asyncio KCP session (see `kcp_session._aio`).
#[pyclass(frozen, module = "kcp_session")]
struct AsyncSession {
    read: Arc<tokio::sync::Mutex<kcp::OwnedReadHalf>>,
    tx: Mutex<Option<mpsc::UnboundedSender<WriteOp>>>,
    peer: SocketAddr,
    local: SocketAddr,
    conv: u32,
}

impl AsyncSession {
    fn start(s: kcp::Session) -> AsyncSession {
        let peer = s.peer_addr();
        let local = s.local_addr();
        let conv = s.conv();
        let (r, mut w) = s.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<WriteOp>();
        // Writes run in order on one task, so `write()` never waits and
        // `drain()` completes once everything before it is in the session.
        if let Ok(rt) = runtime() {
            rt.spawn(async move {
                let mut failed: Option<String> = None;
                while let Some(op) = rx.recv().await {
                    match op {
                        WriteOp::Data(d) => {
                            if failed.is_none() {
                                if let Err(e) = w.write_all(&d).await {
                                    failed = Some(e.to_string());
                                }
                            }
                        }
                        WriteOp::Drain(reply) => reply.send(match &failed {
                            None => Ok(Python::with_gil(|py| py.None())),
                            Some(e) => Err(pyo3::exceptions::PyConnectionError::new_err(e.clone())),
                        }),
                        WriteOp::DrainAcked(reply) => {
                            let r = match &failed {
                                None => w.drain().await.map_err(to_py_owned),
                                Some(e) => Err(e.clone()),
                            };
                            reply.send(
                                r.map(|()| Python::with_gil(|py| py.None()))
                                    .map_err(pyo3::exceptions::PyConnectionError::new_err),
                            );
                        }
                        WriteOp::Close(reply) => {
                            let _ = w.close();
                            reply.send(Ok(Python::with_gil(|py| py.None())));
                            break;
                        }
                    }
                }
                // Every sender gone without Close (the Python object was
                // dropped): the session closes when `w` and the read half go.
                let _ = w.close();
            });
        }
        AsyncSession {
            read: Arc::new(tokio::sync::Mutex::new(r)),
            tx: Mutex::new(Some(tx)),
            peer,
            local,
            conv,
        }
    }

    fn queue(&self, op: WriteOp) -> PyResult<()> {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        match tx.as_ref() {
            Some(t) if t.send(op).is_ok() => Ok(()),
            _ => Err(pyo3::exceptions::PyBrokenPipeError::new_err(
                "the session is closed",
            )),
        }
    }
}

fn to_py_owned(e: kcp::Error) -> String {
    e.to_string()
}

#[pymethods]
impl AsyncSession {
    /// Reads up to `n` bytes; replies `bytes` (`b""` at end of stream) or an
    /// exception. One read at a time is the caller's rule.
    fn read(&self, n: usize, event_loop: PyObject, cb: PyObject) -> PyResult<()> {
        let rt = runtime()?;
        let half = self.read.clone();
        let reply = Reply { event_loop, cb };
        let n = n.clamp(1, MAX_READ);
        rt.spawn(async move {
            let mut buf = vec![0u8; n];
            let r = half.lock().await.read(&mut buf).await;
            reply.send_with(|py| match r {
                Ok(k) => Ok(PyBytes::new(py, &buf[..k]).into_any().unbind()),
                Err(e) => Err(io_to_py(e)),
            });
        });
        Ok(())
    }
    /// Queues `data` for sending; never waits.
    fn write(&self, data: Vec<u8>) -> PyResult<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.queue(WriteOp::Data(data))
    }
    /// Replies once every queued write is in the session's send queue.
    fn drain(&self, event_loop: PyObject, cb: PyObject) -> PyResult<()> {
        self.queue(WriteOp::Drain(Reply { event_loop, cb }))
    }
    /// Replies once the peer has acknowledged everything written.
    fn drain_acked(&self, event_loop: PyObject, cb: PyObject) -> PyResult<()> {
        self.queue(WriteOp::DrainAcked(Reply { event_loop, cb }))
    }
    /// Sends what is queued, then closes (kcp-go `Close`); replies when done.
    fn close(&self, event_loop: PyObject, cb: PyObject) -> PyResult<()> {
        let r = self.queue(WriteOp::Close(Reply { event_loop, cb }));
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        r
    }
    #[getter]
    fn peername(&self) -> (String, u16) {
        addr_tuple(self.peer)
    }
    #[getter]
    fn sockname(&self) -> (String, u16) {
        addr_tuple(self.local)
    }
    #[getter]
    fn conv(&self) -> u32 {
        self.conv
    }
}

/// The Rust half of an asyncio KCP server (see `kcp_session._aio`).
#[pyclass(frozen, module = "kcp_session")]
struct AsyncListener {
    l: Arc<kcp::Listener>,
}

#[pymethods]
impl AsyncListener {
    /// Replies with the next accepted [`AsyncSession`], or an exception
    /// (`BrokenPipeError` once closed).
    fn accept(&self, event_loop: PyObject, cb: PyObject) -> PyResult<()> {
        let rt = runtime()?;
        let l = self.l.clone();
        let reply = Reply { event_loop, cb };
        rt.spawn(async move {
            let r = l.accept().await;
            let r = r.map(AsyncSession::start);
            reply.send_with(|py| match r {
                Ok(s) => Ok(Py::new(py, s)?.into_any()),
                Err(e) => Err(to_py(e)),
            });
        });
        Ok(())
    }
    #[getter]
    fn sockname(&self) -> (String, u16) {
        addr_tuple(self.l.local_addr())
    }
    /// Stops accepting; accepted sessions keep working.
    fn close(&self) {
        self.l.close();
    }
}

/// Dials on the tokio runtime; replies with an [`AsyncSession`].
#[pyfunction]
#[pyo3(signature = (host, port, config, event_loop, cb))]
fn _dial(
    host: String,
    port: u16,
    config: Option<&Config>,
    event_loop: PyObject,
    cb: PyObject,
) -> PyResult<()> {
    let rt = runtime()?;
    let cfg = config_of(config);
    let reply = Reply { event_loop, cb };
    rt.spawn(async move {
        let r = kcp::Session::dial((host.as_str(), port), &cfg).await;
        let r = r.map(AsyncSession::start);
        reply.send_with(|py| match r {
            Ok(s) => Ok(Py::new(py, s)?.into_any()),
            Err(e) => Err(to_py(e)),
        });
    });
    Ok(())
}

/// Binds on the tokio runtime; replies with an [`AsyncListener`].
#[pyfunction]
#[pyo3(signature = (host, port, config, event_loop, cb))]
fn _listen(
    host: String,
    port: u16,
    config: Option<&Config>,
    event_loop: PyObject,
    cb: PyObject,
) -> PyResult<()> {
    let rt = runtime()?;
    let cfg = config_of(config);
    let reply = Reply { event_loop, cb };
    rt.spawn(async move {
        let r = kcp::Listener::listen((host.as_str(), port), &cfg).await;
        reply.send_with(|py| match r {
            Ok(l) => Ok(Py::new(py, AsyncListener { l: Arc::new(l) })?.into_any()),
            Err(e) => Err(to_py(e)),
        });
    });
    Ok(())
}

/// The derived 32-byte kcptun key for `passphrase` (PBKDF2-SHA1).
#[pyfunction]
fn kcptun_key(py: Python<'_>, passphrase: &str) -> PyObject {
    PyBytes::new(py, &kcp::crypt::Crypt::kcptun_key(passphrase))
        .into_any()
        .unbind()
}

#[pymodule]
fn _kcp_session(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Config>()?;
    m.add_class::<Socket>()?;
    m.add_class::<Listener>()?;
    m.add_class::<AsyncSession>()?;
    m.add_class::<AsyncListener>()?;
    m.add_function(wrap_pyfunction!(connect, m)?)?;
    m.add_function(wrap_pyfunction!(listen, m)?)?;
    m.add_function(wrap_pyfunction!(_dial, m)?)?;
    m.add_function(wrap_pyfunction!(_listen, m)?)?;
    m.add_function(wrap_pyfunction!(kcptun_key, m)?)?;
    m.add_function(wrap_pyfunction!(_shutdown, m)?)?;
    let ciphers: Vec<&str> = CipherKind::ALL.iter().map(|k| k.name()).collect();
    m.add("CIPHERS", ciphers)?;
    Ok(())
}
