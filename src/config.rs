//! Every knob in one place: command-line flags, each backed by an environment variable of the same
//! meaning, with `.env` in the working directory loaded first (it never overrides the environment).
//!
//! The defaults here are the defaults everywhere: `.env.example` and the table in
//! `docs/operations.md` repeat them, and tests (`tests/cli.rs`) check that both name every
//! variable this struct reads, the table with the default given here.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::commerce::WriterSettings;
use crate::events::log::LogSettings;
use crate::store::{SqliteSynchronous, StoreOptions};

#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about = "A real-time GraphQL server for commerce apps")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub config: Config,

    /// Fill an empty store with sample products, orders and notifications.
    #[arg(long, env = "DEMO", global = true)]
    pub demo: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Print a JWT signed with the configured key.
    Token(TokenArgs),
    /// Print the GraphQL schema (SDL).
    Schema,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user id (`sub` claim).
    #[arg(long)]
    pub sub: String,
    #[arg(long, value_enum, default_value_t = RoleArg::Customer)]
    pub role: RoleArg,
    /// Display name (`name` claim).
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Customer,
    Staff,
    Admin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The server's configuration. Durations are given in milliseconds, as `docs/operations.md` says.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Listen address; port 0 picks a free port (the chosen address is logged).
    #[arg(long, env = "BIND_ADDR", default_value = "127.0.0.1:4000", global = true)]
    pub bind_addr: SocketAddr,

    /// The SQLite store, created and migrated on start; `sqlite::memory:` for a throw-away one.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://switchboard.db", global = true)]
    pub database_url: String,

    /// Connections in the store's pool (a SQLite file or PostgreSQL; an in-memory SQLite store
    /// always has one).
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 8, global = true)]
    pub database_max_connections: u32,

    /// Milliseconds a store statement may run (PostgreSQL ends it itself), and a request may wait
    /// for a pooled connection or a read; past it the request fails, and the connection is free.
    #[arg(long, env = "STORE_TIMEOUT", default_value_t = 5_000, global = true)]
    pub store_timeout: u64,

    /// SQLite file stores: `full` syncs the write-ahead log at every commit, so an acknowledged
    /// change survives a power loss; `normal` syncs at checkpoints only (faster; a change survives
    /// a crash of the process but not of the machine).
    #[arg(long, env = "SQLITE_SYNCHRONOUS", value_enum, default_value_t = SqliteSynchronous::Full, global = true)]
    pub sqlite_synchronous: SqliteSynchronous,

    /// The most changes the node's writer puts in one batch (one transaction, one flush to disk).
    #[arg(long, env = "WRITE_BATCH_MAX", default_value_t = 256, global = true)]
    pub write_batch_max: usize,

    /// Milliseconds, from a batch's start, during which it also takes changes that arrive while it
    /// runs (0: only the changes already waiting when it starts).
    #[arg(long, env = "WRITE_BATCH_WINDOW", default_value_t = 0, global = true)]
    pub write_batch_window: u64,

    /// Milliseconds a batch may hold its store connection, COMMIT included; past it every change
    /// of the batch fails (on PostgreSQL each statement is also stopped by the store then).
    #[arg(long, env = "WRITE_BATCH_TIMEOUT", default_value_t = 5_000, global = true)]
    pub write_batch_timeout: u64,

    /// HS256 signing key. Unset: a random key for this run only, and sample tokens are printed.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<String>,

    /// When set, tokens must carry this `iss`.
    #[arg(long, env = "JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,

    /// When set, tokens must carry this `aud`.
    #[arg(long, env = "JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,

    /// When set, events and presence travel through Redis so that several nodes act as one.
    #[arg(long, env = "REDIS_URL", global = true)]
    pub redis_url: Option<String>,

    /// This node's name in logs, metrics and Redis keys (default: the host name and a random
    /// suffix).
    #[arg(long, env = "NODE_ID", global = true)]
    pub node_id: Option<String>,

    /// Milliseconds between server pings on every WebSocket (0 turns pings off).
    #[arg(long, env = "WS_HEARTBEAT_INTERVAL", default_value_t = 30_000, global = true)]
    pub ws_heartbeat_interval: u64,

    /// Milliseconds without any sign of life (message, pong) before a socket is closed (0: never).
    #[arg(long, env = "WS_INACTIVE_TIMEOUT", default_value_t = 300_000, global = true)]
    pub ws_inactive_timeout: u64,

    /// Milliseconds a graphql-ws client has to send `connection_init` (then 4408).
    #[arg(long, env = "WS_INIT_TIMEOUT", default_value_t = 3_000, global = true)]
    pub ws_init_timeout: u64,

    /// Largest WebSocket message accepted, in bytes (larger ones close the socket with 1009).
    #[arg(long, env = "WS_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024, global = true)]
    pub ws_max_message_bytes: usize,

    /// Operations one graphql-ws connection (or SSE reservation) may run at once.
    #[arg(long, env = "WS_MAX_OPERATIONS", default_value_t = 100, global = true)]
    pub ws_max_operations: usize,

    /// Rooms one `/ws` connection may be in at once (then `error` BAD_REQUEST).
    #[arg(long, env = "WS_MAX_ROOMS", default_value_t = 50, global = true)]
    pub ws_max_rooms: usize,

    /// Members (distinct users) one room may have; a member's extra tabs always fit (then `error` FORBIDDEN).
    #[arg(long, env = "WS_ROOM_MAX_MEMBERS", default_value_t = 1_000, global = true)]
    pub ws_room_max_members: usize,

    /// Messages per second one `/ws` connection may send, on average (0: unlimited); the excess is
    /// answered with `error` RATE_LIMITED and otherwise ignored.
    #[arg(long, env = "WS_RATE_LIMIT", default_value_t = 100, global = true)]
    pub ws_rate_limit: u32,

    /// Messages one `/ws` connection may send in a burst above `WS_RATE_LIMIT`.
    #[arg(long, env = "WS_RATE_BURST", default_value_t = 200, global = true)]
    pub ws_rate_burst: u32,

    /// Milliseconds after the last `isTyping: true` at which the server stops the indicator itself.
    #[arg(long, env = "WS_TYPING_TIMEOUT", default_value_t = 3_000, global = true)]
    pub ws_typing_timeout: u64,

    /// Events queued for one subscriber before it counts as too slow and its socket is closed
    /// (1013, retryable) rather than skipped past.
    #[arg(long, env = "SUBSCRIBER_QUEUE", default_value_t = 256, global = true)]
    pub subscriber_queue: usize,

    /// Seconds the event log keeps events for resuming (pruned in the background; 0 keeps them
    /// forever).
    #[arg(long, env = "EVENT_RETENTION", default_value_t = 86_400, global = true)]
    pub event_retention: u64,

    /// The most events one resume may replay; a cursor further behind fails with CURSOR_EXPIRED.
    #[arg(long, env = "RESUME_MAX_EVENTS", default_value_t = 10_000, global = true)]
    pub resume_max_events: u64,

    /// Largest HTTP request body, in bytes (then 413).
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1024 * 1024, global = true)]
    pub max_body_bytes: usize,

    /// Milliseconds a client has, from connecting or from the first byte of its next request on a
    /// kept-alive connection, to send the request's headers (then the connection is closed; 0: no limit).
    #[arg(long, env = "HTTP_HEADER_TIMEOUT", default_value_t = 10_000, global = true)]
    pub http_header_timeout: u64,

    /// Milliseconds a client has, from the end of its headers, to send the whole request body
    /// (then the connection is closed; 0: no limit).
    #[arg(long, env = "HTTP_BODY_TIMEOUT", default_value_t = 30_000, global = true)]
    pub http_body_timeout: u64,

    /// Milliseconds a kept-alive connection may wait for its next request, and a response may wait
    /// for a client that reads none of it (then the connection is closed; 0: no limit).
    #[arg(long, env = "HTTP_IDLE_TIMEOUT", default_value_t = 75_000, global = true)]
    pub http_idle_timeout: u64,

    /// Largest request head (request line and headers), in bytes (then 431).
    #[arg(long, env = "HTTP_MAX_HEADER_BYTES", default_value_t = 32 * 1024, global = true)]
    pub http_max_header_bytes: usize,

    /// Comma-separated origins (`https://shop.example`) allowed to open WebSockets and make CORS
    /// requests; others get 403. Unset: any origin. Same-origin requests are always allowed.
    #[arg(long, env = "ALLOWED_ORIGINS", value_delimiter = ',', global = true)]
    pub allowed_origins: Vec<String>,

    /// Deepest selection nesting a query may have. The standard introspection query (GraphiQL,
    /// codegen) needs 15.
    #[arg(long, env = "QUERY_MAX_DEPTH", default_value_t = 16, global = true)]
    pub query_max_depth: usize,

    /// Highest complexity (fields, aliases included) a query may have.
    #[arg(long, env = "QUERY_MAX_COMPLEXITY", default_value_t = 500, global = true)]
    pub query_max_complexity: usize,

    /// Most directives on one field, fragment spread or inline fragment.
    #[arg(long, env = "QUERY_MAX_DIRECTIVES", default_value_t = 50, global = true)]
    pub query_max_directives: usize,

    /// Most fields a query may select once its fragments are expanded; every field counts,
    /// `__typename` and aliases too (the full introspection query selects 230). The
    /// rest of the expanded query (fragment spreads, arguments, directives) may hold four times
    /// as many parts. Checked before async-graphql validates or executes anything.
    #[arg(long, env = "QUERY_MAX_FIELDS", default_value_t = 1_000, global = true)]
    pub query_max_fields: usize,

    /// Deepest bracket nesting (`{`, `[`, `(`) in a query's text, checked before parsing.
    #[arg(long, env = "QUERY_MAX_NESTING", default_value_t = 64, global = true)]
    pub query_max_nesting: usize,

    /// Longest query text, in bytes.
    #[arg(long, env = "QUERY_MAX_BYTES", default_value_t = 32 * 1024, global = true)]
    pub query_max_bytes: usize,

    /// Milliseconds that shutdown waits for sockets and requests to finish.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value_t = 5_000, global = true)]
    pub shutdown_timeout: u64,

    /// `text` or `json` log lines (the filter itself is `RUST_LOG`, default `info`).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Open WebSockets (and event streams) one node serves at once; past it, upgrades are refused
    /// with 503 before they happen.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 50_000, global = true)]
    pub max_connections: usize,

    /// Connections one signed-in user may hold on one node, across channels; past it, `/ws`
    /// upgrades are refused with 429 and graphql-ws closes with 1013 right after `connection_init`.
    #[arg(long, env = "MAX_CONNECTIONS_PER_USER", default_value_t = 100, global = true)]
    pub max_connections_per_user: usize,

    /// Comma-separated addresses or networks (`10.0.0.0/8`, `127.0.0.1`) of the proxies in front of
    /// this server: for a request from one of them, the client is the address its
    /// `X-Forwarded-For` names (the last one that is not itself a trusted proxy). Unset: the
    /// client is always the peer, and `X-Forwarded-For` is ignored.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',', value_parser = crate::connections::budget::parse_network, global = true)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Connections (WebSockets, SSE streams, SSE reservations) without a signed-in user that one
    /// client address may hold on one node; past it, 429 before the upgrade or the stream.
    #[arg(long, env = "ANONYMOUS_CONNECTIONS_PER_ADDRESS", default_value_t = 100, global = true)]
    pub anonymous_connections_per_address: usize,

    /// The share of `MAX_CONNECTIONS`, in percent, that connections without a signed-in user may
    /// take together; the rest is kept for signed-in users (past it, anonymous ones get 503).
    #[arg(long, env = "ANONYMOUS_CONNECTION_SHARE", default_value_t = 75, value_parser = clap::value_parser!(u8).range(0..=100), global = true)]
    pub anonymous_connection_share: u8,

    /// GraphQL requests over HTTP without a token that one client address may have in flight at
    /// once; past it, 429.
    #[arg(long, env = "ANONYMOUS_REQUESTS_PER_ADDRESS", default_value_t = 32, global = true)]
    pub anonymous_requests_per_address: usize,

    /// Resumes (`after`, `Last-Event-ID`) without a signed-in user that one client address may
    /// have reading the event log at once; more wait their turn.
    #[arg(long, env = "ANONYMOUS_REPLAYS_PER_ADDRESS", default_value_t = 2, global = true)]
    pub anonymous_replays_per_address: usize,

    /// Operations one anonymous graphql-ws connection (or SSE reservation) may run at once
    /// (signed-in ones get `WS_MAX_OPERATIONS`).
    #[arg(long, env = "WS_MAX_OPERATIONS_ANONYMOUS", default_value_t = 10, global = true)]
    pub ws_max_operations_anonymous: usize,

    /// Milliseconds between keep-alive comments on every SSE stream (0 turns them off).
    #[arg(long, env = "SSE_KEEPALIVE_INTERVAL", default_value_t = 12_000, global = true)]
    pub sse_keepalive_interval: u64,

    /// Milliseconds a single-connection reservation waits for its stream, first and after a drop,
    /// with its operations running and their results kept for the stream that resumes it.
    #[arg(long, env = "SSE_RESERVATION_TTL", default_value_t = 30_000, global = true)]
    pub sse_reservation_ttl: u64,
}

impl Config {
    /// A configuration for tests and embedding: the defaults, a throw-away store, port 0.
    pub fn for_tests() -> Self {
        let cli = Cli::parse_from(["switchboard"]);
        Self {
            bind_addr: "127.0.0.1:0".parse().expect("valid address"),
            database_url: "sqlite::memory:".into(),
            jwt_secret: Some("test-secret".into()),
            redis_url: None,
            node_id: None,
            ..cli.config
        }
    }

    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            url: self.database_url.clone(),
            max_connections: self.database_max_connections,
            sqlite_synchronous: self.sqlite_synchronous,
            timeout: Duration::from_millis(self.store_timeout.max(1)),
        }
    }

    pub fn writer_settings(&self) -> WriterSettings {
        WriterSettings {
            max_changes: self.write_batch_max.max(1),
            window: Duration::from_millis(self.write_batch_window),
            timeout: Duration::from_millis(self.write_batch_timeout.max(1)),
        }
    }

    pub fn log_settings(&self) -> LogSettings {
        LogSettings {
            retention: (self.event_retention > 0).then(|| Duration::from_secs(self.event_retention)),
            max_replay: self.resume_max_events,
            anonymous_replays_per_address: self.anonymous_replays_per_address,
        }
    }

    /// The most operations one graphql-ws connection or SSE reservation may run at once.
    pub fn max_operations(&self, signed_in: bool) -> usize {
        if signed_in { self.ws_max_operations } else { self.ws_max_operations_anonymous.min(self.ws_max_operations) }
    }

    pub fn heartbeat_interval(&self) -> Option<Duration> {
        (self.ws_heartbeat_interval > 0).then(|| Duration::from_millis(self.ws_heartbeat_interval))
    }

    pub fn inactive_timeout(&self) -> Option<Duration> {
        (self.ws_inactive_timeout > 0).then(|| Duration::from_millis(self.ws_inactive_timeout))
    }

    pub fn init_timeout(&self) -> Duration {
        Duration::from_millis(self.ws_init_timeout)
    }

    pub fn typing_timeout(&self) -> Duration {
        Duration::from_millis(self.ws_typing_timeout)
    }

    pub fn sse_keepalive_interval(&self) -> Option<Duration> {
        (self.sse_keepalive_interval > 0).then(|| Duration::from_millis(self.sse_keepalive_interval))
    }

    pub fn sse_reservation_ttl(&self) -> Duration {
        Duration::from_millis(self.sse_reservation_ttl)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout)
    }

    pub fn http_header_timeout(&self) -> Option<Duration> {
        (self.http_header_timeout > 0).then(|| Duration::from_millis(self.http_header_timeout))
    }

    pub fn http_body_timeout(&self) -> Option<Duration> {
        (self.http_body_timeout > 0).then(|| Duration::from_millis(self.http_body_timeout))
    }

    pub fn http_idle_timeout(&self) -> Option<Duration> {
        (self.http_idle_timeout > 0).then(|| Duration::from_millis(self.http_idle_timeout))
    }
}
