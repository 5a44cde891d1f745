//! Graceful drain and idle (issue 16, item 6), on the simulated browser: `drain` refuses
//! new requests, finishes everything queued and running, then shuts the pool down; a
//! drain whose deadline passes stops the rest with a clear error; `idle` resolves only
//! once the last request is done, and again after the pool is used again.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cdpmux::sim::{Delay, SimConfig};
use cdpmux::{ErrorKind, Job, TimeoutKind};
use tokio::sync::Semaphore;

/// The bound on one step: a hang shows as a failed test, not a stuck one.
const STEP: Duration = Duration::from_secs(60);

#[tokio::test]
async fn drain_finishes_everything_queued_and_running_then_shuts_down() {
    // Every command takes ~2 ms: 50 jobs on 4 pages queue up behind each other.
    let sim = SimConfig::default().with_reply_delay(Delay::Fixed(Duration::from_millis(2)));
    let (_sim, pool) = support::sim_pool(sim, 2, |c| c.sessions_per_shard = 2).await;
    let jobs: Vec<_> = (0..50)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.run(Job::new(), async move |page| {
                    page.evaluate_value("1 + 1").await?;
                    Ok(i)
                })
                .await
            })
        })
        .collect();
    // Every job is submitted (each task ran to its first wait) before the drain begins.
    tokio::task::yield_now().await;
    let in_flight: usize = pool.load().iter().sum();
    assert!(
        in_flight > 0,
        "jobs are queued or running as the drain begins"
    );
    let drain = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.drain(STEP).await })
    };
    tokio::task::yield_now().await; // the drain has begun: new requests are refused
    let refused = pool
        .run(Job::new(), async |_page| Ok(()))
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Shutdown, "{refused}");
    assert!(refused.to_string().contains("draining"), "{refused}");
    let refused = pool.acquire(Job::new()).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Shutdown, "{refused}");
    tokio::time::timeout(STEP, drain)
        .await
        .expect("the drain ends")
        .unwrap()
        .expect("everything finished in time");
    for (i, job) in jobs.into_iter().enumerate() {
        assert_eq!(job.await.unwrap().expect("every job finished Ok"), i);
    }
    // The pool is down.
    let after = pool
        .run(Job::new(), async |_page| Ok(()))
        .await
        .unwrap_err();
    assert!(after.is_shutdown(), "{after}");
}

#[tokio::test]
async fn a_drain_deadline_that_passes_stops_the_rest_clearly() {
    let (_sim, pool) = support::one_shard(1).await;
    // Jobs that wait for a gate the test never opens: one runs, three queue.
    let gate = Arc::new(Semaphore::new(0));
    let jobs: Vec<_> = (0..4)
        .map(|_| {
            let (pool, gate) = (pool.clone(), gate.clone());
            tokio::spawn(async move {
                pool.run(Job::new(), async move |_page| {
                    let _ = gate.acquire().await;
                    Ok(())
                })
                .await
            })
        })
        .collect();
    tokio::task::yield_now().await;
    let err = tokio::time::timeout(STEP, pool.drain(Duration::from_millis(200)))
        .await
        .expect("the drain ends at its deadline")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutKind::Drain), "{err}");
    for job in jobs {
        let e = job.await.unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Shutdown, "{e}");
        assert!(e.to_string().contains("drain deadline"), "{e}");
    }
}

#[tokio::test]
async fn idle_resolves_after_the_last_job_and_again_when_reused() {
    let (_sim, pool) = support::one_shard(1).await;
    tokio::time::timeout(STEP, pool.idle())
        .await
        .expect("a quiet pool is idle at once");
    let log = Arc::new(Mutex::new(Vec::new()));
    for round in 0..2 {
        let gate = Arc::new(Semaphore::new(0));
        let jobs: Vec<_> = (0..3)
            .map(|i| {
                let (pool, gate, log) = (pool.clone(), gate.clone(), log.clone());
                tokio::spawn(async move {
                    pool.run(Job::new(), async move |_page| {
                        let _ = gate.acquire().await;
                        log.lock().unwrap().push(format!("job {i}"));
                        Ok(())
                    })
                    .await
                })
            })
            .collect();
        tokio::task::yield_now().await;
        let idle = {
            let (pool, log) = (pool.clone(), log.clone());
            tokio::spawn(async move {
                pool.idle().await;
                log.lock().unwrap().push("idle".to_string());
            })
        };
        tokio::task::yield_now().await;
        assert!(!idle.is_finished(), "round {round}: jobs are in flight");
        gate.add_permits(3);
        for job in jobs {
            tokio::time::timeout(STEP, job)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
        tokio::time::timeout(STEP, idle)
            .await
            .expect("idle resolves once the jobs are done")
            .unwrap();
        let entries = std::mem::take(&mut *log.lock().unwrap());
        assert_eq!(entries.len(), 4, "{entries:?}");
        assert_eq!(
            entries.last().map(String::as_str),
            Some("idle"),
            "{entries:?}"
        );
    }
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn drain_waits_for_a_job_waiting_out_its_retry() {
    let (_sim, pool) = support::one_shard(1).await;
    let runs = Arc::new(Mutex::new(0u32));
    let counted = runs.clone();
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel();
    let failed_tx = Mutex::new(Some(failed_tx));
    let policy = cdpmux::RetryPolicy::new(1)
        .backoff(Duration::from_millis(200), Duration::from_millis(200))
        .jitter(0.0);
    let job = {
        let pool = pool.clone();
        tokio::spawn(async move {
            pool.run(Job::new().retry(policy), async move |_page| {
                let mut n = counted.lock().unwrap();
                *n += 1;
                if *n == 1 {
                    if let Some(tx) = failed_tx.lock().unwrap().take() {
                        let _ = tx.send(());
                    }
                    let mut nav = cdpmux::Navigation::default();
                    nav.status = Some(503);
                    return nav.error_for_status().map(|_| 0);
                }
                Ok(*n)
            })
            .await
        })
    };
    failed_rx.await.expect("the first attempt failed");
    // The drain begins while the job waits out its backoff, holding no page.
    tokio::time::timeout(STEP, pool.drain(STEP))
        .await
        .expect("the drain ends")
        .expect("the retry finished before the pool went down");
    assert_eq!(job.await.unwrap().expect("the retry succeeded"), 2);
}
