//! Isolation modes and the between-jobs reset, on the simulated browser.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use cdpmux::sim::SimConfig;
use cdpmux::{Affinity, Isolation, Job, Pool, Reset};

/// The browser context the job's page lives in (empty for the default context).
async fn context_of(pool: &Pool, job: Job) -> String {
    pool.run(job, async |page| {
        let targets = page
            .connection()
            .call("Target.getTargets", serde_json::json!({}))
            .await?;
        let mine = targets["targetInfos"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["targetId"] == page.target_id())
            .cloned()
            .unwrap_or_default();
        Ok(mine["browserContextId"].as_str().unwrap_or("").to_owned())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_per_key_separates_keys_and_reuses_within_one() {
    let (sim, pool) = support::sim_pool(SimConfig::default(), 1, |c| {
        c.sessions_per_shard = 2;
        c.isolation = Isolation::ContextPerKey;
        c.max_contexts = 2;
    })
    .await;
    let key = |k: &str| Job::new().affinity(Affinity::soft(k));
    let a1 = context_of(&pool, key("a")).await;
    let b1 = context_of(&pool, key("b")).await;
    let a2 = context_of(&pool, key("a")).await;
    let default = context_of(&pool, Job::new()).await;
    assert_ne!(a1, b1);
    assert_eq!(a1, a2, "a key keeps its context (and its cookies)");
    assert!(
        a1 != default && b1 != default,
        "keyed jobs get their own context; unkeyed ones the default"
    );
    // A third key with the limit at two contexts: a context without sessions goes.
    let c1 = context_of(&pool, key("c")).await;
    assert!(!c1.is_empty());
    let s = support::metrics_until(&pool, Duration::from_secs(10), |_| {
        sim.stats().contexts <= 2
    })
    .await;
    assert!(
        sim.stats().contexts <= 2,
        "contexts bounded: {:?}",
        sim.stats()
    );
    assert!(s.gauges.live() <= 2);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_per_job_gives_every_job_a_fresh_context() {
    let (sim, pool) = support::sim_pool(SimConfig::default(), 1, |c| {
        c.sessions_per_shard = 2;
        c.isolation = Isolation::ContextPerJob;
        c.min_idle = 1;
    })
    .await;
    let mut seen = HashSet::new();
    for _ in 0..6 {
        let ctx = context_of(&pool, Job::new()).await;
        assert!(seen.insert(ctx), "a context was reused");
    }
    // Used contexts are disposed; only warm ones remain.
    support::metrics_until(&pool, Duration::from_secs(10), |_| {
        sim.stats().contexts <= 2
    })
    .await;
    assert!(sim.stats().contexts <= 2, "{:?}", sim.stats());
    let s = pool.metrics().await;
    assert_eq!(s.counters.sessions_reused, 0, "no page serves two jobs");
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_navigates_away_after_release() {
    let (_sim, pool) = support::sim_pool(SimConfig::default(), 1, |c| {
        c.sessions_per_shard = 1;
        c.reset = Reset::AboutBlank;
    })
    .await;
    pool.run(Job::new(), async |page| {
        page.goto("http://site.example/secret").await
    })
    .await
    .unwrap();
    let href = pool
        .run(Job::new(), async |page| {
            page.evaluate_value("location.href").await
        })
        .await
        .unwrap();
    assert_eq!(href, "about:blank");
    let s = pool.metrics().await;
    assert_eq!(s.counters.sessions_created, 1, "reset, not replaced");
    pool.reconfigure(|c| c.reset = Reset::None).unwrap();
    pool.run(Job::new(), async |page| {
        page.goto("http://site.example/kept").await
    })
    .await
    .unwrap();
    let href = pool
        .run(Job::new(), async |page| {
            page.evaluate_value("location.href").await
        })
        .await
        .unwrap();
    assert_eq!(href, "http://site.example/kept");
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_options_and_cookies_reach_its_contexts_on_the_simulated_browser() {
    use cdpmux::identity::{ContextOptions, Cookie};
    let (_sim, pool) = support::sim_pool(SimConfig::default(), 2, |c| {
        c.isolation = Isolation::ContextPerKey;
    })
    .await;
    let opts = ContextOptions::new()
        .user_agent("sim-ua")
        .header("X-Key", "a")
        .locale("de-DE")
        .timezone("Europe/Berlin");
    pool.set_context_options("a", opts).await.unwrap();
    let first = vec![Cookie::new("sid", "1", "a.test")];
    pool.import_cookies("a", first.clone()).await.unwrap();
    assert_eq!(
        pool.export_cookies("a").await.unwrap(),
        first,
        "seeds, before use"
    );
    let a = context_of(&pool, Job::new().affinity(Affinity::sticky("a"))).await;
    assert!(!a.is_empty());
    assert_eq!(
        pool.export_cookies("a").await.unwrap(),
        first,
        "the key's context was seeded when it was created"
    );
    let late = Cookie::new("late", "2", "a.test");
    pool.import_cookies("a", vec![late.clone()]).await.unwrap();
    let now = pool.export_cookies("a").await.unwrap();
    assert_eq!(
        now,
        [first[0].clone(), late],
        "imported into the open context"
    );
    context_of(&pool, Job::new().affinity(Affinity::sticky("b"))).await;
    assert!(pool.export_cookies("b").await.unwrap().is_empty());
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_calls_on_a_pool_without_a_context_per_key_say_what_is_missing() {
    use cdpmux::identity::{ContextOptions, Cookie};
    let (_sim, pool) = support::one_shard(1).await;
    let errors = [
        pool.set_context_options("a", ContextOptions::new())
            .await
            .unwrap_err(),
        pool.export_cookies("a").await.unwrap_err(),
        pool.import_cookies("a", vec![Cookie::new("s", "1", "a.test")])
            .await
            .unwrap_err(),
    ];
    for err in errors {
        assert_eq!(err.kind(), cdpmux::ErrorKind::InvalidInput);
        assert!(err.message().contains("ContextPerKey"), "{err}");
    }
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}
