//! The relay's messages: one JSON object per line over TCP.
//!
//! An endpoint's **control** connection starts with `register` (its id, name, token,
//! certificate fingerprint and the addresses it can be dialled at), then asks `lookup`
//! (who is this peer: fingerprint and addresses) and `connect` (open a relayed circuit
//! to it) and keeps the connection alive with `ping`. The relay tells the target of a
//! circuit `incoming`. Both ends of a circuit then open a **join** connection whose first
//! line is `join` with the circuit's id; the relay splices the two and copies bytes, in
//! which the endpoints run their own pinned TLS (see `peer::tls`).

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use uuid::Uuid;

/// The longest line accepted.
pub const MAX_LINE: usize = 64 << 10;

/// A bearer token, never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// One relay message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Message {
    /// Endpoint → relay, first on a control connection.
    Register {
        /// The endpoint's id.
        uuid: Uuid,
        /// Its name, for logs.
        name: String,
        /// Its Globus Auth token (absent for a relay without auth).
        token: Option<Secret>,
        /// Its certificate's SHA-256.
        fingerprint: String,
        /// Where it can be dialled directly (`host:port`).
        addresses: Vec<String>,
    },
    /// Relay → endpoint: registered.
    Registered,
    /// Relay → endpoint: refused or dropped; the connection closes.
    Refused {
        /// Why.
        reason: String,
        /// Whether trying again can help (a fresh token, a relay back up).
        retry: bool,
    },
    /// Endpoint → relay: who is `peer`?
    Lookup {
        /// Matches the answer.
        id: u64,
        /// The peer.
        peer: Uuid,
    },
    /// Relay → endpoint: `peer` is registered by the same identity.
    Found {
        /// The request's id.
        id: u64,
        /// The peer.
        peer: Uuid,
        /// Its certificate's SHA-256.
        fingerprint: String,
        /// Where it can be dialled.
        addresses: Vec<String>,
    },
    /// Relay → endpoint: `peer` cannot be reached through this relay.
    Missing {
        /// The request's id.
        id: u64,
        /// The peer.
        peer: Uuid,
        /// Why.
        reason: String,
        /// For good: the peer belongs to another identity (not merely absent now, as a
        /// restarting peer is).
        forbidden: bool,
    },
    /// Endpoint → relay: open a relayed circuit to `peer`.
    Connect {
        /// Matches the answer.
        id: u64,
        /// The peer.
        peer: Uuid,
    },
    /// Relay → endpoint: join this circuit.
    Circuit {
        /// The request's id.
        id: u64,
        /// The circuit's id (128 random bits, hex).
        circuit: String,
    },
    /// Relay → endpoint: a peer opened a circuit to you; join it.
    Incoming {
        /// The circuit's id.
        circuit: String,
        /// Who opened it.
        from: Uuid,
    },
    /// Endpoint → relay, first on a join connection.
    Join {
        /// The circuit's id.
        circuit: String,
    },
    /// Endpoint → relay: are you there?
    Ping,
    /// Relay → endpoint: yes.
    Pong,
}

fn invalid(message: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message.into())
}

/// Writes one message as a line.
pub async fn write_message<W: AsyncWrite + Unpin>(
    writer: &mut W,
    message: &Message,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(|e| invalid(e.to_string()))?;
    line.push(b'\n');
    writer.write_all(&line).await?;
    writer.flush().await
}

/// Reads one line a byte at a time (so nothing after it is consumed: a join connection
/// carries TLS right behind its first line). `Ok(None)` at a clean end of stream.
pub async fn read_message<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<Message>> {
    let mut line = Vec::new();
    loop {
        let mut byte = [0u8; 1];
        if reader.read(&mut byte).await? == 0 {
            return if line.is_empty() {
                Ok(None)
            } else {
                Err(invalid("the connection ended inside a message"))
            };
        }
        if byte[0] == b'\n' {
            break;
        }
        if line.len() >= MAX_LINE {
            return Err(invalid(format!("a message longer than {MAX_LINE} bytes")));
        }
        line.push(byte[0]);
    }
    serde_json::from_slice(&line)
        .map(Some)
        .map_err(|e| invalid(format!("not a relay message: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_round_trip_and_tokens_never_print() {
        let register = Message::Register {
            uuid: Uuid::new_v4(),
            name: "ep".into(),
            token: Some(Secret("tok-123".into())),
            fingerprint: "ab".into(),
            addresses: vec!["127.0.0.1:1".into()],
        };
        assert!(!format!("{register:?}").contains("tok-123"));
        let mut wire = Vec::new();
        write_message(&mut wire, &register).await.unwrap();
        write_message(&mut wire, &Message::Ping).await.unwrap();
        let mut reader = &wire[..];
        assert_eq!(read_message(&mut reader).await.unwrap(), Some(register));
        assert_eq!(
            read_message(&mut reader).await.unwrap(),
            Some(Message::Ping)
        );
        assert_eq!(read_message(&mut reader).await.unwrap(), None);

        // An unknown field or type is refused, not guessed at.
        let mut odd = &b"{\"type\":\"lookup\",\"id\":1,\"peer\":\"6f6b8e1e-4b1e-4e55-9a63-8f0e8a7bde21\",\"extra\":1}\n"[..];
        assert!(read_message(&mut odd).await.is_err());
        let mut odd = &b"{\"type\":\"teleport\"}\n"[..];
        assert!(read_message(&mut odd).await.is_err());
    }
}
