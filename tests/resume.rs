//! Resuming subscriptions with `after`: exactly the missed events, in order, then live, with no
//! gap and no duplicate at the seam; refusals for cursors the log cannot serve.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const INVENTORY: &str = "subscription($p: ID, $after: String) { inventoryChanged(productId: $p, after: $after) { productId newQuantity cursor sequence } }";
const ORDER_EVENTS: &str = "subscription($s: OrderStatus, $after: String) { orderEvents(status: $s, after: $after) { kind cursor sequence order { id customerId status } } }";
const ORDER_UPDATED: &str = "subscription($o: ID!, $after: String) { orderUpdated(orderId: $o, after: $after) { orderId status cursor sequence } }";
const NOTIFICATIONS: &str =
    "subscription($after: String) { notificationCreated(after: $after) { id title cursor sequence } }";

async fn set_status(app: &TestApp, order: &str, status: &str) {
    let body = app
        .gql(
            Some(&app.staff()),
            "mutation($o: ID!, $s: OrderStatus!) { updateOrder(id: $o, input: {status: $s}) { id } }",
            json!({ "o": order, "s": status }),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
}

/// Reads `n` events of `field` for subscription `id`.
async fn take(ws: &mut GqlWs, id: &str, field: &str, n: usize) -> Vec<Value> {
    let mut events = Vec::new();
    for _ in 0..n {
        events.push(ws.next_data(id).await[field].clone());
    }
    events
}

#[tokio::test]
async fn a_resumed_subscription_gets_exactly_what_it_missed_then_goes_on_live() {
    let app = spawn_app().await;
    let product = app.create_product("P", 0).await;
    let mut ws = app.graphql_ws(None).await;
    ws.subscribe_live(&app, "s", INVENTORY, json!({ "p": product })).await;
    app.set_stock(&product, 1).await;
    app.set_stock(&product, 2).await;
    let seen = take(&mut ws, "s", "inventoryChanged", 2).await;
    let cursor = seen[1]["cursor"].as_str().expect("cursor").to_owned();
    assert_eq!((seen[0]["sequence"].as_i64(), seen[1]["sequence"].as_i64()), (Some(1), Some(2)));
    drop(ws);

    // Missed while away.
    for q in 3..=5 {
        app.set_stock(&product, q).await;
    }
    let mut ws = app.graphql_ws(None).await;
    ws.subscribe_live(&app, "s", INVENTORY, json!({ "p": product, "after": cursor })).await;
    app.set_stock(&product, 6).await;
    let events = take(&mut ws, "s", "inventoryChanged", 4).await;
    let quantities: Vec<i64> = events.iter().map(|e| e["newQuantity"].as_i64().unwrap()).collect();
    let sequences: Vec<i64> = events.iter().map(|e| e["sequence"].as_i64().unwrap()).collect();
    assert_eq!(quantities, [3, 4, 5, 6]);
    assert_eq!(sequences, [3, 4, 5, 6]);
    ws.silent().await;
}

/// Mutations keep landing while clients resume: each sees every event after its cursor exactly
/// once, in order, across the seam between the replay and the live stream.
#[tokio::test]
async fn replay_racing_live_writes_has_no_gap_and_no_duplicate() {
    let app = spawn_app().await;
    let product = app.create_product("P", 0).await;
    let mut first = app.graphql_ws(None).await;
    first.subscribe_live(&app, "s", INVENTORY, json!({ "p": product })).await;
    app.set_stock(&product, 1).await;
    let cursor = first.next_data("s").await["inventoryChanged"]["cursor"].as_str().unwrap().to_owned();
    drop(first);

    const WRITES: i32 = 150;
    let writer = {
        let (http, url, staff, product) = (app.http.clone(), app.url("/graphql"), app.staff(), product.clone());
        tokio::spawn(async move {
            for q in 2..=WRITES + 1 {
                let body = json!({ "query": "mutation($p: ID!, $q: Int!) { setInventory(productId: $p, quantity: $q) { id } }", "variables": { "p": product, "q": q } });
                let response = http.post(&url).bearer_auth(&staff).json(&body).send().await.expect("mutation");
                assert_eq!(response.status(), 200);
            }
        })
    };
    // Resume at different moments of the stream of writes.
    let mut clients = Vec::new();
    for n in 0..5 {
        tokio::time::sleep(Duration::from_millis(10 * n)).await;
        let mut ws = app.graphql_ws(None).await;
        ws.subscribe("s", INVENTORY, json!({ "p": product, "after": cursor })).await;
        clients.push(ws);
    }
    writer.await.expect("writer");
    for mut ws in clients {
        let events = take(&mut ws, "s", "inventoryChanged", WRITES as usize).await;
        let quantities: Vec<i64> = events.iter().map(|e| e["newQuantity"].as_i64().unwrap()).collect();
        let expected: Vec<i64> = (2..=i64::from(WRITES) + 1).collect();
        assert_eq!(quantities, expected, "a gap or a duplicate at the seam");
        ws.silent().await;
    }
}

#[tokio::test]
async fn unusable_cursors_fail_at_once() {
    let app = spawn_app_with(|c| c.resume_max_events = 3).await;
    let product = app.create_product("P", 0).await;
    let mut ws = app.graphql_ws(None).await;
    ws.subscribe_live(&app, "s", INVENTORY, json!({ "p": product })).await;
    app.set_stock(&product, 1).await;
    let cursor = ws.next_data("s").await["inventoryChanged"]["cursor"].as_str().unwrap().to_owned();
    for q in 2..=6 {
        app.set_stock(&product, q).await;
    }
    drop(ws);
    let mut ws = app.graphql_ws(None).await;
    let (epoch, _) = cursor.rsplit_once('.').unwrap();
    let other_epoch = format!("{}.1", "0".repeat(16));
    let ahead = format!("{epoch}.999999");
    for (id, after, code) in [
        ("malformed", "not-a-cursor", "BAD_USER_INPUT"),
        ("epoch", other_epoch.as_str(), "CURSOR_EXPIRED"),
        ("ahead", ahead.as_str(), "CURSOR_EXPIRED"),
        ("too-far-behind", cursor.as_str(), "CURSOR_EXPIRED"),
    ] {
        ws.subscribe(id, INVENTORY, json!({ "p": product, "after": after })).await;
        assert_eq!(ws.error_code(id).await, code, "{id}");
    }
    // The connection is still usable, and a cursor within the limit works.
    let recent = format!("{epoch}.{}", cursor.rsplit_once('.').unwrap().1.parse::<u64>().unwrap() + 3);
    ws.subscribe("ok", INVENTORY, json!({ "p": product, "after": recent })).await;
    let events = take(&mut ws, "ok", "inventoryChanged", 2).await;
    assert_eq!(events.iter().map(|e| e["newQuantity"].as_i64().unwrap()).collect::<Vec<_>>(), [5, 6]);
}

#[tokio::test]
async fn a_cursor_older_than_the_retention_is_expired() {
    let app = spawn_app().await;
    let product = app.create_product("P", 0).await;
    let mut ws = app.graphql_ws(None).await;
    ws.subscribe_live(&app, "s", INVENTORY, json!({ "p": product })).await;
    app.set_stock(&product, 1).await;
    let cursor = ws.next_data("s").await["inventoryChanged"]["cursor"].as_str().unwrap().to_owned();
    app.set_stock(&product, 2).await;
    ws.next_data("s").await;
    // Retention as it will run a day from now.
    let removed = app.state.commerce.log().prune(chrono::Utc::now() + chrono::Duration::days(2)).await.unwrap();
    assert_eq!(removed, 2);
    ws.subscribe("old", INVENTORY, json!({ "p": product, "after": cursor })).await;
    assert_eq!(ws.error_code("old").await, "CURSOR_EXPIRED");
}

#[tokio::test]
async fn a_customer_resuming_order_events_never_sees_another_customers_orders() {
    let app = spawn_app().await;
    let alice = app.token("alice", TestRole::Customer);
    let mut ws = app.graphql_ws(Some(&alice)).await;
    ws.subscribe_live(&app, "s", ORDER_EVENTS, json!({})).await;
    let first = app.create_order("alice").await;
    let cursor = ws.next_data("s").await["orderEvents"]["cursor"].as_str().unwrap().to_owned();
    drop(ws);

    let bobs = app.create_order("bob").await;
    set_status(&app, &bobs, "SHIPPED").await;
    set_status(&app, &first, "PROCESSING").await;
    let second = app.create_order("alice").await;

    let mut ws = app.graphql_ws(Some(&alice)).await;
    ws.subscribe("s", ORDER_EVENTS, json!({ "after": cursor })).await;
    let events = take(&mut ws, "s", "orderEvents", 2).await;
    let seen: Vec<(String, String)> = events
        .iter()
        .map(|e| (e["kind"].as_str().unwrap().to_owned(), e["order"]["id"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(seen, [("UPDATED".to_owned(), first.clone()), ("CREATED".to_owned(), second)]);
    assert!(events.iter().all(|e| e["order"]["customerId"] == "alice"));
    ws.silent().await;

    // Staff resuming from the same cursor see every order; a status filter applies to the replay.
    let mut staff = app.graphql_ws(Some(&app.staff())).await;
    staff.subscribe("all", ORDER_EVENTS, json!({ "after": cursor })).await;
    assert_eq!(take(&mut staff, "all", "orderEvents", 4).await.len(), 4);
    staff.subscribe("shipped", ORDER_EVENTS, json!({ "after": cursor, "s": "SHIPPED" })).await;
    let shipped = take(&mut staff, "shipped", "orderEvents", 1).await;
    assert_eq!(shipped[0]["order"]["id"], json!(bobs));
    staff.silent().await;
}

#[tokio::test]
async fn resuming_checks_the_viewer_as_it_is_now() {
    let app = spawn_app().await;
    let order = app.create_order("alice").await;
    let mut ws = app.graphql_ws(Some(&app.staff())).await;
    ws.subscribe_live(&app, "s", ORDER_UPDATED, json!({ "o": order })).await;
    set_status(&app, &order, "PROCESSING").await;
    let cursor = ws.next_data("s").await["orderUpdated"]["cursor"].as_str().unwrap().to_owned();

    let mut mallory = app.graphql_ws(Some(&app.token("mallory", TestRole::Customer))).await;
    mallory.subscribe("s", ORDER_UPDATED, json!({ "o": order, "after": cursor })).await;
    assert_eq!(mallory.error_code("s").await, "FORBIDDEN");
    let mut anonymous = app.graphql_ws(None).await;
    anonymous.subscribe("s", NOTIFICATIONS, json!({ "after": cursor })).await;
    assert_eq!(anonymous.error_code("s").await, "UNAUTHENTICATED");
}

#[tokio::test]
async fn order_updated_resumes_and_completes_when_the_order_was_deleted_meanwhile() {
    let app = spawn_app().await;
    let order = app.create_order("alice").await;
    let alice = app.token("alice", TestRole::Customer);
    let mut ws = app.graphql_ws(Some(&alice)).await;
    ws.subscribe_live(&app, "s", ORDER_UPDATED, json!({ "o": order })).await;
    set_status(&app, &order, "PROCESSING").await;
    let cursor = ws.next_data("s").await["orderUpdated"]["cursor"].as_str().unwrap().to_owned();
    drop(ws);
    set_status(&app, &order, "SHIPPED").await;
    let body =
        app.gql(Some(&app.staff()), "mutation($o: ID!) { deleteOrder(id: $o) { id } }", json!({ "o": order })).await;
    assert!(body["errors"].is_null(), "{body}");

    // Away during the last update and the deletion: the resume gets the update, then `complete`.
    let mut ws = app.graphql_ws(Some(&alice)).await;
    ws.subscribe("s", ORDER_UPDATED, json!({ "o": order, "after": cursor })).await;
    assert_eq!(ws.next_data("s").await["orderUpdated"]["status"], "SHIPPED");
    let complete = ws.recv().await;
    assert_eq!((complete["type"].as_str(), complete["id"].as_str()), (Some("complete"), Some("s")), "{complete}");
    // Someone else's deleted order stays forbidden; without a cursor it is simply not found.
    let mut mallory = app.graphql_ws(Some(&app.token("mallory", TestRole::Customer))).await;
    mallory.subscribe("s", ORDER_UPDATED, json!({ "o": order, "after": cursor })).await;
    assert_eq!(mallory.error_code("s").await, "FORBIDDEN");
    mallory.subscribe("t", ORDER_UPDATED, json!({ "o": order })).await;
    assert_eq!(mallory.error_code("t").await, "NOT_FOUND");
}

#[tokio::test]
async fn notifications_resume_on_the_legacy_protocol_too() {
    let app = spawn_app().await;
    let token = app.token("u1", TestRole::Customer);
    app.notify("u1", "one").await;
    let mut ws = app.graphql_ws(Some(&token)).await;
    ws.subscribe_live(&app, "s", NOTIFICATIONS, json!({})).await;
    app.notify("u1", "two").await;
    let cursor = ws.next_data("s").await["notificationCreated"]["cursor"].as_str().unwrap().to_owned();
    drop(ws);
    app.notify("u2", "not yours").await;
    app.notify("u1", "three").await;

    let mut legacy = GqlWs(app.ws_raw("/graphql", &["graphql-ws"], &[]).await.expect("upgrade"));
    legacy.send(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } })).await;
    assert_eq!(legacy.recv().await["type"], "connection_ack");
    legacy
        .send(json!({ "id": "1", "type": "start", "payload": { "query": NOTIFICATIONS, "variables": { "after": cursor } } }))
        .await;
    let data = loop {
        let message = legacy.recv().await;
        if message["type"] == "data" {
            break message["payload"]["data"]["notificationCreated"].clone();
        }
        assert_eq!(message["type"], "ka", "{message}");
    };
    assert_eq!(data["title"], "three");
}

/// A file store keeps its log and its epoch across a restart: a cursor from before it resumes.
#[tokio::test]
async fn cursors_survive_a_restart_on_a_file_store() {
    let dir = std::env::temp_dir().join(format!("switchboard-resume-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("store.db").display());
    let app = spawn_app_with(|c| c.database_url = url.clone()).await;
    let product = app.create_product("P", 0).await;
    let mut ws = app.graphql_ws(None).await;
    ws.subscribe_live(&app, "s", INVENTORY, json!({ "p": product })).await;
    app.set_stock(&product, 1).await;
    let cursor = ws.next_data("s").await["inventoryChanged"]["cursor"].as_str().unwrap().to_owned();
    app.set_stock(&product, 2).await;
    drop(ws);
    app.stop().await;

    let app = spawn_app_with(|c| c.database_url = url.clone()).await;
    app.set_stock(&product, 3).await;
    let mut ws = app.graphql_ws(None).await;
    ws.subscribe("s", INVENTORY, json!({ "p": product, "after": cursor })).await;
    let events = take(&mut ws, "s", "inventoryChanged", 2).await;
    assert_eq!(events.iter().map(|e| e["newQuantity"].as_i64().unwrap()).collect::<Vec<_>>(), [2, 3]);
    let cursors: HashSet<&str> = events.iter().map(|e| e["cursor"].as_str().unwrap()).collect();
    assert_eq!(cursors.len(), 2);
    app.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two servers on one store (PostgreSQL when the suite runs against it, else one SQLite file):
/// concurrent read-modify-write changes from both lose nothing, and the log they share stays
/// gap-free and in commit order, with per-topic sequences that chain.
#[tokio::test]
async fn two_nodes_on_one_store_lose_no_update_and_keep_the_log_gap_free() {
    let url = shared_store_url().await;
    let a = spawn_app_with(|c| c.database_url = url.clone()).await;
    let b = spawn_app_with(|c| c.database_url = url.clone()).await;
    let product = a.create_product("P", 0).await;

    const EACH: usize = 40;
    let adjust = |app: &TestApp| {
        let (http, url, staff, product) = (app.http.clone(), app.url("/graphql"), app.staff(), product.clone());
        tokio::spawn(async move {
            for _ in 0..EACH {
                let body = json!({ "query": "mutation($p: ID!) { adjustInventory(productId: $p, delta: 1) { id } }", "variables": { "p": product } });
                let response: Value =
                    http.post(&url).bearer_auth(&staff).json(&body).send().await.unwrap().json().await.unwrap();
                assert!(response["errors"].is_null(), "{response}");
            }
        })
    };
    let (ta, tb) = (adjust(&a), adjust(&b));
    ta.await.unwrap();
    tb.await.unwrap();

    let body = a.gql(None, "query($p: ID!) { product(id: $p) { quantity } }", json!({ "p": product })).await;
    assert_eq!(body["data"]["product"]["quantity"], json!(2 * EACH), "an update was lost");
    // Every change is in the log, in one order: replaying from the start gives 1..=2*EACH.
    let epoch = a.state.commerce.log().epoch().to_owned();
    assert_eq!(b.state.commerce.log().epoch(), epoch, "one store, one log");
    let mut ws = b.graphql_ws(None).await;
    ws.subscribe("r", INVENTORY, json!({ "p": product, "after": format!("{epoch}.0") })).await;
    let events = take(&mut ws, "r", "inventoryChanged", 2 * EACH).await;
    let quantities: Vec<i64> = events.iter().map(|e| e["newQuantity"].as_i64().unwrap()).collect();
    let sequences: Vec<i64> = events.iter().map(|e| e["sequence"].as_i64().unwrap()).collect();
    assert_eq!(quantities, (1..=2 * EACH as i64).collect::<Vec<_>>());
    assert_eq!(sequences, (1..=2 * EACH as i64).collect::<Vec<_>>());
}

/// Subscribers that differ only in their `after` share one execution per live event: each
/// replays on its own, then takes the group's results from its seam on, exactly once.
#[tokio::test]
async fn resuming_subscribers_join_the_shared_execution_at_the_seam() {
    let app = spawn_app().await;
    let product = app.create_product("P", 0).await;
    let mut first = app.graphql_ws(None).await;
    first.subscribe_live(&app, "s", INVENTORY, json!({ "p": product })).await;
    let mut cursors = Vec::new();
    for q in 1..=4 {
        app.set_stock(&product, q).await;
        cursors.push(first.next_data("s").await["inventoryChanged"]["cursor"].as_str().unwrap().to_owned());
    }
    // Three clients resume from three different places while the first one stays live.
    let mut resumed = Vec::new();
    for cursor in &cursors[..3] {
        let mut ws = app.graphql_ws(None).await;
        ws.subscribe_live(&app, "s", INVENTORY, json!({ "p": product, "after": cursor })).await;
        resumed.push(ws);
    }
    assert_eq!(app.state.fanout.group_count(), 1, "one group for all four");
    let before = app.state.fanout.executions();
    for q in 5..=7 {
        app.set_stock(&product, q).await;
    }
    for (n, ws) in resumed.iter_mut().enumerate() {
        let expected: Vec<i64> = (n as i64 + 2..=7).collect();
        let got = take(ws, "s", "inventoryChanged", expected.len()).await;
        assert_eq!(got.iter().map(|e| e["newQuantity"].as_i64().unwrap()).collect::<Vec<_>>(), expected);
        ws.silent().await;
    }
    let live = take(&mut first, "s", "inventoryChanged", 3).await;
    assert_eq!(live.iter().map(|e| e["newQuantity"].as_i64().unwrap()).collect::<Vec<_>>(), [5, 6, 7]);
    assert_eq!(app.state.fanout.executions() - before, 3, "one execution per live event, however many resumed");
}

/// Subscribers that resume from the same place share one read of the log, even when the second
/// comes after the first one's replay was read and the group has delivered a live event since:
/// the latecomer gets the replay, then that event, then the live ones, each once.
#[tokio::test]
async fn a_later_resume_from_the_same_place_shares_the_replay_and_gets_what_came_between() {
    let app = spawn_app().await;
    let product = app.create_product("P", 0).await;
    let mut live = app.graphql_ws(None).await;
    live.subscribe_live(&app, "s", INVENTORY, json!({ "p": product })).await;
    app.set_stock(&product, 1).await;
    let cursor = live.next_data("s").await["inventoryChanged"]["cursor"].as_str().unwrap().to_owned();
    app.set_stock(&product, 2).await; // what both resumers missed
    assert_eq!(live.next_data("s").await["inventoryChanged"]["newQuantity"], 2);
    let quantities = |events: Vec<Value>| events.iter().map(|e| e["newQuantity"].as_i64().unwrap()).collect::<Vec<_>>();

    let mut early = app.graphql_ws(None).await;
    early.subscribe_live(&app, "s", INVENTORY, json!({ "p": product, "after": cursor })).await;
    assert_eq!(quantities(take(&mut early, "s", "inventoryChanged", 1).await), [2]);
    app.set_stock(&product, 3).await; // between the two resumes: live for the first
    assert_eq!(quantities(take(&mut early, "s", "inventoryChanged", 1).await), [3]);
    assert_eq!(quantities(take(&mut live, "s", "inventoryChanged", 1).await), [3]);

    let mut late = app.graphql_ws(None).await;
    late.subscribe_live(&app, "s", INVENTORY, json!({ "p": product, "after": cursor })).await;
    assert_eq!(
        quantities(take(&mut late, "s", "inventoryChanged", 2).await),
        [2, 3],
        "the replay, then what came between"
    );
    app.set_stock(&product, 4).await;
    for ws in [&mut live, &mut early, &mut late] {
        assert_eq!(quantities(take(ws, "s", "inventoryChanged", 1).await), [4]);
        ws.silent().await;
    }
    assert_eq!(app.state.fanout.replays_read(), 1, "one read of the log for both resumes");
    assert_eq!(app.state.fanout.group_count(), 1);
}

/// `/ws`: joining an entity room with `after` relays the updates since that cursor first, then
/// the live ones; an unusable cursor is refused and the room is not joined.
#[tokio::test]
async fn an_entity_room_joined_with_after_relays_what_was_missed() {
    let app = spawn_app().await;
    let product = app.create_product("P", 0).await;
    let order = app.create_order("alice").await;
    let alice = app.token("alice", TestRole::Customer);
    let mut ws = app.rooms_ws(&alice).await;
    ws.join(&format!("product:{product}")).await;
    ws.join(&format!("order:{order}")).await;
    app.set_stock(&product, 1).await;
    set_status(&app, &order, "PROCESSING").await;
    let stock_cursor = ws.expect("inventory_update").await["cursor"].as_str().unwrap().to_owned();
    let update = ws.expect("order_update").await;
    assert_eq!(update["sequence"], 2, "{update}");
    let order_cursor = update["cursor"].as_str().unwrap().to_owned();
    drop(ws);

    app.set_stock(&product, 2).await;
    set_status(&app, &order, "SHIPPED").await;
    app.set_stock(&product, 3).await;

    let mut ws = app.rooms_ws(&alice).await;
    ws.send(
        json!({ "type": "join_room", "payload": { "roomId": format!("product:{product}"), "after": stock_cursor } }),
    )
    .await;
    ws.expect("room_joined").await;
    let missed: Vec<i64> = vec![
        ws.expect("inventory_update").await["newQuantity"].as_i64().unwrap(),
        ws.expect("inventory_update").await["newQuantity"].as_i64().unwrap(),
    ];
    assert_eq!(missed, [2, 3]);
    ws.send(json!({ "type": "join_room", "payload": { "roomId": format!("order:{order}"), "after": order_cursor } }))
        .await;
    ws.expect("room_joined").await;
    assert_eq!(ws.expect("order_update").await["status"], "SHIPPED");
    app.set_stock(&product, 4).await;
    assert_eq!(ws.expect("inventory_update").await["newQuantity"], 4);
    ws.silent().await;

    // Refusals: a malformed cursor, one from another log, `after` on a room without updates.
    let other = format!("{}.1", "0".repeat(16));
    for (room, after, code) in [
        (format!("product:{product}"), "nope".to_owned(), "BAD_REQUEST"),
        (format!("order:{order}"), other, "CURSOR_EXPIRED"),
        ("lobby".to_owned(), stock_cursor.clone(), "BAD_REQUEST"),
    ] {
        let mut fresh = app.rooms_ws(&alice).await;
        fresh.send(json!({ "type": "join_room", "payload": { "roomId": room, "after": after } })).await;
        assert_eq!(fresh.expect_error().await, code, "{room}");
        fresh.silent().await;
    }
}

/// The position before a first event: `Query.eventCursor` (anyone may ask) and the graphql-ws
/// `connection_ack` both name the log's head, and subscribing with it as `after` delivers every
/// matching event committed after it, and nothing before, on every transport: graphql-ws, the
/// legacy protocol, SSE (`after` and `Last-Event-ID`) and an entity room's `join_room`.
#[tokio::test]
async fn the_position_before_a_first_event_resumes_on_every_transport() {
    let app = spawn_app().await;
    let product = app.create_product("P", 0).await;
    app.set_stock(&product, 1).await;
    let body = app.gql(None, "{ eventCursor }", json!({})).await;
    let cursor = body["data"]["eventCursor"].as_str().unwrap_or_else(|| panic!("{body}")).to_owned();
    assert_eq!(cursor, app.state.commerce.log().cursor(1), "the head: one change so far");

    // The ack says the same; a subscription sent with it, then dropped before any event...
    let mut ws = app.graphql_ws_unacked().await;
    ws.send(json!({ "type": "connection_init", "payload": {} })).await;
    let ack = ws.recv().await;
    assert_eq!(
        (ack["type"].as_str(), ack["payload"]["cursor"].as_str()),
        (Some("connection_ack"), Some(&*cursor)),
        "{ack}"
    );
    ws.subscribe_live(&app, "s", INVENTORY, json!({ "p": product, "after": cursor })).await;
    drop(ws);
    // ...misses nothing of what happens meanwhile, on any transport.
    app.set_stock(&product, 2).await;
    app.set_stock(&product, 3).await;
    let quantities = |events: &[Value]| events.iter().map(|e| e["newQuantity"].as_i64().unwrap()).collect::<Vec<_>>();

    let mut ws = app.graphql_ws(None).await;
    ws.subscribe("s", INVENTORY, json!({ "p": product, "after": cursor })).await;
    assert_eq!(quantities(&take(&mut ws, "s", "inventoryChanged", 2).await), [2, 3], "graphql-transport-ws");

    let mut legacy = GqlWs(app.ws_raw("/graphql", &["graphql-ws"], &[]).await.expect("upgrade"));
    legacy.send(json!({ "type": "connection_init", "payload": {} })).await;
    let ack = legacy.recv().await;
    assert_eq!(ack["payload"]["cursor"], json!(app.state.commerce.log().cursor(3)), "the legacy ack: {ack}");
    let start = json!({ "id": "1", "type": "start", "payload": { "query": INVENTORY, "variables": { "p": product, "after": cursor } } });
    legacy.send(start).await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let message = legacy.recv().await;
        if message["type"] == "data" {
            seen.push(message["payload"]["data"]["inventoryChanged"].clone());
        }
    }
    assert_eq!(quantities(&seen), [2, 3], "the legacy protocol");

    let mut sse = app.sse_post(None, INVENTORY, json!({ "p": product, "after": cursor })).await;
    let sse_seen = [sse.next().await.json(), sse.next().await.json()].map(|e| e["data"]["inventoryChanged"].clone());
    assert_eq!(quantities(&sse_seen), [2, 3], "SSE with after");
    let response = app
        .sse_request(reqwest::Method::POST, None)
        .header("accept", "text/event-stream")
        .header("last-event-id", &cursor)
        .json(&json!({ "query": "subscription($p: ID) { inventoryChanged(productId: $p) { newQuantity } }", "variables": { "p": product } }))
        .send()
        .await
        .expect("request");
    let mut sse = common::sse::Stream::new(response);
    let sse_seen = [sse.next().await.json(), sse.next().await.json()].map(|e| e["data"]["inventoryChanged"].clone());
    assert_eq!(quantities(&sse_seen), [2, 3], "SSE with Last-Event-ID");

    let mut room = app.rooms_ws(&app.staff()).await;
    room.send(json!({ "type": "join_room", "payload": { "roomId": format!("product:{product}"), "after": cursor } }))
        .await;
    room.expect("room_joined").await;
    let relayed = [room.expect("inventory_update").await, room.expect("inventory_update").await];
    assert_eq!(quantities(&relayed), [2, 3], "an entity room");

    // Each then goes on live, exactly once.
    app.set_stock(&product, 4).await;
    assert_eq!(ws.next_data("s").await["inventoryChanged"]["newQuantity"], 4);
    assert_eq!(room.expect("inventory_update").await["newQuantity"], 4);
    ws.silent().await;
    room.silent().await;
}

/// With several nodes on one store, a position taken on one resumes on another: the log is the
/// store's, so `eventCursor` names the same head on every node, and a subscription on the second
/// node started from the first node's cursor gets the changes made on both nodes since. The ack's
/// cursor is where a subscription on its node starts: never ahead of the head (here, with no
/// backplane, the second node never hears of the first one's changes, so it stays behind), and
/// a subscription from it misses nothing either.
#[tokio::test]
async fn the_position_taken_on_one_node_resumes_on_another() {
    let url = shared_store_url().await;
    let a = spawn_app_with(|c| c.database_url = url.clone()).await;
    let b = spawn_app_with(|c| c.database_url = url.clone()).await;
    let product = a.create_product("P", 0).await;
    a.set_stock(&product, 1).await;
    let cursor_of = |app: &TestApp, body: Value| {
        let cursor = body["data"]["eventCursor"].as_str().unwrap_or_else(|| panic!("{body}")).to_owned();
        assert_eq!(app.state.commerce.log().position_of(&cursor).expect("a cursor of this log"), 1);
        cursor
    };
    let cursor = cursor_of(&a, a.gql(None, "{ eventCursor }", json!({})).await);
    assert_eq!(cursor_of(&b, b.gql(None, "{ eventCursor }", json!({})).await), cursor, "one store, one head");
    let mut acked = b.graphql_ws_unacked().await;
    acked.send(json!({ "type": "connection_init" })).await;
    let ack = acked.recv().await["payload"]["cursor"].as_str().expect("a cursor").to_owned();
    let behind = b.state.commerce.log().position_of(&ack).expect("a cursor of this log");
    assert!(behind <= 1, "the ack's cursor never leads the head: {ack}");

    a.set_stock(&product, 2).await;
    b.set_stock(&product, 3).await;
    a.set_stock(&product, 4).await;
    acked.subscribe("s", INVENTORY, json!({ "p": product, "after": cursor })).await;
    let events = take(&mut acked, "s", "inventoryChanged", 3).await;
    assert_eq!(events.iter().map(|e| e["newQuantity"].as_i64().unwrap()).collect::<Vec<_>>(), [2, 3, 4]);
    assert_eq!(events.iter().map(|e| e["sequence"].as_i64().unwrap()).collect::<Vec<_>>(), [2, 3, 4]);
    acked.subscribe("t", INVENTORY, json!({ "p": product, "after": ack })).await;
    let from_ack = take(&mut acked, "t", "inventoryChanged", 4 - behind as usize).await;
    let expected: Vec<i64> = (behind as i64 + 1..=4).collect();
    assert_eq!(from_ack.iter().map(|e| e["newQuantity"].as_i64().unwrap()).collect::<Vec<_>>(), expected);
    acked.silent().await;
}
