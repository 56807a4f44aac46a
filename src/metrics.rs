//! What a node counts, for `/metrics` (Prometheus text) and `/peers`.
//!
//! Counters are cheap atomic handles resolved once, so the client and peer
//! hot paths only add to them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::Serialize;

type Labels = Vec<(String, String)>;

pub struct Metrics {
    registry: Registry,
    pub client_connections: Gauge,
    pub iamat: Counter,
    pub whatsat: Counter,
    pub invalid: Counter,
    /// Updates from neighbours that won here / that did not.
    pub updates_received: Counter,
    pub updates_stale: Counter,
    /// Update copies read for neighbours after their catch-up.
    pub updates_forwarded: Counter,
    /// Copies not read for a neighbour because it sent us the same report
    /// while ours waited.
    pub updates_skipped: Counter,
    pub links_up: Gauge,
    pub link_connects: Counter,
    pub link_failures: Counter,
    pub link_refusals: Counter,
    /// Reports sent to neighbours to catch them up when links came up.
    pub anti_entropy_items: Counter,
    pub places_seconds: Histogram,
    pub places_errors: Counter,
    pub places_cache_hits: Counter,
    peers: Mutex<BTreeMap<String, PeerStatus>>,
}

/// One neighbour's link as `/peers` shows it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PeerStatus {
    pub state: LinkState,
    /// Unix seconds of the last change of state.
    pub since: f64,
    pub remote: Option<String>,
    pub round_trip_ms: Option<f64>,
    pub messages_in: u64,
    /// Frames (and below, bytes) handed to the link's transport, counted
    /// as the write begins; a write that then fails is still counted.
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub last_error: Option<String>,
    /// Which link the status is of, so a replaced link's end does not mark
    /// its successor down.
    #[serde(skip)]
    link: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    #[default]
    Down,
    Up,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(&[])
    }
}

impl Metrics {
    /// Metrics for a node with these neighbours (listed in `/peers` from
    /// the start, as down).
    pub fn new(neighbours: &[String]) -> Metrics {
        let mut registry = Registry::with_prefix("herd");
        let client_connections = Gauge::default();
        registry.register(
            "client_connections",
            "Client connections open",
            client_connections.clone(),
        );
        let requests = Family::<Labels, Counter>::default();
        registry.register("requests", "Client lines by kind", requests.clone());
        let kind = |k: &str| {
            requests
                .get_or_create(&vec![("kind".into(), k.into())])
                .clone()
        };
        let (iamat, whatsat, invalid) = (kind("iamat"), kind("whatsat"), kind("invalid"));
        let updates = Family::<Labels, Counter>::default();
        registry.register("updates", "Location updates by outcome", updates.clone());
        let outcome = |k: &str| {
            updates
                .get_or_create(&vec![("outcome".into(), k.into())])
                .clone()
        };
        let links = Family::<Labels, Counter>::default();
        registry.register("link_events", "Peer link events", links.clone());
        let event = |k: &str| {
            links
                .get_or_create(&vec![("event".into(), k.into())])
                .clone()
        };
        let links_up = Gauge::default();
        registry.register("links_up", "Peer links up", links_up.clone());
        let anti_entropy_items = Counter::default();
        registry.register(
            "anti_entropy_items",
            "Reports sent to catch neighbours up",
            anti_entropy_items.clone(),
        );
        let places_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "places_search_seconds",
            "Time to answer a places search",
            places_seconds.clone(),
        );
        let places_errors = Counter::default();
        registry.register(
            "places_errors",
            "Places searches answered with an error status",
            places_errors.clone(),
        );
        let places_cache_hits = Counter::default();
        registry.register(
            "places_cache_hits",
            "Places searches answered from the cache",
            places_cache_hits.clone(),
        );
        let peers = neighbours
            .iter()
            .map(|n| {
                (
                    n.clone(),
                    PeerStatus {
                        since: now(),
                        ..PeerStatus::default()
                    },
                )
            })
            .collect();
        Metrics {
            registry,
            client_connections,
            iamat,
            whatsat,
            invalid,
            updates_received: outcome("received"),
            updates_stale: outcome("stale"),
            updates_forwarded: outcome("forwarded"),
            updates_skipped: outcome("skipped"),
            links_up,
            link_connects: event("connected"),
            link_failures: event("failed"),
            link_refusals: event("refused"),
            anti_entropy_items,
            places_seconds,
            places_errors,
            places_cache_hits,
            peers: Mutex::new(peers),
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PeerStatus>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every neighbour's link.
    pub fn peer_statuses(&self) -> BTreeMap<String, PeerStatus> {
        self.peers().clone()
    }

    /// Link `link` to `peer` came up.
    pub fn link_up(&self, peer: &str, link: u64, remote: SocketAddr) {
        self.links_up.inc();
        self.link_connects.inc();
        let mut peers = self.peers();
        let status = peers.entry(peer.to_string()).or_default();
        *status = PeerStatus {
            state: LinkState::Up,
            since: now(),
            remote: Some(remote.to_string()),
            last_error: status.last_error.take(),
            link,
            ..PeerStatus::default()
        };
    }

    /// Link `link` to `peer` ended.
    pub fn link_down(&self, peer: &str, link: u64, reason: &str) {
        self.links_up.dec();
        let mut peers = self.peers();
        let status = peers.entry(peer.to_string()).or_default();
        if status.link != link {
            return;
        }
        status.state = LinkState::Down;
        status.since = now();
        status.last_error = Some(reason.to_string());
    }

    /// A dial or an incoming link that failed before coming up.
    pub fn link_failed(&self, peer: Option<&str>, reason: &str) {
        self.link_failures.inc();
        if let Some(peer) = peer {
            if let Some(status) = self.peers().get_mut(peer) {
                status.last_error = Some(reason.to_string());
            }
        }
    }

    /// Traffic on `peer`'s link: messages and bytes in and out.
    pub fn traffic(
        &self,
        peer: &str,
        messages_in: u64,
        bytes_in: u64,
        messages_out: u64,
        bytes_out: u64,
    ) {
        if let Some(status) = self.peers().get_mut(peer) {
            status.messages_in += messages_in;
            status.bytes_in += bytes_in;
            status.messages_out += messages_out;
            status.bytes_out += bytes_out;
        }
    }

    pub fn round_trip(&self, peer: &str, rtt: Duration) {
        if let Some(status) = self.peers().get_mut(peer) {
            status.round_trip_ms = Some(rtt.as_secs_f64() * 1000.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text_with_labels() {
        let m = Metrics::new(&["Bona".into()]);
        m.iamat.inc();
        m.updates_forwarded.inc_by(3);
        m.places_seconds.observe(0.002);
        let text = m.render();
        assert!(
            text.contains("herd_requests_total{kind=\"iamat\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("herd_updates_total{outcome=\"forwarded\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("herd_places_search_seconds_count 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn peer_status_follows_the_link() {
        let m = Metrics::new(&["Bona".into()]);
        assert_eq!(m.peer_statuses()["Bona"].state, LinkState::Down);
        m.link_up("Bona", 1, "127.0.0.1:1".parse().unwrap());
        m.traffic("Bona", 2, 100, 1, 50);
        m.round_trip("Bona", Duration::from_micros(1500));
        let s = &m.peer_statuses()["Bona"];
        assert_eq!(
            (s.state, s.messages_in, s.bytes_out),
            (LinkState::Up, 2, 50)
        );
        assert_eq!(s.round_trip_ms, Some(1.5));
        // A replaced link ending does not mark its successor down.
        m.link_up("Bona", 2, "127.0.0.1:2".parse().unwrap());
        m.link_down("Bona", 1, "cut");
        assert_eq!(m.peer_statuses()["Bona"].state, LinkState::Up);
        m.link_down("Bona", 2, "peer closed the link");
        let s = &m.peer_statuses()["Bona"];
        assert_eq!(s.state, LinkState::Down);
        assert_eq!(s.last_error.as_deref(), Some("peer closed the link"));
        assert_eq!(m.links_up.get(), 0);
        assert_eq!(m.link_connects.get(), 2);
    }
}
