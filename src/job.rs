//! What a caller asks for: a [`Job`] with a [`Priority`], an optional [`Affinity`] and
//! its own deadlines.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Config;
use crate::error::timeout_error;
use crate::error::{Error, ErrorKind, Result, TimeoutKind};

/// Priority class of a request. Strict between classes, FIFO within one; waiting
/// raises a request's class over time (aging) so `Low` is never starved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Background work.
    Low = 0,
    /// The default.
    #[default]
    Normal = 1,
    /// Ahead of normal work.
    High = 2,
    /// First in line, and the only class that may use the `critical_reserve` sessions.
    Critical = 3,
}

impl Priority {
    /// All classes, lowest first.
    pub const ALL: [Priority; 4] = [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Critical,
    ];

    /// The class as an index, `Low` = 0.
    pub fn index(self) -> usize {
        self as usize
    }

    /// A lowercase name, used in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }
}

impl std::str::FromStr for Priority {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "low" => Ok(Priority::Low),
            "normal" => Ok(Priority::Normal),
            "high" => Ok(Priority::High),
            "critical" => Ok(Priority::Critical),
            _ => Err(Error::new(
                ErrorKind::InvalidInput,
                format!("unknown priority {s:?}: use low, normal, high or critical"),
            )),
        }
    }
}

/// How strongly a request is bound to its key's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AffinityMode {
    /// Prefer the session last used for the key; take another after a short wait.
    /// Such requests may be moved to another shard when theirs is saturated.
    Soft,
    /// Always the same session (logged-in flows). Never moved to another shard.
    Sticky,
}

/// A key that keeps related requests together: same shard, and preferably the same
/// warm session.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Affinity {
    key: Arc<str>,
    mode: AffinityMode,
}

impl Affinity {
    /// Soft affinity for `key`.
    pub fn soft(key: impl AsRef<str>) -> Self {
        Affinity {
            key: key.as_ref().into(),
            mode: AffinityMode::Soft,
        }
    }

    /// Sticky affinity for `key`.
    pub fn sticky(key: impl AsRef<str>) -> Self {
        Affinity {
            key: key.as_ref().into(),
            mode: AffinityMode::Sticky,
        }
    }

    /// Soft affinity keyed by the URL's host (`https://a.example/x` → `a.example`).
    pub fn from_url(url: &str) -> Result<Self> {
        let parsed = url::Url::parse(url).map_err(|e| {
            Error::new(ErrorKind::InvalidInput, format!("bad URL {url:?}")).with_source(e)
        })?;
        match parsed.host_str() {
            Some(host) if !host.is_empty() => Ok(Affinity::soft(host.to_ascii_lowercase())),
            _ => Err(Error::new(
                ErrorKind::InvalidInput,
                format!("URL {url:?} has no host to derive an affinity key from"),
            )),
        }
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    pub(crate) fn key_arc(&self) -> &Arc<str> {
        &self.key
    }

    /// Soft or sticky.
    pub fn mode(&self) -> AffinityMode {
        self.mode
    }
}

impl fmt::Debug for Affinity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}({:?})", self.mode, &*self.key)
    }
}

/// One request for a session: priority, affinity, deadlines, retries.
///
/// Deadlines left unset take the pool's configured defaults.
#[derive(Debug, Clone, Default)]
pub struct Job {
    pub(crate) affinity: Option<Affinity>,
    pub(crate) priority: Priority,
    pub(crate) wait_timeout: Option<Duration>,
    pub(crate) command_timeout: Option<Duration>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) max_hold: Option<Duration>,
    pub(crate) retries: u32,
    /// Boxed: most jobs block what the pool blocks, and a job waits in queues by value.
    pub(crate) block: Option<Arc<crate::cdp::Blocking>>,
}

impl Job {
    /// A job with normal priority, no affinity and the pool's default deadlines.
    pub fn new() -> Self {
        Job::default()
    }

    /// May wait in a shard's line without asking the shard (see `handoff`): `Normal`,
    /// no key, the pool's default wait and job deadlines (which the shard enforces for
    /// the whole line at once).
    pub(crate) fn joins_lines(&self) -> bool {
        self.priority == Priority::Normal
            && self.affinity.is_none()
            && self.wait_timeout.is_none()
            && self.timeout.is_none()
            && self.max_hold.is_none()
    }

    /// Keeps this job with others of the same key.
    pub fn affinity(mut self, affinity: Affinity) -> Self {
        self.affinity = Some(affinity);
        self
    }

    /// Its priority class.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Longest wait in the queue for a session (`Timeout(Wait)`).
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = Some(timeout);
        self
    }

    /// Deadline of each CDP command it sends (`Timeout(Command)`).
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = Some(timeout);
        self
    }

    /// Deadline of the whole job, from submission to result (`Timeout(Job)`). For a
    /// lease ([`Pool::acquire`](crate::Pool::acquire)) without a
    /// [`max_hold`](Self::max_hold), it also bounds how long the lease is held, from
    /// submission.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// For a lease: the longest it may be held once granted. Past it the shard takes
    /// the page back (it stops the page, as for a job past its deadline, and gives it to
    /// the next caller), the lease's event streams end, and its later calls fail with
    /// `Timeout(Job)`. So a forgotten lease cannot keep a page forever. Without it (and
    /// without a [`timeout`](Self::timeout)) a lease is held until dropped.
    ///
    /// A lease with a hold limit always goes back through its shard, never straight to
    /// the next caller (see [`Config::lease_handoff`](crate::Config)).
    pub fn max_hold(mut self, limit: Duration) -> Self {
        self.max_hold = Some(limit);
        self
    }

    /// Re-runs the job on a fresh session up to `n` times when its session crashes or
    /// its connection is lost. Only for idempotent jobs.
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// Blocks `blocking` on the job's page instead of the pool's
    /// [`PageOptions::block`](crate::cdp::PageOptions): one command before the job runs
    /// and one after, which puts the pool's blocking back before anyone else gets the
    /// page. Nothing is sent when it equals the pool's. For [`Pool::run`](crate::Pool::run)
    /// jobs; a lease blocks what the pool blocks.
    pub fn block(mut self, blocking: crate::cdp::Blocking) -> Self {
        self.block = Some(Arc::new(blocking));
        self
    }

    /// The affinity, if any.
    pub fn affinity_key(&self) -> Option<&Affinity> {
        self.affinity.as_ref()
    }

    /// May this job run on another shard than its key's? Not when sticky.
    pub(crate) fn is_movable(&self) -> bool {
        !matches!(&self.affinity, Some(a) if a.mode == AffinityMode::Sticky)
    }
}

/// When a request submitted at `submitted` must stop waiting, and which deadline that is:
/// its wait limit or, if sooner, its whole job's. Saturates far in the future instead of
/// overflowing on an absurd limit.
pub(crate) fn wait_deadline(job: &Job, submitted: Instant, cfg: &Config) -> (Instant, TimeoutKind) {
    let wait = later(submitted, job.wait_timeout.unwrap_or(cfg.wait_timeout));
    let whole = later(submitted, job.timeout.unwrap_or(cfg.job_timeout));
    if whole < wait {
        (whole, TimeoutKind::Job)
    } else {
        (wait, TimeoutKind::Wait)
    }
}

/// `at + after`, or a century from `at` if that would overflow the clock.
pub(crate) fn later(at: Instant, after: Duration) -> Instant {
    at.checked_add(after)
        .or_else(|| at.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(at)
}

/// [`later`] for a `std` instant.
pub(crate) fn later_std(at: std::time::Instant, after: Duration) -> std::time::Instant {
    later(at.into(), after).into_std()
}

/// The error of a request whose wait ended at its `kind` deadline.
pub(crate) fn wait_timeout_error(kind: TimeoutKind, job: &Job, cfg: &Config) -> Error {
    let limit = match kind {
        TimeoutKind::Job => job.timeout.unwrap_or(cfg.job_timeout),
        _ => job.wait_timeout.unwrap_or(cfg.wait_timeout),
    };
    timeout_error(kind, limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_from_url_uses_the_host() {
        let a = Affinity::from_url("https://Shop.Example.com:8443/a?b=c").unwrap();
        assert_eq!(a.key(), "shop.example.com");
        assert_eq!(a.mode(), AffinityMode::Soft);
        assert_eq!(
            Affinity::from_url("not a url").unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            Affinity::from_url("data:text/html,x").unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }

    #[test]
    fn sticky_jobs_do_not_move() {
        assert!(Job::new().is_movable());
        assert!(Job::new().affinity(Affinity::soft("k")).is_movable());
        assert!(!Job::new().affinity(Affinity::sticky("k")).is_movable());
    }

    #[test]
    fn priorities_parse_and_order() {
        assert_eq!("HIGH".parse::<Priority>().unwrap(), Priority::High);
        assert!("urgent".parse::<Priority>().is_err());
        assert!(Priority::Critical > Priority::High && Priority::Normal > Priority::Low);
    }
}
