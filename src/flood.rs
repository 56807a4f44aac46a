//! The flooding rule and the anti-entropy bookkeeping around the store.
//!
//! A report offered to the [`Hub`] that wins in the store is for every
//! attached neighbour but the one it came from; a report that does not win
//! goes nowhere. Because a report is forwarded only when it changes a node's
//! table, and tables only move towards each client's newest report, flooding
//! ends on any topology without message IDs.
//!
//! Links keep no queues: each reads the store's change index from where it
//! has got to ([`Hub::read`]), so what waits for a neighbour is a number,
//! whatever it has to catch up on. A neighbour that reads slowly costs no
//! memory and is never cut for it; it gets each client's newest report only
//! (what it missed meanwhile is superseded here), and its link's writes are
//! bounded by `peer.idle_timeout` like any other.
//!
//! # Anti-entropy
//!
//! Every winning report gets the next number in this node's change sequence
//! ([`Store`]), and each node runs in a boot *epoch* (its start time), so
//! numbers from before a restart are never confused with numbers after.
//! For each neighbour, a node remembers `(epoch, head)`: it has received
//! every change of that neighbour's epoch up to `head` that the neighbour
//! would forward to it. When a link comes up each end tells the other that
//! pair; the other reads its changes after `head` (all of them if the epoch
//! is not its current one), then on, as they are made, on the same ordered
//! link. Frames carry the highest change number they complete, so the head
//! advances as they arrive. The cost of catching up therefore follows what
//! changed while the link was down, not the size of the table; only a node
//! that restarted (and so lost its table) receives everything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::FutureExt;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::report::{Report, HEARD_SLOTS};
use crate::store::{Offer, Seq, Store, Update};

/// How far this node has caught up with a neighbour's change sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Head {
    pub epoch: u64,
    pub seq: Seq,
}

struct Attachment {
    id: u64,
    /// The tag this link's reports are stored with (0: none was free).
    tag: u16,
    /// Changes for this link stored since it last read.
    waiting: usize,
    /// Told when the first of them is stored.
    wake: Arc<Notify>,
    /// Told when [`FRAME_FULL`] of them are.
    full: Arc<Notify>,
    /// Cancelled when the link must go (replaced, or the node stops).
    cut: CancellationToken,
}

/// Changes waiting for a link that make a frame worth sending before its
/// batch window is over.
pub const FRAME_FULL: usize = 512;

#[derive(Default)]
struct Inner {
    store: Store,
    links: HashMap<String, Attachment>,
    heads: HashMap<String, Head>,
    next_id: u64,
    /// Which link holds each source tag (and so each heard-from bit, see
    /// [`slot_of`]). A tag is free again only when its link has ended
    /// (detached), never merely replaced: until then the link may still be
    /// reading, and reports it brought still carry its tag.
    tags: HashMap<u16, u64>,
}

/// A node's table and what its links have read of it.
pub struct Hub {
    epoch: u64,
    metrics: Arc<Metrics>,
    inner: Mutex<Inner>,
    /// Bumped whenever the table or the set of links changes, so that
    /// observers (tests, admin) wait on events rather than poll.
    generation: watch::Sender<u64>,
}

/// A newly attached link: where it starts reading, and what tells it to.
pub struct Attached {
    pub id: u64,
    /// The neighbour has seen our changes up to here: reading starts after.
    pub since: Seq,
    /// Our last change when the link attached. Changes up to here are its
    /// catch-up, sent whatever their marks: the neighbour may have lost
    /// them (restarted), and a mark may be a former link's.
    pub head: Seq,
    /// Notified when a change for this link is stored after it has read
    /// everything.
    pub wake: Arc<Notify>,
    /// Notified when [`FRAME_FULL`] changes wait.
    pub full: Arc<Notify>,
    tag: u16,
    pub cut: CancellationToken,
}

impl Attached {
    /// The bit marking reports this link's neighbour sent us.
    pub fn slot(&self) -> Option<u8> {
        slot_of(self.tag)
    }
}

/// The heard-from bit of the link tagged `tag`: the first tags have one.
fn slot_of(tag: u16) -> Option<u8> {
    (1..=u16::from(HEARD_SLOTS))
        .contains(&tag)
        .then(|| (tag - 1) as u8)
}

/// What one [`Hub::read`] covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    /// Every change up to here is either read or not for the neighbour.
    pub to: Seq,
    /// Nothing after `to` was stored yet.
    pub caught_up: bool,
}

/// Updates [`Hub::publish_all`] warms in the store at once.
const WARMED: usize = 64;

impl Hub {
    pub fn new(epoch: u64) -> Hub {
        Hub::with_metrics(epoch, Arc::default())
    }

    pub fn with_metrics(epoch: u64, metrics: Arc<Metrics>) -> Hub {
        Hub {
            epoch,
            metrics,
            inner: Mutex::default(),
            generation: watch::Sender::new(0),
        }
    }

    /// A receiver that wakes on every change of table or links, and of how
    /// far a neighbour is known to have sent.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    fn bump(&self) {
        // Notifying is not free (several locks); with nobody watching, as
        // in a running node, it is skipped. A new watcher starts from the
        // present, so it misses nothing.
        if self.generation.receiver_count() > 0 {
            self.generation.send_modify(|g| *g += 1);
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the store half
        // updated (every update is one insert), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Offers a report received from a client (`from` None) or from the
    /// neighbour `from`, and floods it if it wins.
    pub fn publish(&self, report: Report, from: Option<&str>) -> Offer {
        let mut inner = self.lock();
        let source = from.and_then(|name| inner.links.get(name).map(|a| (a.id, a.tag, None)));
        let hash = inner.store.hash(report.client());
        let offer = Self::offer(&mut inner, report, hash, source);
        if from.is_some() {
            self.count(&offer);
        }
        let won = matches!(offer, Offer::Won { .. });
        drop(inner);
        if won {
            self.bump();
        }
        offer
    }

    /// Offers reports from the neighbour `from` over its link `link`, in
    /// order, under one lock and with one event for observers: what a
    /// frame of updates costs.
    ///
    /// If the link is still the one attached, winners are not for it, and
    /// an update that is the very report already stored marks it as heard
    /// from it: the neighbour has it, so the link need not send it back. (A
    /// link that was replaced may be hearing from a neighbour that has since
    /// restarted empty: what it brings goes to every link.)
    pub fn publish_all(
        &self,
        updates: impl IntoIterator<Item = impl Update>,
        from: &str,
        link: u64,
    ) {
        let mut inner = self.lock();
        let source = inner
            .links
            .get(from)
            .filter(|a| a.id == link)
            .map(|a| (a.id, a.tag, slot_of(a.tag)));
        let (mut won, mut lost) = (0, 0);
        let mut updates = updates.into_iter().fuse();
        loop {
            // A batch at a time, on the stack: its stored reports are
            // warmed together, then it is offered in order.
            let batch: [Option<_>; WARMED] = std::array::from_fn(|_| updates.next());
            let mut hashes = [0u64; WARMED];
            let mut n = 0;
            for (hash, update) in hashes.iter_mut().zip(batch.iter().flatten()) {
                *hash = inner.store.hash(update.client());
                n += 1;
            }
            if n == 0 {
                break;
            }
            inner.store.warm(&hashes[..n]);
            for (update, hash) in batch.into_iter().flatten().zip(hashes) {
                match Self::offer(&mut inner, update, hash, source) {
                    Offer::Won { .. } => won += 1,
                    Offer::Lost(_) => lost += 1,
                }
            }
        }
        drop(inner);
        self.metrics.updates_received.inc_by(won);
        self.metrics.updates_stale.inc_by(lost);
        if won > 0 {
            self.bump();
        }
    }

    fn count(&self, offer: &Offer) {
        match offer {
            Offer::Won { .. } => self.metrics.updates_received.inc(),
            Offer::Lost(_) => self.metrics.updates_stale.inc(),
        };
    }

    /// Offers one update with the lock held, from the link `source` (its
    /// id, tag and heard-from bit), and tells the other links of a winner.
    fn offer(
        inner: &mut Inner,
        update: impl Update,
        hash: u64,
        source: Option<(u64, u16, Option<u8>)>,
    ) -> Offer {
        let (from, tag, heard) = source.unwrap_or((0, 0, None));
        let offer = inner.store.offer_hashed(update, hash, heard, tag);
        if let Offer::Won { .. } = offer {
            for link in inner.links.values_mut() {
                if source.is_some() && link.id == from {
                    continue;
                }
                link.waiting += 1;
                if link.waiting == 1 {
                    link.wake.notify_one();
                } else if link.waiting == FRAME_FULL {
                    link.full.notify_one();
                }
            }
        }
        offer
    }

    /// Reads into `out`, for `link` (attached for `peer`), the current
    /// reports changed after `after`: at most `most` changes, in order,
    /// leaving out those the neighbour has (after the link's catch-up: those
    /// it brought, and those it sent us meanwhile).
    pub fn read(
        &self,
        peer: &str,
        link: &Attached,
        after: Seq,
        most: usize,
        out: &mut Vec<(Seq, Report)>,
    ) -> Read {
        let mut inner = self.lock();
        if let Some(a) = inner.links.get_mut(peer).filter(|a| a.id == link.id) {
            a.waiting = 0;
            // Signals for what is read now are spent; the lock orders this
            // before any signal for a change stored after it.
            let _ = a.wake.notified().now_or_never();
            let _ = a.full.notified().now_or_never();
        }
        let mut read = Read {
            to: after,
            caught_up: true,
        };
        let (mut examined, mut caught_up, mut live, mut spared) = (0, 0, 0, 0);
        for (seq, report) in inner.store.changes_since(after) {
            if examined == most {
                read.caught_up = false;
                break;
            }
            examined += 1;
            read.to = seq;
            if seq <= link.head {
                caught_up += 1;
            } else if link.tag != 0 && report.source() == link.tag {
                continue;
            } else if link.slot().is_some_and(|slot| report.heard(slot)) {
                spared += 1;
                continue;
            } else {
                live += 1;
            }
            out.push((seq, report.clone()));
        }
        if read.caught_up {
            read.to = read.to.max(inner.store.head());
        }
        drop(inner);
        self.metrics.anti_entropy_items.inc_by(caught_up);
        self.metrics.updates_forwarded.inc_by(live);
        self.metrics.updates_skipped.inc_by(spared);
        read
    }

    /// The client's newest report known here.
    pub fn lookup(&self, client: &[u8]) -> Option<Report> {
        self.lock().store.get(client).cloned()
    }

    pub fn len(&self) -> usize {
        self.lock().store.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Attaches a link to `peer`, which has seen our changes up to `seen`.
    /// Replaces (and cuts) any link already attached for that peer.
    pub fn attach(&self, peer: &str, seen: Head) -> Attached {
        let mut inner = self.lock();
        let since = if seen.epoch == self.epoch {
            seen.seq
        } else {
            0
        };
        let head = inner.store.head().max(since);
        let wake = Arc::new(Notify::new());
        let full = Arc::new(Notify::new());
        let cut = CancellationToken::new();
        inner.next_id += 1;
        let id = inner.next_id;
        // The lowest free tag, so the first links get heard-from bits.
        let tag = (1..=u16::MAX)
            .find(|tag| !inner.tags.contains_key(tag))
            .unwrap_or(0);
        if tag != 0 {
            inner.tags.insert(tag, id);
        }
        let attachment = Attachment {
            id,
            tag,
            waiting: 0,
            wake: wake.clone(),
            full: full.clone(),
            cut: cut.clone(),
        };
        if let Some(old) = inner.links.insert(peer.to_string(), attachment) {
            old.cut.cancel();
        }
        drop(inner);
        self.bump();
        Attached {
            id,
            since,
            head,
            wake,
            full,
            tag,
            cut,
        }
    }

    /// Detaches link `id` of `peer`, unless a newer link replaced it.
    pub fn detach(&self, peer: &str, id: u64) {
        let mut inner = self.lock();
        inner.tags.retain(|_, link| *link != id);
        if inner.links.get(peer).is_some_and(|l| l.id == id) {
            inner.links.remove(peer);
            drop(inner);
            self.bump();
        }
    }

    /// Cuts every link (at shutdown).
    pub fn cut_all(&self) {
        for (_, link) in self.lock().links.drain() {
            link.cut.cancel();
        }
    }

    /// Names of the neighbours with a link attached.
    pub fn attached(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock().links.keys().cloned().collect();
        names.sort();
        names
    }

    /// How far we have caught up with `peer`.
    pub fn head_of(&self, peer: &str) -> Head {
        self.lock().heads.get(peer).copied().unwrap_or_default()
    }

    /// Records that `peer` (in `epoch`) has sent everything up to `seq`.
    pub fn advance(&self, peer: &str, epoch: u64, seq: Seq) {
        let mut inner = self.lock();
        let head = inner.heads.entry(peer.to_string()).or_default();
        let before = *head;
        if head.epoch != epoch {
            *head = Head { epoch, seq };
        } else {
            head.seq = head.seq.max(seq);
        }
        let moved = *head != before;
        drop(inner);
        if moved {
            self.bump();
        }
    }

    /// The number of this node's latest change.
    pub fn head(&self) -> Seq {
        self.lock().store.head()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timestamp::Timestamp;

    fn report(server: &str, client: &str, secs: u64) -> Report {
        let text = secs.to_string();
        Report::new(
            server,
            Timestamp::new(secs + 1, 0).unwrap(),
            client.as_bytes(),
            b"+1+1",
            text.as_bytes(),
            Timestamp::new(secs, 0).unwrap(),
        )
    }

    /// A link's end, as the link code drives it.
    struct End {
        peer: String,
        link: Attached,
        to: Seq,
    }

    fn attach(hub: &Hub, peer: &str, seen: Head) -> End {
        let link = hub.attach(peer, seen);
        End {
            peer: peer.into(),
            to: link.since,
            link,
        }
    }

    /// Everything the link has to send now, in order.
    fn read_all(hub: &Hub, end: &mut End) -> Vec<(Seq, Report)> {
        let mut out = Vec::new();
        loop {
            let read = hub.read(&end.peer, &end.link, end.to, 3, &mut out);
            assert!(read.to >= end.to, "a read never goes back");
            end.to = read.to;
            if read.caught_up {
                return out;
            }
        }
    }

    fn clients(hub: &Hub, end: &mut End) -> Vec<(Seq, Vec<u8>)> {
        read_all(hub, end)
            .into_iter()
            .map(|(seq, r)| (seq, r.client().to_vec()))
            .collect()
    }

    #[test]
    fn winners_go_to_every_neighbour_but_the_sender() {
        let hub = Hub::new(7);
        let mut a = attach(&hub, "A", Head::default());
        let mut b = attach(&hub, "B", Head::default());
        let mut c = attach(&hub, "C", Head::default());
        hub.publish(report("A", "k", 5), Some("A"));
        // The sender reads nothing, but past the change.
        assert!(clients(&hub, &mut a).is_empty());
        assert_eq!(a.to, 1);
        assert_eq!(clients(&hub, &mut b), vec![(1, b"k".to_vec())]);
        assert_eq!(clients(&hub, &mut c), vec![(1, b"k".to_vec())]);
        // A client's report goes to everyone.
        hub.publish(report("Z", "j", 5), None);
        for end in [&mut a, &mut b, &mut c] {
            assert_eq!(clients(&hub, end), vec![(2, b"j".to_vec())]);
        }
    }

    #[test]
    fn reads_take_at_most_what_they_are_asked_for_and_say_when_they_are_done() {
        let hub = Hub::new(7);
        let a = attach(&hub, "A", Head::default());
        for i in 0..5 {
            hub.publish(report("X", &format!("c{i}"), 1), None);
        }
        let mut out = Vec::new();
        let mut read = |after, most| {
            let read = hub.read("A", &a.link, after, most, &mut out);
            (read.to, read.caught_up, out.len())
        };
        assert_eq!(read(0, 2), (2, false, 2));
        // The last three: it knows it has read everything.
        assert_eq!(read(2, 3), (5, true, 5));
        assert_eq!(read(5, 3), (5, true, 5));
        let seqs: Vec<Seq> = out.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_link_is_told_of_the_first_change_after_it_read_and_of_a_full_frame() {
        let ready = |n: &Notify| n.notified().now_or_never().is_some();
        let hub = Hub::new(7);
        let a = attach(&hub, "A", Head::default());
        let b = attach(&hub, "B", Head::default());
        hub.publish(report("X", "c", 1), Some("B"));
        assert!(ready(&a.link.wake), "told of the first change");
        assert!(!ready(&b.link.wake), "the sender is not told of its own");
        hub.publish(report("X", "d", 1), None);
        assert!(!ready(&a.link.wake), "nor told again before it reads");
        // A read spends a signal still pending.
        hub.publish(report("X", "e", 1), None);
        hub.read("A", &a.link, 0, 1, &mut Vec::new());
        assert!(!ready(&a.link.wake));
        hub.publish(report("X", "f", 1), None);
        assert!(ready(&a.link.wake), "told again after a read");
        for i in 1..FRAME_FULL {
            assert!(!ready(&a.link.full), "full at {i}");
            hub.publish(report("X", &format!("g{i}"), 1), None);
        }
        assert!(ready(&a.link.full), "a frame's worth waits");
    }

    #[test]
    fn publish_all_offers_every_update_of_a_long_batch_in_order() {
        let hub = Hub::new(7);
        let a = hub.attach("A", Head::default());
        // More than one warmed batch, ending in a partial one, with a
        // client repeated across batches: the later report wins.
        let mut updates: Vec<Report> = (0..150).map(|i| report("X", &format!("c{i}"), 1)).collect();
        updates.push(report("X", "c3", 2));
        hub.publish_all(updates, "A", a.id);
        assert_eq!(hub.metrics().updates_received.get(), 151);
        assert_eq!(hub.head(), 151);
        for i in 0..150 {
            let want = if i == 3 { 2 } else { 1 };
            let got = hub.lookup(format!("c{i}").as_bytes()).unwrap();
            assert_eq!(got.line(), report("X", &format!("c{i}"), want).line());
        }
    }

    #[test]
    fn the_very_report_heard_back_marks_it_for_that_link_only() {
        let hub = Hub::new(7);
        let a = hub.attach("A", Head::default());
        let b = hub.attach("B", Head::default());
        let (sa, sb) = (a.slot().unwrap(), b.slot().unwrap());
        assert_ne!(sa, sb);
        let r = report("Z", "k", 5);
        hub.publish(r.clone(), None);
        // An older line for the client is not the same report: no mark.
        hub.publish_all([report("Z", "k", 4)], "A", a.id);
        assert!(!r.heard(sa));
        // The same line again, from A: marked as heard from A's link.
        hub.publish_all([Report::parse(r.line()).unwrap()], "A", a.id);
        assert!(r.heard(sa) && !r.heard(sb));
        assert_eq!(r.seq(), 1, "the mark leaves the change number alone");
    }

    #[test]
    fn what_a_neighbour_has_is_left_out_but_never_from_its_catch_up() {
        let hub = Hub::new(7);
        let before = report("Z", "old", 5);
        hub.publish(before.clone(), None);
        let mut a = attach(&hub, "A", Head::default());
        let mut b = attach(&hub, "B", Head::default());
        let after = report("Z", "new", 5);
        hub.publish(after.clone(), None);
        // A sends both back before its link reads them.
        for r in [&before, &after] {
            hub.publish_all([Report::parse(r.line()).unwrap()], "A", a.link.id);
        }
        // Its catch-up (the change before it attached) still goes; the
        // change since is spared.
        assert_eq!(clients(&hub, &mut a), vec![(1, b"old".to_vec())]);
        assert_eq!(a.to, 2);
        assert_eq!(hub.metrics().updates_skipped.get(), 1);
        assert_eq!(
            clients(&hub, &mut b),
            vec![(1, b"old".to_vec()), (2, b"new".to_vec())]
        );
    }

    #[test]
    fn a_replaced_link_marks_nothing_and_what_it_brings_goes_to_its_successor() {
        let hub = Hub::new(7);
        let old = hub.attach("A", Head::default());
        let mut new = attach(&hub, "A", Head::default());
        assert_ne!(
            old.slot(),
            new.link.slot(),
            "the old link may still read its bit"
        );
        assert_ne!(old.tag, new.link.tag);
        let r = report("Z", "k", 5);
        hub.publish(r.clone(), None);
        hub.publish_all([Report::parse(r.line()).unwrap()], "A", old.id);
        assert!(!r.heard(old.slot().unwrap()) && !r.heard(new.link.slot().unwrap()));
        // The neighbour may have restarted empty since the old link: what
        // that link brings is for the new one too.
        hub.publish_all([report("A", "late", 6)], "A", old.id);
        assert_eq!(
            clients(&hub, &mut new),
            vec![(1, b"k".to_vec()), (2, b"late".to_vec())]
        );
        // Its bit and tag are free once it has ended.
        hub.detach("A", old.id);
        let other = hub.attach("C", Head::default());
        assert_eq!((other.slot(), other.tag), (old.slot(), old.tag));
    }

    #[test]
    fn links_beyond_the_marking_bits_get_none_but_still_a_tag() {
        let hub = Hub::new(7);
        let links: Vec<Attached> = (0..=HEARD_SLOTS)
            .map(|i| hub.attach(&format!("P{i}"), Head::default()))
            .collect();
        assert!(links[..HEARD_SLOTS as usize]
            .iter()
            .all(|l| l.slot().is_some()));
        let last = &links[HEARD_SLOTS as usize];
        assert_eq!(last.slot(), None);
        // So what it brings is still not sent back to it.
        let name = format!("P{HEARD_SLOTS}");
        hub.publish_all([report("X", "k", 1)], &name, last.id);
        let mut end = End {
            peer: name,
            to: 0,
            link: hub.attach("unused", Head::default()),
        };
        end.link = links.into_iter().last().unwrap();
        assert!(read_all(&hub, &mut end).is_empty());
        assert_eq!(end.to, 1);
    }

    #[test]
    fn losers_go_nowhere() {
        let hub = Hub::new(7);
        let mut a = attach(&hub, "A", Head::default());
        hub.publish(report("B", "k", 5), Some("B"));
        assert_eq!(clients(&hub, &mut a).len(), 1);
        assert!(matches!(
            hub.publish(report("B", "k", 4), Some("B")),
            Offer::Lost(_)
        ));
        assert!(matches!(
            hub.publish(report("B", "k", 5), Some("B")),
            Offer::Lost(_)
        ));
        assert!(clients(&hub, &mut a).is_empty());
    }

    #[test]
    fn attach_sends_only_what_the_neighbour_has_not_seen() {
        let hub = Hub::new(7);
        for (i, c) in ["a", "b", "c", "d"].iter().enumerate() {
            hub.publish(report("X", c, i as u64), None);
        }
        hub.publish(report("X", "a", 10), None); // seq 5 supersedes seq 1
        let mut got = attach(&hub, "P", Head { epoch: 7, seq: 3 });
        assert_eq!(got.link.head, 5);
        assert_eq!(
            clients(&hub, &mut got),
            vec![(4, b"d".to_vec()), (5, b"a".to_vec())]
        );
        assert_eq!(hub.metrics().anti_entropy_items.get(), 2);
        // Up to date: nothing to send, head stays.
        let mut got = attach(&hub, "P", Head { epoch: 7, seq: 5 });
        assert!(clients(&hub, &mut got).is_empty());
        assert_eq!((got.link.head, got.to), (5, 5));
    }

    #[test]
    fn a_head_from_another_epoch_gets_everything() {
        let hub = Hub::new(8);
        hub.publish(report("X", "a", 1), None);
        hub.publish(report("X", "b", 1), None);
        let mut got = attach(&hub, "P", Head { epoch: 7, seq: 99 });
        assert_eq!(clients(&hub, &mut got).len(), 2);
        assert_eq!(got.link.head, 2);
    }

    #[test]
    fn reattaching_cuts_the_old_link_and_detach_keeps_the_new() {
        let hub = Hub::new(1);
        let old = hub.attach("P", Head::default());
        let new = hub.attach("P", Head::default());
        assert!(old.cut.is_cancelled());
        hub.detach("P", old.id);
        assert_eq!(hub.attached(), vec!["P".to_string()]);
        hub.detach("P", new.id);
        assert!(hub.attached().is_empty());
    }

    #[test]
    fn a_link_that_reads_late_is_not_cut_and_gets_the_newest_only() {
        let hub = Hub::new(1);
        let mut slow = attach(&hub, "S", Head::default());
        let mut fast = attach(&hub, "F", Head::default());
        for secs in 1..=3 {
            for i in 0..100 {
                hub.publish(report("X", &format!("c{i}"), secs), None);
            }
            assert_eq!(clients(&hub, &mut fast).len(), 100);
        }
        assert!(!slow.link.cut.is_cancelled());
        assert_eq!(hub.attached(), vec!["F".to_string(), "S".to_string()]);
        let got = read_all(&hub, &mut slow);
        assert_eq!(got.len(), 100);
        assert!(got
            .iter()
            .all(|(seq, r)| *seq > 200 && r.time().secs() == 3));
        assert_eq!(slow.to, 300);
    }

    #[test]
    fn heads_reset_on_a_new_epoch_and_never_go_back() {
        let hub = Hub::new(1);
        hub.advance("P", 5, 10);
        hub.advance("P", 5, 8);
        assert_eq!(hub.head_of("P"), Head { epoch: 5, seq: 10 });
        hub.advance("P", 6, 2);
        assert_eq!(hub.head_of("P"), Head { epoch: 6, seq: 2 });
    }

    /// Plays one link coming up between two hubs, as the link code does:
    /// both ends attach with what they have seen of the other and send
    /// what they read (their catch-up), then read again (what they received
    /// meanwhile is left out, but moves their head), and each receiver
    /// records the heads. Returns how many reports went each way.
    fn reconcile(a: (&str, &Hub), b: (&str, &Hub)) -> (usize, usize) {
        let (seen_by_a, seen_by_b) = (a.1.head_of(b.0), b.1.head_of(a.0));
        let mut ends = [attach(a.1, b.0, seen_by_b), attach(b.1, a.0, seen_by_a)];
        let mut sent = [0, 0];
        let pairs = [(a, b), (b, a)];
        for _ in 0..2 {
            for (i, ((from_name, from), (_, to))) in pairs.into_iter().enumerate() {
                let end = &mut ends[i];
                for (_, report) in read_all(from, end) {
                    sent[i] += 1;
                    to.publish(report, Some(from_name));
                }
                to.advance(from_name, from.epoch(), end.to);
            }
        }
        for (i, ((_, from), (to_name, _))) in pairs.into_iter().enumerate() {
            from.detach(to_name, ends[i].link.id);
        }
        (sent[0], sent[1])
    }

    fn table(hub: &Hub, clients: &[&str]) -> Vec<Option<Vec<u8>>> {
        clients
            .iter()
            .map(|c| hub.lookup(c.as_bytes()).map(|r| r.line().to_vec()))
            .collect()
    }

    #[test]
    fn reconciliation_sends_differences_in_both_directions() {
        let a = Hub::new(1);
        let b = Hub::new(2);
        for i in 0..50 {
            a.publish(report("A", &format!("a{i}"), 1), None);
        }
        b.publish(report("B", "b0", 1), None);
        assert_eq!(reconcile(("A", &a), ("B", &b)), (50, 1));
        let all: Vec<String> = (0..50)
            .map(|i| format!("a{i}"))
            .chain(["b0".into()])
            .collect();
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        assert_eq!(table(&a, &all), table(&b, &all));

        // Apart again: two changes on A, one on B. Only those travel.
        a.publish(report("A", "a3", 2), None);
        a.publish(report("A", "new", 1), None);
        b.publish(report("B", "a7", 3), None);
        assert_eq!(reconcile(("A", &a), ("B", &b)), (2, 1));
        assert_eq!(
            table(&a, &["a3", "a7", "new"]),
            table(&b, &["a3", "a7", "new"])
        );
        // Up to date: nothing travels.
        assert_eq!(reconcile(("A", &a), ("B", &b)), (0, 0));
    }

    #[test]
    fn a_restarted_peer_gets_everything_and_sends_its_new_epoch() {
        let a = Hub::new(1);
        let b = Hub::new(2);
        for i in 0..10 {
            a.publish(report("A", &format!("c{i}"), 1), None);
        }
        reconcile(("A", &a), ("B", &b));
        // B restarts: a new epoch and an empty table; A's head for B is
        // from B's old epoch, and B has seen nothing of A.
        let b = Hub::new(3);
        b.publish(report("B", "fresh", 1), None);
        assert_eq!(reconcile(("A", &a), ("B", &b)), (10, 1));
        // B's own change and the ten it received from A (read past).
        assert_eq!(a.head_of("B"), Head { epoch: 3, seq: 11 });
        assert_eq!(reconcile(("A", &a), ("B", &b)), (0, 0));
    }
}
