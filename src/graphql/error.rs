//! The GraphQL error boundary: every error leaves with `extensions.code`, and internal failures
//! leave without their details (which go to the log instead).

use std::collections::HashSet;
use std::sync::Arc;

use async_graphql::{ErrorExtensions, Pos, Response, ServerError};

use crate::commerce::CommerceError;
use crate::events::log::ResumeError;
use crate::rooms::access::Denied;
use crate::store::StoreError;

/// The codes clients branch on (`docs/contract.md`), plus the pre-execution ones Apollo Server uses.
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

impl From<Denied> for ApiError {
    fn from(d: Denied) -> Self {
        match d {
            Denied::BadRequest(m) => ApiError::BadInput(m),
            Denied::Forbidden(m) => ApiError::Forbidden(m),
            Denied::NotFound(m) => ApiError::NotFound(m),
            Denied::Store(e) => ApiError::from(e),
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

/// Most errors one response carries; past it, one last error says how many were left out. A
/// small document can make async-graphql report thousands (2,500 unused variables fit in the
/// query size limit), and no client reads past the first few.
pub const MAX_ERRORS: usize = 100;

/// An error for a request refused before execution, with its code.
pub fn refusal(code: &'static str, message: impl Into<String>, pos: Option<Pos>) -> ServerError {
    let mut error = ServerError::new(message, pos);
    error.extensions.get_or_insert_with(Default::default).set("code", code);
    error
}

/// The error that refuses an operation past a connection's (or reservation's) operation limit:
/// `WS_MAX_OPERATIONS`, or `WS_MAX_OPERATIONS_ANONYMOUS` without a signed-in user.
pub fn too_many_operations(limit: usize, signed_in: bool) -> ServerError {
    let whose = if signed_in { "one connection" } else { "an anonymous connection" };
    refusal(code::BAD_USER_INPUT, format!("at most {limit} operations may run at once on {whose}"), None)
}

/// What every transport does to a response before it leaves: identical errors (same message,
/// locations and path) once, at most [`MAX_ERRORS`] of them, and each with a code.
///
/// Codes are given where errors happen: by our resolvers ([`ApiError`]), by the checks made
/// before async-graphql sees a request (`guard`), and for each phase of async-graphql's own work
/// by the [`Phases`](super::phases::Phases) extension. An error that still has none here slipped
/// past all of them; it is logged, and gets `INTERNAL_SERVER_ERROR` if it happened while executing
/// (it has a path) or `GRAPHQL_VALIDATION_FAILED` if it happened before.
pub fn add_codes(response: &mut Response) {
    tidy(&mut response.errors);
}

fn tidy(errors: &mut Vec<ServerError>) {
    // `PathSegment` is not `Hash`; its JSON form is as good a key.
    let mut seen = HashSet::new();
    errors.retain(|e| {
        let path = serde_json::to_string(&e.path).unwrap_or_default();
        seen.insert((e.message.clone(), e.locations.clone(), path))
    });
    if errors.len() > MAX_ERRORS {
        let left_out = errors.split_off(MAX_ERRORS);
        let mut last = ServerError::new(format!("{} more errors were left out", left_out.len()), None);
        if let Some(code) = left_out.iter().find_map(|e| e.extensions.as_ref()?.get("code")) {
            last.extensions.get_or_insert_with(Default::default).set("code", code.clone());
        }
        errors.push(last);
    }
    for error in errors.iter_mut() {
        if error.extensions.as_ref().is_some_and(|ext| ext.get("code").is_some()) {
            continue;
        }
        let fallback = if error.path.is_empty() { code::VALIDATION_FAILED } else { code::INTERNAL };
        tracing::warn!(message = %error.message, path = ?error.path, fallback, "a GraphQL error had no code");
        error.extensions.get_or_insert_with(Default::default).set("code", fallback);
    }
}

/// The JSON text of a response, as every transport sends it. A response that failed before
/// execution (parse, validation, a limit: nothing ran) has no `data` key, as GraphQL over HTTP
/// has it for request errors; any other has `data`, `null` or not.
pub fn to_json(response: &Response) -> String {
    #[derive(serde::Serialize)]
    struct RequestError<'a> {
        errors: &'a [ServerError],
    }
    if failed_before_execution(response, false) {
        serde_json::to_string(&RequestError { errors: &response.errors })
    } else {
        serde_json::to_string(response)
    }
    .expect("responses serialise")
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

#[cfg(test)]
mod tests {
    use async_graphql::PathSegment;

    use super::*;

    fn code_of(error: &ServerError) -> String {
        error.extensions.as_ref().and_then(|e| e.get("code")).map(|c| c.to_string()).unwrap_or_default()
    }

    #[test]
    fn identical_errors_appear_once() {
        let at = |line| Some(Pos { line, column: 1 });
        let mut response = Response::from_errors(vec![
            refusal(code::VALIDATION_FAILED, "same", at(1)),
            refusal(code::VALIDATION_FAILED, "same", at(1)),
            refusal(code::VALIDATION_FAILED, "same", at(2)),
            refusal(code::VALIDATION_FAILED, "other", at(1)),
            refusal(code::VALIDATION_FAILED, "same", at(1)),
        ]);
        add_codes(&mut response);
        let kept: Vec<_> = response.errors.iter().map(|e| (e.message.as_str(), e.locations[0].line)).collect();
        assert_eq!(kept, [("same", 1), ("same", 2), ("other", 1)]);
    }

    #[test]
    fn errors_at_different_paths_are_different() {
        let at = |field: &str| ServerError::new("boom", None).with_path(vec![PathSegment::Field(field.into())]);
        let mut response = Response::from_errors(vec![at("a"), at("b"), at("a")]);
        add_codes(&mut response);
        assert_eq!(response.errors.len(), 2);
    }

    #[test]
    fn long_lists_are_cut_with_a_count_of_what_was_left_out() {
        let errors = (0..2500).map(|i| refusal(code::VALIDATION_FAILED, format!("unused ${i}"), None)).collect();
        let mut response = Response::from_errors(errors);
        add_codes(&mut response);
        assert_eq!(response.errors.len(), MAX_ERRORS + 1);
        let last = response.errors.last().unwrap();
        assert_eq!(last.message, "2400 more errors were left out");
        assert_eq!(code_of(last), "\"GRAPHQL_VALIDATION_FAILED\"");
    }

    #[test]
    fn an_error_without_a_code_gets_one_by_whether_it_happened_while_executing() {
        let executing = ServerError::new("x", None).with_path(vec![PathSegment::Field("f".into())]);
        let mut response = Response::from_errors(vec![ServerError::new("y", None), executing]);
        add_codes(&mut response);
        assert_eq!(code_of(&response.errors[0]), "\"GRAPHQL_VALIDATION_FAILED\"");
        assert_eq!(code_of(&response.errors[1]), "\"INTERNAL_SERVER_ERROR\"");
    }
}
