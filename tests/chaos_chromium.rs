//! Chaos on real Chromium: renderer processes killed by pid during a 1,000-page crawl,
//! and the browser process killed mid-crawl. No job is handed a dead page, calls on a
//! killed page fail with `SessionCrashed` (never a deadline), retries absorb the kills,
//! the pool refills, a killed browser is relaunched, and nothing is left running.

mod support;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cdpmux::browser::Launch;
use cdpmux::sim::{DemoSite, SiteConfig};
use cdpmux::{ErrorKind, Job, Pool};
use tokio::sync::mpsc;

const LIMIT: Duration = Duration::from_secs(180);

fn kill(pid: u32) {
    // SAFETY: a plain signal to a process of a browser this test launched.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

/// Zombie processes in process group `pgid` (which `support::group_processes` skips).
fn zombies(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map_or("", |(_, r)| r)
                .split_whitespace()
                .collect();
            fields.len() > 2 && fields[0] == "Z" && fields[2].parse() == Ok(pgid)
        })
        .collect()
}

/// Waits (bounded) until no process of group `pgid` is left, zombies included.
async fn assert_group_gone(pgid: u32) {
    for _ in 0..500 {
        if support::group_processes(pgid, "").is_empty() && zombies(pgid).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "browser {pgid} left processes {:?} and zombies {:?}",
        support::group_processes(pgid, ""),
        zombies(pgid)
    );
}

/// What one crawl job records.
#[derive(Default)]
struct Record {
    /// Jobs that found their page already known dead when handed it.
    dead_handouts: AtomicU64,
    /// Calls that failed with `SessionCrashed`, and the longest one (µs, from just before
    /// the call to the error).
    crashed_calls: AtomicU64,
    slowest_crashed_call_us: AtomicU64,
    /// When the latest renderer kill was sent (µs since `epoch`), and the time from the
    /// latest kill to each `SessionCrashed` error that followed it.
    epoch: OnceLock<Instant>,
    last_kill_us: AtomicU64,
    after_kill_us: std::sync::Mutex<Vec<u64>>,
    /// Errors of any other kind inside a job.
    other_errors: std::sync::Mutex<Vec<String>>,
}

impl Record {
    fn call_failed(&self, err: &cdpmux::Error, took: Duration) {
        if err.kind() == ErrorKind::SessionCrashed {
            self.crashed_calls.fetch_add(1, Ordering::SeqCst);
            self.slowest_crashed_call_us
                .fetch_max(took.as_micros() as u64, Ordering::SeqCst);
            if let Some(epoch) = self.epoch.get() {
                let now = epoch.elapsed().as_micros() as u64;
                let after = now.saturating_sub(self.last_kill_us.load(Ordering::SeqCst));
                self.after_kill_us.lock().unwrap().push(after);
            }
        } else {
            self.other_errors
                .lock()
                .unwrap()
                .push(format!("{:?} after {took:?}: {err}", err.kind()));
        }
    }
}

/// Crawls `url` on `page`: navigate, then read the title; each call timed.
async fn visit(page: &cdpmux::Page, url: &str, rec: &Record) -> cdpmux::Result<String> {
    if !page.is_alive() {
        rec.dead_handouts.fetch_add(1, Ordering::SeqCst);
    }
    let t = Instant::now();
    if let Err(e) = page.goto(url).await {
        rec.call_failed(&e, t.elapsed());
        return Err(e);
    }
    let t = Instant::now();
    page.title()
        .await
        .inspect_err(|e| rec.call_failed(e, t.elapsed()))
}

/// Starts `jobs` crawl jobs over the site's pages; each answer (with the job's number of
/// attempts) arrives on the returned channel.
fn start_crawl(
    pool: &Pool,
    site: &DemoSite,
    jobs: usize,
    retries: u32,
    rec: &Arc<Record>,
) -> mpsc::UnboundedReceiver<(usize, u32, cdpmux::Result<String>)> {
    let urls = site.page_urls();
    let (tx, rx) = mpsc::unbounded_channel();
    for i in 0..jobs {
        let n = i % urls.len();
        let (pool, url, rec, tx) = (pool.clone(), urls[n].clone(), rec.clone(), tx.clone());
        tokio::spawn(async move {
            let attempts = Arc::new(AtomicU32::new(0));
            let counted = attempts.clone();
            let answer = pool
                .run(Job::new().retries(retries), async move |page| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    visit(page, &url, &rec).await
                })
                .await;
            if let Ok(title) = &answer {
                assert_eq!(*title, DemoSite::title_of(n), "page {n}");
            }
            let _ = tx.send((i, attempts.load(Ordering::SeqCst), answer));
        });
    }
    rx
}

fn site() -> DemoSite {
    DemoSite::start(SiteConfig {
        pages: 200,
        slow_every: 0,
        heavy_every: 0,
        ..SiteConfig::default()
    })
    .expect("start the demo site")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renderers_killed_mid_crawl_cost_no_job_and_the_pool_refills() {
    if !support::require_browser() {
        return;
    }
    const JOBS: usize = 1_000;
    const SESSIONS: u64 = 16;
    let site = site();
    let pool = Pool::builder()
        .launch(Launch::new())
        .shards(2)
        .sessions_per_shard(SESSIONS as usize / 2)
        .configure(|c| {
            c.health_interval = Duration::from_millis(200);
            c.max_queue = 2 * JOBS;
            c.wait_timeout = LIMIT;
        })
        .build()
        .await
        .expect("launch Chromium");
    let browser = pool.browser_pids()[0];
    let rec = Arc::new(Record::default());
    // retries(1) as the issue asks; `CDPMUX_CHAOS_RETRIES` sets another count for a
    // one-off measurement (docs/reliability.md gives both).
    let retries: u32 = std::env::var("CDPMUX_CHAOS_RETRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut answers = start_crawl(&pool, &site, JOBS, retries, &rec);

    // One renderer killed after every 10th completed job: about 100 kills, one at a
    // time, at moments set by the crawl's own progress.
    let mut rng = fastrand::Rng::with_seed(17);
    let (mut done, mut kills, mut failed) = (0, 0, Vec::new());
    let started = Instant::now();
    tokio::time::timeout(LIMIT, async {
        while let Some((i, attempts, answer)) = answers.recv().await {
            done += 1;
            if let Err(e) = answer {
                failed.push((i, attempts, e.kind()));
            }
            if done % 10 == 0 && done < JOBS {
                if let Some(pid) = rng.choice(support::group_processes(browser, "--type=renderer"))
                {
                    let epoch = rec.epoch.get_or_init(Instant::now);
                    rec.last_kill_us
                        .store(epoch.elapsed().as_micros() as u64, Ordering::SeqCst);
                    kill(pid);
                    kills += 1;
                }
            }
            if done == JOBS {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {done} of {JOBS} jobs answered"));
    let crawl_time = started.elapsed();

    assert_eq!(done, JOBS, "every job answered");
    assert_eq!(
        rec.dead_handouts.load(Ordering::SeqCst),
        0,
        "a job was handed a dead page"
    );
    let other = rec.other_errors.lock().unwrap().clone();
    assert!(
        other.is_empty(),
        "calls failed otherwise than SessionCrashed: {other:?}"
    );
    // A job may fail only because every one of its attempts ran on a page that was
    // killed, with `SessionCrashed`. A page killed while it was being opened fails no
    // job (docs/reliability.md, bug 3).
    for &(i, attempts, kind) in &failed {
        assert_eq!(
            (kind, attempts),
            (ErrorKind::SessionCrashed, retries + 1),
            "job {i} failed"
        );
    }
    let crashed_calls = rec.crashed_calls.load(Ordering::SeqCst);
    assert!(crashed_calls > 0, "no kill hit a call in flight");

    // The pool returns to full size.
    let snap = support::metrics_until(&pool, Duration::from_secs(60), |s| {
        s.gauges.busy == 0 && s.gauges.idle == SESSIONS
    })
    .await;
    assert_eq!(
        (snap.gauges.busy, snap.gauges.idle),
        (0, SESSIONS),
        "{snap:?}"
    );
    let mut after_kill = rec.after_kill_us.lock().unwrap().clone();
    after_kill.sort_unstable();
    let ms = |q: f64| after_kill[((after_kill.len() - 1) as f64 * q).round() as usize] as f64 / 1e3;
    eprintln!(
        "renderer kills: {kills} renderers SIGKILLed over {JOBS} jobs ({crawl_time:?}); {crashed_calls} calls failed \
         with SessionCrashed, slowest {:.1} ms after the call started; from the latest kill to the error \
         p50/p95/p99/max {:.1}/{:.1}/{:.1}/{:.1} ms; {} sessions crashed, {} retries, {} failed openings; \
         {} jobs failed with all {} attempts killed, 0 handed a dead page; pool back to {SESSIONS} idle",
        rec.slowest_crashed_call_us.load(Ordering::SeqCst) as f64 / 1000.0,
        ms(0.5),
        ms(0.95),
        ms(0.99),
        ms(1.0),
        snap.counters.sessions_crashed,
        snap.counters.retries(),
        snap.counters.session_create_failures,
        failed.len(),
        retries + 1,
    );

    pool.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_group_gone(browser).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_killed_mid_crawl_is_relaunched_and_leaves_nothing_behind() {
    if !support::require_browser() {
        return;
    }
    const PAGES: usize = 300;
    const WINDOW: usize = 8;
    let site = site();
    let urls = site.page_urls();
    let pool = Pool::builder()
        .launch(Launch::new())
        .shards(2)
        .sessions_per_shard(4)
        .configure(|c| {
            c.health_interval = Duration::from_millis(200);
            c.reconnect_base = Duration::from_millis(50);
            c.reconnect_max = Duration::from_millis(500);
        })
        .build()
        .await
        .expect("launch Chromium");
    let first = pool.browser_pids()[0];
    let rec = Arc::new(Record::default());

    // A crawler with WINDOW pages in flight. A page whose job is lost (in flight when
    // the browser died, or refused at once while it relaunches) goes back in the queue
    // after a short back-off, as a crawler would do: the test then checks every page is
    // crawled in the end.
    let mut queue: std::collections::VecDeque<(usize, u32)> = (0..PAGES).map(|n| (n, 0)).collect();
    let mut in_flight = tokio::task::JoinSet::new();
    let spawn = |set: &mut tokio::task::JoinSet<_>, n: usize, tries: u32| {
        let (pool, url, rec) = (pool.clone(), urls[n % urls.len()].clone(), rec.clone());
        set.spawn(async move {
            if tries > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await; // crawler back-off
            }
            let answer = pool
                .run(Job::new(), async move |page| visit(page, &url, &rec).await)
                .await;
            (n, tries, answer)
        });
    };
    let mut killed_at: Option<Instant> = None;
    let (mut crawled, mut in_flight_lost, mut refused) = (0, Vec::new(), 0);
    let mut ok_after_kill = 0;
    tokio::time::timeout(LIMIT, async {
        loop {
            while in_flight.len() < WINDOW {
                let Some((n, tries)) = queue.pop_front() else {
                    break;
                };
                spawn(&mut in_flight, n, tries);
            }
            let Some(joined) = in_flight.join_next().await else {
                break;
            };
            let (n, tries, answer) = joined.unwrap();
            match answer {
                Ok(title) => {
                    assert_eq!(title, DemoSite::title_of(n % urls.len()));
                    crawled += 1;
                    if killed_at.is_some() {
                        ok_after_kill += 1;
                    }
                }
                Err(e) => {
                    let at = killed_at.expect("no failure before the kill");
                    match e.kind() {
                        ErrorKind::BrowserUnavailable => refused += 1,
                        ErrorKind::SessionCrashed | ErrorKind::ConnectionClosed => {
                            in_flight_lost.push(at.elapsed())
                        }
                        other => panic!("page {n}: unexpected {other:?}: {e}"),
                    }
                    assert!(tries < 200, "page {n} never crawled");
                    queue.push_back((n, tries + 1));
                }
            }
            if crawled == 100 && killed_at.is_none() {
                killed_at = Some(Instant::now());
                kill(first);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {crawled} of {PAGES} pages crawled"));

    assert_eq!(crawled, PAGES, "every page crawled in the end");
    assert_eq!(
        rec.dead_handouts.load(Ordering::SeqCst),
        0,
        "a job was handed a dead page"
    );
    assert!(!in_flight_lost.is_empty(), "the kill hit no job in flight");
    assert!(ok_after_kill > 0);
    let second = pool.browser_pids()[0];
    assert_ne!(first, second, "a new browser process");
    // The first browser's processes are gone already, not only after shutdown.
    assert_group_gone(first).await;
    eprintln!(
        "browser kill after 100 of {PAGES} pages: {} jobs in flight failed fast (slowest answered {:?} after the kill), \
         {refused} refused at once (BrowserUnavailable) while it relaunched; all {PAGES} pages crawled \
         ({ok_after_kill} after the kill) on browser {second} (was {first})",
        in_flight_lost.len(),
        in_flight_lost.iter().max().unwrap(),
    );
    pool.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_group_gone(second).await;
}
