//! rustls client configuration for `wss://`.
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
