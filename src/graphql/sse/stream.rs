//! The body of every event stream: the `retry:` line first, then whatever its [`Source`] yields,
//! a keep-alive comment whenever the stream has been quiet for the keep-alive interval, and the
//! end at shutdown.
//!
//! Two sources: [`Distinct`] runs its one operation itself (so a distinct-connections stream is
//! one task, hyper's, like a WebSocket's connection task), and the single-connection mode's
//! attached stream reads its reservation's outbox (`reservations::Attached`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_graphql::ServerError;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use tokio::time::{Instant, Interval, MissedTickBehavior, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::protocol;
use crate::connections::Permit;
use crate::graphql::error::{code, refusal};
use crate::graphql::operations::{Json, Operations, Output};

/// How long a stream that its client stopped reading has, once it is too slow, to write its
/// last events before its connection is closed.
pub const STALLED_STREAM_GRACE: Duration = Duration::from_secs(5);

/// What feeds an event stream.
pub trait Source: Send + Unpin + 'static {
    /// The next event to write; `None` ends the stream.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>>;
}

/// An event stream's body; see the module docs.
pub struct EventStream<S> {
    source: S,
    /// Whether the `retry:` line has been written.
    started: bool,
    keepalive: Option<Interval>,
    /// Boxed: it is large, and only polled, never moved.
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    done: bool,
}

impl<S: Source> EventStream<S> {
    pub fn new(source: S, keepalive: Option<Duration>, shutdown: CancellationToken) -> Self {
        let keepalive = keepalive.map(|every| {
            let mut interval = tokio::time::interval_at(Instant::now() + every, every);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            interval
        });
        Self { source, started: false, keepalive, shutdown: Box::pin(shutdown.cancelled_owned()), done: false }
    }

    /// The `200` response streaming this body.
    pub fn into_response(self) -> Response {
        let mut response = (StatusCode::OK, Body::from_stream(self)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        // nginx buffers responses unless told not to, which would hold events back.
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        response
    }
}

impl<S: Source> Stream for EventStream<S> {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if !std::mem::replace(&mut this.started, true) {
            return Poll::Ready(Some(Ok(Bytes::from_static(protocol::PREAMBLE))));
        }
        // A clean end at shutdown: clients reconnect (and resume) on their own.
        if this.shutdown.as_mut().poll(cx).is_ready() {
            this.done = true;
            return Poll::Ready(None);
        }
        match this.source.poll_frame(cx) {
            Poll::Ready(Some(frame)) => {
                if let Some(keepalive) = &mut this.keepalive {
                    keepalive.reset();
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(None) => {
                this.done = true;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        if let Some(keepalive) = &mut this.keepalive
            && keepalive.poll_tick(cx).is_ready()
        {
            return Poll::Ready(Some(Ok(Bytes::from_static(protocol::KEEPALIVE))));
        }
        Poll::Pending
    }
}

/// The final error of a stream ended by the server (`SLOW_CONSUMER`, an expired token), as the
/// result of a `next`.
pub fn ending_errors(code: &'static str) -> Vec<ServerError> {
    let message = match code {
        SLOW_CONSUMER => "subscriber too slow: reconnect with Last-Event-ID (the last id received) to resume",
        code::UNAUTHENTICATED => "token expired: reconnect with a fresh token",
        _ => "the stream can no longer be resumed from that Last-Event-ID: subscribe again",
    };
    vec![refusal(code, message, None)]
}

/// The code of the final `next` sent to a subscriber that could not keep up.
pub const SLOW_CONSUMER: &str = "SLOW_CONSUMER";

/// A distinct-connections stream's source: its one operation, run by this stream.
pub struct Distinct {
    operations: Operations,
    /// When the viewer's token expires (plus the leeway).
    expires: Option<Pin<Box<Sleep>>>,
    /// Events decided on, to send before anything else (the end of the stream).
    tail: VecDeque<Bytes>,
    ending: bool,
    _permit: Permit,
}

impl Distinct {
    pub fn new(operations: Operations, expires: Option<Instant>, permit: Permit) -> Self {
        Self {
            operations,
            expires: expires.map(|at| Box::pin(tokio::time::sleep_until(at))),
            tail: VecDeque::new(),
            ending: false,
            _permit: permit,
        }
    }

    fn end_with(&mut self, code: &'static str, complete: bool) {
        self.ending = true;
        let errors = Json::errors(ending_errors(code));
        self.tail.push_back(protocol::next(None, None, errors.as_str()));
        if complete {
            self.tail.push_back(protocol::complete(None));
        }
    }
}

impl Source for Distinct {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        loop {
            if let Some(frame) = self.tail.pop_front() {
                return Poll::Ready(Some(frame));
            }
            if self.ending {
                return Poll::Ready(None);
            }
            // Slowness first: whatever is still queued is past the gap's start, and the client
            // resumes from the last id it received instead.
            if self.operations.consumer().poll_slow(cx).is_ready() {
                self.end_with(SLOW_CONSUMER, false);
                continue;
            }
            if let Some(expires) = &mut self.expires
                && expires.as_mut().poll(cx).is_ready()
            {
                self.end_with(code::UNAUTHENTICATED, true);
                continue;
            }
            return match self.operations.poll_next(cx) {
                Poll::Ready(Output::Next { result, position, .. }) => {
                    let cursor = (position > 0).then(|| self.operations.runner().cursor(position));
                    Poll::Ready(Some(protocol::next(cursor.as_deref(), None, result.as_str())))
                }
                Poll::Ready(Output::Refused { errors, .. }) => {
                    self.ending = true;
                    self.tail.push_back(protocol::complete(None));
                    Poll::Ready(Some(protocol::next(None, None, Json::errors(errors).as_str())))
                }
                Poll::Ready(Output::Complete { .. }) => {
                    self.ending = true;
                    Poll::Ready(Some(protocol::complete(None)))
                }
                Poll::Pending => Poll::Pending,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A distinct-connections stream's body: `Body::from_stream` boxes it once and hyper holds it
    /// for the stream's whole life, so every byte of it is paid per idle subscriber. 424 bytes
    /// when measured (448 before the permit learnt its client's address and the `retry:` line
    /// became a constant), inside jemalloc's 448-byte size class: growing past that costs a
    /// whole next class (512) per subscriber.
    #[test]
    fn an_idle_event_stream_stays_small() {
        let size = std::mem::size_of::<EventStream<Distinct>>();
        assert!(size <= 448, "a distinct-connections event stream grew to {size} bytes");
    }
}
