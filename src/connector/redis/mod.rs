//! `redis`: objects as values on a Redis server that every process using them reaches.
//!
//! Small objects move in milliseconds this way, where a Globus task takes seconds; a
//! [`MultiConnector`](super::MultiConnector) sends each object to Redis or through Globus
//! by its size.
//!
//! **Layout.** Object `id` is the Redis string `<prefix><id>`, the prefix `ps-globus:` by
//! default. ProxyStore's `RedisConnector` writes bare UUIDs with no prefix, and its
//! `clear` runs `FLUSHDB`, deleting every key of the database, whoever wrote it. Ours is
//! scoped instead: [`RedisConnector::clear`] removes only keys of the form `<prefix>` +
//! 32 hex digits, which this connector writes; and `close` deletes nothing, as every
//! connector's does. Set `prefix = ""` for ProxyStore's bare layout.
//!
//! **Batches** are one round trip: `MGET` for `get_batch`, `MSET` for `put_batch` (with
//! a TTL, one atomic `MULTI` pipeline of `SET … PX`).
//!
//! **Connections.** One multiplexed connection per connector, made on first use (building
//! a connector from a config never touches the network) and remade when it drops. A
//! command that fails because the connection dropped or was refused is retried
//! (`RETRIES` times, 0.1 to 1 s apart; every command here is idempotent: a put writes a
//! fresh key); a server that does not answer within `timeout_ms` is an
//! [`Error::Timeout`] at once, not retried. A server that is gone is [`Error::Unreachable`](crate::Error::Unreachable);
//! an error the server answers (out of memory, a wrong password) is [`ServerError`](crate::error::ServerError)
//! with its code and advice. When the server is back, the next command succeeds.
//!
//! **Secrets.** The password comes from the environment variable the config names
//! (`password_env`), read in each process; it is never in a config, a proxy or a message.

mod blocking;
mod connect;

pub use crate::config::redis::RedisConfig;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use backon::{BlockingRetryable, ExponentialBuilder, Retryable};
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, RedisError};

use super::{Capabilities, Connector, ConnectorConfig, Key, PutOptions, Settlement};
use crate::connector::manifest;
use crate::error::{AlreadySet, Error, Result, ServerError};
use crate::runtime::in_library_context;

/// How long an evicted future's tombstone (and an expired one's mark) stays: a day.
const TOMBSTONE_MS: u64 = 24 * 3600 * 1000;

/// The Redis key that marks a future with a TTL as settled (see `settle`).
fn settled_mark(redis_key: &str) -> String {
    format!("{redis_key}.settled")
}

/// The most bytes of values one `MSET` of a `put_batch` with large values carries.
const MSET_CHUNK: usize = 16 << 20;

/// How many times a command is retried after the connection dropped or was refused.
const RETRIES: usize = 3;

/// How many bytes of encoded commands the connection gathers before it writes them out.
/// The `redis` crate's default (`tokio_util`'s 8 KiB) wrote a 1 MiB value in 128 pieces:
/// `SET` of 1 MiB took 1.8 ms against `redis-benchmark`'s 0.7; with 1 MiB, 0.8 ms
/// (`examples/bench_redis.rs`). The buffer grows only as commands need it.
const WRITE_BUFFER: usize = 1 << 20;

/// A connector that keeps each object as one value on a Redis server.
///
/// ```no_run
/// use ps_globus::connector::{Connector, PutOptions, RedisConfig, RedisConnector};
/// # ps_globus::block_on(async {
/// let connector = RedisConnector::new(RedisConfig::new("redis.lab.example.org", 6379))?;
/// let key = connector.put(b"small and hot", &PutOptions::default()).await?;
/// assert_eq!(connector.get(&key).await?.as_deref(), Some(&b"small and hot"[..]));
/// # Ok::<(), ps_globus::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct RedisConnector {
    config: RedisConfig,
    url: String,
    connection: ConnectionManager,
    /// The client the connections are made from, and the blocking connections used
    /// from threads that may block and for large values (`blocking.rs`).
    client: redis::Client,
    blocking: blocking::Pool,
    /// Rebuilt from data: evicts and settles only keys it mints.
    provenance: super::Provenance,
}

impl std::fmt::Debug for RedisConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnector")
            .field("url", &self.url)
            .field("prefix", &self.config.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisConnector {
    /// The kind name in keys and configs.
    pub const KIND: &'static str = "redis";

    /// A connector on the server `config` names. Does not connect yet (the first command
    /// does), so it fails only on a bad config or a missing password variable.
    pub fn new(config: RedisConfig) -> Result<Self> {
        let client = connect::client(&config)?;
        let timeout = config.timeout();
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1))
            .set_write_backpressure_boundary(WRITE_BUFFER);
        // The manager keeps its background tasks on the runtime current when it is made:
        // the library's, which outlives every caller's.
        let connection = {
            let _context = crate::runtime::handle().enter();
            ConnectionManager::new_lazy_with_config(client.clone(), manager)
        }
        .map_err(|e| Error::invalid_config_from("redis connector", e))?;
        Ok(RedisConnector {
            url: config.url(),
            config,
            connection,
            client,
            blocking: blocking::Pool::default(),
            provenance: super::Provenance::Local,
        })
    }

    /// A connector on the server named `name` in the configuration file (its
    /// `[redis.NAME]` table). The config it carries is the table's contents, so a proxy
    /// rebuilds it where the file does not exist.
    pub fn named(settings: &crate::Settings, name: &str) -> Result<Self> {
        let mut servers = crate::config::Config::load(settings)?.redis;
        let config = servers.remove(name).ok_or_else(|| {
            Error::invalid_config(
                "redis connector",
                format!(
                    "{} has no [redis.{name}] table (it names: {})",
                    settings.config_path.display(),
                    servers.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        Self::new(RedisConfig {
            server: Some(name.to_owned()),
            ..config
        })
    }

    /// Its configuration.
    pub fn redis_config(&self) -> &RedisConfig {
        &self.config
    }

    /// Rebuilds from a config: from data, one [`trust::admit`](super::trust::admit) has
    /// already bound to this process's own table for the server.
    pub(super) fn build(
        config: &ConnectorConfig,
        provenance: &super::Provenance,
    ) -> Result<Arc<dyn Connector>> {
        Ok(Arc::new(RedisConnector {
            provenance: provenance.clone(),
            ..Self::new(config.options_as()?)?
        }))
    }

    /// Checks that this connector may change the object of `key` (rebuilt from data: one
    /// it minted).
    fn check_change(&self, key: &Key, operation: &'static str) -> Result<()> {
        // A Redis server has no directory to mark: the minted id is the whole check.
        super::trust::check_change(&self.provenance, None, key.id(), operation)
    }

    /// Removes every object of this connector's layout (`<prefix>` + 32 hex digits) from
    /// the database, and nothing else; returns how many it removed. ProxyStore's
    /// `clear=True` flushes the whole database instead.
    pub async fn clear(&self) -> Result<u64> {
        let pattern = format!(
            "{}{}",
            glob_escape(&self.config.prefix),
            "[0-9a-f]".repeat(32)
        );
        let mut cursor: u64 = 0;
        let mut removed = 0u64;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000);
            let (next, keys): (u64, Vec<String>) = self.run("SCAN", &scan).await?;
            if !keys.is_empty() {
                let removed_now: u64 = self.run("UNLINK", redis::cmd("UNLINK").arg(&keys)).await?;
                removed += removed_now;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    /// Sends `PING` and reads the server's version: what `doctor` checks.
    pub async fn ping(&self) -> Result<String> {
        let _: String = self.run("PING", &redis::cmd("PING")).await?;
        let info: String = self.run("INFO", redis::cmd("INFO").arg("server")).await?;
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("unknown")
            .trim()
            .to_owned())
    }

    /// The server's `maxmemory-policy`, or `None` where `CONFIG GET` is not allowed
    /// (managed services). An `allkeys-*` policy evicts objects proxies still name.
    pub async fn maxmemory_policy(&self) -> Result<Option<String>> {
        let got: Result<Vec<String>> = self
            .run(
                "CONFIG GET",
                redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy"),
            )
            .await;
        match got {
            Ok(pair) => Ok(pair.into_iter().nth(1)),
            Err(e) if e.is::<ServerError>() => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn redis_key(&self, key: &Key) -> Result<String> {
        key.check_kind(Self::KIND)?;
        Ok(format!("{}{}", self.config.prefix, key.id()))
    }

    /// Runs one command; see [`Self::call`]. A caller whose thread may block (inside
    /// [`block_on`](crate::block_on): the Python package, the blocking API) sends it on
    /// a blocking connection from this thread, as `redis-py` does: no hand-off to the
    /// runtime's workers and back, two thread wake-ups an operation. Not for commands
    /// that wait at the server ([`Self::run_on_runtime`]): a blocked thread cannot be
    /// interrupted.
    pub(crate) async fn run<T: FromRedisValue>(
        &self,
        operation: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T> {
        if crate::runtime::may_block() {
            return self.run_here(operation, cmd);
        }
        self.run_on_runtime(operation, cmd).await
    }

    /// [`Self::run`] on this thread, with the same retries as [`Self::call`].
    fn run_here<T: FromRedisValue>(&self, operation: &'static str, cmd: &redis::Cmd) -> Result<T> {
        let retries = AtomicU32::new(0);
        let timeout = self.config.timeout();
        (|| self.blocking.query(&self.client, timeout, cmd))
            .retry(Self::backoff())
            .sleep(std::thread::sleep)
            .when(|e: &RedisError| e.is_connection_dropped() || e.is_connection_refusal())
            .notify(|_, _| {
                retries.fetch_add(1, Ordering::Relaxed);
            })
            .call()
            .map_err(|e| self.error(operation, e, retries.load(Ordering::Relaxed)))
    }

    /// Runs one command on the runtime's multiplexed connection, whatever the caller:
    /// for commands that wait at the server (`XREAD BLOCK`), which a caller must be
    /// able to give up on.
    pub(crate) async fn run_on_runtime<T: FromRedisValue>(
        &self,
        operation: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T> {
        self.call(operation, |mut connection| async move {
            cmd.query_async(&mut connection).await
        })
        .await
    }

    /// Sends `commands` by the bulk path (large values, see `blocking.rs`); errors become
    /// typed ones naming the server.
    async fn run_bulk(
        &self,
        operation: &'static str,
        commands: &[blocking::Command<'_>],
    ) -> Result<()> {
        self.blocking
            .send(&self.client, self.config.timeout(), commands)
            .await
            .map(|_| ())
            .map_err(|e| self.error(operation, e, 0))
    }

    /// The arguments of `SET` for one object (with its expiry, where objects expire).
    fn set_args<'a>(
        &self,
        redis_key: &'a str,
        data: &'a [u8],
        ttl_ms: &'a str,
    ) -> blocking::Command<'a> {
        let mut args = vec![b"SET".as_slice(), redis_key.as_bytes(), data];
        if self.config.ttl_s.is_some() {
            args.extend([b"PX".as_slice(), ttl_ms.as_bytes()]);
        }
        args
    }

    /// The expiry argument of `SET ... PX` (empty where objects do not expire).
    fn ttl_ms(&self) -> String {
        self.config
            .ttl_s
            .map(|ttl| ttl.saturating_mul(1000).to_string())
            .unwrap_or_default()
    }

    /// The commands of a batch with large values, for the bulk path: `MSET`s of at most
    /// [`MSET_CHUNK`] bytes of values each (a server's `proto-max-bulk-len` and its
    /// input buffer limit bound one command), or one `SET` each where objects expire.
    fn bulk_batch<'a>(
        &self,
        redis_keys: &'a [String],
        objects: &[&'a [u8]],
        ttl_ms: &'a str,
    ) -> Vec<blocking::Command<'a>> {
        if self.config.ttl_s.is_some() {
            return redis_keys
                .iter()
                .zip(objects)
                .map(|(redis_key, data)| self.set_args(redis_key, data, ttl_ms))
                .collect();
        }
        let mut commands = Vec::new();
        let mut current: blocking::Command<'a> = Vec::new();
        let mut bytes = 0;
        for (redis_key, data) in redis_keys.iter().zip(objects) {
            if !current.is_empty() && bytes + data.len() > MSET_CHUNK {
                commands.push(std::mem::take(&mut current));
                bytes = 0;
            }
            if current.is_empty() {
                current.push(b"MSET".as_slice());
            }
            current.extend([redis_key.as_bytes(), *data]);
            bytes += data.len();
        }
        commands.push(current);
        commands
    }

    /// Runs `request` on the connection inside the library runtime, retrying it when the
    /// connection dropped or was refused; errors become typed ones naming the server.
    async fn call<T, F, Fut>(&self, operation: &'static str, request: F) -> Result<T>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let retries = AtomicU32::new(0);
        let attempt = || in_library_context(request(self.connection.clone()));
        attempt
            .retry(Self::backoff())
            .sleep(|d| in_library_context(tokio::time::sleep(d)))
            .when(|e: &RedisError| e.is_connection_dropped() || e.is_connection_refusal())
            .notify(|_, _| {
                retries.fetch_add(1, Ordering::Relaxed);
            })
            .await
            .map_err(|e| self.error(operation, e, retries.load(Ordering::Relaxed)))
    }

    /// The pauses between tries of a command whose connection dropped or was refused.
    fn backoff() -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(1))
            .with_max_times(RETRIES)
            .with_jitter()
    }

    /// The error for a put of `size` bytes whose connection was reset: a server that
    /// refuses a value over its `proto-max-bulk-len` answers with an error and closes the
    /// connection while the value is still being sent, and the reset that follows may
    /// discard the answer before the client reads it. Asked again (`CONFIG GET`), the
    /// limit tells a refused value from a lost connection.
    async fn too_large(&self, size: usize, lost: Error) -> Error {
        const SMALLEST_LIMIT: usize = 1 << 20;
        if size <= SMALLEST_LIMIT {
            return lost;
        }
        let ask = redis::cmd("CONFIG")
            .arg("GET")
            .arg("proto-max-bulk-len")
            .clone();
        let limit = match self.run::<Vec<String>>("CONFIG GET", &ask).await {
            Ok(pair) => pair.get(1).and_then(|v| v.parse::<usize>().ok()),
            Err(_) => None,
        };
        match limit {
            Some(limit) if size > limit => Error::from(ServerError {
                service: "Redis",
                url: self.url.clone(),
                operation: "SET".into(),
                code: "ERR".into(),
                message: format!(
                    "Protocol error: invalid bulk length (the object is {size} bytes, over \
                     the server's proto-max-bulk-len of {limit})"
                ),
            }),
            _ => lost,
        }
    }

    /// The typed error for `source`, naming the server and the command.
    fn error(&self, operation: &'static str, source: RedisError, retries: u32) -> Error {
        if source.is_timeout() {
            return Error::timeout(
                format!("Redis at {} to answer {operation}", self.url),
                self.config.timeout(),
            );
        }
        if is_connection_error(&source) {
            return Error::unreachable(&self.url.clone(), source, retries);
        }
        // The client reports a refused AUTH as a kind of its own, not the server's code.
        let code = match source.kind() {
            redis::ErrorKind::AuthenticationFailed => "WRONGPASS",
            _ => source.code().unwrap_or(source.category()),
        };
        Error::from(ServerError {
            service: "Redis",
            url: self.url.clone(),
            operation: operation.into(),
            code: code.to_owned(),
            message: source
                .detail()
                .map_or_else(|| source.to_string(), str::to_owned),
        })
    }

    /// `SET` of one value, with the TTL if configured.
    fn set_command(&self, redis_key: &str, data: &[u8]) -> redis::Cmd {
        // Sized up front: a 1 MiB value is copied once, not through doubling buffers.
        let mut set = redis::Cmd::with_capacity(5, 32 + redis_key.len() + data.len());
        set.arg("SET").arg(redis_key).arg(data);
        if let Some(ttl) = self.config.ttl_s {
            set.arg("PX").arg(ttl.saturating_mul(1000));
        }
        set
    }
}

/// Whether the connection failed (dropped, refused, another I/O error such as a TLS
/// certificate that is not trusted), as opposed to the server answering with an error.
/// Only a dropped or refused connection is worth retrying.
fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal()
}

/// `text` with Redis glob characters escaped, for `SCAN MATCH`.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[async_trait]
impl Connector for RedisConnector {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn config(&self) -> ConnectorConfig {
        ConnectorConfig::new(Self::KIND, &self.config).expect("a Redis config serializes")
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::in_memory()
            .outliving_instances()
            .with_max_key_len(120)
            .with_deferred_keys()
    }

    async fn put(&self, data: &[u8], _options: &PutOptions) -> Result<Key> {
        let key = Key::generate(Self::KIND);
        let redis_key = self.redis_key(&key)?;
        let sent = if data.len() >= blocking::BULK_MIN {
            let ttl_ms = self.ttl_ms();
            self.run_bulk("SET", &[self.set_args(&redis_key, data, &ttl_ms)])
                .await
        } else {
            self.run::<()>("SET", &self.set_command(&redis_key, data))
                .await
        };
        match sent {
            Ok(()) => Ok(key),
            Err(e @ Error::Unreachable(_)) => Err(self.too_large(data.len(), e).await),
            Err(e) => Err(e),
        }
    }

    async fn get(&self, key: &Key) -> Result<Option<Bytes>> {
        let redis_key = self.redis_key(key)?;
        if key.is_deferred() && self.config.ttl_s.is_some() {
            // A future's value and its settled mark, in one round trip: a value gone
            // while the mark (which outlives it by a day) is there expired.
            let mget = redis::cmd("MGET")
                .arg(&redis_key)
                .arg(settled_mark(&redis_key))
                .clone();
            let mut both: Vec<Option<Vec<u8>>> = self.run("MGET", &mget).await?;
            let mark = both.pop().flatten();
            let value = both.pop().flatten();
            if value.is_none() && mark.is_some() {
                return Err(manifest::evicted(&key.to_string()));
            }
            return manifest::unwrap_value(key, value.map(Bytes::from));
        }
        let get = redis::cmd("GET").arg(&redis_key).clone();
        let value: Option<Vec<u8>> = self.run("GET", &get).await?;
        manifest::unwrap_value(key, value.map(Bytes::from))
    }

    async fn exists(&self, key: &Key) -> Result<bool> {
        if key.is_deferred() {
            // An unreachable server is an error, never "no such object".
            return match self.get(key).await {
                Ok(value) => Ok(value.is_some()),
                Err(Error::NotFound(_)) => Ok(false),
                Err(e) => Err(e),
            };
        }
        let exists = redis::cmd("EXISTS").arg(self.redis_key(key)?).clone();
        let count: u64 = self.run("EXISTS", &exists).await?;
        Ok(count > 0)
    }

    /// A future's value becomes a tombstone for a day: its later readers fail at once.
    async fn evict(&self, key: &Key) -> Result<()> {
        self.check_change(key, "an eviction")?;
        let redis_key = self.redis_key(key)?;
        if key.is_deferred() {
            let set = redis::cmd("SET")
                .arg(&redis_key)
                .arg(manifest::tombstone())
                .arg("PX")
                .arg(TOMBSTONE_MS)
                .clone();
            return self.run("SET", &set).await;
        }
        let unlink = redis::cmd("UNLINK").arg(redis_key).clone();
        let _: u64 = self.run("UNLINK", &unlink).await?;
        Ok(())
    }

    async fn put_batch(&self, objects: &[&[u8]], _options: &PutOptions) -> Result<Vec<Key>> {
        if objects.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<Key> = objects.iter().map(|_| Key::generate(Self::KIND)).collect();
        let mut redis_keys = Vec::with_capacity(keys.len());
        for key in &keys {
            redis_keys.push(self.redis_key(key)?);
        }
        if objects.iter().any(|data| data.len() >= blocking::BULK_MIN) {
            let ttl_ms = self.ttl_ms();
            let commands = self.bulk_batch(&redis_keys, objects, &ttl_ms);
            if let Err(e) = self.run_bulk("MSET", &commands).await {
                // Leave nothing behind that no caller has a key for.
                let _: Result<u64> = self
                    .run("UNLINK", redis::cmd("UNLINK").arg(&redis_keys))
                    .await;
                return Err(e);
            }
            return Ok(keys);
        }
        if self.config.ttl_s.is_none() {
            let mut mset = redis::cmd("MSET");
            for (redis_key, data) in redis_keys.iter().zip(objects) {
                mset.arg(redis_key).arg(*data);
            }
            let _: () = self.run("MSET", &mset).await?;
        } else {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for (redis_key, data) in redis_keys.iter().zip(objects) {
                pipe.add_command(self.set_command(redis_key, data)).ignore();
            }
            let pipe = &pipe;
            let _: () = self
                .call("SET (pipelined)", |mut connection| async move {
                    pipe.query_async(&mut connection).await
                })
                .await?;
        }
        Ok(keys)
    }

    async fn get_batch(&self, keys: &[Key]) -> Result<Vec<Option<Bytes>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut mget = redis::cmd("MGET");
        for key in keys {
            mget.arg(self.redis_key(key)?);
        }
        let values: Vec<Option<Vec<u8>>> = self.run("MGET", &mget).await?;
        keys.iter()
            .zip(values)
            .map(|(key, v)| manifest::unwrap_value(key, v.map(Bytes::from)))
            .collect()
    }

    /// One `SET` of an envelope value: the manifest, then the object.
    async fn settle(&self, key: &Key, settlement: Settlement<'_>) -> Result<()> {
        key.check_deferred(Self::KIND)?;
        self.check_change(key, "setting a future")?;
        let redis_key = self.redis_key(key)?;
        let envelope = manifest::envelope(settlement);
        // SET NX: the first settlement wins; a later one changes nothing.
        let mut set = self.set_command(&redis_key, &envelope);
        set.arg("NX");
        let written: Option<String> = self.run("SET", &set).await?;
        if written.is_some() {
            if let Some(ttl) = self.config.ttl_s {
                // Outlives the value by a day: a reader that finds the mark and no value
                // knows it expired, instead of waiting for it.
                let mark = redis::cmd("SET")
                    .arg(settled_mark(&redis_key))
                    .arg("1")
                    .arg("PX")
                    .arg(ttl.saturating_mul(1000).saturating_add(TOMBSTONE_MS))
                    .clone();
                let _: () = self.run("SET", &mark).await?;
            }
            return Ok(());
        }
        // Not written: settled before — by this very call, if a dropped connection made
        // it retry a SET that had landed (then the value is ours, byte for byte).
        let get = redis::cmd("GET").arg(&redis_key).clone();
        let there: Option<Vec<u8>> = self.run("GET", &get).await?;
        if there.as_deref() == Some(&envelope[..]) {
            return Ok(());
        }
        Err(Error::from(AlreadySet::new(format!("the future {key}"))))
    }

    fn not_found_hint(&self) -> &'static str {
        "a Redis object is gone once evicted, expired (the connector's ttl_s) or dropped by \
         the server's maxmemory policy, or the server was restarted without persistence"
    }
}
