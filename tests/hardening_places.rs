//! A real node in front of a places upstream that misbehaves: slow, huge,
//! not JSON, or not there. WHATSAT still answers in the legacy error shape
//! within `places.timeout`, other clients never wait on it, and the cache in
//! front of the upstream turns identical searches into one upstream request.

mod common;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

use common::Client;
use herd::config::{Config, TransportKind};
use herd::node::{BoundNode, RunningNode};

const KEY: &str = "hardening-KEY-0123456789";

/// `places.timeout` of the nodes here.
const PLACES_TIMEOUT: Duration = Duration::from_secs(1);

/// `places.max_body` of the nodes here: small, so that reading up to it
/// from many upstream requests at once is quick even in a debug build.
const MAX_BODY: usize = 256 * 1024;

/// What a WHATSAT reply may take beyond `places.timeout` (a debug build on
/// a busy two-core machine).
const SLACK: Duration = Duration::from_millis(750);

/// Longest IAMAT round trip allowed to a client that does not use places.
const IAMAT_BOUND: Duration = Duration::from_millis(500);

/// One test at a time: latencies measured here are the node's, not those of
/// the other tests' nodes and mock servers sharing the machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Debug, Clone, Copy)]
enum Kind {
    New,
    Legacy,
}

const BOTH: [Kind; 2] = [Kind::New, Kind::Legacy];

struct Node {
    _dir: TempDir,
    node: RunningNode,
    addr: SocketAddr,
}

impl Node {
    /// A one-node herd whose places are `kind` at `url`, behind a cache with
    /// `cache_ttl` (a humantime string; "0s" turns it off).
    async fn start(kind: Kind, url: &str, cache_ttl: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let provider = match kind {
            Kind::New => "google",
            Kind::Legacy => "google-legacy",
        };
        let extra = format!(
            "[places]\nprovider = \"{provider}\"\nkey = \"{KEY}\"\nurl = \"{url}\"\n\
             timeout = \"{}ms\"\nmax_body = {MAX_BODY}\ncache_ttl = \"{cache_ttl}\"\n\
             cache_entries = 1000\n",
            PLACES_TIMEOUT.as_millis()
        );
        let text = common::config_text(TransportKind::Tcp, &[("Clark", &[])], &extra);
        let config = Config::from_toml(&text, &dir.path().join("herd.toml")).unwrap();
        let bound = BoundNode::bind(&config, "Clark").await.unwrap();
        let addr = bound.client_addr();
        let node = bound.start(Arc::new(config)).unwrap();
        Node {
            _dir: dir,
            node,
            addr,
        }
    }
}

fn now_text() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

/// Reports `client` at UCLA and returns the AT line.
async fn iamat(addr: SocketAddr, client: &str) -> String {
    let mut c = Client::connect(addr).await;
    let at = c
        .ask(&format!(
            "IAMAT {client} +34.068930-118.445127 {}",
            now_text()
        ))
        .await;
    assert!(at.starts_with("AT Clark "), "{at}");
    at
}

/// IAMAT round trips on one connection until `stop`: how many, and the
/// slowest.
async fn probe(addr: SocketAddr, stop: CancellationToken) -> (usize, Duration) {
    let mut c = Client::connect(addr).await;
    let mut worst = Duration::ZERO;
    let mut count = 0;
    // At least one, however soon the stop comes.
    while count < 10_000 {
        let line = format!("IAMAT probe +1+1 {}", now_text());
        let started = Instant::now();
        let reply = c.ask(&line).await;
        worst = worst.max(started.elapsed());
        count += 1;
        assert!(reply.starts_with("AT Clark "), "{reply}");
        if stop.is_cancelled() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (count, worst)
}

/// A legacy-shaped failure with `status`, no key, and an error message
/// holding one of `said` (any message when `said` is empty).
fn assert_failure(reply: &Value, status: &str, said: &[&str]) {
    assert_eq!(reply["status"], status, "{reply:#}");
    assert_eq!(reply["results"], json!([]), "{reply:#}");
    assert_eq!(reply["html_attributions"], json!([]), "{reply:#}");
    let message = reply["error_message"].as_str().expect("error_message");
    assert!(!message.trim().is_empty(), "{reply:#}");
    assert!(
        said.is_empty() || said.iter().any(|s| message.contains(s)),
        "{message:?} says none of {said:?}"
    );
    assert!(!reply.to_string().contains(KEY), "key leaked: {reply}");
}

/// Connections that each pipeline this many WHATSATs (the per-connection
/// in-flight limit), all for different radii so none is coalesced.
const CONNECTIONS: usize = 8;
const PER_CONNECTION: usize = 4;

/// Against a node whose upstream is at `url`: many WHATSATs all fail with
/// `status` and a message saying one of `said`, within `places.timeout`,
/// while a probe's IAMATs stay fast. Returns the slowest WHATSAT reply and
/// the slowest probe round trip.
async fn fails_in_time(
    kind: Kind,
    url: &str,
    status: &'static str,
    said: &'static [&'static str],
) -> (Duration, Duration) {
    let node = Node::start(kind, url, "60s").await;
    let at = iamat(node.addr, "kiwi.cs.ucla.edu").await;
    let stop = CancellationToken::new();
    let prober = tokio::spawn(probe(node.addr, stop.clone()));
    let started = Instant::now();
    let mut askers = JoinSet::new();
    for c in 0..CONNECTIONS {
        let addr = node.addr;
        let at = at.clone();
        askers.spawn(async move {
            let mut client = Client::connect(addr).await;
            for r in 0..PER_CONNECTION {
                let radius = 1 + c * PER_CONNECTION + r;
                client
                    .send(format!("WHATSAT kiwi.cs.ucla.edu {radius} 5\n").as_bytes())
                    .await;
            }
            let mut worst = Duration::ZERO;
            for _ in 0..PER_CONNECTION {
                let (line, reply) = client.whatsat_reply().await;
                worst = worst.max(started.elapsed());
                assert_eq!(line, at);
                assert_failure(&reply, status, said);
            }
            worst
        });
    }
    let worst_whatsat = askers.join_all().await.into_iter().max().unwrap();
    stop.cancel();
    let (probes, worst_probe) = prober.await.unwrap();
    eprintln!(
        "{kind:?} {said:?}: slowest WHATSAT {worst_whatsat:?} (timeout {PLACES_TIMEOUT:?}), \
         {probes} probe IAMATs, slowest {worst_probe:?}"
    );
    assert!(
        worst_whatsat < PLACES_TIMEOUT + SLACK,
        "WHATSAT took {worst_whatsat:?}"
    );
    assert!(probes > 0);
    assert!(worst_probe < IAMAT_BOUND, "IAMAT took {worst_probe:?}");
    node.node.shutdown().await;
    (worst_whatsat, worst_probe)
}

/// A mock upstream that answers everything with `response`.
async fn upstream(response: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(response)
        .mount(&server)
        .await;
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_times_out_in_the_legacy_shape_and_stalls_no_one() {
    let _serial = SERIAL.lock().await;
    for kind in BOTH {
        let slow = ResponseTemplate::new(200)
            .set_body_json(json!({"places": [], "results": [], "status": "ZERO_RESULTS"}))
            .set_delay(Duration::from_secs(10));
        let server = upstream(slow).await;
        let (worst, _) = fails_in_time(
            kind,
            &server.uri(),
            "UNKNOWN_ERROR",
            &["timed out", "did not answer"],
        )
        .await;
        assert!(
            worst >= PLACES_TIMEOUT - Duration::from_millis(50),
            "answered before the timeout: {worst:?}"
        );
    }
}

/// An HTTP server that answers every request with 10 MB of spaces, written
/// as fast as they are read: with a `content-length`, or chunked (no length
/// announced). Hand-made rather than wiremock, so that the upstream itself
/// is fast in a debug build.
async fn ten_megabytes(announce_length: bool) -> (String, JoinSet<()>) {
    const SIZE: usize = 10 << 20;
    const CHUNK: usize = 64 * 1024;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        let mut conns = JoinSet::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            conns.spawn(async move {
                let mut request = vec![0u8; 64 * 1024];
                let _ = stream.read(&mut request).await;
                let framing = if announce_length {
                    format!("content-length: {SIZE}")
                } else {
                    "transfer-encoding: chunked".to_string()
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{framing}\r\n\r\n"
                );
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let mut chunk = Vec::new();
                if !announce_length {
                    chunk.extend_from_slice(format!("{CHUNK:x}\r\n").as_bytes());
                }
                chunk.extend_from_slice(&[b' '; CHUNK]);
                if !announce_length {
                    chunk.extend_from_slice(b"\r\n");
                }
                for _ in 0..SIZE / CHUNK {
                    if stream.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                if !announce_length {
                    let _ = stream.write_all(b"0\r\n\r\n").await;
                }
            });
        }
    });
    (url, tasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_megabyte_body_is_refused_in_the_legacy_shape() {
    let _serial = SERIAL.lock().await;
    for kind in BOTH {
        let (url, server) = ten_megabytes(true).await;
        fails_in_time(kind, &url, "UNKNOWN_ERROR", &["larger than"]).await;
        drop(server);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_megabyte_body_without_a_length_is_cut_in_the_legacy_shape() {
    let _serial = SERIAL.lock().await;
    for kind in BOTH {
        let (url, server) = ten_megabytes(false).await;
        fails_in_time(kind, &url, "UNKNOWN_ERROR", &["larger than"]).await;
        drop(server);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_is_not_json_fails_in_the_legacy_shape() {
    let _serial = SERIAL.lock().await;
    for kind in BOTH {
        let junk = ResponseTemplate::new(200)
            .insert_header("content-type", "application/json")
            .set_body_string("<html>{\"places\": [oops");
        let server = upstream(junk).await;
        fails_in_time(kind, &server.uri(), "UNKNOWN_ERROR", &["not JSON"]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_refuses_connections_fails_in_the_legacy_shape() {
    let _serial = SERIAL.lock().await;
    // A port that was free a moment ago: connections to it are refused.
    let port = StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for kind in BOTH {
        let url = format!("http://127.0.0.1:{port}");
        fails_in_time(kind, &url, "UNKNOWN_ERROR", &["could not connect"]).await;
    }
}

fn new_api_places() -> Value {
    json!({"places": [
        {
            "id": "ChIJroyce",
            "displayName": {"text": "Royce Hall"},
            "location": {"latitude": 34.0729, "longitude": -118.4421},
        },
        {
            "id": "ChIJpowell",
            "displayName": {"text": "Powell Library"},
            "location": {"latitude": 34.0716, "longitude": -118.4422},
        },
    ]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_whatsats_within_the_ttl_make_one_upstream_request() {
    let _serial = SERIAL.lock().await;
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(new_api_places()))
        .expect(2)
        .mount(&server)
        .await;
    let node = Node::start(Kind::New, &server.uri(), "60s").await;
    let at = iamat(node.addr, "kiwi.cs.ucla.edu").await;
    let mut client = Client::connect(node.addr).await;
    client.send(b"WHATSAT kiwi.cs.ucla.edu 10 5\n").await;
    let first = client.whatsat_reply().await;
    // Another connection, the same search: from the cache.
    let mut other = Client::connect(node.addr).await;
    other.send(b"WHATSAT kiwi.cs.ucla.edu 10 5\n").await;
    let second = other.whatsat_reply().await;
    assert_eq!(first, second);
    assert_eq!(first.0, at);
    assert_eq!(first.1["status"], "OK");
    assert_eq!(first.1["results"].as_array().unwrap().len(), 2);
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    // A different bound is a different search.
    client.send(b"WHATSAT kiwi.cs.ucla.edu 10 1\n").await;
    let (_, cut) = client.whatsat_reply().await;
    assert_eq!(cut["results"].as_array().unwrap().len(), 1);
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
    node.node.shutdown().await;
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_identical_whatsats_make_one_upstream_request() {
    let _serial = SERIAL.lock().await;
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(new_api_places())
                .set_delay(Duration::from_millis(300)),
        )
        .expect(1)
        .mount(&server)
        .await;
    let node = Node::start(Kind::New, &server.uri(), "60s").await;
    let at = iamat(node.addr, "kiwi.cs.ucla.edu").await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(Client::connect(node.addr).await);
    }
    for client in &mut clients {
        client.send(b"WHATSAT kiwi.cs.ucla.edu 10 5\n").await;
    }
    let mut replies = Vec::new();
    for client in &mut clients {
        replies.push(client.whatsat_reply().await);
    }
    assert!(replies.iter().all(|r| *r == replies[0]));
    assert_eq!(replies[0].0, at);
    assert_eq!(replies[0].1["status"], "OK");
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    node.node.shutdown().await;
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_upstream_answers_are_not_cached() {
    let _serial = SERIAL.lock().await;
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(503).set_body_string("try later"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(new_api_places()))
        .expect(1)
        .mount(&server)
        .await;
    let node = Node::start(Kind::New, &server.uri(), "60s").await;
    iamat(node.addr, "kiwi.cs.ucla.edu").await;
    let mut client = Client::connect(node.addr).await;
    client.send(b"WHATSAT kiwi.cs.ucla.edu 10 5\n").await;
    assert_failure(&client.whatsat_reply().await.1, "UNKNOWN_ERROR", &["503"]);
    for _ in 0..2 {
        client.send(b"WHATSAT kiwi.cs.ucla.edu 10 5\n").await;
        assert_eq!(client.whatsat_reply().await.1["status"], "OK");
    }
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
    node.node.shutdown().await;
    server.verify().await;
}
