//! Runs a scripted session against a peer server (Python `websockets`, Node `ws`; see
//! `interop/README.md` for the contract) and exits non-zero on the first failed check.
//!
//! ```text
//! cargo run --release -p fullduplex --example interop_client -- ws://127.0.0.1:8765 \
//!     [--compress off|takeover|no-takeover] [--big-mib N]
//! ```
//!
//! `--compress` (default `off`) picks the permessage-deflate configuration:
//!
//! - `off`: `Config::default().compression(false)`, nothing offered;
//! - `takeover`: the default `DeflateConfig` (context takeover both ways, level 6, threshold
//!   64 bytes);
//! - `no-takeover`: the default plus `server_no_context_takeover` and
//!   `client_no_context_takeover`.
//!
//! The big binary message is 16 MiB (`--big-mib` changes it).

use std::time::Duration;

use fullduplex::proto::deflate::DeflateConfig;
use fullduplex::{Bytes, CloseCode, CloseFrame, Config, MaybeTlsStream, Message, WebSocket};
use tokio::net::TcpStream;

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;
type Result<T> = std::result::Result<T, String>;

/// Text and binary messages in the bulk phase (each).
const BULK: usize = 1000;
/// Messages fed before each flush in the bulk phase.
const BATCH: usize = 100;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Off,
    Takeover,
    NoTakeover,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        match s {
            "off" => Some(Mode::Off),
            "takeover" => Some(Mode::Takeover),
            "no-takeover" => Some(Mode::NoTakeover),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Takeover => "takeover",
            Mode::NoTakeover => "no-takeover",
        }
    }

    fn config(self) -> Config {
        let config = Config::default()
            .max_message_size(32 << 20)
            .max_frame_size(32 << 20)
            .no_keepalive();
        match self {
            Mode::Off => config.compression(false),
            Mode::Takeover => config.deflate(DeflateConfig::default()),
            Mode::NoTakeover => config.deflate(
                DeflateConfig::default()
                    .with_server_no_context_takeover(true)
                    .with_client_no_context_takeover(true),
            ),
        }
    }
}

struct Args {
    url: String,
    mode: Mode,
    big_mib: usize,
}

fn parse_args() -> std::result::Result<Args, String> {
    let mut url = None;
    let mut mode = Mode::Off;
    let mut big_mib = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--compress" => {
                let value = args.next().unwrap_or_default();
                mode = Mode::parse(&value)
                    .ok_or_else(|| format!("--compress {value:?}: off|takeover|no-takeover"))?;
            }
            "--big-mib" => {
                let value = args.next().unwrap_or_default();
                big_mib = Some(
                    value
                        .parse::<usize>()
                        .ok()
                        .filter(|&n| (1..=30).contains(&n))
                        .ok_or_else(|| format!("--big-mib {value:?}: 1..=30"))?,
                );
            }
            _ if arg.starts_with("--") => return Err(format!("unknown option {arg}")),
            _ if url.is_none() => url = Some(arg),
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    Ok(Args {
        url: url.unwrap_or_else(|| "ws://127.0.0.1:8765".to_owned()),
        mode,
        big_mib: big_mib.unwrap_or(16),
    })
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("interop_client: {e}");
            eprintln!(
                "usage: interop_client ws://HOST:PORT [--compress off|takeover|no-takeover] \
                 [--big-mib N]"
            );
            std::process::exit(2);
        }
    };
    match tokio::time::timeout(Duration::from_secs(60), run(&args)).await {
        Ok(Ok(())) => println!("interop_client: ok"),
        Ok(Err(reason)) => {
            eprintln!("interop_client: FAILED: {reason}");
            std::process::exit(1);
        }
        Err(_) => {
            eprintln!("interop_client: FAILED: timed out");
            std::process::exit(1);
        }
    }
}

fn step(what: &str) {
    println!("interop_client: {what}: ok");
}

async fn run(args: &Args) -> Result<()> {
    let mode = args.mode;
    let (mut ws, response) = fullduplex::connect_with(args.url.as_str(), mode.config())
        .await
        .map_err(|e| format!("connect: {e}"))?;

    let header = response
        .headers()
        .get("sec-websocket-extensions")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    println!(
        "interop_client: mode {}, negotiated Sec-WebSocket-Extensions: {}",
        mode.name(),
        header.as_deref().unwrap_or("none")
    );
    let want = mode != Mode::Off;
    if ws.is_compressed() != want {
        return Err(format!(
            "negotiation: is_compressed() = {}, expected {want} (answer {header:?})",
            ws.is_compressed()
        ));
    }
    if mode == Mode::NoTakeover {
        let h = header.as_deref().unwrap_or("");
        for flag in ["server_no_context_takeover", "client_no_context_takeover"] {
            if !h.contains(flag) {
                return Err(format!("negotiation: {flag} missing from the answer {h:?}"));
            }
        }
    }
    step("negotiation");

    let text = Message::text("héllo ✓");
    ws.send(text.clone()).await.map_err(|e| e.to_string())?;
    expect(&mut ws, &text, "text echo").await?;
    step("text echo");

    let binary = Message::binary((0..=255u8).collect::<Vec<_>>());
    ws.send(binary.clone()).await.map_err(|e| e.to_string())?;
    expect(&mut ws, &binary, "binary echo").await?;
    step("binary echo");

    let big = Message::binary(big_message(args.big_mib));
    let what = format!("{} MiB echo", args.big_mib);
    ws.send(big.clone()).await.map_err(|e| e.to_string())?;
    expect(&mut ws, &big, &what).await?;
    step(&what);

    bulk(&mut ws).await?;

    ws.send(Message::text("fragment-me"))
        .await
        .map_err(|e| e.to_string())?;
    expect(&mut ws, &Message::text("fragmented"), "fragmented reply").await?;
    step("fragmented reply");

    let ping = Bytes::from_static(b"client-ping");
    ws.send(Message::Ping(ping.clone()))
        .await
        .map_err(|e| e.to_string())?;
    expect(&mut ws, &Message::Pong(ping), "pong").await?;
    step("pong");

    ws.send(Message::text("ping-me"))
        .await
        .map_err(|e| e.to_string())?;
    // The server's ping arrives first (answered automatically), then its confirmation.
    expect(&mut ws, &Message::text("pong-ok"), "server ping answered").await?;
    step("server ping answered");

    ws.send(Message::Close(Some(CloseFrame::new(
        CloseCode(4000),
        "bye",
    ))))
    .await
    .map_err(|e| e.to_string())?;
    loop {
        match ws.recv().await {
            Some(Ok(Message::Close(Some(frame)))) if frame.code == CloseCode(4000) => break,
            Some(Ok(Message::Close(other))) => return Err(format!("close echo: got {other:?}")),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("close echo: {e}")),
            None => return Err("close echo: stream ended without a close frame".into()),
        }
    }
    match ws.recv().await {
        None => {
            step("close echo");
            Ok(())
        }
        other => Err(format!(
            "after close: expected end of stream, got {other:?}"
        )),
    }
}

const WORDS: [&str; 19] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett",
    "kilo", "lima", "mike", "november", "oscar", "papa", "héllo", "✓", "naïve",
];

/// A deterministic pseudo-random number generator (an LCG), seeded.
fn lcg(seed: u32) -> impl FnMut() -> usize {
    let mut state = seed;
    move || {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12345) & 0x7fff_ffff;
        (state >> 8) as usize
    }
}

/// `mib` MiB of word salad: a ~90 KB pseudo-random block of words and numbers, repeated. It
/// compresses like prose (to about a third), and the repeats are farther apart than the
/// 32 KiB deflate window, so every block costs the compressor real work.
fn big_message(mib: usize) -> Vec<u8> {
    let mut rnd = lcg(4242);
    let words: Vec<String> = (0..10_000)
        .map(|_| format!("{}{}", WORDS[rnd() % WORDS.len()], rnd() % 1000))
        .collect();
    let block = words.join(" ").into_bytes();
    block.iter().copied().cycle().take(mib << 20).collect()
}

/// 1,000 JSON-like texts (~100-300 bytes) and 1,000 small binaries (1-200 bytes, half noise,
/// half repetitive), interleaved; deterministic, varying content (an LCG).
fn bulk_messages() -> Vec<Message> {
    const USERS: [&str; 5] = ["alice", "bob", "carol", "dave", "eve"];
    let mut rnd = lcg(777);
    let mut out = Vec::with_capacity(2 * BULK);
    for i in 0..BULK {
        let words: Vec<&str> = (0..4 + rnd() % 24)
            .map(|_| WORDS[rnd() % WORDS.len()])
            .collect();
        let tags: Vec<String> = (0..rnd() % 4)
            .map(|_| format!("\"t{}\"", rnd() % 50))
            .collect();
        let user = USERS[rnd() % USERS.len()];
        out.push(Message::text(format!(
            "{{\"seq\":{i},\"user\":\"{user}\",\"ts\":{},\"text\":\"message number {i}: {}\",\
             \"tags\":[{}],\"ok\":{}}}",
            1_700_000_000_000u64 + i as u64 * 37,
            words.join(" "),
            tags.join(","),
            i % 3 == 0
        )));
        let n = 1 + rnd() % 200;
        let bytes: Vec<u8> = (0..n)
            .map(|k| {
                if i % 2 == 1 {
                    (i + k % 7) as u8
                } else {
                    rnd() as u8
                }
            })
            .collect();
        out.push(Message::binary(bytes));
    }
    out
}

/// Feeds the bulk messages in batches of [`BATCH`], flushes, and checks each batch's echoes
/// in order.
async fn bulk(ws: &mut Ws) -> Result<()> {
    let what = "bulk 1000 text + 1000 binary";
    let messages = bulk_messages();
    for (b, batch) in messages.chunks(BATCH).enumerate() {
        for message in batch {
            ws.feed(message.clone())
                .await
                .map_err(|e| format!("{what}: feed: {e}"))?;
        }
        ws.flush()
            .await
            .map_err(|e| format!("{what}: flush: {e}"))?;
        for (k, message) in batch.iter().enumerate() {
            let index = b * BATCH + k;
            expect(ws, message, &format!("{what} (message #{index})")).await?;
        }
    }
    let sizes = messages.iter().filter(|m| m.is_text()).map(Message::len);
    let (min, max) = sizes.fold((usize::MAX, 0), |(lo, hi), n| (lo.min(n), hi.max(n)));
    println!("interop_client: {what}: ok (texts {min}-{max} bytes)");
    Ok(())
}

/// Receives until a data message (or pong) arrives and checks it; pings are skipped.
async fn expect(ws: &mut Ws, expected: &Message, what: &str) -> Result<()> {
    loop {
        match ws.recv().await {
            Some(Ok(Message::Ping(_))) => continue,
            Some(Ok(message)) if &message == expected => return Ok(()),
            Some(Ok(message)) => {
                return Err(format!(
                    "{what}: got {} ({} bytes), expected {} ({} bytes)",
                    describe(&message),
                    message.len(),
                    describe(expected),
                    expected.len()
                ))
            }
            Some(Err(e)) => return Err(format!("{what}: {e}")),
            None => return Err(format!("{what}: connection ended")),
        }
    }
}

fn describe(message: &Message) -> String {
    match message {
        Message::Text(_) => {
            let text = message.as_text().unwrap_or_default();
            let cut: String = text.chars().take(80).collect();
            format!(
                "text {cut:?}{}",
                if cut.len() < text.len() { "..." } else { "" }
            )
        }
        Message::Binary(data) => {
            let head: Vec<String> = data.iter().take(16).map(|b| format!("{b:02x}")).collect();
            format!(
                "binary [{}{}]",
                head.join(""),
                if data.len() > 16 { "..." } else { "" }
            )
        }
        other => format!("{other:?}"),
    }
}
