//! The frames endpoints exchange inside their TLS connection: a JSON header and an
//! optional body.
//!
//! `u32` header length (big-endian), the header (JSON, at most 64 KiB), `u64` body
//! length, the body. A body carries its SHA-256 in the header and is checked on arrival;
//! a length over the receiver's limit ends the connection before anything is read.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest header accepted.
const MAX_HEADER: u32 = 64 << 10;

/// One frame's header.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// What this frame is: `hello`, `welcome`, `get`, `set`, `exists`, `evict`, `ok`,
    /// `error`.
    pub kind: String,
    /// The object's key (requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The sender's endpoint id (`hello`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<uuid::Uuid>,
    /// Whether the object was found / exists (answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<bool>,
    /// The body's SHA-256, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// What went wrong (`error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Header {
    /// A header of `kind`.
    pub fn new(kind: &str) -> Self {
        Header {
            kind: kind.to_owned(),
            ..Header::default()
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn invalid(message: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message.into())
}

/// A body and its SHA-256.
pub type Body = (Bytes, [u8; 32]);

/// Writes one frame; a body gets its digest in the header (`known`, when the caller has
/// it already: an object's digest is kept from when it was stored).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    mut header: Header,
    body: Option<&Bytes>,
    known: Option<[u8; 32]>,
) -> std::io::Result<()> {
    if let Some(body) = body {
        let digest: [u8; 32] = known.unwrap_or_else(|| Sha256::digest(body).into());
        header.sha256 = Some(hex(&digest));
    }
    let head = serde_json::to_vec(&header).map_err(|e| invalid(e.to_string()))?;
    let mut prefix = Vec::with_capacity(4 + head.len() + 8);
    prefix.extend_from_slice(&(head.len() as u32).to_be_bytes());
    prefix.extend_from_slice(&head);
    prefix.extend_from_slice(&(body.map_or(0, |b| b.len()) as u64).to_be_bytes());
    writer.write_all(&prefix).await?;
    if let Some(body) = body {
        writer.write_all(body).await?;
    }
    writer.flush().await
}

/// Reads one frame, its body at most `max_body` bytes and checked against its digest.
/// `Ok(None)` at a clean end of the stream before a frame.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_body: u64,
) -> std::io::Result<Option<(Header, Option<Body>)>> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let head_len = u32::from_be_bytes(len);
    if head_len > MAX_HEADER {
        return Err(invalid(format!("a frame header of {head_len} bytes")));
    }
    let mut head = vec![0u8; head_len as usize];
    reader.read_exact(&mut head).await?;
    let header: Header = serde_json::from_slice(&head).map_err(|e| invalid(e.to_string()))?;
    let mut body_len = [0u8; 8];
    reader.read_exact(&mut body_len).await?;
    let body_len = u64::from_be_bytes(body_len);
    if body_len > max_body {
        return Err(invalid(format!(
            "a body of {body_len} bytes, over the limit of {max_body}"
        )));
    }
    if header.sha256.is_none() {
        return if body_len == 0 {
            Ok(Some((header, None)))
        } else {
            Err(invalid("a body without its sha256"))
        };
    }
    // Read into spare capacity (no zero-filling of a large body first).
    let mut body = Vec::with_capacity(body_len as usize);
    let read = reader.take(body_len).read_to_end(&mut body).await?;
    if read as u64 != body_len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the connection ended inside a body",
        ));
    }
    let digest: [u8; 32] = Sha256::digest(&body).into();
    if header.sha256.as_deref() != Some(hex(&digest).as_str()) {
        return Err(invalid("a body whose sha256 differs from its header's"));
    }
    Ok(Some((header, Some((Bytes::from(body), digest)))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_a_changed_body_is_refused() {
        let body = Bytes::from_static(b"forty gigabytes, give or take");
        let mut header = Header::new("set");
        header.key = Some("k".into());
        let mut wire = Vec::new();
        write_frame(&mut wire, header.clone(), Some(&body), None)
            .await
            .unwrap();
        let (got, got_body) = read_frame(&mut &wire[..], 1 << 20).await.unwrap().unwrap();
        assert_eq!(got.key.as_deref(), Some("k"));
        let (got_body, digest) = got_body.unwrap();
        assert_eq!(got_body, body);
        assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(&body)));

        // A digest the sender claims that does not match its body: refused.
        let mut lying = Vec::new();
        write_frame(&mut lying, header.clone(), Some(&body), Some([0; 32]))
            .await
            .unwrap();
        assert!(read_frame(&mut &lying[..], 1 << 20).await.is_err());

        // One flipped byte of the body: refused, not delivered.
        let last = wire.len() - 1;
        wire[last] ^= 1;
        let refused = read_frame(&mut &wire[..], 1 << 20).await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::InvalidData);

        // Over the receiver's limit: refused before the body is read.
        let refused = read_frame(&mut &wire[..], 4).await.unwrap_err();
        assert!(refused.to_string().contains("over the limit"), "{refused}");

        // A clean end of stream is no frame.
        assert!(read_frame(&mut &b""[..], 4).await.unwrap().is_none());
    }
}
