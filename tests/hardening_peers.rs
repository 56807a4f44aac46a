//! Hardening of the links between servers, over `tcp`: a neighbour (or
//! anything that says it is one) that misbehaves is cut off with a logged
//! reason, the node's memory stays bounded, clients are served throughout,
//! and anti-entropy repairs the link once the real neighbour returns.
//!
//! Each test runs a three-node herd `Bona-x — Clark-x — Jaquez-x` (names
//! suffixed per test so that log lines never cross), stops Jaquez, and
//! speaks raw TCP to Clark's peer address as whoever it likes: on `tcp` a
//! peer is whoever its hello says it is (documented). Clark dials Jaquez,
//! Bona dials Clark. Tests take turns, so that the memory this process
//! counts (heap bytes through a counting allocator, and VmRSS) says
//! something about the test that measures it.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use common::{until, Client, Herd, PATIENCE};
use herd::config::Config;
use herd::flood::{Head, Hub};
use herd::peer::frame::{self, Hello, Message};

/// The nodes' largest frame (the default `peer.max_frame`).
const MAX_FRAME: usize = 1 << 20;

/// Peer settings shared by every test: quick redials, a quick handshake
/// bound; each test adds its own idle time.
const PEER: &str = "backoff_min = \"20ms\"\nbackoff_max = \"200ms\"\n\
                    keepalive = \"250ms\"\nconnect_timeout = \"1500ms\"\n";

const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);

/// One test at a time: memory is counted for the whole process.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------
// Logs, captured in-process.

struct Logs {
    text: Mutex<Vec<u8>>,
    written: watch::Sender<u64>,
}

static LOGS: OnceLock<Logs> = OnceLock::new();

/// Where the test subscriber writes: every formatted event arrives whole.
struct Sink;

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(logs) = LOGS.get() {
            logs.text
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
            logs.written.send_modify(|n| *n += 1);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the process-wide log capture once (nodes log from tokio worker
/// threads, so a thread-local default would miss them).
fn logs() -> &'static Logs {
    static INSTALL: Once = Once::new();
    let logs = LOGS.get_or_init(|| Logs {
        text: Mutex::new(Vec::new()),
        written: watch::Sender::new(0),
    });
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info,herd::client=warn"))
            .with_ansi(false)
            .with_writer(|| Sink)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    });
    logs
}

fn log_lines() -> Vec<String> {
    let text = logs().text.lock().unwrap_or_else(|e| e.into_inner());
    String::from_utf8_lossy(&text)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits, on the log's write events, for a line that `matches`; returns it.
async fn logged(what: &str, matches: impl Fn(&str) -> bool) -> String {
    let mut written = logs().written.subscribe();
    let wait = async {
        loop {
            if let Some(line) = log_lines().into_iter().find(|l| matches(l)) {
                return line;
            }
            written
                .changed()
                .await
                .expect("the log lives as long as the process");
        }
    };
    match timeout(PATIENCE, wait).await {
        Ok(line) => line,
        Err(_) => {
            let lines = log_lines();
            let tail = &lines[lines.len().saturating_sub(60)..];
            panic!("no log line {what}; the log ends:\n{}", tail.join("\n"))
        }
    }
}

/// Whether `line` carries the field `key=value` (as a whole token).
fn has_field(line: &str, key: &str, value: impl std::fmt::Display) -> bool {
    let field = format!("{key}={value}");
    line.split([' ', '{', '}', ',']).any(|token| token == field)
}

// ---------------------------------------------------------------------------
// Memory.

/// The system allocator, counting the bytes live in this process and their
/// peak, so a test can tell what the nodes allocated (resident memory alone
/// hides freed-but-kept pages and lazily mapped ones).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call is passed to `System` unchanged; only counters move.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MIB: f64 = (1 << 20) as f64;

/// This process's resident memory (VmRSS) and its peak (VmHWM), in MiB.
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
            .unwrap_or_else(|| panic!("{name} in /proc/self/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Memory growth from a starting point: heap bytes live and at peak, and
/// resident memory now and at peak.
struct Memory {
    live: usize,
    rss: f64,
}

#[derive(Debug)]
struct Growth {
    live: f64,
    peak: f64,
    rss: f64,
    rss_peak: f64,
}

impl std::fmt::Display for Growth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "heap +{:.1} MiB live, +{:.1} MiB at peak; VmRSS {:+.1} MiB, VmHWM {:+.1} MiB",
            self.live, self.peak, self.rss, self.rss_peak
        )
    }
}

impl Memory {
    /// Starts measuring: resets the heap peak and (where the kernel lets
    /// us) the resident peak.
    fn start() -> Memory {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let live = LIVE.load(Relaxed);
        PEAK.store(live, Relaxed);
        Memory {
            live,
            rss: rss_mib().0,
        }
    }

    fn growth(&self) -> Growth {
        let (rss, hwm) = rss_mib();
        Growth {
            live: (LIVE.load(Relaxed) as f64 - self.live as f64) / MIB,
            peak: (PEAK.load(Relaxed) as f64 - self.live as f64) / MIB,
            rss: rss - self.rss,
            rss_peak: hwm - self.rss,
        }
    }
}

// ---------------------------------------------------------------------------
// The herd under test.

/// The node names of one test.
struct Trio {
    bona: String,
    clark: String,
    jaquez: String,
}

impl Trio {
    fn new(tag: &str) -> Trio {
        Trio {
            bona: format!("Bona-{tag}"),
            clark: format!("Clark-{tag}"),
            jaquez: format!("Jaquez-{tag}"),
        }
    }
}

/// Starts `Bona — Clark — Jaquez` over tcp with `peer` as the `[peer]`
/// table (as `common::Herd::start_with` does, with peer settings of our
/// own).
async fn start(t: &Trio, peer: &str) -> Herd {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herd.toml");
    let mut text =
        format!("transport = \"tcp\"\ncerts = \"certs\"\n[log]\ndir = \"logs\"\n[peer]\n{peer}\n");
    for (name, neighbours) in [
        (&t.bona, vec![&t.clark]),
        (&t.clark, vec![&t.jaquez, &t.bona]),
        (&t.jaquez, vec![&t.clark]),
    ] {
        let list: Vec<String> = neighbours.iter().map(|n| format!("\"{n}\"")).collect();
        text += &format!(
            "[nodes.{name}]\nclient = \"127.0.0.1:0\"\npeer = \"127.0.0.1:0\"\nneighbours = [{}]\n",
            list.join(", ")
        );
    }
    std::fs::write(&path, &text).unwrap();
    let config = Config::from_toml(&text, &path).unwrap();
    let herd = Herd::from_config(dir, config).await;
    herd.settled().await;
    herd
}

fn peer_addr(herd: &Herd, name: &str) -> SocketAddr {
    herd.config.nodes[name].peer.parse().unwrap()
}

/// Brings the real Jaquez back and waits until catch-up has delivered every
/// `(client, line)` that Clark stored while Jaquez was away.
async fn jaquez_returns_and_catches_up(herd: &mut Herd, t: &Trio, missed: &[(String, String)]) {
    assert!(!missed.is_empty());
    for (client, _) in missed {
        assert!(herd.hub(&t.clark).lookup(client.as_bytes()).is_some());
    }
    herd.restart(&t.jaquez).await;
    until(herd.hub(&t.clark), |h| h.attached().contains(&t.jaquez)).await;
    for (client, line) in missed {
        herd.holds(&t.jaquez, client.as_bytes(), line.as_bytes())
            .await;
    }
}

/// One IAMAT on `c`; the reply and the round trip.
async fn iamat(c: &mut Client, client: &str, time: &str) -> (String, Duration) {
    let started = Instant::now();
    let reply = c
        .ask(&format!("IAMAT {client} +34.068930-118.445127 {time}"))
        .await;
    assert!(reply.starts_with("AT "), "{reply}");
    (reply, started.elapsed())
}

/// IAMATs at `addr`, every 20 ms, until `stop`: the slowest round trip, how
/// many were answered, and the last (client, line).
async fn probe(
    addr: SocketAddr,
    client: String,
    stop: CancellationToken,
) -> (Duration, u32, (String, String)) {
    let mut c = Client::connect(addr).await;
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    let (mut slowest, mut answered, mut last) = (Duration::ZERO, 0u32, String::new());
    while answered < 5000 {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = pace.tick() => {}
        }
        let (line, took) = iamat(&mut c, &client, &format!("1700000000.{:09}", answered + 1)).await;
        slowest = slowest.max(took);
        answered += 1;
        last = line;
    }
    (slowest, answered, (client, last))
}

// ---------------------------------------------------------------------------
// The attacker.

async fn send(writer: &mut OwnedWriteHalf, message: &Message) {
    let mut buf = BytesMut::new();
    frame::encode(message, &mut buf);
    writer.write_all(&buf).await.unwrap();
}

fn hello(name: &str) -> Message {
    Message::Hello(Hello {
        node: name.to_string(),
        epoch: 1,
        seen: Head::default(),
    })
}

/// A raw TCP connection to a node's peer address that has said hello as
/// `name` and heard the node's answer.
struct Impostor {
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    local: SocketAddr,
}

async fn impersonate(node: SocketAddr, name: &str) -> Impostor {
    let stream = TcpStream::connect(node).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let local = stream.local_addr().unwrap();
    let (mut reader, mut writer) = stream.into_split();
    send(&mut writer, &hello(name)).await;
    match timeout(PATIENCE, frame::read(&mut reader, 4 * MAX_FRAME)).await {
        Ok(Ok(Some(Message::Hello(_)))) => {}
        other => panic!("the node did not answer {name}'s hello: {other:?}"),
    }
    Impostor {
        reader,
        writer,
        local,
    }
}

/// Reads (and drops) whatever the node sends until it closes the
/// connection (end of stream or reset); how long that took. Fails the test
/// if the node keeps it open for `limit`.
async fn closed_within(reader: &mut OwnedReadHalf, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let drained = timeout(limit, async {
        while let Ok(n) = reader.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    assert!(
        drained.is_ok(),
        "the node kept the connection open for {limit:?}"
    );
    started.elapsed()
}

/// An AT line as `server` would have made it.
fn at_line(server: &str, client: &str, time: &str) -> Bytes {
    Bytes::from(format!(
        "AT {server} +0.100000000 {client} +34.068930-118.445127 {time}"
    ))
}

// ---------------------------------------------------------------------------
// 1. Garbage instead of a hello.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_a_hello_is_refused_at_once_while_clients_are_served() {
    let _serial = SERIAL.lock().await;
    logs();
    let t = Trio::new("g");
    let mut herd = start(&t, &format!("{PEER}idle_timeout = \"3s\"\n")).await;
    herd.stop(&t.jaquez).await;
    let clark = peer_addr(&herd, &t.clark);
    let mut client = Client::connect(herd.client_addr(&t.clark)).await;
    let mut updates = Vec::new();

    let mut empty_updates = BytesMut::new();
    frame::encode(
        &Message::Updates {
            head: 0,
            lines: vec![],
        },
        &mut empty_updates,
    );
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "an HTTP request",
            b"GET / HTTP/1.1\r\nHost: clark\r\n\r\n".to_vec(),
            "over the limit",
        ),
        (
            "a 4 GiB frame header",
            vec![0xff; 4],
            "frame of 4294967295 bytes is over the limit",
        ),
        (
            "a hello without the magic",
            b"\0\0\0\x09\x01HTTP/1.1".to_vec(),
            "not a herd peer",
        ),
        (
            "updates before any hello",
            empty_updates.to_vec(),
            "expected a hello",
        ),
    ];
    for (i, (what, bytes, reason)) in cases.into_iter().enumerate() {
        let stream = TcpStream::connect(clark).await.unwrap();
        let local = stream.local_addr().unwrap();
        let (mut reader, mut writer) = stream.into_split();
        writer.write_all(&bytes).await.unwrap();
        // A client is answered while the node deals with the garbage.
        let id = format!("during-garbage-{i}");
        let (closed, (line, took)) = tokio::join!(
            closed_within(&mut reader, CONNECT_TIMEOUT / 2),
            iamat(&mut client, &id, "1700000000.5"),
        );
        println!("{what}: closed after {closed:?}; an IAMAT meanwhile took {took:?}");
        let line_logged = logged(&format!("refusing {what}"), |l| {
            l.contains("link refused") && has_field(l, "remote", local) && l.contains(reason)
        })
        .await;
        println!("  logged: {line_logged}");
        updates.push((id, line));
    }

    // A well-formed hello from a stranger gets a goodbye with the reason.
    let stream = TcpStream::connect(clark).await.unwrap();
    let local = stream.local_addr().unwrap();
    let (mut reader, mut writer) = stream.into_split();
    send(&mut writer, &hello("Mallory")).await;
    match timeout(PATIENCE, frame::read(&mut reader, MAX_FRAME)).await {
        Ok(Ok(Some(Message::Bye(reason)))) => {
            assert!(reason.contains("not a neighbour"), "{reason}")
        }
        other => panic!("a stranger got {other:?}"),
    }
    closed_within(&mut reader, CONNECT_TIMEOUT / 2).await;
    logged("refusing a stranger", |l| {
        l.contains("link refused") && has_field(l, "remote", local) && l.contains("not a neighbour")
    })
    .await;
    assert!(!herd.hub(&t.clark).attached().contains(&"Mallory".into()));

    jaquez_returns_and_catches_up(&mut herd, &t, &updates).await;
    herd.shutdown().await;
}

// ---------------------------------------------------------------------------
// 2a. A neighbour that breaks the protocol after its hello.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neighbour_breaking_the_protocol_is_cut_with_the_reason() {
    let _serial = SERIAL.lock().await;
    logs();
    let t = Trio::new("a");
    let mut herd = start(&t, &format!("{PEER}idle_timeout = \"3s\"\n")).await;
    herd.stop(&t.jaquez).await;
    let clark = peer_addr(&herd, &t.clark);
    let mut client = Client::connect(herd.client_addr(&t.clark)).await;
    let mut updates = Vec::new();

    let framed = |message: Message| {
        let mut buf = BytesMut::new();
        frame::encode(&message, &mut buf);
        buf.to_vec()
    };
    let mut lying_count = framed(Message::Updates {
        head: 1,
        lines: vec![],
    });
    lying_count[13..17].copy_from_slice(&1_000_000u32.to_be_bytes());
    let cases: [(&str, Vec<u8>, &str); 6] = [
        (
            "an unknown kind",
            vec![0, 0, 0, 1, 9],
            "protocol violation: unknown message kind 9",
        ),
        (
            "a truncated ping",
            vec![0, 0, 0, 3, 3, 0, 0],
            "protocol violation: malformed frame: truncated",
        ),
        (
            "random bytes",
            b"\0\0\0\x0a\x00\x13\x37garbage".to_vec(),
            "protocol violation: unknown message kind 0",
        ),
        (
            "updates claiming a million lines",
            lying_count,
            "protocol violation: malformed frame: update count exceeds frame",
        ),
        (
            "an update with a bad AT line",
            framed(Message::Updates {
                head: 1,
                lines: vec![Bytes::from(format!(
                    "AT {} +0.100000000 victim-a +99-500 1700000000.0",
                    t.jaquez
                ))],
            }),
            "protocol violation: bad update: bad location",
        ),
        (
            "a second hello",
            framed(hello(&t.jaquez)),
            "protocol violation: second hello",
        ),
    ];
    for (i, (what, bytes, reason)) in cases.into_iter().enumerate() {
        let mut imp = impersonate(clark, &t.jaquez).await;
        until(herd.hub(&t.clark), |h| h.attached().contains(&t.jaquez)).await;
        imp.writer.write_all(&bytes).await.unwrap();
        let id = format!("during-violation-{i}");
        // idle_timeout is 3 s: closing within 1 s is the violation's doing.
        let (closed, (line, took)) = tokio::join!(
            closed_within(&mut imp.reader, Duration::from_secs(1)),
            iamat(&mut client, &id, "1700000000.5"),
        );
        println!("{what}: closed after {closed:?}; an IAMAT meanwhile took {took:?}");
        let line_logged = logged(&format!("cutting {what}"), |l| {
            l.contains("link lost") && has_field(l, "remote", imp.local) && l.contains(reason)
        })
        .await;
        println!("  logged: {line_logged}");
        until(herd.hub(&t.clark), |h| !h.attached().contains(&t.jaquez)).await;
        updates.push((id, line));
    }
    assert!(herd.hub(&t.clark).lookup(b"victim-a").is_none());

    jaquez_returns_and_catches_up(&mut herd, &t, &updates).await;
    herd.shutdown().await;
}

// ---------------------------------------------------------------------------
// 2b. A frame header over the limit.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_is_refused_on_its_header_alone() {
    let _serial = SERIAL.lock().await;
    logs();
    let t = Trio::new("b");
    // A long idle time: a node waiting for the body would hold on for 10 s.
    let mut herd = start(&t, &format!("{PEER}idle_timeout = \"10s\"\n")).await;
    herd.stop(&t.jaquez).await;
    let clark = peer_addr(&herd, &t.clark);
    let mut client = Client::connect(herd.client_addr(&t.clark)).await;
    let mut updates = Vec::new();
    for (i, len) in [u32::MAX, MAX_FRAME as u32 + 1].into_iter().enumerate() {
        let mut imp = impersonate(clark, &t.jaquez).await;
        until(herd.hub(&t.clark), |h| h.attached().contains(&t.jaquez)).await;
        let memory = Memory::start();
        // Only the 4-byte length: no body follows.
        imp.writer.write_all(&len.to_be_bytes()).await.unwrap();
        let closed = closed_within(&mut imp.reader, Duration::from_secs(1)).await;
        let growth = memory.growth();
        let reason = format!("protocol violation: frame of {len} bytes is over the limit");
        let line = logged(&format!("for a {len}-byte frame"), |l| {
            l.contains("link lost") && has_field(l, "remote", imp.local) && l.contains(&reason)
        })
        .await;
        println!("header {len:#x}: closed after {closed:?}; {growth}\n  logged: {line}");
        // Not even the smaller of the two bodies was ever allocated.
        assert!(growth.peak < 0.5, "{growth}");
        let id = format!("after-oversized-{i}");
        let (line, took) = iamat(&mut client, &id, "1700000000.5").await;
        println!("  an IAMAT then took {took:?}");
        updates.push((id, line));
    }

    jaquez_returns_and_catches_up(&mut herd, &t, &updates).await;
    herd.shutdown().await;
}

// ---------------------------------------------------------------------------
// 2c. A flood of valid updates.

/// Four workers: in production Clark has a runtime of its own; here all
/// three nodes share one, and Bona parses the same 200,000 lines as Clark.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_valid_updates_is_stored_and_forwarded_while_clients_are_served() {
    const LINES: usize = 200_000;
    const PER_FRAME: usize = 10_000;
    const DONE: u64 = 0xf100d;
    let _serial = SERIAL.lock().await;
    logs();
    let t = Trio::new("c");
    let mut herd = start(&t, &format!("{PEER}idle_timeout = \"3s\"\n")).await;
    herd.stop(&t.jaquez).await;
    let clark = peer_addr(&herd, &t.clark);
    let memory = Memory::start();
    let Impostor {
        mut reader,
        mut writer,
        local,
    } = impersonate(clark, &t.jaquez).await;

    let stop = CancellationToken::new();
    let prober = tokio::spawn(probe(
        herd.client_addr(&t.clark),
        "probe-c".into(),
        stop.clone(),
    ));
    let started = Instant::now();
    let jaquez = t.jaquez.clone();
    let flood = async move {
        let mut buf = BytesMut::with_capacity(MAX_FRAME);
        for first in (0..LINES).step_by(PER_FRAME) {
            let lines = (first..first + PER_FRAME)
                .map(|i| {
                    at_line(
                        &jaquez,
                        &format!("flood-{i}"),
                        &format!("1700000000.{i:09}"),
                    )
                })
                .collect();
            let head = (first + PER_FRAME) as u64;
            frame::encode(&Message::Updates { head, lines }, &mut buf);
            assert!(buf.len() <= MAX_FRAME);
            if writer.write_all(&buf).await.is_err() {
                return writer;
            }
            buf.clear();
        }
        // Answered only once every frame before it has been handled.
        let mut ping = BytesMut::new();
        frame::encode(&Message::Ping(DONE), &mut ping);
        let _ = writer.write_all(&ping).await;
        writer
    };
    let outcome = async {
        loop {
            match frame::read(&mut reader, 4 * MAX_FRAME).await {
                Ok(Some(Message::Pong(DONE))) => return true,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return false,
            }
        }
    };
    let (writer, handled) = timeout(PATIENCE, async { tokio::join!(flood, outcome) })
        .await
        .expect("the flood ends in time");
    let took = started.elapsed();
    stop.cancel();
    let (slowest, answered, probed) = prober.await.unwrap();
    println!(
        "{LINES} updates in {} frames: handled={handled} in {took:?}; \
         {answered} IAMATs meanwhile, slowest {slowest:?}",
        LINES / PER_FRAME
    );
    assert!(answered > 0);
    assert!(
        slowest < Duration::from_secs(2),
        "an IAMAT took {slowest:?} during the flood"
    );

    let hub: &Hub = herd.hub(&t.clark);
    let flooded = (0..LINES)
        .filter(|i| hub.lookup(format!("flood-{i}").as_bytes()).is_some())
        .count();
    if handled {
        assert_eq!(flooded, LINES, "every valid update is stored");
    } else {
        // Cut instead: it must say why.
        let line = logged("cutting the flood", |l| {
            l.contains("link lost") && has_field(l, "remote", local)
        })
        .await;
        println!("the flood was cut after {flooded} updates: {line}");
    }
    // What Clark accepted goes on to Bona (live, or by catch-up if Bona's
    // link fell behind).
    let clark_len = hub.len();
    until(herd.hub(&t.bona), |h| h.len() >= clark_len).await;
    for i in (0..LINES).step_by(9973) {
        let client = format!("flood-{i}");
        if let Some(report) = hub.lookup(client.as_bytes()) {
            herd.holds(&t.bona, client.as_bytes(), report.line()).await;
        }
    }
    let growth = memory.growth();
    println!(
        "stored {flooded} at {} and {} at {}: {growth}",
        t.clark,
        herd.hub(&t.bona).len(),
        t.bona
    );
    // Two tables of 200,000 lines of ~90 bytes with their indexes: a few
    // hundred bytes an entry, well under 1 KiB.
    let per_entry = growth.peak * MIB / (2 * LINES) as f64;
    println!("  {per_entry:.0} bytes of heap peak per stored entry");
    assert!(per_entry < 1024.0, "{growth}");
    assert!(growth.rss_peak < 600.0, "{growth}");
    drop(writer);
    drop(reader);

    jaquez_returns_and_catches_up(&mut herd, &t, &[probed]).await;
    until(herd.hub(&t.jaquez), |h| h.len() >= clark_len).await;
    println!(
        "{} caught up with {} reports; since the flood began: {}",
        t.jaquez,
        herd.hub(&t.jaquez).len(),
        memory.growth()
    );
    herd.shutdown().await;
}

// ---------------------------------------------------------------------------
// 2d. A neighbour that stops reading.

/// Keeps the node's receiving side content (a ping every 100 ms) without
/// ever reading, until `stop` or the node closes.
fn keep_pinging(
    mut writer: OwnedWriteHalf,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut pace = tokio::time::interval(Duration::from_millis(100));
        for n in 0..600u64 {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = pace.tick() => {}
            }
            let mut buf = BytesMut::new();
            frame::encode(&Message::Ping(n), &mut buf);
            if writer.write_all(&buf).await.is_err() {
                return;
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neighbour_that_stops_reading_is_cut_and_memory_stays_bounded() {
    const BATCH: usize = 250;
    const MOST: usize = 80_000;
    let _serial = SERIAL.lock().await;
    logs();
    let t = Trio::new("d");
    let mut herd = start(&t, &format!("{PEER}idle_timeout = \"3s\"\n")).await;
    herd.stop(&t.jaquez).await;
    let clark = peer_addr(&herd, &t.clark);
    let memory = Memory::start();
    let Impostor {
        mut reader,
        writer,
        local,
    } = impersonate(clark, &t.jaquez).await;
    until(herd.hub(&t.clark), |h| h.attached().contains(&t.jaquez)).await;
    let stop = CancellationToken::new();
    let pinger = keep_pinging(writer, stop.clone());
    let prober = tokio::spawn(probe(
        herd.client_addr(&t.clark),
        "probe-d".into(),
        stop.clone(),
    ));

    // Clients at Clark make updates that Clark must send the impostor, which
    // reads none of them.
    let started = Instant::now();
    let mut bulk = Client::connect(herd.client_addr(&t.clark)).await;
    let mut sent = 0;
    let mut slowest_batch = Duration::ZERO;
    while sent < MOST && herd.hub(&t.clark).attached().contains(&t.jaquez) {
        let mut lines = String::new();
        for i in sent..sent + BATCH {
            lines += &format!("IAMAT slow-{i} +34.068930-118.445127 1700000000.{i:09}\n");
        }
        let batch = Instant::now();
        bulk.send(lines.as_bytes()).await;
        for _ in 0..BATCH {
            let reply = bulk.line().await.expect("a reply");
            assert!(reply.starts_with(b"AT "));
        }
        slowest_batch = slowest_batch.max(batch.elapsed());
        sent += BATCH;
    }
    let cut_after = started.elapsed();
    let line = logged("cutting the neighbour that does not read", |l| {
        (l.contains("too far behind")
            && has_field(l, "peer", &t.jaquez)
            && !l.contains("link lost"))
            || (has_field(l, "remote", local) && l.contains("peer read nothing"))
    })
    .await;
    let growth = memory.growth();
    stop.cancel();
    let (slowest, answered, probed) = prober.await.unwrap();
    println!(
        "cut after {sent} IAMATs in {cut_after:?} (batches of {BATCH}, slowest {slowest_batch:?}); \
         {answered} single IAMATs meanwhile, slowest {slowest:?}\n  logged: {line}\n  \
         {growth}"
    );
    assert!(
        !herd.hub(&t.clark).attached().contains(&t.jaquez),
        "still attached after {sent} updates it never read"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "an IAMAT took {slowest:?}"
    );
    assert!(
        slowest_batch < Duration::from_secs(5),
        "{BATCH} IAMATs took {slowest_batch:?}"
    );
    // The clients' reports (stored at Clark and Bona) plus the socket
    // buffers' worth of frames: not the updates sent.
    assert!(growth.peak < 100.0, "{growth}");
    assert!(growth.rss_peak < 200.0, "{growth}");
    // The node has closed its end: what it had sent drains, then EOF.
    closed_within(&mut reader, Duration::from_secs(5)).await;
    pinger.await.unwrap();

    let last = sent - 1;
    let last_line = herd
        .hub(&t.clark)
        .lookup(format!("slow-{last}").as_bytes())
        .expect("stored")
        .line()
        .to_vec();
    let missed = [
        probed,
        (
            format!("slow-{last}"),
            String::from_utf8(last_line.to_vec()).unwrap(),
        ),
    ];
    jaquez_returns_and_catches_up(&mut herd, &t, &missed).await;
    herd.shutdown().await;
}

/// The catch-up a link starts with is written under the same bound as live
/// updates: a neighbour that stops reading in the middle of it (while still
/// sending pings) is cut within `idle_timeout`, even when no new update
/// arrives meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neighbour_that_stops_reading_during_catch_up_is_cut() {
    // ~12 MiB of catch-up: three times what loopback socket buffers were
    // seen to absorb (the test above), so it cannot all be written.
    const LINES: usize = 12_000;
    const PER_FRAME: usize = 900;
    let _serial = SERIAL.lock().await;
    logs();
    let t = Trio::new("s");
    let mut herd = start(&t, &format!("{PEER}idle_timeout = \"1s\"\n")).await;
    herd.stop(&t.jaquez).await;
    let clark = peer_addr(&herd, &t.clark);

    // Give Clark a table worth catching up on: lines of ~1 KiB.
    let mut imp = impersonate(clark, &t.jaquez).await;
    let padding = "x".repeat(1000);
    let lines: Vec<Bytes> = (0..LINES)
        .map(|i| at_line(&t.jaquez, &format!("table-{i}-{padding}"), "1700000000.5"))
        .collect();
    let table_bytes: usize = lines.iter().map(|l| l.len() + 4).sum();
    for (n, chunk) in lines.chunks(PER_FRAME).enumerate() {
        send(
            &mut imp.writer,
            &Message::Updates {
                head: n as u64 + 1,
                lines: chunk.to_vec(),
            },
        )
        .await;
    }
    let last = format!("table-{}-{padding}", LINES - 1);
    until(herd.hub(&t.clark), |h| h.lookup(last.as_bytes()).is_some()).await;
    drop(imp);
    until(herd.hub(&t.clark), |h| !h.attached().contains(&t.jaquez)).await;

    // Now one that has seen nothing, so catch-up is the whole table, and
    // that never reads a byte of it.
    let Impostor {
        mut reader,
        writer,
        local,
    } = impersonate(clark, &t.jaquez).await;
    let stop = CancellationToken::new();
    let pinger = keep_pinging(writer, stop.clone());
    let mut c = Client::connect(herd.client_addr(&t.clark)).await;
    let (line, took) = iamat(&mut c, "during-stall-s", "1700000000.5").await;
    println!("an IAMAT during the stalled catch-up took {took:?}");

    let started = Instant::now();
    let cut = {
        let mut gone = herd.hub(&t.clark).subscribe();
        timeout(Duration::from_secs(4), async {
            while herd.hub(&t.clark).attached().contains(&t.jaquez) {
                gone.changed().await.unwrap();
            }
        })
        .await
    };
    let written = herd.hub(&t.clark).metrics().peer_statuses()[&t.jaquez].bytes_out;
    stop.cancel();
    pinger.await.unwrap();
    assert!(
        cut.is_ok(),
        "a neighbour that read none of its catch-up (and kept pinging) was still \
         attached {:?} later (idle_timeout 1s); the node had begun writing {:.1} of the \
         {:.1} MiB it owes",
        started.elapsed(),
        written as f64 / MIB,
        table_bytes as f64 / MIB,
    );
    logged("cutting the stalled catch-up", |l| {
        l.contains("link lost") && has_field(l, "remote", local)
    })
    .await;
    closed_within(&mut reader, Duration::from_secs(5)).await;

    jaquez_returns_and_catches_up(&mut herd, &t, &[("during-stall-s".into(), line)]).await;
    herd.shutdown().await;
}

// ---------------------------------------------------------------------------
// 2e. Stalls in the handshake.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_stalls_is_given_up_and_others_get_through() {
    let _serial = SERIAL.lock().await;
    logs();
    let t = Trio::new("e");
    let mut herd = start(&t, &format!("{PEER}idle_timeout = \"3s\"\n")).await;
    herd.stop(&t.jaquez).await;
    herd.stop(&t.bona).await;
    let clark = peer_addr(&herd, &t.clark);
    let mut hello_bytes = BytesMut::new();
    frame::encode(&hello(&t.jaquez), &mut hello_bytes);

    // Knocks at Clark that never finish a hello: silent, half a hello, and
    // a hello dribbled a byte every 100 ms.
    let mut stalls = Vec::new();
    for kind in ["silent", "half a hello", "dribbling"] {
        for _ in 0..3 {
            let stream = TcpStream::connect(clark).await.unwrap();
            let local = stream.local_addr().unwrap();
            let (reader, mut writer) = stream.into_split();
            match kind {
                "silent" => {}
                "half a hello" => writer
                    .write_all(&hello_bytes[..hello_bytes.len() / 2])
                    .await
                    .unwrap(),
                _ => {
                    let bytes = hello_bytes.clone();
                    tokio::spawn(async move {
                        let mut pace = tokio::time::interval(Duration::from_millis(100));
                        for b in bytes.iter() {
                            pace.tick().await;
                            if writer.write_all(&[*b]).await.is_err() {
                                return;
                            }
                        }
                    });
                    stalls.push((kind, local, reader, None, Instant::now()));
                    continue;
                }
            }
            stalls.push((kind, local, reader, Some(writer), Instant::now()));
        }
    }

    // Meanwhile a real neighbour's hello gets through, and clients are
    // served.
    herd.restart(&t.bona).await;
    until(herd.hub(&t.clark), |h| h.attached().contains(&t.bona)).await;
    let mut c = Client::connect(herd.client_addr(&t.clark)).await;
    let (reply, took) = iamat(&mut c, "during-stalls-e", "1700000000.5").await;
    let opened = stalls[0].4.elapsed();
    println!(
        "{} came up and an IAMAT took {took:?}, {opened:?} after the stalls began",
        t.bona
    );
    if opened < CONNECT_TIMEOUT {
        // The stalls are all still pending, yet Bona got through.
        for (kind, _, reader, _, _) in &stalls {
            let mut byte = [0u8; 1];
            let pending = matches!(reader.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
            assert!(pending, "a {kind} knock was closed before its time");
        }
    }

    for (kind, local, mut reader, _writer, opened) in stalls {
        let left = CONNECT_TIMEOUT + Duration::from_secs(2);
        closed_within(&mut reader, left.saturating_sub(opened.elapsed())).await;
        let after = opened.elapsed();
        assert!(
            after >= CONNECT_TIMEOUT - Duration::from_millis(50),
            "a {kind} knock was closed after only {after:?}"
        );
        let line = logged(&format!("giving up a {kind} knock"), |l| {
            l.contains("link refused")
                && has_field(l, "remote", local)
                && (l.contains("handshake timed out") || l.contains("no hello within"))
        })
        .await;
        println!("{kind}: closed after {after:?}\n  logged: {line}");
    }

    // The other way round: Clark dials "Jaquez", which answers nothing.
    let jaquez = peer_addr(&herd, &t.jaquez);
    let listener = TcpListener::bind(jaquez).await.unwrap();
    let (stream, _) = timeout(PATIENCE, listener.accept())
        .await
        .expect("Clark redials")
        .unwrap();
    let (mut reader, _writer) = stream.into_split();
    let dialled = Instant::now();
    match timeout(PATIENCE, frame::read(&mut reader, MAX_FRAME)).await {
        Ok(Ok(Some(Message::Hello(h)))) => assert_eq!(h.node, t.clark),
        other => panic!("Clark said {other:?}"),
    }
    closed_within(&mut reader, CONNECT_TIMEOUT + Duration::from_secs(1)).await;
    let after = dialled.elapsed();
    let line = logged("giving up a silent dial", |l| {
        has_field(l, "addr", jaquez)
            && (l.contains("dial timed out") || l.contains("no hello within"))
    })
    .await;
    println!("Clark gave up its unanswered dial after {after:?}\n  logged: {line}");
    drop(listener);

    jaquez_returns_and_catches_up(&mut herd, &t, &[("during-stalls-e".into(), reply)]).await;
    herd.shutdown().await;
}

// ---------------------------------------------------------------------------
// Memory that follows what is stored, not what was sent.

/// A report received from a neighbour costs about its own line, not the
/// frame it came in: a neighbour that sends frames each holding one new
/// line and a large line that loses (a duplicate) must not make the node
/// keep every frame. Here 48 frames of ~0.9 MiB each bring 48 short new
/// lines (and one 0.9 MiB line, stored once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_updates_do_not_keep_their_whole_frames_alive() {
    const FRAMES: usize = 48;
    const PAD: usize = 900 << 10;
    let _serial = SERIAL.lock().await;
    logs();
    let t = Trio::new("r");
    let mut herd = start(&t, &format!("{PEER}idle_timeout = \"3s\"\n")).await;
    herd.stop(&t.jaquez).await;
    let clark = peer_addr(&herd, &t.clark);
    let Impostor {
        mut reader,
        mut writer,
        ..
    } = impersonate(clark, &t.jaquez).await;
    // Read what Clark sends, so that only memory is under test.
    let drain = tokio::spawn(async move {
        closed_within(&mut reader, PATIENCE).await;
    });

    let memory = Memory::start();
    let pad_client = format!("pad-{}", "x".repeat(PAD));
    let pad = at_line(&t.jaquez, &pad_client, "1600000000.5");
    for i in 0..FRAMES {
        let fresh = at_line(&t.jaquez, &format!("pinned-{i}"), "1700000000.5");
        send(
            &mut writer,
            &Message::Updates {
                head: i as u64 + 1,
                lines: vec![fresh, pad.clone()],
            },
        )
        .await;
    }
    let last = format!("pinned-{}", FRAMES - 1);
    for node in [&t.clark, &t.bona] {
        until(herd.hub(node), |h| {
            h.lookup(last.as_bytes()).is_some() && h.lookup(pad_client.as_bytes()).is_some()
        })
        .await;
    }
    drop(pad);
    let growth = memory.growth();
    let sent = (FRAMES * PAD) as f64 / MIB;
    println!(
        "{FRAMES} frames ({sent:.1} MiB) brought {FRAMES} short lines and one of {:.1} MiB: {growth}",
        PAD as f64 / MIB
    );
    // Stored: the large line at Clark and at Bona, and 2 x 48 short lines.
    assert!(
        growth.live < 8.0,
        "{sent:.1} MiB of frames for {FRAMES} short new lines left the heap {:.1} MiB larger \
         ({growth})",
        growth.live
    );

    drop(writer);
    drain.await.unwrap();
    let line = String::from_utf8(
        herd.hub(&t.clark)
            .lookup(last.as_bytes())
            .unwrap()
            .line()
            .to_vec(),
    )
    .unwrap();
    jaquez_returns_and_catches_up(&mut herd, &t, &[(last, line)]).await;
    herd.shutdown().await;
}
