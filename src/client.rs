//! One client connection: lines in, replies out, in request order.
//!
//! All framing lives here. The reader splits bytes into lines (LF, or end of
//! stream for a last unterminated line), answers IAMAT at once and starts
//! WHATSAT searches as tasks; the writer sends replies strictly in request
//! order, each whole, flushing when no reply is waiting. The queue between
//! them is bounded, so a client that never reads stops being read instead of
//! growing the node's memory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::config::Limits;
use crate::flood::Hub;
use crate::logging::{Direction, Traffic};
use crate::places::{self, Places, Query};
use crate::report::Report;
use crate::request::{self, Parsed, Request};
use crate::store::Offer;
use crate::timestamp::Timestamp;

/// What every client connection of a node shares.
pub struct ClientService {
    pub node: Arc<str>,
    pub hub: Arc<Hub>,
    pub places: Arc<dyn Places>,
    pub places_timeout: Duration,
    pub limits: Limits,
}

/// A reply, ready or still being made, in its request's place in line.
enum Reply {
    Ready(Bytes),
    Pending(AbortOnDropHandle<Bytes>),
}

/// Serves one client until it closes, idles out, breaks a limit or the node
/// shuts down (replies already owed are still written). `addr` is the
/// client's, for the log.
pub async fn serve<S>(
    svc: Arc<ClientService>,
    stream: S,
    addr: SocketAddr,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    let (reader, writer) = tokio::io::split(stream);
    let (replies, queue) = mpsc::channel(svc.limits.pipeline);
    let idle = svc.limits.idle_timeout;
    let traffic = Traffic::new(&svc.node, addr);
    tokio::join!(
        read_requests(&svc, &traffic, reader, replies, shutdown),
        write_replies(&traffic, writer, queue, idle),
    );
}

async fn read_requests<R: AsyncRead + Unpin>(
    svc: &Arc<ClientService>,
    traffic: &Traffic,
    reader: R,
    replies: mpsc::Sender<Reply>,
    shutdown: CancellationToken,
) {
    let mut reader = reader;
    let limits = &svc.limits;
    let whatsat = Arc::new(Semaphore::new(limits.whatsat_in_flight));
    let mut buf = BytesMut::with_capacity(4096);
    // Bytes already searched for LF, so a dribbling client costs linear time.
    let mut scanned = 0;
    // Both waited on across reads, so neither is registered anew per read.
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let idle = tokio::time::sleep(limits.idle_timeout);
    tokio::pin!(idle);
    let mut last_read = tokio::time::Instant::now();
    loop {
        while let Some(pos) = buf[scanned..].iter().position(|&b| b == b'\n') {
            let line = buf.split_to(scanned + pos + 1);
            scanned = 0;
            let mut body = &line[..line.len() - 1];
            if body.len() > limits.max_line {
                return too_long(svc, &replies, &body[..limits.max_line]).await;
            }
            let received = body;
            if let Some(stripped) = body.strip_suffix(b"\r") {
                body = stripped;
            }
            if !answer(svc, traffic, &replies, &whatsat, received, body).await {
                return;
            }
        }
        scanned = buf.len();
        if buf.len() > limits.max_line {
            return too_long(svc, &replies, &buf[..limits.max_line]).await;
        }
        buf.reserve(4096);
        let read = loop {
            tokio::select! {
                biased;
                read = reader.read_buf(&mut buf) => break read,
                _ = &mut cancelled => return,
                _ = &mut idle => {
                    // One timer per connection, moved on only when it
                    // fires, instead of one set and cancelled per read.
                    let deadline = last_read + limits.idle_timeout;
                    if deadline <= tokio::time::Instant::now() {
                        tracing::info!(target: "herd::client", "idle; closing");
                        return;
                    }
                    idle.as_mut().reset(deadline);
                }
            }
        };
        last_read = tokio::time::Instant::now();
        match read {
            Err(e) => {
                tracing::debug!(target: "herd::client", error = %e, "read failed");
                return;
            }
            Ok(0) => {
                if !buf.is_empty() {
                    // A last line without LF is still a line.
                    let line = buf.split();
                    answer(svc, traffic, &replies, &whatsat, &line, &line).await;
                }
                return;
            }
            Ok(_) => {}
        }
    }
}

/// Answers one line: `received` is the line as sent (without LF), `body` the
/// same without a CR before the LF. Returns false when the connection must
/// close.
async fn answer(
    svc: &Arc<ClientService>,
    traffic: &Traffic,
    replies: &mpsc::Sender<Reply>,
    whatsat: &Arc<Semaphore>,
    received: &[u8],
    body: &[u8],
) -> bool {
    traffic.log(Direction::In, received);
    let metrics = svc.hub.metrics();
    let reply = match request::parse(body) {
        Parsed::Empty => return true,
        Parsed::Invalid => {
            metrics.invalid.inc();
            Reply::Ready(invalid(body))
        }
        Parsed::Request(Request::IAmAt {
            client,
            location_text,
            location: _,
            time_text,
            time,
        }) => {
            let now = Timestamp::now();
            let skew = svc.limits.max_clock_skew.as_nanos() as i128;
            if time.nanos_since(now) > skew {
                metrics.invalid.inc();
                Reply::Ready(invalid(body))
            } else {
                let report = Report::new(&svc.node, now, client, location_text, time_text, time);
                metrics.iamat.inc();
                let stored = match svc.hub.publish(report.clone(), None) {
                    Offer::Won { .. } => report,
                    Offer::Lost(winner) => winner,
                };
                Reply::Ready(with_lf(stored.line()))
            }
        }
        Parsed::Request(Request::WhatsAt {
            client,
            radius_km,
            bound,
        }) => match svc.hub.lookup(client) {
            None => {
                metrics.invalid.inc();
                Reply::Ready(invalid(body))
            }
            Some(report) => {
                metrics.whatsat.inc();
                let Ok(permit) = whatsat.clone().acquire_owned().await else {
                    return false;
                };
                let location = report.location();
                let query = Query {
                    lat: location.lat,
                    lon: location.lon,
                    radius_m: radius_km * 1000.0,
                    bound,
                };
                let svc = svc.clone();
                Reply::Pending(AbortOnDropHandle::new(tokio::spawn(async move {
                    let started = Instant::now();
                    let answer = places::answer(&*svc.places, query, svc.places_timeout).await;
                    drop(permit);
                    let metrics = svc.hub.metrics();
                    metrics
                        .places_seconds
                        .observe(started.elapsed().as_secs_f64());
                    if answer.failed {
                        metrics.places_errors.inc();
                    }
                    let json = answer.json;
                    let line = report.line();
                    let mut out = BytesMut::with_capacity(line.len() + json.len() + 3);
                    out.put_slice(line);
                    out.put_u8(b'\n');
                    out.put_slice(&json);
                    out.put_slice(b"\n\n");
                    out.freeze()
                })))
            }
        },
    };
    send(replies, reply, svc.limits.idle_timeout).await
}

/// Queues a reply; a client that has read nothing for the idle time while
/// the queue is full is given up on.
async fn send(replies: &mpsc::Sender<Reply>, reply: Reply, idle: Duration) -> bool {
    matches!(timeout(idle, replies.send(reply)).await, Ok(Ok(())))
}

async fn too_long(svc: &ClientService, replies: &mpsc::Sender<Reply>, cut: &[u8]) {
    tracing::info!(target: "herd::client", limit = svc.limits.max_line, "line too long; closing");
    send(replies, Reply::Ready(invalid(cut)), svc.limits.idle_timeout).await;
}

fn invalid(line: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(line.len() + 3);
    out.put_slice(b"? ");
    out.put_slice(line);
    out.put_u8(b'\n');
    out.freeze()
}

fn with_lf(line: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(line.len() + 1);
    out.put_slice(line);
    out.put_u8(b'\n');
    out.freeze()
}

async fn write_replies<W: AsyncWrite + Unpin>(
    traffic: &Traffic,
    writer: W,
    mut queue: mpsc::Receiver<Reply>,
    idle: Duration,
) {
    let mut out = BufWriter::with_capacity(16 * 1024, writer);
    while let Some(reply) = queue.recv().await {
        let bytes = match reply {
            Reply::Ready(bytes) => bytes,
            Reply::Pending(task) => {
                // Replies already made must not wait behind a slow search.
                if !task.is_finished()
                    && !out.buffer().is_empty()
                    && !matches!(timeout(idle, out.flush()).await, Ok(Ok(())))
                {
                    return;
                }
                match task.await {
                    Ok(bytes) => bytes,
                    Err(_) => break,
                }
            }
        };
        traffic.log(Direction::Out, &bytes);
        if !matches!(timeout(idle, out.write_all(&bytes)).await, Ok(Ok(()))) {
            return;
        }
        if queue.is_empty() && !matches!(timeout(idle, out.flush()).await, Ok(Ok(()))) {
            return;
        }
    }
    let _ = timeout(idle, out.flush()).await;
    let _ = timeout(idle, out.shutdown()).await;
}
