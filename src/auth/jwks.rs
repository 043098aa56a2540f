//! The key store: static keys (JWKS file, HMAC secrets) and a JWK set fetched over HTTPS, from
//! `jwks_url` or from the `jwks_uri` of an OpenID provider's discovery document (`oidc_issuer`).
//!
//! Guards against a stale or hammered identity provider: the remote set is refreshed every
//! `jwks_refresh`; a token naming an unknown key id triggers at most one refetch per 30 s, however
//! many such tokens arrive; a failed refresh keeps the last good set; a response is read only up to
//! 1 MiB and only over HTTPS. With discovery, every refresh reads the discovery document first
//! (so a provider that moves its key set is followed) and refuses one whose `issuer` is not the
//! configured issuer exactly (OpenID Connect Discovery 1.0 §4.3), keeping the last good set.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::Algorithm;

use crate::keys::{KeySet, VerifyingKey, keys_from_jwks};
use crate::metrics::Metrics;
use crate::tls;

/// At most one refetch for unknown key ids per this interval.
pub const UNKNOWN_KID_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Time allowed for one JWKS fetch.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document read.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Wait before retrying a failed refresh (capped at `jwks_refresh`).
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

pub use crate::config::auth::{JwksSource, RemoteJwksSettings};

struct Remote {
    settings: RemoteJwksSettings,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    /// Held across every fetch, so fetches never overlap and callers wait for one in flight.
    fetching: tokio::sync::Mutex<()>,
    /// When the last refetch for an unknown key id started (the 30 s limit).
    last_kid_refetch: std::sync::Mutex<Option<Instant>>,
    loaded: AtomicBool,
    /// The last good fetched set, handed to the store that replaces this one on reload.
    fetched: ArcSwap<Vec<Arc<VerifyingKey>>>,
}

/// All keys in force; swapped atomically when the remote set changes.
pub struct KeyStore {
    static_keys: Vec<Arc<VerifyingKey>>,
    current: ArcSwap<KeySet>,
    remote: Option<Remote>,
    allowed: Vec<Algorithm>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("keys", &self.current.load().len())
            .finish_non_exhaustive()
    }
}

impl KeyStore {
    /// A store with the static keys in force and, when configured, a remote set to fetch.
    pub fn new(
        static_keys: Vec<Arc<VerifyingKey>>,
        remote: Option<RemoteJwksSettings>,
        allowed: Vec<Algorithm>,
        metrics: Arc<Metrics>,
    ) -> Result<KeyStore, String> {
        let remote = match remote {
            None => None,
            Some(settings) => {
                let tls_config = tls::upstream_client_config(&settings.extra_roots)?;
                let mut http = HttpConnector::new();
                http.enforce_http(false);
                http.set_connect_timeout(Some(FETCH_TIMEOUT));
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls_config)
                    .https_only()
                    .enable_http1()
                    .wrap_connector(http);
                Some(Remote {
                    settings,
                    client: Client::builder(TokioExecutor::new()).build(connector),
                    fetching: tokio::sync::Mutex::new(()),
                    last_kid_refetch: std::sync::Mutex::new(None),
                    loaded: AtomicBool::new(false),
                    fetched: ArcSwap::from_pointee(Vec::new()),
                })
            }
        };
        Ok(KeyStore {
            current: ArcSwap::from_pointee(KeySet::new(static_keys.iter().cloned())),
            static_keys,
            remote,
            allowed,
            metrics,
        })
    }

    /// The keys in force now.
    pub fn keys(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.current.load()
    }

    /// Takes over the set `previous` fetched from the same URL, so that a reload does not
    /// refuse tokens while this store makes its first fetch.
    pub fn inherit(&self, previous: &KeyStore) {
        let (Some(remote), Some(old)) = (&self.remote, &previous.remote) else {
            return;
        };
        if remote.settings.source != old.settings.source || !old.loaded.load(Ordering::Relaxed) {
            return;
        }
        let keys = old.fetched.load_full();
        self.current.store(Arc::new(KeySet::new(
            self.static_keys.iter().cloned().chain(keys.iter().cloned()),
        )));
        remote.fetched.store(keys);
        remote.loaded.store(true, Ordering::Relaxed);
    }

    /// Ready once a remote set has been loaded at least once (always, without one).
    pub fn is_ready(&self) -> bool {
        self.remote
            .as_ref()
            .is_none_or(|r| r.loaded.load(Ordering::Relaxed))
    }

    /// Refetches after a token named an unknown key id, at most once per 30 s; callers arriving
    /// during a fetch wait for it and then look again.
    pub async fn refetch_for_unknown_kid(&self) {
        let Some(remote) = &self.remote else {
            return;
        };
        // Wait for a fetch in flight first: it may bring the key this caller needs.
        let _fetching = remote.fetching.lock().await;
        {
            let Ok(mut last) = remote.last_kid_refetch.lock() else {
                return;
            };
            if last.is_some_and(|t| t.elapsed() < UNKNOWN_KID_REFETCH_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        self.fetch_and_swap(remote).await;
    }

    /// Keeps the remote set fresh: fetches now, then every `jwks_refresh` (sooner after a failure).
    pub async fn refresh_forever(self: Arc<Self>) {
        let Some(remote) = &self.remote else {
            return;
        };
        loop {
            let ok = {
                let _fetching = remote.fetching.lock().await;
                self.fetch_and_swap(remote).await
            };
            let pause = if ok {
                remote.settings.refresh
            } else {
                RETRY_AFTER_FAILURE.min(remote.settings.refresh)
            };
            tokio::time::sleep(pause).await;
        }
    }

    async fn fetch_and_swap(&self, remote: &Remote) -> bool {
        match self.fetch(remote).await {
            Ok(keys) => {
                let count = keys.len();
                self.current.store(Arc::new(KeySet::new(
                    self.static_keys.iter().cloned().chain(keys.iter().cloned()),
                )));
                remote.fetched.store(Arc::new(keys));
                remote.loaded.store(true, Ordering::Relaxed);
                self.metrics.jwks_fetch("ok");
                tracing::debug!(keys = count, "JWK set refreshed");
                true
            }
            Err(reason) => {
                self.metrics.jwks_fetch("error");
                tracing::warn!(
                    url = %remote.settings.source.first_url(),
                    reason,
                    "JWK set fetch failed; keeping the last good key set"
                );
                false
            }
        }
    }

    async fn fetch(&self, remote: &Remote) -> Result<Vec<Arc<VerifyingKey>>, String> {
        let jwks_uri = match &remote.settings.source {
            JwksSource::Url(uri) => uri.clone(),
            JwksSource::Discovery {
                issuer,
                configuration,
            } => {
                let document = get(remote, configuration.clone())
                    .await
                    .map_err(|e| format!("discovery document {e}"))?;
                discovered_jwks_uri(&document, issuer)?
            }
        };
        let body = get(remote, jwks_uri).await?;
        let (keys, skipped) = keys_from_jwks(&body, &self.allowed)?;
        if keys.is_empty() {
            return Err(format!("no usable signing key ({skipped} skipped)"));
        }
        Ok(keys)
    }
}

/// The `jwks_uri` of a discovery document, once its `issuer` is `expected` exactly.
fn discovered_jwks_uri(document: &[u8], expected: &str) -> Result<http::Uri, String> {
    #[derive(serde::Deserialize)]
    struct Discovery {
        issuer: String,
        jwks_uri: String,
    }
    let discovery: Discovery = serde_json::from_slice(document)
        .map_err(|_| "discovery document is not JSON with issuer and jwks_uri".to_owned())?;
    if discovery.issuer != expected {
        return Err("discovery document names another issuer than oidc_issuer".to_owned());
    }
    discovery
        .jwks_uri
        .parse::<http::Uri>()
        .ok()
        .filter(|u| u.scheme_str() == Some("https") && u.host().is_some())
        .ok_or_else(|| "discovery document's jwks_uri is not an https:// URL".to_owned())
}

/// GETs `uri` as JSON: a 200 answer's body, read up to [`MAX_JWKS_BYTES`] within
/// [`FETCH_TIMEOUT`]s.
async fn get(remote: &Remote, uri: http::Uri) -> Result<Bytes, String> {
    let request = http::Request::get(uri)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::new())
        .map_err(|_| "cannot build the request".to_owned())?;
    let response = tokio::time::timeout(FETCH_TIMEOUT, remote.client.request(request))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| format!("unreachable ({e})"))?;
    if response.status() != StatusCode::OK {
        return Err(format!("answered {}", response.status()));
    }
    Ok(tokio::time::timeout(
        FETCH_TIMEOUT,
        Limited::new(response.into_body(), MAX_JWKS_BYTES).collect(),
    )
    .await
    .map_err(|_| "timed out reading".to_owned())?
    .map_err(|_| "body unreadable or over 1 MiB".to_owned())?
    .to_bytes())
}

#[cfg(test)]
mod tests {
    use super::discovered_jwks_uri;

    #[test]
    fn discovery_yields_the_key_set_of_the_configured_issuer_only() {
        let document = |issuer: &str, jwks: &str| {
            format!(r#"{{"issuer":"{issuer}","jwks_uri":"{jwks}","token_endpoint":"x"}}"#)
        };
        let ok = discovered_jwks_uri(
            document("https://idp.corp/", "https://keys.idp.corp/jwks").as_bytes(),
            "https://idp.corp/",
        );
        assert_eq!(
            ok.map(|u| u.to_string()),
            Ok("https://keys.idp.corp/jwks".to_owned())
        );
        for (issuer, jwks) in [
            ("https://idp.corp", "https://idp.corp/jwks"),
            ("https://evil.corp/", "https://idp.corp/jwks"),
            ("https://idp.corp/", "http://idp.corp/jwks"),
            ("https://idp.corp/", "/jwks"),
        ] {
            let refused =
                discovered_jwks_uri(document(issuer, jwks).as_bytes(), "https://idp.corp/");
            assert!(refused.is_err(), "{issuer} {jwks}");
        }
        assert!(discovered_jwks_uri(b"<html>", "https://idp.corp/").is_err());
    }
}
