//! The client protocol (PROTOCOL.md section 1) against a real node on a real
//! socket: framing, IAMAT and WHATSAT replies, `? ` echoes, pipelining and
//! every configured limit.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::sync::{watch, Semaphore};

use common::{config_text, until, Client, EchoPlaces, PATIENCE};
use herd::config::{Config, TransportKind};
use herd::flood::Hub;
use herd::node::{BoundNode, RunningNode};
use herd::places::{Places, PlacesError, Query, Status};

const NANOS: i128 = 1_000_000_000;

/// One node, Clark, with no neighbours, serving clients on port 0.
struct Clark {
    _dir: tempfile::TempDir,
    node: Option<RunningNode>,
}

impl Clark {
    async fn start(extra: &str) -> Clark {
        Clark::start_with(extra, Arc::new(EchoPlaces)).await
    }

    /// Starts Clark with `extra` config (beginning with a table header) and
    /// the given places backend.
    async fn start_with(extra: &str, places: Arc<dyn Places>) -> Clark {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herd.toml");
        let text = config_text(TransportKind::Tcp, &[("Clark", &[])], extra);
        let mut config = Config::from_toml(&text, &path).unwrap();
        let bound = BoundNode::bind(&config, "Clark").await.unwrap();
        config.nodes.get_mut("Clark").unwrap().client = bound.client_addr();
        let node = bound.start_with(Arc::new(config), places);
        Clark {
            _dir: dir,
            node: Some(node),
        }
    }

    fn node(&self) -> &RunningNode {
        self.node.as_ref().expect("Clark is running")
    }

    fn addr(&self) -> SocketAddr {
        self.node().client_addr()
    }

    fn hub(&self) -> &Hub {
        self.node().hub()
    }

    async fn connect(&self) -> Client {
        Client::connect(self.addr()).await
    }

    async fn shutdown(mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
    }
}

/// Nanoseconds since the epoch, by this test's clock.
fn now() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

/// A POSIX time with nine fraction digits.
fn time_text(nanos: i128) -> String {
    format!("{}.{:09}", nanos / NANOS, nanos % NANOS)
}

/// The test's own reading of a `DIGITS[.DIGITS]` time.
fn parse_time(text: &[u8]) -> i128 {
    let text = std::str::from_utf8(text).unwrap();
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let frac = format!("{frac:0<9}");
    int.parse::<i128>().unwrap() * NANOS + frac.parse::<i128>().unwrap()
}

fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// Checks that `reply` is Clark's AT line for `client location time`, with
/// the last three fields byte for byte, and returns its time difference.
fn at_delta(reply: &[u8], client: &[u8], location: &[u8], time: &[u8]) -> i128 {
    let rest = reply
        .strip_prefix(b"AT Clark ")
        .unwrap_or_else(|| panic!("not Clark's AT line: {}", show(reply)));
    let space = rest.iter().position(|&b| b == b' ').expect("fields");
    let (delta, tail) = rest.split_at(space);
    let want = [&b" "[..], client, b" ", location, b" ", time].concat();
    assert_eq!(show(tail), show(&want), "echoed fields of {}", show(reply));
    let (sign, magnitude) = delta.split_first().expect("a difference");
    let (int, frac) = magnitude
        .iter()
        .position(|&b| b == b'.')
        .map(|dot| (&magnitude[..dot], &magnitude[dot + 1..]))
        .unwrap_or_else(|| panic!("no point in {}", show(delta)));
    assert!(
        matches!(sign, b'+' | b'-')
            && !int.is_empty()
            && int.iter().all(u8::is_ascii_digit)
            && frac.len() == 9
            && frac.iter().all(u8::is_ascii_digit),
        "difference {} is not signed with nine fraction digits",
        show(delta)
    );
    let value = parse_time(magnitude);
    if *sign == b'-' {
        -value
    } else {
        value
    }
}

/// Sends an IAMAT and checks the reply's difference against this test's
/// clock read before sending and after the reply. Returns the AT line.
async fn iamat(c: &mut Client, client: &[u8], location: &[u8], time: &[u8]) -> Vec<u8> {
    let line = [&b"IAMAT "[..], client, b" ", location, b" ", time, b"\n"].concat();
    let before = now();
    c.send(&line).await;
    let reply = c.line().await.expect("an AT line");
    let after = now();
    let delta = at_delta(&reply, client, location, time);
    let sent = parse_time(time);
    assert!(
        before - sent <= delta && delta <= after - sent,
        "difference {delta} outside [{}, {}] for {}",
        before - sent,
        after - sent,
        show(&reply)
    );
    reply
}

/// Reads one WHATSAT reply: the AT line, then JSON up to the empty line.
async fn whatsat_reply(c: &mut Client) -> (Vec<u8>, Value) {
    let at = c.line().await.expect("AT line");
    let mut json = Vec::new();
    loop {
        let line = c.line().await.expect("JSON line");
        if line.is_empty() {
            break;
        }
        json.extend_from_slice(&line);
        json.push(b'\n');
    }
    let value =
        serde_json::from_slice(&json).unwrap_or_else(|e| panic!("bad JSON ({e}): {}", show(&json)));
    (at, value)
}

fn results(value: &Value) -> usize {
    value["results"].as_array().expect("results").len()
}

/// Reads until the stream ends with `suffix`.
async fn read_until_suffix(c: &mut Client, suffix: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    let read = async {
        while !buf.ends_with(suffix) {
            let n = c.reader.read_until(b'\n', &mut buf).await.unwrap();
            assert!(
                n > 0,
                "stream ended before {}: {}",
                show(suffix),
                show(&buf)
            );
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("replies in time");
    buf
}

/// Waits until `rx` shows at least `n`.
async fn at_least(rx: &watch::Receiver<usize>, n: usize) {
    let mut rx = rx.clone();
    tokio::time::timeout(PATIENCE, rx.wait_for(|&v| v >= n))
        .await
        .unwrap_or_else(|_| panic!("never reached {n}"))
        .unwrap();
}

/// Counts of a [`Gated`] backend, shared with the test.
#[derive(Default)]
struct Counts {
    /// Searches in flight and the most ever in flight at once, by `bound`
    /// (tests give each connection its own bound to tell them apart).
    in_flight: HashMap<usize, usize>,
    peak: HashMap<usize, usize>,
}

/// Places whose searches wait for the test's permit when `hold` says so,
/// then answer like `EchoPlaces`; it counts searches started, finished and
/// in flight.
#[derive(Clone)]
struct Gated(Arc<GateState>);

struct GateState {
    hold: fn(&Query) -> bool,
    gate: Semaphore,
    started: watch::Sender<usize>,
    finished: watch::Sender<usize>,
    counts: Mutex<Counts>,
}

impl Gated {
    fn new(hold: fn(&Query) -> bool) -> Gated {
        Gated(Arc::new(GateState {
            hold,
            gate: Semaphore::new(0),
            started: watch::Sender::new(0),
            finished: watch::Sender::new(0),
            counts: Mutex::default(),
        }))
    }

    /// Lets `n` held searches go on.
    fn release(&self, n: usize) {
        self.0.gate.add_permits(n);
    }

    fn started(&self) -> watch::Receiver<usize> {
        self.0.started.subscribe()
    }

    fn finished(&self) -> watch::Receiver<usize> {
        self.0.finished.subscribe()
    }

    fn peak(&self, bound: usize) -> usize {
        self.0
            .counts
            .lock()
            .unwrap()
            .peak
            .get(&bound)
            .copied()
            .unwrap_or(0)
    }
}

impl Places for Gated {
    fn nearby(&self, q: Query) -> BoxFuture<'static, Result<Value, PlacesError>> {
        let this = self.0.clone();
        Box::pin(async move {
            {
                let mut counts = this.counts.lock().unwrap();
                let now = counts.in_flight.entry(q.bound).or_default();
                *now += 1;
                let now = *now;
                let peak = counts.peak.entry(q.bound).or_default();
                *peak = (*peak).max(now);
            }
            this.started.send_modify(|n| *n += 1);
            if (this.hold)(&q) {
                this.gate.acquire().await.unwrap().forget();
            }
            *this
                .counts
                .lock()
                .unwrap()
                .in_flight
                .get_mut(&q.bound)
                .unwrap() -= 1;
            this.finished.send_modify(|n| *n += 1);
            let results: Vec<Value> = (0..25)
                .map(|i| json!({"name": format!("place {i}"), "lat": q.lat, "lng": q.lon}))
                .collect();
            Ok(json!({"html_attributions": [], "results": results, "status": "OK"}))
        })
    }
}

#[tokio::test]
async fn iamat_is_answered_with_the_exact_time_difference_and_the_fields_as_sent() {
    let clark = Clark::start("").await;
    let mut c = clark.connect().await;
    let recent = time_text(now() - 1_500_000_000);
    for (client, location, time) in [
        ("kiwi.cs.ucla.edu", "+34.068930-118.445127", recent.as_str()),
        ("kiwi2", "+34.068930-118.445127", "1621464827.959498503"),
        ("a", "+34-118", "1621464827"),
        ("b", "+90-180", "1621464827.5"),
        ("c", "-90.000+180.0", "0001621464827.000000001"),
        ("d", "-0.5+0.25", "0"),
    ] {
        let reply = iamat(
            &mut c,
            client.as_bytes(),
            location.as_bytes(),
            time.as_bytes(),
        )
        .await;
        assert!(reply.starts_with(b"AT Clark +"), "{}", show(&reply));
        let stored = clark.hub().lookup(client.as_bytes()).expect("stored");
        assert_eq!(show(stored.line()), show(&reply));
    }
    clark.shutdown().await;
}

#[tokio::test]
async fn a_client_clock_ahead_within_the_skew_bound_gives_a_negative_difference() {
    let clark = Clark::start("[limits]\nmax_clock_skew = \"10s\"\n").await;
    let mut c = clark.connect().await;
    let ahead = time_text(now() + 2 * NANOS);
    let reply = iamat(&mut c, b"early", b"+1+1", ahead.as_bytes()).await;
    assert!(reply.starts_with(b"AT Clark -1."), "{}", show(&reply));
    clark.shutdown().await;
}

#[tokio::test]
async fn a_time_beyond_the_skew_bound_is_refused_and_stores_nothing() {
    let clark = Clark::start("[limits]\nmax_clock_skew = \"10s\"\n").await;
    let mut c = clark.connect().await;
    let far = time_text(now() + 60 * NANOS);
    let line = format!("IAMAT future +1+1 {far}");
    assert_eq!(c.ask(&line).await, format!("? {line}"));
    assert!(clark.hub().lookup(b"future").is_none());
    assert_eq!(
        c.ask("WHATSAT future 10 5").await,
        "? WHATSAT future 10 5",
        "a refused report is not known"
    );
    clark.shutdown().await;
}

#[tokio::test]
async fn fields_are_separated_by_any_protocol_white_space() {
    let clark = Clark::start("").await;
    let mut c = clark.connect().await;
    let t = time_text(now());
    let (before, sent) = (now(), parse_time(t.as_bytes()));
    // Leading and trailing white space of every kind, VT and FF between
    // fields, a CR LF line end.
    c.send(format!("\x0b\x0c \tIAMAT\x0bk1\x0c+1+1\r{t} \t\x0b\x0c\r\n").as_bytes())
        .await;
    let reply = c.line().await.unwrap();
    let delta = at_delta(&reply, b"k1", b"+1+1", t.as_bytes());
    assert!(before - sent <= delta && delta <= now() - sent);

    c.send(format!("IAMAT\x0bk2\x0b+1+1\x0b{t}\n").as_bytes())
        .await;
    let reply = c.line().await.unwrap();
    at_delta(&reply, b"k2", b"+1+1", t.as_bytes());

    c.send(b"\t WHATSAT\x0bk1\x0c10\r5\x0b\r\n").await;
    let (at, value) = whatsat_reply(&mut c).await;
    assert_eq!(&at[..], clark.hub().lookup(b"k1").unwrap().line());
    assert_eq!(results(&value), 5);
    clark.shutdown().await;
}

#[tokio::test]
async fn a_line_of_only_white_space_gets_no_reply() {
    let clark = Clark::start("").await;
    let mut c = clark.connect().await;
    // Replies come in request order, so if any blank line were answered its
    // reply would come before the one to `next`.
    c.send(b"\n \n\t\x0b\x0c\r\n\r\n\x0b\nnext\n").await;
    assert_eq!(c.line().await.unwrap(), b"? next");
    // A blank last line without LF: no reply, just the end of the stream.
    c.send(b" \t\x0b\x0c\r").await;
    c.writer.shutdown().await.unwrap();
    assert_eq!(c.line().await, None);
    clark.shutdown().await;
}

#[tokio::test]
async fn anything_else_is_echoed_after_a_question_mark_exactly_as_received() {
    let clark = Clark::start("").await;
    let mut c = clark.connect().await;
    let t = time_text(now());
    let known = iamat(&mut c, b"k", b"+1+1", t.as_bytes()).await;

    let bad: &[&[u8]] = &[
        b"hello",
        b"  IAMAT   k  +1+1 ",
        b"HELLO world   with\tspaces",
        // Case, field count, propagation from a client.
        b"iamat k +1+1 1",
        b"Iamat k +1+1 1",
        b"IAMAT k +1+1 1 extra",
        b"IAMAT k +1+1",
        b"IAMAT",
        b"WHATSAT",
        b"WHATSAT k 10",
        b"WHATSAT k 10 5 extra",
        b"whatsat k 10 5",
        b"AT Clark +0.000000001 k +1+1 1",
        b"AT",
        b"IAMAT\x00 k +1+1 1",
        // Locations.
        b"IAMAT k 1+1 1",
        b"IAMAT k +1 1",
        b"IAMAT k +91+0 1",
        b"IAMAT k +90.0000001+0 1",
        b"IAMAT k +0+181 1",
        b"IAMAT k -0-180.01 1",
        b"IAMAT k +1.+1 1",
        b"IAMAT k +.5+1 1",
        b"IAMAT k ++1+1 1",
        b"IAMAT k +1+1+1 1",
        b"IAMAT k +a+1 1",
        b"IAMAT k +1,5+1 1",
        // Times.
        b"IAMAT k +1+1 -1",
        b"IAMAT k +1+1 +1",
        b"IAMAT k +1+1 1.0000000001",
        b"IAMAT k +1+1 1e9",
        b"IAMAT k +1+1 1.",
        b"IAMAT k +1+1 .5",
        b"IAMAT k +1+1 1.2.3",
        b"IAMAT k +1+1 99999999999999999999999",
        // Radius.
        b"WHATSAT k 0 5",
        b"WHATSAT k 0.000 5",
        b"WHATSAT k 50.001 5",
        b"WHATSAT k 51 5",
        b"WHATSAT k -1 5",
        b"WHATSAT k +1 5",
        b"WHATSAT k 1e1 5",
        b"WHATSAT k .5 5",
        b"WHATSAT k 10. 5",
        b"WHATSAT k ten 5",
        // Bound.
        b"WHATSAT k 10 0",
        b"WHATSAT k 10 21",
        b"WHATSAT k 10 100",
        b"WHATSAT k 10 5.0",
        b"WHATSAT k 10 +5",
        b"WHATSAT k 10 -5",
        // A client this node does not know.
        b"WHATSAT nobody 10 5",
        // Bytes that are not text, and CRs that are not a line end.
        b"\xff\xfe\x00junk\x01",
        b"caf\xc3\xa9 \xf0\x9f\xa6\x80",
        b"a\rb",
        b"\x7f\x1b[31m",
    ];
    // All in one write, some ending CR LF; the CR of a CR LF end is not
    // echoed, an extra CR before it is.
    let mut batch = Vec::new();
    let mut want = Vec::new();
    for (i, line) in bad.iter().enumerate() {
        batch.extend_from_slice(line);
        batch.extend_from_slice(if i % 2 == 0 { b"\n" } else { b"\r\n" });
        want.push([b"? ", *line].concat());
    }
    batch.extend_from_slice(b"cr\r\r\n");
    want.push(b"? cr\r".to_vec());
    c.send(&batch).await;
    for want in want {
        assert_eq!(show(&c.line().await.expect("a reply")), show(&want));
    }
    // None of it changed what the node knows.
    assert_eq!(clark.hub().len(), 1);
    assert_eq!(show(clark.hub().lookup(b"k").unwrap().line()), show(&known));
    clark.shutdown().await;
}

#[tokio::test]
async fn client_ids_of_any_bytes_are_echoed_byte_for_byte() {
    let clark = Clark::start("").await;
    let mut c = clark.connect().await;
    let t = time_text(now());
    let ids: &[&[u8]] = &[
        "🦀🐑".as_bytes(),
        b"\xff\xfe\x80",
        b"\xff\xfe\x81",
        b"caf\xc3\xa9",
        b"\x00\x01\x7f",
        b"\xf0\x9f\xa6",
    ];
    let mut lines = Vec::new();
    for id in ids {
        lines.push(iamat(&mut c, id, b"+1+1", t.as_bytes()).await);
    }
    // Distinct bytes are distinct clients, however invalid as text.
    assert_eq!(clark.hub().len(), ids.len());
    for (id, line) in ids.iter().zip(&lines) {
        c.send(&[&b"WHATSAT "[..], id, b" 10 2\n"].concat()).await;
        let (at, value) = whatsat_reply(&mut c).await;
        assert_eq!(show(&at), show(line));
        assert_eq!(results(&value), 2);
    }
    clark.shutdown().await;
}

#[tokio::test]
async fn whatsat_replies_are_the_stored_line_then_json_then_exactly_two_lfs() {
    let clark = Clark::start("").await;
    let mut c = clark.connect().await;
    let t = time_text(now());
    let at = iamat(&mut c, b"kiwi", b"+34.068930-118.445127", t.as_bytes()).await;

    let asks = [("10", 5), ("50", 20), ("0.001", 1), ("50.000", 19)];
    let mut batch = String::new();
    for (radius, bound) in asks {
        batch += &format!("WHATSAT kiwi {radius} {bound}\n");
    }
    batch += "sentinel\n";
    c.send(batch.as_bytes()).await;
    // Read the raw bytes so that a stray LF anywhere would show.
    let raw = read_until_suffix(&mut c, b"? sentinel\n").await;
    let mut rest = &raw[..raw.len() - b"? sentinel\n".len()];
    for (radius, bound) in asks {
        let lf = rest.iter().position(|&b| b == b'\n').expect("AT line");
        assert_eq!(show(&rest[..lf]), show(&at));
        rest = &rest[lf + 1..];
        let end = rest
            .windows(2)
            .position(|w| w == b"\n\n")
            .expect("two LFs end the reply");
        let json = &rest[..end];
        rest = &rest[end + 2..];
        // The JSON has no empty line (the first LF LF ends it) and no
        // trailing LF (else the next reply would start with one).
        assert!(!json.ends_with(b"\n") && !json.is_empty());
        let value: Value = serde_json::from_slice(json).unwrap();
        assert_eq!(value["status"], "OK");
        assert!(value["html_attributions"].is_array());
        assert_eq!(results(&value), bound, "at most bound results");
        let first = &value["results"][0];
        assert_eq!(first["lat"], 34.06893);
        assert_eq!(first["lng"], -118.445127);
        let metres: f64 = radius.parse::<f64>().unwrap() * 1000.0;
        assert!((first["radius"].as_f64().unwrap() - metres).abs() < 1e-6);
        if !rest.is_empty() {
            assert!(rest.starts_with(b"AT "), "next reply: {}", show(rest));
        }
    }
    assert!(rest.is_empty(), "left over: {}", show(rest));
    clark.shutdown().await;
}

#[tokio::test]
async fn a_newer_iamat_replaces_the_stored_line_and_a_stale_one_changes_nothing() {
    let clark = Clark::start("").await;
    let mut c = clark.connect().await;
    let base = now();
    let (t0, t1, t2) = (
        time_text(base - 20 * NANOS),
        time_text(base - 10 * NANOS),
        time_text(base - 5 * NANOS),
    );

    let at1 = iamat(&mut c, b"k", b"+10+10", t1.as_bytes()).await;
    c.send(b"WHATSAT k 10 1\n").await;
    let (at, value) = whatsat_reply(&mut c).await;
    assert_eq!(show(&at), show(&at1));
    assert_eq!(value["results"][0]["lat"], 10.0);

    let at2 = iamat(&mut c, b"k", b"+20+20", t2.as_bytes()).await;
    assert_ne!(at1, at2);
    c.send(b"WHATSAT k 10 1\n").await;
    let (at, value) = whatsat_reply(&mut c).await;
    assert_eq!(show(&at), show(&at2));
    assert_eq!(value["results"][0]["lat"], 20.0);

    // Older: answered with the line that beat it, and nothing changes.
    let stale = format!("IAMAT k +30+30 {t0}");
    assert_eq!(c.ask(&stale).await.as_bytes(), &at2[..]);
    c.send(b"WHATSAT k 10 1\n").await;
    let (at, value) = whatsat_reply(&mut c).await;
    assert_eq!(show(&at), show(&at2));
    assert_eq!(value["results"][0]["lat"], 20.0);
    assert_eq!(clark.hub().len(), 1);

    // Equal time: whichever wins the tie, the reply is what is stored.
    let tie = c.ask(&format!("IAMAT k +40+40 {t2}")).await;
    let stored = clark.hub().lookup(b"k").unwrap();
    assert_eq!(tie.as_bytes(), stored.line());
    c.send(b"WHATSAT k 10 1\n").await;
    let (at, _) = whatsat_reply(&mut c).await;
    assert_eq!(tie.as_bytes(), &at[..]);
    clark.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_replies_keep_request_order_when_later_ones_are_ready_first() {
    // The search for bound 1 waits for the test; the others answer at once.
    let places = Gated::new(|q| q.bound == 1);
    let clark = Clark::start_with("", Arc::new(places.clone())).await;
    let mut c = clark.connect().await;
    let (ta, tb, ta2) = (
        time_text(now() - 3 * NANOS),
        time_text(now() - 2 * NANOS),
        time_text(now() - NANOS),
    );
    let batch = format!(
        "IAMAT a +1+1 {ta}\n\
         WHATSAT a 10 1\n\
         IAMAT b +2+2 {tb}\n\
         WHATSAT b 10 2\n\
         junk\n\
         \n\
         WHATSAT a 10 3\n\
         WHATSAT nobody 10 4\n\
         IAMAT a +3+3 {ta2}\r\n"
    );
    c.send(batch.as_bytes()).await;
    // Every line is read and the two quick searches are done while the
    // first search is still held.
    until(clark.hub(), |hub| {
        hub.lookup(b"a")
            .is_some_and(|r| r.line().ends_with(ta2.as_bytes()))
    })
    .await;
    at_least(&places.finished(), 2).await;
    assert_eq!(*places.finished().borrow(), 2, "the first search is held");
    places.release(1);

    let at_a = c.line().await.unwrap();
    at_delta(&at_a, b"a", b"+1+1", ta.as_bytes());
    let (at, value) = whatsat_reply(&mut c).await;
    assert_eq!((show(&at), results(&value)), (show(&at_a), 1));
    let at_b = c.line().await.unwrap();
    at_delta(&at_b, b"b", b"+2+2", tb.as_bytes());
    let (at, value) = whatsat_reply(&mut c).await;
    assert_eq!((show(&at), results(&value)), (show(&at_b), 2));
    assert_eq!(c.line().await.unwrap(), b"? junk");
    // Asked before the newer IAMAT, so answered about the older report.
    let (at, value) = whatsat_reply(&mut c).await;
    assert_eq!((show(&at), results(&value)), (show(&at_a), 3));
    assert_eq!(c.line().await.unwrap(), b"? WHATSAT nobody 10 4");
    let at_a2 = c.line().await.unwrap();
    at_delta(&at_a2, b"a", b"+3+3", ta2.as_bytes());
    clark.shutdown().await;
}

#[tokio::test]
async fn a_ready_reply_is_sent_without_waiting_for_a_slow_search_behind_it() {
    let places = Gated::new(|_| true);
    // The node's own places timeout is out of the way: only the test ends
    // the search.
    let clark = Clark::start_with("[places]\ntimeout = \"60s\"\n", Arc::new(places.clone())).await;
    let t = time_text(now());
    let mut c = clark.connect().await;
    // In one write, so the search is queued behind the IAMAT reply before
    // that reply is written.
    c.send(format!("IAMAT a +1+1 {t}\nWHATSAT a 10 2\n").as_bytes())
        .await;
    at_least(&places.started(), 1).await;
    // The search is held; the IAMAT reply before it is ready and must not
    // sit in the node's buffer until the search ends. (The bound only
    // turns a hang into a failure; a correct node answers in milliseconds.)
    let at = tokio::time::timeout(Duration::from_secs(3), c.line())
        .await
        .expect("the IAMAT reply arrives while the search behind it is held")
        .expect("an AT line");
    at_delta(&at, b"a", b"+1+1", t.as_bytes());
    assert_eq!(*places.finished().borrow(), 0);
    places.release(1);
    let (got, value) = whatsat_reply(&mut c).await;
    assert_eq!((show(&got), results(&value)), (show(&at), 2));
    clark.shutdown().await;
}

#[tokio::test]
async fn the_last_line_without_lf_is_answered_before_the_connection_closes() {
    let clark = Clark::start("").await;
    let t = time_text(now());

    let mut c = clark.connect().await;
    c.send(format!("IAMAT k +1+1 {t}").as_bytes()).await;
    c.writer.shutdown().await.unwrap();
    let at = c.line().await.expect("the AT reply");
    at_delta(&at, b"k", b"+1+1", t.as_bytes());
    assert_eq!(c.line().await, None);

    let mut c = clark.connect().await;
    c.send(b"WHATSAT k 10 2").await;
    c.writer.shutdown().await.unwrap();
    let (got, value) = whatsat_reply(&mut c).await;
    assert_eq!((show(&got), results(&value)), (show(&at), 2));
    assert_eq!(c.line().await, None);

    let mut c = clark.connect().await;
    c.send(b"first\nlast words").await;
    c.writer.shutdown().await.unwrap();
    assert_eq!(c.line().await.unwrap(), b"? first");
    assert_eq!(c.line().await.unwrap(), b"? last words");
    assert_eq!(c.line().await, None);
    clark.shutdown().await;
}

#[tokio::test]
async fn a_line_over_max_line_gets_one_cut_reply_and_closes_only_its_connection() {
    let clark = Clark::start("[limits]\nmax_line = 64\n").await;
    let t = time_text(now());
    let mut other = clark.connect().await;
    iamat(&mut other, b"other", b"+1+1", t.as_bytes()).await;

    // Exactly at the limit: an ordinary request.
    let mut c = clark.connect().await;
    let fill = 64 - format!("IAMAT  +1+1 {t}").len();
    let id = "i".repeat(fill);
    iamat(&mut c, id.as_bytes(), b"+1+1", t.as_bytes()).await;

    // One byte over, with its LF: cut at the limit, then closed.
    let long = format!("IAMAT {}x +1+1 {t}", id);
    assert_eq!(long.len(), 65);
    c.send(format!("{long}\n").as_bytes()).await;
    assert_eq!(
        show(&c.line().await.unwrap()),
        show(&[b"? ", &long.as_bytes()[..64]].concat())
    );
    assert_eq!(c.line().await, None);

    // Over the limit before any LF arrives: the same.
    let mut c = clark.connect().await;
    let long = "y".repeat(100);
    c.send(long.as_bytes()).await;
    assert_eq!(
        c.line().await.unwrap(),
        format!("? {}", &long[..64]).into_bytes()
    );
    assert_eq!(c.line().await, None);

    // The other client noticed nothing, and new ones are served.
    iamat(&mut other, b"other", b"+2+2", time_text(now()).as_bytes()).await;
    other.send(b"WHATSAT other 10 3\n").await;
    assert_eq!(results(&whatsat_reply(&mut other).await.1), 3);
    let mut late = clark.connect().await;
    iamat(&mut late, b"late", b"+1+1", t.as_bytes()).await;
    clark.shutdown().await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_idle_timeout_and_a_busy_one_is_not() {
    let clark = Clark::start("[limits]\nidle_timeout = \"300ms\"\n").await;
    let idle = Duration::from_millis(300);
    let t = time_text(now());
    let mut busy = clark.connect().await;
    let opened = Instant::now();
    let mut silent = clark.connect().await;
    iamat(&mut silent, b"silent", b"+1+1", t.as_bytes()).await;
    let last_heard = Instant::now();

    // The busy client paces its requests well inside the idle time while
    // the silent one waits for the node to hang up.
    let busy_task = async {
        let mut pace = tokio::time::interval(idle / 3);
        for _ in 0..9 {
            pace.tick().await;
            iamat(&mut busy, b"busy", b"+1+1", time_text(now()).as_bytes()).await;
        }
    };
    let silent_task = async {
        assert_eq!(silent.line().await, None, "closed, without a reply");
        last_heard.elapsed()
    };
    let ((), silent_for) = tokio::join!(busy_task, silent_task);
    assert!(silent_for >= idle / 2, "closed after only {silent_for:?}");
    assert!(
        opened.elapsed() > 2 * idle,
        "the busy connection lived {:?}",
        opened.elapsed()
    );
    iamat(&mut busy, b"busy", b"+1+1", time_text(now()).as_bytes()).await;
    clark.shutdown().await;
}

#[tokio::test]
async fn beyond_max_connections_a_client_is_served_only_once_a_slot_frees() {
    let clark = Clark::start("[limits]\nmax_connections = 2\n").await;
    let t = time_text(now());
    let mut first = clark.connect().await;
    let mut second = clark.connect().await;
    iamat(&mut first, b"first", b"+1+1", t.as_bytes()).await;
    iamat(&mut second, b"second", b"+1+1", t.as_bytes()).await;

    // The kernel completes the third handshake; the node does not take it.
    let mut third = clark.connect().await;
    let third_time = time_text(now());
    third
        .send(format!("IAMAT third +1+1 {third_time}\n").as_bytes())
        .await;
    // A round trip on an open connection: the node is busy serving, yet has
    // not read the third client's request.
    iamat(&mut second, b"second", b"+2+2", time_text(now()).as_bytes()).await;
    assert!(clark.hub().lookup(b"third").is_none());

    let freed_at = now();
    drop(first);
    let reply = third.line().await.expect("served once a slot is free");
    // The AT line says when the node received the request: only after the
    // first connection was closed.
    let delta = at_delta(&reply, b"third", b"+1+1", third_time.as_bytes());
    let received = parse_time(third_time.as_bytes()) + delta;
    assert!(
        received >= freed_at,
        "received {}ns before the slot was freed",
        freed_at - received
    );
    third.send(b"WHATSAT third 10 1\n").await;
    assert_eq!(show(&whatsat_reply(&mut third).await.0), show(&reply));
    clark.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_never_has_more_than_whatsat_in_flight_searches() {
    let places = Gated::new(|_| true);
    let clark = Clark::start_with(
        "[limits]\nwhatsat_in_flight = 2\n",
        Arc::new(places.clone()),
    )
    .await;
    let t = time_text(now());
    let mut a = clark.connect().await;
    let at_a = iamat(&mut a, b"a", b"+1+1", t.as_bytes()).await;
    // Six searches at once (bound 3 marks this connection's).
    a.send("WHATSAT a 10 3\n".repeat(6).as_bytes()).await;
    at_least(&places.started(), 2).await;

    // The limit is per connection: another client's search starts too, and
    // its IAMAT is answered meanwhile.
    let mut b = clark.connect().await;
    let at_b = iamat(&mut b, b"b", b"+2+2", t.as_bytes()).await;
    b.send(b"WHATSAT b 10 7\n").await;
    at_least(&places.started(), 3).await;

    // Let the searches go one at a time; each freed slot lets one more of
    // the first connection's searches start.
    for done in 1..=7 {
        places.release(1);
        at_least(&places.finished(), done).await;
    }
    for _ in 0..6 {
        let (at, value) = whatsat_reply(&mut a).await;
        assert_eq!((show(&at), results(&value)), (show(&at_a), 3));
    }
    let (at, value) = whatsat_reply(&mut b).await;
    assert_eq!((show(&at), results(&value)), (show(&at_b), 7));
    assert_eq!(places.peak(3), 2, "the first connection's searches at once");
    assert_eq!(places.peak(7), 1);
    clark.shutdown().await;
}

#[tokio::test]
async fn a_slow_places_backend_does_not_delay_iamat_replies_to_other_clients() {
    let places = Gated::new(|_| true);
    let clark = Clark::start_with("", Arc::new(places.clone())).await;
    let (t1, t2) = (time_text(now() - NANOS), time_text(now()));
    let mut slow = clark.connect().await;
    let at1 = iamat(&mut slow, b"slow", b"+1+1", t1.as_bytes()).await;
    slow.send(format!("WHATSAT slow 10 4\nIAMAT slow +2+2 {t2}\n").as_bytes())
        .await;
    at_least(&places.started(), 1).await;
    // The IAMAT behind the held search is already in effect; only its reply
    // waits its turn.
    until(clark.hub(), |hub| {
        hub.lookup(b"slow")
            .is_some_and(|r| r.line().ends_with(t2.as_bytes()))
    })
    .await;

    let mut other = clark.connect().await;
    for i in 0..3 {
        let id = format!("other{i}");
        iamat(&mut other, id.as_bytes(), b"+3+3", t2.as_bytes()).await;
    }
    let mut another = clark.connect().await;
    iamat(&mut another, b"another", b"+3+3", t2.as_bytes()).await;
    assert_eq!(*places.finished().borrow(), 0, "the search is still held");

    places.release(1);
    let (at, value) = whatsat_reply(&mut slow).await;
    assert_eq!((show(&at), results(&value)), (show(&at1), 4));
    at_delta(&slow.line().await.unwrap(), b"slow", b"+2+2", t2.as_bytes());
    clark.shutdown().await;
}

/// Places that fail in a different way for each `bound`.
struct Failing;

impl Places for Failing {
    fn nearby(&self, q: Query) -> BoxFuture<'static, Result<Value, PlacesError>> {
        let answer = match q.bound {
            1 => Err(PlacesError::new(Status::OverQueryLimit, "slow down")),
            2 => Err(PlacesError::new(Status::RequestDenied, "bad key")),
            3 => Err(PlacesError::new(Status::InvalidRequest, "no")),
            4 => Err(PlacesError::new(Status::UnknownError, "oops")),
            5 => Ok(json!(["not", "an", "object"])),
            6 => Ok(json!({
                "html_attributions": [], "status": "OK", "next_page_token": "more",
                "results": (0..9).map(|i| json!({"name": i})).collect::<Vec<_>>(),
            })),
            _ => return Box::pin(std::future::pending()),
        };
        Box::pin(async move { answer })
    }
}

#[tokio::test]
async fn a_failing_or_silent_places_backend_still_gives_the_one_reply_shape() {
    let clark = Clark::start_with("[places]\ntimeout = \"200ms\"\n", Arc::new(Failing)).await;
    let mut c = clark.connect().await;
    let at = iamat(&mut c, b"k", b"+1+1", time_text(now()).as_bytes()).await;
    let mut batch = String::new();
    for bound in 1..=7 {
        batch += &format!("WHATSAT k 10 {bound}\n");
    }
    batch += "sentinel\n";
    c.send(batch.as_bytes()).await;
    let mut replies = Vec::new();
    for _ in 1..=7 {
        let (got, value) = whatsat_reply(&mut c).await;
        assert_eq!(show(&got), show(&at));
        assert_eq!(value["html_attributions"], json!([]), "{value}");
        assert!(value["results"].is_array(), "{value}");
        replies.push(value);
    }
    assert_eq!(c.line().await.unwrap(), b"? sentinel");
    let status: Vec<&str> = replies
        .iter()
        .map(|v| v["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        status,
        [
            "OVER_QUERY_LIMIT",
            "REQUEST_DENIED",
            "INVALID_REQUEST",
            "UNKNOWN_ERROR",
            "UNKNOWN_ERROR",
            "OK",
            "UNKNOWN_ERROR"
        ]
    );
    for (i, v) in replies.iter().enumerate() {
        if v["status"] == "OK" {
            assert_eq!(v["next_page_token"], "more");
            assert_eq!(results(v), 6, "cut to the bound");
            assert!(v.get("error_message").is_none());
        } else {
            assert_eq!(results(v), 0);
            let message = v["error_message"].as_str().unwrap_or_default();
            assert!(!message.is_empty(), "reply {i}: {v}");
        }
    }
    assert_eq!(replies[0]["error_message"], "slow down");
    // The node goes on serving.
    iamat(&mut c, b"k", b"+2+2", time_text(now()).as_bytes()).await;
    clark.shutdown().await;
}

/// The most a Linux TCP send buffer grows to by autotuning.
fn kernel_send_buffer_max() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_stops_being_read_and_others_are_served() {
    const LINES: usize = 300_000;
    const CHUNK: usize = 1_000;
    const RECV_BUFFER: usize = 64 * 1024;
    let clark = Clark::start("[limits]\nidle_timeout = \"1s\"\n").await;
    let t = time_text(now());
    // Long client IDs make long replies, so the socket buffers between the
    // node and the client hold few of them.
    let id = |n: usize| format!("client-{n:0>100}");

    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(RECV_BUFFER as u32).unwrap();
    let stream = socket.connect(clark.addr()).await.unwrap();
    let (reader, mut writer) = stream.into_split();
    let (progress, written) = watch::channel(0usize);
    let flood_time = t.clone();
    let flood = tokio::spawn(async move {
        for chunk in 0..LINES / CHUNK {
            let mut batch = String::new();
            for i in 0..CHUNK {
                batch += &format!("IAMAT {} +1+1 {flood_time}\n", id(chunk * CHUNK + i));
            }
            writer.write_all(batch.as_bytes()).await?;
            progress.send_replace((chunk + 1) * CHUNK);
        }
        Ok::<_, std::io::Error>(writer)
    });
    // The flood is under way...
    until(clark.hub(), |hub| hub.len() >= 1_000).await;

    // ...and another client is served meanwhile.
    let started = Instant::now();
    let mut other = clark.connect().await;
    let at = iamat(&mut other, b"other", b"+1+1", t.as_bytes()).await;
    other.send(b"WHATSAT other 10 2\n").await;
    assert_eq!(show(&whatsat_reply(&mut other).await.0), show(&at));
    let served_in = started.elapsed();

    // The node stops reading once the replies it owes fill its queue and
    // the socket buffers; after the idle time with no byte moving it hangs
    // up, so the writer fails instead of getting everything in.
    let outcome = tokio::time::timeout(PATIENCE, flood)
        .await
        .expect("the node stopped reading and gave up on the client")
        .unwrap();
    assert!(outcome.is_err(), "all {LINES} lines were accepted");
    let written = *written.borrow();
    assert!(written < LINES, "wrote {written} lines");

    // Every request the node read is a reply it owed: held in its bounded
    // queue, its write buffer, or the two sockets' kernel buffers (the
    // node's send buffer at most its autotuning cap plus a segment, ours at
    // most twice what we set). Nothing else piled up.
    let stored = clark.hub().len() - 1;
    let reply_len = format!("AT Clark +0.000000000 {} +1+1 {t}\n", id(0)).len();
    let (write_buffer, segment) = (16 * 1024, 64 * 1024);
    let buffers = write_buffer + kernel_send_buffer_max() + segment + 2 * RECV_BUFFER;
    let bound = herd::config::Limits::default().pipeline + 2 + buffers / reply_len;
    assert!(
        stored <= bound,
        "stored {stored} reports (wrote {written} lines): more than the {bound} replies \
         the queue and buffers can hold"
    );
    assert!(bound < LINES / 5, "the bound {bound} proves little");
    assert!(
        served_in < Duration::from_secs(5),
        "the other client waited {served_in:?}"
    );
    eprintln!("never-reader: wrote {written} lines, node stored {stored} (bound {bound}), other served in {served_in:?}");
    drop(reader);
    // (The other client idled out meanwhile; a new one is served.)
    let mut other = clark.connect().await;
    iamat(&mut other, b"other", b"+2+2", time_text(now()).as_bytes()).await;
    clark.shutdown().await;
}

#[tokio::test]
async fn after_shutdown_replies_already_owed_are_delivered() {
    let places = Gated::new(|_| true);
    let clark = Clark::start_with("", Arc::new(places.clone())).await;
    let (ta, tb) = (time_text(now() - NANOS), time_text(now()));
    let mut c = clark.connect().await;
    c.send(format!("IAMAT a +1+1 {ta}\nWHATSAT a 10 5\nIAMAT b +2+2 {tb}\n").as_bytes())
        .await;
    at_least(&places.started(), 1).await;
    until(clark.hub(), |hub| hub.lookup(b"b").is_some()).await;

    let Clark { _dir, node } = clark;
    let node = node.unwrap();
    let stopping = node.shutdown_token();
    let shutdown = tokio::spawn(node.shutdown());
    stopping.cancelled().await;
    // Shutting down: the held search now finishes, and every reply owed
    // still arrives, whole and in order.
    places.release(1);
    let at_a = c.line().await.unwrap();
    at_delta(&at_a, b"a", b"+1+1", ta.as_bytes());
    let (at, value) = whatsat_reply(&mut c).await;
    assert_eq!((show(&at), results(&value)), (show(&at_a), 5));
    at_delta(&c.line().await.unwrap(), b"b", b"+2+2", tb.as_bytes());
    assert_eq!(c.line().await, None);
    tokio::time::timeout(PATIENCE, shutdown)
        .await
        .expect("shutdown ends")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_amid_a_pipelined_stream_every_reply_written_arrives() {
    // A client still sending when the node stops reading, and reading its
    // replies through a small window, so that some of what the node wrote
    // waits in its socket when it is done writing. Closing a socket with
    // input unread resets the connection and throws that away.
    const LINES: usize = 20_000;
    // Long IDs make long replies: more of what the node owes is in flight.
    let id = |n: usize| format!("stream-{n:0>100}");
    let clark = Clark::start("").await;
    let t = time_text(now());
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(clark.addr()).await.unwrap();
    let (reader, mut writer) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(reader);
    let mut burst = Vec::new();
    for i in 0..LINES {
        burst.extend_from_slice(format!("IAMAT {} +1+1 {t}\n", id(i)).as_bytes());
    }
    let sending = tokio::spawn(async move {
        writer.write_all(&burst).await?;
        writer.shutdown().await
    });
    // Unread, the replies to a thousand requests fill our window, the
    // node's send buffer and its queue (of 1,024 by default).
    until(clark.hub(), |hub| hub.len() >= 1_000).await;

    let Clark { _dir, node } = clark;
    let node = node.unwrap();
    let stopping = node.shutdown_token();
    let shutdown = tokio::spawn(node.shutdown());
    stopping.cancelled().await;
    // Every reply up to the end of the stream, each the answer to the next
    // request in order, and then a clean end: no reset.
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).await.unwrap();
    let mut replies = 0;
    loop {
        assert!(line.starts_with(b"AT Clark "), "{}", show(&line));
        assert!(
            line.ends_with(format!(" {} +1+1 {t}\n", id(replies)).as_bytes()),
            "reply {replies}: {}",
            show(&line)
        );
        replies += 1;
        line.clear();
        let read = tokio::time::timeout(PATIENCE, reader.read_until(b'\n', &mut line))
            .await
            .expect("a reply or the end in time");
        match read {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => panic!("after {replies} replies: {e}"),
        }
    }
    eprintln!("shutdown amid a stream: {replies} replies, then the end");
    assert!(
        replies < LINES,
        "the node answered all {LINES} before stopping"
    );
    tokio::time::timeout(PATIENCE, shutdown)
        .await
        .expect("shutdown ends")
        .unwrap();
    // What the node did not read it dropped; the client could send it all.
    sending.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_pipelined_whatsats_are_all_answered_in_order() {
    // More searches than a task's cooperative budget lets it collect in
    // one go: each must still be answered, none dropped, in order.
    let clark = Clark::start("[limits]\nwhatsat_in_flight = 1024\n").await;
    let mut c = clark.connect().await;
    iamat(&mut c, b"k", b"+1+1", b"1").await;
    let n = 600;
    let mut batch = Vec::new();
    for i in 0..n {
        batch.extend_from_slice(format!("WHATSAT k 10 {}\n", 1 + i % 20).as_bytes());
    }
    c.send(&batch).await;
    for i in 0..n {
        let (at, value) = whatsat_reply(&mut c).await;
        assert!(at.starts_with(b"AT Clark "), "{}", show(&at));
        assert_eq!(results(&value), 1 + i % 20, "reply {i}");
    }
    clark.shutdown().await;
}
