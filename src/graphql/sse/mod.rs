//! GraphQL over Server-Sent Events at `/graphql/stream`: the graphql-sse protocol, in both of its
//! modes, with resuming.
//!
//! - Distinct connections: a `GET` or `POST` with `Accept: text/event-stream` is one operation
//!   and its own stream (`next` events, then `complete`).
//! - Single connection: `PUT` reserves a stream (`201`, the token as text); the stream is opened
//!   with the token (`X-GraphQL-Event-Stream-Token` or `?token=`); operations are `POST`ed with
//!   `extensions.operationId` (`202`) and stopped with `DELETE ?operationId=` (`200`).
//!
//! The status codes are the ones the protocol's reference server answers, in the same order of
//! checks (see [`serve`]). Two deliberate differences: errors that async-graphql finds while
//! validating a single-connection operation reach the client as a `next` on the stream rather than
//! as a `400` (the graphql-sse client retries a `400` as if the network had failed), and a stream
//! that reconnects with `Last-Event-ID` takes over from one still attached instead of getting
//! `409` (the server may not have noticed yet that the old one's client is gone).
//!
//! Identity is the `Authorization` header, or `?access_token=` for `EventSource`, which cannot set
//! headers; a bad token is `401`, as on `/graphql`. Each `next` of a subscription carries the
//! event's cursor as its `id:`, and `Last-Event-ID` resumes from it (the runner's
//! [`Start::resume_from`]). What an operation is — limits, sharing, resuming, counting — is the
//! runner's ([`crate::graphql::operations`]); this transport frames what it produces.

pub mod protocol;
pub mod reservations;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use async_graphql::ServerError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{add_codes, code, to_json};
use super::guard::{self, OperationKind};
use super::http::viewer_from_headers;
use super::operations::{self, Operations, Start};
use super::state::GraphqlState;
use crate::auth::Viewer;
use crate::connections::budget::ClientAddr;
use crate::connections::{Channel, Identity, Permit};
use crate::http::error::HttpError;
use crate::server::ConnectionHandle;
pub use reservations::Reservations;
use reservations::{AttachError, Reservation, Started};
use stream::{Distinct, EventStream};

pub use stream::STALLED_STREAM_GRACE;

/// Who sent a request, and the connection it came on.
struct Caller {
    client: ClientAddr,
    connection: Option<ConnectionHandle>,
}

/// What the URL may carry.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Params {
    query: Option<String>,
    operation_name: Option<String>,
    /// JSON text.
    variables: Option<String>,
    /// JSON text.
    extensions: Option<String>,
    /// A single-connection reservation (as `X-GraphQL-Event-Stream-Token` does).
    token: Option<String>,
    /// The identity, for `EventSource`.
    #[serde(rename = "access_token")]
    access_token: Option<String>,
    /// The operation a `DELETE` stops.
    operation_id: Option<String>,
}

/// The transport's error boundary: each refusal with the status the reference server answers,
/// and a GraphQL-shaped body.
#[derive(Debug, thiserror::Error)]
pub enum SseError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("Stream not found")]
    NotFound,
    #[error("{0}")]
    Conflict(&'static str),
    #[error("the Accept header names no type this request can be answered with")]
    NotAcceptable,
    #[error("/graphql/stream serves GET, POST, PUT and DELETE")]
    MethodNotAllowed,
    #[error("the body must be application/json")]
    UnsupportedMediaType,
    /// A request refused before execution with GraphQL errors (a parse failure, say).
    #[error("the request cannot be executed")]
    Refused(Vec<ServerError>),
}

impl IntoResponse for SseError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            SseError::Http(_) => return self.into_http().into_response(),
            SseError::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            SseError::Conflict(_) => (StatusCode::CONFLICT, "CONFLICT"),
            SseError::NotAcceptable => (StatusCode::NOT_ACCEPTABLE, "BAD_REQUEST"),
            SseError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "BAD_REQUEST"),
            SseError::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "BAD_REQUEST"),
            SseError::Refused(errors) => {
                let mut response = async_graphql::Response::from_errors(errors.clone());
                add_codes(&mut response);
                let json = [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))];
                return (StatusCode::BAD_REQUEST, json, to_json(&response)).into_response();
            }
        };
        let body = json!({ "errors": [{ "message": self.to_string(), "extensions": { "code": code } }] });
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::METHOD_NOT_ALLOWED {
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, POST, PUT, DELETE"));
        }
        response
    }
}

impl SseError {
    fn into_http(self) -> HttpError {
        match self {
            SseError::Http(e) => e,
            other => HttpError::BadRequest(other.to_string()),
        }
    }
}

/// `/graphql/stream`, every method.
pub async fn handle(
    State(state): State<GraphqlState>,
    client: ClientAddr,
    connection: Option<Extension<ConnectionHandle>>,
    method: Method,
    headers: HeaderMap,
    params: Result<Query<Params>, QueryRejection>,
    body: Bytes,
) -> Response {
    let params = match params {
        Ok(Query(params)) => params,
        Err(rejection) => return SseError::from(HttpError::BadRequest(rejection.body_text())).into_response(),
    };
    let caller = Caller { client, connection: connection.map(|Extension(c)| c) };
    match serve(&state, &caller, method, &headers, params, body).await {
        Ok(response) => response,
        Err(refusal) => refusal.into_response(),
    }
}

/// The reference server's order of checks.
async fn serve(
    state: &GraphqlState,
    caller: &Caller,
    method: Method,
    headers: &HeaderMap,
    params: Params,
    body: Bytes,
) -> Result<Response, SseError> {
    let viewer = viewer(state, headers, &params)?;
    let owner = viewer.as_ref().map(|user| user.id.clone());
    let token = headers.get(protocol::TOKEN_HEADER).and_then(|v| v.to_str().ok()).or(params.token.as_deref());
    let reservation = token.and_then(|token| state.sse.find(token, &owner));

    if protocol::wants_event_stream(headers) {
        return match reservation {
            Some(reservation) => attach(state, caller, &reservation, headers),
            None => distinct(state, caller, &method, headers, &params, &body, viewer).await,
        };
    }
    if method == Method::PUT {
        if !protocol::accepts(headers, &["text/plain"]) {
            return Err(SseError::NotAcceptable);
        }
        if token.is_some_and(|token| state.sse.exists(token)) {
            return Err(SseError::Conflict("Stream already registered"));
        }
        let permit = admit(state, caller.client, &viewer)?;
        let expires = viewer.as_ref().map(|user| user.expiry_deadline());
        let token = state.sse.create(owner, permit, expires);
        let headers = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
        return Ok((StatusCode::CREATED, headers, token.to_string()).into_response());
    }
    if method == Method::DELETE {
        let reservation = reservation.ok_or(SseError::NotFound)?;
        let id = params.operation_id.filter(|id| !id.is_empty());
        let id = id.ok_or_else(|| HttpError::BadRequest("Operation ID is missing".into()))?;
        reservation.stop(id.into());
        return Ok(StatusCode::OK.into_response());
    }
    if method != Method::GET && method != Method::POST {
        return Err(SseError::MethodNotAllowed);
    }
    let reservation = reservation.ok_or(SseError::NotFound)?;
    if !protocol::accepts(headers, &["application/*", "application/json"]) {
        return Err(SseError::NotAcceptable);
    }
    let request = request_params(&method, headers, &params, &body)?;
    let id = request.extensions.get("operationId").and_then(operation_id);
    let id = id.ok_or_else(|| HttpError::BadRequest("Operation ID is missing".into()))?;
    let operation = match check(state, &method, request, viewer, caller.client, headers)? {
        Checked::Run(start) => start,
        // Refused by the guard's size limits: the reference answers validation failures outside
        // event streams with 400.
        Checked::Invalid(errors) => return Err(SseError::Refused(errors)),
    };
    start(&reservation, id.into(), operation).await
}

async fn start(reservation: &Reservation, id: Arc<str>, operation: Start) -> Result<Response, SseError> {
    match reservation.start(id, operation).await {
        Started::Accepted => Ok(StatusCode::ACCEPTED.into_response()),
        Started::Duplicate => Err(SseError::Conflict("Operation with ID already exists")),
        Started::Gone => Err(SseError::NotFound),
    }
}

/// The viewer: the `Authorization` header, else `?access_token=`; a bad one is `401`.
fn viewer(state: &GraphqlState, headers: &HeaderMap, params: &Params) -> Result<Viewer, HttpError> {
    let viewer = viewer_from_headers(state, headers)?;
    match (&viewer, params.access_token.as_deref().filter(|t| !t.trim().is_empty())) {
        (None, Some(token)) => Ok(Some(state.keys.verify(token)?)),
        _ => Ok(viewer),
    }
}

/// A place among the node's connections (`503`) and the user's or, without one, the address's
/// (`429`) and the anonymous share (`503`).
fn admit(state: &GraphqlState, client: ClientAddr, viewer: &Viewer) -> Result<Permit, HttpError> {
    let identity = match viewer {
        Some(user) => Identity::User(&user.id),
        None => Identity::Anonymous,
    };
    Ok(state.connections.admit(Channel::Sse, client.0, identity)?)
}

/// The cursor in `Last-Event-ID`, if any.
fn last_event_id(headers: &HeaderMap) -> Option<&str> {
    headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

/// Opens a reservation's stream.
fn attach(
    state: &GraphqlState,
    caller: &Caller,
    reservation: &Arc<Reservation>,
    headers: &HeaderMap,
) -> Result<Response, SseError> {
    let last = last_event_id(headers);
    let position = last.and_then(|cursor| state.runner.position_of(cursor).ok());
    let source = reservation.attach(position, last.is_some()).map_err(|refused| match refused {
        AttachError::Busy => SseError::Conflict("Stream already open"),
        AttachError::Gone => SseError::NotFound,
    })?;
    // The reservation ends a stream that stopped reading (see `reservations`); the connection
    // then goes with it, even while blocked on a client that reads nothing.
    if let Some(connection) = &caller.connection {
        connection.close_when(reservation.ended(), Duration::from_secs(1));
    }
    let keepalive = state.config.sse_keepalive_interval();
    Ok(EventStream::new(source, keepalive, state.shutdown.clone()).into_response())
}

/// One operation on its own stream.
async fn distinct(
    state: &GraphqlState,
    caller: &Caller,
    method: &Method,
    headers: &HeaderMap,
    params: &Params,
    body: &Bytes,
    viewer: Viewer,
) -> Result<Response, SseError> {
    let request = request_params(method, headers, params, body)?;
    let expires = viewer.as_ref().map(|user| user.expiry_deadline());
    let checked = check(state, method, request, viewer.clone(), caller.client, headers)?;
    let permit = admit(state, caller.client, &viewer)?;
    let mut operations = Operations::new(state.runner.clone(), operations::Channel::Sse, Default::default());
    let id: Arc<str> = Arc::from("");
    match checked {
        Checked::Run(start) => operations.start(id, start).await,
        // Errors before execution travel on the stream, which `EventSource` can read (it hides
        // the body of a failed response).
        Checked::Invalid(errors) => operations.refuse(id, errors),
    }
    // A stream too slow for its events ends with SLOW_CONSUMER; a client that reads nothing at
    // all never lets that end be written, and hyper, blocked on it, stops polling the stream:
    // the connection is closed a little later instead, and gives back what the stream held.
    if let Some(connection) = &caller.connection {
        let consumer = operations.consumer().clone();
        connection.close_when(async move { consumer.slow().await }, STALLED_STREAM_GRACE);
    }
    let source = Distinct::new(operations, expires, permit);
    Ok(EventStream::new(source, state.config.sse_keepalive_interval(), state.shutdown.clone()).into_response())
}

/// A GraphQL request as the protocol carries it.
struct RequestParams {
    query: String,
    operation_name: Option<String>,
    variables: Value,
    extensions: serde_json::Map<String, Value>,
}

/// From the URL for `GET`, from a JSON body for `POST` (`415` for any other body).
fn request_params(
    method: &Method,
    headers: &HeaderMap,
    params: &Params,
    body: &Bytes,
) -> Result<RequestParams, SseError> {
    let bad = |message: &str| SseError::from(HttpError::BadRequest(message.to_owned()));
    let (query, operation_name, variables, extensions) = if *method == Method::GET {
        let json = |text: &Option<String>| match text {
            None => Ok(Value::Null),
            Some(text) => serde_json::from_str::<Value>(text),
        };
        let variables = json(&params.variables).map_err(|_| bad("Unparsable URL"))?;
        let extensions = json(&params.extensions).map_err(|_| bad("Unparsable URL"))?;
        (Value::from(params.query.clone()), Value::from(params.operation_name.clone()), variables, extensions)
    } else {
        let json_body = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("application/json"));
        if !json_body {
            return Err(SseError::UnsupportedMediaType);
        }
        let Ok(Value::Object(mut data)) = serde_json::from_slice::<Value>(body) else {
            return Err(bad("JSON body must be an object"));
        };
        let mut take = |name: &str| data.remove(name).unwrap_or(Value::Null);
        (take("query"), take("operationName"), take("variables"), take("extensions"))
    };
    let query = match query {
        Value::String(query) => query,
        Value::Null => return Err(bad("Missing query")),
        _ => return Err(bad("Invalid query")),
    };
    let operation_name = match operation_name {
        Value::String(name) => Some(name),
        Value::Null => None,
        _ => return Err(bad("Invalid operationName")),
    };
    if !(variables.is_null() || variables.is_object()) {
        return Err(bad("Invalid variables"));
    }
    let extensions = match extensions {
        Value::Object(map) => map,
        Value::Null => Default::default(),
        _ => return Err(bad("Invalid extensions")),
    };
    Ok(RequestParams { query, operation_name, variables, extensions })
}

/// `extensions.operationId`: a non-empty string (a number is taken as its text, as the reference
/// server does).
fn operation_id(value: &Value) -> Option<String> {
    match value {
        Value::String(id) if !id.is_empty() => Some(id.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

enum Checked {
    Run(Start),
    /// Refused before execution for what the operation is (too big, say): the errors to answer.
    Invalid(Vec<ServerError>),
}

/// The guard's checks, with the reference server's answers: a text that does not parse, or
/// names no operation it holds, is `400`; a mutation over `GET` is `405`.
fn check(
    state: &GraphqlState,
    method: &Method,
    request: RequestParams,
    viewer: Viewer,
    client: ClientAddr,
    headers: &HeaderMap,
) -> Result<Checked, SseError> {
    let RequestParams { query, operation_name, variables, .. } = request;
    let prepared = match state.runner.prepare(&query, operation_name.as_deref()) {
        Ok(prepared) => prepared,
        Err(refusal) => {
            let parse_failed = refusal
                .extensions
                .as_ref()
                .and_then(|e| e.get("code"))
                .is_some_and(|c| *c == async_graphql::Value::String(code::PARSE_FAILED.into()));
            let no_operation = !parse_failed
                && state
                    .runner
                    .documents()
                    .document(&query)
                    .is_ok_and(|document| guard::select(&document.parsed, operation_name.as_deref()).is_err());
            if parse_failed || no_operation {
                return Err(SseError::Refused(vec![refusal]));
            }
            return Ok(Checked::Invalid(vec![refusal]));
        }
    };
    let kind = prepared.kind;
    if kind == OperationKind::Mutation && *method == Method::GET {
        return Err(
            HttpError::MethodNotAllowed { allow: "POST", message: "Cannot perform mutations over GET".into() }.into()
        );
    }
    let resume_from = last_event_id(headers).map(str::to_owned);
    Ok(Checked::Run(Start { prepared, variables, viewer, client, resume_from }))
}
