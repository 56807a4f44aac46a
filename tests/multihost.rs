//! The herd across "hosts": each of the five nodes of the reference topology
//! (Clark–Jaquez, Clark–Bona, Campbell–{Bailey, Bona, Jaquez}, Bona–Bailey)
//! runs as the real `herd` binary in its own network namespace, with its own
//! address, its own copy of the config and only the certificate files a host
//! gets (`ca.pem`, `<Node>.pem`, `<Node>.key`; never `ca.key`), over `quic`.
//!
//! The namespaces hang off a bridge in a dedicated "switch" namespace, and
//! every address (10.250.0.0/24) exists only inside them: nothing here
//! touches the host's own network. Clients are driven from inside each
//! namespace by this very test binary, run again through `ip netns exec` as
//! a tiny TCP client (the ignored `netns_client` "test" below).
//!
//! It needs root and iproute2's `ip`. Without them it fails, loudly: it
//! never skips. Everything it makes (processes, namespaces, the veth pairs
//! and the bridge inside them) is removed when it ends, panic or not.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herd::certs::{self, Ca, Validity};
use herd::config::Config;

const HERD: &str = env!("CARGO_BIN_EXE_herd");

/// How long any one wait may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// The test network: 10.250.0.0/24, only ever inside the test namespaces.
const NET: &str = "10.250.0";
const CLIENT_PORT: u16 = 12000;
const PEER_PORT: u16 = 12100;

/// The reference topology, one host (namespace, address) per node.
const NODES: &[(&str, u8, &[&str])] = &[
    ("Bailey", 10, &["Bona", "Campbell"]),
    ("Bona", 11, &["Clark", "Campbell", "Bailey"]),
    ("Campbell", 12, &["Bailey", "Bona", "Jaquez"]),
    ("Clark", 13, &["Jaquez", "Bona"]),
    ("Jaquez", 14, &["Clark", "Campbell"]),
];

/// The sixth host, where the impostors run.
const IMPOSTOR_HOST: u8 = 99;

/// Link settings tuned so redials and restarts are noticed quickly.
const PEER_SETTINGS: &str = "[peer]\nconnect_timeout = \"2s\"\nkeepalive = \"500ms\"\n\
     idle_timeout = \"3s\"\nbackoff_min = \"50ms\"\nbackoff_max = \"500ms\"\n";

/// What `herd run` logs once it serves clients.
const SERVING: &str = "serving clients";

// The in-namespace client: what to send where, and where to put the reply.
const CLIENT_ADDR: &str = "HERD_MULTIHOST_CLIENT_ADDR";
const CLIENT_SEND: &str = "HERD_MULTIHOST_CLIENT_SEND";
const CLIENT_OUT: &str = "HERD_MULTIHOST_CLIENT_OUT";

fn ip_of(host: u8) -> String {
    format!("{NET}.{host}")
}

fn now() -> String {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    format!("{}.{:09}", t.as_secs(), t.subsec_nanos())
}

/// Runs `ip args`, failing the test with `ip`'s own words if it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run iproute2's `ip` ({e}): this test needs it (Debian: apt-get install iproute2) and root"
            )
        });
    assert!(
        out.status.success(),
        "`ip {}` failed ({}): {}\nthis test needs root (CI runs as root) and iproute2 to make network namespaces; it never skips",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// `ip` quietly, for clean-up: failures do not matter there.
fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn kill(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Removes namespaces left behind by an earlier run of this test that was
/// killed before it could clean up (`herd-<pid>-…` whose pid is gone), and
/// the processes still running in them.
fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix("herd-")
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Ok(pids) = Command::new("ip").args(["netns", "pids", name]).output() {
            for p in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                if let Ok(p) = p.parse() {
                    kill(p, "-KILL");
                }
            }
        }
        ip_quiet(&["netns", "del", name]);
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A config's TOML: transport quic, certs and logs beside the file.
fn config_text(nodes: &[(&str, String, u16, u16, Vec<&str>)]) -> String {
    let mut text =
        format!("transport = \"quic\"\ncerts = \"certs\"\n[log]\ndir = \"logs\"\n{PEER_SETTINGS}");
    for (name, addr, client, peer, neighbours) in nodes {
        let list: Vec<String> = neighbours.iter().map(|n| format!("\"{n}\"")).collect();
        text += &format!(
            "[nodes.{name}]\nclient = \"{addr}:{client}\"\npeer = \"{addr}:{peer}\"\nneighbours = [{}]\n",
            list.join(", ")
        );
    }
    text
}

/// Writes `text` as `<dir>/herd.toml` and parses it (no `HERD_` variables).
fn write_config(dir: &Path, text: &str) -> (PathBuf, Config) {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("herd.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::from_toml(text, &path).unwrap_or_else(|e| panic!("{e}"));
    (path, config)
}

/// One `herd run` in a namespace.
struct Proc {
    /// The namespace it runs in.
    ns: String,
    node: String,
    config: PathBuf,
    stderr: PathBuf,
    log: PathBuf,
    /// How many times its log said [`SERVING`] before it was started.
    served_before: usize,
    child: Option<Child>,
}

/// Everything the test made; dropping it removes all of it.
struct Lab {
    dir: tempfile::TempDir,
    prefix: String,
    switch: String,
    namespaces: Vec<String>,
    procs: BTreeMap<String, Proc>,
}

impl Lab {
    /// The switch namespace with its bridge; no hosts yet.
    fn new() -> Lab {
        remove_stale_namespaces();
        let prefix = format!("herd-{}", std::process::id());
        let mut lab = Lab {
            dir: tempfile::tempdir().unwrap(),
            switch: format!("{prefix}-switch"),
            prefix,
            namespaces: Vec::new(),
            procs: BTreeMap::new(),
        };
        let switch = lab.switch.clone();
        lab.add_namespace(&switch);
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        lab
    }

    fn add_namespace(&mut self, ns: &str) {
        ip(&["netns", "add", ns]);
        // Recorded at once, so a failure further on still removes it.
        self.namespaces.push(ns.to_string());
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }

    /// A host: its namespace, a veth pair to the bridge (`eth0` inside),
    /// and `address`/24 on `eth0`. Returns the namespace's name.
    fn add_host(&mut self, label: &str, host: u8) -> String {
        let ns = format!("{}-{label}", self.prefix);
        self.add_namespace(&ns);
        let port = format!("v{host}");
        let switch = self.switch.clone();
        ip(&[
            "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &ns,
        ]);
        ip(&["-n", &switch, "link", "set", &port, "master", "br0"]);
        ip(&["-n", &switch, "link", "set", &port, "up"]);
        let address = format!("{}/24", ip_of(host));
        ip(&["-n", &ns, "addr", "add", &address, "dev", "eth0"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ns
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Starts `node` of `config` in `ns`, as `key` (its name in `procs`),
    /// without waiting for it: see [`Lab::wait_serving`].
    fn spawn(&mut self, key: &str, ns: &str, node: &str, config: &Path) {
        let dir = config.parent().unwrap();
        let stderr = dir.join(format!("{node}.stderr"));
        let log = dir.join("logs").join(format!("{node}.log"));
        // A restart appends to the same log: count what is there already.
        let served_before = read(&log).matches(SERVING).count();
        let mut cmd = Command::new("ip");
        // `ip netns exec` execs the command: the child is `herd` itself.
        cmd.args(["netns", "exec", ns, HERD, "run", node, "--config"])
            .arg(config);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("HERD_") {
                cmd.env_remove(k);
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr)
            .unwrap();
        let child = cmd
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("ip netns exec … herd run starts");
        self.procs.insert(
            key.to_string(),
            Proc {
                ns: ns.to_string(),
                node: node.to_string(),
                config: config.to_path_buf(),
                stderr,
                log,
                served_before,
                child: Some(child),
            },
        );
    }

    /// Waits until `key` says in its log that it serves clients.
    fn wait_serving(&mut self, key: &str) {
        self.wait(&format!("{key} to start serving"), |lab| {
            let p = &lab.procs[key];
            let served = read(&p.log).matches(SERVING).count();
            (served > p.served_before)
                .then_some(())
                .ok_or_else(|| format!("no {SERVING:?} in its log; stderr: {}", read(&p.stderr)))
        });
    }

    fn start(&mut self, key: &str, ns: &str, node: &str, config: &Path) {
        self.spawn(key, ns, node, config);
        self.wait_serving(key);
    }

    /// Sends SIGTERM to `key` and waits for it to exit.
    fn stop(&mut self, key: &str) -> ExitStatus {
        let p = self.procs.get_mut(key).unwrap();
        let mut child = p.child.take().expect("running");
        kill(child.id(), "-TERM");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{key} did not exit within {PATIENCE:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts `keys` again, exactly as before, and waits until they serve.
    fn restart(&mut self, keys: &[&str]) {
        for key in keys {
            let p = &self.procs[*key];
            assert!(p.child.is_none(), "{key} is still running");
            let (ns, node, config) = (p.ns.clone(), p.node.clone(), p.config.clone());
            self.spawn(key, &ns, &node, &config);
        }
        for key in keys {
            self.wait_serving(key);
        }
    }

    fn log(&self, key: &str) -> String {
        read(&self.procs[key].log)
    }

    /// Fails the test if a process ended on its own.
    fn check_alive(&mut self) {
        for (key, p) in &mut self.procs {
            if let Some(child) = p.child.as_mut() {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("{key} exited ({status}): {}", read(&p.stderr));
                }
            }
        }
    }

    /// Polls `probe` until it gives a value, at most [`PATIENCE`]; on
    /// timeout fails with `what` and the last thing `probe` saw.
    fn wait<T>(&mut self, what: &str, mut probe: impl FnMut(&mut Lab) -> Result<T, String>) -> T {
        let deadline = Instant::now() + PATIENCE;
        loop {
            self.check_alive();
            match probe(self) {
                Ok(v) => return v,
                Err(last) if Instant::now() > deadline => {
                    panic!("waited {PATIENCE:?} for {what}; last saw: {last}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// One request from inside `ns` to `addr`: the whole reply, or why not.
    fn ask(&self, ns: &str, addr: &str, request: &str) -> Result<String, String> {
        let out = self.dir.path().join("reply");
        let _ = std::fs::remove_file(&out);
        let me = std::env::current_exe().unwrap();
        let run = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(me)
            .args(["netns_client", "--exact", "--ignored", "--nocapture"])
            .args(["--test-threads", "1", "-q"])
            .env(CLIENT_ADDR, addr)
            .env(CLIENT_SEND, request)
            .env(CLIENT_OUT, &out)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        match std::fs::read_to_string(&out) {
            Ok(reply) if run.status.success() => Ok(reply),
            _ => Err(format!(
                "client in {ns} to {addr}: {} {}",
                run.status,
                String::from_utf8_lossy(&run.stderr).trim()
            )),
        }
    }

    /// `request` to `node`'s client port, from its own host.
    fn ask_node(&self, node: &str, request: &str) -> Result<String, String> {
        let p = &self.procs[node];
        let host = NODES.iter().find(|n| n.0 == node).unwrap().1;
        self.ask(&p.ns, &format!("{}:{CLIENT_PORT}", ip_of(host)), request)
    }

    /// The first line of `node`'s reply to `WHATSAT client`.
    fn whatsat(&self, node: &str, client: &str) -> Result<String, String> {
        let reply = self.ask_node(node, &format!("WHATSAT {client} 10 1"))?;
        Ok(reply.lines().next().unwrap_or_default().to_string())
    }

    /// Waits until `node` answers WHATSAT for `client` with `line`.
    fn wait_for_line(&mut self, node: &str, client: &str, line: &str) {
        self.wait(&format!("{node} to hold {line:?}"), |lab| {
            let got = lab.whatsat(node, client)?;
            (got == line).then_some(()).ok_or(got)
        });
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (key, p) in &self.procs {
                let log = read(&p.log);
                let tail: Vec<&str> = log.lines().rev().take(25).collect();
                eprintln!("---- {key}: last lines of {}", p.log.display());
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
                eprintln!("---- {key}: stderr\n{}", read(&p.stderr));
            }
        }
        for p in self.procs.values_mut() {
            if let Some(mut child) = p.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // Deleting a namespace destroys the veth ends in it, and so the
        // pairs; the switch namespace takes the bridge with it.
        for ns in self.namespaces.iter().rev() {
            ip_quiet(&["netns", "del", ns]);
        }
    }
}

/// Not a test: the client [`Lab::ask`] runs inside a namespace. It sends
/// one line, half-closes, and writes everything the node answers (up to
/// the node closing) to a file.
#[test]
#[ignore = "a helper that the multihost test runs inside its namespaces"]
fn netns_client() {
    let Ok(addr) = std::env::var(CLIENT_ADDR) else {
        return;
    };
    let addr: SocketAddr = addr.parse().unwrap();
    let request = std::env::var(CLIENT_SEND).unwrap();
    let out = std::env::var(CLIENT_OUT).unwrap();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(format!("{request}\n").as_bytes())
        .and_then(|()| stream.shutdown(std::net::Shutdown::Write))
        .unwrap_or_else(|e| panic!("send to {addr}: {e}"));
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .unwrap_or_else(|e| panic!("reply from {addr}: {e}"));
    std::fs::write(out, reply).unwrap();
}

#[test]
fn a_herd_across_network_namespaces() {
    let started = Instant::now();
    let mut lab = Lab::new();

    // The herd's config, one copy per host; certificates made once (on the
    // "admin machine") and handed out: ca.pem and the host's own pair.
    let text = config_text(
        &NODES
            .iter()
            .map(|&(name, host, neighbours)| {
                (
                    name,
                    ip_of(host),
                    CLIENT_PORT,
                    PEER_PORT,
                    neighbours.to_vec(),
                )
            })
            .collect::<Vec<_>>(),
    );
    let (_, admin_config) = write_config(&lab.path("admin"), &text);
    let admin_certs = lab.path("admin/certs");
    certs::write_herd(&admin_config, &admin_certs, false).unwrap();
    let mut hosts = Vec::new();
    for &(node, host, _) in NODES {
        let dir = lab.path(&format!("hosts/{node}"));
        let (config, _) = write_config(&dir, &text);
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        for file in [
            "ca.pem".to_string(),
            format!("{node}.pem"),
            format!("{node}.key"),
        ] {
            std::fs::copy(admin_certs.join(&file), dir.join("certs").join(&file)).unwrap();
        }
        let ns = lab.add_host(&node.to_ascii_lowercase(), host);
        hosts.push((node, ns, config));
    }
    let impostor_ns = lab.add_host("impostor", IMPOSTOR_HOST);
    for (node, ns, config) in &hosts {
        lab.spawn(node, ns, node, config);
    }
    for (node, _, _) in &hosts {
        lab.wait_serving(node);
    }
    eprintln!("five hosts up after {:?}", started.elapsed());

    // 1. Propagation: a report at Clark reaches Bailey, which is not
    //    Clark's neighbour, through the herd's links between hosts.
    let client = "kiwi.multihost.example";
    let reply = lab
        .ask_node(
            "Clark",
            &format!("IAMAT {client} +34.068930-118.445127 {}", now()),
        )
        .unwrap();
    let first = reply.trim_end().to_string();
    assert!(first.starts_with("AT Clark "), "{reply:?}");
    lab.wait_for_line("Bailey", client, &first);
    for (node, _, _) in &hosts {
        lab.wait_for_line(node, client, &first);
    }
    for (node, _, _) in &hosts {
        assert!(
            lab.log(node).contains("link up"),
            "{node} logged no link: {}",
            lab.log(node)
        );
    }
    eprintln!("propagated to every host after {:?}", started.elapsed());

    // 2. Impostors on a sixth host dial Clark, each naming itself after a
    //    node that sorts before Clark, so that it is the dialling end:
    //    - "Bona" with a certificate from another herd's CA, made by
    //      gen-certs too (so with the same CA name: Clark finds the
    //      signature bad rather than the issuer unknown); it trusts this
    //      herd's CA as well, so it accepts Clark and presents its own;
    //    - "Campbell" with a genuine certificate from the herd's CA: a herd
    //      member, but not one of Clark's neighbours.
    let clark_addr = ip_of(13);
    let impostor_addr = ip_of(IMPOSTOR_HOST);
    let herd_ca_pem = read(&admin_certs.join("ca.pem"));
    let mut impostors = Vec::new();
    for (label, name, offset) in [
        ("impostor-ca", "Bona", 0),
        ("impostor-member", "Campbell", 1),
    ] {
        let text = config_text(&[
            (
                name,
                impostor_addr.clone(),
                CLIENT_PORT + offset,
                PEER_PORT + offset,
                vec!["Clark"],
            ),
            (
                "Clark",
                clark_addr.clone(),
                CLIENT_PORT,
                PEER_PORT,
                vec![name],
            ),
        ]);
        let dir = lab.path(label);
        let (path, config) = write_config(&dir, &text);
        let certs_dir = dir.join("certs");
        if label == "impostor-ca" {
            certs::write_herd(&config, &certs_dir, false).unwrap();
            let foreign = read(&certs_dir.join("ca.pem"));
            std::fs::write(certs_dir.join("ca.pem"), foreign + &herd_ca_pem).unwrap();
        } else {
            let ca = Ca::from_pem(&herd_ca_pem, &read(&admin_certs.join("ca.key"))).unwrap();
            let issued = ca
                .issue_for(&config, name, Validity::node_default())
                .unwrap();
            std::fs::create_dir_all(&certs_dir).unwrap();
            std::fs::write(certs_dir.join("ca.pem"), &herd_ca_pem).unwrap();
            std::fs::write(certs_dir.join(format!("{name}.pem")), issued.cert_pem).unwrap();
            write_private(&certs_dir.join(format!("{name}.key")), &issued.key_pem);
        }
        lab.start(label, &impostor_ns, name, &path);
        let remote = format!("remote={impostor_addr}:{}", PEER_PORT + offset);
        let impostor_client = format!("{label}.multihost.example");
        let reply = lab
            .ask(
                &impostor_ns,
                &format!("{impostor_addr}:{}", CLIENT_PORT + offset),
                &format!("IAMAT {impostor_client} +34.068930-118.445127 {}", now()),
            )
            .unwrap();
        assert!(reply.starts_with(&format!("AT {name} ")), "{reply:?}");
        impostors.push((label, remote, impostor_client));
    }
    // Each must have been refused at least twice since its update was
    // made (it redials with backoff), so it has had its chances.
    let seen: Vec<usize> = impostors
        .iter()
        .map(|(_, remote, _)| refusals(&lab.log("Clark"), remote).len())
        .collect();
    for ((label, remote, _), before) in impostors.iter().zip(seen) {
        lab.wait(&format!("Clark to refuse {label} twice more"), |lab| {
            let n = refusals(&lab.log("Clark"), remote).len();
            (n >= before + 2)
                .then_some(())
                .ok_or(format!("{n} refusals"))
        });
    }
    let clark_log = lab.log("Clark");
    let foreign = refusals(&clark_log, &impostors[0].1);
    assert!(
        foreign
            .iter()
            .all(|l| l.contains("handshake failed: ") && l.contains("invalid peer certificate")),
        "the other CA's certificate is refused in the handshake: {foreign:#?}"
    );
    // Clark judged the certificate the impostor presented, so the impostor
    // had first verified Clark's (under TLS 1.3 a client sends its own only
    // then) through a ca.pem holding two CAs of the same name, the wrong one
    // first: a bundle of an old and a new CA works, which is what rolling
    // the CA relies on (deploy/README.md).
    let member = refusals(&clark_log, &impostors[1].1);
    assert!(
        member
            .iter()
            .all(|l| l.contains("certificate names none of this node's neighbours")),
        "a herd certificate for a non-neighbour is refused as such: {member:#?}"
    );
    for (label, remote, impostor_client) in &impostors {
        assert!(
            !clark_log
                .lines()
                .any(|l| l.contains(remote) && l.contains("link up")),
            "{label} got a link to Clark:\n{clark_log}"
        );
        let reply = lab
            .ask_node("Clark", &format!("WHATSAT {impostor_client} 10 1"))
            .unwrap();
        assert_eq!(
            reply,
            format!("? WHATSAT {impostor_client} 10 1\n"),
            "{label}'s update reached Clark"
        );
    }
    for (label, _, _) in &impostors {
        assert!(lab.stop(label).success(), "{label} stopped cleanly");
    }
    eprintln!("impostors refused after {:?}", started.elapsed());

    // 3. Catch-up: with Bona and Campbell stopped Bailey is cut off; an
    //    update at Clark reaches Jaquez but not Bailey, and reaches Bailey
    //    once Bona and Campbell are back (they come back empty and catch
    //    up from Clark and Jaquez, then pass it on).
    for node in ["Bona", "Campbell"] {
        let status = lab.stop(node);
        assert!(
            status.success(),
            "{node} exits cleanly on SIGTERM: {status}"
        );
    }
    let reply = lab
        .ask_node(
            "Clark",
            &format!("IAMAT {client} +34.052235-118.243683 {}", now()),
        )
        .unwrap();
    let second = reply.trim_end().to_string();
    assert!(second.starts_with("AT Clark "), "{reply:?}");
    lab.wait_for_line("Jaquez", client, &second);
    assert_eq!(
        lab.whatsat("Bailey", client).unwrap(),
        first,
        "Bailey, cut off, still holds the first report"
    );
    lab.restart(&["Bona", "Campbell"]);
    lab.wait_for_line("Bailey", client, &second);
    for node in ["Bona", "Campbell"] {
        lab.wait_for_line(node, client, &second);
    }
    eprintln!("caught up after {:?}", started.elapsed());
}

/// The lines of `log` that record a refused link from `remote`.
fn refusals<'a>(log: &'a str, remote: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains("link refused") && l.contains(remote))
        .collect()
}
