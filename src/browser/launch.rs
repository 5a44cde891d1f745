//! Starting a local headless Chromium and stopping it without leaving anything behind.
//!
//! Invariant: the browser pid is reaped in one place only, `LaunchedBrowser::reap`,
//! and only after its process group has been sent SIGKILL. Until then the pid is at worst
//! a zombie that still holds its pid and process-group id, so signalling either can never
//! reach an unrelated process. Exit is observed with `waitid(.., WNOWAIT)`, which does not
//! reap.
//!
//! Which flags are set is [`super::flags`]'s business, the sandbox [`super::sandbox`]'s,
//! the profile [`super::profile`]'s, how the process is forked [`super::spawner`]'s,
//! signals and exit status [`super::process`]'s, and reading the DevTools port
//! [`super::port_file`]'s.

use std::env;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::flags::{reserved_reason, BASE_FLAGS, NO_SANDBOX, NO_THROTTLING_FLAGS};
use super::kind::BrowserKind;
use super::port_file::{read_port_file, PORT_FILE};
use super::process::{euid, group_exists, peek_exit, pid_arg, signal};
use super::sandbox::{self, Decision, KernelFacts, Sandbox};
use super::{profile, spawner};
use crate::error::{Error, ErrorKind, Result, TimeoutKind};
use crate::job::{later, later_std};

/// Environment variable naming the browser executable (a path or a name on `PATH`).
const ENV_CHROME: &str = "CDPMUX_CHROME";

const INSTALL_HINT: &str = "install it with `apt-get install -y chromium` (the full browser) or \
     `apt-get install -y chromium-headless-shell` (the headless shell), or set \
     CDPMUX_CHROME=/path/to/chrome; the simulated browser (`--sim`, `cdpmux::sim`) needs none";

const STDERR_FILE: &str = "chromium-stderr.log";
const POLL: Duration = Duration::from_millis(10);
/// How long Chromium gets to exit on SIGTERM before its group is killed.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for the leader to die after SIGKILL before blocking on it.
const KILL_GRACE: Duration = Duration::from_secs(2);
const REMOVE_ATTEMPTS: u32 = 5;
const STDERR_TAIL_LINES: usize = 15;

/// How to find and start a local headless Chromium.
///
/// ```no_run
/// # async fn demo() -> cdpmux::Result<()> {
/// use std::time::Duration;
/// use cdpmux::browser::Launch;
///
/// let browser = Launch::new()
///     .arg("--window-size=1280,800")
///     .startup_timeout(Duration::from_secs(10))
///     .launch()
///     .await?;
/// println!("DevTools at {}", browser.ws_url());
/// browser.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Launch {
    executable: Option<PathBuf>,
    args: Vec<OsString>,
    startup_timeout: Duration,
    background_throttling: bool,
    sandbox: Sandbox,
    kind: BrowserKind,
}

impl Default for Launch {
    fn default() -> Self {
        Launch {
            executable: None,
            args: Vec::new(),
            startup_timeout: Duration::from_secs(30),
            background_throttling: false,
            sandbox: Sandbox::Auto,
            kind: BrowserKind::default(),
        }
    }
}

impl Launch {
    /// The defaults: executable found automatically (the full browser,
    /// [`BrowserKind::Chromium`]), no extra arguments, a 30 s startup timeout, background
    /// throttling off, sandbox [`Sandbox::Auto`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses this executable instead of looking at `CDPMUX_CHROME` and `PATH`. A bare name
    /// (no `/`) is looked up on `PATH`. Overrides [`kind`](Self::kind).
    pub fn executable(mut self, path: impl Into<PathBuf>) -> Self {
        self.executable = Some(path.into());
        self
    }

    /// Adds one command-line argument after the built-in flags.
    ///
    /// The browser opens one `about:blank` tab unless an argument not starting with `-`
    /// (a URL) is given.
    ///
    /// The DevTools address, port, pipe and allowed origins, `--user-data-dir` and
    /// `--no-sandbox` (see [`sandbox`](Self::sandbox)) are managed by cdpmux; passing
    /// them, with one dash or two, makes [`launch`](Self::launch) fail with
    /// [`ErrorKind::InvalidInput`].
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds several command-line arguments; see [`arg`](Self::arg).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// How long to wait for the DevTools endpoint to appear (default 30 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Whether Chromium may throttle timers of hidden tabs (default `false`: pooled tabs
    /// are hidden, and throttling them slows crawls down).
    pub fn background_throttling(mut self, enabled: bool) -> Self {
        self.background_throttling = enabled;
        self
    }

    /// Whether Chromium keeps its sandbox (default [`Sandbox::Auto`]: on unless running as
    /// root or the kernel cannot provide it; turning it off is logged once).
    ///
    /// The sandbox confines each renderer, the process that runs a crawled page's
    /// scripts. Without it, a page that exploits a renderer bug runs its code with every
    /// right of the user running cdpmux (files, credentials, network). `docs/security.md`
    /// says when turning it off is acceptable.
    pub fn sandbox(mut self, sandbox: Sandbox) -> Self {
        self.sandbox = sandbox;
        self
    }

    /// Which browser build to look for when no executable is configured (default
    /// [`BrowserKind::Chromium`], the full browser). An explicit
    /// [`executable`](Self::executable) and `CDPMUX_CHROME` both win over it.
    pub fn kind(mut self, kind: BrowserKind) -> Self {
        self.kind = kind;
        self
    }

    /// The executable [`launch`](Self::launch) would start: the configured one, else
    /// `CDPMUX_CHROME`, else the first installed one of the [`kind`](Self::kind): for the
    /// full browser `chromium`, `chromium-browser`, `google-chrome`, `google-chrome-stable`
    /// on `PATH`; for the headless shell Debian's `/usr/lib/chromium/chromium-headless-shell`,
    /// then `chromium-headless-shell`, `chrome-headless-shell`, `headless_shell` on `PATH`.
    ///
    /// Fails with [`ErrorKind::BrowserUnavailable`] and a message that says how to install
    /// one.
    pub fn find_executable(&self) -> Result<PathBuf> {
        if let Some(exe) = &self.executable {
            return resolve_command(exe, "the configured executable");
        }
        if let Some(exe) = env::var_os(ENV_CHROME).filter(|v| !v.is_empty()) {
            return resolve_command(Path::new(&exe), ENV_CHROME);
        }
        self.kind
            .find(is_executable_file, |name| search_path(OsStr::new(name)))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::BrowserUnavailable,
                    format!(
                        "no {} browser found (looked at {ENV_CHROME}, {}); install it with \
                         `{}`, or set {ENV_CHROME}=/path/to/chrome; the simulated browser \
                         (`--sim`, `cdpmux::sim`) needs none",
                        self.kind,
                        self.kind.looked_at(),
                        self.kind.install_hint(),
                    ),
                )
            })
    }

    /// The full argument list for a browser using `profile` as its user data dir.
    fn command_args(&self, profile: &Path, sandbox: Decision) -> Vec<OsString> {
        let mut args: Vec<OsString> = BASE_FLAGS.iter().map(OsString::from).collect();
        if let Decision::Off(_) = sandbox {
            args.push(OsString::from(NO_SANDBOX));
        }
        let mut dir_flag = OsString::from("--user-data-dir=");
        dir_flag.push(profile);
        args.push(dir_flag);
        if !self.background_throttling {
            args.extend(NO_THROTTLING_FLAGS.iter().map(OsString::from));
        }
        args.extend(self.args.iter().cloned());
        // Without a URL headless opens the new-tab page, a webui renderer that costs about
        // a third of a CPU-second at startup; about:blank costs next to nothing.
        if self
            .args
            .iter()
            .all(|a| a.to_string_lossy().starts_with('-'))
        {
            args.push(OsString::from("about:blank"));
        }
        args
    }

    fn check_args(&self) -> Result<()> {
        for arg in &self.args {
            let text = arg.to_string_lossy();
            if let Some(why) = reserved_reason(&text) {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "launch argument `{}` is managed by cdpmux ({why}); remove it, or \
                         start the browser yourself and connect to it with an Endpoint",
                        text.trim()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Starts a headless Chromium with a fresh private profile and waits until its
    /// DevTools endpoint is up.
    ///
    /// On Linux the browser dies with this process (it gets SIGKILL when the process
    /// exits or is killed, however it ends), and profiles that a dead process left
    /// behind are removed first.
    ///
    /// Cancel-safe: if the returned future is dropped before it completes, the browser
    /// process group is killed and reaped and the profile removed (the drop may block for
    /// up to about two seconds while Chromium exits).
    ///
    /// Errors: [`ErrorKind::BrowserUnavailable`] when no executable is found or the
    /// browser exits during startup (the message quotes the end of its stderr);
    /// [`ErrorKind::Timeout`]`(`[`TimeoutKind::Launch`]`)` when the endpoint does not
    /// appear within the startup timeout; [`ErrorKind::InvalidInput`] for reserved extra
    /// arguments and for [`Sandbox::On`] as root; [`ErrorKind::Io`] when the profile
    /// cannot be created.
    pub async fn launch(&self) -> Result<LaunchedBrowser> {
        self.check_args()?;
        let exe = self.find_executable()?;
        let sandbox = sandbox::decide(self.sandbox, euid(), &KernelFacts::probe(&exe))?;
        if let Decision::Off(reason) = sandbox {
            sandbox::log_off_once(reason);
        }
        let profile = profile::create()?;
        let profile_path = profile.path().to_path_buf();
        let stderr = File::create(profile_path.join(STDERR_FILE)).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!(
                    "cannot create the browser log in {}",
                    profile_path.display()
                ),
            )
            .with_source(e)
        })?;

        let mut command = Command::new(&exe);
        command
            .args(self.command_args(&profile_path, sandbox))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            // Its own process group, so the whole tree (zygote, renderers) can be killed.
            .process_group(0);
        let started = Instant::now();
        let child = spawner::spawn(command).map_err(|e| spawn_error(&exe, e))?;
        let pid = child.id();
        tracing::debug!(pid, executable = %exe.display(), profile = %profile_path.display(), "Chromium spawned");

        // From here on every way out (error, timeout, a dropped future) drops `browser`,
        // which stops the process group and removes the profile.
        let mut browser = LaunchedBrowser {
            child,
            pid,
            kind: BrowserKind::of_executable(&exe),
            ws_url: String::new(),
            profile_path,
            profile: Some(profile),
            reaped: false,
        };

        let port_file = browser.profile_path.join(PORT_FILE);
        let deadline = later(tokio::time::Instant::now(), self.startup_timeout);
        loop {
            if let Some((port, path)) = read_port_file(&port_file) {
                browser.ws_url = format!("ws://127.0.0.1:{port}{path}");
                break;
            }
            if let Some(status) = peek_exit(pid) {
                let tail = stderr_tail(&browser.profile_path.join(STDERR_FILE));
                return Err(Error::new(
                    ErrorKind::BrowserUnavailable,
                    format!(
                        "Chromium at {} exited during startup ({status}) before opening its \
                         DevTools port; last lines of its stderr:\n{tail}",
                        exe.display()
                    ),
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                // No grace period: a browser that never came up is not worth waiting for.
                browser.kill_group();
                let tail = stderr_tail(&browser.profile_path.join(STDERR_FILE));
                return Err(Error::new(
                    ErrorKind::Timeout(TimeoutKind::Launch),
                    format!(
                        "starting Chromium at {}: launch deadline of {:?} passed before it \
                         wrote {PORT_FILE}; raise startup_timeout if the machine is busy; \
                         last lines of its stderr:\n{tail}",
                        exe.display(),
                        self.startup_timeout
                    ),
                ));
            }
            tokio::time::sleep(POLL).await;
        }
        tracing::info!(
            pid,
            ws_url = %browser.ws_url,
            startup_ms = started.elapsed().as_millis() as u64,
            "Chromium started"
        );
        Ok(browser)
    }
}

/// A running Chromium started by [`Launch::launch`].
///
/// Stop it with [`shutdown`](Self::shutdown). Dropping it does the same, blocking the
/// current thread for up to about two seconds while Chromium exits. Either way the whole
/// process group is killed and reaped and the profile directory removed.
#[derive(Debug)]
pub struct LaunchedBrowser {
    child: Child,
    pid: u32,
    kind: BrowserKind,
    ws_url: String,
    profile_path: PathBuf,
    /// Removes the profile if our own removal never ran (a safety net); `None` once the
    /// profile is gone.
    profile: Option<TempDir>,
    /// The browser has been reaped: its pid may belong to someone else now, never signal it.
    reaped: bool,
}

impl LaunchedBrowser {
    /// The browser-level DevTools WebSocket URL, `ws://127.0.0.1:<port>/devtools/browser/<id>`.
    pub fn ws_url(&self) -> &str {
        &self.ws_url
    }

    /// Which build is running, judged by the executable's name
    /// ([`BrowserKind::of_executable`]): [`BrowserKind::Shell`] or
    /// [`BrowserKind::Chromium`], never `Auto`.
    pub fn kind(&self) -> BrowserKind {
        self.kind
    }

    /// The process id of the browser, which is also its process-group id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The private temporary profile (user data) directory, removed on shutdown.
    pub fn profile_dir(&self) -> &Path {
        &self.profile_path
    }

    /// True while the browser process has not exited. Does not reap it.
    pub fn is_running(&mut self) -> bool {
        !self.reaped && peek_exit(self.pid).is_none()
    }

    /// Sends SIGKILL to the browser process only, as a crash would; its children and the
    /// profile stay until [`shutdown`](Self::shutdown) or drop. For fault-injection tests.
    pub fn kill(&mut self) {
        self.signal_browser(libc::SIGKILL);
    }

    /// Stops the browser: SIGTERM, up to about 2 s for a clean exit, then SIGKILL to the
    /// whole process group; reaps the browser and removes the profile directory.
    ///
    /// Fails with [`ErrorKind::Io`] only if the profile directory cannot be removed; the
    /// processes are gone either way.
    pub async fn shutdown(mut self) -> Result<()> {
        let started = Instant::now();
        self.signal_browser(libc::SIGTERM);
        if !self.wait_exit(TERM_GRACE).await {
            tracing::warn!(
                pid = self.pid,
                "Chromium ignored SIGTERM; killing its group"
            );
        }
        self.kill_group();
        self.wait_exit(KILL_GRACE).await;
        self.reap();
        // SIGKILLed members (zygote, renderers) take a moment to be torn down: return
        // only when the group is empty, so a caller never sees a leftover process.
        let deadline = later_std(Instant::now(), KILL_GRACE);
        while group_exists(self.pid) && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        let mut result = self.remove_profile();
        for _ in 1..REMOVE_ATTEMPTS {
            if result.is_ok() {
                break;
            }
            // A dying group member may still have been writing into the profile.
            tokio::time::sleep(POLL * 2).await;
            result = self.remove_profile();
        }
        tracing::debug!(
            pid = self.pid,
            shutdown_ms = started.elapsed().as_millis() as u64,
            "Chromium stopped"
        );
        result.map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!(
                    "Chromium stopped, but its profile {} could not be removed",
                    self.profile_path.display()
                ),
            )
            .with_source(e)
        })
    }

    async fn wait_exit(&self, within: Duration) -> bool {
        let deadline = later_std(Instant::now(), within);
        loop {
            if peek_exit(self.pid).is_some() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn wait_exit_blocking(&self, within: Duration) -> bool {
        let deadline = later_std(Instant::now(), within);
        loop {
            if peek_exit(self.pid).is_some() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Sends `sig` to the browser process, unless it has been reaped.
    fn signal_browser(&self, sig: libc::c_int) {
        if !self.reaped {
            signal(pid_arg(self.pid), sig);
        }
    }

    /// SIGKILL to every process in the browser's group, the browser included.
    fn kill_group(&self) {
        // The unreaped leader keeps the group id reserved, so this cannot hit a stranger.
        if !self.reaped {
            signal(-pid_arg(self.pid), libc::SIGKILL);
        }
    }

    /// Collects the browser's exit status. Call only after `kill_group`.
    fn reap(&mut self) {
        if self.reaped {
            return;
        }
        // The leader has exited or just got SIGKILL, so this returns at once or nearly.
        if let Err(e) = self.child.wait() {
            tracing::warn!(pid = self.pid, error = %e, "could not reap Chromium");
        }
        self.reaped = true;
    }

    fn remove_profile(&mut self) -> io::Result<()> {
        match fs::remove_dir_all(&self.profile_path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => {
                // Already gone: disarm the safety net.
                if let Some(dir) = self.profile.take() {
                    let _ = dir.keep();
                }
                Ok(())
            }
        }
    }
}

impl Drop for LaunchedBrowser {
    fn drop(&mut self) {
        if !self.reaped {
            self.signal_browser(libc::SIGTERM);
            self.wait_exit_blocking(TERM_GRACE);
            self.kill_group();
            self.wait_exit_blocking(KILL_GRACE);
            self.reap();
            let deadline = later_std(Instant::now(), KILL_GRACE);
            while group_exists(self.pid) && Instant::now() < deadline {
                std::thread::sleep(POLL);
            }
        }
        if self.profile.is_none() {
            return;
        }
        for attempt in 1..=REMOVE_ATTEMPTS {
            match self.remove_profile() {
                Ok(()) => break,
                Err(e) if attempt == REMOVE_ATTEMPTS => tracing::warn!(
                    profile = %self.profile_path.display(),
                    error = %e,
                    "could not remove Chromium profile"
                ),
                Err(_) => std::thread::sleep(POLL * 2),
            }
        }
    }
}

/// Resolves a configured command: a path must be an executable file, a bare name is
/// looked up on `PATH`.
fn resolve_command(exe: &Path, origin: &str) -> Result<PathBuf> {
    let found = if exe.components().count() > 1 || exe.is_absolute() {
        is_executable_file(exe).then(|| exe.to_path_buf())
    } else {
        search_path(exe.as_os_str())
    };
    found.ok_or_else(|| {
        Error::new(
            ErrorKind::BrowserUnavailable,
            format!(
                "no Chromium at {} ({origin}): not an executable file{}; {INSTALL_HINT}",
                exe.display(),
                if exe.components().count() > 1 {
                    ""
                } else {
                    " on PATH"
                }
            ),
        )
    })
}

fn search_path(name: &OsStr) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable_file(candidate))
}

fn is_executable_file(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn spawn_error(exe: &Path, e: io::Error) -> Error {
    let kind = match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => ErrorKind::BrowserUnavailable,
        _ => ErrorKind::Io,
    };
    Error::new(
        kind,
        format!(
            "could not start Chromium at {}; {INSTALL_HINT}",
            exe.display()
        ),
    )
    .with_source(e)
}

/// The last lines of the browser's stderr, for error messages.
fn stderr_tail(path: &Path) -> String {
    const MAX_BYTES: u64 = 8 * 1024;
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)))?;
        let mut bytes = Vec::new();
        file.take(MAX_BYTES).read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let start = lines.len().saturating_sub(STDERR_TAIL_LINES);
            if lines.is_empty() {
                "(empty)".to_string()
            } else {
                lines[start..].join("\n")
            }
        }
        Err(e) => format!("(unreadable: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn reserved_switches_are_caught_however_spelled(
                dashes in 1usize..4,
                name in proptest::sample::select(vec![
                    "remote-debugging-address", "remote-debugging-port",
                    "remote-debugging-pipe", "remote-allow-origins", "user-data-dir",
                    "no-sandbox",
                ]),
                upper in proptest::collection::vec(any::<bool>(), 32),
                value in proptest::option::of("[ -~]{0,20}"),
                pad in "[ \t]{0,2}",
            ) {
                let name: String = name
                    .chars()
                    .zip(upper.iter().cycle())
                    .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
                    .collect();
                let arg = format!(
                    "{pad}{}{name}{}{pad}",
                    "-".repeat(dashes),
                    value.map(|v| format!("={v}")).unwrap_or_default()
                );
                let err = Launch::new().arg(&arg).check_args().unwrap_err();
                prop_assert_eq!(err.kind(), ErrorKind::InvalidInput);
            }
        }
    }

    #[test]
    fn reserved_flags_are_rejected() {
        for arg in [
            "--remote-debugging-address=0.0.0.0",
            "--remote-debugging-port=9222",
            "--remote-debugging-pipe",
            "--user-data-dir=/tmp/x",
            "-remote-debugging-address=0.0.0.0",
            "-user-data-dir=/tmp/x",
            "--remote-allow-origins=*",
            "--no-sandbox",
        ] {
            let err = Launch::new().arg(arg).check_args().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{arg}");
            assert!(err.message().contains("managed by cdpmux"), "{err}");
        }
        assert!(Launch::new()
            .arg("--window-size=800,600")
            .check_args()
            .is_ok());
    }

    #[test]
    fn throttling_flags_follow_the_setting() {
        let off = Launch::new().command_args(Path::new("/p"), Decision::On);
        assert!(off.iter().any(|a| a == "--disable-renderer-backgrounding"));
        assert!(off.iter().any(|a| a == "--user-data-dir=/p"));
        assert!(off
            .iter()
            .any(|a| a == "--remote-debugging-address=127.0.0.1"));
        let on = Launch::new()
            .background_throttling(true)
            .arg("--x")
            .command_args(Path::new("/p"), Decision::On);
        assert!(!on.iter().any(|a| a == "--disable-renderer-backgrounding"));
        assert_eq!(
            on.last().map(|a| a.as_os_str()),
            Some(OsStr::new("about:blank"))
        );
        let url = Launch::new()
            .arg("https://a.test/")
            .command_args(Path::new("/p"), Decision::On);
        assert!(!url.iter().any(|a| a == "about:blank"));
    }

    #[test]
    fn explicit_missing_executable_says_how_to_install() {
        let err = Launch::new()
            .executable("/nonexistent/chrome")
            .find_executable()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BrowserUnavailable);
        assert!(
            err.message().contains("apt-get install -y chromium"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_kind_names_its_package() {
        // PATH empty and CDPMUX_CHROME unset only within the kind lookup: call it directly.
        let none = BrowserKind::Shell.find(|_| false, |_| None);
        assert_eq!(none, None);
        assert!(BrowserKind::Shell
            .install_hint()
            .contains("chromium-headless-shell"));
        assert!(BrowserKind::Auto
            .looked_at()
            .contains("chromium-headless-shell"));
    }

    #[test]
    fn no_sandbox_is_passed_only_when_decided() {
        let on = Launch::new().command_args(Path::new("/p"), Decision::On);
        assert!(!on.iter().any(|a| a == NO_SANDBOX), "{on:?}");
        let off = Launch::new().command_args(Path::new("/p"), Decision::Off("test"));
        assert_eq!(
            off.iter().filter(|a| *a == NO_SANDBOX).count(),
            1,
            "{off:?}"
        );
    }
}
