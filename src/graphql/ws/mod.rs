//! GraphQL over WebSocket at `GET /graphql`, in both dialects.
//!
//! Our own implementation rather than async-graphql's `GraphQLSubscription`: clients' retry
//! behaviour hangs on exact close codes, and async-graphql 7.2 closes a refused init with 1002
//! (fatal to Apollo and urql, where 4403 lets them retry with a fresh token), sends 1011 for 4401,
//! silently replaces a duplicate id instead of closing 4409, echoes `complete`, never sends
//! `error`, has no init timeout and never pings. `Schema::execute_stream` is still what runs each
//! operation.

mod connection;
pub mod protocol;

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::state::GraphqlState;
use crate::connections::budget::ClientAddr;
use crate::connections::{Channel, Identity};
use crate::http::error::HttpError;
use crate::socket;
use protocol::Dialect;

/// The subprotocols we speak, in order of preference.
pub const SUBPROTOCOLS: [&str; 2] = ["graphql-transport-ws", "graphql-ws"];

/// The upgrade of `GET /graphql`: admitted first (`503` past `MAX_CONNECTIONS`, `429` past the
/// address's anonymous connections); the user's own limit waits for the token in
/// `connection_init`.
pub async fn upgrade(
    State(state): State<GraphqlState>,
    client: ClientAddr,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let header_token = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let ws = socket::configure(ws, state.config.ws_max_message_bytes).protocols(SUBPROTOCOLS);
    let dialect = ws.selected_protocol().and_then(|p| p.to_str().ok()).and_then(Dialect::from_subprotocol);
    let channel = match dialect {
        Some(Dialect::Legacy) => Channel::GraphqlWs,
        // A socket without a subprotocol is closed at once (4406), but it is a socket meanwhile.
        _ => Channel::GraphqlTransportWs,
    };
    // Who it is for is known from `connection_init` only (a token in the header is checked there
    // too): until then it counts as anonymous, or is on probation (see `crate::connections`).
    let permit = match state.connections.admit(channel, client.0, Identity::Unknown) {
        Ok(permit) => permit,
        Err(refused) => return HttpError::from(refused).into_response(),
    };
    let tracker = state.tracker.clone();
    socket::spawn_on_upgrade(ws, tracker, move |socket| {
        connection::start(socket, (state, permit, client, dialect, header_token))
    })
}
