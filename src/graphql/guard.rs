//! Checks on a query's text made before async-graphql parses it.
//!
//! async-graphql-parser 7.2 recurses once per nesting level of list and object *value literals*
//! with no limit of its own: `{ f(a: [[[[...]]]]) }` a couple of thousand levels deep (4 KB)
//! overflows a 2 MiB tokio worker stack and aborts the whole process. One linear pass over the
//! text, skipping strings and comments, bounds every kind of bracket before the parser sees it.
//!
//! The same pass finds which kind of operation the request names, which the graphql-ws transport
//! needs to answer refusals the way graphql-ws clients expect.

use async_graphql::{ErrorExtensions, ServerError};

use super::error::code;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationKind {
    Query,
    Mutation,
    Subscription,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_nesting: usize,
}

/// Refuses text that is too long or nests too deeply; otherwise returns the kind of the operation
/// that `operation_name` selects, when the text makes that clear (the parser reports the rest).
pub fn check(query: &str, operation_name: Option<&str>, limits: Limits) -> Result<Option<OperationKind>, ServerError> {
    if query.len() > limits.max_bytes {
        return Err(refusal(format!("the query is {} bytes; the limit is {}", query.len(), limits.max_bytes)));
    }
    let scan = scan(query, limits.max_nesting)
        .ok_or_else(|| refusal(format!("the query nests deeper than {} levels", limits.max_nesting)))?;
    let pick = match operation_name {
        Some(name) => scan.operations.iter().find(|(_, n)| n.as_deref() == Some(name)),
        None if scan.operations.len() == 1 => scan.operations.first(),
        None => None,
    };
    Ok(pick.map(|(kind, _)| *kind))
}

fn refusal(message: String) -> ServerError {
    let mut error = ServerError::new(message, None);
    error.extensions = async_graphql::Error::new("").extend_with(|_, e| e.set("code", code::PARSE_FAILED)).extensions;
    error
}

struct Scan {
    operations: Vec<(OperationKind, Option<String>)>,
}

/// Where the scanner is among the top-level definitions.
enum State {
    Idle,
    /// After `query`, `mutation` or `subscription`: a name, variables or the body follow.
    Keyword(OperationKind),
    /// The operation is recorded; its body is still to come.
    Recorded,
    /// After `fragment`: its body is no operation.
    Fragment,
}

/// `None` when brackets nest deeper than `max_depth`.
fn scan(text: &str, max_depth: usize) -> Option<Scan> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut operations = Vec::new();
    let mut state = State::Idle;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
                continue;
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    i += if bytes[i..].starts_with(b"\\\"\"\"") { 4 } else { 1 };
                }
                i += 3;
                continue;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                continue;
            }
            open @ (b'{' | b'[' | b'(') => {
                if depth == 0 {
                    state = match (state, open) {
                        (State::Idle, b'{') => {
                            operations.push((OperationKind::Query, None));
                            State::Idle
                        }
                        (State::Keyword(kind), b'{') => {
                            operations.push((kind, None));
                            State::Idle
                        }
                        (State::Keyword(kind), _) => {
                            operations.push((kind, None));
                            State::Recorded
                        }
                        (_, b'{') => State::Idle,
                        (other, _) => other,
                    };
                }
                depth += 1;
                if depth > max_depth {
                    return None;
                }
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            b'_' | b'a'..=b'z' | b'A'..=b'Z' => {
                let start = i;
                while i < bytes.len() && (bytes[i] == b'_' || bytes[i].is_ascii_alphanumeric()) {
                    i += 1;
                }
                if depth == 0 {
                    let word = &text[start..i];
                    state = match (state, word) {
                        (State::Idle, "query") => State::Keyword(OperationKind::Query),
                        (State::Idle, "mutation") => State::Keyword(OperationKind::Mutation),
                        (State::Idle, "subscription") => State::Keyword(OperationKind::Subscription),
                        (State::Idle, "fragment") => State::Fragment,
                        (State::Keyword(kind), name) => {
                            operations.push((kind, Some(name.to_owned())));
                            State::Recorded
                        }
                        (other, _) => other,
                    };
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Some(Scan { operations })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_bytes: 100_000, max_nesting: 64 };

    fn kind(q: &str, name: Option<&str>) -> Option<OperationKind> {
        check(q, name, LIMITS).unwrap()
    }

    #[test]
    fn finds_the_operation_kind() {
        assert_eq!(kind("{ me { userId } }", None), Some(OperationKind::Query));
        assert_eq!(kind("query { me { userId } }", None), Some(OperationKind::Query));
        assert_eq!(kind("subscription S { notificationCreated { id } }", None), Some(OperationKind::Subscription));
        assert_eq!(kind("mutation($id: ID!) { deleteOrder(id: $id) { id } }", None), Some(OperationKind::Mutation));
        let two = "query A { me { userId } } subscription B { orderEvents { kind } }";
        assert_eq!(kind(two, Some("B")), Some(OperationKind::Subscription));
        assert_eq!(kind(two, Some("A")), Some(OperationKind::Query));
        assert_eq!(kind(two, None), None);
    }

    #[test]
    fn fragments_are_not_operations() {
        let q = "fragment F on Order { id } subscription { orderUpdated(orderId: \"1\") { order { ...F } } }";
        assert_eq!(kind(q, None), Some(OperationKind::Subscription));
    }

    #[test]
    fn strings_and_comments_do_not_count() {
        let q = "# {{{{ subscription\nquery { a(s: \"{{{[[[\", b: \"\"\"(((\"\"\") }";
        assert_eq!(kind(q, None), Some(OperationKind::Query));
    }

    #[test]
    fn deep_value_literals_are_refused_before_parsing() {
        let q = format!("{{ products(first: {}1{}) {{ id }} }}", "[".repeat(5000), "]".repeat(5000));
        let err = check(&q, None, LIMITS).unwrap_err();
        assert!(err.message.contains("nests deeper"), "{}", err.message);
        let q = format!("{{ a(o: {}) }}", "{x: ".repeat(100) + &"}".repeat(100));
        assert!(check(&q, None, LIMITS).is_err());
    }

    #[test]
    fn long_queries_are_refused() {
        let q = "{ me { userId } }".repeat(10_000);
        assert!(check(&q, None, LIMITS).unwrap_err().message.contains("bytes"));
    }
}
