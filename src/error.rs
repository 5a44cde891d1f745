//! The one error type of cdpmux.
//!
//! An [`Error`] carries a matchable [`ErrorKind`] and a message that says what went wrong
//! and, where there is something to do about it, what to do. Kinds are `#[non_exhaustive]`
//! so new ones are not breaking changes. Only cdpmux makes errors: the constructors are
//! crate-private, and callers ask questions ([`Error::is_retryable`] and friends) or match
//! [`Error::kind`].

use std::fmt;

/// Which deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimeoutKind {
    /// Waiting in the queue for a free session.
    Wait,
    /// Creating (opening and attaching) a new session.
    Create,
    /// One CDP command.
    Command,
    /// The whole job.
    Job,
    /// Waiting for a CDP event.
    Event,
    /// Starting or connecting to a browser.
    Launch,
    /// [`Pool::drain`](crate::Pool::drain): finishing what was in flight.
    Drain,
}

impl TimeoutKind {
    /// A short lowercase name (`wait`, `create`, ...), used in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            TimeoutKind::Wait => "wait",
            TimeoutKind::Create => "create",
            TimeoutKind::Command => "command",
            TimeoutKind::Job => "job",
            TimeoutKind::Event => "event",
            TimeoutKind::Launch => "launch",
            TimeoutKind::Drain => "drain",
        }
    }
}

/// What kind of failure an [`Error`] is. Match on it to decide what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A deadline passed.
    Timeout(TimeoutKind),
    /// The wait queue is full: back off and retry later (like HTTP 429).
    QueueFull,
    /// The machine is short of memory (past
    /// [`Config::memory_refuse_above`](crate::Config::memory_refuse_above)): the request
    /// was refused before it could open a page that might crash the browser. Back off and
    /// retry later, like [`ErrorKind::QueueFull`], or lower the load.
    Overloaded,
    /// The page's renderer crashed, or its target went away, while the call was pending.
    SessionCrashed,
    /// The WebSocket to the browser is closed or broken.
    ConnectionClosed,
    /// No healthy browser can take the request (not found, not running, or marked down).
    BrowserUnavailable,
    /// The browser answered the command with a CDP error (see [`Error::cdp_code`]).
    Protocol,
    /// The page could not load the URL (DNS failure, refused connection, bad certificate...).
    /// The message carries Chromium's `net::ERR_*` text (`net::ERR_NAME_NOT_RESOLVED`).
    /// An HTTP error status is not one: `goto` returns it in its
    /// [`Navigation`](crate::cdp::Navigation) (see [`ErrorKind::HttpStatus`]). Not
    /// [`retryable`](Error::is_retryable) as such; a [`RetryPolicy`](crate::RetryPolicy)
    /// may retry it (a refused connection or a DNS hiccup may pass).
    Navigation,
    /// The site answered with an HTTP error status, and the job said so with
    /// [`Navigation::error_for_status`](crate::cdp::Navigation::error_for_status). See
    /// [`Error::status`] and [`Error::retry_after`]; a [`RetryPolicy`](crate::RetryPolicy)
    /// retries 429 and 503 by default.
    HttpStatus,
    /// The page's JavaScript threw while evaluating an expression.
    Script,
    /// A configuration value, URL or other input was rejected before anything was sent.
    InvalidInput,
    /// The pool is shutting down and takes no new requests.
    Shutdown,
    /// An I/O error outside the WebSocket (spawning a process, reading a file).
    Io,
    /// A lifecycle hook ([`PoolBuilder::on_page_open`](crate::PoolBuilder::on_page_open),
    /// [`before_job`](crate::PoolBuilder::before_job)) kept failing, so no page could be
    /// made ready for the job, which never ran. The message carries the hook's last error.
    /// Each failure retired its page; fix the hook.
    Hook,
    /// A bug inside cdpmux: a shard's thread panicked. Every request it held, and every
    /// later one routed to it, fails with this kind; the other shards go on. Not
    /// retryable as such (a retry may land on the same shard): report it, and rebuild
    /// the pool if too many shards are gone.
    Internal,
}

/// The error type of cdpmux: a kind to match on and a message for people.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    message: String,
    cdp_code: Option<i64>,
    /// For [`ErrorKind::HttpStatus`]: the status and the `Retry-After` it asked for.
    status: Option<u16>,
    retry_after: Option<std::time::Duration>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// The result type of cdpmux.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with a message for people.
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                cdp_code: None,
                status: None,
                retry_after: None,
                source: None,
            }),
        }
    }

    /// The site answered `status` for `url`, asking to come back after `retry_after`.
    pub(crate) fn http_status(
        url: &str,
        status: u16,
        retry_after: Option<std::time::Duration>,
    ) -> Self {
        let wait = match retry_after {
            Some(d) => format!(" (Retry-After: {d:?})"),
            None => String::new(),
        };
        let mut e = Error::new(
            ErrorKind::HttpStatus,
            format!("{url} answered HTTP {status}{wait}"),
        );
        e.inner.status = Some(status);
        e.inner.retry_after = retry_after;
        e
    }

    /// The same error, its message saying the job gave up after `attempts` attempts.
    pub(crate) fn after_attempts(mut self, attempts: u32) -> Self {
        self.inner.message = format!("{}; gave up after {attempts} attempts", self.inner.message);
        self
    }

    /// An [`ErrorKind::Hook`] error with `message`: what a lifecycle hook
    /// ([`PoolBuilder::on_page_open`](crate::PoolBuilder::on_page_open) and the others)
    /// returns to fail for a reason of its own, e.g. a page that did not come up as it
    /// should. The page is then retired.
    pub fn hook(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Hook, message)
    }

    /// A CDP error reply: the code and message the browser sent for `method`.
    pub(crate) fn protocol(method: &str, code: i64, message: &str) -> Self {
        let mut e = Error::new(
            ErrorKind::Protocol,
            format!("{method} failed: CDP error {code}: {message}"),
        );
        e.inner.cdp_code = Some(code);
        e
    }

    /// A deadline of `kind` passed after `after`.
    pub(crate) fn timeout(
        kind: TimeoutKind,
        what: impl fmt::Display,
        after: std::time::Duration,
    ) -> Self {
        Error::new(
            ErrorKind::Timeout(kind),
            format!("{what}: {} deadline of {after:?} passed", kind.as_str()),
        )
    }

    /// Attaches the underlying cause.
    pub(crate) fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        self.inner.source = Some(Box::new(source));
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The message, without the cause.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The CDP error code, for [`ErrorKind::Protocol`] errors.
    pub fn cdp_code(&self) -> Option<i64> {
        self.inner.cdp_code
    }

    /// The HTTP status, for [`ErrorKind::HttpStatus`] errors.
    pub fn status(&self) -> Option<u16> {
        self.inner.status
    }

    /// How long the site asked to wait, from its `Retry-After` header as sent (a
    /// [`RetryPolicy`](crate::RetryPolicy) caps what it honours), for
    /// [`ErrorKind::HttpStatus`] errors that carried one.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.inner.retry_after
    }

    /// True for any [`ErrorKind::Timeout`], whichever deadline passed.
    pub fn is_timeout(&self) -> bool {
        matches!(self.inner.kind, ErrorKind::Timeout(_))
    }

    /// True when the page was lost under the call: its renderer crashed or its target went
    /// away ([`ErrorKind::SessionCrashed`]), or the WebSocket to its browser closed
    /// ([`ErrorKind::ConnectionClosed`]). The page is not reused; the same work on a fresh
    /// page may well succeed. A [`RetryPolicy`](crate::RetryPolicy) always retries these on
    /// a fresh page.
    pub fn is_crash(&self) -> bool {
        matches!(
            self.inner.kind,
            ErrorKind::SessionCrashed | ErrorKind::ConnectionClosed
        )
    }

    /// True when the failure came from the pool's or the browser's state at that moment,
    /// not from the page or the request, so a crawler should try the same request again
    /// (after a short backoff):
    ///
    /// - a crash or lost socket ([`is_crash`](Error::is_crash));
    /// - [`ErrorKind::BrowserUnavailable`], no healthy browser right now (relaunching,
    ///   reconnecting, or marked down by the breaker);
    /// - [`ErrorKind::QueueFull`] and [`ErrorKind::Overloaded`] (backpressure);
    /// - [`ErrorKind::Timeout`] of [`TimeoutKind::Wait`] (no page came free in time),
    ///   [`TimeoutKind::Create`] (opening a page took too long) or [`TimeoutKind::Launch`]
    ///   (starting or reaching a browser took too long).
    ///
    /// Not retryable: command, job and event deadlines (the page itself was slow; a retry
    /// would hold a page for as long again), CDP protocol errors, navigation and script
    /// errors, invalid input, shutdown, I/O errors, hook failures and internal errors.
    pub fn is_retryable(&self) -> bool {
        self.is_crash()
            || matches!(
                self.inner.kind,
                ErrorKind::BrowserUnavailable
                    | ErrorKind::QueueFull
                    | ErrorKind::Overloaded
                    | ErrorKind::Timeout(
                        TimeoutKind::Wait | TimeoutKind::Create | TimeoutKind::Launch
                    )
            )
    }

    /// True for [`ErrorKind::Shutdown`]: the pool takes no more requests; stop submitting.
    pub fn is_shutdown(&self) -> bool {
        self.inner.kind == ErrorKind::Shutdown
    }
}

impl Clone for Error {
    /// Clones kind, message and CDP code; the source is kept as text in the message.
    fn clone(&self) -> Self {
        let mut message = self.inner.message.clone();
        if let Some(src) = &self.inner.source {
            message = format!("{message}: {src}");
        }
        Error {
            inner: Box::new(Inner {
                kind: self.inner.kind,
                message,
                cdp_code: self.inner.cdp_code,
                status: self.inner.status,
                retry_after: self.inner.retry_after,
                source: None,
            }),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind)
            .field("message", &self.inner.message);
        if let Some(code) = self.inner.cdp_code {
            d.field("cdp_code", &code);
        }
        if let Some(status) = self.inner.status {
            d.field("status", &status);
        }
        if let Some(after) = self.inner.retry_after {
            d.field("retry_after", &after);
        }
        if let Some(src) = &self.inner.source {
            d.field("source", src);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)?;
        if let Some(src) = &self.inner.source {
            write!(f, ": {src}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::new(ErrorKind::Io, "I/O error").with_source(e)
    }
}

/// The error of a request refused or dropped because the pool is shutting down.
pub(crate) fn shutdown_error() -> Error {
    Error::new(
        ErrorKind::Shutdown,
        "the pool is shutting down and takes no new requests",
    )
}

/// The error of a request lost because shard `shard` panicked (`what` is the panic's
/// message).
pub(crate) fn internal_error(shard: usize, what: &str) -> Error {
    Error::new(
        ErrorKind::Internal,
        format!(
            "shard {shard} stopped after an internal error (a bug in cdpmux: {what}); \
             the request was not completed. Please report it; the other shards go on"
        ),
    )
}

/// The error of a request whose wait ended at its `kind` deadline, `limit` after it
/// asked.
pub(crate) fn timeout_error(kind: TimeoutKind, limit: std::time::Duration) -> Error {
    let what = match kind {
        TimeoutKind::Job => "job",
        _ => "waiting for a session",
    };
    let mut e = Error::timeout(kind, what, limit);
    if kind == TimeoutKind::Wait {
        e = Error::new(
            e.kind(),
            format!(
                "{}; all sessions stayed busy: add sessions or shards, or lower the load",
                e.message()
            ),
        );
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Every kind, each timeout kind included.
    fn every_kind() -> Vec<ErrorKind> {
        let timeouts = [
            TimeoutKind::Wait,
            TimeoutKind::Create,
            TimeoutKind::Command,
            TimeoutKind::Job,
            TimeoutKind::Event,
            TimeoutKind::Launch,
            TimeoutKind::Drain,
        ];
        let mut kinds: Vec<ErrorKind> = timeouts.into_iter().map(ErrorKind::Timeout).collect();
        kinds.extend([
            ErrorKind::QueueFull,
            ErrorKind::Overloaded,
            ErrorKind::SessionCrashed,
            ErrorKind::ConnectionClosed,
            ErrorKind::BrowserUnavailable,
            ErrorKind::Protocol,
            ErrorKind::Navigation,
            ErrorKind::HttpStatus,
            ErrorKind::Script,
            ErrorKind::InvalidInput,
            ErrorKind::Shutdown,
            ErrorKind::Io,
            ErrorKind::Hook,
            ErrorKind::Internal,
        ]);
        kinds
    }

    fn kinds_where(test: impl Fn(&Error) -> bool) -> Vec<ErrorKind> {
        every_kind()
            .into_iter()
            .filter(|&k| test(&Error::new(k, "x")))
            .collect()
    }

    #[test]
    fn is_timeout_is_every_deadline_and_nothing_else() {
        let kinds = kinds_where(Error::is_timeout);
        assert_eq!(kinds.len(), 7);
        assert!(kinds.iter().all(|k| matches!(k, ErrorKind::Timeout(_))));
        let e = Error::timeout(TimeoutKind::Job, "job", Duration::from_secs(1));
        assert!(e.is_timeout());
        assert_eq!(e.kind(), ErrorKind::Timeout(TimeoutKind::Job));
    }

    #[test]
    fn is_crash_is_a_lost_page_or_socket() {
        assert_eq!(
            kinds_where(Error::is_crash),
            [ErrorKind::SessionCrashed, ErrorKind::ConnectionClosed]
        );
    }

    #[test]
    fn is_retryable_is_the_documented_list() {
        assert_eq!(
            kinds_where(Error::is_retryable),
            [
                ErrorKind::Timeout(TimeoutKind::Wait),
                ErrorKind::Timeout(TimeoutKind::Create),
                ErrorKind::Timeout(TimeoutKind::Launch),
                ErrorKind::QueueFull,
                ErrorKind::Overloaded,
                ErrorKind::SessionCrashed,
                ErrorKind::ConnectionClosed,
                ErrorKind::BrowserUnavailable,
            ]
        );
    }

    #[test]
    fn is_shutdown_is_shutdown_only() {
        assert_eq!(kinds_where(Error::is_shutdown), [ErrorKind::Shutdown]);
    }

    #[test]
    fn a_cdp_error_keeps_its_code_and_is_not_retryable() {
        let e = Error::protocol("Page.navigate", -32000, "Target crashed");
        assert_eq!(e.kind(), ErrorKind::Protocol);
        assert_eq!(e.cdp_code(), Some(-32000));
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("Page.navigate"), "{e}");
    }
}
