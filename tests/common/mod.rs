//! The black-box test harness: a real server on port 0 with a throw-away SQLite store, and
//! clients that speak its protocols over real sockets.
//!
//! ```ignore
//! let app = spawn_app().await;
//! let mut ws = app.graphql_ws(Some(&app.token("u1", Role::Staff))).await;
//! ```
#![allow(dead_code)]

pub mod gate;
pub mod raw;
pub mod redis;
pub mod sse;

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard::app::{AppState, Application};
use switchboard::auth::Role;
use switchboard::config::Config;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

#[allow(unused_imports)]
pub use switchboard::auth::Role as TestRole;

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a test waits to be sure that something does *not* happen.
pub const QUIET: Duration = Duration::from_millis(300);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct TestApp {
    pub addr: SocketAddr,
    pub state: AppState,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A server with `adjust` applied to the test configuration.
///
/// With `SWITCHBOARD_TEST_POSTGRES` set to a PostgreSQL URL (scripts/test.sh starts a private
/// server and sets it), every app gets a fresh schema of that database instead of an in-memory
/// SQLite store, so the same black-box tests run against both backends.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = Config::for_tests();
    if let Some(url) = std::env::var("SWITCHBOARD_TEST_POSTGRES").ok().filter(|u| !u.is_empty()) {
        config.database_url = fresh_postgres_schema(&url).await;
    }
    adjust(&mut config);
    let (app, _) = Application::build(config, false).await.expect("app builds");
    let addr = app.local_addr();
    let state = app.state().clone();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run(shutdown.clone()));
    TestApp { addr, state, http: reqwest::Client::new(), shutdown, server: Some(server) }
}

/// A server in `--demo` mode (sample data, the demo pages and their tokens).
pub async fn spawn_demo_app() -> TestApp {
    let (app, _) = Application::build(Config::for_tests(), true).await.expect("app builds");
    let addr = app.local_addr();
    let state = app.state().clone();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run(shutdown.clone()));
    TestApp { addr, state, http: reqwest::Client::new(), shutdown, server: Some(server) }
}

/// A store that several apps (nodes) can share: a fresh PostgreSQL schema when the suite runs
/// against PostgreSQL, else a SQLite file in a fresh temporary directory.
pub async fn shared_store_url() -> String {
    match std::env::var("SWITCHBOARD_TEST_POSTGRES").ok().filter(|u| !u.is_empty()) {
        Some(url) => fresh_postgres_schema(&url).await,
        None => {
            let dir = std::env::temp_dir().join(format!("switchboard-shared-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            format!("sqlite://{}", dir.join("store.db").display())
        }
    }
}

/// Creates an empty schema in the PostgreSQL database at `url`; returns a URL whose connections
/// use it.
async fn fresh_postgres_schema(url: &str) -> String {
    use sqlx::Connection;
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(url).await.expect("the test PostgreSQL server answers");
    sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&mut conn).await.expect("schema created");
    conn.close().await.ok();
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-c%20search_path%3D{schema}")
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    pub fn token(&self, sub: &str, role: Role) -> String {
        self.state.keys.sign(sub, role, Some(&format!("User {sub}")), 3600)
    }

    /// POST /graphql; returns the status and the JSON body.
    pub async fn post(&self, token: Option<&str>, query: &str, variables: Value) -> (u16, Value) {
        let mut request = self.http.post(self.url("/graphql")).json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    /// POST /graphql expecting 200; returns the body.
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let (status, body) = self.post(token, query, variables).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// A staff member's token, for setting things up.
    pub fn staff(&self) -> String {
        self.token("staff-1", Role::Staff)
    }

    pub async fn create_product(&self, sku: &str, quantity: i32) -> String {
        let body = self
            .gql(
                Some(&self.staff()),
                "mutation($sku: String!, $q: Int!) { createProduct(input: {sku: $sku, name: $sku, price: \"9.99\", quantity: $q}) { id } }",
                json!({ "sku": sku, "q": quantity }),
            )
            .await;
        body["data"]["createProduct"]["id"].as_str().unwrap_or_else(|| panic!("{body}")).to_owned()
    }

    /// `setInventory` as staff; fails the test on any error.
    pub async fn set_stock(&self, product: &str, quantity: impl Into<i64>) {
        let q = "mutation($p: ID!, $q: Int!) { setInventory(productId: $p, quantity: $q) { id } }";
        let body = self.gql(Some(&self.staff()), q, json!({ "p": product, "q": quantity.into() })).await;
        assert!(body["errors"].is_null(), "{body}");
    }

    /// `sendNotification` (type `info`, message `m`) to `user` as staff; fails the test on any error.
    pub async fn notify(&self, user: &str, title: &str) {
        let q = "mutation($u: ID!, $t: String!) { sendNotification(input: {userId: $u, type: \"info\", title: $t, message: \"m\"}) { id } }";
        let body = self.gql(Some(&self.staff()), q, json!({ "u": user, "t": title })).await;
        assert!(body["errors"].is_null(), "{body}");
    }

    pub async fn create_order(&self, customer: &str) -> String {
        let body = self
            .gql(
                Some(&self.staff()),
                "mutation($c: ID!) { createOrder(input: {customerId: $c, total: \"12.50\"}) { id } }",
                json!({ "c": customer }),
            )
            .await;
        body["data"]["createOrder"]["id"].as_str().unwrap_or_else(|| panic!("{body}")).to_owned()
    }

    /// A WebSocket to `path` offering `protocols`, with extra headers.
    pub async fn ws_raw(
        &self,
        path: &str,
        protocols: &[&str],
        headers: &[(&str, &str)],
    ) -> Result<Ws, tungstenite::Error> {
        tokio_tungstenite::connect_async(self.ws_request(path, protocols, headers)).await.map(|(ws, _)| ws)
    }

    /// [`Self::ws_raw`] from the source address `source` (any of 127.0.0.0/8): the server tells
    /// clients apart by address, so a test can be several clients at once.
    pub async fn ws_from(
        &self,
        source: &str,
        path: &str,
        protocols: &[&str],
        headers: &[(&str, &str)],
    ) -> Result<Ws, tungstenite::Error> {
        let request = self.ws_request(path, protocols, headers);
        let stream = self.tcp_from(source).await;
        tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await.map(|(ws, _)| ws)
    }

    fn ws_request(
        &self,
        path: &str,
        protocols: &[&str],
        headers: &[(&str, &str)],
    ) -> tungstenite::handshake::client::Request {
        let mut request = self.ws_url(path).into_client_request().expect("valid request");
        if !protocols.is_empty() {
            request
                .headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_str(&protocols.join(", ")).unwrap());
        }
        for (name, value) in headers {
            let name = tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("header name");
            request.headers_mut().insert(name, HeaderValue::from_str(value).unwrap());
        }
        request
    }

    /// A TCP connection to the server from the source address `source` (any of 127.0.0.0/8).
    pub async fn tcp_from(&self, source: &str) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::new(source.parse().expect("an address"), 0)).expect("bind");
        socket.connect(self.addr).await.expect("TCP connect")
    }

    /// An HTTP client whose connections come from the source address `source`.
    pub fn http_from(&self, source: &str) -> reqwest::Client {
        let source: std::net::IpAddr = source.parse().expect("an address");
        reqwest::Client::builder().local_address(source).build().expect("client")
    }

    /// A graphql-transport-ws connection, initialised (with `token` in the payload) and acknowledged.
    pub async fn graphql_ws(&self, token: Option<&str>) -> GqlWs {
        let mut ws = self.graphql_ws_unacked().await;
        let payload = token.map_or(json!({}), |t| json!({ "authorization": format!("Bearer {t}") }));
        ws.send(json!({ "type": "connection_init", "payload": payload })).await;
        assert_eq!(ws.recv().await["type"], "connection_ack");
        ws
    }

    /// A graphql-transport-ws connection before `connection_init`.
    pub async fn graphql_ws_unacked(&self) -> GqlWs {
        GqlWs(self.ws_raw("/graphql", &["graphql-transport-ws"], &[]).await.expect("upgrade"))
    }

    /// A raw-frame WebSocket to `path` (see [`raw`]), offering `protocol` when given.
    pub async fn raw_ws(&self, path: &str, protocol: Option<&str>) -> raw::RawWs {
        raw::RawWs::connect(self.addr, path, protocol).await
    }

    /// A room-channel connection at `/ws?token=`, past its `connection_established`.
    pub async fn rooms_ws(&self, token: &str) -> GqlWs {
        let mut ws = GqlWs(self.ws_raw(&format!("/ws?token={token}"), &[], &[]).await.expect("upgrade"));
        let welcome = ws.expect("connection_established").await;
        assert!(welcome["clientId"].is_string(), "{welcome}");
        ws
    }

    /// A token for `role` signed with the test key whose `exp` is `exp_offset` seconds from now
    /// (negative: in the past; the server allows 30 s of leeway).
    pub fn token_expiring(&self, sub: &str, role: Role, exp_offset: i64) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({ "sub": sub, "role": role.as_str(), "exp": chrono::Utc::now().timestamp() + exp_offset }),
            &jsonwebtoken::EncodingKey::from_secret(b"test-secret"),
        )
        .expect("token signs")
    }

    /// The sum of a metric's samples whose labels include every one of `labels` (`name="value"`).
    pub async fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter(|line| line.split(['{', ' ']).next() == Some(name))
            .filter(|line| labels.iter().all(|l| line.contains(l)))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server ran");
        }
    }

    pub fn cancel(&self) {
        self.shutdown.cancel();
    }

    pub async fn metrics(&self) -> String {
        self.http.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A JSON-speaking WebSocket client.
pub struct GqlWs(pub Ws);

/// What the next thing on a socket was.
#[derive(Debug)]
pub enum Next {
    Json(Value),
    Closed(Option<(u16, String)>),
    Silent,
}

impl GqlWs {
    pub async fn send(&mut self, message: Value) {
        self.0.send(Message::Text(message.to_string().into())).await.expect("send");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.0.send(Message::Text(text.into())).await.expect("send");
    }

    /// The next JSON message within `wait`, skipping pings and pongs.
    pub async fn next_within(&mut self, wait: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.0.next()).await {
                Err(_) => return Next::Silent,
                Ok(None) => return Next::Closed(None),
                Ok(Some(Err(_))) => return Next::Closed(None),
                Ok(Some(Ok(Message::Text(text)))) => {
                    return Next::Json(serde_json::from_str(&text).expect("server sends JSON"));
                }
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Next::Closed(
                        frame.map(|CloseFrame { code, reason }| (u16::from(code), reason.to_string())),
                    );
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// The next JSON message; panics on a close or silence.
    pub async fn recv(&mut self) -> Value {
        match self.next_within(WAIT).await {
            Next::Json(value) => value,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Waits for the close frame, skipping messages; returns its code and reason.
    pub async fn closed(&mut self) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match self.next_within(deadline.saturating_duration_since(tokio::time::Instant::now())).await {
                Next::Closed(Some(frame)) => return frame,
                Next::Json(_) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }

    /// Asserts that nothing (but pings) arrives for a while.
    pub async fn silent(&mut self) {
        match self.next_within(QUIET).await {
            Next::Silent => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }

    /// The next message, which must be of type `kind`; returns its payload.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let message = self.recv().await;
        assert_eq!(message["type"], kind, "{message}");
        assert!(message["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{message}");
        message["payload"].clone()
    }

    /// Room channel: joins `room_id` and returns the member list of its `room_joined`.
    pub async fn join(&mut self, room_id: &str) -> Vec<Value> {
        self.send(json!({ "type": "join_room", "payload": { "roomId": room_id } })).await;
        let joined = self.expect("room_joined").await;
        assert_eq!(joined["roomId"], room_id);
        joined["members"].as_array().expect("members").clone()
    }

    /// Room channel: the `error` answering the last message; returns its code.
    pub async fn expect_error(&mut self) -> String {
        let payload = self.expect("error").await;
        assert!(payload["message"].as_str().is_some_and(|m| !m.is_empty()), "{payload}");
        payload["code"].as_str().expect("code").to_owned()
    }

    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } }))
            .await;
    }

    /// The next message, which must be `next` for `id`; returns its payload's `data`.
    pub async fn next_data(&mut self, id: &str) -> Value {
        let message = self.recv().await;
        assert_eq!((message["type"].as_str(), message["id"].as_str()), (Some("next"), Some(id)), "{message}");
        assert!(message["payload"]["errors"].is_null(), "{message}");
        message["payload"]["data"].clone()
    }

    /// The next message, which must be `error` for `id`; returns the first error's code.
    pub async fn error_code(&mut self, id: &str) -> String {
        let message = self.recv().await;
        assert_eq!((message["type"].as_str(), message["id"].as_str()), (Some("error"), Some(id)), "{message}");
        message["payload"][0]["extensions"]["code"].as_str().unwrap_or_default().to_owned()
    }

    /// Subscribes and waits until the subscription is live on the server, so that an event
    /// published next is certain to reach it: `ping` is answered only after every earlier
    /// message on this socket was handled, and a subscription is registered while handling it.
    pub async fn subscribe_live(&mut self, app: &TestApp, id: &str, query: &str, variables: Value) {
        let before = app.state.connections.subscription_count();
        self.subscribe(id, query, variables).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        while app.state.connections.subscription_count() <= before {
            assert!(tokio::time::Instant::now() < deadline, "subscription {id} never went live");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The first error's `extensions.code` in a GraphQL response body.
pub fn error_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {body}"))
}
