//! Loom models of cdpmux's cross-thread protocols. Each drives the real code, reached
//! through `cdpmux::loom_api`; what is not real is the minimum around it (a thread standing
//! in for a shard's loop or a caller's future).
//!
//! Under `--cfg cdpmux_loom` every model passes. Under `--cfg cdpmux_loom
//! --cfg cdpmux_loom_mutant` the library compiles seeded bugs, one per model, and every
//! model is `should_panic`, with the message that names what broke: each model is shown
//! to catch its bug. See `loom-tests/README.md`.
#![cfg(cdpmux_loom)]

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use cdpmux::loom_api::{
    announce_shutdown, close_inbox, grant_lease, mpsc, oneshot, publish_config, send_request,
    LiveCell, LoadGauges, Msg, Notify, Overflow, Request, Work,
};
use cdpmux::{Config, ErrorKind, Job};
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

fn acquire_request(tx: oneshot::Sender<cdpmux::Result<cdpmux::Lease>>) -> Request {
    Request {
        job: Job::new(),
        work: Work::Acquire(tx),
        submitted: tokio::time::Instant::now(),
        attempts: 0,
    }
}

/// A shard grants a lease while its caller, on another thread, gives up (deadline or
/// drop). The session ends up with the caller or back on the shard (a `Release`), exactly
/// once. Seeded bug: `grant_lease` trusts `is_closed` and defuses the lease `send`
/// returns.
#[test]
#[cfg_attr(cdpmux_loom_mutant, should_panic(expected = "session lost"))]
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
/// bug: `prepare_park` without its re-check.
///
/// The idle shard does not block when it parks (a loom deadlock aborts the process, so a
/// `should_panic` model could not show it): it stops, and once the pusher is done the
/// model checks that a wake-up is waiting for it, which is what would unpark it.
#[test]
#[cfg_attr(cdpmux_loom_mutant, should_panic(expected = "lost wake-up"))]
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
#[cfg(not(cdpmux_loom_mutant))]
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
/// a dropped reply channel; a refused submission says `Shutdown`. Seeded bug:
/// `close_inbox` drains before closing.
#[test]
#[cfg_attr(cdpmux_loom_mutant, should_panic(expected = "no answer"))]
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
                })) => grant_lease(tx, 0, 1, &lease_tx),
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
/// zero. Seeded bug: the decrement as a load and a store.
#[test]
#[cfg_attr(cdpmux_loom_mutant, should_panic(expected = "gauge"))]
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
/// Seeded bug: `publish_config` tells the shards before storing.
#[test]
#[cfg_attr(cdpmux_loom_mutant, should_panic(expected = "old configuration"))]
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
