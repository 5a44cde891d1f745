//! A simulated headless Chromium that speaks CDP over WebSocket, for tests, benches, the
//! CLI and users' own crawler tests.
//!
//! [`SimBrowser::start`] binds `127.0.0.1:0` and serves, on one port, the browser
//! WebSocket ([`SimBrowser::ws_url`]) and `GET /json/version` ([`SimBrowser::http_url`]).
//! It implements the part of the protocol a page pool uses (targets, flat sessions,
//! browser contexts, navigation with load events, a toy `Runtime.evaluate`) with Chromium's
//! wire format and its failure behaviour: crashed targets swallow commands until revived,
//! closed sessions answer `-32001`, a hung renderer answers nothing until
//! `Runtime.terminateExecution`. Faults are injected from any thread while it runs.
//!
//! The browser runs on its own OS thread with a current-thread tokio runtime, so it works
//! from any caller runtime, or none. Its state is owned by that thread; other threads talk
//! to it only by message. Ids and drawn delays are deterministic given [`SimConfig::seed`]
//! and the order of the commands received. It never panics on input: bad frames are
//! counted ([`SimStats::malformed`]) and ignored, as Chrome does.
//!
//! ```no_run
//! use cdpmux::sim::{SimBrowser, SimConfig};
//! let sim = SimBrowser::start(SimConfig::default().with_seed(7))?;
//! println!("connect to {}", sim.ws_url());
//! # Ok::<(), std::io::Error>(())
//! ```

mod assets;
mod core;
mod eval;
mod server;
mod site;

pub use site::{Asset, AssetKind, DemoSite, SiteConfig};

use std::fmt;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc;

/// How long the simulated browser holds back each reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delay {
    /// Reply as soon as the command is handled.
    #[default]
    None,
    /// Always the same delay.
    Fixed(Duration),
    /// A delay drawn uniformly from `[min, max]` by the seeded generator.
    Uniform(Duration, Duration),
}

/// Configuration of a [`SimBrowser`].
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of the generator behind ids and drawn delays.
    pub seed: u64,
    /// Time from `Page.navigate` (or `Page.reload`) to the load event. Default 5 ms.
    pub load_time: Duration,
    /// Delay applied to every reply (and to the events the command causes). Default none.
    pub reply_delay: Delay,
    /// Time from `Page.crash` to the crash events. Default 10 ms.
    pub crash_delay: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0x5eed,
            load_time: Duration::from_millis(5),
            reply_delay: Delay::None,
            crash_delay: Duration::from_millis(10),
        }
    }
}

impl SimConfig {
    /// Sets [`SimConfig::seed`].
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets [`SimConfig::load_time`].
    pub fn with_load_time(mut self, load_time: Duration) -> Self {
        self.load_time = load_time;
        self
    }

    /// Sets [`SimConfig::reply_delay`].
    pub fn with_reply_delay(mut self, delay: Delay) -> Self {
        self.reply_delay = delay;
        self
    }

    /// Sets [`SimConfig::crash_delay`].
    pub fn with_crash_delay(mut self, crash_delay: Duration) -> Self {
        self.crash_delay = crash_delay;
        self
    }
}

/// A snapshot of the simulated browser's state, from [`SimBrowser::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimStats {
    /// Live page targets (crashed ones included).
    pub targets: usize,
    /// Live targets whose renderer has crashed and not been revived.
    pub crashed_targets: usize,
    /// Attached sessions.
    pub sessions: usize,
    /// Open client WebSockets.
    pub connections: usize,
    /// Well-formed commands received (anything with an id), black-holed ones included.
    pub commands: u64,
    /// Browser contexts created and not disposed (the default context not counted).
    pub contexts: usize,
    /// Frames received that were not a command (bad JSON, no id, binary).
    pub malformed: u64,
    /// Commands swallowed by [`SimBrowser::black_hole`].
    pub black_holed: u64,
}

/// A request to the sim thread; every one is acknowledged so its effect is in place when
/// the caller's method returns.
enum Control {
    CrashTarget(String),
    DropConnections,
    SetReplyDelay(Delay),
    BlackHole(Option<String>),
    Mangle(Option<String>),
    SendMalformed(usize),
    SendUnknownEvents(usize),
    Stats,
    TargetIds,
}

enum ControlReply {
    Done,
    Stats(SimStats),
    TargetIds(Vec<String>),
}

type ControlMsg = (Control, std_mpsc::Sender<ControlReply>);

/// The longest a control call waits for the sim thread before giving up quietly.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// A running simulated browser. Dropping it stops the thread and closes every socket.
pub struct SimBrowser {
    port: u16,
    browser_id: String,
    control: Option<mpsc::UnboundedSender<ControlMsg>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for SimBrowser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimBrowser")
            .field("ws_url", &self.ws_url())
            .finish_non_exhaustive()
    }
}

impl SimBrowser {
    /// Binds `127.0.0.1:0` and starts serving on a new OS thread. Callable from any
    /// context, inside a tokio runtime or not.
    pub fn start(config: SimConfig) -> std::io::Result<SimBrowser> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut core = core::Core::new(&config, std::time::Instant::now());
        let browser_id = core.new_uuid();
        let (tx, rx) = mpsc::unbounded_channel();
        let ws_url = format!("ws://127.0.0.1:{port}/devtools/browser/{browser_id}");
        let thread = std::thread::Builder::new()
            .name("cdpmux-sim".into())
            .spawn(move || server::run(runtime, listener, core, ws_url, rx))?;
        Ok(SimBrowser {
            port,
            browser_id,
            control: Some(tx),
            thread: Some(thread),
        })
    }

    /// The browser WebSocket: `ws://127.0.0.1:PORT/devtools/browser/<id>`.
    pub fn ws_url(&self) -> String {
        format!(
            "ws://127.0.0.1:{}/devtools/browser/{}",
            self.port, self.browser_id
        )
    }

    /// The HTTP endpoint on the same port: `http://127.0.0.1:PORT`. It answers
    /// `GET /json/version` (with `webSocketDebuggerUrl`) and `GET /json/list`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the renderer of `target_id` now, as `kill -9` would: crash events go out, and
    /// the target's sessions stop answering until a `Page.reload`/`Page.navigate` revives
    /// it. Unknown ids are ignored.
    pub fn crash_target(&self, target_id: &str) {
        self.request(Control::CrashTarget(target_id.to_owned()));
    }

    /// Closes every client socket abruptly (TCP close, no close frame). Targets stay;
    /// sessions go with their connection.
    pub fn drop_connections(&self) {
        self.request(Control::DropConnections);
    }

    /// Changes the delay applied to replies from now on.
    pub fn set_reply_delay(&self, delay: Delay) {
        self.request(Control::SetReplyDelay(delay));
    }

    /// Calls to `method` (e.g. `"Runtime.evaluate"`) are never answered from now on;
    /// `None` turns it off. Already swallowed calls stay unanswered.
    pub fn black_hole(&self, method: Option<&str>) {
        self.request(Control::BlackHole(method.map(str::to_owned)));
    }

    /// Calls to `method` are answered from now on with a malformed reply to their id (an
    /// `error` of the wrong shape); `None` turns it off.
    pub fn mangle_replies(&self, method: Option<&str>) {
        self.request(Control::Mangle(method.map(str::to_owned)));
    }

    /// Sends `n` garbage frames to every connection: bad JSON, a binary frame, replies to
    /// ids never sent, JSON with wrong types, an event for an unknown session.
    pub fn send_malformed(&self, n: usize) {
        self.request(Control::SendMalformed(n));
    }

    /// Sends `n` events with made-up methods to every connection (browser-level) and on
    /// every session.
    pub fn send_unknown_events(&self, n: usize) {
        self.request(Control::SendUnknownEvents(n));
    }

    /// Counts of targets, sessions, connections and commands, taken now.
    pub fn stats(&self) -> SimStats {
        match self.request(Control::Stats) {
            Some(ControlReply::Stats(s)) => s,
            _ => SimStats::default(),
        }
    }

    /// Ids of the live targets, in creation order.
    pub fn target_ids(&self) -> Vec<String> {
        match self.request(Control::TargetIds) {
            Some(ControlReply::TargetIds(ids)) => ids,
            _ => Vec::new(),
        }
    }

    /// Sends one control message and waits for its acknowledgement (a quick round trip).
    /// `None` if the sim thread is gone.
    fn request(&self, control: Control) -> Option<ControlReply> {
        let (tx, rx) = std_mpsc::channel();
        self.control.as_ref()?.send((control, tx)).ok()?;
        rx.recv_timeout(CONTROL_TIMEOUT).ok()
    }
}

impl Drop for SimBrowser {
    fn drop(&mut self) {
        // Closing the control channel stops the server loop; the runtime then drops every
        // socket.
        self.control.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
