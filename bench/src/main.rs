//! `switchboard-bench`: a light load generator for Switchboard (see BENCHMARKS.md).
//!
//! One thread (`current_thread` runtime) pinned to its own core, small socket buffers, source
//! addresses spread over 127.0.0.2–254, its own file-descriptor limit raised to the hard limit.
//! Every loop is bounded in count and time; traffic goes only to 127.0.0.0/8.

mod baseline;
mod client;
mod cluster;
mod resume;
mod scenarios;
mod sys;
mod target;
mod writes;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use scenarios::{Churn, Connect, Env, Filter, Idle, Mutations, Phase};
use target::{Kind, SpawnSettings};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// S subscribers on one product; open-loop setInventory at R/s.
    Fanout,
    /// N connections with one subscription each; server RSS slope per connection.
    Idle,
    /// Events on one order with 1 subscriber, then with 10k more on other orders.
    Filter,
    /// New connections (upgrade, init, ack, subscribe) per second.
    Connect,
    /// The same fanout against the built-in minimal axum server, beside Switchboard.
    Baseline,
    /// The same fanout and idle against the Node peer, beside Switchboard.
    Peer,
    /// setInventory mutations per second and their latency, against SQLite.
    Setinventory,
    /// S connections × --per-connection unshared subscriptions, then all leave: RSS before, at
    /// the peak and after (does the allocator give the memory back?).
    Churn,
    /// Everything above in one run, then the targets of issue 5 as ratios.
    Suite,
    /// The same fanout over graphql-ws, then over GraphQL over SSE, and idle SSE subscribers.
    Sse,
    /// setInventory throughput and CPU with the event log and without it (the --without-log
    /// binary), SQLITE_SYNCHRONOUS full and normal, saturated and near saturation.
    Logcost,
    /// One subscriber resumes N missed events (--sizes): events/s and server CPU per event.
    Replay,
    /// S subscribers (-s) on --products products disconnect, miss --missed events each and all
    /// resume at once: time from subscribe to the last missed event, and that nothing is lost.
    Storm,
    /// idle on the --without-log binary and on this one, in one run.
    Logidle,
    /// logcost, replay, storm and logidle in one run, then the figures of issue 9.
    Resume,
    /// A short fanout (50 subscribers, 100/s, 2 s) for CI; fails on any missing delivery.
    Smoke,
    /// The same fanout without and with the operator console open (serverStats every 500 ms and
    /// eventTail), alternating --repeats times: deliveries/s per server core, with vs without.
    Console,
    /// Several nodes on one store and one Redis (--redis-url; bench/cluster.sh starts both):
    /// fan-out with and without Redis, most mutations/s across the nodes (checked value by
    /// value), the cross-node hop at -r/s, Redis commands per publish, CPU of an unwatched event
    /// (also republished at 1k, 5k and 20k/s).
    Cluster,
    /// Issue 17: an open-loop mix of setInventory, adjustInventory, updateOrder, createOrder and
    /// sendNotification from --clients concurrent clients (half pipelined HTTP, half graphql-ws):
    /// saturated mutations/s, CPU, context switches, commits and statements per mutation, then
    /// latency at --near of that rate; with --baseline-bin the same on that build, alternating;
    /// with --nodes 1,3 and --redis-url, several nodes on one store (--watchers check order).
    Writes,
    /// Internal: run the baseline server (started by the harness itself).
    #[value(hide = true)]
    BaselineServer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ServerArg {
    Switchboard,
    /// The built-in minimal axum server (fanout, idle, connect).
    Baseline,
    /// The Node peer in --node-dir.
    Node,
}

#[derive(Parser, Debug)]
#[command(
    about = "Load generator for Switchboard: fanout, idle, filter, connect, baseline, peer, setinventory, suite, smoke; resuming: logcost, replay, storm, logidle, resume; several nodes: cluster"
)]
struct Args {
    scenario: Scenario,
    /// Drive an already running server at this graphql-ws URL (ws://127.0.0.1:PORT/graphql).
    #[arg(long)]
    url: Option<String>,
    /// Its HTTP base (default: the host:port of --url).
    #[arg(long)]
    http: Option<String>,
    /// Its pid, for CPU and RSS figures from /proc.
    #[arg(long)]
    pid: Option<u32>,
    /// A staff token; default: one signed with --jwt-secret.
    #[arg(long)]
    token: Option<String>,
    #[arg(long, default_value = "bench-secret")]
    jwt_secret: String,
    /// Start this Switchboard binary (default: $CARGO_TARGET_DIR or ./target, release/switchboard).
    #[arg(long)]
    spawn: Option<PathBuf>,
    /// The Switchboard binary from before the event log (commit d182529), for logcost and
    /// logidle (default: $CARGO_TARGET_DIR or ./target, prelog/switchboard; bench/build-prelog.sh).
    #[arg(long)]
    without_log: Option<PathBuf>,
    /// The Node reference peer (not part of this repository), with node_modules installed
    /// (`npm ci` run there): the harness runs `node server.js` in it.
    #[arg(long, env = "SWITCHBOARD_NODE_PEER", default_value = "/tmp/switchboard-node-peer")]
    node_dir: PathBuf,
    /// DATABASE_URL for spawned Switchboards (default: a fresh SQLite file in /tmp each).
    #[arg(long)]
    database_url: Option<String>,
    /// Which server the single-server scenarios (fanout, idle, connect, setinventory) start.
    #[arg(long, value_enum, default_value_t = ServerArg::Switchboard)]
    server: ServerArg,
    /// Extra KEY=VALUE environment for spawned servers.
    #[arg(long = "server-env")]
    server_env: Vec<String>,
    /// Core for spawned servers.
    #[arg(long, default_value_t = 0)]
    server_core: usize,
    /// Core for this generator.
    #[arg(long, default_value_t = 1)]
    bench_core: usize,
    /// Do not pin anything.
    #[arg(long)]
    no_pin: bool,
    /// Subscribers (default 1000; storm: 10000).
    #[arg(long, short = 's')]
    subscribers: Option<usize>,
    /// Events (or mutations) per second.
    #[arg(long, short = 'r')]
    rate: Option<f64>,
    /// Length of each measured phase.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// idle / connect: the most connections to hold.
    #[arg(long, default_value_t = 20_000)]
    max_connections: usize,
    /// idle: RSS is sampled every this many connections.
    #[arg(long, default_value_t = 2_500)]
    step: usize,
    /// filter: subscribers on other orders.
    #[arg(long, default_value_t = 10_000)]
    others: usize,
    /// churn: subscriptions per connection, each on its own product with its own alias.
    #[arg(long, default_value_t = 100)]
    per_connection: usize,
    /// setinventory: pipelined keep-alive connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Connections being opened at once (default 64; storm: 1000).
    #[arg(long)]
    concurrency: Option<usize>,
    /// replay: events to resume, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,50000")]
    sizes: Vec<u64>,
    /// logcost: saturated runs per server and setting (alternating); replay: runs per size;
    /// console: pairs of fan-outs (without, with the console).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// setinventory: keep --depth requests in flight per connection instead of an open-loop rate.
    #[arg(long)]
    saturated: bool,
    /// logcost, setinventory --saturated: requests in flight per connection.
    #[arg(long, default_value_t = 16)]
    depth: usize,
    /// logcost: the open-loop rate, as a fraction of the lower saturated throughput.
    #[arg(long, default_value_t = 0.8)]
    near: f64,
    /// storm: products the subscribers are spread over.
    #[arg(long, default_value_t = 5)]
    products: usize,
    /// storm: reconnects per second of the paced round (default: half the measured capacity).
    #[arg(long)]
    arrival: Option<u32>,
    /// storm: distinct cursors the subscribers resume from (default: one per product).
    #[arg(long, default_value_t = 0)]
    cursors: usize,
    /// storm: events each subscriber misses while away.
    #[arg(long, default_value_t = 20)]
    missed: u64,
    /// Subscribers speak GraphQL over SSE (`POST /graphql/stream`) instead of graphql-ws.
    #[arg(long)]
    sse: bool,
    /// cluster: the Redis every node uses (redis://127.0.0.1:PORT).
    #[arg(long)]
    redis_url: Option<String>,
    /// cluster: PostgreSQL's postmaster pid, whose processes' CPU is reported as the store's.
    #[arg(long)]
    pg_pid: Option<u32>,
    /// cluster: nodes (default 3); writes: node counts to run, comma-separated (default 1).
    #[arg(long, value_delimiter = ',')]
    nodes: Vec<usize>,
    /// writes: a previous Switchboard build to run side by side, alternating (e.g. main as it was
    /// before the group commit, f6bf47f).
    #[arg(long)]
    baseline_bin: Option<PathBuf>,
    /// writes: concurrent clients of the saturated runs, comma-separated (the last one's rate sets
    /// the open-loop run's).
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    clients: Vec<usize>,
    /// writes: with several nodes, --clients per node rather than in all.
    #[arg(long)]
    scale_clients: bool,
    /// writes: share the open-loop rate evenly between the clients, rather than between HTTP and
    /// graphql-ws as the saturated run's answers were.
    #[arg(long)]
    even_split: bool,
    /// writes: subscriber sets per node that check every change arrives once and in order.
    #[arg(long, default_value_t = 0)]
    watchers: usize,
    /// writes: the store's own ceiling for one change at a time (pgbench's tps, measured by
    /// bench/cluster.sh), to compare the cluster's mutations/s with.
    #[arg(long)]
    ceiling: Option<f64>,
    /// cluster: subscribers per node watching every product.
    #[arg(long, default_value_t = 10)]
    per_node: usize,
    /// cluster: pin the nodes to --server-core too (default: they float over every core, with
    /// the store and Redis).
    #[arg(long)]
    pin_nodes: bool,
    /// Exit non-zero when a fan-out phase has missing, duplicate or out-of-order deliveries,
    /// closed subscribers or failed publishes.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.scenario == Scenario::BaselineServer {
        return match baseline::serve() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("baseline server: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if !args.no_pin
        && let Err(e) = sys::pin_to_core(args.bench_core)
    {
        eprintln!("warning: could not pin the generator to core {}: {e}", args.bench_core);
    }
    let fd_limit = sys::raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    match local.block_on(&runtime, run(args, fd_limit)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn default_binary(profile: &str) -> PathBuf {
    let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    PathBuf::from(dir).join(profile).join("switchboard")
}

/// Runs the scenario, prints the table; `Ok(false)` when `--check` found a problem.
async fn run(args: Args, fd_limit: u64) -> anyhow::Result<bool> {
    let extra_env =
        args.server_env.iter().filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned()))).collect();
    let env = Env {
        settings: SpawnSettings {
            switchboard_bin: args.spawn.clone().unwrap_or_else(|| default_binary("release")),
            prelog_bin: args.without_log.clone().unwrap_or_else(|| default_binary("prelog")),
            previous_bin: args.baseline_bin.clone(),
            node_dir: args.node_dir.clone(),
            jwt_secret: args.jwt_secret.clone(),
            database_url: args.database_url.clone(),
            server_core: (!args.no_pin).then_some(args.server_core),
            extra_env,
        },
        external: args.url.clone().map(|url| (url, args.http.clone(), args.pid)),
        token: args.token.clone().unwrap_or_else(|| client::token(&args.jwt_secret, "bench-staff", "staff")),
        concurrency: args.concurrency.unwrap_or(64).max(1),
        fd_limit,
        sse: std::cell::Cell::new(args.sse),
    };
    let sb = if env.external.is_some() { Kind::External } else { Kind::Switchboard };
    // The server of the single-server scenarios; `baseline`, `peer` and `suite` choose their own.
    let single = match args.server {
        ServerArg::Switchboard => sb,
        ServerArg::Baseline => Kind::Baseline,
        ServerArg::Node => Kind::Node,
    };
    if env.external.is_none() && !env.settings.switchboard_bin.exists() {
        anyhow::bail!(
            "{} not found: build it (cargo build --release --bin switchboard) or pass --spawn / --url",
            env.settings.switchboard_bin.display()
        );
    }
    eprintln!(
        "switchboard-bench {:?}: generator pid {} on core {}, fd limit {fd_limit}, servers on core {}",
        args.scenario,
        std::process::id(),
        if args.no_pin { "any".into() } else { args.bench_core.to_string() },
        if args.no_pin { "any".into() } else { args.server_core.to_string() },
    );
    let mut table = Table::default();
    let mut clean = true;
    let seconds = args.seconds;
    let s = args.subscribers.unwrap_or(1_000);
    match args.scenario {
        Scenario::Fanout | Scenario::Smoke => {
            let (s, rate, seconds) = if args.scenario == Scenario::Smoke {
                (50, 100.0, 2.0)
            } else {
                (s, args.rate.unwrap_or(20.0), seconds)
            };
            let (phase, metrics) = scenarios::fanout(&env, single, s, rate, seconds).await?;
            clean &= phase.clean();
            table.fanout("fanout", single, &phase);
            table.notes.extend(metrics);
        }
        Scenario::Baseline => {
            let rate = args.rate.unwrap_or(20.0);
            let (base, _) = scenarios::fanout(&env, Kind::Baseline, s, rate, seconds).await?;
            table.fanout("fanout", Kind::Baseline, &base);
            let (ours, metrics) = scenarios::fanout(&env, sb, s, rate, seconds).await?;
            table.fanout("fanout", sb, &ours);
            table.notes.extend(metrics);
            clean &= ours.clean();
            table.ratio("deliveries/s per server core vs baseline", ours.per_core(), base.per_core(), "≥ 0.60");
        }
        Scenario::Peer => {
            let rate = args.rate.unwrap_or(20.0);
            let (ours, _) = scenarios::fanout(&env, sb, s, rate, seconds).await?;
            table.fanout("fanout", sb, &ours);
            let (node, _) = scenarios::fanout(&env, Kind::Node, s, rate, seconds).await?;
            table.fanout("fanout", Kind::Node, &node);
            clean &= ours.clean();
            let ours_idle = scenarios::idle(&env, sb, args.max_connections, args.step).await?;
            table.idle(sb, &ours_idle);
            let node_idle = scenarios::idle(&env, Kind::Node, args.max_connections, args.step).await?;
            table.idle(Kind::Node, &node_idle);
            table.ratio("deliveries/s per core vs Node peer", ours.per_core(), node.per_core(), "≥ 5");
            table.ratio(
                "memory per connection vs Node peer",
                ours_idle.bytes_per_connection,
                node_idle.bytes_per_connection,
                "≤ 0.25",
            );
        }
        Scenario::Idle => {
            let idle = scenarios::idle(&env, single, args.max_connections, args.step).await?;
            table.idle(single, &idle);
        }
        Scenario::Filter => {
            let filter = scenarios::filter(&env, single, args.others, args.rate.unwrap_or(50.0), seconds).await?;
            table.filter(single, &filter);
        }
        Scenario::Connect => {
            let connect = scenarios::connect(&env, single, seconds, args.max_connections).await?;
            table.connect(single, &connect);
        }
        Scenario::Setinventory => {
            let m = if args.saturated {
                let load = scenarios::Load::Saturated { depth: args.depth };
                scenarios::mutations(&env, single, load, seconds, args.connections, Duration::from_secs(1)).await?
            } else {
                scenarios::setinventory(&env, single, args.rate.unwrap_or(2000.0), seconds, args.connections).await?
            };
            table.mutations("setinventory", single, &m);
        }
        Scenario::Logcost => logcost(&env, &args, &mut table).await?,
        Scenario::Replay => clean &= replay(&env, sb, &args, &mut table).await?,
        Scenario::Storm => clean &= storm(&env, sb, &args, &mut table).await?,
        Scenario::Logidle => logidle(&env, sb, &args, &mut table).await?,
        Scenario::Resume => {
            logcost(&env, &args, &mut table).await?;
            clean &= replay(&env, sb, &args, &mut table).await?;
            clean &= storm(&env, sb, &args, &mut table).await?;
            logidle(&env, sb, &args, &mut table).await?;
        }
        Scenario::Churn => {
            let churn = scenarios::churn(&env, single, s, args.per_connection).await?;
            table.churn(single, &churn);
        }
        Scenario::Suite => clean &= suite(&env, sb, &args, &mut table).await?,
        Scenario::Sse => {
            let rate = args.rate.unwrap_or(20.0);
            env.sse.set(false);
            let (ws, _) = scenarios::fanout(&env, sb, s, rate, seconds).await?;
            table.fanout("fanout graphql-ws", sb, &ws);
            env.sse.set(true);
            let (sse, metrics) = scenarios::fanout(&env, sb, s, rate, seconds).await?;
            table.fanout("fanout SSE", sb, &sse);
            table.notes.extend(metrics);
            clean &= ws.clean() && sse.clean();
            table.ratio("deliveries/s per core, SSE vs graphql-ws", sse.per_core(), ws.per_core(), "≥ 0.8");
            let idle = scenarios::idle(&env, sb, args.max_connections, args.step).await?;
            table.idle(sb, &idle);
        }
        Scenario::Console => clean &= console(&env, sb, &args, &mut table).await?,
        Scenario::Cluster => clean &= cluster(&env, &args, &mut table).await?,
        Scenario::Writes => clean &= writes(&env, &args, &mut table).await?,
        Scenario::BaselineServer => unreachable!("handled in main"),
    }
    table.print();
    if args.check && !clean {
        eprintln!(
            "check failed: missing, duplicate or out-of-order deliveries, closed subscribers or failed publishes"
        );
        return Ok(false);
    }
    Ok(true)
}

/// `console`: fan-out per server core with the operator console open, against without it.
/// Alternating (without, with, without, with, …) so that a neighbour's load drifting over the
/// run weighs on both sides alike; the ratio is taken between the medians.
async fn console(env: &Env, sb: Kind, args: &Args, table: &mut Table) -> anyhow::Result<bool> {
    let s = args.subscribers.unwrap_or(1_000);
    let rate = args.rate.unwrap_or(20.0);
    let mut clean = true;
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..args.repeats.max(1) {
        for open in [false, true] {
            let (phase, metrics) = scenarios::fanout_watched(env, sb, s, rate, args.seconds, open).await?;
            clean &= phase.clean();
            table.fanout(if open { "fanout, console open" } else { "fanout" }, sb, &phase);
            table.notes.extend(metrics.into_iter().filter(|m| m.starts_with("console")));
            if let Some(per_core) = phase.per_core() {
                if open { with.push(per_core) } else { without.push(per_core) }
            }
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| v[v.len() / 2])
    };
    table.ratio("deliveries/s per server core, console open vs not (medians)", median(with), median(without), "≥ 0.95");
    Ok(clean)
}

/// Every scenario in one run, and the targets of issue 5 as measured ratios.
async fn suite(env: &Env, sb: Kind, args: &Args, table: &mut Table) -> anyhow::Result<bool> {
    let seconds = args.seconds;
    let node = args.node_dir.join("node_modules").is_dir();
    if !node {
        eprintln!(
            "no Node peer at {} (point --node-dir or SWITCHBOARD_NODE_PEER at the Node reference peer, \
             with `npm ci` run there): peer rows skipped",
            args.node_dir.display()
        );
    }
    let mut clean = true;
    let mut per_core = Vec::new();
    for (subs, rate) in [(1_000usize, args.rate.unwrap_or(20.0)), (10_000, args.rate.map_or(2.0, |r| r / 10.0))] {
        let (base, _) = scenarios::fanout(env, Kind::Baseline, subs, rate, seconds).await?;
        table.fanout("fanout", Kind::Baseline, &base);
        let (ours, metrics) = scenarios::fanout(env, sb, subs, rate, seconds).await?;
        table.fanout("fanout", sb, &ours);
        clean &= ours.clean();
        table.notes.extend(metrics.into_iter().map(|m| format!("S={subs}: {m}")));
        let peer = if node {
            let (p, _) = scenarios::fanout(env, Kind::Node, subs, rate, seconds).await?;
            table.fanout("fanout", Kind::Node, &p);
            Some(p)
        } else {
            None
        };
        per_core.push((subs, base, ours, peer));
    }
    for (subs, base, ours, peer) in &per_core {
        table.ratio(
            &format!("S={subs}: deliveries/s per core vs baseline"),
            ours.per_core(),
            base.per_core(),
            "≥ 0.60",
        );
        if let Some(peer) = peer {
            table.ratio(&format!("S={subs}: deliveries/s per core vs Node"), ours.per_core(), peer.per_core(), "≥ 5");
            // What the target can be at most on this machine: the stack's own ceiling against Node.
            table.ratio(&format!("S={subs}: (bound) baseline vs Node"), base.per_core(), peer.per_core(), "≥ 5");
        }
    }
    // p99 at half the ceiling rate with 10k subscribers: the ceiling is where one core is busy.
    let (_, _, ours10k, _) = &per_core[1];
    if let Some(us) = ours10k.cpu_us_per_delivery() {
        let ceiling = 1e6 / (us * 10_000.0);
        let half = (ceiling / 2.0).max(0.1);
        eprintln!("  S=10k ceiling ≈ {ceiling:.2} events/s ({us:.1} µs/delivery): latency run at {half:.2}/s");
        let half = (half * 100.0).round() / 100.0;
        let (phase, _) = scenarios::fanout(env, sb, 10_000, half, seconds.max(10.0)).await?;
        table.fanout("fanout ½ ceiling", sb, &phase);
        clean &= phase.clean();
        // The same rate against the baseline: the latency floor of one core writing 10k frames.
        let (floor, _) = scenarios::fanout(env, Kind::Baseline, 10_000, half, seconds.max(10.0)).await?;
        table.fanout("fanout ½ ceiling", Kind::Baseline, &floor);
        table.target("S=10k p99 at ½ ceiling (ms)", phase.latency.p99, "≤ 25", phase.latency.p99 <= 25.0);
        table.target(
            "S=10k p99 at ½ ceiling (ms), baseline: the floor",
            floor.latency.p99,
            "≤ 25",
            floor.latency.p99 <= 25.0,
        );
    }
    let idle = scenarios::idle(env, sb, args.max_connections, args.step).await?;
    table.idle(sb, &idle);
    if let Some(b) = idle.bytes_per_connection {
        table.target("RSS per idle subscribed connection (KiB)", b / 1024.0, "≤ 8", b <= 8.0 * 1024.0);
    }
    // The same on the baseline: what the stack itself needs per connection with these buffers.
    let base_idle = scenarios::idle(env, Kind::Baseline, args.max_connections, args.step).await?;
    table.idle(Kind::Baseline, &base_idle);
    if let Some(b) = base_idle.bytes_per_connection {
        table.target(
            "RSS per idle subscribed connection, baseline: the floor (KiB)",
            b / 1024.0,
            "≤ 8",
            b <= 8.0 * 1024.0,
        );
    }
    if node {
        let node_idle = scenarios::idle(env, Kind::Node, args.max_connections, args.step).await?;
        table.idle(Kind::Node, &node_idle);
        table.ratio(
            "memory per connection vs Node",
            idle.bytes_per_connection,
            node_idle.bytes_per_connection,
            "≤ 0.25",
        );
    }
    let filter = scenarios::filter(env, sb, args.others, 50.0, seconds).await?;
    table.filter(sb, &filter);
    if let Some(r) = filter.ratio() {
        table.target("filter: CPU/event with 10k others ÷ alone", r, "≤ 2", r <= 2.0);
    }
    let connect = scenarios::connect(env, sb, seconds, args.max_connections.min(15_000)).await?;
    table.connect(sb, &connect);
    if let Some(us) = connect.cpu_us_per_connection() {
        table.target("new subscribed connections/s per core", 1e6 / us, "≥ 3000", 1e6 / us >= 3000.0);
    }
    let m = scenarios::setinventory(env, sb, 2000.0, seconds, args.connections).await?;
    table.mutations("setinventory", sb, &m);
    table.target("setInventory/s (open loop at 2000/s)", m.per_s, "≥ 2000", m.per_s >= 2000.0 * 0.99 && m.errors == 0);
    table.target("setInventory p99 (ms)", m.latency.p99, "≤ 10", m.latency.p99 <= 10.0);
    Ok(clean)
}

/// `cluster`: the phases of [`cluster::run`] as rows, then the targets of issue 10.
async fn cluster(env: &Env, args: &Args, table: &mut Table) -> anyhow::Result<bool> {
    table.issue = Some("issue 10");
    let Some(redis_url) = args.redis_url.clone() else {
        anyhow::bail!("cluster needs --redis-url (bench/cluster.sh starts a private Redis and PostgreSQL)");
    };
    let opts = cluster::Opts {
        redis_url,
        database_url: args.database_url.clone(),
        pg_pid: args.pg_pid,
        nodes: args.nodes.last().copied().unwrap_or(3).max(2),
        rate: args.rate.unwrap_or(5000.0),
        seconds: args.seconds,
        subscribers: args.per_node,
        connections: args.connections,
        depth: args.depth,
        fanout_subscribers: args.subscribers.unwrap_or(1_000),
        fanout_rate: 20.0,
        replay_rates: vec![1_000.0, 5_000.0, 20_000.0],
        pin_nodes: args.pin_nodes,
    };
    let r = cluster::run(env, &opts).await?;
    let sb = Kind::Switchboard;
    table.fanout("fanout, no Redis", sb, &r.fanout_without);
    table.fanout("fanout, with Redis", sb, &r.fanout_with);
    let busy = |cpu: &cluster::Cpu, wall: f64| {
        let mut parts: Vec<String> = cpu.nodes.iter().map(|c| format!("{:.0}%", c / wall * 100.0)).collect();
        parts.push(format!("pg {}", pct(cpu.store.map(|c| c / wall))));
        parts.push(format!("redis {}", pct(cpu.redis.map(|c| c / wall))));
        parts.join(" ")
    };
    let per = |cpu: Option<f64>, n: u64| cpu.map(|c| c * 1e6 / n.max(1) as f64);
    let s = &r.saturated;
    let node_cpu: f64 = s.cpu.nodes.iter().sum();
    table.rows.push([
        "cluster: most mutations/s".into(),
        format!("{} nodes, {}", opts.nodes, r.store),
        format!("{} publishers ({} per node) × {} in flight, n={}", s.publishers, opts.connections, s.depth, s.mutations),
        format!("{:.0} mut/s", s.per_s),
        format!(
            "{} µs/mut in nodes, {} in the store, {} in Redis",
            opt(per(Some(node_cpu), s.mutations), 0),
            opt(per(s.cpu.store, s.mutations), 0),
            opt(per(s.cpu.redis, s.mutations), 1)
        ),
        "-".into(),
        format!("{:.2}/{:.2}/{:.2}", s.publish_latency.p50, s.publish_latency.p99, s.publish_latency.p999),
        format!("{}/{}/-/{}", s.checked.missing, s.checked.duplicate_or_late, s.checked.closed),
        busy(&s.cpu, s.wall),
        format!(
            "{} subscribers ({} per node) on every product: {} deliveries; {} errors{}; latency = publish's; hop under this load p50/p99/p99.9 {:.2}/{:.2}/{:.2} ms (node-2 first {}×)",
            s.checked.subscribers,
            opts.subscribers,
            s.checked.deliveries,
            s.errors,
            s.first_error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default(),
            s.hop.p50,
            s.hop.p99,
            s.hop.p999,
            s.remote_first
        ),
    ]);
    let h = &r.hop;
    table.rows.push([
        "cluster: cross-node hop".into(),
        format!("{} nodes, {}", opts.nodes, r.store),
        format!(
            "R={}/s on node-1 (asked {}; alone it sustains {:.0}/s), {} conns, n={}; {} subscribers on node-1 and on node-2",
            h.rate, h.asked_rate, h.capacity, opts.connections, h.mutations, opts.subscribers
        ),
        format!("{:.0} mut/s", h.mutations as f64 / h.wall),
        format!(
            "{} / {} / {} µs/event on node-1 / 2 / 3 (above idle)",
            opt(r.node_us_per_event(0), 1),
            opt(r.node_us_per_event(1), 1),
            opt(r.node_us_per_event(2), 1)
        ),
        "-".into(),
        format!("{:.3}/{:.3}/{:.3}", h.hop.p50, h.hop.p99, h.hop.p999),
        format!("{}/{}/-/{}", h.checked.missing, h.checked.duplicate_or_late, h.checked.closed),
        busy(&h.cpu, h.wall),
        format!(
            "latency = node-2's first arrival − node-1's (max {:.1} ms; node-2 first {}×); from the scheduled publish: node-1 {:.2}/{:.2}, node-2 {:.2}/{:.2} ms p50/p99; publish p99 {:.2} ms; {} errors",
            h.hop.max, h.remote_first, h.local.p50, h.local.p99, h.remote.p50, h.remote.p99, h.publish_latency.p99, h.errors
        ),
    ]);
    for u in &r.unwatched {
        table.rows.push([
            format!("cluster: unwatched event, {:.0}/s", u.rate),
            format!("{} nodes, Redis", opts.nodes),
            format!("one event message PUBLISHed {} times over {:.1} s", u.sent, u.sending),
            format!("{:.0} msg/s", u.sent as f64 / u.sending),
            format!(
                "{} / {} / {} µs/event on node-1 / 2 / 3 (above idle)",
                opt(r.replayed_us_per_event(u, 0), 1),
                opt(r.replayed_us_per_event(u, 1), 1),
                opt(r.replayed_us_per_event(u, 2), 1)
            ),
            opt(r.replayed_us_per_event(u, 2).map(|us| 1e6 / us), 0) + " events/s",
            "-".into(),
            "-".into(),
            busy(&u.cpu, u.wall),
            format!(
                "each node decodes every copy and drops it as delivered already; Redis {} µs/publish; context switches/event on node-3 {}",
                opt(u.cpu.redis.map(|c| c * 1e6 / u.sent.max(1) as f64), 1),
                opt(r.replayed_switches_per_event(u, 2), 2)
            ),
        ]);
    }
    let background = r.background_commands_per_s();
    table.notes.push(format!(
        "idle {:.0} s: nodes {} CPU ms/s; Redis {:.1} commands/s ({} PUBLISH in all)",
        r.idle_seconds,
        r.idle.nodes.iter().map(|c| format!("{:.2}", c * 1e3 / r.idle_seconds)).collect::<Vec<_>>().join(" / "),
        background,
        r.idle_commands.publish
    ));
    table.notes.push(format!(
        "hop phase: context switches per event on node-1 / 2 / 3 (above idle): {} / {} / {}",
        opt(r.node_switches_per_event(0), 1),
        opt(r.node_switches_per_event(1), 1),
        opt(r.node_switches_per_event(2), 1)
    ));
    table.notes.push(format!(
        "hop phase: Redis ran {} commands ({} PUBLISH) for {} mutations over {:.1} s",
        h.commands.all, h.commands.publish, h.mutations, h.wall
    ));
    table.notes.push(format!(
        "most mutations/s: Redis ran {} commands ({} PUBLISH) for {} mutations over {:.1} s",
        s.commands.all, s.commands.publish, s.mutations, s.wall
    ));
    table.target("hop p50 (ms), at the rate above", h.hop.p50, "≤ 1", h.hop.p50 <= 1.0);
    table.target("hop p99 (ms), at the rate above", h.hop.p99, "≤ 5", h.hop.p99 <= 5.0);
    table.target("hop measured at 5k events/s", h.rate, "≥ 5000", h.rate >= 5000.0);
    table.target(
        "most mutations/s over the nodes, nothing lost or reordered",
        s.per_s,
        "≥ 20000",
        s.per_s >= 20_000.0 && s.checked.clean() && s.errors == 0,
    );
    let per_mutation = r.commands_per_mutation();
    table.target("Redis commands per mutation (less the idle rate)", per_mutation, "≤ 1", per_mutation <= 1.05);
    table.target(
        "Redis PUBLISH per mutation (less the idle rate)",
        r.publishes_per_mutation(),
        "≤ 1",
        r.publishes_per_mutation() <= 1.05,
    );
    table.ratio(
        "fan-out deliveries/s per core, with Redis ÷ without",
        r.fanout_with.per_core(),
        r.fanout_without.per_core(),
        "≥ 0.9",
    );
    if let Some(us) = r.node_us_per_event(2) {
        table.target("CPU µs per event a node does not watch (node-3, no clients)", us, "(as low as may be)", true);
    }
    Ok(r.fanout_with.clean() && r.fanout_without.clean() && s.checked.clean() && h.checked.clean())
}

/// `writes`: every run as a row, then the figures of issue 17 as ratios taken in this run.
async fn writes(env: &Env, args: &Args, table: &mut Table) -> anyhow::Result<bool> {
    table.issue = Some("issue 17");
    let node_counts = if args.nodes.is_empty() { vec![1] } else { args.nodes.clone() };
    if node_counts.iter().any(|&n| n > 1) && args.redis_url.is_none() {
        anyhow::bail!("writes with several nodes needs --redis-url (bench/cluster.sh starts Redis and PostgreSQL)");
    }
    let kinds: Vec<Kind> = match &args.baseline_bin {
        Some(bin) if bin.exists() => vec![Kind::Switchboard, Kind::Previous],
        Some(bin) => anyhow::bail!("--baseline-bin {} not found", bin.display()),
        None => vec![Kind::Switchboard],
    };
    let mut clean = true;
    let mut results: Vec<(Kind, usize, writes::Series)> = Vec::new();
    for repeat in 0..args.repeats.max(1) {
        for &nodes in &node_counts {
            let opts = writes::Opts {
                nodes,
                redis_url: args.redis_url.clone().filter(|_| nodes > 1),
                clients: args.clients.clone(),
                scale_clients: args.scale_clients,
                depth: args.depth,
                seconds: args.seconds,
                near: args.near,
                rate: args.rate,
                even_split: args.even_split,
                watchers: args.watchers,
                store_pid: args.pg_pid,
            };
            // Alternate which server goes first, so that drifting load weighs on both alike.
            let mut order = kinds.clone();
            if repeat % 2 == 1 {
                order.reverse();
            }
            for kind in order {
                let series = writes::series(env, kind, &opts).await?;
                for run in series.saturated.iter().chain(&series.near) {
                    table.writes(run);
                    clean &= run.errors == 0 && run.checked.as_ref().is_none_or(writes::Checked::clean);
                }
                results.push((kind, nodes, series));
            }
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| v[v.len() / 2])
    };
    let saturated = |kind: Kind, nodes: usize, f: &dyn Fn(&writes::Run) -> Option<f64>| {
        median(
            results
                .iter()
                .filter(|(k, n, _)| *k == kind && *n == nodes)
                .filter_map(|(_, _, s)| s.saturated.last().and_then(f))
                .collect(),
        )
    };
    let near = |kind: Kind, nodes: usize, f: &dyn Fn(&writes::Run) -> Option<f64>| {
        median(
            results
                .iter()
                .filter(|(k, n, _)| *k == kind && *n == nodes)
                .filter_map(|(_, _, s)| s.near.as_ref().and_then(f))
                .collect(),
        )
    };
    let ours = Kind::Switchboard;
    for &nodes in &node_counts {
        let at = format!("{nodes} node{}", if nodes > 1 { "s" } else { "" });
        let rate = saturated(ours, nodes, &|r| Some(r.per_s));
        if kinds.contains(&Kind::Previous) {
            table.ratio(
                &format!("{at}: saturated mutations/s vs the previous build (medians)"),
                rate,
                saturated(Kind::Previous, nodes, &|r| Some(r.per_s)),
                "≥ 5",
            );
        }
        if let Some(us) = saturated(ours, nodes, &|r| r.cpu_us_per_mutation()) {
            table.target(&format!("{at}: server CPU µs per mutation, saturated (median)"), us, "≤ 120", us <= 120.0);
        }
        if let Some(p99) = near(ours, nodes, &|r| Some(r.latency.p99)) {
            let asked = format!("{at}: p99 ms at {:.0} % of the saturated rate (median)", args.near * 100.0);
            table.target(&asked, p99, "≤ 20", p99 <= 20.0);
        }
        if let Some(commits) = saturated(ours, nodes, &|r| r.commits_per_mutation()) {
            table.target(&format!("{at}: commits per mutation, saturated (median)"), commits, "≤ 0.1", commits <= 0.1);
        }
        if let Some(ceiling) = args.ceiling.filter(|_| nodes > 1) {
            table.ratio(&format!("{at}: mutations/s vs pgbench one at a time"), rate, Some(ceiling), "≥ 3");
        }
        if nodes > 1 && node_counts.contains(&1) {
            table.ratio(
                &format!("{at} vs 1 node: saturated mutations/s"),
                rate,
                saturated(ours, 1, &|r| Some(r.per_s)),
                "≥ 1.5",
            );
        }
        if args.watchers > 0 {
            let checked: Vec<&writes::Checked> = results
                .iter()
                .filter(|(k, n, _)| *k == ours && *n == nodes)
                .flat_map(|(_, _, s)| s.saturated.iter().chain(&s.near))
                .filter_map(|r| r.checked.as_ref())
                .collect();
            let lost: u64 = checked.iter().map(|c| c.missing + c.reordered + c.closed).sum();
            table.target(
                &format!("{at}: events lost or out of order, subscribers closed, on every node"),
                lost as f64,
                "0",
                lost == 0,
            );
        }
    }
    Ok(clean)
}

/// `logcost`: rows for every run, then the ratios of issue 9 (with ÷ without).
async fn logcost(env: &Env, args: &Args, table: &mut Table) -> anyhow::Result<()> {
    table.issue = Some("issue 9");
    let costs = resume::logcost(env, args.seconds, args.connections, args.depth, args.near, args.repeats).await?;
    for cost in &costs {
        let sync = &cost.synchronous;
        for (kind, m) in &cost.saturated {
            table.mutations(&format!("logcost {sync} saturated"), *kind, m);
        }
        for (kind, m) in &cost.near {
            table.mutations(&format!("logcost {sync} {:.0}%", args.near * 100.0), *kind, m);
        }
    }
    for cost in &costs {
        let sync = &cost.synchronous;
        table.ratio(
            &format!("SQLITE_SYNCHRONOUS={sync}: saturated mutations/s, log ÷ no log (median)"),
            cost.capacity(Kind::Switchboard),
            cost.capacity(Kind::PreLog),
            "≥ 0.9",
        );
        table.ratio(
            &format!("SQLITE_SYNCHRONOUS={sync}: mutations/s per core saturated, log ÷ no log"),
            cost.saturated_per_core(Kind::Switchboard),
            cost.saturated_per_core(Kind::PreLog),
            "≥ 0.9",
        );
        table.ratio(
            &format!("SQLITE_SYNCHRONOUS={sync}: mutations/s per core at {:.0}/s, log ÷ no log", cost.near_rate),
            cost.near_per_core(Kind::Switchboard),
            cost.near_per_core(Kind::PreLog),
            "≥ 0.9",
        );
    }
    Ok(())
}

/// `replay`: a row per run, and the per-core figure of the slowest run against 50k events/s.
async fn replay(env: &Env, sb: Kind, args: &Args, table: &mut Table) -> anyhow::Result<bool> {
    table.issue = Some("issue 9");
    let runs = resume::replay(env, sb, &args.sizes, args.repeats).await?;
    for run in &runs {
        table.replay(sb, run);
    }
    let mut sizes: Vec<u64> = runs.iter().map(|r| r.events).collect();
    sizes.dedup();
    for n in sizes {
        let of_n: Vec<&resume::Replay> = runs.iter().filter(|r| r.events == n).collect();
        let mut per_core: Vec<f64> = of_n.iter().filter_map(|r| r.per_core()).collect();
        per_core.sort_by(f64::total_cmp);
        if let Some(&median) = per_core.get(per_core.len() / 2) {
            table.target(
                &format!("replay {n} events: events/s per core, one subscriber (median of {})", per_core.len()),
                median,
                "≥ 50000",
                median >= 50_000.0,
            );
        }
        let clean = of_n.iter().all(|r| r.clean());
        table.target(
            &format!("replay {n} events: all, in order, then the next live one"),
            f64::from(u8::from(clean)),
            "1",
            clean,
        );
    }
    Ok(runs.iter().all(resume::Replay::clean))
}

/// `storm`: a row per round and the figures of issue 9 for the resume rounds.
async fn storm(env: &Env, sb: Kind, args: &Args, table: &mut Table) -> anyhow::Result<bool> {
    table.issue = Some("issue 9");
    let concurrency = args.concurrency.unwrap_or(1_000);
    let rounds = resume::storm(
        env,
        sb,
        args.subscribers.unwrap_or(10_000),
        args.products,
        args.missed,
        concurrency,
        args.arrival,
        args.cursors,
    )
    .await?;
    for round in &rounds {
        table.storm(sb, round, concurrency);
    }
    let mut clean = true;
    for round in rounds.iter().filter(|r| r.mode != resume::Mode::Live) {
        let what = round.mode.label();
        table.target(
            &format!("{what}: p99 subscribe → last missed event (ms)"),
            round.resume.p99,
            "≤ 250",
            round.resume.p99 <= 250.0,
        );
        table.target(
            &format!("{what}: caught up in order, then the next live event (of {})", round.subscribers),
            round.live_next.min(round.done) as f64,
            &format!("{}", round.subscribers),
            round.clean(),
        );
        clean &= round.clean();
    }
    Ok(clean)
}

/// `logidle`: idle on the pre-log binary and on this one, and their ratio.
async fn logidle(env: &Env, sb: Kind, args: &Args, table: &mut Table) -> anyhow::Result<()> {
    table.issue = Some("issue 9");
    let before = scenarios::idle(env, Kind::PreLog, args.max_connections, args.step).await?;
    table.idle(Kind::PreLog, &before);
    let after = scenarios::idle(env, sb, args.max_connections, args.step).await?;
    table.idle(sb, &after);
    table.ratio(
        "RSS per idle subscribed connection, log ÷ no log",
        after.bytes_per_connection,
        before.bytes_per_connection,
        "≤ 1.0",
    );
    Ok(())
}

/// The one table every run prints: results, then targets, then notes.
#[derive(Default)]
struct Table {
    /// Whose targets the second table lists (default issue 5).
    issue: Option<&'static str>,
    rows: Vec<[String; 10]>,
    targets: Vec<[String; 4]>,
    notes: Vec<String>,
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.0}%", v * 100.0))
}

impl Table {
    fn fanout(&mut self, scenario: &str, kind: Kind, p: &Phase) {
        self.rows.push([
            scenario.into(),
            kind.label().into(),
            format!("S={} R={:.4}/s n={}", p.subscribers, p.rate, p.events).replace(".0000/", "/"),
            format!("{:.0} deliv/s", p.deliveries_per_s),
            format!("{} µs/deliv", opt(p.cpu_us_per_delivery(), 2)),
            format!("{} deliv/s", opt(p.per_core(), 0)),
            format!("{:.2}/{:.2}/{:.2}", p.latency.p50, p.latency.p99, p.latency.p999),
            format!("{}/{}/{}/{}", p.missing, p.duplicates, p.out_of_order, p.closed),
            format!("{}/{}", pct(p.server_busy()), pct(p.generator_busy())),
            {
                let mut note = format!(
                    "{} of {} deliveries; max {:.1} ms; publish p99 {:.2} ms",
                    p.deliveries, p.expected, p.latency.max, p.publish_latency.p99
                );
                if p.publish_errors > 0 {
                    note += &format!(
                        "; {} publish errors: {}",
                        p.publish_errors,
                        p.first_publish_error.as_deref().unwrap_or("")
                    );
                }
                if p.subscribe_errors > 0 {
                    note += &format!("; {} subscribe errors", p.subscribe_errors);
                }
                if !p.close_reasons.is_empty() {
                    note += &format!("; closed: {}", p.close_reasons);
                }
                note
            },
        ]);
    }

    fn idle(&mut self, kind: Kind, i: &Idle) {
        let last = i.samples.last().copied().unwrap_or((0, 0));
        self.rows.push([
            "idle".into(),
            kind.label().into(),
            format!("N={} step {}", i.opened, i.samples.get(1).map_or(0, |s| s.0)),
            format!("{} B/conn", opt(i.bytes_per_connection, 0)),
            "-".into(),
            "-".into(),
            "-".into(),
            format!("{} failed", i.failed),
            "-".into(),
            format!(
                "RSS {:.1} → {:.1} MiB; {} of {} live; samples {}",
                i.samples.first().map_or(0, |s| s.1) as f64 / 1048576.0,
                last.1 as f64 / 1048576.0,
                i.live,
                i.opened,
                i.samples
                    .iter()
                    .map(|(n, r)| format!("{n}:{:.1}", *r as f64 / 1048576.0))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        ]);
    }

    fn churn(&mut self, kind: Kind, c: &Churn) {
        let mib = |b: u64| b as f64 / 1048576.0;
        self.rows.push([
            "churn".into(),
            kind.label().into(),
            format!("{} conns × {} subs", c.connections, c.per_connection),
            format!("{} B/sub", opt(c.bytes_per_subscription(), 0)),
            "-".into(),
            "-".into(),
            "-".into(),
            format!("{} failed", c.failed),
            "-".into(),
            format!(
                "RSS before {:.1} MiB, peak {:.1}, after leave {:.1}, +10 s {:.1} ({:.0} % of the growth kept); {} subscriptions in {} groups",
                mib(c.rss_before),
                mib(c.rss_peak),
                mib(c.rss_after),
                mib(c.rss_after_settled),
                100.0 * c.kept(),
                c.subscriptions,
                c.groups
            ),
        ]);
    }

    fn filter(&mut self, kind: Kind, f: &Filter) {
        for (label, p) in [("filter alone", &f.alone), ("filter +others", &f.crowded)] {
            self.rows.push([
                label.into(),
                kind.label().into(),
                format!("others={} R={}/s n={}", if label == "filter alone" { 0 } else { f.others }, p.rate, p.events),
                format!("{:.0} deliv/s", p.deliveries_per_s),
                format!("{} µs/event", opt(p.cpu_us_per_event(), 1)),
                "-".into(),
                format!("{:.2}/{:.2}/{:.2}", p.latency.p50, p.latency.p99, p.latency.p999),
                format!("{}/{}/{}/{}", p.missing, p.duplicates, p.out_of_order, p.closed),
                format!("{}/{}", pct(p.server_busy()), pct(p.generator_busy())),
                if label == "filter alone" {
                    String::new()
                } else {
                    format!(
                        "ratio {} (net of idle {} µs/s: {})",
                        opt(f.ratio(), 2),
                        opt(f.idle_cpu.map(|c| c.as_secs_f64() * 1e6 / f.crowded.wall.as_secs_f64()), 0),
                        opt(f.net_ratio(), 2)
                    )
                },
            ]);
        }
    }

    fn connect(&mut self, kind: Kind, c: &Connect) {
        self.rows.push([
            "connect".into(),
            kind.label().into(),
            format!("{} conns, {} failed", c.connections, c.failed),
            format!("{:.0} conn/s", c.per_s),
            format!("{} µs/conn", opt(c.cpu_us_per_connection(), 1)),
            format!("{} conn/s", opt(c.cpu_us_per_connection().map(|us| 1e6 / us), 0)),
            format!("{:.2}/{:.2}/{:.2}", c.latency.p50, c.latency.p99, c.latency.p999),
            format!("{} of {} live", c.live, c.latency.count),
            format!(
                "{}/{}",
                pct(c.server_cpu.map(|d| d.as_secs_f64() / c.wall.as_secs_f64())),
                pct(c.generator_cpu.map(|d| d.as_secs_f64() / c.wall.as_secs_f64()))
            ),
            c.first_failure.clone().unwrap_or_default(),
        ]);
    }

    fn mutations(&mut self, scenario: &str, kind: Kind, m: &Mutations) {
        self.rows.push([
            scenario.into(),
            kind.label().into(),
            match m.depth {
                Some(depth) => format!("saturated: {} conns × {depth} in flight, n={}", m.connections, m.sent),
                None => format!("R={}/s over {} conns, n={}", m.rate, m.connections, m.sent),
            },
            format!("{:.0} mut/s", m.per_s),
            format!("{} µs/mut", opt(m.cpu_us_per_mutation(), 1)),
            format!("{} mut/s", opt(m.per_core(), 0)),
            format!("{:.2}/{:.2}/{:.2}", m.latency.p50, m.latency.p99, m.latency.p999),
            format!("{} errors", m.errors),
            format!("{}/-", pct(m.server_cpu.map(|c| c.as_secs_f64() / m.wall.as_secs_f64()))),
            {
                let mut note = m
                    .storage_per_mutation()
                    .map_or_else(String::new, |b| format!("{:.1} KB written to storage per mutation", b / 1e3));
                if let Some(e) = &m.first_error {
                    note += &format!("; {e}");
                }
                note
            },
        ]);
    }

    fn writes(&mut self, r: &writes::Run) {
        let label = match r.kind {
            Kind::Previous => "previous build",
            kind => kind.label(),
        };
        let checked = r
            .checked
            .as_ref()
            .map_or_else(|| "-".to_owned(), |c| format!("{}/{}/-/{}", c.missing, c.reordered, c.closed));
        let mut notes = format!(
            "{} commits/mut, {} statements/mut, {} round trips/mut, {} switches/mut, store {} µs/mut, {} errors",
            opt(r.commits_per_mutation(), 3),
            opt(r.statements_per_mutation(), 2),
            opt(r.round_trips_per_mutation(), 2),
            opt(r.switches_per_mutation(), 1),
            opt(r.store_us_per_mutation(), 0),
            r.errors
        );
        if let Some(busy) = r.machine_busy {
            notes += &format!("; machine {} busy", pct(Some(busy)));
        }
        if matches!(r.load, writes::Load::Open { .. }) {
            let (h, w) = (&r.latency_http, &r.latency_ws);
            notes +=
                &format!("; p50/p99 ms on HTTP {:.2}/{:.2}, on graphql-ws {:.2}/{:.2}", h.p50, h.p99, w.p50, w.p99);
        }
        if let Some(c) = &r.checked {
            notes += &format!("; {} subscribers got {} events", c.subscribers, c.events);
        }
        if let Some(e) = &r.first_error {
            notes += &format!("; {e}");
        }
        self.rows.push([
            format!("writes, {} node{}", r.nodes, if r.nodes > 1 { "s" } else { "" }),
            label.into(),
            match r.load {
                writes::Load::Saturated { depth } => {
                    format!("saturated: {} clients × {depth} in flight, n={}", r.clients, r.sent)
                }
                writes::Load::Open { rate, ws_share } => format!(
                    "open loop R={rate:.0}/s ({}), {} clients, n={}",
                    ws_share.map_or_else(|| "even".to_owned(), |s| format!("{:.0} % on ws", s * 100.0)),
                    r.clients,
                    r.sent
                ),
            },
            format!("{:.0} mut/s", r.per_s),
            format!("{} µs/mut", opt(r.cpu_us_per_mutation(), 1)),
            format!("{} mut/s", opt(r.cpu_us_per_mutation().map(|us| 1e6 / us), 0)),
            format!("{:.2}/{:.2}/{:.2}", r.latency.p50, r.latency.p99, r.latency.p999),
            checked,
            format!("{}/{}", pct(r.cpu.map(|c| c / r.wall / r.nodes as f64)), pct(r.generator_cpu.map(|c| c / r.wall))),
            notes,
        ]);
    }

    fn replay(&mut self, kind: Kind, r: &resume::Replay) {
        self.rows.push([
            "replay".into(),
            kind.label().into(),
            format!("N={} after one cursor", r.events),
            format!("{:.0} events/s", r.per_s()),
            format!("{} µs/event", opt(r.cpu_us_per_event(), 2)),
            format!("{} events/s", opt(r.per_core(), 0)),
            format!("first {:.1} / last {:.1}", r.first.as_secs_f64() * 1e3, r.all.as_secs_f64() * 1e3),
            format!(
                "{}/{}/{}/{}",
                r.events.saturating_sub(r.received - r.duplicates - r.out_of_order),
                r.duplicates,
                r.out_of_order,
                u8::from(r.error.is_some())
            ),
            format!(
                "{}/{}",
                pct(r.server_cpu.map(|c| c.as_secs_f64() / r.all.as_secs_f64())),
                pct(r.generator_cpu.map(|c| c.as_secs_f64() / r.all.as_secs_f64()))
            ),
            {
                let mut note = format!(
                    "{} of {} received; server RSS {:.1} → {:.1} MiB; log filled at {:.0}/s",
                    r.received,
                    r.events,
                    r.rss_before as f64 / 1048576.0,
                    r.rss_peak as f64 / 1048576.0,
                    r.fill_per_s
                );
                match r.live_next {
                    Some(true) => note += "; next live event next",
                    Some(false) => note += "; NEXT LIVE EVENT NOT NEXT",
                    None => {}
                }
                if let Some(e) = &r.error {
                    note += &format!("; {e}");
                }
                note
            },
        ]);
    }

    fn storm(&mut self, kind: Kind, r: &resume::StormRound, concurrency: usize) {
        self.rows.push([
            r.mode.label().into(),
            kind.label().into(),
            match r.mode {
                resume::Mode::Paced { per_s } => {
                    format!("S={} P={} missed={} arrival {per_s}/s", r.subscribers, r.products, r.missed)
                }
                _ if r.cursors > r.products => format!(
                    "S={} P={} missed≥{} cursors={} conc={concurrency}",
                    r.subscribers, r.products, r.missed, r.cursors
                ),
                _ => format!("S={} P={} missed={} conc={concurrency}", r.subscribers, r.products, r.missed),
            },
            format!("{:.0} subs/s", r.done as f64 / r.total.as_secs_f64().max(1e-9)),
            format!("{} µs/sub", opt(r.cpu_us_per_subscriber(), 0)),
            format!("{} subs/s", opt(r.cpu_us_per_subscriber().map(|us| 1e6 / us), 0)),
            if r.mode == resume::Mode::Live {
                format!("first {:.1}/{:.1}/{:.1}", r.first.p50, r.first.p99, r.first.max)
            } else {
                format!("{:.1}/{:.1}/{:.1}", r.resume.p50, r.resume.p99, r.resume.p999)
            },
            format!("{}/{}/{}/{}", r.missing, r.duplicates, r.out_of_order, r.closed),
            format!(
                "{}/{}",
                pct(r.server_cpu.map(|c| c.as_secs_f64() / r.wall.as_secs_f64())),
                pct(r.generator_cpu.map(|c| c.as_secs_f64() / r.wall.as_secs_f64()))
            ),
            {
                let mut note = format!(
                    "{} of {} caught up; max {:.1} ms; total {:.0} ms; first event p50/p99 {:.1}/{:.1} ms; connect+init p50/p99/max {:.1}/{:.1}/{:.1} ms, {} acked in {:.0} ms ({} failed); next live event next: {}; {} events; shared executions {}",
                    r.done,
                    r.subscribers,
                    r.resume.max,
                    r.total.as_secs_f64() * 1e3,
                    r.first.p50,
                    r.first.p99,
                    r.connect.p50,
                    r.connect.p99,
                    r.connect.max,
                    r.acked,
                    r.connect_total.as_secs_f64() * 1e3,
                    r.failed,
                    r.live_next,
                    r.events,
                    opt(r.shared_executions, 0)
                );
                if r.errors + r.stray + r.completes > 0 {
                    note += &format!("; {} errors, {} stray, {} completes", r.errors, r.stray, r.completes);
                }
                if let Some(e) = r.first_error.as_ref().or(r.first_failure.as_ref()) {
                    note += &format!("; first: {e}");
                }
                if !r.close_reasons.is_empty() {
                    note += &format!("; closed: {}", r.close_reasons);
                }
                note
            },
        ]);
    }

    fn ratio(&mut self, what: &str, ours: Option<f64>, theirs: Option<f64>, target: &str) {
        let value = ours.zip(theirs).map(|(a, b)| a / b);
        let met = value.map(|v| {
            let (op, bound) = target.split_at(target.find(' ').unwrap_or(0));
            let bound: f64 = bound.trim().parse().unwrap_or(f64::NAN);
            if op.contains('≥') { v >= bound } else { v <= bound }
        });
        self.targets.push([
            what.into(),
            format!("{} ({} / {})", opt(value, 2), opt(ours, 0), opt(theirs, 0)),
            target.into(),
            met.map_or("?".into(), |m| if m { "met".into() } else { "MISSED".into() }),
        ]);
    }

    fn target(&mut self, what: &str, value: f64, target: &str, met: bool) {
        self.targets.push([
            what.into(),
            format!("{value:.2}"),
            target.into(),
            if met { "met".into() } else { "MISSED".into() },
        ]);
    }

    fn print(&self) {
        let header = [
            "scenario",
            "server",
            "params",
            "throughput",
            "server CPU",
            "per server core",
            "lat p50/p99/p99.9 ms",
            "miss/dup/ooo/closed",
            "busy srv/gen",
            "notes",
        ];
        print_rows(&header, &self.rows);
        if !self.targets.is_empty() {
            println!();
            let title = format!("target ({})", self.issue.unwrap_or("issue 5"));
            print_rows(&[title.as_str(), "measured", "wanted", ""], &self.targets);
        }
        for note in &self.notes {
            println!("  {note}");
        }
    }
}

/// A Markdown table (pipes, padded), readable on a terminal and pasteable into BENCHMARKS.md.
fn print_rows<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count()))).collect();
        println!("| {} |", padded.join(" | "));
    };
    line(header.iter().map(|s| s.to_string()).collect());
    line(widths.iter().map(|w| "-".repeat(*w)).collect());
    for row in rows {
        line(row.to_vec());
    }
}
