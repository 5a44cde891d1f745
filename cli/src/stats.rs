//! Latency percentiles and outcome counts gathered by the CLI itself, and the crawl
//! summary table built from them.
//!
//! A crawl's page times go into an HDR histogram (fixed size, 3 significant digits), so
//! memory stays flat however many pages a crawl visits.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use cdpmux::Snapshot;
use hdrhistogram::Histogram;

use crate::browser::{Fatal, EXIT_NO_BROWSER};
use crate::frontier::Dropped;
use crate::redis_frontier::Totals;

/// Exit code of a crawl in which some pages failed.
pub const EXIT_SOME_FAILED: i32 = 1;
/// Exit code of a crawl in which no page succeeded; the same as when no browser could be
/// started, which is one way for that to happen.
pub const EXIT_NONE_SUCCEEDED: i32 = EXIT_NO_BROWSER;

/// Error kinds that blame the pool rather than the page: the pool shut down under the
/// crawl, a shard failed internally, or no browser was left.
const POOL_KINDS: [&str; 4] = ["shutdown", "internal", "other", "browser_unavailable"];

/// How a crawl went, from its pages' outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No page failed (also: no page at all).
    AllOk,
    /// Some pages failed, some succeeded.
    SomeFailed,
    /// Every page failed, for reasons of their own (navigation, timeouts...).
    NoneSucceeded,
    /// Every page failed with an error of the pool itself: it broke, the pages are not
    /// to blame.
    PoolBroke,
}

/// p50/p95/p99/max of a set of samples, in milliseconds (nearest rank).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
}

impl Percentiles {
    /// Computes them from samples in milliseconds (any order; NaNs sort last). For a
    /// handful of samples (`cdpmux bench`); a crawl uses [`PageTimes`].
    pub fn of(samples: &[f64]) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            let i = (q * sorted.len() as f64).ceil() as usize;
            sorted[i.clamp(1, sorted.len()) - 1]
        };
        Percentiles {
            count: sorted.len(),
            p50_ms: rank(0.50),
            p95_ms: rank(0.95),
            p99_ms: rank(0.99),
            max_ms: sorted[sorted.len() - 1],
        }
    }

    /// Reads them from a histogram of microseconds.
    pub fn of_histogram(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1e3;
        Percentiles {
            count: usize::try_from(h.len()).unwrap_or(usize::MAX),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

/// Page times of a crawl, in microseconds, from 1 µs up to [`PageTimes::HIGHEST`]
/// (longer times count as that).
#[derive(Debug)]
pub struct PageTimes(Histogram<u64>);

impl PageTimes {
    /// The longest time recorded as itself: a week, the longest `--timeout`.
    pub const HIGHEST: Duration = crate::args::MAX_DURATION;

    /// Records one page's time.
    pub fn record(&mut self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(us.max(1));
    }

    /// Their mean.
    pub fn mean(&self) -> Duration {
        Duration::from_secs_f64(self.0.mean() / 1e6)
    }

    /// Their percentiles.
    pub fn percentiles(&self) -> Percentiles {
        Percentiles::of_histogram(&self.0)
    }
}

impl Default for PageTimes {
    fn default() -> Self {
        let highest = u64::try_from(Self::HIGHEST.as_micros()).unwrap_or(u64::MAX);
        // The bounds are valid constants (1 <= 2 * 1, 3 significant digits), so this
        // cannot fail; an auto-resizing histogram is the fallback all the same.
        PageTimes(
            Histogram::new_with_bounds(1, highest, 3)
                .or_else(|_| Histogram::new(3))
                .unwrap_or_else(|_| unreachable!("3 significant digits are valid")),
        )
    }
}

/// Outcomes of a crawl so far.
#[derive(Debug, Default)]
pub struct CrawlStats {
    /// Pages read successfully.
    pub ok: u64,
    /// Lines written with an error.
    pub failed: u64,
    /// Time of every job sent to the pool.
    pub page_times: PageTimes,
    /// Failures by error kind name.
    pub errors: BTreeMap<String, u64>,
    /// Successful pages whose session had served an earlier job.
    pub reused: u64,
    /// Links found on pages and queued.
    pub links_queued: u64,
    /// Links found on pages and dropped, by reason.
    pub links_dropped: Dropped,
    /// The whole crawl's counts when the frontier is shared (`--frontier`).
    pub shared: Option<Totals>,
}

impl CrawlStats {
    /// Lines written.
    pub fn done(&self) -> u64 {
        self.ok + self.failed
    }

    /// How the crawl went.
    pub fn verdict(&self) -> Verdict {
        if self.failed == 0 {
            Verdict::AllOk
        } else if self.ok > 0 {
            Verdict::SomeFailed
        } else if self
            .errors
            .keys()
            .all(|kind| POOL_KINDS.contains(&kind.as_str()))
        {
            Verdict::PoolBroke
        } else {
            Verdict::NoneSucceeded
        }
    }

    /// The verdict in words, for the summary and the final error message.
    pub fn verdict_text(&self) -> String {
        let kinds = || self.errors.keys().cloned().collect::<Vec<_>>().join(", ");
        match self.verdict() {
            Verdict::AllOk => format!("all {} pages ok", self.ok),
            Verdict::SomeFailed => format!(
                "{} of {} pages failed (see the `error` of their lines)",
                self.failed,
                self.done()
            ),
            Verdict::NoneSucceeded => {
                format!("no page succeeded ({} failed: {})", self.failed, kinds())
            }
            Verdict::PoolBroke => format!(
                "the pool broke: every page ({}) failed with {}, errors of the pool, not of \
                 the pages; see the messages above",
                self.failed,
                kinds()
            ),
        }
    }

    /// What the process reports: nothing for a crawl whose pages all succeeded, else
    /// the exit code and message of its verdict.
    pub fn outcome(&self) -> Result<(), Fatal> {
        let code = match self.verdict() {
            Verdict::AllOk => return Ok(()),
            Verdict::SomeFailed => EXIT_SOME_FAILED,
            Verdict::NoneSucceeded | Verdict::PoolBroke => EXIT_NONE_SUCCEEDED,
        };
        Err(Fatal {
            code,
            message: self.verdict_text(),
        })
    }

    /// The summary table printed at the end of a crawl.
    pub fn summary(&self, elapsed: Duration, snapshot: &Snapshot, interrupted: bool) -> String {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let lat = self.page_times.percentiles();
        let c = &snapshot.counters;
        let mut out = String::new();
        let title = if interrupted {
            "crawl summary (interrupted)"
        } else {
            "crawl summary"
        };
        let _ = writeln!(out, "{title}");
        let _ = writeln!(out, "  {:<16}{}", "pages", self.done());
        let _ = writeln!(out, "  {:<16}{}", "ok", self.ok);
        let _ = writeln!(out, "  {:<16}{}", "failed", self.failed);
        let _ = writeln!(out, "  {:<16}{}", "result", self.verdict_text());
        let _ = writeln!(out, "  {:<16}{:.2} s", "elapsed", elapsed.as_secs_f64());
        let _ = writeln!(
            out,
            "  {:<16}{:.1} pages/s",
            "throughput",
            self.done() as f64 / secs
        );
        let _ = writeln!(
            out,
            "  {:<16}p50 {:.1} ms   p95 {:.1} ms   p99 {:.1} ms   max {:.1} ms",
            "page time", lat.p50_ms, lat.p95_ms, lat.p99_ms, lat.max_ms
        );
        let _ = writeln!(
            out,
            "  {:<16}{:.1}%  ({} sessions opened, {} reuses)",
            "reuse rate",
            100.0 * snapshot.reuse_rate(),
            c.sessions_created,
            c.sessions_reused
        );
        let d = self.links_dropped;
        if self.links_queued + d.outside + d.over_page_cap + d.queue_full > 0 {
            let _ = writeln!(
                out,
                "  {:<16}{} queued; dropped: {} outside --follow, {} over the per-page cap, \
                 {} frontier full",
                "links", self.links_queued, d.outside, d.over_page_cap, d.queue_full
            );
        }
        if let Some(t) = &self.shared {
            self.shared_lines(&mut out, t);
        }
        if self.errors.is_empty() {
            let _ = writeln!(out, "  {:<16}none", "errors");
        } else {
            let _ = writeln!(out, "  errors by kind");
            for (kind, n) in &self.errors {
                let _ = writeln!(out, "    {kind:<22}{n:>6}");
            }
        }
        out
    }
}

impl CrawlStats {
    /// The lines of a shared crawl: the whole crawl's counts, and what Redis cost this
    /// node per page.
    fn shared_lines(&self, out: &mut String, t: &Totals) {
        let _ = writeln!(
            out,
            "  {:<16}{} URLs queued, {} finished, {} reclaimed from dead nodes, {} visited \
             late by a node taken for dead; {} nodes live at the end",
            "whole crawl", t.admitted, t.done, t.reclaimed, t.late, t.nodes
        );
        if t.released > 0 {
            let _ = writeln!(
                out,
                "  {:<16}{} unfinished URLs given back to the other nodes",
                "released", t.released
            );
        }
        let pages = self.done().max(1) as f64;
        let per_page = t.redis_time.as_secs_f64() / pages;
        let page = self.page_times.mean().as_secs_f64();
        let share = if page > 0.0 {
            100.0 * per_page / page
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "  {:<16}{:.2} round trips and {:.2} ms per page ({:.1}% of the mean page time)",
            "redis",
            t.round_trips as f64 / pages,
            per_page * 1e3,
            share
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let p = Percentiles::of(&samples);
        assert_eq!(
            (p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms),
            (50.0, 95.0, 99.0, 100.0)
        );
        assert_eq!(Percentiles::of(&[]), Percentiles::default());
        let one = Percentiles::of(&[7.0]);
        assert_eq!((one.p50_ms, one.p99_ms), (7.0, 7.0));
    }

    #[test]
    fn page_times_keep_percentiles_in_a_fixed_size() {
        let mut times = PageTimes::default();
        let before = times.0.distinct_values();
        for ms in (1..=100).rev() {
            for _ in 0..1000 {
                times.record(Duration::from_millis(ms));
            }
        }
        assert_eq!(times.0.distinct_values(), before, "no growth with samples");
        let p = times.percentiles();
        assert_eq!(p.count, 100_000);
        let close = |got: f64, want: f64| (got - want).abs() <= want * 1e-3;
        assert!(close(p.p50_ms, 50.0), "{p:?}");
        assert!(close(p.p95_ms, 95.0), "{p:?}");
        assert!(close(p.p99_ms, 99.0), "{p:?}");
        assert!(close(p.max_ms, 100.0), "{p:?}");
    }

    #[test]
    fn page_times_take_any_duration() {
        let mut times = PageTimes::default();
        assert_eq!(times.percentiles(), Percentiles::default());
        times.record(Duration::ZERO);
        times.record(Duration::MAX);
        let p = times.percentiles();
        assert_eq!(p.count, 2);
        let week_ms = PageTimes::HIGHEST.as_secs_f64() * 1e3;
        assert!(p.max_ms >= week_ms && p.max_ms <= week_ms * 1.001, "{p:?}");
    }

    fn stats(ok: u64, errors: &[(&str, u64)]) -> CrawlStats {
        CrawlStats {
            ok,
            failed: errors.iter().map(|(_, n)| n).sum(),
            errors: errors.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect(),
            ..CrawlStats::default()
        }
    }

    #[test]
    fn the_verdict_sets_the_exit_code() {
        assert_eq!(stats(3, &[]).verdict(), Verdict::AllOk);
        assert!(stats(0, &[]).outcome().is_ok(), "an empty crawl is ok");
        let some = stats(3, &[("navigation", 1)]);
        assert_eq!(some.verdict(), Verdict::SomeFailed);
        assert_eq!(some.outcome().unwrap_err().code, EXIT_SOME_FAILED);
        let none = stats(0, &[("navigation", 2), ("shutdown", 1)]);
        assert_eq!(none.verdict(), Verdict::NoneSucceeded);
        assert_eq!(none.outcome().unwrap_err().code, EXIT_NONE_SUCCEEDED);
        assert!(none.verdict_text().starts_with("no page succeeded"));
    }

    #[test]
    fn a_shared_crawl_reports_the_whole_crawl_and_its_redis_cost() {
        let mut s = stats(4, &[]);
        for _ in 0..4 {
            s.page_times.record(Duration::from_millis(100));
        }
        let t = Totals {
            admitted: 10,
            done: 9,
            reclaimed: 2,
            late: 1,
            nodes: 3,
            round_trips: 6,
            redis_time: Duration::from_millis(4),
            released: 0,
            links_queued: 0,
        };
        let mut text = String::new();
        s.shared_lines(&mut text, &t);
        assert!(
            text.contains(
                "10 URLs queued, 9 finished, 2 reclaimed from dead nodes, 1 visited late"
            ),
            "{text}"
        );
        // 6 calls and 4 ms over 4 pages of 100 ms: 1.5 each, 1 ms, 1% of a page.
        assert!(
            text.contains("1.50 round trips and 1.00 ms per page (1.0% of the mean page time)"),
            "{text}"
        );
        assert!(!text.contains("given back"), "nothing released: no line");
    }

    #[test]
    fn a_pool_that_broke_is_named_as_such() {
        let broke = stats(0, &[("shutdown", 290), ("other", 10)]);
        assert_eq!(broke.verdict(), Verdict::PoolBroke);
        assert_eq!(broke.outcome().unwrap_err().code, EXIT_NONE_SUCCEEDED);
        let text = broke.verdict_text();
        assert!(text.starts_with("the pool broke"), "{text}");
        // One page that worked means the pool did.
        assert_eq!(
            stats(1, &[("shutdown", 299)]).verdict(),
            Verdict::SomeFailed
        );
    }
}
