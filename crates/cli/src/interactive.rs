//! The interactive prompt of `fdx connect`: a line editor (rustyline) on a thread of its own,
//! feeding the lines typed to the async side through a channel.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rustyline::error::ReadlineError;
use tokio::sync::mpsc;

use crate::output::EditorPrinter;
use crate::Failure;

/// The prompt shown before the line being typed.
const PROMPT: &str = "> ";

/// What the person at the terminal did.
#[derive(Debug)]
pub enum Input {
    /// Entered a line (without its newline).
    Line(String),
    /// Ctrl-D on an empty line, or Ctrl-C: time to close.
    End,
    /// The terminal could not be read.
    Failed(String),
}

/// The line editor, running on its own thread until Ctrl-D / Ctrl-C (or until the process
/// ends, when the connection closed first).
///
/// Dropping it while the prompt is still open (the server closed the connection) puts the
/// terminal back the way it was, since the editor thread never returns from its read.
pub struct LineEditor {
    /// The lines typed.
    inputs: mpsc::UnboundedReceiver<Input>,
    /// The editor thread (never joined: it may be blocked reading the terminal).
    thread: JoinHandle<()>,
    /// Tells the editor thread not to open another prompt.
    stop: Arc<AtomicBool>,
    /// The terminal settings from before the editor switched to raw mode.
    #[cfg(unix)]
    saved: Option<nix::sys::termios::Termios>,
}

impl LineEditor {
    /// Starts the editor thread; gives the editor and the printer that prints above its line.
    pub fn start() -> Result<(LineEditor, EditorPrinter), Failure> {
        #[cfg(unix)]
        let saved = nix::sys::termios::tcgetattr(std::io::stdin()).ok();
        // Bracketed paste stays off: a pasted block is sent line by line, and no terminal
        // mode is left switched on if the process ends while the prompt is open.
        let config = rustyline::Config::builder()
            .auto_add_history(true)
            .bracketed_paste(false)
            .build();
        let mut editor = rustyline::DefaultEditor::with_config(config)
            .map_err(|e| Failure::new(format!("cannot start the line editor: {e}")))?;
        let printer = editor
            .create_external_printer()
            .map_err(|e| Failure::new(format!("cannot start the line editor: {e}")))?;
        let printer: EditorPrinter = Arc::new(Mutex::new(Box::new(printer)));
        let (sender, inputs) = mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("fdx-line-editor".into())
            .spawn(move || {
                while !stopped.load(Ordering::SeqCst) {
                    let input = match editor.readline(PROMPT) {
                        Ok(line) => Input::Line(line),
                        Err(ReadlineError::Eof | ReadlineError::Interrupted) => Input::End,
                        Err(error) => Input::Failed(format!("cannot read the terminal: {error}")),
                    };
                    let last = !matches!(input, Input::Line(_));
                    if sender.send(input).is_err() || last {
                        break;
                    }
                }
            })
            .map_err(|e| Failure::new(format!("cannot start the line editor: {e}")))?;
        let editor = LineEditor {
            inputs,
            thread,
            stop,
            #[cfg(unix)]
            saved,
        };
        Ok((editor, printer))
    }

    /// The next thing typed; [`Input::End`] once the editor is gone.
    pub async fn next(&mut self) -> Input {
        self.inputs.recv().await.unwrap_or(Input::End)
    }
}

impl Drop for LineEditor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if self.thread.is_finished() {
            // The editor returned from its last read and restored the terminal itself.
            return;
        }
        #[cfg(unix)]
        if let Some(saved) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSADRAIN,
                saved,
            );
        }
        // End the prompt line, so that what follows (an error, the shell) starts on its own.
        let mut stdout = std::io::stdout();
        let _ = writeln!(stdout).and_then(|()| stdout.flush());
    }
}
