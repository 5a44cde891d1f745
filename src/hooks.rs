//! Lifecycle hooks: the caller's async steps around a pooled page's life, like deadpool's
//! `Manager` hooks. `on_page_open` runs once on each fresh page (init scripts, viewport,
//! user agent, extra headers), `before_job` and `after_job` around each job.
//!
//! Owns: [`Hooks`] (what the builder was given, type-erased so shards can share it), how
//! one hook runs (under a deadline, its failure made an [`ErrorKind::Hook`] error), and
//! how many failures in a row a shard accepts before a request hears of them
//! ([`HOOK_ATTEMPTS`]).
//! Never: decides what happens to the page or the job; the shard does (a failed hook
//! retires its page, and the job, not yet started, gets another). Hooks run on the shard
//! that owns the page, so their futures need not be `Send`, and hold no lock.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::cdp::Page;
use crate::error::{Error, ErrorKind, Result};
use crate::shard::msg::LocalFuture;

/// How many failures of a hook in a row a shard absorbs (each on a fresh page) before
/// the request waiting on them fails with [`ErrorKind::Hook`].
pub(crate) const HOOK_ATTEMPTS: u32 = 3;

/// Where a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HookPoint {
    PageOpen,
    BeforeJob,
    AfterJob,
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HookPoint::PageOpen => "on_page_open",
            HookPoint::BeforeJob => "before_job",
            HookPoint::AfterJob => "after_job",
        })
    }
}

/// A hook's erased type: an async step on a page of the shard's thread.
trait Hook: Send + Sync {
    fn call<'a>(&'a self, page: &'a Page) -> LocalFuture<'a, Result<()>>;
}

impl<F> Hook for F
where
    F: AsyncFn(&Page) -> Result<()> + Send + Sync,
{
    fn call<'a>(&'a self, page: &'a Page) -> LocalFuture<'a, Result<()>> {
        Box::pin(self(page))
    }
}

/// The hooks of a pool, shared by its shards.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    on_page_open: Option<Arc<dyn Hook>>,
    before_job: Option<Arc<dyn Hook>>,
    after_job: Option<Arc<dyn Hook>>,
}

impl Hooks {
    /// Sets the hook run at `point`.
    pub(crate) fn set<F>(&mut self, point: HookPoint, hook: F)
    where
        F: AsyncFn(&Page) -> Result<()> + Send + Sync + 'static,
    {
        let hook: Option<Arc<dyn Hook>> = Some(Arc::new(hook));
        match point {
            HookPoint::PageOpen => self.on_page_open = hook,
            HookPoint::BeforeJob => self.before_job = hook,
            HookPoint::AfterJob => self.after_job = hook,
        }
    }

    fn at(&self, point: HookPoint) -> Option<&Arc<dyn Hook>> {
        match point {
            HookPoint::PageOpen => self.on_page_open.as_ref(),
            HookPoint::BeforeJob => self.before_job.as_ref(),
            HookPoint::AfterJob => self.after_job.as_ref(),
        }
    }

    /// True when hooks wrap each hold of a page (`before_job` or `after_job`): leases
    /// then come back through their shard, never straight to the next holder.
    pub(crate) fn wrap_leases(&self) -> bool {
        self.before_job.is_some() || self.after_job.is_some()
    }

    /// True when a hook is set at `point`.
    pub(crate) fn has(&self, point: HookPoint) -> bool {
        self.at(point).is_some()
    }

    /// Runs the hook at `point` on `page`, if there is one, within `limit`. Its error,
    /// or its deadline passing, comes back as an [`ErrorKind::Hook`] error naming it.
    ///
    /// Cancel-safe: dropping the future drops the hook's.
    pub(crate) async fn run(&self, point: HookPoint, page: &Page, limit: Duration) -> Result<()> {
        let Some(hook) = self.at(point) else {
            return Ok(());
        };
        match tokio::time::timeout(limit, hook.call(page)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::new(ErrorKind::Hook, format!("{point} failed: {e}"))),
            Err(_) => Err(Error::new(
                ErrorKind::Hook,
                format!("{point} did not finish within {limit:?}"),
            )),
        }
    }
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("on_page_open", &self.on_page_open.is_some())
            .field("before_job", &self.before_job.is_some())
            .field("after_job", &self.after_job.is_some())
            .finish()
    }
}

/// The error a request gets when a hook failed [`HOOK_ATTEMPTS`] times in a row.
pub(crate) fn gave_up(last: &Error) -> Error {
    Error::new(
        ErrorKind::Hook,
        format!(
            "{} (failed {HOOK_ATTEMPTS} times in a row, each on a fresh page; the job never ran)",
            last.message()
        ),
    )
}
