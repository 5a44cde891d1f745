//! Retrying a `run` job: which failures run it again, how long to wait first, and whether
//! the next attempt takes a fresh page. [`RetryPolicy::decide`] is the whole decision, a
//! pure function of the failure, the attempts so far, the time the job has left and a
//! random draw; the shard's job runner (`shard/jobs.rs`) carries it out and holds no page
//! while it waits.
//!
//! What it must never do: read the clock, draw its own randomness, or wait. `Retry-After`
//! dates are turned into a delay where the response is read ([`parse_retry_after`] takes
//! `now`), so the decision only ever sees durations.
//!
//! `httpdate` parses the HTTP-date form of `Retry-After` (RFC 9110 §5.6.7: three formats);
//! it is small, has no dependencies, and is what hyper uses.

use std::time::{Duration, SystemTime};

use crate::error::{Error, ErrorKind, Result, TimeoutKind};

/// Why a job was run again; also the `cause` label of the `retries_total` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryCause {
    /// The page's renderer crashed or its target went away ([`ErrorKind::SessionCrashed`]).
    Crash,
    /// The socket to the browser closed ([`ErrorKind::ConnectionClosed`]).
    ConnectionLost,
    /// The page could not load a URL: a `net::ERR_*` failure ([`ErrorKind::Navigation`]).
    Navigation,
    /// A command, event, session-opening or wait deadline inside the job passed. The
    /// job's own deadline never retries: when it passes, the job is over.
    Timeout,
    /// The site answered with one of the policy's HTTP statuses (429 and 503 by
    /// default): see [`Navigation::error_for_status`](crate::cdp::Navigation::error_for_status).
    HttpStatus,
}

impl RetryCause {
    /// Every cause, in the order of the metric's rows.
    pub const ALL: [RetryCause; 5] = [
        RetryCause::Crash,
        RetryCause::ConnectionLost,
        RetryCause::Navigation,
        RetryCause::Timeout,
        RetryCause::HttpStatus,
    ];

    /// A short lowercase name, used in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryCause::Crash => "crash",
            RetryCause::ConnectionLost => "connection",
            RetryCause::Navigation => "navigation",
            RetryCause::Timeout => "timeout",
            RetryCause::HttpStatus => "http_status",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// How a `run` job is retried: for which failures, how many times, after how long, and
/// on which page.
///
/// Set per pool ([`Config::retry`](crate::Config)) and per job ([`Job::retry`](crate::Job::retry);
/// [`Job::retries`](crate::Job::retries) takes the pool's policy with another count).
/// The default retries nothing (`max_retries` 0); with retries allowed it retries every
/// [`RetryCause`], HTTP 429 and 503 among statuses.
///
/// The wait before retry `n` (0 for the first) is `base · 2ⁿ`, at most `max_delay`,
/// shortened by up to `jitter` of itself at random (so retries of many jobs spread out),
/// and never shorter than the failure's `Retry-After` (capped at `max_retry_after`). A
/// retry whose wait would outlast the job's deadline is not made: the job fails with the
/// attempt's error. A waiting retry holds no page, and dropping the `run` future ends
/// it.
///
/// Only for idempotent jobs: an attempt may have had effects before it failed.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    max_retries: u32,
    causes: u8,
    statuses: Vec<u16>,
    base: Duration,
    max_delay: Duration,
    jitter: f64,
    max_retry_after: Duration,
    fresh_page: bool,
}

impl Default for RetryPolicy {
    /// No retries; once allowed: every cause, statuses 429 and 503, 100 ms doubling to
    /// 10 s, jitter 0.5, `Retry-After` up to 60 s, the pooled page.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 0,
            causes: RetryCause::ALL.iter().fold(0, |m, c| m | c.bit()),
            statuses: vec![429, 503],
            base: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            jitter: 0.5,
            max_retry_after: Duration::from_secs(60),
            fresh_page: false,
        }
    }
}

/// What a failed attempt was, as far as retrying goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) kind: ErrorKind,
    pub(crate) status: Option<u16>,
    pub(crate) retry_after: Option<Duration>,
}

impl Failure {
    /// The parts of `error` a retry decision reads.
    pub(crate) fn of(error: &Error) -> Self {
        Failure {
            kind: error.kind(),
            status: error.status(),
            retry_after: error.retry_after(),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Answer the caller with the attempt's error.
    GiveUp,
    /// Run the job again after `after`, on a fresh page if `fresh` (the failed attempt's
    /// page is retired), else on whichever page the pool gives it.
    Retry {
        cause: RetryCause,
        after: Duration,
        fresh: bool,
    },
}

impl RetryPolicy {
    /// The default policy with `max_retries` retries.
    pub fn new(max_retries: u32) -> Self {
        RetryPolicy::default().max_retries(max_retries)
    }

    /// At most `n` retries (so `n + 1` attempts).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Retries failures of `cause`, or not.
    pub fn on(mut self, cause: RetryCause, retry: bool) -> Self {
        if retry {
            self.causes |= cause.bit();
        } else {
            self.causes &= !cause.bit();
        }
        self
    }

    /// Only these causes retry.
    pub fn only(mut self, causes: &[RetryCause]) -> Self {
        self.causes = causes.iter().fold(0, |m, c| m | c.bit());
        self
    }

    /// The HTTP statuses that retry (default 429 and 503).
    pub fn statuses(mut self, statuses: &[u16]) -> Self {
        self.statuses = statuses.to_vec();
        self
    }

    /// The first wait and the longest one (default 100 ms and 10 s).
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.base = base;
        self.max_delay = max;
        self
    }

    /// The share of each wait that is random, from 0 (none) to 1 (anywhere from zero to
    /// the full wait). Default 0.5.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// The longest `Retry-After` honoured (default 60 s): a longer one waits this long.
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// Retries on a fresh page: the failed attempt's page is retired and replaced. A
    /// crash or a lost socket always takes a fresh page. Default false: the page goes
    /// back to the pool and the retry takes whichever page is free.
    pub fn fresh_page(mut self, fresh: bool) -> Self {
        self.fresh_page = fresh;
        self
    }

    /// Most retries.
    pub fn retries(&self) -> u32 {
        self.max_retries
    }

    /// True when failures of `cause` retry.
    pub fn retries_on(&self, cause: RetryCause) -> bool {
        self.causes & cause.bit() != 0
    }

    /// Checks the values fit together; the error names the field and the fix.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::new(ErrorKind::InvalidInput, msg));
        if !(0.0..=1.0).contains(&self.jitter) {
            return bad(format!(
                "retry jitter ({}) must be between 0 and 1",
                self.jitter
            ));
        }
        if self.base > self.max_delay {
            return bad(format!(
                "retry backoff base ({:?}) must not exceed its max ({:?})",
                self.base, self.max_delay
            ));
        }
        if let Some(s) = self.statuses.iter().find(|s| !(100..=599).contains(*s)) {
            return bad(format!("retry status {s} is not an HTTP status (100-599)"));
        }
        Ok(())
    }

    /// The cause a failure would retry for, if it is one this policy retries.
    fn cause_of(&self, failure: &Failure) -> Option<RetryCause> {
        let cause = match failure.kind {
            ErrorKind::SessionCrashed => RetryCause::Crash,
            ErrorKind::ConnectionClosed => RetryCause::ConnectionLost,
            ErrorKind::Navigation => RetryCause::Navigation,
            ErrorKind::Timeout(TimeoutKind::Job) => return None,
            ErrorKind::Timeout(_) => RetryCause::Timeout,
            ErrorKind::HttpStatus => match failure.status {
                Some(s) if self.statuses.contains(&s) => RetryCause::HttpStatus,
                _ => return None,
            },
            _ => return None,
        };
        self.retries_on(cause).then_some(cause)
    }

    /// The wait before retry `retry` (0 for the first), before `Retry-After`, with
    /// `random` in `[0, 1)`.
    fn backoff_for(&self, retry: u32, random: f64) -> Duration {
        let doubled = self
            .base
            .checked_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX))
            .unwrap_or(self.max_delay);
        let full = doubled.min(self.max_delay);
        let jitter = self.jitter.clamp(0.0, 1.0) * random.clamp(0.0, 1.0);
        full.mul_f64(1.0 - jitter)
    }

    /// After attempt number `retries_done + 1` failed with `failure` and `time_left`
    /// remains before the job's deadline: retry (after how long, on which page) or give
    /// up. `random` is a uniform draw in `[0, 1)` for the jitter.
    pub(crate) fn decide(
        &self,
        failure: &Failure,
        retries_done: u32,
        time_left: Duration,
        random: f64,
    ) -> Decision {
        let Some(cause) = self.cause_of(failure) else {
            return Decision::GiveUp;
        };
        if retries_done >= self.max_retries {
            return Decision::GiveUp;
        }
        let mut after = self.backoff_for(retries_done, random);
        if let Some(asked) = failure.retry_after {
            after = after.max(asked.min(self.max_retry_after));
        }
        if after >= time_left {
            // It would wake after its own deadline: the caller hears the error now.
            return Decision::GiveUp;
        }
        let fresh =
            self.fresh_page || matches!(cause, RetryCause::Crash | RetryCause::ConnectionLost);
        Decision::Retry {
            cause,
            after,
            fresh,
        }
    }
}

/// A `Retry-After` header's delay: whole seconds, or an HTTP-date (how far it is after
/// `now`; a date in the past is no delay). `None` when it is neither.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(kind: ErrorKind) -> Failure {
        Failure {
            kind,
            status: None,
            retry_after: None,
        }
    }

    fn status(code: u16, retry_after: Option<Duration>) -> Failure {
        Failure {
            kind: ErrorKind::HttpStatus,
            status: Some(code),
            retry_after,
        }
    }

    const LOTS: Duration = Duration::from_secs(3600);
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_default_policy_retries_nothing() {
        let p = RetryPolicy::default();
        let crash = failure(ErrorKind::SessionCrashed);
        assert_eq!(p.decide(&crash, 0, LOTS, 0.0), Decision::GiveUp);
    }

    #[test]
    fn which_failures_retry_and_for_what_cause() {
        let p = RetryPolicy::new(1).jitter(0.0);
        let cases = [
            (failure(ErrorKind::SessionCrashed), Some(RetryCause::Crash)),
            (
                failure(ErrorKind::ConnectionClosed),
                Some(RetryCause::ConnectionLost),
            ),
            (failure(ErrorKind::Navigation), Some(RetryCause::Navigation)),
            (
                failure(ErrorKind::Timeout(TimeoutKind::Command)),
                Some(RetryCause::Timeout),
            ),
            (
                failure(ErrorKind::Timeout(TimeoutKind::Event)),
                Some(RetryCause::Timeout),
            ),
            (status(429, None), Some(RetryCause::HttpStatus)),
            (status(503, None), Some(RetryCause::HttpStatus)),
            // The job's own deadline ends it; other statuses and errors are answers.
            (failure(ErrorKind::Timeout(TimeoutKind::Job)), None),
            (status(404, None), None),
            (status(500, None), None),
            (failure(ErrorKind::Script), None),
            (failure(ErrorKind::Protocol), None),
            (failure(ErrorKind::InvalidInput), None),
            (failure(ErrorKind::Shutdown), None),
        ];
        for (f, want) in cases {
            let got = match p.decide(&f, 0, LOTS, 0.0) {
                Decision::Retry { cause, .. } => Some(cause),
                Decision::GiveUp => None,
            };
            assert_eq!(got, want, "{f:?}");
        }
        let no_nav = p.clone().on(RetryCause::Navigation, false);
        let nav = failure(ErrorKind::Navigation);
        assert_eq!(no_nav.decide(&nav, 0, LOTS, 0.0), Decision::GiveUp);
        let only_crash = p.clone().only(&[RetryCause::Crash]);
        assert_eq!(
            only_crash.decide(&status(503, None), 0, LOTS, 0.0),
            Decision::GiveUp
        );
        let with_500 = p.statuses(&[500]);
        assert!(matches!(
            with_500.decide(&status(500, None), 0, LOTS, 0.0),
            Decision::Retry { .. }
        ));
    }

    fn after(p: &RetryPolicy, f: &Failure, done: u32, random: f64) -> Duration {
        match p.decide(f, done, LOTS, random) {
            Decision::Retry { after, .. } => after,
            Decision::GiveUp => panic!("expected a retry"),
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_max_and_the_count_runs_out() {
        let p = RetryPolicy::new(10)
            .backoff(100 * MS, 1000 * MS)
            .jitter(0.0);
        let nav = failure(ErrorKind::Navigation);
        let waits: Vec<_> = (0..6).map(|n| after(&p, &nav, n, 0.0)).collect();
        assert_eq!(
            waits,
            [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1000 * MS, 1000 * MS]
        );
        let endless = p.clone().max_retries(u32::MAX);
        assert_eq!(after(&endless, &nav, 1000, 0.0), 1000 * MS, "no overflow");
        assert_eq!(p.decide(&nav, 10, LOTS, 0.0), Decision::GiveUp);
    }

    #[test]
    fn jitter_shortens_a_wait_by_up_to_its_share() {
        let p = RetryPolicy::new(3).backoff(100 * MS, LOTS).jitter(0.5);
        let nav = failure(ErrorKind::Navigation);
        assert_eq!(after(&p, &nav, 1, 0.0), 200 * MS);
        assert_eq!(after(&p, &nav, 1, 0.5), 150 * MS);
        assert_eq!(after(&p, &nav, 1, 0.75), 125 * MS);
    }

    #[test]
    fn retry_after_lengthens_the_wait_up_to_its_cap() {
        let p = RetryPolicy::new(3)
            .backoff(100 * MS, LOTS)
            .jitter(0.0)
            .max_retry_after(Duration::from_secs(5));
        let s = |secs| status(503, Some(Duration::from_secs(secs)));
        assert_eq!(after(&p, &s(1), 0, 0.0), Duration::from_secs(1));
        assert_eq!(
            after(&p, &s(3600), 0, 0.0),
            Duration::from_secs(5),
            "capped"
        );
        // A shorter Retry-After than the backoff does not shorten it.
        let tiny = status(429, Some(MS));
        assert_eq!(after(&p, &tiny, 2, 0.0), 400 * MS);
    }

    #[test]
    fn a_wait_past_the_jobs_deadline_gives_up() {
        let p = RetryPolicy::new(3).backoff(100 * MS, LOTS).jitter(0.0);
        let s = status(503, Some(Duration::from_secs(2)));
        assert_eq!(
            p.decide(&s, 0, Duration::from_secs(2), 0.0),
            Decision::GiveUp
        );
        assert!(matches!(
            p.decide(&s, 0, Duration::from_secs(3), 0.0),
            Decision::Retry { .. }
        ));
    }

    #[test]
    fn crashes_take_a_fresh_page_and_others_when_asked() {
        let p = RetryPolicy::new(1);
        let fresh = |p: &RetryPolicy, f| match p.decide(&f, 0, LOTS, 0.0) {
            Decision::Retry { fresh, .. } => fresh,
            Decision::GiveUp => panic!("expected a retry"),
        };
        assert!(fresh(&p, failure(ErrorKind::SessionCrashed)));
        assert!(fresh(&p, failure(ErrorKind::ConnectionClosed)));
        assert!(!fresh(&p, failure(ErrorKind::Navigation)));
        assert!(fresh(&p.fresh_page(true), failure(ErrorKind::Navigation)));
    }

    #[test]
    fn bad_values_are_named() {
        for (p, field) in [
            (RetryPolicy::new(1).jitter(1.5), "jitter"),
            (RetryPolicy::new(1).jitter(f64::NAN), "jitter"),
            (
                RetryPolicy::new(1).backoff(Duration::from_secs(2), MS),
                "backoff",
            ),
            (RetryPolicy::new(1).statuses(&[42]), "status"),
        ] {
            let e = p.validate().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
            assert!(e.message().contains(field), "{e}");
        }
        RetryPolicy::new(3).validate().unwrap();
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = httpdate::parse_http_date("Tue, 01 Dec 2026 20:00:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Tue, 01 Dec 2026 20:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Tue, 01 Dec 2026 19:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date past is no wait"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
