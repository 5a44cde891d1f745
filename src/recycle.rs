//! Browser recycling: when a launched browser is due to be retired and replaced.
//!
//! Owns the settings ([`Recycle`]), the pure rule [`due`] (counts and measurements in, a
//! reason or nothing out), and [`Recycling`], the supervisor's side: it starts the
//! replacement first and points the shards at it, keeps the old process while the shards
//! drain it (`shard/draining.rs`: no new pages, running jobs finish), then reaps it and
//! removes its profile. Runs on the fleet's supervisor thread only, on its timer; never
//! on a request's path, never in a shard.

use std::sync::Arc as StdArc;
use std::time::{Duration, Instant};

use crate::browser::{Launch, LaunchedBrowser};
use crate::config::Config;
use crate::fleet::BrowserEntry;
use crate::shard::msg::Msg;
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{mpsc, Arc, LiveCell};

/// How often the supervisor looks at its browsers.
const ROUND: Duration = Duration::from_millis(250);

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

/// What the supervisor needs of the pool to recycle: set once the shards exist.
pub(crate) struct PoolView {
    pub(crate) config: Arc<LiveCell<Config>>,
    pub(crate) inboxes: StdArc<[mpsc::UnboundedSender<Msg>]>,
    /// Browsers recycled so far (a metric).
    pub(crate) recycled: AtomicU64,
}

/// A replaced browser, kept running while the shards drain it.
struct Old {
    browser: usize,
    process: LaunchedBrowser,
    /// Stopped at this point even if some shard still uses it.
    until: Instant,
}

/// The supervisor's recycling state.
pub(crate) struct Recycling {
    /// When each launched browser's current process started.
    started: Vec<Instant>,
    draining: Vec<Old>,
}

impl Recycling {
    pub(crate) fn new(launched: usize) -> Self {
        Recycling {
            started: vec![Instant::now(); launched],
            draining: Vec::new(),
        }
    }

    /// How long until the next round.
    pub(crate) fn tick(&self) -> Duration {
        ROUND
    }

    /// Browser `i` was relaunched after a crash: its age starts over.
    pub(crate) fn restarted(&mut self, i: usize) {
        if let Some(s) = self.started.get_mut(i) {
            *s = Instant::now();
        }
    }

    /// One round: reaps the old browsers every shard has let go of (or whose drain
    /// deadline passed), then replaces the browsers that are due.
    pub(crate) async fn round(
        &mut self,
        entries: &[BrowserEntry],
        launched: &mut [(Launch, LaunchedBrowser)],
        pool: &PoolView,
    ) {
        let now = Instant::now();
        let shards = pool.inboxes.len() as u64;
        let mut i = 0;
        while i < self.draining.len() {
            let old = &self.draining[i];
            let done = entries[old.browser].drained.load(Ordering::Acquire) >= shards;
            if done || now >= old.until {
                let old = self.draining.swap_remove(i);
                if !done {
                    tracing::warn!(
                        browser = old.browser,
                        "a recycled browser's drain timed out; stopping it with jobs still on it"
                    );
                }
                if let Err(e) = old.process.shutdown().await {
                    tracing::warn!(error = %e, "stopping a recycled browser");
                }
            } else {
                i += 1;
            }
        }
        let cfg = pool.config.load();
        let r = &cfg.recycle;
        if !r.is_on() {
            return;
        }
        for (b, (launch, running)) in launched.iter_mut().enumerate() {
            if self.draining.iter().any(|o| o.browser == b) {
                continue; // one drain at a time per browser
            }
            let entry = &entries[b];
            let rss = (r.rss_above > 0)
                .then(|| crate::resources::tree_rss(running.pid()))
                .flatten();
            let age = now.saturating_duration_since(self.started[b]);
            let Some(reason) = due(r, entry.opened.load(Ordering::Relaxed), age, rss) else {
                continue;
            };
            tracing::info!(
                browser = b,
                ?reason,
                pid = running.pid(),
                "recycling a browser: starting its replacement"
            );
            match launch.launch().await {
                Ok(fresh) => {
                    let old = std::mem::replace(running, fresh);
                    entry.replace(running.ws_url(), running.pid());
                    self.started[b] = Instant::now();
                    pool.recycled.fetch_add(1, Ordering::Relaxed);
                    self.draining.push(Old {
                        browser: b,
                        process: old,
                        until: Instant::now() + r.drain_timeout,
                    });
                    // Each shard moves its socket to the old process into its drain and
                    // retires the idle pages on it.
                    for inbox in pool.inboxes.iter() {
                        let _ = inbox.send(Msg::Reconfigured);
                    }
                }
                Err(e) => {
                    tracing::error!(browser = b, error = %e, "could not start a replacement; the browser stays in service")
                }
            }
        }
    }

    /// Stops every browser still draining (shutdown).
    pub(crate) async fn stop_all(&mut self) {
        for old in self.draining.drain(..) {
            let _ = old.process.shutdown().await;
        }
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
