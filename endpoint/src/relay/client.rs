//! An endpoint's side of the relay: one control connection, kept up in the background.
//!
//! It registers with a token asked for at each connection (so a reconnect after the
//! token expired carries a fresh one: ProxyStore's relay client reuses the token of its
//! start and gives up once it expires), pings every [`PING_EVERY`] and reconnects with
//! exponential backoff (0.2 s doubling to 10 s, with jitter) whenever the connection
//! drops, goes silent or the relay refuses with `retry`. Requests wait for a connection
//! only until their deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use ps_globus::auth::Authorizer;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use uuid::Uuid;

use super::proto::{Message, Secret, read_message, write_message};
use super::transport::{RelayAddress, Stream};

/// How often the control connection is pinged.
pub const PING_EVERY: Duration = Duration::from_secs(10);

/// What the relay says about a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its certificate's SHA-256.
    pub fingerprint: String,
    /// Where it can be dialled.
    pub addresses: Vec<String>,
}

/// Why a relay request failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// No connection to the relay within the deadline.
    #[error("the relay at {0} is not reachable")]
    Down(String),
    /// The relay answered that the peer cannot be reached through it now.
    #[error("{0}")]
    Missing(String),
    /// The relay answered that the peer belongs to another identity.
    #[error("{0}")]
    Forbidden(String),
}

/// This endpoint's registration.
#[derive(Clone, Debug)]
pub struct Registration {
    /// Its id.
    pub uuid: Uuid,
    /// Its name.
    pub name: String,
    /// Its certificate's SHA-256.
    pub fingerprint: String,
    /// Where it can be dialled.
    pub addresses: Vec<String>,
}

/// The connection to the relay (see the module docs).
#[derive(Clone)]
pub struct RelayClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RelayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayClient")
            .field("address", &self.inner.address)
            .finish_non_exhaustive()
    }
}

struct Inner {
    address: RelayAddress,
    registration: Registration,
    token: Option<Arc<dyn Authorizer>>,
    /// The live connection's outbox (None while disconnected).
    outbox: watch::Sender<Option<mpsc::UnboundedSender<Message>>>,
    waiters: Mutex<HashMap<u64, oneshot::Sender<Message>>>,
    next_id: AtomicU64,
    registrations: AtomicU64,
    /// Why the last attempt failed, for `endpoint check`.
    last_problem: Mutex<Option<String>>,
}

impl RelayClient {
    /// Starts keeping a connection to the relay at `address` (`host:port`), registering
    /// as `registration` with tokens from `token` (none for a relay without auth).
    /// Circuits peers open to us arrive on the returned channel: `(circuit, from)`.
    pub fn start(
        address: RelayAddress,
        registration: Registration,
        token: Option<Arc<dyn Authorizer>>,
    ) -> (Self, mpsc::UnboundedReceiver<(String, Uuid)>) {
        let (incoming_tx, incoming) = mpsc::unbounded_channel();
        let client = RelayClient {
            inner: Arc::new(Inner {
                address,
                registration,
                token,
                outbox: watch::Sender::new(None),
                waiters: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                registrations: AtomicU64::new(0),
                last_problem: Mutex::new(None),
            }),
        };
        tokio::spawn(keep_connected(Arc::downgrade(&client.inner), incoming_tx));
        (client, incoming)
    }

    /// The relay's address.
    pub fn address(&self) -> String {
        self.inner.address.to_string()
    }

    /// Whether the control connection is up.
    pub fn is_connected(&self) -> bool {
        self.inner.outbox.borrow().is_some()
    }

    /// How many times this endpoint has registered (reconnections included).
    pub fn registrations(&self) -> u64 {
        self.inner.registrations.load(Ordering::Relaxed)
    }

    /// Why the last connection attempt failed, if it did.
    pub fn last_problem(&self) -> Option<String> {
        self.inner.last_problem.lock().expect("relay lock").clone()
    }

    /// Who `peer` is.
    pub async fn lookup(&self, peer: Uuid, deadline: Instant) -> Result<PeerInfo, RelayError> {
        match self
            .ask(|id| Message::Lookup { id, peer }, deadline)
            .await?
        {
            Message::Found {
                fingerprint,
                addresses,
                ..
            } => Ok(PeerInfo {
                fingerprint,
                addresses,
            }),
            Message::Missing {
                reason, forbidden, ..
            } => Err(missing(reason, forbidden)),
            other => Err(RelayError::Missing(format!("the relay answered {other:?}"))),
        }
    }

    /// Opens a relayed circuit to `peer` and joins it: a byte stream to the peer, in which
    /// the caller runs TLS.
    pub async fn circuit(&self, peer: Uuid, deadline: Instant) -> Result<Stream, RelayError> {
        let circuit = match self
            .ask(|id| Message::Connect { id, peer }, deadline)
            .await?
        {
            Message::Circuit { circuit, .. } => circuit,
            Message::Missing {
                reason, forbidden, ..
            } => return Err(missing(reason, forbidden)),
            other => return Err(RelayError::Missing(format!("the relay answered {other:?}"))),
        };
        self.join(&circuit, deadline).await
    }

    /// Joins `circuit` (one a peer opened to us, or our own).
    pub async fn join(&self, circuit: &str, deadline: Instant) -> Result<Stream, RelayError> {
        let down = || RelayError::Down(self.inner.address.to_string());
        let mut stream = tokio::time::timeout_at(deadline, self.inner.address.connect())
            .await
            .map_err(|_| down())?
            .map_err(|_| down())?;
        write_message(
            &mut stream,
            &Message::Join {
                circuit: circuit.to_owned(),
            },
        )
        .await
        .map_err(|_| down())?;
        Ok(stream)
    }

    /// Sends the request `make(id)` and waits for its answer until `deadline`.
    async fn ask(
        &self,
        make: impl FnOnce(u64) -> Message,
        deadline: Instant,
    ) -> Result<Message, RelayError> {
        let down = || RelayError::Down(self.inner.address.to_string());
        let mut outbox = self.inner.outbox.subscribe();
        let sender = tokio::time::timeout_at(deadline, outbox.wait_for(Option::is_some))
            .await
            .map_err(|_| down())?
            .map_err(|_| down())?
            .clone()
            .expect("waited for a connection");
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.inner
            .waiters
            .lock()
            .expect("relay lock")
            .insert(id, tx);
        let sent = sender.send(make(id)).is_ok();
        let answer = if sent {
            tokio::time::timeout_at(deadline, rx)
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            None
        };
        self.inner.waiters.lock().expect("relay lock").remove(&id);
        answer.ok_or_else(down)
    }
}

fn missing(reason: String, forbidden: bool) -> RelayError {
    if forbidden {
        RelayError::Forbidden(reason)
    } else {
        RelayError::Missing(reason)
    }
}

/// Connects, registers and serves the control connection, again and again, until the
/// client is dropped.
async fn keep_connected(
    inner: std::sync::Weak<Inner>,
    incoming: mpsc::UnboundedSender<(String, Uuid)>,
) {
    let backoff = || {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(10))
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut delays = backoff();
    loop {
        let Some(client) = inner.upgrade() else {
            return;
        };
        match session(&client, &incoming).await {
            Session::Served(None) => delays = backoff(),
            Session::Served(Some(problem)) => {
                // Registered, then dropped (an expired token, a relay that went away):
                // come back at the shortest delay, with a fresh token.
                tracing::info!(relay = %client.address, "{problem}");
                delays = backoff();
            }
            Session::Failed(problem) => {
                tracing::warn!(relay = %client.address, "{problem}");
                *client.last_problem.lock().expect("relay lock") = Some(problem);
            }
            Session::GiveUp(problem) => {
                tracing::error!(relay = %client.address, "{problem}; not reconnecting");
                *client.last_problem.lock().expect("relay lock") = Some(problem);
                return;
            }
        }
        drop(client);
        tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(10))).await;
    }
}

enum Session {
    /// Registered, then the connection ended (and why, if the relay said): reconnect
    /// soon.
    Served(Option<String>),
    /// Never registered: back off.
    Failed(String),
    /// Refused for good (another identity holds our id, or we registered elsewhere).
    GiveUp(String),
}

/// One connection: register, then route answers and incoming circuits until it ends.
async fn session(client: &Arc<Inner>, incoming: &mpsc::UnboundedSender<(String, Uuid)>) -> Session {
    let token = match &client.token {
        Some(authorizer) => match authorizer.authorization().await {
            Ok(header) => Some(Secret(
                header.strip_prefix("Bearer ").unwrap_or(&header).to_owned(),
            )),
            Err(e) => return Session::Failed(format!("no token for the relay: {e}")),
        },
        None => None,
    };
    let connect = tokio::time::timeout(Duration::from_secs(10), client.address.connect());
    let mut stream = match connect.await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Session::Failed(format!("cannot connect to the relay: {e}")),
        Err(_) => return Session::Failed("the relay did not accept within 10 s".into()),
    };
    let r = &client.registration;
    let register = Message::Register {
        uuid: r.uuid,
        name: r.name.clone(),
        token,
        fingerprint: r.fingerprint.clone(),
        addresses: r.addresses.clone(),
    };
    if write_message(&mut stream, &register).await.is_err() {
        return Session::Failed("the relay closed the connection at registration".into());
    }
    match tokio::time::timeout(Duration::from_secs(10), read_message(&mut stream)).await {
        Ok(Ok(Some(Message::Registered))) => {}
        Ok(Ok(Some(Message::Refused { reason, retry }))) => {
            if let Some(authorizer) = &client.token {
                let _ = authorizer.refresh().await;
            }
            return if retry {
                Session::Failed(format!("the relay refused the registration: {reason}"))
            } else {
                Session::GiveUp(format!("the relay refused the registration: {reason}"))
            };
        }
        _ => return Session::Failed("the relay did not confirm the registration".into()),
    }
    client.registrations.fetch_add(1, Ordering::Relaxed);
    *client.last_problem.lock().expect("relay lock") = None;
    tracing::info!(relay = %client.address, "registered");

    let (mut reader, mut writer) = tokio::io::split(stream);
    let (outbox, mut queue) = mpsc::unbounded_channel::<Message>();
    let writing = tokio::spawn(async move {
        while let Some(message) = queue.recv().await {
            if write_message(&mut writer, &message).await.is_err() {
                break;
            }
        }
    });
    client.outbox.send_replace(Some(outbox.clone()));
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut last_heard = Instant::now();
    let outcome = loop {
        tokio::select! {
            message = read_message(&mut reader) => {
                last_heard = Instant::now();
                match message {
                    Ok(Some(Message::Incoming { circuit, from })) => {
                        let _ = incoming.send((circuit, from));
                    }
                    Ok(Some(Message::Refused { reason, retry })) => {
                        if let Some(authorizer) = &client.token {
                            let _ = authorizer.refresh().await;
                        }
                        break if retry {
                            Session::Served(Some(format!("the relay dropped the registration: {reason}")))
                        } else {
                            Session::GiveUp(format!("the relay dropped the registration: {reason}"))
                        };
                    }
                    Ok(Some(Message::Pong)) => {}
                    Ok(Some(answer)) => {
                        let id = match &answer {
                            Message::Found { id, .. } | Message::Missing { id, .. } | Message::Circuit { id, .. } => *id,
                            _ => continue,
                        };
                        if let Some(waiter) = client.waiters.lock().expect("relay lock").remove(&id) {
                            let _ = waiter.send(answer);
                        }
                    }
                    _ => break Session::Served(None),
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > PING_EVERY * 2 {
                    break Session::Failed("the relay stopped answering".into());
                }
                let _ = outbox.send(Message::Ping);
            }
        }
    };
    client.outbox.send_replace(None);
    writing.abort();
    outcome
}
