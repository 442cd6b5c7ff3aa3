//! One `/ws` connection: a single task that reads client messages, drains the connection's
//! outbox (presence and typing from the registry), relays broker events for the entity rooms it
//! joined and the user's notifications, and watches the heartbeat, the idle deadline, the token's
//! expiry, the shutdown token and its overflow token as it goes.
//!
//! Ordering: messages about rooms (`room_joined`, `room_left`, `user_*_room`, `typing_indicator`)
//! reach the socket through the outbox, in the order the registry decided them. Every other reply
//! drains the outbox first, so a client sees the answers to its messages in the order it sent them.

use axum::extract::ws::{Message, WebSocket};
use futures::StreamExt;
use tokio::time::sleep_until;
use tokio_stream::StreamMap;
use tracing::{Instrument, debug, debug_span};

use super::access::{self, Denied};
use super::protocol::{ClientMessage, ErrorCode, FEATURES, MAX_TYPING_FIELD, ServerMessage, Typing};
use super::rate::RateLimiter;
use super::registry::{JoinRefused, Membership};
use crate::app::AppState;
use crate::auth::User;
use crate::model::{OrderEventKind, parse_id};
use crate::pubsub::{Event, EventBody, Key, Subscription};
use crate::registry::{Channel, ConnectionGuard};
use crate::slow_consumer::SlowConsumer;
use crate::socket::{self, Liveness};

/// Close codes of this channel.
mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// How a connection ends: with a close frame we send, or because the peer is already gone.
enum End {
    Close(u16, &'static str),
    Gone,
}

struct Connection {
    state: AppState,
    user: User,
    client_id: String,
    /// Declared (so dropped) before `membership`: a client told `user_left_room` already finds
    /// the user offline in `isUserOnline`.
    _registration: ConnectionGuard,
    membership: Membership,
    /// Every connection hears its user's notifications.
    notifications: Subscription,
    /// Broker subscriptions of the `order:<id>` / `product:<id>` rooms joined, by room id.
    relays: StreamMap<String, Subscription>,
    limiter: RateLimiter,
    /// Marked when one of the connection's queues overflows: the socket then closes with 1013.
    consumer: SlowConsumer,
}

/// Serves one upgraded socket until it closes.
///
/// Not an `async fn`, and the connection is built before the returned future exists: rustc keeps
/// an async fn's arguments beside the locals they move into (rust-lang/rust#62958), and every
/// byte of an idle connection's task counts, times tens of thousands.
pub fn run(socket: WebSocket, state: AppState, user: User) -> impl Future<Output = ()> + Send {
    let client_id = uuid::Uuid::new_v4().to_string();
    let span = debug_span!("rooms_ws", user = %user.id, client = %client_id);
    let mut registration = state.registry.connect(Channel::Rooms);
    registration.sign_in(&user.id);
    let consumer = SlowConsumer::new();
    let membership = state.rooms.connect(&user.id, user.name.clone(), &consumer);
    let notifications =
        state.commerce.broker().subscribe(Key::User(user.id.clone()), state.config.subscriber_queue, &consumer);
    let limiter = RateLimiter::new(state.config.ws_rate_limit, state.config.ws_rate_burst);
    let connection = Connection {
        state,
        user,
        client_id,
        _registration: registration,
        membership,
        notifications,
        relays: StreamMap::new(),
        limiter,
        consumer,
    };
    connection.live(socket).instrument(span)
}

impl Connection {
    #[allow(clippy::manual_async_fn)] // see `run`: an async block holds its captures once
    fn live(mut self, mut socket: WebSocket) -> impl Future<Output = ()> + Send {
        async move {
            let end = Box::pin(self.serve(&mut socket)).await;
            // Leave every room and go offline before the close handshake, which may wait on a
            // peer that never answers: presence must not.
            drop(self);
            if let End::Close(code, reason) = end {
                debug!(code, reason, "closing");
                Box::pin(socket::close(socket, code, reason)).await;
            } else {
                debug!("peer gone");
            }
        }
    }
}

impl Connection {
    async fn serve(&mut self, socket: &mut WebSocket) -> End {
        let config = self.state.config.clone();
        let shutdown = self.state.shutdown.clone();
        let consumer = self.consumer.clone();
        let mut liveness = Liveness::new(config.inactive_timeout());
        let mut heartbeat = socket::heartbeat(config.heartbeat_interval());
        let expiry = sleep_until(self.user.expiry_deadline());
        let idle = sleep_until(liveness.deadline());
        tokio::pin!(expiry, idle);

        let welcome = ServerMessage::ConnectionEstablished {
            client_id: &self.client_id,
            user_id: &self.user.id,
            features: FEATURES,
        };
        if let Err(end) = Box::pin(send(socket, &welcome)).await {
            return end;
        }
        debug!("connected");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return End::Close(close::GOING_AWAY, "server shutting down"),
                () = consumer.slow() => {
                    return End::Close(close::TRY_AGAIN_LATER, "too slow: messages were dropped; reconnect to resync");
                }
                _ = &mut expiry => return End::Close(close::POLICY_VIOLATION, "token expired"),
                _ = &mut idle => {
                    if liveness.expired() {
                        return End::Close(close::GOING_AWAY, "inactive");
                    }
                    idle.as_mut().reset(liveness.deadline());
                }
                _ = heartbeat.tick() => {
                    if Box::pin(socket::send(socket, Message::Ping(Default::default()))).await.is_err() {
                        return End::Gone;
                    }
                }
                Some(text) = self.membership.recv() => {
                    if Box::pin(socket::send(socket, Message::Text(text))).await.is_err() {
                        return End::Gone;
                    }
                }
                Some((_, event)) = self.relays.next(), if !self.relays.is_empty() => {
                    if let Err(end) = Box::pin(self.relay(socket, &event)).await {
                        return end;
                    }
                }
                Some(event) = self.notifications.next() => {
                    if let Err(end) = Box::pin(self.relay(socket, &event)).await {
                        return end;
                    }
                }
                frame = socket.recv() => {
                    let frame = match frame {
                        Some(Ok(frame)) => frame,
                        Some(Err(e)) => return Box::pin(self.on_read_error(socket, e)).await,
                        None => return End::Gone,
                    };
                    liveness.seen();
                    let result = match frame {
                        // Handlers are boxed: inline, their state would make every idle
                        // connection's task as large as the largest of them.
                        Message::Text(text) => Box::pin(self.on_message(socket, Some(text.as_str()))).await,
                        Message::Binary(_) => Box::pin(self.on_message(socket, None)).await,
                        Message::Ping(_) | Message::Pong(_) => Ok(()),
                        Message::Close(_) => Err(End::Gone),
                    };
                    if let Err(end) = result {
                        return end;
                    }
                }
            }
        }
    }

    /// Sends a direct reply, after whatever the registry queued for this connection before it.
    async fn reply(&mut self, socket: &mut WebSocket, message: &ServerMessage<'_>) -> Result<(), End> {
        while let Some(text) = self.membership.try_recv() {
            socket::send(socket, Message::Text(text)).await.map_err(|()| End::Gone)?;
        }
        send(socket, message).await
    }

    /// Answers a message that cannot be served with an `error`; the connection stays open.
    async fn refuse(
        &mut self,
        socket: &mut WebSocket,
        reason: &'static str,
        code: ErrorCode,
        message: &str,
    ) -> Result<(), End> {
        metrics::counter!("switchboard_rejected_messages_total", "channel" => "rooms", "reason" => reason).increment(1);
        debug!(reason, message, "refused");
        self.reply(socket, &ServerMessage::Error { code, message }).await
    }

    /// A message over the size limit cannot be skipped (the stream is no longer in step): say so,
    /// then close with 1009. Any other read failure means the peer is gone.
    async fn on_read_error(&mut self, socket: &mut WebSocket, error: axum::Error) -> End {
        let Some((code, reason)) = socket::read_error_close(error) else { return End::Gone };
        let limit = self.state.config.ws_max_message_bytes;
        let message = format!("message too big: at most {limit} bytes");
        if self.refuse(socket, "too_big", ErrorCode::BadRequest, &message).await.is_err() {
            return End::Gone;
        }
        End::Close(code, reason)
    }

    /// One client message; `None` is a binary frame.
    async fn on_message(&mut self, socket: &mut WebSocket, text: Option<&str>) -> Result<(), End> {
        if !self.limiter.allow() {
            let message = format!(
                "too many messages: at most {} per second (bursts of {}); this one was ignored",
                self.state.config.ws_rate_limit, self.state.config.ws_rate_burst
            );
            return self.refuse(socket, "rate_limited", ErrorCode::RateLimited, &message).await;
        }
        let Some(text) = text else {
            return self
                .refuse(socket, "invalid", ErrorCode::BadRequest, "binary frames are not supported; send JSON text")
                .await;
        };
        let message = match ClientMessage::parse(text) {
            Ok(message) => message,
            Err(invalid) => return self.refuse(socket, "invalid", ErrorCode::BadRequest, &invalid).await,
        };
        match message {
            ClientMessage::Ping(_) => self.reply(socket, &ServerMessage::Pong {}).await,
            ClientMessage::JoinRoom(room) => self.join(socket, room.room_id).await,
            ClientMessage::LeaveRoom(room) => self.leave(socket, &room.room_id).await,
            ClientMessage::TypingIndicator(typing) => self.typing(socket, typing).await,
        }
    }

    async fn join(&mut self, socket: &mut WebSocket, room_id: String) -> Result<(), End> {
        if let Err(denied) = access::check(&self.user, &room_id, self.state.commerce.store()).await {
            return self.refuse_denied(socket, denied).await;
        }
        // Subscribe to the entity's events before the join is announced, so that nothing
        // published after `room_joined` can be missed.
        let relay = match entity_key(&room_id) {
            Some(key) if !self.relays.contains_key(&room_id) => {
                Some(self.state.commerce.broker().subscribe(key, self.state.config.subscriber_queue, &self.consumer))
            }
            _ => None,
        };
        match self.membership.join(&room_id) {
            Ok(()) => {
                if let Some(relay) = relay {
                    self.relays.insert(room_id, relay);
                }
                Ok(())
            }
            Err(refused) => {
                let (reason, code) = match refused {
                    JoinRefused::TooManyRooms(_) => ("too_many_rooms", ErrorCode::BadRequest),
                    JoinRefused::RoomFull(_) => ("room_full", ErrorCode::Forbidden),
                };
                self.refuse(socket, reason, code, &refused.to_string()).await
            }
        }
    }

    async fn refuse_denied(&mut self, socket: &mut WebSocket, denied: Denied) -> Result<(), End> {
        let (reason, code) = match &denied {
            Denied::BadRequest(_) => ("bad_request", ErrorCode::BadRequest),
            Denied::Forbidden(_) => ("forbidden", ErrorCode::Forbidden),
            Denied::NotFound(_) => ("not_found", ErrorCode::NotFound),
            Denied::Store(e) => {
                tracing::error!(error = %e, "room access check failed");
                ("internal", ErrorCode::InternalServerError)
            }
        };
        self.refuse(socket, reason, code, &denied.to_string()).await
    }

    async fn leave(&mut self, socket: &mut WebSocket, room_id: &str) -> Result<(), End> {
        if let Err(denied) = access::check_id(room_id) {
            return self.refuse_denied(socket, denied).await;
        }
        self.relays.remove(room_id);
        self.membership.leave(room_id);
        Ok(())
    }

    async fn typing(&mut self, socket: &mut WebSocket, typing: Typing) -> Result<(), End> {
        if let Err(denied) = access::check_id(&typing.room_id) {
            return self.refuse_denied(socket, denied).await;
        }
        if typing.field.as_ref().is_some_and(|f| f.len() > MAX_TYPING_FIELD) {
            let message = format!("field must be at most {MAX_TYPING_FIELD} bytes");
            return self.refuse(socket, "bad_request", ErrorCode::BadRequest, &message).await;
        }
        match self.membership.typing(&typing.room_id, typing.is_typing, typing.field.as_deref()) {
            Ok(()) => Ok(()),
            Err(not_in) => self.refuse(socket, "not_in_room", ErrorCode::Forbidden, &not_in.to_string()).await,
        }
    }

    /// Relays a broker event: `order_update`, `inventory_update` or `notification`.
    async fn relay(&mut self, socket: &mut WebSocket, event: &Event) -> Result<(), End> {
        let message = match &event.body {
            EventBody::Order(e) if e.kind == OrderEventKind::Updated => ServerMessage::OrderUpdate(e.update_payload()),
            // Created and deleted orders are not updates; `orderEvents` carries them.
            EventBody::Order(_) => return Ok(()),
            EventBody::Inventory(change) => ServerMessage::InventoryUpdate(change),
            EventBody::Notification(notification) => ServerMessage::Notification(notification),
        };
        metrics::counter!("switchboard_events_delivered_total", "channel" => "rooms").increment(1);
        self.reply(socket, &message).await
    }
}

async fn send(socket: &mut WebSocket, message: &ServerMessage<'_>) -> Result<(), End> {
    socket::send(socket, Message::Text(message.to_text())).await.map_err(|()| End::Gone)
}

/// The broker key whose events a room relays: `order:<id>` and `product:<id>` rooms relay their
/// entity's changes; other rooms relay nothing.
fn entity_key(room_id: &str) -> Option<Key> {
    if let Some(id) = room_id.strip_prefix("order:") {
        parse_id(id).map(Key::Order)
    } else if let Some(id) = room_id.strip_prefix("product:") {
        parse_id(id).map(Key::Product)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    /// An idle connection's task is mostly this future: keep it small (4.1 KB before the
    /// handlers were boxed and `run` stopped holding its arguments twice).
    #[test]
    fn an_idle_connection_future_stays_small() {
        fn size_of_output<F: Fn(A, B, C) -> R, A, B, C, R>(_: &F) -> usize {
            std::mem::size_of::<R>()
        }
        let run = |socket, state, user| super::run(socket, state, user);
        let size = size_of_output(&run);
        assert!(size <= 1536, "the room connection future grew to {size} bytes");
    }
}
