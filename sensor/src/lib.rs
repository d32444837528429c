//! spanwatch: a passive sensor that finds developer tunnels (ngrok and kin) and
//! TLS-interception proxies (mitmproxy and kin) on the wire.
//!
//! A packet's way through the modules:
//! 1. [`capture`] reads it (a mapped pcap/pcapng file, or libpcap live) into a
//!    batch; the [`pipeline`] dispatcher numbers it and hands it to the worker
//!    that owns its flow (symmetric hash of the address pair).
//! 2. [`decode`] views its headers in place (link, VLAN, tunnels, IPv4/IPv6,
//!    TCP/UDP); fragments are reassembled there.
//! 3. [`flow`] finds its flow in the worker's table; [`reassembly`] puts TCP
//!    bytes in order, for the handshake only.
//! 4. [`analyzer`] finds the protocol by content (one table: TLS, HTTP, DNS)
//!    and reads it: each protocol gives an event object and [`analyzer::facts`].
//! 5. [`detect`] matches the facts against the signatures; events some
//!    signature may match go, in input order, to the [`verdict`] stage (policy,
//!    ledger, suppression: one thread), the others are written at once.
//! 6. [`event`] shapes EVE JSON; the pipeline's writer merges the workers'
//!    lines in input order and hands them to the [`sink`]s (file, stdout …).
//!
//! `config` and `load` read the site configuration and signatures (`load` is
//! the file-reading edge); `stats` counts; `time` is capture time.
//!
//! The core (`decode`, `flow`, `reassembly`, `analyzer`, `detect`) is sans-IO:
//! it reads no files, sockets, clocks or environment, and takes capture time as
//! an argument (`scripts/structure` checks it, with the layering). `capture`,
//! `load` and the sinks are the only edges that do I/O.
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
pub mod findings;
pub mod flow;
pub mod fuzzing;
pub mod ledger;
pub mod load;
pub mod metrics;
pub mod pipeline;
pub mod reassembly;
pub mod report;
pub mod sink;
pub mod stats;
pub mod time;
pub mod verdict;
