//! Codecs: typed values to stored bytes and back.
//!
//! Byte payloads (`Vec<u8>`, [`bytes::Bytes`]) are stored raw whatever the codec: a
//! serde codec would encode them element by element (MessagePack turns each byte of a
//! `Vec<u8>` into an integer), which is slow and larger. The raw path is chosen by type
//! at run time, so `store.put(&vec)` and `store.proxy(&vec)` just work.

use std::any::{Any, TypeId};
use std::borrow::Cow;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{BoxError, Error, Result};

/// How a [`Store`](crate::Store) turns values into bytes. Part of the store's config.
///
/// ```
/// use ps_globus::Codec;
/// assert_eq!(Codec::default(), Codec::MessagePack);
/// assert_eq!(serde_json::to_string(&Codec::Json)?, "\"json\"");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Codec {
    /// MessagePack with named struct fields (`rmp-serde`): compact, and tolerant of
    /// added optional fields.
    #[default]
    #[serde(rename = "msgpack")]
    MessagePack,
    /// JSON (`serde_json`): larger and slower, readable by anything.
    Json,
}

impl Codec {
    /// The codec's name, as in configs.
    pub fn name(self) -> &'static str {
        match self {
            Codec::MessagePack => "msgpack",
            Codec::Json => "json",
        }
    }

    /// The bytes to store for `value`: borrowed for raw byte payloads, encoded otherwise.
    pub fn encode<'a, T: Serialize + 'static>(self, value: &'a T) -> Result<Cow<'a, [u8]>> {
        if let Some(raw) = as_raw_bytes(value) {
            return Ok(Cow::Borrowed(raw));
        }
        let encoded: Result<Vec<u8>, BoxError> = match self {
            Codec::MessagePack => rmp_serde::to_vec_named(value).map_err(Into::into),
            Codec::Json => serde_json::to_vec(value).map_err(Into::into),
        };
        encoded
            .map(Cow::Owned)
            .map_err(|source| Error::encode(self.name(), source))
    }

    /// Decodes stored bytes as `T`. The error is the codec's own (a serde error), for the
    /// caller to keep as the source of an error naming the store and key.
    pub fn decode<T: DeserializeOwned + 'static>(self, bytes: Bytes) -> Result<T, BoxError> {
        let bytes = match from_raw_bytes::<T>(bytes) {
            Ok(value) => return Ok(value),
            Err(bytes) => bytes,
        };
        match self {
            Codec::MessagePack => rmp_serde::from_slice(&bytes).map_err(Into::into),
            Codec::Json => serde_json::from_slice(&bytes).map_err(Into::into),
        }
    }
}

/// `value`'s bytes if it is a raw byte payload.
fn as_raw_bytes<T: 'static>(value: &T) -> Option<&[u8]> {
    let value = value as &dyn Any;
    if let Some(vec) = value.downcast_ref::<Vec<u8>>() {
        return Some(vec);
    }
    value.downcast_ref::<Bytes>().map(|b| &b[..])
}

/// `bytes` as a `T` if `T` is a raw byte payload type, else the bytes back.
///
/// `Vec::from(Bytes)` reuses the allocation when the bytes are not shared, so a large
/// object read from a file is not copied again here.
fn from_raw_bytes<T: 'static>(bytes: Bytes) -> Result<T, Bytes> {
    let mut slot: Option<T> = None;
    let any = &mut slot as &mut dyn Any;
    if TypeId::of::<T>() == TypeId::of::<Vec<u8>>() {
        // A unique buffer becomes the Vec as it is; a shared one (the local connector's)
        // is copied into a fresh buffer backed by huge pages where the kernel allows.
        let vec = if bytes.is_unique() {
            bytes.into()
        } else {
            crate::fsutil::copy_to_fresh_vec(&bytes)
        };
        *any.downcast_mut::<Option<Vec<u8>>>().expect("type checked") = Some(vec);
    } else if TypeId::of::<T>() == TypeId::of::<Bytes>() {
        *any.downcast_mut::<Option<Bytes>>().expect("type checked") = Some(bytes);
    } else {
        return Err(bytes);
    }
    Ok(slot.expect("set above"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_payloads_are_stored_raw() {
        let vec = vec![1u8, 2, 255];
        let encoded = Codec::MessagePack.encode(&vec).unwrap();
        assert!(matches!(encoded, Cow::Borrowed(_)));
        assert_eq!(&*encoded, &[1, 2, 255]);
        let back: Vec<u8> = Codec::MessagePack.decode(Bytes::from(vec.clone())).unwrap();
        assert_eq!(back, vec);
        let back: Bytes = Codec::Json.decode(Bytes::from(vec.clone())).unwrap();
        assert_eq!(&back[..], &vec[..]);
    }

    #[test]
    fn large_raw_decode_reuses_the_allocation() {
        let vec = vec![7u8; 1 << 20];
        let ptr = vec.as_ptr();
        let back: Vec<u8> = Codec::MessagePack.decode(Bytes::from(vec)).unwrap();
        assert_eq!(back.as_ptr(), ptr);
    }

    #[test]
    fn typed_values_round_trip_in_both_codecs() {
        let value = (String::from("x"), vec![1.5f64, -2.0], Some(3u32));
        for codec in [Codec::MessagePack, Codec::Json] {
            let bytes = codec.encode(&value).unwrap().into_owned();
            let back: (String, Vec<f64>, Option<u32>) = codec.decode(Bytes::from(bytes)).unwrap();
            assert_eq!(back, value);
        }
    }

    #[test]
    fn decoding_the_wrong_type_is_an_error() {
        let bytes = Codec::MessagePack.encode(&"text").unwrap().into_owned();
        assert!(
            Codec::MessagePack
                .decode::<u64>(Bytes::from(bytes))
                .is_err()
        );
    }
}
