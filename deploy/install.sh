#!/usr/bin/env bash
# Installs pb-relay for an operator, on Debian 12, as root. Idempotent: an existing
# configuration and identity key are kept; the binary and the systemd unit are replaced.
#
#   deploy/install.sh                      # build, install under /, create the pb-relay user
#   deploy/install.sh --prefix /tmp/pb     # install under a prefix instead (tests, packaging)
#   deploy/install.sh --binary PATH        # install this pb-relay instead of building one
#   deploy/install.sh --user NAME          # run the relay as NAME (default: pb-relay)
#
# What it does:
#   - builds pb-relay (cargo build --release --locked -p pb-relay) unless --binary is given;
#   - creates a system user with no home and no shell, unless it exists;
#   - installs the binary as PREFIX/usr/local/bin/pb-relay with file capabilities
#     (CAP_NET_ADMIN, CAP_BPF, CAP_NET_RAW): the relay never runs as root;
#   - makes an identity key (pb-relay keygen) and a starter configuration in
#     PREFIX/etc/phantomband, readable by that user only, unless they exist;
#   - installs the systemd unit as PREFIX/etc/systemd/system/pb-relay.service.
# It does not enable or start the service: edit the configuration first (docs/operator.md).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { printf 'install: %s\n' "$*" >&2; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 1; }

prefix=/
binary=
user=pb-relay
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --user) user=${2:?--user needs a name}; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
[ "$(id -u)" = 0 ] || die "run as root (creates a user, sets file capabilities)"
case "$user" in
  ''|*[!a-z0-9_-]*) die "--user: lowercase letters, digits, - and _ only" ;;
esac
prefix=${prefix%/}
bin_dir=$prefix/usr/local/bin
etc_dir=$prefix/etc/phantomband
unit_dir=$prefix/etc/systemd/system
doc_dir=$prefix/usr/local/share/doc/phantomband

if [ -z "$binary" ]; then
  say "building pb-relay (release)"
  export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
  (cd "$here" && cargo build --release --locked -p pb-relay)
  binary=$here/target/release/pb-relay
fi
[ -x "$binary" ] || die "$binary is not an executable"

if ! getent passwd "$user" >/dev/null; then
  say "creating the system user $user"
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$user"
fi

install -d -m 0755 "$bin_dir" "$unit_dir" "$doc_dir"
install -m 0755 "$binary" "$bin_dir/pb-relay"
if command -v setcap >/dev/null; then
  setcap cap_net_admin,cap_bpf,cap_net_raw+ep "$bin_dir/pb-relay"
else
  say "warning: setcap not found (Debian: libcap2-bin): the AF_XDP backend will need the systemd unit's capabilities"
fi
install -m 0644 "$here/docs/operator.md" "$doc_dir/operator.md"

install -d -m 0750 -o root -g "$user" "$etc_dir"
if [ ! -e "$etc_dir/identity.key" ]; then
  "$bin_dir/pb-relay" keygen --out "$etc_dir/identity.key" >/dev/null
  say "made an identity key: $etc_dir/identity.key"
fi
chown "$user:$user" "$etc_dir/identity.key"
chmod 0600 "$etc_dir/identity.key"

if [ ! -e "$etc_dir/relay.toml" ]; then
  seed=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
  cat >"$etc_dir/relay.toml" <<EOF
# pb-relay configuration (docs/operator.md explains every field).
#
# This starter runs as-is on loopback, a network of its own, so that you can check the
# install. Before joining a network:
#   - set the addresses below to this machine's public ones;
#   - set network_seed to your network's, and add its seed relays;
#   - pick the role (gateway needs client_bind, exit has an exit policy);
#   - for AF_XDP, replace [io] with the AF_XDP section from docs/operator.md.

[node]
format = "v1"

[io]
backend = "udp"
bind = "127.0.0.1:47470"

[gossip]
bind = "127.0.0.1:47471"
seeds = []
# The starter's own loopback addresses; remove this line when joining a network on the
# Internet (descriptors naming private or loopback addresses are refused otherwise).
allow_prefix = ["127.0.0.0/8"]
network_seed = "$seed"
identity_file = "identity.key"
role = "mix"
epoch_seconds = 3600
admin = "127.0.0.1:9100"

[mix]
link_rate = 100
EOF
  say "wrote a starter configuration: $etc_dir/relay.toml"
fi
chown "root:$user" "$etc_dir/relay.toml"
chmod 0640 "$etc_dir/relay.toml"

sed -e "s|@BIN@|/${bin_dir#/}/pb-relay|g" \
    -e "s|@CONFIG@|/${etc_dir#/}/relay.toml|g" \
    -e "s|@STATE@|/${etc_dir#/}|g" \
    -e "s|@USER@|$user|g" \
    -e "s|@DOC@|/${doc_dir#/}/operator.md|g" \
    "$here/deploy/pb-relay.service" >"$unit_dir/pb-relay.service"
chmod 0644 "$unit_dir/pb-relay.service"

if [ "$prefix" = "" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi
say "installed: $bin_dir/pb-relay, $etc_dir, $unit_dir/pb-relay.service"
say "next: edit $etc_dir/relay.toml, then: systemctl enable --now pb-relay"
