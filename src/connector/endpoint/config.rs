//! An endpoint's configuration file, `<home>/<name>/config.toml`, in ProxyStore's layout.
//!
//! ProxyStore's Python `EndpointConnector` finds its home endpoint by reading every
//! `config.toml` under its home directory, so the file we write must be one its pydantic
//! model accepts: the ProxyStore fields are written exactly as `proxystore-endpoint
//! configure` writes them (no `null`, a `host` only while running), and what only we
//! read lives in a `[ps_globus]` table, which ProxyStore's model ignores. The relay we
//! speak is not ProxyStore's websocket relay, so its address lives there too: a
//! `[relay]` table naming a `tcp://` address would fail ProxyStore's validation and hide
//! the endpoint from its client.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, ErrorKind, Result};

/// The file name of an endpoint's configuration inside its directory.
pub const CONFIG_FILE: &str = "config.toml";

/// The file name of an endpoint's Unix socket inside its directory (our connector's way
/// in: the server checks the caller's uid with `SO_PEERCRED`).
pub const SOCKET_FILE: &str = "endpoint.sock";

/// ProxyStore's default largest object, in bytes.
pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 100_000_000;

/// One endpoint's `config.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointFileConfig {
    /// The endpoint's name: `[A-Za-z0-9_-]+`, also its directory's name.
    pub name: String,
    /// Its id: what keys name, and what peers are found by.
    pub uuid: Uuid,
    /// The REST API's port.
    pub port: u16,
    /// The REST API's host, written while the endpoint runs (ProxyStore's clients skip an
    /// endpoint without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// How `host` is chosen at start: `static` (as written; ours is loopback), `ip` or
    /// `fqdn`.
    #[serde(default = "default_host_type")]
    pub host_type: String,
    /// ProxyStore's `[relay]` table, kept as it is (we never write one: see the module
    /// docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<toml::Table>,
    /// Where objects are kept.
    #[serde(default)]
    pub storage: StorageSection,
    /// What only ps-globus reads.
    #[serde(default)]
    pub ps_globus: Extensions,
}

fn default_host_type() -> String {
    "static".into()
}

/// ProxyStore's `[storage]` table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageSection {
    /// ProxyStore's SQLite database, kept as written: our endpoint keeps every object in
    /// `objects.db` in its own directory, with its size and sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_path: Option<String>,
    /// The largest object accepted, in bytes (ProxyStore's default: 100,000,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_object_size: Option<u64>,
}

/// The `[ps_globus]` table: our endpoint's own settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extensions {
    /// Bytes of the most recently used objects kept in memory as well (default 1 GiB);
    /// every object is in the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_budget: Option<u64>,
    /// The address the REST API listens on (default `127.0.0.1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rest_host: Option<String>,
    /// The relay this endpoint registers with (`tls://host:port`, or `tcp://host:port`
    /// on loopback or without auth), absent for an endpoint on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_address: Option<String>,
    /// How the relay checks who we are: `globus` (a Globus Auth token, the default) or
    /// `none` (a relay that trusts its network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_auth: Option<String>,
    /// The scope the relay token is asked for (default ProxyStore's relay scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_scope: Option<String>,
    /// A CA certificate (PEM) a `tls://` relay's certificate is checked against, instead
    /// of the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_ca_file: Option<String>,
    /// Where peers connect to us directly (`host:port`; default `0.0.0.0:0`, any free
    /// port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_listen: Option<String>,
    /// The addresses peers are told to dial (default: the listening address when it is
    /// one host's, else this host's addresses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer_advertise: Vec<String>,
    /// How long one request to a peer may take, in seconds (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_timeout_s: Option<u64>,
    /// Serve REST clients on other hosts (their uid cannot be checked: anyone who reaches
    /// the port reads and writes every object, as with ProxyStore's endpoint).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_remote_clients: bool,
}

impl EndpointFileConfig {
    /// A new endpoint's configuration: a fresh id, REST on loopback at `port`.
    pub fn new(name: &str, port: u16) -> Result<Self> {
        check_name(name)?;
        Ok(EndpointFileConfig {
            name: name.to_owned(),
            uuid: Uuid::new_v4(),
            port,
            host: None,
            host_type: default_host_type(),
            relay: None,
            storage: StorageSection::default(),
            ps_globus: Extensions::default(),
        })
    }

    /// Reads `dir/config.toml`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
        let config: EndpointFileConfig = toml::from_str(&text).map_err(|e| {
            Error::invalid_config_from(&format!("endpoint configuration {}", path.display()), e)
        })?;
        check_name(&config.name)?;
        Ok(config)
    }

    /// Writes `dir/config.toml` atomically (a sibling temporary file, then a rename), so
    /// a client reading it meanwhile sees the old or the new file, never half of one.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let text = toml::to_string_pretty(self)
            .map_err(|e| Error::invalid_config_from("endpoint configuration", e))?;
        crate::fsutil::write_atomic(&dir.join(CONFIG_FILE), text.as_bytes(), false)
    }

    /// The largest object accepted, in bytes.
    pub fn max_object_size(&self) -> u64 {
        self.storage
            .max_object_size
            .unwrap_or(DEFAULT_MAX_OBJECT_SIZE)
    }
}

/// Checks an endpoint name: `[A-Za-z0-9_-]+`, as ProxyStore's model requires (so it is
/// also a safe directory name).
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{name:?} is not an endpoint name: use 1 to 64 of A-Z a-z 0-9 _ -"),
        ))
    }
}

/// Every endpoint configured under `home`: `(its directory, its config)` for each
/// `home/<name>/config.toml` that parses, sorted by name. A file that does not parse is
/// skipped, as ProxyStore's client skips it; `problems` gets one line for it.
pub fn configs_in(home: &Path, problems: &mut Vec<String>) -> Vec<(PathBuf, EndpointFileConfig)> {
    let Ok(entries) = std::fs::read_dir(home) else {
        return Vec::new();
    };
    let mut found: Vec<(PathBuf, EndpointFileConfig)> = entries
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .filter(|dir| dir.join(CONFIG_FILE).is_file())
        .filter_map(|dir| match EndpointFileConfig::load(&dir) {
            Ok(config) => Some((dir, config)),
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        })
        .collect();
    found.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    found
}
