//! `multi`: several named child connectors behind one, each put routed by policy.
//!
//! The typical store sends small objects to Redis (milliseconds) and large ones through
//! Globus (seconds, but any size): two children, a size [`Policy`] each.
//!
//! **Routing.** A put goes to the highest-priority child whose policy accepts its size,
//! its tags ([`PutOptions::tags`]) and the current site; a put that no child accepts is
//! [`NoRoute`](crate::error::NoRoute), listing each child's reason. A batch is split by child, and each
//! child gets one batch (one Globus task for all the large objects of a batch, one `MSET`
//! for the small ones): ProxyStore's `MultiConnector` puts a batch one object at a time.
//!
//! **Keys** record the child: `{"kind":"multi","id":…,"meta":{"child":NAME,"key":CHILD
//! KEY}}`, so `get`, `exists`, `evict` and `resolve_path` go straight to it.
//!
//! **Config** nests every child's config and policy, so a proxy from a multi store
//! rebuilds the whole connector anywhere. Children are built on first use: a child that
//! cannot be built in a process (a Redis password variable that only its site sets) does
//! not stop the others there. ProxyStore instead marks children whose host pattern does
//! not match "dormant" and refuses to read through them; here a site policy limits where
//! puts go, and reads work wherever the child is reachable.

mod policy;

pub use policy::Policy;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::future::try_join_all;
use serde::{Deserialize, Serialize};

use super::{Capabilities, Connector, ConnectorConfig, Key, Provenance, PutOptions, Settlement};
use crate::error::{Error, NoRoute, Result};

/// One child of a [`MultiConfig`]: a name (recorded in keys), a connector, a policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ChildConfig {
    /// The child's name: 1 to 64 characters of `A-Z a-z 0-9 _ -`, unique in its parent.
    pub name: String,
    /// The child connector's own config.
    pub connector: ConnectorConfig,
    /// Which puts it accepts (default: every put).
    #[serde(default)]
    pub policy: Policy,
}

/// A [`MultiConnector`]'s config: its children, in order.
///
/// ```
/// use ps_globus::connector::{Connector, LocalConnector, MultiConfig, Policy};
/// let config: MultiConfig = serde_json::from_value(serde_json::json!({"children": [
///     {"name": "small", "connector": LocalConnector::new().config(),
///      "policy": {"max_size": 1048576, "priority": 1}},
///     {"name": "large", "connector": LocalConnector::new().config()},
/// ]}))?;
/// assert_eq!(config.children[0].policy.max_size, Some(1 << 20));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MultiConfig {
    /// The children. Order breaks ties of priority.
    pub children: Vec<ChildConfig>,
}

/// A child, built on first use.
#[derive(Debug)]
struct Child {
    config: ChildConfig,
    built: Mutex<Option<Arc<dyn Connector>>>,
}

impl Child {
    fn connector(&self, provenance: &Provenance) -> Result<Arc<dyn Connector>> {
        let mut built = self.built.lock().expect("multi child poisoned");
        if let Some(connector) = built.as_ref() {
            return Ok(Arc::clone(connector));
        }
        let connector = self.config.connector.build_as(provenance)?;
        *built = Some(Arc::clone(&connector));
        Ok(connector)
    }

    fn name(&self) -> &str {
        &self.config.name
    }
}

/// What a multi key carries besides its id (the child's object id).
#[derive(Serialize, Deserialize)]
struct MultiMeta {
    child: String,
    key: Key,
}

/// The current site as found (none: unknown), or why `PS_GLOBUS_SITE` was refused and
/// the sites known.
type FoundSite = std::result::Result<Option<String>, (String, Vec<String>)>;

/// A connector that routes each put to one of its named children by policy.
///
/// ```
/// use ps_globus::connector::{Connector, LocalConnector, MultiConnector, Policy, PutOptions};
/// # ps_globus::block_on(async {
/// let small = Policy::default().max_size(1024).priority(1);
/// let multi = MultiConnector::new([
///     ("small", LocalConnector::new().config(), small),
///     ("large", LocalConnector::new().config(), Policy::default()),
/// ])?;
/// let key = multi.put(&[0u8; 4096], &PutOptions::default()).await?;
/// assert_eq!(MultiConnector::child_of(&key)?.as_deref(), Some("large"));
/// # Ok::<(), ps_globus::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct MultiConnector {
    children: Vec<Child>,
    /// The current site: set explicitly, or found on first need (or why `PS_GLOBUS_SITE`
    /// was refused, and the sites known).
    site: OnceLock<FoundSite>,
    /// Where the config came from: its children are built the same way.
    provenance: Provenance,
}

impl MultiConnector {
    /// The kind name in keys and configs.
    pub const KIND: &'static str = "multi";

    /// A connector of the children `(name, config, policy)`, in this order.
    pub fn new<N: Into<String>>(
        children: impl IntoIterator<Item = (N, ConnectorConfig, Policy)>,
    ) -> Result<Self> {
        let children = children
            .into_iter()
            .map(|(name, connector, policy)| ChildConfig {
                name: name.into(),
                connector,
                policy,
            })
            .collect();
        Self::from_config(MultiConfig { children })
    }

    /// A connector of children already built (a Globus connector with its own
    /// authorizer, say), `(name, connector, policy)` in this order. Its config holds
    /// their configs, from which another process builds its own.
    pub fn from_connectors<N: Into<String>>(
        children: impl IntoIterator<Item = (N, Arc<dyn Connector>, Policy)>,
    ) -> Result<Self> {
        let (configs, built): (Vec<_>, Vec<_>) = children
            .into_iter()
            .map(|(name, connector, policy)| ((name, connector.config(), policy), connector))
            .unzip();
        let multi = Self::new(configs)?;
        for (child, connector) in multi.children.iter().zip(built) {
            *child.built.lock().expect("multi child poisoned") = Some(connector);
        }
        Ok(multi)
    }

    /// A connector of the children `config` lists; none is built yet.
    pub fn from_config(config: MultiConfig) -> Result<Self> {
        let invalid = |message: String| Error::invalid_config("multi connector", message);
        if config.children.is_empty() {
            return Err(invalid("it has no children".into()));
        }
        for (n, child) in config.children.iter().enumerate() {
            let name = &child.name;
            if !super::is_plain_name(name, 64) {
                return Err(invalid(format!(
                    "child name {name:?} is not 1-64 characters of A-Z a-z 0-9 _ -"
                )));
            }
            if config.children[..n].iter().any(|c| &c.name == name) {
                return Err(invalid(format!("two children are named {name:?}")));
            }
            if let Some(problem) = child.policy.problem() {
                return Err(invalid(format!("child {name:?}: {problem}")));
            }
        }
        Ok(MultiConnector {
            children: config
                .children
                .into_iter()
                .map(|config| Child {
                    config,
                    built: Mutex::new(None),
                })
                .collect(),
            site: OnceLock::new(),
            provenance: Provenance::Local,
        })
    }

    /// The child at index `n`, built (with this connector's provenance) if it was not.
    fn child_connector(&self, n: usize) -> Result<Arc<dyn Connector>> {
        self.children[n].connector(&self.provenance)
    }

    /// This connector with the current site fixed to `site` (instead of
    /// `PS_GLOBUS_SITE` or the configuration's host regexes).
    pub fn with_site(self, site: impl Into<String>) -> Self {
        let fixed = OnceLock::new();
        let _ = fixed.set(Ok(Some(site.into())));
        MultiConnector {
            site: fixed,
            ..self
        }
    }

    /// The name of the child a multi key's object is in (`None` for a key that names no
    /// object, as a key of no stored object may).
    pub fn child_of(key: &Key) -> Result<Option<String>> {
        Ok(Self::child_key(key)?.map(|(child, _)| child))
    }

    /// The child a multi key's object is in, and the child's own key for it (`None` for
    /// a key that names no object).
    pub fn child_key(key: &Key) -> Result<Option<(String, Key)>> {
        key.check_kind(Self::KIND)?;
        Ok(Self::meta(key)?.map(|meta| (meta.child, meta.key)))
    }

    /// The child connector named `name`, built if it was not yet.
    pub fn child(&self, name: &str) -> Result<Arc<dyn Connector>> {
        self.child_connector(self.find(name)?)
    }

    pub(super) fn build(
        config: &ConnectorConfig,
        provenance: &Provenance,
    ) -> Result<Arc<dyn Connector>> {
        Ok(Arc::new(MultiConnector {
            provenance: provenance.clone(),
            ..Self::from_config(config.options_as()?)?
        }))
    }

    /// The index of the child named `name`.
    fn find(&self, name: &str) -> Result<usize> {
        self.children
            .iter()
            .position(|c| c.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.children.iter().map(Child::name).collect();
                Error::malformed(format!(
                    "the key names child {name:?}, which this multi connector does not have \
                     (its children: {})",
                    names.join(", ")
                ))
            })
    }

    fn meta(key: &Key) -> Result<Option<MultiMeta>> {
        if key.meta().is_none() {
            return Ok(None);
        }
        let meta: MultiMeta = key.meta_as()?;
        if meta.key.id() != key.id() {
            return Err(Error::malformed(format!(
                "key {key}: its id differs from its child key's"
            )));
        }
        Ok(Some(meta))
    }

    /// The index of the child holding `key`'s object and the child's own key; `None` for
    /// a key that names no object.
    fn route_key(&self, key: &Key) -> Result<Option<(usize, Key)>> {
        match Self::child_key(key)? {
            Some((child, inner)) => Ok(Some((self.find(&child)?, inner))),
            None => Ok(None),
        }
    }

    /// The connector holding `key`'s object and the child's own key, as `route_key`.
    fn connector_for(&self, key: &Key) -> Result<Option<(Arc<dyn Connector>, Key)>> {
        match self.route_key(key)? {
            Some((n, inner)) => Ok(Some((self.child_connector(n)?, inner))),
            None => Ok(None),
        }
    }

    /// The site this process is at, where a policy needs it. A `PS_GLOBUS_SITE` that
    /// names neither a configured site nor one a policy serves is refused: taken as is,
    /// it would route every put as if this process were nowhere.
    fn current_site(&self) -> Result<Option<&str>> {
        let found = self.site.get_or_init(|| {
            let settings = &crate::connector::globus::settings_default();
            let config = crate::config::Config::load(settings).ok();
            let Some(name) = &settings.site else {
                return Ok(config.and_then(|c| crate::config::current_site(&c.sites, None).ok()));
            };
            let mut known: Vec<String> = config
                .iter()
                .flat_map(|c| c.sites.keys().cloned())
                .chain(
                    self.children
                        .iter()
                        .flat_map(|c| c.config.policy.sites.clone().unwrap_or_default()),
                )
                .collect();
            known.sort();
            known.dedup();
            if known.contains(name) {
                Ok(Some(name.clone()))
            } else {
                Err((
                    format!("PS_GLOBUS_SITE={name} is not a site of this store"),
                    known,
                ))
            }
        });
        match found {
            Ok(site) => Ok(site.as_deref()),
            Err((message, known)) => Err(Error::unknown_site(message.clone(), &known.clone())),
        }
    }

    /// The index of the child a put of `size` bytes with `options` goes to.
    fn route_put(&self, size: u64, options: &PutOptions) -> Result<usize> {
        let needs_site = self
            .children
            .iter()
            .any(|c| c.config.policy.sites.is_some());
        let site = if needs_site {
            self.current_site()?
        } else {
            None
        };
        let mut best: Option<usize> = None;
        let mut refusals = Vec::new();
        for (n, child) in self.children.iter().enumerate() {
            let policy = &child.config.policy;
            match policy.refusal(size, &options.tags, site) {
                Some(why) => refusals.push((child.name().to_owned(), why)),
                None => {
                    let better = best
                        .is_none_or(|b| policy.priority > self.children[b].config.policy.priority);
                    if better {
                        best = Some(n);
                    }
                }
            }
        }
        best.ok_or(Error::from(NoRoute {
            size,
            tags: options.tags.clone(),
            refusals,
        }))
    }

    /// The child a deferred key made with `options` goes to: the one child that
    /// [`route_put`](Self::route_put) picks whatever the object's size (it is unknown
    /// until `set`), if that child has deferred keys. Policies are step functions of the
    /// size, so trying the size at every step of every policy tries them all.
    fn route_deferred(&self, options: &PutOptions) -> Result<usize> {
        let steps = self.children.iter().flat_map(|c| {
            let policy = &c.config.policy;
            [
                Some(policy.min_size),
                policy.max_size.map(|m| m.saturating_add(1)),
            ]
        });
        let mut sizes: Vec<u64> = std::iter::once(0).chain(steps.flatten()).collect();
        sizes.sort_unstable();
        sizes.dedup();
        // The first size says why no child takes the future at all (a site, a tag).
        let mut chosen = Some(self.route_put(0, options)?);
        for size in sizes {
            let n = self.route_put(size, options).ok();
            if n.is_none() || chosen.is_some_and(|c| Some(c) != n) {
                return Err(Error::unsupported(
                    "deferred keys (futures)",
                    Self::KIND,
                    "this store's policies route by size, which a future's object does not \
                     have until it is set: route futures by tags (a child whose policy \
                     requires a tag, and that tag on the future) or by site, to one child",
                ));
            }
            chosen = n;
        }
        let n = chosen.expect("size 0 was tried");
        if !self.child_connector(n)?.capabilities().deferred_keys {
            return Err(Error::unsupported(
                "deferred keys (futures)",
                Self::KIND,
                format!(
                    "futures route to child {:?}, whose connector has none: route them to a \
                     local, file, Globus or Redis child",
                    self.children[n].name()
                ),
            ));
        }
        Ok(n)
    }

    fn wrap(&self, child: usize, key: Key) -> Result<Key> {
        Key::new(Self::KIND, key.id().to_owned())?.with_meta(MultiMeta {
            child: self.children[child].name().to_owned(),
            key,
        })
    }
}

#[async_trait]
impl Connector for MultiConnector {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn config(&self) -> ConnectorConfig {
        let config = MultiConfig {
            children: self.children.iter().map(|c| c.config.clone()).collect(),
        };
        ConnectorConfig::new(Self::KIND, config).expect("a multi config serializes")
    }

    /// What every child can do (a child that cannot be built here counts as able to do
    /// nothing); keys are a child's key plus about 60 bytes.
    fn capabilities(&self) -> Capabilities {
        let mut all = Capabilities::in_memory()
            .outliving_instances()
            .with_put_file()
            .with_resolve_path();
        let mut longest = 0;
        for child in &self.children {
            let caps = child
                .connector(&self.provenance)
                .map_or(Capabilities::in_memory(), |c| c.capabilities());
            all.outlives_instances &= caps.outlives_instances;
            all.put_file &= caps.put_file;
            all.resolve_path &= caps.resolve_path;
            longest = longest.max(caps.max_key_len);
        }
        // Futures without tags have one child to go to: those with tags may too, which
        // `new_key` finds out.
        all.deferred_keys = self.route_deferred(&PutOptions::default()).is_ok();
        all.with_max_key_len(2 * longest + 100)
    }

    /// A deferred key of the one child every size of object routes to (see
    /// [`Connector::new_key`]); a store whose policies split futures by size refuses.
    fn new_key(&self, options: &PutOptions) -> Result<Key> {
        let n = self.route_deferred(options)?;
        let inner = self.child_connector(n)?.new_key(options)?;
        let id = inner.id().to_owned();
        Key::new(Self::KIND, id)?.with_meta(serde_json::json!({
            "deferred": true,
            "child": self.children[n].name(),
            "key": inner,
        }))
    }

    async fn settle(&self, key: &Key, settlement: Settlement<'_>) -> Result<()> {
        if !key.is_deferred() && !self.capabilities().deferred_keys {
            return Err(super::no_deferred_keys(Self::KIND));
        }
        key.check_deferred(Self::KIND)?;
        match self.connector_for(key)? {
            Some((connector, inner)) => connector.settle(&inner, settlement).await,
            None => Err(Error::malformed(format!("key {key} names no child"))),
        }
    }

    /// Every child's reach at once (a child that cannot be built here adds nothing).
    fn reach(&self) -> super::Reach {
        (0..self.children.len())
            .filter_map(|n| self.child_connector(n).ok())
            .fold(super::Reach::anywhere(), |all, child| {
                all.and(child.reach())
            })
    }

    async fn put(&self, data: &[u8], options: &PutOptions) -> Result<Key> {
        let n = self.route_put(data.len() as u64, options)?;
        let key = self.child_connector(n)?.put(data, options).await?;
        self.wrap(n, key)
    }

    async fn get(&self, key: &Key) -> Result<Option<Bytes>> {
        match self.connector_for(key)? {
            Some((connector, inner)) => connector.get(&inner).await,
            None => Ok(None),
        }
    }

    async fn exists(&self, key: &Key) -> Result<bool> {
        match self.connector_for(key)? {
            Some((connector, inner)) => connector.exists(&inner).await,
            None => Ok(false),
        }
    }

    async fn evict(&self, key: &Key) -> Result<()> {
        match self.connector_for(key)? {
            Some((connector, inner)) => connector.evict(&inner).await,
            None => Ok(()),
        }
    }

    async fn put_batch(&self, objects: &[&[u8]], options: &PutOptions) -> Result<Vec<Key>> {
        // One batch per child, all at once; keys scattered back into the input's order.
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); self.children.len()];
        for (at, data) in objects.iter().enumerate() {
            groups[self.route_put(data.len() as u64, options)?].push(at);
        }
        // Every child the batch needs is built before anything is written: a child that
        // cannot be built here fails the batch with nothing stored anywhere.
        let batches: Vec<(usize, &Vec<usize>, Arc<dyn Connector>)> = groups
            .iter()
            .enumerate()
            .filter(|(_, g)| !g.is_empty())
            .map(|(n, group)| Ok((n, group, self.child_connector(n)?)))
            .collect::<Result<_>>()?;
        let puts = batches.into_iter().map(|(n, group, connector)| async move {
            let batch: Vec<&[u8]> = group.iter().map(|&at| objects[at]).collect();
            let keys = connector.put_batch(&batch, options).await;
            (n, connector, keys)
        });
        let done = futures_util::future::join_all(puts).await;
        if done.iter().any(|(_, _, keys)| keys.is_err()) {
            // Leave nothing behind that no caller has a key for.
            let mut failure = None;
            for (_, connector, keys) in done {
                match keys {
                    Ok(keys) => {
                        for key in &keys {
                            let _ = connector.evict(key).await;
                        }
                    }
                    Err(e) => {
                        failure.get_or_insert(e);
                    }
                }
            }
            return Err(failure.expect("a child's batch failed"));
        }
        let mut out: Vec<Option<Key>> = vec![None; objects.len()];
        for (n, _, keys) in done {
            for (&at, key) in groups[n].iter().zip(keys.expect("checked above")) {
                out[at] = Some(self.wrap(n, key)?);
            }
        }
        Ok(out
            .into_iter()
            .map(|k| k.expect("every object was routed"))
            .collect())
    }

    async fn get_batch(&self, keys: &[Key]) -> Result<Vec<Option<Bytes>>> {
        let mut groups: Vec<(Vec<usize>, Vec<Key>)> = vec![Default::default(); self.children.len()];
        for (at, key) in keys.iter().enumerate() {
            if let Some((n, inner)) = self.route_key(key)? {
                let group = &mut groups[n];
                group.0.push(at);
                group.1.push(inner);
            }
        }
        let batches = groups.iter().enumerate().filter(|(_, g)| !g.0.is_empty());
        let gets = batches.map(|(n, (positions, inner))| async move {
            let values = self.child_connector(n)?.get_batch(inner).await?;
            Ok::<_, Error>((positions, values))
        });
        let mut out = vec![None; keys.len()];
        for (positions, values) in try_join_all(gets).await? {
            for (&at, value) in positions.iter().zip(values) {
                out[at] = value;
            }
        }
        Ok(out)
    }

    async fn put_file(&self, path: &Path, options: &PutOptions) -> Result<Key> {
        let size = std::fs::metadata(path)
            .map_err(|e| Error::io("read", path, e))?
            .len();
        let n = self.route_put(size, options)?;
        let key = self.child_connector(n)?.put_file(path, options).await?;
        self.wrap(n, key)
    }

    async fn resolve_path(&self, key: &Key) -> Result<PathBuf> {
        match self.connector_for(key)? {
            Some((connector, inner)) => connector.resolve_path(&inner).await,
            None => Err(Error::not_found("multi", key, "")),
        }
    }

    /// Closes every child built so far; the first error, after trying them all.
    async fn close(&self) -> Result<()> {
        let mut first = Ok(());
        for child in &self.children {
            let built = child.built.lock().expect("multi child poisoned").clone();
            if let Some(connector) = built {
                let closed = connector.close().await;
                if first.is_ok() {
                    first = closed;
                }
            }
        }
        first
    }
}
