//! GraphQL over HTTP: `POST /graphql` (and `GET /graphql?query=` for queries), and GraphiQL for a
//! browser's `GET /graphql`, served with its assets from the binary so that it works offline.
//!
//! Written on axum directly rather than with async-graphql-axum's extractor: a present-but-bad
//! token must be answered `401` before anything executes, a malformed body needs a JSON error in
//! the same shape as the others, and the operation kind is checked (no subscriptions over HTTP,
//! no mutations over GET) before anything executes.

use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Query as QueryParams, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::error::{add_codes, to_json};
use super::guard::OperationKind;
use super::operations::Start;
use super::state::GraphqlState;
use crate::auth::Viewer;
use crate::connections::budget::ClientAddr;
use crate::http::error::HttpError;

/// The viewer named by the `Authorization` header: none when absent, `401` when bad.
pub fn viewer_from_headers(state: &GraphqlState, headers: &HeaderMap) -> Result<Viewer, HttpError> {
    match headers.get(header::AUTHORIZATION).map(|v| v.to_str()) {
        None => Ok(None),
        Some(Ok(value)) if value.trim().is_empty() => Ok(None),
        Some(Ok(value)) => Ok(Some(state.keys.verify(value)?)),
        Some(Err(_)) => Err(HttpError::BadRequest("the Authorization header is not text".into())),
    }
}

/// A GraphQL request as a client sends it over HTTP.
struct Body {
    query: String,
    operation_name: Option<String>,
    variables: serde_json::Value,
}

/// The variables as JSON, as every transport hands them to the runner.
fn json_variables(variables: &async_graphql::Variables) -> serde_json::Value {
    if variables.is_empty() { serde_json::Value::Null } else { serde_json::to_value(variables).unwrap_or_default() }
}

pub async fn post(
    State(state): State<GraphqlState>,
    client: ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    let viewer = viewer_from_headers(&state, &headers)?;
    let request: async_graphql::Request = serde_json::from_slice(&body).map_err(|e| {
        HttpError::BadRequest(format!("the body must be JSON like {{\"query\": \"...\", \"variables\": {{}}}}: {e}"))
    })?;
    let variables = json_variables(&request.variables);
    let request = Body { query: request.query, operation_name: request.operation_name, variables };
    execute(&state, viewer, client, request, true).await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetParams {
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<String>,
}

/// `GET /graphql` is three things: a WebSocket upgrade, a query in the URL, or GraphiQL.
pub async fn get_or_upgrade(State(state): State<GraphqlState>, headers: HeaderMap, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let client = ClientAddr::of(&parts);
    let wants_upgrade =
        headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if wants_upgrade {
        return match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
            Ok(ws) => super::ws::upgrade(State(state), client, headers, ws).await,
            Err(rejection) => rejection.into_response(),
        };
    }
    match QueryParams::from_request_parts(&mut parts, &state).await {
        Ok(params) => get(State(state), client, headers, params).await.into_response(),
        Err(rejection) => rejection.into_response(),
    }
}

/// A browser gets GraphiQL; `?query=` runs a query.
pub async fn get(
    State(state): State<GraphqlState>,
    client: ClientAddr,
    headers: HeaderMap,
    QueryParams(params): QueryParams<GetParams>,
) -> Result<Response, HttpError> {
    let Some(query) = params.query else {
        return Ok(graphiql(&state).into_response());
    };
    let viewer = viewer_from_headers(&state, &headers)?;
    let variables = match params.variables {
        None => serde_json::Value::Null,
        Some(variables) => json_variables(
            &serde_json::from_str(&variables)
                .map_err(|e| HttpError::BadRequest(format!("variables must be a JSON object: {e}")))?,
        ),
    };
    let request = Body { query, operation_name: params.operation_name, variables };
    execute(&state, viewer, client, request, false).await
}

async fn execute(
    state: &GraphqlState,
    viewer: Viewer,
    client: ClientAddr,
    request: Body,
    is_post: bool,
) -> Result<Response, HttpError> {
    // A stranger's requests in flight are bounded per address: each may hold store connections
    // (within the anonymous half of the pool) and a task.
    let _in_flight = match viewer {
        Some(_) => None,
        None => Some(state.connections.admit_request(client.0).ok_or_else(|| {
            HttpError::TooManyRequests(format!(
                "too many requests without a token in flight from this address (at most {}); sign in or wait for \
                 the ones in flight",
                state.config.anonymous_requests_per_address
            ))
        })?),
    };
    let prepared = match state.runner.prepare(&request.query, request.operation_name.as_deref()) {
        Ok(prepared) => prepared,
        Err(refusal) => {
            let mut response = async_graphql::Response::from_errors(vec![refusal]);
            add_codes(&mut response);
            return Ok(json(&response));
        }
    };
    match prepared.kind {
        OperationKind::Subscription => {
            return Err(HttpError::BadRequest(
                "subscriptions are served over WebSocket at /graphql (graphql-transport-ws)".into(),
            ));
        }
        OperationKind::Mutation if !is_post => {
            return Err(HttpError::MethodNotAllowed {
                allow: "POST",
                message: "mutations must be sent with POST; GET runs queries only".into(),
            });
        }
        _ => {}
    }
    let start = Start { prepared, variables: request.variables, viewer, client, resume_from: None };
    Ok(json(&state.runner.execute(&start).await))
}

/// A GraphQL response as the body of a `200`.
fn json(response: &async_graphql::Response) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], to_json(response)).into_response()
}

/// GraphiQL, wired to `/graphql` for queries and for subscriptions over graphql-ws. The headers
/// editor's `Authorization` reaches both. `?token=` pre-fills it; so does `--demo`, with a staff
/// token and a first subscription, so that a newcomer's first run works in one click, and a line
/// above it links to the rooms demo and the console.
fn graphiql(state: &GraphqlState) -> Html<String> {
    const PAGE: &str = include_str!("graphiql.html");
    let headers = state.graphiql_token.as_ref().map_or_else(String::new, |token| {
        serde_json::json!({ "Authorization": format!("Bearer {token}") }).to_string()
    });
    let query = if state.graphiql_token.is_some() { DEMO_OPERATION } else { WELCOME_OPERATION };
    let settings = serde_json::json!({ "headers": headers, "query": query }).to_string();
    // `</` cannot appear inside the JSON we embed in a <script>, so the page cannot be broken out of.
    let links = if state.demo() { DEMO_LINKS } else { "" };
    Html(PAGE.replace("__DEMO_LINKS__", links).replace("__SETTINGS__", &settings.replace("</", "<\\/")))
}

/// In `--demo` mode, a line above GraphiQL pointing at the rooms demo and the console.
const DEMO_LINKS: &str = r#"<nav aria-label="Demo pages" style="font:14px system-ui,sans-serif;padding:6px 12px;background:#1f2937;color:#e5e7eb">Demo mode · <a href="/demo/rooms" style="color:#93c5fd">Rooms demo: two people on one order</a> · <a href="/console" style="color:#93c5fd">Operator console</a></nav>"#;

const WELCOME_OPERATION: &str = "# Welcome to Switchboard.\n#\n# Put a token in the Headers tab as {\"Authorization\": \"Bearer <jwt>\"}\n# (`switchboard token --sub u1 --role staff` prints one), then run:\n\nquery Products {\n  products { id sku name price quantity }\n}\n";

/// "A second browser tab", not "another tab": a tab inside GraphiQL shares its Run button, which
/// stops the running subscription instead of sending the mutation.
const DEMO_OPERATION: &str = "# Demo mode: the Headers tab holds a staff token.\n# Run this subscription, then open /graphql in a\n# second browser tab and change some stock there:\n#   mutation { adjustInventory(productId: \"1\", delta: -1) { quantity } }\n# and watch the event arrive here.\n\nsubscription Stock {\n  inventoryChanged {\n    productId\n    previousQuantity\n    newQuantity\n    product { name }\n  }\n}\n";

/// The vendored GraphiQL files (see `assets/graphiql/VERSIONS`).
pub async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, mime): (&'static [u8], &str) = match file.as_str() {
        "graphiql.min.js" => (include_bytes!("../../assets/graphiql/graphiql.min.js"), "text/javascript"),
        "graphiql.min.css" => (include_bytes!("../../assets/graphiql/graphiql.min.css"), "text/css"),
        "react.production.min.js" => {
            (include_bytes!("../../assets/graphiql/react.production.min.js"), "text/javascript")
        }
        "react-dom.production.min.js" => {
            (include_bytes!("../../assets/graphiql/react-dom.production.min.js"), "text/javascript")
        }
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_str(&format!("{mime}; charset=utf-8")).expect("ascii")),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400")),
        ],
        body,
    )
        .into_response()
}
