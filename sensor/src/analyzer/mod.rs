//! Protocol analyzers: one folder per protocol (parser, per-flow state, the
//! event it logs and the facts it gives), found by content through one table
//! ([`session`]). None does I/O.

pub mod dns;
pub mod facts;
pub mod http;
pub mod quic;
pub mod session;
pub mod tls;

pub use session::{Analyzers, Chunk, Ctx, Kind, Mode, Probe};
pub use tls::cert;

/// What an analyzer made of the bytes it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress<T> {
    /// A complete item, and the bytes it took.
    Done(T, usize),
    /// Not enough bytes yet: call again with more.
    NeedMore,
    /// These bytes are not (or no longer) this protocol.
    Invalid,
}

impl<T> Progress<T> {
    /// The same progress with the item mapped.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Progress<U> {
        match self {
            Progress::Done(t, n) => Progress::Done(f(t), n),
            Progress::NeedMore => Progress::NeedMore,
            Progress::Invalid => Progress::Invalid,
        }
    }
}
