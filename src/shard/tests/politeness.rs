//! Per-key politeness in virtual time: a throttled key's starts are spaced by its
//! interval, the shard wakes for its next start by itself, and other keys' requests are
//! never behind it; the queue's rules still order the requests allowed to start.

use std::time::Duration;

use tokio::time::Instant;

use super::{config, Harness};
use crate::config::Config;
use crate::error::{ErrorKind, TimeoutKind};
use crate::handoff::Line;
use crate::job::{Affinity, Job, Priority};
use crate::politeness::Politeness;
use crate::shard::msg::Work;
use crate::shard::plan::Return;
use crate::steal::Overflow;
use crate::sync::Arc;

const MS: Duration = Duration::from_millis(1);

fn keyed(key: &str) -> Job {
    Job::new().affinity(Affinity::soft(key))
}

fn one_per_200ms() -> Politeness {
    Politeness::new().max_in_flight(1).interval(200 * MS)
}

/// Sets `key`'s own rule, as `Pool::set_politeness` does through the key's inbox.
fn throttle(h: &mut Harness, key: &str, rule: Politeness) {
    let (now, cfg) = (h.now, h.cfg.clone());
    h.plan.set_politeness(key.into(), Some(rule), now, &cfg);
    h.settle();
}

/// Moves the clock to the plan's next deadline, as the shell's timer would.
fn to_next_deadline(h: &mut Harness) -> Instant {
    let at = h
        .plan
        .next_deadline()
        .expect("the plan has a deadline armed");
    h.advance(at.saturating_duration_since(h.now));
    at
}

#[test]
fn four_keys_one_throttled_its_starts_are_spaced_and_the_others_are_not_behind_it() {
    let mut h = Harness::new(config(4));
    let t0 = h.now;
    throttle(&mut h, "slow.test", one_per_200ms());
    let slow: Vec<u64> = (0..4).map(|_| h.ask(keyed("slow.test"))).collect();
    let mut others = Vec::new();
    for key in ["a.test", "b.test", "c.test"] {
        for _ in 0..3 {
            others.push(h.ask(keyed(key)));
        }
    }
    let mut starts: Vec<(u64, Instant)> = Vec::new();
    let mut rounds = 0;
    while starts.len() < slow.len() + others.len() {
        rounds += 1;
        assert!(rounds < 100, "every request must start");
        h.open_all();
        let now = h.now;
        starts.extend(h.served().into_iter().map(|id| (id, now)));
        // Jobs end at once: only politeness keeps the slow key's requests back.
        while !h.out.is_empty() {
            h.give_back(Return::Clean);
            let now = h.now;
            starts.extend(h.served().into_iter().map(|id| (id, now)));
            h.check();
        }
        if starts.len() < slow.len() + others.len() {
            to_next_deadline(&mut h);
            let now = h.now;
            starts.extend(h.served().into_iter().map(|id| (id, now)));
            h.check();
        }
    }
    let slow_starts: Vec<Instant> = slow
        .iter()
        .map(|id| starts.iter().find(|(s, _)| s == id).unwrap().1)
        .collect();
    for pair in slow_starts.windows(2) {
        assert!(
            pair[1] - pair[0] >= 200 * MS,
            "the throttled key's starts must be 200 ms apart: {:?}",
            slow_starts.iter().map(|t| *t - t0).collect::<Vec<_>>()
        );
    }
    // Every other key's request started before the throttled key's second start: none
    // waited behind it.
    for id in &others {
        let at = starts.iter().find(|(s, _)| s == id).unwrap().1;
        assert!(
            at < slow_starts[1],
            "request {id} waited behind the throttled key"
        );
    }
    // The others in arrival order (one queue, FIFO within the class).
    let order: Vec<u64> = starts
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| others.contains(id))
        .collect();
    assert_eq!(order, others);
    assert_eq!(h.plan.metrics.borrow().counters.throttled, 3);
}

#[test]
fn the_shard_wakes_for_the_next_start_without_polling() {
    let mut h = Harness::new(config(2));
    throttle(&mut h, "slow.test", one_per_200ms());
    let t0 = h.now;
    let first = h.ask(keyed("slow.test"));
    h.open_all();
    assert_eq!(h.served(), [first]);
    let second = h.ask(keyed("slow.test"));
    h.give_back(Return::Clean);
    assert!(h.served().is_empty(), "held: the interval is not over");
    // The wake-up is the key's next start, not the request's wait deadline (30 s).
    assert_eq!(to_next_deadline(&mut h), t0 + 200 * MS);
    assert_eq!(h.served(), [second]);
    h.check();
}

#[test]
fn priority_and_fifo_hold_among_the_requests_allowed_to_start() {
    let mut h = Harness::new(config(1));
    throttle(&mut h, "slow.test", Politeness::new().max_in_flight(1));
    let first = h.ask(Job::new());
    h.open_all();
    assert_eq!(h.served(), [first]);
    // In order: the throttled key's first (let in), its second (held), a Low request,
    // a Normal one and a High one of other keys.
    let slow1 = h.ask(keyed("slow.test").priority(Priority::High));
    let slow2 = h.ask(keyed("slow.test"));
    let low = h.ask(keyed("a.test").priority(Priority::Low));
    let normal = h.ask(keyed("b.test"));
    let high = h.ask(keyed("c.test").priority(Priority::High));
    let mut order = Vec::new();
    for _ in 0..5 {
        h.give_back(Return::Clean);
        order.extend(h.served());
        h.check();
    }
    // slow2 is let in when slow1 is done: after the High request (strict priority),
    // before the later Normal one (FIFO in its class, by arrival).
    assert_eq!(order, [slow1, high, slow2, normal, low]);
}

#[test]
fn a_held_request_times_out_at_its_own_deadline() {
    let mut h = Harness::new(config(1));
    throttle(&mut h, "slow.test", Politeness::new().max_in_flight(1));
    let first = h.ask(keyed("slow.test"));
    h.open_all();
    assert_eq!(h.served(), [first]);
    let held = h.ask(keyed("slow.test").wait_timeout(500 * MS));
    assert_eq!(to_next_deadline(&mut h) - h.now, Duration::ZERO);
    assert_eq!(h.failed, [(held, ErrorKind::Timeout(TimeoutKind::Wait))]);
    h.check();
    // The key is not stuck: its next request starts once the job is back.
    h.give_back(Return::Clean);
    let next = h.ask(keyed("slow.test"));
    assert_eq!(h.served(), [next]);
    h.check();
}

#[test]
fn a_leased_session_counts_until_the_lease_comes_back() {
    let mut h = Harness::new(config(2));
    throttle(&mut h, "slow.test", Politeness::new().max_in_flight(1));
    let first = h.acquire(keyed("slow.test"));
    h.open_all();
    assert_eq!(h.served(), [first]);
    let second = h.acquire(keyed("slow.test"));
    h.open_all();
    assert!(h.served().is_empty(), "one lease of the key at a time");
    h.give_back(Return::Clean);
    assert_eq!(h.served(), [second]);
    h.check();
}

#[test]
fn lifting_a_rule_lets_the_held_requests_in() {
    let mut h = Harness::new(config(3));
    throttle(&mut h, "slow.test", one_per_200ms());
    let ids: Vec<u64> = (0..3).map(|_| h.ask(keyed("slow.test"))).collect();
    h.open_all();
    assert_eq!(h.served(), ids[..1]);
    let (now, cfg) = (h.now, h.cfg.clone());
    h.plan.set_politeness("slow.test".into(), None, now, &cfg);
    h.settle();
    // Let in, they wait briefly for their key's busy session (soft affinity), then
    // take new ones.
    h.advance(h.cfg.affinity_wait);
    h.open_all();
    assert_eq!(h.served(), ids[1..]);
    h.check();
}

#[test]
fn the_pool_default_applies_to_every_key() {
    let mut h = Harness::new(Config {
        politeness: Politeness::new().max_in_flight(1),
        ..config(4)
    });
    let a1 = h.ask(keyed("a.test"));
    let a2 = h.ask(keyed("a.test"));
    let b1 = h.ask(keyed("b.test"));
    let plain = h.ask(Job::new());
    h.open_all();
    assert_eq!(
        h.served(),
        [a1, b1, plain],
        "keyless jobs are never throttled"
    );
    h.give_back(Return::Clean);
    h.open_all();
    assert_eq!(h.served(), [a2]);
    h.check();
}

#[test]
fn a_request_holding_its_keys_ticket_is_never_offered_to_another_shard() {
    let overflow = Arc::new(Overflow::default());
    let lines: std::sync::Arc<[Arc<Line<Work>>]> = Line::family(2).into();
    let cfg = Config {
        steal_watermark: 0,
        politeness: Politeness::new().max_in_flight(1),
        ..config(1)
    };
    let mut busy = Harness::shard_of(0, lines.clone(), overflow.clone(), cfg.clone());
    let _parked = Harness::shard_of(1, lines, overflow.clone(), cfg);
    let first = busy.ask(Job::new());
    busy.open_all();
    assert_eq!(busy.served(), [first]);
    assert!(!overflow.prepare_park(1));
    let keyed_id = busy.ask(keyed("k"));
    let plain = busy.ask(Job::new());
    let offered = overflow.take().expect("a request was offered");
    assert_eq!(
        offered.arrival, plain,
        "the soft-keyed request holds its key's ticket"
    );
    assert!(overflow.take().is_none());
    busy.give_back(Return::Clean);
    assert_eq!(busy.served(), [keyed_id]);
    drop(offered);
    busy.check();
}

#[test]
fn held_requests_count_against_the_queue_bound_and_keep_their_place_when_let_in() {
    let mut h = Harness::new(Config {
        max_queue: 3,
        ..config(1)
    });
    throttle(&mut h, "k", Politeness::new().max_in_flight(1));
    let running = h.ask(keyed("k"));
    h.open_all();
    assert_eq!(h.served(), [running]);
    let k2 = h.ask(keyed("k"));
    let k3 = h.ask(keyed("k"));
    let queued = h.ask(Job::new());
    assert!(h.failed.is_empty(), "two held and one queued fit in three");
    let refused = h.ask(Job::new());
    let refused_keyed = h.ask(keyed("k"));
    assert_eq!(
        h.failed,
        [
            (refused, ErrorKind::QueueFull),
            (refused_keyed, ErrorKind::QueueFull)
        ]
    );
    // Each of the key's requests is let in as the one before ends, and is served in
    // its arrival order, before the later plain request.
    for next in [k2, k3, queued] {
        h.give_back(Return::Clean);
        assert_eq!(h.served(), [next]);
        h.check();
    }
}
