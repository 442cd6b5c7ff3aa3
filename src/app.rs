//! Building the application (store, broker, schema, router) and running it until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::trace::TraceLayer;

use crate::auth::{Keys, Role};
use crate::cluster::{self, Backplane};
use crate::commerce::Commerce;
use crate::commerce::demo;
use crate::config::Config;
use crate::connections::Connections;
use crate::connections::budget::{self, TrustedProxies};
use crate::console::pages::PagesState;
use crate::events::Broker;
use crate::events::log::EventLog;
use crate::graphql::documents::Documents;
use crate::graphql::fanout::Fanout;
use crate::graphql::guard::Limits;
use crate::graphql::operations::Runner;
use crate::graphql::{self, GraphqlState};
use crate::http::ops::OpsState;
use crate::http::origins::AllowedOrigins;
use crate::http::{body_limit, ops, origins};
use crate::rooms::{RoomSettings, Rooms, RoomsState};
use crate::store::Store;
use crate::{console, rooms, server, telemetry};

/// What the application is made of. Each module's routes are served with the part of it they
/// need ([`GraphqlState`], [`RoomsState`], [`PagesState`], [`OpsState`]); nothing outside this
/// file sees the whole, which tests read.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub keys: Arc<Keys>,
    pub commerce: Arc<Commerce>,
    /// Who is connected, and who may connect.
    pub connections: Connections,
    pub rooms: Rooms,
    pub graphql: GraphqlState,
    /// Shared subscriptions (one execution per event per audience).
    pub fanout: Fanout,
    /// Single-connection reservations of GraphQL over SSE.
    pub sse: graphql::sse::Reservations,
    /// Pre-filled into GraphiQL in `--demo` mode.
    pub graphiql_token: Option<String>,
    /// Cancelled at shutdown; every socket loop watches it (axum's graceful shutdown does not
    /// reach upgraded connections).
    pub shutdown: CancellationToken,
    /// Tracks socket tasks so that shutdown can wait for their close handshakes.
    pub tracker: TaskTracker,
    pub metrics: PrometheusHandle,
}

/// A built application: state ready, port bound.
pub struct Application {
    listener: TcpListener,
    state: AppState,
}

/// Sample tokens printed when no `JWT_SECRET` is configured.
pub struct SampleTokens(pub Vec<(Role, String, String)>);

impl Application {
    /// Opens the store, builds the schema and binds `config.bind_addr` (port 0 picks one).
    pub async fn build(config: Config, demo_data: bool) -> anyhow::Result<(Self, Option<SampleTokens>)> {
        let (secret, samples_needed) = match &config.jwt_secret {
            Some(secret) => (secret.clone().into_bytes(), false),
            None => {
                tracing::warn!("JWT_SECRET is not set: using a random key for this run only");
                (rand::random::<[u8; 32]>().to_vec(), true)
            }
        };
        let keys = Arc::new(Keys::new(&secret, config.jwt_issuer.clone(), config.jwt_audience.clone()));
        let node_id = config.node_id.clone().unwrap_or_else(cluster::default_node_id);
        let metrics = telemetry::metrics_handle(&node_id);
        let store = Store::open(&config.store_options()).await?;
        if demo_data {
            demo::seed(&store).await?;
        }
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let log = EventLog::open(store.clone(), config.log_settings()).await?;
        let broker = Broker::new();
        broker.start_after(log.head().await?);
        let connections = Connections::new(crate::connections::Limits::from_config(&config));
        connections.set_node(&node_id);
        let rooms = Rooms::new(RoomSettings::from_config(&config));
        let backplane = match &config.redis_url {
            Some(url) => {
                tracing::info!(node = %node_id, "joining the cluster through Redis");
                let backplane = Backplane::start(
                    url,
                    node_id.clone(),
                    log.clone(),
                    broker.clone(),
                    rooms.clone(),
                    connections.clone(),
                    &tracker,
                    shutdown.clone(),
                )
                .await?;
                Some(backplane)
            }
            None => None,
        };
        let commerce = Arc::new(Commerce::start(
            store,
            log,
            broker,
            backplane,
            config.writer_settings(),
            &tracker,
            shutdown.clone(),
        ));
        let schema = graphql::schema::build(&config, commerce.clone(), connections.clone(), rooms.clone());
        let samples = samples_needed.then(|| {
            SampleTokens(
                [Role::Customer, Role::Staff, Role::Admin]
                    .into_iter()
                    .map(|role| {
                        let sub = format!("{}-1", role.as_str());
                        let token = keys.sign(&sub, role, Some(&format!("Demo {}", role.as_str())), 86_400);
                        (role, sub, token)
                    })
                    .collect(),
            )
        });
        let graphiql_token = demo_data.then(|| keys.sign("staff-1", Role::Staff, Some("Demo staff"), 86_400));
        let listener = TcpListener::bind(config.bind_addr).await?;
        commerce.log().spawn_retention(&tracker, shutdown.clone());
        let fanout = Fanout::new(
            commerce.broker().clone(),
            commerce.log().clone(),
            config.subscriber_queue,
            tracker.clone(),
            shutdown.clone(),
        );
        let documents = Documents::new(Limits::from_config(&config));
        let runner = Runner::new(schema, documents, fanout.clone(), commerce.clone(), connections.clone(), &config);
        let config = Arc::new(config);
        let sse = graphql::sse::Reservations::new(
            runner.clone(),
            config.subscriber_queue,
            config.sse_reservation_ttl(),
            shutdown.clone(),
            tracker.clone(),
        );
        let graphql = GraphqlState::new(graphql::state::Parts {
            runner,
            keys: keys.clone(),
            config: config.clone(),
            connections: connections.clone(),
            sse: sse.clone(),
            graphiql_token: graphiql_token.clone(),
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
        });
        let state = AppState {
            config,
            keys,
            commerce,
            connections,
            rooms,
            graphql,
            fanout,
            sse,
            graphiql_token,
            shutdown,
            tracker,
            metrics,
        };
        Ok((Self { listener, state }, samples))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` is cancelled, then closes every socket and returns.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        run(self.listener, self.state, shutdown).await
    }
}

/// Every module's routes, each served with its own state, behind the layers every request
/// passes.
pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    let allowed_origins = AllowedOrigins::new(&state.config.allowed_origins);
    let rooms = RoomsState::new(rooms::state::Parts {
        keys: state.keys.clone(),
        config: state.config.clone(),
        connections: state.connections.clone(),
        rooms: state.rooms.clone(),
        store: state.commerce.store().clone(),
        log: state.commerce.log().clone(),
        broker: state.commerce.broker().clone(),
        shutdown: state.shutdown.clone(),
        tracker: state.tracker.clone(),
    });
    let pages = PagesState { keys: state.keys.clone(), demo_token: state.graphiql_token.clone() };
    let ops = OpsState { commerce: state.commerce.clone(), metrics: state.metrics.clone() };
    Router::new()
        .merge(graphql::router(state.graphql.clone()))
        .merge(rooms::router(rooms))
        .merge(console::pages::router(pages))
        .merge(ops::router(ops))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(max_body, body_limit::refuse_oversized))
        .layer(allowed_origins.cors_layer())
        // Outside CORS, so that a preflight from a foreign origin is refused, not answered.
        .layer(axum::middleware::from_fn_with_state(allowed_origins, origins::refuse_foreign))
        .layer(axum::middleware::from_fn_with_state(TrustedProxies::new(&state.config.trusted_proxies), budget::identify))
        // The path only, never the query string: tokens travel there (`?token=`, `?access_token=`).
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            tracing::debug_span!("request", method = %request.method(), path = %request.uri().path())
        }))
}

/// Serves `state` on `listener` until `shutdown` is cancelled. Then: stop accepting, let every
/// socket loop send its 1001 close and every HTTP request in flight finish, and wait for them at
/// most `config.shutdown_timeout`.
pub async fn run(listener: TcpListener, state: AppState, shutdown: CancellationToken) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!("listening on {addr}");
    let app_shutdown = state.shutdown.clone();
    let tracker = state.tracker.clone();
    let grace = state.config.shutdown_timeout();
    let commerce = state.commerce.clone();
    let settings = server::Settings {
        timeouts: server::Timeouts {
            header: state.config.http_header_timeout(),
            body: state.config.http_body_timeout(),
            idle: state.config.http_idle_timeout(),
        },
        max_header_bytes: state.config.http_max_header_bytes,
        grace,
    };
    // Sockets hear of shutdown through the state's token, HTTP connections through `shutdown`.
    let sockets_told = async {
        shutdown.cancelled().await;
        app_shutdown.cancel();
    };
    // Each HTTP connection drops its request after the grace period; this bound is a backstop.
    let server = async {
        let served = server::serve(listener, router(state), settings, shutdown.clone());
        let over = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace + Duration::from_secs(1)).await;
        };
        tokio::select! {
            () = served => {}
            () = over => tracing::warn!("shutdown timeout: HTTP connections still open"),
        }
    };
    tokio::join!(server, sockets_told);
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(remaining = tracker.len(), "shutdown timeout: dropping the sockets still open");
    }
    commerce.store().close().await;
    tracing::info!("stopped");
    Ok(())
}
