//! A real herd in this process: every node on real sockets (on ports of
//! its own, see [`port`]), over the transport under test, with real
//! certificates for QUIC.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use herd::config::{Config, TransportKind};
use herd::flood::Hub;
use herd::node::{BoundNode, RunningNode};
use herd::places::{Places, PlacesError, Query};

/// How long any wait in a test may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The reference topology of config/herd.toml.
pub const REFERENCE: &[(&str, &[&str])] = &[
    ("Bailey", &["Bona", "Campbell"]),
    ("Bona", &["Clark", "Campbell", "Bailey"]),
    ("Campbell", &["Bailey", "Bona", "Jaquez"]),
    ("Clark", &["Jaquez", "Bona"]),
    ("Jaquez", &["Clark", "Campbell"]),
];

/// Places that answer at once with the query echoed back, so tests can see
/// what was asked.
pub struct EchoPlaces;

impl Places for EchoPlaces {
    fn nearby(&self, q: Query) -> BoxFuture<'static, Result<Value, PlacesError>> {
        let results: Vec<Value> = (0..25)
            .map(|i| json!({"name": format!("place {i}"), "lat": q.lat, "lng": q.lon, "radius": q.radius_m}))
            .collect();
        Box::pin(
            async move { Ok(json!({"html_attributions": [], "results": results, "status": "OK"})) },
        )
    }
}

/// Config text for `topology` with every address on port 0.
pub fn config_text(transport: TransportKind, topology: &[(&str, &[&str])], extra: &str) -> String {
    let transport = match transport {
        TransportKind::Quic => "quic",
        TransportKind::Tcp => "tcp",
    };
    // The harness's [peer] settings, but for those that `extra` sets in
    // that table (before any table header of its own).
    let in_peer: Vec<&str> = extra
        .lines()
        .map(str::trim_start)
        .take_while(|l| !l.starts_with('['))
        .collect();
    let peer: String = [
        ("backoff_min", "20ms"),
        ("backoff_max", "200ms"),
        ("keepalive", "500ms"),
        ("idle_timeout", "3s"),
    ]
    .iter()
    .filter(|(key, _)| !in_peer.iter().any(|l| l.starts_with(&format!("{key} ="))))
    .map(|(key, value)| format!("{key} = \"{value}\"\n"))
    .collect();
    let mut text = format!(
        "transport = \"{transport}\"\ncerts = \"certs\"\n[log]\ndir = \"logs\"\n[peer]\n{peer}{extra}\n"
    );
    for (name, neighbours) in topology {
        let list: Vec<String> = neighbours.iter().map(|n| format!("\"{n}\"")).collect();
        text += &format!(
            "[nodes.{name}]\nclient = \"127.0.0.1:0\"\npeer = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nneighbours = [{}]\n",
            list.join(", ")
        );
    }
    text
}

pub struct Herd {
    pub dir: tempfile::TempDir,
    /// The config with every node's real addresses.
    pub config: Arc<Config>,
    pub nodes: BTreeMap<String, Option<RunningNode>>,
}

impl Herd {
    pub async fn start(transport: TransportKind, topology: &[(&str, &[&str])]) -> Herd {
        Herd::start_with(transport, topology, "").await
    }

    /// Starts every node of `topology`; `extra` is added to the config's
    /// `[peer]` table (replacing the harness's own value of a key it sets).
    pub async fn start_with(
        transport: TransportKind,
        topology: &[(&str, &[&str])],
        extra: &str,
    ) -> Herd {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herd.toml");
        let text = config_text(transport, topology, extra);
        std::fs::write(&path, &text).unwrap();
        let config = Config::from_toml(&text, &path).unwrap();
        if transport == TransportKind::Quic {
            herd::certs::write_herd(&config, &config.certs, false).unwrap();
        }
        Herd::from_config(dir, config).await
    }

    /// Starts every node of `config` (whose files are in `dir`), each on
    /// ports of its own that its restarts bind again.
    pub async fn from_config(dir: tempfile::TempDir, mut config: Config) -> Herd {
        let names: Vec<String> = config.nodes.keys().cloned().collect();
        let mut bound = Vec::new();
        for name in names {
            let node = bind_on_own_ports(&mut config, &name).await;
            bound.push((name, node));
        }
        let config = Arc::new(config);
        let nodes = bound
            .into_iter()
            .map(|(name, node)| {
                (
                    name,
                    Some(node.start_with(config.clone(), Arc::new(EchoPlaces))),
                )
            })
            .collect();
        Herd { dir, config, nodes }
    }

    pub fn node(&self, name: &str) -> &RunningNode {
        self.nodes[name].as_ref().expect("node is running")
    }

    pub fn hub(&self, name: &str) -> &Arc<Hub> {
        self.node(name).hub()
    }

    pub fn client_addr(&self, name: &str) -> SocketAddr {
        self.config.nodes[name].client
    }

    /// The node's admin HTTP base URL.
    pub fn admin_url(&self, name: &str) -> String {
        format!(
            "http://{}",
            self.config.nodes[name].admin.expect("admin address")
        )
    }

    /// Stops a node (it says goodbye to its links, as on SIGTERM).
    pub async fn stop(&mut self, name: &str) {
        let node = self
            .nodes
            .get_mut(name)
            .unwrap()
            .take()
            .expect("node is running");
        node.shutdown().await;
    }

    /// Starts a stopped node again on the same addresses, with an empty table.
    pub async fn restart(&mut self, name: &str) {
        assert!(self.nodes[name].is_none(), "{name} is running");
        let bound = BoundNode::bind(&self.config, name).await.unwrap();
        let node = bound.start_with(self.config.clone(), Arc::new(EchoPlaces));
        self.nodes.insert(name.to_string(), Some(node));
    }

    pub async fn shutdown(mut self) {
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for name in names {
            if self.nodes[&name].is_some() {
                self.stop(&name).await;
            }
        }
    }

    /// Waits until every running node's links to its running neighbours
    /// are up.
    pub async fn settled(&self) {
        for (name, node) in &self.nodes {
            let Some(node) = node else { continue };
            let mut want: Vec<String> = self.config.nodes[name]
                .neighbours
                .iter()
                .filter(|n| self.nodes[*n].is_some())
                .cloned()
                .collect();
            want.sort();
            until(node.hub(), |hub| hub.attached() == want).await;
        }
    }

    /// Waits until `name` stores `line` as `client`'s report.
    pub async fn holds(&self, name: &str, client: &[u8], line: &[u8]) {
        until(self.hub(name), |hub| {
            hub.lookup(client).is_some_and(|r| r.line() == line)
        })
        .await;
    }
}

/// Binds node `name` on ports from [`port`], written into `config` (its
/// admin endpoint only if it has one).
async fn bind_on_own_ports(config: &mut Config, name: &str) -> BoundNode {
    let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let mut last = None;
    // A port found free can still be taken by another process before the
    // node binds it; then other ports are tried.
    for _ in 0..5 {
        let entry = config.nodes.get_mut(name).unwrap();
        entry.client = local(port());
        entry.peer = local(port()).to_string();
        if entry.admin.is_some() {
            entry.admin = Some(local(port()));
        }
        match BoundNode::bind(config, name).await {
            Ok(node) => return node,
            Err(e) => last = Some(e),
        }
    }
    panic!("{name} found no free ports: {:?}", last);
}

/// A loopback port for a node of this test process: below the kernel's
/// ephemeral range, so that no socket bound to port 0 and no connection's
/// local end is ever given it, and handed out once per process, free on
/// TCP and UDP at the time. A node that stops keeps its ports for when it
/// restarts: port 0 could give them to any socket meanwhile.
pub fn port() -> u16 {
    const LOW: u16 = 10_000;
    /// The next port to try, and the end of the range (read once).
    static NEXT: Mutex<Option<(u16, u16)>> = Mutex::new(None);
    let mut next = NEXT.lock().unwrap_or_else(|e| e.into_inner());
    let (mut at, high) = *next.get_or_insert_with(|| {
        // Linux's default range starts at 32768.
        let high = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
            .filter(|&start| start > LOW + 1_000)
            .unwrap_or(32_768);
        // Processes started at once begin far apart.
        let offset = std::process::id().wrapping_mul(7_919) % u32::from(high - LOW);
        (LOW + offset as u16, high)
    });
    for _ in LOW..high {
        let candidate = at;
        at = if at + 1 >= high { LOW } else { at + 1 };
        let free = TcpListener::bind(("127.0.0.1", candidate)).is_ok()
            && UdpSocket::bind(("127.0.0.1", candidate)).is_ok();
        if free {
            *next = Some((at, high));
            return candidate;
        }
    }
    panic!("no free loopback port in {LOW}..{high}");
}

/// Waits, on the hub's change events, until `check` holds.
pub async fn until(hub: &Hub, check: impl Fn(&Hub) -> bool) {
    let mut changes = hub.subscribe();
    let wait = async {
        loop {
            if check(hub) {
                return;
            }
            changes.changed().await.expect("hub alive");
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .expect("condition not reached in time");
}

/// A client speaking the line protocol over a real socket.
pub struct Client {
    pub reader: BufReader<OwnedReadHalf>,
    pub writer: OwnedWriteHalf,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (r, w) = stream.into_split();
        Client {
            reader: BufReader::new(r),
            writer: w,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.unwrap();
    }

    /// Reads one line, without its LF; None at end of stream.
    pub async fn line(&mut self) -> Option<Vec<u8>> {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(PATIENCE, self.reader.read_until(b'\n', &mut buf))
            .await
            .expect("reply in time")
            .unwrap();
        if n == 0 {
            return None;
        }
        assert_eq!(buf.pop(), Some(b'\n'), "reply ends with LF");
        Some(buf)
    }

    /// Sends one request line and reads the one-line reply.
    pub async fn ask(&mut self, line: &str) -> String {
        self.send(format!("{line}\n").as_bytes()).await;
        String::from_utf8(self.line().await.expect("a reply")).unwrap()
    }

    /// Reads a WHATSAT reply: the AT line, then JSON up to an empty line.
    pub async fn whatsat_reply(&mut self) -> (String, Value) {
        let at = String::from_utf8(self.line().await.expect("AT line")).unwrap();
        let mut json = Vec::new();
        loop {
            let line = self.line().await.expect("JSON line");
            if line.is_empty() {
                break;
            }
            json.extend_from_slice(&line);
            json.push(b'\n');
        }
        (at, serde_json::from_slice(&json).unwrap())
    }
}
