//! Reports for people: the human table of a [`Snapshot`] and the before/after
//! [`Comparison`] the seed asks for.
//!
//! Counter and gauge lines come from their tables (`table.rs`); this file names no
//! counter.

use std::fmt;

use serde::Serialize;

use super::table::Row;
use super::{Counters, Gauges, Latency, Snapshot};

impl fmt::Display for Snapshot {
    /// A table for people: one line per counter section, then one per latency.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "cdpmux: {} shards   reuse rate {:.1}%",
            self.shards,
            100.0 * self.reuse_rate()
        )?;
        sections(f, Counters::ROWS, &self.counters)?;
        sections(f, Gauges::ROWS, &self.gauges)?;
        writeln!(
            f,
            "  {:<18} {:>8} {:>9} {:>9} {:>9} {:>9}",
            "latency (ms)", "count", "p50", "p95", "p99", "max"
        )?;
        for s in self.summaries() {
            let l = s.latency;
            if l.count == 0 {
                continue;
            }
            let name = match s.group {
                Some(g) => format!("{} {}", s.label, g.as_str()),
                None => s.label.to_owned(),
            };
            writeln!(
                f,
                "  {name:<18} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                l.count, l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms
            )?;
        }
        Ok(())
    }
}

/// One line per run of rows with the same section: `  section   label n  label n`.
fn sections<T>(f: &mut fmt::Formatter<'_>, rows: &[Row<T>], values: &T) -> fmt::Result {
    let mut section = None;
    for r in rows {
        let gap = if section == Some(r.section) {
            "  "
        } else {
            if section.is_some() {
                writeln!(f)?;
            }
            write!(f, "  {:<10}", r.section)?;
            section = Some(r.section);
            " "
        };
        write!(f, "{gap}{} {}", r.label, (r.read)(values))?;
    }
    if section.is_some() {
        writeln!(f)?;
    }
    Ok(())
}

/// How a [`Snapshot`] compares with a baseline: the seed's before/after report.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Comparison {
    /// Whole-job latency, before and after.
    pub job: LatencyChange,
    /// Acquire wait, before and after.
    pub acquire_wait: LatencyChange,
    /// Reuse rate of the baseline.
    pub reuse_rate_before: f64,
    /// Reuse rate now.
    pub reuse_rate_after: f64,
    /// The cut in job latency aimed for (0.30 = 30%), at p50 and p99.
    pub target_cut: f64,
    /// True when the job latency cut reaches `target_cut` at both p50 and p99.
    pub target_met: bool,
}

impl Comparison {
    /// The same comparison judged against another target cut (0.55 = 55%).
    pub fn with_target(mut self, cut: f64) -> Self {
        self.target_cut = cut;
        self.target_met = self.job.p50_cut >= cut && self.job.p99_cut >= cut;
        self
    }
}

/// One latency before and after; a cut of 0.4 means 40% lower.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencyChange {
    /// Baseline p50, ms.
    pub p50_before_ms: f64,
    /// Current p50, ms.
    pub p50_after_ms: f64,
    /// Baseline p95, ms.
    pub p95_before_ms: f64,
    /// Current p95, ms.
    pub p95_after_ms: f64,
    /// Baseline p99, ms.
    pub p99_before_ms: f64,
    /// Current p99, ms.
    pub p99_after_ms: f64,
    /// 1 - after/before at p50.
    pub p50_cut: f64,
    /// 1 - after/before at p95.
    pub p95_cut: f64,
    /// 1 - after/before at p99.
    pub p99_cut: f64,
}

impl LatencyChange {
    fn between(before: &Latency, after: &Latency) -> LatencyChange {
        let cut = |b: f64, a: f64| if b > 0.0 { 1.0 - a / b } else { 0.0 };
        LatencyChange {
            p50_before_ms: before.p50_ms,
            p50_after_ms: after.p50_ms,
            p95_before_ms: before.p95_ms,
            p95_after_ms: after.p95_ms,
            p99_before_ms: before.p99_ms,
            p99_after_ms: after.p99_ms,
            p50_cut: cut(before.p50_ms, after.p50_ms),
            p95_cut: cut(before.p95_ms, after.p95_ms),
            p99_cut: cut(before.p99_ms, after.p99_ms),
        }
    }
}

impl Snapshot {
    /// Compares this snapshot (after) with `baseline` (before), judged against the
    /// seed's 30% target; see [`Comparison::with_target`] for another.
    pub fn compare(&self, baseline: &Snapshot) -> Comparison {
        Comparison {
            job: LatencyChange::between(&baseline.job, &self.job),
            acquire_wait: LatencyChange::between(&baseline.acquire_wait, &self.acquire_wait),
            reuse_rate_before: baseline.reuse_rate(),
            reuse_rate_after: self.reuse_rate(),
            target_cut: 0.0,
            target_met: false,
        }
        .with_target(0.30)
    }
}
