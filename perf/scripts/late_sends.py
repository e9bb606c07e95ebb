#!/usr/bin/env python3
"""Reads what anonymity-trace.sh left in OUT_DIR and prints, for the idle and cpu-hog
phases: how long each CPU ran nothing at all (no scheduler or network event for more than
1 ms, while a dozen pacing threads wake every millisecond or two: the hypervisor ran
something else), and how many sends came more than THRESHOLD_MS after their median gap
(client downlinks, relay links), and how many of those a CPU's silence covered.

    python3 perf/scripts/late_sends.py OUT_DIR [THRESHOLD_MS]
"""
import collections
import re
import statistics
import sys

GATEWAY_CLIENT_PORT = ':47480'
RELAY_PORT = ':47470'
SILENCE_NS = 1_000_000

out = sys.argv[1]
threshold = float(sys.argv[2]) * 1e6 if len(sys.argv) > 2 else 2.5e6
offset = int(open(f'{out}/clock-offset').read())

downlinks = collections.defaultdict(list)
relay_links = collections.defaultdict(list)
for line in open(f'{out}/record.csv'):
    if line[0] in '#n':
        continue
    ns, src, dst, *_ = line.split(',')
    t = int(ns) - offset
    if src.endswith(GATEWAY_CLIENT_PORT):
        downlinks[dst].append(t)
    elif src.endswith(RELAY_PORT) and dst.endswith(RELAY_PORT):
        relay_links[(src, dst)].append(t)

event = re.compile(r'^\s*\S.*?\s+\d+\s+\[(\d+)\]\s+(\d+)\.(\d+):')
for phase in ('idle', 'cpu-hog'):
    last, silences, first = {}, [], None
    for line in open(f'{out}/{phase}.txt'):
        m = event.match(line)
        if not m:
            continue
        cpu, t = int(m.group(1)), int(m.group(2)) * 10**9 + int(m.group(3).ljust(9, '0'))
        first = t if first is None else first
        if cpu in last and t - last[cpu] > SILENCE_NS:
            silences.append((last[cpu], t))
        last[cpu] = t
    end = max(last.values())
    lengths = sorted((b - a) / 1e6 for a, b in silences)
    print(f'{phase}: {(end - first) / 1e9:.1f} s traced; CPU silences > 1 ms: {len(silences)}, '
          f'{sum(lengths):.1f} ms in all, longest {lengths[-3:] if lengths else []} ms')
    for name, links in (('client downlinks', downlinks), ('relay links', relay_links)):
        late = []
        for times in links.values():
            times = [t for t in times if first < t < end]
            gaps = [b - a for a, b in zip(times, times[1:])]
            if not gaps:
                continue
            median = statistics.median(gaps)
            late += [(a + median, b) for a, b in zip(times, times[1:]) if b - a > median + threshold]
        covered = sum(1 for due, sent in late
                      if any(a < sent and b > due - SILENCE_NS // 2 for a, b in silences))
        print(f'  {name}: {len(late)} sends > {threshold / 1e6:g} ms late, '
              f'{covered} during a CPU silence')
