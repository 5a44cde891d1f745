//! Commands through a `Lease`, on the simulated browser: the shard sends them straight to
//! the socket and their replies go straight to the holder, so the connection keeps their
//! deadlines. A hung command times out and the page works again; a short deadline fires
//! on time even behind a long one; the metrics count both.

mod support;

use std::future::Future;
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Duration;

use cdpmux::{ErrorKind, Lease, Pool, TimeoutKind};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(10);

async fn acquire(pool: &Pool) -> Lease {
    support::lease(pool, LIMIT).await
}

/// Polls `fut` once.
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx))).await
}

async fn evaluate(lease: &Lease, expression: &str) -> cdpmux::Result<serde_json::Value> {
    tokio::time::timeout(LIMIT, lease.evaluate_value(expression))
        .await
        .expect("the command is answered (or times out) in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_command_times_out_and_the_page_works_again() {
    let (_sim, pool) = support::one_shard(1).await;
    let mut lease = acquire(&pool).await;
    lease.set_command_timeout(Duration::from_millis(200));

    let hung = evaluate(&lease, "while(true){}").await;
    assert_eq!(
        hung.map_err(|e| e.kind()),
        Err(ErrorKind::Timeout(TimeoutKind::Command))
    );
    // The connection stopped the script (`Runtime.terminateExecution`): the same page
    // answers the next command.
    assert_eq!(evaluate(&lease, "1+1").await.unwrap(), json!(2));

    let counters = pool.metrics().await.counters;
    assert_eq!(counters.timeouts_command, 1);
    assert!(
        counters.commands >= 2 && counters.command_failures >= 1,
        "the lease's commands are counted: {counters:?}"
    );
    drop(lease);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Two leases on one shard: a command with a long deadline goes out first, then one with
/// a short deadline; the browser answers neither. The short one fails when its own
/// deadline passes, not when the long one's does (which is past this test's bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_deadline_fires_on_time_behind_a_long_one() {
    let (sim, pool) = support::one_shard(2).await;
    let mut long = acquire(&pool).await;
    let mut short = acquire(&pool).await;
    long.set_command_timeout(LIMIT * 6);
    short.set_command_timeout(Duration::from_millis(200));
    sim.black_hole(Some("Runtime.evaluate"));

    // Sent on the first poll: ahead of the short one in the shard's inbox.
    let mut pending = pin!(long.evaluate_value("1"));
    assert!(poll_once(&mut pending).await.is_pending());
    let timed_out = evaluate(&short, "2").await;
    assert_eq!(
        timed_out.map_err(|e| e.kind()),
        Err(ErrorKind::Timeout(TimeoutKind::Command))
    );
    assert!(
        poll_once(&mut pending).await.is_pending(),
        "the long command still waits"
    );
    assert_eq!(pool.metrics().await.counters.timeouts_command, 1);

    // Shutdown fails what is still pending; nothing waits for the long deadline.
    sim.black_hole(None);
    tokio::time::timeout(LIMIT, pool.shutdown(Duration::from_secs(1)))
        .await
        .expect("shutdown in time")
        .unwrap();
    let ended = tokio::time::timeout(LIMIT, pending)
        .await
        .expect("answered");
    assert!(ended.is_err(), "the long command failed at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_past_the_clock_saturate_instead_of_killing_the_shard() {
    let (_sim, pool) = support::one_shard(1).await;
    // The connection keeps a lease command's deadline on the shard's thread:
    // `started + Duration::MAX` overflowed `Instant` there and the shard died.
    let mut lease = acquire(&pool).await;
    lease.set_command_timeout(Duration::MAX);
    let v = tokio::time::timeout(LIMIT, lease.evaluate_value("1+1"))
        .await
        .expect("answered in time")
        .expect("a deadline past the clock is just far off");
    assert_eq!(v, json!(2));
    drop(lease);
    let job = cdpmux::Job::new()
        .wait_timeout(Duration::MAX)
        .timeout(Duration::MAX)
        .command_timeout(Duration::MAX);
    let v = tokio::time::timeout(
        LIMIT,
        pool.run(job, async |page| page.evaluate_value("2+2").await),
    )
    .await
    .expect("answered in time")
    .expect("so are a job's");
    assert_eq!(v, json!(4));
    pool.shutdown(Duration::from_secs(1)).await.unwrap();
}

/// What a page offers, through a lease: batch, title, target id, event streams and a
/// one-event wait, each answered on the page's shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_batches_reads_its_title_and_target_and_streams_events() {
    use futures_util::StreamExt;
    let (_sim, pool) = support::one_shard(1).await;
    let lease = acquire(&pool).await;

    let mut batch = lease.batch();
    let a = batch.push(cdpmux::js_protocol::runtime::EvaluateParams::new("1+1"));
    let b = batch.push_raw("Runtime.evaluate", json!({"expression": "2+2"}));
    assert_eq!(batch.len(), 2);
    let results = tokio::time::timeout(LIMIT, batch.run()).await.unwrap();
    assert_eq!(results.get(a).unwrap().result.value, Some(json!(2)));
    assert_eq!(results.get(b).unwrap()["result"]["value"], 4);

    let target = tokio::time::timeout(LIMIT, lease.target_id())
        .await
        .unwrap()
        .unwrap();
    assert!(!target.is_empty());

    let mut navigated = lease.events("Page.frameNavigated");
    let load = lease.wait_for_event("Page.loadEventFired");
    tokio::time::timeout(LIMIT, lease.goto("http://site.example/a"))
        .await
        .unwrap()
        .expect("the simulated page loads");
    let event = tokio::time::timeout(LIMIT, navigated.next())
        .await
        .unwrap()
        .expect("an event")
        .unwrap();
    assert_eq!(event.method(), "Page.frameNavigated");
    let load = load.wait(LIMIT).await.expect("the load event");
    assert_eq!(load.method(), "Page.loadEventFired");
    assert!(tokio::time::timeout(LIMIT, lease.title())
        .await
        .unwrap()
        .is_ok());

    let refused = lease.events_with("X.y", cdpmux::EventBuffer::new(0, Default::default()));
    assert_eq!(refused.unwrap_err().kind(), ErrorKind::InvalidInput);
    drop(lease);
    assert!(
        tokio::time::timeout(LIMIT, navigated.next())
            .await
            .unwrap()
            .is_none(),
        "the lease went back: its stream ended"
    );
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// A lease dropped while another caller waits goes straight to that caller, without a
/// trip through the shard: the streams the first holder opened end before the second
/// holder gets the page, so they never hear its events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_handed_straight_on_ends_its_streams_first() {
    use futures_util::StreamExt;
    let (_sim, pool) = support::one_shard(1).await;
    let first = acquire(&pool).await;
    let mut navigated = first.events("Page.frameNavigated");
    let waiting = tokio::spawn({
        let pool = pool.clone();
        async move { support::lease(&pool, LIMIT).await }
    });
    let snap = support::metrics_until(&pool, LIMIT, |s| s.gauges.waiting == 1).await;
    assert_eq!(snap.gauges.waiting, 1, "the second caller waits");
    drop(first);
    let second = tokio::time::timeout(LIMIT, waiting).await.unwrap().unwrap();
    tokio::time::timeout(LIMIT, second.goto("http://site.example/b"))
        .await
        .unwrap()
        .expect("the simulated page loads");
    assert_eq!(
        pool.metrics().await.counters.handoffs,
        1,
        "the page went straight to the second holder"
    );
    assert!(
        tokio::time::timeout(LIMIT, navigated.next())
            .await
            .unwrap()
            .is_none(),
        "the first holder's stream ended, hearing nothing of the second's navigation"
    );
    drop(second);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// A lease held past `max_hold`: the shard takes its page back (the lease's stream ends
/// then), the page serves the next caller while the first still holds its lease, and
/// the first lease's later calls fail with `Timeout(Job)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_held_past_max_hold_loses_its_page_to_the_next_caller() {
    use futures_util::StreamExt;
    let (_sim, pool) = support::one_shard(1).await;
    let job = cdpmux::Job::new().max_hold(Duration::from_millis(100));
    let forgotten = tokio::time::timeout(LIMIT, pool.acquire(job))
        .await
        .unwrap()
        .expect("a lease");
    let mut events = forgotten.events("Page.lifecycleEvent");
    // Ends when the shard takes the page back, not before.
    assert!(
        tokio::time::timeout(LIMIT, events.next())
            .await
            .expect("taken back in time")
            .is_none(),
        "taken back: the stream ended"
    );
    let next = acquire(&pool).await;
    assert_eq!(evaluate(&next, "1+1").await.unwrap(), json!(2));
    let err = evaluate(&forgotten, "1+1").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutKind::Job), "{err}");
    assert!(err.to_string().contains("took its page back"), "{err}");
    drop(forgotten);
    assert_eq!(
        evaluate(&next, "2+2").await.unwrap(),
        json!(4),
        "the late release leaves the new holder alone"
    );
    assert_eq!(pool.metrics().await.counters.timeouts_job, 1);
    drop(next);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}
