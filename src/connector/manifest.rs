//! Self-verifying manifests: a small JSON body behind a header line that carries the
//! body's own sha256.
//!
//! A manifest says what an object is (its size and sha256) where the object's key cannot
//! say it, because the key was made before the object existed (a future's deferred key),
//! or because the announcement travels apart from it (a stream's event files, copied by
//! Globus in no particular order). A reader accepts a manifest only when its checksum
//! verifies, so a manifest still being written (Globus writes files in place) or a
//! damaged one reads as "not there yet", never as a wrong answer; then it accepts the
//! object only when the object matches the manifest.
//!
//! Format: `ps-globus-manifest/1 <sha256 of body, hex>\n<body: compact JSON>\n`. An
//! *envelope* (for connectors that keep a deferred object as one value: memory, Redis) is
//! a manifest followed directly by the object's bytes.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Settlement;
use crate::error::{Error, IntegrityMismatch, ProducerGone, Result};

const MAGIC: &str = "ps-globus-manifest/1 ";

/// Seals `body`: the header line with its checksum, then the body.
pub(crate) fn seal<T: Serialize>(body: &T) -> Vec<u8> {
    let json = serde_json::to_vec(body).expect("manifest bodies serialize");
    let mut out = Vec::with_capacity(json.len() + 90);
    out.extend_from_slice(MAGIC.as_bytes());
    out.extend_from_slice(crate::fsutil::hex(&Sha256::digest(&json)).as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&json);
    out.push(b'\n');
    out
}

/// Opens a sealed manifest at the start of `bytes`: its body and the bytes after it.
/// `None` if it is not (yet) a whole manifest whose checksum verifies; an error if it
/// verifies but its body is not a `T` (written by a newer release).
pub(crate) fn open<T: DeserializeOwned>(bytes: &[u8]) -> Option<Result<(T, &[u8])>> {
    let rest = bytes.strip_prefix(MAGIC.as_bytes())?;
    let header_end = rest.iter().position(|&b| b == b'\n')?;
    let (sum, rest) = (&rest[..header_end], &rest[header_end + 1..]);
    let body_end = rest.iter().position(|&b| b == b'\n')?;
    let (json, after) = (&rest[..body_end], &rest[body_end + 1..]);
    if sum != crate::fsutil::hex(&Sha256::digest(json)).as_bytes() {
        return None;
    }
    Some(
        serde_json::from_slice(json)
            .map(|body| (body, after))
            .map_err(|e| Error::malformed(format!("a manifest's body: {e}"))),
    )
}

/// How a deferred object (a future's) was settled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Outcome {
    /// The object was written: it must have this size and sha256.
    Set {
        /// The object's size in bytes.
        size: u64,
        /// The object's sha256, hex.
        sha256: String,
        /// Per destination site, the batch label of the object's transfer (Globus): a
        /// reader there follows that task, and fails `Integrity` once it is final.
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        labels: std::collections::BTreeMap<String, String>,
    },
    /// The producer gave it up: it will never be set.
    Abandoned {
        /// Why.
        reason: String,
    },
    /// A tombstone: the object was set and then evicted (or its Redis TTL ran out). A
    /// reader fails at once, instead of waiting for a value that will never come back.
    Evicted,
}

impl Outcome {
    /// The outcome of writing `data`.
    pub(crate) fn of(data: &[u8]) -> Outcome {
        Outcome::Set {
            size: data.len() as u64,
            sha256: crate::fsutil::hex(&Sha256::digest(data)),
            labels: Default::default(),
        }
    }

    /// Whether `other` promises the same object (size and sha256; labels aside).
    fn same_object(&self, other: &Outcome) -> bool {
        match (self, other) {
            (
                Outcome::Set { size, sha256, .. },
                Outcome::Set {
                    size: s, sha256: h, ..
                },
            ) => size == s && sha256 == h,
            _ => false,
        }
    }

    /// The manifest of `settlement`, and the object's bytes (none when abandoned).
    pub(crate) fn settling(settlement: Settlement<'_>) -> (Outcome, &[u8]) {
        match settlement {
            Settlement::Value(data) => (Outcome::of(data), data),
            Settlement::Abandoned(reason) => (
                Outcome::Abandoned {
                    reason: reason.to_owned(),
                },
                &[],
            ),
        }
    }

    /// The size the object must have; [`ProducerGone`](crate::error::ProducerGone) (naming `what`) if it was
    /// abandoned.
    pub(crate) fn expected_size(&self, what: &str) -> Result<u64> {
        match self {
            Outcome::Set { size, .. } => Ok(*size),
            Outcome::Abandoned { reason } => {
                Err(Error::from(ProducerGone::new(what, reason.clone())))
            }
            Outcome::Evicted => Err(evicted(what)),
        }
    }

    /// `data` if it is the object this outcome promises; an [`Error::Integrity`] naming
    /// `what` if it is not; [`ProducerGone`](crate::error::ProducerGone) if the object was abandoned.
    pub(crate) fn check(&self, what: &str, data: Bytes) -> Result<Bytes> {
        self.expected_size(what)?;
        let found = Outcome::of(&data);
        if found.same_object(self) {
            return Ok(data);
        }
        let describe = |o: &Outcome| match o {
            Outcome::Set { size, sha256, .. } => format!("{size} bytes, sha256 {sha256}"),
            Outcome::Abandoned { .. } | Outcome::Evicted => String::new(),
        };
        Err(Error::from(IntegrityMismatch::new(
            what,
            describe(self),
            describe(&found),
        )))
    }
}

/// The error for a future whose object was evicted (or expired): `what` names it.
pub(crate) fn evicted(what: &str) -> Error {
    Error::not_found(
        "a future's store",
        &what,
        "it was set, then evicted (or its Redis TTL ran out): it will not come back",
    )
}

/// A tombstone manifest (see [`Outcome::Evicted`]), sealed.
pub(crate) fn tombstone() -> Vec<u8> {
    seal(&Outcome::Evicted)
}

/// One value holding a deferred object: its manifest, then its bytes.
pub(crate) fn envelope(settlement: Settlement<'_>) -> Vec<u8> {
    let (outcome, data) = Outcome::settling(settlement);
    let mut out = seal(&outcome);
    out.extend_from_slice(data);
    out
}

/// The object inside an envelope, verified; `what` names it in errors. An envelope
/// whose manifest does not verify is damaged (a value is written whole): an
/// [`Error::Integrity`].
pub(crate) fn open_envelope(what: &str, value: &Bytes) -> Result<Bytes> {
    let Some(opened) = open::<Outcome>(value) else {
        return Err(Error::from(IntegrityMismatch::new(
            what,
            "a deferred object's manifest",
            format!("{} bytes without a manifest that verifies", value.len()),
        )));
    };
    let (outcome, data) = opened?;
    let start = value.len() - data.len();
    outcome.check(what, value.slice(start..))
}

/// What a connector that keeps a deferred object as one value (an envelope) returns for
/// `key`'s stored `value`: the value itself for an ordinary key, the verified object for
/// a deferred one.
pub(crate) fn unwrap_value(key: &super::Key, value: Option<Bytes>) -> Result<Option<Bytes>> {
    match value {
        Some(value) if key.is_deferred() => open_envelope(&key.to_string(), &value).map(Some),
        value => Ok(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_opens_only_whole_and_unchanged() {
        let sealed = seal(&Outcome::of(b"abc"));
        let (body, rest): (Outcome, _) = open(&sealed).unwrap().unwrap();
        assert_eq!(body, Outcome::of(b"abc"));
        assert!(rest.is_empty());
        for cut in 0..sealed.len() {
            assert!(open::<Outcome>(&sealed[..cut]).is_none(), "cut at {cut}");
        }
        let mut flipped = sealed.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 1;
        assert!(open::<Outcome>(&flipped).is_none());
    }

    #[test]
    fn an_envelope_gives_its_object_only_when_it_matches() {
        let value = Bytes::from(envelope(Settlement::Value(b"payload")));
        assert_eq!(
            open_envelope("k", &value).unwrap(),
            Bytes::from_static(b"payload")
        );
        let mut wrong = envelope(Settlement::Value(b"payload"));
        *wrong.last_mut().unwrap() = b'e';
        let wrong = Bytes::from(wrong);
        let e = open_envelope("k", &wrong).unwrap_err();
        assert!(matches!(e, Error::Integrity(_)), "{e}");
        let gone = envelope(Settlement::Abandoned("dropped"));
        let e = open_envelope("k", &Bytes::from(gone)).unwrap_err();
        assert!(e.is::<ProducerGone>(), "{e}");
        let e = open_envelope("k", &Bytes::from_static(b"raw bytes")).unwrap_err();
        assert!(matches!(e, Error::Integrity(_)), "{e}");
    }
}
