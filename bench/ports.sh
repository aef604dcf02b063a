#!/usr/bin/env bash
# Benchmark: hairpinctl ports / enable against bridge(8) and the runbook's
# shell loops, at 200 and 1000 ports on one bridge in a scratch namespace.
# Whole process, medians (hyperfine), all in the same run. Needs root.
# Usage: bench/ports.sh [path/to/hairpinctl]   Prints a markdown section.
set -euo pipefail
BIN=$(readlink -f "${1:-./bin/hairpinctl}")
SIZES=${PORTS_SIZES:-"200 1000"}
NS="hpbench-ports-$$"
WORK=$(mktemp -d)
cleanup() { ip netns del "$NS" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM
command -v hyperfine >/dev/null || { echo "bench/ports.sh: hyperfine missing (apt-get install hyperfine)" >&2; exit 1; }

# The runbook's loops, verbatim in spirit: one process per port.
cat >"$WORK/runbook-list.sh" <<'LOOP'
for iface in $(bridge link show | grep br0 | awk '{print $2}' | cut -d@ -f1); do
  echo -n "$iface: "
  cat /sys/class/net/$iface/brport/hairpin_mode
done
LOOP
cat >"$WORK/runbook-enable.sh" <<'LOOP'
for iface in $(bridge link show | grep br0 | awk '{print $2}' | cut -d@ -f1); do
  ip link set dev $iface type bridge_slave hairpin on
  echo "Enabled hairpin on $iface"
done
LOOP

median() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(" ".join("%.6f" % r["median"] for r in d["results"]))' "$1"; }

echo "| ports | command | median | ratio |"
echo "|---:|---|---:|---:|"
for n in $SIZES; do
  ip netns del "$NS" 2>/dev/null || true
  ip netns add "$NS"
  {
    echo "link add br0 type bridge"
    for i in $(seq 1 "$n"); do echo "link add v$i type veth peer name p$i"; echo "link set v$i master br0"; done
  } >"$WORK/setup.batch"
  ip -n "$NS" -batch "$WORK/setup.batch"
  : >"$WORK/off.batch"; : >"$WORK/on.batch"
  for i in $(seq 1 "$n"); do
    echo "link set dev v$i hairpin off" >>"$WORK/off.batch"
    echo "link set dev v$i hairpin on" >>"$WORK/on.batch"
  done
  x() { ip netns exec "$NS" "$@"; }
  x hyperfine -N --warmup 3 --min-runs 30 --export-json "$WORK/list.json" \
    "$BIN ports" "bridge -d link show" >/dev/null 2>&1
  x hyperfine --shell bash --warmup 1 --runs 3 --export-json "$WORK/listloop.json" \
    "bash $WORK/runbook-list.sh" >/dev/null 2>&1
  x hyperfine -N --warmup 2 --min-runs 20 --prepare "bridge -batch $WORK/off.batch" --export-json "$WORK/enable.json" \
    "$BIN enable --bridge br0" "bridge -batch $WORK/on.batch" >/dev/null 2>&1
  x hyperfine --shell bash --runs 3 --prepare "bridge -batch $WORK/off.batch" --export-json "$WORK/enableloop.json" \
    "bash $WORK/runbook-enable.sh" >/dev/null 2>&1
  # Proof the timed enable did the work: all on after it.
  x bridge -batch "$WORK/off.batch"; x "$BIN" enable --bridge br0 >/dev/null
  off=$(x "$BIN" ports -q --hairpin off | wc -l)
  [ "$off" = 0 ] || { echo "enable left $off ports off" >&2; exit 1; }

  read -r hp br <<<"$(median "$WORK/list.json")"
  read -r loop <<<"$(median "$WORK/listloop.json")"
  read -r he bb <<<"$(median "$WORK/enable.json")"
  read -r eloop <<<"$(median "$WORK/enableloop.json")"
  python3 - "$n" "$hp" "$br" "$loop" "$he" "$bb" "$eloop" <<'PY'
import sys
n, hp, br, loop, he, bb, eloop = sys.argv[1], *map(float, sys.argv[2:])
ms = lambda s: "%.2f ms" % (s * 1000)
rows = [
  ("hairpinctl ports", hp, "%.2f× bridge -d link show" % (hp / br)),
  ("bridge -d link show", br, "1.00×"),
  ("runbook list loop", loop, "hairpinctl %.0f× faster" % (loop / hp)),
  ("hairpinctl enable --bridge br0 (off→on)", he, "%.2f× bridge -batch" % (he / bb)),
  ("bridge -batch (off→on)", bb, "1.00×"),
  ("runbook enable loop", eloop, "hairpinctl %.0f× faster" % (eloop / he)),
]
for name, t, r in rows:
    print("| %s | %s | %s | %s |" % (n, name, ms(t), r))
PY
done
