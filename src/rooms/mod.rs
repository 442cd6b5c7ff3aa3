//! The room channel at `/ws`: rooms, presence, typing indicators and entity relays.

pub mod access;
mod registry;

pub use registry::Rooms;
