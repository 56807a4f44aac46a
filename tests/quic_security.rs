//! Attacks on the `quic` transport over real UDP sockets with real
//! certificates. An attacker built on quinn directly tries to get an update
//! into Clark (neighbours Jaquez and Bona; Bailey is in the herd but not
//! Clark's neighbour), and a fake server sits at a neighbour's address for
//! Clark to dial.
//!
//! Every refusal is checked for its reason (the TLS alert, or the close
//! reason Clark gives), so a test cannot pass because something else broke.
//! "Nothing stored" is asserted only after the refused connection has been
//! seen to close and a genuine update sent afterwards has been seen to reach
//! Clark; the control test shows the very same attack with a genuine
//! certificate does get its update in.

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{ConnectionError, Endpoint, RecvStream, SendStream};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;
use tokio::sync::mpsc;
use tokio::time::timeout;

use common::{until, Client, EchoPlaces, Herd, PATIENCE};
use herd::certs::{Ca, Issued, Validity, CA_COMMON_NAME};
use herd::config::{Config, TransportKind};
use herd::flood::Head;
use herd::node::{BoundNode, RunningNode};
use herd::peer::frame::{self, Hello, Message};

/// Clark–Jaquez, Clark–Bona, Bona–Bailey.
const TOPOLOGY: &[(&str, &[&str])] = &[
    ("Bailey", &["Bona"]),
    ("Bona", &["Bailey", "Clark"]),
    ("Clark", &["Bona", "Jaquez"]),
    ("Jaquez", &["Clark"]),
];

const MAX_FRAME: usize = 1 << 20;
const DAY: Duration = Duration::from_secs(24 * 3600);

/// TLS alerts (RFC 8446) that rustls refuses certificates with.
const BAD_CERTIFICATE: u8 = 42;
const CERTIFICATE_EXPIRED: u8 = 45;
const UNKNOWN_CA: u8 = 48;
const DECRYPT_ERROR: u8 = 51;
const CERTIFICATE_REQUIRED: u8 = 116;

/// Clark's close code when a certificate names none of its neighbours.
const CLOSE_REFUSED: u64 = 1;

/// A well-formed AT line for `client`, as a neighbour would forward it.
fn at_line(client: &str) -> Bytes {
    Bytes::from(format!("AT Mallory +0.000000000 {client} +1+1 1"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// A herd node's own certificate and key, from the herd's certs directory.
fn node_identity(config: &Config, node: &str) -> Issued {
    let (cert, key) = config.cert_files(node);
    Issued {
        cert_pem: read(&cert),
        key_pem: read(&key),
    }
}

/// The herd's own CA (the one every node trusts), to issue bad certificates.
fn herd_ca(config: &Config) -> Ca {
    Ca::from_pem(
        &read(&config.ca_file()),
        &read(&config.certs.join("ca.key")),
    )
    .unwrap()
}

fn chain(identity: &Issued) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn key(identity: &Issued) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).unwrap()
}

/// A QUIC client config like a node's, but presenting `identity` (or no
/// certificate at all). It trusts the herd CA, so the attacker's own end of
/// the handshake succeeds and any refusal is Clark's.
fn attacker_config(config: &Config, identity: Option<&Issued>) -> quinn::ClientConfig {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(config.ca_file()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(herd::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let mut tls = match identity {
        Some(identity) => builder
            .with_client_auth_cert(chain(identity), key(identity))
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![herd::tls::ALPN.to_vec()];
    quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()))
}

/// How Clark dealt with an attack.
#[derive(Debug)]
enum Outcome {
    /// Clark answered the hello: the link is up.
    Accepted {
        answer: Hello,
        connection: quinn::Connection,
        // Kept so the link stays up until the test is done with it.
        _streams: (SendStream, RecvStream),
        _endpoint: Endpoint,
    },
    /// The connection ended without a hello from Clark: perhaps a goodbye,
    /// and how the connection was closed.
    Refused {
        bye: Option<String>,
        close: ConnectionError,
    },
}

impl Outcome {
    /// The refusal; fails the test if Clark let the attacker in.
    fn refused(self) -> (Option<String>, ConnectionError) {
        match self {
            Outcome::Refused { bye, close } => (bye, close),
            Outcome::Accepted { answer, .. } => {
                panic!("Clark accepted the attacker and answered {answer:?}")
            }
        }
    }
}

/// Connects to Clark presenting `identity`, says hello as `claim` and, at
/// once, sends an update for `client`; returns once Clark has answered the
/// hello or the connection has ended.
async fn attack(herd: &Herd, identity: Option<&Issued>, claim: &str, client: &str) -> Outcome {
    let endpoint = Endpoint::client((Ipv4Addr::LOCALHOST, 0).into()).unwrap();
    let clark: SocketAddr = herd.config.nodes["Clark"].peer.parse().unwrap();
    let connecting = endpoint
        .connect_with(attacker_config(&herd.config, identity), clark, "clark")
        .unwrap();
    let mut out = BytesMut::new();
    let hello = Hello {
        node: claim.to_string(),
        epoch: 1,
        seen: Head::default(),
    };
    frame::encode(&Message::Hello(hello), &mut out);
    let lines = vec![at_line(client)];
    frame::encode(&Message::Updates { head: 1, lines }, &mut out);

    let run = async {
        // Under TLS 1.3 the client's handshake ends before the server has
        // checked the client's certificate, so a refusal usually shows only
        // once the attacker is already talking.
        let connection = match connecting.await {
            Ok(connection) => connection,
            Err(close) => return Outcome::Refused { bye: None, close },
        };
        let (mut send, mut recv) = match connection.open_bi().await {
            Ok(streams) => streams,
            Err(close) => return Outcome::Refused { bye: None, close },
        };
        // A refusal may cut the write short: what counts is the answer.
        let _ = send.write_all(&out).await;
        let bye = match frame::read(&mut recv, MAX_FRAME).await {
            Ok(Some(Message::Hello(answer))) => {
                return Outcome::Accepted {
                    answer,
                    connection,
                    _streams: (send, recv),
                    _endpoint: endpoint.clone(),
                }
            }
            Ok(Some(Message::Bye(reason))) => Some(reason),
            Ok(Some(other)) => panic!("Clark sent {other:?} before any hello"),
            Ok(None) | Err(_) => None,
        };
        Outcome::Refused {
            bye,
            close: connection.closed().await,
        }
    };
    timeout(PATIENCE, run)
        .await
        .expect("the attack ends in time")
}

/// The TLS alert the peer's QUIC stack closed the connection with, if that
/// is how it was closed.
fn tls_alert(close: &ConnectionError) -> Option<u8> {
    match close {
        ConnectionError::ConnectionClosed(c) => {
            let code = u64::from(c.error_code);
            (0x100..0x200)
                .contains(&code)
                .then_some((code & 0xff) as u8)
        }
        _ => None,
    }
}

/// The code and reason the peer application closed the connection with,
/// if that is how it was closed.
fn app_close(close: &ConnectionError) -> Option<(u64, String)> {
    match close {
        ConnectionError::ApplicationClosed(c) => Some((
            c.error_code.into_inner(),
            String::from_utf8_lossy(&c.reason).into_owned(),
        )),
        _ => None,
    }
}

/// Asserts that Clark refused the attack in the TLS handshake with
/// `alert`, never answering the hello.
fn assert_tls_refusal(outcome: Outcome, alert: u8) {
    let (bye, close) = outcome.refused();
    assert_eq!(bye, None, "refused in TLS, before any hello was read");
    assert_eq!(tls_alert(&close), Some(alert), "{close:?}");
}

/// Asserts that no node stores `victim`, once a genuine update sent after
/// the attack ended (into Bailey, two links from Clark) has reached Clark.
async fn assert_nothing_stored(herd: &Herd, victim: &str) {
    let canary = format!("canary-after-{victim}");
    let mut c = Client::connect(herd.client_addr("Bailey")).await;
    let at = c.ask(&format!("IAMAT {canary} +2+2 2")).await;
    herd.holds("Clark", canary.as_bytes(), at.as_bytes()).await;
    for name in herd.nodes.keys() {
        let stored = herd.hub(name).lookup(victim.as_bytes());
        assert!(stored.is_none(), "{name} stored {stored:?}");
    }
}

async fn settled_herd() -> Herd {
    let herd = Herd::start(TransportKind::Quic, TOPOLOGY).await;
    herd.settled().await;
    herd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_another_ca_is_refused() {
    let herd = settled_herd().await;
    // Look-alikes of Jaquez's certificate: same names, signed by a CA with
    // the herd CA's very name (only the signature differs), or by one with
    // a name of its own (so no issuer is found at all).
    let strangers = [(CA_COMMON_NAME, DECRYPT_ERROR), ("mallory CA", UNKNOWN_CA)];
    for (i, (ca_name, alert)) in strangers.into_iter().enumerate() {
        let stranger = Ca::generate(ca_name).unwrap();
        let fake = stranger
            .issue_for(&herd.config, "Jaquez", Validity::node_default())
            .unwrap();
        let victim = format!("victim-1-{i}");
        let outcome = attack(&herd, Some(&fake), "Jaquez", &victim).await;
        assert_tls_refusal(outcome, alert);
        assert_nothing_stored(&herd, &victim).await;
    }
    herd.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_certificate_is_refused() {
    let herd = settled_herd().await;
    let outcome = attack(&herd, None, "Jaquez", "victim-2").await;
    assert_tls_refusal(outcome, CERTIFICATE_REQUIRED);
    assert_nothing_stored(&herd, "victim-2").await;
    herd.shutdown().await;
}

/// Asserts Clark closed the connection itself because the certificate
/// names none of its neighbours.
fn assert_neighbour_check_refusal(outcome: Outcome) {
    let (bye, close) = outcome.refused();
    assert_eq!(bye, None, "refused before any hello was read");
    let (code, reason) =
        app_close(&close).unwrap_or_else(|| panic!("expected Clark's own close, got: {close:?}"));
    assert_eq!(code, CLOSE_REFUSED, "{reason}");
    assert!(reason.contains("neighbour"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_herd_certificate_for_a_stranger_name_is_refused() {
    let herd = settled_herd().await;
    let ca = herd_ca(&herd.config);
    let mallory = ca
        .issue("Mallory", &["127.0.0.1".into()], Validity::node_default())
        .unwrap();
    for (i, claim) in ["Jaquez", "Mallory"].into_iter().enumerate() {
        let victim = format!("victim-3-{i}");
        let outcome = attack(&herd, Some(&mallory), claim, &victim).await;
        assert_neighbour_check_refusal(outcome);
        assert_nothing_stored(&herd, &victim).await;
    }
    herd.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_herd_member_that_is_not_a_neighbour_is_refused() {
    let herd = settled_herd().await;
    let bailey = node_identity(&herd.config, "Bailey");
    for (i, claim) in ["Bailey", "Jaquez"].into_iter().enumerate() {
        let victim = format!("victim-4-{i}");
        let outcome = attack(&herd, Some(&bailey), claim, &victim).await;
        assert_neighbour_check_refusal(outcome);
        assert_nothing_stored(&herd, &victim).await;
    }
    herd.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neighbours_certificate_must_match_its_hello() {
    let herd = settled_herd().await;
    let jaquez = node_identity(&herd.config, "Jaquez");
    let cases = [
        ("Bona", "hello says Bona but the certificate is Jaquez's"),
        ("Bailey", "Bailey is not a neighbour of Clark"),
    ];
    for (i, (claim, why)) in cases.into_iter().enumerate() {
        let victim = format!("victim-5-{i}");
        let (bye, close) = attack(&herd, Some(&jaquez), claim, &victim).await.refused();
        // Clark says goodbye with the reason, then closes with it; the
        // close may overtake the goodbye.
        let (_, reason) = app_close(&close)
            .unwrap_or_else(|| panic!("expected Clark's own close, got: {close:?}"));
        assert_eq!(reason, why);
        if let Some(bye) = bye {
            assert_eq!(bye, why);
        }
        assert_nothing_stored(&herd, &victim).await;
    }
    herd.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_not_yet_valid_certificates_are_refused() {
    let herd = settled_herd().await;
    let ca = herd_ca(&herd.config);
    let now = SystemTime::now();
    let validities = [
        Validity {
            not_before: now - 10 * DAY,
            not_after: now - DAY,
        },
        Validity {
            not_before: now + DAY,
            not_after: now + 10 * DAY,
        },
    ];
    for (i, validity) in validities.into_iter().enumerate() {
        let cert = ca.issue_for(&herd.config, "Jaquez", validity).unwrap();
        let victim = format!("victim-7-{i}");
        let outcome = attack(&herd, Some(&cert), "Jaquez", &victim).await;
        assert_tls_refusal(outcome, CERTIFICATE_EXPIRED);
        assert_nothing_stored(&herd, &victim).await;
    }
    herd.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_a_genuine_neighbour_gets_its_update_in() {
    let mut herd = settled_herd().await;
    // Jaquez's place is free, so no genuine link replaces the attacker's.
    herd.stop("Jaquez").await;
    let jaquez = node_identity(&herd.config, "Jaquez");
    let outcome = attack(&herd, Some(&jaquez), "Jaquez", "victim-8").await;
    let Outcome::Accepted {
        answer, connection, ..
    } = outcome
    else {
        panic!("a genuine neighbour was refused: {outcome:?}");
    };
    assert_eq!(answer.node, "Clark");
    let line = at_line("victim-8");
    herd.holds("Clark", b"victim-8", &line).await;
    // And Clark floods it on like any other update.
    herd.holds("Bailey", b"victim-8", &line).await;
    connection.close(0u32.into(), b"done");
    herd.shutdown().await;
}

/// Clark–Bona, Clark–Jaquez: Bona dials Clark and Clark dials Jaquez.
const DIAL_TOPOLOGY: &[(&str, &[&str])] = &[
    ("Bona", &["Clark"]),
    ("Clark", &["Bona", "Jaquez"]),
    ("Jaquez", &["Clark"]),
];

/// What a fake server saw of one connection attempt.
#[derive(Debug)]
enum Knock {
    HandshakeFailed(ConnectionError),
    /// The handshake completed; the first message read, if any.
    Connected(Option<Message>),
}

/// A QUIC server with the herd's ALPN presenting `identity`, reporting each
/// connection attempt.
fn fake_server(identity: &Issued) -> (Endpoint, mpsc::UnboundedReceiver<Knock>) {
    let mut tls = rustls::ServerConfig::builder_with_provider(herd::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain(identity), key(identity))
        .unwrap();
    tls.alpn_protocols = vec![herd::tls::ALPN.to_vec()];
    let config =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls).unwrap()));
    let endpoint = Endpoint::server(config, (Ipv4Addr::LOCALHOST, 0).into()).unwrap();
    let (knocks, seen) = mpsc::unbounded_channel();
    let accepting = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accepting.accept().await {
            let knocks = knocks.clone();
            tokio::spawn(async move {
                let knock = match incoming.await {
                    Err(e) => Knock::HandshakeFailed(e),
                    Ok(connection) => {
                        let first = async {
                            let (_send, mut recv) = connection.accept_bi().await.ok()?;
                            frame::read(&mut recv, MAX_FRAME).await.ok().flatten()
                        };
                        Knock::Connected(timeout(PATIENCE, first).await.ok().flatten())
                    }
                };
                let _ = knocks.send(knock);
            });
        }
    });
    (endpoint, seen)
}

/// Asserts that the dialler refused the fake server's certificate as not
/// naming the node it dialled, so no hello was ever sent.
fn assert_name_refused(knock: Knock) {
    match knock {
        Knock::HandshakeFailed(close) => {
            assert_eq!(tls_alert(&close), Some(BAD_CERTIFICATE), "{close:?}")
        }
        Knock::Connected(first) => {
            panic!("Clark completed a handshake with the impostor and sent {first:?}")
        }
    }
}

/// Starts every node of `config` but `absent`, on port 0, as
/// `Herd::start_with` does, keeping the peer address `config` gives
/// `absent`.
async fn start_nodes(mut config: Config, absent: &str) -> BTreeMap<String, RunningNode> {
    let mut bound = Vec::new();
    for name in config.nodes.keys().filter(|n| *n != absent) {
        bound.push((name.clone(), BoundNode::bind(&config, name).await.unwrap()));
    }
    for (name, node) in &bound {
        let entry = config.nodes.get_mut(name).unwrap();
        entry.client = node.client_addr();
        entry.peer = node.peer_addr().to_string();
    }
    let config = Arc::new(config);
    bound
        .into_iter()
        .map(|(name, node)| {
            let running = node.start_with(config.clone(), Arc::new(EchoPlaces));
            (name, running)
        })
        .collect()
}

/// Puts a fake server presenting `impostor(config)` at the address the
/// config gives Jaquez, and checks that Clark never links to it.
async fn clark_refuses_an_impostor_at_jaquezs_address(impostor: fn(&Config) -> Issued) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herd.toml");
    let text = common::config_text(TransportKind::Quic, DIAL_TOPOLOGY, "");
    std::fs::write(&path, &text).unwrap();
    let mut config = Config::from_toml(&text, &path).unwrap();
    herd::certs::write_herd(&config, &config.certs, false).unwrap();

    let (fake, mut knocks) = fake_server(&impostor(&config));
    config.nodes.get_mut("Jaquez").unwrap().peer = fake.local_addr().unwrap().to_string();
    let nodes = start_nodes(config, "Jaquez").await;
    let clark = nodes["Clark"].hub();

    // Clark dials the fake server, rejects its certificate (so the fake
    // server's handshake never completes) and tries again after a backoff.
    for _ in 0..2 {
        let knock = timeout(PATIENCE, knocks.recv())
            .await
            .expect("Clark dials Jaquez's address")
            .unwrap();
        assert_name_refused(knock);
    }
    // The legitimate link does come up meanwhile; the impostor's never does.
    until(clark, |hub| hub.attached().contains(&"Bona".to_string())).await;
    assert_eq!(clark.attached(), ["Bona"]);
    while let Ok(knock) = knocks.try_recv() {
        assert_name_refused(knock);
    }

    for (_, node) in nodes {
        node.shutdown().await;
    }
    fake.close(0u32.into(), b"done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialling_refuses_a_herd_certificate_for_another_name() {
    clark_refuses_an_impostor_at_jaquezs_address(|config| {
        herd_ca(config)
            .issue("Mallory", &["127.0.0.1".into()], Validity::node_default())
            .unwrap()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialling_refuses_another_neighbours_genuine_certificate() {
    // Bona is Clark's neighbour too, but not the one dialled.
    clark_refuses_an_impostor_at_jaquezs_address(|config| node_identity(config, "Bona")).await;
}
