//! The admin endpoint over real HTTP: health, Prometheus metrics, and the
//! per-link view, including how a neighbour's shutdown shows there.

mod common;

use common::{until, Client, Herd};
use herd::config::TransportKind;
use serde_json::Value;

const PAIR: &[(&str, &[&str])] = &[("Clark", &["Jaquez"]), ("Jaquez", &["Clark"])];

async fn get(url: String) -> reqwest::Response {
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    response
}

async fn json(url: String) -> Value {
    get(url).await.json().await.unwrap()
}

async fn metrics(herd: &Herd, node: &str) -> String {
    let response = get(format!("{}/metrics", herd.admin_url(node))).await;
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    response.text().await.unwrap()
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_names_the_node_and_its_links() {
    let herd = Herd::start(TransportKind::Tcp, PAIR).await;
    herd.settled().await;
    let health = json(format!("{}/healthz", herd.admin_url("Clark"))).await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["node"], "Clark");
    assert_eq!(health["links_up"], 1);
    assert_eq!(health["neighbours"], 1);
    herd.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_updates_and_links() {
    let herd = Herd::start(TransportKind::Quic, PAIR).await;
    herd.settled().await;
    let mut c = Client::connect(herd.client_addr("Clark")).await;
    let at = c.ask("IAMAT m1 +1+1 1").await;
    c.ask("IAMAT m1 +1+1 0").await; // stale: answered, not forwarded
    c.ask("nonsense").await;
    c.send(b"WHATSAT m1 1 1\n").await;
    c.whatsat_reply().await;
    herd.holds("Jaquez", b"m1", at.as_bytes()).await;

    let clark = metrics(&herd, "Clark").await;
    assert_eq!(value(&clark, "herd_requests_total{kind=\"iamat\"}"), 2.0);
    assert_eq!(value(&clark, "herd_requests_total{kind=\"invalid\"}"), 1.0);
    assert_eq!(value(&clark, "herd_requests_total{kind=\"whatsat\"}"), 1.0);
    assert_eq!(
        value(&clark, "herd_updates_total{outcome=\"forwarded\"}"),
        1.0
    );
    assert_eq!(value(&clark, "herd_links_up"), 1.0);
    assert_eq!(value(&clark, "herd_clients_known"), 1.0);
    assert_eq!(value(&clark, "herd_places_search_seconds_count"), 1.0);
    assert!(value(&clark, "herd_client_connections") >= 1.0);
    let jaquez = metrics(&herd, "Jaquez").await;
    assert_eq!(
        value(&jaquez, "herd_updates_total{outcome=\"received\"}"),
        1.0
    );
    herd.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_show_each_link_and_why_it_went_down() {
    let mut herd = Herd::start(TransportKind::Tcp, PAIR).await;
    herd.settled().await;
    let mut c = Client::connect(herd.client_addr("Clark")).await;
    let at = c.ask("IAMAT p1 +1+1 1").await;
    herd.holds("Jaquez", b"p1", at.as_bytes()).await;

    let peers = json(format!("{}/peers", herd.admin_url("Clark"))).await;
    let link = &peers["peers"]["Jaquez"];
    assert_eq!(link["state"], "up");
    assert!(link["remote"].as_str().unwrap().starts_with("127.0.0.1:"));
    // At least the frame with the update (the first ping may still wait
    // for the timer, or ride with it).
    assert!(link["messages_out"].as_u64().unwrap() >= 1, "{link}");
    assert!(
        link["bytes_out"].as_u64().unwrap() > at.len() as u64,
        "{link}"
    );

    // A neighbour that shuts down says why, and the link shows it.
    herd.stop("Jaquez").await;
    until(herd.hub("Clark"), |hub| hub.attached().is_empty()).await;
    let peers = json(format!("{}/peers", herd.admin_url("Clark"))).await;
    let link = &peers["peers"]["Jaquez"];
    assert_eq!(link["state"], "down");
    assert_eq!(
        link["last_error"], "peer closed the link: node shutting down",
        "{link}"
    );
    herd.shutdown().await;
}
