//! The client listener: accept loop, connection cap and graceful drain.
//!
//! Guards against overload and abrupt stops: past `max_connections` new connections wait in the
//! kernel's accept backlog instead of exhausting memory or file descriptors; accept errors (such
//! as running out of descriptors) back off instead of spinning; on shutdown the listener closes,
//! in-flight requests get `shutdown_grace` to finish, and queued audit records are flushed.

pub mod conn;
pub mod framing;
pub mod io;
pub mod policy;
pub mod reload;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

pub(crate) mod admin;
use crate::audit::AuditSink;
use crate::audit::otlp::SpanExport;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::tls::CertStore;
use policy::{Policy, Shared};
pub use reload::Reloader;

/// The policy in force, swapped whole by a reload; requests load it as they arrive.
pub type Policies = Arc<ArcSwap<Policy>>;

/// Pause after a failed `accept`, so that descriptor exhaustion does not spin a core.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// Interval of the start-up upstream probe that readiness waits for.
pub const UPSTREAM_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How often idle limiter state is dropped.
pub const LIMITER_PRUNE_INTERVAL: Duration = Duration::from_secs(10);
/// Longest wait for the audit writer to flush on shutdown.
pub const AUDIT_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the gateway could not start (or a reload could not be applied).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener address could not be bound.
    #[error("cannot listen on {addr} ({source})")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The audit output could not be opened.
    #[error("cannot open the audit log ({0})")]
    Audit(std::io::Error),
    /// The upstream client could not be built.
    #[error("{0}")]
    Upstream(String),
    /// Authentication could not be set up.
    #[error("{0}")]
    Auth(String),
    /// The rate limiter could not be set up.
    #[error("{0}")]
    RateLimit(String),
    /// The span exporter could not be set up.
    #[error("{0}")]
    Tracing(String),
    /// Data-loss prevention could not be set up.
    #[error("{0}")]
    Dlp(String),
    /// The MCP policy could not be set up (the pins file).
    #[error("{0}")]
    Mcp(String),
    /// The injection classifier's client could not be set up.
    #[error("{0}")]
    Classifier(String),
}

/// A gateway with its listeners bound, ready to serve.
pub struct Gateway {
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    metrics_listener: Option<TcpListener>,
    shared: Arc<Shared>,
    policies: Policies,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("listen", &self.listener.local_addr().ok())
            .finish_non_exhaustive()
    }
}

async fn bind(addr: SocketAddr, backlog: u32) -> Result<TcpListener, StartError> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    };
    socket
        .and_then(|s| {
            s.set_reuseaddr(true)?;
            s.bind(addr)?;
            s.listen(backlog)
        })
        .map_err(|source| StartError::Bind { addr, source })
}

/// Accept queue of the admin listener: a handful of probes and scrapes.
const ADMIN_BACKLOG: u32 = 128;

impl Gateway {
    /// Builds the runtime state and binds the client and admin listeners.
    pub async fn bind(config: Config) -> Result<Gateway, StartError> {
        // TLS clients built by libraries (the Redis connection's rediss://) use the process
        // default provider; make it the same one the gateway uses everywhere else.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let metrics = Arc::new(Metrics::new());
        let audit = AuditSink::start(&config.audit, metrics.clone()).map_err(StartError::Audit)?;
        let certs = config
            .server
            .tls
            .as_ref()
            .map(|t| Arc::new(CertStore::new(t.server_config.clone(), t.files.clone())));
        let listener = bind(config.server.listen, config.server.listen_backlog).await?;
        let admin_listener = match &config.admin {
            Some(admin) => Some(bind(admin.listen, ADMIN_BACKLOG).await?),
            None => None,
        };
        let metrics_listener = match &config.metrics {
            Some(m) => Some(bind(m.listen, ADMIN_BACKLOG).await?),
            None => None,
        };
        let shared = Arc::new(Shared {
            metrics,
            audit,
            certs,
            spans: start_span_export(&config)?,
            reload_lock: tokio::sync::Mutex::new(()),
            sockets: Arc::default(),
        });
        let policy = Policy::build(config, &shared, None)?;
        Ok(Gateway {
            listener,
            admin_listener,
            metrics_listener,
            shared,
            policies: Arc::new(ArcSwap::from_pointee(policy)),
        })
    }

    /// The bound client address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.policies.load().config.server.listen)
    }

    /// The bound admin address, when an admin listener is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The bound metrics-only address, when `[metrics]` is configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The handle that reloads this gateway's configuration and certificates.
    pub fn reloader(&self) -> Reloader {
        Reloader::new(self.policies.clone(), self.shared.clone())
    }

    /// The audit log's sender, for [`AuditSink::reopen`] after log rotation.
    pub fn audit_sink(&self) -> AuditSink {
        self.shared.audit.clone()
    }

    /// Serves until `shutdown` completes, then drains connections and flushes the audit log.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) {
        let Gateway {
            listener,
            admin_listener,
            metrics_listener,
            shared,
            policies,
        } = self;
        let (stop_admin, admin_stopped) = watch::channel(false);
        if let Some(admin_listener) = admin_listener {
            let state = admin::AdminState {
                metrics: shared.metrics.clone(),
                policies: policies.clone(),
                audit: shared.audit.clone(),
            };
            let router = admin::router(state);
            tokio::spawn(admin::serve(
                admin_listener,
                router,
                "admin",
                admin_stopped.clone(),
            ));
        }
        if let Some(metrics_listener) = metrics_listener {
            let router = admin::metrics_router(shared.metrics.clone());
            tokio::spawn(admin::serve(
                metrics_listener,
                router,
                "metrics",
                admin_stopped,
            ));
        }
        let reloader = Reloader::new(policies.clone(), shared.clone());
        let watching = tokio::spawn(reloader.watch_files());
        let pruning = tokio::spawn(prune_limiters(policies.clone()));

        let (max_connections, shutdown_grace) = {
            let config = &policies.load().config;
            (config.server.max_connections, config.server.shutdown_grace)
        };
        // Every connection holds a slot until it is closed, and watches `stop`: at shutdown it
        // finishes its in-flight requests and closes, and all slots back means all are closed.
        let (stop, stopped) = watch::channel(false);
        let connection_slots = Arc::new(Semaphore::new(max_connections));
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                biased;
                () = &mut shutdown => break,
                permit = connection_slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let accepted = tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let settings = policies.load().conn.clone();
                    tokio::spawn(conn::serve(
                        stream,
                        peer,
                        settings,
                        policies.clone(),
                        stopped.clone(),
                        permit,
                    ));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; backing off");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            }
        }
        drop(listener);
        watching.abort();
        pruning.abort();
        tracing::info!(grace = ?shutdown_grace, "shutting down: finishing in-flight requests");
        let _ = stop.send(true);
        shared.sockets.stop();
        let all_closed = async {
            let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
            let _ = connection_slots.acquire_many(all).await;
            shared.sockets.all_closed().await;
        };
        match tokio::time::timeout(shutdown_grace, all_closed).await {
            Ok(()) => tracing::info!("all connections closed"),
            Err(_) => tracing::warn!("shutdown grace elapsed; closing remaining connections"),
        }
        let audit = shared.audit.clone();
        let flushed = tokio::task::spawn_blocking(move || audit.flush(AUDIT_FLUSH_TIMEOUT)).await;
        if !matches!(flushed, Ok(true)) {
            tracing::error!("audit log could not be flushed before exit");
        }
        if let Some(spans) = shared.spans.clone() {
            let _ = tokio::task::spawn_blocking(move || spans.shutdown()).await;
        }
        let _ = stop_admin.send(true);
    }
}

/// Starts the OTLP exporter when `[tracing]` asks for one (and the build has it).
#[cfg(feature = "otlp")]
fn start_span_export(config: &Config) -> Result<Option<Arc<SpanExport>>, StartError> {
    match &config.tracing {
        None => Ok(None),
        Some(settings) => SpanExport::new(settings)
            .map(|export| Some(Arc::new(export)))
            .map_err(StartError::Tracing),
    }
}

/// Without the `otlp` feature, config validation has refused `[tracing]`.
#[cfg(not(feature = "otlp"))]
fn start_span_export(_: &Config) -> Result<Option<Arc<SpanExport>>, StartError> {
    Ok(None)
}

/// Forgets idle users and addresses, so limiter memory follows the active population.
async fn prune_limiters(policies: Policies) {
    let mut every = tokio::time::interval(LIMITER_PRUNE_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let policy = policies.load_full();
        if let Some(limiter) = &policy.rate_limiter {
            limiter.prune();
        }
        if let Some(guard) = &policy.flood_guard {
            guard.prune();
        }
        if let Some(budgets) = &policy.budgets {
            budgets.prune();
        }
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
