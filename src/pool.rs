//! The public handle: [`Pool`] and its builder.
//!
//! A `Pool` is `Clone + Send + Sync`; it routes each request to a shard and waits for
//! the answer. It owns the shard threads and the browsers it launched, and stops both on
//! [`Pool::shutdown`] or when the last handle is dropped.

use std::fmt;
use std::sync::Arc as StdArc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::time::Instant;

use crate::cdp::Page;
use crate::config::Config;
use crate::error::{internal_error, shutdown_error};
use crate::error::{Error, ErrorKind, Result};
use crate::fleet::Fleet;
use crate::handoff::{Join, Line};
use crate::identity::{merge_cookies, ContextOptions, Cookie};
use crate::job::{wait_deadline, Job};
use crate::lease::Lease;
use crate::live_config::publish_config;
use crate::metrics::Snapshot;
use crate::retry::Failure;
use crate::router::{shard_for, LoadGauges};
use crate::scaler::{check_page_cap, Sampler, ScaleStatus};
use crate::shard;
use crate::shard::msg::{Attempt, Grant, JobTask, LocalFuture, Msg, Request, Work};
use crate::steal::Overflow;
use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::{mpsc, oneshot, Arc, LiveCell};

mod builder;
mod drain;

pub use builder::PoolBuilder;

struct Inner {
    inboxes: StdArc<[mpsc::UnboundedSender<Msg>]>,
    config: Arc<LiveCell<Config>>,
    gauges: LoadGauges,
    /// Each shard's line (see `handoff`): a plain `acquire` may join it directly.
    lines: StdArc<[Arc<Line<Work>>]>,
    /// Each shard's flag, raised when it died of a panic (see `shard`).
    broken: StdArc<[AtomicBool]>,
    // Touched only by shutdown and drop, never on a request's path.
    threads: std::sync::Mutex<Vec<JoinHandle<()>>>,
    fleet: StdArc<Fleet>,
    /// The overflow queues, read by a test hook only.
    overflow: Arc<Overflow<Request>>,
    closed: AtomicBool,
    /// Whether a drain has begun or expired (see `drain`).
    drain: drain::DrainState,
    /// The sampler's findings: the autoscale target, the low-memory refusal.
    scale: StdArc<ScaleStatus>,
    /// Taken by `reconfigure` and the sampler, the two writers of `config`.
    writer: StdArc<std::sync::Mutex<()>>,
    /// Stopped by shutdown and drop.
    sampler: std::sync::Mutex<Option<Sampler>>,
}

/// A pool of CDP page sessions spread over shards (one thread each).
///
/// Cheap to clone; `Send + Sync`. Use [`run`](Pool::run) to run a job on a pooled page
/// (the fast path: the job runs on the shard that owns the page), or
/// [`acquire`](Pool::acquire) for a [`Lease`] usable from any thread.
#[derive(Clone)]
pub struct Pool {
    inner: StdArc<Inner>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("shards", &self.inner.inboxes.len())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Starts building a pool.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.inner.inboxes.len()
    }

    /// The shard a job goes to: its key's, or the less loaded of two.
    fn route(&self, job: &Job) -> usize {
        let n = self.shards();
        match job.affinity_key() {
            Some(a) => shard_for(a.key(), n),
            None => self
                .inner
                .gauges
                .less_loaded_of_two(|n| fastrand::usize(..n)),
        }
    }

    fn submit(&self, shard: usize, request: Request) -> Result<()> {
        send_request(&self.inner.closed, &self.inner.inboxes[shard], request)
    }

    /// Joins `shard`'s line by itself, if the job may and the line is open (see
    /// `handoff`); otherwise `work` comes back as [`Join::Closed`], for the shard.
    fn join_line(&self, shard: usize, job: &Job, submitted: Instant, work: Work) -> Join<Work> {
        let line = &self.inner.lines[shard];
        if !job.joins_lines() || !line.is_open() || self.inner.closed.load(Ordering::Acquire) {
            return Join::Closed(work);
        }
        let cfg = self.inner.config.load();
        let deadline = wait_deadline(job, submitted, &cfg);
        line.join(job, submitted, deadline, work, cfg.max_queue)
    }

    /// Sends a request for `work` to `shard`, taking its arrival number now.
    fn ask_shard(&self, shard: usize, job: Job, work: Work, submitted: Instant) -> Result<()> {
        let request = Request {
            job,
            work,
            submitted,
            arrival: self.inner.lines[shard].next_id(),
            attempts: 0,
        };
        self.submit(shard, request)
    }

    /// Runs `job` on a pooled page: the closure runs on the shard that owns the page, so
    /// its commands never cross threads.
    ///
    /// The closure is called again when it fails and its retry policy says so
    /// ([`Job::retry`], [`Job::retries`], [`Config::retry`](crate::Config)), after a
    /// backoff during which the job holds no page. Its future need not be `Send`.
    ///
    /// Cancel safety: dropping the returned future at any point cancels the job (its
    /// future is dropped on the shard, the page is stopped and reused), removes it
    /// from the queue, or ends its wait for a retry; no session is leaked.
    pub async fn run<F, T>(&self, job: Job, f: F) -> Result<T>
    where
        F: AsyncFn(&Page) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        if let Some(policy) = &job.retry {
            policy.validate()?;
        }
        self.inner.scale.admit(&self.inner.config)?;
        let shard = self.route(&job);
        let _load = self.inner.gauges.enter(shard);
        self.refuse_if_draining()?;
        let submitted = Instant::now();
        let (work, rx) = run_work(f);
        // Under contention a plain job joins the shard's line by itself, with no message
        // to the shard, and the first session free anywhere in the pool runs it, in
        // arrival order (see `handoff`); otherwise, or if the line is closed, the shard
        // decides.
        let work = match self.join_line(shard, &job, submitted, work) {
            Join::Joined => return self.ran(rx.await).await,
            Join::Closed(work) => work,
            Join::Withdraw => {
                // The line closed as the job joined: the shard's drain may have missed
                // it. The job cannot be taken back out, so the shard takes back its
                // whole line again; the job is answered through `rx`.
                if self.inner.inboxes[shard].send(Msg::Reclaim).is_err() {
                    return Err(shutdown_error());
                }
                return self.ran(rx.await).await;
            }
        };
        self.ask_shard(shard, job, work, submitted)?;
        self.ran(rx.await).await
    }

    /// What a `run` caller's channel brought: the job's result, or nothing (the shard is
    /// gone, or the job panicked).
    async fn ran<T, E>(&self, reply: std::result::Result<Result<T>, E>) -> Result<T> {
        let result = match reply {
            Ok(result) => result,
            Err(_) => Err(self.unanswered().await.unwrap_or_else(|| {
                Error::new(
                    ErrorKind::Shutdown,
                    "the job was dropped before it finished (the pool shut down or the job panicked)",
                )
            })),
        };
        result.map_err(|e| self.explain_drain(e))
    }

    /// Why a reply channel closed with no answer, if a shard died: `Internal`. `None`
    /// means the pool is shutting down (or, for `run`, the job itself panicked).
    ///
    /// A dying shard may drop a request before it raises its flag, but raises it before
    /// it answers anything else: after a round trip through every inbox, every shard that
    /// dropped a request as it died has raised its flag. (The request may have moved to
    /// another shard by stealing, hence every inbox.)
    async fn unanswered(&self) -> Option<Error> {
        let mut probes = Vec::new();
        for inbox in self.inner.inboxes.iter() {
            let (tx, rx) = oneshot::channel();
            if inbox.send(Msg::Metrics(tx)).is_ok() {
                probes.push(rx);
            }
        }
        for rx in probes {
            let _ = rx.await;
        }
        let dead = self
            .inner
            .broken
            .iter()
            .position(|b| b.load(Ordering::Acquire))?;
        Some(internal_error(dead, "its thread panicked; see the log"))
    }

    /// Test-only fault hook: shard `shard` panics when it handles this message, as a bug
    /// in it would. Not part of the API.
    #[doc(hidden)]
    pub fn inject_shard_panic(&self, shard: usize) {
        let _ = self.inner.inboxes[shard].send(Msg::InjectPanic);
    }

    /// Takes a session for the caller's own use: a [`Lease`], usable from any thread and
    /// runtime, that returns the session when dropped.
    ///
    /// Cancel safety: dropping the future at any point leaks nothing; a session granted
    /// at that moment goes back to the pool.
    pub async fn acquire(&self, job: Job) -> Result<Lease> {
        self.inner.scale.admit(&self.inner.config)?;
        let shard = self.route(&job);
        let _load = self.inner.gauges.enter(shard);
        self.refuse_if_draining()?;
        let submitted = Instant::now();
        let (tx, mut rx) = oneshot::channel();
        // Under contention a plain request joins the shard's line by itself, with no
        // message to the shard (see `handoff`); otherwise, or if the line closes as it
        // joins, the shard decides.
        let work = match self.join_line(shard, &job, submitted, Work::Acquire(tx)) {
            Join::Joined => return self.leased(rx.await).await,
            Join::Closed(work) => work,
            Join::Withdraw => {
                rx.close();
                if let Ok(served) = rx.try_recv() {
                    return served.map(Lease::new);
                }
                let (tx, fresh) = oneshot::channel();
                rx = fresh;
                Work::Acquire(tx)
            }
        };
        self.ask_shard(shard, job, work, submitted)?;
        self.leased(rx.await).await
    }

    /// What an `acquire` caller's channel brought: a lease, an error, or nothing (the
    /// shard is gone: shut down, or dead).
    async fn leased<E>(&self, reply: std::result::Result<Result<Grant>, E>) -> Result<Lease> {
        let result = match reply {
            Ok(grant) => grant.map(Lease::new),
            Err(_) => Err(self.unanswered().await.unwrap_or_else(shutdown_error)),
        };
        result.map_err(|e| self.explain_drain(e))
    }

    /// Merged metrics of every shard.
    pub async fn metrics(&self) -> Snapshot {
        let mut replies = Vec::new();
        for inbox in self.inner.inboxes.iter() {
            let (tx, rx) = oneshot::channel();
            if inbox.send(Msg::Metrics(tx)).is_ok() {
                replies.push(rx);
            }
        }
        let mut reports = Vec::new();
        for rx in replies {
            if let Ok(r) = rx.await {
                reports.push(r);
            }
        }
        let mut snap = Snapshot::merge(&reports);
        self.inner.scale.fill(&mut snap, &self.inner.config.load());
        snap.counters.browsers_recycled = self.inner.fleet.recycled();
        snap
    }

    /// Sends `op(reply)` to every shard and collects the answers, for `what` (a call
    /// that needs [`Isolation::ContextPerKey`](crate::Isolation::ContextPerKey)).
    async fn ask_every_shard<T>(
        &self,
        what: &str,
        op: impl Fn(oneshot::Sender<T>) -> shard::IdentityOp,
    ) -> Result<Vec<T>> {
        if self.inner.config.load().isolation != crate::Isolation::ContextPerKey {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{what} needs Config::isolation = Isolation::ContextPerKey (a browser \
                     context per key); this pool runs {:?}",
                    self.inner.config.load().isolation
                ),
            ));
        }
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(shutdown_error());
        }
        let mut replies = Vec::new();
        for inbox in self.inner.inboxes.iter() {
            let (tx, rx) = oneshot::channel();
            if inbox.send(Msg::Identity(op(tx))).is_ok() {
                replies.push(rx);
            }
        }
        let mut answers = Vec::new();
        for rx in replies {
            match rx.await {
                Ok(answer) => answers.push(answer),
                Err(_) => return Err(self.unanswered().await.unwrap_or_else(shutdown_error)),
            }
        }
        Ok(answers)
    }

    /// Uses `options` for the pages of `key` under
    /// [`Isolation::ContextPerKey`](crate::Isolation::ContextPerKey), in place of the
    /// builder's [`context_options`](PoolBuilder::context_options) provider. Set them
    /// before the key's first job: a context already open for the key keeps its proxy,
    /// and its open pages keep their settings; contexts and pages opened later use
    /// `options`. Invalid options are refused here, with the field named, and so is
    /// a pool that does not run `ContextPerKey` ([`ErrorKind::InvalidInput`]).
    ///
    /// Cancel safety: once this returns, every shard uses `options`; dropped before, some
    /// shards may and others not.
    pub async fn set_context_options(&self, key: &str, options: ContextOptions) -> Result<()> {
        options.validate()?;
        let key: StdArc<str> = key.into();
        self.ask_every_shard("set_context_options", |done| {
            shard::IdentityOp::SetOptions {
                key: key.clone(),
                options: options.clone(),
                done,
            }
        })
        .await
        .map(drop)
    }

    /// The cookies of `key`'s browser contexts
    /// ([`Isolation::ContextPerKey`](crate::Isolation::ContextPerKey)), one per name,
    /// domain and path, for a crawl to keep (they serialize with serde). A key with no
    /// context open yet gives the cookies imported for it, if any. A pool that does not
    /// run `ContextPerKey` answers [`ErrorKind::InvalidInput`].
    ///
    /// Cancel safety: read-only; dropping it changes nothing.
    pub async fn export_cookies(&self, key: &str) -> Result<Vec<Cookie>> {
        let key: StdArc<str> = key.into();
        let answers = self
            .ask_every_shard("export_cookies", |reply| shard::IdentityOp::ExportCookies {
                key: key.clone(),
                reply,
            })
            .await?;
        let mut parts = Vec::new();
        for answer in answers {
            if let Some(cookies) = answer? {
                parts.push(cookies);
            }
        }
        if parts.is_empty() {
            return self.imported_cookies(&key).await;
        }
        Ok(merge_cookies(parts))
    }

    /// The cookies imported for `key` (kept by every shard alike: the first answers).
    async fn imported_cookies(&self, key: &StdArc<str>) -> Result<Vec<Cookie>> {
        let (tx, rx) = oneshot::channel();
        let op = shard::IdentityOp::Seeds {
            key: key.clone(),
            reply: tx,
        };
        if self.inner.inboxes[0].send(Msg::Identity(op)).is_err() {
            return Err(shutdown_error());
        }
        rx.await.map_err(|_| shutdown_error())
    }

    /// Puts `cookies` into `key`'s browser contexts
    /// ([`Isolation::ContextPerKey`](crate::Isolation::ContextPerKey)): those open now,
    /// and every one opened for the key later (before its first page). With
    /// [`export_cookies`](Self::export_cookies), a logged-in session survives a restart.
    /// A cookie with no domain is refused here, and so is a pool that does not run
    /// `ContextPerKey` ([`ErrorKind::InvalidInput`]).
    ///
    /// Cancel safety: dropped before it returns, the cookies may be in some of the key's
    /// contexts and not others; calling it again is harmless.
    pub async fn import_cookies(&self, key: &str, cookies: Vec<Cookie>) -> Result<()> {
        for c in &cookies {
            c.validate()?;
        }
        let key: StdArc<str> = key.into();
        let cookies: StdArc<[Cookie]> = cookies.into();
        let answers = self
            .ask_every_shard("import_cookies", |reply| shard::IdentityOp::ImportCookies {
                key: key.clone(),
                cookies: cookies.clone(),
                reply,
            })
            .await?;
        answers.into_iter().collect()
    }

    /// The configuration in force.
    pub fn config(&self) -> Config {
        (*self.inner.config.load()).clone()
    }

    /// Changes the live configuration. The new value is validated first; if it is
    /// invalid the old one stays and the error says why.
    ///
    /// With [`Config::autoscale`] set, the autoscaler owns `sessions_per_shard`: set
    /// `autoscale` to `None` in the same change to pin a size.
    pub fn reconfigure(&self, change: impl FnOnce(&mut Config)) -> Result<()> {
        let _writer = lock(&self.inner.writer);
        let mut next = self.config();
        change(&mut next);
        next.validate()?;
        check_page_cap(&next, self.shards())?;
        publish_config(&self.inner.config, &self.inner.inboxes, next);
        Ok(())
    }

    /// Sets one affinity key's politeness rule (a `Crawl-delay` learned from robots.txt,
    /// say), in place of [`Config::politeness`] for that key until
    /// [`reset_politeness`](Self::reset_politeness). `key` is the key the jobs carry
    /// (for [`Affinity::from_url`](crate::Affinity::from_url), the host). The rule goes
    /// to the key's shard as a message, ahead of any request sent after this call
    /// returns; requests already held for the key are let in as the new rule allows.
    /// Fails with `InvalidInput` for a bad rule and `Shutdown` once the pool stops.
    pub fn set_politeness(&self, key: impl AsRef<str>, rule: crate::Politeness) -> Result<()> {
        rule.validate()?;
        self.send_politeness(key.as_ref(), Some(rule))
    }

    /// Drops the rule [`set_politeness`](Self::set_politeness) gave `key`: the pool's
    /// default ([`Config::politeness`]) applies to it again.
    pub fn reset_politeness(&self, key: impl AsRef<str>) -> Result<()> {
        self.send_politeness(key.as_ref(), None)
    }

    fn send_politeness(&self, key: &str, rule: Option<crate::Politeness>) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(shutdown_error());
        }
        let shard = shard_for(key, self.shards());
        let msg = Msg::Politeness {
            key: key.into(),
            rule,
        };
        self.inner.inboxes[shard]
            .send(msg)
            .map_err(|_| shutdown_error())
    }

    /// Stops the pool: new requests fail with `Shutdown`, waiting ones fail, running jobs
    /// and held leases get `grace` to finish (a lease keeps working meanwhile, and the
    /// shutdown goes on as soon as every job and lease is back), then targets and sockets
    /// close, launched browsers stop and the shard threads are joined.
    pub async fn shutdown(&self, grace: Duration) -> Result<()> {
        let sampler = lock(&self.inner.sampler).take();
        if let Some(sampler) = sampler {
            let _ = tokio::task::spawn_blocking(move || drop(sampler)).await;
        }
        let done = announce_shutdown(&self.inner.closed, &self.inner.inboxes, grace);
        for rx in done {
            let _ = rx.await;
        }
        let threads: Vec<_> = std::mem::take(&mut *lock(&self.inner.threads));
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        self.inner.fleet.shutdown().await
    }

    /// Process ids of the browsers this pool launched (after any relaunch): for
    /// monitoring, and for tests that kill one.
    #[doc(hidden)]
    pub fn browser_pids(&self) -> Vec<u32> {
        self.inner.fleet.pids()
    }

    /// Requests offered to other shards by a saturated one and taken by none yet (a
    /// test hook).
    #[doc(hidden)]
    pub fn offered(&self) -> usize {
        self.inner.overflow.len()
    }

    /// Test hook: memory reads as `share` (0..1) from now on, for the refusal and the
    /// autoscaler; `None` reads the machine again. Not part of the API.
    #[doc(hidden)]
    pub fn inject_memory_sample(&self, share: Option<f64>) {
        self.inner
            .scale
            .force_memory(share, &self.inner.config.load());
    }

    /// Test hook: the autoscaler reads the CPU as `share` of the allowed cores from now
    /// on; `None` reads the machine again. Not part of the API.
    #[doc(hidden)]
    pub fn inject_cpu_sample(&self, share: Option<f64>) {
        self.inner.scale.force_cpu(share);
    }

    /// Test hook: the autoscaler reads the CPU used by work outside the pool (the
    /// machine's use less the launched browsers' and this process's) as `share` of the
    /// allowed cores from now on; `None` measures it again. Not part of the API.
    #[doc(hidden)]
    pub fn inject_outside_cpu_sample(&self, share: Option<f64>) {
        self.inner.scale.force_outside(share);
    }

    /// Requests routed to each shard and not yet answered.
    #[doc(hidden)]
    pub fn load(&self) -> Vec<usize> {
        (0..self.inner.gauges.shards())
            .map(|i| self.inner.gauges.load(i))
            .collect()
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends `request` to a shard unless the pool is closed. Once this returns `Ok` the shard
/// answers the request, even if shutdown races it: either the request lands before the
/// shard closes its inbox and is served or refused (`shard::close_inbox`), or the send
/// fails. The `closed` flag is only a fast path; the inbox carries the guarantee.
/// Checked by `loom-tests` (`shutdown`).
pub fn send_request(
    closed: &AtomicBool,
    inbox: &mpsc::UnboundedSender<Msg>,
    request: Request,
) -> Result<()> {
    if closed.load(Ordering::Acquire) {
        return Err(shutdown_error());
    }
    inbox
        .send(Msg::Submit(request))
        .map_err(|_| shutdown_error())
}

/// Closes the pool to new requests and tells every shard to shut down after `grace`.
/// Returns one receiver per shard reached, answered when that shard is done.
pub fn announce_shutdown(
    closed: &AtomicBool,
    inboxes: &[mpsc::UnboundedSender<Msg>],
    grace: Duration,
) -> Vec<oneshot::Receiver<()>> {
    closed.store(true, Ordering::Release);
    let mut done = Vec::new();
    for inbox in inboxes {
        let (tx, rx) = oneshot::channel();
        if inbox.send(Msg::Shutdown { grace, done: tx }).is_ok() {
            done.push(rx);
        }
    }
    done
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone without `shutdown`: stop the sampler and the shards
        // now, then the browsers (their drop kills and reaps them).
        drop(lock(&self.sampler).take());
        drop(announce_shutdown(
            &self.closed,
            &self.inboxes,
            Duration::ZERO,
        ));
        for t in std::mem::take(&mut *lock(&self.threads)) {
            let _ = t.join();
        }
        // Dropping the fleet then stops (kills and reaps) the launched browsers.
    }
}

/// The typed side of a `run` request.
/// A `run` job as it travels to a shard, and the receiver its caller waits on.
pub(crate) fn run_work<F, T>(f: F) -> (Work, oneshot::Receiver<Result<T>>)
where
    F: AsyncFn(&Page) -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let task = RunTask {
        f,
        tx: Some(tx),
        result: None,
    };
    (Work::Run(Box::new(task)), rx)
}

struct RunTask<F, T> {
    f: F,
    tx: Option<oneshot::Sender<Result<T>>>,
    result: Option<Result<T>>,
}

impl<F, T> JobTask for RunTask<F, T>
where
    F: AsyncFn(&Page) -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    fn run<'a>(&'a mut self, page: &'a Page) -> LocalFuture<'a, Attempt> {
        Box::pin(async move {
            let RunTask { f, tx, result } = self;
            let Some(tx) = tx.as_mut() else {
                return Attempt::Abandoned;
            };
            let outcome = tokio::select! {
                r = f(page) => r,
                _ = tx.closed() => return Attempt::Abandoned,
            };
            let attempt = match &outcome {
                Ok(_) => Attempt::Ok,
                Err(e) => Attempt::Failed(Failure::of(e)),
            };
            *result = Some(outcome);
            attempt
        })
    }

    fn finish(mut self: Box<Self>) {
        if let (Some(tx), Some(result)) = (self.tx.take(), self.result.take()) {
            let _ = tx.send(result);
        }
    }

    fn fail(mut self: Box<Self>, err: Error) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Err(err));
        }
    }

    fn gave_up(&mut self, attempts: u32) {
        if let Some(Err(e)) = self.result.take() {
            self.result = Some(Err(e.after_attempts(attempts)));
        }
    }

    fn is_abandoned(&self) -> bool {
        self.tx.as_ref().is_none_or(|tx| tx.is_closed())
    }

    fn abandoned(&mut self) -> LocalFuture<'_, ()> {
        Box::pin(async move {
            if let Some(tx) = self.tx.as_mut() {
                tx.closed().await;
            }
        })
    }
}
