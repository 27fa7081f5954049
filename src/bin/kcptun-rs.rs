//! `kcptun-rs`: a kcptun-compatible TCP tunnel (client and server), a thin
//! command line over [`kcp_session::tunnel`].
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
//! JSON config, whose values override the command line as in kcptun. The key
//! defaults to `$KCPTUN_KEY`. SIGUSR1 writes the SNMP counters to the log.

use std::process::ExitCode;

use kcp_session::tunnel::config::{ClientConfig, Parsed, ServerConfig, KEY_ENV};
use kcp_session::tunnel::log::Log;
use kcp_session::tunnel::{Client, Server, TunnelError};

const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Client,
    Server,
}

fn usage(role: Role) -> String {
    let (name, addrs) = match role {
        Role::Client => (
            "client",
            "  -l, --localaddr ADDR   local listen address or unix socket path (default \":12948\")\n  \
             -r, --remoteaddr ADDR  server address, host:port or host:min-max (default \"vps:29900\")\n  \
             --conn N               KCP sessions to the server (default 1)\n  \
             --autoexpire N         seconds before a session is replaced, 0 = never (default 0)\n  \
             --scavengettl N        seconds an expired session lives on (default 600)\n",
        ),
        Role::Server => (
            "server",
            "  -l, --listen ADDR      listen address, host:port or host:min-max (default \":29900\")\n  \
             -t, --target ADDR      target address or unix socket path (default \"127.0.0.1:12948\")\n",
        ),
    };
    let (wnd, cw) = match role {
        Role::Client => ("128/512", 0),
        Role::Server => ("1024/1024", 30),
    };
    format!(
        "kcptun-rs {VERSION} - kcptun-compatible {name}\n\nUSAGE: kcptun-rs {name} [options]\n\n\
         {addrs}  --key KEY              pre-shared secret (default $KCPTUN_KEY or \"it's a secrect\")\n  \
         --crypt NAME           aes, aes-128, aes-192, aes-128-gcm, salsa20, blowfish, twofish,\n                         \
         cast5, 3des, tea, xtea, xor, sm4, none, null (default \"aes\")\n  \
         --mode NAME            fast3, fast2, fast, normal, manual (default \"fast\")\n  \
         --nodelay/--interval/--resend/--nc  KCP NoDelay for --mode manual (0/50/0/0)\n  \
         --mtu N                (default 1350; above 1472 clamped)\n  \
         --sndwnd N / --rcvwnd N  windows in packets (default {wnd})\n  \
         --datashard, --ds N / --parityshard, --ps N  Reed-Solomon FEC (default 10/3)\n  \
         --dscp N               DSCP (6 bit) (default 0)\n  \
         --nocomp               disable Snappy compression\n  \
         --acknodelay           flush ACKs immediately\n  \
         --sockbuf N            socket buffers in bytes (default 4194304)\n  \
         --smuxver N            smux version 1 or 2 (default 2)\n  \
         --smuxbuf N            session receive budget in bytes (default 4194304)\n  \
         --streambuf N          per-stream window, smux v2 (default 2097152)\n  \
         --framesize N          smux max frame size (default 8192)\n  \
         --keepalive N          seconds between smux keepalives (default 10)\n  \
         --ratelimit N          send rate limit in bytes/s, 0 = off (default 0)\n  \
         --closewait N          seconds the other direction may go on after one ends (default {cw})\n  \
         --snmplog PATH         SNMP CSV log, Go time layout in the name (UTC), e.g. ./snmp-20060102.log\n  \
         --snmpperiod N         seconds between SNMP rows (default 60)\n  \
         --log FILE             log to FILE instead of stderr\n  \
         --quiet                no stream open/close messages\n  \
         --QPP, --QPPCount N    kcptun's Quantum Permutation Pads on every stream (default count 61)\n  \
         --tcp, --pprof         refused (fake-TCP transport, Go profiler)\n  \
         -c FILE                kcptun JSON config (overrides the command line)\n  \
         -h, --help / -v, --version\n"
    )
}

/// Writes the SNMP counters to `log` on every SIGUSR1, as kcptun does.
#[cfg(unix)]
fn dump_on_sigusr1(log: Log) -> Result<(), TunnelError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut sig = signal(SignalKind::user_defined1()).map_err(|source| TunnelError::Io {
        what: "install the SIGUSR1 handler".into(),
        source,
    })?;
    tokio::spawn(async move {
        while sig.recv().await.is_some() {
            log.line(&kcp_session::tunnel::log::snmp_dump_line(
                &kcp_session::stats::global(),
            ));
        }
    });
    Ok(())
}

/// No SIGUSR1 outside unix.
#[cfg(not(unix))]
fn dump_on_sigusr1(_log: Log) -> Result<(), TunnelError> {
    Ok(())
}

/// Completes on Ctrl-C (there is no SIGTERM outside unix).
#[cfg(not(unix))]
async fn terminated() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Completes on SIGINT or SIGTERM, so unix sockets are removed on the way out.
#[cfg(unix)]
async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn run(role: Role, args: Vec<String>) -> Result<Option<String>, TunnelError> {
    let key_env = std::env::var(KEY_ENV).ok();
    match role {
        Role::Client => match ClientConfig::from_args(&args, key_env)? {
            Parsed::Help => Ok(Some(usage(role))),
            Parsed::Version => Ok(Some(format!("kcptun-rs version {VERSION}"))),
            Parsed::Run(cfg) => {
                let log = Log::open(&cfg.common.log)?;
                let client = Client::bind_with_log(&cfg, log.clone()).await?;
                dump_on_sigusr1(log)?;
                client.run_until(terminated()).await.map(|_| None)
            }
        },
        Role::Server => match ServerConfig::from_args(&args, key_env)? {
            Parsed::Help => Ok(Some(usage(role))),
            Parsed::Version => Ok(Some(format!("kcptun-rs version {VERSION}"))),
            Parsed::Run(cfg) => {
                let log = Log::open(&cfg.common.log)?;
                let server = Server::bind_with_log(&cfg, log.clone()).await?;
                dump_on_sigusr1(log)?;
                server.run_until(terminated()).await.map(|_| None)
            }
        },
    }
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().collect();
    let argv0 = if args.is_empty() {
        String::new()
    } else {
        args.remove(0)
    };
    let role = if argv0.ends_with("client") {
        Role::Client
    } else if argv0.ends_with("server") {
        Role::Server
    } else {
        match args.first().map(String::as_str) {
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
                eprintln!("usage: kcptun-rs client|server [options]   (kcptun-rs client --help for the options)");
                return ExitCode::from(2);
            }
        }
    };
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
    match rt.block_on(run(role, args)) {
        Ok(Some(text)) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e @ TunnelError::Usage(_)) => {
            eprintln!("kcptun-rs: {e}\n\n{}", usage(role));
            ExitCode::from(2)
        }
        Err(e @ (TunnelError::Refused { .. } | TunnelError::InvalidFlag { .. })) => {
            eprintln!("kcptun-rs: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("kcptun-rs: {e}");
            ExitCode::FAILURE
        }
    }
}
