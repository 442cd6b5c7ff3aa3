//! The operator console's side of the server.
//!
//! - [`counters`]: a node's counters, read from the atomics the server keeps anyway, and carried
//!   in a cluster node's heartbeat so that each console shows every node.

pub mod counters;
