//! Connection limits: the node's total (`MAX_CONNECTIONS`, then `503` before the upgrade), each
//! user's share (`MAX_CONNECTIONS_PER_USER`: `429` before the upgrade on `/ws`, close `1013` right
//! after `connection_init` on graphql-ws), and the operations an anonymous graphql-ws connection
//! may run (`WS_MAX_OPERATIONS_ANONYMOUS`). A closed connection gives its place back.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;

/// The status a refused upgrade was answered with.
async fn refused_upgrade(app: &TestApp, path: &str, protocols: &[&str]) -> u16 {
    match app.ws_raw(path, protocols, &[]).await {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("{path}: expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("{path}: upgraded past the limit"),
    }
}

/// Polls `upgrade` until it succeeds: a closed connection's place comes back once its close
/// handshake is over, which takes a moment.
async fn eventually_upgrades(app: &TestApp, path: &str, protocols: &[&str]) -> GqlWs {
    let deadline = Instant::now() + WAIT;
    loop {
        match app.ws_raw(path, protocols, &[]).await {
            Ok(ws) => return GqlWs(ws),
            Err(e) => assert!(Instant::now() < deadline, "{path}: still refused after the close: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn past_max_connections_every_upgrade_is_refused_with_503() {
    let app = spawn_app_with(|c| c.max_connections = 2).await;
    let rooms_path = format!("/ws?token={}", app.token("alice", TestRole::Customer));
    let mut graphql = app.graphql_ws(None).await;
    let _rooms = app.rooms_ws(&app.token("bob", TestRole::Customer)).await;

    assert_eq!(refused_upgrade(&app, "/graphql", &["graphql-transport-ws"]).await, 503);
    assert_eq!(refused_upgrade(&app, &rooms_path, &[]).await, 503);
    // HTTP is not a connection that counts.
    assert_eq!(app.gql(None, "{ products { id } }", json!({})).await["errors"], json!(null));

    graphql.0.close(None).await.unwrap();
    let mut again = eventually_upgrades(&app, &rooms_path, &[]).await;
    assert_eq!(again.expect("connection_established").await["userId"], "alice");
}

#[tokio::test]
async fn past_max_connections_per_user_ws_is_refused_with_429_and_others_still_connect() {
    let app = spawn_app().await; // 100 per user by default
    let alice = app.token("alice", TestRole::Customer);
    let mut sockets = Vec::new();
    for _ in 0..100 {
        sockets.push(app.rooms_ws(&alice).await);
    }
    assert_eq!(refused_upgrade(&app, &format!("/ws?token={alice}"), &[]).await, 429);
    let mut bob = app.rooms_ws(&app.token("bob", TestRole::Customer)).await;
    bob.send(json!({ "type": "ping" })).await;
    assert_eq!(bob.expect("pong").await, json!({}));

    sockets.pop().unwrap().0.close(None).await.unwrap();
    let mut again = eventually_upgrades(&app, &format!("/ws?token={alice}"), &[]).await;
    assert_eq!(again.expect("connection_established").await["userId"], "alice");
}

#[tokio::test]
async fn a_user_over_the_limit_on_graphql_ws_is_closed_1013_right_after_connection_init() {
    let app = spawn_app().await;
    let alice = app.token("alice", TestRole::Customer);
    // Connections count across channels: 60 on /ws, 40 on graphql-ws.
    let mut sockets = Vec::new();
    for _ in 0..60 {
        sockets.push(app.rooms_ws(&alice).await);
    }
    for _ in 0..40 {
        sockets.push(app.graphql_ws(Some(&alice)).await);
    }
    let mut over = app.graphql_ws_unacked().await;
    over.send(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {alice}") } })).await;
    assert_eq!(over.closed().await, (1013, "too many connections for this user".into()));
    // An anonymous connection is not anyone's.
    let mut anonymous = app.graphql_ws(None).await;
    anonymous.send(json!({ "type": "ping" })).await;
    assert_eq!(anonymous.recv().await["type"], "pong");
}

#[tokio::test]
async fn anonymous_graphql_ws_connections_run_few_operations_at_once() {
    let app = spawn_app().await; // 10 for anonymous connections by default
    let query = "subscription { inventoryChanged { productId } }";
    let mut anonymous = app.graphql_ws(None).await;
    for id in 0..10 {
        anonymous.subscribe_live(&app, &id.to_string(), query, json!({})).await;
    }
    anonymous.subscribe("10", query, json!({})).await;
    assert_eq!(anonymous.error_code("10").await, "BAD_USER_INPUT");
    // Completing one makes room for another.
    anonymous.send(json!({ "id": "0", "type": "complete" })).await;
    anonymous.send(json!({ "type": "ping" })).await;
    assert_eq!(anonymous.recv().await["type"], "pong");
    anonymous.subscribe_live(&app, "11", query, json!({})).await;

    let mut signed_in = app.graphql_ws(Some(&app.token("alice", TestRole::Customer))).await;
    for id in 0..11 {
        signed_in.subscribe_live(&app, &id.to_string(), query, json!({})).await;
    }
}
