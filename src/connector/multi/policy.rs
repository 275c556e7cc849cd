//! Which puts a child of a [`MultiConnector`](super::MultiConnector) accepts.

use serde::{Deserialize, Serialize};

/// What puts a child connector accepts: a size range, tags, and the sites it serves. A
/// put goes to the highest-priority child whose policy accepts it (ties: the earlier
/// child).
///
/// ProxyStore's `Policy` has two tag sets per put (`subset_tags`, `superset_tags`); here a
/// put carries one set of tags ([`PutOptions::tags`](crate::connector::PutOptions::tags))
/// and the policy says which it requires and which it allows. Its `host_pattern` becomes
/// `sites`, the ps-globus site names (`PS_GLOBUS_SITE` or the configuration's host
/// regexes say which one a process is at).
///
/// ```
/// use ps_globus::connector::Policy;
/// let small = Policy::default().max_size(1 << 20).priority(1);
/// assert!(small.refusal(1000, &[], Some("lab")).is_none());
/// assert_eq!(small.refusal(2 << 20, &[], Some("lab")).unwrap(), "2097152 bytes is above max_size 1048576");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Policy {
    /// Higher wins when several children accept a put.
    #[serde(skip_serializing_if = "is_zero")]
    pub priority: i32,
    /// The smallest object accepted, in bytes.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub min_size: u64,
    /// The largest object accepted, in bytes (inclusive); `None`: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    /// Tags a put must carry, every one of them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags_required: Vec<String>,
    /// The only tags a put may carry; `None`: any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags_allowed: Option<Vec<String>>,
    /// The sites at which puts may go to this child; `None`: every site. Reads of its
    /// objects work wherever the child is reachable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sites: Option<Vec<String>>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// Chainable setters, the way to build a policy in code (the struct is
/// `#[non_exhaustive]`: it will grow): `Policy::default().max_size(1024).priority(1)`.
impl Policy {
    /// Sets [`priority`](Self::priority).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Sets [`min_size`](Self::min_size).
    pub fn min_size(mut self, bytes: u64) -> Self {
        self.min_size = bytes;
        self
    }

    /// Sets [`max_size`](Self::max_size).
    pub fn max_size(mut self, bytes: u64) -> Self {
        self.max_size = Some(bytes);
        self
    }

    /// Sets [`tags_required`](Self::tags_required).
    pub fn tags_required<S: Into<String>>(mut self, tags: impl IntoIterator<Item = S>) -> Self {
        self.tags_required = tags.into_iter().map(Into::into).collect();
        self
    }

    /// Sets [`tags_allowed`](Self::tags_allowed).
    pub fn tags_allowed<S: Into<String>>(mut self, tags: impl IntoIterator<Item = S>) -> Self {
        self.tags_allowed = Some(tags.into_iter().map(Into::into).collect());
        self
    }

    /// Sets [`sites`](Self::sites).
    pub fn sites<S: Into<String>>(mut self, sites: impl IntoIterator<Item = S>) -> Self {
        self.sites = Some(sites.into_iter().map(Into::into).collect());
        self
    }
}

impl Policy {
    /// Why this policy refuses a put of `size` bytes with `tags` at `site` (`None`: the
    /// site is unknown), or `None` when it accepts it.
    pub fn refusal(&self, size: u64, tags: &[String], site: Option<&str>) -> Option<String> {
        if size < self.min_size {
            return Some(format!("{size} bytes is below min_size {}", self.min_size));
        }
        if let Some(max) = self.max_size.filter(|max| size > *max) {
            return Some(format!("{size} bytes is above max_size {max}"));
        }
        if let Some(missing) = self.tags_required.iter().find(|t| !tags.contains(t)) {
            return Some(format!("the put lacks the required tag {missing:?}"));
        }
        if let Some(allowed) = &self.tags_allowed
            && let Some(extra) = tags.iter().find(|t| !allowed.contains(t))
        {
            return Some(format!(
                "tag {extra:?} is not among tags_allowed {allowed:?}"
            ));
        }
        match (&self.sites, site) {
            (Some(sites), Some(site)) if !sites.iter().any(|s| s == site) => {
                Some(format!("it serves sites {sites:?}, not {site:?}"))
            }
            (Some(sites), None) => Some(format!(
                "it serves sites {sites:?} and this process's site is unknown (set PS_GLOBUS_SITE)"
            )),
            _ => None,
        }
    }

    /// What is wrong with this policy, if anything.
    pub(super) fn problem(&self) -> Option<String> {
        match self.max_size {
            Some(max) if max < self.min_size => Some(format!(
                "max_size {max} is below min_size {}: it accepts nothing",
                self.min_size
            )),
            _ if self.sites.as_ref().is_some_and(Vec::is_empty) => {
                Some("sites is empty: it accepts nothing (leave it out for every site)".into())
            }
            _ => None,
        }
    }
}
