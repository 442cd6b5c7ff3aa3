//! Operational endpoints: `/health`, `/ready`, `/metrics`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::app::AppState;

/// 200 while the process serves.
pub async fn health() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// 200 when the store can commit a write (within two seconds), else 503 with the reason. A write,
/// not a read: a store on a full disk answers every read and refuses every change.
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let store = tokio::time::timeout(Duration::from_secs(2), state.commerce.probe_write()).await;
    match store {
        Ok(Ok(())) => (StatusCode::OK, Json(json!({ "status": "ready", "store": "ok" }))),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: the store cannot write");
            let reason = format!("cannot write: {e}");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "unavailable", "store": reason })))
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "unavailable", "store": "timed out" }))),
    }
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}
