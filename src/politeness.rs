//! Per-key politeness: at most `max_in_flight` jobs of one affinity key at once, and at
//! least `interval` between two starts of that key (a token bucket of burst 1).
//!
//! This file holds [`Politeness`], the public rule: plain data the configuration carries.
//! A shard enforces it with its `Throttle` (`shard/throttle.rs`).

use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};

/// How politely one affinity key (for example a host) is crawled: at most
/// `max_in_flight` jobs at once and at least `interval` between two job starts.
///
/// Zero means "no limit" for both fields; [`Politeness::default`] is no limit at all. Set
/// the pool-wide default with [`Config::politeness`](crate::Config::politeness), and one
/// key's rule at run time (a `Crawl-delay` learned from robots.txt) with
/// [`Pool::set_politeness`](crate::Pool::set_politeness). Applies to jobs with an
/// [`Affinity`](crate::Affinity) key only.
///
/// ```
/// use std::time::Duration;
/// let rule = cdpmux::Politeness::new()
///     .max_in_flight(1)
///     .interval(Duration::from_millis(200));
/// assert!(rule.is_limited());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Politeness {
    /// Most jobs of one key running at once (0: no limit).
    pub max_in_flight: usize,
    /// Least time between two job starts of one key (0: none).
    pub interval: Duration,
}

impl Politeness {
    /// No limit (the default).
    pub fn new() -> Self {
        Politeness::default()
    }

    /// At most `n` jobs of the key at once (0: no limit).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// At least `interval` between two job starts of the key (0: none).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// True when the rule limits anything.
    pub fn is_limited(&self) -> bool {
        self.max_in_flight > 0 || !self.interval.is_zero()
    }

    /// Checks the rule; the error names the field.
    pub(crate) fn validate(&self) -> Result<()> {
        // A year between starts is a typo (or a robots.txt asking never to come back).
        if self.interval > Duration::from_secs(365 * 24 * 3600) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "politeness interval ({:?}) is over a year: use a shorter delay, or do not crawl the key",
                    self.interval
                ),
            ));
        }
        Ok(())
    }
}
