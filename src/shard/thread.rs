//! A shard's thread: starting it (its runtime, its connections, pinned to a core if
//! asked), running its loop under a panic guard, and what is left of it when it dies of
//! a panic (it answers its inbox with `Internal` until shutdown).

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::Notify;

use super::identities::Identities;
use super::lifecycle::Contexts;
use super::links::Links;
use super::msg::{self, Msg, Work};
use super::plan::Plan;
use super::{Shared, Shell};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::handoff::Line;
use crate::metrics::ShardMetrics;
use crate::sync::{mpsc, oneshot};

/// What is left of a shard that died of a panic.
pub(super) struct Died {
    /// What its requests fail with.
    pub(super) why: Error,
    /// A shutdown it had taken from its inbox and not begun.
    pub(super) shutdown: Option<oneshot::Sender<()>>,
    /// It died while shutting down: nothing waits for an answer from it.
    pub(super) closing: bool,
    /// Its line: a caller who joined it as it closed is failed with `why` too.
    pub(super) line: crate::sync::Arc<Line<Work>>,
}

thread_local! {
    static CURRENT_SHARD: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The shard whose thread calls this: `Some(i)` inside a job run by
/// [`Pool::run`](crate::Pool::run), `None` elsewhere.
pub fn current_shard() -> Option<usize> {
    CURRENT_SHARD.get()
}

/// Starts shard `id` on its own thread. Reports on `ready` once its connections are up.
pub(crate) fn spawn(
    id: usize,
    shared: Shared,
    inbox: mpsc::UnboundedReceiver<Msg>,
    pin_core: Option<usize>,
    ready: std::sync::mpsc::Sender<Result<()>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("cdpmux-shard-{id}"))
        .spawn(move || {
            CURRENT_SHARD.set(Some(id));
            if let Some(core) = pin_core {
                pin_to_core(core);
            }
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready.send(Err(e.into()));
                    return;
                }
            };
            let mut inbox = inbox;
            let local = tokio::task::LocalSet::new();
            let died = local.block_on(&rt, run(id, shared, &mut inbox, ready));
            // Drops every task the shard left (jobs, openings, sockets): the callers
            // they held hear that their reply channel closed.
            drop(local);
            if let Some(why) = died {
                rt.block_on(serve_dead(&mut inbox, why));
            }
        })
}

/// The inbox of a shard that died: every request and lease command fails with `why`
/// until shutdown, which is answered as usual.
async fn serve_dead(inbox: &mut mpsc::UnboundedReceiver<Msg>, died: Died) {
    let mut shutdown = died.shutdown;
    if shutdown.is_none() && !died.closing {
        while let Some(msg) = inbox.recv().await {
            match msg {
                Msg::Shutdown { done, .. } => {
                    shutdown = Some(done);
                    break;
                }
                Msg::Reclaim => fail_line(&died.line, &died.why),
                msg => msg::refuse_dead(msg, &died.why),
            }
        }
    }
    msg::close_inbox(inbox).await;
    fail_line(&died.line, &died.why);
    if let Some(done) = shutdown {
        let _ = done.send(());
    }
}

/// Fails every caller still in `line` with `why` (a shard that is gone: nobody else
/// serves its line).
pub(super) fn fail_line(line: &Line<Work>, why: &Error) {
    for caller in line.close_and_drain() {
        caller.tx.fail(why.clone());
    }
}

/// The message a panic carried.
pub(super) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic")
}

fn pin_to_core(core: usize) {
    // SAFETY: `set` is a plain bitmask on the stack; sched_setaffinity reads it only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::warn!(core, "could not pin shard thread to its core");
        }
    }
}

/// Connects, then runs the shard until shutdown. Returns what is left of it if it died
/// of a panic.
async fn run(
    id: usize,
    shared: Shared,
    inbox: &mut mpsc::UnboundedReceiver<Msg>,
    ready: std::sync::mpsc::Sender<Result<()>>,
) -> Option<Died> {
    let metrics = Rc::new(RefCell::new(ShardMetrics::default()));
    let loss = Rc::new(Notify::new());
    let plan = Plan::new(
        id,
        shared.lines.clone(),
        shared.overflow.clone(),
        metrics.clone(),
    );
    let shell = Rc::new(Shell {
        id,
        cfg: RefCell::new(shared.config.load()),
        clamped: RefCell::new(None),
        links: Links::new(
            shared.fleet.clone(),
            metrics.clone(),
            loss.clone(),
            (id, shared.inboxes.len()),
        ),
        identities: Identities::new(shared.context_options.clone()),
        shared,
        plan: RefCell::new(plan),
        contexts: Contexts::default(),
        metrics,
        returned: Notify::new(),
        loss,
        armed: Cell::new(None),
        rearm: Notify::new(),
        tag: fastrand::u64(..),
        openings: Cell::new(0),
        spare: Cell::new(None),
        dead: Cell::new(false),
        panic: RefCell::new(None),
        stashed_shutdown: RefCell::new(None),
        closing: Cell::new(false),
        handing_over: Cell::new(None),
        handed: RefCell::new(None),
        unstarted: Cell::new(0),
        before_job_failures: Cell::new(0),
        outbox: Rc::default(),
    });
    tokio::task::spawn_local(shell.outbox.clone().deliver());
    shell.load_cfg();
    let cfg = shell.cfg();
    // Every browser at once; one that answers is enough. The others are retried with
    // backoff by the health round and join when they answer.
    let attempts = (0..shell.links.len()).map(|b| shell.links.connection(b, &cfg));
    let outcomes = futures_util::future::join_all(attempts).await;
    if outcomes.iter().all(Result::is_err) {
        let why: Vec<String> = outcomes
            .into_iter()
            .filter_map(Result::err)
            .map(|e| e.to_string())
            .collect();
        let _ = ready.send(Err(Error::new(
            ErrorKind::BrowserUnavailable,
            format!(
                "no browser answered (at least one must): {}",
                why.join("; ")
            ),
        )));
        return None;
    }
    let _ = ready.send(Ok(()));
    let ended = AssertUnwindSafe(shell.main_loop(inbox))
        .catch_unwind()
        .await;
    ended.err().map(|payload| shell.die(&*payload))
}

/// The health round's period (an hour when health checks are off).
pub(super) fn health_every(cfg: &Config) -> Duration {
    if cfg.health_interval.is_zero() {
        Duration::from_secs(3600)
    } else {
        cfg.health_interval
    }
}
