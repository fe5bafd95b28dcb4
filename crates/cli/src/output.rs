//! How `fdx connect` prints messages: plain (text as is, binary as hex or base64) or one JSON
//! object per event.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use base64::Engine as _;
use fullduplex::Message;
use serde::Serialize;

/// How binary payloads are printed in plain mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BinaryFormat {
    /// Lowercase hexadecimal, two digits per byte.
    Hex,
    /// Standard base64 with padding.
    Base64,
}

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Received from the peer.
    In,
    /// Sent by us.
    Out,
}

/// One line of `--json` output.
#[derive(Debug, Serialize)]
struct JsonEvent<'a> {
    time: String,
    dir: Direction,
    #[serde(rename = "type")]
    kind: &'static str,
    len: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// Set once a write to stdout failed because its reader went away (`fdx connect URL | head -1`).
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Whether stdout's reader has gone away; from then on, output is discarded.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

/// A line editor's printer: prints above the line being edited and redraws it.
pub type EditorPrinter = Arc<Mutex<Box<dyn rustyline::ExternalPrinter + Send>>>;

/// Where printed lines go.
#[derive(Clone, Default)]
pub enum Sink {
    /// Messages to stdout, notes to stderr.
    #[default]
    Stdio,
    /// Everything through the interactive line editor, which keeps the line being typed intact.
    Editor(EditorPrinter),
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Sink::Stdio => "Stdio",
            Sink::Editor(_) => "Editor",
        })
    }
}

impl Sink {
    /// Prints one line of output (stdout, or above the edited line).
    ///
    /// A closed stdout (broken pipe) is not an error: it is remembered ([`stdout_closed`]) and
    /// later output is dropped.
    pub fn line(&self, line: &str) -> Result<(), String> {
        match self {
            Sink::Stdio => {
                if stdout_closed() {
                    return Ok(());
                }
                let mut stdout = std::io::stdout().lock();
                match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
                    Ok(()) => Ok(()),
                    Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
                        STDOUT_CLOSED.store(true, Ordering::Relaxed);
                        Ok(())
                    }
                    Err(error) => Err(format!("cannot write to stdout: {error}")),
                }
            }
            Sink::Editor(printer) => editor_print(printer, line),
        }
    }

    /// Prints one diagnostic line (stderr, or above the edited line).
    pub fn note(&self, line: &str) {
        match self {
            Sink::Stdio => eprintln!("{line}"),
            // Diagnostics are best effort, like eprintln! which ignores a closed stderr.
            Sink::Editor(printer) => {
                let _ = editor_print(printer, line);
            }
        }
    }
}

/// Hands one line to the line editor's printer.
fn editor_print(printer: &EditorPrinter, line: &str) -> Result<(), String> {
    let mut printer = printer
        .lock()
        .map_err(|_| "the terminal printer failed earlier".to_owned())?;
    printer
        .print(format!("{line}\n"))
        .map_err(|e| format!("cannot write to the terminal: {e}"))
}

/// Prints events to stdout (or through the line editor), flushing after each one so that a
/// reader sees them at once.
#[derive(Debug, Clone)]
pub struct Printer {
    /// One JSON object per event (both directions, control frames included).
    pub json: bool,
    /// Plain mode's format for binary payloads.
    pub binary_format: BinaryFormat,
    /// Where the lines go.
    pub sink: Sink,
}

impl Printer {
    /// Prints a message. Plain mode prints only received text and binary messages; JSON mode
    /// prints everything.
    pub fn message(&self, dir: Direction, message: &Message) -> Result<(), String> {
        let line = if self.json {
            json_line(dir, message)
        } else {
            match (dir, message) {
                (Direction::In, Message::Text(text)) => text.as_str().to_owned(),
                (Direction::In, Message::Binary(data)) => match self.binary_format {
                    BinaryFormat::Hex => hex(data),
                    BinaryFormat::Base64 => base64::engine::general_purpose::STANDARD.encode(data),
                },
                _ => return Ok(()),
            }
        };
        self.sink.line(&line)
    }

    /// Prints a diagnostic note (`-v`).
    pub fn note(&self, line: &str) {
        self.sink.note(line);
    }
}

/// The JSON object for one message.
fn json_line(dir: Direction, message: &Message) -> String {
    let base64 = |data: &[u8]| Some(base64::engine::general_purpose::STANDARD.encode(data));
    let mut event = JsonEvent {
        time: rfc3339_now(),
        dir,
        kind: "text",
        len: message.len(),
        text: None,
        data_base64: None,
        code: None,
        reason: None,
    };
    match message {
        Message::Text(text) => event.text = Some(text.as_str()),
        Message::Binary(data) => {
            event.kind = "binary";
            event.data_base64 = base64(data);
        }
        Message::Ping(data) => {
            event.kind = "ping";
            event.data_base64 = base64(data);
        }
        Message::Pong(data) => {
            event.kind = "pong";
            event.data_base64 = base64(data);
        }
        Message::Close(frame) => {
            event.kind = "close";
            if let Some(frame) = frame {
                event.code = Some(frame.code.0);
                event.reason = Some(frame.reason.as_str());
            }
        }
    }
    // Serializing a struct of strings and numbers cannot fail.
    serde_json::to_string(&event).unwrap_or_default()
}

/// Lowercase hex.
pub fn hex(data: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(data.len() * 2);
    for &byte in data {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 15)] as char);
    }
    out
}

/// The current time as RFC 3339 in UTC with milliseconds: `2024-05-01T12:34:56.789Z`.
pub fn rfc3339_now() -> String {
    rfc3339(SystemTime::now())
}

/// `time` as RFC 3339 in UTC with milliseconds.
fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fullduplex::{CloseCode, CloseFrame};

    #[test]
    fn rfc3339_known_dates() {
        let at = |ms: u64| rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400_005), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn hex_digits() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }

    #[test]
    fn json_close_has_code_and_reason() {
        let close = Message::Close(Some(CloseFrame::new(CloseCode(4000), "bye")));
        let value: serde_json::Value =
            serde_json::from_str(&json_line(Direction::In, &close)).unwrap();
        assert_eq!(value["dir"], "in");
        assert_eq!(value["type"], "close");
        assert_eq!(value["code"], 4000);
        assert_eq!(value["reason"], "bye");
        assert_eq!(value["len"], 5);
    }

    #[test]
    fn json_binary_is_base64() {
        let value: serde_json::Value =
            serde_json::from_str(&json_line(Direction::Out, &Message::binary(vec![1, 2, 3])))
                .unwrap();
        assert_eq!(value["type"], "binary");
        assert_eq!(value["data_base64"], "AQID");
        assert!(value.get("text").is_none());
    }
}
