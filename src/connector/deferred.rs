//! Deferred objects kept as files (the file and Globus connectors): the object `<id>`,
//! and beside it its manifest `<id>.manifest` (see [`crate::manifest`]), written after
//! the object. A reader takes the object only once the manifest is whole and verifies,
//! and the object matches it; an object still arriving (Globus writes files in place, in
//! no particular order) is "not yet", never a wrong answer.

use std::io::ErrorKind;
use std::path::Path;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::fsutil::{ObjectDir, read_regular_file};
use crate::manifest::{self, Outcome};

/// The name of the manifest of object `id`.
pub(crate) fn manifest_name(id: &str) -> String {
    format!("{id}.manifest")
}

/// Writes a deferred object's outcome into `objects`: the object (if set), then its
/// manifest, each atomically, so a manifest is never there before its object here.
pub(crate) fn write(objects: &ObjectDir, id: &str, outcome: &Outcome, data: &[u8]) -> Result<()> {
    if let Outcome::Set { .. } = outcome {
        objects.write_atomic(id, data)?;
    }
    objects.write_atomic(&manifest_name(id), &manifest::seal(outcome))
}

/// What a reader finds of a deferred object in `dir`.
pub(crate) enum Found {
    /// Not set yet, or still arriving.
    Pending,
    /// There, whole and verified.
    Ready(Bytes),
    /// The object is there with the manifest's size but not its sha256.
    Mismatch(Error),
}

/// Looks for deferred object `id` in `dir`. An abandoned one is [`Error::ProducerGone`];
/// `what` names the object in errors.
pub(crate) fn read(dir: &Path, id: &str, what: &str) -> Result<Found> {
    let Some(sealed) = read_if_there(dir, &manifest_name(id))? else {
        return Ok(Found::Pending);
    };
    let Some(opened) = manifest::open::<Outcome>(&sealed) else {
        return Ok(Found::Pending);
    };
    let (outcome, _) = opened?;
    let expected = match &outcome {
        Outcome::Set { size, .. } => *size,
        Outcome::Abandoned { .. } => return outcome.check(what, Bytes::new()).map(Found::Ready),
    };
    let Some(data) = read_if_there(dir, id)? else {
        return Ok(Found::Pending);
    };
    if (data.len() as u64) < expected {
        return Ok(Found::Pending);
    }
    Ok(match outcome.check(what, data) {
        Ok(data) => Found::Ready(data),
        Err(e) => Found::Mismatch(e),
    })
}

/// Removes a deferred object and its manifest; missing ones are fine.
pub(crate) fn remove(dir: &Path, id: &str) -> Result<()> {
    for name in [id.to_owned(), manifest_name(id)] {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", path, e)),
        }
    }
    Ok(())
}

fn read_if_there(dir: &Path, name: &str) -> Result<Option<Bytes>> {
    let path = dir.join(name);
    match read_regular_file(&path) {
        Ok(data) => Ok(Some(data)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}
