//! The newest-wins store: per client, the report with the greatest client
//! time (ties settled by [`Report::newness`]).
//!
//! Every winning report gets the next number in this node's change sequence.
//! The store keeps, for each client, the number of its current report, and
//! an index from numbers to reports; [`Store::changes_since`] is what
//! anti-entropy sends a neighbour that has seen everything up to a number,
//! so its cost follows what changed, not the size of the table.

use std::cmp::Ordering;
use std::hash::BuildHasher;

use hashbrown::hash_table::{Entry, HashTable};
use hashbrown::DefaultHashBuilder;

use crate::report::{Checked, Report};

/// A position in one node's change sequence. 0 means "nothing yet".
pub type Seq = u64;

#[derive(Debug, Clone, PartialEq)]
pub enum Offer {
    /// The report is now the client's newest, numbered `seq`.
    Won { seq: Seq, report: Report },
    /// A report at least as new was already stored: this one changes
    /// nothing, and the stored one is the answer.
    Lost(Report),
}

pub struct Store {
    /// Each client's current report, found by the report's own client ID
    /// (so the table keeps no separate copy of it); the report carries its
    /// change number. One pointer per slot. The hasher is keyed at random
    /// per process: client IDs come from anyone.
    clients: HashTable<Report>,
    hasher: DefaultHashBuilder,
    /// The change index: every winning report in change order, with its
    /// number. A report that is superseded leaves a hole (None) behind;
    /// holes are squeezed out once they pass a quarter of the reports, and
    /// the index grows by a quarter at a time, so it costs 16 to 25 bytes
    /// per client (and a quarter of a byte for `marks`) and amortised
    /// constant time per change.
    changes: Vec<(Seq, Option<Report>)>,
    holes: usize,
    /// `(index, number)`: since the last squeeze every number has been
    /// pushed in turn, so from `index` on the entry for number `n` is at
    /// `index + (n - number)`. Entries before `index`, the part the last
    /// squeeze left, are found through `marks`.
    dense: (usize, Seq),
    /// The number of every [`MARK_EVERY`]th entry of the squeezed part
    /// (holes made since keep their places): an index of the index, small
    /// enough to stay in cache, so that finding an old entry (see
    /// [`position`]) waits out one cache miss, in the block of entries the
    /// marks point to, instead of one per step across the whole index.
    marks: Vec<Seq>,
    head: Seq,
}

impl Default for Store {
    fn default() -> Store {
        Store {
            clients: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            changes: Vec::new(),
            holes: 0,
            // Number 1 will be the first entry.
            dense: (0, 1),
            marks: Vec::new(),
            head: 0,
        }
    }
}

/// What can be offered to the store: a report, or a checked line that
/// becomes one only if it wins (most updates a node hears from its
/// neighbours lose, and then cost no allocation).
pub trait Update {
    fn client(&self) -> &[u8];
    /// [`Report::newness`] against the stored report.
    fn newness(&self, current: &Report) -> Ordering;
    /// The report to store, numbered `seq`, from link `source`.
    fn into_report(self, seq: Seq, source: u16) -> Report;
}

impl Update for Report {
    fn client(&self) -> &[u8] {
        Report::client(self)
    }
    fn newness(&self, current: &Report) -> Ordering {
        Report::newness(self, current)
    }
    fn into_report(self, seq: Seq, source: u16) -> Report {
        self.numbered(seq, source)
    }
}

impl Update for Checked<'_> {
    fn client(&self) -> &[u8] {
        Checked::client(self)
    }
    fn newness(&self, current: &Report) -> Ordering {
        Checked::newness(self, current)
    }
    fn into_report(self, seq: Seq, source: u16) -> Report {
        self.numbered(seq, source)
    }
}

/// Holes are not squeezed out of a small index.
const HOLES_KEPT: usize = 1024;

/// Entries of the squeezed part of the change index per mark (see
/// [`Store::marks`]): a block of them is 512 bytes.
const MARK_EVERY: usize = 32;

impl Store {
    pub fn new() -> Store {
        Store::default()
    }

    /// Stores `update` if it is newer than the client's current report.
    /// One hash of the client ID and one probe, whatever the outcome.
    pub fn offer(&mut self, update: impl Update) -> Offer {
        let hash = self.hash(update.client());
        self.offer_hashed(update, hash, None, 0)
    }

    /// The hash the table files `client` under.
    pub fn hash(&self, client: &[u8]) -> u64 {
        self.hasher.hash_one(client)
    }

    /// Brings into cache the stored reports of the clients hashed `hashes`
    /// (by [`Store::hash`]), before they are offered. Offering a batch one
    /// by one waits out a cache miss on each stored report in turn; these
    /// lookups depend on nothing but their hash, so the processor overlaps
    /// their misses. A lookup takes the first slot whose tag matches, which
    /// is almost always the client's: a wrong one costs only a wasted load.
    pub fn warm(&self, hashes: &[u64]) {
        for &hash in hashes {
            if let Some(report) = self.clients.find(hash, |_| true) {
                touch_client(report);
            }
        }
    }

    /// [`Store::offer`] of an update heard from the neighbour on the link
    /// tagged `source` (0: none), whose heard-from bit is `heard`: if it is
    /// the very report stored (the same line), the stored report is marked
    /// as heard from that link; if it wins, it is stored with that tag.
    /// `hash` is the client ID's [`Store::hash`], taken beforehand (see
    /// [`Store::warm`]); another would file the report where lookups do not
    /// find it, so this stays inside the crate.
    pub(crate) fn offer_hashed(
        &mut self,
        update: impl Update,
        hash: u64,
        heard: Option<u8>,
        source: u16,
    ) -> Offer {
        if self.clients.len() == self.clients.capacity() {
            self.grow();
        }
        let hasher = &self.hasher;
        let entry = self.clients.entry(
            hash,
            |current| current.client() == update.client(),
            |r| hasher.hash_one(r.client()),
        );
        let seq = self.head + 1;
        let report;
        match entry {
            Entry::Occupied(mut slot) => {
                let current = slot.get_mut();
                match update.newness(current) {
                    Ordering::Greater => {}
                    Ordering::Equal => {
                        if let Some(link) = heard {
                            current.mark_heard(link);
                        }
                        return Offer::Lost(current.clone());
                    }
                    Ordering::Less => return Offer::Lost(current.clone()),
                }
                report = update.into_report(seq, source);
                if let Some(old) = position(&self.changes, self.dense, &self.marks, current.seq()) {
                    self.changes[old].1 = None;
                    self.holes += 1;
                }
                *current = report.clone();
            }
            Entry::Vacant(slot) => {
                report = update.into_report(seq, source);
                slot.insert(report.clone());
            }
        }
        self.head = seq;
        if self.holes > HOLES_KEPT && self.holes > self.clients.len() / 4 {
            self.changes.retain(|(_, r)| r.is_some());
            self.holes = 0;
            self.dense = (self.changes.len(), seq);
            self.marks.clear();
            let marks = self.changes.iter().step_by(MARK_EVERY);
            self.marks.extend(marks.map(|&(s, _)| s));
        }
        if self.changes.len() == self.changes.capacity() {
            // Grow by a quarter, not double: at a million clients doubling
            // would leave up to 16 MB unused.
            self.changes.reserve_exact(self.changes.len() / 4 + 1024);
        }
        self.changes.push((seq, Some(report.clone())));
        Offer::Won { seq, report }
    }

    /// Doubles the table once it is full, as the table itself would, but
    /// files the reports anew a batch at a time: each one's client ID (to
    /// hash) is a cache miss, and touching a whole batch's first lets their
    /// misses overlap instead of being waited out one by one. (The growth
    /// past 917,504 clients, with the hub locked, went from about 82 to
    /// 64 ms in the criterion benchmark `growth`.)
    fn grow(&mut self) {
        const BATCH: usize = 16;
        let hasher = &self.hasher;
        let old = std::mem::take(&mut self.clients);
        let mut bigger = HashTable::with_capacity((old.capacity() * 2).max(BATCH));
        let mut reports = old.into_iter();
        loop {
            let batch: [Option<Report>; BATCH] = std::array::from_fn(|_| reports.next());
            if batch[0].is_none() {
                break;
            }
            for report in batch.iter().flatten() {
                touch_client(report);
            }
            for report in batch.into_iter().flatten() {
                let hash = hasher.hash_one(report.client());
                bigger.insert_unique(hash, report, |r| hasher.hash_one(r.client()));
            }
        }
        self.clients = bigger;
    }

    pub fn get(&self, client: &[u8]) -> Option<&Report> {
        let hash = self.hasher.hash_one(client);
        self.clients.find(hash, |r| r.client() == client)
    }

    /// The number of the latest change.
    pub fn head(&self) -> Seq {
        self.head
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Where the change index holds number `seq`, if it does.
    #[cfg(test)]
    fn position(&self, seq: Seq) -> Option<usize> {
        position(&self.changes, self.dense, &self.marks, seq)
    }

    /// The current reports changed after `seq`, in change order.
    pub fn changes_since(&self, seq: Seq) -> impl Iterator<Item = (Seq, &Report)> {
        let from = self.changes.partition_point(|&(s, _)| s <= seq);
        self.changes[from..]
            .iter()
            .filter_map(|(seq, report)| Some((*seq, report.as_ref()?)))
    }
}

/// Where `changes`, dense from `dense` on and marked by `marks` before
/// that (see [`Store`]), holds number `seq`, if it does.
fn position(
    changes: &[(Seq, Option<Report>)],
    dense: (usize, Seq),
    marks: &[Seq],
    seq: Seq,
) -> Option<usize> {
    let (at, first) = dense;
    let index = match seq.checked_sub(first) {
        Some(after) => at.checked_add(usize::try_from(after).ok()?)?,
        None => {
            // The block that starts at the last mark not above `seq`; the
            // next mark (or, for the last block, the first dense number)
            // bounds its numbers from above.
            let k = find_mark(marks, first, seq)?;
            let start = k * MARK_EVERY;
            let block = changes.get(start..(start + MARK_EVERY).min(at))?;
            let above = marks.get(k + 1).copied().unwrap_or(first);
            start + find_in_block(block, (marks[k], above), seq)
        }
    };
    changes.get(index).filter(|(s, _)| *s == seq).map(|_| index)
}

/// Which of `marks` (numbers of the entries that start each block, all
/// below `first`) is the last at or below `seq`, if any is. Steady updates
/// spread the numbers evenly, so where `seq` falls between the first mark
/// and `first` usually names it at once; if not, bisection.
fn find_mark(marks: &[Seq], first: Seq, seq: Seq) -> Option<usize> {
    let k = interpolate(seq, (*marks.first()?, first), marks.len());
    if marks.get(k).is_some_and(|&m| m <= seq) && marks.get(k + 1).is_none_or(|&m| m > seq) {
        return Some(k);
    }
    marks.partition_point(|&m| m <= seq).checked_sub(1)
}

/// Where in `block`, whose numbers rise from `bounds.0` (its first) to
/// below `bounds.1`, number `seq` is if it is there. Numbers rise by one
/// per change and a squeeze takes out holes spread along the index, so
/// where `seq` falls between the bounds is a good guess at where it sits;
/// from there it steps to it, inside the block.
fn find_in_block(block: &[(Seq, Option<Report>)], bounds: (Seq, Seq), seq: Seq) -> usize {
    let Some(last) = block.len().checked_sub(1) else {
        return 0;
    };
    let mut i = interpolate(seq, bounds, block.len()).min(last);
    while i < last && block[i].0 < seq {
        i += 1;
    }
    while i > 0 && block[i].0 > seq {
        i -= 1;
    }
    i
}

/// Where `seq` falls between `low` and `high`, scaled to `len` places
/// (0 below `low`, `len` or more at `high` and past it): numbers rise by
/// about one per entry, so this guesses an entry's place among `len`.
fn interpolate(seq: Seq, (low, high): (Seq, Seq), len: usize) -> usize {
    let span = u128::from(high.saturating_sub(low)).max(1);
    let guess = u128::from(seq.saturating_sub(low)) * len as u128 / span;
    usize::try_from(guess).unwrap_or(usize::MAX)
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("clients", &self.clients.len())
            .field("head", &self.head)
            .finish()
    }
}

/// Reads the first and last bytes of a stored report's client ID, so that
/// they are in cache when it is hashed or compared. The bytes themselves,
/// not their address: that would need no load.
fn touch_client(report: &Report) {
    let client = report.client();
    std::hint::black_box((client.first().copied(), client.last().copied()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timestamp::Timestamp;
    use proptest::prelude::*;

    pub(crate) fn report(server: &str, client: &str, secs: u64, nanos: u32) -> Report {
        let time = Timestamp::new(secs, nanos).unwrap();
        let text = format!("{secs}.{nanos:09}");
        Report::new(
            server,
            Timestamp::new(2_000_000_000, 0).unwrap(),
            client.as_bytes(),
            b"+1+1",
            text.as_bytes(),
            time,
        )
    }

    #[test]
    fn newer_reports_win_and_older_ones_get_the_winner() {
        let mut store = Store::new();
        let first = report("Clark", "kiwi", 10, 5);
        let newer = report("Bona", "kiwi", 10, 6);
        assert_eq!(
            store.offer(first.clone()),
            Offer::Won {
                seq: 1,
                report: first.clone()
            }
        );
        assert_eq!(
            store.offer(newer.clone()),
            Offer::Won {
                seq: 2,
                report: newer.clone()
            }
        );
        assert_eq!(store.offer(first), Offer::Lost(newer.clone()));
        assert_eq!(store.offer(newer.clone()), Offer::Lost(newer.clone()));
        assert_eq!(store.get(b"kiwi"), Some(&newer));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn growing_the_table_keeps_every_client_findable_and_the_table_doubles() {
        let mut store = Store::new();
        let mut capacities = Vec::new();
        for i in 0..5_000u32 {
            let r = report("Clark", &format!("c{i}"), 10, 0);
            assert!(matches!(store.offer(r), Offer::Won { .. }), "c{i}");
            if capacities.last() != Some(&store.clients.capacity()) {
                capacities.push(store.clients.capacity());
            }
            // Every client stored so far, through each growth: found, with
            // its report, and a stale copy still loses to it.
            if i.is_power_of_two() || i == 4_999 {
                for j in 0..=i {
                    let client = format!("c{j}");
                    let stored = store.get(client.as_bytes()).expect(&client).clone();
                    assert_eq!(stored.client(), client.as_bytes());
                    let stale = report("Bona", &client, 9, 0);
                    assert_eq!(store.offer(stale), Offer::Lost(stored));
                }
            }
        }
        assert_eq!(store.len(), 5_000);
        assert!(store.get(b"c5000").is_none());
        // The table doubled each time (as many buckets again), never more.
        assert!(capacities.len() > 8, "{capacities:?}");
        for pair in capacities.windows(2).skip(2) {
            assert!(
                pair[1] > pair[0] && pair[1] <= 2 * pair[0] + 2,
                "{capacities:?}"
            );
        }
    }

    #[test]
    fn warming_changes_nothing_and_offers_by_hash_match_offers() {
        let (mut warmed, mut plain) = (Store::new(), Store::new());
        for i in 0..100 {
            let r = report("Clark", &format!("c{i}"), 10, 0);
            warmed.offer(r.clone());
            plain.offer(r);
        }
        // Present and absent clients, and a hash no client has.
        let mut hashes: Vec<u64> = (0..200)
            .map(|i| warmed.hash(format!("c{i}").as_bytes()))
            .collect();
        hashes.push(0);
        warmed.warm(&hashes);
        assert_eq!(warmed.head(), plain.head());
        assert_eq!(warmed.len(), 100);
        for i in (0..200).step_by(3) {
            let newer = report("Bona", &format!("c{i}"), 10, 1);
            let hash = warmed.hash(newer.client());
            assert_eq!(
                warmed.offer_hashed(newer.clone(), hash, None, 0),
                plain.offer(newer)
            );
        }
        let list = |s: &Store| {
            s.changes_since(0)
                .map(|(q, r)| (q, r.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(list(&warmed), list(&plain));
    }

    #[test]
    fn equal_times_settle_on_the_same_report_in_any_order() {
        let a = report("Bailey", "kiwi", 10, 0);
        let b = report("Jaquez", "kiwi", 10, 0);
        for order in [[a.clone(), b.clone()], [b.clone(), a.clone()]] {
            let mut store = Store::new();
            for r in order {
                store.offer(r);
            }
            assert_eq!(store.get(b"kiwi"), Some(&b));
        }
    }

    #[test]
    fn changes_since_lists_only_current_reports_after_a_point() {
        let mut store = Store::new();
        store.offer(report("Clark", "a", 1, 0));
        store.offer(report("Clark", "b", 1, 0));
        store.offer(report("Clark", "a", 2, 0));
        store.offer(report("Clark", "c", 1, 0));
        let since = |seq| -> Vec<(Seq, Vec<u8>)> {
            store
                .changes_since(seq)
                .map(|(s, r)| (s, r.client().to_vec()))
                .collect()
        };
        assert_eq!(
            since(0),
            vec![(2, b"b".to_vec()), (3, b"a".to_vec()), (4, b"c".to_vec())]
        );
        assert_eq!(since(3), vec![(4, b"c".to_vec())]);
        assert_eq!(since(4), vec![]);
        assert_eq!(store.head(), 4);
    }

    #[test]
    fn holes_are_squeezed_out_and_changes_stay_right() {
        let mut store = Store::new();
        // Ten clients updated many times: far more holes than reports.
        for round in 0..1000u64 {
            for c in 0..10 {
                store.offer(report("Clark", &format!("c{c}"), round, 0));
            }
        }
        assert!(
            store.changes.len() <= 2 * HOLES_KEPT + 20,
            "{}",
            store.changes.len()
        );
        let all: Vec<Seq> = store.changes_since(0).map(|(s, _)| s).collect();
        assert_eq!(all, (9991..=10_000).collect::<Vec<_>>());
        assert_eq!(store.changes_since(9995).count(), 5);
        for (seq, r) in store.changes_since(0) {
            assert_eq!(r.time().secs(), 999, "seq {seq}");
        }
    }

    /// A superseded report's entry is found by where its number must be,
    /// before and after squeezes: each client's current report is where
    /// the index says, and the index holds nothing else.
    #[test]
    fn each_current_report_is_found_at_its_number_across_squeezes() {
        let mut store = Store::new();
        let mut squeezes = 0;
        // Clients updated at uneven rates, so squeezes leave the numbers
        // before them sparse.
        for round in 0..3000u64 {
            let before = store.changes.len();
            store.offer(report("Clark", &format!("c{}", round % 1500), round, 0));
            store.offer(report("Clark", &format!("c{}", round % 7), round, 1));
            if store.changes.len() < before {
                squeezes += 1;
            }
            if round % 97 == 0 || store.changes.len() < before {
                for (seq, r) in store.changes_since(0) {
                    let at = store.position(seq).expect("a current report's number");
                    assert!(store.changes[at].1.as_ref().is_some_and(|h| h.ptr_eq(r)));
                    assert!(store.get(r.client()).is_some_and(|c| c.ptr_eq(r)));
                }
                assert_eq!(store.changes_since(0).count(), store.len());
            }
        }
        assert!(squeezes >= 2, "{squeezes} squeezes");
        assert_eq!(store.position(0), None);
        assert_eq!(store.position(store.head() + 1), None);
    }

    /// A report carries its store's change number, so a second store takes
    /// a copy, and each keeps its own numbers right.
    #[test]
    fn two_stores_never_share_a_report() {
        let (mut a, mut b) = (Store::new(), Store::new());
        let first = report("Clark", "x", 1, 0);
        a.offer(report("Clark", "y", 1, 0));
        a.offer(first.clone());
        b.offer(first.clone());
        let in_b = b.get(b"x").unwrap();
        assert!(a.get(b"x").unwrap().ptr_eq(&first));
        assert!(!in_b.ptr_eq(&first));
        assert_eq!(in_b, &first);
        assert_eq!((first.seq(), in_b.seq()), (2, 1));
        let newer = report("Clark", "x", 2, 0);
        a.offer(newer.clone());
        b.offer(newer);
        assert_eq!(a.changes_since(0).count(), 2);
        assert_eq!(b.changes_since(0).count(), 1);
        assert_eq!(b.changes_since(0).next().unwrap().0, 2);
    }

    /// Two stores taking the same new report at the same moment: one keeps
    /// it, the other a copy, never both the same allocation.
    #[test]
    fn stores_racing_for_one_report_never_share_it() {
        for round in 0..200 {
            let r = report("Clark", &format!("c{round}"), 1, 0);
            let barrier = std::sync::Barrier::new(2);
            let held: Vec<Report> = std::thread::scope(|scope| {
                let racers: Vec<_> = (0..2)
                    .map(|_| {
                        let (r, barrier) = (r.clone(), &barrier);
                        scope.spawn(move || {
                            let mut store = Store::new();
                            store.offer(report("Clark", "pad", 1, 0));
                            barrier.wait();
                            store.offer(r.clone());
                            store.get(r.client()).unwrap().clone()
                        })
                    })
                    .collect();
                racers.into_iter().map(|t| t.join().unwrap()).collect()
            });
            assert!(
                !held[0].ptr_eq(&held[1]),
                "round {round}: one allocation in two stores"
            );
            assert_eq!((held[0].seq(), held[1].seq()), (2, 2));
        }
    }

    proptest! {
        /// The marks and a guess inside their block find what a binary
        /// search finds, for any rising numbers (gaps of one, of thousands,
        /// or huge ones, as a client that never moves leaves before the
        /// rest) and any number looked for, in the index or not.
        #[test]
        fn marks_find_what_bisection_finds(
            gaps in proptest::collection::vec(prop_oneof![1u64..3, 1u64..5000, 1u64..(u64::MAX / 1024)], 0..300),
            probes in proptest::collection::vec(any::<prop::sample::Index>(), 1..40),
            far in any::<u64>(),
        ) {
            let mut seq = 0u64;
            let changes: Vec<(Seq, Option<Report>)> = gaps
                .iter()
                .map(|gap| {
                    seq += gap;
                    (seq, None)
                })
                .collect();
            // As a squeeze leaves them, the next number still to come.
            let marks: Vec<Seq> = changes.iter().step_by(MARK_EVERY).map(|&(s, _)| s).collect();
            let dense = (changes.len(), seq + 1);
            let mut looked_for = vec![0, 1, far, seq];
            for probe in &probes {
                if !changes.is_empty() {
                    let at = changes[probe.index(changes.len())].0;
                    looked_for.extend([at - 1, at, at + 1]);
                }
            }
            for want in looked_for.into_iter().filter(|&w| w < dense.1) {
                prop_assert_eq!(
                    position(&changes, dense, &marks, want),
                    changes.binary_search_by_key(&want, |&(s, _)| s).ok(),
                    "looking for {}", want
                );
            }
        }

        /// Whatever order reports arrive in, the store ends with each
        /// client's newest, and its change index holds exactly the table.
        #[test]
        fn order_does_not_matter(reports in proptest::collection::vec((0usize..4, 0u64..3, 0u32..3, 0usize..3), 1..40)) {
            let servers = ["Bailey", "Bona", "Campbell"];
            let made: Vec<_> = reports
                .iter()
                .map(|&(c, s, n, srv)| report(servers[srv], &format!("c{c}"), s, n))
                .collect();
            let mut forward = Store::new();
            let mut backward = Store::new();
            for r in &made { forward.offer(r.clone()); }
            for r in made.iter().rev() { backward.offer(r.clone()); }
            for c in 0..4 {
                let key = format!("c{c}");
                let newest = made.iter().filter(|r| r.client() == key.as_bytes()).max_by(|a, b| a.newness(b));
                prop_assert_eq!(forward.get(key.as_bytes()), newest);
                prop_assert_eq!(backward.get(key.as_bytes()), newest);
            }
            prop_assert_eq!(forward.changes_since(0).count(), forward.len());
            for (_, r) in forward.changes_since(0) {
                prop_assert!(forward.get(r.client()).is_some_and(|c| c.ptr_eq(r)));
            }
        }

        /// A checked line, still in its buffer, settles exactly as the
        /// report parsed from it would.
        #[test]
        fn checked_lines_settle_as_reports_do(reports in proptest::collection::vec((0usize..3, 0u64..3, 0u32..2, 0usize..3), 1..30)) {
            let servers = ["Bailey", "Bona", "Campbell"];
            let mut by_report = Store::new();
            let mut by_line = Store::new();
            for &(c, s, n, srv) in &reports {
                let r = report(servers[srv], &format!("c{c}"), s, n);
                let line = r.line().to_vec();
                let expected = by_report.offer(r);
                let got = by_line.offer(Report::check(&line).unwrap());
                prop_assert_eq!(got, expected);
            }
            prop_assert_eq!(by_line.head(), by_report.head());
        }
    }
}
