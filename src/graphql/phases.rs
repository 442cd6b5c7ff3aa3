//! Error codes for the errors async-graphql reports itself, given by the phase they happen in.
//!
//! async-graphql's errors carry no code and no kind: only an English message, which a version
//! bump may reword. Rather than read the message afterwards, this extension wraps the phases and
//! tags what fails in each, where it fails:
//!
//! | phase | fails with |
//! | --- | --- |
//! | variables (ours: async-graphql has no such phase) | `BAD_USER_INPUT`: a required variable without a value |
//! | parse | `GRAPHQL_PARSE_FAILED`, or `GRAPHQL_VALIDATION_FAILED` for its depth and directive limits |
//! | validation (rules, depth, complexity) | `GRAPHQL_VALIDATION_FAILED`; a bad input value `BAD_USER_INPUT` |
//! | resolving a field | `BAD_USER_INPUT` for an argument async-graphql could not coerce |
//!
//! Errors that already carry a code keep it.

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest, NextResolve, NextValidation,
    ResolveInfo,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Request, ServerError, ServerResult, ValidationResult, Value, Variables};

use super::error::{code, refusal};
use super::guard;

/// The factory the schema is built with. One stateless extension serves every request.
pub struct Phases(Arc<PhaseTags>);

impl Default for Phases {
    fn default() -> Self {
        Self(Arc::new(PhaseTags))
    }
}

impl ExtensionFactory for Phases {
    fn create(&self) -> Arc<dyn Extension> {
        self.0.clone()
    }
}

pub struct PhaseTags;

#[async_graphql::async_trait::async_trait]
impl Extension for PhaseTags {
    /// The GraphQL spec has a request fail, before anything executes, when a variable of a
    /// non-null type without a default has no value; async-graphql instead fails each field that
    /// reads it, after the fields before it have run (a mutation's first field included).
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let mut request = next.run(ctx, request).await?;
        required_variables_are_given(&mut request)?;
        Ok(request)
    }

    /// async-graphql's parse phase also checks the recursion depth and the directives per field
    /// of the parsed document. The transports check both (and parse) before async-graphql does,
    /// so this rarely fails; when it does, whether the text parses tells which failure it was.
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        next.run(ctx, query, variables).await.map_err(|error| {
            let code = if async_graphql::parser::parse_query(query).is_ok() {
                code::VALIDATION_FAILED
            } else {
                code::PARSE_FAILED
            };
            tag(error, code)
        })
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|error| {
                    let code = if is_bad_input_value(&error) { code::BAD_USER_INPUT } else { code::VALIDATION_FAILED };
                    tag(error, code)
                })
                .collect()
        })
    }

    /// Our resolvers cannot fail without a code: they return `ApiError`, which always carries one
    /// (and has no `Display`, so nothing converts into it silently), and the errors of the fields
    /// below this one were tagged by their own call of this hook. An error leaving a field without
    /// a code therefore comes from async-graphql reading the field's arguments: a value validation
    /// let through but coercion refused, such as an `Int` out of range.
    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        next.run(ctx, info).await.map_err(|error| tag(error, code::BAD_USER_INPUT))
    }
}

/// Refuses a request whose selected operation declares a non-null variable without a default
/// that the request gives no value (or `null`). Leaves the parsed document in the request, where
/// async-graphql takes it instead of parsing again; a document that does not parse, or selects
/// no operation, is left for async-graphql to report.
fn required_variables_are_given(request: &mut Request) -> Result<(), ServerError> {
    let name = request.operation_name.take();
    let variables = std::mem::take(&mut request.variables);
    let missing = match request.parsed_query() {
        Ok(document) => guard::select(document, name.as_deref()).ok().and_then(|operation| {
            operation.node.variable_definitions.iter().find_map(|definition| {
                let definition = &definition.node;
                let required = !definition.var_type.node.nullable && definition.default_value.is_none();
                let problem = match variables.get(&definition.name.node) {
                    _ if !required => return None,
                    None => "was not provided",
                    Some(Value::Null) => "must not be null",
                    Some(_) => return None,
                };
                let message = format!(
                    "variable \"${}\" of required type \"{}\" {problem}",
                    definition.name.node, definition.var_type.node
                );
                Some(refusal(code::BAD_USER_INPUT, message, Some(definition.name.pos)))
            })
        }),
        Err(_) => None,
    };
    request.operation_name = name;
    request.variables = variables;
    missing.map_or(Ok(()), Err)
}

fn tag(mut error: ServerError, code: &'static str) -> ServerError {
    let extensions = error.extensions.get_or_insert_with(Default::default);
    if extensions.get("code").is_none() {
        extensions.set("code", code);
    }
    error
}

/// True for the validation error async-graphql reports when an argument's value, written in the
/// query or passed in a variable, does not fit its type (an unknown enum value, a string for an
/// `Int`, a missing input field). Clients must be told that *their input* was wrong, not their
/// query.
///
/// The one place an error is told by its text: async-graphql 7.2 reports this from the same
/// validation pass as every other rule, as a bare message with no kind, no source and no
/// extension, so nothing but the message sets it apart. The message is that of its
/// `ArgumentsOfCorrectType` rule; a test below pins it, so a version that rewords it fails there
/// rather than in production.
fn is_bad_input_value(error: &ServerError) -> bool {
    error.message.starts_with("Invalid value for argument")
}

#[cfg(test)]
mod tests {
    use async_graphql::{EmptyMutation, EmptySubscription, Enum, Object, Schema};

    use super::*;

    #[derive(Enum, Clone, Copy, PartialEq, Eq)]
    enum Colour {
        Red,
    }

    struct Query;

    #[Object]
    impl Query {
        async fn paint(&self, colour: Colour, times: i32) -> bool {
            colour == Colour::Red && times > 0
        }
    }

    fn codes(query: &str, variables: serde_json::Value) -> Vec<(String, String)> {
        let schema = Schema::build(Query, EmptyMutation, EmptySubscription)
            .extension(Phases::default())
            .limit_recursive_depth(3)
            .finish();
        let request = async_graphql::Request::new(query).variables(Variables::from_json(variables));
        let response = futures::executor::block_on(schema.execute(request));
        response
            .errors
            .into_iter()
            .map(|e| {
                let code = e.extensions.as_ref().and_then(|x| x.get("code")).map(|c| c.to_string());
                (code.unwrap_or_default().trim_matches('"').to_owned(), e.message)
            })
            .collect()
    }

    #[test]
    fn bad_values_are_bad_user_input_in_the_query_and_in_variables() {
        // Pins async-graphql's message: if this fails after an upgrade, update `is_bad_input_value`.
        let literal = codes("{ paint(colour: BLUE, times: 1) }", serde_json::json!({}));
        assert_eq!(literal.len(), 1, "{literal:?}");
        assert_eq!(literal[0].0, "BAD_USER_INPUT", "{literal:?}");
        assert!(literal[0].1.starts_with("Invalid value for argument"), "{literal:?}");
        let variable = codes("query($t: Int!) { paint(colour: RED, times: $t) }", serde_json::json!({ "t": "x" }));
        assert_eq!(variable[0].0, "BAD_USER_INPUT", "{variable:?}");
    }

    #[test]
    fn coercion_failures_while_resolving_are_bad_user_input() {
        let errors = codes("{ paint(colour: RED, times: 99999999999) }", serde_json::json!({}));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "BAD_USER_INPUT", "{errors:?}");
    }

    #[test]
    fn a_required_variable_without_a_value_fails_the_request() {
        let q = "query($t: Int!, $c: Colour = RED) { paint(colour: $c, times: $t) }";
        for variables in [serde_json::json!({}), serde_json::json!({ "t": null })] {
            let errors = codes(q, variables);
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0].0, "BAD_USER_INPUT", "{errors:?}");
            assert!(errors[0].1.contains("\"$t\" of required type \"Int!\""), "{errors:?}");
        }
        assert!(codes(q, serde_json::json!({ "t": 1 })).is_empty());
        let named = "query A($t: Int!) { paint(colour: RED, times: $t) } query B { paint(colour: RED, times: 1) }";
        let schema = Schema::build(Query, EmptyMutation, EmptySubscription).extension(Phases::default()).finish();
        let response =
            futures::executor::block_on(schema.execute(async_graphql::Request::new(named).operation_name("B")));
        assert!(response.errors.is_empty(), "only the selected operation's variables count: {:?}", response.errors);
    }

    #[test]
    fn other_validation_failures_are_validation_failed() {
        let errors = codes("query($unused: Int) { paint(colour: RED, times: 1) nope }", serde_json::json!({}));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.iter().all(|(code, _)| code == "GRAPHQL_VALIDATION_FAILED"), "{errors:?}");
    }

    #[test]
    fn parse_phase_failures_are_told_apart_without_reading_messages() {
        assert_eq!(codes("{ paint(", serde_json::json!({}))[0].0, "GRAPHQL_PARSE_FAILED");
        let deep = "{ ... { ... { ... { ... { paint(colour: RED, times: 1) } } } } }";
        assert_eq!(codes(deep, serde_json::json!({}))[0].0, "GRAPHQL_VALIDATION_FAILED", "the recursion limit");
    }
}
