//! One herd node: binds its sockets, then runs the client listener and the
//! links to its neighbours until told to stop.
//!
//! Binding and starting are separate so that tests (and tools) can bind
//! every node on port 0 first, learn the real addresses, and only then start
//! nodes that dial each other.
//!
//! The links may run on a runtime of their own (`herd run` gives them one
//! whose threads have a lower CPU priority): their transport is bound and
//! driven there, and only the store they share with the clients crosses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::client::ClientService;
use crate::config::{Config, ConfigError};
use crate::flood::Hub;
use crate::metrics::Metrics;
use crate::peer;
use crate::places::{self, Places, PlacesError};
use crate::server;
use crate::transport::{AnyTransport, Transport, TransportError};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{node}: cannot listen for clients on {addr}: {source}")]
    ClientListen {
        node: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{node}: {source}")]
    Transport {
        node: String,
        source: TransportError,
    },
    #[error("places: {0}")]
    Places(#[from] PlacesError),
    #[error("{node}: cannot serve admin on {addr}: {source}")]
    AdminListen {
        node: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A node with its sockets bound, not yet serving.
pub struct BoundNode {
    name: String,
    client: TcpListener,
    admin: Option<TcpListener>,
    transport: AnyTransport,
    links: Handle,
}

impl BoundNode {
    /// Binds `name`'s client listener and peer transport as `config` says;
    /// the links will run on the current runtime.
    pub async fn bind(config: &Config, name: &str) -> Result<BoundNode, NodeError> {
        BoundNode::bind_with_links(config, name, Handle::current()).await
    }

    /// Like [`BoundNode::bind`], with the peer transport bound on `links`,
    /// where the links will run.
    pub async fn bind_with_links(
        config: &Config,
        name: &str,
        links: Handle,
    ) -> Result<BoundNode, NodeError> {
        let node = config.node(name)?;
        let client = listen(node.client).map_err(|source| NodeError::ClientListen {
            node: name.to_string(),
            addr: node.client,
            source,
        })?;
        let admin =
            match node.admin {
                Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| {
                    NodeError::AdminListen {
                        node: name.to_string(),
                        addr,
                        source,
                    }
                })?),
                None => None,
            };
        let bind = {
            let (config, name) = (config.clone(), name.to_string());
            links.spawn(async move { AnyTransport::bind(&config, &name).await })
        };
        let transport = match bind.await {
            Ok(bound) => bound,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The links' runtime is shutting down.
            Err(_) => Err(TransportError::Closed),
        }
        .map_err(|source| NodeError::Transport {
            node: name.to_string(),
            source,
        })?;
        Ok(BoundNode {
            name: name.to_string(),
            client,
            admin,
            transport,
            links,
        })
    }

    pub fn client_addr(&self) -> SocketAddr {
        self.client
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.transport.local_addr()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Starts serving with the places backend `config` names.
    pub fn start(self, config: Arc<Config>) -> Result<RunningNode, NodeError> {
        let places = places::from_config(&config.places)?;
        Ok(self.start_with(config, places))
    }

    /// Starts serving. `config` must give the real addresses of the
    /// neighbours (it may differ from the one used to bind).
    pub fn start_with(self, config: Arc<Config>, places: Arc<dyn Places>) -> RunningNode {
        let config_for_reload = config.clone();
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let neighbours = config
            .nodes
            .get(&self.name)
            .map(|n| n.neighbours.clone())
            .unwrap_or_default();
        let metrics = Arc::new(Metrics::new(&neighbours));
        let hub = Arc::new(Hub::with_metrics(epoch, metrics));
        let name: Arc<str> = Arc::from(self.name.as_str());
        let client_addr = self.client_addr();
        let peer_addr = self.peer_addr();
        let admin_addr = self.admin_addr();
        let svc = Arc::new(ClientService {
            node: name.clone(),
            hub: hub.clone(),
            places,
            places_timeout: config.places.timeout,
            limits: config.limits.clone(),
        });
        // Clients stop first and finish what they owe; only then do links
        // stop, so every update a client was answered for is still sent.
        let stop_clients = CancellationToken::new();
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let transport = Arc::new(self.transport);
        let span = tracing::info_span!("node", name = %name);
        let clients = tokio::spawn(
            server::run(self.client, svc, stop_clients.clone(), DRAIN).instrument(span.clone()),
        );
        if let Some(admin) = self.admin {
            tasks.spawn(
                crate::admin::run(
                    admin,
                    self.name.clone(),
                    neighbours.len(),
                    hub.clone(),
                    shutdown.child_token(),
                )
                .instrument(span.clone()),
            );
        }
        tasks.spawn_on(
            peer::run(
                transport.clone(),
                hub.clone(),
                config,
                name.to_string(),
                shutdown.child_token(),
            )
            .instrument(span.clone()),
            &self.links,
        );
        span.in_scope(|| tracing::info!(client = %client_addr, peer = %peer_addr, "node up"));
        RunningNode {
            transport,
            config: config_for_reload,
            name: self.name,
            client_addr,
            peer_addr,
            admin_addr,
            hub,
            stop_clients,
            clients,
            shutdown,
            tasks,
        }
    }
}

/// Pending connections the kernel holds for the client listener (capped by
/// net.core.somaxconn): clients beyond `limits.max_connections` wait here
/// rather than having their SYNs dropped and retried seconds later.
const BACKLOG: u32 = 1024;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// How long shutdown waits for connections to finish what they owe.
const DRAIN: Duration = Duration::from_secs(5);

/// A serving node.
pub struct RunningNode {
    transport: Arc<AnyTransport>,
    config: Arc<Config>,
    name: String,
    client_addr: SocketAddr,
    peer_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    hub: Arc<Hub>,
    stop_clients: CancellationToken,
    clients: tokio::task::JoinHandle<()>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl RunningNode {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Stops accepting, lets connections finish what they owe, then sends
    /// neighbours every update their links have not yet sent and closes
    /// links with a reason; returns when every task has ended.
    pub async fn shutdown(mut self) {
        self.stop_clients.cancel();
        let _ = (&mut self.clients).await;
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
        tracing::info!(node = %self.name, "node down");
    }

    /// A token cancelled as soon as shutdown begins.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.stop_clients.clone()
    }

    /// Rereads this node's certificate files and uses them for every new
    /// link; client connections and links already up are untouched. On
    /// error the node keeps the certificates it had.
    pub fn reload_certificates(&self) -> Result<(), NodeError> {
        self.transport
            .reload(&self.config, &self.name)
            .map_err(|source| NodeError::Transport {
                node: self.name.clone(),
                source,
            })
    }
}
