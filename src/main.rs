//! `herd run <NODE>` runs one node; `herd check` validates a configuration
//! and its certificates.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{Parser, Subcommand};

use herd::config::{self, Config, LogFormat, TransportKind};
use herd::node::BoundNode;

#[derive(Parser)]
#[command(
    name = "herd",
    version,
    about = "An application-server herd for rapidly changing locations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node of the herd.
    Run {
        /// The node's name, as in the config's [nodes] table.
        node: String,
        /// Config file (default: $HERD_CONFIG, else config/herd.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check the config and, for quic, every node's certificate.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Check only this node's certificate (on a host that holds only
        /// its own files).
        #[arg(long)]
        node: Option<String>,
    },
}

/// Certificates expiring sooner than this are reported by `check`.
const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

fn config_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("HERD_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH))
}

fn load(flag: Option<PathBuf>) -> Result<Config, ExitCode> {
    Config::load(&config_path(flag)).map_err(|e| {
        for problem in &e.problems {
            eprintln!("error: {problem}");
        }
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    fixed_mmap_threshold();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config, node } => check(config, node),
        Command::Run { node, config } => {
            let config = match load(config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if let Err(e) = config.node(&node) {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            if config.transport == TransportKind::Quic {
                let problems =
                    herd::tls::check_node(&config, &node, SystemTime::now(), Duration::ZERO);
                if !problems.is_empty() {
                    for p in problems {
                        eprintln!("error: {p}");
                    }
                    eprintln!("hint: make certificates with `cargo xtask gen-certs`");
                    return ExitCode::from(2);
                }
            }
            let json = config.log_format == LogFormat::Json;
            let _guard = match herd::logging::init(&config.log_dir, &node, json) {
                Ok(g) => g,
                Err(e) => {
                    eprintln!("error: log.dir {}: {e}", config.log_dir.display());
                    return ExitCode::from(2);
                }
            };
            let runtimes = runtime(config.runtime.workers, "herd-worker", 0).and_then(|clients| {
                let links = runtime(
                    config.runtime.links_workers,
                    "herd-links",
                    config.runtime.links_nice,
                )?;
                Ok((clients, links))
            });
            let (runtime, links) = match runtimes {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(config, node, links.handle().clone())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// A runtime of `workers` threads (0: one per core) named `name`, each
/// running `nice` levels below the process.
fn runtime(workers: usize, name: &str, nice: u8) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if workers > 0 {
        builder.worker_threads(workers);
    }
    if nice > 0 {
        builder.on_thread_start(move || lower_priority(nice));
    }
    builder.thread_name(name).enable_all().build()
}

/// Lowers the calling thread's CPU priority by `nice` levels. On Linux a
/// nice value belongs to a thread, so the process's other threads keep
/// theirs; elsewhere it would be the whole process's, so it is left alone.
fn lower_priority(nice: u8) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: nice(2) only changes the calling thread's priority; errno
        // is cleared first, since -1 is also a valid result.
        let failed = unsafe {
            *libc::__errno_location() = 0;
            libc::nice(i32::from(nice)) == -1 && *libc::__errno_location() != 0
        };
        if failed {
            static WARNED: std::sync::Once = std::sync::Once::new();
            let e = std::io::Error::last_os_error();
            WARNED.call_once(|| tracing::warn!("links keep the clients' CPU priority: nice: {e}"));
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = nice;
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| tracing::info!("links keep the clients' CPU priority off Linux"));
    }
}

async fn run(config: Config, node: String, links: tokio::runtime::Handle) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Signals first: a SIGTERM during start-up must stop the node cleanly,
    // not kill it.
    let mut term = signal(SignalKind::terminate()).context("installing signal handlers")?;
    let mut int = signal(SignalKind::interrupt()).context("installing signal handlers")?;
    let mut hup = signal(SignalKind::hangup()).context("installing signal handlers")?;
    // Places data is loaded before the client port opens, so a client that
    // can connect is served at once.
    let places = herd::places::from_config(&config.places)?;
    let bound = BoundNode::bind_with_links(&config, &node, links).await?;
    let running = bound.start_with(Arc::new(config), places);
    tracing::info!(
        client = %running.client_addr(),
        peer = %running.peer_addr(),
        "{node} serving clients"
    );
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => match running.reload_certificates() {
                Ok(()) => tracing::info!("SIGHUP: certificates reloaded for new links"),
                Err(e) => tracing::error!("SIGHUP: keeping the old certificates: {e}"),
            },
        }
    }
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

fn check(flag: Option<PathBuf>, only: Option<String>) -> ExitCode {
    let config = match load(flag) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let nodes: Vec<&String> = match &only {
        Some(name) => match config.node(name) {
            Ok(_) => vec![name],
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        None => config.nodes.keys().collect(),
    };
    let mut problems = Vec::new();
    if config.transport == TransportKind::Quic {
        for node in nodes {
            problems.extend(herd::tls::check_node(
                &config,
                node,
                SystemTime::now(),
                EXPIRY_WARNING,
            ));
        }
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("error: {p}");
        }
        return ExitCode::from(2);
    }
    let transport = match config.transport {
        TransportKind::Quic => "quic (mutual TLS; certificates ok)",
        TransportKind::Tcp => "tcp (plaintext)",
    };
    println!(
        "ok: {} nodes, transport {transport}, places {}",
        config.nodes.len(),
        config.places.provider.as_str()
    );
    for (name, node) in &config.nodes {
        println!(
            "  {name:<10} client {:<21} peer {:<21} neighbours {}",
            node.client.to_string(),
            node.peer,
            node.neighbours.join(", ")
        );
    }
    ExitCode::SUCCESS
}

/// glibc raises its mmap threshold each time a large block is freed, after
/// which large blocks (a table being resized, a catch-up backlog) come from
/// the heap and their pages stay resident after they are freed. A fixed
/// threshold keeps them mapped on their own and returned when freed, so a
/// node's resident memory follows what it holds.
fn fixed_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called first thing in
    // main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}
