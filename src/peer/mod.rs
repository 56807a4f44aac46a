//! Links to the neighbours: dialling with capped, jittered backoff,
//! accepting, and running each link once its hello is exchanged.
//!
//! Of two neighbours, the one whose name sorts first dials and the other
//! only accepts, so two neighbours never race to connect and there is never
//! more than one link between them to settle. A newer link from the same
//! neighbour (it restarted) replaces the old one.

pub mod frame;
pub mod handshake;
pub mod link;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::Config;
use crate::flood::Hub;
use crate::transport::{Incoming, Transport};

/// How long links get to say goodbye at shutdown.
const GOODBYE: Duration = Duration::from_secs(2);

/// A link that stayed up this long resets the redial backoff.
const STABLE: Duration = Duration::from_secs(1);

/// Whether `me` dials `peer` (or waits for it to dial).
pub fn dials(me: &str, peer: &str) -> bool {
    me < peer
}

struct Ctx<T> {
    transport: T,
    hub: Arc<Hub>,
    config: Arc<Config>,
    me: String,
    neighbours: Vec<String>,
    shutdown: CancellationToken,
}

/// Runs every link of node `me` until `shutdown`.
pub async fn run<T: Transport>(
    transport: T,
    hub: Arc<Hub>,
    config: Arc<Config>,
    me: String,
    shutdown: CancellationToken,
) {
    let neighbours = config
        .nodes
        .get(&me)
        .map(|n| n.neighbours.clone())
        .unwrap_or_default();
    let ctx = Arc::new(Ctx {
        transport,
        hub,
        config,
        me,
        neighbours,
        shutdown,
    });
    let mut tasks = JoinSet::new();
    for peer in ctx.neighbours.iter().filter(|p| dials(&ctx.me, p)) {
        let span = tracing::info_span!("link", peer = %peer);
        tasks.spawn(dial_loop(ctx.clone(), peer.clone()).instrument(span));
    }
    tasks.spawn(accept_loop(ctx.clone()).in_current_span());
    ctx.shutdown.cancelled().await;
    let drained = tokio::time::timeout(GOODBYE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tasks.abort_all();
    }
    ctx.hub.cut_all();
    ctx.transport.close().await;
}

async fn dial_loop<T: Transport>(ctx: Arc<Ctx<T>>, peer: String) {
    let settings = &ctx.config.peer;
    let mut backoff = settings.backoff_min;
    loop {
        let addr = match ctx.config.nodes.get(&peer) {
            Some(node) => node.peer.clone(),
            None => return,
        };
        let attempt = async {
            let mut conn = ctx
                .transport
                .dial(&peer, &addr)
                .await
                .map_err(|e| e.to_string())?;
            let hello = handshake::dial(
                &mut conn,
                &ctx.me,
                &peer,
                &ctx.hub,
                settings.connect_timeout,
                settings.max_frame,
            )
            .await
            .map_err(|e| e.to_string())?;
            Ok::<_, String>((conn, hello))
        };
        let result = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            r = tokio::time::timeout(settings.connect_timeout, attempt) => r,
        };
        match result {
            Ok(Ok((conn, hello))) => {
                let remote = conn.remote;
                tracing::info!(%remote, "link up (dialled)");
                let up = Instant::now();
                let reason =
                    link::run(&ctx.hub, conn, &peer, &hello, settings, &ctx.shutdown).await;
                tracing::info!(%remote, %reason, "link lost");
                if up.elapsed() >= STABLE {
                    backoff = settings.backoff_min;
                }
            }
            Ok(Err(e)) => {
                tracing::info!(%addr, error = %e, "dial failed");
                ctx.hub.metrics().link_failed(Some(&peer), &e);
            }
            Err(_) => {
                let reason = format!("dial timed out after {:?}", settings.connect_timeout);
                tracing::info!(%addr, "{reason}");
                ctx.hub.metrics().link_failed(Some(&peer), &reason);
            }
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(link::jitter(backoff)) => {}
        }
        backoff = (backoff * 2).min(settings.backoff_max);
    }
}

async fn accept_loop<T: Transport>(ctx: Arc<Ctx<T>>) {
    let mut links = JoinSet::new();
    loop {
        while links.try_join_next().is_some() {}
        let incoming = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            incoming = ctx.transport.accept() => incoming,
        };
        match incoming {
            Ok(incoming) => {
                let span = tracing::info_span!("link", remote = %incoming.remote);
                links.spawn(serve_incoming(ctx.clone(), incoming).instrument(span));
            }
            Err(crate::transport::TransportError::Closed) => break,
            Err(e) => tracing::warn!(error = %e, "accept failed"),
        }
    }
    while links.join_next().await.is_some() {}
}

async fn serve_incoming<T: Transport>(ctx: Arc<Ctx<T>>, incoming: Incoming) {
    let settings = &ctx.config.peer;
    let remote = incoming.remote;
    let attempt = async {
        let mut conn = incoming.connecting.await.map_err(|e| e.to_string())?;
        let result = handshake::accept(
            &mut conn,
            &ctx.me,
            &ctx.neighbours,
            &ctx.hub,
            settings.connect_timeout,
            settings.max_frame,
        )
        .await;
        match result {
            Ok(hello) => Ok((conn, hello)),
            Err(e) => {
                if let Some(control) = &conn.control {
                    control.close(&e.to_string());
                }
                Err(e.to_string())
            }
        }
    };
    let result = tokio::select! {
        _ = ctx.shutdown.cancelled() => return,
        r = tokio::time::timeout(settings.connect_timeout, attempt) => r,
    };
    match result {
        Ok(Ok((conn, hello))) => {
            let peer = hello.node.clone();
            tracing::info!(%remote, %peer, "link up (accepted)");
            let reason = link::run(&ctx.hub, conn, &peer, &hello, settings, &ctx.shutdown).await;
            tracing::info!(%remote, %peer, %reason, "link lost");
        }
        Ok(Err(reason)) => {
            tracing::warn!(%remote, %reason, "link refused");
            ctx.hub.metrics().link_refusals.inc();
        }
        Err(_) => {
            tracing::warn!(%remote, reason = "handshake timed out", "link refused");
            ctx.hub.metrics().link_refusals.inc();
        }
    }
}
