//! Reloading without a restart: the configuration on SIGHUP, certificates when their files change.
//!
//! Guards against a reload that drops traffic or installs a broken policy: a new configuration is
//! validated and fully built before one atomic store puts it in force; an invalid one is refused
//! with one log line and a metric while the running one keeps serving. Settings that only a
//! restart can change (listener addresses, the connection cap, the audit output) are named in
//! the log instead of being silently ignored.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::config::{Config, DEFAULT_TLS_WATCH_INTERVAL};
use crate::revocation::ListUpdate;

use super::Policies;
use super::policy::{Policy, Shared};
use crate::tls::Rotation;

/// How often the revocation list file is checked: a revocation applies within about this time.
pub const REVOCATION_WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Reloads a running gateway; cheap to clone.
#[derive(Debug, Clone)]
pub struct Reloader {
    policies: Policies,
    shared: Arc<Shared>,
}

/// What a successful reload could not change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Keys whose new value takes effect only after a restart.
    pub needs_restart: Vec<&'static str>,
}

impl Reloader {
    pub(super) fn new(policies: Policies, shared: Arc<Shared>) -> Reloader {
        let reloader = Reloader { policies, shared };
        reloader.publish_certificate_expiry();
        reloader
    }

    /// Re-reads the config file at `path` and puts it in force; on any error the running
    /// configuration stays and the error is logged once and counted.
    pub async fn reload_file(&self, path: &Path) -> bool {
        match Config::load(path) {
            Ok(config) => self.reload(config).await.is_ok(),
            Err(e) => {
                self.refused(&e.to_string());
                false
            }
        }
    }

    /// Builds the runtime objects for `config` and swaps them in; requests in flight finish
    /// under the policy they started with.
    pub async fn reload(&self, config: Config) -> Result<Applied, String> {
        let _one_at_a_time = self.shared.reload_lock.lock().await;
        let current = self.policies.load_full();
        let needs_restart = restart_only_changes(&current.config, &config);
        let tls = config.server.tls.clone();
        let policy = match Policy::build(config, &self.shared, Some(&current)) {
            Ok(policy) => policy,
            Err(e) => {
                let message = e.to_string();
                self.refused(&message);
                return Err(message);
            }
        };
        if let (Some(certs), Some(tls)) = (&self.shared.certs, tls) {
            certs.replace(tls.server_config, tls.files);
            self.publish_certificate_expiry();
        }
        self.policies.store(Arc::new(policy));
        drop(current);
        self.shared.metrics.config_reload("ok");
        if needs_restart.is_empty() {
            tracing::info!("configuration reloaded");
        } else {
            tracing::warn!(
                restart_needed_for = %needs_restart.join(", "),
                "configuration reloaded; changed settings that take effect only after a restart"
            );
        }
        Ok(Applied { needs_restart })
    }

    /// Makes the audit writer reopen its file (after logrotate moved it away).
    pub fn reopen_audit(&self) {
        self.shared.audit.reopen();
    }

    fn refused(&self, reason: &str) {
        self.shared.metrics.config_reload("failed");
        tracing::error!(
            reason,
            "configuration reload refused; the running configuration stays in force"
        );
    }

    /// Re-reads the certificate and key files if they changed (`force`: even if not).
    pub fn check_certificates(&self, force: bool) -> Option<Rotation> {
        let certs = self.shared.certs.as_ref()?;
        let rotation = certs.check(force);
        match &rotation {
            Rotation::Unchanged => {}
            Rotation::Loaded => {
                self.shared.metrics.tls_reload("ok");
                self.publish_certificate_expiry();
                tracing::info!("TLS certificate reloaded; new connections use it");
            }
            Rotation::Refused(reason) => {
                self.shared.metrics.tls_reload("failed");
                tracing::error!(
                    reason = %reason,
                    "new TLS certificate files refused; the certificate in force stays"
                );
            }
        }
        Some(rotation)
    }

    /// Re-reads the API keys file if it changed.
    pub fn check_api_keys(&self) -> Option<ListUpdate> {
        let api_keys = self.policies.load().api_keys.clone()?;
        let update = api_keys.check();
        match &update {
            ListUpdate::Unchanged => {}
            ListUpdate::Loaded(entries) => tracing::info!(entries, "API keys reloaded"),
            ListUpdate::Refused(reason) => {
                tracing::error!(reason = %reason, "API keys file refused; the keys in force stay");
            }
        }
        Some(update)
    }

    /// Re-reads the MCP tool pins if an operator changed their file (an approval).
    pub fn check_mcp_pins(&self) {
        let policy = self.policies.load();
        let Some(pins) = policy.mcp.as_ref().and_then(|m| m.pins()) else {
            return;
        };
        match pins.check_file() {
            ListUpdate::Unchanged => {}
            ListUpdate::Loaded(pinned) => tracing::info!(pinned, "MCP tool pins reloaded"),
            ListUpdate::Refused(reason) => {
                tracing::error!(reason = %reason, "MCP pins file refused; the pins in force stay");
            }
        }
    }

    /// Re-reads the revocation list if its file changed.
    pub fn check_revocations(&self) -> Option<ListUpdate> {
        let revocations = self.policies.load().revocations.clone()?;
        let update = revocations.check();
        match &update {
            ListUpdate::Unchanged => {}
            ListUpdate::Loaded(entries) => {
                self.shared.metrics.revocation_reload("ok");
                tracing::info!(entries, "revocation list reloaded");
            }
            ListUpdate::Refused(reason) => {
                self.shared.metrics.revocation_reload("failed");
                tracing::error!(
                    reason = %reason,
                    "revocation list refused; the list in force stays"
                );
            }
        }
        Some(update)
    }

    /// Watches the certificate files and the revocation list for changes, forever.
    pub async fn watch_files(self) {
        let mut certs_checked = Instant::now();
        loop {
            let cert_interval = self
                .policies
                .load()
                .config
                .server
                .tls
                .as_ref()
                .map_or(DEFAULT_TLS_WATCH_INTERVAL, |t| t.watch_interval);
            tokio::time::sleep(cert_interval.min(REVOCATION_WATCH_INTERVAL)).await;
            if certs_checked.elapsed() >= cert_interval {
                certs_checked = Instant::now();
                self.check_certificates(false);
            }
            self.check_revocations();
            self.check_api_keys();
            self.check_mcp_pins();
        }
    }

    fn publish_certificate_expiry(&self) {
        let expiry = self.shared.certs.as_ref().and_then(|c| c.not_after());
        if let Some(seconds) = expiry
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_secs()).ok())
        {
            self.shared.metrics.tls_certificate_expiry.set(seconds);
        }
    }
}

/// The settings of `next` that differ from `running` but that a reload cannot apply.
fn restart_only_changes(running: &Config, next: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if running.server.listen != next.server.listen {
        keys.push("server.listen");
    }
    if running.server.max_connections != next.server.max_connections {
        keys.push("server.max_connections");
    }
    if running.server.log_format != next.server.log_format {
        keys.push("server.log_format");
    }
    if running.server.listen_backlog != next.server.listen_backlog {
        keys.push("server.listen_backlog");
    }
    if running.server.shutdown_grace != next.server.shutdown_grace {
        keys.push("server.shutdown_grace");
    }
    if running.server.tls.is_some() != next.server.tls.is_some() {
        keys.push("server.tls");
    }
    if running.admin.as_ref().map(|a| a.listen) != next.admin.as_ref().map(|a| a.listen) {
        keys.push("admin.listen");
    }
    if running.metrics != next.metrics {
        keys.push("metrics.listen");
    }
    if running.audit != next.audit {
        keys.push("audit");
    }
    if running.tracing != next.tracing {
        keys.push("tracing");
    }
    keys
}

/// Acts on the operator's signals until aborted: SIGHUP reloads the config file at `path` (and
/// with it keys, limits, rules, headers, upstream settings, certificates and the revocation list)
/// and reopens the audit file; SIGUSR1 only reopens the audit file (after logrotate moved it).
pub async fn on_signals(reloader: Reloader, path: std::path::PathBuf) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut hangup, mut user1) = match (
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined1()),
    ) {
        (Ok(hangup), Ok(user1)) => (hangup, user1),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP and SIGUSR1; reload needs a restart");
            return;
        }
    };
    loop {
        tokio::select! {
            Some(()) = hangup.recv() => {
                tracing::info!(config = %path.display(), "SIGHUP received: reloading");
                if !reloader.reload_file(&path).await {
                    // The certificate files may have been renewed even if the config is broken.
                    reloader.check_certificates(false);
                }
                reloader.check_revocations();
                reloader.check_api_keys();
                reloader.check_mcp_pins();
                reloader.reopen_audit();
            }
            Some(()) = user1.recv() => {
                tracing::info!("SIGUSR1 received: reopening the audit log");
                reloader.reopen_audit();
            }
            else => return,
        }
    }
}
