//! Fingerprints, and digests of fingerprint strings, already seen.
//!
//! JA3 is an MD5 and JA4 two truncated SHA-256 of strings that the same
//! client software sends again and again: a site has a few hundred distinct
//! client fingerprints, not one per connection. Each worker thread keeps, up
//! to [`HELLO_MEMO_MAX`] or [`MEMO_MAX`] per table, starting afresh when one
//! is full (a flood of
//! distinct hellos costs what it cost before the memo; the memory stays
//! bounded, and each fresh start is counted):
//! - whole fingerprints by the hello fields they read ([`remember`]), which
//!   spares building the strings too;
//! - JA4's digests by string ([`digest`]), for hellos that share one of
//!   JA4's two hashed lists and not the other.
//!
//! The output is the same either way: the memo only spares recomputing a
//! pure function.

use std::cell::RefCell;
use std::sync::Arc;
use std::thread::LocalKey;

use super::ja3::Ja3;

/// JA4 list digests remembered per thread.
pub const MEMO_MAX: usize = 4096;
/// Longer inputs are digested every time: real fingerprints are a few
/// hundred bytes, and a hostile hello of thousands of ciphers must not make
/// the memo hold megabytes (this bounds it at `MEMO_MAX` × 1 KiB ≈ 4 MiB).
pub const MEMO_MAX_INPUT: usize = 1024;
/// Hellos remembered per thread and fingerprint (a site sees a few hundred
/// distinct clients).
pub const HELLO_MEMO_MAX: usize = 1024;

type Table = ahash::AHashMap<Box<str>, Box<str>>;

/// Fingerprints by the hello fields they are computed from (see [`remember`]).
type Prints<V> = ahash::AHashMap<Box<[u16]>, V>;

thread_local! {
    static JA4: RefCell<Table> = RefCell::new(Table::default());
    static JA3_HELLO: RefCell<Prints<Ja3>> = RefCell::new(Prints::default());
    static JA3S_HELLO: RefCell<Prints<Ja3>> = RefCell::new(Prints::default());
    static JA4_HELLO: RefCell<Prints<Arc<str>>> = RefCell::new(Prints::default());
    static RESETS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Longer keys are computed every time: a real hello's key is under 150
/// values. This bounds a table at `HELLO_MEMO_MAX` × (512 bytes of key and
/// a JA3 or JA3S string of at most ≈ 1.5 KiB): ≈ 2 MiB each for JA3 and
/// JA3S, 0.6 MiB for JA4; with the digests' 4 MiB, ≈ 9 MiB per worker at
/// worst, whatever the hellos.
pub const MEMO_MAX_KEY: usize = 256;

/// A hello's fields as a fingerprint reads them, written as a key: each list
/// after its length. Inline up to a size real hellos stay under.
pub type Key = smallvec::SmallVec<[u16; 192]>;

/// Which fingerprint of a whole hello.
#[derive(Clone, Copy)]
pub enum Print {
    Ja3,
    Ja3s,
}

/// `compute()`, from this thread's memo of the JA3 or JA3S of hellos whose
/// fields, as the fingerprint reads them, are `key`.
///
/// Computing a fingerprint builds a string of a few hundred characters and
/// digests it; real traffic repeats a few hundred hellos, so the memo spares
/// both. The key must hold every input of the fingerprint: each
/// fingerprint's module writes its own; a test changes every field alone
/// and requires the computed value, and the corpus test compares the
/// fingerprints of 328 captures with FoxIO's and tshark's.
pub fn remember(print: Print, key: &[u16], compute: impl FnOnce() -> Ja3) -> Ja3 {
    let table = match print {
        Print::Ja3 => &JA3_HELLO,
        Print::Ja3s => &JA3S_HELLO,
    };
    remember_in(table, key, compute)
}

/// [`remember`] for JA4.
pub fn remember_ja4(key: &[u16], compute: impl FnOnce() -> Arc<str>) -> Arc<str> {
    remember_in(&JA4_HELLO, key, compute)
}

fn remember_in<V: Clone + 'static>(
    table: &'static LocalKey<RefCell<Prints<V>>>,
    key: &[u16],
    compute: impl FnOnce() -> V,
) -> V {
    if key.len() > MEMO_MAX_KEY {
        return compute();
    }
    table.with(|t| {
        let Ok(mut t) = t.try_borrow_mut() else {
            return compute();
        };
        if let Some(v) = t.get(key) {
            return v.clone();
        }
        let v = compute();
        if t.len() >= HELLO_MEMO_MAX {
            t.clear();
            RESETS.with(|r| r.set(r.get() + 1));
        }
        t.insert(key.into(), v.clone());
        v
    })
}

/// Appends `list`'s length, then `list`, to `key`. (A length past
/// `u16::MAX` is cut, and its key too long to be remembered.)
pub fn push_list(key: &mut Key, list: impl Iterator<Item = u16>) {
    let at = key.len();
    key.push(0);
    key.extend(list);
    key[at] = (key.len() - at - 1).min(u16::MAX as usize) as u16;
}

/// Times this thread's memos were full and started afresh.
pub fn resets() -> u64 {
    RESETS.with(|r| r.get())
}

/// `digest(input)` for JA4's lists, from the memo when this thread has
/// computed it before.
pub fn digest(input: &str, out: &mut String, digest: impl FnOnce(&str) -> String) {
    if input.len() > MEMO_MAX_INPUT {
        out.push_str(&digest(input));
        return;
    }
    JA4.with(|t| {
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
    use crate::analyzer::tls::hello::{ClientHello, ServerHello};
    use crate::analyzer::tls::{ja3, ja4};
    use smallvec::smallvec;

    fn hello() -> ClientHello {
        ClientHello {
            legacy_version: 0x0303,
            ciphers: smallvec![0x0a0a, 0x1301, 0x1302, 0xc02b],
            extensions: smallvec![0x1a1a, 0, 16, 10, 11, 13, 43, 51],
            sni: Some("a.example".into()),
            alpns: smallvec!["h2".into()],
            first_alpn: smallvec![b'h', b'2'],
            supported_versions: smallvec![0x2a2a, 0x0304, 0x0303],
            groups: smallvec![0x3a3a, 29, 23],
            point_formats: smallvec![0],
            sig_algs: smallvec![0x0403, 0x0804],
            sslv2: false,
            random: [7; 32],
        }
    }

    /// Every field of a hello changed alone, after the original was
    /// remembered: the fingerprints from the memo are the computed ones (a
    /// field a key left out would give the original's).
    #[test]
    fn a_remembered_print_is_the_computed_one_whatever_field_changed() {
        let changes: Vec<fn(&mut ClientHello)> = vec![
            |c| c.legacy_version = 0x0301,
            |c| c.ciphers.push(0x009c),
            // a value moved from one list to the next: the lengths tell
            |c| {
                let last = c.ciphers.pop().unwrap_or_default();
                c.extensions.insert(0, last);
            },
            |c| {
                let first = c.groups.remove(1);
                c.extensions.push(first);
            },
            |c| c.ciphers.swap(1, 2),
            |c| c.ciphers[0] = 0x1a1a, // another GREASE value: the same prints
            |c| c.extensions.push(21),
            |c| c.extensions.swap(2, 3), // JA4 the same, JA3 not
            |c| c.extensions.retain(|e| *e != 0),
            |c| c.sni = None,
            |c| c.alpns.clear(),
            |c| c.first_alpn = smallvec![b'h', b'3'],
            |c| c.first_alpn.clear(),
            |c| c.supported_versions = smallvec![0x0303],
            |c| c.groups.push(24),
            |c| c.groups.swap(1, 2),
            |c| c.point_formats.push(1),
            |c| c.sig_algs.swap(0, 1),
            |c| c.sig_algs.push(0x0201),
            |c| c.sslv2 = true,
            |c| c.random = [9; 32],
        ];
        // the same changes to a TLS 1.2 hello without supported_versions
        // (JA4 then reads legacy_version)
        let bases: [fn() -> ClientHello; 2] = [hello, || ClientHello {
            supported_versions: smallvec![],
            ..hello()
        }];
        let transports = [
            ja4::Transport::Tcp,
            ja4::Transport::Quic,
            ja4::Transport::Dtls,
        ];
        for (b, base) in bases.iter().enumerate() {
            for (i, change) in changes.iter().enumerate() {
                for t in transports {
                    ja4::ja4(&base(), t);
                }
                ja3::ja3(&base());
                let mut c = base();
                change(&mut c);
                assert_eq!(ja3::ja3(&c), ja3::compute_ja3(&c), "base {b} change {i}");
                for t in transports {
                    assert_eq!(
                        &*ja4::ja4(&c, t),
                        ja4::compute(&c, t),
                        "base {b} change {i}"
                    );
                }
            }
        }
        // the QUIC and TCP prints of one hello differ, and are not mixed up
        let h = hello();
        assert_ne!(
            ja4::ja4(&h, ja4::Transport::Tcp),
            ja4::ja4(&h, ja4::Transport::Quic)
        );
        let server = || ServerHello {
            legacy_version: 0x0303,
            selected_version: Some(0x0304),
            cipher: 0x1301,
            extensions: smallvec![43, 51],
            alpn: None,
            retry_request: false,
        };
        let changes: Vec<fn(&mut ServerHello)> = vec![
            |s| s.legacy_version = 0x0301,
            |s| s.selected_version = None,
            |s| s.cipher = 0x1302,
            |s| s.extensions.swap(0, 1),
            |s| s.extensions.push(0x2a2a),
            |s| s.alpn = Some("h2".into()),
            |s| s.retry_request = true,
        ];
        for (i, change) in changes.iter().enumerate() {
            ja3::ja3s(&server());
            let mut s = server();
            change(&mut s);
            assert_eq!(ja3::ja3s(&s), ja3::compute_ja3s(&s), "server change {i}");
        }
    }

    /// A hello too large for the memo is computed, not remembered; many
    /// distinct hellos keep the memo bounded.
    #[test]
    fn a_huge_hello_is_not_remembered() {
        let mut c = hello();
        c.ciphers = (0..2000u16).collect();
        let before = JA3_HELLO.with(|t| t.borrow().len());
        assert_eq!(ja3::ja3(&c), ja3::compute_ja3(&c));
        assert_eq!(JA3_HELLO.with(|t| t.borrow().len()), before);
        // a flood of distinct hellos: the table stays bounded, its fresh
        // starts counted
        let resets = super::resets();
        for i in 0..HELLO_MEMO_MAX as u16 + 100 {
            let mut c = hello();
            c.ciphers.push(i);
            ja3::ja3(&c);
            ja4::ja4(&c, ja4::Transport::Tcp);
        }
        assert!(JA3_HELLO.with(|t| t.borrow().len()) <= HELLO_MEMO_MAX);
        assert!(JA4_HELLO.with(|t| t.borrow().len()) <= HELLO_MEMO_MAX);
        assert!(super::resets() >= resets + 2);
    }

    #[test]
    fn remembers_and_stays_bounded() {
        let mut calls = 0;
        let mut f = |s: &str| {
            calls += 1;
            s.to_uppercase()
        };
        let mut out = String::new();
        digest("abc", &mut out, &mut f);
        digest("abc", &mut out, &mut f);
        assert_eq!(out, "ABCABC");
        assert_eq!(calls, 1, "the second is remembered");
        let resets = super::resets();
        for i in 0..MEMO_MAX * 2 {
            digest(&i.to_string(), &mut String::new(), |s| s.into());
        }
        assert!(JA4.with(|t| t.borrow().len()) <= MEMO_MAX);
        // filled twice over: started afresh at least once, and counted
        assert!(super::resets() > resets);
        // a long input is digested, not remembered
        let long = "9".repeat(MEMO_MAX_INPUT + 1);
        let before = JA4.with(|t| t.borrow().len());
        let mut out = String::new();
        digest(&long, &mut out, |s| s.len().to_string());
        assert_eq!(out, (MEMO_MAX_INPUT + 1).to_string());
        assert_eq!(JA4.with(|t| t.borrow().len()), before);
    }
}
