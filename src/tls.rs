//! The rustls side of the `quic` transport: one node's server and client
//! configurations (TLS 1.3, ALPN `herd/1`, both ends authenticated by the
//! herd's CA and nothing else), mapping a verified peer certificate to a
//! node name, and the certificate checks behind `herd check`.
//!
//! Everything uses the ring provider from [`provider`], never a process-wide
//! default (with several rustls users in one binary there is none).

use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, InconsistentKeys, RootCertStore, ServerConfig};

use crate::certs::required_names;
use crate::config::{split_host_port, Config};

/// The one application protocol spoken between herd nodes.
pub const ALPN: &[u8] = b"herd/1";

/// The crypto provider every herd TLS configuration uses (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// One node's TLS configurations, ready for the QUIC endpoint.
#[derive(Debug, Clone)]
pub struct NodeTls {
    /// Accepts links: requires a client certificate from the herd CA.
    pub server: Arc<ServerConfig>,
    /// Dials links: trusts only the herd CA, presents the node's certificate.
    pub client: Arc<ClientConfig>,
    /// The node's private key (DER), from which stable QUIC reset keys are
    /// derived.
    pub key_der: Vec<u8>,
}

/// Why a node's TLS configuration could not be made; each names its file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{file}: missing (make it with `cargo xtask gen-certs`)")]
    Missing { file: String },
    #[error("{file}: unreadable: {source}")]
    Unreadable { file: String, source: io::Error },
    #[error("{file}: {what}")]
    BadFile { file: String, what: String },
    #[error("{key}: does not match the certificate in {cert}")]
    KeyMismatch { cert: String, key: String },
    #[error("no node named {0} in the config")]
    UnknownNode(String),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// Reads `ca.pem`, `<Node>.pem` and `<Node>.key` from the config's certs
/// directory and makes the node's configurations.
pub fn load(config: &Config, node: &str) -> Result<NodeTls, TlsError> {
    if !config.nodes.contains_key(node) {
        return Err(TlsError::UnknownNode(node.into()));
    }
    let ca_path = config.ca_file();
    let (cert_path, key_path) = config.cert_files(node);
    let (ca_file, ca) = read(&ca_path)?;
    let (cert_file, cert) = read(&cert_path)?;
    let (key_file, key) = read(&key_path)?;
    build((&ca_file, &ca), (&cert_file, &cert), (&key_file, &key))
}

/// Makes a node's configurations from PEM text (for tests).
pub fn from_pem(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<NodeTls, TlsError> {
    build(
        ("CA PEM", ca_pem.as_bytes()),
        ("certificate PEM", cert_pem.as_bytes()),
        ("key PEM", key_pem.as_bytes()),
    )
}

fn read(path: &Path) -> Result<(String, Vec<u8>), TlsError> {
    let file = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => Ok((file, bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(TlsError::Missing { file }),
        Err(source) => Err(TlsError::Unreadable { file, source }),
    }
}

fn parse_certs(file: &str, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |what: String| TlsError::BadFile {
        file: file.into(),
        what,
    };
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(certs)
}

fn parse_key(file: &str, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| TlsError::BadFile {
        file: file.into(),
        what: match e {
            pem::Error::NoItemsFound => "no PEM private key in it".into(),
            e => format!("not a PEM private key: {e}"),
        },
    })
}

/// The node's certificate chain and key, checked to belong together.
fn certified(
    (cert_file, cert): (&str, &[u8]),
    (key_file, key): (&str, &[u8]),
    provider: &CryptoProvider,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = parse_certs(cert_file, cert)?;
    let key = parse_key(key_file, key)?;
    match CertifiedKey::from_der(chain.clone(), key.clone_key(), provider) {
        Ok(_) => Ok((chain, key)),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert: cert_file.into(),
                key: key_file.into(),
            })
        }
        Err(e) => Err(TlsError::BadFile {
            file: key_file.into(),
            what: format!("not a usable key for {cert_file}: {e}"),
        }),
    }
}

fn build(
    (ca_file, ca): (&str, &[u8]),
    cert: (&str, &[u8]),
    key: (&str, &[u8]),
) -> Result<NodeTls, TlsError> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    for der in parse_certs(ca_file, ca)? {
        roots.add(der).map_err(|e| TlsError::BadFile {
            file: ca_file.into(),
            what: format!("not a usable CA certificate: {e}"),
        })?;
    }
    let roots = Arc::new(roots);
    let (chain, key) = certified(cert, key, &provider)?;
    let key_der = key.secret_der().to_vec();

    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())?;
    server.alpn_protocols = vec![ALPN.to_vec()];

    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    client.alpn_protocols = vec![ALPN.to_vec()];

    Ok(NodeTls {
        server: Arc::new(server),
        client: Arc::new(client),
        key_der,
    })
}

/// Which of `candidates` (node names, compared as lower-case DNS names) the
/// end-entity certificate `cert` names: the first that matches, as spelled
/// in `candidates`. Only meaningful for a certificate already verified
/// against the herd CA (as rustls does before the handshake completes).
pub fn identify(cert: &CertificateDer<'_>, candidates: &[&str]) -> Option<String> {
    let ee = webpki::EndEntityCert::try_from(cert).ok()?;
    candidates.iter().find_map(|&name| {
        let dns = DnsName::try_from(name.to_ascii_lowercase()).ok()?;
        ee.verify_is_valid_for_subject_name(&ServerName::DnsName(dns))
            .ok()
            .map(|()| name.to_string())
    })
}

/// Everything wrong with `node`'s certificate files at `now`, one line
/// each naming the file; empty when all is well. A certificate that will
/// have expired `warn_within` from now is a problem too.
///
/// The CA's own dates are not checked: webpki (so rustls) never checks a
/// trust anchor's dates, only the node certificates'.
pub fn check_node(
    config: &Config,
    node: &str,
    now: SystemTime,
    warn_within: Duration,
) -> Vec<String> {
    let source = config
        .source
        .as_deref()
        .map_or("config".into(), |p| p.display().to_string());
    let Some(node_config) = config.nodes.get(node) else {
        return vec![format!("{source}: no node named {node}")];
    };
    let mut problems = Vec::new();
    let ca_path = config.ca_file();
    let (cert_path, key_path) = config.cert_files(node);
    let ca_file = ca_path.display().to_string();
    let cert_file = cert_path.display().to_string();

    let ca = read(&ca_path)
        .and_then(|(f, b)| parse_certs(&f, &b))
        .map_err(|e| problems.push(e.to_string()))
        .ok();
    let cert = read(&cert_path)
        .map_err(|e| problems.push(e.to_string()))
        .ok();
    let key = read(&key_path)
        .map_err(|e| problems.push(e.to_string()))
        .ok();
    let Some((_, cert_pem)) = cert else {
        return problems;
    };
    let chain = match parse_certs(&cert_file, &cert_pem) {
        Ok(chain) => chain,
        Err(e) => {
            problems.push(e.to_string());
            return problems;
        }
    };
    if let Some((key_file, key_pem)) = &key {
        if let Err(e) = certified((&cert_file, &cert_pem), (key_file, key_pem), &provider()) {
            problems.push(e.to_string());
        }
    }
    let ee = match webpki::EndEntityCert::try_from(&chain[0]) {
        Ok(ee) => ee,
        Err(e) => {
            problems.push(format!("{cert_file}: not a usable certificate: {e}"));
            return problems;
        }
    };

    let peer_host = split_host_port(&node_config.peer).map(|(h, _)| h.to_ascii_lowercase());
    for name in required_names(node, node_config) {
        let why = if name == node.to_ascii_lowercase() {
            "the node name".to_string()
        } else if Some(&name) == peer_host.as_ref() {
            format!("the host of nodes.{node}.peer")
        } else {
            format!("listed in nodes.{node}.names")
        };
        let Some(server_name) = server_name(&name) else {
            problems.push(format!(
                "{source}: nodes.{node}: {name:?} ({why}) is neither a DNS name nor an IP address"
            ));
            continue;
        };
        if ee.verify_is_valid_for_subject_name(&server_name).is_err() {
            problems.push(format!(
                "{cert_file}: does not carry the name {name} ({why})"
            ));
        }
    }

    let Some(ca) = ca else {
        return problems;
    };
    let anchors = match ca
        .iter()
        .map(|c| webpki::anchor_from_trusted_cert(c).map(|a| a.to_owned()))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(anchors) => anchors,
        Err(e) => {
            problems.push(format!("{ca_file}: not a usable CA certificate: {e}"));
            return problems;
        }
    };
    let algs = provider().signature_verification_algorithms.all;
    let intermediates = &chain[1..];
    let verify = |at: SystemTime| -> Vec<(&str, webpki::Error)> {
        let at = UnixTime::since_unix_epoch(at.duration_since(UNIX_EPOCH).unwrap_or_default());
        [
            ("server", webpki::KeyUsage::server_auth()),
            ("client", webpki::KeyUsage::client_auth()),
        ]
        .into_iter()
        .filter_map(|(role, usage)| {
            ee.verify_for_usage(algs, &anchors, intermediates, at, usage, None, None)
                .err()
                .map(|e| (role, e))
        })
        .collect()
    };

    let now_errors = verify(now);
    for (role, e) in &now_errors {
        #[allow(deprecated)]
        let line = match e {
            webpki::Error::CertExpired { not_after, .. } => {
                format!("{cert_file}: expired at {}", date(*not_after))
            }
            webpki::Error::CertNotValidYet { not_before, .. } => {
                format!("{cert_file}: not valid until {}", date(*not_before))
            }
            webpki::Error::UnknownIssuer
            | webpki::Error::InvalidSignatureForPublicKey
            | webpki::Error::UnsupportedSignatureAlgorithmContext(_)
            | webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
                format!("{cert_file}: not signed by the herd CA in {ca_file}")
            }
            webpki::Error::RequiredEkuNotFoundContext(_) | webpki::Error::RequiredEkuNotFound => {
                format!("{cert_file}: lacks the extended key usage for {role} authentication")
            }
            e => format!("{cert_file}: does not verify against the herd CA in {ca_file}: {e}"),
        };
        // Both usages usually fail for the same reason: say it once.
        if !problems.contains(&line) {
            problems.push(line);
        }
    }
    if now_errors.is_empty() && !warn_within.is_zero() {
        if let Some((_, webpki::Error::CertExpired { not_after, .. })) =
            verify(now + warn_within).first()
        {
            let days = warn_within.as_secs().div_ceil(24 * 3600);
            problems.push(format!(
                "{cert_file}: expires within {days} days (at {})",
                date(*not_after)
            ));
        }
    }
    problems
}

fn server_name(name: &str) -> Option<ServerName<'static>> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Some(ServerName::IpAddress(ip.into()));
    }
    DnsName::try_from(name.to_string())
        .ok()
        .map(ServerName::DnsName)
}

fn date(t: UnixTime) -> String {
    humantime_serde::re::humantime::format_rfc3339_seconds(
        UNIX_EPOCH + Duration::from_secs(t.as_secs()),
    )
    .to_string()
}

/// A two-node herd with its certificates, for tests of what uses them.
#[cfg(test)]
pub(crate) mod fixture {
    use crate::certs::{write_herd, Ca};
    use crate::config::Config;

    const TWO: &str = r#"
certs = "certs"
[nodes.Alpha]
client = "127.0.0.1:1000"
peer = "127.0.0.1:1100"
neighbours = ["Beta"]
names = ["alpha.example"]
[nodes.Beta]
client = "127.0.0.1:1001"
peer = "127.0.0.1:1101"
neighbours = ["Alpha"]
"#;

    /// A two-node herd with its certificates written, and the CA that
    /// signed them.
    pub fn herd() -> (tempfile::TempDir, Config, Ca) {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_toml(TWO, &dir.path().join("herd.toml")).unwrap();
        write_herd(&config, &config.certs, false).unwrap();
        let read = |f: &str| std::fs::read_to_string(config.certs.join(f)).unwrap();
        let ca = Ca::from_pem(&read("ca.pem"), &read("ca.key")).unwrap();
        (dir, config, ca)
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::herd;
    use super::*;
    use crate::certs::{Ca, Validity, CA_COMMON_NAME};

    const DAY: Duration = Duration::from_secs(24 * 3600);

    /// Replaces Alpha's certificate and key with ones issued by `ca`.
    fn reissue_alpha(config: &Config, ca: &Ca, extra: &[&str], validity: Validity) {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let issued = ca.issue("Alpha", &extra, validity).unwrap();
        let (pem, key) = config.cert_files("Alpha");
        std::fs::write(pem, issued.cert_pem).unwrap();
        std::fs::write(key, issued.key_pem).unwrap();
    }

    fn check(config: &Config) -> Vec<String> {
        check_node(config, "Alpha", SystemTime::now(), 30 * DAY)
    }

    fn only(problems: Vec<String>, file: &str, words: &str) {
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains(file), "{problems:?}");
        assert!(problems[0].contains(words), "{problems:?}");
        assert!(!problems[0].contains('\n'));
    }

    const GOOD_NAMES: &[&str] = &["127.0.0.1", "alpha.example"];

    #[test]
    fn fresh_certificates_pass_the_check() {
        let (_dir, config, _ca) = herd();
        for node in ["Alpha", "Beta"] {
            let p = check_node(&config, node, SystemTime::now(), 30 * DAY);
            assert!(p.is_empty(), "{p:?}");
        }
    }

    #[test]
    fn check_flags_a_missing_file() {
        let (_dir, config, _ca) = herd();
        std::fs::remove_file(config.certs.join("Alpha.key")).unwrap();
        only(check(&config), "Alpha.key", "missing");
        std::fs::remove_file(config.certs.join("Alpha.pem")).unwrap();
        let p = check(&config);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].ends_with("Alpha.pem: missing (make it with `cargo xtask gen-certs`)"));
        assert!(p[1].ends_with("Alpha.key: missing (make it with `cargo xtask gen-certs`)"));
        std::fs::remove_file(config.ca_file()).unwrap();
        let p = check_node(&config, "Beta", SystemTime::now(), 30 * DAY);
        only(p, "ca.pem", "missing");
    }

    #[test]
    fn check_flags_a_key_that_is_not_the_certificates() {
        let (_dir, config, _ca) = herd();
        std::fs::copy(
            config.certs.join("Beta.key"),
            config.certs.join("Alpha.key"),
        )
        .unwrap();
        only(
            check(&config),
            "Alpha.key",
            "does not match the certificate in",
        );
        std::fs::write(config.certs.join("Alpha.key"), "garbage").unwrap();
        only(check(&config), "Alpha.key", "no PEM private key");
    }

    #[test]
    fn check_flags_a_certificate_from_another_ca() {
        let (_dir, config, _ca) = herd();
        // Same CA name, different key: only the signature tells them apart.
        let stranger = Ca::generate(CA_COMMON_NAME).unwrap();
        reissue_alpha(&config, &stranger, GOOD_NAMES, Validity::node_default());
        only(check(&config), "Alpha.pem", "not signed by the herd CA in");
    }

    #[test]
    fn check_flags_a_missing_name() {
        let (_dir, config, ca) = herd();
        reissue_alpha(&config, &ca, &["127.0.0.1"], Validity::node_default());
        only(
            check(&config),
            "Alpha.pem",
            "does not carry the name alpha.example (listed in nodes.Alpha.names)",
        );
        reissue_alpha(&config, &ca, &["alpha.example"], Validity::node_default());
        only(
            check(&config),
            "Alpha.pem",
            "does not carry the name 127.0.0.1 (the host of nodes.Alpha.peer)",
        );
        // A certificate for another node does not name this one.
        std::fs::copy(
            config.certs.join("Beta.pem"),
            config.certs.join("Alpha.pem"),
        )
        .unwrap();
        std::fs::copy(
            config.certs.join("Beta.key"),
            config.certs.join("Alpha.key"),
        )
        .unwrap();
        let p = check(&config);
        assert!(
            p.iter()
                .any(|l| l.contains("does not carry the name alpha (the node name)")),
            "{p:?}"
        );
    }

    #[test]
    fn check_flags_expired_and_not_yet_valid_certificates() {
        let (_dir, config, ca) = herd();
        let now = SystemTime::now();
        let expired = Validity {
            not_before: now - 10 * DAY,
            not_after: now - DAY,
        };
        reissue_alpha(&config, &ca, GOOD_NAMES, expired);
        only(check(&config), "Alpha.pem", "expired at");

        let future = Validity {
            not_before: now + DAY,
            not_after: now + 400 * DAY,
        };
        reissue_alpha(&config, &ca, GOOD_NAMES, future);
        only(check(&config), "Alpha.pem", "not valid until");
    }

    #[test]
    fn check_warns_of_a_certificate_expiring_soon() {
        let (_dir, config, ca) = herd();
        let now = SystemTime::now();
        reissue_alpha(
            &config,
            &ca,
            GOOD_NAMES,
            Validity {
                not_before: now - DAY,
                not_after: now + 10 * DAY,
            },
        );
        only(check(&config), "Alpha.pem", "expires within 30 days (at ");
        assert!(check_node(&config, "Alpha", now, 5 * DAY).is_empty());
    }

    #[test]
    fn check_names_an_unknown_node() {
        let (_dir, config, _ca) = herd();
        only(
            check_node(&config, "Gamma", SystemTime::now(), DAY),
            "herd.toml",
            "no node named Gamma",
        );
    }

    #[test]
    fn identify_maps_a_certificate_to_the_node_it_names() {
        let ca = Ca::generate("test CA").unwrap();
        let issued = ca
            .issue("Clark", &["127.0.0.1".into()], Validity::node_default())
            .unwrap();
        let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        assert_eq!(identify(&der, &["Jaquez", "Clark"]), Some("Clark".into()));
        assert_eq!(identify(&der, &["CLARK"]), Some("CLARK".into()));
        assert_eq!(identify(&der, &["Jaquez", "Bona"]), None);
        assert_eq!(identify(&der, &["127.0.0.1", "bad name!"]), None);
        assert_eq!(
            identify(&CertificateDer::from(vec![1, 2, 3]), &["Clark"]),
            None
        );
    }

    #[test]
    fn configs_are_tls13_with_the_herd_alpn_and_keep_the_key() {
        let ca = Ca::generate("test CA").unwrap();
        let issued = ca.issue("Clark", &[], Validity::node_default()).unwrap();
        let tls = from_pem(ca.cert_pem(), &issued.cert_pem, &issued.key_pem).unwrap();
        assert_eq!(tls.server.alpn_protocols, vec![ALPN.to_vec()]);
        assert_eq!(tls.client.alpn_protocols, vec![ALPN.to_vec()]);
        let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
        assert_eq!(tls.key_der, key.secret_der());
    }

    #[test]
    fn from_pem_and_load_name_what_is_wrong() {
        let ca = Ca::generate("test CA").unwrap();
        let a = ca.issue("Alpha", &[], Validity::node_default()).unwrap();
        let b = ca.issue("Beta", &[], Validity::node_default()).unwrap();
        let e = from_pem(ca.cert_pem(), &a.cert_pem, &b.key_pem).unwrap_err();
        assert_eq!(
            e.to_string(),
            "key PEM: does not match the certificate in certificate PEM"
        );
        let e = from_pem("nothing", &a.cert_pem, &a.key_pem).unwrap_err();
        assert_eq!(e.to_string(), "CA PEM: no PEM certificate in it");

        let (_dir, config, _ca) = herd();
        assert!(load(&config, "Alpha").is_ok());
        std::fs::remove_file(config.certs.join("Beta.key")).unwrap();
        let e = load(&config, "Beta").unwrap_err();
        assert!(
            e.to_string()
                .ends_with("Beta.key: missing (make it with `cargo xtask gen-certs`)"),
            "{e}"
        );
        assert!(matches!(
            load(&config, "Gamma"),
            Err(TlsError::UnknownNode(_))
        ));
    }
}
