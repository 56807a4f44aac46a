//! The benchmark's load generator: plain TCP, the client protocol only,
//! async and pipelining.
//!
//! Three kinds of load:
//! - [`closed_loop`]: `conns` connections each keeping `depth` IAMATs in
//!   flight for a fixed time; replies per second and the latency of every
//!   request, from the write that carried it to the read that brought its
//!   reply.
//! - [`send_updates`]: a fixed number of distinct clients sent as fast as
//!   pipelining allows, keeping the server's reply for a chosen sample.
//! - [`wait_visible`] and [`verify`]: WHATSAT on other nodes, to see when
//!   updates arrived and to check that they arrived intact.
//!
//! Every reply is checked: an IAMAT must be answered with an AT line that
//! names the expected server and carries the client's fields byte for byte.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio::time::{timeout, MissedTickBehavior};

/// Where every benchmark client says it is.
pub const LOCATION: &[u8] = b"+34.068930-118.445127";

/// Longest wait for any one read or write before the stage fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// The WHATSAT arguments for visibility checks: the smallest search.
const WHATSAT_ARGS: &[u8] = b" 0.001 1\n";

/// How long a load may wait for the replies it is owed after it stops.
const DRAIN: Duration = Duration::from_secs(30);

/// Client IDs reused per connection in closed-loop loads, so the table
/// stays small while every request still wins (its time is newer).
pub const IDS_PER_CONN: usize = 64;

/// Wall-clock nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn push_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// `SECS.NNNNNNNNN`, as a client sends its time.
pub fn push_time(buf: &mut Vec<u8>, ns: u64) {
    push_u64(buf, ns / 1_000_000_000);
    buf.push(b'.');
    let mut frac = ns % 1_000_000_000;
    let mut digits = [b'0'; 9];
    for d in digits.iter_mut().rev() {
        *d = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    buf.extend_from_slice(&digits);
}

/// The ID of update `index` of a burst tagged `tag`.
pub fn update_id(tag: &str, index: u64) -> Vec<u8> {
    let mut id = Vec::with_capacity(tag.len() + 12);
    push_id(&mut id, tag, index);
    id
}

fn push_id(buf: &mut Vec<u8>, tag: &str, index: u64) {
    buf.extend_from_slice(tag.as_bytes());
    buf.push(b'.');
    push_u64(buf, index);
}

/// Appends `IAMAT <id> <LOCATION> <time>\n`.
fn push_iamat(buf: &mut Vec<u8>, id: &[u8], time_ns: u64) {
    buf.extend_from_slice(b"IAMAT ");
    buf.extend_from_slice(id);
    buf.push(b' ');
    buf.extend_from_slice(LOCATION);
    buf.push(b' ');
    push_time(buf, time_ns);
    buf.push(b'\n');
}

/// The last three fields of the AT line that must answer an IAMAT.
fn push_tail(buf: &mut Vec<u8>, id: &[u8], time_ns: u64) {
    buf.extend_from_slice(id);
    buf.push(b' ');
    buf.extend_from_slice(LOCATION);
    buf.push(b' ');
    push_time(buf, time_ns);
}

/// Is `line` `AT <server> <delta> <tail>`, with a well-formed delta?
pub fn is_reply(line: &[u8], server: &[u8], tail: &[u8]) -> bool {
    let Some(rest) = line.strip_prefix(b"AT ") else {
        return false;
    };
    let Some(rest) = rest.strip_prefix(server) else {
        return false;
    };
    let Some(rest) = rest.strip_prefix(b" ") else {
        return false;
    };
    let Some(space) = rest.iter().position(|&b| b == b' ') else {
        return false;
    };
    herd::timestamp::parse_delta(&rest[..space]).is_some() && &rest[space + 1..] == tail
}

/// Half the bounds of a connection's requests: what was sent, in order.
#[derive(Clone, Copy)]
struct Sent {
    at: Instant,
    /// Index into the connection's IDs, or the update's global index.
    index: u64,
    time_ns: u64,
}

/// A client connection with a read buffer that yields whole lines.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes from `start` already searched for LF.
    scanned: usize,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Result<Conn> {
        let stream = timeout(IO_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow!("connecting to {addr} timed out"))?
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
            scanned: 0,
        })
    }

    pub async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        timeout(IO_TIMEOUT, self.stream.write_all(bytes))
            .await
            .map_err(|_| anyhow!("write timed out after {IO_TIMEOUT:?}"))?
            .context("write")
    }

    /// The next whole line already read (without its LF), as a range of
    /// [`Conn::bytes`].
    fn try_line(&mut self) -> Option<Range<usize>> {
        let from = self.start + self.scanned;
        match self.buf[from..self.end].iter().position(|&b| b == b'\n') {
            Some(pos) => {
                let line = self.start..from + pos;
                self.start = from + pos + 1;
                self.scanned = 0;
                Some(line)
            }
            None => {
                self.scanned = self.end - self.start;
                None
            }
        }
    }

    fn bytes(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// Reads more; fails on end of stream or after [`IO_TIMEOUT`].
    async fn fill(&mut self) -> Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let len = self.buf.len();
                self.buf.resize(len * 2, 0);
            }
        }
        let n = timeout(IO_TIMEOUT, self.stream.read(&mut self.buf[self.end..]))
            .await
            .map_err(|_| anyhow!("no reply within {IO_TIMEOUT:?}"))?
            .context("read")?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        self.end += n;
        Ok(())
    }

    /// The next line, reading as needed.
    async fn line(&mut self) -> Result<Range<usize>> {
        loop {
            if let Some(line) = self.try_line() {
                return Ok(line);
            }
            self.fill().await?;
        }
    }

    /// Reads one WHATSAT reply: the AT line if the client is known, None if
    /// the node answered `? ` (unknown here).
    async fn whatsat_reply(&mut self) -> Result<Option<Vec<u8>>> {
        let first = self.line().await?;
        let line = self.bytes(first);
        if line.starts_with(b"? ") {
            return Ok(None);
        }
        if !line.starts_with(b"AT ") {
            bail!(
                "unexpected WHATSAT reply {:?}",
                line.escape_ascii().to_string()
            );
        }
        let at = line.to_vec();
        // The JSON has no empty line inside; an empty line ends the reply.
        for _ in 0..100_000 {
            let next = self.line().await?;
            if next.is_empty() {
                return Ok(Some(at));
            }
        }
        bail!("WHATSAT reply without an end")
    }

    /// Asks WHATSAT for every ID (pipelined) and returns the AT lines.
    pub async fn whatsat_many(&mut self, ids: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(256) {
            let mut req = Vec::with_capacity(chunk.len() * 40);
            for id in chunk {
                req.extend_from_slice(b"WHATSAT ");
                req.extend_from_slice(id);
                req.extend_from_slice(WHATSAT_ARGS);
            }
            self.write(&req).await?;
            for _ in chunk {
                out.push(self.whatsat_reply().await?);
            }
        }
        Ok(out)
    }

    /// Sends one IAMAT (time: now) and returns the AT line that answers it.
    pub async fn iamat(&mut self, id: &[u8]) -> Result<Vec<u8>> {
        let mut req = Vec::new();
        push_iamat(&mut req, id, now_ns());
        self.write(&req).await?;
        let line = self.line().await?;
        Ok(self.bytes(line).to_vec())
    }
}

/// A closed-loop load: `conns` connections, `depth` requests in flight on
/// each, for `warmup` then `measure`.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    pub server: String,
    pub conns: usize,
    pub depth: usize,
    pub warmup: Duration,
    pub measure: Duration,
    /// Prefix of the client IDs, unique per stage.
    pub tag: String,
}

#[derive(Debug, Default, Clone)]
pub struct LoadResult {
    /// Replies received in the measured window.
    pub replies: u64,
    pub seconds: f64,
    /// Latency of each of those replies, nanoseconds, sorted.
    pub latencies_ns: Vec<u64>,
    /// Replies that were not the expected AT line.
    pub bad: u64,
    pub first_bad: Option<String>,
    /// Each connection's last update: its client ID and the AT line that
    /// answered it (of the last measurement absorbed).
    pub last: Vec<(Vec<u8>, Vec<u8>)>,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.replies as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Adds another measurement of the same load (another round's).
    pub fn absorb(&mut self, other: LoadResult) {
        self.replies += other.replies;
        self.seconds += other.seconds;
        self.bad += other.bad;
        self.first_bad = self.first_bad.take().or(other.first_bad);
        self.latencies_ns.extend(other.latencies_ns);
        self.latencies_ns.sort_unstable();
        self.last = other.last;
    }

    /// The `q` quantile (0..=1) of latency, nanoseconds.
    pub fn quantile_ns(&self, q: f64) -> u64 {
        if self.latencies_ns.is_empty() {
            return 0;
        }
        let i = ((self.latencies_ns.len() - 1) as f64 * q).round() as usize;
        self.latencies_ns[i.min(self.latencies_ns.len() - 1)]
    }
}

pub async fn closed_loop(spec: LoadSpec) -> Result<LoadResult> {
    let spec = Arc::new(spec);
    // Connect everyone first, so connection set-up is not measured.
    let mut conns = Vec::with_capacity(spec.conns);
    for _ in 0..spec.conns {
        conns.push(Conn::connect(spec.addr).await?);
    }
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for (k, conn) in conns.into_iter().enumerate() {
        tasks.spawn(load_conn(spec.clone(), k, conn, start));
    }
    let mut total = LoadResult {
        seconds: spec.measure.as_secs_f64(),
        ..LoadResult::default()
    };
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(part) => {
                total.replies += part.replies;
                total.bad += part.bad;
                total.first_bad = total.first_bad.or(part.first_bad);
                total.latencies_ns.extend(part.latencies_ns);
                total.last.extend(part.last);
            }
            Err(e) => {
                failure.get_or_insert(e);
                tasks.abort_all();
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    total.latencies_ns.sort_unstable();
    Ok(total)
}

async fn load_conn(
    spec: Arc<LoadSpec>,
    k: usize,
    mut conn: Conn,
    start: Instant,
) -> Result<LoadResult> {
    let from = start + spec.warmup;
    let until = from + spec.measure;
    let server = spec.server.as_bytes();
    let ids: Vec<Vec<u8>> = (0..IDS_PER_CONN)
        .map(|j| format!("{}-{k}-{j}", spec.tag).into_bytes())
        .collect();
    let mut result = LoadResult::default();
    let expected = (spec.measure.as_secs_f64() * 200_000.0 / spec.conns as f64) as usize;
    result.latencies_ns.reserve(expected.min(4_000_000));
    let mut pending: VecDeque<Sent> = VecDeque::with_capacity(spec.depth);
    let mut out = Vec::with_capacity(spec.depth * 80);
    let mut tail = Vec::with_capacity(128);
    let mut next: u64 = 0;
    let mut last_time = 0u64;
    // Sending stops at `until`; the replies still owed then must come
    // within DRAIN (and every read within IO_TIMEOUT).
    loop {
        let now = Instant::now();
        if now > until + DRAIN {
            bail!(
                "{} replies still owed {DRAIN:?} after the load ended",
                pending.len()
            );
        }
        if now < until && pending.len() < spec.depth {
            out.clear();
            let mut time = now_ns().max(last_time + 1);
            while pending.len() < spec.depth {
                let index = next % IDS_PER_CONN as u64;
                push_iamat(&mut out, &ids[index as usize], time);
                pending.push_back(Sent {
                    at: now,
                    index,
                    time_ns: time,
                });
                next += 1;
                time += 1;
            }
            last_time = time - 1;
            conn.write(&out).await?;
        }
        if pending.is_empty() {
            break;
        }
        conn.fill().await?;
        let got = Instant::now();
        while let Some(range) = conn.try_line() {
            let Some(sent) = pending.pop_front() else {
                bail!("a reply nobody asked for");
            };
            tail.clear();
            push_tail(&mut tail, &ids[sent.index as usize], sent.time_ns);
            let line = conn.bytes(range);
            if !is_reply(line, server, &tail) {
                result.bad += 1;
                result
                    .first_bad
                    .get_or_insert_with(|| line.escape_ascii().to_string());
            }
            if got >= from && got < until {
                result.replies += 1;
                result
                    .latencies_ns
                    .push(got.duration_since(sent.at).as_nanos() as u64);
            }
            // Sending has stopped: the last of these replies is the
            // connection's last (only these few are copied).
            if got >= until {
                result.last = vec![(ids[sent.index as usize].clone(), line.to_vec())];
            }
        }
    }
    Ok(result)
}

/// A burst of distinct clients: `total` IAMATs, split into contiguous runs
/// over `conns` connections, each keeping up to `window` in flight.
#[derive(Debug, Clone)]
pub struct UpdateSpec {
    pub addr: SocketAddr,
    pub server: String,
    pub conns: usize,
    pub window: usize,
    pub total: u64,
    pub tag: String,
    /// Indices whose replies to keep (sorted), to check other nodes against.
    pub keep: Vec<u64>,
    /// When the stage fails if the updates are not all acknowledged.
    pub deadline: Instant,
}

impl UpdateSpec {
    /// The updates connection `k` sends.
    pub fn range(&self, k: usize) -> Range<u64> {
        let n = self.conns as u64;
        let k = k as u64;
        self.total * k / n..self.total * (k + 1) / n
    }
}

/// The last update of a connection, acknowledged by the server.
#[derive(Debug, Clone)]
pub struct Acked {
    pub index: u64,
    pub line: Arc<Vec<u8>>,
}

#[derive(Debug, Default)]
pub struct UpdateResult {
    /// The kept replies: (index, AT line).
    pub kept: Vec<(u64, Vec<u8>)>,
    pub bad: u64,
    pub first_bad: Option<String>,
    /// When the first update was written (connections made before).
    pub started: Option<Instant>,
}

/// Sends the updates; each connection announces its last acknowledged
/// update on `acked` as soon as the reply arrives.
pub async fn send_updates(
    spec: UpdateSpec,
    acked: broadcast::Sender<Acked>,
) -> Result<UpdateResult> {
    let spec = Arc::new(spec);
    let mut conns = Vec::with_capacity(spec.conns);
    for _ in 0..spec.conns {
        conns.push(Conn::connect(spec.addr).await?);
    }
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    for (k, conn) in conns.into_iter().enumerate() {
        tasks.spawn(update_conn(spec.clone(), k, conn, acked.clone()));
    }
    let mut total = UpdateResult {
        started: Some(started),
        ..UpdateResult::default()
    };
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(part) => {
                total.bad += part.bad;
                total.first_bad = total.first_bad.or(part.first_bad);
                total.kept.extend(part.kept);
            }
            Err(e) => {
                failure.get_or_insert(e);
                tasks.abort_all();
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    total.kept.sort_unstable_by_key(|(i, _)| *i);
    Ok(total)
}

async fn update_conn(
    spec: Arc<UpdateSpec>,
    k: usize,
    mut conn: Conn,
    acked: broadcast::Sender<Acked>,
) -> Result<UpdateResult> {
    let range = spec.range(k);
    let server = spec.server.as_bytes();
    let keep_from = spec.keep.partition_point(|&i| i < range.start);
    let keep_to = spec.keep.partition_point(|&i| i < range.end);
    let keep = &spec.keep[keep_from..keep_to];
    let mut keep_next = 0;
    let mut result = UpdateResult::default();
    let mut pending: VecDeque<Sent> = VecDeque::with_capacity(spec.window);
    let mut out = Vec::with_capacity(spec.window * 80);
    let mut id = Vec::with_capacity(64);
    let mut tail = Vec::with_capacity(128);
    let mut next = range.start;
    let mut last_time = 0;
    while next < range.end || !pending.is_empty() {
        if Instant::now() > spec.deadline {
            bail!(
                "connection {k}: {} of {} updates unacknowledged when the time ran out",
                range.end - next + pending.len() as u64,
                range.end - range.start
            );
        }
        if next < range.end && pending.len() < spec.window {
            out.clear();
            let now = Instant::now();
            let mut time = now_ns().max(last_time + 1);
            while next < range.end && pending.len() < spec.window {
                id.clear();
                push_id(&mut id, &spec.tag, next);
                push_iamat(&mut out, &id, time);
                pending.push_back(Sent {
                    at: now,
                    index: next,
                    time_ns: time,
                });
                next += 1;
                time += 1;
            }
            last_time = time - 1;
            conn.write(&out).await?;
        }
        conn.fill().await?;
        while let Some(line_range) = conn.try_line() {
            let Some(sent) = pending.pop_front() else {
                bail!("a reply nobody asked for");
            };
            id.clear();
            push_id(&mut id, &spec.tag, sent.index);
            tail.clear();
            push_tail(&mut tail, &id, sent.time_ns);
            let line = conn.bytes(line_range);
            if !is_reply(line, server, &tail) {
                result.bad += 1;
                result
                    .first_bad
                    .get_or_insert_with(|| line.escape_ascii().to_string());
            }
            if keep.get(keep_next) == Some(&sent.index) {
                result.kept.push((sent.index, line.to_vec()));
                keep_next += 1;
            }
            if sent.index + 1 == range.end {
                let _ = acked.send(Acked {
                    index: sent.index,
                    line: Arc::new(line.to_vec()),
                });
            }
        }
    }
    Ok(result)
}

/// Polls `node` with WHATSAT until every connection's last update (as
/// announced on `acked`, `expect` of them) is there with the very AT line
/// the receiving node made; returns when the last one was seen.
pub async fn wait_visible(
    node: SocketAddr,
    tag: String,
    expect: usize,
    mut acked: broadcast::Receiver<Acked>,
    poll: Duration,
    deadline: Instant,
) -> Result<Instant> {
    let mut conn = Conn::connect(node).await?;
    let mut waiting: Vec<Acked> = Vec::new();
    let mut announced = 0;
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        if Instant::now() > deadline {
            bail!(
                "{} of {expect} last updates still missing at {node} when the time ran out",
                waiting.len() + expect - announced
            );
        }
        // Nothing to look for yet: wait for an announcement.
        if waiting.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, acked.recv()).await {
                Ok(Ok(a)) => {
                    waiting.push(a);
                    announced += 1;
                }
                Ok(Err(e)) => bail!("acknowledgements lost: {e}"),
                Err(_) => continue,
            }
        }
        while let Ok(a) = acked.try_recv() {
            waiting.push(a);
            announced += 1;
        }
        tick.tick().await;
        let ids: Vec<Vec<u8>> = waiting.iter().map(|a| update_id(&tag, a.index)).collect();
        let refs: Vec<&[u8]> = ids.iter().map(Vec::as_slice).collect();
        let lines = conn.whatsat_many(&refs).await?;
        let seen_at = Instant::now();
        let mut still = Vec::new();
        for (a, line) in waiting.drain(..).zip(lines) {
            match line {
                None => still.push(a),
                Some(line) if line == *a.line => {}
                Some(line) => bail!(
                    "{node} holds {:?} for update {} instead of {:?}",
                    line.escape_ascii().to_string(),
                    a.index,
                    a.line.escape_ascii().to_string()
                ),
            }
        }
        waiting = still;
        if waiting.is_empty() && announced == expect {
            return Ok(seen_at);
        }
    }
}

/// Polls `node` with WHATSAT every `poll` until it holds each of `lines`
/// (client ID, AT line): an older line there is not there yet. Returns
/// when the last was seen.
pub async fn wait_lines(
    node: SocketAddr,
    lines: &[(Vec<u8>, Vec<u8>)],
    poll: Duration,
    deadline: Instant,
) -> Result<Instant> {
    let mut conn = Conn::connect(node).await?;
    let mut waiting: Vec<&(Vec<u8>, Vec<u8>)> = lines.iter().collect();
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let ids: Vec<&[u8]> = waiting.iter().map(|(id, _)| id.as_slice()).collect();
        let held = conn.whatsat_many(&ids).await?;
        let seen_at = Instant::now();
        waiting = waiting
            .into_iter()
            .zip(held)
            .filter(|((_, line), held)| held.as_deref() != Some(line.as_slice()))
            .map(|(want, _)| want)
            .collect();
        if waiting.is_empty() {
            return Ok(seen_at);
        }
        if seen_at > deadline {
            bail!(
                "{} of {} last updates still missing at {node} when the time ran out",
                waiting.len(),
                lines.len()
            );
        }
        tick.tick().await;
    }
}

/// What checking a sample on one node found.
#[derive(Debug, Default, Clone)]
pub struct Verified {
    pub checked: usize,
    pub missing: Vec<u64>,
    pub wrong: Vec<u64>,
}

/// Asks `node` for every sampled update and compares its AT line with the
/// one the receiving node replied.
pub async fn verify(node: SocketAddr, tag: &str, sample: &[(u64, Vec<u8>)]) -> Result<Verified> {
    let mut conn = Conn::connect(node).await?;
    let ids: Vec<Vec<u8>> = sample.iter().map(|(i, _)| update_id(tag, *i)).collect();
    let refs: Vec<&[u8]> = ids.iter().map(Vec::as_slice).collect();
    let lines = conn.whatsat_many(&refs).await?;
    let mut found = Verified {
        checked: sample.len(),
        ..Verified::default()
    };
    for ((index, expected), line) in sample.iter().zip(lines) {
        match line {
            None => found.missing.push(*index),
            Some(line) if line == *expected => {}
            Some(_) => found.wrong.push(*index),
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_nine_fraction_digits() {
        let mut buf = Vec::new();
        push_time(&mut buf, 1_621_464_827_000_000_003);
        assert_eq!(buf, b"1621464827.000000003");
    }

    #[test]
    fn replies_are_checked_field_by_field() {
        let mut tail = Vec::new();
        push_tail(&mut tail, b"k.1", 1_000_000_000);
        let good = b"AT Clark +0.000100000 k.1 +34.068930-118.445127 1.000000000";
        assert!(is_reply(good, b"Clark", &tail));
        assert!(!is_reply(good, b"Bona", &tail));
        assert!(!is_reply(
            b"AT Clark 0.1 k.1 +34.068930-118.445127 1.000000000",
            b"Clark",
            &tail
        ));
        assert!(!is_reply(
            b"AT Clark +0.000100000 k.2 +34.068930-118.445127 1.000000000",
            b"Clark",
            &tail
        ));
    }

    #[test]
    fn updates_split_into_contiguous_runs() {
        let spec = UpdateSpec {
            addr: "127.0.0.1:1".parse().unwrap(),
            server: "Clark".into(),
            conns: 3,
            window: 1,
            total: 10,
            tag: "t".into(),
            keep: vec![],
            deadline: Instant::now(),
        };
        let runs: Vec<_> = (0..3).map(|k| spec.range(k)).collect();
        assert_eq!(runs, vec![0..3, 3..6, 6..10]);
    }
}
