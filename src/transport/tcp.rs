//! Plaintext TCP between servers, for trusted networks and debugging.
//!
//! TCP proves nothing about who is calling: a peer is whoever its hello says
//! it is, checked only against the configured neighbours. Use `quic` on any
//! network you do not fully trust.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::{resolve, Conn, Incoming, Transport, TransportError};

pub struct TcpTransport {
    listener: TcpListener,
    addr: SocketAddr,
    closed: CancellationToken,
}

impl TcpTransport {
    pub async fn bind(addr: &str) -> Result<TcpTransport, TransportError> {
        let bind = resolve(addr).await?;
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|source| TransportError::Bind {
                addr: addr.to_string(),
                source,
            })?;
        let addr = listener.local_addr()?;
        Ok(TcpTransport {
            listener,
            addr,
            closed: CancellationToken::new(),
        })
    }
}

fn conn(stream: TcpStream, remote: SocketAddr) -> Conn {
    let _ = stream.set_nodelay(true);
    let (reader, writer) = stream.into_split();
    Conn {
        reader: Box::new(reader),
        writer: Box::new(writer),
        identity: None,
        remote,
        control: None,
    }
}

impl Transport for TcpTransport {
    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    async fn accept(&self) -> Result<Incoming, TransportError> {
        let (stream, remote) = tokio::select! {
            _ = self.closed.cancelled() => return Err(TransportError::Closed),
            accepted = self.listener.accept() => accepted?,
        };
        Ok(Incoming {
            remote,
            connecting: Box::pin(async move { Ok(conn(stream, remote)) }),
        })
    }

    async fn dial(&self, _peer: &str, addr: &str) -> Result<Conn, TransportError> {
        let remote = resolve(addr).await?;
        let stream = TcpStream::connect(remote)
            .await
            .map_err(|e| TransportError::Connect {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
        Ok(conn(stream, remote))
    }

    async fn close(&self) {
        self.closed.cancel();
    }
}
