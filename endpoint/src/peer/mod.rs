//! Peering: requests from this endpoint to another, over TLS (see [`tls`]) on a direct
//! TCP connection or through a relayed circuit.
//!
//! **Which path.** The relay tells where a peer can be dialled. A request to a peer with
//! no pooled connection dials directly and, if that has not succeeded after
//! [`HEAD_START`] (or has failed sooner), starts a relayed circuit too; the first to
//! finish its TLS handshake and greeting wins. A direct path that lost that race is not
//! tried again for [`DIRECT_RETRY_AFTER`]: the next requests go through the relay at
//! once. So a direct path that connects but never completes its handshake, or whose
//! packets vanish (a firewall that swallows them: the Polaris case), costs the head
//! start once, not the deadline; one that is refused (a peer restarting) is tried again
//! at the next connection.
//!
//! **Deadlines.** Every request has one ([`Peers::timeout`], 30 s by default): it is
//! retried (fresh connection, backoff 0.1 s doubling to 1 s) until then, so a peer that
//! restarts mid-request is reached again; past it, the request fails with
//! [`PeerError::Unreachable`] naming the peer. Nothing waits for ever.
//!
//! **Answering.** Connections from peers (direct or relayed) are served by
//! [`Peers::serve_connection`]: TLS, the caller's `hello`, its certificate checked
//! against the relay's word, then requests run on this endpoint's own storage.

pub mod tls;
pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use uuid::Uuid;

use crate::relay::client::{PeerInfo, RelayClient, RelayError};
use crate::relay::transport::Stream;
use crate::storage::{Storage, StorageError, Stored};
use wire::{Header, read_frame, write_frame};

/// How long a direct dial runs alone before a relayed circuit is started beside it.
pub const HEAD_START: Duration = Duration::from_millis(750);

/// How long a failed direct path is skipped.
pub const DIRECT_RETRY_AFTER: Duration = Duration::from_secs(300);

/// How long a relay's answer about a peer is reused.
const LOOKUP_TTL: Duration = Duration::from_secs(30);

/// How long an incoming connection has for its handshake and greeting.
const GREETING: Duration = Duration::from_secs(10);

/// Idle connections kept per peer.
const POOL_PER_PEER: usize = 8;

/// One operation on an object.
#[derive(Clone, Debug)]
pub enum Op {
    /// Its bytes.
    Get,
    /// Store these bytes.
    Set(Bytes),
    /// Whether it exists.
    Exists,
    /// Remove it.
    Evict,
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Set(_) => "set",
            Op::Exists => "exists",
            Op::Evict => "evict",
        }
    }
}

/// An operation's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `get`: the bytes, if stored.
    Data(Option<Bytes>),
    /// `exists`.
    Exists(bool),
    /// `set`, `evict`.
    Done,
}

/// Why a request to a peer failed. Displays as ProxyStore's `Request to peer X failed: …`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// No path to the peer worked within the deadline.
    #[error("Request to peer {peer} failed: {reason}")]
    Unreachable {
        /// The peer.
        peer: Uuid,
        /// Why.
        reason: String,
    },
    /// The peer answered with an error.
    #[error("Request to peer {peer} failed: {message}")]
    Remote {
        /// The peer.
        peer: Uuid,
        /// Its message.
        message: String,
    },
}

impl PeerError {
    /// An unreachable peer.
    pub fn unreachable(peer: Uuid, reason: impl Into<String>) -> Self {
        PeerError::Unreachable {
            peer,
            reason: reason.into(),
        }
    }
}

/// Runs `op` on this endpoint's own storage.
pub async fn run_local(storage: &Storage, key: &str, op: Op) -> Result<Answer, StorageError> {
    Ok(match op {
        Op::Get => Answer::Data(storage.get(key).await?),
        Op::Set(data) => {
            storage.set(key, data).await?;
            Answer::Done
        }
        Op::Exists => Answer::Exists(storage.exists(key).await?),
        Op::Evict => {
            storage.evict(key).await?;
            Answer::Done
        }
    })
}

type Connection = tokio_rustls::client::TlsStream<Stream>;

/// How the connections to peers were made, for `endpoint check` and the tests.
#[derive(Debug, Default)]
pub struct PathCounts {
    /// Direct connections made.
    pub direct: AtomicU64,
    /// Relayed circuits made.
    pub relayed: AtomicU64,
}

/// This endpoint's peers (see the module docs).
pub struct Peers {
    uuid: Uuid,
    identity: tls::Identity,
    relay: RelayClient,
    storage: Storage,
    timeout: Duration,
    pool: Mutex<HashMap<Uuid, Vec<Connection>>>,
    lookups: Mutex<HashMap<Uuid, (PeerInfo, Instant)>>,
    direct_failed: Mutex<HashMap<Uuid, Instant>>,
    /// How connections were made.
    pub paths: PathCounts,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("uuid", &self.uuid)
            .field("relay", &self.relay)
            .finish_non_exhaustive()
    }
}

impl Peers {
    /// Peering for endpoint `uuid`.
    pub fn new(
        uuid: Uuid,
        identity: tls::Identity,
        relay: RelayClient,
        storage: Storage,
        timeout: Duration,
    ) -> Self {
        Peers {
            uuid,
            identity,
            relay,
            storage,
            timeout,
            pool: Mutex::default(),
            lookups: Mutex::default(),
            direct_failed: Mutex::default(),
            paths: PathCounts::default(),
        }
    }

    /// The deadline of one request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The relay connection.
    pub fn relay(&self) -> &RelayClient {
        &self.relay
    }

    /// Runs `op` on `key` at `peer`, within the deadline.
    pub async fn request(&self, peer: Uuid, key: String, op: Op) -> Result<Answer, PeerError> {
        let deadline = Instant::now() + self.timeout;
        let mut delay = Duration::from_millis(100);
        // What a failed attempt said, not merely that time ran out: the error's reason.
        let mut telling: Option<String> = None;
        loop {
            let pooled = self.take_pooled(peer);
            let fresh = pooled.is_none();
            let attempt = async {
                let connection = match pooled {
                    Some(connection) => connection,
                    None => self.dial(peer, deadline).await?,
                };
                exchange(connection, &key, &op, self.storage.max_object_size()).await
            };
            let outcome = match tokio::time::timeout_at(deadline, attempt).await {
                Ok(outcome) => outcome,
                Err(_) => Err(Failure::Path(match telling.take() {
                    Some(reason) => reason,
                    None => "no answer".to_owned(),
                })),
            };
            let problem = match outcome {
                Ok((connection, answer)) => {
                    self.give_back(peer, connection);
                    return Ok(answer);
                }
                Err(Failure::Remote(message)) => return Err(PeerError::Remote { peer, message }),
                Err(Failure::Forbidden(reason)) => {
                    return Err(PeerError::unreachable(peer, reason));
                }
                Err(Failure::Path(problem)) => problem,
            };
            tracing::debug!(%peer, op = op.name(), "peer request failed: {problem}");
            telling = Some(problem.clone());
            if !fresh {
                // A pooled connection the peer had closed: try a fresh one at once.
                continue;
            }
            self.lookups.lock().expect("peers lock").remove(&peer);
            if Instant::now() + delay >= deadline {
                return Err(PeerError::unreachable(
                    peer,
                    format!("{problem} (gave up after {} s)", self.timeout.as_secs_f64()),
                ));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    fn take_pooled(&self, peer: Uuid) -> Option<Connection> {
        self.pool.lock().expect("peers lock").get_mut(&peer)?.pop()
    }

    fn give_back(&self, peer: Uuid, connection: Connection) {
        let mut pool = self.pool.lock().expect("peers lock");
        let idle = pool.entry(peer).or_default();
        if idle.len() < POOL_PER_PEER {
            idle.push(connection);
        }
    }

    async fn lookup(&self, peer: Uuid, deadline: Instant) -> Result<PeerInfo, Failure> {
        if let Some((info, at)) = self.lookups.lock().expect("peers lock").get(&peer)
            && at.elapsed() < LOOKUP_TTL
        {
            return Ok(info.clone());
        }
        let info = self
            .relay
            .lookup(peer, deadline)
            .await
            .map_err(|e| match e {
                RelayError::Forbidden(reason) => Failure::Forbidden(reason),
                other => Failure::Path(other.to_string()),
            })?;
        self.lookups
            .lock()
            .expect("peers lock")
            .insert(peer, (info.clone(), Instant::now()));
        Ok(info)
    }

    /// A greeted TLS connection to `peer`: direct, relayed, or the first of both.
    async fn dial(&self, peer: Uuid, deadline: Instant) -> Result<Connection, Failure> {
        let info = self.lookup(peer, deadline).await?;
        let config = self
            .identity
            .client_config(&info.fingerprint)
            .map_err(|e| Failure::Path(format!("TLS: {e}")))?;
        let connector = TlsConnector::from(Arc::new(config));
        let skip_direct = self
            .direct_failed
            .lock()
            .expect("peers lock")
            .get(&peer)
            .is_some_and(|at| at.elapsed() < DIRECT_RETRY_AFTER)
            || info.addresses.is_empty();

        let direct = async {
            if skip_direct {
                return Err("skipped (failed recently)".to_owned());
            }
            let mut problems = Vec::new();
            for address in &info.addresses {
                match TcpStream::connect(address).await {
                    Ok(stream) => match self.greet(&connector, direct(stream)).await {
                        Ok(connection) => return Ok(connection),
                        Err(e) => problems.push(format!("{address}: {e}")),
                    },
                    Err(e) => problems.push(format!("{address}: {e}")),
                }
            }
            Err(problems.join("; "))
        };
        // The relay is tried after the head start, or at once when the direct path has
        // already failed (refused, say: a peer restarting).
        let direct_gave_up = tokio::sync::Notify::new();
        let relayed = async {
            if !skip_direct {
                tokio::select! {
                    () = tokio::time::sleep(HEAD_START) => {}
                    () = direct_gave_up.notified() => {}
                }
            }
            let stream = self
                .relay
                .circuit(peer, deadline)
                .await
                .map_err(|e| e.to_string())?;
            self.greet(&connector, stream).await
        };
        tokio::pin!(direct, relayed);
        let (mut direct_done, mut relayed_done) = (false, false);
        let mut problems = Vec::new();
        loop {
            tokio::select! {
                outcome = &mut direct, if !direct_done => {
                    direct_done = true;
                    match outcome {
                        Ok(connection) => {
                            self.paths.direct.fetch_add(1, Ordering::Relaxed);
                            self.direct_failed.lock().expect("peers lock").remove(&peer);
                            return Ok(connection);
                        }
                        Err(problem) => {
                            // Failed fast (refused, or a certificate the relay no longer
                            // vouches for): not a path to skip, but no reason to wait.
                            direct_gave_up.notify_one();
                            problems.push(format!("direct: {problem}"));
                        }
                    }
                }
                outcome = &mut relayed, if !relayed_done => {
                    relayed_done = true;
                    match outcome {
                        Ok(connection) => {
                            self.paths.relayed.fetch_add(1, Ordering::Relaxed);
                            if !direct_done && !skip_direct {
                                // The direct path lost the race to a relay (its packets
                                // vanish somewhere): skip it for a while.
                                self.direct_failed.lock().expect("peers lock").insert(peer, Instant::now());
                            }
                            return Ok(connection);
                        }
                        Err(problem) => problems.push(format!("relayed: {problem}")),
                    }
                }
                else => return Err(Failure::Path(problems.join("; "))),
            }
        }
    }

    /// TLS over `stream`, then our `hello` and the peer's `welcome`.
    async fn greet(&self, connector: &TlsConnector, stream: Stream) -> Result<Connection, String> {
        let mut connection = connector
            .connect(tls::server_name(), stream)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let mut hello = Header::new("hello");
        hello.from = Some(self.uuid);
        write_frame(&mut connection, hello, None, None)
            .await
            .map_err(|e| format!("greeting: {e}"))?;
        match read_frame(&mut connection, 0).await {
            Ok(Some((header, _))) if header.kind == "welcome" => Ok(connection),
            Ok(Some((header, _))) => Err(header.message.unwrap_or_else(|| "refused".into())),
            Ok(None) => Err("the peer closed the connection at the greeting".into()),
            Err(e) => Err(format!("greeting: {e}")),
        }
    }

    /// Serves one connection a peer opened (directly or through a circuit).
    pub async fn serve_connection(self: Arc<Self>, stream: Stream) {
        let config = match self.identity.server_config() {
            Ok(config) => config,
            Err(e) => {
                tracing::error!("TLS server config: {e}");
                return;
            }
        };
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let greeted = tokio::time::timeout(GREETING, async {
            let mut connection = acceptor.accept(stream).await.map_err(|e| e.to_string())?;
            let hello = read_frame(&mut connection, 0)
                .await
                .map_err(|e| e.to_string())?;
            let from = match hello {
                Some((header, _)) if header.kind == "hello" => header.from,
                _ => None,
            }
            .ok_or("no hello")?;
            let presented = connection
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .map(tls::fingerprint)
                .ok_or("no client certificate")?;
            let vouched = self
                .relay
                .lookup(from, Instant::now() + GREETING)
                .await
                .map_err(|e| e.to_string())?;
            if vouched.fingerprint != presented {
                let mut refused = Header::new("error");
                refused.message = Some("your certificate is not the one the relay knows".into());
                let _ = write_frame(&mut connection, refused, None, None).await;
                return Err(format!(
                    "{from} presented a certificate the relay does not know"
                ));
            }
            write_frame(&mut connection, Header::new("welcome"), None, None)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((connection, from))
        })
        .await;
        let (mut connection, from) = match greeted {
            Ok(Ok(greeted)) => greeted,
            Ok(Err(problem)) => {
                tracing::info!("refused a peer connection: {problem}");
                return;
            }
            Err(_) => {
                tracing::info!("a peer connection did not greet within {GREETING:?}");
                return;
            }
        };
        let limit = self.storage.max_object_size();
        while let Ok(Some((header, body))) = read_frame(&mut connection, limit).await {
            let key = header.key.clone().unwrap_or_default();
            tracing::debug!(%from, op = %header.kind, "peer request");
            let storage = &self.storage;
            let answered = match (header.kind.as_str(), body) {
                // The digest kept since the object arrived goes with it: the reader checks
                // it, and nothing here hashes the object again.
                ("get", _) => storage.get_stored(&key).await.map(|stored| match stored {
                    Some(stored) => (found(true), Some((stored.data, stored.sha256))),
                    None => (found(false), None),
                }),
                ("exists", _) => storage.exists(&key).await.map(|is| (found(is), None)),
                ("evict", _) => storage
                    .evict(&key)
                    .await
                    .map(|()| (Header::new("ok"), None)),
                ("set", Some((data, sha256))) => storage
                    .set_stored(&key, Stored { data, sha256 })
                    .await
                    .map(|()| (Header::new("ok"), None)),
                _ => break,
            };
            let (reply, body) = answered.unwrap_or_else(|e| {
                let mut error = Header::new("error");
                error.message = Some(e.to_string());
                (error, None)
            });
            let (body, digest) = match body {
                Some((data, digest)) => (Some(data), Some(digest)),
                None => (None, None),
            };
            if write_frame(&mut connection, reply, body.as_ref(), digest)
                .await
                .is_err()
            {
                break;
            }
        }
    }
}

fn found(is: bool) -> Header {
    let mut ok = Header::new("ok");
    ok.found = Some(is);
    ok
}

/// A direct TCP connection as a [`Stream`], without Nagle's delay.
pub fn direct(stream: TcpStream) -> Stream {
    let _ = stream.set_nodelay(true);
    Box::new(stream)
}

/// Why one attempt failed.
enum Failure {
    /// The path: retry on a fresh connection.
    Path(String),
    /// The peer answered with an error: final.
    Remote(String),
    /// The relay will never vouch for this peer (another identity's): final.
    Forbidden(String),
}

/// One request and its answer on `connection`.
async fn exchange(
    mut connection: Connection,
    key: &str,
    op: &Op,
    max_body: u64,
) -> Result<(Connection, Answer), Failure> {
    let mut header = Header::new(op.name());
    header.key = Some(key.to_owned());
    let body = match op {
        Op::Set(data) => Some(data),
        _ => None,
    };
    write_frame(&mut connection, header, body, None)
        .await
        .map_err(|e| Failure::Path(format!("sending: {e}")))?;
    let (reply, body) = match read_frame(&mut connection, max_body).await {
        Ok(Some(frame)) => frame,
        Ok(None) => return Err(Failure::Path("the peer closed the connection".into())),
        // A body over our limit or one that fails its digest: trying again changes nothing.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Err(Failure::Remote(format!("its answer was refused: {e}")));
        }
        Err(e) => return Err(Failure::Path(format!("receiving: {e}"))),
    };
    if reply.kind == "error" {
        return Err(Failure::Remote(reply.message.unwrap_or_default()));
    }
    let answer = match op {
        Op::Get => Answer::Data(body.map(|(data, _)| data)),
        Op::Exists => Answer::Exists(reply.found.unwrap_or(false)),
        Op::Set(_) | Op::Evict => Answer::Done,
    };
    Ok((connection, answer))
}
