//! Mistakes of the application are `Error::Usage`, one precise `UsageError` each, apart from
//! transport, protocol and handshake errors.

mod common;

use bytes::Bytes;
use common::duplex_pair;
use fullduplex::proto::SendError;
use fullduplex::{ClientRequest, Config, Error, Message, UsageError, WebSocketSet};

#[test]
fn a_url_that_does_not_parse_is_invalid_url() {
    let error = ClientRequest::new("ws://exa mple.com/")
        .build()
        .unwrap_err();
    assert!(
        matches!(error, Error::Usage(UsageError::InvalidUrl(ref url)) if url.contains("exa mple")),
        "{error:?}"
    );
}

#[test]
fn a_bad_header_name_or_value_is_invalid_header() {
    let error = ClientRequest::new("ws://localhost/")
        .header("bad name", "value")
        .build()
        .unwrap_err();
    assert!(
        matches!(error, Error::Usage(UsageError::InvalidHeader { ref name, .. }) if name == "bad name"),
        "{error:?}"
    );
    let error = ClientRequest::new("ws://localhost/")
        .header("x-fine", "line\nbreak")
        .build()
        .unwrap_err();
    assert!(
        matches!(error, Error::Usage(UsageError::InvalidHeader { ref name, .. }) if name == "x-fine"),
        "{error:?}"
    );
}

#[test]
fn a_bad_subprotocol_is_invalid_subprotocol() {
    let error = ClientRequest::new("ws://localhost/")
        .protocol("chat\nv2")
        .build()
        .unwrap_err();
    assert!(
        matches!(error, Error::Usage(UsageError::InvalidSubprotocol(_))),
        "{error:?}"
    );
}

/// Built without the `rustls` feature: `cargo test -p fullduplex --no-default-features --test
/// usage`.
#[cfg(not(feature = "rustls"))]
#[tokio::test]
async fn wss_without_the_rustls_feature_is_tls_feature_missing() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _accepting = tokio::spawn(async move { listener.accept().await });
    let error = fullduplex::connect(format!("wss://{addr}/"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Usage(UsageError::TlsFeatureMissing)),
        "{error:?}"
    );
}

#[tokio::test]
async fn sending_after_the_close_is_closed() {
    let (mut client, mut server) = duplex_pair(1 << 16, Config::default(), Config::default()).await;
    let closing = tokio::spawn(async move {
        while let Some(message) = server.recv().await {
            message.unwrap();
        }
    });
    client.close(None).await.unwrap();
    closing.await.unwrap();
    for error in [
        client.send(Message::text("late")).await.unwrap_err(),
        client
            .feed_fragment(fullduplex::DataKind::Binary, Bytes::new(), true)
            .await
            .unwrap_err(),
    ] {
        assert!(
            matches!(error, Error::Usage(UsageError::Closed)),
            "{error:?}"
        );
    }
}

#[tokio::test]
async fn a_close_frame_queued_before_data_is_closed_too() {
    // The core refuses data after our close frame (`SendError::Closed`): the same variant.
    let (mut client, _server) = duplex_pair(1 << 16, Config::default(), Config::default()).await;
    client.feed(Message::Close(None)).await.unwrap();
    let error = client.feed(Message::text("late")).await.unwrap_err();
    assert!(
        matches!(error, Error::Usage(UsageError::Closed)),
        "{error:?}"
    );
}

#[tokio::test]
async fn what_the_protocol_forbids_is_send() {
    let (mut client, _server) = duplex_pair(1 << 16, Config::default(), Config::default()).await;
    let error = client
        .send(Message::Ping(Bytes::from(vec![0u8; 126])))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Usage(UsageError::Send(SendError::ControlFrameTooLarge))
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_key_that_left_the_set_is_unknown_key() {
    let (_client, server) = duplex_pair(1 << 16, Config::default(), Config::default()).await;
    let mut set = WebSocketSet::new();
    let key = set.insert(server);
    set.remove(key);
    let error = set.feed(key, Message::text("lost")).unwrap_err();
    assert!(
        matches!(error, Error::Usage(UsageError::UnknownKey)),
        "{error:?}"
    );
}

/// The future of a hyper upgrade, polled again after it resolved, is
/// `PolledAfterCompletion`.
#[cfg(feature = "hyper")]
#[tokio::test]
async fn polling_a_finished_upgrade_again_is_polled_after_completion() {
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    use http_body_util::Full;
    use hyper_util::rt::TokioIo;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (report, reported) = tokio::sync::oneshot::channel();
    let report = Arc::new(Mutex::new(Some(report)));
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let service = hyper::service::service_fn(move |mut request: http::Request<_>| {
            let report = Arc::clone(&report);
            async move {
                let (response, mut upgrade) =
                    fullduplex::hyper::upgrade::<_, Full<Bytes>>(&mut request).unwrap();
                tokio::spawn(async move {
                    let first = (&mut upgrade).await;
                    let second = (&mut upgrade).await;
                    if let Some(report) = report.lock().unwrap().take() {
                        let _ = report.send((first.is_ok(), second.err()));
                    }
                });
                Ok::<_, Infallible>(response)
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades()
            .await;
    });
    let request = ClientRequest::new(format!("ws://{addr}/")).build().unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (_ws, _) = fullduplex::client_handshake(tcp, request, Config::default())
        .await
        .unwrap();
    let (first_ok, second) = reported.await.unwrap();
    assert!(first_ok);
    assert!(
        matches!(
            second,
            Some(Error::Usage(UsageError::PolledAfterCompletion))
        ),
        "{second:?}"
    );
}
