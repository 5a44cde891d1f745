//! How do I answer, fail or change the requests a page sends? Install an `Interceptor`:
//! for one job with `page.intercept(..)` (it ends with the job), or on every page with
//! `PageOptions::intercept`. Here a job serves a page's `robots.txt` itself, drops its
//! images, tags the document request with a header, and gives up on nothing: a handler
//! that does not answer in time lets the request through.
//!
//! Run with `cargo run --example intercept` (needs Chromium: `apt-get install -y
//! chromium`, or set `CDPMUX_CHROME`).

use std::time::Duration;

use cdpmux::browser::Launch;
use cdpmux::cdp::{Decision, FailReason, Interceptor};
use cdpmux::sim::{DemoSite, SiteConfig};
use cdpmux::{Job, Pool};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let site = DemoSite::start(SiteConfig {
        pages: 5,
        ..SiteConfig::default()
    })?;
    let pool = Pool::builder()
        .launch(Launch::new())
        .shards(1)
        .sessions_per_shard(2)
        .build()
        .await?;

    let url = site.url("/p/1");
    let robots = site.url("/robots.txt");
    let (title, text) = pool
        .run(Job::new(), async move |page| {
            let interceptor = Interceptor::new(async |request| {
                if request.url().ends_with("/robots.txt") {
                    // Answered here: never sent.
                    Decision::fulfill(200, "text/plain", "User-agent: *\nDisallow:")
                } else if request.resource_type() == "Image" {
                    Decision::Fail(FailReason::BlockedByClient)
                } else if request.resource_type() == "Document" {
                    let mut headers = request.headers().to_vec();
                    headers.push(("X-Crawler".into(), "cdpmux-example".into()));
                    Decision::Continue {
                        url: None,
                        headers: Some(headers),
                        post_data: None,
                    }
                } else {
                    Decision::proceed()
                }
            })
            // A request the handler has not answered after this goes on unchanged.
            .deadline(Duration::from_secs(2));
            let _guard = page.intercept(interceptor).await?;
            page.goto(&url).await?;
            let title = page.title().await?;
            page.goto(&robots).await?;
            let text = page.evaluate_value("document.body.innerText").await?;
            Ok((title, text))
            // `_guard` drops here; the page goes back to the pool unintercepted.
        })
        .await?;
    println!("title: {title}\nrobots.txt, from the handler: {text}");
    let counters = pool.metrics().await.counters;
    println!(
        "requests continued after their handler's deadline: {}",
        counters.intercept_timeouts
    );
    pool.shutdown(Duration::from_secs(5)).await?;
    Ok(())
}
