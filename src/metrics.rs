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
    /// `run` jobs that finished successfully (leases are counted by `sessions_reused`
    /// and `sessions_created`, not here).
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
    /// Of the reuses, leased sessions handed straight from one `acquire` caller to the
    /// next without a trip through their shard (see [`Config::lease_handoff`](crate::Config)).
    pub handoffs: u64,
    /// Of the hand-offs, those to `acquire` callers who had joined the line by
    /// themselves, without a message to the shard.
    pub joined_handoffs: u64,
    /// Of the hand-offs, those to a caller waiting in another shard's line (a pool's
    /// open lines drain as one).
    pub cross_shard_handoffs: u64,
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
    /// Sockets re-opened after one was lost.
    pub reconnects: u64,
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
            handoffs,
            joined_handoffs,
            cross_shard_handoffs,
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
            reconnects,
        } = o;
        self.jobs_ok += jobs_ok;
        self.jobs_failed += jobs_failed;
        self.commands += commands;
        self.batched_commands += batched_commands;
        self.command_failures += command_failures;
        self.sessions_created += sessions_created;
        self.session_create_failures += session_create_failures;
        self.sessions_reused += sessions_reused;
        self.handoffs += handoffs;
        self.joined_handoffs += joined_handoffs;
        self.cross_shard_handoffs += cross_shard_handoffs;
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
        self.reconnects += reconnects;
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
    /// Affinity keys remembered (bounded by `affinity_capacity` per shard).
    pub affinity_keys: u64,
    /// Shards whose line is open: every session out, nobody queued, so a plain
    /// `acquire` joins the line directly (see [`Config::lease_handoff`](crate::Config)).
    pub open_lines: u64,
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
        self.affinity_keys += o.affinity_keys;
        self.open_lines += o.open_lines;
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

    /// The snapshot in the Prometheus text exposition format (version 0.0.4).
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let c = &self.counters;
        let mut counter = |name: &str, help: &str, samples: &[(&str, u64)]| {
            out.push_str(&format!(
                "# HELP cdpmux_{name} {help}\n# TYPE cdpmux_{name} counter\n"
            ));
            for (labels, v) in samples {
                out.push_str(&format!("cdpmux_{name}{labels} {v}\n"));
            }
        };
        counter(
            "jobs_total",
            "Jobs finished, by outcome.",
            &[
                ("{outcome=\"ok\"}", c.jobs_ok),
                ("{outcome=\"error\"}", c.jobs_failed),
            ],
        );
        counter(
            "commands_total",
            "CDP commands answered or failed.",
            &[("", c.commands)],
        );
        counter(
            "batched_commands_total",
            "CDP commands sent in pipelined batches.",
            &[("", c.batched_commands)],
        );
        counter(
            "command_failures_total",
            "CDP commands that failed.",
            &[("", c.command_failures)],
        );
        counter(
            "sessions_created_total",
            "Sessions opened.",
            &[("", c.sessions_created)],
        );
        counter(
            "session_create_failures_total",
            "Session openings that failed.",
            &[("", c.session_create_failures)],
        );
        counter(
            "sessions_reused_total",
            "Acquisitions served by an open session.",
            &[("", c.sessions_reused)],
        );
        counter(
            "handoffs_total",
            "Leased sessions handed straight to the next caller.",
            &[("", c.handoffs)],
        );
        counter(
            "joined_handoffs_total",
            "Hand-offs to callers who joined the line by themselves.",
            &[("", c.joined_handoffs)],
        );
        counter(
            "cross_shard_handoffs_total",
            "Hand-offs to callers in another shard's line.",
            &[("", c.cross_shard_handoffs)],
        );
        counter(
            "sessions_retired_total",
            "Sessions closed on purpose.",
            &[("", c.sessions_retired)],
        );
        counter(
            "sessions_crashed_total",
            "Sessions lost to crashes or lost connections.",
            &[("", c.sessions_crashed)],
        );
        counter(
            "timeouts_total",
            "Deadlines that passed, by kind.",
            &[
                ("{kind=\"wait\"}", c.timeouts_wait),
                ("{kind=\"create\"}", c.timeouts_create),
                ("{kind=\"command\"}", c.timeouts_command),
                ("{kind=\"job\"}", c.timeouts_job),
            ],
        );
        counter(
            "queue_full_total",
            "Requests refused because the queue was full.",
            &[("", c.queue_full)],
        );
        counter(
            "steals_total",
            "Requests taken from another shard's overflow.",
            &[("", c.steals)],
        );
        counter(
            "overflowed_total",
            "Requests a saturated shard offered to others.",
            &[("", c.overflowed)],
        );
        counter(
            "affinity_total",
            "Keyed requests, by whether they got their preferred session.",
            &[
                ("{result=\"hit\"}", c.affinity_hits),
                ("{result=\"miss\"}", c.affinity_misses),
            ],
        );
        counter(
            "retries_total",
            "Jobs re-run after a lost session.",
            &[("", c.retries)],
        );
        counter(
            "reconnects_total",
            "Sockets re-opened after one was lost.",
            &[("", c.reconnects)],
        );

        let g = &self.gauges;
        out.push_str("# HELP cdpmux_sessions Open or opening sessions, by state.\n# TYPE cdpmux_sessions gauge\n");
        for (state, v) in [("idle", g.idle), ("busy", g.busy), ("creating", g.creating)] {
            out.push_str(&format!("cdpmux_sessions{{state=\"{state}\"}} {v}\n"));
        }
        out.push_str("# HELP cdpmux_waiting Requests waiting for a session, by priority.\n# TYPE cdpmux_waiting gauge\n");
        for p in Priority::ALL {
            out.push_str(&format!(
                "cdpmux_waiting{{priority=\"{}\"}} {}\n",
                p.as_str(),
                g.waiting_by_class[p.index()]
            ));
        }
        out.push_str(&format!(
            "# HELP cdpmux_open_lines Shards whose line plain acquire callers join directly.\n# TYPE cdpmux_open_lines gauge\ncdpmux_open_lines {}\n",
            g.open_lines
        ));
        out.push_str(&format!(
            "# HELP cdpmux_reuse_ratio Reused / (reused + created) acquisitions.\n# TYPE cdpmux_reuse_ratio gauge\ncdpmux_reuse_ratio {}\n",
            self.reuse_rate()
        ));

        let mut summary = |name: &str, help: &str, samples: &[(String, &Latency)]| {
            out.push_str(&format!(
                "# HELP cdpmux_{name}_seconds {help}\n# TYPE cdpmux_{name}_seconds summary\n"
            ));
            for (labels, l) in samples {
                let sep = if labels.is_empty() { "" } else { "," };
                for (q, v) in [("0.5", l.p50_ms), ("0.95", l.p95_ms), ("0.99", l.p99_ms)] {
                    out.push_str(&format!(
                        "cdpmux_{name}_seconds{{{labels}{sep}quantile=\"{q}\"}} {}\n",
                        v / 1000.0
                    ));
                }
                let braces = if labels.is_empty() {
                    String::new()
                } else {
                    format!("{{{labels}}}")
                };
                out.push_str(&format!(
                    "cdpmux_{name}_seconds_sum{braces} {}\ncdpmux_{name}_seconds_count{braces} {}\n",
                    l.mean_ms * l.count as f64 / 1000.0,
                    l.count
                ));
            }
        };
        summary(
            "acquire_wait",
            "Time from request to session in hand.",
            &[(String::new(), &self.acquire_wait)],
        );
        summary(
            "session_create",
            "Time to open a session.",
            &[(String::new(), &self.session_create)],
        );
        summary(
            "job",
            "Time from request to job result.",
            &[(String::new(), &self.job)],
        );
        let cmd = &self.command;
        summary(
            "command",
            "CDP command round trip, by domain group.",
            &[
                ("group=\"navigation\"".to_owned(), &cmd.navigation),
                ("group=\"dom\"".to_owned(), &cmd.dom),
                ("group=\"network\"".to_owned(), &cmd.network),
                ("group=\"runtime\"".to_owned(), &cmd.runtime),
                ("group=\"other\"".to_owned(), &cmd.other),
            ],
        );
        let f = &self.frames_per_flush;
        out.push_str(&format!(
            "# HELP cdpmux_frames_per_flush Frames written per socket flush.\n# TYPE cdpmux_frames_per_flush summary\n\
             cdpmux_frames_per_flush{{quantile=\"0.5\"}} {}\ncdpmux_frames_per_flush{{quantile=\"0.99\"}} {}\n\
             cdpmux_frames_per_flush_sum {}\ncdpmux_frames_per_flush_count {}\n",
            f.p50_ms, f.p99_ms, f.mean_ms * f.count as f64, f.count
        ));
        out
    }
}

impl fmt::Display for Snapshot {
    /// A table for people.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counters;
        let g = &self.gauges;
        writeln!(f, "cdpmux: {} shards", self.shards)?;
        writeln!(
            f,
            "  jobs       ok {:>8}  failed {:>6}   sessions  idle {} busy {} creating {}  waiting {}",
            c.jobs_ok, c.jobs_failed, g.idle, g.busy, g.creating, g.waiting
        )?;
        writeln!(
            f,
            "  sessions   created {:>5}  reused {:>8} (handed on {})  retired {}  crashed {}   reuse rate {:.1}%",
            c.sessions_created,
            c.sessions_reused,
            c.handoffs,
            c.sessions_retired,
            c.sessions_crashed,
            100.0 * self.reuse_rate()
        )?;
        writeln!(
            f,
            "  errors     timeouts wait {} create {} command {} job {}  queue full {}  retries {}",
            c.timeouts_wait,
            c.timeouts_create,
            c.timeouts_command,
            c.timeouts_job,
            c.queue_full,
            c.retries
        )?;
        writeln!(
            f,
            "  commands   {} ({} batched, {} failed)  steals {}  affinity hits {} misses {}",
            c.commands,
            c.batched_commands,
            c.command_failures,
            c.steals,
            c.affinity_hits,
            c.affinity_misses
        )?;
        writeln!(
            f,
            "  {:<18} {:>8} {:>9} {:>9} {:>9} {:>9}",
            "latency (ms)", "count", "p50", "p95", "p99", "max"
        )?;
        let rows = [
            ("job", &self.job),
            ("acquire wait", &self.acquire_wait),
            ("session open", &self.session_create),
            ("cmd navigation", &self.command.navigation),
            ("cmd dom", &self.command.dom),
            ("cmd network", &self.command.network),
            ("cmd runtime", &self.command.runtime),
            ("cmd other", &self.command.other),
        ];
        for (name, l) in rows {
            if l.count > 0 {
                writeln!(
                    f,
                    "  {name:<18} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                    l.count, l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms
                )?;
            }
        }
        Ok(())
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
        self.borrow_mut().counters.timeout(TimeoutKind::Command);
    }

    fn flush(&self, frames: u64) {
        self.borrow_mut().flush(frames);
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
