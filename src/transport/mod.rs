//! The one interface between servers: listen, dial a named neighbour,
//! accept a peer. Everything above it (framing, handshake, flooding,
//! anti-entropy) is transport-blind.

mod quic;
mod tcp;

use std::future::Future;
use std::net::SocketAddr;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};

pub use quic::QuicTransport;
pub use tcp::TcpTransport;

use crate::config::{Config, TransportKind};

/// An ordered, reliable byte stream to a peer.
pub struct Conn {
    pub reader: Box<dyn AsyncRead + Send + Unpin>,
    pub writer: Box<dyn AsyncWrite + Send + Unpin>,
    /// The neighbour the transport itself proved the peer to be (from its
    /// certificate), or None where the transport proves nothing (tcp).
    pub identity: Option<String>,
    pub remote: SocketAddr,
    /// Measures and closes the underlying connection, where there is one.
    pub control: Option<Box<dyn ConnControl>>,
}

/// What a transport can do to a whole connection beyond its stream.
pub trait ConnControl: Send + Sync {
    /// Closes the connection, telling the peer why.
    fn close(&self, reason: &str);

    /// The largest datagram the path carries now, where the transport
    /// finds it out (quic's MTU discovery).
    fn datagram_size(&self) -> Option<u16> {
        None
    }

    /// Packets sent and ACK frames received so far, where the transport
    /// counts them (for tests of the acknowledgement policy).
    #[cfg(test)]
    fn sent_and_acked(&self) -> Option<(u64, u64)> {
        None
    }
}

/// An incoming connection whose authentication is still running.
pub struct Incoming {
    pub remote: SocketAddr,
    pub connecting: BoxFuture<'static, Result<Conn, TransportError>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("tls: {0}")]
    Tls(String),
    #[error("connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("refused: {0}")]
    Refused(String),
    #[error("transport closed")]
    Closed,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A way for servers to reach each other.
pub trait Transport: Send + Sync + 'static {
    /// The address peers reach this node on.
    fn local_addr(&self) -> SocketAddr;

    /// Waits for the next peer to knock. The returned future finishes its
    /// authentication; run it concurrently so a slow peer blocks no other.
    fn accept(&self) -> impl Future<Output = Result<Incoming, TransportError>> + Send;

    /// Connects to the neighbour `peer` at `addr` (`host:port`).
    fn dial(
        &self,
        peer: &str,
        addr: &str,
    ) -> impl Future<Output = Result<Conn, TransportError>> + Send;

    /// Stops accepting and closes every connection.
    fn close(&self) -> impl Future<Output = ()> + Send;
}

/// The transport the configuration names.
pub enum AnyTransport {
    Quic(QuicTransport),
    Tcp(TcpTransport),
}

impl AnyTransport {
    pub async fn bind(config: &Config, node: &str) -> Result<AnyTransport, TransportError> {
        let addr = &config
            .nodes
            .get(node)
            .ok_or_else(|| TransportError::Resolve(node.to_string()))?
            .peer;
        Ok(match config.transport {
            TransportKind::Quic => {
                let tls = crate::tls::load(config, node)
                    .map_err(|e| TransportError::Tls(e.to_string()))?;
                AnyTransport::Quic(QuicTransport::bind(addr, &tls, config, node).await?)
            }
            TransportKind::Tcp => AnyTransport::Tcp(TcpTransport::bind(addr).await?),
        })
    }
}

impl AnyTransport {
    /// Rereads the node's certificates (quic); nothing to do for tcp.
    pub fn reload(&self, config: &Config, node: &str) -> Result<(), TransportError> {
        match self {
            AnyTransport::Quic(t) => {
                let tls = crate::tls::load(config, node)
                    .map_err(|e| TransportError::Tls(e.to_string()))?;
                t.reload(&tls)
            }
            AnyTransport::Tcp(_) => Ok(()),
        }
    }
}

impl Transport for AnyTransport {
    fn local_addr(&self) -> SocketAddr {
        match self {
            AnyTransport::Quic(t) => t.local_addr(),
            AnyTransport::Tcp(t) => t.local_addr(),
        }
    }

    async fn accept(&self) -> Result<Incoming, TransportError> {
        match self {
            AnyTransport::Quic(t) => t.accept().await,
            AnyTransport::Tcp(t) => t.accept().await,
        }
    }

    async fn dial(&self, peer: &str, addr: &str) -> Result<Conn, TransportError> {
        match self {
            AnyTransport::Quic(t) => t.dial(peer, addr).await,
            AnyTransport::Tcp(t) => t.dial(peer, addr).await,
        }
    }

    async fn close(&self) {
        match self {
            AnyTransport::Quic(t) => t.close().await,
            AnyTransport::Tcp(t) => t.close().await,
        }
    }
}

/// Resolves `host:port` to one socket address.
pub async fn resolve(addr: &str) -> Result<SocketAddr, TransportError> {
    tokio::net::lookup_host(addr)
        .await
        .map_err(|_| TransportError::Resolve(addr.to_string()))?
        .next()
        .ok_or_else(|| TransportError::Resolve(addr.to_string()))
}

impl<T: Transport> Transport for std::sync::Arc<T> {
    fn local_addr(&self) -> SocketAddr {
        (**self).local_addr()
    }

    fn accept(&self) -> impl Future<Output = Result<Incoming, TransportError>> + Send {
        (**self).accept()
    }

    fn dial(
        &self,
        peer: &str,
        addr: &str,
    ) -> impl Future<Output = Result<Conn, TransportError>> + Send {
        (**self).dial(peer, addr)
    }

    fn close(&self) -> impl Future<Output = ()> + Send {
        (**self).close()
    }
}
