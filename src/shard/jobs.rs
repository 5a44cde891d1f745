//! Running `run` jobs on the shard's thread: a task per busy session runs its job, gives
//! the session back through the plan, and runs the next job the plan hands that session
//! on to, with no task spawned in between (see `Shell::execute`). A guard returns the
//! session however the task ends, so a job's session is never lost. The pool's
//! `before_job` and `after_job` hooks run here, around the job (see `hooks`): a failed
//! `before_job` retires the page and puts the job, not started, back in line.

use std::rc::Rc;
use std::time::Duration;

use tokio::time::Instant;

use super::lifecycle;
use super::msg::{Attempt, JobTask, Request, Work};
use super::plan::Return;
use super::waiters::SessionKey;
use super::Shell;
use crate::cdp::Page;
use crate::error::{Error, ErrorKind, TimeoutKind};
use crate::hooks::HookPoint;
use crate::job::Job;
use crate::retry::{Decision, Failure};

/// A job to run on a session, as the plan handed it out.
pub(super) struct RunArgs {
    pub(super) key: SessionKey,
    pub(super) page: Rc<Page>,
    pub(super) job: Job,
    pub(super) task: Box<dyn JobTask>,
    pub(super) submitted: Instant,
    pub(super) attempts: u32,
    pub(super) deadline: Instant,
}

impl Shell {
    /// Runs `run`, then each job the plan hands this session on to as it comes back, in
    /// this one task (see `execute`).
    pub(super) async fn run_jobs(self: Rc<Self>, mut run: RunArgs) {
        loop {
            let Some(next) = self.clone().run_job(run).await else {
                return;
            };
            run = next;
            // A job that never waits must not keep the shard's other tasks out.
            tokio::task::consume_budget().await;
        }
    }

    /// Runs one job and gives its session back; returns the next job the plan gave that
    /// session to, if any.
    async fn run_job(self: Rc<Self>, run: RunArgs) -> Option<RunArgs> {
        let RunArgs {
            key,
            page,
            job,
            mut task,
            submitted,
            attempts,
            deadline,
        } = run;
        // Returns the session even if this task is dropped (shutdown aborts it).
        let mut guard = ReturnOnDrop {
            shell: self.clone(),
            key,
            how: Return::Interrupted,
            retire: false,
        };
        let hooks = &self.shared.hooks;
        let hook_limit = self.cfg().create_timeout;
        let attempt = tokio::time::timeout_at(deadline, async {
            if hooks.has(HookPoint::BeforeJob) {
                match hooks.run(HookPoint::BeforeJob, &page, hook_limit).await {
                    Ok(()) => self.before_job_failures.set(0),
                    Err(e) => return Attempt::HookFailed(e),
                }
            }
            match lifecycle::block_for_job(&page, job.block.as_deref()).await {
                Ok(()) => task.run(&page).await,
                Err(e) => Attempt::NotRun(e),
            }
        })
        .await;
        // No listener of this job hears the next one's (or the after_job hook's) events.
        page.end_job();
        // After a job that ran to its end; a failing hook retires the page, and the
        // job's result stands.
        if matches!(attempt, Ok(Attempt::Ok | Attempt::Failed(_))) && page.is_alive() {
            if let Err(e) = hooks.run(HookPoint::AfterJob, &page, hook_limit).await {
                self.metrics.borrow_mut().counters.hook_failures_after += 1;
                tracing::warn!(shard = self.id, error = %e, "after_job failed; retiring the page");
                guard.retire = true;
            }
        }
        // The page's own blocking (and interception) is back before anyone else gets
        // it, or it is retired.
        guard.retire |= !lifecycle::unblock_after_job(&page).await;
        drop(page);
        // A job that never ran fails like one that did, with the preparation's error.
        let mut not_run = None;
        let attempt = match attempt {
            Ok(Attempt::NotRun(e)) => {
                let failure = Failure::of(&e);
                not_run = Some(e);
                Ok(Attempt::Failed(failure))
            }
            other => other,
        };
        let ok = matches!(attempt, Ok(Attempt::Ok));
        let next;
        match attempt {
            Ok(Attempt::Ok) => {
                guard.how = Return::Clean;
                next = guard.give_back();
                self.outbox.post(task);
            }
            Ok(Attempt::Failed(failure)) => {
                let time_left = deadline.saturating_duration_since(Instant::now());
                let decision = job.retry_policy(&self.cfg()).decide(
                    &failure,
                    attempts,
                    time_left,
                    fastrand::f64(),
                );
                let fresh = matches!(decision, Decision::Retry { fresh: true, .. });
                guard.how = match failure.kind {
                    ErrorKind::SessionCrashed | ErrorKind::ConnectionClosed => Return::Dead,
                    _ if fresh => Return::Retire,
                    ErrorKind::Timeout(_) => Return::Interrupted,
                    _ => Return::Clean,
                };
                next = guard.give_back();
                if let Decision::Retry { cause, after, .. } = decision {
                    self.metrics.borrow_mut().counters.retry(cause);
                    self.retry_after(job, task, submitted, attempts + 1, after);
                    return next;
                }
                match not_run {
                    Some(e) if attempts > 0 => task.fail(e.after_attempts(attempts + 1)),
                    Some(e) => task.fail(e),
                    None => {
                        if attempts > 0 {
                            task.gave_up(attempts + 1);
                        }
                        task.finish();
                    }
                }
            }
            Ok(Attempt::HookFailed(e)) => {
                // The page is retired; the job, which never started, tries another.
                guard.how = Return::Dead;
                next = guard.give_back();
                tracing::warn!(shard = self.id, error = %e, "before_job failed; retiring the page");
                // Back in line: the job is neither done nor failed yet.
                if self.before_job_failed(&e, job, Work::Run(task), submitted, attempts) {
                    return next;
                }
            }
            Ok(Attempt::Abandoned | Attempt::NotRun(_)) => next = guard.give_back(),
            Err(_) => {
                next = guard.give_back();
                self.metrics.borrow_mut().counters.timeout(TimeoutKind::Job);
                let limit = job.timeout.unwrap_or(self.cfg().job_timeout);
                task.fail(Error::timeout(TimeoutKind::Job, "job", limit));
            }
        }
        self.metrics.borrow_mut().job_done(submitted.elapsed(), ok);
        next
    }
}

impl Shell {
    /// Submits `task` again after `after`, holding no page meanwhile. The wait ends early,
    /// and the job with it, if the caller stops waiting; its deadline was checked by the
    /// decision (the wait ends before it), and is enforced again once it runs.
    fn retry_after(
        self: &Rc<Self>,
        job: Job,
        mut task: Box<dyn JobTask>,
        submitted: Instant,
        attempts: u32,
        after: Duration,
    ) {
        let shell = self.clone();
        let resubmit = move |mut job: Job, task| {
            // Its wait for a page starts now, not at its first submission: the wait limit
            // is stretched by what it has been through (the job's deadline, counted from
            // the first submission, still bounds it).
            let waited = submitted.elapsed();
            let wait = job.wait_timeout.unwrap_or(shell.cfg().wait_timeout);
            job.wait_timeout = Some(wait.saturating_add(waited));
            let retry = Request {
                job,
                work: Work::Run(task),
                submitted,
                // Its place in line went with the attempt that ran.
                arrival: shell.shared.lines[shell.id].next_id(),
                attempts,
            };
            shell.feed(|p, now, cfg| p.submit(retry, now, cfg));
        };
        if after.is_zero() {
            resubmit(job, task);
            return;
        }
        tokio::task::spawn_local(async move {
            let gone = tokio::select! {
                _ = tokio::time::sleep(after) => false,
                _ = task.abandoned() => true,
            };
            if !gone {
                resubmit(job, task);
            }
        });
    }
}

/// Returns a session when a job's task ends, however it ends.
pub(super) struct ReturnOnDrop {
    shell: Rc<Shell>,
    key: SessionKey,
    how: Return,
    /// Returned `Dead` whatever `how` says (its blocking could not be put back).
    retire: bool,
}

impl ReturnOnDrop {
    /// Gives the session back now. If the plan hands it straight on to another job, that
    /// job comes back here, for the returning task to run next (see `Shell::execute`).
    fn give_back(self) -> Option<RunArgs> {
        let shell = self.shell.clone();
        shell.handing_over.set(Some(self.key));
        drop(self); // feeds `returned`
        shell.handing_over.set(None);
        let next = shell.handed.borrow_mut().take();
        next
    }
}

impl Drop for ReturnOnDrop {
    fn drop(&mut self) {
        let key = self.key;
        let how = if self.retire { Return::Dead } else { self.how };
        self.shell
            .feed(|p, now, cfg| p.returned(key, how, now, cfg));
    }
}
