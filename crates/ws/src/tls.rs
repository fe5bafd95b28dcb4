//! rustls configuration: clients for `wss://`, and servers (ALPN `h2` and `http/1.1`).
//!
//! The crypto provider is chosen explicitly (ring), so nothing depends on a process-wide
//! default being installed and nothing panics at run time when none is.

use std::sync::{Arc, OnceLock};

use rustls::{ClientConfig, RootCertStore};

/// The ring crypto provider that every configuration built here uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration trusting `roots` (for a private CA or a self-signed test server).
///
/// ```
/// let mut roots = rustls::RootCertStore::empty();
/// // roots.add(certificate_der)?;
/// let config = fullduplex::tls::client_config_with_roots(roots).unwrap();
/// let config = fullduplex::Config::default().tls(config);
/// # let _ = config;
/// ```
pub fn client_config_with_roots(roots: RootCertStore) -> Result<Arc<ClientConfig>, rustls::Error> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The default: Mozilla's roots from `webpki-roots`, built once and shared.
pub fn default_client_config() -> Result<Arc<ClientConfig>, rustls::Error> {
    static DEFAULT: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    if let Some(config) = DEFAULT.get() {
        return Ok(config.clone());
    }
    let roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = client_config_with_roots(roots)?;
    Ok(DEFAULT.get_or_init(|| config).clone())
}

/// A server configuration for one certificate chain and its private key (ring provider, safe
/// default protocol versions, no client authentication) that offers by ALPN `h2` and
/// `http/1.1` when `http2` is true, `http/1.1` alone otherwise.
///
/// With `h2` offered, check what the handshake chose (`tls.get_ref().1.alpn_protocol() ==
/// Some(b"h2")`) and hand such connections to `fullduplex::http2::serve_connection` (or a
/// hyper HTTP/2 server); the others to [`crate::accept_with`]. Clients that do not use ALPN
/// get HTTP/1.1.
///
/// # Errors
///
/// The key does not match the certificate, or is of an unsupported kind.
pub fn server_config(
    cert_chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
    http2: bool,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(cert_chain, key)?;
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}
