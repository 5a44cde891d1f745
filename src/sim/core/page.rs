//! Session commands that reach the renderer: navigation and its load events, the toy
//! `Runtime.evaluate`, domain enables, and a hung renderer's backlog.
//!
//! A navigation is two steps: the command starts it and a `Timer::Load` finishes it;
//! a stale timer (the target's `generation` moved on) does nothing. While a renderer is
//! hung, its session's commands queue in order behind it; only
//! `Runtime.terminateExecution` gets through. Never reads the clock: `now` comes in.

use std::collections::VecDeque;
use std::time::Instant;

use serde_json::{json, Value};

use super::{
    error_frame, hex32, result_frame, Command, ConnId, Core, Frame, Output, Timer,
    METHOD_NOT_FOUND, SERVER_ERROR,
};
use crate::sim::eval::{self, Evaluation, PageView};

impl Core {
    /// A command sent on a session: handed to the browser process, held behind a crash
    /// or a hang, or run.
    pub(super) fn session_command(&mut self, sid: &str, cmd: Command, out: &mut Output) {
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

    pub(super) fn run_session_command(&mut self, sid: &str, cmd: Command, out: &mut Output) {
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
            "Network.enable" | "Network.disable" => {
                s.network = method == "Network.enable";
                Ok(json!({}))
            }
            // Accepted; the simulated pages load no subresources to block.
            "Network.setBlockedURLs" | "Fetch.failRequest" => Ok(json!({})),
            // Accepted; the simulated pages have no user agent, headers, locale or clock
            // of their own to change.
            "Emulation.setUserAgentOverride"
            | "Emulation.setLocaleOverride"
            | "Emulation.setTimezoneOverride"
            | "Network.setExtraHTTPHeaders" => Ok(json!({})),
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

    /// The load timer fired at `now`: commit the navigation and send the load events.
    pub(super) fn finish_load(
        &mut self,
        tid: &str,
        generation: u64,
        now: Instant,
        out: &mut Output,
    ) {
        let ts = self.timestamp(now);
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
            let network = s.network && frame["url"].as_str().is_some_and(|u| u.starts_with("http"));
            let mut event = |method: &str, params: Value| {
                let ev = json!({"method": method, "params": params, "sessionId": sid});
                out.text(conn, &ev);
            };
            if network {
                // The document's request, answered 200 at once: what `goto` reports.
                let (loader, url) = (&frame["loaderId"], &frame["url"]);
                event(
                    "Network.requestWillBeSent",
                    json!({"requestId": loader, "loaderId": loader, "frameId": tid,
                        "type": "Document", "request": {"url": url}, "timestamp": ts}),
                );
                event(
                    "Network.responseReceived",
                    json!({"requestId": loader, "loaderId": loader, "frameId": tid,
                        "type": "Document", "timestamp": ts, "response": {"url": url,
                        "status": 200, "statusText": "OK", "mimeType": "text/html",
                        "headers": {"Content-Type": "text/html"}}}),
                );
                event(
                    "Network.loadingFinished",
                    json!({"requestId": loader, "timestamp": ts, "encodedDataLength": 0}),
                );
            }
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
pub(super) fn title_for(url: &str) -> String {
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
    /// Virtual time: a load event carries the time its timer fired, not the clock's.
    #[test]
    fn load_events_carry_the_time_passed_in() {
        let start = Instant::now();
        let mut core = Core::new(&crate::sim::SimConfig::default(), start);
        core.connect(1);
        let send = |core: &mut Core, frame: &str| core.on_text(1, frame);
        send(
            &mut core,
            r#"{"id":1,"method":"Target.createTarget","params":{}}"#,
        );
        let tid = core.target_ids()[0].clone();
        send(
            &mut core,
            &format!(
                r#"{{"id":2,"method":"Target.attachToTarget","params":{{"targetId":"{tid}","flatten":true}}}}"#
            ),
        );
        let sid = core.sessions.keys().next().unwrap().clone();
        send(
            &mut core,
            &format!(r#"{{"id":3,"method":"Page.enable","sessionId":"{sid}"}}"#),
        );
        let out = send(
            &mut core,
            &format!(
                r#"{{"id":4,"method":"Page.navigate","params":{{"url":"https://a.test/"}},"sessionId":"{sid}"}}"#
            ),
        );
        let [(_, timer)] = <[_; 1]>::try_from(out.timers).unwrap();
        let out = core.on_timer(timer, start + std::time::Duration::from_secs(90));
        let load = out
            .frames
            .iter()
            .find_map(|(_, f)| match f {
                Frame::Text(t) if t.contains("Page.loadEventFired") => {
                    serde_json::from_str::<Value>(t).ok()
                }
                _ => None,
            })
            .expect("a load event");
        assert_eq!(load["params"]["timestamp"], 90.0);
    }
}
