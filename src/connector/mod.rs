//! Connectors: where the bytes of stored objects live.
//!
//! A [`Connector`] is a byte-level object store: `put` bytes, get back a [`Key`]; `get`,
//! `exists` and `evict` by key. It knows nothing of types or codecs (that is the
//! [`Store`](crate::Store)'s job). Each implementation lives in its own file:
//!
//! | kind | type | where objects live |
//! | --- | --- | --- |
//! | `local` | [`LocalConnector`] | this process's memory |
//! | `file` | [`FileConnector`] | files in one directory |
//! | `endpoint` | [`EndpointConnector`] | endpoint processes, one per site, that fetch from each other |
//! | `globus` | [`GlobusConnector`] | files at each site, copied between sites by Globus |
//! | `redis` | [`RedisConnector`] | values on a Redis server every site reaches |
//! | `multi` | [`MultiConnector`] | in one of its child connectors, chosen per put by policy |
//!
//! Every connector can describe itself with [`Connector::config`], a serializable
//! [`ConnectorConfig`] from which [`ConnectorConfig::build`] rebuilds an equivalent
//! connector in any process. This is how a proxy deserialized elsewhere finds its bytes.
//! New kinds plug in with [`register_kind`].
//!
//! Keys are small serde values tagged with a format version and the connector kind that
//! made them, so a key handed to the wrong connector, or a malformed one, is a typed
//! error rather than a wrong read.

mod deferred;
// Its config file model and wire constants are for the endpoint package and the command;
// the public face is `EndpointConnector` and `EndpointConfig`.
#[doc(hidden)]
pub mod endpoint;
mod file;
mod globus;
mod local;
pub(crate) mod manifest;
mod multi;
mod reach;
mod redis;
pub mod trust;

pub use endpoint::{EndpointConfig, EndpointConnector};
pub use file::FileConnector;
pub(crate) use globus::DEFAULT_WAIT;
pub use globus::{
    GlobusConfig, GlobusConnector, GlobusConnectorBuilder, ObjectMeta, ProcessDefaults,
    set_process_defaults,
};
pub use local::LocalConnector;
pub use multi::{ChildConfig, MultiConfig, MultiConnector, Policy};
pub use reach::{Reach, Verdict};
pub use redis::{RedisConfig, RedisConnector};
pub use trust::{LocalTrust, Provenance};

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The newest key format this build writes and reads.
pub(crate) const KEY_VERSION: u16 = 1;

/// Longest object id a key may carry.
const MAX_ID_LEN: usize = 128;

/// A reference to one stored object, as handed out by [`Connector::put`].
///
/// A key is a small serde value: format version, the kind of connector that made it, the
/// object id and, for connectors that need more (such as the Globus connector's
/// collection, path and checksum), connector-specific metadata. Its text form
/// ([`Display`](fmt::Display) / [`FromStr`]) is compact JSON.
///
/// Object ids are 1 to 128 characters of `A-Z a-z 0-9 _ -`, so an id can never name a
/// path outside a connector's directory.
///
/// ```
/// use ps_globus::connector::Key;
/// let key: Key = r#"{"v":1,"kind":"file","id":"0123abcd"}"#.parse()?;
/// assert_eq!(key.kind(), "file");
/// assert_eq!(key.id(), "0123abcd");
/// assert_eq!(key.to_string().parse::<Key>()?, key);
///
/// // An id that tries to climb out of a directory is refused.
/// assert!(r#"{"v":1,"kind":"file","id":"../etc/passwd"}"#.parse::<Key>().is_err());
/// # Ok::<(), ps_globus::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawKey")]
pub struct Key {
    #[serde(rename = "v")]
    version: u16,
    kind: Cow<'static, str>,
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    meta: Option<serde_json::Value>,
}

/// The unchecked shape of a key, validated into a [`Key`] on deserialization.
// Unknown fields are ignored rather than refused: a key from a newer release must fail
// on its version number, with the "upgrade" advice, not on a field name.
#[derive(Deserialize)]
struct RawKey {
    v: u16,
    kind: String,
    id: String,
    #[serde(default)]
    meta: Option<serde_json::Value>,
}

impl TryFrom<RawKey> for Key {
    type Error = Error;

    fn try_from(raw: RawKey) -> Result<Self> {
        if raw.v == 0 {
            return Err(Error::malformed("version 0 is not a key format version"));
        }
        if raw.v > KEY_VERSION {
            return Err(Error::unsupported_version("key", raw.v, KEY_VERSION));
        }
        if raw.kind.is_empty() {
            return Err(Error::malformed("the connector kind is empty"));
        }
        validate_id(&raw.id)?;
        Ok(Key {
            version: raw.v,
            kind: Cow::Owned(raw.kind),
            id: raw.id,
            meta: raw.meta,
        })
    }
}

/// Whether `text` is 1 to `max_len` characters of `A-Z a-z 0-9 _ -`: safe as a file name,
/// in a key, or in a glob.
pub(crate) fn is_plain_name(text: &str, max_len: usize) -> bool {
    let ok_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    !text.is_empty() && text.len() <= max_len && text.bytes().all(ok_byte)
}

fn validate_id(id: &str) -> Result<()> {
    if !is_plain_name(id, MAX_ID_LEN) {
        return Err(Error::malformed(format!(
            "object id {id:?} is not 1-{MAX_ID_LEN} characters of A-Z a-z 0-9 _ -"
        )));
    }
    Ok(())
}

impl Key {
    /// A key of the current format for an object `id` made by a connector of `kind`.
    ///
    /// Fails with [`Error::InvalidInput`] if `id` is not a valid object id.
    pub fn new(kind: &'static str, id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        validate_id(&id)?;
        Ok(Key {
            version: KEY_VERSION,
            kind: Cow::Borrowed(kind),
            id,
            meta: None,
        })
    }

    /// A key of the current format for a fresh random object id (32 hex digits).
    ///
    /// ```
    /// let key = ps_globus::connector::Key::generate("file");
    /// assert_eq!(key.id().len(), 32);
    /// ```
    pub fn generate(kind: &'static str) -> Self {
        Key {
            version: KEY_VERSION,
            kind: Cow::Borrowed(kind),
            id: Self::new_id(),
            meta: None,
        }
    }

    /// A fresh random object id (32 hex digits).
    pub fn new_id() -> String {
        let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
        uuid::Uuid::new_v4()
            .simple()
            .encode_lower(&mut buf)
            .to_owned()
    }

    /// This key with connector-specific metadata attached.
    pub fn with_meta(mut self, meta: impl Serialize) -> Result<Self> {
        self.meta = Some(
            serde_json::to_value(meta).map_err(|e| Error::malformed(format!("metadata: {e}")))?,
        );
        Ok(self)
    }

    /// A key for an object that does not exist yet: a future's, written later with
    /// [`Connector::set`]. Its metadata says so (`"deferred": true`), with `extra` fields
    /// the connector needs.
    pub fn deferred(kind: &'static str, extra: serde_json::Map<String, serde_json::Value>) -> Self {
        let mut meta = extra;
        meta.insert("deferred".into(), true.into());
        Key {
            meta: Some(meta.into()),
            ..Key::generate(kind)
        }
    }

    /// Whether this key was made before its object (see [`Key::deferred`]): the object
    /// is verified from the manifest written with it, not from the key.
    pub fn is_deferred(&self) -> bool {
        self.meta
            .as_ref()
            .and_then(|m| m.get("deferred"))
            .and_then(serde_json::Value::as_bool)
            == Some(true)
    }

    /// Checks that a connector of `kind` may settle this key: one of its kind that
    /// `new_key` made (a key of an object that exists is never written again).
    pub fn check_deferred(&self, kind: &str) -> Result<()> {
        self.check_kind(kind)?;
        if !self.is_deferred() {
            return Err(Error::malformed(format!(
                "key {self} is not a deferred key: only a key from new_key (a future's) is \
                 set later"
            )));
        }
        Ok(())
    }

    /// The format version the key was written with.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// The kind of connector that made the key (`"local"`, `"file"`, ...).
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The object id, unique within its connector.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The connector-specific metadata, if any.
    pub fn meta(&self) -> Option<&serde_json::Value> {
        self.meta.as_ref()
    }

    /// The metadata decoded as `T`; a missing or mismatched one is [`Error::InvalidInput`].
    pub fn meta_as<T: DeserializeOwned>(&self) -> Result<T> {
        let meta = self
            .meta
            .clone()
            .ok_or_else(|| Error::malformed(format!("key {self} carries no metadata")))?;
        serde_json::from_value(meta).map_err(|e| Error::malformed(format!("key {self}: {e}")))
    }

    /// Checks that a connector of `kind` may use this key.
    ///
    /// Every connector calls this first, so keys built any way are re-validated.
    pub fn check_kind(&self, kind: &str) -> Result<()> {
        if self.kind != kind {
            return Err(Error::foreign_key(kind, &self.kind, self));
        }
        validate_id(&self.id)
    }
}

// Equal keys have equal kinds and ids, so hashing those two is consistent with `Eq`
// (and avoids hashing the metadata, which `serde_json::Value` does not support).
impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
        self.id.hash(state);
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl FromStr for Key {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let raw: RawKey = serde_json::from_str(s.trim())
            .map_err(|e| Error::malformed(format!("{e} in {s:?}")))?;
        Key::try_from(raw)
    }
}

/// Per-put settings.
///
/// Empty for the local and file connectors; connectors that move data between sites take
/// their per-put settings (such as destinations) here. Build with `Default` and the
/// setters, so that new settings do not break callers.
///
/// ```
/// let options = ps_globus::connector::PutOptions::default().with_destinations(["lab"]);
/// assert_eq!(options.destinations.as_deref(), Some(&["lab".to_string()][..]));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PutOptions {
    /// Sites to send this object to (Globus connector); `None`: the store's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destinations: Option<Vec<String>>,
    /// Tags that a [`MultiConnector`]'s policies route by (other connectors ignore them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The one site that may settle a deferred key ([`Connector::new_key`], Globus
    /// connector); `None`: the site where the key is made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settling_site: Option<String>,
    /// The object is bulk work whatever its size (Globus connector): its task leaves the
    /// running slot kept for small objects that readers wait on (see
    /// [`GlobusConfig::latency_max_size`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bulk: bool,
}

impl PutOptions {
    /// Sends the object to these sites (Globus connector).
    pub fn with_destinations<S: Into<String>>(
        mut self,
        sites: impl IntoIterator<Item = S>,
    ) -> Self {
        self.destinations = Some(sites.into_iter().map(Into::into).collect());
        self
    }

    /// Names the one site that may settle a deferred key made with these options (Globus
    /// connector): two sites can then never both set one future.
    pub fn with_settling_site(mut self, site: impl Into<String>) -> Self {
        self.settling_site = Some(site.into());
        self
    }

    /// Sends the object as bulk work ([`PutOptions::bulk`]).
    pub fn with_bulk(mut self) -> Self {
        self.bulk = true;
        self
    }

    /// Tags this put, for a [`MultiConnector`]'s policies.
    pub fn with_tags<S: Into<String>>(mut self, tags: impl IntoIterator<Item = S>) -> Self {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }
}

/// The refusal of a deferred-key operation by a connector without them.
fn no_deferred_keys(kind: &str) -> Error {
    Error::unsupported(
        "deferred keys (futures)",
        kind,
        "use a local, file, Globus or Redis store for futures",
    )
}

/// How the object of a deferred key is settled (see [`Connector::settle`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settlement<'a> {
    /// The object's bytes.
    Value(&'a [u8]),
    /// No object will come, and why.
    Abandoned(&'a str),
}

/// A serializable description of a connector, from which an equivalent one is rebuilt.
///
/// `kind` selects the builder registered with [`register_kind`]; `options` is that
/// kind's own settings.
///
/// ```
/// use ps_globus::connector::{Connector, ConnectorConfig, FileConnector};
/// let dir = tempfile::tempdir()?;
/// let connector = FileConnector::new(dir.path())?;
/// let config: ConnectorConfig = serde_json::from_str(&serde_json::to_string(&connector.config())?)?;
/// let rebuilt = config.build_local()?;
/// assert_eq!(rebuilt.config(), connector.config());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConnectorConfig {
    /// The connector kind, e.g. `"file"`.
    pub kind: String,
    /// The kind's own settings.
    #[serde(default)]
    pub options: serde_json::Value,
}

impl ConnectorConfig {
    /// A config for `kind` with `options` serialized to JSON.
    pub fn new(kind: &str, options: impl Serialize) -> Result<Self> {
        let options =
            serde_json::to_value(options).map_err(|e| Error::invalid_config_from(kind, e))?;
        Ok(ConnectorConfig {
            kind: kind.to_owned(),
            options,
        })
    }

    /// The options decoded as `T`; a mismatch is [`Error::InvalidInput`].
    pub fn options_as<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.options.clone())
            .map_err(|e| Error::invalid_config_from(&format!("{} connector", self.kind), e))
    }

    /// Builds a connector from this config **as data from elsewhere** (a proxy's, an
    /// event's): its bindings are checked against this process's own configuration
    /// ([`trust`]), and it changes only objects its store minted in a trusted directory.
    /// What this process's own code or user configured is built with
    /// [`build_local`](Self::build_local).
    pub fn build(&self) -> Result<Arc<dyn Connector>> {
        self.build_as(&Provenance::data()?)
    }

    /// Builds a connector from a config this process's own code or user gave: every
    /// setting is taken as given (a Python constructor's arguments, say).
    pub fn build_local(&self) -> Result<Arc<dyn Connector>> {
        self.build_as(&Provenance::Local)
    }

    /// Builds a connector from this config with the builder registered for its kind,
    /// judged as `provenance` says.
    pub fn build_as(&self, provenance: &Provenance) -> Result<Arc<dyn Connector>> {
        let builder = kinds()
            .read()
            .expect("connector registry poisoned")
            .get(self.kind.as_str())
            .copied();
        match builder {
            Some(build) => match provenance.trust() {
                Some(trust) => build(&trust::admit(self, trust)?, provenance),
                None => build(self, provenance),
            },
            None => Err(Error::unknown_connector(&self.kind.clone(), &known_kinds())),
        }
    }
}

/// Builds a connector of one kind from its config. A config from data arrives already
/// through [`trust::admit`] for the built-in kinds; a plug-in kind judges a
/// [`Provenance::Data`] config itself (`docs/THREAT-MODEL.md`).
pub type BuildConnector = fn(&ConnectorConfig, &Provenance) -> Result<Arc<dyn Connector>>;

/// The connector kinds this process builds (a forked child keeps what was registered).
struct Kinds(RwLock<HashMap<String, BuildConnector>>);

fn kinds() -> &'static RwLock<HashMap<String, BuildConnector>> {
    &crate::process::inherited(|| {
        let mut kinds: HashMap<String, BuildConnector> = HashMap::new();
        kinds.insert(LocalConnector::KIND.into(), LocalConnector::build);
        kinds.insert(FileConnector::KIND.into(), FileConnector::build);
        kinds.insert(EndpointConnector::KIND.into(), EndpointConnector::build);
        kinds.insert(GlobusConnector::KIND.into(), GlobusConnector::build);
        kinds.insert(RedisConnector::KIND.into(), RedisConnector::build);
        kinds.insert(MultiConnector::KIND.into(), MultiConnector::build);
        Kinds(RwLock::new(kinds))
    })
    .0
}

/// Registers (or replaces) the builder for connector `kind` in this process.
///
/// A plug-in connector registers itself before any proxy that names it is resolved.
pub fn register_kind(kind: &str, build: BuildConnector) {
    kinds()
        .write()
        .expect("connector registry poisoned")
        .insert(kind.to_owned(), build);
}

/// The connector kinds this process can build, sorted.
pub(crate) fn known_kinds() -> Vec<String> {
    let mut kinds: Vec<String> = kinds()
        .read()
        .expect("connector registry poisoned")
        .keys()
        .cloned()
        .collect();
    kinds.sort();
    kinds
}

/// What a connector can do, where connectors legitimately differ. The conformance
/// suite (`ps_globus::conformance`, feature `conformance`) reads it to know what to expect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Objects outlive every live instance of the connector, so a connector rebuilt from
    /// the config in another process reads them.
    pub outlives_instances: bool,
    /// The longest serialized key this connector hands out.
    pub max_key_len: usize,
    /// `put_file` stages a file without reading it into memory (otherwise the default:
    /// read, then `put`).
    pub put_file: bool,
    /// `resolve_path` gives a local file for every object. Without it, it may still give
    /// one for some (a multi connector's objects in a child that keeps files) and is
    /// [`Error::Unsupported`] for the others.
    pub resolve_path: bool,
    /// Keys can be made before their objects ([`Connector::new_key`], then
    /// [`Connector::set`]): what a future needs.
    pub deferred_keys: bool,
}

impl Capabilities {
    /// A connector whose objects live in this process only, with small keys, and
    /// without local files.
    pub const fn in_memory() -> Self {
        Capabilities {
            outlives_instances: false,
            max_key_len: 200,
            put_file: false,
            resolve_path: false,
            deferred_keys: false,
        }
    }

    /// With `outlives_instances` set.
    pub const fn outliving_instances(mut self) -> Self {
        self.outlives_instances = true;
        self
    }

    /// With `max_key_len` set.
    pub const fn with_max_key_len(mut self, len: usize) -> Self {
        self.max_key_len = len;
        self
    }

    /// With a `put_file` that stages the file without reading it into memory.
    pub const fn with_put_file(mut self) -> Self {
        self.put_file = true;
        self
    }

    /// With one local file per object, which `resolve_path` gives.
    pub const fn with_resolve_path(mut self) -> Self {
        self.resolve_path = true;
        self
    }

    /// With deferred keys (`new_key`, then `set`).
    pub const fn with_deferred_keys(mut self) -> Self {
        self.deferred_keys = true;
        self
    }
}

/// A byte-level object store.
///
/// The required core is `put`, `get`, `exists`, `evict` and `config`; the batch forms
/// have default implementations that a back end overrides when it can do better (one
/// Globus task for many objects, say). Methods take `&self` and are called concurrently.
///
/// Contract, checked for every implementation by the conformance suite in `tests/`:
/// - `put` returns a key no earlier put returned; the bytes are readable by `get`.
/// - `get` of a key whose object is gone returns `Ok(None)`, never an error.
/// - `evict` is idempotent; afterwards `exists` is false and `get` is `None`.
/// - Batch results keep the order of their inputs.
/// - A key of another kind is [`Error::InvalidInput`]; a malformed one [`Error::InvalidInput`].
/// - `config().build()` yields a connector that reads the keys this one wrote.
/// - With [`Capabilities::deferred_keys`]: `get` of a key from `new_key` is `Ok(None)`
///   until it is `set` (then the bytes, verified against the manifest `set` wrote with
///   them), [`ProducerGone`](crate::error::ProducerGone) once it is `abandon`ed, and [`Error::NotFound`] once
///   it is evicted (a tombstone: its readers fail instead of waiting). It is settled
///   once: a second `set` or `abandon` is [`AlreadySet`](crate::error::AlreadySet) and changes nothing.
#[async_trait]
pub trait Connector: Send + Sync + fmt::Debug {
    /// The kind name that tags this connector's keys and configs.
    fn kind(&self) -> &'static str;

    /// A serializable config that rebuilds an equivalent connector anywhere.
    fn config(&self) -> ConnectorConfig;

    /// What this connector can do (see [`Capabilities`]).
    fn capabilities(&self) -> Capabilities {
        Capabilities::in_memory()
    }

    /// Stores `data` as a new object and returns its key.
    async fn put(&self, data: &[u8], options: &PutOptions) -> Result<Key>;

    /// The object's bytes, or `None` if it does not exist.
    async fn get(&self, key: &Key) -> Result<Option<Bytes>>;

    /// Whether the object exists.
    async fn exists(&self, key: &Key) -> Result<bool>;

    /// Removes the object; removing a missing one succeeds.
    async fn evict(&self, key: &Key) -> Result<()>;

    /// Stores many objects; keys come back in the order of `objects`.
    async fn put_batch(&self, objects: &[&[u8]], options: &PutOptions) -> Result<Vec<Key>> {
        let mut keys = Vec::with_capacity(objects.len());
        for data in objects {
            keys.push(self.put(data, options).await?);
        }
        Ok(keys)
    }

    /// Gets many objects; results come back in the order of `keys`.
    async fn get_batch(&self, keys: &[Key]) -> Result<Vec<Option<Bytes>>> {
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            values.push(self.get(key).await?);
        }
        Ok(values)
    }

    /// Stores the file at `path` as an object. Connectors that keep objects as files
    /// stage it without reading it into memory; this default reads it and `put`s it.
    async fn put_file(&self, path: &std::path::Path, options: &PutOptions) -> Result<Key> {
        let data = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
        self.put(&data, options).await
    }

    /// The local file that holds `key`'s bytes at this site, verified where the
    /// connector can (waiting for it where it is on its way). Connectors without one
    /// file per object refuse.
    async fn resolve_path(&self, key: &Key) -> Result<std::path::PathBuf> {
        key.check_kind(self.kind())?;
        Err(Error::unsupported(
            "resolve_path",
            self.kind(),
            "this connector keeps no local file per object: read it with get",
        ))
    }

    /// A key for an object that will be written later with [`set`](Self::set), possibly
    /// by another process: a future's (see [`Capabilities::deferred_keys`]). By default a
    /// bare [`Key::deferred`] of this kind where the capabilities say so.
    fn new_key(&self, options: &PutOptions) -> Result<Key> {
        let _ = options;
        if !self.capabilities().deferred_keys {
            return Err(no_deferred_keys(self.kind()));
        }
        Ok(Key::deferred(self.kind(), Default::default()))
    }

    /// Writes the outcome of a key from [`new_key`](Self::new_key): the object with the
    /// manifest (size and sha256) its readers verify it from, or the reason none will
    /// come. Connectors with deferred keys implement this; callers use
    /// [`set`](Self::set) and [`abandon`](Self::abandon). Implementations check the key
    /// first ([`Key::check_deferred`]).
    async fn settle(&self, key: &Key, settlement: Settlement<'_>) -> Result<()> {
        let _ = (key, settlement);
        Err(no_deferred_keys(self.kind()))
    }

    /// Writes the object of a key from [`new_key`](Self::new_key).
    async fn set(&self, key: &Key, data: &[u8]) -> Result<()> {
        self.settle(key, Settlement::Value(data)).await
    }

    /// Records that the object of a key from [`new_key`](Self::new_key) will never be
    /// written, and why: its readers fail with [`ProducerGone`](crate::error::ProducerGone) instead of waiting.
    async fn abandon(&self, key: &Key, reason: &str) -> Result<()> {
        self.settle(key, Settlement::Abandoned(reason)).await
    }

    /// Where this connector's objects can be evicted from (recorded with a lease): by
    /// default this process for a connector whose objects do not outlive it, else
    /// anywhere. A back end on one host's disk or at one Globus site says so.
    fn reach(&self) -> Reach {
        if self.capabilities().outlives_instances {
            Reach::anywhere()
        } else {
            Reach::this_process()
        }
    }

    /// Releases resources. Stored objects stay: closing never deletes data.
    async fn close(&self) -> Result<()> {
        Ok(())
    }

    /// Advice added to "not found" errors, e.g. where this connector's objects are visible.
    fn not_found_hint(&self) -> &'static str {
        ""
    }
}
