//! The simulated browser (`cdpmux::sim`), driven by a plain tokio-tungstenite client so
//! these tests do not depend on cdpmux's own transport.

use std::future::Future;
use std::time::{Duration, Instant};

use cdpmux::sim::{Delay, SimBrowser, SimConfig};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Every test body runs under this bound.
async fn bounded<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(Duration::from_secs(10), body)
        .await
        .expect("test timed out");
}

/// A minimal CDP client: sends commands, keeps every frame it has not been asked for yet.
struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    inbox: Vec<Value>,
}

impl Client {
    async fn connect(sim: &SimBrowser) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(sim.ws_url())
            .await
            .expect("connect");
        Client {
            ws,
            next_id: 0,
            inbox: Vec::new(),
        }
    }

    async fn send(&mut self, method: &str, params: Value, session: Option<&str>) -> u64 {
        self.next_id += 1;
        let mut msg = json!({"id": self.next_id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .expect("send");
        self.next_id
    }

    /// Sends a command and returns its whole reply frame.
    async fn call(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
        let id = self.send(method, params, session).await;
        self.reply(id).await
    }

    /// Sends a command and returns its `result`, failing on an error reply.
    async fn ok(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
        let reply = self.call(method, params, session).await;
        assert!(reply.get("error").is_none(), "{method} failed: {reply}");
        reply["result"].clone()
    }

    /// The next JSON frame from the socket; `None` once it is closed.
    async fn read(&mut self) -> Option<Value> {
        loop {
            match self.ws.next().await? {
                Ok(Message::Text(t)) => {
                    if let Ok(v) = serde_json::from_str::<Value>(t.as_str()) {
                        return Some(v);
                    }
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    async fn take(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.inbox.iter().position(&pred) {
            return self.inbox.remove(i);
        }
        loop {
            let v = self.read().await.expect("socket closed while waiting");
            if pred(&v) {
                return v;
            }
            self.inbox.push(v);
        }
    }

    async fn reply(&mut self, id: u64) -> Value {
        self.take(|v| v["id"] == id && v.get("method").is_none())
            .await
    }

    async fn event(&mut self, method: &str) -> Value {
        self.take(|v| v["method"] == method && v.get("id").is_none())
            .await
    }

    /// Every frame received within `window`, after what is already in the inbox.
    async fn drain_for(&mut self, window: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(Some(v)) = tokio::time::timeout_at(deadline, self.read()).await {
            self.inbox.push(v);
        }
        std::mem::take(&mut self.inbox)
    }

    /// Creates a page target and attaches to it; returns (target id, session id).
    async fn open_page(&mut self) -> (String, String) {
        let target = self
            .ok("Target.createTarget", json!({"url": "about:blank"}), None)
            .await["targetId"]
            .as_str()
            .unwrap()
            .to_owned();
        let session = self
            .ok(
                "Target.attachToTarget",
                json!({"targetId": target, "flatten": true}),
                None,
            )
            .await["sessionId"]
            .as_str()
            .unwrap()
            .to_owned();
        (target, session)
    }
}

fn is_id(s: &Value) -> bool {
    s.as_str().is_some_and(|s| {
        s.len() == 32
            && s.chars()
                .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c))
    })
}

fn sim() -> SimBrowser {
    SimBrowser::start(SimConfig::default()).expect("start sim")
}

#[tokio::test]
async fn create_attach_evaluate() {
    let sim = sim();
    bounded(async {
        let mut c = Client::connect(&sim).await;
        let version = c.ok("Browser.getVersion", json!({}), None).await;
        assert_eq!(version["protocolVersion"], "1.3");
        assert_eq!(version["product"], "cdpmux-sim/1");

        c.ok("Target.setDiscoverTargets", json!({"discover": true}), None)
            .await;
        let created = c
            .ok("Target.createTarget", json!({"url": "about:blank"}), None)
            .await;
        assert!(is_id(&created["targetId"]), "{created}");
        let ev = c.event("Target.targetCreated").await;
        assert_eq!(ev["params"]["targetInfo"]["targetId"], created["targetId"]);
        assert_eq!(ev["params"]["targetInfo"]["type"], "page");

        // attachedToTarget comes before the attach reply.
        let id = c
            .send(
                "Target.attachToTarget",
                json!({"targetId": created["targetId"], "flatten": true}),
                None,
            )
            .await;
        let first = c.read().await.unwrap();
        assert_eq!(first["method"], "Target.attachedToTarget", "{first}");
        let reply = c.reply(id).await;
        let session = reply["result"]["sessionId"].as_str().unwrap().to_owned();
        assert!(is_id(&json!(session)));
        assert_eq!(first["params"]["sessionId"], session.as_str());
        assert_eq!(first["params"]["waitingForDebugger"], false);

        let reply = c
            .call(
                "Runtime.evaluate",
                json!({"expression": "1+1", "returnByValue": true}),
                Some(&session),
            )
            .await;
        assert_eq!(reply["sessionId"], session.as_str());
        assert_eq!(
            reply["result"]["result"],
            json!({"type": "number", "value": 2, "description": "2"})
        );
        let reply = c
            .ok(
                "Runtime.evaluate",
                json!({"expression": "nope.nope"}),
                Some(&session),
            )
            .await;
        assert_eq!(reply["result"]["subtype"], "error");
        assert_eq!(reply["exceptionDetails"]["text"], "Uncaught");

        // Flat sessions only.
        let reply = c
            .call(
                "Target.attachToTarget",
                json!({"targetId": created["targetId"]}),
                None,
            )
            .await;
        assert!(reply["error"]["code"].is_i64(), "{reply}");

        let targets = c.ok("Target.getTargets", json!({}), None).await;
        assert_eq!(targets["targetInfos"][0]["attached"], true);
        let stats = sim.stats();
        assert_eq!(
            (stats.targets, stats.sessions, stats.connections),
            (1, 1, 1)
        );
        assert_eq!(
            sim.target_ids(),
            vec![created["targetId"].as_str().unwrap()]
        );
    })
    .await;
}

#[tokio::test]
async fn navigate_fires_load_and_sets_title() {
    let sim = sim();
    bounded(async {
        let mut c = Client::connect(&sim).await;
        let (target, s) = c.open_page().await;
        c.ok("Page.enable", json!({}), Some(&s)).await;
        let nav = c
            .ok(
                "Page.navigate",
                json!({"url": "https://example.com/path?x=1"}),
                Some(&s),
            )
            .await;
        assert_eq!(nav["frameId"], target.as_str());
        assert!(is_id(&nav["loaderId"]));
        let navigated = c.event("Page.frameNavigated").await;
        assert_eq!(
            navigated["params"]["frame"]["url"],
            "https://example.com/path?x=1"
        );
        let load = c.event("Page.loadEventFired").await;
        assert_eq!(load["sessionId"], s.as_str());
        assert!(load["params"]["timestamp"].is_f64());
        let title = c
            .ok(
                "Runtime.evaluate",
                json!({"expression": "document.title"}),
                Some(&s),
            )
            .await;
        assert_eq!(title["result"]["value"], "sim: /path");

        c.ok(
            "Page.navigate",
            json!({"url": "http://x.test/?title=Hello%20there"}),
            Some(&s),
        )
        .await;
        c.event("Page.loadEventFired").await;
        let title = c
            .ok(
                "Runtime.evaluate",
                json!({"expression": "document.title"}),
                Some(&s),
            )
            .await;
        assert_eq!(title["result"]["value"], "Hello there");
        let href = c
            .ok(
                "Runtime.evaluate",
                json!({"expression": "location.href"}),
                Some(&s),
            )
            .await;
        assert_eq!(
            href["result"]["value"],
            "http://x.test/?title=Hello%20there"
        );

        let bad = c
            .call("Page.navigate", json!({"url": "no-scheme"}), Some(&s))
            .await;
        assert_eq!(bad["error"]["code"], -32000);
        assert_eq!(bad["error"]["message"], "Cannot navigate to invalid URL");

        c.ok("Page.reload", json!({}), Some(&s)).await;
        c.event("Page.loadEventFired").await;
    })
    .await;
}

#[tokio::test]
async fn stop_loading_cancels_the_load_event() {
    let sim =
        SimBrowser::start(SimConfig::default().with_load_time(Duration::from_millis(100))).unwrap();
    bounded(async {
        let mut c = Client::connect(&sim).await;
        let (_, s) = c.open_page().await;
        c.ok("Page.enable", json!({}), Some(&s)).await;
        c.ok("Page.navigate", json!({"url": "https://a.test/"}), Some(&s))
            .await;
        c.ok("Page.stopLoading", json!({}), Some(&s)).await;
        let frames = c.drain_for(Duration::from_millis(250)).await;
        assert!(
            !frames.iter().any(|f| f["method"] == "Page.loadEventFired"),
            "{frames:?}"
        );
        // Without Page.enable there are no load events at all.
        c.ok("Page.disable", json!({}), Some(&s)).await;
        c.ok("Page.navigate", json!({"url": "https://a.test/"}), Some(&s))
            .await;
        let frames = c.drain_for(Duration::from_millis(250)).await;
        assert!(
            frames.iter().all(|f| f.get("method").is_none()),
            "{frames:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn close_target_detaches_and_later_calls_fail() {
    let sim = sim();
    bounded(async {
        let mut c = Client::connect(&sim).await;
        c.ok("Target.setDiscoverTargets", json!({"discover": true}), None)
            .await;
        let (target, s) = c.open_page().await;
        c.ok("Inspector.enable", json!({}), Some(&s)).await;
        // A call in flight when the target closes is never answered.
        let hung = c
            .send(
                "Runtime.evaluate",
                json!({"expression": "while(true){}"}),
                Some(&s),
            )
            .await;
        let closed = c
            .ok("Target.closeTarget", json!({"targetId": target}), None)
            .await;
        assert_eq!(closed, json!({"success": true}));
        let detached = c.event("Inspector.detached").await;
        assert_eq!(detached["params"]["reason"], "Render process gone.");
        assert_eq!(detached["sessionId"], s.as_str());
        let ev = c.event("Target.detachedFromTarget").await;
        assert_eq!(ev["params"], json!({"sessionId": s, "targetId": target}));
        let ev = c.event("Target.targetDestroyed").await;
        assert_eq!(ev["params"]["targetId"], target.as_str());

        let later = c
            .call("Runtime.evaluate", json!({"expression": "1"}), Some(&s))
            .await;
        assert_eq!(later["error"]["code"], -32001);
        assert_eq!(
            later["error"]["message"],
            "Session with given id not found."
        );
        assert_eq!(later["sessionId"], s.as_str());
        let frames = c.drain_for(Duration::from_millis(50)).await;
        assert!(!frames.iter().any(|f| f["id"] == hung), "{frames:?}");
        assert_eq!(sim.stats().targets, 0);
    })
    .await;
}

#[tokio::test]
async fn crash_swallows_calls_until_reload_revives() {
    let sim = sim();
    bounded(async {
        let mut c = Client::connect(&sim).await;
        c.ok("Target.setDiscoverTargets", json!({"discover": true}), None)
            .await;
        let (target, s) = c.open_page().await;
        c.ok("Inspector.enable", json!({}), Some(&s)).await;
        c.ok("Page.enable", json!({}), Some(&s)).await;

        sim.crash_target(&target);
        let ev = c.event("Inspector.targetCrashed").await;
        assert_eq!(ev["sessionId"], s.as_str());
        let ev = c.event("Target.targetCrashed").await;
        assert_eq!(ev["params"]["targetId"], target.as_str());
        assert_eq!(ev["params"]["status"], "killed");
        assert_eq!(sim.stats().crashed_targets, 1);

        let stuck = c
            .send("Runtime.evaluate", json!({"expression": "1+1"}), Some(&s))
            .await;
        let frames = c.drain_for(Duration::from_millis(100)).await;
        assert!(frames.iter().all(|f| f.get("id").is_none()), "{frames:?}");
        assert!(!frames
            .iter()
            .any(|f| f["method"] == "Target.detachedFromTarget"));

        let reload = c.send("Page.reload", json!({}), Some(&s)).await;
        let failed = c.reply(stuck).await;
        assert_eq!(failed["error"]["code"], -32000);
        assert_eq!(failed["error"]["message"], "Target crashed");
        assert_eq!(c.reply(reload).await["result"], json!({}));
        c.event("Inspector.targetReloadedAfterCrash").await;
        c.event("Page.loadEventFired").await;
        let ok = c
            .ok("Runtime.evaluate", json!({"expression": "2*3"}), Some(&s))
            .await;
        assert_eq!(ok["result"]["value"], 6);

        // Page.crash is never answered and crashes the target shortly after.
        let crash = c.send("Page.crash", json!({}), Some(&s)).await;
        c.event("Inspector.targetCrashed").await;
        let ev = c.event("Target.targetCrashed").await;
        assert_eq!(ev["params"]["status"], "crashed");
        // Closing a crashed target works; what was stuck stays unanswered.
        let stuck = c
            .send("Runtime.evaluate", json!({"expression": "1"}), Some(&s))
            .await;
        c.ok("Target.closeTarget", json!({"targetId": target}), None)
            .await;
        c.event("Target.detachedFromTarget").await;
        let frames = c.drain_for(Duration::from_millis(50)).await;
        assert!(
            !frames.iter().any(|f| f["id"] == crash || f["id"] == stuck),
            "{frames:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn unknown_method_and_session() {
    let sim = sim();
    bounded(async {
        let mut c = Client::connect(&sim).await;
        let reply = c.call("Foo.bar", json!({}), None).await;
        assert_eq!(
            reply["error"],
            json!({"code": -32601, "message": "'Foo.bar' wasn't found"})
        );
        let (_, s) = c.open_page().await;
        let reply = c.call("Foo.bar", json!({}), Some(&s)).await;
        assert_eq!(reply["error"]["code"], -32601);
        assert_eq!(reply["sessionId"], s.as_str());
        // Page methods exist only on sessions.
        let reply = c
            .call("Page.navigate", json!({"url": "about:blank"}), None)
            .await;
        assert_eq!(reply["error"]["code"], -32601);
        let reply = c
            .call("Runtime.evaluate", json!({"expression": "1"}), Some("NOPE"))
            .await;
        assert_eq!(reply["error"]["code"], -32001);
        // Sessions belong to the connection that attached them.
        let mut other = Client::connect(&sim).await;
        let reply = other
            .call("Runtime.evaluate", json!({"expression": "1"}), Some(&s))
            .await;
        assert_eq!(reply["error"]["code"], -32001);
        let reply = c
            .call(
                "Target.createTarget",
                json!({"url": "about:blank", "browserContextId": "NOPE"}),
                None,
            )
            .await;
        assert_eq!(reply["error"]["code"], -32602);
    })
    .await;
}

#[tokio::test]
async fn black_hole_swallows_one_method() {
    let sim = sim();
    bounded(async {
        let mut c = Client::connect(&sim).await;
        let (_, s) = c.open_page().await;
        sim.black_hole(Some("Runtime.evaluate"));
        let lost = c
            .send("Runtime.evaluate", json!({"expression": "1"}), Some(&s))
            .await;
        // Other methods still work, and nothing comes for the swallowed call.
        c.ok("Page.enable", json!({}), Some(&s)).await;
        let frames = c.drain_for(Duration::from_millis(50)).await;
        assert!(!frames.iter().any(|f| f["id"] == lost), "{frames:?}");
        assert_eq!(sim.stats().black_holed, 1);
        sim.black_hole(None);
        c.ok("Runtime.evaluate", json!({"expression": "1"}), Some(&s))
            .await;
    })
    .await;
}

#[tokio::test]
async fn malformed_frames_do_not_close_the_socket() {
    let sim = sim();
    bounded(async {
        let mut c = Client::connect(&sim).await;
        let (_, s) = c.open_page().await;
        sim.send_malformed(30);
        sim.send_unknown_events(5);
        // Garbage from the client is ignored and counted.
        for junk in ["{not json", "[]", r#"{"method":"Foo.bar"}"#, ""] {
            c.ws.send(Message::text(junk)).await.unwrap();
        }
        c.ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
        let mut binary = 0;
        let mut texts = 0;
        // 30 garbage + 5 browser-level + 5 session events, then our reply.
        let id = c
            .send("Runtime.evaluate", json!({"expression": "7"}), Some(&s))
            .await;
        loop {
            match c.ws.next().await.unwrap().unwrap() {
                Message::Binary(_) => binary += 1,
                Message::Text(t) => {
                    texts += 1;
                    if let Ok(v) = serde_json::from_str::<Value>(t.as_str()) {
                        if v["id"] == id {
                            assert_eq!(v["result"]["result"]["value"], 7);
                            break;
                        }
                    }
                }
                _ => {}
            }
        }
        assert_eq!(binary, 3);
        assert_eq!(texts, 27 + 10 + 1);
        assert_eq!(sim.stats().malformed, 5);
        assert_eq!(sim.stats().connections, 1);
    })
    .await;
}

#[tokio::test]
async fn drop_connections_closes_sockets_and_keeps_targets() {
    let sim = sim();
    bounded(async {
        let mut c = Client::connect(&sim).await;
        let (_, s) = c.open_page().await;
        let pending = c
            .send(
                "Runtime.evaluate",
                json!({"expression": "while(true){}"}),
                Some(&s),
            )
            .await;
        sim.drop_connections();
        let mut got_close_frame = false;
        while let Some(msg) = c.ws.next().await {
            match msg {
                Ok(Message::Close(_)) => got_close_frame = true,
                Ok(Message::Text(t)) => {
                    panic!("unexpected frame after drop: {t} (pending {pending})")
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        assert!(
            !got_close_frame,
            "the socket must close without a close frame"
        );
        let stats = sim.stats();
        assert_eq!(
            (stats.connections, stats.sessions, stats.targets),
            (0, 0, 1)
        );
        // The browser still takes new clients.
        let mut c = Client::connect(&sim).await;
        c.ok("Browser.getVersion", json!({}), None).await;
        assert_eq!(sim.stats().connections, 1);
        drop(c);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(sim.stats().connections, 0);
    })
    .await;
}

#[tokio::test]
async fn hang_until_terminate_execution() {
    let sim = sim();
    bounded(async {
        let mut c = Client::connect(&sim).await;
        let (_, s) = c.open_page().await;
        let hung = c
            .send(
                "Runtime.evaluate",
                json!({"expression": "while(true){}"}),
                Some(&s),
            )
            .await;
        let behind = c
            .send("Runtime.evaluate", json!({"expression": "40+2"}), Some(&s))
            .await;
        let frames = c.drain_for(Duration::from_millis(100)).await;
        assert!(frames.iter().all(|f| f.get("id").is_none()), "{frames:?}");
        // Other sessions are not affected.
        let (_, other) = c.open_page().await;
        c.ok("Runtime.evaluate", json!({"expression": "1"}), Some(&other))
            .await;

        let term = c
            .send("Runtime.terminateExecution", json!({}), Some(&s))
            .await;
        assert_eq!(c.reply(term).await["result"], json!({}));
        let err = c.reply(hung).await;
        assert_eq!(err["error"]["code"], -32000);
        assert_eq!(err["error"]["message"], "Execution was terminated");
        assert_eq!(c.reply(behind).await["result"]["result"]["value"], 42);
    })
    .await;
}

#[tokio::test]
async fn json_version_over_http() {
    let sim = sim();
    bounded(async {
        let addr = sim.http_url().trim_start_matches("http://").to_owned();
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(format!("GET /json/version HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let body = response.split("\r\n\r\n").nth(1).unwrap();
        let v: Value = serde_json::from_str(body).unwrap();
        assert!(v["Browser"].as_str().unwrap().starts_with("cdpmux-sim/"));
        assert_eq!(v["webSocketDebuggerUrl"], sim.ws_url().as_str());

        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(b"GET /nope HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    })
    .await;
}

#[tokio::test]
async fn browser_contexts() {
    let sim = sim();
    bounded(async {
        let mut c = Client::connect(&sim).await;
        c.ok("Target.setDiscoverTargets", json!({"discover": true}), None)
            .await;
        let ctx =
            c.ok("Target.createBrowserContext", json!({}), None).await["browserContextId"].clone();
        assert!(is_id(&ctx));
        let t = c
            .ok(
                "Target.createTarget",
                json!({"url": "about:blank", "browserContextId": ctx}),
                None,
            )
            .await["targetId"]
            .clone();
        c.ok(
            "Target.attachToTarget",
            json!({"targetId": t, "flatten": true}),
            None,
        )
        .await;
        assert_eq!(sim.stats().contexts, 1);
        c.ok(
            "Target.disposeBrowserContext",
            json!({"browserContextId": ctx}),
            None,
        )
        .await;
        c.event("Target.detachedFromTarget").await;
        let ev = c.event("Target.targetDestroyed").await;
        assert_eq!(ev["params"]["targetId"], t);
        let stats = sim.stats();
        assert_eq!((stats.contexts, stats.targets, stats.sessions), (0, 0, 0));
    })
    .await;
}

#[tokio::test]
async fn reply_delay_and_seeded_ids() {
    let sim = SimBrowser::start(
        SimConfig::default()
            .with_seed(42)
            .with_reply_delay(Delay::Fixed(Duration::from_millis(40))),
    )
    .unwrap();
    let twin = SimBrowser::start(SimConfig::default().with_seed(42)).unwrap();
    bounded(async {
        let mut c = Client::connect(&sim).await;
        let started = Instant::now();
        let a = c.open_page().await;
        assert!(started.elapsed() >= Duration::from_millis(80));
        sim.set_reply_delay(Delay::None);
        let started = Instant::now();
        c.ok("Browser.getVersion", json!({}), None).await;
        assert!(started.elapsed() < Duration::from_millis(40));

        let mut t = Client::connect(&twin).await;
        let b = t.open_page().await;
        assert_eq!(a, b, "same seed, same commands: same ids");
        assert_eq!(
            sim.ws_url().rsplit('/').next(),
            twin.ws_url().rsplit('/').next()
        );
    })
    .await;
}

#[tokio::test]
async fn start_and_drop_from_a_plain_thread() {
    let sim = sim();
    let url = sim.ws_url();
    assert!(url.starts_with("ws://127.0.0.1:"));
    assert!(url.contains("/devtools/browser/"));
    assert_eq!(sim.stats().connections, 0);
    drop(sim);
    // The port is released: connecting now fails.
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
}

#[tokio::test]
async fn many_pipelined_commands() {
    let sim = sim();
    bounded(async {
        let mut c = Client::connect(&sim).await;
        let mut sessions = Vec::new();
        for _ in 0..8 {
            sessions.push(c.open_page().await.1);
        }
        const N: usize = 20_000;
        let started = Instant::now();
        let (mut sink, mut stream) = c.ws.split();
        let writer = async {
            for i in 0..N {
                let msg = json!({
                    "id": 1_000 + i,
                    "method": "Runtime.evaluate",
                    "params": {"expression": "1+1"},
                    "sessionId": sessions[i % sessions.len()],
                });
                sink.feed(Message::text(msg.to_string())).await.unwrap();
            }
            sink.flush().await.unwrap();
        };
        let reader = async {
            let mut replies = 0;
            while replies < N {
                if let Message::Text(t) = stream.next().await.unwrap().unwrap() {
                    if t.as_str().contains("\"result\"") {
                        replies += 1;
                    }
                }
            }
        };
        tokio::join!(writer, reader);
        let rate = N as f64 / started.elapsed().as_secs_f64();
        eprintln!("sim: {rate:.0} commands/s");
        assert_eq!(sim.stats().commands as usize, N + 16);
    })
    .await;
}
