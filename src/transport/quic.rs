//! Mutually authenticated QUIC between servers (quinn + rustls, TLS 1.3,
//! ALPN `herd/1`).
//!
//! Both ends present a certificate from the herd's CA. The dialler checks
//! the server by the neighbour name it dials; the acceptor maps the client's
//! verified certificate to one of its configured neighbours and closes the
//! connection, with the reason, if it names none. Only then is a stream
//! accepted, so a stranger never gets an update in.
//!
//! The stateless-reset key and the connection-ID generator key are derived
//! from the node's own private key, so they are the same after a restart:
//! a restarted node answers packets for its old connections with a reset
//! the peer recognises, and the peer notices at once rather than after the
//! idle timeout (quinn issue 1443).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{
    ClientConfig, Connection, Endpoint, EndpointConfig, IdleTimeout, ServerConfig, TransportConfig,
    VarInt,
};
use quinn_proto::HashedConnectionIdGenerator;
use ring::{digest, hmac};
use rustls_pki_types::CertificateDer;

use super::{resolve, Conn, ConnControl, Incoming, Transport, TransportError};
use crate::config::Config;
use crate::tls::{self, NodeTls};

/// Ack-eliciting packets a link's peer may receive before it must send an
/// ACK (asked of it with the ACK frequency extension; quinn's default, 1,
/// acknowledges every other packet). Acknowledging less often saves both
/// ends per-packet work on busy links; losses are still noticed at once
/// (packets out of order are acknowledged immediately).
const ACK_THRESHOLD: u32 = 10;

/// Bytes a link's stream may have in flight (quinn's default: 1.25 MB).
const STREAM_WINDOW: u64 = 1_250_000;

/// UDP socket buffers asked for. The default receive buffer (about 200 KB)
/// overflows under a burst of updates: every datagram dropped there is a
/// QUIC loss, a retransmission and a smaller congestion window.
const SOCKET_BUFFER: usize = 4 << 20;

/// Asks for [`SOCKET_BUFFER`]-sized buffers; the kernel caps them at
/// `net.core.rmem_max` / `wmem_max`, which is logged when it does.
fn socket_buffers(socket: &std::net::UdpSocket) {
    let sock = socket2::SockRef::from(socket);
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    // Linux reports twice what it grants (it counts its bookkeeping).
    let granted = sock.recv_buffer_size().unwrap_or(0);
    if granted < SOCKET_BUFFER {
        tracing::info!(
            granted,
            wanted = SOCKET_BUFFER,
            "UDP receive buffer capped by the system; raise net.core.rmem_max \
             to avoid losses under bursts"
        );
    }
}

/// The largest UDP payload MTU discovery tries, and the largest this node
/// accepts. quinn hands the kernel up to 10 datagrams in one segmentation
/// offload send, and the kernel refuses a send over 64 KiB; quinn-udp drops
/// a refused send silently, so a larger bound loses every full batch (and
/// its retransmission) and stalls the link. 10 x 6 KiB stays under it.
const MTU_UPPER_BOUND: u16 = 6 * 1024;

pub struct QuicTransport {
    endpoint: Endpoint,
    addr: SocketAddr,
    neighbours: Arc<Vec<String>>,
    transport: Arc<TransportConfig>,
    /// The client side's config, swapped on reload.
    client: std::sync::Mutex<ClientConfig>,
}

/// Error codes in CONNECTION_CLOSE frames.
const CLOSE_NORMAL: u32 = 0;
const CLOSE_REFUSED: u32 = 1;

impl QuicTransport {
    pub async fn bind(
        addr: &str,
        tls: &NodeTls,
        config: &Config,
        node: &str,
    ) -> Result<QuicTransport, TransportError> {
        let bind = resolve(addr).await?;
        let socket = std::net::UdpSocket::bind(bind).map_err(|source| TransportError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        socket_buffers(&socket);
        let mut transport = TransportConfig::default();
        let idle = IdleTimeout::try_from(config.peer.idle_timeout)
            .map_err(|e| TransportError::Tls(format!("peer.idle_timeout: {e}")))?;
        // Paths that carry bigger datagrams than Ethernet's (loopback,
        // jumbo frames) are found by MTU discovery, which is safe above the
        // real path MTU: fewer packets, so less per-packet work and fewer
        // system calls per update.
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(MTU_UPPER_BOUND);
        // Data a link may buffer unacknowledged: twice a stream's window
        // (quinn's default is eight), so a lagging neighbour costs a node a
        // few megabytes, not ten per link; the link reads the rest from
        // the change index when there is room.
        transport.send_window(2 * STREAM_WINDOW);
        transport
            .stream_receive_window(quinn::VarInt::from_u32(STREAM_WINDOW as u32))
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(Some(config.peer.keepalive))
            .mtu_discovery_config(Some(mtu));
        let mut ack = quinn::AckFrequencyConfig::default();
        ack.ack_eliciting_threshold(quinn::VarInt::from_u32(ACK_THRESHOLD));
        transport.ack_frequency_config(Some(ack));
        let transport = Arc::new(transport);

        let (server, client) = quic_configs(tls, &transport)?;
        let mut endpoint_config = EndpointConfig::new(Arc::new(hmac::Key::new(
            hmac::HMAC_SHA256,
            derive(b"herd quic stateless reset", &tls.key_der).as_ref(),
        )));
        let cid_key = derive(b"herd quic connection id", &tls.key_der);
        let cid_key = u64::from_le_bytes(cid_key.as_ref()[..8].try_into().unwrap_or_default());
        // The peer's advertised maximum caps MTU discovery: quinn's default
        // (1472) would keep the upper bound above from ever being reached.
        endpoint_config
            .max_udp_payload_size(MTU_UPPER_BOUND)
            .map_err(|e| TransportError::Tls(format!("max UDP payload: {e}")))?;
        endpoint_config
            .cid_generator(move || Box::new(HashedConnectionIdGenerator::from_key(cid_key)));
        let endpoint = Endpoint::new(
            endpoint_config,
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        let neighbours = config
            .nodes
            .get(node)
            .map(|n| n.neighbours.clone())
            .unwrap_or_default();
        Ok(QuicTransport {
            addr: endpoint.local_addr()?,
            endpoint,
            neighbours: Arc::new(neighbours),
            transport,
            client: std::sync::Mutex::new(client),
        })
    }

    /// Switches to the certificates in `tls` for every new connection;
    /// connections already up keep theirs. (The reset and connection-ID
    /// keys stay derived from the key the node started with.)
    pub fn reload(&self, tls: &NodeTls) -> Result<(), TransportError> {
        let (server, client) = quic_configs(tls, &self.transport)?;
        self.endpoint.set_server_config(Some(server));
        *self.client.lock().unwrap_or_else(|e| e.into_inner()) = client;
        Ok(())
    }
}

fn quic_configs(
    tls: &NodeTls,
    transport: &Arc<TransportConfig>,
) -> Result<(ServerConfig, ClientConfig), TransportError> {
    let tls_err = |e: &dyn std::fmt::Display| TransportError::Tls(e.to_string());
    let mut server = ServerConfig::with_crypto(Arc::new(
        QuicServerConfig::try_from(tls.server.clone()).map_err(|e| tls_err(&e))?,
    ));
    server.transport_config(transport.clone());
    let mut client = ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(tls.client.clone()).map_err(|e| tls_err(&e))?,
    ));
    client.transport_config(transport.clone());
    Ok((server, client))
}

fn derive(label: &[u8], key: &[u8]) -> digest::Digest {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(label);
    ctx.update(key);
    ctx.finish()
}

struct QuicControl(Connection);

impl ConnControl for QuicControl {
    fn close(&self, reason: &str) {
        self.0
            .close(VarInt::from_u32(CLOSE_NORMAL), reason.as_bytes());
    }

    fn datagram_size(&self) -> Option<u16> {
        Some(self.0.stats().path.current_mtu)
    }

    #[cfg(test)]
    fn sent_and_acked(&self) -> Option<(u64, u64)> {
        let stats = self.0.stats();
        Some((stats.path.sent_packets, stats.frame_rx.acks))
    }
}

/// The neighbour the peer's verified certificate names, if any.
fn identify(connection: &Connection, neighbours: &[String]) -> Option<String> {
    let identity = connection.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    let leaf = chain.first()?;
    let names: Vec<&str> = neighbours.iter().map(String::as_str).collect();
    tls::identify(leaf, &names)
}

fn conn(
    connection: Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    identity: Option<String>,
) -> Conn {
    Conn {
        reader: Box::new(recv),
        writer: Box::new(send),
        identity,
        remote: connection.remote_address(),
        control: Some(Box::new(QuicControl(connection))),
    }
}

impl Transport for QuicTransport {
    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    async fn accept(&self) -> Result<Incoming, TransportError> {
        let incoming = self.endpoint.accept().await.ok_or(TransportError::Closed)?;
        let remote = incoming.remote_address();
        let neighbours = self.neighbours.clone();
        Ok(Incoming {
            remote,
            connecting: Box::pin(async move {
                let connection = incoming
                    .await
                    .map_err(|e| TransportError::Refused(format!("handshake failed: {e}")))?;
                let Some(name) = identify(&connection, &neighbours) else {
                    let reason = "certificate names none of this node's neighbours";
                    connection.close(VarInt::from_u32(CLOSE_REFUSED), reason.as_bytes());
                    return Err(TransportError::Refused(reason.into()));
                };
                let (send, recv) = connection
                    .accept_bi()
                    .await
                    .map_err(|e| TransportError::Refused(format!("no stream opened: {e}")))?;
                Ok(conn(connection, send, recv, Some(name)))
            }),
        })
    }

    async fn dial(&self, peer: &str, addr: &str) -> Result<Conn, TransportError> {
        let remote = resolve(addr).await?;
        let server_name = peer.to_ascii_lowercase();
        let connect_err = |reason: String| TransportError::Connect {
            addr: addr.to_string(),
            reason,
        };
        let client = self
            .client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let connection = self
            .endpoint
            .connect_with(client, remote, &server_name)
            .map_err(|e| connect_err(e.to_string()))?
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let (send, recv) = connection
            .open_bi()
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        // The server's certificate was checked against `server_name`.
        Ok(conn(connection, send, recv, Some(peer.to_string())))
    }

    async fn close(&self) {
        self.endpoint
            .close(VarInt::from_u32(CLOSE_NORMAL), b"node shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::fixture::herd;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn bind(config: &Config, node: &str) -> QuicTransport {
        let tls = tls::load(config, node).unwrap();
        QuicTransport::bind("127.0.0.1:0", &tls, config, node)
            .await
            .unwrap()
    }

    /// Alpha's link to Beta, and the task that reads all Beta gets on it.
    async fn link_to_beta(
        config: &Config,
    ) -> (QuicTransport, Conn, tokio::task::JoinHandle<Vec<u8>>) {
        let alpha = bind(config, "Alpha").await;
        let beta = bind(config, "Beta").await;
        let beta_addr = beta.local_addr().to_string();
        let receiving = tokio::spawn(async move {
            let incoming = beta.accept().await.unwrap();
            let mut conn = incoming.connecting.await.unwrap();
            let mut got = Vec::new();
            conn.reader.read_to_end(&mut got).await.unwrap();
            got
        });
        let conn = alpha.dial("Beta", &beta_addr).await.unwrap();
        (alpha, conn, receiving)
    }

    /// Over loopback, MTU discovery finds datagrams bigger than Ethernet's,
    /// and a stream then carries megabytes in full batches of them. With
    /// a bound above 6.5 KiB a full batch is over the kernel's 64 KiB and
    /// is dropped every time it is sent, so the stream stalls and this
    /// fails; with quinn's default peer limit (1472) no bigger datagram is
    /// ever found.
    #[tokio::test]
    async fn loopback_links_use_big_datagrams_and_stay_whole() {
        let (_dir, config, _ca) = herd();
        let (_alpha, mut conn, receiving) = link_to_beta(&config).await;
        // The stream opens on the first byte written.
        conn.writer.write_all(b"x").await.unwrap();
        conn.writer.flush().await.unwrap();
        let control = conn.control.take().unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        // quinn reports no event when discovery finishes: look until the
        // datagram size grows past Ethernet's, or give up.
        while control.datagram_size().unwrap() <= 1472 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "MTU discovery found nothing above {:?}",
                control.datagram_size()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let size = control.datagram_size().unwrap();
        assert!(size <= MTU_UPPER_BOUND, "{size}");

        let data: Vec<u8> = (0..8_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = async {
            conn.writer.write_all(&data).await.unwrap();
            conn.writer.shutdown().await.unwrap();
        };
        let (_, got) = tokio::time::timeout(Duration::from_secs(60), async {
            tokio::join!(sent, receiving)
        })
        .await
        .expect("the stream stalled");
        let got = got.unwrap();
        assert_eq!(got.len(), data.len() + 1);
        assert!(got[1..] == data[..], "the stream's bytes changed");
        // Dropped batches look like a black hole to quinn, which would
        // have fallen back to 1200-byte datagrams.
        let after = control.datagram_size().unwrap();
        assert!(after > 1472, "the link fell back to {after}-byte datagrams");
    }

    /// A busy link's peer acknowledges every [`ACK_THRESHOLD`] packets or
    /// so, not every other one (quinn's default, which this fails with):
    /// frames of a few packets each, as a link sends one per batch window.
    #[tokio::test]
    async fn a_busy_link_is_acknowledged_in_batches() {
        let (_dir, config, _ca) = herd();
        let (_alpha, mut conn, receiving) = link_to_beta(&config).await;
        let control = conn.control.take().unwrap();
        let frame = vec![7u8; 6_000];
        for _ in 0..200 {
            conn.writer.write_all(&frame).await.unwrap();
            conn.writer.flush().await.unwrap();
            // The load's shape (a frame per window), not a wait for
            // anything.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        conn.writer.shutdown().await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(60), receiving)
            .await
            .expect("the stream stalled")
            .unwrap();
        assert_eq!(got.len(), 200 * frame.len());
        let (sent, acks) = control.sent_and_acked().unwrap();
        assert!(acks * 4 < sent, "{acks} ACK frames for {sent} packets");
    }
}
