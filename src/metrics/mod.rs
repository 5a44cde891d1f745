//! Latency histograms, counters and gauges, and the merged [`Snapshot`].
//!
//! Each shard records into its own `ShardMetrics` (no locks, no atomics: only its
//! thread touches it). [`Pool::metrics`](crate::Pool::metrics) asks every shard for a
//! copy and merges them into one [`Snapshot`]. Counters and gauges are declared once,
//! in `table.rs`; the histograms are in `histograms.rs`; the Prometheus text and the
//! reports for people only read those (`prometheus.rs`, `report.rs`). Recording never
//! allocates and never fails.

mod histograms;
mod prometheus;
mod report;
mod table;

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::job::Priority;

pub use histograms::{CommandLatency, FlushSizes, Latency};
pub use report::{Comparison, LatencyChange};
pub use table::{Counters, Gauges};

use histograms::{record, Histograms};

/// The CDP domain groups command latency is recorded under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainGroup {
    /// `Page.navigate`, `Page.reload` and other page-loading commands.
    Navigation,
    /// `DOM`, `CSS`, `DOMSnapshot`.
    Dom,
    /// `Network`, `Fetch`.
    Network,
    /// `Runtime`.
    Runtime,
    /// Everything else.
    Other,
}

impl DomainGroup {
    /// All groups, in label order.
    pub const ALL: [DomainGroup; 5] = [
        DomainGroup::Navigation,
        DomainGroup::Dom,
        DomainGroup::Network,
        DomainGroup::Runtime,
        DomainGroup::Other,
    ];

    /// The group of a CDP method name.
    pub fn of(method: &str) -> DomainGroup {
        let domain = method.split('.').next().unwrap_or("");
        match domain {
            "Page" => match method {
                "Page.navigate"
                | "Page.reload"
                | "Page.navigateToHistoryEntry"
                | "Page.stopLoading" => DomainGroup::Navigation,
                _ => DomainGroup::Other,
            },
            "DOM" | "CSS" | "DOMSnapshot" => DomainGroup::Dom,
            "Network" | "Fetch" => DomainGroup::Network,
            "Runtime" => DomainGroup::Runtime,
            _ => DomainGroup::Other,
        }
    }

    /// A lowercase label.
    pub fn as_str(self) -> &'static str {
        match self {
            DomainGroup::Navigation => "navigation",
            DomainGroup::Dom => "dom",
            DomainGroup::Network => "network",
            DomainGroup::Runtime => "runtime",
            DomainGroup::Other => "other",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// One shard's metrics. Owned by the shard's thread; nothing else touches it.
#[derive(Clone, Default)]
pub(crate) struct ShardMetrics {
    pub(crate) counters: Counters,
    pub(crate) histograms: Histograms,
}

impl ShardMetrics {
    pub(crate) fn acquire_wait(&mut self, d: Duration) {
        record(&mut self.histograms.acquire_wait, d);
    }

    pub(crate) fn session_created(&mut self, d: Duration) {
        self.counters.sessions_created += 1;
        record(&mut self.histograms.create, d);
    }

    pub(crate) fn job_done(&mut self, d: Duration, ok: bool) {
        record(&mut self.histograms.job, d);
        if ok {
            self.counters.jobs_ok += 1;
        } else {
            self.counters.jobs_failed += 1;
        }
    }

    pub(crate) fn command(&mut self, method: &str, d: Duration, ok: bool, batched: bool) {
        self.counters.commands += 1;
        if batched {
            self.counters.batched_commands += 1;
        }
        if !ok {
            self.counters.command_failures += 1;
        }
        record(
            &mut self.histograms.command[DomainGroup::of(method).index()],
            d,
        );
    }

    pub(crate) fn flush(&mut self, frames: u64) {
        self.histograms
            .frames_per_flush
            .saturating_record(frames.max(1));
    }
}

/// The whole pool's metrics at one moment: every shard's, merged.
#[derive(Clone, Serialize)]
pub struct Snapshot {
    /// Shards that answered.
    pub shards: usize,
    /// Event counts.
    pub counters: Counters,
    /// Current levels.
    pub gauges: Gauges,
    /// Time from request to session in hand.
    pub acquire_wait: Latency,
    /// Time to open a session.
    pub session_create: Latency,
    /// Time from request to job result.
    pub job: Latency,
    /// Command round trips per domain group.
    pub command: CommandLatency,
    /// Frames written per socket flush.
    pub frames_per_flush: FlushSizes,
}

/// One shard's report, sent to the pool on request.
#[derive(Clone)]
pub(crate) struct ShardReport {
    pub(crate) metrics: ShardMetrics,
    pub(crate) gauges: Gauges,
}

/// One latency summary as the Prometheus text and the human table name it.
struct Summary<'a> {
    /// Prometheus family before `_seconds`.
    family: &'static str,
    help: &'static str,
    /// The `group` label of command latencies.
    group: Option<DomainGroup>,
    /// The name in the human table (followed by the group, if any).
    label: &'static str,
    latency: &'a Latency,
}

impl Snapshot {
    pub(crate) fn merge(reports: &[ShardReport]) -> Snapshot {
        let mut counters = Counters::default();
        let mut gauges = Gauges::default();
        let mut histograms = Histograms::default();
        for r in reports {
            counters.add(&r.metrics.counters);
            gauges.add(&r.gauges);
            histograms.add(&r.metrics.histograms);
        }
        Snapshot {
            shards: reports.len(),
            counters,
            gauges,
            acquire_wait: Latency::of(&histograms.acquire_wait),
            session_create: Latency::of(&histograms.create),
            job: Latency::of(&histograms.job),
            command: CommandLatency::of(&histograms.command),
            frames_per_flush: FlushSizes::of(&histograms.frames_per_flush),
        }
    }

    /// Reused / (reused + created) acquisitions; 0 when there were none.
    pub fn reuse_rate(&self) -> f64 {
        let c = &self.counters;
        let total = c.sessions_reused + c.sessions_created;
        if total == 0 {
            0.0
        } else {
            c.sessions_reused as f64 / total as f64
        }
    }

    /// Waiting requests of one class.
    pub fn waiting(&self, priority: Priority) -> u64 {
        self.gauges.waiting_by_class[priority.index()]
    }

    /// Every latency summary, in report order.
    fn summaries(&self) -> impl Iterator<Item = Summary<'_>> {
        let whole = [
            ("job", "Time from request to job result.", "job", &self.job),
            (
                "acquire_wait",
                "Time from request to session in hand.",
                "acquire wait",
                &self.acquire_wait,
            ),
            (
                "session_create",
                "Time to open a session.",
                "session open",
                &self.session_create,
            ),
        ]
        .map(|(family, help, label, latency)| Summary {
            family,
            help,
            group: None,
            label,
            latency,
        });
        let commands = DomainGroup::ALL.map(|g| Summary {
            family: "command",
            help: "CDP command round trip, by domain group.",
            group: Some(g),
            label: "cmd",
            latency: self.command.get(g),
        });
        whole.into_iter().chain(commands)
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("shards", &self.shards)
            .field("counters", &self.counters)
            .field("gauges", &self.gauges)
            .field("acquire_wait", &self.acquire_wait)
            .field("job", &self.job)
            .finish_non_exhaustive()
    }
}

/// How a connection's commands and flushes reach its shard's metrics.
impl crate::cdp::TransportObserver for std::cell::RefCell<ShardMetrics> {
    fn command(&self, method: &str, latency: Duration, ok: bool, batched: bool) {
        self.borrow_mut().command(method, latency, ok, batched);
    }

    fn command_timed_out(&self) {
        self.borrow_mut()
            .counters
            .timeout(crate::error::TimeoutKind::Command);
    }

    fn blocked_request(&self) {
        self.borrow_mut().counters.blocked_requests += 1;
    }

    fn intercept_timed_out(&self) {
        self.borrow_mut().counters.intercept_timeouts += 1;
    }

    fn flush(&self, frames: u64) {
        self.borrow_mut().flush(frames);
    }

    fn malformed_frame(&self) {
        self.borrow_mut().counters.malformed_frames += 1;
    }

    fn events_dropped(&self, n: u64) {
        self.borrow_mut().counters.events_dropped += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_groups() {
        assert_eq!(DomainGroup::of("Page.navigate"), DomainGroup::Navigation);
        assert_eq!(DomainGroup::of("Page.enable"), DomainGroup::Other);
        assert_eq!(DomainGroup::of("DOM.getDocument"), DomainGroup::Dom);
        assert_eq!(DomainGroup::of("Fetch.enable"), DomainGroup::Network);
        assert_eq!(DomainGroup::of("Runtime.evaluate"), DomainGroup::Runtime);
        assert_eq!(DomainGroup::of("garbage"), DomainGroup::Other);
    }

    #[test]
    fn merge_adds_counts_and_histograms() {
        let mut a = ShardMetrics::default();
        a.session_created(Duration::from_millis(30));
        a.counters.sessions_reused = 3;
        a.command("Runtime.evaluate", Duration::from_micros(200), true, false);
        let mut b = ShardMetrics::default();
        b.session_created(Duration::from_millis(40));
        b.command("Runtime.evaluate", Duration::from_micros(300), false, true);
        let gauges = Gauges {
            idle: 1,
            busy: 2,
            ..Gauges::default()
        };
        let s = Snapshot::merge(&[
            ShardReport { metrics: a, gauges },
            ShardReport { metrics: b, gauges },
        ]);
        assert_eq!(s.counters.sessions_created, 2);
        assert_eq!(s.session_create.count, 2);
        assert_eq!(s.command.runtime.count, 2);
        assert_eq!(s.counters.command_failures, 1);
        assert_eq!(s.counters.batched_commands, 1);
        assert_eq!(s.gauges.live(), 6);
        assert!((s.reuse_rate() - 0.6).abs() < 1e-9);
    }
}
