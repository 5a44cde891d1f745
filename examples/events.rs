//! How do I see every response a page receives while my job drives it? Open an event
//! stream before navigating: `page.events_of::<EventResponseReceived>()` buffers every
//! `Network.responseReceived` of the page from then on (bounded, with an overflow policy
//! and a count of what it dropped), and ends when the job does.
//!
//! Run with `cargo run --example events` (needs Chromium: `apt-get install -y chromium`,
//! or set `CDPMUX_CHROME`).

use std::time::Duration;

use cdpmux::browser::Launch;
use cdpmux::browser_protocol::network::EventResponseReceived;
use cdpmux::sim::{DemoSite, SiteConfig};
use cdpmux::{EventBuffer, EventOverflow, Job, Pool};
use futures_util::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let site = DemoSite::start(SiteConfig {
        pages: 10,
        ..SiteConfig::default()
    })?;
    // Pages enable `Network` by default (`PageOptions::enable`): responses are reported.
    let pool = Pool::builder()
        .launch(Launch::new())
        .shards(1)
        .sessions_per_shard(1)
        .build()
        .await?;

    let url = site.url("/p/1");
    let (responses, dropped) = pool
        .run(Job::new(), async move |page| {
            let mut responses = page.events_of::<EventResponseReceived>();
            // A second, raw stream that keeps only the latest 2 events: it drops older
            // ones once full, and counts them.
            let latest = EventBuffer::new(2, EventOverflow::DropOldest);
            let last_two = page.events_with("Network.responseReceived", latest)?;
            page.goto(&url).await?;
            // The load has fired: read what arrived, without waiting for more.
            let mut seen = Vec::new();
            while let Ok(Some(next)) =
                tokio::time::timeout(Duration::from_millis(200), responses.next()).await
            {
                let response = next?;
                seen.push(format!(
                    "{} {}",
                    response.response.status, response.response.url
                ));
            }
            Ok((seen, last_two.dropped()))
        })
        .await?;
    println!("{} responses:", responses.len());
    for r in &responses {
        println!("  {r}");
    }
    println!("the 2-event stream dropped {dropped} older events");
    println!(
        "events dropped, pool-wide: {}",
        pool.metrics().await.counters.events_dropped
    );
    pool.shutdown(Duration::from_secs(5)).await?;
    Ok(())
}
