# PhantomBand: the two commands are `make demo` (the main job) and `make test` (everything CI
# runs). Both install what they need first (deploy/setup.sh, idempotent; Debian 12, root).
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
EBPF_DIR := ebpf/pb-xdp
FUZZ_DIRS := dataplane/sphinx/fuzz control/core/fuzz client-lite/proto/fuzz transports/link/fuzz \
	transports/quic/fuzz transports/wss/fuzz transports/obfs4/fuzz transports/doh/fuzz \
	control/ledger/fuzz
# Each fuzz target as <crate folder>:<target>.
FUZZ_TARGETS := dataplane/sphinx/fuzz:process dataplane/sphinx/fuzz:surb control/core/fuzz:gossip control/core/fuzz:checkpoint \
	client-lite/proto/fuzz:socks client-lite/proto/fuzz:socks_udp client-lite/proto/fuzz:app_dns client-lite/proto/fuzz:session transports/link/fuzz:records \
	transports/quic/fuzz:h3 transports/wss/fuzz:server transports/obfs4/fuzz:codec \
	transports/doh/fuzz:dns control/ledger/fuzz:entries
# Seconds each fuzz target runs in `make test` (longer runs: make fuzz FUZZ_SECONDS=600):
# the committed corpus replays in well under a second, the rest finds shallow bugs.
FUZZ_SECONDS ?= 10
AARCH64 := aarch64-unknown-linux-musl
AARCH64_ENV := CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld \
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUNNER=qemu-aarch64 \
	CC_aarch64_unknown_linux_musl=clang \
	CFLAGS_aarch64_unknown_linux_musl=--target=aarch64-linux-musl

# A CI run builds once, from clean: incremental caches would only take disk (several GiB on
# top of the ~8 GiB the test build needs).
ifeq ($(CI),true)
export CARGO_INCREMENTAL := 0
endif

.PHONY: setup demo test test-steps lint build-aarch64 test-host test-aarch64 fuzz

setup:
	@deploy/setup.sh

# The main job: a whole network (eight relays, a web server, pb-client on 127.0.0.1:1080), a
# fetch through it and a summary; then up until Ctrl-C. As root the relays run in network
# namespaces on AF_XDP with the XDP program on their veths, otherwise on loopback over UDP
# (DEMO_ARGS=--backend udp picks loopback as root too).
# `make demo PB_DEMO_EXIT=1` (or DEMO_ARGS=--exit-after-summary) stops after the summary.
# DEMO_PROFILE=dev uses the debug build (what the test of this target does).
DEMO_PROFILE ?= release
DEMO_BIN := target/$(if $(filter dev,$(DEMO_PROFILE)),debug,$(DEMO_PROFILE))
# pb-client is built with the demo network's file in it (PB_NETWORK_FILE), so it runs with no
# network argument, as a client built for a real network would.
# (The same three packages both times, so that the second build only rebuilds pb-client.)
DEMO_PACKAGES := -p pb-relay -p pb-client -p pb-perf
demo: setup
	cargo build --profile $(DEMO_PROFILE) --locked $(DEMO_PACKAGES)
	$(DEMO_BIN)/pb-perf testnet $(DEMO_ARGS) --write-network-file target/demo-network.txt
	PB_NETWORK_FILE=$(CURDIR)/target/demo-network.txt cargo build --profile $(DEMO_PROFILE) --locked $(DEMO_PACKAGES)
	$(DEMO_BIN)/pb-perf testnet $(DEMO_ARGS)

# Runs every step, then closes with one line adding up all the cargo test results. A test
# that needs root and returns early without it prints `skipping NAME: … (needs root …)`
# (pb_testbed::require_privileged); cargo counts it as passed, this line as skipped.
test: setup
	@mkdir -p target
	@set -o pipefail; $(MAKE) --no-print-directory test-steps 2>&1 | tee target/test.log; \
	status=$$?; \
	awk '/^test result:/ { p += $$4; f += $$6; i += $$8 } /skipping [^ ]+: .*needs root for network namespaces/ { s += 1 } END { printf "%d passed, %d failed, %d skipped\n", p - s, f, i + s }' target/test.log; \
	exit $$status

test-steps: lint build-aarch64 test-host test-aarch64 fuzz

lint:
	cargo fmt --all -- --check
	cd $(EBPF_DIR) && cargo fmt -- --check
	for d in $(FUZZ_DIRS); do (cd $$d && cargo fmt -- --check) || exit 1; done
	cargo clippy --workspace --all-targets --locked -- -D warnings
	cd $(EBPF_DIR) && cargo clippy --release --locked --target bpfel-unknown-none -Z build-std=core -- -D warnings

# The static aarch64 pb-client, which client-lite/client/tests/e2e.rs runs under qemu-aarch64
# in the netns testbed (so it is built before the host tests).
build-aarch64:
	$(AARCH64_ENV) cargo build --locked -p pb-client --target $(AARCH64)

test-host:
	cargo test --workspace --locked

# ARM phones run client-lite: the crates it shares with relays, as static aarch64-musl test
# binaries under qemu-aarch64 (the spec's vectors must come out the same on ARM).
test-aarch64:
	$(AARCH64_ENV) cargo test --locked -p pb-xdp-common --target $(AARCH64)
	$(AARCH64_ENV) cargo test --locked -p pb-sphinx --target $(AARCH64) --lib --test roundtrip --test vectors
	$(AARCH64_ENV) cargo test --locked -p pb-x25519-batch --target $(AARCH64)
	$(AARCH64_ENV) cargo test --locked -p pb-proto --target $(AARCH64)
	$(AARCH64_ENV) cargo test --locked -p pb-link --target $(AARCH64)
	$(AARCH64_ENV) cargo test --locked -p pb-quic --no-default-features --target $(AARCH64) --lib
	$(AARCH64_ENV) cargo test --locked -p pb-wss --target $(AARCH64) --lib --test memory --test loopback
	$(AARCH64_ENV) cargo test --locked -p pb-client --target $(AARCH64) --bins

# Every fuzz target for FUZZ_SECONDS from the committed seed corpus; new inputs go to a
# scratch directory so the tree stays clean. A crash fails the run (artifacts/ keeps it).
# The fuzz crates share one target directory, so that what they have in common (libFuzzer,
# the crypto crates, our own) is built once: from scratch the eight fuzz crates took 654 s
# to build apart and 294 s together (2026-12-07). Every crate's targets are built first;
# then the targets run two at a time, each fuzzing on a core of its own for FUZZ_SECONDS
# (one after the other they left a core idle for two minutes of every CI run).
FUZZ_JOBS ?= 2
# AddressSanitizer finds memory errors only where there is unsafe code: of the fuzzed code
# only pb-sphinx's path has ours (pb-x25519-batch's AVX2 lanes). The other crates forbid
# unsafe and fuzz without it (cargo-fuzz's advice for safe code), which builds them about
# a third faster (transports/doh/fuzz: 96 s against 66 s from scratch) and runs more inputs
# in the same time. `make fuzz FUZZ_ASAN_DIRS="$(FUZZ_DIRS)"` puts it back everywhere.
FUZZ_ASAN_DIRS ?= dataplane/sphinx/fuzz
fuzz_sanitizer = $(if $(filter $(1),$(FUZZ_ASAN_DIRS)),address,none)
# The folder of fuzz target $(1), from FUZZ_TARGETS.
fuzz_dir = $(patsubst %:$(1),%,$(filter %:$(1),$(FUZZ_TARGETS)))
FUZZ_RUNS := $(addprefix fuzz-run-,$(notdir $(subst :,/,$(FUZZ_TARGETS))))
fuzz:
	@$(foreach d,$(FUZZ_DIRS),echo "fuzz: building $(d) (sanitizer: $(call fuzz_sanitizer,$(d)))" && \
	  (cd $(d) && CARGO_TARGET_DIR=$(CURDIR)/target/fuzz cargo fuzz build -s $(call fuzz_sanitizer,$(d))) && ) true
	@$(MAKE) --no-print-directory -j$(FUZZ_JOBS) --output-sync=target $(FUZZ_RUNS)

# One fuzz target by name (its folder looked up in FUZZ_TARGETS), e.g. `make fuzz-run-socks`.
fuzz-run-%:
	@set -o pipefail; d='$(call fuzz_dir,$*)'; \
	if [ -z "$$d" ]; then echo "fuzz: no target $* in FUZZ_TARGETS" >&2; exit 2; fi; \
	mkdir -p target/fuzz-corpus/$*; \
	echo "fuzz: $* for $(FUZZ_SECONDS)s"; \
	cd $$d && CARGO_TARGET_DIR=$(CURDIR)/target/fuzz cargo fuzz run -s $(call fuzz_sanitizer,$(call fuzz_dir,$*)) \
	  $* $(CURDIR)/target/fuzz-corpus/$* corpus/$* -- \
	  -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -print_final_stats=1 2>&1 | tail -4
