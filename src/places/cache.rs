//! A TTL cache with request coalescing in front of a places backend, because
//! every upstream search can cost money.
//!
//! Identical queries (the same latitude, longitude, radius and bound, bit for
//! bit) within the TTL are answered from the cache, and concurrent identical
//! queries share one upstream request (a *flight*). A flight runs in its own
//! task and hands its answer to every waiter through a shared future, so a
//! waiter that gives up (`places::search` drops it on timeout, a client
//! disconnects) neither cancels nor poisons the request the others wait on;
//! and an answer already paid for fills the cache even when nobody waits for
//! it any more. Failures are never cached: every waiter of a failed flight
//! gets the failure, and the next query asks again.
//!
//! The cache holds at most `entries` keys, answers and flights together:
//! making room drops expired answers first, then the oldest. One TTL for
//! every answer makes "oldest" and "first to expire" the same order, so one
//! queue in completion order serves both.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use serde_json::Value;
use tokio::time::Instant;

use super::{Places, PlacesError, Query, Status};

/// Longest a flight may run. The Google backends give up after
/// `places.timeout` themselves; this is the backstop for a backend that
/// never answers, which would otherwise pin its key (and a task) forever.
pub const FLIGHT_LIMIT: Duration = Duration::from_secs(60);

/// A query, keyed exactly: floats by their bit patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    lat: u64,
    lon: u64,
    radius_m: u64,
    bound: usize,
}

impl From<&Query> for Key {
    fn from(q: &Query) -> Key {
        Key {
            lat: q.lat.to_bits(),
            lon: q.lon.to_bits(),
            radius_m: q.radius_m.to_bits(),
            bound: q.bound,
        }
    }
}

type Answer = Result<Value, PlacesError>;
type Flight = Shared<BoxFuture<'static, Answer>>;

enum Slot {
    /// An upstream request under way; `id` tells it apart from a later
    /// flight for the same key.
    Flying { id: u64, answer: Flight },
    /// An answer, good until `expires`; `id` is its place in `order`.
    Ready {
        id: u64,
        value: Value,
        expires: Instant,
    },
}

#[derive(Default)]
struct State {
    slots: HashMap<Key, Slot>,
    /// Ready answers in completion order, oldest first, as (id, key). An
    /// entry whose slot no longer holds that id is stale and skipped.
    order: VecDeque<(u64, Key)>,
    next_id: u64,
}

impl State {
    /// Drops expired answers, then (if still full) the oldest answers, until
    /// a new key fits. False when the cache is full of flights.
    fn make_room(&mut self, now: Instant, capacity: usize) -> bool {
        while let Some(&(id, key)) = self.order.front() {
            let live = match self.slots.get(&key) {
                Some(Slot::Ready {
                    id: slot_id,
                    expires,
                    ..
                }) if *slot_id == id => *expires > now,
                _ => {
                    // Stale: the answer was replaced or dropped already.
                    self.order.pop_front();
                    continue;
                }
            };
            if live && self.slots.len() < capacity {
                break;
            }
            self.order.pop_front();
            self.slots.remove(&key);
        }
        self.slots.len() < capacity
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

struct Shelf {
    state: Mutex<State>,
    ttl: Duration,
}

impl Shelf {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every unlock, so a panic elsewhere
        // while holding the lock leaves nothing half-done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Files a flight's successful answer in the slot it flew for.
    fn land(&self, key: Key, flight: u64, value: &Value) {
        let mut state = self.lock();
        if !matches!(state.slots.get(&key), Some(Slot::Flying { id, .. }) if *id == flight) {
            return;
        }
        let id = state.id();
        let expires = Instant::now() + self.ttl;
        state.slots.insert(
            key,
            Slot::Ready {
                id,
                value: value.clone(),
                expires,
            },
        );
        state.order.push_back((id, key));
    }

    /// Frees a flight's slot unless it landed (failed, panicked, or the
    /// runtime is going away).
    fn clear(&self, key: Key, flight: u64) {
        let mut state = self.lock();
        if matches!(state.slots.get(&key), Some(Slot::Flying { id, .. }) if *id == flight) {
            state.slots.remove(&key);
        }
    }
}

/// Frees the flight's slot however the flight task ends.
struct ClearOnDrop {
    shelf: Arc<Shelf>,
    key: Key,
    flight: u64,
}

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.shelf.clear(self.key, self.flight);
    }
}

/// A places backend behind a TTL cache with request coalescing.
pub struct Cached {
    inner: Arc<dyn Places>,
    shelf: Arc<Shelf>,
    entries: usize,
}

impl Cached {
    /// Caches `inner`'s answers for `ttl`, holding at most `entries` keys.
    pub fn new(inner: Arc<dyn Places>, ttl: Duration, entries: usize) -> Cached {
        Cached {
            inner,
            shelf: Arc::new(Shelf {
                state: Mutex::default(),
                ttl,
            }),
            entries,
        }
    }

    /// The answer, a flight to join, or a new flight, for `query`.
    fn lookup(&self, query: Query) -> Lookup {
        let key = Key::from(&query);
        let now = Instant::now();
        let mut state = self.shelf.lock();
        match state.slots.get(&key) {
            Some(Slot::Ready { value, expires, .. }) if *expires > now => {
                return Lookup::Hit(value.clone());
            }
            Some(Slot::Flying { answer, .. }) => return Lookup::Join(answer.clone()),
            Some(Slot::Ready { .. }) => {
                // Expired; its entry in `order` goes stale and is skipped.
                state.slots.remove(&key);
            }
            None => {}
        }
        if !state.make_room(now, self.entries) {
            return Lookup::Uncached;
        }
        let flight = state.id();
        let answer = self.launch(key, flight, query);
        state.slots.insert(
            key,
            Slot::Flying {
                id: flight,
                answer: answer.clone(),
            },
        );
        Lookup::Join(answer)
    }

    /// Starts the upstream request in its own task (so within a Tokio
    /// runtime), so that it runs to the end whoever stops waiting for it.
    /// Called under the lock, so one flight starts per key: `nearby` only
    /// builds a future.
    fn launch(&self, key: Key, flight: u64, query: Query) -> Flight {
        let upstream = self.inner.nearby(query);
        let shelf = self.shelf.clone();
        let task = tokio::spawn(async move {
            let _clear = ClearOnDrop {
                shelf: shelf.clone(),
                key,
                flight,
            };
            let answer = match tokio::time::timeout(FLIGHT_LIMIT, upstream).await {
                Ok(answer) => answer,
                Err(_) => Err(PlacesError::new(
                    Status::UnknownError,
                    format!("places backend did not answer within {FLIGHT_LIMIT:?}"),
                )),
            };
            if let Ok(value) = &answer {
                shelf.land(key, flight, value);
            }
            answer
        });
        async move {
            task.await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "places search task failed");
                Err(PlacesError::new(
                    Status::UnknownError,
                    "places search failed inside the server",
                ))
            })
        }
        .boxed()
        .shared()
    }
}

enum Lookup {
    Hit(Value),
    Join(Flight),
    Uncached,
}

impl Places for Cached {
    fn nearby(&self, query: Query) -> BoxFuture<'static, Result<Value, PlacesError>> {
        match self.lookup(query) {
            Lookup::Hit(value) => Box::pin(async move { Ok(value) }),
            Lookup::Join(flight) => Box::pin(flight),
            // Every slot holds a flight: ask upstream without coalescing
            // rather than wait or grow.
            Lookup::Uncached => self.inner.nearby(query),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A backend that counts its calls, answers after `delay` with the call
    /// number, and fails the calls listed in `fail` (1-based).
    struct Counting {
        calls: AtomicUsize,
        delay: Duration,
        fail: Vec<usize>,
        hang: Vec<usize>,
    }

    impl Counting {
        fn new(delay: Duration) -> Arc<Counting> {
            Counting::scripted(delay, &[], &[])
        }

        fn scripted(delay: Duration, fail: &[usize], hang: &[usize]) -> Arc<Counting> {
            Arc::new(Counting {
                calls: AtomicUsize::new(0),
                delay,
                fail: fail.to_vec(),
                hang: hang.to_vec(),
            })
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl Places for Counting {
        fn nearby(&self, q: Query) -> BoxFuture<'static, Result<Value, PlacesError>> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let delay = self.delay;
            let fail = self.fail.contains(&call);
            let hang = self.hang.contains(&call);
            Box::pin(async move {
                if hang {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(delay).await;
                if fail {
                    return Err(PlacesError::new(Status::OverQueryLimit, "slow down"));
                }
                Ok(json!({"call": call, "lat": q.lat, "bound": q.bound, "status": "OK"}))
            })
        }
    }

    const TTL: Duration = Duration::from_secs(60);

    fn query(lat: f64) -> Query {
        Query {
            lat,
            lon: -118.0,
            radius_m: 10_000.0,
            bound: 5,
        }
    }

    fn cached(backend: &Arc<Counting>, entries: usize) -> Arc<Cached> {
        Arc::new(Cached::new(backend.clone(), TTL, entries))
    }

    fn len(cache: &Cached) -> usize {
        cache.shelf.lock().slots.len()
    }

    #[tokio::test(start_paused = true)]
    async fn a_repeat_within_the_ttl_is_served_from_the_cache() {
        let backend = Counting::new(Duration::from_millis(100));
        let cache = cached(&backend, 100);
        let first = cache.nearby(query(34.0)).await.unwrap();
        tokio::time::advance(TTL - Duration::from_millis(200)).await;
        let second = cache.nearby(query(34.0)).await.unwrap();
        assert_eq!(first, second);
        assert_eq!(first["call"], 1);
        assert_eq!(backend.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_repeat_after_the_ttl_asks_again() {
        let backend = Counting::new(Duration::from_millis(100));
        let cache = cached(&backend, 100);
        assert_eq!(cache.nearby(query(34.0)).await.unwrap()["call"], 1);
        tokio::time::advance(TTL).await;
        assert_eq!(cache.nearby(query(34.0)).await.unwrap()["call"], 2);
        assert_eq!(cache.nearby(query(34.0)).await.unwrap()["call"], 2);
        assert_eq!(backend.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn queries_differing_in_any_field_are_not_shared() {
        let backend = Counting::new(Duration::ZERO);
        let cache = cached(&backend, 100);
        let base = query(34.0);
        let variants = [
            base,
            Query {
                lat: 34.000001,
                ..base
            },
            Query {
                lon: -118.000001,
                ..base
            },
            Query {
                radius_m: 10_000.5,
                ..base
            },
            Query { bound: 6, ..base },
            // Equal as floats, different as bits: keyed exactly.
            Query { lat: 0.0, ..base },
            Query { lat: -0.0, ..base },
        ];
        let mut seen = Vec::new();
        for q in variants {
            seen.push(cache.nearby(q).await.unwrap()["call"].clone());
        }
        assert_eq!(seen, (1..=7).map(|n| json!(n)).collect::<Vec<_>>());
        for q in variants {
            cache.nearby(q).await.unwrap();
        }
        assert_eq!(backend.calls(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_identical_queries_share_one_request() {
        let backend = Counting::new(Duration::from_millis(500));
        let cache = cached(&backend, 100);
        let mut waiters = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let cache = cache.clone();
            waiters.spawn(async move { cache.nearby(query(34.0)).await });
        }
        let answers: Vec<Value> = waiters
            .join_all()
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(answers.len(), 50);
        assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
        assert_eq!(answers[0]["call"], 1);
        assert_eq!(backend.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_gives_up_does_not_cancel_the_others() {
        let backend = Counting::new(Duration::from_secs(2));
        let cache = cached(&backend, 100);
        let patient = tokio::spawn({
            let cache = cache.clone();
            async move { cache.nearby(query(34.0)).await }
        });
        // Gives up after 100 ms, as `places::search` does on its timeout,
        // dropping its share of the flight.
        let hasty = tokio::time::timeout(Duration::from_millis(100), cache.nearby(query(34.0)));
        assert!(hasty.await.is_err());
        // A later waiter still joins the same flight.
        let late = cache.nearby(query(34.0)).await.unwrap();
        assert_eq!(patient.await.unwrap().unwrap(), late);
        assert_eq!(late["call"], 1);
        assert_eq!(backend.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_nobody_waits_for_still_fills_the_cache() {
        let backend = Counting::new(Duration::from_secs(2));
        let cache = cached(&backend, 100);
        let gave_up = tokio::time::timeout(Duration::from_millis(100), cache.nearby(query(34.0)));
        assert!(gave_up.await.is_err());
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(cache.nearby(query(34.0)).await.unwrap()["call"], 1);
        assert_eq!(backend.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_reach_every_waiter_and_are_not_cached() {
        let backend = Counting::scripted(Duration::from_millis(100), &[1], &[]);
        let cache = cached(&backend, 100);
        let mut waiters = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let cache = cache.clone();
            waiters.spawn(async move { cache.nearby(query(34.0)).await });
        }
        for answer in waiters.join_all().await {
            assert_eq!(answer.unwrap_err().status, Status::OverQueryLimit);
        }
        assert_eq!(backend.calls(), 1);
        assert_eq!(len(&cache), 0);
        assert_eq!(cache.nearby(query(34.0)).await.unwrap()["call"], 2);
        assert_eq!(cache.nearby(query(34.0)).await.unwrap()["call"], 2);
        assert_eq!(backend.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_backend_that_never_answers_does_not_pin_its_key() {
        let backend = Counting::scripted(Duration::ZERO, &[], &[1]);
        let cache = cached(&backend, 100);
        let stuck = tokio::spawn({
            let cache = cache.clone();
            async move { cache.nearby(query(34.0)).await }
        });
        tokio::time::sleep(FLIGHT_LIMIT + Duration::from_secs(1)).await;
        assert_eq!(
            stuck.await.unwrap().unwrap_err().status,
            Status::UnknownError
        );
        assert_eq!(cache.nearby(query(34.0)).await.unwrap()["call"], 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_cache_holds_at_most_its_capacity_dropping_the_oldest() {
        let backend = Counting::new(Duration::ZERO);
        let cache = cached(&backend, 3);
        for lat in 0..5 {
            cache.nearby(query(f64::from(lat))).await.unwrap();
            tokio::time::advance(Duration::from_secs(1)).await;
            assert!(len(&cache) <= 3);
        }
        assert_eq!(backend.calls(), 5);
        // 2, 3 and 4 are kept; 0 and 1, the oldest, were dropped.
        for lat in [2.0, 3.0, 4.0] {
            cache.nearby(query(lat)).await.unwrap();
        }
        assert_eq!(backend.calls(), 5);
        assert_eq!(cache.nearby(query(0.0)).await.unwrap()["call"], 6);
        assert_eq!(len(&cache), 3);
        assert!(cache.shelf.lock().order.len() <= 4);
    }

    #[tokio::test(start_paused = true)]
    async fn expired_answers_make_room_first() {
        let backend = Counting::new(Duration::ZERO);
        let cache = cached(&backend, 2);
        cache.nearby(query(1.0)).await.unwrap();
        tokio::time::advance(TTL).await;
        cache.nearby(query(2.0)).await.unwrap();
        cache.nearby(query(3.0)).await.unwrap();
        assert_eq!(len(&cache), 2);
        cache.nearby(query(2.0)).await.unwrap();
        cache.nearby(query(3.0)).await.unwrap();
        assert_eq!(backend.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cache_full_of_flights_passes_queries_through() {
        let backend = Counting::new(Duration::from_secs(1));
        let cache = cached(&backend, 2);
        let mut waiters = tokio::task::JoinSet::new();
        for lat in [1.0, 2.0, 3.0, 3.0] {
            let cache = cache.clone();
            waiters.spawn(async move { cache.nearby(query(lat)).await });
        }
        for answer in waiters.join_all().await {
            answer.unwrap();
        }
        // Two flights filled the cache; the two queries for 3.0 went
        // upstream on their own.
        assert_eq!(backend.calls(), 4);
        assert_eq!(len(&cache), 2);
        let zero = Cached::new(backend.clone(), TTL, 0);
        zero.nearby(query(1.0)).await.unwrap();
        zero.nearby(query(1.0)).await.unwrap();
        assert_eq!(backend.calls(), 6);
    }
}
