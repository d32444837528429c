#!/usr/bin/env python3
"""QUIC client and server (aioquic) for the recording lab (run inside its namespaces).

server  listens on --listen ADDR:PORT with the ALPNs of --alpn and one
        certificate per name (--cert NAME=FILE.pem, cert+chain+key), chosen by
        the ClientHello's server name (the first one when the name is unknown).
        For h3 it answers every request 200 with a short HTML body; for any
        other ALPN (argotunnel) it answers each stream's bytes with "ok" and
        ends the stream.
client  connects to --connect HOST[:PORT] (HOST is resolved with the system
        resolver, IPv4 only: one DNS A query) with --sni, --alpn and the QUIC
        options given; for h3 it makes one HTTP/3 GET /, otherwise it completes
        the handshake, opens one bidirectional stream, sends a few bytes, reads
        the answer and closes the connection.

Both stop by themselves (client: after its exchange or --timeout; server: when
killed). Nothing here leaves the namespace it is run in.
"""
import argparse
import asyncio
import socket
import ssl
import sys

from aioquic import tls
from aioquic.asyncio import QuicConnectionProtocol, connect, serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted, ProtocolNegotiated, StreamDataReceived
from aioquic.quic.packet import QuicProtocolVersion
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

VERSIONS = {"1": QuicProtocolVersion.VERSION_1, "2": QuicProtocolVersion.VERSION_2}
BODY = b"<html><head><title>stand-in</title></head><body>ok</body></html>"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# --- server ---------------------------------------------------------------

def load_pem(path):
    data = open(path, "rb").read()
    certs = x509.load_pem_x509_certificates(data)
    key = load_pem_private_key(data, password=None)
    return certs[0], certs[1:], key


def select_certificate_by_sni(certs, default):
    """aioquic has one certificate per server; pick it from the ClientHello's
    server name instead (peek at the ClientHello, then let aioquic read it)."""
    original = tls.Context._server_handle_hello

    def handle_hello(self, input_buf, initial_buf, handshake_buf):
        pos = input_buf.tell()
        name = tls.pull_client_hello(input_buf).server_name
        input_buf.seek(pos)
        self.certificate, self.certificate_chain, self.certificate_private_key = certs.get(name, default)
        log(f"client hello: sni={name!r}")
        return original(self, input_buf, initial_buf, handshake_buf)

    tls.Context._server_handle_hello = handle_hello


class ServerProtocol(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._h3 = None

    def quic_event_received(self, event):
        if isinstance(event, ProtocolNegotiated):
            log(f"alpn={event.alpn_protocol!r} version={self._quic._version:#x}")
            if event.alpn_protocol in H3_ALPN:
                self._h3 = H3Connection(self._quic)
        elif isinstance(event, StreamDataReceived) and self._h3 is None:
            if event.end_stream:
                self._quic.send_stream_data(event.stream_id, b"ok", end_stream=True)
        if self._h3 is not None:
            for ev in self._h3.handle_event(event):
                if isinstance(ev, HeadersReceived):
                    self._h3.send_headers(ev.stream_id, [
                        (b":status", b"200"), (b"server", b"stand-in"),
                        (b"content-type", b"text/html"), (b"content-length", str(len(BODY)).encode()),
                    ])
                    self._h3.send_data(ev.stream_id, BODY, end_stream=True)
        self.transmit()


async def run_server(a):
    certs = {}
    for spec in a.cert:
        name, _, path = spec.partition("=")
        certs[name] = load_pem(path)
    default = certs[a.cert[0].partition("=")[0]]
    select_certificate_by_sni(certs, default)
    cfg = QuicConfiguration(is_client=False, alpn_protocols=a.alpn, idle_timeout=a.idle_timeout)
    cfg.certificate, cfg.certificate_chain, cfg.private_key = default
    host, _, port = a.listen.rpartition(":")
    await serve(host, int(port), configuration=cfg, create_protocol=ServerProtocol)
    log(f"quic server ready on {a.listen} alpn={a.alpn}")
    await asyncio.Event().wait()


# --- client ---------------------------------------------------------------

class ClientProtocol(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = None
        self.done = asyncio.get_running_loop().create_future()
        self.reply = b""

    def quic_event_received(self, event):
        if isinstance(event, ProtocolNegotiated) and event.alpn_protocol in H3_ALPN:
            self.h3 = H3Connection(self._quic)
        elif isinstance(event, HandshakeCompleted):
            log(f"handshake done: alpn={event.alpn_protocol!r} version={self._quic._version:#x}")
        elif isinstance(event, ConnectionTerminated) and not self.done.done():
            self.done.set_exception(ConnectionError(f"terminated: {event.reason_phrase}"))
        if self.h3 is not None:
            for ev in self.h3.handle_event(event):
                if isinstance(ev, HeadersReceived):
                    log(f"response headers: {ev.headers}")
                if isinstance(ev, DataReceived):
                    self.reply += ev.data
                if getattr(ev, "stream_ended", False) and not self.done.done():
                    self.done.set_result(self.reply)
        elif isinstance(event, StreamDataReceived):
            self.reply += event.data
            if event.end_stream and not self.done.done():
                self.done.set_result(self.reply)


async def run_client(a):
    host, _, port = a.connect.partition(":")
    port = int(port or 443)
    # The system resolver (the namespace's resolv.conf), IPv4 only: an A query
    # unless HOST is already an address.
    info = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
    addr = info[0][4][0]
    log(f"{host} -> {addr}")
    cfg = QuicConfiguration(
        is_client=True,
        alpn_protocols=a.alpn,
        server_name=a.sni,
        supported_versions=[VERSIONS[v] for v in a.versions.split(",")],
        quantum_readiness_test=a.quantum_readiness_test,
        max_datagram_size=a.max_datagram_size,
        idle_timeout=a.idle_timeout,
    )
    if a.cafile:
        cfg.load_verify_locations(a.cafile)
    else:
        cfg.verify_mode = ssl.CERT_NONE
    async with connect(addr, port, configuration=cfg, create_protocol=ClientProtocol,
                       wait_connected=True, local_port=0) as client:
        if client.h3 is not None:
            sid = client._quic.get_next_available_stream_id()
            client.h3.send_headers(sid, [
                (b":method", b"GET"), (b":scheme", b"https"), (b":authority", a.sni.encode()),
                (b":path", b"/"), (b"user-agent", b"lab-quic-peer"), (b"accept", b"*/*"),
            ], end_stream=True)
        else:
            sid = client._quic.get_next_available_stream_id()
            client._quic.send_stream_data(sid, a.payload.encode(), end_stream=True)
        client.transmit()
        reply = await asyncio.wait_for(client.done, a.timeout)
        log(f"reply: {reply[:80]!r}")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("--listen", required=True, help="ADDR:PORT")
    s.add_argument("--alpn", required=True, type=lambda x: x.split(","), help="comma-separated")
    s.add_argument("--cert", required=True, action="append", help="NAME=FILE.pem (cert, chain, key); first is default")
    s.add_argument("--idle-timeout", type=float, default=30.0)
    c = sub.add_parser("client")
    c.add_argument("--connect", required=True, help="HOST[:PORT] (resolved by DNS unless an address)")
    c.add_argument("--sni", required=True)
    c.add_argument("--alpn", required=True, type=lambda x: x.split(","), help="comma-separated")
    c.add_argument("--versions", default="1", help="QUIC versions, first is used: 1, 2 or 1,2")
    c.add_argument("--quantum-readiness-test", action="store_true",
                   help="aioquic's 1200-byte transport parameter: a ClientHello over two Initials")
    c.add_argument("--max-datagram-size", type=int, default=1200)
    c.add_argument("--idle-timeout", type=float, default=30.0)
    c.add_argument("--cafile", help="verify the server against this CA (else no verification)")
    c.add_argument("--payload", default="lab-stream-hello\n", help="bytes sent on the stream (non-h3)")
    c.add_argument("--timeout", type=float, default=10.0)
    a = ap.parse_args()
    try:
        asyncio.run(run_server(a) if a.mode == "server" else asyncio.wait_for(run_client(a), a.timeout + 5))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
