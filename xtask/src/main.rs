//! Developer and operator tasks: `cargo xtask <command>`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod bench;
mod bench_ceiling;
mod bench_procs;
mod bench_report;
mod flame;
mod loadgen;
mod soak;
mod up;

use clap::{Args, Parser, Subcommand};
use herd::certs::{self, CertError};
use herd::config::{Config, DEFAULT_PATH};

#[derive(Debug, Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "herd's developer and operator tasks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make the herd's CA and a certificate and key for every node.
    GenCerts(GenCerts),
    /// Run every node of the config on this machine until Ctrl-C.
    Up(Up),
    /// Measure the client path and propagation (ceiling, herd on tcp and quic).
    Bench(bench::BenchArgs),
    /// Mixed client load on the five-node herd while nodes are stopped and
    /// crashed at random; then every node must hold every client's newest
    /// acknowledged report.
    Soak(soak::SoakArgs),
}

#[derive(Debug, Args)]
struct Up {
    /// The herd's config [default: config/herd.toml in the workspace]
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct GenCerts {
    /// The herd's config [default: config/herd.toml in the workspace]
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Where to write the files [default: the config's `certs` directory]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Replace existing files (with a new CA and every node's certificate)
    #[arg(long)]
    force: bool,
}

/// How a task failed: bad usage or config (exit 2) or anything else (1),
/// already reduced to the lines to print.
struct Failure {
    code: u8,
    lines: Vec<String>,
}

impl Failure {
    fn usage(lines: Vec<String>) -> Failure {
        Failure { code: 2, lines }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure {
            code: 1,
            lines: vec![format!("{e:#}")],
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::GenCerts(args) => gen_certs(args),
        Command::Up(args) => run_up(args),
        Command::Bench(args) => bench::run(args).map_err(Failure::from),
        Command::Soak(args) => soak::run(args, &workspace_root())
            .map(|_| ())
            .map_err(Failure::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, lines }) => {
            for line in lines {
                eprintln!("error: {line}");
            }
            ExitCode::from(code)
        }
    }
}

/// The workspace root: xtask lives one directory below it.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn load_config(path: Option<PathBuf>) -> Result<Config, Failure> {
    let path = path.unwrap_or_else(|| workspace_root().join(DEFAULT_PATH));
    Config::load(&path).map_err(|e| Failure::usage(e.problems))
}

fn gen_certs(args: GenCerts) -> Result<(), Failure> {
    let config = load_config(args.config)?;
    let out = args.out.unwrap_or_else(|| config.certs.clone());
    let written = certs::write_herd(&config, &out, args.force).map_err(|e| match e {
        // Refusing to overwrite, or a name no certificate can carry, is the
        // operator's to fix: usage or config.
        e @ (CertError::Exists { .. } | CertError::BadName { .. } | CertError::BadCa(_)) => {
            Failure::usage(vec![e.to_string()])
        }
        e => anyhow::Error::new(e).into(),
    })?;
    let ca = out.join("ca.pem");
    if !written.contains(&ca) {
        println!("reusing the CA in {}", ca.display());
    }
    for path in &written {
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn run_up(args: Up) -> Result<(), Failure> {
    let path = args
        .config
        .unwrap_or_else(|| workspace_root().join(DEFAULT_PATH));
    let config = load_config(Some(path.clone()))?;
    up::up(&workspace_root(), &path, &config)?;
    Ok(())
}
