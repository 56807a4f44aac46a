//! Operating a real `herd` process: JSON logs for shippers, and SIGHUP
//! reloading certificates (a broken file is refused and the node keeps
//! serving), then a clean SIGTERM.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HERD: &str = env!("CARGO_BIN_EXE_herd");
const PATIENCE: Duration = Duration::from_secs(20);

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits until the log holds a line containing `needle`.
fn log_has(log: &Path, needle: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if std::fs::read_to_string(log).is_ok_and(|t| t.contains(needle)) {
            return;
        }
        assert!(Instant::now() < deadline, "{needle:?} never logged");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ask(port: u16, line: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).unwrap();
    reply
}

#[test]
fn json_logs_and_certificate_reload_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let client = common::port();
    let peer = common::port();
    let path = dir.path().join("herd.toml");
    std::fs::write(
        &path,
        format!(
            "transport = \"quic\"\ncerts = \"certs\"\n[log]\ndir = \"logs\"\nformat = \"json\"\n\
             [nodes.Solo]\nclient = \"127.0.0.1:{client}\"\npeer = \"127.0.0.1:{peer}\"\n"
        ),
    )
    .unwrap();
    let config = herd::config::Config::load(&path).unwrap();
    herd::certs::write_herd(&config, &config.certs, false).unwrap();
    let log = dir.path().join("logs/Solo.log");

    let mut node = Command::new(HERD)
        .args(["run", "Solo", "--config"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    log_has(&log, "serving clients");
    assert!(ask(client, "IAMAT k +1+1 1").starts_with("AT Solo "));

    signal(node.id(), "HUP");
    log_has(&log, "certificates reloaded");

    // A broken certificate file: refused, logged, and the node serves on.
    std::fs::write(config.certs.join("Solo.pem"), "garbage").unwrap();
    signal(node.id(), "HUP");
    log_has(&log, "keeping the old certificates");
    assert!(ask(client, "WHATSAT k 1 1").starts_with("AT Solo "));

    signal(node.id(), "TERM");
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = node.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");

    // Every line is one JSON object, and client traffic is in them.
    let text = std::fs::read_to_string(&log).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(events.iter().all(|e| e["timestamp"].is_string()));
    assert!(events
        .iter()
        .any(|e| e["fields"]["line"] == "IAMAT k +1+1 1"));
    assert!(events.iter().any(|e| e["fields"]["reply"]
        .as_str()
        .is_some_and(|r| r.starts_with("AT Solo "))));
}
