//! The practical ceiling: a minimal server on Switchboard's stack (tokio multi-thread runtime,
//! axum 0.8, its tungstenite WebSocket with the same buffer sizes) that speaks just enough
//! graphql-transport-ws (ack, pong) and, on each `setInventory` over HTTP, serializes one `next`
//! frame once and writes that same frame to every socket. No GraphQL execution, no store, no
//! per-subscriber serialization: what is left is the cost of waking a task and writing a frame.
//!
//! Run by the harness as `switchboard-bench baseline-server` (re-executed so that it can be
//! pinned to the server's core like the others); it logs `listening on ADDR`.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::broadcast;

/// Same buffer sizes as Switchboard's `src/socket.rs` (the read buffer can be changed with
/// `BASELINE_READ_BUFFER` to see what it costs per idle connection).
const READ_BUFFER: usize = 1024;
const WRITE_BUFFER: usize = 8 * 1024;
const MAX_WRITE_BUFFER: usize = 1024 * 1024 + 64 * 1024;
/// Same per-subscriber queue depth as Switchboard's default `SUBSCRIBER_QUEUE`.
const QUEUE: usize = 256;

#[derive(Clone)]
struct Baseline {
    frames: broadcast::Sender<Utf8Bytes>,
    read_buffer: usize,
}

pub fn serve() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:0".into()).parse()?;
    // Like `#[tokio::main]` in Switchboard: a multi-thread runtime (one worker per allowed core).
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let (frames, _) = broadcast::channel(QUEUE);
        let read_buffer =
            std::env::var("BASELINE_READ_BUFFER").ok().and_then(|v| v.parse().ok()).unwrap_or(READ_BUFFER);
        let app =
            Router::new().route("/graphql", get(upgrade).post(mutation)).with_state(Baseline { frames, read_buffer });
        let listener = tokio::net::TcpListener::bind(addr).await?;
        eprintln!("listening on {}", listener.local_addr()?);
        axum::serve(listener, app).await?;
        Ok(())
    })
}

async fn upgrade(State(state): State<Baseline>, ws: WebSocketUpgrade) -> Response {
    ws.read_buffer_size(state.read_buffer)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .protocols(["graphql-transport-ws"])
        .on_upgrade(move |socket| connection(socket, state))
}

async fn connection(mut socket: WebSocket, state: Baseline) {
    let mut frames: Option<broadcast::Receiver<Utf8Bytes>> = None;
    loop {
        tokio::select! {
            message = socket.recv() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                    Some(Ok(_)) => continue,
                };
                let reply = if text.contains("\"connection_init\"") {
                    Some(r#"{"type":"connection_ack"}"#)
                } else if text.contains("\"subscribe\"") {
                    frames = Some(state.frames.subscribe());
                    None
                } else if text.contains("\"ping\"") {
                    Some(r#"{"type":"pong"}"#)
                } else {
                    None
                };
                if let Some(reply) = reply
                    && socket.send(Message::Text(reply.into())).await.is_err()
                {
                    return;
                }
            }
            frame = async { frames.as_mut().expect("guarded").recv().await }, if frames.is_some() => {
                match frame {
                    Ok(frame) => {
                        if socket.send(Message::Text(frame)).await.is_err() {
                            return;
                        }
                    }
                    // Too slow: close like Switchboard does (1013), never skip silently.
                    Err(_) => {
                        let _ = socket.send(Message::Close(Some(axum::extract::ws::CloseFrame { code: 1013, reason: "too slow".into() }))).await;
                        return;
                    }
                }
            }
        }
    }
}

/// `createProduct` answers id 1; `setInventory(quantity: q)` publishes one frame; anything else
/// answers an empty result.
async fn mutation(State(state): State<Baseline>, body: Bytes) -> Response {
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let query = request["query"].as_str().unwrap_or("");
    let json = if query.contains("setInventory") {
        let quantity = request["variables"]["quantity"].as_i64().unwrap_or(0);
        let frame = format!(
            r#"{{"id":"1","type":"next","payload":{{"data":{{"inventoryChanged":{{"productId":"1","newQuantity":{quantity},"previousQuantity":{},"timestamp":"2026-01-01T00:00:00.000Z"}}}}}}}}"#,
            quantity - 1
        );
        let _ = state.frames.send(Utf8Bytes::from(frame));
        format!(r#"{{"data":{{"setInventory":{{"quantity":{quantity}}}}}}}"#)
    } else if query.contains("createProduct") {
        r#"{"data":{"createProduct":{"id":"1"}}}"#.to_owned()
    } else {
        r#"{"data":{}}"#.to_owned()
    };
    ([(axum::http::header::CONTENT_TYPE, "application/json")], json).into_response()
}
