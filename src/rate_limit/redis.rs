//! The Redis store: the same sliding window, shared by every replica, decided by one Lua script.
//!
//! Guards against replicas that disagree: each decision is one atomic script run on the Redis
//! server, using the server's clock (`TIME`), so skewed replica clocks do not matter; keys expire
//! with the window. Every call is bounded by `redis_timeout`.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::memory::Limit;
use super::window::{COUNTED, SLOTS, Verdict, ceil_secs, slot_ms};
use crate::secret::Secret;

/// Prefix of every key the limiter writes.
pub const KEY_PREFIX: &str = "portcullis:rl:";

/// Counts per slot in a hash (field = slot index), exactly as the in-memory window does:
/// admit if the last 61 slots hold fewer than `limit`, else say when a slot frees enough room.
const DECIDE: &str = r"
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local slot_ms = tonumber(ARGV[2])
local slots = tonumber(ARGV[3])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local slot = math.floor(now_ms / slot_ms)
local oldest = slot - slots
local raw = redis.call('HGETALL', key)
local counted = {}
local total = 0
for i = 1, #raw, 2 do
  local s = tonumber(raw[i])
  local c = tonumber(raw[i + 1])
  if s < oldest then
    redis.call('HDEL', key, raw[i])
  else
    total = total + c
    counted[#counted + 1] = {s, c}
  end
end
table.sort(counted, function(a, b) return a[1] < b[1] end)
if total < limit then
  redis.call('HINCRBY', key, string.format('%d', slot), 1)
  redis.call('PEXPIRE', key, (slots + 2) * slot_ms)
  local first = slot
  if #counted > 0 then first = counted[1][1] end
  return {1, limit - total - 1, (first + slots + 1) * slot_ms - now_ms}
end
local freed = 0
local reopen = slot
for i = 1, #counted do
  freed = freed + counted[i][2]
  if total - freed < limit then
    reopen = counted[i][1]
    break
  end
end
return {0, 0, (reopen + slots + 1) * slot_ms - now_ms}
";

/// Why Redis could not decide.
#[derive(Debug, thiserror::Error)]
pub enum RedisFailure {
    /// No answer within `redis_timeout`.
    #[error("no answer within redis_timeout")]
    Timeout,
    /// Connection or command error.
    #[error("{0}")]
    Failed(#[from] redis::RedisError),
    /// The script answered something unexpected.
    #[error("unexpected answer from the rate-limit script")]
    Protocol,
}

/// A Redis connection (reconnecting) and the decision script.
pub struct RedisStore {
    connection: ConnectionManager,
    script: redis::Script,
    timeout: Duration,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Prepares a lazily connecting, reconnecting connection to the URL in `url`
    /// (`redis://`, `rediss://` for TLS; credentials in the URL are used for AUTH).
    pub fn new(url: &Secret, timeout: Duration) -> Result<RedisStore, String> {
        let text = std::str::from_utf8(url.expose())
            .map_err(|_| "the Redis URL is not valid UTF-8".to_owned())?;
        // The message never repeats the URL: it may carry a password.
        let client =
            redis::Client::open(text).map_err(|_| "the Redis URL is not valid".to_owned())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(200))))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|_| "cannot prepare the Redis connection".to_owned())?;
        Ok(RedisStore {
            connection,
            script: redis::Script::new(DECIDE),
            timeout,
        })
    }

    /// Decides one request for `key` under `limit` on the Redis server's clock.
    pub async fn decide(&self, key: &str, limit: Limit) -> Result<Verdict, RedisFailure> {
        let window_ms = u64::try_from(limit.window.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut connection = self.connection.clone();
        let mut invocation = self.script.key(key);
        invocation
            .arg(limit.requests)
            .arg(slot_ms(window_ms))
            .arg(SLOTS);
        let answer: Vec<i64> =
            tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection))
                .await
                .map_err(|_| RedisFailure::Timeout)??;
        let [admitted, remaining, wait_ms] = answer[..] else {
            return Err(RedisFailure::Protocol);
        };
        let wait = ceil_secs(u64::try_from(wait_ms).unwrap_or(0));
        Ok(Verdict {
            admitted: admitted == 1,
            limit: limit.requests,
            remaining: u32::try_from(remaining).unwrap_or(0),
            reset_secs: wait,
            retry_after_secs: if admitted == 1 { 0 } else { wait },
        })
    }
}

impl RedisStore {
    /// The tokens spent under a budget key (0 when it does not exist).
    pub async fn budget_spent(&self, key: &str) -> Result<u64, RedisFailure> {
        let mut connection = self.connection.clone();
        let spent: Option<u64> = tokio::time::timeout(
            self.timeout,
            redis::cmd("GET").arg(key).query_async(&mut connection),
        )
        .await
        .map_err(|_| RedisFailure::Timeout)??;
        Ok(spent.unwrap_or(0))
    }

    /// Adds `tokens` under a budget key that expires `ttl` from now.
    pub async fn budget_charge(
        &self,
        key: &str,
        tokens: u64,
        ttl: Duration,
    ) -> Result<(), RedisFailure> {
        let mut connection = self.connection.clone();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("INCRBY")
            .arg(key)
            .arg(tokens)
            .ignore()
            .cmd("PEXPIRE")
            .arg(key)
            .arg(ttl_ms)
            .ignore();
        let () = tokio::time::timeout(self.timeout, pipe.query_async(&mut connection))
            .await
            .map_err(|_| RedisFailure::Timeout)??;
        Ok(())
    }
}

/// The Redis key of a user in a limit class.
pub fn key(class: usize, user: &str) -> String {
    let mut key = String::with_capacity(KEY_PREFIX.len() + 4 + user.len());
    key.push_str(KEY_PREFIX);
    key.push_str(&class.to_string());
    key.push(':');
    key.push_str(user);
    key
}

/// Slots kept per key, for documentation: a hash of at most this many small fields.
pub const FIELDS_PER_KEY: usize = COUNTED;
