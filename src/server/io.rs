//! The TCP stream as hyper sees it: it tells the connection's [`Clock`] when bytes arrive and when
//! writes block, and it closes the way nginx does (a *lingering close*).
//!
//! Why lingering: when we answer before reading the whole request (a `413` for a body that is too
//! large, a `431` for headers that are), unread bytes are still in the kernel's receive buffer.
//! Closing a socket in that state makes the kernel send RST instead of FIN, and a client that
//! receives RST discards what it had not read yet: Node's `http` client reports `ECONNRESET`
//! instead of our `413`. So when hyper closes a connection, we send FIN (shut down the write side
//! only), then read and discard what the client still sends until it closes too, or until it has
//! been quiet for [`LINGER_QUIET`], or for [`LINGER_MAX`] at most; only then is the socket closed.
//! The connection task enforces those two limits through the clock's deadline.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::clock::{Clock, Phase};

/// A lingering close ends when the client has sent nothing for this long…
pub const LINGER_QUIET: Duration = Duration::from_secs(5);
/// …or after this long in any case (nginx's `lingering_timeout` and `lingering_time`).
pub const LINGER_MAX: Duration = Duration::from_secs(30);

pub struct Io {
    stream: TcpStream,
    /// Dropped on the first read after an upgrade: a WebSocket keeps this stream for its whole
    /// life and has no use for the clock.
    clock: Option<Arc<Clock>>,
    /// Set once the write side is shut down: when the lingering close must end.
    linger_end: Option<Instant>,
}

impl Io {
    pub fn new(stream: TcpStream, clock: Arc<Clock>) -> Self {
        Io { stream, clock: Some(clock), linger_end: None }
    }

    /// The clock, unless the connection has been upgraded.
    fn clock(&mut self) -> Option<&Clock> {
        if self.clock.as_ref().is_some_and(|clock| clock.phase() == Phase::Upgraded) {
            self.clock = None;
        }
        self.clock.as_deref()
    }

    fn note_write<T>(&mut self, result: &Poll<io::Result<T>>) {
        if let Some(clock) = self.clock() {
            match result {
                Poll::Pending => clock.write_blocked(),
                Poll::Ready(Ok(_)) => clock.write_went_through(),
                Poll::Ready(Err(_)) => {}
            }
        }
    }
}

/// Reads and discards until the client closes (or fails), or the task must yield; each read
/// pushes the deadline to [`LINGER_QUIET`] from now, but never past `end`.
fn poll_discard(stream: &mut TcpStream, cx: &mut Context<'_>, clock: &Clock, end: Instant) -> Poll<()> {
    let mut scratch = [0u8; 4096];
    // A client that keeps sending must not keep this task busy: yield after a few reads.
    for _ in 0..16 {
        let mut buf = ReadBuf::new(&mut scratch);
        match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(()),
            Poll::Ready(Err(_)) => return Poll::Ready(()),
            Poll::Ready(Ok(())) => clock.linger_until(end.min(Instant::now() + LINGER_QUIET)),
        }
    }
    cx.waker().wake_by_ref();
    Poll::Pending
}

impl AsyncRead for Io {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before
            && let Some(clock) = self.clock()
        {
            clock.bytes_arrived();
        }
        result
    }
}

impl AsyncWrite for Io {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.note_write(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.note_write(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    /// hyper calls this when it is done with the connection: the lingering close described above.
    /// An upgraded stream shuts down plainly (the WebSocket has had its closing handshake).
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.clock().is_none() {
            return Pin::new(&mut self.stream).poll_shutdown(cx);
        }
        let Io { stream, clock, linger_end } = &mut *self;
        let clock = clock.as_deref().expect("checked above");
        let end = match *linger_end {
            Some(end) => end,
            None => {
                ready!(Pin::new(&mut *stream).poll_shutdown(cx))?;
                let now = Instant::now();
                let end = now + LINGER_MAX;
                clock.linger_until(end.min(now + LINGER_QUIET));
                *linger_end = Some(end);
                end
            }
        };
        ready!(poll_discard(stream, cx, clock, end));
        Poll::Ready(Ok(()))
    }
}
