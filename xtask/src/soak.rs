//! `cargo xtask soak`: mixed client load on the five nodes of the reference
//! topology while nodes are stopped (SIGTERM) and crashed (SIGKILL) at
//! random and started again, then a check that every node holds, for every
//! client, the same AT line: the newest report acknowledged to a client.
//!
//! The herd runs as real `herd` processes (the release build, or `--bin`)
//! on free loopback ports, with a config, certificates and logs in a
//! directory of its own that is removed after a clean run and kept (and
//! printed) after a failed one.
//!
//! # What may be lost
//!
//! Nodes keep their tables in memory only, so the herd promises that an
//! acknowledged report survives while at least one node that holds it stays
//! up. A crash can lose reports the node had not yet passed to a neighbour,
//! and a node stopped cleanly can only pass its queue to neighbours whose
//! link is up. Every acknowledgement is therefore classified, from the
//! recorded lives of the nodes, by a deliberately pessimistic model:
//!
//! - a link between two node lives counts as up from the first moment both
//!   ends reported it up on their admin `/peers` endpoint (polled every
//!   100 ms; never earlier, whatever the timers promise);
//! - a node that holds a report hands it to a neighbour `HANDOFF` after it
//!   got it or after the link came up, whichever is later, if it is still
//!   up then (links that break between two live nodes are repaired and
//!   caught up, so only the holder's death stops the hand-off);
//! - a node stopped with SIGTERM hands its reports to every neighbour whose
//!   link was up when the signal was sent (the herd sends queued updates
//!   before it closes), and the neighbour has them `HANDOFF` later;
//! - a node killed with SIGKILL hands over nothing after the signal;
//! - the neighbour must itself be up when the report arrives, and then hands
//!   it on by the same rules.
//!
//! A report is *safe* when this chain reaches a node that stays up to the
//! end; anything else is *at risk* and reported separately. For each client
//! the expected final line is the newest safe acknowledged report; every
//! node must hold that line or a newer report that was acknowledged (at
//! risk) or sent without an answer (the node died before replying). For
//! at-risk clients the nodes must still agree with each other.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use herd::config::Config;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout, MissedTickBehavior};

/// The reference topology of config/herd.toml, nodes in name order.
const TOPOLOGY: &[(&str, &[&str])] = &[
    ("Bailey", &["Bona", "Campbell"]),
    ("Bona", &["Clark", "Campbell", "Bailey"]),
    ("Campbell", &["Bailey", "Bona", "Jaquez"]),
    ("Clark", &["Jaquez", "Bona"]),
    ("Jaquez", &["Clark", "Campbell"]),
];

/// Peer settings written into the soak's config (tighter than the
/// defaults, as in the integration tests, so links heal in about a second).
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const PEER_KEEPALIVE: Duration = Duration::from_millis(500);
const PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(3);
const PEER_BACKOFF_MIN: Duration = Duration::from_millis(20);
const PEER_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// The model's bound on passing a report over a link that is up (loopback
/// takes milliseconds; this leaves room for a loaded two-core machine).
const HANDOFF: Duration = Duration::from_secs(1);

/// How often every node's links are read from its admin endpoint.
const LINK_POLL: Duration = Duration::from_millis(100);

/// Load without faults at the start, and with every node up at the end.
const WARMUP: Duration = Duration::from_secs(2);
const TAIL: Duration = Duration::from_secs(1);
/// How long a faulted node stays down (before it is started again).
const MIN_DOWN: Duration = Duration::from_millis(300);
const MAX_DOWN: Duration = Duration::from_millis(2500);
/// Time kept free after a fault's restart before the same node is chosen
/// again (its clean stop and start take a moment).
const FAULT_GAP: Duration = Duration::from_secs(1);

/// How long a node may take to listen after it is started.
const START: Duration = Duration::from_secs(15);
/// How long a node may take to exit after SIGTERM (the herd drains clients
/// for at most 5 s, then links for at most 2 s).
const STOP: Duration = Duration::from_secs(15);
/// Longest wait for any one client request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the herd to agree at the end.
const CONVERGE: Duration = Duration::from_secs(45);
/// Longest wait for the herd to pass the first probes around.
const SETTLE: Duration = Duration::from_secs(30);
/// Problems kept with their text (all are counted).
const KEEP_PROBLEMS: usize = 20;

#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// How long the load and the faults last, in seconds [default: 60; 12 with --quick]
    #[arg(long, value_name = "N")]
    pub seconds: Option<u64>,
    /// At most this many faults (a SIGTERM or SIGKILL, then a restart)
    /// [default: 10; 4 with --quick]
    #[arg(long, value_name = "N")]
    pub faults: Option<usize>,
    /// Seed for the fault schedule and the load's choices [default: from the clock; printed]
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// The transport between nodes
    #[arg(long, value_enum, default_value_t = SoakTransport::Quic)]
    pub transport: SoakTransport,
    /// Client IDs in play [default: 2000; 300 with --quick]
    #[arg(long, value_name = "N")]
    pub clients: Option<usize>,
    /// Load tasks per node, each with its own connection [default: 3; 2 with --quick]
    #[arg(long, value_name = "N")]
    pub tasks: Option<usize>,
    /// Requests per second offered by all tasks together [default: 3000; 1000 with --quick]
    #[arg(long, value_name = "N")]
    pub rate: Option<u64>,
    /// The short configuration CI runs (12 s, 4 faults, 300 clients)
    #[arg(long)]
    pub quick: bool,
    /// Run this `herd` binary instead of building the release one
    #[arg(long, value_name = "PATH")]
    pub bin: Option<PathBuf>,
    /// Keep the working directory (config, certificates, logs) after a clean run
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SoakTransport {
    Tcp,
    Quic,
}

impl SoakTransport {
    fn name(self) -> &'static str {
        match self {
            SoakTransport::Tcp => "tcp",
            SoakTransport::Quic => "quic",
        }
    }
}

/// What a run found, for callers that check more than success
/// (tests/soak.rs; `cargo xtask soak` only prints it).
#[allow(dead_code)]
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub seed: u64,
    pub terms: usize,
    pub kills: usize,
    pub acks: u64,
    pub whatsats: u64,
    pub compared: usize,
    pub mismatches: usize,
    pub disagreements: usize,
    pub at_risk: usize,
    pub problems: u64,
}

/// The resolved settings of one run.
#[derive(Debug, Clone)]
struct Plan {
    seconds: Duration,
    faults: usize,
    seed: u64,
    transport: SoakTransport,
    clients: usize,
    tasks: usize,
    rate: u64,
}

impl Plan {
    fn new(args: &SoakArgs) -> anyhow::Result<Plan> {
        let q = args.quick;
        let plan = Plan {
            seconds: Duration::from_secs(args.seconds.unwrap_or(if q { 12 } else { 60 })),
            faults: args.faults.unwrap_or(if q { 4 } else { 10 }),
            seed: args.seed.unwrap_or_else(|| now_ns() % 1_000_000),
            transport: args.transport,
            clients: args.clients.unwrap_or(if q { 300 } else { 2000 }),
            tasks: args.tasks.unwrap_or(if q { 2 } else { 3 }),
            rate: args.rate.unwrap_or(if q { 1000 } else { 3000 }),
        };
        if plan.seconds < Duration::from_secs(1) || plan.seconds > Duration::from_secs(24 * 3600) {
            bail!("--seconds must be between 1 and 86400");
        }
        if !(1..=1_000_000).contains(&plan.clients) {
            bail!("--clients must be between 1 and 1000000");
        }
        if !(1..=64).contains(&plan.tasks) || plan.tasks > plan.clients {
            bail!("--tasks must be between 1 and 64, and at most --clients");
        }
        if !(1..=1_000_000).contains(&plan.rate) {
            bail!("--rate must be between 1 and 1000000");
        }
        if plan.faults > 10_000 {
            bail!("--faults must be at most 10000");
        }
        Ok(plan)
    }
}

/// Runs the soak as `cargo xtask soak` does: Ctrl-C stops it (and the herd).
pub fn run(args: SoakArgs, root: &Path) -> anyhow::Result<Summary> {
    run_with(args, root, true)
}

/// Runs the soak; with `interactive`, nodes get their own process group and
/// Ctrl-C ends the run cleanly (tests leave signals alone).
pub fn run_with(args: SoakArgs, root: &Path, interactive: bool) -> anyhow::Result<Summary> {
    let plan = Plan::new(&args)?;
    let bin = match &args.bin {
        Some(bin) => bin.clone(),
        None => build_release(root)?,
    };
    let dir = std::env::temp_dir().join(format!("herd-soak-{}-{}", std::process::id(), now_ns()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let result = runtime.block_on(async {
        let soak = soak(&plan, &bin, &dir, interactive);
        if interactive {
            tokio::select! {
                r = soak => r,
                _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
            }
        } else {
            soak.await
        }
    });
    // Tasks still holding the nodes drop them (and so kill them) here.
    runtime.shutdown_timeout(Duration::from_secs(5));
    match &result {
        Ok(_) if !args.keep => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        _ => println!("working directory kept: {}", dir.display()),
    }
    result
}

/// `cargo build --release` of the herd binary, as `cargo xtask up` does.
fn build_release(root: &Path) -> anyhow::Result<PathBuf> {
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
    Ok(target.join("release").join("herd"))
}

async fn soak(plan: &Plan, bin: &Path, dir: &Path, interactive: bool) -> anyhow::Result<Summary> {
    let (config_path, config) = write_config(dir, plan.transport)?;
    if plan.transport == SoakTransport::Quic {
        herd::certs::write_herd(&config, &config.certs, false).context("making certificates")?;
    }
    let check = herd_command(bin)
        .arg("check")
        .arg("--config")
        .arg(&config_path)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !check.status.success() {
        bail!(
            "herd check failed:\n{}",
            String::from_utf8_lossy(&check.stderr).trim_end()
        );
    }

    let mut rng = Rng::new(plan.seed);
    let faults = schedule(&mut rng, plan.seconds, plan.faults);
    println!(
        "soak: {} s over {}, seed {}, {} clients, {} load tasks at {} req/s, {} faults scheduled (bound {})",
        plan.seconds.as_secs(),
        plan.transport.name(),
        plan.seed,
        plan.clients,
        plan.tasks * TOPOLOGY.len(),
        plan.rate,
        faults.len(),
        plan.faults
    );
    println!(
        "herd: {}, logs in {}",
        bin.display(),
        config.log_dir.display()
    );

    let nodes = Arc::new(Mutex::new(Nodes::new(
        bin,
        &config_path,
        &config,
        interactive,
    )?));
    let _guard = KillOnDrop(nodes.clone());
    for i in 0..TOPOLOGY.len() {
        lock(&nodes).spawn(i)?;
    }
    for i in 0..TOPOLOGY.len() {
        wait_listening(&nodes, i).await?;
    }
    let addrs: Vec<SocketAddr> = lock(&nodes).procs.iter().map(|p| p.client).collect();
    let (stop_tx, stop_rx) = watch::channel(false);
    let rounds = Arc::new(Mutex::new(Vec::new()));
    let links = tokio::spawn(watch_links(nodes.clone(), rounds.clone(), stop_rx.clone()));
    settle(&addrs, &nodes, &rounds).await?;

    // The load and the faults. Every time recorded is on the nodes' clock
    // (since the first start); the schedule counts from the load's start.
    let origin = lock(&nodes).origin;
    let t0 = Instant::now();
    let offset = t0 - origin;
    let ids: Arc<Vec<Vec<u8>>> = Arc::new((0..plan.clients).map(client_id).collect());
    // Every other client is a witness: it is updated until a moment spread
    // over the run and only read after, so its final line is the one
    // acknowledged then, around whichever fault came near it (later updates
    // would hide a loss).
    let retire: Arc<Vec<Option<Duration>>> = Arc::new(
        (0..plan.clients)
            .map(|c| (c % 2 == 1).then(|| rng.between(WARMUP, plan.seconds)))
            .collect(),
    );
    let mut load = JoinSet::new();
    let period = Duration::from_secs_f64((plan.tasks * TOPOLOGY.len()) as f64 / plan.rate as f64);
    for (node, addr) in addrs.iter().enumerate() {
        for k in 0..plan.tasks {
            let spec = TaskSpec {
                node,
                name: TOPOLOGY[node].0,
                addr: *addr,
                clients: (0..plan.clients as u32)
                    .filter(|c| *c as usize % plan.tasks == k)
                    .collect(),
                period,
                tag: (node * plan.tasks + k) as u64,
                seed: plan.seed
                    ^ (0x9e37_79b9_7f4a_7c15_u64.wrapping_mul((node * 64 + k + 1) as u64)),
                origin,
                t0,
                hard_stop: t0 + plan.seconds + Duration::from_secs(120),
            };
            load.spawn(load_task(
                spec,
                ids.clone(),
                retire.clone(),
                stop_rx.clone(),
            ));
        }
    }
    let mut fault_tasks = JoinSet::new();
    for fault in faults.iter().copied() {
        fault_tasks.spawn(fault_task(nodes.clone(), fault, t0));
    }
    let watcher = tokio::spawn(watch_exits(nodes.clone(), stop_rx.clone()));

    sleep_until((t0 + plan.seconds).into()).await;
    let mut records = Vec::new();
    let faults_done = timeout(STOP + START + Duration::from_secs(30), async {
        while let Some(r) = fault_tasks.join_next().await {
            records.push(r.context("fault task")?);
        }
        Ok::<_, anyhow::Error>(())
    })
    .await;
    let load_secs = t0.elapsed();
    let _ = stop_tx.send(true);
    let mut outs = Vec::new();
    let load_done = timeout(REQUEST_TIMEOUT * 3, async {
        while let Some(r) = load.join_next().await {
            outs.push(r.context("load task")?);
        }
        Ok::<_, anyhow::Error>(())
    })
    .await;
    let _ = watcher.await;
    let _ = links.await;
    match faults_done {
        Ok(r) => r?,
        Err(_) => bail!("faults did not finish (restarts hung)"),
    }
    match load_done {
        Ok(r) => r?,
        Err(_) => bail!("load tasks did not stop"),
    }
    records.sort_by_key(|r| r.fault.at);
    let mut anomalies: Vec<String> = records.iter().filter_map(|r| r.anomaly.clone()).collect();
    anomalies.extend(lock(&nodes).unexpected.iter().cloned());
    let failed_restart = records.iter().find_map(|r| r.error.clone());
    let load_stopped = Instant::now();

    // Merge what the load saw.
    let mut book = Book::new(plan.clients);
    let mut per_second: Vec<[u64; KINDS]> = Vec::new();
    let mut problems = Vec::new();
    let mut problem_count = 0;
    let (mut reconnects, mut connect_failures) = (0, 0);
    for out in outs {
        for (c, ack) in out.acks {
            book.acks[c as usize].push(ack);
        }
        for (c, sent) in out.unacked {
            book.unacked[c as usize].push(sent);
        }
        for (s, counts) in out.seconds.iter().enumerate() {
            if per_second.len() <= s {
                per_second.resize(s + 1, [0; KINDS]);
            }
            for k in 0..KINDS {
                per_second[s][k] += counts[k];
            }
        }
        problem_count += out.problem_count;
        problems.extend(out.problems);
        reconnects += out.reconnects;
        connect_failures += out.connect_failures;
    }
    problems.truncate(KEEP_PROBLEMS);
    for acks in &mut book.acks {
        acks.sort_by(|a, b| newness(&b.line, &a.line));
    }

    let mut report = String::new();
    let totals = load_report(
        &mut report,
        &per_second,
        load_secs,
        reconnects,
        connect_failures,
    );
    fault_report(&mut report, &records, offset);

    let mut summary = Summary {
        seed: plan.seed,
        terms: records
            .iter()
            .filter(|r| !r.skipped && r.fault.signal == Signal::Term)
            .count(),
        kills: records
            .iter()
            .filter(|r| !r.skipped && r.fault.signal == Signal::Kill)
            .count(),
        acks: totals[IAMAT_WON] + totals[IAMAT_STALE],
        whatsats: totals[WHATSAT_KNOWN] + totals[WHATSAT_UNKNOWN],
        problems: problem_count,
        ..Summary::default()
    };

    let all_up = lock(&nodes).procs.iter().all(|p| p.state == State::Up);
    if let Some(e) = failed_restart {
        anomalies.push(e);
    }
    if all_up {
        let ready = readiness(&rounds.lock().unwrap_or_else(|e| e.into_inner()));
        let model = Model {
            lives: lock(&nodes).procs.iter().map(|p| p.lives.clone()).collect(),
            adj: adjacency(),
            ready,
            handoff: HANDOFF,
        };
        let (snaps, rounds) = converge(&addrs, &ids, &book).await;
        let converged = load_stopped.elapsed();
        compare(
            &mut report,
            &mut summary,
            &model,
            &book,
            &ids,
            snaps,
            rounds,
            converged,
        );
    } else if !all_up {
        anomalies.push("not every node is up at the end; the herd was not compared".into());
    }

    let stop_problems = lock(&nodes).stop_all();
    anomalies.extend(stop_problems);

    if problem_count > 0 {
        let _ = writeln!(
            report,
            "protocol problems seen by the load: {problem_count} (first {}):",
            problems.len()
        );
        for p in &problems {
            let _ = writeln!(report, "  {p}");
        }
    }
    for a in &anomalies {
        let _ = writeln!(report, "node problem: {a}");
    }
    print!("{report}");

    let mut failures = Vec::new();
    if summary.mismatches > 0 {
        failures.push(format!("{} clients mismatched", summary.mismatches));
    }
    if summary.disagreements > 0 {
        failures.push(format!(
            "{} clients held differently by different nodes",
            summary.disagreements
        ));
    }
    if problem_count > 0 {
        failures.push(format!("{problem_count} protocol problems"));
    }
    if !anomalies.is_empty() {
        failures.push(format!("{} node problems", anomalies.len()));
    }
    if failures.is_empty() {
        println!("soak passed (seed {})", plan.seed);
        Ok(summary)
    } else {
        bail!("soak failed (seed {}): {}", plan.seed, failures.join(", "))
    }
}

// ---------------------------------------------------------------------------
// Config and processes.

fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn free_udp_port() -> anyhow::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Writes the reference topology on free loopback ports into `dir`.
fn write_config(dir: &Path, transport: SoakTransport) -> anyhow::Result<(PathBuf, Config)> {
    let mut used = HashSet::new();
    let mut pick = |udp: bool| -> anyhow::Result<u16> {
        for _ in 0..100 {
            let port = if udp {
                free_udp_port()?
            } else {
                free_tcp_port()?
            };
            if used.insert(port) {
                return Ok(port);
            }
        }
        bail!("no free port found")
    };
    let mut text = format!(
        "# Made by `cargo xtask soak`: the reference topology on free loopback ports.\n\
         transport = \"{}\"\ncerts = \"certs\"\n\n[places]\nprovider = \"offline\"\n\n\
         [log]\ndir = \"logs\"\n\n[peer]\nconnect_timeout = \"{}ms\"\nkeepalive = \"{}ms\"\n\
         idle_timeout = \"{}ms\"\nbackoff_min = \"{}ms\"\nbackoff_max = \"{}ms\"\n",
        transport.name(),
        PEER_CONNECT_TIMEOUT.as_millis(),
        PEER_KEEPALIVE.as_millis(),
        PEER_IDLE_TIMEOUT.as_millis(),
        PEER_BACKOFF_MIN.as_millis(),
        PEER_BACKOFF_MAX.as_millis(),
    );
    for (name, neighbours) in TOPOLOGY {
        let client = pick(false)?;
        let peer = pick(transport == SoakTransport::Quic)?;
        let admin = pick(false)?;
        let list: Vec<String> = neighbours.iter().map(|n| format!("\"{n}\"")).collect();
        let _ = write!(
            text,
            "\n[nodes.{name}]\nclient = \"127.0.0.1:{client}\"\npeer = \"127.0.0.1:{peer}\"\n\
             admin = \"127.0.0.1:{admin}\"\nneighbours = [{}]\n",
            list.join(", ")
        );
    }
    let path = dir.join("herd.toml");
    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    let config = Config::from_toml(&text, &path).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((path, config))
}

/// `herd` untouched by the caller's `HERD_*` and `RUST_LOG`.
fn herd_command(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HERD_") {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Term,
    Kill,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Term => "SIGTERM",
            Signal::Kill => "SIGKILL",
        }
    }
}

/// One life of a node process: from when it listened to when it was
/// signalled.
#[derive(Debug, Clone, Copy)]
struct Life {
    start: Duration,
    end: Option<(Duration, Signal)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting,
    Up,
    Stopping,
    Down,
}

struct Proc {
    name: &'static str,
    client: SocketAddr,
    admin: SocketAddr,
    child: Option<Child>,
    state: State,
    lives: Vec<Life>,
    stderr: PathBuf,
}

/// The herd's processes; dropping it (through [`KillOnDrop`]) kills them.
struct Nodes {
    bin: PathBuf,
    config: PathBuf,
    own_group: bool,
    /// The clock of every recorded time: just before the first start.
    origin: Instant,
    procs: Vec<Proc>,
    unexpected: Vec<String>,
}

fn lock(nodes: &Mutex<Nodes>) -> MutexGuard<'_, Nodes> {
    nodes.lock().unwrap_or_else(|e| e.into_inner())
}

impl Nodes {
    fn new(
        bin: &Path,
        config_path: &Path,
        config: &Config,
        own_group: bool,
    ) -> anyhow::Result<Nodes> {
        std::fs::create_dir_all(&config.log_dir)?;
        let procs = TOPOLOGY
            .iter()
            .map(|(name, _)| {
                Ok(Proc {
                    name,
                    client: config.nodes[*name].client,
                    admin: config.nodes[*name]
                        .admin
                        .context("the soak's config gives every node an admin address")?,
                    child: None,
                    state: State::Down,
                    lives: Vec::new(),
                    stderr: config.log_dir.join(format!("{name}.stderr")),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Nodes {
            bin: bin.to_path_buf(),
            config: config_path.to_path_buf(),
            own_group,
            origin: Instant::now(),
            procs,
            unexpected: Vec::new(),
        })
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let p = &mut self.procs[i];
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p.stderr)?;
        let mut cmd = herd_command(&self.bin);
        cmd.arg("run")
            .arg(p.name)
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if self.own_group {
            // Ctrl-C reaches this task, which stops the nodes itself.
            cmd.process_group(0);
        }
        p.child = Some(
            cmd.spawn()
                .with_context(|| format!("starting {}", p.name))?,
        );
        p.state = State::Starting;
        Ok(())
    }

    /// The node listens: a new life begins.
    fn listening(&mut self, i: usize) {
        let now = self.now();
        let p = &mut self.procs[i];
        p.state = State::Up;
        p.lives.push(Life {
            start: now,
            end: None,
        });
    }

    /// Whether the node's process has exited (reaping it if so).
    fn exited(&mut self, i: usize) -> Option<ExitStatus> {
        let child = self.procs[i].child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.procs[i].child = None;
                Some(status)
            }
            _ => None,
        }
    }

    /// Sends `signal` to an up node, ending its life now.
    fn signal(&mut self, i: usize, signal: Signal) -> anyhow::Result<()> {
        let now = self.now();
        let p = &mut self.procs[i];
        let Some(child) = p.child.as_mut() else {
            bail!("{} has no process", p.name);
        };
        if let Some(life) = p.lives.last_mut() {
            life.end = Some((now, signal));
        }
        p.state = State::Stopping;
        match signal {
            Signal::Kill => child.kill().with_context(|| format!("killing {}", p.name)),
            Signal::Term => {
                let status = Command::new("kill")
                    .arg("-TERM")
                    .arg(child.id().to_string())
                    .status()
                    .context("running kill -TERM")?;
                if !status.success() {
                    bail!("kill -TERM {} failed", p.name);
                }
                Ok(())
            }
        }
    }

    fn tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.procs[i].stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n    ")
    }

    /// Stops every node cleanly (SIGTERM), killing any that overruns;
    /// returns what went wrong.
    fn stop_all(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for i in 0..self.procs.len() {
            if self.procs[i].child.is_some() {
                if let Err(e) = self.signal(i, Signal::Term) {
                    problems.push(format!("{e:#}"));
                }
            }
        }
        let deadline = Instant::now() + STOP;
        for i in 0..self.procs.len() {
            loop {
                if self.procs[i].child.is_none() {
                    break;
                }
                if let Some(status) = self.exited(i) {
                    if !status.success() {
                        problems.push(format!(
                            "{} exited with {status} after SIGTERM at the end:\n    {}",
                            self.procs[i].name,
                            self.tail(i)
                        ));
                    }
                    break;
                }
                if Instant::now() > deadline {
                    problems.push(format!(
                        "{} did not exit within {STOP:?} of SIGTERM at the end",
                        self.procs[i].name
                    ));
                    self.kill_one(i);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            self.procs[i].state = State::Down;
        }
        problems
    }

    fn kill_one(&mut self, i: usize) {
        if let Some(mut child) = self.procs[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Kills every node still running when the run ends, however it ends.
struct KillOnDrop(Arc<Mutex<Nodes>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let mut nodes = lock(&self.0);
        for i in 0..nodes.procs.len() {
            nodes.kill_one(i);
        }
    }
}

/// Waits until node `i` answers a client, then starts its new life.
///
/// A connection alone is not enough: the kernel accepts connections as soon
/// as the listener is bound, before the node serves them (and before it
/// has installed its SIGTERM handler).
async fn wait_listening(nodes: &Mutex<Nodes>, i: usize) -> anyhow::Result<()> {
    let addr = lock(nodes).procs[i].client;
    let deadline = Instant::now() + START;
    loop {
        let answered = async {
            let mut conn = Conn::connect(addr).await?;
            conn.send(b"SOAK-READY?\n").await?;
            conn.line().await
        };
        if let Ok(Ok(reply)) = timeout(Duration::from_secs(1), answered).await {
            if reply != b"? SOAK-READY?" {
                bail!(
                    "{} answered {} to an invalid line",
                    TOPOLOGY[i].0,
                    reply.escape_ascii()
                );
            }
            lock(nodes).listening(i);
            return Ok(());
        }
        {
            let mut n = lock(nodes);
            if let Some(status) = n.exited(i) {
                n.procs[i].state = State::Down;
                bail!(
                    "{} exited ({status}) while starting:\n    {}",
                    n.procs[i].name,
                    n.tail(i)
                );
            }
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not listen on {addr} within {START:?}",
                lock(nodes).procs[i].name
            );
        }
        sleep(Duration::from_millis(25)).await;
    }
}

/// Whether the load is over (or the run is, and the sender is gone).
fn stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// Notes nodes that exit without being told to, until the load stops.
async fn watch_exits(nodes: Arc<Mutex<Nodes>>, mut stop: watch::Receiver<bool>) {
    loop {
        {
            let mut n = lock(&nodes);
            for i in 0..n.procs.len() {
                if n.procs[i].state == State::Up {
                    if let Some(status) = n.exited(i) {
                        let at = n.now();
                        n.procs[i].state = State::Down;
                        if let Some(life) = n.procs[i].lives.last_mut() {
                            life.end = Some((at, Signal::Kill));
                        }
                        let text = format!(
                            "{} exited on its own ({status}) at +{:.2}s:\n    {}",
                            n.procs[i].name,
                            at.as_secs_f64(),
                            n.tail(i)
                        );
                        n.unexpected.push(text);
                    }
                }
            }
        }
        if stopped(&stop) {
            return;
        }
        tokio::select! {
            _ = sleep(Duration::from_millis(100)) => {}
            _ = stop.changed() => {}
        }
    }
}

// ---------------------------------------------------------------------------
// Faults.

#[derive(Debug, Clone, Copy)]
struct Fault {
    at: Duration,
    node: usize,
    signal: Signal,
    down: Duration,
}

/// At most `bound` faults between the warm-up and the tail, never two at
/// once on the same node; several nodes may be down together.
fn schedule(rng: &mut Rng, seconds: Duration, bound: usize) -> Vec<Fault> {
    let end = seconds.saturating_sub(TAIL);
    if bound == 0 || end < WARMUP + MIN_DOWN {
        return Vec::new();
    }
    let mut ats: Vec<Duration> = (0..bound)
        .map(|_| rng.between(WARMUP, end - MIN_DOWN))
        .collect();
    ats.sort();
    let mut busy_until = [Duration::ZERO; TOPOLOGY.len()];
    let mut faults = Vec::new();
    for at in ats {
        let free: Vec<usize> = (0..TOPOLOGY.len())
            .filter(|&n| busy_until[n] <= at)
            .collect();
        if free.is_empty() {
            continue;
        }
        let node = free[rng.below(free.len() as u64) as usize];
        let down = rng.between(MIN_DOWN, MAX_DOWN).min(end - at).max(MIN_DOWN);
        busy_until[node] = at + down + FAULT_GAP;
        faults.push(Fault {
            at,
            node,
            signal: Signal::Term,
            down,
        });
    }
    // Half clean stops, half crashes (one more of either when odd), in a
    // random order.
    let mut signals: Vec<Signal> = (0..faults.len())
        .map(|k| [Signal::Term, Signal::Kill][k % 2])
        .collect();
    if rng.below(2) == 0 {
        for s in &mut signals {
            *s = match s {
                Signal::Term => Signal::Kill,
                Signal::Kill => Signal::Term,
            };
        }
    }
    for k in (1..signals.len()).rev() {
        signals.swap(k, rng.below(k as u64 + 1) as usize);
    }
    for (f, s) in faults.iter_mut().zip(signals) {
        f.signal = s;
    }
    faults
}

#[derive(Debug, Clone)]
struct FaultRecord {
    fault: Fault,
    skipped: bool,
    signalled: Duration,
    exited: Option<(Duration, ExitStatus)>,
    back: Option<Duration>,
    /// Something the herd should not do (a clean stop that overran or failed).
    anomaly: Option<String>,
    /// The node could not be started again.
    error: Option<String>,
}

async fn fault_task(nodes: Arc<Mutex<Nodes>>, fault: Fault, t0: Instant) -> FaultRecord {
    let mut record = FaultRecord {
        fault,
        skipped: false,
        signalled: Duration::ZERO,
        exited: None,
        back: None,
        anomaly: None,
        error: None,
    };
    let i = fault.node;
    sleep_until((t0 + fault.at).into()).await;
    {
        let mut n = lock(&nodes);
        if n.procs[i].state != State::Up {
            record.skipped = true;
            return record;
        }
        record.signalled = n.now();
        if let Err(e) = n.signal(i, fault.signal) {
            record.error = Some(format!("{e:#}"));
            return record;
        }
    }
    let name = TOPOLOGY[i].0;
    let deadline = Instant::now() + STOP;
    loop {
        {
            let mut n = lock(&nodes);
            if let Some(status) = n.exited(i) {
                record.exited = Some((n.now(), status));
                n.procs[i].state = State::Down;
                let clean = match fault.signal {
                    Signal::Term => status.success(),
                    Signal::Kill => status.signal() == Some(SIGKILL),
                };
                if !clean {
                    record.anomaly = Some(format!(
                        "{name} exited with {status} after {}:\n    {}",
                        fault.signal.name(),
                        n.tail(i)
                    ));
                }
                break;
            }
            if Instant::now() > deadline {
                record.anomaly = Some(format!(
                    "{name} did not exit within {STOP:?} of {}; killed",
                    fault.signal.name()
                ));
                n.kill_one(i);
                n.procs[i].state = State::Down;
                break;
            }
        }
        sleep(Duration::from_millis(10)).await;
    }
    sleep_until((t0 + fault.at + fault.down).into()).await;
    // A port can linger for a moment after a crash: a few tries.
    let mut last = String::new();
    for _ in 0..5 {
        if let Err(e) = lock(&nodes).spawn(i) {
            last = format!("{e:#}");
            break;
        }
        match wait_listening(&nodes, i).await {
            Ok(()) => {
                record.back = Some(lock(&nodes).now());
                return record;
            }
            Err(e) => {
                last = format!("{e:#}");
                let mut n = lock(&nodes);
                n.kill_one(i);
                n.procs[i].state = State::Down;
            }
        }
        sleep(Duration::from_millis(300)).await;
    }
    record.error = Some(format!("{name} could not be started again: {last}"));
    record
}

/// SIGKILL's number (9 on every Unix).
const SIGKILL: i32 = 9;

// ---------------------------------------------------------------------------
// Load.

const IAMAT_WON: usize = 0;
const IAMAT_STALE: usize = 1;
const WHATSAT_KNOWN: usize = 2;
const WHATSAT_UNKNOWN: usize = 3;
const FAILED: usize = 4;
const KINDS: usize = 5;

/// An acknowledged report: the AT line a node answered an IAMAT with.
#[derive(Debug, Clone)]
struct Ack {
    line: Vec<u8>,
    node: u8,
    /// When the reply arrived, on the nodes' clock.
    at: Duration,
}

/// An IAMAT sent without an answer (the connection broke first).
#[derive(Debug, Clone)]
struct Sent {
    node: u8,
    location: Vec<u8>,
    time: Vec<u8>,
}

struct TaskSpec {
    node: usize,
    name: &'static str,
    addr: SocketAddr,
    clients: Vec<u32>,
    period: Duration,
    /// This task's number, in every time it sends (times stay distinct).
    tag: u64,
    seed: u64,
    /// The nodes' clock, for acknowledgement times.
    origin: Instant,
    /// The load's start, for requests per second and retirements.
    t0: Instant,
    hard_stop: Instant,
}

#[derive(Default)]
struct TaskOut {
    acks: Vec<(u32, Ack)>,
    unacked: Vec<(u32, Sent)>,
    seconds: Vec<[u64; KINDS]>,
    problems: Vec<String>,
    problem_count: u64,
    reconnects: u64,
    connect_failures: u64,
}

impl TaskOut {
    fn count(&mut self, t0: Instant, kind: usize) {
        let s = t0.elapsed().as_secs() as usize;
        if self.seconds.len() <= s {
            self.seconds.resize(s + 1, [0; KINDS]);
        }
        self.seconds[s][kind] += 1;
    }

    fn problem(&mut self, text: String) {
        self.problem_count += 1;
        if self.problems.len() < KEEP_PROBLEMS {
            self.problems.push(text);
        }
    }
}

/// One client connection to one node.
struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Conn {
    async fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = timeout(Duration::from_secs(1), TcpStream::connect(addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        Ok(Conn {
            reader: BufReader::new(r),
            writer: w,
        })
    }

    async fn send(&mut self, request: &[u8]) -> std::io::Result<()> {
        timeout(REQUEST_TIMEOUT, self.writer.write_all(request))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))?
    }

    /// One line without its LF; end of stream or a cut line is an error.
    async fn line(&mut self) -> std::io::Result<Vec<u8>> {
        let mut line = Vec::new();
        let n = timeout(REQUEST_TIMEOUT, self.reader.read_until(b'\n', &mut line))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "read timed out"))??;
        if n == 0 || line.last() != Some(&b'\n') {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        line.pop();
        Ok(line)
    }

    /// The rest of a WHATSAT reply after its AT line: JSON up to the empty line.
    async fn json(&mut self) -> std::io::Result<Vec<u8>> {
        let mut json = Vec::new();
        for _ in 0..100_000 {
            let line = self.line().await?;
            if line.is_empty() {
                return Ok(json);
            }
            json.extend_from_slice(&line);
            json.push(b'\n');
        }
        Err(std::io::Error::other("WHATSAT reply without an end"))
    }
}

async fn load_task(
    spec: TaskSpec,
    ids: Arc<Vec<Vec<u8>>>,
    retire: Arc<Vec<Option<Duration>>>,
    mut stop: watch::Receiver<bool>,
) -> TaskOut {
    let mut out = TaskOut::default();
    let mut rng = Rng::new(spec.seed);
    let mut clock = TaskClock {
        lag: rng.below(250_000_000),
        tag: spec.tag,
        last: 0,
    };
    let mut conn: Option<Conn> = None;
    let mut first = true;
    // Per connection (one node process's life): the newest line each
    // client was acknowledged with, which that node can never go back on.
    let mut seen: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut ticker = tokio::time::interval(spec.period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => {}
        }
        if stopped(&stop) || Instant::now() > spec.hard_stop {
            break;
        }
        let Some(c) = conn.as_mut() else {
            match Conn::connect(spec.addr).await {
                Ok(c) => {
                    conn = Some(c);
                    seen.clear();
                    if !first {
                        out.reconnects += 1;
                    }
                    first = false;
                }
                Err(_) => {
                    out.connect_failures += 1;
                    tokio::select! {
                        _ = sleep(Duration::from_millis(50)) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
            continue;
        };
        let client = spec.clients[rng.below(spec.clients.len() as u64) as usize];
        let id = &ids[client as usize];
        let retired = retire[client as usize].is_some_and(|r| spec.t0.elapsed() >= r);
        let ok = if retired || rng.below(10) == 0 {
            whatsat(c, &spec, &mut rng, &mut out, &mut seen, client, id).await
        } else {
            let time = clock.next();
            iamat(c, &spec, &mut rng, &mut out, &mut seen, (client, id), time).await
        };
        if !ok {
            out.count(spec.t0, FAILED);
            conn = None;
        }
    }
    out
}

/// Sends one IAMAT and records its answer; false if the connection broke.
async fn iamat(
    conn: &mut Conn,
    spec: &TaskSpec,
    rng: &mut Rng,
    out: &mut TaskOut,
    seen: &mut HashMap<u32, Vec<u8>>,
    (client, id): (u32, &[u8]),
    time: u64,
) -> bool {
    let time_text = format!("{}.{:09}", time / 1_000_000_000, time % 1_000_000_000).into_bytes();
    let location = random_location(rng);
    let mut request = b"IAMAT ".to_vec();
    for part in [id, &location, &time_text] {
        request.extend_from_slice(part);
        request.push(b' ');
    }
    request.pop();
    request.push(b'\n');
    let reply = match conn.send(&request).await {
        Ok(()) => conn.line().await,
        Err(e) => Err(e),
    };
    let line = match reply {
        Ok(line) => line,
        Err(_) => {
            out.unacked.push((
                client,
                Sent {
                    node: spec.node as u8,
                    location,
                    time: time_text,
                },
            ));
            return false;
        }
    };
    let f = fields(&line);
    if f.len() != 6 || f[0] != b"AT" || f[3] != id {
        out.problem(format!(
            "{}: IAMAT {} answered {}",
            spec.name,
            request.trim_ascii_end().escape_ascii(),
            line.escape_ascii()
        ));
        return true;
    }
    let fresh = f[1] == spec.name.as_bytes() && f[4] == location && f[5] == time_text;
    if fresh {
        out.count(spec.t0, IAMAT_WON);
    } else {
        // A stale report is answered with the line that beat it, which must
        // be newer.
        if parse_time(f[5]).is_none_or(|t| t <= split_time(time)) {
            out.problem(format!(
                "{}: IAMAT {} answered with an older line {}",
                spec.name,
                request.trim_ascii_end().escape_ascii(),
                line.escape_ascii()
            ));
            return true;
        }
        out.count(spec.t0, IAMAT_STALE);
    }
    let newer = seen
        .get(&client)
        .is_none_or(|old| newness(&line, old) == Ordering::Greater);
    if newer {
        seen.insert(client, line.clone());
    }
    out.acks.push((
        client,
        Ack {
            line,
            node: spec.node as u8,
            at: spec.origin.elapsed(),
        },
    ));
    true
}

/// Sends one WHATSAT and checks its answer; false if the connection broke.
async fn whatsat(
    conn: &mut Conn,
    spec: &TaskSpec,
    rng: &mut Rng,
    out: &mut TaskOut,
    seen: &mut HashMap<u32, Vec<u8>>,
    client: u32,
    id: &[u8],
) -> bool {
    let radius = match rng.below(3) {
        0 => "50".to_string(),
        1 => format!("{}.5", rng.below(20)),
        _ => format!("{}", 1 + rng.below(49)),
    };
    let bound = 1 + rng.below(5);
    let mut request = b"WHATSAT ".to_vec();
    request.extend_from_slice(id);
    request.extend_from_slice(format!(" {radius} {bound}\n").as_bytes());
    if conn.send(&request).await.is_err() {
        return false;
    }
    let Ok(first) = conn.line().await else {
        return false;
    };
    if first.starts_with(b"? ") {
        if first[2..] != request[..request.len() - 1] {
            out.problem(format!(
                "{}: WHATSAT answered {}",
                spec.name,
                first.escape_ascii()
            ));
        } else if let Some(old) = seen.get(&client) {
            out.problem(format!(
                "{}: WHATSAT {} unknown after {} was acknowledged on the same connection",
                spec.name,
                id.escape_ascii(),
                old.escape_ascii()
            ));
        }
        out.count(spec.t0, WHATSAT_UNKNOWN);
        return true;
    }
    let Ok(json) = conn.json().await else {
        return false;
    };
    let f = fields(&first);
    if f.len() != 6 || f[0] != b"AT" || f[3] != id {
        out.problem(format!(
            "{}: WHATSAT {} answered {}",
            spec.name,
            id.escape_ascii(),
            first.escape_ascii()
        ));
        return true;
    }
    match serde_json::from_slice::<serde_json::Value>(&json) {
        Ok(v)
            if v["status"].is_string()
                && v["results"]
                    .as_array()
                    .is_some_and(|r| r.len() as u64 <= bound) => {}
        _ => out.problem(format!(
            "{}: WHATSAT {} {radius} {bound}: bad JSON {}",
            spec.name,
            id.escape_ascii(),
            String::from_utf8_lossy(&json[..json.len().min(200)])
        )),
    }
    if let Some(old) = seen.get(&client) {
        if newness(&first, old) == Ordering::Less {
            out.problem(format!(
                "{}: WHATSAT {} went back from {} to {}",
                spec.name,
                id.escape_ascii(),
                old.escape_ascii(),
                first.escape_ascii()
            ));
        }
    }
    out.count(spec.t0, WHATSAT_KNOWN);
    true
}

/// Client IDs: mostly host names, some UTF-8 and some not UTF-8 at all.
fn client_id(i: usize) -> Vec<u8> {
    let mut id = format!("soak{i}").into_bytes();
    match i % 16 {
        3 => id.extend_from_slice("-ü.example".as_bytes()),
        7 => id.extend_from_slice("-📍".as_bytes()),
        11 => id.extend_from_slice(&[b'-', 0xff, 0xfe]),
        _ => id.extend_from_slice(b".cs.ucla.edu"),
    }
    id
}

fn random_location(rng: &mut Rng) -> Vec<u8> {
    if rng.below(20) == 0 {
        // Integer degrees are valid too.
        let lat = rng.below(181) as i64 - 90;
        let lon = rng.below(361) as i64 - 180;
        return format!("{lat:+}{lon:+}").into_bytes();
    }
    let lat = rng.unit() * 170.0 - 85.0;
    let lon = rng.unit() * 358.0 - 179.0;
    format!("{lat:+.6}{lon:+.6}").into_bytes()
}

/// A task's client times: the wall clock running `lag` behind (tasks lag
/// differently, so reports for one client reach different nodes out of
/// order), strictly increasing, and distinct from every other task's
/// because the last three digits are the task's number.
struct TaskClock {
    lag: u64,
    tag: u64,
    last: u64,
}

impl TaskClock {
    fn next(&mut self) -> u64 {
        let base = now_ns().saturating_sub(self.lag) / 1000 * 1000 + self.tag % 1000;
        let t = if base > self.last {
            base
        } else {
            self.last + 1000
        };
        self.last = t;
        t
    }
}

/// Distinct times for the probes: wall-clock nanoseconds, each greater
/// than the last.
fn next_time() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = now_ns();
    let prev = LAST
        .fetch_update(AtomicOrdering::SeqCst, AtomicOrdering::SeqCst, |last| {
            Some(now.max(last + 1))
        })
        .unwrap_or(0);
    now.max(prev + 1)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn split_time(ns: u64) -> (u64, u32) {
    (ns / 1_000_000_000, (ns % 1_000_000_000) as u32)
}

/// The protocol's white space: space, HT, LF, VT, FF, CR.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn fields(line: &[u8]) -> Vec<&[u8]> {
    line.split(|&b| is_space(b))
        .filter(|f| !f.is_empty())
        .collect()
}

/// `DIGITS[.DIGITS]` as seconds and nanoseconds.
fn parse_time(text: &[u8]) -> Option<(u64, u32)> {
    let text = std::str::from_utf8(text).ok()?;
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    if secs.is_empty()
        || frac.len() > 9
        || !secs.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut nanos: u32 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    for _ in frac.len()..9 {
        nanos *= 10;
    }
    Some((secs.parse().ok()?, nanos))
}

/// The herd's newest-wins order on AT lines: client time, then the bytes.
fn newness(a: &[u8], b: &[u8]) -> Ordering {
    let time = |l: &[u8]| fields(l).get(5).and_then(|t| parse_time(t));
    time(a).cmp(&time(b)).then_with(|| a.cmp(b))
}

// ---------------------------------------------------------------------------
// Settling, converging and comparing.

/// Every node reports a probe client; waits until every node knows all of
/// them and reports every link up, so the load starts on a whole herd.
async fn settle(
    addrs: &[SocketAddr],
    nodes: &Mutex<Nodes>,
    rounds: &Mutex<Vec<Round>>,
) -> anyhow::Result<()> {
    let probes: Vec<Vec<u8>> = TOPOLOGY
        .iter()
        .map(|(name, _)| format!("soak-probe.{name}").into_bytes())
        .collect();
    for (addr, probe) in addrs.iter().zip(&probes) {
        let mut conn = Conn::connect(*addr).await.context("probe connect")?;
        let t = split_time(next_time());
        let request = format!(
            "IAMAT {} +34.068930-118.445127 {}.{:09}\n",
            String::from_utf8_lossy(probe),
            t.0,
            t.1
        );
        conn.send(request.as_bytes()).await?;
        let reply = conn.line().await?;
        if !reply.starts_with(b"AT ") {
            bail!("probe answered {}", reply.escape_ascii());
        }
    }
    let deadline = Instant::now() + SETTLE;
    let since = lock(nodes).now();
    loop {
        let mut all = {
            let rounds = rounds.lock().unwrap_or_else(|e| e.into_inner());
            let adj = adjacency();
            rounds.last().is_some_and(|r| {
                r.at > since
                    && r.seen.iter().enumerate().all(|(i, s)| {
                        s.as_ref()
                            .is_some_and(|(_, up)| adj[i].iter().all(|n| up.contains(n)))
                    })
            })
        };
        for addr in addrs {
            match snapshot(*addr, &probes).await {
                Ok(lines) if lines.iter().all(Option::is_some) => {}
                _ => all = false,
            }
        }
        if all {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the herd did not pass probe reports to every node within {SETTLE:?}");
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// One poll of every up node's `/peers`.
struct Round {
    /// When the last answer came.
    at: Duration,
    /// Per node: the life polled and the neighbours it reported up.
    seen: Vec<Option<(usize, Vec<usize>)>>,
}

/// Polls every up node's links until the load stops.
async fn watch_links(
    nodes: Arc<Mutex<Nodes>>,
    rounds: Arc<Mutex<Vec<Round>>>,
    mut stop: watch::Receiver<bool>,
) {
    let adj = adjacency();
    // Bounded by the load's stop; the count bound is a backstop.
    for _ in 0..10_000_000 {
        let targets: Vec<(usize, usize, SocketAddr)> = lock(&nodes)
            .procs
            .iter()
            .enumerate()
            .filter(|(_, p)| p.state == State::Up)
            .map(|(i, p)| (i, p.lives.len().saturating_sub(1), p.admin))
            .collect();
        let mut set = JoinSet::new();
        for (i, life, addr) in targets {
            set.spawn(async move { (i, life, http_get_json(addr, "/peers").await.ok()) });
        }
        let mut seen = vec![None; TOPOLOGY.len()];
        while let Some(r) = set.join_next().await {
            let Ok((i, life, Some(v))) = r else { continue };
            let up: Vec<usize> = adj[i]
                .iter()
                .copied()
                .filter(|&n| v["peers"][TOPOLOGY[n].0]["state"] == "up")
                .collect();
            seen[i] = Some((life, up));
        }
        let at = lock(&nodes).now();
        rounds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Round { at, seen });
        if stopped(&stop) {
            return;
        }
        tokio::select! {
            _ = sleep(LINK_POLL) => {}
            _ = stop.changed() => {}
        }
    }
}

/// When each link between two node lives was first seen up from both ends.
fn readiness(rounds: &[Round]) -> HashMap<(usize, usize, usize, usize), Duration> {
    let adj = adjacency();
    let mut ready = HashMap::new();
    for r in rounds {
        for (x, seen) in r.seen.iter().enumerate() {
            let Some((xl, xup)) = seen else { continue };
            for &y in &adj[x] {
                let Some((yl, yup)) = &r.seen[y] else {
                    continue;
                };
                if xup.contains(&y) && yup.contains(&x) {
                    ready.entry((x, *xl, y, *yl)).or_insert(r.at);
                }
            }
        }
    }
    ready
}

/// `GET path` from an admin endpoint, as JSON.
async fn http_get_json(addr: SocketAddr, path: &str) -> anyhow::Result<serde_json::Value> {
    let fetch = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut buf = Vec::new();
        (&mut stream).take(1 << 20).read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = timeout(Duration::from_secs(1), fetch)
        .await
        .context("timed out")??;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        bail!("{}", head.lines().next().unwrap_or(""));
    }
    let mut body = buf[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body)?;
    }
    Ok(serde_json::from_slice(&body)?)
}

fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunk")?;
        let size = std::str::from_utf8(&data[..end])?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)?;
        data = &data[end + 2..];
        if size == 0 {
            break;
        }
        if data.len() < size + 2 {
            bail!("short chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
    Ok(out)
}

/// What every node holds for `ids`, by pipelined WHATSAT over a few
/// connections (`None`: unknown to the node).
async fn snapshot(addr: SocketAddr, ids: &[Vec<u8>]) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
    const CHUNK: usize = 250;
    let mut set = JoinSet::new();
    for (n, chunk) in ids.chunks(CHUNK).enumerate() {
        let chunk: Vec<Vec<u8>> = chunk.to_vec();
        set.spawn(async move {
            let conn = Conn::connect(addr).await?;
            let Conn { mut reader, writer } = conn;
            let mut requests = Vec::new();
            for id in &chunk {
                requests.extend_from_slice(b"WHATSAT ");
                requests.extend_from_slice(id);
                requests.extend_from_slice(b" 0.001 1\n");
            }
            let write = async move {
                let mut writer = writer;
                writer.write_all(&requests).await?;
                Ok::<_, std::io::Error>(writer)
            };
            let read = async {
                let mut conn_lines = Vec::with_capacity(chunk.len());
                let mut buf = Vec::new();
                for _ in &chunk {
                    buf.clear();
                    let k = reader.read_until(b'\n', &mut buf).await?;
                    if k == 0 || buf.last() != Some(&b'\n') {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "connection closed",
                        ));
                    }
                    buf.pop();
                    if buf.starts_with(b"AT ") {
                        conn_lines.push(Some(buf.clone()));
                        let mut skip = Vec::new();
                        loop {
                            skip.clear();
                            let k = reader.read_until(b'\n', &mut skip).await?;
                            if k == 0 {
                                return Err(std::io::Error::new(
                                    std::io::ErrorKind::UnexpectedEof,
                                    "connection closed",
                                ));
                            }
                            if skip == b"\n" {
                                break;
                            }
                        }
                    } else {
                        conn_lines.push(None);
                    }
                }
                Ok(conn_lines)
            };
            let (w, r) = timeout(Duration::from_secs(30), async { tokio::join!(write, read) })
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "snapshot timed out")
                })?;
            w?;
            Ok::<_, std::io::Error>((n, r?))
        });
    }
    let mut parts = Vec::new();
    while let Some(r) = set.join_next().await {
        parts.push(r??);
    }
    parts.sort_by_key(|(n, _)| *n);
    Ok(parts.into_iter().flat_map(|(_, lines)| lines).collect())
}

/// Everything the load learnt, per client.
struct Book {
    acks: Vec<Vec<Ack>>,
    unacked: Vec<Vec<Sent>>,
}

impl Book {
    fn new(clients: usize) -> Book {
        Book {
            acks: vec![Vec::new(); clients],
            unacked: vec![Vec::new(); clients],
        }
    }
}

/// Polls every node until all hold the same line for every client (a
/// sample of the last-updated clients first), within [`CONVERGE`]; returns
/// the last full snapshot (per node, per client) and the rounds it took.
async fn converge(
    addrs: &[SocketAddr],
    ids: &[Vec<u8>],
    book: &Book,
) -> (Vec<Option<Vec<Option<Vec<u8>>>>>, usize) {
    let deadline = Instant::now() + CONVERGE;
    let mut recent: Vec<(Duration, usize)> = book
        .acks
        .iter()
        .enumerate()
        .filter_map(|(c, acks)| acks.iter().map(|a| a.at).max().map(|at| (at, c)))
        .collect();
    recent.sort_by(|a, b| b.cmp(a));
    let sample: Vec<Vec<u8>> = recent
        .iter()
        .take(64)
        .map(|(_, c)| ids[*c].clone())
        .collect();
    let mut rounds = 0;
    let agree = |snaps: &[Option<Vec<Option<Vec<u8>>>>]| {
        snaps.iter().all(Option::is_some) && snaps.windows(2).all(|w| w[0] == w[1])
    };
    while Instant::now() < deadline {
        rounds += 1;
        let mut snaps = Vec::new();
        for addr in addrs {
            snaps.push(snapshot(*addr, &sample).await.ok());
        }
        if agree(&snaps) {
            break;
        }
        sleep(Duration::from_millis(200)).await;
    }
    let mut last = vec![None; addrs.len()];
    loop {
        rounds += 1;
        let mut snaps = Vec::new();
        for addr in addrs {
            snaps.push(snapshot(*addr, ids).await.ok());
        }
        let done = agree(&snaps);
        last = snaps;
        if done || Instant::now() >= deadline {
            break;
        }
        sleep(Duration::from_millis(300)).await;
    }
    (last, rounds)
}

fn adjacency() -> Vec<Vec<usize>> {
    let index = |name: &str| TOPOLOGY.iter().position(|(n, _)| *n == name).unwrap_or(0);
    TOPOLOGY
        .iter()
        .map(|(_, ns)| ns.iter().map(|n| index(n)).collect())
        .collect()
}

/// Why an acknowledged report is not guaranteed to survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Risk {
    Safe,
    /// The node that acknowledged it was killed before it could pass it on.
    Crashed,
    /// The node that acknowledged it was stopped with no neighbour link up.
    Isolated,
    /// It was passed on, but every node holding it went down before it
    /// reached one that stayed up.
    Relayed,
}

/// The pessimistic model of who holds a report when (see the module docs).
struct Model {
    lives: Vec<Vec<Life>>,
    adj: Vec<Vec<usize>>,
    /// (node, life, neighbour, its life): when both ends first reported
    /// their link up.
    ready: HashMap<(usize, usize, usize, usize), Duration>,
    handoff: Duration,
}

impl Model {
    fn risk(&self, node: usize, at: Duration) -> Risk {
        let lives = &self.lives[node];
        let Some(i) = lives.iter().rposition(|l| l.start <= at) else {
            return Risk::Isolated;
        };
        let mut got = at;
        let origin_end = lives[i].end;
        if let Some((end, signal)) = origin_end {
            if at > end {
                // Answered after the signal: a clean stop still holds it.
                match signal {
                    Signal::Kill => return Risk::Crashed,
                    Signal::Term => got = end,
                }
            }
        }
        let mut best: HashMap<(usize, usize), Duration> = HashMap::new();
        let mut heap = BinaryHeap::new();
        best.insert((node, i), got);
        heap.push(Reverse((got, node, i)));
        while let Some(Reverse((g, x, xi))) = heap.pop() {
            if best.get(&(x, xi)).is_some_and(|b| *b < g) {
                continue;
            }
            let lx = self.lives[x][xi];
            if lx.end.is_none() {
                return Risk::Safe;
            }
            for &y in &self.adj[x] {
                for (yi, ly) in self.lives[y].iter().enumerate() {
                    let Some(&ready) = self.ready.get(&(x, xi, y, yi)) else {
                        continue;
                    };
                    let send = g.max(ready);
                    let sent = match lx.end {
                        None => true,
                        Some((end, Signal::Kill)) => send + self.handoff <= end,
                        Some((end, Signal::Term)) => ready <= end,
                    };
                    if !sent {
                        continue;
                    }
                    let arrives = send + self.handoff;
                    if ly.start > arrives || ly.end.is_some_and(|(end, _)| arrives > end) {
                        continue;
                    }
                    if best.get(&(y, yi)).is_none_or(|b| arrives < *b) {
                        best.insert((y, yi), arrives);
                        heap.push(Reverse((arrives, y, yi)));
                    }
                }
            }
        }
        if best.len() > 1 {
            Risk::Relayed
        } else if matches!(origin_end, Some((_, Signal::Kill))) {
            Risk::Crashed
        } else {
            Risk::Isolated
        }
    }
}

/// Whether `line` is a report some client sent: acknowledged, or sent
/// without an answer.
fn plausible(line: &[u8], acks: &[Ack], unacked: &[Sent]) -> bool {
    if acks.iter().any(|a| a.line == line) {
        return true;
    }
    let f = fields(line);
    f.len() == 6
        && unacked.iter().any(|s| {
            f[1] == TOPOLOGY[s.node as usize].0.as_bytes() && f[4] == s.location && f[5] == s.time
        })
}

#[allow(clippy::too_many_arguments)]
fn compare(
    report: &mut String,
    summary: &mut Summary,
    model: &Model,
    book: &Book,
    ids: &[Vec<u8>],
    snaps: Vec<Option<Vec<Option<Vec<u8>>>>>,
    rounds: usize,
    converged: Duration,
) {
    let _ = writeln!(
        report,
        "model: a link counts as up from the first poll ({} ms apart) where both ends reported it up; \
         a report crosses it within {:.1} s",
        LINK_POLL.as_millis(),
        model.handoff.as_secs_f64()
    );
    let missing: Vec<&str> = snaps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_none())
        .map(|(n, _)| TOPOLOGY[n].0)
        .collect();
    if !missing.is_empty() {
        let _ = writeln!(
            report,
            "could not read the tables of: {}",
            missing.join(", ")
        );
        summary.disagreements = ids.len();
        return;
    }
    let snaps: Vec<Vec<Option<Vec<u8>>>> = snaps.into_iter().flatten().collect();
    let mut examples = Vec::new();
    let (mut kept_newest, mut newer_unacked, mut at_risk_lost, mut never) = (0, 0, 0, 0);
    // For reports lost because the node that acknowledged them was killed
    // before passing them on: the longest time from acknowledgement to
    // kill among them (the herd's real exposure to a crash).
    let mut lost_gap: Option<Duration> = None;
    let mut risks: HashMap<&'static str, usize> = HashMap::new();
    for c in 0..ids.len() {
        summary.compared += 1;
        let acks = &book.acks[c];
        let unacked = &book.unacked[c];
        let held: Vec<&Option<Vec<u8>>> = snaps.iter().map(|s| &s[c]).collect();
        let agree = held.windows(2).all(|w| w[0] == w[1]);
        if !agree {
            summary.disagreements += 1;
        }
        let newest = acks.first();
        let mut safe = None;
        let mut newest_risk = Risk::Safe;
        for (k, a) in acks.iter().enumerate() {
            let r = model.risk(a.node as usize, a.at);
            if k == 0 {
                newest_risk = r;
            }
            if r == Risk::Safe {
                safe = Some(a);
                break;
            }
        }
        if newest_risk != Risk::Safe {
            summary.at_risk += 1;
            *risks
                .entry(match newest_risk {
                    Risk::Crashed => {
                        "acknowledged by a node SIGKILLed before it could pass the report on"
                    }
                    Risk::Isolated => {
                        "acknowledged by a node stopped (SIGTERM) while no neighbour that stayed up could receive it"
                    }
                    Risk::Relayed => "passed on, but every node holding it went down before passing it further",
                    Risk::Safe => "safe",
                })
                .or_default() += 1;
        }
        let ok = |v: &Option<Vec<u8>>| match (v, safe) {
            (None, None) => true,
            (None, Some(_)) => false,
            (Some(v), s) => {
                s.is_none_or(|s| newness(v, &s.line) != Ordering::Less)
                    && (s.is_some_and(|s| s.line == *v) || plausible(v, acks, unacked))
            }
        };
        let good = held.iter().all(|v| ok(v));
        if !good {
            summary.mismatches += 1;
        }
        if agree {
            match (held[0], newest) {
                (Some(v), Some(n)) if *v == n.line => kept_newest += 1,
                (Some(v), Some(n)) if newness(v, &n.line) == Ordering::Greater => {
                    newer_unacked += 1
                }
                (None, None) => never += 1,
                (Some(_), None) => newer_unacked += 1,
                (_, Some(n)) if newest_risk != Risk::Safe => {
                    at_risk_lost += 1;
                    let lives = &model.lives[n.node as usize];
                    let end = lives
                        .iter()
                        .rev()
                        .find(|l| l.start <= n.at)
                        .and_then(|l| l.end);
                    if let (Some((end, Signal::Kill)), Risk::Crashed) = (end, newest_risk) {
                        let gap = end.saturating_sub(n.at);
                        lost_gap = Some(lost_gap.map_or(gap, |g| g.max(gap)));
                    }
                }
                _ => {}
            }
        }
        if (!good || !agree) && examples.len() < 10 {
            let mut text = format!("client {}:", ids[c].escape_ascii());
            let _ = write!(
                text,
                "\n    newest acknowledged: {}",
                newest.map_or("(none)".into(), |a| format!(
                    "{} (by {} at +{:.3}s, {:?})",
                    a.line.escape_ascii(),
                    TOPOLOGY[a.node as usize].0,
                    a.at.as_secs_f64(),
                    newest_risk
                ))
            );
            let _ = write!(
                text,
                "\n    expected (newest safe): {}",
                safe.map_or("(none)".into(), |a| format!(
                    "{} (by {} at +{:.3}s)",
                    a.line.escape_ascii(),
                    TOPOLOGY[a.node as usize].0,
                    a.at.as_secs_f64()
                ))
            );
            for (n, v) in held.iter().enumerate() {
                let _ = write!(
                    text,
                    "\n    {:<9} {}",
                    TOPOLOGY[n].0,
                    v.as_ref()
                        .map_or("(unknown)".into(), |v| v.escape_ascii().to_string())
                );
            }
            examples.push(text);
        }
    }
    let _ = writeln!(
        report,
        "converged: {:.2} s after the load stopped ({rounds} polling rounds of WHATSAT at every node)",
        converged.as_secs_f64()
    );
    let _ = writeln!(
        report,
        "compared: {} clients x {} nodes; newest acknowledged report held everywhere: {kept_newest}; \
         a newer unanswered report held: {newer_unacked}; never acknowledged (and unknown): {never}",
        summary.compared,
        TOPOLOGY.len()
    );
    let _ = writeln!(
        report,
        "at risk (newest acknowledgement not guaranteed by the model): {} (lost: {at_risk_lost})",
        summary.at_risk
    );
    if let Some(gap) = lost_gap {
        let _ = writeln!(
            report,
            "  reports lost with a killed node were acknowledged at most {} ms before the kill",
            gap.as_millis()
        );
    }
    let mut risks: Vec<_> = risks.into_iter().collect();
    risks.sort();
    for (why, n) in risks {
        let _ = writeln!(report, "  {n:>6}  {why}");
    }
    let _ = writeln!(
        report,
        "mismatches: {}; nodes disagreeing: {}",
        summary.mismatches, summary.disagreements
    );
    for e in examples {
        let _ = writeln!(report, "  {e}");
    }
}

// ---------------------------------------------------------------------------
// Reporting.

fn load_report(
    report: &mut String,
    per_second: &[[u64; KINDS]],
    elapsed: Duration,
    reconnects: u64,
    connect_failures: u64,
) -> [u64; KINDS] {
    let mut totals = [0u64; KINDS];
    for s in per_second {
        for k in 0..KINDS {
            totals[k] += s[k];
        }
    }
    let secs = elapsed.as_secs_f64().max(1e-9);
    let rate = |n: u64| n as f64 / secs;
    let _ = writeln!(
        report,
        "load: {:.1} s, {:.0} requests/s answered: IAMAT {:.0}/s ({} won, {} stale, answered with the newer line), \
         WHATSAT {:.0}/s ({} known, {} unknown at that node)",
        secs,
        rate(totals[..FAILED].iter().sum()),
        rate(totals[IAMAT_WON] + totals[IAMAT_STALE]),
        totals[IAMAT_WON],
        totals[IAMAT_STALE],
        rate(totals[WHATSAT_KNOWN] + totals[WHATSAT_UNKNOWN]),
        totals[WHATSAT_KNOWN],
        totals[WHATSAT_UNKNOWN],
    );
    // Whole seconds only (the last one is partial).
    let mut answered: Vec<u64> = per_second
        .iter()
        .take(elapsed.as_secs() as usize)
        .map(|s| s[..FAILED].iter().sum())
        .collect();
    answered.sort_unstable();
    if let (Some(min), Some(max)) = (answered.first(), answered.last()) {
        let _ = writeln!(
            report,
            "      per second: min {min}, median {}, max {max} answered",
            answered[answered.len() / 2]
        );
    }
    let _ = writeln!(
        report,
        "      {} requests cut by a stopping node, {reconnects} reconnections, {connect_failures} refused connects",
        totals[FAILED]
    );
    totals
}

/// The faults, with times since the load's start (`offset` on the nodes'
/// clock).
fn fault_report(report: &mut String, records: &[FaultRecord], offset: Duration) {
    let done: Vec<&FaultRecord> = records.iter().filter(|r| !r.skipped).collect();
    let _ = writeln!(
        report,
        "faults: {} injected ({} SIGTERM, {} SIGKILL), {} skipped (node not up)",
        done.len(),
        done.iter()
            .filter(|r| r.fault.signal == Signal::Term)
            .count(),
        done.iter()
            .filter(|r| r.fault.signal == Signal::Kill)
            .count(),
        records.len() - done.len()
    );
    for r in done {
        let exited = r.exited.map_or("did not exit".into(), |(at, status)| {
            format!(
                "exited ({status}) {:.0} ms later",
                (at.saturating_sub(r.signalled)).as_secs_f64() * 1000.0
            )
        });
        let back = r.back.map_or("not back".into(), |b| {
            let b = b.saturating_sub(offset);
            format!("listening again at +{:.2}s", b.as_secs_f64())
        });
        let _ = writeln!(
            report,
            "  +{:>6.2}s  {:<9} {}  {exited}, {back}",
            r.signalled.saturating_sub(offset).as_secs_f64(),
            TOPOLOGY[r.fault.node].0,
            r.fault.signal.name(),
        );
    }
}

// ---------------------------------------------------------------------------

/// SplitMix64: small, seedable, good enough for schedules and load.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        lo + hi.saturating_sub(lo).mul_f64(self.unit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn life(start: u64, end: Option<(u64, Signal)>) -> Life {
        Life {
            start: Duration::from_secs(start),
            end: end.map(|(e, s)| (Duration::from_secs(e), s)),
        }
    }

    /// Links come up 1 s after both ends start (if both are still up).
    fn model(lives: Vec<Vec<Life>>) -> Model {
        let adj = adjacency();
        let mut ready = HashMap::new();
        for (x, xs) in lives.iter().enumerate() {
            for &y in &adj[x] {
                for (xi, lx) in xs.iter().enumerate() {
                    for (yi, ly) in lives[y].iter().enumerate() {
                        let at = lx.start.max(ly.start) + Duration::from_secs(1);
                        let alive = |l: &Life| l.end.is_none_or(|(e, _)| at <= e);
                        if alive(lx) && alive(ly) {
                            ready.insert((x, xi, y, yi), at);
                        }
                    }
                }
            }
        }
        Model {
            lives,
            adj,
            ready,
            handoff: Duration::from_secs(2),
        }
    }

    #[test]
    fn times_and_order() {
        assert_eq!(parse_time(b"12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_time(b"12"), Some((12, 0)));
        assert_eq!(parse_time(b"1.000000001"), Some((1, 1)));
        assert_eq!(parse_time(b"1.0000000001"), None);
        let a = b"AT Bona +0.1 k +1+1 10.000000002";
        let b = b"AT Clark +0.1 k +1+1 10.000000001";
        assert_eq!(newness(a, b), Ordering::Greater);
        let c = b"AT Clark +0.1 k +1+1 10.000000002";
        assert_eq!(newness(c, a), Ordering::Greater);
    }

    #[test]
    fn the_model_follows_the_promise() {
        let up = || vec![life(0, None)];
        // Bailey (0) killed 1 s after it answered: at risk.
        let mut lives = vec![up(), up(), up(), up(), up()];
        lives[0] = vec![life(0, Some((11, Signal::Kill))), life(13, None)];
        let m = model(lives.clone());
        assert_eq!(m.risk(0, Duration::from_secs(10)), Risk::Crashed);
        // Killed 3 s after: it was passed on.
        assert_eq!(m.risk(0, Duration::from_secs(8)), Risk::Safe);
        // Stopped cleanly right after: passed on.
        lives[0] = vec![life(0, Some((11, Signal::Term))), life(13, None)];
        assert_eq!(
            model(lives.clone()).risk(0, Duration::from_secs(10)),
            Risk::Safe
        );
        // Stopped cleanly while both its neighbours (Bona 1, Campbell 2)
        // were down: lost with it.
        lives[1] = vec![life(0, Some((9, Signal::Kill))), life(20, None)];
        lives[2] = vec![life(0, Some((9, Signal::Term))), life(20, None)];
        assert_eq!(
            model(lives.clone()).risk(0, Duration::from_secs(10)),
            Risk::Isolated
        );
        // Answered by a node that stays up: safe.
        assert_eq!(model(lives).risk(3, Duration::from_secs(10)), Risk::Safe);
    }

    #[test]
    fn schedules_are_bounded_and_reproducible() {
        let a = schedule(&mut Rng::new(7), Duration::from_secs(30), 6);
        let b = schedule(&mut Rng::new(7), Duration::from_secs(30), 6);
        assert!(a.len() <= 6 && !a.is_empty());
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        for f in &a {
            assert!(f.at >= WARMUP && f.at + f.down <= Duration::from_secs(29));
        }
        assert!(schedule(&mut Rng::new(7), Duration::from_secs(30), 0).is_empty());
    }
}
