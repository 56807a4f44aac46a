//! Micro-benchmarks of the hot path: parsing a request, making and parsing
//! an AT line, the newest-wins store, the flooding hub, the traffic log and
//! the offline places search.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use futures::FutureExt;
use herd::flood::{Head, Hub};
use herd::logging::{self, Direction, Traffic};
use herd::places::{Offline, Places, Query};
use herd::report::Report;
use herd::request;
use herd::store::Store;
use herd::timestamp::Timestamp;

const IAMAT: &[u8] = b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503";

fn report(client: &str, nanos: u32) -> Report {
    let time = Timestamp::new(1621464827, nanos).unwrap();
    let text = format!("1621464827.{nanos:09}");
    Report::new(
        "Clark",
        Timestamp::new(1621464828, 0).unwrap(),
        client.as_bytes(),
        b"+34.068930-118.445127",
        text.as_bytes(),
        time,
    )
}

fn parsing(c: &mut Criterion) {
    c.bench_function("request::parse IAMAT", |b| {
        b.iter(|| request::parse(black_box(IAMAT)))
    });
    c.bench_function("request::parse WHATSAT", |b| {
        b.iter(|| request::parse(black_box(b"WHATSAT kiwi.cs.ucla.edu 10 5")))
    });
    c.bench_function("request::parse invalid", |b| {
        b.iter(|| request::parse(black_box(b"HELLO there, this is not a request")))
    });
}

fn formatting(c: &mut Criterion) {
    let time = Timestamp::parse(b"1621464827.959498503").unwrap();
    let now = Timestamp::parse(b"1621464828.223371889").unwrap();
    c.bench_function("Report::new", |b| {
        b.iter(|| {
            Report::new(
                black_box("Clark"),
                now,
                b"kiwi.cs.ucla.edu",
                b"+34.068930-118.445127",
                b"1621464827.959498503",
                time,
            )
        })
    });
    let line = report("kiwi.cs.ucla.edu", 5).line().to_vec();
    c.bench_function("Report::parse", |b| {
        b.iter(|| Report::parse(black_box(&line)))
    });
    // What a link does with every line a neighbour sends, winner or not.
    c.bench_function("Report::check", |b| {
        b.iter(|| Report::check(black_box(&line)).is_ok())
    });
}

fn storing(c: &mut Criterion) {
    let mut store = Store::new();
    let clients: Vec<String> = (0..100_000).map(|i| format!("client-{i}")).collect();
    for client in &clients {
        store.offer(report(client, 1));
    }
    let mut n = 1;
    offer_newer(c, "100k clients", &mut store, &clients, &mut n);
    // The table under `cargo xtask bench`'s 50×1 load: 50 connections,
    // 64 clients each, updated in turn.
    let few = &clients[..50 * 64];
    let mut small = Store::new();
    for client in few {
        small.offer(report(client, 1));
    }
    offer_newer(c, "3,200 clients", &mut small, few, &mut n);
    let stale = report(&clients[7], 0);
    c.bench_function("Store::offer stale, known client (100k clients)", |b| {
        b.iter(|| store.offer(stale.clone()))
    });
    // A miss: a client the store has never seen, inserted into a table of
    // 100k to 200k clients (rebuilt, untimed, whenever it reaches 200k).
    let fresh = || {
        let mut store = Store::new();
        for client in &clients {
            store.offer(report(client, 1));
        }
        store
    };
    let mut growing = fresh();
    let mut new_clients = 0u64;
    c.bench_function("Store::offer new client (100k-200k clients)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                if growing.len() >= 2 * clients.len() {
                    growing = fresh();
                }
                let n = left.min((2 * clients.len() - growing.len()) as u64);
                let batch: Vec<_> = (0..n)
                    .map(|_| {
                        new_clients += 1;
                        report(&format!("new-{new_clients}"), 1)
                    })
                    .collect();
                let start = Instant::now();
                for r in batch {
                    black_box(growing.offer(r));
                }
                total += start.elapsed();
                left -= n;
            }
            total
        })
    });
    c.bench_function("Store::get (100k clients)", |b| {
        b.iter(|| store.get(black_box(b"client-99999")).is_some())
    });
    growing_past(c, 917_504);
}

/// Offers `store`, which holds every one of `clients`, a newer report for
/// each client in turn; `n` numbers the reports, across benchmarks.
fn offer_newer(c: &mut Criterion, table: &str, store: &mut Store, clients: &[String], n: &mut u32) {
    c.bench_function(
        &format!("Store::offer newer, known client ({table})"),
        |b| {
            b.iter_batched(
                || {
                    *n += 1;
                    report(&clients[*n as usize % clients.len()], *n)
                },
                |r| store.offer(r),
                BatchSize::SmallInput,
            )
        },
    );
}

/// The one offer of a new client that makes a table of `full` clients (as
/// many as its buckets hold) grow: every stored report is filed anew.
fn growing_past(c: &mut Criterion, full: usize) {
    let mut group = c.benchmark_group("growth");
    group.sample_size(10);
    group.bench_function(
        format!("Store::offer new client {} (the table grows)", full + 1),
        |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut store = Store::new();
                    for i in 0..full {
                        store.offer(report(&format!("client-{i}"), 1));
                    }
                    let last = report("the-one-more", 1);
                    let start = Instant::now();
                    black_box(store.offer(last));
                    total += start.elapsed();
                }
                total
            })
        },
    );
    group.finish();
}

fn flooding(c: &mut Criterion) {
    let hub = Hub::new(1);
    let links: Vec<_> = ["A", "B", "C", "D"]
        .iter()
        .map(|p| (*p, hub.attach(p, Head::default())))
        .collect();
    let mut n = 0u32;
    c.bench_function("Hub::publish to 4 links", |b| {
        b.iter_batched(
            || {
                n += 1;
                report(&format!("c{}", n % 50_000), n)
            },
            |r| {
                hub.publish(r, Some("A"));
            },
            BatchSize::SmallInput,
        );
    });
    // A frame from a neighbour into a big table, as a link delivers it:
    // each stored report it supersedes is most likely out of cache.
    const KNOWN: u32 = 1_000_000;
    const FRAME: usize = 256;
    let big = Hub::new(2);
    let from = big.attach("A", Head::default());
    let _other = big.attach("B", Head::default());
    for chunk in (0..KNOWN).collect::<Vec<_>>().chunks(4096) {
        big.publish_all(
            chunk.iter().map(|i| report(&format!("client-{i}"), 1)),
            "A",
            from.id,
        );
    }
    let (mut at, mut nanos) = (0u32, 1u32);
    c.bench_function(
        "Hub::publish_all a frame of 256 newer reports (1M clients)",
        |b| {
            b.iter_batched(
                || {
                    nanos += 1;
                    (0..FRAME)
                        .map(|_| {
                            // A stride that visits every client once per lap.
                            at = (at + 7_919) % KNOWN;
                            report(&format!("client-{at}"), nanos)
                        })
                        .collect::<Vec<_>>()
                },
                |frame| big.publish_all(frame, "A", from.id),
                BatchSize::SmallInput,
            )
        },
    );
    let mut out = Vec::new();
    c.bench_function("Hub::read 1024 changes", |b| {
        let (peer, link) = &links[1];
        b.iter(|| {
            out.clear();
            hub.read(peer, link, hub.head().saturating_sub(1024), 1024, &mut out)
        })
    });
}

/// The traffic log as a node writes it, but into `/dev/null` (where there
/// is one, so that the disk is left out): what a client's line and its
/// reply cost the connection's task (formatting both into the shared
/// buffer), with the writer thread running beside it.
fn traffic_log(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink("/dev/null", dir.path().join("Clark.log")).unwrap();
    let _guard = logging::init(dir.path(), "Clark", false).unwrap();
    let traffic = Traffic::new(
        "Clark",
        "127.0.0.1:54321".parse().unwrap(),
        tracing::Span::none(),
    );
    let reply = report("kiwi.cs.ucla.edu", 959498503);
    let mut reply = reply.line().to_vec();
    reply.push(b'\n');
    c.bench_function("Traffic::log an IAMAT and its AT reply", |b| {
        b.iter(|| {
            traffic.log(Direction::In, black_box(IAMAT));
            traffic.log(Direction::Out, black_box(&reply));
        })
    });
}

/// WHATSAT on the bundled offline data at UCLA (a hundred places in its
/// one-degree cell): the benchmark's own probe (1 m, one result) and a
/// client's widest search (50 km, twenty results).
fn offline_places(c: &mut Criterion) {
    let places = Offline::bundled();
    for (name, radius_m, bound) in [
        ("1 m, 1 result", 1.0, 1),
        ("50 km, 20 results", 50_000.0, 20),
    ] {
        c.bench_function(&format!("Offline::nearby UCLA {name}"), |b| {
            b.iter(|| {
                let query = Query {
                    lat: 34.068930,
                    lon: -118.445127,
                    radius_m,
                    bound,
                };
                black_box(places.nearby(black_box(query)).now_or_never())
            })
        });
    }
}

criterion_group!(
    benches,
    parsing,
    formatting,
    storing,
    flooding,
    traffic_log,
    offline_places
);
criterion_main!(benches);
