//! `fdx connect` at a terminal (driven through tmux), and piped into a reader that stops early.
//!
//! The tmux tests are ignored by plain `cargo test` (`--include-ignored` runs them, as
//! `scripts/test` does) and fail when `tmux` is not on PATH.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{serve_one, Background, PROXY_VARS, RUN_TIMEOUT};
use fullduplex::{CloseCode, CloseFrame, Message};

/// How long to wait for the pane to show what a step expects.
const PANE_TIMEOUT: Duration = Duration::from_secs(10);

/// Fails the test, saying how to fix it, when tmux cannot be run.
fn require_tmux() {
    let found = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|out| out.status.success());
    assert!(
        found,
        "`tmux` is not on PATH: apt-get install tmux (scripts/test does)"
    );
}

/// A tmux server of its own (socket `-L NAME`) with one detached session running a command;
/// killed on drop, also when the test fails.
struct Tmux {
    name: String,
    /// The server's socket, removed on drop (tmux leaves it behind).
    socket: Option<std::path::PathBuf>,
}

impl Tmux {
    /// Runs `fdx args` in a new 120x30 session. When fdx ends, the pane shows
    /// `fdx-exit=CODE tty=icanon|-icanon` (the terminal mode left behind) and stays open.
    fn start(test: &str, args: &[&str]) -> Tmux {
        let name = format!("fdx-{}-{test}", std::process::id());
        let mut fdx = shell_quote(env!("CARGO_BIN_EXE_fdx"));
        for arg in args {
            fdx.push(' ');
            fdx.push_str(&shell_quote(arg));
        }
        let script = format!(
            "unset {vars}; {fdx}; code=$?; \
             echo \"fdx-exit=$code tty=$(stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon)\"; \
             sleep 60",
            vars = PROXY_VARS.join(" "),
        );
        let mut tmux = Tmux { name, socket: None };
        let status = tmux
            .command()
            .args([
                "new-session",
                "-d",
                "-s",
                &tmux.name,
                "-x",
                "120",
                "-y",
                "30",
            ])
            .arg(script)
            .status()
            .expect("run tmux");
        assert!(status.success(), "tmux new-session failed: {status}");
        tmux.socket = tmux
            .command()
            .args(["display-message", "-p", "-t", &tmux.name, "#{socket_path}"])
            .output()
            .ok()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().into())
            .filter(|path: &std::path::PathBuf| !path.as_os_str().is_empty());
        tmux
    }

    /// `tmux -L NAME -f /dev/null`: this test's own server, without the user's configuration.
    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command.args(["-L", &self.name, "-f", "/dev/null"]);
        command
    }

    /// Types keys (tmux key names: `Enter`, `Up`, `C-d`; other words are typed as text).
    fn send_keys(&self, keys: &[&str]) {
        let status = self
            .command()
            .args(["send-keys", "-t", &self.name])
            .args(keys)
            .status()
            .expect("run tmux send-keys");
        assert!(status.success(), "tmux send-keys {keys:?} failed");
    }

    /// Types `text` in one burst, as a paste does: several keys arrive in one read. (rustyline
    /// 17 stalled on that while an external printer was in use, waiting in select(2) with the
    /// rest of the keys in its buffer; this test caught it, and rustyline 19 fixes it.)
    fn type_text(&self, text: &str) {
        self.send_keys(&["-l", text]);
    }

    /// The visible pane, lines with trailing blanks removed.
    fn capture(&self) -> String {
        let out = self
            .command()
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .expect("run tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls the pane until `done` holds; panics with the pane's contents after a while.
    fn wait_for(&self, what: &str, done: impl Fn(&[&str]) -> bool) -> String {
        let deadline = Instant::now() + PANE_TIMEOUT;
        loop {
            let pane = self.capture();
            let lines: Vec<&str> = pane.lines().map(str::trim_end).collect();
            if done(&lines) {
                return pane;
            }
            if Instant::now() >= deadline {
                panic!("the pane did not show {what} within {PANE_TIMEOUT:?}:\n{pane}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self
            .command()
            .args(["kill-session", "-t", &self.name])
            .stderr(Stdio::null())
            .status();
        let _ = self
            .command()
            .arg("kill-server")
            .stderr(Stdio::null())
            .status();
        if let Some(socket) = &self.socket {
            let _ = std::fs::remove_file(socket);
        }
    }
}

/// Single-quotes a word for sh.
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// How many lines are exactly `line`.
fn count(lines: &[&str], line: &str) -> usize {
    lines.iter().filter(|l| **l == line).count()
}

/// The last line that is not empty.
fn last_line<'a>(lines: &[&'a str]) -> &'a str {
    lines
        .iter()
        .rev()
        .find(|l| !l.is_empty())
        .copied()
        .unwrap_or("")
}

#[test]
#[ignore = "needs tmux"]
fn typed_lines_are_sent_history_recalls_and_ctrl_d_closes() {
    require_tmux();
    let server = Background::start(&["echo", "127.0.0.1:0"]);
    let tmux = Tmux::start("typed", &["connect", &server.url]);
    tmux.wait_for("the prompt", |lines| last_line(lines) == ">");

    tmux.type_text("hello");
    tmux.send_keys(&["Enter"]);
    tmux.wait_for("the echo of hello", |lines| {
        count(lines, "> hello") == 1 && count(lines, "hello") == 1
    });

    // Up recalls the previous line from the history.
    tmux.send_keys(&["Up"]);
    tmux.wait_for("hello recalled", |lines| last_line(lines) == "> hello");
    tmux.send_keys(&["Enter"]);
    tmux.wait_for("a second echo", |lines| {
        count(lines, "> hello") == 2 && count(lines, "hello") == 2
    });

    tmux.send_keys(&["C-d"]);
    tmux.wait_for("exit status 0 and the terminal restored", |lines| {
        count(lines, "fdx-exit=0 tty=icanon") == 1
    });
}

#[test]
#[ignore = "needs tmux"]
fn ctrl_c_closes_normally() {
    require_tmux();
    let server = Background::start(&["echo", "127.0.0.1:0"]);
    let tmux = Tmux::start("ctrlc", &["connect", &server.url, "--json"]);
    tmux.wait_for("the prompt", |lines| last_line(lines) == ">");
    tmux.send_keys(&["C-c"]);
    let pane = tmux.wait_for("exit status 0", |lines| {
        count(lines, "fdx-exit=0 tty=icanon") == 1
    });
    // --json still applies: our close frame is logged.
    assert!(
        pane.contains(r#""dir":"out","type":"close","len":2,"code":1000"#),
        "{pane}"
    );
}

#[test]
#[ignore = "needs tmux"]
fn message_arriving_while_typing_leaves_the_line_intact() {
    require_tmux();
    let (received_tx, received) = mpsc::channel();
    let port = serve_one(move |tcp| async move {
        let Ok(mut ws) = fullduplex::accept(tcp).await else {
            return;
        };
        // "go" arrives first; the test then types a partial line; then the server speaks.
        while let Some(Ok(message)) = ws.recv().await {
            if let Some(text) = message.as_text() {
                let _ = received_tx.send(text.to_owned());
                if text == "go" {
                    tokio::time::sleep(Duration::from_millis(800)).await;
                    let _ = ws.send(Message::text("server says hi")).await;
                }
            }
        }
    });
    let url = format!("ws://127.0.0.1:{port}/");
    let tmux = Tmux::start("typing", &["connect", &url]);
    tmux.wait_for("the prompt", |lines| last_line(lines) == ">");
    tmux.type_text("go");
    tmux.send_keys(&["Enter"]);
    assert_eq!(
        received
            .recv_timeout(PANE_TIMEOUT)
            .expect("the server got go"),
        "go"
    );
    tmux.type_text("partial text");
    let pane = tmux.wait_for("the pushed message above the partial line", |lines| {
        count(lines, "server says hi") == 1 && last_line(lines) == "> partial text"
    });
    let lines: Vec<&str> = pane.lines().map(str::trim_end).collect();
    let hi = lines.iter().position(|l| *l == "server says hi");
    let typed = lines.iter().rposition(|l| *l == "> partial text");
    assert!(
        hi < typed,
        "the message is printed above the prompt:\n{pane}"
    );

    // The line kept being edited: finishing it sends it whole.
    tmux.type_text(" done");
    tmux.send_keys(&["Enter"]);
    assert_eq!(
        received.recv_timeout(PANE_TIMEOUT).expect("the typed line"),
        "partial text done"
    );
    tmux.send_keys(&["C-d"]);
    tmux.wait_for("exit status 0", |lines| {
        count(lines, "fdx-exit=0 tty=icanon") == 1
    });
}

#[test]
#[ignore = "needs tmux"]
fn server_close_ends_the_prompt_with_its_exit_status() {
    require_tmux();
    let port = serve_one(|tcp| async move {
        let Ok(mut ws) = fullduplex::accept(tcp).await else {
            return;
        };
        // Close once the client has sent something.
        if let Some(Ok(_)) = ws.recv().await {
            let _ = ws
                .close(Some(CloseFrame::new(CloseCode(4001), "go away")))
                .await;
            while let Some(Ok(_)) = ws.recv().await {}
        }
    });
    let url = format!("ws://127.0.0.1:{port}/");
    let tmux = Tmux::start("serverclose", &["connect", &url]);
    tmux.wait_for("the prompt", |lines| last_line(lines) == ">");
    tmux.type_text("knock");
    tmux.send_keys(&["Enter"]);
    // Typed while the close is on its way, perhaps after it: the terminal must still be
    // restored.
    let pane = tmux.wait_for("exit status 3 and the terminal restored", |lines| {
        count(lines, "fdx-exit=3 tty=icanon") == 1
    });
    assert!(
        pane.contains("fdx: server closed the connection with code 4001: go away"),
        "{pane}"
    );
}

#[test]
fn closed_stdout_ends_quietly() {
    let server = Background::start(&["echo", "127.0.0.1:0"]);
    let mut child = common::fdx()
        .args(["connect", &server.url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fdx connect");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let stderr = child.stderr.take().expect("stderr");
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
        text
    });

    writeln!(stdin, "first").expect("write first");
    stdin.flush().expect("flush");
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read the first line");
    assert_eq!(line, "first\n");
    // Like `| head -1`: the reader goes away after one line. Stdin stays open, so what ends
    // fdx is the closed stdout.
    drop(stdout);
    // Each line comes back and is printed; the first print after the pipe has no reader
    // fails and ends fdx. More than one line: a process that another test spawns at this
    // moment holds a copy of the pipe's read end until its exec, and a print in that window
    // still succeeds.
    let deadline = std::time::Instant::now() + RUN_TIMEOUT;
    let mut sent = 0;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "fdx did not end within {RUN_TIMEOUT:?} after stdout closed ({sent} lines sent)"
        );
        // fdx may end between the check and the write: a failed write is that.
        if writeln!(stdin, "line {sent}")
            .and_then(|()| stdin.flush())
            .is_ok()
        {
            sent += 1;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    drop(stdin);
    let stderr = stderr.join().expect("stderr reader");
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(stderr, "");
}
