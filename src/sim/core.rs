//! The simulated browser's state machine: targets, sessions, contexts and connections.
//!
//! Pure: no sockets, no timers, no threads. Every input (a text frame from a connection, a
//! timer that fired, a fault injected by the test) returns an [`Output`]: the frames to
//! send to which connection, and the timers to start. The IO shell (`server.rs`) does the
//! sending and the waiting. Must never panic on any input.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use super::eval::{self, Evaluation, PageView};
use super::{Delay, SimConfig, SimStats};

/// Identifies one client WebSocket.
pub(crate) type ConnId = u64;

/// One WebSocket frame to send.
#[derive(Debug, Clone)]
pub(crate) enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

/// Something to do later, on the same state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Timer {
    /// A navigation of `target` finishes loading, unless `generation` is stale.
    Load { target: String, generation: u64 },
    /// `Page.crash` takes effect.
    Crash { target: String },
}

/// What the shell must do after an input.
#[derive(Debug, Default)]
pub(crate) struct Output {
    /// Frames in send order.
    pub frames: Vec<(ConnId, Frame)>,
    /// Timers to start once the frames are sent.
    pub timers: Vec<(Duration, Timer)>,
    /// How long to hold the frames back (the configured reply delay).
    pub delay: Duration,
}

impl Output {
    fn text(&mut self, conn: ConnId, value: &Value) {
        self.frames.push((conn, Frame::Text(value.to_string())));
    }
}

/// CDP error codes used by Chromium.
const SERVER_ERROR: i64 = -32000;
const SESSION_NOT_FOUND: i64 = -32001;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;

/// `Target.targetCrashed` fields for a `Page.crash` (a renderer CHECK failure) and for an
/// external kill (SIGKILL).
const CRASH_STATUS: (&str, i64) = ("crashed", 5);
const KILL_STATUS: (&str, i64) = ("killed", 9);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Incoming {
    id: Option<u64>,
    method: Option<String>,
    #[serde(default)]
    params: Value,
    session_id: Option<String>,
}

/// A command parsed far enough to route it.
#[derive(Debug)]
struct Command {
    id: u64,
    method: String,
    params: Value,
}

struct Target {
    /// Creation order, for stable listings.
    seq: u64,
    context: String,
    url: String,
    title: String,
    crashed: bool,
    /// Bumped by every navigation, stop and crash, so a stale load timer does nothing.
    generation: u64,
    /// The navigation in flight: url and loader id.
    pending: Option<(String, String)>,
    loader: String,
    sessions: Vec<String>,
}

struct Session {
    conn: ConnId,
    target: String,
    page: bool,
    runtime: bool,
    inspector: bool,
    lifecycle: bool,
    /// The id of the evaluate that hung the renderer.
    hung: Option<u64>,
    /// Commands that arrived while the renderer was hung, in order.
    queued: VecDeque<Command>,
    /// Ids of commands swallowed by a crash; answered with "Target crashed" on revival.
    stuck: Vec<u64>,
}

#[derive(Default)]
struct Conn {
    discover: bool,
    sessions: Vec<String>,
}

/// The whole simulated browser.
pub(crate) struct Core {
    rng: fastrand::Rng,
    started: Instant,
    load_time: Duration,
    crash_delay: Duration,
    reply_delay: Delay,
    black_hole: Option<String>,
    default_context: String,
    contexts: Vec<String>,
    targets: BTreeMap<String, Target>,
    sessions: BTreeMap<String, Session>,
    conns: BTreeMap<ConnId, Conn>,
    next_target_seq: u64,
    commands: u64,
    malformed: u64,
    black_holed: u64,
}

impl Core {
    pub(crate) fn new(config: &SimConfig) -> Core {
        let mut rng = fastrand::Rng::with_seed(config.seed);
        let default_context = hex32(&mut rng);
        Core {
            rng,
            started: Instant::now(),
            load_time: config.load_time,
            crash_delay: config.crash_delay,
            reply_delay: config.reply_delay,
            black_hole: None,
            default_context,
            contexts: Vec::new(),
            targets: BTreeMap::new(),
            sessions: BTreeMap::new(),
            conns: BTreeMap::new(),
            next_target_seq: 0,
            commands: 0,
            malformed: 0,
            black_holed: 0,
        }
    }

    /// A fresh id in the browser's format; also used for the browser id in the URL.
    pub(crate) fn new_uuid(&mut self) -> String {
        let v = self.rng.u128(..);
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            v >> 96,
            (v >> 80) & 0xffff,
            (v >> 64) & 0xffff,
            (v >> 48) & 0xffff,
            v & 0xffff_ffff_ffff
        )
    }

    pub(crate) fn connect(&mut self, conn: ConnId) {
        self.conns.insert(conn, Conn::default());
    }

    /// A client went away: its sessions go with it, its targets stay (as in Chrome).
    pub(crate) fn disconnect(&mut self, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        for sid in c.sessions {
            self.forget_session(&sid);
        }
    }

    pub(crate) fn set_reply_delay(&mut self, delay: Delay) {
        self.reply_delay = delay;
    }

    pub(crate) fn set_black_hole(&mut self, method: Option<String>) {
        self.black_hole = method;
    }

    pub(crate) fn stats(&self) -> SimStats {
        SimStats {
            targets: self.targets.len(),
            crashed_targets: self.targets.values().filter(|t| t.crashed).count(),
            sessions: self.sessions.len(),
            connections: self.conns.len(),
            commands: self.commands,
            contexts: self.contexts.len(),
            malformed: self.malformed,
            black_holed: self.black_holed,
        }
    }

    /// Target ids in creation order.
    pub(crate) fn target_ids(&self) -> Vec<String> {
        let mut ids: Vec<(&u64, &String)> = self.targets.iter().map(|(k, t)| (&t.seq, k)).collect();
        ids.sort();
        ids.into_iter().map(|(_, k)| k.clone()).collect()
    }

    /// `GET /json/list`: the page targets, as Chrome's HTTP endpoint lists them.
    pub(crate) fn json_list(&self) -> Value {
        let list: Vec<Value> = self
            .target_ids()
            .iter()
            .filter_map(|id| {
                let t = self.targets.get(id)?;
                Some(json!({"id": id, "type": "page", "title": t.title, "url": t.url}))
            })
            .collect();
        Value::Array(list)
    }

    /// A received binary frame: Chrome ignores it.
    pub(crate) fn on_binary(&mut self) {
        self.malformed += 1;
    }

    /// One text frame from `conn`.
    pub(crate) fn on_text(&mut self, conn: ConnId, text: &str) -> Output {
        let mut out = Output::default();
        let Ok(msg) = serde_json::from_str::<Incoming>(text) else {
            self.malformed += 1;
            return out;
        };
        let Some(id) = msg.id else {
            self.malformed += 1;
            return out;
        };
        self.commands += 1;
        out.delay = self.draw_delay();
        let Some(method) = msg.method else {
            let err = error_frame(
                id,
                INVALID_REQUEST,
                "Message must have string 'method' property",
                msg.session_id.as_deref(),
            );
            out.text(conn, &err);
            return out;
        };
        if self.black_hole.as_deref() == Some(method.as_str()) {
            self.black_holed += 1;
            return out;
        }
        let cmd = Command {
            id,
            method,
            params: msg.params,
        };
        match msg.session_id {
            None => self.browser_command(conn, cmd, None, &mut out),
            Some(sid) => match self.sessions.get(&sid) {
                Some(s) if s.conn == conn => self.session_command(&sid, cmd, &mut out),
                _ => out.text(
                    conn,
                    &error_frame(
                        id,
                        SESSION_NOT_FOUND,
                        "Session with given id not found.",
                        Some(&sid),
                    ),
                ),
            },
        }
        out
    }

    /// A timer started by an earlier [`Output`] fired.
    pub(crate) fn on_timer(&mut self, timer: Timer) -> Output {
        let mut out = Output::default();
        match timer {
            Timer::Load { target, generation } => self.finish_load(&target, generation, &mut out),
            Timer::Crash { target } => self.crash(&target, CRASH_STATUS, &mut out),
        }
        out
    }

    /// Fault injection: kill the renderer of `target` now.
    pub(crate) fn kill_target(&mut self, target: &str) -> Output {
        let mut out = Output::default();
        self.crash(target, KILL_STATUS, &mut out);
        out
    }

    /// Fault injection: `n` frames a client must survive, to every connection.
    pub(crate) fn malformed_frames(&mut self, n: usize) -> Output {
        let mut out = Output::default();
        for &conn in self.conns.keys() {
            for i in 0..n {
                let frame = match i % 10 {
                    0 => Frame::Text("{not json".into()),
                    1 => Frame::Binary(vec![0x00, 0xff, 0x13, 0x37]),
                    2 => Frame::Text(format!(r#"{{"id":{},"result":{{}}}}"#, 9_000_000_000u64 + i as u64)),
                    3 => Frame::Text(r#"{"id":"seven","result":[]}"#.into()),
                    4 => Frame::Text(r#"{"method":42,"params":"nope"}"#.into()),
                    5 => Frame::Text(format!(
                        r#"{{"id":{},"error":{{"code":"x","message":7}}}}"#,
                        9_100_000_000u64 + i as u64
                    )),
                    6 => Frame::Text("[]".into()),
                    7 => Frame::Text(String::new()),
                    8 => Frame::Text(
                        r#"{"method":"Target.targetCreated","params":{"targetInfo":7}}"#.into(),
                    ),
                    _ => Frame::Text(
                        r#"{"method":"Runtime.consoleAPICalled","params":{},"sessionId":"0000NOSUCHSESSION0000"}"#
                            .into(),
                    ),
                };
                out.frames.push((conn, frame));
            }
        }
        out
    }

    /// Fault injection: `n` events with made-up methods, browser-level to every connection
    /// and on every session.
    pub(crate) fn unknown_events(&mut self, n: usize) -> Output {
        let mut out = Output::default();
        for &conn in self.conns.keys() {
            for i in 0..n {
                let ev = json!({"method": format!("SimUnknown.browserEvent{}", i % 4), "params": {"seq": i}});
                out.text(conn, &ev);
            }
        }
        for (sid, s) in &self.sessions {
            for i in 0..n {
                let ev = json!({
                    "method": format!("SimUnknown.sessionEvent{}", i % 4),
                    "params": {"seq": i, "nested": {"a": [1, 2, 3]}},
                    "sessionId": sid,
                });
                out.text(s.conn, &ev);
            }
        }
        out
    }

    fn draw_delay(&mut self) -> Duration {
        match self.reply_delay {
            Delay::None => Duration::ZERO,
            Delay::Fixed(d) => d,
            Delay::Uniform(lo, hi) if hi <= lo => lo,
            Delay::Uniform(lo, hi) => {
                let span = u64::try_from((hi - lo).as_nanos()).unwrap_or(u64::MAX);
                lo + Duration::from_nanos(self.rng.u64(0..=span))
            }
        }
    }

    fn timestamp(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    // ---- browser-level commands -------------------------------------------------------

    /// A browser-level command, or a `Target.*`/`Browser.*` command sent on a session
    /// (`echo` is then that session's id, echoed in the reply).
    fn browser_command(
        &mut self,
        conn: ConnId,
        cmd: Command,
        echo: Option<&str>,
        out: &mut Output,
    ) {
        let id = cmd.id;
        let p = &cmd.params;
        let reply = match cmd.method.as_str() {
            "Browser.getVersion" => Ok(json!({
                "protocolVersion": "1.3",
                "product": "cdpmux-sim/1",
                "revision": "@cdpmux-sim",
                "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/1.0 Safari/537.36 cdpmux-sim/1",
                "jsVersion": "0.0-sim",
            })),
            "Target.setDiscoverTargets" => {
                let discover = p["discover"].as_bool().unwrap_or(false);
                let was = self.conns.get(&conn).is_some_and(|c| c.discover);
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.discover = discover;
                }
                if discover && !was {
                    // Chrome announces the targets that already exist.
                    for tid in self.target_ids() {
                        let ev = json!({"method": "Target.targetCreated", "params": {"targetInfo": self.target_info(&tid)}});
                        out.text(conn, &ev);
                    }
                }
                Ok(json!({}))
            }
            "Target.createTarget" => self.create_target(p, out),
            "Target.attachToTarget" => self.attach(conn, p, out),
            "Target.detachFromTarget" => self.detach(conn, p, out),
            "Target.closeTarget" => match p["targetId"].as_str() {
                Some(tid) if self.targets.contains_key(tid) => {
                    let tid = tid.to_owned();
                    out.text(conn, &result_frame(id, json!({"success": true}), echo));
                    self.close_target(&tid, out);
                    return;
                }
                _ => Err((INVALID_PARAMS, "No target with given id found".to_owned())),
            },
            "Target.getTargets" => {
                let infos: Vec<Value> = self
                    .target_ids()
                    .iter()
                    .map(|t| self.target_info(t))
                    .collect();
                Ok(json!({ "targetInfos": infos }))
            }
            "Target.getTargetInfo" => {
                let tid = p["targetId"].as_str().map(str::to_owned).or_else(|| {
                    echo.and_then(|s| self.sessions.get(s))
                        .map(|s| s.target.clone())
                });
                match tid {
                    Some(t) if self.targets.contains_key(&t) => {
                        Ok(json!({"targetInfo": self.target_info(&t)}))
                    }
                    _ => Err((INVALID_PARAMS, "No target with given id found".to_owned())),
                }
            }
            "Target.activateTarget" => match p["targetId"].as_str() {
                Some(t) if self.targets.contains_key(t) => Ok(json!({})),
                _ => Err((INVALID_PARAMS, "No target with given id found".to_owned())),
            },
            "Target.createBrowserContext" => {
                let ctx = hex32(&mut self.rng);
                self.contexts.push(ctx.clone());
                Ok(json!({ "browserContextId": ctx }))
            }
            "Target.getBrowserContexts" => Ok(json!({ "browserContextIds": self.contexts })),
            "Target.disposeBrowserContext" => {
                let ctx = p["browserContextId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                match self.contexts.iter().position(|c| *c == ctx) {
                    Some(i) => {
                        self.contexts.remove(i);
                        out.text(conn, &result_frame(id, json!({}), echo));
                        let doomed: Vec<String> = self
                            .target_ids()
                            .into_iter()
                            .filter(|t| self.targets.get(t).is_some_and(|t| t.context == ctx))
                            .collect();
                        for t in doomed {
                            self.close_target(&t, out);
                        }
                        return;
                    }
                    None => Err((
                        INVALID_PARAMS,
                        format!("Failed to find context with id {ctx}"),
                    )),
                }
            }
            other => Err((METHOD_NOT_FOUND, format!("'{other}' wasn't found"))),
        };
        let frame = match reply {
            Ok(result) => result_frame(id, result, echo),
            Err((code, message)) => error_frame(id, code, &message, echo),
        };
        out.text(conn, &frame);
    }

    fn create_target(&mut self, p: &Value, out: &mut Output) -> Result<Value, (i64, String)> {
        let context = match p["browserContextId"].as_str() {
            None => self.default_context.clone(),
            Some(c) if self.contexts.iter().any(|k| k == c) || c == self.default_context => {
                c.to_owned()
            }
            Some(c) => {
                return Err((
                    INVALID_PARAMS,
                    format!("Failed to find browser context with id {c}"),
                ))
            }
        };
        let url = p["url"]
            .as_str()
            .filter(|u| !u.is_empty())
            .unwrap_or("about:blank");
        let tid = hex32(&mut self.rng);
        self.next_target_seq += 1;
        let loader = hex32(&mut self.rng);
        self.targets.insert(
            tid.clone(),
            Target {
                seq: self.next_target_seq,
                context,
                url: url.to_owned(),
                title: title_for(url),
                crashed: false,
                generation: 0,
                pending: None,
                loader,
                sessions: Vec::new(),
            },
        );
        let ev = json!({"method": "Target.targetCreated", "params": {"targetInfo": self.target_info(&tid)}});
        self.to_discovering(&ev, out);
        Ok(json!({ "targetId": tid }))
    }

    fn attach(
        &mut self,
        conn: ConnId,
        p: &Value,
        out: &mut Output,
    ) -> Result<Value, (i64, String)> {
        let tid = p["targetId"].as_str().unwrap_or_default();
        if !self.targets.contains_key(tid) {
            return Err((
                INVALID_PARAMS,
                format!("No target with given id found: {tid:?}"),
            ));
        }
        if p["flatten"].as_bool() != Some(true) {
            return Err((
                INVALID_PARAMS,
                "cdpmux-sim supports only flat sessions: pass flatten: true".to_owned(),
            ));
        }
        let tid = tid.to_owned();
        let sid = hex32(&mut self.rng);
        self.sessions.insert(
            sid.clone(),
            Session {
                conn,
                target: tid.clone(),
                page: false,
                runtime: false,
                inspector: false,
                lifecycle: false,
                hung: None,
                queued: VecDeque::new(),
                stuck: Vec::new(),
            },
        );
        if let Some(t) = self.targets.get_mut(&tid) {
            t.sessions.push(sid.clone());
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.sessions.push(sid.clone());
        }
        let ev = json!({
            "method": "Target.attachedToTarget",
            "params": {"sessionId": sid, "targetInfo": self.target_info(&tid), "waitingForDebugger": false},
        });
        out.text(conn, &ev);
        Ok(json!({ "sessionId": sid }))
    }

    fn detach(
        &mut self,
        conn: ConnId,
        p: &Value,
        out: &mut Output,
    ) -> Result<Value, (i64, String)> {
        let sid = match (p["sessionId"].as_str(), p["targetId"].as_str()) {
            (Some(s), _) => Some(s.to_owned()),
            // Deprecated form: the first session of this connection on that target.
            (None, Some(t)) => self
                .sessions
                .iter()
                .find(|(_, s)| s.conn == conn && s.target == t)
                .map(|(k, _)| k.clone()),
            (None, None) => None,
        };
        let Some(sid) = sid.filter(|s| self.sessions.get(s).is_some_and(|s| s.conn == conn)) else {
            return Err((INVALID_PARAMS, "No session with given id".to_owned()));
        };
        let tid = self.forget_session(&sid).unwrap_or_default();
        let ev = json!({"method": "Target.detachedFromTarget", "params": {"sessionId": sid, "targetId": tid}});
        out.text(conn, &ev);
        Ok(json!({}))
    }

    /// Closes `tid`: detaches every session (their pending calls are never answered) and
    /// tells the discovering connections.
    fn close_target(&mut self, tid: &str, out: &mut Output) {
        let Some(target) = self.targets.remove(tid) else {
            return;
        };
        for sid in &target.sessions {
            let Some(s) = self.sessions.remove(sid) else {
                continue;
            };
            if let Some(c) = self.conns.get_mut(&s.conn) {
                c.sessions.retain(|x| x != sid);
            }
            if s.inspector {
                let ev = json!({"method": "Inspector.detached", "params": {"reason": "Render process gone."}, "sessionId": sid});
                out.text(s.conn, &ev);
            }
            let ev = json!({"method": "Target.detachedFromTarget", "params": {"sessionId": sid, "targetId": tid}});
            out.text(s.conn, &ev);
        }
        let ev = json!({"method": "Target.targetDestroyed", "params": {"targetId": tid}});
        self.to_discovering(&ev, out);
    }

    /// Removes a session from every index; returns its target id.
    fn forget_session(&mut self, sid: &str) -> Option<String> {
        let s = self.sessions.remove(sid)?;
        if let Some(t) = self.targets.get_mut(&s.target) {
            t.sessions.retain(|x| x != sid);
        }
        if let Some(c) = self.conns.get_mut(&s.conn) {
            c.sessions.retain(|x| x != sid);
        }
        Some(s.target)
    }

    fn target_info(&self, tid: &str) -> Value {
        let Some(t) = self.targets.get(tid) else {
            return Value::Null;
        };
        json!({
            "targetId": tid,
            "type": "page",
            "title": t.title,
            "url": t.url,
            "attached": !t.sessions.is_empty(),
            "canAccessOpener": false,
            "browserContextId": t.context,
        })
    }

    fn to_discovering(&self, ev: &Value, out: &mut Output) {
        for (&conn, c) in &self.conns {
            if c.discover {
                out.text(conn, ev);
            }
        }
    }

    // ---- session commands -------------------------------------------------------------

    fn session_command(&mut self, sid: &str, cmd: Command, out: &mut Output) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        if cmd.method.starts_with("Target.") || cmd.method.starts_with("Browser.") {
            // Handled by the browser process: answered even when the renderer is hung or
            // dead.
            let conn = s.conn;
            self.browser_command(conn, cmd, Some(sid), out);
            return;
        }
        let crashed = self.targets.get(&s.target).is_some_and(|t| t.crashed);
        if crashed {
            let revives = matches!(cmd.method.as_str(), "Page.reload" | "Page.navigate")
                && (cmd.method == "Page.reload"
                    || cmd.params["url"].as_str().is_some_and(valid_url));
            if !revives {
                s.stuck.push(cmd.id);
                return;
            }
            let tid = s.target.clone();
            self.revive(&tid, sid, cmd, out);
            return;
        }
        if let Some(hung_id) = s.hung {
            if cmd.method != "Runtime.terminateExecution" {
                s.queued.push_back(cmd);
                return;
            }
            let conn = s.conn;
            s.hung = None;
            let queued = std::mem::take(&mut s.queued);
            out.text(conn, &result_frame(cmd.id, json!({}), Some(sid)));
            let err = error_frame(hung_id, SERVER_ERROR, "Execution was terminated", Some(sid));
            out.text(conn, &err);
            self.replay(sid, queued, out);
            return;
        }
        self.run_session_command(sid, cmd, out);
    }

    /// Runs commands that waited behind a hang, in order, until one hangs again.
    fn replay(&mut self, sid: &str, mut queued: VecDeque<Command>, out: &mut Output) {
        while let Some(cmd) = queued.pop_front() {
            self.session_command(sid, cmd, out);
            if let Some(s) = self.sessions.get_mut(sid) {
                if s.hung.is_some() || self.targets.get(&s.target).is_some_and(|t| t.crashed) {
                    // The rest waits again, behind the new hang (or the crash).
                    for c in queued.drain(..) {
                        self.session_command(sid, c, out);
                    }
                    return;
                }
            } else {
                return;
            }
        }
    }

    fn run_session_command(&mut self, sid: &str, cmd: Command, out: &mut Output) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let conn = s.conn;
        let tid = s.target.clone();
        let id = cmd.id;
        let method = cmd.method.as_str();
        // Events that Chrome sends after the reply (frameStartedLoading after navigate).
        let mut after = Vec::new();
        let reply = match method {
            "Runtime.evaluate" => {
                let expr = cmd.params["expression"].as_str().unwrap_or_default();
                let (url, title) = self
                    .targets
                    .get(&tid)
                    .map(|t| (t.url.as_str(), t.title.as_str()))
                    .unwrap_or(("about:blank", ""));
                match eval::evaluate(expr, &PageView { url, title }) {
                    Evaluation::Value(v) | Evaluation::Exception(v) => Ok(v),
                    Evaluation::Hang => {
                        s.hung = Some(id);
                        return;
                    }
                }
            }
            "Runtime.terminateExecution" => Ok(json!({})),
            "Runtime.enable" => {
                s.runtime = true;
                let ev = self.context_created(sid, &tid);
                out.text(conn, &ev);
                Ok(json!({}))
            }
            "Runtime.disable" => {
                s.runtime = false;
                Ok(json!({}))
            }
            "Page.enable" | "Page.disable" => {
                s.page = method == "Page.enable";
                Ok(json!({}))
            }
            "Inspector.enable" | "Inspector.disable" => {
                s.inspector = method == "Inspector.enable";
                Ok(json!({}))
            }
            "Page.setLifecycleEventsEnabled" => {
                s.lifecycle = cmd.params["enabled"].as_bool().unwrap_or(false);
                Ok(json!({}))
            }
            "Page.navigate" => {
                let url = cmd.params["url"].as_str().unwrap_or_default();
                if valid_url(url) {
                    let loader = self.start_load(&tid, url.to_owned(), &mut after, out);
                    Ok(json!({"frameId": tid, "loaderId": loader}))
                } else {
                    Err((SERVER_ERROR, "Cannot navigate to invalid URL".to_owned()))
                }
            }
            "Page.reload" => {
                let url = self
                    .targets
                    .get(&tid)
                    .map(|t| t.url.clone())
                    .unwrap_or_default();
                self.start_load(&tid, url, &mut after, out);
                Ok(json!({}))
            }
            "Page.stopLoading" => {
                if let Some(t) = self.targets.get_mut(&tid) {
                    t.generation += 1;
                    t.pending = None;
                }
                Ok(json!({}))
            }
            "Page.crash" => {
                out.timers
                    .push((self.crash_delay, Timer::Crash { target: tid }));
                return;
            }
            "Page.getFrameTree" => Ok(json!({"frameTree": {"frame": self.frame(&tid)}})),
            m if m.ends_with(".enable") || m.ends_with(".disable") => Ok(json!({})),
            other => Err((METHOD_NOT_FOUND, format!("'{other}' wasn't found"))),
        };
        let frame = match reply {
            Ok(result) => result_frame(id, result, Some(sid)),
            Err((code, message)) => error_frame(id, code, &message, Some(sid)),
        };
        out.text(conn, &frame);
        out.frames.append(&mut after);
    }

    /// Starts loading `url` in `tid`; the load finishes on a timer. Returns the loader id.
    fn start_load(
        &mut self,
        tid: &str,
        url: String,
        after: &mut Vec<(ConnId, Frame)>,
        out: &mut Output,
    ) -> String {
        let loader = hex32(&mut self.rng);
        let Some(t) = self.targets.get_mut(tid) else {
            return loader;
        };
        t.generation += 1;
        t.pending = Some((url, loader.clone()));
        out.timers.push((
            self.load_time,
            Timer::Load {
                target: tid.to_owned(),
                generation: t.generation,
            },
        ));
        for sid in &t.sessions {
            if let Some(s) = self.sessions.get(sid).filter(|s| s.page) {
                let ev = json!({"method": "Page.frameStartedLoading", "params": {"frameId": tid}, "sessionId": sid});
                after.push((s.conn, Frame::Text(ev.to_string())));
            }
        }
        loader
    }

    /// The load timer fired: commit the navigation and send the load events.
    fn finish_load(&mut self, tid: &str, generation: u64, out: &mut Output) {
        let ts = self.timestamp();
        let Some(t) = self.targets.get_mut(tid) else {
            return;
        };
        if t.generation != generation || t.crashed {
            return;
        }
        let Some((url, loader)) = t.pending.take() else {
            return;
        };
        t.title = title_for(&url);
        t.url = url;
        t.loader = loader;
        let frame = self.frame(tid);
        let sessions = self
            .targets
            .get(tid)
            .map(|t| t.sessions.clone())
            .unwrap_or_default();
        for sid in &sessions {
            let Some(s) = self.sessions.get(sid) else {
                continue;
            };
            let (conn, page, runtime, lifecycle) = (s.conn, s.page, s.runtime, s.lifecycle);
            let mut event = |method: &str, params: Value| {
                let ev = json!({"method": method, "params": params, "sessionId": sid});
                out.text(conn, &ev);
            };
            if runtime {
                event("Runtime.executionContextsCleared", json!({}));
            }
            if page {
                event(
                    "Page.frameNavigated",
                    json!({"frame": frame, "type": "Navigation"}),
                );
            }
            if runtime {
                let ev = self.context_created(sid, tid);
                out.text(conn, &ev);
            }
            let loader = &frame["loaderId"];
            let mut event = |method: &str, params: Value| {
                let ev = json!({"method": method, "params": params, "sessionId": sid});
                out.text(conn, &ev);
            };
            for (name, page_event) in [
                ("DOMContentLoaded", "Page.domContentEventFired"),
                ("load", "Page.loadEventFired"),
            ] {
                if page && lifecycle {
                    event(
                        "Page.lifecycleEvent",
                        json!({"frameId": tid, "loaderId": loader, "name": name, "timestamp": ts}),
                    );
                }
                if page {
                    event(page_event, json!({ "timestamp": ts }));
                }
            }
            if page {
                event("Page.frameStoppedLoading", json!({ "frameId": tid }));
            }
        }
        let ev = json!({"method": "Target.targetInfoChanged", "params": {"targetInfo": self.target_info(tid)}});
        self.to_discovering(&ev, out);
    }

    /// The renderer of `tid` dies: sessions stay attached, every call on them hangs.
    fn crash(&mut self, tid: &str, (status, code): (&str, i64), out: &mut Output) {
        let Some(t) = self.targets.get_mut(tid) else {
            return;
        };
        if t.crashed {
            return;
        }
        t.crashed = true;
        t.generation += 1;
        t.pending = None;
        for sid in &t.sessions {
            let Some(s) = self.sessions.get_mut(sid) else {
                continue;
            };
            // A hung renderer's backlog now waits for the revival like any stuck call.
            s.stuck.extend(s.hung.take());
            s.stuck.extend(s.queued.drain(..).map(|c| c.id));
            if s.inspector {
                let ev =
                    json!({"method": "Inspector.targetCrashed", "params": {}, "sessionId": sid});
                out.text(s.conn, &ev);
            }
        }
        let ev = json!({"method": "Target.targetCrashed", "params": {"targetId": tid, "status": status, "errorCode": code}});
        self.to_discovering(&ev, out);
    }

    /// `Page.reload`/`Page.navigate` on a crashed target: fail what was stuck, run the
    /// command, then announce the new renderer.
    fn revive(&mut self, tid: &str, sid: &str, cmd: Command, out: &mut Output) {
        let sessions = match self.targets.get_mut(tid) {
            Some(t) => {
                t.crashed = false;
                t.sessions.clone()
            }
            None => return,
        };
        for other in &sessions {
            if let Some(s) = self.sessions.get_mut(other) {
                for id in s.stuck.drain(..) {
                    let err = error_frame(id, SERVER_ERROR, "Target crashed", Some(other));
                    out.frames.push((s.conn, Frame::Text(err.to_string())));
                }
            }
        }
        self.run_session_command(sid, cmd, out);
        for other in &sessions {
            if let Some(s) = self.sessions.get(other).filter(|s| s.inspector) {
                let ev = json!({"method": "Inspector.targetReloadedAfterCrash", "params": {}, "sessionId": other});
                out.text(s.conn, &ev);
            }
        }
    }

    /// The main frame of `tid` (its id is the target id, as in Chrome).
    fn frame(&self, tid: &str) -> Value {
        let Some(t) = self.targets.get(tid) else {
            return Value::Null;
        };
        json!({
            "id": tid,
            "loaderId": t.loader,
            "url": t.url,
            "domainAndRegistry": "",
            "securityOrigin": origin(&t.url),
            "mimeType": "text/html",
            "secureContextType": "Secure",
            "crossOriginIsolatedContextType": "NotIsolated",
            "gatedAPIFeatures": [],
        })
    }

    fn context_created(&self, sid: &str, tid: &str) -> Value {
        let (url, generation) = self
            .targets
            .get(tid)
            .map_or(("about:blank", 0), |t| (t.url.as_str(), t.generation));
        json!({
            "method": "Runtime.executionContextCreated",
            "params": {"context": {
                "id": generation + 1,
                "origin": origin(url),
                "name": "",
                "uniqueId": format!("{tid}.{generation}"),
                "auxData": {"isDefault": true, "type": "default", "frameId": tid},
            }},
            "sessionId": sid,
        })
    }
}

/// 32 uppercase hex digits, Chromium's format for target, session and context ids.
fn hex32(rng: &mut fastrand::Rng) -> String {
    format!("{:032X}", rng.u128(..))
}

fn result_frame(id: u64, result: Value, session: Option<&str>) -> Value {
    match session {
        Some(s) => json!({"id": id, "result": result, "sessionId": s}),
        None => json!({"id": id, "result": result}),
    }
}

fn error_frame(id: u64, code: i64, message: &str, session: Option<&str>) -> Value {
    let error = json!({"code": code, "message": message});
    match session {
        Some(s) => json!({"id": id, "error": error, "sessionId": s}),
        None => json!({"id": id, "error": error}),
    }
}

/// A URL Chrome would navigate to: a scheme (`[a-z][a-z0-9+.-]*:`) and something after it.
fn valid_url(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !url.contains(char::is_whitespace)
}

/// The deterministic title of a page at `url`: `title=XYZ` in the query wins, then
/// "sim: /path" for http(s), and "" for anything else (about:blank included).
fn title_for(url: &str) -> String {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return String::new();
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let (host_path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if let Some(v) = query.split('&').find_map(|kv| kv.strip_prefix("title=")) {
        return percent_decode(v);
    }
    let path = host_path.find('/').map_or("/", |i| &host_path[i..]);
    format!("sim: {path}")
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `scheme://host` of a URL, or "://" for URLs without an origin (as Chrome reports).
fn origin(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
            format!("{scheme}://{host}")
        }
        None => "://".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_and_urls() {
        assert_eq!(title_for("https://a.test/x/y?z=1#f"), "sim: /x/y");
        assert_eq!(title_for("http://a.test"), "sim: /");
        assert_eq!(
            title_for("http://a.test/p?a=1&title=Hi+there%21"),
            "Hi there!"
        );
        assert_eq!(title_for("about:blank"), "");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert!(valid_url("about:blank") && valid_url("data:text/html,x"));
        assert!(!valid_url("example.com") && !valid_url("1http://x") && !valid_url("http:"));
        assert_eq!(origin("https://a.test:8080/x"), "https://a.test:8080");
    }

    /// Arbitrary frames, including well-formed commands with hostile params, never panic.
    #[test]
    fn survives_garbage() {
        let mut core = Core::new(&SimConfig::default());
        core.connect(1);
        let create_target = |core: &mut Core, id: u64| {
            core.on_text(
                1,
                &format!(r#"{{"id":{id},"method":"Target.createTarget","params":{{}}}}"#),
            );
        };
        create_target(&mut core, 1);
        let tid = core.target_ids()[0].clone();
        let out = core.on_text(
            1,
            &format!(r#"{{"id":2,"method":"Target.attachToTarget","params":{{"targetId":"{tid}","flatten":true}}}}"#),
        );
        assert_eq!(out.frames.len(), 2);
        let sid = core.sessions.keys().next().unwrap().clone();
        let mut rng = fastrand::Rng::with_seed(1);
        let methods = [
            "Page.navigate",
            "Page.reload",
            "Page.crash",
            "Runtime.evaluate",
            "Runtime.terminateExecution",
            "Target.closeTarget",
            "Target.detachFromTarget",
            "Target.disposeBrowserContext",
            "Target.createTarget",
            "Inspector.enable",
        ];
        let params = [
            "null",
            "7",
            "[]",
            r#"{"url":5}"#,
            r#"{"expression":"while(true){}"}"#,
            r#"{"targetId":null}"#,
        ];
        for i in 0..5_000u64 {
            let method = methods[rng.usize(..methods.len())];
            let param = params[rng.usize(..params.len())];
            let session = if rng.bool() {
                format!(r#","sessionId":"{sid}""#)
            } else {
                String::new()
            };
            let frame = format!(
                r#"{{"id":{},"method":"{method}","params":{param}{session}}}"#,
                i + 10
            );
            let out = core.on_text(1, &frame);
            for (_, timer) in out.timers {
                core.on_timer(timer);
            }
            let cut = rng.usize(..=frame.len());
            if frame.is_char_boundary(cut) {
                core.on_text(1, &frame[..cut]);
            }
        }
        core.kill_target(&tid);
        core.malformed_frames(20);
        core.unknown_events(3);
        core.disconnect(1);
        assert_eq!(core.stats().sessions, 0);
    }
}
