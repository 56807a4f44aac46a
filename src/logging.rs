//! Logs: `<log.dir>/<Node>.log` gets everything at info and above (every
//! client line in and reply out, every link made, lost and refused), with
//! timestamps; stderr gets a readable summary filtered by `RUST_LOG`
//! (default: info, without per-line client traffic).
//!
//! The file is written by one thread of ours from one shared buffer:
//! producers append whole lines under a mutex and wake the writer only when
//! it sleeps, so under load a write (and a wakeup) serves many lines.
//! Tracing events reach it through the fmt layer; client traffic, the bulk
//! of the log, takes a shorter path ([`Traffic`]) that formats the line
//! straight into that buffer, in the same format the fmt layer would use.
//! The file's pages leave the page cache once written out ([`behind`]).

mod behind;

use std::cell::{Cell, RefCell};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::subscriber::Interest;
use tracing::{Level, Metadata};
use tracing_subscriber::filter::{EnvFilter, FilterExt, LevelFilter};
use tracing_subscriber::fmt::writer::{MakeWriter, MakeWriterExt};
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::Registry;

/// Default stderr filter: per-line client traffic stays in the file.
pub const STDERR_DEFAULT: &str = "info,herd::client=warn";

/// What goes to the file (client traffic comes through [`Traffic`]).
const FILE_FILTER: &str = "info,quinn=warn,rustls=warn";

/// Bytes waiting for the writer beyond which producers wait for it: the log
/// is lossless, so a disk slower than the node slows the node down rather
/// than grow its memory without bound.
const BUFFER_CAP: usize = 8 << 20;

/// The node's log file, once [`init`] has run.
static FILE: OnceLock<FileLog> = OnceLock::new();

struct FileLog {
    sink: Sink,
    json: bool,
}

/// Starts logging for `node`. Keep the guard alive: dropping it writes out
/// everything logged so far and stops the writer thread.
pub fn init(dir: &Path, node: &str, json: bool) -> std::io::Result<Guard> {
    std::fs::create_dir_all(dir)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{node}.log")))?;
    let file = behind::Behind::new(file, behind::STEP);
    let (sink, guard) = Sink::start(Box::new(file), BUFFER_CAP)?;
    if FILE
        .set(FileLog {
            sink: sink.clone(),
            json,
        })
        .is_err()
    {
        return Err(std::io::Error::other("logging is already started"));
    }
    let stderr_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(STDERR_DEFAULT));
    let stderr = std::io::stderr.with_max_level(tracing::Level::TRACE);
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::registry()
        .with(layers(json, sink, (stderr, ansi, stderr_filter)))
        .init();
    Ok(guard)
}

/// The file's layer (writing to `sink`) and stderr's (`writer`, with ANSI
/// colours or not, filtered).
fn layers<W>(
    json: bool,
    sink: Sink,
    (stderr, ansi, stderr_filter): (W, bool, EnvFilter),
) -> Vec<Box<dyn Layer<Registry> + Send + Sync>>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    // Client traffic reaches the file through `Traffic`; its tracing events
    // are only a mirror for stderr.
    let file_filter = EnvFilter::new(FILE_FILTER).and(NotTrafficMirror);
    let file = SinkWriter(sink);
    if json {
        vec![
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(file)
                .with_filter(file_filter)
                .boxed(),
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(stderr)
                .with_filter(stderr_filter)
                .boxed(),
        ]
    } else {
        vec![
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(file)
                .with_filter(file_filter)
                .boxed(),
            tracing_subscriber::fmt::layer()
                .with_ansi(ansi)
                .with_writer(stderr)
                .with_filter(stderr_filter)
                .boxed(),
        ]
    }
}

/// Keeps the file log's writer thread; dropping it writes out everything
/// logged so far and joins the thread. Lines logged afterwards are written
/// at once by whoever logs them.
#[must_use = "dropping the guard stops the file log"]
pub struct Guard {
    sink: Sink,
    thread: Option<JoinHandle<Box<dyn Write + Send>>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let shared = &*self.sink.0;
        shared.lock().closed = true;
        shared.ready.notify_one();
        let out = match self.thread.take().map(JoinHandle::join) {
            Some(Ok(out)) => out,
            // The writer died: from now on lines go nowhere rather than
            // pile up.
            _ => Box::new(std::io::sink()),
        };
        let mut state = shared.lock();
        let State { buf, late, .. } = &mut *state;
        let out = late.insert(out);
        if !buf.is_empty() {
            let _ = out.write_all(buf).and_then(|()| out.flush());
            buf.clear();
        }
        drop(state);
        shared.space.notify_all();
    }
}

/// The file log's buffer, shared by every producer and the writer thread.
#[derive(Clone)]
struct Sink(Arc<Shared>);

struct Shared {
    state: Mutex<State>,
    /// The writer waits here for lines (or the end).
    ready: Condvar,
    /// Producers wait here while the buffer is over `cap`.
    space: Condvar,
    cap: usize,
}

struct State {
    /// Whole lines not yet taken by the writer.
    buf: Vec<u8>,
    /// The writer sleeps on `ready` and must be woken for new lines.
    writer_waiting: bool,
    /// The guard is gone: the writer drains the buffer and stops.
    closed: bool,
    /// After the writer stopped: the output, written to directly.
    late: Option<Box<dyn Write + Send>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing done under the lock leaves the state half-changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Sink {
    /// Starts a writer thread writing to `out`; producers wait while more
    /// than `cap` bytes wait for it.
    fn start(out: Box<dyn Write + Send>, cap: usize) -> std::io::Result<(Sink, Guard)> {
        let sink = Sink(Arc::new(Shared {
            state: Mutex::new(State {
                buf: Vec::with_capacity(64 * 1024),
                writer_waiting: false,
                closed: false,
                late: None,
            }),
            ready: Condvar::new(),
            space: Condvar::new(),
            cap,
        }));
        let shared = sink.0.clone();
        let thread = std::thread::Builder::new()
            .name("herd-log".into())
            .spawn(move || write_out(&shared, out))?;
        let guard = Guard {
            sink: sink.clone(),
            thread: Some(thread),
        };
        Ok((sink, guard))
    }

    /// Appends whole lines.
    fn append(&self, lines: &[u8]) {
        self.append_with(|buf| buf.extend_from_slice(lines));
    }

    /// Appends whole lines written by `f` straight into the buffer (under
    /// its lock: `f` must be quick).
    fn append_with(&self, f: impl FnOnce(&mut Vec<u8>)) {
        let shared = &*self.0;
        let mut state = shared.lock();
        while state.buf.len() >= shared.cap && state.late.is_none() {
            state = shared
                .space
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let State {
            buf,
            late,
            writer_waiting,
            ..
        } = &mut *state;
        f(buf);
        if let Some(out) = late {
            let _ = out.write_all(buf).and_then(|()| out.flush());
            buf.clear();
            return;
        }
        // Only a sleeping writer needs a wakeup: under load it finds the
        // new lines when it comes back for more.
        let wake = std::mem::take(writer_waiting);
        drop(state);
        if wake {
            shared.ready.notify_one();
        }
    }
}

/// The writer thread: takes the whole buffer, writes it with one call, and
/// again, until the guard is dropped and nothing is left. Returns `out` for
/// the lines that come after.
fn write_out(shared: &Shared, mut out: Box<dyn Write + Send>) -> Box<dyn Write + Send> {
    let mut batch = Vec::with_capacity(64 * 1024);
    let mut failed = false;
    loop {
        let mut state = shared.lock();
        while state.buf.is_empty() && !state.closed {
            state.writer_waiting = true;
            state = shared
                .ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.writer_waiting = false;
        if state.buf.is_empty() {
            return out;
        }
        std::mem::swap(&mut state.buf, &mut batch);
        drop(state);
        // Producers wait only while the buffer is over the cap.
        if batch.len() >= shared.cap {
            shared.space.notify_all();
        }
        if let Err(e) = out.write_all(&batch).and_then(|()| out.flush()) {
            if !failed {
                failed = true;
                eprintln!("herd: cannot write the log file ({e}); lines are being lost");
            }
        }
        batch.clear();
        if batch.capacity() > shared.cap {
            batch.shrink_to(64 * 1024);
        }
        // Let lines gather before the next write: under load this makes one
        // write (and no wakeup at all) per interval instead of a wakeup and
        // a write every few lines. Lines wait at most this long.
        std::thread::sleep(GATHER);
    }
}

/// How long the writer lets lines gather after each write.
const GATHER: std::time::Duration = std::time::Duration::from_millis(2);

/// The fmt layer's writer for the file: one event, buffered whole and
/// appended at once, so events never interleave mid-line.
struct SinkWriter(Sink);

impl<'a> MakeWriter<'a> for SinkWriter {
    type Writer = EventWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter {
            sink: &self.0,
            buf: Vec::new(),
        }
    }
}

struct EventWriter<'a> {
    sink: &'a Sink,
    buf: Vec<u8>,
}

impl Write for EventWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter<'_> {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.sink.append(&self.buf);
        }
    }
}

/// The file layer's filter leaves out the traffic events [`Traffic`] emits
/// for stderr: the file has those lines already.
struct NotTrafficMirror;

fn is_traffic_mirror(meta: &Metadata<'_>) -> bool {
    meta.target() == TRAFFIC_TARGET && meta.module_path() == Some(module_path!())
}

impl<S> Filter<S> for NotTrafficMirror {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        !is_traffic_mirror(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if is_traffic_mirror(meta) {
            Interest::never()
        } else {
            Interest::always()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        // No limit of its own (no hint would make `and` give none either).
        Some(LevelFilter::TRACE)
    }
}

const TRAFFIC_TARGET: &str = "herd::client";

/// Which way a client line went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// A line from the client.
    In,
    /// A reply to it.
    Out,
}

/// Logs one client connection's lines in and replies out: the file gets
/// exactly what the fmt layer would write for
/// `info!(target: "herd::client", line = %bytes.escape_ascii(), "in")` (or
/// `reply = ..., "out"`) inside the `node{name}` and `client{addr}` spans,
/// without going through tracing. Stderr still gets those events when
/// `RUST_LOG` asks for them.
pub struct Traffic {
    file: Option<TrafficFile>,
    /// The connection's span: entered for the stderr copy of a line, and
    /// only when some layer wants it.
    span: tracing::Span,
}

struct TrafficFile {
    log: &'static FileLog,
    format: LineFormat,
}

/// The parts of a traffic line that do not change within a connection: a
/// line is `lead`, timestamp, `head`, the direction's part, the escaped
/// bytes and `tail`.
struct LineFormat {
    json: bool,
    head: Box<[u8]>,
    tail: Box<[u8]>,
}

impl LineFormat {
    fn new(json: bool, node: &str, addr: SocketAddr) -> LineFormat {
        let (head, tail) = if json {
            let json_string = |s: &str| serde_json::to_string(s).unwrap_or_default();
            let node = json_string(node);
            let addr = json_string(&addr.to_string());
            (
                r#"","level":"INFO","fields":{"message":""#.to_string(),
                format!(
                    r#""}},"target":"{TRAFFIC_TARGET}","span":{{"addr":{addr},"name":"client"}},"spans":[{{"name":{node},"name":"node"}},{{"addr":{addr},"name":"client"}}]}}"#
                ) + "\n",
            )
        } else {
            (
                format!("  INFO node{{name={node}}}:client{{addr={addr}}}: {TRAFFIC_TARGET}: "),
                "\n".to_string(),
            )
        };
        LineFormat {
            json,
            head: head.into_bytes().into(),
            tail: tail.into_bytes().into(),
        }
    }

    /// Appends the line for `bytes` going `dir` at `stamp` to `sink`.
    fn append(&self, sink: &Sink, stamp: &Stamp, dir: Direction, bytes: &[u8]) {
        if bytes.len() <= DIRECT_MAX {
            sink.append_with(|buf| self.write(buf, stamp, dir, bytes));
            return;
        }
        // Escaping a long reply (a WHATSAT's JSON) would hold the lock too
        // long: done beforehand, then copied.
        SCRATCH.with(|scratch| {
            let mut fresh = Vec::new();
            let mut borrowed = scratch.try_borrow_mut();
            let line = match &mut borrowed {
                Ok(scratch) => &mut **scratch,
                Err(_) => &mut fresh,
            };
            line.clear();
            self.write(line, stamp, dir, bytes);
            sink.append(line);
            if line.capacity() > SCRATCH_KEEP {
                *line = Vec::new();
            }
        });
    }

    /// Writes the line for `bytes` going `dir` at `stamp` to `out`.
    fn write(&self, out: &mut Vec<u8>, stamp: &Stamp, dir: Direction, bytes: &[u8]) {
        let (lead, middle): (&[u8], &[u8]) = match (self.json, dir) {
            (false, Direction::In) => (b"", b"in line="),
            (false, Direction::Out) => (b"", b"out reply="),
            (true, Direction::In) => (br#"{"timestamp":""#, br#"in","line":""#),
            (true, Direction::Out) => (br#"{"timestamp":""#, br#"out","reply":""#),
        };
        let stamp = stamp.as_bytes();
        out.reserve(
            lead.len()
                + stamp.len()
                + self.head.len()
                + middle.len()
                + bytes.len()
                + self.tail.len(),
        );
        out.extend_from_slice(lead);
        out.extend_from_slice(stamp);
        out.extend_from_slice(&self.head);
        out.extend_from_slice(middle);
        push_escaped(out, bytes, self.json);
        out.extend_from_slice(&self.tail);
    }
}

impl Traffic {
    /// For the client at `addr` of `node`; logs nothing to the file unless
    /// [`init`] has run.
    pub fn new(node: &str, addr: SocketAddr, span: tracing::Span) -> Traffic {
        Traffic {
            file: FILE.get().map(|log| TrafficFile {
                log,
                format: LineFormat::new(log.json, node, addr),
            }),
            span,
        }
    }

    /// The connection's span, for its other events.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Logs `bytes` (a line as received, without its LF, or a reply as
    /// sent), now.
    pub fn log(&self, dir: Direction, bytes: &[u8]) {
        self.log_at(dir, bytes, SystemTime::now());
    }

    /// Logs `bytes` as [`Traffic::log`] does, stamped `at` (when it was
    /// read, for a line: the clock is read once for the line's log entry
    /// and its AT reply).
    pub fn log_at(&self, dir: Direction, bytes: &[u8], at: SystemTime) {
        if let Some(file) = &self.file {
            file.format
                .append(&file.log.sink, &Stamp::at(at), dir, bytes);
        }
        // For stderr only (the file filter leaves these out); by default
        // disabled for every layer, which costs a check of the callsite.
        // The connection's span is entered only when a line will be
        // written: entering it for every line cost more than the line. (A
        // filter on spans, `[client]=info`, answers yes here and decides
        // inside the span.)
        if !tracing::enabled!(target: TRAFFIC_TARGET, Level::INFO) {
            return;
        }
        self.span.in_scope(|| match dir {
            Direction::In => {
                tracing::info!(target: TRAFFIC_TARGET, line = %bytes.escape_ascii(), "in")
            }
            Direction::Out => {
                tracing::info!(target: TRAFFIC_TARGET, reply = %bytes.escape_ascii(), "out")
            }
        });
    }
}

/// Lines up to this long are formatted straight into the shared buffer.
const DIRECT_MAX: usize = 256;

/// Room kept per thread for formatting longer lines.
const SCRATCH_KEEP: usize = 256 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Whether `escape_ascii` leaves `b` as it is (and JSON too).
fn is_plain(b: u8) -> bool {
    // `&`, not `&&`: no branches, so a chunk's bytes are checked together.
    (b.wrapping_sub(b' ') < 0x7f - b' ') & (b != b'\\') & (b != b'\'') & (b != b'"')
}

/// How many bytes `bytes` starts with that [`is_plain`]. Whole chunks are
/// checked without a branch per byte, so the compiler checks each chunk's
/// bytes together: most lines are plain up to their end.
fn plain_prefix(bytes: &[u8]) -> usize {
    const CHUNK: usize = 16;
    let mut n = 0;
    for chunk in bytes.chunks_exact(CHUNK) {
        if chunk
            .iter()
            .fold(0u8, |bad, &b| bad | u8::from(!is_plain(b)))
            != 0
        {
            break;
        }
        n += CHUNK;
    }
    n + bytes[n..]
        .iter()
        .position(|&b| !is_plain(b))
        .unwrap_or(bytes.len() - n)
}

/// Appends `bytes` as `<[u8]>::escape_ascii` displays them, and for `json`
/// escaped again for the inside of a JSON string.
fn push_escaped(out: &mut Vec<u8>, bytes: &[u8], json: bool) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let backslash: &[u8] = if json { b"\\\\" } else { b"\\" };
    let mut rest = bytes;
    loop {
        let plain = plain_prefix(rest);
        out.extend_from_slice(&rest[..plain]);
        let Some(&b) = rest.get(plain) else {
            return;
        };
        rest = &rest[plain + 1..];
        out.extend_from_slice(backslash);
        match b {
            b'\t' => out.push(b't'),
            b'\r' => out.push(b'r'),
            b'\n' => out.push(b'n'),
            b'\\' => out.extend_from_slice(backslash),
            b'\'' => out.push(b'\''),
            b'"' if json => out.extend_from_slice(b"\\\""),
            b'"' => out.push(b'"'),
            _ => out.extend_from_slice(&[b'x', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]),
        }
    }
}

/// An RFC 3339 UTC timestamp with microseconds, as tracing's default timer
/// writes it: `2026-11-22T06:38:04.123456Z`.
struct Stamp {
    bytes: [u8; 32],
    len: usize,
}

/// A second's `YYYY-MM-DDTHH:MM:SS`, kept per thread: most lines share it.
#[derive(Clone, Copy)]
struct Second {
    secs: i64,
    bytes: [u8; 24],
    len: usize,
}

thread_local! {
    static SECOND: Cell<Option<Second>> = const { Cell::new(None) };
}

impl Stamp {
    fn at(time: SystemTime) -> Stamp {
        let (secs, nanos) = match time.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
            Err(e) => {
                let d = e.duration();
                let secs = -(d.as_secs() as i64);
                match d.subsec_nanos() {
                    0 => (secs, 0),
                    n => (secs - 1, 1_000_000_000 - n),
                }
            }
        };
        let second = SECOND.with(|cache| match cache.get() {
            Some(second) if second.secs == secs => second,
            _ => {
                let second = Second::new(secs);
                cache.set(Some(second));
                second
            }
        });
        let mut stamp = Stamp {
            bytes: [0; 32],
            len: second.len + 8,
        };
        stamp.bytes[..second.len].copy_from_slice(&second.bytes[..second.len]);
        let frac = &mut stamp.bytes[second.len..second.len + 8];
        frac[0] = b'.';
        let mut micros = nanos / 1_000;
        for digit in frac[1..7].iter_mut().rev() {
            *digit = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        frac[7] = b'Z';
        stamp
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Second {
    fn new(secs: i64) -> Second {
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        let of_day = secs.rem_euclid(86_400);
        let mut second = Second {
            secs,
            bytes: [0; 24],
            len: 0,
        };
        let mut out = &mut second.bytes[..];
        // Years as tracing writes them: four digits, a sign beyond.
        let _ = if year > 9999 {
            write!(out, "+{year}")
        } else if year < 0 {
            write!(out, "{year:05}")
        } else {
            write!(out, "{year:04}")
        };
        let _ = write!(
            out,
            "-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            of_day / 3600,
            of_day / 60 % 60,
            of_day % 60
        );
        second.len = 24 - out.len();
        second
    }
}

/// The proleptic Gregorian (year, month, day) of a day counted from
/// 1970-01-01 (day 0).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Counted from 0000-03-01, in 400-year eras of 146 097 days, so that
    // the leap day ends each year.
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March: 31, 30, 31, 30, 31, 31, 30, 31, 30, 31, 31, 28/29.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn stamp(secs: u64, nanos: u32) -> String {
        let time = UNIX_EPOCH + Duration::new(secs, nanos);
        String::from_utf8(Stamp::at(time).as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        assert_eq!(stamp(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(stamp(0, 999), "1970-01-01T00:00:00.000000Z");
        assert_eq!(stamp(0, 1_000), "1970-01-01T00:00:00.000001Z");
        assert_eq!(stamp(86_399, 999_999_999), "1970-01-01T23:59:59.999999Z");
        assert_eq!(stamp(951_782_400, 0), "2000-02-29T00:00:00.000000Z");
        assert_eq!(stamp(951_868_800, 0), "2000-03-01T00:00:00.000000Z");
        assert_eq!(stamp(1_709_164_800, 0), "2024-02-29T00:00:00.000000Z");
        assert_eq!(stamp(1_709_251_199, 500_000), "2024-02-29T23:59:59.000500Z");
        assert_eq!(stamp(1_709_251_200, 0), "2024-03-01T00:00:00.000000Z");
        assert_eq!(stamp(1_735_689_599, 0), "2024-12-31T23:59:59.000000Z");
        assert_eq!(stamp(1_735_689_600, 0), "2025-01-01T00:00:00.000000Z");
        assert_eq!(
            stamp(1_795_329_484, 123_456_789),
            "2026-11-22T06:38:04.123456Z"
        );
        assert_eq!(stamp(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
        assert_eq!(stamp(253_402_300_799, 0), "9999-12-31T23:59:59.000000Z");
        assert_eq!(stamp(253_402_300_800, 0), "+10000-01-01T00:00:00.000000Z");
        // Before 1970: seconds round down, the fraction counts up.
        let before = |d: Duration| String::from_utf8(Stamp::at(UNIX_EPOCH - d).as_bytes().to_vec());
        assert_eq!(
            before(Duration::new(0, 1_000)).unwrap(),
            "1969-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            before(Duration::from_secs(62_167_219_200)).unwrap(),
            "0000-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            before(Duration::from_secs(62_167_219_201)).unwrap(),
            "-0001-12-31T23:59:59.000000Z"
        );
    }

    #[test]
    fn the_cached_second_changes_with_the_second() {
        assert_eq!(stamp(1_709_251_199, 0), "2024-02-29T23:59:59.000000Z");
        assert_eq!(stamp(1_709_251_199, 1_000), "2024-02-29T23:59:59.000001Z");
        assert_eq!(stamp(1_709_251_200, 0), "2024-03-01T00:00:00.000000Z");
        assert_eq!(stamp(1_709_251_199, 2_000), "2024-02-29T23:59:59.000002Z");
    }

    #[test]
    fn civil_dates_agree_with_counting_days() {
        let mut date = (1970_i64, 1_u32, 1_u32);
        for days in 0..200_000 {
            assert_eq!(civil_from_days(days), date, "day {days}");
            let (y, m, d) = date;
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let month_days = match m {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            date = if d < month_days {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(-719_468), (0, 3, 1));
    }

    fn escaped(bytes: &[u8], json: bool) -> String {
        let mut out = Vec::new();
        push_escaped(&mut out, bytes, json);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escaping_is_escape_ascii() {
        let all: Vec<u8> = (0..=255).collect();
        for b in 0..=255_u8 {
            assert_eq!(escaped(&[b], false), [b].escape_ascii().to_string(), "{b}");
            let json = serde_json::to_string(&[b].escape_ascii().to_string()).unwrap();
            assert_eq!(escaped(&[b], true), json[1..json.len() - 1], "{b}");
        }
        assert_eq!(escaped(&all, false), all.escape_ascii().to_string());
        // Each byte at each place of a line over two chunks long: the scan
        // by chunks stops where a scan byte by byte would.
        let plain = b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1";
        for at in 0..plain.len() {
            for b in 0..=255_u8 {
                let mut line = plain.to_vec();
                line[at] = b;
                let want = line.escape_ascii().to_string();
                assert_eq!(escaped(&line, false), want, "{b} at {at}");
            }
        }
        let odd = b"a\x00b\"c\\d\te'f\r\n\xc3\xa9\x7f\xff end";
        assert_eq!(
            escaped(odd, false),
            r#"a\x00b\"c\\d\te\'f\r\n\xc3\xa9\x7f\xff end"#
        );
        assert_eq!(
            escaped(odd, true),
            r#"a\\x00b\\\"c\\\\d\\te\\'f\\r\\n\\xc3\\xa9\\x7f\\xff end"#
        );
        assert_eq!(escaped(b"", false), "");
        assert_eq!(escaped(b"IAMAT kiwi +1+1 1", true), "IAMAT kiwi +1+1 1");
    }

    fn line(json: bool, node: &str, addr: &str, dir: Direction, bytes: &[u8], at: u64) -> String {
        let format = LineFormat::new(json, node, addr.parse().unwrap());
        let mut out = b"before\n".to_vec();
        let stamp = Stamp::at(UNIX_EPOCH + Duration::from_micros(at));
        format.write(&mut out, &stamp, dir, bytes);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_lines() {
        assert_eq!(
            line(false, "Clark", "127.0.0.1:5555", Direction::In, b"IAMAT kiwi +1+1 1", 1_795_329_484_123_456),
            "before\n2026-11-22T06:38:04.123456Z  INFO node{name=Clark}:client{addr=127.0.0.1:5555}: \
             herd::client: in line=IAMAT kiwi +1+1 1\n"
        );
        assert_eq!(
            line(
                false,
                "Clark",
                "[::1]:80",
                Direction::Out,
                b"? x\t\"\\\x00\xc3\xa9\n",
                0
            ),
            "before\n1970-01-01T00:00:00.000000Z  INFO node{name=Clark}:client{addr=[::1]:80}: \
             herd::client: out reply=? x\\t\\\"\\\\\\x00\\xc3\\xa9\\n\n"
        );
    }

    #[test]
    fn json_lines() {
        let text = line(
            true,
            "Cl\"ark",
            "127.0.0.1:5555",
            Direction::Out,
            b"AT \"x\"\\\t\x00\xff\n",
            1_709_164_800_000_001,
        );
        let (before, json) = text.split_once('\n').unwrap();
        assert_eq!(before, "before");
        assert_eq!(
            json,
            r#"{"timestamp":"2024-02-29T00:00:00.000001Z","level":"INFO","fields":{"message":"out","reply":"AT \\\"x\\\"\\\\\\t\\x00\\xff\\n"},"target":"herd::client","span":{"addr":"127.0.0.1:5555","name":"client"},"spans":[{"name":"Cl\"ark","name":"node"},{"addr":"127.0.0.1:5555","name":"client"}]}"#
                .to_string()
                + "\n"
        );
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(value["fields"]["reply"], r#"AT \"x\"\\\t\x00\xff\n"#);
        let text = line(true, "Clark", "127.0.0.1:5555", Direction::In, b"", 0);
        let value: serde_json::Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
        assert_eq!(value["fields"]["message"], "in");
        assert_eq!(value["fields"]["line"], "");
    }

    /// A fixed time for tracing's fmt layer, written as `Stamp` writes it.
    struct FixedTime(u64);

    impl tracing_subscriber::fmt::time::FormatTime for FixedTime {
        fn format_time(
            &self,
            w: &mut tracing_subscriber::fmt::format::Writer<'_>,
        ) -> std::fmt::Result {
            let stamp = Stamp::at(UNIX_EPOCH + Duration::from_micros(self.0));
            w.write_str(std::str::from_utf8(stamp.as_bytes()).unwrap())
        }
    }

    /// Collects what a fmt layer writes.
    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Vec<u8>>>);

    impl Write for Collect {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What the fmt layer writes for the events client.rs used to emit.
    fn by_tracing(
        json: bool,
        node: &str,
        addr: SocketAddr,
        dir: Direction,
        bytes: &[u8],
        at: u64,
    ) -> String {
        let out = Collect::default();
        let writer = out.clone();
        let make = move || writer.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_timer(FixedTime(at))
            .with_writer(make);
        let emit = || {
            let node_span = tracing::info_span!("node", name = %node);
            let _node = node_span.enter();
            let client_span = tracing::info_span!("client", %addr);
            let _client = client_span.enter();
            match dir {
                Direction::In => {
                    tracing::info!(target: "herd::client", line = %bytes.escape_ascii(), "in")
                }
                Direction::Out => {
                    tracing::info!(target: "herd::client", reply = %bytes.escape_ascii(), "out")
                }
            }
        };
        if json {
            let subscriber = tracing_subscriber::registry().with(layer.json());
            tracing::subscriber::with_default(subscriber, emit);
        } else {
            let subscriber = tracing_subscriber::registry().with(layer);
            tracing::subscriber::with_default(subscriber, emit);
        }
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn lines_are_what_the_fmt_layer_writes() {
        let all: Vec<u8> = (0..=255).collect();
        let cases: [&[u8]; 6] = [
            b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1795329484.123456789",
            b"",
            b"bogus\t\"q\" \\ 'a' \x00\x01\x7f \xc3\xa9 \xff end\r",
            b"AT Clark +0.000549056 kiwi +1+1 1\n{\n  \"results\": []\n}\n\n",
            b"x{y}=z",
            &all,
        ];
        for json in [false, true] {
            for (node, addr) in [("Clark", "127.0.0.1:51518"), ("Ho \"1\"", "[::1]:4000")] {
                let addr: SocketAddr = addr.parse().unwrap();
                for dir in [Direction::In, Direction::Out] {
                    for (i, bytes) in cases.iter().enumerate() {
                        let at = 1_795_329_484_123_456 + i as u64 * 86_400_000_001;
                        let ours = LineFormat::new(json, node, addr);
                        let mut out = Vec::new();
                        let stamp = Stamp::at(UNIX_EPOCH + Duration::from_micros(at));
                        ours.write(&mut out, &stamp, dir, bytes);
                        assert_eq!(
                            String::from_utf8(out).unwrap(),
                            by_tracing(json, node, addr, dir, bytes, at),
                            "json {json}, {dir:?}, case {i}"
                        );
                    }
                }
            }
        }
    }

    /// An output that can be held up, and that keeps what it is given.
    #[derive(Clone, Default)]
    struct Gate {
        written: Arc<Mutex<Vec<u8>>>,
        open: Arc<(Mutex<bool>, Condvar)>,
        writes: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Gate {
        fn opened() -> Gate {
            let gate = Gate::default();
            gate.set(true);
            gate
        }

        fn set(&self, open: bool) {
            *self.open.0.lock().unwrap() = open;
            self.open.1.notify_all();
        }

        fn text(&self) -> String {
            String::from_utf8(self.written.lock().unwrap().clone()).unwrap()
        }
    }

    impl Write for Gate {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let (open, cv) = &*self.open;
            let _open = cv.wait_while(open.lock().unwrap(), |open| !*open).unwrap();
            let writes = self
                .writes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // A short write now and then: write_all must go on.
            let n = if writes % 3 == 0 {
                bytes.len().div_ceil(2)
            } else {
                bytes.len()
            };
            self.written.lock().unwrap().extend_from_slice(&bytes[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Checks that `text` holds exactly lines `t<thread> <n> <padding>` for
    /// every thread and n, whole, each thread's in order.
    fn check_lines(text: &str, threads: usize, per_thread: usize) {
        let mut next = vec![0; threads];
        for line in text.lines() {
            let mut words = line.split(' ');
            let t: usize = words.next().unwrap()[1..].parse().unwrap();
            let n: usize = words.next().unwrap().parse().unwrap();
            assert_eq!(words.next(), Some(&*"x".repeat(n % 97)), "{line:?}");
            assert_eq!(words.next(), None, "{line:?}");
            assert_eq!(n, next[t], "thread {t} out of order");
            next[t] += 1;
        }
        assert!(text.ends_with('\n'));
        assert_eq!(next, vec![per_thread; threads]);
    }

    fn produce(sink: &Sink, threads: usize, per_thread: usize) {
        std::thread::scope(|s| {
            for t in 0..threads {
                s.spawn(move || {
                    for n in 0..per_thread {
                        let line = format!("t{t} {n} {}\n", "x".repeat(n % 97));
                        if n % 2 == 0 {
                            sink.append(line.as_bytes());
                        } else {
                            // Through the fmt layer's writer, in pieces.
                            let make = SinkWriter(sink.clone());
                            let mut w = make.make_writer();
                            for piece in line.as_bytes().chunks(7) {
                                w.write_all(piece).unwrap();
                            }
                        }
                    }
                });
            }
        });
    }

    #[test]
    fn the_sink_keeps_every_line_whole() {
        let gate = Gate::opened();
        let (sink, guard) = Sink::start(Box::new(gate.clone()), 1 << 20).unwrap();
        produce(&sink, 8, 5_000);
        drop(guard);
        check_lines(&gate.text(), 8, 5_000);
        // Lines after the guard are written at once.
        sink.append(b"late\n");
        assert!(gate.text().ends_with("\nlate\n"));
    }

    #[test]
    fn a_held_up_writer_loses_nothing() {
        let gate = Gate::default();
        // A small cap: producers soon wait for the writer.
        let (sink, guard) = Sink::start(Box::new(gate.clone()), 4096).unwrap();
        let released = std::thread::spawn({
            let gate = gate.clone();
            let sink = sink.clone();
            move || {
                // Until the producers have filled the buffer to its cap
                // (nothing signals that, so look, with a deadline).
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                while sink.0.lock().buf.len() < 4096 && std::time::Instant::now() < deadline {
                    std::thread::yield_now();
                }
                // Then a window in which producers that did not wait would
                // run the buffer far past it (not a wait for an event: the
                // property checked is that nothing happens).
                std::thread::sleep(Duration::from_millis(50));
                let seen = (gate.text().is_empty(), sink.0.lock().buf.len());
                // Opened whatever was seen, so a failure fails, not hangs.
                gate.set(true);
                seen
            }
        });
        produce(&sink, 4, 2_000);
        let (nothing_written, held) = released.join().unwrap();
        assert!(nothing_written);
        // Producers wait rather than grow the buffer (the check and the
        // append share the lock, so a line at most goes over the cap).
        assert!((4096..4096 + 200).contains(&held), "{held} bytes held");
        drop(guard);
        check_lines(&gate.text(), 4, 2_000);
    }

    #[test]
    fn traffic_lines_reach_the_sink_whole() {
        let long: Vec<u8> = (0..=255).cycle().take(5_000).collect();
        for json in [false, true] {
            let gate = Gate::opened();
            let (sink, guard) = Sink::start(Box::new(gate.clone()), 1 << 20).unwrap();
            let addr: SocketAddr = "127.0.0.1:5555".parse().unwrap();
            let format = LineFormat::new(json, "Clark", addr);
            std::thread::scope(|s| {
                for _ in 0..4 {
                    s.spawn(|| {
                        for n in 0..500 {
                            let bytes: &[u8] = if n % 5 == 0 { &long } else { b"IAMAT k +1+1 1" };
                            format.append(
                                &sink,
                                &Stamp::at(SystemTime::now()),
                                Direction::In,
                                bytes,
                            );
                        }
                    });
                }
            });
            drop(guard);
            let text = gate.text();
            assert_eq!(text.lines().count(), 2_000);
            let stamp = Stamp::at(SystemTime::now());
            for line in text.lines() {
                // The same line, written again with this line's time.
                let (at, bytes): (&str, &[u8]) = if json {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    let at = line[14..].split('"').next().unwrap();
                    let short = v["fields"]["line"] == "IAMAT k +1+1 1";
                    (at, if short { b"IAMAT k +1+1 1" } else { &long })
                } else {
                    let short = line.ends_with("line=IAMAT k +1+1 1");
                    (
                        line.split(' ').next().unwrap(),
                        if short { b"IAMAT k +1+1 1" } else { &long },
                    )
                };
                assert_eq!(at.len(), stamp.as_bytes().len(), "{at}");
                let mut again = Vec::new();
                format.write(&mut again, &stamp, Direction::In, bytes);
                let again = String::from_utf8(again).unwrap();
                let again = again.replacen(std::str::from_utf8(stamp.as_bytes()).unwrap(), at, 1);
                assert_eq!(again, format!("{line}\n"));
            }
        }
    }

    /// `line` without its timestamp.
    fn untimed(line: &str, json: bool) -> String {
        let at = if json { 14 } else { 0 };
        assert_eq!(&line[at + 26..at + 27], "Z", "{line}");
        format!("{}{}", &line[..at], &line[at + 27..])
    }

    /// The layers of `init` with a test sink for the file and a test
    /// stderr: traffic goes once to each, other events too.
    #[test]
    fn traffic_and_events_share_the_file_and_reach_stderr_once() {
        for json in [false, true] {
            for (stderr_filter, on_stderr) in [
                ("info", 3),
                (STDERR_DEFAULT, 0),
                // The default, plus client traffic decided inside its span.
                ("info,herd::client=warn,[client]=info", 3),
            ] {
                let gate = Gate::opened();
                let (sink, guard) = Sink::start(Box::new(gate.clone()), 1 << 20).unwrap();
                let log: &'static FileLog = Box::leak(Box::new(FileLog {
                    sink: sink.clone(),
                    json,
                }));
                let stderr = Collect::default();
                let writer = stderr.clone();
                let filter = EnvFilter::new(stderr_filter);
                let layers = layers(json, sink, (move || writer.clone(), false, filter));
                let subscriber = tracing_subscriber::registry().with(layers);
                tracing::subscriber::with_default(subscriber, || {
                    // As a node makes them: the client's span inside the
                    // node's, and neither entered while lines are logged.
                    let addr: SocketAddr = "127.0.0.1:5555".parse().unwrap();
                    let client = tracing::info_span!("node", name = %"Clark")
                        .in_scope(|| tracing::info_span!("client", %addr));
                    let traffic = Traffic {
                        file: Some(TrafficFile {
                            log,
                            format: LineFormat::new(json, "Clark", addr),
                        }),
                        span: client.clone(),
                    };
                    traffic.log(Direction::In, b"IAMAT k +1+1 1");
                    traffic.log(Direction::Out, b"AT Clark +0.1 k +1+1 1\n");
                    client.in_scope(|| {
                        tracing::info!(target: "herd::client", "idle; closing");
                        tracing::debug!(target: "herd::client", "not for the file");
                    });
                });
                drop(guard);
                let file = gate.text();
                let file: Vec<String> = file.lines().map(|l| untimed(l, json)).collect();
                assert_eq!(file.len(), 3, "{file:?}");
                let (text_in, text_out) = if json {
                    (
                        r#""fields":{"message":"in","line":"IAMAT k +1+1 1"}"#,
                        r#""reply":"AT Clark +0.1 k +1+1 1\\n"}"#,
                    )
                } else {
                    (
                        ": in line=IAMAT k +1+1 1",
                        ": out reply=AT Clark +0.1 k +1+1 1\\n",
                    )
                };
                assert!(file[0].contains(text_in), "{}", file[0]);
                assert!(file[1].contains(text_out), "{}", file[1]);
                assert!(file[2].contains("idle; closing"), "{}", file[2]);
                let stderr = String::from_utf8(stderr.0.lock().unwrap().clone()).unwrap();
                let stderr: Vec<String> = stderr.lines().map(|l| untimed(l, json)).collect();
                assert_eq!(stderr.len(), on_stderr, "{stderr:?}");
                if on_stderr > 0 {
                    assert_eq!(stderr, file);
                }
            }
        }
    }

    /// Fails every write.
    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk on fire"))
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_errors_do_not_stop_the_node() {
        let (sink, guard) = Sink::start(Box::new(Broken), 64).unwrap();
        for n in 0..1_000 {
            sink.append(format!("line {n}\n").as_bytes());
        }
        drop(guard);
        sink.append(b"after\n");
    }

    #[test]
    fn traffic_is_quiet_without_init() {
        // In-process tests never start file logging.
        if FILE.get().is_none() {
            let traffic = Traffic::new(
                "Clark",
                "127.0.0.1:1".parse().unwrap(),
                tracing::Span::none(),
            );
            assert!(traffic.file.is_none());
            traffic.log(Direction::In, b"IAMAT kiwi +1+1 1");
        }
    }
}
