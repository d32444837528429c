//! Initial packet protection (RFC 9001 §5; RFC 9369 §3.3 for version 2):
//! keys from the client's first Destination Connection ID, header protection
//! removed with AES-ECB over the sample, the payload opened with
//! AES-128-GCM, the header as associated data.

use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
use aes::Aes128;
use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, Nonce, Tag};
use hkdf::Hkdf;
use sha2::Sha256;

use super::packet::Version;

/// One side's Initial keys.
pub struct Keys {
    aead: Aes128Gcm,
    iv: [u8; 12],
    hp: Aes128,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

/// HKDF-Expand-Label (RFC 8446 §7.1) with an empty context.
fn expand_label(prk: &Hkdf<Sha256>, label: &[u8], out: &mut [u8]) -> Option<()> {
    let mut info = [0u8; 64];
    let n = 6 + label.len();
    let len = u16::try_from(out.len()).ok()?;
    info[..2].copy_from_slice(&len.to_be_bytes());
    info[2] = u8::try_from(n).ok()?;
    info.get_mut(3..9)?.copy_from_slice(b"tls13 ");
    info.get_mut(9..9 + label.len())?.copy_from_slice(label);
    // the context's length byte stays 0
    prk.expand(info.get(..10 + label.len())?, out).ok()
}

/// The side's secret: `client in` or `server in` from the initial secret.
pub fn initial_secret(v: &Version, dcid: &[u8], client: bool) -> Option<[u8; 32]> {
    let (_, initial) = Hkdf::<Sha256>::extract(Some(&v.salt), dcid);
    let mut secret = [0u8; 32];
    let label: &[u8] = if client { b"client in" } else { b"server in" };
    expand_label(&initial, label, &mut secret)?;
    Some(secret)
}

/// The raw key, IV and header-protection key of a side.
pub fn key_iv_hp(v: &Version, secret: &[u8; 32]) -> Option<([u8; 16], [u8; 12], [u8; 16])> {
    let prk = Hkdf::<Sha256>::from_prk(secret).ok()?;
    let (mut key, mut iv, mut hp) = ([0u8; 16], [0u8; 12], [0u8; 16]);
    expand_label(&prk, v.key_label, &mut key)?;
    expand_label(&prk, v.iv_label, &mut iv)?;
    expand_label(&prk, v.hp_label, &mut hp)?;
    Some((key, iv, hp))
}

impl Keys {
    /// A side's Initial keys for a connection whose client chose `dcid`.
    pub fn derive(v: &Version, dcid: &[u8], client: bool) -> Option<Keys> {
        let secret = initial_secret(v, dcid, client)?;
        let (key, iv, hp) = key_iv_hp(v, &secret)?;
        Some(Keys {
            aead: Aes128Gcm::new(GenericArray::from_slice(&key)),
            iv,
            hp: Aes128::new(GenericArray::from_slice(&hp)),
        })
    }

    /// Opens one long-header packet held in `buf` (the packet alone, from its
    /// first byte to its end; changed in place), whose packet number starts
    /// at `pn_at`. Returns the plaintext payload's range in `buf`, or `None`
    /// when the packet is too short or does not open with these keys.
    pub fn open(&self, buf: &mut [u8], pn_at: usize) -> Option<std::ops::Range<usize>> {
        let sample = buf.get(pn_at + 4..pn_at + 20)?;
        let mut mask = GenericArray::clone_from_slice(sample);
        self.hp.encrypt_block(&mut mask);
        buf[0] ^= mask[0] & 0x0f;
        let pn_len = usize::from(buf[0] & 3) + 1;
        let mut pn = 0u64;
        for i in 0..pn_len {
            buf[pn_at + i] ^= mask[1 + i];
            pn = (pn << 8) | u64::from(buf[pn_at + i]);
        }
        let payload_at = pn_at + pn_len;
        let tag_at = buf.len().checked_sub(16).filter(|t| *t >= payload_at)?;
        // the truncated number serves as the full one: an Initial's numbers
        // start at 0 and the sensor reads only the first few
        let mut nonce = self.iv;
        for (i, b) in pn.to_be_bytes().iter().enumerate() {
            nonce[4 + i] ^= b;
        }
        let (header, rest) = buf.split_at_mut(payload_at);
        let (ct, tag) = rest.split_at_mut(tag_at - payload_at);
        let tag = Tag::clone_from_slice(tag);
        self.aead
            .decrypt_in_place_detached(Nonce::from_slice(&nonce), header, ct, &tag)
            .ok()?;
        Some(payload_at..tag_at)
    }

    /// Protects a packet (the inverse of [`open`](Self::open), for tests and
    /// fuzzing seeds): `header` ends with a packet number of the length its
    /// first byte says, starting at `pn_at`; the payload is sealed after it.
    /// `None` if the packet would be too short to sample.
    pub fn seal(&self, header: &[u8], pn_at: usize, payload: &[u8]) -> Option<Vec<u8>> {
        let pn_len = usize::from(header.first()? & 3) + 1;
        if header.len() != pn_at + pn_len || pn_len + payload.len() < 4 {
            return None;
        }
        let mut pn = 0u64;
        for b in &header[pn_at..] {
            pn = (pn << 8) | u64::from(*b);
        }
        let mut nonce = self.iv;
        for (i, b) in pn.to_be_bytes().iter().enumerate() {
            nonce[4 + i] ^= b;
        }
        let mut body = payload.to_vec();
        let tag = self
            .aead
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), header, &mut body)
            .ok()?;
        let mut out = header.to_vec();
        out.extend_from_slice(&body);
        out.extend_from_slice(&tag);
        let mut mask = GenericArray::clone_from_slice(out.get(pn_at + 4..pn_at + 20)?);
        self.hp.encrypt_block(&mut mask);
        out[0] ^= mask[0] & 0x0f;
        for i in 0..pn_len {
            out[pn_at + i] ^= mask[1 + i];
        }
        Some(out)
    }
}

/// A whole Initial packet of version `v` to `dcid` from `scid`, its payload
/// padded to the sample and sealed with the keys `key_dcid` gives the side
/// (for tests, fuzzing and generated captures).
pub fn seal_initial(
    v: &Version,
    dcid: &[u8],
    scid: &[u8],
    key_dcid: &[u8],
    client: bool,
    pn: u32,
    frames: &[u8],
) -> Option<Vec<u8>> {
    let mut payload = frames.to_vec();
    payload.resize(payload.len().max(32), 0); // PADDING up to the sample
    let mut h = vec![0xc3 | (v.initial << 4)];
    h.extend_from_slice(&v.number.to_be_bytes());
    h.push(u8::try_from(dcid.len()).ok()?);
    h.extend_from_slice(dcid);
    h.push(u8::try_from(scid.len()).ok()?);
    h.extend_from_slice(scid);
    h.push(0); // no token
    let len = 4 + payload.len() + 16;
    if len >= 1 << 14 {
        return None;
    }
    h.extend_from_slice(&[0x40 | (len >> 8) as u8, len as u8]);
    let pn_at = h.len();
    h.extend_from_slice(&pn.to_be_bytes());
    Keys::derive(v, key_dcid, client)?.seal(&h, pn_at, &payload)
}

#[cfg(test)]
mod tests {
    use super::super::packet::{extent, LongHeader, V1, V2};
    use super::*;

    const DCID: [u8; 8] = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];

    fn hex(b: &[u8]) -> String {
        crate::analyzer::tls::hex(b)
    }

    #[test]
    fn rfc9001_a1_keys() {
        let v = Version::of(V1).expect("v1");
        let c = initial_secret(v, &DCID, true).expect("client");
        assert_eq!(
            hex(&c),
            "c00cf151ca5be075ed0ebfb5c80323c42d6b7db67881289af4008f1f6c357aea"
        );
        let (key, iv, hp) = key_iv_hp(v, &c).expect("keys");
        assert_eq!(hex(&key), "1f369613dd76d5467730efcbe3b1a22d");
        assert_eq!(hex(&iv), "fa044b2f42a3fd3b46fb255c");
        assert_eq!(hex(&hp), "9f50449e04a0e810283a1e9933adedd2");
        let s = initial_secret(v, &DCID, false).expect("server");
        let (key, iv, hp) = key_iv_hp(v, &s).expect("keys");
        assert_eq!(hex(&key), "cf3a5331653c364c88f0f379b6067e37");
        assert_eq!(hex(&iv), "0ac1493ca1905853b0bba03e");
        assert_eq!(hex(&hp), "c206b8d9b9f0f37644430b490eeaa314");
    }

    #[test]
    fn rfc9369_a1_keys() {
        let v = Version::of(V2).expect("v2");
        let c = initial_secret(v, &DCID, true).expect("client");
        assert_eq!(
            hex(&c),
            "14ec9d6eb9fd7af83bf5a668bc17a7e283766aade7ecd0891f70f9ff7f4bf47b"
        );
        let (key, iv, hp) = key_iv_hp(v, &c).expect("keys");
        assert_eq!(hex(&key), "8b1a0bc121284290a29e0971b5cd045d");
        assert_eq!(hex(&iv), "91f73e2351d8fa91660e909f");
        assert_eq!(hex(&hp), "45b95e15235d6f45a6b19cbcb0294ba9");
        let s = initial_secret(v, &DCID, false).expect("server");
        let (key, iv, hp) = key_iv_hp(v, &s).expect("keys");
        assert_eq!(hex(&key), "82db637861d55e1d011f19ea71d5d2a7");
        assert_eq!(hex(&iv), "dd13c276499c0249d3310652");
        assert_eq!(hex(&hp), "edf6d05c83121201b436e16877593c3a");
    }

    /// Opens a sample packet of the RFCs; returns header and payload.
    fn open(packet: &[u8], client: bool) -> (Vec<u8>, Vec<u8>) {
        let h = LongHeader::parse(packet).expect("header");
        let v = Version::of(h.version).expect("version");
        let (pn_at, end) = extent(packet, &h, h.packet_type() == v.initial).expect("extent");
        assert_eq!(end, packet.len());
        let keys = Keys::derive(v, &DCID, client).expect("keys");
        let mut buf = packet.to_vec();
        let r = keys.open(&mut buf, pn_at).expect("opens");
        (buf[..r.start].to_vec(), buf[r].to_vec())
    }

    #[test]
    fn rfc9001_a2_a3_packets_open() {
        let payload = include_bytes!("fixtures/rfc9001-client-payload.bin");
        let (h, p) = open(include_bytes!("fixtures/rfc9001-client-initial.bin"), true);
        assert_eq!(hex(&h), "c300000001088394c8f03e5157080000449e00000002");
        assert_eq!(&p[..payload.len()], payload);
        assert!(p[payload.len()..].iter().all(|b| *b == 0), "PADDING");
        let (h, p) = open(include_bytes!("fixtures/rfc9001-server-initial.bin"), false);
        assert_eq!(hex(&h), "c1000000010008f067a5502a4262b50040750001");
        assert_eq!(p, include_bytes!("fixtures/rfc9001-server-payload.bin"));
    }

    #[test]
    fn rfc9369_a2_a3_packets_open() {
        let payload = include_bytes!("fixtures/rfc9001-client-payload.bin");
        let (h, p) = open(include_bytes!("fixtures/rfc9369-client-initial.bin"), true);
        assert_eq!(hex(&h), "d36b3343cf088394c8f03e5157080000449e00000002");
        assert_eq!(&p[..payload.len()], payload);
        let (h, p) = open(include_bytes!("fixtures/rfc9369-server-initial.bin"), false);
        assert_eq!(hex(&h), "d16b3343cf0008f067a5502a4262b50040750001");
        assert_eq!(p, include_bytes!("fixtures/rfc9001-server-payload.bin"));
    }

    #[test]
    fn sealing_the_rfc9001_payload_gives_the_rfc9001_packet() {
        let v = Version::of(V1).expect("v1");
        let keys = Keys::derive(v, &DCID, true).expect("keys");
        let mut payload = include_bytes!("fixtures/rfc9001-client-payload.bin").to_vec();
        payload.resize(1200 - 22 - 16, 0);
        let header = [
            0xc3, 0, 0, 0, 1, 8, 0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08, 0, 0, 0x44, 0x9e,
            0, 0, 0, 2,
        ];
        let sealed = keys.seal(&header, 18, &payload).expect("sealed");
        assert_eq!(
            sealed,
            include_bytes!("fixtures/rfc9001-client-initial.bin").to_vec()
        );
    }

    #[test]
    fn a_changed_byte_or_wrong_keys_do_not_open() {
        let packet = include_bytes!("fixtures/rfc9001-client-initial.bin");
        let v = Version::of(V1).expect("v1");
        let keys = Keys::derive(v, &DCID, true).expect("keys");
        let mut bad = packet.to_vec();
        bad[600] ^= 1;
        assert!(keys.open(&mut bad, 18).is_none());
        let other = Keys::derive(v, &[1, 2, 3, 4], true).expect("keys");
        assert!(other.open(&mut packet.to_vec(), 18).is_none());
        for cut in [0, 18, 21, 37, 38] {
            assert!(
                keys.open(&mut packet[..cut].to_vec(), 18).is_none(),
                "{cut}"
            );
        }
    }
}
