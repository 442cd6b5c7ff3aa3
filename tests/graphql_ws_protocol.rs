//! graphql-transport-ws as the graphql-ws library's PROTOCOL.md specifies it: every close code,
//! ping/pong, `error` versus `next`, `complete` in both directions.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test]
async fn init_is_acknowledged_and_ping_is_answered_with_its_payload() {
    let app = spawn_app().await;
    let mut ws = app.graphql_ws(None).await;
    ws.send(json!({ "type": "ping", "payload": { "n": 1 } })).await;
    assert_eq!(ws.recv().await, json!({ "type": "pong", "payload": { "n": 1 } }));
    ws.send(json!({ "type": "pong" })).await; // unsolicited pong: ignored
    ws.silent().await;
}

#[tokio::test]
async fn no_init_within_the_timeout_closes_4408() {
    let app = spawn_app_with(|c| c.ws_init_timeout = 200).await;
    let mut ws = app.graphql_ws_unacked().await;
    assert_eq!(ws.closed().await, (4408, "Connection initialisation timeout".into()));
}

#[tokio::test]
async fn a_second_init_closes_4429() {
    let app = spawn_app().await;
    let mut ws = app.graphql_ws(None).await;
    ws.send(json!({ "type": "connection_init" })).await;
    assert_eq!(ws.closed().await, (4429, "Too many initialisation requests".into()));
}

#[tokio::test]
async fn a_bad_token_closes_4403_so_clients_may_retry() {
    let app = spawn_app().await;
    let mut ws = app.graphql_ws_unacked().await;
    ws.send(json!({ "type": "connection_init", "payload": { "authorization": "Bearer nonsense" } })).await;
    let (code, reason) = ws.closed().await;
    assert_eq!(code, 4403);
    assert!(reason.starts_with("Forbidden"), "{reason}");
}

#[tokio::test]
async fn a_role_spelled_in_capitals_closes_4403() {
    let app = spawn_app().await;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "sub": "u1", "role": "ADMIN", "exp": 4_000_000_000u64 }),
        &jsonwebtoken::EncodingKey::from_secret(b"test-secret"),
    )
    .unwrap();
    let mut ws = app.graphql_ws_unacked().await;
    ws.send(json!({ "type": "connection_init", "payload": { "authorization": token } })).await;
    let (code, reason) = ws.closed().await;
    assert_eq!(code, 4403, "{reason}");
}

#[tokio::test]
async fn an_expired_token_closes_4403() {
    let app = spawn_app().await;
    // Past the server's 30 s of leeway.
    let token = app.token_expiring("u1", TestRole::Customer, -120);
    let mut ws = app.graphql_ws_unacked().await;
    ws.send(json!({ "type": "connection_init", "payload": { "token": token } })).await;
    assert_eq!(ws.closed().await.0, 4403);
}

#[tokio::test]
async fn the_upgrade_requests_authorization_header_is_used_when_the_payload_has_none() {
    let app = spawn_app().await;
    let token = app.token("u7", TestRole::Customer);
    let auth = format!("Bearer {token}");
    let ws = app.ws_raw("/graphql", &["graphql-transport-ws"], &[("authorization", &auth)]).await.unwrap();
    let mut ws = GqlWs(ws);
    ws.send(json!({ "type": "connection_init" })).await;
    assert_eq!(ws.recv().await["type"], "connection_ack");
    ws.subscribe("1", "{ me { userId } }", json!({})).await;
    assert_eq!(ws.next_data("1").await, json!({ "me": { "userId": "u7" } }));
}

#[tokio::test]
async fn every_token_key_name_is_accepted_in_the_payload() {
    let app = spawn_app().await;
    let token = app.token("u2", TestRole::Customer);
    for key in ["authorization", "Authorization", "authToken", "token"] {
        let mut ws = app.graphql_ws_unacked().await;
        ws.send(json!({ "type": "connection_init", "payload": { key: token } })).await;
        assert_eq!(ws.recv().await["type"], "connection_ack", "{key}");
        ws.subscribe("q", "{ me { userId } }", json!({})).await;
        assert_eq!(ws.next_data("q").await["me"]["userId"], "u2", "{key}");
    }
}

#[tokio::test]
async fn subscribe_before_ack_closes_4401() {
    let app = spawn_app().await;
    let mut ws = app.graphql_ws_unacked().await;
    ws.subscribe("1", "{ products { id } }", json!({})).await;
    assert_eq!(ws.closed().await, (4401, "Unauthorized".into()));
}

#[tokio::test]
async fn a_duplicate_active_id_closes_4409() {
    let app = spawn_app().await;
    let mut ws = app.graphql_ws(None).await;
    ws.subscribe_live(&app, "a", "subscription { inventoryChanged { productId } }", json!({})).await;
    ws.subscribe("a", "subscription { inventoryChanged { productId } }", json!({})).await;
    assert_eq!(ws.closed().await, (4409, "Subscriber for a already exists".into()));
}

#[tokio::test]
async fn an_id_may_be_reused_once_its_operation_completed() {
    let app = spawn_app().await;
    let mut ws = app.graphql_ws(None).await;
    for _ in 0..2 {
        ws.subscribe("same", "{ products { id } }", json!({})).await;
        assert!(ws.next_data("same").await["products"].is_array());
        assert_eq!(ws.recv().await, json!({ "id": "same", "type": "complete" }));
    }
}

#[tokio::test]
async fn malformed_and_unknown_messages_close_4400_within_123_bytes() {
    let app = spawn_app().await;
    for bad in [
        "not json".to_owned(),
        json!({ "type": "hello" }).to_string(),
        json!({ "type": "subscribe", "id": 5, "payload": {} }).to_string(),
        json!({ "type": "subscribe", "id": "x".repeat(500) }).to_string(),
        "[]".to_owned(),
    ] {
        let mut ws = app.graphql_ws(None).await;
        ws.send_text(&bad).await;
        let (code, reason) = ws.closed().await;
        assert_eq!(code, 4400, "{bad}");
        assert!(reason.len() <= 123, "{reason}");
    }
    // The server is still there for others.
    let mut ws = app.graphql_ws(None).await;
    ws.send(json!({ "type": "ping" })).await;
    assert_eq!(ws.recv().await["type"], "pong");
}

#[tokio::test]
async fn a_long_duplicate_id_keeps_the_close_reason_within_123_bytes() {
    let app = spawn_app().await;
    let mut ws = app.graphql_ws(None).await;
    let id = "é".repeat(200);
    ws.subscribe_live(&app, &id, "subscription { inventoryChanged { productId } }", json!({})).await;
    ws.subscribe(&id, "subscription { inventoryChanged { productId } }", json!({})).await;
    let (code, reason) = ws.closed().await;
    assert_eq!(code, 4409);
    assert!(reason.len() <= 123 && reason.starts_with("Subscriber for"));
}

#[tokio::test]
async fn binary_frames_close_4400() {
    use futures::SinkExt;
    let app = spawn_app().await;
    let mut ws = app.graphql_ws(None).await;
    ws.0.send(tokio_tungstenite::tungstenite::Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    assert_eq!(ws.closed().await.0, 4400);
}

#[tokio::test]
async fn a_missing_subprotocol_closes_4406() {
    let app = spawn_app().await;
    let mut ws = GqlWs(app.ws_raw("/graphql", &[], &[]).await.unwrap());
    assert_eq!(ws.closed().await.0, 4406);
}

#[tokio::test]
async fn validation_errors_are_an_error_message_without_complete() {
    let app = spawn_app().await;
    let mut ws = app.graphql_ws(None).await;
    ws.subscribe("v", "subscription { inventoryChanged { nope } }", json!({})).await;
    assert_eq!(ws.error_code("v").await, "GRAPHQL_VALIDATION_FAILED");
    ws.subscribe("p", "subscription { inventoryChanged { ", json!({})).await;
    assert_eq!(ws.error_code("p").await, "GRAPHQL_PARSE_FAILED");
    ws.silent().await; // no `complete` follows an `error`
    // The socket stays usable.
    ws.subscribe("ok", "{ products { id } }", json!({})).await;
    ws.next_data("ok").await;
}

#[tokio::test]
async fn refusals_at_subscribe_time_are_an_error_message() {
    let app = spawn_app().await;
    let order = app.create_order("c1").await;
    let mut anonymous = app.graphql_ws(None).await;
    anonymous.subscribe("1", "subscription { notificationCreated { id } }", json!({})).await;
    assert_eq!(anonymous.error_code("1").await, "UNAUTHENTICATED");

    let mut other = app.graphql_ws(Some(&app.token("c2", TestRole::Customer))).await;
    let q = "subscription($id: ID!) { orderUpdated(orderId: $id) { orderId } }";
    other.subscribe("2", q, json!({ "id": order })).await;
    assert_eq!(other.error_code("2").await, "FORBIDDEN");
    other.subscribe("3", q, json!({ "id": "999999" })).await;
    assert_eq!(other.error_code("3").await, "NOT_FOUND");
    other.silent().await;
}

#[tokio::test]
async fn queries_and_mutations_run_over_the_socket_with_next_then_complete() {
    let app = spawn_app().await;
    let product = app.create_product("SKU-1", 5).await;
    let mut ws = app.graphql_ws(Some(&app.staff())).await;
    ws.subscribe(
        "m",
        "mutation($p: ID!) { adjustInventory(productId: $p, delta: 2) { quantity } }",
        json!({ "p": product }),
    )
    .await;
    assert_eq!(ws.next_data("m").await, json!({ "adjustInventory": { "quantity": 7 } }));
    assert_eq!(ws.recv().await, json!({ "id": "m", "type": "complete" }));
    // A resolver error in a mutation is an execution result: `next` with errors, then `complete`.
    ws.subscribe(
        "bad",
        "mutation($p: ID!) { adjustInventory(productId: $p, delta: -100) { quantity } }",
        json!({ "p": product }),
    )
    .await;
    let next = ws.recv().await;
    assert_eq!(next["type"], "next", "{next}");
    assert_eq!(next["payload"]["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert_eq!(ws.recv().await["type"], "complete");
}

#[tokio::test]
async fn client_complete_stops_the_stream_and_is_not_echoed() {
    let app = spawn_app().await;
    let product = app.create_product("SKU-1", 5).await;
    let mut ws = app.graphql_ws(None).await;
    ws.subscribe_live(&app, "s", "subscription { inventoryChanged { newQuantity } }", json!({})).await;
    ws.send(json!({ "id": "s", "type": "complete" })).await;
    ws.send(json!({ "id": "never-existed", "type": "complete" })).await;
    // Once the server has handled the completes (the pong proves it), nothing is delivered.
    ws.send(json!({ "type": "ping" })).await;
    assert_eq!(ws.recv().await["type"], "pong");
    app.gql(
        Some(&app.staff()),
        "mutation($p: ID!) { setInventory(productId: $p, quantity: 1) { id } }",
        json!({ "p": product }),
    )
    .await;
    ws.silent().await;
    assert_eq!(app.state.connections.subscription_count(), 0);
}

#[tokio::test]
async fn the_server_pings_and_closes_a_silent_peer() {
    let app = spawn_app_with(|c| {
        c.ws_heartbeat_interval = 100;
        c.ws_inactive_timeout = 600;
    })
    .await;
    // A peer that answers pings (tungstenite does, when read) stays; one that is never read from
    // cannot answer and is dropped.
    let mut alive = app.graphql_ws(None).await;
    let mut dead = app.graphql_ws(None).await;
    for _ in 0..6 {
        // Reading is what makes tungstenite answer the pings.
        assert!(matches!(alive.next_within(Duration::from_millis(200)).await, Next::Silent));
    }
    let (code, _) = dead.closed().await;
    assert_eq!(code, 1001);
    alive.send(json!({ "type": "ping" })).await;
    assert_eq!(alive.recv().await["type"], "pong");
}

#[tokio::test]
async fn a_token_that_expires_while_connected_closes_4403() {
    let app = spawn_app().await;
    // exp one second in the past: accepted thanks to the 30 s leeway, which then runs out.
    let token = app.token_expiring("u1", TestRole::Customer, -29);
    let mut ws = app.graphql_ws(Some(&token)).await;
    let (code, reason) = ws.closed().await;
    assert_eq!(code, 4403, "{reason}");
    assert!(reason.contains("expired"));
}

#[tokio::test]
async fn oversized_messages_close_the_socket_and_spare_the_others() {
    let app = spawn_app_with(|c| c.ws_max_message_bytes = 8 * 1024).await;
    let mut bystander = app.graphql_ws(None).await;
    let mut ws = app.graphql_ws(None).await;
    let big = format!("{{ products {{ id }} }} # {}", "x".repeat(20_000));
    ws.subscribe("big", &big, json!({})).await;
    assert_eq!(ws.closed().await, (1009, "message too big".into()));
    bystander.send(json!({ "type": "ping" })).await;
    assert_eq!(bystander.recv().await["type"], "pong");
}

#[tokio::test]
async fn deeply_nested_value_literals_are_refused_without_harm() {
    let app = spawn_app().await;
    let mut ws = app.graphql_ws(None).await;
    let deep = format!("{{ products(first: {}1{}) {{ id }} }}", "[".repeat(3000), "]".repeat(3000));
    ws.subscribe("deep", &deep, json!({})).await;
    assert_eq!(ws.error_code("deep").await, "GRAPHQL_PARSE_FAILED");
    ws.subscribe("after", "{ products { id } }", json!({})).await;
    ws.next_data("after").await;
}

#[tokio::test]
async fn too_many_operations_on_one_socket_are_refused_one_by_one() {
    let app = spawn_app_with(|c| c.ws_max_operations = 2).await;
    let mut ws = app.graphql_ws(None).await;
    ws.subscribe_live(&app, "1", "subscription { inventoryChanged { productId } }", json!({})).await;
    ws.subscribe_live(&app, "2", "subscription { inventoryChanged { productId } }", json!({})).await;
    ws.subscribe("3", "subscription { inventoryChanged { productId } }", json!({})).await;
    assert_eq!(ws.error_code("3").await, "BAD_USER_INPUT");
    ws.send(json!({ "type": "ping" })).await;
    assert_eq!(ws.recv().await["type"], "pong");
}
