//! The harness's own wire code: the upgrade request, the server's response head, the server's
//! frames (kept whole, bounded: read with the kit's [`FrameAssembler`], on the core's frame
//! reader), the malformed frames the hostile classes send, and what a server answered
//! ([`Answer`]). Everything read here comes from a server under attack, so nothing in it
//! trusts the bytes: every parse returns an error instead of panicking.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use fullduplex_loadgen::frame::{self as kit_frame, AssembleError, FrameAssembler};
use fullduplex_proto::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::frames::client_frame;

/// Opcodes.
pub const TEXT: u8 = 1;
/// Binary.
pub const BINARY: u8 = 2;
/// Close.
pub const CLOSE: u8 = 8;
/// Ping.
pub const PING: u8 = 9;
/// Pong.
pub const PONG: u8 = 10;

/// The largest response head the harness reads (a server's 101 or error page head).
pub const MAX_RESPONSE_HEAD: usize = 16 << 10;
/// The largest server frame the harness keeps (hub messages and echoes are far smaller).
pub const MAX_SERVER_FRAME: u64 = 4 << 20;

/// The fixed `Sec-WebSocket-Key` of every upgrade (its accept value is not checked: the
/// harness tests the server, not the handshake).
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// An HTTP/1.1 upgrade request for `path` on `host`, offering `extensions` if given.
pub fn upgrade_request(host: &str, path: &str, extensions: Option<&str>) -> Vec<u8> {
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(extensions) = extensions {
        head.push_str(&format!("Sec-WebSocket-Extensions: {extensions}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why bytes from the server are not what the harness can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses a response head at the start of `buf`: `Ok(None)` while it is incomplete, else the
/// head and its length in bytes (what follows belongs to the WebSocket or the body).
pub fn parse_response_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, WireError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_RESPONSE_HEAD {
            return Err(WireError(format!(
                "response head longer than {MAX_RESPONSE_HEAD} bytes"
            )));
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end])
        .map_err(|_| WireError("response head is not UTF-8".into()))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(WireError(format!(
            "not an HTTP/1 status line: {status_line:?}"
        )));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..1000).contains(s))
        .ok_or_else(|| WireError(format!("bad status line: {status_line:?}")))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| WireError(format!("bad header line: {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    Ok(Some((ResponseHead { status, headers }, end + 4)))
}

/// One frame from the server, payload included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The opcode.
    pub opcode: u8,
    /// FIN.
    pub fin: bool,
    /// RSV1-3 as the top bits of the first byte (`0x70` mask).
    pub rsv: u8,
    /// The payload (unmasked if the server masked it, which it must not).
    pub payload: Vec<u8>,
}

impl Frame {
    /// The close code of a close frame: 1005 (none given) for an empty payload, 0 for a
    /// one-byte payload (invalid).
    pub fn close_code(&self) -> u16 {
        match self.payload.as_slice() {
            [] => 1005,
            [a, b, ..] => u16::from_be_bytes([*a, *b]),
            [_] => 0,
        }
    }
}

impl From<kit_frame::Frame<'_>> for Frame {
    fn from(frame: kit_frame::Frame<'_>) -> Frame {
        let header = frame.header;
        Frame {
            opcode: header.opcode.as_u8(),
            fin: header.fin,
            rsv: u8::from(header.rsv1) << 6
                | u8::from(header.rsv2) << 5
                | u8::from(header.rsv3) << 4,
            payload: frame.payload.to_vec(),
        }
    }
}

/// The server's frames, each whole and at most [`MAX_SERVER_FRAME`] bytes: bytes go in as
/// they are read ([`feed`](Self::feed)), frames come out in order
/// ([`next_frame`](Self::next_frame)), then the error that stopped the stream, if one did.
/// The frames are cut by the kit's [`FrameAssembler`] (the core's frame reader).
#[derive(Debug)]
pub struct ServerFrames {
    assembler: FrameAssembler,
    /// Frames read and not taken yet.
    ready: VecDeque<Frame>,
    /// Why the stream stopped, reported once `ready` is empty (and again at every call).
    error: Option<WireError>,
}

impl Default for ServerFrames {
    fn default() -> ServerFrames {
        ServerFrames {
            assembler: FrameAssembler::new(MAX_SERVER_FRAME),
            ready: VecDeque::new(),
            error: None,
        }
    }
}

impl ServerFrames {
    /// Adds bytes read (ignored once the stream has failed).
    pub fn feed(&mut self, mut data: &[u8]) {
        while self.error.is_none() {
            match self.assembler.next_frame(&mut data) {
                Ok(Some(frame)) => self.ready.push_back(Frame::from(frame)),
                Ok(None) => break,
                Err(AssembleError::TooLarge { len, .. }) => {
                    self.error = Some(WireError(format!("server frame of {len} bytes")));
                }
                Err(e) => self.error = Some(WireError(format!("server frame: {e}"))),
            }
        }
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    ///
    /// # Errors
    ///
    /// After the frames before it, the [`WireError`] of a frame that cannot be read (an
    /// invalid header, a frame over [`MAX_SERVER_FRAME`]); the stream is unusable after it.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        if let Some(frame) = self.ready.pop_front() {
            return Ok(Some(frame));
        }
        match &self.error {
            Some(error) => Err(error.clone()),
            None => Ok(None),
        }
    }
}

/// A frame sent without a mask (clients must mask: RFC 6455 section 5.1, close 1002).
pub fn unmasked_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    kit_frame::encode_frame(opcode, false, payload, None)
}

/// The header of a masked binary frame that announces 2^62 payload bytes, followed by a few
/// of them.
pub fn huge_length_frame() -> Vec<u8> {
    let mut header = FrameHeader::new(OpCode::Binary, 1 << 62);
    header.mask = Some([1, 2, 3, 4]);
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut head);
    let mut frame = head[..n].to_vec();
    frame.extend_from_slice(&[0u8; 64]);
    frame
}

/// A masked text frame whose payload is not UTF-8 (close 1007 expected).
pub fn invalid_utf8_frame() -> Vec<u8> {
    client_frame(TEXT, false, b"hello \xff\xfe world \xc0\xaf")
}

/// The masked pong answering a ping with `payload`.
pub fn pong_frame(payload: &[u8]) -> Vec<u8> {
    client_frame(PONG, false, payload)
}

/// A masked empty ping.
pub fn ping_frame() -> Vec<u8> {
    client_frame(PING, false, b"")
}

/// A masked close frame with `code`.
pub fn close_frame(code: u16) -> Vec<u8> {
    client_frame(CLOSE, false, &code.to_be_bytes())
}

/// How a server answered one hostile attempt (or one request).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Answer {
    /// An HTTP response with this status.
    Status(u16),
    /// A close frame with this code (1005: none given).
    Close(u16),
    /// The TCP connection ended (FIN) without a close frame or response.
    TcpClose,
    /// The TCP connection was reset (or a write failed because the server had closed).
    Reset,
    /// A hub `error` message with this code.
    Error(String),
    /// A hub reply that is not an error (`subscribed`).
    Reply(String),
    /// Nothing within the attempt's deadline (the seconds).
    NoAnswer(u64),
    /// Still open when the attack ended, before its deadline (not an answer).
    CutOff,
    /// The TCP connect did not complete in time (the listen backlog is full: the server is
    /// not accepting).
    NotAccepted,
    /// The harness could not run the attempt (connect failed, ...).
    Failed(String),
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Status(s) => write!(f, "HTTP {s}"),
            Answer::Close(c) => write!(f, "close {c}"),
            Answer::TcpClose => f.write_str("TCP close, no close frame"),
            Answer::Reset => f.write_str("TCP reset"),
            Answer::Error(code) => write!(f, "error `{code}`"),
            Answer::Reply(kind) => write!(f, "`{kind}`"),
            Answer::NoAnswer(secs) => write!(f, "no answer within {secs} s"),
            Answer::CutOff => f.write_str("open at the end of the attack"),
            Answer::NotAccepted => f.write_str("TCP connect timed out (not accepted)"),
            Answer::Failed(why) => write!(f, "harness failed: {why}"),
        }
    }
}

/// Maps a read or write error to an answer: resets and broken pipes mean the server closed.
pub fn io_answer(error: &std::io::Error) -> Answer {
    use std::io::ErrorKind::*;
    match error.kind() {
        ConnectionReset | ConnectionAborted | BrokenPipe => Answer::Reset,
        UnexpectedEof => Answer::TcpClose,
        _ => Answer::Failed(error.to_string()),
    }
}

/// Connects within `timeout`.
pub async fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, Answer> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => {
            tcp.set_nodelay(true).ok();
            Ok(tcp)
        }
        Ok(Err(e)) => Err(Answer::Failed(format!("connect: {e}"))),
        Err(_) => Err(Answer::NotAccepted),
    }
}

/// An upgraded connection: the stream, the frames already read after the 101, and the
/// response head.
pub struct Upgraded {
    /// The socket.
    pub tcp: TcpStream,
    /// The server's frames; the bytes after the head are fed in already.
    pub reader: ServerFrames,
    /// The 101 head.
    pub head: ResponseHead,
}

/// Connects and upgrades within `timeout`; any other outcome is an [`Answer`].
pub async fn upgrade(
    addr: &str,
    path: &str,
    extensions: Option<&str>,
    timeout: Duration,
) -> Result<Upgraded, Answer> {
    let deadline = Instant::now() + timeout;
    let mut tcp = connect(addr, timeout).await?;
    let request = upgrade_request(addr, path, extensions);
    match tokio::time::timeout_at(deadline, tcp.write_all(&request)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(io_answer(&e)),
        Err(_) => return Err(Answer::Failed("upgrade request not written in time".into())),
    }
    let (head, rest) = read_head(&mut tcp, deadline).await?;
    if head.status != 101 {
        return Err(Answer::Status(head.status));
    }
    let mut reader = ServerFrames::default();
    reader.feed(&rest);
    Ok(Upgraded { tcp, reader, head })
}

/// Reads a response head until `deadline`: the head and the bytes after it, or the answer
/// that ended the wait (TCP close, reset, no answer).
pub async fn read_head(
    tcp: &mut TcpStream,
    deadline: Instant,
) -> Result<(ResponseHead, Vec<u8>), Answer> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        match parse_response_head(&buf) {
            Ok(Some((head, len))) => return Ok((head, buf[len..].to_vec())),
            Ok(None) => {}
            Err(e) => return Err(Answer::Failed(e.0)),
        }
        match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Ok(Ok(0)) => return Err(Answer::TcpClose),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(io_answer(&e)),
            Err(_) => return Err(Answer::NoAnswer(0)),
        }
    }
}

/// Reads frames until the server closes (close frame, FIN, reset) or `deadline`, never
/// answering pings (the silent class relies on that). Data frames are skipped.
pub async fn read_close(
    tcp: &mut TcpStream,
    reader: &mut ServerFrames,
    deadline: Instant,
) -> Answer {
    let mut chunk = vec![0u8; 16 << 10];
    loop {
        loop {
            match reader.next_frame() {
                Ok(Some(frame)) if frame.opcode == CLOSE => {
                    return Answer::Close(frame.close_code())
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => return Answer::Failed(e.0),
            }
        }
        match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Ok(Ok(0)) => return Answer::TcpClose,
            Ok(Ok(n)) => reader.feed(&chunk[..n]),
            Ok(Err(e)) => return io_answer(&e),
            Err(_) => return Answer::NoAnswer(0),
        }
    }
}

/// The status of a complete HTTP response to a request with a body (`Content-Length` only;
/// the hub never chunks its small JSON answers), and the bytes that follow it.
pub fn parse_response(buf: &[u8]) -> Result<Option<(u16, usize)>, WireError> {
    let Some((head, len)) = parse_response_head(buf)? else {
        return Ok(None);
    };
    let body: usize = match head.header("content-length") {
        Some(v) => v
            .parse()
            .map_err(|_| WireError(format!("bad content-length {v:?}")))?,
        None => 0,
    };
    if body > MAX_SERVER_FRAME as usize {
        return Err(WireError(format!("response body of {body} bytes")));
    }
    if buf.len() < len + body {
        return Ok(None);
    }
    Ok(Some((head.status, len + body)))
}

/// A keep-alive HTTP/1.1 client for `POST`s (the honest publisher and the history flood).
pub struct HttpClient {
    addr: String,
    tcp: Option<TcpStream>,
    buf: Vec<u8>,
}

impl HttpClient {
    /// A client for `addr` (connects on first use).
    pub fn new(addr: &str) -> HttpClient {
        HttpClient {
            addr: addr.to_owned(),
            tcp: None,
            buf: Vec::new(),
        }
    }

    /// POSTs `body` to `path` and returns the status; on any failure the connection is
    /// dropped (the next call reconnects) and the failure is the answer.
    pub async fn post(&mut self, path: &str, body: &[u8], timeout: Duration) -> Answer {
        let deadline = Instant::now() + timeout;
        match tokio::time::timeout_at(deadline, self.post_inner(path, body)).await {
            Ok(Ok(status)) => Answer::Status(status),
            Ok(Err(answer)) => {
                self.tcp = None;
                answer
            }
            Err(_) => {
                self.tcp = None;
                Answer::NoAnswer(timeout.as_secs())
            }
        }
    }

    /// A GET of `path`: the status and the body (for `/metrics`).
    pub async fn get(&mut self, path: &str, timeout: Duration) -> Result<(u16, Vec<u8>), Answer> {
        let deadline = Instant::now() + timeout;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        let mut tcp = connect(&self.addr, timeout).await?;
        let io = async {
            tcp.write_all(request.as_bytes()).await?;
            let mut all = Vec::new();
            tcp.read_to_end(&mut all).await?;
            Ok::<_, std::io::Error>(all)
        };
        let all = match tokio::time::timeout_at(deadline, io).await {
            Ok(Ok(all)) => all,
            Ok(Err(e)) => return Err(io_answer(&e)),
            Err(_) => return Err(Answer::NoAnswer(timeout.as_secs())),
        };
        match parse_response_head(&all) {
            Ok(Some((head, len))) => Ok((head.status, all[len..].to_vec())),
            Ok(None) => Err(Answer::TcpClose),
            Err(e) => Err(Answer::Failed(e.0)),
        }
    }

    async fn post_inner(&mut self, path: &str, body: &[u8]) -> Result<u16, Answer> {
        if self.tcp.is_none() {
            self.tcp = Some(connect(&self.addr, Duration::from_secs(10)).await?);
            self.buf.clear();
        }
        let Some(tcp) = self.tcp.as_mut() else {
            return Err(Answer::Failed("no connection".into()));
        };
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        tcp.write_all(&request).await.map_err(|e| io_answer(&e))?;
        let mut chunk = [0u8; 4096];
        loop {
            match parse_response(&self.buf) {
                Ok(Some((status, len))) => {
                    self.buf.drain(..len);
                    return Ok(status);
                }
                Ok(None) => {}
                Err(e) => return Err(Answer::Failed(e.0)),
            }
            let n = tcp.read(&mut chunk).await.map_err(|e| io_answer(&e))?;
            if n == 0 {
                return Err(Answer::TcpClose);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_head_complete_partial_and_invalid() {
        let text = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n\x81\x02hi";
        let (head, len) = parse_response_head(text).unwrap().unwrap();
        assert_eq!(head.status, 101);
        assert_eq!(head.header("upgrade"), Some("websocket"));
        assert_eq!(
            head.header("sec-websocket-extensions"),
            Some("permessage-deflate")
        );
        assert_eq!(&text[len..], b"\x81\x02hi");
        for cut in 0..len {
            assert_eq!(
                parse_response_head(&text[..cut]).unwrap(),
                None,
                "cut {cut}"
            );
        }
        let (head, _) =
            parse_response_head(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(head.status, 431);
        assert!(parse_response_head(b"SSH-2.0-x\r\n\r\n").is_err());
        assert!(parse_response_head(b"HTTP/1.1 abc\r\n\r\n").is_err());
        assert!(parse_response_head(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n").is_err());
        assert!(parse_response_head(&vec![b'a'; MAX_RESPONSE_HEAD + 1]).is_err());
    }

    #[test]
    fn response_with_body_needs_its_content_length() {
        let text = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhelloHTTP/1.1";
        for cut in 0..text.len() - 8 {
            assert_eq!(parse_response(&text[..cut]).unwrap(), None);
        }
        assert_eq!(parse_response(text).unwrap(), Some((200, text.len() - 8)));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n").is_err());
    }

    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let opcode = OpCode::from_u8(opcode).unwrap();
        unmasked_frame(opcode, payload)
    }

    #[test]
    fn frames_split_anywhere_and_close_codes() {
        let mut stream = Vec::new();
        stream.extend(server_frame(TEXT, b"{\"type\":\"message\"}"));
        stream.extend(server_frame(PING, b"p"));
        stream.extend(server_frame(BINARY, &vec![7u8; 300]));
        stream.extend(server_frame(BINARY, &vec![9u8; 70_000]));
        stream.extend(server_frame(CLOSE, &1009u16.to_be_bytes()));
        for step in [1, 2, 3, 5, 1000, stream.len()] {
            let mut reader = ServerFrames::default();
            let mut frames = Vec::new();
            for piece in stream.chunks(step) {
                reader.feed(piece);
                while let Some(frame) = reader.next_frame().unwrap() {
                    frames.push(frame);
                }
            }
            let opcodes: Vec<u8> = frames.iter().map(|f| f.opcode).collect();
            assert_eq!(opcodes, [TEXT, PING, BINARY, BINARY, CLOSE], "step {step}");
            assert_eq!(frames[3].payload.len(), 70_000);
            assert_eq!(frames[4].close_code(), 1009);
        }
        let empty_close = Frame {
            opcode: CLOSE,
            fin: true,
            rsv: 0,
            payload: vec![],
        };
        assert_eq!(empty_close.close_code(), 1005);
    }

    #[test]
    fn masked_and_oversized_server_frames() {
        // A masked frame (servers must not mask, but the reader unmasks it anyway).
        let mut reader = ServerFrames::default();
        reader.feed(&client_frame(TEXT, false, b"abc"));
        let frame = reader.next_frame().unwrap().unwrap();
        assert_eq!(frame.payload, b"abc");
        // A server announcing 2^62 bytes is an error, not an allocation.
        let mut reader = ServerFrames::default();
        let mut header = vec![0x82, 127];
        header.extend_from_slice(&(1u64 << 62).to_be_bytes());
        reader.feed(&header);
        assert!(reader.next_frame().is_err());
    }

    #[test]
    fn frames_before_an_unreadable_one_come_first_then_its_error_stays() {
        let mut stream = server_frame(TEXT, b"ok");
        stream.extend(server_frame(CLOSE, &1000u16.to_be_bytes()));
        stream.extend([0x83, 0x00]); // reserved opcode 3
        stream.extend(server_frame(TEXT, b"never"));
        let mut reader = ServerFrames::default();
        reader.feed(&stream);
        assert_eq!(reader.next_frame().unwrap().unwrap().payload, b"ok");
        assert_eq!(reader.next_frame().unwrap().unwrap().close_code(), 1000);
        let error = reader.next_frame().unwrap_err();
        assert!(error.0.contains("reserved opcode"), "{error}");
        reader.feed(&server_frame(TEXT, b"later"));
        assert_eq!(reader.next_frame(), Err(error));
        // A frame over the limit is refused from its header, before its payload arrives.
        let mut reader = ServerFrames::default();
        let mut header = vec![0x82, 127];
        header.extend_from_slice(&(MAX_SERVER_FRAME + 1).to_be_bytes());
        reader.feed(&header);
        assert_eq!(
            reader.next_frame(),
            Err(WireError(format!(
                "server frame of {} bytes",
                MAX_SERVER_FRAME + 1
            )))
        );
    }

    #[test]
    fn hostile_frames_have_the_advertised_shape() {
        let huge = huge_length_frame();
        let mut expected = vec![0x82, 0x80 | 127];
        expected.extend_from_slice(&(1u64 << 62).to_be_bytes());
        expected.extend_from_slice(&[1, 2, 3, 4]);
        expected.extend_from_slice(&[0u8; 64]);
        assert_eq!(huge, expected);
        assert_eq!(u64::from_be_bytes(huge[2..10].try_into().unwrap()), 1 << 62);
        let unmasked = unmasked_frame(OpCode::Text, b"hello");
        assert_eq!(unmasked, b"\x81\x05hello");
        let bad = invalid_utf8_frame();
        assert_eq!(bad[0], 0x81);
        assert!(bad[1] & 0x80 != 0);
        let mut reader = ServerFrames::default();
        reader.feed(&bad);
        let frame = reader.next_frame().unwrap().unwrap();
        assert!(std::str::from_utf8(&frame.payload).is_err());
    }

    #[test]
    fn upgrade_request_offers_extensions() {
        let request = upgrade_request("127.0.0.1:1", "/ws", Some("permessage-deflate"));
        let text = String::from_utf8(request).unwrap();
        assert!(text.starts_with("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"));
        assert!(text.contains("Sec-WebSocket-Extensions: permessage-deflate\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }
}
