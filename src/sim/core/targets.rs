//! Browser-level commands: targets, flat sessions, browser contexts and target
//! discovery (`Target.*`, `Browser.*`).
//!
//! Owns the indexes between targets, sessions and connections: a session is listed by
//! its target and by its connection exactly while it is in `Core::sessions`, and only
//! `attach`, `forget_session` and `close_target` change them. Answered even when the
//! renderer is hung or crashed, as Chrome's browser process does.

use std::collections::VecDeque;

use serde_json::{json, Value};

use super::page::title_for;
use super::{
    error_frame, hex32, result_frame, Command, ConnId, Core, Output, Session, Target,
    INVALID_PARAMS, METHOD_NOT_FOUND,
};

impl Core {
    /// `Storage.getCookies` / `Storage.setCookies` of one context (the default one when
    /// none is named): a cookie replaces one of the same name, domain and path.
    fn cookies(&mut self, method: &str, p: &Value) -> Result<Value, (i64, String)> {
        let ctx = p["browserContextId"]
            .as_str()
            .unwrap_or(&self.default_context)
            .to_owned();
        if ctx != self.default_context && !self.contexts.contains(&ctx) {
            return Err((INVALID_PARAMS, "Failed to find browser context".to_owned()));
        }
        let jar = self.cookies.entry(ctx).or_default();
        if method == "Storage.getCookies" {
            return Ok(json!({ "cookies": jar }));
        }
        let Some(new) = p["cookies"].as_array() else {
            return Err((INVALID_PARAMS, "Invalid parameters: cookies".to_owned()));
        };
        let same = |a: &Value, b: &Value| ["name", "domain", "path"].iter().all(|k| a[k] == b[k]);
        for c in new {
            jar.retain(|old| !same(old, c));
            let mut c = c.clone();
            if c.get("path").is_none() {
                c["path"] = "/".into();
            }
            jar.push(c);
        }
        Ok(json!({}))
    }

    /// A browser-level command, or a `Target.*`/`Browser.*` command sent on a session
    /// (`echo` is then that session's id, echoed in the reply).
    pub(super) fn browser_command(
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
            "Storage.getCookies" | "Storage.setCookies" => self.cookies(&cmd.method, p),
            "Target.disposeBrowserContext" => {
                let ctx = p["browserContextId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                match self.contexts.iter().position(|c| *c == ctx) {
                    Some(i) => {
                        self.contexts.remove(i);
                        self.cookies.remove(&ctx);
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
                network: false,
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
    pub(super) fn close_target(&mut self, tid: &str, out: &mut Output) {
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
    pub(super) fn forget_session(&mut self, sid: &str) -> Option<String> {
        let s = self.sessions.remove(sid)?;
        if let Some(t) = self.targets.get_mut(&s.target) {
            t.sessions.retain(|x| x != sid);
        }
        if let Some(c) = self.conns.get_mut(&s.conn) {
            c.sessions.retain(|x| x != sid);
        }
        Some(s.target)
    }

    pub(super) fn target_info(&self, tid: &str) -> Value {
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

    pub(super) fn to_discovering(&self, ev: &Value, out: &mut Output) {
        for (&conn, c) in &self.conns {
            if c.discover {
                out.text(conn, ev);
            }
        }
    }
}
