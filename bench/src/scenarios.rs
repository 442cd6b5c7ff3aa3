//! The scenarios. Each one starts (or attaches to) a server, sets up its data over HTTP, opens
//! its connections, measures one or more bounded phases and stops on its own.
//!
//! Sequence checking: the publisher sets a strictly increasing value per event (`setInventory`
//! quantity 1, 2, 3, … or `trackingNumber` "T1", "T2", …). Each subscriber keeps a bitset of the
//! values of the measured phase, so that a value seen twice is a duplicate, a value below the
//! highest seen so far is out of order, and a value never seen is missing. Latency is measured
//! from the value's *scheduled* send time (open loop), so a server that falls behind is charged
//! for the whole wait (no coordinated omission).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::client::{self, HttpReader, HttpWriter, Ws, number_after};
use crate::sys::{self, CpuMark};
use crate::target::{Kind, Server, SpawnSettings};

/// What every scenario needs to reach or start a server.
#[derive(Clone)]
pub struct Env {
    pub settings: SpawnSettings,
    /// `Some`: drive this already running server instead of starting one.
    pub external: Option<(String, Option<String>, Option<u32>)>,
    pub token: String,
    /// Connections being opened at once.
    pub concurrency: usize,
    pub fd_limit: u64,
    /// Subscribers speak GraphQL over SSE (distinct connections, `POST /graphql/stream`) instead
    /// of graphql-ws.
    pub sse: std::cell::Cell<bool>,
}

impl Env {
    pub fn start(&self, kind: Kind) -> anyhow::Result<Server> {
        match (&self.external, kind) {
            (Some((ws, http, pid)), Kind::Switchboard | Kind::External) => Server::external(ws, http.as_deref(), *pid),
            _ => Server::spawn(kind, &self.settings),
        }
    }

    /// The most connections a scenario may hold: the generator's limit less a margin for
    /// everything else it has open (the server has the same limit on its side).
    pub fn max_connections(&self) -> usize {
        (self.fd_limit.saturating_sub(500)) as usize
    }
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub count: u64,
}

impl Latency {
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |v: u64| v as f64 / 1000.0;
        Self {
            p50: ms(h.value_at_quantile(0.5)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            count: h.len(),
        }
    }
}

/// Shared by the subscriber tasks of a scenario (single-threaded: `Cell`s, no atomics).
struct Tally {
    /// First value of the measured phase; 0 while warming up.
    base: Cell<u64>,
    n: Cell<u64>,
    t0: Cell<Option<Instant>>,
    interval: Cell<Duration>,
    /// Subscribers that have received at least one event, ever.
    warm: Cell<u64>,
    deliveries: Cell<u64>,
    unique: Cell<u64>,
    duplicates: Cell<u64>,
    out_of_order: Cell<u64>,
    stray: Cell<u64>,
    finished: Cell<u64>,
    errors: Cell<u64>,
    completes: Cell<u64>,
    closed: Cell<u64>,
    close_reasons: RefCell<BTreeMap<String, u64>>,
    last_at: Cell<Option<Instant>>,
    latency: RefCell<Histogram<u64>>,
}

impl Tally {
    fn new() -> Rc<Self> {
        Rc::new(Self {
            base: Cell::new(0),
            n: Cell::new(0),
            t0: Cell::new(None),
            interval: Cell::new(Duration::ZERO),
            warm: Cell::new(0),
            deliveries: Cell::new(0),
            unique: Cell::new(0),
            duplicates: Cell::new(0),
            out_of_order: Cell::new(0),
            stray: Cell::new(0),
            finished: Cell::new(0),
            errors: Cell::new(0),
            completes: Cell::new(0),
            closed: Cell::new(0),
            close_reasons: RefCell::new(BTreeMap::new()),
            last_at: Cell::new(None),
            latency: RefCell::new(histogram()),
        })
    }

    fn bump(cell: &Cell<u64>) {
        cell.set(cell.get() + 1);
    }

    fn closed_because(&self, reason: String) {
        Self::bump(&self.closed);
        *self.close_reasons.borrow_mut().entry(reason).or_default() += 1;
    }

    /// Starts a measured phase of `n` values from `base`, value k scheduled at t0 + k·interval.
    fn begin(&self, base: u64, n: u64, t0: Instant, interval: Duration) {
        for c in [&self.deliveries, &self.unique, &self.duplicates, &self.out_of_order, &self.stray, &self.finished] {
            c.set(0);
        }
        self.latency.borrow_mut().reset();
        self.last_at.set(None);
        self.n.set(n);
        self.t0.set(Some(t0));
        self.interval.set(interval);
        self.base.set(base);
    }
}

/// What one subscriber has seen of the current phase: every value once, in order.
#[derive(Default)]
struct Seen {
    any: bool,
    phase: u64,
    last: u64,
    bits: Vec<u64>,
}

impl Seen {
    /// Tallies one `next` message (a graphql-ws frame or an SSE event) carrying `key`'s value.
    fn next(&mut self, tally: &Tally, text: &str, key: &'static str) {
        let Some(value) = number_after(text, key) else {
            Tally::bump(&tally.stray);
            return;
        };
        if !self.any {
            self.any = true;
            Tally::bump(&tally.warm);
        }
        let base = tally.base.get();
        if base == 0 || value < base {
            return; // a warm-up value
        }
        let n = tally.n.get();
        if self.phase != base {
            self.phase = base;
            self.last = 0;
            self.bits.clear();
            self.bits.resize(n.div_ceil(64) as usize, 0);
        }
        let index = value - base;
        if index >= n {
            Tally::bump(&tally.stray);
            return;
        }
        Tally::bump(&tally.deliveries);
        let (word, bit) = ((index / 64) as usize, 1u64 << (index % 64));
        if self.bits[word] & bit != 0 {
            Tally::bump(&tally.duplicates);
            return;
        }
        self.bits[word] |= bit;
        Tally::bump(&tally.unique);
        if value < self.last {
            Tally::bump(&tally.out_of_order);
        } else {
            self.last = value;
        }
        let now = Instant::now();
        if let Some(t0) = tally.t0.get() {
            let scheduled = t0 + tally.interval.get().mul_f64(index as f64);
            let micros = now.saturating_duration_since(scheduled).as_micros() as u64;
            tally.latency.borrow_mut().saturating_record(micros.max(1));
        }
        tally.last_at.set(Some(now));
        if index == n - 1 {
            Tally::bump(&tally.finished);
        }
    }
}

/// One subscriber: reads frames until cancelled or closed, checking the sequence of `key`'s value.
async fn watch(mut ws: Ws, tally: Rc<Tally>, key: &'static str, cancel: CancellationToken) {
    let mut seen = Seen::default();
    loop {
        let message = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            message = ws.next() => message,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                tally.closed_because(
                    frame.map_or("close without code".into(), |f| format!("{} {}", u16::from(f.code), f.reason)),
                );
                return;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                tally.closed_because(format!("error: {e}"));
                return;
            }
            None => {
                tally.closed_because("eof".into());
                return;
            }
        };
        if text.contains("\"type\":\"next\"") {
            seen.next(&tally, &text, key);
        } else if text.contains("\"type\":\"ping\"") {
            if ws.send(Message::Text(r#"{"type":"pong"}"#.into())).await.is_err() {
                tally.closed_because("send failed".into());
                return;
            }
        } else if text.contains("\"type\":\"error\"") {
            Tally::bump(&tally.errors);
        } else if text.contains("\"type\":\"complete\"") {
            Tally::bump(&tally.completes);
        }
    }
}

/// One SSE subscriber: reads the event stream (after the response head) until cancelled or
/// ended, tallying like [`watch`]. Events are found by their blank-line ends; the chunked
/// encoding's size lines fall between events and are ignored.
async fn watch_sse(mut stream: TcpStream, tally: Rc<Tally>, key: &'static str, cancel: CancellationToken) {
    use tokio::io::AsyncReadExt;
    let mut seen = Seen::default();
    let mut buffer: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let read = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            read = stream.read(&mut chunk) => read,
        };
        match read {
            Ok(0) => {
                tally.closed_because("eof".into());
                return;
            }
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(e) => {
                tally.closed_because(format!("error: {e}"));
                return;
            }
        }
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buffer.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&event);
            if text.contains("event: next") {
                if text.contains("\"errors\"") {
                    Tally::bump(&tally.errors);
                } else {
                    seen.next(&tally, &text, key);
                }
            } else if text.contains("event: complete") {
                Tally::bump(&tally.completes);
            }
        }
        if buffer.capacity() > 64 * 1024 {
            buffer.shrink_to(4096);
        }
    }
}

enum Subscriber {
    Ws(Box<Ws>),
    Sse(TcpStream),
}

/// Subscribers opened by [`open`]: their tasks and the token that stops them.
struct Subscribers {
    tasks: Vec<JoinHandle<()>>,
    cancel: CancellationToken,
    failed: usize,
    first_failure: Option<String>,
}

impl Subscribers {
    fn new() -> Self {
        Self { tasks: Vec::new(), cancel: CancellationToken::new(), failed: 0, first_failure: None }
    }

    fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Stops every subscriber and waits for its socket to be dropped.
    async fn stop(self) {
        self.cancel.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Opens `count` more subscribers (`env.concurrency` at a time); `operation(i)` gives the i-th
/// one's query and variables.
async fn open(
    env: &Env,
    server: &Server,
    subscribers: &mut Subscribers,
    tally: &Rc<Tally>,
    key: &'static str,
    count: usize,
    operation: impl Fn(usize) -> (&'static str, Value),
) {
    let first = subscribers.len();
    let sse = env.sse.get();
    let results: Vec<anyhow::Result<Subscriber>> = futures::stream::iter(first..first + count)
        .map(|i| {
            let (query, variables) = operation(i);
            async move {
                if sse {
                    return Ok(Subscriber::Sse(
                        client::sse_subscribe(server.addr, &env.token, query, variables).await?,
                    ));
                }
                let mut ws = client::graphql_ws(server.addr, &server.ws_url, &env.token).await?;
                client::subscribe(&mut ws, query, variables).await?;
                Ok(Subscriber::Ws(Box::new(ws)))
            }
        })
        .buffer_unordered(env.concurrency)
        .collect()
        .await;
    for result in results {
        match result {
            Ok(Subscriber::Ws(ws)) => {
                subscribers.tasks.push(tokio::task::spawn_local(watch(
                    *ws,
                    tally.clone(),
                    key,
                    subscribers.cancel.clone(),
                )));
            }
            Ok(Subscriber::Sse(stream)) => {
                let cancel = subscribers.cancel.clone();
                subscribers.tasks.push(tokio::task::spawn_local(watch_sse(stream, tally.clone(), key, cancel)));
            }
            Err(e) => {
                subscribers.failed += 1;
                subscribers.first_failure.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
}

/// A publisher: one keep-alive connection, requests pipelined.
pub(crate) struct Publisher {
    pub(crate) writer: HttpWriter,
    pub(crate) reader: HttpReader,
    /// The last value published.
    pub(crate) seq: u64,
    pub(crate) make: Box<dyn Fn(u64) -> String>,
}

impl Publisher {
    pub(crate) async fn new(server: &Server, token: &str, make: Box<dyn Fn(u64) -> String>) -> anyhow::Result<Self> {
        let (writer, reader) = client::http(server.addr, token).await?;
        Ok(Self { writer, reader, seq: 0, make })
    }

    /// Publishes one value and waits for its response.
    pub(crate) async fn publish_one(&mut self) -> anyhow::Result<()> {
        self.seq += 1;
        self.writer.send(&(self.make)(self.seq)).await?;
        let response = self.reader.next().await?;
        if !response.ok() {
            bail!("publish failed: HTTP {} {}", response.status, String::from_utf8_lossy(&response.body));
        }
        Ok(())
    }

    /// Publishes until `expect` subscribers have seen an event (or `limit` passes).
    async fn warm_up(&mut self, tally: &Tally, expect: u64, limit: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + limit;
        loop {
            self.publish_one().await?;
            let deadline = Instant::now() + Duration::from_millis(300);
            while tally.warm.get() < expect && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if tally.warm.get() >= expect {
                return Ok(());
            }
            if Instant::now() > until {
                eprintln!("  warm-up: only {} of {expect} subscribers saw an event within {limit:?}", tally.warm.get());
                return Ok(());
            }
        }
    }
}

/// Results of one open-loop run of a pipelined publisher.
#[derive(Default)]
pub(crate) struct OpenLoop {
    pub(crate) sent: u64,
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) first_response: Option<Instant>,
    pub(crate) last_response: Option<Instant>,
}

/// Sends `n` requests (values `first`, `first+1`, …) at t0 + k·interval, whatever the responses
/// do, and records each response's latency from its scheduled time in `latency`.
pub(crate) async fn open_loop(
    publisher: &mut Publisher,
    n: u64,
    t0: Instant,
    interval: Duration,
    latency: &RefCell<Histogram<u64>>,
) -> anyhow::Result<OpenLoop> {
    let first = publisher.seq + 1;
    let make = &publisher.make;
    let writer = &mut publisher.writer;
    let reader = &mut publisher.reader;
    let result = RefCell::new(OpenLoop::default());
    let write = async {
        for k in 0..n {
            tokio::time::sleep_until((t0 + interval.mul_f64(k as f64)).into()).await;
            writer.send(&make(first + k)).await?;
            result.borrow_mut().sent += 1;
        }
        anyhow::Ok(())
    };
    let read = async {
        for k in 0..n {
            let response = reader.next().await?;
            let now = Instant::now();
            let scheduled = t0 + interval.mul_f64(k as f64);
            latency
                .borrow_mut()
                .saturating_record((now.saturating_duration_since(scheduled).as_micros() as u64).max(1));
            let mut r = result.borrow_mut();
            r.first_response.get_or_insert(now);
            r.last_response = Some(now);
            if response.ok() {
                r.ok += 1;
            } else {
                r.errors += 1;
                r.first_error
                    .get_or_insert_with(|| String::from_utf8_lossy(&response.body).chars().take(300).collect());
            }
        }
        anyhow::Ok(())
    };
    tokio::try_join!(write, read)?;
    publisher.seq = first + n - 1;
    Ok(result.into_inner())
}

/// Keeps `depth` requests in flight on the publisher's connection (one more written as each
/// response arrives) until `until`, then lets them drain. Latency is from each request's write.
pub(crate) async fn closed_loop(
    publisher: &mut Publisher,
    depth: usize,
    until: Instant,
    latency: &RefCell<Histogram<u64>>,
) -> anyhow::Result<OpenLoop> {
    let mut result = OpenLoop::default();
    let mut in_flight = std::collections::VecDeque::with_capacity(depth);
    let mut next = publisher.seq + 1;
    for _ in 0..depth.max(1) {
        publisher.writer.send(&(publisher.make)(next)).await?;
        next += 1;
        result.sent += 1;
        in_flight.push_back(Instant::now());
    }
    while let Some(sent_at) = in_flight.pop_front() {
        let response = publisher.reader.next().await?;
        let now = Instant::now();
        latency.borrow_mut().saturating_record((now.saturating_duration_since(sent_at).as_micros() as u64).max(1));
        result.first_response.get_or_insert(now);
        result.last_response = Some(now);
        if response.ok() {
            result.ok += 1;
        } else {
            result.errors += 1;
            result
                .first_error
                .get_or_insert_with(|| String::from_utf8_lossy(&response.body).chars().take(300).collect());
        }
        if now < until {
            publisher.writer.send(&(publisher.make)(next)).await?;
            next += 1;
            result.sent += 1;
            in_flight.push_back(Instant::now());
        }
    }
    publisher.seq = next - 1;
    Ok(result)
}

/// A measured fan-out phase.
#[derive(Clone, Debug, Default)]
pub struct Phase {
    pub subscribers: usize,
    pub rate: f64,
    pub events: u64,
    pub deliveries: u64,
    pub expected: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub closed: u64,
    pub close_reasons: String,
    pub subscribe_errors: u64,
    pub publish_errors: u64,
    pub first_publish_error: Option<String>,
    pub latency: Latency,
    pub publish_latency: Latency,
    /// Deliveries per second of wall time, from the first scheduled publish to the last delivery.
    pub deliveries_per_s: f64,
    pub server_cpu: Option<Duration>,
    pub generator_cpu: Option<Duration>,
    pub wall: Duration,
}

impl Phase {
    pub fn cpu_us_per_delivery(&self) -> Option<f64> {
        let cpu = self.server_cpu?;
        (self.deliveries > 0).then(|| cpu.as_secs_f64() * 1e6 / self.deliveries as f64)
    }

    pub fn cpu_us_per_event(&self) -> Option<f64> {
        let cpu = self.server_cpu?;
        (self.events > 0).then(|| cpu.as_secs_f64() * 1e6 / self.events as f64)
    }

    /// Deliveries per second per fully busy server core.
    pub fn per_core(&self) -> Option<f64> {
        self.cpu_us_per_delivery().map(|us| 1e6 / us)
    }

    pub fn server_busy(&self) -> Option<f64> {
        Some(self.server_cpu?.as_secs_f64() / self.wall.as_secs_f64())
    }

    pub fn generator_busy(&self) -> Option<f64> {
        Some(self.generator_cpu?.as_secs_f64() / self.wall.as_secs_f64())
    }

    pub fn clean(&self) -> bool {
        self.missing == 0
            && self.duplicates == 0
            && self.out_of_order == 0
            && self.closed == 0
            && self.publish_errors == 0
    }
}

/// Runs one measured phase: `rate` events/s for `seconds`, then waits (at most `drain`) for every
/// live subscriber that should get them to have the last one.
async fn measure(
    server: &Server,
    publisher: &mut Publisher,
    tally: &Rc<Tally>,
    receivers: usize,
    rate: f64,
    seconds: f64,
    drain: Duration,
) -> anyhow::Result<Phase> {
    let n = ((rate * seconds).round() as u64).max(1);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let base = publisher.seq + 1;
    let closed_before = tally.closed.get();
    let errors_before = tally.errors.get();
    let server_cpu = CpuMark::start(server.pid);
    let generator_cpu = CpuMark::start(Some(std::process::id()));
    let start = Instant::now();
    let t0 = start + Duration::from_millis(20);
    tally.begin(base, n, t0, interval);
    let publish_latency = RefCell::new(histogram());
    let sent = open_loop(publisher, n, t0, interval, &publish_latency).await?;
    let deadline = Instant::now() + drain;
    while Instant::now() < deadline {
        let live = receivers as u64 - (tally.closed.get() - closed_before).min(receivers as u64);
        if tally.finished.get() >= live {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wall = start.elapsed();
    let server_cpu = server_cpu.elapsed();
    let generator_cpu = generator_cpu.elapsed();
    let expected = n * receivers as u64;
    let last = tally.last_at.get().unwrap_or(t0);
    let window = last.saturating_duration_since(t0).max(interval.mul_f64(n as f64)).as_secs_f64();
    let reasons = tally.close_reasons.borrow().iter().map(|(r, n)| format!("{n}×{r}")).collect::<Vec<_>>().join("; ");
    Ok(Phase {
        subscribers: receivers,
        rate,
        events: n,
        deliveries: tally.deliveries.get(),
        expected,
        missing: expected.saturating_sub(tally.unique.get()),
        duplicates: tally.duplicates.get(),
        out_of_order: tally.out_of_order.get(),
        closed: tally.closed.get() - closed_before,
        close_reasons: reasons,
        subscribe_errors: tally.errors.get() - errors_before,
        publish_errors: sent.errors,
        first_publish_error: sent.first_error,
        latency: Latency::of(&tally.latency.borrow()),
        publish_latency: Latency::of(&publish_latency.borrow()),
        deliveries_per_s: tally.deliveries.get() as f64 / window,
        server_cpu,
        generator_cpu,
        wall,
    })
}

fn product_input(tag: &str) -> String {
    json!({
        "query": "mutation($input: CreateProductInput!){ createProduct(input: $input){ id } }",
        "variables": {"input": {"sku": format!("bench-{}-{tag}", std::process::id()), "name": "bench", "price": "1.00", "quantity": 0}}
    })
    .to_string()
}

pub(crate) async fn create_products(server: &Server, token: &str, count: usize) -> anyhow::Result<Vec<String>> {
    let (mut w, mut r) = client::http(server.addr, token).await?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
    let bodies: Vec<String> = (0..count).map(|i| product_input(&format!("{stamp}-{i}"))).collect();
    let responses = client::graphql_batch(&mut w, &mut r, &bodies).await?;
    responses
        .iter()
        .map(|v| v["data"]["createProduct"]["id"].as_str().map(str::to_owned).context("createProduct returned no id"))
        .collect()
}

async fn create_orders(server: &Server, token: &str, count: usize) -> anyhow::Result<Vec<String>> {
    let (mut w, mut r) = client::http(server.addr, token).await?;
    let body = json!({
        "query": "mutation($input: CreateOrderInput!){ createOrder(input: $input){ id } }",
        "variables": {"input": {"customerId": "bench-customer", "total": "1.00"}}
    })
    .to_string();
    let bodies = vec![body; count];
    let responses = client::graphql_batch(&mut w, &mut r, &bodies).await?;
    responses
        .iter()
        .map(|v| v["data"]["createOrder"]["id"].as_str().map(str::to_owned).context("createOrder returned no id"))
        .collect()
}

pub(crate) fn set_inventory(product: String) -> Box<dyn Fn(u64) -> String> {
    Box::new(move |quantity| {
        format!(
            r#"{{"query":"mutation($productId: ID!, $quantity: Int!){{ setInventory(productId: $productId, quantity: $quantity){{ quantity }} }}","variables":{{"productId":"{product}","quantity":{quantity}}}}}"#
        )
    })
}

const INVENTORY: &str =
    "subscription($p: ID){ inventoryChanged(productId: $p){ productId newQuantity previousQuantity timestamp } }";
const INVENTORY_KEY: &str = "\"newQuantity\":";
const ORDER: &str = "subscription($o: ID!){ orderUpdated(orderId: $o){ orderId status trackingNumber } }";
const ORDER_KEY: &str = "\"trackingNumber\":";

/// Waits for the server to have handled what was just sent (no protocol answer to `subscribe`).
pub(crate) async fn settle(subscribers: usize) {
    let ms = 300 + (subscribers as u64 / 10).min(2000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Lines of `/metrics` worth keeping next to a result: lag, drops, shared-work counters.
pub async fn interesting_metrics(server: &Server) -> Vec<String> {
    let Ok(text) = http_get(server, "/metrics").await else { return Vec::new() };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            ["lagged", "dropped", "execut", "serializ", "shared", "delivered", "published"]
                .iter()
                .any(|k| l.contains(k))
        })
        .map(str::to_owned)
        .collect()
}

pub(crate) async fn http_get(server: &Server, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = client::tcp_connect(server.addr, false).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", server.addr).as_bytes())
        .await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await??;
    let text = String::from_utf8_lossy(&out).into_owned();
    Ok(text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

pub(crate) fn log(_env: &Env, message: impl AsRef<str>) {
    eprintln!("  {}", message.as_ref());
}

/// `fanout`: S subscribers on one product's `inventoryChanged`, `rate` setInventory/s.
pub async fn fanout(
    env: &Env,
    kind: Kind,
    subscribers: usize,
    rate: f64,
    seconds: f64,
) -> anyhow::Result<(Phase, Vec<String>)> {
    fanout_watched(env, kind, subscribers, rate, seconds, false).await
}

/// What the operator console subscribes to (assets/console/console.js), word for word in what it
/// costs the server: a snapshot every 500 ms with the 20 busiest rooms, and the event tail.
const CONSOLE_STATS: &str = "subscription Console($every: Int, $rooms: Int) { serverStats(every: $every, rooms: $rooms) { node roomCount presenceMembers nodes { node local ageMs connections subscriptions connectionsByChannel { name count } subscriptionsByField { name count } publishedPerSecond deliveredPerSecond laggedConsumers droppedDeliveries } rooms { roomId connections memberCount members { userId name connections isTyping typingField } } } }";
const CONSOLE_TAIL: &str = "subscription Tail { eventTail(perSecond: 20) { topic sequence kind cursor at skipped } }";

/// An open console: a graphql-ws connection with the console's two subscriptions, read (and
/// counted) until stopped.
struct Console {
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<(u64, u64)>>,
}

impl Console {
    async fn open(env: &Env, server: &Server) -> anyhow::Result<Self> {
        let mut ws = client::graphql_ws(server.addr, &server.ws_url, &env.token).await?;
        for (id, query, variables) in
            [("stats", CONSOLE_STATS, json!({"every": 500, "rooms": 20})), ("tail", CONSOLE_TAIL, json!({}))]
        {
            let message = json!({"id": id, "type": "subscribe", "payload": {"query": query, "variables": variables}});
            ws.send(Message::Text(message.to_string().into())).await?;
        }
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::task::spawn_local(async move {
            let (mut snapshots, mut tail) = (0u64, 0u64);
            loop {
                let message = tokio::select! {
                    () = stopped.cancelled() => break,
                    message = ws.next() => message,
                };
                match message {
                    Some(Ok(Message::Text(text)))
                        if text.contains(r#""id":"stats""#) && text.contains("serverStats") =>
                    {
                        snapshots += 1
                    }
                    Some(Ok(Message::Text(text))) if text.contains(r#""id":"tail""#) && text.contains("eventTail") => {
                        tail += 1
                    }
                    Some(Ok(Message::Text(text))) if text.contains(r#""type":"ping""#) => {
                        ws.send(Message::Text(r#"{"type":"pong"}"#.into())).await?
                    }
                    Some(Ok(Message::Text(text))) => bail!("console: unexpected {text}"),
                    Some(Ok(Message::Close(frame))) => bail!("console closed: {frame:?}"),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                    None => bail!("console connection ended"),
                }
            }
            let _ = ws.close(None).await;
            Ok((snapshots, tail))
        });
        Ok(Self { stop, task })
    }

    /// Closes it; returns the snapshots and tail events it received.
    async fn close(self) -> anyhow::Result<(u64, u64)> {
        self.stop.cancel();
        self.task.await?
    }
}

/// `fanout`, with the operator console open through the measured phase when `console` is set.
pub async fn fanout_watched(
    env: &Env,
    kind: Kind,
    subscribers: usize,
    rate: f64,
    seconds: f64,
    console: bool,
) -> anyhow::Result<(Phase, Vec<String>)> {
    let server = env.start(kind)?;
    log(
        env,
        format!(
            "fanout on {} ({}, log {}): {subscribers} subscribers, {rate}/s for {seconds} s",
            kind.label(),
            server.addr,
            server.log_path()
        ),
    );
    let product = create_products(&server, &env.token, 1).await?.remove(0);
    let tally = Tally::new();
    let mut subs = Subscribers::new();
    let opened = Instant::now();
    open(env, &server, &mut subs, &tally, INVENTORY_KEY, subscribers, |_| (INVENTORY, json!({"p": product}))).await;
    log(
        env,
        format!(
            "opened {} subscribers in {:.1} s ({} failed{})",
            subs.len(),
            opened.elapsed().as_secs_f64(),
            subs.failed,
            subs.first_failure.as_deref().map(|f| format!(": {f}")).unwrap_or_default()
        ),
    );
    settle(subscribers).await;
    let watching = if console { Some(Console::open(env, &server).await?) } else { None };
    let mut publisher = Publisher::new(&server, &env.token, set_inventory(product)).await?;
    publisher.warm_up(&tally, subs.len() as u64, Duration::from_secs(20)).await?;
    let drain = Duration::from_secs(10);
    let mut phase = measure(&server, &mut publisher, &tally, subs.len(), rate, seconds, drain).await?;
    phase.subscribe_errors += subs.failed as u64;
    let mut metrics = interesting_metrics(&server).await;
    if let Some(console) = watching {
        let (snapshots, tail) = console.close().await?;
        log(env, format!("console: {snapshots} snapshots, {tail} tail events"));
        if snapshots == 0 || tail == 0 {
            bail!("the console saw nothing ({snapshots} snapshots, {tail} tail events)");
        }
        metrics.push(format!("console open: {snapshots} snapshots and {tail} tail events received"));
    }
    subs.stop().await;
    Ok((phase, metrics))
}

/// Result of `idle`.
#[derive(Clone, Debug, Default)]
pub struct Idle {
    pub samples: Vec<(usize, u64)>,
    pub bytes_per_connection: Option<f64>,
    pub live: u64,
    pub opened: usize,
    pub failed: usize,
}

/// `idle`: N connections with one subscription each, RSS sampled at every `step`.
pub async fn idle(env: &Env, kind: Kind, max: usize, step: usize) -> anyhow::Result<Idle> {
    let max = max.min(env.max_connections());
    let server = env.start(kind)?;
    let pid = server.pid.context("idle needs the server's pid (--pid) to read its RSS")?;
    log(env, format!("idle on {} ({}): up to {max} connections, step {step}", kind.label(), server.addr));
    let product = create_products(&server, &env.token, 1).await?.remove(0);
    let tally = Tally::new();
    let mut subs = Subscribers::new();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut samples = vec![(0usize, sample_rss(pid).await)];
    let mut target = 0;
    while target < max {
        target = (target + step).min(max);
        let more = target - subs.len();
        open(env, &server, &mut subs, &tally, INVENTORY_KEY, more, |_| (INVENTORY, json!({"p": product}))).await;
        settle(more).await;
        let rss = sample_rss(pid).await;
        log(env, format!("{:>6} connections: RSS {:.1} MiB", subs.len(), rss as f64 / 1048576.0));
        samples.push((subs.len(), rss));
        if subs.failed > 0 {
            log(env, format!("{} connections failed: {}", subs.failed, subs.first_failure.as_deref().unwrap_or("")));
            break;
        }
    }
    // Prove the connections were live subscribers, not just open sockets. (The publisher connects
    // only now: a connection that sends no request within the server's header timeout is closed.)
    let mut publisher = Publisher::new(&server, &env.token, set_inventory(product.clone())).await?;
    publisher.warm_up(&tally, subs.len() as u64, Duration::from_secs(15)).await?;
    let points: Vec<(f64, f64)> = samples.iter().map(|&(n, rss)| (n as f64, rss as f64)).collect();
    let result = Idle {
        bytes_per_connection: sys::slope(&points),
        live: tally.warm.get(),
        opened: subs.len(),
        failed: subs.failed,
        samples,
    };
    subs.stop().await;
    Ok(result)
}

/// RSS settles a little after a burst of connections: take the median of three samples.
pub(crate) async fn sample_rss(pid: u32) -> u64 {
    let mut values = Vec::new();
    for _ in 0..3 {
        values.push(sys::rss_bytes(pid).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    values.sort_unstable();
    values[1]
}

/// Result of `filter`.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub alone: Phase,
    pub crowded: Phase,
    pub others: usize,
    /// Server CPU over an equally long stretch with the `others` connected and no events.
    pub idle_cpu: Option<Duration>,
}

impl Filter {
    pub fn ratio(&self) -> Option<f64> {
        Some(self.crowded.cpu_us_per_event()? / self.alone.cpu_us_per_event()?)
    }

    /// The ratio with the crowd's own idle cost (heartbeats, timers) taken out.
    pub fn net_ratio(&self) -> Option<f64> {
        let idle = self.idle_cpu?.as_secs_f64() * 1e6 / self.crowded.events as f64;
        Some((self.crowded.cpu_us_per_event()? - idle) / self.alone.cpu_us_per_event()?)
    }
}

/// `filter`: events on one order, with 1 subscriber, then with `others` more on other orders.
pub async fn filter(env: &Env, kind: Kind, others: usize, rate: f64, seconds: f64) -> anyhow::Result<Filter> {
    let others = others.min(env.max_connections().saturating_sub(10));
    let server = env.start(kind)?;
    log(
        env,
        format!(
            "filter on {} ({}): {others} subscribers on other orders, {rate}/s for {seconds} s",
            kind.label(),
            server.addr
        ),
    );
    let created = Instant::now();
    let orders = create_orders(&server, &env.token, others + 1).await?;
    log(env, format!("created {} orders in {:.1} s", orders.len(), created.elapsed().as_secs_f64()));
    let hot = orders[0].clone();
    let tally = Tally::new();
    let mut subs = Subscribers::new();
    open(env, &server, &mut subs, &tally, ORDER_KEY, 1, |_| (ORDER, json!({"o": hot}))).await;
    if subs.len() != 1 {
        bail!("could not subscribe to the hot order: {}", subs.first_failure.unwrap_or_default());
    }
    let hot_id = hot.clone();
    let make: Box<dyn Fn(u64) -> String> = Box::new(move |k| {
        json!({
            "query": "mutation($id: ID!, $t: String!){ updateOrder(id: $id, input: {trackingNumber: $t}){ id } }",
            "variables": {"id": hot_id, "t": format!("T{k}")}
        })
        .to_string()
    });
    let mut publisher = Publisher::new(&server, &env.token, make).await?;
    settle(1).await;
    publisher.warm_up(&tally, 1, Duration::from_secs(10)).await?;
    // An unmeasured run first: a fresh server's first hundreds of mutations are dearer (SQLite
    // page cache, allocator growth), which would flatter the crowded run measured later.
    measure(&server, &mut publisher, &tally, 1, rate, seconds.min(3.0), Duration::from_secs(5)).await?;
    let alone = measure(&server, &mut publisher, &tally, 1, rate, seconds, Duration::from_secs(5)).await?;
    open(env, &server, &mut subs, &tally, ORDER_KEY, others, |i| (ORDER, json!({"o": orders[i]}))).await;
    log(env, format!("opened {} more subscribers ({} failed)", subs.len() - 1, subs.failed));
    settle(others).await;
    let idle = CpuMark::start(server.pid);
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let idle_cpu = idle.elapsed();
    publisher.warm_up(&tally, 1, Duration::from_secs(10)).await?;
    let crowded = measure(&server, &mut publisher, &tally, 1, rate, seconds, Duration::from_secs(5)).await?;
    let result = Filter { alone, crowded, others: subs.len() - 1, idle_cpu };
    subs.stop().await;
    Ok(result)
}

/// Result of `connect`.
#[derive(Clone, Debug, Default)]
pub struct Connect {
    pub connections: u64,
    pub failed: u64,
    pub first_failure: Option<String>,
    pub per_s: f64,
    pub latency: Latency,
    pub server_cpu: Option<Duration>,
    pub generator_cpu: Option<Duration>,
    pub wall: Duration,
    pub live: u64,
}

impl Connect {
    pub fn cpu_us_per_connection(&self) -> Option<f64> {
        let cpu = self.server_cpu?;
        (self.connections > 0).then(|| cpu.as_secs_f64() * 1e6 / self.connections as f64)
    }
}

/// `connect`: as many new connections (upgrade, init, ack, subscribe) as the server takes, for
/// `seconds` or up to `max`, `env.concurrency` at a time; they stay open until the end.
pub async fn connect(env: &Env, kind: Kind, seconds: f64, max: usize) -> anyhow::Result<Connect> {
    let max = max.min(env.max_connections());
    let server = env.start(kind)?;
    log(
        env,
        format!(
            "connect on {} ({}): {} at a time, for {seconds} s or {max} connections",
            kind.label(),
            server.addr,
            env.concurrency
        ),
    );
    let product = create_products(&server, &env.token, 1).await?.remove(0);
    let tally = Tally::new();
    let cancel = CancellationToken::new();
    let tasks = RefCell::new(Vec::new());
    let latency = RefCell::new(histogram());
    let done = Cell::new(0u64);
    let failed = Cell::new(0u64);
    let first_failure = RefCell::new(None);
    let last_done = Cell::new(Instant::now());
    let server_cpu = CpuMark::start(server.pid);
    let generator_cpu = CpuMark::start(Some(std::process::id()));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let worker = || async {
        while Instant::now() < deadline && done.get() + failed.get() < max as u64 {
            let began = Instant::now();
            let attempt = async {
                let mut ws = client::graphql_ws(server.addr, &server.ws_url, &env.token).await?;
                client::subscribe(&mut ws, INVENTORY, json!({"p": product})).await?;
                anyhow::Ok(ws)
            };
            match attempt.await {
                Ok(ws) => {
                    let now = Instant::now();
                    latency.borrow_mut().saturating_record((now.duration_since(began).as_micros() as u64).max(1));
                    done.set(done.get() + 1);
                    last_done.set(now);
                    tasks.borrow_mut().push(tokio::task::spawn_local(watch(
                        ws,
                        tally.clone(),
                        INVENTORY_KEY,
                        cancel.clone(),
                    )));
                }
                Err(e) => {
                    failed.set(failed.get() + 1);
                    first_failure.borrow_mut().get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
    };
    futures::future::join_all((0..env.concurrency).map(|_| worker())).await;
    let wall = last_done.get().duration_since(start);
    let server_cpu = server_cpu.elapsed();
    let generator_cpu = generator_cpu.elapsed();
    settle(done.get() as usize).await;
    let mut publisher = Publisher::new(&server, &env.token, set_inventory(product.clone())).await?;
    publisher.warm_up(&tally, done.get(), Duration::from_secs(15)).await?;
    let result = Connect {
        connections: done.get(),
        failed: failed.get(),
        first_failure: first_failure.into_inner(),
        per_s: done.get() as f64 / wall.as_secs_f64().max(1e-9),
        latency: Latency::of(&latency.borrow()),
        server_cpu,
        generator_cpu,
        wall,
        live: tally.warm.get(),
    };
    cancel.cancel();
    for task in tasks.into_inner() {
        let _ = task.await;
    }
    Ok(result)
}

/// Result of `setinventory`.
#[derive(Clone, Debug, Default)]
pub struct Mutations {
    pub rate: f64,
    /// `Some(d)`: a saturated run with `d` requests in flight per connection (`rate` is then 0).
    pub depth: Option<usize>,
    pub connections: usize,
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub per_s: f64,
    pub latency: Latency,
    pub server_cpu: Option<Duration>,
    /// Bytes the server wrote to storage during the run (`/proc/<pid>/io` `write_bytes`).
    pub storage_written: Option<u64>,
    pub wall: Duration,
}

impl Mutations {
    /// Bytes written to storage per successful mutation.
    pub fn storage_per_mutation(&self) -> Option<f64> {
        self.storage_written.filter(|_| self.ok > 0).map(|b| b as f64 / self.ok as f64)
    }

    pub fn cpu_us_per_mutation(&self) -> Option<f64> {
        let cpu = self.server_cpu?;
        (self.ok > 0).then(|| cpu.as_secs_f64() * 1e6 / self.ok as f64)
    }

    /// Mutations per second per fully busy server core.
    pub fn per_core(&self) -> Option<f64> {
        self.cpu_us_per_mutation().map(|us| 1e6 / us)
    }
}

/// How a mutation run offers its load.
#[derive(Clone, Copy, Debug)]
pub enum Load {
    /// Open loop: `rate` requests/s in total, each written at its scheduled time.
    Open { rate: f64 },
    /// Saturated: `depth` requests always in flight on each connection (a new one is written as
    /// each response arrives), so the server runs at its own pace: its capacity.
    Saturated { depth: usize },
}

/// `setinventory`: open-loop `rate` setInventory/s over `connections` pipelined keep-alive
/// connections, one product each.
pub async fn setinventory(
    env: &Env,
    kind: Kind,
    rate: f64,
    seconds: f64,
    connections: usize,
) -> anyhow::Result<Mutations> {
    mutations(env, kind, Load::Open { rate }, seconds, connections, Duration::ZERO).await
}

/// `setInventory` over `connections` pipelined keep-alive connections, one product each, offered
/// as `load` for `seconds` after `warm_up` of saturated, unmeasured mutations (a fresh server's
/// first mutations are dearer: SQLite page cache, allocator growth).
pub async fn mutations(
    env: &Env,
    kind: Kind,
    load: Load,
    seconds: f64,
    connections: usize,
    warm_up: Duration,
) -> anyhow::Result<Mutations> {
    let server = env.start(kind)?;
    log(
        env,
        format!(
            "setinventory on {} ({}): {load:?} over {connections} connections for {seconds} s",
            kind.label(),
            server.addr
        ),
    );
    let products = create_products(&server, &env.token, connections).await?;
    let mut publishers = Vec::new();
    for product in products {
        let mut p = Publisher::new(&server, &env.token, set_inventory(product)).await?;
        p.publish_one().await?;
        publishers.push(p);
    }
    if !warm_up.is_zero() {
        let until = Instant::now() + warm_up;
        let scratch = RefCell::new(histogram());
        futures::future::try_join_all(publishers.iter_mut().map(|p| closed_loop(p, 16, until, &scratch))).await?;
    }
    let latency = RefCell::new(histogram());
    let written = server.pid.and_then(sys::storage_written);
    let server_cpu = CpuMark::start(server.pid);
    let start = Instant::now();
    let t0 = start + Duration::from_millis(20);
    let results = match load {
        Load::Open { rate } => {
            let per_connection = rate / connections as f64;
            let interval = Duration::from_secs_f64(1.0 / per_connection);
            let n = ((per_connection * seconds).round() as u64).max(1);
            let runs = publishers.iter_mut().enumerate().map(|(c, p)| {
                let offset = interval.mul_f64(c as f64 / connections as f64);
                open_loop(p, n, t0 + offset, interval, &latency)
            });
            futures::future::try_join_all(runs).await?
        }
        Load::Saturated { depth } => {
            let until = start + Duration::from_secs_f64(seconds);
            let runs = publishers.iter_mut().map(|p| closed_loop(p, depth, until, &latency));
            futures::future::try_join_all(runs).await?
        }
    };
    let server_cpu = server_cpu.elapsed();
    let storage_written = written.zip(server.pid.and_then(sys::storage_written)).map(|(a, b)| b.saturating_sub(a));
    let wall = start.elapsed();
    // Completions per second between the first and the last response: the offered rate while
    // the server keeps up, its own pace when it falls behind (or is saturated).
    let first = results.iter().filter_map(|r| r.first_response).min().unwrap_or(t0);
    let last = results.iter().filter_map(|r| r.last_response).max().unwrap_or(t0);
    let ok: u64 = results.iter().map(|r| r.ok).sum();
    let responses: u64 = ok + results.iter().map(|r| r.errors).sum::<u64>();
    Ok(Mutations {
        rate: match load {
            Load::Open { rate } => rate,
            Load::Saturated { .. } => 0.0,
        },
        depth: match load {
            Load::Open { .. } => None,
            Load::Saturated { depth } => Some(depth),
        },
        connections,
        sent: results.iter().map(|r| r.sent).sum(),
        ok,
        errors: results.iter().map(|r| r.errors).sum(),
        first_error: results.iter().find_map(|r| r.first_error.clone()),
        per_s: responses.saturating_sub(1) as f64 / last.saturating_duration_since(first).as_secs_f64().max(1e-9),
        latency: Latency::of(&latency.borrow()),
        server_cpu,
        storage_written,
        wall,
    })
}

/// Result of `churn`.
#[derive(Clone, Debug, Default)]
pub struct Churn {
    pub connections: usize,
    pub per_connection: usize,
    /// Subscriptions the server counted, and the groups running them (equal when none is shared).
    pub subscriptions: u64,
    pub groups: u64,
    pub failed: usize,
    pub rss_before: u64,
    pub rss_peak: u64,
    /// RSS once every subscription is gone, then `CHURN_SETTLE` later.
    pub rss_after: u64,
    pub rss_after_settled: u64,
}

impl Churn {
    pub fn bytes_per_subscription(&self) -> Option<f64> {
        (self.subscriptions > 0).then(|| (self.rss_peak as f64 - self.rss_before as f64) / self.subscriptions as f64)
    }

    /// The share of what the burst added that is still held once it has left.
    pub fn kept(&self) -> f64 {
        (self.rss_after_settled as f64 - self.rss_before as f64) / (self.rss_peak as f64 - self.rss_before as f64)
    }
}

const CHURN_SETTLE: Duration = Duration::from_secs(10);

/// `churn`: `connections` sockets each holding `per_connection` subscriptions that share nothing
/// (each has its own alias, so its own execution group), then all of them leave. Server RSS
/// before, at the peak, right after the last subscription is gone and 10 s later: does the
/// memory go back to the OS?
pub async fn churn(env: &Env, kind: Kind, connections: usize, per_connection: usize) -> anyhow::Result<Churn> {
    let connections = connections.min(env.max_connections());
    let server = env.start(kind)?;
    let pid = server.pid.context("churn needs the server's pid (--pid) to read its RSS")?;
    log(
        env,
        format!(
            "churn on {} ({}): {connections} connections × {per_connection} subscriptions",
            kind.label(),
            server.addr
        ),
    );
    let products = create_products(&server, &env.token, per_connection).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = sample_rss(pid).await;
    let products = Rc::new(products);
    let server_ref = &server;
    let results: Vec<anyhow::Result<Ws>> = futures::stream::iter(0..connections)
        .map(|c| {
            let (products, server) = (products.clone(), server_ref);
            async move {
                let mut ws = client::graphql_ws(server.addr, &server.ws_url, &env.token).await?;
                for (k, product) in products.iter().enumerate() {
                    let query = format!("subscription {{ c{c}s{k}: inventoryChanged(productId: \"{product}\") {{ productId newQuantity }} }}");
                    let message = json!({"id": k.to_string(), "type": "subscribe", "payload": {"query": query}});
                    ws.feed(Message::Text(message.to_string().into())).await?;
                }
                ws.flush().await?;
                Ok(ws)
            }
        })
        .buffer_unordered(env.concurrency)
        .collect()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        log(env, format!("{failed} connections failed: {e:#}"));
    }
    let sockets: Vec<Ws> = results.into_iter().filter_map(Result::ok).collect();
    let expected = (sockets.len() * per_connection) as u64;
    let subscriptions =
        wait_for_metric(&server, "switchboard_subscriptions", |n| n >= expected, Duration::from_secs(60)).await;
    let groups = metric(&server, "switchboard_shared_subscriptions").await.unwrap_or(0);
    settle(sockets.len()).await;
    let rss_peak = sample_rss(pid).await;
    log(
        env,
        format!(
            "{subscriptions} subscriptions in {groups} groups: RSS {:.1} → {:.1} MiB",
            mib(rss_before),
            mib(rss_peak)
        ),
    );
    drop(sockets);
    wait_for_metric(&server, "switchboard_subscriptions", |n| n == 0, Duration::from_secs(60)).await;
    let rss_after = sample_rss(pid).await;
    tokio::time::sleep(CHURN_SETTLE).await;
    let rss_after_settled = sample_rss(pid).await;
    log(
        env,
        format!("all gone: RSS {:.1} MiB, {:.1} MiB {CHURN_SETTLE:?} later", mib(rss_after), mib(rss_after_settled)),
    );
    Ok(Churn {
        connections,
        per_connection,
        subscriptions,
        groups,
        failed,
        rss_before,
        rss_peak,
        rss_after,
        rss_after_settled,
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

/// The sum of a metric's samples in `/metrics`.
async fn metric(server: &Server, name: &str) -> Option<u64> {
    let text = http_get(server, "/metrics").await.ok()?;
    let values = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    Some(values.sum::<f64>() as u64)
}

/// Polls a metric until `done` holds or `wait` has passed; returns its last value.
async fn wait_for_metric(server: &Server, name: &str, done: impl Fn(u64) -> bool, wait: Duration) -> u64 {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let value = metric(server, name).await.unwrap_or(0);
        if done(value) || tokio::time::Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
