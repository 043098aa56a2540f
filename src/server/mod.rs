//! The client listener: accept loop, connection cap and graceful drain.
//!
//! Guards against overload and abrupt stops: past `max_connections` new connections wait in the
//! kernel's accept backlog instead of exhausting memory or file descriptors; accept errors (such
//! as running out of descriptors) back off instead of spinning; on shutdown the listener closes,
//! in-flight requests get `shutdown_grace` to finish, and queued audit records are flushed.

pub mod conn;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::admin;
use crate::audit::{AuditSink, Auditor};
use crate::auth::Authenticator;
use crate::auth::jwks::KeyStore;
use crate::config::Config;
use crate::headers::SecurityHeaders;
use crate::metrics::Metrics;
use crate::pipeline::{self, Pipeline, Stages};
use crate::proxy::Upstream;
use crate::rate_limit::RateLimiter;
use crate::rate_limit::per_ip::FloodGuard;
use crate::request_id::ClientAddress;
use crate::validate::Validator;
use conn::ConnSettings;

/// Pause after a failed `accept`, so that descriptor exhaustion does not spin a core.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// Interval of the start-up upstream probe that readiness waits for.
pub const UPSTREAM_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How often idle limiter state is dropped.
pub const LIMITER_PRUNE_INTERVAL: Duration = Duration::from_secs(10);
/// Longest wait for the audit writer to flush on shutdown.
pub const AUDIT_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the gateway could not start.
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
}

/// A gateway with its listeners bound, ready to serve.
pub struct Gateway {
    config: Arc<Config>,
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    pipeline: Pipeline,
    metrics: Arc<Metrics>,
    audit: AuditSink,
    upstream: Arc<Upstream>,
    keys: Option<Arc<KeyStore>>,
    rate_limiter: Option<Arc<RateLimiter>>,
    flood_guard: Option<Arc<FloodGuard>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("listen", &self.listener.local_addr().ok())
            .finish_non_exhaustive()
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

impl Gateway {
    /// Builds the runtime state and binds the client and admin listeners.
    pub async fn bind(config: Config) -> Result<Gateway, StartError> {
        // TLS clients built by libraries (the Redis connection's rediss://) use the process
        // default provider; make it the same one the gateway uses everywhere else.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let metrics = Arc::new(Metrics::new());
        let audit = AuditSink::start(&config.audit, metrics.clone()).map_err(StartError::Audit)?;
        let upstream = Arc::new(
            Upstream::new(&config.upstream, metrics.clone()).map_err(StartError::Upstream)?,
        );
        let authenticator = match &config.auth {
            Some(settings) => Some(Arc::new(
                Authenticator::new(settings, metrics.clone()).map_err(StartError::Auth)?,
            )),
            None => None,
        };
        let keys = authenticator.as_ref().map(|a| a.key_store());
        let (rate_limiter, flood_guard) = match &config.rate_limit {
            None => (None, None),
            Some(settings) => (
                RateLimiter::new(settings, metrics.clone())
                    .map_err(StartError::RateLimit)?
                    .map(Arc::new),
                settings
                    .per_ip
                    .map(|p| Arc::new(FloodGuard::new(p.requests_per_second, p.burst))),
            ),
        };
        let listener = bind(config.server.listen).await?;
        let admin_listener = match &config.admin {
            Some(admin) => Some(bind(admin.listen).await?),
            None => None,
        };
        let pipeline = pipeline::build(Stages {
            auditor: Arc::new(Auditor {
                sink: audit.clone(),
                metrics: metrics.clone(),
            }),
            security_headers: SecurityHeaders::new(config.headers.clone()),
            max_header_bytes: config.server.max_header_bytes,
            client_address: Arc::new(ClientAddress::new(config.server.trusted_proxies.clone())),
            flood_guard: flood_guard.clone(),
            authenticator,
            rate_limiter: rate_limiter.clone(),
            validator: config
                .validation
                .clone()
                .map(|settings| Arc::new(Validator::new(settings, metrics.clone()))),
            upstream: upstream.clone(),
        });
        Ok(Gateway {
            config: Arc::new(config),
            listener,
            admin_listener,
            pipeline,
            metrics,
            audit,
            upstream,
            keys,
            rate_limiter,
            flood_guard,
        })
    }

    /// The bound client address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.config.server.listen)
    }

    /// The bound admin address, when an admin listener is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The audit log's sender, for [`AuditSink::reopen`] after log rotation.
    pub fn audit_sink(&self) -> AuditSink {
        self.audit.clone()
    }

    /// Serves until `shutdown` completes, then drains connections and flushes the audit log.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) {
        let Gateway {
            config,
            listener,
            admin_listener,
            pipeline,
            metrics,
            audit,
            upstream,
            keys,
            rate_limiter,
            flood_guard,
        } = self;
        let (stop_admin, admin_stopped) = watch::channel(false);
        if let Some(admin_listener) = admin_listener {
            let state = admin::AdminState {
                metrics: metrics.clone(),
                upstream: upstream.clone(),
                keys: keys.clone(),
                rate_limiter: rate_limiter.clone(),
            };
            tokio::spawn(admin::serve(admin_listener, state, admin_stopped));
        }
        let probe = tokio::spawn(probe_upstream(upstream));
        let key_refresh = keys.map(|keys| tokio::spawn(keys.refresh_forever()));
        let pruning = tokio::spawn(prune_limiters(rate_limiter, flood_guard));

        let settings = Arc::new(ConnSettings::new(&config.server, metrics));
        let graceful = GracefulShutdown::new();
        let connection_slots = Arc::new(Semaphore::new(config.server.max_connections));
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
                    tokio::spawn(conn::serve(
                        stream,
                        peer,
                        settings.clone(),
                        pipeline.clone(),
                        graceful.watcher(),
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
        probe.abort();
        pruning.abort();
        if let Some(task) = key_refresh {
            task.abort();
        }
        tracing::info!(grace = ?config.server.shutdown_grace, "shutting down: finishing in-flight requests");
        match tokio::time::timeout(config.server.shutdown_grace, graceful.shutdown()).await {
            Ok(()) => tracing::info!("all connections closed"),
            Err(_) => tracing::warn!("shutdown grace elapsed; closing remaining connections"),
        }
        let flushed = tokio::task::spawn_blocking(move || audit.flush(AUDIT_FLUSH_TIMEOUT)).await;
        if !matches!(flushed, Ok(true)) {
            tracing::error!("audit log could not be flushed before exit");
        }
        let _ = stop_admin.send(true);
    }
}

/// Forgets idle users and addresses, so limiter memory follows the active population.
async fn prune_limiters(
    rate_limiter: Option<Arc<RateLimiter>>,
    flood_guard: Option<Arc<FloodGuard>>,
) {
    let mut every = tokio::time::interval(LIMITER_PRUNE_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Some(limiter) = &rate_limiter {
            limiter.prune();
        }
        if let Some(guard) = &flood_guard {
            guard.prune();
        }
    }
}

/// Probes the upstream until it answers once, so that readiness does not wait for real traffic.
async fn probe_upstream(upstream: Arc<Upstream>) {
    while !upstream.has_answered() && !upstream.probe().await {
        tokio::time::sleep(UPSTREAM_PROBE_INTERVAL).await;
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
