//! One client connection: lines in, replies out, in request order.
//!
//! All framing lives here. One loop per connection reads bytes, splits them
//! into lines (LF, or end of stream for a last unterminated line), answers
//! IAMAT at once and starts WHATSAT searches as tasks, and writes replies
//! strictly in request order, each whole: everything ready goes out in one
//! write. A reply behind an unfinished search waits in a queue, and the
//! replies before it are written meanwhile. Both the queue and the unwritten
//! bytes are bounded, so a client that never reads stops being read instead
//! of growing the node's memory.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, Span};

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
    /// An AT line, written straight from the stored report.
    At(Report),
    Pending(AbortOnDropHandle<Bytes>),
}

/// Unwritten reply bytes above which the connection stops reading.
const UNWRITTEN_MAX: usize = 64 * 1024;

/// What answering a line asks of the connection.
enum Next {
    Reply(Reply),
    /// An empty line: nothing to answer.
    Nothing,
    /// The node is shutting down.
    Stop,
}

/// One connection's replies in request order: bytes ready to write, then
/// (behind the first unfinished search) replies still waiting.
struct Outbox<'a> {
    traffic: &'a Traffic,
    ready: BytesMut,
    waiting: VecDeque<Reply>,
}

impl Outbox<'_> {
    fn push(&mut self, reply: Reply) {
        if self.waiting.is_empty() && !matches!(reply, Reply::Pending(_)) {
            self.write(&reply);
        } else {
            self.waiting.push_back(reply);
        }
    }

    /// Appends a made reply to the bytes to write, and logs it.
    fn write(&mut self, reply: &Reply) {
        let start = self.ready.len();
        match reply {
            Reply::Ready(bytes) => self.ready.put_slice(bytes),
            Reply::At(report) => {
                self.ready.put_slice(report.line());
                self.ready.put_u8(b'\n');
            }
            Reply::Pending(_) => return,
        }
        self.traffic.log(Direction::Out, &self.ready[start..]);
    }

    /// Moves finished searches, and the made replies behind them, to the
    /// bytes to write. False if a search task failed.
    fn promote(&mut self) -> bool {
        while let Some(front) = self.waiting.front_mut() {
            if let Reply::Pending(task) = front {
                if !task.is_finished() {
                    break;
                }
                // Still Pending when this task's cooperative budget is
                // spent: then `front_search` waits for it.
                match futures::FutureExt::now_or_never(task) {
                    Some(Ok(bytes)) => *front = Reply::Ready(bytes),
                    Some(Err(_)) => return false,
                    None => break,
                }
            }
            if let Some(reply) = self.waiting.pop_front() {
                self.write(&reply);
            }
        }
        true
    }

    fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.waiting.is_empty()
    }

    fn is_full(&self, pipeline: usize) -> bool {
        self.ready.len() >= UNWRITTEN_MAX || self.waiting.len() >= pipeline
    }
}

/// Waits for the search at the front of `waiting`, if there is one, and
/// returns what it made.
async fn front_search(waiting: &mut VecDeque<Reply>) -> Result<Bytes, tokio::task::JoinError> {
    match waiting.front_mut() {
        Some(Reply::Pending(task)) => task.await,
        _ => std::future::pending().await,
    }
}

/// How a served connection ends, once its write side is shut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client closed, went silent or broke: close the socket now.
    Close,
    /// The node, shutting down, stopped reading a client that may still be
    /// sending, and wrote every reply owed. Closing a socket with input
    /// unread makes the kernel reset the connection and throw away what it
    /// has not yet sent of those replies, so what still comes in is to be
    /// read and dropped first. (A line over the limit is not drained: that
    /// client is hung up on at once.)
    Drain,
}

/// Serves one client, reading from `reader` and writing to `writer` (a
/// socket's two halves), until it closes, idles out, breaks a limit or the
/// node shuts down (replies already owed are still written); says whether
/// the socket needs draining before it closes. `addr` is the client's, for
/// the log.
pub async fn serve<R, W>(
    svc: Arc<ClientService>,
    (reader, writer): (&mut R, &mut W),
    addr: SocketAddr,
    shutdown: CancellationToken,
    span: Span,
) -> End
where
    R: AsyncRead + Send + Unpin,
    W: AsyncWrite + Send + Unpin,
{
    let traffic = Traffic::new(&svc.node, addr, span);
    let span = traffic.span();
    let limits = &svc.limits;
    let whatsat = Arc::new(Semaphore::new(limits.whatsat_in_flight));
    let mut out = Outbox {
        traffic: &traffic,
        ready: BytesMut::with_capacity(16 * 1024),
        waiting: VecDeque::new(),
    };
    let mut buf = BytesMut::with_capacity(4096);
    // Bytes already searched for LF, so a dribbling client costs linear time.
    let mut scanned = 0;
    let mut reading = true;
    // Reading stopped for the node's shutdown.
    let mut cut_short = false;
    // Waited on across iterations, so neither is registered anew each time.
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let mut cancelled = WhenWoken::new(cancelled);
    let idle = tokio::time::sleep(limits.idle_timeout);
    tokio::pin!(idle);
    // The last time the client sent or took anything (on the coarse clock:
    // read twice per request, it only has to serve the idle timeout).
    let mut progress = coarse_now();
    loop {
        if !out.promote() {
            break;
        }
        if !reading && out.is_empty() {
            break;
        }
        let can_read = reading && !out.is_full(limits.pipeline);
        let Outbox { ready, waiting, .. } = &mut out;
        tokio::select! {
            biased;
            _ = &mut cancelled, if reading => {
                reading = false;
                cut_short = true;
            }
            // A plain write, not `write_buf`: that one takes writev(2),
            // whose vectors cost a socket more than send(2) does.
            wrote = writer.write(ready), if !ready.is_empty() => match wrote {
                Ok(n) if n > 0 => {
                    ready.advance(n);
                    progress = coarse_now();
                }
                _ => return End::Close,
            },
            read = reader.read_buf(&mut buf), if can_read => {
                progress = coarse_now();
                // When the lines this read brought were received: their log
                // entries' time and, for an IAMAT, its AT line's.
                let at = SystemTime::now();
                match read {
                    Ok(0) | Err(_) => {
                        reading = false;
                        if let Err(e) = read {
                            span.in_scope(|| tracing::debug!(target: "herd::client", error = %e, "read failed"));
                        } else if !buf.is_empty() {
                            // A last line without LF is still a line.
                            let line = buf.split();
                            if let Next::Reply(reply) = answer(&svc, &traffic, &whatsat, &line, &line, at).await {
                                out.push(reply);
                            }
                        }
                    }
                    Ok(_) => {
                        reading = lines(&svc, &traffic, &whatsat, &mut buf, &mut scanned, &mut out, at).await;
                    }
                }
            }
            made = front_search(waiting) => match made {
                Ok(bytes) => out.waiting[0] = Reply::Ready(bytes),
                Err(_) => return End::Close,
            },
            _ = &mut idle => {
                // One timer per connection, moved on only when it fires.
                let quiet = coarse_now().saturating_sub(progress);
                if quiet >= limits.idle_timeout {
                    if reading {
                        span.in_scope(|| tracing::info!(target: "herd::client", "idle; closing"));
                    }
                    return End::Close;
                }
                idle.as_mut().reset(tokio::time::Instant::now() + (limits.idle_timeout - quiet));
            }
        }
    }
    match timeout(limits.idle_timeout, writer.shutdown()).await {
        Ok(Ok(())) if cut_short => End::Drain,
        _ => End::Close,
    }
}

/// Answers every whole line in `buf`, received `at`. False when the
/// connection must stop reading (a line too long, or the node shutting
/// down).
async fn lines(
    svc: &Arc<ClientService>,
    traffic: &Traffic,
    whatsat: &Arc<Semaphore>,
    buf: &mut BytesMut,
    scanned: &mut usize,
    out: &mut Outbox<'_>,
    at: SystemTime,
) -> bool {
    let limits = &svc.limits;
    while let Some(pos) = buf[*scanned..].iter().position(|&b| b == b'\n') {
        let line = buf.split_to(*scanned + pos + 1);
        *scanned = 0;
        let mut body = &line[..line.len() - 1];
        if body.len() > limits.max_line {
            too_long(svc, out, &body[..limits.max_line]);
            return false;
        }
        let received = body;
        if let Some(stripped) = body.strip_suffix(b"\r") {
            body = stripped;
        }
        match answer(svc, traffic, whatsat, received, body, at).await {
            Next::Reply(reply) => out.push(reply),
            Next::Nothing => {}
            Next::Stop => return false,
        }
    }
    *scanned = buf.len();
    if buf.len() > limits.max_line {
        too_long(svc, out, &buf[..limits.max_line]);
        return false;
    }
    buf.reserve(4096);
    true
}

/// Answers one line, received `at`: `received` is the line as sent (without
/// LF), `body` the same without a CR before the LF.
async fn answer(
    svc: &Arc<ClientService>,
    traffic: &Traffic,
    whatsat: &Arc<Semaphore>,
    received: &[u8],
    body: &[u8],
    at: SystemTime,
) -> Next {
    traffic.log_at(Direction::In, received, at);
    let metrics = svc.hub.metrics();
    let reply = match request::parse(body) {
        Parsed::Empty => return Next::Nothing,
        Parsed::Invalid => {
            metrics.invalid.inc();
            Reply::Ready(invalid(body))
        }
        Parsed::Request(Request::IAmAt {
            client,
            location_text,
            time_text,
            time,
        }) => {
            let now = Timestamp::at(at);
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
                Reply::At(stored)
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
                    return Next::Stop;
                };
                let location = report.location();
                let query = Query {
                    lat: location.lat,
                    lon: location.lon,
                    radius_m: radius_km * 1000.0,
                    bound,
                };
                let svc = svc.clone();
                let search = async move {
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
                };
                // A search's own events (a places failure) name the client.
                let search = search.instrument(traffic.span().clone());
                Reply::Pending(AbortOnDropHandle::new(tokio::spawn(search)))
            }
        },
    };
    Next::Reply(reply)
}

/// A future polled only when it may have finished: the first time, after
/// it woke the task, and when the task's waker is not the one it was given.
///
/// For the shutdown signal, which a connection's loop waits on at every
/// turn (a read and a write per request): a token's `cancelled()` takes two
/// locks each time it is polled (the token's state, then its `Notify`'s
/// waiters), about 1% of a loaded node's client threads.
struct WhenWoken<'a, F> {
    future: Pin<&'a mut F>,
    /// The waker the future was last polled with, and the task's behind it.
    noted: Option<Arc<Noted>>,
}

/// A waker that notes that it was woken, then wakes the task.
struct Noted {
    woken: AtomicBool,
    task: Waker,
}

impl Wake for Noted {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

impl<'a, F: Future> WhenWoken<'a, F> {
    fn new(future: Pin<&'a mut F>) -> Self {
        WhenWoken {
            future,
            noted: None,
        }
    }
}

impl<F: Future> Future for WhenWoken<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let noted = match &this.noted {
            // Cleared before the poll: a wakeup during it is noted again.
            Some(noted) if noted.task.will_wake(cx.waker()) => {
                // A plain load first: the usual answer is no, and a swap
                // would take the cache line for writing every time.
                if !noted.woken.load(Ordering::Acquire)
                    || !noted.woken.swap(false, Ordering::Acquire)
                {
                    return Poll::Pending;
                }
                noted.clone()
            }
            _ => {
                let noted = Arc::new(Noted {
                    woken: AtomicBool::new(false),
                    task: cx.waker().clone(),
                });
                this.noted = Some(noted.clone());
                noted
            }
        };
        let waker = Waker::from(noted);
        this.future.as_mut().poll(&mut Context::from_waker(&waker))
    }
}

/// The monotonic clock as of its last tick (a few milliseconds behind):
/// a quarter of the precise clock's cost, and precise enough for an idle
/// timeout.
#[cfg(target_os = "linux")]
fn coarse_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only to `ts`, which outlives the call.
    // The coarse clock exists since Linux 2.6.32, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The monotonic clock, from the first time it is read.
#[cfg(not(target_os = "linux"))]
fn coarse_now() -> Duration {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

fn too_long(svc: &ClientService, out: &mut Outbox<'_>, cut: &[u8]) {
    out.traffic.span().in_scope(|| {
        tracing::info!(target: "herd::client", limit = svc.limits.max_line, "line too long; closing")
    });
    out.push(Reply::Ready(invalid(cut)));
}

fn invalid(line: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(line.len() + 3);
    out.put_slice(b"? ");
    out.put_slice(line);
    out.put_u8(b'\n');
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    /// A task's waker that counts its wakeups.
    #[derive(Default)]
    struct Task(AtomicUsize);

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A future that counts its polls, keeps the last waker it was given
    /// and finishes once `done`.
    #[derive(Default)]
    struct Probe {
        polls: usize,
        done: bool,
        waker: Option<Waker>,
    }

    struct Probed(Arc<Mutex<Probe>>);

    impl Future for Probed {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let mut probe = self.0.lock().unwrap();
            probe.polls += 1;
            probe.waker = Some(cx.waker().clone());
            if probe.done {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    fn poll_with<F: Future + Unpin>(future: &mut F, task: &Arc<Task>) -> Poll<F::Output> {
        let waker = Waker::from(task.clone());
        Pin::new(future).poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_future_is_polled_again_only_after_it_woke_the_task() {
        let probe = Arc::new(Mutex::new(Probe::default()));
        let mut inner = Probed(probe.clone());
        let mut watched = WhenWoken::new(Pin::new(&mut inner));
        let task = Arc::new(Task::default());
        for _ in 0..5 {
            assert!(poll_with(&mut watched, &task).is_pending());
        }
        assert_eq!(
            probe.lock().unwrap().polls,
            1,
            "polled while nothing woke it"
        );
        // A wakeup that finds it still pending: polled once more, then left.
        let waker = probe.lock().unwrap().waker.clone().unwrap();
        waker.wake_by_ref();
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "the task was not woken");
        assert!(poll_with(&mut watched, &task).is_pending());
        assert!(poll_with(&mut watched, &task).is_pending());
        assert_eq!(probe.lock().unwrap().polls, 2);
        probe.lock().unwrap().done = true;
        waker.wake();
        assert_eq!(task.0.load(Ordering::SeqCst), 2);
        assert!(poll_with(&mut watched, &task).is_ready());
        assert_eq!(probe.lock().unwrap().polls, 3);
    }

    #[test]
    fn a_new_waker_is_handed_on_at_once() {
        let probe = Arc::new(Mutex::new(Probe::default()));
        let mut inner = Probed(probe.clone());
        let mut watched = WhenWoken::new(Pin::new(&mut inner));
        let (first, second) = (Arc::new(Task::default()), Arc::new(Task::default()));
        assert!(poll_with(&mut watched, &first).is_pending());
        assert!(poll_with(&mut watched, &second).is_pending());
        assert_eq!(probe.lock().unwrap().polls, 2);
        probe.lock().unwrap().done = true;
        probe.lock().unwrap().waker.take().unwrap().wake();
        assert_eq!(first.0.load(Ordering::SeqCst), 0, "the old task was woken");
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
        assert!(poll_with(&mut watched, &second).is_ready());
    }

    #[test]
    fn a_cancelled_token_ends_the_wait() {
        let token = CancellationToken::new();
        let child = token.child_token();
        let cancelled = child.cancelled();
        tokio::pin!(cancelled);
        let mut watched = WhenWoken::new(cancelled);
        let task = Arc::new(Task::default());
        assert!(poll_with(&mut watched, &task).is_pending());
        assert!(poll_with(&mut watched, &task).is_pending());
        token.cancel();
        assert_eq!(
            task.0.load(Ordering::SeqCst),
            1,
            "cancelling did not wake the task"
        );
        assert!(poll_with(&mut watched, &task).is_ready());
    }
}
