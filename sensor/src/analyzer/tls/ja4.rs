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

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use super::hello::{ext, is_grease, ClientHello};

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

fn hash12(list: &str) -> String {
    if list.is_empty() {
        return "000000000000".into();
    }
    let d = Sha256::digest(list.as_bytes());
    let mut s = super::hex(&d);
    s.truncate(12);
    s
}

fn hex_list(vals: &[u16]) -> String {
    let mut s = String::with_capacity(vals.len() * 5);
    for (i, v) in vals.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{v:04x}");
    }
    s
}

/// First and last character of the first ALPN value.
///
/// Alphanumeric ASCII is used as is. A non-ASCII byte becomes `9`, as FoxIO's
/// reference implementation writes it (`tls-non-ascii-alpn.pcapng`: `\xba\xad`
/// gives `99`). Other ASCII punctuation falls back to the spec's rule: first
/// and last hex digit of the value.
fn alpn_code(ch: &ClientHello) -> String {
    let first = &ch.first_alpn;
    if first.is_empty() {
        return "00".into();
    }
    let (a, b) = (first[0], first[first.len() - 1]);
    if a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric() {
        format!("{}{}", a as char, b as char)
    } else if !a.is_ascii() || !b.is_ascii() {
        let c = |x: u8| if x.is_ascii() { x as char } else { '9' };
        format!("{}{}", c(a), c(b))
    } else {
        let h = super::hex(first);
        let h = h.as_bytes();
        format!("{}{}", h[0] as char, h[h.len() - 1] as char)
    }
}

/// The JA4 fingerprint and its raw (unhashed) form `a_b_c` with the lists.
pub fn ja4(ch: &ClientHello, transport: Transport) -> (String, String) {
    let version = ch
        .supported_versions
        .iter()
        .copied()
        .filter(|v| !is_grease(*v))
        .max()
        .unwrap_or(ch.legacy_version);
    let ciphers: Vec<u16> = ch
        .ciphers
        .iter()
        .copied()
        .filter(|c| !is_grease(*c))
        .collect();
    let exts: Vec<u16> = ch
        .extensions
        .iter()
        .copied()
        .filter(|e| !is_grease(*e))
        .collect();
    let proto = match transport {
        Transport::Tcp => 't',
        Transport::Quic => 'q',
        Transport::Dtls => 'd',
    };
    let a = format!(
        "{proto}{}{}{:02}{:02}{}",
        version_code(version),
        if ch.extensions.contains(&ext::SERVER_NAME) {
            'd'
        } else {
            'i'
        },
        ciphers.len().min(99),
        exts.len().min(99),
        alpn_code(ch)
    );
    let mut sorted_ciphers = ciphers;
    sorted_ciphers.sort_unstable();
    let b_raw = hex_list(&sorted_ciphers);
    let mut sorted_exts: Vec<u16> = exts
        .into_iter()
        .filter(|e| *e != ext::SERVER_NAME && *e != ext::ALPN)
        .collect();
    sorted_exts.sort_unstable();
    let mut c_raw = hex_list(&sorted_exts);
    let sigs: Vec<u16> = ch
        .sig_algs
        .iter()
        .copied()
        .filter(|s| !is_grease(*s))
        .collect();
    if !sigs.is_empty() {
        c_raw.push('_');
        c_raw.push_str(&hex_list(&sigs));
    }
    let c = if sorted_exts.is_empty() && sigs.is_empty() {
        "000000000000".into()
    } else {
        hash12(&c_raw)
    };
    (
        format!("{a}_{}_{c}", hash12(&b_raw)),
        format!("{a}_{b_raw}_{c_raw}"),
    )
}
