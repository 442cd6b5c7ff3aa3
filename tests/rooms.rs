//! The room channel at `/ws` (`docs/rooms.md`, issue 3) over real sockets: identity before the
//! upgrade, rooms and their rules, presence that agrees with GraphQL, typing, entity relays,
//! liveness, limits, and the failure paths (killed and silent clients, floods, malformed frames,
//! expiry, shutdown).

mod common;

use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::{self, Message};

fn customer(app: &TestApp, sub: &str) -> String {
    app.token(sub, TestRole::Customer)
}

/// `roomPresence` as staff sees it.
async fn presence(app: &TestApp, room_id: &str) -> Vec<Value> {
    let body = app
        .gql(
            Some(&app.staff()),
            "query($r: String!) { roomPresence(roomId: $r) { userId name connections joinedAt isTyping typingField } }",
            json!({ "r": room_id }),
        )
        .await;
    body["data"]["roomPresence"].as_array().unwrap_or_else(|| panic!("{body}")).clone()
}

fn user_ids(members: &[Value]) -> Vec<&str> {
    members.iter().map(|m| m["userId"].as_str().unwrap()).collect()
}

async fn is_online(app: &TestApp, user_id: &str) -> bool {
    let body =
        app.gql(Some(&app.staff()), "query($u: ID!) { isUserOnline(userId: $u) }", json!({ "u": user_id })).await;
    body["data"]["isUserOnline"].as_bool().unwrap_or_else(|| panic!("{body}"))
}

async fn stats(app: &TestApp) -> Value {
    let body = app
        .gql(
            Some(&app.staff()),
            "{ stats { userCount totalConnections activeRooms roomStats { roomId clientCount } } }",
            json!({}),
        )
        .await;
    body["data"]["stats"].clone()
}

async fn leave(ws: &mut GqlWs, room_id: &str) {
    ws.send(json!({ "type": "leave_room", "payload": { "roomId": room_id } })).await;
    assert_eq!(ws.expect("room_left").await, json!({ "roomId": room_id }));
}

async fn typing(ws: &mut GqlWs, room_id: &str, is_typing: bool, field: Option<&str>) {
    ws.send(
        json!({ "type": "typing_indicator", "payload": { "roomId": room_id, "isTyping": is_typing, "field": field } }),
    )
    .await;
}

async fn ping(ws: &mut GqlWs) {
    ws.send(json!({ "type": "ping" })).await;
    assert_eq!(ws.expect("pong").await, json!({}));
}

/// Kills a client the hard way: no close frame, and a TCP reset rather than an orderly FIN.
fn kill(ws: GqlWs) {
    if let MaybeTlsStream::Plain(tcp) = ws.0.get_ref() {
        #[allow(deprecated)] // SO_LINGER 0 is exactly the point: reset on drop, without blocking
        tcp.set_linger(Some(Duration::ZERO)).expect("set linger");
    }
    drop(ws);
}

async fn gql_ok(app: &TestApp, query: &str, variables: Value) -> Value {
    let body = app.gql(Some(&app.staff()), query, variables).await;
    assert!(body["errors"].is_null(), "{body}");
    body["data"].clone()
}

// ---------------------------------------------------------------- identity

#[tokio::test]
async fn a_missing_invalid_or_expired_token_is_refused_with_401_before_the_upgrade() {
    let app = spawn_app().await;
    let expired = app.token_expiring("alice", TestRole::Customer, -120);
    let foreign = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "sub": "alice", "exp": chrono::Utc::now().timestamp() + 600 }),
        &jsonwebtoken::EncodingKey::from_secret(b"another-secret"),
    )
    .unwrap();
    let attempts: Vec<(String, Vec<(&str, String)>)> = vec![
        ("/ws".into(), vec![]),
        ("/ws?token=".into(), vec![]),
        ("/ws?token=nonsense".into(), vec![]),
        (format!("/ws?token={expired}"), vec![]),
        (format!("/ws?token={foreign}"), vec![]),
        ("/ws".into(), vec![("authorization", "Bearer nonsense".into())]),
        ("/ws".into(), vec![("authorization", format!("Bearer {expired}"))]),
        ("/ws".into(), vec![("authorization", "Bearer ".into())]),
    ];
    for (path, headers) in attempts {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        match app.ws_raw(&path, &[], &headers).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401, "{path} {headers:?}");
                let body: Value = serde_json::from_slice(response.body().as_deref().expect("a body")).unwrap();
                assert_eq!(error_code(&body), "UNAUTHENTICATED", "{body}");
            }
            Err(other) => panic!("{path}: expected a 401, got {other}"),
            Ok(_) => panic!("{path} {headers:?}: upgraded without a valid token"),
        }
    }
    // Without upgrade headers the token is still checked first.
    let plain = app.http.get(app.url("/ws")).send().await.unwrap();
    assert_eq!(plain.status(), 401);
    assert_eq!(app.state.connections.connection_count(), 0, "no socket was opened");
}

#[tokio::test]
async fn the_token_may_come_from_the_query_or_the_authorization_header() {
    let app = spawn_app().await;
    let token = customer(&app, "alice");
    let mut by_header = GqlWs(app.ws_raw("/ws", &[], &[("authorization", &format!("Bearer {token}"))]).await.unwrap());
    let welcome = by_header.expect("connection_established").await;
    assert_eq!(welcome["userId"], "alice");
    for feature in ["rooms", "presence", "typing", "order_updates", "inventory_updates", "notifications"] {
        assert!(welcome["features"].as_array().unwrap().contains(&json!(feature)), "{welcome}");
    }
    let mut by_query = app.rooms_ws(&token).await;
    ping(&mut by_header).await;
    ping(&mut by_query).await;
    assert!(is_online(&app, "alice").await);
    assert_eq!(stats(&app).await["totalConnections"], 2);
}

#[tokio::test]
async fn a_token_that_expires_while_connected_closes_1008_and_leaves_the_rooms() {
    let app = spawn_app().await;
    let mut bob = app.rooms_ws(&customer(&app, "bob")).await;
    bob.join("lobby").await;
    // 28 s past `exp`: still inside the 30 s leeway, so it expires within about two seconds.
    let mut alice = app.rooms_ws(&app.token_expiring("alice", TestRole::Customer, -28)).await;
    alice.join("lobby").await;
    assert_eq!(bob.expect("user_joined_room").await["userId"], "alice");
    assert_eq!(alice.closed().await, (1008, "token expired".into()));
    assert_eq!(bob.expect("user_left_room").await, json!({ "roomId": "lobby", "userId": "alice" }));
    assert!(!is_online(&app, "alice").await);
}

// ---------------------------------------------------------------- presence

#[tokio::test]
async fn room_joined_lists_who_is_there_and_the_others_hear_of_arrivals_and_departures() {
    let app = spawn_app().await;
    let mut alice = app.rooms_ws(&customer(&app, "alice")).await;
    let members = alice.join("lobby").await;
    assert_eq!(members.len(), 1);
    let me = &members[0];
    assert_eq!(
        (me["userId"].as_str(), me["name"].as_str(), me["connections"].as_i64()),
        (Some("alice"), Some("User alice"), Some(1))
    );
    assert_eq!((me["isTyping"].as_bool(), me["typingField"].is_null()), (Some(false), true));
    assert!(me["joinedAt"].as_str().unwrap().ends_with('Z'));

    let mut bob = app.rooms_ws(&customer(&app, "bob")).await;
    let members = bob.join("lobby").await;
    assert_eq!(user_ids(&members), ["alice", "bob"], "a newcomer sees who was already there");
    assert_eq!(
        alice.expect("user_joined_room").await,
        json!({ "roomId": "lobby", "userId": "bob", "name": "User bob" })
    );
    bob.silent().await; // nobody announces bob to himself
    assert_eq!(user_ids(&presence(&app, "lobby").await), ["alice", "bob"]);

    leave(&mut bob, "lobby").await;
    assert_eq!(alice.expect("user_left_room").await, json!({ "roomId": "lobby", "userId": "bob" }));
    assert_eq!(user_ids(&presence(&app, "lobby").await), ["alice"]);
    let counts = stats(&app).await;
    assert_eq!(counts["activeRooms"], 1);
    assert_eq!(counts["roomStats"], json!([{ "roomId": "lobby", "clientCount": 1 }]));

    leave(&mut bob, "lobby").await; // leaving again is harmless
    leave(&mut alice, "lobby").await;
    assert!(presence(&app, "lobby").await.is_empty());
    assert_eq!(stats(&app).await["activeRooms"], 0);
}

#[tokio::test]
async fn several_tabs_of_one_user_are_one_member() {
    let app = spawn_app().await;
    let mut alice = app.rooms_ws(&customer(&app, "alice")).await;
    alice.join("lobby").await;
    let mut tab1 = app.rooms_ws(&customer(&app, "bob")).await;
    let mut tab2 = app.rooms_ws(&customer(&app, "bob")).await;
    tab1.join("lobby").await;
    assert_eq!(alice.expect("user_joined_room").await["userId"], "bob");
    let members = tab2.join("lobby").await;
    assert_eq!(user_ids(&members), ["alice", "bob"]);
    assert_eq!(members[1]["connections"], 2);
    alice.silent().await; // a second tab is not a new arrival
    let members = tab2.join("lobby").await; // joining twice on one connection changes nothing
    assert_eq!(members[1]["connections"], 2);

    let listed = presence(&app, "lobby").await;
    assert_eq!((user_ids(&listed), listed[1]["connections"].as_i64()), (vec!["alice", "bob"], Some(2)));
    let stats = stats(&app).await;
    assert_eq!((stats["userCount"].as_i64(), stats["totalConnections"].as_i64()), (Some(2), Some(3)));
    assert_eq!(stats["roomStats"], json!([{ "roomId": "lobby", "clientCount": 3 }]));

    leave(&mut tab1, "lobby").await;
    alice.silent().await; // bob is still there in his other tab
    assert_eq!(presence(&app, "lobby").await[1]["connections"], 1);
    tab2.0.close(None).await.unwrap();
    assert_eq!(alice.expect("user_left_room").await["userId"], "bob");
    assert_eq!(user_ids(&presence(&app, "lobby").await), ["alice"]);
    assert!(is_online(&app, "bob").await, "bob's first tab is still connected");
}

#[tokio::test]
async fn a_killed_client_disappears_from_presence_and_every_count() {
    let app = spawn_app().await;
    let mut alice = app.rooms_ws(&customer(&app, "alice")).await;
    alice.join("lobby").await;
    let mut bob = app.rooms_ws(&customer(&app, "bob")).await;
    bob.join("lobby").await;
    bob.join("kitchen").await;
    alice.expect("user_joined_room").await;
    assert!(is_online(&app, "bob").await);

    kill(bob);
    assert_eq!(alice.expect("user_left_room").await, json!({ "roomId": "lobby", "userId": "bob" }));
    assert_eq!(user_ids(&presence(&app, "lobby").await), ["alice"]);
    assert!(presence(&app, "kitchen").await.is_empty());
    assert!(!is_online(&app, "bob").await);
    let stats = stats(&app).await;
    assert_eq!((stats["userCount"].as_i64(), stats["totalConnections"].as_i64()), (Some(1), Some(1)));
    assert_eq!(stats["roomStats"], json!([{ "roomId": "lobby", "clientCount": 1 }]));
}

// ---------------------------------------------------------------- liveness

#[tokio::test]
async fn a_silent_peer_is_dropped_by_the_heartbeat_and_leaves_presence() {
    let app = spawn_app_with(|c| {
        c.ws_heartbeat_interval = 100;
        c.ws_inactive_timeout = 600;
    })
    .await;
    let mut alice = app.rooms_ws(&customer(&app, "alice")).await;
    alice.join("lobby").await;
    let mut bob = app.rooms_ws(&customer(&app, "bob")).await;
    bob.join("lobby").await;
    alice.expect("user_joined_room").await;
    // From here bob reads nothing, so he answers no ping; his TCP connection stays open.
    let silent_since = Instant::now();
    assert_eq!(alice.expect("user_left_room").await["userId"], "bob", "alice answers pings and stays");
    assert!(silent_since.elapsed() >= Duration::from_millis(400), "not before the inactivity timeout");
    assert_eq!(user_ids(&presence(&app, "lobby").await), ["alice"]);
    assert!(!is_online(&app, "bob").await);
    assert_eq!(bob.closed().await, (1001, "inactive".into()));
}

#[tokio::test]
async fn the_server_pings_and_a_peer_that_answers_stays_connected() {
    let app = spawn_app_with(|c| {
        c.ws_heartbeat_interval = 100;
        c.ws_inactive_timeout = 400;
    })
    .await;
    let mut alice = app.rooms_ws(&customer(&app, "alice")).await;
    alice.join("lobby").await;
    // Reading answers each ping with a pong (tungstenite does it), for three inactivity timeouts.
    let mut pings = 0;
    let until = Instant::now() + Duration::from_millis(1200);
    while let Ok(frame) = tokio::time::timeout_at(until, alice.0.next()).await {
        match frame {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("expected only pings, got {other:?}"),
        }
    }
    assert!(pings >= 5, "{pings} pings in 1.2 s at a 100 ms interval");
    ping(&mut alice).await; // the client's own `ping` message
    assert_eq!(user_ids(&presence(&app, "lobby").await), ["alice"]);
}

#[tokio::test]
async fn shutdown_closes_every_room_socket_with_1001() {
    let app = spawn_app().await;
    let mut alice = app.rooms_ws(&customer(&app, "alice")).await;
    let mut bob = app.rooms_ws(&customer(&app, "bob")).await;
    alice.join("lobby").await;
    bob.join("lobby").await;
    app.cancel();
    assert_eq!(alice.closed().await.0, 1001);
    assert_eq!(bob.closed().await.0, 1001);
}

// ---------------------------------------------------------------- typing

#[tokio::test]
async fn typing_is_relayed_to_the_others_only_and_stops_by_itself() {
    let app = spawn_app_with(|c| c.ws_typing_timeout = 800).await;
    let mut alice = app.rooms_ws(&customer(&app, "alice")).await;
    let mut bob = app.rooms_ws(&customer(&app, "bob")).await;
    alice.join("doc").await;
    bob.join("doc").await;
    alice.expect("user_joined_room").await;

    typing(&mut alice, "doc", true, Some("title")).await;
    let started = Instant::now();
    let relayed = bob.expect("typing_indicator").await;
    assert_eq!(relayed, json!({ "roomId": "doc", "userId": "alice", "isTyping": true, "field": "title" }));
    let listed = presence(&app, "doc").await;
    assert_eq!((listed[0]["isTyping"].as_bool(), listed[0]["typingField"].as_str()), (Some(true), Some("title")));
    alice.silent().await; // not echoed, and the automatic stop is not sent to the typist either

    let stopped = bob.expect("typing_indicator").await;
    assert_eq!(stopped, json!({ "roomId": "doc", "userId": "alice", "isTyping": false, "field": "title" }));
    assert!(started.elapsed() >= Duration::from_millis(750), "stopped after {:?}", started.elapsed());
    let listed = presence(&app, "doc").await;
    assert_eq!((listed[0]["isTyping"].as_bool(), listed[0]["typingField"].is_null()), (Some(false), true));

    // Each `true` restarts the clock.
    typing(&mut alice, "doc", true, None).await;
    bob.expect("typing_indicator").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    typing(&mut alice, "doc", true, None).await;
    let renewed = Instant::now();
    bob.expect("typing_indicator").await;
    assert_eq!(bob.expect("typing_indicator").await["isTyping"], false);
    assert!(renewed.elapsed() >= Duration::from_millis(750), "stopped {:?} after the renewal", renewed.elapsed());

    // An explicit stop is relayed, and nothing follows it.
    typing(&mut alice, "doc", true, None).await;
    bob.expect("typing_indicator").await;
    typing(&mut alice, "doc", false, None).await;
    assert_eq!(bob.expect("typing_indicator").await["isTyping"], false);
    match bob.next_within(Duration::from_millis(1000)).await {
        Next::Silent => {}
        other => panic!("expected no second stop, got {other:?}"),
    }
}

#[tokio::test]
async fn a_typist_who_leaves_or_drops_stops_typing() {
    let app = spawn_app().await; // the default 3 s typing timeout does not interfere
    let mut bob = app.rooms_ws(&customer(&app, "bob")).await;
    bob.join("doc").await;
    let mut alice = app.rooms_ws(&customer(&app, "alice")).await;
    alice.join("doc").await;
    bob.expect("user_joined_room").await;

    typing(&mut alice, "doc", true, Some("body")).await;
    assert_eq!(bob.expect("typing_indicator").await["isTyping"], true);
    leave(&mut alice, "doc").await;
    assert_eq!(
        bob.expect("typing_indicator").await,
        json!({ "roomId": "doc", "userId": "alice", "isTyping": false, "field": "body" })
    );
    assert_eq!(bob.expect("user_left_room").await["userId"], "alice");

    alice.join("doc").await;
    bob.expect("user_joined_room").await;
    typing(&mut alice, "doc", true, None).await;
    assert_eq!(bob.expect("typing_indicator").await["isTyping"], true);
    kill(alice);
    assert_eq!(bob.expect("typing_indicator").await["isTyping"], false);
    assert_eq!(bob.expect("user_left_room").await["userId"], "alice");
    assert_eq!(user_ids(&presence(&app, "doc").await), ["bob"]);
}

#[tokio::test]
async fn typing_in_a_room_not_joined_is_forbidden() {
    let app = spawn_app().await;
    let mut alice = app.rooms_ws(&customer(&app, "alice")).await;
    typing(&mut alice, "doc", true, None).await;
    assert_eq!(alice.expect_error().await, "FORBIDDEN");
    typing(&mut alice, "bad room!", true, None).await;
    assert_eq!(alice.expect_error().await, "BAD_REQUEST");
    typing(&mut alice, "doc", true, Some(&"f".repeat(300))).await;
    assert_eq!(alice.expect_error().await, "BAD_REQUEST");
    ping(&mut alice).await;
}

// ---------------------------------------------------------------- rate limit, malformed frames, limits

#[tokio::test]
async fn a_flood_is_rate_limited_without_affecting_other_users() {
    let app = spawn_app_with(|c| {
        c.ws_rate_limit = 5;
        c.ws_rate_burst = 5;
    })
    .await;
    let before =
        app.metric("switchboard_rejected_messages_total", &["channel=\"rooms\"", "reason=\"rate_limited\""]).await;
    let mut flooder = app.rooms_ws(&customer(&app, "alice")).await;
    let mut bob = app.rooms_ws(&customer(&app, "bob")).await;
    flooder.join("lobby").await;
    bob.join("lobby").await;
    flooder.expect("user_joined_room").await;

    for _ in 0..30 {
        flooder.send(json!({ "type": "ping" })).await;
    }
    let (mut pongs, mut limited) = (0, 0);
    for _ in 0..30 {
        let message = flooder.recv().await;
        match (message["type"].as_str(), message["payload"]["code"].as_str()) {
            (Some("pong"), _) => pongs += 1,
            (Some("error"), Some("RATE_LIMITED")) => limited += 1,
            _ => panic!("unexpected {message}"),
        }
    }
    // The burst (5, one spent on the join) plus what refills while the 30 are read: far below 30.
    assert!((4..=12).contains(&pongs), "{pongs} pongs: about the burst");
    assert_eq!(pongs + limited, 30);

    // Bob is not throttled by alice's flood, and still hears her room.
    ping(&mut bob).await;
    typing(&mut bob, "lobby", true, None).await;
    assert_eq!(flooder.expect("typing_indicator").await["userId"], "bob");
    // The flooder's socket stays open and recovers as the bucket refills.
    tokio::time::sleep(Duration::from_millis(500)).await;
    ping(&mut flooder).await;
    let after =
        app.metric("switchboard_rejected_messages_total", &["channel=\"rooms\"", "reason=\"rate_limited\""]).await;
    assert!(after - before >= f64::from(limited), "{before} → {after}, {limited} refused");
}

#[tokio::test]
async fn malformed_messages_get_bad_request_and_the_socket_stays_open() {
    let app = spawn_app().await;
    let mut ws = app.rooms_ws(&customer(&app, "alice")).await;
    let before = app.metric("switchboard_rejected_messages_total", &["channel=\"rooms\"", "reason=\"invalid\""]).await;
    let malformed = [
        "not json",
        "",
        "{}",
        "[1, 2]",
        r#"{"type": "dance", "payload": {}}"#,
        r#"{"type": "join_room"}"#,
        r#"{"type": "join_room", "payload": {"roomId": 7}}"#,
        r#"{"type": "typing_indicator", "payload": {"roomId": "lobby", "isTyping": "yes"}}"#,
    ];
    for text in malformed {
        ws.send_text(text).await;
        assert_eq!(ws.expect_error().await, "BAD_REQUEST", "{text:?}");
    }
    ws.0.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    assert_eq!(ws.expect_error().await, "BAD_REQUEST");
    ping(&mut ws).await;
    assert_eq!(user_ids(&ws.join("lobby").await), ["alice"]);
    let after = app.metric("switchboard_rejected_messages_total", &["channel=\"rooms\"", "reason=\"invalid\""]).await;
    assert!(after - before >= 9.0, "{before} → {after}");
}

#[tokio::test]
async fn a_message_over_the_size_limit_is_refused_then_closed_1009() {
    let app = spawn_app_with(|c| c.ws_max_message_bytes = 1024).await;
    let mut ws = app.rooms_ws(&customer(&app, "alice")).await;
    ws.join("lobby").await;
    let big = json!({ "type": "typing_indicator", "payload": { "roomId": "lobby", "isTyping": true, "field": "x".repeat(2048) } });
    ws.send(big).await;
    let error = ws.expect("error").await;
    assert_eq!(error["code"], "BAD_REQUEST");
    assert!(error["message"].as_str().unwrap().contains("too big"), "{error}");
    assert_eq!(ws.closed().await.0, 1009);
    assert!(presence(&app, "lobby").await.is_empty());
}

#[tokio::test]
async fn rooms_per_connection_and_members_per_room_are_limited() {
    let app = spawn_app_with(|c| {
        c.ws_max_rooms = 2;
        c.ws_room_max_members = 2;
    })
    .await;
    let too_many = app.metric("switchboard_rejected_messages_total", &["reason=\"too_many_rooms\""]).await;
    let full = app.metric("switchboard_rejected_messages_total", &["reason=\"room_full\""]).await;
    let mut alice = app.rooms_ws(&customer(&app, "alice")).await;
    alice.join("a").await;
    alice.join("b").await;
    alice.send(json!({ "type": "join_room", "payload": { "roomId": "c" } })).await;
    assert_eq!(alice.expect_error().await, "BAD_REQUEST");
    leave(&mut alice, "b").await;
    alice.join("c").await;

    let mut bob = app.rooms_ws(&customer(&app, "bob")).await;
    bob.join("a").await;
    alice.expect("user_joined_room").await;
    let mut carol = app.rooms_ws(&customer(&app, "carol")).await;
    carol.send(json!({ "type": "join_room", "payload": { "roomId": "a" } })).await;
    assert_eq!(carol.expect_error().await, "FORBIDDEN");
    let mut bob_again = app.rooms_ws(&customer(&app, "bob")).await;
    assert_eq!(bob_again.join("a").await[1]["connections"], 2, "a member's next tab still fits");
    alice.silent().await; // carol never arrived
    assert_eq!(user_ids(&presence(&app, "a").await), ["alice", "bob"]);

    assert!(app.metric("switchboard_rejected_messages_total", &["reason=\"too_many_rooms\""]).await > too_many);
    assert!(app.metric("switchboard_rejected_messages_total", &["reason=\"room_full\""]).await > full);
}

// ---------------------------------------------------------------- who may join what

#[tokio::test]
async fn joins_follow_the_room_rules_and_a_refusal_leaves_the_socket_usable() {
    let app = spawn_app().await;
    let order = app.create_order("alice").await;
    let product = app.create_product("SKU-RULES", 1).await;
    let mut bob = app.rooms_ws(&customer(&app, "bob")).await;
    let refusals = [
        (format!("order:{order}"), "FORBIDDEN"),
        ("user:alice".to_owned(), "FORBIDDEN"),
        ("order:999999".to_owned(), "NOT_FOUND"),
        ("order:abc".to_owned(), "NOT_FOUND"),
        ("product:999999".to_owned(), "NOT_FOUND"),
        ("bad room!".to_owned(), "BAD_REQUEST"),
        (String::new(), "BAD_REQUEST"),
        ("r".repeat(129), "BAD_REQUEST"),
    ];
    for (room_id, code) in &refusals {
        bob.send(json!({ "type": "join_room", "payload": { "roomId": room_id } })).await;
        assert_eq!(bob.expect_error().await, *code, "{room_id}");
    }
    bob.send(json!({ "type": "leave_room", "payload": { "roomId": "bad room!" } })).await;
    assert_eq!(bob.expect_error().await, "BAD_REQUEST");
    bob.join("user:bob").await;
    bob.join(&format!("product:{product}")).await;
    bob.join(&"r".repeat(128)).await;
    bob.join("Any_room-1.2:3").await;

    let mut alice = app.rooms_ws(&customer(&app, "alice")).await;
    alice.join(&format!("order:{order}")).await;
    let mut staff = app.rooms_ws(&app.token("staff-2", TestRole::Staff)).await;
    assert_eq!(user_ids(&staff.join(&format!("order:{order}")).await), ["alice", "staff-2"]);
    staff.send(json!({ "type": "join_room", "payload": { "roomId": "user:alice" } })).await;
    assert_eq!(staff.expect_error().await, "FORBIDDEN", "user rooms admit that user and admins only");
    let mut admin = app.rooms_ws(&app.token("admin-1", TestRole::Admin)).await;
    admin.join("user:alice").await;
    admin.join(&format!("order:{order}")).await;
    assert_eq!(user_ids(&presence(&app, &format!("order:{order}")).await), ["alice", "staff-2", "admin-1"]);
}

// ---------------------------------------------------------------- entity relays

#[tokio::test]
async fn members_of_an_order_room_get_its_updates_and_nobody_else_does() {
    let app = spawn_app().await;
    let order = app.create_order("alice").await;
    let other = app.create_order("alice").await;
    let room = format!("order:{order}");
    let mut staff = app.rooms_ws(&app.token("staff-2", TestRole::Staff)).await;
    staff.join(&room).await;
    let mut alice = app.rooms_ws(&customer(&app, "alice")).await;
    alice.join(&room).await;
    staff.expect("user_joined_room").await;
    let mut elsewhere = app.rooms_ws(&customer(&app, "alice")).await;
    elsewhere.join(&format!("order:{other}")).await;

    let update =
        "mutation($id: ID!) { updateOrder(id: $id, input: {status: SHIPPED, trackingNumber: \"TRK-1\"}) { id } }";
    gql_ok(&app, update, json!({ "id": order })).await;
    for ws in [&mut alice, &mut staff] {
        let payload = ws.expect("order_update").await;
        assert_eq!(payload["orderId"], json!(order));
        assert_eq!((payload["status"].as_str(), payload["trackingNumber"].as_str()), (Some("SHIPPED"), Some("TRK-1")));
        assert_eq!(payload["paymentStatus"], "PENDING");
        let mut changed: Vec<&str> =
            payload["changedFields"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
        changed.sort();
        assert_eq!(changed, ["status", "trackingNumber"]);
        assert_eq!(
            (payload["order"]["id"].as_str(), payload["order"]["customerId"].as_str()),
            (Some(order.as_str()), Some("alice"))
        );
        assert_eq!(payload["order"]["total"], "12.50");
        assert!(payload["updatedAt"].as_str().unwrap().ends_with('Z'));
    }
    elsewhere.silent().await;

    leave(&mut alice, &room).await;
    assert_eq!(staff.expect("user_left_room").await["userId"], "alice");
    let deliver = "mutation($id: ID!) { updateOrder(id: $id, input: {status: DELIVERED}) { id } }";
    gql_ok(&app, deliver, json!({ "id": order })).await;
    assert_eq!(staff.expect("order_update").await["status"], "DELIVERED");
    alice.silent().await;
}

#[tokio::test]
async fn members_of_a_product_room_get_its_inventory_updates() {
    let app = spawn_app().await;
    let product = app.create_product("SKU-RELAY", 10).await;
    let unrelated = app.create_product("SKU-OTHER", 1).await;
    let mut alice = app.rooms_ws(&customer(&app, "alice")).await;
    alice.join(&format!("product:{product}")).await;
    let mut bob = app.rooms_ws(&customer(&app, "bob")).await;
    bob.join(&format!("product:{unrelated}")).await;
    bob.join("lobby").await;

    gql_ok(
        &app,
        "mutation($p: ID!) { adjustInventory(productId: $p, delta: -3) { quantity } }",
        json!({ "p": product }),
    )
    .await;
    let payload = alice.expect("inventory_update").await;
    assert_eq!(payload["productId"], json!(product));
    assert_eq!((payload["newQuantity"].as_i64(), payload["previousQuantity"].as_i64()), (Some(7), Some(10)));
    assert_eq!(
        (payload["product"]["sku"].as_str(), payload["product"]["quantity"].as_i64()),
        (Some("SKU-RELAY"), Some(7))
    );
    assert!(payload["timestamp"].as_str().unwrap().ends_with('Z'));
    bob.silent().await;
}

#[tokio::test]
async fn notifications_reach_every_connection_of_their_user_and_nobody_else() {
    let app = spawn_app().await;
    let mut tab1 = app.rooms_ws(&customer(&app, "alice")).await;
    let mut tab2 = app.rooms_ws(&customer(&app, "alice")).await;
    let mut bob = app.rooms_ws(&customer(&app, "bob")).await;
    let mut admin = app.rooms_ws(&app.token("admin-1", TestRole::Admin)).await;
    admin.join("user:alice").await; // a user room is a room, not a notification feed

    let send = "mutation { sendNotification(input: {userId: \"alice\", type: \"info\", title: \"Hi\", message: \"Shipped\"}) { id } }";
    let id = gql_ok(&app, send, json!({})).await["sendNotification"]["id"].clone();
    for tab in [&mut tab1, &mut tab2] {
        let payload = tab.expect("notification").await;
        assert_eq!(payload["id"], id);
        assert_eq!((payload["userId"].as_str(), payload["type"].as_str()), (Some("alice"), Some("info")));
        assert_eq!((payload["title"].as_str(), payload["message"].as_str()), (Some("Hi"), Some("Shipped")));
        assert!(payload["createdAt"].as_str().unwrap().ends_with('Z'));
    }
    bob.silent().await;
    admin.silent().await;
}

// ---------------------------------------------------------------- slow members

#[tokio::test]
async fn a_member_too_slow_to_keep_up_is_closed_1013_rather_than_skipped() {
    let app = spawn_app_with(|c| {
        c.ws_rate_limit = 0;
        c.subscriber_queue = 4;
    })
    .await;
    let mut slow = app.rooms_ws(&customer(&app, "bob")).await;
    slow.join("lobby").await;
    let mut alice = app.rooms_ws(&customer(&app, "alice")).await;
    alice.join("lobby").await;

    // Bob reads nothing while alice types as fast as she can: once his TCP buffers are full his
    // outbox fills, and the server stops queueing for him instead of blocking alice.
    let typing_fast = json!({ "type": "typing_indicator", "payload": { "roomId": "lobby", "isTyping": true, "field": "f".repeat(256) } });
    let give_up = Instant::now() + Duration::from_secs(30);
    // (Asked of this server, not of the process-wide metrics other tests also move.)
    while is_online(&app, "bob").await {
        assert!(Instant::now() < give_up, "bob's outbox never overflowed");
        for _ in 0..500 {
            alice.send(typing_fast.clone()).await;
        }
    }
    // He then gets what was queued before the gap, and a retryable close instead of a silent hole.
    let (code, reason) = slow.closed().await;
    assert_eq!(code, 1013, "{reason}");
    assert_eq!(alice.expect("user_left_room").await["userId"], "bob");
    ping(&mut alice).await;
    assert_eq!(user_ids(&presence(&app, "lobby").await), ["alice"]);
}
