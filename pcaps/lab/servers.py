#!/usr/bin/env python3
"""Stand-in "internet" servers for the recording lab (run inside its namespace).

- HTTPS on :443, one certificate per name (chosen by SNI) from the lab's fake
  public CA, sent with the CA (a chain of two); TLS 1.3 when the client offers
  it (certificates then encrypted), TLS 1.2 for clients limited to it (--tls12
  forces TLS 1.2 for everyone).
- plain HTTP on :80, answering every Host.

Everything it starts stops when it is killed; it never leaves the namespace.
"""
import argparse
import http.server
import os
import ssl
import sys
import threading


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"<html><head><title>stand-in</title></head><body>ok</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--certs", required=True, help="directory of NAME.pem (cert+key)")
    ap.add_argument("--default", required=True, help="certificate name when SNI is unknown")
    ap.add_argument("--tls12", action="store_true")
    a = ap.parse_args()

    contexts = {}
    for f in os.listdir(a.certs):
        if f.endswith(".pem"):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(os.path.join(a.certs, f))
            if a.tls12:
                ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            contexts[f[:-4]] = ctx
    default = contexts[a.default]

    def pick(sock, name, _ctx):
        if name in contexts:
            sock.context = contexts[name]

    default.sni_callback = pick
    https = Server(("0.0.0.0", 443), Handler)
    https.socket = default.wrap_socket(https.socket, server_side=True, do_handshake_on_connect=False)
    plain = Server(("0.0.0.0", 80), Handler)
    for s in (https, plain):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print("servers ready", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
