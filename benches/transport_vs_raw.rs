//! What does cdpmux's transport cost over a bare WebSocket client on the same session?
//!
//! One launched Chromium; cdpmux's `Connection` + `Page` against a minimal raw client
//! written here with tokio-tungstenite. Both use flat page sessions opened the same way
//! (`Target.createTarget {background: true}`, `Target.attachToTarget {flatten: true}`,
//! `Inspector.enable`, `Page.enable`), each client on its own socket, all on one
//! current-thread tokio runtime (with a `LocalSet`, which cdpmux needs), one phase at a
//! time.
//!
//! The raw client comes in two shapes:
//! - `raw`: one task, no multiplexing: write the frame, read frames until the reply with
//!   that id. The floor for sequential latency.
//! - `raw-mux`: what a minimal multiplexing client looks like: a reader task that hands
//!   each reply to its caller through a `HashMap<id, oneshot::Sender>` in an
//!   `Rc<RefCell<_>>`, and a writer task fed by an unbounded channel that writes every
//!   queued frame and flushes once. Used for throughput (many sessions on one socket), and
//!   shown for latency too, since cdpmux has the same task hops.
//!
//! Measures: sequential `Runtime.evaluate("1+1")` round trips (p50/p95/p99, blocks of the
//! clients interleaved so drift hits all of them), throughput with 1, 16 and 64 sessions on
//! one socket (one call in flight per session, clients alternated A-B-B-A), and client CPU
//! per command (`getrusage(RUSAGE_SELF)` user + sys over each client's phases). Only the
//! ratios within one run mean anything.
//!
//! `CDPMUX_BENCH_QUICK=1` shortens everything (CI checks that it runs). Without a Chromium
//! it prints SKIPPED and exits 0, unless `CDPMUX_REQUIRE_BROWSER=1`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use cdpmux::browser::Launch;
use cdpmux::browser_protocol::browser::GetVersionParams;
use cdpmux::cdp::{Connection, ConnectionConfig, Page, PageOptions};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type BoxError = Box<dyn std::error::Error>;

const EXPRESSION: &str = "1+1";
const SESSION_COUNTS: [usize; 3] = [1, 16, 64];

struct Plan {
    warmup: usize,
    blocks: usize,
    block_len: usize,
    /// Time per throughput phase; each client gets two phases per session count.
    phase: Duration,
}

impl Plan {
    fn from_env() -> Plan {
        if std::env::var("CDPMUX_BENCH_QUICK").as_deref() == Ok("1") {
            Plan {
                warmup: 50,
                blocks: 2,
                block_len: 100,
                phase: Duration::from_millis(150),
            }
        } else {
            Plan {
                warmup: 500,
                blocks: 10,
                block_len: 500,
                phase: Duration::from_millis(1500),
            }
        }
    }
}

fn main() -> Result<(), BoxError> {
    if let Err(e) = Launch::default().find_executable() {
        if std::env::var("CDPMUX_REQUIRE_BROWSER").as_deref() == Ok("1") {
            return Err(format!("CDPMUX_REQUIRE_BROWSER=1 but no browser: {e}").into());
        }
        println!("SKIPPED transport_vs_raw: no chromium ({e})");
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        tokio::time::timeout(Duration::from_secs(600), run(Plan::from_env()))
            .await
            .map_err(|_| BoxError::from("the benchmark took more than 10 minutes"))?
    })
}

async fn run(plan: Plan) -> Result<(), BoxError> {
    let browser = Launch::new().launch().await?;
    let outcome = measure(&plan, browser.ws_url()).await;
    browser.shutdown().await?;
    outcome
}

async fn measure(plan: &Plan, ws_url: &str) -> Result<(), BoxError> {
    let max_sessions = *SESSION_COUNTS.iter().max().unwrap_or(&1);
    let conn = Connection::connect(ws_url, ConnectionConfig::default()).await?;
    let version = conn.execute(GetVersionParams {}).await?;
    let options = PageOptions::default();
    let pages =
        futures_util::future::try_join_all((0..max_sessions).map(|_| conn.new_page(&options)))
            .await?;
    let mut serial = RawSerial::connect(ws_url).await?;
    let serial_session = open_session(&mut serial).await?;
    let mux = RawMux::connect(ws_url).await?;
    let mux_sessions = futures_util::future::try_join_all((0..max_sessions).map(|_| {
        let mut client = &mux;
        async move { open_session(&mut client).await }
    }))
    .await?;

    println!(
        "transport_vs_raw: {} ({}), {} sessions per client, one socket each",
        version.product, ws_url, max_sessions
    );

    // ---- sequential latency --------------------------------------------------------
    let mut cdpmux_lat = Lat::default();
    let mut raw_lat = Lat::default();
    let mut mux_lat = Lat::default();
    for _ in 0..plan.warmup {
        cdpmux_eval(&pages[0]).await?;
        serial.eval(&serial_session).await?;
        mux.eval(&mux_sessions[0]).await?;
    }
    for block in 0..plan.blocks {
        // Rotate the order so no client always runs right after another.
        for k in 0..3 {
            match (block + k) % 3 {
                0 => {
                    cdpmux_lat
                        .block(plan.block_len, || cdpmux_eval(&pages[0]))
                        .await?
                }
                1 => {
                    let cpu = cpu_time();
                    for _ in 0..plan.block_len {
                        let t = Instant::now();
                        serial.eval(&serial_session).await?;
                        raw_lat.samples.push(t.elapsed());
                    }
                    raw_lat.cpu += cpu_time() - cpu;
                }
                _ => {
                    mux_lat
                        .block(plan.block_len, || mux.eval(&mux_sessions[0]))
                        .await?
                }
            }
        }
    }
    println!();
    println!(
        "sequential Runtime.evaluate({EXPRESSION:?}) round trip, {} x {} per client after {} warm-up",
        plan.blocks, plan.block_len, plan.warmup
    );
    println!(
        "  {:<8} {:>8} {:>8} {:>8} {:>12}",
        "client", "p50 ms", "p95 ms", "p99 ms", "cpu us/cmd"
    );
    let raw_p = raw_lat.percentiles();
    for (name, lat) in [
        ("raw", &mut raw_lat),
        ("raw-mux", &mut mux_lat),
        ("cdpmux", &mut cdpmux_lat),
    ] {
        let [p50, p95, p99] = lat.percentiles();
        println!(
            "  {name:<8} {:>8.3} {:>8.3} {:>8.3} {:>12.1}",
            ms(p50),
            ms(p95),
            ms(p99),
            lat.cpu_per_cmd_us()
        );
    }
    let cdp_p = cdpmux_lat.percentiles();
    let mux_p = mux_lat.percentiles();
    println!(
        "  cdpmux/raw:     p50 {:.2}x  p99 {:.2}x",
        ratio(cdp_p[0], raw_p[0]),
        ratio(cdp_p[2], raw_p[2])
    );
    println!(
        "  cdpmux/raw-mux: p50 {:.2}x  p99 {:.2}x",
        ratio(cdp_p[0], mux_p[0]),
        ratio(cdp_p[2], mux_p[2])
    );

    // ---- throughput ----------------------------------------------------------------
    println!();
    println!(
        "throughput, one call in flight per session, {:?} per client per session count",
        plan.phase * 2
    );
    println!(
        "  {:>8} {:>12} {:>12} {:>8} {:>16} {:>16}",
        "sessions", "raw-mux /s", "cdpmux /s", "ratio", "raw-mux us/cmd", "cdpmux us/cmd"
    );
    for n in SESSION_COUNTS {
        let mut raw_run = Run::default();
        let mut cdp_run = Run::default();
        // A-B-B-A, so a trend over the phase affects both clients alike.
        cdp_run.add(throughput(plan.phase, &pages[..n], cdpmux_eval).await?);
        raw_run.add(throughput(plan.phase, &mux_sessions[..n], |s| mux.eval(s)).await?);
        raw_run.add(throughput(plan.phase, &mux_sessions[..n], |s| mux.eval(s)).await?);
        cdp_run.add(throughput(plan.phase, &pages[..n], cdpmux_eval).await?);
        println!(
            "  {n:>8} {:>12.0} {:>12.0} {:>7.2}x {:>16.1} {:>16.1}",
            raw_run.per_sec(),
            cdp_run.per_sec(),
            cdp_run.per_sec() / raw_run.per_sec(),
            raw_run.cpu_per_cmd_us(),
            cdp_run.cpu_per_cmd_us()
        );
    }
    let stats = conn.stats();
    println!();
    println!(
        "cdpmux connection: {} frames out in {} flushes (max {} per flush), {} in",
        stats.frames_out, stats.flushes, stats.max_frames_per_flush, stats.frames_in
    );
    drop(pages);
    Ok(())
}

async fn cdpmux_eval(page: &Page) -> Result<(), BoxError> {
    let reply = page
        .call("Runtime.evaluate", json!({ "expression": EXPRESSION }))
        .await?;
    check(&reply)
}

/// Every client builds its params per call (cdpmux's `call` takes them by value), decodes
/// the whole `result` and checks the value, so none skips work.
fn check(reply: &Value) -> Result<(), BoxError> {
    match reply.pointer("/result/value") {
        Some(v) if v == 2 => Ok(()),
        _ => Err(format!("unexpected evaluate reply: {reply}").into()),
    }
}

/// Latency samples and the client CPU they cost.
#[derive(Default)]
struct Lat {
    samples: Vec<Duration>,
    cpu: Duration,
}

impl Lat {
    async fn block<'a, F, Fut>(&mut self, n: usize, mut call: F) -> Result<(), BoxError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), BoxError>> + 'a,
    {
        let cpu = cpu_time();
        for _ in 0..n {
            let t = Instant::now();
            call().await?;
            self.samples.push(t.elapsed());
        }
        self.cpu += cpu_time() - cpu;
        Ok(())
    }

    fn percentiles(&mut self) -> [Duration; 3] {
        self.samples.sort_unstable();
        let at = |q: f64| {
            let i = ((self.samples.len() as f64 * q).ceil() as usize).saturating_sub(1);
            self.samples.get(i).copied().unwrap_or_default()
        };
        [at(0.50), at(0.95), at(0.99)]
    }

    fn cpu_per_cmd_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.samples.len().max(1) as f64
    }
}

/// Commands completed, wall time and client CPU of throughput phases.
#[derive(Default)]
struct Run {
    commands: u64,
    wall: Duration,
    cpu: Duration,
}

impl Run {
    fn add(&mut self, other: Run) {
        self.commands += other.commands;
        self.wall += other.wall;
        self.cpu += other.cpu;
    }

    fn per_sec(&self) -> f64 {
        self.commands as f64 / self.wall.as_secs_f64()
    }

    fn cpu_per_cmd_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.commands.max(1) as f64
    }
}

/// Every session loops one call at a time until `phase` has passed.
async fn throughput<'a, S, F, Fut>(
    phase: Duration,
    sessions: &'a [S],
    call: F,
) -> Result<Run, BoxError>
where
    F: Fn(&'a S) -> Fut,
    Fut: Future<Output = Result<(), BoxError>>,
{
    let cpu = cpu_time();
    let started = Instant::now();
    let deadline = started + phase;
    let call = &call;
    let counts = futures_util::future::try_join_all(sessions.iter().map(|s| async move {
        let mut n = 0u64;
        while Instant::now() < deadline {
            call(s).await?;
            n += 1;
        }
        Ok::<u64, BoxError>(n)
    }))
    .await?;
    Ok(Run {
        commands: counts.iter().sum(),
        wall: started.elapsed(),
        cpu: cpu_time() - cpu,
    })
}

/// User + system CPU time of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

// ---- the raw clients ------------------------------------------------------------------

#[derive(Serialize)]
struct Call<'a> {
    id: u64,
    method: &'a str,
    #[serde(rename = "sessionId", skip_serializing_if = "Option::is_none")]
    session_id: Option<&'a str>,
    params: &'a Value,
}

#[derive(Deserialize)]
struct Incoming<'a> {
    id: Option<u64>,
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

fn encode(id: u64, session_id: Option<&str>, method: &str, params: &Value) -> Message {
    let call = Call {
        id,
        method,
        session_id,
        params,
    };
    Message::text(serde_json::to_string(&call).expect("a call always serializes"))
}

/// The `result` of a reply frame, or its error as text.
fn decode(frame: &Incoming<'_>) -> Result<Value, BoxError> {
    match (frame.result, frame.error) {
        (Some(result), None) => Ok(serde_json::from_str(result.get())?),
        (_, Some(error)) => Err(format!("CDP error: {}", error.get()).into()),
        (None, None) => Err("a reply with neither result nor error".into()),
    }
}

async fn connect_ws(ws_url: &str) -> Result<Ws, BoxError> {
    let (ws, _) = tokio_tungstenite::connect_async(ws_url).await?;
    Ok(ws)
}

/// A raw client's one operation: a call and its decoded `result`.
trait RawCall {
    async fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: &Value,
    ) -> Result<Value, BoxError>;
}

/// Opens a flat session the way cdpmux does, through any raw client.
async fn open_session(client: &mut impl RawCall) -> Result<String, BoxError> {
    let created = client
        .call(
            None,
            "Target.createTarget",
            &json!({ "url": "about:blank", "background": true }),
        )
        .await?;
    let target = created["targetId"].as_str().ok_or("no targetId")?;
    let attached = client
        .call(
            None,
            "Target.attachToTarget",
            &json!({ "targetId": target, "flatten": true }),
        )
        .await?;
    let session = attached["sessionId"]
        .as_str()
        .ok_or("no sessionId")?
        .to_owned();
    for domain in ["Inspector.enable", "Page.enable"] {
        client.call(Some(&session), domain, &json!({})).await?;
    }
    Ok(session)
}

/// One task, one call at a time: write, then read until the reply to that id.
struct RawSerial {
    ws: Ws,
    next_id: u64,
}

impl RawSerial {
    async fn connect(ws_url: &str) -> Result<RawSerial, BoxError> {
        Ok(RawSerial {
            ws: connect_ws(ws_url).await?,
            next_id: 0,
        })
    }

    async fn eval(&mut self, session: &str) -> Result<(), BoxError> {
        let params = json!({ "expression": EXPRESSION });
        check(
            &self
                .call(Some(session), "Runtime.evaluate", &params)
                .await?,
        )
    }
}

impl RawCall for RawSerial {
    async fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: &Value,
    ) -> Result<Value, BoxError> {
        self.next_id += 1;
        let id = self.next_id;
        self.ws.send(encode(id, session, method, params)).await?;
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let frame: Incoming<'_> = serde_json::from_str(&text)?;
                    if frame.id == Some(id) {
                        return decode(&frame);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Err("the browser closed the socket".into()),
            }
        }
    }
}

type Waiters = Rc<RefCell<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

/// Many calls in flight on one socket: a reader task dispatching replies by id, a writer
/// task that drains its channel and flushes once.
struct RawMux {
    out: mpsc::UnboundedSender<Message>,
    waiters: Waiters,
    next_id: Cell<u64>,
}

impl RawMux {
    async fn connect(ws_url: &str) -> Result<RawMux, BoxError> {
        let (sink, stream) = connect_ws(ws_url).await?.split();
        let (out, rx) = mpsc::unbounded_channel();
        let waiters = Waiters::default();
        tokio::task::spawn_local(Self::write(sink, rx));
        tokio::task::spawn_local(Self::read(stream, waiters.clone()));
        Ok(RawMux {
            out,
            waiters,
            next_id: Cell::new(0),
        })
    }

    async fn write(mut sink: SplitSink<Ws, Message>, mut rx: mpsc::UnboundedReceiver<Message>) {
        while let Some(frame) = rx.recv().await {
            let mut written = sink.feed(frame).await;
            while let (Ok(()), Ok(frame)) = (&written, rx.try_recv()) {
                written = sink.feed(frame).await;
            }
            if written.is_err() || sink.flush().await.is_err() {
                return;
            }
        }
    }

    async fn read(mut stream: SplitStream<Ws>, waiters: Waiters) {
        while let Some(Ok(msg)) = stream.next().await {
            let Message::Text(text) = msg else { continue };
            let Ok(frame) = serde_json::from_str::<Incoming<'_>>(&text) else {
                continue;
            };
            let Some(id) = frame.id else { continue };
            let Some(tx) = waiters.borrow_mut().remove(&id) else {
                continue;
            };
            let _ = tx.send(decode(&frame).map_err(|e| e.to_string()));
        }
        // Dropping the senders fails every waiting call.
        waiters.borrow_mut().clear();
    }

    async fn call(
        &self,
        session: Option<&str>,
        method: &str,
        params: &Value,
    ) -> Result<Value, BoxError> {
        let id = self.next_id.get() + 1;
        self.next_id.set(id);
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().insert(id, tx);
        self.out
            .send(encode(id, session, method, params))
            .map_err(|_| "the writer is gone")?;
        Ok(rx.await.map_err(|_| "the socket closed")??)
    }

    async fn eval(&self, session: &str) -> Result<(), BoxError> {
        let params = json!({ "expression": EXPRESSION });
        check(
            &self
                .call(Some(session), "Runtime.evaluate", &params)
                .await?,
        )
    }
}

impl RawCall for &RawMux {
    async fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: &Value,
    ) -> Result<Value, BoxError> {
        RawMux::call(self, session, method, params).await
    }
}
