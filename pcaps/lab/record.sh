#!/usr/bin/env bash
# Records the real tools in a lab of network namespaces and writes the captures
# of pcaps/lab/. Run as root from the repository root:  pcaps/lab/record.sh
#
# Tools: mitmproxy 11.0.2 from PyPI (mitmweb, mitmdump), the ngrok 2.x agent
# (npm @expo/ngrok-bin-linux-x64 2.3.42) and the ngrok Rust agent (npm
# @ngrok/ngrok 1.7.0), curl, openssl, dnsmasq, tcpdump. The "internet" is one
# namespace holding documentation addresses (198.51.100.0/24, 203.0.113.0/24)
# with stand-in servers and a DNS server; ngrok's names resolve there, so the
# agents dial stand-ins (their handshakes fail: the ClientHello is what we want).
# All traffic stays inside namespaces this script creates; it deletes them,
# and stops everything it started, on exit.
set -euo pipefail
cd "$(dirname "$0")"
LAB=$PWD
W=$LAB/.work
mkdir -p "$W"
export DEBIAN_FRONTEND=noninteractive

need() { command -v "$1" >/dev/null 2>&1; }
if ! need dnsmasq || ! need tcpdump || ! need curl || ! need openssl || ! need node; then
  apt-get update -qq </dev/null
  apt-get install -y -qq dnsmasq-base tcpdump curl openssl iproute2 nodejs npm </dev/null >/dev/null
fi
[ -x "$W/venv/bin/mitmdump" ] || { python3 -m venv "$W/venv"; "$W/venv/bin/pip" install -q mitmproxy==11.0.2; }
[ -d "$W/node_modules/@ngrok/ngrok" ] && [ -d "$W/node_modules/@expo/ngrok-bin-linux-x64" ] ||
  (cd "$W" && npm install --silent --no-audit --no-fund @expo/ngrok-bin-linux-x64@2.3.42 @ngrok/ngrok@1.7.0)
NGROK2=$(find "$W/node_modules/@expo/ngrok-bin-linux-x64" -type f -name ngrok | head -1)
chmod +x "$NGROK2"

P=swlab
HOSTS="inet prod proxy dev devproxy"
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
bg() { local h=$1; shift; ip netns exec "$P-$h" "$@" >>"$W/$h.log" 2>&1 & PIDS+=($!); }

# --- network: one bridge (the "span port"), five hosts on it -----------------
ip netns add "$P-hub"
nsx hub ip link add br0 type bridge
nsx hub ip link set br0 up
nsx hub ip link set lo up
declare -A ADDR=(
  [inet]="198.51.100.10/24 198.51.100.20/24 198.51.100.53/24 203.0.113.10/24"
  [prod]="10.1.0.10/16" [proxy]="10.1.0.20/16" [dev]="10.20.0.10/16" [devproxy]="10.20.0.20/16"
)
for h in $HOSTS; do
  ip netns add "$P-$h"
  ip link add "v-$h" type veth peer name eth0 netns "$P-$h"
  ip link set "v-$h" netns "$P-hub"
  nsx hub ip link set "v-$h" master br0 up
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
C=$W/certs
if [ ! -f "$C/ca.pem" ]; then
  mkdir -p "$C/srv"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Lab Public Root CA/O=Lab Trust Services" \
    -keyout "$C/ca.key" -out "$C/ca.pem" 2>/dev/null
  for n in www.example.com shop.example.org news.example.net api.example.io notngrok-free.app \
           ngrok-free.app.example.net mitm.example.com connect.ngrok-agent.com tunnel.us.ngrok.com \
           demo.ngrok-free.app tunnels.example.com app.example.com; do
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$n" -keyout "$C/$n.key" -out "$C/$n.csr" 2>/dev/null
    printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n' "$n" >"$C/$n.ext"
    openssl x509 -req -in "$C/$n.csr" -CA "$C/ca.pem" -CAkey "$C/ca.key" -CAcreateserial -days 365 \
      -extfile "$C/$n.ext" -out "$C/$n.crt" 2>/dev/null
    cat "$C/$n.crt" "$C/ca.pem" "$C/$n.key" >"$C/srv/$n.pem"
  done
  # A renamed CA for mitmproxy (confdir): not called mitmproxy at all.
  mkdir -p "$W/mitm-custom"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Acme Corp Internal CA/O=Acme Corp" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$W/mitm-custom/k.pem" -out "$W/mitm-custom/c.pem" 2>/dev/null
  cat "$W/mitm-custom/k.pem" "$W/mitm-custom/c.pem" >"$W/mitm-custom/mitmproxy-ca.pem"
fi
HR="--host-record=www.example.com,203.0.113.10 --host-record=shop.example.org,203.0.113.10"
HR="$HR --host-record=news.example.net,203.0.113.10 --host-record=api.example.io,203.0.113.10"
HR="$HR --host-record=notngrok-free.app,203.0.113.10 --host-record=ngrok-free.app.example.net,203.0.113.10"
HR="$HR --host-record=mitm.example.com,203.0.113.10 --host-record=mitmproxy-docs.example.org,203.0.113.10"
HR="$HR --host-record=connect.ngrok-agent.com,198.51.100.10 --host-record=tunnel.us.ngrok.com,198.51.100.10"
HR="$HR --host-record=demo.ngrok-free.app,198.51.100.20 --host-record=demo.ngrok.io,198.51.100.20"
HR="$HR --host-record=abc123.ngrok-cname.com,198.51.100.20 --cname=app.example.com,abc123.ngrok-cname.com"
HR="$HR --cname=tunnels.example.com,connect.ngrok-agent.com"
# shellcheck disable=SC2086
bg inet dnsmasq --no-daemon --no-resolv --no-hosts --bind-interfaces --listen-address=198.51.100.53 \
  --pid-file="$W/dnsmasq.pid" --log-queries $HR
bg inet "$W/venv/bin/python" "$LAB/servers.py" --certs "$C/srv" --default www.example.com
sleep 1.5

# --- recording helpers -----------------------------------------------------
CAP_PID=
start() {
  ip netns exec "$P-hub" tcpdump -i br0 -s 0 -U -w "$W/$1.pcap" >"$W/tcpdump.log" 2>&1 &
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
CURL="curl -sS -o /dev/null --max-time 10"

# --- ngrok 2.x agent (Go): control connection, then its masquerading retries --
start lab-ngrok-v2-agent
cat >"$W/ngrok2.yml" <<YML
authtoken: 2lab0000000000000000000000_lab0000000000000000000
region: us
YML
nsx prod timeout 40 "$NGROK2" http 8080 --config "$W/ngrok2.yml" --log stdout >"$W/ngrok2.log" 2>&1 || true
stop lab-ngrok-v2-agent

# --- ngrok Rust agent (@ngrok/ngrok SDK) from a development host --------------
start lab-ngrok-rust-agent
cat >"$W/agent.js" <<'JS'
const ngrok = require('@ngrok/ngrok');
const t = setTimeout(() => process.exit(0), 15000);
ngrok.forward({ addr: 8080, authtoken: '2lab0000000000000000000000_lab0000000000000000000' })
  .then(() => process.exit(0), (e) => { console.error(String(e)); clearTimeout(t); setTimeout(() => process.exit(0), 500); });
JS
nsx dev bash -c "cd '$W' && timeout 20 node agent.js" >"$W/agent.log" 2>&1 || true
stop lab-ngrok-rust-agent

# --- visitors of ngrok endpoints (prod), incl. a branded name CNAMEd to ngrok --
start lab-ngrok-endpoints
nsx prod $CURL -k https://demo.ngrok-free.app/ || true
nsx prod $CURL http://demo.ngrok.io/ || true
nsx prod $CURL -k https://app.example.com/ || true
stop lab-ngrok-endpoints

# --- sanctioned: the 2.x agent against the organisation's own connect URL -----
start lab-ngrok-sanctioned
cat >"$W/ngrok2-sanctioned.yml" <<YML
authtoken: 2lab0000000000000000000000_lab0000000000000000000
server_addr: tunnels.example.com:443
YML
nsx dev timeout 12 "$NGROK2" http 8080 --config "$W/ngrok2-sanctioned.yml" --log stdout >"$W/ngrok2s.log" 2>&1 || true
stop lab-ngrok-sanctioned

# --- mitmproxy: explicit proxy (mitmweb) on a production host ----------------
bg proxy "$W/venv/bin/mitmweb" --listen-host 10.1.0.20 -p 8080 --web-host 0.0.0.0 --web-port 8081 \
  --no-web-open-browser --ssl-insecure --set confdir="$W/mitm-default"
sleep 6
start lab-mitmproxy-explicit
nsx prod $CURL -x http://10.1.0.20:8080 -k --tls-max 1.2 https://www.example.com/ || true
nsx prod $CURL -x http://10.1.0.20:8080 -k https://shop.example.org/ || true
nsx prod $CURL -x http://10.1.0.20:8080 http://mitm.it/cert/pem || true
stop lab-mitmproxy-explicit
start lab-mitmweb-ui
nsx dev $CURL http://10.1.0.20:8081/ || true
stop lab-mitmweb-ui

# --- mitmproxy: reverse mode with a renamed CA on a development host ---------
bg devproxy "$W/venv/bin/mitmdump" --mode reverse:https://www.example.com/ --listen-host 10.20.0.20 -p 443 \
  --ssl-insecure --set confdir="$W/mitm-custom"
sleep 5
start lab-mitmproxy-custom-ca
for n in www.example.com shop.example.org news.example.net api.example.io; do
  nsx dev $CURL -k --tls-max 1.2 --resolve "$n:443:10.20.0.20" "https://$n/" || true
done
nsx dev $CURL -k --resolve www.example.com:443:10.20.0.20 https://www.example.com/ || true
stop lab-mitmproxy-custom-ca

# --- negatives: look-alike names, an internal CA, ordinary DNS and HTTPS ------
start lab-negatives
for n in notngrok-free.app ngrok-free.app.example.net mitm.example.com www.example.com; do
  nsx prod $CURL -k --tls-max 1.2 "https://$n/" || true
done
nsx prod $CURL http://mitmproxy-docs.example.org/ || true
nsx dev getent hosts news.example.net >/dev/null || true
stop lab-negatives
echo "done: captures in $LAB"
