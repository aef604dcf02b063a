#!/usr/bin/env bash
# Benchmark: hairpinctl probe (20 connections from a pod to its Service,
# made from the node) against the runbook's test, twenty connections made
# one after the other from inside the pod (`kubectl exec $POD -- curl
# $SVC_IP`, here bash's /dev/tcp under `ip netns exec`, without kubectl's
# own cost). The lab node is bench/conntrack's (netops/lab: cni0, two pods,
# kube-proxy iptables NAT for 10.96.0.10:80 → pod 1, hairpin on), so pod 1
# reaches itself. Whole processes, medians (hyperfine); the probe's own
# connection phase (durationMs of -o json) too; then one probe with pod 1's
# hairpin off, which should take about --timeout.
# Needs root, Go (builds the helper) and hyperfine.
# Usage: bench/probe.sh [path/to/hairpinctl]   Prints a markdown section.
set -euo pipefail
BIN=$(readlink -f "${1:-./bin/hairpinctl}")
SVC=10.96.0.10
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
LABPID=""
cleanup() {
  exec 3>&- 2>/dev/null || true # EOF on the helper's stdin: it removes the lab
  [ -n "$LABPID" ] && { wait "$LABPID" 2>/dev/null || true; }
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
die() { echo "bench/probe.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root"
command -v hyperfine >/dev/null || die "hyperfine missing (apt-get install hyperfine)"
[ -x "$BIN" ] || die "$BIN is not executable (make build)"
. "$HERE/lab.bash"
start_lab

PROBE="$BIN --netns $NODE probe veth1 $SVC:80"
"$BIN" --netns "$NODE" probe veth1 "$SVC:80" >/dev/null || die "the healthy probe failed: $($PROBE 2>&1)"
cat >"$WORK/loop.sh" <<LOOP
for i in \$(seq 20); do
  timeout 2 bash -c 'exec 3<>/dev/tcp/$SVC/80 && head -n1 <&3' >/dev/null || echo Failed
done
LOOP
hyperfine -N --warmup 3 --min-runs 20 --export-json "$WORK/h.json" \
  "$PROBE" "$PROBE --no-trace" "ip netns exec $POD1 bash $WORK/loop.sh" >/dev/null 2>&1

# The probe's connection phase alone, as it reports it.
for _ in $(seq 20); do
  $PROBE -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["durationMs"])'
done >"$WORK/phase.txt"

ip -n "$NODE" link set dev veth1 type bridge_slave hairpin off
FAILSTART=$(date +%s.%N)
set +e
$PROBE --timeout 1s >/dev/null
FAILCODE=$?
set -e
FAILEND=$(date +%s.%N)
ip -n "$NODE" link set dev veth1 type bridge_slave hairpin on

python3 - "$WORK/h.json" "$WORK/phase.txt" "$FAILSTART" "$FAILEND" "$FAILCODE" <<'PY'
import json, statistics, sys
h = json.load(open(sys.argv[1]))["results"]
phase = [float(x) for x in open(sys.argv[2]).read().split()]
med = [statistics.median(r["times"]) * 1000 for r in h]
names = ["hairpinctl probe (20 connections, bridge traced)", "hairpinctl probe --no-trace", "20 connections one after the other in the pod (bash /dev/tcp)"]
print("## probe (bench/probe.sh)\n")
print("| command | median | min | max |")
print("|---|---:|---:|---:|")
for n, r, m in zip(names, h, med):
    print(f"| {n} | {m:.1f} ms | {min(r['times'])*1000:.1f} ms | {max(r['times'])*1000:.1f} ms |")
print()
print(f"The probe's connection phase (durationMs, 20 runs): median {statistics.median(phase):.2f} ms, max {max(phase):.2f} ms.")
print(f"hairpinctl probe / the loop: {med[0]/med[2]:.2f}x. Tracing adds {med[0]-med[1]:.1f} ms.")
print(f"With pod 1's hairpin off, one probe --timeout 1s took {float(sys.argv[4])-float(sys.argv[3]):.2f} s (exit {sys.argv[5]}).")
PY
