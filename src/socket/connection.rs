//! One WebSocket, whatever the channel: a single task that reads frames, hands messages to the
//! channel's [`Handler`], writes what it sends in batches, and watches liveness, the heartbeat,
//! the handler's deadline, shutdown and the slow-consumer signal as it goes — then closes
//! properly, both ways.
//!
//! One task (not a reader and a writer) keeps an idle connection small; a slow peer blocks only
//! this task's writes (the producers never wait for it; when its queues overflow the consumer is
//! marked slow and the socket closed with 1013).

use std::future::poll_fn;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::SinkExt;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::close::{self, Close, close_reason};
use super::handler::{Handler, Incoming, Out};
use crate::connections::Permit;
use crate::events::slow_consumer::SlowConsumer;

/// How long one batch of frames may take to be written before the peer counts as gone.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a close waits for the peer's answering close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a socket whose read side failed stays open after our close frame (see [`close`]).
const CLOSE_LINGER: Duration = Duration::from_millis(250);
/// Frames written in one go before a flush, when more are ready.
const BATCH: usize = 64;
/// "Never", for a timer with nothing to wait for: a year away, and the same instant on every
/// turn so that the timer needs no re-arming.
const NEVER: Duration = Duration::from_secs(86_400 * 365);

/// The timings every socket applies, and the signal to stop.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Between server pings (`None`: no pings).
    pub heartbeat: Option<Duration>,
    /// Without any sign of life from the peer before it counts as gone (`None`: never).
    pub inactive: Option<Duration>,
    /// Cancelled at shutdown: the socket then closes with 1001 (axum's graceful shutdown does not
    /// reach upgraded connections).
    pub shutdown: CancellationToken,
}

impl Settings {
    pub fn new(config: &crate::config::Config, shutdown: CancellationToken) -> Self {
        Self { heartbeat: config.heartbeat_interval(), inactive: config.inactive_timeout(), shutdown }
    }
}

/// How the serving loop ended.
enum End {
    /// We close, with this frame.
    Close(Close),
    /// The peer closed: tungstenite has queued the answer (its own code, echoed), to be flushed.
    Answer,
    /// The peer is gone, or cannot be written to: nothing more to send.
    Gone,
}

/// An upgraded socket, with its permit and its consumer signal, before a handler drives it.
pub struct Connection {
    socket: WebSocket,
    permit: Permit,
    consumer: SlowConsumer,
    settings: Settings,
}

impl Connection {
    pub fn new(socket: WebSocket, permit: Permit, settings: Settings) -> Self {
        Self { socket, permit, consumer: SlowConsumer::new(), settings }
    }

    /// The connection's slow-consumer signal: every queue feeding this socket marks it, and the
    /// socket then closes with 1013.
    pub fn consumer(&self) -> &SlowConsumer {
        &self.consumer
    }

    /// Serves the socket with `handler` until it closes, then closes it properly.
    ///
    /// Not an `async fn`: rustc keeps an async fn's arguments beside the locals they move into
    /// (rust-lang/rust#62958), and every byte of an idle connection's task counts, times tens of
    /// thousands. Nothing an idle connection holds is boxed: this future is all of it (the
    /// size tests of the channels measure it), and only the handlers' work and the writes,
    /// which end before the next wait, are boxed — inline, their state would make every idle
    /// connection as large as the largest of them.
    #[allow(clippy::manual_async_fn)]
    pub fn run<H: Handler>(mut self, mut handler: H) -> impl Future<Output = ()> + Send {
        async move {
            let end = self.serve(&mut handler).await;
            // Offline, out of every room and done with every operation before the close
            // handshake, which may wait on a peer that never answers: presence must not.
            self.permit.go_offline();
            drop(handler);
            match end {
                End::Close(frame) => {
                    debug!(code = frame.code, reason = %frame.reason, "closing");
                    Box::pin(close(&mut self.socket, frame)).await;
                }
                End::Answer => {
                    debug!("closed by the peer");
                    // Flushing writes the queued answer; tungstenite then ends the connection.
                    let _ = Box::pin(timeout(SEND_TIMEOUT, self.socket.flush())).await;
                }
                End::Gone => debug!("peer gone"),
            }
            // The permit goes with `self`, once the socket is closed.
        }
    }

    /// Closes the socket with `frame` at once, without serving it.
    pub async fn refuse(mut self, frame: Close) {
        self.permit.go_offline();
        close(&mut self.socket, frame).await;
    }

    async fn serve<H: Handler>(&mut self, handler: &mut H) -> End {
        let mut out = Out::new(&mut self.permit);
        handler.on_open(&mut out);
        let frames = out.frames;
        if !frames.is_empty()
            && let Err(stop) = Box::pin(self.write(frames)).await
        {
            return self.end::<H>(stop);
        }
        let start = Instant::now();
        let never = start + NEVER;
        let mut last_seen = start;
        let mut next_ping = self.settings.heartbeat.map(|every| start + every);
        // One timer for every deadline (the handler's, inactivity, heartbeat), re-aimed at the
        // nearest one on each turn: several timers would be several registrations per wake-up
        // and several times the state in every idle connection.
        let timer = sleep_until(never);
        tokio::pin!(timer);

        loop {
            // Signals and deadlines are checked here, cheaply, on every turn: the select below is
            // biased towards work, so a peer that never stops sending would otherwise keep them
            // from ever being polled.
            if self.settings.shutdown.is_cancelled() {
                return End::Close(Close::shutdown());
            }
            if self.consumer.is_slow() {
                return End::Close(Close::new(close::TRY_AGAIN_LATER, H::SLOW_REASON));
            }
            let now = Instant::now();
            let deadline = handler.deadline();
            if deadline.is_some_and(|at| now >= at) {
                return End::Close(handler.on_deadline());
            }
            let gone_at = self.settings.inactive.map(|after| last_seen + after);
            if gone_at.is_some_and(|at| now >= at) {
                return End::Close(Close::inactive());
            }
            if let (Some(at), Some(every)) = (next_ping, self.settings.heartbeat)
                && now >= at
            {
                next_ping = Some(now + every);
                let mut out = Out::new(&mut self.permit);
                out.send(Message::Ping(Default::default()));
                handler.on_heartbeat(&mut out);
                let frames = out.frames;
                if let Err(stop) = Box::pin(self.write(frames)).await {
                    return self.end::<H>(stop);
                }
            }
            let wake_at = [deadline, gone_at, next_ping].into_iter().flatten().min().unwrap_or(never);
            if timer.deadline() != wake_at {
                timer.as_mut().reset(wake_at);
            }

            tokio::select! {
                // Biased: on a busy connection the first ready branch wins without polling the
                // others (each poll of a cancellation token or timer registers a waker, which
                // costs more than writing a frame).
                biased;
                frame = self.socket.recv() => {
                    let frame = match frame {
                        Some(Ok(frame)) => frame,
                        Some(Err(error)) => return Box::pin(self.on_read_error(handler, error)).await,
                        None => return End::Gone,
                    };
                    last_seen = Instant::now();
                    let message = match frame {
                        Message::Text(text) => Incoming::Text(text),
                        Message::Binary(bytes) => Incoming::Binary(bytes),
                        // tungstenite answers pings itself; a pong is a sign of life, no more.
                        Message::Ping(_) | Message::Pong(_) => continue,
                        Message::Close(_) => return End::Answer,
                    };
                    if let Err(end) = Box::pin(self.on_message(handler, message)).await {
                        return end;
                    }
                }
                first = poll_fn(|cx| handler.poll_outgoing(cx)) => {
                    let batch = write_batch(&mut self.socket, first, handler);
                    if let Err(stop) = Box::pin(guarded(batch, &self.consumer, &self.settings.shutdown)).await {
                        return self.end::<H>(stop);
                    }
                }
                () = self.settings.shutdown.cancelled() => {}
                () = self.consumer.slow() => {}
                () = &mut timer => {}
            }
        }
    }

    /// Hands one message to the handler and writes its answer; `Err` ends the connection.
    async fn on_message<H: Handler>(&mut self, handler: &mut H, message: Incoming) -> Result<(), End> {
        let mut out = Out::new(&mut self.permit);
        let handled = handler.on_message(message, &mut out).await;
        let frames = out.frames;
        self.write(frames).await.map_err(|stop| self.end::<H>(stop))?;
        handled.map_err(End::Close)
    }

    /// A peer that broke the protocol is told why (1002, 1007, 1009: RFC 6455 §7.1.7) rather
    /// than dropped; a peer that is gone is let go.
    async fn on_read_error<H: Handler>(&mut self, handler: &mut H, error: axum::Error) -> End {
        let Some(frame) = close::for_read_error(error) else { return End::Gone };
        if frame.code == close::MESSAGE_TOO_BIG {
            let mut out = Out::new(&mut self.permit);
            handler.on_too_big(&mut out);
            let frames = out.frames;
            if let Err(stop) = self.write(frames).await {
                return self.end::<H>(stop);
            }
        }
        End::Close(frame)
    }

    /// Writes `frames` (if any) in one batch, within the limits of [`guarded`].
    async fn write(&mut self, frames: Vec<Message>) -> Result<(), Stop> {
        if frames.is_empty() {
            return Ok(());
        }
        guarded(write_all(&mut self.socket, frames), &self.consumer, &self.settings.shutdown).await
    }

    /// How the connection ends after a write stopped.
    fn end<H: Handler>(&self, stop: Stop) -> End {
        match stop {
            Stop::Gone => End::Gone,
            Stop::Interrupted if self.settings.shutdown.is_cancelled() => End::Close(Close::shutdown()),
            Stop::Interrupted => End::Close(Close::new(close::TRY_AGAIN_LATER, H::SLOW_REASON)),
        }
    }
}

/// Why a write did not complete.
enum Stop {
    /// It failed or took longer than [`SEND_TIMEOUT`]: the peer is gone or not reading.
    Gone,
    /// The connection is closing anyway (slow consumer, shutdown).
    Interrupted,
}

/// Runs one batch of writes within [`SEND_TIMEOUT`], but gives up at once when the connection is
/// closing anyway: a peer that stopped reading (the usual way to become a slow consumer) would
/// otherwise keep the connection open, and its user online, for the whole time limit.
async fn guarded(
    write: impl Future<Output = Result<(), axum::Error>>,
    consumer: &SlowConsumer,
    shutdown: &CancellationToken,
) -> Result<(), Stop> {
    tokio::select! {
        // Biased: a write that completes at once never polls (so never registers with) the rest.
        biased;
        written = timeout(SEND_TIMEOUT, write) => match written {
            Ok(Ok(())) => Ok(()),
            _ => Err(Stop::Gone),
        },
        () = consumer.slow() => Err(Stop::Interrupted),
        () = shutdown.cancelled() => Err(Stop::Interrupted),
    }
}

/// Writes `frames` and flushes once.
async fn write_all(socket: &mut WebSocket, frames: Vec<Message>) -> Result<(), axum::Error> {
    for frame in frames {
        socket.feed(frame).await?;
    }
    socket.flush().await
}

/// Writes `first` and whatever else the handler has ready (up to [`BATCH`] frames), then flushes
/// once. One time limit covers the whole batch (see [`guarded`]): a timer per frame would cost
/// more than the frame.
async fn write_batch<H: Handler>(socket: &mut WebSocket, first: Message, handler: &mut H) -> Result<(), axum::Error> {
    socket.feed(first).await?;
    for _ in 1..BATCH {
        // A no-op waker: the loop polls again with its own before it waits.
        let next = handler.poll_outgoing(&mut Context::from_waker(Waker::noop()));
        match next {
            Poll::Ready(frame) => socket.feed(frame).await?,
            Poll::Pending => break,
        }
    }
    socket.flush().await
}

/// Sends a close frame and waits briefly for the peer's, discarding what it still sends.
///
/// Waiting matters: closing TCP with unread bytes in the receive buffer makes the kernel send a
/// reset, and a peer that gets the reset while answering our close frame reports an error
/// instead of our close code (tungstenite does exactly that). When the read side cannot be
/// drained — after a message over the size limit, whose rest is still in the kernel, or after a
/// protocol violation — the socket lingers for [`CLOSE_LINGER`] so that the peer has read the
/// close frame before the reset.
async fn close(socket: &mut WebSocket, frame: Close) {
    let frame = CloseFrame { code: frame.code, reason: close_reason(&frame.reason).into() };
    if !matches!(timeout(SEND_TIMEOUT, write_all(socket, vec![Message::Close(Some(frame))])).await, Ok(Ok(()))) {
        return;
    }
    let answered = timeout(CLOSE_TIMEOUT, async {
        loop {
            match socket.recv().await {
                Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return false,
            }
        }
    })
    .await;
    if answered == Ok(false) {
        tokio::time::sleep(CLOSE_LINGER).await;
    }
}
