//! Building a [`Pool`]: which browsers (launched or remote), how many shards, the
//! [`Config`], page options, hooks and identities; starting the shards and the sampler.

use std::sync::Arc as StdArc;

use crate::browser::{Endpoint, Launch};
use crate::cdp::{Page, PageOptions};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::fleet::Fleet;
use crate::handoff::Line;
use crate::hooks::{HookPoint, Hooks};
use crate::identity::ContextOptions;
use crate::router::LoadGauges;
use crate::scaler::{check_page_cap, Sampler, SamplerParts, ScaleStatus};
use crate::shard;
use crate::shard::msg::{Msg, Work};
use crate::steal::{Overflow, MAX_SHARDS};
use crate::sync::atomic::AtomicBool;
use crate::sync::{mpsc, Arc, LiveCell, Notify};

use super::{Inner, Pool};

/// Builds a [`Pool`]: which browsers, how many shards, and the [`Config`].
#[derive(Debug, Default)]
pub struct PoolBuilder {
    config: Config,
    shards: usize,
    pin_cores: bool,
    launches: Vec<Launch>,
    /// Parsed as given; a bad one fails the build.
    endpoints: Vec<Result<Endpoint>>,
    page_options: PageOptions,
    hooks: Hooks,
    context_options: Option<shard::Provider>,
}

impl PoolBuilder {
    /// Launches a local Chromium for the pool (may be called more than once).
    pub fn launch(mut self, launch: Launch) -> Self {
        self.launches.push(launch);
        self
    }

    /// Connects to a running browser: `ws(s)://host:port/devtools/browser/<id>` or
    /// `http(s)://host:port` (may be called more than once). Short for
    /// [`endpoint_with`](Self::endpoint_with)`(Endpoint::parse(url)?)`; a bad URL fails
    /// [`build`](Self::build).
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoints.push(Endpoint::parse(&url.into()));
        self
    }

    /// Connects to a running browser with the headers, TLS trust and page capacity set
    /// on `endpoint` (may be called more than once).
    ///
    /// ```
    /// # use cdpmux::browser::Endpoint;
    /// # fn f() -> cdpmux::Result<cdpmux::PoolBuilder> {
    /// Ok(cdpmux::Pool::builder()
    ///     .endpoint_with(Endpoint::parse("http://10.0.0.5:9222")?.capacity(16))
    ///     .endpoint_with(Endpoint::parse("wss://fleet.example/chrome?token=t")?.capacity(40)))
    /// # }
    /// ```
    pub fn endpoint_with(mut self, endpoint: Endpoint) -> Self {
        self.endpoints.push(Ok(endpoint));
        self
    }

    /// Number of shards (threads); 0 means one per available core. Default 0.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }

    /// Pins shard `i` to core `i` (modulo the core count). Default off.
    pub fn pin_cores(mut self, pin: bool) -> Self {
        self.pin_cores = pin;
        self
    }

    /// Most sessions per shard.
    pub fn sessions_per_shard(mut self, sessions: usize) -> Self {
        self.config.sessions_per_shard = sessions;
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Changes the configuration in place.
    pub fn configure(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(&mut self.config);
        self
    }

    /// How pages are opened (background tabs, domains to enable).
    pub fn page_options(mut self, options: PageOptions) -> Self {
        self.page_options = options;
        self
    }

    /// Runs `hook` once on each page the pool opens, before any job gets it: add init
    /// scripts (`Page.addScriptToEvaluateOnNewDocument`), set the viewport, user agent or
    /// extra headers. It runs on the shard that owns the page (its future need not be
    /// `Send`), within [`Config::create_timeout`](crate::Config).
    ///
    /// A page whose hook fails (or passes that deadline) is closed and another opened;
    /// no job is failed for it, until the hook has failed 3 times in a row for one
    /// opening: then the job waiting for that page fails with
    /// [`ErrorKind::Hook`]. Failures are counted in
    /// [`Counters::hook_failures_open`](crate::metrics::Counters).
    ///
    /// ```no_run
    /// # async fn demo() -> cdpmux::Result<()> {
    /// let pool = cdpmux::Pool::builder()
    ///     .launch(cdpmux::browser::Launch::default())
    ///     .on_page_open(async |page| {
    ///         let script = "window.__crawler = true";
    ///         page.call("Page.addScriptToEvaluateOnNewDocument",
    ///             serde_json::json!({ "source": script })).await?;
    ///         Ok(())
    ///     })
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn on_page_open<F>(mut self, hook: F) -> Self
    where
        F: AsyncFn(&Page) -> Result<()> + Send + Sync + 'static,
    {
        self.hooks.set(HookPoint::PageOpen, hook);
        self
    }

    /// Runs `hook` on the page before each [`Pool::run`] job (within the job's own
    /// deadline too) and before each [`Lease`] is granted, on the page's shard, within
    /// [`Config::create_timeout`](crate::Config).
    ///
    /// A failing hook retires the page and the job or `acquire`, which has not started,
    /// goes back in line for another page; after 3 failures in a row on a shard, the one
    /// whose hook failed last fails with [`ErrorKind::Hook`]. Counted in
    /// [`Counters::hook_failures_before`](crate::metrics::Counters). With this hook or
    /// [`after_job`](Self::after_job) set, a dropped lease always goes back through its
    /// shard (never straight to the next `acquire` caller).
    pub fn before_job<F>(mut self, hook: F) -> Self
    where
        F: AsyncFn(&Page) -> Result<()> + Send + Sync + 'static,
    {
        self.hooks.set(HookPoint::BeforeJob, hook);
        self
    }

    /// Runs `hook` on the page after each [`Pool::run`] job that ran to its end
    /// (succeeded or failed; not one cancelled or past its deadline) and after each
    /// [`Lease`] is dropped, before the page goes back to the pool, on the page's shard,
    /// within [`Config::create_timeout`](crate::Config). A failing hook retires the
    /// page; the job's result stands. Counted in
    /// [`Counters::hook_failures_after`](crate::metrics::Counters).
    pub fn after_job<F>(mut self, hook: F) -> Self
    where
        F: AsyncFn(&Page) -> Result<()> + Send + Sync + 'static,
    {
        self.hooks.set(HookPoint::AfterJob, hook);
        self
    }

    /// Gives each key its [`ContextOptions`] under
    /// [`Isolation::ContextPerKey`](crate::Isolation::ContextPerKey): `provider` is
    /// called on the shard with the key each time a page opens for a key that has no
    /// options of its own ([`Pool::set_context_options`]). It must be quick and must not
    /// block; a panic or invalid options fail that opening with
    /// [`ErrorKind::InvalidInput`].
    pub fn context_options(
        mut self,
        provider: impl Fn(&str) -> ContextOptions + Send + Sync + 'static,
    ) -> Self {
        self.context_options = Some(shard::Provider(StdArc::new(provider)));
        self
    }

    /// Validates the configuration, starts the browsers and the shards, and connects
    /// every shard to every browser.
    ///
    /// Remote browsers that do not answer yet do not fail the build as long as one
    /// browser does: they are retried with the reconnect backoff and join when they
    /// answer. With none answering the error names each browser and why.
    pub async fn build(self) -> Result<Pool> {
        self.config.validate()?;
        if self.launches.is_empty() && self.endpoints.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "no browser: call .launch(Launch::default()) or .endpoint(\"ws://...\") on the builder",
            ));
        }
        let shards = match self.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        if shards > MAX_SHARDS {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("at most {MAX_SHARDS} shards are supported (asked for {shards})"),
            ));
        }
        check_page_cap(&self.config, shards)?;
        let endpoints = self.endpoints.into_iter().collect::<Result<Vec<_>>>()?;
        check_capacities(&endpoints, self.launches.len(), shards)?;
        let mut launched = Vec::new();
        for l in &self.launches {
            let browser = l.launch().await?;
            launched.push((l.clone(), browser));
        }
        let endpoints = first_lookup(endpoints, !launched.is_empty(), &self.config).await?;
        let fleet = StdArc::new(Fleet::start(launched, endpoints)?);

        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..shards).map(|_| mpsc::unbounded_channel()).unzip();
        let inboxes: StdArc<[mpsc::UnboundedSender<Msg>]> = senders.into();
        let wakers: StdArc<[Notify]> = (0..shards).map(|_| Notify::new()).collect();
        let config = Arc::new(LiveCell::new(self.config));
        let overflow = Arc::new(Overflow::default());
        let lines: StdArc<[Arc<Line<Work>>]> = Line::family(shards).into();
        let broken: StdArc<[AtomicBool]> = (0..shards).map(|_| AtomicBool::new(false)).collect();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut threads = Vec::new();
        for (id, inbox) in receivers.into_iter().enumerate() {
            let shared = shard::Shared {
                config: config.clone(),
                overflow: overflow.clone(),
                wakers: wakers.clone(),
                inboxes: inboxes.clone(),
                fleet: fleet.clone(),
                page_options: self.page_options.clone(),
                hooks: self.hooks.clone(),
                lines: lines.clone(),
                broken: broken.clone(),
                context_options: self.context_options.clone(),
            };
            let pin = self.pin_cores.then_some(id % cores);
            threads.push(shard::spawn(id, shared, inbox, pin, ready_tx.clone())?);
        }
        drop(ready_tx);
        fleet.attach(crate::fleet::PoolView {
            config: config.clone(),
            inboxes: inboxes.clone(),
            recycled: crate::sync::atomic::AtomicU64::new(0),
        });
        let scale = StdArc::new(ScaleStatus::default());
        let writer = StdArc::new(std::sync::Mutex::new(()));
        let sampler = Sampler::start(SamplerParts {
            config: config.clone(),
            inboxes: inboxes.clone(),
            writer: writer.clone(),
            browsers: fleet.len(),
            fleet: fleet.clone(),
            status: scale.clone(),
        })
        .map_err(|e| Error::new(ErrorKind::Io, "starting the sampler thread").with_source(e))?;
        let inner = Inner {
            inboxes,
            config,
            gauges: LoadGauges::new(shards),
            lines,
            broken,
            threads: std::sync::Mutex::new(threads),
            fleet,
            overflow,
            closed: AtomicBool::new(false),
            drain: super::drain::DrainState::default(),
            scale,
            writer,
            sampler: std::sync::Mutex::new(Some(sampler)),
        };
        // Wait for every shard to connect; the first failure fails the build (and
        // dropping `inner` stops the shards that did start).
        let ready = tokio::task::spawn_blocking(move || {
            (0..shards).try_for_each(|_| {
                ready_rx.recv().unwrap_or_else(|_| {
                    Err(Error::new(
                        ErrorKind::BrowserUnavailable,
                        "a shard stopped while starting",
                    ))
                })
            })
        });
        match ready.await {
            Ok(Ok(())) => Ok(Pool {
                inner: StdArc::new(inner),
            }),
            Ok(Err(e)) => Err(e),
            Err(e) => {
                Err(Error::new(ErrorKind::Io, "waiting for the shards to start").with_source(e))
            }
        }
    }
}

/// Looks every remote endpoint up once, all at once: the shards start from these URLs
/// (one lookup per endpoint, not one per shard). Those that do not answer are looked up
/// again by each shard's reconnects; with none answering and no launched browser, the
/// build fails naming each endpoint and why.
async fn first_lookup(
    endpoints: Vec<Endpoint>,
    launched: bool,
    cfg: &Config,
) -> Result<Vec<(Endpoint, Option<String>)>> {
    let lookups = endpoints.iter().map(|e| e.resolve(cfg.create_timeout));
    let found = futures_util::future::join_all(lookups).await;
    if !launched && !endpoints.is_empty() && found.iter().all(Result::is_err) {
        let why: Vec<String> = endpoints
            .iter()
            .zip(&found)
            .filter_map(|(e, r)| r.as_ref().err().map(|err| format!("{e}: {err}")))
            .collect();
        return Err(Error::new(
            ErrorKind::BrowserUnavailable,
            format!(
                "no browser answered (at least one must): {}",
                why.join("; ")
            ),
        ));
    }
    Ok(endpoints
        .into_iter()
        .zip(found)
        .map(|(e, r)| (e, r.ok()))
        .collect())
}

/// Refuses a capacity of 0, and capacities too small to give every shard a page (each
/// shard holds a fixed share of each browser).
fn check_capacities(endpoints: &[Endpoint], launched: usize, shards: usize) -> Result<()> {
    if let Some(e) = endpoints.iter().find(|e| e.page_capacity() == Some(0)) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("endpoint {e} has capacity 0: give it at least one page, or no capacity"),
        ));
    }
    if launched > 0 || endpoints.iter().any(|e| e.page_capacity().is_none()) {
        return Ok(()); // some browser is unlimited
    }
    let starved = (0..shards).find(|&shard| {
        endpoints.iter().enumerate().all(|(b, e)| {
            let capacity = e.page_capacity().unwrap_or(0);
            crate::shard::capacity_share(capacity, launched + b, shard, shards) == 0
        })
    });
    match starved {
        Some(shard) => {
            let total: usize = endpoints.iter().filter_map(Endpoint::page_capacity).sum();
            Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "the endpoints' capacities ({total} pages in all) leave shard {shard} of \
                     {shards} without a page: each shard holds a share of each browser, so \
                     raise the capacities or use fewer shards"
                ),
            ))
        }
        None => Ok(()),
    }
}
