//! The soak in its short configuration (`cargo xtask soak --quick`), over
//! tcp and over quic: real `herd` processes under mixed client load while
//! nodes are stopped with SIGTERM and killed with SIGKILL, then every node
//! must hold every client's newest acknowledged report.
//!
//! The soak engine is xtask's own `soak.rs`, compiled into this test as a
//! module, so CI runs exactly the code `cargo xtask soak` runs without
//! building xtask or a release binary inside a test: the nodes are the
//! debug `herd` that cargo built for this test (`--bin`).
//!
//! `SOAK_SEED=N` replays a seed (the fault schedule and the load's choices;
//! timing still varies).

#[allow(dead_code)]
#[path = "../xtask/src/soak.rs"]
mod soak;

use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use clap::Parser;

/// One soak at a time: two herds under load on a small CI machine would
/// measure the machine, not the herd.
static SERIAL: Mutex<()> = Mutex::new(());

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: soak::SoakArgs,
}

fn quick(transport: &str, default_seed: u64) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let seed = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(default_seed)
        .to_string();
    let cli = Cli::parse_from([
        "soak",
        "--quick",
        "--transport",
        transport,
        "--seed",
        &seed,
        "--bin",
        env!("CARGO_BIN_EXE_herd"),
    ]);
    let started = Instant::now();
    let summary = soak::run_with(cli.args, Path::new(env!("CARGO_MANIFEST_DIR")), false)
        .unwrap_or_else(|e| panic!("{e:#}"));
    println!("soak over {transport} took {:.1?}", started.elapsed());
    assert_eq!(summary.mismatches, 0);
    assert_eq!(summary.disagreements, 0);
    assert_eq!(summary.problems, 0);
    assert!(
        summary.terms >= 1 && summary.kills >= 1,
        "both kinds of fault: {summary:?}"
    );
    assert_eq!(summary.compared, 300, "{summary:?}");
    assert!(summary.acks > 1000, "the load ran: {summary:?}");
    assert!(summary.whatsats > 100, "the load ran: {summary:?}");
}

#[test]
fn soak_quick_over_tcp() {
    quick("tcp", 131);
}

#[test]
fn soak_quick_over_quic() {
    quick("quic", 5);
}
