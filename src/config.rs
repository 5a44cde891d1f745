//! Pool configuration: what is fixed at build time and what may change while running.
//!
//! The live part sits behind `arc-swap`; each shard takes one snapshot per loop turn and
//! never holds it across an `.await`. A new value is validated before it replaces the old.

use std::time::Duration;

use crate::autoscale::Autoscale;
use crate::error::{Error, ErrorKind, Result};
use crate::recycle::Recycle;

/// The pool's tunable settings. Every field may be changed at run time with
/// [`Pool::reconfigure`](crate::Pool::reconfigure) except where noted.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// Most sessions (pages) each shard keeps open. Default 8.
    pub sessions_per_shard: usize,
    /// Sessions per shard kept warm even when idle. Default 0.
    pub min_idle: usize,
    /// Sessions per shard that only `Critical` requests may take. Default 0.
    pub critical_reserve: usize,
    /// Most requests waiting per shard; past it a request fails with `QueueFull`.
    /// Default 4096.
    pub max_queue: usize,
    /// Waiters per shard past which a saturated shard offers the movable ones to other
    /// shards. Default 4.
    pub steal_watermark: usize,
    /// A waiter's class rises by one for each `aging` waited (0 disables). Default 2 s.
    pub aging: Duration,
    /// Default longest wait for a session. Default 30 s.
    pub wait_timeout: Duration,
    /// Default longest time to open a session. Default 10 s.
    pub create_timeout: Duration,
    /// Default deadline of one CDP command. Default 30 s.
    pub command_timeout: Duration,
    /// Default deadline of a whole job. Default 120 s.
    pub job_timeout: Duration,
    /// Retire a session after this many jobs (0: never). Default 0.
    pub max_uses: u32,
    /// Retire a session this long after it opened (0: never). Default 0.
    pub max_lifetime: Duration,
    /// Retire a session idle this long (0: never). Default 0.
    pub idle_timeout: Duration,
    /// Most frames a socket writer sends per flush. Default 1024.
    pub max_frames_per_flush: usize,
    /// Largest message a socket accepts from the browser; a bigger one costs that socket
    /// (see `cdp::ConnectionConfig::max_message_size` for the reasons). Applies to
    /// sockets opened after a change. Default 256 MiB, the transport's own default.
    pub max_message_size: usize,
    /// When a socket writer flushes: at once (the default,
    /// [`FlushPolicy::SelfClocking`](crate::cdp::FlushPolicy)), or held briefly under load
    /// for bigger batches. Live: applies to open connections on reconfigure.
    pub flush_policy: crate::cdp::FlushPolicy,
    /// How jobs are kept apart in the browser (cookies, storage). Applies to sessions
    /// opened after a change. Default [`Isolation::Shared`].
    pub isolation: Isolation,
    /// Most browser contexts per shard under [`Isolation::ContextPerKey`]; the least
    /// recently used idle one is disposed past it. Default 64.
    pub max_contexts: usize,
    /// What is done to a session after each job, before it counts as idle (never on the
    /// next caller's path). Default [`Reset::None`].
    pub reset: Reset,
    /// How long a soft-affinity request waits for its busy preferred session before it
    /// takes another. Default 250 ms.
    pub affinity_wait: Duration,
    /// How long a key stays bound to its session after its last use. Default 10 min.
    pub affinity_ttl: Duration,
    /// Most keys remembered per shard (least recently used forgotten first).
    /// Default 10,000.
    pub affinity_capacity: usize,
    /// How often idle sessions are probed and idle/age limits enforced (0: never).
    /// Default 5 s.
    pub health_interval: Duration,
    /// Deadline of one health probe. Default 1 s.
    pub probe_timeout: Duration,
    /// First reconnect delay after a lost socket; doubles per failure (with jitter) up
    /// to `reconnect_max`. Default 100 ms.
    pub reconnect_base: Duration,
    /// Longest reconnect delay. Default 5 s.
    pub reconnect_max: Duration,
    /// Consecutive failures (connect or session open) after which a browser is marked
    /// down and requests go elsewhere or fail fast. Default 3.
    pub breaker_threshold: u32,
    /// The hand-off line. Under contention, plain requests (no affinity key, `Normal`,
    /// the pool's default deadlines) wait in a lock-free line per shard, joining it
    /// without a message to the shard, and the pool's lines are served as one queue in
    /// arrival order: a session freed on any shard takes the earliest caller of any open
    /// line. A released [`Lease`](crate::lease::Lease) goes straight to the next waiting
    /// `acquire` caller, in the releasing thread, instead of through its shard's loop
    /// (two fewer cross-thread trips per hand-off) where nothing has to happen between
    /// two holders ([`Isolation::Shared`] and [`Reset::None`]). Not used with
    /// [`Isolation::ContextPerKey`], nor with a `before_job` or `after_job` hook
    /// ([`PoolBuilder::before_job`](crate::PoolBuilder::before_job)). Default true.
    pub lease_handoff: bool,
    /// Autoscaling: when set, a sampler moves `sessions_per_shard` between the bounds
    /// by whether requests wait, memory, CPU crowded by work outside the pool, and
    /// measured throughput (see `docs/autoscaling.md`); `sessions_per_shard` is then its starting size. `None`
    /// (the default) keeps the size fixed: set it back to `None` to pin a size again.
    pub autoscale: Option<Autoscale>,
    /// Most pages over the whole pool, all browsers together (0: no cap). With a fixed
    /// size, `sessions_per_shard` × shards must not pass it; the autoscaler never goes
    /// past it. Default 0.
    pub max_pages: usize,
    /// Share of memory in use (0..1; the cgroup's when there is one) at or above which
    /// new requests are refused with [`ErrorKind::Overloaded`] instead of opening pages
    /// that could crash (0: never). Sampled on a timer, never per request. Default 0.95.
    pub memory_refuse_above: f64,
    /// When launched browsers are retired and replaced (see [`Recycle`]). Default: never.
    pub recycle: Recycle,
    /// How politely each affinity key (a host, with [`Affinity::from_url`]) is treated:
    /// at most so many of its jobs at once, and a least time between two of its starts.
    /// One key's own rule is set at run time with
    /// [`Pool::set_politeness`](crate::Pool::set_politeness). Default: no limit. See
    /// `docs/politeness.md`.
    ///
    /// [`Affinity::from_url`]: crate::Affinity::from_url
    pub politeness: crate::politeness::Politeness,
    /// How `run` jobs are retried unless a job brings its own policy
    /// ([`Job::retry`](crate::Job::retry)). Default: no retries.
    pub retry: crate::retry::RetryPolicy,
}

/// How jobs are isolated from each other inside the browser.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Isolation {
    /// Every page in the browser's default context: fastest; cookies are shared.
    #[default]
    Shared,
    /// One browser context per affinity key: cookies and storage are separate per
    /// tenant or site; pages are reused within a key.
    ContextPerKey,
    /// A fresh context for every job (its page is replaced after each job, off the
    /// caller's path).
    ContextPerJob,
}

/// What happens to a page between jobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Reset {
    /// Nothing: the next job finds the page as the last one left it. Fastest.
    #[default]
    None,
    /// Navigate to `about:blank` (≈ 50 ms here), after release and before the page is
    /// handed out again.
    AboutBlank,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sessions_per_shard: 8,
            min_idle: 0,
            critical_reserve: 0,
            max_queue: 4096,
            steal_watermark: 4,
            aging: Duration::from_secs(2),
            wait_timeout: Duration::from_secs(30),
            create_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(30),
            job_timeout: Duration::from_secs(120),
            max_uses: 0,
            max_lifetime: Duration::ZERO,
            idle_timeout: Duration::ZERO,
            max_frames_per_flush: 1024,
            max_message_size: 256 << 20,
            flush_policy: crate::cdp::FlushPolicy::SelfClocking,
            isolation: Isolation::Shared,
            max_contexts: 64,
            reset: Reset::None,
            affinity_wait: Duration::from_millis(250),
            affinity_ttl: Duration::from_secs(600),
            affinity_capacity: 10_000,
            health_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(1),
            reconnect_base: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            breaker_threshold: 3,
            lease_handoff: true,
            autoscale: None,
            max_pages: 0,
            memory_refuse_above: 0.95,
            recycle: Recycle::default(),
            politeness: crate::politeness::Politeness::new(),
            retry: crate::retry::RetryPolicy::default(),
        }
    }
}

impl Config {
    /// Checks the values fit together; the error names the field and the fix.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::new(ErrorKind::InvalidInput, msg));
        if self.sessions_per_shard == 0 {
            return bad("sessions_per_shard must be at least 1".into());
        }
        if self.critical_reserve >= self.sessions_per_shard {
            return bad(format!(
                "critical_reserve ({}) must be below sessions_per_shard ({}): otherwise only Critical jobs could ever run",
                self.critical_reserve, self.sessions_per_shard
            ));
        }
        if self.min_idle > self.sessions_per_shard {
            return bad(format!(
                "min_idle ({}) must not exceed sessions_per_shard ({})",
                self.min_idle, self.sessions_per_shard
            ));
        }
        if self.max_queue == 0 {
            return bad("max_queue must be at least 1".into());
        }
        if self.max_message_size < 1 << 20 {
            return bad(format!(
                "max_message_size ({} bytes) must be at least 1 MiB: CDP replies are often that big",
                self.max_message_size
            ));
        }
        if self.max_frames_per_flush == 0 {
            return bad("max_frames_per_flush must be at least 1".into());
        }
        if self.max_contexts == 0 || self.affinity_capacity == 0 {
            return bad("max_contexts and affinity_capacity must be at least 1".into());
        }
        if self.breaker_threshold == 0 {
            return bad("breaker_threshold must be at least 1".into());
        }
        if self.reconnect_base > self.reconnect_max {
            return bad(format!(
                "reconnect_base ({:?}) must not exceed reconnect_max ({:?})",
                self.reconnect_base, self.reconnect_max
            ));
        }
        self.politeness.validate()?;
        self.retry.validate()?;
        for (name, d) in [
            ("wait_timeout", self.wait_timeout),
            ("create_timeout", self.create_timeout),
            ("command_timeout", self.command_timeout),
            ("job_timeout", self.job_timeout),
            ("probe_timeout", self.probe_timeout),
            ("reconnect_base", self.reconnect_base),
        ] {
            if d.is_zero() {
                return bad(format!("{name} must be above zero"));
            }
        }
        if let Some(a) = &self.autoscale {
            a.check()
                .map_err(|m| Error::new(ErrorKind::InvalidInput, m))?;
            if self.critical_reserve >= a.min || self.min_idle > a.min {
                return bad(format!(
                    "critical_reserve ({}) must be below, and min_idle ({}) at most, autoscale.min ({})",
                    self.critical_reserve, self.min_idle, a.min
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.memory_refuse_above) {
            return bad(format!(
                "memory_refuse_above ({}) must be a share between 0 (never) and 1",
                self.memory_refuse_above
            ));
        }
        self.recycle
            .check()
            .map_err(|m| Error::new(ErrorKind::InvalidInput, m))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        Config::default().validate().unwrap();
        type Change = fn(&mut Config);
        let cases: [(Change, &str); 8] = [
            (|c| c.sessions_per_shard = 0, "sessions_per_shard"),
            (|c| c.critical_reserve = 8, "critical_reserve"),
            (|c| c.min_idle = 9, "min_idle"),
            (|c| c.max_queue = 0, "max_queue"),
            (|c| c.wait_timeout = Duration::ZERO, "wait_timeout"),
            (
                |c| c.autoscale = Some(Autoscale::between(4, 2)),
                "autoscale.min",
            ),
            (
                |c| {
                    c.critical_reserve = 2;
                    c.autoscale = Some(Autoscale::between(2, 8));
                },
                "critical_reserve",
            ),
            (|c| c.memory_refuse_above = 1.5, "memory_refuse_above"),
        ];
        for (change, field) in cases {
            let mut c = Config::default();
            change(&mut c);
            let err = c.validate().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
            assert!(err.message().contains(field), "{err}");
        }
    }
}
