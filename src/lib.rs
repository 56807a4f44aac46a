//! herd: an application-server herd for rapidly changing client locations.
//!
//! Pure core (parsing, formatting, the newest-wins store, the flooding
//! rule) with tasks, sockets and timers at the edges.

pub mod certs;
pub mod config;
pub mod location;
pub mod places;
pub mod report;
pub mod request;
pub mod store;
pub mod timestamp;
