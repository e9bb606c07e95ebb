#!/usr/bin/env bash
# Installs pb-client in Termux on Android (no root). Run inside Termux:
#
#   bash termux-install.sh --binary ./pb-client   # a static aarch64 pb-client (docs/termux.md)
#   bash termux-install.sh --build                # build it here: pkg install rust, then cargo
#                                                 # (needs this repository and some patience)
#
# Installs $PREFIX/bin/pb-client and $PREFIX/bin/pb-client-phone, which keeps the phone awake
# (termux-wake-lock, if Termux:API is there) and runs the low-power profile. Nothing else is
# written: pb-client itself keeps no files. PREFIX is Termux's (set by Termux); outside
# Termux, set it to try the script.
set -euo pipefail

say() { printf 'termux-install: %s\n' "$*" >&2; }
die() { printf 'termux-install: error: %s\n' "$*" >&2; exit 1; }

[ -n "${PREFIX:-}" ] || die "PREFIX is not set: run this inside Termux"
binary=
build=false
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --build) build=true; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
if $build; then
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  command -v cargo >/dev/null || { say "installing rust (pkg install rust)"; pkg install -y rust; }
  (cd "$here" && cargo build --release --locked -p pb-client)
  binary=$here/target/release/pb-client
fi
[ -n "$binary" ] || die "give --binary PATH or --build (see --help)"
[ -f "$binary" ] || die "$binary does not exist"

mkdir -p "$PREFIX/bin"
install -m 0755 "$binary" "$PREFIX/bin/pb-client"
"$PREFIX/bin/pb-client" --version >/dev/null 2>&1 ||
  die "$PREFIX/bin/pb-client does not run here: is it built for this phone (aarch64-unknown-linux-musl)?"
cat >"$PREFIX/bin/pb-client-phone" <<'WRAPPER'
#!/usr/bin/env bash
# pb-client for a phone: low-power profile, phone kept awake while it runs.
command -v termux-wake-lock >/dev/null && termux-wake-lock
trap 'command -v termux-wake-unlock >/dev/null && termux-wake-unlock' EXIT
pb-client --profile low-power "$@"
WRAPPER
chmod 0755 "$PREFIX/bin/pb-client-phone"
say "installed $PREFIX/bin/pb-client and pb-client-phone"
say "run: pb-client-phone   (add --gateway ADDR:PORT --gateway-key HEX --network-seed HEX unless built in)"
say "then point apps at SOCKS5 127.0.0.1:1080 with remote DNS (docs/termux.md)"
