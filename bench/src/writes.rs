//! `writes` (issue 17): how many changes a node (or several on one store) makes per second, and
//! what each costs, with the mix a shop sends: `setInventory`, `adjustInventory`, `updateOrder`,
//! `createOrder` and `sendNotification`, in turn, from concurrent clients, half of them on
//! pipelined keep-alive HTTP/1.1 connections and half on graphql-ws (each mutation a `subscribe`
//! with its own id, several in flight).
//!
//! For each server (this build, and with `--baseline-bin` a previous one, alternating run by run
//! so that a neighbour's load weighs on both alike):
//!
//! 1. **Saturated**: every client keeps `--depth` mutations in flight (a new one as each answer
//!    comes) for `--seconds`: mutations/s, the servers' CPU and context switches per mutation, and
//!    from the servers' `/metrics` their commits (batches) and statements per mutation. With
//!    several `--clients` counts, one saturated run per count.
//! 2. **Open loop at `--near` of that rate** (80 % by default), each mutation written at its
//!    scheduled time whatever the answers do: latency from the scheduled time (no coordinated
//!    omission), p50/p99/p99.9, for all clients and for each protocol apart. The rate is shared
//!    between the HTTP and the graphql-ws clients as the saturated run's answers were, so that
//!    each carries `--near` of what it carried at saturation: a pipelined HTTP/1.1 connection is
//!    served one request at a time, and at saturation carries a fraction of what a graphql-ws
//!    connection with several operations in flight does; an even split would offer the HTTP
//!    clients more than they carried at saturation, and measure their growing backlog rather than
//!    the server at 80 % (`--even-split` does that, for comparison).
//!
//! With `--watchers N`, N sets of subscribers per node (every product's `inventoryChanged`, every
//! order's `orderEvents`, and each bench user's `notificationCreated`) check that every change
//! reaches every node once and in order: each topic's `sequence` must go up by exactly one, and
//! each stream must end with as many events as mutations of its kind succeeded.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::client::{self, Ws};
use crate::scenarios::{self, Env, Latency};
use crate::sys;
use crate::target::{Kind, Server};

/// Products and orders the mix spreads its changes over, and the users notifications go to.
const PRODUCTS: usize = 16;
const ORDERS: usize = 16;
const USERS: usize = 4;

pub struct Opts {
    /// Nodes on one store; more than one needs `redis_url`.
    pub nodes: usize,
    pub redis_url: Option<String>,
    /// Client counts of the saturated runs; the last is also the open-loop run's.
    pub clients: Vec<usize>,
    /// With several nodes, `clients` per node rather than in all.
    pub scale_clients: bool,
    pub depth: usize,
    pub seconds: f64,
    pub near: f64,
    /// The open-loop run's rate instead of `near` × the saturated rate.
    pub rate: Option<f64>,
    /// Share the open-loop rate evenly between the clients, whatever their protocol.
    pub even_split: bool,
    /// Subscriber sets per node checking order and completeness (0: none).
    pub watchers: usize,
    /// The store's processes (PostgreSQL's postmaster), whose CPU is reported beside the nodes'.
    pub store_pid: Option<u32>,
}

/// How a run offers its load.
#[derive(Clone, Copy, Debug)]
pub enum Load {
    Saturated {
        depth: usize,
    },
    /// `rate` in all, `ws_share` of it on the graphql-ws clients (`None`: an even share per
    /// client).
    Open {
        rate: f64,
        ws_share: Option<f64>,
    },
}

/// One measured run.
#[derive(Clone, Debug)]
pub struct Run {
    pub kind: Kind,
    pub nodes: usize,
    pub clients: usize,
    pub load: Load,
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub per_s: f64,
    pub latency: Latency,
    /// The same, for the clients on pipelined HTTP/1.1 and on graphql-ws apart: an HTTP/1.1
    /// connection is served one request at a time, so its backlog drains no faster than one
    /// answer per request's latency, where a graphql-ws connection runs its operations at once.
    pub latency_http: Latency,
    pub latency_ws: Latency,
    /// CPU seconds of every node together.
    pub cpu: Option<f64>,
    pub store_cpu: Option<f64>,
    /// CPU seconds of this process (the clients and the watchers).
    pub generator_cpu: Option<f64>,
    /// The share of all the machine's cores that was busy during the run, whoever used it.
    pub machine_busy: Option<f64>,
    pub switches: u64,
    /// Deltas of the nodes' writer metrics (`None` for a build without them).
    pub commits: Option<f64>,
    pub statements: Option<f64>,
    pub round_trips: Option<f64>,
    pub wall: f64,
    pub checked: Option<Checked>,
}

impl Run {
    /// The share of the answers that went to graphql-ws clients.
    pub fn ws_share(&self) -> f64 {
        let (http, ws) = (self.latency_http.count, self.latency_ws.count);
        if http + ws == 0 { 0.5 } else { ws as f64 / (http + ws) as f64 }
    }

    pub fn cpu_us_per_mutation(&self) -> Option<f64> {
        self.cpu.filter(|_| self.ok > 0).map(|c| c * 1e6 / self.ok as f64)
    }

    pub fn store_us_per_mutation(&self) -> Option<f64> {
        self.store_cpu.filter(|_| self.ok > 0).map(|c| c * 1e6 / self.ok as f64)
    }

    pub fn switches_per_mutation(&self) -> Option<f64> {
        (self.ok > 0).then(|| self.switches as f64 / self.ok as f64)
    }

    pub fn commits_per_mutation(&self) -> Option<f64> {
        self.commits.filter(|_| self.ok > 0).map(|c| c / self.ok as f64)
    }

    pub fn statements_per_mutation(&self) -> Option<f64> {
        self.statements.filter(|_| self.ok > 0).map(|c| c / self.ok as f64)
    }

    pub fn round_trips_per_mutation(&self) -> Option<f64> {
        self.round_trips.filter(|_| self.ok > 0).map(|c| c / self.ok as f64)
    }
}

/// What the watchers saw.
#[derive(Clone, Debug, Default)]
pub struct Checked {
    pub subscribers: usize,
    pub events: u64,
    /// Events expected but never seen (holes in a topic's sequence, and short streams).
    pub missing: u64,
    /// Events seen again, or after a later one of their topic.
    pub reordered: u64,
    /// Subscriptions the server closed (a subscriber too slow for its queue is closed, 1013).
    pub closed: u64,
}

impl Checked {
    pub fn clean(&self) -> bool {
        self.missing == 0 && self.reordered == 0 && self.closed == 0
    }
}

/// The runs of one server kind and node count: saturated per client count, then open loop.
pub struct Series {
    pub saturated: Vec<Run>,
    pub near: Option<Run>,
}

/// Runs the mix on `kind` (`opts.nodes` nodes); the servers are stopped when this returns.
pub async fn series(env: &Env, kind: Kind, opts: &Opts) -> anyhow::Result<Series> {
    let mut saturated = Vec::new();
    for &clients in &opts.clients {
        let clients = if opts.scale_clients { clients * opts.nodes } else { clients };
        saturated.push(run(env, kind, opts, clients, Load::Saturated { depth: opts.depth }).await?);
    }
    let near = match saturated.last() {
        Some(last) if opts.near > 0.0 && last.per_s > 0.0 => {
            let rate = opts.rate.unwrap_or((last.per_s * opts.near).round()).max(1.0);
            let ws_share = (!opts.even_split).then(|| last.ws_share());
            Some(run(env, kind, opts, last.clients, Load::Open { rate, ws_share }).await?)
        }
        _ => None,
    };
    Ok(Series { saturated, near })
}

/// Starts the nodes, sets up the fixtures and watchers, runs one measured phase.
pub async fn run(env: &Env, kind: Kind, opts: &Opts, clients: usize, load: Load) -> anyhow::Result<Run> {
    let shared_sqlite = PathBuf::from(format!("/tmp/switchboard-bench-writes-{}.db", std::process::id()));
    let shared = opts.nodes > 1 && env.settings.database_url.is_none();
    let _cleanup = RemoveOnDrop(shared.then(|| shared_sqlite.clone()));
    let mut nodes = Vec::new();
    for i in 1..=opts.nodes {
        let mut settings = env.settings.clone();
        if shared {
            settings.database_url = Some(format!("sqlite://{}", shared_sqlite.display()));
        }
        if let Some(url) = &opts.redis_url {
            settings.extra_env.push(("REDIS_URL".into(), url.clone()));
            settings.extra_env.push(("NODE_ID".into(), format!("node-{i}")));
        }
        if opts.nodes > 1 {
            // Several nodes share both cores with the store, as they would share a machine.
            settings.server_core = None;
        }
        // Every graphql-ws client keeps `depth` operations in flight.
        settings.extra_env.push(("WS_MAX_OPERATIONS".into(), "10000".into()));
        nodes.push(Server::spawn(kind, &settings)?);
    }
    for node in &nodes {
        wait_ready(node, opts.redis_url.is_some()).await.with_context(|| node.log_path())?;
    }
    scenarios::log(
        env,
        format!(
            "writes on {} × {} ({}): {load:?}, {clients} clients, {} s",
            opts.nodes,
            kind.label(),
            nodes[0].addr,
            opts.seconds
        ),
    );
    let fixtures = Rc::new(Fixtures::create(&nodes[0], &env.token).await?);
    let watch = if opts.watchers > 0 { Some(Watch::open(env, &nodes, opts.watchers, &fixtures).await?) } else { None };

    // The clients: even ones on HTTP, odd ones on graphql-ws, spread over the nodes.
    let mut conns = Vec::new();
    for c in 0..clients {
        let node = &nodes[c % nodes.len()];
        conns.push(if c % 2 == 0 {
            let (w, r) = client::http(node.addr, &env.token).await?;
            Conn::Http(w, r)
        } else {
            Conn::Ws(Box::new(client::graphql_ws(node.addr, &node.ws_url, &env.token).await?))
        });
    }
    // A short unmeasured warm-up (a fresh server's first changes are dearer).
    let tally = Rc::new(Tally::new());
    let warm_until = Instant::now() + Duration::from_millis(500);
    let mut warmed = Vec::new();
    for (c, conn) in conns.into_iter().enumerate() {
        warmed.push(drive(conn, c, 0, Plan::Closed { depth: 2, until: warm_until }, fixtures.clone(), tally.clone()));
    }
    let conns: Vec<Conn> = futures::future::try_join_all(warmed).await?;
    if let Some(watch) = &watch {
        watch.reset().await;
    }

    let tally = Rc::new(Tally::new());
    let pids: Vec<Option<u32>> = nodes.iter().map(|n| n.pid).collect();
    let before = writer_metrics(&nodes).await;
    let cpu = pids.iter().map(|pid| sys::CpuMark::fine(*pid)).collect::<Vec<_>>();
    let switches: u64 = pids.iter().map(|pid| pid.map_or(0, sys::context_switches)).sum();
    let store_cpu = opts.store_pid.map(sys::tree_cpu);
    let generator = sys::CpuMark::fine(Some(std::process::id()));
    let machine = sys::machine_cpu();
    let start = Instant::now();
    let t0 = start + Duration::from_millis(20);
    let plans: Vec<Plan> = match load {
        Load::Saturated { depth } => {
            (0..clients).map(|_| Plan::Closed { depth, until: start + Duration::from_secs_f64(opts.seconds) }).collect()
        }
        Load::Open { rate, ws_share } => {
            // Odd clients are on graphql-ws, even ones on HTTP.
            let ws_clients = clients / 2;
            let http_clients = clients - ws_clients;
            let ws_share = match ws_share {
                _ if ws_clients == 0 => 0.0,
                Some(share) => share.clamp(0.0, 1.0),
                None => ws_clients as f64 / clients as f64,
            };
            (0..clients)
                .map(|c| {
                    let (share, of) = if c % 2 == 1 { (ws_share, ws_clients) } else { (1.0 - ws_share, http_clients) };
                    let per_client = (rate * share / of as f64).max(1e-3);
                    let interval = Duration::from_secs_f64(1.0 / per_client);
                    let n = ((per_client * opts.seconds).round() as u64).max(1);
                    Plan::Open { t0: t0 + interval.mul_f64(c as f64 / clients as f64), interval, n }
                })
                .collect()
        }
    };
    // The measured changes count on from the warm-up's (an update must change something).
    let runs = conns
        .into_iter()
        .zip(plans)
        .enumerate()
        .map(|(c, (conn, plan))| drive(conn, c, MEASURED, plan, fixtures.clone(), tally.clone()));
    let conns = futures::future::try_join_all(runs).await?;
    let wall = start.elapsed().as_secs_f64();
    let cpu: Option<f64> = cpu.iter().map(|m| m.elapsed().map(|d| d.as_secs_f64())).sum();
    let switches = pids.iter().map(|pid| pid.map_or(0, sys::context_switches)).sum::<u64>().saturating_sub(switches);
    let store_cpu = opts.store_pid.map(sys::tree_cpu).zip(store_cpu).map(|(b, a)| b.saturating_sub(a).as_secs_f64());
    let generator_cpu = generator.elapsed().map(|d| d.as_secs_f64());
    let machine_busy = sys::machine_cpu().zip(machine).and_then(|((busy, total), (busy0, total0))| {
        (total > total0).then(|| (busy - busy0) as f64 / (total - total0) as f64)
    });
    let after = writer_metrics(&nodes).await;
    drop(conns);
    let checked = match watch {
        Some(watch) => Some(watch.finish(&tally).await),
        None => None,
    };
    let (first, last) = (tally.first.get().unwrap_or(start), tally.last.get().unwrap_or(start));
    let (ok, errors) = (tally.ok.get(), tally.errors.get());
    Ok(Run {
        kind,
        nodes: opts.nodes,
        clients,
        load,
        sent: tally.sent.get(),
        ok,
        errors,
        first_error: tally.first_error.borrow().clone(),
        per_s: (ok + errors).saturating_sub(1) as f64 / last.saturating_duration_since(first).as_secs_f64().max(1e-9),
        latency: Latency::of(&tally.latency.borrow()),
        latency_http: Latency::of(&tally.latency_by_protocol.borrow()[0]),
        latency_ws: Latency::of(&tally.latency_by_protocol.borrow()[1]),
        cpu,
        store_cpu,
        generator_cpu,
        machine_busy,
        switches,
        commits: after.zip(before).map(|(a, b)| a.0 - b.0),
        statements: after.zip(before).map(|(a, b)| a.1 - b.1),
        round_trips: after.zip(before).map(|(a, b)| a.2 - b.2),
        wall,
        checked,
    })
}

async fn wait_ready(node: &Server, redis: bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(body) = scenarios::http_get(node, "/ready").await {
            if body.contains("\"ready\"") && (!redis || body.contains("\"redis\":\"up\"")) {
                return Ok(());
            }
            last = body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("not ready within 30 s: {last}")
}

/// Commits, statements and round trips the nodes' writers counted so far (`None`: a build without
/// them).
async fn writer_metrics(nodes: &[Server]) -> Option<(f64, f64, f64)> {
    let mut totals = (0.0, 0.0, 0.0);
    for node in nodes {
        let text = scenarios::http_get(node, "/metrics").await.ok()?;
        let sum = |name: &str, label: &str| -> Option<f64> {
            let values: Vec<f64> = text
                .lines()
                .filter(|l| l.starts_with(name) && l.contains(label))
                .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
                .collect();
            (!values.is_empty()).then(|| values.iter().sum())
        };
        totals.0 += sum("switchboard_writer_batches_total{", "outcome=\"committed\"")?;
        totals.1 += sum("switchboard_writer_statements_total", "")?;
        totals.2 += sum("switchboard_writer_round_trips_total", "").unwrap_or(totals.1);
    }
    Some(totals)
}

struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
    }
}

// --- the mix ------------------------------------------------------------------------------------

struct Fixtures {
    products: Vec<String>,
    orders: Vec<String>,
    users: Vec<String>,
    /// Makes each run's order numbers and trackings its own.
    stamp: u128,
}

/// The five changes of the mix, in the order a client sends them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    SetInventory,
    AdjustInventory,
    UpdateOrder,
    CreateOrder,
    SendNotification,
}

const MIX: [Change; 5] =
    [Change::SetInventory, Change::AdjustInventory, Change::UpdateOrder, Change::CreateOrder, Change::SendNotification];

impl Fixtures {
    async fn create(node: &Server, token: &str) -> anyhow::Result<Self> {
        let products = scenarios::create_products(node, token, PRODUCTS).await?;
        let (mut w, mut r) = client::http(node.addr, token).await?;
        let body = json!({
            "query": "mutation($input: CreateOrderInput!){ createOrder(input: $input){ id } }",
            "variables": {"input": {"customerId": "bench-customer", "total": "1.00"}}
        })
        .to_string();
        let responses = client::graphql_batch(&mut w, &mut r, &vec![body; ORDERS]).await?;
        let orders = responses
            .iter()
            .map(|v| v["data"]["createOrder"]["id"].as_str().map(str::to_owned).context("createOrder returned no id"))
            .collect::<anyhow::Result<_>>()?;
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
        let users = (0..USERS).map(|u| format!("bench-user-{u}")).collect();
        Ok(Self { products, orders, users, stamp })
    }

    /// Client `client`'s `k`-th change, and which of its kind's entities (product, order or
    /// user) it goes to.
    fn target(client: usize, k: u64) -> (Change, usize) {
        let spread = client.wrapping_mul(7).wrapping_add(k as usize / MIX.len());
        let change = MIX[(client + k as usize) % MIX.len()];
        let count = match change {
            Change::SetInventory | Change::AdjustInventory => PRODUCTS,
            Change::UpdateOrder | Change::CreateOrder => ORDERS,
            Change::SendNotification => USERS,
        };
        (change, spread % count)
    }

    /// The GraphQL request (`{"query", "variables"}`) of client `client`'s `k`-th change.
    fn request(&self, client: usize, k: u64) -> String {
        let (change, at) = Self::target(client, k);
        let (product, order, user) =
            (&self.products[at % PRODUCTS], &self.orders[at % ORDERS], &self.users[at % USERS]);
        let stamp = self.stamp;
        match change {
            Change::SetInventory => format!(
                r#"{{"query":"mutation($p: ID!, $q: Int!){{ setInventory(productId: $p, quantity: $q){{ quantity }} }}","variables":{{"p":"{product}","q":{}}}}}"#,
                1000 + k % 1000
            ),
            Change::AdjustInventory => format!(
                r#"{{"query":"mutation($p: ID!){{ adjustInventory(productId: $p, delta: 1){{ quantity }} }}","variables":{{"p":"{product}"}}}}"#
            ),
            Change::UpdateOrder => format!(
                r#"{{"query":"mutation($o: ID!, $t: String){{ updateOrder(id: $o, input: {{trackingNumber: $t}}){{ id }} }}","variables":{{"o":"{order}","t":"T{stamp}-{client}-{k}"}}}}"#
            ),
            Change::CreateOrder => format!(
                r#"{{"query":"mutation($c: ID){{ createOrder(input: {{customerId: $c, total: \"12.50\"}}){{ id }} }}","variables":{{"c":"bench-c{client}"}}}}"#
            ),
            Change::SendNotification => format!(
                r#"{{"query":"mutation($u: ID!){{ sendNotification(input: {{userId: $u, type: \"info\", title: \"bench\", message: \"m\"}}){{ id }} }}","variables":{{"u":"{user}"}}}}"#
            ),
        }
    }
}

// --- clients ------------------------------------------------------------------------------------

enum Conn {
    Http(client::HttpWriter, client::HttpReader),
    Ws(Box<Ws>),
}

#[derive(Clone, Copy)]
enum Plan {
    /// `depth` in flight until `until`, then drain.
    Closed { depth: usize, until: Instant },
    /// `n` changes, the k-th written at `t0 + k·interval`.
    Open { t0: Instant, interval: Duration, n: u64 },
}

/// What the clients of a run have seen (single-threaded: cells).
struct Tally {
    sent: Cell<u64>,
    ok: Cell<u64>,
    errors: Cell<u64>,
    /// Successful changes by kind (the order of [`MIX`]).
    ok_by_change: RefCell<[u64; 5]>,
    /// Successful notifications by user.
    ok_by_user: RefCell<[u64; USERS]>,
    first_error: RefCell<Option<String>>,
    first: Cell<Option<Instant>>,
    last: Cell<Option<Instant>>,
    latency: RefCell<Histogram<u64>>,
    /// HTTP's, then graphql-ws's.
    latency_by_protocol: RefCell<[Histogram<u64>; 2]>,
}

impl Tally {
    fn new() -> Self {
        Self {
            sent: Cell::new(0),
            ok: Cell::new(0),
            errors: Cell::new(0),
            ok_by_change: RefCell::new([0; 5]),
            ok_by_user: RefCell::new([0; USERS]),
            first_error: RefCell::new(None),
            first: Cell::new(None),
            last: Cell::new(None),
            latency: RefCell::new(scenarios::histogram()),
            latency_by_protocol: RefCell::new([scenarios::histogram(), scenarios::histogram()]),
        }
    }

    fn answered(&self, (change, user): (Change, usize), since: Instant, ws: bool, error: Option<String>) {
        let now = Instant::now();
        let micros = (now.saturating_duration_since(since).as_micros() as u64).max(1);
        self.latency.borrow_mut().saturating_record(micros);
        self.latency_by_protocol.borrow_mut()[usize::from(ws)].saturating_record(micros);
        self.first.set(Some(self.first.get().unwrap_or(now)));
        self.last.set(Some(now));
        match error {
            None => {
                self.ok.set(self.ok.get() + 1);
                self.ok_by_change.borrow_mut()[MIX.iter().position(|c| *c == change).expect("in the mix")] += 1;
                if change == Change::SendNotification {
                    self.ok_by_user.borrow_mut()[user] += 1;
                }
            }
            Some(e) => {
                self.errors.set(self.errors.get() + 1);
                self.first_error.borrow_mut().get_or_insert(e);
            }
        }
    }
}

/// The first change number of a measured phase (the warm-up's start at 0).
const MEASURED: u64 = 1 << 32;

/// Sends client `client`'s changes (numbered from `first`) on `conn` as `plan` says, until every
/// one is answered.
async fn drive(
    conn: Conn,
    client: usize,
    first: u64,
    plan: Plan,
    fixtures: Rc<Fixtures>,
    tally: Rc<Tally>,
) -> anyhow::Result<Conn> {
    let slots = Semaphore::new(match plan {
        Plan::Closed { depth, .. } => depth.max(1),
        Plan::Open { .. } => Semaphore::MAX_PERMITS,
    });
    let sent = Cell::new(0u64);
    let done = Cell::new(false);
    let waiting: RefCell<HashMap<u64, Instant>> = RefCell::new(HashMap::new());
    let in_order: RefCell<VecDeque<u64>> = RefCell::new(VecDeque::new());
    let arrived = tokio::sync::Notify::new();
    // Writes each change at its time (open) or when a slot frees (closed); returns at the end.
    let schedule = |k: u64| -> Option<Instant> {
        let k = k - first;
        match plan {
            Plan::Closed { until, .. } => (Instant::now() < until).then(Instant::now),
            Plan::Open { t0, interval, n } => (k < n).then(|| t0 + interval.mul_f64(k as f64)),
        }
    };
    match conn {
        Conn::Http(mut writer, mut reader) => {
            let write = async {
                let mut k = first;
                loop {
                    let permit = slots.acquire().await.expect("open");
                    let Some(at) = schedule(k) else { break };
                    tokio::time::sleep_until(at.into()).await;
                    permit.forget();
                    let at = if matches!(plan, Plan::Closed { .. }) { Instant::now() } else { at };
                    writer.send(&fixtures.request(client, k)).await?;
                    waiting.borrow_mut().insert(k, at);
                    in_order.borrow_mut().push_back(k);
                    sent.set(k + 1 - first);
                    tally.sent.set(tally.sent.get() + 1);
                    arrived.notify_one();
                    k += 1;
                }
                done.set(true);
                arrived.notify_one();
                anyhow::Ok(writer)
            };
            let read = async {
                let mut answered = 0;
                loop {
                    if answered == sent.get() {
                        if done.get() {
                            break;
                        }
                        arrived.notified().await;
                        continue;
                    }
                    let response = reader.next().await?;
                    let k = in_order.borrow_mut().pop_front().context("a response nobody asked for")?;
                    let at = waiting.borrow_mut().remove(&k).context("sent")?;
                    let error =
                        (!response.ok()).then(|| String::from_utf8_lossy(&response.body).chars().take(300).collect());
                    tally.answered(Fixtures::target(client, k), at, false, error);
                    slots.add_permits(1);
                    answered += 1;
                }
                anyhow::Ok(reader)
            };
            let (writer, reader) = tokio::try_join!(write, read)?;
            Ok(Conn::Http(writer, reader))
        }
        Conn::Ws(ws) => {
            let (mut sink, mut stream) = (*ws).split();
            let write = async {
                let mut k = first;
                loop {
                    let permit = slots.acquire().await.expect("open");
                    let Some(at) = schedule(k) else { break };
                    tokio::time::sleep_until(at.into()).await;
                    permit.forget();
                    let at = if matches!(plan, Plan::Closed { .. }) { Instant::now() } else { at };
                    let message =
                        format!(r#"{{"id":"{k}","type":"subscribe","payload":{}}}"#, fixtures.request(client, k));
                    waiting.borrow_mut().insert(k, at);
                    sink.send(Message::Text(message.into())).await?;
                    sent.set(k + 1 - first);
                    tally.sent.set(tally.sent.get() + 1);
                    arrived.notify_one();
                    k += 1;
                }
                done.set(true);
                arrived.notify_one();
                anyhow::Ok(sink)
            };
            let read = async {
                let mut answered = 0;
                loop {
                    if answered == sent.get() {
                        if done.get() {
                            break;
                        }
                        arrived.notified().await;
                        continue;
                    }
                    let message = match stream.next().await {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(frame))) => bail!("the server closed a client: {frame:?}"),
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => return Err(e.into()),
                        None => bail!("the server closed a client"),
                    };
                    let message: Value = serde_json::from_str(&message)?;
                    let error = match message["type"].as_str() {
                        Some("next") if message["payload"]["errors"].is_null() => None,
                        Some("next") | Some("error") => {
                            Some(message["payload"].to_string().chars().take(300).collect())
                        }
                        _ => continue, // `complete`, `ping`, `pong`
                    };
                    let k: u64 = message["id"].as_str().and_then(|id| id.parse().ok()).context("an id")?;
                    let at = waiting.borrow_mut().remove(&k).context("an answer to an operation not sent")?;
                    tally.answered(Fixtures::target(client, k), at, true, error);
                    slots.add_permits(1);
                    answered += 1;
                }
                anyhow::Ok(stream)
            };
            let (sink, stream) = tokio::try_join!(write, read)?;
            Ok(Conn::Ws(Box::new(sink.reunite(stream).map_err(|_| anyhow::anyhow!("reunite"))?)))
        }
    }
}

// --- watchers -----------------------------------------------------------------------------------

/// One subscription's stream: which change kinds it carries, and each topic's last sequence.
#[derive(Default)]
struct Stream {
    events: Cell<u64>,
    missing: Cell<u64>,
    reordered: Cell<u64>,
    closed: Cell<bool>,
    last: RefCell<HashMap<String, i64>>,
}

impl Stream {
    fn saw(&self, topic: String, sequence: i64) {
        self.events.set(self.events.get() + 1);
        let mut last = self.last.borrow_mut();
        match last.get(&topic).copied() {
            Some(prev) if sequence == prev + 1 => {}
            Some(prev) if sequence > prev + 1 => self.missing.set(self.missing.get() + (sequence - prev - 1) as u64),
            Some(_) => {
                self.reordered.set(self.reordered.get() + 1);
                return;
            }
            None => {}
        }
        last.insert(topic, sequence);
    }

    fn reset(&self) {
        self.events.set(0);
        self.missing.set(0);
        self.reordered.set(0);
    }
}

/// What a watcher stream carries: inventory, orders, or one user's notifications.
#[derive(Clone, Copy)]
enum Carries {
    Inventory,
    Orders,
    User(usize),
}

/// Per node and watcher set: one stream of every product's inventory, one of every order's
/// events, and one per bench user of their notifications.
struct Watch {
    streams: Vec<(Rc<Stream>, Carries)>,
    cancel: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Watch {
    async fn open(env: &Env, nodes: &[Server], sets: usize, fixtures: &Fixtures) -> anyhow::Result<Self> {
        let cancel = CancellationToken::new();
        let (mut streams, mut tasks) = (Vec::new(), Vec::new());
        let subscribe = |id: &str, query: &str| {
            Message::Text(json!({"id": id, "type": "subscribe", "payload": {"query": query}}).to_string().into())
        };
        for node in nodes {
            for _ in 0..sets {
                let mut ws = client::graphql_ws(node.addr, &node.ws_url, &env.token).await?;
                ws.send(subscribe("i", "subscription{ inventoryChanged{ productId sequence } }")).await?;
                ws.send(subscribe("o", "subscription{ orderEvents{ sequence order { id } } }")).await?;
                let (inventory, orders) = (Rc::new(Stream::default()), Rc::new(Stream::default()));
                streams.push((inventory.clone(), Carries::Inventory));
                streams.push((orders.clone(), Carries::Orders));
                tasks.push(tokio::task::spawn_local(read_stream(ws, inventory, Some(orders), cancel.clone())));
                for (u, user) in fixtures.users.iter().enumerate() {
                    let token = client::token(&env.settings.jwt_secret, user, "customer");
                    let mut ws = client::graphql_ws(node.addr, &node.ws_url, &token).await?;
                    ws.send(subscribe("n", "subscription{ notificationCreated{ userId sequence } }")).await?;
                    let stream = Rc::new(Stream::default());
                    streams.push((stream.clone(), Carries::User(u)));
                    tasks.push(tokio::task::spawn_local(read_stream(ws, stream, None, cancel.clone())));
                }
            }
        }
        scenarios::settle(streams.len()).await;
        Ok(Self { streams, cancel, tasks })
    }

    /// Counts from here on. The warm-up's events are let in first; each topic's last sequence is
    /// kept, so that a topic's first measured event must follow its last warm-up one.
    async fn reset(&self) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for (stream, _) in &self.streams {
            stream.reset();
        }
    }

    /// Waits (at most 20 s) for every stream to have every event of the run's successful
    /// changes, then counts what is missing or out of order.
    async fn finish(self, tally: &Tally) -> Checked {
        let (by_change, by_user) = (*tally.ok_by_change.borrow(), *tally.ok_by_user.borrow());
        let expected = |carries: Carries| match carries {
            Carries::Inventory => by_change[0] + by_change[1],
            Carries::Orders => by_change[2] + by_change[3],
            Carries::User(u) => by_user[u],
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline
            && !self.streams.iter().all(|(s, c)| s.events.get() + s.missing.get() >= expected(*c))
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut checked = Checked { subscribers: self.streams.len(), ..Checked::default() };
        for (stream, carries) in &self.streams {
            checked.events += stream.events.get();
            checked.reordered += stream.reordered.get();
            checked.closed += u64::from(stream.closed.get());
            checked.missing += stream.missing.get().max(expected(*carries).saturating_sub(stream.events.get()));
        }
        self.cancel.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        checked
    }
}

/// Reads a watcher connection: `i`/`n` events into `first`, `o` events into `orders`.
async fn read_stream(mut ws: Ws, first: Rc<Stream>, orders: Option<Rc<Stream>>, cancel: CancellationToken) {
    loop {
        let message = tokio::select! {
            () = cancel.cancelled() => break,
            m = ws.next() => m,
        };
        if !matches!(message, Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_)))) {
            first.closed.set(true);
            if let Some(orders) = &orders {
                orders.closed.set(true);
            }
        }
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(p))) => {
                let _ = ws.send(Message::Pong(p)).await;
                continue;
            }
            Some(Ok(_)) => continue,
            _ => break,
        };
        let Ok(message) = serde_json::from_str::<Value>(&text) else { continue };
        if message["type"] == "ping" {
            let _ = ws.send(Message::Text(r#"{"type":"pong"}"#.into())).await;
            continue;
        }
        if message["type"] != "next" {
            continue;
        }
        let data = &message["payload"]["data"];
        let (stream, topic, sequence) = if let Some(e) = data.get("inventoryChanged") {
            (&first, format!("product:{}", e["productId"].as_str().unwrap_or("?")), e["sequence"].as_i64())
        } else if let Some(e) = data.get("orderEvents") {
            let Some(orders) = &orders else { continue };
            (orders, format!("order:{}", e["order"]["id"].as_str().unwrap_or("?")), e["sequence"].as_i64())
        } else if let Some(e) = data.get("notificationCreated") {
            (&first, format!("user:{}", e["userId"].as_str().unwrap_or("?")), e["sequence"].as_i64())
        } else {
            continue;
        };
        if let Some(sequence) = sequence {
            stream.saw(topic, sequence);
        }
    }
    let _ = ws.close(None).await;
}
