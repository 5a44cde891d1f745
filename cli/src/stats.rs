//! Latency percentiles and outcome counts gathered by the CLI itself, and the crawl
//! summary table built from them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use cdpmux::Snapshot;

use crate::frontier::Dropped;

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
    /// Computes them from samples in milliseconds (any order; NaNs sort last).
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
}

/// Outcomes of a crawl so far.
#[derive(Debug, Default)]
pub struct CrawlStats {
    /// Pages read successfully.
    pub ok: u64,
    /// Lines written with an error.
    pub failed: u64,
    /// Time of every job sent to the pool, ms.
    pub latencies_ms: Vec<f64>,
    /// Failures by error kind name.
    pub errors: BTreeMap<String, u64>,
    /// Successful pages whose session had served an earlier job.
    pub reused: u64,
    /// Links found on pages and queued.
    pub links_queued: u64,
    /// Links found on pages and dropped, by reason.
    pub links_dropped: Dropped,
}

impl CrawlStats {
    /// Lines written.
    pub fn done(&self) -> u64 {
        self.ok + self.failed
    }

    /// The summary table printed at the end of a crawl.
    pub fn summary(&self, elapsed: Duration, snapshot: &Snapshot, interrupted: bool) -> String {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let lat = Percentiles::of(&self.latencies_ms);
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
}
