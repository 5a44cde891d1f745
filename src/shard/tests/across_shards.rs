//! The plans of two shards sharing their lines and overflow queues: where requests go
//! when one shard is saturated or its sessions free up first.

use super::{config, Harness};
use crate::config::Config;
use crate::handoff::Line;
use crate::job::{Affinity, Job};
use crate::shard::msg::Work;
use crate::shard::plan::Return;
use crate::steal::Overflow;
use crate::sync::Arc;

#[test]
fn a_saturated_shard_offers_movable_requests_to_a_parked_one() {
    let overflow = Arc::new(Overflow::default());
    let lines: std::sync::Arc<[Arc<Line<Work>>]> = Line::family(2).into();
    let cfg = Config {
        steal_watermark: 0,
        ..config(1)
    };
    let mut busy = Harness::shard_of(0, lines.clone(), overflow.clone(), cfg.clone());
    let mut idle = Harness::shard_of(1, lines, overflow.clone(), cfg.clone());
    busy.ask(Job::new());
    busy.open_all();
    assert!(!overflow.prepare_park(1), "nothing offered yet");
    let sticky = busy.ask(Job::new().affinity(Affinity::sticky("k")));
    let movable = busy.ask(Job::new());
    assert_eq!(busy.wakes, [1], "the parked shard is woken");
    assert!(idle.plan.has_spare_capacity(&cfg));
    let offered = overflow.take().expect("a request was offered");
    assert_eq!(offered.arrival, movable, "the sticky request never moves");
    let now = idle.now;
    idle.plan.stolen(offered, now, &cfg);
    idle.settle();
    idle.open_all();
    assert_eq!(idle.out.len(), 1, "the other shard runs it");
    // (The job's answer reaches its caller, whose channel the busy harness reads.)
    busy.collect();
    assert_eq!(busy.served(), [1, movable]);
    busy.give_back(Return::Clean);
    assert_eq!(busy.served(), [sticky]);
}

/// Issue 20: `run` requests queued at two shards start in the order they arrived, pool
/// wide, whichever shard's sessions free up first. A shard whose own line is open (nothing
/// queued there comes first) serves the open line whose first caller came earliest.
#[test]
fn run_requests_at_two_shards_start_in_arrival_order() {
    let lines: std::sync::Arc<[Arc<Line<Work>>]> = Line::family(2).into();
    let overflow = Arc::new(Overflow::default());
    let cfg = Config {
        lease_handoff: true,
        ..config(2)
    };
    let mut a = Harness::shard_of(0, lines.clone(), overflow.clone(), cfg.clone());
    let mut b = Harness::shard_of(1, lines.clone(), overflow, cfg);
    // Both shards' sessions busy with a job each.
    for h in [&mut a, &mut b] {
        h.ask(Job::new());
        h.ask(Job::new());
        h.open_all();
        assert_eq!(h.out.len(), 2);
        h.served();
    }
    // A run of arrivals at shard 0, then at shard 1, then at shard 0 again (what routing
    // by load does when one shard's callers pile up).
    let mut asked = Vec::new();
    asked.extend([a.ask(Job::new()), a.ask(Job::new()), a.ask(Job::new())]);
    asked.extend([b.ask(Job::new()), b.ask(Job::new())]);
    asked.push(a.ask(Job::new()));
    assert!(lines.iter().all(|l| l.is_open()), "both lines open");
    // Sessions free up, shard 1's first: each starts the earliest caller in the pool.
    let mut started = Vec::new();
    for from_b in [true, true, false, false, true, true] {
        let h = if from_b { &mut b } else { &mut a };
        h.give_back(Return::Clean);
        // One job starts per step; its answer reaches the harness that asked.
        for h in [&mut a, &mut b] {
            h.collect();
            started.extend(h.served());
        }
    }
    assert_eq!(started, asked, "started out of arrival order");
    for h in [&mut a, &mut b] {
        h.give_back(Return::Clean); // reads the other shard's `Served` records
        h.check();
        assert!(
            h.plan.waiters.line_is_empty(),
            "a served caller is still on record"
        );
    }
}

/// Without the line (`lease_handoff` off) each shard serves its own queue: the same
/// arrivals start out of order. What the test above guards against.
#[test]
fn without_the_line_each_shard_serves_only_its_own_queue() {
    let lines: std::sync::Arc<[Arc<Line<Work>>]> = Line::family(2).into();
    let overflow = Arc::new(Overflow::default());
    let cfg = config(1);
    let mut a = Harness::shard_of(0, lines.clone(), overflow.clone(), cfg.clone());
    let mut b = Harness::shard_of(1, lines, overflow, cfg);
    for h in [&mut a, &mut b] {
        h.ask(Job::new());
        h.open_all();
        h.served();
    }
    let first = a.ask(Job::new());
    let second = b.ask(Job::new());
    b.give_back(Return::Clean);
    assert_eq!(b.served(), [second], "shard 1 serves its own, later caller");
    a.give_back(Return::Clean);
    assert_eq!(a.served(), [first]);
}

/// Issue 16, item 8: a request offered to other shards and taken by none fails at its own
/// wait deadline: the shard that offered it keeps the deadline, and its timer fires.
#[test]
fn an_offered_request_nobody_takes_fails_at_its_deadline() {
    let overflow = Arc::new(Overflow::default());
    let lines: std::sync::Arc<[Arc<Line<Work>>]> = Line::family(2).into();
    let cfg = Config {
        steal_watermark: 0,
        wait_timeout: std::time::Duration::from_secs(1),
        ..config(1)
    };
    let mut busy = Harness::shard_of(0, lines, overflow.clone(), cfg.clone());
    busy.ask(Job::new());
    busy.open_all();
    assert!(!overflow.prepare_park(1));
    let offered = busy.ask(Job::new());
    assert_eq!(overflow.len(), 1, "offered to the parked shard");
    // The parked shard never takes it (it got busy first).
    let due = busy.now + cfg.wait_timeout;
    assert_eq!(
        busy.plan.next_deadline(),
        Some(due),
        "its deadline is watched"
    );
    busy.advance(cfg.wait_timeout / 2);
    assert!(busy.failed.is_empty());
    assert_eq!(overflow.len(), 1, "not due yet: still offered");
    busy.advance(cfg.wait_timeout / 2);
    assert_eq!(
        busy.failed,
        [(
            offered,
            crate::error::ErrorKind::Timeout(crate::error::TimeoutKind::Wait)
        )]
    );
    assert!(overflow.is_empty());
    assert_eq!(busy.plan.next_deadline(), None);
}

/// The sweep keeps what is not due, in order, and fails only what is.
#[test]
fn a_sweep_of_the_offered_requests_keeps_the_live_ones_in_order() {
    let overflow = Arc::new(Overflow::default());
    // Four shards, three of them parked: each of the three requests goes to one.
    let lines: std::sync::Arc<[Arc<Line<Work>>]> = Line::family(4).into();
    let cfg = Config {
        steal_watermark: 0,
        ..config(1)
    };
    let mut busy = Harness::shard_of(0, lines, overflow.clone(), cfg.clone());
    busy.ask(Job::new());
    busy.open_all();
    let short = std::time::Duration::from_millis(100);
    for shard in 1..4 {
        assert!(!overflow.prepare_park(shard));
    }
    let first = busy.ask(Job::new());
    let soon = busy.ask(Job::new().wait_timeout(short));
    let last = busy.ask(Job::new());
    assert_eq!(overflow.len(), 3);
    busy.advance(short);
    assert_eq!(
        busy.failed,
        [(
            soon,
            crate::error::ErrorKind::Timeout(crate::error::TimeoutKind::Wait)
        )]
    );
    let order: Vec<u64> = std::iter::from_fn(|| overflow.take().map(|r| r.arrival)).collect();
    assert_eq!(order, [first, last]);
}
