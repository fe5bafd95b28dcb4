//! [`SetThreads`]: threads of their own for [`WebSocketSet`](crate::WebSocketSet)s.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::net::{TcpListener, TcpSocket};

/// Threads that each run a current-thread tokio runtime: the place for a
/// [`WebSocketSet`](crate::WebSocketSet).
///
/// A set does all its connections' work in the one task that polls it. Polled from the
/// `block_on` of a multi-thread runtime (the body of `#[tokio::main]`), that task runs on the
/// main thread while the runtime's worker thread polls the sockets: every readiness event
/// then wakes the main thread from another one, two context switches each time. On a thread
/// whose runtime is its own, the set and the sockets share the thread: the set runs until it
/// has nothing left to do, and the same thread then waits in `epoll`.
///
/// Each thread runs the future that `run` makes for it, typically an accept loop feeding a
/// set of its own. The threads can share one port: [`reuseport_listener`] binds a listener
/// per thread with `SO_REUSEPORT`, and the kernel spreads the connections over them. One
/// thread per core is the usual count (`std::thread::available_parallelism`).
///
/// ```no_run
/// use fullduplex::{Message, SetThreads, WebSocketSet};
///
/// let addr = "127.0.0.1:9001".parse().unwrap();
/// let threads = SetThreads::spawn(2, move |_| async move {
///     let Ok(listener) = fullduplex::reuseport_listener(addr) else { return };
///     let mut set = WebSocketSet::new();
///     let mut handshakes = tokio::task::JoinSet::new();
///     loop {
///         tokio::select! {
///             Ok((tcp, _)) = listener.accept() => {
///                 handshakes.spawn_local(fullduplex::accept(tcp));
///             }
///             Some(Ok(Ok(ws))) = handshakes.join_next() => {
///                 set.insert(ws);
///             }
///             (key, message) = set.recv() => {
///                 if let Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) = message {
///                     set.feed(key, message).ok();
///                 }
///             }
///         }
///     }
/// })?;
/// threads.join().ok();
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct SetThreads {
    threads: Vec<JoinHandle<()>>,
}

impl SetThreads {
    /// Starts `count` threads (at least one), named `fullduplex-set-0`, `fullduplex-set-1`
    /// and so on. Thread `i` builds a current-thread runtime with I/O and timers and runs
    /// `run(i)` on it, in a [`LocalSet`](tokio::task::LocalSet) so that it can spawn tasks
    /// that are not `Send` with `spawn_local`, until that future returns.
    ///
    /// # Errors
    ///
    /// The error of a runtime that could not be built or of a thread that could not be
    /// started. The threads already started keep running; [`SetThreads`] is not returned for
    /// them, so their futures should end by themselves.
    pub fn spawn<F, Fut>(count: usize, run: F) -> io::Result<SetThreads>
    where
        F: Fn(usize) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let run = Arc::new(run);
        let mut threads = Vec::with_capacity(count.max(1));
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let run = run.clone();
            let thread = std::thread::Builder::new()
                .name(format!("fullduplex-set-{index}"))
                .spawn(move || {
                    let local = tokio::task::LocalSet::new();
                    local.block_on(&runtime, run(index));
                })?;
            threads.push(thread);
        }
        Ok(SetThreads { threads })
    }

    /// How many threads there are.
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Always false: there is at least one thread.
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// Waits until every thread's future has returned.
    ///
    /// # Errors
    ///
    /// The panic of the first thread (in start order) that panicked; the others are still
    /// waited for.
    pub fn join(self) -> std::thread::Result<()> {
        let mut outcome = Ok(());
        for thread in self.threads {
            let joined = thread.join();
            if outcome.is_ok() {
                outcome = joined;
            }
        }
        outcome
    }
}

/// Binds a TCP listener to `addr` with `SO_REUSEPORT` (and `SO_REUSEADDR`), so that each of
/// several threads can accept on a listener of its own at the same address; Linux spreads
/// incoming connections over them by a hash of the addresses. Call it on the thread whose
/// runtime is to drive the listener (inside the future of a [`SetThreads`] thread). Port 0
/// picks a free port; the other threads then bind to the port that the first one got.
///
/// # Errors
///
/// The socket could not be created, configured or bound (for instance, another socket holds
/// the address without `SO_REUSEPORT`), or listen failed.
#[cfg(all(unix, not(target_os = "solaris"), not(target_os = "illumos")))]
pub fn reuseport_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn each_thread_runs_its_future_on_a_runtime_of_its_own() {
        let (sender, names) = mpsc::channel();
        let threads = SetThreads::spawn(3, move |index| {
            let sender = sender.clone();
            async move {
                // Spawned tasks stay on this thread: its runtime has no other.
                let name = tokio::task::spawn_local(async {
                    let flavor = tokio::runtime::Handle::current().runtime_flavor();
                    (std::thread::current().name().map(str::to_owned), flavor)
                })
                .await
                .ok();
                sender.send((index, name)).ok();
            }
        })
        .unwrap();
        assert_eq!(threads.len(), 3);
        threads.join().unwrap();
        let mut seen: Vec<_> = names.try_iter().collect();
        seen.sort_by_key(|(index, _)| *index);
        assert_eq!(seen.len(), 3);
        for (index, name) in seen {
            let (name, flavor) = name.unwrap();
            assert_eq!(
                name.as_deref(),
                Some(format!("fullduplex-set-{index}").as_str())
            );
            assert_eq!(flavor, tokio::runtime::RuntimeFlavor::CurrentThread);
        }
    }

    #[test]
    fn join_reports_a_panic_after_waiting_for_every_thread() {
        let (sender, finished) = mpsc::channel();
        let threads = SetThreads::spawn(2, move |index| {
            let sender = sender.clone();
            async move {
                if index == 0 {
                    panic!("thread 0 fails");
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                sender.send(index).ok();
            }
        })
        .unwrap();
        assert!(threads.join().is_err());
        assert_eq!(finished.try_iter().collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn zero_threads_means_one() {
        let threads = SetThreads::spawn(0, |_| async {}).unwrap();
        assert_eq!(threads.len(), 1);
        assert!(!threads.is_empty());
        threads.join().unwrap();
    }
}
