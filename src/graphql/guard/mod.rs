//! Checks on a request made before async-graphql validates or executes it, so that the work any
//! request can cause is bounded before it is done.
//!
//! 1. The text: its length, and how deep its brackets nest (see [`text`]), before anything parses it.
//! 2. The parse, once, with async-graphql's own parser; the document is handed on to the request
//!    (and kept for the next request with the same text, see `super::documents`).
//! 3. The document's size once its fragments are expanded, measured without expanding them (see
//!    [`expansion`]): fields (every one, `__typename` included), everything else the expansion
//!    repeats, how deep it nests, and directives per selection.
//! 4. Which operation the request selects, and so its kind: the transports refuse subscriptions
//!    over HTTP and mutations over GET, and answer graphql-ws refusals the way its clients expect.
//!
//! Each refusal carries its code, given here where it happens: `GRAPHQL_PARSE_FAILED` for the text
//! and the parse, `GRAPHQL_VALIDATION_FAILED` for the rest.

mod expansion;
mod text;

use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationDefinition, OperationType};
use async_graphql::{Pos, Positioned, ServerError};

use super::error::{code, refusal};
use crate::config::Config;
use expansion::Refusal;

/// How deep selection sets may nest, fragment bodies and inline fragments counting one level
/// each (async-graphql's `limit_recursive_depth`; the schema is built with the same figure).
pub const MAX_RECURSIVE_DEPTH: usize = 32;

/// The parts of an expanded query (fields, fragment spreads, inline fragments, argument values,
/// directives) it may hold per field it may select. The full introspection query holds 245 parts
/// for its 230 fields; a query that passes a few arguments to every field, about four.
pub const NODES_PER_FIELD: u64 = 4;

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
    pub max_fields: usize,
    pub max_directives: usize,
}

impl Limits {
    pub fn from_config(config: &Config) -> Self {
        Self {
            max_bytes: config.query_max_bytes,
            max_nesting: config.query_max_nesting,
            max_fields: config.query_max_fields,
            max_directives: config.query_max_directives,
        }
    }
}

/// Checks `query` and returns the kind of the operation `operation_name` selects (the
/// transports go through [`super::documents::Documents`], which keeps what it parsed).
pub fn check(query: &str, operation_name: Option<&str>, limits: Limits) -> Result<Option<OperationKind>, ServerError> {
    let document = parse(query, limits)?;
    Ok(Some(kind(select(&document, operation_name)?)))
}

/// The kind of an operation.
pub fn kind(operation: &Positioned<OperationDefinition>) -> OperationKind {
    match operation.node.ty {
        OperationType::Query => OperationKind::Query,
        OperationType::Mutation => OperationKind::Mutation,
        OperationType::Subscription => OperationKind::Subscription,
    }
}

/// Checks `query`'s text, parses it and bounds the parsed document's size (steps 1 to 3 above).
pub fn parse(query: &str, limits: Limits) -> Result<ExecutableDocument, ServerError> {
    if query.len() > limits.max_bytes {
        let message = format!("the query is {} bytes; the limit is {}", query.len(), limits.max_bytes);
        return Err(refusal(code::PARSE_FAILED, message, None));
    }
    if !text::nesting_within(query, limits.max_nesting) {
        let message = format!("the query nests deeper than {} levels", limits.max_nesting);
        return Err(refusal(code::PARSE_FAILED, message, None));
    }
    let document = async_graphql::parser::parse_query(query).map_err(|e| {
        let mut error = ServerError::from(e);
        error.extensions.get_or_insert_with(Default::default).set("code", code::PARSE_FAILED);
        error
    })?;
    bound_size(&document, limits)?;
    Ok(document)
}

fn bound_size(document: &ExecutableDocument, limits: Limits) -> Result<(), ServerError> {
    let rules = expansion::Rules { max_depth: MAX_RECURSIVE_DEPTH, max_directives: limits.max_directives };
    let invalid = |message: String, pos: Pos| refusal(code::VALIDATION_FAILED, message, Some(pos));
    let size = expansion::measure(document, rules).map_err(|refused| match refused {
        Refusal::Cycle { fragment, pos } => invalid(format!("fragment \"{fragment}\" spreads itself"), pos),
        Refusal::TooDeep { limit, pos } => {
            invalid(format!("the query nests deeper than {limit} levels once its fragments are expanded"), pos)
        }
        Refusal::TooManyDirectives { limit, count, pos } => {
            invalid(format!("{count} directives on one selection; the limit is {limit}"), pos)
        }
    })?;
    let max_fields = limits.max_fields as u64;
    if size.fields > max_fields {
        let message = format!(
            "the query selects {} fields once its fragments are expanded (every field counts, \
             __typename and aliases too); the limit is {max_fields}",
            count(size.fields)
        );
        return Err(refusal(code::VALIDATION_FAILED, message, None));
    }
    let max_nodes = max_fields.saturating_mul(NODES_PER_FIELD);
    if size.nodes > max_nodes {
        let message = format!(
            "the query holds {} parts (fields, fragment spreads, inline fragments, argument values, \
             directives) once its fragments are expanded; the limit is {max_nodes}",
            count(size.nodes)
        );
        return Err(refusal(code::VALIDATION_FAILED, message, None));
    }
    Ok(())
}

/// A count for a message: a saturated one is no longer exact.
fn count(n: u64) -> String {
    if n == u64::MAX { format!("more than {}", u64::MAX) } else { n.to_string() }
}

/// The operation a request selects, by the rules async-graphql applies after validation.
pub fn select<'d>(
    document: &'d ExecutableDocument,
    operation_name: Option<&str>,
) -> Result<&'d Positioned<OperationDefinition>, ServerError> {
    let unknown =
        |name: &str| refusal(code::VALIDATION_FAILED, format!("there is no operation named \"{name}\""), None);
    match (&document.operations, operation_name) {
        (DocumentOperations::Single(operation), None) => Ok(operation),
        (DocumentOperations::Single(_), Some(name)) => Err(unknown(name)),
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name).ok_or_else(|| unknown(name)),
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            Ok(operations.values().next().expect("one operation"))
        }
        (DocumentOperations::Multiple(_), None) => Err(refusal(
            code::VALIDATION_FAILED,
            "the document holds several operations: name the one to run in operationName",
            None,
        )),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// graphql-js 16's `getIntrospectionQuery()` with every option on (descriptions,
    /// `specifiedByURL`, `isRepeatable`, the schema's description, deprecated input values,
    /// `isOneOf`): the largest variant GraphiQL and codegen tools send.
    pub const FULL_INTROSPECTION: &str = "query IntrospectionQuery { __schema { description queryType { name kind } \
        mutationType { name kind } subscriptionType { name kind } types { ...FullType } \
        directives { name description isRepeatable locations args(includeDeprecated: true) { ...InputValue } } } } \
        fragment FullType on __Type { kind name description specifiedByURL isOneOf \
        fields(includeDeprecated: true) { name description args(includeDeprecated: true) { ...InputValue } \
        type { ...TypeRef } isDeprecated deprecationReason } inputFields(includeDeprecated: true) { ...InputValue } \
        interfaces { ...TypeRef } enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason } \
        possibleTypes { ...TypeRef } } \
        fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue isDeprecated deprecationReason } \
        fragment TypeRef on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { \
        kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } } } }";

    #[test]
    fn the_defaults_admit_the_full_introspection_query_with_room_to_spare() {
        let defaults = Limits::from_config(&Config::for_tests());
        assert_eq!(check(FULL_INTROSPECTION, None, defaults).unwrap(), Some(OperationKind::Query));
        let quarter = Limits { max_fields: defaults.max_fields / 4, ..defaults };
        assert!(check(FULL_INTROSPECTION, None, quarter).is_ok(), "a quarter of the default limit is enough");
    }

    const LIMITS: Limits = Limits { max_bytes: 100_000, max_nesting: 64, max_fields: 1000, max_directives: 50 };

    fn kind(q: &str, name: Option<&str>) -> Option<OperationKind> {
        check(q, name, LIMITS).unwrap()
    }

    fn refused(q: &str) -> (String, String) {
        let error = check(q, None, LIMITS).unwrap_err();
        let code = error.extensions.as_ref().and_then(|e| e.get("code")).map(|c| c.to_string()).unwrap_or_default();
        (code.trim_matches('"').to_owned(), error.message)
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
        let q = "fragment F on Order { id } subscription { orderUpdated(orderId: \"1\") { order { ...F } } }";
        assert_eq!(kind(q, None), Some(OperationKind::Subscription));
    }

    #[test]
    fn the_operation_must_be_named_when_there_are_several() {
        let two = "query A { me { userId } } subscription B { orderEvents { kind } }";
        let error = check(two, None, LIMITS).unwrap_err();
        assert!(error.message.contains("operationName"), "{}", error.message);
        assert!(check(two, Some("C"), LIMITS).unwrap_err().message.contains("\"C\""));
        assert!(check("{ me { userId } }", Some("A"), LIMITS).is_err());
    }

    #[test]
    fn text_and_syntax_refusals_are_parse_failures() {
        let deep = format!("{{ products(first: {}1{}) {{ id }} }}", "[".repeat(5000), "]".repeat(5000));
        let (code, message) = refused(&deep);
        assert_eq!(code, "GRAPHQL_PARSE_FAILED");
        assert!(message.contains("nests deeper"), "{message}");
        let (code, message) = refused(&"{ me { userId } }".repeat(10_000));
        assert_eq!(code, "GRAPHQL_PARSE_FAILED");
        assert!(message.contains("bytes"), "{message}");
        assert_eq!(refused("{ me { ").0, "GRAPHQL_PARSE_FAILED");
    }

    #[test]
    fn expansion_refusals_are_validation_failures() {
        let bomb = (1..=30).fold("fragment F0 on Query { __typename }".to_owned(), |q, i| {
            q + &format!(" fragment F{i} on Query {{ ...F{p} ...F{p} }}", p = i - 1)
        }) + " { ...F30 }";
        let (code, message) = refused(&bomb);
        assert_eq!(code, "GRAPHQL_VALIDATION_FAILED");
        assert!(message.contains("selects 1073741824 fields"), "{message}");
        let aliases = format!("{{ {} }}", (0..1001).map(|i| format!("a{i}: __typename")).collect::<Vec<_>>().join(" "));
        assert!(refused(&aliases).1.contains("1001 fields"));
        let spreads = format!("{{ {} }} fragment F on Query {{ __typename }}", "...F ".repeat(1000));
        assert!(check(&spreads, None, LIMITS).is_ok(), "1000 fields, 2000 parts");
        let unknown = (1..=20).fold("fragment F0 on Query { ...X ...X }".to_owned(), |q, i| {
            q + &format!(" fragment F{i} on Query {{ ...F{p} ...F{p} }}", p = i - 1)
        }) + " { ...F20 }";
        let (code, message) = refused(&unknown);
        assert_eq!(code, "GRAPHQL_VALIDATION_FAILED");
        assert!(message.contains("parts"), "spreads of unknown fragments select nothing but still cost: {message}");
        assert!(refused("{ ...A } fragment A on Query { ...A }").1.contains("spreads itself"));
    }
}
