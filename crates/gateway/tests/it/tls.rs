//! HTTPS: certificates from files chosen by SNI, a wildcard, a renewal without restart.

use std::path::Path;

use axum::http::StatusCode;
use serde_json::json;

use crate::harness::{TestGateway, replica, serve};

/// Writes a self-signed certificate for `names` to `<cert_dir>/<dir>/{fullchain,privkey}.pem`
/// and returns its PEM.
pub(crate) fn write_cert(cert_dir: &Path, dir: &str, names: &[&str]) -> String {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let cert = rcgen::generate_simple_self_signed(names).unwrap();
    let dir = cert_dir.join(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pem = cert.cert.pem();
    std::fs::write(dir.join("fullchain.pem"), &pem).unwrap();
    std::fs::write(dir.join("privkey.pem"), cert.signing_key.serialize_pem()).unwrap();
    pem
}

fn https_client(domain: &str, root_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(root_pem.as_bytes()).unwrap())
        .resolve(domain, std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .build()
        .unwrap()
}

#[tokio::test]
async fn https_serves_each_domain_with_its_certificate() {
    let gw = TestGateway::start_with(|c| c.https_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let (a, b) = (serve(replica("a")).await, serve(replica("b")).await);
    let one = write_cert(&gw.cert_dir(), "one.gw.example.com", &["one.gw.example.com"]);
    let wildcard = write_cert(&gw.cert_dir(), "*.gw.example.com", &["*.gw.example.com"]);
    gw.register_service("main", "one", "one.gw.example.com", json!({"https": true})).await;
    gw.register_service("main", "two", "two.gw.example.com", json!({"https": true})).await;
    gw.register_replica("main", "one", "ja", a).await;
    gw.register_replica("main", "two", "jb", b).await;
    let port = gw.https_addr().port();

    let url = format!("https://one.gw.example.com:{port}/whoami");
    let resp = https_client("one.gw.example.com", &one).get(&url).send().await.unwrap();
    assert_eq!((resp.status(), resp.text().await.unwrap()), (StatusCode::OK, "a".to_owned()));
    // The wildcard certificate does not serve `one`, which has its own.
    assert!(https_client("one.gw.example.com", &wildcard).get(&url).send().await.is_err());

    let url = format!("https://two.gw.example.com:{port}/whoami");
    let resp = https_client("two.gw.example.com", &wildcard).get(&url).send().await.unwrap();
    assert_eq!((resp.status(), resp.text().await.unwrap()), (StatusCode::OK, "b".to_owned()));

    // A renewed certificate is used without a restart.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let renewed = write_cert(&gw.cert_dir(), "one.gw.example.com", &["one.gw.example.com"]);
    let url = format!("https://one.gw.example.com:{port}/whoami");
    let resp = https_client("one.gw.example.com", &renewed).get(&url).send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "a");

    // No certificate for a domain: its registration fails, as certbot's would.
    let body = json!({"run_name": "other", "domain": "other.elsewhere.com", "https": true, "auth": false,
                      "client_max_body_size": 1, "options": {}, "ssh_private_key": "k"});
    let (status, resp) = gw.post("/api/registry/main/services/register", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let detail = resp["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("Error obtaining other.elsewhere.com TLS certificate: no certificate"),
        "{detail}"
    );
}
