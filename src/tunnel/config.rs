//! kcptun's configuration: the options of both roles with kcptun's names and
//! defaults, built from kcptun's command-line flags ([`ClientConfig::from_args`],
//! [`ServerConfig::from_args`]) or its JSON file (`-c`, [`ClientConfig::apply_json`]),
//! and checked into the session, smux and address settings the tunnel runs on.
//!
//! Every kcptun flag is known here. Those the tunnel cannot honour (`--tcp`,
//! `--pprof`) are refused by
//! [`ClientConfig::validate`] / [`ServerConfig::validate`] with
//! [`TunnelError::Refused`] naming the flag, never accepted and ignored.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Config, Congestion, Mode, NoDelay, StreamMode, MAX_PACKET_SIZE};
use crate::smux;

use super::TunnelError;

/// The environment variable kcptun reads the key from (flag `--key` wins).
pub const KEY_ENV: &str = "KCPTUN_KEY";

/// Options both roles share, with kcptun's JSON key names. Deserialized as
/// part of [`ClientConfig`] / [`ServerConfig`], which supply the role's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Common {
    /// Pre-shared secret (`--key`, env `KCPTUN_KEY`).
    pub key: String,
    /// Cipher name as kcptun spells it (`--crypt`).
    pub crypt: String,
    /// `fast3`, `fast2`, `fast`, `normal` or `manual` (`--mode`).
    pub mode: String,
    /// Largest UDP payload (`--mtu`); above 1472 it is clamped as kcp-go v5.7 does.
    pub mtu: i64,
    /// Outgoing bytes per second per session, 0 = off (`--ratelimit`).
    pub ratelimit: i64,
    /// Send window in packets (`--sndwnd`).
    pub sndwnd: i64,
    /// Receive window in packets (`--rcvwnd`).
    pub rcvwnd: i64,
    /// Reed-Solomon data shards (`--datashard`, `--ds`).
    pub datashard: i64,
    /// Reed-Solomon parity shards (`--parityshard`, `--ps`).
    pub parityshard: i64,
    /// DSCP, 6 bits (`--dscp`).
    pub dscp: i64,
    /// No Snappy layer (`--nocomp`).
    pub nocomp: bool,
    /// Flush ACKs at once (`--acknodelay`).
    pub acknodelay: bool,
    /// KCP nodelay for `--mode manual` (`--nodelay`).
    pub nodelay: i64,
    /// KCP interval in ms for `--mode manual` (`--interval`).
    pub interval: i64,
    /// Fast resend for `--mode manual` (`--resend`).
    pub resend: i64,
    /// No congestion control for `--mode manual` when non-zero (`--nc`).
    pub nc: i64,
    /// UDP socket buffers in bytes (`--sockbuf`).
    pub sockbuf: i64,
    /// smux protocol version, 1 or 2 (`--smuxver`).
    pub smuxver: i64,
    /// smux session receive budget (`--smuxbuf`).
    pub smuxbuf: i64,
    /// smux max frame size (`--framesize`).
    pub framesize: i64,
    /// smux v2 per-stream window (`--streambuf`).
    pub streambuf: i64,
    /// Seconds between smux keepalives (`--keepalive`).
    pub keepalive: i64,
    /// Log file instead of stderr (`--log`).
    pub log: String,
    /// SNMP CSV log path; the file name may hold a Go time layout (`--snmplog`).
    pub snmplog: String,
    /// Seconds between SNMP CSV rows (`--snmpperiod`).
    pub snmpperiod: i64,
    /// No stream open/close messages (`--quiet`).
    pub quiet: bool,
    /// kcptun's fake-TCP transport (`--tcp`): refused.
    pub tcp: bool,
    /// kcptun's profiling server on :6060 (`--pprof`): refused.
    pub pprof: bool,
    /// Quantum Permutation Pads on every stream (`--QPP`).
    #[serde(rename = "qpp")]
    pub qpp: bool,
    /// Number of QPP pads (`--QPPCount`).
    #[serde(rename = "qpp-count")]
    pub qpp_count: i64,
    /// Seconds a stream's other direction may go on after one ends (`--closewait`).
    pub closewait: i64,
}

impl Common {
    fn defaults(role: Role) -> Common {
        let (sndwnd, rcvwnd, closewait) = match role {
            Role::Client => (128, 512, 0),
            Role::Server => (1024, 1024, 30),
        };
        Common {
            key: "it's a secrect".into(),
            crypt: "aes".into(),
            mode: "fast".into(),
            mtu: 1350,
            ratelimit: 0,
            sndwnd,
            rcvwnd,
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
            framesize: 8192,
            streambuf: 2_097_152,
            keepalive: 10,
            log: String::new(),
            snmplog: String::new(),
            snmpperiod: 60,
            quiet: false,
            tcp: false,
            pprof: false,
            qpp: false,
            qpp_count: 61,
            closewait,
        }
    }
}

/// Which side of the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Accepts local TCP/unix connections, carries them to the server.
    Client,
    /// Accepts KCP sessions, connects each stream to the target.
    Server,
}

/// kcptun client options (`client/main.go`), kcptun's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientConfig {
    /// Local listen address, `host:port` or a unix socket path (`--localaddr`, `-l`).
    pub localaddr: String,
    /// Server address, `host:port` or `host:min-max` (`--remoteaddr`, `-r`).
    pub remoteaddr: String,
    /// Number of KCP sessions (`--conn`).
    pub conn: i64,
    /// Seconds after which a session takes no new streams, 0 = never (`--autoexpire`).
    pub autoexpire: i64,
    /// Seconds an expired session lives on (`--scavengettl`).
    pub scavengettl: i64,
    /// The options both roles share.
    #[serde(flatten)]
    pub common: Common,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            localaddr: ":12948".into(),
            remoteaddr: "vps:29900".into(),
            conn: 1,
            autoexpire: 0,
            scavengettl: 600,
            common: Common::defaults(Role::Client),
        }
    }
}

/// kcptun server options (`server/main.go`), kcptun's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// KCP listen address, `host:port` or `host:min-max` (`--listen`, `-l`).
    pub listen: String,
    /// Target, `host:port` or a unix socket path (`--target`, `-t`).
    pub target: String,
    /// The options both roles share.
    #[serde(flatten)]
    pub common: Common,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: ":29900".into(),
            target: "127.0.0.1:12948".into(),
            common: Common::defaults(Role::Server),
        }
    }
}

/// What parsing a command line produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<T> {
    /// Run with this configuration.
    Run(T),
    /// `-h`/`--help`: print the usage.
    Help,
    /// `-v`/`--version`: print the version.
    Version,
}

/// A flag's value kind, for Go `flag` syntax (booleans take no value).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Int,
    Bool,
}

/// Maps a flag name (with its kcptun aliases) to its JSON key and kind.
fn flag(role: Role, name: &str) -> Option<(&'static str, Kind)> {
    use Kind::*;
    let client = role == Role::Client;
    Some(match name {
        "localaddr" | "l" if client => ("localaddr", Str),
        "remoteaddr" | "r" if client => ("remoteaddr", Str),
        "conn" if client => ("conn", Int),
        "autoexpire" if client => ("autoexpire", Int),
        "scavengettl" if client => ("scavengettl", Int),
        "listen" | "l" if !client => ("listen", Str),
        "target" | "t" if !client => ("target", Str),
        "key" => ("key", Str),
        "crypt" => ("crypt", Str),
        "mode" => ("mode", Str),
        "mtu" => ("mtu", Int),
        "ratelimit" => ("ratelimit", Int),
        "sndwnd" => ("sndwnd", Int),
        "rcvwnd" => ("rcvwnd", Int),
        "datashard" | "ds" => ("datashard", Int),
        "parityshard" | "ps" => ("parityshard", Int),
        "dscp" => ("dscp", Int),
        "nocomp" => ("nocomp", Bool),
        "acknodelay" => ("acknodelay", Bool),
        "nodelay" => ("nodelay", Int),
        "interval" => ("interval", Int),
        "resend" => ("resend", Int),
        "nc" => ("nc", Int),
        "sockbuf" => ("sockbuf", Int),
        "smuxver" => ("smuxver", Int),
        "smuxbuf" => ("smuxbuf", Int),
        "framesize" => ("framesize", Int),
        "streambuf" => ("streambuf", Int),
        "keepalive" => ("keepalive", Int),
        "closewait" => ("closewait", Int),
        "log" => ("log", Str),
        "snmplog" => ("snmplog", Str),
        "snmpperiod" => ("snmpperiod", Int),
        "quiet" => ("quiet", Bool),
        "tcp" => ("tcp", Bool),
        "pprof" => ("pprof", Bool),
        "QPP" => ("qpp", Bool),
        "QPPCount" => ("qpp-count", Int),
        _ => return None,
    })
}

/// Parses kcptun's flags (Go `flag` syntax: `-f v`, `--f v`, `--f=v`,
/// booleans bare or `=true/false`) over `defaults`, then the `-c` JSON file
/// over that (kcptun: the file overrides the shell). `key_env` is
/// `KCPTUN_KEY` as read by the caller; `--key` wins over it.
fn parse<T: Serialize + for<'de> Deserialize<'de>>(
    role: Role,
    defaults: T,
    args: &[String],
    key_env: Option<String>,
) -> Result<Parsed<T>, TunnelError> {
    let mut obj = to_object(&defaults)?;
    if let Some(k) = key_env {
        obj.insert("key".into(), serde_json::Value::String(k));
    }
    let mut json_path = None;
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let Some(f) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            return Err(TunnelError::Usage(format!("unexpected argument {arg:?}")));
        };
        let (name, inline) = match f.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (f, None),
        };
        match name {
            "h" | "help" => return Ok(Parsed::Help),
            "v" | "version" => return Ok(Parsed::Version),
            _ => {}
        }
        let kind = if name == "c" {
            Kind::Str
        } else {
            flag(role, name).map(|(_, k)| k).ok_or_else(|| {
                TunnelError::Usage(format!("flag provided but not defined: -{name}"))
            })?
        };
        let value = match (inline, kind) {
            (Some(v), _) => v,
            (None, Kind::Bool) => "true".into(),
            (None, _) => {
                let v = args.get(i).ok_or_else(|| {
                    TunnelError::Usage(format!("flag needs an argument: -{name}"))
                })?;
                i += 1;
                v.clone()
            }
        };
        if name == "c" {
            json_path = Some(value);
            continue;
        }
        let (key, _) = flag(role, name).expect("checked above");
        let v = match kind {
            Kind::Str => serde_json::Value::String(value),
            Kind::Int => value.trim().parse::<i64>().map(Into::into).map_err(|_| {
                TunnelError::Usage(format!(
                    "invalid value {value:?} for flag -{name}: not an integer"
                ))
            })?,
            Kind::Bool => match value.as_str() {
                "1" | "t" | "T" | "true" | "TRUE" | "True" => true.into(),
                "0" | "f" | "F" | "false" | "FALSE" | "False" => false.into(),
                _ => {
                    return Err(TunnelError::Usage(format!(
                        "invalid boolean value {value:?} for flag -{name}"
                    )))
                }
            },
        };
        obj.insert(key.into(), v);
    }
    if let Some(path) = json_path {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| TunnelError::Usage(format!("-c {path}: {e}")))?;
        merge_json(&mut obj, &text).map_err(|e| TunnelError::Usage(format!("-c {path}: {e}")))?;
    }
    from_object(obj).map(Parsed::Run)
}

fn to_object<T: Serialize>(
    v: &T,
) -> Result<serde_json::Map<String, serde_json::Value>, TunnelError> {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        _ => Err(TunnelError::Usage(
            "config does not serialize to an object".into(),
        )),
    }
}

fn from_object<T: for<'de> Deserialize<'de>>(
    obj: serde_json::Map<String, serde_json::Value>,
) -> Result<T, TunnelError> {
    serde_json::from_value(serde_json::Value::Object(obj))
        .map_err(|e| TunnelError::Usage(e.to_string()))
}

/// Lays a kcptun JSON object over `obj`. Keys match case-insensitively, as
/// Go's `encoding/json` matches them to kcptun's struct tags; a key neither
/// role knows is an error rather than silently ignored (Go ignores it).
fn merge_json(
    obj: &mut serde_json::Map<String, serde_json::Value>,
    text: &str,
) -> Result<(), String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let serde_json::Value::Object(m) = v else {
        return Err("expected a JSON object".into());
    };
    for (k, v) in m {
        let lower = k.to_ascii_lowercase();
        let Some(known) = obj
            .keys()
            .find(|o| o.to_ascii_lowercase() == lower)
            .cloned()
        else {
            return Err(format!("unknown key {k:?} for this role"));
        };
        let ok = match (&obj[&known], &v) {
            (serde_json::Value::String(_), serde_json::Value::String(_)) => true,
            (serde_json::Value::Bool(_), serde_json::Value::Bool(_)) => true,
            (serde_json::Value::Number(_), serde_json::Value::Number(n)) => n.is_i64(),
            _ => false,
        };
        if !ok {
            return Err(format!("key {k:?}: value {v} has the wrong type"));
        }
        obj.insert(known, v);
    }
    Ok(())
}

impl ClientConfig {
    /// Parses kcptun client flags (without the program name); `key_env` is
    /// the value of `KCPTUN_KEY`, if set.
    pub fn from_args(
        args: &[String],
        key_env: Option<String>,
    ) -> Result<Parsed<Self>, TunnelError> {
        parse(Role::Client, ClientConfig::default(), args, key_env)
    }

    /// Lays kcptun client JSON (`-c` file contents) over this config.
    pub fn apply_json(&mut self, json: &str) -> Result<(), TunnelError> {
        let mut obj = to_object(self)?;
        merge_json(&mut obj, json).map_err(TunnelError::Usage)?;
        *self = from_object(obj)?;
        Ok(())
    }

    /// Checks every option and derives what the client runs on.
    pub fn validate(&self) -> Result<ClientPlan, TunnelError> {
        let common = self.common.plan()?;
        let conn = usize::try_from(self.conn)
            .ok()
            .filter(|c| (1..=65535).contains(c))
            .ok_or_else(|| bad("conn", self.conn, "must be 1..65535"))?;
        let autoexpire = nonneg("autoexpire", self.autoexpire)?;
        Ok(ClientPlan {
            local: Endpoint::parse(&self.localaddr),
            remote: MultiPort::parse(&self.remoteaddr)
                .map_err(|e| bad_s("remoteaddr", &self.remoteaddr, &e))?,
            conn,
            autoexpire: (autoexpire > 0).then(|| Duration::from_secs(autoexpire)),
            // kcptun adds the TTL to the expiry date; a negative one is "at expiry".
            scavenge_ttl: Duration::from_secs(self.scavengettl.max(0) as u64),
            common,
        })
    }
}

impl ServerConfig {
    /// Parses kcptun server flags (without the program name); `key_env` is
    /// the value of `KCPTUN_KEY`, if set.
    pub fn from_args(
        args: &[String],
        key_env: Option<String>,
    ) -> Result<Parsed<Self>, TunnelError> {
        parse(Role::Server, ServerConfig::default(), args, key_env)
    }

    /// Lays kcptun server JSON (`-c` file contents) over this config.
    pub fn apply_json(&mut self, json: &str) -> Result<(), TunnelError> {
        let mut obj = to_object(self)?;
        merge_json(&mut obj, json).map_err(TunnelError::Usage)?;
        *self = from_object(obj)?;
        Ok(())
    }

    /// Checks every option and derives what the server runs on.
    pub fn validate(&self) -> Result<ServerPlan, TunnelError> {
        Ok(ServerPlan {
            common: self.common.plan()?,
            listen: MultiPort::parse(&self.listen)
                .map_err(|e| bad_s("listen", &self.listen, &e))?,
            target: Endpoint::parse(&self.target),
        })
    }
}

fn bad(flag: &'static str, v: i64, why: &str) -> TunnelError {
    TunnelError::InvalidFlag {
        flag,
        reason: format!("{v}: {why}"),
    }
}

fn bad_s(flag: &'static str, v: &str, why: &str) -> TunnelError {
    TunnelError::InvalidFlag {
        flag,
        reason: format!("{v:?}: {why}"),
    }
}

fn nonneg(flag: &'static str, v: i64) -> Result<u64, TunnelError> {
    u64::try_from(v).map_err(|_| bad(flag, v, "must not be negative"))
}

fn u32_flag(flag: &'static str, v: i64) -> Result<u32, TunnelError> {
    u32::try_from(v).map_err(|_| bad(flag, v, "out of range"))
}

fn usize_flag(flag: &'static str, v: i64) -> Result<usize, TunnelError> {
    usize::try_from(v).map_err(|_| bad(flag, v, "out of range"))
}

/// The checked settings both roles run on.
#[derive(Debug, Clone)]
pub struct CommonPlan {
    /// Session settings.
    pub kcp: Config,
    /// smux settings.
    pub smux: smux::Config,
    /// Snappy layer on.
    pub compression: bool,
    /// `--closewait`.
    pub close_wait: Duration,
    /// `--quiet`.
    pub quiet: bool,
    /// `--log` path, empty for stderr.
    pub log: String,
    /// `--snmplog` with its period, when both are set.
    pub snmp_log: Option<(String, Duration)>,
    /// `--QPP` with `--QPPCount`, for the stream hook.
    pub qpp: Option<QppSetting>,
    /// The key (the QPP seed in kcptun).
    pub key: String,
    /// The options as given, for the startup log.
    pub summary: String,
}

/// kcptun's QPP options; see [`super::pump::StreamWrap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QppSetting {
    /// `--QPPCount`.
    pub count: u16,
}

impl Common {
    /// Checks the shared options.
    pub fn plan(&self) -> Result<CommonPlan, TunnelError> {
        if self.tcp {
            return Err(TunnelError::Refused {
                flag: "--tcp",
                reason: "kcptun's fake-TCP transport (tcpraw) is not implemented; use UDP".into(),
            });
        }
        if self.pprof {
            return Err(TunnelError::Refused {
                flag: "--pprof",
                reason: "Go's pprof profiling server has no Rust counterpart".into(),
            });
        }
        let qpp = if self.qpp {
            let count = u16::try_from(self.qpp_count)
                .ok()
                .filter(|c| *c > 0)
                .ok_or_else(|| {
                    bad(
                        "QPPCount",
                        self.qpp_count,
                        "must be 1..65535 when --QPP is set",
                    )
                })?;
            Some(QppSetting { count })
        } else {
            None
        };
        let dscp = u8::try_from(self.dscp)
            .ok()
            .filter(|d| *d < 64)
            .ok_or_else(|| bad("dscp", self.dscp, "not a 6-bit value"))?;
        let nd = match self.mode.as_str() {
            "normal" | "fast" | "fast2" | "fast3" => Mode::from_name(&self.mode)
                .map_err(|e| bad_s("mode", &self.mode, &e.to_string()))?
                .nodelay(),
            // kcptun: "manual" and any other name use the individual flags.
            _ => NoDelay {
                nodelay: self.nodelay != 0,
                interval: u32_flag("interval", self.interval)?,
                resend: u32_flag("resend", self.resend)?,
                congestion: if self.nc != 0 {
                    Congestion::Off
                } else {
                    Congestion::On
                },
            },
        };
        let mtu = usize_flag("mtu", self.mtu)?.min(MAX_PACKET_SIZE);
        let keepalive = nonneg("keepalive", self.keepalive)?;
        let mut b = Config::builder()
            .crypt_kcptun(&self.crypt, &self.key)
            .fec(
                usize_flag("datashard", self.datashard)?,
                usize_flag("parityshard", self.parityshard)?,
            )
            .mtu(mtu)
            .window(
                u32_flag("sndwnd", self.sndwnd)?,
                u32_flag("rcvwnd", self.rcvwnd)?,
            )
            .nodelay(nd)
            .stream_mode(StreamMode::Stream)
            .write_delay(false)
            .ack_nodelay(self.acknodelay)
            // kcptun turns a negative rate limit into 0.
            .rate_limit(u32_flag("ratelimit", self.ratelimit.max(0))?)
            .socket_buffers(usize_flag("sockbuf", self.sockbuf)?)
            // kcptun's liveness rule is smux's keepalive (30 s timeout), not
            // KCP's dead link, which in the fast modes would end a tunnel
            // after a 3.5 s outage.
            .dead_link(None)
            .idle_timeout((keepalive > 0).then_some(Duration::from_secs(30)));
        if dscp != 0 {
            b = b.dscp(dscp);
        }
        let kcp = b.build().map_err(|e| TunnelError::InvalidFlag {
            flag: match e {
                crate::Error::UnknownCipher { .. } | crate::Error::InvalidKey { .. } => "crypt",
                crate::Error::MtuTooLarge { .. } => "mtu",
                _ => "mtu/sndwnd/rcvwnd/datashard/parityshard",
            },
            reason: e.to_string(),
        })?;
        let version = u64::try_from(self.smuxver)
            .map_err(|_| ())
            .and_then(|v| smux::Version::from_number(v).map_err(|_| ()))
            .map_err(|_| bad("smuxver", self.smuxver, "unsupported smux version (1 or 2)"))?;
        let sm = smux::Config {
            version,
            keep_alive: smux::KeepAlive::Enabled {
                interval: Duration::from_secs(keepalive),
                // smux's default KeepAliveTimeout; kcptun does not change it.
                timeout: Duration::from_secs(30),
            },
            max_frame_size: usize_flag("framesize", self.framesize)?,
            max_receive_buffer: usize_flag("smuxbuf", self.smuxbuf)?,
            max_stream_buffer: usize_flag("streambuf", self.streambuf)?,
        };
        sm.verify().map_err(|e| TunnelError::InvalidFlag {
            flag: "smuxver/smuxbuf/streambuf/framesize/keepalive",
            reason: e.to_string(),
        })?;
        let period = nonneg("snmpperiod", self.snmpperiod)?;
        let summary = format!(
            "encryption: {} mode: {} nodelay: {} {} {} {} mtu: {} sndwnd: {} rcvwnd: {} datashard: {} \
             parityshard: {} compression: {} smuxver: {} keepalive: {} closewait: {} snmplog: {:?} \
             snmpperiod: {} quiet: {}",
            self.crypt,
            self.mode,
            nd.nodelay as u8,
            nd.interval,
            nd.resend,
            matches!(nd.congestion, Congestion::Off) as u8,
            mtu,
            self.sndwnd,
            self.rcvwnd,
            self.datashard,
            self.parityshard,
            !self.nocomp,
            self.smuxver,
            self.keepalive,
            self.closewait,
            self.snmplog,
            self.snmpperiod,
            self.quiet
        );
        Ok(CommonPlan {
            kcp,
            smux: sm,
            compression: !self.nocomp,
            close_wait: Duration::from_secs(nonneg("closewait", self.closewait)?),
            quiet: self.quiet,
            log: self.log.clone(),
            snmp_log: (!self.snmplog.is_empty() && period > 0)
                .then(|| (self.snmplog.clone(), Duration::from_secs(period))),
            qpp,
            key: self.key.clone(),
            summary,
        })
    }
}

/// The checked client settings.
#[derive(Debug, Clone)]
pub struct ClientPlan {
    /// Where local connections arrive.
    pub local: Endpoint,
    /// The server's port range.
    pub remote: MultiPort,
    /// `--conn`.
    pub conn: usize,
    /// `--autoexpire`, `None` when 0.
    pub autoexpire: Option<Duration>,
    /// `--scavengettl`.
    pub scavenge_ttl: Duration,
    /// Shared settings.
    pub common: CommonPlan,
}

/// The checked server settings.
#[derive(Debug, Clone)]
pub struct ServerPlan {
    /// Shared settings.
    pub common: CommonPlan,
    /// The port range to listen on.
    pub listen: MultiPort,
    /// Where streams go.
    pub target: Endpoint,
}

/// A TCP address or a unix socket path, by kcptun's rule: an address Go's
/// `net.SplitHostPort` cannot split is a unix socket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `host:port` (an empty host means every interface).
    Tcp(String),
    /// A unix socket path.
    Unix(std::path::PathBuf),
}

impl Endpoint {
    /// Classifies `addr` as kcptun does.
    pub fn parse(addr: &str) -> Endpoint {
        if split_host_port(addr).is_some() {
            Endpoint::Tcp(addr.to_string())
        } else {
            Endpoint::Unix(addr.into())
        }
    }
}

/// Go's `net.SplitHostPort` acceptance rule: `host:port` or `[host]:port`,
/// with no further colon in an unbracketed host.
pub(crate) fn split_host_port(s: &str) -> Option<(&str, &str)> {
    let i = s.rfind(':')?;
    let (host, port) = (&s[..i], &s[i + 1..]);
    let host = if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']')?;
        if inner.contains(['[', ']']) {
            return None;
        }
        inner
    } else {
        if host.contains([':', '[', ']']) {
            return None;
        }
        host
    };
    if port.contains(['[', ']']) {
        return None;
    }
    Some((host, port))
}

/// kcptun's multiport address `host:port` or `host:minport-maxport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiPort {
    /// The host as written (may be empty, or bracketed IPv6).
    pub host: String,
    /// First port.
    pub min: u16,
    /// Last port (equal to `min` for a single port).
    pub max: u16,
}

impl MultiPort {
    /// Parses as kcptun's `ParseMultiPort`: the host is everything before the
    /// last `:`, ports are 1..65535 and `min <= max`.
    pub fn parse(addr: &str) -> Result<MultiPort, String> {
        let (host, ports) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("malformed address: {addr}"))?;
        let port = |p: &str| -> Result<u32, String> {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("malformed address: {addr}"));
            }
            p.parse::<u32>()
                .map_err(|_| format!("malformed address: {addr}"))
        };
        let (min, max) = match ports.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => {
                let p = port(ports)?;
                (p, p)
            }
        };
        if min > max || min == 0 || max > 65535 {
            return Err(format!(
                "invalid port range specified: minport:{min} -> maxport {max}"
            ));
        }
        Ok(MultiPort {
            host: host.to_string(),
            min: min as u16,
            max: max as u16,
        })
    }

    /// kcptun's dial rule: every new mux connection goes to
    /// `min + r mod (max - min + 1)` for a fresh uniformly random 64-bit `r`
    /// (kcptun reads it from `crypto/rand`).
    pub fn port_for(&self, r: u64) -> u16 {
        let span = u64::from(self.max - self.min) + 1;
        self.min + (r % span) as u16
    }

    /// `host:port` for `port`, with Go's empty host meaning every interface.
    pub fn addr(&self, port: u16) -> String {
        if self.host.is_empty() {
            format!("0.0.0.0:{port}")
        } else {
            format!("{}:{port}", self.host)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    fn client(s: &[&str], env: Option<&str>) -> ClientConfig {
        match ClientConfig::from_args(&a(s), env.map(Into::into)) {
            Ok(Parsed::Run(c)) => c,
            other => panic!("{s:?}: {other:?}"),
        }
    }

    #[test]
    fn go_flag_syntax_and_defaults() {
        let c = client(
            &[
                "-l",
                ":1",
                "--remoteaddr=h:2",
                "--nocomp",
                "--acknodelay=false",
                "-mtu",
                "1200",
                "--ds",
                "0",
            ],
            None,
        );
        assert_eq!((c.localaddr.as_str(), c.remoteaddr.as_str()), (":1", "h:2"));
        assert!(c.common.nocomp && !c.common.acknodelay);
        assert_eq!(
            (
                c.common.mtu,
                c.common.datashard,
                c.common.sndwnd,
                c.common.rcvwnd
            ),
            (1200, 0, 128, 512)
        );
        let Ok(Parsed::Run(s)) = ServerConfig::from_args(&[], None) else {
            panic!()
        };
        assert_eq!(
            (s.common.sndwnd, s.common.rcvwnd, s.common.closewait),
            (1024, 1024, 30)
        );
        assert_eq!(s.common.qpp_count, 61);
    }

    #[test]
    fn key_env_is_a_default_the_flag_overrides() {
        assert_eq!(client(&[], Some("fromenv")).common.key, "fromenv");
        assert_eq!(
            client(&["--key", "flag"], Some("fromenv")).common.key,
            "flag"
        );
        assert_eq!(client(&[], None).common.key, "it's a secrect");
    }

    #[test]
    fn bad_flags_are_errors() {
        for bad in [
            &["--bogus", "1"][..],
            &["--mtu", "x"],
            &["--mtu"],
            &["-t", "a:1"],
            &["stray"],
            &["--quiet=maybe"],
        ] {
            assert!(
                matches!(
                    ClientConfig::from_args(&a(bad), None),
                    Err(TunnelError::Usage(_))
                ),
                "{bad:?}"
            );
        }
        assert!(ServerConfig::from_args(&a(&["--conn", "2"]), None).is_err());
    }

    #[test]
    fn refused_flags_name_the_flag() {
        for (flag, name) in [("--tcp", "--tcp"), ("--pprof", "--pprof")] {
            let c = client(&[flag], None);
            match c.validate() {
                Err(TunnelError::Refused { flag, .. }) => assert_eq!(flag, name),
                other => panic!("{other:?}"),
            }
        }
        let c = client(&["--QPPCount", "0", "--QPP"], None);
        assert!(matches!(
            c.validate(),
            Err(TunnelError::InvalidFlag {
                flag: "QPPCount",
                ..
            })
        ));
        let c = client(&["--crypt", "bogus"], None);
        assert!(
            matches!(
                c.validate(),
                Err(TunnelError::InvalidFlag { flag: "crypt", .. })
            ),
            "kcptun falls back to aes silently; we name the flag"
        );
        let c = client(&["--smuxver", "3"], None);
        assert!(matches!(
            c.validate(),
            Err(TunnelError::InvalidFlag {
                flag: "smuxver",
                ..
            })
        ));
    }

    #[test]
    fn json_overrides_flags_with_kcptun_keys() {
        let mut s = match ServerConfig::from_args(&a(&["--mtu", "1000", "--crypt", "aes"]), None) {
            Ok(Parsed::Run(s)) => s,
            o => panic!("{o:?}"),
        };
        s.apply_json(
            r#"{"listen": ":4000", "target": "/tmp/x.sock", "key": "k", "crypt": "salsa20", "mode": "fast2",
                "mtu": 1200, "nocomp": true, "smuxver": 1, "snmplog": "x-20060102.log", "QPP": true,
                "qpp-count": 7, "closewait": 5}"#,
        )
        .expect("json");
        assert_eq!(
            (
                s.listen.as_str(),
                s.common.key.as_str(),
                s.common.crypt.as_str()
            ),
            (":4000", "k", "salsa20")
        );
        assert_eq!(
            (
                s.common.mtu,
                s.common.smuxver,
                s.common.qpp_count,
                s.common.closewait
            ),
            (1200, 1, 7, 5)
        );
        assert!(s.common.nocomp && s.common.qpp);
        assert_eq!(s.common.mode, "fast2");
        assert!(
            s.apply_json(r#"{"remoteaddr": "x:1"}"#).is_err(),
            "client key on the server"
        );
        assert!(s.apply_json(r#"{"mtu": "big"}"#).is_err());
        assert!(s.apply_json(r#"{"mtu": 1.5}"#).is_err());
        assert!(s.apply_json("[1]").is_err());
    }

    #[test]
    fn unix_rule_is_go_split_host_port() {
        assert_eq!(
            Endpoint::parse("127.0.0.1:22"),
            Endpoint::Tcp("127.0.0.1:22".into())
        );
        assert_eq!(Endpoint::parse(":12948"), Endpoint::Tcp(":12948".into()));
        assert_eq!(
            Endpoint::parse("[::1]:80"),
            Endpoint::Tcp("[::1]:80".into())
        );
        assert_eq!(
            Endpoint::parse("/run/app.sock"),
            Endpoint::Unix("/run/app.sock".into())
        );
        assert_eq!(Endpoint::parse("::1:80"), Endpoint::Unix("::1:80".into()));
        assert_eq!(Endpoint::parse("sock"), Endpoint::Unix("sock".into()));
    }

    #[test]
    fn multiport_parse_and_dial_rule() {
        let m = MultiPort::parse("h:3000-3002").expect("range");
        assert_eq!((m.host.as_str(), m.min, m.max), ("h", 3000, 3002));
        let ports: Vec<u16> = [0, 1, 2, 3, u64::MAX]
            .iter()
            .map(|r| m.port_for(*r))
            .collect();
        // u64::MAX = 3 * 6148914691236517205, so it maps to the first port.
        assert_eq!(ports, [3000, 3001, 3002, 3000, 3000]);
        let one = MultiPort::parse(":29900").expect("single");
        assert_eq!(
            (one.min, one.max, one.addr(29900).as_str()),
            (29900, 29900, "0.0.0.0:29900")
        );
        for bad in ["h:0", "h:5-4", "h:70000", "nohost", "h:", "h:1-x"] {
            assert!(MultiPort::parse(bad).is_err(), "{bad}");
        }
    }
}
