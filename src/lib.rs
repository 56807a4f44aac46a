//! herd: an application-server herd for rapidly changing client locations.
//!
//! Pure core (parsing, formatting, the newest-wins store, the flooding
//! rule) with tasks, sockets and timers at the edges.

pub mod admin;
pub mod certs;
pub mod client;
pub mod config;
pub mod flood;
pub mod location;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod places;
pub mod report;
pub mod request;
pub mod server;
pub mod store;
pub mod timestamp;
pub mod tls;
pub mod transport;
