//! Pool configuration: what is fixed at build time and what may change while running.
//!
//! The live part sits behind `arc-swap`; each shard takes one snapshot per loop turn and
//! never holds it across an `.await`. A new value is validated before it replaces the old.

use std::time::Duration;

use crate::{Error, ErrorKind, Result};

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
        if self.max_frames_per_flush == 0 {
            return bad("max_frames_per_flush must be at least 1".into());
        }
        for (name, d) in [
            ("wait_timeout", self.wait_timeout),
            ("create_timeout", self.create_timeout),
            ("command_timeout", self.command_timeout),
            ("job_timeout", self.job_timeout),
        ] {
            if d.is_zero() {
                return bad(format!("{name} must be above zero"));
            }
        }
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
        let cases: [(Change, &str); 5] = [
            (|c| c.sessions_per_shard = 0, "sessions_per_shard"),
            (|c| c.critical_reserve = 8, "critical_reserve"),
            (|c| c.min_idle = 9, "min_idle"),
            (|c| c.max_queue = 0, "max_queue"),
            (|c| c.wait_timeout = Duration::ZERO, "wait_timeout"),
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
