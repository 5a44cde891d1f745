//! A generated demo website on 127.0.0.1: pages with titles and links, a few slow
//! ones, a few heavy ones with scripts, and pages whose content appears from a timer.
//! For the demo, the CLI's `--demo`, benches and tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Shape of the generated site.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    /// Number of pages `/p/0` .. `/p/{pages-1}`. Default 300.
    pub pages: usize,
    /// Every n-th page answers after [`slow_delay`](Self::slow_delay) (0: none). Default 25.
    pub slow_every: usize,
    /// How long slow pages take. Default 300 ms.
    pub slow_delay: Duration,
    /// Every n-th page carries a script that builds a large DOM (0: none). Default 30.
    pub heavy_every: usize,
}

impl Default for SiteConfig {
    fn default() -> Self {
        SiteConfig {
            pages: 300,
            slow_every: 25,
            slow_delay: Duration::from_millis(300),
            heavy_every: 30,
        }
    }
}

/// The running site. Dropping it stops the server.
pub struct DemoSite {
    base: String,
    config: SiteConfig,
    requests: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl DemoSite {
    /// Serves the site on `127.0.0.1:0` from its own thread.
    pub fn start(config: SiteConfig) -> std::io::Result<DemoSite> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let base = format!("http://{}", listener.local_addr()?);
        let requests = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = oneshot::channel();
        let site = Arc::new(config.clone());
        let counter = requests.clone();
        let thread = std::thread::Builder::new()
            .name("cdpmux-demo-site".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("a tokio listener");
                    let accept = async {
                        while let Ok((stream, _)) = listener.accept().await {
                            let (site, counter) = (site.clone(), counter.clone());
                            tokio::spawn(async move {
                                let _ = tokio::time::timeout(
                                    Duration::from_secs(30),
                                    serve(stream, &site, &counter),
                                )
                                .await;
                            });
                        }
                    };
                    tokio::select! {
                        _ = accept => {}
                        _ = stopped => {}
                    }
                });
            })?;
        Ok(DemoSite {
            base,
            config,
            requests,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Every page's URL, `/p/0` first.
    pub fn page_urls(&self) -> Vec<String> {
        (0..self.config.pages)
            .map(|n| self.url(&format!("/p/{n}")))
            .collect()
    }

    /// The title page `n` shows once loaded.
    pub fn title_of(n: usize) -> String {
        format!("Demo page {n}")
    }

    /// HTTP requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The site's shape.
    pub fn config(&self) -> &SiteConfig {
        &self.config
    }
}

impl Drop for DemoSite {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for DemoSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoSite")
            .field("base", &self.base)
            .finish()
    }
}

async fn serve(
    mut stream: TcpStream,
    site: &SiteConfig,
    counter: &AtomicU64,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
    counter.fetch_add(1, Ordering::Relaxed);
    let (status, body) = match page(site, &path) {
        Some((delay, body)) => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await; // the page is slow on purpose
            }
            ("200 OK", body)
        }
        None => (
            "404 Not Found",
            "<title>Not found</title>not found".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// The body of `path` and how long to hold it back, or `None` for a 404.
fn page(site: &SiteConfig, path: &str) -> Option<(Duration, String)> {
    let n = site.pages.max(1);
    if path == "/" {
        let links: String = (0..n.min(50))
            .map(|i| format!("<li><a href=\"/p/{i}\">page {i}</a></li>"))
            .collect();
        return Some((
            Duration::ZERO,
            format!(
                "<!doctype html><title>cdpmux demo</title><h1>cdpmux demo</h1><ul>{links}</ul>"
            ),
        ));
    }
    if let Some(rest) = path.strip_prefix("/timer/") {
        // Content that appears from a timer: shows whether hidden tabs run their timers.
        let ms: u64 = rest.parse().ok()?;
        return Some((
            Duration::ZERO,
            format!(
                "<!doctype html><title>timer</title><div id=out>waiting</div>\
                 <script>setTimeout(() => {{ window.readyAt = performance.now(); \
                 document.getElementById('out').textContent = 'ready after {ms} ms'; }}, {ms});</script>"
            ),
        ));
    }
    let i: usize = path.strip_prefix("/p/")?.parse().ok()?;
    if i >= n {
        return None;
    }
    let links = [(i + 1) % n, (i * 7 + 3) % n, (i * 13 + 5) % n]
        .iter()
        .map(|j| format!("<a href=\"/p/{j}\">page {j}</a> "))
        .collect::<String>();
    let heavy = site.heavy_every > 0 && i % site.heavy_every == site.heavy_every - 1;
    let script = if heavy {
        "<script>const list = document.createElement('ul');\
         for (let k = 0; k < 3000; k++) { const li = document.createElement('li'); li.textContent = 'row ' + k; list.appendChild(li); }\
         document.body.appendChild(list);</script>"
    } else {
        ""
    };
    let slow = site.slow_every > 0 && i % site.slow_every == site.slow_every - 1;
    let delay = if slow {
        site.slow_delay
    } else {
        Duration::ZERO
    };
    Some((
        delay,
        format!(
            "<!doctype html><html><head><title>{}</title></head><body><h1>Page {i}</h1>\
             <p>Generated page {i} of {n}.</p><nav>{links}</nav>{script}</body></html>",
            DemoSite::title_of(i)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_link_within_the_site() {
        let site = SiteConfig::default();
        let (_, body) = page(&site, "/p/0").unwrap();
        assert!(body.contains("<title>Demo page 0</title>"));
        assert!(body.contains("href=\"/p/1\""));
        assert_eq!(page(&site, "/p/24").unwrap().0, site.slow_delay);
        assert!(page(&site, "/p/29").unwrap().1.contains("<script>"));
        assert!(page(&site, "/p/300").is_none());
        assert!(page(&site, "/nope").is_none());
        assert!(page(&site, "/timer/20").unwrap().1.contains("setTimeout"));
    }
}
