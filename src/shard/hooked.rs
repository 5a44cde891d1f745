//! The shard's side of the pool's lifecycle hooks (see `crate::hooks`), where they
//! wrap a page's opening and a lease's hold: `on_page_open` on each fresh page (a page
//! whose hook fails is closed and another opened), `before_job` before a lease is
//! granted and `after_job` when it comes back. (Around `run` jobs they run in `jobs`.)
//!
//! With `before_job` or `after_job` set, a lease is never passed straight from holder
//! to holder: each comes back through the shard, which runs `after_job` on it. A failed
//! `before_job` retires the page and puts the `acquire` request back in line; a failed
//! `after_job` retires the page. Never decides who gets a page: the plan does.

use std::rc::Rc;
use std::sync::Arc as StdArc;

use tokio::time::Instant;

use super::lifecycle::{self, Opening};
use super::msg::{grant_lease, GrantTx, Request, Work};
use super::plan::Return;
use super::Shell;
use crate::cdp::Page;
use crate::config::{Config, Isolation};
use crate::error::{Error, Result};
use crate::hooks::{gave_up, HookPoint, HOOK_ATTEMPTS};
use crate::job::Job;

impl Shell {
    /// Opens a page (with its key's identity under `ContextPerKey`) and runs
    /// `on_page_open` on it. A page whose hook fails is closed
    /// and another opened, up to [`HOOK_ATTEMPTS`] times; then the opening fails with
    /// the hook's error (and the plan fails one waiter with it).
    pub(super) async fn open_ready(
        &self,
        browser: usize,
        owner: Option<&StdArc<str>>,
        cfg: &Config,
    ) -> Result<(Page, Option<String>)> {
        let mut failures = 0;
        loop {
            let mut options = self.shared.page_options.clone();
            let n = self.openings.get() + 1;
            self.openings.set(n);
            options.initial_url = format!("about:blank#cdpmux-{}-{}-{n}", self.tag, self.id);
            let in_use = |b: usize, o: &StdArc<str>| self.plan.borrow().context_in_use(b, o);
            let identity = match (owner, cfg.isolation) {
                (Some(key), Isolation::ContextPerKey) => Some(self.identities.of(key)?),
                _ => None,
            };
            let opening = Opening {
                links: &self.links,
                contexts: &self.contexts,
                options,
                in_use: &in_use,
                identity,
            };
            let (page, own_context) = lifecycle::open(opening, browser, owner, cfg).await?;
            let hooks = &self.shared.hooks;
            let Err(e) = hooks
                .run(HookPoint::PageOpen, &page, cfg.create_timeout)
                .await
            else {
                return Ok((page, own_context));
            };
            self.metrics.borrow_mut().counters.hook_failures_open += 1;
            tracing::warn!(shard = self.id, error = %e, "a page's on_page_open hook failed; closing it");
            if let (Some(ctx), Some(conn)) = (own_context, self.links.live(browser)) {
                super::identities::dispose_context(&conn, &ctx);
            }
            drop(page); // closes its target
            failures += 1;
            if failures >= HOOK_ATTEMPTS {
                return Err(gave_up(&e));
            }
        }
    }

    /// Grants lease `lease` once `before_job` has passed on its page, with no hand-off
    /// between holders (the shard runs `after_job` on each release). A failed hook
    /// retires the page and puts the request back in line, up to [`HOOK_ATTEMPTS`]
    /// failures in a row on this shard; then the caller gets the hook's error.
    pub(super) fn grant_after_hook(
        self: &Rc<Self>,
        tx: GrantTx,
        lease: u64,
        job: Job,
        submitted: Instant,
        attempts: u32,
        cfg: &Config,
    ) {
        let inbox = &self.shared.inboxes[self.id];
        let page = self.plan.borrow().lease_page(lease).cloned();
        let (Some(page), true) = (page, self.shared.hooks.has(HookPoint::BeforeJob)) else {
            grant_lease(tx, self.id, lease, inbox, None);
            return;
        };
        let shell = self.clone();
        let limit = cfg.create_timeout;
        tokio::task::spawn_local(async move {
            let hooked = shell
                .shared
                .hooks
                .run(HookPoint::BeforeJob, &page, limit)
                .await;
            drop(page);
            let e = match hooked {
                Ok(()) => {
                    shell.before_job_failures.set(0);
                    let inbox = &shell.shared.inboxes[shell.id];
                    grant_lease(tx, shell.id, lease, inbox, None);
                    return;
                }
                Err(e) => e,
            };
            tracing::warn!(shard = shell.id, error = %e, "before_job failed on a lease's page; retiring it");
            shell.feed(|p, now, cfg| p.released_as(lease, Return::Dead, now, cfg));
            shell.before_job_failed(&e, job, Work::Acquire(tx), submitted, attempts);
        });
    }

    /// After `before_job` failed on the page `work` was about to get (the page is
    /// retired by the caller): counts it, and puts the request back in line with a new
    /// arrival number (true), or after [`HOOK_ATTEMPTS`] failures in a row fails it with
    /// `Hook` (false).
    pub(super) fn before_job_failed(
        self: &Rc<Self>,
        e: &Error,
        job: Job,
        work: Work,
        submitted: Instant,
        attempts: u32,
    ) -> bool {
        self.metrics.borrow_mut().counters.hook_failures_before += 1;
        let failures = self.before_job_failures.get() + 1;
        if failures >= HOOK_ATTEMPTS {
            self.before_job_failures.set(0);
            work.fail(gave_up(e));
            return false;
        }
        self.before_job_failures.set(failures);
        let again = Request {
            job,
            work,
            submitted,
            arrival: self.shared.lines[self.id].next_id(),
            attempts,
        };
        self.feed(|p, now, cfg| p.submit(again, now, cfg));
        true
    }

    /// A lease gave its session back: `after_job` runs on it first, if set (a failure
    /// retires the page).
    pub(super) fn release(self: &Rc<Self>, lease: u64) {
        let page = self.plan.borrow().lease_page(lease).cloned();
        // The holder's listeners end with its lease, before `after_job` runs.
        if let Some(page) = &page {
            page.end_job();
        }
        let page = page.filter(|p| p.is_alive() && self.shared.hooks.has(HookPoint::AfterJob));
        let Some(page) = page else {
            self.feed(|p, now, cfg| p.released(lease, now, cfg));
            return;
        };
        let shell = self.clone();
        let limit = self.cfg().create_timeout;
        tokio::task::spawn_local(async move {
            let hooked = shell
                .shared
                .hooks
                .run(HookPoint::AfterJob, &page, limit)
                .await;
            drop(page);
            let how = match hooked {
                Ok(()) => Return::Clean,
                Err(e) => {
                    shell.metrics.borrow_mut().counters.hook_failures_after += 1;
                    tracing::warn!(shard = shell.id, error = %e, "after_job failed on a lease's page; retiring it");
                    Return::Dead
                }
            };
            shell.feed(|p, now, cfg| p.released_as(lease, how, now, cfg));
        });
    }
}
