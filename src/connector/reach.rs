//! Where a connector's objects can be evicted from ([`Reach`]), recorded with every lease:
//! a process that cannot reach a lease's objects leaves the lease for one that can, and
//! says so, instead of "evicting" nothing and forgetting the lease while its objects stay.

use serde::{Deserialize, Serialize};

use crate::transfer::{owner_alive, this_process};

/// Where the objects of one store are held, as seen by the process that stores them:
/// every constraint that is set must hold where they are evicted. The default (none set)
/// is anywhere: a Redis server, a file system every host mounts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Reach {
    /// Held in this process's memory (`host:pid:start`): gone when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    /// On this host's own disk (a file system no other host mounts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// At this Globus site: a process there evicts every copy (its delete task reaches
    /// the other sites); one elsewhere only its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

/// What a process may do about objects held at a [`Reach`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It reaches them: evict.
    Evict,
    /// They went with the process that held them (it ended): nothing to evict.
    Gone(String),
    /// Another process, host or site holds them: leave them for it, and why.
    Leave(String),
}

impl Reach {
    /// Anywhere.
    pub fn anywhere() -> Reach {
        Reach::default()
    }

    /// In this process's memory.
    pub fn this_process() -> Reach {
        Reach {
            process: Some(this_process().owner),
            ..Reach::default()
        }
    }

    /// On this host's own disk.
    pub fn this_host() -> Reach {
        Reach {
            host: Some(this_process().host),
            ..Reach::default()
        }
    }

    /// At Globus site `site`.
    pub fn site(site: impl Into<String>) -> Reach {
        Reach {
            site: Some(site.into()),
            ..Reach::default()
        }
    }

    /// Both `self`'s constraints and `other`'s (a multi connector's, over its children).
    pub fn and(self, other: Reach) -> Reach {
        Reach {
            process: self.process.or(other.process),
            host: self.host.or(other.host),
            site: self.site.or(other.site),
        }
    }

    /// What a process whose store over the same objects reaches `here` may do about
    /// objects held at `self`.
    pub fn verdict(&self, here: &Reach) -> Verdict {
        if let Some(owner) = &self.process
            && here.process.as_ref() != Some(owner)
        {
            let on_this_host = owner
                .rsplitn(3, ':')
                .nth(2)
                .is_some_and(|host| host == this_process().host);
            return if on_this_host && !owner_alive(owner) {
                Verdict::Gone(format!(
                    "they were in the memory of process {owner}, which ended"
                ))
            } else {
                Verdict::Leave(format!(
                    "they are in the memory of process {owner}: only it evicts them"
                ))
            };
        }
        if let Some(host) = &self.host
            && here.host.as_ref() != Some(host)
        {
            return Verdict::Leave(format!(
                "they are on host {host}'s own disk: a process there evicts them \
                 (`ps-globus lease reap` on {host})"
            ));
        }
        if let Some(site) = &self.site
            && here.site.as_ref() != Some(site)
        {
            return Verdict::Leave(format!(
                "they were put at Globus site {site}, whose copies and delete tasks only a \
                 process there reaches (`ps-globus lease reap` at {site})"
            ));
        }
        Verdict::Evict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_evicts_only_what_it_reaches() {
        let anywhere = Reach::anywhere();
        assert_eq!(anywhere.verdict(&Reach::this_host()), Verdict::Evict);
        assert_eq!(
            Reach::this_process().verdict(&Reach::this_process()),
            Verdict::Evict
        );
        let elsewhere = Reach {
            process: Some("other-host:1:1".into()),
            ..Reach::default()
        };
        assert!(matches!(
            elsewhere.verdict(&Reach::this_process()),
            Verdict::Leave(_)
        ));
        // A process of this host that ended took its objects with it.
        let ended = Reach {
            process: Some(format!("{}:{}:0", this_process().host, u32::MAX - 1)),
            ..Reach::default()
        };
        assert!(matches!(
            ended.verdict(&Reach::this_process()),
            Verdict::Gone(_)
        ));
        let other_disk = Reach {
            host: Some("node-17".into()),
            ..Reach::default()
        };
        assert!(
            matches!(other_disk.verdict(&Reach::this_host()), Verdict::Leave(w) if w.contains("node-17"))
        );
        assert!(matches!(
            Reach::site("a").verdict(&Reach::site("b")),
            Verdict::Leave(_)
        ));
        assert_eq!(Reach::site("a").verdict(&Reach::site("a")), Verdict::Evict);
        assert_eq!(
            Reach::site("a").and(Reach::this_host()),
            Reach {
                site: Some("a".into()),
                host: Some(this_process().host),
                ..Reach::default()
            }
        );
    }
}
