//! The wire format of a graphql-sse event stream, and the request headers the protocol reads.
//!
//! An event is `event:` + `data:` lines and a blank line; a `next` of a subscription also carries
//! `id:`, the cursor of the event it came from, which the browser's `EventSource` (and our own
//! clients) send back as `Last-Event-ID` on reconnecting. In distinct-connections mode `data` is
//! the execution result; in single-connection mode it is `{"id": <operation id>, "payload": ...}`.
//! serde_json never writes a raw newline, so one `data:` line always holds the whole result.

use axum::body::Bytes;
use axum::http::{HeaderMap, header};

/// The header naming a single-connection reservation (also accepted as `?token=`).
pub const TOKEN_HEADER: &str = "x-graphql-event-stream-token";

/// A comment line: ignored by every client, it keeps proxies from timing the stream out.
pub const KEEPALIVE: &[u8] = b":\n\n";

/// Milliseconds an `EventSource` waits before reconnecting, sent once at the start of a stream.
/// Short, because a reconnect resumes where the stream stopped.
pub const RETRY_MS: u64 = 2_000;

/// The first bytes of every stream: the reconnection delay, in a message of its own (a blank
/// line ends it; having no `data`, it dispatches nothing).
/// The first bytes of every stream: how long `EventSource` waits before reconnecting
/// ([`RETRY_MS`]). A constant, so that a stream holds a flag rather than the bytes.
pub const PREAMBLE: &[u8] = b"retry: 2000\n\n";

/// A `next` event. `cursor` becomes its `id:`; `operation` is the JSON-encoded operation id in
/// single-connection mode; `payload` is the serialised execution result.
pub fn next(cursor: Option<&str>, operation: Option<&str>, payload: &str) -> Bytes {
    let mut event = String::with_capacity(payload.len() + cursor.map_or(0, str::len) + 64);
    if let Some(cursor) = cursor {
        event.push_str("id: ");
        event.push_str(cursor);
        event.push('\n');
    }
    event.push_str("event: next\ndata: ");
    match operation {
        None => event.push_str(payload),
        Some(id) => {
            event.push_str("{\"id\":");
            event.push_str(id);
            event.push_str(",\"payload\":");
            event.push_str(payload);
            event.push('}');
        }
    }
    event.push_str("\n\n");
    Bytes::from(event)
}

/// A `complete` event. Its `data:` line is there even when empty: without one, `EventSource`
/// does not dispatch the event at all.
pub fn complete(operation: Option<&str>) -> Bytes {
    match operation {
        None => Bytes::from_static(b"event: complete\ndata:\n\n"),
        Some(id) => Bytes::from(format!("event: complete\ndata: {{\"id\":{id}}}\n\n")),
    }
}

/// Whether the request asks for an event stream by name (the graphql-sse client and
/// `EventSource` send exactly `text/event-stream`; a list that names it counts too, `*/*` not).
pub fn wants_event_stream(headers: &HeaderMap) -> bool {
    let Some(Ok(accept)) = headers.get(header::ACCEPT).map(|v| v.to_str()) else { return false };
    accept
        .split(',')
        .any(|entry| entry.split(';').next().unwrap_or_default().trim().eq_ignore_ascii_case("text/event-stream"))
}

/// Whether `Accept` (absent meaning `*/*`) names one of `types` (`*/*` naming them all).
pub fn accepts(headers: &HeaderMap, types: &[&str]) -> bool {
    let Some(accept) = headers.get(header::ACCEPT) else { return true };
    let Ok(accept) = accept.to_str() else { return false };
    accept.split(',').any(|entry| {
        let media = entry.split(';').next().unwrap_or_default().trim();
        media == "*/*" || types.iter().any(|t| media.eq_ignore_ascii_case(t))
    })
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn events_are_framed_as_the_protocol_says() {
        assert_eq!(next(Some("e.7"), None, "{\"data\":1}"), "id: e.7\nevent: next\ndata: {\"data\":1}\n\n");
        assert_eq!(next(None, Some("\"op\""), "{}"), "event: next\ndata: {\"id\":\"op\",\"payload\":{}}\n\n");
        assert_eq!(complete(None), "event: complete\ndata:\n\n");
        assert_eq!(complete(Some("\"op\"")), "event: complete\ndata: {\"id\":\"op\"}\n\n");
    }

    #[test]
    fn accept_lists_and_wildcards() {
        let mut headers = HeaderMap::new();
        assert!(accepts(&headers, &["text/plain"]), "no Accept means anything");
        headers.insert(header::ACCEPT, HeaderValue::from_static("text/html, application/json;q=0.9"));
        assert!(accepts(&headers, &["application/json"]));
        assert!(!accepts(&headers, &["text/plain"]));
        assert!(!wants_event_stream(&headers));
        headers.insert(header::ACCEPT, HeaderValue::from_static("text/event-stream"));
        assert!(wants_event_stream(&headers));
    }
}
