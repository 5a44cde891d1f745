//! The sampler: one thread per pool that, on a timer, reads the machine's CPU (all of it,
//! and our own part: the launched browsers' process trees and this process), memory, and
//! the shards' queues and pages served, asks `autoscale::decide` for a target, and
//! publishes it as the live `sessions_per_shard`; it also raises the low-memory refusal
//! flag.
//!
//! A pool with no launched browser (remote endpoints only) cannot tell its browsers'
//! CPU from anyone else's: there the outside share is taken as 0, so all the machine's
//! use counts as our own and a saturated machine is climbed on throughput, never shrunk
//! for contention.
//!
//! Owns that thread and the pool-level scaling status (atomics the pool reads for
//! metrics and for the refusal check). Never on a request's path: a request reads one
//! atomic flag; sampling happens once per interval, never per job. Never holds a shard's
//! state: the shards' counts arrive by the same `Metrics` message `Pool::metrics` sends,
//! and the target reaches them as configuration (`Reconfigured`), which they apply by
//! opening up to it or retiring idle pages down to it.

use std::sync::Arc as StdArc;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::autoscale::{decide, Bounds, Sample, ScaleReason, ScaleState};
use crate::config::Config;
use crate::error::{Error, ErrorKind};
use crate::fleet::Fleet;
use crate::metrics::Snapshot;
use crate::resources::{memory_in_use, CpuMeter, OwnCpuMeter};
use crate::shard::msg::Msg;
use crate::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::sync::{mpsc, oneshot, Arc, LiveCell};

/// How often memory is sampled for the refusal when autoscaling is off.
const MEMORY_INTERVAL: Duration = Duration::from_secs(1);

/// What the sampler last saw and did; read by the pool.
pub(crate) struct ScaleStatus {
    target: AtomicUsize,
    reason: AtomicUsize,
    ups: AtomicU64,
    downs: AtomicU64,
    /// Memory in use per thousand, as last sampled.
    memory_permille: AtomicU64,
    /// A test's memory reading per thousand, plus one (0: read the machine).
    memory_override: AtomicU64,
    /// A test's CPU reading per thousand, plus one (0: read the machine).
    cpu_override: AtomicU64,
    /// A test's outside-CPU reading per thousand, plus one (0: measure it).
    outside_override: AtomicU64,
    /// New requests are refused (memory critically low).
    refusing: AtomicBool,
    refused: AtomicU64,
}

impl Default for ScaleStatus {
    fn default() -> Self {
        ScaleStatus {
            target: AtomicUsize::new(0),
            reason: AtomicUsize::new(0),
            ups: AtomicU64::new(0),
            downs: AtomicU64::new(0),
            memory_permille: AtomicU64::new(0),
            memory_override: AtomicU64::new(0),
            cpu_override: AtomicU64::new(0),
            outside_override: AtomicU64::new(0),
            refusing: AtomicBool::new(false),
            refused: AtomicU64::new(0),
        }
    }
}

impl ScaleStatus {
    /// `Err(Overloaded)` while memory is critically low: one atomic load per request.
    pub(crate) fn admit(&self, cfg: &LiveCell<Config>) -> Result<(), Error> {
        if !self.refusing.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        let limit = cfg.load().memory_refuse_above;
        Err(Error::new(
            ErrorKind::Overloaded,
            format!(
                "memory is critically low ({:.1}% in use, refusing at {:.1}%): new pages could crash the browser; back off and retry, lower the load, or raise memory_refuse_above",
                self.memory_permille.load(Ordering::Relaxed) as f64 / 10.0,
                limit * 100.0
            ),
        ))
    }

    /// Records a memory reading and raises or lowers the refusal.
    fn memory(&self, share: Option<f64>, cfg: &Config) {
        let forced = self.memory_override.load(Ordering::Relaxed);
        let share = if forced > 0 {
            Some((forced - 1) as f64 / 1000.0)
        } else {
            share
        };
        let Some(share) = share else {
            self.refusing.store(false, Ordering::Relaxed);
            return;
        };
        self.memory_permille
            .store((share * 1000.0).round() as u64, Ordering::Relaxed);
        let refuse = cfg.memory_refuse_above > 0.0 && share >= cfg.memory_refuse_above;
        self.refusing.store(refuse, Ordering::Relaxed);
    }

    /// Test hook: from now on memory reads as `share` (`None`: the machine again), and
    /// the refusal follows at once.
    pub(crate) fn force_memory(&self, share: Option<f64>, cfg: &Config) {
        let v = share.map_or(0, |s| (s.clamp(0.0, 1.0) * 1000.0).round() as u64 + 1);
        self.memory_override.store(v, Ordering::Relaxed);
        self.memory(share.or_else(memory_in_use), cfg);
    }

    /// Test hook: from now on the CPU reads as `share` (`None`: the machine again).
    pub(crate) fn force_cpu(&self, share: Option<f64>) {
        let v = share.map_or(0, |s| (s.max(0.0) * 1000.0).round() as u64 + 1);
        self.cpu_override.store(v, Ordering::Relaxed);
    }

    /// Test hook: from now on the CPU used by work outside the pool reads as `share`
    /// (`None`: measure it again).
    pub(crate) fn force_outside(&self, share: Option<f64>) {
        let v = share.map_or(0, |s| (s.max(0.0) * 1000.0).round() as u64 + 1);
        self.outside_override.store(v, Ordering::Relaxed);
    }

    /// `measured`, unless a test forced the CPU reading.
    fn cpu_share(&self, measured: f64) -> f64 {
        forced(&self.cpu_override).unwrap_or(measured)
    }

    /// `measured`, unless a test forced the outside reading.
    fn outside_share(&self, measured: f64) -> f64 {
        forced(&self.outside_override).unwrap_or(measured)
    }

    /// The memory share the sampler would use now (the forced one, if any).
    fn memory_share(&self) -> Option<f64> {
        match self.memory_override.load(Ordering::Relaxed) {
            0 => memory_in_use(),
            v => Some((v - 1) as f64 / 1000.0),
        }
    }

    fn set(&self, target: usize, reason: ScaleReason) {
        let before = self.target.swap(target, Ordering::Relaxed);
        let index = ScaleReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.reason.store(index, Ordering::Relaxed);
        if before != 0 && target > before {
            self.ups.fetch_add(1, Ordering::Relaxed);
        } else if before != 0 && target < before {
            self.downs.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes the pool-level rows of `snap`.
    pub(crate) fn fill(&self, snap: &mut Snapshot, cfg: &Config) {
        let g = &mut snap.gauges;
        let target = match self.target.load(Ordering::Relaxed) {
            0 => cfg.sessions_per_shard,
            t => t,
        };
        g.sessions_target = target as u64;
        let reason = ScaleReason::ALL[self.reason.load(Ordering::Relaxed) % ScaleReason::ALL.len()];
        let one = |r| u64::from(reason == r);
        g.reason_start = one(ScaleReason::Start);
        g.reason_waiting = one(ScaleReason::Waiting);
        g.reason_cpu = one(ScaleReason::Cpu);
        g.reason_memory = one(ScaleReason::Memory);
        g.reason_idle = one(ScaleReason::Idle);
        g.reason_limit = one(ScaleReason::Limit);
        g.reason_plateau = one(ScaleReason::Plateau);
        g.memory_permille = self.memory_permille.load(Ordering::Relaxed);
        let c = &mut snap.counters;
        c.scale_ups = self.ups.load(Ordering::Relaxed);
        c.scale_downs = self.downs.load(Ordering::Relaxed);
        c.overloaded = self.refused.load(Ordering::Relaxed);
    }
}

/// A forced reading (per thousand, plus one; 0 for none).
fn forced(cell: &AtomicU64) -> Option<f64> {
    match cell.load(Ordering::Relaxed) {
        0 => None,
        v => Some((v - 1) as f64 / 1000.0),
    }
}

/// What the sampler thread works with.
pub(crate) struct SamplerParts {
    pub(crate) config: Arc<LiveCell<Config>>,
    pub(crate) inboxes: StdArc<[mpsc::UnboundedSender<Msg>]>,
    /// Taken by every writer of the live configuration (`reconfigure` and the sampler),
    /// so neither loses the other's change. Never taken on a request's path.
    pub(crate) writer: StdArc<Mutex<()>>,
    pub(crate) browsers: usize,
    /// For the launched browsers' pids (their process trees are our own CPU use).
    pub(crate) fleet: StdArc<Fleet>,
    pub(crate) status: StdArc<ScaleStatus>,
}

/// The sampler thread's handle: stopped and joined on drop.
pub(crate) struct Sampler {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    pub(crate) fn start(parts: SamplerParts) -> std::io::Result<Sampler> {
        let (stop, stopped) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("cdpmux-sampler".into())
            .spawn(move || sample_loop(parts, stopped))?;
        Ok(Sampler {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Every interval until stopped: sample, decide, publish.
fn sample_loop(parts: SamplerParts, stopped: std::sync::mpsc::Receiver<()>) {
    // Only to wait for the shards' replies (the same channels the pool awaits).
    let rt = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "sampler runtime failed; no autoscaling or memory refusal");
            return;
        }
    };
    let mut cpu = CpuMeter::new();
    let mut own = OwnCpuMeter::new();
    let mut state: Option<ScaleState> = None;
    // Pages served so far, and when: throughput is the difference between samples.
    let mut served: Option<(std::time::Instant, u64)> = None;
    loop {
        let cfg = parts.config.load();
        let interval = cfg
            .autoscale
            .as_ref()
            .map_or(MEMORY_INTERVAL, |a| a.interval);
        match stopped.recv_timeout(interval) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let cfg = parts.config.load();
        let memory = parts.status.memory_share();
        parts.status.memory(memory, &cfg);
        let Some(auto) = cfg.autoscale.clone() else {
            state = None;
            served = None;
            parts.status.set(cfg.sessions_per_shard, ScaleReason::Start);
            continue;
        };
        // Read the two CPU figures back to back, so they cover the same interval.
        let machine = cpu.sample();
        let pids = parts.fleet.pids();
        let own_share = own.sample(&pids);
        let outside = if pids.is_empty() {
            0.0 // remote browsers only: all of the machine counts as ours (module header)
        } else {
            (machine - own_share).max(0.0)
        };
        let Some(queue) = rt.block_on(queue(&parts.inboxes)) else {
            return; // the shards are gone
        };
        let now = std::time::Instant::now();
        let Some((at, before)) = served.replace((now, queue.served)) else {
            // The first sample since autoscaling came on only sets the meters' baselines:
            // rates over an unknown span would mislead the rule.
            continue;
        };
        let wall = now.duration_since(at).as_secs_f64().max(1e-6);
        let rate = queue.served.saturating_sub(before) as f64 / wall;
        let bounds = Bounds::of(&auto, parts.inboxes.len(), parts.browsers, cfg.max_pages);
        let sample = Sample {
            cpu: parts.status.cpu_share(machine),
            outside: parts.status.outside_share(outside),
            served: rate,
            memory,
            waiting: queue.waiting,
            busy: queue.busy,
        };
        let before = state.unwrap_or_else(|| ScaleState::start(cfg.sessions_per_shard, bounds));
        let next = decide(&sample, &before, &auto, bounds);
        tracing::trace!(?sample, target = next.target, reason = ?next.reason, "autoscale sample");
        if next.target != cfg.sessions_per_shard {
            publish(&parts, next.target);
        }
        if state.is_none() || next.target != before.target {
            parts.status.set(next.target, next.reason);
        }
        state = Some(next);
    }
}

/// What the shards report to the sampler, summed over the pool.
struct Queue {
    /// Requests waiting for a session.
    waiting: usize,
    /// Sessions in use.
    busy: usize,
    /// Pages handed out so far, to `run` jobs and leases (opened or reused), a running
    /// total: the sampler's throughput is its growth.
    served: u64,
}

/// The shards' counts over the whole pool; `None` once no shard answers. The same
/// message `Pool::metrics` sends, once per interval, so it costs no job anything.
async fn queue(inboxes: &[mpsc::UnboundedSender<Msg>]) -> Option<Queue> {
    let mut replies = Vec::new();
    for inbox in inboxes {
        let (tx, rx) = oneshot::channel();
        if inbox.send(Msg::Metrics(tx)).is_ok() {
            replies.push(rx);
        }
    }
    let mut sum = Queue {
        waiting: 0,
        busy: 0,
        served: 0,
    };
    let mut answered = false;
    for rx in replies {
        if let Ok(r) = rx.await {
            sum.waiting += r.gauges.waiting as usize;
            sum.busy += r.gauges.busy as usize;
            let c = &r.metrics.counters;
            sum.served += c.sessions_reused + c.sessions_created;
            answered = true;
        }
    }
    answered.then_some(sum)
}

/// Makes `target` the live `sessions_per_shard`, unless autoscaling was turned off
/// meanwhile or the value does not fit the rest of the configuration.
fn publish(parts: &SamplerParts, target: usize) {
    let _writer = parts.writer.lock().unwrap_or_else(|e| e.into_inner());
    let mut next = (*parts.config.load()).clone();
    if next.autoscale.is_none() || next.sessions_per_shard == target {
        return;
    }
    next.sessions_per_shard = target;
    if let Err(e) = next.validate() {
        tracing::warn!(error = %e, target, "autoscale target does not fit the configuration; kept the size");
        return;
    }
    tracing::debug!(target, "autoscale: new sessions per shard");
    crate::live_config::publish_config(&parts.config, &parts.inboxes, next);
}

/// With a fixed size, the pool-wide page cap: `sessions_per_shard` × `shards` must fit.
pub(crate) fn check_page_cap(cfg: &Config, shards: usize) -> crate::Result<()> {
    let pages = cfg.sessions_per_shard.saturating_mul(shards);
    if cfg.max_pages > 0 && cfg.autoscale.is_none() && pages > cfg.max_pages {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "sessions_per_shard ({}) × {shards} shards = {pages} pages passes max_pages ({}): lower sessions_per_shard or raise max_pages",
                cfg.sessions_per_shard, cfg.max_pages
            ),
        ));
    }
    if cfg.max_pages > 0 && cfg.max_pages < shards {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "max_pages ({}) is below the shard count ({shards}): every shard needs a page",
                cfg.max_pages
            ),
        ));
    }
    Ok(())
}
