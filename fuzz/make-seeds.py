#!/usr/bin/env python3
"""Writes fuzz/corpus/<target>/ seeds from the project's own captures in pcaps/.

Run from the repository root: python3 fuzz/make-seeds.py
Seeds are small and committed; `cargo test` replays them (sensor/tests/fuzz_corpus.rs).
"""
import hashlib
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PCAPS = os.path.join(ROOT, "pcaps")
OUT = os.path.join(ROOT, "fuzz", "corpus")


def write(target, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def pcap_frames(data):
    magic = data[:4]
    if magic not in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        return None, []
    linktype = struct.unpack("<I", data[20:24])[0]
    frames, at = [], 24
    while at + 16 <= len(data):
        caplen = struct.unpack("<I", data[at + 8:at + 12])[0]
        frames.append(data[at + 16:at + 16 + caplen])
        at += 16 + caplen
    return linktype, frames


def l4(frame, linktype):
    """(proto, src, sport, dst, dport, payload) of an untunnelled frame."""
    if linktype == 1:
        et, off = struct.unpack(">H", frame[12:14])[0], 14
        if et == 0x8100:
            et, off = struct.unpack(">H", frame[16:18])[0], 18
        ip = frame[off:]
    else:
        ip = frame
    if ip[0] >> 4 == 4:
        ihl = (ip[0] & 15) * 4
        proto, src, dst, rest = ip[9], ip[12:16], ip[16:20], ip[ihl:]
        if struct.unpack(">H", ip[6:8])[0] & 0x3fff:
            return None
    else:
        proto, src, dst, rest = ip[6], ip[8:24], ip[24:40], ip[40:]
    if proto == 6:
        hl = (rest[12] >> 4) * 4
        return proto, src, rest[0:2], dst, rest[2:4], rest[hl:]
    if proto == 17:
        return proto, src, rest[0:2], dst, rest[2:4], rest[8:]
    return None


for name in sorted(os.listdir(PCAPS)):
    if not name.endswith((".pcap", ".pcapng")):
        continue
    data = open(os.path.join(PCAPS, name), "rb").read()
    write("capture", data)
    write("capture", data[: len(data) * 2 // 3])
    linktype, frames = pcap_frames(data)
    streams = {}
    for fr in frames:
        write("packet", bytes([0 if linktype == 1 else 1]) + fr)
        r = l4(fr, linktype)
        if not r:
            continue
        proto, src, sport, dst, dport, payload = r
        if not payload:
            continue
        if proto == 17 and 53 in (struct.unpack(">H", sport)[0], struct.unpack(">H", dport)[0]):
            write("dns", payload)
        if proto == 6:
            if payload[:4] in (b"GET ", b"CONN", b"HTTP"):
                write("http", payload)
            key = tuple(sorted([(src, sport), (dst, dport)]))
            streams.setdefault(key, {}).setdefault((src, sport), bytearray()).extend(payload)
    for sides in streams.values():
        parts = list(sides.values())
        if len(parts) == 2:
            c, s = (parts[0], parts[1]) if parts[0][:1] == b"\x16" and parts[0][5:6] == b"\x01" else (parts[1], parts[0])
            total = len(c) + len(s)
            split = min(255, len(c) * 256 // max(total, 1) + 1)
            write("tls", bytes([split]) + bytes(c) + bytes(s))
            # the server flight alone holds the certificate chain
            at = s.find(b"\x0b\x00")
            if at >= 0:
                ln = int.from_bytes(s[at + 7:at + 10], "big")
                der = bytes(s[at + 10:at + 10 + ln])
                if der[:1] == b"\x30":
                    write("certificate", der)

# QUIC: each UDP flow of the QUIC recordings as records (flag: bit 0 from the
# server; length; datagram), the RFC 9001/9369 sample packets, and plaintext
# records (flag bit 1) the harness seals: the RFC ClientHello in CRYPTO
# frames out of order over two packets, and the RFC ServerHello payload.
def rec(flags, data):
    return bytes([flags]) + struct.pack(">H", len(data)) + data


LAB = os.path.join(PCAPS, "lab")
for name in sorted(os.listdir(LAB)):
    if "quic" not in name and "http3" not in name:
        continue
    linktype, frames = pcap_frames(open(os.path.join(LAB, name), "rb").read())
    flows = {}
    for fr in frames:
        r = l4(fr, linktype)
        if not r or r[0] != 17 or 53 in (struct.unpack(">H", r[2])[0], struct.unpack(">H", r[4])[0]):
            continue
        proto, src, sport, dst, dport, payload = r
        key = tuple(sorted([(src, sport), (dst, dport)]))
        client = flows.setdefault(key, [(src, sport), b""])
        client[1] += rec(0 if (src, sport) == client[0] else 1, payload)
    for _, seed in flows.values():
        write("quic", seed)
FIX = os.path.join(ROOT, "sensor", "src", "analyzer", "quic", "fixtures")
fx = lambda n: open(os.path.join(FIX, n), "rb").read()
write("quic", rec(0, fx("rfc9001-client-initial.bin")) + rec(1, fx("rfc9001-server-initial.bin")))
write("quic", rec(0, fx("rfc9369-client-initial.bin")) + rec(1, fx("rfc9369-server-initial.bin")))
ch = fx("rfc9001-client-payload.bin")[4:]


def crypto(off, data):
    return bytes([0x06, 0x40 | off >> 8, off & 255, 0x40 | len(data) >> 8, len(data) & 255]) + data


write("quic", rec(2, crypto(150, ch[150:]) + b"\x01" + crypto(0, ch[:80]))
      + rec(2, crypto(80, ch[80:150]) + b"\x02\x00\x00\x00\x00")
      + rec(3, fx("rfc9001-server-payload.bin")))
write("quic", rec(6, crypto(0, ch)) + rec(7, fx("rfc9001-server-payload.bin")) + rec(18, crypto(0, ch[:100])))
print("seeds written to", OUT)
