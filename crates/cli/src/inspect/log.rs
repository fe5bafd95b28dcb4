//! The inspecting relay's log: human-readable lines on stderr and, with `--log FILE`, one JSON
//! object per line.
//!
//! JSON lines (every object has `time`, `conn` and `event`):
//!
//! ```text
//! {"time":"…","conn":1,"event":"open","client":"127.0.0.1:50000"}
//! {"time":"…","conn":1,"event":"handshake","upstream":"ws://…","request":{…},"upstream_request":{…},"response":{…},"deflate":"…"}
//! {"time":"…","conn":1,"event":"frame","direction":"client->server","opcode":"text","fin":true,
//!  "rsv1":true,"rsv2":false,"rsv3":false,"masked":true,"length":9,"compressed":true,
//!  "message":"text","payload_length":5,"truncated":false,"text":"hello"}
//! {"time":"…","conn":1,"event":"close","reason":"…","bytes_client_to_server":N,"bytes_server_to_client":N}
//! ```
//!
//! Binary payloads are `data_base64`; close frames add `code` and `reason`; a payload that could
//! not be inflated adds `error`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;

use base64::Engine as _;
use fullduplex::proto::frame::OpCode;
use http::{HeaderMap, Request, Response};
use serde_json::{json, Map, Value};

use super::tap::{Direction, FrameRecord};
use crate::output::rfc3339_now;

/// Where log lines go. Shared by every connection; each line is written whole.
pub struct Logger {
    human: bool,
    json: Option<Mutex<Box<dyn Write + Send>>>,
}

impl Logger {
    /// Human lines on stderr unless `quiet`; JSON lines to `path` (`-` is stdout) if given.
    pub fn new(quiet: bool, path: Option<&Path>) -> Result<Logger, String> {
        let json: Option<Box<dyn Write + Send>> = match path {
            None => None,
            Some(path) if path == Path::new("-") => Some(Box::new(std::io::stdout())),
            Some(path) => {
                let file = File::create(path)
                    .map_err(|e| format!("cannot create the log {}: {e}", path.display()))?;
                Some(Box::new(BufWriter::new(file)))
            }
        };
        Ok(Logger {
            human: !quiet,
            json: json.map(Mutex::new),
        })
    }

    /// A new connection from `client`.
    pub fn open(&self, conn: u64, client: SocketAddr) {
        self.human(conn, format_args!("connection from {client}"));
        self.json(conn, "open", json!({ "client": client.to_string() }));
    }

    /// The opening handshake: what the client sent, what went upstream, what came back.
    pub fn handshake(
        &self,
        conn: u64,
        upstream: &str,
        request: &Request<()>,
        upstream_request: &Request<()>,
        response: &Response<()>,
        deflate: Option<&str>,
    ) {
        if self.human {
            let mut text = format!(
                "> {} {} {:?}\n",
                request.method(),
                request.uri(),
                request.version()
            );
            push_headers(&mut text, "> ", request.headers());
            text.push_str(&format!(
                "upstream {upstream}: {} {}\n",
                upstream_request.method(),
                upstream_request.uri()
            ));
            text.push_str(&format!(
                "< {:?} {}\n",
                response.version(),
                response.status()
            ));
            push_headers(&mut text, "< ", response.headers());
            if let Some(deflate) = deflate {
                text.push_str(&format!("compression: {deflate}\n"));
            }
            let text = text.trim_end().replace('\n', &format!("\n#{conn} "));
            self.human(conn, format_args!("{text}"));
        }
        self.json(
            conn,
            "handshake",
            json!({
                "upstream": upstream,
                "request": request_json(request),
                "upstream_request": request_json(upstream_request),
                "response": {
                    "status": response.status().as_u16(),
                    "reason": response.status().canonical_reason(),
                    "headers": headers_json(response.headers()),
                },
                "deflate": deflate,
            }),
        );
    }

    /// One frame that passed.
    pub fn frame(&self, conn: u64, direction: Direction, record: &FrameRecord) {
        if self.human {
            self.human(conn, format_args!("{}", human_frame(direction, record)));
        }
        if self.json.is_some() {
            self.json(conn, "frame", frame_json(direction, record));
        }
    }

    /// Something worth saying that is not a frame: an error, a refusal, an injected close.
    pub fn note(&self, conn: u64, message: &str) {
        self.human(conn, format_args!("{message}"));
        self.json(conn, "note", json!({ "message": message }));
    }

    /// The connection is over.
    pub fn close(&self, conn: u64, reason: &str, client_to_server: u64, server_to_client: u64) {
        self.human(
            conn,
            format_args!(
                "closed: {reason} ({client_to_server} bytes client->server, \
                 {server_to_client} bytes server->client)"
            ),
        );
        self.json(
            conn,
            "close",
            json!({
                "reason": reason,
                "bytes_client_to_server": client_to_server,
                "bytes_server_to_client": server_to_client,
            }),
        );
    }

    fn human(&self, conn: u64, line: std::fmt::Arguments<'_>) {
        if self.human {
            let time = rfc3339_now();
            // `HH:MM:SS.mmm` is enough on a terminal.
            let clock = time.get(11..23).unwrap_or(&time);
            eprintln!("{clock} #{conn} {line}");
        }
    }

    fn json(&self, conn: u64, event: &str, fields: Value) {
        let Some(json) = &self.json else {
            return;
        };
        let mut object = Map::new();
        object.insert("time".into(), Value::String(rfc3339_now()));
        object.insert("conn".into(), Value::from(conn));
        object.insert("event".into(), Value::from(event));
        if let Value::Object(fields) = fields {
            object.extend(fields);
        }
        let mut line = Value::Object(object).to_string();
        line.push('\n');
        // A poisoned lock only means another thread panicked mid-line; keep logging.
        let mut out = json.lock().unwrap_or_else(|p| p.into_inner());
        // A full disk must not stop the traffic; the log is best effort.
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }
}

fn push_headers(text: &mut String, prefix: &str, headers: &HeaderMap) {
    for (name, value) in headers {
        text.push_str(&format!(
            "{prefix}{name}: {}\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
}

fn headers_json(headers: &HeaderMap) -> Value {
    headers
        .iter()
        .map(|(name, value)| {
            json!([
                name.as_str(),
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            ])
        })
        .collect()
}

fn request_json(request: &Request<()>) -> Value {
    json!({
        "method": request.method().as_str(),
        "target": request.uri().to_string(),
        "headers": headers_json(request.headers()),
    })
}

/// `text`, `binary`, `close`, ...
pub fn opcode_name(opcode: OpCode) -> &'static str {
    match opcode {
        OpCode::Continuation => "continuation",
        OpCode::Text => "text",
        OpCode::Binary => "binary",
        OpCode::Close => "close",
        OpCode::Ping => "ping",
        OpCode::Pong => "pong",
    }
}

fn frame_json(direction: Direction, record: &FrameRecord) -> Value {
    let header = &record.header;
    let mut fields = json!({
        "direction": direction.as_str(),
        "opcode": opcode_name(header.opcode),
        "fin": header.fin,
        "rsv1": header.rsv1,
        "rsv2": header.rsv2,
        "rsv3": header.rsv3,
        "masked": header.mask.is_some(),
        "length": header.payload_len,
        "compressed": record.compressed,
        "message": opcode_name(record.message_kind),
        "payload_length": record.payload_len,
        "truncated": record.truncated(),
    });
    if let Value::Object(map) = &mut fields {
        if let Some((code, reason)) = &record.close {
            map.insert("code".into(), Value::from(*code));
            map.insert("reason".into(), Value::from(reason.as_str()));
        } else if shows_as_text(record) {
            let text = String::from_utf8_lossy(&record.payload).into_owned();
            map.insert("text".into(), Value::from(text));
        } else {
            let data = base64::engine::general_purpose::STANDARD.encode(&record.payload);
            map.insert("data_base64".into(), Value::from(data));
        }
        if let Some(error) = &record.inflate_error {
            map.insert("error".into(), Value::from(error.as_str()));
        }
    }
    fields
}

/// Text messages (and their continuation frames) print as text; everything else as bytes.
fn shows_as_text(record: &FrameRecord) -> bool {
    record.message_kind == OpCode::Text && record.inflate_error.is_none()
}

fn human_frame(direction: Direction, record: &FrameRecord) -> String {
    let header = &record.header;
    let arrow = match direction {
        Direction::ClientToServer => "client->server",
        Direction::ServerToClient => "server->client",
    };
    let mut flags = String::new();
    if header.fin {
        flags.push_str(" fin");
    }
    for (set, name) in [
        (header.rsv1, " rsv1"),
        (header.rsv2, " rsv2"),
        (header.rsv3, " rsv3"),
    ] {
        if set {
            flags.push_str(name);
        }
    }
    let mut line = format!(
        "{arrow} {}{flags} {} B",
        opcode_name(header.opcode),
        header.payload_len
    );
    if record.compressed && record.inflate_error.is_none() {
        line.push_str(&format!(" (inflated {} B)", record.payload_len));
    }
    let ellipsis = if record.truncated() { "…" } else { "" };
    if let Some((code, reason)) = &record.close {
        line.push_str(&format!(": {code} {reason:?}"));
    } else if shows_as_text(record) {
        let text = String::from_utf8_lossy(&record.payload);
        line.push_str(&format!(": {text:?}{ellipsis}"));
    } else if !record.payload.is_empty() {
        let hex: String = record.payload.iter().map(|b| format!("{b:02x}")).collect();
        line.push_str(&format!(": {hex}{ellipsis}"));
    }
    if let Some(error) = &record.inflate_error {
        line.push_str(&format!(" [{error}]"));
    }
    line
}
