//! Configuration: defaults, then the TOML file, then `HERD_` environment
//! variables (`__` for nesting), checked once at start.
//!
//! Paths written in the file are relative to the file; paths from the
//! environment are relative to the working directory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::magic::RelativePathBuf;
use figment::value::Value;
use figment::Figment;
use serde::Deserialize;

/// Where `herd` looks for its configuration unless told otherwise.
pub const DEFAULT_PATH: &str = "config/herd.toml";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransportKind {
    Quic,
    Tcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    Offline,
    Google,
    GoogleLegacy,
}

impl Provider {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Offline => "offline",
            Provider::Google => "google",
            Provider::GoogleLegacy => "google-legacy",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_transport")]
    transport: TransportKind,
    certs: Option<RelativePathBuf>,
    #[serde(default)]
    places: RawPlaces,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    peer: PeerSettings,
    #[serde(default)]
    runtime: Runtime,
    #[serde(default)]
    nodes: BTreeMap<String, NodeConfig>,
}

/// How a node's async runtimes are built.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    /// Worker threads for clients; 0 means one per core. A node alone on a
    /// host wants every core; several nodes sharing a few cores do better
    /// with one each (fewer threads waking each other).
    pub workers: usize,
    /// Worker threads for the links to neighbours, on a runtime of their
    /// own; 0 means one per core. One (the default) keeps a frame's arrival
    /// and the links it wakes on one thread.
    pub links_workers: usize,
    /// How much lower the CPU priority (nice value) of the links' threads
    /// is than the clients' (0-19). A node short of CPU answers its clients
    /// first and floods what they sent in fewer, fuller frames.
    pub links_nice: u8,
}

impl Default for Runtime {
    fn default() -> Runtime {
        Runtime {
            workers: 0,
            links_workers: 1,
            links_nice: 10,
        }
    }
}

fn default_transport() -> TransportKind {
    TransportKind::Quic
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlaces {
    #[serde(default = "default_provider")]
    provider: Provider,
    key: Option<String>,
    url: Option<String>,
    #[serde(default = "default_places_timeout", with = "humantime_serde")]
    timeout: Duration,
    #[serde(default = "default_max_body")]
    max_body: usize,
    #[serde(default = "default_cache_ttl", with = "humantime_serde")]
    cache_ttl: Duration,
    #[serde(default = "default_cache_entries")]
    cache_entries: usize,
}

impl Default for RawPlaces {
    fn default() -> Self {
        RawPlaces {
            provider: default_provider(),
            key: None,
            url: None,
            timeout: default_places_timeout(),
            max_body: default_max_body(),
            cache_ttl: default_cache_ttl(),
            cache_entries: default_cache_entries(),
        }
    }
}

fn default_cache_ttl() -> Duration {
    Duration::from_secs(60)
}
fn default_cache_entries() -> usize {
    10_000
}

fn default_provider() -> Provider {
    Provider::Offline
}
fn default_places_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_max_body() -> usize {
    2 << 20
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    dir: Option<RelativePathBuf>,
    #[serde(default)]
    format: LogFormat,
}

/// How log lines are written, to the file and to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Timestamped human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Bounds on what one client can make a node do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Longest accepted line in bytes, without its LF.
    pub max_line: usize,
    /// Client connections open at once; further clients wait in the backlog.
    pub max_connections: usize,
    /// A connection that moves no byte either way for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// WHATSAT requests one connection may have waiting on places at once.
    pub whatsat_in_flight: usize,
    /// Replies one connection may have queued before the node stops reading
    /// from it (so a client that never reads cannot grow the node's memory).
    pub pipeline: usize,
    /// How far in the future a client time may be before it is refused.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: 4096,
            max_connections: 4096,
            idle_timeout: Duration::from_secs(300),
            whatsat_in_flight: 4,
            pipeline: 1024,
            max_clock_skew: Duration::from_secs(60),
        }
    }
}

/// How links between servers behave.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeerSettings {
    /// Bound on dialling and on the whole link handshake.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Interval between pings on an idle link.
    #[serde(with = "humantime_serde")]
    pub keepalive: Duration,
    /// A link that hears nothing for this long is dropped.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// First and largest delay between redials (jittered).
    #[serde(with = "humantime_serde")]
    pub backoff_min: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Largest frame accepted from a peer, in bytes.
    pub max_frame: usize,
    /// Under load, a link sends at most one frame of updates per this
    /// interval (sooner once a frame's worth waits), so each frame (one
    /// write, one wakeup at the peer) carries many; a link that was quiet
    /// for this long sends at once. 0 sends every batch at once.
    #[serde(with = "humantime_serde")]
    pub batch_window: Duration,
}

impl Default for PeerSettings {
    fn default() -> Self {
        PeerSettings {
            connect_timeout: Duration::from_secs(3),
            keepalive: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            max_frame: 1 << 20,
            batch_window: Duration::from_millis(3),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Plain-TCP client protocol address.
    pub client: SocketAddr,
    /// Inter-server address, `host:port` (UDP for quic, TCP for tcp).
    pub peer: String,
    #[serde(default)]
    pub neighbours: Vec<String>,
    /// Optional HTTP admin address.
    pub admin: Option<SocketAddr>,
    /// Extra certificate names, for hosts reached by other names.
    #[serde(default)]
    pub names: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct PlacesConfig {
    pub provider: Provider,
    pub key: Option<String>,
    pub url: Option<String>,
    pub timeout: Duration,
    pub max_body: usize,
    /// Identical searches within this time are answered from a cache (and
    /// concurrent identical searches share one upstream request); zero
    /// turns the cache off.
    pub cache_ttl: Duration,
    /// Most searches the cache holds.
    pub cache_entries: usize,
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
    pub transport: TransportKind,
    pub certs: PathBuf,
    pub places: PlacesConfig,
    pub log_dir: PathBuf,
    pub log_format: LogFormat,
    pub limits: Limits,
    pub peer: PeerSettings,
    pub runtime: Runtime,
    pub nodes: BTreeMap<String, NodeConfig>,
}

/// Everything wrong with a configuration, one line each.
#[derive(Debug)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn one(problem: String) -> ConfigError {
        ConfigError {
            problems: vec![problem],
        }
    }
}

/// Node names become AT-line fields and certificate DNS names: an ASCII
/// letter, then letters, digits and hyphens.
pub fn is_node_name(name: &[u8]) -> bool {
    name.first().is_some_and(u8::is_ascii_alphabetic)
        && name.len() <= 63
        && name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-')
}

impl Config {
    /// Loads `path` (which must exist), then `HERD_` variables, and checks
    /// the result.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError::one(format!(
                "{}: no such config file",
                path.display()
            )));
        }
        let file = Figment::new().merge(Toml::file_exact(path));
        let nodes = node_names(&file);
        Config::from_figment(file.merge(environment(nodes)), Some(path))
    }

    /// Parses a TOML text as if it were a file at `path` (no environment).
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let raw = extract(&Figment::new().merge(Toml::string(text)), path)?;
        Config::check(raw, Some(path), Some(dir))
    }

    fn from_figment(figment: Figment, path: Option<&Path>) -> Result<Config, ConfigError> {
        let raw = extract(&figment, path.unwrap_or(Path::new("config")))?;
        Config::check(raw, path, None)
    }

    fn check(
        raw: RawConfig,
        path: Option<&Path>,
        text_dir: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let file = path.map_or("config".into(), |p| p.display().to_string());
        let dir = path
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        // A path from a TOML string has no file metadata: anchor it by hand.
        let resolve = |p: &Option<RelativePathBuf>, default: &str| -> PathBuf {
            match p {
                Some(p) => match text_dir {
                    Some(d) if p.metadata_path().is_none() && p.original().is_relative() => {
                        d.join(p.original())
                    }
                    _ => p.relative(),
                },
                None => dir.join(default),
            }
        };
        let mut problems = Vec::new();
        let mut problem = |s: String| problems.push(format!("{file}: {s}"));

        if raw.nodes.is_empty() {
            problem("[nodes] names no node".into());
        }
        let mut lower = HashMap::new();
        for name in raw.nodes.keys() {
            if !is_node_name(name.as_bytes()) {
                problem(format!(
                    "nodes.{name}: a node name is a letter then letters, digits or '-' (at most 63)"
                ));
            }
            if let Some(other) = lower.insert(name.to_ascii_lowercase(), name) {
                problem(format!(
                    "nodes.{name}: same certificate name as nodes.{other} (names are compared without case)"
                ));
            }
        }
        for (name, node) in &raw.nodes {
            let mut seen = BTreeSet::new();
            for n in &node.neighbours {
                if !seen.insert(n) {
                    problem(format!("nodes.{name}.neighbours: {n} is listed twice"));
                } else if n == name {
                    problem(format!(
                        "nodes.{name}.neighbours: a node cannot neighbour itself"
                    ));
                } else if let Some(other) = raw.nodes.get(n) {
                    if !other.neighbours.contains(name) {
                        problem(format!(
                            "nodes.{name}.neighbours: names {n}, but nodes.{n}.neighbours does not name {name} (links are symmetric)"
                        ));
                    }
                } else {
                    problem(format!("nodes.{name}.neighbours: no node named {n}"));
                }
            }
            if split_host_port(&node.peer).is_none() {
                problem(format!(
                    "nodes.{name}.peer: {:?} is not host:port",
                    node.peer
                ));
            }
        }
        // Two sockets clash only over the same protocol: a quic peer port
        // (UDP) may have the number of a client or admin port (TCP).
        let peer_protocol = match raw.transport {
            TransportKind::Tcp => "tcp",
            TransportKind::Quic => "udp",
        };
        let mut ports: HashMap<(&str, String, u16), String> = HashMap::new();
        for (name, node) in &raw.nodes {
            let mut addrs = vec![(
                "client",
                "tcp",
                node.client.ip().to_string(),
                node.client.port(),
            )];
            if let Some((host, port)) = split_host_port(&node.peer) {
                addrs.push(("peer", peer_protocol, host.to_string(), port));
            }
            if let Some(admin) = node.admin {
                addrs.push(("admin", "tcp", admin.ip().to_string(), admin.port()));
            }
            for (key, protocol, host, port) in addrs {
                if port == 0 {
                    continue;
                }
                let here = format!("nodes.{name}.{key}");
                if let Some(first) = ports.insert((protocol, host.clone(), port), here.clone()) {
                    problem(format!("{here}: {host}:{port} is already used by {first}"));
                }
            }
        }
        let places = PlacesConfig {
            provider: raw.places.provider,
            key: raw.places.key.filter(|k| !k.is_empty()),
            url: raw.places.url.map(|u| u.trim_end_matches('/').to_string()),
            timeout: raw.places.timeout,
            max_body: raw.places.max_body,
            cache_ttl: raw.places.cache_ttl,
            cache_entries: raw.places.cache_entries,
        };
        if places.provider != Provider::Offline && places.key.is_none() {
            problem(
                "places.key: a Google provider needs a key (set HERD_PLACES__KEY; never commit it)"
                    .into(),
            );
        }
        if let Some(url) = &places.url {
            if reqwest::Url::parse(url).is_err() {
                problem(format!("places.url: {url:?} is not a URL"));
            }
        }
        let l = &raw.limits;
        for (key, value) in [
            ("max_line", l.max_line),
            ("max_connections", l.max_connections),
            ("whatsat_in_flight", l.whatsat_in_flight),
            ("pipeline", l.pipeline),
        ] {
            if value == 0 {
                problem(format!("limits.{key}: must be at least 1"));
            }
        }
        if raw.runtime.links_nice > 19 {
            problem("runtime.links_nice: must be 0-19".into());
        }
        let p = &raw.peer;
        if p.max_frame < 1024 {
            problem("peer.max_frame: must be at least 1024".into());
        }
        if p.batch_window >= p.keepalive {
            problem("peer.batch_window: must be below peer.keepalive".into());
        }
        if p.keepalive.is_zero() || p.keepalive >= p.idle_timeout {
            problem("peer.keepalive: must be above zero and below peer.idle_timeout".into());
        }
        if p.backoff_min.is_zero() || p.backoff_min > p.backoff_max {
            problem("peer.backoff_min: must be above zero and at most peer.backoff_max".into());
        }
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        Ok(Config {
            source: path.map(Path::to_path_buf),
            transport: raw.transport,
            certs: normalize(&resolve(&raw.certs, "../certs")),
            places,
            log_dir: normalize(&resolve(&raw.log.dir, "../logs")),
            log_format: raw.log.format,
            limits: raw.limits,
            peer: raw.peer,
            runtime: raw.runtime,
            nodes: raw.nodes,
        })
    }

    /// The named node, or a one-line error naming it.
    pub fn node(&self, name: &str) -> Result<&NodeConfig, ConfigError> {
        self.nodes.get(name).ok_or_else(|| {
            let known: Vec<_> = self.nodes.keys().map(String::as_str).collect();
            ConfigError::one(format!(
                "{}: no node named {name} (nodes: {})",
                self.source
                    .as_deref()
                    .map_or("config".into(), |p| p.display().to_string()),
                known.join(", ")
            ))
        })
    }

    /// Certificate files of one node: (`<Node>.pem`, `<Node>.key`).
    pub fn cert_files(&self, node: &str) -> (PathBuf, PathBuf) {
        (
            self.certs.join(format!("{node}.pem")),
            self.certs.join(format!("{node}.key")),
        )
    }

    pub fn ca_file(&self) -> PathBuf {
        self.certs.join("ca.pem")
    }
}

/// Removes `.` and `..` lexically, so messages show the path a person
/// would write (`/srv/herd/logs`, not `/srv/herd/config/../logs`).
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Splits `host:port` (IPv6 hosts in brackets).
pub fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(' ') {
        return None;
    }
    Some((host, port.parse().ok()?))
}

/// The names of the nodes in `figment` (none if it does not read).
fn node_names(figment: &Figment) -> Vec<String> {
    figment
        .extract_inner::<figment::value::Dict>("nodes")
        .map(|nodes| nodes.into_keys().collect())
        .unwrap_or_default()
}

/// `HERD_` variables, `__` for nesting. Keys are lower case, except that a
/// node's name is spelt as the file spells it (`HERD_NODES__CLARK__CLIENT`
/// sets `nodes.Clark.client`): variables are conventionally upper case, and
/// node names are unique without regard to case.
fn environment(nodes: Vec<String>) -> Env {
    Env::prefixed("HERD_")
        .ignore(&["config"])
        .split("__")
        .map(move |key| {
            let mut parts: Vec<String> = key
                .as_str()
                .split('.')
                .map(str::to_ascii_lowercase)
                .collect();
            if parts.len() > 1 && parts[0] == "nodes" {
                if let Some(name) = nodes.iter().find(|n| n.eq_ignore_ascii_case(&parts[1])) {
                    parts[1] = name.clone();
                }
            }
            parts.join(".").into()
        })
        .lowercase(false)
}

/// The raw configuration, or the problems reading it. serde stops at the
/// first unknown key, so each one found is left out and the merged settings
/// are read again: every unknown key is named, and then the first other
/// problem, if any.
fn extract(figment: &Figment, path: &Path) -> Result<RawConfig, ConfigError> {
    let error = match figment.extract::<RawConfig>() {
        Ok(raw) => return Ok(raw),
        Err(e) => e,
    };
    let mut unknown = unknown_key(&error);
    let mut problems = figment_problems(error, path).problems;
    let Ok(mut merged) = figment.extract::<Value>() else {
        return Err(ConfigError { problems });
    };
    // Each pass leaves out one more key or stops, so this ends; the bound
    // caps how much one check prints.
    for _ in 0..64 {
        let Some(key) = unknown.take() else { break };
        if !remove(&mut merged, &key) {
            break;
        }
        // Read through a figment, as the first time: path settings only
        // deserialize there.
        let again = Figment::from(Serialized::defaults(&merged)).extract::<RawConfig>();
        let Err(mut next) = again else {
            break;
        };
        unknown = unknown_key(&next);
        // Where the setting came from (the file, or the environment).
        let at = unknown.as_ref().unwrap_or(&next.path).join(".");
        next.metadata = merged
            .find_ref(&at)
            .and_then(|v| figment.get_metadata(v.tag()))
            .cloned();
        problems.extend(figment_problems(next, path).problems);
    }
    Err(ConfigError { problems })
}

/// The path of the key `error` says is unknown, if that is what it says.
fn unknown_key(error: &figment::Error) -> Option<Vec<String>> {
    match (&error.kind, error.clone().count()) {
        (figment::error::Kind::UnknownField(name, _), 1) => {
            let mut key = error.path.clone();
            if key.last() != Some(name) {
                key.push(name.clone());
            }
            Some(key)
        }
        _ => None,
    }
}

/// Leaves out the setting at `key` (a path of keys); whether it was there.
fn remove(value: &mut Value, key: &[String]) -> bool {
    let Some((last, parents)) = key.split_last() else {
        return false;
    };
    let mut at = value;
    for k in parents {
        match at {
            Value::Dict(_, dict) => match dict.get_mut(k) {
                Some(v) => at = v,
                None => return false,
            },
            _ => return false,
        }
    }
    match at {
        Value::Dict(_, dict) => dict.remove(last).is_some(),
        _ => false,
    }
}

fn figment_problems(error: figment::Error, path: &Path) -> ConfigError {
    let problems = error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let kind = e.kind.to_string();
            let source = e
                .metadata
                .as_ref()
                .map(|m| match &m.source {
                    Some(figment::Source::File(f)) => f.display().to_string(),
                    _ if m.name.contains("environment") => "environment (HERD_*)".to_string(),
                    _ => path.display().to_string(),
                })
                .unwrap_or_else(|| path.display().to_string());
            if key.is_empty() {
                format!("{source}: {kind}")
            } else {
                format!("{source}: {key}: {kind}")
            }
        })
        .collect();
    ConfigError { problems }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
transport = "tcp"
certs = "../certs"
[nodes.A]
client = "127.0.0.1:1000"
peer = "127.0.0.1:1100"
neighbours = ["B"]
[nodes.B]
client = "127.0.0.1:1001"
peer = "localhost:1101"
neighbours = ["A"]
"#;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("/etc/herd/herd.toml"))
    }

    fn problems(text: &str) -> Vec<String> {
        load(text).unwrap_err().problems
    }

    #[test]
    fn a_good_config_loads_with_paths_beside_the_file() {
        let c = load(GOOD).unwrap();
        assert_eq!(c.transport, TransportKind::Tcp);
        assert_eq!(c.certs, Path::new("/etc/certs"));
        assert_eq!(c.log_dir, Path::new("/etc/logs"));
        assert_eq!(c.places.provider, Provider::Offline);
        assert_eq!(c.limits.max_line, 4096);
        assert_eq!(c.nodes["B"].neighbours, vec!["A"]);
    }

    #[test]
    fn the_committed_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_PATH);
        let text = std::fs::read_to_string(&path).unwrap();
        let c = Config::from_toml(&text, &path).unwrap();
        assert_eq!(c.nodes.len(), 5);
        assert_eq!(c.nodes["Clark"].neighbours, vec!["Jaquez", "Bona"]);
    }

    #[test]
    fn each_problem_is_one_line_naming_the_key() {
        let p = problems(&GOOD.replace(r#"neighbours = ["A"]"#, r#"neighbours = ["C"]"#));
        assert!(
            p.iter()
                .any(|l| l.contains("nodes.A.neighbours") && l.contains("symmetric")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|l| l.contains("nodes.B.neighbours: no node named C")),
            "{p:?}"
        );
        assert!(p
            .iter()
            .all(|l| !l.contains('\n') && l.starts_with("/etc/herd/herd.toml: ")));

        let p = problems(&GOOD.replace("1001", "1000"));
        assert!(
            p[0].contains("nodes.B.client") && p[0].contains("already used by nodes.A.client"),
            "{p:?}"
        );
        let p = problems(&GOOD.replace("1100", "1000"));
        assert!(
            p[0].contains("nodes.A.peer") && p[0].contains("already used by nodes.A.client"),
            "{p:?}"
        );

        let p = problems(&format!("{GOOD}\nbogus = 1\n"));
        assert!(p[0].contains("bogus"), "{p:?}");

        // Every unknown key is named, each on its own line, not just the
        // first serde meets.
        let text = format!(
            "bogus = 1\n{GOOD}clinet = \"x\"\n[limits]\nmax_lines = 10\n\
             [peer]\nkeepalive_ms = 5\n"
        );
        let p = problems(&text);
        assert_eq!(p.len(), 4, "{p:?}");
        for key in [
            "bogus",
            "nodes.B.clinet",
            "limits.max_lines",
            "peer.keepalive_ms",
        ] {
            assert!(
                p.iter()
                    .any(|l| l.starts_with("/etc/herd/herd.toml: ") && l.contains(key)),
                "{key}: {p:?}"
            );
        }
        // A wrong value met after an unknown key is named too.
        let text = format!("bogus = 1\n{}", GOOD.replace("\"tcp\"", "\"udp\""));
        let p = problems(&text);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].contains("bogus") && p[1].contains("transport"),
            "{p:?}"
        );

        let p = problems(&GOOD.replace("127.0.0.1:1000", "nowhere"));
        assert!(p[0].contains("nodes.A.client"), "{p:?}");

        let p = problems(&GOOD.replace("transport = \"tcp\"", "transport = \"udp\""));
        assert!(p[0].contains("transport"), "{p:?}");

        let p = problems(&format!("{GOOD}\n[places]\nprovider = \"google\"\n"));
        assert!(p[0].contains("places.key"), "{p:?}");

        let p = problems(
            &GOOD
                .replace("[nodes.B]", "[nodes.\"B_b\"]")
                .replace("[\"B\"]", "[\"B_b\"]"),
        );
        assert!(
            p.iter().any(|l| l.contains("nodes.B_b: a node name")),
            "{p:?}"
        );
    }

    #[test]
    fn a_quic_peer_port_may_share_its_number_with_a_tcp_port() {
        // UDP and TCP ports are separate: a free-port picker may well hand
        // out the same number for both.
        let text = GOOD
            .replace("transport = \"tcp\"", "transport = \"quic\"")
            .replace("127.0.0.1:1100", "127.0.0.1:1000");
        let c = load(&text).unwrap();
        assert_eq!(c.nodes["A"].peer, "127.0.0.1:1000");
        // Two UDP ports still clash.
        let p = problems(&text.replace("localhost:1101", "127.0.0.1:1000"));
        assert!(
            p[0].contains("nodes.B.peer") && p[0].contains("already used by nodes.A.peer"),
            "{p:?}"
        );
    }

    #[test]
    fn clients_get_a_thread_per_core_and_links_one_by_default() {
        let r = load(GOOD).unwrap().runtime;
        assert_eq!((r.workers, r.links_workers), (0, 1));
        let text = format!("{GOOD}\n[runtime]\nworkers = 1\nlinks_workers = 0\n");
        let r = load(&text).unwrap().runtime;
        assert_eq!((r.workers, r.links_workers), (1, 0));
        for bad in ["threads = 1", "links_workers = -1"] {
            let key = bad.split(' ').next().unwrap();
            let p = problems(&format!("{GOOD}\n[runtime]\n{bad}\n"));
            assert!(p[0].contains(key), "{p:?}");
        }
    }

    #[test]
    fn links_run_ten_nice_levels_below_clients_by_default() {
        assert_eq!(load(GOOD).unwrap().runtime.links_nice, 10);
        let c = load(&format!("{GOOD}\n[runtime]\nlinks_nice = 0\n")).unwrap();
        assert_eq!(c.runtime.links_nice, 0);
        let p = problems(&format!("{GOOD}\n[runtime]\nlinks_nice = 20\n"));
        assert!(p[0].contains("runtime.links_nice: must be 0-19"), "{p:?}");
        let p = problems(&format!("{GOOD}\n[runtime]\nlinks_nice = -1\n"));
        assert!(p[0].contains("links_nice"), "{p:?}");
    }

    #[test]
    fn batch_window_defaults_to_three_milliseconds_and_stays_below_keepalive() {
        let c = load(GOOD).unwrap();
        assert_eq!(c.peer.batch_window, Duration::from_millis(3));
        let c = load(&format!("{GOOD}\n[peer]\nbatch_window = \"0s\"\n")).unwrap();
        assert!(c.peer.batch_window.is_zero());
        let p = problems(&format!("{GOOD}\n[peer]\nbatch_window = \"2s\"\n"));
        assert!(p.iter().any(|p| p.contains("peer.batch_window")), "{p:?}");
    }

    #[test]
    fn node_lookup_names_the_missing_node() {
        let c = load(GOOD).unwrap();
        let e = c.node("Z").unwrap_err();
        assert!(e.to_string().contains("no node named Z (nodes: A, B)"));
    }

    #[test]
    fn paths_are_normalized_lexically() {
        assert_eq!(normalize(Path::new("a/./b/../c")), Path::new("a/c"));
        assert_eq!(normalize(Path::new("../x")), Path::new("../x"));
        assert_eq!(normalize(Path::new("a/..")), Path::new("."));
    }

    #[test]
    fn host_port_splitting() {
        assert_eq!(split_host_port("a.example:12"), Some(("a.example", 12)));
        assert_eq!(split_host_port("[::1]:12"), Some(("::1", 12)));
        assert_eq!(split_host_port("a.example"), None);
        assert_eq!(split_host_port(":12"), None);
    }
}
