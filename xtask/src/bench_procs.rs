//! The processes a benchmark runs: the five-node herd (the release `herd`
//! binary, on a generated config in a temporary directory) and the ceiling
//! server. Every child dies with the benchmark: each is stopped (SIGTERM,
//! then SIGKILL) when its owner is dropped, on success, error or Ctrl-C, and
//! the kernel kills it (PR_SET_PDEATHSIG) should the benchmark itself be
//! killed outright.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use herd::config::{Config, TransportKind};

/// The reference topology (config/herd.toml): Clark–Jaquez, Clark–Bona,
/// Campbell–{Bailey, Bona, Jaquez}, Bona–Bailey.
pub const TOPOLOGY: [(&str, &[&str]); 5] = [
    ("Bailey", &["Bona", "Campbell"]),
    ("Bona", &["Clark", "Campbell", "Bailey"]),
    ("Campbell", &["Bailey", "Bona", "Jaquez"]),
    ("Clark", &["Jaquez", "Bona"]),
    ("Jaquez", &["Clark", "Campbell"]),
];

/// The node clients load.
pub const ENTRY: &str = "Clark";

/// How long a node may take to listen.
const START: Duration = Duration::from_secs(20);
/// How long processes get to stop cleanly before they are killed.
const STOP: Duration = Duration::from_secs(10);

/// `cmd`, made to die with this process and untouched by the caller's
/// `HERD_*` and `RUST_LOG` settings.
fn child_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HERD_") {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("RUST_LOG");
    let parent = std::process::id();
    // SAFETY: prctl(2) and getppid(2) are async-signal-safe; the closure
    // touches no memory of the parent but a copied integer.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::other("parent already gone"));
            }
            Ok(())
        });
    }
    cmd
}

/// SIGTERM to every child, then SIGKILL to those still there after `STOP`.
/// Returns a line for each that did not stop cleanly.
fn stop_children(children: &mut [(String, &mut Child)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (_, child) in children.iter() {
        // SAFETY: kill(2) on a pid we spawned and have not reaped.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + STOP;
    for (name, child) in children.iter_mut() {
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() {
                        problems.push(format!("{name} exited with {status} when stopped"));
                    }
                    break;
                }
                Err(e) => {
                    problems.push(format!("{name}: {e}"));
                    break;
                }
                Ok(None) if Instant::now() > deadline => {
                    problems.push(format!("{name} did not stop within {STOP:?}; killed"));
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    problems
}

/// CPU time (user + system) of process `pid` so far, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some((utime + stime) as f64 / ticks.max(1) as f64)
}

/// The whole machine's CPU times so far (all cores), in seconds, from the
/// first line of `/proc/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MachineTimes {
    /// Running anything: user, nice, system, irq and softirq time.
    pub busy: f64,
    /// Wanting to run while the hypervisor ran something else (`steal`).
    pub stolen: f64,
}

impl MachineTimes {
    pub fn now() -> Option<MachineTimes> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        MachineTimes::parse(&stat, ticks.max(1) as f64)
    }

    /// From the text of `/proc/stat`, with `ticks` per second.
    pub fn parse(stat: &str, ticks: f64) -> Option<MachineTimes> {
        let line = stat.lines().next()?.strip_prefix("cpu ")?;
        let v: Vec<u64> = line
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let sum = |fields: &[usize]| fields.iter().filter_map(|&i| v.get(i)).sum::<u64>();
        // user nice system idle iowait irq softirq steal
        Some(MachineTimes {
            busy: sum(&[0, 1, 2, 5, 6]) as f64 / ticks,
            stolen: sum(&[7]) as f64 / ticks,
        })
    }
}

/// A node's flooding counters (from its `/metrics`): IAMATs answered, and
/// updates by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub iamat: u64,
    /// Updates from links that were new here.
    pub received: u64,
    /// Updates from links that this node already had (or newer).
    pub stale: u64,
    /// Copies sent over links.
    pub forwarded: u64,
    /// Copies not sent to a neighbour that had sent the same report.
    pub skipped: u64,
}

impl Counters {
    /// Reads them from the admin endpoint at `admin`.
    pub fn read(admin: SocketAddr) -> Result<Counters> {
        let mut stream = TcpStream::connect_timeout(&admin, Duration::from_secs(5))
            .with_context(|| format!("connecting to the admin endpoint {admin}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
        let mut text = String::new();
        stream
            .read_to_string(&mut text)
            .with_context(|| format!("reading {admin}/metrics"))?;
        Ok(Counters::parse(&text))
    }

    /// The counters in a Prometheus text exposition (zero where absent).
    pub fn parse(text: &str) -> Counters {
        let mut c = Counters::default();
        for line in text.lines() {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<u64>() else {
                continue;
            };
            let field = match name {
                r#"herd_requests_total{kind="iamat"}"# => &mut c.iamat,
                r#"herd_updates_total{outcome="received"}"# => &mut c.received,
                r#"herd_updates_total{outcome="stale"}"# => &mut c.stale,
                r#"herd_updates_total{outcome="forwarded"}"# => &mut c.forwarded,
                r#"herd_updates_total{outcome="skipped"}"# => &mut c.skipped,
                _ => continue,
            };
            *field = value;
        }
        c
    }

    /// What was counted between `before` and this reading.
    pub fn since(&self, before: &Counters) -> Counters {
        Counters {
            iamat: self.iamat.saturating_sub(before.iamat),
            received: self.received.saturating_sub(before.received),
            stale: self.stale.saturating_sub(before.stale),
            forwarded: self.forwarded.saturating_sub(before.forwarded),
            skipped: self.skipped.saturating_sub(before.skipped),
        }
    }

    fn add(&mut self, other: &Counters) {
        self.iamat += other.iamat;
        self.received += other.received;
        self.stale += other.stale;
        self.forwarded += other.forwarded;
        self.skipped += other.skipped;
    }
}

/// Resident memory of process `pid` (VmRSS), in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow!("unreadable {line:?}"))?;
    Ok(kb * 1024)
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let Ok(file) = File::open(path) else {
        return String::new();
    };
    let all: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
    all[all.len().saturating_sub(n)..].join("\n")
}

/// How many lines of a file contain `needle`.
pub fn count_lines(path: &Path, needle: &str) -> usize {
    let Ok(file) = File::open(path) else {
        return 0;
    };
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter(|l| l.contains(needle))
        .count()
}

pub struct Node {
    pub name: String,
    pub client: SocketAddr,
    /// Its admin endpoint, for its counters.
    pub admin: Option<SocketAddr>,
    pub stderr: PathBuf,
    pub child: Child,
}

/// Waits until every node listens on its client address, failing when one
/// exits, `within` passes or `interrupted` says so.
pub fn wait_listening(
    nodes: &mut [Node],
    within: Duration,
    interrupted: impl Fn() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + within;
    for node in nodes {
        loop {
            if interrupted() {
                bail!("interrupted");
            }
            if TcpStream::connect_timeout(&node.client, Duration::from_millis(200)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = node.child.try_wait() {
                bail!(
                    "{} exited ({status}) while starting:\n{}",
                    node.name,
                    tail(&node.stderr, 10)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not listen on {} within {within:?}",
                    node.name,
                    node.client
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// A running five-node herd.
pub struct Herd {
    pub nodes: Vec<Node>,
    stopped: bool,
}

/// Ports nobody listens on right now: bound on 127.0.0.1:0 together (so
/// they differ), then released.
fn free_ports(tcp: usize, udp: usize) -> Result<(Vec<u16>, Vec<u16>)> {
    let tcps: Vec<TcpListener> = (0..tcp)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    let udps: Vec<UdpSocket> = (0..udp)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    let t = tcps
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<_>>()?;
    let u = udps
        .iter()
        .map(|s| s.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<_>>()?;
    Ok((t, u))
}

/// Writes `dir/herd.toml` for the reference topology on free ports (with
/// `[runtime] workers` if given), and for quic the herd's certificates in
/// `dir/certs`.
pub fn write_config(
    dir: &Path,
    transport: TransportKind,
    workers: Option<usize>,
) -> Result<(PathBuf, Config)> {
    let n = TOPOLOGY.len();
    let (tcp, udp) = match transport {
        TransportKind::Tcp => free_ports(3 * n, 0)?,
        TransportKind::Quic => free_ports(2 * n, n)?,
    };
    let peer_ports = match transport {
        TransportKind::Tcp => &tcp[n..],
        TransportKind::Quic => &udp[..],
    };
    let name = match transport {
        TransportKind::Tcp => "tcp",
        TransportKind::Quic => "quic",
    };
    let mut text = format!(
        "# Generated by cargo xtask bench.\ntransport = \"{name}\"\ncerts = \"certs\"\n\n\
         [places]\nprovider = \"offline\"\n\n[log]\ndir = \"logs\"\n"
    );
    if let Some(n) = workers {
        let _ = write!(text, "\n[runtime]\nworkers = {n}\n");
    }
    for (i, (node, neighbours)) in TOPOLOGY.iter().enumerate() {
        let list: Vec<String> = neighbours.iter().map(|n| format!("\"{n}\"")).collect();
        let _ = write!(
            text,
            "\n[nodes.{node}]\nclient = \"127.0.0.1:{}\"\npeer = \"127.0.0.1:{}\"\nadmin = \"127.0.0.1:{}\"\nneighbours = [{}]\n",
            tcp[i],
            peer_ports[i],
            tcp[tcp.len() - n + i],
            list.join(", ")
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("herd.toml");
    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    let config = Config::from_toml(&text, &path)
        .map_err(|e| anyhow!("generated config is invalid: {}", e.problems.join("; ")))?;
    if transport == TransportKind::Quic {
        herd::certs::write_herd(&config, &config.certs, false)
            .context("making the herd's certificates")?;
    }
    Ok((path, config))
}

impl Herd {
    /// Starts every node of the config at `config_path` with `bin` and
    /// waits until each listens for clients.
    pub fn start(bin: &Path, config_path: &Path, config: &Config) -> Result<Herd> {
        std::fs::create_dir_all(&config.log_dir)?;
        let mut herd = Herd {
            nodes: Vec::new(),
            stopped: false,
        };
        for (name, node) in &config.nodes {
            let stderr = config.log_dir.join(format!("{name}.stderr"));
            let child = child_command(bin)
                .arg("run")
                .arg(name)
                .arg("--config")
                .arg(config_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&stderr)?)
                // Its own process group: a Ctrl-C reaches the benchmark,
                // which stops every node itself.
                .process_group(0)
                .spawn()
                .with_context(|| format!("starting {name}"))?;
            herd.nodes.push(Node {
                name: name.clone(),
                client: node.client,
                admin: node.admin,
                stderr,
                child,
            });
        }
        herd.wait_listening()?;
        Ok(herd)
    }

    fn wait_listening(&mut self) -> Result<()> {
        wait_listening(&mut self.nodes, START, crate::bench::interrupted)
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .expect("a node of the topology")
    }

    /// Fails if a node has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        for node in &mut self.nodes {
            if let Ok(Some(status)) = node.child.try_wait() {
                bail!(
                    "{} exited ({status}); its last lines:\n{}",
                    node.name,
                    tail(&node.stderr, 10)
                );
            }
        }
        Ok(())
    }

    /// Every node's counters, summed.
    pub fn counters(&self) -> Result<Counters> {
        let mut total = Counters::default();
        for node in &self.nodes {
            let admin = node
                .admin
                .ok_or_else(|| anyhow!("{} has no admin endpoint", node.name))?;
            total.add(&Counters::read(admin).with_context(|| node.name.clone())?);
        }
        Ok(total)
    }

    /// Lines of the nodes' stderr that contain `needle`, over all nodes.
    pub fn count_in_logs(&self, needle: &str) -> usize {
        self.nodes
            .iter()
            .map(|n| count_lines(&n.stderr, needle))
            .sum()
    }

    /// Stops every node; lines for those that did not stop cleanly.
    pub fn stop(&mut self) -> Vec<String> {
        if self.stopped {
            return Vec::new();
        }
        self.stopped = true;
        let mut children: Vec<(String, &mut Child)> = self
            .nodes
            .iter_mut()
            .map(|n| (n.name.clone(), &mut n.child))
            .collect();
        stop_children(&mut children)
    }
}

impl Drop for Herd {
    fn drop(&mut self) {
        for problem in self.stop() {
            eprintln!("warning: {problem}");
        }
    }
}

/// The ceiling server, in its own process.
pub struct Ceiling {
    pub addr: SocketAddr,
    child: Child,
    stdin: Option<ChildStdin>,
    stopped: bool,
}

impl Ceiling {
    /// Runs `exe bench --serve-ceiling` and reads the address it prints.
    pub fn start(exe: &Path) -> Result<Ceiling> {
        let mut child = child_command(exe)
            .args(["bench", "--serve-ceiling"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .context("starting the ceiling server")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut first = String::new();
            let mut reader = BufReader::new(stdout);
            let _ = reader.read_line(&mut first);
            let _ = tx.send(first);
            // Drain anything else so the child never blocks on stdout.
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink);
        });
        let mut ceiling = Ceiling {
            addr: "127.0.0.1:0".parse().expect("an address"),
            child,
            stdin,
            stopped: false,
        };
        let line = rx
            .recv_timeout(START)
            .map_err(|_| anyhow!("the ceiling server did not start within {START:?}"))?;
        ceiling.addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| anyhow!("the ceiling server said {line:?}"))?;
        Ok(ceiling)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(&mut self) -> Vec<String> {
        if self.stopped {
            return Vec::new();
        }
        self.stopped = true;
        // Closing its stdin is its signal to go.
        self.stdin = None;
        let deadline = Instant::now() + STOP;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Vec::new(),
                Ok(Some(status)) => {
                    return vec![format!("the ceiling server exited with {status}")]
                }
                Err(e) => return vec![format!("the ceiling server: {e}")],
                Ok(None) if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return vec![format!(
                        "the ceiling server did not stop within {STOP:?}; killed"
                    )];
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for Ceiling {
    fn drop(&mut self) {
        for problem in self.stop() {
            eprintln!("warning: {problem}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_times_leave_idle_and_iowait_out_and_steal_apart() {
        let stat = "cpu  100 20 30 4000 50 6 7 80 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        let t = MachineTimes::parse(stat, 100.0).unwrap();
        assert_eq!(
            t,
            MachineTimes {
                busy: 1.63,
                stolen: 0.8
            }
        );
        assert_eq!(MachineTimes::parse("intr 1 2\n", 100.0), None);
    }

    #[test]
    fn counters_are_read_from_the_metrics_text() {
        let text = "# HELP herd_updates Location updates by outcome.\n\
            # TYPE herd_updates counter\n\
            herd_updates_total{outcome=\"stale\"} 7\n\
            herd_updates_total{outcome=\"forwarded\"} 30\n\
            herd_requests_total{kind=\"iamat\"} 12\n\
            herd_requests_total{kind=\"whatsat\"} 99\n";
        let c = Counters::parse(text);
        let want = Counters {
            iamat: 12,
            stale: 7,
            forwarded: 30,
            ..Counters::default()
        };
        assert_eq!(c, want);
        let before = Counters { forwarded: 10, ..c };
        assert_eq!(c.since(&before).forwarded, 20);
        assert_eq!(c.since(&before).stale, 0);
    }
}
