//! The HTTP error boundary: one enum, answered as a GraphQL-shaped JSON body with a code, so that
//! a client's error handling sees the same shape whatever went wrong.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::AuthError;
use crate::connections::Refused;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Unauthorized(#[from] AuthError),
    #[error("{0}")]
    BadRequest(String),
    /// `allow` lists the methods that would be served (the `Allow` header); the message says
    /// what to do.
    #[error("{message}")]
    MethodNotAllowed { allow: &'static str, message: String },
    #[error("{0}")]
    Forbidden(String),
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("internal server error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A connection over a limit: 503 for the node's (or the anonymous share), 429 for the
    /// user's or the address's.
    #[error("{0}")]
    Refused(#[from] Refused),
    /// A client over its budget of requests in flight (429).
    #[error("{0}")]
    TooManyRequests(String),
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            HttpError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
            HttpError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
            HttpError::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "BAD_REQUEST"),
            HttpError::Forbidden(_) => (StatusCode::FORBIDDEN, "FORBIDDEN"),
            HttpError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            HttpError::Internal(source) => {
                tracing::error!(error = %source, "request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_SERVER_ERROR")
            }
            HttpError::Refused(Refused::Full(_)) => (StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE"),
            HttpError::Refused(Refused::TooManyForUser(_) | Refused::TooManyFromAddress(_)) => {
                (StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_CONNECTIONS")
            }
            HttpError::Refused(Refused::AnonymousFull) => (StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE"),
            HttpError::TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS"),
        };
        let body = json!({ "errors": [{ "message": self.to_string(), "extensions": { "code": code } }] });
        let mut response = (status, Json(body)).into_response();
        match self {
            HttpError::Unauthorized(_) => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\""));
            }
            HttpError::MethodNotAllowed { allow, .. } => {
                response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            _ => {}
        }
        response
    }
}
