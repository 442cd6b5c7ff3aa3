//! The messages of the room channel (`docs/rooms.md`), as serde types.
//!
//! Client messages are `{"type": T, "payload": {...}}`; a frame that does not parse as one of them
//! becomes a typed `error` reply (`BAD_REQUEST`) and the socket stays open. Server messages are
//! `{"type": T, "payload": {...}, "timestamp": DateTime}`, serialised once per broadcast and
//! shared by every recipient.

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};

use crate::commerce::model::{PresenceUser, Timestamp};
use crate::events::{InventoryChangePayload, NotificationPayload, OrderUpdatePayload};

/// What `connection_established` says the channel can do.
pub const FEATURES: &[&str] = &["rooms", "presence", "typing", "order_updates", "inventory_updates", "notifications"];

/// Longest `field` a typing indicator may name; it is kept in the presence list.
pub const MAX_TYPING_FIELD: usize = 256;

#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
pub enum ClientMessage {
    JoinRoom(RoomRef),
    LeaveRoom(RoomRef),
    TypingIndicator(Typing),
    /// `payload` is optional and ignored.
    Ping(#[serde(default)] Option<serde_json::Value>),
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoomRef {
    pub room_id: String,
    /// `join_room` in an entity room: the `cursor` of the last update received, to get every
    /// update since then first.
    #[serde(default)]
    pub after: Option<String>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Typing {
    pub room_id: String,
    pub is_typing: bool,
    #[serde(default)]
    pub field: Option<String>,
}

impl ClientMessage {
    /// Parses one text frame; the error says what was wrong, for the `error` reply.
    pub fn parse(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| {
            format!("invalid message ({e}); expected {{\"type\": \"join_room\"|\"leave_room\"|\"typing_indicator\"|\"ping\", \"payload\": {{...}}}}")
        })
    }
}

/// The `code` of an `error` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    BadRequest,
    Forbidden,
    NotFound,
    RateLimited,
    /// A `join_room` cursor the event log can no longer serve completely: join again without
    /// `after` and refetch.
    CursorExpired,
    /// The store failed. The details are logged, not sent.
    InternalServerError,
}

/// A server message's payload; [`ServerMessage::kind`] is its `type`.
#[derive(Debug, Serialize)]
#[serde(untagged, rename_all_fields = "camelCase")]
pub enum ServerMessage<'a> {
    ConnectionEstablished { client_id: &'a str, user_id: &'a str, features: &'static [&'static str] },
    RoomJoined { room_id: &'a str, members: Vec<PresenceUser> },
    RoomLeft { room_id: &'a str },
    UserJoinedRoom { room_id: &'a str, user_id: &'a str, name: Option<&'a str> },
    UserLeftRoom { room_id: &'a str, user_id: &'a str },
    TypingIndicator { room_id: &'a str, user_id: &'a str, is_typing: bool, field: Option<&'a str> },
    OrderUpdate(Box<OrderUpdatePayload>),
    InventoryUpdate(&'a InventoryChangePayload),
    Notification(&'a NotificationPayload),
    Pong {},
    Error { code: ErrorCode, message: &'a str },
}

#[derive(Serialize)]
struct Frame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    payload: &'a ServerMessage<'a>,
    timestamp: Timestamp,
}

impl ServerMessage<'_> {
    pub fn kind(&self) -> &'static str {
        match self {
            ServerMessage::ConnectionEstablished { .. } => "connection_established",
            ServerMessage::RoomJoined { .. } => "room_joined",
            ServerMessage::RoomLeft { .. } => "room_left",
            ServerMessage::UserJoinedRoom { .. } => "user_joined_room",
            ServerMessage::UserLeftRoom { .. } => "user_left_room",
            ServerMessage::TypingIndicator { .. } => "typing_indicator",
            ServerMessage::OrderUpdate(_) => "order_update",
            ServerMessage::InventoryUpdate(_) => "inventory_update",
            ServerMessage::Notification(_) => "notification",
            ServerMessage::Pong {} => "pong",
            ServerMessage::Error { .. } => "error",
        }
    }

    /// The whole frame, stamped now.
    pub fn to_text(&self) -> Utf8Bytes {
        let frame = Frame { kind: self.kind(), payload: self, timestamp: Timestamp::now() };
        serde_json::to_string(&frame).expect("server messages serialise").into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn client_messages_parse() {
        assert_eq!(
            ClientMessage::parse(r#"{"type":"join_room","payload":{"roomId":"lobby"}}"#),
            Ok(ClientMessage::JoinRoom(RoomRef { room_id: "lobby".into(), after: None }))
        );
        assert_eq!(
            ClientMessage::parse(
                r#"{"type":"typing_indicator","payload":{"roomId":"a","isTyping":true,"field":"body"}}"#
            ),
            Ok(ClientMessage::TypingIndicator(Typing {
                room_id: "a".into(),
                is_typing: true,
                field: Some("body".into())
            }))
        );
        assert_eq!(
            ClientMessage::parse(r#"{"payload":{"roomId":"a","isTyping":false},"type":"typing_indicator","id":7}"#),
            Ok(ClientMessage::TypingIndicator(Typing { room_id: "a".into(), is_typing: false, field: None }))
        );
        for ping in [r#"{"type":"ping"}"#, r#"{"type":"ping","payload":{}}"#, r#"{"type":"ping","payload":null}"#] {
            assert!(matches!(ClientMessage::parse(ping), Ok(ClientMessage::Ping(_))), "{ping}");
        }
    }

    #[test]
    fn bad_client_messages_are_errors_not_panics() {
        for bad in [
            "",
            "not json",
            "[]",
            "{}",
            r#"{"type":"dance"}"#,
            r#"{"type":"join_room"}"#,
            r#"{"type":"join_room","payload":{"roomId":5}}"#,
            r#"{"type":"typing_indicator","payload":{"roomId":"a","isTyping":"yes"}}"#,
            r#"{"type":"typing_indicator","payload":{"roomId":"a"}}"#,
        ] {
            assert!(ClientMessage::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn server_messages_have_type_payload_and_timestamp() {
        let text =
            ServerMessage::TypingIndicator { room_id: "r", user_id: "u", is_typing: false, field: None }.to_text();
        let value: Value = serde_json::from_str(text.as_str()).unwrap();
        assert_eq!(value["type"], "typing_indicator");
        assert_eq!(value["payload"], json!({ "roomId": "r", "userId": "u", "isTyping": false, "field": null }));
        assert!(value["timestamp"].as_str().unwrap().ends_with('Z'));
        let pong: Value = serde_json::from_str(ServerMessage::Pong {}.to_text().as_str()).unwrap();
        assert_eq!(pong["payload"], json!({}));
        let error: Value = serde_json::from_str(
            ServerMessage::Error { code: ErrorCode::RateLimited, message: "slow" }.to_text().as_str(),
        )
        .unwrap();
        assert_eq!(error["payload"], json!({ "code": "RATE_LIMITED", "message": "slow" }));
    }
}
