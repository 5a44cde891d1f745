//! What crosses into a shard from other threads: its messages, the requests they carry,
//! and the [`Grant`] of a session to an `acquire` caller.
//!
//! Plain data plus the two protocol steps that must hold whatever the other side does:
//! granting a session to a caller who may be leaving ([`grant_lease`]) and answering
//! every message that reached a closing inbox ([`close_inbox`]). No decisions live here.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::cdp::protocol::{MethodName, Reply};
use crate::error::{shutdown_error, timeout_error};
use crate::error::{Error, Result};
use crate::handoff::{Handoff, Line, Outcome};
use crate::job::Job;
use crate::metrics::ShardReport;
use crate::retry::Failure;
use crate::sync::atomic::Ordering;
use crate::sync::{mpsc, oneshot};

/// A boxed future that stays on the shard's thread.
pub(crate) type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// How one run of a job went.
pub(crate) enum Attempt {
    Ok,
    Failed(Failure),
    /// The page could not be prepared for the job (its blocking); the job never ran.
    NotRun(Error),
    /// The `before_job` hook failed: the job never ran, and may run on another page.
    HookFailed(Error),
    /// The caller stopped waiting.
    Abandoned,
}

/// A `run` closure with its reply channel, type-erased so it can travel in a message.
pub(crate) trait JobTask: Send {
    /// Runs the job once on `page`, keeping its result for `finish`.
    fn run<'a>(&'a mut self, page: &'a crate::cdp::Page) -> LocalFuture<'a, Attempt>;
    /// Sends the kept result to the caller.
    fn finish(self: Box<Self>);
    /// Sends `err` to the caller instead.
    fn fail(self: Box<Self>, err: Error);
    /// Notes in the kept error that the job gave up after `attempts` attempts.
    fn gave_up(&mut self, attempts: u32);
    /// True when the caller no longer waits.
    fn is_abandoned(&self) -> bool;
    /// Resolves when the caller stops waiting (cancel-safe: just a wait).
    fn abandoned(&mut self) -> LocalFuture<'_, ()>;
}

/// Where a granted session goes: the `acquire` caller's reply channel.
pub type GrantTx = oneshot::Sender<Result<Grant>>;

/// What a request wants once it has a session.
pub enum Work {
    /// Run a closure on the shard (`Pool::run`).
    Run(Box<dyn JobTask>),
    /// Lend the session to the caller (`Pool::acquire`).
    Acquire(GrantTx),
}

impl Work {
    pub(crate) fn is_abandoned(&self) -> bool {
        match self {
            Work::Run(task) => task.is_abandoned(),
            Work::Acquire(tx) => tx.is_closed(),
        }
    }

    pub(crate) fn fail(self, err: Error) {
        match self {
            Work::Run(task) => task.fail(err),
            Work::Acquire(tx) => {
                let _ = tx.send(Err(err));
            }
        }
    }
}

/// A request for a session. `Send`: it may move to another shard while it waits.
pub struct Request {
    /// What the caller asked for.
    pub job: Job,
    /// What to do with the session.
    pub work: Work,
    /// When the caller asked.
    pub submitted: Instant,
    /// Its arrival number ([`Line::next_id`](crate::handoff::Line::next_id)), drawn when
    /// it was made: its place among every request and line caller of the pool, whichever
    /// shard ends up serving it and however late its message is handled.
    pub arrival: u64,
    /// Runs so far (retries after a lost session).
    pub attempts: u32,
}

/// An operation a lease asks its shard to run on its page. Its reply channel is tokio's
/// own, not the `sync` facade's: the connection answers it like any call, and no protocol
/// of ours rides on it.
pub(crate) enum LeaseOp {
    /// A command whose parameters the holder encoded; the reply goes back undecoded,
    /// for the holder to decode in its own thread.
    Call {
        method: MethodName,
        params: Box<RawValue>,
        reply: tokio::sync::oneshot::Sender<Result<Reply>>,
    },
    Goto {
        url: String,
        options: crate::cdp::GotoOptions,
        reply: tokio::sync::oneshot::Sender<Result<crate::cdp::Navigation>>,
    },
    /// Commands sent back to back (a lease's batch), each reply to its own channel.
    Batch {
        calls: Vec<(
            MethodName,
            Box<RawValue>,
            tokio::sync::oneshot::Sender<Result<Reply>>,
        )>,
    },
    /// Registers a stream of `method`'s events into `feed`, which the holder reads.
    Events {
        method: MethodName,
        feed: crate::sync::Arc<crate::cdp::Feed>,
    },
    /// The page's target id.
    TargetId {
        reply: tokio::sync::oneshot::Sender<Result<String>>,
    },
}

impl LeaseOp {
    /// Answers the holder with `error` instead.
    pub(crate) fn fail(self, error: Error) {
        match self {
            LeaseOp::Call { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            LeaseOp::Goto { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            LeaseOp::Batch { calls } => {
                for (_, _, reply) in calls {
                    let _ = reply.send(Err(error.clone()));
                }
            }
            LeaseOp::Events { feed, .. } => feed.end(Some(error)),
            LeaseOp::TargetId { reply } => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

/// Messages into a shard.
pub enum Msg {
    /// A new (or retried) request.
    Submit(Request),
    /// A lease's command.
    #[allow(private_interfaces)]
    LeaseOp {
        /// The lease.
        lease: u64,
        /// What to run.
        op: LeaseOp,
        /// Its own command deadline, if the holder set one.
        timeout: Option<Duration>,
    },
    /// A lease gave its session back.
    Release {
        /// The lease.
        lease: u64,
    },
    /// A `run` caller joined the line as it closed, so the shard may not have taken it
    /// back: take back what is in the line (see `handoff`).
    Reclaim,
    /// Report the shard's metrics and gauges.
    Metrics(oneshot::Sender<ShardReport>),
    /// The live configuration changed.
    Reconfigured,
    /// One affinity key's politeness rule changed (`None`: back to the default).
    Politeness {
        /// The key.
        key: std::sync::Arc<str>,
        /// Its rule.
        rule: Option<crate::politeness::Politeness>,
    },
    /// About the identity of a key (`ContextPerKey`): its options, its cookies.
    #[allow(private_interfaces)]
    Identity(crate::shard::IdentityOp),
    /// Test-only fault: the shard panics while handling it, as a bug in it would
    /// ([`Pool::inject_shard_panic`](crate::Pool::inject_shard_panic)).
    #[doc(hidden)]
    InjectPanic,
    /// Stop after `grace`; answer on `done`.
    Shutdown {
        /// How long running jobs and held leases may go on.
        grace: Duration,
        /// Answered when the shard is done.
        done: oneshot::Sender<()>,
    },
}

/// What a lease needs to reach its shard and to pass its session on; moved, not copied,
/// from one holder to the next.
pub struct LeaseLink {
    pub(crate) inbox: mpsc::UnboundedSender<Msg>,
    /// How to pass the session straight to the next caller, when its shard allows it.
    pub(crate) handoff: Option<Handoff<Work>>,
}

/// A session granted to an `acquire` caller: what a [`Lease`](crate::lease::Lease) holds.
/// Dropped, by its holder or unused (its caller left with the grant in flight), it
/// returns the session ([`return_session`]): a session is never lost between the shard
/// and its callers.
pub struct Grant {
    pub(crate) shard: usize,
    pub(crate) lease: u64,
    link: Option<LeaseLink>,
}

impl Grant {
    /// Lease `lease` on a session of shard `shard`.
    pub(crate) fn new(shard: usize, lease: u64, link: LeaseLink) -> Self {
        Grant {
            shard,
            lease,
            link: Some(link),
        }
    }

    /// The way to the shard, while the grant holds the session.
    pub(crate) fn link(&self) -> Option<&LeaseLink> {
        self.link.as_ref()
    }

    /// Takes the link out: whoever takes it returns the session.
    pub(crate) fn take_link(&mut self) -> Option<LeaseLink> {
        self.link.take()
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        if let Some(link) = self.link.take() {
            return_session(self.shard, self.lease, link);
        }
    }
}

/// Hands lease `lease` on this shard's session to the caller waiting in `acquire`, who
/// may be leaving on another thread right now. If it has left, `send` gives the grant
/// back and dropping it sends `Release` to `inbox`: the session is never lost, and never
/// with two callers. Checked by `loom-tests` (`lease_grant`).
pub fn grant_lease(
    tx: GrantTx,
    shard: usize,
    lease: u64,
    inbox: &mpsc::UnboundedSender<Msg>,
    handoff: Option<Handoff<Work>>,
) {
    let link = LeaseLink {
        inbox: inbox.clone(),
        handoff,
    };
    let grant = Grant::new(shard, lease, link);
    crate::mutant::deliver_grant(tx, grant);
}

/// Closes a shutting-down shard's inbox and answers every message already in it, so no
/// request that made it into the inbox goes unanswered: a later send fails, and its
/// sender answers `Shutdown` itself. Checked by `loom-tests` (`shutdown`).
pub async fn close_inbox(inbox: &mut mpsc::UnboundedReceiver<Msg>) {
    crate::mutant::close_then_drain(inbox, refuse).await;
}

/// Answers a message that arrived after shutdown began.
pub(crate) fn refuse(msg: Msg) {
    match msg {
        Msg::Submit(request) => request.work.fail(shutdown_error()),
        Msg::LeaseOp { op, .. } => op.fail(shutdown_error()),
        Msg::Identity(op) => op.fail(shutdown_error()),
        Msg::Shutdown { done, .. } => {
            let _ = done.send(());
        }
        // `metrics` skips a shard that does not answer; shutdown closes every session,
        // leased or not.
        // The shard drains its line once its inbox is closed (`Shell::shutdown`).
        Msg::Metrics(_)
        | Msg::Release { .. }
        | Msg::Reclaim
        | Msg::Reconfigured
        | Msg::Politeness { .. }
        | Msg::InjectPanic => {}
    }
}

/// Answers a message to a shard that died of a panic: requests and lease commands fail
/// with `why` ([`ErrorKind::Internal`](crate::ErrorKind::Internal)). Not `Shutdown`,
/// which the caller answers.
pub(crate) fn refuse_dead(msg: Msg, why: &Error) {
    match msg {
        Msg::Submit(request) => request.work.fail(why.clone()),
        Msg::LeaseOp { op, .. } => op.fail(why.clone()),
        Msg::Identity(op) => op.fail(why.clone()),
        Msg::Shutdown { .. } => unreachable!("the dead shard's loop answers it"),
        // A dead shard has nothing to report: `metrics` skips it, and a caller whose
        // reply channel closed learns from that round trip that the shard is gone. Its
        // line is drained by `serve_dead`.
        Msg::Metrics(_)
        | Msg::Release { .. }
        | Msg::Reclaim
        | Msg::Reconfigured
        | Msg::Politeness { .. }
        | Msg::InjectPanic => {}
    }
}

/// Gives lease `lease`'s session back: to the first caller in the line who still waits
/// (recorded for the shard first, as [`Outcome::Passed`], so it is there before anything
/// the new holder sends), or else to the shard (`Release`). A `run` job first in line
/// goes to the session's shard ahead of the session, which then serves it there. Callers past their deadline
/// are told so and skipped; a caller who leaves as the lease reaches it hands the lease
/// back, and the next one is tried. The session is never lost, and never held twice.
/// Checked by `loom-tests` (`handoff_*`).
pub fn return_session(shard: usize, lease: u64, link: LeaseLink) {
    let mut link = link;
    while let Some(h) = link
        .handoff
        .as_ref()
        .filter(|h| h.passable.load(Ordering::Acquire))
    {
        let from = h.next_line();
        let own: &Line<Work> = &h.lines[h.shard];
        let Some(next) = from.pop() else {
            break;
        };
        if next.tx.is_abandoned() {
            from.record(Outcome::Left { successor: next.id });
            continue;
        }
        let now = Instant::now();
        let (deadline, kind) = next.deadline;
        if deadline <= now {
            // Too late for it: it hears so now, and the session goes on.
            let limit = deadline.saturating_duration_since(next.submitted);
            next.tx.fail(timeout_error(kind, limit));
            from.record(Outcome::Expired {
                successor: next.id,
                kind,
            });
            continue;
        }
        let tx = match next.tx {
            Work::Acquire(tx) => tx,
            Work::Run(task) => {
                // A job runs on the session's own thread: the session goes back to its
                // shard, and the job, the oldest caller, goes there first, keeping its
                // arrival number so it is served before anyone who came later.
                if !next.joined {
                    from.record(Outcome::Served { successor: next.id });
                }
                let request = Request {
                    job: next.job,
                    work: Work::Run(task),
                    submitted: next.submitted,
                    arrival: next.id,
                    attempts: 0,
                };
                if let Err(refused) = link.inbox.send(Msg::Submit(request)) {
                    refuse(refused.0);
                }
                break;
            }
        };
        let across = !std::ptr::eq(from, own);
        let passed = Outcome::Passed {
            lease,
            successor: next.id,
            waited: now.saturating_duration_since(next.submitted),
            command_timeout: next.job.command_timeout,
            joined: next.joined,
            across,
        };
        if across && !next.joined {
            // The caller's shard forgets it: its place, its deadline (there is no record
            // of a caller who joined by itself).
            let told = if crate::mutant::served_told_to_sessions_shard() {
                own
            } else {
                from
            };
            told.record(Outcome::Served { successor: next.id });
        }
        // Recorded before the send, unless the seeded bug defers it (see `mutant`).
        let deferred = if crate::mutant::passed_recorded_after_send() {
            Some(h.lines[h.shard].clone())
        } else {
            own.record(passed);
            None
        };
        // The link moves on to the new holder's grant (no reference count touched).
        match tx.send(Ok(Grant::new(shard, lease, link))) {
            Ok(()) => {
                if let Some(own) = deferred {
                    own.record(passed);
                }
                return;
            }
            // It left just now: the grant is ours again; try the next one. (The shard
            // has counted a use for it already: harmless, and rare.)
            Err(back) => {
                if let Some(own) = deferred {
                    own.record(Outcome::Left { successor: next.id });
                }
                link = reclaim(back);
            }
        }
    }
    let _ = link.inbox.send(Msg::Release { lease });
}

/// The link of a grant that `send` handed back.
fn reclaim(back: Result<Grant>) -> LeaseLink {
    match back {
        Ok(mut grant) => grant.take_link().expect("a grant just made holds its link"),
        Err(_) => unreachable!("only grants are handed on"),
    }
}
