//! Collection paths to local paths, confined to the collection's root.
//!
//! `/` is the root, `/~/` the collection's home (`default_directory`, the root unless it
//! declares another). `..` that would climb above the root, and symlinks
//! that lead out of it, are refused, so no request can reach a file outside the root.

use std::path::{Path, PathBuf};

use ps_globus::internal::collection_path_from;

/// A collection path resolved inside its root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// The local path.
    pub local: PathBuf,
    /// The normalised collection path (`/a/b`, `/` for the root).
    pub path: String,
}

/// Why a path was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Escape(pub String);

/// Resolves collection `path` under `root` (which must be canonical), reading the path
/// exactly as the client does ([`collection_path`](ps_globus::internal::collection_path)).
#[cfg(test)]
pub(crate) fn resolve(root: &Path, path: &str) -> Result<Resolved, Escape> {
    resolve_from(root, "/", path)
}

/// [`resolve`] in a collection whose `~` is `home` (a normalised collection path).
pub(crate) fn resolve_from(root: &Path, home: &str, path: &str) -> Result<Resolved, Escape> {
    let normalised = collection_path_from(path, home).map_err(|e| Escape(e.to_string()))?;
    let local = normalised
        .split('/')
        .filter(|p| !p.is_empty())
        .fold(root.to_path_buf(), |acc, p| acc.join(p));
    check_no_symlink_escape(root, &local, path)?;
    Ok(Resolved {
        local,
        path: normalised,
    })
}

/// Refuses `local` if it, or its deepest existing ancestor, resolves outside `root`.
///
/// The usual path has no link below the (canonical) root: one `lstat` per component
/// proves it, where resolving every ancestor from `/` costs a `readlink` per component
/// of each (every item of a submitted task comes here twice). A path with a link below
/// the root takes the full resolution.
fn check_no_symlink_escape(root: &Path, local: &Path, path: &str) -> Result<(), Escape> {
    match link_below(root, local) {
        Some(false) => Ok(()),
        _ => resolve_and_check(root, local, path),
    }
}

/// Whether an existing component of `local` below `root` is a symbolic link (one
/// `lstat` per component, down to the first that is missing); `None`: `local` is not
/// below `root`.
fn link_below(root: &Path, local: &Path) -> Option<bool> {
    let inside = local.strip_prefix(root).ok()?;
    let mut at = root.to_path_buf();
    for component in inside.components() {
        at.push(component);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => return Some(true),
            Ok(_) => {}
            // Missing: nothing below it exists, so nothing below it is a link.
            Err(_) => break,
        }
    }
    Some(false)
}

/// [`check_no_symlink_escape`] by resolving `local` (or its deepest existing ancestor).
fn resolve_and_check(root: &Path, local: &Path, path: &str) -> Result<(), Escape> {
    let mut probe = local;
    loop {
        match std::fs::canonicalize(probe) {
            Ok(real) if real.starts_with(root) => return Ok(()),
            Ok(_) => {
                return Err(Escape(format!(
                    "path {path:?} leads outside the collection through a symlink"
                )));
            }
            Err(_) if std::fs::symlink_metadata(probe).is_ok() => {
                // A dangling symlink: harmless to report as missing, but never follow it.
                return Err(Escape(format!("path {path:?} is a dangling symlink")));
            }
            Err(_) => match probe.parent() {
                Some(parent) if parent.starts_with(root) => probe = parent,
                _ => return Ok(()),
            },
        }
    }
}

/// Refuses `local` if any existing component of it below `root` is a symbolic link.
/// A transfer creates and writes paths below the item's (checked) destination; a link
/// planted there would otherwise carry those writes outside the collection. The reason
/// names the collection path only, never where the link leads.
pub(crate) fn refuse_links_below(root: &Path, local: &Path, path: &str) -> Result<(), Escape> {
    match link_below(root, local) {
        None => Err(Escape(format!("path {path:?} is outside the collection"))),
        Some(true) => Err(Escape(format!(
            "path {path:?} passes through a symbolic link, which transfers do not follow"
        ))),
        Some(false) => Ok(()),
    }
}

/// Joins a collection directory path and an entry name.
pub(crate) fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ps_globus::internal::collection_path;

    #[test]
    fn home_and_root_are_the_same_and_escapes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(root.join("a")).unwrap();
        let r = resolve(&root, "/~/a/./b").unwrap();
        assert_eq!(r.local, root.join("a/b"));
        assert_eq!(r.path, "/a/b");
        assert_eq!(resolve(&root, "/a/b").unwrap(), r);
        assert_eq!(resolve(&root, "~/a/b").unwrap(), r);
        assert_eq!(resolve(&root, "/").unwrap().path, "/");
        assert_eq!(resolve(&root, "/~/").unwrap().local, root);
        assert_eq!(resolve(&root, "/a/../a/b").unwrap(), r);
        assert!(resolve(&root, "/../etc/passwd").is_err());
        assert!(resolve(&root, "/~/../../x").is_err());
        assert!(resolve(&root, "/a/../../x").is_err());
    }

    #[test]
    fn symlinks_out_of_the_root_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("out")).unwrap();
        std::os::unix::fs::symlink(root.join("a-file"), root.join("inside-link")).unwrap();
        std::fs::write(root.join("a-file"), b"x").unwrap();
        assert!(resolve(&root, "/out/secret").is_err());
        assert!(resolve(&root, "/out/not-yet/created").is_err());
        assert!(resolve(&root, "/inside-link").is_ok());
        // A dangling link, alone or on the way (the quick walk hands both to the full
        // resolution); missing paths with no link on the way are fine.
        std::os::unix::fs::symlink(root.join("nowhere"), root.join("dangling")).unwrap();
        assert!(resolve(&root, "/dangling").is_err());
        assert!(resolve(&root, "/dangling/below").is_err());
        assert!(resolve(&root, "/not-yet/created").is_ok());
        std::fs::create_dir(root.join("dir")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("dir/out")).unwrap();
        assert!(resolve(&root, "/dir/out/secret").is_err());
        assert!(resolve(&root, "/dir/new-file").is_ok());
    }

    /// Paths built from the pieces that have been read differently before: spaces at
    /// either end, `~` alone and inside names, `.`, `..`, empty components.
    fn any_path() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let component = prop::sample::select(vec![
            "a", "b", " c", "d ", "~", "~x", ".", "..", "", " ", "a b", "é",
        ]);
        let lead = prop::sample::select(vec!["", "/", "~/", "/~/", "~", "/~"]);
        (lead, prop::collection::vec(component, 0..7))
            .prop_map(|(lead, parts)| format!("{lead}{}", parts.join("/")))
    }

    proptest::proptest! {
        /// The client and the emulator read every path alike, and no path the emulator
        /// accepts leads out of its collection.
        #[test]
        fn client_and_emulator_read_every_path_alike_and_none_leaves_the_collection(
            path in any_path()
        ) {
            let dir = tempfile::tempdir().unwrap();
            let root = std::fs::canonicalize(dir.path()).unwrap();
            let client = collection_path(&path);
            match resolve(&root, &path) {
                Ok(resolved) => {
                    let client = client.expect("the emulator accepted what the client refuses");
                    proptest::prop_assert_eq!(&resolved.path, &client);
                    proptest::prop_assert_eq!(
                        ps_globus::internal::normalise_path(&resolved.path),
                        ps_globus::internal::normalise_path(&path)
                    );
                    proptest::prop_assert_eq!(collection_path(&client).unwrap(), client.clone());
                    proptest::prop_assert!(resolved.local.starts_with(&root));
                    let below = resolved.local.strip_prefix(&root).unwrap();
                    proptest::prop_assert!(below.components().all(|c| matches!(
                        c,
                        std::path::Component::Normal(_)
                    )));
                    proptest::prop_assert_eq!(
                        below.to_str().unwrap(),
                        client.trim_start_matches('/')
                    );
                }
                Err(_) => proptest::prop_assert!(client.is_err()),
            }
        }
    }
}
