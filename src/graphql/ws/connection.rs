//! One graphql-ws connection: a single task that reads frames, runs operations and writes their
//! results, watching the init deadline, the token's expiry, the heartbeat, the shutdown token and
//! its subscriptions' overflow token as it goes.
//!
//! One task (not a reader and a writer) keeps an idle connection small. A slow peer blocks only
//! this task's writes; the broker never waits for it, and when its queues overflow the socket is
//! closed with 1013 rather than left to skip events silently.

use async_graphql::{Response, ServerError, Variables};
use axum::extract::ws::{Message, WebSocket};
use futures::future::Either;
use futures::stream::{self, BoxStream};
use futures::{SinkExt, StreamExt, future};
use tokio::time::{Instant, sleep_until};
use tokio_stream::StreamMap;
use tracing::{Instrument, debug, debug_span};

use super::protocol::{ClientMessage, Dialect, ServerMessage, SubscribePayload, close};
use crate::app::AppState;
use crate::auth::{self, User};
use crate::graphql::error::{add_codes, code, failed_before_execution};
use crate::graphql::fanout::{Delivery, GroupKey, Membership, Probe};
use crate::graphql::guard::{self, OperationKind};
use crate::registry::{Channel, ConnectionGuard};
use crate::slow_consumer::{self, Feed, SlowConsumer};
use crate::socket::{self, Liveness};

/// How a connection ends: with a close frame we send, or because the peer is already gone.
enum Shared {
    Joined,
    /// Refused at subscribe time: answered with `error`.
    Refused(Vec<ServerError>),
    /// Not one source (or not a subscription after all): run it on this connection.
    NotShareable,
}

enum End {
    Close(u16, String),
    Gone,
}

fn close_with(code: u16, reason: impl Into<String>) -> End {
    End::Close(code, reason.into())
}

enum Operation {
    /// Executed by this connection: queries, mutations, and subscriptions that cannot be shared.
    Local {
        subscription: bool,
        /// Whether anything was sent for it yet: only a first response can become an `error`.
        started: bool,
    },
    /// A member of a shared group (see `graphql::fanout`).
    Shared {
        membership: Membership,
        /// The id, JSON-encoded once, for splicing into `next` frames.
        id_json: String,
    },
}

struct Connection {
    state: AppState,
    dialect: Dialect,
    header_token: Option<String>,
    registration: ConnectionGuard,
    /// `connection_init` has been received (a second one is refused).
    initialised: bool,
    /// `connection_ack` has been sent; `viewer` is who the connection acts for.
    acked: bool,
    viewer: Option<User>,
    expires: Option<Instant>,
    /// Marked when one of the connection's queues overflows: the socket then closes with 1013.
    consumer: SlowConsumer,
    /// Each local operation's results, then `None` when it completes.
    streams: StreamMap<String, BoxStream<'static, Option<Response>>>,
    operations: Operations,
    /// What the shared groups this connection belongs to send it, and the sender they use.
    deliveries: tokio::sync::mpsc::Receiver<Delivery>,
    deliveries_tx: Feed<Delivery>,
}

/// A connection's operations by id. A vector, not a map: a connection runs a handful at most
/// (`WS_MAX_OPERATIONS` caps it), and an idle connection with one subscription should not carry
/// a hash table's buckets.
#[derive(Default)]
struct Operations(Vec<(String, Operation)>);

impl Operations {
    fn contains(&self, id: &str) -> bool {
        self.0.iter().any(|(i, _)| i == id)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn insert(&mut self, id: String, operation: Operation) {
        self.0.push((id, operation));
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut Operation> {
        self.0.iter_mut().find(|(i, _)| i == id).map(|(_, op)| op)
    }

    fn remove(&mut self, id: &str) -> Option<Operation> {
        let at = self.0.iter().position(|(i, _)| i == id)?;
        Some(self.0.swap_remove(at).1)
    }

    /// The id and JSON-encoded id of the shared operation with this membership.
    fn shared(&self, membership: u64) -> Option<(&str, &str)> {
        self.0.iter().find_map(|(id, op)| match op {
            Operation::Shared { membership: m, id_json } if m.id == membership => Some((id.as_str(), id_json.as_str())),
            _ => None,
        })
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// Frames written in one go before a flush, when deliveries are waiting.
const BATCH: usize = 64;

/// Serves one upgraded socket until it closes.
///
/// Not an `async fn`: the connection is built before the returned future exists, so the future
/// holds it once rather than beside the arguments it was built from. Every byte of an idle
/// connection's task counts, times tens of thousands.
pub fn run(
    socket: WebSocket,
    state: AppState,
    dialect: Option<Dialect>,
    header_token: Option<String>,
) -> impl Future<Output = ()> + Send {
    let Some(dialect) = dialect else {
        return Either::Left(Box::pin(socket::close(
            socket,
            close::SUBPROTOCOL_NOT_ACCEPTABLE,
            "Subprotocol not acceptable",
        )));
    };
    let channel = match dialect {
        Dialect::TransportWs => Channel::GraphqlTransportWs,
        Dialect::Legacy => Channel::GraphqlWs,
    };
    let span = debug_span!("graphql_ws", protocol = channel.label(), user = tracing::field::Empty);
    let consumer = SlowConsumer::new();
    let (deliveries_tx, deliveries) = slow_consumer::queue(state.config.subscriber_queue, &consumer);
    let connection = Connection {
        deliveries,
        deliveries_tx,
        registration: state.registry.connect(channel),
        state,
        dialect,
        header_token,
        initialised: false,
        acked: false,
        viewer: None,
        expires: None,
        consumer,
        streams: StreamMap::new(),
        operations: Operations::default(),
    };
    Either::Right(connection.live(socket).instrument(span))
}

impl Connection {
    // An async block rather than an `async fn`: rustc keeps an async fn's arguments and the
    // locals they move into side by side (rust-lang/rust#62958), doubling this future's size.
    #[allow(clippy::manual_async_fn)]
    fn live(mut self, mut socket: WebSocket) -> impl Future<Output = ()> + Send {
        async move {
            let end = Box::pin(self.serve(&mut socket)).await;
            // Dispose of every operation before the close handshake: nothing more is sent for them.
            self.streams.clear();
            self.operations.clear();
            if let End::Close(code, reason) = end {
                debug!(code, %reason, "closing");
                Box::pin(socket::close(socket, code, &reason)).await;
            }
        }
    }
}

impl Connection {
    async fn serve(&mut self, socket: &mut WebSocket) -> End {
        let config = &self.state.config;
        let shutdown = self.state.shutdown.clone();
        let consumer = self.consumer.clone();
        let mut liveness = Liveness::new(config.inactive_timeout());
        let heartbeat = config.heartbeat_interval();
        let init_at = Instant::now() + config.init_timeout();
        let mut next_ping = heartbeat.map(|every| Instant::now() + every);
        // One timer for every deadline (init, token expiry, inactivity, heartbeat), re-aimed at
        // the nearest one on each turn: four timers would be four registrations per wake-up and
        // four times the state in every idle connection.
        let timer = sleep_until(init_at);
        tokio::pin!(timer);

        // Every handler below is boxed: a connection spends its life waiting, and a handler's
        // state inline in this loop would make every idle connection's task as large as the
        // largest handler (measured: 4.1 KB inline, against 1 KB boxed).
        loop {
            // Deadlines and tokens are checked here, cheaply, on every turn: the select below is
            // biased towards work, so a peer that never stops sending would otherwise keep them
            // from ever being polled.
            if shutdown.is_cancelled() {
                return close_with(close::GOING_AWAY, "server shutting down");
            }
            if consumer.is_slow() {
                return close_with(
                    close::TRY_AGAIN_LATER,
                    "subscriber too slow: events were dropped; reconnect and refetch",
                );
            }
            let now = Instant::now();
            if !self.initialised && now >= init_at {
                return close_with(close::INIT_TIMEOUT, "Connection initialisation timeout");
            }
            if self.expires.is_some_and(|at| now >= at) {
                return close_with(close::FORBIDDEN, "Forbidden: token expired");
            }
            if liveness.expired() {
                return close_with(close::GOING_AWAY, "inactive");
            }
            if let (Some(at), Some(every)) = (next_ping, heartbeat)
                && now >= at
            {
                next_ping = Some(now + every);
                if let Err(end) = Box::pin(self.on_heartbeat(socket)).await {
                    return end;
                }
            }
            let wake_at = [(!self.initialised).then_some(init_at), self.expires, next_ping, Some(liveness.deadline())]
                .into_iter()
                .flatten()
                .min()
                .expect("the inactivity deadline is always there");
            if timer.deadline() != wake_at {
                timer.as_mut().reset(wake_at);
            }

            tokio::select! {
                // Biased, work first: on a busy connection the first ready branch wins without
                // polling the others (each poll of a cancellation token or timer registers a
                // waker, which cost more than writing the frame).
                biased;
                frame = socket.recv() => {
                    let frame = match frame {
                        Some(Ok(frame)) => frame,
                        Some(Err(e)) => return socket::read_error_close(e).map_or(End::Gone, |(c, r)| close_with(c, r)),
                        None => return End::Gone,
                    };
                    liveness.seen();
                    let result = match frame {
                        Message::Text(text) => Box::pin(self.on_text(socket, text.as_str())).await,
                        Message::Binary(_) => Err(close_with(close::BAD_REQUEST, "binary frames are not supported")),
                        Message::Ping(_) | Message::Pong(_) => Ok(()),
                        Message::Close(_) => Err(End::Gone),
                    };
                    if let Err(end) = result {
                        return end;
                    }
                }
                Some(delivery) = self.deliveries.recv() => {
                    if let Err(end) = Box::pin(self.on_deliveries(socket, delivery)).await {
                        return end;
                    }
                }
                Some((id, item)) = self.streams.next(), if !self.streams.is_empty() => {
                    if let Err(end) = Box::pin(self.on_result(socket, id, item)).await {
                        return end;
                    }
                }
                _ = shutdown.cancelled() => {}
                () = consumer.slow() => {}
                () = &mut timer => {}
            }
        }
    }

    async fn on_heartbeat(&mut self, socket: &mut WebSocket) -> Result<(), End> {
        socket::send(socket, Message::Ping(Default::default())).await.map_err(|()| End::Gone)?;
        if self.dialect == Dialect::Legacy && self.acked {
            self.send(socket, ServerMessage::KeepAlive).await?;
        }
        Ok(())
    }

    // `&mut self` although they only read: the task must be `Send`, and a `&Connection` held
    // across an await would need `Connection: Sync`, which boxed streams are not.
    async fn send(&mut self, socket: &mut WebSocket, message: ServerMessage<'_>) -> Result<(), End> {
        let json = message.to_json(self.dialect);
        socket::send(socket, Message::Text(json.into())).await.map_err(|()| End::Gone)
    }

    /// Sends an `error` for one operation, whose errors get codes like every other.
    async fn send_error(&mut self, socket: &mut WebSocket, id: &str, errors: Vec<ServerError>) -> Result<(), End> {
        let mut response = Response::from_errors(errors);
        add_codes(&mut response);
        self.send(socket, ServerMessage::Error { id, errors: &response.errors }).await
    }

    async fn on_text(&mut self, socket: &mut WebSocket, text: &str) -> Result<(), End> {
        let message = match ClientMessage::parse(self.dialect, text) {
            Ok(message) => message,
            Err(invalid) => {
                metrics::counter!("switchboard_rejected_messages_total", "channel" => "graphql", "reason" => "invalid")
                    .increment(1);
                return match self.dialect {
                    Dialect::TransportWs => Err(close_with(close::BAD_REQUEST, invalid.to_string())),
                    // subscriptions-transport-ws answers with an error and keeps the socket.
                    Dialect::Legacy => self.send(socket, ServerMessage::ConnectionError(&invalid.to_string())).await,
                };
            }
        };
        match message {
            ClientMessage::ConnectionInit(payload) => self.on_init(socket, payload).await,
            ClientMessage::Ping(payload) => self.send(socket, ServerMessage::Pong(payload.as_ref())).await,
            ClientMessage::Pong => Ok(()),
            ClientMessage::Subscribe { id, payload } => self.on_subscribe(socket, id, payload).await,
            ClientMessage::Complete { id } => {
                // Stop the source and say nothing more for this id; unknown ids are ignored.
                self.forget(&id);
                Ok(())
            }
            ClientMessage::Terminate => Err(close_with(1000, "terminated")),
        }
    }

    async fn on_init(&mut self, socket: &mut WebSocket, payload: Option<serde_json::Value>) -> Result<(), End> {
        if self.initialised {
            return Err(close_with(close::TOO_MANY_INITS, "Too many initialisation requests"));
        }
        self.initialised = true;
        let token = payload.as_ref().and_then(auth::token_in_params).or(self.header_token.as_deref());
        if let Some(token) = token {
            match self.state.keys.verify(token) {
                Ok(user) => {
                    tracing::Span::current().record("user", user.id.as_str());
                    self.registration.sign_in(&user.id);
                    self.expires = Some(user.expiry_deadline());
                    self.viewer = Some(user);
                }
                Err(refusal) => {
                    if self.dialect == Dialect::Legacy {
                        let _ = self.send(socket, ServerMessage::ConnectionError(&refusal.to_string())).await;
                    }
                    return Err(close_with(close::FORBIDDEN, format!("Forbidden: {refusal}")));
                }
            }
        }
        self.acked = true;
        self.send(socket, ServerMessage::ConnectionAck).await?;
        if self.dialect == Dialect::Legacy {
            self.send(socket, ServerMessage::KeepAlive).await?;
        }
        Ok(())
    }

    async fn on_subscribe(&mut self, socket: &mut WebSocket, id: String, payload: SubscribePayload) -> Result<(), End> {
        if !self.acked {
            return match self.dialect {
                Dialect::TransportWs => Err(close_with(close::UNAUTHORIZED, "Unauthorized")),
                Dialect::Legacy => {
                    let refusal = ServerError::new("send connection_init first", None);
                    self.send_error(socket, &id, vec![refusal]).await
                }
            };
        }
        if self.operations.contains(&id) {
            match self.dialect {
                Dialect::TransportWs => {
                    return Err(close_with(close::SUBSCRIBER_EXISTS, format!("Subscriber for {id} already exists")));
                }
                // subscriptions-transport-ws replaces the old operation.
                Dialect::Legacy => self.forget(&id),
            }
        }
        let limit = self.state.config.ws_max_operations;
        if self.operations.len() >= limit {
            let mut refusal =
                ServerError::new(format!("at most {limit} operations may run at once on one connection"), None);
            refusal.extensions = Some(Default::default());
            refusal.extensions.as_mut().expect("set").set("code", code::BAD_USER_INPUT);
            return self.send_error(socket, &id, vec![refusal]).await;
        }
        let kind = match guard::check(&payload.query, payload.operation_name.as_deref(), self.state.query_limits) {
            Ok(kind) => kind,
            Err(refusal) => return self.send_error(socket, &id, vec![refusal]).await,
        };
        let subscription = kind == Some(OperationKind::Subscription);
        if subscription {
            match self.try_share(&id, &payload).await {
                Shared::Joined => return Ok(()),
                Shared::Refused(errors) => return self.send_error(socket, &id, errors).await,
                Shared::NotShareable => {}
            }
        }
        let request = self.request(&payload).data(self.consumer.clone());
        let results = self.state.schema.execute_stream(request).map(Some).chain(stream::once(future::ready(None)));
        self.streams.insert(id.clone(), results.boxed());
        self.operations.insert(id, Operation::Local { subscription, started: false });
        Ok(())
    }

    fn request(&self, payload: &SubscribePayload) -> async_graphql::Request {
        let mut request = async_graphql::Request::new(payload.query.clone()).data(self.viewer.clone());
        request.operation_name = payload.operation_name.clone();
        if let Some(variables) = &payload.variables {
            request.variables = Variables::from_json(variables.clone());
        }
        request
    }

    /// Probes the subscription (the viewer's checks run, the broker source is found) and joins
    /// the shared group for its audience.
    async fn try_share(&mut self, id: &str, payload: &SubscribePayload) -> Shared {
        let probe = Probe::default();
        let first = self.state.schema.execute_stream(self.request(payload).data(probe.clone())).next().await;
        if let Some(mut response) = first {
            add_codes(&mut response);
            return if failed_before_execution(&response, true) {
                Shared::Refused(response.errors)
            } else {
                Shared::NotShareable
            };
        }
        let Some(source) = probe.take_single() else { return Shared::NotShareable };
        let key = GroupKey {
            query: payload.query.as_str().into(),
            operation_name: payload.operation_name.as_deref().map(Into::into),
            variables: payload.variables.as_ref().map_or_else(|| "null".to_owned(), |v| v.to_string()).into(),
            audience: source.key.clone(),
        };
        let deliveries = self.deliveries_tx.clone();
        let counted = self.state.registry.subscription(source.field);
        let membership =
            self.state.fanout.join(&self.state.schema, key, self.request(payload), source, deliveries, counted);
        let id_json = serde_json::to_string(id).expect("strings serialise");
        self.operations.insert(id.to_owned(), Operation::Shared { membership, id_json });
        Shared::Joined
    }

    /// Ends an operation on our side, whatever its kind.
    fn forget(&mut self, id: &str) {
        self.streams.remove(id);
        self.operations.remove(id);
    }

    /// Writes `first` and whatever else is already waiting (up to [`BATCH`]), then flushes once.
    /// One time limit covers the whole batch: a timer per frame would cost more than the frame.
    async fn on_deliveries(&mut self, socket: &mut WebSocket, first: Delivery) -> Result<(), End> {
        let written = tokio::time::timeout(socket::SEND_TIMEOUT, async {
            let mut next = Some(first);
            let mut written = 0;
            while let Some(delivery) = next.take() {
                if let Some(frame) = self.frame_for(delivery) {
                    socket.feed(Message::Text(frame.into())).await?;
                    written += 1;
                }
                if written < BATCH {
                    next = self.deliveries.try_recv().ok();
                }
            }
            socket.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => Ok(()),
            _ => Err(End::Gone),
        }
    }

    /// The frame a delivery becomes, if its operation is still ours.
    fn frame_for(&mut self, delivery: Delivery) -> Option<String> {
        let (id, id_json) = self.operations.shared(delivery.membership)?;
        match delivery.payload {
            Some(payload) => {
                let kind = if self.dialect == Dialect::Legacy { "data" } else { "next" };
                let parts = ["{\"id\":", id_json, ",\"type\":\"", kind, "\",\"payload\":", payload.as_str(), "}"];
                // Exactly the length: a `Vec` whose capacity is its length becomes `Bytes`
                // (tungstenite's frame payload) without another allocation.
                let mut frame = String::with_capacity(parts.iter().map(|p| p.len()).sum());
                parts.iter().for_each(|p| frame.push_str(p));
                Some(frame)
            }
            None => {
                let id = id.to_owned();
                self.forget(&id);
                Some(ServerMessage::Complete { id: &id }.to_json(self.dialect))
            }
        }
    }

    async fn on_result(&mut self, socket: &mut WebSocket, id: String, item: Option<Response>) -> Result<(), End> {
        let Some(mut response) = item else {
            // The source ended: `complete`, unless the client already completed it.
            if self.operations.remove(&id).is_some() {
                self.send(socket, ServerMessage::Complete { id: &id }).await?;
            }
            return Ok(());
        };
        let Some(Operation::Local { subscription, started }) = self.operations.get_mut(&id) else { return Ok(()) };
        add_codes(&mut response);
        let subscription = *subscription;
        if !*started && failed_before_execution(&response, subscription) {
            // An `error` ends the operation; no `complete` follows it.
            self.operations.remove(&id);
            self.streams.remove(&id);
            return self.send(socket, ServerMessage::Error { id: &id, errors: &response.errors }).await;
        }
        *started = true;
        if subscription {
            metrics::counter!("switchboard_events_delivered_total", "channel" => "graphql").increment(1);
        }
        self.send(socket, ServerMessage::Next { id: &id, payload: &response }).await
    }
}

#[cfg(test)]
mod tests {
    /// An idle connection's task is mostly this future: keep it small (it was 4.1 KB before the
    /// handlers were boxed and `run`/`live` stopped holding their arguments twice).
    #[test]
    fn an_idle_connection_future_stays_small() {
        fn size_of_output<F: Fn(A, B) -> R, A, B, R>(_: &F) -> usize {
            std::mem::size_of::<R>()
        }
        let run = |socket, state| super::run(socket, state, None, None);
        let size = size_of_output(&run);
        assert!(size <= 1536, "the graphql-ws connection future grew to {size} bytes");
    }
}
