//! One graphql-ws connection's protocol, in either dialect: messages in, frames out, its close
//! codes. The socket itself (liveness, pings, the timer, batched writes, the close handshake) is
//! [`crate::socket::Connection`]'s; what an operation is (limits, sharing, resuming, counting) is
//! the runner's ([`crate::graphql::operations`]). This handler only frames.

use std::sync::Arc;
use std::task::{Context, Poll};

use async_graphql::ServerError;
use axum::extract::ws::{Message, WebSocket};
use tokio::time::Instant;
use tracing::{Instrument, debug_span};

use super::protocol::{ClientMessage, Dialect, ServerMessage, SubscribePayload};
use crate::auth::{self, User};
use crate::connections::Permit;
use crate::connections::budget::ClientAddr;
use crate::graphql::error::add_codes;
use crate::graphql::operations::{Channel, Operations, Output, Start};
use crate::graphql::state::GraphqlState;
use crate::socket::close::{self, Close};
use crate::socket::{self, Connection, Handler, Incoming, Out};

pub struct GraphqlWs {
    state: GraphqlState,
    dialect: Dialect,
    /// The client's address: what an anonymous viewer's store reads and replays count against.
    client: ClientAddr,
    header_token: Option<String>,
    /// `connection_init` must arrive by then (else 4408).
    init_deadline: Instant,
    /// `connection_init` has been received (a second one is refused).
    initialised: bool,
    /// `connection_ack` has been sent; `viewer` is who the connection acts for.
    acked: bool,
    viewer: Option<User>,
    expires: Option<Instant>,
    operations: Operations,
}

/// Serves one upgraded socket (admitted with `permit`) until it closes; `None` is a client that
/// offered no subprotocol we speak (closed 4406).
///
/// Not an `async fn`: the connection is built before the returned future exists, so the future
/// holds it once rather than beside the arguments it was built from. Every byte of an idle
/// connection's task counts, times tens of thousands.
///
/// The arguments after the socket come as one tuple so that `socket::task_size` can name this
/// function's future in the size test below.
pub fn start(
    socket: WebSocket,
    (state, permit, client, dialect, header_token): (GraphqlState, Permit, ClientAddr, Option<Dialect>, Option<String>),
) -> impl Future<Output = ()> + Send {
    let settings = socket::Settings::new(&state.config, state.shutdown.clone());
    let connection = Connection::new(socket, permit, settings);
    let Some(dialect) = dialect else {
        let refusal = Close::new(close::SUBPROTOCOL_NOT_ACCEPTABLE, "Subprotocol not acceptable");
        return futures::future::Either::Left(Box::pin(connection.refuse(refusal)));
    };
    let protocol = match dialect {
        Dialect::TransportWs => "graphql-transport-ws",
        Dialect::Legacy => "graphql-ws",
    };
    let span = debug_span!("graphql_ws", protocol, user = tracing::field::Empty);
    let operations = Operations::new(state.runner.clone(), Channel::GraphqlWs, connection.consumer().clone());
    let handler = GraphqlWs {
        init_deadline: Instant::now() + state.config.init_timeout(),
        operations,
        state,
        dialect,
        client,
        header_token,
        initialised: false,
        acked: false,
        viewer: None,
        expires: None,
    };
    futures::future::Either::Right(connection.run(handler).instrument(span))
}

impl Handler for GraphqlWs {
    const SLOW_REASON: &'static str = "subscriber too slow: reconnect and resume with after: <last cursor>";

    async fn on_message(&mut self, message: Incoming, out: &mut Out<'_>) -> Result<(), Close> {
        match message {
            Incoming::Text(text) => self.on_text(out, text.as_str()).await,
            Incoming::Binary(_) => Err(Close::new(close::BAD_REQUEST, "binary frames are not supported")),
        }
    }

    fn poll_outgoing(&mut self, cx: &mut Context<'_>) -> Poll<Message> {
        let output = std::task::ready!(self.operations.poll_next(cx));
        Poll::Ready(Message::Text(self.frame(output).into()))
    }

    fn deadline(&self) -> Option<Instant> {
        if self.initialised { self.expires } else { Some(self.init_deadline) }
    }

    fn on_deadline(&mut self) -> Close {
        if self.initialised {
            Close::new(close::FORBIDDEN, "Forbidden: token expired")
        } else {
            Close::new(close::INIT_TIMEOUT, "Connection initialisation timeout")
        }
    }

    fn on_heartbeat(&mut self, out: &mut Out<'_>) {
        if self.dialect == Dialect::Legacy && self.acked {
            self.send(out, ServerMessage::KeepAlive);
        }
    }
}

impl GraphqlWs {
    fn send(&self, out: &mut Out<'_>, message: ServerMessage<'_>) {
        out.text(message.to_json(self.dialect));
    }

    /// Sends an `error` for one operation, whose errors get codes like every other.
    fn send_error(&self, out: &mut Out<'_>, id: &str, errors: Vec<ServerError>) {
        let mut response = async_graphql::Response::from_errors(errors);
        add_codes(&mut response);
        self.send(out, ServerMessage::Error { id, errors: &response.errors });
    }

    async fn on_text(&mut self, out: &mut Out<'_>, text: &str) -> Result<(), Close> {
        let message = match ClientMessage::parse(self.dialect, text) {
            Ok(message) => message,
            Err(invalid) => {
                metrics::counter!("switchboard_rejected_messages_total", "channel" => "graphql", "reason" => "invalid")
                    .increment(1);
                return match self.dialect {
                    Dialect::TransportWs => Err(Close::new(close::BAD_REQUEST, invalid.to_string())),
                    // subscriptions-transport-ws answers with an error and keeps the socket.
                    Dialect::Legacy => {
                        self.send(out, ServerMessage::ConnectionError(&invalid.to_string()));
                        Ok(())
                    }
                };
            }
        };
        match message {
            ClientMessage::ConnectionInit(payload) => self.on_init(out, payload),
            ClientMessage::Ping(payload) => {
                self.send(out, ServerMessage::Pong(payload.as_ref()));
                Ok(())
            }
            ClientMessage::Pong => Ok(()),
            ClientMessage::Subscribe { id, payload } => self.on_subscribe(out, id, payload).await,
            ClientMessage::Complete { id } => {
                // Stop the source and say nothing more for this id; unknown ids are ignored.
                self.forget(&id);
                Ok(())
            }
            ClientMessage::Terminate => Err(Close::new(close::NORMAL, "terminated")),
        }
    }

    fn on_init(&mut self, out: &mut Out<'_>, payload: Option<serde_json::Value>) -> Result<(), Close> {
        if self.initialised {
            return Err(Close::new(close::TOO_MANY_INITS, "Too many initialisation requests"));
        }
        self.initialised = true;
        let token = payload.as_ref().and_then(auth::token_in_params).or(self.header_token.as_deref());
        if let Some(token) = token {
            let user = match self.state.keys.verify(token) {
                Ok(user) => user,
                Err(refusal) => {
                    let why = refusal.to_string();
                    return Err(self.refuse_init(out, &why, Close::new(close::FORBIDDEN, format!("Forbidden: {why}"))));
                }
            };
            // The user is known only now: their share of connections is checked here, and a
            // user over it is closed with 1013, which graphql-ws clients retry with backoff.
            if let Err(refused) = out.permit().sign_in(&user.id) {
                return Err(self.refuse_init(out, &refused.to_string(), Close::too_many_connections()));
            }
            tracing::Span::current().record("user", user.id.as_str());
            self.expires = Some(user.expiry_deadline());
            self.viewer = Some(user);
        } else if let Err(refused) = out.permit().stay_anonymous() {
            // Admitted on probation from the room kept for signed-in users, and it has no token:
            // 1013, which graphql-ws clients retry with backoff.
            let why = refused.to_string();
            return Err(self.refuse_init(out, &why, Close::new(close::TRY_AGAIN_LATER, why.clone())));
        }
        // Where a subscription made now starts, for a client to subscribe from (`after`) before it
        // has an event of its own.
        let cursor = self.state.runner.head_cursor();
        self.acked = true;
        self.send(out, ServerMessage::ConnectionAck(&cursor));
        if self.dialect == Dialect::Legacy {
            self.send(out, ServerMessage::KeepAlive);
        }
        Ok(())
    }

    /// `close`, for a refused `connection_init`; the legacy dialect hears why first.
    fn refuse_init(&self, out: &mut Out<'_>, why: &str, close: Close) -> Close {
        if self.dialect == Dialect::Legacy {
            self.send(out, ServerMessage::ConnectionError(why));
        }
        close
    }

    async fn on_subscribe(&mut self, out: &mut Out<'_>, id: String, payload: SubscribePayload) -> Result<(), Close> {
        if !self.acked {
            return match self.dialect {
                Dialect::TransportWs => Err(Close::new(close::UNAUTHORIZED, "Unauthorized")),
                Dialect::Legacy => {
                    let refusal = ServerError::new("send connection_init first", None);
                    self.send_error(out, &id, vec![refusal]);
                    Ok(())
                }
            };
        }
        if self.operations.contains(&id) {
            match self.dialect {
                Dialect::TransportWs => {
                    return Err(Close::new(close::SUBSCRIBER_EXISTS, format!("Subscriber for {id} already exists")));
                }
                // subscriptions-transport-ws replaces the old operation.
                Dialect::Legacy => {
                    self.operations.stop(&id);
                }
            }
        }
        let prepared = match self.state.runner.prepare(&payload.query, payload.operation_name.as_deref()) {
            Ok(prepared) => prepared,
            Err(refusal) => {
                self.send_error(out, &id, vec![refusal]);
                return Ok(());
            }
        };
        let variables = payload.variables.unwrap_or(serde_json::Value::Null);
        let start = Start { prepared, variables, viewer: self.viewer.clone(), client: self.client, resume_from: None };
        self.operations.start(Arc::from(id), start).await;
        Ok(())
    }

    /// Ends an operation on our side, whatever its kind.
    fn forget(&mut self, id: &str) {
        self.operations.stop(id);
    }

    /// The frame an operation's output becomes.
    fn frame(&self, output: Output) -> String {
        match output {
            Output::Next { id, result, .. } => {
                let kind = if self.dialect == Dialect::Legacy { "data" } else { "next" };
                let id_json = serde_json::to_string(&*id).expect("strings serialise");
                let payload = result.as_str();
                let parts = ["{\"id\":", &id_json, ",\"type\":\"", kind, "\",\"payload\":", payload, "}"];
                // Exactly the length: a `Vec` whose capacity is its length becomes `Bytes`
                // (tungstenite's frame payload) without another allocation.
                let mut frame = String::with_capacity(parts.iter().map(|p| p.len()).sum());
                parts.iter().for_each(|p| frame.push_str(p));
                frame
            }
            // An `error` ends the operation; no `complete` follows it.
            Output::Refused { id, errors } => {
                let mut response = async_graphql::Response::from_errors(errors);
                add_codes(&mut response);
                ServerMessage::Error { id: &id, errors: &response.errors }.to_json(self.dialect)
            }
            Output::Complete { id } => ServerMessage::Complete { id: &id }.to_json(self.dialect),
        }
    }
}

#[cfg(test)]
mod tests {
    /// An idle connection's task is this future and nothing else: nothing it holds while idle is
    /// boxed (see `socket::Connection::run`), so this is every byte of it. 1,496 bytes when
    /// measured (it was 4.1 KB before the handlers were boxed and `start` stopped holding its
    /// arguments twice); the limit leaves room for little more.
    #[test]
    fn an_idle_connection_task_stays_small() {
        let size = crate::socket::task_size(&super::start);
        assert!(size <= 1600, "an idle graphql-ws connection's task grew to {size} bytes");
    }
}
