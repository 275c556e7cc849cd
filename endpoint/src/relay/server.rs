//! `ps-globus relay serve`: where endpoints register, find each other, and tunnel when
//! they cannot connect directly.
//!
//! - A registration carries a token the relay checks ([`RelayAuth`]); it lasts until the
//!   connection closes or the token expires (then the relay says `refused` with
//!   `retry: true`, and the endpoint comes back with a fresh token).
//! - The same id registered again by the same identity replaces the old registration
//!   (an endpoint that restarted, or reconnected before the relay saw it go); by another
//!   identity it is refused.
//! - `lookup` and `connect` answer only about endpoints of the same identity.
//! - A circuit waits at most [`CIRCUIT_WAIT`] for both ends to join, then is dropped.
//!   The relay copies a circuit's bytes without reading them (they are TLS).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsAcceptor;
use uuid::Uuid;

use super::auth::{RelayAuth, User};
use super::proto::{Message, read_message, write_message};
use super::transport::Stream;

/// How long a circuit waits for its two ends.
pub const CIRCUIT_WAIT: Duration = Duration::from_secs(10);

/// How long a new connection has to send its first message.
const FIRST_MESSAGE: Duration = Duration::from_secs(10);

/// One registered endpoint.
struct Registration {
    user: String,
    name: String,
    fingerprint: String,
    addresses: Vec<String>,
    /// Its control connection's outbox.
    outbox: mpsc::UnboundedSender<Message>,
    /// Which connection holds it (a replaced one must not unregister its successor).
    connection: u64,
}

/// A circuit one end has opened.
struct Circuit {
    /// The two endpoints it joins.
    ends: (Uuid, Uuid),
    /// The first end to join waits here for the second's stream.
    waiting: Option<oneshot::Sender<Stream>>,
}

/// The relay's state.
#[derive(Default)]
struct Relay {
    registered: Mutex<HashMap<Uuid, Registration>>,
    circuits: Mutex<HashMap<String, Circuit>>,
    connections: AtomicU64,
}

/// Serves the relay on `listener` (TLS with `tls`) until the task is dropped.
pub async fn serve(listener: TcpListener, auth: RelayAuth, tls: Option<TlsAcceptor>) {
    let relay = Arc::new(Relay::default());
    let auth = Arc::new(auth);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("relay accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (relay, auth, tls) = (relay.clone(), auth.clone(), tls.clone());
        tokio::spawn(async move {
            let stream: Stream = match tls {
                None => Box::new(stream),
                Some(tls) => match tokio::time::timeout(FIRST_MESSAGE, tls.accept(stream)).await {
                    Ok(Ok(stream)) => Box::new(stream),
                    _ => return,
                },
            };
            handle(relay, auth, stream).await;
        });
    }
}

async fn handle(relay: Arc<Relay>, auth: Arc<RelayAuth>, mut stream: Stream) {
    let first = match tokio::time::timeout(FIRST_MESSAGE, read_message(&mut stream)).await {
        Ok(Ok(Some(message))) => message,
        _ => return,
    };
    match first {
        Message::Register {
            uuid,
            name,
            token,
            fingerprint,
            addresses,
        } => {
            let user = match auth.check(token.as_ref().map(|t| t.0.as_str())).await {
                Ok(user) => user,
                Err(reason) => {
                    tracing::info!(%uuid, %name, "registration refused: {reason}");
                    let _ = write_message(
                        &mut stream,
                        &Message::Refused {
                            reason,
                            retry: true,
                        },
                    )
                    .await;
                    return;
                }
            };
            control(relay, stream, user, uuid, name, fingerprint, addresses).await;
        }
        Message::Join { circuit } => join(relay, stream, circuit).await,
        _ => {}
    }
}

/// Serves one registered endpoint's control connection.
async fn control(
    relay: Arc<Relay>,
    stream: Stream,
    user: User,
    uuid: Uuid,
    name: String,
    fingerprint: String,
    addresses: Vec<String>,
) {
    let connection = relay.connections.fetch_add(1, Ordering::Relaxed);
    let (outbox, mut inbox) = mpsc::unbounded_channel();
    let foreign = {
        let mut registered = relay.registered.lock().expect("relay lock");
        match registered.get(&uuid) {
            Some(old) if old.user != user.sub => true,
            _ => {
                let replaced = registered.insert(
                    uuid,
                    Registration {
                        user: user.sub.clone(),
                        name: name.clone(),
                        fingerprint,
                        addresses,
                        outbox: outbox.clone(),
                        connection,
                    },
                );
                if let Some(old) = replaced {
                    let _ = old.outbox.send(Message::Refused {
                        reason: format!("endpoint {uuid} registered again from another connection"),
                        retry: false,
                    });
                }
                false
            }
        }
    };
    if foreign {
        let mut stream = stream;
        let refused = Message::Refused {
            reason: format!("endpoint {uuid} is registered here by another identity"),
            retry: false,
        };
        let _ = write_message(&mut stream, &refused).await;
        return;
    }
    tracing::info!(%uuid, %name, "registered");
    let _ = outbox.send(Message::Registered);
    let (mut reader, mut writer) = tokio::io::split(stream);
    let writer_task = tokio::spawn(async move {
        while let Some(message) = inbox.recv().await {
            let last = matches!(message, Message::Refused { .. });
            if write_message(&mut writer, &message).await.is_err() || last {
                break;
            }
        }
    });
    let expiry = async {
        match user.expires_at {
            Some(at) => {
                let left = at - chrono_now();
                tokio::time::sleep(Duration::from_secs(left.max(0) as u64)).await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expiry);
    loop {
        tokio::select! {
            message = read_message(&mut reader) => match message {
                Ok(Some(message)) => answer(&relay, &user, uuid, message, &outbox),
                _ => break,
            },
            () = &mut expiry => {
                tracing::info!(%uuid, "token expired; dropping the registration");
                let _ = outbox.send(Message::Refused {
                    reason: "the token expired; register again with a fresh one".into(),
                    retry: true,
                });
                break;
            }
        }
    }
    {
        let mut registered = relay.registered.lock().expect("relay lock");
        if registered
            .get(&uuid)
            .is_some_and(|r| r.connection == connection)
        {
            registered.remove(&uuid);
        }
    }
    drop(outbox);
    let _ = writer_task.await;
    tracing::info!(%uuid, "unregistered");
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Answers one message on a control connection.
fn answer(
    relay: &Arc<Relay>,
    user: &User,
    uuid: Uuid,
    message: Message,
    outbox: &mpsc::UnboundedSender<Message>,
) {
    let reply = match message {
        Message::Ping => Message::Pong,
        Message::Lookup { id, peer } => match peer_of(relay, user, peer) {
            Ok(vouched) => Message::Found {
                id,
                peer,
                fingerprint: vouched.fingerprint,
                addresses: vouched.addresses,
            },
            Err((reason, forbidden)) => Message::Missing {
                id,
                peer,
                reason,
                forbidden,
            },
        },
        Message::Connect { id, peer } => match peer_of(relay, user, peer) {
            Ok(Vouched { outbox: target, .. }) => {
                let circuit = Uuid::new_v4().simple().to_string();
                relay.circuits.lock().expect("relay lock").insert(
                    circuit.clone(),
                    Circuit {
                        ends: (uuid, peer),
                        waiting: None,
                    },
                );
                let _ = target.send(Message::Incoming {
                    circuit: circuit.clone(),
                    from: uuid,
                });
                expire_circuit(relay, circuit.clone());
                Message::Circuit { id, circuit }
            }
            Err((reason, forbidden)) => Message::Missing {
                id,
                peer,
                reason,
                forbidden,
            },
        },
        _ => return,
    };
    let _ = outbox.send(reply);
}

/// What the relay knows of a peer it vouches for.
struct Vouched {
    fingerprint: String,
    addresses: Vec<String>,
    outbox: mpsc::UnboundedSender<Message>,
}

/// `peer`'s fingerprint, addresses and outbox, if it is registered by `user`; else why
/// not, and whether for good.
fn peer_of(relay: &Relay, user: &User, peer: Uuid) -> Result<Vouched, (String, bool)> {
    let registered = relay.registered.lock().expect("relay lock");
    match registered.get(&peer) {
        Some(r) if r.user == user.sub => {
            tracing::debug!(%peer, name = %r.name, "looked up");
            Ok(Vouched {
                fingerprint: r.fingerprint.clone(),
                addresses: r.addresses.clone(),
                outbox: r.outbox.clone(),
            })
        }
        Some(_) => Err((format!("endpoint {peer} belongs to another identity"), true)),
        None => Err((
            format!("endpoint {peer} is not registered at this relay"),
            false,
        )),
    }
}

/// Drops `circuit` after [`CIRCUIT_WAIT`] if neither end joined (once one has, its own
/// wait removes it).
fn expire_circuit(relay: &Arc<Relay>, circuit: String) {
    let relay = Arc::downgrade(relay);
    tokio::spawn(async move {
        tokio::time::sleep(CIRCUIT_WAIT).await;
        if let Some(relay) = relay.upgrade() {
            let mut circuits = relay.circuits.lock().expect("relay lock");
            if circuits.get(&circuit).is_some_and(|c| c.waiting.is_none()) {
                circuits.remove(&circuit);
            }
        }
    });
}

/// One end joins `circuit`: the first waits for the second; the second hands its stream
/// over and the first copies bytes between them until either closes.
async fn join(relay: Arc<Relay>, stream: Stream, circuit: String) {
    let waiting = {
        let mut circuits = relay.circuits.lock().expect("relay lock");
        let Some(entry) = circuits.get_mut(&circuit) else {
            return;
        };
        match entry.waiting.take() {
            Some(first) => {
                circuits.remove(&circuit);
                Err(first)
            }
            None => {
                let (tx, rx) = oneshot::channel();
                entry.waiting = Some(tx);
                Ok((rx, entry.ends))
            }
        }
    };
    match waiting {
        // The second end: hand the stream to the first.
        Err(first) => {
            let _ = first.send(stream);
        }
        // The first end: wait for the second, then copy.
        Ok((rx, ends)) => {
            let partner = tokio::time::timeout(CIRCUIT_WAIT, rx).await;
            relay.circuits.lock().expect("relay lock").remove(&circuit);
            if let Ok(Ok(mut partner)) = partner {
                tracing::debug!(from = %ends.0, to = %ends.1, "circuit joined");
                let mut stream = stream;
                let _ = tokio::io::copy_bidirectional(&mut stream, &mut partner).await;
            }
        }
    }
}
