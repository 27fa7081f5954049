//! The kcptun server: accepts KCP sessions on every port of `--listen`,
//! runs smux over each and connects every stream to `--target` (TCP or a
//! unix socket).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
#[cfg(unix)]
use tokio::net::UnixStream;

use super::config::{Endpoint, ServerConfig, ServerPlan};
use super::log::Log;
use super::pump::{self, Counters, Duplex, Shared, Stats, StreamWrap};
use super::TunnelError;
use crate::comp::CompStream;
use crate::listener::Listener;
use crate::smux;

/// A bound kcptun server; [`run`](Self::run) or [`run_until`](Self::run_until) serves it.
pub struct Server {
    plan: Arc<ServerPlan>,
    listeners: Vec<Listener>,
    shared: Shared,
}

impl Server {
    /// Checks `config` and binds a KCP listener on every port of
    /// `--listen` (kcptun's multiport). Opens `--log` if set.
    pub async fn bind(config: &ServerConfig) -> Result<Server, TunnelError> {
        let plan = config.validate()?;
        let log = Log::open(&plan.common.log)?;
        Server::bind_plan(plan, log).await
    }

    /// As [`bind`](Self::bind), logging to `log` instead of `--log`.
    pub async fn bind_with_log(config: &ServerConfig, log: Log) -> Result<Server, TunnelError> {
        Server::bind_plan(config.validate()?, log).await
    }

    async fn bind_plan(plan: ServerPlan, log: Log) -> Result<Server, TunnelError> {
        let wrap = StreamWrap::new(&plan.common)?;
        let mut listeners = Vec::new();
        for port in plan.listen.min..=plan.listen.max {
            let addr = plan.listen.addr(port);
            let l = Listener::listen(addr.as_str(), &plan.common.kcp)
                .await
                .map_err(|source| TunnelError::Session {
                    what: format!("listen on {addr}"),
                    source,
                })?;
            log.line(&format!("listening on: {}/udp", l.local_addr()));
            listeners.push(l);
        }
        log.line(&format!("target: {:?}", plan.target));
        log.line(&plan.common.summary);
        let shared = Shared {
            counters: Arc::new(Counters::default()),
            wrap,
            close_wait: plan.common.close_wait,
            quiet: plan.common.quiet,
            log,
        };
        Ok(Server {
            plan: Arc::new(plan),
            listeners,
            shared,
        })
    }

    /// The UDP addresses listened on, one per port of the range.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(Listener::local_addr).collect()
    }

    /// The live counters (keep the `Arc` to read them while the server runs).
    pub fn counters(&self) -> Arc<Counters> {
        self.shared.counters.clone()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Serves until a listener fails.
    pub async fn run(self) -> Result<(), TunnelError> {
        self.run_until(std::future::pending()).await
    }

    /// Serves until `shutdown` completes; then closes the listeners, ends
    /// every session and stream of this server and returns `Ok`.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), TunnelError> {
        let mut tasks = tokio::task::JoinSet::new();
        if let Some((path, period)) = self.plan.common.snmp_log.clone() {
            tasks.spawn(super::log::snmp_logger(
                path,
                period,
                self.shared.log.clone(),
            ));
        }
        let mut loops = tokio::task::JoinSet::new();
        for l in self.listeners {
            let (plan, shared) = (self.plan.clone(), self.shared.clone());
            loops.spawn(accept_loop(l, plan, shared));
        }
        let res = tokio::select! {
            _ = shutdown => Ok(()),
            r = loops.join_next() => match r {
                Some(Ok(Err(e))) => Err(e),
                _ => Ok(()),
            },
        };
        loops.shutdown().await;
        tasks.shutdown().await;
        res
    }
}

async fn accept_loop(
    l: Listener,
    plan: Arc<ServerPlan>,
    shared: Shared,
) -> Result<(), TunnelError> {
    let port = l.local_addr().port();
    let mut muxes = tokio::task::JoinSet::new();
    loop {
        let sess = l.accept().await.map_err(|source| TunnelError::Session {
            what: "accept".into(),
            source,
        })?;
        shared
            .log
            .line(&format!("remote address: {}", sess.peer_addr()));
        shared.counters.session_on(port);
        muxes.spawn(handle_mux(sess, plan.clone(), shared.clone()));
        while muxes.try_join_next().is_some() {}
    }
}

async fn handle_mux(sess: crate::Session, plan: Arc<ServerPlan>, shared: Shared) {
    shared.log.line(&format!(
        "smux version: {} on connection: {} -> {}",
        plan.common.smux.version.byte(),
        sess.local_addr(),
        sess.peer_addr()
    ));
    let mux = if plan.common.compression {
        smux::Session::server(CompStream::new(sess), plan.common.smux)
    } else {
        smux::Session::server(sess, plan.common.smux)
    };
    let mux = match mux {
        Ok(m) => m,
        Err(e) => {
            shared.log.line(&format!("smux: {e}"));
            return;
        }
    };
    let mut streams = tokio::task::JoinSet::new();
    loop {
        let stream = match mux.accept_stream().await {
            Ok(s) => s,
            Err(e) => {
                shared.log.line(&format!("smux session ended: {e}"));
                return;
            }
        };
        let (plan, shared) = (plan.clone(), shared.clone());
        streams.spawn(async move {
            let id = stream.id();
            let target: Box<dyn Duplex> = match connect(&plan.target).await {
                Ok(t) => t,
                Err(e) => {
                    shared
                        .log
                        .line(&format!("dial target {:?}: {e}", plan.target));
                    return;
                }
            };
            Counters::add(&shared.counters.streams_opened, 1);
            if !shared.quiet {
                shared
                    .log
                    .line(&format!("stream opened in: ({id}) out: {:?}", plan.target));
            }
            let tunnel = shared.wrap.wrap_stream(stream);
            pump::pipe(target, tunnel, shared.close_wait, &shared.counters, false).await;
            Counters::add(&shared.counters.streams_closed, 1);
            if !shared.quiet {
                shared
                    .log
                    .line(&format!("stream closed in: ({id}) out: {:?}", plan.target));
            }
        });
        while streams.try_join_next().is_some() {}
    }
}

async fn connect(target: &Endpoint) -> std::io::Result<Box<dyn Duplex>> {
    match target {
        Endpoint::Tcp(a) => {
            let a = if a.starts_with(':') {
                format!("127.0.0.1{a}")
            } else {
                a.clone()
            };
            let s = TcpStream::connect(a.as_str()).await?;
            let _ = s.set_nodelay(true);
            Ok(Box::new(s))
        }
        #[cfg(unix)]
        Endpoint::Unix(p) => Ok(Box::new(UnixStream::connect(p).await?)),
        #[cfg(not(unix))]
        Endpoint::Unix(_) => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "a unix socket --target needs a unix platform",
        )),
    }
}
