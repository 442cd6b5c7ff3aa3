//! The GraphQL API: schema, resolvers, and the transports (HTTP, graphql-ws, and graphql-sse).

pub mod error;
pub mod fanout;
pub mod guard;
pub mod http;
mod mutation;
pub mod phases;
mod query;
pub mod sse;
mod subscription;
pub mod ws;

use std::sync::Arc;

use async_graphql::{Context, SDLExportOptions, Schema};

use crate::auth::{User, Viewer};
use crate::budget::ClientAddr;
use crate::commerce::Commerce;
use crate::config::Config;
use crate::registry::Registry;
use crate::rooms::Rooms;
use crate::store::Reader;
use error::{ApiError, ApiResult};
pub use mutation::Mutation;
pub use query::Query;
pub use subscription::{EventPosition, ResumeFrom, Subscription};

pub type AppSchema = Schema<Query, Mutation, Subscription>;

/// Per-subscriber settings the subscription resolvers read from the schema's data.
#[derive(Debug, Clone, Copy)]
pub struct SubscriberSettings {
    pub queue: usize,
}

/// Builds the schema once; every transport executes against it.
pub fn build_schema(config: &Config, commerce: Arc<Commerce>, registry: Registry, rooms: Rooms) -> AppSchema {
    Schema::build(Query, Mutation, Subscription)
        .data(commerce)
        .data(registry)
        .data(rooms)
        .data(SubscriberSettings { queue: config.subscriber_queue })
        .limit_depth(config.query_max_depth)
        .limit_complexity(config.query_max_complexity)
        .limit_directives(config.query_max_directives)
        .limit_recursive_depth(guard::MAX_RECURSIVE_DEPTH)
        .extension(phases::Phases::default())
        .finish()
}

/// The SDL as `switchboard schema` prints it and `schema/schema.graphql` stores it.
pub fn sdl() -> String {
    Schema::build(Query, Mutation, Subscription).finish().sdl_with_options(SDLExportOptions::new().sorted_fields())
}

fn viewer<'a>(ctx: &'a Context<'_>) -> Option<&'a User> {
    ctx.data_opt::<Viewer>().and_then(Option::as_ref)
}

fn require_user<'a>(ctx: &'a Context<'_>) -> ApiResult<&'a User> {
    viewer(ctx).ok_or(ApiError::Unauthenticated)
}

fn require_staff<'a>(ctx: &'a Context<'_>) -> ApiResult<&'a User> {
    let user = require_user(ctx)?;
    if user.is_staff() { Ok(user) } else { Err(ApiError::forbidden("this operation needs the staff or admin role")) }
}

/// Whom this request's store reads are for: the viewer, or the anonymous client's address (see
/// [`crate::store::Reader`]). Every transport puts the client's address in the request's data.
fn reader(ctx: &Context<'_>) -> Reader {
    match viewer(ctx) {
        Some(_) => Reader::SignedIn,
        None => Reader::Anonymous(ctx.data_opt::<ClientAddr>().map_or(ClientAddr::NOWHERE, |c| c.0)),
    }
}

fn commerce<'a>(ctx: &'a Context<'_>) -> &'a Arc<Commerce> {
    ctx.data_unchecked::<Arc<Commerce>>()
}

/// `first` arguments: an explicit null means the default; never negative; capped so that one
/// request cannot ask for everything.
fn page_size(first: Option<i32>, default: i32) -> ApiResult<i64> {
    let first = first.unwrap_or(default);
    if first < 0 {
        return Err(ApiError::BadInput("first must not be negative".into()));
    }
    Ok(i64::from(first.min(1000)))
}
