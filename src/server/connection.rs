//! One HTTP/1.1 connection: hyper drives it, the [`Clock`] says until when it may take to do what
//! it is doing, and shutdown lets it finish what is in flight within the grace period.

use std::future::poll_fn;
use std::net::IpAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::Settings;
use super::clock::{Clock, Phase};
use super::io::Io;
use super::service::Service;

enum Ended {
    /// hyper finished: the client closed, the connection was upgraded, or an error.
    Served(Result<(), hyper::Error>),
    /// The clock's deadline passed in this phase.
    TimedOut(Phase),
    /// Shutdown's grace period passed with a request still in flight.
    GraceOver,
}

pub async fn serve(
    stream: TcpStream,
    peer: IpAddr,
    router: Router,
    settings: Arc<Settings>,
    shutdown: CancellationToken,
) {
    // Responses are written whole by hyper; Nagle's algorithm would only delay their last segment.
    let _ = stream.set_nodelay(true);
    let clock = Arc::new(Clock::new(settings.timeouts));
    let io = TokioIo::new(Io::new(stream, clock.clone()));
    let connection = http1::Builder::new()
        .max_header_size(settings.max_header_bytes)
        // hyper's own header timer would also bound the wait between kept-alive requests with the
        // same value; the clock keeps the two limits apart.
        .header_read_timeout(None)
        .serve_connection(io, Service::new(router, clock.clone(), peer))
        .with_upgrades();
    let mut connection = pin!(connection);
    let mut cancelled = pin!(shutdown.cancelled());
    let mut timer = pin!(sleep_until(clock.deadline().unwrap_or_else(far_future)));
    let mut grace_end: Option<Instant> = None;
    // One poll function rather than `select!`: the deadline changes while hyper is polled (bytes
    // arrive, a body ends), and the timer must be re-aimed right after, before the task sleeps.
    let ended = poll_fn(|cx| {
        if grace_end.is_none() && cancelled.as_mut().poll(cx).is_ready() {
            connection.as_mut().graceful_shutdown();
            grace_end = Some(Instant::now() + settings.grace);
        }
        if let Poll::Ready(result) = connection.as_mut().poll(cx) {
            return Poll::Ready(Ended::Served(result));
        }
        // A response that gave up on its client (while hyper is blocked writing to it and does
        // not poll the response at all) moves the deadline here.
        clock.poll_abandon(cx);
        let deadline = match (clock.deadline(), grace_end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(deadline) = deadline {
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            while timer.as_mut().poll(cx).is_ready() {
                let now = Instant::now();
                if grace_end.is_some_and(|end| now >= end) {
                    return Poll::Ready(Ended::GraceOver);
                }
                if clock.expired(now) {
                    return Poll::Ready(Ended::TimedOut(clock.phase()));
                }
                // Not quite there (the timer's resolution): wait a little more, with a waker.
                timer.as_mut().reset(now + Duration::from_millis(1));
            }
        }
        Poll::Pending
    })
    .await;
    match ended {
        Ended::Served(Ok(())) => {}
        Ended::Served(Err(e)) => tracing::debug!(error = %e, "HTTP connection ended with an error"),
        Ended::TimedOut(Phase::Lingering) => {}
        Ended::TimedOut(phase) => {
            tracing::debug!(phase = phase.timeout_reason(), "closing an HTTP connection: timeout");
            metrics::counter!("switchboard_http_timeouts_total", "phase" => phase.timeout_reason()).increment(1);
        }
        Ended::GraceOver => tracing::debug!("shutdown: dropping an HTTP connection still in flight"),
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the task spawned for each connection (`serve`'s future, as tracked).
    fn task_size<F, Fut>(_serve: F) -> usize
    where
        F: FnOnce(TcpStream, IpAddr, Router, Arc<Settings>, CancellationToken) -> Fut,
    {
        std::mem::size_of::<tokio_util::task::task_tracker::TrackedFuture<Fut>>()
    }

    /// Every HTTP connection is this one task, hyper's connection state inline in it, and a
    /// GraphQL-over-SSE stream keeps it for the stream's whole life (the response body is boxed
    /// inside): per idle SSE subscriber, this is the largest piece after hyper's two buffers.
    /// 1,096 bytes when measured (tokio's task cell around it: 1,280); the limit leaves room for
    /// little more.
    #[test]
    fn an_http_connection_task_stays_small() {
        let size = task_size(serve);
        assert!(size <= 1152, "an HTTP connection's task grew to {size} bytes");
    }
}
