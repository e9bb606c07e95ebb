#!/usr/bin/env bash
# A PhantomBand testnet in network namespaces, by hand (root). Each relay gets a namespace
# of its own on a bridge, as in the tests; a client namespace gets pb-client.
#
#   deploy/testbed.sh up [--bin DIR] [--xdp]   # start: gateway, 3 mix layers of 2, exit, client
#   deploy/testbed.sh status                    # topology lines and pb-client's last lines
#   deploy/testbed.sh exec CMD...               # run CMD in the client namespace (e.g. curl)
#   deploy/testbed.sh down                      # stop everything, remove the namespaces
#
# --bin DIR takes pb-relay, pb-client and pb-testnet from DIR (default: target/release, else
# target/debug). --xdp runs the relays on AF_XDP with the XDP program attached to their veths
# (native mode) instead of UDP sockets.
#
# All the work is done by `pb-testnet` (perf/testnet, the library the tests use too): relays
# on 198.18.0.1-8 (gateway .1, exit .8), a web server on 198.18.0.9, pb-client on
# 127.0.0.1:1080 in the client namespace (198.18.0.10). Only its own namespaces are touched;
# state (logs, the background process's pid) is in /run/pb-testbed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
die() { printf 'testbed: error: %s\n' "$*" >&2; exit 1; }

# The directory holding the binaries: --bin DIR if given, else target/release, else
# target/debug.
bin=
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=${2:?--bin needs a directory}; args+=(--bin "$2"); shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ -z "$bin" ]; then
  bin=$here/target/release
  [ -x "$bin/pb-testnet" ] || bin=$here/target/debug
fi
[ -x "$bin/pb-testnet" ] ||
  die "no pb-testnet in $bin: cargo build --release -p pb-relay -p pb-client -p pb-testnet"

case "${args[0]:-}" in
  up | status | exec | down) exec "$bin/pb-testnet" "${args[@]}" ;;
  *) sed -n '2,17p' "$0"; exit 2 ;;
esac
