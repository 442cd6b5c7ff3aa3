//! The operator console (`/console`) and the rooms demo (`/demo/rooms`): plain pages served from
//! the binary, and the two staff-only subscriptions the console lives on.
//!
//! - [`snapshot`]: `serverStats`, periodic snapshots (connections, subscriptions, event rates,
//!   slow consumers, the busiest rooms with their members and who is typing);
//! - [`tail`]: `eventTail`, every published event, thinned to what a person can read;
//! - [`pages`]: the HTML, CSS and JavaScript (no build step, no CDN), and the demo's tokens.
//!
//! The console is live through Switchboard's own subscriptions, like any client, so it needs no
//! endpoint of its own beyond its files, and the same authorization applies: staff and admins only (customers
//! get FORBIDDEN, anonymous viewers UNAUTHENTICATED).

pub mod pages;
pub mod snapshot;
pub mod tail;
