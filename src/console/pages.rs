//! The console's and the demo's files, served from the binary so that they work offline, like
//! GraphiQL: plain HTML, CSS and JavaScript with no build step and nothing from a CDN. Both pages
//! run Switchboard's JavaScript client (`clients/js`, whose compiled ES modules are committed)
//! and, for GraphQL, the graphql-ws client it wraps (`assets/vendor`).
//!
//! The pages carry no inline script: what the server tells a page (the demo tokens) travels in a
//! `<script type="application/json">` block, which is data, so a strict Content-Security-Policy
//! (scripts, styles and connections from this origin only) holds.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

use crate::auth::{Keys, Role};

/// What the pages are served with: the keys the demo's tokens are signed with, and in `--demo`
/// mode the staff token the console offers.
#[derive(Clone)]
pub struct PagesState {
    pub keys: Arc<Keys>,
    pub demo_token: Option<String>,
}

impl PagesState {
    fn demo(&self) -> bool {
        self.demo_token.is_some()
    }
}

/// `/console` and its files, and `/demo/rooms`.
pub fn router(state: PagesState) -> Router {
    Router::new()
        .route("/console", get(console))
        .route("/console/{file}", get(asset))
        .route("/console/lib/{file}", get(library))
        .route("/console/vendor/{file}", get(vendor))
        .route("/demo/rooms", get(rooms_demo))
        .with_state(state)
}

/// What the pages may load and connect to: this origin only (`connect-src 'self'` covers the
/// same origin's `ws:`), no framing, no forms posted anywhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// How long the demo page's tokens live. They are minted for each page load, in demo mode only.
const DEMO_TOKEN_TTL: u64 = 12 * 3600;

/// `page` with `settings` in place of `__SETTINGS__`. `<` is escaped inside the JSON (only
/// strings can hold it there), so no value can close the script block it sits in.
fn page(template: &str, settings: &Value) -> Response {
    let settings = settings.to_string().replace('<', "\\u003c");
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
            // The demo page holds tokens: never cached, never sent on as a referrer.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        template.replace("__SETTINGS__", &settings),
    )
        .into_response()
}

/// `GET /console`: the page asks for a staff or admin token and keeps it in memory (or, if the
/// operator ticks the box, in this tab's `sessionStorage`), never in the URL. In `--demo` mode it
/// offers the demo staff token, as GraphiQL does.
pub async fn console(State(state): State<PagesState>) -> Response {
    page(include_str!("../../assets/console/console.html"), &json!({ "demoToken": state.demo_token }))
}

/// `GET /demo/rooms`, in `--demo` mode only (404 otherwise): two people on one order. The page
/// gets a token for each, minted now for the demo's fixed users: the customer who owns the
/// demo order and a staff member. Nothing else mints tokens on request, and outside demo mode
/// this route answers 404.
pub async fn rooms_demo(State(state): State<PagesState>) -> Response {
    if !state.demo() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let person = |key: &str, user: &str, name: &str, role: Role| {
        let token = state.keys.sign(user, role, Some(name), DEMO_TOKEN_TTL);
        json!({ "key": key, "userId": user, "name": name, "role": role.as_str(), "token": token })
    };
    let settings = json!({
        "orderNumber": "SB-DEMO-0001",
        "people": [
            person("customer", "customer-1", "Ana Lima", Role::Customer),
            person("staff", "staff-2", "Sam Ortiz", Role::Staff),
        ],
    });
    page(include_str!("../../assets/console/rooms.html"), &settings)
}

/// `GET /console/{file}`: the pages' scripts (ES modules) and style sheet.
pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, mime): (&'static str, &str) = match file.as_str() {
        "console.js" => (include_str!("../../assets/console/console.js"), "text/javascript"),
        "rooms.js" => (include_str!("../../assets/console/rooms.js"), "text/javascript"),
        "ui.js" => (include_str!("../../assets/console/ui.js"), "text/javascript"),
        "style.css" => (include_str!("../../assets/console/style.css"), "text/css"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    served(body, mime)
}

/// `GET /console/lib/{file}`: Switchboard's JavaScript client, which both pages run: the ES
/// modules of `clients/js/dist/` that need nothing else (the same files its npm package ships).
pub async fn library(Path(file): Path<String>) -> Response {
    let body = match file.as_str() {
        "index.js" => include_str!("../../clients/js/dist/index.js"),
        "errors.js" => include_str!("../../clients/js/dist/errors.js"),
        "cursors.js" => include_str!("../../clients/js/dist/cursors.js"),
        "operation.js" => include_str!("../../clients/js/dist/operation.js"),
        "resumable-ws.js" => include_str!("../../clients/js/dist/resumable-ws.js"),
        "resumable-sse.js" => include_str!("../../clients/js/dist/resumable-sse.js"),
        "rooms.js" => include_str!("../../clients/js/dist/rooms.js"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    served(body, "text/javascript")
}

/// `GET /console/vendor/{file}`: the graphql-ws client the console hands to the library, as its
/// npm package ships it (`assets/vendor/VERSIONS`).
pub async fn vendor(Path(file): Path<String>) -> Response {
    let body = match file.as_str() {
        "graphql-ws-client.js" => include_str!("../../assets/vendor/graphql-ws-client.js"),
        "common-CGW11Fyb.js" => include_str!("../../assets/vendor/common-CGW11Fyb.js"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    served(body, "text/javascript")
}

/// A file of the pages, with its type.
fn served(body: &'static str, mime: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_str(&format!("{mime}; charset=utf-8")).expect("ascii")),
            // Short: these change with the binary, and a stale script would talk an old protocol.
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        body,
    )
        .into_response()
}
