//! One live link: catch-up, then live updates one way and the peer's
//! updates the other, with pings to notice a silent peer.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::{interval, timeout, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::frame::{self, FrameError, Hello, Message};
use crate::config::PeerSettings;
use crate::flood::{Attached, Hub, Read};
use crate::report::Report;
use crate::store::Seq;
use crate::transport::Conn;

/// Most changes one read of the index takes (and so most updates in one
/// frame).
const BATCH: usize = 1024;

/// Most updates offered to the store under one hold of its lock.
const PUBLISH_CHUNK: usize = 64;

/// How long a closing link waits for the peer to hear its goodbye.
const GOODBYE: Duration = Duration::from_millis(500);

/// Runs the link until it breaks, is cut, or `shutdown`; returns why it
/// ended.
pub async fn run(
    hub: &Hub,
    conn: Conn,
    peer: &str,
    hello: &Hello,
    settings: &PeerSettings,
    shutdown: &CancellationToken,
) -> String {
    let Conn {
        reader,
        writer,
        control,
        remote,
        ..
    } = conn;
    let metrics = hub.metrics();
    let started = Instant::now();
    let attached = hub.attach(peer, hello.seen);
    metrics.link_up(peer, attached.id, remote);
    let id = attached.id;
    let cut = attached.cut.clone();
    let (pongs, pong_queue) = mpsc::channel(8);
    let receiving = receive(hub, reader, peer, id, hello.epoch, settings, pongs, started);
    tokio::pin!(receiving);
    // Shutdown is the writer's to handle, so that it can say goodbye.
    let (reason, sending_ended) = tokio::select! {
        _ = cut.cancelled() => ("cut: replaced by a newer link".to_string(), false),
        r = &mut receiving => (r, false),
        r = transmit(hub, peer, writer, attached, pong_queue, settings, shutdown, started) => (r, true),
    };
    if sending_ended {
        // We said goodbye, or found the peer gone while writing. Either way
        // what the peer sent before it closed its end is still read and
        // stored: a peer that stops sends its last updates and closes, and
        // noticing the close on the sending side first must not drop them.
        // This also gives the peer a moment to read our goodbye, so closing
        // the connection does not overtake it.
        let _ = timeout(GOODBYE, &mut receiving).await;
    }
    // Status first: observers wake on the hub's detach event.
    metrics.link_down(peer, id, &reason);
    hub.detach(peer, id);
    if let Some(control) = control {
        control.close(&reason);
    }
    reason
}

#[allow(clippy::too_many_arguments)]
async fn receive(
    hub: &Hub,
    reader: impl AsyncRead + Unpin,
    peer: &str,
    link: u64,
    epoch: u64,
    settings: &PeerSettings,
    pongs: mpsc::Sender<u64>,
    started: Instant,
) -> String {
    let metrics = hub.metrics();
    // Frame headers and small frames come out of one read of the
    // transport, not three or more each.
    let mut reader = tokio::io::BufReader::with_capacity(64 * 1024, reader);
    // One buffer for every frame's body, so a frame costs no allocation.
    let mut body = Vec::new();
    loop {
        match timeout(
            settings.idle_timeout,
            frame::read_body(&mut reader, settings.max_frame, &mut body),
        )
        .await
        {
            Err(_) => return format!("heard nothing for {:?}", settings.idle_timeout),
            Ok(Ok(Some(size))) => metrics.traffic(peer, 1, size as u64, 0, 0),
            Ok(Ok(None)) => return "peer closed the link".into(),
            Ok(Err(FrameError::Io(e))) => return format!("read failed: {}", chain(&e)),
            Ok(Err(e)) => return format!("protocol violation: {e}"),
        };
        let ended = if frame::is_updates(&body) {
            // The hot path: lines are checked where they lie in the buffer.
            match frame::decode_updates(&body) {
                Ok((head, lines)) => deliver(hub, (peer, link), epoch, head, &lines).await,
                Err(e) => Some(format!("protocol violation: {e}")),
            }
        } else {
            match frame::decode(Bytes::copy_from_slice(&body)) {
                Ok(Message::Updates { .. }) => unreachable!("updates frames are read above"),
                Ok(Message::Ping(n)) => {
                    // A full pong queue means the writer is stuck; the idle
                    // timeout on the other end will deal with it.
                    let _ = pongs.try_send(n);
                    None
                }
                Ok(Message::Pong(sent)) => {
                    let sent = Duration::from_micros(sent);
                    if let Some(rtt) = started.elapsed().checked_sub(sent) {
                        metrics.round_trip(peer, rtt);
                    }
                    None
                }
                Ok(Message::Bye(reason)) => Some(format!("peer closed the link: {reason}")),
                Ok(Message::Hello(_)) => Some("protocol violation: second hello".into()),
                Err(e) => Some(format!("protocol violation: {e}")),
            }
        };
        if let Some(reason) = ended {
            return reason;
        }
        if body.capacity() > KEPT_FRAME_BUFFER {
            // A catch-up frame's buffer is not kept for the link's life.
            body = Vec::new();
        }
    }
}

/// The largest frame buffer a link keeps between frames.
const KEPT_FRAME_BUFFER: usize = 256 * 1024;

/// Checks a frame of updates, then offers them all; a reason to end the
/// link if any line is bad (and then none is offered).
async fn deliver(
    hub: &Hub,
    (peer, link): (&str, u64),
    epoch: u64,
    head: Seq,
    lines: &[&[u8]],
) -> Option<String> {
    let mut updates = Vec::with_capacity(lines.len());
    for line in lines {
        match Report::check(line) {
            Ok(update) => updates.push(update),
            Err(e) => return Some(format!("protocol violation: bad update: {e}")),
        }
    }
    // Only winners are copied out of the buffer, into their own
    // allocation, so a stored report does not keep the frame alive.
    let mut updates = updates.into_iter();
    while updates.len() > 0 {
        // A big frame must not keep a node's other work (its clients)
        // waiting, on the lock or on this thread.
        tokio::task::consume_budget().await;
        hub.publish_all(updates.by_ref().take(PUBLISH_CHUNK), peer, link);
    }
    hub.advance(peer, epoch, head);
    None
}

#[allow(clippy::too_many_arguments)]
async fn transmit(
    hub: &Hub,
    peer: &str,
    writer: impl AsyncWrite + Unpin,
    attached: Attached,
    mut pongs: mpsc::Receiver<u64>,
    settings: &PeerSettings,
    shutdown: &CancellationToken,
    started: Instant,
) -> String {
    let metrics = hub.metrics();
    let mut writer = writer;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut ping = interval(settings.keepalive);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (wake, full) = (attached.wake.clone(), attached.full.clone());
    let mut changes = Changes::new(hub, peer, attached, settings.max_frame / 2);
    let mut frames = 0;
    let window = settings.batch_window;
    // Whether to read at once: the window just ended, or a change arrived
    // on a quiet link. (While catching up, reading goes on regardless.)
    let mut due = false;
    // The goodbye is written.
    let mut closing = false;
    loop {
        // Under load (a frame of updates went out less than a window ago)
        // changes are not even looked at until the window is over, or
        // until a frame's worth is waiting (then `due`): one wakeup per
        // frame.
        let gate = changes.window_end(window).filter(|_| !due);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                // Everything stored goes out before the goodbye, a read's
                // worth per write (this arm comes round again until then).
                frames += changes.next(&mut buf, true);
                if changes.caught_up() {
                    frame::encode(&Message::Bye("node shutting down".into()), &mut buf);
                    frames += 1;
                    closing = true;
                }
            }
            Some(n) = pongs.recv() => {
                frame::encode(&Message::Pong(n), &mut buf);
                frames += 1;
            }
            _ = ping.tick() => {
                // A head not yet sent (see `Changes::next`) rides with the
                // ping; outside a window, so does what waits.
                frames += if gate.is_none() {
                    changes.next(&mut buf, true)
                } else {
                    changes.head(&mut buf)
                };
                frame::encode(&Message::Ping(started.elapsed().as_micros() as u64), &mut buf);
                frames += 1;
            }
            _ = async {
                tokio::select! {
                    _ = tokio::time::sleep_until(gate.unwrap_or_else(Instant::now)) => {}
                    _ = full.notified() => {}
                }
            }, if gate.is_some() => {
                // What gathered over the window goes at once: yielding
                // first would put it behind everything else a busy node
                // has to run.
                due = true;
                continue;
            }
            _ = wake.notified(), if gate.is_none() && changes.caught_up() && !due => {
                // A quiet link lets the tasks making updates run once
                // more, so that one frame and one write carry what they
                // add.
                tokio::task::yield_now().await;
                due = true;
                continue;
            }
            _ = std::future::ready(()), if gate.is_none() && (due || !changes.caught_up()) => {
                due = false;
                let n = changes.next(&mut buf, false);
                if n == 0 {
                    continue;
                }
                frames += n;
            }
        }
        // Counted as handed to the transport, before the write: the peer
        // may read and store a frame before this task runs again, and
        // whoever sees it there must find it counted here.
        metrics.traffic(peer, 0, 0, std::mem::take(&mut frames), buf.len() as u64);
        let wrote = async {
            writer.write_all(&buf).await?;
            writer.flush().await
        };
        match timeout(settings.idle_timeout, wrote).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return format!("write failed: {}", chain(&e)),
            Err(_) => return format!("peer read nothing for {:?}", settings.idle_timeout),
        }
        buf.clear();
        if buf.capacity() > KEPT_FRAME_BUFFER {
            // A catch-up's buffer is not kept for the link's life.
            buf = BytesMut::with_capacity(64 * 1024);
        }
        // (A write that began before shutdown is followed by the drain.)
        if closing {
            let _ = writer.shutdown().await;
            return "node shutting down".into();
        }
    }
}

/// What a link has read of the change index, and sent.
struct Changes<'a> {
    hub: &'a Hub,
    peer: &'a str,
    attached: Attached,
    read: Read,
    /// The head the neighbour has been sent.
    sent: Seq,
    /// When the last frame of live updates (made after the link attached)
    /// went out.
    last_sent: Option<Instant>,
    batch: Vec<(Seq, Report)>,
    budget: usize,
}

impl<'a> Changes<'a> {
    fn new(hub: &'a Hub, peer: &'a str, attached: Attached, budget: usize) -> Changes<'a> {
        let since = attached.since;
        Changes {
            hub,
            peer,
            attached,
            read: Read {
                to: since,
                caught_up: false,
            },
            sent: since,
            last_sent: None,
            batch: Vec::with_capacity(BATCH),
            budget,
        }
    }

    fn caught_up(&self) -> bool {
        self.read.caught_up
    }

    /// Under load (caught up, and a frame of live updates went out less
    /// than `window` ago), when that window ends.
    fn window_end(&self, window: Duration) -> Option<Instant> {
        self.last_sent
            .map(|at| at + window)
            .filter(|end| *end > Instant::now() && self.caught_up())
    }

    /// A frame of no updates with the head read to, if it was not sent.
    fn head(&mut self, buf: &mut BytesMut) -> u64 {
        if self.read.to == self.sent {
            return 0;
        }
        encode(self.read.to, &[], buf);
        self.sent = self.read.to;
        1
    }

    /// Reads the next changes and encodes those for the neighbour into
    /// frames under the peer's limit; returns how many frames.
    ///
    /// Changes the neighbour has (those it brought, and those it sent us
    /// meanwhile) only move the head it knows we have. Unless `head`, that
    /// head rides with the next frame of updates or the next ping: a frame
    /// of its own per window would make every link back towards where
    /// updates come from as busy as the link that brings them, for nothing
    /// the peer needs at once (catch-up after a drop merely resends a few
    /// of its own updates).
    fn next(&mut self, buf: &mut BytesMut, head: bool) -> u64 {
        let (hub, peer) = (self.hub, self.peer);
        self.read = hub.read(peer, &self.attached, self.read.to, BATCH, &mut self.batch);
        let Some(&(last, _)) = self.batch.last() else {
            return if head { self.head(buf) } else { 0 };
        };
        if last > self.attached.head {
            self.last_sent = Some(Instant::now());
        }
        let frames = encode_all(&self.batch, self.read.to, self.budget, buf);
        self.batch.clear();
        self.sent = self.read.to;
        frames
    }
}

/// Encodes `batch` into as many updates frames as its lines need, each
/// under `budget` bytes, the last complete up to `to`; returns how many.
fn encode_all(batch: &[(Seq, Report)], to: Seq, budget: usize, buf: &mut BytesMut) -> u64 {
    let mut frames = 0;
    let mut rest = batch;
    while !rest.is_empty() {
        let n = fit(rest, budget);
        let head = if n == rest.len() { to } else { rest[n - 1].0 };
        encode(head, &rest[..n], buf);
        rest = &rest[n..];
        frames += 1;
    }
    frames
}

/// One updates frame for `changes`, complete up to `head`.
fn encode(head: Seq, changes: &[(Seq, Report)], buf: &mut BytesMut) {
    frame::encode_updates(head, changes.iter().map(|(_, r)| r.line()), buf);
}

/// How many of `changes` (at most a read's worth, [`BATCH`]) fit in one
/// frame: at least one, and no more than `budget` bytes of lines after the
/// first.
fn fit(changes: &[(Seq, Report)], budget: usize) -> usize {
    let mut bytes = 0;
    let mut n = 0;
    for (_, report) in changes {
        bytes += report.line().len() + 4;
        if n > 0 && bytes > budget {
            break;
        }
        n += 1;
    }
    n
}

/// Jittered exponential backoff between redials.
pub(crate) fn jitter(delay: Duration) -> Duration {
    let half = delay / 2;
    half + half.mul_f64(rand::random::<f64>())
}

/// An error with its causes, so a transport's reason (such as the peer's
/// close reason) is not hidden behind a generic I/O message.
fn chain(error: &std::io::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.get_ref().and_then(|e| e.source());
    while let Some(e) = source {
        let more = e.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = e.source();
    }
    text
}
