//! `get` and `put`: one file between this machine and a collection over the collection's
//! HTTPS, with no Transfer task (globus-cli has no such commands).
//!
//! The collection's HTTPS origin and the scopes its token needs come from its endpoint
//! document; the credentials are chosen as for Transfer (`auth::https_authorizer`). A GET
//! goes in ranges into `LOCAL.part`, which a later `get` resumes from its size, and is
//! renamed into place once whole; a PUT sends the file in one request.

use std::io::Write;
use std::path::{Path, PathBuf};

use ps_globus::ErrorKind;
use ps_globus::transfer::CollectionHttps;

use super::{CommandError, settings};
use crate::output::{BarKind, set_bytes, transfer_bar};

/// How much one ranged GET asks for.
const CHUNK: u64 = 8 << 20;

/// `get` options.
#[derive(clap::Args)]
pub struct GetArgs {
    /// The file: COLLECTION_UUID:/PATH or SITE:PATH.
    source: String,
    /// Where it goes here (`LOCAL.part` while it arrives).
    local: PathBuf,
}

/// `put` options.
#[derive(clap::Args)]
pub struct PutArgs {
    /// The file here.
    local: PathBuf,
    /// Where it goes: COLLECTION_UUID:/PATH or SITE:PATH (the directory must exist).
    destination: String,
}

/// The collection's HTTPS and the path on it for `address`.
async fn open(address: &str) -> Result<(CollectionHttps, String), CommandError> {
    let config = ps_globus::config::Config::load(settings())?;
    let location = ps_globus::internal::staging::resolve_address(address, &config, None)?;
    if location.path.starts_with("/~") {
        return Err(format!(
            "{address}: HTTPS paths are absolute (a collection's HTTPS has no home \
             directory): write COLLECTION:/PATH"
        )
        .into());
    }
    let transfer = super::client()?;
    let endpoint = transfer.endpoint(&location.collection.to_string()).await?;
    let scopes = CollectionHttps::scopes(&location.collection, &endpoint);
    let Some(origin) = endpoint.https_origin() else {
        return Err(ps_globus::Error::unsupported(
            "HTTPS",
            "globus",
            format!(
                "collection {} has HTTPS disabled: move the file with `ps-globus transfer`",
                location.collection
            ),
        )
        .into());
    };
    let auth = ps_globus::auth::https_authorizer(settings(), &location.collection, &scopes)?;
    Ok((
        CollectionHttps::new(location.collection, origin, auth)?,
        location.path,
    ))
}

/// `get COLLECTION:PATH LOCAL`.
pub async fn get(args: GetArgs) -> Result<(), CommandError> {
    let (https, path) = open(&args.source).await?;
    let Some(size) = https.size(&path).await? else {
        return Err(ps_globus::Error::new(
            ErrorKind::NotFound,
            format!("{}: no such file on the collection", args.source),
        )
        .into());
    };
    let part = part_path(&args.local);
    let mut have = std::fs::metadata(&part).map_or(0, |m| m.len());
    if have > size {
        // Not a beginning of this file: start again.
        std::fs::remove_file(&part).map_err(|e| format!("{}: {e}", part.display()))?;
        have = 0;
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&part)
        .map_err(|e| format!("{}: {e}", part.display()))?;
    let bar = transfer_bar(false);
    while have < size {
        set_bytes(&bar, have as i64, Some(size as i64), BarKind::Total);
        let to = (have + CHUNK).min(size) - 1;
        let bytes = https
            .get_range(&path, have, to)
            .await?
            .ok_or_else(|| format!("{}: the file went away while it was read", args.source))?;
        if bytes.is_empty() || bytes.len() as u64 > to + 1 - have {
            return Err(format!(
                "{}: the collection answered {} bytes for {have}-{to}",
                args.source,
                bytes.len()
            )
            .into());
        }
        out.write_all(&bytes)
            .and_then(|()| out.sync_data())
            .map_err(|e| format!("{}: {e}", part.display()))?;
        have += bytes.len() as u64;
    }
    bar.finish_and_clear();
    std::fs::rename(&part, &args.local).map_err(|e| format!("{}: {e}", args.local.display()))?;
    println!("Received {size} bytes into {}", args.local.display());
    Ok(())
}

/// `put LOCAL COLLECTION:PATH`.
pub async fn put(args: PutArgs) -> Result<(), CommandError> {
    let data = std::fs::read(&args.local).map_err(|e| format!("{}: {e}", args.local.display()))?;
    let (https, path) = open(&args.destination).await?;
    let size = data.len();
    https.put(&path, data.into()).await?;
    // A PUT is not atomic: say it arrived only once its size says so.
    match https.size(&path).await? {
        Some(arrived) if arrived == size as u64 => {}
        other => {
            return Err(format!(
                "{}: sent {size} bytes, the collection holds {}",
                args.destination,
                other.map_or("none".into(), |n| n.to_string())
            )
            .into());
        }
    }
    println!("Sent {size} bytes to {}", args.destination);
    Ok(())
}

/// Where a GET into `local` collects its bytes until they are whole.
fn part_path(local: &Path) -> PathBuf {
    let mut name = local.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}
