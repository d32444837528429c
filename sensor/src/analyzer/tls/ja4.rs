//! JA4 client fingerprint (FoxIO, BSD-3-Clause licence: `LICENSE-JA4`).
//!
//! `JA4 = a_b_c` where
//! - `a` = protocol (`t` TCP, `q` QUIC, `d` DTLS), version (`13` … `s2`, `00`),
//!   `d`/`i` (SNI present or not), 2-digit cipher count, 2-digit extension count
//!   (GREASE excluded, capped at 99), first and last character of the first ALPN
//!   value (`00` if none; its hex digits if either character is not alphanumeric);
//! - `b` = first 12 hex of SHA-256 over the sorted cipher list (4-hex, commas);
//! - `c` = first 12 hex of SHA-256 over the sorted extension list without SNI and
//!   ALPN, then `_` and the signature algorithms in wire order.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::hello::{ext, without_grease, ClientHello};
use super::memo::{push_list, remember_ja4, Key};

#[derive(Debug, Clone, Copy)]
pub enum Transport {
    Tcp,
    Quic,
    Dtls,
}

fn version_code(v: u16) -> &'static str {
    match v {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    }
}

/// First 12 hex digits of the SHA-256 of `list`, appended to `out`.
fn hash12(out: &mut String, list: &str) {
    if list.is_empty() {
        out.push_str("000000000000");
        return;
    }
    super::memo::digest(list, out, |l| {
        super::hex(&Sha256::digest(l.as_bytes())[..6])
    });
}

/// Appends `vals` as 4-digit lower-case hex, comma-separated.
fn hex_list(out: &mut String, vals: &[u16]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, v) in vals.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for shift in [12, 8, 4, 0] {
            out.push(DIGITS[((v >> shift) & 15) as usize] as char);
        }
    }
}

/// First and last character of the first ALPN value.
///
/// Alphanumeric ASCII is used as is. A non-ASCII byte becomes `9`, as FoxIO's
/// reference implementation writes it (`tls-non-ascii-alpn.pcapng`: `\xba\xad`
/// gives `99`). Other ASCII punctuation falls back to the spec's rule: first
/// and last hex digit of the value.
fn alpn_code(out: &mut String, ch: &ClientHello) {
    let first = &ch.first_alpn;
    if first.is_empty() {
        out.push_str("00");
        return;
    }
    let (a, b) = (first[0], first[first.len() - 1]);
    if a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric() {
        out.push(a as char);
        out.push(b as char);
    } else if !a.is_ascii() || !b.is_ascii() {
        let c = |x: u8| if x.is_ascii() { x as char } else { '9' };
        out.push(c(a));
        out.push(c(b));
    } else {
        let h = super::hex(first);
        let h = h.as_bytes();
        out.push(h[0] as char);
        out.push(h[h.len() - 1] as char);
    }
}

/// The JA4 fingerprint (from this thread's memo when a hello with the same
/// fields was seen).
///
/// The key holds the lists JA4 sorts sorted, so that hellos whose order
/// alone differs (a browser that shuffles its extensions) share it.
pub fn ja4(ch: &ClientHello, transport: Transport) -> Arc<str> {
    let mut key = Key::new();
    key.extend([transport as u16, ch.legacy_version]);
    push_list(&mut key, without_grease(&ch.supported_versions));
    for list in [&ch.ciphers[..], &ch.extensions[..]] {
        let at = key.len() + 1;
        push_list(&mut key, without_grease(list));
        key[at..].sort_unstable();
    }
    push_list(&mut key, without_grease(&ch.sig_algs));
    push_list(&mut key, ch.first_alpn.iter().map(|&b| u16::from(b)));
    remember_ja4(&key, || compute(ch, transport).into())
}

pub(super) fn compute(ch: &ClientHello, transport: Transport) -> String {
    let mut parts = Parts::of(ch, transport);
    let mut out = String::with_capacity(36);
    out.push_str(&parts.a);
    out.push('_');
    parts.scratch.clear();
    hex_list(&mut parts.scratch, &parts.ciphers);
    hash12(&mut out, &parts.scratch);
    out.push('_');
    if parts.exts.is_empty() && parts.sigs.is_empty() {
        out.push_str("000000000000");
    } else {
        parts.c_raw();
        hash12(&mut out, &parts.scratch);
    }
    out
}

/// The raw (unhashed) form `a_b_c`, with the lists (JA4_r).
pub fn ja4_raw(ch: &ClientHello, transport: Transport) -> String {
    let mut parts = Parts::of(ch, transport);
    let mut out = parts.a.clone();
    out.push('_');
    hex_list(&mut out, &parts.ciphers);
    out.push('_');
    parts.c_raw();
    out.push_str(&parts.scratch);
    out
}

/// The three parts before hashing: `a`, sorted ciphers, sorted extensions
/// (without SNI and ALPN), signature algorithms in wire order.
/// A list of code points: inline up to a size real hellos stay under.
type Codes = smallvec::SmallVec<[u16; 64]>;

struct Parts {
    a: String,
    ciphers: Codes,
    exts: Codes,
    sigs: Codes,
    scratch: String,
}

impl Parts {
    /// `c`'s unhashed string into `scratch`.
    fn c_raw(&mut self) {
        self.scratch.clear();
        hex_list(&mut self.scratch, &self.exts);
        if !self.sigs.is_empty() {
            self.scratch.push('_');
            hex_list(&mut self.scratch, &self.sigs);
        }
    }

    fn of(ch: &ClientHello, transport: Transport) -> Parts {
        let version = without_grease(&ch.supported_versions)
            .max()
            .unwrap_or(ch.legacy_version);
        let ciphers: Codes = without_grease(&ch.ciphers).collect();
        let exts: Codes = without_grease(&ch.extensions).collect();
        let proto = match transport {
            Transport::Tcp => 't',
            Transport::Quic => 'q',
            Transport::Dtls => 'd',
        };
        // `a`: written by hand (this runs on every hello)
        let mut a = String::with_capacity(10);
        a.push(proto);
        a.push_str(version_code(version));
        a.push(if ch.extensions.contains(&ext::SERVER_NAME) {
            'd'
        } else {
            'i'
        });
        for n in [ciphers.len().min(99), exts.len().min(99)] {
            a.push((b'0' + (n / 10) as u8) as char);
            a.push((b'0' + (n % 10) as u8) as char);
        }
        alpn_code(&mut a, ch);
        let mut sorted_ciphers = ciphers;
        sorted_ciphers.sort_unstable();
        let mut sorted_exts: Codes = exts
            .into_iter()
            .filter(|e| *e != ext::SERVER_NAME && *e != ext::ALPN)
            .collect();
        sorted_exts.sort_unstable();
        let sigs: Codes = without_grease(&ch.sig_algs).collect();
        Parts {
            a,
            ciphers: sorted_ciphers,
            exts: sorted_exts,
            sigs,
            scratch: String::with_capacity(256),
        }
    }
}
