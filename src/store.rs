//! The newest-wins store: per client, the report with the greatest client
//! time (ties settled by [`Report::newness`]).
//!
//! Every winning report gets the next number in this node's change sequence.
//! The store keeps, for each client, the number of its current report, and
//! an index from numbers to reports; [`Store::changes_since`] is what
//! anti-entropy sends a neighbour that has seen everything up to a number,
//! so its cost follows what changed, not the size of the table.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::report::Report;

/// A position in one node's change sequence. 0 means "nothing yet".
pub type Seq = u64;

#[derive(Debug, Clone, PartialEq)]
pub enum Offer {
    /// The report is now the client's newest, numbered `seq`.
    Won { seq: Seq },
    /// A report at least as new was already stored: this one changes
    /// nothing, and the stored one is the answer.
    Lost(Arc<Report>),
}

/// A report as a map key: it hashes and compares as its client ID, so the
/// table needs no separate copy of each ID.
#[derive(Debug)]
struct ByClient(Arc<Report>);

impl Borrow<[u8]> for ByClient {
    fn borrow(&self) -> &[u8] {
        self.0.client()
    }
}

impl Hash for ByClient {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Must hash exactly as the borrowed form, [u8], does.
        self.0.client().hash(state);
    }
}

impl PartialEq for ByClient {
    fn eq(&self, other: &Self) -> bool {
        self.0.client() == other.0.client()
    }
}

impl Eq for ByClient {}

#[derive(Debug, Default)]
pub struct Store {
    /// Each client's current report, with its change number.
    clients: HashMap<ByClient, Seq>,
    changes: BTreeMap<Seq, Arc<Report>>,
    head: Seq,
}

impl Store {
    pub fn new() -> Store {
        Store::default()
    }

    /// Stores `report` if it is newer than the client's current report.
    pub fn offer(&mut self, report: Arc<Report>) -> Offer {
        if let Some((current, &old_seq)) = self.clients.get_key_value(report.client()) {
            if report.newness(&current.0) != Ordering::Greater {
                return Offer::Lost(current.0.clone());
            }
            self.changes.remove(&old_seq);
            // The key is the old report itself: replace it, not just the
            // value.
            self.clients.remove(report.client());
        }
        self.head += 1;
        self.changes.insert(self.head, report.clone());
        self.clients.insert(ByClient(report), self.head);
        Offer::Won { seq: self.head }
    }

    pub fn get(&self, client: &[u8]) -> Option<&Arc<Report>> {
        self.clients.get_key_value(client).map(|(key, _)| &key.0)
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

    /// The current reports changed after `seq`, in change order.
    pub fn changes_since(&self, seq: Seq) -> impl Iterator<Item = (Seq, &Arc<Report>)> {
        self.changes
            .range(seq.saturating_add(1)..)
            .map(|(&seq, report)| (seq, report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::Location;
    use crate::timestamp::Timestamp;
    use proptest::prelude::*;

    pub(crate) fn report(server: &str, client: &str, secs: u64, nanos: u32) -> Arc<Report> {
        let time = Timestamp::new(secs, nanos).unwrap();
        let text = format!("{secs}.{nanos:09}");
        Arc::new(Report::new(
            server,
            Timestamp::new(2_000_000_000, 0).unwrap(),
            client.as_bytes(),
            b"+1+1",
            Location { lat: 1.0, lon: 1.0 },
            text.as_bytes(),
            time,
        ))
    }

    #[test]
    fn newer_reports_win_and_older_ones_get_the_winner() {
        let mut store = Store::new();
        let first = report("Clark", "kiwi", 10, 5);
        let newer = report("Bona", "kiwi", 10, 6);
        assert_eq!(store.offer(first.clone()), Offer::Won { seq: 1 });
        assert_eq!(store.offer(newer.clone()), Offer::Won { seq: 2 });
        assert_eq!(store.offer(first), Offer::Lost(newer.clone()));
        assert_eq!(store.offer(newer.clone()), Offer::Lost(newer.clone()));
        assert_eq!(store.get(b"kiwi"), Some(&newer));
        assert_eq!(store.len(), 1);
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

    proptest! {
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
        }
    }
}
