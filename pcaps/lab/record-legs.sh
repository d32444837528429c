#!/usr/bin/env bash
# Records both legs of TLS 1.3 interception (re-origination) and of plain
# relaying in a lab of network namespaces and writes the captures
# lab-mitm-tls13-*.pcap, lab-relays.pcap and lab-nginx-reencrypt.pcap of
# pcaps/lab/. Run as root from the repository root:  pcaps/lab/record-legs.sh
#
# Tools: mitmproxy 11.0.2 from PyPI (mitmdump: explicit, transparent and
# reverse mode), and from Debian squid (plain CONNECT proxy), haproxy
# (mode tcp), nginx (TLS termination and re-encryption), iptables (the
# REDIRECT of transparent mode), curl, openssl, dnsmasq, tcpdump, ethtool.
# Same topology as record.sh (one bridge, the "span port"; production host
# 10.1.0.10 and proxy 10.1.0.20, development host 10.20.0.10 and proxy
# 10.20.0.20, a fake "internet" in documentation ranges with a DNS server),
# but its own namespaces (swlegs-*), veths (lg-*) and state (.work/legs,
# .work/venv-legs), so the scripts never touch each other's. The internet is
# 20 ms away each way (pcaps/lab/delay_line.py on its link, in namespace
# swlegs-wan: a ~40 ms round trip seen from the span port), the LAN hosts
# answer in well under a millisecond.
# Every client speaks TLS 1.3 only and verifies the certificate it gets (the
# lab CA, or mitmproxy's CA where mitmproxy forges). A client that fails stops
# the script before its capture is copied, so good captures stay.
# All traffic stays inside namespaces this script creates; it deletes them,
# and stops everything it started, on exit.
set -euo pipefail
cd "$(dirname "$0")"
LAB=$PWD
W=$LAB/.work
L=$W/legs
mkdir -p "$L"
rm -f "$L"/*.log
export DEBIAN_FRONTEND=noninteractive
MITMPROXY=11.0.2

need() { command -v "$1" >/dev/null 2>&1; }
if ! need dnsmasq || ! need tcpdump || ! need curl || ! need openssl || ! need squid || ! need haproxy ||
   ! need nginx || ! need iptables || ! need ethtool || ! need ss; then
  apt-get update -qq </dev/null
  apt-get install -y -qq dnsmasq-base tcpdump curl openssl iproute2 squid haproxy nginx iptables ethtool </dev/null >/dev/null
fi
# record.sh's venv when it already has mitmproxy 11.0.2, else one of our own
V=$W/venv
"$V/bin/mitmdump" --version 2>/dev/null | grep -q "^Mitmproxy: $MITMPROXY\$" || {
  V=$W/venv-legs
  "$V/bin/mitmdump" --version 2>/dev/null | grep -q "^Mitmproxy: $MITMPROXY\$" ||
    { python3 -m venv "$V"; "$V/bin/pip" install -q "mitmproxy==$MITMPROXY"; }
}
MITMDUMP=$V/bin/mitmdump

P=swlegs
HOSTS="inet prod proxy dev devproxy"
PIDS=()
# the pids of whatever still runs in our namespaces (helpers the tools forked,
# e.g. squid's pinger, which outlives squid by a few seconds)
ours() { for h in hub wan $HOSTS; do ip netns pids "$P-$h" 2>/dev/null || true; done; }
cleanup() {
  for p in "${PIDS[@]:-}" $(ours); do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]:-}" $(ours); do kill -9 "$p" 2>/dev/null || true; done
  for h in hub wan $HOSTS; do ip netns del "$P-$h" 2>/dev/null || true; rm -rf "/etc/netns/$P-$h"; done
  # a veth left in the root namespace by an interrupted setup
  for h in $HOSTS wan; do ip link del "lg-$h" 2>/dev/null || true; done
}
trap cleanup EXIT
cleanup
nsx() { local h=$1; shift; ip netns exec "$P-$h" "$@"; }
bg() { local h=$1; shift; ip netns exec "$P-$h" "$@" >>"$L/$h.log" 2>&1 & PIDS+=($!); }
# the pid of the last bg (to stop one server before the next takes its port)
halt() {
  local p=$1
  kill "$p" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$p" 2>/dev/null || true
}
# wait until something listens on TCP ADDR:PORT in namespace H (no packet sent)
listening() {
  local h=$1 a=$2 port=$3
  for _ in $(seq 100); do
    nsx "$h" ss -Hltn "src $a:$port" | grep -q . && return 0
    sleep 0.2
  done
  echo "nothing listens on $a:$port in $P-$h" >&2; tail -20 "$L/$h.log" >&2; exit 1
}

# --- network: one bridge (the "span port"), five hosts on it -----------------
ip netns add "$P-hub"
ip netns add "$P-wan"
# IPv4 only: no IPv6 link-local chatter (router solicitations, DAD) on the span port
noipv6() { nsx "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1; }
noipv6 hub
noipv6 wan
nsx hub ip link add br0 type bridge
nsx hub ip link set br0 up
nsx hub ip link set lo up
declare -A ADDR=(
  [inet]="198.51.100.10/24 198.51.100.11/24 198.51.100.53/24 203.0.113.10/24"
  [prod]="10.1.0.10/16" [proxy]="10.1.0.20/16" [dev]="10.20.0.10/16" [devproxy]="10.20.0.20/16"
)
for h in $HOSTS; do
  ip netns add "$P-$h"
  noipv6 "$h"
  if [ "$h" = inet ]; then
    # the internet hangs behind the WAN delay line: bridge - lg-inet|lan - (wan) - wan|eth0 - inet
    ip link add lg-inet type veth peer name lan netns "$P-wan"
    ip link add lg-wan type veth peer name eth0 netns "$P-inet"
    ip link set lg-wan netns "$P-wan"
    nsx wan ip link set lg-wan name wan
    nsx wan ip link set lan up
    nsx wan ip link set wan up
  else
    ip link add "lg-$h" type veth peer name eth0 netns "$P-$h"
  fi
  ip link set "lg-$h" netns "$P-hub"
  nsx hub ip link set "lg-$h" master br0 up
  nsx "$h" ip link set lo up
  nsx "$h" ip link set eth0 up
  # complete frames on the wire (no checksum/segmentation offload): the delay
  # line copies them as read, and the captures have real checksums
  nsx "$h" ethtool -K eth0 tx off >/dev/null
  nsx "$h" ethtool -K eth0 tso off gso off gro off >/dev/null 2>&1 || true
  for a in ${ADDR[$h]}; do nsx "$h" ip addr add "$a" dev eth0; done
  # one flat L2: every destination is on-link (no router needed)
  nsx "$h" ip route add default dev eth0
  mkdir -p "/etc/netns/$P-$h"
  echo "nameserver 198.51.100.53" >"/etc/netns/$P-$h/resolv.conf"
  printf '127.0.0.1 localhost\n' >"/etc/netns/$P-$h/hosts"
done
# The internet is far: 20 ms each way (on the internet's side of the span
# point), so from the span port a LAN host answers a SYN in microseconds and
# the internet in ~40 ms. This kernel has no netem (tc qdisc ... netem delay
# 20ms fails: "Specified qdisc kind is unknown"), so delay_line.py holds each
# frame 20 ms in each direction between the bridge and the internet.
bg wan "$V/bin/python" "$LAB/delay_line.py" --delay 20 lan wan
for _ in $(seq 50); do grep -q "^delay line" "$L/wan.log" 2>/dev/null && break; sleep 0.1; done

# --- certificates: a fake public CA for the stand-in servers and nginx --------
# (its own directory: record.sh makes .work/certs in one go when ca.pem is missing)
C=$L/certs
mkdir -p "$C/srv"
[ -f "$C/ca.pem" ] ||
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Lab Public Root CA/O=Lab Trust Services" \
    -keyout "$C/ca.key" -out "$C/ca.pem" 2>/dev/null
for n in www.example.com shop.example.org app-backend.example.net api.example.com app.example.com; do
  [ -f "$C/$n.pem" ] && continue
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$n" -keyout "$C/$n.key" -out "$C/$n.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n' "$n" >"$C/$n.ext"
  openssl x509 -req -in "$C/$n.csr" -CA "$C/ca.pem" -CAkey "$C/ca.key" -CAcreateserial -days 365 \
    -extfile "$C/$n.ext" -out "$C/$n.crt" 2>/dev/null
  cat "$C/$n.crt" "$C/ca.pem" >"$C/$n.chain"
  cat "$C/$n.crt" "$C/ca.pem" "$C/$n.key" >"$C/$n.pem"
done
# the stand-in servers' certificates (app.example.com is nginx's, on the proxy)
for n in www.example.com shop.example.org app-backend.example.net api.example.com; do cp "$C/$n.pem" "$C/srv/"; done

# --- the "internet": DNS and the HTTPS sites ----------------------------------
bg inet dnsmasq --no-daemon --no-resolv --no-hosts --bind-interfaces --listen-address=198.51.100.53 \
  --pid-file="$L/dnsmasq.pid" --log-queries \
  --host-record=www.example.com,198.51.100.10 --host-record=shop.example.org,198.51.100.11 \
  --host-record=app-backend.example.net,203.0.113.10
# one server on every address of the namespace, certificate chosen by SNI
bg inet "$V/bin/python" "$LAB/servers.py" --certs "$C/srv" --default www.example.com
listening inet 0.0.0.0 443
listening inet 198.51.100.53 53

# --- recording helpers -----------------------------------------------------
CAP_PID=
start() {
  ip netns exec "$P-hub" tcpdump -i br0 -s 0 -U --immediate-mode -w "$L/$1.pcap" >"$L/tcpdump.log" 2>&1 &
  CAP_PID=$!
  PIDS+=("$CAP_PID")
  sleep 1
}
stop() {
  sleep 1
  kill -TERM "$CAP_PID"
  wait "$CAP_PID" 2>/dev/null || true
  cp "$L/$1.pcap" "$LAB/$1.pcap"
  echo "recorded $1.pcap ($(stat -c %s "$LAB/$1.pcap") bytes)"
  if need tshark; then
    tshark -r "$LAB/$1.pcap" -Y 'tls.handshake.type==1' -T fields -e frame.number -e frame.time_relative \
      -e ip.src -e tcp.srcport -e ip.dst -e tcp.dstport -e tls.handshake.extensions_server_name \
      -e tls.handshake.random 2>/dev/null | sed 's/^/  ClientHello /'
  fi
}
# a client that must succeed: its output goes to the host's log
run() {
  local h=$1; shift
  nsx "$h" "$@" >>"$L/$h.log" 2>&1 || { echo "failed on $h: $*" >&2; tail -5 "$L/$h.log" >&2; exit 1; }
}
CURL="curl -sS -o /dev/null --fail --max-time 10 --tlsv1.3"

# mitmproxy: its own confdir (its CA, made on first start), upstream servers
# verified against the lab CA; clients trust mitmproxy's CA (--cacert).
MCONF=$L/mitmproxy
MITM="$MITMDUMP --set confdir=$MCONF --set ssl_verify_upstream_trusted_ca=$C/ca.pem"
MCA=$MCONF/mitmproxy-ca-cert.pem

# --- 1. mitmdump as an explicit proxy on the production proxy host ------------
bg proxy $MITM --listen-host 10.1.0.20 -p 8080
M=${PIDS[-1]}
listening proxy 10.1.0.20 8080
start lab-mitm-tls13-explicit
run prod $CURL --cacert "$MCA" -x http://10.1.0.20:8080 https://www.example.com/
run prod $CURL --cacert "$MCA" -x http://10.1.0.20:8080 https://shop.example.org/
stop lab-mitm-tls13-explicit
halt "$M"

# --- 2. mitmdump in transparent mode: the proxy host is the client's gateway --
# The production host routes the sites' /24 via the proxy host (the DNS server,
# in the same /24, stays on-link); the proxy host forwards, and redirects the
# client's TCP 443 to mitmdump. Its own upstream leg is on-link, so the
# internet answers it directly. The nat rule lives in the proxy's namespace.
nsx prod ip route add 198.51.100.0/24 via 10.1.0.20 dev eth0
nsx prod ip route add 198.51.100.53/32 dev eth0
nsx proxy sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.eth0.send_redirects=0
nsx proxy iptables -t nat -A PREROUTING -i eth0 -s 10.1.0.10 -p tcp --dport 443 -j REDIRECT --to-ports 8080
bg proxy $MITM --mode transparent --listen-host 10.1.0.20 -p 8080
M=${PIDS[-1]}
listening proxy 10.1.0.20 8080
start lab-mitm-tls13-transparent
run prod $CURL --cacert "$MCA" https://www.example.com/
run prod $CURL --cacert "$MCA" https://shop.example.org/
stop lab-mitm-tls13-transparent
halt "$M"
nsx proxy iptables -t nat -F PREROUTING
nsx proxy sysctl -qw net.ipv4.ip_forward=0
nsx prod ip route del 198.51.100.53/32 dev eth0
nsx prod ip route del 198.51.100.0/24 via 10.1.0.20 dev eth0

# --- 3. mitmdump in reverse mode on the development proxy host ---------------
bg devproxy $MITM --mode "reverse:https://app-backend.example.net@10.20.0.20:443"
M=${PIDS[-1]}
listening devproxy 10.20.0.20 443
start lab-mitm-tls13-reverse
run dev $CURL --cacert "$MCA" --resolve app.example.com:443:10.20.0.20 https://app.example.com/
run dev $CURL --cacert "$MCA" --resolve app.example.com:443:10.20.0.20 https://app.example.com/
stop lab-mitm-tls13-reverse
halt "$M"

# --- 4. relays, which must stay silent: squid CONNECT, haproxy mode tcp -------
mkdir -p "$L/squid"
chown proxy:proxy "$L/squid" 2>/dev/null || true
cat >"$L/squid.conf" <<CONF
http_port 10.1.0.20:3128
visible_hostname proxy.lab.example
acl lab src 10.0.0.0/8
acl SSL_ports port 443
acl CONNECT method CONNECT
http_access deny CONNECT !SSL_ports
http_access allow lab
http_access deny all
cache deny all
cache_mem 8 MB
dns_nameservers 198.51.100.53
pid_filename $L/squid/squid.pid
access_log stdio:$L/squid/access.log
cache_log $L/squid/cache.log
netdb_filename none
coredump_dir $L/squid
shutdown_lifetime 1 seconds
CONF
cat >"$L/haproxy.cfg" <<CONF
global
    log stderr format short local0 info
defaults
    mode tcp
    log global
    option tcplog
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend shop
    bind 10.1.0.20:8443
    default_backend shop
backend shop
    server shop 198.51.100.11:443
CONF
bg proxy squid -N -d1 -f "$L/squid.conf"
S=${PIDS[-1]}
bg proxy haproxy -db -f "$L/haproxy.cfg"
H=${PIDS[-1]}
listening proxy 10.1.0.20 3128
listening proxy 10.1.0.20 8443
start lab-relays
run prod $CURL --cacert "$C/ca.pem" -x http://10.1.0.20:3128 https://www.example.com/
run prod $CURL --cacert "$C/ca.pem" --resolve shop.example.org:8443:10.1.0.20 https://shop.example.org:8443/
stop lab-relays
halt "$S"
halt "$H"

# --- 5. nginx terminates TLS 1.3 and re-encrypts to the backend --------------
# app.example.com:443 -> 203.0.113.10 with SNI app-backend.example.net;
# api.example.com:4443 -> 203.0.113.10 with SNI api.example.com (the client's
# name). Upstream certificates are verified against the lab CA.
NG=$L/nginx
mkdir -p "$NG"
cat >"$NG/nginx.conf" <<CONF
daemon off;
master_process off;
pid $NG/nginx.pid;
error_log $NG/error.log info;
events { worker_connections 64; }
http {
    access_log $NG/access.log;
    client_body_temp_path $NG/client_body;
    proxy_temp_path $NG/proxy;
    fastcgi_temp_path $NG/fastcgi;
    uwsgi_temp_path $NG/uwsgi;
    scgi_temp_path $NG/scgi;
    ssl_protocols TLSv1.3;
    proxy_ssl_protocols TLSv1.3;
    proxy_ssl_verify on;
    proxy_ssl_trusted_certificate $C/ca.pem;
    proxy_ssl_server_name on;
    # one upstream block each: nginx keeps its TLS session per upstream peer,
    # so the api location does not resume app-backend's session
    upstream app_backend { server 203.0.113.10:443; }
    upstream api_backend { server 203.0.113.10:443; }
    server {
        listen 10.20.0.20:443 ssl;
        server_name app.example.com;
        ssl_certificate $C/app.example.com.chain;
        ssl_certificate_key $C/app.example.com.key;
        location / {
            proxy_pass https://app_backend;
            proxy_set_header Host app-backend.example.net;
            proxy_ssl_name app-backend.example.net;
        }
    }
    server {
        listen 10.20.0.20:4443 ssl;
        server_name api.example.com;
        ssl_certificate $C/api.example.com.chain;
        ssl_certificate_key $C/api.example.com.key;
        location / {
            proxy_pass https://api_backend;
            proxy_set_header Host api.example.com;
            proxy_ssl_name api.example.com;
        }
    }
}
CONF
bg devproxy nginx -p "$NG" -c "$NG/nginx.conf"
N=${PIDS[-1]}
listening devproxy 10.20.0.20 443
listening devproxy 10.20.0.20 4443
start lab-nginx-reencrypt
run dev $CURL --cacert "$C/ca.pem" --resolve app.example.com:443:10.20.0.20 https://app.example.com/
run dev $CURL --cacert "$C/ca.pem" --resolve api.example.com:4443:10.20.0.20 https://api.example.com:4443/
stop lab-nginx-reencrypt
halt "$N"
echo "done: captures in $LAB"
