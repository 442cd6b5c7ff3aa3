//! An echo server on Switchboard's socket layer, for Autobahn|Testsuite's fuzzingclient.
//!
//! ```sh
//! cargo run --release --example autobahn_echo -- 9001      # ws://127.0.0.1:9001/
//! ```
//!
//! Every WebSocket at any path is served by `socket::Connection` (the type both channels run on:
//! buffer sizes, close handshake both ways, protocol violations answered with 1002/1007/1009)
//! with a handler that sends each text or binary message back. Nothing else of the server runs:
//! the point is the protocol-level behaviour of the socket layer, case by case.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use switchboard::connections::{Channel, Connections, Identity, Limits};
use switchboard::socket::{self, Close, Connection, Handler, Incoming, Out, Settings};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Autobahn's cases in sections 1–7 send messages of up to 64 KiB; 9 goes to 16 MiB.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

struct Echo;

impl Handler for Echo {
    const SLOW_REASON: &'static str = "too slow";

    async fn on_message(&mut self, message: Incoming, out: &mut Out<'_>) -> Result<(), Close> {
        out.send(match message {
            Incoming::Text(text) => Message::Text(text),
            Incoming::Binary(bytes) => Message::Binary(bytes),
        });
        Ok(())
    }

    fn poll_outgoing(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Message> {
        std::task::Poll::Pending
    }
}

#[derive(Clone)]
struct Echoes {
    connections: Connections,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

async fn upgrade(State(echoes): State<Echoes>, ws: WebSocketUpgrade) -> Response {
    // The conformance suite's many connections come from one address and sign in as nobody.
    let permit = match echoes.connections.admit(Channel::Rooms, [127, 0, 0, 1].into(), Identity::User("autobahn")) {
        Ok(permit) => permit,
        Err(refused) => return (axum::http::StatusCode::SERVICE_UNAVAILABLE, refused.to_string()).into_response(),
    };
    let settings = Settings { heartbeat: None, inactive: None, shutdown: echoes.shutdown.clone() };
    let ws = socket::configure(ws, MAX_MESSAGE);
    socket::spawn_on_upgrade(ws, echoes.tracker.clone(), move |ws| Connection::new(ws, permit, settings).run(Echo))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = match std::env::args().nth(1).map(|p| p.parse()) {
        Some(Ok(port)) => port,
        _ => {
            eprintln!("usage: autobahn_echo PORT   (serves ws://127.0.0.1:PORT/ until Ctrl-C)");
            std::process::exit(2);
        }
    };
    let echoes = Echoes {
        connections: Connections::new(Limits::default()),
        tracker: TaskTracker::new(),
        shutdown: CancellationToken::new(),
    };
    let app = Router::new().fallback(upgrade).with_state(echoes.clone());
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    eprintln!("echoing on ws://{}/", listener.local_addr()?);
    let shutdown = echoes.shutdown.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
        })
        .await?;
    echoes.tracker.close();
    echoes.tracker.wait().await;
    Ok(())
}
