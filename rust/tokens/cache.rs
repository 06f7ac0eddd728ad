//! Token counts of recently seen texts, so that a conversation's history is counted once, not on every turn.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Mutex, OnceLock};

use super::{Encoding, count};

/// Texts shorter than this are counted directly: hashing and locking would cost about as much.
pub const CACHE_MIN_BYTES: usize = 64;
/// Entries per generation; at most twice this many are kept (about 40 bytes each).
const CACHE_GENERATION: usize = 4096;

/// Token counts of recently seen texts, keyed by two independent SipHash-1-3 digests with per-process random
/// keys (the DoS-resistant PRF std's `HashMap` uses) plus the text's length and encoding. A wrong hit needs a
/// 128-bit collision of a secret-keyed PRF between two texts of the same length: not something a client can
/// arrange. Eviction is by generation: when the current map is full it becomes the previous one and the older
/// one is dropped; a hit in the previous generation moves the entry forward. Bounded memory, O(1) per lookup.
pub struct CountCache {
    keys: (RandomState, RandomState),
    maps: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    current: HashMap<CacheKey, u32>,
    previous: HashMap<CacheKey, u32>,
    hits: u64,
    misses: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct CacheKey {
    digest: (u64, u64),
    len: usize,
    encoding: Encoding,
}

impl Default for CountCache {
    fn default() -> Self {
        Self::new()
    }
}

impl CountCache {
    pub fn new() -> Self {
        Self {
            keys: (RandomState::new(), RandomState::new()),
            maps: Mutex::new(Generations::default()),
        }
    }

    /// The one cache of the process.
    pub fn global() -> &'static Self {
        static CACHE: OnceLock<CountCache> = OnceLock::new();
        CACHE.get_or_init(Self::new)
    }

    /// `count(encoding, text)`, from the cache when this text was counted recently.
    pub fn count(&self, encoding: Encoding, text: &str) -> usize {
        if text.len() < CACHE_MIN_BYTES {
            return count(encoding, text);
        }
        let key = CacheKey {
            digest: (self.keys.0.hash_one(text), self.keys.1.hash_one(text)),
            len: text.len(),
            encoding,
        };
        if let Some(n) = self.lookup(&key) {
            return n as usize;
        }
        let n = count(encoding, text); // outside the lock: other threads keep counting meanwhile
        let mut g = self.lock();
        g.insert(key, u32::try_from(n).unwrap_or(u32::MAX));
        n
    }

    /// (hits, misses) since the process started.
    pub fn stats(&self) -> (u64, u64) {
        let g = self.lock();
        (g.hits, g.misses)
    }

    fn lookup(&self, key: &CacheKey) -> Option<u32> {
        let mut g = self.lock();
        if let Some(&n) = g.current.get(key) {
            g.hits += 1;
            return Some(n);
        }
        if let Some(n) = g.previous.remove(key) {
            g.hits += 1;
            g.insert(*key, n);
            return Some(n);
        }
        g.misses += 1;
        None
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // A panic while holding the lock leaves the maps consistent (plain inserts): keep using them.
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Generations {
    fn insert(&mut self, key: CacheKey, n: u32) {
        if self.current.len() >= CACHE_GENERATION {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, n);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::tests::varied_corpus;

    #[test]
    fn cache_gives_the_same_counts_and_hits_on_repeats() {
        let cache = CountCache::new();
        let texts: Vec<String> = varied_corpus()
            .into_iter()
            .filter(|t| t.len() >= CACHE_MIN_BYTES)
            .collect();
        assert!(texts.len() >= 2);
        for _ in 0..3 {
            for t in &texts {
                for enc in [Encoding::O200kBase, Encoding::Cl100kBase] {
                    assert_eq!(cache.count(enc, t), count(enc, t));
                }
            }
        }
        let (hits, misses) = cache.stats();
        assert_eq!(misses, 2 * texts.len() as u64);
        assert_eq!(hits, 4 * texts.len() as u64);
        // Short texts never enter the cache.
        assert_eq!(cache.count(Encoding::O200kBase, "Hello, world!"), 4);
        assert_eq!(cache.stats(), (hits, misses));
    }

    #[test]
    fn cache_is_bounded_and_keeps_what_is_still_used() {
        let cache = CountCache::new();
        let base = "word ".repeat(60);
        let hot = format!("{base} the system prompt every request sends");
        for i in 0..(3 * CACHE_GENERATION) {
            let t = format!("{base} {i}");
            assert_eq!(cache.count(Encoding::O200kBase, &t), count(Encoding::O200kBase, &t));
            cache.count(Encoding::O200kBase, &hot);
        }
        assert!(cache.lock().len() <= 2 * CACHE_GENERATION);
        let (_, misses) = cache.stats();
        assert_eq!(misses, 3 * CACHE_GENERATION as u64 + 1); // the hot text was counted once
    }
}
