//! The WebSocket layer every channel runs on: one [`Connection`] type owns the socket, its buffer
//! sizes, liveness and heartbeat, one timer for every deadline, batched writes, the shutdown and
//! slow-consumer signals and the close handshake in both directions; each channel (graphql-ws in
//! both dialects, the `/ws` room channel) supplies only a [`Handler`] for its protocol.
//!
//! - [`close`]: every close code sent on any channel, and how a failed read becomes one;
//! - [`handler`]: what a channel supplies;
//! - `connection`: the loop.

pub mod close;
mod connection;
pub mod handler;

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::response::Response;
use tokio_util::task::TaskTracker;

pub use close::Close;
pub use connection::{Connection, SEND_TIMEOUT, Settings};
pub use handler::{Handler, Incoming, Out};

/// Bytes read from the socket at a time. axum's default is 128 KiB *per socket*, allocated up
/// front (and zero-filled before each read by tungstenite): 1.3 GB for 10k idle sockets. Client
/// messages are small (a `subscribe` is a few hundred bytes); a larger one grows the buffer to
/// its size while it is read.
const READ_BUFFER: usize = 1024;
/// Frames are batched up to this size before being written, unless flushed sooner.
const WRITE_BUFFER: usize = 8 * 1024;
/// A socket whose writes keep failing may buffer this much before sends fail.
const MAX_WRITE_BUFFER: usize = 1024 * 1024;

/// Applies the buffer sizes and the message size limit to an upgrade.
pub fn configure(ws: WebSocketUpgrade, max_message: usize) -> WebSocketUpgrade {
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER.max(WRITE_BUFFER + max_message))
        .max_message_size(max_message)
        .max_frame_size(max_message)
}

/// Runs what `start` makes of the socket as a task of its own once the upgrade is done.
///
/// axum's `on_upgrade` runs its callback's future inside the task that awaited the upgrade, whose
/// cell then also holds the upgrade machinery for the socket's whole life (about 1 KB more per
/// idle connection, measured with massif). Spawning a fresh task lets that one finish at once.
pub fn spawn_on_upgrade<F, Fut>(ws: WebSocketUpgrade, tracker: TaskTracker, start: F) -> Response
where
    F: FnOnce(WebSocket) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    ws.on_upgrade(move |socket| {
        tracker.spawn(start(socket));
        std::future::ready(())
    })
}

/// The size of the future [`spawn_on_upgrade`] spawns for a `start` function: what an idle
/// connection's task holds (nothing an idle connection holds is boxed, see [`Connection::run`]).
/// For the channels' size tests, which only need `start`'s type.
pub fn task_size<F, A, Fut>(_start: &F) -> usize
where
    F: Fn(WebSocket, A) -> Fut,
    Fut: Future<Output = ()>,
{
    std::mem::size_of::<tokio_util::task::task_tracker::TrackedFuture<Fut>>()
}
