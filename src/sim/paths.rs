//! Collection paths to local paths, confined to the collection's root.
//!
//! `/` and `/~/` both name the root. `..` that would climb above the root, and symlinks
//! that lead out of it, are refused, so no request can reach a file outside the root.

use std::path::{Path, PathBuf};

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

/// Resolves collection `path` under `root` (which must be canonical).
pub(crate) fn resolve(root: &Path, path: &str) -> Result<Resolved, Escape> {
    let mut parts: Vec<&str> = Vec::new();
    let trimmed = path.trim();
    let relative = trimmed
        .strip_prefix("~/")
        .or(if trimmed == "~" { Some("") } else { None });
    let body = relative.unwrap_or(trimmed);
    for (i, part) in body.split('/').enumerate() {
        match part {
            "" | "." => {}
            "~" if i <= 1 && relative.is_none() => {} // the leading /~/
            ".." => {
                if parts.pop().is_none() {
                    return Err(Escape(format!(
                        "path {path:?} climbs above the collection root"
                    )));
                }
            }
            p if p.contains('\0') => {
                return Err(Escape(format!("path {path:?} contains a NUL byte")));
            }
            p => parts.push(p),
        }
    }
    let local = parts.iter().fold(root.to_path_buf(), |acc, p| acc.join(p));
    check_no_symlink_escape(root, &local, path)?;
    Ok(Resolved {
        local,
        path: format!("/{}", parts.join("/")),
    })
}

/// Refuses `local` if it, or its deepest existing ancestor, resolves outside `root`.
fn check_no_symlink_escape(root: &Path, local: &Path, path: &str) -> Result<(), Escape> {
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
    let Ok(inside) = local.strip_prefix(root) else {
        return Err(Escape(format!("path {path:?} is outside the collection")));
    };
    let mut at = root.to_path_buf();
    for component in inside.components() {
        at.push(component);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Escape(format!(
                    "path {path:?} passes through a symbolic link, which transfers do not follow"
                )));
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
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
    }
}
