#!/usr/bin/env bash
# Installs everything PhantomBand needs to build and test, on Debian 12 as root. Idempotent:
# each step checks first and does nothing when its piece is already there.
#
#   deploy/setup.sh          # what `make test` and `make demo` run first
#
# Installs: Debian build and test packages; the Rust toolchain pinned in rust-toolchain.toml
# (with rustfmt and clippy); the nightly pinned in ebpf/pb-xdp/rust-toolchain.toml with
# rust-src (the XDP program needs -Z build-std); bpf-linker linked against that nightly's own
# libLLVM; the aarch64-unknown-linux-musl target and qemu-user for the ARM client builds.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (installs Debian packages and rust toolchains)"

# --- Debian packages ---------------------------------------------------------------------
packages=(
  build-essential pkg-config make m4 cmake curl ca-certificates git
  clang llvm libclang-dev libelf-dev zlib1g-dev libpcap-dev   # xsk-rs builds libxdp/libbpf
  iproute2 iputils-ping nftables procps                        # netns testbeds
  qemu-user                                                    # aarch64 client tests
  libcap2-bin passwd systemd                                   # deploy/install.sh and its test
  golang-go golang-golang-x-mod-dev                            # Go's signed-note peer (interop)
  ngtcp2-client tshark python3-websockets                      # transports' real peers
  python3-socks python3-dnslib bind9-dnsutils                  # SOCKS5 UDP and VPN DNS peers (pb-client)
  obfs4proxy                                                   # obfs4 interop (transports/obfs4)
  unbound                                                      # the DoH resolver (transports/doh)
  nginx-light nsd ngtcp2-server                                # covers for the probe suite (pb-perf probe)
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The tests run unbound, nginx, NSD and ngtcp2's server themselves, in namespaces; the
# packages' own services are not wanted (they must not take ports 53, 80 or 443, or change
# /etc/resolv.conf).
if command -v systemctl >/dev/null; then
  for unit in unbound unbound-resolvconf nginx nsd ngtcp2d; do
    systemctl is-enabled -q "$unit" 2>/dev/null && systemctl disable -q --now "$unit" 2>/dev/null || true
  done
fi

# --- Rust ----------------------------------------------------------------------------------
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
command -v rustup >/dev/null || die "rustup not found: install it (https://rustup.rs) and re-run"

channel_of() { sed -n 's/^[[:space:]]*channel[[:space:]]*=[[:space:]]*"\(.*\)".*/\1/p' "$1" | head -1; }
host_tc=$(channel_of "$here/rust-toolchain.toml")
ebpf_tc=$(channel_of "$here/ebpf/pb-xdp/rust-toolchain.toml")
[ -n "$host_tc" ] && [ -n "$ebpf_tc" ] || die "cannot read the pinned toolchains"

has_component() { rustup component list --toolchain "$1" --installed 2>/dev/null | grep -q "^$2"; }
if ! has_component "$host_tc" rustc || ! has_component "$host_tc" clippy || ! has_component "$host_tc" rustfmt; then
  say "installing Rust $host_tc with clippy and rustfmt"
  rustup toolchain install "$host_tc" --profile minimal --component clippy,rustfmt
fi
if ! rustup target list --toolchain "$host_tc" --installed | grep -q aarch64-unknown-linux-musl; then
  say "adding target aarch64-unknown-linux-musl"
  rustup target add --toolchain "$host_tc" aarch64-unknown-linux-musl
fi
if ! has_component "$ebpf_tc" rust-src || ! has_component "$ebpf_tc" clippy || ! has_component "$ebpf_tc" rustfmt; then
  say "installing $ebpf_tc with rust-src, clippy and rustfmt (for the XDP program)"
  rustup toolchain install "$ebpf_tc" --profile minimal --component rust-src,clippy,rustfmt
fi

# --- bpf-linker against the pinned nightly's libLLVM --------------------------------------
bpf_linker_version=0.13.0
llvm_dir=/opt/phantomband/bpf-llvm
stamp="$llvm_dir/stamp"
want_stamp="bpf-linker $bpf_linker_version for $ebpf_tc"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want_stamp" ] || ! bpf-linker --version >/dev/null 2>&1; then
  sysroot=$(rustc +"$ebpf_tc" --print sysroot)
  llvm_major=$(rustc +"$ebpf_tc" -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
  lib=$(ls "$sysroot"/lib/libLLVM.so.*-rust-* 2>/dev/null | head -1)
  [ -n "$lib" ] && [ -n "$llvm_major" ] || die "no libLLVM in $sysroot/lib"
  say "building bpf-linker $bpf_linker_version against $ebpf_tc's LLVM $llvm_major (about 2 minutes)"
  rm -rf "$llvm_dir/lib"
  mkdir -p "$llvm_dir/lib"
  ln -sf "$lib" "$llvm_dir/lib/libLLVM.so"
  ln -sf "$lib" "$llvm_dir/lib/"
  LLVM_PREFIX="$llvm_dir" cargo +"$host_tc" install bpf-linker --version "$bpf_linker_version" \
    --locked --force --no-default-features --features "llvm-$llvm_major"
  bpf-linker --version >/dev/null || die "bpf-linker was built but does not run"
  echo "$want_stamp" > "$stamp"
fi

# --- cargo-fuzz (the test command runs every fuzz target briefly) ---------------------------
cargo_fuzz_version=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$cargo_fuzz_version"; then
  say "installing cargo-fuzz $cargo_fuzz_version"
  cargo +"$host_tc" install cargo-fuzz --version "$cargo_fuzz_version" --locked --force
fi

# --- kernel facilities the tests use -------------------------------------------------------
mountpoint -q /sys/fs/bpf 2>/dev/null || mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true
ip netns list >/dev/null || die "network namespaces unavailable (ip netns list failed)"

# The test build takes about 8 GiB under target/; the linker dies of SIGBUS on a full disk.
free_gib=$(df --output=avail -BG . 2>/dev/null | tail -1 | tr -dc 0-9)
if [ -n "$free_gib" ] && [ "$free_gib" -lt 12 ]; then
  say "warning: only ${free_gib} GiB free here; a full build and test run needs about 12 GiB"
fi

say "ready: Rust $host_tc, eBPF $ebpf_tc, $(bpf-linker --version)"
