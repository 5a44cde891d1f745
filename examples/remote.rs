//! How do I drive browsers on other machines, some of which may be down or restart?
//! Give the pool one endpoint per browser: `http(s)://host:port` endpoints are looked up
//! again on every reconnect (a restarted browser has a new id), browsers that are down
//! are retried and join when they answer, and a capacity caps the pages on each.
//!
//! Run with `cargo run --example remote -- http://10.0.0.5:9222 wss://fleet.example/x?token=t`
//! (any number of endpoints, optionally `=N` after one for its capacity, e.g.
//! `http://10.0.0.5:9222=16`). Without arguments it starts a local Chromium to stand in
//! for a remote one and adds an endpoint where nothing listens, to show the build going
//! ahead without it.

use std::time::Duration;

use cdpmux::browser::{Endpoint, Launch};
use cdpmux::sim::{DemoSite, SiteConfig};
use cdpmux::{Job, Pool};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // Kept alive for the run when we start our own.
    let mut stand_in = None;
    if args.is_empty() {
        let browser = Launch::new().launch().await?;
        let port = url::Url::parse(browser.ws_url())?.port().unwrap_or(9222);
        args.push(format!("http://127.0.0.1:{port}=4"));
        let nobody = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        args.push(format!("http://{nobody}")); // down: retried in the background
        stand_in = Some(browser);
    }

    let mut builder = Pool::builder().shards(1).sessions_per_shard(4);
    for arg in &args {
        let (address, capacity) = match arg.rsplit_once('=') {
            Some((a, n)) if n.parse::<usize>().is_ok() => (a, n.parse().ok()),
            _ => (arg.as_str(), None),
        };
        let mut endpoint = Endpoint::parse(address)?;
        if let Ok(token) = std::env::var("FLEET_TOKEN") {
            endpoint = endpoint.header("Authorization", &format!("Bearer {token}"))?;
        }
        if let Some(n) = capacity {
            endpoint = endpoint.capacity(n);
        }
        println!("endpoint {endpoint} (capacity {capacity:?})");
        builder = builder.endpoint_with(endpoint);
    }
    let pool = builder.build().await?;

    let site = DemoSite::start(SiteConfig {
        pages: 20,
        ..SiteConfig::default()
    })?;
    for url in site.page_urls() {
        // Retries: a job on a browser that dies runs again on another one.
        let job = Job::new().retries(2).timeout(Duration::from_secs(30));
        let title = pool
            .run(job, async move |page| {
                page.goto(&url).await?;
                page.title().await
            })
            .await;
        match title {
            Ok(t) => println!("ok   {t}"),
            Err(e) => println!("fail {e}"),
        }
    }
    let snap = pool.metrics().await;
    println!(
        "{} sessions, {} reconnects",
        snap.gauges.live(),
        snap.counters.reconnects
    );
    pool.shutdown(Duration::from_secs(5)).await?;
    if let Some(browser) = stand_in {
        browser.shutdown().await?;
    }
    Ok(())
}
