//! The four subscriptions: delivery, per-viewer filtering, ordering under concurrency, slow
//! subscribers, the legacy protocol, and shutdown.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const INVENTORY: &str = "subscription($p: ID) { inventoryChanged(productId: $p) { productId previousQuantity newQuantity timestamp product { quantity } } }";
const ORDER_UPDATED: &str = "subscription($o: ID!) { orderUpdated(orderId: $o) { orderId status paymentStatus trackingNumber changedFields updatedAt order { id status customerId } } }";
const ORDER_EVENTS: &str =
    "subscription($s: OrderStatus) { orderEvents(status: $s) { kind changedFields order { id customerId status } } }";
const NOTIFICATIONS: &str = "subscription { notificationCreated { id type title message userId createdAt } }";

async fn update_order(app: &TestApp, order: &str, input: Value) -> Value {
    app.gql(
        Some(&app.staff()),
        "mutation($o: ID!, $i: UpdateOrderInput!) { updateOrder(id: $o, input: $i) { status } }",
        json!({ "o": order, "i": input }),
    )
    .await
}

#[tokio::test]
async fn inventory_changed_delivers_previous_and_new_quantity_for_the_chosen_product() {
    let app = spawn_app().await;
    let a = app.create_product("A", 5).await;
    let b = app.create_product("B", 5).await;
    let mut only_a = app.graphql_ws(None).await;
    only_a.subscribe_live(&app, "a", INVENTORY, json!({ "p": a })).await;
    let mut all = app.graphql_ws(None).await;
    all.subscribe_live(&app, "all", INVENTORY, json!({})).await;

    app.set_stock(&b, 7).await;
    app.set_stock(&a, 9).await;

    let event = only_a.next_data("a").await["inventoryChanged"].clone();
    assert_eq!(
        (event["productId"].as_str(), event["previousQuantity"].as_i64(), event["newQuantity"].as_i64()),
        (Some(a.as_str()), Some(5), Some(9))
    );
    assert_eq!(event["product"]["quantity"], 9);
    only_a.silent().await; // B's change was not for it
    assert_eq!(all.next_data("all").await["inventoryChanged"]["productId"], b);
    assert_eq!(all.next_data("all").await["inventoryChanged"]["productId"], a);
}

#[tokio::test]
async fn inventory_changed_for_an_unknown_product_is_not_found() {
    let app = spawn_app().await;
    let mut ws = app.graphql_ws(None).await;
    ws.subscribe("x", INVENTORY, json!({ "p": "404" })).await;
    assert_eq!(ws.error_code("x").await, "NOT_FOUND");
}

#[tokio::test]
async fn concurrent_adjustments_lose_nothing_and_arrive_in_order() {
    let app = spawn_app().await;
    let product = app.create_product("P", 100).await;
    let mut ws = app.graphql_ws(None).await;
    ws.subscribe_live(&app, "s", INVENTORY, json!({ "p": product })).await;

    let staff = app.staff();
    let adjust = "mutation($p: ID!) { adjustInventory(productId: $p, delta: 1) { quantity } }";
    let calls = (0..50).map(|_| app.gql(Some(&staff), adjust, json!({ "p": product })));
    for body in futures::future::join_all(calls).await {
        assert!(body["errors"].is_null(), "{body}");
    }

    let mut expected_previous = 100;
    for _ in 0..50 {
        let event = ws.next_data("s").await["inventoryChanged"].clone();
        assert_eq!(event["previousQuantity"], expected_previous, "{event}");
        assert_eq!(event["newQuantity"], expected_previous + 1, "{event}");
        expected_previous += 1;
    }
    assert_eq!(expected_previous, 150);
    ws.silent().await;
    let body = app.gql(None, "query($p: ID!) { product(id: $p) { quantity } }", json!({ "p": product })).await;
    assert_eq!(body["data"]["product"]["quantity"], 150);
}

#[tokio::test]
async fn order_updated_reaches_the_owner_and_staff_with_changed_fields() {
    let app = spawn_app().await;
    let order = app.create_order("c1").await;
    let mut owner = app.graphql_ws(Some(&app.token("c1", TestRole::Customer))).await;
    owner.subscribe_live(&app, "o", ORDER_UPDATED, json!({ "o": order })).await;
    let mut staff = app.graphql_ws(Some(&app.staff())).await;
    staff.subscribe_live(&app, "s", ORDER_UPDATED, json!({ "o": order })).await;
    let other_order = app.create_order("c1").await;

    update_order(&app, &other_order, json!({ "status": "CANCELLED" })).await;
    update_order(&app, &order, json!({ "status": "SHIPPED", "trackingNumber": "TN-1" })).await;
    update_order(&app, &order, json!({ "status": "SHIPPED" })).await; // no change: no event
    update_order(&app, &order, json!({ "paymentStatus": "PAID" })).await;

    for (ws, id) in [(&mut owner, "o"), (&mut staff, "s")] {
        let first = ws.next_data(id).await["orderUpdated"].clone();
        assert_eq!(first["orderId"], order);
        assert_eq!(first["status"], "SHIPPED");
        assert_eq!(first["trackingNumber"], "TN-1");
        assert_eq!(first["changedFields"], json!(["status", "trackingNumber"]));
        assert_eq!(first["order"]["status"], "SHIPPED");
        let second = ws.next_data(id).await["orderUpdated"].clone();
        assert_eq!(second["changedFields"], json!(["paymentStatus"]));
        assert_eq!(second["paymentStatus"], "PAID");
        ws.silent().await;
    }
}

#[tokio::test]
async fn order_updated_completes_when_the_order_is_deleted() {
    let app = spawn_app().await;
    let order = app.create_order("c1").await;
    let mut ws = app.graphql_ws(Some(&app.staff())).await;
    ws.subscribe_live(&app, "o", ORDER_UPDATED, json!({ "o": order })).await;
    app.gql(Some(&app.staff()), "mutation($o: ID!) { deleteOrder(id: $o) { id } }", json!({ "o": order })).await;
    assert_eq!(ws.recv().await, json!({ "id": "o", "type": "complete" }));
}

#[tokio::test]
async fn order_events_are_filtered_per_customer_whatever_the_arguments() {
    let app = spawn_app().await;
    let mut c1 = app.graphql_ws(Some(&app.token("c1", TestRole::Customer))).await;
    c1.subscribe_live(&app, "e", ORDER_EVENTS, json!({})).await;
    let mut staff = app.graphql_ws(Some(&app.staff())).await;
    staff.subscribe_live(&app, "e", ORDER_EVENTS, json!({})).await;
    let mut shipped_only = app.graphql_ws(Some(&app.staff())).await;
    shipped_only.subscribe_live(&app, "e", ORDER_EVENTS, json!({ "s": "SHIPPED" })).await;

    let theirs = app.create_order("c2").await;
    let mine = app.create_order("c1").await;
    update_order(&app, &theirs, json!({ "status": "SHIPPED" })).await;
    update_order(&app, &mine, json!({ "status": "SHIPPED" })).await;
    app.gql(Some(&app.staff()), "mutation($o: ID!) { deleteOrder(id: $o) { id } }", json!({ "o": mine })).await;

    let kinds = |events: Vec<Value>| -> Vec<(String, String)> {
        events
            .iter()
            .map(|e| {
                (
                    e["orderEvents"]["kind"].as_str().unwrap().to_owned(),
                    e["orderEvents"]["order"]["id"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(c1.next_data("e").await);
    }
    assert_eq!(
        kinds(got),
        vec![("CREATED".into(), mine.clone()), ("UPDATED".into(), mine.clone()), ("DELETED".into(), mine.clone())]
    );
    c1.silent().await;

    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(staff.next_data("e").await);
    }
    assert_eq!(got[2]["orderEvents"]["changedFields"], json!(["status"]));
    assert_eq!(kinds(got).len(), 5);

    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(shipped_only.next_data("e").await);
    }
    for event in &got {
        assert_eq!(event["orderEvents"]["order"]["status"], "SHIPPED");
    }
    shipped_only.silent().await;
}

#[tokio::test]
async fn notifications_reach_their_user_alone() {
    let app = spawn_app().await;
    let mut c1 = app.graphql_ws(Some(&app.token("c1", TestRole::Customer))).await;
    c1.subscribe_live(&app, "n", NOTIFICATIONS, json!({})).await;
    let mut c1_tab2 = app.graphql_ws(Some(&app.token("c1", TestRole::Customer))).await;
    c1_tab2.subscribe_live(&app, "n", NOTIFICATIONS, json!({})).await;
    let mut admin = app.graphql_ws(Some(&app.token("a1", TestRole::Admin))).await;
    admin.subscribe_live(&app, "n", NOTIFICATIONS, json!({})).await;

    app.notify("c2", "not yours").await;
    app.notify("c1", "yours").await;

    for ws in [&mut c1, &mut c1_tab2] {
        let n = ws.next_data("n").await["notificationCreated"].clone();
        assert_eq!(
            (n["title"].as_str(), n["userId"].as_str(), n["type"].as_str()),
            (Some("yours"), Some("c1"), Some("info"))
        );
        ws.silent().await;
    }
    admin.silent().await;
}

#[tokio::test]
async fn a_refused_mutation_publishes_nothing() {
    let app = spawn_app().await;
    let product = app.create_product("P", 1).await;
    let mut ws = app.graphql_ws(None).await;
    ws.subscribe_live(&app, "s", INVENTORY, json!({ "p": product })).await;
    let adjust = "mutation($p: ID!, $d: Int!) { adjustInventory(productId: $p, delta: $d) { quantity } }";
    let customer = app.token("c1", TestRole::Customer);
    assert_eq!(error_code(&app.gql(Some(&customer), adjust, json!({ "p": product, "d": 1 })).await), "FORBIDDEN");
    assert_eq!(
        error_code(&app.gql(Some(&app.staff()), adjust, json!({ "p": product, "d": -5 })).await),
        "BAD_USER_INPUT"
    );
    ws.silent().await;
}

/// A subscriber that stops reading is closed with 1013 (retryable) once its queue overflows; a
/// subscriber of the same product that keeps reading gets every event, in order, undisturbed.
#[tokio::test]
async fn a_slow_subscriber_is_closed_retryably_and_never_slows_the_others() {
    let app = spawn_app_with(|c| c.subscriber_queue = 4).await;
    let user = app.token("c1", TestRole::Customer);
    let mut slow = app.graphql_ws(Some(&user)).await;
    slow.subscribe_live(&app, "n", NOTIFICATIONS, json!({})).await;
    let mut fast = app.graphql_ws(Some(&user)).await;
    fast.subscribe_live(&app, "n", NOTIFICATIONS, json!({})).await;

    // Big events fill the slow socket's TCP buffers quickly, and then its queue.
    let big = "x".repeat(200_000);
    let q = "mutation($m: String!, $t: String!) { sendNotification(input: {userId: \"c1\", type: \"bulk\", title: $t, message: $m}) { id } }";
    let staff = app.staff();
    let reader = tokio::spawn(async move {
        let mut titles = Vec::new();
        while titles.len() < 60 {
            let data = fast.next_data("n").await;
            titles.push(data["notificationCreated"]["title"].as_str().unwrap().to_owned());
        }
        titles
    });
    for i in 0..60 {
        let body = app.gql(Some(&staff), q, json!({ "m": big, "t": i.to_string() })).await;
        assert!(body["errors"].is_null(), "{body}");
    }
    let titles = tokio::time::timeout(Duration::from_secs(30), reader).await.expect("fast reader done").unwrap();
    assert_eq!(titles, (0..60).map(|i| i.to_string()).collect::<Vec<_>>());

    // The slow one, read at last: what it got is in order with no gap, then 1013.
    let mut last = -1i64;
    let give_up = Instant::now() + Duration::from_secs(30);
    let close = loop {
        assert!(Instant::now() < give_up, "the slow subscriber was never closed");
        match slow.next_within(Duration::from_secs(10)).await {
            Next::Json(message) => {
                let title: i64 =
                    message["payload"]["data"]["notificationCreated"]["title"].as_str().unwrap().parse().unwrap();
                assert_eq!(title, last + 1, "no gap before the close");
                last = title;
            }
            Next::Closed(frame) => break frame,
            Next::Silent => panic!("the slow subscriber was never closed"),
        }
    };
    let (code, reason) = close.expect("a close frame");
    assert_eq!(code, 1013, "{reason}");
    assert!(last < 59, "some events were refused to the slow subscriber");
    assert!(app.metrics().await.contains("switchboard_deliveries_lagged_total"));
}

#[tokio::test]
async fn the_legacy_graphql_ws_protocol_serves_subscriptions() {
    let app = spawn_app().await;
    let product = app.create_product("P", 1).await;
    let mut ws = GqlWs(app.ws_raw("/graphql", &["graphql-ws"], &[]).await.unwrap());
    ws.send(json!({ "type": "connection_init", "payload": { "authToken": app.staff() } })).await;
    assert_eq!(ws.recv().await["type"], "connection_ack");
    assert_eq!(ws.recv().await["type"], "ka");
    ws.send(json!({ "id": "1", "type": "start", "payload": { "query": INVENTORY, "variables": { "p": product } } }))
        .await;
    ws.send(json!({ "id": "q", "type": "start", "payload": { "query": "{ me { userId } }" } })).await;
    let data = ws.recv().await;
    assert_eq!((data["type"].as_str(), data["id"].as_str()), (Some("data"), Some("q")));
    assert_eq!(data["payload"]["data"]["me"]["userId"], "staff-1");
    assert_eq!(ws.recv().await, json!({ "id": "q", "type": "complete" }));
    let deadline = Instant::now() + WAIT;
    while app.state.connections.subscription_count() == 0 {
        assert!(Instant::now() < deadline, "the legacy subscription never went live");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    app.set_stock(&product, 4).await;
    let data = ws.recv().await;
    assert_eq!((data["type"].as_str(), data["id"].as_str()), (Some("data"), Some("1")));
    assert_eq!(data["payload"]["data"]["inventoryChanged"]["newQuantity"], 4);
    ws.send(json!({ "id": "1", "type": "stop" })).await;
    ws.send(json!({ "type": "bogus" })).await;
    assert_eq!(ws.recv().await["type"], "connection_error");
    ws.send(json!({ "id": "v", "type": "start", "payload": { "query": "{ nope }" } })).await;
    let error = ws.recv().await;
    assert_eq!((error["type"].as_str(), error["id"].as_str()), (Some("error"), Some("v")));
    ws.send(json!({ "type": "connection_terminate" })).await;
    assert_eq!(ws.closed().await.0, 1000);
}

#[tokio::test]
async fn the_legacy_protocol_refuses_a_bad_token_with_connection_error_then_4403() {
    let app = spawn_app().await;
    let mut ws = GqlWs(app.ws_raw("/graphql", &["graphql-ws"], &[]).await.unwrap());
    ws.send(json!({ "type": "connection_init", "payload": { "authToken": "bad" } })).await;
    assert_eq!(ws.recv().await["type"], "connection_error");
    assert_eq!(ws.closed().await.0, 4403);
}

#[tokio::test]
async fn shutdown_closes_every_socket_with_1001_promptly() {
    let app = spawn_app().await;
    let mut sockets = Vec::new();
    for i in 0..5 {
        let mut ws = app.graphql_ws(Some(&app.token(&format!("u{i}"), TestRole::Customer))).await;
        ws.subscribe_live(&app, "n", NOTIFICATIONS, json!({})).await;
        sockets.push(ws);
    }
    let mut unacked = app.graphql_ws_unacked().await;
    let started = Instant::now();
    let stopping = tokio::spawn(app.stop());
    for ws in &mut sockets {
        assert_eq!(ws.closed().await, (1001, "server shutting down".into()));
    }
    assert_eq!(unacked.closed().await.0, 1001);
    tokio::time::timeout(Duration::from_secs(5), stopping).await.expect("shutdown finishes").unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

/// Identical subscriptions share one execution per event; different audiences never share.
#[tokio::test]
async fn identical_subscriptions_share_one_execution_per_event() {
    let app = spawn_app().await;
    let product = app.create_product("P", 1).await;
    let mut sockets = Vec::new();
    for i in 0..5 {
        let mut ws = app.graphql_ws(Some(&app.token(&format!("c{i}"), TestRole::Customer))).await;
        ws.subscribe_live(&app, "s", INVENTORY, json!({ "p": product })).await;
        sockets.push(ws);
    }
    assert_eq!(app.state.fanout.group_count(), 1, "five viewers, one audience: one group");
    let mut c1 = app.graphql_ws(Some(&app.token("c1", TestRole::Customer))).await;
    c1.subscribe_live(&app, "n", NOTIFICATIONS, json!({})).await;
    let mut c2 = app.graphql_ws(Some(&app.token("c2", TestRole::Customer))).await;
    c2.subscribe_live(&app, "n", NOTIFICATIONS, json!({})).await;
    assert_eq!(app.state.fanout.group_count(), 3, "each user's notifications are their own group");

    // This server's own count (the metric of the same name is shared by every server in the
    // process, and other tests run beside this one).
    let before = app.state.fanout.executions();
    app.set_stock(&product, 2).await;
    app.set_stock(&product, 3).await;
    for ws in &mut sockets {
        assert_eq!(ws.next_data("s").await["inventoryChanged"]["newQuantity"], 2);
        assert_eq!(ws.next_data("s").await["inventoryChanged"]["newQuantity"], 3);
    }
    assert_eq!(app.state.fanout.executions() - before, 2, "two events, one execution each");

    // Leaving and rejoining: the group ends with its last member and starts afresh.
    drop(sockets);
    let deadline = Instant::now() + WAIT;
    while app.state.fanout.group_count() != 2 {
        assert!(Instant::now() < deadline, "the group outlived its members");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut again = app.graphql_ws(None).await;
    again.subscribe_live(&app, "s", INVENTORY, json!({ "p": product })).await;
    app.set_stock(&product, 4).await;
    assert_eq!(again.next_data("s").await["inventoryChanged"]["newQuantity"], 4);
}
