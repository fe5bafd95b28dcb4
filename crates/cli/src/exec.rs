//! `fdx exec`: one process per connection, its stdin and stdout wired to the WebSocket
//! (like websocketd).

use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use std::net::SocketAddr;

use fullduplex::{Accept, CloseCode, CloseFrame, Message, ReadHalf, Reject, WebSocket, WriteHalf};
use http::StatusCode;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Semaphore;

use crate::listener::{Handler, ServeOptions, Server, Transport, DEFAULT_ADDR};
use crate::Failure;

/// How long a process may take to exit after its stdin is closed (or its stdout ended)
/// before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// How long the peer may take to answer our close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

const HELP: &str = "\
Each connection runs COMMAND. Each text message received becomes one line on its stdin
(a newline is added); binary messages are written to its stdin as they are. Each line the
command writes to stdout becomes one text message (without the newline; a line that is not
UTF-8 is sent as a binary message). Its stderr goes to fdx's stderr.

When the command exits, the connection is closed: code 1000 with reason \"exit status 0\", or
1011 with \"exit status N\" (or the signal) when it failed. When the client closes or the
connection breaks, the command's stdin is closed; it is killed if it has not exited 1 s later.

Examples:
  fdx exec -- cat                                  echo, one process per connection
  fdx exec 127.0.0.1:9002 -- ./count.sh
  fdx exec --max-processes 4 0.0.0.0:8080 -- python3 -u bot.py
  fdx exec -- sh -c 'read name; echo \"hello $name\"'";

/// Arguments of `fdx exec`.
#[derive(Debug, clap::Args)]
#[command(after_help = HELP)]
pub struct ExecArgs {
    /// Address to listen on.
    #[arg(default_value = DEFAULT_ADDR)]
    pub addr: String,
    /// At most this many processes at once; further upgrade requests get 503.
    #[arg(long, value_name = "N")]
    pub max_processes: Option<usize>,
    #[command(flatten)]
    pub serve: ServeOptions,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Serves until killed.
pub async fn run(args: ExecArgs) -> Result<(), Failure> {
    let server = Server::bind(&args.addr, &args.serve).await?;
    let limit = args
        .max_processes
        .map(|n| Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS))));
    server
        .run(Exec {
            command: args.command.into(),
            limit,
        })
        .await
}

/// The exec server's [`Handler`]: one process per WebSocket, at most `limit` at once.
struct Exec {
    command: Arc<[String]>,
    limit: Option<Arc<Semaphore>>,
}

impl Exec {
    fn refuse() -> Reject {
        Reject::new(StatusCode::SERVICE_UNAVAILABLE).body("too many processes, try again later\n")
    }
}

impl Handler for Exec {
    /// 503 when every process slot is taken.
    fn admit(&self, _request: &fullduplex::UpgradeRequest) -> Result<Accept, Reject> {
        match &self.limit {
            Some(limit) if limit.available_permits() == 0 => Err(Exec::refuse()),
            _ => Ok(Accept::new()),
        }
    }

    async fn serve<S: Transport + 'static>(self: Arc<Self>, ws: WebSocket<S>, peer: SocketAddr) {
        // The slot is taken once the WebSocket is open (a request admitted at the same time
        // as another may find none left: it is closed with 1013, try again later).
        let permit = match &self.limit {
            Some(limit) => match limit.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    let mut ws = ws;
                    let frame = CloseFrame::new(CloseCode(1013), "too many processes");
                    let _ = tokio::time::timeout(CLOSE_WAIT, ws.close(Some(frame))).await;
                    return;
                }
            },
            None => None,
        };
        if let Err(error) = serve_process(ws, &self.command).await {
            eprintln!("fdx: {peer}: {error}");
        }
        drop(permit);
    }
}

/// Runs the command for one connection until the process or the connection ends.
async fn serve_process<S: Transport>(ws: WebSocket<S>, command: &[String]) -> Result<(), String> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| "no command given".to_owned())?;
    let (mut rx, mut tx) = ws.split();
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            let frame = CloseFrame::new(CloseCode::INTERNAL_ERROR, "cannot start the command");
            let _ = tx.close(Some(frame)).await;
            let _ = tokio::time::timeout(CLOSE_WAIT, drain(&mut rx)).await;
            return Err(format!("cannot start {program}: {error}"));
        }
    };
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err("the command's pipes are missing".into());
    };

    let inbound = to_process(&mut rx, stdin);
    let outbound = from_process(&mut tx, stdout);
    tokio::pin!(inbound);
    tokio::select! {
        // The connection ended first: stdin is closed by now; let the process go.
        ended = &mut inbound => {
            finish(&mut child).await;
            ended
        }
        // The process closed its stdout (it normally exits at the same time).
        sent = outbound => {
            let status = finish(&mut child).await;
            let frame = match status {
                Some(status) if status.success() => {
                    CloseFrame::new(CloseCode::NORMAL, describe(status))
                }
                Some(status) => CloseFrame::new(CloseCode::INTERNAL_ERROR, describe(status)),
                None => CloseFrame::new(CloseCode::INTERNAL_ERROR, "process killed"),
            };
            if sent.is_ok() {
                tx.close(Some(frame)).await.map_err(|e| e.to_string())?;
            }
            // Keep reading to see the peer's close frame; what still arrives is dropped.
            match tokio::time::timeout(CLOSE_WAIT, &mut inbound).await {
                Ok(result) => sent.and(result),
                Err(_) => Err("the client did not answer the close frame".into()),
            }
        }
    }
}

/// Writes received messages to the process's stdin until the connection ends; then closes
/// stdin. Write errors (the process stopped reading) only stop the writing.
async fn to_process<S: Transport>(rx: &mut ReadHalf<S>, stdin: ChildStdin) -> Result<(), String> {
    let mut stdin = Some(stdin);
    while let Some(message) = rx.recv().await {
        let message = message.map_err(|e| e.to_string())?;
        let Some(pipe) = stdin.as_mut() else {
            continue;
        };
        let written = match message {
            Message::Text(text) => {
                let line = [text.as_bytes().as_ref(), b"\n"].concat();
                pipe.write_all(&line).await
            }
            Message::Binary(data) => pipe.write_all(&data).await,
            _ => continue,
        };
        if written.and(pipe.flush().await).is_err() {
            stdin = None;
        }
    }
    Ok(())
}

/// Sends each stdout line as a message until stdout ends.
async fn from_process<S: Transport>(
    tx: &mut WriteHalf<S>,
    stdout: ChildStdout,
) -> Result<(), String> {
    let mut stdout = BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = stdout
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| format!("reading the command's stdout: {e}"))?;
        if n == 0 {
            return Ok(());
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        let message = match String::from_utf8(std::mem::take(&mut line)) {
            Ok(text) => Message::text(text),
            Err(error) => Message::Binary(Bytes::from(error.into_bytes())),
        };
        tx.send(message).await.map_err(|e| e.to_string())?;
    }
}

/// Waits up to [`EXIT_GRACE`] for the process to exit, then kills it. `None` if its status
/// could not be had.
async fn finish(child: &mut Child) -> Option<ExitStatus> {
    match tokio::time::timeout(EXIT_GRACE, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            let _ = child.start_kill();
            child.wait().await.ok()
        }
    }
}

/// Reads the connection to its end, dropping messages.
async fn drain<S: Transport>(rx: &mut ReadHalf<S>) {
    while let Some(Ok(_)) = rx.recv().await {}
}

/// `exit status N`, or the platform's description of a signal.
fn describe(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => status.to_string(),
    }
}
