//! Certificates from files, chosen by SNI: `<cert-dir>/<domain>/fullchain.pem` and
//! `privkey.pem` (certbot's `live/<domain>` layout), or else a wildcard certificate in
//! `<cert-dir>/*.<parent domain>/` for `<label>.<parent domain>`. A certificate is read on
//! first use and again when its `fullchain.pem` changes (a renewal needs no restart).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

use crate::GatewayError;

pub(crate) const CERT_FILE: &str = "fullchain.pem";
pub(crate) const KEY_FILE: &str = "privkey.pem";

pub(crate) struct CertStore {
    dir: PathBuf,
    cache: Mutex<HashMap<PathBuf, (SystemTime, Arc<CertifiedKey>)>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore").field("dir", &self.dir).finish()
    }
}

impl CertStore {
    pub(crate) fn new(dir: PathBuf) -> CertStore {
        CertStore { dir, cache: Mutex::new(HashMap::new()) }
    }

    /// The directory holding `domain`'s certificate: its own, or a wildcard's.
    fn dir_for(&self, domain: &str) -> Option<PathBuf> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if domain.is_empty() || domain.contains('/') || domain.starts_with('.') {
            return None;
        }
        let exact = self.dir.join(&domain);
        if exact.join(CERT_FILE).is_file() {
            return Some(exact);
        }
        let (_, parent) = domain.split_once('.')?;
        let wildcard = self.dir.join(format!("*.{parent}"));
        wildcard.join(CERT_FILE).is_file().then_some(wildcard)
    }

    /// The certificate for `domain`, read again if its file changed.
    pub(crate) fn certified_key(&self, domain: &str) -> Result<Arc<CertifiedKey>, String> {
        let Some(dir) = self.dir_for(domain) else {
            return Err(format!(
                "no certificate for {domain} in {} (expected {domain}/{CERT_FILE} and {KEY_FILE}, or a wildcard's)",
                self.dir.display()
            ));
        };
        let mtime = std::fs::metadata(dir.join(CERT_FILE))
            .and_then(|m| m.modified())
            .map_err(|e| format!("cannot read {}: {e}", dir.join(CERT_FILE).display()))?;
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, key)) = cache.get(&dir)
            && *at == mtime
        {
            return Ok(key.clone());
        }
        let key = Arc::new(load(&dir)?);
        cache.insert(dir, (mtime, key.clone()));
        Ok(key)
    }
}

fn load(dir: &Path) -> Result<CertifiedKey, String> {
    let cert_path = dir.join(CERT_FILE);
    let certs = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", cert_path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", cert_path.display()));
    }
    let key_path = dir.join(KEY_FILE);
    // The error names the file only: its content is a private key.
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|_| format!("cannot read a private key (PEM) from {}", key_path.display()))?;
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
        .map_err(|_| format!("the private key in {} is of an unsupported type", key_path.display()))?;
    Ok(CertifiedKey::new(certs, signing))
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?;
        match self.certified_key(name) {
            Ok(key) => Some(key),
            Err(e) => {
                tracing::debug!(server_name = name, error = %e, "no certificate for a TLS handshake");
                None
            }
        }
    }
}

/// rustls's server configuration over `store`: HTTP/1.1 only (upgrades are HTTP/1.1).
pub(crate) fn server_config(store: Arc<CertStore>) -> Result<rustls::ServerConfig, GatewayError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| GatewayError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
