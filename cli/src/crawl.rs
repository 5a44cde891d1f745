//! `cdpmux crawl`: feeds URLs to a pool, writes one JSON line per page, follows links,
//! shows progress, and ends with a summary.
//!
//! One coordinator task owns the frontier, the output and the statistics; page jobs run
//! on the pool's shards and only send their results back. The number of jobs in flight
//! is bounded by `--concurrency`, and input is read only as fast as the crawl needs it,
//! so memory stays flat on long URL lists.
//!
//! Stopping: the first SIGINT/SIGTERM or output error stops new pages and link following
//! at once; pages in flight get [`SHUTDOWN_GRACE`] after a signal (none after an output
//! error) and are then cancelled. Every page started gets exactly one line. The output
//! file is created only once the pool is up. Exit codes are in `docs/cli.md`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdpmux::cdp::PageOptions;
use cdpmux::sim::{DemoSite, SiteConfig};
use cdpmux::{Affinity, Blocking, GotoOptions, Job, Pool};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;
use tokio::task::{self, JoinError, JoinSet};

use crate::args::{AffinityArg, CrawlArgs, IsolationArg, MetricsFormat};
use crate::browser::{BrowserSetup, Fatal};
use crate::content;
use crate::frontier::{Frontier, Limits, Offer};
use crate::metrics_http;
use crate::probe::{PageData, Probe, VisitError, Wanted};
use crate::record::{PageRecord, Screenshot, CANCELLED};
use crate::robots::Robots;
use crate::stats::CrawlStats;
use crate::stop::{Stop, StopSignal};

/// How long pages in flight get to finish after the first stop signal, and running jobs
/// when the pool shuts down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often progress lines are printed when stderr is not a terminal.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// Input lines buffered between the reader thread and the crawl.
const INPUT_BUFFER: usize = 1024;

/// Where the URLs come from.
enum Input {
    Demo,
    File(File),
    Stdin,
}

/// Runs `cdpmux crawl`. `stop` delivers SIGINT and SIGTERM, from before the pool exists.
pub async fn run(args: CrawlArgs, mut stop: Stop) -> Result<(), Fatal> {
    // Cheap checks first: bad input or output paths and a missing browser fail before
    // anything starts, and before the output file is touched.
    if args.isolation == IsolationArg::PerKey && args.affinity == AffinityArg::None {
        return Err(Fatal::usage(
            "--isolation per-key gives each affinity key its own browser context: add \
             --affinity host (or sticky-host)",
        ));
    }
    let input = open_input(&args)?;
    check_output(args.output.as_deref(), &input)?;
    let setup = BrowserSetup::prepare(&args.browser_args())?;
    if let Some(dir) = &args.save_html {
        content::prepare_dir(dir, "--save-html").map_err(Fatal::usage)?;
    }
    if let Some(dir) = &args.screenshot {
        content::prepare_dir(dir, "--screenshot").map_err(Fatal::usage)?;
    }
    let reports = Reports {
        to_stdout: args.output.is_some(),
    };

    let site = match input {
        Input::Demo => Some(
            DemoSite::start(SiteConfig {
                pages: args.demo_pages as usize,
                ..SiteConfig::default()
            })
            .map_err(|e| Fatal::failed(format!("could not start the demo site: {e}")))?,
        ),
        _ => None,
    };

    let concurrency = args.concurrency as usize;
    let (isolation, reset) = (args.isolation.into(), args.reset.into());
    let politeness = args.politeness();
    let page_options = PageOptions {
        block: Blocking::none().resources(args.blocked()),
        ..PageOptions::default()
    };
    let building = setup
        .apply(Pool::builder())
        .page_options(page_options)
        .shards(args.browser.shards)
        .sessions_per_shard(args.sessions as usize)
        .configure(|c| {
            c.isolation = isolation;
            c.reset = reset;
            c.politeness = politeness;
            // The crawl bounds what is in flight; the queue must hold all of it.
            c.max_queue = c.max_queue.max(concurrency);
        })
        .build();
    let pool = tokio::select! {
        pool = building => pool?,
        signal = stop.recv() => return Err(signal.fatal("before the crawl started")),
    };

    // The crawl can start: only now is the output created (or truncated).
    let mut out = match open_output(args.output.as_deref()) {
        Ok(out) => out,
        Err(fatal) => {
            let _ = pool.shutdown(SHUTDOWN_GRACE).await;
            return Err(fatal);
        }
    };

    let metrics_server = match args.metrics_addr {
        Some(addr) => {
            let listener = metrics_http::bind(addr)
                .await
                .map_err(|e| Fatal::failed(format!("could not serve metrics on {addr}: {e}")))?;
            let bound = listener.local_addr().unwrap_or(addr);
            eprintln!("cdpmux: metrics at http://{bound}/metrics");
            let pool = pool.clone();
            Some(tokio::spawn(metrics_http::serve(listener, move || {
                let pool = pool.clone();
                async move { pool.metrics().await.to_prometheus() }
            })))
        }
        None => None,
    };

    if !args.quiet {
        let source = match &site {
            Some(site) => format!(
                "the demo site at {} ({} pages)",
                site.base_url(),
                site.config().pages
            ),
            None => match &args.input {
                Some(path) if path.as_os_str() != "-" => path.display().to_string(),
                _ => "stdin".to_owned(),
            },
        };
        eprintln!(
            "cdpmux: crawling {source} with {}: {} shards x {} sessions, concurrency {concurrency}",
            setup.description,
            pool.shards(),
            args.sessions
        );
    }

    let (tx, rx) = mpsc::channel(INPUT_BUFFER);
    let mut frontier = Frontier::new(Limits {
        max_depth: args.depth,
        budget: args.max_pages,
        follow: args.follow.into(),
        max_queued: args.max_frontier,
        links_per_page: args.max_links_per_page,
    });
    let mut crawl = Crawl {
        pool: pool.clone(),
        probe: setup.probe,
        args: &args,
        stats: CrawlStats::default(),
        out_error: None,
        signal: None,
        robots: args
            .robots
            .then(|| Arc::new(Robots::new(politeness, args.timeout))),
        disallowed: 0,
    };
    match input {
        Input::Demo => {
            drop(tx);
            for url in site.as_ref().map(|s| s.page_urls()).unwrap_or_default() {
                crawl.offer_seed(&mut frontier, &url, &mut out);
            }
        }
        Input::File(file) => spawn_reader(Box::new(BufReader::new(file)), tx)?,
        Input::Stdin => spawn_reader(Box::new(BufReader::new(io::stdin())), tx)?,
    }

    let started = Instant::now();
    let progress = Progress::new(args.quiet);
    crawl
        .drive(&mut frontier, rx, &mut out, &progress, started, &mut stop)
        .await;
    progress.finish();
    let elapsed = started.elapsed();
    if crawl.out_error.is_none() {
        if let Err(e) = out.flush() {
            crawl.out_error = Some(e);
        }
    }
    // A reader that closed stdout (`| head`) wanted no more: end quietly, like Unix
    // tools, without a summary nobody asked for.
    let reader_left = crawl
        .out_error
        .as_ref()
        .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe);

    let snapshot = pool.metrics().await;
    crawl.stats.links_queued = frontier.links_queued();
    crawl.stats.links_dropped = frontier.dropped();
    if !reader_left {
        let mut summary = crawl
            .stats
            .summary(elapsed, &snapshot, crawl.signal.is_some());
        if let Some(path) = &args.output {
            summary.push_str(&format!("  {:<16}{}\n", "output", path.display()));
        }
        if args.robots {
            let skipped = crawl.disallowed;
            summary.push_str(&format!(
                "  {:<16}{skipped} pages disallowed, not visited\n",
                "robots.txt"
            ));
        }
        reports.print(&summary);
        match args.metrics {
            Some(MetricsFormat::Prometheus) => reports.print(&snapshot.to_prometheus()),
            Some(MetricsFormat::Json) => match serde_json::to_string_pretty(&snapshot) {
                Ok(json) => reports.print(&format!("{json}\n")),
                Err(e) => eprintln!("cdpmux: could not encode the metrics snapshot: {e}"),
            },
            None => {}
        }
    }
    if let Some(server) = metrics_server {
        server.abort();
    }
    pool.shutdown(SHUTDOWN_GRACE).await?;
    drop(site);

    if let Some(signal) = crawl.signal {
        return Err(signal.fatal("(the pages finished so far are written and summarized)"));
    }
    match crawl.out_error {
        Some(_) if reader_left => Ok(()),
        Some(e) => {
            let target = match &args.output {
                Some(path) => path.display().to_string(),
                None => "stdout".to_owned(),
            };
            Err(Fatal::failed(format!(
                "could not write the output to {target}: {e}"
            )))
        }
        None => crawl.stats.outcome(),
    }
}

/// The state the coordinator owns.
struct Crawl<'a> {
    pool: Pool,
    probe: Probe,
    args: &'a CrawlArgs,
    stats: CrawlStats,
    /// The first write error; the crawl stops on it.
    out_error: Option<io::Error>,
    /// The first stop signal; the crawl stops on it.
    signal: Option<StopSignal>,
    /// Each origin's robots.txt (--robots).
    robots: Option<Arc<Robots>>,
    /// Pages robots.txt kept us from: no line, counted in the summary.
    disallowed: u64,
}

/// Where a page's content goes, besides its counts.
#[derive(Clone)]
struct Keep {
    /// HTML in the JSON line.
    html_inline: bool,
    save_html: Option<PathBuf>,
    max_html_bytes: usize,
    screenshot: Option<PathBuf>,
}

impl Keep {
    fn of(args: &CrawlArgs) -> Keep {
        Keep {
            html_inline: args.html,
            save_html: args.save_html.clone(),
            max_html_bytes: args.max_html_bytes,
            screenshot: args.screenshot.clone(),
        }
    }

    /// What the probe must read. JavaScript counts UTF-16 units, at most one per byte:
    /// reading as many as the byte cap always covers it.
    fn wanted(&self) -> Wanted {
        Wanted {
            html_chars: (self.html_inline || self.save_html.is_some())
                .then_some(self.max_html_bytes),
            screenshot: self.screenshot.is_some(),
        }
    }

    /// Caps the HTML, writes the files, and leaves in `page` only what its line shows.
    /// Runs in the page's task, off the shard.
    async fn apply(&self, url: &str, page: &mut PageData) -> Result<Saved, VisitError> {
        let mut saved = Saved::default();
        if let Some(html) = page.html.as_mut() {
            // The probe already cut it to as many characters: judge by the full size.
            let cut = content::cap_html(html, self.max_html_bytes);
            saved.html_truncated = Some(cut || page.html_bytes > self.max_html_bytes as u64);
            if let Some(dir) = &self.save_html {
                let path = content::save(dir, url, "html", html.clone().into_bytes())
                    .await
                    .map_err(VisitError::Save)?;
                saved.html_file = Some(path.display().to_string());
            }
        }
        if !self.html_inline {
            page.html = None;
            if self.save_html.is_none() {
                saved.html_truncated = None;
            }
        }
        if let (Some(dir), Some(data)) = (&self.screenshot, page.screenshot_base64.take()) {
            let png = data_encoding::BASE64
                .decode(data.as_bytes())
                .map_err(|e| VisitError::Save(io::Error::new(io::ErrorKind::InvalidData, e)))?;
            let path = content::save(dir, url, "png", png)
                .await
                .map_err(VisitError::Save)?;
            let [width, height] = page.viewport.unwrap_or_default();
            saved.screenshot = Some(Screenshot {
                file: path.display().to_string(),
                width,
                height,
            });
        }
        Ok(saved)
    }
}

/// What [`Keep::apply`] wrote, for the page's line.
#[derive(Default)]
struct Saved {
    html_truncated: Option<bool>,
    html_file: Option<String>,
    screenshot: Option<Screenshot>,
}

/// What a page job sends back.
struct Finished {
    url: String,
    depth: u32,
    result: Result<(PageData, Saved), VisitError>,
    elapsed: Duration,
    shard: Option<usize>,
    reused: Option<bool>,
}

/// A page job that was started and has not been written yet.
struct InFlight {
    url: String,
    depth: u32,
    started: Instant,
}

/// Where a job got to, written on the shard, read after the job (also when it failed).
#[derive(Default)]
struct Trace {
    /// Shard + 1; 0 when the job never reached a shard.
    shard: AtomicUsize,
    /// 0 unknown, 1 fresh session, 2 reused.
    reused: AtomicU8,
}

impl Crawl<'_> {
    /// True once the crawl is stopping: no new page starts, no link is queued.
    fn stopping(&self) -> bool {
        self.signal.is_some() || self.out_error.is_some()
    }

    /// The coordinator loop. Ends when the work runs out or, once stopping, when no job
    /// is left.
    ///
    /// Invariant: every job started is in `in_flight` until its line is written
    /// (finished, failed or cancelled), so each started URL gets exactly one line.
    async fn drive(
        &mut self,
        frontier: &mut Frontier,
        mut input: mpsc::Receiver<Result<String, String>>,
        out: &mut Box<dyn Write + Send>,
        progress: &Progress,
        started: Instant,
        stop: &mut Stop,
    ) {
        let concurrency = self.args.concurrency as usize;
        let mut jobs: JoinSet<Finished> = JoinSet::new();
        let mut in_flight: HashMap<task::Id, InFlight> = HashMap::new();
        let mut input_open = true;
        // After the first signal: when the pages still in flight are abandoned.
        let mut grace_ends: Option<tokio::time::Instant> = None;
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + PLAIN_PROGRESS_EVERY,
            PLAIN_PROGRESS_EVERY,
        );
        loop {
            while !self.stopping() && jobs.len() < concurrency {
                let Some((url, depth)) = frontier.pop() else {
                    break;
                };
                let with_links = frontier.follows_from(depth);
                let job = jobs.spawn(self.visit(url.clone(), depth, with_links));
                let started = Instant::now();
                in_flight.insert(
                    job.id(),
                    InFlight {
                        url,
                        depth,
                        started,
                    },
                );
            }
            let stopping = self.stopping();
            let input_done = !input_open || stopping || frontier.spent();
            if jobs.is_empty() && input_done && (stopping || frontier.is_empty()) {
                break;
            }
            progress.update(&self.stats, jobs.len(), frontier.len());
            let want_input = !input_done && frontier.len() < concurrency * 2;
            let grace_over = async {
                match grace_ends {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(joined) = jobs.join_next_with_id(), if !jobs.is_empty() => {
                    let (id, result) = match joined {
                        Ok((id, done)) => (id, Ok(done)),
                        Err(e) => (e.id(), Err(e)),
                    };
                    let Some(job) = in_flight.remove(&id) else {
                        continue;
                    };
                    match result {
                        Ok(done) => {
                            let links = self.finish(done, frontier, out);
                            // Once stopping, a finished page must not refill the frontier.
                            if let (Some((url, depth, links)), false) = (links, self.stopping()) {
                                frontier.offer_links(&url, depth, &links);
                            }
                        }
                        Err(e) => self.unfinished(job, &e, out),
                    }
                    if self.out_error.is_some() {
                        // Nothing more can be written: abandon the rest at once.
                        frontier.clear();
                        jobs.abort_all();
                    }
                },
                line = input.recv(), if want_input => match line {
                    Some(Ok(line)) => self.offer_seed(frontier, &line, out),
                    Some(Err(e)) => {
                        progress.println(&format!("cdpmux: stopped reading the input: {e}"));
                        input_open = false;
                    }
                    None => input_open = false,
                },
                _ = tick.tick(), if progress.plain => {
                    progress.plain_line(&self.stats, jobs.len(), frontier.len(), started);
                }
                signal = stop.recv() => {
                    frontier.clear();
                    if self.signal.is_none() {
                        self.signal = Some(signal);
                        grace_ends = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
                        if !jobs.is_empty() {
                            progress.println(&format!(
                                "cdpmux: {signal}; finishing the {} pages in flight for up to {} s \
                                 (Ctrl-C again to abandon them)",
                                jobs.len(),
                                SHUTDOWN_GRACE.as_secs()
                            ));
                        }
                    } else {
                        jobs.abort_all();
                    }
                }
                () = grace_over => {
                    grace_ends = None;
                    progress.println(&format!(
                        "cdpmux: abandoning the {} pages still in flight",
                        jobs.len()
                    ));
                    jobs.abort_all();
                }
            }
        }
    }

    /// Writes the line of a job that ended without a result: cut off by a stop, or
    /// ended abnormally (a bug).
    fn unfinished(&mut self, job: InFlight, e: &JoinError, out: &mut Box<dyn Write + Send>) {
        let ms = (job.started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
        let record = if e.is_cancelled() {
            PageRecord::unfinished(
                job.url,
                job.depth,
                ms,
                CANCELLED,
                "the crawl was stopped before this page finished".to_owned(),
            )
        } else {
            PageRecord::unfinished(
                job.url,
                job.depth,
                ms,
                "internal",
                format!("the page job ended abnormally: {e}"),
            )
        };
        self.count(&record);
        self.write(out, &record);
    }

    /// Offers an input line; an invalid URL gets its error line at once.
    fn offer_seed(&mut self, frontier: &mut Frontier, line: &str, out: &mut Box<dyn Write + Send>) {
        if let Offer::Invalid(message) = frontier.offer_seed(line) {
            let record = PageRecord::invalid(line, message);
            self.count(&record);
            self.write(out, &record);
        }
    }

    /// A page job: navigate and read the page on a pooled session.
    fn visit(
        &self,
        url: String,
        depth: u32,
        with_links: bool,
    ) -> impl std::future::Future<Output = Finished> + Send + 'static {
        let pool = self.pool.clone();
        let probe = self.probe;
        let job = self.job_for(&url);
        let keep = Keep::of(self.args);
        let wanted = keep.wanted();
        let goto = GotoOptions::new().wait_until(self.args.wait_until());
        let robots = self.robots.clone();
        async move {
            if let Some(robots) = robots {
                if !robots.allows(&pool, &url).await {
                    return Finished {
                        url,
                        depth,
                        result: Err(VisitError::Disallowed),
                        elapsed: Duration::ZERO,
                        shard: None,
                        reused: None,
                    };
                }
            }
            let trace = Arc::new(Trace::default());
            let seen = trace.clone();
            let target = url.clone();
            let started = Instant::now();
            let result = pool
                .run(job, async move |page| {
                    seen.shard.store(
                        cdpmux::current_shard().map_or(0, |s| s + 1),
                        Ordering::Relaxed,
                    );
                    seen.reused
                        .store(if page.uses() > 1 { 2 } else { 1 }, Ordering::Relaxed);
                    probe.visit(page, &target, &goto, with_links, wanted).await
                })
                .await
                .map_err(VisitError::Pool)
                .and_then(|read| read);
            let result = match result {
                Ok(mut page) => match keep.apply(&url, &mut page).await {
                    Ok(saved) => Ok((page, saved)),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            Finished {
                url,
                depth,
                result,
                elapsed: started.elapsed(),
                shard: trace.shard.load(Ordering::Relaxed).checked_sub(1),
                reused: match trace.reused.load(Ordering::Relaxed) {
                    0 => None,
                    n => Some(n == 2),
                },
            }
        }
    }

    fn job_for(&self, url: &str) -> Job {
        let a = self.args;
        let mut job = Job::new()
            .priority(a.priority)
            .timeout(a.timeout)
            .retries(a.retries);
        if let Some(t) = a.wait_timeout {
            job = job.wait_timeout(t);
        }
        if let Some(t) = a.command_timeout {
            job = job.command_timeout(t);
        }
        let key = match a.affinity {
            // Politeness is per key: the host.
            AffinityArg::None if a.polite() => Affinity::from_url(url).ok(),
            AffinityArg::None => None,
            // file:// URLs have no host, hence no key: they spread like unkeyed jobs.
            AffinityArg::Host => Affinity::from_url(url).ok(),
            AffinityArg::StickyHost => Affinity::from_url(url)
                .ok()
                .map(|k| Affinity::sticky(k.key())),
        };
        match key {
            Some(key) => job.affinity(key),
            None => job,
        }
    }

    /// Records a finished page; returns its links when they are to be followed.
    fn finish(
        &mut self,
        done: Finished,
        frontier: &Frontier,
        out: &mut Box<dyn Write + Send>,
    ) -> Option<(String, u32, Vec<String>)> {
        if matches!(done.result, Err(VisitError::Disallowed)) {
            self.disallowed += 1;
            return None;
        }
        let ms = (done.elapsed.as_secs_f64() * 1e6).round() / 1e3;
        self.stats.page_times.record(done.elapsed);
        let mut record = PageRecord {
            url: done.url,
            depth: done.depth,
            ms,
            shard: done.shard,
            reused: done.reused,
            ..PageRecord::default()
        };
        let mut follow = None;
        match done.result {
            Ok((page, saved)) => {
                record.html = page.html;
                record.html_truncated = saved.html_truncated;
                record.html_file = saved.html_file;
                record.screenshot = saved.screenshot;
                record.final_url = Some(page.final_url);
                record.status = page.status.filter(|s| *s != 0);
                record.title = Some(page.title);
                record.html_bytes = Some(page.html_bytes);
                record.links = Some(page.link_count);
                record.truncated = Some(page.truncated);
                if frontier.follows_from(done.depth) && !page.links.is_empty() {
                    follow = Some((record.url.clone(), done.depth, page.links));
                }
            }
            Err(e) => {
                record.error = Some(e.kind_name());
                record.message = Some(e.to_string());
            }
        }
        self.count(&record);
        self.write(out, &record);
        follow
    }

    fn count(&mut self, record: &PageRecord) {
        match &record.error {
            None => {
                self.stats.ok += 1;
                if record.reused == Some(true) {
                    self.stats.reused += 1;
                }
            }
            Some(kind) => {
                self.stats.failed += 1;
                *self.stats.errors.entry(kind.clone()).or_default() += 1;
            }
        }
    }

    fn write(&mut self, out: &mut Box<dyn Write + Send>, record: &PageRecord) {
        if self.out_error.is_some() {
            return;
        }
        let line = record.to_json_line();
        if let Err(e) = writeln!(out, "{line}").and_then(|_| out.flush()) {
            self.out_error = Some(e);
        }
    }
}

fn open_input(args: &CrawlArgs) -> Result<Input, Fatal> {
    if args.demo {
        return Ok(Input::Demo);
    }
    match &args.input {
        Some(path) if path.as_os_str() == "-" => Ok(Input::Stdin),
        Some(path) => File::open(path)
            .map(Input::File)
            .map_err(|e| Fatal::usage(format!("cannot read the URL list {}: {e}", path.display()))),
        None if io::stdin().is_terminal() => Err(Fatal::usage(
            "no URLs: give a file with one URL per line, `-` to read them from stdin, or \
             --demo to crawl the embedded demo site",
        )),
        None => Ok(Input::Stdin),
    }
}

/// Refuses an output path that cannot be written or is the input itself, without
/// touching it: the file is created only once the crawl can start ([`open_output`]).
fn check_output(path: Option<&Path>, input: &Input) -> Result<(), Fatal> {
    let Some(path) = path else {
        return Ok(());
    };
    let Ok(output) = std::fs::metadata(path) else {
        return Ok(()); // not there yet: created later, and errors reported then
    };
    if output.is_dir() {
        return Err(Fatal::usage(format!(
            "cannot write the output to {}: it is a directory",
            path.display()
        )));
    }
    let input = match input {
        Input::Demo => None,
        Input::File(file) => file.metadata().ok(),
        Input::Stdin => io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .and_then(|fd| File::from(fd).metadata().ok()),
    };
    // The same file, however it is named: the same inode on the same device.
    if input.is_some_and(|i| i.dev() == output.dev() && i.ino() == output.ino()) {
        return Err(Fatal::usage(format!(
            "the output {} is also the input: writing it would destroy the URL list; \
             choose another -o",
            path.display()
        )));
    }
    Ok(())
}

/// Creates (or truncates) the output: stdout without a path.
fn open_output(path: Option<&Path>) -> Result<Box<dyn Write + Send>, Fatal> {
    match path {
        Some(path) => {
            let file = File::create(path)
                .map_err(|e| Fatal::usage(format!("cannot create {}: {e}", path.display())))?;
            Ok(Box::new(BufWriter::new(file)))
        }
        None => Ok(Box::new(io::stdout())),
    }
}

/// Reads input lines on a thread of its own (stdin reads block), trimmed, without blank
/// lines and `#` comments. Non-UTF-8 bytes are replaced, never fatal.
fn spawn_reader(
    mut source: Box<dyn BufRead + Send>,
    tx: mpsc::Sender<Result<String, String>>,
) -> Result<(), Fatal> {
    std::thread::Builder::new()
        .name("cdpmux-input".into())
        .spawn(move || {
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match source.read_until(b'\n', &mut buf) {
                    Ok(0) => return,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        let line = line.trim();
                        if line.is_empty() || line.starts_with('#') {
                            continue;
                        }
                        if tx.blocking_send(Ok(line.to_owned())).is_err() {
                            return; // the crawl is over
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e.to_string()));
                        return;
                    }
                }
            }
        })
        .map(|_| ())
        .map_err(|e| Fatal::failed(format!("could not start the input reader: {e}")))
}

/// Where the summary and metrics go: stdout when the JSON lines go to a file, else
/// stderr, so stdout stays pure JSON lines.
struct Reports {
    to_stdout: bool,
}

impl Reports {
    fn print(&self, text: &str) {
        if self.to_stdout {
            let mut stdout = io::stdout().lock();
            let _ = stdout
                .write_all(text.as_bytes())
                .and_then(|_| stdout.flush());
        } else {
            let _ = io::stderr().lock().write_all(text.as_bytes());
        }
    }
}

/// A progress bar on a terminal, progress lines otherwise, or nothing with `--quiet`.
struct Progress {
    bar: ProgressBar,
    plain: bool,
}

impl Progress {
    fn new(quiet: bool) -> Self {
        if quiet {
            return Progress {
                bar: ProgressBar::hidden(),
                plain: false,
            };
        }
        if !io::stderr().is_terminal() {
            return Progress {
                bar: ProgressBar::hidden(),
                plain: true,
            };
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} pages  {per_sec}  {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress { bar, plain: false }
    }

    fn update(&self, stats: &CrawlStats, in_flight: usize, queued: usize) {
        let done = stats.done();
        self.bar.set_length(done + (in_flight + queued) as u64);
        self.bar.set_position(done);
        self.bar
            .set_message(format!("{} errors, {in_flight} in flight", stats.failed));
    }

    fn plain_line(&self, stats: &CrawlStats, in_flight: usize, queued: usize, started: Instant) {
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        eprintln!(
            "cdpmux: {} pages ({} errors), {:.1} pages/s, {in_flight} in flight, {queued} queued",
            stats.done(),
            stats.failed,
            stats.done() as f64 / secs
        );
    }

    fn println(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
