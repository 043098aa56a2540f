//! The Redis store: the same sliding window, shared by every replica, decided by one Lua script.
//!
//! Guards against replicas that disagree: each decision is one atomic script run on the Redis
//! server, using the server's clock (`TIME`), so skewed replica clocks do not matter; keys expire
//! with the window. Every call is bounded by `redis_timeout`. Each decision touches one key, so
//! the script and the budget's MULTI run unchanged on a Redis Cluster (one hash slot); a
//! standalone server is reached through a reconnecting connection, a cluster through the cluster
//! client (which follows slot moves and failovers), and a Sentinel-watched master through a
//! connection made to whichever master the sentinels name, asked again after any failure.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value};

use super::memory::Limit;
use super::window::{COUNTED, SLOTS, Verdict, ceil_secs, slot_ms};
use crate::config::rate_limit::RedisTopology;
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

/// How the store reaches Redis.
enum Link {
    /// One server, through a reconnecting connection.
    Standalone(ConnectionManager),
    /// A Redis Cluster; the connection is made on first use and made again after a failure
    /// (which reads the slot map afresh, so a promoted replica is found).
    Cluster {
        client: redis::cluster::ClusterClient,
        connection: ArcSwapOption<Connection>,
        connecting: tokio::sync::Mutex<()>,
    },
    /// A master found through the sentinels; the connection is dropped after a failure, so the
    /// next call asks the sentinels again.
    Sentinel {
        client: tokio::sync::Mutex<SentinelClient>,
        connection: ArcSwapOption<Connection>,
    },
}

/// A connection of any [`Link`], for one call.
#[derive(Clone)]
enum Connection {
    Standalone(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
    Master(MultiplexedConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Standalone(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
            Connection::Master(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Master(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Standalone(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
            Connection::Master(c) => c.get_db(),
        }
    }
}

/// A Redis link (standalone, cluster or sentinel) and the decision script.
pub struct RedisStore {
    link: Link,
    script: redis::Script,
    timeout: Duration,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Prepares a lazily connecting link to the URLs in `url` (`redis://`, `rediss://` for TLS;
    /// credentials in a URL are used for AUTH): one URL for a standalone server, the URLs of
    /// some nodes of a cluster, or of the sentinels.
    pub fn new(
        url: &Secret,
        topology: &RedisTopology,
        timeout: Duration,
    ) -> Result<RedisStore, String> {
        let text = std::str::from_utf8(url.expose())
            .map_err(|_| "the Redis URL is not valid UTF-8".to_owned())?;
        // Messages never repeat a URL: it may carry a password.
        let urls: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        let connect_timeout = timeout.max(Duration::from_millis(200));
        let link = match topology {
            RedisTopology::Standalone => {
                let [url] = urls[..] else {
                    return Err(
                        "the Redis URL must be one URL (several are for redis_mode = \"cluster\" or \"sentinel\")"
                            .to_owned(),
                    );
                };
                let client = redis::Client::open(url)
                    .map_err(|_| "the Redis URL is not valid".to_owned())?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(connect_timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                Link::Standalone(
                    ConnectionManager::new_lazy_with_config(client, config)
                        .map_err(|_| "cannot prepare the Redis connection".to_owned())?,
                )
            }
            RedisTopology::Cluster => {
                if urls.is_empty() {
                    return Err("the Redis URL names no cluster node".to_owned());
                }
                let client = redis::cluster::ClusterClient::builder(urls)
                    .connection_timeout(connect_timeout)
                    .response_timeout(timeout)
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(200)
                    .build()
                    .map_err(|_| "the Redis cluster URLs are not valid".to_owned())?;
                Link::Cluster {
                    client,
                    connection: ArcSwapOption::empty(),
                    connecting: tokio::sync::Mutex::new(()),
                }
            }
            RedisTopology::Sentinel { master } => {
                let first = urls
                    .first()
                    .ok_or_else(|| "the Redis URL names no sentinel".to_owned())?
                    .into_connection_info()
                    .map_err(|_| "the Redis sentinel URLs are not valid".to_owned())?;
                // The master is reached with the first sentinel URL's credentials and TLS.
                let mut node = SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(first.redis_settings().clone());
                if let redis::ConnectionAddr::TcpTls { insecure, .. } = first.addr() {
                    node = node.set_tls_mode(if *insecure {
                        redis::TlsMode::Insecure
                    } else {
                        redis::TlsMode::Secure
                    });
                }
                let client =
                    SentinelClient::build(urls, master, Some(node), SentinelServerType::Master)
                        .map_err(|_| "the Redis sentinel URLs are not valid".to_owned())?;
                Link::Sentinel {
                    client: tokio::sync::Mutex::new(client),
                    connection: ArcSwapOption::empty(),
                }
            }
        };
        Ok(RedisStore {
            link,
            script: redis::Script::new(DECIDE),
            timeout,
        })
    }

    /// A connection for one call: the standalone one, or the cached cluster or master
    /// connection, made when there is none (first use, or after a failure).
    async fn connection(&self) -> Result<Connection, RedisFailure> {
        let connect_timeout = self.timeout.max(Duration::from_millis(200));
        match &self.link {
            Link::Standalone(c) => Ok(Connection::Standalone(c.clone())),
            Link::Cluster {
                client,
                connection,
                connecting,
            } => {
                if let Some(c) = connection.load_full() {
                    return Ok((*c).clone());
                }
                // One caller connects; the others wait for it and take its connection.
                let _connecting = connecting.lock().await;
                if let Some(c) = connection.load_full() {
                    return Ok((*c).clone());
                }
                let made = tokio::time::timeout(connect_timeout, client.get_async_connection())
                    .await
                    .map_err(|_| RedisFailure::Timeout)??;
                let made = Connection::Cluster(made);
                connection.store(Some(Arc::new(made.clone())));
                Ok(made)
            }
            Link::Sentinel { client, connection } => {
                if let Some(c) = connection.load_full() {
                    return Ok((*c).clone());
                }
                let mut client = client.lock().await;
                if let Some(c) = connection.load_full() {
                    return Ok((*c).clone());
                }
                let made = tokio::time::timeout(connect_timeout, client.get_async_connection())
                    .await
                    .map_err(|_| RedisFailure::Timeout)??;
                let made = Connection::Master(made);
                connection.store(Some(Arc::new(made.clone())));
                Ok(made)
            }
        }
    }

    /// After a failed call: the master of a slot or the sentinels' master may have failed over,
    /// so the next call connects afresh. (A standalone connection reconnects by itself.)
    fn forget(&self) {
        match &self.link {
            Link::Standalone(_) => {}
            Link::Cluster { connection, .. } | Link::Sentinel { connection, .. } => {
                connection.store(None);
            }
        }
    }

    /// Runs `call` on a connection within the timeout; a failure forgets a sentinel's master.
    async fn run<T, F, Fut>(&self, call: F) -> Result<T, RedisFailure>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let result = async {
            let connection = self.connection().await?;
            tokio::time::timeout(self.timeout, call(connection))
                .await
                .map_err(|_| RedisFailure::Timeout)?
                .map_err(RedisFailure::from)
        }
        .await;
        if result.is_err() {
            self.forget();
        }
        result
    }

    /// Decides one request for `key` under `limit` on the Redis server's clock.
    pub async fn decide(&self, key: &str, limit: Limit) -> Result<Verdict, RedisFailure> {
        let window_ms = u64::try_from(limit.window.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut invocation = self.script.key(key);
        invocation
            .arg(limit.requests)
            .arg(slot_ms(window_ms))
            .arg(SLOTS);
        let answer: Vec<i64> = self
            .run(|mut connection| async move { invocation.invoke_async(&mut connection).await })
            .await?;
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
        let spent: Option<u64> = self
            .run(|mut connection| async move {
                redis::cmd("GET")
                    .arg(key)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        Ok(spent.unwrap_or(0))
    }

    /// Adds `tokens` under a budget key that expires `ttl` from now.
    pub async fn budget_charge(
        &self,
        key: &str,
        tokens: u64,
        ttl: Duration,
    ) -> Result<(), RedisFailure> {
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
        self.run(|mut connection| async move { pipe.query_async(&mut connection).await })
            .await
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
