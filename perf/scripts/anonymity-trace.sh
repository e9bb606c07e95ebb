#!/bin/bash
# Runs `pb-perf anonymity` once with the observer's recording (--record) and traces the
# scheduler (perf, sched_switch/sched_wakeup/netif_rx on every CPU) through its idle and
# cpu-hog phases, for late_sends.py: which sends came late, and whether their CPU had
# stopped running anything (the hypervisor running something else: steal).
#
#   perf/scripts/anonymity-trace.sh OUT_DIR [SECONDS]     # as root, release build
#   python3 perf/scripts/late_sends.py OUT_DIR
#
# Needs perf (Debian: linux-perf). Each phase's trace is ~10 MB a second as text.
set -euo pipefail
out=${1:?usage: anonymity-trace.sh OUT_DIR [SECONDS]}
seconds=${2:-30}
root=$(cd "$(dirname "$0")/../.." && pwd)
command -v perf >/dev/null || { echo "anonymity-trace.sh: perf not found (apt install linux-perf)" >&2; exit 1; }
mkdir -p "$out"
"$root/target/release/pb-perf" anonymity --json --seconds "$seconds" --clients 12 --fetch-kib 16 \
    --record "$out/record.csv" >"$out/rows.json" 2>"$out/progress.txt" &
harness=$!
trap 'kill $harness 2>/dev/null || true' EXIT
# perf's clock is CLOCK_MONOTONIC; the recording's is CLOCK_REALTIME.
python3 -c 'import time; print(time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_MONOTONIC))' >"$out/clock-offset"
for phase in idle cpu-hog; do
    until grep -q "] $phase:" "$out/progress.txt" 2>/dev/null; do
        kill -0 $harness 2>/dev/null || { echo "pb-perf ended early:" >&2; cat "$out/progress.txt" >&2; exit 1; }
        sleep 0.2
    done
    sleep 1
    echo "tracing $phase for $((seconds - 3)) s" >&2
    perf record -q -k mono -a -e sched:sched_switch -e sched:sched_wakeup -e net:netif_rx \
        -o "$out/$phase.perf.data" -- sleep $((seconds - 3))
    perf script -i "$out/$phase.perf.data" -F comm,tid,cpu,time,event,trace >"$out/$phase.txt" 2>/dev/null
    rm -f "$out/$phase.perf.data"
done
wait $harness
trap - EXIT
echo "done: $out" >&2
