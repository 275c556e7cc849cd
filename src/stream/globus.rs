//! The Globus event channel: no broker. Event `n` of a topic is the sealed file
//! `<store dir>/streams/<topic>/<n, 20 digits>.event`, written at the producer's site and
//! sent by Globus with the objects (see the module docs of [`super`]).

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Event;
use crate::connector::manifest;
use crate::connector::{Connector, ConnectorConfig, GlobusConfig, GlobusConnector};
use crate::error::{Error, Result};
use crate::fsutil::{ObjectDir, read_regular_file_if_there};

/// The longest a reader waits between looks for the next event file.
const SLOWEST_LOOK: Duration = Duration::from_millis(100);

/// The topic's directory, relative to the store directory.
pub(super) fn topic_dir(topic: &str) -> String {
    format!("streams/{topic}")
}

/// Event `position`'s file, relative to the store directory.
fn event_path(topic: &str, position: u64) -> String {
    format!("{}/{position:020}.event", topic_dir(topic))
}

/// The topic's directory at this site, for writing.
pub(super) fn writer(globus: &GlobusConnector, topic: &str) -> Result<ObjectDir> {
    let (root, _) = globus.object_at_site(&topic_dir(topic))?;
    let below = PathBuf::from(&globus.globus_config().store_dir).join(topic_dir(topic));
    Ok(ObjectDir::new(root, below))
}

/// The position of the last event written at this site, if any; its transfer is enqueued
/// again (the producer may have died between writing and enqueuing it).
///
/// The last event is the highest-numbered file that *opens* as a sealed event of this
/// topic at the position its name says: a stray or half-written file with an event's
/// name (`99999999999999999999.event`) is passed over, never a reason to skip positions
/// that consumers would then wait for for ever.
pub(super) async fn resume(globus: &GlobusConnector, topic: &str) -> Result<Option<u64>> {
    let is_event_at = |position: u64, sealed: &[u8]| {
        matches!(
            manifest::open::<Event>(sealed),
            Some(Ok((event, _))) if event.topic == topic && event.position == position
        )
    };
    let last = last_genuine(globus, topic, "event", is_event_at)?;
    if let Some(last) = last {
        globus
            .send_files(&[(event_path(topic, last), None)], None)
            .await?;
    }
    Ok(last)
}

/// The highest position of a file `<position, 20 digits>.<extension>` in the topic's
/// directory at this site whose bytes `genuine` accepts for its position; the others
/// (stray, half-written, planted) are passed over with a warning.
pub(super) fn last_genuine(
    globus: &GlobusConnector,
    topic: &str,
    extension: &str,
    genuine: impl Fn(u64, &[u8]) -> bool,
) -> Result<Option<u64>> {
    let (_, dir) = globus.local_object(&topic_dir(topic))?;
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    let suffix = format!(".{extension}");
    let mut positions: Vec<u64> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name();
            let digits = name.to_str()?.strip_suffix(suffix.as_str())?;
            (digits.len() == 20).then(|| digits.parse::<u64>().ok())?
        })
        .collect();
    positions.sort_unstable_by(|a, b| b.cmp(a));
    for position in positions {
        let path = dir.join(format!("{position:020}{suffix}"));
        let sealed = read_regular_file_if_there(&path).ok().flatten();
        if sealed.is_some_and(|sealed| genuine(position, &sealed)) {
            return Ok(Some(position));
        }
        tracing::warn!(
            "{} is not a genuine {extension} of topic {topic} at {position}: passed over when \
             resuming",
            path.display()
        );
    }
    Ok(None)
}

/// Writes `event`'s file here and enqueues it to every destination, after the object it
/// announces (enqueued by its put just before: the two join one batch).
pub(super) async fn append(globus: &GlobusConnector, event: &Event) -> Result<()> {
    let name = format!("{:020}.event", event.position);
    writer(globus, &event.topic)?.write_atomic(&name, &manifest::seal(event))?;
    globus
        .send_files(&[(event_path(&event.topic, event.position), None)], None)
        .await?;
    Ok(())
}

/// Whether `config` (an event's) is the channel's Globus store: the same directory, the
/// same collections and paths at every site, and the same local path here (where the
/// consumer reads). Settings that do not say where objects are (the service URL, host
/// patterns) may differ between the producer's configuration and this site's.
fn same_store(config: &ConnectorConfig, globus: &GlobusConnector) -> bool {
    if config.kind != GlobusConnector::KIND {
        return false;
    }
    let Ok(theirs) = config.options_as::<GlobusConfig>() else {
        return false;
    };
    let mine = globus.globus_config();
    let here = globus.site();
    let same_dir = |a: &Path, b: &Path| a == b || a.canonicalize().ok() == b.canonicalize().ok();
    theirs.store_dir == mine.store_dir
        && mine.sites.iter().all(|(name, site)| {
            theirs.sites.get(name).is_some_and(|other| {
                other.collection == site.collection
                    && other.collection_path == site.collection_path
                    && (name != here || same_dir(&other.local_path, &site.local_path))
            })
        })
}

/// Event `position` of `topic` at this site, once its file verifies and the object it
/// names is here and verified; `None` if that did not happen by `until`.
pub(super) async fn read(
    globus: &GlobusConnector,
    topic: &str,
    position: u64,
    until: Instant,
) -> Result<Option<Event>> {
    let (_, path) = globus.local_object(&event_path(topic, position))?;
    // A file Globus is still writing does not verify yet: look again.
    let look = || async {
        let sealed = read_regular_file_if_there(&path)?;
        sealed
            .as_deref()
            .and_then(manifest::open::<Event>)
            .map(|opened| opened.map(|(event, _)| event))
            .transpose()
    };
    let left = until.saturating_duration_since(Instant::now());
    let Some(event) = crate::runtime::poll_until_found(left, SLOWEST_LOOK, look).await? else {
        return Ok(None);
    };
    if let Some(object) = &event.object {
        // Anyone who can write a file here can seal one: an event names an object of
        // the channel's own store, never a store of its choosing (a file store on /etc).
        if !same_store(&object.store.connector, globus) {
            return Err(Error::malformed(format!(
                "event {position} of topic {topic} at {} names an object outside the \
                 channel's Globus store: not taken",
                path.display()
            )));
        }
        // Here and verified (waiting for its transfer, which the producer sent first).
        let left = until.saturating_duration_since(Instant::now());
        match crate::runtime::timeout(left, globus.resolve_path(&object.key)).await {
            Some(verified) => verified?,
            None => return Ok(None),
        };
    }
    Ok(Some(event))
}
