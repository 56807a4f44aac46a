//! The reference herd's certificates, as `cargo xtask gen-certs` makes them
//! from config/herd.toml, checked as `herd check` checks them, and used for
//! real TLS 1.3 handshakes driven in memory.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use herd::certs::{write_herd, Ca, CertError, Validity, CA_COMMON_NAME};
use herd::config::{Config, DEFAULT_PATH};
use herd::tls::{self, NodeTls, ALPN};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConnection};

const MONTH: Duration = Duration::from_secs(30 * 24 * 3600);

/// The committed config with its certificates written to a fresh directory.
fn reference_herd() -> (tempfile::TempDir, Config) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_PATH);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut config = Config::from_toml(&text, &path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    config.certs = dir.path().join("certs");
    write_herd(&config, &config.certs, false).unwrap();
    (dir, config)
}

fn cert_of(config: &Config, node: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(config.cert_files(node).0).unwrap()
}

/// Moves whatever `from` has to send into `to`; whether anything moved.
fn pump(from: &mut Connection, to: &mut Connection) -> Result<bool, rustls::Error> {
    let mut bytes = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut bytes).unwrap();
    }
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        to.read_tls(&mut rest).unwrap();
        to.process_new_packets()?;
    }
    Ok(!bytes.is_empty())
}

/// A full handshake between the two configurations, the client dialling
/// `name`; the error says which side refused.
fn handshake(
    client: Arc<ClientConfig>,
    server: &NodeTls,
    name: &str,
) -> Result<(Connection, Connection), String> {
    let name = ServerName::try_from(name.to_string()).unwrap();
    let mut c = Connection::from(ClientConnection::new(client, name).unwrap());
    let mut s = Connection::from(ServerConnection::new(server.server.clone()).unwrap());
    loop {
        let sent = pump(&mut c, &mut s).map_err(|e| format!("server refused: {e}"))?;
        let answered = pump(&mut s, &mut c).map_err(|e| format!("client refused: {e}"))?;
        if !sent && !answered {
            break;
        }
    }
    if c.is_handshaking() || s.is_handshaking() {
        return Err("handshake stalled".into());
    }
    Ok((c, s))
}

#[test]
fn every_reference_node_gets_a_certificate_that_passes_the_check() {
    let (_dir, config) = reference_herd();
    for node in config.nodes.keys() {
        let problems = tls::check_node(&config, node, SystemTime::now(), MONTH);
        assert!(problems.is_empty(), "{node}: {problems:?}");
    }
}

#[test]
fn each_certificate_names_its_own_node_and_no_other() {
    let (_dir, config) = reference_herd();
    let all: Vec<&str> = config.nodes.keys().map(String::as_str).collect();
    for &node in &all {
        let cert = cert_of(&config, node);
        assert_eq!(tls::identify(&cert, &all), Some(node.to_string()));
        let others: Vec<&str> = all.iter().copied().filter(|&n| n != node).collect();
        assert_eq!(tls::identify(&cert, &others), None, "{node}");
        // The peer host is carried too (as an IP name): a server name of
        // 127.0.0.1 verifies.
        let ee = webpki::EndEntityCert::try_from(&cert).unwrap();
        let ip = ServerName::try_from("127.0.0.1").unwrap();
        ee.verify_is_valid_for_subject_name(&ip).unwrap();
    }
}

#[test]
#[cfg(unix)]
fn keys_are_private_and_nothing_is_overwritten_without_force() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, config) = reference_herd();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&config.certs.join("ca.key")), 0o600);
    for node in config.nodes.keys() {
        let (pem, key) = config.cert_files(node);
        assert_eq!(mode(&key), 0o600, "{}", key.display());
        assert_eq!(mode(&pem), 0o644, "{}", pem.display());
    }

    let before = std::fs::read(config.ca_file()).unwrap();
    match write_herd(&config, &config.certs, false) {
        Err(CertError::Exists { files, .. }) => assert_eq!(files.len(), 2 + 2 * 5),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(config.ca_file()).unwrap(), before);

    let written = write_herd(&config, &config.certs, true).unwrap();
    assert_eq!(written.len(), 2 + 2 * 5);
    assert_ne!(std::fs::read(config.ca_file()).unwrap(), before);
    for node in config.nodes.keys() {
        let problems = tls::check_node(&config, node, SystemTime::now(), MONTH);
        assert!(problems.is_empty(), "{node}: {problems:?}");
    }
}

#[test]
fn two_herd_nodes_complete_a_mutual_tls13_handshake() {
    let (_dir, config) = reference_herd();
    let clark = tls::load(&config, "Clark").unwrap();
    let jaquez = tls::load(&config, "Jaquez").unwrap();
    let (client, server) = handshake(clark.client.clone(), &jaquez, "jaquez").unwrap();

    assert_eq!(client.alpn_protocol(), Some(ALPN));
    assert_eq!(server.alpn_protocol(), Some(ALPN));
    assert_eq!(
        client.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    // Each end maps the other's verified certificate to a node.
    let from_client = &server.peer_certificates().unwrap()[0];
    assert_eq!(
        tls::identify(from_client, &["Clark", "Campbell"]),
        Some("Clark".into())
    );
    let from_server = &client.peer_certificates().unwrap()[0];
    assert_eq!(
        tls::identify(from_server, &["Jaquez"]),
        Some("Jaquez".into())
    );
}

#[test]
fn a_client_certificate_from_another_ca_is_refused() {
    let (_dir, config) = reference_herd();
    let jaquez = tls::load(&config, "Jaquez").unwrap();
    // Trusts the herd CA, but its own certificate (naming a real node, under
    // the same CA name) comes from elsewhere.
    let stranger = Ca::generate(CA_COMMON_NAME).unwrap();
    let fake = stranger
        .issue("Clark", &["127.0.0.1".into()], Validity::node_default())
        .unwrap();
    let herd_ca = std::fs::read_to_string(config.ca_file()).unwrap();
    let impostor = tls::from_pem(&herd_ca, &fake.cert_pem, &fake.key_pem).unwrap();
    let e = handshake(impostor.client, &jaquez, "jaquez").unwrap_err();
    assert!(e.starts_with("server refused"), "{e}");
}

#[test]
fn a_client_without_a_certificate_is_refused() {
    let (_dir, config) = reference_herd();
    let jaquez = tls::load(&config, "Jaquez").unwrap();
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(config.ca_file()).unwrap())
        .unwrap();
    let mut anonymous = ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    anonymous.alpn_protocols = vec![ALPN.to_vec()];
    let e = handshake(Arc::new(anonymous), &jaquez, "jaquez").unwrap_err();
    assert!(e.starts_with("server refused"), "{e}");
}

#[test]
fn a_server_without_the_dialled_name_is_refused() {
    let (_dir, config) = reference_herd();
    let clark = tls::load(&config, "Clark").unwrap();
    let jaquez = tls::load(&config, "Jaquez").unwrap();
    let e = handshake(clark.client, &jaquez, "bona").unwrap_err();
    assert!(e.starts_with("client refused"), "{e}");
    // rustls lists every name the certificate carries: exactly the node
    // name and the peer host.
    assert!(
        e.ends_with(r#"not valid for name "bona"; certificate is only valid for DnsName("jaquez") or IpAddress(127.0.0.1)"#),
        "{e}"
    );
}
