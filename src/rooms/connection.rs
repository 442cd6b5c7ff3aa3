//! One `/ws` connection's protocol: client messages in; replies, the connection's outbox
//! (presence and typing from [`super::presence`]), broker events for the entity rooms it joined and
//! the user's notifications out; its close codes. The socket itself (liveness, pings, the timer,
//! batched writes, the close handshake) is [`crate::socket::Connection`]'s.
//!
//! Ordering: messages about rooms (`room_joined`, `room_left`, `user_*_room`, `typing_indicator`)
//! reach the socket through the outbox, in the order [`super::presence`] decided them. Every other frame
//! is sent after whatever the outbox holds, so a client sees the answers to its messages in the
//! order it sent them.

use std::task::{Context, Poll};

use axum::extract::ws::{Message, WebSocket};
use std::sync::Arc;

use futures::stream::{self, BoxStream};
use futures::{StreamExt, future};
use tokio::time::Instant;
use tokio_stream::StreamMap;
use tracing::{Instrument, debug, debug_span};

use super::access::{self, Denied};
use super::presence::{JoinRefused, Membership};
use super::protocol::{ClientMessage, ErrorCode, FEATURES, MAX_TYPING_FIELD, ServerMessage, Typing};
use super::rate::RateLimiter;
use super::state::RoomsState;
use crate::auth::User;
use crate::commerce::model::{OrderEventKind, parse_id};
use crate::connections::Permit;
use crate::events::log::ResumeError;
use crate::events::slow_consumer::SlowConsumer;
use crate::events::{Event, EventBody, Key, Subscription};
use crate::socket::close::{self, Close};
use crate::socket::{self, Connection, Handler, Incoming, Out};
use crate::store::Reader;

/// What relayed events are counted under when they are handed to the socket.
const CHANNEL: &str = "rooms";

pub struct RoomChannel {
    state: RoomsState,
    user: User,
    client_id: String,
    /// The token's expiry (`exp` + leeway): the socket closes with 1008 then.
    expires: Instant,
    membership: Membership,
    /// Every connection hears its user's notifications.
    notifications: Subscription,
    /// The events of the `order:<id>` / `product:<id>` rooms joined (a broker subscription,
    /// after a replay from the log for a join with `after`), by room id.
    relays: StreamMap<String, BoxStream<'static, Arc<Event>>>,
    limiter: RateLimiter,
    /// The connection's slow-consumer signal, for the relays joined later.
    consumer: SlowConsumer,
}

/// Serves one upgraded socket of `user` (admitted and signed in with `permit`) until it closes.
///
/// Not an `async fn`, and the connection is built before the returned future exists: rustc keeps
/// an async fn's arguments beside the locals they move into (rust-lang/rust#62958), and every
/// byte of an idle connection's task counts, times tens of thousands.
///
/// The arguments after the socket come as one tuple so that `socket::task_size` can name this
/// function's future in the size test below.
pub fn start(socket: WebSocket, (state, permit, user): (RoomsState, Permit, User)) -> impl Future<Output = ()> + Send {
    let client_id = uuid::Uuid::new_v4().to_string();
    let span = debug_span!("rooms_ws", user = %user.id, client = %client_id);
    let connection = Connection::new(socket, permit, socket::Settings::new(&state.config, state.shutdown.clone()));
    let consumer = connection.consumer().clone();
    let membership = state.rooms.connect(&user.id, user.name.clone(), &consumer);
    let notifications = state.broker.subscribe(Key::User(user.id.clone()), state.config.subscriber_queue, &consumer);
    let limiter = RateLimiter::new(state.config.ws_rate_limit, state.config.ws_rate_burst);
    let handler = RoomChannel {
        expires: user.expiry_deadline(),
        state,
        user,
        client_id,
        membership,
        notifications,
        relays: StreamMap::new(),
        limiter,
        consumer,
    };
    connection.run(handler).instrument(span)
}

impl Handler for RoomChannel {
    const SLOW_REASON: &'static str = "too slow: messages were dropped; reconnect to resync";

    fn on_open(&mut self, out: &mut Out<'_>) {
        let welcome = ServerMessage::ConnectionEstablished {
            client_id: &self.client_id,
            user_id: &self.user.id,
            features: FEATURES,
        };
        out.text(welcome.to_text());
        debug!("connected");
    }

    async fn on_message(&mut self, message: Incoming, out: &mut Out<'_>) -> Result<(), Close> {
        if !self.limiter.allow() {
            let message = format!(
                "too many messages: at most {} per second (bursts of {}); this one was ignored",
                self.state.config.ws_rate_limit, self.state.config.ws_rate_burst
            );
            self.refuse(out, "rate_limited", ErrorCode::RateLimited, &message);
            return Ok(());
        }
        let Incoming::Text(text) = message else {
            self.refuse(out, "invalid", ErrorCode::BadRequest, "binary frames are not supported; send JSON text");
            return Ok(());
        };
        let message = match ClientMessage::parse(text.as_str()) {
            Ok(message) => message,
            Err(invalid) => {
                self.refuse(out, "invalid", ErrorCode::BadRequest, &invalid);
                return Ok(());
            }
        };
        match message {
            ClientMessage::Ping(_) => self.reply(out, &ServerMessage::Pong {}),
            ClientMessage::JoinRoom(room) => self.join(out, room.room_id, room.after).await,
            ClientMessage::LeaveRoom(room) => self.leave(out, &room.room_id),
            ClientMessage::TypingIndicator(typing) => self.typing(out, typing),
        }
        Ok(())
    }

    fn poll_outgoing(&mut self, cx: &mut Context<'_>) -> Poll<Message> {
        // The outbox first: a relay or notification never overtakes a room message queued before it.
        if let Poll::Ready(Some(text)) = self.membership.poll_recv(cx) {
            return Poll::Ready(Message::Text(text));
        }
        while !self.relays.is_empty() {
            let Poll::Ready(Some((_, event))) = self.relays.poll_next_unpin(cx) else { break };
            if let Some(frame) = Self::relay(&event) {
                self.state.connections.count_delivered(CHANNEL, 1);
                return Poll::Ready(frame);
            }
        }
        while let Poll::Ready(Some(event)) = self.notifications.poll_next_unpin(cx) {
            if let Some(frame) = Self::relay(&event) {
                self.state.connections.count_delivered(CHANNEL, 1);
                return Poll::Ready(frame);
            }
        }
        Poll::Pending
    }

    fn deadline(&self) -> Option<Instant> {
        Some(self.expires)
    }

    fn on_deadline(&mut self) -> Close {
        Close::new(close::POLICY_VIOLATION, "token expired")
    }

    /// A message over the size limit cannot be skipped (the stream is no longer in step): say so
    /// before the 1009.
    fn on_too_big(&mut self, out: &mut Out<'_>) {
        let limit = self.state.config.ws_max_message_bytes;
        self.refuse(out, "too_big", ErrorCode::BadRequest, &format!("message too big: at most {limit} bytes"));
    }
}

impl RoomChannel {
    /// Sends a direct reply, after whatever the rooms queued for this connection before it.
    fn reply(&mut self, out: &mut Out<'_>, message: &ServerMessage<'_>) {
        while let Some(text) = self.membership.try_recv() {
            out.text(text);
        }
        out.text(message.to_text());
    }

    /// Answers a message that cannot be served with an `error`; the connection stays open.
    fn refuse(&mut self, out: &mut Out<'_>, reason: &'static str, code: ErrorCode, message: &str) {
        metrics::counter!("switchboard_rejected_messages_total", "channel" => "rooms", "reason" => reason).increment(1);
        debug!(reason, message, "refused");
        self.reply(out, &ServerMessage::Error { code, message });
    }

    async fn join(&mut self, out: &mut Out<'_>, room_id: String, after: Option<String>) {
        if let Err(denied) = access::check(&self.user, &room_id, &self.state.store).await {
            return self.refuse_denied(out, denied);
        }
        // Subscribe to the entity's events before the join is announced, so that nothing
        // published after `room_joined` can be missed; with `after`, the log's events since that
        // cursor come first (see `event_log`: live first, then the log, then live past its head).
        let relay = match entity_key(&room_id) {
            Some(key) if !self.relays.contains_key(&room_id) => {
                let live = self.state.broker.subscribe(key.clone(), self.state.config.subscriber_queue, &self.consumer);
                match after {
                    None => Some(live.boxed()),
                    Some(after) => match self.state.log.replay(&key, &after, Reader::SignedIn).await {
                        Ok(replay) => {
                            let through = replay.through;
                            let live = live.filter(move |event| future::ready(event.position > through));
                            Some(stream::iter(replay.events).chain(live).boxed())
                        }
                        Err(refused) => return self.refuse_resume(out, refused),
                    },
                }
            }
            None if after.is_some() => {
                let message = "after resumes the updates of an order:<id> or product:<id> room; this room has none";
                return self.refuse(out, "bad_request", ErrorCode::BadRequest, message);
            }
            _ => None,
        };
        match self.membership.join(&room_id) {
            Ok(()) => {
                if let Some(relay) = relay {
                    self.relays.insert(room_id, relay);
                }
            }
            Err(refused) => {
                let (reason, code) = match refused {
                    JoinRefused::TooManyRooms(_) => ("too_many_rooms", ErrorCode::BadRequest),
                    JoinRefused::RoomFull(_) => ("room_full", ErrorCode::Forbidden),
                };
                self.refuse(out, reason, code, &refused.to_string());
            }
        }
    }

    fn refuse_resume(&mut self, out: &mut Out<'_>, refused: ResumeError) {
        match refused {
            ResumeError::Malformed(message) => self.refuse(out, "bad_request", ErrorCode::BadRequest, &message),
            ResumeError::Expired(message) => self.refuse(out, "cursor_expired", ErrorCode::CursorExpired, &message),
            ResumeError::Store(e) => {
                tracing::error!(error = %e, "reading the event log for a resume failed");
                self.refuse(out, "internal", ErrorCode::InternalServerError, "internal server error");
            }
        }
    }

    fn refuse_denied(&mut self, out: &mut Out<'_>, denied: Denied) {
        let (reason, code) = match &denied {
            Denied::BadRequest(_) => ("bad_request", ErrorCode::BadRequest),
            Denied::Forbidden(_) => ("forbidden", ErrorCode::Forbidden),
            Denied::NotFound(_) => ("not_found", ErrorCode::NotFound),
            Denied::Store(e) => {
                tracing::error!(error = %e, "room access check failed");
                ("internal", ErrorCode::InternalServerError)
            }
        };
        self.refuse(out, reason, code, &denied.to_string());
    }

    fn leave(&mut self, out: &mut Out<'_>, room_id: &str) {
        if let Err(denied) = access::check_id(room_id) {
            return self.refuse_denied(out, denied);
        }
        self.relays.remove(room_id);
        self.membership.leave(room_id);
    }

    fn typing(&mut self, out: &mut Out<'_>, typing: Typing) {
        if let Err(denied) = access::check_id(&typing.room_id) {
            return self.refuse_denied(out, denied);
        }
        if typing.field.as_ref().is_some_and(|f| f.len() > MAX_TYPING_FIELD) {
            let message = format!("field must be at most {MAX_TYPING_FIELD} bytes");
            return self.refuse(out, "bad_request", ErrorCode::BadRequest, &message);
        }
        if let Err(not_in) = self.membership.typing(&typing.room_id, typing.is_typing, typing.field.as_deref()) {
            self.refuse(out, "not_in_room", ErrorCode::Forbidden, &not_in.to_string());
        }
    }

    /// The frame a broker event becomes: `order_update`, `inventory_update` or `notification`.
    fn relay(event: &Event) -> Option<Message> {
        let message = match &event.body {
            EventBody::Order(e) if e.kind == OrderEventKind::Updated => {
                ServerMessage::OrderUpdate(Box::new(e.update_payload()))
            }
            // Created and deleted orders are not updates; `orderEvents` carries them.
            EventBody::Order(_) => return None,
            EventBody::Inventory(change) => ServerMessage::InventoryUpdate(change),
            EventBody::Notification(notification) => ServerMessage::Notification(notification),
        };
        Some(Message::Text(message.to_text()))
    }
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
    /// An idle connection's task is this future and nothing else: nothing it holds while idle is
    /// boxed (see `socket::Connection::run`), so this is every byte of it. 1,544 bytes when
    /// measured (it was 4.1 KB before the handlers were boxed and `start` stopped holding its
    /// arguments twice); the limit leaves room for little more.
    #[test]
    fn an_idle_connection_task_stays_small() {
        let size = crate::socket::task_size(&super::start);
        assert!(size <= 1600, "an idle room connection's task grew to {size} bytes");
    }
}
