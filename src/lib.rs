//! Switchboard: a real-time GraphQL server for commerce apps.
//!
//! The binary (`src/main.rs`) is a thin shell over this library: it reads the configuration,
//! sets up telemetry and runs [`app::Application`] until a signal arrives. Library code never
//! reads the environment or binds sockets on its own, so tests build servers on port 0 at will.
//!
//! - the process: [`app`] (each module's routes and state, served until shutdown), [`config`],
//!   [`telemetry`];
//! - the edge: [`server`] (HTTP connections and their deadlines), [`http`] (the layers every
//!   request passes, the error every HTTP refusal is, `/health`, `/ready`, `/metrics`),
//!   [`socket`] (the one WebSocket loop), [`auth`] (tokens), [`connections`] (who is connected,
//!   who may connect, what a stranger may hold);
//! - the channels: [`graphql`] (HTTP, graphql-ws, SSE), [`rooms`] (`/ws`), [`console`];
//! - the data path: [`commerce`] (the changes clients make), [`store`] (SQLite or PostgreSQL),
//!   [`events`] (the log that keeps every change, the broker that routes it live, the rule for
//!   every queue), [`cluster`] (several nodes as one, through Redis).

pub mod app;
pub mod auth;
pub mod cluster;
pub mod commerce;
pub mod config;
pub mod connections;
pub mod console;
pub mod events;
pub mod graphql;
pub mod http;
pub mod lock;
pub mod rooms;
pub mod server;
pub mod socket;
pub mod store;
pub mod telemetry;
