//! A WebSocket client that writes hand-made frames over plain TCP: the only way to send what a
//! well-behaved client library refuses to (bad UTF-8, reserved bits, unmasked frames, oversized or
//! fragmented control frames, forbidden close codes) and to see exactly what the server answers
//! before it closes the TCP connection.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::WAIT;

pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// One frame as it goes on the wire, every bit under the test's control.
#[derive(Debug, Clone)]
pub struct Frame {
    pub fin: bool,
    /// The three reserved bits (RSV1..RSV3), as the low three bits.
    pub rsv: u8,
    pub opcode: u8,
    /// Clients must mask; `None` sends the payload in the clear.
    pub mask: Option<[u8; 4]>,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A final, masked frame with no reserved bits: what a correct client sends.
    pub fn new(opcode: u8, payload: impl Into<Vec<u8>>) -> Self {
        Self { fin: true, rsv: 0, opcode, mask: Some([0x37, 0xfa, 0x21, 0x3d]), payload: payload.into() }
    }

    /// A close frame carrying `code` and `reason`.
    pub fn close(code: u16, reason: &[u8]) -> Self {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        Self::new(CLOSE, payload)
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = vec![(u8::from(self.fin) << 7) | ((self.rsv & 0b111) << 4) | (self.opcode & 0x0f)];
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let len = self.payload.len();
        if len < 126 {
            out.push(mask_bit | len as u8);
        } else if len <= usize::from(u16::MAX) {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        match self.mask {
            Some(key) => {
                out.extend_from_slice(&key);
                out.extend(self.payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            }
            None => out.extend_from_slice(&self.payload),
        }
        out
    }
}

/// What came back from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    Frame {
        opcode: u8,
        payload: Vec<u8>,
    },
    /// The TCP connection ended (orderly or by reset) before a whole frame arrived.
    Eof,
    Silent,
}

/// A raw WebSocket connection, past the upgrade.
pub struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    /// Upgrades `path` on `addr`, offering `protocol` when given; panics unless the answer is 101.
    pub async fn connect(addr: SocketAddr, path: &str, protocol: Option<&str>) -> Self {
        let mut stream = TcpStream::connect(addr).await.expect("TCP connect");
        let protocol = protocol.map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n")).unwrap_or_default();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{protocol}\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("request written");
        let mut raw = Self { stream, buf: Vec::new() };
        let deadline = Instant::now() + WAIT;
        let head_end = loop {
            if let Some(at) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            assert!(raw.fill(deadline).await, "the upgrade was never answered");
        };
        let head = String::from_utf8_lossy(&raw.buf[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "expected 101 Switching Protocols, got {head}");
        raw.buf.drain(..head_end);
        raw
    }

    pub async fn send(&mut self, frame: Frame) {
        self.send_bytes(&frame.encode()).await;
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        // The server may already have failed the connection; what matters is what it answered.
        let _ = self.stream.write_all(bytes).await;
    }

    /// Reads more bytes into the buffer; false on EOF, error or the deadline.
    async fn fill(&mut self, deadline: Instant) -> bool {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    /// The next frame from the server within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Received {
        let deadline = Instant::now() + wait;
        loop {
            if let Some((frame, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                return frame;
            }
            if !self.fill(deadline).await {
                return if Instant::now() >= deadline { Received::Silent } else { Received::Eof };
            }
        }
    }

    /// Reads past anything else (pings, protocol messages) to the server's close frame, and
    /// returns its code (`None` for a close frame without one). Panics when the TCP connection
    /// ends first: that is the unclean close these tests are here to rule out.
    pub async fn close_code(&mut self) -> Option<u16> {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.next_within(deadline.saturating_duration_since(Instant::now())).await {
                Received::Frame { opcode: CLOSE, payload } => {
                    return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                }
                Received::Frame { .. } => continue,
                Received::Eof => panic!("the server dropped the connection without a close frame"),
                Received::Silent => panic!("no close frame within {WAIT:?}"),
            }
        }
    }

    /// Waits for the server to end the TCP connection (after its close frame).
    pub async fn ends(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.next_within(deadline.saturating_duration_since(Instant::now())).await {
                Received::Eof => return,
                Received::Frame { opcode, .. } => assert_ne!(opcode, TEXT, "a message after the close frame"),
                Received::Silent => panic!("the server kept the TCP connection open after closing"),
            }
        }
    }
}

/// One whole server frame from the front of `buf`, and how many bytes it took.
fn parse(buf: &[u8]) -> Option<(Received, usize)> {
    let [b0, b1, ..] = *buf else { return None };
    let mut at = 2;
    let mut len = usize::from(b1 & 0x7f);
    if len == 126 {
        len = usize::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?));
        at = 4;
    } else if len == 127 {
        len = usize::try_from(u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?)).ok()?;
        at = 10;
    }
    assert_eq!(b1 & 0x80, 0, "servers never mask their frames");
    let payload = buf.get(at..at + len)?.to_vec();
    Some((Received::Frame { opcode: b0 & 0x0f, payload }, at + len))
}
