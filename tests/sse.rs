//! GraphQL over Server-Sent Events at `/graphql/stream`: both modes of the graphql-sse protocol,
//! every status code its reference server answers, identity, `id:` = cursor, resuming with
//! `Last-Event-ID`, reservations and their grace period, slow consumers, limits and shutdown.

mod common;

use std::time::{Duration, Instant};

use common::sse::{Got, Stream};
use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const INVENTORY: &str = "subscription($p: ID) { inventoryChanged(productId: $p) { newQuantity } }";
const INVENTORY_WITH_CURSOR: &str =
    "subscription($p: ID) { inventoryChanged(productId: $p) { newQuantity cursor sequence } }";
const NOTIFICATIONS: &str = "subscription { notificationCreated { title } }";
const BIG_NOTIFICATIONS: &str = "subscription { notificationCreated { title message } }";
const TOKEN_HEADER: &str = "x-graphql-event-stream-token";

/// A distinct-connections subscription, live on the server when this returns.
async fn subscribe(app: &TestApp, token: Option<&str>, query: &str, variables: Value) -> Stream {
    let before = app.state.connections.subscription_count();
    let stream = app.sse_post(token, query, variables).await;
    app.await_subscriptions(before, 1).await;
    stream
}

/// The data of the next `next`, which must carry no errors.
async fn data(stream: &mut Stream) -> Value {
    let event = stream.next().await;
    let body = event.json();
    assert!(body["errors"].is_null(), "{body}");
    body["data"].clone()
}

fn error_of(event: &common::sse::Event) -> String {
    let body = event.json();
    body["errors"][0]["extensions"]["code"].as_str().unwrap_or_else(|| panic!("no code in {body}")).to_owned()
}

// ---------------------------------------------------------------- distinct connections mode

#[tokio::test]
async fn a_subscription_streams_next_events_whose_id_is_the_cursor_even_when_not_selected() {
    let app = spawn_app().await;
    let product = app.create_product("P", 1).await;
    let mut plain = subscribe(&app, None, INVENTORY, json!({ "p": product })).await;
    let mut with_cursor = subscribe(&app, None, INVENTORY_WITH_CURSOR, json!({ "p": product })).await;

    app.set_stock(&product, 2).await;
    app.set_stock(&product, 3).await;
    for quantity in [2, 3] {
        let selected = with_cursor.next().await;
        let body = selected.json();
        assert_eq!(body["data"]["inventoryChanged"]["newQuantity"], quantity);
        let cursor = body["data"]["inventoryChanged"]["cursor"].as_str().unwrap().to_owned();
        assert_eq!(selected.id.as_deref(), Some(cursor.as_str()));
        let unselected = plain.next().await;
        assert_eq!(unselected.json()["data"]["inventoryChanged"], json!({ "newQuantity": quantity }));
        assert_eq!(unselected.id, Some(cursor), "the id is the event's cursor though the query did not ask for it");
    }
    assert_eq!(plain.retries, [2000], "retry: once, at the start");
}

#[tokio::test]
async fn queries_over_get_and_mutations_over_post_stream_one_next_then_complete() {
    let app = spawn_app().await;
    let product = app.create_product("P", 5).await;
    let url =
        format!("/graphql/stream?query={}", urlencode(&format!("{{ product(id: \"{product}\") {{ quantity }} }}")));
    let response = app.http.get(app.url(&url)).header("accept", "text/event-stream").send().await.unwrap();
    let mut stream = Stream::new(response);
    let next = stream.next().await;
    assert_eq!(next.id, None, "a query's result comes from no event");
    assert_eq!(next.json()["data"]["product"]["quantity"], 5);
    assert_eq!(stream.complete().await.data, "", "complete has an empty data line");
    stream.ended().await;

    let q = format!("mutation {{ setInventory(productId: \"{product}\", quantity: 7) {{ quantity }} }}");
    let mut stream = app.sse_post(Some(&app.staff()), &q, json!({})).await;
    assert_eq!(data(&mut stream).await["setInventory"]["quantity"], 7);
    stream.complete().await;
    stream.ended().await;

    // A mutation over GET: 405, as on /graphql.
    let url = format!("/graphql/stream?query={}", urlencode(&q));
    let response = app.http.get(app.url(&url)).header("accept", "text/event-stream").bearer_auth(app.staff());
    let response = response.send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
}

#[tokio::test]
async fn errors_before_execution_arrive_as_a_next_with_errors_then_complete() {
    let app = spawn_app().await;
    // Validation.
    let mut stream = app.sse_post(None, "subscription { noSuchField }", json!({})).await;
    assert_eq!(error_of(&stream.next().await), "GRAPHQL_VALIDATION_FAILED");
    stream.complete().await;
    stream.ended().await;
    // Refused at subscribe time (an unknown product; a customer-only field, anonymously).
    let mut stream = app.sse_post(None, INVENTORY, json!({ "p": "999" })).await;
    assert_eq!(error_of(&stream.next().await), "NOT_FOUND");
    stream.complete().await;
    let mut stream = app.sse_post(None, NOTIFICATIONS, json!({})).await;
    assert_eq!(error_of(&stream.next().await), "UNAUTHENTICATED");
    stream.complete().await;
    // The guard's limits.
    let wide = format!("{{ {} }}", (0..1200).map(|i| format!("a{i}: me {{ userId }}")).collect::<Vec<_>>().join(" "));
    let mut stream = app.sse_post(None, &wide, json!({})).await;
    assert_eq!(error_of(&stream.next().await), "GRAPHQL_VALIDATION_FAILED");
    stream.complete().await;
}

#[tokio::test]
async fn requests_that_are_not_graphql_are_refused_with_the_reference_status_codes() {
    let app = spawn_app().await;
    let sse = || app.sse_request(Method::POST, None).header("accept", "text/event-stream");
    // A text that does not parse, or names no operation it holds: 400.
    let response = sse().json(&json!({ "query": "{ me" })).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "GRAPHQL_PARSE_FAILED");
    let response = sse().json(&json!({ "query": "query A { me { userId } }", "operationName": "B" })).send().await;
    assert_eq!(response.unwrap().status(), 400);
    // No query, variables that are not an object, a body that is not JSON: 400.
    assert_eq!(sse().json(&json!({ "variables": {} })).send().await.unwrap().status(), 400);
    assert_eq!(
        sse().json(&json!({ "query": "{ me { userId } }", "variables": [1] })).send().await.unwrap().status(),
        400
    );
    let response = sse().header("content-type", "application/json").body("[").send().await.unwrap();
    assert_eq!(response.status(), 400);
    // A body that is not JSON at all: 415.
    let response = sse().header("content-type", "text/plain").body("{ me { userId } }").send().await.unwrap();
    assert_eq!(response.status(), 415);
    // GET without a query: 400.
    let response = app.http.get(app.url("/graphql/stream")).header("accept", "text/event-stream").send().await;
    assert_eq!(response.unwrap().status(), 400);
    // Neither an event stream nor a reservation: 404; a method the protocol does not use: 405.
    assert_eq!(app.http.get(app.url("/graphql/stream")).send().await.unwrap().status(), 404);
    let response = app.http.patch(app.url("/graphql/stream")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, POST, PUT, DELETE");
}

#[tokio::test]
async fn identity_comes_from_the_header_or_access_token_and_a_bad_token_is_401() {
    let app = spawn_app().await;
    let token = app.token("c1", TestRole::Customer);
    let mut by_header = subscribe(&app, Some(&token), NOTIFICATIONS, json!({})).await;
    // EventSource cannot set headers: ?access_token= in a GET.
    let before = app.state.connections.subscription_count();
    let url = format!("/graphql/stream?query={}&access_token={token}", urlencode(NOTIFICATIONS));
    let response = app.http.get(app.url(&url)).header("accept", "text/event-stream").send().await.unwrap();
    let mut by_query = Stream::new(response);
    app.await_subscriptions(before, 1).await;
    app.notify("c1", "hello").await;
    assert_eq!(data(&mut by_header).await["notificationCreated"]["title"], "hello");
    assert_eq!(data(&mut by_query).await["notificationCreated"]["title"], "hello");

    let bad = app.sse_request(Method::POST, Some("not-a-jwt")).header("accept", "text/event-stream");
    let response = bad.json(&json!({ "query": NOTIFICATIONS })).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let url = format!("/graphql/stream?query={}&access_token=not-a-jwt", urlencode(NOTIFICATIONS));
    let response = app.http.get(app.url(&url)).header("accept", "text/event-stream").send().await.unwrap();
    assert_eq!(response.status(), 401);
    let response = app.sse_request(Method::PUT, Some("not-a-jwt")).send().await.unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn an_expired_token_ends_the_stream_with_unauthenticated_then_complete() {
    let app = spawn_app().await;
    // Expired 28 s ago: valid for 2 s more with the 30 s leeway.
    let token = app.token_expiring("c1", TestRole::Customer, -28);
    let started = Instant::now();
    let mut stream = subscribe(&app, Some(&token), NOTIFICATIONS, json!({})).await;
    let last = match stream.next_within(Duration::from_secs(10)).await {
        Got::Event(event) => event,
        other => panic!("expected the final next, got {other:?}"),
    };
    assert_eq!(error_of(&last), "UNAUTHENTICATED");
    assert!(last.json()["errors"][0]["message"].as_str().unwrap().contains("expired"));
    stream.complete().await;
    stream.ended().await;
    assert!(started.elapsed() > Duration::from_millis(1000), "not before exp + leeway");
}

#[tokio::test]
async fn last_event_id_resumes_with_no_gap_and_no_duplicate_while_mutations_race() {
    let app = spawn_app().await;
    let product = app.create_product("P", 0).await;
    let mut stream = subscribe(&app, None, INVENTORY, json!({ "p": product })).await;
    let writer = {
        let (url, staff, product) = (app.url("/graphql"), app.staff(), product.clone());
        let http = app.http.clone();
        tokio::spawn(async move {
            for quantity in 1..=60 {
                let q = "mutation($p: ID!, $q: Int!) { setInventory(productId: $p, quantity: $q) { id } }";
                let body = json!({ "query": q, "variables": { "p": product, "q": quantity } });
                let response = http.post(&url).bearer_auth(&staff).json(&body).send().await.unwrap();
                assert_eq!(response.status(), 200);
            }
        })
    };
    let mut seen = Vec::new();
    let mut last_id = None;
    for _ in 0..10 {
        let event = stream.next().await;
        seen.push(event.json()["data"]["inventoryChanged"]["newQuantity"].as_i64().unwrap());
        last_id = event.id;
    }
    drop(stream); // mid-flight: the writer goes on
    let response = app
        .sse_request(Method::POST, None)
        .header("accept", "text/event-stream")
        .header("last-event-id", last_id.unwrap())
        .json(&json!({ "query": INVENTORY, "variables": { "p": product } }))
        .send()
        .await
        .unwrap();
    // Not waiting for it to be live: what it missed meanwhile is in the log.
    let mut resumed = Stream::new(response);
    while seen.last() != Some(&60) {
        let event = resumed.next().await;
        let body = event.json();
        assert!(body["errors"].is_null(), "{body}");
        assert!(event.id.is_some(), "replayed events carry their cursor too");
        seen.push(body["data"]["inventoryChanged"]["newQuantity"].as_i64().unwrap());
    }
    writer.await.unwrap();
    assert_eq!(seen, (1..=60).collect::<Vec<_>>(), "every change once, in order");
}

#[tokio::test]
async fn identical_sse_subscriptions_share_one_execution_per_event() {
    let app = spawn_app().await;
    let product = app.create_product("P", 1).await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(subscribe(&app, None, INVENTORY, json!({ "p": product })).await);
    }
    assert_eq!(app.state.fanout.group_count(), 1, "three identical subscriptions, one group");
    let before = app.state.fanout.executions();
    app.set_stock(&product, 2).await;
    app.set_stock(&product, 3).await;
    for stream in &mut streams {
        assert_eq!(data(stream).await["inventoryChanged"]["newQuantity"], 2);
        assert_eq!(data(stream).await["inventoryChanged"]["newQuantity"], 3);
    }
    assert_eq!(app.state.fanout.executions() - before, 2, "two events, one execution each");
}

/// An SSE subscriber that resumes with `Last-Event-ID` joins the shared group of its subscription,
/// as a graphql-ws one does: its replay is read once for everyone resuming from the same place,
/// and each live event is executed once for all of them.
#[tokio::test]
async fn sse_subscribers_that_resume_join_their_shared_group() {
    let app = spawn_app().await;
    let product = app.create_product("P", 0).await;
    let mut first = app.graphql_ws(None).await;
    first.subscribe_live(&app, "s", INVENTORY_WITH_CURSOR, json!({ "p": product })).await;
    app.set_stock(&product, 1).await;
    let cursor = first.next_data("s").await["inventoryChanged"]["cursor"].as_str().unwrap().to_owned();
    app.set_stock(&product, 2).await;
    drop(first);
    let deadline = Instant::now() + WAIT;
    while app.state.connections.subscription_count() > 0 || app.state.fanout.group_count() > 0 {
        assert!(Instant::now() < deadline, "the first subscriber never left");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Three clients resume from the same place, with no live subscriber left.
    let mut resumed = Vec::new();
    for _ in 0..3 {
        let before = app.state.connections.subscription_count();
        let response = app
            .sse_request(Method::POST, None)
            .header("accept", "text/event-stream")
            .header("last-event-id", &cursor)
            .json(&json!({ "query": INVENTORY, "variables": { "p": product } }))
            .send()
            .await
            .unwrap();
        let mut stream = Stream::new(response);
        app.await_subscriptions(before, 1).await;
        assert_eq!(data(&mut stream).await["inventoryChanged"]["newQuantity"], 2, "the missed event first");
        resumed.push(stream);
    }
    assert_eq!(app.state.fanout.group_count(), 1, "the three resumed subscribers are one group");
    assert_eq!(app.state.fanout.replays_read(), 1, "one replay read for the three");
    let before = app.state.fanout.executions();
    app.set_stock(&product, 3).await;
    for stream in &mut resumed {
        let event = stream.next().await;
        assert_eq!(event.json()["data"]["inventoryChanged"]["newQuantity"], 3);
        assert!(event.id.is_some(), "live events carry their cursor");
    }
    assert_eq!(app.state.fanout.executions() - before, 1, "one execution for the three");
}

#[tokio::test]
async fn keep_alive_comments_flow_while_the_stream_is_quiet() {
    let app = spawn_app_with(|c| c.sse_keepalive_interval = 100).await;
    let mut stream = subscribe(&app, None, INVENTORY, json!({})).await;
    let _ = stream.next_within(Duration::from_millis(450)).await;
    assert!(stream.comments >= 2, "{} keep-alive comments", stream.comments);
}

/// A subscriber that stops reading is ended with a final `next` carrying `SLOW_CONSUMER`, after
/// a gap-free run of events; it is never skipped past.
///
/// Over a raw socket with a small receive buffer: this machine lets loopback receive buffers
/// grow to 32 MB, which would hold every event of the test and hide the slowness.
#[tokio::test]
async fn a_slow_sse_subscriber_gets_a_final_slow_consumer_next_and_can_resume() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(|c| c.subscriber_queue = 4).await;
    let user = app.token("c1", TestRole::Customer);
    let before = app.state.connections.subscription_count();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket.connect(app.addr).await.unwrap();
    let body = json!({ "query": BIG_NOTIFICATIONS }).to_string();
    let request = format!(
        "POST /graphql/stream HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\nauthorization: Bearer {user}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    slow.write_all(request.as_bytes()).await.unwrap();
    app.await_subscriptions(before, 1).await;

    let big = "x".repeat(200_000);
    let q = "mutation($m: String!, $t: String!) { sendNotification(input: {userId: \"c1\", type: \"bulk\", title: $t, message: $m}) { id } }";
    // Until the stream is found too slow, and a few more (its connection is closed once the
    // stream has waited 5 s for its client to read anything: this client reads right after).
    let lagged = switchboard::events::slow_consumer::lagged_total();
    let mut past = None;
    for i in 0..60 {
        let body = app.gql(Some(&app.staff()), q, json!({ "m": big, "t": i.to_string() })).await;
        assert!(body["errors"].is_null(), "{body}");
        if past.is_none() && switchboard::events::slow_consumer::lagged_total() > lagged {
            past = Some(i);
        }
        if past.is_some_and(|at| i >= at + 3) {
            break;
        }
    }

    // Read at last: events in order with no gap, then the final next, then the body's end.
    let mut text = Vec::new();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    while !(text.ends_with(b"0\r\n\r\n") && text.windows(13).any(|w| w == b"SLOW_CONSUMER")) {
        let mut buffer = [0u8; 65536];
        let Ok(read) = tokio::time::timeout_at(give_up, slow.read(&mut buffer)).await else {
            let tail = String::from_utf8_lossy(&text[text.len().saturating_sub(300)..]).into_owned();
            let lagged = app.metric("switchboard_deliveries_lagged_total", &[]).await;
            panic!("the stream never ended ({} bytes, lagged {lagged}): {tail:?}", text.len());
        };
        let read = read.unwrap();
        assert!(read > 0, "the server closed the connection before the end of the body");
        text.extend_from_slice(&buffer[..read]);
    }
    let text = String::from_utf8(text).unwrap();
    let (mut last, mut last_id, mut ending) = (-1i64, None, None);
    for block in text.split("\n\n") {
        let id = block.lines().find_map(|l| l.strip_prefix("id: ")).map(str::to_owned);
        let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) else { continue };
        let body: Value = serde_json::from_str(data).unwrap();
        if !body["errors"].is_null() {
            ending = Some(body);
            continue;
        }
        assert!(ending.is_none(), "nothing after the final next");
        let title: i64 = body["data"]["notificationCreated"]["title"].as_str().unwrap().parse().unwrap();
        assert_eq!(title, last + 1, "no gap before the end");
        (last, last_id) = (title, id);
    }
    assert_eq!(error_code(&ending.expect("a final next")), "SLOW_CONSUMER");
    assert!(!text.contains("event: complete"), "not completed: the client resumes");
    assert!(
        past.is_some_and(|at| last < at),
        "the subscriber was ended at the gap, before the event that found it slow"
    );
    assert!(app.metric("switchboard_deliveries_lagged_total", &[]).await >= 1.0);

    // Resuming from the last id received brings the rest.
    let sent = past.expect("found slow") + 4;
    let response = app
        .sse_request(Method::POST, Some(&user))
        .header("accept", "text/event-stream")
        .header("last-event-id", last_id.expect("an id"))
        .json(&json!({ "query": BIG_NOTIFICATIONS }))
        .send()
        .await
        .unwrap();
    let mut resumed = Stream::new(response);
    for i in last + 1..sent {
        assert_eq!(data(&mut resumed).await["notificationCreated"]["title"], i.to_string());
    }
}

#[tokio::test]
async fn streams_count_against_the_connection_limits() {
    let app = spawn_app_with(|c| {
        c.max_connections = 2;
        c.max_connections_per_user = 1;
    })
    .await;
    let user = app.token("c1", TestRole::Customer);
    let _first = subscribe(&app, Some(&user), NOTIFICATIONS, json!({})).await;
    let request = app.sse_request(Method::POST, Some(&user)).header("accept", "text/event-stream");
    let response = request.json(&json!({ "query": NOTIFICATIONS })).send().await.unwrap();
    assert_eq!(response.status(), 429, "the user's share");
    let _second = subscribe(&app, None, INVENTORY, json!({})).await;
    let request = app.sse_request(Method::POST, None).header("accept", "text/event-stream");
    let response = request.json(&json!({ "query": INVENTORY })).send().await.unwrap();
    assert_eq!(response.status(), 503, "the node's limit");
    assert_eq!(app.sse_request(Method::PUT, None).send().await.unwrap().status(), 503, "reservations too");
    assert!(app.metric("switchboard_ws_connections", &["channel=\"sse\""]).await >= 2.0);
}

#[tokio::test]
async fn shutdown_ends_every_stream_promptly() {
    let app = spawn_app().await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(subscribe(&app, None, INVENTORY, json!({})).await);
    }
    let (token, mut single) = reserve_and_open(&app, None).await;
    assert!(!token.is_empty());
    let started = Instant::now();
    let stopping = tokio::spawn(app.stop());
    for stream in &mut streams {
        stream.ended().await;
    }
    single.ended().await;
    tokio::time::timeout(Duration::from_secs(5), stopping).await.expect("shutdown finishes").unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

// ---------------------------------------------------------------- single connection mode

async fn put(app: &TestApp, token: Option<&str>) -> String {
    let response = app.sse_request(Method::PUT, token).send().await.unwrap();
    assert_eq!(response.status(), 201);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    response.text().await.unwrap()
}

async fn open(app: &TestApp, token: Option<&str>, reservation: &str, last_event_id: Option<&str>) -> reqwest::Response {
    let mut request = app.sse_request(Method::GET, token).header("accept", "text/event-stream");
    request = request.header(TOKEN_HEADER, reservation);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    request.send().await.unwrap()
}

async fn reserve_and_open(app: &TestApp, token: Option<&str>) -> (String, Stream) {
    let reservation = put(app, token).await;
    let stream = Stream::new(open(app, token, &reservation, None).await);
    (reservation, stream)
}

/// POSTs an operation to a reservation; returns the status.
async fn post_op(
    app: &TestApp,
    token: Option<&str>,
    reservation: &str,
    id: &str,
    query: &str,
    variables: Value,
) -> u16 {
    let body = json!({ "query": query, "variables": variables, "extensions": { "operationId": id } });
    let request = app.sse_request(Method::POST, token).header(TOKEN_HEADER, reservation).json(&body);
    request.send().await.unwrap().status().as_u16()
}

/// The next event of a single-connection stream: its operation id and payload (or `None` for a
/// `complete`).
async fn op_event(stream: &mut Stream) -> (String, Option<Value>, Option<String>) {
    let event = stream.event().await;
    let body = event.json();
    let id = body["id"].as_str().expect("an operation id").to_owned();
    match event.event.as_str() {
        "next" => (id, Some(body["payload"].clone()), event.id),
        "complete" => (id, None, None),
        other => panic!("unexpected event {other}"),
    }
}

#[tokio::test]
async fn a_reservation_runs_operations_posted_before_its_stream_opens() {
    let app = spawn_app().await;
    let product = app.create_product("P", 1).await;
    let reservation = put(&app, None).await;
    let before = app.state.connections.subscription_count();
    assert_eq!(post_op(&app, None, &reservation, "s", INVENTORY, json!({ "p": product })).await, 202);
    app.await_subscriptions(before, 1).await;
    let q = format!("{{ product(id: \"{product}\") {{ quantity }} }}");
    assert_eq!(post_op(&app, None, &reservation, "q", &q, json!({})).await, 202);
    app.set_stock(&product, 5).await; // before any stream exists

    let mut stream = Stream::new(open(&app, None, &reservation, None).await);
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(op_event(&mut stream).await);
    }
    let subscription: Vec<_> = got.iter().filter(|(id, ..)| id == "s").collect();
    assert_eq!(subscription.len(), 1);
    assert_eq!(subscription[0].1.as_ref().unwrap()["data"]["inventoryChanged"]["newQuantity"], 5);
    assert!(subscription[0].2.is_some(), "the subscription's next carries its cursor");
    let query: Vec<_> = got.iter().filter(|(id, ..)| id == "q").collect();
    assert_eq!(query[0].1.as_ref().unwrap()["data"]["product"]["quantity"], 1);
    assert!(query[1].1.is_none(), "the query completes");

    // Mutations work over it too.
    let m = format!("mutation {{ setInventory(productId: \"{product}\", quantity: 9) {{ quantity }} }}");
    assert_eq!(post_op(&app, Some(&app.staff()), &reservation, "m", &m, json!({})).await, 404, "another identity");
    assert_eq!(post_op(&app, None, &reservation, "m", &m, json!({})).await, 202);
    let (id, payload, _) = op_event(&mut stream).await;
    assert_eq!(id, "m");
    assert_eq!(error_code(payload.as_ref().unwrap()), "UNAUTHENTICATED", "anonymous may not set stock");
    assert_eq!(op_event(&mut stream).await, ("m".into(), None, None), "then complete");
}

#[tokio::test]
async fn single_connection_mode_answers_the_reference_status_codes() {
    let app = spawn_app().await;
    let reservation = put(&app, None).await;
    // PUT: a token that names a reservation is 409; an Accept it cannot answer, 406.
    let again = app.sse_request(Method::PUT, None).header(TOKEN_HEADER, &reservation).send().await.unwrap();
    assert_eq!(again.status(), 409);
    let picky = app.sse_request(Method::PUT, None).header("accept", "application/json").send().await.unwrap();
    assert_eq!(picky.status(), 406);

    // The stream: one per reservation.
    let mut stream = Stream::new(open(&app, None, &reservation, None).await);
    assert_eq!(open(&app, None, &reservation, None).await.status(), 409);
    let by_query = app.http.get(app.url(&format!("/graphql/stream?token={reservation}")));
    assert_eq!(by_query.header("accept", "text/event-stream").send().await.unwrap().status(), 409);

    // POST: the operation id is required and unique among the running ones.
    assert_eq!(post_op(&app, None, &reservation, "s", INVENTORY, json!({})).await, 202);
    assert_eq!(post_op(&app, None, &reservation, "s", INVENTORY, json!({})).await, 409);
    let body = json!({ "query": INVENTORY });
    let request = app.sse_request(Method::POST, None).header(TOKEN_HEADER, &reservation).json(&body);
    assert_eq!(request.send().await.unwrap().status(), 400, "no operationId");
    let body = json!({ "query": "{ me", "extensions": { "operationId": "p" } });
    let request = app.sse_request(Method::POST, None).header(TOKEN_HEADER, &reservation).json(&body);
    assert_eq!(request.send().await.unwrap().status(), 400, "a parse failure");
    let request = app.sse_request(Method::POST, None).header(TOKEN_HEADER, &reservation);
    let request = request.header("accept", "text/html").json(&json!({ "query": INVENTORY }));
    assert_eq!(request.send().await.unwrap().status(), 406);
    let request = app.sse_request(Method::POST, None).header(TOKEN_HEADER, &reservation);
    assert_eq!(request.header("content-type", "text/plain").body("x").send().await.unwrap().status(), 415);
    assert_eq!(post_op(&app, None, "no-such-reservation", "x", INVENTORY, json!({})).await, 404);

    // DELETE stops an operation (200, whether it ran or not); its id is free again.
    let delete = |query: &str| {
        app.sse_request(Method::DELETE, None).header(TOKEN_HEADER, &reservation).query(&[("operationId", query)])
    };
    assert_eq!(delete("s").send().await.unwrap().status(), 200);
    let no_id = app.sse_request(Method::DELETE, None).header(TOKEN_HEADER, &reservation);
    assert_eq!(no_id.send().await.unwrap().status(), 400);
    let unknown = app.sse_request(Method::DELETE, None).header(TOKEN_HEADER, "nope").query(&[("operationId", "s")]);
    assert_eq!(unknown.send().await.unwrap().status(), 404);
    let deadline = Instant::now() + WAIT;
    while post_op(&app, None, &reservation, "s", INVENTORY, json!({})).await != 202 {
        assert!(Instant::now() < deadline, "the stopped id never came free");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stream.silent().await;
}

#[tokio::test]
async fn a_dropped_stream_resumes_within_the_grace_period_from_last_event_id() {
    let app = spawn_app().await;
    let user = app.token("c1", TestRole::Customer);
    let (reservation, mut stream) = reserve_and_open(&app, Some(&user)).await;
    let before = app.state.connections.subscription_count();
    assert_eq!(post_op(&app, Some(&user), &reservation, "n", NOTIFICATIONS, json!({})).await, 202);
    app.await_subscriptions(before, 1).await;
    let title = |e: &(String, Option<Value>, Option<String>)| {
        e.1.as_ref().unwrap()["data"]["notificationCreated"]["title"].as_str().unwrap().to_owned()
    };
    app.notify("c1", "1").await;
    app.notify("c1", "2").await;
    let first = op_event(&mut stream).await;
    let second = op_event(&mut stream).await;
    assert_eq!((title(&first), title(&second)), ("1".into(), "2".into()));
    drop(stream);
    // While no stream is attached, the operation runs on and its results wait.
    app.notify("c1", "3").await;
    app.notify("c1", "4").await;

    // Resuming from the first id: the second comes again (the client says it never got it).
    let mut stream = Stream::new(open(&app, Some(&user), &reservation, first.2.as_deref()).await);
    let titles: Vec<String> = [op_event(&mut stream).await, op_event(&mut stream).await, op_event(&mut stream).await]
        .iter()
        .map(title)
        .collect();
    assert_eq!(titles, ["2", "3", "4"]);
    app.notify("c1", "5").await;
    assert_eq!(title(&op_event(&mut stream).await), "5");
}

#[tokio::test]
async fn a_reservation_and_its_operations_end_when_the_grace_period_passes() {
    let app = spawn_app_with(|c| c.sse_reservation_ttl = 300).await;
    let (reservation, stream) = reserve_and_open(&app, None).await;
    let before = app.state.connections.subscription_count();
    assert_eq!(post_op(&app, None, &reservation, "s", INVENTORY, json!({})).await, 202);
    app.await_subscriptions(before, 1).await;
    drop(stream);
    let deadline = Instant::now() + WAIT;
    while !app.state.sse.is_empty() || app.state.connections.subscription_count() > before {
        assert!(Instant::now() < deadline, "the reservation outlived its grace period");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(post_op(&app, None, &reservation, "t", INVENTORY, json!({})).await, 404);
    // A reservation that never gets its stream ends too.
    let _unused = put(&app, None).await;
    let deadline = Instant::now() + WAIT;
    while !app.state.sse.is_empty() {
        assert!(Instant::now() < deadline, "an unused reservation outlived its grace period");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn graphiql_is_still_served_at_get_graphql() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/graphql")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("graphiql"));
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
