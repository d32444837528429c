//! spanwatch: a passive sensor that finds developer tunnels (ngrok and kin) and
//! TLS-interception proxies (mitmproxy and kin) on the wire.
//!
//! The core (`decode`, `flow`, `reassembly`, `analyzer`) is sans-IO: it reads no
//! files, sockets, clocks or environment, and takes capture time as an argument.
//! `capture` and `output` are the only edges that do I/O.
#![deny(unsafe_code)]

pub mod analyzer;
pub mod capture;
pub mod decode;
pub mod flow;
pub mod reassembly;
pub mod time;
