//! A stranger cannot stop it: for every entry point, an anonymous flood of what it can make the
//! server hold, asserting the bound, and a signed-in client beside the flood served as usual.
//!
//! Clients are told apart by address: the flood comes from other loopback addresses
//! (127.0.0.2 and up) than the signed-in client (127.0.0.1). A new entry point comes with its
//! test here (docs/operations.md, "What a stranger can hold", lists them). The server runs on two
//! worker threads, as on a small production machine: a flood's work shares them with everyone.

mod common;

use std::time::{Duration, Instant};

use common::sse::Stream;
use common::{GqlWs, Next, TestApp, TestRole, WAIT, error_code, spawn_app_with};
use reqwest::Method;
use serde_json::{Value, json};

/// What "served as usual" allows: far above a loaded test machine's latency, far below the
/// freezes these tests guard against (tens of seconds).
const NORMAL: Duration = Duration::from_secs(2);

const STOCK: &str = "subscription($p: ID, $after: String) { inventoryChanged(productId: $p, after: $after) { productId newQuantity cursor } }";

/// A signed-in staff member beside the flood: subscribes over graphql-ws, changes the stock of
/// `product` and receives the change, each step within [`NORMAL`].
async fn staff_is_served(app: &TestApp, product: &str, quantity: i64) {
    let staff = app.staff();
    let started = Instant::now();
    let mut ws = tokio::time::timeout(NORMAL, app.graphql_ws(Some(&staff))).await.expect("staff connects");
    // `pong` answers after every earlier message was handled: the subscription is live then (the
    // subscription count would not tell, with a flood's coming and going beside it).
    ws.subscribe("staff", STOCK, json!({ "p": product })).await;
    ws.send(json!({ "type": "ping" })).await;
    let pong = tokio::time::timeout(NORMAL, ws.recv()).await.expect("the subscription went live in time");
    assert_eq!(pong["type"], "pong", "{pong}");
    let q = "mutation($p: ID!, $q: Int!) { setInventory(productId: $p, quantity: $q) { id } }";
    let body = tokio::time::timeout(NORMAL, app.gql(Some(&staff), q, json!({ "p": product, "q": quantity })))
        .await
        .expect("the staff mutation was answered in time");
    assert!(body["errors"].is_null(), "{body}");
    let data = tokio::time::timeout(NORMAL, ws.next_data("staff")).await.expect("the event arrived in time");
    assert_eq!(data["inventoryChanged"]["newQuantity"], quantity);
    assert!(started.elapsed() < NORMAL * 3, "served, but slowly: {:?}", started.elapsed());
}

/// `n` stock changes of `product`, made in-process (quicker than `n` HTTP requests).
async fn stock_changes(app: &TestApp, product: &str, n: i32) {
    let id = product.parse().expect("a product id");
    for quantity in 1..=n {
        app.state.commerce.set_inventory(id, quantity).await.expect("stored");
    }
}

/// `/ready` answers 200, within a second.
async fn ready_at_once(app: &TestApp) {
    let started = Instant::now();
    let response = app.http.get(app.url("/ready")).timeout(Duration::from_secs(5)).send().await.expect("answered");
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    assert!(elapsed < Duration::from_secs(1), "/ready took {elapsed:?}");
}

async fn graphql_ws_from(app: &TestApp, source: &str, protocol: &str) -> Result<GqlWs, u16> {
    match app.ws_from(source, "/graphql", &[protocol], &[]).await {
        Ok(ws) => Ok(GqlWs(ws)),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("the upgrade failed: {other}"),
    }
}

async fn init(ws: &mut GqlWs, protocol: &str, token: Option<&str>) -> Next {
    let payload = token.map_or(json!({}), |t| json!({ "authorization": format!("Bearer {t}") }));
    ws.send(json!({ "type": "connection_init", "payload": payload })).await;
    let next = ws.next_within(WAIT).await;
    if protocol == "graphql-ws"
        && let Next::Json(message) = &next
        && message["type"] == "connection_ack"
    {
        assert_eq!(ws.recv().await["type"], "ka", "the legacy protocol's first keep-alive");
    }
    next
}

/// The first high finding: a resume whose replay is large (served, or refused as too far
/// behind), then a second subscription on the same connection before the replay was sent. The
/// replay's store read used to sit inside a stream the connection stopped polling while its next
/// message waited for a pooled connection: with an in-memory store (one connection), the whole
/// node froze for the pool's 30 s timeout. Now neither the store, nor `/ready`, nor a staff
/// member beside notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_resumes_beside_a_second_subscription_freeze_nothing() {
    let app = spawn_app_with(|c| c.resume_max_events = 2_800).await;
    let (p1, p2) = (app.create_product("far-1", 0).await, app.create_product("far-2", 0).await);
    stock_changes(&app, &p1, 3_000).await;
    let head = app.state.commerce.log().head().await.expect("head");
    let epoch = app.state.commerce.log().epoch().to_owned();
    // 2,500 events of p1 after the first cursor (a replay to send); 2,900 after the second (past
    // RESUME_MAX_EVENTS: refused). Either used to take longer to read than the gap before the
    // next message.
    let (served, refused) = (format!("{epoch}.{}", head - 2_500), format!("{epoch}.{}", head - 2_900));

    let mut flood = Vec::new();
    for (n, cursor) in [&served, &refused, &served, &refused].into_iter().enumerate() {
        let source = format!("127.0.0.{}", n + 2);
        let mut ws = graphql_ws_from(&app, &source, "graphql-transport-ws").await.expect("upgraded");
        assert!(
            matches!(init(&mut ws, "graphql-transport-ws", None).await, Next::Json(m) if m["type"] == "connection_ack")
        );
        ws.subscribe("far", STOCK, json!({ "p": p1, "after": cursor })).await;
        tokio::time::sleep(Duration::from_millis(3)).await;
        ws.subscribe("live", STOCK, json!({ "p": p2 })).await;
        flood.push(ws);
    }
    ready_at_once(&app).await;
    staff_is_served(&app, &p2, 7).await;

    // And the strangers got what they asked for: the replay, or CURSOR_EXPIRED; then their live
    // subscription has the next change. (The first one may have come before it was live: a
    // client that does not read its socket holds up its own messages.)
    for (n, ws) in flood.iter_mut().enumerate() {
        let (mut replayed, mut refusal) = (0, None);
        while replayed < 2_500 && refusal.is_none() {
            let message = match ws.next_within(WAIT).await {
                Next::Json(message) => message,
                other => panic!("connection {n}: {other:?} after {replayed} replayed"),
            };
            match (message["type"].as_str(), message["id"].as_str()) {
                (Some("next"), Some("far")) => replayed += 1,
                (Some("next"), Some("live")) => {}
                (Some("error"), Some("far")) => {
                    refusal = message["payload"][0]["extensions"]["code"].as_str().map(str::to_owned)
                }
                _ => panic!("unexpected {message}"),
            }
        }
        if n % 2 == 0 {
            assert_eq!((replayed, refusal), (2_500, None));
        } else {
            assert_eq!((replayed, refusal.as_deref()), (0, Some("CURSOR_EXPIRED")));
        }
        ws.send(json!({ "type": "ping" })).await;
        while ws.recv().await["type"] != "pong" {}
    }
    app.set_stock(&p2, 8).await;
    for ws in &mut flood {
        let data = loop {
            let data = ws.next_data("live").await;
            if data["inventoryChanged"]["newQuantity"] == 8 {
                break data;
            }
        };
        assert_eq!(data["inventoryChanged"]["productId"], p2.as_str());
    }
}

/// The same through GraphQL over SSE: anonymous reservations posting the same two operations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_resumes_over_sse_reservations_freeze_nothing() {
    let app = spawn_app_with(|c| c.resume_max_events = 2_800).await;
    let (p1, p2) = (app.create_product("far-1", 0).await, app.create_product("far-2", 0).await);
    stock_changes(&app, &p1, 3_000).await;
    let head = app.state.commerce.log().head().await.expect("head");
    let cursor = format!("{}.{}", app.state.commerce.log().epoch(), head - 2_500);
    let mut reservations = Vec::new();
    for n in 0..8 {
        let http = app.http_from(&format!("127.0.0.{}", n + 2));
        let token = http.put(app.url("/graphql/stream")).send().await.unwrap().text().await.unwrap();
        for (id, variables) in [("far", json!({ "p": p1, "after": cursor })), ("live", json!({ "p": p2 }))] {
            let body = json!({ "query": STOCK, "variables": variables, "extensions": { "operationId": id } });
            let posted = http
                .post(app.url("/graphql/stream"))
                .header("x-graphql-event-stream-token", &token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(posted.status(), 202);
        }
        reservations.push(token);
    }
    ready_at_once(&app).await;
    staff_is_served(&app, &p2, 9).await;
}

/// The second high finding: `PUT /graphql/stream` needs no token, and each reservation took a
/// place among MAX_CONNECTIONS: 300 of them and every upgrade, staff included, got 503. Now one
/// address holds at most its share, strangers together at most theirs, and signed-in users
/// connect on every channel beside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_cannot_take_every_connection_slot() {
    let app = spawn_app_with(|c| {
        c.max_connections = 300;
        c.anonymous_connections_per_address = 100;
    })
    .await;
    let product = app.create_product("slots", 0).await;
    let mut made = 0;
    let mut refusals = Vec::new();
    for n in 2..=5 {
        let http = app.http_from(&format!("127.0.0.{n}"));
        for _ in 0..110 {
            let status = http.put(app.url("/graphql/stream")).send().await.unwrap().status().as_u16();
            if status == 201 {
                made += 1;
            } else {
                refusals.push(status);
                break;
            }
        }
    }
    // 100, 100, then the anonymous share (75 % of 300) is spent: 25 more, and 503 from then on.
    assert_eq!(made, 225, "refusals: {refusals:?}");
    assert_eq!(refusals, [429, 429, 503, 503]);
    let fresh = app.http_from("127.0.0.9").put(app.url("/graphql/stream")).send().await.unwrap();
    assert_eq!(fresh.status(), 503);

    // Signed-in users beside them: the room channel, an SSE stream, graphql-ws (whose token
    // comes only with connection_init: admitted on probation, then signed in).
    let customer = app.token("c1", TestRole::Customer);
    let mut room = app.rooms_ws(&customer).await;
    assert_eq!(room.join("lobby").await.len(), 1);
    let mut stream = app.sse_post(Some(&app.staff()), STOCK, json!({ "p": product })).await;
    staff_is_served(&app, &product, 3).await;
    let event = stream.next().await.json();
    assert_eq!(event["data"]["inventoryChanged"]["newQuantity"], 3);
    // A stranger on probation that turns out to have no token is told to come back later.
    let mut stranger = graphql_ws_from(&app, "127.0.0.10", "graphql-transport-ws").await.expect("on probation");
    assert!(matches!(init(&mut stranger, "graphql-transport-ws", None).await, Next::Closed(Some((1013, _)))));
}

/// graphql-ws, both protocols: one address's anonymous connections and each one's operations
/// are bounded; a signed-in client elsewhere is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_graphql_ws_connections_and_operations_are_bounded_on_both_protocols() {
    let app = spawn_app_with(|c| {
        c.anonymous_connections_per_address = 5;
        c.ws_max_operations_anonymous = 3;
    })
    .await;
    let product = app.create_product("ws", 0).await;
    for (n, protocol) in ["graphql-transport-ws", "graphql-ws"].into_iter().enumerate() {
        let source = format!("127.0.0.{}", n + 2);
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(graphql_ws_from(&app, &source, protocol).await.expect("within the address's share"));
        }
        assert_eq!(graphql_ws_from(&app, &source, protocol).await.err(), Some(429), "{protocol}");
        let mut ws = held.pop().unwrap();
        assert!(matches!(init(&mut ws, protocol, None).await, Next::Json(m) if m["type"] == "connection_ack"));
        let start = if protocol == "graphql-ws" { "start" } else { "subscribe" };
        for id in 0..4 {
            let payload = json!({ "query": STOCK, "variables": { "p": product } });
            ws.send(json!({ "id": id.to_string(), "type": start, "payload": payload })).await;
        }
        let refusal = ws.recv().await;
        assert_eq!((refusal["type"].as_str(), refusal["id"].as_str()), (Some("error"), Some("3")), "{refusal}");
        assert_eq!(refusal["payload"][0]["extensions"]["code"], "BAD_USER_INPUT", "{refusal}");
        drop(held);
    }
    staff_is_served(&app, &product, 5).await;
}

/// GraphQL over SSE, both modes: distinct streams and reservations count against the address's
/// share; a reservation runs at most WS_MAX_OPERATIONS_ANONYMOUS operations, the rest refused
/// on its stream; a signed-in stream beside is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_sse_streams_reservations_and_their_operations_are_bounded() {
    let app = spawn_app_with(|c| {
        c.anonymous_connections_per_address = 3;
        c.ws_max_operations_anonymous = 2;
    })
    .await;
    let product = app.create_product("sse", 0).await;
    let flood = app.http_from("127.0.0.2");
    let stream = |http: &reqwest::Client| {
        http.post(app.url("/graphql/stream"))
            .header("accept", "text/event-stream")
            .json(&json!({ "query": STOCK, "variables": { "p": product } }))
            .send()
    };
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(Stream::new(stream(&flood).await.unwrap()));
    }
    let token = flood.put(app.url("/graphql/stream")).send().await.unwrap().text().await.unwrap();
    assert_eq!(stream(&flood).await.unwrap().status(), 429, "a third stream beside a reservation");
    assert_eq!(flood.put(app.url("/graphql/stream")).send().await.unwrap().status(), 429);

    let opened = flood
        .get(app.url("/graphql/stream"))
        .header("accept", "text/event-stream")
        .header("x-graphql-event-stream-token", &token)
        .send()
        .await
        .unwrap();
    let mut reserved = Stream::new(opened);
    for id in ["a", "b", "c"] {
        let body = json!({ "query": STOCK, "variables": { "p": product }, "extensions": { "operationId": id } });
        let posted = flood
            .post(app.url("/graphql/stream"))
            .header("x-graphql-event-stream-token", &token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(posted.status(), 202);
    }
    let refused = reserved.next().await.json();
    assert_eq!((refused["id"].as_str(), error_code(&refused["payload"])), (Some("c"), "BAD_USER_INPUT"), "{refused}");
    assert!(refused["payload"].get("data").is_none(), "a refusal before execution has no data: {refused}");
    assert_eq!(reserved.complete().await.json()["id"], "c");

    staff_is_served(&app, &product, 4).await;
    let mut ids = Vec::new();
    while ids.len() < 2 {
        let event = reserved.next().await.json();
        assert_eq!(event["payload"]["data"]["inventoryChanged"]["newQuantity"], 4, "{event}");
        ids.push(event["id"].as_str().unwrap().to_owned());
    }
    ids.sort();
    assert_eq!(ids, ["a", "b"]);
    for stream in &mut held {
        assert_eq!(stream.next().await.json()["data"]["inventoryChanged"]["newQuantity"], 4);
    }
}

/// `/ws` admits signed-in users only: a flood of upgrades without a token (or with a bad one) is
/// refused before any socket exists, and holds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_channel_refuses_strangers_before_holding_anything() {
    let app = spawn_app_with(|_| {}).await;
    let product = app.create_product("rooms", 0).await;
    for n in 0..200 {
        let path = if n % 2 == 0 { "/ws".to_owned() } else { "/ws?token=not-a-token".to_owned() };
        match app.ws_from("127.0.0.2", &path, &[], &[]).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
            other => panic!("a stranger was not refused: {:?}", other.map(|_| ())),
        }
    }
    assert_eq!(app.state.connections.connection_count(), 0);
    assert_eq!(app.state.connections.anonymous_count(), (0, 0));
    let mut room = app.rooms_ws(&app.token("c1", TestRole::Customer)).await;
    assert_eq!(room.join(&format!("product:{product}")).await.len(), 1);
    staff_is_served(&app, &product, 2).await;
    assert_eq!(room.expect("inventory_update").await["newQuantity"], 2);
}

/// `POST /graphql` without a token: one address has at most ANONYMOUS_REQUESTS_PER_ADDRESS in
/// flight (the rest 429, nothing else), and gets its budget back; staff are served beside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_http_requests_in_flight_are_bounded_per_address() {
    let app = spawn_app_with(|c| c.anonymous_requests_per_address = 2).await;
    let product = app.create_product("http", 0).await;
    let flood = app.http_from("127.0.0.2");
    let query =
        json!({ "query": "{ a: products { id name } b: products { id sku } c: product(id: \"1\") { quantity } }" });
    let requests = (0..300).map(|_| {
        let (flood, url, query) = (flood.clone(), app.url("/graphql"), query.clone());
        tokio::spawn(async move { flood.post(url).json(&query).send().await.map(|r| r.status().as_u16()) })
    });
    let staff = staff_is_served(&app, &product, 6);
    let (statuses, ()) = tokio::join!(futures::future::join_all(requests), staff);
    let statuses: Vec<u16> = statuses.into_iter().map(|s| s.expect("task").expect("answered")).collect();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    assert!(statuses.contains(&429), "300 at once never found the address's two places taken");
    // Budget given back: the same address is served again.
    let again = flood.post(app.url("/graphql")).json(&query).send().await.unwrap();
    assert_eq!(again.status(), 200);
}

/// The console's subscriptions (staff only): strangers asking for them are refused at once and
/// hold no subscription; a staff console beside is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_subscriptions_refuse_strangers_without_holding_anything() {
    let app = spawn_app_with(|_| {}).await;
    let product = app.create_product("console", 0).await;
    let mut flood = Vec::new();
    for n in 0..5 {
        let mut ws = graphql_ws_from(&app, "127.0.0.2", "graphql-transport-ws").await.expect("upgraded");
        assert!(matches!(init(&mut ws, "graphql-transport-ws", None).await, Next::Json(_)));
        for id in 0..10 {
            let query = if id % 2 == 0 {
                "subscription { serverStats(every: 500) { node } }"
            } else {
                "subscription { eventTail(perSecond: 100) { topic } }"
            };
            ws.subscribe(&format!("{n}-{id}"), query, json!({})).await;
        }
        for _ in 0..10 {
            let message = ws.recv().await;
            assert_eq!(message["type"], "error", "{message}");
            assert_eq!(message["payload"][0]["extensions"]["code"], "UNAUTHENTICATED", "{message}");
        }
        flood.push(ws);
    }
    assert_eq!(app.state.connections.subscription_count(), 0);
    let mut console = app.graphql_ws(Some(&app.staff())).await;
    console.subscribe("tail", "subscription { eventTail(perSecond: 100) { topic } }", json!({})).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    staff_is_served(&app, &product, 8).await;
    assert_eq!(console.next_data("tail").await["eventTail"]["topic"], format!("product:{product}"));
}

/// Resumes: strangers replaying from cursors the log cannot serve are refused cheaply and
/// take nothing a signed-in resume needs; the signed-in resume beside gets its replay at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_anonymous_resumes_do_not_delay_a_signed_in_one() {
    let app = spawn_app_with(|c| c.resume_max_events = 50).await;
    let product = app.create_product("resumes", 0).await;
    for quantity in 1..=80 {
        app.set_stock(&product, quantity).await;
    }
    let head = app.state.commerce.log().head().await.expect("head");
    let epoch = app.state.commerce.log().epoch().to_owned();
    let too_old = format!("{epoch}.{}", head - 79);
    let mut flood = Vec::new();
    for n in 0..8 {
        let mut ws = graphql_ws_from(&app, &format!("127.0.0.{}", n + 2), "graphql-transport-ws").await.unwrap();
        assert!(matches!(init(&mut ws, "graphql-transport-ws", None).await, Next::Json(_)));
        for id in 0..10 {
            ws.subscribe(&id.to_string(), STOCK, json!({ "p": product, "after": too_old })).await;
        }
        flood.push(ws);
    }
    let started = Instant::now();
    let mut staff = app.graphql_ws(Some(&app.staff())).await;
    staff.subscribe("resume", STOCK, json!({ "p": product, "after": format!("{epoch}.{}", head - 20) })).await;
    for quantity in 61..=80 {
        assert_eq!(staff.next_data("resume").await["inventoryChanged"]["newQuantity"], quantity);
    }
    assert!(started.elapsed() < NORMAL, "the signed-in resume took {:?}", started.elapsed());
    for ws in &mut flood {
        for _ in 0..10 {
            let message = ws.recv().await;
            assert_eq!(message["type"], "error", "{message}");
            assert_eq!(message["payload"][0]["extensions"]["code"], "CURSOR_EXPIRED", "{message}");
        }
    }
}

/// A stream that stopped reading gives back its place and its subscription within the
/// subscriber queue's lag and a few seconds, in both SSE modes (it used to keep them until the
/// HTTP idle timeout, 75 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sse_stream_gives_its_place_back() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(|c| c.subscriber_queue = 4).await;
    let big = "x".repeat(200_000);
    let notify = "mutation($m: String!) { sendNotification(input: {userId: \"c1\", type: \"bulk\", title: \"t\", message: $m}) { id } }";
    let query = json!({ "query": "subscription { notificationCreated { message } }" }).to_string();
    let user = app.token("c1", TestRole::Customer);

    for mode in ["distinct", "reservation"] {
        let before = app.state.connections.subscription_count();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stalled = socket.connect(app.addr).await.unwrap();
        let mut reservation = None;
        let request = if mode == "distinct" {
            format!(
                "POST /graphql/stream HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\nauthorization: Bearer {user}\r\n\
                 content-type: application/json\r\ncontent-length: {}\r\n\r\n{query}",
                query.len()
            )
        } else {
            let response = app.sse_request(Method::PUT, Some(&user)).send().await.unwrap();
            let token = response.text().await.unwrap();
            reservation = Some(token.clone());
            format!(
                "GET /graphql/stream HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\nauthorization: Bearer {user}\r\n\
                 x-graphql-event-stream-token: {token}\r\n\r\n"
            )
        };
        stalled.write_all(request.as_bytes()).await.unwrap();
        if let Some(token) = &reservation {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let body: Value = serde_json::from_str(&query).unwrap();
            let mut body = body.as_object().unwrap().clone();
            body.insert("extensions".into(), json!({ "operationId": "n" }));
            let posted = app
                .sse_request(Method::POST, Some(&user))
                .header("x-graphql-event-stream-token", token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(posted.status(), 202);
        }
        app.await_subscriptions(before, 1).await;
        let open = app.state.connections.connection_count();
        assert!(open >= 1);
        // Events until the stream is found too slow (its queue of 4 overflows).
        let lagged = switchboard::events::slow_consumer::lagged_total();
        let mut sent = 0;
        while switchboard::events::slow_consumer::lagged_total() == lagged {
            assert!(sent < 200, "{mode}: never found slow");
            let body = app.gql(Some(&app.staff()), notify, json!({ "m": big })).await;
            assert!(body["errors"].is_null(), "{body}");
            sent += 1;
        }
        let slow_at = Instant::now();
        // Never read: the place and the subscription come back anyway.
        let deadline = slow_at + Duration::from_secs(15);
        while app.state.connections.connection_count() >= open || app.state.connections.subscription_count() > before {
            assert!(Instant::now() < deadline, "{mode}: still held {:?} after it was found slow", slow_at.elapsed());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(stalled);
    }
}

/// Behind a trusted proxy, clients are told apart by the address it reports; a client that is
/// not a trusted proxy cannot claim another address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_behind_a_trusted_proxy_are_told_apart_by_x_forwarded_for() {
    let put = |app: &TestApp, forwarded: &'static str| {
        app.http.put(app.url("/graphql/stream")).header("x-forwarded-for", forwarded).send()
    };
    let behind = spawn_app_with(|c| {
        c.anonymous_connections_per_address = 2;
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    for _ in 0..2 {
        assert_eq!(put(&behind, "198.51.100.1").await.unwrap().status(), 201);
    }
    assert_eq!(put(&behind, "198.51.100.1").await.unwrap().status(), 429, "the same client behind the proxy");
    assert_eq!(put(&behind, "6.6.6.6, 198.51.100.2").await.unwrap().status(), 201, "another one");
    assert_eq!(behind.state.connections.anonymous_from("198.51.100.1".parse().unwrap()), 2);
    assert_eq!(behind.state.connections.anonymous_from("198.51.100.2".parse().unwrap()), 1);

    let direct = spawn_app_with(|c| c.anonymous_connections_per_address = 2).await;
    for _ in 0..2 {
        assert_eq!(put(&direct, "198.51.100.1").await.unwrap().status(), 201);
    }
    assert_eq!(put(&direct, "198.51.100.3").await.unwrap().status(), 429, "X-Forwarded-For from anyone is ignored");
}

/// No token in any log line, at any level: the request span records the path, not the query
/// string where `EventSource` and `/ws` clients carry their tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_in_query_strings_never_reach_the_logs() {
    use std::io::Read;
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BIND_ADDR", "127.0.0.1:0")
        .env("DATABASE_URL", "sqlite::memory:")
        .env("JWT_SECRET", "test-secret")
        .env("RUST_LOG", "trace")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the server starts");
    // Both pipes are drained all along: at `trace` the server logs a lot, and a full pipe would
    // block it.
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let drains: Vec<_> =
        [Box::new(server.stdout.take().unwrap()) as Box<dyn Read + Send>, Box::new(server.stderr.take().unwrap())]
            .into_iter()
            .map(|mut pipe| {
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut chunk = [0u8; 8192];
                    while let Ok(n) = pipe.read(&mut chunk) {
                        if n == 0 {
                            break;
                        }
                        log.lock().unwrap().extend_from_slice(&chunk[..n]);
                    }
                })
            })
            .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
        if let Some(addr) = text.split("listening on ").nth(1).and_then(|rest| rest.split_whitespace().next()) {
            break addr.to_owned();
        }
        assert!(Instant::now() < deadline, "the server did not start: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let keys = switchboard::auth::Keys::new(b"test-secret", None, None);
    let token = keys.sign("c1", switchboard::auth::Role::Customer, None, 600);
    let http = reqwest::Client::new();
    let stream = http
        .get(format!("http://{addr}/graphql/stream?access_token={token}&query=%7B%20products%20%7B%20id%20%7D%20%7D"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let _ = stream.text().await;
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={token}")).await.expect("/ws");
    drop(ws);
    let _ =
        http.get(format!("http://{addr}/graphql?token={token}&query=%7B%20me%20%7B%20userId%20%7D%20%7D")).send().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // SIGTERM, then the rest of the log.
    let _ = std::process::Command::new("kill").arg(server.id().to_string()).status();
    let _ = server.wait();
    for drain in drains {
        drain.join().unwrap();
    }
    let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    assert!(text.contains("/graphql/stream"), "the trace log shows requests by path: {text}");
    let signature = token.rsplit('.').next().unwrap();
    assert!(!text.contains(signature), "a token reached the log");
}

/// The pages and their files (`/console`, `/console/lib/…` and `/console/vendor/…`, the client
/// library and graphql-ws the pages run, GraphiQL's files, `/health`, `/metrics`): static
/// answers that hold nothing once sent. A flood of them, known files and unknown ones, leaves
/// nothing held and a signed-in client served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_their_files_hold_nothing() {
    let app = spawn_app_with(|_| {}).await;
    let product = app.create_product("pages", 0).await;
    let paths = [
        "/console",
        "/console/lib/index.js",
        "/console/lib/rooms.js",
        "/console/lib/no-such-file.js",
        "/console/vendor/graphql-ws-client.js",
        "/console/vendor/../../Cargo.toml",
        "/graphiql/graphiql.min.css",
        "/demo/rooms",
        "/health",
        "/metrics",
    ];
    let flood = app.http_from("127.0.0.2");
    let requests = (0..400).map(|n| {
        let url = app.url(paths[n % paths.len()]);
        let flood = flood.clone();
        tokio::spawn(async move { flood.get(url).send().await.map(|r| r.status().as_u16()) })
    });
    let (statuses, ()) = tokio::join!(futures::future::join_all(requests), staff_is_served(&app, &product, 4));
    for status in statuses {
        let status = status.expect("task").expect("answered");
        assert!([200, 404].contains(&status), "{status}");
    }
    assert_eq!(app.state.connections.anonymous_count(), (0, 0), "nothing held");
}
