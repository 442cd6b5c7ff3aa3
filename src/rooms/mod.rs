//! The room channel at `/ws` (`docs/rooms.md`): rooms, presence, typing indicators and entity
//! relays.
//!
//! - [`protocol`]: the client and server messages;
//! - `presence`: rooms and their members (joining, leaving, the member lists), shared with the
//!   GraphQL `roomPresence` and `stats` queries; `typing`: typing indicators and their timeout;
//!   `replica`: the other nodes' part of the presence, merged in; `overview`: the console's view;
//! - [`access`]: who may join which room, shared with `roomPresence`;
//! - `connection`: the socket loop; [`state`]: what it is served with.

pub mod access;
mod connection;
mod overview;
mod presence;
pub mod protocol;
mod rate;
mod replica;
pub mod state;
mod typing;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

pub use overview::{RoomView, RoomsOverview};
pub use presence::{JoinRefused, LocalEntry, Membership, NotInRoom, PresenceChange, RoomSettings, Rooms};

pub use state::RoomsState;

use crate::auth::AuthError;
use crate::connections::budget::ClientAddr;
use crate::connections::{Channel, Identity};
use crate::http::error::HttpError;
use crate::socket;

/// `/ws`.
pub fn router(state: RoomsState) -> Router {
    Router::new().route("/ws", get(upgrade)).with_state(state)
}

#[derive(Debug, Deserialize)]
pub struct Params {
    token: Option<String>,
}

/// `GET /ws`: the token (`?token=` first, else `Authorization`) is checked before the upgrade, so
/// a missing, invalid or expired one is a plain `401` and no socket is ever opened for it; so are
/// the limits: `503` past `MAX_CONNECTIONS`, `429` past the user's `MAX_CONNECTIONS_PER_USER`.
pub async fn upgrade(
    State(state): State<RoomsState>,
    client: ClientAddr,
    params: Result<Query<Params>, QueryRejection>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let from_query = params.ok().and_then(|Query(p)| p.token).filter(|t| !t.trim().is_empty());
    let token = from_query
        .or_else(|| headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned))
        .filter(|t| !crate::auth::strip_bearer(t).is_empty());
    let Some(token) = token else {
        let missing =
            AuthError::Invalid("none given; send ?token=<jwt> or an Authorization: Bearer <jwt> header".into());
        return HttpError::Unauthorized(missing).into_response();
    };
    let user = match state.keys.verify(&token) {
        Ok(user) => user,
        Err(refusal) => return HttpError::Unauthorized(refusal).into_response(),
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let permit = match state.connections.admit(Channel::Rooms, client.0, Identity::User(&user.id)) {
        Ok(permit) => permit,
        Err(refused) => return HttpError::from(refused).into_response(),
    };
    let ws = socket::configure(ws, state.config.ws_max_message_bytes);
    let tracker = state.tracker.clone();
    socket::spawn_on_upgrade(ws, tracker, move |socket| connection::start(socket, (state, permit, user)))
}
