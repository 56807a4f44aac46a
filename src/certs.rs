//! Making the herd's certificates: one CA, and for every node a certificate
//! it signs, usable both to accept links (server auth) and to dial them
//! (client auth). `cargo xtask gen-certs` writes them with [`write_herd`];
//! tests of other modules issue them in memory with [`Ca`].
//!
//! Every key is ECDSA P-256. A node certificate names, as subject
//! alternative names, the node in lower case (a DNS name), the host of its
//! `peer` address (an IP or DNS name) and each extra `names` entry: see
//! [`required_names`], which `herd check` uses too.

use std::collections::BTreeSet;
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, DnsName};

use crate::config::{split_host_port, Config, NodeConfig};

/// Common name of the CA that `gen-certs` makes (and the only one it can
/// reuse from disk: see [`Ca::from_pem`]).
pub const CA_COMMON_NAME: &str = "herd CA";
/// How long a generated CA is valid.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * DAY);
/// How long a generated node certificate is valid; `herd check` warns
/// before it runs out, and `gen-certs` reissues it (reusing the CA).
pub const NODE_LIFETIME: Duration = Duration::from_secs(365 * DAY);
/// New certificates start this long before "now", so a host whose clock is
/// a little behind the issuer's still accepts them.
pub const BACKDATE: Duration = Duration::from_secs(3600);

const DAY: u64 = 24 * 3600;
/// X.509 dates end at 9999-12-31T23:59:59Z.
const LAST_X509_SECOND: u64 = 253_402_300_799;

/// What can go wrong making or writing certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("nodes.{node}: {name:?} is neither a DNS name nor an IP address, so no certificate can carry it")]
    BadName { node: String, name: String },
    #[error("no node named {0} in the config")]
    UnknownNode(String),
    #[error("validity {0}")]
    BadValidity(&'static str),
    #[error("{0}")]
    BadCa(String),
    #[error("{}: {} already exist{}; --force makes a new CA and reissues every node", .dir.display(), .files.join(", "), if .files.len() == 1 { "s" } else { "" })]
    Exists { dir: PathBuf, files: Vec<String> },
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// When a certificate is valid: from `not_before` to `not_after`, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// Valid from [`BACKDATE`] ago until `lifetime` from now.
    pub fn starting_now(lifetime: Duration) -> Validity {
        let now = SystemTime::now();
        Validity {
            not_before: now - BACKDATE,
            not_after: now + lifetime,
        }
    }

    /// The CA's default: [`CA_LIFETIME`].
    pub fn ca_default() -> Validity {
        Validity::starting_now(CA_LIFETIME)
    }

    /// A node certificate's default: [`NODE_LIFETIME`].
    pub fn node_default() -> Validity {
        Validity::starting_now(NODE_LIFETIME)
    }

    fn apply(&self, params: &mut CertificateParams) -> Result<(), CertError> {
        let since_epoch = |t: SystemTime| -> Result<Duration, CertError> {
            let d = t
                .duration_since(UNIX_EPOCH)
                .map_err(|_| CertError::BadValidity("starts before 1970"))?;
            if d.as_secs() > LAST_X509_SECOND {
                return Err(CertError::BadValidity("ends after 9999"));
            }
            Ok(d)
        };
        if self.not_after < self.not_before {
            return Err(CertError::BadValidity("ends before it starts"));
        }
        // rcgen takes `time` dates; reach them from its own epoch helper.
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        params.not_before = epoch + since_epoch(self.not_before)?;
        params.not_after = epoch + since_epoch(self.not_after)?;
        Ok(())
    }
}

/// A node certificate and its private key, PEM encoded.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// The herd's certificate authority: its certificate and signing key.
#[derive(Debug)]
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    // Node certificates are signed directly by the CA: no intermediates.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

impl Ca {
    /// A new CA valid for [`CA_LIFETIME`].
    pub fn generate(common_name: &str) -> Result<Ca, CertError> {
        Ca::generate_with(common_name, Validity::ca_default())
    }

    /// A new CA valid for `validity`.
    pub fn generate_with(common_name: &str, validity: Validity) -> Result<Ca, CertError> {
        let mut params = ca_params(common_name);
        validity.apply(&mut params)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA read back from `ca.pem` and `ca.key`. Only a CA whose common
    /// name is [`CA_COMMON_NAME`] (as `gen-certs` makes them) can be read
    /// back: rcgen here cannot parse an arbitrary issuer name.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, CertError> {
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| CertError::BadCa(format!("CA key is not a usable PEM key: {e}")))?;
        let cert_der = parse_one_cert(cert_pem)
            .ok_or_else(|| CertError::BadCa("CA certificate is not a PEM certificate".into()))?;
        let params = ca_params(CA_COMMON_NAME);
        // The issuer name and key we would sign with must be exactly those of
        // the certificate on disk, or what we sign would not chain to it.
        let probe = params.self_signed(&key)?;
        let on_disk = webpki::anchor_from_trusted_cert(&cert_der)
            .map_err(|e| CertError::BadCa(format!("CA certificate is unusable: {e}")))?;
        let ours = webpki::anchor_from_trusted_cert(probe.der())
            .map_err(|e| CertError::BadCa(format!("CA certificate is unusable: {e}")))?;
        if on_disk.subject_public_key_info != ours.subject_public_key_info {
            return Err(CertError::BadCa(
                "CA key does not match the CA certificate".into(),
            ));
        }
        if on_disk.subject != ours.subject {
            return Err(CertError::BadCa(format!(
                "CA certificate was not made by gen-certs (its name is not {CA_COMMON_NAME:?})"
            )));
        }
        Ok(Ca {
            issuer: Issuer::new(params, key),
            cert_pem: cert_pem.to_string(),
            cert_der,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA's private key, PEM (PKCS#8).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A certificate for `node` naming `node` in lower case and every name
    /// in `extra_names` (an IP address becomes an IP name, anything else a
    /// DNS name), for both server and client auth, with a new P-256 key.
    pub fn issue(
        &self,
        node: &str,
        extra_names: &[String],
        validity: Validity,
    ) -> Result<Issued, CertError> {
        let params = node_params(node, extra_names, validity)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The certificate `gen-certs` makes for `node` of `config`.
    pub fn issue_for(
        &self,
        config: &Config,
        node: &str,
        validity: Validity,
    ) -> Result<Issued, CertError> {
        let node_config = config
            .nodes
            .get(node)
            .ok_or_else(|| CertError::UnknownNode(node.into()))?;
        self.issue(node, &required_names(node, node_config), validity)
    }
}

fn parse_one_cert(pem: &str) -> Option<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes()).next()?.ok()
}

/// Every name a node's certificate must carry, as `herd check` checks them:
/// the node name in lower case, the host of its `peer` address, then its
/// extra `names`; DNS names in lower case, no duplicates.
pub fn required_names(node: &str, config: &NodeConfig) -> Vec<String> {
    let host = split_host_port(&config.peer).map(|(h, _)| h.to_string());
    let mut seen = BTreeSet::new();
    std::iter::once(node.to_string())
        .chain(host)
        .chain(config.names.iter().cloned())
        .map(|n| n.to_ascii_lowercase())
        .filter(|n| seen.insert(n.clone()))
        .collect()
}

/// One certificate name: an IP address, or else a DNS name.
pub(crate) fn san(node: &str, name: &str) -> Result<SanType, CertError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let bad = || CertError::BadName {
        node: node.into(),
        name: name.into(),
    };
    DnsName::try_from(name).map_err(|_| bad())?;
    Ok(SanType::DnsName(name.try_into().map_err(|_| bad())?))
}

fn node_params(
    node: &str,
    extra_names: &[String],
    validity: Validity,
) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node);
    params.distinguished_name = dn;
    let mut seen = BTreeSet::new();
    params.subject_alt_names = std::iter::once(node)
        .chain(extra_names.iter().map(String::as_str))
        .map(str::to_ascii_lowercase)
        .filter(|n| seen.insert(n.clone()))
        .map(|n| san(node, &n))
        .collect::<Result<_, _>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    validity.apply(&mut params)?;
    Ok(params)
}

/// Writes the herd's CA (`ca.pem`, `ca.key`) and, for every node of
/// `config`, `<Node>.pem` and `<Node>.key` into `out` (made if missing),
/// keys readable by their owner only. Returns the files written.
///
/// Without `force` no existing file is touched:
/// - nothing there yet: a new CA and every node's files;
/// - `ca.pem` and `ca.key` there and some nodes with neither file (a node
///   was added): the existing CA issues just those nodes' files, so the
///   rest of the herd keeps its certificates;
/// - anything else (all there, a CA half there, a node half there, node
///   files without a CA): [`CertError::Exists`] naming the files present.
///
/// With `force`, a new CA and every node's files replace what is there.
pub fn write_herd(config: &Config, out: &Path, force: bool) -> Result<Vec<PathBuf>, CertError> {
    let ca_files = ["ca.pem", "ca.key"];
    let node_files = |node: &str| [format!("{node}.pem"), format!("{node}.key")];
    let exists = |name: &str| out.join(name).exists();

    let mut reuse_ca = false;
    let mut todo: Vec<&str> = config.nodes.keys().map(String::as_str).collect();
    if !force {
        let mut present: Vec<String> = ca_files
            .iter()
            .filter(|f| exists(f))
            .map(|f| f.to_string())
            .collect();
        let ca_complete = present.len() == 2;
        let mut half_nodes = false;
        let mut complete_nodes = Vec::new();
        for node in &todo {
            let files = node_files(node);
            let here: Vec<_> = files.iter().filter(|f| exists(f)).cloned().collect();
            half_nodes |= here.len() == 1;
            if here.len() == 2 {
                complete_nodes.push(*node);
            }
            present.extend(here);
        }
        let missing_some_node = complete_nodes.len() < todo.len();
        if present.is_empty() {
            // A fresh directory: make everything.
        } else if ca_complete && !half_nodes && missing_some_node {
            reuse_ca = true;
            todo.retain(|n| !complete_nodes.contains(n));
        } else {
            return Err(CertError::Exists {
                dir: out.to_path_buf(),
                files: present,
            });
        }
    }

    let read = |name: &str| {
        let path = out.join(name);
        std::fs::read_to_string(&path).map_err(|source| CertError::Io { path, source })
    };
    let ca = if reuse_ca {
        Ca::from_pem(&read("ca.pem")?, &read("ca.key")?).map_err(|e| match e {
            CertError::BadCa(why) => CertError::BadCa(format!(
                "{} (with ca.key): {why}; --force makes a new CA and reissues every node",
                out.join("ca.pem").display()
            )),
            e => e,
        })?
    } else {
        Ca::generate(CA_COMMON_NAME)?
    };

    // Issue everything before writing anything, so a bad name leaves no
    // half-written directory behind.
    let mut files: Vec<(PathBuf, String, bool)> = Vec::new();
    if !reuse_ca {
        files.push((out.join("ca.pem"), ca.cert_pem().to_string(), false));
        files.push((out.join("ca.key"), ca.key_pem(), true));
    }
    for node in todo {
        let issued = ca.issue_for(config, node, Validity::node_default())?;
        let [pem, key] = node_files(node);
        files.push((out.join(pem), issued.cert_pem, false));
        files.push((out.join(key), issued.key_pem, true));
    }

    std::fs::create_dir_all(out).map_err(|source| CertError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let mut written = Vec::with_capacity(files.len());
    for (path, text, secret) in files {
        write_file(&path, &text, secret, force).map_err(|source| CertError::Io {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

fn write_file(path: &Path, text: &str, secret: bool, replace: bool) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if replace {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(if secret { 0o600 } else { 0o644 });
        let mut file = options.open(path)?;
        // A replaced file keeps its old mode: set it.
        file.set_permissions(std::fs::Permissions::from_mode(if secret {
            0o600
        } else {
            0o644
        }))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = secret;
        let mut file = options.open(path)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_certificates_name_the_node_its_peer_host_and_extras_once() {
        let extra = vec![
            "127.0.0.1".to_string(),
            "Clark.Example.net".to_string(),
            "clark".to_string(),
            "::1".to_string(),
        ];
        let p = node_params("Clark", &extra, Validity::node_default()).unwrap();
        assert_eq!(
            p.subject_alt_names,
            vec![
                SanType::DnsName("clark".try_into().unwrap()),
                SanType::IpAddress("127.0.0.1".parse().unwrap()),
                SanType::DnsName("clark.example.net".try_into().unwrap()),
                SanType::IpAddress("::1".parse().unwrap()),
            ]
        );
        assert_eq!(
            p.extended_key_usages,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth
            ]
        );
        assert_eq!(p.is_ca, IsCa::ExplicitNoCa);
    }

    #[test]
    fn a_name_no_certificate_can_carry_is_refused_naming_the_node() {
        let ca = Ca::generate("test CA").unwrap();
        let e = ca
            .issue("Clark", &["bad name!".into()], Validity::node_default())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "nodes.Clark: \"bad name!\" is neither a DNS name nor an IP address, so no certificate can carry it"
        );
    }

    #[test]
    fn required_names_come_from_the_node_config() {
        let node = NodeConfig {
            client: "127.0.0.1:1".parse().unwrap(),
            peer: "Herd.Example:2".into(),
            neighbours: vec![],
            admin: None,
            names: vec!["10.0.0.7".into(), "herd.example".into()],
        };
        assert_eq!(
            required_names("Bona", &node),
            vec!["bona", "herd.example", "10.0.0.7"]
        );
    }

    #[test]
    fn validity_is_checked_and_applied() {
        let mut p = CertificateParams::default();
        let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let v = Validity {
            not_before: start,
            not_after: start + Duration::from_secs(DAY),
        };
        v.apply(&mut p).unwrap();
        assert_eq!(p.not_before.unix_timestamp(), 1_700_000_000);
        assert_eq!(p.not_after.unix_timestamp(), 1_700_000_000 + DAY as i64);
        let backwards = Validity {
            not_before: v.not_after,
            not_after: v.not_before,
        };
        assert!(matches!(
            backwards.apply(&mut p),
            Err(CertError::BadValidity(_))
        ));
    }

    #[test]
    fn a_ca_reads_back_from_its_own_pem_and_refuses_others() {
        let ca = Ca::generate(CA_COMMON_NAME).unwrap();
        let again = Ca::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
        assert_eq!(again.cert_der(), ca.cert_der());

        let other = Ca::generate(CA_COMMON_NAME).unwrap();
        let e = Ca::from_pem(ca.cert_pem(), &other.key_pem()).unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");

        let renamed = Ca::generate("someone else's CA").unwrap();
        let e = Ca::from_pem(renamed.cert_pem(), &renamed.key_pem()).unwrap_err();
        assert!(e.to_string().contains("not made by gen-certs"), "{e}");
    }

    const TWO: &str = r#"
certs = "certs"
[nodes.Alpha]
client = "127.0.0.1:1000"
peer = "127.0.0.1:1100"
neighbours = ["Beta"]
[nodes.Beta]
client = "127.0.0.1:1001"
peer = "beta.example:1101"
neighbours = ["Alpha"]
names = ["10.1.2.3"]
"#;

    fn two_nodes(dir: &Path) -> Config {
        Config::from_toml(TWO, &dir.join("herd.toml")).unwrap()
    }

    fn names(paths: &[PathBuf]) -> Vec<String> {
        paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn write_herd_writes_a_ca_and_every_node_with_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let config = two_nodes(dir.path());
        let written = write_herd(&config, &config.certs, false).unwrap();
        assert_eq!(
            names(&written),
            [
                "ca.pem",
                "ca.key",
                "Alpha.pem",
                "Alpha.key",
                "Beta.pem",
                "Beta.key"
            ]
        );
        assert!(written.iter().all(|p| p.starts_with(&config.certs)));
        #[cfg(unix)]
        for path in &written {
            let want = if path.extension().unwrap() == "key" {
                0o600
            } else {
                0o644
            };
            assert_eq!(mode(path), want, "{}", path.display());
        }
        for node in ["Alpha", "Beta"] {
            let p = crate::tls::check_node(&config, node, SystemTime::now(), Duration::ZERO);
            assert!(p.is_empty(), "{p:?}");
        }
    }

    #[test]
    fn write_herd_never_overwrites_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let config = two_nodes(dir.path());
        let out = &config.certs;
        write_herd(&config, out, false).unwrap();
        let ca_before = std::fs::read(out.join("ca.pem")).unwrap();

        let e = write_herd(&config, out, false).unwrap_err();
        match &e {
            CertError::Exists { files, .. } => assert_eq!(
                files,
                &[
                    "ca.pem",
                    "ca.key",
                    "Alpha.pem",
                    "Alpha.key",
                    "Beta.pem",
                    "Beta.key"
                ]
            ),
            e => panic!("{e}"),
        }
        assert!(e.to_string().contains("--force"), "{e}");
        assert_eq!(std::fs::read(out.join("ca.pem")).unwrap(), ca_before);

        // A node with half its files cannot be completed: refuse.
        std::fs::remove_file(out.join("Beta.key")).unwrap();
        let e = write_herd(&config, out, false).unwrap_err();
        assert!(e.to_string().contains("Beta.pem"), "{e}");
        assert!(!out.join("Beta.key").exists());

        // Force replaces everything, keys still private.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let loose = std::fs::Permissions::from_mode(0o644);
            std::fs::set_permissions(out.join("Alpha.key"), loose).unwrap();
        }
        let written = write_herd(&config, out, true).unwrap();
        assert_eq!(written.len(), 6);
        assert_ne!(std::fs::read(out.join("ca.pem")).unwrap(), ca_before);
        #[cfg(unix)]
        assert_eq!(mode(&out.join("Alpha.key")), 0o600);
    }

    #[test]
    fn write_herd_reuses_the_ca_for_a_node_added_later() {
        let dir = tempfile::tempdir().unwrap();
        let config = two_nodes(dir.path());
        let out = &config.certs;
        write_herd(&config, out, false).unwrap();
        let ca_before = std::fs::read(out.join("ca.pem")).unwrap();
        let alpha_before = std::fs::read(out.join("Alpha.pem")).unwrap();
        std::fs::remove_file(out.join("Beta.pem")).unwrap();
        std::fs::remove_file(out.join("Beta.key")).unwrap();

        let written = write_herd(&config, out, false).unwrap();
        assert_eq!(names(&written), ["Beta.pem", "Beta.key"]);
        assert_eq!(std::fs::read(out.join("ca.pem")).unwrap(), ca_before);
        assert_eq!(std::fs::read(out.join("Alpha.pem")).unwrap(), alpha_before);
        let p = crate::tls::check_node(&config, "Beta", SystemTime::now(), Duration::ZERO);
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn write_herd_will_not_reuse_a_ca_whose_key_is_not_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let config = two_nodes(dir.path());
        let out = &config.certs;
        write_herd(&config, out, false).unwrap();
        std::fs::copy(out.join("Alpha.key"), out.join("ca.key")).unwrap();
        std::fs::remove_file(out.join("Beta.pem")).unwrap();
        std::fs::remove_file(out.join("Beta.key")).unwrap();
        let e = write_herd(&config, out, false).unwrap_err();
        assert!(
            e.to_string()
                .contains("ca.pem (with ca.key): CA key does not match"),
            "{e}"
        );
        assert!(!out.join("Beta.pem").exists());
    }

    #[test]
    fn write_herd_refuses_node_files_without_their_ca() {
        let dir = tempfile::tempdir().unwrap();
        let config = two_nodes(dir.path());
        let out = &config.certs;
        write_herd(&config, out, false).unwrap();
        std::fs::remove_file(out.join("ca.key")).unwrap();
        std::fs::remove_file(out.join("Beta.pem")).unwrap();
        std::fs::remove_file(out.join("Beta.key")).unwrap();
        let e = write_herd(&config, out, false).unwrap_err();
        assert!(
            matches!(&e, CertError::Exists { files, .. } if files == &["ca.pem", "Alpha.pem", "Alpha.key"]),
            "{e}"
        );
    }
}
