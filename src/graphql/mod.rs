//! The GraphQL API: schema and resolvers, the one operation runner, and the transports (HTTP,
//! graphql-ws, and graphql-sse) that frame what it produces.
//!
//! - [`schema`], with the resolvers `query`, `mutation` and `subscription` (and [`context`], what
//!   they read from a request); [`error`] and [`phases`]: every error leaves with a code;
//! - [`guard`] and [`documents`]: requests are checked and parsed once per distinct text;
//! - [`operations`]: the runner every transport uses, from a prepared request to the item
//!   handed to the transport; [`source`], the one thing a subscription resolver asks for (the
//!   events of its key); [`fanout`], identical subscriptions sharing one execution and resumes
//!   from one place sharing one replay;
//! - the transports: [`http`], [`ws`], [`sse`]; [`state`], what they are served with.

pub mod context;
pub mod documents;
pub mod error;
pub mod fanout;
pub mod guard;
pub mod http;
mod mutation;
pub mod operations;
pub mod phases;
mod query;
pub mod schema;
pub mod source;
pub mod sse;
pub mod state;
mod subscription;
pub mod ws;

use axum::Router;
use axum::routing::{any, get};

pub use mutation::Mutation;
pub use query::Query;
pub use schema::{AppSchema, sdl};
pub use state::GraphqlState;
pub use subscription::Subscription;

/// `/graphql` (queries and mutations over HTTP, GraphiQL, graphql-ws), `/graphql/stream`
/// (graphql-sse) and GraphiQL's files.
pub fn router(state: GraphqlState) -> Router {
    Router::new()
        .route("/graphql", get(http::get_or_upgrade).post(http::post))
        .route("/graphql/stream", any(sse::handle))
        .route("/graphiql/{file}", get(http::asset))
        .with_state(state)
}
