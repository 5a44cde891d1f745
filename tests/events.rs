//! Event streams on real Chromium: a job counts its page's responses from a stream, a
//! tiny buffer counts what it drops, a typed stream decodes, a stream ends with its job
//! (or with its page, saying why), and the next job on the same page hears nothing of
//! the last one's streams.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use cdpmux::browser::Launch;
use cdpmux::browser_protocol::network::EventResponseReceived;
use cdpmux::browser_protocol::page::EventLoadEventFired;
use cdpmux::{ErrorKind, EventBuffer, EventOverflow, Events, Job, Pool, TypedEvents};
use futures_util::StreamExt;
use support::site::{Route, Site};

const LIMIT: Duration = Duration::from_secs(60);

async fn chromium_pool() -> Pool {
    Pool::builder()
        .launch(Launch::new())
        .shards(1)
        .sessions_per_shard(1)
        .configure(|c| c.command_timeout = Duration::from_secs(20))
        .build()
        .await
        .expect("launch Chromium and build a pool")
}

async fn within<F: std::future::Future>(fut: F) -> F::Output {
    tokio::time::timeout(LIMIT, fut)
        .await
        .expect("the test finishes in time")
}

fn no_store(route: Route) -> Route {
    route.header("Cache-Control", "no-store")
}

/// A page with three sub-resources (two images and a script).
async fn site() -> Site {
    Site::start(vec![
        (
            "/page",
            no_store(Route::html(
                r#"<title>p</title><img src="/a.png"><img src="/b.png"><script src="/c.js"></script>"#,
            )),
        ),
        ("/a.png", no_store(Route::ok("image/png", vec![0u8; 16]))),
        ("/b.png", no_store(Route::ok("image/png", vec![0u8; 16]))),
        (
            "/c.js",
            no_store(Route::ok("application/javascript", "var c = 1;")),
        ),
    ])
    .await
}

/// Reads typed responses until every URL of `want` was seen; returns them in order.
async fn responses_until(
    stream: &mut TypedEvents<EventResponseReceived>,
    want: &BTreeSet<String>,
) -> cdpmux::Result<Vec<String>> {
    let mut seen = Vec::new();
    while !want.iter().all(|u| seen.contains(u)) {
        match stream.next().await {
            Some(event) => seen.push(event?.response.url),
            None => break,
        }
    }
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_counts_its_pages_sub_resources_from_a_response_stream() {
    if !support::require_browser() {
        return;
    }
    let site = site().await;
    let pool = chromium_pool().await;
    let page_url = site.url("/page");
    let want: BTreeSet<String> = ["/page", "/a.png", "/b.png", "/c.js"]
        .iter()
        .map(|p| site.url(p))
        .collect();
    let (seen, dropped) = within(pool.run(Job::new(), {
        let want = want.clone();
        async move |page| {
            // Registered before the navigation: nothing it causes is missed.
            let mut responses = page.events_of::<EventResponseReceived>();
            page.goto(&page_url).await?;
            let seen = responses_until(&mut responses, &want).await?;
            Ok((seen, responses.dropped()))
        }
    }))
    .await
    .expect("the job runs");
    let sub_resources = seen.iter().filter(|u| **u != site.url("/page")).count();
    assert_eq!(sub_resources, 3, "two images and a script: {seen:?}");
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 4, "{seen:?}");
    assert_eq!(dropped, 0);
    pool.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_drops_the_newest_events_and_counts_them() {
    if !support::require_browser() {
        return;
    }
    let site = site().await;
    let pool = chromium_pool().await;
    let page_url = site.url("/page");
    let want: BTreeSet<String> = ["/page", "/a.png", "/b.png", "/c.js"]
        .iter()
        .map(|p| site.url(p))
        .collect();
    let (kept, dropped) = within(pool.run(Job::new(), {
        let want = want.clone();
        async move |page| {
            let tiny = EventBuffer::new(1, EventOverflow::DropNewest);
            let mut small = page.events_with("Network.responseReceived", tiny)?;
            // The witness: once it has every response, the small stream was offered
            // every one too (both hear each event in the same delivery).
            let mut witness = page.events_of::<EventResponseReceived>();
            page.goto(&page_url).await?;
            responses_until(&mut witness, &want).await?;
            let first = small.next().await.expect("one event kept")?;
            let url = first.params::<EventResponseReceived>()?.response.url;
            Ok((url, small.dropped()))
        }
    }))
    .await
    .expect("the job runs");
    assert_eq!(
        kept,
        site.url("/page"),
        "the first response is the one kept"
    );
    assert_eq!(dropped, 3, "the three later responses were dropped");
    let counters = pool.metrics().await.counters;
    assert_eq!(counters.events_dropped, 3, "the pool counts them too");
    pool.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_stream_decodes_the_load_event() {
    if !support::require_browser() {
        return;
    }
    let site = site().await;
    let pool = chromium_pool().await;
    let page_url = site.url("/page");
    let timestamp = within(pool.run(Job::new(), async move |page| {
        let mut loads = page.events_of::<EventLoadEventFired>();
        page.goto(&page_url).await?;
        let load = loads.next().await.expect("a load event")?;
        Ok(*load.timestamp.inner())
    }))
    .await
    .expect("the job runs");
    assert!(timestamp > 0.0, "a decoded timestamp: {timestamp}");
    assert_eq!(
        TypedEvents::<EventLoadEventFired>::method_name(),
        "Page.loadEventFired"
    );
    pool.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_when_its_job_returns_and_the_next_job_hears_nothing_of_it() {
    if !support::require_browser() {
        return;
    }
    let site = site().await;
    let pool = chromium_pool().await;
    // The stream leaves its job (it is `Send`); the page goes back to the pool.
    let mut escaped: Events = within(pool.run(Job::new(), async move |page| {
        Ok(page.events("Page.loadEventFired"))
    }))
    .await
    .expect("the job runs");
    assert!(
        within(escaped.next()).await.is_none(),
        "the job returned: its stream ended"
    );
    // The same page (one session) loads a page for the next job: the ended stream
    // stays ended, and the next job's own stream hears the load.
    let page_url = site.url("/page");
    let uses = within(pool.run(Job::new(), async move |page| {
        let mut loads = page.events("Page.loadEventFired");
        page.goto(&page_url).await?;
        loads.next().await.expect("the load")?;
        Ok(page.uses())
    }))
    .await
    .expect("the job runs");
    assert_eq!(uses, 2, "the same page served both jobs");
    assert!(escaped.next().await.is_none());
    assert_eq!(escaped.dropped(), 0);
    pool.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_on_a_page_that_crashes_says_why_then_ends() {
    if !support::require_browser() {
        return;
    }
    let pool = chromium_pool().await;
    let (first, then) = within(pool.run(Job::new(), async move |page| {
        let mut stream = page.events("Page.loadEventFired");
        // Chromium answers nothing: the renderer is gone.
        let _ = page.call("Page.crash", serde_json::json!({})).await;
        let first = stream
            .next()
            .await
            .map(|r| r.map(|_| ()).map_err(|e| e.kind()));
        let then = stream.next().await.is_none();
        Ok((first, then))
    }))
    .await
    .expect("the job returns");
    assert_eq!(first, Some(Err(ErrorKind::SessionCrashed)));
    assert!(then, "after the error, the end");
    pool.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_streams_responses_and_its_streams_end_when_it_is_dropped() {
    if !support::require_browser() {
        return;
    }
    let site = site().await;
    let pool = chromium_pool().await;
    let lease = within(pool.acquire(Job::new())).await.expect("a lease");
    let mut responses = lease.events_of::<EventResponseReceived>();
    let load = lease.wait_for_event("Page.loadEventFired");
    within(lease.goto(&site.url("/page")))
        .await
        .expect("the page loads");
    let want: BTreeSet<String> = ["/page", "/a.png", "/b.png", "/c.js"]
        .iter()
        .map(|p| site.url(p))
        .collect();
    let seen = within(responses_until(&mut responses, &want))
        .await
        .unwrap();
    assert_eq!(seen.len(), 4, "{seen:?}");
    within(load.wait(LIMIT)).await.expect("the load event");
    drop(lease);
    assert!(
        within(responses.next()).await.is_none(),
        "the lease went back: its stream ended"
    );
    pool.shutdown(Duration::from_secs(10)).await.unwrap();
}
