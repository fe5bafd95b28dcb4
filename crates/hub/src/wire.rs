//! The JSON messages of the hub protocol (see PROTOCOL.md): parsing what clients send,
//! encoding what the server sends. Server messages are encoded straight into WebSocket frames
//! (unmasked, uncompressed), ready for [`fullduplex::WebSocket::feed_encoded`].

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
    /// `{"type":"refresh","token":TOKEN}`: a new token before the current one expires.
    Refresh {
        /// The new token.
        token: std::borrow::Cow<'a, str>,
    },
    /// `{"type":"info"}`: who the server takes this connection for, and its transport.
    Info,
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
    #[serde(borrow, default)]
    token: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

/// Only the `id` of a request, read when the rest does not parse.
#[derive(Deserialize)]
struct IdOnly<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

/// The longest request `id`, in bytes of JSON.
pub const MAX_ID_LEN: usize = 128;

/// A request's `id` as JSON text, checked: a number or a string of at most [`MAX_ID_LEN`]
/// bytes.
fn checked_id(id: Option<&RawValue>) -> Result<Option<&str>, RequestError> {
    let Some(id) = id else {
        return Ok(None);
    };
    let text = id.get();
    let number_or_string = text.starts_with('"')
        || text.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
    if !number_or_string || text.len() > MAX_ID_LEN {
        return Err(RequestError::BadRequest(format!(
            "\"id\" must be a number or a string of at most {MAX_ID_LEN} bytes"
        )));
    }
    Ok(Some(text))
}

/// A parsed request and its `id` (JSON text), which every answer to it carries.
#[derive(Debug)]
pub struct Request<'a> {
    /// The request's `id`, as JSON (a number or a string), when it had a valid one.
    pub id: Option<&'a str>,
    /// The request, or why it was refused.
    pub request: Result<ClientRequest<'a>, RequestError>,
}

/// Parses one text message from a client, with its `id`: also a refused request's `id` is
/// known whenever the message is a JSON object with a valid one.
///
/// ```
/// use fullduplex_hub::wire::parse;
/// let parsed = parse(r#"{"type":"publish","topic":"chat","id":7}"#);
/// assert_eq!(parsed.id, Some("7"));
/// assert_eq!(parsed.request.unwrap_err().code(), "bad_request");
/// ```
pub fn parse(text: &str) -> Request<'_> {
    match parse_request(text) {
        Ok((id, request)) => Request {
            id,
            request: Ok(request),
        },
        Err(error) => {
            let id = serde_json::from_str::<IdOnly<'_>>(text)
                .ok()
                .filter(|_| text.trim_start().starts_with('{'))
                .and_then(|only| checked_id(only.id).ok().flatten());
            Request {
                id,
                request: Err(error),
            }
        }
    }
}

/// `data` present (even `null`) is `Some`; only a missing field is `None`.
fn present<'de, D>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error>
where
    D: Deserializer<'de>,
{
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// Parses one text message from a client: its `id` (JSON text) and the request.
///
/// ```
/// use fullduplex_hub::wire::{parse_request, ClientRequest, RequestError};
/// let request = parse_request(r#"{"type":"subscribe","topic":"chat","since":4}"#);
/// assert!(matches!(request, Ok((None, ClientRequest::Subscribe { since: Some(4), .. }))));
/// assert_eq!(parse_request("{").unwrap_err().code(), "bad_json");
/// assert_eq!(parse_request("[]").unwrap_err().code(), "bad_json");
/// assert_eq!(parse_request(r#"{"type":"dance"}"#).unwrap_err().code(), "unknown_type");
/// ```
pub fn parse_request(text: &str) -> Result<(Option<&str>, ClientRequest<'_>), RequestError> {
    if !text.trim_start().starts_with('{') {
        // serde would take an array for a struct's fields in order.
        return Err(RequestError::BadJson("expected a JSON object".into()));
    }
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
    let id = checked_id(envelope.id)?;
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
    let request = match &*kind {
        "subscribe" => ClientRequest::Subscribe {
            topic: topic()?,
            since: envelope.since,
            epoch: envelope.epoch,
            presence: envelope.presence.unwrap_or(false),
        },
        "unsubscribe" => ClientRequest::Unsubscribe { topic: topic()? },
        "presence" => ClientRequest::Presence { topic: topic()? },
        "info" => ClientRequest::Info,
        "publish" => {
            let topic = topic()?;
            let data = envelope
                .data
                .ok_or_else(|| RequestError::BadRequest("missing field \"data\"".into()))?;
            check_data(data).map_err(RequestError::BadRequest)?;
            ClientRequest::Publish { topic, data }
        }
        "refresh" => {
            let token = envelope
                .token
                .ok_or_else(|| RequestError::BadRequest("missing field \"token\"".into()))?;
            ClientRequest::Refresh { token }
        }
        other => return Err(RequestError::UnknownType(other.to_owned())),
    };
    Ok((id, request))
}

/// The deepest nesting of arrays and objects that published data may have: deeper data
/// breaks common JSON parsers of the subscribers (many stop at 100 to 512 levels, some
/// overflow their stack).
pub const MAX_DATA_DEPTH: usize = 64;

/// How deeply arrays and objects nest in `json` (valid JSON: strings are skipped).
pub fn nesting_depth(json: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for byte in json.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Checks that published `data` nests at most [`MAX_DATA_DEPTH`] levels.
pub fn check_data(data: &RawValue) -> Result<(), String> {
    if nesting_depth(data.get()) > MAX_DATA_DEPTH {
        return Err(format!(
            "data nests arrays and objects deeper than {MAX_DATA_DEPTH} levels"
        ));
    }
    Ok(())
}

/// Checks that `body` is one JSON value (nested at most [`MAX_DATA_DEPTH`] levels) and
/// returns it without surrounding whitespace.
pub fn parse_json_value(body: &[u8]) -> Result<&RawValue, String> {
    let value = serde_json::from_slice::<&RawValue>(body).map_err(|error| error.to_string())?;
    check_data(value)?;
    Ok(value)
}

fn frame(json: String) -> Bytes {
    encode_server_message(&Message::text(json))
}

/// The frame of an answer: `json` (an object) with `"id":ID` added when the request had one.
fn answer(mut json: String, id: Option<&str>) -> Bytes {
    if let Some(id) = id {
        json.pop();
        json.push_str(r#","id":"#);
        json.push_str(id);
        json.push('}');
    }
    frame(json)
}

/// The frame of `{"type":"published","topic":T,"offset":N,"epoch":E,"id":ID}`: the answer to
/// a publish that carried an `id`.
pub fn published_frame(topic: &Topic, offset: u64, epoch: &str, id: &str) -> Bytes {
    answer(
        format!(
            r#"{{"type":"published","topic":"{topic}","offset":{offset},"epoch":{}}}"#,
            json_string(epoch)
        ),
        Some(id),
    )
}

/// The frame of `{"type":"refresh"}`: the client's token expires soon.
pub fn refresh_frame(expires: u64) -> Bytes {
    frame(format!(r#"{{"type":"refresh","expires":{expires}}}"#))
}

/// The frame of `{"type":"refreshed","expires":N}` (`null`: the token does not expire).
pub fn refreshed_frame(expires: Option<u64>, id: Option<&str>) -> Bytes {
    let expires = expires.map_or_else(|| "null".to_owned(), |e| e.to_string());
    answer(format!(r#"{{"type":"refreshed","expires":{expires}}}"#), id)
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
pub fn subscribed_frame(
    topic: &Topic,
    offset: u64,
    epoch: &str,
    recovered: bool,
    id: Option<&str>,
) -> Bytes {
    answer(
        format!(
            r#"{{"type":"subscribed","topic":"{topic}","offset":{offset},"epoch":{},"recovered":{recovered}}}"#,
            json_string(epoch)
        ),
        id,
    )
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
pub fn presence_frame(topic: &Topic, clients: &[ClientInfo], id: Option<&str>) -> Bytes {
    answer(
        format!(
            r#"{{"type":"presence","topic":"{topic}","clients":{}}}"#,
            clients_json(clients)
        ),
        id,
    )
}

/// The frame of `{"type":"info","client":C,"user":U,"transport":T}`: the answer to `info`.
pub fn info_frame(client: &ClientInfo, transport: &str, id: Option<&str>) -> Bytes {
    let mut json = client.to_json();
    json.pop();
    json.insert_str(1, r#""type":"info","#);
    json.push_str(&format!(r#","transport":"{transport}"}}"#));
    answer(json, id)
}

/// The frame of `{"type":"unsubscribed","topic":T}`.
pub fn unsubscribed_frame(topic: &Topic, id: Option<&str>) -> Bytes {
    answer(
        format!(r#"{{"type":"unsubscribed","topic":"{topic}"}}"#),
        id,
    )
}

/// The frame of `{"type":"error","code":C,"message":M}`, with `"topic"` when the error
/// concerns one.
pub fn error_frame(code: &str, message: &str, topic: Option<&str>, id: Option<&str>) -> Bytes {
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
    answer(json, id)
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
        let parse_request = |text| parse_request(text).map(|(_, request)| request);
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
        let refresh = parse_request(r#"{"type":"refresh","token":"t.o.k"}"#);
        assert!(matches!(refresh, Ok(ClientRequest::Refresh { token }) if token == "t.o.k"));
        assert!(matches!(
            parse_request(r#"{"type":"info"}"#),
            Ok(ClientRequest::Info)
        ));
    }

    #[test]
    fn info_answer() {
        let client = ClientInfo {
            client: "n1-7".into(),
            user: Some("ann".into()),
        };
        let json = decode(info_frame(&client, "h2", Some("3")));
        assert_eq!(
            json,
            serde_json::json!({"type":"info","client":"n1-7","user":"ann","transport":"h2","id":3})
        );
    }

    #[test]
    fn deeply_nested_data_is_refused() {
        assert_eq!(nesting_depth(r#"{"a":[1,{"b":"[[[{{"}]}"#), 3);
        assert_eq!(nesting_depth(r#""\"[""#), 0);
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let publish = |data: &str| format!(r#"{{"type":"publish","topic":"t","data":{data}}}"#);
        assert!(parse_request(&publish(&deep(MAX_DATA_DEPTH))).is_ok());
        let too_deep = publish(&deep(MAX_DATA_DEPTH + 1));
        let refused = parse_request(&too_deep).map(|_| ());
        assert_eq!(refused.unwrap_err().code(), "bad_request");
        assert!(parse_json_value(deep(30_000).as_bytes()).is_err());
        assert!(parse_json_value(deep(MAX_DATA_DEPTH).as_bytes()).is_ok());
    }

    #[test]
    fn ids_are_kept_and_checked() {
        assert_eq!(
            parse(r#"{"type":"unsubscribe","topic":"a","id":7}"#).id,
            Some("7")
        );
        assert_eq!(
            parse(r#"{"type":"unsubscribe","topic":"a","id":"x-1"}"#).id,
            Some(r#""x-1""#)
        );
        assert_eq!(parse(r#"{"type":"unsubscribe","topic":"a"}"#).id, None);
        // A refused request still has its id, unless the id itself is what is wrong.
        let refused = parse(r#"{"type":"subscribe","topic":"a b","id":3}"#);
        assert_eq!(
            (refused.id, refused.request.map(|_| ()).unwrap_err().code()),
            (Some("3"), "invalid_topic")
        );
        let refused = parse(r#"{"type":"subscribe","topic":"a","since":-1,"id":4}"#);
        assert_eq!(refused.id, Some("4"));
        for bad in [
            r#"{"id":[1]}"#,
            r#"{"id":{"a":1}}"#,
            r#"{"id":null}"#,
            r#"{"id":true}"#,
        ] {
            let text = bad.replace('}', r#","type":"unsubscribe","topic":"a"}"#);
            let parsed = parse(&text);
            if bad == r#"{"id":null}"# {
                // null is no id at all.
                assert!(parsed.request.is_ok(), "{bad}");
                continue;
            }
            assert_eq!(parsed.id, None, "{bad}");
            assert_eq!(
                parsed.request.map(|_| ()).unwrap_err().code(),
                "bad_request",
                "{bad}"
            );
        }
        let long = format!(
            r#"{{"type":"unsubscribe","topic":"a","id":"{}"}}"#,
            "x".repeat(200)
        );
        assert_eq!(
            parse(&long).request.map(|_| ()).unwrap_err().code(),
            "bad_request"
        );
        assert_eq!(
            parse(r#"["subscribe","arr"]"#)
                .request
                .map(|_| ())
                .unwrap_err()
                .code(),
            "bad_json"
        );
        assert_eq!(
            parse("[]").request.map(|_| ()).unwrap_err().code(),
            "bad_json"
        );
        // Answers carry the id.
        let topic = Topic::new("t").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            decode(published_frame(&topic, 5, "e", r#""p-1""#)),
            serde_json::json!({"type":"published","topic":"t","offset":5,"epoch":"e","id":"p-1"})
        );
        assert_eq!(
            decode(error_frame("forbidden", "no", None, Some("9"))),
            serde_json::json!({"type":"error","code":"forbidden","message":"no","id":9})
        );
        assert_eq!(
            decode(refreshed_frame(Some(100), Some("2"))),
            serde_json::json!({"type":"refreshed","expires":100,"id":2})
        );
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
            decode(subscribed_frame(&topic, 3, "e", true, None)),
            serde_json::json!({"type":"subscribed","topic":"news","offset":3,"epoch":"e","recovered":true})
        );
        assert_eq!(
            decode(error_frame("forbidden", "no \"way\"", Some("news"), None)),
            serde_json::json!({"type":"error","code":"forbidden","message":"no \"way\"","topic":"news"})
        );
        assert_eq!(
            decode(unsubscribed_frame(&topic, Some("1"))),
            serde_json::json!({"type":"unsubscribed","topic":"news","id":1})
        );
    }
}
