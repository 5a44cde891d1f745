//! The command line: what each subcommand takes. Parsing only; no I/O here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cdpmux::browser::BrowserKind;
use cdpmux::{Isolation, Politeness, Priority, Reset, ResourceType, WaitUntil};
use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::frontier::{self, Follow};

/// Crawl with pooled headless Chromium sessions, or measure what the pool saves.
#[derive(Debug, Parser)]
#[command(
    name = "cdpmux",
    version,
    about,
    long_about = None,
    after_help = "Exit codes:\n  \
                  0    every page ok (also when a reader closed stdout early)\n  \
                  1    some pages failed (see their `error`), or an error stopped the command\n  \
                  2    bad usage\n  \
                  3    no page succeeded: no browser (install Chromium or use --sim), or the pool broke\n  \
                  130  interrupted (SIGINT)\n  \
                  143  terminated (SIGTERM)"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Crawl URLs (from a file, stdin or the embedded demo site) and write one JSON line per page.
    Crawl(Box<CrawlArgs>),
    /// Compare a fresh page per job (the baseline) with the pool, on the same browser.
    Bench(BenchArgs),
}

/// Which browser to drive, shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct BrowserArgs {
    /// Use the simulated browser instead of Chromium (no install needed; pages have
    /// synthetic titles and no links or HTTP status).
    #[arg(long, conflicts_with_all = ["browser", "endpoint"])]
    pub sim: bool,

    /// Chromium executable to launch (default: $CDPMUX_CHROME, else chromium,
    /// chromium-browser, google-chrome on PATH).
    #[arg(long, value_name = "PATH")]
    pub browser: Option<PathBuf>,

    /// Which build to launch when --browser is not given: `auto` (the headless shell when
    /// installed, else chromium), `shell` (chromium-headless-shell only) or `chromium`
    /// (the full browser only). $CDPMUX_CHROME wins over it. The shell costs less per
    /// page; docs/browsers.md says what differs. [default: chromium; auto with
    /// `crawl --profile fast`]
    #[arg(long, value_name = "KIND", value_parser = parse_browser_kind, conflicts_with = "sim")]
    pub browser_kind: Option<BrowserKind>,

    /// Connect to a running browser instead of launching one: ws://host:port/devtools/browser/<id>
    /// or http://host:port (repeat for several).
    #[arg(long, value_name = "URL")]
    pub endpoint: Vec<String>,

    /// Local browsers to launch (when no --endpoint is given, or with --browser).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub browsers: u32,

    /// Shards (threads) of the pool; 0 = one per core.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub shards: usize,
}

/// `cdpmux crawl`.
#[derive(Debug, Args)]
pub struct CrawlArgs {
    /// File with one URL per line (`-` for stdin; blank lines and `#` comments skipped).
    /// Without it, URLs are read from stdin unless --demo is given.
    #[arg(value_name = "FILE", conflicts_with = "demo")]
    pub input: Option<PathBuf>,

    /// Crawl the embedded demo site, served by this process on 127.0.0.1.
    #[arg(long)]
    pub demo: bool,

    /// Pages of the demo site.
    #[arg(long, value_name = "N", default_value_t = 300, requires = "demo",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub demo_pages: u32,

    /// Write the JSON lines here instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Pages in flight at once.
    #[arg(short, long, value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,

    /// Most sessions (pages) per shard.
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub sessions: u32,

    /// Priority class of every job: low, normal, high or critical.
    #[arg(long, value_name = "CLASS", default_value = "normal", value_parser = parse_priority)]
    pub priority: Priority,

    /// Keep pages of one host on the same shard and warm session.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = AffinityArg::None)]
    pub affinity: AffinityArg,

    /// How pages are kept apart inside the browser (cookies, storage).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = IsolationArg::Shared)]
    pub isolation: IsolationArg,

    /// What is done to a page between jobs.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = ResetArg::None)]
    pub reset: ResetArg,

    /// Deadline of one page, from submission to result (e.g. 30s, 1500ms, 2m).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Longest wait for a free session.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub wait_timeout: Option<Duration>,

    /// Deadline of one CDP command (a navigation waits for its load event within it).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub command_timeout: Option<Duration>,

    /// Re-runs of a page on a fresh session when its session crashes or is lost.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub retries: u32,

    /// Most pages of one host in flight at once. Jobs are keyed by host (as with
    /// --affinity host) when --affinity is none. See docs/politeness.md.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub per_host: Option<u32>,

    /// Least time between two page starts on one host (e.g. 500ms, 2s). Pages waiting
    /// for their host's turn count against --timeout. Keys jobs by host like --per-host.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub host_delay: Option<Duration>,

    /// Fetch each host's robots.txt once (through the pool), skip the pages it
    /// disallows for the `cdpmux` user agent, and wait its Crawl-delay between the
    /// host's pages (the longer of it and --host-delay). Keys jobs by host like --per-host.
    #[arg(long)]
    pub robots: bool,

    /// Follow links (within --follow) up to this many hops from the input URLs.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub depth: u32,

    /// Which links --depth follows. `file:` links are never followed.
    #[arg(long, value_enum, value_name = "SCOPE", default_value_t = FollowArg::SameOrigin)]
    pub follow: FollowArg,

    /// Most links queued from one page; the rest are dropped and counted in the summary.
    #[arg(long, value_name = "N", default_value_t = frontier::DEFAULT_LINKS_PER_PAGE,
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub max_links_per_page: usize,

    /// Most followed links waiting at once; more are dropped and counted in the summary.
    #[arg(long, value_name = "N", default_value_t = frontier::DEFAULT_MAX_QUEUED,
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub max_frontier: usize,

    /// Stop after this many pages (input and followed links together).
    #[arg(long, value_name = "N")]
    pub max_pages: Option<u64>,

    /// Put each page's rendered HTML (`document.documentElement.outerHTML`) in its JSON
    /// line, as `html`.
    #[arg(long)]
    pub html: bool,

    /// Write each page's rendered HTML to DIR, one file per page named after its URL; the
    /// line gets `html_file`. The directory is created if missing.
    #[arg(long, value_name = "DIR")]
    pub save_html: Option<PathBuf>,

    /// Most bytes of HTML kept per page for --html and --save-html; longer HTML is cut
    /// (on a character boundary) and the line says `"html_truncated": true`.
    #[arg(long, value_name = "BYTES", default_value_t = 5 * 1024 * 1024,
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub max_html_bytes: usize,

    /// Write a PNG screenshot of each page's viewport to DIR (`Page.captureScreenshot`),
    /// one file per page named after its URL; the line gets `screenshot` with the file
    /// and the viewport's CSS size. Needs a real browser (not --sim).
    #[arg(long, value_name = "DIR", conflicts_with = "sim")]
    pub screenshot: Option<PathBuf>,

    /// A preset of the options below that cut Chromium's work per page. `fast`: the
    /// headless shell when installed (--browser-kind auto), --block
    /// images,fonts,media,stylesheets and --wait-until domcontentloaded. What it gives
    /// up: content that depends on layout or styles (no stylesheets are applied), images
    /// and fonts are never loaded (screenshots show neither), and requests made after
    /// the document is parsed may not have finished. Scripts still run, so content they
    /// build is there. Options given explicitly win over the preset.
    #[arg(long, value_enum, value_name = "PROFILE")]
    pub profile: Option<ProfileArg>,

    /// Resource types pages never load, comma-separated: images, fonts, media,
    /// stylesheets, scripts, other. A blocked request fails inside the browser and is
    /// counted in the metrics (`blocked_requests`). Blocking scripts changes what pages
    /// show: content built by scripts is never built. [default: none; see --profile]
    #[arg(long, value_name = "TYPES", value_delimiter = ',', value_parser = parse_resource_type)]
    pub block: Option<Vec<ResourceType>>,

    /// When a navigation counts as done: commit (the response is in place), domcontentloaded
    /// (the document is parsed), load (its `load` event) or networkidle (after load, no
    /// request of the page's own for 500 ms). [default: load; see --profile]
    #[arg(long, value_name = "EVENT", value_parser = parse_wait_until)]
    pub wait_until: Option<WaitUntil>,

    /// Print the pool's final metrics snapshot in this format.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub metrics: Option<MetricsFormat>,

    /// Serve Prometheus metrics at http://ADDR/metrics while crawling (loopback only;
    /// port 0 picks a free one).
    #[arg(long, value_name = "ADDR", value_parser = parse_loopback_addr)]
    pub metrics_addr: Option<SocketAddr>,

    /// No progress bar or progress lines.
    #[arg(short, long)]
    pub quiet: bool,

    /// Which browser.
    #[command(flatten)]
    pub browser: BrowserArgs,
}

impl CrawlArgs {
    /// Each host's politeness from --per-host and --host-delay (before robots.txt).
    pub fn politeness(&self) -> Politeness {
        Politeness::new()
            .max_in_flight(self.per_host.unwrap_or(0) as usize)
            .interval(self.host_delay.unwrap_or_default())
    }

    /// True when jobs must carry their host as key: politeness works per key.
    pub fn polite(&self) -> bool {
        self.per_host.is_some() || self.host_delay.is_some() || self.robots
    }

    /// What pages never load: `--block`, else the profile's.
    pub fn blocked(&self) -> Vec<ResourceType> {
        match (&self.block, self.profile) {
            (Some(types), _) => types.clone(),
            (None, Some(ProfileArg::Fast)) => FAST_BLOCKS.to_vec(),
            (None, None) => Vec::new(),
        }
    }

    /// When a navigation is done: `--wait-until`, else the profile's, else `load`.
    pub fn wait_until(&self) -> WaitUntil {
        match (self.wait_until, self.profile) {
            (Some(w), _) => w,
            (None, Some(ProfileArg::Fast)) => WaitUntil::DomContentLoaded,
            (None, None) => WaitUntil::Load,
        }
    }

    /// The browser options with the profile's browser kind filled in when none was given.
    pub fn browser_args(&self) -> BrowserArgs {
        let mut browser = self.browser.clone();
        if browser.browser_kind.is_none() && self.profile == Some(ProfileArg::Fast) {
            browser.browser_kind = Some(BrowserKind::Auto);
        }
        browser
    }
}

/// What `--profile fast` blocks: everything that only paints. Scripts stay, because
/// content they build would be lost.
pub const FAST_BLOCKS: [ResourceType; 4] = [
    ResourceType::Image,
    ResourceType::Font,
    ResourceType::Media,
    ResourceType::Stylesheet,
];

/// `--profile` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProfileArg {
    /// The headless shell when installed, no images, fonts, media or stylesheets, done
    /// at DOMContentLoaded.
    Fast,
}

/// `cdpmux bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What one job does.
    #[arg(long, value_enum, value_name = "JOB", default_value_t = BenchJob::Navigate)]
    pub job: BenchJob,

    /// Jobs in flight at once, in each arm.
    #[arg(short, long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,

    /// Measured jobs per arm.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub count: u32,

    /// Unmeasured jobs per arm first (default: twice the concurrency).
    #[arg(long, value_name = "N")]
    pub warmup: Option<u32>,

    /// Sessions per shard of the pool (default: enough for the concurrency).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub sessions: Option<u32>,

    /// Print the result as JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Which browser.
    #[command(flatten)]
    pub browser: BrowserArgs,
}

/// Affinity of crawl jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AffinityArg {
    /// No key: jobs go to the least loaded shard.
    None,
    /// Soft affinity keyed by the URL's host.
    Host,
    /// Sticky affinity keyed by the URL's host (always the same session).
    StickyHost,
}

/// `--follow` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FollowArg {
    /// Links with the page's scheme, host and port.
    SameOrigin,
    /// Links to the page's host, any scheme and port.
    SameHost,
    /// Any http or https link.
    Any,
}

impl From<FollowArg> for Follow {
    fn from(a: FollowArg) -> Self {
        match a {
            FollowArg::SameOrigin => Follow::SameOrigin,
            FollowArg::SameHost => Follow::SameHost,
            FollowArg::Any => Follow::Any,
        }
    }
}

/// `--isolation` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IsolationArg {
    /// One default browser context for every page (fastest).
    Shared,
    /// One browser context per affinity key (use with --affinity host).
    PerKey,
    /// A fresh browser context for every job.
    PerJob,
}

impl From<IsolationArg> for Isolation {
    fn from(a: IsolationArg) -> Self {
        match a {
            IsolationArg::Shared => Isolation::Shared,
            IsolationArg::PerKey => Isolation::ContextPerKey,
            IsolationArg::PerJob => Isolation::ContextPerJob,
        }
    }
}

/// `--reset` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResetArg {
    /// Leave the page as the last job left it.
    None,
    /// Navigate to about:blank between jobs.
    AboutBlank,
}

impl From<ResetArg> for Reset {
    fn from(a: ResetArg) -> Self {
        match a {
            ResetArg::None => Reset::None,
            ResetArg::AboutBlank => Reset::AboutBlank,
        }
    }
}

/// `--metrics` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MetricsFormat {
    /// Prometheus text exposition format.
    Prometheus,
    /// The snapshot as JSON.
    Json,
}

/// What one bench job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchJob {
    /// Navigate to a demo page, wait for its load event, read the title.
    Navigate,
    /// One `Runtime.evaluate("1+1")`.
    Evaluate,
    /// Ten pipelined `Runtime.evaluate` in one batch.
    Batch,
}

impl BenchJob {
    /// The name shown in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            BenchJob::Navigate => "navigate",
            BenchJob::Evaluate => "evaluate",
            BenchJob::Batch => "batch",
        }
    }
}

fn parse_browser_kind(s: &str) -> Result<BrowserKind, String> {
    s.parse()
}

fn parse_resource_type(s: &str) -> Result<ResourceType, String> {
    s.parse::<ResourceType>().map_err(|e| e.to_string())
}

fn parse_wait_until(s: &str) -> Result<WaitUntil, String> {
    s.parse::<WaitUntil>().map_err(|e| e.to_string())
}

fn parse_priority(s: &str) -> Result<Priority, String> {
    s.parse::<Priority>().map_err(|e| e.to_string())
}

/// The longest duration any option takes. Every deadline the pool computes from one
/// (`now + timeout`, plus the retries' waits) then stays far inside what `Instant` can
/// hold, and no crawl needs a page deadline of more than a week.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Parses a duration option: `humantime` syntax (`250ms`, `30s`, `2m`, `1h 30m`) or a
/// bare number of seconds (`1.5`). Zero and anything above [`MAX_DURATION`] are refused,
/// so every accepted value can be added to `Instant::now()`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bare_seconds = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let d = if bare_seconds {
        let seconds: f64 = s
            .parse()
            .map_err(|_| format!("bad duration {s:?}: use e.g. 500ms, 30s or 2m"))?;
        Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("duration {s:?} is out of range"))?
    } else {
        humantime::parse_duration(s)
            .map_err(|e| format!("bad duration {s:?} ({e}): use e.g. 500ms, 30s, 2m or 1h"))?
    };
    if d.is_zero() {
        return Err(format!("duration {s:?} must be above zero"));
    }
    if d > MAX_DURATION {
        return Err(format!(
            "duration {s:?} is too long: at most {}",
            humantime::format_duration(MAX_DURATION)
        ));
    }
    Ok(d)
}

/// Parses `--metrics-addr`: a loopback socket address (`127.0.0.1:9100`, `[::1]:9100`,
/// `localhost:9100`). Anything else is refused: the endpoint has no authentication.
pub fn parse_loopback_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let addr: SocketAddr = match s.strip_prefix("localhost:") {
        Some(port) => {
            let port: u16 = port
                .parse()
                .map_err(|_| format!("bad port in {s:?}: expected localhost:PORT"))?;
            SocketAddr::from(([127, 0, 0, 1], port))
        }
        None => s
            .parse()
            .map_err(|_| format!("bad address {s:?}: expected 127.0.0.1:PORT"))?,
    };
    if !addr.ip().is_loopback() {
        return Err(format!(
            "refusing to serve metrics on {addr}: only loopback addresses (127.0.0.1:PORT, \
             [::1]:PORT) are allowed, because /metrics has no authentication"
        ));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_reject_nonsense() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        for bad in [
            "", "s", "0", "0ms", "10x", "-1s", "1e999", "abc", "1.2.3s", ".",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn durations_are_bounded() {
        assert_eq!(parse_duration("7days"), Ok(MAX_DURATION));
        for huge in [
            "10000000000000000000s",
            "18446744073709551615s",
            "8days",
            "100000000000000000000",
            "99999999999999999999999ms",
        ] {
            let err = parse_duration(huge).expect_err(huge);
            assert!(err.contains(huge), "{err}");
        }
    }

    proptest::proptest! {
        #[test]
        fn every_accepted_duration_fits_a_deadline(n in proptest::num::u64::ANY, unit in
            proptest::sample::select(&["", "ns", "us", "ms", "s", "m", "min", "h", "d", "w"][..])) {
            if let Ok(d) = parse_duration(&format!("{n}{unit}")) {
                proptest::prop_assert!(d <= MAX_DURATION);
                proptest::prop_assert!(std::time::Instant::now().checked_add(d).is_some());
            }
        }

        #[test]
        fn no_input_panics_and_accepted_ones_fit(s in "\\PC{0,24}") {
            if let Ok(d) = parse_duration(&s) {
                proptest::prop_assert!(std::time::Instant::now().checked_add(d).is_some());
            }
        }
    }

    #[test]
    fn metrics_addr_must_be_loopback() {
        assert_eq!(
            parse_loopback_addr("127.0.0.1:9100").unwrap(),
            "127.0.0.1:9100".parse().unwrap()
        );
        assert!(parse_loopback_addr("[::1]:0").is_ok());
        assert_eq!(
            parse_loopback_addr("localhost:9").unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
        let err = parse_loopback_addr("0.0.0.0:9100").unwrap_err();
        assert!(err.contains("only loopback"), "{err}");
        assert!(parse_loopback_addr("10.1.2.3:80").is_err());
        assert!(parse_loopback_addr("127.0.0.1").is_err());
        assert!(parse_loopback_addr("localhost:x").is_err());
    }

    fn crawl_args(line: &[&str]) -> CrawlArgs {
        let cli = Cli::try_parse_from(["cdpmux", "crawl"].iter().chain(line)).expect("parses");
        match cli.command {
            Command::Crawl(args) => *args,
            other => panic!("not a crawl: {other:?}"),
        }
    }

    #[test]
    fn the_fast_profile_fills_in_what_was_not_given() {
        let plain = crawl_args(&[]);
        assert_eq!(plain.blocked(), Vec::new());
        assert_eq!(plain.wait_until(), WaitUntil::Load);
        assert_eq!(plain.browser_args().browser_kind, None);

        let fast = crawl_args(&["--profile", "fast"]);
        assert_eq!(fast.blocked(), FAST_BLOCKS.to_vec());
        assert_eq!(fast.wait_until(), WaitUntil::DomContentLoaded);
        assert_eq!(fast.browser_args().browser_kind, Some(BrowserKind::Auto));

        let own = crawl_args(&[
            "--profile",
            "fast",
            "--block",
            "images,scripts",
            "--wait-until",
            "commit",
            "--browser-kind",
            "chromium",
        ]);
        assert_eq!(
            own.blocked(),
            vec![ResourceType::Image, ResourceType::Script]
        );
        assert_eq!(own.wait_until(), WaitUntil::Commit);
        assert_eq!(own.browser_args().browser_kind, Some(BrowserKind::Chromium));

        let err = Cli::try_parse_from(["cdpmux", "crawl", "--block", "images,pictures"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown resource type \"pictures\""), "{err}");
        assert!(Cli::try_parse_from(["cdpmux", "crawl", "--wait-until", "idle"]).is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
