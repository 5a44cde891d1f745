//! Which shard serves a request.
//!
//! Keyed requests: a hash that is the same in every run and process (FNV-1a, 64 bit),
//! then jump consistent hashing, so growing from n to n+1 shards moves only 1/(n+1) of
//! the keys. The same function partitions keys across crawler nodes. Unkeyed requests
//! go to the less loaded of two shards, by per-shard load gauges.

use crossbeam_utils::CachePadded;

use crate::idle::Quiet;
use crate::sync::atomic::{AtomicUsize, Ordering};

/// The shard (of `shards`) that owns `key`. Stable across runs, processes and versions.
///
/// Also usable to partition keys across crawler nodes, each running its own pool.
pub fn shard_for(key: &str, shards: usize) -> usize {
    jump_consistent_hash(fnv1a64(key.as_bytes()), shards.max(1))
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Lamping & Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm" (2014).
fn jump_consistent_hash(mut key: u64, buckets: usize) -> usize {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < buckets as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

/// Requests routed to each shard and not yet finished. Written by callers on any thread
/// (increment on submit, decrement on completion), read by the router.
///
/// Invariant: a gauge is decremented exactly once per increment, so it never underflows
/// and returns to zero when the pool is quiet.
pub struct LoadGauges {
    loads: Box<[CachePadded<AtomicUsize>]>,
    /// Told when a gauge falls to zero (see `idle`).
    quiet: Quiet,
}

impl LoadGauges {
    /// Gauges for `shards` shards (at least one), all zero.
    pub fn new(shards: usize) -> Self {
        LoadGauges {
            loads: (0..shards.max(1))
                .map(|_| CachePadded::new(AtomicUsize::new(0)))
                .collect(),
            quiet: Quiet::default(),
        }
    }

    /// Counts a request in on `shard`; the returned guard counts it out when dropped.
    pub fn enter(&self, shard: usize) -> LoadGuard<'_> {
        self.loads[shard].fetch_add(1, Ordering::Relaxed);
        LoadGuard {
            gauges: self,
            shard,
        }
    }

    /// Requests counted in on `shard` now.
    pub fn load(&self, shard: usize) -> usize {
        self.loads[shard].load(Ordering::Relaxed)
    }

    /// True when every gauge is zero: nothing routed and not yet answered.
    pub fn is_quiet(&self) -> bool {
        self.loads.iter().all(|l| l.load(Ordering::Relaxed) == 0)
    }

    /// Resolves once every gauge is zero (at once if they are). Cancel-safe.
    pub async fn quiet(&self) {
        self.quiet.until(|| self.is_quiet()).await;
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.loads.len()
    }

    /// The less loaded of two shards picked with `pick(n)` (uniform in `0..n`).
    pub fn less_loaded_of_two(&self, mut pick: impl FnMut(usize) -> usize) -> usize {
        let n = self.loads.len();
        if n == 1 {
            return 0;
        }
        let a = pick(n);
        let b = (a + 1 + pick(n - 1)) % n; // distinct from a
        if self.load(b) < self.load(a) {
            b
        } else {
            a
        }
    }
}

/// One request counted in a shard's load gauge; counts it out on drop.
pub struct LoadGuard<'a> {
    gauges: &'a LoadGauges,
    shard: usize,
}

impl Drop for LoadGuard<'_> {
    fn drop(&mut self) {
        let load = &self.gauges.loads[self.shard];
        if crate::mutant::gauge_decrement_torn() {
            load.store(
                load.load(Ordering::Relaxed).wrapping_sub(1),
                Ordering::Relaxed,
            );
            return;
        }
        if load.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.gauges.quiet.fell_to_zero();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_is_stable_and_in_range() {
        // Pinned values: changing them would reshuffle every user's keys.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        for n in 1..10 {
            for k in ["a", "example.com", "user:42"] {
                let s = shard_for(k, n);
                assert!(s < n);
                assert_eq!(s, shard_for(k, n));
            }
        }
        assert_eq!(shard_for("anything", 0), 0);
    }

    #[test]
    fn growing_moves_few_keys_and_only_to_the_new_shard() {
        let keys: Vec<String> = (0..10_000).map(|i| format!("host{i}.example")).collect();
        let moved = keys
            .iter()
            .filter(|k| {
                let (before, after) = (shard_for(k, 8), shard_for(k, 9));
                if before != after {
                    assert_eq!(after, 8, "a key only moves to the new shard");
                }
                before != after
            })
            .count();
        // Expect about 1/9 of the keys (1111); allow sampling noise.
        assert!((900..1350).contains(&moved), "moved {moved}");
    }

    #[test]
    fn keys_spread_evenly() {
        let mut counts = [0usize; 4];
        for i in 0..40_000 {
            counts[shard_for(&format!("k{i}"), 4)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn gauges_count_in_and_out() {
        let g = LoadGauges::new(2);
        let a = g.enter(0);
        let b = g.enter(0);
        let c = g.enter(1);
        assert_eq!((g.load(0), g.load(1)), (2, 1));
        assert_eq!(g.less_loaded_of_two(|_| 0), 1);
        drop((a, b, c));
        assert_eq!((g.load(0), g.load(1)), (0, 0));
        assert_eq!(LoadGauges::new(1).less_loaded_of_two(|n| n - 1), 0);
    }

    #[tokio::test]
    async fn quiet_resolves_when_the_last_gauge_falls_to_zero() {
        let g = std::sync::Arc::new(LoadGauges::new(2));
        g.quiet().await; // nothing in flight: at once
        let (a, b) = (g.enter(0), g.enter(1));
        let watcher = g.clone();
        let mut watch = tokio::spawn(async move { watcher.quiet().await });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!watch.is_finished(), "shard 1 still has a request");
        drop(b);
        (&mut watch).await.unwrap();
    }
}
