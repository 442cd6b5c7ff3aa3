//! `switchboard-bench`: a light load generator for Switchboard (see BENCHMARKS.md).
//!
//! One thread (`current_thread` runtime) pinned to its own core, small socket buffers, source
//! addresses spread over 127.0.0.2–254, its own file-descriptor limit raised to the hard limit.
//! Every loop is bounded in count and time; traffic goes only to 127.0.0.0/8.

mod baseline;
mod client;
mod scenarios;
mod sys;
mod target;

use std::path::PathBuf;
use std::process::ExitCode;

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
    /// A short fanout (50 subscribers, 100/s, 2 s) for CI; fails on any missing delivery.
    Smoke,
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
    about = "Load generator for Switchboard: fanout, idle, filter, connect, baseline, peer, setinventory, suite, smoke"
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
    #[arg(long, short = 's', default_value_t = 1000)]
    subscribers: usize,
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
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Subscribers speak GraphQL over SSE (`POST /graphql/stream`) instead of graphql-ws.
    #[arg(long)]
    sse: bool,
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

fn default_binary() -> PathBuf {
    let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    PathBuf::from(dir).join("release/switchboard")
}

/// Runs the scenario, prints the table; `Ok(false)` when `--check` found a problem.
async fn run(args: Args, fd_limit: u64) -> anyhow::Result<bool> {
    let extra_env =
        args.server_env.iter().filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned()))).collect();
    let env = Env {
        settings: SpawnSettings {
            switchboard_bin: args.spawn.clone().unwrap_or_else(default_binary),
            node_dir: args.node_dir.clone(),
            jwt_secret: args.jwt_secret.clone(),
            database_url: args.database_url.clone(),
            server_core: (!args.no_pin).then_some(args.server_core),
            extra_env,
        },
        external: args.url.clone().map(|url| (url, args.http.clone(), args.pid)),
        token: args.token.clone().unwrap_or_else(|| client::token(&args.jwt_secret, "bench-staff", "staff")),
        concurrency: args.concurrency.max(1),
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
    let s = args.subscribers;
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
            let m =
                scenarios::setinventory(&env, single, args.rate.unwrap_or(2000.0), seconds, args.connections).await?;
            table.mutations(single, &m);
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
    table.mutations(sb, &m);
    table.target("setInventory/s (open loop at 2000/s)", m.per_s, "≥ 2000", m.per_s >= 2000.0 * 0.99 && m.errors == 0);
    table.target("setInventory p99 (ms)", m.latency.p99, "≤ 10", m.latency.p99 <= 10.0);
    Ok(clean)
}

/// The one table every run prints: results, then targets, then notes.
#[derive(Default)]
struct Table {
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

    fn mutations(&mut self, kind: Kind, m: &Mutations) {
        self.rows.push([
            "setinventory".into(),
            kind.label().into(),
            format!("R={}/s over {} conns, n={}", m.rate, m.connections, m.sent),
            format!("{:.0} mut/s", m.per_s),
            format!("{} µs/mut", opt(m.server_cpu.map(|c| c.as_secs_f64() * 1e6 / m.ok.max(1) as f64), 1)),
            format!("{} mut/s", opt(m.server_cpu.map(|c| m.ok as f64 / c.as_secs_f64().max(1e-9)), 0)),
            format!("{:.2}/{:.2}/{:.2}", m.latency.p50, m.latency.p99, m.latency.p999),
            format!("{} errors", m.errors),
            format!("{}/-", pct(m.server_cpu.map(|c| c.as_secs_f64() / m.wall.as_secs_f64()))),
            m.first_error.clone().unwrap_or_default(),
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
            print_rows(&["target (issue 5)", "measured", "wanted", ""], &self.targets);
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
