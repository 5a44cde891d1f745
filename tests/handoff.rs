//! Leases handed straight from one `acquire` caller to the next (`Config::lease_handoff`),
//! through the public API on the simulated browser: order by class then arrival is the
//! same as through the shard, a caller whose wait ends or who leaves loses nothing and
//! strands nobody, and a session whose page died never goes to the next caller.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cdpmux::sim::SimConfig;
use cdpmux::{Affinity, ErrorKind, Job, Lease, Pool, Priority, TimeoutKind};
use serde_json::json;
use tokio::task::JoinHandle;

const LIMIT: Duration = Duration::from_secs(20);

async fn acquire(pool: &Pool) -> Lease {
    support::lease(pool, LIMIT).await
}

/// Waits until the shard has opened its line (every session out, nobody queued), so the
/// next plain caller joins it by itself.
async fn line_opens(pool: &Pool) {
    let snap = support::metrics_until(pool, LIMIT, |s| s.gauges.open_lines == 1).await;
    assert_eq!(snap.gauges.open_lines, 1, "the line opens");
}

/// A caller that takes a lease, evaluates `1+1` through it and lets it go.
fn lease_caller(pool: &Pool) -> JoinHandle<cdpmux::Result<serde_json::Value>> {
    let pool = pool.clone();
    tokio::spawn(async move {
        let lease = pool.acquire(Job::new()).await?;
        lease.evaluate_value("1+1").await
    })
}

/// Waits (bounded) for a caller's answer, which must be 2.
async fn answers_two(caller: JoinHandle<cdpmux::Result<serde_json::Value>>) {
    let answer = tokio::time::timeout(LIMIT, caller).await.unwrap().unwrap();
    assert_eq!(answer.unwrap(), json!(2));
}

async fn waiting(pool: &Pool, n: u64) {
    let snap = support::metrics_until(pool, LIMIT, |s| s.gauges.waiting == n).await;
    assert_eq!(snap.gauges.waiting, n, "callers waiting");
}

/// Checks every session is back, nobody waits and the browser holds as many targets as
/// sessions, then shuts the pool down.
async fn settle_and_stop(pool: &Pool, sim: &cdpmux::sim::SimBrowser, sessions: u64) {
    let snap = support::metrics_until(pool, LIMIT, |s| {
        s.gauges.idle == sessions && s.gauges.busy == 0 && s.gauges.waiting == 0
    })
    .await;
    assert_eq!(
        (snap.gauges.idle, snap.gauges.busy, snap.gauges.waiting),
        (sessions, 0, 0),
        "idle, busy, waiting once all is back"
    );
    assert_eq!(sim.stats().targets as u64, sessions, "browser targets");
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// One session; five callers of mixed classes queue behind a held lease. With hand-off
/// on, each release serves the next caller directly, in the order the shard itself
/// would (class first, then arrival), and every hand-off is counted; with it off, the
/// same order through the shard and no hand-off.
async fn order_of_service(handoff: bool) {
    let (sim, pool) = support::sim_pool(SimConfig::default(), 1, |c| {
        c.sessions_per_shard = 1;
        c.aging = Duration::ZERO;
        c.lease_handoff = handoff;
    })
    .await;
    let held = acquire(&pool).await;

    let order = Arc::new(Mutex::new(Vec::new()));
    let callers = [
        ("normal-1", Priority::Normal),
        ("normal-2", Priority::Normal),
        ("high-1", Priority::High),
        ("low-1", Priority::Low),
        ("critical-1", Priority::Critical),
    ];
    let mut tasks = Vec::new();
    for (i, (name, priority)) in callers.into_iter().enumerate() {
        let (caller, order) = (pool.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let lease = caller.acquire(Job::new().priority(priority)).await?;
            order.lock().unwrap().push(name);
            let two = lease.evaluate_value("1+1").await?;
            drop(lease);
            Ok::<_, cdpmux::Error>(two)
        }));
        // One at a time, so arrival order is known.
        waiting(&pool, i as u64 + 1).await;
    }
    drop(held);
    for t in tasks {
        answers_two(t).await;
    }
    assert_eq!(
        *order.lock().unwrap(),
        ["critical-1", "high-1", "normal-1", "normal-2", "low-1"]
    );
    let snap = pool.metrics().await;
    // Five releases had a caller waiting: the held lease's and the first four callers'.
    assert_eq!(snap.counters.handoffs, if handoff { 5 } else { 0 });
    assert_eq!(snap.counters.sessions_created, 1);
    settle_and_stop(&pool, &sim, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handed_on_leases_serve_by_class_then_arrival() {
    order_of_service(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_handoff_the_shard_serves_in_the_same_order() {
    order_of_service(false).await;
}

/// A caller lined up for a held session whose wait deadline passes gets
/// `Timeout(Wait)`; the next caller is still served by hand-off, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lined_up_caller_whose_wait_ends_loses_nothing() {
    let (sim, pool) = support::one_shard(1).await;
    let held = acquire(&pool).await;
    let impatient = pool
        .acquire(Job::new().wait_timeout(Duration::from_millis(200)))
        .await;
    let err = impatient.expect_err("no session within 200 ms");
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutKind::Wait));

    let next = lease_caller(&pool);
    waiting(&pool, 1).await;
    drop(held);
    answers_two(next).await;
    let snap = pool.metrics().await;
    assert_eq!(snap.counters.timeouts_wait, 1);
    assert_eq!(snap.counters.handoffs, 1);
    settle_and_stop(&pool, &sim, 1).await;
}

/// Two callers lined up for two held sessions; the first leaves (its future is dropped).
/// A release skips it and serves the second; the other release goes back to the shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_who_left_the_line_is_skipped() {
    let (sim, pool) = support::one_shard(2).await;
    let first = acquire(&pool).await;
    let second = acquire(&pool).await;
    let leaving = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire(Job::new()).await })
    };
    waiting(&pool, 1).await;
    let staying = lease_caller(&pool);
    waiting(&pool, 2).await;
    leaving.abort();
    assert!(leaving.await.unwrap_err().is_cancelled());

    drop(first);
    answers_two(staying).await;
    assert_eq!(pool.metrics().await.counters.handoffs, 1);
    drop(second);
    settle_and_stop(&pool, &sim, 2).await;
}

/// The held page crashes while a caller is lined up for it: the release goes to the
/// shard, which replaces the page, and the caller gets a working session, not the dead
/// one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_page_is_never_handed_on() {
    let (sim, pool) = support::one_shard(1).await;
    let held = acquire(&pool).await;
    let next = lease_caller(&pool);
    waiting(&pool, 1).await;
    let crashed = tokio::time::timeout(LIMIT, held.call("Page.crash", json!({})))
        .await
        .expect("the crash is reported in time");
    assert_eq!(crashed.unwrap_err().kind(), ErrorKind::SessionCrashed);
    drop(held);

    let two = tokio::time::timeout(LIMIT, next).await.unwrap().unwrap();
    assert_eq!(two.unwrap(), json!(2), "the caller got a working page");
    let snap = pool.metrics().await;
    assert_eq!(snap.counters.handoffs, 0);
    assert_eq!(snap.counters.sessions_crashed, 1);
    assert_eq!(snap.counters.sessions_created, 2);
    settle_and_stop(&pool, &sim, 1).await;
}

/// Shutdown with callers in the line: they get `Shutdown`, the held lease keeps working
/// through the grace, and its return ends the shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_the_line() {
    let (_sim, pool) = support::one_shard(1).await;
    let held = acquire(&pool).await;
    let lined_up = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire(Job::new()).await.map(drop) })
    };
    waiting(&pool, 1).await;
    let shutdown = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.shutdown(Duration::from_secs(600)).await })
    };
    let refused = tokio::time::timeout(LIMIT, lined_up)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(refused.unwrap_err().kind(), ErrorKind::Shutdown);
    assert_eq!(held.evaluate_value("1+1").await.unwrap(), json!(2));
    drop(held);
    tokio::time::timeout(LIMIT, shutdown)
        .await
        .expect("the lease's return ends the grace")
        .unwrap()
        .unwrap();
}

/// With every session held and nobody queued, plain callers join the line by themselves
/// (no message to the shard) and are served by hand-off, in arrival order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_callers_join_the_line_by_themselves() {
    let (sim, pool) = support::one_shard(1).await;
    let held = acquire(&pool).await;
    line_opens(&pool).await;
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..3u64 {
        let (caller, order) = (pool.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let lease = caller.acquire(Job::new()).await?;
            order.lock().unwrap().push(i);
            lease.evaluate_value("1+1").await
        }));
        waiting(&pool, i + 1).await;
    }
    drop(held);
    for t in tasks {
        answers_two(t).await;
    }
    assert_eq!(*order.lock().unwrap(), [0, 1, 2]);
    let snap = pool.metrics().await;
    assert_eq!(snap.counters.handoffs, 3);
    assert_eq!(
        snap.counters.joined_handoffs, 3,
        "all three joined by themselves"
    );
    settle_and_stop(&pool, &sim, 1).await;
}

/// A `run` job queued after a caller who joined the line and before one who came later
/// keeps its place: first come, first served across both paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_callers_keep_their_place_among_run_jobs() {
    let (sim, pool) = support::one_shard(1).await;
    let held = acquire(&pool).await;
    line_opens(&pool).await;
    let order = Arc::new(Mutex::new(Vec::new()));
    let lease_task = |name: &'static str| {
        let (pool, order) = (pool.clone(), order.clone());
        tokio::spawn(async move {
            let lease = pool.acquire(Job::new()).await?;
            order.lock().unwrap().push(name);
            lease.evaluate_value("1+1").await
        })
    };
    let first = lease_task("lease-1");
    waiting(&pool, 1).await;
    let run = {
        let (pool, order) = (pool.clone(), order.clone());
        tokio::spawn(async move {
            pool.run(Job::new(), async move |page| {
                order.lock().unwrap().push("run");
                page.evaluate_value("1+1").await
            })
            .await
        })
    };
    waiting(&pool, 2).await;
    let last = lease_task("lease-2");
    waiting(&pool, 3).await;
    drop(held);
    for t in [first, run, last] {
        answers_two(t).await;
    }
    assert_eq!(*order.lock().unwrap(), ["lease-1", "run", "lease-2"]);
    assert_eq!(pool.metrics().await.counters.joined_handoffs, 1);
    settle_and_stop(&pool, &sim, 1).await;
}

/// A caller who joined the line and whose wait limit passes while every session stays
/// held gets `Timeout(Wait)` like a queued one (the shard takes the line back, where its
/// timers apply); nothing is lost and the next caller is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_caller_times_out_like_a_queued_one() {
    let (sim, pool) = support::sim_pool(SimConfig::default(), 1, |c| {
        c.sessions_per_shard = 1;
        c.wait_timeout = Duration::from_millis(300);
    })
    .await;
    let held = acquire(&pool).await;
    line_opens(&pool).await;
    let late = tokio::time::timeout(LIMIT, pool.acquire(Job::new()))
        .await
        .expect("the wait limit ends the wait");
    assert_eq!(
        late.unwrap_err().kind(),
        ErrorKind::Timeout(TimeoutKind::Wait)
    );
    let snap = pool.metrics().await;
    assert_eq!(snap.counters.timeouts_wait, 1);
    assert_eq!(snap.gauges.waiting, 0);

    let next = lease_caller(&pool);
    waiting(&pool, 1).await;
    drop(held);
    answers_two(next).await;
    settle_and_stop(&pool, &sim, 1).await;
}

/// A storm of leases of every kind on 2 shards × 6 sessions: plain callers (who join the
/// lines), other classes, short wait limits, `run` jobs, and callers giving up at random.
/// Every caller is answered (patient ones with a working lease), leases are handed on,
/// and afterwards every session is back, nobody waits, and the browser holds exactly the
/// pool's sessions. (How many callers join a line by themselves depends on timing: here
/// typically 1,000 or more hand-offs of 1,500, a handful on a loaded machine.)
/// Two shards of one session each. Shard 0's session stays held; plain callers, routed
/// to both shards by load, wait in the two lines. Shard 1's session then serves every
/// one of them in turn, the callers in shard 0's line too (a pool's open lines drain as
/// one): with each shard serving only its own line, those would wait for shard 0's
/// session until their deadline. Shard 0 forgets each of its callers served elsewhere:
/// nobody is left waiting, and both sessions come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_serves_the_other_shards_line_too() {
    const CALLERS: usize = 12;
    let (sim, pool) = support::sim_pool(SimConfig::default(), 2, |c| {
        c.sessions_per_shard = 1;
        c.wait_timeout = Duration::from_secs(10);
    })
    .await;
    // A lease on each shard's only session (keyed only to pick the shard).
    let on_shard = |shard: usize| {
        let key = (0..)
            .map(|i| format!("key-{i}"))
            .find(|k| cdpmux::shard_for(k, 2) == shard)
            .expect("some key maps to each shard");
        let pool = pool.clone();
        async move {
            let job = Job::new().affinity(Affinity::soft(key));
            tokio::time::timeout(LIMIT, pool.acquire(job))
                .await
                .expect("acquire answers in time")
                .expect("a lease")
        }
    };
    let held = on_shard(0).await;
    let serving = on_shard(1).await;
    assert_eq!((held.shard(), serving.shard()), (0, 1));
    let snap = support::metrics_until(&pool, LIMIT, |s| s.gauges.open_lines == 2).await;
    assert_eq!(snap.gauges.open_lines, 2, "both lines open");

    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let lease = pool.acquire(Job::new()).await?;
                let two = lease.evaluate_value("1+1").await?;
                Ok::<_, cdpmux::Error>((lease.shard(), two))
            })
        })
        .collect();
    waiting(&pool, CALLERS as u64).await;
    drop(serving);
    for caller in callers {
        let served = tokio::time::timeout(LIMIT, caller).await.unwrap().unwrap();
        assert_eq!(
            served.unwrap(),
            (1, json!(2)),
            "served by shard 1's session"
        );
    }
    let counters = pool.metrics().await.counters;
    assert_eq!(counters.handoffs, CALLERS as u64);
    assert!(
        counters.cross_shard_handoffs > 0,
        "some callers waited in shard 0's line and were served from shard 1: {counters:?}"
    );
    drop(held);
    settle_and_stop(&pool, &sim, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_mixed_callers_loses_nothing() {
    let sim = SimConfig::default()
        .with_seed(5)
        .with_reply_delay(cdpmux::sim::Delay::Uniform(
            Duration::ZERO,
            Duration::from_millis(2),
        ));
    let (sim, pool) = support::sim_pool(sim, 2, |c| {
        c.sessions_per_shard = 6;
        c.max_queue = 10_000;
    })
    .await;
    let mut rng = fastrand::Rng::with_seed(17);
    let mut tasks = Vec::new();
    for i in 0..1_500u64 {
        let pool = pool.clone();
        // Half plain (which cycle three times), a fifth plain and impatient, the rest
        // other classes, short wait limits and `run` jobs; arriving over ~400 ms.
        let kind = [0, 0, 0, 0, 0, 1, 1, 2, 3, 4][rng.usize(..10)];
        if i % 4 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let patience = Duration::from_micros(rng.u64(0..8_000));
        let priority = [Priority::Low, Priority::High, Priority::Critical][rng.usize(..3)];
        tasks.push(tokio::spawn(async move {
            let work = async {
                match kind {
                    // Plain: may join a line by itself.
                    0 => {
                        let mut v = Ok(json!(null));
                        for _ in 0..3 {
                            let lease = pool.acquire(Job::new()).await?;
                            v = lease.evaluate_value(&format!("{i}+1")).await;
                        }
                        v
                    }
                    1 => {
                        let lease = pool.acquire(Job::new()).await?;
                        lease.evaluate_value(&format!("{i}+1")).await
                    }
                    // Another class: always through the shard.
                    2 => {
                        let lease = pool.acquire(Job::new().priority(priority)).await?;
                        lease.evaluate_value(&format!("{i}+1")).await
                    }
                    // A short wait limit of its own.
                    3 => {
                        let job = Job::new().wait_timeout(Duration::from_millis(5));
                        let lease = pool.acquire(job).await?;
                        lease.evaluate_value(&format!("{i}+1")).await
                    }
                    _ => {
                        pool.run(Job::new(), async move |page| {
                            page.evaluate_value(&format!("{i}+1")).await
                        })
                        .await
                    }
                }
            };
            // Kind 1 gives up at a random point; the others wait for their answer.
            let answer = if kind == 1 {
                match tokio::time::timeout(patience, work).await {
                    Ok(answer) => answer,
                    Err(_) => return None,
                }
            } else {
                work.await
            };
            Some((kind, answer))
        }));
    }
    let (mut served, mut timed_out, mut gave_up) = (0, 0, 0);
    for (i, t) in tasks.into_iter().enumerate() {
        let outcome = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("every caller is answered in bounded time")
            .unwrap();
        match outcome {
            None => gave_up += 1,
            Some((_, Ok(v))) => {
                assert_eq!(v, json!(i as u64 + 1), "caller {i} got another's answer");
                served += 1;
            }
            Some((3, Err(e))) if e.kind() == ErrorKind::Timeout(TimeoutKind::Wait) => {
                timed_out += 1
            }
            Some((kind, Err(e))) => panic!("caller {i} (kind {kind}) failed: {e}"),
        }
    }
    assert!(
        served > 500,
        "served {served}, timed out {timed_out}, gave up {gave_up}"
    );
    let snap = support::settled(&pool, LIMIT, "after the storm").await;
    assert!(
        snap.gauges.idle <= 12,
        "never more than the limit: {snap:?}"
    );
    assert!(snap.counters.handoffs > 0, "{snap:?}");
    support::assert_targets_match_sessions(&pool, &sim).await;
    assert_eq!(pool.load(), [0, 0]);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(sim.stats().targets, 0, "shutdown closes every target");
}
