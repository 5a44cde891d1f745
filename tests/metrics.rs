//! Metrics count exactly what happened, and the Prometheus text parses back.

mod support;

use std::sync::Arc;
use std::time::Duration;

use cdpmux::sim::{SimBrowser, SimConfig};
use cdpmux::{ErrorKind, Job, Pool, TimeoutKind};

const N_OK: u64 = 20;
const N_CRASH: u64 = 3;
const N_TIMEOUT: u64 = 2;
const N_FULL: u64 = 4;

async fn evaluate_job(pool: &Pool, job: Job) -> cdpmux::Result<serde_json::Value> {
    pool.run(job, async |page| page.evaluate_value("1+1").await)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_match_a_scripted_workload() {
    let sim = Arc::new(SimBrowser::start(SimConfig::default()).unwrap());
    let pool = Pool::builder()
        .endpoint(sim.ws_url())
        .shards(1)
        .configure(|c| {
            c.sessions_per_shard = 1;
            c.max_queue = 1;
        })
        .build()
        .await
        .unwrap();

    for _ in 0..N_OK {
        assert_eq!(evaluate_job(&pool, Job::new()).await.unwrap(), 2);
    }
    for _ in 0..N_CRASH {
        let sim = sim.clone();
        let err = pool
            .run(Job::new(), async move |page| {
                sim.crash_target(page.target_id());
                page.evaluate_value("1+1").await
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SessionCrashed, "{err}");
    }
    sim.black_hole(Some("Runtime.evaluate"));
    for _ in 0..N_TIMEOUT {
        let job = Job::new().command_timeout(Duration::from_millis(50));
        let err = evaluate_job(&pool, job).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutKind::Command));
    }
    sim.black_hole(None);

    // Queue-full rejections: hold the one session, fill the one queue slot.
    let held = support::hold_session(&pool, Job::new()).await;
    let queued = {
        let pool = pool.clone();
        tokio::spawn(async move { evaluate_job(&pool, Job::new()).await })
    };
    support::metrics_until(&pool, Duration::from_secs(10), |s| s.gauges.waiting == 1).await;
    for _ in 0..N_FULL {
        let err = evaluate_job(&pool, Job::new()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::QueueFull);
    }
    held.release.send(()).unwrap();
    held.task.await.unwrap();
    assert_eq!(queued.await.unwrap().unwrap(), 2);

    let s = support::metrics_until(&pool, Duration::from_secs(10), |s| s.gauges.busy == 0).await;
    let c = s.counters;
    let jobs_ok = N_OK + 2; // plus the holder and the queued one
    let jobs_failed = N_CRASH + N_TIMEOUT;
    assert_eq!(c.jobs_ok, jobs_ok, "{c:?}");
    assert_eq!(c.jobs_failed, jobs_failed);
    assert_eq!(c.sessions_crashed, N_CRASH);
    assert_eq!(
        c.sessions_created,
        1 + N_CRASH,
        "each crash is replaced once"
    );
    assert_eq!(c.timeouts_command, N_TIMEOUT);
    assert_eq!(c.timeouts_wait + c.timeouts_create + c.timeouts_job, 0);
    assert_eq!(c.queue_full, N_FULL);
    assert_eq!(c.retries(), 0);
    // Every acquisition is a first use or a reuse.
    let acquisitions = jobs_ok + jobs_failed;
    assert_eq!(c.sessions_created + c.sessions_reused, acquisitions);
    assert_eq!(s.acquire_wait.count, acquisitions);
    assert_eq!(s.job.count, acquisitions);
    assert_eq!(s.session_create.count, c.sessions_created);
    // Commands: 6 to open each session (create, attach, the Inspector, Page and Network
    // enables, lifecycle events on), one evaluate per job that sent one, and one
    // Page.stopLoading per interrupted job.
    let evaluates = N_OK + 1 + N_CRASH + N_TIMEOUT;
    assert_eq!(c.commands, 6 * c.sessions_created + evaluates + N_TIMEOUT);
    assert_eq!(c.command_failures, N_CRASH + N_TIMEOUT);
    assert_eq!(s.command.runtime.count, evaluates);
    assert_eq!(
        s.command.navigation.count, N_TIMEOUT,
        "stopLoading counts as navigation"
    );
    assert_eq!(s.gauges.live(), 1);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Parses Prometheus text exposition: every line is a comment (`# HELP`/`# TYPE`) or
/// `name{labels} value`; returns the samples.
type Sample = (String, Vec<(String, String)>, f64);

fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().expect("comment names a metric");
            assert!(kind == "HELP" || kind == "TYPE", "{line}");
            if kind == "TYPE" {
                let t = parts.next().unwrap();
                assert!(["counter", "gauge", "summary"].contains(&t), "{line}");
                assert!(typed.insert(name.to_owned()), "TYPE given twice: {line}");
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels close");
                let labels = body
                    .split(',')
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').expect("label has =");
                        let v = v
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .expect("quoted");
                        (k.to_owned(), v.to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), Vec::new()),
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && name.starts_with("cdpmux_"),
            "bad metric name {name}"
        );
        let family = ["_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|base| typed.contains(*base))
            .unwrap_or(&name);
        assert!(typed.contains(family), "sample before its TYPE: {line}");
        samples.push((name, labels, value));
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_text_parses_back() {
    let (_sim, pool) = support::sim_pool(SimConfig::default(), 2, |_| {}).await;
    for _ in 0..10 {
        evaluate_job(&pool, Job::new()).await.unwrap();
    }
    let snap = pool.metrics().await;
    let text = snap.to_prometheus();
    let samples = parse_prometheus(&text);
    let get = |name: &str, label: Option<(&str, &str)>| {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name && label.is_none_or(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .unwrap_or_else(|| panic!("{name} missing in:\n{text}"))
            .2
    };
    assert_eq!(get("cdpmux_jobs_total", Some(("outcome", "ok"))), 10.0);
    assert_eq!(get("cdpmux_job_seconds_count", None), 10.0);
    assert!(get("cdpmux_job_seconds", Some(("quantile", "0.99"))) > 0.0);
    assert_eq!(
        get("cdpmux_command_seconds_count", Some(("group", "runtime"))),
        10.0
    );
    assert_eq!(get("cdpmux_sessions", Some(("state", "busy"))), 0.0);
    // Nobody waited, so no shard held its line open.
    assert_eq!(get("cdpmux_open_lines", None), 0.0);
    assert_eq!(get("cdpmux_handoffs_total", None), 0.0);
    // Counters end in _total, times in _seconds.
    for (name, _, _) in &samples {
        let ok = name.ends_with("_total")
            || name.contains("_seconds")
            || [
                "cdpmux_sessions",
                "cdpmux_waiting",
                "cdpmux_reuse_ratio",
                "cdpmux_open_lines",
                "cdpmux_autoscale_target_sessions",
                "cdpmux_autoscale_reason",
                "cdpmux_memory_used_permille",
            ]
            .contains(&name.as_str())
            || name.starts_with("cdpmux_frames_per_flush");
        assert!(ok, "unconventional name {name}");
    }
    // The human table and JSON render too.
    assert!(snap.to_string().contains("reuse rate"));
    let json: serde_json::Value = serde_json::to_value(&snap).unwrap();
    assert_eq!(json["counters"]["jobs_ok"], 10);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_reports_the_cut() {
    let (_sim, pool) = support::sim_pool(SimConfig::default(), 1, |_| {}).await;
    for _ in 0..20 {
        evaluate_job(&pool, Job::new()).await.unwrap();
    }
    let snap = pool.metrics().await;
    let same = snap.compare(&snap);
    assert_eq!(same.job.p50_cut, 0.0);
    assert!(!same.target_met, "no change cannot meet a 30% cut");
    assert_eq!(same.reuse_rate_after, snap.reuse_rate());
    assert!(same.with_target(0.0).target_met);
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
}
