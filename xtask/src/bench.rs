//! `cargo xtask bench`: the client path and propagation, measured.
//!
//! One run on this machine loads, with the same async pipelining load
//! generator ([`crate::loadgen`]) over the client protocol only:
//! 1. the ceiling, a line server that only answers ([`crate::bench_ceiling`]);
//! 2. the five-node herd (release `herd` processes, reference topology) on
//!    `tcp`;
//! 3. the same on `quic`.
//!
//! All three are up together, and the client-path loads run in rounds that
//! visit each in turn, so every herd reading has a ceiling reading from the
//! same few seconds (this machine's speed swings by a quarter for tens of
//! seconds at a time). The bursts follow, in rounds across the herds too;
//! then the million clients, a herd at a time. The nodes' flooding counters
//! are read around each stage.
//!
//! For each: IAMAT replies per second at Clark with 50 connections × 1 in
//! flight and 10 × 32, with latency from write to reply; for the herds also
//! the time until a burst of distinct updates sent to Clark is visible (by
//! WHATSAT) on every other node, and the resident memory of every node once
//! a million clients are stored everywhere. Every reply is checked, and a
//! random sample of the updates (plus each connection's last) is checked on
//! every node: anything lost or a stage that fails makes the run exit
//! non-zero. Speed targets are reported, never enforced.
//!
//! Results: `target/bench/results.md` (also printed), `latency.svg` and
//! `throughput.svg`; with `--perf`, the profiles and a flame graph of each.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use herd::config::TransportKind;
use tokio::runtime::Runtime;
use tokio::sync::broadcast;
use tokio::task::JoinSet;

use crate::bench_procs::{self, Ceiling, Herd, ENTRY};
use crate::bench_report;
use crate::loadgen::{self, Conn, LoadResult, LoadSpec, UpdateSpec, Verified};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Short run (CI): a few seconds per stage, 100,000 clients, a 5,000-update burst
    #[arg(long)]
    pub quick: bool,
    /// Configurations to run
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "ceiling,tcp,quic"
    )]
    pub only: Vec<Stage>,
    /// Distinct clients stored before memory is read [default: 1000000, quick 100000]
    #[arg(long, value_name = "N")]
    pub clients: Option<u64>,
    /// Updates in each propagation burst [default: 20000, quick 5000]
    #[arg(long, value_name = "N")]
    pub burst: Option<u64>,
    /// Bursts sent to each herd, in rounds (one to each herd in turn); the
    /// burst figures are their median [default: 5, quick 2]
    #[arg(long, value_name = "N")]
    pub bursts: Option<usize>,
    /// Seconds measured per load and configuration, over all rounds
    /// [default: 10, quick 1.5]
    #[arg(long, value_name = "SECS")]
    pub seconds: Option<f64>,
    /// Rounds the client-path loads are measured in; each round loads every
    /// configuration in turn [default: 10, quick 2]
    #[arg(long, value_name = "N")]
    pub rounds: Option<usize>,
    /// Where results go [default: target/bench]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Worker threads per node (`[runtime] workers`) [default: the node's
    /// default, one per core]
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Keep the temporary directory (configs, certificates, node logs)
    #[arg(long)]
    pub keep: bool,
    /// Record `perf record -g` profiles of the herd's nodes during the first
    /// round's 50×1 load and the bursts (with the sample checks after each),
    /// and `perf stat` counts of syscalls per node during that 50×1 load
    /// (into the output directory), then a flame graph of each profile
    #[arg(long)]
    pub perf: bool,
    /// Use this `herd` binary instead of building the workspace's (to
    /// compare a candidate build)
    #[arg(long, value_name = "PATH")]
    pub herd_bin: Option<PathBuf>,
    /// Also run each herd from this `herd` binary, in the same rounds (as
    /// `<transport>-against`): an A/B of two builds that the machine's
    /// swings in speed affect alike
    #[arg(long, value_name = "PATH")]
    pub against: Option<PathBuf>,
    /// Internal: run the ceiling server (the benchmark starts it)
    #[arg(long, hide = true)]
    pub serve_ceiling: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Stage {
    Ceiling,
    Tcp,
    Quic,
}

/// Set when the benchmark runs the release build it made of itself.
const REEXEC_ENV: &str = "HERD_XTASK_BENCH_RELEASE";

/// The two closed-loop loads: (connections, requests in flight on each).
pub const LOADS: [(usize, usize); 2] = [(50, 1), (10, 32)];

/// Connections and in-flight window for bursts of distinct updates.
const BURST_CONNS: usize = 10;
const BURST_WINDOW: usize = 512;

/// What every client ID the benchmark sends starts with, the same for
/// every configuration so that all of them handle lines of the same length
/// (IDs that named the configuration cost an `--against` herd, 8 bytes
/// longer, about 5% in the bursts). Every configuration is a separate
/// server, so the same IDs in each never meet.
const ID_TAG: &str = "herd";

/// Between WHATSAT polls while waiting for updates to arrive.
const POLL: Duration = Duration::from_millis(1);

/// Targets (reported, never enforced).
pub const TARGET_SHARE_TCP: f64 = 0.75;
pub const TARGET_SHARE_QUIC: f64 = 0.70;
pub const TARGET_BURST_RATE: f64 = 300_000.0;
pub const TARGET_RSS_BYTES: u64 = 250_000_000;
pub const TARGET_CLIENTS: u64 = 1_000_000;
pub const TARGET_BURST: u64 = 20_000;

/// The sizes of one run.
#[derive(Debug, Clone)]
pub struct Params {
    pub quick: bool,
    /// Before each slice of a load is measured.
    pub warmup: Duration,
    /// Measured per load and configuration, over all rounds.
    pub measure: Duration,
    /// Rounds the client-path loads are measured in.
    pub rounds: usize,
    pub burst: u64,
    /// Bursts per herd.
    pub bursts: usize,
    pub clients: u64,
    /// Random updates checked on every node, besides the last ones.
    pub samples: usize,
}

impl Params {
    fn from_args(args: &BenchArgs) -> Params {
        let quick = args.quick;
        let measure = args.seconds.filter(|s| s.is_finite() && *s > 0.0).map_or(
            Duration::from_millis(if quick { 1500 } else { 10_000 }),
            Duration::from_secs_f64,
        );
        Params {
            quick,
            warmup: Duration::from_millis(500),
            measure,
            rounds: args.rounds.unwrap_or(if quick { 2 } else { 10 }).max(1),
            burst: args
                .burst
                .unwrap_or(if quick { 5_000 } else { TARGET_BURST })
                .max(BURST_CONNS as u64),
            bursts: args.bursts.unwrap_or(if quick { 2 } else { 5 }).max(1),
            clients: args
                .clients
                .unwrap_or(if quick { 100_000 } else { TARGET_CLIENTS })
                .max(BURST_CONNS as u64),
            samples: if quick { 250 } else { 1000 },
        }
    }

    /// What one round measures of each load on each configuration.
    pub fn slice(&self) -> Duration {
        self.measure / self.rounds as u32
    }
}

/// One closed-loop load on one configuration, over all rounds.
#[derive(Debug, Clone)]
pub struct LoadRow {
    pub config: String,
    pub conns: usize,
    pub depth: usize,
    pub result: Option<LoadResult>,
    /// The rate in each round.
    pub rounds: Vec<f64>,
    /// CPU used meanwhile, in cores, per process.
    pub cpu: Vec<(String, f64)>,
    /// For a herd, in each round: milliseconds from the load's last reply
    /// until the four other nodes held every connection's last update.
    pub caught_up_ms: Vec<f64>,
}

/// A burst of distinct updates sent to Clark and watched arrive elsewhere.
#[derive(Debug, Clone)]
pub struct Propagation {
    pub total: u64,
    /// From the first write until Clark had answered every update.
    pub acked: Duration,
    /// From the first write until every connection's last update was seen
    /// on every other node.
    pub visible: Duration,
    /// Replies that were not the expected AT line.
    pub bad: u64,
    pub first_bad: Option<String>,
    /// What the sample check found, per node.
    pub verified: Vec<(String, Verified)>,
    /// CPU used from the first write until the updates were visible, in
    /// cores, per process.
    pub cpu: Vec<(String, f64)>,
}

impl Propagation {
    pub fn rate(&self) -> f64 {
        self.total as f64 / self.visible.as_secs_f64().max(1e-9)
    }

    pub fn lost(&self) -> usize {
        self.bad as usize
            + self
                .verified
                .iter()
                .map(|(_, v)| v.missing.len() + v.wrong.len())
                .sum::<usize>()
    }
}

/// Everything measured on one herd configuration besides the loads.
#[derive(Debug, Clone, Default)]
pub struct HerdRow {
    pub config: String,
    /// The bursts, in the order sent.
    pub bursts: Vec<Propagation>,
    pub clients: Option<Propagation>,
    /// VmRSS per node after `clients` were stored everywhere.
    pub rss: Vec<(String, u64)>,
    /// VmRSS per node once the herd was up, before any load.
    pub rss_start: Vec<(String, u64)>,
    /// Distinct clients every node holds when `rss` is read: the stored
    /// clients, the bursts, the loads' client IDs and the start-up probes.
    pub stored: u64,
    /// Links lost during the run (from the nodes' logs).
    pub links_lost: usize,
    /// The herd's flooding counters over a stage, summed over its nodes.
    pub flood: Vec<Flood>,
}

/// A herd's bursts summed up: the median one stands for them.
#[derive(Debug, Clone, Copy)]
pub struct Bursts<'a> {
    /// The burst whose rate is the median (of an even number of bursts,
    /// the slower of the middle two).
    pub median: &'a Propagation,
    pub slowest: f64,
    pub fastest: f64,
    pub count: usize,
}

impl HerdRow {
    pub fn bursts(&self) -> Option<Bursts<'_>> {
        let mut by_rate: Vec<&Propagation> = self.bursts.iter().collect();
        by_rate.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
        let median = by_rate[by_rate.len().checked_sub(1)? / 2];
        Some(Bursts {
            median,
            slowest: by_rate[0].rate(),
            fastest: by_rate[by_rate.len() - 1].rate(),
            count: by_rate.len(),
        })
    }

    /// Cores per process over all the bursts, weighted by their durations.
    pub fn burst_cpu(&self) -> Vec<(String, f64)> {
        let wall: f64 = self.bursts.iter().map(|b| b.visible.as_secs_f64()).sum();
        let mut cpu: Vec<(String, f64)> = Vec::new();
        for b in &self.bursts {
            for (name, cores) in &b.cpu {
                let share = cores * b.visible.as_secs_f64() / wall.max(1e-9);
                match cpu.iter_mut().find(|(n, _)| n == name) {
                    Some((_, total)) => *total += share,
                    None => cpu.push((name.clone(), share)),
                }
            }
        }
        cpu
    }
}

/// What flooding did during one stage of a herd.
#[derive(Debug, Clone)]
pub struct Flood {
    pub stage: String,
    /// Summed over the herd's nodes (`iamat`: the updates clients sent,
    /// all to Clark).
    pub counters: bench_procs::Counters,
}

#[derive(Debug, Clone, Default)]
pub struct Results {
    pub params: Option<Params>,
    pub loads: Vec<LoadRow>,
    pub herds: Vec<HerdRow>,
    /// Stages that failed or lost something: the run exits non-zero.
    pub failures: Vec<String>,
    /// Things worth knowing that are not failures.
    pub notes: Vec<String>,
    /// `perf record` files written (`--perf`), with the processes in each,
    /// for their flame graphs once the measuring is over.
    pub profiles: Vec<(PathBuf, Vec<(String, u32)>)>,
}

impl Results {
    /// The rate `config` reached under a load, if it was measured.
    pub fn rate(&self, config: &str, conns: usize, depth: usize) -> Option<f64> {
        self.loads
            .iter()
            .find(|l| l.config == config && l.conns == conns && l.depth == depth)
            .and_then(|l| l.result.as_ref())
            .map(LoadResult::rate)
    }

    /// The ceiling's rate for a load, if it was measured.
    pub fn ceiling_rate(&self, conns: usize, depth: usize) -> Option<f64> {
        self.rate(CEILING, conns, depth)
    }

    /// `config`'s share of the ceiling in each round of a load: its rate
    /// over the ceiling's in the same round.
    pub fn round_shares(&self, config: &str, conns: usize, depth: usize) -> Vec<f64> {
        self.round_ratios(config, CEILING, conns, depth)
    }

    /// `config`'s rate over `base`'s in each round of a load.
    pub fn round_ratios(&self, config: &str, base: &str, conns: usize, depth: usize) -> Vec<f64> {
        let rounds = |config| {
            self.loads
                .iter()
                .find(|l| l.config == config && l.conns == conns && l.depth == depth)
                .map_or(&[][..], |l| l.rounds.as_slice())
        };
        rounds(config)
            .iter()
            .zip(rounds(base))
            .filter(|(_, c)| **c > 0.0)
            .map(|(r, c)| r / c)
            .collect()
    }
}

/// A mean and its 95% confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub mean: f64,
    pub low: f64,
    pub high: f64,
}

impl Interval {
    /// Whether `x` lies inside: a run whose interval holds a target cannot
    /// tell whether the herd meets it.
    pub fn holds(&self, x: f64) -> bool {
        self.low <= x && x <= self.high
    }
}

/// Student's t at 97.5% for 1 to 30 degrees of freedom.
const T_975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// The mean of `xs` with its 95% confidence interval (Student's t, the
/// samples taken as independent); None for fewer than two samples. The
/// rounds of a load are such samples: each pairs a herd's rate with the
/// ceiling's, seconds apart, so the machine's slower drifts cancel, and
/// what is left varies from round to round.
pub fn mean_interval(xs: &[f64]) -> Option<Interval> {
    let n = xs.len();
    if n < 2 {
        return None;
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let t = T_975.get(n - 2).copied().unwrap_or(1.96);
    let half = t * (var / n as f64).sqrt();
    Some(Interval {
        mean,
        low: mean - half,
        high: mean + half,
    })
}

/// The ceiling's configuration name.
pub const CEILING: &str = "ceiling";

/// What `--against` herds' configuration names end in.
pub const AGAINST: &str = "against";

pub fn is_ceiling(config: &str) -> bool {
    config == CEILING
}

static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Has the benchmark been told to stop (Ctrl-C, SIGTERM)?
pub fn interrupted() -> bool {
    STOP.get().is_some_and(|f| f.load(Ordering::Relaxed))
}

fn install_signals() -> Result<()> {
    let flag = STOP.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal exits at once (children die with us).
        signal_hook::flag::register_conditional_shutdown(signal, 130, flag.clone())?;
        signal_hook::flag::register(signal, flag.clone())?;
    }
    Ok(())
}

/// Runs `fut` on the runtime until it ends or the benchmark is interrupted.
fn block<T>(rt: &Runtime, fut: impl Future<Output = Result<T>>) -> Result<T> {
    rt.block_on(async {
        tokio::select! {
            r = fut => r,
            _ = async {
                while !interrupted() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            } => bail!("interrupted"),
        }
    })
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// `cargo build --release` of the herd binary (and of xtask itself).
fn build(root: &Path, with_xtask: bool) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--release", "--quiet", "--package", "herd"]);
    if with_xtask {
        cmd.args(["--package", "xtask"]);
    }
    cmd.args(["--bin", "herd"]);
    if with_xtask {
        cmd.args(["--bin", "xtask"]);
    }
    let status = cmd
        .current_dir(root)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release failed");
    }
    Ok(())
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.serve_ceiling {
        return crate::bench_ceiling::serve();
    }
    install_signals()?;
    let root = crate::workspace_root();
    let target = target_dir(&root);
    let rebuilt = std::env::var_os(REEXEC_ENV).is_some();
    if cfg!(debug_assertions) && !rebuilt {
        // The load generator and the ceiling must not be a debug build: run
        // the benchmark from a release build of this very task.
        println!("building herd and xtask (release)...");
        build(&root, true)?;
        if interrupted() {
            bail!("interrupted");
        }
        let exe = target.join("release").join("xtask");
        let err = Command::new(&exe)
            .args(std::env::args_os().skip(1))
            .env(REEXEC_ENV, "1")
            .exec();
        bail!("running {}: {err}", exe.display());
    }
    if !rebuilt && args.herd_bin.is_none() {
        println!("building herd (release)...");
        build(&root, false)?;
    }
    let herd_bin = args
        .herd_bin
        .clone()
        .unwrap_or_else(|| target.join("release").join("herd"));
    if interrupted() {
        bail!("interrupted");
    }
    let exe = std::env::current_exe().context("finding the xtask executable")?;

    let params = Params::from_args(&args);
    let out = args.out.clone().unwrap_or_else(|| target.join("bench"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let tmp = std::env::temp_dir().join(format!("herd-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let mut results = Results {
        params: Some(params.clone()),
        ..Results::default()
    };
    if let Some(bin) = &args.herd_bin {
        results.notes.push(format!(
            "herd binary: {} (not the workspace's build)",
            bin.display()
        ));
    }
    if let Some(bin) = &args.against {
        results.notes.push(format!(
            "`-{AGAINST}` herds: herd binary {}, in the same rounds",
            bin.display()
        ));
    }
    if let Some(n) = args.workers {
        results
            .notes
            .push(format!("nodes ran with [runtime] workers = {n}"));
    }
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        let avg: Vec<&str> = load.split_whitespace().take(3).collect();
        results.notes.push(format!(
            "load average when the run began: {}",
            avg.join(" ")
        ));
    }
    let sysctl = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|_| "unknown".into())
    };
    // quic nodes ask for 4 MiB UDP buffers and get at most these.
    results.notes.push(format!(
        "UDP buffer caps: net.core.rmem_max {}, wmem_max {}",
        sysctl("rmem_max"),
        sysctl("wmem_max")
    ));
    let started = Instant::now();
    println!(
        "bench{}: {:.1} s per load in {} round(s), {} bursts of {} updates, {} clients; {} cores",
        if params.quick { " --quick" } else { "" },
        params.measure.as_secs_f64(),
        params.rounds,
        params.bursts,
        params.burst,
        params.clients,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut running = Vec::new();
    if args.only.contains(&Stage::Ceiling) && !interrupted() {
        println!("\n== {CEILING} (a line server that only answers)");
        match Ceiling::start(&exe) {
            Ok(ceiling) => running.push(Running {
                config: CEILING.to_string(),
                addr: ceiling.addr,
                server: crate::bench_ceiling::NAME,
                pids: vec![(ENTRY.to_string(), ceiling.pid())],
                process: Process::Ceiling(ceiling),
                failed: false,
            }),
            Err(e) => failed(&mut results, CEILING, &e),
        }
    }
    for (stage, transport) in [
        (Stage::Tcp, TransportKind::Tcp),
        (Stage::Quic, TransportKind::Quic),
    ] {
        if !args.only.contains(&stage) || interrupted() {
            continue;
        }
        let name = transport_name(transport);
        let mut builds = vec![(name.to_string(), herd_bin.clone())];
        if let Some(other) = &args.against {
            builds.push((format!("{name}-{AGAINST}"), other.clone()));
        }
        for (config, bin) in builds {
            println!("\n== herd on {name}: {config} ({})", bin.display());
            match start_herd(&rt, &bin, &tmp, transport, &config, &args, &mut results) {
                Ok(herd) => running.push(herd),
                Err(e) => failed(&mut results, &config, &e),
            }
        }
    }
    for r in &mut running {
        if let Process::Herd(run) = &mut r.process {
            run.counters = counters(&run.herd, &r.config, &mut results);
        }
    }
    client_path(&rt, &mut running, &params, &args, &out, &mut results);
    if args.against.is_some() {
        against_notes(&mut results);
    }
    bursts(&rt, &mut running, &params, &args, &out, &mut results);
    for r in running {
        match r.process {
            Process::Herd(mut run) if r.failed => {
                for problem in run.herd.stop() {
                    results.notes.push(format!("{}: {problem}", r.config));
                }
                results.herds.push(run.row);
            }
            Process::Ceiling(mut ceiling) => results.notes.extend(ceiling.stop()),
            Process::Herd(run) => {
                let pids = r.pids;
                if let Err(e) = herd_tail(&rt, *run, &pids, &params, &mut results) {
                    failed(&mut results, &r.config, &e);
                }
            }
        }
    }
    if args.against.is_some() {
        burst_against_notes(&mut results);
    }
    rt.shutdown_timeout(Duration::from_secs(2));
    if interrupted() {
        results.failures.push("interrupted".into());
    }
    results.notes.push(format!(
        "whole run: {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    // After the measuring: `perf script` would take the machine for seconds.
    for (data, nodes) in std::mem::take(&mut results.profiles) {
        let svg = data.with_extension("svg");
        match crate::flame::write(&data, &nodes, &svg) {
            Ok(()) => results
                .notes
                .push(format!("flame graph: {}", svg.display())),
            Err(e) => results
                .notes
                .push(format!("no flame graph of {}: {e:#}", data.display())),
        }
    }

    let table = bench_report::markdown(&results);
    let md = out.join("results.md");
    std::fs::write(&md, &table).with_context(|| format!("writing {}", md.display()))?;
    let plots = bench_report::plots(&results, &out);
    println!("\n{table}");
    println!("wrote {}", md.display());
    match plots {
        Ok(files) => {
            for f in files {
                println!("wrote {}", f.display());
            }
        }
        Err(e) => results.failures.push(format!("plots: {e:#}")),
    }
    if args.keep || !results.failures.is_empty() {
        println!("node logs and configs kept in {}", tmp.display());
    } else {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if !results.failures.is_empty() {
        bail!(
            "{} problem(s):\n  {}",
            results.failures.len(),
            results.failures.join("\n  ")
        );
    }
    Ok(())
}

/// CPU seconds of the benchmark process itself.
fn own_cpu() -> f64 {
    bench_procs::cpu_seconds(std::process::id()).unwrap_or(0.0)
}

/// The name of the reading of the whole machine's busy time.
const MACHINE: &str = "machine";
/// What the machine spent on processes outside the benchmark.
pub const OTHER: &str = "other processes";
/// What the hypervisor took from this machine's cores (`steal`).
pub const STOLEN: &str = "stolen by the host";

/// Cores used between two CPU readings taken `wall` apart; the machine's
/// reading becomes what processes outside the benchmark used (the host's
/// share is its own reading, not a process's).
fn cores(before: &[(String, f64)], after: &[(String, f64)], wall: Duration) -> Vec<(String, f64)> {
    let secs = wall.as_secs_f64().max(1e-9);
    let mut out: Vec<(String, f64)> = before
        .iter()
        .zip(after)
        .map(|((name, b), (_, a))| (name.clone(), (a - b) / secs))
        .collect();
    if let Some(i) = out.iter().position(|(n, _)| n == MACHINE) {
        let (_, machine) = out.remove(i);
        let ours: f64 = out
            .iter()
            .filter(|(n, _)| n != STOLEN)
            .map(|(_, c)| c)
            .sum();
        out.push((OTHER.to_string(), (machine - ours).max(0.0)));
    }
    out
}

/// Readings of the machine and of the benchmark itself.
fn common_readings() -> [(String, f64); 3] {
    let machine = bench_procs::MachineTimes::now().unwrap_or_default();
    [
        ("load generator".to_string(), own_cpu()),
        (MACHINE.to_string(), machine.busy),
        (STOLEN.to_string(), machine.stolen),
    ]
}

/// Notes, for each `-against` herd, its rate over its transport's herd in
/// each round.
fn against_notes(results: &mut Results) {
    let mut notes = Vec::new();
    for row in results.loads.iter() {
        let Some(base) = row.config.strip_suffix(&format!("-{AGAINST}")) else {
            continue;
        };
        let ratios = results.round_ratios(&row.config, base, row.conns, row.depth);
        if ratios.is_empty() {
            continue;
        }
        let mean = match mean_interval(&ratios) {
            Some(i) => format!(
                "mean {:.2}, 95% interval {:.2}–{:.2}",
                i.mean, i.low, i.high
            ),
            None => format!("mean {:.2}", ratios[0]),
        };
        let each: Vec<String> = ratios.iter().map(|r| format!("{:.2}", r)).collect();
        notes.push(format!(
            "{} {}×{}: rate over {base}'s in each round {} ({mean})",
            row.config,
            row.conns,
            row.depth,
            each.join(", "),
        ));
    }
    print_notes(results, notes);
}

/// Notes each `--against` herd's burst rates over its base herd's, round by
/// round (a round's two bursts went one after the other).
fn burst_against_notes(results: &mut Results) {
    let mut notes = Vec::new();
    for row in &results.herds {
        let Some(base) = row.config.strip_suffix(&format!("-{AGAINST}")) else {
            continue;
        };
        let Some(base_row) = results.herds.iter().find(|h| h.config == base) else {
            continue;
        };
        let ratios: Vec<f64> = row
            .bursts
            .iter()
            .zip(&base_row.bursts)
            .map(|(b, a)| b.rate() / a.rate().max(1e-9))
            .collect();
        if ratios.is_empty() {
            continue;
        }
        let mut sorted = ratios.clone();
        sorted.sort_by(f64::total_cmp);
        let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        notes.push(format!(
            "{} bursts: rate over {base}'s in each round {} (median {:.2})",
            row.config,
            each.join(", "),
            (sorted[(sorted.len() - 1) / 2] + sorted[sorted.len() / 2]) / 2.0
        ));
    }
    print_notes(results, notes);
}

/// Prints notes and keeps them for the report.
fn print_notes(results: &mut Results, notes: Vec<String>) {
    for note in notes {
        println!("{note}");
        results.notes.push(note);
    }
}

/// Records that a configuration failed; the run goes on without it.
fn failed(results: &mut Results, config: &str, e: &anyhow::Error) {
    eprintln!("{config}: FAILED: {e:#}");
    results.failures.push(format!("{config}: {e:#}"));
}

/// A configuration that is up for the client-path loads.
struct Running {
    config: String,
    addr: SocketAddr,
    /// The name in its AT lines.
    server: &'static str,
    /// Its processes, named as in the CPU table.
    pids: Vec<(String, u32)>,
    process: Process,
    /// A load failed: the later rounds leave it out.
    failed: bool,
}

enum Process {
    Ceiling(Ceiling),
    Herd(Box<HerdRun>),
}

/// A herd that is up, and what has been measured on it so far.
struct HerdRun {
    herd: Herd,
    nodes: Vec<(String, SocketAddr)>,
    row: HerdRow,
    /// Its counters when the stage being measured began.
    counters: Option<bench_procs::Counters>,
}

impl Running {
    fn check_alive(&mut self) -> Result<()> {
        match &mut self.process {
            Process::Ceiling(_) => Ok(()),
            Process::Herd(run) => run.herd.check_alive(),
        }
    }
}

/// CPU seconds so far of `pids`, of the load generator and of the machine.
fn cpu_of(pids: &[(String, u32)]) -> Vec<(String, f64)> {
    let mut r: Vec<(String, f64)> = pids
        .iter()
        .map(|(n, p)| (n.clone(), bench_procs::cpu_seconds(*p).unwrap_or(0.0)))
        .collect();
    r.extend(common_readings());
    r
}

/// One configuration's readings of one load, summed over the rounds.
#[derive(Default)]
struct Sum {
    result: Option<LoadResult>,
    rounds: Vec<f64>,
    /// Core-seconds per process, and the wall time they were read over.
    cpu: Vec<(String, f64)>,
    wall: f64,
    caught_up_ms: Vec<f64>,
}

/// The client-path loads, in rounds. Each round gives every configuration
/// that is up each load in turn, for a slice of the measured time, and
/// starts one configuration further along than the round before. So the
/// ceiling and the herds are measured under the same drifts of the
/// machine's speed, and none always follows another.
fn client_path(
    rt: &Runtime,
    running: &mut [Running],
    params: &Params,
    args: &BenchArgs,
    out: &Path,
    results: &mut Results,
) {
    if running.is_empty() {
        return;
    }
    println!(
        "\n== client path: {} round(s) of {:.1} s per load and configuration, after {:.1} s of warm-up each",
        params.rounds,
        params.slice().as_secs_f64(),
        params.warmup.as_secs_f64()
    );
    let mut sums: Vec<Vec<Sum>> = running
        .iter()
        .map(|_| LOADS.iter().map(|_| Sum::default()).collect())
        .collect();
    for round in 0..params.rounds {
        for (l, &(conns, depth)) in LOADS.iter().enumerate() {
            for k in 0..running.len() {
                let i = (round + k) % running.len();
                let r = &mut running[i];
                if r.failed || interrupted() {
                    continue;
                }
                let spec = LoadSpec {
                    addr: r.addr,
                    server: r.server.to_string(),
                    conns,
                    depth,
                    warmup: params.warmup,
                    measure: params.slice(),
                    tag: format!("{ID_TAG}-{conns}x{depth}"),
                };
                let herd = matches!(r.process, Process::Herd(_));
                let profile = args.perf && herd && depth == 1 && round == 0;
                let data = out.join(format!("perf-{}-{conns}x{depth}.data", r.config));
                let perf = Perf::start(
                    profile,
                    &r.pids,
                    &data,
                    Some(&out.join(format!("perf-stat-{}-{conns}x{depth}", r.config))),
                );
                if profile {
                    results.profiles.push((data, r.pids.clone()));
                }
                let before = cpu_of(&r.pids);
                let t = Instant::now();
                let result = block(rt, loadgen::closed_loop(spec));
                let wall = t.elapsed();
                let cpu = cores(&before, &cpu_of(&r.pids), wall);
                // A profile goes on through the catch-up below: stopping
                // perf first (it writes out its data) would hold the
                // polling back and make the lag read longer than it is.
                let result = result
                    .and_then(|res| {
                        let caught_up = match &r.process {
                            Process::Herd(run) => {
                                Some(block(rt, caught_up(&run.nodes, &res, t + wall))?)
                            }
                            Process::Ceiling(_) => None,
                        };
                        r.check_alive().map(|()| (res, caught_up))
                    })
                    .with_context(|| format!("{conns}×{depth} load, round {}", round + 1));
                drop(perf);
                let (res, caught_up) = match result {
                    Ok(res) => res,
                    Err(e) => {
                        failed(results, &r.config, &e);
                        r.failed = true;
                        continue;
                    }
                };
                println!(
                    "round {}/{} {} {conns}×{depth}: {:.0} replies/s",
                    round + 1,
                    params.rounds,
                    r.config,
                    res.rate()
                );
                let sum = &mut sums[i][l];
                sum.rounds.push(res.rate());
                sum.caught_up_ms
                    .extend(caught_up.map(|d| d.as_secs_f64() * 1e3));
                if sum.cpu.is_empty() {
                    sum.cpu = cpu.iter().map(|(n, _)| (n.clone(), 0.0)).collect();
                }
                for ((_, total), (_, c)) in sum.cpu.iter_mut().zip(&cpu) {
                    *total += c * wall.as_secs_f64();
                }
                sum.wall += wall.as_secs_f64();
                match &mut sum.result {
                    Some(total) => total.absorb(res),
                    None => sum.result = Some(res),
                }
            }
        }
    }
    println!();
    for (r, sums) in running.iter().zip(sums) {
        for (&(conns, depth), sum) in LOADS.iter().zip(sums) {
            let Some(result) = sum.result else { continue };
            print_load(
                &r.config,
                conns,
                depth,
                &result,
                results.ceiling_rate(conns, depth),
            );
            if result.bad > 0 {
                results.failures.push(format!(
                    "{} {conns}×{depth}: {} wrong replies, first {:?}",
                    r.config, result.bad, result.first_bad
                ));
            }
            let wall = sum.wall.max(1e-9);
            results.loads.push(LoadRow {
                config: r.config.clone(),
                conns,
                depth,
                result: Some(result),
                rounds: sum.rounds,
                cpu: sum.cpu.into_iter().map(|(n, s)| (n, s / wall)).collect(),
                caught_up_ms: sum.caught_up_ms,
            });
        }
    }
}

/// How long after `ended`, a load's last reply, the herd's other nodes held
/// each connection's last update (polled every millisecond).
async fn caught_up(
    nodes: &[(String, SocketAddr)],
    load: &LoadResult,
    ended: Instant,
) -> Result<Duration> {
    let deadline = ended + Duration::from_secs(30);
    let mut waits = JoinSet::new();
    for (name, addr) in nodes.iter().filter(|(name, _)| name != ENTRY) {
        let (name, addr, lines) = (name.clone(), *addr, load.last.clone());
        waits.spawn(async move {
            loadgen::wait_lines(addr, &lines, Duration::from_millis(1), deadline)
                .await
                .with_context(|| format!("{name} catching up"))
        });
    }
    let mut last = ended;
    while let Some(seen) = waits.join_next().await {
        last = last.max(seen??);
    }
    Ok(last - ended)
}

fn print_load(config: &str, conns: usize, depth: usize, r: &LoadResult, ceiling: Option<f64>) {
    let share = ceiling.map_or(String::new(), |c| {
        format!(", {:.0}% of the ceiling", 100.0 * r.rate() / c)
    });
    println!(
        "{config} {conns}×{depth}: {:.0} replies/s, p50 {:.0} µs, p99 {:.0} µs{share}",
        r.rate(),
        r.quantile_ns(0.5) as f64 / 1e3,
        r.quantile_ns(0.99) as f64 / 1e3
    );
}

fn transport_name(t: TransportKind) -> &'static str {
    match t {
        TransportKind::Tcp => "tcp",
        TransportKind::Quic => "quic",
    }
}

/// Events `perf stat` counts per node: where the syscalls go.
const PERF_STAT_EVENTS: &str = "task-clock,context-switches,\
    syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,\
    syscalls:sys_enter_sendmsg,syscalls:sys_enter_recvmsg,\
    syscalls:sys_enter_sendmmsg,syscalls:sys_enter_recvmmsg,\
    syscalls:sys_enter_write,syscalls:sys_enter_writev,\
    syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex,\
    syscalls:sys_enter_sched_yield";

/// `perf record` (and `perf stat`) of some processes, if asked for; stopped
/// with SIGINT when dropped.
struct Perf(Vec<Child>);

impl Perf {
    /// `record`: one profile of all `nodes` into `path`; `stat`: counts
    /// per node into `<stat>-<node>.txt`.
    fn start(enabled: bool, nodes: &[(String, u32)], record: &Path, stat: Option<&Path>) -> Perf {
        let mut children = Vec::new();
        if !enabled {
            return Perf(children);
        }
        // Moved aside (as perf would) so that waiting for the new file's
        // header below does not find the old one.
        let mut old = record.as_os_str().to_owned();
        old.push(".old");
        let _ = std::fs::rename(record, old);
        let list: Vec<String> = nodes.iter().map(|(_, p)| p.to_string()).collect();
        let mut cmd = Command::new("perf");
        cmd.args(["record", "-q", "-F", "999", "-g", "-o"])
            .arg(record)
            .args(["-p", &list.join(",")]);
        let mut commands = vec![cmd];
        if let Some(stat) = stat {
            for (name, pid) in nodes {
                let mut cmd = Command::new("perf");
                let mut file = stat.as_os_str().to_owned();
                file.push(format!("-{name}.txt"));
                cmd.args(["stat", "-e", PERF_STAT_EVENTS, "-o"])
                    .arg(file)
                    .args(["-p", &pid.to_string()]);
                commands.push(cmd);
            }
        }
        for mut cmd in commands {
            match cmd
                .stdout(std::process::Stdio::null())
                .process_group(0)
                .spawn()
            {
                Ok(c) => children.push(c),
                Err(e) => eprintln!("warning: perf: {e}"),
            }
        }
        if !children.is_empty() {
            // perf writes its file's header once it has started; stopped
            // before that, it leaves no profile, which a busy machine made
            // happen with one-second loads. Then it needs a moment more to
            // attach to every thread.
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::fs::metadata(record).map_or(true, |m| m.len() == 0)
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        Perf(children)
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        for child in &self.0 {
            // SAFETY: kill(2) on a pid we spawned and have not reaped.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGINT);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        for child in &mut self.0 {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts a herd on `transport` and waits until every node holds a probe
/// sent to each.
fn start_herd(
    rt: &Runtime,
    bin: &Path,
    tmp: &Path,
    transport: TransportKind,
    name: &str,
    args: &BenchArgs,
    results: &mut Results,
) -> Result<Running> {
    let (config_path, config) =
        bench_procs::write_config(&tmp.join(name), transport, args.workers)?;
    let mut herd = Herd::start(bin, &config_path, &config)?;
    let nodes: Vec<(String, SocketAddr)> = herd
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.client))
        .collect();
    let pids: Vec<(String, u32)> = herd
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.child.id()))
        .collect();
    let ready = block(
        rt,
        wait_ready(nodes.clone(), Instant::now() + Duration::from_secs(30)),
    )
    .context("waiting for the herd to connect");
    if let Err(e) = ready {
        for problem in herd.stop() {
            results.notes.push(format!("{name}: {problem}"));
        }
        return Err(e);
    }
    wait_links(&herd, results, name);
    let mut row = HerdRow {
        config: name.to_string(),
        ..HerdRow::default()
    };
    for node in &herd.nodes {
        row.rss_start
            .push((node.name.clone(), bench_procs::rss_bytes(node.child.id())?));
    }
    Ok(Running {
        config: name.to_string(),
        addr: herd.node(ENTRY).client,
        server: ENTRY,
        pids,
        process: Process::Herd(Box::new(HerdRun {
            herd,
            nodes,
            row,
            counters: None,
        })),
        failed: false,
    })
}

/// The bursts, in rounds like the client-path loads: each round sends one
/// burst to every herd that is up in turn, starting one herd further along
/// than the round before, so a drift of the machine's speed does not fall
/// on one herd's bursts alone. The flooding counters are read around the
/// stage (and so close the client-path stage).
fn bursts(
    rt: &Runtime,
    running: &mut [Running],
    params: &Params,
    args: &BenchArgs,
    out: &Path,
    results: &mut Results,
) {
    let herds: Vec<usize> = (0..running.len())
        .filter(|&i| !running[i].failed && matches!(running[i].process, Process::Herd(_)))
        .collect();
    if herds.is_empty() {
        return;
    }
    println!(
        "\n== bursts: {} round(s) of a {}-update burst per herd",
        params.bursts, params.burst
    );
    let mut perfs = Vec::new();
    for &i in &herds {
        let r = &mut running[i];
        let Process::Herd(run) = &mut r.process else {
            continue;
        };
        flood(
            &run.herd,
            "client path",
            &mut run.counters,
            &mut run.row,
            results,
        );
        let data = out.join(format!("perf-{}-burst.data", r.config));
        perfs.push(Perf::start(args.perf, &r.pids, &data, None));
        if args.perf {
            results.profiles.push((data, r.pids.clone()));
        }
    }
    for round in 0..params.bursts {
        for k in 0..herds.len() {
            let r = &mut running[herds[(round + k) % herds.len()]];
            let Process::Herd(run) = &mut r.process else {
                continue;
            };
            if r.failed || interrupted() {
                continue;
            }
            let pids = &r.pids;
            let cpu_now = || cpu_of(pids);
            let burst = block(
                rt,
                propagate(
                    run.nodes.clone(),
                    run.herd.node(ENTRY).client,
                    format!("{ID_TAG}-burst{round}"),
                    params.burst,
                    params.samples,
                    Duration::from_secs(60),
                    &cpu_now,
                ),
            )
            .and_then(|b| run.herd.check_alive().map(|()| b))
            .with_context(|| format!("burst {} of {}", round + 1, params.bursts));
            match burst {
                Ok(b) => {
                    report_propagation(&r.config, "burst", &b, results);
                    run.row.bursts.push(b);
                }
                Err(e) => {
                    failed(results, &r.config, &e);
                    r.failed = true;
                }
            }
        }
    }
    drop(perfs);
    for &i in &herds {
        if let Process::Herd(run) = &mut running[i].process {
            flood(&run.herd, "burst", &mut run.counters, &mut run.row, results);
        }
    }
}

/// A herd's million clients and its memory (after the loads and the
/// bursts), then its links' losses and its stop.
fn herd_tail(
    rt: &Runtime,
    run: HerdRun,
    pids: &[(String, u32)],
    params: &Params,
    results: &mut Results,
) -> Result<()> {
    let HerdRun {
        mut herd,
        nodes,
        mut row,
        counters: _,
    } = run;
    let name = row.config.clone();
    let entry = herd.node(ENTRY).client;
    let cpu_now = || cpu_of(pids);
    println!("\n== herd on {name}: memory");
    let outcome = (|| -> Result<()> {
        let limit = Duration::from_secs(60 + params.clients / 2_000);
        let stored = block(
            rt,
            propagate(
                nodes.clone(),
                entry,
                format!("{ID_TAG}-client"),
                params.clients,
                params.samples,
                limit,
                &cpu_now,
            ),
        );
        let stored = stored.context("storing clients")?;
        report_propagation(&name, "clients", &stored, results);
        row.clients = Some(stored);
        herd.check_alive()?;
        for node in &herd.nodes {
            row.rss
                .push((node.name.clone(), bench_procs::rss_bytes(node.child.id())?));
        }
        let load_ids: usize = LOADS
            .iter()
            .map(|(conns, _)| conns * loadgen::IDS_PER_CONN)
            .sum();
        row.stored = params.clients
            + params.burst * params.bursts as u64
            + load_ids as u64
            + nodes.len() as u64;
        let rss: Vec<String> = row
            .rss
            .iter()
            .map(|(n, b)| format!("{n} {:.0} MB", *b as f64 / 1e6))
            .collect();
        println!(
            "{name}: resident memory with {} clients: {}",
            params.clients,
            rss.join(", ")
        );
        Ok(())
    })();
    // Each loss is logged at both ends.
    row.links_lost = herd.count_in_logs("link lost");
    if row.links_lost > 0 {
        results.notes.push(format!(
            "{name}: {} link loss(es) logged during the run (repaired by catch-up)",
            row.links_lost
        ));
    }
    for problem in herd.stop() {
        results.notes.push(format!("{name}: {problem}"));
    }
    results.herds.push(row);
    outcome
}

/// The herd's counters summed, or `None` (and a note) if a node's could not
/// be read.
fn counters(herd: &Herd, name: &str, results: &mut Results) -> Option<bench_procs::Counters> {
    match herd.counters() {
        Ok(c) => Some(c),
        Err(e) => {
            results
                .notes
                .push(format!("{name}: flooding counters not read: {e:#}"));
            None
        }
    }
}

/// Records what flooding did since `before` as `stage`, and moves `before`
/// on.
fn flood(
    herd: &Herd,
    stage: &str,
    before: &mut Option<bench_procs::Counters>,
    row: &mut HerdRow,
    results: &mut Results,
) {
    let now = counters(herd, &row.config, results);
    if let (Some(b), Some(n)) = (*before, now) {
        row.flood.push(Flood {
            stage: stage.to_string(),
            counters: n.since(&b),
        });
    }
    *before = now;
}

/// Notes how a propagation went, and records anything lost as a failure.
fn report_propagation(config: &str, what: &str, p: &Propagation, results: &mut Results) {
    println!(
        "{config} {what}: {} updates acknowledged by {ENTRY} in {:.0} ms, visible on every node after {:.0} ms ({:.0} updates/s); {} lost of {} checks",
        p.total,
        p.acked.as_secs_f64() * 1e3,
        p.visible.as_secs_f64() * 1e3,
        p.rate(),
        p.lost(),
        p.verified.iter().map(|(_, v)| v.checked).sum::<usize>()
    );
    if p.bad > 0 {
        results.failures.push(format!(
            "{config} {what}: {} IAMATs not answered with their own AT line; first {:?}",
            p.bad, p.first_bad
        ));
    }
    for (node, v) in &p.verified {
        if !v.missing.is_empty() || !v.wrong.is_empty() {
            results.failures.push(format!(
                "{config} {what}: {node} lacks {} and holds a different line for {} of {} sampled updates (e.g. {:?})",
                v.missing.len(),
                v.wrong.len(),
                v.checked,
                v.missing.iter().chain(&v.wrong).take(5).collect::<Vec<_>>()
            ));
        }
    }
}

/// Every node answers, and a probe sent to each is visible on all.
async fn wait_ready(nodes: Vec<(String, SocketAddr)>, deadline: Instant) -> Result<()> {
    let mut probes = Vec::new();
    for (name, addr) in &nodes {
        let mut conn = Conn::connect(*addr).await?;
        let id = format!("probe-{name}").into_bytes();
        let line = conn.iamat(&id).await?;
        if !line.starts_with(format!("AT {name} ").as_bytes()) {
            bail!(
                "{name} answered a probe with {:?}",
                line.escape_ascii().to_string()
            );
        }
        probes.push((id, line));
    }
    for (name, addr) in &nodes {
        let mut conn = Conn::connect(*addr).await?;
        let ids: Vec<&[u8]> = probes.iter().map(|(id, _)| id.as_slice()).collect();
        loop {
            let lines = conn.whatsat_many(&ids).await?;
            let missing = probes
                .iter()
                .zip(&lines)
                .filter(|((_, want), got)| got.as_deref() != Some(want.as_slice()))
                .count();
            if missing == 0 {
                break;
            }
            if Instant::now() > deadline {
                bail!("{name} still lacks {missing} of the probes");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// Waits (briefly) until the logs show every link up; only a note if not.
fn wait_links(herd: &Herd, results: &mut Results, name: &str) {
    let links: usize = bench_procs::TOPOLOGY.iter().map(|(_, n)| n.len()).sum();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let up = herd.count_in_logs("link up");
        if up >= links {
            return;
        }
        if Instant::now() > deadline || interrupted() {
            results.notes.push(format!(
                "{name}: the logs showed {up} of {links} link ends up before the loads began"
            ));
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A small deterministic-enough generator for picking samples.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Sends `total` distinct updates to `entry`, waits until each connection's
/// last is visible on every other node, then checks a random sample (and
/// every connection's last update) on every node.
async fn propagate(
    nodes: Vec<(String, SocketAddr)>,
    entry: SocketAddr,
    tag: String,
    total: u64,
    samples: usize,
    limit: Duration,
    cpu_now: &(dyn Fn() -> Vec<(String, f64)> + Sync),
) -> Result<Propagation> {
    let deadline = Instant::now() + limit;
    let mut spec = UpdateSpec {
        addr: entry,
        server: ENTRY.to_string(),
        conns: BURST_CONNS,
        window: BURST_WINDOW,
        total,
        tag: tag.clone(),
        keep: Vec::new(),
        deadline,
    };
    let mut rng = SplitMix(loadgen::now_ns());
    let want = samples.min(total as usize);
    let mut keep = BTreeSet::new();
    for _ in 0..want * 100 {
        if keep.len() == want {
            break;
        }
        keep.insert(rng.next() % total);
    }
    keep.extend((0..BURST_CONNS).map(|k| spec.range(k).end - 1));
    spec.keep = keep.into_iter().collect();
    let kept_wanted = spec.keep.len();

    let (acks, _) = broadcast::channel(BURST_CONNS * 2);
    let mut watchers = JoinSet::new();
    for (name, addr) in nodes.iter().filter(|(_, a)| *a != entry) {
        let rx = acks.subscribe();
        let (name, addr, tag) = (name.clone(), *addr, tag.clone());
        watchers.spawn(async move {
            loadgen::wait_visible(addr, tag, BURST_CONNS, rx, POLL, deadline)
                .await
                .with_context(|| format!("watching {name}"))
        });
    }
    let cpu_before = cpu_now();
    let start = Instant::now();
    let sent = loadgen::send_updates(spec, acks).await;
    let acked_at = Instant::now();
    let sent = match sent {
        Ok(s) => s,
        Err(e) => {
            watchers.abort_all();
            return Err(e);
        }
    };
    let mut visible_at = acked_at;
    while let Some(joined) = watchers.join_next().await {
        let seen = joined.map_err(anyhow::Error::from).and_then(|r| r)?;
        visible_at = visible_at.max(seen);
    }
    let started = sent.started.unwrap_or(start);
    let cpu = cores(&cpu_before, &cpu_now(), start.elapsed());

    let mut checks = JoinSet::new();
    let sample = Arc::new(sent.kept);
    for (name, addr) in &nodes {
        let (name, addr, tag, sample) = (name.clone(), *addr, tag.clone(), sample.clone());
        checks.spawn(async move {
            let v = loadgen::verify(addr, &tag, &sample)
                .await
                .with_context(|| format!("checking the sample on {name}"))?;
            Ok::<_, anyhow::Error>((name, v))
        });
    }
    let mut verified = Vec::new();
    while let Some(joined) = checks.join_next().await {
        verified.push(joined.map_err(anyhow::Error::from).and_then(|r| r)?);
    }
    verified.sort_by(|a, b| a.0.cmp(&b.0));
    if sample.len() != kept_wanted {
        return Err(anyhow!(
            "only {} of the {kept_wanted} sampled replies were kept",
            sample.len()
        ));
    }
    Ok(Propagation {
        total,
        acked: acked_at.duration_since(started),
        visible: visible_at.duration_since(started),
        bad: sent.bad,
        first_bad: sent.first_bad,
        verified,
        cpu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(config: &str, rounds: &[u64]) -> LoadRow {
        let mut result: Option<LoadResult> = None;
        for &replies in rounds {
            let round = LoadResult {
                replies,
                seconds: 1.0,
                latencies_ns: vec![replies],
                ..LoadResult::default()
            };
            match &mut result {
                Some(r) => r.absorb(round),
                None => result = Some(round),
            }
        }
        LoadRow {
            config: config.into(),
            conns: 50,
            depth: 1,
            result,
            rounds: rounds.iter().map(|&r| r as f64).collect(),
            cpu: Vec::new(),
            caught_up_ms: Vec::new(),
        }
    }

    #[test]
    fn other_processes_are_the_machine_less_ours_and_the_host_is_apart() {
        let reading = |gen: f64, clark: f64, machine: f64, stolen: f64| {
            vec![
                ("Clark".to_string(), clark),
                ("load generator".to_string(), gen),
                (MACHINE.to_string(), machine),
                (STOLEN.to_string(), stolen),
            ]
        };
        let got = cores(
            &reading(1.0, 2.0, 10.0, 5.0),
            &reading(2.0, 3.5, 13.0, 5.5),
            Duration::from_secs(2),
        );
        let want = [
            ("Clark", 0.75),
            ("load generator", 0.5),
            (STOLEN, 0.25),
            (OTHER, 0.25),
        ];
        assert_eq!(got.len(), want.len());
        for ((name, c), (w, wc)) in got.iter().zip(want) {
            assert_eq!(name, w);
            assert!((c - wc).abs() < 1e-9, "{name}: {c}");
        }
    }

    #[test]
    fn rounds_add_up_and_shares_pair_each_round_with_the_ceilings() {
        let mut results = Results::default();
        results.loads.push(row(CEILING, &[100_000, 160_000]));
        results.loads.push(row("tcp", &[60_000, 120_000, 90_000]));
        assert_eq!(results.ceiling_rate(50, 1), Some(130_000.0));
        assert_eq!(results.rate("tcp", 50, 1), Some(90_000.0));
        let tcp = results.loads[1].result.as_ref().unwrap();
        assert_eq!(tcp.latencies_ns, vec![60_000, 90_000, 120_000]);
        // The third round has no ceiling reading to pair with.
        assert_eq!(results.round_shares("tcp", 50, 1), vec![0.6, 0.75]);
        assert_eq!(results.ceiling_rate(10, 32), None);
        assert!(results.round_shares("quic", 50, 1).is_empty());
        results.loads.push(row("tcp-against", &[30_000, 180_000]));
        assert_eq!(
            results.round_ratios("tcp-against", "tcp", 50, 1),
            vec![0.5, 1.5]
        );
    }

    #[test]
    fn a_mean_comes_with_its_student_t_interval() {
        assert_eq!(mean_interval(&[]), None);
        assert_eq!(mean_interval(&[0.7]), None);
        // Mean 0.7, sample standard deviation 0.1, five samples: t(4) =
        // 2.776, so the half-width is 2.776 * 0.1 / sqrt(5).
        let i = mean_interval(&[0.6, 0.65, 0.7, 0.75, 0.8]).unwrap();
        let sd = (0.025f64 / 4.0).sqrt();
        let half = 2.776 * sd / 5f64.sqrt();
        assert!((i.mean - 0.7).abs() < 1e-12, "{i:?}");
        assert!((i.high - i.mean - half).abs() < 1e-12, "{i:?}");
        assert!((i.mean - i.low - half).abs() < 1e-12, "{i:?}");
        assert!(i.holds(0.75) && !i.holds(0.8), "{i:?}");
        // Identical samples: no spread, no width.
        let i = mean_interval(&[0.5, 0.5, 0.5]).unwrap();
        assert_eq!((i.low, i.high), (0.5, 0.5));
        // Past the table, the normal distribution's 1.96.
        let many: Vec<f64> = (0..40).map(|k| f64::from(k % 2)).collect();
        let i = mean_interval(&many).unwrap();
        let half = 1.96 * (10.0f64 / 39.0 / 40.0).sqrt();
        assert!((i.high - 0.5 - half).abs() < 1e-12, "{i:?}");
    }

    fn burst(millis: u64, clark_cores: f64) -> Propagation {
        Propagation {
            total: 20_000,
            acked: Duration::from_millis(millis / 2),
            visible: Duration::from_millis(millis),
            bad: 0,
            first_bad: None,
            verified: Vec::new(),
            cpu: vec![("Clark".to_string(), clark_cores)],
        }
    }

    #[test]
    fn the_median_burst_stands_for_the_bursts_and_cpu_is_weighted_by_time() {
        let mut herd = HerdRow::default();
        assert!(herd.bursts().is_none());
        // 20,000 updates in 40, 100 and 50 ms: 500k, 200k and 400k/s.
        herd.bursts = vec![burst(40, 1.0), burst(100, 0.5), burst(50, 2.0)];
        let b = herd.bursts().unwrap();
        assert_eq!((b.count, b.median.visible), (3, Duration::from_millis(50)));
        assert_eq!((b.slowest, b.fastest), (200_000.0, 500_000.0));
        // Of an even number, the slower of the middle two.
        herd.bursts.push(burst(20, 1.0));
        let b = herd.bursts().unwrap();
        assert_eq!((b.count, b.median.visible), (4, Duration::from_millis(50)));
        let cpu = herd.burst_cpu();
        let want = (1.0 * 40.0 + 0.5 * 100.0 + 2.0 * 50.0 + 1.0 * 20.0) / 210.0;
        assert_eq!(cpu.len(), 1);
        assert!((cpu[0].1 - want).abs() < 1e-9, "{cpu:?}");
    }
}
