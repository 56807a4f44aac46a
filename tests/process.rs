//! The real `herd` binary as a process: it serves, logs, stops cleanly on
//! SIGTERM, and refuses bad configurations with exit code 2 and one line
//! per problem.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herd::timestamp::{parse_delta, Timestamp};

const HERD: &str = env!("CARGO_BIN_EXE_herd");

/// How long any wait in a test may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// `herd` with `args`, untouched by the caller's `HERD_*` and `RUST_LOG`.
fn herd(args: &[&str]) -> Command {
    let mut cmd = Command::new(HERD);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HERD_") {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("RUST_LOG").args(args);
    cmd
}

fn run(args: &[&str]) -> Output {
    herd(args).output().expect("herd runs")
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

struct NodeSpec {
    name: &'static str,
    client: u16,
    peer: u16,
    neighbours: &'static [&'static str],
}

impl NodeSpec {
    fn new(name: &'static str, neighbours: &'static [&'static str]) -> NodeSpec {
        NodeSpec {
            name,
            client: common::port(),
            peer: common::port(),
            neighbours,
        }
    }

    fn client_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client))
    }
}

/// Writes a tcp config for `nodes` into `dir`, logs under `dir/logs`.
fn write_config(dir: &Path, nodes: &[&NodeSpec]) -> PathBuf {
    let mut text = String::from(
        "transport = \"tcp\"\n[log]\ndir = \"logs\"\n\
         [peer]\nbackoff_min = \"20ms\"\nbackoff_max = \"200ms\"\n",
    );
    for n in nodes {
        let list: Vec<String> = n.neighbours.iter().map(|m| format!("\"{m}\"")).collect();
        text += &format!(
            "[nodes.{}]\nclient = \"127.0.0.1:{}\"\npeer = \"127.0.0.1:{}\"\nneighbours = [{}]\n",
            n.name,
            n.client,
            n.peer,
            list.join(", ")
        );
    }
    let path = dir.join("herd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Clark and Bona, neighbours, in a config written to `dir`.
fn clark_and_bona(dir: &Path) -> (NodeSpec, NodeSpec, PathBuf) {
    let clark = NodeSpec::new("Clark", &["Bona"]);
    let bona = NodeSpec::new("Bona", &["Clark"]);
    let config = write_config(dir, &[&clark, &bona]);
    (clark, bona, config)
}

/// A running `herd run`, killed if the test ends without stopping it.
struct Running {
    name: &'static str,
    child: Option<Child>,
    stderr: PathBuf,
}

impl Running {
    fn start(dir: &Path, config: &Path, name: &'static str) -> Running {
        Running::start_with_env(dir, config, name, &[])
    }

    fn start_with_env(
        dir: &Path,
        config: &Path,
        name: &'static str,
        env: &[(&str, &str)],
    ) -> Running {
        let stderr = dir.join(format!("{name}.stderr"));
        let child = herd(&["run", name, "--config", config.to_str().unwrap()])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("herd starts");
        Running {
            name,
            child: Some(child),
            stderr,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("still running").id()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Connects once the node accepts clients, retrying with a short
    /// back-off until the deadline.
    fn connect(&mut self, addr: SocketAddr) -> Conn {
        let deadline = Instant::now() + PATIENCE;
        let mut backoff = Duration::from_millis(5);
        loop {
            match TcpStream::connect(addr) {
                Ok(stream) => return Conn::new(stream),
                Err(e) => {
                    let child = self.child.as_mut().unwrap();
                    if let Some(status) = child.try_wait().unwrap() {
                        panic!("{} exited early ({status}): {}", self.name, self.stderr());
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{} never accepted clients on {addr}: {e}",
                        self.name
                    );
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(100));
                }
            }
        }
    }

    /// Sends SIGTERM and returns the exit status, failing if the process
    /// does not end within `within`.
    fn terminate(mut self, within: Duration) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let pid = child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(within) {
            Ok(status) => status.unwrap(),
            Err(_) => {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
                panic!("{} did not exit within {within:?} of SIGTERM", self.name);
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A client connection with blocking I/O bounded by `PATIENCE`.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
        Conn {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a reply in time");
        assert_eq!(line.pop(), Some('\n'), "a whole line");
        line
    }

    fn ask(&mut self, request: &str) -> String {
        self.writer
            .write_all(format!("{request}\n").as_bytes())
            .unwrap();
        self.line()
    }

    /// A WHATSAT reply: the AT line and the JSON up to the empty line.
    fn whatsat(&mut self, request: &str) -> (String, serde_json::Value) {
        let at = self.ask(request);
        let mut json = String::new();
        loop {
            let line = self.line();
            if line.is_empty() {
                break;
            }
            json += &line;
            json.push('\n');
        }
        (at, serde_json::from_str(&json).expect("JSON"))
    }
}

fn now_text() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

/// Whether `line` starts with an RFC 3339 time such as
/// `2025-05-19T22:53:47.959498Z`.
fn has_timestamp(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 19
        && b.iter().take(19).enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            _ => c.is_ascii_digit(),
        })
}

#[test]
fn a_node_serves_logs_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let clark = NodeSpec::new("Clark", &[]);
    let config = write_config(dir.path(), &[&clark]);
    let mut node = Running::start(dir.path(), &config, "Clark");
    let mut c = node.connect(clark.client_addr());

    let time = now_text();
    let request = format!("IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 {time}");
    let reply = c.ask(&request);
    assert!(
        reply.starts_with("AT Clark +")
            && reply.ends_with(&format!(" kiwi.cs.ucla.edu +34.068930-118.445127 {time}")),
        "{reply}"
    );
    assert_eq!(c.ask("bogus"), "? bogus");

    // A client still connected (and silent) does not hold up the exit; it
    // sees the connection end.
    let status = node.terminate(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "exit status {status}");
    let mut rest = String::new();
    let n = c.reader.read_line(&mut rest).expect("end of stream");
    assert_eq!((n, rest.as_str()), (0, ""), "nothing after the replies");

    let log = std::fs::read_to_string(dir.path().join("logs/Clark.log")).expect("Clark.log");
    let lines: Vec<&str> = log.lines().collect();
    let find = |what: &str, text: &str| {
        lines
            .iter()
            .find(|l| l.contains(what) && l.contains(text))
            .unwrap_or_else(|| panic!("no {what:?} line with {text:?} in the log:\n{log}"))
    };
    let line_in = find(" in ", &request);
    let reply_out = find(" out ", &reply);
    let invalid_out = find(" out ", "? bogus");
    for l in [line_in, reply_out, invalid_out] {
        assert!(has_timestamp(l), "no timestamp: {l}");
    }
    // The line's log time is the receive time its AT line's delta was
    // measured to: the client's time plus the delta, to the microsecond.
    let delta = reply.split(' ').nth(2).expect("a delta");
    let received = Timestamp::parse(time.as_bytes())
        .expect("the client's time")
        .as_nanos()
        + parse_delta(delta.as_bytes()).expect("an AT delta");
    let (secs, frac) = (
        received.div_euclid(1_000_000_000),
        received.rem_euclid(1_000_000_000),
    );
    let day = secs.rem_euclid(86_400);
    let clock = format!(
        "{:02}:{:02}:{:02}.{:06}Z",
        day / 3600,
        day / 60 % 60,
        day % 60,
        frac / 1000
    );
    assert_eq!(&line_in[11..27], clock, "{line_in}\n{reply}");
}

#[test]
fn two_nodes_share_a_location_and_both_stop_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (clark, bona, config) = clark_and_bona(dir.path());
    let mut clark_node = Running::start(dir.path(), &config, "Clark");
    let mut bona_node = Running::start(dir.path(), &config, "Bona");
    let mut at_clark = clark_node.connect(clark.client_addr());
    let mut at_bona = bona_node.connect(bona.client_addr());

    let reply = at_clark.ask(&format!("IAMAT kiwi +34.068930-118.445127 {}", now_text()));
    assert!(reply.starts_with("AT Clark "), "{reply}");
    // Bona learns of kiwi once the link is up and the update arrives; ask
    // until it knows, with a short back-off, bounded by a deadline.
    let deadline = Instant::now() + PATIENCE;
    let mut backoff = Duration::from_millis(5);
    loop {
        let answer = at_bona.ask("WHATSAT kiwi 10 3");
        if answer != "? WHATSAT kiwi 10 3" {
            assert_eq!(answer, reply, "Bona answers with Clark's AT line");
            let mut json = String::new();
            loop {
                let line = at_bona.line();
                if line.is_empty() {
                    break;
                }
                json += &line;
            }
            let value: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert!(value["results"].as_array().unwrap().len() <= 3);
            assert!(value["status"].is_string());
            break;
        }
        assert!(Instant::now() < deadline, "Bona never learnt of kiwi");
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_millis(100));
    }
    // Clark's own answer has the same shape, from the bundled offline data.
    let (at, value) = at_clark.whatsat("WHATSAT kiwi 10 3");
    assert_eq!(at, reply);
    assert_eq!(value["status"], "OK", "{value}");
    drop((at_clark, at_bona));

    for node in [clark_node, bona_node] {
        let name = node.name;
        let status = node.terminate(Duration::from_secs(10));
        assert_eq!(status.code(), Some(0), "{name}: exit status {status}");
    }
}

#[test]
fn check_names_the_key_of_an_unknown_setting() {
    let dir = tempfile::tempdir().unwrap();
    let clark = NodeSpec::new("Clark", &[]);
    let config = write_config(dir.path(), &[&clark]);
    let text = std::fs::read_to_string(&config).unwrap();
    for (extra, key) in [
        ("bogus = 1\n", "bogus"),
        ("[limits]\nmax_lines = 10\n", "limits.max_lines"),
    ] {
        // Top-level keys go before the first table.
        let bad = if extra.starts_with('[') {
            format!("{text}{extra}")
        } else {
            format!("{extra}{text}")
        };
        std::fs::write(&config, bad).unwrap();
        let out = run(&["check", "--config", config.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let lines = stderr_lines(&out);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains(&config.display().to_string()) && lines[0].contains(key),
            "{lines:?}"
        );
    }
}

#[test]
fn check_reports_each_problem_on_its_own_line() {
    let dir = tempfile::tempdir().unwrap();
    let bona = NodeSpec::new("Bona", &[]);
    let mut clark = NodeSpec::new("Clark", &["Nobody"]);
    clark.client = bona.client;
    let config = write_config(dir.path(), &[&bona, &clark]);
    let out = run(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("nodes.Clark.neighbours") && l.contains("Nobody")),
        "{lines:?}"
    );
    let port = format!("127.0.0.1:{}", bona.client);
    assert!(
        lines.iter().any(|l| l.contains("nodes.Clark.client")
            && l.contains("nodes.Bona.client")
            && l.contains(&port)),
        "{lines:?}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
}

#[test]
fn check_on_a_good_tcp_config_prints_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (clark, bona, config) = clark_and_bona(dir.path());
    let out = run(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("2 nodes") && stdout.contains("tcp"),
        "{stdout}"
    );
    for (name, node) in [("Clark", &clark), ("Bona", &bona)] {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(name) && l.contains(&node.client.to_string())),
            "{stdout}"
        );
    }
}

#[test]
fn environment_variables_reach_a_node_whatever_the_case_of_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bona, config) = clark_and_bona(dir.path());
    let moved = common::port();
    let out = herd(&["check", "--config", config.to_str().unwrap()])
        .env("HERD_NODES__CLARK__CLIENT", format!("127.0.0.1:{moved}"))
        .output()
        .expect("herd runs");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("2 nodes"), "{stdout}");
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {stdout}"))
            .to_string()
    };
    assert!(
        line("Clark").contains(&format!("127.0.0.1:{moved}")),
        "{stdout}"
    );
    assert!(line("Bona").contains(&bona.client.to_string()), "{stdout}");
}

/// The nice value of each of `pid`'s threads, by thread name.
#[cfg(target_os = "linux")]
fn thread_nice_values(pid: u32) -> Vec<(String, i64)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let name = std::fs::read_to_string(task.join("comm")).unwrap();
        let stat = std::fs::read_to_string(task.join("stat")).unwrap();
        threads.push((name.trim().to_string(), stat_nice(&stat)));
    }
    threads
}

/// The nice value in a `/proc/.../stat` line (its 19th field; the name in
/// parentheses may hold spaces).
#[cfg(target_os = "linux")]
fn stat_nice(stat: &str) -> i64 {
    let after = &stat[stat.rfind(')').unwrap() + 1..];
    after.split_whitespace().nth(16).unwrap().parse().unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn links_run_on_threads_of_their_own_at_a_lower_priority() {
    let own = stat_nice(&std::fs::read_to_string("/proc/self/stat").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let clark = NodeSpec::new("Clark", &[]);
    let config = write_config(dir.path(), &[&clark]);
    for (env, lower) in [(None, 10), (Some("3"), 3), (Some("0"), 0)] {
        let env: Vec<(&str, &str)> = env
            .map(|n| ("HERD_RUNTIME__LINKS_NICE", n))
            .into_iter()
            .collect();
        let mut node = Running::start_with_env(dir.path(), &config, "Clark", &env);
        // Serving clients: both runtimes are built.
        node.connect(clark.client_addr());
        let threads = thread_nice_values(node.pid());
        let of = |name: &str| -> Vec<i64> {
            threads
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| *v)
                .collect()
        };
        let (links, workers) = (of("herd-links"), of("herd-worker"));
        assert!(
            !links.is_empty() && !workers.is_empty(),
            "{env:?}: {threads:?}"
        );
        let expected = (own + lower).min(19);
        assert!(links.iter().all(|&n| n == expected), "{env:?}: {threads:?}");
        assert!(workers.iter().all(|&n| n == own), "{env:?}: {threads:?}");
        assert_eq!(node.terminate(Duration::from_secs(10)).code(), Some(0));
    }
}

#[test]
fn running_an_unknown_node_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let clark = NodeSpec::new("Clark", &[]);
    let config = write_config(dir.path(), &[&clark]);
    let out = run(&["run", "Nobody", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("Nobody") && lines[0].contains("Clark"),
        "{lines:?}"
    );
}

#[test]
fn a_missing_config_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.toml");
    let missing = missing.to_str().unwrap();
    for args in [
        &["check", "--config", missing][..],
        &["run", "Clark", "--config", missing],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let lines = stderr_lines(&out);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains(missing) && lines[0].contains("no such config file"),
            "{lines:?}"
        );
    }
}
