//! The workload of `ps-globus demo` and the Globus benchmark: deterministic objects a
//! producer proxies, and a consumer that resolves proxies and checks every byte. The
//! two emulated sites they run on are [`crate::TwoSites`].

use std::io::BufRead;
use std::path::PathBuf;

use futures_util::StreamExt;

use ps_globus::error::IntegrityMismatch;
use ps_globus::proxy::Proxy;
use ps_globus::{Error, ErrorKind, Result};

/// The `index`th demo object: between 1 KiB and `max_size` bytes, content from the
/// index, so the consumer can check every byte without being told them.
///
/// ```
/// let a = ps_globus_sim::demo::object(3, 1 << 20);
/// assert_eq!(a, ps_globus_sim::demo::object(3, 1 << 20));
/// assert!(a.len() >= 1024 && a.len() <= 1 << 20);
/// ```
pub fn object(index: usize, max_size: usize) -> Vec<u8> {
    let max_size = max_size.max(1024);
    // Mostly small, every tenth large: like a workflow's mix of metadata and arrays.
    let mut x = (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    let size = if index % 10 == 9 {
        max_size / 2 + (x as usize % (max_size / 2 + 1))
    } else {
        1024 + (x as usize % (max_size / 16).max(1))
    }
    .min(max_size);
    (0..size)
        .map(|i| (i as u64 ^ x).wrapping_mul(31) as u8)
        .collect()
}

/// Resolves the proxies on `lines` (`INDEX<TAB>PROXY JSON` each), 64 at a time, and
/// checks each against `expected(index)`. `resolved(index, bytes)` is called as each
/// arrives. Returns (objects, bytes).
pub async fn consume(
    lines: impl BufRead,
    expected: impl Fn(usize) -> Vec<u8>,
    mut resolved: impl FnMut(usize, usize),
) -> Result<(usize, u64)> {
    let expected = &expected;
    let mut work = Vec::new();
    for line in lines.lines() {
        let line = line.map_err(|e| Error::io("read", "standard input", e))?;
        let Some((index, json)) = line.split_once('\t') else {
            continue;
        };
        let index: usize = index.parse().map_err(|_| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("malformed proxy: bad demo line index {index:?}"),
            )
        })?;
        work.push((index, json.to_owned()));
    }
    let mut results =
        futures_util::stream::iter(work.into_iter().map(|(index, json)| async move {
            let proxy: Proxy<Vec<u8>> = serde_json::from_str(&json).map_err(|e| {
                Error::with_source(ErrorKind::InvalidInput, format!("malformed proxy: {e}"), e)
            })?;
            let value = proxy.resolve_async().await?;
            if *value != expected(index) {
                return Err(Error::from(IntegrityMismatch::new(
                    PathBuf::from(format!("object {index}")),
                    "the producer's bytes",
                    format!("{} other bytes", value.len()),
                )));
            }
            Ok::<_, Error>((index, value.len()))
        }))
        .buffer_unordered(64);
    let (mut count, mut bytes) = (0, 0u64);
    while let Some(result) = results.next().await {
        let (index, len) = result?;
        count += 1;
        bytes += len as u64;
        resolved(index, len);
    }
    Ok((count, bytes))
}
