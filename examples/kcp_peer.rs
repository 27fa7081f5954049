//! The Rust interop peer: the same command line contract as the Go peer in
//! `interop/peer` (see interop/README.md), so the harness can put either
//! implementation in either slot.
//!
//! ```text
//! kcp_peer --role echo-server|sink|echo-client|source --addr HOST:PORT
//!          [--crypt NAME] [--key PASSPHRASE] [--datashard N] [--parityshard N]
//!          [--mode normal|fast|fast2|fast3] [--mtu N] [--sndwnd N] [--rcvwnd N]
//!          [--stream|--message] [--bytes N] [--chunk N] [--seed N] [--timeout SECONDS]
//!          [--sockbuf N] [--acknodelay] [--count N] [--session-timeout SECONDS]
//!          [--api tokio|blocking]
//! ```
//!
//! Four roles test close semantics (interop/close_test.go):
//! `write-close-server` / `write-close-client` write --bytes on each of
//! --count sessions and close it at once, `read-client` / `read-server` count
//! the sessions whose payload arrived whole.
//!
//! Two more roles serve the benchmark driver (interop/bench): `rr-client`
//! (--count request/response round trips of --chunk bytes; RESULT carries
//! `p50_us= p99_us= max_us=`) and `idle-client` (opens --count sessions, echoes
//! one --chunk message on each, prints `READY N`, idles until stdin closes).
//!
//! `msg-client` checks `send_msg`'s message-size rule against an echo
//! server (see `msg_client`; interop/msgwindow_test.go).
//!
//! `--api blocking` (or the environment variable `KCP_PEER_API=blocking`,
//! which the Go harness passes through) runs the echo-server, sink,
//! echo-client, source, write-close-server and write-close-client roles on
//! `kcp_session::blocking` (std threads, no tokio runtime); the other roles
//! stay on tokio (with a note on stderr).
//!
//! `--shards N` (or `KCP_PEER_SHARDS=N`) gives the tokio listener N receive
//! shards on one port (`ConfigBuilder::listener_shards`).
//!
//! Servers print `LISTENING <addr>` once bound. Every role prints
//! `RESULT role=.. bytes=N crc32=HEX ok=true|false ...` and `SNMP Name=value ...`
//! at exit. Exit status: 0 ok, 1 transfer failed, 2 bad arguments or setup.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kcp_session::config::MAX_PACKET_SIZE;
use kcp_session::crypt::{CipherKind, Crypt};
use kcp_session::{stats, Config, CryptSpec, Listener, Mode, Session, StreamMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const EXIT_OK: u8 = 0;
const EXIT_FAIL: u8 = 1;
const EXIT_USAGE: u8 = 2;
/// Sent by the source after it read the sink's ack, so the sink can stop lingering.
const BYE: u8 = b'.';
/// How long a sink waits for the bye byte after acking.
const SINK_LINGER: Duration = Duration::from_secs(3);
const DEFAULT_KEY: &str = "it's a secrect";

#[derive(Debug, Clone)]
struct Args {
    role: String,
    addr: String,
    crypt: String,
    key: String,
    datashard: usize,
    parityshard: usize,
    mode: Mode,
    mtu: usize,
    sndwnd: u32,
    rcvwnd: u32,
    stream: StreamMode,
    bytes: u64,
    chunk: usize,
    seed: u64,
    timeout: Duration,
    sockbuf: usize,
    acknodelay: bool,
    count: usize,
    session_timeout: Duration,
    threads: usize,
    /// Listener receive shards (`ConfigBuilder::listener_shards`); from
    /// --shards, else the environment variable KCP_PEER_SHARDS, else 1.
    shards: usize,
    /// `tokio` (default) or `blocking` (`kcp_session::blocking`); from
    /// --api, else the environment variable KCP_PEER_API.
    api: String,
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        role: String::new(),
        addr: String::new(),
        crypt: "aes".into(),
        key: DEFAULT_KEY.into(),
        datashard: 0,
        parityshard: 0,
        mode: Mode::Fast,
        mtu: 1350,
        sndwnd: 1024,
        rcvwnd: 1024,
        stream: StreamMode::Stream,
        bytes: 0,
        chunk: 65536,
        seed: 1,
        timeout: Duration::from_secs(60),
        sockbuf: 4 << 20,
        acknodelay: false,
        count: 1000,
        session_timeout: Duration::from_secs(5),
        threads: 2,
        shards: std::env::var("KCP_PEER_SHARDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
        api: std::env::var("KCP_PEER_API").unwrap_or_else(|_| "tokio".into()),
    };
    let (mut saw_stream, mut saw_message) = (false, false);
    let mut i = 0;
    while i < argv.len() {
        let arg = argv[i].trim_start_matches('-');
        if arg.len() == argv[i].len() {
            return Err(format!("unexpected argument {:?}", argv[i]));
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (arg, None),
        };
        let is_bool = matches!(name, "stream" | "message" | "acknodelay");
        let value = if is_bool {
            inline.unwrap_or_else(|| "true".into())
        } else if let Some(v) = inline {
            v
        } else {
            i += 1;
            argv.get(i)
                .cloned()
                .ok_or_else(|| format!("flag --{name} needs a value"))?
        };
        let num = |v: &str| -> Result<u64, String> {
            v.parse::<u64>()
                .map_err(|_| format!("--{name}: {v:?} is not a non-negative integer"))
        };
        let flag = |v: &str| -> Result<bool, String> {
            match v {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(format!("--{name}: {v:?} is not a boolean")),
            }
        };
        match name {
            "role" => a.role = value,
            "addr" => a.addr = value,
            "crypt" => a.crypt = value,
            "key" => a.key = value,
            "datashard" => a.datashard = num(&value)? as usize,
            "parityshard" => a.parityshard = num(&value)? as usize,
            "mode" => a.mode = Mode::from_name(&value).map_err(|e| e.to_string())?,
            "mtu" => a.mtu = num(&value)? as usize,
            "sndwnd" => a.sndwnd = num(&value)? as u32,
            "rcvwnd" => a.rcvwnd = num(&value)? as u32,
            "stream" => saw_stream = flag(&value)?,
            "message" => saw_message = flag(&value)?,
            "bytes" => a.bytes = num(&value)?,
            "chunk" => a.chunk = num(&value)? as usize,
            "seed" => a.seed = num(&value)?,
            "timeout" | "session-timeout" => {
                let s: f64 = value
                    .parse()
                    .map_err(|_| format!("--{name}: {value:?} is not a number"))?;
                if !(s > 0.0 && s.is_finite()) {
                    return Err(format!("--{name} must be positive"));
                }
                if name == "timeout" {
                    a.timeout = Duration::from_secs_f64(s);
                } else {
                    a.session_timeout = Duration::from_secs_f64(s);
                }
            }
            "sockbuf" => a.sockbuf = num(&value)? as usize,
            "acknodelay" => a.acknodelay = flag(&value)?,
            "count" => a.count = num(&value)? as usize,
            "threads" => a.threads = num(&value)? as usize,
            "shards" => a.shards = num(&value)? as usize,
            "api" => a.api = value,
            other => return Err(format!("unknown flag --{other}")),
        }
        i += 1;
    }
    if saw_stream && saw_message {
        return Err("--stream and --message are exclusive".into());
    }
    if saw_message {
        a.stream = StreamMode::Message;
    }
    if !matches!(
        a.role.as_str(),
        "echo-server"
            | "sink"
            | "echo-client"
            | "source"
            | "rr-client"
            | "idle-client"
            | "write-close-server"
            | "write-close-client"
            | "read-server"
            | "read-client"
            | "msg-client"
    ) {
        return Err(format!("unknown --role {:?}", a.role));
    }
    if !matches!(a.api.as_str(), "tokio" | "blocking") {
        return Err(format!(
            "--api (or KCP_PEER_API) must be tokio or blocking, not {:?}",
            a.api
        ));
    }
    if a.addr.is_empty() {
        return Err("--addr is required".into());
    }
    if a.chunk == 0 {
        return Err("--chunk must be positive".into());
    }
    Ok(a)
}

/// kcptun's cipher names plus the GCM key sizes the harness also uses.
fn crypt_spec(name: &str, passphrase: &str) -> Result<CryptSpec, String> {
    let pass = Crypt::kcptun_key(passphrase);
    let spec = |kind, n: usize| CryptSpec::Cipher {
        kind,
        key: pass[..n].to_vec(),
    };
    Ok(match name {
        "null" => CryptSpec::Null,
        "aes-256" => spec(CipherKind::Aes256, 32),
        "aes-192-gcm" => spec(CipherKind::AesGcm, 24),
        "aes-256-gcm" => spec(CipherKind::AesGcm, 32),
        other => {
            let kind: CipherKind = other
                .parse()
                .map_err(|e: kcp_session::Error| e.to_string())?;
            spec(kind, kind.kcptun_key_len())
        }
    })
}

/// `--mtu` as the library accepts it: like kcp-go v5.7's `SetMtu`, a value
/// above 1472 is clamped (with a note), so the matrix can ask both peers for
/// 1500; the library itself refuses such an mtu with `Error::MtuTooLarge`.
fn effective_mtu(mtu: usize) -> usize {
    if mtu > MAX_PACKET_SIZE {
        eprintln!(
            "peer: --mtu {mtu} clamped to {MAX_PACKET_SIZE}: kcp-go v5.7 truncates longer datagrams"
        );
        return MAX_PACKET_SIZE;
    }
    mtu
}

fn build_config(a: &Args) -> Result<Config, String> {
    Config::builder()
        .crypt(crypt_spec(&a.crypt, &a.key)?)
        .fec(a.datashard, a.parityshard)
        .mode(a.mode)
        .mtu(effective_mtu(a.mtu))
        .window(a.sndwnd, a.rcvwnd)
        .stream_mode(a.stream)
        .write_delay(false)
        .ack_nodelay(a.acknodelay)
        .socket_buffers(a.sockbuf)
        // kcp-go's lifetime rules, like the Go peer in the other slot: the
        // benchmark driver keeps 10,000 sessions idle on one echo-server,
        // beyond the default table and idle timeout.
        .idle_timeout(None)
        .dead_link(None)
        .max_sessions(None)
        .listener_shards(a.shards)
        .build()
        .map_err(|e| e.to_string())
}

/// The contract's payload: SplitMix64 from --seed, each output as 8
/// little-endian bytes, truncated to --bytes.
struct Payload {
    state: u64,
    buf: [u8; 8],
    avail: usize,
}

impl Payload {
    fn new(seed: u64) -> Payload {
        Payload {
            state: seed,
            buf: [0; 8],
            avail: 0,
        }
    }
    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn fill(&mut self, mut b: &mut [u8]) {
        while !b.is_empty() {
            // Whole words straight into b (same bytes, less per-byte work:
            // interop/bench counts the peers' CPU time).
            if self.avail == 0 && b.len() >= 8 {
                let (word, rest) = std::mem::take(&mut b).split_at_mut(8);
                word.copy_from_slice(&self.next().to_le_bytes());
                b = rest;
                continue;
            }
            if self.avail == 0 {
                self.buf = self.next().to_le_bytes();
                self.avail = 8;
            }
            let n = b.len().min(self.avail);
            b[..n].copy_from_slice(&self.buf[8 - self.avail..8 - self.avail + n]);
            self.avail -= n;
            b = &mut b[n..];
        }
    }
}

/// Checks received bytes against the payload as they arrive.
struct Verifier {
    exp: Payload,
    want: Vec<u8>,
    crc: crc32fast::Hasher,
    got: u64,
    mismatch: Option<u64>,
}

impl Verifier {
    fn new(seed: u64) -> Verifier {
        Verifier {
            exp: Payload::new(seed),
            want: vec![0; 1 << 16],
            crc: crc32fast::Hasher::new(),
            got: 0,
            mismatch: None,
        }
    }
    fn add(&mut self, mut b: &[u8]) {
        while !b.is_empty() {
            let n = b.len().min(self.want.len());
            self.exp.fill(&mut self.want[..n]);
            if self.mismatch.is_none() && b[..n] != self.want[..n] {
                if let Some(i) = (0..n).find(|&i| b[i] != self.want[i]) {
                    self.mismatch = Some(self.got + i as u64);
                }
            }
            self.crc.update(&b[..n]);
            self.got += n as u64;
            b = &b[n..];
        }
    }
    fn crc(&self) -> u32 {
        self.crc.clone().finalize()
    }
}

#[derive(Default)]
struct Outcome {
    bytes: u64,
    crc: u32,
    ok: bool,
    extra: String,
    reason: String,
    setup: bool,
}

impl Outcome {
    fn setup(msg: String) -> Outcome {
        eprintln!("peer: {msg}");
        Outcome {
            reason: msg,
            setup: true,
            ..Outcome::default()
        }
    }
    fn verdict(v: &Verifier, want: u64, err: Option<String>) -> Outcome {
        let mut o = Outcome {
            bytes: v.got,
            crc: v.crc(),
            ok: err.is_none() && v.mismatch.is_none() && v.got == want,
            ..Outcome::default()
        };
        if let Some(e) = err {
            o.reason = e;
        } else if let Some(m) = v.mismatch {
            o.reason = format!("payload mismatch at byte offset {m}");
        }
        if let Some(m) = v.mismatch {
            o.extra = format!("mismatch_at={m}");
        }
        o
    }
}

fn report(role: &str, o: &Outcome) {
    let mut line = format!(
        "RESULT role={role} bytes={} crc32={:08x} ok={}",
        o.bytes, o.crc, o.ok
    );
    if !o.extra.is_empty() {
        line.push(' ');
        line.push_str(&o.extra);
    }
    if !o.reason.is_empty() {
        line.push_str(" reason=");
        line.push_str(&o.reason.replace('\n', " "));
    }
    let mut snmp = String::from("SNMP");
    for (name, v) in stats::global().fields() {
        snmp.push_str(&format!(" {name}={v}"));
    }
    // A closed stdout must not turn a finished run into a panic.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = writeln!(out, "{snmp}");
    let _ = out.flush();
}

async fn write_all(s: &mut (impl AsyncWriteExt + Unpin), a: &Args) -> Result<u32, String> {
    let mut gen = Payload::new(a.seed);
    let mut buf = vec![0u8; a.chunk];
    let mut crc = crc32fast::Hasher::new();
    let mut left = a.bytes;
    while left > 0 {
        let n = (left.min(buf.len() as u64)) as usize;
        gen.fill(&mut buf[..n]);
        crc.update(&buf[..n]);
        s.write_all(&buf[..n])
            .await
            .map_err(|e| format!("write at offset {}: {e}", a.bytes - left))?;
        left -= n as u64;
    }
    Ok(crc.finalize())
}

async fn read_verify(s: &mut (impl AsyncReadExt + Unpin), a: &Args) -> (Verifier, Option<String>) {
    let mut v = Verifier::new(a.seed);
    let mut buf = vec![0u8; 1 << 16];
    while v.got < a.bytes {
        let want = (buf.len() as u64).min(a.bytes - v.got) as usize;
        match s.read(&mut buf[..want]).await {
            Ok(0) => {
                let e = format!("read after {} of {} bytes: end of stream", v.got, a.bytes);
                return (v, Some(e));
            }
            Ok(n) => v.add(&buf[..n]),
            Err(e) => {
                let e = format!("read after {} of {} bytes: {e}", v.got, a.bytes);
                return (v, Some(e));
            }
        }
    }
    (v, None)
}

async fn listen(a: &Args, cfg: &Config) -> Result<Listener, String> {
    let l = Listener::listen(a.addr.as_str(), cfg)
        .await
        .map_err(|e| format!("listen {}: {e}", a.addr))?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "LISTENING {}", l.local_addr());
    let _ = out.flush();
    Ok(l)
}

async fn dial(a: &Args, cfg: &Config) -> Result<Session, String> {
    Session::dial(a.addr.as_str(), cfg)
        .await
        .map_err(|e| format!("dial {}: {e}", a.addr))
}

async fn echo_server(a: &Args, cfg: &Config, deadline: Instant) -> Outcome {
    let l = match listen(a, cfg).await {
        Ok(l) => l,
        Err(e) => return Outcome::setup(e),
    };
    let crc = Arc::new(Mutex::new(crc32fast::Hasher::new()));
    let total = Arc::new(AtomicU64::new(0));
    let sessions = Arc::new(AtomicU64::new(0));
    let (crc2, total2, sessions2) = (crc.clone(), total.clone(), sessions.clone());
    let accept = tokio::spawn(async move {
        while let Ok(s) = l.accept().await {
            sessions2.fetch_add(1, Ordering::Relaxed);
            let (crc, total) = (crc2.clone(), total2.clone());
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                // Small until a read fills it: a zeroed 64 KiB buffer per
                // session would be most of an idle session's memory
                // (interop/bench measures RSS per idle session).
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = r.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if n == buf.len() && buf.len() < 1 << 16 {
                        buf.resize(1 << 16, 0);
                    }
                    if let Ok(mut c) = crc.lock() {
                        c.update(&buf[..n]);
                    }
                    total.fetch_add(n as u64, Ordering::Relaxed);
                    if w.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let stdin_closed = async {
        let mut stdin = tokio::io::stdin();
        let mut sink = vec![0u8; 4096];
        while let Ok(n) = stdin.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    // SIGTERM exists only on unix; elsewhere Ctrl-C and stdin end the run.
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let sigterm = async {
        #[cfg(unix)]
        if let Some(t) = term.as_mut() {
            t.recv().await;
            return;
        }
        std::future::pending::<()>().await
    };
    let (why, ok) = tokio::select! {
        _ = stdin_closed => ("stdin-closed", true),
        _ = sigterm => ("signal-terminated", true),
        _ = tokio::signal::ctrl_c() => ("signal-interrupt", true),
        _ = tokio::time::sleep_until(deadline.into()) => ("timeout", false),
    };
    accept.abort();
    let crc = crc.lock().map(|c| c.clone().finalize()).unwrap_or(0);
    Outcome {
        bytes: total.load(Ordering::Relaxed),
        crc,
        ok,
        extra: format!("sessions={} stop={why}", sessions.load(Ordering::Relaxed)),
        reason: if ok {
            String::new()
        } else {
            format!("timeout after {:?}", a.timeout)
        },
        setup: false,
    }
}

async fn sink(a: &Args, cfg: &Config) -> Outcome {
    let l = match listen(a, cfg).await {
        Ok(l) => l,
        Err(e) => return Outcome::setup(e),
    };
    let mut s = match l.accept().await {
        Ok(s) => s,
        Err(e) => {
            return Outcome {
                reason: format!("accept: {e}"),
                ..Outcome::default()
            }
        }
    };
    l.close();
    let (v, err) = read_verify(&mut s, a).await;
    let failed = err.is_some();
    let mut o = Outcome::verdict(&v, a.bytes, err);
    if failed {
        return o;
    }
    if let Err(e) = s.write_all(&v.crc().to_le_bytes()).await {
        o.ok = false;
        o.reason = format!("writing the ack: {e}");
        return o;
    }
    // KCP has no close packet: stay until the source answers the ack (or the
    // linger runs out) so the ack is surely delivered.
    let mut bye = [0u8; 1];
    let got_bye = matches!(
        tokio::time::timeout(SINK_LINGER, s.read(&mut bye)).await,
        Ok(Ok(1)) if bye[0] == BYE
    );
    o.extra = format!("{} bye={got_bye}", o.extra).trim().to_string();
    o
}

async fn echo_client(a: &Args, cfg: &Config) -> Outcome {
    let s = match dial(a, cfg).await {
        Ok(s) => s,
        Err(e) => return Outcome::setup(e),
    };
    let t0 = Instant::now();
    let (mut r, mut w) = s.into_split();
    let args = a.clone();
    let writer = tokio::spawn(async move {
        let res = write_all(&mut w, &args).await;
        (res, w)
    });
    let (v, mut err) = read_verify(&mut r, a).await;
    let elapsed = t0.elapsed();
    if err.is_none() {
        match writer.await {
            Ok((Err(e), _)) => err = Some(e),
            Ok((Ok(_), w)) => drop(w),
            Err(e) => err = Some(format!("writer task: {e}")),
        }
    }
    let mut o = Outcome::verdict(&v, a.bytes, err);
    o.extra = format!("{} elapsed_us={}", o.extra, elapsed.as_micros())
        .trim()
        .to_string();
    o
}

async fn source(a: &Args, cfg: &Config) -> Outcome {
    let mut s = match dial(a, cfg).await {
        Ok(s) => s,
        Err(e) => return Outcome::setup(e),
    };
    let mut o = Outcome {
        bytes: a.bytes,
        ..Outcome::default()
    };
    let t0 = Instant::now();
    match write_all(&mut s, a).await {
        Ok(crc) => o.crc = crc,
        Err(e) => {
            o.reason = e;
            return o;
        }
    }
    let mut ack = [0u8; 4];
    if let Err(e) = s.read_exact(&mut ack).await {
        o.reason = format!("waiting for the sink's ack: {e}");
        return o;
    }
    let peer = u32::from_le_bytes(ack);
    // elapsed_us: first write to the sink's ack (interop/bench's throughput).
    o.extra = format!(
        "peer_crc32={peer:08x} elapsed_us={}",
        t0.elapsed().as_micros()
    );
    o.ok = peer == o.crc;
    if !o.ok {
        o.reason = "sink's CRC-32 differs from the bytes sent".into();
    }
    // Answer the ack and close, as kcp-go's source does, without waiting for
    // the bye's acknowledgement (a sink that exits right after reading the
    // bye may never send one; waiting up to 1 s for it here slowed the
    // matrix). A short pause lets the driver task put the bye on the wire
    // before the runtime stops; should it be lost, the sink just lingers.
    if s.write_all(&[BYE]).await.is_ok() {
        let _ = s.close();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    o
}

/// Request/response latency: one --chunk message at a time, each waiting for
/// its echo.
async fn rr_client(a: &Args, cfg: &Config) -> Outcome {
    let mut s = match dial(a, cfg).await {
        Ok(s) => s,
        Err(e) => return Outcome::setup(e),
    };
    let mut msg = vec![0u8; a.chunk];
    Payload::new(a.seed).fill(&mut msg);
    let mut back = vec![0u8; a.chunk];
    let mut lat = Vec::with_capacity(a.count);
    let mut crc = crc32fast::Hasher::new();
    let mut o = Outcome::default();
    for i in 0..a.count {
        let t0 = Instant::now();
        if let Err(e) = s.write_all(&msg).await {
            o.reason = format!("request {i}: {e}");
            return o;
        }
        if let Err(e) = s.read_exact(&mut back).await {
            o.reason = format!("response {i}: {e}");
            return o;
        }
        lat.push(t0.elapsed());
        crc.update(&back);
        o.bytes += back.len() as u64;
        if back != msg {
            o.reason = format!("response {i} differs from the request");
            return o;
        }
    }
    o.crc = crc.finalize();
    o.ok = true;
    lat.sort_unstable();
    let pct = |q: usize| {
        let i = (lat.len() * q).div_ceil(100);
        lat.get(i.saturating_sub(1).min(lat.len().saturating_sub(1)))
            .map_or(0, |d| d.as_micros())
    };
    // The slowest 5% in full, so the driver can pool runs: a p99 of one
    // run of 1000 lossy requests is its 10th-slowest, too few to compare.
    let tail: Vec<String> = lat
        .iter()
        .rev()
        .take(lat.len().div_ceil(20))
        .map(|d| d.as_micros().to_string())
        .collect();
    o.extra = format!(
        "count={} p50_us={} p99_us={} max_us={} tail_us={}",
        lat.len(),
        pct(50),
        pct(99),
        lat.last().map_or(0, |d| d.as_micros()),
        tail.join(",")
    );
    o
}

/// Opens --count sessions, echoes one message on each, then idles with all
/// of them open until stdin closes (the driver measures the server meanwhile).
async fn idle_client(a: &Args, cfg: &Config, deadline: Instant) -> Outcome {
    let mut msg = vec![0u8; a.chunk];
    Payload::new(a.seed).fill(&mut msg);
    let msg = Arc::new(msg);
    let mut sessions = Vec::with_capacity(a.count);
    let mut set = tokio::task::JoinSet::new();
    let mut o = Outcome::default();
    let mut started = 0;
    while started < a.count || !set.is_empty() {
        while started < a.count && set.len() < 64 {
            let (a, cfg, msg) = (a.clone(), cfg.clone(), msg.clone());
            set.spawn(async move {
                let mut s = dial(&a, &cfg).await?;
                let mut back = vec![0u8; msg.len()];
                s.write_all(&msg).await.map_err(|e| e.to_string())?;
                s.read_exact(&mut back).await.map_err(|e| e.to_string())?;
                if back != *msg {
                    return Err("echo differs".to_string());
                }
                Ok(s)
            });
            started += 1;
        }
        match set.join_next().await {
            Some(Ok(Ok(s))) => sessions.push(s),
            Some(Ok(Err(e))) => {
                o.reason = e;
                return o;
            }
            Some(Err(e)) => {
                o.reason = e.to_string();
                return o;
            }
            None => {}
        }
    }
    o.bytes = (sessions.len() * msg.len()) as u64;
    o.extra = format!("sessions={}", sessions.len());
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "READY {}", sessions.len());
        let _ = out.flush();
    }
    let stdin_closed = async {
        let mut stdin = tokio::io::stdin();
        let mut sink = vec![0u8; 4096];
        while let Ok(n) = stdin.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::select! {
        _ = stdin_closed => o.ok = true,
        _ = tokio::time::sleep_until(deadline.into()) => o.reason = "timeout while idling".into(),
    }
    drop(sessions);
    o
}

// ---- close semantics (interop/close_test.go) --------------------------------
//
// A session that writes and then closes at once must still deliver what it
// wrote, as with kcp-go v5.6.72 (v5.7.6 drops what is still queued). The
// writers alternate between `close()` (even sessions) and dropping the
// session (odd ones), the two ways a Rust user ends a session.

/// Ends session `i` of a writer role right after its last write.
fn end_session(s: Session, i: usize) {
    if i.is_multiple_of(2) {
        let _ = s.close();
    }
    drop(s);
}

/// Keeps the process (and so the closed sessions' driver tasks) alive after
/// a writer's last close until stdin closes or the deadline passes: what is
/// tested is close, not process exit.
async fn linger(deadline: Instant) -> &'static str {
    let stdin_closed = async {
        let mut stdin = tokio::io::stdin();
        let mut sink = vec![0u8; 4096];
        while let Ok(n) = stdin.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::select! {
        _ = stdin_closed => "stdin-closed",
        _ = tokio::time::sleep_until(deadline.into()) => "deadline",
    }
}

/// Accepts sessions until --count of them have sent their hello byte; on
/// each it then writes --bytes of the payload and ends it at once. Sessions
/// run concurrently; one that sends no hello within --session-timeout is
/// dropped and not counted (a late ACK from a client session that already
/// ended opens such a session, §6.2, as in kcp-go).
async fn write_close_server(a: &Args, cfg: &Config, deadline: Instant) -> Outcome {
    let l = match listen(a, cfg).await {
        Ok(l) => l,
        Err(e) => return Outcome::setup(e),
    };
    let mut set = tokio::task::JoinSet::new();
    let mut o = Outcome {
        ok: true,
        ..Outcome::default()
    };
    let (mut served, mut ghosts, mut accepted) = (0usize, 0usize, 0usize);
    while served < a.count {
        tokio::select! {
            r = l.accept() => match r {
                Ok(mut s) => {
                    let (a, k) = (a.clone(), accepted);
                    accepted += 1;
                    set.spawn(async move {
                        let mut hello = [0u8; 1];
                        match tokio::time::timeout(a.session_timeout, s.read_exact(&mut hello)).await {
                            Ok(Ok(_)) => {}
                            _ => return None,
                        }
                        let r = write_all(&mut s, &a).await;
                        // Right after the last write, alternating close()
                        // and drop.
                        end_session(s, k);
                        Some(r)
                    });
                }
                Err(e) => {
                    o.ok = false;
                    o.reason = format!("accept: {e}");
                    break;
                }
            },
            Some(j) = set.join_next(), if !set.is_empty() => match j {
                Ok(Some(r)) => {
                    match r {
                        Ok(crc) => o.crc = crc,
                        Err(e) if o.ok => {
                            o.ok = false;
                            o.reason = format!("session {served}: {e}");
                        }
                        Err(_) => {}
                    }
                    o.bytes += a.bytes;
                    served += 1;
                }
                Ok(None) => ghosts += 1,
                Err(e) => {
                    o.ok = false;
                    o.reason = format!("session task: {e}");
                }
            },
            _ = tokio::time::sleep_until(deadline.into()) => {
                o.ok = false;
                o.reason = format!("only {served} of {} sessions sent their hello by the deadline", a.count);
                break;
            }
        }
    }
    o.extra = format!(
        "sessions={served} ghosts={ghosts} stop={}",
        linger(deadline).await
    );
    o
}

/// Dials --count sessions one after another; each writes --bytes of the
/// payload and closes at once.
async fn write_close_client(a: &Args, cfg: &Config, deadline: Instant) -> Outcome {
    let mut o = Outcome::default();
    for i in 0..a.count {
        let mut s = match dial(a, cfg).await {
            Ok(s) => s,
            Err(e) => return Outcome::setup(e),
        };
        match write_all(&mut s, a).await {
            Ok(crc) => o.crc = crc,
            Err(e) => {
                o.reason = format!("session {i}: {e}");
                return o;
            }
        }
        end_session(s, i);
        o.bytes += a.bytes;
    }
    o.ok = true;
    o.extra = format!("sessions={} stop={}", a.count, linger(deadline).await);
    o
}

/// A reader role's count of sessions that delivered their whole payload.
#[derive(Default)]
struct Tally {
    complete: usize,
    bytes: u64,
    crc: u32,
    first_failure: Option<String>,
}

impl Tally {
    fn add(&mut self, i: usize, want: u64, r: Result<Verifier, String>) {
        match r {
            Ok(v) if v.mismatch.is_none() && v.got == want => {
                self.complete += 1;
                self.bytes += v.got;
                self.crc = v.crc();
            }
            Ok(v) => {
                let e = format!("session {i}: payload mismatch at {:?}", v.mismatch);
                self.first_failure.get_or_insert(e);
            }
            Err(e) => {
                self.first_failure
                    .get_or_insert(format!("session {i}: {e}"));
            }
        }
    }

    fn outcome(self, count: usize) -> Outcome {
        let ok = self.complete == count;
        let mut reason = String::new();
        if !ok {
            reason = format!(
                "{} of {count} sessions delivered their payload",
                self.complete
            );
            if let Some(f) = self.first_failure {
                reason.push_str("; first failure: ");
                reason.push_str(&f);
            }
        }
        Outcome {
            bytes: self.bytes,
            crc: self.crc,
            ok,
            extra: format!("sessions={} of={count}", self.complete),
            reason,
            setup: false,
        }
    }
}

/// Reads --bytes from one session within --session-timeout.
async fn read_one(s: &mut Session, a: &Args) -> Result<Verifier, String> {
    match tokio::time::timeout(a.session_timeout, read_verify(s, a)).await {
        Ok((v, None)) => Ok(v),
        Ok((_, Some(e))) => Err(e),
        Err(_) => Err(format!("no payload within {:?}", a.session_timeout)),
    }
}

/// Dials --count sessions one after another; each sends the hello byte and
/// must then receive --bytes of the payload. Failed sessions are counted,
/// not fatal.
async fn read_client(a: &Args, cfg: &Config, deadline: Instant) -> Outcome {
    let mut t = Tally::default();
    for i in 0..a.count {
        let mut s = match dial(a, cfg).await {
            Ok(s) => s,
            Err(e) => return Outcome::setup(e),
        };
        let r = match s.write_all(&[BYE]).await {
            Ok(()) => read_one(&mut s, a).await,
            Err(e) => Err(format!("hello: {e}")),
        };
        t.add(i, a.bytes, r);
        if Instant::now() >= deadline {
            break;
        }
    }
    t.outcome(a.count)
}

/// Accepts sessions until --count of them have ended; each must deliver
/// --bytes of the payload.
async fn read_server(a: &Args, cfg: &Config, deadline: Instant) -> Outcome {
    let l = match listen(a, cfg).await {
        Ok(l) => l,
        Err(e) => return Outcome::setup(e),
    };
    let mut set = tokio::task::JoinSet::new();
    let mut accepted = 0;
    let mut t = Tally::default();
    let mut ended = 0;
    while ended < a.count {
        tokio::select! {
            r = l.accept(), if accepted < a.count => match r {
                Ok(mut s) => {
                    let (a2, i) = (a.clone(), accepted);
                    accepted += 1;
                    set.spawn(async move { (i, read_one(&mut s, &a2).await) });
                }
                Err(e) => {
                    t.first_failure.get_or_insert(format!("accept: {e}"));
                    break;
                }
            },
            Some(j) = set.join_next(), if !set.is_empty() => {
                ended += 1;
                match j {
                    Ok((i, r)) => t.add(i, a.bytes, r),
                    Err(e) => t.add(usize::MAX, a.bytes, Err(e.to_string())),
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                t.first_failure.get_or_insert(format!("{ended} sessions ended by the deadline"));
                break;
            }
        }
    }
    t.outcome(a.count)
}

/// The message-size rule of `send_msg` against an echo server: echoes a
/// small message (so the peer's window is known), offers one `send_msg` of
/// --bytes (expected to be refused when longer than the peer's receive
/// window; RESULT says `refused=true|false max=N`), then echoes one
/// `send_msg` of --chunk bytes, which must come back intact. With the
/// oversized message accepted, a kcp-go peer would never echo again.
async fn msg_client(a: &Args, cfg: &Config) -> Outcome {
    let mut s = match dial(a, cfg).await {
        Ok(s) => s,
        Err(e) => return Outcome::setup(e),
    };
    let mut o = Outcome::default();
    let mut crc = crc32fast::Hasher::new();
    let mut refused = String::from("refused=false");
    for (i, len) in [(0, 100usize), (1, a.bytes as usize), (2, a.chunk)] {
        let mut msg = vec![0u8; len.max(1)];
        Payload::new(a.seed + i).fill(&mut msg);
        match s.send_msg(&msg).await {
            Ok(()) => {}
            Err(kcp_session::Error::MessageTooLarge { fragments, max, .. }) if i == 1 => {
                refused = format!("refused=true fragments={fragments} max={max}");
                continue;
            }
            Err(e) => {
                o.reason = format!("send_msg of {len} bytes: {e}");
                o.extra = refused;
                return o;
            }
        }
        let mut back = vec![0u8; msg.len()];
        if let Err(e) = s.read_exact(&mut back).await {
            o.reason = format!("echo of the {len}-byte message: {e}");
            o.extra = refused;
            return o;
        }
        if back != msg {
            o.reason = format!("echo of the {len}-byte message differs");
            o.extra = refused;
            return o;
        }
        crc.update(&back);
        o.bytes += back.len() as u64;
    }
    o.crc = crc.finalize();
    o.ok = true;
    o.extra = refused;
    o
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let a = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("peer: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if a.api == "blocking" {
        if let Some(code) = blocking_roles::run(&a) {
            return code;
        }
        eprintln!(
            "peer: --api blocking does not cover --role {}; running it on tokio",
            a.role
        );
    }
    let mut builder = if a.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(a.threads);
        b
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("peer: runtime: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let outcome = rt.block_on(async {
        let cfg = match build_config(&a) {
            Ok(c) => c,
            Err(e) => return Outcome::setup(e),
        };
        let deadline = Instant::now() + a.timeout;
        let work = async {
            match a.role.as_str() {
                "echo-server" => echo_server(&a, &cfg, deadline).await,
                "sink" => sink(&a, &cfg).await,
                "echo-client" => echo_client(&a, &cfg).await,
                "rr-client" => rr_client(&a, &cfg).await,
                "idle-client" => idle_client(&a, &cfg, deadline).await,
                "write-close-server" => write_close_server(&a, &cfg, deadline).await,
                "write-close-client" => write_close_client(&a, &cfg, deadline).await,
                "read-server" => read_server(&a, &cfg, deadline).await,
                "read-client" => read_client(&a, &cfg, deadline).await,
                "msg-client" => msg_client(&a, &cfg).await,
                _ => source(&a, &cfg).await,
            }
        };
        // The watchdog: every role ends by the deadline (echo-server handles
        // its own timeout to report what it echoed).
        match tokio::time::timeout(a.timeout + Duration::from_millis(500), work).await {
            Ok(o) => o,
            Err(_) => Outcome {
                reason: format!("timeout after {:?}", a.timeout),
                ..Outcome::default()
            },
        }
    });
    report(&a.role, &outcome);
    rt.shutdown_timeout(Duration::from_millis(100));
    if outcome.setup {
        ExitCode::from(EXIT_USAGE)
    } else if outcome.ok {
        ExitCode::from(EXIT_OK)
    } else {
        ExitCode::from(EXIT_FAIL)
    }
}

/// The matrix roles on `kcp_session::blocking`: the same contract (output
/// lines, exit status) as the tokio roles, on std threads.
mod blocking_roles {
    use std::io::{ErrorKind, Read, Write};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{mpsc, Mutex};
    use std::time::{Duration, Instant};

    use kcp_session::blocking::{Listener, Session};
    use kcp_session::Config;

    use super::*;

    /// Runs the role if it has a blocking form; `None` if it has not.
    pub(super) fn run(a: &Args) -> Option<ExitCode> {
        let role = a.role.as_str();
        if !matches!(
            role,
            "echo-server"
                | "sink"
                | "echo-client"
                | "source"
                | "write-close-server"
                | "write-close-client"
        ) {
            return None;
        }
        let outcome = match build_config(a) {
            Err(e) => Outcome::setup(e),
            Ok(cfg) => {
                let deadline = Instant::now() + a.timeout;
                match role {
                    "echo-server" => echo_server(a, &cfg, deadline),
                    "sink" => sink(a, &cfg, deadline),
                    "echo-client" => echo_client(a, &cfg),
                    "write-close-server" => write_close_server(a, &cfg, deadline),
                    "write-close-client" => write_close_client(a, &cfg, deadline),
                    _ => source(a, &cfg),
                }
            }
        };
        report(role, &outcome);
        Some(ExitCode::from(if outcome.setup {
            EXIT_USAGE
        } else if outcome.ok {
            EXIT_OK
        } else {
            EXIT_FAIL
        }))
    }

    fn listen(a: &Args, cfg: &Config) -> Result<Listener, String> {
        let l = Listener::listen(a.addr.as_str(), cfg)
            .map_err(|e| format!("listen {}: {e}", a.addr))?;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "LISTENING {}", l.local_addr());
        let _ = out.flush();
        Ok(l)
    }

    fn dial(a: &Args, cfg: &Config) -> Result<Session, String> {
        let s = Session::dial(a.addr.as_str(), cfg).map_err(|e| format!("dial {}: {e}", a.addr))?;
        s.set_read_timeout(Some(a.timeout));
        s.set_write_timeout(Some(a.timeout));
        Ok(s)
    }

    fn write_all(mut s: &Session, a: &Args) -> Result<u32, String> {
        let mut gen = Payload::new(a.seed);
        let mut buf = vec![0u8; a.chunk];
        let mut crc = crc32fast::Hasher::new();
        let mut left = a.bytes;
        while left > 0 {
            let n = (left.min(buf.len() as u64)) as usize;
            gen.fill(&mut buf[..n]);
            crc.update(&buf[..n]);
            s.write_all(&buf[..n])
                .map_err(|e| format!("write at offset {}: {e}", a.bytes - left))?;
            left -= n as u64;
        }
        Ok(crc.finalize())
    }

    fn read_verify(mut s: &Session, a: &Args) -> (Verifier, Option<String>) {
        let mut v = Verifier::new(a.seed);
        let mut buf = vec![0u8; 1 << 16];
        while v.got < a.bytes {
            let want = (buf.len() as u64).min(a.bytes - v.got) as usize;
            match s.read(&mut buf[..want]) {
                Ok(0) => {
                    let e = format!("read after {} of {} bytes: end of stream", v.got, a.bytes);
                    return (v, Some(e));
                }
                Ok(n) => v.add(&buf[..n]),
                Err(e) => {
                    let e = format!("read after {} of {} bytes: {e}", v.got, a.bytes);
                    return (v, Some(e));
                }
            }
        }
        (v, None)
    }

    /// Sends () once stdin reaches its end (the harness's stop signal).
    fn stdin_closed() -> mpsc::Receiver<()> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sink = [0u8; 4096];
            let mut stdin = std::io::stdin();
            while let Ok(1..) = stdin.read(&mut sink) {}
            let _ = tx.send(());
        });
        rx
    }

    fn echo_server(a: &Args, cfg: &Config, deadline: Instant) -> Outcome {
        let l = match listen(a, cfg) {
            Ok(l) => l,
            Err(e) => return Outcome::setup(e),
        };
        let stop = AtomicBool::new(false);
        let crc = Mutex::new(crc32fast::Hasher::new());
        let total = AtomicU64::new(0);
        let sessions = AtomicU64::new(0);
        let tick = Duration::from_millis(50);
        let (why, ok) = std::thread::scope(|scope| {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let s = match l.accept_timeout(tick) {
                        Ok(s) => s,
                        Err(kcp_session::Error::Timeout) => continue,
                        Err(_) => break,
                    };
                    sessions.fetch_add(1, Ordering::Relaxed);
                    let (stop, crc, total) = (&stop, &crc, &total);
                    scope.spawn(move || {
                        // Wake now and then to notice the stop.
                        s.set_read_timeout(Some(tick));
                        let mut buf = vec![0u8; 4096];
                        loop {
                            let n = match (&s).read(&mut buf) {
                                Ok(n) => n,
                                Err(e) if e.kind() == ErrorKind::TimedOut => {
                                    if stop.load(Ordering::Relaxed) {
                                        break;
                                    }
                                    continue;
                                }
                                Err(_) => break,
                            };
                            if n == buf.len() && buf.len() < 1 << 16 {
                                buf.resize(1 << 16, 0);
                            }
                            if let Ok(mut c) = crc.lock() {
                                c.update(&buf[..n]);
                            }
                            total.fetch_add(n as u64, Ordering::Relaxed);
                            if (&s).write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    });
                }
            });
            let closed = stdin_closed();
            let r = match closed.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => ("stdin-closed", true),
                Err(mpsc::RecvTimeoutError::Timeout) => ("timeout", false),
            };
            stop.store(true, Ordering::Relaxed);
            r
        });
        let crc = crc.lock().map(|c| c.clone().finalize()).unwrap_or(0);
        Outcome {
            bytes: total.load(Ordering::Relaxed),
            crc,
            ok,
            extra: format!(
                "sessions={} stop={why} api=blocking",
                sessions.load(Ordering::Relaxed)
            ),
            reason: if ok {
                String::new()
            } else {
                format!("timeout after {:?}", a.timeout)
            },
            setup: false,
        }
    }

    fn sink(a: &Args, cfg: &Config, deadline: Instant) -> Outcome {
        let l = match listen(a, cfg) {
            Ok(l) => l,
            Err(e) => return Outcome::setup(e),
        };
        let s = match l.accept_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(s) => s,
            Err(e) => {
                return Outcome {
                    reason: format!("accept: {e}"),
                    ..Outcome::default()
                }
            }
        };
        l.close();
        s.set_read_timeout(Some(deadline.saturating_duration_since(Instant::now())));
        let (v, err) = read_verify(&s, a);
        let failed = err.is_some();
        let mut o = Outcome::verdict(&v, a.bytes, err);
        if failed {
            return o;
        }
        if let Err(e) = (&s).write_all(&v.crc().to_le_bytes()) {
            o.ok = false;
            o.reason = format!("writing the ack: {e}");
            return o;
        }
        // Stay until the source answers the ack (see the tokio sink).
        s.set_read_timeout(Some(SINK_LINGER));
        let mut bye = [0u8; 1];
        let got_bye = matches!((&s).read(&mut bye), Ok(1) if bye[0] == BYE);
        o.extra = format!("{} bye={got_bye} api=blocking", o.extra)
            .trim()
            .to_string();
        o
    }

    fn echo_client(a: &Args, cfg: &Config) -> Outcome {
        let s = match dial(a, cfg) {
            Ok(s) => s,
            Err(e) => return Outcome::setup(e),
        };
        let t0 = Instant::now();
        let (v, err, elapsed) = std::thread::scope(|scope| {
            let writer = scope.spawn(|| write_all(&s, a));
            let (v, mut err) = read_verify(&s, a);
            let elapsed = t0.elapsed();
            if err.is_some() {
                // Unblock the writer.
                let _ = s.close();
            }
            match writer.join() {
                Ok(Err(e)) if err.is_none() => err = Some(e),
                Err(_) if err.is_none() => err = Some("writer thread panicked".into()),
                _ => {}
            }
            (v, err, elapsed)
        });
        let mut o = Outcome::verdict(&v, a.bytes, err);
        o.extra = format!(
            "{} elapsed_us={} api=blocking",
            o.extra,
            elapsed.as_micros()
        )
        .trim()
        .to_string();
        o
    }

    /// Ends session `i` right after its last write: `close()` for even
    /// sessions, then drop (which joins its thread).
    fn end_session(s: Session, i: usize) {
        if i.is_multiple_of(2) {
            let _ = s.close();
        }
        drop(s);
    }

    /// After the last close, stays until stdin closes or the deadline.
    fn linger(deadline: Instant) -> &'static str {
        match stdin_closed().recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Err(mpsc::RecvTimeoutError::Timeout) => "deadline",
            _ => "stdin-closed",
        }
    }

    /// See the tokio `write_close_server`: each session waits for the
    /// hello byte, gets --bytes and is ended at once.
    fn write_close_server(a: &Args, cfg: &Config, deadline: Instant) -> Outcome {
        let l = match listen(a, cfg) {
            Ok(l) => l,
            Err(e) => return Outcome::setup(e),
        };
        let mut o = Outcome {
            ok: true,
            ..Outcome::default()
        };
        let (tx, rx) = mpsc::channel::<Option<Result<u32, String>>>();
        let (mut served, mut ghosts, mut accepted) = (0usize, 0usize, 0usize);
        std::thread::scope(|scope| {
            while served < a.count {
                while let Ok(r) = rx.try_recv() {
                    match r {
                        Some(r) => {
                            match r {
                                Ok(crc) => o.crc = crc,
                                Err(e) if o.ok => {
                                    o.ok = false;
                                    o.reason = format!("session {served}: {e}");
                                }
                                Err(_) => {}
                            }
                            o.bytes += a.bytes;
                            served += 1;
                        }
                        None => ghosts += 1,
                    }
                }
                if served >= a.count {
                    break;
                }
                if Instant::now() >= deadline {
                    o.ok = false;
                    o.reason = format!(
                        "only {served} of {} sessions sent their hello by the deadline",
                        a.count
                    );
                    break;
                }
                match l.accept_timeout(Duration::from_millis(20)) {
                    Ok(s) => {
                        let (tx, k) = (tx.clone(), accepted);
                        accepted += 1;
                        scope.spawn(move || {
                            s.set_read_timeout(Some(a.session_timeout));
                            let mut hello = [0u8; 1];
                            if (&s).read_exact(&mut hello).is_err() {
                                let _ = tx.send(None);
                                return;
                            }
                            let r = write_all(&s, a);
                            end_session(s, k);
                            let _ = tx.send(Some(r));
                        });
                    }
                    Err(kcp_session::Error::Timeout) => {}
                    Err(e) => {
                        o.ok = false;
                        o.reason = format!("accept: {e}");
                        break;
                    }
                }
            }
        });
        o.extra = format!(
            "sessions={served} ghosts={ghosts} stop={} api=blocking",
            linger(deadline)
        );
        o
    }

    /// Dials --count sessions one after another; each writes --bytes and is
    /// ended at once.
    fn write_close_client(a: &Args, cfg: &Config, deadline: Instant) -> Outcome {
        let mut o = Outcome::default();
        for i in 0..a.count {
            let s = match dial(a, cfg) {
                Ok(s) => s,
                Err(e) => return Outcome::setup(e),
            };
            match write_all(&s, a) {
                Ok(crc) => o.crc = crc,
                Err(e) => {
                    o.reason = format!("session {i}: {e}");
                    return o;
                }
            }
            end_session(s, i);
            o.bytes += a.bytes;
        }
        o.ok = true;
        o.extra = format!(
            "sessions={} stop={} api=blocking",
            a.count,
            linger(deadline)
        );
        o
    }

    fn source(a: &Args, cfg: &Config) -> Outcome {
        let s = match dial(a, cfg) {
            Ok(s) => s,
            Err(e) => return Outcome::setup(e),
        };
        let mut o = Outcome {
            bytes: a.bytes,
            ..Outcome::default()
        };
        let t0 = Instant::now();
        match write_all(&s, a) {
            Ok(crc) => o.crc = crc,
            Err(e) => {
                o.reason = e;
                return o;
            }
        }
        let mut ack = [0u8; 4];
        if let Err(e) = (&s).read_exact(&mut ack) {
            o.reason = format!("waiting for the sink's ack: {e}");
            return o;
        }
        let peer = u32::from_le_bytes(ack);
        o.extra = format!(
            "peer_crc32={peer:08x} elapsed_us={} api=blocking",
            t0.elapsed().as_micros()
        );
        o.ok = peer == o.crc;
        if !o.ok {
            o.reason = "sink's CRC-32 differs from the bytes sent".into();
        }
        // Answer the ack and close: close sends the bye before it returns.
        if (&s).write_all(&[BYE]).is_ok() {
            let _ = s.close();
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_splitmix64_little_endian() {
        // SplitMix64 from 0: first output 0xe220a8397b1dcdaf.
        let mut p = Payload::new(0);
        let mut b = [0u8; 10];
        p.fill(&mut b[..3]);
        p.fill(&mut b[3..]);
        assert_eq!(&b[..8], &0xe220_a839_7b1d_cdafu64.to_le_bytes());
        let mut q = Payload::new(0);
        let mut c = [0u8; 10];
        q.fill(&mut c);
        assert_eq!(b, c);
    }

    #[test]
    fn flags_parse_like_go() {
        let v: Vec<String> = "--role sink --addr 127.0.0.1:0 --message --mtu=1400 --timeout 2.5"
            .split(' ')
            .map(String::from)
            .collect();
        let a = parse_args(&v).unwrap();
        assert_eq!(a.stream, StreamMode::Message);
        assert_eq!(a.mtu, 1400);
        assert_eq!(a.timeout, Duration::from_millis(2500));
        assert!(parse_args(&["--role".into(), "x".into()]).is_err());
    }
}
