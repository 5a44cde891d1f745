//! Latency histograms, counters and gauges.
//!
//! Each shard records into its own [`ShardMetrics`] (no locks, no atomics: only its
//! thread touches it). [`Pool::metrics`](crate::Pool::metrics) asks every shard for a
//! copy and merges them into one [`Snapshot`].

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::job::Priority;
use crate::TimeoutKind;

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

    fn index(self) -> usize {
        self as usize
    }
}

/// Event counts since the pool started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Counters {
    /// Jobs (`run` calls and leases) that finished successfully.
    pub jobs_ok: u64,
    /// Jobs that finished with an error (any kind, including timeouts).
    pub jobs_failed: u64,
    /// CDP commands answered or failed.
    pub commands: u64,
    /// Of those, commands sent as part of a pipelined batch.
    pub batched_commands: u64,
    /// Commands that failed (CDP error, timeout, crash, closed socket).
    pub command_failures: u64,
    /// Sessions opened.
    pub sessions_created: u64,
    /// Session openings that failed.
    pub session_create_failures: u64,
    /// Acquisitions served by an already open session.
    pub sessions_reused: u64,
    /// Sessions closed on purpose (uses, age, idleness, shrink, failed reset).
    pub sessions_retired: u64,
    /// Sessions lost to a crash, a detach or a lost connection.
    pub sessions_crashed: u64,
    /// Waits that passed their deadline.
    pub timeouts_wait: u64,
    /// Session openings that passed their deadline.
    pub timeouts_create: u64,
    /// Commands that passed their deadline.
    pub timeouts_command: u64,
    /// Jobs that passed their deadline.
    pub timeouts_job: u64,
    /// Requests refused because the queue was full.
    pub queue_full: u64,
    /// Requests this pool's shards took from another shard's overflow.
    pub steals: u64,
    /// Requests a saturated shard offered to the others.
    pub overflowed: u64,
    /// Requests served by the session their affinity key prefers.
    pub affinity_hits: u64,
    /// Requests with a key that got another session.
    pub affinity_misses: u64,
    /// Jobs re-run on a fresh session after their session was lost.
    pub retries: u64,
}

impl Counters {
    fn add(&mut self, o: &Counters) {
        let Counters {
            jobs_ok,
            jobs_failed,
            commands,
            batched_commands,
            command_failures,
            sessions_created,
            session_create_failures,
            sessions_reused,
            sessions_retired,
            sessions_crashed,
            timeouts_wait,
            timeouts_create,
            timeouts_command,
            timeouts_job,
            queue_full,
            steals,
            overflowed,
            affinity_hits,
            affinity_misses,
            retries,
        } = o;
        self.jobs_ok += jobs_ok;
        self.jobs_failed += jobs_failed;
        self.commands += commands;
        self.batched_commands += batched_commands;
        self.command_failures += command_failures;
        self.sessions_created += sessions_created;
        self.session_create_failures += session_create_failures;
        self.sessions_reused += sessions_reused;
        self.sessions_retired += sessions_retired;
        self.sessions_crashed += sessions_crashed;
        self.timeouts_wait += timeouts_wait;
        self.timeouts_create += timeouts_create;
        self.timeouts_command += timeouts_command;
        self.timeouts_job += timeouts_job;
        self.queue_full += queue_full;
        self.steals += steals;
        self.overflowed += overflowed;
        self.affinity_hits += affinity_hits;
        self.affinity_misses += affinity_misses;
        self.retries += retries;
    }

    pub(crate) fn timeout(&mut self, kind: TimeoutKind) {
        match kind {
            TimeoutKind::Wait => self.timeouts_wait += 1,
            TimeoutKind::Create => self.timeouts_create += 1,
            TimeoutKind::Command => self.timeouts_command += 1,
            TimeoutKind::Job => self.timeouts_job += 1,
            TimeoutKind::Event | TimeoutKind::Launch => {}
        }
    }
}

/// Current levels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Gauges {
    /// Open sessions not in use.
    pub idle: u64,
    /// Sessions in use by a job or a lease (including ones being reset).
    pub busy: u64,
    /// Sessions being opened.
    pub creating: u64,
    /// Requests waiting for a session.
    pub waiting: u64,
    /// Waiting requests per class, `Low` first.
    pub waiting_by_class: [u64; 4],
}

impl Gauges {
    fn add(&mut self, o: &Gauges) {
        self.idle += o.idle;
        self.busy += o.busy;
        self.creating += o.creating;
        self.waiting += o.waiting;
        for (a, b) in self.waiting_by_class.iter_mut().zip(o.waiting_by_class) {
            *a += b;
        }
    }

    /// Open sessions: idle + busy.
    pub fn live(&self) -> u64 {
        self.idle + self.busy
    }
}

fn histogram() -> Histogram<u64> {
    // Microseconds from 1 µs to 1 hour, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds are valid")
}

/// Records a duration in microseconds, saturating at the histogram's top.
fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_micros() as u64).max(1));
}

/// The histograms one shard (or a merged snapshot) keeps.
#[derive(Clone)]
pub(crate) struct Histograms {
    pub(crate) acquire_wait: Histogram<u64>,
    pub(crate) create: Histogram<u64>,
    pub(crate) job: Histogram<u64>,
    pub(crate) command: [Histogram<u64>; 5],
    /// Frames per socket flush (a count, not a time).
    pub(crate) frames_per_flush: Histogram<u64>,
}

impl Default for Histograms {
    fn default() -> Self {
        Histograms {
            acquire_wait: histogram(),
            create: histogram(),
            job: histogram(),
            command: std::array::from_fn(|_| histogram()),
            frames_per_flush: Histogram::new_with_bounds(1, 1 << 20, 3)
                .expect("static bounds are valid"),
        }
    }
}

impl Histograms {
    fn add(&mut self, o: &Histograms) {
        let _ = self.acquire_wait.add(&o.acquire_wait);
        let _ = self.create.add(&o.create);
        let _ = self.job.add(&o.job);
        for (a, b) in self.command.iter_mut().zip(&o.command) {
            let _ = a.add(b);
        }
        let _ = self.frames_per_flush.add(&o.frames_per_flush);
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

/// p50/p95/p99 and friends of one histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Samples recorded.
    pub count: u64,
    /// Mean, ms.
    pub mean_ms: f64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
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
    /// Frames written per socket flush: `p50_ms` etc. hold frame counts here, not ms.
    pub frames_per_flush: Latency,
}

/// Command latency per [`DomainGroup`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CommandLatency {
    /// Page loading commands.
    pub navigation: Latency,
    /// DOM, CSS.
    pub dom: Latency,
    /// Network, Fetch.
    pub network: Latency,
    /// Runtime.
    pub runtime: Latency,
    /// Everything else.
    pub other: Latency,
}

/// One shard's report, sent to the pool on request.
#[derive(Clone)]
pub(crate) struct ShardReport {
    pub(crate) metrics: ShardMetrics,
    pub(crate) gauges: Gauges,
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
        let c = &histograms.command;
        Snapshot {
            shards: reports.len(),
            counters,
            gauges,
            acquire_wait: Latency::of(&histograms.acquire_wait),
            session_create: Latency::of(&histograms.create),
            job: Latency::of(&histograms.job),
            command: CommandLatency {
                navigation: Latency::of(&c[0]),
                dom: Latency::of(&c[1]),
                network: Latency::of(&c[2]),
                runtime: Latency::of(&c[3]),
                other: Latency::of(&c[4]),
            },
            frames_per_flush: {
                let h = &histograms.frames_per_flush;
                let mut l = Latency::of(h);
                // Counts, not microseconds: undo the ms scaling.
                for v in [
                    &mut l.mean_ms,
                    &mut l.p50_ms,
                    &mut l.p95_ms,
                    &mut l.p99_ms,
                    &mut l.max_ms,
                ] {
                    *v *= 1000.0;
                }
                l
            },
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
