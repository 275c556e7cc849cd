//! The Globus connector's configuration (it travels inside every proxy, so any site can
//! rebuild the connector) and the metadata its keys carry.

use std::collections::BTreeMap;
use std::path::{Component, Path};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::SiteConfig;
use crate::error::{Error, Result};
use crate::settings::Settings;

/// The newest object-metadata format this build writes and reads.
pub(crate) const META_VERSION: u16 = 1;

/// How long a read waits for a transfer whose task (and so deadline) it cannot see.
pub(crate) const DEFAULT_WAIT: Duration = Duration::from_secs(24 * 3600);

/// The connector's configuration: travels inside every proxy, so any site can rebuild it.
///
/// ```
/// let config: ps_globus::connector::GlobusConfig = serde_json::from_value(serde_json::json!({
///     "store_dir": "my-workflow",
///     "sites": {
///         "hpc": {"collection": "05d2c76a-e867-4f67-aa57-76edeb0beda0",
///                 "collection_path": "/projects/x", "local_path": "/lus/projects/x"},
///         "lab": {"collection": "9a1f2f3e-0000-4000-8000-000000000001",
///                 "collection_path": "/data", "local_path": "/srv/data"}
///     }
/// })).unwrap();
/// assert_eq!(config.destinations_from("hpc").unwrap(), vec!["lab".to_string()]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct GlobusConfig {
    /// The store's directory under every site's prefix (relative, no `..`).
    pub store_dir: String,
    /// The sites, by name.
    pub sites: BTreeMap<String, SiteConfig>,
    /// Where puts are sent (default: every site but the source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destinations: Option<Vec<String>>,
    /// At a site that is not a destination, transfer the object here on first read.
    #[serde(default)]
    pub pull_on_demand: bool,
    /// Longest wait for a transfer, in seconds (default: the task's Globus deadline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_timeout_s: Option<u64>,
    /// The Transfer service root (default `PS_GLOBUS_TRANSFER_URL`, else the real one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_url: Option<String>,
    /// Objects up to this many bytes go by HTTPS to each destination whose collection
    /// serves it (0: always Transfer). A ceiling beside each site's own
    /// ([`SiteConfig::https_max_size`]); with neither, 4 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_max_size: Option<u64>,
    /// Objects of at least this many bytes are bulk work: their tasks leave a running
    /// slot at Globus to small objects that readers wait on (the express lane). Smaller
    /// ones are latency work unless a put says otherwise ([`PutOptions::bulk`]).
    /// Default 16 MiB.
    ///
    /// [`PutOptions::bulk`]: crate::connector::PutOptions::bulk
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_max_size: Option<u64>,
}

/// The default [`GlobusConfig::latency_max_size`]: 16 MiB.
pub(crate) const DEFAULT_LATENCY_MAX_SIZE: u64 = 16 << 20;

impl GlobusConfig {
    /// A store in `store_dir` over the sites of the configuration file
    /// ([`crate::config::Config::load`]) that `settings` name.
    pub fn from_config_file(
        store_dir: impl Into<String>,
        settings: &Settings,
    ) -> Result<GlobusConfig> {
        let file = crate::config::Config::load(settings)?;
        if file.sites.is_empty() {
            return Err(Error::invalid_config(
                "globus",
                format!(
                    "no sites in {}: add them (see `sites` in the README)",
                    settings.config_path.display()
                ),
            ));
        }
        Ok(GlobusConfig {
            store_dir: store_dir.into(),
            sites: file.sites,
            destinations: None,
            pull_on_demand: false,
            wait_timeout_s: None,
            transfer_url: None,
            https_max_size: None,
            latency_max_size: None,
        })
    }

    /// The destination sites of a put made at `source` (the store's default).
    pub fn destinations_from(&self, source: &str) -> Result<Vec<String>> {
        self.destinations_for(source, None)
    }

    /// The destination sites of a put made at `source`: `asked` (a put's own), else the
    /// store's, else every other site.
    pub fn destinations_for(&self, source: &str, asked: Option<&[String]>) -> Result<Vec<String>> {
        let names: Vec<String> = match (asked, &self.destinations) {
            (Some(list), _) => list.to_vec(),
            (None, Some(list)) => list.clone(),
            (None, None) => self.sites.keys().cloned().collect(),
        };
        for name in &names {
            self.site(name)?;
        }
        Ok(names.into_iter().filter(|n| n != source).collect())
    }

    /// The largest object a put sends to site `dest` by HTTPS: the smaller of the store's
    /// and the site's ceilings, the default when neither is set.
    pub fn https_max_size_for(&self, dest: &str) -> Result<u64> {
        let site = self.site(dest)?.https_max_size;
        Ok(match (self.https_max_size, site) {
            (None, None) => crate::config::DEFAULT_HTTPS_MAX_SIZE,
            (a, b) => a.into_iter().chain(b).min().unwrap_or_default(),
        })
    }

    /// Whether an object of `size` bytes is bulk work (see
    /// [`latency_max_size`](Self::latency_max_size)), unless its put says so.
    pub fn is_bulk(&self, size: u64) -> bool {
        size >= self.latency_max_size.unwrap_or(DEFAULT_LATENCY_MAX_SIZE)
    }

    pub(super) fn site(&self, name: &str) -> Result<&SiteConfig> {
        self.sites.get(name).ok_or_else(|| {
            Error::unknown_site(
                format!("{name:?} is not a site of this store"),
                &crate::config::site_list(&self.sites),
            )
        })
    }

    /// The site this process is at: `PS_GLOBUS_SITE`, else the first site whose host
    /// regex matches the host name.
    pub fn current_site(&self, settings: &Settings) -> Result<String> {
        crate::config::current_site(&self.sites, settings.site.as_deref())
    }
}

/// What a Globus key carries besides its id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ObjectMeta {
    /// Format version.
    pub v: u16,
    /// The site the object was put at.
    pub source: String,
    /// That site's collection.
    pub collection: uuid::Uuid,
    /// The path under the store directory.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256, lowercase hex.
    pub sha256: String,
    /// Per destination site: the batch label of its transfer.
    pub destinations: BTreeMap<String, String>,
}

/// Refuses paths that could leave their directory: empty, absolute, `.` or `..`
/// components, NUL bytes.
pub(super) fn check_relative(path: &str, what: &str) -> Result<()> {
    let p = Path::new(path);
    let ok = !path.is_empty()
        && !path.contains('\0')
        && p.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(Error::malformed(format!(
            "{what} {path:?} must be relative and stay inside its directory"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(regexes: &[(&str, Option<&str>)]) -> GlobusConfig {
        GlobusConfig {
            store_dir: "s".into(),
            sites: regexes
                .iter()
                .map(|(name, re)| {
                    (
                        name.to_string(),
                        SiteConfig {
                            collection: uuid::Uuid::nil(),
                            collection_path: "/".into(),
                            local_path: "/tmp".into(),
                            host_regex: re.map(str::to_owned),
                            https_max_size: None,
                        },
                    )
                })
                .collect(),
            destinations: None,
            pull_on_demand: false,
            wait_timeout_s: None,
            transfer_url: None,
            https_max_size: None,
            latency_max_size: None,
        }
    }

    #[test]
    fn the_current_site_comes_from_the_host_regex_or_a_clear_error() {
        let settings = Settings::isolated("/nonexistent");
        let found = config(&[("lab", Some("^no-such-host$")), ("hpc", Some("."))]);
        assert_eq!(found.current_site(&settings).unwrap(), "hpc");
        let none = config(&[("lab", Some("^no-such-host$")), ("hpc", None)]);
        let err = none.current_site(&settings).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::InvalidInput(_)), "{text}");
        assert!(text.contains("PS_GLOBUS_SITE"), "{text}");
        assert!(
            text.contains("lab (hosts matching ^no-such-host$)"),
            "{text}"
        );
        assert!(text.contains("hpc"), "{text}");
        let broken = config(&[("lab", Some("(unclosed"))]);
        assert!(matches!(
            broken.current_site(&settings),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn paths_must_stay_inside_their_directory() {
        for bad in ["../x", "/etc/passwd", "a/../../b", "", "./x", "nul\0"] {
            assert!(check_relative(bad, "path").is_err(), "{bad:?}");
        }
        for good in ["x", "a/b", "dir.d/file-1"] {
            assert!(check_relative(good, "path").is_ok(), "{good:?}");
        }
    }
}
