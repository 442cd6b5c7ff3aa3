//! `cluster` (issue 10): several Switchboard nodes on one store and one Redis, measured side by
//! side in one run.
//!
//! 1. **Fan-out with and without Redis**: the usual `fanout` against one node on the cluster's
//!    store, first without `REDIS_URL`, then with it (the node then publishes every commit to
//!    Redis and hears it back): deliveries per server core, compared.
//! 2. The cluster: `--nodes` nodes (`NODE_ID` node-1 …) on the same store and Redis. An **idle**
//!    window first: each part's CPU and Redis's commands per second with nothing happening.
//! 3. **Most mutations per second**: `--connections` publishers on *every* node, each on its own
//!    product, `--depth` requests in flight each, for `--seconds`; `-s` subscribers per node
//!    watch every product. Every subscriber must see every product's values 1, 2, 3, … once and
//!    in order (checked value by value); the CPU of every part (nodes, PostgreSQL's processes,
//!    Redis) is read from /proc to say what bounds the figure.
//! 4. **The cross-node hop**: publishers on node-1 only, open loop at `--rate` (capped at half
//!    of what phase 3 sustained, so that queueing behind the store does not swamp the hop),
//!    `-s` subscribers on node-1 and `-s` on node-2, none on the others. For each event, the
//!    hop is the first arrival on node-2 minus the first arrival on node-1: what crossing nodes
//!    adds to a local delivery. Meanwhile node-3 has no client at all: its CPU above its idle
//!    CPU, per event, is what an event nobody on a node watches costs that node. Redis's
//!    commands over the phase, less its idle rate, per mutation, are the round trips per publish.
//! 5. **An unwatched event at 1k, 5k and 20k/s**, rates no shared store here reaches: one real
//!    event message, captured from the channel, is published again and again. Every node decodes
//!    each copy and drops it (its position is delivered already): the cost of an event nobody on
//!    a node watches, less the broker's map lookup, as it falls with the rate (wake-ups batch).

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::client::{self, Ws, number_after};
use crate::scenarios::{self, Env, Latency, Phase, Publisher};
use crate::sys;
use crate::target::{Kind, Server};

/// Every product's changes, with the product named in each event.
const ALL_INVENTORY: &str = "subscription{ inventoryChanged{ productId newQuantity } }";

pub struct Opts {
    pub redis_url: String,
    /// The shared store; `None`: one SQLite file in /tmp that every node opens.
    pub database_url: Option<String>,
    /// PostgreSQL's postmaster, whose processes' CPU is counted as the store's.
    pub pg_pid: Option<u32>,
    pub nodes: usize,
    pub rate: f64,
    pub seconds: f64,
    pub subscribers: usize,
    pub connections: usize,
    pub depth: usize,
    pub fanout_subscribers: usize,
    pub fanout_rate: f64,
    /// Rates at which one event message is republished (phase 5).
    pub replay_rates: Vec<f64>,
    /// Pin the nodes to the server core (the fan-out phases always are, as elsewhere).
    pub pin_nodes: bool,
}

/// CPU of each part over a phase, in seconds.
#[derive(Clone, Debug, Default)]
pub struct Cpu {
    pub nodes: Vec<f64>,
    /// Context switches of each node's threads (each one a thread put to sleep or woken).
    pub switches: Vec<u64>,
    pub store: Option<f64>,
    pub redis: Option<f64>,
}

/// Redis's commands over a phase (INFO commandstats, less our own INFO calls).
#[derive(Clone, Copy, Debug, Default)]
pub struct Commands {
    pub all: u64,
    pub publish: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Checked {
    pub subscribers: usize,
    pub deliveries: u64,
    pub missing: u64,
    /// Values seen again or after a later one.
    pub duplicate_or_late: u64,
    pub closed: u64,
}

impl Checked {
    pub fn clean(&self) -> bool {
        self.missing == 0 && self.duplicate_or_late == 0 && self.closed == 0
    }
}

#[derive(Clone, Debug, Default)]
pub struct Saturated {
    pub publishers: usize,
    pub depth: usize,
    pub mutations: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub per_s: f64,
    pub publish_latency: Latency,
    pub wall: f64,
    pub cpu: Cpu,
    pub commands: Commands,
    pub checked: Checked,
    /// node-2's first arrival less node-1's for node-1's events, under this load.
    pub hop: Latency,
    pub remote_first: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Hop {
    pub asked_rate: f64,
    /// Mutations/s node-1 sustained alone, just before.
    pub capacity: f64,
    pub rate: f64,
    pub mutations: u64,
    pub errors: u64,
    pub publish_latency: Latency,
    /// From the scheduled publish to the first subscriber of node-1 / node-2 to get it.
    pub local: Latency,
    pub remote: Latency,
    /// node-2's first arrival minus node-1's, per event (negative ones count as 0).
    pub hop: Latency,
    /// Events node-2 got before node-1.
    pub remote_first: u64,
    pub wall: f64,
    pub cpu: Cpu,
    pub commands: Commands,
    pub checked: Checked,
}

pub struct Report {
    pub store: String,
    pub fanout_without: Phase,
    pub fanout_with: Phase,
    pub idle_seconds: f64,
    pub idle: Cpu,
    pub idle_commands: Commands,
    pub saturated: Saturated,
    pub hop: Hop,
    pub unwatched: Vec<Replayed>,
}

/// One event message published again and again to the events channel.
#[derive(Clone, Debug, Default)]
pub struct Replayed {
    pub rate: f64,
    pub sent: u64,
    /// Until Redis had answered every PUBLISH.
    pub sending: f64,
    /// Also the nodes' time to read what was left on their sockets: CPU is measured over this.
    pub wall: f64,
    pub cpu: Cpu,
}

impl Report {
    /// Redis commands per second with nothing happening (probes, heartbeats).
    pub fn background_commands_per_s(&self) -> f64 {
        self.idle_commands.all as f64 / self.idle_seconds
    }

    /// Redis commands per mutation in the hop phase, less the idle rate.
    pub fn commands_per_mutation(&self) -> f64 {
        let background = self.background_commands_per_s() * self.hop.wall;
        (self.hop.commands.all as f64 - background).max(0.0) / self.hop.mutations.max(1) as f64
    }

    pub fn publishes_per_mutation(&self) -> f64 {
        let background = self.idle_commands.publish as f64 / self.idle_seconds * self.hop.wall;
        (self.hop.commands.publish as f64 - background).max(0.0) / self.hop.mutations.max(1) as f64
    }

    /// CPU µs per replayed message of node `i`, above its idle CPU.
    pub fn replayed_us_per_event(&self, r: &Replayed, i: usize) -> Option<f64> {
        let busy = *r.cpu.nodes.get(i)?;
        let idle = self.idle.nodes.get(i)? / self.idle_seconds * r.wall;
        Some((busy - idle).max(0.0) * 1e6 / r.sent.max(1) as f64)
    }

    pub fn replayed_switches_per_event(&self, r: &Replayed, i: usize) -> Option<f64> {
        let busy = *r.cpu.switches.get(i)? as f64;
        let idle = *self.idle.switches.get(i)? as f64 / self.idle_seconds * r.wall;
        Some((busy - idle).max(0.0) / r.sent.max(1) as f64)
    }

    /// Context switches per event of node `i` in the hop phase, above its idle rate.
    pub fn node_switches_per_event(&self, i: usize) -> Option<f64> {
        let busy = *self.hop.cpu.switches.get(i)? as f64;
        let idle = *self.idle.switches.get(i)? as f64 / self.idle_seconds * self.hop.wall;
        Some((busy - idle).max(0.0) / self.hop.mutations.max(1) as f64)
    }

    /// CPU µs per event of node `i` in the hop phase, above its idle CPU.
    pub fn node_us_per_event(&self, i: usize) -> Option<f64> {
        let busy = *self.hop.cpu.nodes.get(i)?;
        let idle = self.idle.nodes.get(i)? / self.idle_seconds * self.hop.wall;
        Some((busy - idle).max(0.0) * 1e6 / self.hop.mutations.max(1) as f64)
    }
}

/// Runs the five phases; every spawned process is stopped when this returns (or fails).
pub async fn run(env: &Env, opts: &Opts) -> anyhow::Result<Report> {
    let redis = redis_addr(&opts.redis_url)?;
    let redis_pid = redis_command(redis, &["INFO", "server"])
        .await
        .context("Redis does not answer at --redis-url")
        .map(|info| info_field(&info, "process_id"))?;
    let shared_sqlite = std::path::PathBuf::from(format!("/tmp/switchboard-bench-cluster-{}.db", std::process::id()));
    let (store_url, store) = match &opts.database_url {
        Some(url) if url.starts_with("postgres") => (url.clone(), "PostgreSQL".to_owned()),
        Some(url) => (url.clone(), format!("shared {url}")),
        None => (format!("sqlite://{}", shared_sqlite.display()), "one SQLite file shared by every node".to_owned()),
    };
    let cleanup = RemoveOnDrop(opts.database_url.is_none().then(|| shared_sqlite.clone()));
    cleanup.remove();

    // 1. Fan-out on one node of this store, without Redis and then with it.
    let mut alone = env.clone();
    alone.settings.database_url = Some(store_url.clone());
    eprintln!("  cluster 1/4: fan-out on one node without Redis, then with it ({store})");
    let (fanout_without, _) =
        scenarios::fanout(&alone, Kind::Switchboard, opts.fanout_subscribers, opts.fanout_rate, opts.seconds).await?;
    let mut with = alone.clone();
    with.settings.extra_env.push(("REDIS_URL".into(), opts.redis_url.clone()));
    with.settings.extra_env.push(("NODE_ID".into(), "fanout".into()));
    let (fanout_with, _) =
        scenarios::fanout(&with, Kind::Switchboard, opts.fanout_subscribers, opts.fanout_rate, opts.seconds).await?;

    // 2. The cluster, and its idle cost.
    let mut nodes = Vec::new();
    for i in 1..=opts.nodes {
        let mut settings = with.settings.clone();
        settings.extra_env.retain(|(k, _)| k != "NODE_ID");
        settings.extra_env.push(("NODE_ID".into(), format!("node-{i}")));
        if !opts.pin_nodes {
            settings.server_core = None;
        }
        nodes.push(Server::spawn(Kind::Switchboard, &settings)?);
    }
    for (i, node) in nodes.iter().enumerate() {
        wait_ready(node).await.with_context(|| format!("node-{} ({})", i + 1, node.log_path()))?;
    }
    eprintln!(
        "  cluster 2/4: {} nodes up ({}); idle for {} s",
        nodes.len(),
        nodes.iter().map(|n| n.addr.to_string()).collect::<Vec<_>>().join(", "),
        opts.seconds
    );
    let parts = Parts { nodes: nodes.iter().map(|n| n.pid).collect(), store: opts.pg_pid, redis: redis_pid };
    tokio::time::sleep(Duration::from_secs(2)).await; // past the start-up work
    let mark = parts.mark();
    let before = commands(redis).await?;
    let idle_start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(opts.seconds)).await;
    let idle_commands = commands(redis).await?.since(before);
    let idle = parts.since(&mark);
    let idle_seconds = idle_start.elapsed().as_secs_f64();

    // 3. Every node publishes as fast as it can.
    eprintln!(
        "  cluster 3/4: {} publishers on each node, {} in flight each, {} subscribers per node, {} s",
        opts.connections, opts.depth, opts.subscribers, opts.seconds
    );
    let saturated = saturated(env, opts, &nodes, &parts, redis).await?;
    let capacity = saturated.per_s;

    // 4. The hop, at the asked rate or half of what node-1 sustains alone.
    eprintln!(
        "  cluster 4/4: the hop: publishers on node-1 (3 nodes together sustained {capacity:.0}/s), {} subscribers on node-1 and node-2",
        opts.subscribers
    );
    let mut hop = hop(env, opts, &nodes, &parts, redis, opts.rate).await?;
    hop.asked_rate = opts.rate;

    // 5. An unwatched event at rates the store cannot reach: one real event message, published
    //    again and again straight to the channel. Every node decodes each copy and drops it as
    //    already delivered (its position is behind), which is all an unwatched event costs but
    //    for the broker's map lookup.
    let message = capture_event(env, &nodes[0], redis).await?;
    let mut unwatched = Vec::new();
    for &rate in &opts.replay_rates {
        eprintln!("  cluster 5/5: one event message republished at {rate}/s for {} s", opts.seconds / 2.0);
        unwatched.push(replay(redis, &message, rate, opts.seconds / 2.0, &parts).await?);
    }
    drop(nodes);
    drop(cleanup);
    Ok(Report { store, fanout_without, fanout_with, idle_seconds, idle, idle_commands, saturated, hop, unwatched })
}

/// Removes the shared SQLite file (and its WAL) when the run ends, however it ends.
struct RemoveOnDrop(Option<std::path::PathBuf>);

impl RemoveOnDrop {
    fn remove(&self) {
        if let Some(path) = &self.0 {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        self.remove();
    }
}

async fn wait_ready(node: &Server) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(body) = scenarios::http_get(node, "/ready").await {
            if body.contains("\"redis\":\"up\"") {
                return Ok(());
            }
            last = body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("not ready with Redis within 30 s: {last}")
}

// --- phases -------------------------------------------------------------------------------------

async fn saturated(
    env: &Env,
    opts: &Opts,
    nodes: &[Server],
    parts: &Parts,
    redis: SocketAddr,
) -> anyhow::Result<Saturated> {
    let products = scenarios::create_products(&nodes[0], &env.token, opts.connections * nodes.len()).await?;
    let watch = Watch::new(products.clone(), nodes.len());
    let mut subs = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        subs.extend(open_watchers(env, node, i, opts.subscribers, &watch).await?);
    }
    let mut publishers = Vec::new();
    for (k, product) in products.iter().enumerate() {
        let node = &nodes[k / opts.connections];
        let mut p = Publisher::new(node, &env.token, scenarios::set_inventory(product.clone())).await?;
        p.publish_one().await?;
        publishers.push(p);
    }
    watch.warm_up(&mut publishers, subs.len()).await?;
    watch.begin(publishers.iter().map(|p| p.seq).collect(), None);
    let latency = RefCell::new(scenarios::histogram());
    let mark = parts.mark();
    let before = commands(redis).await?;
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(opts.seconds);
    let runs = publishers.iter_mut().map(|p| scenarios::closed_loop(p, opts.depth, until, &latency));
    let results = futures::future::try_join_all(runs).await?;
    let wall = start.elapsed().as_secs_f64();
    let cpu = parts.since(&mark);
    let commands = commands(redis).await?.since(before);
    let checked = watch.finish(publishers.iter().map(|p| p.seq).collect(), &subs).await;
    stop(subs).await;
    // Products 0..connections are node-1's.
    let (hop, remote_first) = watch.hops(0..opts.connections);
    let first = results.iter().filter_map(|r| r.first_response).min().unwrap_or(start);
    let last = results.iter().filter_map(|r| r.last_response).max().unwrap_or(start);
    let ok: u64 = results.iter().map(|r| r.ok).sum();
    let errors: u64 = results.iter().map(|r| r.errors).sum();
    Ok(Saturated {
        publishers: publishers.len(),
        depth: opts.depth,
        mutations: ok,
        errors,
        first_error: results.iter().find_map(|r| r.first_error.clone()),
        per_s: (ok + errors).saturating_sub(1) as f64 / last.saturating_duration_since(first).as_secs_f64().max(1e-9),
        publish_latency: Latency::of(&latency.borrow()),
        wall,
        cpu,
        commands,
        checked,
        hop,
        remote_first,
    })
}

async fn hop(
    env: &Env,
    opts: &Opts,
    nodes: &[Server],
    parts: &Parts,
    redis: SocketAddr,
    rate: f64,
) -> anyhow::Result<Hop> {
    let products = scenarios::create_products(&nodes[0], &env.token, opts.connections).await?;
    let watch = Watch::new(products.clone(), nodes.len());
    let mut subs = Vec::new();
    for (i, node) in nodes.iter().enumerate().take(2) {
        subs.extend(open_watchers(env, node, i, opts.subscribers, &watch).await?);
    }
    let mut publishers = Vec::new();
    for product in &products {
        let mut p = Publisher::new(&nodes[0], &env.token, scenarios::set_inventory(product.clone())).await?;
        p.publish_one().await?;
        publishers.push(p);
    }
    watch.warm_up(&mut publishers, subs.len()).await?;
    // What node-1 alone sustains, over 2 s: the hop is measured at half of it at most, so that
    // mutations do not queue behind the store.
    let probe = RefCell::new(scenarios::histogram());
    let started = Instant::now();
    let until = started + Duration::from_secs(2);
    let runs = publishers.iter_mut().map(|p| scenarios::closed_loop(p, opts.depth, until, &probe));
    let probed: u64 = futures::future::try_join_all(runs).await?.iter().map(|r| r.ok).sum();
    let capacity = probed as f64 / started.elapsed().as_secs_f64();
    let rate = rate.min((capacity / 2.0).floor()).max(1.0);
    eprintln!("  node-1 alone sustains {capacity:.0} mutations/s: the hop is measured at {rate}/s");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per_publisher = rate / publishers.len() as f64;
    let interval = Duration::from_secs_f64(1.0 / per_publisher);
    let n = ((per_publisher * opts.seconds).round() as u64).max(1);
    let bases: Vec<u64> = publishers.iter().map(|p| p.seq).collect();
    let start = Instant::now();
    let t0 = start + Duration::from_millis(20);
    let schedule = Schedule { t0, interval, publishers: publishers.len() };
    watch.begin(bases, Some(schedule));
    let latency = RefCell::new(scenarios::histogram());
    let mark = parts.mark();
    let before = commands(redis).await?;
    // Publisher c's value k is due at schedule.at(c, k): the publishers take turns evenly.
    let runs = publishers
        .iter_mut()
        .enumerate()
        .map(|(c, p)| scenarios::open_loop(p, n, schedule.at(c, 0), interval, &latency));
    let results = futures::future::try_join_all(runs).await?;
    let checked = watch.finish(publishers.iter().map(|p| p.seq).collect(), &subs).await;
    let wall = start.elapsed().as_secs_f64();
    let cpu = parts.since(&mark);
    let commands = commands(redis).await?.since(before);
    stop(subs).await;
    let (local, remote) = watch.since_scheduled();
    let (hop, remote_first) = watch.hops(0..products.len());
    Ok(Hop {
        asked_rate: rate,
        capacity,
        rate,
        mutations: results.iter().map(|r| r.ok).sum(),
        errors: results.iter().map(|r| r.errors).sum(),
        publish_latency: Latency::of(&latency.borrow()),
        local,
        remote,
        hop,
        remote_first,
        wall,
        cpu,
        commands,
        checked,
    })
}

// --- subscribers --------------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Schedule {
    t0: Instant,
    interval: Duration,
    publishers: usize,
}

impl Schedule {
    fn at(&self, publisher: usize, k: u64) -> Instant {
        self.t0 + self.interval.mul_f64(k as f64 + publisher as f64 / self.publishers as f64)
    }
}

/// What the subscribers of a phase share: the products, where the phase starts, and the first
/// arrival of each value on each node (for the hop).
struct Watch {
    products: Vec<String>,
    nodes: usize,
    /// Per product: the last value before the phase (values up to it are ignored).
    base: RefCell<Vec<u64>>,
    phase: Cell<u64>,
    schedule: Cell<Option<Schedule>>,
    /// [node][product][k]: when the first subscriber on that node got value base + 1 + k.
    first: RefCell<Vec<Vec<Vec<Option<Instant>>>>>,
    warm: Cell<usize>,
}

/// One subscriber's view: the last value of each product, and what went wrong.
#[derive(Default)]
struct Seen {
    phase: u64,
    last: Vec<u64>,
    deliveries: u64,
    gaps: u64,
    duplicate_or_late: u64,
    warm: bool,
    closed: bool,
}

type Watcher = (tokio::task::JoinHandle<()>, Rc<RefCell<Seen>>, CancellationToken);

impl Watch {
    fn new(products: Vec<String>, nodes: usize) -> Rc<Self> {
        let base = vec![0; products.len()];
        Rc::new(Self {
            products,
            nodes,
            base: RefCell::new(base),
            phase: Cell::new(0),
            schedule: Cell::new(None),
            first: RefCell::new(Vec::new()),
            warm: Cell::new(0),
        })
    }

    fn begin(&self, base: Vec<u64>, schedule: Option<Schedule>) {
        *self.base.borrow_mut() = base;
        self.schedule.set(schedule);
        *self.first.borrow_mut() = vec![vec![Vec::new(); self.products.len()]; self.nodes];
        self.phase.set(self.phase.get() + 1);
    }

    /// Publishes one value per publisher until every subscriber has seen one (all are live).
    async fn warm_up(&self, publishers: &mut [Publisher], subscribers: usize) -> anyhow::Result<()> {
        let until = Instant::now() + Duration::from_secs(20);
        while self.warm.get() < subscribers {
            if Instant::now() > until {
                bail!("only {} of {subscribers} subscribers saw an event within 20 s", self.warm.get());
            }
            for p in publishers.iter_mut() {
                p.publish_one().await?;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    fn on_event(&self, node: usize, seen: &mut Seen, product: &str, value: u64, now: Instant) {
        if !seen.warm {
            seen.warm = true;
            self.warm.set(self.warm.get() + 1);
        }
        let Some(p) = self.products.iter().position(|id| id == product) else { return };
        let phase = self.phase.get();
        if phase == 0 {
            return;
        }
        if seen.phase != phase {
            seen.phase = phase;
            seen.last = self.base.borrow().clone();
        }
        let base = self.base.borrow()[p];
        if value <= base {
            return; // from the warm-up
        }
        seen.deliveries += 1;
        let last = &mut seen.last[p];
        if value <= *last {
            seen.duplicate_or_late += 1;
            return;
        }
        seen.gaps += value - *last - 1;
        *last = value;
        let k = (value - base - 1) as usize;
        if let Some(arrivals) = self.first.borrow_mut().get_mut(node).map(|n| &mut n[p]) {
            if arrivals.len() <= k {
                arrivals.resize(k + 1, None);
            }
            arrivals[k].get_or_insert(now);
        }
    }

    /// Waits (at most 20 s) until every live subscriber has every product's last value, then
    /// counts what is missing or came twice or late.
    async fn finish(&self, last: Vec<u64>, subs: &[Watcher]) -> Checked {
        let done = |seen: &Seen| seen.closed || (seen.phase == self.phase.get() && seen.last == last);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && !subs.iter().all(|(_, seen, _)| done(&seen.borrow())) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let base = self.base.borrow();
        let mut checked = Checked { subscribers: subs.len(), ..Checked::default() };
        for (_, seen, _) in subs {
            let seen = seen.borrow();
            checked.deliveries += seen.deliveries;
            checked.duplicate_or_late += seen.duplicate_or_late;
            checked.closed += u64::from(seen.closed);
            let reached: Vec<u64> = if seen.phase == self.phase.get() { seen.last.clone() } else { base.clone() };
            checked.missing += seen.gaps + last.iter().zip(&reached).map(|(l, r)| l.saturating_sub(*r)).sum::<u64>();
        }
        checked
    }

    /// node-2's first arrival less node-1's, over every event of `products` (published on
    /// node-1) that both got; and how many came to node-2 first (counted as 0).
    fn hops(&self, products: std::ops::Range<usize>) -> (Latency, u64) {
        let first = self.first.borrow();
        let mut hop = scenarios::histogram();
        let mut remote_first = 0;
        for p in products {
            let (a, b) = (&first[0][p], &first[1][p]);
            for (a, b) in a.iter().zip(b) {
                if let (Some(a), Some(b)) = (a, b) {
                    remote_first += u64::from(b < a);
                    record(&mut hop, micros(b.saturating_duration_since(*a)));
                }
            }
        }
        (Latency::of(&hop), remote_first)
    }

    /// From each value's scheduled publish to its first arrival on node-1 and on node-2.
    fn since_scheduled(&self) -> (Latency, Latency) {
        let Some(schedule) = self.schedule.get() else { return Default::default() };
        let first = self.first.borrow();
        let mut on = [scenarios::histogram(), scenarios::histogram()];
        for (node, histogram) in on.iter_mut().enumerate() {
            for (p, arrivals) in first[node].iter().enumerate() {
                for (k, at) in arrivals.iter().enumerate() {
                    if let Some(at) = at {
                        record(histogram, micros(at.saturating_duration_since(schedule.at(p, k as u64))));
                    }
                }
            }
        }
        (Latency::of(&on[0]), Latency::of(&on[1]))
    }
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

fn record(h: &mut Histogram<u64>, v: u64) {
    h.saturating_record(v);
}

async fn open_watchers(
    env: &Env,
    node: &Server,
    index: usize,
    count: usize,
    watch: &Rc<Watch>,
) -> anyhow::Result<Vec<Watcher>> {
    let mut out = Vec::new();
    for _ in 0..count {
        let mut ws = client::graphql_ws(node.addr, &node.ws_url, &env.token).await?;
        client::subscribe(&mut ws, ALL_INVENTORY, json!({})).await?;
        let seen = Rc::new(RefCell::new(Seen::default()));
        let cancel = CancellationToken::new();
        let task = tokio::task::spawn_local(read(ws, index, watch.clone(), seen.clone(), cancel.clone()));
        out.push((task, seen, cancel));
    }
    scenarios::settle(count).await;
    Ok(out)
}

async fn stop(subs: Vec<Watcher>) {
    for (task, _, cancel) in subs {
        cancel.cancel();
        let _ = task.await;
    }
}

/// One subscriber: reads `next` frames until cancelled or closed.
async fn read(mut ws: Ws, node: usize, watch: Rc<Watch>, seen: Rc<RefCell<Seen>>, cancel: CancellationToken) {
    loop {
        let message = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            message = ws.next() => message,
        };
        let now = Instant::now();
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_)) | Err(_)) | None => {
                seen.borrow_mut().closed = true;
                return;
            }
            Some(Ok(_)) => continue,
        };
        if text.contains("\"type\":\"next\"") {
            let product = text.split("\"productId\":\"").nth(1).and_then(|rest| rest.split('"').next());
            if let (Some(product), Some(value)) = (product, number_after(&text, "\"newQuantity\":")) {
                watch.on_event(node, &mut seen.borrow_mut(), product, value, now);
            }
        } else if text.contains("\"type\":\"ping\"")
            && ws.send(Message::Text(r#"{"type":"pong"}"#.into())).await.is_err()
        {
            seen.borrow_mut().closed = true;
            return;
        }
    }
}

// --- CPU of the parts ---------------------------------------------------------------------------

struct Parts {
    nodes: Vec<Option<u32>>,
    store: Option<u32>,
    redis: Option<u32>,
}

struct Mark {
    nodes: Vec<Option<Duration>>,
    switches: Vec<u64>,
    store: Option<Duration>,
    redis: Option<Duration>,
}

impl Parts {
    fn mark(&self) -> Mark {
        Mark {
            nodes: self.nodes.iter().map(|pid| pid.and_then(sys::cpu_time_fine)).collect(),
            switches: self.nodes.iter().map(|pid| pid.map_or(0, sys::context_switches)).collect(),
            store: self.store.map(sys::tree_cpu),
            redis: self.redis.and_then(sys::cpu_time_fine),
        }
    }

    fn since(&self, mark: &Mark) -> Cpu {
        let secs = |now: Option<Duration>, then: Option<Duration>| {
            now.zip(then).map(|(n, t)| n.saturating_sub(t).as_secs_f64())
        };
        Cpu {
            nodes: self
                .nodes
                .iter()
                .zip(&mark.nodes)
                .map(|(pid, then)| secs(pid.and_then(sys::cpu_time_fine), *then).unwrap_or(f64::NAN))
                .collect(),
            switches: self
                .nodes
                .iter()
                .zip(&mark.switches)
                .map(|(pid, then)| pid.map_or(0, sys::context_switches).saturating_sub(*then))
                .collect(),
            store: secs(self.store.map(sys::tree_cpu), mark.store),
            redis: secs(self.redis.and_then(sys::cpu_time_fine), mark.redis),
        }
    }
}

// --- Redis --------------------------------------------------------------------------------------

fn redis_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url.strip_prefix("redis://").context("--redis-url must be redis://HOST:PORT")?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    let hostport = hostport.rsplit('@').next().unwrap_or(hostport).replace("localhost", "127.0.0.1");
    let addr: SocketAddr = hostport.parse().with_context(|| format!("{hostport} is not ip:port"))?;
    if !addr.ip().is_loopback() {
        bail!("this harness only talks to 127.0.0.0/8, not {addr}");
    }
    Ok(addr)
}

/// One command on a fresh connection; the reply must be a bulk string (INFO's is).
async fn redis_command(addr: SocketAddr, args: &[&str]) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut request = format!("*{}\r\n", args.len());
    for a in args {
        request += &format!("${}\r\n{a}\r\n", a.len());
    }
    stream.write_all(request.as_bytes()).await?;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("Redis closed the connection");
            }
            buffer.extend_from_slice(&chunk[..n]);
            let Some(end) = buffer.windows(2).position(|w| w == b"\r\n") else { continue };
            let head = std::str::from_utf8(&buffer[..end])?;
            let Some(len) = head.strip_prefix('$') else { bail!("unexpected reply: {head}") };
            let len: usize = len.parse()?;
            if buffer.len() >= end + 2 + len {
                return Ok(String::from_utf8_lossy(&buffer[end + 2..end + 2 + len]).into_owned());
            }
        }
    })
    .await
    .context("Redis did not answer within 5 s")?
}

/// Reads one RESP reply: an array of bulk strings (a pub/sub push) or a simple line.
async fn read_reply(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some((items, used)) = parse_reply(buffer)? {
            buffer.drain(..used);
            return Ok(items);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("Redis closed the connection");
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// `Some((items, bytes used))` once `buffer` holds a whole reply.
fn parse_reply(buffer: &[u8]) -> anyhow::Result<Option<(Vec<Vec<u8>>, usize)>> {
    let line = |at: usize| buffer[at..].windows(2).position(|w| w == b"\r\n").map(|end| at + end);
    let Some(end) = line(0) else { return Ok(None) };
    let head = std::str::from_utf8(&buffer[..end])?;
    match head.as_bytes().first() {
        Some(b'*') => {
            let count: usize = head[1..].parse()?;
            let mut at = end + 2;
            let mut items = Vec::with_capacity(count);
            for _ in 0..count {
                let Some(end) = line(at) else { return Ok(None) };
                let head = std::str::from_utf8(&buffer[at..end])?;
                match head.as_bytes().first() {
                    Some(b'$') => {
                        let len: usize = head[1..].parse()?;
                        if buffer.len() < end + 2 + len + 2 {
                            return Ok(None);
                        }
                        items.push(buffer[end + 2..end + 2 + len].to_vec());
                        at = end + 2 + len + 2;
                    }
                    _ => {
                        items.push(head.as_bytes()[1..].to_vec());
                        at = end + 2;
                    }
                }
            }
            Ok(Some((items, at)))
        }
        _ => Ok(Some((vec![head.as_bytes().to_vec()], end + 2))),
    }
}

fn resp_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The channel and payload of a real event message: subscribes to every events channel, makes
/// one change on `node`, and keeps the first message that carries an event.
async fn capture_event(env: &Env, node: &Server, redis: SocketAddr) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let mut stream = TcpStream::connect(redis).await?;
    stream.write_all(&resp_command(&[b"PSUBSCRIBE", b"switchboard:*:events"])).await?;
    let mut buffer = Vec::new();
    read_reply(&mut stream, &mut buffer).await?;
    let product = scenarios::create_products(node, &env.token, 1).await?.remove(0);
    let mut publisher = Publisher::new(node, &env.token, scenarios::set_inventory(product)).await?;
    publisher.publish_one().await?;
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let items = read_reply(&mut stream, &mut buffer).await?;
            if items.len() == 4 && items[0] == b"pmessage" && items[3].starts_with(br#"{"t":"event""#) {
                return Ok((items[2].clone(), items[3].clone()));
            }
        }
    })
    .await
    .context("no event message on the channel within 5 s")?
}

/// Publishes `message` `rate` times a second for `seconds` (pipelined, a batch per millisecond).
async fn replay(
    redis: SocketAddr,
    (channel, payload): &(Vec<u8>, Vec<u8>),
    rate: f64,
    seconds: f64,
    parts: &Parts,
) -> anyhow::Result<Replayed> {
    let stream = TcpStream::connect(redis).await?;
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    let command = resp_command(&[b"PUBLISH", channel, payload]);
    let n = (rate * seconds).round() as u64;
    let mark = parts.mark();
    let start = Instant::now();
    let write = async {
        let mut sent = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        while sent < n {
            tick.tick().await;
            let due = ((start.elapsed().as_secs_f64() * rate) as u64).min(n);
            let mut batch = Vec::new();
            while sent < due {
                batch.extend_from_slice(&command);
                sent += 1;
            }
            writer.write_all(&batch).await?;
        }
        anyhow::Ok(())
    };
    let read = async {
        // Each reply is ":<receivers>\r\n".
        let (mut replies, mut chunk) = (0u64, [0u8; 16 * 1024]);
        while replies < n {
            let got = reader.read(&mut chunk).await?;
            if got == 0 {
                bail!("Redis closed the connection");
            }
            replies += chunk[..got].iter().filter(|&&b| b == b'\n').count() as u64;
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs_f64(seconds + 30.0), async { tokio::try_join!(write, read) })
        .await
        .context("Redis did not take the messages in time")??;
    let sending = start.elapsed().as_secs_f64();
    // Let the nodes read what is on their sockets.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let wall = start.elapsed().as_secs_f64();
    Ok(Replayed { rate, sent: n, sending, wall, cpu: parts.since(&mark) })
}

fn info_field(info: &str, key: &str) -> Option<u32> {
    info.lines().find_map(|l| l.strip_prefix(&format!("{key}:"))).and_then(|v| v.trim().parse().ok())
}

#[derive(Clone, Copy)]
struct Totals {
    all: u64,
    publish: u64,
}

impl Totals {
    fn since(self, before: Totals) -> Commands {
        Commands { all: self.all.saturating_sub(before.all), publish: self.publish.saturating_sub(before.publish) }
    }
}

/// Commands Redis has run, from `INFO commandstats`, less `INFO` itself (ours).
async fn commands(addr: SocketAddr) -> anyhow::Result<Totals> {
    let text = redis_command(addr, &["INFO", "commandstats"]).await?;
    Ok(parse_commandstats(&text))
}

fn parse_commandstats(text: &str) -> Totals {
    let mut totals = Totals { all: 0, publish: 0 };
    for line in text.lines() {
        let Some((name, stats)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else { continue };
        let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls=")).and_then(|v| v.parse::<u64>().ok());
        let Some(calls) = calls else { continue };
        if name == "info" {
            continue;
        }
        totals.all += calls;
        if name == "publish" {
            totals.publish += calls;
        }
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_commands_but_our_info() {
        let text = "# Commandstats\r\ncmdstat_publish:calls=10,usec=5,usec_per_call=0.5\r\n\
                    cmdstat_info:calls=4,usec=1\r\ncmdstat_hset:calls=3,usec=1\r\n";
        let t = parse_commandstats(text);
        assert_eq!((t.all, t.publish), (13, 10));
    }

    #[test]
    fn parses_pubsub_pushes_whole_or_not_at_all() {
        let push = b"*4\r\n$8\r\npmessage\r\n$1\r\np\r\n$2\r\nch\r\n$5\r\nhello\r\n:1\r\n";
        let (items, used) = parse_reply(push).unwrap().unwrap();
        assert_eq!(items, vec![b"pmessage".to_vec(), b"p".to_vec(), b"ch".to_vec(), b"hello".to_vec()]);
        assert_eq!(&push[used..], b":1\r\n");
        assert!(parse_reply(&push[..20]).unwrap().is_none());
        assert_eq!(resp_command(&[b"PING"]), b"*1\r\n$4\r\nPING\r\n");
    }

    #[test]
    fn redis_urls_stay_on_loopback() {
        assert_eq!(redis_addr("redis://127.0.0.1:6379").unwrap().port(), 6379);
        assert_eq!(redis_addr("redis://localhost:7000/0").unwrap().port(), 7000);
        assert!(redis_addr("redis://10.0.0.1:6379").is_err());
    }
}
