//! What a channel supplies to [`super::Connection`]: its protocol, and nothing about the socket.

use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::extract::ws::{Message, Utf8Bytes};
use tokio::time::Instant;

use super::close::Close;
use crate::connections::Permit;

/// A data message from the peer (control frames are the connection's business).
#[derive(Debug)]
pub enum Incoming {
    Text(Utf8Bytes),
    Binary(Bytes),
}

/// Frames a handler wants sent in answer, and the connection's permit (to sign a user in once
/// the protocol learns who it is).
#[derive(Debug)]
pub struct Out<'a> {
    pub(super) frames: Vec<Message>,
    permit: &'a mut Permit,
}

impl<'a> Out<'a> {
    pub(super) fn new(permit: &'a mut Permit) -> Self {
        Self { frames: Vec::new(), permit }
    }

    pub fn send(&mut self, message: Message) {
        self.frames.push(message);
    }

    pub fn text(&mut self, text: impl Into<Utf8Bytes>) {
        self.frames.push(Message::Text(text.into()));
    }

    pub fn permit(&mut self) -> &mut Permit {
        self.permit
    }
}

/// A channel's protocol over one socket: messages in, frames out, its own close codes.
///
/// The connection owns everything else — reading, liveness and pings, one timer for every
/// deadline, batched writes with one time limit per batch, the shutdown and slow-consumer
/// signals, the close handshake both ways — so that the channels cannot drift apart on any of it.
/// Handlers never touch the socket: they push frames into an [`Out`] or hand them over through
/// [`Handler::poll_outgoing`].
pub trait Handler: Send {
    /// The reason sent with 1013 when the connection's consumer is marked slow.
    const SLOW_REASON: &'static str;

    /// The socket is open: frames to send first.
    fn on_open(&mut self, _out: &mut Out<'_>) {}

    /// A message from the peer. An `Err` closes the socket with that code, after `out`'s frames.
    fn on_message(&mut self, message: Incoming, out: &mut Out<'_>) -> impl Future<Output = Result<(), Close>> + Send;

    /// The next frame the protocol has to send on its own (deliveries, results, room messages),
    /// if one is ready. The connection writes it and whatever else is ready right after it in
    /// one batch, polling with a no-op waker for those; it always polls again with its own waker
    /// before it waits, so a `Pending` here may register any waker.
    fn poll_outgoing(&mut self, cx: &mut Context<'_>) -> Poll<Message>;

    /// When the protocol wants the socket closed unless something changes first (an init
    /// deadline, a token's expiry). Checked on every turn; the connection's one timer aims at
    /// the nearest deadline.
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// The deadline passed: how to close.
    fn on_deadline(&mut self) -> Close {
        Close::new(super::close::GOING_AWAY, "deadline")
    }

    /// The connection is about to ping the peer: protocol-level keep-alives to send along.
    fn on_heartbeat(&mut self, _out: &mut Out<'_>) {}

    /// A message over the size limit arrived; the socket is closed with 1009 after `out`'s frames.
    fn on_too_big(&mut self, _out: &mut Out<'_>) {}
}
