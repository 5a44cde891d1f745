//! Which browser a subcommand drives (launched Chromium, remote endpoints or the
//! simulated browser), checked before anything starts, and the CLI's fatal errors.

use std::fmt;
use std::time::Duration;

use cdpmux::browser::{BrowserKind, Endpoint, Launch, LaunchedBrowser};
use cdpmux::sim::{SimBrowser, SimConfig};
use cdpmux::{ErrorKind, PoolBuilder};

use crate::args::BrowserArgs;
use crate::probe::Probe;

/// Exit code for bad usage (clap uses it too).
pub const EXIT_USAGE: i32 = 2;
/// Exit code when no browser can be started or reached.
pub const EXIT_NO_BROWSER: i32 = 3;
/// Exit code after Ctrl-C (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: i32 = 130;

/// An error that ends the command: a message for people and an exit code.
#[derive(Debug)]
pub struct Fatal {
    /// Process exit code.
    pub code: i32,
    /// What went wrong and what to do.
    pub message: String,
}

impl Fatal {
    /// A generic failure (exit code 1).
    pub fn failed(message: impl Into<String>) -> Self {
        Fatal {
            code: 1,
            message: message.into(),
        }
    }

    /// A usage error (exit code 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Fatal {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }
}

impl From<cdpmux::Error> for Fatal {
    fn from(e: cdpmux::Error) -> Self {
        match e.kind() {
            ErrorKind::BrowserUnavailable => Fatal {
                code: EXIT_NO_BROWSER,
                message: format!(
                    "{e}\nhint: `--sim` runs every command on the simulated browser, without \
                     Chromium (e.g. `cdpmux crawl --demo --sim`)"
                ),
            },
            ErrorKind::InvalidInput => Fatal::usage(e.to_string()),
            _ => Fatal::failed(e.to_string()),
        }
    }
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The browser a command will use, checked, and whatever keeps it alive.
pub struct BrowserSetup {
    /// How pages are read.
    pub probe: Probe,
    /// Local browsers to launch.
    launches: Vec<Launch>,
    /// Running browsers to connect to.
    endpoints: Vec<String>,
    /// The simulated browser, when `--sim`: held only to keep it running.
    _sim: Option<SimBrowser>,
    /// For people: "Chromium at /usr/bin/chromium", "simulated browser", ...
    pub description: String,
}

impl BrowserSetup {
    /// Checks the choice before anything starts: with no Chromium installed this fails
    /// at once with the install hint, never later in the middle of a run.
    pub fn prepare(args: &BrowserArgs) -> Result<BrowserSetup, Fatal> {
        if args.sim {
            let sim = SimBrowser::start(SimConfig::default()).map_err(|e| {
                Fatal::failed(format!("could not start the simulated browser: {e}"))
            })?;
            return Ok(BrowserSetup {
                probe: Probe::Basic,
                launches: Vec::new(),
                endpoints: vec![sim.ws_url()],
                _sim: Some(sim),
                description: "the simulated browser".to_owned(),
            });
        }
        for e in &args.endpoint {
            Endpoint::parse(e).map_err(Fatal::from)?;
        }
        let mut launches = Vec::new();
        let mut description = Vec::new();
        if args.endpoint.is_empty() || args.browser.is_some() {
            let mut launch = Launch::new().kind(args.browser_kind.unwrap_or(BrowserKind::Chromium));
            if let Some(path) = &args.browser {
                launch = launch.executable(path);
            }
            let exe = launch.find_executable()?;
            let n = args.browsers as usize;
            let name = match BrowserKind::of_executable(&exe) {
                BrowserKind::Shell => "headless shell",
                _ => "Chromium",
            };
            description.push(if n == 1 {
                format!("{name} at {}", exe.display())
            } else {
                format!("{n} × {name} at {}", exe.display())
            });
            launches = vec![launch; n];
        }
        if !args.endpoint.is_empty() {
            description.push(args.endpoint.join(", "));
        }
        Ok(BrowserSetup {
            probe: Probe::Full,
            launches,
            endpoints: args.endpoint.clone(),
            _sim: None,
            description: description.join(" and "),
        })
    }

    /// Adds the browsers to a pool builder.
    pub fn apply(&self, mut builder: PoolBuilder) -> PoolBuilder {
        for l in &self.launches {
            builder = builder.launch(l.clone());
        }
        for e in &self.endpoints {
            builder = builder.endpoint(e.clone());
        }
        builder
    }

    /// One browser-level DevTools URL, for commands that drive one browser two ways:
    /// launches it (kept alive by the returned handle) or resolves the endpoint.
    pub async fn single(&self) -> Result<(String, Option<LaunchedBrowser>), Fatal> {
        if self.launches.len() + self.endpoints.len() != 1 {
            return Err(Fatal::usage(
                "this command drives exactly one browser: give at most one --endpoint, \
                 and no --browsers above 1",
            ));
        }
        if let Some(launch) = self.launches.first() {
            let browser = launch.launch().await?;
            return Ok((browser.ws_url().to_owned(), Some(browser)));
        }
        let endpoint = Endpoint::parse(&self.endpoints[0])?;
        Ok((endpoint.resolve(Duration::from_secs(10)).await?, None))
    }
}
