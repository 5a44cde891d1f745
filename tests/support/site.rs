//! A scripted HTTP site on 127.0.0.1 for navigation tests: each path answers with its
//! own status, headers, body and delay, and the site counts, per path, the requests it
//! received and the responses it finished sending.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How one path answers.
#[derive(Clone, Debug)]
pub struct Route {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Held this long before the response is written.
    pub delay: Duration,
}

impl Route {
    /// A 200 with `content_type` and `body`.
    pub fn ok(content_type: &str, body: impl Into<Vec<u8>>) -> Route {
        Route {
            status: 200,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    /// A 200 HTML page.
    pub fn html(body: &str) -> Route {
        Route::ok("text/html; charset=utf-8", body)
    }

    /// A redirect to `location`.
    pub fn redirect(status: u16, location: &str) -> Route {
        Route {
            status,
            headers: vec![("Location".into(), location.into())],
            body: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn status(mut self, status: u16) -> Route {
        self.status = status;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Route {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn delay(mut self, delay: Duration) -> Route {
        self.delay = delay;
        self
    }
}

#[derive(Default)]
struct Counts {
    requested: HashMap<String, u64>,
    served: HashMap<String, u64>,
    /// The head (request line and headers) of the last request for each path.
    heads: HashMap<String, String>,
}

/// The running site; dropping it stops the server.
pub struct Site {
    base: String,
    counts: Arc<Mutex<Counts>>,
    server: JoinHandle<()>,
}

impl Site {
    /// Serves `routes` (path → answer); any other path is a 404 page.
    pub async fn start(routes: Vec<(&str, Route)>) -> Site {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the test site on 127.0.0.1");
        let base = format!("http://{}", listener.local_addr().expect("local addr"));
        let routes: Arc<HashMap<String, Route>> =
            Arc::new(routes.into_iter().map(|(p, r)| (p.to_owned(), r)).collect());
        let counts = Arc::new(Mutex::new(Counts::default()));
        let counts2 = counts.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (routes, counts) = (routes.clone(), counts2.clone());
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(60),
                        answer(stream, &routes, &counts),
                    )
                    .await;
                });
            }
        });
        Site {
            base,
            counts,
            server,
        }
    }

    /// The absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Requests received for `path` (query strings ignored).
    pub fn requested(&self, path: &str) -> u64 {
        let c = self.counts.lock().unwrap();
        c.requested.get(path).copied().unwrap_or(0)
    }

    /// The request line and headers of the last request for `path`, if any came.
    pub fn last_head(&self, path: &str) -> Option<String> {
        let c = self.counts.lock().unwrap();
        c.heads.get(path).cloned()
    }

    /// Responses for `path` written in full.
    pub fn served(&self, path: &str) -> u64 {
        let c = self.counts.lock().unwrap();
        c.served.get(path).copied().unwrap_or(0)
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn answer(
    mut stream: TcpStream,
    routes: &HashMap<String, Route>,
    counts: &Mutex<Counts>,
) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 64 * 1024 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&request);
    let target = head.split_whitespace().nth(1).unwrap_or("").to_owned();
    let path = target.split(['?', '#']).next().unwrap_or("").to_owned();
    {
        let mut counts = counts.lock().unwrap();
        *counts.requested.entry(path.clone()).or_default() += 1;
        counts.heads.insert(path.clone(), head.to_string());
    }
    let route = routes
        .get(&path)
        .cloned()
        .unwrap_or_else(|| Route::html("<title>not found</title>").status(404));
    tokio::time::sleep(route.delay).await;
    let mut response = format!("HTTP/1.1 {} X\r\n", route.status);
    for (name, value) in &route.headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        route.body.len()
    ));
    let mut bytes = response.into_bytes();
    bytes.extend_from_slice(&route.body);
    stream.write_all(&bytes).await?;
    stream.flush().await?;
    *counts.lock().unwrap().served.entry(path).or_default() += 1;
    stream.shutdown().await
}
