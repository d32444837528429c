//! Digests of fingerprint strings already seen.
//!
//! JA3 is an MD5 and JA4 two truncated SHA-256 of strings that the same
//! client software sends again and again: a site has a few hundred distinct
//! client fingerprints, not one per connection. Each worker thread keeps the
//! digests it has computed, up to [`MEMO_MAX`] per kind, and starts afresh
//! when that is full (a flood of distinct hellos costs what it cost before
//! the memo; the memory stays bounded). The output is the same either way:
//! the memo only spares recomputing a pure function.

use std::cell::RefCell;
use std::thread::LocalKey;

/// Strings remembered per thread and kind.
pub const MEMO_MAX: usize = 4096;
/// Longer inputs are digested every time: real fingerprints are a few
/// hundred bytes, and a hostile hello of thousands of ciphers must not make
/// the memo hold megabytes (this bounds it at `MEMO_MAX` × 1 KiB per kind).
pub const MEMO_MAX_INPUT: usize = 1024;

type Table = ahash::AHashMap<Box<str>, Box<str>>;

thread_local! {
    static JA3: RefCell<Table> = RefCell::new(Table::default());
    static JA4: RefCell<Table> = RefCell::new(Table::default());
    static RESETS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Times this thread's memos were full and started afresh.
pub fn resets() -> u64 {
    RESETS.with(|r| r.get())
}

/// Which digest.
#[derive(Clone, Copy)]
pub enum Kind {
    Ja3,
    Ja4,
}

impl Kind {
    fn table(self) -> &'static LocalKey<RefCell<Table>> {
        match self {
            Kind::Ja3 => &JA3,
            Kind::Ja4 => &JA4,
        }
    }
}

/// `digest(input)`, from the memo when this thread has computed it before.
pub fn digest(kind: Kind, input: &str, out: &mut String, digest: impl FnOnce(&str) -> String) {
    if input.len() > MEMO_MAX_INPUT {
        out.push_str(&digest(input));
        return;
    }
    kind.table().with(|t| {
        let Ok(mut t) = t.try_borrow_mut() else {
            out.push_str(&digest(input));
            return;
        };
        if let Some(d) = t.get(input) {
            out.push_str(d);
            return;
        }
        let d = digest(input);
        out.push_str(&d);
        if t.len() >= MEMO_MAX {
            t.clear();
            RESETS.with(|r| r.set(r.get() + 1));
        }
        t.insert(input.into(), d.into_boxed_str());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_and_stays_bounded() {
        let mut calls = 0;
        let mut f = |s: &str| {
            calls += 1;
            s.to_uppercase()
        };
        let mut out = String::new();
        digest(Kind::Ja3, "abc", &mut out, &mut f);
        digest(Kind::Ja3, "abc", &mut out, &mut f);
        assert_eq!(out, "ABCABC");
        assert_eq!(calls, 1, "the second is remembered");
        // another kind is another table
        let mut out = String::new();
        digest(Kind::Ja4, "abc", &mut out, |s| s.to_string());
        assert_eq!(out, "abc");
        let resets = super::resets();
        for i in 0..MEMO_MAX * 2 {
            digest(Kind::Ja3, &i.to_string(), &mut String::new(), |s| s.into());
        }
        assert!(JA3.with(|t| t.borrow().len()) <= MEMO_MAX);
        // filled twice over: started afresh at least once, and counted
        assert!(super::resets() > resets);
        // a long input is digested, not remembered
        let long = "9".repeat(MEMO_MAX_INPUT + 1);
        let before = JA4.with(|t| t.borrow().len());
        let mut out = String::new();
        digest(Kind::Ja4, &long, &mut out, |s| s.len().to_string());
        assert_eq!(out, (MEMO_MAX_INPUT + 1).to_string());
        assert_eq!(JA4.with(|t| t.borrow().len()), before);
    }
}
