//! Certificates reloaded in place (what SIGHUP does): new links use the
//! new files, while client connections and links already up carry on.

mod common;

use std::sync::Arc;

use common::{Client, Herd};
use herd::certs::{Ca, Validity};
use herd::config::TransportKind;
use quinn::crypto::rustls::QuicClientConfig;

const PAIR: &[(&str, &[&str])] = &[("Clark", &["Jaquez"]), ("Jaquez", &["Clark"])];

/// Dials Clark as Jaquez, checking Clark's certificate for `name`.
async fn dial_clark_as(herd: &Herd, name: &str) -> Result<(), String> {
    let certs = &herd.config.certs;
    let read = |f: &str| std::fs::read_to_string(certs.join(f)).unwrap();
    let tls =
        herd::tls::from_pem(&read("ca.pem"), &read("Jaquez.pem"), &read("Jaquez.key")).unwrap();
    let client =
        quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls.client).unwrap()));
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = herd.config.nodes["Clark"].peer.parse().unwrap();
    let result = match endpoint.connect_with(client, addr, name).unwrap().await {
        Ok(connection) => {
            connection.close(0u32.into(), b"test done");
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    };
    endpoint.wait_idle().await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloaded_certificates_serve_new_links_and_keep_old_ones() {
    let herd = Herd::start(TransportKind::Quic, PAIR).await;
    herd.settled().await;
    let mut client = Client::connect(herd.client_addr("Clark")).await;
    client.ask("IAMAT before +1+1 1").await;

    let refused = dial_clark_as(&herd, "reloaded.example").await.unwrap_err();
    assert!(refused.contains("certificate"), "{refused}");

    // Reissue Clark's certificate from the same CA with one more name.
    let certs = &herd.config.certs;
    let read = |f: &str| std::fs::read_to_string(certs.join(f)).unwrap();
    let ca = Ca::from_pem(&read("ca.pem"), &read("ca.key")).unwrap();
    let names = ["127.0.0.1".to_string(), "reloaded.example".to_string()];
    let issued = ca.issue("Clark", &names, Validity::node_default()).unwrap();
    std::fs::write(certs.join("Clark.pem"), &issued.cert_pem).unwrap();
    std::fs::write(certs.join("Clark.key"), &issued.key_pem).unwrap();
    herd.node("Clark").reload_certificates().unwrap();

    dial_clark_as(&herd, "reloaded.example").await.unwrap();
    // Nothing already connected noticed.
    let at = client.ask("IAMAT after +1+1 2").await;
    herd.holds("Jaquez", b"after", at.as_bytes()).await;
    assert_eq!(herd.hub("Clark").attached(), vec!["Jaquez".to_string()]);

    // A broken file is refused and the node keeps what it had.
    std::fs::write(certs.join("Clark.pem"), "not a certificate").unwrap();
    let error = herd.node("Clark").reload_certificates().unwrap_err();
    assert!(error.to_string().contains("Clark.pem"), "{error}");
    dial_clark_as(&herd, "reloaded.example").await.unwrap();
    herd.shutdown().await;
}
