//! `cargo xtask up`: the whole herd of a config on this machine, one process
//! per node, stopped together on Ctrl-C.

use std::fs::File;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use herd::config::{Config, TransportKind};

use crate::bench_procs::{tail, wait_listening, Node};

/// How long a node may take to start listening.
const START: Duration = Duration::from_secs(15);
/// How long nodes get to stop cleanly before they are killed.
const STOP: Duration = Duration::from_secs(10);

pub fn up(root: &Path, config_path: &Path, config: &Config) -> anyhow::Result<()> {
    if config.transport == TransportKind::Quic && certs_missing(config) {
        let written = herd::certs::write_herd(config, &config.certs, false).context(
            "making certificates (cargo xtask gen-certs --force replaces a partial set)",
        )?;
        println!(
            "made {} certificate files in {}",
            written.len(),
            config.certs.display()
        );
    }

    println!("building herd (release)...");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "--package",
            "herd",
            "--bin",
            "herd",
        ])
        .current_dir(root)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed");
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let bin = target.join("release").join("herd");

    let check = Command::new(&bin)
        .arg("check")
        .arg("--config")
        .arg(config_path)
        .output()?;
    if !check.status.success() {
        bail!(
            "herd check failed:\n{}",
            String::from_utf8_lossy(&check.stderr).trim_end()
        );
    }

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())?;
    }

    std::fs::create_dir_all(&config.log_dir)
        .with_context(|| format!("creating {}", config.log_dir.display()))?;
    let mut nodes = Vec::new();
    for (name, node) in &config.nodes {
        let stderr = config.log_dir.join(format!("{name}.stderr"));
        let child = Command::new(&bin)
            .arg("run")
            .arg(name)
            .arg("--config")
            .arg(config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr)?)
            // Their own process group: Ctrl-C reaches this task, which then
            // stops every node the same way.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        nodes.push(Node {
            name: name.clone(),
            client: node.client,
            admin: node.admin,
            stderr,
            child,
        });
    }

    if let Err(e) = wait_listening(&mut nodes, START, || stop.load(Ordering::Relaxed)) {
        stop_all(&mut nodes);
        return Err(e);
    }
    print_table(config, &nodes);

    while !stop.load(Ordering::Relaxed) {
        let exited = nodes
            .iter_mut()
            .find_map(|node| match node.child.try_wait() {
                Ok(Some(status)) => Some((node.name.clone(), status, tail(&node.stderr, 5))),
                _ => None,
            });
        if let Some((name, status, last)) = exited {
            eprintln!("{name} exited ({status}); its last lines:\n{last}");
            stop_all(&mut nodes);
            bail!("{name} stopped unexpectedly; the herd is down");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("\nstopping the herd...");
    stop_all(&mut nodes);
    println!("stopped.");
    Ok(())
}

fn certs_missing(config: &Config) -> bool {
    !config.ca_file().exists()
        || config.nodes.keys().any(|n| {
            let (pem, key) = config.cert_files(n);
            !pem.exists() || !key.exists()
        })
}

fn stop_all(nodes: &mut [Node]) {
    for node in nodes.iter() {
        // SAFETY: kill(2) with a pid we spawned and own; no memory involved.
        unsafe {
            libc::kill(node.child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + STOP;
    for node in nodes.iter_mut() {
        loop {
            match node.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    eprintln!("{} did not stop in {STOP:?}; killing it", node.name);
                    let _ = node.child.kill();
                    let _ = node.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

fn print_table(config: &Config, nodes: &[Node]) {
    let transport = match config.transport {
        TransportKind::Quic => "quic (mutual TLS)",
        TransportKind::Tcp => "tcp (plaintext)",
    };
    println!(
        "\nherd is up: {} nodes over {transport}, places {}\n",
        nodes.len(),
        config.places.provider.as_str()
    );
    println!("  node       client            peer              admin                    log");
    for node in nodes {
        let entry = &config.nodes[&node.name];
        let admin = entry
            .admin
            .map_or("-".to_string(), |a| format!("http://{a}"));
        let log = config.log_dir.join(format!("{}.log", node.name));
        println!(
            "  {:<10} {:<17} {:<17} {:<24} {}",
            node.name,
            node.client.to_string(),
            entry.peer,
            admin,
            log.display()
        );
    }
    if let Some(first) = nodes.iter().find(|n| n.name == "Clark").or(nodes.first()) {
        let (host, port) = (first.client.ip(), first.client.port());
        println!(
            "\ntry:\n  printf 'IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 %s\\n' \"$(date +%s.%N)\" | nc -q1 {host} {port}\n  printf 'WHATSAT kiwi.cs.ucla.edu 10 3\\n' | nc -q1 {host} {}",
            nodes.last().map_or(port, |n| n.client.port())
        );
    }
    println!("\nnode stderr goes to <log dir>/<Node>.stderr; Ctrl-C stops the herd.");
}
