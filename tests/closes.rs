//! Closing cleanly, both ways, on both channels (RFC 6455 §5.5.1 and §7.4): a client's close
//! frame is answered with a close frame carrying its own code, and a frame that breaks the protocol
//! is answered with 1002 (protocol error) or 1007 (invalid payload) in a close frame *before* the
//! TCP connection ends, never with a bare reset the client can only report as 1006.

mod common;

use std::time::Duration;

use common::raw::{self, Frame, RawWs};
use common::*;
use futures::SinkExt;
use serde_json::json;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[derive(Debug, Clone, Copy)]
enum Channel {
    GraphqlWs,
    Rooms,
}

const CHANNELS: [Channel; 2] = [Channel::GraphqlWs, Channel::Rooms];

async fn raw(app: &TestApp, channel: Channel) -> RawWs {
    match channel {
        Channel::GraphqlWs => app.raw_ws("/graphql", Some("graphql-transport-ws")).await,
        Channel::Rooms => app.raw_ws(&format!("/ws?token={}", app.token("alice", TestRole::Customer)), None).await,
    }
}

/// A connection of `channel` through the client library, ready for use.
async fn client(app: &TestApp, channel: Channel) -> GqlWs {
    match channel {
        Channel::GraphqlWs => app.graphql_ws(Some(&app.token("alice", TestRole::Customer))).await,
        Channel::Rooms => app.rooms_ws(&app.token("alice", TestRole::Customer)).await,
    }
}

async fn is_online(app: &TestApp, user_id: &str) -> bool {
    let body =
        app.gql(Some(&app.staff()), "query($u: ID!) { isUserOnline(userId: $u) }", json!({ "u": user_id })).await;
    body["data"]["isUserOnline"].as_bool().unwrap_or_else(|| panic!("{body}"))
}

// ---------------------------------------------------------------- the client closes

#[tokio::test]
async fn a_client_close_is_answered_with_its_own_code_on_both_channels() {
    let app = spawn_app().await;
    for channel in CHANNELS {
        for code in [1000u16, 1001, 3000, 4000, 4999] {
            let mut ws = client(&app, channel).await;
            let frame = CloseFrame { code: CloseCode::from(code), reason: "bye".into() };
            ws.0.close(Some(frame)).await.expect("close sent");
            match ws.next_within(WAIT).await {
                Next::Closed(Some((answered, _))) => assert_eq!(answered, code, "{channel:?}"),
                other => panic!("{channel:?} {code}: expected the close echoed, got {other:?}"),
            }
        }
    }
}

/// graphql-ws clients in lazy mode close with 1000 when their last subscription ends; the next
/// operation fails (or is retried) when that close is not answered.
#[tokio::test]
async fn a_lazy_graphql_ws_client_closing_after_its_last_operation_sees_1000() {
    let app = spawn_app().await;
    let mut ws = app.graphql_ws(None).await;
    ws.subscribe_live(&app, "1", "subscription { inventoryChanged { productId } }", json!({})).await;
    ws.send(json!({ "id": "1", "type": "complete" })).await;
    ws.0.send(tokio_tungstenite::tungstenite::Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "Normal Closure".into(),
    })))
    .await
    .unwrap();
    assert_eq!(ws.closed().await, (1000, "Normal Closure".into()));
}

#[tokio::test]
async fn raw_close_frames_are_echoed_and_then_the_server_ends_the_connection() {
    let app = spawn_app().await;
    for channel in CHANNELS {
        let mut ws = raw(&app, channel).await;
        ws.send(Frame::close(4321, b"done")).await;
        assert_eq!(ws.close_code().await, Some(4321), "{channel:?}");
        ws.ends().await;

        // A close frame without a code is answered with one without a code.
        let mut ws = raw(&app, channel).await;
        ws.send(Frame::new(raw::CLOSE, Vec::new())).await;
        assert_eq!(ws.close_code().await, None, "{channel:?}");
        ws.ends().await;
    }
}

// ---------------------------------------------------------------- the client breaks the protocol

/// Frames that fail the WebSocket connection, and the code each must be answered with.
fn violations() -> Vec<(&'static str, Vec<Frame>, u16)> {
    let text = |payload: &[u8]| Frame::new(raw::TEXT, payload);
    vec![
        ("invalid UTF-8 in a text message", vec![text(b"{\"type\":\"ping\xff\"}")], 1007),
        (
            "invalid UTF-8 across fragments",
            vec![Frame { fin: false, ..text(b"\xce") }, Frame::new(raw::CONTINUATION, b"\xff".to_vec())],
            1007,
        ),
        ("invalid UTF-8 in a close reason", vec![Frame::close(1000, b"\xff\xfe")], 1007),
        ("a reserved bit set", vec![Frame { rsv: 0b100, ..text(b"{}") }], 1002),
        ("an unmasked client frame", vec![Frame { mask: None, ..text(b"{}") }], 1002),
        ("a ping of 126 bytes", vec![Frame::new(raw::PING, vec![b'p'; 126])], 1002),
        ("a fragmented ping", vec![Frame { fin: false, ..Frame::new(raw::PING, b"p".to_vec()) }], 1002),
        ("an unknown data opcode", vec![Frame::new(0x3, b"x".to_vec())], 1002),
        ("an unknown control opcode", vec![Frame::new(0xB, b"x".to_vec())], 1002),
        ("a continuation with nothing to continue", vec![Frame::new(raw::CONTINUATION, b"x".to_vec())], 1002),
        ("a new message inside a fragmented one", vec![Frame { fin: false, ..text(b"a") }, text(b"b")], 1002),
        ("close code 1005 on the wire", vec![Frame::close(1005, b"")], 1002),
        ("close code 999", vec![Frame::close(999, b"")], 1002),
        ("close code 1004", vec![Frame::close(1004, b"")], 1002),
        ("close code 5000", vec![Frame::close(5000, b"")], 1002),
        ("a one-byte close payload", vec![Frame::new(raw::CLOSE, vec![3])], 1002),
    ]
}

#[tokio::test]
async fn protocol_violations_are_answered_with_a_close_code_before_the_tcp_close() {
    let app = spawn_app().await;
    for channel in CHANNELS {
        for (what, frames, code) in violations() {
            let mut ws = raw(&app, channel).await;
            for frame in frames {
                ws.send(frame).await;
            }
            assert_eq!(ws.close_code().await, Some(code), "{channel:?}: {what}");
            ws.ends().await;
        }
        // Nothing of that harmed the server.
        let mut ws = client(&app, channel).await;
        ws.send(json!({ "type": "ping" })).await;
        assert_eq!(ws.recv().await["type"], "pong");
    }
}

// ---------------------------------------------------------------- presence does not wait for the handshake

/// A user goes offline when the server decides to close, not when the close handshake ends: that
/// waits for a peer which may never answer.
#[tokio::test]
async fn a_user_is_offline_by_the_time_the_close_frame_arrives_on_both_channels() {
    let app = spawn_app().await;
    // 28 s past `exp`: inside the 30 s leeway, so each socket is closed for expiry within 2 s.
    let expiring = app.token_expiring("alice", TestRole::Customer, -28);
    let mut graphql = app.raw_ws("/graphql", Some("graphql-transport-ws")).await;
    let init = json!({ "type": "connection_init", "payload": { "token": expiring } }).to_string();
    graphql.send(Frame::new(raw::TEXT, init)).await;
    let mut rooms = app.raw_ws(&format!("/ws?token={expiring}"), None).await;
    assert!(is_online(&app, "alice").await);

    // Neither client answers the close frame; both read it, and alice is already offline.
    assert_eq!(graphql.close_code().await, Some(4403));
    assert_eq!(rooms.close_code().await, Some(1008));
    assert!(!is_online(&app, "alice").await, "alice is online while her sockets wait for a close answer");
}

const NOTIFICATIONS: &str = "subscription { notificationCreated { id title message } }";

/// A graphql-ws subscriber that reads nothing is closed for being slow, when its close frame
/// cannot even be written (its buffers are full): it must go offline at once, not when the write
/// gives up ten seconds later.
#[tokio::test]
async fn a_slow_graphql_ws_user_goes_offline_at_once_though_nothing_can_be_written() {
    let app = spawn_app_with(|c| c.subscriber_queue = 2).await;
    let mut stuck = app.graphql_ws(Some(&app.token("c1", TestRole::Customer))).await;
    stuck.subscribe_live(&app, "n", NOTIFICATIONS, json!({})).await;
    assert!(is_online(&app, "c1").await);

    // Big notifications fill its TCP buffers, then its queue: the server gives up on it. (The
    // metric is per process; nothing else in this file makes a consumer slow.)
    let lagged = || app.metric("switchboard_deliveries_lagged_total", &[]);
    let before = lagged().await;
    let q = "mutation($m: String!) { sendNotification(input: {userId: \"c1\", type: \"bulk\", title: \"t\", message: $m}) { id } }";
    let big = "x".repeat(500_000);
    let give_up = Instant::now() + Duration::from_secs(60);
    while lagged().await == before {
        assert!(Instant::now() < give_up, "c1 was never found too slow");
        let body = app.gql(Some(&app.staff()), q, json!({ "m": big })).await;
        assert!(body["errors"].is_null(), "{body}");
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while is_online(&app, "c1").await {
        assert!(Instant::now() < deadline, "c1 is still online 2 s after being found too slow");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(stuck);
}
