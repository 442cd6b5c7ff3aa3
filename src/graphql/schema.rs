//! The schema: built once, with what its resolvers read (the commerce layer, who is connected,
//! the rooms) and the limits every request is held to; every transport executes against it.

use std::sync::Arc;

use async_graphql::{SDLExportOptions, Schema};

use super::mutation::Mutation;
use super::query::Query;
use super::subscription::Subscription;
use super::{guard, phases};
use crate::commerce::Commerce;
use crate::config::Config;
use crate::connections::Connections;
use crate::rooms::Rooms;

pub type AppSchema = Schema<Query, Mutation, Subscription>;

/// Builds the schema once.
pub fn build(config: &Config, commerce: Arc<Commerce>, connections: Connections, rooms: Rooms) -> AppSchema {
    Schema::build(Query, Mutation, Subscription)
        .data(commerce)
        .data(connections)
        .data(rooms)
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
