//! What the GraphQL transports are served with: the operation runner, and what a transport needs
//! around it (tokens, admission, the SSE reservations, shutdown). One pointer, because every
//! connection holds it.

use std::ops::Deref;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::operations::Runner;
use super::sse::reservations::Reservations;
use crate::auth::Keys;
use crate::config::Config;
use crate::connections::Connections;

/// The state of the GraphQL routes; cheap to clone.
#[derive(Clone)]
pub struct GraphqlState(Arc<Parts>);

pub struct Parts {
    pub runner: Runner,
    pub keys: Arc<Keys>,
    pub config: Arc<Config>,
    /// Who may connect: every socket and stream is admitted there.
    pub connections: Connections,
    /// Single-connection reservations of GraphQL over SSE.
    pub sse: Reservations,
    /// Pre-filled into GraphiQL in `--demo` mode.
    pub graphiql_token: Option<String>,
    /// Cancelled at shutdown; every socket loop and stream watches it.
    pub shutdown: CancellationToken,
    /// Tracks socket tasks so that shutdown can wait for their close handshakes.
    pub tracker: TaskTracker,
}

impl GraphqlState {
    pub fn new(parts: Parts) -> Self {
        Self(Arc::new(parts))
    }

    /// `--demo` mode, where GraphiQL offers a demo token and links to the demo pages.
    pub fn demo(&self) -> bool {
        self.graphiql_token.is_some()
    }
}

impl Deref for GraphqlState {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}
