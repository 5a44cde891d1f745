//! Loom models of cdpmux's cross-thread protocols. Each drives the real code, reached
//! through `cdpmux::loom_api`; what is not real is the minimum around it (a thread standing
//! in for a shard's loop or a caller's future).
//!
//! Under `--cfg cdpmux_loom` every model passes. A build with `CDPMUX_LOOM_MUTANT=1`
//! (`--cfg cdpmux_loom_mutant`) can switch the library's seeded bugs on one at a time
//! (`cdpmux::loom_api::seed`, see `src/mutant.rs`). There every model still passes as it
//! is, with no bug on, and `mod seeded` runs each model again with its own bug on, and
//! only its own: each must fail, with the message that names what broke. See
//! `loom-tests/README.md`.
#![cfg(cdpmux_loom)]

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use cdpmux::loom_api::{
    announce_shutdown, close_inbox, grant_lease, lease as into_lease, mpsc, oneshot,
    publish_config, run_job, send_request, Grant, GrantTx, Handoff, Join, Line, LiveCell,
    LoadGauges, Msg, Notify, Outcome, Overflow, Request, Successor, Work,
};
use cdpmux::{Config, ErrorKind, Job, TimeoutKind};
use loom::future::block_on;
use loom::sync::atomic::AtomicBool;
use loom::sync::Arc;
use loom::thread;

/// Polls `fut` once: what a caller sees at the instant its deadline fires or it is dropped.
fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    block_on(std::future::poll_fn(|cx| {
        Poll::Ready(Pin::new(&mut *fut).poll(cx))
    }))
}

/// `Release` messages for `lease` waiting in `inbox`.
fn releases(inbox: &mut mpsc::UnboundedReceiver<Msg>, lease: u64) -> usize {
    std::iter::from_fn(|| inbox.try_recv().ok())
        .filter(|m| matches!(m, Msg::Release { lease: l } if *l == lease))
        .count()
}

fn acquire_request(tx: GrantTx) -> Request {
    Request {
        job: Job::new(),
        work: Work::Acquire(tx),
        submitted: tokio::time::Instant::now(),
        arrival: 1,
        attempts: 0,
    }
}

/// A shard grants a lease while its caller, on another thread, gives up (deadline or
/// drop). The session ends up with the caller or back on the shard (a `Release`), exactly
/// once. Seeded bug (`GrantTrustsIsClosed`): `grant_lease` trusts `is_closed` and
/// defuses the lease `send` returns.
#[test]
fn lease_grant_races_caller_leaving() {
    loom::model(|| {
        let (inbox_tx, mut inbox) = mpsc::unbounded_channel::<Msg>();
        let (tx, mut rx) = oneshot::channel();
        let shard = thread::spawn(move || grant_lease(tx, 0, 7, &inbox_tx, None));

        let seen = poll_once(&mut rx);
        drop(rx); // the caller leaves (its deadline fired, or its future was dropped)
        shard.join().unwrap();

        let held = match seen {
            Poll::Ready(Ok(Ok(lease))) => Some(lease),
            Poll::Pending => None,
            Poll::Ready(_) => panic!("the grant failed"),
        };
        let back = releases(&mut inbox, 7);
        assert!(
            usize::from(held.is_some()) + back == 1,
            "session lost (held by caller: {}, released: {back})",
            held.is_some()
        );
        drop(held);
        assert!(
            inbox.try_recv().is_err() || back == 0,
            "session released twice"
        );
    });
}

/// A saturated shard offers a request while an idle shard checks for work and parks, as
/// in the shard's main loop: take, else announce parking (re-checking), else wait for
/// the wake-up. The request is always taken (no lost wake-up) and taken once. Seeded
/// bug (`ParkSkipsRecheck`): `prepare_park` without its re-check.
///
/// The idle shard does not block when it parks (a loom deadlock aborts the process, so a
/// `should_panic` model could not show it): it stops, and once the pusher is done the
/// model checks that a wake-up is waiting for it, which is what would unpark it.
#[test]
fn overflow_push_races_idle_shard_parking() {
    loom::model(|| {
        let overflow = Arc::new(Overflow::<u32>::default());
        let wakers = Arc::new([Notify::new(), Notify::new()]);

        let saturated = {
            let (overflow, wakers) = (overflow.clone(), wakers.clone());
            thread::spawn(move || {
                if let Some(shard) = overflow.push(2, 42) {
                    wakers[shard].notify_one();
                }
            })
        };
        // Shard 1, idle: `Some` once it took a request, `None` when it parked.
        let idle = {
            let (overflow, wakers) = (overflow.clone(), wakers.clone());
            thread::spawn(move || loop {
                if let Some(request) = overflow.take() {
                    return Some(request);
                }
                if overflow.prepare_park(1) {
                    thread::yield_now(); // a push is landing
                    continue;
                }
                if poll_once(&mut std::pin::pin!(wakers[1].notified())).is_pending() {
                    return None;
                }
                overflow.unpark(1);
            })
        };
        saturated.join().unwrap();
        let taken = match idle.join().unwrap() {
            Some(request) => request,
            None => {
                let woken = poll_once(&mut std::pin::pin!(wakers[1].notified())).is_ready();
                assert!(
                    woken,
                    "lost wake-up: shard 1 parked with a request on offer"
                );
                overflow.unpark(1);
                overflow.take().expect("woken for a request that is there")
            }
        };
        assert_eq!(taken, 42);
        assert!(overflow.take().is_none(), "request taken twice");
        assert!(overflow.is_empty() && !overflow.has_parked());
    });
}

/// Two shards with spare capacity take from the overflow while a third offers two
/// requests: each request is taken exactly once and the count of offered requests
/// never underflows.
#[test]
fn overflow_takers_race() {
    loom::model(|| {
        let overflow = Arc::new(Overflow::<u32>::default());
        let pusher = {
            let overflow = overflow.clone();
            thread::spawn(move || {
                overflow.push(0, 1);
                overflow.push(3, 2);
            })
        };
        let taker = {
            let overflow = overflow.clone();
            thread::spawn(move || overflow.take())
        };
        let mine = overflow.take();
        assert!(overflow.len() <= 2, "queued count underflowed");
        pusher.join().unwrap();
        let theirs = taker.join().unwrap();
        let mut all: Vec<u32> = [mine, theirs].into_iter().flatten().collect();
        all.extend(std::iter::from_fn(|| overflow.take()));
        all.sort_unstable();
        assert_eq!(all, [1, 2]);
        assert!(overflow.is_empty());
    });
}

/// `Pool::shutdown` races a `Pool::acquire` on another thread while the shard serves its
/// inbox. Every submitted request gets an explicit answer (a lease or `Shutdown`), never
/// a dropped reply channel; a refused submission says `Shutdown`. Seeded bug
/// (`DrainBeforeClose`): `close_inbox` drains before closing.
#[test]
fn shutdown_races_submission() {
    loom::model(|| {
        let closed = Arc::new(AtomicBool::new(false));
        let (inbox_tx, mut inbox) = mpsc::unbounded_channel::<Msg>();
        let inboxes = Arc::new(vec![inbox_tx]);

        let caller = {
            let (closed, inboxes) = (closed.clone(), inboxes.clone());
            thread::spawn(move || {
                let (tx, rx) = oneshot::channel();
                match send_request(&closed, &inboxes[0], acquire_request(tx)) {
                    Err(e) => assert_eq!(e.kind(), ErrorKind::Shutdown),
                    Ok(()) => match block_on(rx) {
                        Ok(Ok(_lease)) => {}
                        Ok(Err(e)) => assert_eq!(e.kind(), ErrorKind::Shutdown),
                        Err(_) => panic!("a submitted request got no answer"),
                    },
                }
            })
        };
        let stopper = {
            let (closed, inboxes) = (closed.clone(), inboxes.clone());
            thread::spawn(move || {
                for done in announce_shutdown(&closed, &inboxes, Duration::ZERO) {
                    block_on(done).expect("the shard acknowledges shutdown");
                }
            })
        };
        drop(inboxes);

        // The shard: serve until told to shut down, then close and drain the inbox.
        let (lease_tx, _lease_rx) = mpsc::unbounded_channel::<Msg>();
        loop {
            match block_on(inbox.recv()) {
                Some(Msg::Submit(Request {
                    work: Work::Acquire(tx),
                    ..
                })) => grant_lease(tx, 0, 1, &lease_tx, None),
                Some(Msg::Shutdown { done, .. }) => {
                    block_on(close_inbox(&mut inbox));
                    let _ = done.send(());
                    break;
                }
                Some(_) => unreachable!(),
                None => break,
            }
        }
        drop(inbox);
        caller.join().unwrap();
        stopper.join().unwrap();
    });
}

/// Two requests on one shard count in and out concurrently (as `Pool::run` and
/// `Pool::acquire` do with their `LoadGuard`): the gauge never underflows and returns to
/// zero. Seeded bug (`GaugeDecrementTorn`): the decrement as a load and a store.
#[test]
fn load_gauges_count_in_and_out() {
    loom::model(|| {
        let gauges = Arc::new(LoadGauges::new(2));
        let other = {
            let gauges = gauges.clone();
            thread::spawn(move || {
                let guard = gauges.enter(0);
                assert!((1..=2).contains(&gauges.load(0)), "gauge out of range");
                drop(guard);
            })
        };
        let guard = gauges.enter(0);
        let seen = gauges.load(0);
        assert!((1..=2).contains(&seen), "gauge out of range: {seen}");
        drop(guard);
        other.join().unwrap();
        assert_eq!(gauges.load(0), 0, "gauge did not return to zero");
        assert_eq!(gauges.load(1), 0);
    });
}

/// `Pool::reconfigure` publishes a configuration while a shard reads it: the shard sees
/// the old or the new value, and after the `Reconfigured` message only the new one.
/// Seeded bug (`ConfigToldBeforeStored`): `publish_config` tells the shards before
/// storing.
#[test]
fn live_config_reaches_shard_before_its_message() {
    loom::model(|| {
        let old = Config::default().sessions_per_shard;
        let cell = Arc::new(LiveCell::new(Config::default()));
        let (inbox_tx, mut inbox) = mpsc::unbounded_channel::<Msg>();
        let publisher = {
            let cell = cell.clone();
            thread::spawn(move || {
                let mut next = Config::default();
                next.sessions_per_shard = old + 1;
                publish_config(&cell, &[inbox_tx], next);
            })
        };
        let before = cell.load().sessions_per_shard;
        assert!(before == old || before == old + 1);
        match block_on(inbox.recv()) {
            Some(Msg::Reconfigured) => assert_eq!(
                cell.load().sessions_per_shard,
                old + 1,
                "the shard acted on the old configuration"
            ),
            _ => panic!("expected Reconfigured"),
        }
        publisher.join().unwrap();
    });
}

/// What a lease's reply channel carries.
type LeaseTx = GrantTx;
type LeaseRx = oneshot::Receiver<cdpmux::Result<Grant>>;

/// A pool's lines, one per shard.
type Lines = std::sync::Arc<[Arc<Line<Work>>]>;

/// A one-shard pool's line and lease `lease` on a passable session served from it (see
/// `lease_on`).
fn passable_lease(lease: u64) -> (Arc<Line<Work>>, cdpmux::Lease, mpsc::UnboundedReceiver<Msg>) {
    let lines: Lines = Line::family(1).into();
    let (held, inbox) = lease_on(&lines, 0, lease);
    (lines[0].clone(), held, inbox)
}

/// Lease `lease` on a passable session of shard `shard`, as the shard grants it, and
/// that shard's inbox (its own sender is dropped: the inbox closes once every lease is
/// gone).
fn lease_on(
    lines: &Lines,
    shard: usize,
    lease: u64,
) -> (cdpmux::Lease, mpsc::UnboundedReceiver<Msg>) {
    let handoff = Handoff::new(lines.clone(), shard, Arc::new(AtomicBool::new(true)));
    let (inbox_tx, inbox) = mpsc::unbounded_channel::<Msg>();
    let (tx, rx) = oneshot::channel();
    grant_lease(tx, shard, lease, &inbox_tx, Some(handoff));
    let held = into_lease(block_on(rx).expect("granted").expect("a lease"));
    (held, inbox)
}

/// A caller waiting in `line` under queue id `id`: its reply channel's receiving end.
fn line_up(line: &Line<Work>, id: u64) -> LeaseRx {
    let (tx, rx): (LeaseTx, LeaseRx) = oneshot::channel();
    let now = tokio::time::Instant::now();
    line.push(Successor {
        id,
        tx: Work::Acquire(tx),
        job: Job::new(),
        submitted: now,
        deadline: (now + Duration::from_secs(60), TimeoutKind::Wait),
        joined: false,
    });
    rx
}

/// What the model's shard saw, in order.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// An outcome, read before handling the message that follows.
    Passed {
        lease: u64,
        successor: u64,
    },
    Left {
        successor: u64,
    },
    Served {
        successor: u64,
    },
    /// A command through lease `lease`.
    Op {
        lease: u64,
    },
    Release {
        lease: u64,
    },
}

fn seen(outcome: Outcome) -> Seen {
    match outcome {
        Outcome::Passed {
            lease, successor, ..
        } => Seen::Passed { lease, successor },
        Outcome::Left { successor } => Seen::Left { successor },
        Outcome::Served { successor } => Seen::Served { successor },
        Outcome::Expired { .. } => unreachable!("no caller here is past its deadline"),
    }
}

/// A lease on a passable session is dropped (its holder's thread hands the session to
/// the caller waiting in the line) while its shard takes that caller back into its queue
/// (`Line::drain`, as on a higher class, a deadline, reconfiguration, shutdown). The
/// shard serves its inbox meanwhile, reading the line's outcomes before each message as
/// `Shard::handle` does. The caller is served exactly once or taken back exactly once;
/// the session is released exactly once, after its new holder's command when there is
/// one; the shard reads the hand-off before any command of the new holder. Seeded bug
/// (`PassedRecordedAfterSend`): `return_session` sends the lease before recording the
/// `Passed`.
#[test]
fn handoff_races_reclaim() {
    loom::model(|| {
        let (line, held, inbox) = passable_lease(LEASE);
        let rx = line_up(&line, WAITER);

        let holder = thread::spawn(move || drop(held));
        // The shard: takes the line back, then serves its inbox until every lease is
        // gone. A caller taken back would wait in the queue; here its reply channel is
        // dropped, so the caller learns it was not served.
        let shard = {
            let line = line.clone();
            thread::spawn(move || {
                let taken = ids(line.close_and_drain());
                (taken, serve_inbox(&line, inbox))
            })
        };

        let served = wait_for_lease(rx);
        holder.join().unwrap();
        let (taken, log) = shard.join().unwrap();
        check_served_or_taken_back(served, &taken, &log);
        check_session_log(served, &log);
    });
}

/// A lease on shard 1, whose line is open and empty, is dropped while shard 0 takes
/// back its own open line, where a caller waits (`Line::close_and_drain`). The
/// releasing lease serves shard 0's caller (a pool's open lines drain as one) or, finding
/// that line closed or empty, releases the session to shard 1. The caller is served
/// exactly once or taken back exactly once; when served, its own shard is told
/// (`Served`, so it drops its record of the caller) and the session's shard reads the
/// `Passed` before the new holder's command. Seeded bug (`ServedToldToSessionsShard`):
/// the `Served` goes to the session's shard instead.
#[test]
fn handoff_serves_another_shards_line() {
    loom::model(|| {
        let lines: Lines = Line::family(2).into();
        lines[0].set_open(true);
        lines[1].set_open(true);
        let (held, inbox) = lease_on(&lines, 1, LEASE);
        let rx = line_up(&lines[0], WAITER);

        let holder = thread::spawn(move || drop(held));
        let caller_shard = {
            let line = lines[0].clone();
            thread::spawn(move || ids(line.close_and_drain()))
        };
        let session_shard = {
            let line = lines[1].clone();
            thread::spawn(move || serve_inbox(&line, inbox))
        };

        let served = wait_for_lease(rx);
        holder.join().unwrap();
        let taken = caller_shard.join().unwrap();
        let log = session_shard.join().unwrap();
        let told: Vec<Seen> = lines[0].outcomes().map(seen).collect();
        check_served_or_taken_back(served, &taken, &log);
        if served {
            assert_eq!(
                told,
                [Seen::Served { successor: WAITER }],
                "the caller's shard was never told it was served"
            );
        } else {
            assert!(told.is_empty(), "the caller's shard was told {told:?}");
        }
        check_session_log(served, &log);
    });
}

/// The lease the hand-off models pass on, and the caller waiting for it.
const LEASE: u64 = 7;
const WAITER: u64 = 3;

fn ids(taken: Vec<Successor<Work>>) -> Vec<u64> {
    taken.into_iter().map(|s| s.id).collect()
}

/// A model's shard loop: serves `inbox` until every lease is gone, reading `line`'s
/// outcomes before each message as `Shard::handle` does; what it saw, in order.
fn serve_inbox(line: &Line<Work>, mut inbox: mpsc::UnboundedReceiver<Msg>) -> Vec<Seen> {
    let mut log = Vec::new();
    while let Some(msg) = block_on(inbox.recv()) {
        log.extend(line.outcomes().map(seen));
        log.push(match msg {
            Msg::LeaseOp { lease, .. } => Seen::Op { lease },
            Msg::Release { lease } => Seen::Release { lease },
            _ => unreachable!(),
        });
    }
    log.extend(line.outcomes().map(seen));
    log
}

/// The waiting caller: served by the lease (it sends one command and lets go), or told
/// it was taken back (its reply channel dropped). True if served.
fn wait_for_lease(rx: LeaseRx) -> bool {
    match block_on(rx) {
        Ok(Ok(grant)) => {
            let lease = into_lease(grant);
            // Sent on the first poll; the answer does not matter here.
            let _ = poll_once(&mut std::pin::pin!(lease.evaluate_value("1")));
            drop(lease);
            true
        }
        Ok(Err(e)) => panic!("the hand-off failed: {e}"),
        Err(_) => false,
    }
}

/// `WAITER` was served or taken back into its shard's queue, exactly once.
fn check_served_or_taken_back(served: bool, taken: &[u64], log: &[Seen]) {
    let taken_back = taken == [WAITER];
    assert!(
        taken.is_empty() || taken_back,
        "unexpected callers taken back: {taken:?}"
    );
    assert!(
        served != taken_back,
        "the caller was served {} and taken back {} (seen: {log:?})",
        usize::from(served),
        usize::from(taken_back)
    );
}

/// The session's shard read the hand-off before the new holder's command, and got the
/// session back exactly once.
fn check_session_log(served: bool, log: &[Seen]) {
    let passed = Seen::Passed {
        lease: LEASE,
        successor: WAITER,
    };
    let at = |what: &Seen| log.iter().position(|s| s == what);
    if let Some(op) = at(&Seen::Op { lease: LEASE }) {
        assert!(
            at(&passed).is_some_and(|p| p < op),
            "the shard saw a command before its hand-off: {log:?}"
        );
    }
    let releases = log
        .iter()
        .filter(|s| **s == Seen::Release { lease: LEASE })
        .count();
    assert_eq!(releases, 1, "session released {releases} times: {log:?}");
    let expected = if served {
        vec![
            passed,
            Seen::Op { lease: LEASE },
            Seen::Release { lease: LEASE },
        ]
    } else {
        vec![Seen::Release { lease: LEASE }]
    };
    assert_eq!(log, expected, "the shard's view of the session");
}

/// A lease on a passable session is dropped while the first of two callers in the line
/// leaves (drops its `acquire`), on another thread. The lease skips it (it left before,
/// or `send` hands the lease back) or reaches it and comes back with its dropped reply
/// channel; either way the second caller gets the session exactly once, with no
/// `Release` while it holds it, and exactly one `Release` once it lets go. No seeded bug
/// of its own (the hand-off's is about ordering, which `handoff_races_reclaim` checks).
#[test]
fn handoff_skips_a_caller_who_left() {
    loom::model(|| {
        let (line, held, mut inbox) = passable_lease(LEASE);
        let first = line_up(&line, 1);
        let second = line_up(&line, 2);

        let holder = thread::spawn(move || drop(held));
        let leaving = thread::spawn(move || drop(first));
        holder.join().unwrap();
        leaving.join().unwrap();

        let lease = match poll_once(&mut { second }) {
            Poll::Ready(Ok(Ok(grant))) => into_lease(grant),
            Poll::Pending => panic!("session lost: the second caller was not served"),
            Poll::Ready(_) => panic!("the hand-off failed"),
        };

        assert_eq!(releases(&mut inbox, LEASE), 0, "released while held");
        let log: Vec<Seen> = line.outcomes().map(seen).collect();
        let skipped = [
            Seen::Left { successor: 1 },
            Seen::Passed {
                lease: LEASE,
                successor: 1,
            },
        ];
        assert!(
            log.len() == 2
                && skipped.contains(&log[0])
                && log[1]
                    == Seen::Passed {
                        lease: LEASE,
                        successor: 2
                    },
            "outcomes: {log:?}"
        );
        drop(lease);
        assert_eq!(releases(&mut inbox, LEASE), 1, "session not released once");
        assert!(line.outcomes().next().is_none());
        assert!(line.close_and_drain().is_empty());
    });
}

/// A plain `acquire` joins the line by itself (`Line::join`) while its shard closes the
/// line and takes everyone back (`Line::close_and_drain`: a higher class or a request
/// that cannot join arrived, a session turned idle, shutdown). The caller ends up in the
/// shard's hands, or sees the line closed and withdraws to ask the shard itself: never
/// waiting in a closed line that nobody drains. Seeded bug (`JoinTrustsFirstLook`):
/// `join` trusts its first look at `open`.
#[test]
fn joining_races_the_line_closing() {
    loom::model(|| {
        let line = Arc::new(Line::<GrantTx>::default());
        line.set_open(true);
        let shard = {
            let line = line.clone();
            thread::spawn(move || line.close_and_drain().len())
        };
        let (tx, _rx): (LeaseTx, LeaseRx) = oneshot::channel();
        let now = tokio::time::Instant::now();
        let (pushed, waits_in_line) = match line.join(
            &Job::new(),
            now,
            (now + Duration::from_secs(60), TimeoutKind::Wait),
            tx,
            8,
        ) {
            Join::Joined => (true, true),
            // It asks the shard instead, having closed its receiver first: its entry,
            // if still in the line, is skipped by whoever pops it.
            Join::Withdraw => (true, false),
            Join::Closed(_) => (false, false),
        };
        let taken = shard.join().unwrap();
        if waits_in_line {
            assert_eq!(
                taken, 1,
                "a caller stranded in a closed line: the shard never took it back"
            );
        }
        let remaining = line.close_and_drain().len();
        assert_eq!(
            taken + remaining,
            usize::from(pushed),
            "a caller in the line found {} times",
            taken + remaining
        );
        assert_eq!(line.joined(), 0, "the count of callers who joined drifted");
    });
}

/// A plain `run` joins the line by itself while its shard closes the line and takes
/// everyone back, as `joining_races_the_line_closing`, but a job cannot withdraw: it is
/// in the line and its caller cannot take it out. So a job that sees the line closed asks
/// the shard (`Msg::Reclaim`) to take back its line once more, and waits. The shard's
/// first take-back or the one the message asks for finds it, exactly once: the job is
/// never stranded in a closed line, and never answered twice. The same seeded bug as the
/// acquire model (`JoinTrustsFirstLook`) strands it.
#[test]
fn a_run_joining_as_the_line_closes_is_reclaimed() {
    loom::model(|| {
        let line = Arc::new(Line::<Work>::default());
        line.set_open(true);
        let (inbox_tx, mut inbox) = mpsc::unbounded_channel::<Msg>();
        let shard = {
            let line = line.clone();
            thread::spawn(move || {
                // Closes the line, takes everyone back; then serves its inbox, where a
                // `Reclaim` takes back the line again (`Plan::reclaim`).
                let mut taken = line.close_and_drain();
                while let Some(msg) = block_on(inbox.recv()) {
                    if let Msg::Reclaim = msg {
                        taken.extend(line.close_and_drain());
                    }
                }
                // Dropped, as failing it would: its caller's channel closes.
                taken.len()
            })
        };
        let (work, rx) = run_job();
        let now = tokio::time::Instant::now();
        let pushed = match line.join(
            &Job::new(),
            now,
            (now + Duration::from_secs(60), TimeoutKind::Wait),
            work,
            8,
        ) {
            Join::Joined => true,
            Join::Withdraw => {
                assert!(
                    inbox_tx.send(Msg::Reclaim).is_ok(),
                    "the shard's inbox is open"
                );
                true
            }
            Join::Closed(_) => false,
        };
        drop(inbox_tx);
        let taken = shard.join().unwrap();
        let left_in_line = line.close_and_drain().len();
        if pushed {
            assert_eq!(
                taken, 1,
                "a job stranded in a closed line: the shard never took it back"
            );
        }
        assert_eq!(
            taken + left_in_line,
            usize::from(pushed),
            "a job found {} times",
            taken + left_in_line
        );
        if taken == 1 {
            assert!(block_on(rx).is_err(), "the job taken back was not answered");
        }
    });
}

/// Each model against its own seeded bug, and only its own (`src/mutant.rs`): each must
/// fail with the message that names what broke. The same models pass above, in this same
/// build, with no bug on: the seeds do not leak.
#[cfg(cdpmux_loom_mutant)]
mod seeded {
    use cdpmux::loom_api::{seed, seeded, Mutant};
    use loom::thread;

    /// `catches!(model, Mutant, "expected panic")`: `model` with `Mutant` seeded panics
    /// with a message containing the expected text.
    macro_rules! catches {
        ($model:ident, $mutant:ident, $expected:literal) => {
            #[test]
            #[should_panic(expected = $expected)]
            fn $model() {
                let _on = seed(Mutant::$mutant);
                super::$model();
            }
        };
    }

    catches!(
        lease_grant_races_caller_leaving,
        GrantTrustsIsClosed,
        "session lost"
    );
    catches!(
        overflow_push_races_idle_shard_parking,
        ParkSkipsRecheck,
        "lost wake-up"
    );
    catches!(shutdown_races_submission, DrainBeforeClose, "no answer");
    catches!(load_gauges_count_in_and_out, GaugeDecrementTorn, "gauge");
    catches!(
        live_config_reaches_shard_before_its_message,
        ConfigToldBeforeStored,
        "old configuration"
    );
    catches!(
        handoff_races_reclaim,
        PassedRecordedAfterSend,
        "command before its hand-off"
    );
    catches!(
        handoff_serves_another_shards_line,
        ServedToldToSessionsShard,
        "never told"
    );
    catches!(
        joining_races_the_line_closing,
        JoinTrustsFirstLook,
        "stranded"
    );
    catches!(
        a_run_joining_as_the_line_closes_is_reclaimed,
        JoinTrustsFirstLook,
        "stranded"
    );

    /// The claim the seeds rest on: loom runs a model's threads on the thread that called
    /// `loom::model`, so a seed set there reaches every loom thread of every execution,
    /// and is off again once its guard is dropped.
    #[test]
    fn seed_reaches_every_loom_thread() {
        assert_eq!(seeded(), None, "a test thread starts with no seed");
        let on = seed(Mutant::JoinTrustsFirstLook);
        loom::model(|| {
            let other = thread::spawn(seeded);
            let mine = seeded();
            assert_eq!(other.join().unwrap(), Some(Mutant::JoinTrustsFirstLook));
            assert_eq!(mine, Some(Mutant::JoinTrustsFirstLook));
        });
        drop(on);
        assert_eq!(seeded(), None, "the seed outlived its guard");
    }
}
