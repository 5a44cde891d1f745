//! The counters and gauges, each declared once.
//!
//! One row of a `metric_table!` generates the struct field (its rustdoc and its serde
//! name), its part of the merge of shard reports, its Prometheus sample and its cell in
//! the human table. Adding a counter is one row here; the Prometheus text
//! (`prometheus.rs`) and the table (`report.rs`) walk [`Row`]s and name no field.
//! Rows are grouped by Prometheus family, so a family's samples are always contiguous
//! and its `# TYPE` line is written once.

use serde::Serialize;

use crate::error::TimeoutKind;

/// One metric as the Prometheus text and the human table see it.
pub(super) struct Row<T> {
    /// Prometheus family name after `cdpmux_`; empty when the metric is not exported.
    pub(super) family: &'static str,
    /// The family's `# HELP` text.
    pub(super) help: &'static str,
    /// `{name="value"}`, or empty for a family with one sample.
    pub(super) labels: &'static str,
    /// The human table's line for this metric and its label on that line.
    pub(super) section: &'static str,
    pub(super) label: &'static str,
    /// Reads the value.
    pub(super) read: fn(&T) -> u64,
}

/// Declares a struct of `u64` metrics from rows grouped by Prometheus family:
///
/// ```text
/// "family_total" "HELP text" {
///     /// field rustdoc
///     field {label = "value"} => "table line" "table label",
/// }
/// ```
///
/// `extra` fields are part of the struct and the merge but have no row (their rendering
/// is written by hand).
macro_rules! metric_table {
    (
        $(#[$meta:meta])*
        pub struct $name:ident: $kind:literal {
            $(
                $family:literal $help:literal {
                    $(
                        $(#[doc = $doc:literal])*
                        $field:ident $({ $lk:ident = $lv:literal })? => $section:literal $label:literal,
                    )*
                }
            )*
        }
        $( extra { $( $(#[doc = $xdoc:literal])* $xfield:ident: $xty:ty, )* } )?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
        #[non_exhaustive]
        pub struct $name {
            $( $( $(#[doc = $doc])* pub $field: u64, )* )*
            $( $( $(#[doc = $xdoc])* pub $xfield: $xty, )* )?
        }

        impl $name {
            /// The Prometheus `# TYPE` of every row.
            pub(super) const KIND: &'static str = $kind;

            /// Every field with a row, in declaration order.
            pub(super) const ROWS: &'static [Row<$name>] = &[$($(
                Row {
                    family: $family,
                    help: $help,
                    labels: concat!("" $(, "{", stringify!($lk), "=\"", $lv, "\"}")?),
                    section: $section,
                    label: $label,
                    read: |m| m.$field,
                },
            )*)*];

            /// Adds another shard's values to these.
            pub(super) fn add(&mut self, o: &$name) {
                $( $( self.$field += o.$field; )* )*
                $( $( Accumulate::accumulate(&mut self.$xfield, &o.$xfield); )* )?
            }
        }
    };
}

/// How an `extra` field merges.
trait Accumulate {
    fn accumulate(&mut self, other: &Self);
}

impl<const N: usize> Accumulate for [u64; N] {
    fn accumulate(&mut self, other: &Self) {
        for (a, b) in self.iter_mut().zip(other) {
            *a += b;
        }
    }
}

metric_table! {
    /// Event counts since the pool started.
    pub struct Counters: "counter" {
        "jobs_total" "Jobs finished, by outcome." {
            /// `run` jobs that finished successfully (leases are counted by `sessions_reused`
            /// and `sessions_created`, not here).
            jobs_ok {outcome = "ok"} => "jobs" "ok",
            /// Jobs that finished with an error (any kind, including timeouts).
            jobs_failed {outcome = "error"} => "jobs" "failed",
        }
        "commands_total" "CDP commands answered or failed." {
            /// CDP commands answered or failed.
            commands => "commands" "sent",
        }
        "batched_commands_total" "CDP commands sent in pipelined batches." {
            /// Of those, commands sent as part of a pipelined batch.
            batched_commands => "commands" "batched",
        }
        "command_failures_total" "CDP commands that failed." {
            /// Commands that failed (CDP error, timeout, crash, closed socket).
            command_failures => "commands" "failed",
        }
        "sessions_created_total" "Sessions opened." {
            /// Sessions opened.
            sessions_created => "sessions" "created",
        }
        "session_create_failures_total" "Session openings that failed." {
            /// Session openings that failed.
            session_create_failures => "sessions" "failed to open",
        }
        "sessions_reused_total" "Acquisitions served by an open session." {
            /// Acquisitions served by an already open session.
            sessions_reused => "sessions" "reused",
        }
        "handoffs_total" "Leased sessions handed straight to the next caller." {
            /// Of the reuses, leased sessions handed straight from one `acquire` caller to the
            /// next without a trip through their shard (see [`Config::lease_handoff`](crate::config::Config)).
            handoffs => "handoffs" "total",
        }
        "joined_handoffs_total" "Hand-offs to callers who joined the line by themselves." {
            /// Of the hand-offs, those to `acquire` callers who had joined the line by
            /// themselves, without a message to the shard.
            joined_handoffs => "handoffs" "joined",
        }
        "cross_shard_handoffs_total" "Callers served from another shard's line (leases handed on, jobs run)." {
            /// Of the hand-offs, those to a caller waiting in another shard's line (a pool's
            /// open lines drain as one).
            cross_shard_handoffs => "handoffs" "cross-shard",
        }
        "sessions_retired_total" "Sessions closed on purpose." {
            /// Sessions closed on purpose (uses, age, idleness, shrink, failed reset).
            sessions_retired => "closed" "retired",
        }
        "sessions_crashed_total" "Sessions lost to crashes or lost connections." {
            /// Sessions lost to a crash, a detach or a lost connection.
            sessions_crashed => "closed" "crashed",
        }
        "timeouts_total" "Deadlines that passed, by kind." {
            /// Waits that passed their deadline.
            timeouts_wait {kind = "wait"} => "timeouts" "wait",
            /// Session openings that passed their deadline.
            timeouts_create {kind = "create"} => "timeouts" "create",
            /// Commands that passed their deadline.
            timeouts_command {kind = "command"} => "timeouts" "command",
            /// Jobs that passed their deadline.
            timeouts_job {kind = "job"} => "timeouts" "job",
        }
        "queue_full_total" "Requests refused because the queue was full." {
            /// Requests refused because the queue was full.
            queue_full => "load" "queue full",
        }
        "throttled_total" "Keyed requests held back by their key's politeness rule." {
            /// Keyed requests held for their key's turn (its `Politeness` limit or
            /// interval) instead of queued.
            throttled => "load" "throttled",
        }
        "steals_total" "Requests taken from another shard's overflow." {
            /// Requests this pool's shards took from another shard's overflow.
            steals => "load" "steals",
        }
        "overflowed_total" "Requests a saturated shard offered to others." {
            /// Requests a saturated shard offered to the others.
            overflowed => "load" "overflowed",
        }
        "affinity_total" "Keyed requests, by whether they got their preferred session." {
            /// Requests served by the session their affinity key prefers.
            affinity_hits {result = "hit"} => "affinity" "hits",
            /// Requests with a key that got another session.
            affinity_misses {result = "miss"} => "affinity" "misses",
        }
        "blocked_requests_total" "Requests a page's resource blocking failed." {
            /// Requests failed by a page's resource blocking, never sent to the network
            /// (counted from `Network.loadingFailed`: pages without the `Network` domain
            /// report none).
            blocked_requests => "pages" "blocked requests",
        }
        "intercept_timeouts_total" "Paused requests continued because their handler did not answer in time." {
            /// Requests paused for an [`Interceptor`](crate::cdp::Interceptor) whose handler
            /// did not answer within its deadline: each was continued unchanged.
            intercept_timeouts => "pages" "intercept timeouts",
        }
        "hook_failures_total" "Lifecycle hooks that failed, retiring their page." {
            /// `on_page_open` hooks that failed (the page was closed, another opened).
            hook_failures_open {hook = "on_page_open"} => "hooks" "on_page_open failed",
            /// `before_job` hooks that failed (the page was retired, the job given another).
            hook_failures_before {hook = "before_job"} => "hooks" "before_job failed",
            /// `after_job` hooks that failed (the page was retired; the job's result stands).
            hook_failures_after {hook = "after_job"} => "hooks" "after_job failed",
        }
        "events_dropped_total" "Events that full event streams dropped." {
            /// Events dropped by a page's or lease's event stream whose buffer was full
            /// (see `EventOverflow`).
            events_dropped => "pages" "events dropped",
        }
        "retries_total" "Job attempts run again, by cause (see RetryPolicy)." {
            /// Jobs run again after their page crashed.
            retries_crash {cause = "crash"} => "retries" "crash",
            /// Jobs run again after their socket closed.
            retries_connection {cause = "connection"} => "retries" "connection",
            /// Jobs run again after a `net::ERR_*` navigation failure.
            retries_navigation {cause = "navigation"} => "retries" "navigation",
            /// Jobs run again after a command, event or opening deadline passed.
            retries_timeout {cause = "timeout"} => "retries" "timeout",
            /// Jobs run again after an HTTP status the policy retries (429, 503).
            retries_http_status {cause = "http_status"} => "retries" "http status",
        }
        "reconnects_total" "Sockets re-opened after one was lost." {
            /// Sockets re-opened after one was lost.
            reconnects => "recovery" "reconnects",
        }
        "malformed_frames_total" "Incoming frames that were not valid CDP, dropped." {
            /// Incoming frames that were not valid CDP (bad JSON, wrong shape, binary). Each
            /// is dropped and counted, never a reason to close the socket; a malformed reply
            /// to a call still waiting fails that call at once.
            malformed_frames => "recovery" "malformed frames",
        }
        "autoscale_changes_total" "Autoscaler target changes, by direction." {
            /// Times the autoscaler raised its target (pool-wide, not per shard).
            scale_ups {direction = "up"} => "autoscale" "ups",
            /// Times the autoscaler lowered its target.
            scale_downs {direction = "down"} => "autoscale" "downs",
        }
        "browsers_recycled_total" "Launched browsers retired and replaced on purpose." {
            /// Launched browsers retired (after `recycle` limits) and replaced.
            browsers_recycled => "browsers" "recycled",
        }
        "overloaded_total" "Requests refused because memory was critically low." {
            /// Requests refused with `Overloaded` because memory was critically low.
            overloaded => "memory" "refused",
        }
    }
}

impl Counters {
    /// Every retry, whatever its cause.
    pub fn retries(&self) -> u64 {
        self.retries_crash
            + self.retries_connection
            + self.retries_navigation
            + self.retries_timeout
            + self.retries_http_status
    }

    pub(crate) fn retry(&mut self, cause: crate::retry::RetryCause) {
        use crate::retry::RetryCause;
        match cause {
            RetryCause::Crash => self.retries_crash += 1,
            RetryCause::ConnectionLost => self.retries_connection += 1,
            RetryCause::Navigation => self.retries_navigation += 1,
            RetryCause::Timeout => self.retries_timeout += 1,
            RetryCause::HttpStatus => self.retries_http_status += 1,
        }
    }

    pub(crate) fn timeout(&mut self, kind: TimeoutKind) {
        match kind {
            TimeoutKind::Wait => self.timeouts_wait += 1,
            TimeoutKind::Create => self.timeouts_create += 1,
            TimeoutKind::Command => self.timeouts_command += 1,
            TimeoutKind::Job => self.timeouts_job += 1,
            TimeoutKind::Event | TimeoutKind::Launch | TimeoutKind::Drain => {}
        }
    }
}

metric_table! {
    /// Current levels.
    pub struct Gauges: "gauge" {
        "sessions" "Open or opening sessions, by state." {
            /// Open sessions not in use.
            idle {state = "idle"} => "now" "idle",
            /// Sessions in use by a job or a lease (including ones being reset).
            busy {state = "busy"} => "now" "busy",
            /// Sessions being opened.
            creating {state = "creating"} => "now" "creating",
        }
        // Not exported: waiting requests are exported per class (`waiting_by_class`);
        // the affinity map's size is bounded by configuration.
        "" "" {
            /// Requests waiting for a session.
            waiting => "now" "waiting",
            /// Affinity keys remembered (bounded by `affinity_capacity` per shard).
            affinity_keys => "now" "affinity keys",
        }
        "open_lines" "Shards whose line plain acquire callers join directly." {
            /// Shards whose line is open: every session out, nobody queued, so a plain
            /// `acquire` joins the line directly (see [`Config::lease_handoff`](crate::config::Config)).
            open_lines => "now" "open lines",
        }
        "autoscale_target_sessions" "Sessions per shard the pool aims for (autoscaler's target, or the fixed size)." {
            /// Sessions per shard the pool aims for: the autoscaler's target, or the fixed
            /// `sessions_per_shard`. The current size is `idle + busy + creating`.
            sessions_target => "autoscale" "target per shard",
        }
        "autoscale_reason" "Why the autoscaler last changed its target (1 for the reason in force)." {
            /// 1 when the target is the starting (or fixed) size.
            reason_start {reason = "start"} => "autoscale" "by start",
            /// 1 when the target last grew because requests waited (and the CPU had room,
            /// or the last growth did not lower throughput).
            reason_waiting {reason = "waiting"} => "autoscale" "by waiting",
            /// 1 when the target last shrank because work outside the pool crowded a
            /// saturated CPU.
            reason_cpu {reason = "cpu"} => "autoscale" "by cpu",
            /// 1 when the target last shrank because memory was short.
            reason_memory {reason = "memory"} => "autoscale" "by memory",
            /// 1 when the target last shrank because pages stood idle.
            reason_idle {reason = "idle"} => "autoscale" "by idle",
            /// 1 when the target was last clamped by a limit.
            reason_limit {reason = "limit"} => "autoscale" "by limit",
            /// 1 when the target last stepped back because growth lowered throughput.
            reason_plateau {reason = "plateau"} => "autoscale" "by plateau",
        }
        "memory_used_permille" "Memory in use, per thousand (the cgroup's, else the machine's), as last sampled." {
            /// Memory in use per thousand, as last sampled (0 before the first sample).
            memory_permille => "autoscale" "memory permille",
        }
    }
    extra {
        /// Waiting requests per class, `Low` first.
        waiting_by_class: [u64; 4],
    }
}

impl Gauges {
    /// Open sessions: idle + busy.
    pub fn live(&self) -> u64 {
        self.idle + self.busy
    }

    /// Why the autoscaler last set its target (the `reason_*` gauge that reads 1), if
    /// any does.
    pub fn scale_reason(&self) -> Option<crate::ScaleReason> {
        use crate::ScaleReason as R;
        [
            (self.reason_start, R::Start),
            (self.reason_waiting, R::Waiting),
            (self.reason_cpu, R::Cpu),
            (self.reason_memory, R::Memory),
            (self.reason_idle, R::Idle),
            (self.reason_limit, R::Limit),
            (self.reason_plateau, R::Plateau),
        ]
        .into_iter()
        .find(|(on, _)| *on == 1)
        .map(|(_, reason)| reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each family is declared in one block, so the Prometheus text gives it one TYPE.
    #[test]
    fn families_are_contiguous_and_rows_read_their_field() {
        let mut seen: Vec<&str> = Vec::new();
        for r in Counters::ROWS {
            if seen.last() != Some(&r.family) {
                assert!(!seen.contains(&r.family), "{} split", r.family);
                seen.push(r.family);
            }
        }
        assert_eq!(Counters::ROWS.len(), 40);
        let c = Counters {
            timeouts_job: 7,
            ..Counters::default()
        };
        let row = Counters::ROWS
            .iter()
            .find(|r| r.labels == "{kind=\"job\"}")
            .unwrap();
        assert_eq!((row.family, (row.read)(&c)), ("timeouts_total", 7));
        // Retries: one family, a row per cause, summed by `retries()`.
        let mut c = Counters::default();
        for cause in crate::retry::RetryCause::ALL {
            c.retry(cause);
            let label = format!("{{cause=\"{}\"}}", cause.as_str());
            let row = Counters::ROWS.iter().find(|r| r.labels == label).unwrap();
            assert_eq!((row.family, (row.read)(&c)), ("retries_total", 1));
        }
        assert_eq!(c.retries(), 5);
    }

    #[test]
    fn add_merges_every_field() {
        let one = Gauges {
            idle: 1,
            busy: 2,
            creating: 3,
            waiting: 4,
            affinity_keys: 5,
            open_lines: 6,
            sessions_target: 7,
            reason_start: 1,
            reason_waiting: 1,
            reason_cpu: 1,
            reason_memory: 1,
            reason_idle: 1,
            reason_limit: 1,
            reason_plateau: 1,
            memory_permille: 8,
            waiting_by_class: [1, 2, 3, 4],
        };
        let mut sum = one;
        sum.add(&one);
        assert_eq!(sum.waiting_by_class, [2, 4, 6, 8]);
        for r in Gauges::ROWS {
            assert_eq!((r.read)(&sum), 2 * (r.read)(&one), "{}", r.label);
        }
    }
}
