//! Browser recycling: when a launched browser is due to be retired and replaced.
//!
//! Owns the settings ([`Recycle`]) and the pure rule [`due`] (counts and measurements in,
//! a reason or nothing out). The supervisor's side, which starts the replacement first,
//! lets the shards drain the old browser (`shard/draining.rs`) and then reaps it, is
//! `Recycling` in `fleet.rs`.

use std::time::Duration;

/// When a launched browser is retired (see [`Config::recycle`](crate::Config::recycle)).
/// Each limit is off at 0; the default never recycles. Remote endpoints are never
/// recycled: the pool does not own their processes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recycle {
    /// Retire a browser after this many pages were opened on it. Default 0 (never).
    pub after_pages: u64,
    /// Retire a browser this long after it started. Default 0 (never).
    pub after: Duration,
    /// Retire a browser whose process tree's resident memory passes this many bytes
    /// (RSS: shared pages count once per process, so it overstates; set it with that in
    /// mind). Default 0 (never).
    pub rss_above: u64,
    /// How long a retired browser's running jobs and leases may go on before it is
    /// stopped anyway. Default 120 s (the default job deadline).
    pub drain_timeout: Duration,
}

impl Default for Recycle {
    fn default() -> Self {
        Recycle {
            after_pages: 0,
            after: Duration::ZERO,
            rss_above: 0,
            drain_timeout: Duration::from_secs(120),
        }
    }
}

impl Recycle {
    /// Recycling after `pages` pages opened, other settings default.
    pub fn after_pages(pages: u64) -> Self {
        Recycle {
            after_pages: pages,
            ..Recycle::default()
        }
    }

    /// Whether any limit is set.
    pub(crate) fn is_on(&self) -> bool {
        self.after_pages > 0 || !self.after.is_zero() || self.rss_above > 0
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        if self.is_on() && self.drain_timeout.is_zero() {
            return Err("recycle.drain_timeout must be above zero".into());
        }
        Ok(())
    }
}

/// Why a browser is retired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecycleReason {
    Pages,
    Age,
    Memory,
}

/// Whether a browser that opened `pages` pages, started `age` ago and holds `rss` bytes
/// is due for retirement under `r`.
pub(crate) fn due(
    r: &Recycle,
    pages: u64,
    age: Duration,
    rss: Option<u64>,
) -> Option<RecycleReason> {
    if r.after_pages > 0 && pages >= r.after_pages {
        Some(RecycleReason::Pages)
    } else if !r.after.is_zero() && age >= r.after {
        Some(RecycleReason::Age)
    } else if r.rss_above > 0 && rss.is_some_and(|b| b > r.rss_above) {
        Some(RecycleReason::Memory)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_retires_and_the_default_never_does() {
        let min = Duration::from_secs(60);
        assert_eq!(
            due(&Recycle::default(), 1 << 40, min * 999, Some(u64::MAX)),
            None
        );
        assert_eq!(due(&Recycle::after_pages(10), 9, min, None), None);
        assert_eq!(
            due(&Recycle::after_pages(10), 10, min, None),
            Some(RecycleReason::Pages)
        );
        let aged = Recycle {
            after: min,
            ..Recycle::default()
        };
        assert_eq!(due(&aged, 0, min, None), Some(RecycleReason::Age));
        let fat = Recycle {
            rss_above: 1000,
            ..Recycle::default()
        };
        assert_eq!(due(&fat, 0, min, Some(1000)), None);
        assert_eq!(due(&fat, 0, min, Some(1001)), Some(RecycleReason::Memory));
        assert_eq!(due(&fat, 0, min, None), None);
    }
}
