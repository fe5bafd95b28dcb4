//! The JSON messages of the hub protocol (see PROTOCOL.md): parsing what clients send,
//! encoding what the server sends. Server messages are encoded straight into WebSocket frames
//! (unmasked, uncompressed), ready for [`fullduplex::WebSocket::send_encoded`].

use bytes::Bytes;
use fullduplex::proto::connection::encode_server_message;
use fullduplex::Message;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::engine::ClientInfo;
use crate::topic::{Topic, TopicError};

/// A request from a client, parsed and checked.
#[derive(Debug)]
pub enum ClientRequest<'a> {
    /// `{"type":"subscribe","topic":T}`, with `since` and `epoch` to recover.
    Subscribe {
        /// The topic.
        topic: Topic,
        /// The last offset the client saw.
        since: Option<u64>,
        /// The epoch of `since`.
        epoch: Option<&'a str>,
        /// `"presence":true`: enter the topic's presence and receive `join` and `leave`.
        presence: bool,
    },
    /// `{"type":"unsubscribe","topic":T}`.
    Unsubscribe {
        /// The topic.
        topic: Topic,
    },
    /// `{"type":"presence","topic":T}`: who is in the topic's presence.
    Presence {
        /// The topic.
        topic: Topic,
    },
    /// `{"type":"publish","topic":T,"data":ANY}`.
    Publish {
        /// The topic.
        topic: Topic,
        /// The JSON value to deliver, as the client wrote it.
        data: &'a RawValue,
    },
}

/// Why a client message was refused: the `code` and `message` of the error reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not JSON, or not a JSON object.
    #[error("bad JSON: {0}")]
    BadJson(String),
    /// A JSON object without a usable `type`, `topic` or `data`, or a field of the wrong type.
    #[error("{0}")]
    BadRequest(String),
    /// `type` is not one the server knows.
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// The topic name is invalid.
    #[error("invalid topic: {0}")]
    InvalidTopic(#[from] TopicError),
}

impl RequestError {
    /// The `code` field of the error reply.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::BadJson(_) => "bad_json",
            RequestError::BadRequest(_) => "bad_request",
            RequestError::UnknownType(_) => "unknown_type",
            RequestError::InvalidTopic(_) => "invalid_topic",
        }
    }
}

/// Every field any request may carry; which ones are required depends on `type`. Unknown
/// fields are ignored.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    topic: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    since: Option<u64>,
    #[serde(borrow, default)]
    epoch: Option<&'a str>,
    #[serde(default)]
    presence: Option<bool>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
}

/// `data` present (even `null`) is `Some`; only a missing field is `None`.
fn present<'de, D>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error>
where
    D: Deserializer<'de>,
{
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// Parses one text message from a client.
///
/// ```
/// use fullduplex_hub::wire::{parse_request, ClientRequest, RequestError};
/// let request = parse_request(r#"{"type":"subscribe","topic":"chat","since":4}"#);
/// assert!(matches!(request, Ok(ClientRequest::Subscribe { since: Some(4), .. })));
/// assert_eq!(parse_request("{").unwrap_err().code(), "bad_json");
/// assert_eq!(parse_request(r#"{"type":"dance"}"#).unwrap_err().code(), "unknown_type");
/// ```
pub fn parse_request(text: &str) -> Result<ClientRequest<'_>, RequestError> {
    let envelope: Envelope<'_> = serde_json::from_str(text).map_err(|error| {
        use serde_json::error::Category;
        match error.classify() {
            Category::Data if text.trim_start().starts_with('{') => {
                RequestError::BadRequest(error.to_string())
            }
            Category::Data => RequestError::BadJson("expected a JSON object".into()),
            _ => RequestError::BadJson(error.to_string()),
        }
    })?;
    let kind = envelope
        .kind
        .ok_or_else(|| RequestError::BadRequest("missing field \"type\"".into()))?;
    let topic = || -> Result<Topic, RequestError> {
        let name = envelope
            .topic
            .as_deref()
            .ok_or_else(|| RequestError::BadRequest("missing field \"topic\"".into()))?;
        Ok(Topic::new(name)?)
    };
    match &*kind {
        "subscribe" => Ok(ClientRequest::Subscribe {
            topic: topic()?,
            since: envelope.since,
            epoch: envelope.epoch,
            presence: envelope.presence.unwrap_or(false),
        }),
        "unsubscribe" => Ok(ClientRequest::Unsubscribe { topic: topic()? }),
        "presence" => Ok(ClientRequest::Presence { topic: topic()? }),
        "publish" => {
            let topic = topic()?;
            let data = envelope
                .data
                .ok_or_else(|| RequestError::BadRequest("missing field \"data\"".into()))?;
            Ok(ClientRequest::Publish { topic, data })
        }
        other => Err(RequestError::UnknownType(other.to_owned())),
    }
}

/// Checks that `body` is one JSON value and returns it without surrounding whitespace.
pub fn parse_json_value(body: &[u8]) -> Result<&RawValue, String> {
    serde_json::from_slice::<&RawValue>(body).map_err(|error| error.to_string())
}

fn frame(json: String) -> Bytes {
    encode_server_message(&Message::text(json))
}

/// The frame of `{"type":"message","topic":T,"offset":N,"data":DATA}`: encoded once per
/// published message and queued to every subscriber.
pub fn message_frame(topic: &Topic, offset: u64, data: &str) -> Bytes {
    // Topic names need no escaping: their alphabet has no JSON special characters.
    let mut json = String::with_capacity(64 + topic.as_str().len() + data.len());
    json.push_str(r#"{"type":"message","topic":""#);
    json.push_str(topic.as_str());
    json.push_str(r#"","offset":"#);
    json.push_str(&offset.to_string());
    json.push_str(r#","data":"#);
    json.push_str(data);
    json.push('}');
    frame(json)
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// The frame of `{"type":"subscribed","topic":T,"offset":N,"epoch":E,"recovered":B}`.
pub fn subscribed_frame(topic: &Topic, offset: u64, epoch: &str, recovered: bool) -> Bytes {
    frame(format!(
        r#"{{"type":"subscribed","topic":"{topic}","offset":{offset},"epoch":{},"recovered":{recovered}}}"#,
        json_string(epoch)
    ))
}

/// Why a `gap` event was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapReason {
    /// The history no longer holds messages this node did not receive.
    History,
    /// The topic's numbering restarted (its engine lost its data).
    Epoch,
}

impl GapReason {
    /// The `reason` field.
    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::History => "history",
            GapReason::Epoch => "epoch",
        }
    }
}

/// The frame of `{"type":"gap","topic":T,"epoch":E,"offset":N,"reason":R}`: messages of
/// epoch `E` up to `N` that the subscriber did not receive are lost; its position is now
/// `(E, N)`.
pub fn gap_frame(topic: &Topic, epoch: &str, offset: u64, reason: GapReason) -> Bytes {
    frame(format!(
        r#"{{"type":"gap","topic":"{topic}","epoch":{},"offset":{offset},"reason":"{}"}}"#,
        json_string(epoch),
        reason.as_str()
    ))
}

/// The frame of `{"type":"join"|"leave","topic":T,"client":ID,"user":U}`.
pub fn presence_event_frame(topic: &Topic, client: &ClientInfo, join: bool) -> Bytes {
    let kind = if join { "join" } else { "leave" };
    frame(format!(
        r#"{{"type":"{kind}","topic":"{topic}","client":{},"user":{}}}"#,
        json_string(&client.client),
        client
            .user
            .as_deref()
            .map_or_else(|| "null".to_owned(), json_string)
    ))
}

/// `[{"client":ID,"user":U}, ...]`.
pub fn clients_json(clients: &[ClientInfo]) -> String {
    let list: Vec<String> = clients.iter().map(ClientInfo::to_json).collect();
    format!("[{}]", list.join(","))
}

/// The frame of `{"type":"presence","topic":T,"clients":[...]}`.
pub fn presence_frame(topic: &Topic, clients: &[ClientInfo]) -> Bytes {
    frame(format!(
        r#"{{"type":"presence","topic":"{topic}","clients":{}}}"#,
        clients_json(clients)
    ))
}

/// The frame of `{"type":"unsubscribed","topic":T}`.
pub fn unsubscribed_frame(topic: &Topic) -> Bytes {
    frame(format!(r#"{{"type":"unsubscribed","topic":"{topic}"}}"#))
}

/// The frame of `{"type":"error","code":C,"message":M}`, with `"topic"` when the error
/// concerns one.
pub fn error_frame(code: &str, message: &str, topic: Option<&str>) -> Bytes {
    let mut json = format!(
        r#"{{"type":"error","code":{},"message":{}"#,
        json_string(code),
        json_string(message)
    );
    if let Some(topic) = topic {
        json.push_str(r#","topic":"#);
        json.push_str(&json_string(topic));
    }
    json.push('}');
    frame(json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fullduplex::proto::{Config, Connection, Event, Role};

    fn decode(frame: Bytes) -> serde_json::Value {
        let mut client = Connection::new(Role::Client, Config::default());
        client.recv_buf().extend_from_slice(&frame);
        match client.next_event() {
            Ok(Some(Event::Message(Message::Text(text)))) => {
                serde_json::from_str(text.as_str()).unwrap_or_default()
            }
            other => panic!("not a text frame: {other:?}"),
        }
    }

    #[test]
    fn requests() {
        let sub = parse_request(r#"{"type":"subscribe","topic":"a","since":3,"epoch":"e1"}"#);
        assert!(matches!(
            sub,
            Ok(ClientRequest::Subscribe { ref topic, since: Some(3), epoch: Some("e1"), presence: false })
                if topic.as_str() == "a"
        ));
        let publish = parse_request(r#"{"type":"publish","topic":"a","data":{"x":[1, 2]}}"#);
        match publish {
            Ok(ClientRequest::Publish { data, .. }) => assert_eq!(data.get(), r#"{"x":[1, 2]}"#),
            other => panic!("{other:?}"),
        }
        let null = parse_request(r#"{"type":"publish","topic":"a","data":null}"#);
        assert!(matches!(null, Ok(ClientRequest::Publish { data, .. }) if data.get() == "null"));
        let extra = parse_request(r#"{"type":"unsubscribe","topic":"a","id":7}"#);
        assert!(matches!(extra, Ok(ClientRequest::Unsubscribe { .. })));
        let escaped = parse_request(r#"{"type":"unsub\u0073cribe","topic":"a"}"#);
        assert!(matches!(escaped, Ok(ClientRequest::Unsubscribe { .. })));
    }

    #[test]
    fn request_errors() {
        let code = |text: &str| parse_request(text).map(|_| ()).unwrap_err().code();
        assert_eq!(code("not json"), "bad_json");
        assert_eq!(code("[1,2]"), "bad_json");
        assert_eq!(code("\"subscribe\""), "bad_json");
        assert_eq!(code(r#"{"type":"subscribe","topic":"a""#), "bad_json");
        assert_eq!(code(r#"{"topic":"a"}"#), "bad_request");
        assert_eq!(code(r#"{"type":"subscribe"}"#), "bad_request");
        assert_eq!(code(r#"{"type":"subscribe","topic":7}"#), "bad_request");
        assert_eq!(
            code(r#"{"type":"subscribe","topic":"a","since":-1}"#),
            "bad_request"
        );
        assert_eq!(code(r#"{"type":"publish","topic":"a"}"#), "bad_request");
        assert_eq!(code(r#"{"type":"shout","topic":"a"}"#), "unknown_type");
        assert_eq!(
            code(r#"{"type":"subscribe","topic":"a b"}"#),
            "invalid_topic"
        );
        assert_eq!(code(r#"{"type":"subscribe","topic":""}"#), "invalid_topic");
    }

    #[test]
    fn server_messages() {
        let topic = Topic::new("news").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            decode(message_frame(&topic, 7, r#"{"a":"\"q\""}"#)),
            serde_json::json!({"type":"message","topic":"news","offset":7,"data":{"a":"\"q\""}})
        );
        assert_eq!(
            decode(subscribed_frame(&topic, 3, "e", true)),
            serde_json::json!({"type":"subscribed","topic":"news","offset":3,"epoch":"e","recovered":true})
        );
        assert_eq!(
            decode(error_frame("forbidden", "no \"way\"", Some("news"))),
            serde_json::json!({"type":"error","code":"forbidden","message":"no \"way\"","topic":"news"})
        );
        assert_eq!(
            decode(unsubscribed_frame(&topic)),
            serde_json::json!({"type":"unsubscribed","topic":"news"})
        );
    }
}
