//! The load-generation kit shared by `fdx bench` (crates/cli) and the benchmark crate
//! (crates/bench).
//!
//! Load generators here are cheap on purpose, so that more of the machine measures the server:
//! client frames are encoded and masked ahead of time, and echoes are read as they stream
//! past, without copying their payloads. The kit does not depend on `fullduplex`, the library
//! under test; it reads frames with the core's [`FrameReader`](fullduplex_proto::frame::FrameReader).
//!
//! * [`report`]: the load report (`fdx bench --json`, `fullduplex-bench load`) and its table.
//! * [`frame`]: masked client frames, and whole frames read back
//!   ([`FrameAssembler`](frame::FrameAssembler)).
//! * [`message`]: tagged messages, their frames built once, and what their echoes must be.
//! * [`echo`]: reading the echoes: checked ([`EchoParser`]) or only counted
//!   ([`FrameCounter`]).

pub mod echo;
pub mod frame;
pub mod message;
pub mod report;

pub use echo::{EchoParser, FrameCounter};

pub use report::{LatencySummary, LoadMode, LoadReport};
