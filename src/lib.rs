//! Switchboard: a real-time GraphQL server for commerce apps.
//!
//! The binary (`src/main.rs`) is a thin shell over this library: it reads the configuration,
//! sets up telemetry and runs [`app::Application`] until a signal arrives. Library code never
//! reads the environment or binds sockets on its own, so tests build servers on port 0 at will.

pub mod app;
pub mod auth;
pub mod body_limit;
pub mod budget;
pub mod cluster;
pub mod commerce;
pub mod config;
pub mod console;
pub mod demo;
pub mod event_log;
pub mod graphql;
pub mod http_error;
pub mod lock;
pub mod model;
pub mod ops;
pub mod origins;
pub mod pubsub;
pub mod registry;
pub mod rooms;
pub mod server;
pub mod slow_consumer;
pub mod socket;
pub mod store;
pub mod telemetry;
