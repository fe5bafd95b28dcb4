//! The server API for backends: JSON over HTTP at `/api/...`, with `Authorization: Bearer
//! KEY` when `--api-key` is set. With Redis every call acts across all nodes.
//!
//! | route | body | answer |
//! |---|---|---|
//! | `POST /api/publish` | `{"topic":T,"data":ANY}` | `{"offset":N,"epoch":E}` |
//! | `POST /api/broadcast` | `{"topics":[T,...],"data":ANY}` | `{"results":[{"topic":T,"offset":N,"epoch":E} or {"topic":T,"error":M}]}` |
//! | `POST /api/history` | `{"topic":T,"since":N,"limit":N}` | `{"topic":T,"epoch":E,"offset":N,"messages":[{"offset":N,"data":ANY}]}` |
//! | `POST /api/presence` | `{"topic":T}` | `{"topic":T,"clients":[...]}` |
//! | `POST /api/disconnect` | `{"user":U}` or `{"client":ID}`, `"code"`, `"reason"` | `{"nodes":N}` |
//! | `POST /api/unsubscribe` | `{"user":U,"topic":T}` | `{"nodes":N}` |
//! | `GET` or `POST /api/info` | | `{"node":ID,"nodes":[{"node","connections","subscriptions","topics"}]}` |

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::conn::CLOSE_DISCONNECTED;
use crate::engine::{BrokerError, ControlCommand};
use crate::topic::Topic;
use crate::Hub;

/// An answer of the API: status and JSON body.
pub type ApiAnswer = (StatusCode, String);

fn error(status: StatusCode, message: &str) -> ApiAnswer {
    (status, json!({ "error": message }).to_string())
}

fn ok(body: serde_json::Value) -> ApiAnswer {
    (StatusCode::OK, body.to_string())
}

fn broker_error(error: &BrokerError) -> ApiAnswer {
    error_status(StatusCode::SERVICE_UNAVAILABLE, error)
}

fn error_status(status: StatusCode, error: &impl std::fmt::Display) -> ApiAnswer {
    self::error(status, &error.to_string())
}

fn check_data(data: &RawValue) -> Result<(), ApiAnswer> {
    crate::wire::check_data(data).map_err(|reason| error(StatusCode::BAD_REQUEST, &reason))
}

fn topic(name: &str) -> Result<Topic, ApiAnswer> {
    Topic::new(name).map_err(|e| error(StatusCode::BAD_REQUEST, &format!("invalid topic: {e}")))
}

fn body<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiAnswer> {
    serde_json::from_slice(bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("bad request body: {e}")))
}

#[derive(Deserialize)]
struct PublishBody<'a> {
    topic: &'a str,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct BroadcastBody<'a> {
    topics: Vec<&'a str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct HistoryBody<'a> {
    topic: &'a str,
    #[serde(default)]
    since: u64,
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Deserialize)]
struct TopicBody<'a> {
    topic: &'a str,
}

#[derive(Deserialize)]
struct DisconnectBody {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    client: Option<String>,
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct UnsubscribeBody {
    user: String,
    topic: String,
}

/// The `message` object of a stored frame: its offset and data.
#[derive(Deserialize)]
struct Stored<'a> {
    offset: u64,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// The payload of an unmasked server frame.
fn payload(frame: &[u8]) -> &[u8] {
    let start = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    };
    frame.get(start..).unwrap_or_default()
}

/// Whether `code` may be sent in a close frame by the server API: 1000, 1001, or 3000-4999.
fn sendable_close_code(code: u16) -> bool {
    matches!(code, 1000 | 1001 | 3000..=4999)
}

/// Answers `method path` with `body` (the request's body, already read and bounded).
///
/// # Cancel safety
///
/// Cancelling abandons the request; a publish may have been stored already.
pub async fn handle(hub: &Arc<Hub>, method: &Method, path: &str, body_bytes: &Bytes) -> ApiAnswer {
    match (method, path) {
        (&Method::GET | &Method::POST, "/api/info") => match hub.nodes().await {
            Ok(nodes) => ok(json!({ "node": hub.registry().node(), "nodes": nodes })),
            Err(e) => broker_error(&e),
        },
        (&Method::POST, _) => post(hub, path, body_bytes)
            .await
            .unwrap_or_else(|answer| answer),
        (_, "/api/publish" | "/api/broadcast" | "/api/history" | "/api/presence")
        | (_, "/api/disconnect" | "/api/unsubscribe") => {
            error(StatusCode::METHOD_NOT_ALLOWED, "use POST")
        }
        _ => error(StatusCode::NOT_FOUND, "no such API route"),
    }
}

async fn post(hub: &Arc<Hub>, path: &str, bytes: &Bytes) -> Result<ApiAnswer, ApiAnswer> {
    Ok(match path {
        "/api/publish" => {
            let request: PublishBody<'_> = body(bytes)?;
            let topic = topic(request.topic)?;
            check_data(request.data)?;
            if hub.is_reserved(topic.as_str()) {
                return Err(error(
                    StatusCode::FORBIDDEN,
                    "this topic is written by the server only",
                ));
            }
            match hub.publish(&topic, request.data.get()).await {
                Ok(published) => {
                    ok(json!({"offset": published.offset, "epoch": &*published.epoch}))
                }
                Err(e) => broker_error(&e),
            }
        }
        "/api/broadcast" => {
            let request: BroadcastBody<'_> = body(bytes)?;
            check_data(request.data)?;
            let mut results = Vec::with_capacity(request.topics.len());
            for name in &request.topics {
                let result = match Topic::new(name) {
                    Err(e) => json!({"topic": name, "error": format!("invalid topic: {e}")}),
                    Ok(topic) if hub.is_reserved(topic.as_str()) => {
                        json!({"topic": name, "error": "this topic is written by the server only"})
                    }
                    Ok(topic) => match hub.publish(&topic, request.data.get()).await {
                        Ok(p) => json!({"topic": name, "offset": p.offset, "epoch": &*p.epoch}),
                        Err(e) => json!({"topic": name, "error": e.to_string()}),
                    },
                };
                results.push(result);
            }
            ok(json!({ "results": results }))
        }
        "/api/history" => {
            let request: HistoryBody<'_> = body(bytes)?;
            let topic = topic(request.topic)?;
            let snapshot = hub
                .history(&topic, request.since)
                .await
                .map_err(|e| broker_error(&e))?;
            let mut messages = Vec::new();
            for stored in snapshot
                .messages
                .iter()
                .take(request.limit.unwrap_or(usize::MAX))
            {
                let parsed: Stored<'_> = serde_json::from_slice(payload(&stored.frame))
                    .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))?;
                messages.push(format!(
                    r#"{{"offset":{},"data":{}}}"#,
                    parsed.offset,
                    parsed.data.get()
                ));
            }
            (
                StatusCode::OK,
                format!(
                    r#"{{"topic":"{topic}","epoch":{},"offset":{},"messages":[{}]}}"#,
                    json!(&*snapshot.epoch),
                    snapshot.latest,
                    messages.join(",")
                ),
            )
        }
        "/api/presence" => {
            let request: TopicBody<'_> = body(bytes)?;
            let topic = topic(request.topic)?;
            let clients = hub.presence(&topic).await.map_err(|e| broker_error(&e))?;
            (
                StatusCode::OK,
                format!(
                    r#"{{"topic":"{topic}","clients":{}}}"#,
                    crate::wire::clients_json(&clients)
                ),
            )
        }
        "/api/disconnect" => {
            let request: DisconnectBody = body(bytes)?;
            if request.user.is_none() && request.client.is_none() {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "give \"user\" or \"client\"",
                ));
            }
            let code = request.code.unwrap_or(CLOSE_DISCONNECTED);
            if !sendable_close_code(code) {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "\"code\" must be 1000, 1001 or 3000-4999",
                ));
            }
            let reason = request
                .reason
                .unwrap_or_else(|| "disconnected by the server".to_owned());
            if reason.len() > 123 {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "\"reason\" is longer than 123 bytes",
                ));
            }
            let command = ControlCommand::Disconnect {
                user: request.user,
                client: request.client,
                code,
                reason,
            };
            match hub.control(&command).await {
                Ok(nodes) => ok(json!({ "nodes": nodes })),
                Err(e) => broker_error(&e),
            }
        }
        "/api/unsubscribe" => {
            let request: UnsubscribeBody = body(bytes)?;
            topic(&request.topic)?;
            let command = ControlCommand::Unsubscribe {
                user: request.user,
                topic: request.topic,
            };
            match hub.control(&command).await {
                Ok(nodes) => ok(json!({ "nodes": nodes })),
                Err(e) => broker_error(&e),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "no such API route"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_of_frames() {
        let topic = Topic::new("t").unwrap_or_else(|e| panic!("{e}"));
        for size in [10, 200, 70_000] {
            let data = format!("\"{}\"", "x".repeat(size));
            let frame = crate::wire::message_frame(&topic, 3, &data);
            let stored: Stored<'_> =
                serde_json::from_slice(payload(&frame)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!((stored.offset, stored.data.get()), (3, data.as_str()));
        }
    }

    #[test]
    fn close_codes() {
        assert!(sendable_close_code(1000) && sendable_close_code(4002));
        assert!(
            !sendable_close_code(1005) && !sendable_close_code(1006) && !sendable_close_code(5000)
        );
    }
}
