//! `[websocket]`: where WebSocket handshakes are forwarded, and the bounds every socket keeps.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Locator};

/// Default largest message, either direction.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Default time without a frame in either direction before the socket is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default open sockets per user.
pub const DEFAULT_MAX_PER_USER: usize = 16;
/// Largest accepted `max_message_bytes`.
const MAX_MAX_MESSAGE_BYTES: u64 = 64 * 1024 * 1024;

/// `[websocket]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebSocket {
    /// Paths where an HTTP/1.1 `Upgrade: websocket` request is forwarded (exact match).
    #[serde(default)]
    pub paths: Vec<String>,
    /// Largest message, either direction; a larger one closes the socket with 1009.
    pub max_message_bytes: Option<u64>,
    /// No frame in either direction for this long closes the socket with 1001.
    #[serde(default, with = "super::duration::option")]
    pub idle_timeout: Option<Duration>,
    /// Open sockets per user; one more is refused 429 at the handshake.
    pub max_per_user: Option<u64>,
}

/// Validated `[websocket]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSocketSettings {
    /// Paths where handshakes are forwarded.
    pub paths: Vec<String>,
    /// Largest message, either direction.
    pub max_message_bytes: usize,
    /// Idle time before the socket is closed.
    pub idle_timeout: Duration,
    /// Open sockets per user.
    pub max_per_user: usize,
}

/// Validates `[websocket]`.
pub(super) fn validate(
    raw: &RawWebSocket,
    at: &Locator<'_>,
) -> Result<WebSocketSettings, ConfigError> {
    if raw.paths.is_empty() {
        return Err(at.error("websocket.paths", "lists no path, e.g. [\"/v1/realtime\"]"));
    }
    if let Some(bad) = raw.paths.iter().find(|p| !p.starts_with('/')) {
        return Err(at.error("websocket.paths", format!("{bad:?} does not start with /")));
    }
    let max_message_bytes = match raw.max_message_bytes {
        None => DEFAULT_MAX_MESSAGE_BYTES,
        Some(n) if (1024..=MAX_MAX_MESSAGE_BYTES).contains(&n) => {
            usize::try_from(n).unwrap_or(DEFAULT_MAX_MESSAGE_BYTES)
        }
        Some(_) => {
            return Err(at.error(
                "websocket.max_message_bytes",
                "must be between 1024 and 67108864",
            ));
        }
    };
    let idle_timeout = raw.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT);
    if idle_timeout.is_zero() {
        return Err(at.error("websocket.idle_timeout", "must be longer than zero"));
    }
    let max_per_user = match raw.max_per_user {
        None => DEFAULT_MAX_PER_USER,
        Some(0) => return Err(at.error("websocket.max_per_user", "must be at least 1")),
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    };
    Ok(WebSocketSettings {
        paths: raw.paths.clone(),
        max_message_bytes,
        idle_timeout,
        max_per_user,
    })
}
