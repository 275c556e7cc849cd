//! Editing the configuration file for the command line (`ps-globus site add|remove`,
//! `ps-globus redis add|remove`): a table replaced or removed, the rest of the file,
//! comments included, kept as it was. Not public API: the command reaches it through
//! `ps_globus::internal`.

use std::path::Path;

use super::{Config, SiteConfig};
use crate::error::{Error, Result};

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
        (
            "https_max_size",
            site.https_max_size
                .map(|n| value(n.min(i64::MAX as u64) as i64)),
        ),
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
pub fn save_redis(path: &Path, name: &str, redis: &super::redis::RedisConfig) -> Result<()> {
    let defaults = toml::Value::try_from(super::redis::RedisConfig::new("127.0.0.1", 6379))
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
    Error::invalid_config("ps-globus", format!("{}: {message}", path.display()))
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
    /// the file, comments included (the command line's `site add` changes one table and
    /// keeps the rest).
    pub fn save_to(&self, path: &Path) -> Result<()> {
        let text = toml::to_string_pretty(self).map_err(|e| Error::encode("toml", e))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        }
        crate::fsutil::write_atomic(path, text.as_bytes(), false)
    }
}
