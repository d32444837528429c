//! spanwatch: a passive sensor that finds developer tunnels (ngrok and kin) and
//! TLS-interception proxies (mitmproxy and kin) on the wire.
//!
//! The core (`decode`, `flow`, `reassembly`, `analyzer`, `engine`) is sans-IO:
//! it reads no files, sockets, clocks or environment, and takes capture time as
//! an argument. `capture` and the event sinks are the only edges that do I/O.
//! `unsafe` is denied everywhere; the two exceptions (mapping a capture file,
//! and the prefetch hint that reads it ahead) are isolated in `capture::file`
//! with their invariants written down.
#![deny(unsafe_code)]

pub mod analyzer;
pub mod capture;
pub mod config;
pub mod decode;
pub mod detect;
pub mod event;
pub mod flow;
pub mod fuzzing;
pub mod load;
pub mod pipeline;
pub mod reassembly;
pub mod sink;
pub mod stats;
pub mod time;
pub mod verdict;
