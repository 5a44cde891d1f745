//! Where a shard's new page goes: which browser, and how many pages of each browser's
//! capacity are this shard's.
//!
//! Pure: no sockets, no clock; `links.rs` gathers each browser's state, asks here, and
//! acts. Never reads another shard's state: a browser's capacity is split into fixed
//! per-shard shares, so shards never coordinate (no lock, no shared counter) and the
//! pool as a whole never keeps more than the capacity open on a browser.

use std::cmp::Reverse;

use crate::config::Config;

/// One browser as a shard sees it when placing a new page.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Candidate {
    /// Not backing off after failures.
    pub(crate) usable: bool,
    /// No live socket (down, or never reached yet).
    pub(crate) lost: bool,
    /// Consecutive failures to connect or to open a page.
    pub(crate) failures: u32,
    /// This shard's pages open or opening on it.
    pub(crate) pages: usize,
    /// This shard's share of its capacity; `None`: unlimited.
    pub(crate) share: Option<usize>,
}

impl Candidate {
    /// Pages this shard may still open there (unlimited counts as the most).
    fn free(&self) -> usize {
        match self.share {
            Some(share) => share.saturating_sub(self.pages),
            None => usize::MAX - self.pages,
        }
    }
}

/// The browser a new page should go to: usable and with free capacity; then a live
/// socket first, fewest failures, most free capacity, lowest index. `None` when every
/// browser is backing off or full.
pub(crate) fn choose(browsers: &[Candidate]) -> Option<usize> {
    (0..browsers.len())
        .filter(|&b| browsers[b].usable && browsers[b].free() > 0)
        .min_by_key(|&b| {
            let c = &browsers[b];
            (c.lost, c.failures, Reverse(c.free()), b)
        })
}

/// Shard `shard`'s share of a browser's `capacity`, out of `shards` shards. The shares
/// add up to `capacity`; the pages that do not divide evenly go to the shards from
/// `browser`'s index on, so small capacities on several browsers land on different
/// shards.
pub(crate) fn share(capacity: usize, browser: usize, shard: usize, shards: usize) -> usize {
    let shards = shards.max(1);
    let offset = (shard + shards - browser % shards) % shards;
    capacity / shards + usize::from(offset < capacity % shards)
}

/// The most pages a shard can hold: the sum of its shares, or `None` when some browser
/// is unlimited.
pub(crate) fn page_limit(shares: impl IntoIterator<Item = Option<usize>>) -> Option<usize> {
    shares.into_iter().try_fold(0usize, |sum, s| Some(sum + s?))
}

/// `cfg` with at most `limit` sessions per shard (and the critical reserve kept below
/// it): the plan then never asks for a page the browsers have no room for.
pub(crate) fn clamp(cfg: &Config, limit: usize) -> Config {
    let mut clamped = cfg.clone();
    clamped.sessions_per_shard = cfg.sessions_per_shard.min(limit.max(1));
    clamped.critical_reserve = cfg
        .critical_reserve
        .min(clamped.sessions_per_shard.saturating_sub(1));
    clamped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(pages: usize, share: Option<usize>) -> Candidate {
        Candidate {
            usable: true,
            lost: false,
            failures: 0,
            pages,
            share,
        }
    }

    #[test]
    fn uncapped_browsers_fill_evenly() {
        assert_eq!(
            choose(&[live(2, None), live(1, None), live(1, None)]),
            Some(1)
        );
        assert_eq!(choose(&[live(0, None), live(0, None)]), Some(0));
    }

    #[test]
    fn pages_go_where_the_most_capacity_is_free() {
        // 10 - 6 = 4 free beats 3 - 0 = 3 free.
        assert_eq!(choose(&[live(0, Some(3)), live(6, Some(10))]), Some(1));
        // A full browser is never chosen; unlimited counts as the most free.
        assert_eq!(choose(&[live(4, Some(4)), live(9, None)]), Some(1));
        assert_eq!(choose(&[live(4, Some(4)), live(2, Some(2))]), None);
    }

    #[test]
    fn health_comes_before_capacity() {
        let mut down = live(0, Some(100));
        down.lost = true;
        assert_eq!(choose(&[down, live(5, Some(6))]), Some(1));
        let mut failing = live(0, None);
        failing.failures = 2;
        assert_eq!(choose(&[failing, live(5, None)]), Some(1));
        // A lost browser is still tried when nothing live has room: that is how a
        // browser that was down joins again.
        assert_eq!(choose(&[down, live(6, Some(6))]), Some(0));
        let mut backing_off = down;
        backing_off.usable = false;
        assert_eq!(choose(&[backing_off, live(6, Some(6))]), None);
    }

    #[test]
    fn shares_add_up_and_spread_remainders_over_shards() {
        for capacity in 0..20 {
            for shards in 1..6 {
                for browser in 0..4 {
                    let total: usize = (0..shards)
                        .map(|s| share(capacity, browser, s, shards))
                        .sum();
                    assert_eq!(total, capacity, "{capacity} {shards} {browser}");
                }
            }
        }
        // Three browsers of capacity 1 over three shards: one page per shard.
        let per_shard: Vec<usize> = (0..3)
            .map(|s| (0..3).map(|b| share(1, b, s, 3)).sum())
            .collect();
        assert_eq!(per_shard, [1, 1, 1]);
    }

    #[test]
    fn the_limit_is_the_sum_unless_one_is_unlimited() {
        assert_eq!(page_limit([Some(2), Some(3)]), Some(5));
        assert_eq!(page_limit([Some(2), None]), None);
        let cfg = Config {
            sessions_per_shard: 8,
            critical_reserve: 2,
            ..Config::default()
        };
        let c = clamp(&cfg, 2);
        assert_eq!((c.sessions_per_shard, c.critical_reserve), (2, 1));
        assert!(c.validate().is_ok());
        let c = clamp(&cfg, 20);
        assert_eq!((c.sessions_per_shard, c.critical_reserve), (8, 2));
    }
}
