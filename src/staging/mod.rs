//! Stage-in and stage-out from the command line, as library calls: addresses, transfer
//! plans, submission through the [`TransferManager`], and waiting.
//!
//! An address is `SITE:PATH` (a configured site; PATH absolute on its collection and
//! under its collection path, or relative to it), `COLLECTION_UUID:PATH`, or a bare
//! local path, which means the current site (the local path must lie under the site's
//! local path).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::{Config, SiteConfig};
use crate::error::{Error, Result};
use crate::transfer::path::collection_path;
use crate::transfer::{BatchOptions, Enqueued, ItemSpec, ItemStatus, Priority, TransferManager};

pub mod job;
mod lane;

pub use lane::enqueue_with_lane;

/// A place on a Globus collection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// The collection id.
    pub collection: Uuid,
    /// The path on the collection.
    pub path: String,
}

/// Parses and resolves an address against the configured sites.
pub fn resolve_address(text: &str, config: &Config, current: Option<&str>) -> Result<Location> {
    let bad = |message: String| Error::invalid_config("address", message);
    if is_local_address(text) {
        let site_name = current.ok_or_else(|| {
            bad(format!(
                "{text:?} is a local path, but the current site is unknown: set PS_GLOBUS_SITE \
                 or write SITE:PATH"
            ))
        })?;
        let site = site(config, site_name)?;
        let absolute = absolute(Path::new(text))?;
        let rest = absolute.strip_prefix(&site.local_path).map_err(|_| {
            bad(format!(
                "{} is not under site {site_name}'s local path {}",
                absolute.display(),
                site.local_path.display()
            ))
        })?;
        return Ok(Location {
            collection: site.collection,
            path: join(&site.collection_path, &rest.to_string_lossy()),
        });
    }
    let (prefix, path) = text.split_once(':').expect("checked above");
    if let Ok(collection) = prefix.parse::<Uuid>() {
        let path = if path.is_empty() { "/" } else { path };
        check_path(path)?;
        return Ok(Location {
            collection,
            path: if path.starts_with('/') {
                path.to_owned()
            } else {
                format!("/~/{path}")
            },
        });
    }
    let site = site(config, prefix)?;
    check_path(path)?;
    let path = if path.starts_with('/') {
        let root = site.collection_path.trim_end_matches('/');
        let inside = path == root || path.starts_with(&format!("{root}/")) || root.is_empty();
        if !inside {
            return Err(bad(format!(
                "{path} is outside site {prefix}'s collection path {}",
                site.collection_path
            )));
        }
        path.to_owned()
    } else {
        join(&site.collection_path, path)
    };
    Ok(Location {
        collection: site.collection,
        path,
    })
}

/// Whether an address is a local path at the current site (not `SITE:PATH` or
/// `COLLECTION:PATH`).
pub(crate) fn is_local_address(text: &str) -> bool {
    text.starts_with('/') || text.starts_with('.') || !text.contains(':')
}

fn site<'a>(config: &'a Config, name: &str) -> Result<&'a SiteConfig> {
    config.sites.get(name).ok_or_else(|| {
        Error::unknown_site(
            format!("{name:?} is neither a collection id nor a configured site"),
            &config.sites.keys().cloned().collect::<Vec<_>>(),
        )
    })
}

fn join(prefix: &str, rest: &str) -> String {
    let rest = rest.trim_start_matches('/');
    let prefix = prefix.trim_end_matches('/');
    if rest.is_empty() {
        format!("{prefix}/")
    } else {
        format!("{prefix}/{rest}")
    }
}

fn check_path(path: &str) -> Result<()> {
    let refuse = |why: &str| {
        Err(Error::invalid_config(
            "address",
            format!("{path:?} may not contain {why}"),
        ))
    };
    if path.contains('\0') {
        return refuse("a NUL byte");
    }
    if path.split('/').any(|c| c == "..") {
        return refuse("`..`");
    }
    Ok(())
}

fn absolute(path: &Path) -> Result<PathBuf> {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io("read", ".", e))?
            .join(path)
    };
    // Lexical normalisation: the path may not exist yet (a stage-in destination).
    let mut out = PathBuf::new();
    for part in joined.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    Ok(out)
}

/// One source-destination pair of a transfer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlannedItem {
    /// Where from.
    pub source: Location,
    /// Where to.
    pub destination: Location,
    /// Directory (`Some(true)`), file, or let Globus detect it (`None`).
    pub recursive: Option<bool>,
    /// The source's size in bytes, where it is a file at the current site (see
    /// `local_size`): progress then counts toward a total.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// The local path of `at`, where it lies at the current site (`current`): the site's
/// local path joined with `at`'s path below the site's collection path. `None` for
/// another collection, a path outside the site's, or one from `~`.
pub fn local_path(at: &Location, config: &Config, current: Option<&str>) -> Option<PathBuf> {
    let site = config.sites.get(current?)?;
    // `~` is wherever the collection's default directory is: not knowable here.
    if site.collection != at.collection || crate::transfer::path::starts_at_home(&at.path) {
        return None;
    }
    let root = site.collection_path.trim_end_matches('/');
    let rest = at.path.strip_prefix(root)?;
    if !(rest.is_empty() || rest.starts_with('/')) || rest.split('/').any(|c| c == "..") {
        return None;
    }
    Some(site.local_path.join(rest.trim_start_matches('/')))
}

/// The size of the file `at` names, where it lies at the current site and is a regular
/// file there (see [`local_path`]); `None` otherwise.
pub(crate) fn local_size(at: &Location, config: &Config, current: Option<&str>) -> Option<u64> {
    let meta = std::fs::metadata(local_path(at, config, current)?).ok()?;
    meta.is_file().then_some(meta.len())
}

/// One line of a `--batch` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchLine {
    /// The source, as written.
    pub source: String,
    /// The destination, as written.
    pub destination: String,
    /// `--recursive` (or `-r`) on the line.
    pub recursive: bool,
}

/// Reads a `--batch` file as globus-cli does: one `[--recursive] SRC DST` a line, words
/// split as a shell would (quote a path with spaces); `#` comments and blank lines are
/// skipped. A line that is not so is refused with its number.
///
/// ```
/// use ps_globus::internal::staging::parse_batch;
/// let lines = parse_batch("# inputs\n--recursive a:/in b:/out\n'a:/my file' b:/f\n")?;
/// assert!(lines[0].recursive && !lines[1].recursive);
/// assert_eq!(lines[1].source, "a:/my file");
/// assert!(parse_batch("--sync a b").is_err());
/// # Ok::<(), ps_globus::Error>(())
/// ```
pub fn parse_batch(text: &str) -> Result<Vec<BatchLine>> {
    let mut lines = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let bad = |why: String| {
            Error::invalid_config(
                "batch file",
                format!("line {}: {why}, in {trimmed:?}", n + 1),
            )
        };
        let words = shlex::split(trimmed).ok_or_else(|| bad("a quote is not closed".into()))?;
        let mut recursive = false;
        let mut paths = Vec::new();
        for word in words {
            match word.as_str() {
                "--recursive" | "-r" => recursive = true,
                option if option.starts_with('-') && paths.is_empty() => {
                    return Err(bad(format!(
                        "unknown option {option} (a line takes --recursive)"
                    )));
                }
                _ => paths.push(word),
            }
        }
        match <[String; 2]>::try_from(paths) {
            Ok([source, destination]) if !source.is_empty() && !destination.is_empty() => lines
                .push(BatchLine {
                    source,
                    destination,
                    recursive,
                }),
            _ => return Err(bad("expected `[--recursive] SRC DST`".into())),
        }
    }
    Ok(lines)
}

/// Joins a batch line's path to the endpoint of `transfer SRC_EP DST_EP --batch FILE`:
/// the endpoint is a site or collection (`lab`, a UUID), optionally with a base path
/// (`lab:/runs`); the result is an address `resolve_address` reads.
///
/// ```
/// use ps_globus::internal::staging::join_endpoint;
/// assert_eq!(join_endpoint("lab", "in/x"), "lab:in/x");
/// assert_eq!(join_endpoint("lab:/runs/", "/in/x"), "lab:/runs/in/x");
/// assert_eq!(join_endpoint("lab:", "/in/x"), "lab:/in/x");
/// ```
#[doc(hidden)]
pub fn join_endpoint(endpoint: &str, path: &str) -> String {
    match endpoint.split_once(':') {
        None => format!("{endpoint}:{path}"),
        Some((name, "")) => format!("{name}:{path}"),
        Some((name, base)) => format!("{name}:{}", join(base, path)),
    }
}

impl PlannedItem {
    /// The destination path Globus is given: `DIR/` as a file's destination means "into
    /// DIR", as with cp.
    pub fn destination_path(&self) -> String {
        let mut destination = self.destination.path.clone();
        if destination.ends_with('/') && self.recursive != Some(true) {
            destination.push_str(self.source.path.rsplit('/').next().unwrap_or_default());
        }
        destination
    }

    /// The destination as Globus is given it ([`destination_path`](Self::destination_path)).
    fn destination_location(&self) -> Location {
        Location {
            collection: self.destination.collection,
            path: self.destination_path(),
        }
    }
}

/// Which side of a transfer the current site fills in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Both sides given (`transfer`).
    Any,
    /// Into the current site: the destination is a local path (`stage-in`).
    In,
    /// Out of the current site: the source is a local path (`stage-out`).
    Out,
}

/// The items `lines` name, checked against `direction` and by `check_plan`: what
/// `transfer`, `stage-in` and `stage-out` submit. `current` is the current site, or why
/// it is unknown (said when a line needs it). A local source that does not exist is
/// named now, not after a Globus task fails on it.
///
/// ```
/// use ps_globus::config::{Config, SiteConfig};
/// use ps_globus::internal::staging::{BatchLine, Direction, plan};
/// let mut config = Config::default();
/// for (name, id) in [("hpc", 1u128), ("lab", 2)] {
///     let mut site = SiteConfig::default();
///     site.collection = uuid::Uuid::from_u128(id);
///     site.collection_path = "/data".into();
///     site.local_path = format!("/srv/{name}").into();
///     config.sites.insert(name.into(), site);
/// }
/// let line = |s: &str, d: &str| BatchLine { source: s.into(), destination: d.into(), recursive: false };
/// let here = Ok("lab".to_string());
/// let items = plan(&[line("hpc:run/in.h5", "lab:run/in.h5")], Direction::Any, &config, &here)?;
/// assert_eq!(items[0].destination.path, "/data/run/in.h5");
/// // A stage-in's destination is a local path at this site.
/// assert!(plan(&[line("hpc:run/in.h5", "lab:x")], Direction::In, &config, &here).is_err());
/// # Ok::<(), ps_globus::Error>(())
/// ```
pub fn plan(
    lines: &[BatchLine],
    direction: Direction,
    config: &Config,
    current: &Result<String>,
) -> Result<Vec<PlannedItem>> {
    plan_with(lines, direction, config, current, true)
}

/// [`plan`]; a local source need exist only if `sources_exist` (a job's stage-out is
/// planned at submission, before the job writes what it sends).
pub(crate) fn plan_with(
    lines: &[BatchLine],
    direction: Direction,
    config: &Config,
    current: &Result<String>,
    sources_exist: bool,
) -> Result<Vec<PlannedItem>> {
    let refuse = |message: String| Error::invalid_config("transfer", message);
    let here = current.as_deref().ok();
    let mut items = Vec::with_capacity(lines.len());
    for line in lines {
        let (src, dst) = (&line.source, &line.destination);
        if direction == Direction::In && !is_local_address(dst) {
            return Err(refuse(format!(
                "stage-in: the destination {dst:?} must be a local path at this site"
            )));
        }
        if direction == Direction::Out && !is_local_address(src) {
            return Err(refuse(format!(
                "stage-out: the source {src:?} must be a local path at this site"
            )));
        }
        let resolve = |addr: &str| match current {
            Err(why) if is_local_address(addr) => Err(refuse(format!(
                "{addr:?} is a local path, but the current site is unknown: {why}"
            ))),
            _ => resolve_address(addr, config, here),
        };
        let source = resolve(src)?;
        if let Some(path) = local_path(&source, config, here)
            && sources_exist
            && std::fs::symlink_metadata(&path).is_err()
        {
            return Err(refuse(format!(
                "{src}: {} does not exist here (the source {} at the current site)",
                path.display(),
                source.path
            )));
        }
        items.push(PlannedItem {
            size: local_size(&source, config, here),
            source,
            destination: resolve(dst)?,
            recursive: line.recursive.then_some(true),
        });
    }
    check_plan(&items)?;
    Ok(items)
}

/// Refuses plans that would lose data or never end: an item whose destination is its
/// own source (the copy would truncate the file it reads), a destination inside its
/// own source (a recursive copy would nest into itself), and two items with one
/// destination (only one source could end up there, yet both would report success).
pub(crate) fn check_plan(items: &[PlannedItem]) -> Result<()> {
    let refuse = |message: String| Error::invalid_config("transfer", message);
    let mut destinations: std::collections::HashMap<(Uuid, String), usize> = Default::default();
    for (n, item) in items.iter().enumerate() {
        let read =
            |path: &str| collection_path(path).map_err(|e| refuse(format!("item {}: {e}", n + 1)));
        let source = read(&item.source.path)?;
        let destination = read(&item.destination_path())?;
        if item.source.collection == item.destination.collection {
            if source == destination {
                return Err(refuse(format!(
                    "item {}: {} is both the source and the destination; a copy onto itself \
                     would destroy it",
                    n + 1,
                    item.source.path
                )));
            }
            if destination.starts_with(&format!("{}/", source.trim_end_matches('/'))) {
                return Err(refuse(format!(
                    "item {}: the destination {} lies inside the source {}; the copy would \
                     nest into itself",
                    n + 1,
                    item.destination.path,
                    item.source.path
                )));
            }
        }
        let key = (item.destination.collection, destination);
        if let Some(first) = destinations.insert(key, n) {
            return Err(refuse(format!(
                "items {} and {} have the same destination {}; only one source could end up \
                 there: give each its own destination",
                first + 1,
                n + 1,
                item.destination_path()
            )));
        }
    }
    Ok(())
}

/// No limit on a wait (a caller that has one races it instead).
#[doc(hidden)]
pub const NO_TIMEOUT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Globus's `sync_level` number for `exists`, `size`, `mtime` or `checksum` (the CLI's
/// `--sync-level` words); anything else is [`Error::InvalidInput`](crate::Error::InvalidInput).
///
/// ```
/// assert_eq!(ps_globus::internal::staging::sync_level("mtime").unwrap(), 2);
/// assert!(ps_globus::internal::staging::sync_level("newer").is_err());
/// ```
#[doc(hidden)]
pub fn sync_level(word: &str) -> Result<u8> {
    match word {
        "exists" => Ok(0),
        "size" => Ok(1),
        "mtime" => Ok(2),
        "checksum" => Ok(3),
        other => Err(Error::invalid_config(
            "sync_level",
            format!("{other:?} is not one of exists, size, mtime, checksum"),
        )),
    }
}

/// A task deadline as a person types it (RFC 3339, or `YYYY-MM-DD HH:MM:SS` in UTC), in
/// the form Globus reads; anything else is [`Error::InvalidInput`](crate::Error::InvalidInput), before anything is
/// sent.
///
/// ```
/// let at = ps_globus::internal::staging::deadline("2030-01-01 12:00:00").unwrap();
/// assert!(at.starts_with("2030-01-01"));
/// assert!(ps_globus::internal::staging::deadline("tomorrow").is_err());
/// ```
#[doc(hidden)]
pub fn deadline(text: &str) -> Result<String> {
    use crate::transfer::types::{format_time, parse_time};
    parse_time(text).map(format_time).ok_or_else(|| {
        Error::invalid_config(
            "deadline",
            format!(
                "{text:?} is not a time: give RFC 3339 (2030-01-01T12:00:00Z) or \
                 YYYY-MM-DD HH:MM:SS, in UTC"
            ),
        )
    })
}

/// The labels of `handles`' batches (sorted, once each) and the Globus tasks they have
/// become so far.
#[doc(hidden)]
pub async fn labels_and_tasks(
    manager: &TransferManager,
    handles: &[Enqueued],
) -> Result<(Vec<String>, Vec<String>)> {
    let mut labels: Vec<String> = handles.iter().map(|h| h.label.clone()).collect();
    labels.sort();
    labels.dedup();
    let mut task_ids = Vec::new();
    for label in &labels {
        if let Some(task) = manager.batch(label).await?.and_then(|b| b.task_id) {
            task_ids.push(task);
        }
    }
    Ok((labels, task_ids))
}

/// Enqueues every planned item as bulk work and submits them; returns their handles. A
/// plan that `check_plan` refuses submits nothing.
pub async fn submit(
    manager: &TransferManager,
    items: &[PlannedItem],
    options: &BatchOptions,
) -> Result<Vec<Enqueued>> {
    let handles = enqueue(manager, items, options).await?;
    manager.flush().await?;
    Ok(handles)
}

/// Enqueues every planned item as bulk work (committed to the state database, not yet
/// submitted: [`TransferManager::flush`] does that); returns their handles. An item an
/// earlier command queued and left on its way is followed instead ([`Enqueued::earlier`]). A plan that
/// `check_plan` refuses enqueues nothing.
pub async fn enqueue(
    manager: &TransferManager,
    items: &[PlannedItem],
    options: &BatchOptions,
) -> Result<Vec<Enqueued>> {
    check_plan(items)?;
    let specs = items.iter().map(|item| item_spec(item, options));
    // A copy an earlier (stopped) command queued is followed, not queued twice.
    manager.enqueue_once(specs.collect()).await
}

/// The manager item of a planned one: bulk work with `options`.
pub(crate) fn item_spec(item: &PlannedItem, options: &BatchOptions) -> ItemSpec {
    let mut spec = ItemSpec::new(
        item.source.collection.to_string(),
        item.source.path.clone(),
        item.destination.collection.to_string(),
        item.destination_path(),
    )
    .priority(Priority::Bulk)
    .options(options.clone());
    spec.recursive = item.recursive;
    spec.size = item.size;
    spec
}

/// Waits for every item (`timeout` in all); returns their final states. Failures are in
/// the states, not errors: the caller reports them all.
pub async fn wait_all(
    manager: &TransferManager,
    items: &[Enqueued],
    timeout: Duration,
    mut progress: impl FnMut(&ItemStatus),
) -> Result<Vec<ItemStatus>> {
    let deadline = crate::runtime::deadline_after(timeout);
    let mut done = Vec::with_capacity(items.len());
    for item in items {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let status = match manager.wait(item.item, left).await {
            Ok(status) => status,
            Err(Error::TransferFailed(_)) => manager.item(item.item).await?,
            Err(e) => return Err(e),
        };
        progress(&status);
        done.push(status);
    }
    Ok(done)
}

/// The example that was its documentation, while it was public.
#[cfg(test)]
mod check_plan_example {
    use crate::staging::{Location, PlannedItem, check_plan};

    #[test]
    fn check_plan_example() -> Result<(), Box<dyn std::error::Error>> {
        let at = |path: &str| Location {
            collection: uuid::Uuid::nil(),
            path: path.into(),
        };
        let item = |src: &str, dst: &str| PlannedItem {
            source: at(src),
            destination: at(dst),
            recursive: None,
            size: None,
        };
        assert!(check_plan(&[item("/a/x", "/b/x")]).is_ok());
        assert!(check_plan(&[item("/a/x", "/a//x/")]).is_err());
        assert!(check_plan(&[item("/a", "/a/copy")]).is_err());
        assert!(check_plan(&[item("/a/x", "/b/x"), item("/a/y", "/b/./x")]).is_err());
        Ok(())
    }
}

/// The example that was its documentation, while it was public.
#[cfg(test)]
mod resolve_address_example {
    use crate::config::{Config, SiteConfig};
    use crate::staging::resolve_address;

    #[test]
    fn resolve_address_example() -> Result<(), Box<dyn std::error::Error>> {
        let mut config = Config::default();
        config.sites.insert(
            "lab".into(),
            SiteConfig {
                collection: uuid::Uuid::nil(),
                collection_path: "/data".into(),
                local_path: "/srv/data".into(),
                host_regex: None,
                https_max_size: None,
            },
        );
        let at = resolve_address("lab:run1/in.h5", &config, None)?;
        assert_eq!(at.path, "/data/run1/in.h5");
        let local = resolve_address("/srv/data/run1", &config, Some("lab"))?;
        assert_eq!(local.path, "/data/run1");
        assert!(resolve_address("lab:/etc/passwd", &config, None).is_err());
        Ok(())
    }
}
