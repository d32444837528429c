//! Protocol analyzers. Each reads bytes and produces facts; none does I/O.

pub mod dns;
pub mod http;
pub mod tls;

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
