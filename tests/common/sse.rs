//! A GraphQL-over-SSE client for the black-box tests: requests to `/graphql/stream`, and an event
//! stream reader that sees exactly what arrives (comments, `retry:`, `id:`, events).

use std::time::Duration;

use serde_json::Value;

use super::{TestApp, WAIT};

/// One event of a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

impl Event {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("data is not JSON ({e}): {:?}", self.data))
    }
}

/// What came next on a stream.
#[derive(Debug)]
pub enum Got {
    Event(Event),
    Ended,
    Silent,
}

/// An open event stream.
pub struct Stream {
    pub response: reqwest::Response,
    buffer: String,
    /// Comment lines seen so far (keep-alives).
    pub comments: usize,
    /// `retry:` values seen so far.
    pub retries: Vec<u64>,
    /// How much of `buffer` holds no event end (so big events are scanned once).
    scanned: usize,
}

impl Stream {
    pub fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200, "an event stream");
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        Self { response, buffer: String::new(), comments: 0, retries: Vec::new(), scanned: 0 }
    }

    /// The next event within `wait` (comments and `retry:` are counted, not returned).
    pub async fn next_within(&mut self, wait: Duration) -> Got {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buffer[self.scanned..].find("\n\n").map(|at| at + self.scanned) {
                self.scanned = 0;
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::new(), Vec::new());
                for line in block.lines().filter(|line| !line.is_empty()) {
                    if line.starts_with(':') {
                        self.comments += 1;
                        continue;
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "id" => id = Some(value.to_owned()),
                        "event" => event = value.to_owned(),
                        "data" => data.push(value.to_owned()),
                        "retry" => self.retries.push(value.parse().expect("retry is a number")),
                        other => panic!("unexpected field {other:?} in {block:?}"),
                    }
                }
                if !event.is_empty() || !data.is_empty() {
                    return Got::Event(Event { id, event, data: data.join("\n") });
                }
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => return Got::Silent,
                Ok(Ok(Some(chunk))) => {
                    self.scanned = self.buffer.len().saturating_sub(1);
                    self.buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
                }
                Ok(Ok(None)) | Ok(Err(_)) => return Got::Ended,
            }
        }
    }

    /// The next event; panics on the end or silence.
    pub async fn event(&mut self) -> Event {
        match self.next_within(WAIT).await {
            Got::Event(event) => event,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// The next event, which must be a `next`; returns it.
    pub async fn next(&mut self) -> Event {
        let event = self.event().await;
        assert_eq!(event.event, "next", "{event:?}");
        event
    }

    /// The next event, which must be a `complete`.
    pub async fn complete(&mut self) -> Event {
        let event = self.event().await;
        assert_eq!(event.event, "complete", "{event:?}");
        event
    }

    /// Waits for the end of the stream; panics on an event or silence.
    pub async fn ended(&mut self) {
        match self.next_within(WAIT).await {
            Got::Ended => {}
            other => panic!("expected the end of the stream, got {other:?}"),
        }
    }

    /// Asserts that no event arrives for a while.
    pub async fn silent(&mut self) {
        match self.next_within(super::QUIET).await {
            Got::Silent => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }
}

impl TestApp {
    /// A request to `/graphql/stream` with `token` as the identity.
    pub fn sse_request(&self, method: reqwest::Method, token: Option<&str>) -> reqwest::RequestBuilder {
        let request = self.http.request(method, self.url("/graphql/stream"));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// A distinct-connections stream for `query` (POST).
    pub async fn sse_post(&self, token: Option<&str>, query: &str, variables: Value) -> Stream {
        let response = self
            .sse_request(reqwest::Method::POST, token)
            .header("accept", "text/event-stream")
            .json(&serde_json::json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("request sent");
        Stream::new(response)
    }

    /// Waits until this server counts `n` more live subscriptions than `before`.
    pub async fn await_subscriptions(&self, before: usize, n: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.state.connections.subscription_count() < before + n {
            assert!(tokio::time::Instant::now() < deadline, "the subscription never went live");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
