//! Deferred objects kept as files (the file and Globus connectors): the object `<id>`,
//! and beside it its manifest `<id>.manifest` (see [`crate::connector::manifest`]), written after
//! the object. A reader takes the object only once the manifest is whole and verifies,
//! and the object matches it; an object still arriving (Globus writes files in place, in
//! no particular order) is "not yet", never a wrong answer.

use std::io::ErrorKind;
use std::path::Path;

use bytes::Bytes;

use super::Settlement;
use crate::connector::manifest::{self, Outcome};
use crate::error::{AlreadySet, Error, Result};
use crate::fsutil::{ObjectDir, read_regular_file_if_there};

/// The name of the manifest of object `id`.
pub(crate) fn manifest_name(id: &str) -> String {
    format!("{id}.manifest")
}

/// Writes a deferred object's settlement into `objects`, once: the object (if set), then
/// its manifest, each a whole file linked into place only if none has its name
/// ([`ObjectDir::write_new`]), so a manifest is never there before its object here and
/// the first settlement wins. A later one — a setter deserialized twice, an abandon after
/// a value — is [`AlreadySet`](crate::error::AlreadySet) and changes nothing. The manifest's outcome.
pub(crate) fn write(objects: &ObjectDir, id: &str, settlement: Settlement<'_>) -> Result<Outcome> {
    let outcome = write_object(objects, id, settlement)?;
    seal_manifest(objects, id, settlement, outcome)
}

/// The first half of [`write`]: the object (if set), linked into place only if this
/// future is not settled yet; the outcome its manifest is to seal.
pub(crate) fn write_object(
    objects: &ObjectDir,
    id: &str,
    settlement: Settlement<'_>,
) -> Result<Outcome> {
    let (outcome, data) = Outcome::settling(settlement);
    if objects.path().join(manifest_name(id)).exists() {
        return Err(already_set(objects, id));
    }
    let wrote_object = matches!(settlement, Settlement::Value(_));
    if wrote_object && !objects.write_new(id, data)? {
        return Err(already_set(objects, id));
    }
    Ok(outcome)
}

fn already_set(objects: &ObjectDir, id: &str) -> Error {
    Error::from(AlreadySet::new(format!(
        "the future {}",
        objects.path().join(id).display()
    )))
}

/// The second half of [`write`]: the manifest sealing `outcome`, linked into place only
/// if none is there; if another settlement's won, the object this one linked is taken
/// back.
pub(crate) fn seal_manifest(
    objects: &ObjectDir,
    id: &str,
    settlement: Settlement<'_>,
    outcome: Outcome,
) -> Result<Outcome> {
    let already = || already_set(objects, id);
    let wrote_object = matches!(settlement, Settlement::Value(_));
    if !objects.write_new(&manifest_name(id), &manifest::seal(&outcome))? {
        // Another settlement's manifest won the race: take back the object this one
        // linked (its own, just made), and change nothing.
        if wrote_object {
            objects.remove(id)?;
        }
        return Err(already());
    }
    Ok(outcome)
}

/// What a reader finds of a deferred object in `dir`.
pub(crate) enum Found {
    /// Not set yet, or still arriving.
    Pending,
    /// There, whole and verified.
    Ready(Bytes),
    /// The object is there with the manifest's size but not its sha256 (the error), and
    /// the manifest's outcome.
    Mismatch(Error, Outcome),
}

/// Looks for deferred object `id` in `dir`. An abandoned one is [`ProducerGone`](crate::error::ProducerGone);
/// `what` names the object in errors.
pub(crate) fn read(dir: &Path, id: &str, what: &str) -> Result<Found> {
    let Some(sealed) = read_regular_file_if_there(&dir.join(manifest_name(id)))? else {
        return Ok(Found::Pending);
    };
    let Some(opened) = manifest::open::<Outcome>(&sealed) else {
        return Ok(Found::Pending);
    };
    let (outcome, _) = opened?;
    let expected = outcome.expected_size(what)?;
    // An object still arriving is looked at, not read: readers poll this.
    let path = dir.join(id);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.len() < expected => return Ok(Found::Pending),
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Found::Pending),
        Err(e) => return Err(Error::io("inspect", path, e)),
    }
    let Some(data) = read_regular_file_if_there(&path)? else {
        return Ok(Found::Pending);
    };
    Ok(match outcome.check(what, data) {
        Ok(data) => Found::Ready(data),
        Err(e) => Found::Mismatch(e, outcome),
    })
}

/// Evicts a deferred object: its manifest becomes a tombstone (a later reader fails at
/// once instead of waiting, and a late setter is refused), then the object goes.
pub(crate) fn remove(dir: &Path, id: &str) -> Result<()> {
    ObjectDir::new(dir, "").write_atomic(&manifest_name(id), &manifest::tombstone())?;
    let path = dir.join(id);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}
