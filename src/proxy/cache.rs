//! The store's cache of decoded objects, bounded by count.
//!
//! Entries are type-erased `Arc<T>`: a hit hands out the same decoded object again, with
//! no read and no decode. Asking for a key with another type than was cached is a miss.

use std::any::Any;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;

type Entry = Arc<dyn Any + Send + Sync>;

/// A least-recently-used cache of decoded objects keyed by object id; size 0 disables it.
pub(crate) struct Cache {
    entries: Option<Mutex<LruCache<String, Entry>>>,
}

impl Cache {
    /// A cache of at most `size` entries. The size may come from a proxy made anywhere,
    /// so nothing is allocated up front: the table grows with what is cached (a
    /// preallocated table for a huge `cache_size` aborted the process that resolved it).
    pub(crate) fn new(size: usize) -> Self {
        Cache {
            entries: NonZeroUsize::new(size).map(|n| {
                let mut cache = LruCache::unbounded();
                cache.resize(n);
                Mutex::new(cache)
            }),
        }
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.entries.is_some()
    }

    pub(crate) fn get<T: Send + Sync + 'static>(&self, id: &str) -> Option<Arc<T>> {
        let entries = self.entries.as_ref()?;
        let entry = entries.lock().expect("cache poisoned").get(id).cloned()?;
        entry.downcast::<T>().ok()
    }

    pub(crate) fn insert<T: Send + Sync + 'static>(&self, id: &str, value: Arc<T>) {
        if let Some(entries) = &self.entries {
            entries
                .lock()
                .expect("cache poisoned")
                .put(id.to_owned(), value);
        }
    }

    pub(crate) fn remove(&self, id: &str) {
        if let Some(entries) = &self.entries {
            entries.lock().expect("cache poisoned").pop(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_and_checks_types() {
        let cache = Cache::new(2);
        cache.insert("a", Arc::new(1u32));
        cache.insert("b", Arc::new(2u32));
        assert_eq!(cache.get::<u32>("a").as_deref(), Some(&1));
        cache.insert("c", Arc::new(3u32));
        assert!(cache.get::<u32>("b").is_none(), "b was least recently used");
        assert!(cache.get::<String>("a").is_none(), "wrong type is a miss");
        cache.remove("a");
        assert!(cache.get::<u32>("a").is_none());
    }

    #[test]
    fn size_zero_disables() {
        let cache = Cache::new(0);
        cache.insert("a", Arc::new(1u32));
        assert!(!cache.is_enabled());
        assert!(cache.get::<u32>("a").is_none());
    }
}
