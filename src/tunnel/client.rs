//! The kcptun client: accepts local TCP (or unix socket) connections and
//! carries each over an smux stream of a pooled KCP session to the server.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kcp_session::tunnel::TunnelError> {
//! use kcp_session::tunnel::{config::ClientConfig, Client};
//! let cfg = ClientConfig {
//!     localaddr: "127.0.0.1:0".into(),
//!     remoteaddr: "127.0.0.1:29900".into(),
//!     ..ClientConfig::default()
//! };
//! let client = Client::bind(&cfg).await?;
//! println!("listening on {}", client.local_addr());
//! client.run_until(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
#[cfg(unix)]
use tokio::net::UnixListener;

use super::config::{ClientConfig, ClientPlan, Endpoint};
use super::log::Log;
use super::pool::{self, Pool};
use super::pump::{self, Counters, Duplex, Shared, Stats, StreamWrap};
use super::TunnelError;

/// Where a client accepts local connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalAddr {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A unix socket path.
    Unix(PathBuf),
}

impl std::fmt::Display for LocalAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LocalAddr::Tcp(a) => write!(f, "{a}"),
            LocalAddr::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

enum Local {
    Tcp(TcpListener),
    #[cfg(unix)]
    Unix {
        listener: UnixListener,
        /// Held for its `Drop`.
        _unlink: UnlinkOnDrop,
    },
}

/// Removes a unix socket file when the listener goes, as Go's does.
#[cfg(unix)]
struct UnlinkOnDrop(PathBuf);

#[cfg(unix)]
impl Drop for UnlinkOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A bound kcptun client; [`run`](Self::run) or [`run_until`](Self::run_until) serves it.
pub struct Client {
    plan: Arc<ClientPlan>,
    local: Local,
    addr: LocalAddr,
    shared: Shared,
}

impl Client {
    /// Checks `config` and binds the local listener (`--localaddr`). Opens
    /// `--log` if set. Refuses flags it cannot honour (see [`ClientConfig::validate`]).
    pub async fn bind(config: &ClientConfig) -> Result<Client, TunnelError> {
        let plan = config.validate()?;
        let log = Log::open(&plan.common.log)?;
        Client::bind_plan(plan, log).await
    }

    /// As [`bind`](Self::bind), logging to `log` instead of `--log`.
    pub async fn bind_with_log(config: &ClientConfig, log: Log) -> Result<Client, TunnelError> {
        Client::bind_plan(config.validate()?, log).await
    }

    async fn bind_plan(plan: ClientPlan, log: Log) -> Result<Client, TunnelError> {
        let wrap = StreamWrap::new(&plan.common)?;
        let (local, addr) = match &plan.local {
            Endpoint::Tcp(a) => {
                let bind = if a.starts_with(':') {
                    format!("0.0.0.0{a}")
                } else {
                    a.clone()
                };
                let l =
                    TcpListener::bind(bind.as_str())
                        .await
                        .map_err(|source| TunnelError::Io {
                            what: format!("listen on --localaddr {a}"),
                            source,
                        })?;
                let addr = l.local_addr().map_err(|source| TunnelError::Io {
                    what: "local address".into(),
                    source,
                })?;
                (Local::Tcp(l), LocalAddr::Tcp(addr))
            }
            #[cfg(not(unix))]
            Endpoint::Unix(_) => {
                return Err(TunnelError::Refused {
                    flag: "--localaddr",
                    reason: "a unix socket path needs a unix platform".into(),
                });
            }
            #[cfg(unix)]
            Endpoint::Unix(p) => {
                let l = UnixListener::bind(p).map_err(|source| TunnelError::Io {
                    what: format!("listen on unix socket --localaddr {}", p.display()),
                    source,
                })?;
                (
                    Local::Unix {
                        listener: l,
                        _unlink: UnlinkOnDrop(p.clone()),
                    },
                    LocalAddr::Unix(p.clone()),
                )
            }
        };
        log.line(&format!("listening on: {addr}"));
        log.line(&format!("remote address: {}", config_remote(&plan)));
        log.line(&format!(
            "conn: {} autoexpire: {:?} scavengettl: {:?} {}",
            plan.conn, plan.autoexpire, plan.scavenge_ttl, plan.common.summary
        ));
        let shared = Shared {
            counters: Arc::new(Counters::default()),
            wrap,
            close_wait: plan.common.close_wait,
            quiet: plan.common.quiet,
            log,
        };
        Ok(Client {
            plan: Arc::new(plan),
            local,
            addr,
            shared,
        })
    }

    /// The address local connections are accepted on.
    pub fn local_addr(&self) -> &LocalAddr {
        &self.addr
    }

    /// The live counters (keep the `Arc` to read them while the client runs).
    pub fn counters(&self) -> Arc<Counters> {
        self.shared.counters.clone()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Serves until an accept on the local listener fails.
    pub async fn run(self) -> Result<(), TunnelError> {
        self.run_until(std::future::pending()).await
    }

    /// Serves until `shutdown` completes; then stops accepting, ends every
    /// stream and session of this client and returns `Ok`.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), TunnelError> {
        let (pool, rx) = Pool::new(self.plan.clone(), self.shared.clone());
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(pool::scavenger(rx, self.shared.clone()));
        if let Some((path, period)) = self.plan.common.snmp_log.clone() {
            tasks.spawn(super::log::snmp_logger(
                path,
                period,
                self.shared.log.clone(),
            ));
        }
        tokio::pin!(shutdown);
        let res = loop {
            let accepted: std::io::Result<(Box<dyn Duplex>, String)> = tokio::select! {
                _ = &mut shutdown => break Ok(()),
                a = accept(&self.local) => a,
            };
            let (conn, peer) = match accepted {
                Ok(c) => c,
                Err(source) => {
                    break Err(TunnelError::Io {
                        what: "accept".into(),
                        source,
                    })
                }
            };
            let (pool, shared) = (pool.clone(), self.shared.clone());
            tasks.spawn(async move {
                let mux = pool.next().await;
                let stream = match mux.open_stream().await {
                    Ok(s) => s,
                    Err(e) => {
                        shared.log.line(&format!("open stream: {e}"));
                        return;
                    }
                };
                let id = stream.id();
                Counters::add(&shared.counters.streams_opened, 1);
                if !shared.quiet {
                    shared
                        .log
                        .line(&format!("stream opened in: {peer} out: ({id})"));
                }
                let tunnel = shared.wrap.wrap_stream(stream);
                pump::pipe(conn, tunnel, shared.close_wait, &shared.counters, true).await;
                Counters::add(&shared.counters.streams_closed, 1);
                if !shared.quiet {
                    shared
                        .log
                        .line(&format!("stream closed in: {peer} out: ({id})"));
                }
            });
            // Reap finished streams so the set stays as large as the live ones.
            while tasks.try_join_next().is_some() {}
        };
        tasks.shutdown().await;
        drop(pool);
        res
    }
}

fn config_remote(plan: &ClientPlan) -> String {
    let r = &plan.remote;
    if r.min == r.max {
        format!("{}:{}", r.host, r.min)
    } else {
        format!("{}:{}-{}", r.host, r.min, r.max)
    }
}

async fn accept(local: &Local) -> std::io::Result<(Box<dyn Duplex>, String)> {
    match local {
        Local::Tcp(l) => {
            let (s, peer) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Ok((Box::new(s), peer.to_string()))
        }
        #[cfg(unix)]
        Local::Unix { listener: l, .. } => {
            let (s, _) = l.accept().await?;
            Ok((Box::new(s), "@".into()))
        }
    }
}
