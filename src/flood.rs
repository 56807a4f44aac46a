//! The flooding rule and the anti-entropy bookkeeping around the store.
//!
//! A report offered to the [`Hub`] that wins in the store is queued, under
//! the same lock, to every attached neighbour but the one it came from; a
//! report that does not win goes nowhere. Because a report is forwarded only
//! when it changes a node's table, and tables only move towards each
//! client's newest report, flooding ends on any topology without message IDs.
//!
//! # Anti-entropy
//!
//! Every winning report gets the next number in this node's change sequence
//! ([`Store`]), and each node runs in a boot *epoch* (its start time), so
//! numbers from before a restart are never confused with numbers after.
//! For each neighbour, a node remembers `(epoch, head)`: it has received
//! every change of that neighbour's epoch up to `head` that the neighbour
//! would forward to it. When a link comes up each end tells the other that
//! pair; the other sends exactly its changes after `head` (all of them if the
//! epoch is not its current one), then streams live changes on the same
//! ordered link. Frames carry the highest change number they complete, so
//! the head advances as they arrive. The cost of catching up therefore
//! follows what changed while the link was down, not the size of the table;
//! only a node that restarted (and so lost its table) receives everything.
//!
//! Queues are bounded: a link that falls too far behind is cut rather than
//! allowed to grow memory or slow clients, and the same catch-up repairs it
//! when it is redialled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::report::{Report, HEARD_SLOTS};
use crate::store::{Offer, Seq, Store, Update};

/// A change queued for a neighbour: its number here, and the report, or
/// None where the neighbour is the one it came from (it only needs to know
/// that our sequence moved past it, so its head advances and a later
/// catch-up does not send the change back).
pub type Change = (Seq, Option<Report>);

/// How far this node has caught up with a neighbour's change sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Head {
    pub epoch: u64,
    pub seq: Seq,
}

struct Attachment {
    id: u64,
    /// The bit that marks reports as heard from this link, if one was free.
    slot: Option<u8>,
    queue: mpsc::Sender<Change>,
    /// Told when a frame's worth of updates is waiting in `queue`.
    full: Arc<Notify>,
    /// Cancelled when the link must go (too far behind, or replaced).
    cut: CancellationToken,
}

/// Updates waiting on a link that make a frame worth sending before its
/// batch window is over.
pub const FRAME_FULL: usize = 512;

#[derive(Default)]
struct Inner {
    store: Store,
    links: HashMap<String, Attachment>,
    heads: HashMap<String, Head>,
    next_id: u64,
    /// Which link holds each heard-from bit. A bit is free again only when
    /// its link has ended (detached), never merely replaced or cut: until
    /// then the link may still be sending, and reading its bit.
    slots: [Option<u64>; HEARD_SLOTS as usize],
}

/// A node's table and its links' outgoing queues.
pub struct Hub {
    epoch: u64,
    metrics: Arc<Metrics>,
    queue_len: usize,
    inner: Mutex<Inner>,
    /// Bumped whenever the table or the set of links changes, so that
    /// observers (tests, admin) wait on events rather than poll.
    generation: watch::Sender<u64>,
}

/// What a newly attached link must send first, and where it then reads.
pub struct Attached {
    pub id: u64,
    /// Changes the neighbour has not seen, in order.
    pub backlog: Vec<Change>,
    /// Everything up to here is covered once `backlog` is sent.
    pub head: Seq,
    pub live: mpsc::Receiver<Change>,
    /// Notified when [`FRAME_FULL`] updates wait in `live`.
    pub full: Arc<Notify>,
    /// The bit marking reports this link's neighbour sent: those in
    /// `live` so marked need not be sent.
    pub slot: Option<u8>,
    pub cut: CancellationToken,
}

impl Hub {
    pub fn new(epoch: u64, queue_len: usize) -> Hub {
        Hub::with_metrics(epoch, queue_len, Arc::default())
    }

    pub fn with_metrics(epoch: u64, queue_len: usize, metrics: Arc<Metrics>) -> Hub {
        Hub {
            epoch,
            metrics,
            queue_len: queue_len.max(1),
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
        let mut behind = Vec::new();
        let offer = self.offer(&mut inner, report, from, None, &mut behind);
        self.settle(inner, behind, matches!(offer, Offer::Won { .. }));
        offer
    }

    /// Offers reports from the neighbour `from` over its link `link`, in
    /// order, under one lock and with one event for observers: what a
    /// frame of updates costs.
    ///
    /// An update that is the very report already stored marks it as heard
    /// from that link, if the link is still the one attached: the neighbour
    /// has it, so the link need not send it back. (A link that was replaced
    /// may be hearing from a neighbour that has since restarted empty.)
    pub fn publish_all(
        &self,
        updates: impl IntoIterator<Item = impl Update>,
        from: &str,
        link: u64,
    ) {
        let mut inner = self.lock();
        let slot = inner
            .links
            .get(from)
            .filter(|a| a.id == link)
            .and_then(|a| a.slot);
        let mut behind = Vec::new();
        let mut won = false;
        for update in updates {
            won |= matches!(
                self.offer(&mut inner, update, Some(from), slot, &mut behind),
                Offer::Won { .. }
            );
        }
        self.settle(inner, behind, won);
    }

    /// Offers one report with the lock held; links that could not take a
    /// change are added to `behind`.
    fn offer(
        &self,
        inner: &mut Inner,
        update: impl Update,
        from: Option<&str>,
        heard: Option<u8>,
        behind: &mut Vec<String>,
    ) -> Offer {
        let offer = inner.store.offer_heard(update, heard);
        if from.is_some() {
            match offer {
                Offer::Won { .. } => self.metrics.updates_received.inc(),
                Offer::Lost(_) => self.metrics.updates_stale.inc(),
            };
        }
        if let Offer::Won { seq, report } = &offer {
            let seq = *seq;
            let mut forwarded = 0;
            for (name, link) in &inner.links {
                if Some(name.as_str()) == from {
                    // Only a hint: if it does not fit, the head advances
                    // with the next change instead; never worth a cut.
                    let _ = link.queue.try_send((seq, None));
                    continue;
                }
                forwarded += 1;
                if link.queue.try_send((seq, Some(report.clone()))).is_err() {
                    if !behind.contains(name) {
                        behind.push(name.clone());
                    }
                } else if link.queue.max_capacity() - link.queue.capacity() == FRAME_FULL {
                    // Once, as the queue reaches it: the link need not
                    // wait out its window for a full frame.
                    link.full.notify_one();
                }
            }
            self.metrics.updates_forwarded.inc_by(forwarded);
        }
        offer
    }

    /// Cuts the links that fell behind, releases the lock and tells
    /// observers if the table changed.
    fn settle(&self, mut inner: MutexGuard<'_, Inner>, behind: Vec<String>, changed: bool) {
        for name in behind {
            if let Some(link) = inner.links.remove(&name) {
                tracing::warn!(peer = %name, "link fell too far behind; cutting it (catch-up repairs it)");
                link.cut.cancel();
            }
        }
        drop(inner);
        if changed {
            self.bump();
        }
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
        let backlog: Vec<Change> = inner
            .store
            .changes_since(since)
            .map(|(seq, report)| (seq, Some(report.clone())))
            .collect();
        let head = inner.store.head().max(since);
        let (queue, live) = mpsc::channel(self.queue_len);
        let full = Arc::new(Notify::new());
        let cut = CancellationToken::new();
        inner.next_id += 1;
        let id = inner.next_id;
        let slot = inner.slots.iter().position(Option::is_none).map(|free| {
            inner.slots[free] = Some(id);
            free as u8
        });
        let attachment = Attachment {
            id,
            slot,
            queue,
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
            backlog,
            head,
            live,
            full,
            slot,
            cut,
        }
    }

    /// Detaches link `id` of `peer`, unless a newer link replaced it.
    pub fn detach(&self, peer: &str, id: u64) {
        let mut inner = self.lock();
        for slot in &mut inner.slots {
            if *slot == Some(id) {
                *slot = None;
            }
        }
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

    /// The reports queued on a link (markers left out).
    fn drain(rx: &mut mpsc::Receiver<Change>) -> Vec<(Seq, Vec<u8>)> {
        let mut out = Vec::new();
        while let Ok((seq, r)) = rx.try_recv() {
            if let Some(r) = r {
                out.push((seq, r.client().to_vec()));
            }
        }
        out
    }

    #[test]
    fn winners_go_to_every_neighbour_but_the_sender() {
        let hub = Hub::new(7, 16);
        let mut a = hub.attach("A", Head::default());
        let mut b = hub.attach("B", Head::default());
        let mut c = hub.attach("C", Head::default());
        hub.publish(report("A", "k", 5), Some("A"));
        // The sender gets only a marker that the sequence moved.
        assert!(matches!(a.live.try_recv(), Ok((1, None))));
        assert!(drain(&mut a.live).is_empty());
        assert_eq!(drain(&mut b.live), vec![(1, b"k".to_vec())]);
        assert_eq!(drain(&mut c.live), vec![(1, b"k".to_vec())]);
        // A client's report goes to everyone.
        hub.publish(report("Z", "j", 5), None);
        for link in [&mut a, &mut b, &mut c] {
            assert_eq!(drain(&mut link.live), vec![(2, b"j".to_vec())]);
        }
    }

    #[test]
    fn the_very_report_heard_back_marks_it_for_that_link_only() {
        let hub = Hub::new(7, 16);
        let a = hub.attach("A", Head::default());
        let b = hub.attach("B", Head::default());
        let (sa, sb) = (a.slot.unwrap(), b.slot.unwrap());
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
    fn a_replaced_link_marks_nothing_and_its_bit_waits_for_it_to_end() {
        let hub = Hub::new(7, 16);
        let old = hub.attach("A", Head::default());
        let new = hub.attach("A", Head::default());
        assert_ne!(old.slot, new.slot, "the old link may still read its bit");
        let r = report("Z", "k", 5);
        hub.publish(r.clone(), None);
        hub.publish_all([Report::parse(r.line()).unwrap()], "A", old.id);
        assert!(!r.heard(old.slot.unwrap()) && !r.heard(new.slot.unwrap()));
        // Its bit is free once it has ended.
        hub.detach("A", old.id);
        let other = hub.attach("C", Head::default());
        assert_eq!(other.slot, old.slot);
    }

    #[test]
    fn links_beyond_the_marking_bits_get_none() {
        let hub = Hub::new(7, 16);
        let links: Vec<Attached> = (0..=HEARD_SLOTS)
            .map(|i| hub.attach(&format!("P{i}"), Head::default()))
            .collect();
        assert!(links[..HEARD_SLOTS as usize]
            .iter()
            .all(|l| l.slot.is_some()));
        assert_eq!(links[HEARD_SLOTS as usize].slot, None);
    }

    #[test]
    fn losers_go_nowhere() {
        let hub = Hub::new(7, 16);
        let mut a = hub.attach("A", Head::default());
        hub.publish(report("B", "k", 5), Some("B"));
        assert_eq!(drain(&mut a.live).len(), 1);
        assert!(matches!(
            hub.publish(report("B", "k", 4), Some("B")),
            Offer::Lost(_)
        ));
        assert!(matches!(
            hub.publish(report("B", "k", 5), Some("B")),
            Offer::Lost(_)
        ));
        assert!(drain(&mut a.live).is_empty());
    }

    #[test]
    fn attach_sends_only_what_the_neighbour_has_not_seen() {
        let hub = Hub::new(7, 16);
        for (i, c) in ["a", "b", "c", "d"].iter().enumerate() {
            hub.publish(report("X", c, i as u64), None);
        }
        hub.publish(report("X", "a", 10), None); // seq 5 supersedes seq 1
        let got = hub.attach("P", Head { epoch: 7, seq: 3 });
        let clients: Vec<_> = got
            .backlog
            .iter()
            .map(|(s, r)| (*s, r.as_ref().unwrap().client().to_vec()))
            .collect();
        assert_eq!(clients, vec![(4, b"d".to_vec()), (5, b"a".to_vec())]);
        assert_eq!(got.head, 5);
        // Up to date: nothing to send, head stays.
        let got = hub.attach("P", Head { epoch: 7, seq: 5 });
        assert!(got.backlog.is_empty());
        assert_eq!(got.head, 5);
    }

    #[test]
    fn a_head_from_another_epoch_gets_everything() {
        let hub = Hub::new(8, 16);
        hub.publish(report("X", "a", 1), None);
        hub.publish(report("X", "b", 1), None);
        let got = hub.attach("P", Head { epoch: 7, seq: 99 });
        assert_eq!(got.backlog.len(), 2);
        assert_eq!(got.head, 2);
    }

    #[test]
    fn reattaching_cuts_the_old_link_and_detach_keeps_the_new() {
        let hub = Hub::new(1, 16);
        let old = hub.attach("P", Head::default());
        let new = hub.attach("P", Head::default());
        assert!(old.cut.is_cancelled());
        hub.detach("P", old.id);
        assert_eq!(hub.attached(), vec!["P".to_string()]);
        hub.detach("P", new.id);
        assert!(hub.attached().is_empty());
    }

    #[test]
    fn a_full_queue_drops_markers_but_never_cuts_the_sender() {
        let hub = Hub::new(1, 2);
        let sender = hub.attach("S", Head::default());
        for i in 0..5 {
            hub.publish(report("S", &format!("c{i}"), 1), Some("S"));
        }
        assert!(!sender.cut.is_cancelled());
        assert_eq!(hub.attached(), vec!["S".to_string()]);
    }

    #[test]
    fn a_link_that_falls_behind_is_cut_and_others_go_on() {
        let hub = Hub::new(1, 2);
        let slow = hub.attach("S", Head::default());
        let mut fast = hub.attach("F", Head::default());
        for i in 0..3 {
            hub.publish(report("X", &format!("c{i}"), 1), None);
            drain(&mut fast.live);
        }
        assert!(slow.cut.is_cancelled());
        assert_eq!(hub.attached(), vec!["F".to_string()]);
    }

    #[test]
    fn heads_reset_on_a_new_epoch_and_never_go_back() {
        let hub = Hub::new(1, 2);
        hub.advance("P", 5, 10);
        hub.advance("P", 5, 8);
        assert_eq!(hub.head_of("P"), Head { epoch: 5, seq: 10 });
        hub.advance("P", 6, 2);
        assert_eq!(hub.head_of("P"), Head { epoch: 6, seq: 2 });
    }

    /// Plays one link coming up between two hubs, as the link code does:
    /// both ends attach with what they have seen of the other, send their
    /// backlogs, and then their live queues (which by now hold markers for
    /// what they received), and each receiver records the heads. Returns
    /// how many reports went each way.
    fn reconcile(a: (&str, &Hub), b: (&str, &Hub)) -> (usize, usize) {
        let (seen_by_a, seen_by_b) = (a.1.head_of(b.0), b.1.head_of(a.0));
        let mut ends = [a.1.attach(b.0, seen_by_b), b.1.attach(a.0, seen_by_a)];
        let mut sent = [0, 0];
        let pairs = [(a, b), (b, a)];
        for (i, ((from_name, from), (_, to))) in pairs.into_iter().enumerate() {
            let end = &mut ends[i];
            for (_, report) in std::mem::take(&mut end.backlog) {
                sent[i] += 1;
                to.publish(report.unwrap(), Some(from_name));
            }
            to.advance(from_name, from.epoch(), end.head);
        }
        for (i, ((from_name, from), (to_name, to))) in pairs.into_iter().enumerate() {
            let end = &mut ends[i];
            while let Ok((seq, report)) = end.live.try_recv() {
                if let Some(report) = report {
                    sent[i] += 1;
                    to.publish(report, Some(from_name));
                }
                to.advance(from_name, from.epoch(), seq);
            }
            from.detach(to_name, end.id);
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
        let a = Hub::new(1, 128);
        let b = Hub::new(2, 128);
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
        let a = Hub::new(1, 16);
        let b = Hub::new(2, 16);
        for i in 0..10 {
            a.publish(report("A", &format!("c{i}"), 1), None);
        }
        reconcile(("A", &a), ("B", &b));
        // B restarts: a new epoch and an empty table; A's head for B is
        // from B's old epoch, and B has seen nothing of A.
        let b = Hub::new(3, 16);
        b.publish(report("B", "fresh", 1), None);
        assert_eq!(reconcile(("A", &a), ("B", &b)), (10, 1));
        // B's own change and the ten it received from A (as markers).
        assert_eq!(a.head_of("B"), Head { epoch: 3, seq: 11 });
        assert_eq!(reconcile(("A", &a), ("B", &b)), (0, 0));
    }
}
