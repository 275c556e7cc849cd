//! The client-side configuration file: the native app's client id and the sites.
//!
//! It lives at `$PS_GLOBUS_CONFIG`, else `$XDG_CONFIG_HOME/ps-globus/config.toml`, else
//! `~/.config/ps-globus/config.toml`. A missing file is an empty configuration; a file
//! that does not parse is an error naming the file and the line, never silently
//! ignored. Every field is optional, and unknown fields are refused so that a typo does
//! not go unnoticed.
//!
//! ```toml
//! client_id = "6f7c3c35-0d8e-4f76-9cd1-3c1f5e3a6b11"
//!
//! [sites.polaris]
//! collection = "05d2c76a-e867-4f67-aa57-76edeb0beda0"
//! collection_path = "/projects/x"
//! local_path = "/lus/grand/projects/x"
//! host_regex = "^polaris-login-\\d+"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::settings::Settings;

pub mod redis;

/// The newest configuration format this build reads.
pub(crate) const CONFIG_FORMAT_VERSION: u16 = 1;

/// The contents of `config.toml`.
///
/// ```
/// let config: ps_globus::config::Config = toml::from_str(r#"
///     client_id = "6f7c3c35-0d8e-4f76-9cd1-3c1f5e3a6b11"
///     [sites.lab]
///     collection = "05d2c76a-e867-4f67-aa57-76edeb0beda0"
///     collection_path = "/data"
///     local_path = "/srv/data"
/// "#).unwrap();
/// assert_eq!(config.sites["lab"].collection_path, "/data");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// Format version (absent means 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u16>,
    /// The native app used by `ps-globus login` (`PS_GLOBUS_CLIENT_ID` overrides it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The state database every command and store of this configuration shares:
    /// `sqlite:PATH` or `postgres://USER@HOST:PORT/DATABASE` (keep a password in
    /// `~/.pgpass` or `PGPASSWORD`, not here). `PS_GLOBUS_STATE_URL` overrides it; absent:
    /// `state.db` in the state directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_url: Option<String>,
    /// Sites by name.
    pub sites: BTreeMap<String, SiteConfig>,
    /// Redis servers by name (`[redis.NAME]` tables of
    /// [`RedisConfig`](crate::config::redis::RedisConfig) fields), for
    /// [`RedisConnector::named`](crate::connector::RedisConnector::named); `doctor` checks
    /// each.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub redis: BTreeMap<String, crate::config::redis::RedisConfig>,
    /// What data from elsewhere (a proxy, an event) may point this process at, beyond
    /// its own service URLs, `[redis.NAME]` tables and marked store directories
    /// (`docs/THREAT-MODEL.md`).
    #[serde(skip_serializing_if = "TrustConfig::is_empty")]
    pub trust: TrustConfig,
}

/// The `[trust]` table: services and directories that proxies from elsewhere may name.
///
/// ```toml
/// [trust]
/// transfer_urls = ["https://transfer.staging.example.org/"]
/// store_dirs = ["/lus/grand/projects/x/ps-globus"]
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct TrustConfig {
    /// Transfer service roots a proxy may name besides this process's own
    /// (`PS_GLOBUS_TRANSFER_URL`) and the real service's. Plain `http://` is honoured
    /// for loopback hosts only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub transfer_urls: Vec<String>,
    /// Directories where a store rebuilt from a proxy may delete the objects it minted,
    /// besides directories that carry the store marker (`.ps-globus-store`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub store_dirs: Vec<PathBuf>,
}

impl TrustConfig {
    fn is_empty(&self) -> bool {
        self.transfer_urls.is_empty() && self.store_dirs.is_empty()
    }
}

/// One Globus collection as one facility sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// The collection's id.
    pub collection: Uuid,
    /// The collection path that `local_path` is (e.g. `/projects/x`).
    pub collection_path: String,
    /// Where that path is on this facility's file system.
    pub local_path: PathBuf,
    /// Hosts matching this regex are at this site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_regex: Option<String>,
}

impl Config {
    /// Reads the configuration file `settings` name (missing: empty).
    pub fn load(settings: &Settings) -> Result<Config> {
        Self::load_from(&settings.config_path)
    }

    /// Reads `path` (missing: empty).
    pub fn load_from(path: &Path) -> Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(Error::io("read", path, e)),
        };
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Parses configuration text; `origin` (the file's name) starts any error message.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| Error::InvalidConfig {
            what: "ps-globus".into(),
            message: format!("{origin}: {e}"),
        })?;
        if let Some(found) = config.version.filter(|v| *v > CONFIG_FORMAT_VERSION) {
            return Err(Error::UnsupportedVersion {
                what: "configuration file",
                found,
                supported: CONFIG_FORMAT_VERSION,
            });
        }
        Ok(config)
    }

    /// Every collection named by a site, once each.
    pub fn collections(&self) -> Vec<Uuid> {
        let mut ids: Vec<Uuid> = self.sites.values().map(|s| s.collection).collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// The sites with their host regexes, for error messages.
pub(crate) fn site_list(sites: &BTreeMap<String, SiteConfig>) -> Vec<String> {
    sites
        .iter()
        .map(|(name, s)| match &s.host_regex {
            Some(re) => format!("{name} (hosts matching {re})"),
            None => name.clone(),
        })
        .collect()
}

/// This host's name, as site host regexes are matched against it.
#[doc(hidden)]
pub fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// The site this process is at: `explicit` (`PS_GLOBUS_SITE`, which must name a site),
/// else the first site whose host regex matches the host name; else an error listing
/// the sites.
pub fn current_site(
    sites: &BTreeMap<String, SiteConfig>,
    explicit: Option<&str>,
) -> Result<String> {
    let known = || site_list(sites);
    if let Some(name) = explicit {
        if sites.contains_key(name) {
            return Ok(name.to_owned());
        }
        return Err(Error::UnknownSite {
            message: format!("PS_GLOBUS_SITE={name} is not a configured site"),
            known: known(),
        });
    }
    let host = host_name();
    for (name, site) in sites {
        if let Some(pattern) = &site.host_regex {
            let re = regex_lite::Regex::new(pattern).map_err(|e| Error::InvalidConfig {
                what: "site".into(),
                message: format!("site {name}: host_regex {pattern:?}: {e}"),
            })?;
            if re.is_match(&host) {
                return Ok(name.clone());
            }
        }
    }
    Err(Error::UnknownSite {
        message: format!(
            "host {host:?} matches no site's host_regex; set PS_GLOBUS_SITE to the site this process runs at"
        ),
        known: known(),
    })
}

/// Adds or replaces site `name` in the configuration file at `path` (created if
/// missing), keeping the rest of the file, comments included, as it was.
pub fn save_site(path: &Path, name: &str, site: &SiteConfig) -> Result<()> {
    use toml_edit::value;
    let fields = vec![
        ("collection", Some(value(site.collection.to_string()))),
        (
            "collection_path",
            Some(value(site.collection_path.as_str())),
        ),
        (
            "local_path",
            Some(value(site.local_path.to_string_lossy().as_ref())),
        ),
        ("host_regex", site.host_regex.as_deref().map(value)),
    ];
    save_table(path, "sites", name, fields)
}

/// Removes site `name` from the configuration file at `path`, keeping the rest of the
/// file as it was; whether there was such a site.
pub fn remove_site(path: &Path, name: &str) -> Result<bool> {
    remove_table(path, "sites", name)
}

/// Adds or replaces the Redis server `name` (`[redis.NAME]`) in the configuration file
/// at `path`, as [`save_site`] does for sites: every field `redis` sets, defaults left
/// out.
pub fn save_redis(
    path: &Path,
    name: &str,
    redis: &crate::config::redis::RedisConfig,
) -> Result<()> {
    let defaults = toml::Value::try_from(crate::config::redis::RedisConfig::new("127.0.0.1", 6379))
        .map_err(|e| Error::encode("toml", e))?;
    let given = toml::Value::try_from(redis).map_err(|e| Error::encode("toml", e))?;
    let (Some(defaults), Some(given)) = (defaults.as_table(), given.as_table()) else {
        return Err(invalid(path, "a Redis server is not a table"));
    };
    let mut fields = Vec::new();
    for key in [
        "host",
        "port",
        "socket",
        "db",
        "tls",
        "tls_ca_file",
        "username",
        "password_env",
        "prefix",
        "ttl_s",
        "timeout_ms",
    ] {
        // The server's address is always written; other defaults are left out.
        let address = matches!(key, "host" | "port") && redis.socket.is_none();
        let value = given
            .get(key)
            .filter(|v| address || defaults.get(key) != Some(*v))
            .map(|v| v.to_string().parse::<toml_edit::Value>())
            .transpose()
            .map_err(|e| invalid(path, &format!("redis.{name}.{key}: {e}")))?
            .map(toml_edit::Item::Value);
        fields.push((key, value));
    }
    save_table(path, "redis", name, fields)
}

/// Removes the Redis server `name` from the configuration file at `path`; whether
/// there was one.
pub fn remove_redis(path: &Path, name: &str) -> Result<bool> {
    remove_table(path, "redis", name)
}

/// Sets the keys of table `[SECTION.NAME]` one by one (a `None` removes the key), so
/// that the table's own comments, and the rest of the file, stay.
fn save_table(
    path: &Path,
    section: &str,
    name: &str,
    fields: Vec<(&str, Option<toml_edit::Item>)>,
) -> Result<()> {
    use toml_edit::{Item, Table};
    edit_file(path, |doc| {
        let all = doc
            .entry(section)
            .or_insert_with(|| {
                let mut all = Table::new();
                // No bare `[SECTION]` header: only `[SECTION.NAME]` tables.
                all.set_implicit(true);
                Item::Table(all)
            })
            .as_table_mut()
            .ok_or_else(|| invalid(path, &format!("`{section}` is not a table")))?;
        let table = all
            .entry(name)
            .or_insert_with(|| Item::Table(Table::new()))
            .as_table_mut()
            .ok_or_else(|| invalid(path, &format!("`{section}.{name}` is not a table")))?;
        for (key, item) in fields {
            match item {
                Some(item) => table[key] = item,
                None => {
                    table.remove(key);
                }
            }
        }
        Ok(())
    })
}

/// Removes table `[SECTION.NAME]`; whether there was one.
fn remove_table(path: &Path, section: &str, name: &str) -> Result<bool> {
    let mut found = false;
    edit_file(path, |doc| {
        found = doc
            .get_mut(section)
            .and_then(|all| all.as_table_like_mut())
            .and_then(|all| all.remove(name))
            .is_some();
        Ok(())
    })?;
    Ok(found)
}

fn invalid(path: &Path, message: &str) -> Error {
    Error::InvalidConfig {
        what: "ps-globus".into(),
        message: format!("{}: {message}", path.display()),
    }
}

/// Reads the file at `path` (missing: empty), applies `edit`, checks the result still
/// reads as a configuration, and writes it atomically.
fn edit_file(
    path: &Path,
    edit: impl FnOnce(&mut toml_edit::DocumentMut) -> Result<()>,
) -> Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    let mut doc: toml_edit::DocumentMut =
        text.parse().map_err(|e| invalid(path, &format!("{e}")))?;
    edit(&mut doc)?;
    let edited = doc.to_string();
    Config::from_toml(&edited, &path.display().to_string())?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    }
    crate::fsutil::write_atomic(path, edited.as_bytes(), false)
}

impl Config {
    /// Writes the configuration to `path` (its directory is created). This replaces
    /// the file, comments included: to change one site, use [`save_site`].
    pub fn save_to(&self, path: &Path) -> Result<()> {
        let text = toml::to_string_pretty(self).map_err(|e| Error::encode("toml", e))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        }
        crate::fsutil::write_atomic(path, text.as_bytes(), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_edits_keep_the_files_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "# mine\nclient_id = \"x\"  # the app\n").unwrap();
        let site = SiteConfig {
            collection: Uuid::nil(),
            collection_path: "/data".into(),
            local_path: "/lus/data".into(),
            host_regex: Some("^login".into()),
        };
        save_site(&path, "hpc center", &site).unwrap();
        save_site(
            &path,
            "lab",
            &SiteConfig {
                host_regex: None,
                ..site.clone()
            },
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# mine\nclient_id = \"x\"  # the app\n"),
            "{text}"
        );
        assert!(
            text.contains("[sites.\"hpc center\"]") && !text.contains("[sites]\n"),
            "{text}"
        );
        let config = Config::load_from(&path).unwrap();
        assert_eq!(config.sites["hpc center"], site);
        assert!(remove_site(&path, "hpc center").unwrap());
        assert!(!remove_site(&path, "hpc center").unwrap());
        let config = Config::load_from(&path).unwrap();
        assert_eq!(config.sites.keys().collect::<Vec<_>>(), ["lab"]);
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("# the app")
        );
    }

    #[test]
    fn missing_file_is_empty_and_bad_file_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        assert_eq!(Config::load_from(&path).unwrap(), Config::default());
        std::fs::write(&path, "client_id = 3\n").unwrap();
        let err = Config::load_from(&path).unwrap_err().to_string();
        assert!(err.contains("config.toml"), "{err}");
        std::fs::write(&path, "clientid = \"x\"\n").unwrap();
        assert!(matches!(
            Config::load_from(&path),
            Err(Error::InvalidConfig { .. })
        ));
        std::fs::write(&path, "version = 9\n").unwrap();
        assert!(matches!(
            Config::load_from(&path),
            Err(Error::UnsupportedVersion { found: 9, .. })
        ));
    }
}
