#!/usr/bin/env bash
# A PhantomBand testnet in network namespaces, by hand (root). Each relay gets a namespace
# of its own on a bridge, as in the tests; a client namespace gets pb-client.
#
#   deploy/testbed.sh up [--bin DIR] [--xdp]   # start: gateway, 3 mix layers of 2, exit, client
#   deploy/testbed.sh status                    # topology lines and processes
#   deploy/testbed.sh exec CMD...               # run CMD in the client namespace (e.g. curl)
#   deploy/testbed.sh down                      # stop everything, remove the namespaces
#
# --bin DIR takes pb-relay and pb-client from DIR (default: target/release, else target/debug).
# --xdp runs the relays on AF_XDP with the XDP program attached to their veths (native mode)
# instead of UDP sockets.
#
# Addresses: 198.18.1.1-8 relays (gateway .1, exit .8), 198.18.1.20 client, 198.18.1.30 a
# web server (python3 -m http.server, if python3 is there) serving the testbed's directory.
# Only these namespaces are touched; state (configs, logs, pids) is in /run/pb-testbed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state=/run/pb-testbed
relays=8
seed=4242424242424242424242424242424242424242424242424242424242424242
say() { printf 'testbed: %s\n' "$*" >&2; }
die() { printf 'testbed: error: %s\n' "$*" >&2; exit 1; }
ns() { printf 'pbtb-%s' "$1"; }
ip_of() { printf '198.18.1.%s' "$1"; }

role() {
  case "$1" in
    0) echo gateway ;;
    $((relays - 1))) echo exit ;;
    *) echo mix ;;
  esac
}

link() { # link NAME ADDR: a veth from namespace NAME to the bridge, with ADDR/24
  local name=$1 addr=$2 short=${1//-/}
  ip netns add "$(ns "$name")"
  ip -n "$(ns "$name")" link set lo up
  ip link add "v${short}" type veth peer name "b${short}"
  ip link set "v${short}" netns "$(ns "$name")"
  ip link set "b${short}" netns "$(ns sw)"
  ip -n "$(ns "$name")" link set "v${short}" name eth0
  ip -n "$(ns "$name")" addr add "$addr/24" dev eth0
  ip -n "$(ns "$name")" link set eth0 up
  ip -n "$(ns sw)" link set "b${short}" master br0 up
}

relay_config() { # relay_config I BACKEND
  local i=$1 me; me=$(ip_of $((i + 1)))
  local io="backend = \"udp\"
bind = \"$me:47470\""
  local extra=
  if [ "$2" = xdp ]; then
    io="backend = \"af_xdp\"
interface = \"eth0\"
queues = [0]
port = 47470
xdp_mode = \"native\"
bind = \"auto\""
    extra="advertise = \"$me:47470\""
  fi
  case "$(role "$i")" in
    gateway) extra="$extra
client_bind = \"$me:47480\"" ;;
    exit) extra="$extra
exit_allow = [\"198.18.1.0/24\"]" ;;
  esac
  cat <<EOF
[node]
format = "v1"

[io]
$io

[gossip]
bind = "$me:47471"
seeds = ["$(ip_of 1):47471", "$(ip_of 2):47471"]
network_seed = "$seed"
identity_file = "identity$i.key"
role = "$(role "$i")"
epoch_seconds = 3600
admin = "127.0.0.1:9100"
$extra

[mix]
link_rate = 100
EOF
}

up() {
  local bin= backend=udp
  while [ $# -gt 0 ]; do
    case "$1" in
      --bin) bin=${2:?--bin needs a directory}; shift 2 ;;
      --xdp) backend=xdp; shift ;;
      *) die "up: unknown argument $1" ;;
    esac
  done
  [ "$(id -u)" = 0 ] || die "run as root (network namespaces)"
  [ ! -d "$state" ] || die "a testbed is already up ($state exists): deploy/testbed.sh down first"
  if [ -z "$bin" ]; then
    bin=$here/target/release
    [ -x "$bin/pb-relay" ] || bin=$here/target/debug
  fi
  [ -x "$bin/pb-relay" ] && [ -x "$bin/pb-client" ] ||
    die "no pb-relay and pb-client in $bin: cargo build --release -p pb-relay -p pb-client"
  mkdir -p "$state"
  trap 'say "setting up failed: removing what was made"; down' ERR
  ip netns add "$(ns sw)"
  ip -n "$(ns sw)" link add br0 type bridge
  ip -n "$(ns sw)" link set br0 up
  for i in $(seq 0 $((relays - 1))); do link "$i" "$(ip_of $((i + 1)))"; done
  link client 198.18.1.20
  link web 198.18.1.30
  for i in $(seq 0 $((relays - 1))); do
    "$bin/pb-relay" keygen --out "$state/identity$i.key" >/dev/null
    relay_config "$i" "$backend" >"$state/relay$i.toml"
    ip netns exec "$(ns "$i")" "$bin/pb-relay" run --stats-interval 0 \
      --config "$state/relay$i.toml" >"$state/relay$i.log" 2>&1 &
    echo $! >"$state/relay$i.pid"
  done
  if command -v python3 >/dev/null; then
    ip netns exec "$(ns web)" python3 -m http.server 80 --bind 198.18.1.30 \
      --directory "$state" >"$state/web.log" 2>&1 &
    echo $! >"$state/web.pid"
    local waited=0
    until ip netns exec "$(ns web)" bash -c 'exec 3<>/dev/tcp/198.18.1.30/80' 2>/dev/null; do
      waited=$((waited + 1))
      [ $waited -lt 50 ] || { say "warning: the web server did not start: see $state/web.log"; break; }
      sleep 0.1
    done
  fi
  say "waiting for the relays to agree on a topology"
  local tries=0
  # Agreed: every relay's latest topology line names the same hash and all the relays.
  latest() { for f in "$state"/relay*.log; do grep -h '^topology' "$f" | tail -1; done; }
  while [ "$(latest | awk '{print $2 " " $4}' | sort -u)" != "$(latest | awk '{print $2}' | head -1) $relays" ] ||
        [ "$(latest | wc -l)" != "$relays" ]; do
    tries=$((tries + 1))
    [ $tries -lt 300 ] || die "no agreement after 30 s: see $state/relay*.log"
    sleep 0.1
  done
  ip netns exec "$(ns client)" "$bin/pb-client" --gateway "$(ip_of 1):47480" \
    --network-seed "$seed" >"$state/client.log" 2>&1 &
  echo $! >"$state/client.pid"
  trap - ERR
  say "up: $(grep -h '^topology' "$state/relay0.log" | tail -1)"
  say "try: deploy/testbed.sh exec curl --socks5-hostname 127.0.0.1:1080 http://198.18.1.30/relay0.toml"
}

status() {
  [ -d "$state" ] || { say "no testbed is up"; return 0; }
  for i in $(seq 0 $((relays - 1))); do
    printf 'relay %s (%s): %s\n' "$i" "$(role "$i")" "$(grep -h '^topology' "$state/relay$i.log" | tail -1)"
  done
  grep -h 'pb-client' "$state/client.log" | tail -3
}

down() {
  for pid in "$state"/*.pid; do
    [ -e "$pid" ] || continue
    kill "$(cat "$pid")" 2>/dev/null || true
  done
  sleep 0.5
  for n in $(ip netns list | awk '/^pbtb-/ {print $1}'); do ip netns del "$n"; done
  rm -rf "$state"
  say "down"
}

case "${1:-}" in
  up) shift; up "$@" ;;
  status) status ;;
  exec) shift; [ $# -gt 0 ] || die "exec: a command"; exec ip netns exec "$(ns client)" "$@" ;;
  down) down ;;
  *) sed -n '2,18p' "$0"; exit 2 ;;
esac
