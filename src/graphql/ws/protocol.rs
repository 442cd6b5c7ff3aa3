//! The two GraphQL-over-WebSocket dialects, as messages.
//!
//! - `graphql-transport-ws`: the graphql-ws library's PROTOCOL.md (Apollo Client, urql, GraphiQL).
//! - `graphql-ws`: the legacy subscriptions-transport-ws protocol, kept for older clients.

use async_graphql::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `graphql-transport-ws`
    TransportWs,
    /// `graphql-ws` (subscriptions-transport-ws)
    Legacy,
}

impl Dialect {
    pub fn from_subprotocol(protocol: &str) -> Option<Self> {
        match protocol {
            "graphql-transport-ws" => Some(Self::TransportWs),
            "graphql-ws" => Some(Self::Legacy),
            _ => None,
        }
    }
}

/// What a subscribe (`subscribe` / `start`) carries.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscribePayload {
    pub query: String,
    #[serde(default)]
    pub operation_name: Option<String>,
    #[serde(default)]
    pub variables: Option<Value>,
    #[serde(default)]
    pub extensions: Option<Value>,
}

/// A client message, whichever the dialect, in the terms of `graphql-transport-ws`.
#[derive(Debug)]
pub enum ClientMessage {
    ConnectionInit(Option<Value>),
    Ping(Option<Value>),
    Pong,
    Subscribe {
        id: String,
        payload: SubscribePayload,
    },
    Complete {
        id: String,
    },
    /// Legacy `connection_terminate`.
    Terminate,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum TransportWsMessage {
    ConnectionInit {
        #[serde(default)]
        payload: Option<Value>,
    },
    Ping {
        #[serde(default)]
        payload: Option<Value>,
    },
    Pong {
        #[serde(default)]
        #[allow(dead_code)]
        payload: Option<Value>,
    },
    Subscribe {
        id: String,
        payload: SubscribePayload,
    },
    Complete {
        id: String,
    },
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum LegacyMessage {
    ConnectionInit {
        #[serde(default)]
        payload: Option<Value>,
    },
    Start {
        id: String,
        payload: SubscribePayload,
    },
    Stop {
        id: String,
    },
    ConnectionTerminate,
}

/// Why a frame is not a message we know; the text goes into the close reason or error.
#[derive(Debug, thiserror::Error)]
#[error("invalid message: {0}")]
pub struct InvalidMessage(String);

impl ClientMessage {
    pub fn parse(dialect: Dialect, text: &str) -> Result<Self, InvalidMessage> {
        let invalid = |e: serde_json::Error| InvalidMessage(e.to_string());
        Ok(match dialect {
            Dialect::TransportWs => match serde_json::from_str(text).map_err(invalid)? {
                TransportWsMessage::ConnectionInit { payload } => Self::ConnectionInit(payload),
                TransportWsMessage::Ping { payload } => Self::Ping(payload),
                TransportWsMessage::Pong { .. } => Self::Pong,
                TransportWsMessage::Subscribe { id, payload } => Self::Subscribe { id, payload },
                TransportWsMessage::Complete { id } => Self::Complete { id },
            },
            Dialect::Legacy => match serde_json::from_str(text).map_err(invalid)? {
                LegacyMessage::ConnectionInit { payload } => Self::ConnectionInit(payload),
                LegacyMessage::Start { id, payload } => Self::Subscribe { id, payload },
                LegacyMessage::Stop { id } => Self::Complete { id },
                LegacyMessage::ConnectionTerminate => Self::Terminate,
            },
        })
    }
}

/// A server message, serialised in the connection's dialect.
pub enum ServerMessage<'a> {
    /// With the cursor a subscription made now starts from, `{"cursor": …}` (see
    /// `Broker::delivered_through`).
    ConnectionAck(&'a str),
    /// Legacy only: refused `connection_init`.
    ConnectionError(&'a str),
    /// Legacy only: keep-alive.
    KeepAlive,
    Pong(Option<&'a Value>),
    Next {
        id: &'a str,
        payload: &'a Response,
    },
    Error {
        id: &'a str,
        errors: &'a [async_graphql::ServerError],
    },
    Complete {
        id: &'a str,
    },
}

#[derive(Serialize)]
struct Frame<'a, P: Serialize> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<P>,
}

impl ServerMessage<'_> {
    pub fn to_json(&self, dialect: Dialect) -> String {
        let legacy = dialect == Dialect::Legacy;
        let json = match self {
            Self::ConnectionAck(cursor) => serde_json::to_string(&Frame {
                id: None,
                kind: "connection_ack",
                payload: Some(serde_json::json!({ "cursor": cursor })),
            }),
            Self::ConnectionError(message) => serde_json::to_string(&Frame {
                id: None,
                kind: "connection_error",
                payload: Some(serde_json::json!({ "message": message })),
            }),
            Self::KeepAlive => serde_json::to_string(&Frame::<()> { id: None, kind: "ka", payload: None }),
            Self::Pong(payload) => serde_json::to_string(&Frame { id: None, kind: "pong", payload: *payload }),
            Self::Next { id, payload } => serde_json::to_string(&Frame {
                id: Some(id),
                kind: if legacy { "data" } else { "next" },
                payload: Some(payload),
            }),
            Self::Error { id, errors } => {
                serde_json::to_string(&Frame { id: Some(id), kind: "error", payload: Some(errors) })
            }
            Self::Complete { id } => {
                serde_json::to_string(&Frame::<()> { id: Some(id), kind: "complete", payload: None })
            }
        };
        json.expect("server messages always serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_dialects() {
        let sub = r#"{"id":"1","type":"subscribe","payload":{"query":"{ me { userId } }"}}"#;
        assert!(matches!(ClientMessage::parse(Dialect::TransportWs, sub), Ok(ClientMessage::Subscribe { .. })));
        let start = r#"{"id":"1","type":"start","payload":{"query":"{ me { userId } }"}}"#;
        assert!(matches!(ClientMessage::parse(Dialect::Legacy, start), Ok(ClientMessage::Subscribe { .. })));
        assert!(ClientMessage::parse(Dialect::TransportWs, start).is_err());
        assert!(ClientMessage::parse(Dialect::TransportWs, "{").is_err());
        assert!(ClientMessage::parse(Dialect::TransportWs, r#"{"type":"subscribe","id":1}"#).is_err());
    }

    #[test]
    fn next_is_data_in_the_legacy_dialect() {
        let response = Response::new(async_graphql::Value::Null);
        let next = ServerMessage::Next { id: "7", payload: &response };
        assert_eq!(next.to_json(Dialect::TransportWs), r#"{"id":"7","type":"next","payload":{"data":null}}"#);
        assert_eq!(next.to_json(Dialect::Legacy), r#"{"id":"7","type":"data","payload":{"data":null}}"#);
    }

    #[test]
    fn the_ack_carries_the_cursor() {
        let ack = ServerMessage::ConnectionAck("0123456789abcdef.42");
        for dialect in [Dialect::TransportWs, Dialect::Legacy] {
            assert_eq!(ack.to_json(dialect), r#"{"type":"connection_ack","payload":{"cursor":"0123456789abcdef.42"}}"#);
        }
    }
}
