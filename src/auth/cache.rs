//! The verified-token cache: a repeat request skips signature verification.
//!
//! Guards against spending a signature verification per request, without weakening the checks:
//! entries are keyed by the token's SHA-256 (never the token itself), live until the token's `exp`
//! or a cap, whichever is sooner, are dropped when the key that verified them leaves the key set,
//! and the cache is bounded in entries (least recently useful evicted first).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, UnitWeighter};
use sha2::{Digest, Sha256};

use crate::keys::KeySet;
use crate::principal::Principal;

/// A token's cache key: its SHA-256.
pub type TokenDigest = [u8; 32];

/// What the cache holds for a verified token.
#[derive(Debug)]
pub struct CachedToken {
    /// The identity.
    pub principal: Arc<Principal>,
    /// Served until this time (seconds since the epoch): min(`exp`, now + cap).
    pub valid_until: u64,
    /// The key id that verified it.
    pub kid: Option<String>,
    /// The fingerprint of the key that verified it.
    pub key_fingerprint: [u8; 32],
}

#[derive(Clone)]
struct CountEvictions(Counter<u64, AtomicU64>);

impl Lifecycle<TokenDigest, Arc<CachedToken>> for CountEvictions {
    type RequestState = ();

    fn on_evict(&self, _: &mut (), _: TokenDigest, _: Arc<CachedToken>) {
        self.0.inc();
    }
}

/// The bounded cache of verified tokens.
pub struct TokenCache {
    entries: Cache<TokenDigest, Arc<CachedToken>, UnitWeighter, DefaultHashBuilder, CountEvictions>,
    max_ttl_secs: u64,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("len", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// A cache of at most `capacity` tokens, each served at most `max_ttl_secs`.
    pub fn new(
        capacity: usize,
        max_ttl_secs: u64,
        evictions: Counter<u64, AtomicU64>,
    ) -> TokenCache {
        let capacity = capacity.max(1);
        TokenCache {
            entries: Cache::with(
                capacity,
                capacity as u64,
                UnitWeighter,
                DefaultHashBuilder::default(),
                CountEvictions(evictions),
            ),
            max_ttl_secs,
        }
    }

    /// The cache key of a token.
    pub fn digest(token: &str) -> TokenDigest {
        Sha256::digest(token.as_bytes()).into()
    }

    /// The cached identity, when the token is cached, unexpired and its key still in force.
    pub fn get(&self, digest: &TokenDigest, now: u64, keys: &KeySet) -> Option<Arc<Principal>> {
        let entry = self.entries.get(digest)?;
        if now < entry.valid_until && keys.still_has(entry.kid.as_deref(), &entry.key_fingerprint) {
            Some(entry.principal.clone())
        } else {
            self.entries.remove(digest);
            None
        }
    }

    /// Caches a verified token until min(`expires_at`, now + cap).
    pub fn insert(
        &self,
        digest: TokenDigest,
        principal: Arc<Principal>,
        expires_at: u64,
        now: u64,
        kid: Option<String>,
        key_fingerprint: [u8; 32],
    ) {
        let valid_until = expires_at.min(now.saturating_add(self.max_ttl_secs));
        if valid_until <= now {
            return;
        }
        self.entries.insert(
            digest,
            Arc::new(CachedToken {
                principal,
                valid_until,
                kid,
                key_fingerprint,
            }),
        );
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
