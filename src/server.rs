//! The client listener: a bounded number of connections, accept errors
//! retried with backoff, and a graceful end.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client::{self, ClientService};

/// Accepts clients until `shutdown`, then waits (at most `drain`) for open
/// connections to finish the replies they owe.
pub async fn run(
    listener: TcpListener,
    svc: Arc<ClientService>,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let slots = Arc::new(Semaphore::new(svc.limits.max_connections));
    let mut connections = JoinSet::new();
    let mut backoff = Duration::from_millis(10);
    loop {
        while connections.try_join_next().is_some() {}
        // Wait for a free slot before accepting: extra clients queue in the
        // kernel's backlog rather than in our memory.
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, addr) = match accepted {
            Ok(accepted) => {
                backoff = Duration::from_millis(10);
                accepted
            }
            Err(e) => {
                // Out of file descriptors and the like: wait, then go on.
                tracing::warn!(error = %e, ?backoff, "accept failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tracing::debug!(%addr, "client connected");
        let svc = svc.clone();
        let stop = shutdown.child_token();
        svc.hub.metrics().client_connections.inc();
        // The connection's span (inside the node's) goes with every event
        // the connection logs; it is entered for those events only, not
        // around every poll of a task that wakes once per request.
        let span = tracing::info_span!("client", %addr);
        connections.spawn(async move {
            client::serve(svc.clone(), stream, addr, stop, span.clone()).await;
            svc.hub.metrics().client_connections.dec();
            drop(slot);
            span.in_scope(|| tracing::debug!("client gone"));
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}
