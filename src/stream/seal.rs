//! Sealed stream messages: HMAC-SHA256 under a key that only the producers and consumers
//! of a channel hold, so that a consumer takes a message only from one of them.
//!
//! ProxyStore's stream events are pickles, and its consumer builds a store from the
//! configuration inside each one: whoever can plant an event (a file in a shared
//! collection, an entry on a Redis server) could run code in every consumer. A sealed
//! message is opened — its bytes handed on — only if its MAC verifies, and the MAC
//! covers where it belongs (the channel, the topic, the position) as well as the bytes,
//! so a genuine message cannot be replayed elsewhere either.
//!
//! The key is a file of local configuration (64 hex digits, readable by its owner only),
//! the same at every site of the channel: made once with [`StreamKey::create`] and copied
//! to the other sites as one copies an SSH key.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{Error, Result};
use crate::settings::Settings;

/// The bytes a sealed message starts with.
const MAGIC: &[u8] = b"psgm1";

/// The length of a MAC.
const MAC_LEN: usize = 32;

/// The key length, in bytes.
const KEY_LEN: usize = 32;

/// The key that seals a channel's messages (see the module docs). Its bytes never show in
/// `Debug`.
#[derive(Clone)]
pub struct StreamKey {
    key: hmac::Key,
    path: PathBuf,
}

impl std::fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamKey")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Where a message belongs: what its MAC covers besides its bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Place<'a> {
    /// The channel (its kind and the store or prefix it lives in).
    pub(crate) channel: &'a str,
    pub(crate) topic: &'a str,
    pub(crate) position: u64,
}

impl<'a> Place<'a> {
    pub(crate) fn new(channel: &'a str, topic: &'a str, position: u64) -> Self {
        Place {
            channel,
            topic,
            position,
        }
    }
}

impl StreamKey {
    /// The default key file: `stream.key` in the state directory.
    pub fn default_path(settings: &Settings) -> PathBuf {
        settings.home.join("stream.key")
    }

    /// Reads the key in `path`: 64 hex digits in a regular file that only its owner can
    /// read or write (as `chmod 600` leaves it).
    pub fn load(path: &Path) -> Result<Self> {
        let missing = |e: std::io::Error| {
            Error::invalid_config(
                "stream key",
                format!(
                    "{}: {e}: every producer and consumer of a sealed channel needs the same \
                     key file (make one with `ps-globus stream key`, then copy it to each \
                     site with scp)",
                    path.display()
                ),
            )
        };
        let meta = std::fs::symlink_metadata(path).map_err(missing)?;
        if !meta.file_type().is_file() {
            return Err(Error::invalid_config(
                "stream key",
                format!("{} is not a regular file", path.display()),
            ));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(Error::invalid_config(
                "stream key",
                format!(
                    "{} can be read or written by others (mode {:o}): run `chmod 600 {}`",
                    path.display(),
                    meta.mode() & 0o777,
                    path.display()
                ),
            ));
        }
        let text = std::fs::read_to_string(path).map_err(missing)?;
        let bytes = decode_hex(text.trim()).ok_or_else(|| {
            Error::invalid_config(
                "stream key",
                format!(
                    "{} does not hold {} hex digits",
                    path.display(),
                    2 * KEY_LEN
                ),
            )
        })?;
        Ok(StreamKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
            path: path.to_owned(),
        })
    }

    /// Makes a new random key in `path` (which must not exist), readable by its owner
    /// only, and loads it.
    pub fn create(path: &Path) -> Result<Self> {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new().fill(&mut bytes).map_err(|_| {
            Error::io(
                "read randomness for",
                path,
                std::io::Error::other("no randomness"),
            )
        })?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io("create", path, e))?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        file.write_all(format!("{hex}\n").as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io("write", path, e))?;
        Self::load(path)
    }

    /// The file the key was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the MAC covers: each part of the place behind its length (no two places
    /// share their bytes), then the payload.
    fn signed(place: Place<'_>, payload: &[u8]) -> Vec<u8> {
        let position = place.position.to_string();
        let parts = [
            b"ps-globus stream message v1".as_slice(),
            place.channel.as_bytes(),
            place.topic.as_bytes(),
            position.as_bytes(),
        ];
        let mut signed = Vec::with_capacity(128 + payload.len());
        for part in parts {
            signed.extend_from_slice(&(part.len() as u64).to_be_bytes());
            signed.extend_from_slice(part);
        }
        signed.extend_from_slice(payload);
        signed
    }

    /// `payload` sealed for `place`.
    pub(crate) fn seal(&self, place: Place<'_>, payload: &[u8]) -> Vec<u8> {
        let tag = hmac::sign(&self.key, &Self::signed(place, payload));
        let mut out = Vec::with_capacity(MAGIC.len() + MAC_LEN + payload.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(tag.as_ref());
        out.extend_from_slice(payload);
        out
    }

    /// The payload of `sealed`, if it was sealed with this key for `place`.
    pub(crate) fn open<'a>(&self, place: Place<'_>, sealed: &'a [u8]) -> Option<&'a [u8]> {
        let rest = sealed.strip_prefix(MAGIC)?;
        if rest.len() < MAC_LEN {
            return None;
        }
        let (mac, payload) = rest.split_at(MAC_LEN);
        // ring compares in constant time: a forgery's MAC says nothing about the key.
        hmac::verify(&self.key, &Self::signed(place, payload), mac).ok()?;
        Some(payload)
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 2 * KEY_LEN || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(position: u64) -> Place<'static> {
        Place {
            channel: "globus:store",
            topic: "t",
            position,
        }
    }

    #[test]
    fn a_message_opens_only_with_its_key_at_its_place_and_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let key = StreamKey::create(&dir.path().join("k")).unwrap();
        let other = StreamKey::create(&dir.path().join("other")).unwrap();
        let sealed = key.seal(place(3), b"event bytes");
        assert_eq!(key.open(place(3), &sealed), Some(&b"event bytes"[..]));
        assert_eq!(other.open(place(3), &sealed), None, "another key");
        assert_eq!(key.open(place(4), &sealed), None, "another position");
        let elsewhere = Place {
            topic: "u",
            ..place(3)
        };
        assert_eq!(key.open(elsewhere, &sealed), None, "another topic");
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(key.open(place(3), &flipped), None, "a changed byte");
        assert_eq!(key.open(place(3), &sealed[..20]), None, "cut short");
        assert_eq!(key.open(place(3), b"event bytes"), None, "never sealed");
    }

    #[test]
    fn a_key_file_others_can_read_or_that_is_not_a_key_is_refused_saying_what_to_do() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        StreamKey::create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let open = StreamKey::load(&path).unwrap_err();
        assert!(open.to_string().contains("chmod 600"), "{open}");
        let short = dir.path().join("short");
        std::fs::write(&short, "abcd").unwrap();
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        let bad = StreamKey::load(&short).unwrap_err();
        assert!(bad.to_string().contains("64 hex digits"), "{bad}");
        let none = StreamKey::load(&dir.path().join("absent")).unwrap_err();
        assert!(none.to_string().contains("ps-globus stream key"), "{none}");
        assert!(
            StreamKey::create(&path).is_err(),
            "an existing key is never replaced"
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&short, &link).unwrap();
        assert!(StreamKey::load(&link).is_err(), "a symlink is not taken");
    }
}
