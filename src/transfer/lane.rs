//! The HTTPS lane: small objects PUT straight to each destination collection that serves
//! HTTPS, in tens of milliseconds, with Transfer behind them for what fails.
//!
//! An item of the lane is enqueued with [`ItemSpec::via_https`](super::ItemSpec::via_https)
//! first: committed in the `HTTPS` state, which the manager never submits (`put` returns
//! then, as fast as without the lane). Then [`HttpsLane::send`] PUTs its bytes in the
//! background, at most [`CONCURRENCY`] at once: a 2xx makes it
//! `SUCCEEDED`; a 5xx, a cut connection or a timeout (after one quick retry) hands it to
//! Transfer, once, in its batch, whose label the caller already handed out (see the
//! manager's `lane.rs`). A process that dies meanwhile leaves it `HTTPS`: the next
//! manager on the database moves it to Transfer.
//!
//! - **Where the bytes go** comes from the destination's endpoint document
//!   (`https_server`), looked up once per collection and process, never from data.
//! - **Credentials** per collection come from the caller ([`HttpsCredentials`]): a login
//!   without them is a typed [`ConsentRequired`](crate::error::ConsentRequired) from
//!   [`HttpsLane::route`], before anything is enqueued, never a silent fallback. A
//!   token the collection refuses later (401) hands that object to Transfer, says so,
//!   and makes the next `route` to the collection that same error.
//! - **Requests** do not draw on the Transfer request budget: they go to the
//!   collection's own server, and HTTPS.md finds no documented limit there.
//! - **Integrity**: HTTPS has no checksums and a PUT is not atomic; readers verify size
//!   and sha256 as for Transfer, so a cut-short file is never read as the object.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OnceCell, Semaphore};
use uuid::Uuid;

use super::{CollectionHttps, RetryConfig, TransferManager};
use crate::auth::Authorizer;
use crate::error::{ConsentRequired, Error, ErrorKind, GlobusApiError, GlobusCode, Result};

/// The credentials for a collection's HTTPS, given its id and the scopes its endpoint
/// document asks for ([`crate::auth::https_authorizer`], most often).
pub type HttpsCredentials =
    Arc<dyn Fn(&Uuid, &[String]) -> Result<Arc<dyn Authorizer>> + Send + Sync>;

/// PUTs in flight at once, by default: a burst of small puts waits on the round trip
/// of each, not on bandwidth, so many connections pay (measured on the emulator at 20 ms
/// per request, 100 × 1 KiB: p50 resolve 244 ms with 8, 121 ms with 16, 70-76 ms with
/// 32). HTTPS.md knows no per-client connection limit at a GCS server; this is a guess.
const CONCURRENCY: usize = 32;

/// How long one PUT may take before its object goes by Transfer, by default.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where an item's bytes come from.
#[derive(Clone, Debug)]
pub enum LaneBody {
    /// Already in memory (a `put`'s bytes).
    Bytes(Bytes),
    /// A local file, read when its turn comes.
    File(PathBuf),
}

/// A directory of a collection, made once (whoever asks first makes it).
type Made = Arc<OnceCell<()>>;

/// How a destination collection is reached.
#[derive(Clone, Debug)]
enum Route {
    /// It serves no HTTPS: Transfer.
    Transfer,
    Https(Arc<CollectionHttps>),
}

/// Sends items of the HTTPS lane for one manager. Cheap to clone.
#[derive(Clone)]
pub struct HttpsLane {
    inner: Arc<Inner>,
}

struct Inner {
    manager: TransferManager,
    credentials: HttpsCredentials,
    routes: Mutex<HashMap<Uuid, Arc<OnceCell<Route>>>>,
    /// Directories known to exist on a collection (made, or found, through Transfer).
    made: Mutex<HashMap<(Uuid, String), Made>>,
    /// Collections whose server refused our token: the error, until a new lane.
    refused: Mutex<HashMap<Uuid, ConsentRequired>>,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for HttpsLane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsLane").finish_non_exhaustive()
    }
}

impl HttpsLane {
    /// A lane for `manager`'s items, with `credentials` per collection.
    pub fn new(manager: TransferManager, credentials: HttpsCredentials) -> Self {
        HttpsLane {
            inner: Arc::new(Inner {
                manager,
                credentials,
                routes: Mutex::default(),
                made: Mutex::default(),
                refused: Mutex::default(),
                permits: Arc::new(Semaphore::new(CONCURRENCY)),
            }),
        }
    }

    /// How `collection` is reached: `Some` with its HTTPS, or `None` when it serves none
    /// (its objects go by Transfer). Looked up once per lane (one Transfer request).
    /// Credentials missing for it are a typed
    /// [`ConsentRequired`](crate::error::ConsentRequired) naming its scopes; a lookup
    /// that fails for a while (an outage) is `None` this time, and asked again next.
    pub async fn route(&self, collection: &Uuid) -> Result<Option<Arc<CollectionHttps>>> {
        if let Some(refused) = self.refused(collection) {
            return Err(refused.into());
        }
        let cell = Arc::clone(
            self.inner
                .routes
                .lock()
                .expect("lane routes poisoned")
                .entry(*collection)
                .or_default(),
        );
        let route = cell
            .get_or_try_init(|| async {
                let client = self.inner.manager.client();
                let endpoint = client.endpoint(&collection.to_string()).await?;
                let Some(origin) = endpoint.https_origin() else {
                    return Ok(Route::Transfer);
                };
                let scopes = CollectionHttps::scopes(collection, &endpoint);
                let auth = (self.inner.credentials)(collection, &scopes)?;
                // One quick retry, then Transfer: the lane is for what is fast.
                let retry = RetryConfig {
                    max_retries: 1,
                    base: Duration::from_millis(100),
                    max_sleep: Duration::from_millis(500),
                    ..RetryConfig::default()
                };
                let https = CollectionHttps::new(*collection, origin, auth)?
                    .with_retry(retry)
                    .with_timeout(REQUEST_TIMEOUT);
                Ok::<_, Error>(Route::Https(Arc::new(https)))
            })
            .await;
        match route {
            Ok(Route::Transfer) => Ok(None),
            Ok(Route::Https(https)) => Ok(Some(Arc::clone(https))),
            Err(e) if e.is_transient() => {
                tracing::debug!("looking up collection {collection} for HTTPS: {e}");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// PUTs `body` to `path` on `https`'s collection in the background, for the lane
    /// item `item` (enqueued with [`ItemSpec::via_https`](super::ItemSpec::via_https)),
    /// and reports its fate to the manager.
    pub fn send(&self, item: i64, https: Arc<CollectionHttps>, path: String, body: LaneBody) {
        let lane = self.clone();
        self.spawn(item, https, path, |https, path| async move {
            lane.put(&https, &path, body).await
        });
    }

    /// Fetches `path` from `https`'s collection (`size` bytes) into the local file `to`
    /// in the background, for the lane item `item` whose destination is that local file
    /// (a stage-in): ranged GETs, their size checked, written to a temporary file beside
    /// `to` (its directory made) and renamed into place. Its fate goes to the manager as
    /// a PUT's does.
    pub fn fetch(
        &self,
        item: i64,
        https: Arc<CollectionHttps>,
        path: String,
        to: PathBuf,
        size: u64,
    ) {
        self.spawn(item, https, path, move |https, path| async move {
            get_into(&https, &path, to, size).await
        });
    }

    /// Runs `request` for item `item` on the library runtime in its turn (at most
    /// [`CONCURRENCY`] at once), then reports its outcome.
    fn spawn<F, Fut>(&self, item: i64, https: Arc<CollectionHttps>, path: String, request: F)
    where
        F: FnOnce(Arc<CollectionHttps>, String) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<()>> + Send,
    {
        let lane = self.clone();
        crate::runtime::handle().spawn(async move {
            let outcome = match Arc::clone(&lane.inner.permits).acquire_owned().await {
                Ok(_permit) => request(Arc::clone(&https), path.clone()).await,
                Err(_) => Err(Error::background("the HTTPS lane", None)),
            };
            lane.report(item, &https, &path, outcome).await;
        });
    }

    /// One PUT.
    async fn put(&self, https: &CollectionHttps, path: &str, body: LaneBody) -> Result<()> {
        let bytes = match body {
            LaneBody::Bytes(bytes) => bytes,
            LaneBody::File(file) => tokio::fs::read(&file)
                .await
                .map_err(|e| Error::io("read", &file, e))?
                .into(),
        };
        if let Some((dir, _)) = path.rsplit_once('/') {
            // HTTPS makes no directories (the emulator says 404, HTTPS.md does not know):
            // a store's first object at a collection has its directory made by Transfer.
            self.ensure_dir(https.collection(), dir).await?;
        }
        https.put(path, bytes).await
    }

    /// Makes directory `dir` of `collection` through Transfer, once per lane (one that
    /// exists is fine; a missing parent is made first).
    async fn ensure_dir(&self, collection: &Uuid, dir: &str) -> Result<()> {
        if dir.is_empty() || dir == "/" {
            return Ok(());
        }
        let cell = Arc::clone(
            self.inner
                .made
                .lock()
                .expect("lane dirs poisoned")
                .entry((*collection, dir.to_owned()))
                .or_default(),
        );
        cell.get_or_try_init(|| async {
            let client = self.inner.manager.client();
            let id = collection.to_string();
            match client.mkdir(&id, dir).await {
                Err(e) if parent_missing(&e) => {
                    let parent = dir.rsplit_once('/').map_or("", |(p, _)| p);
                    Box::pin(self.ensure_dir(collection, parent)).await?;
                    match client.mkdir(&id, dir).await {
                        Err(e) if !exists(&e) => Err(e),
                        _ => Ok(()),
                    }
                }
                Err(e) if !exists(&e) => Err(e),
                _ => Ok(()),
            }
        })
        .await
        .map(|_| ())
    }

    /// Tells the manager how item `item`'s PUT ended. A token the collection refused is
    /// remembered: the next route there is that error, not another fallback.
    async fn report(&self, item: i64, https: &CollectionHttps, path: &str, outcome: Result<()>) {
        let recorded = match outcome {
            Ok(()) => self.inner.manager.https_delivered(item).await,
            Err(e) => {
                let collection = *https.collection();
                if let Some(consent) = e.downcast_ref::<ConsentRequired>() {
                    tracing::warn!(
                        "collection {collection} refused our HTTPS token ({e}); {path} goes by \
                         Transfer, and further puts there fail until a login grants {}",
                        consent.required_scopes.join(" ")
                    );
                    self.inner
                        .refused
                        .lock()
                        .expect("lane refusals poisoned")
                        .insert(collection, consent.clone());
                } else {
                    tracing::info!("HTTPS PUT of {path} failed, it goes by Transfer: {e}");
                }
                self.inner.manager.https_failed(item, &e.to_string()).await
            }
        };
        if let Err(e) = recorded {
            // The item stays `HTTPS`: the next manager on the database (or this one as
            // the process exits) moves it to Transfer.
            tracing::warn!("recording the fate of HTTPS item {item}: {e}");
        }
    }

    fn refused(&self, collection: &Uuid) -> Option<ConsentRequired> {
        self.inner
            .refused
            .lock()
            .expect("lane refusals poisoned")
            .get(collection)
            .cloned()
    }
}

/// One fetch (see [`HttpsLane::fetch`]).
async fn get_into(https: &CollectionHttps, path: &str, to: PathBuf, size: u64) -> Result<()> {
    let bytes = https.get_sized(path, size).await?;
    if bytes.len() as u64 != size {
        return Err(Error::new(
            ErrorKind::Integrity,
            format!(
                "{path} came {} bytes long over HTTPS, not {size}",
                bytes.len()
            ),
        ));
    }
    crate::runtime::blocking(move || {
        if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        }
        crate::fsutil::write_atomic(&to, &bytes, false)
    })
    .await?
}

/// Whether `error` is Transfer's answer to a `mkdir` whose parent is missing.
fn parent_missing(error: &Error) -> bool {
    error
        .downcast_ref::<GlobusApiError>()
        .is_some_and(|e| e.code == GlobusCode::NotFound)
}

/// Whether `error` is Transfer's answer to a `mkdir` of a directory that exists.
fn exists(error: &Error) -> bool {
    error
        .downcast_ref::<GlobusApiError>()
        .is_some_and(|e| matches!(&e.code, GlobusCode::External(code) if code.ends_with(".Exists")))
}
