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
/// use ps_globus::internal::{PathError, collection_path};
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
    collection_path_from(path, "/")
}

/// [`collection_path`] on a collection whose home directory (`default_directory`) is
/// `home`, a normalised collection path: `~/x` is then `home/x`, and `..` may climb from
/// home towards the root (never above it).
///
/// ```
/// use ps_globus::internal::collection_path_from;
/// assert_eq!(collection_path_from("~/x", "/home/u").unwrap(), "/home/u/x");
/// assert_eq!(collection_path_from("/~/../v", "/home/u").unwrap(), "/home/v");
/// assert_eq!(collection_path_from("/x", "/home/u").unwrap(), "/x");
/// ```
pub fn collection_path_from(path: &str, home: &str) -> Result<String, PathError> {
    if path.contains('\0') {
        return Err(PathError::Nul(path.to_owned()));
    }
    let from_home = match path {
        "~" | "/~" => Some(""),
        _ => path.strip_prefix("/~/").or_else(|| path.strip_prefix("~/")),
    };
    let mut parts: Vec<&str> = Vec::new();
    if from_home.is_some() {
        parts.extend(home.split('/').filter(|p| !p.is_empty()));
    }
    for part in from_home.unwrap_or(path).split('/') {
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

/// Whether `path` is read from the home directory (`~`, `/~`, `~/…`, `/~/…`).
pub(crate) fn starts_at_home(path: &str) -> bool {
    matches!(path, "~" | "/~") || path.starts_with("~/") || path.starts_with("/~/")
}

/// The home directory an endpoint document's `default_directory` names, as a normalised
/// collection path: `None` when it is absent or itself relative to a home the client
/// cannot know (`/~/`, as GCSv5 mapped collections often say).
pub(crate) fn home_directory(default_directory: Option<&str>) -> Option<String> {
    let dir = default_directory?.trim();
    if dir.is_empty() || starts_at_home(dir) || !dir.starts_with('/') {
        return None;
    }
    collection_path(dir).ok()
}

/// A collection path as Globus reports it, for comparing paths: [`collection_path`], or
/// the text itself where that refuses it (such a path matches only itself).
///
/// ```
/// use ps_globus::internal::normalise_path;
/// assert_eq!(normalise_path("/~/a//b/./c"), "/a/b/c");
/// assert_eq!(normalise_path("~/x"), "/x");
/// assert_eq!(normalise_path("/a/b/"), "/a/b");
/// assert_eq!(normalise_path("/../x"), "/../x");
/// ```
pub fn normalise_path(path: &str) -> String {
    collection_path(path).unwrap_or_else(|_| path.to_owned())
}
