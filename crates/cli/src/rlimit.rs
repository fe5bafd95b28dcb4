//! The open-file limit: a server (or load generator) with thousands of connections needs more
//! than the 1,024 descriptors a login shell usually allows.

/// Raises the soft limit on open files to the hard limit, so that `--max-connections` and not
/// the shell's default decides how many clients a server takes. Failure is ignored: the
/// process keeps the limit it had.
pub fn raise_open_file_limit() {
    #[cfg(unix)]
    {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
            if soft < hard {
                let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
            }
        }
    }
}
