#!/usr/bin/env bash
# Records QUIC traffic in a lab of network namespaces and writes the QUIC
# captures of pcaps/lab/. Run as root from the repository root:
#   pcaps/lab/record-quic.sh
#
# Tools: aioquic 1.7.2 from PyPI (pcaps/lab/quic_peer.py: QUIC/HTTP/3 client
# and server), openssl s_client/s_server, dig, dnsmasq, tcpdump. Same topology
# as record.sh (one bridge, the "span port"; a production host 10.1.0.10, a
# development host 10.20.0.10, a fake "internet" in documentation ranges with a
# DNS server), but its own namespaces (swquic-*), so the two scripts never touch
# each other's. cloudflared itself is not run (its binary is not installable
# here): lab-cloudflared-quic.pcap imitates its edge discovery, its QUIC
# handshake and its HTTP/2 fallback with cloudflared's names, ALPN and port.
# All traffic stays inside namespaces this script creates; it deletes them,
# and stops everything it started, on exit.
set -euo pipefail
cd "$(dirname "$0")"
LAB=$PWD
W=$LAB/.work
mkdir -p "$W"
export DEBIAN_FRONTEND=noninteractive
AIOQUIC=1.7.2

need() { command -v "$1" >/dev/null 2>&1; }
if ! need dnsmasq || ! need tcpdump || ! need openssl || ! need dig; then
  apt-get update -qq </dev/null
  apt-get install -y -qq dnsmasq-base tcpdump openssl iproute2 bind9-dnsutils </dev/null >/dev/null
fi
V=$W/venv-quic
"$V/bin/python" -c "import aioquic, sys; sys.exit(aioquic.__version__ != '$AIOQUIC')" 2>/dev/null ||
  { python3 -m venv "$V"; "$V/bin/pip" install -q "aioquic==$AIOQUIC"; }
PEER="$V/bin/python $LAB/quic_peer.py"

P=swquic
HOSTS="inet prod dev"
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "${PIDS[@]:-}"; do kill -9 "$p" 2>/dev/null || true; done
  for h in hub $HOSTS; do ip netns del "$P-$h" 2>/dev/null || true; rm -rf "/etc/netns/$P-$h"; done
}
trap cleanup EXIT
cleanup
nsx() { local h=$1; shift; ip netns exec "$P-$h" "$@"; }
bg() { local h=$1; shift; ip netns exec "$P-$h" "$@" >>"$W/quic-$h.log" 2>&1 & PIDS+=($!); }

# --- network: one bridge (the "span port"), three hosts on it ----------------
ip netns add "$P-hub"
nsx hub ip link add br0 type bridge
nsx hub ip link set br0 up
nsx hub ip link set lo up
declare -A ADDR=(
  [inet]="198.51.100.10/24 198.51.100.20/24 198.51.100.53/24 203.0.113.10/24"
  [prod]="10.1.0.10/16" [dev]="10.20.0.10/16"
)
for h in $HOSTS; do
  ip netns add "$P-$h"
  ip link add "q-$h" type veth peer name eth0 netns "$P-$h"
  ip link set "q-$h" netns "$P-hub"
  nsx hub ip link set "q-$h" master br0 up
  nsx "$h" ip link set lo up
  nsx "$h" ip link set eth0 up
  for a in ${ADDR[$h]}; do nsx "$h" ip addr add "$a" dev eth0; done
  # one flat L2: every destination is on-link (no router needed)
  nsx "$h" ip route add default dev eth0
  mkdir -p "/etc/netns/$P-$h"
  echo "nameserver 198.51.100.53" >"/etc/netns/$P-$h/resolv.conf"
  printf '127.0.0.1 localhost\n' >"/etc/netns/$P-$h/hosts"
done

# --- certificates: a fake public CA for the stand-in servers ------------------
# (its own directory: record.sh makes .work/certs in one go when ca.pem is missing)
C=$W/certs-quic
mkdir -p "$C"
[ -f "$C/ca.pem" ] ||
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Lab Public Root CA/O=Lab Trust Services" \
    -keyout "$C/ca.key" -out "$C/ca.pem" 2>/dev/null
for n in quic.cftunnel.com h2.cftunnel.com demo.trycloudflare.com abc123.ngrok-free.app www.example.com; do
  [ -f "$C/$n.pem" ] && continue
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$n" -keyout "$C/$n.key" -out "$C/$n.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n' "$n" >"$C/$n.ext"
  openssl x509 -req -in "$C/$n.csr" -CA "$C/ca.pem" -CAkey "$C/ca.key" -CAcreateserial -days 365 \
    -extfile "$C/$n.ext" -out "$C/$n.crt" 2>/dev/null
  cat "$C/$n.crt" "$C/ca.pem" "$C/$n.key" >"$C/$n.pem"
done

# --- the "internet": DNS, cloudflared's edge (UDP and TCP 7844), an HTTP/3 site
# The SRV record and the edge name are cloudflared's (edge discovery); the
# trycloudflare/ngrok/example names are visited over HTTP/3.
bg inet dnsmasq --no-daemon --no-resolv --no-hosts --bind-interfaces --listen-address=198.51.100.53 \
  --pid-file="$W/dnsmasq-quic.pid" --log-queries \
  --srv-host=_v2-origintunneld._tcp.argotunnel.com,region1.v2.argotunnel.com,7844 \
  --host-record=region1.v2.argotunnel.com,198.51.100.20 \
  --host-record=demo.trycloudflare.com,203.0.113.10 --host-record=abc123.ngrok-free.app,203.0.113.10 \
  --host-record=www.example.com,203.0.113.10
bg inet $PEER server --listen 198.51.100.20:7844 --alpn argotunnel --idle-timeout 5 \
  --cert "quic.cftunnel.com=$C/quic.cftunnel.com.pem"
bg inet openssl s_server -accept 198.51.100.20:7844 -alpn h2 -www -quiet \
  -cert "$C/h2.cftunnel.com.crt" -key "$C/h2.cftunnel.com.key" -cert_chain "$C/ca.pem"
bg inet $PEER server --listen 203.0.113.10:443 --alpn h3 --cert "www.example.com=$C/www.example.com.pem" \
  --cert "demo.trycloudflare.com=$C/demo.trycloudflare.com.pem" --cert "abc123.ngrok-free.app=$C/abc123.ngrok-free.app.pem"
sleep 2

# --- recording helpers -----------------------------------------------------
CAP_PID=
start() {
  ip netns exec "$P-hub" tcpdump -i br0 -s 0 -U -w "$W/$1.pcap" >"$W/tcpdump-quic.log" 2>&1 &
  CAP_PID=$!
  PIDS+=("$CAP_PID")
  sleep 1
}
stop() {
  sleep 1
  kill -TERM "$CAP_PID"
  wait "$CAP_PID" 2>/dev/null || true
  cp "$W/$1.pcap" "$LAB/$1.pcap"
  echo "recorded $1.pcap ($(stat -c %s "$LAB/$1.pcap") bytes)"
}
DIG="dig +nocookie +tries=1 +time=3"
# a client that must succeed: its output goes to the host's log
run() {
  local h=$1; shift
  nsx "$h" "$@" >>"$W/quic-$h.log" 2>&1 || { echo "failed on $h: $*" >&2; tail -5 "$W/quic-$h.log" >&2; exit 1; }
}

# --- an imitated cloudflared connector on the production host ----------------
# Edge discovery (SRV, then the target's address), QUIC to UDP 7844 with
# cloudflared's SNI and ALPN, a ClientHello over two Initial packets (aioquic's
# 1200-byte quantum-readiness transport parameter stands in for the
# X25519MLKEM768 key share of quic-go), then the HTTP/2 fallback on TCP 7844.
start lab-cloudflared-quic
read -r EDGE_PORT EDGE_NAME < <(nsx prod $DIG +short SRV _v2-origintunneld._tcp.argotunnel.com | awk 'NR==1 {print $3, $4}')
EDGE_IP=$(nsx prod $DIG +short A "${EDGE_NAME%.}" | head -1)
echo "edge: ${EDGE_NAME%.} $EDGE_IP port $EDGE_PORT"
run prod $PEER client --connect "$EDGE_IP:$EDGE_PORT" --sni quic.cftunnel.com --alpn argotunnel \
  --quantum-readiness-test --max-datagram-size 1232 --idle-timeout 5 --cafile "$C/ca.pem"
run prod timeout 10 openssl s_client -connect "$EDGE_IP:$EDGE_PORT" -servername h2.cftunnel.com -alpn h2 \
  -CAfile "$C/ca.pem" -verify_return_error -brief </dev/null
stop lab-cloudflared-quic

# --- HTTP/3 visits to tunnel endpoints from the development host -------------
start lab-http3-endpoints
run dev $PEER client --connect demo.trycloudflare.com:443 --sni demo.trycloudflare.com --alpn h3 \
  --versions 1 --cafile "$C/ca.pem"
run dev $PEER client --connect abc123.ngrok-free.app:443 --sni abc123.ngrok-free.app --alpn h3 \
  --versions 2 --cafile "$C/ca.pem"
stop lab-http3-endpoints

# --- a benign HTTP/3 visit from the development host ---------------------------
start lab-http3-benign
run dev $PEER client --connect www.example.com:443 --sni www.example.com --alpn h3 \
  --versions 1 --cafile "$C/ca.pem"
stop lab-http3-benign
echo "done: captures in $LAB"
