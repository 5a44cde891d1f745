//! Pipelined batches: results in order, one failure does not lose the others, and the
//! commands leave together.

mod support;

use std::time::Duration;

use cdpmux::browser::Launch;
use cdpmux::js_protocol::runtime::EvaluateParams;
use cdpmux::sim::SimConfig;
use cdpmux::{ErrorKind, Job, Pool};

async fn batch_with_a_failure_in_the_middle(pool: &Pool) {
    let results = pool
        .run(Job::new(), async |page| {
            let mut batch = page.batch();
            let first = batch.push(EvaluateParams::new("20+1"));
            let bad = batch.push_raw("Nope.notAMethod", serde_json::json!({}));
            let raw = batch.push_raw(
                "Runtime.evaluate",
                serde_json::json!({"expression": "40+2"}),
            );
            let slots: Vec<_> = (0..7)
                .map(|i| batch.push(EvaluateParams::new(format!("{i}*10"))))
                .collect();
            assert_eq!(batch.len(), 10);
            let results = batch.run().await;
            assert_eq!(results.len(), 10);
            assert_eq!(results.failures(), 1);
            assert_eq!(
                results.get(first)?.result.value,
                Some(serde_json::json!(21))
            );
            let err = results.get(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Protocol);
            assert_eq!(err.cdp_code(), Some(-32601));
            assert_eq!(results.get(raw)?["result"]["value"], 42);
            for (i, slot) in slots.into_iter().enumerate() {
                assert_eq!(
                    results.get(slot)?.result.value,
                    Some(serde_json::json!(i * 10))
                );
            }
            assert!(results.raw(10).is_err());
            Ok(results.len())
        })
        .await
        .unwrap();
    assert_eq!(results, 10);
    let snap = pool.metrics().await;
    assert_eq!(snap.counters.batched_commands, 10);
    assert_eq!(snap.counters.jobs_ok, 1);
    // Queued before the writer ran: all ten left in one flush.
    assert!(
        snap.frames_per_flush.max_frames >= 10,
        "{:?}",
        snap.frames_per_flush
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_on_the_simulated_browser() {
    let (_sim, pool) = support::sim_pool(SimConfig::default(), 1, |_| {}).await;
    batch_with_a_failure_in_the_middle(&pool).await;
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_on_chromium() {
    if !support::require_browser() {
        return;
    }
    let pool = Pool::builder()
        .launch(Launch::new())
        .shards(1)
        .build()
        .await
        .unwrap();
    batch_with_a_failure_in_the_middle(&pool).await;
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}
