//! The navigation tracker driven by replayed CDP events: no browser, no socket.

use super::*;
use crate::cdp::protocol::{classify, Frame, FrameText};

fn event(method: &str, params: serde_json::Value) -> Event {
    let text: FrameText = serde_json::json!({ "method": method, "params": params })
        .to_string()
        .into();
    let Frame::Event { method, params, .. } = classify(&text).unwrap() else {
        panic!("not an event")
    };
    Event::new(text.clone(), &method, params)
}

fn lifecycle(loader: &str, name: &str) -> Event {
    event(
        "Page.lifecycleEvent",
        serde_json::json!({"frameId": "F", "loaderId": loader, "name": name, "timestamp": 1}),
    )
}

fn request(id: &str, loader: &str, kind: &str, url: &str) -> Event {
    event(
        "Network.requestWillBeSent",
        serde_json::json!({"requestId": id, "loaderId": loader, "frameId": "F",
            "type": kind, "request": {"url": url}}),
    )
}

fn done(id: &str) -> Event {
    event(
        "Network.loadingFinished",
        serde_json::json!({ "requestId": id }),
    )
}

fn response(id: &str, url: &str) -> Event {
    event(
        "Network.responseReceived",
        serde_json::json!({"requestId": id, "loaderId": id, "frameId": "F",
            "type": "Document", "response": {"url": url, "status": 200,
            "mimeType": "text/html", "headers": {}}}),
    )
}

fn navigated(loader: &str, url: &str) -> Event {
    event(
        "Page.frameNavigated",
        serde_json::json!({"frame": {"id": "F", "loaderId": loader, "url": url},
            "type": "Navigation"}),
    )
}

/// Reads `events` the way `goto_with` does when it follows every client-side
/// redirect: a navigation that starts is switched to at once.
fn follow_all(t: &mut Tracker, events: &[Event], now: Instant) {
    for e in events {
        t.on_event(e, now);
        t.follow_next();
    }
}

fn failed(id: &str) -> Event {
    event(
        "Network.loadingFailed",
        serde_json::json!({"requestId": id, "type": "Document",
            "errorText": "net::ERR_ABORTED", "canceled": true}),
    )
}

fn chain(nav: &Navigation) -> Vec<(&str, Option<u16>)> {
    nav.redirects
        .iter()
        .map(|r| (r.url.as_str(), r.status))
        .collect()
}

#[test]
fn an_earlier_navigations_events_never_complete_this_one() {
    let now = Instant::now();
    let mut t = Tracker::new(WaitUntil::Load, "F", "L2", "http://b/");
    t.on_event(&lifecycle("L1", "load"), now);
    t.on_event(
        &event("Page.loadEventFired", serde_json::json!({"timestamp": 1})),
        now,
    );
    let other_frame = event(
        "Page.lifecycleEvent",
        serde_json::json!({"frameId": "SUB", "loaderId": "L2", "name": "load"}),
    );
    t.on_event(&other_frame, now);
    assert!(!t.done(now));
    t.on_event(&lifecycle("L2", "load"), now);
    assert!(t.done(now));
}

#[test]
fn each_condition_is_its_own_lifecycle_step() {
    let now = Instant::now();
    let mut commit = Tracker::new(WaitUntil::Commit, "F", "L", "http://a/");
    let mut dom = Tracker::new(WaitUntil::DomContentLoaded, "F", "L", "http://a/");
    let mut load = Tracker::new(WaitUntil::Load, "F", "L", "http://a/");
    for (name, want) in [
        ("init", [true, false, false]),
        ("DOMContentLoaded", [true, true, false]),
        ("load", [true, true, true]),
    ] {
        for t in [&mut commit, &mut dom, &mut load] {
            t.on_event(&lifecycle("L", name), now);
        }
        assert_eq!(
            [commit.done(now), dom.done(now), load.done(now)],
            want,
            "{name}"
        );
    }
}

#[test]
fn network_idle_counts_this_loaders_requests_and_restarts_its_quiet_period() {
    let idle = Duration::from_millis(500);
    let t0 = Instant::now();
    let mut t = Tracker::new(
        WaitUntil::NetworkIdle {
            idle,
            max_inflight: 0,
        },
        "F",
        "L",
        "http://a/",
    );
    t.on_event(&request("L", "L", "Document", "http://a/"), t0);
    t.on_event(&done("L"), t0);
    t.on_event(&lifecycle("L", "load"), t0);
    assert_eq!(t.wake_at(), Some(t0 + idle));
    let t1 = t0 + Duration::from_millis(100);
    t.on_event(&request("9", "L", "Fetch", "http://a/late"), t1);
    t.on_event(&request("10", "OTHER", "Fetch", "http://x/"), t1);
    assert_eq!(t.wake_at(), None, "a request of the page is in flight");
    assert!(!t.done(t0 + Duration::from_secs(5)));
    let t2 = t0 + Duration::from_millis(900);
    t.on_event(&done("9"), t2);
    assert!(!t.done(t2 + Duration::from_millis(499)));
    assert!(t.done(t2 + idle), "quiet for `idle` after the late fetch");
}

#[test]
fn http_redirects_status_headers_and_a_client_redirect_are_recorded() {
    let now = Instant::now();
    let mut t = Tracker::new(WaitUntil::Load, "F", "L", "http://a/1");
    t.on_event(&request("L", "L", "Document", "http://a/1"), now);
    for (from, status, to) in [
        ("http://a/1", 301, "http://a/2"),
        ("http://a/2", 302, "http://a/3"),
    ] {
        t.on_event(
            &event(
                "Network.requestWillBeSent",
                serde_json::json!({"requestId": "L", "loaderId": "L", "frameId": "F",
                    "type": "Document", "request": {"url": to},
                    "redirectResponse": {"url": from, "status": status, "headers": {}}}),
            ),
            now,
        );
    }
    t.on_event(
        &event(
            "Network.responseReceived",
            serde_json::json!({"requestId": "L", "type": "Document", "response": {
                "url": "http://a/3", "status": 200, "mimeType": "text/html",
                "headers": {"Content-Type": "text/html", "X-N": "1"}}}),
        ),
        now,
    );
    t.on_event(&lifecycle("L", "load"), now);
    assert!(t.done(now));
    assert!(!t.follow_next(), "no other navigation started");
    t.on_event(&request("M", "M", "Document", "http://a/meta-target"), now);
    assert!(t.follow_next());
    assert!(!t.done(now), "now waiting for the redirect's own load");
    t.on_event(&lifecycle("M", "load"), now);
    let nav = t.into_navigation();
    assert_eq!(nav.url, "http://a/meta-target");
    let chain: Vec<(&str, Option<u16>)> = nav
        .redirects
        .iter()
        .map(|r| (r.url.as_str(), r.status))
        .collect();
    assert_eq!(
        chain,
        [
            ("http://a/1", Some(301)),
            ("http://a/2", Some(302)),
            ("http://a/3", None)
        ]
    );
}

#[test]
fn a_client_redirect_whose_request_comes_before_the_commit_is_a_hop() {
    // Chromium 156 under load (tests/navigation.rs, the followed goto): the meta
    // refresh's request for /scripted came before /meta's own `init` and
    // `frameNavigated`, and /end's request before /scripted's `load`.
    let now = Instant::now();
    let mut t = Tracker::new(WaitUntil::Load, "F", "M", "http://a/meta");
    let events = [
        request("M", "M", "Document", "http://a/meta"),
        response("M", "http://a/meta"),
        request("S", "S", "Document", "http://a/scripted"),
        lifecycle("M", "init"),
        navigated("M", "http://a/meta"),
        response("S", "http://a/scripted"),
        lifecycle("S", "init"),
        navigated("S", "http://a/scripted"),
        done("S"),
        lifecycle("S", "DOMContentLoaded"),
        request("E", "E", "Document", "http://a/end"),
        lifecycle("S", "load"),
        response("E", "http://a/end"),
        lifecycle("E", "init"),
        navigated("E", "http://a/end"),
        done("E"),
        lifecycle("E", "DOMContentLoaded"),
        lifecycle("E", "load"),
    ];
    follow_all(&mut t, &events, now);
    assert_eq!(t.hops(), 2);
    assert!(t.done(now));
    let nav = t.into_navigation();
    assert_eq!(nav.url, "http://a/end");
    assert_eq!(nav.status, Some(200), "the last document's own response");
    assert_eq!(
        chain(&nav),
        [("http://a/meta", None), ("http://a/scripted", None)]
    );
}

#[test]
fn every_hop_is_recorded_when_each_request_overtakes_the_commit_before_it() {
    let now = Instant::now();
    let mut t = Tracker::new(WaitUntil::Load, "F", "M", "http://a/meta");
    // An earlier navigation's request (before this one's own) is not a hop.
    let events = [
        request("OLD", "OLD", "Document", "http://a/old"),
        request("M", "M", "Document", "http://a/meta"),
        request("S", "S", "Document", "http://a/scripted"),
        request("E", "E", "Document", "http://a/end"),
        lifecycle("M", "load"),
        lifecycle("S", "load"),
        lifecycle("E", "load"),
    ];
    follow_all(&mut t, &events, now);
    assert_eq!(t.hops(), 2);
    let nav = t.into_navigation();
    assert_eq!(nav.url, "http://a/end");
    assert_eq!(
        chain(&nav),
        [("http://a/meta", None), ("http://a/scripted", None)]
    );
}

#[test]
fn a_followed_redirect_started_again_before_it_was_parsed_is_one_hop() {
    // Chromium 156 under load: the meta refresh's navigation to /scripted was
    // started a second time (new loader) at /meta's load, the first one aborted
    // or committed and replaced at once.
    let now = Instant::now();
    let head = [
        request("M", "M", "Document", "http://a/meta"),
        response("M", "http://a/meta"),
        request("S1", "S1", "Document", "http://a/scripted"),
        lifecycle("M", "init"),
        navigated("M", "http://a/meta"),
        done("M"),
        lifecycle("M", "load"),
    ];
    let tail = [
        response("S2", "http://a/scripted"),
        lifecycle("S2", "init"),
        lifecycle("S2", "load"),
        request("E", "E", "Document", "http://a/end"),
        lifecycle("E", "load"),
    ];
    let retry = request("S2", "S2", "Document", "http://a/scripted");
    for (name, middle) in [
        (
            "aborted, then started again",
            vec![failed("S1"), retry.clone()],
        ),
        (
            "started again, then aborted",
            vec![retry.clone(), failed("S1")],
        ),
        (
            "started again, then the first commits",
            vec![
                response("S1", "http://a/scripted"),
                retry.clone(),
                lifecycle("S1", "init"),
                navigated("S1", "http://a/scripted"),
            ],
        ),
    ] {
        let mut t = Tracker::new(WaitUntil::Load, "F", "M", "http://a/meta");
        follow_all(&mut t, &head, now);
        follow_all(&mut t, &middle, now);
        follow_all(&mut t, &tail, now);
        assert_eq!(t.hops(), 2, "{name}");
        assert!(t.done(now), "{name}");
        let nav = t.into_navigation();
        assert_eq!(nav.url, "http://a/end", "{name}");
        assert_eq!(
            chain(&nav),
            [("http://a/meta", None), ("http://a/scripted", None)],
            "{name}"
        );
    }
}

#[test]
fn a_page_that_redirects_to_itself_once_parsed_is_a_hop_each_time() {
    let now = Instant::now();
    let mut t = Tracker::new(WaitUntil::Load, "F", "M", "http://a/meta");
    let events = [
        request("M", "M", "Document", "http://a/meta"),
        lifecycle("M", "load"),
        request("S1", "S1", "Document", "http://a/self"),
        lifecycle("S1", "DOMContentLoaded"),
        request("S2", "S2", "Document", "http://a/self"),
        lifecycle("S2", "load"),
    ];
    follow_all(&mut t, &events, now);
    assert_eq!(t.hops(), 2);
    assert_eq!(
        chain(&t.into_navigation()),
        [("http://a/meta", None), ("http://a/self", None)]
    );
}

#[test]
fn the_final_response_gives_status_type_and_headers() {
    let now = Instant::now();
    let mut t = Tracker::new(WaitUntil::Commit, "F", "L", "http://a/");
    t.on_event(&request("L", "L", "Document", "http://a/"), now);
    t.on_event(
        &event(
            "Network.responseReceived",
            serde_json::json!({"requestId": "L", "response": {"url": "http://a/",
                "status": 404, "mimeType": "text/html", "headers": {"X-Why": "gone"}}}),
        ),
        now,
    );
    t.on_event(&lifecycle("L", "init"), now);
    let nav = t.into_navigation();
    assert_eq!(nav.status, Some(404));
    assert_eq!(nav.mime_type.as_deref(), Some("text/html"));
    assert_eq!(nav.header("x-why"), Some("gone"));
}

#[test]
fn wait_until_parses_the_cli_spellings() {
    assert_eq!(
        "DOMContentLoaded".parse::<WaitUntil>().unwrap(),
        WaitUntil::DomContentLoaded
    );
    assert_eq!(
        "networkidle".parse::<WaitUntil>().unwrap(),
        WaitUntil::network_idle()
    );
    assert!("idle".parse::<WaitUntil>().is_err());
}
