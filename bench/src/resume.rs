//! The scenarios of resumable subscriptions (issue 9): what the event log costs a mutation
//! (`logcost`), how fast one subscriber replays what it missed (`replay`), a reconnect storm of
//! resuming subscribers (`storm`), and idle memory per connection before and after the log
//! (`logidle`, in `main`).
//!
//! Every resumed stream is checked event by event: each `next` carries the product's `sequence`
//! (its number on the product's topic) and `newQuantity` (the publisher sets 1, 2, 3, … per
//! product, so quantity and sequence advance together). The next event of a subscriber must be
//! exactly one past its last one: a jump is counted as missing events, a step back or a repeat as
//! a duplicate (or out of order), and after the replay the next *live* event must follow at once.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::client::{self, Ws, number_after};
use crate::scenarios::{self, Env, Latency, Load, Mutations, Publisher, histogram, log};
use crate::sys::{self, CpuMark};
use crate::target::{Kind, Server};

/// The subscription every resume scenario uses: the fields that identify an event's place.
pub const RESUMABLE: &str = "subscription($p: ID, $after: String){ inventoryChanged(productId: $p, after: $after){ productId newQuantity sequence cursor } }";

/// One `next` of [`RESUMABLE`], as far as the checks need it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    quantity: u64,
    sequence: u64,
    cursor: String,
}

impl Item {
    /// Reads a `next` frame's fields without a full JSON parse (the generator reads hundreds of
    /// thousands of these on one thread).
    fn parse(text: &str) -> Option<Self> {
        let quantity = number_after(text, "\"newQuantity\":")?;
        let sequence = number_after(text, "\"sequence\":")?;
        let at = text.find("\"cursor\":\"")? + "\"cursor\":\"".len();
        let end = text[at..].find('"')?;
        Some(Self { quantity, sequence, cursor: text[at..at + end].to_owned() })
    }
}

/// What a frame is, for a resuming reader.
enum Frame {
    Next(Item),
    /// A `next` without the expected fields (an error payload, another shape).
    Stray(String),
    Error(String),
    Complete,
    Ping,
    Other,
    Closed(String),
}

async fn read_frame(ws: &mut Ws) -> Frame {
    match ws.next().await {
        Some(Ok(Message::Text(text))) => {
            if text.contains("\"type\":\"next\"") {
                match Item::parse(&text) {
                    Some(item) => Frame::Next(item),
                    None => Frame::Stray(text.chars().take(300).collect()),
                }
            } else if text.contains("\"type\":\"ping\"") {
                Frame::Ping
            } else if text.contains("\"type\":\"error\"") {
                Frame::Error(text.chars().take(300).collect())
            } else if text.contains("\"type\":\"complete\"") {
                Frame::Complete
            } else {
                Frame::Other
            }
        }
        Some(Ok(Message::Close(frame))) => {
            Frame::Closed(frame.map_or("close without code".into(), |f| format!("{} {}", u16::from(f.code), f.reason)))
        }
        Some(Ok(_)) => Frame::Other,
        Some(Err(e)) => Frame::Closed(format!("error: {e}")),
        None => Frame::Closed("eof".into()),
    }
}

async fn pong(ws: &mut Ws) -> anyhow::Result<()> {
    ws.send(Message::Text(r#"{"type":"pong"}"#.into())).await?;
    Ok(())
}

/// The sum of the `/metrics` samples named `name` (every label set), if the server has any.
pub async fn metric(server: &Server, name: &str) -> Option<f64> {
    let text = scenarios::http_get(server, "/metrics").await.ok()?;
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else { continue };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        if let Some(value) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// Publishes `quantities[p]` for each product `p` in turn, pipelined on one connection, and
/// waits for every response (each must succeed).
async fn publish_rounds(
    server: &Server,
    token: &str,
    products: &[String],
    from: &[u64],
    count: u64,
) -> anyhow::Result<()> {
    let (mut w, mut r) = client::http(server.addr, token).await?;
    let mut bodies = Vec::with_capacity(products.len() * count as usize);
    for k in 1..=count {
        for (p, product) in products.iter().enumerate() {
            bodies.push(scenarios::set_inventory(product.clone())(from[p] + k));
        }
    }
    client::graphql_batch(&mut w, &mut r, &bodies).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// logcost

/// One `SQLITE_SYNCHRONOUS` setting of `logcost`: saturated runs of both servers (alternating,
/// `repeats` each), then both at one open-loop rate just under the lower capacity.
#[derive(Debug, Clone)]
pub struct LogCost {
    pub synchronous: String,
    pub saturated: Vec<(Kind, Mutations)>,
    pub near: Vec<(Kind, Mutations)>,
    pub near_rate: f64,
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 })
}

impl LogCost {
    fn of<'a>(runs: &'a [(Kind, Mutations)], kind: Kind) -> impl Iterator<Item = &'a Mutations> + 'a {
        runs.iter().filter(move |(k, _)| *k == kind).map(|(_, m)| m)
    }

    /// Median saturated throughput of `kind`.
    pub fn capacity(&self, kind: Kind) -> Option<f64> {
        median(Self::of(&self.saturated, kind).map(|m| m.per_s).collect())
    }

    /// Median mutations per second per busy core, saturated.
    pub fn saturated_per_core(&self, kind: Kind) -> Option<f64> {
        median(Self::of(&self.saturated, kind).filter_map(Mutations::per_core).collect())
    }

    /// Mutations per second per busy core at the common open-loop rate.
    pub fn near_per_core(&self, kind: Kind) -> Option<f64> {
        median(Self::of(&self.near, kind).filter_map(Mutations::per_core).collect())
    }
}

/// `logcost`: `setInventory` on the pre-log server and on this one, with `SQLITE_SYNCHRONOUS`
/// `full` (the default: an fsync per commit) and `normal` (which lets the log's own cost show),
/// saturated and at `near` × the lower of the two capacities. The runs alternate A B B A … so
/// that drift on the shared machine falls on both sides alike.
pub async fn logcost(
    env: &Env,
    seconds: f64,
    connections: usize,
    depth: usize,
    near: f64,
    repeats: usize,
) -> anyhow::Result<Vec<LogCost>> {
    let mut out = Vec::new();
    for synchronous in ["full", "normal"] {
        let mut env = env.clone();
        env.settings.extra_env.retain(|(k, _)| k != "SQLITE_SYNCHRONOUS");
        env.settings.extra_env.push(("SQLITE_SYNCHRONOUS".into(), synchronous.into()));
        let warm = Duration::from_secs(1);
        let mut saturated = Vec::new();
        for r in 0..repeats.max(1) {
            let order = if r % 2 == 0 { [Kind::PreLog, Kind::Switchboard] } else { [Kind::Switchboard, Kind::PreLog] };
            for kind in order {
                let m = scenarios::mutations(&env, kind, Load::Saturated { depth }, seconds, connections, warm).await?;
                log(
                    &env,
                    format!(
                        "  {} sync={synchronous} saturated: {:.0}/s, {} µs each",
                        kind.label(),
                        m.per_s,
                        m.cpu_us_per_mutation().map_or("-".into(), |u| format!("{u:.1}"))
                    ),
                );
                saturated.push((kind, m));
            }
        }
        let mut cost = LogCost { synchronous: synchronous.into(), saturated, near: Vec::new(), near_rate: 0.0 };
        let lower = cost.capacity(Kind::PreLog).zip(cost.capacity(Kind::Switchboard)).map(|(a, b)| a.min(b));
        let rate = (lower.context("no saturated throughput measured")? * near / 10.0).round() * 10.0;
        cost.near_rate = rate;
        for kind in [Kind::Switchboard, Kind::PreLog] {
            let m = scenarios::mutations(&env, kind, Load::Open { rate }, seconds, connections, warm).await?;
            cost.near.push((kind, m));
        }
        out.push(cost);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// replay

/// One subscriber's resume of `events` events.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    pub events: u64,
    pub received: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub stray: u64,
    pub error: Option<String>,
    /// From `subscribe` to the first and to the last replayed event.
    pub first: Duration,
    pub all: Duration,
    pub server_cpu: Option<Duration>,
    pub generator_cpu: Option<Duration>,
    /// Server RSS before, and the highest sampled during the replay.
    pub rss_before: u64,
    pub rss_peak: u64,
    /// Whether the next live event followed the replay at once (checked on the last run).
    pub live_next: Option<bool>,
    /// How fast the events were published beforehand (pipelined, one connection).
    pub fill_per_s: f64,
}

impl Replay {
    pub fn per_s(&self) -> f64 {
        self.received as f64 / self.all.as_secs_f64().max(1e-9)
    }

    pub fn cpu_us_per_event(&self) -> Option<f64> {
        let cpu = self.server_cpu?;
        (self.received > 0).then(|| cpu.as_secs_f64() * 1e6 / self.received as f64)
    }

    /// Replayed events per second per fully busy server core.
    pub fn per_core(&self) -> Option<f64> {
        self.cpu_us_per_event().map(|us| 1e6 / us)
    }

    pub fn clean(&self) -> bool {
        self.received == self.events
            && self.missing == 0
            && self.duplicates == 0
            && self.out_of_order == 0
            && self.error.is_none()
            && self.live_next != Some(false)
    }
}

/// `replay`: one product, one event to take a cursor from, then for each size N (ascending) the
/// log is filled to N events after that cursor and one subscriber resumes from it, `repeats`
/// times. The server gets `RESUME_MAX_EVENTS` above the largest N (unless `--server-env` sets it).
pub async fn replay(env: &Env, kind: Kind, sizes: &[u64], repeats: usize) -> anyhow::Result<Vec<Replay>> {
    let mut sizes = sizes.to_vec();
    sizes.sort_unstable();
    let largest = *sizes.last().context("no replay size")?;
    let mut env = env.clone();
    if !env.settings.extra_env.iter().any(|(k, _)| k == "RESUME_MAX_EVENTS") {
        env.settings.extra_env.push(("RESUME_MAX_EVENTS".into(), (largest + 1_000).to_string()));
    }
    let server = env.start(kind)?;
    let pid = server.pid;
    log(&env, format!("replay on {} ({}): sizes {sizes:?}, {repeats} runs each", kind.label(), server.addr));
    let product = scenarios::create_products(&server, &env.token, 1).await?.remove(0);
    // The cursor to resume from: the event just before the first one to be replayed.
    let mut ws = client::graphql_ws(server.addr, &server.ws_url, &env.token).await?;
    client::subscribe(&mut ws, RESUMABLE, json!({"p": product})).await?;
    scenarios::settle(1).await;
    let mut publisher = Publisher::new(&server, &env.token, scenarios::set_inventory(product.clone())).await?;
    publisher.publish_one().await?;
    let start = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match read_frame(&mut ws).await {
                Frame::Next(item) => return Ok(item),
                Frame::Ping => pong(&mut ws).await?,
                Frame::Closed(why) => bail!("closed before the first event: {why}"),
                Frame::Error(e) | Frame::Stray(e) => bail!("first event: {e}"),
                _ => {}
            }
        }
    })
    .await
    .context("no first event within 10 s")??;
    drop(ws);
    log(&env, format!("resuming from {} (sequence {}, quantity {})", start.cursor, start.sequence, start.quantity));
    let mut results = Vec::new();
    let mut published = 0u64; // events after the cursor
    for (i, &n) in sizes.iter().enumerate() {
        let filled = Instant::now();
        let more = n - published;
        let bodies: Vec<String> = (1..=more).map(|k| (publisher.make)(start.quantity + published + k)).collect();
        client::graphql_batch(&mut publisher.writer, &mut publisher.reader, &bodies).await?;
        publisher.seq = start.quantity + n;
        let fill_per_s = more as f64 / filled.elapsed().as_secs_f64().max(1e-9);
        published = n;
        log(&env, format!("published {more} more events ({fill_per_s:.0}/s pipelined): {n} after the cursor"));
        for r in 0..repeats.max(1) {
            let last = i + 1 == sizes.len() && r + 1 == repeats.max(1);
            let mut run =
                replay_once(&server, &env.token, pid, &product, &start, n, last.then_some(&mut publisher)).await?;
            run.fill_per_s = fill_per_s;
            log(
                &env,
                format!(
                    "  N={n} run {}: {:.0} events/s, {} µs/event of server CPU, first after {:.1} ms, all after {:.0} ms{}",
                    r + 1,
                    run.per_s(),
                    run.cpu_us_per_event().map_or("-".into(), |u| format!("{u:.2}")),
                    run.first.as_secs_f64() * 1e3,
                    run.all.as_secs_f64() * 1e3,
                    if run.clean() { String::new() } else { format!(" — NOT CLEAN: {run:?}") }
                ),
            );
            results.push(run);
        }
    }
    Ok(results)
}

/// One resume from `start` of `n` events; with `live`, one more event is then published and must
/// arrive next.
async fn replay_once(
    server: &Server,
    token: &str,
    pid: Option<u32>,
    product: &str,
    start: &Item,
    n: u64,
    live: Option<&mut Publisher>,
) -> anyhow::Result<Replay> {
    let mut ws = client::graphql_ws(server.addr, &server.ws_url, token).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut run = Replay { events: n, ..Replay::default() };
    run.rss_before = pid.and_then(sys::rss_bytes).unwrap_or(0);
    run.rss_peak = run.rss_before;
    let server_cpu = CpuMark::fine(pid);
    let generator_cpu = CpuMark::fine(Some(std::process::id()));
    let sent = Instant::now();
    client::subscribe(&mut ws, RESUMABLE, json!({"p": product, "after": start.cursor})).await?;
    let deadline = sent + Duration::from_secs(60) + Duration::from_micros(n * 100);
    let (mut quantity, mut sequence) = (start.quantity, start.sequence);
    while run.received < n {
        let frame = tokio::select! {
            frame = read_frame(&mut ws) => frame,
            () = tokio::time::sleep_until(deadline.into()) => break,
        };
        match frame {
            Frame::Next(item) => {
                if run.received == 0 {
                    run.first = sent.elapsed();
                }
                check(&mut run, &mut quantity, &mut sequence, &item);
                if run.received.is_multiple_of(2_000) {
                    run.rss_peak = run.rss_peak.max(pid.and_then(sys::rss_bytes).unwrap_or(0));
                }
            }
            Frame::Ping => pong(&mut ws).await?,
            Frame::Stray(text) => {
                run.stray += 1;
                run.error.get_or_insert(text);
            }
            Frame::Error(text) => {
                run.error = Some(text);
                break;
            }
            Frame::Complete => {
                run.error.get_or_insert("completed during the replay".into());
                break;
            }
            Frame::Closed(why) => {
                run.error.get_or_insert(format!("closed during the replay: {why}"));
                break;
            }
            Frame::Other => {}
        }
    }
    run.all = sent.elapsed();
    run.server_cpu = server_cpu.elapsed();
    run.generator_cpu = generator_cpu.elapsed();
    run.rss_peak = run.rss_peak.max(pid.and_then(sys::rss_bytes).unwrap_or(0));
    if let Some(publisher) = live
        && run.error.is_none()
    {
        publisher.seq = start.quantity + n;
        publisher.publish_one().await?;
        let next = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match read_frame(&mut ws).await {
                    Frame::Next(item) => return Some(item),
                    Frame::Ping => pong(&mut ws).await.ok()?,
                    Frame::Other => {}
                    _ => return None,
                }
            }
        })
        .await
        .ok()
        .flatten();
        run.live_next = Some(next.is_some_and(|item| item.sequence == sequence + 1 && item.quantity == quantity + 1));
    }
    Ok(run)
}

/// Checks one replayed event against the last one and counts it.
fn check(run: &mut Replay, quantity: &mut u64, sequence: &mut u64, item: &Item) {
    run.received += 1;
    if item.sequence == *sequence + 1 && item.quantity == *quantity + 1 {
        *sequence = item.sequence;
        *quantity = item.quantity;
    } else if item.sequence > *sequence + 1 {
        run.missing += item.sequence - *sequence - 1;
        *sequence = item.sequence;
        *quantity = item.quantity;
    } else if item.sequence == *sequence {
        run.duplicates += 1;
    } else {
        run.out_of_order += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// storm

/// How a storm round brings its subscribers back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The first round: every subscriber subscribes live (no `after`) and waits for an event to
    /// take its cursor from. Connections first, then every `subscribe` at once.
    Live,
    /// Every connection is opened and acknowledged first; then every `subscribe` (with `after`)
    /// is sent at once: the resume itself, alone.
    Together,
    /// Each subscriber subscribes as soon as its own connection is acknowledged, `concurrency`
    /// connections being opened at a time: a reconnect storm as clients make it.
    Storm,
    /// As `Storm`, but subscriber *i* starts connecting at *i* / `per_s` (open loop), as clients
    /// with randomised back-off spread their returns: the resume time at a given arrival rate.
    Paced { per_s: u32 },
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Live => "storm: live subscribe",
            Mode::Together => "storm: resume, conns first",
            Mode::Storm => "storm: reconnect+resume",
            Mode::Paced { .. } => "storm: paced reconnects",
        }
    }

    /// Whether subscribers subscribe as soon as they are connected (no barrier).
    fn without_barrier(self) -> bool {
        matches!(self, Mode::Storm | Mode::Paced { .. })
    }
}

/// A subscriber's place across rounds.
#[derive(Debug, Clone, Default)]
struct Place {
    product: usize,
    cursor: Option<String>,
    quantity: u64,
    sequence: u64,
}

/// The shared state of one round's subscriber tasks (single-threaded: `Cell`s).
struct Round {
    mode: Mode,
    /// For [`Mode::Paced`]: when subscriber 0 starts, and the gap between two starts.
    pace: Option<(Instant, Duration)>,
    go: CancellationToken,
    stop: CancellationToken,
    slots: Semaphore,
    /// Per product: the quantity that completes this round's catch-up.
    targets: RefCell<Vec<u64>>,
    /// Per subscriber: the last quantity received.
    quantity: Vec<Cell<u64>>,
    acked: Cell<u64>,
    last_ack: Cell<Option<Instant>>,
    failed: Cell<u64>,
    first_failure: RefCell<Option<String>>,
    connect: RefCell<Histogram<u64>>,
    first: RefCell<Histogram<u64>>,
    resume: RefCell<Histogram<u64>>,
    done: Cell<u64>,
    first_subscribe: Cell<Option<Instant>>,
    last_done: Cell<Option<Instant>>,
    events: Cell<u64>,
    missing: Cell<u64>,
    duplicates: Cell<u64>,
    out_of_order: Cell<u64>,
    stray: Cell<u64>,
    errors: Cell<u64>,
    first_error: RefCell<Option<String>>,
    completes: Cell<u64>,
    closed: Cell<u64>,
    close_reasons: RefCell<BTreeMap<String, u64>>,
}

fn bump(cell: &Cell<u64>) {
    cell.set(cell.get() + 1);
}

fn record(h: &RefCell<Histogram<u64>>, d: Duration) {
    h.borrow_mut().saturating_record((d.as_micros() as u64).max(1));
}

/// One storm round's figures.
#[derive(Debug, Clone)]
pub struct StormRound {
    pub mode: Mode,
    pub subscribers: usize,
    pub products: usize,
    /// Events each subscriber had to catch up on (0 for [`Mode::Live`]; at least that many with
    /// several cursors per product).
    pub missed: u64,
    /// Distinct cursors resumed from (the products', one each, unless more were asked for).
    pub cursors: usize,
    pub acked: u64,
    pub failed: u64,
    pub first_failure: Option<String>,
    /// Connect + upgrade + `connection_init` → `connection_ack`, per subscriber.
    pub connect: Latency,
    /// From the first connect to the last ack.
    pub connect_total: Duration,
    /// `subscribe` → first event, and → the last missed event (the resume), per subscriber.
    pub first: Latency,
    pub resume: Latency,
    /// From the first `subscribe` sent to the last subscriber caught up.
    pub total: Duration,
    pub done: u64,
    pub events: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub stray: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub completes: u64,
    pub closed: u64,
    pub close_reasons: String,
    /// Subscribers whose next event after the catch-up was the next live one, at once.
    pub live_next: u64,
    pub server_cpu: Option<Duration>,
    pub generator_cpu: Option<Duration>,
    pub wall: Duration,
    /// `switchboard_subscription_executions_total` during the round (shared executions).
    pub shared_executions: Option<f64>,
}

impl StormRound {
    pub fn cpu_us_per_subscriber(&self) -> Option<f64> {
        let cpu = self.server_cpu?;
        (self.done > 0).then(|| cpu.as_secs_f64() * 1e6 / self.done as f64)
    }

    pub fn clean(&self) -> bool {
        self.failed == 0
            && self.done == self.subscribers as u64
            && self.missing == 0
            && self.duplicates == 0
            && self.out_of_order == 0
            && self.errors == 0
            && self.closed == 0
            && self.live_next == self.subscribers as u64
    }
}

/// `storm`: `subscribers` graphql-ws subscribers spread over `products` products (so that those
/// on one product share executions while live). Round 0 subscribes them live and gives each its
/// cursor; then, twice, every subscriber disconnects, `missed` events per product are published
/// while they are away, and all come back with `after` = their own last cursor — first with every
/// connection opened before any `subscribe` is sent ([`Mode::Together`]: the resume alone), then
/// as a storm where each subscribes as soon as it is acknowledged ([`Mode::Storm`]), then with
/// their returns spread at `arrival` per second (default: half the resumes per second of server
/// CPU measured in the first resume round, [`Mode::Paced`]). After each round one live event per
/// product must reach every subscriber next.
///
/// With `cursors` above `products`, the subscribers of each product come back from
/// `cursors / products` different places (so `cursors` distinct cursors in all) rather than from
/// one: before each resume round that many more events per product are published, and subscriber
/// *i* skips ahead by *i / products* modulo that many of them, so that it misses between
/// `missed` and `missed + cursors / products - 1` events.
#[allow(clippy::too_many_arguments)]
pub async fn storm(
    env: &Env,
    kind: Kind,
    subscribers: usize,
    products: usize,
    missed: u64,
    concurrency: usize,
    arrival: Option<u32>,
    cursors: usize,
) -> anyhow::Result<Vec<StormRound>> {
    let subscribers = subscribers.min(env.max_connections());
    let products = products.clamp(1, subscribers.max(1));
    let server = env.start(kind)?;
    log(
        env,
        format!(
            "storm on {} ({}, log {}): {subscribers} subscribers over {products} products, {missed} missed events each, {concurrency} connects at a time",
            kind.label(),
            server.addr,
            server.log_path()
        ),
    );
    let ids = scenarios::create_products(&server, &env.token, products).await?;
    let mut quantities = vec![0u64; products];
    let mut places: Vec<Place> =
        (0..subscribers).map(|i| Place { product: i % products, ..Place::default() }).collect();
    let mut rounds: Vec<StormRound> = Vec::new();
    for mut mode in [Mode::Live, Mode::Together, Mode::Storm, Mode::Paced { per_s: 0 }] {
        if let Mode::Paced { per_s } = &mut mode {
            // Half of what the server resumed per second of its CPU when all came back at once.
            let capacity = rounds
                .iter()
                .find(|r| r.mode == Mode::Together)
                .and_then(StormRound::cpu_us_per_subscriber)
                .map_or(500.0, |us| 1e6 / us);
            *per_s = arrival.unwrap_or(((capacity * 0.5 / 10.0).round() * 10.0).max(10.0) as u32);
        }
        if mode != Mode::Live {
            away(&server).await;
            let per_product = if cursors > products { cursors.div_ceil(products) as u64 } else { 1 };
            if per_product > 1 {
                publish_rounds(&server, &env.token, &ids, &quantities, per_product - 1).await?;
                quantities.iter_mut().for_each(|q| *q += per_product - 1);
                spread(&mut places, products, per_product);
            }
            let published = Instant::now();
            publish_rounds(&server, &env.token, &ids, &quantities, missed).await?;
            quantities.iter_mut().for_each(|q| *q += missed);
            log(
                env,
                format!(
                    "everyone away; published {missed} events on each of {products} products in {:.0} ms",
                    published.elapsed().as_secs_f64() * 1e3
                ),
            );
        }
        let mut round =
            storm_round(env, &server, &ids, &mut places, &mut quantities, mode, missed, concurrency).await?;
        if mode != Mode::Live {
            round.cursors = cursors.max(products);
        }
        log(
            env,
            format!(
                "{}: {} of {subscribers} caught up, resume p50/p99/max {:.0}/{:.0}/{:.0} ms, total {:.0} ms; connect p99 {:.0} ms; {} µs server CPU each; live next {}{}",
                mode.label(),
                round.done,
                round.resume.p50,
                round.resume.p99,
                round.resume.max,
                round.total.as_secs_f64() * 1e3,
                round.connect.p99,
                round.cpu_us_per_subscriber().map_or("-".into(), |u| format!("{u:.0}")),
                round.live_next,
                if round.clean() { String::new() } else { " — NOT CLEAN".into() }
            ),
        );
        rounds.push(round);
    }
    Ok(rounds)
}

/// Moves subscriber *i*'s place `k` = *i / products* mod `per_product` events ahead on its
/// product, through the events published one per product and round since everyone's last one
/// (whose log positions are then `products` apart). Reads the cursor as the server writes it
/// (`<epoch>.<position>`): this harness knows that format; clients treat cursors as opaque.
fn spread(places: &mut [Place], products: usize, per_product: u64) {
    for (i, place) in places.iter_mut().enumerate() {
        let k = (i / products) as u64 % per_product;
        let Some((epoch, position)) = place.cursor.as_deref().and_then(|c| c.split_once('.')) else { continue };
        let Ok(position) = position.parse::<u64>() else { continue };
        if k > 0 {
            place.cursor = Some(format!("{epoch}.{}", position + k * products as u64));
            place.sequence += k;
            place.quantity += k;
        }
    }
}

/// Waits until the server has let go of every graphql-ws connection (at most 20 s).
async fn away(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match metric(server, "switchboard_ws_connections").await {
            Some(n) if n < 0.5 => return,
            None => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                return;
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    eprintln!("  warning: the server still counts open connections after 20 s");
}

#[allow(clippy::too_many_arguments)]
async fn storm_round(
    env: &Env,
    server: &Server,
    ids: &[String],
    places: &mut Vec<Place>,
    quantities: &mut [u64],
    mode: Mode,
    missed: u64,
    concurrency: usize,
) -> anyhow::Result<StormRound> {
    let subscribers = places.len();
    let round = Rc::new(Round {
        mode,
        pace: match mode {
            Mode::Paced { per_s } => Some((
                Instant::now() + Duration::from_millis(20),
                Duration::from_secs_f64(1.0 / f64::from(per_s.max(1))),
            )),
            _ => None,
        },
        go: CancellationToken::new(),
        stop: CancellationToken::new(),
        slots: Semaphore::new(concurrency.max(1)),
        targets: RefCell::new(quantities.to_vec()),
        quantity: places.iter().map(|p| Cell::new(p.quantity)).collect(),
        acked: Cell::new(0),
        last_ack: Cell::new(None),
        failed: Cell::new(0),
        first_failure: RefCell::new(None),
        connect: RefCell::new(histogram()),
        first: RefCell::new(histogram()),
        resume: RefCell::new(histogram()),
        done: Cell::new(0),
        first_subscribe: Cell::new(None),
        last_done: Cell::new(None),
        events: Cell::new(0),
        missing: Cell::new(0),
        duplicates: Cell::new(0),
        out_of_order: Cell::new(0),
        stray: Cell::new(0),
        errors: Cell::new(0),
        first_error: RefCell::new(None),
        completes: Cell::new(0),
        closed: Cell::new(0),
        close_reasons: RefCell::new(BTreeMap::new()),
    });
    let executions_before = metric(server, "switchboard_subscription_executions_total").await;
    let mut server_cpu = CpuMark::fine(server.pid);
    let mut generator_cpu = CpuMark::fine(Some(std::process::id()));
    let began = Instant::now();
    let tasks: Vec<_> = std::mem::take(places)
        .into_iter()
        .enumerate()
        .map(|(i, place)| {
            let product = ids[place.product].clone();
            tokio::task::spawn_local(subscriber(
                i,
                place,
                product,
                server.addr,
                server.ws_url.clone(),
                env.token.clone(),
                round.clone(),
            ))
        })
        .collect();
    let settled = |round: &Round| round.acked.get() + round.failed.get() >= subscribers as u64;
    let mut connect_total = Duration::ZERO;
    if !mode.without_barrier() {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !settled(&round) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        connect_total = began.elapsed();
        log(
            env,
            format!(
                "{} connections acknowledged in {:.0} ms ({} failed); now every subscribe at once",
                round.acked.get(),
                connect_total.as_secs_f64() * 1e3,
                round.failed.get()
            ),
        );
        // Let the server finish with the connects before the clock starts.
        tokio::time::sleep(Duration::from_millis(300)).await;
        server_cpu = CpuMark::fine(server.pid);
        generator_cpu = CpuMark::fine(Some(std::process::id()));
    }
    let started = Instant::now();
    round.go.cancel();
    let caught_up = |round: &Round| {
        let targets = round.targets.borrow();
        (0..subscribers).filter(|&i| round.quantity[i].get() >= targets[i % targets.len()]).count()
    };
    if mode == Mode::Live {
        // Nothing tells when a subscribe has taken effect: publish one event per product until
        // every subscriber has the latest one (each then takes its cursor from it).
        for _ in 0..30 {
            publish_rounds(server, &env.token, ids, quantities, 1).await?;
            quantities.iter_mut().for_each(|q| *q += 1);
            *round.targets.borrow_mut() = quantities.to_vec();
            let deadline = Instant::now() + Duration::from_secs(1);
            while caught_up(&round) < round.acked.get() as usize && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if caught_up(&round) >= round.acked.get() as usize {
                break;
            }
        }
    } else {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let live = round.acked.get().saturating_sub(round.closed.get());
            if (settled(&round) && round.done.get() >= live) || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if mode.without_barrier() {
            connect_total = round.last_ack.get().map_or(Duration::ZERO, |t| t.saturating_duration_since(began));
        }
    }
    let wall = started.elapsed();
    let server_cpu = server_cpu.elapsed();
    let generator_cpu = generator_cpu.elapsed();
    let executions = metric(server, "switchboard_subscription_executions_total").await;
    // The seam: one live event per product must reach every subscriber next.
    publish_rounds(server, &env.token, ids, quantities, 1).await?;
    quantities.iter_mut().for_each(|q| *q += 1);
    *round.targets.borrow_mut() = quantities.to_vec();
    let deadline = Instant::now() + Duration::from_secs(20);
    while caught_up(&round) < subscribers && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let live_next = caught_up(&round) as u64;
    round.stop.cancel();
    for task in tasks {
        places.push(task.await.context("a subscriber task panicked")?);
    }
    let first_subscribe = round.first_subscribe.get().unwrap_or(started);
    let last_done = round.last_done.get().unwrap_or(first_subscribe);
    let reasons = round.close_reasons.borrow().iter().map(|(r, n)| format!("{n}×{r}")).collect::<Vec<_>>().join("; ");
    let _ = missed;
    Ok(StormRound {
        mode,
        subscribers,
        products: ids.len(),
        missed: if mode == Mode::Live { 0 } else { missed },
        cursors: if mode == Mode::Live { 0 } else { ids.len() },
        acked: round.acked.get(),
        failed: round.failed.get(),
        first_failure: round.first_failure.borrow().clone(),
        connect: Latency::of(&round.connect.borrow()),
        connect_total,
        first: Latency::of(&round.first.borrow()),
        resume: Latency::of(&round.resume.borrow()),
        total: last_done.saturating_duration_since(first_subscribe),
        done: round.done.get(),
        events: round.events.get(),
        missing: round.missing.get(),
        duplicates: round.duplicates.get(),
        out_of_order: round.out_of_order.get(),
        stray: round.stray.get(),
        errors: round.errors.get(),
        first_error: round.first_error.borrow().clone(),
        completes: round.completes.get(),
        closed: round.closed.get(),
        close_reasons: reasons,
        live_next,
        server_cpu,
        generator_cpu,
        wall,
        // The counter appears with the first shared execution.
        shared_executions: executions.map(|a| a - executions_before.unwrap_or(0.0)),
    })
}

/// One subscriber of a storm round: connect, (wait for the go,) subscribe from its cursor, check
/// every event, note when it has caught up, then keep reading until the round stops.
async fn subscriber(
    index: usize,
    mut place: Place,
    product: String,
    addr: std::net::SocketAddr,
    url: String,
    token: String,
    round: Rc<Round>,
) -> Place {
    if let Some((start, gap)) = round.pace {
        tokio::time::sleep_until((start + gap.mul_f64(index as f64)).into()).await;
    }
    let connected = async {
        let _slot = round.slots.acquire().await.expect("the semaphore is never closed");
        let began = Instant::now();
        let ws = client::graphql_ws(addr, &url, &token).await?;
        record(&round.connect, began.elapsed());
        anyhow::Ok(ws)
    };
    let mut ws = match connected.await {
        Ok(ws) => ws,
        Err(e) => {
            bump(&round.failed);
            round.first_failure.borrow_mut().get_or_insert_with(|| format!("{e:#}"));
            return place;
        }
    };
    bump(&round.acked);
    round.last_ack.set(Some(Instant::now()));
    if !round.mode.without_barrier() {
        round.go.cancelled().await;
    }
    let variables: Value = match &place.cursor {
        Some(cursor) => json!({"p": product, "after": cursor}),
        None => json!({"p": product}),
    };
    let sent = Instant::now();
    if round.first_subscribe.get().is_none_or(|t| sent < t) {
        round.first_subscribe.set(Some(sent));
    }
    if let Err(e) = client::subscribe(&mut ws, RESUMABLE, variables).await {
        round.closed.set(round.closed.get() + 1);
        *round.close_reasons.borrow_mut().entry(format!("subscribe: {e}")).or_default() += 1;
        return place;
    }
    let mut received = 0u64;
    let mut caught_up = false;
    loop {
        let frame = tokio::select! {
            biased;
            () = round.stop.cancelled() => break,
            frame = read_frame(&mut ws) => frame,
        };
        match frame {
            Frame::Next(item) => {
                let now = Instant::now();
                received += 1;
                bump(&round.events);
                if received == 1 {
                    record(&round.first, now - sent);
                }
                if place.cursor.is_none()
                    || (item.sequence == place.sequence + 1 && item.quantity == place.quantity + 1)
                {
                    // in order (or the first event a live subscriber sees)
                } else if item.sequence > place.sequence + 1 {
                    round.missing.set(round.missing.get() + item.sequence - place.sequence - 1);
                } else {
                    if item.sequence == place.sequence {
                        bump(&round.duplicates);
                    } else {
                        bump(&round.out_of_order);
                    }
                    continue;
                }
                place.sequence = item.sequence;
                place.quantity = item.quantity;
                place.cursor = Some(item.cursor);
                round.quantity[index].set(item.quantity);
                let target = round.targets.borrow()[place.product];
                // A live subscriber counts as done at its first event (it has a cursor then).
                if !caught_up && (item.quantity >= target || round.mode == Mode::Live) {
                    caught_up = true;
                    if round.mode != Mode::Live {
                        record(&round.resume, now - sent);
                    }
                    bump(&round.done);
                    if round.last_done.get().is_none_or(|t| now > t) {
                        round.last_done.set(Some(now));
                    }
                }
            }
            Frame::Ping => {
                if pong(&mut ws).await.is_err() {
                    break;
                }
            }
            Frame::Stray(text) => {
                bump(&round.stray);
                round.first_error.borrow_mut().get_or_insert(text);
            }
            Frame::Error(text) => {
                bump(&round.errors);
                round.first_error.borrow_mut().get_or_insert(text);
            }
            Frame::Complete => bump(&round.completes),
            Frame::Closed(why) => {
                bump(&round.closed);
                *round.close_reasons.borrow_mut().entry(why).or_default() += 1;
                return place;
            }
            Frame::Other => {}
        }
    }
    // Dropping the socket is the disconnect (as a network drop would be: no close handshake).
    drop(ws);
    place
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_item() {
        let next = r#"{"id":"1","type":"next","payload":{"data":{"inventoryChanged":{"productId":"3","newQuantity":42,"sequence":41,"cursor":"0123456789abcdef.977"}}}}"#;
        let item = Item::parse(next).expect("an item");
        assert_eq!(item, Item { quantity: 42, sequence: 41, cursor: "0123456789abcdef.977".into() });
        assert_eq!(Item::parse(r#"{"id":"1","type":"next","payload":{"data":null}}"#), None);
    }

    #[test]
    fn counts_gaps_and_repeats() {
        let mut run = Replay::default();
        let (mut q, mut s) = (1, 1);
        for (quantity, sequence) in [(2, 2), (3, 3), (3, 3), (6, 6), (5, 5), (7, 7)] {
            check(&mut run, &mut q, &mut s, &Item { quantity, sequence, cursor: String::new() });
        }
        assert_eq!((run.received, run.missing, run.duplicates, run.out_of_order), (6, 2, 1, 1));
        assert_eq!((q, s), (7, 7));
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}
