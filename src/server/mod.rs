//! The HTTP server: our own accept loop and HTTP/1.1 connections on hyper, in place of
//! `axum::serve`, because a server in front of the internet needs limits that `axum::serve` does
//! not set:
//!
//! - a deadline for every phase of a connection ([`clock`]): headers, body, the wait between
//!   kept-alive requests, a response the client does not read. Without them, idle and dripping
//!   connections stay open forever, and a thousand of them use up the process's file descriptors
//!   and lock every new client out;
//! - a cap on the request head (`431`), and a lingering close ([`io`]) so that an early answer
//!   (`413`, `431`) reaches a client that is still sending instead of being reset away;
//! - an accept loop that, when the process is out of file descriptors, pauses and tries again
//!   rather than failing or spinning, and serves again as soon as descriptors are freed.
//!
//! WebSocket upgrades go through as before: the upgraded socket leaves this module (and its
//! deadlines) for the socket loops, which watch the app's shutdown token themselves.
//! Only HTTP/1.1 is spoken (no h2c): it is what browsers and GraphQL clients use over plain TCP.

mod clock;
mod connection;
mod io;
mod service;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use clock::Timeouts;

/// What a handler may ask of the HTTP connection its request came on; set on every request.
#[derive(Clone)]
pub struct ConnectionHandle(Arc<clock::Clock>);

impl ConnectionHandle {
    /// Once `signal` is ready, the response has given up on its client: the connection is closed
    /// `grace` later (see [`clock::Clock::close_when`]). `signal` is polled by the connection's
    /// task, so it must wake that task: one the response itself also polls from there does.
    pub fn close_when(&self, signal: impl Future<Output = ()> + Send + 'static, grace: Duration) {
        self.0.close_when(signal, grace);
    }
}

/// How long the accept loop pauses after an error that is not about one connection (out of
/// file descriptors or memory): the error repeats until something is freed, and retrying at once
/// would spin a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct Settings {
    pub timeouts: Timeouts,
    /// Largest request head (request line and headers); larger ones get `431`.
    pub max_header_bytes: usize,
    /// How long a connection may finish what is in flight once shutdown has begun.
    pub grace: Duration,
}

/// Accepts connections on `listener` and serves `router` on them until `shutdown` is cancelled;
/// then stops accepting, lets each connection finish its request in flight within
/// `settings.grace` (idle ones close at once), and returns when all have closed.
pub async fn serve(listener: TcpListener, router: Router, settings: Settings, shutdown: CancellationToken) {
    let settings = Arc::new(settings);
    let connections = TaskTracker::new();
    let mut failed_accepts = 0u64;
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                if failed_accepts > 0 {
                    tracing::info!(failed_accepts, "accepting connections again");
                    failed_accepts = 0;
                }
                let peer = peer.ip();
                connections.spawn(connection::serve(stream, peer, router.clone(), settings.clone(), shutdown.clone()));
            }
            // That one connection failed before we took it; the next one is unaffected.
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                if failed_accepts == 0 {
                    tracing::warn!(error = %e, "cannot accept connections; retrying every {ACCEPT_BACKOFF:?}");
                }
                failed_accepts += 1;
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset)
}
