//! The router as hyper's service for one connection, with the request and response bodies
//! wrapped so that the connection's [`Clock`] learns when the body has been read and when the
//! response has been handed over.

use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tower::ServiceExt;

use super::ConnectionHandle;
use super::clock::Clock;
use crate::connections::budget::PeerAddr;

pub struct Service {
    router: Router,
    clock: Arc<Clock>,
    /// The TCP peer, set on every request ([`PeerAddr`]) for the client budgets.
    peer: IpAddr,
}

impl Service {
    pub fn new(router: Router, clock: Arc<Clock>, peer: IpAddr) -> Self {
        Service { router, clock, peer }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response<Finished<Body>>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let has_body = !http_body::Body::is_end_stream(request.body());
        self.clock.request_started(has_body);
        let mut request = request.map(|body| Body::new(TimedBody { body, clock: self.clock.clone(), done: !has_body }));
        request.extensions_mut().insert(PeerAddr(self.peer));
        request.extensions_mut().insert(ConnectionHandle(self.clock.clone()));
        let (router, clock) = (self.router.clone(), self.clock.clone());
        Box::pin(async move {
            let response = router.oneshot(request).await?;
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                clock.upgraded();
            }
            Ok(response.map(|body| Finished { body, clock }))
        })
    }
}

/// The request body: tells the clock when it has been read to its end, or dropped unread.
struct TimedBody {
    body: Incoming,
    clock: Arc<Clock>,
    done: bool,
}

impl TimedBody {
    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            self.clock.body_finished();
        }
    }
}

impl http_body::Body for TimedBody {
    type Data = <Incoming as http_body::Body>::Data;
    type Error = <Incoming as http_body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None | Some(Err(_))) => self.finish(),
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.finish(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for TimedBody {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A response body that tells the clock, when hyper drops it, that the response has been handed
/// over whole (or abandoned): the connection is idle from then on.
pub struct Finished<B> {
    body: B,
    clock: Arc<Clock>,
}

impl<B: http_body::Body + Unpin> http_body::Body for Finished<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B> Drop for Finished<B> {
    fn drop(&mut self) {
        self.clock.response_finished();
    }
}
