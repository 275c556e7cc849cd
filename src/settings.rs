//! Settings from the environment, read in one place.
//!
//! The library reads no environment variable anywhere else: [`Settings::from_env`] reads
//! them all once, and builders take a [`Settings`] value (or use [`Settings::global`],
//! the process's environment as first read). Tests build a `Settings` instead of changing
//! the environment, which is unsound while other threads run.
//!
//! | variable | field |
//! | --- | --- |
//! | `PS_GLOBUS_HOME`, else `XDG_DATA_HOME/ps-globus`, else `~/.local/share/ps-globus` | [`home`](Settings::home) |
//! | `PS_GLOBUS_CONFIG`, else `XDG_CONFIG_HOME/ps-globus/config.toml`, else `~/.config/…` | [`config_path`](Settings::config_path) |
//! | `PS_GLOBUS_SITE` | [`site`](Settings::site) |
//! | `PS_GLOBUS_TRANSFER_URL`, `PS_GLOBUS_AUTH_URL` | [`transfer_url`](Settings::transfer_url), [`auth_url`](Settings::auth_url) |
//! | `PS_GLOBUS_CLIENT_ID`, `PS_GLOBUS_CLIENT_SECRET` | [`client_id`](Settings::client_id), [`client_secret`](Settings::client_secret) |
//! | `PS_GLOBUS_ACCESS_TOKEN` | [`access_token`](Settings::access_token) |
//! | `PS_GLOBUS_TOKEN_STORE` (`auto`, `file`, `keyring`) | [`token_store`](Settings::token_store) |
//! | `PS_GLOBUS_STATE_URL` | [`state_url`](Settings::state_url) |
//! | `PS_GLOBUS_HOST_ID` | [`host_id`](Settings::host_id) |
//! | `PS_GLOBUS_ASSUME_NETWORK_FS=1` | [`assume_network_fs`](Settings::assume_network_fs) |
//! | `SSH_TTY`, `SSH_CONNECTION`, `DISPLAY`, `WAYLAND_DISPLAY` | [`remote_session`](Settings::remote_session), [`has_display`](Settings::has_display) |

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

/// The Transfer service root of the real Globus.
pub const DEFAULT_TRANSFER_URL: &str = "https://transfer.api.globus.org/";

/// The Auth service root of the real Globus.
pub const DEFAULT_AUTH_URL: &str = "https://auth.globus.org/";

/// What the environment says, read once. Secrets never show in `Debug`.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// The state directory: the state database, and `tokens.json` where no keyring works.
    pub home: PathBuf,
    /// The configuration file.
    pub config_path: PathBuf,
    /// Where endpoints are configured, one directory each (ProxyStore's home directory:
    /// `PROXYSTORE_HOME`, else `XDG_DATA_HOME/proxystore`, else
    /// `~/.local/share/proxystore`).
    pub proxystore_home: PathBuf,
    /// The site this process is at, when set explicitly.
    pub site: Option<String>,
    /// The Transfer service root.
    pub transfer_url: String,
    /// The Auth service root.
    pub auth_url: String,
    /// The app's client id (a native app for `login`; with a secret, a service identity).
    pub client_id: Option<String>,
    /// A service identity's secret.
    pub client_secret: Option<String>,
    /// A bearer token obtained elsewhere, used as is.
    pub access_token: Option<String>,
    /// Where tokens are kept: `auto` (empty), `file` or `keyring`.
    pub token_store: String,
    /// The state database (`PS_GLOBUS_STATE_URL`): `sqlite:PATH` or `postgres://…`; it
    /// overrides the configuration file's `state_url`. `None`: the configuration file's,
    /// else `state.db` in [`home`](Self::home).
    pub state_url: Option<String>,
    /// The name this host goes by in a shared state database (`PS_GLOBUS_HOST_ID`), when
    /// the host name does not tell hosts apart (containers that share one); `None`: the
    /// host name.
    pub host_id: Option<String>,
    /// Treat the state directory as a network file system (to test the fallback, or
    /// where detection cannot see through a mount).
    pub assume_network_fs: bool,
    /// Whether this is an SSH session (login then prefers the copy-paste flow).
    pub remote_session: bool,
    /// Whether a graphical display is available (a browser can open).
    pub has_display: bool,
    /// Whether `$BROWSER` names a browser to open URLs with (a login then uses the
    /// loopback redirect even without a display, as with a text browser over SSH).
    pub browser: bool,
    /// Transfer requests per second (a whole number) that the processes sharing one
    /// state database may send for their identity together (`PS_GLOBUS_REQUEST_BUDGET`;
    /// `None`: the default of [`ManagerConfig`](crate::transfer::ManagerConfig)).
    pub request_budget: Option<u32>,
    /// Retries of a failed Transfer request before it counts as failed
    /// (`PS_GLOBUS_RETRIES`; `None`: the default of
    /// [`RetryConfig`](crate::transfer::RetryConfig), 5).
    pub retries: Option<usize>,
    /// How long a wait lasts before it is reported, and how often a process reports its
    /// long waits (`PS_GLOBUS_WAIT_REPORT_S`; `None`: 30 s, see `waits.rs`).
    pub wait_report: Option<std::time::Duration>,
    /// The named point where the transfer manager aborts (`PS_GLOBUS_FAILPOINT`).
    #[cfg(feature = "failpoints")]
    pub failpoint: Option<String>,
}

/// The environment variables whose values are credentials of ours: kept out of every
/// environment this library hands on to be stored elsewhere (a batch job's, which Slurm
/// saves with the job).
pub const SECRET_VARIABLES: &[&str] = &[
    "PS_GLOBUS_ACCESS_TOKEN",
    "PS_GLOBUS_CLIENT_SECRET",
    "PROXYSTORE_GLOBUS_CLIENT_SECRET",
];

/// A secret that a configuration names by its environment variable (a Redis server's
/// password, say), read from this process's environment when it is needed, so that it is
/// never written into a configuration or a proxy. Unset or empty: `None`.
pub(crate) fn secret_from_env(variable: &str) -> Option<String> {
    std::env::var(variable).ok().filter(|v| !v.is_empty())
}

impl Settings {
    /// The named point at which a test build aborts the process (`PS_GLOBUS_FAILPOINT`);
    /// `None` in a build without the `failpoints` feature.
    pub fn failpoint_name(&self) -> Option<&str> {
        #[cfg(feature = "failpoints")]
        return self.failpoint.as_deref();
        #[cfg(not(feature = "failpoints"))]
        None
    }

    /// Reads every setting from this process's environment.
    pub fn from_env() -> Settings {
        Settings::from_lookup(|name| std::env::var_os(name))
    }

    /// The settings as this process's environment held them when first asked (a forked
    /// child keeps its parent's). Library code reads them only in its `*_default`
    /// constructors; everything else is handed its settings.
    pub fn global() -> &'static Settings {
        /// The slot's own type.
        struct Global(Settings);
        &crate::process::inherited(|| Global(Settings::from_env())).0
    }

    /// Reads every setting through `lookup` (a variable's value, or `None`); an empty
    /// value counts as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Settings {
        let os = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let text = |name: &str| os(name).map(|v| v.to_string_lossy().into_owned());
        let user_home = || os("HOME").map(PathBuf::from).unwrap_or_else(|| ".".into());
        let home = os("PS_GLOBUS_HOME").map(PathBuf::from).unwrap_or_else(|| {
            os("XDG_DATA_HOME")
                .map(|d| PathBuf::from(d).join("ps-globus"))
                .unwrap_or_else(|| user_home().join(".local/share/ps-globus"))
        });
        let config_path = os("PS_GLOBUS_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                os("XDG_CONFIG_HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| user_home().join(".config"))
                    .join("ps-globus")
                    .join("config.toml")
            });
        let proxystore_home = os("PROXYSTORE_HOME").map(PathBuf::from).unwrap_or_else(|| {
            os("XDG_DATA_HOME")
                .map(|d| PathBuf::from(d).join("proxystore"))
                .unwrap_or_else(|| user_home().join(".local/share/proxystore"))
        });
        // A ProxyStore user's service identity (both PROXYSTORE_GLOBUS_CLIENT_ID and
        // _SECRET: their own confidential client) serves when ps-globus's pair is unset,
        // so a compute node configured for ProxyStore's GlobusConnector needs nothing
        // new. ProxyStore's own native-app client id and token database are never used:
        // refresh tokens are bound to the client that got them.
        let (client_id, client_secret) =
            match (text("PS_GLOBUS_CLIENT_ID"), text("PS_GLOBUS_CLIENT_SECRET")) {
                (None, None) => match (
                    text("PROXYSTORE_GLOBUS_CLIENT_ID"),
                    text("PROXYSTORE_GLOBUS_CLIENT_SECRET"),
                ) {
                    (Some(id), Some(secret)) => (Some(id), Some(secret)),
                    _ => (None, None),
                },
                own => own,
            };
        Settings {
            home,
            config_path,
            proxystore_home,
            site: text("PS_GLOBUS_SITE"),
            transfer_url: text("PS_GLOBUS_TRANSFER_URL")
                .unwrap_or_else(|| DEFAULT_TRANSFER_URL.into()),
            auth_url: text("PS_GLOBUS_AUTH_URL").unwrap_or_else(|| DEFAULT_AUTH_URL.into()),
            client_id,
            client_secret,
            access_token: text("PS_GLOBUS_ACCESS_TOKEN"),
            token_store: text("PS_GLOBUS_TOKEN_STORE").unwrap_or_default(),
            state_url: text("PS_GLOBUS_STATE_URL"),
            host_id: text("PS_GLOBUS_HOST_ID"),
            assume_network_fs: text("PS_GLOBUS_ASSUME_NETWORK_FS").as_deref() == Some("1"),
            remote_session: os("SSH_TTY").is_some() || os("SSH_CONNECTION").is_some(),
            has_display: os("DISPLAY").is_some() || os("WAYLAND_DISPLAY").is_some(),
            browser: os("BROWSER").is_some(),
            request_budget: text("PS_GLOBUS_REQUEST_BUDGET").and_then(|v| v.trim().parse().ok()),
            retries: text("PS_GLOBUS_RETRIES").and_then(|v| v.trim().parse().ok()),
            wait_report: text("PS_GLOBUS_WAIT_REPORT_S")
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
                .map(std::time::Duration::from_secs_f64),
            #[cfg(feature = "failpoints")]
            failpoint: text("PS_GLOBUS_FAILPOINT"),
        }
    }

    /// The settings of an empty environment, with `home` as the state directory: a
    /// starting point for tests and embedded use.
    pub fn isolated(home: impl Into<PathBuf>) -> Settings {
        let home = home.into();
        let mut settings = Settings::from_lookup(|_| None);
        settings.config_path = home.join("config.toml");
        settings.home = home;
        settings
    }

    /// The state database's path: `home/state.db`.
    pub fn state_db_path(&self) -> PathBuf {
        self.home.join("state.db")
    }

    /// Whether both halves of a service identity are set.
    pub fn has_service_identity(&self) -> bool {
        self.client_id.is_some() && self.client_secret.is_some()
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |s: &Option<String>| s.as_ref().map(|_| "[redacted]");
        f.debug_struct("Settings")
            .field("home", &self.home)
            .field("config_path", &self.config_path)
            .field("proxystore_home", &self.proxystore_home)
            .field("site", &self.site)
            .field("transfer_url", &self.transfer_url)
            .field("auth_url", &self.auth_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &secret(&self.client_secret))
            .field("access_token", &secret(&self.access_token))
            .field("token_store", &self.token_store)
            .field(
                "state_url",
                &self.state_url.as_deref().map(crate::redact::url),
            )
            .field("host_id", &self.host_id)
            .field("assume_network_fs", &self.assume_network_fs)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Settings {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.into()))
    }

    #[test]
    fn paths_follow_ps_globus_then_xdg_then_home() {
        let s = env(&[("HOME", "/h")]);
        assert_eq!(s.home, PathBuf::from("/h/.local/share/ps-globus"));
        assert_eq!(
            s.config_path,
            PathBuf::from("/h/.config/ps-globus/config.toml")
        );
        let s = env(&[
            ("HOME", "/h"),
            ("XDG_DATA_HOME", "/d"),
            ("XDG_CONFIG_HOME", "/c"),
        ]);
        assert_eq!(s.home, PathBuf::from("/d/ps-globus"));
        assert_eq!(s.config_path, PathBuf::from("/c/ps-globus/config.toml"));
        let s = env(&[
            ("PS_GLOBUS_HOME", "/p"),
            ("PS_GLOBUS_CONFIG", "/p/c.toml"),
            ("XDG_DATA_HOME", "/d"),
        ]);
        assert_eq!(s.home, PathBuf::from("/p"));
        assert_eq!(s.config_path, PathBuf::from("/p/c.toml"));
    }

    #[test]
    fn empty_values_count_as_unset_and_urls_default_to_globus() {
        let s = env(&[("PS_GLOBUS_SITE", ""), ("PS_GLOBUS_TRANSFER_URL", "")]);
        assert_eq!(s.site, None);
        assert_eq!(s.transfer_url, DEFAULT_TRANSFER_URL);
        assert_eq!(s.auth_url, DEFAULT_AUTH_URL);
        assert!(!s.has_service_identity());
    }

    #[test]
    fn a_proxystore_service_identity_serves_only_as_a_complete_pair_and_only_as_a_fallback() {
        let ps = [
            ("PROXYSTORE_GLOBUS_CLIENT_ID", "ps-id"),
            ("PROXYSTORE_GLOBUS_CLIENT_SECRET", "ps-secret"),
        ];
        let s = env(&ps);
        assert_eq!(s.client_id.as_deref(), Some("ps-id"));
        assert_eq!(s.client_secret.as_deref(), Some("ps-secret"));
        assert!(s.has_service_identity());
        // Half a pair is no identity.
        let s = env(&ps[..1]);
        assert_eq!((s.client_id, s.client_secret), (None, None));
        // ps-globus's own variables win, even a native app's id alone.
        let s = env(&[ps[0], ps[1], ("PS_GLOBUS_CLIENT_ID", "native-app")]);
        assert_eq!(s.client_id.as_deref(), Some("native-app"));
        assert_eq!(s.client_secret, None);
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let s = env(&[
            ("PS_GLOBUS_CLIENT_SECRET", "hunter2-secret"),
            ("PS_GLOBUS_ACCESS_TOKEN", "tok-abc123"),
        ]);
        let text = format!("{s:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("abc123"),
            "{text}"
        );
        assert!(text.contains("[redacted]"), "{text}");
    }
}
