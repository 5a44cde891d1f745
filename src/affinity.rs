//! Which session each affinity key last used: per shard, bounded (least recently used
//! keys forgotten first) and expiring (a key unused for `ttl` is forgotten).
//!
//! Pure data: the caller passes `now`. Bindings may point at sessions that are gone;
//! the shard checks on lookup, so retiring a session never has to search this map.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) struct AffinityMap<V> {
    entries: HashMap<Arc<str>, Entry<V>>,
    /// Keys by their last touch, oldest first.
    order: BTreeMap<u64, Arc<str>>,
    tick: u64,
}

struct Entry<V> {
    value: V,
    touched: Instant,
    tick: u64,
}

impl<V> Default for AffinityMap<V> {
    fn default() -> Self {
        AffinityMap {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
        }
    }
}

impl<V: Copy> AffinityMap<V> {
    /// The value bound to `key`, unless it expired (then it is forgotten).
    pub(crate) fn get(&mut self, key: &str, now: Instant, ttl: Duration) -> Option<V> {
        let e = self.entries.get(key)?;
        if now.saturating_duration_since(e.touched) >= ttl {
            self.remove(key);
            return None;
        }
        Some(e.value)
    }

    /// Binds `key` to `value` and marks it most recently used; forgets the least
    /// recently used keys past `capacity`.
    pub(crate) fn bind(&mut self, key: &Arc<str>, value: V, now: Instant, capacity: usize) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(old) = self.entries.insert(
            key.clone(),
            Entry {
                value,
                touched: now,
                tick,
            },
        ) {
            self.order.remove(&old.tick);
        }
        self.order.insert(tick, key.clone());
        while self.entries.len() > capacity.max(1) {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
    }

    /// Forgets keys unused for `ttl`. Touch order is time order, so only the expired
    /// ones at the front are visited.
    pub(crate) fn expire(&mut self, now: Instant, ttl: Duration) -> usize {
        let mut gone = 0;
        while let Some((_, key)) = self.order.first_key_value() {
            let expired = self
                .entries
                .get(key)
                .is_none_or(|e| now.saturating_duration_since(e.touched) >= ttl);
            if !expired {
                break;
            }
            let (_, key) = self.order.pop_first().expect("checked above");
            self.entries.remove(&key);
            gone += 1;
        }
        gone
    }

    fn remove(&mut self, key: &str) {
        if let Some(e) = self.entries.remove(key) {
            self.order.remove(&e.tick);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    fn key(s: &str) -> Arc<str> {
        s.into()
    }

    #[test]
    fn binds_and_rebinds() {
        let t = Instant::now();
        let mut m = AffinityMap::default();
        assert_eq!(m.get("a", t, TTL), None);
        m.bind(&key("a"), 1, t, 10);
        assert_eq!(m.get("a", t, TTL), Some(1));
        m.bind(&key("a"), 2, t, 10);
        assert_eq!(m.get("a", t, TTL), Some(2));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn forgets_the_least_recently_used_past_capacity() {
        let t = Instant::now();
        let mut m = AffinityMap::default();
        m.bind(&key("a"), 1, t, 2);
        m.bind(&key("b"), 2, t, 2);
        m.bind(&key("a"), 1, t, 2); // a is now the most recent
        m.bind(&key("c"), 3, t, 2);
        assert_eq!(m.get("b", t, TTL), None);
        assert_eq!(m.get("a", t, TTL), Some(1));
        assert_eq!(m.get("c", t, TTL), Some(3));
    }

    #[test]
    fn expires_after_the_ttl() {
        let t = Instant::now();
        let mut m = AffinityMap::default();
        m.bind(&key("old"), 1, t, 10);
        m.bind(&key("new"), 2, t + Duration::from_secs(5), 10);
        let later = t + TTL + Duration::from_secs(1);
        assert_eq!(m.expire(later, TTL), 1);
        assert_eq!(m.get("old", later, TTL), None);
        assert_eq!(m.get("new", later, TTL), Some(2));
        assert_eq!(
            m.get("new", t + Duration::from_secs(20), TTL),
            None,
            "expired on lookup"
        );
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn stays_bounded_under_many_keys() {
        let t = Instant::now();
        let mut m = AffinityMap::default();
        for i in 0..100_000 {
            m.bind(&key(&format!("k{i}")), i, t, 1_000);
        }
        assert_eq!(m.len(), 1_000);
        assert_eq!(m.get("k99999", t, TTL), Some(99_999));
        assert_eq!(m.get("k0", t, TTL), None);
    }
}
