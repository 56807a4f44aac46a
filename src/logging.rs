//! Logs: `<log.dir>/<Node>.log` gets everything at info and above (every
//! client line in and reply out, every link made, lost and refused), with
//! timestamps; stderr gets a readable summary filtered by `RUST_LOG`
//! (default: info, without per-line client traffic).

use std::io::IsTerminal;
use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::prelude::*;

/// Default stderr filter: per-line client traffic stays in the file.
pub const STDERR_DEFAULT: &str = "info,herd::client=warn";

/// Starts logging for `node`. Keep the guard alive: dropping it flushes the
/// file.
pub fn init(dir: &Path, node: &str, json: bool) -> std::io::Result<WorkerGuard> {
    std::fs::create_dir_all(dir)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{node}.log")))?;
    // Lossless: under a burst the node waits for the log rather than drop
    // lines the operator was promised.
    // The writer thread drains every queued line and then flushes, so a
    // buffer turns a write per line into a write per batch.
    let (file, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::BufWriter::with_capacity(64 * 1024, file));
    let stderr_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(STDERR_DEFAULT));
    let file_filter = EnvFilter::new("info,quinn=warn,rustls=warn");
    let stderr = std::io::stderr.with_max_level(tracing::Level::TRACE);
    let registry = tracing_subscriber::registry();
    if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(file)
                    .with_filter(file_filter),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(stderr)
                    .with_filter(stderr_filter),
            )
            .init();
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(file)
                    .with_filter(file_filter),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(stderr)
                    .with_filter(stderr_filter),
            )
            .init();
    }
    Ok(guard)
}
