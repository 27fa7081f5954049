//! `kcptun-rs`: a kcptun-compatible TCP tunnel (client and server) built on
//! kcp-session's `Session`/`Listener`, the Snappy framing of `comp` and the
//! smux of `smux` (§7).
//!
//! ```text
//! kcptun-rs client -l :12948 -r server:29900 --key secret --crypt aes --mode fast3
//! kcptun-rs server -l :29900 -t 127.0.0.1:22   --key secret --crypt aes --mode fast3
//! ```
//!
//! Invoked through a name ending in `client` or `server` (a symlink such as
//! `kcptun-client`), the role comes from the name and no subcommand is needed.
//! Flags follow kcptun (Go `flag` syntax: `-flag v`, `--flag v`, `--flag=v`;
//! booleans take no value or `=true/false`); `-c file.json` reads kcptun's
//! JSON config, whose values override the command line as in kcptun.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kcp_session::comp::CompStream;
use kcp_session::config::{Config, Congestion, Mode, NoDelay, StreamMode, MAX_PACKET_SIZE};
use kcp_session::listener::Listener;
use kcp_session::session::Session;
use kcp_session::smux;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Copy buffer per direction per stream.
const COPY_BUF: usize = 32 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Client,
    Server,
}

/// Every option either side knows, with kcptun's names (§7.4 defaults).
#[derive(Debug, Clone)]
struct Opts {
    role: Role,
    localaddr: String,
    remoteaddr: String,
    listen: String,
    target: String,
    key: String,
    crypt: String,
    mode: String,
    conn: u64,
    autoexpire: u64,
    scavengettl: u64,
    mtu: u64,
    sndwnd: u64,
    rcvwnd: u64,
    datashard: u64,
    parityshard: u64,
    dscp: u64,
    nocomp: bool,
    acknodelay: bool,
    nodelay: u64,
    interval: u64,
    resend: u64,
    nc: u64,
    sockbuf: u64,
    smuxver: u64,
    smuxbuf: u64,
    streambuf: u64,
    framesize: u64,
    keepalive: u64,
    ratelimit: u64,
    closewait: u64,
    log: String,
    quiet: bool,
    tcp: bool,
}

impl Opts {
    fn defaults(role: Role) -> Opts {
        let (snd, rcv) = match role {
            Role::Client => (128, 512),
            Role::Server => (1024, 1024),
        };
        Opts {
            role,
            localaddr: ":12948".into(),
            remoteaddr: "vps:29900".into(),
            listen: ":29900".into(),
            target: "127.0.0.1:12948".into(),
            key: "it's a secrect".into(),
            crypt: "aes".into(),
            mode: "fast".into(),
            conn: 1,
            autoexpire: 0,
            scavengettl: 600,
            mtu: 1350,
            sndwnd: snd,
            rcvwnd: rcv,
            datashard: 10,
            parityshard: 3,
            dscp: 0,
            nocomp: false,
            acknodelay: false,
            nodelay: 0,
            interval: 50,
            resend: 0,
            nc: 0,
            sockbuf: 4_194_304,
            smuxver: 2,
            smuxbuf: 4_194_304,
            streambuf: 2_097_152,
            framesize: 8192,
            keepalive: 10,
            ratelimit: 0,
            closewait: match role {
                Role::Client => 0,
                Role::Server => 30,
            },
            log: String::new(),
            quiet: false,
            tcp: false,
        }
    }
}

/// What a flag stores into.
enum Slot<'a> {
    Str(&'a mut String),
    Num(&'a mut u64),
    Bool(&'a mut bool),
}

/// Looks a flag (or JSON key) up. `None`: not an option of this role.
fn slot<'a>(o: &'a mut Opts, name: &str) -> Option<Slot<'a>> {
    let client = o.role == Role::Client;
    Some(match name {
        "localaddr" | "l" if client => Slot::Str(&mut o.localaddr),
        "remoteaddr" | "r" if client => Slot::Str(&mut o.remoteaddr),
        "listen" | "l" if !client => Slot::Str(&mut o.listen),
        "target" | "t" if !client => Slot::Str(&mut o.target),
        "conn" if client => Slot::Num(&mut o.conn),
        "autoexpire" if client => Slot::Num(&mut o.autoexpire),
        "scavengettl" if client => Slot::Num(&mut o.scavengettl),
        "key" => Slot::Str(&mut o.key),
        "crypt" => Slot::Str(&mut o.crypt),
        "mode" => Slot::Str(&mut o.mode),
        "mtu" => Slot::Num(&mut o.mtu),
        "sndwnd" => Slot::Num(&mut o.sndwnd),
        "rcvwnd" => Slot::Num(&mut o.rcvwnd),
        "datashard" | "ds" => Slot::Num(&mut o.datashard),
        "parityshard" | "ps" => Slot::Num(&mut o.parityshard),
        "dscp" => Slot::Num(&mut o.dscp),
        "nocomp" => Slot::Bool(&mut o.nocomp),
        "acknodelay" => Slot::Bool(&mut o.acknodelay),
        "nodelay" => Slot::Num(&mut o.nodelay),
        "interval" => Slot::Num(&mut o.interval),
        "resend" => Slot::Num(&mut o.resend),
        "nc" => Slot::Num(&mut o.nc),
        "sockbuf" => Slot::Num(&mut o.sockbuf),
        "smuxver" => Slot::Num(&mut o.smuxver),
        "smuxbuf" => Slot::Num(&mut o.smuxbuf),
        "streambuf" => Slot::Num(&mut o.streambuf),
        "framesize" => Slot::Num(&mut o.framesize),
        "keepalive" => Slot::Num(&mut o.keepalive),
        "ratelimit" => Slot::Num(&mut o.ratelimit),
        "closewait" => Slot::Num(&mut o.closewait),
        "log" => Slot::Str(&mut o.log),
        "quiet" => Slot::Bool(&mut o.quiet),
        "tcp" => Slot::Bool(&mut o.tcp),
        _ => return None,
    })
}

/// kcptun options we accept for compatibility but that have no effect here.
const IGNORED: &[&str] = &["snmplog", "snmpperiod", "pprof", "QPP", "QPPCount"];

fn usage(role: Role) -> String {
    let mut s = String::new();
    let (name, addrs) = match role {
        Role::Client => (
            "client",
            "  -l, --localaddr ADDR   local listen address (default \":12948\")\n  \
             -r, --remoteaddr ADDR  kcp server address (default \"vps:29900\")\n  \
             --conn N               KCP sessions to the server (default 1)\n",
        ),
        Role::Server => (
            "server",
            "  -l, --listen ADDR      kcp server listen address (default \":29900\")\n  \
             -t, --target ADDR      target TCP address (default \"127.0.0.1:12948\")\n",
        ),
    };
    let d = Opts::defaults(role);
    let _ = write!(
        s,
        "kcptun-rs {VERSION} - kcptun-compatible {name}\n\nUSAGE: kcptun-rs {name} [options]\n\n\
         {addrs}  --key KEY              pre-shared secret (default \"it's a secrect\")\n  \
         --crypt NAME           aes, aes-128, aes-192, aes-128-gcm, salsa20, blowfish, twofish,\n                         \
         cast5, 3des, tea, xtea, xor, sm4, none, null (default \"aes\")\n  \
         --mode NAME            fast3, fast2, fast, normal, manual (default \"fast\")\n  \
         --nodelay/--interval/--resend/--nc  KCP NoDelay for --mode manual (0/50/0/0)\n  \
         --mtu N                (default 1350)\n  \
         --sndwnd N / --rcvwnd N  windows in packets (default {}/{})\n  \
         --datashard, --ds N / --parityshard, --ps N  Reed-Solomon FEC (default 10/3)\n  \
         --dscp N               DSCP (6 bit) (default 0)\n  \
         --nocomp               disable Snappy compression\n  \
         --acknodelay           flush ACKs immediately\n  \
         --sockbuf N            socket buffers in bytes (default 4194304)\n  \
         --smuxver N            smux version 1 or 2 (default 2; kcptun before 2022 defaults to 1)\n  \
         --smuxbuf N            session receive budget in bytes (default 4194304)\n  \
         --streambuf N          per-stream window, smux v2 (default 2097152)\n  \
         --framesize N          smux max frame size (default 8192)\n  \
         --keepalive N          seconds between smux NOPs (default 10)\n  \
         --ratelimit N          send rate limit in bytes/s, 0 = off (default 0)\n  \
         --closewait N          accepted for compatibility (default {})\n  \
         --log FILE             log to FILE instead of stderr\n  \
         --quiet                no stream open/close messages\n  \
         -c FILE                kcptun JSON config (overrides the command line)\n  \
         -h, --help / -v, --version\n",
        d.sndwnd, d.rcvwnd, d.closewait
    );
    s
}

/// Why the program stops before running.
enum Exit {
    /// `--help` / `--version`: print and exit 0.
    Info(String),
    /// Bad command line or config: print and exit 2.
    Usage(String),
}

fn set_value(o: &mut Opts, name: &str, value: &str, origin: &str) -> Result<(), Exit> {
    let Some(s) = slot(o, name) else {
        return Err(Exit::Usage(format!("{origin}: unknown option {name:?}")));
    };
    match s {
        Slot::Str(v) => *v = value.to_string(),
        Slot::Num(v) => {
            *v = value.trim().parse::<u64>().map_err(|_| {
                Exit::Usage(format!(
                    "{origin}: option {name:?} needs a non-negative integer, got {value:?}"
                ))
            })?
        }
        Slot::Bool(v) => {
            *v = match value {
                "true" | "1" | "t" | "T" | "TRUE" | "True" => true,
                "false" | "0" | "f" | "F" | "FALSE" | "False" => false,
                _ => {
                    return Err(Exit::Usage(format!(
                        "{origin}: option {name:?} needs true or false, got {value:?}"
                    )))
                }
            }
        }
    }
    Ok(())
}

fn parse_args(role: Role, args: &[String]) -> Result<Opts, Exit> {
    let mut o = Opts::defaults(role);
    let mut json: Option<String> = None;
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            return Err(Exit::Usage(format!(
                "unexpected argument {arg:?}\n\n{}",
                usage(role)
            )));
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        match name {
            "h" | "help" => return Err(Exit::Info(usage(role))),
            "v" | "version" => return Err(Exit::Info(format!("kcptun-rs version {VERSION}"))),
            _ => {}
        }
        let is_bool = matches!(slot(&mut o.clone(), name), Some(Slot::Bool(_)))
            || name == "pprof"
            || name == "QPP";
        let value = match inline {
            Some(v) => v,
            None if is_bool => "true".to_string(),
            None => {
                let Some(v) = args.get(i) else {
                    return Err(Exit::Usage(format!("option -{name} needs a value")));
                };
                i += 1;
                v.clone()
            }
        };
        if name == "c" {
            json = Some(value);
        } else if IGNORED.contains(&name) {
            log_line(&format!(
                "note: option -{name} is accepted but has no effect"
            ));
        } else {
            set_value(&mut o, name, &value, "command line")?;
        }
    }
    if let Some(path) = json {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Exit::Usage(format!("cannot read config {path}: {e}")))?;
        let pairs = parse_flat_json(&text).map_err(|e| Exit::Usage(format!("{path}: {e}")))?;
        for (k, v) in pairs {
            // kcptun's JSON decoding ignores keys it does not know (a shared
            // file may hold both roles' keys); we say so instead of failing.
            if IGNORED.contains(&k.as_str()) || slot(&mut o.clone(), &k).is_none() {
                log_line(&format!("note: config key {k:?} is ignored"));
                continue;
            }
            set_value(&mut o, &k, &v, &path)?;
        }
    }
    Ok(o)
}

/// Parses a flat JSON object (string, number and boolean values, as
/// kcptun's config files are) into key/value strings.
fn parse_flat_json(text: &str) -> Result<Vec<(String, String)>, String> {
    let b = text.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    let string = |i: &mut usize| -> Result<String, String> {
        // At the opening quote.
        *i += 1;
        let mut out = String::new();
        let start = *i;
        let mut chars = text[start..].char_indices();
        while let Some((off, c)) = chars.next() {
            match c {
                '"' => {
                    *i = start + off + 1;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, 'r')) => out.push('\r'),
                    Some((_, 'b')) => out.push('\u{8}'),
                    Some((_, 'f')) => out.push('\u{c}'),
                    Some((_, 'u')) => {
                        let hex: String = (0..4)
                            .filter_map(|_| chars.next().map(|(_, c)| c))
                            .collect();
                        let cp = u32::from_str_radix(&hex, 16)
                            .map_err(|_| "bad \\u escape".to_string())?;
                        out.push(char::from_u32(cp).unwrap_or('\u{fffd}'));
                    }
                    Some((_, c)) => out.push(c),
                    None => break,
                },
                c => out.push(c),
            }
        }
        Err("unterminated string".into())
    };
    skip_ws(&mut i);
    if b.get(i) != Some(&b'{') {
        return Err("expected a JSON object".into());
    }
    i += 1;
    let mut pairs = Vec::new();
    loop {
        skip_ws(&mut i);
        match b.get(i) {
            Some(b'}') => break,
            Some(b'"') => {}
            _ => return Err(format!("expected a key at byte {i}")),
        }
        let key = string(&mut i)?;
        skip_ws(&mut i);
        if b.get(i) != Some(&b':') {
            return Err(format!("expected ':' after key {key:?}"));
        }
        i += 1;
        skip_ws(&mut i);
        let value = match b.get(i) {
            Some(b'"') => string(&mut i)?,
            Some(_) => {
                let start = i;
                while i < b.len() && !matches!(b[i], b',' | b'}') && !b[i].is_ascii_whitespace() {
                    i += 1;
                }
                let v = &text[start..i];
                if v.starts_with('{') || v.starts_with('[') {
                    return Err(format!("key {key:?}: nested values are not supported"));
                }
                // JSON numbers may be written as 1.0 or 1e3; kcptun's are integers.
                v.to_string()
            }
            None => return Err("unexpected end of input".into()),
        };
        pairs.push((key, value));
        skip_ws(&mut i);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => break,
            _ => return Err(format!("expected ',' or '}}' at byte {i}")),
        }
    }
    Ok(pairs)
}

// ---- logging ---------------------------------------------------------------

static LOG_FILE: OnceLock<Mutex<std::fs::File>> = OnceLock::new();

fn log_line(msg: &str) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let line = format!("{secs} {msg}\n");
    if let Some(f) = LOG_FILE.get() {
        let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
        let _ = f.write_all(line.as_bytes());
    } else {
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

// ---- building the layers ---------------------------------------------------

fn u32_opt(name: &str, v: u64) -> Result<u32, String> {
    u32::try_from(v).map_err(|_| format!("{name} {v} is too large"))
}

fn nodelay(o: &Opts) -> Result<NoDelay, String> {
    Ok(match o.mode.as_str() {
        "normal" | "fast" | "fast2" | "fast3" => Mode::from_name(&o.mode)
            .map_err(|e| e.to_string())?
            .nodelay(),
        // §7.3: "manual" and any other name use the individual flags.
        _ => NoDelay {
            nodelay: o.nodelay != 0,
            interval: u32_opt("interval", o.interval)?,
            resend: u32_opt("resend", o.resend)?,
            congestion: if o.nc != 0 {
                Congestion::Off
            } else {
                Congestion::On
            },
        },
    })
}

/// `--mtu` above 1472 is clamped, as kcptun on kcp-go v5.7 does (its
/// `SetMtu` clamps to `maxPacketSize`): v5.7 truncates longer datagrams, so
/// they would fail its CRC/AEAD check. The library refuses such an mtu.
fn clamp_mtu(mtu: u64) -> usize {
    if mtu > MAX_PACKET_SIZE as u64 {
        log_line(&format!(
            "note: --mtu {mtu} clamped to {MAX_PACKET_SIZE}, the largest datagram kcp-go v5.7 reads"
        ));
        return MAX_PACKET_SIZE;
    }
    mtu as usize
}

fn kcp_config(o: &Opts) -> Result<Config, String> {
    if o.tcp {
        return Err("--tcp (fake-TCP transport) is not supported by kcptun-rs".into());
    }
    let dscp = u8::try_from(o.dscp)
        .ok()
        .filter(|d| *d < 64)
        .ok_or_else(|| format!("dscp {} is not a 6-bit value", o.dscp))?;
    let mut b = Config::builder()
        .crypt_kcptun(&o.crypt, &o.key)
        .fec(o.datashard as usize, o.parityshard as usize)
        .mtu(clamp_mtu(o.mtu))
        .window(u32_opt("sndwnd", o.sndwnd)?, u32_opt("rcvwnd", o.rcvwnd)?)
        .nodelay(nodelay(o)?)
        .stream_mode(StreamMode::Stream)
        .write_delay(false)
        .ack_nodelay(o.acknodelay)
        .rate_limit(u32_opt("ratelimit", o.ratelimit)?)
        .socket_buffers(o.sockbuf as usize)
        // kcptun's liveness rule is smux's keepalive (30 s timeout), not KCP's
        // dead link, which in the fast modes would end a tunnel after a 3.5 s
        // outage; the KCP idle timeout matches smux's and is off with
        // keepalives off, as a kcptun session then lives until closed.
        .dead_link(None)
        .idle_timeout((o.keepalive > 0).then_some(Duration::from_secs(30)));
    if o.dscp != 0 {
        b = b.dscp(dscp);
    }
    b.build().map_err(|e| e.to_string())
}

fn smux_config(o: &Opts) -> Result<smux::Config, String> {
    let c = smux::Config {
        version: smux::Version::from_number(o.smuxver).map_err(|e| e.to_string())?,
        keep_alive: smux::KeepAlive::Enabled {
            interval: Duration::from_secs(o.keepalive),
            // smux's default KeepAliveTimeout; kcptun does not change it.
            timeout: Duration::from_secs(30),
        },
        max_frame_size: o.framesize as usize,
        max_receive_buffer: o.smuxbuf as usize,
        max_stream_buffer: o.streambuf as usize,
    };
    c.verify().map_err(|e| e.to_string())?;
    Ok(c)
}

/// Go's ":port" means every interface.
fn listen_addr(a: &str) -> String {
    if a.starts_with(':') {
        format!("0.0.0.0{a}")
    } else {
        a.to_string()
    }
}

/// Copies `r` to `w` until EOF or an error; flushes after every write.
async fn pump<R, W>(mut r: R, mut w: W) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; COPY_BUF];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        w.write_all(&buf[..n]).await?;
        total += n as u64;
    }
}

/// Joins a TCP connection and an smux stream. As in kcptun, when either
/// direction ends both are closed (a Go smux FIN is a full close).
async fn join(tcp: TcpStream, stream: smux::Stream) {
    let (tr, tw) = tcp.into_split();
    let (sr, sw) = tokio::io::split(stream);
    tokio::select! {
        _ = pump(tr, sw) => {}
        _ = pump(sr, tw) => {}
    }
}

// ---- client ----------------------------------------------------------------

struct Mux {
    session: Option<Arc<smux::Session>>,
}

async fn new_mux(o: &Opts, kcp: &Config, sm: smux::Config) -> Result<Arc<smux::Session>, String> {
    let sess = Session::dial(o.remoteaddr.as_str(), kcp)
        .await
        .map_err(|e| format!("dial {}: {e}", o.remoteaddr))?;
    log_line(&format!(
        "smux version: {} on connection: {} -> {}",
        o.smuxver,
        sess.local_addr(),
        sess.peer_addr()
    ));
    let mux = if o.nocomp {
        smux::Session::client(sess, sm)
    } else {
        smux::Session::client(CompStream::new(sess), sm)
    };
    mux.map(Arc::new).map_err(|e| e.to_string())
}

async fn run_client(o: Opts) -> Result<(), String> {
    if o.remoteaddr.contains('-')
        && o.remoteaddr
            .rsplit(':')
            .next()
            .is_some_and(|p| p.contains('-'))
    {
        return Err("port ranges in --remoteaddr are not supported by kcptun-rs".into());
    }
    let kcp = kcp_config(&o)?;
    let sm = smux_config(&o)?;
    if o.autoexpire != 0 {
        log_line("note: --autoexpire is accepted but sessions do not expire in kcptun-rs");
    }
    let conns = usize::try_from(o.conn)
        .ok()
        .filter(|c| (1..=65535).contains(c))
        .ok_or("conn must be 1..65535")?;
    let listener = TcpListener::bind(listen_addr(&o.localaddr))
        .await
        .map_err(|e| format!("listen {}: {e}", o.localaddr))?;
    log_line(&format!(
        "listening on: {}",
        listener.local_addr().map_err(|e| e.to_string())?
    ));
    log_line(&format!("remote address: {}", o.remoteaddr));
    log_line(&format!(
        "encryption: {} mode: {} conn: {} mtu: {} sndwnd: {} rcvwnd: {} datashard: {} parityshard: {} \
         nocomp: {} smuxver: {} keepalive: {}",
        o.crypt, o.mode, conns, o.mtu, o.sndwnd, o.rcvwnd, o.datashard, o.parityshard, o.nocomp, o.smuxver,
        o.keepalive
    ));
    let o = Arc::new(o);
    let muxes: Arc<Vec<tokio::sync::Mutex<Mux>>> = Arc::new(
        (0..conns)
            .map(|_| tokio::sync::Mutex::new(Mux { session: None }))
            .collect(),
    );
    let rr = Arc::new(AtomicUsize::new(0));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                log_line(&format!("accept: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (o, kcp, muxes, rr) = (o.clone(), kcp.clone(), muxes.clone(), rr.clone());
        tokio::spawn(async move {
            let idx = rr.fetch_add(1, Ordering::Relaxed) % muxes.len();
            let stream = {
                let mut slot = muxes[idx].lock().await;
                let mut opened = None;
                // One retry with a fresh session if the old one has died.
                for _ in 0..2 {
                    let mux = match &slot.session {
                        Some(m) if !m.is_closed() => m.clone(),
                        _ => match new_mux(&o, &kcp, sm).await {
                            Ok(m) => {
                                slot.session = Some(m.clone());
                                m
                            }
                            Err(e) => {
                                log_line(&e);
                                return;
                            }
                        },
                    };
                    match mux.open_stream().await {
                        Ok(s) => {
                            opened = Some(s);
                            break;
                        }
                        Err(e) => {
                            log_line(&format!("open stream: {e}"));
                            slot.session = None;
                        }
                    }
                }
                match opened {
                    Some(s) => s,
                    None => return,
                }
            };
            let id = stream.id();
            if !o.quiet {
                log_line(&format!("stream opened in: {peer} out: ({id})"));
            }
            join(tcp, stream).await;
            if !o.quiet {
                log_line(&format!("stream closed in: {peer} out: ({id})"));
            }
        });
    }
}

// ---- server ----------------------------------------------------------------

async fn run_server(o: Opts) -> Result<(), String> {
    let kcp = kcp_config(&o)?;
    let sm = smux_config(&o)?;
    let listener = Listener::listen(listen_addr(&o.listen), &kcp)
        .await
        .map_err(|e| format!("listen {}: {e}", o.listen))?;
    log_line(&format!("listening on: {}", listener.local_addr()));
    log_line(&format!("target: {}", o.target));
    log_line(&format!(
        "encryption: {} mode: {} mtu: {} sndwnd: {} rcvwnd: {} datashard: {} parityshard: {} \
         nocomp: {} smuxver: {} keepalive: {}",
        o.crypt,
        o.mode,
        o.mtu,
        o.sndwnd,
        o.rcvwnd,
        o.datashard,
        o.parityshard,
        o.nocomp,
        o.smuxver,
        o.keepalive
    ));
    let o = Arc::new(o);
    loop {
        let sess = listener
            .accept()
            .await
            .map_err(|e| format!("accept: {e}"))?;
        log_line(&format!("remote address: {}", sess.peer_addr()));
        let o = o.clone();
        tokio::spawn(async move {
            let mux = if o.nocomp {
                smux::Session::server(sess, sm)
            } else {
                smux::Session::server(CompStream::new(sess), sm)
            };
            let mux = match mux {
                Ok(m) => m,
                Err(e) => {
                    log_line(&format!("smux: {e}"));
                    return;
                }
            };
            loop {
                let stream = match mux.accept_stream().await {
                    Ok(s) => s,
                    Err(e) => {
                        log_line(&format!("smux session ended: {e}"));
                        return;
                    }
                };
                let o = o.clone();
                tokio::spawn(async move {
                    let id = stream.id();
                    let tcp = match TcpStream::connect(o.target.as_str()).await {
                        Ok(t) => t,
                        Err(e) => {
                            log_line(&format!("dial target {}: {e}", o.target));
                            return;
                        }
                    };
                    let _ = tcp.set_nodelay(true);
                    if !o.quiet {
                        log_line(&format!("stream opened in: ({id}) out: {}", o.target));
                    }
                    join(tcp, stream).await;
                    if !o.quiet {
                        log_line(&format!("stream closed in: ({id}) out: {}", o.target));
                    }
                });
            }
        });
    }
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().collect();
    let argv0 = args.first().cloned().unwrap_or_default();
    args.remove(0);
    let role = if argv0.ends_with("client") {
        Some(Role::Client)
    } else if argv0.ends_with("server") {
        Some(Role::Server)
    } else {
        None
    };
    let role = match role {
        Some(r) => r,
        None => match args.first().map(String::as_str) {
            Some("client") => {
                args.remove(0);
                Role::Client
            }
            Some("server") => {
                args.remove(0);
                Role::Server
            }
            Some("-v" | "--version" | "-version") => {
                println!("kcptun-rs version {VERSION}");
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!(
                    "usage: kcptun-rs client|server [options]   (kcptun-rs client --help for the options)"
                );
                return ExitCode::from(2);
            }
        },
    };
    let opts = match parse_args(role, &args) {
        Ok(o) => o,
        Err(Exit::Info(s)) => {
            println!("{s}");
            return ExitCode::SUCCESS;
        }
        Err(Exit::Usage(s)) => {
            eprintln!("kcptun-rs: {s}");
            return ExitCode::from(2);
        }
    };
    if !opts.log.is_empty() {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&opts.log)
        {
            Ok(f) => {
                let _ = LOG_FILE.set(Mutex::new(f));
            }
            Err(e) => {
                eprintln!("kcptun-rs: cannot open log {}: {e}", opts.log);
                return ExitCode::from(2);
            }
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kcptun-rs: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = rt.block_on(async move {
        match role {
            Role::Client => run_client(opts).await,
            Role::Server => run_server(opts).await,
        }
    });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kcptun-rs: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn flags_in_go_syntax() {
        let Ok(o) = parse_args(
            Role::Client,
            &args(&[
                "-l",
                ":1",
                "--remoteaddr=h:2",
                "--nocomp",
                "--acknodelay=false",
                "-mtu",
                "1200",
                "--ds",
                "0",
            ]),
        ) else {
            panic!("parse failed")
        };
        assert_eq!((o.localaddr.as_str(), o.remoteaddr.as_str()), (":1", "h:2"));
        assert!(o.nocomp && !o.acknodelay);
        assert_eq!(
            (o.mtu, o.datashard, o.sndwnd, o.rcvwnd),
            (1200, 0, 128, 512)
        );
        let Ok(s) = parse_args(Role::Server, &args(&[])) else {
            panic!("defaults")
        };
        assert_eq!((s.sndwnd, s.rcvwnd, s.closewait), (1024, 1024, 30));
    }

    #[test]
    fn mtu_above_1472_is_clamped_as_kcptun_on_kcp_go_v57() {
        for (given, want) in [(1500, 1472), (1473, 1472), (1472, 1472), (1350, 1350)] {
            let Ok(o) = parse_args(Role::Server, &args(&["--mtu", &given.to_string()])) else {
                panic!("parse failed")
            };
            assert_eq!(kcp_config(&o).map(|c| c.mtu()), Ok(want), "--mtu {given}");
        }
    }

    #[test]
    fn bad_flags_are_errors() {
        for bad in [
            &["--bogus", "1"][..],
            &["--mtu", "x"],
            &["--mtu"],
            &["-t", "a:1"],
            &["stray"],
        ] {
            assert!(
                matches!(parse_args(Role::Client, &args(bad)), Err(Exit::Usage(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_args(Role::Server, &args(&["--conn", "2"])),
            Err(Exit::Usage(_))
        ));
    }

    #[test]
    fn flat_json() {
        let p =
            parse_flat_json(r#" { "key": "a\"b", "mtu": 1400, "nocomp": true , "x":"\u0041"} "#)
                .expect("json");
        assert_eq!(
            p,
            vec![
                ("key".into(), "a\"b".into()),
                ("mtu".into(), "1400".into()),
                ("nocomp".into(), "true".into()),
                ("x".into(), "A".into())
            ]
        );
        assert!(parse_flat_json("[1]").is_err());
        assert!(parse_flat_json(r#"{"a": {"b": 1}}"#).is_err());
        assert!(parse_flat_json(r#"{"a": "x""#).is_err());
    }

    #[test]
    fn json_config_overrides_the_command_line() {
        let path = std::env::temp_dir().join(format!("kcptun-rs-{}.json", std::process::id()));
        std::fs::write(
            &path,
            r#"{"listen": ":4000", "target": "127.0.0.1:22", "key": "k", "crypt": "salsa20",
                "mode": "fast2", "mtu": 1200, "nocomp": true, "smuxver": 1, "snmplog": "x"}"#,
        )
        .expect("write config");
        let p = path.to_string_lossy().to_string();
        let parsed = parse_args(
            Role::Server,
            &args(&["--mtu", "1000", "-c", &p, "--crypt", "aes"]),
        );
        let Ok(o) = parsed else { panic!("parse") };
        assert_eq!(
            (o.listen.as_str(), o.target.as_str(), o.key.as_str()),
            (":4000", "127.0.0.1:22", "k")
        );
        assert_eq!(
            (o.crypt.as_str(), o.mode.as_str(), o.mtu, o.smuxver),
            ("salsa20", "fast2", 1200, 1)
        );
        assert!(o.nocomp);
        // Unknown keys are ignored as kcptun's JSON decoding does; bad values fail.
        std::fs::write(&path, r#"{"remoteaddr": "x:1", "mtu": 1100}"#).expect("write config");
        let Ok(o) = parse_args(Role::Server, &args(&["-c", &p])) else {
            panic!("parse")
        };
        assert_eq!(o.mtu, 1100);
        std::fs::write(&path, r#"{"mtu": "big"}"#).expect("write config");
        assert!(matches!(
            parse_args(Role::Server, &args(&["-c", &p])),
            Err(Exit::Usage(_))
        ));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn manual_mode_uses_flags() {
        let Ok(o) = parse_args(
            Role::Server,
            &args(&[
                "--mode",
                "manual",
                "--nodelay",
                "1",
                "--interval",
                "15",
                "--resend",
                "3",
                "--nc",
                "1",
            ]),
        ) else {
            panic!("parse")
        };
        let nd = nodelay(&o).expect("nodelay");
        assert_eq!(
            (nd.nodelay, nd.interval, nd.resend, nd.congestion),
            (true, 15, 3, Congestion::Off)
        );
        let Ok(o) = parse_args(Role::Server, &args(&["--mode", "fast3"])) else {
            panic!("parse")
        };
        let nd = nodelay(&o).expect("nodelay");
        assert_eq!(
            (nd.nodelay, nd.interval, nd.resend, nd.congestion),
            (true, 10, 2, Congestion::Off)
        );
    }
}
