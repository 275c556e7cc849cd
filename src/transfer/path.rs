//! The one reading of a collection path, shared by the client, the staging checks and
//! the emulator: two readings of one path are how a missing source was once reported as
//! copied.

/// Why a collection path was refused by [`collection_path`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path holds a NUL byte, which no file name may contain.
    #[error("path {0:?} contains a NUL byte, which no file name may contain")]
    Nul(String),
    /// A `..` climbs above the collection root.
    #[error("path {0:?} climbs above the collection root with `..`")]
    AboveRoot(String),
    /// The path names an entry `~` at the top of the collection, which reads back as the
    /// home directory: it cannot be named without ambiguity.
    #[error(
        "path {0:?} names an entry `~` at the top of the collection, which would read as the home directory; rename it"
    )]
    TopLevelTilde(String),
}

/// The one reading of a collection path, shared by the client and the emulator: the
/// normalised path from the collection root (`/a/b`, `/` for the root itself).
///
/// * `/~/`, `~/` and a lone `~` or `/~` lead the path from the home directory, which is
///   the root here (a `~` anywhere else, or `~name`, is an ordinary name);
/// * empty and `.` components do not count, `..` removes the component before it;
/// * everything else is taken literally, spaces included: a POSIX file name may begin or
///   end with a space, so neither side trims (two readings of one path are how a missing
///   source was once reported as copied).
///
/// ```
/// use ps_globus::transfer::path::{PathError, collection_path};
/// assert_eq!(collection_path("/~/a//b/./c/").unwrap(), "/a/b/c");
/// assert_eq!(collection_path("~").unwrap(), "/");
/// assert_eq!(collection_path("/a/../b").unwrap(), "/b");
/// assert_eq!(collection_path("/~x/ y ").unwrap(), "/~x/ y ");
/// assert_eq!(collection_path("/a/~/b").unwrap(), "/a/~/b");
/// assert!(matches!(collection_path("/a/../.."), Err(PathError::AboveRoot(_))));
/// assert!(matches!(collection_path("/a\0b"), Err(PathError::Nul(_))));
/// assert!(matches!(collection_path("/~/~/a"), Err(PathError::TopLevelTilde(_))));
/// ```
pub fn collection_path(path: &str) -> Result<String, PathError> {
    if path.contains('\0') {
        return Err(PathError::Nul(path.to_owned()));
    }
    let body = match path {
        "~" | "/~" => "",
        _ => path
            .strip_prefix("/~/")
            .or_else(|| path.strip_prefix("~/"))
            .unwrap_or(path),
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in body.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(PathError::AboveRoot(path.to_owned()));
                }
            }
            name => parts.push(name),
        }
    }
    if parts.first() == Some(&"~") {
        return Err(PathError::TopLevelTilde(path.to_owned()));
    }
    Ok(format!("/{}", parts.join("/")))
}

/// A collection path as Globus reports it, for comparing paths: [`collection_path`], or
/// the text itself where that refuses it (such a path matches only itself).
///
/// ```
/// use ps_globus::transfer::path::normalise_path;
/// assert_eq!(normalise_path("/~/a//b/./c"), "/a/b/c");
/// assert_eq!(normalise_path("~/x"), "/x");
/// assert_eq!(normalise_path("/a/b/"), "/a/b");
/// assert_eq!(normalise_path("/../x"), "/../x");
/// ```
pub fn normalise_path(path: &str) -> String {
    collection_path(path).unwrap_or_else(|_| path.to_owned())
}
