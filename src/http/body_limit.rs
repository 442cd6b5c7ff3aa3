//! `MAX_BODY_BYTES`: a request body over the limit is answered `413` with a GraphQL-shaped JSON
//! error, like every other refusal, whether the body says its length up front or not.
//!
//! A declared `Content-Length` over the limit is refused before any of the body is read. A body
//! without one (chunked) is cut by axum's `DefaultBodyLimit` while a handler reads it; axum
//! answers that with a plain-text `413`, which is replaced here so that clients see one shape.
//! Either way the client may still be sending: the server's lingering close (`server::io`) is
//! what lets the `413` reach it, and `Connection: close` tells it not to send its next request on
//! this connection (which is closed once the answer is out: the rest of the body is never read).
//! Without that header, a client that keeps connections alive (Node's default agent) reuses the
//! socket and sees its next request fail with `ECONNRESET`.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::error::HttpError;

/// The middleware; its state is the limit in bytes. Pair it with `DefaultBodyLimit::max` of the
/// same limit, which cuts bodies of unknown length.
pub async fn refuse_oversized(State(max): State<usize>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > max as u64) {
        return refusal(max);
    }
    let response = next.run(request).await;
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return if is_json { close(response) } else { refusal(max) };
    }
    response
}

fn refusal(max: usize) -> Response {
    close(HttpError::PayloadTooLarge(max).into_response())
}

fn close(mut response: Response) -> Response {
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
