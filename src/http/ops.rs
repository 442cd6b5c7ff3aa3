//! Operational endpoints: `/health`, `/ready`, `/metrics`.

use std::time::Duration;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::commerce::Commerce;

/// What the operational endpoints read.
#[derive(Clone)]
pub struct OpsState {
    pub commerce: Arc<Commerce>,
    pub metrics: PrometheusHandle,
}

/// `/health`, `/ready`, `/metrics`.
pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// How long `/ready` waits for the store's answer.
pub const READY_WITHIN: Duration = Duration::from_millis(800);

/// 200 while the process serves.
pub async fn health() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// 200 when the store can commit a write, else 503 with the reason. A write, not a read: a store
/// on a full disk answers every read and refuses every change. Answered within [`READY_WITHIN`]
/// whatever the store does (a probe's usual timeout is one second): a store that has not
/// committed by then is not ready.
///
/// With a backplane, the body also says whether Redis is heard (`"redis": "up"` or `"down"`);
/// a node without Redis still serves its own clients and events, so that alone is not a 503.
pub async fn ready(State(state): State<OpsState>) -> impl IntoResponse {
    let store = tokio::time::timeout(READY_WITHIN, state.commerce.probe_write()).await;
    let (status, store) = match store {
        Ok(Ok(())) => (StatusCode::OK, "ok".to_owned()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: the store cannot write");
            (StatusCode::SERVICE_UNAVAILABLE, format!("cannot write: {e}"))
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "timed out".to_owned()),
    };
    let mut body = json!({
        "status": if status == StatusCode::OK { "ready" } else { "unavailable" },
        "store": store,
    });
    if let Some(backplane) = state.commerce.backplane() {
        body["redis"] = json!(if backplane.is_up() { "up" } else { "down" });
        body["node"] = json!(backplane.node());
    }
    (status, Json(body))
}

pub async fn metrics(State(state): State<OpsState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}
