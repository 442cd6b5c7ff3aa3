//! Many nodes as one: the Redis backplane that carries events between nodes ([`backplane`]) in
//! the store's commit order ([`sequencer`]), and presence for the whole cluster ([`presence`]).

pub mod backplane;
pub mod presence;
pub mod sequencer;

pub use backplane::{Backplane, BackplaneError};

/// This node's name when `NODE_ID` is not set: the host name and a random suffix, so that two
/// processes on one host (a local cluster) differ.
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    format!("{host}-{suffix}")
}
