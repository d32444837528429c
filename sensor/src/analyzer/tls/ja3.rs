//! JA3 and JA3S (Salesforce): MD5 of the decimal hello fields, GREASE excluded.

use std::sync::Arc;

use md5::{Digest, Md5};

use super::hello::{without_grease, ClientHello, ServerHello};
use super::memo::{push_list, remember, Key, Print};

/// A fingerprint: the string and its MD5 in lower-case hex. Shared: the
/// memo, the session and the events of a fingerprint seen again hold the
/// same text (a clone is a count, not a copy).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Ja3 {
    pub hash: Arc<str>,
    pub string: Arc<str>,
}

fn join(out: &mut String, vals: impl Iterator<Item = u32>) {
    let mut first = true;
    for v in vals {
        if !first {
            out.push('-');
        }
        first = false;
        push_decimal(out, v);
    }
}

/// Appends `v` in decimal (no `fmt` machinery: this runs for every hello).
fn push_decimal(out: &mut String, v: u32) {
    out.push_str(itoa::Buffer::new().format(v));
}

/// (A JA3 string is one to one with its hello-memo key: a string memo
/// would never hit where [`remember`] missed.)
fn hashed(string: String) -> Ja3 {
    let hash = super::hex(&Md5::digest(string.as_bytes()));
    Ja3 {
        hash: hash.into(),
        string: string.into(),
    }
}

/// Joins the non-GREASE values of `list` with dashes.
fn join_u16(out: &mut String, list: &[u16]) {
    join(out, without_grease(list).map(u32::from));
}

/// `SSLVersion,Ciphers,Extensions,EllipticCurves,EllipticCurvePointFormats`
/// (from this thread's memo when a hello with the same fields was seen).
pub fn ja3(ch: &ClientHello) -> Ja3 {
    let mut key = Key::new();
    key.push(ch.legacy_version);
    for list in [&ch.ciphers[..], &ch.extensions[..], &ch.groups[..]] {
        push_list(&mut key, without_grease(list));
    }
    push_list(&mut key, ch.point_formats.iter().map(|&p| u16::from(p)));
    remember(Print::Ja3, &key, || compute_ja3(ch))
}

pub(super) fn compute_ja3(ch: &ClientHello) -> Ja3 {
    let mut s = String::with_capacity(256);
    push_decimal(&mut s, ch.legacy_version as u32);
    s.push(',');
    for list in [&ch.ciphers[..], &ch.extensions[..], &ch.groups[..]] {
        join_u16(&mut s, list);
        s.push(',');
    }
    join(&mut s, ch.point_formats.iter().map(|c| *c as u32));
    hashed(s)
}

/// `SSLVersion,Cipher,SSLExtension` (from this thread's memo when a hello
/// with the same fields was seen).
pub fn ja3s(sh: &ServerHello) -> Ja3 {
    let mut key = Key::new();
    key.extend([sh.legacy_version, sh.cipher]);
    push_list(&mut key, without_grease(&sh.extensions));
    remember(Print::Ja3s, &key, || compute_ja3s(sh))
}

pub(super) fn compute_ja3s(sh: &ServerHello) -> Ja3 {
    let mut s = String::with_capacity(64);
    push_decimal(&mut s, sh.legacy_version as u32);
    s.push(',');
    push_decimal(&mut s, sh.cipher as u32);
    s.push(',');
    join_u16(&mut s, &sh.extensions);
    hashed(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ja3_of_known_hello() {
        // arkime_synthetic.pcap frame 456 as tshark reports it
        let ch = ClientHello {
            legacy_version: 0x0303,
            ciphers: smallvec::smallvec![0x1301, 0x1302, 0x0a0a],
            extensions: smallvec::smallvec![0],
            ..Default::default()
        };
        let j = ja3(&ch);
        assert_eq!(&*j.string, "771,4865-4866,0,,");
        assert_eq!(&*j.hash, "4778b86cd2e167d9eded2c8eba0b72d4");
    }
}
