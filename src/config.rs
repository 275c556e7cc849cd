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

pub(crate) mod edit;
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
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
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
    /// Objects sent to this site go by HTTPS (when its collection serves it) up to this
    /// many bytes, by Transfer above (0: always Transfer). A ceiling beside the store's
    /// own (`GlobusConfig::https_max_size`); with neither, 4 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_max_size: Option<u64>,
}

/// The largest object sent by HTTPS when neither the store nor the site says: 4 MiB.
/// A PUT of that size takes well under a second on a campus link, and Transfer's task
/// round trip (about a second at best) stops mattering beyond it.
pub(crate) const DEFAULT_HTTPS_MAX_SIZE: u64 = 4 << 20;

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
        let config: Config = toml::from_str(text)
            .map_err(|e| Error::invalid_config("ps-globus", format!("{origin}: {e}")))?;
        if let Some(found) = config.version.filter(|v| *v > CONFIG_FORMAT_VERSION) {
            return Err(Error::unsupported_version(
                "configuration file",
                found,
                CONFIG_FORMAT_VERSION,
            ));
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
        return Err(Error::unknown_site(
            format!("PS_GLOBUS_SITE={name} is not a configured site"),
            &known(),
        ));
    }
    let host = host_name();
    for (name, site) in sites {
        if let Some(pattern) = &site.host_regex {
            let re = regex_lite::Regex::new(pattern).map_err(|e| {
                Error::invalid_config("site", format!("site {name}: host_regex {pattern:?}: {e}"))
            })?;
            if re.is_match(&host) {
                return Ok(name.clone());
            }
        }
    }
    Err(Error::unknown_site(
        format!(
            "host {host:?} matches no site's host_regex; set PS_GLOBUS_SITE to the site this process runs at"
        ),
        &known(),
    ))
}

#[cfg(test)]
mod tests {
    use super::edit::{remove_site, save_site};
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
            https_max_size: None,
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
            Err(Error::InvalidInput(_))
        ));
        std::fs::write(&path, "version = 9\n").unwrap();
        let e = Config::load_from(&path).unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)), "{e}");
        assert!(e.to_string().contains("format version 9"), "{e}");
    }
}
