//! The client listener: a bounded number of connections, accept errors
//! retried with backoff, and a graceful end.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client::{self, ClientService, End};

/// The longest a closing connection goes on reading (and dropping) what its
/// client still sends.
const LINGER: Duration = Duration::from_secs(2);

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
        let (mut stream, addr) = match accepted {
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
            let (mut reader, mut writer) = stream.split();
            let halves = (&mut reader, &mut writer);
            if client::serve(svc.clone(), halves, addr, stop, span.clone()).await == End::Drain {
                linger(&mut stream).await;
            }
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

/// Reads and drops what the client still sends, until it closes its end or
/// [`LINGER`] passes, so that closing does not reset the connection while
/// replies are still on their way. A socket with nothing unread closes at
/// once: there is nothing to reset it, and no wait on a client that sends
/// nothing more.
async fn linger(stream: &mut TcpStream) {
    if !unread(stream) {
        return;
    }
    let mut sink = [0u8; 8192];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(1..) = stream.read(&mut sink).await {}
    })
    .await;
}

/// Whether the kernel holds input from the client that was not read.
#[cfg(unix)]
fn unread(stream: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut waiting: libc::c_int = 0;
    // SAFETY: FIONREAD on an open socket writes one int, to `waiting`.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::FIONREAD, &mut waiting) };
    rc != 0 || waiting > 0
}

#[cfg(not(unix))]
fn unread(_: &TcpStream) -> bool {
    true
}
