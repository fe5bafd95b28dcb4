//! An echo server over TLS (`wss://`): tokio-rustls does TLS, and `fullduplex::accept` runs
//! over the TLS stream like over any `AsyncRead + AsyncWrite`. The one line that matters is
//! `fullduplex::accept(acceptor.accept(tcp).await?)`.
//!
//! ```text
//! cargo run --release -p fullduplex --example tls_echo_server -- cert.pem key.pem 127.0.0.1:9443
//! ```

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(cert), Some(key)) = (args.next(), args.next()) else {
        return Err("usage: tls_echo_server CERT.pem KEY.pem [ADDR]".into());
    };
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9443".to_owned());
    let certs = CertificateDer::pem_file_iter(&cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&key)?;
    let config = rustls::ServerConfig::builder_with_provider(fullduplex::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on wss://{}", listener.local_addr()?);
    loop {
        let (tcp, peer) = listener.accept().await?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let result = async {
                let mut ws = fullduplex::accept(acceptor.accept(tcp).await?).await?;
                while let Some(message) = ws.recv().await {
                    let message = message?;
                    if message.is_text() || message.is_binary() {
                        ws.send(message).await?;
                    }
                }
                Ok::<_, fullduplex::Error>(())
            };
            if let Err(error) = result.await {
                eprintln!("{peer}: {error}");
            }
        });
    }
}
