//! The trust boundary: a connector configuration that arrived as *data* (inside a proxy,
//! a stream event, a lease row, a reference, a serialized setter) may say **which
//! object** — a store directory, collections and paths, a key prefix — but never
//! **where and as whom**: service URLs, Redis servers and where their passwords come
//! from. Those come from this process's own configuration ([`LocalTrust`]).
//!
//! Every connector is built with a [`Provenance`]: [`Provenance::Local`] for what this
//! process's own code or its user typed (a constructor, a Python argument), and
//! [`Provenance::Data`] for a configuration deserialized from elsewhere. A data
//! configuration is first passed through [`admit`], a pure step (no socket, no file, no
//! database) that checks every *binding* against the local configuration and replaces it
//! with the local one, or refuses it with [`Untrusted`] naming the configuration
//! line that would trust it. A connector built from data also changes (deletes, writes a
//! future's value) only objects its store minted, in a directory this process trusts
//! ([`LocalTrust::allows_changes_in`]).
//!
//! `docs/THREAT-MODEL.md` is the full statement; `FIELDS` classifies every option of
//! every built-in connector, and a test keeps that table and the document complete.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{ConnectorConfig, EndpointConfig, GlobusConfig, MultiConfig, RedisConfig};
use crate::error::{Error, Result, Untrusted};
use crate::settings::{DEFAULT_TRANSFER_URL, Settings};

/// The name of the marker file a store writes into a directory it creates or is
/// configured with locally: a process that rebuilt the store from data deletes only in a
/// directory that carries it (or that its configuration's `[trust] store_dirs` names).
pub(crate) const STORE_MARKER: &str = ".ps-globus-store";

/// The longest time limit a configuration from data may ask for (a day): longer ones are
/// cut to it rather than overflowing a deadline.
pub(crate) const MAX_DATA_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The largest `https_max_size` a store from data may set (a store's or a site's): a
/// reader that pulls by HTTPS holds the object in memory.
pub(crate) const MAX_DATA_HTTPS_SIZE: u64 = 64 << 20;

/// Where a connector configuration came from.
#[derive(Clone, Debug, Default)]
pub enum Provenance {
    /// This process's own code or user: every setting is taken as given.
    #[default]
    Local,
    /// Data from elsewhere: bindings are checked against this local configuration.
    Data(Arc<LocalTrust>),
}

impl Provenance {
    /// Data, judged against this process's own configuration ([`LocalTrust::process`]).
    pub fn data() -> Result<Provenance> {
        Ok(Provenance::Data(LocalTrust::process()?))
    }

    /// The local configuration a data configuration is judged against, if this is data.
    pub fn trust(&self) -> Option<&LocalTrust> {
        match self {
            Provenance::Local => None,
            Provenance::Data(trust) => Some(trust),
        }
    }
}

/// What one connector option is, for the trust boundary (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Says which object: data may set it (a path is confined to its directory).
    Locator,
    /// Says where or as whom: only this process's configuration decides it.
    Binding,
    /// A number data may set, bounded where it becomes a deadline or a size.
    Tuning,
}

/// Every option of every built-in connector (and of a store config), by kind: what the
/// trust boundary takes it to be. `docs/THREAT-MODEL.md` has the same table.
// Read by the test that ties it to the connectors' options and THREAT-MODEL.md.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) const FIELDS: &[(&str, &str, Role)] = &[
    ("store", "name", Role::Locator),
    ("store", "codec", Role::Locator),
    ("store", "cache_size", Role::Tuning),
    ("store", "resolve_timeout", Role::Tuning),
    ("local", "instance", Role::Locator),
    ("file", "dir", Role::Locator),
    ("endpoint", "endpoints", Role::Locator),
    ("endpoint", "proxystore_dir", Role::Binding),
    ("endpoint", "timeout_ms", Role::Tuning),
    ("globus", "store_dir", Role::Locator),
    ("globus", "sites", Role::Locator),
    ("globus", "destinations", Role::Locator),
    ("globus", "pull_on_demand", Role::Binding),
    ("globus", "wait_timeout_s", Role::Tuning),
    ("globus", "https_max_size", Role::Tuning),
    ("globus", "latency_max_size", Role::Tuning),
    ("globus", "transfer_url", Role::Binding),
    ("redis", "server", Role::Locator),
    ("redis", "host", Role::Binding),
    ("redis", "port", Role::Binding),
    ("redis", "socket", Role::Binding),
    ("redis", "db", Role::Locator),
    ("redis", "tls", Role::Binding),
    ("redis", "tls_ca_file", Role::Binding),
    ("redis", "username", Role::Binding),
    ("redis", "password_env", Role::Binding),
    ("redis", "password", Role::Binding),
    ("redis", "prefix", Role::Locator),
    ("redis", "ttl_s", Role::Tuning),
    ("redis", "timeout_ms", Role::Tuning),
    ("multi", "children", Role::Locator),
];

/// What this process's own configuration trusts: the services, servers and directories
/// that data from elsewhere may point it at.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LocalTrust {
    /// The configuration file (named in advice).
    pub config_path: PathBuf,
    /// This process's own Transfer service root.
    pub transfer_url: String,
    /// Other Transfer roots the configuration trusts (`[trust] transfer_urls`).
    pub trusted_transfer_urls: Vec<String>,
    /// The configuration's `[redis.NAME]` tables.
    pub redis: BTreeMap<String, RedisConfig>,
    /// Directories where data may ask for deletions (`[trust] store_dirs`), besides those
    /// carrying `STORE_MARKER`.
    pub store_dirs: Vec<PathBuf>,
    /// The collections the configuration's sites name: a proxy's pull-on-demand transfer
    /// goes only into one of them.
    pub collections: Vec<uuid::Uuid>,
}

impl LocalTrust {
    /// What `settings` and `config` (the configuration file's contents) trust.
    pub fn new(settings: &Settings, config: &crate::config::Config) -> LocalTrust {
        LocalTrust {
            config_path: settings.config_path.clone(),
            transfer_url: settings.transfer_url.clone(),
            trusted_transfer_urls: config.trust.transfer_urls.clone(),
            redis: config.redis.clone(),
            store_dirs: config.trust.store_dirs.clone(),
            collections: config.collections(),
        }
    }

    /// What `settings` and the configuration file they name trust.
    pub fn from_settings(settings: &Settings) -> Result<LocalTrust> {
        Ok(Self::new(settings, &crate::config::Config::load(settings)?))
    }

    /// What this process trusts: its process defaults' settings (see
    /// [`set_process_defaults`](super::set_process_defaults)), else [`Settings::global`],
    /// and the Transfer URLs this process's own code built Globus connectors with (a
    /// program or test that starts the emulator and builds its store on it was configured
    /// with that URL; a proxy that names it only repeats it).
    pub fn process() -> Result<Arc<LocalTrust>> {
        let settings = super::globus::settings_default();
        let mut trust = Self::from_settings(&settings)?;
        trust.trusted_transfer_urls.extend(
            configured_transfer_urls()
                .lock()
                .expect("poisoned")
                .iter()
                .cloned(),
        );
        Ok(Arc::new(trust))
    }

    /// The Transfer root to use for a configuration that names `named`: this process's
    /// own when it names none; the named one only if it is this process's own, the real
    /// service's or listed in `[trust] transfer_urls` — and never plain `http://` to a
    /// host that is not loopback.
    pub fn transfer_url(&self, named: Option<&str>) -> Result<String> {
        let Some(named) = named else {
            return Ok(self.transfer_url.clone());
        };
        let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
        let trusted = same(named, &self.transfer_url)
            || same(named, DEFAULT_TRANSFER_URL)
            || self.trusted_transfer_urls.iter().any(|t| same(named, t));
        let shown = crate::redact::url(named);
        if !trusted {
            return Err(Error::from(Untrusted::new(
                "Transfer service URL",
                shown.clone(),
                format!(
                    "this process sends its Globus token only to its own Transfer URL ({}); \
                     to trust this one, add `[trust]` `transfer_urls = [\"{shown}\"]` to {}",
                    self.transfer_url,
                    self.config_path.display()
                ),
            )));
        }
        if !is_safe_service_url(named) {
            return Err(Error::from(Untrusted::new(
                "Transfer service URL",
                shown,
                "a token is never sent over plain http:// to a host that is not \
                         loopback: use https://",
            )));
        }
        Ok(named.to_owned())
    }

    /// The Redis server a configuration from data may use: the local `[redis.NAME]` table
    /// it names (by `server`, or by the same socket or host and port), whose connection
    /// settings and password source replace the data's; else, on loopback or a Unix
    /// socket only, the server it names without any credential; else
    /// [`Untrusted`] with the table that would trust it.
    pub fn redis(&self, data: &RedisConfig) -> Result<RedisConfig> {
        let table = match &data.server {
            Some(name) => Some(self.redis.get(name).ok_or_else(|| {
                Error::from(Untrusted::new(
                    "Redis server",
                    name.clone(),
                    format!(
                        "the proxy names the server by its table [redis.{name}], which {} does \
                     not have: add that table (host, port, password_env) to it",
                        self.config_path.display()
                    ),
                ))
            })?),
            None => self.redis.values().find(|local| same_server(local, data)),
        };
        let mut admitted = data.clone();
        admitted.timeout_ms = data.timeout_ms.min(MAX_DATA_TIMEOUT.as_millis() as u64);
        match table {
            Some(local) => {
                admitted.host = local.host.clone();
                admitted.port = local.port;
                admitted.socket = local.socket.clone();
                admitted.tls = local.tls;
                admitted.tls_ca_file = local.tls_ca_file.clone();
                admitted.username = local.username.clone();
                admitted.password_env = local.password_env.clone();
                Ok(admitted)
            }
            None if data.socket.is_some() || is_loopback_host(&data.host) => {
                // Unknown to the configuration but on this machine: used, without any
                // credential the data asks to send (its TLS settings stay: with no
                // credential to protect, they only decide whether the read succeeds).
                admitted.username = None;
                admitted.password_env = None;
                Ok(admitted)
            }
            None => Err(Error::from(Untrusted::new(
                "Redis server",
                data.url(),
                format!(
                    "this process connects only to Redis servers its configuration names: \
                     add to {} a table `[redis.NAME]` with `host = \"{}\"` and `port = {}` \
                     (and `password_env` if it needs a password)",
                    self.config_path.display(),
                    data.host,
                    data.port
                ),
            ))),
        }
    }

    /// Whether data may ask for a change (a deletion, a future's value) in `dir`: it is
    /// one of `[trust] store_dirs` (or inside one), or carries `STORE_MARKER`.
    pub fn allows_changes_in(&self, dir: &Path) -> bool {
        // Every data-triggered eviction asks: the marker (one stat) first; paths are
        // resolved only when the configuration lists directories.
        if has_marker(dir) || self.store_dirs.iter().any(|t| dir.starts_with(t)) {
            return true;
        }
        if self.store_dirs.is_empty() {
            return false;
        }
        let Ok(dir) = std::fs::canonicalize(dir) else {
            return false;
        };
        self.store_dirs
            .iter()
            .filter_map(|t| std::fs::canonicalize(t).ok())
            .any(|t| dir.starts_with(t))
    }
}

/// The Transfer URLs that connectors built by this process's own code use (see
/// [`LocalTrust::process`]).
fn configured_transfer_urls() -> &'static std::sync::Mutex<Vec<String>> {
    /// The slot's own type.
    #[derive(Default)]
    struct Urls(std::sync::Mutex<Vec<String>>);
    &crate::process::inherited(Urls::default).0
}

/// Records that this process's own code configured a Globus connector with `url`.
pub(crate) fn configured_transfer_url(url: &str) {
    let mut urls = configured_transfer_urls().lock().expect("poisoned");
    if !urls.iter().any(|u| u == url) {
        urls.push(url.to_owned());
    }
}

/// Whether `dir` carries the store marker (a regular file, not a link).
pub(crate) fn has_marker(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir.join(STORE_MARKER)).is_ok_and(|m| m.is_file())
}

/// Writes the store marker into `dir` if it is not there (best effort: a read-only
/// directory simply stays unmarked, and data-triggered deletions there are skipped).
pub(crate) fn mark_store_dir(dir: &Path) {
    if has_marker(dir) {
        return;
    }
    let text = "This directory is a ps-globus store: processes that rebuild the store from a \
                proxy may delete the objects it minted here.\n";
    let _ = std::fs::write(dir.join(STORE_MARKER), text);
}

/// Whether `id` is an object id a store mints ([`super::Key::new_id`]): 32 lowercase
/// hexadecimal digits. A deletion that data asks for names only such an id.
pub(crate) fn is_minted_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks that data may have `id` (in `dir`, for connectors that keep files) deleted or
/// written, or says why not.
pub(crate) fn check_change(
    provenance: &Provenance,
    dir: Option<&Path>,
    id: &str,
    operation: &'static str,
) -> Result<()> {
    let Some(trust) = provenance.trust() else {
        return Ok(());
    };
    if !is_minted_id(id) {
        return Err(Error::from(Untrusted::new(
            "object to change",
            match dir {
                Some(dir) => format!("{}/{id}", dir.display()),
                None => id.to_owned(),
            },
            format!(
                "{operation} skipped: a store rebuilt from a proxy changes only objects it \
                 minted (32 hexadecimal digits)"
            ),
        )));
    }
    if let Some(dir) = dir.filter(|dir| !trust.allows_changes_in(dir)) {
        return Err(Error::from(Untrusted::new(
            "store directory",
            dir.display().to_string(),
            format!(
                "{operation} of {id} skipped: a store rebuilt from a proxy changes objects \
                 only in a directory that carries the store's marker ({STORE_MARKER}) or \
                 that `[trust] store_dirs` in {} lists",
                trust.config_path.display()
            ),
        )));
    }
    Ok(())
}

/// Whether a local table and a data configuration name the same server.
fn same_server(local: &RedisConfig, data: &RedisConfig) -> bool {
    match (&local.socket, &data.socket) {
        (Some(a), Some(b)) => a == b,
        (None, None) => local.port == data.port && local.host.eq_ignore_ascii_case(&data.host),
        _ => false,
    }
}

/// Whether `host` is this machine's loopback (`localhost`, 127.0.0.0/8, `::1`).
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether a token may be sent to `url`: `https://`, or `http://` to loopback.
fn is_safe_service_url(url: &str) -> bool {
    match reqwest::Url::parse(url) {
        Ok(parsed) if parsed.scheme() == "https" => true,
        Ok(parsed) if parsed.scheme() == "http" => parsed.host_str().is_some_and(is_loopback_host),
        _ => false,
    }
}

/// The pure step of the trust boundary: `config` (from data) with every binding checked
/// against `trust` and replaced by the local one, every number bounded. No socket, file
/// or database is touched. Kinds other than the built-in ones come back as they are
/// (their builders receive the [`Provenance`] and judge for themselves).
pub fn admit(config: &ConnectorConfig, trust: &LocalTrust) -> Result<ConnectorConfig> {
    let options = match config.kind.as_str() {
        "globus" => {
            let mut globus: GlobusConfig = config.options_as()?;
            globus.transfer_url = match globus.transfer_url.as_deref() {
                None => None,
                named => Some(trust.transfer_url(named)?),
            };
            globus.wait_timeout_s = globus
                .wait_timeout_s
                .map(|s| s.min(MAX_DATA_TIMEOUT.as_secs()));
            // A reader's HTTPS pull holds the object in memory: bounded from data.
            globus.https_max_size = globus.https_max_size.map(|n| n.min(MAX_DATA_HTTPS_SIZE));
            for site in globus.sites.values_mut() {
                site.https_max_size = site.https_max_size.map(|n| n.min(MAX_DATA_HTTPS_SIZE));
            }
            to_value(&config.kind, &globus)?
        }
        "redis" => to_value(&config.kind, &trust.redis(&config.options_as()?)?)?,
        "endpoint" => {
            let mut endpoint: EndpointConfig = config.options_as()?;
            // Where the home endpoint is comes from this process's own directory: a
            // proxy naming another would point it at configuration files it planted.
            endpoint.proxystore_dir = None;
            endpoint.timeout_ms = endpoint
                .timeout_ms
                .map(|ms| ms.min(MAX_DATA_TIMEOUT.as_millis() as u64));
            to_value(&config.kind, &endpoint)?
        }
        "multi" => {
            let mut multi: MultiConfig = config.options_as()?;
            for child in &mut multi.children {
                child.connector = admit(&child.connector, trust)?;
            }
            to_value(&config.kind, &multi)?
        }
        _ => config.options.clone(),
    };
    Ok(ConnectorConfig {
        kind: config.kind.clone(),
        options,
    })
}

fn to_value(kind: &str, options: &impl serde::Serialize) -> Result<serde_json::Value> {
    serde_json::to_value(options)
        .map_err(|e| Error::invalid_config_from(&format!("{kind} connector"), e))
}

#[cfg(test)]
mod tests;
