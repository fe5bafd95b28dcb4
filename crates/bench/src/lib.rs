//! The side-by-side benchmark of fullduplex against fastwebsockets, tokio-tungstenite, a plain
//! TCP echo and (for compression) Python `websockets`. See `BENCHMARKS.md` at the repository
//! root for the method and the results, and `fullduplex-bench --help` for the commands.

pub mod bench;
pub mod callgrind;
pub mod fanout;
pub mod frames;
pub mod generator;
pub mod hostile;
pub mod load;
pub mod machine;
pub mod procfs;
pub mod report;
pub mod serve;
pub mod servers;
pub mod soak;
