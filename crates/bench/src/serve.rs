//! What the four echo servers share: the address argument, the open-file limit, a
//! current-thread runtime, the "listening on" line the runner waits for, and exit on stdin EOF
//! (so that a server under callgrind exits normally and writes its profile).

use std::future::Future;
use std::io::{Read, Write};

use tokio::net::TcpListener;

/// Raises the soft open-file limit to the hard one (10,000 idle connections need it).
pub fn raise_nofile_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Runs an echo server: binds the address given as the first argument (default
/// `127.0.0.1:0`), prints `listening on ADDR`, and serves every accepted connection with
/// `serve` on a current-thread runtime until stdin reaches end of file.
pub fn run<F, Fut>(serve: F)
where
    F: Fn(tokio::net::TcpStream) -> Fut + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    run_with_listener(|listener| async move {
        loop {
            match listener.accept().await {
                Ok((tcp, _)) => {
                    tcp.set_nodelay(true).ok();
                    tokio::spawn(serve(tcp));
                }
                // Out of file descriptors, say: the runner sees the clients fail.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
    });
}

/// Like [`run`], for a server that runs its own accept loop on the listener (one task for
/// all connections, say).
pub fn run_with_listener<F, Fut>(serve: F)
where
    F: FnOnce(TcpListener) -> Fut,
    Fut: Future<Output = ()>,
{
    raise_nofile_limit();
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    exit_on_stdin_eof();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let listener = TcpListener::bind(&addr).await.expect("bind");
        let local = listener.local_addr().expect("local address");
        let mut stdout = std::io::stdout();
        writeln!(stdout, "listening on {local}").ok();
        stdout.flush().ok();
        serve(listener).await;
    });
}

/// Exits the process (normally, so that valgrind writes its output) when stdin closes.
fn exit_on_stdin_eof() {
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
}

/// The handshake of the fullduplex echo servers: the library's defaults (1 MiB messages,
/// permessage-deflate accepted) except keepalive, which is off. The load generator reads
/// only echoes and does not answer pings, so a server's keepalive would close its
/// connections 40 s into a long cell; and the other servers measured send no pings either.
pub fn accept(
    tcp: tokio::net::TcpStream,
) -> impl Future<Output = Result<fullduplex::WebSocket<tokio::net::TcpStream>, fullduplex::Error>> {
    fullduplex::accept_with(tcp, fullduplex::Config::default().no_keepalive(), |_| {
        Ok(fullduplex::Accept::new())
    })
}
