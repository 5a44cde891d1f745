//! Does the seed's adaptive batching (§3.1) beat the self-clocking writer?
//!
//! One connection to the simulated browser, 1, 16 and 64 busy pages (each with one
//! `Runtime.evaluate` in flight, back to back), on one current-thread runtime as in a
//! shard. Two browsers: one that answers at once (replies arrive together, the pages
//! move in lock step) and one whose replies take 0.2-2 ms, drawn per command (replies
//! trickle in one by one, the case a hold could help). Arms: `FlushPolicy::SelfClocking` and `FlushPolicy::Adaptive` with a hold of at
//! most 100 µs and 1 ms, switched live on the same connection and pages, phases
//! interleaved A-B-C-C-B-A so drift hits every arm alike. Reports round-trip p50/p99,
//! throughput, frames per flush and the share of flushes held.
//!
//! `cargo bench --bench adaptive_batching` (`CDPMUX_BENCH_QUICK=1` for a short run).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use cdpmux::cdp::{Connection, ConnectionConfig, FlushPolicy, Page, PageOptions};
use cdpmux::sim::{Delay, SimBrowser, SimConfig};
use hdrhistogram::Histogram;
use serde_json::json;

const PAGE_COUNTS: [usize; 3] = [1, 16, 64];

fn quick() -> bool {
    std::env::var("CDPMUX_BENCH_QUICK").as_deref() == Ok("1")
}

struct Arm {
    name: &'static str,
    policy: FlushPolicy,
    latency: Histogram<u64>,
    calls: u64,
    busy: Duration,
    frames: u64,
    flushes: u64,
    held: u64,
}

impl Arm {
    fn new(name: &'static str, policy: FlushPolicy) -> Arm {
        Arm {
            name,
            policy,
            latency: Histogram::new(3).expect("histogram"),
            calls: 0,
            busy: Duration::ZERO,
            frames: 0,
            flushes: 0,
            held: 0,
        }
    }
}

/// Every page calls back to back for `phase`; returns calls made.
async fn phase(pages: &[Page], phase: Duration, latency: &Rc<RefCell<Histogram<u64>>>) -> u64 {
    let end = Instant::now() + phase;
    let workers = pages.iter().map(|page| {
        let latency = latency.clone();
        async move {
            let mut n = 0u64;
            while Instant::now() < end {
                let t = Instant::now();
                let reply = page
                    .call("Runtime.evaluate", json!({ "expression": "1+1" }))
                    .await
                    .expect("evaluate");
                assert_eq!(reply["result"]["value"], 2);
                latency
                    .borrow_mut()
                    .record(t.elapsed().as_micros() as u64)
                    .expect("in range");
                n += 1;
            }
            n
        }
    });
    futures_util::future::join_all(workers).await.iter().sum()
}

async fn measure(title: &str, sim: SimConfig) {
    let sim = SimBrowser::start(sim).expect("start the simulated browser");
    let (reps, len) = if quick() {
        (1, Duration::from_millis(300))
    } else {
        (3, Duration::from_secs(2))
    };
    println!(
        "\n{title}: Runtime.evaluate round trips on one connection; \
         {reps} x 2 phases of {len:?} per arm and page count\n"
    );
    println!(
        "{:>5}  {:<16} {:>10} {:>9} {:>9} {:>12} {:>7}",
        "pages", "arm", "calls/s", "p50 ms", "p99 ms", "frames/flush", "held"
    );
    for pages_n in PAGE_COUNTS {
        let conn = Connection::connect(sim.ws_url().as_str(), ConnectionConfig::default())
            .await
            .expect("connect");
        let mut pages = Vec::new();
        for _ in 0..pages_n {
            pages.push(
                conn.new_page(&PageOptions::default())
                    .await
                    .expect("open a page"),
            );
        }
        let mut arms = [
            Arm::new("self-clocking", FlushPolicy::SelfClocking),
            Arm::new(
                "adaptive 100us",
                FlushPolicy::adaptive(Duration::from_micros(100)),
            ),
            Arm::new(
                "adaptive 1ms",
                FlushPolicy::adaptive(Duration::from_millis(1)),
            ),
        ];
        // Warm up.
        let scratch = Rc::new(RefCell::new(Histogram::new(3).expect("histogram")));
        phase(&pages, len / 4, &scratch).await;
        let order: Vec<usize> = (0..arms.len()).chain((0..arms.len()).rev()).collect();
        for _ in 0..reps {
            for &i in &order {
                let arm = &mut arms[i];
                conn.set_flush_policy(arm.policy);
                let latency = Rc::new(RefCell::new(Histogram::new(3).expect("histogram")));
                let before = conn.stats();
                let started = Instant::now();
                arm.calls += phase(&pages, len, &latency).await;
                arm.busy += started.elapsed();
                let after = conn.stats();
                arm.frames += after.frames_out - before.frames_out;
                arm.flushes += after.flushes - before.flushes;
                arm.held += after.held_flushes - before.held_flushes;
                arm.latency.add(&*latency.borrow()).expect("same bounds");
            }
        }
        for arm in &arms {
            println!(
                "{:>5}  {:<16} {:>10.0} {:>9.3} {:>9.3} {:>12.2} {:>6.1}%",
                pages_n,
                arm.name,
                arm.calls as f64 / arm.busy.as_secs_f64(),
                arm.latency.value_at_quantile(0.5) as f64 / 1000.0,
                arm.latency.value_at_quantile(0.99) as f64 / 1000.0,
                arm.frames as f64 / arm.flushes.max(1) as f64,
                100.0 * arm.held as f64 / arm.flushes.max(1) as f64,
            );
        }
        conn.close();
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    tokio::task::LocalSet::new().block_on(&rt, async {
        measure("instant replies", SimConfig::default()).await;
        let jittered = SimConfig::default().with_reply_delay(Delay::Uniform(
            Duration::from_micros(200),
            Duration::from_millis(2),
        ));
        measure("replies in 0.2-2 ms", jittered).await;
    });
}
