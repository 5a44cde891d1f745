//! The browsers a pool uses: where each one listens now (a launched browser's URL, a
//! remote one's endpoint, looked up again on every connect), each one's page capacity,
//! and a supervisor thread that relaunches the pool's own browsers when they die.
//!
//! Owns the launched browser processes (and so their reaping). Never blocks a shard:
//! shards read a browser's current URL and ask for a relaunch by message.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::browser::{Endpoint, Launch, LaunchedBrowser};
use crate::config::Config;
use crate::error::Result;
use crate::recycle::due;
use crate::remote::Dial;
use crate::shard::msg::Msg;
use crate::sync::LiveCell;

/// One browser as the shards see it.
pub(crate) struct BrowserEntry {
    /// Where a launched browser listens now (unused for a remote one).
    url: LiveCell<String>,
    /// A remote browser's address: resolved again on every connect.
    endpoint: Option<Endpoint>,
    /// What the build resolved a remote endpoint to, for each shard's first attempt
    /// (so a pool's start asks `/json/version` once, not once per shard).
    first_url: Option<String>,
    /// Bumped on every relaunch, so a stale relaunch request is ignored.
    pub(crate) generation: AtomicU64,
    /// Pid of the launched process; 0 for remote endpoints.
    pub(crate) pid: AtomicU32,
    /// Pages opened on this generation, for recycling (see `recycle.rs`).
    pub(crate) opened: AtomicU64,
    /// Shards done with the generation being drained, for recycling.
    pub(crate) drained: AtomicU64,
}

impl BrowserEntry {
    /// Points the shards at a replacement process: a new URL, pid and generation.
    pub(crate) fn replace(&self, url: &str, pid: u32) {
        self.url.store(url.to_owned());
        self.pid.store(pid, Ordering::Release);
        self.opened.store(0, Ordering::Relaxed);
        self.drained.store(0, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

enum SupervisorMsg {
    Relaunch { browser: usize, generation: u64 },
    Shutdown(oneshot::Sender<Result<()>>),
}

/// Every browser of a pool, plus the supervisor of the launched ones.
pub(crate) struct Fleet {
    entries: Arc<[BrowserEntry]>,
    supervisor: mpsc::UnboundedSender<SupervisorMsg>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Set once the shards exist (recycling needs them).
    pool: Arc<OnceLock<PoolView>>,
}

impl Fleet {
    /// `launched` come first (index = position), then the remote `endpoints`, each with
    /// the URL the build resolved it to, if it answered.
    pub(crate) fn start(
        launched: Vec<(Launch, LaunchedBrowser)>,
        endpoints: Vec<(Endpoint, Option<String>)>,
    ) -> std::io::Result<Fleet> {
        let entries: Arc<[BrowserEntry]> = launched
            .iter()
            .map(|(_, b)| (b.ws_url().to_owned(), None, b.pid()))
            .chain(
                endpoints
                    .into_iter()
                    .map(|(e, first)| (String::new(), Some((e, first)), 0)),
            )
            .map(|(url, remote, pid)| BrowserEntry {
                url: LiveCell::new(url),
                first_url: remote.as_ref().and_then(|(_, first)| first.clone()),
                endpoint: remote.map(|(e, _)| e),
                generation: AtomicU64::new(0),
                pid: AtomicU32::new(pid),
                opened: AtomicU64::new(0),
                drained: AtomicU64::new(0),
            })
            .collect();
        let (tx, rx) = mpsc::unbounded_channel();
        let view = entries.clone();
        let pool = Arc::new(OnceLock::new());
        let attached = pool.clone();
        let thread = std::thread::Builder::new()
            .name("cdpmux-supervisor".into())
            .spawn(move || supervise(view, launched, rx, attached))?;
        Ok(Fleet {
            entries,
            supervisor: tx,
            thread: Mutex::new(Some(thread)),
            pool,
        })
    }

    /// Gives the supervisor what recycling needs: the live configuration, and the shards
    /// to tell when a browser is replaced. Called once, when the shards exist.
    pub(crate) fn attach(&self, pool: PoolView) {
        let _ = self.pool.set(pool);
    }

    /// A page was opened on browser `i`.
    pub(crate) fn page_opened(&self, i: usize) {
        self.entries[i].opened.fetch_add(1, Ordering::Relaxed);
    }

    /// A shard has let go of browser `i`'s old `generation` (it is being recycled).
    pub(crate) fn drained(&self, i: usize, generation: u64) {
        let e = &self.entries[i];
        if e.generation.load(Ordering::Acquire) == generation + 1 {
            e.drained.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Browsers recycled so far.
    pub(crate) fn recycled(&self) -> u64 {
        self.pool
            .get()
            .map_or(0, |p| p.recycled.load(Ordering::Relaxed))
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Browser `i`'s generation (bumped by each relaunch).
    pub(crate) fn generation(&self, i: usize) -> u64 {
        self.entries[i].generation.load(Ordering::Acquire)
    }

    /// How to reach browser `i` now, and its generation: a launched browser's current
    /// URL, or a remote endpoint looked up again (within `timeout`), since a restarted
    /// remote browser has a new id. A shard's `first` attempt uses what the build
    /// resolved, if anything. Cancel safe.
    pub(crate) async fn dial(
        &self,
        i: usize,
        timeout: Duration,
        first: bool,
    ) -> Result<(Dial, u64)> {
        let e = &self.entries[i];
        let generation = e.generation.load(Ordering::Acquire);
        match (&e.endpoint, &e.first_url) {
            (Some(endpoint), Some(url)) if first => Ok((endpoint.dial(url.clone()), generation)),
            (Some(endpoint), _) => {
                Ok((endpoint.dial(endpoint.resolve(timeout).await?), generation))
            }
            (None, _) => Ok((Dial::url(&e.url.load()), generation)),
        }
    }

    /// Browser `i` for messages: its endpoint (secrets hidden), or "launched browser i".
    pub(crate) fn name(&self, i: usize) -> String {
        match &self.entries[i].endpoint {
            Some(endpoint) => endpoint.to_string(),
            None => format!("launched browser {i}"),
        }
    }

    /// Browser `i`'s page capacity for the whole pool; `None`: unlimited.
    pub(crate) fn capacity(&self, i: usize) -> Option<usize> {
        self.entries[i]
            .endpoint
            .as_ref()
            .and_then(Endpoint::page_capacity)
    }

    /// Asks for browser `i` to be relaunched if the pool launched it and it is no
    /// longer running. `generation` is the one the caller failed to reach.
    pub(crate) fn request_relaunch(&self, i: usize, generation: u64) {
        let _ = self.supervisor.send(SupervisorMsg::Relaunch {
            browser: i,
            generation,
        });
    }

    /// Pids of the launched browsers (as of their latest launch).
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.entries
            .iter()
            .map(|e| e.pid.load(Ordering::Acquire))
            .filter(|p| *p != 0)
            .collect()
    }

    /// Stops the launched browsers (kill, reap, remove profiles) and the supervisor.
    pub(crate) async fn shutdown(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        if self.supervisor.send(SupervisorMsg::Shutdown(tx)).is_err() {
            return Ok(());
        }
        let result = rx.await.unwrap_or(Ok(()));
        let thread = lock(&self.thread).take();
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        result
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // Without shutdown: the supervisor's exit drops (kills and reaps) the browsers.
        let (tx, _rx) = oneshot::channel();
        let _ = self.supervisor.send(SupervisorMsg::Shutdown(tx));
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The supervisor thread: relaunches dead launched browsers on request; stops them all
/// on shutdown (or when the fleet is dropped).
fn supervise(
    entries: Arc<[BrowserEntry]>,
    mut launched: Vec<(Launch, LaunchedBrowser)>,
    mut rx: mpsc::UnboundedReceiver<SupervisorMsg>,
    pool: Arc<OnceLock<PoolView>>,
) {
    let mut recycling = Recycling::new(launched.len());
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "supervisor runtime failed; launched browsers are only reaped at exit");
            return;
        }
    };
    rt.block_on(async {
        loop {
            let msg = tokio::select! {
                msg = rx.recv() => msg,
                _ = tokio::time::sleep(recycling.tick()) => {
                    if let Some(pool) = pool.get() {
                        recycling.round(&entries, &mut launched, pool).await;
                    }
                    continue;
                }
            };
            let Some(msg) = msg else { break };
            match msg {
                SupervisorMsg::Relaunch {
                    browser,
                    generation,
                } => {
                    let Some((launch, running)) = launched.get_mut(browser) else {
                        continue; // a remote endpoint: nothing to relaunch
                    };
                    let entry = &entries[browser];
                    if entry.generation.load(Ordering::Acquire) != generation
                        || running.is_running()
                    {
                        continue; // already relaunched, or alive (a socket hiccup)
                    }
                    tracing::warn!(browser, pid = running.pid(), "launched browser exited; relaunching");
                    match launch.launch().await {
                        Ok(fresh) => {
                            let dead = std::mem::replace(running, fresh);
                            drop(dead); // reaps it and removes its profile
                            entry.replace(running.ws_url(), running.pid());
                            recycling.restarted(browser);
                        }
                        Err(e) => {
                            tracing::error!(browser, error = %e, "relaunch failed; will retry on the next request")
                        }
                    }
                }
                SupervisorMsg::Shutdown(done) => {
                    recycling.stop_all().await;
                    let mut result = Ok(());
                    for (_, b) in launched.drain(..) {
                        if let Err(e) = b.shutdown().await {
                            result = Err(e);
                        }
                    }
                    let _ = done.send(result);
                    return;
                }
            }
        }
    });
    // Dropped without a shutdown message: drop kills and reaps.
    launched.clear();
    drop(recycling);
}

// ---- recycling: the supervisor's side (the rule is `recycle::due`) ---------------------

/// How often the supervisor looks at its browsers.
const ROUND: Duration = Duration::from_millis(250);

/// What the supervisor needs of the pool to recycle: set once the shards exist.
pub(crate) struct PoolView {
    pub(crate) config: crate::sync::Arc<LiveCell<Config>>,
    pub(crate) inboxes: Arc<[crate::sync::mpsc::UnboundedSender<Msg>]>,
    /// Browsers recycled so far (a metric).
    pub(crate) recycled: crate::sync::atomic::AtomicU64,
}

/// A replaced browser, kept running while the shards drain it.
struct Old {
    browser: usize,
    process: LaunchedBrowser,
    /// Stopped at this point even if some shard still uses it.
    until: Instant,
}

/// The supervisor's recycling state.
pub(crate) struct Recycling {
    /// When each launched browser's current process started.
    started: Vec<Instant>,
    draining: Vec<Old>,
}

impl Recycling {
    pub(crate) fn new(launched: usize) -> Self {
        Recycling {
            started: vec![Instant::now(); launched],
            draining: Vec::new(),
        }
    }

    /// How long until the next round.
    pub(crate) fn tick(&self) -> Duration {
        ROUND
    }

    /// Browser `i` was relaunched after a crash: its age starts over.
    pub(crate) fn restarted(&mut self, i: usize) {
        if let Some(s) = self.started.get_mut(i) {
            *s = Instant::now();
        }
    }

    /// One round: reaps the old browsers every shard has let go of (or whose drain
    /// deadline passed), then replaces the browsers that are due.
    pub(crate) async fn round(
        &mut self,
        entries: &[BrowserEntry],
        launched: &mut [(Launch, LaunchedBrowser)],
        pool: &PoolView,
    ) {
        let now = Instant::now();
        let shards = pool.inboxes.len() as u64;
        let mut i = 0;
        while i < self.draining.len() {
            let old = &self.draining[i];
            let done = entries[old.browser].drained.load(Ordering::Acquire) >= shards;
            if done || now >= old.until {
                let old = self.draining.swap_remove(i);
                if !done {
                    tracing::warn!(
                        browser = old.browser,
                        "a recycled browser's drain timed out; stopping it with jobs still on it"
                    );
                }
                if let Err(e) = old.process.shutdown().await {
                    tracing::warn!(error = %e, "stopping a recycled browser");
                }
            } else {
                i += 1;
            }
        }
        let cfg = pool.config.load();
        let r = &cfg.recycle;
        if !r.is_on() {
            return;
        }
        for (b, (launch, running)) in launched.iter_mut().enumerate() {
            if self.draining.iter().any(|o| o.browser == b) {
                continue; // one drain at a time per browser
            }
            let entry = &entries[b];
            let rss = (r.rss_above > 0)
                .then(|| crate::resources::tree_rss(running.pid()))
                .flatten();
            let age = now.saturating_duration_since(self.started[b]);
            let Some(reason) = due(r, entry.opened.load(Ordering::Relaxed), age, rss) else {
                continue;
            };
            tracing::info!(
                browser = b,
                ?reason,
                pid = running.pid(),
                "recycling a browser: starting its replacement"
            );
            match launch.launch().await {
                Ok(fresh) => {
                    let old = std::mem::replace(running, fresh);
                    entry.replace(running.ws_url(), running.pid());
                    self.started[b] = Instant::now();
                    pool.recycled.fetch_add(1, Ordering::Relaxed);
                    self.draining.push(Old {
                        browser: b,
                        process: old,
                        until: Instant::now() + r.drain_timeout,
                    });
                    // Each shard moves its socket to the old process into its drain and
                    // retires the idle pages on it.
                    for inbox in pool.inboxes.iter() {
                        let _ = inbox.send(Msg::Reconfigured);
                    }
                }
                Err(e) => {
                    tracing::error!(browser = b, error = %e, "could not start a replacement; the browser stays in service")
                }
            }
        }
    }

    /// Stops every browser still draining (shutdown).
    pub(crate) async fn stop_all(&mut self) {
        for old in self.draining.drain(..) {
            let _ = old.process.shutdown().await;
        }
    }
}
