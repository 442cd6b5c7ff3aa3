//! `ALLOWED_ORIGINS`: which web pages may use this server from a browser.
//!
//! Browsers send `Origin` on every WebSocket handshake and every cross-origin request. A WebSocket
//! is not protected by CORS at all: without this check, any page a signed-in user visits could
//! open a socket to the server with the user's cookies or stored token (cross-site WebSocket
//! hijacking). So, when a list is configured, a request whose `Origin` is neither in the list nor
//! the server's own (same host as the request's `Host`) is refused with `403` before any handler
//! runs, upgrades and CORS preflights included; and CORS responses name exactly the listed
//! origins. Requests without `Origin` (other servers, mobile apps, curl) are not concerned.
//! With no list, any origin is allowed, as before.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::http::error::HttpError;

/// The configured origins; `None` allows any.
#[derive(Debug, Clone)]
pub struct AllowedOrigins(Option<Arc<[HeaderValue]>>);

impl AllowedOrigins {
    /// From the configured list: entries are trimmed and lose a trailing `/`; an empty list, or
    /// one with `*`, allows any origin.
    pub fn new(list: &[String]) -> Self {
        let origins: Vec<&str> =
            list.iter().map(|o| o.trim().trim_end_matches('/')).filter(|o| !o.is_empty()).collect();
        if origins.is_empty() || origins.contains(&"*") {
            return AllowedOrigins(None);
        }
        let values = origins.iter().filter_map(|o| HeaderValue::from_str(&o.to_ascii_lowercase()).ok()).collect();
        AllowedOrigins(Some(values))
    }

    /// Whether a request from `origin` to the host named `host` may go on.
    fn allows(&self, origin: &HeaderValue, host: Option<&HeaderValue>) -> bool {
        let Some(list) = &self.0 else { return true };
        let Ok(origin) = origin.to_str() else { return false };
        list.iter().any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
            || is_same_origin(origin, host)
    }

    /// CORS for the listed origins (any origin when there is no list).
    pub fn cors_layer(&self) -> CorsLayer {
        let allow_origin = match &self.0 {
            None => AllowOrigin::from(Any),
            Some(list) => AllowOrigin::list(list.iter().cloned()),
        };
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                // GraphQL over SSE: the reservation token, and the id a stream resumes from.
                header::HeaderName::from_static(crate::graphql::sse::protocol::TOKEN_HEADER),
                header::HeaderName::from_static("last-event-id"),
            ])
            .max_age(Duration::from_secs(86_400))
    }
}

/// A page served by this server itself (GraphiQL): its origin's host and port are the `Host`
/// the request was sent to.
fn is_same_origin(origin: &str, host: Option<&HeaderValue>) -> bool {
    let Some(host) = host.and_then(|h| h.to_str().ok()) else { return false };
    let authority = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
    authority.is_some_and(|authority| authority.eq_ignore_ascii_case(host))
}

/// The middleware: `403` with a JSON error for a request from an origin that is not allowed.
pub async fn refuse_foreign(State(allowed): State<AllowedOrigins>, request: Request, next: Next) -> Response {
    if let Some(origin) = request.headers().get(header::ORIGIN)
        && !allowed.allows(origin, request.headers().get(header::HOST))
    {
        let shown = String::from_utf8_lossy(origin.as_bytes()).chars().take(200).collect::<String>();
        return HttpError::Forbidden(format!("origin {shown} is not allowed")).into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn listed_and_same_origins_pass_others_do_not() {
        let allowed = AllowedOrigins::new(&[" https://Shop.example/ ".into(), "http://localhost:3000".into()]);
        let host = value("api.example:4000");
        assert!(allowed.allows(&value("https://shop.example"), Some(&host)));
        assert!(allowed.allows(&value("http://localhost:3000"), Some(&host)));
        assert!(allowed.allows(&value("http://api.example:4000"), Some(&host)));
        assert!(!allowed.allows(&value("https://evil.example"), Some(&host)));
        assert!(!allowed.allows(&value("null"), Some(&host)));
        assert!(!allowed.allows(&value("https://shop.example.evil.example"), None));
    }

    #[test]
    fn no_list_or_a_star_allows_any() {
        for list in [vec![], vec!["".to_owned()], vec!["https://a.example".to_owned(), "*".to_owned()]] {
            assert!(AllowedOrigins::new(&list).allows(&value("https://evil.example"), None), "{list:?}");
        }
    }
}
