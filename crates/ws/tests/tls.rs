//! `wss://`: a rustls server with a generated certificate, and our client trusting it through
//! custom roots.

use std::sync::Arc;

use fullduplex::{Config, Message};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

fn self_signed() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    (cert, key)
}

async fn tls_echo_server(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> u16 {
    let config = rustls::ServerConfig::builder_with_provider(fullduplex::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let Ok(tls) = acceptor.accept(tcp).await else {
            return;
        };
        let mut ws = fullduplex::accept(tls).await.unwrap();
        while let Some(Ok(message)) = ws.recv().await {
            if message.is_text() || message.is_binary() {
                ws.send(message).await.unwrap();
            }
        }
    });
    port
}

#[tokio::test]
async fn wss_round_trip_with_custom_roots() {
    let (cert, key) = self_signed();
    let port = tls_echo_server(cert.clone(), key).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let config = Config::default().tls(fullduplex::tls::client_config_with_roots(roots).unwrap());
    let (mut ws, _) = fullduplex::connect_with(format!("wss://localhost:{port}/secure"), config)
        .await
        .unwrap();
    for message in [
        Message::text("over TLS"),
        Message::binary(vec![9u8; 200_000]),
    ] {
        ws.send(message.clone()).await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), message);
    }
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn wss_rejects_an_untrusted_certificate() {
    let (cert, key) = self_signed();
    let port = tls_echo_server(cert, key).await;
    // Default roots (webpki) do not trust a self-signed certificate.
    let result = fullduplex::connect(format!("wss://localhost:{port}/")).await;
    match result {
        Err(fullduplex::Error::Io(error)) => {
            assert!(
                error.to_string().to_lowercase().contains("certificate"),
                "{error}"
            )
        }
        other => panic!("expected a certificate error, got {:?}", other.map(|_| ())),
    }
}
