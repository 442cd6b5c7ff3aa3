//! The client side: TCP sockets from spread source addresses with small buffers, graphql-ws
//! connections, a pipelined HTTP/1.1 client for mutations, and tokens.
//!
//! The HTTP client is hand-written on purpose: an open-loop publisher must write request *k* at
//! its scheduled time whether or not response *k-1* has arrived, on one keep-alive connection so
//! that the server commits (and so publishes) in send order. hyper's client waits for each
//! response before the next request; HTTP/1.1 pipelining is exactly what is needed here.

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub type Ws = WebSocketStream<TcpStream>;

/// Kernel socket buffers for subscriber sockets: small, so 20k of them stay cheap (Linux doubles
/// the value it is given).
const SOCKET_BUFFER: u32 = 16 * 1024;
/// tungstenite's read buffer, allocated per socket (its default is 128 KiB).
const WS_READ_BUFFER: usize = 4 * 1024;
/// Any single step (connect, handshake, ack) that takes longer than this fails the connection.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(20);

thread_local! {
    static NEXT_SOURCE: Cell<u32> = const { Cell::new(0) };
}

/// 127.0.0.2 ..= 127.0.0.254 in turn: 253 source addresses, each with its own ephemeral ports,
/// so that 20k+ connections to one server port never run out of 4-tuples.
fn next_source() -> IpAddr {
    let n = NEXT_SOURCE.with(|c| {
        let n = c.get();
        c.set(n.wrapping_add(1));
        n
    });
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (n % 253) as u8))
}

/// A TCP connection to `addr` from the next source address.
pub async fn tcp_connect(addr: SocketAddr, small_buffers: bool) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if small_buffers {
        socket.set_recv_buffer_size(SOCKET_BUFFER)?;
        socket.set_send_buffer_size(SOCKET_BUFFER)?;
    }
    socket.bind(SocketAddr::new(next_source(), 0))?;
    let stream = tokio::time::timeout(STEP_TIMEOUT, socket.connect(addr)).await.context("connect timed out")??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Upgrades to `graphql-transport-ws`, sends `connection_init` with the token and waits for
/// `connection_ack`.
pub async fn graphql_ws(addr: SocketAddr, url: &str, token: &str) -> anyhow::Result<Ws> {
    let stream = tcp_connect(addr, true).await?;
    let mut request = url.into_client_request()?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("graphql-transport-ws"));
    let config = WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(256 * 1024)
        .max_message_size(Some(1024 * 1024))
        .max_frame_size(Some(1024 * 1024));
    let (mut ws, _) =
        tokio::time::timeout(STEP_TIMEOUT, tokio_tungstenite::client_async_with_config(request, stream, Some(config)))
            .await
            .context("handshake timed out")??;
    let init = json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {token}")}});
    ws.send(Message::Text(init.to_string().into())).await?;
    let ack = tokio::time::timeout(STEP_TIMEOUT, async {
        while let Some(message) = ws.next().await {
            match message? {
                Message::Text(t) if t.contains("\"connection_ack\"") => return Ok(()),
                Message::Text(t) if t.contains("\"ping\"") => {
                    ws.send(Message::Text(r#"{"type":"pong"}"#.into())).await?
                }
                Message::Close(frame) => bail!("closed before ack: {frame:?}"),
                _ => {}
            }
        }
        bail!("closed before ack")
    })
    .await;
    ack.context("ack timed out")??;
    Ok(ws)
}

/// Sends a `subscribe` with id "1" (every harness subscription uses id 1, so that the baseline
/// can write one pre-serialized frame to all of them).
pub async fn subscribe(ws: &mut Ws, query: &str, variables: Value) -> anyhow::Result<()> {
    let message = json!({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}});
    ws.send(Message::Text(message.to_string().into())).await?;
    Ok(())
}

/// Opens a GraphQL-over-SSE subscription (distinct connections: `POST /graphql/stream` with
/// `Accept: text/event-stream`) and returns the connection once the response head has been read.
pub async fn sse_subscribe(addr: SocketAddr, token: &str, query: &str, variables: Value) -> anyhow::Result<TcpStream> {
    let mut stream = tcp_connect(addr, true).await?;
    let body = json!({"query": query, "variables": variables}).to_string();
    let request = format!(
        "POST /graphql/stream HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n\
         authorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    // Read the head byte by byte: whatever follows it belongs to the event stream.
    let mut head = Vec::with_capacity(256);
    tokio::time::timeout(STEP_TIMEOUT, async {
        while !head.ends_with(b"\r\n\r\n") {
            let byte = stream.read_u8().await?;
            head.push(byte);
            if head.len() > 8192 {
                bail!("response head too long");
            }
        }
        Ok(())
    })
    .await
    .context("response head timed out")??;
    let head = String::from_utf8_lossy(&head);
    if !head.starts_with("HTTP/1.1 200") {
        bail!("SSE subscribe refused: {}", head.lines().next().unwrap_or_default());
    }
    Ok(stream)
}

/// An HS256 token with `sub`, `role` and a one-day `exp`, as Switchboard and the peer expect.
pub fn token(secret: &str, sub: &str, role: &str) -> String {
    let exp =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) + 86_400;
    let claims = json!({"sub": sub, "role": role, "name": "bench", "exp": exp});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}

/// Writes POST /graphql requests on one keep-alive connection.
pub struct HttpWriter {
    half: OwnedWriteHalf,
    head: String,
}

/// Reads the responses of an [`HttpWriter`]'s requests, in order.
pub struct HttpReader {
    half: OwnedReadHalf,
    buffer: Vec<u8>,
}

/// One parsed response.
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn json(&self) -> anyhow::Result<Value> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    /// A 200 with no GraphQL `errors`.
    pub fn ok(&self) -> bool {
        self.status == 200 && !contains(&self.body, b"\"errors\"")
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Opens a pipelining-capable HTTP connection to `addr` that sends `token` as a bearer.
pub async fn http(addr: SocketAddr, token: &str) -> anyhow::Result<(HttpWriter, HttpReader)> {
    let stream = tcp_connect(addr, false).await?;
    let (read, write) = stream.into_split();
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json\r\nAuthorization: Bearer {token}\r\n"
    );
    Ok((HttpWriter { half: write, head }, HttpReader { half: read, buffer: Vec::with_capacity(16 * 1024) }))
}

impl HttpWriter {
    pub async fn send(&mut self, body: &str) -> anyhow::Result<()> {
        let request = format!("{}Content-Length: {}\r\n\r\n{body}", self.head, body.len());
        self.half.write_all(request.as_bytes()).await?;
        Ok(())
    }
}

impl HttpReader {
    /// The next response; supports Content-Length and chunked bodies.
    pub async fn next(&mut self) -> anyhow::Result<HttpResponse> {
        let head_end = loop {
            if let Some(at) = find(&self.buffer, b"\r\n\r\n") {
                break at;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buffer[..head_end])?.to_owned();
        let status: u16 = head.split(' ').nth(1).context("no status")?.parse()?;
        let mut length = None;
        let mut chunked = false;
        for line in head.lines().skip(1) {
            let Some((name, value)) = line.split_once(':') else { continue };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            if name == "content-length" {
                length = Some(value.parse::<usize>()?);
            } else if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
        self.buffer.drain(..head_end + 4);
        let body = if chunked {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(at) = find(&self.buffer, b"\r\n") {
                        break at;
                    }
                    self.fill().await?;
                };
                let size_text = std::str::from_utf8(&self.buffer[..line_end])?;
                let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
                while self.buffer.len() < line_end + 2 + size + 2 {
                    self.fill().await?;
                }
                body.extend_from_slice(&self.buffer[line_end + 2..line_end + 2 + size]);
                self.buffer.drain(..line_end + 2 + size + 2);
                if size == 0 {
                    break body;
                }
            }
        } else {
            let length = length.unwrap_or(0);
            while self.buffer.len() < length {
                self.fill().await?;
            }
            self.buffer.drain(..length).collect()
        };
        Ok(HttpResponse { status, body })
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.half.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed by the server");
        }
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends `bodies` pipelined in batches and returns the parsed JSON responses, failing on any
/// GraphQL error (set-up requests must all succeed).
pub async fn graphql_batch(
    writer: &mut HttpWriter,
    reader: &mut HttpReader,
    bodies: &[String],
) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::with_capacity(bodies.len());
    for batch in bodies.chunks(64) {
        for body in batch {
            writer.send(body).await?;
        }
        for _ in batch {
            let response = reader.next().await?;
            if !response.ok() {
                bail!("request failed: HTTP {} {}", response.status, String::from_utf8_lossy(&response.body));
            }
            out.push(response.json()?);
        }
    }
    Ok(out)
}

/// Parses the unsigned integer that follows `key` in `text` (e.g. `"newQuantity":`), skipping a
/// leading `"` and letter so that `"trackingNumber":"T42"` reads 42.
pub fn number_after(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let digits: &str = text[at..].trim_start_matches(|c: char| c == '"' || c.is_ascii_alphabetic());
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sequence_numbers() {
        let next = r#"{"id":"1","type":"next","payload":{"data":{"inventoryChanged":{"productId":"1","newQuantity":42,"previousQuantity":41}}}}"#;
        assert_eq!(number_after(next, "\"newQuantity\":"), Some(42));
        let order = r#"{"data":{"orderUpdated":{"orderId":"7","status":"PENDING","trackingNumber":"T1234"}}}"#;
        assert_eq!(number_after(order, "\"trackingNumber\":"), Some(1234));
        assert_eq!(number_after(order, "\"missing\":"), None);
    }

    #[test]
    fn sources_spread_over_loopback() {
        let a = next_source();
        let b = next_source();
        assert_ne!(a, b);
        assert!(a.is_loopback() && b.is_loopback());
    }
}
