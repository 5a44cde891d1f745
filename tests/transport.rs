//! The CDP transport (`cdp::Connection`, `cdp::Page`) against the simulated browser: id
//! matching under load, deadlines, broken sockets, bad frames, crashes, closing, events,
//! writer coalescing and connect errors.
//!
//! Synchronisation with the simulated browser never uses sleeps: it handles the frames of
//! one connection in order, so once a later call on the same socket is answered, every
//! earlier frame has been handled (and every frame it sent before that reply has arrived).

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use cdpmux::browser_protocol::browser::GetVersionParams;
use cdpmux::cdp::{Connection, ConnectionConfig, FlushPolicy, Page, PageOptions};
use cdpmux::js_protocol::runtime::EvaluateParams;
use cdpmux::sim::{Delay, SimBrowser, SimConfig};
use cdpmux::{Error, ErrorKind, TimeoutKind};
use futures_util::future::join_all;
use futures_util::FutureExt;
use serde_json::{json, Value};

/// The bound on every single await in this file.
const STEP: Duration = Duration::from_secs(10);

/// Runs a test body inside a `LocalSet` (connections and pages are `!Send`), bounded.
async fn local<F: Future<Output = ()>>(body: F) {
    tokio::task::LocalSet::new()
        .run_until(async {
            tokio::time::timeout(Duration::from_secs(60), body)
                .await
                .expect("test took more than 60 s")
        })
        .await
}

/// Awaits `fut` for at most [`STEP`].
async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no outcome within {STEP:?}"))
}

/// Polls `fut` once, so that its frame is queued, and says whether it is still pending.
async fn poll_once<F: Future + ?Sized>(fut: Pin<&mut F>) -> bool {
    let mut fut = Some(fut);
    std::future::poll_fn(|cx| Poll::Ready(fut.take().expect("polled once").poll(cx).is_pending()))
        .await
}

fn start_sim() -> SimBrowser {
    SimBrowser::start(SimConfig::default().with_seed(11)).expect("start the simulated browser")
}

async fn connect(sim: &SimBrowser) -> Connection {
    within(
        "connect",
        Connection::connect(&sim.ws_url(), ConnectionConfig::default()),
    )
    .await
    .expect("connect to the simulated browser")
}

async fn open(conn: &Connection) -> Page {
    within("open a page", conn.new_page(&PageOptions::default()))
        .await
        .expect("open a page")
}

async fn eval(page: &Page, expression: &str) -> Result<Value, Error> {
    within(
        expression,
        page.call("Runtime.evaluate", json!({ "expression": expression })),
    )
    .await
}

/// A round trip on the browser connection: every frame sent before it has been handled
/// by the simulated browser once it returns.
async fn sync(conn: &Connection) {
    within("Browser.getVersion", conn.execute(GetVersionParams {}))
        .await
        .expect("Browser.getVersion");
}

/// The error of a call expected to fail.
fn error_of<T>(r: Result<T, Error>) -> Error {
    match r {
        Ok(_) => panic!("expected an error, got a success"),
        Err(e) => e,
    }
}

fn kind<T>(r: Result<T, Error>) -> ErrorKind {
    error_of(r).kind()
}

/// The value of a `Runtime.evaluate` result.
fn value(reply: &Value) -> &Value {
    &reply["result"]["value"]
}

#[tokio::test]
async fn replies_reach_their_callers_across_many_sessions() {
    local(async {
        let sim = start_sim();
        let conn = connect(&sim).await;
        let pages = join_all((0..16).map(|_| open(&conn))).await;
        let calls = pages.iter().enumerate().flat_map(|(i, page)| {
            (0..50).map(move |j| async move {
                let expression = format!("{i}+{j}");
                let reply = page
                    .call("Runtime.evaluate", json!({ "expression": expression }))
                    .await;
                (i, j, reply)
            })
        });
        let results = within("800 concurrent calls", join_all(calls)).await;
        assert_eq!(results.len(), 16 * 50);
        for (i, j, reply) in results {
            let reply = reply.unwrap_or_else(|e| panic!("{i}+{j} failed: {e}"));
            assert_eq!(value(&reply), &json!(i + j), "{i}+{j}");
        }
        assert_eq!(conn.stats().pending_calls, 0);
        assert_eq!(conn.stats().unknown_replies, 0);
    })
    .await
}

#[tokio::test]
async fn typed_and_raw_calls_and_cdp_errors() {
    local(async {
        let sim = start_sim();
        let conn = connect(&sim).await;
        let page = open(&conn).await;

        let typed = within("typed evaluate", page.execute(EvaluateParams::new("6+7")))
            .await
            .expect("typed evaluate");
        assert_eq!(typed.result.value, Some(json!(13)));
        assert!(typed.exception_details.is_none());

        let version = within("typed browser call", conn.execute(GetVersionParams {}))
            .await
            .expect("Browser.getVersion");
        assert_eq!(version.product, "cdpmux-sim/1");

        let raw = eval(&page, "40+2").await.expect("raw evaluate");
        assert_eq!(value(&raw), &json!(42));
        assert_eq!(
            within("evaluate_value", page.evaluate_value("'hi'"))
                .await
                .unwrap(),
            json!("hi")
        );

        // Unknown methods, on a session and on the browser.
        let err = within("unknown method", page.call("Nope.nothing", json!({})))
            .await
            .expect_err("an unknown method is an error");
        assert_eq!(err.kind(), ErrorKind::Protocol);
        assert_eq!(err.cdp_code(), Some(-32601));
        assert!(err.message().contains("Nope.nothing"), "{err}");
        let err = within(
            "unknown browser method",
            conn.call("Nope.browser", json!({})),
        )
        .await
        .expect_err("an unknown method is an error");
        assert_eq!(err.cdp_code(), Some(-32601));

        // A server error, and a thrown exception.
        let err = within(
            "bad navigate",
            page.call("Page.navigate", json!({ "url": "no scheme" })),
        )
        .await
        .expect_err("an invalid URL is refused");
        assert_eq!(
            (err.kind(), err.cdp_code()),
            (ErrorKind::Protocol, Some(-32000))
        );
        assert_eq!(
            kind(within("throw", page.evaluate_value("noSuchVariable")).await),
            ErrorKind::Script
        );

        // The session is fine after all of that.
        assert_eq!(value(&eval(&page, "1+1").await.unwrap()), &json!(2));
        assert_eq!(conn.stats().pending_calls, 0);
    })
    .await
}

#[tokio::test]
async fn a_call_past_its_deadline_times_out_and_leaves_the_table() {
    local(async {
        let sim = start_sim();
        let conn = connect(&sim).await;
        let page = open(&conn).await;
        sim.black_hole(Some("Runtime.evaluate"));
        page.set_command_timeout(Duration::from_millis(100));
        assert_eq!(conn.stats().pending_calls, 0);

        let call = page.call("Runtime.evaluate", json!({ "expression": "1+1" }));
        let mut call = std::pin::pin!(call);
        assert!(poll_once(call.as_mut()).await, "nothing can answer yet");
        assert_eq!(conn.stats().pending_calls, 1);
        let err = within("black-holed call", call)
            .await
            .expect_err("no reply");
        assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutKind::Command));
        assert!(err.is_timeout());

        // Other methods still work on the same session and connection.
        let tree = within("frame tree", page.call("Page.getFrameTree", json!({})))
            .await
            .expect("Page.getFrameTree");
        assert!(tree["frameTree"]["frame"]["id"].is_string());
        sync(&conn).await;
        assert_eq!(sim.stats().black_holed, 1);
        // The black-holed call can never be answered, so only its removal at the deadline
        // empties the table (anything sent because of the deadline is answered by now).
        assert_eq!(
            conn.stats().pending_calls,
            0,
            "the abandoned call is removed"
        );

        sim.black_hole(None);
        assert_eq!(value(&eval(&page, "2+2").await.unwrap()), &json!(4));
        assert!(!conn.is_closed());
        assert_eq!(conn.stats().pending_calls, 0);
    })
    .await
}

#[tokio::test]
async fn a_reply_after_the_deadline_is_counted_and_ignored() {
    local(async {
        let sim = start_sim();
        let conn = connect(&sim).await;
        let page = open(&conn).await;
        sim.set_reply_delay(Delay::Fixed(Duration::from_millis(300)));
        page.set_command_timeout(Duration::from_millis(50));
        let err = eval(&page, "1+1").await.expect_err("the reply is late");
        assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutKind::Command));

        // Sent at least 50 ms after the first, so answered after its late reply.
        page.set_command_timeout(STEP);
        assert_eq!(value(&eval(&page, "3+4").await.unwrap()), &json!(7));
        let stats = conn.stats();
        assert_eq!(
            stats.unknown_replies, 1,
            "the late reply had nobody to go to"
        );
        assert_eq!(stats.pending_calls, 0);
        assert_eq!(stats.malformed_frames, 0);
    })
    .await
}

#[tokio::test]
async fn a_dropped_socket_fails_every_pending_call_at_once() {
    local(async {
        let sim = start_sim();
        let conn = connect(&sim).await;
        let pages = join_all((0..4).map(|_| open(&conn))).await;
        for page in &pages {
            // Only the drop can explain a failure within the test's bounds.
            page.set_command_timeout(Duration::from_secs(30));
        }
        sim.black_hole(Some("Runtime.evaluate"));
        let calls = pages.iter().flat_map(|page| {
            (0..25).map(move |j| {
                page.call(
                    "Runtime.evaluate",
                    json!({ "expression": format!("{j}+1") }),
                )
            })
        });
        let mut dropped_at = None;
        let (results, ()) = within("calls pending on a dropped socket", async {
            tokio::join!(join_all(calls), async {
                sync(&conn).await;
                assert_eq!(
                    sim.stats().black_holed,
                    100,
                    "all calls reached the browser"
                );
                assert_eq!(conn.stats().pending_calls, 100);
                dropped_at = Some(Instant::now());
                sim.drop_connections();
            })
        })
        .await;
        let failed_after = dropped_at.expect("dropped").elapsed();
        eprintln!("100 pending calls failed {failed_after:?} after the socket was dropped");
        assert_eq!(results.len(), 100);
        for r in results {
            let err = r.expect_err("no reply can come");
            assert_eq!(err.kind(), ErrorKind::ConnectionClosed, "{err}");
            assert!(err.is_crash());
        }
        assert!(conn.is_closed());
        assert_eq!(conn.stats().pending_calls, 0);

        // Later calls fail before any await point: nothing is sent, nothing waits.
        let later = pages[0]
            .call("Page.getFrameTree", json!({}))
            .now_or_never()
            .expect("fails at once");
        assert_eq!(kind(later), ErrorKind::ConnectionClosed);
        let later = conn
            .execute(GetVersionParams {})
            .now_or_never()
            .expect("fails at once");
        assert_eq!(kind(later), ErrorKind::ConnectionClosed);
        assert_eq!(
            kind(within("new page", conn.new_page(&PageOptions::default())).await),
            ErrorKind::ConnectionClosed
        );
        assert_eq!(
            kind(
                within(
                    "event",
                    pages[1].wait_for_event("Page.loadEventFired").wait(STEP)
                )
                .await
            ),
            ErrorKind::ConnectionClosed
        );
        assert!(!pages[2].is_alive());
    })
    .await
}

/// What the client should count for `Core::malformed_frames(n)` in `src/sim/core.rs`,
/// which cycles through ten kinds of frame: 0 bad JSON, 1 binary, 2 a reply to an id
/// never sent, 3 a string id, 4 a numeric method, 5 an error of the wrong shape, 6 `[]`,
/// 7 an empty frame, 8 a `Target.targetCreated` event with bad params (a valid frame the
/// transport does not act on), 9 an event for an unknown session.
struct Garbage {
    malformed: u64,
    unknown_replies: u64,
    events: u64,
    unroutable_events: u64,
}

fn garbage(n: u64) -> Garbage {
    let of_kind = |k: u64| (0..n).filter(|i| i % 10 == k).count() as u64;
    Garbage {
        malformed: [0, 1, 3, 4, 5, 6, 7].into_iter().map(of_kind).sum(),
        unknown_replies: of_kind(2),
        events: of_kind(8) + of_kind(9),
        unroutable_events: of_kind(9),
    }
}

#[tokio::test]
async fn bad_frames_and_unknown_events_do_not_break_the_connection() {
    local(async {
        let sim = start_sim();
        let conn = connect(&sim).await;
        let pages = join_all((0..3).map(|_| open(&conn))).await;
        let before = conn.stats();

        let (n, unknown) = (25, 6);
        sim.send_malformed(n as usize);
        sim.send_unknown_events(unknown as usize);
        // Sent after the garbage on the same socket, so answered after it.
        for (i, page) in pages.iter().enumerate() {
            let reply = eval(page, &format!("{i}+100"))
                .await
                .expect("calls still work");
            assert_eq!(value(&reply), &json!(i + 100));
        }

        let after = conn.stats();
        let want = garbage(n);
        let pages_n = pages.len() as u64;
        assert!(want.malformed > 0 && want.unroutable_events > 0);
        assert_eq!(
            after.malformed_frames - before.malformed_frames,
            want.malformed
        );
        assert_eq!(
            after.unknown_replies - before.unknown_replies,
            want.unknown_replies
        );
        assert_eq!(
            after.unroutable_events - before.unroutable_events,
            want.unroutable_events
        );
        // Unknown events: `unknown` browser-level ones, and `unknown` on each session.
        assert_eq!(
            after.events - before.events,
            want.events + unknown + unknown * pages_n
        );
        assert_eq!(
            after.frames_in - before.frames_in,
            n + unknown + unknown * pages_n + pages_n,
            "every garbage frame, every event and the {pages_n} replies"
        );
        assert!(!conn.is_closed());
        assert!(pages.iter().all(Page::is_alive));
        // The simulated browser counts malformed frames *it* received: we sent none.
        assert_eq!(sim.stats().malformed, 0);
    })
    .await
}

#[tokio::test]
async fn a_malformed_reply_fails_its_call_at_once_and_nothing_else() {
    local(async {
        let sim = start_sim();
        let conn = connect(&sim).await;
        let page = open(&conn).await;
        // Only the malformed reply can end the call within the test's bounds.
        page.set_command_timeout(Duration::from_secs(3600));
        let before = conn.stats();
        sim.mangle_replies(Some("Runtime.evaluate"));
        let err = eval(&page, "1+1")
            .await
            .expect_err("its reply was malformed");
        assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
        assert!(err.to_string().contains("Runtime.evaluate"), "{err}");
        assert!(err.to_string().contains("not valid CDP"), "{err}");
        let after = conn.stats();
        assert_eq!(after.malformed_frames - before.malformed_frames, 1);
        assert_eq!(after.pending_calls, 0);

        sim.mangle_replies(None);
        let reply = eval(&page, "2+2").await.expect("the page still works");
        assert_eq!(value(&reply), &json!(4));
        assert!(!conn.is_closed());
        assert!(page.is_alive());
    })
    .await
}

#[tokio::test]
async fn a_killed_renderer_fails_its_calls_and_spares_other_pages() {
    local(async {
        let sim = start_sim();
        let conn = connect(&sim).await;
        let page = open(&conn).await;
        let other = open(&conn).await;
        page.set_command_timeout(Duration::from_secs(30));

        let hung = page.call("Runtime.evaluate", json!({ "expression": "while(true){}" }));
        let (hung, ()) = within("a hung call on a crashing page", async {
            tokio::join!(hung, async {
                sync(&conn).await; // the renderer is hung now
                sim.crash_target(page.target_id());
            })
        })
        .await;
        let err = hung.expect_err("a crashed page answers nothing");
        assert_eq!(err.kind(), ErrorKind::SessionCrashed, "{err}");
        assert!(err.is_crash());
        assert!(!page.is_alive());
        assert_eq!(
            page.dead_reason().map(|e| e.kind()),
            Some(ErrorKind::SessionCrashed)
        );

        let later = page
            .call("Runtime.evaluate", json!({ "expression": "1+1" }))
            .now_or_never()
            .expect("a dead page refuses at once");
        assert_eq!(kind(later), ErrorKind::SessionCrashed);
        assert_eq!(
            kind(
                within(
                    "wait on a dead page",
                    page.wait_for_event("Page.loadEventFired").wait(STEP)
                )
                .await
            ),
            ErrorKind::SessionCrashed
        );

        assert!(other.is_alive());
        assert_eq!(value(&eval(&other, "5+5").await.unwrap()), &json!(10));
        assert_eq!(sim.stats().crashed_targets, 1);
        assert_eq!(conn.stats().pending_calls, 0);
    })
    .await
}

#[tokio::test]
async fn page_crash_fails_the_pending_call_and_the_crash_call() {
    local(async {
        let sim = start_sim();
        let conn = connect(&sim).await;
        let page = open(&conn).await;
        let other = open(&conn).await;
        page.set_command_timeout(Duration::from_secs(30));
        sim.black_hole(Some("Runtime.evaluate"));

        let pending = page.call("Runtime.evaluate", json!({ "expression": "1+1" }));
        // Chromium never answers `Page.crash`: the crash event ends it too.
        let crash = page.call("Page.crash", json!({}));
        let (pending, crash) = within("Page.crash", async { tokio::join!(pending, crash) }).await;
        assert_eq!(kind(pending), ErrorKind::SessionCrashed);
        assert_eq!(kind(crash), ErrorKind::SessionCrashed);
        assert!(!page.is_alive());
        assert_eq!(
            kind(
                page.call("Page.getFrameTree", json!({}))
                    .now_or_never()
                    .expect("at once")
            ),
            ErrorKind::SessionCrashed
        );

        sim.black_hole(None);
        assert_eq!(value(&eval(&other, "8+9").await.unwrap()), &json!(17));
        assert_eq!(sim.stats().crashed_targets, 1);
    })
    .await
}

#[tokio::test]
async fn closing_and_dropping_pages_closes_their_targets() {
    local(async {
        let sim = start_sim();
        let conn = connect(&sim).await;
        let targets_at_start = sim.stats().targets;
        let a = open(&conn).await;
        let b = open(&conn).await;
        let c = open(&conn).await;
        let d = open(&conn).await;
        assert_eq!(sim.stats().targets, targets_at_start + 4);

        // `close` waits for the browser's answer; the other pages carry on.
        within("close", b.close())
            .await
            .expect("Target.closeTarget");
        assert_eq!(sim.stats().targets, targets_at_start + 3);
        assert_eq!(value(&eval(&d, "1+2").await.unwrap()), &json!(3));

        // Dropping sends `Target.closeTarget` without waiting.
        drop(c);
        sync(&conn).await;
        assert_eq!(sim.stats().targets, targets_at_start + 2);
        assert_eq!(value(&eval(&d, "2+3").await.unwrap()), &json!(5));

        // A target closed behind the page's back (another client, a crawler's script)
        // fails the call pending on it, from the detach and destroy events.
        a.set_command_timeout(Duration::from_secs(30));
        sim.black_hole(Some("Runtime.evaluate"));
        let pending = a.call("Runtime.evaluate", json!({ "expression": "1+1" }));
        let close = conn.call("Target.closeTarget", json!({ "targetId": a.target_id() }));
        let (pending, closed) = within("close with a call pending", async {
            tokio::join!(pending, close)
        })
        .await;
        closed.expect("Target.closeTarget");
        assert_eq!(kind(pending), ErrorKind::SessionCrashed);
        assert!(!a.is_alive());
        sim.black_hole(None);
        drop(a);
        sync(&conn).await;
        assert_eq!(sim.stats().targets, targets_at_start + 1);
        assert_eq!(sim.stats().sessions, 1);
        assert_eq!(value(&eval(&d, "3+4").await.unwrap()), &json!(7));
        assert_eq!(conn.stats().pending_calls, 0);
        assert!(!conn.is_closed());
    })
    .await
}

#[tokio::test]
async fn event_waiters_get_their_event_or_a_clear_error() {
    local(async {
        let sim = start_sim();
        let conn = connect(&sim).await;

        // Browser-level: registered before the command that causes it.
        let created = conn.wait_for_event("Target.targetCreated");
        let page = open(&conn).await;
        let ev = within("targetCreated", created.wait(STEP))
            .await
            .expect("Target.targetCreated");
        let params: Value = ev.params().expect("params");
        assert_eq!(params["targetInfo"]["targetId"], json!(page.target_id()));

        let loaded = page.wait_for_event("Page.loadEventFired");
        within(
            "navigate",
            page.call("Page.navigate", json!({ "url": "http://a.test/first" })),
        )
        .await
        .expect("Page.navigate");
        let ev = within("load event", loaded.wait(STEP))
            .await
            .expect("Page.loadEventFired");
        assert_eq!(ev.method(), "Page.loadEventFired");
        let params: Value = ev.params().expect("params");
        assert!(params["timestamp"].is_number(), "{}", ev.params_json());

        within("goto", page.goto("http://a.test/second?title=Second+page"))
            .await
            .expect("goto");
        assert_eq!(within("title", page.title()).await.unwrap(), "Second page");
        assert_eq!(
            kind(within("goto a bad URL", page.goto("not a url")).await),
            ErrorKind::InvalidInput
        );

        let never = page.wait_for_event("Page.neverHappens");
        let err = within("a missing event", never.wait(Duration::from_millis(100)))
            .await
            .expect_err("no such event");
        assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutKind::Event));

        let doomed = page.wait_for_event("Page.loadEventFired");
        sim.crash_target(page.target_id());
        let err = within("waiter on a crashing page", doomed.wait(STEP))
            .await
            .expect_err("the page crashed");
        assert_eq!(err.kind(), ErrorKind::SessionCrashed, "{err}");
    })
    .await
}

/// 20 concurrent calls on each page, all checked.
async fn burst(pages: &[Page]) {
    join_all(pages.iter().enumerate().flat_map(|(i, page)| {
        (0..20).map(move |j| async move {
            let reply = page
                .call(
                    "Runtime.evaluate",
                    json!({ "expression": format!("{i}+{j}") }),
                )
                .await
                .expect("evaluate");
            assert_eq!(value(&reply), &json!(i + j));
        })
    }))
    .await;
}

#[tokio::test]
async fn the_writer_coalesces_frames_and_obeys_its_flush_limit() {
    local(async {
        let sim = start_sim();
        let conn = connect(&sim).await;
        let pages = join_all((0..16).map(|_| open(&conn))).await;
        let before = conn.stats();
        within("a burst of 320 calls", burst(&pages)).await;
        let after = conn.stats();
        let frames = after.frames_out - before.frames_out;
        let flushes = after.flushes - before.flushes;
        eprintln!("coalesced: {frames} frames in {flushes} flushes");
        assert_eq!(frames, 320);
        assert!(flushes < frames, "{frames} frames in {flushes} flushes");
        assert!(after.max_frames_per_flush > 1);

        conn.set_max_frames_per_flush(1);
        let before = conn.stats();
        within("a burst of 320 calls, one frame a flush", burst(&pages)).await;
        let after = conn.stats();
        assert_eq!(after.frames_out - before.frames_out, 320);
        assert_eq!(after.flushes - before.flushes, 320, "one frame per flush");
    })
    .await
}

#[tokio::test]
async fn the_adaptive_window_loses_no_frame_and_never_holds_a_lone_caller() {
    local(async {
        let sim = start_sim();
        let conn = connect(&sim).await;
        let pages = join_all((0..16).map(|_| open(&conn))).await;
        conn.set_flush_policy(FlushPolicy::adaptive(Duration::from_millis(1)));

        // One caller, one frame at a time: nothing piles up, so no flush is held.
        let before = conn.stats();
        for i in 0..50 {
            let reply = eval(&pages[0], &format!("{i}*2")).await.unwrap();
            assert_eq!(value(&reply), &json!(i * 2));
        }
        let after = conn.stats();
        assert_eq!(after.frames_out - before.frames_out, 50);
        assert_eq!(
            after.held_flushes, before.held_flushes,
            "a lone caller was held"
        );

        // Many callers: every frame goes out and every reply reaches its caller.
        let before = conn.stats();
        for _ in 0..5 {
            within("a burst of 320 calls, adaptive", burst(&pages)).await;
        }
        let after = conn.stats();
        assert_eq!(after.frames_out - before.frames_out, 1600);
        eprintln!(
            "adaptive: 1600 frames in {} flushes, {} held",
            after.flushes - before.flushes,
            after.held_flushes - before.held_flushes
        );

        // Back to self-clocking, live: no more holds.
        conn.set_flush_policy(FlushPolicy::SelfClocking);
        let before = conn.stats();
        within("a burst of 320 calls, self-clocking", burst(&pages)).await;
        assert_eq!(conn.stats().held_flushes, before.held_flushes);
    })
    .await
}

#[tokio::test]
async fn connect_errors_say_what_is_wrong() {
    local(async {
        for bad in [
            "not a url",
            "http://127.0.0.1:9222/devtools/browser/x",
            "wss://[::1",
        ] {
            let err =
                error_of(within(bad, Connection::connect(bad, ConnectionConfig::default())).await);
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}: {err}");
        }

        // A port nobody listens on: bind one, then free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let url = format!("ws://127.0.0.1:{port}/devtools/browser/none");
        let err = error_of(
            within(
                "nothing listening",
                Connection::connect(&url, ConnectionConfig::default()),
            )
            .await,
        );
        assert_eq!(err.kind(), ErrorKind::BrowserUnavailable, "{err}");
        assert!(err.message().contains(&url), "{err}");
    })
    .await
}
