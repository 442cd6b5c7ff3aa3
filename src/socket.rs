//! What both WebSocket channels share: buffer sizing, liveness, and closing properly.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use tokio::time::{Instant, timeout};
use tokio_util::task::TaskTracker;

/// Bytes read from the socket at a time. axum's default is 128 KiB *per socket*, allocated up
/// front (and zero-filled before each read by tungstenite): 1.3 GB for 10k idle sockets. Client
/// messages are small (a `subscribe` is a few hundred bytes); a larger one grows the buffer to
/// its size while it is read.
const READ_BUFFER: usize = 1024;
/// Frames are batched up to this size before being written, unless flushed sooner.
const WRITE_BUFFER: usize = 8 * 1024;
/// A socket whose writes keep failing may buffer this much before sends fail.
const MAX_WRITE_BUFFER: usize = 1024 * 1024;
/// How long one frame may take to be written before the peer counts as gone.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a close waits for the peer's answering close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a socket whose read side failed stays open after our close frame (see [`close`]).
const CLOSE_LINGER: Duration = Duration::from_millis(250);

/// Applies the buffer sizes and the message size limit to an upgrade.
pub fn configure(ws: WebSocketUpgrade, max_message: usize) -> WebSocketUpgrade {
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER.max(WRITE_BUFFER + max_message))
        .max_message_size(max_message)
        .max_frame_size(max_message)
}

/// Runs `connection` as a task of its own once the upgrade is done.
///
/// axum's `on_upgrade` runs its callback's future inside the task that awaited the upgrade, whose
/// cell then also holds the upgrade machinery for the socket's whole life (about 1 KB more per
/// idle connection, measured with massif). Spawning a fresh task lets that one finish at once.
pub fn spawn_on_upgrade<F, Fut>(ws: WebSocketUpgrade, tracker: TaskTracker, connection: F) -> Response
where
    F: FnOnce(WebSocket) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    ws.on_upgrade(move |socket| {
        tracker.spawn(connection(socket));
        std::future::ready(())
    })
}

/// Close reasons travel in a control frame of at most 125 bytes, two of which are the code
/// (RFC 6455 §5.5): cut the reason at a character boundary within 123.
pub fn close_reason(reason: &str) -> String {
    const MAX: usize = 123;
    if reason.len() <= MAX {
        return reason.to_owned();
    }
    let mut end = MAX;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

/// Sends one frame, giving up when the peer has not taken it within [`SEND_TIMEOUT`].
pub async fn send(socket: &mut WebSocket, message: Message) -> Result<(), ()> {
    match timeout(SEND_TIMEOUT, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Queues one frame without flushing (see [`flush`]); same timeout as [`send`].
pub async fn feed(socket: &mut WebSocket, message: Message) -> Result<(), ()> {
    use futures::SinkExt;
    match timeout(SEND_TIMEOUT, socket.feed(message)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Writes out every queued frame.
pub async fn flush(socket: &mut WebSocket) -> Result<(), ()> {
    use futures::SinkExt;
    match timeout(SEND_TIMEOUT, socket.flush()).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Sends a close frame and waits briefly for the peer's, discarding what it still sends.
///
/// Waiting matters: closing TCP with unread bytes in the receive buffer makes the kernel send a
/// reset, and a peer that gets the reset while answering our close frame reports an error
/// instead of our close code (tungstenite does exactly that). When the read side cannot be
/// drained — after a message over the size limit, whose rest is still in the kernel — the socket
/// lingers for [`CLOSE_LINGER`] so that the peer has read the close frame before the reset.
pub async fn close(mut socket: WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame { code, reason: close_reason(reason).into() };
    if send(&mut socket, Message::Close(Some(frame))).await.is_err() {
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

/// What to do about a failed read: a message over the size limit is answered with 1009
/// ("message too big"); any other failure means the peer is gone.
pub fn read_error_close(error: axum::Error) -> Option<(u16, &'static str)> {
    let inner = error.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => Some((1009, "message too big")),
        _ => None,
    }
}

/// Tracks the last sign of life from a peer.
#[derive(Debug)]
pub struct Liveness {
    last_seen: Instant,
    inactive: Option<Duration>,
}

impl Liveness {
    pub fn new(inactive: Option<Duration>) -> Self {
        Self { last_seen: Instant::now(), inactive }
    }

    pub fn seen(&mut self) {
        self.last_seen = Instant::now();
    }

    /// When the peer will count as gone if nothing more arrives (far away when disabled, and
    /// then still stable from call to call, so that a timer aimed at it needs no re-arming).
    pub fn deadline(&self) -> Instant {
        self.last_seen + self.inactive.unwrap_or(Duration::from_secs(86_400 * 365))
    }

    pub fn expired(&self) -> bool {
        self.inactive.is_some() && Instant::now() >= self.deadline()
    }
}

/// A heartbeat ticker, or one that never ticks when pings are off.
pub fn heartbeat(interval: Option<Duration>) -> tokio::time::Interval {
    let period = interval.unwrap_or(Duration::from_secs(86_400 * 365));
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_in_a_control_frame() {
        assert_eq!(close_reason("short"), "short");
        let long = "é".repeat(100); // 200 bytes
        let cut = close_reason(&long);
        assert!(cut.len() <= 123 && long.starts_with(&cut));
    }
}
