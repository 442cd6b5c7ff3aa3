//! The GraphQL error boundary: every error leaves with `extensions.code`, and internal failures
//! leave without their details (which go to the log instead).

use std::sync::Arc;

use async_graphql::{ErrorExtensions, Response, ServerError};

use crate::commerce::CommerceError;
use crate::event_log::ResumeError;
use crate::store::StoreError;

/// The codes clients branch on (SPEC section 4), plus the pre-execution ones Apollo Server uses.
pub mod code {
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    pub const FORBIDDEN: &str = "FORBIDDEN";
    pub const NOT_FOUND: &str = "NOT_FOUND";
    pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";
    /// A resume cursor the event log can no longer serve completely: refetch, subscribe anew.
    pub const CURSOR_EXPIRED: &str = "CURSOR_EXPIRED";
    pub const INTERNAL: &str = "INTERNAL_SERVER_ERROR";
    pub const PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
    pub const VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";
}

/// What a resolver can fail with.
///
/// Deliberately not `Display`: async-graphql converts any `Display` error into its own `Error`
/// with a blanket `From`, which would drop the code (and, for a database error, leak its text).
/// Without `Display`, our `From` below is the only way in.
#[derive(Debug, Clone)]
pub enum ApiError {
    Unauthenticated,
    Forbidden(String),
    NotFound(String),
    BadInput(String),
    CursorExpired(String),
    Internal(Arc<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden(message.into())
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated => code::UNAUTHENTICATED,
            Self::Forbidden(_) => code::FORBIDDEN,
            Self::NotFound(_) => code::NOT_FOUND,
            Self::BadInput(_) => code::BAD_USER_INPUT,
            Self::CursorExpired(_) => code::CURSOR_EXPIRED,
            Self::Internal(_) => code::INTERNAL,
        }
    }

    /// The message the client sees.
    pub fn message(&self) -> String {
        match self {
            Self::Unauthenticated => "sign in first: send a token (Authorization: Bearer <jwt>)".into(),
            Self::Forbidden(m) | Self::BadInput(m) | Self::CursorExpired(m) => m.clone(),
            Self::NotFound(what) => format!("{what} not found"),
            Self::Internal(_) => "internal server error".into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::Internal(Arc::new(e))
    }
}

impl From<ResumeError> for ApiError {
    fn from(e: ResumeError) -> Self {
        match e {
            ResumeError::Malformed(message) => Self::BadInput(message),
            ResumeError::Expired(message) => Self::CursorExpired(message),
            ResumeError::Store(e) => Self::from(e),
        }
    }
}

impl From<CommerceError> for ApiError {
    fn from(e: CommerceError) -> Self {
        match e {
            CommerceError::NotFound(what) => Self::NotFound(what),
            CommerceError::BadInput(message) => Self::BadInput(message),
            CommerceError::Store(e) => Self::from(e),
            CommerceError::Internal(e) => Self::Internal(Arc::new(std::io::Error::other(e))),
        }
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(e: ApiError) -> Self {
        if let ApiError::Internal(source) = &e {
            tracing::error!(error = %source, "resolver failed");
        }
        let code = e.code();
        async_graphql::Error::new(e.message()).extend_with(|_, ext| ext.set("code", code))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Gives every error in `response` a code. Errors from our resolvers have one already; the others
/// come from async-graphql itself: parsing, validation, limits and input coercion.
pub fn add_codes(response: &mut Response) {
    for error in &mut response.errors {
        if error.extensions.as_ref().is_some_and(|ext| ext.get("code").is_some()) {
            continue;
        }
        let code = classify(error);
        error.extensions.get_or_insert_with(Default::default).set("code", code);
    }
}

fn classify(error: &ServerError) -> &'static str {
    let m = error.message.as_str();
    let bad_value = m.starts_with("Invalid value for argument")
        || m.starts_with("Failed to parse")
        || m.starts_with("Invalid value for variable")
        || m.contains("Variable \"")
        || m.contains("is not a decimal amount")
        || m.contains("send amounts as strings")
        || m.contains("expected an RFC 3339");
    if bad_value {
        code::BAD_USER_INPUT
    } else if !error.path.is_empty() {
        code::INTERNAL
    } else if m.starts_with(" --> ") || m.contains("expected ") && m.contains("-->") {
        code::PARSE_FAILED
    } else {
        code::VALIDATION_FAILED
    }
}

/// True when `response` failed before execution started: graphql-ws answers those with `error`
/// rather than `next` + `complete`. For a query or mutation that means no error has a path (parse,
/// validation, limits). A subscription's first response also counts when its root field refused
/// at subscribe time (UNAUTHENTICATED, FORBIDDEN, NOT_FOUND), as graphql-js reports those.
pub fn failed_before_execution(response: &Response, subscription: bool) -> bool {
    let max_path = if subscription { 1 } else { 0 };
    !response.errors.is_empty()
        && response.data == async_graphql::Value::Null
        && response.errors.iter().all(|e| e.path.len() <= max_path)
}
