//! The Redis connector's configuration: where the server is and how to talk to it. It
//! lives with the configuration file, whose `[redis.NAME]` tables are made of it (the
//! connector, a layer up, re-exports it as `connector::RedisConfig`).
//!
//! Everything here travels inside every proxy the connector makes, so it names the
//! password's *environment variable*, never the password; a config that carries a
//! `password` is refused when it is read.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The prefix of every Redis key the connector writes, unless configured otherwise.
pub(crate) const DEFAULT_PREFIX: &str = "ps-globus:";

/// How long one command may wait for its answer, unless configured otherwise.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a Redis server is, and how the connector uses it. Serialized into every proxy,
/// so that another process (at another site) rebuilds the same connector.
///
/// ```
/// use ps_globus::connector::RedisConfig;
/// let config: RedisConfig = serde_json::from_str(r#"{"host": "redis.lab", "password_env": "LAB_REDIS_PASSWORD"}"#)?;
/// assert_eq!(config.port, 6379);
/// assert_eq!(config.url(), "redis://redis.lab:6379/0");
///
/// // A password never travels in a config.
/// let refused = serde_json::from_str::<RedisConfig>(r#"{"host": "h", "password": "hunter2"}"#);
/// assert!(refused.unwrap_err().to_string().contains("password_env"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawRedisConfig")]
#[non_exhaustive]
pub struct RedisConfig {
    /// The name of the configuration file's `[redis.NAME]` table this config came from
    /// ([`RedisConnector::named`](crate::connector::RedisConnector::named)): a process that rebuilds
    /// the connector from a proxy connects to *its own* table of that name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Host name or address of the server (default `127.0.0.1`).
    pub host: String,
    /// Its port (default 6379).
    pub port: u16,
    /// A Unix socket to use instead of `host` and `port` (an absolute path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// The database number (default 0).
    pub db: i64,
    /// Talk TLS (`rediss://`), checking the server's certificate against the system's
    /// roots, or against `tls_ca_file`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
    /// A PEM file of the certificate authority that signed the server's certificate (a
    /// facility's private CA), instead of the system's roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// The Redis ACL user (default: the server's default user).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The environment variable holding the server's password, read in each process
    /// that connects. Unset: no password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Prepended to every object id to make its Redis key (default `ps-globus:`), so
    /// [`clear`](crate::connector::RedisConnector::clear) touches only this connector's objects.
    pub prefix: String,
    /// Objects expire this many seconds after their put (Redis `PX`); unset: never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
    /// How long one command (or connecting) may take, in milliseconds (default 30000).
    pub timeout_ms: u64,
}

/// The unchecked shape of a [`RedisConfig`], validated on deserialization.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedisConfig {
    #[serde(default)]
    server: Option<String>,
    #[serde(default = "default_host")]
    host: String,
    #[serde(default = "default_port")]
    port: u16,
    #[serde(default)]
    socket: Option<PathBuf>,
    #[serde(default)]
    db: i64,
    #[serde(default)]
    tls: bool,
    #[serde(default)]
    tls_ca_file: Option<PathBuf>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password_env: Option<String>,
    /// Only to refuse it with advice, rather than as an unknown field.
    #[serde(default)]
    password: Option<serde::de::IgnoredAny>,
    #[serde(default = "default_prefix")]
    prefix: String,
    #[serde(default)]
    ttl_s: Option<u64>,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    6379
}
fn default_prefix() -> String {
    DEFAULT_PREFIX.into()
}
fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT.as_millis() as u64
}

impl TryFrom<RawRedisConfig> for RedisConfig {
    type Error = Error;

    fn try_from(raw: RawRedisConfig) -> Result<Self> {
        let invalid = |message: String| Err(Error::invalid_config("redis connector", message));
        if raw.password.is_some() {
            return invalid(
                "a password is never kept in a config (it would travel inside every proxy): \
                 put it in an environment variable and name that variable in password_env"
                    .into(),
            );
        }
        let config = RedisConfig {
            server: raw.server,
            host: raw.host,
            port: raw.port,
            socket: raw.socket,
            db: raw.db,
            tls: raw.tls,
            tls_ca_file: raw.tls_ca_file,
            username: raw.username,
            password_env: raw.password_env,
            prefix: raw.prefix,
            ttl_s: raw.ttl_s,
            timeout_ms: raw.timeout_ms,
        };
        match config.problem() {
            Some(problem) => invalid(problem),
            None => Ok(config),
        }
    }
}

impl RedisConfig {
    /// The server at `host:port`, with every other setting at its default.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        RedisConfig {
            server: None,
            host: host.into(),
            port,
            socket: None,
            db: 0,
            tls: false,
            tls_ca_file: None,
            username: None,
            password_env: None,
            prefix: DEFAULT_PREFIX.into(),
            ttl_s: None,
            timeout_ms: default_timeout_ms(),
        }
    }

    /// The server listening on the Unix socket `path`.
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        RedisConfig {
            socket: Some(path.into()),
            ..Self::new(default_host(), default_port())
        }
    }

    /// Where the server is, as a URL without credentials (for messages and `doctor`).
    pub fn url(&self) -> String {
        let user = self
            .username
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        match &self.socket {
            Some(path) => format!("unix://{user}{}?db={}", path.display(), self.db),
            None => {
                let scheme = if self.tls { "rediss" } else { "redis" };
                let host = if self.host.contains(':') {
                    format!("[{}]", self.host)
                } else {
                    self.host.clone()
                };
                format!("{scheme}://{user}{host}:{}/{}", self.port, self.db)
            }
        }
    }

    /// The time limit of one command.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// What is wrong with this config, if anything.
    pub(crate) fn problem(&self) -> Option<String> {
        let env_name = |n: &str| {
            let mut bytes = n.bytes();
            bytes
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        };
        let absolute = |p: &Option<PathBuf>| p.as_ref().is_none_or(|p| p.is_absolute());
        Some(
            if self.socket.is_none() && (self.host.is_empty() || self.port == 0) {
                format!(
                    "host {:?} and port {} do not name a server",
                    self.host, self.port
                )
            } else if self.db < 0 {
                format!("db {} is negative", self.db)
            } else if !absolute(&self.socket) || !absolute(&self.tls_ca_file) {
                "socket and tls_ca_file must be absolute paths (a config is read in other directories)"
                .into()
            } else if self.socket.is_some() && self.tls {
                "tls over a Unix socket is not supported: use host and port".into()
            } else if self.tls_ca_file.is_some() && !self.tls {
                "tls_ca_file is set but tls is not".into()
            } else if self.password_env.as_deref().is_some_and(|n| !env_name(n)) {
                format!(
                    "password_env {:?} is not an environment variable name: it names the variable \
                 that holds the password, not the password",
                    self.password_env.as_deref().unwrap_or_default()
                )
            } else if self.prefix.len() > 200 || self.prefix.chars().any(char::is_control) {
                "prefix is longer than 200 bytes or holds control characters".into()
            } else if self.ttl_s == Some(0) || self.timeout_ms == 0 {
                "ttl_s and timeout_ms must be positive".into()
            } else {
                return None;
            },
        )
    }
}
