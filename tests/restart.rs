//! A crashed QUIC neighbour that comes back is noticed through its
//! stateless reset, not after the idle timeout: its reset key is derived
//! from its own private key, so the restarted process can prove it ended
//! the old connection. Real processes, so the crash is a real SIGKILL.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

const HERD: &str = env!("CARGO_BIN_EXE_herd");
/// Far below the configured idle timeout (30 s): the link must come back
/// long before the old connection could have timed out.
const PATIENCE: Duration = Duration::from_secs(15);

struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start(config: &Path, node: &str) -> Child {
    Command::new(HERD)
        .args(["run", node, "--config"])
        .arg(config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Polls Alpha's view of its link to Bravo until `ready` holds.
async fn wait_for_link(admin: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(response) = reqwest::get(format!("http://{admin}/peers")).await {
            if let Ok(peers) = response.json::<Value>().await {
                let link = &peers["peers"]["Bravo"];
                if ready(link) {
                    return link.clone();
                }
            }
        }
        assert!(Instant::now() < deadline, "link state not reached in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_crashed_neighbour_is_noticed_by_its_stateless_reset() {
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", common::port());
    // Alpha sorts first, so Alpha dials and Bravo only accepts: Bravo's
    // return cannot replace the old link by dialling, only the reset can
    // end it before the idle timeout.
    let text = format!(
        "transport = \"quic\"\ncerts = \"certs\"\n[log]\ndir = \"logs\"\n\
         [peer]\nkeepalive = \"200ms\"\nidle_timeout = \"30s\"\nbackoff_min = \"20ms\"\nbackoff_max = \"200ms\"\n\
         [nodes.Alpha]\nclient = \"127.0.0.1:{}\"\npeer = \"127.0.0.1:{}\"\nadmin = \"{admin}\"\nneighbours = [\"Bravo\"]\n\
         [nodes.Bravo]\nclient = \"127.0.0.1:{}\"\npeer = \"127.0.0.1:{}\"\nneighbours = [\"Alpha\"]\n",
        common::port(),
        common::port(),
        common::port(),
        common::port()
    );
    let path = dir.path().join("herd.toml");
    std::fs::write(&path, text).unwrap();
    let config = herd::config::Config::load(&path).unwrap();
    herd::certs::write_herd(&config, &config.certs, false).unwrap();

    let mut nodes = Nodes(vec![start(&path, "Alpha"), start(&path, "Bravo")]);
    wait_for_link(&admin, |l| l["state"] == "up").await;

    let crashed = now();
    nodes.0[1].kill().unwrap();
    nodes.0[1].wait().unwrap();
    nodes.0[1] = start(&path, "Bravo");

    let link = wait_for_link(&admin, |l| {
        l["state"] == "up" && l["since"].as_f64().unwrap_or(0.0) > crashed
    })
    .await;
    let reason = link["last_error"].as_str().unwrap_or_default();
    assert!(reason.contains("reset"), "old link ended by: {reason:?}");
}
