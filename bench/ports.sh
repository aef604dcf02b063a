#!/usr/bin/env bash
# Benchmark: hairpinctl ports / enable against bridge(8) and the runbook's
# shell loops, at 200 and 1000 ports on one bridge in a scratch namespace.
# Whole process, medians (hyperfine, by turns: see byturns), all in the
# same run. Needs root.
# Layout "pods" (the realistic one): every port's peer is eth0 in its own pod
# namespace with an address, so hairpinctl ports also finds each pod's IP.
# Layout "flat": the peers stay in the node namespace without addresses.
# In the pods layout bench/cnicache writes, with libcni's own code, the result
# cache a runtime would keep for those pods, and ports is timed with the pod
# names read from it and without (an empty cache directory).
# Beside them run two Go floors, built as hairpinctl is: bench/hello (a
# static Go program's start-up alone) and bench/portsfloor (the same netops
# dump and hairpin writes without the CLI), so a ratio's share that no Go
# program avoids, and the share that is hairpinctl's own start-up, are
# measured in the same run.
# Usage: bench/ports.sh [path/to/hairpinctl]   Prints a markdown section.
set -euo pipefail
BIN=$(readlink -f "${1:-./bin/hairpinctl}")
SIZES=${PORTS_SIZES:-"200 1000"}
LAYOUTS=${PORTS_LAYOUTS:-"pods flat"}
NS="hpbench-ports-$$"
WORK=$(mktemp -d)
PODS=0
delpods() {
  [ "$PODS" -gt 0 ] || return 0
  for i in $(seq 1 "$PODS"); do echo "netns del $NS-p$i"; done | ip -force -batch - 2>/dev/null || true
  PODS=0
}
cleanup() { delpods; ip netns del "$NS" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM
command -v hyperfine >/dev/null || { echo "bench/ports.sh: hyperfine missing (apt-get install hyperfine)" >&2; exit 1; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
for tool in cnicache hello portsfloor; do
  (cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$WORK/$tool" "./bench/$tool") || { echo "bench/ports.sh: cannot build bench/$tool" >&2; exit 1; }
done
NOCACHE="--cni-cache=$WORK/no-cni-cache"

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

# byturns OUT ROUNDS [hyperfine options...] -- COMMAND...: hyperfine in
# ROUNDS short rounds over all the commands, not one long batch per
# command: the load of a shared machine drifts over a minute, and by turns
# the drift falls on every command alike. Each round starts one command
# further on, so no command always runs first. OUT gets each command's
# median over all rounds, in the order given, in hyperfine's export format.
byturns() {
  local out=$1 rounds=$2 opts=() r i n
  shift 2
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do opts+=("$1"); shift; done
  [ $# -gt 0 ] || { echo "byturns: no -- before the commands" >&2; exit 1; }
  shift
  local cmds=("$@")
  n=${#cmds[@]}
  for r in $(seq 0 $((rounds - 1))); do
    local turn=()
    for i in $(seq 0 $((n - 1))); do turn+=("${cmds[$(((i + r) % n))]}"); done
    x hyperfine -N "${opts[@]}" --export-json "$out.$r" "${turn[@]}" >/dev/null 2>&1
  done
  python3 - "$out" "$rounds" "${cmds[@]}" <<'PY'
import json, statistics, sys
out, rounds, cmds = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
times = {c: [] for c in cmds}
for r in range(rounds):
    for x in json.load(open("%s.%d" % (out, r)))["results"]:
        times[x["command"]].extend(x["times"])
json.dump({"results": [{"median": statistics.median(times[c])} for c in cmds]}, open(out, "w"))
PY
}

echo "| layout | ports | command | median | ratio |"
echo "|---|---:|---|---:|---:|"
for layout in $LAYOUTS; do
for n in $SIZES; do
  delpods
  ip netns del "$NS" 2>/dev/null || true
  ip netns add "$NS"
  if [ "$layout" = pods ]; then
    for i in $(seq 1 "$n"); do echo "netns add $NS-p$i"; done | ip -batch -
    PODS=$n
    {
      echo "link add br0 type bridge"
      for i in $(seq 1 "$n"); do echo "link add v$i type veth peer name eth0 netns $NS-p$i"; echo "link set v$i master br0 up"; done
    } >"$WORK/setup.batch"
    ip netns exec "$NS" ip -batch "$WORK/setup.batch"
    for i in $(seq 1 "$n"); do
      ip -n "$NS-p$i" addr add "10.$((64 + i / 250)).$((i % 250)).10/32" dev eth0
    done
    rm -rf "$WORK/cni"
    ip netns exec "$NS" "$WORK/cnicache" write "$WORK/cni" "$NS" "$n"
  else
    {
      echo "link add br0 type bridge"
      for i in $(seq 1 "$n"); do echo "link add v$i type veth peer name p$i"; echo "link set v$i master br0"; done
    } >"$WORK/setup.batch"
    ip -n "$NS" -batch "$WORK/setup.batch"
  fi
  # enable leaves ports that are not pods' alone (the flat layout's peers
  # stay in the node namespace); bridge -batch sets them all, so do all.
  ANY=""; FLOORENABLE="enable"
  [ "$layout" = pods ] || { ANY="--any-port"; FLOORENABLE="enable-any"; }
  : >"$WORK/off.batch"; : >"$WORK/on.batch"
  for i in $(seq 1 "$n"); do
    echo "link set dev v$i hairpin off" >>"$WORK/off.batch"
    echo "link set dev v$i hairpin on" >>"$WORK/on.batch"
  done
  x() { ip netns exec "$NS" "$@"; }
  byturns "$WORK/list.json" 8 --warmup 1 --runs 5 -- \
    "$BIN ports $NOCACHE" "bridge -d link show" "$BIN ports -q" "$WORK/hello" "$WORK/portsfloor" \
    "$WORK/portsfloor links" "$WORK/portsfloor podips"
  listed=$(x "$WORK/portsfloor" | wc -l)
  [ "$listed" = "$n" ] || { echo "portsfloor listed $listed of $n ports" >&2; exit 1; }
  if [ "$layout" = pods ]; then
    withips=$(x "$WORK/portsfloor" podips | awk 'NF > 1' | wc -l)
    [ "$withips" = "$n" ] || { echo "portsfloor podips found $withips of $n pod IPs" >&2; exit 1; }
  fi
  hn=0
  if [ "$layout" = pods ]; then
    # Run by turns, not one batch after the other as hyperfine does, so
    # a change of load on the machine falls on both alike.
    x python3 - "$WORK/names.json" "$BIN ports $NOCACHE" "$BIN ports --cni-cache=$WORK/cni" <<'PY'
import json, statistics, subprocess, sys, time
out, cmds = sys.argv[1], [c.split() for c in sys.argv[2:]]
times = [[] for _ in cmds]
for r in range(5 + 60):
    for i, c in enumerate(cmds):
        t = time.perf_counter()
        subprocess.run(c, stdout=subprocess.DEVNULL, check=True)
        if r >= 5:
            times[i].append(time.perf_counter() - t)
json.dump({"results": [{"median": statistics.median(t)} for t in times]}, open(out, "w"))
PY
    named=$(x "$BIN" ports -o json --cni-cache="$WORK/cni" | python3 -c 'import json,sys; print(sum(1 for p in json.load(sys.stdin) if p.get("pod", {}).get("name") == "pod-" + p["name"][1:]))')
    [ "$named" = "$n" ] || { echo "ports named $named of $n pods" >&2; exit 1; }
    read -r hp0 hn <<<"$(median "$WORK/names.json")"
  fi
  x hyperfine --shell bash --warmup 1 --runs 3 --export-json "$WORK/listloop.json" \
    "bash $WORK/runbook-list.sh" >/dev/null 2>&1
  byturns "$WORK/enable.json" 6 --warmup 1 --runs 4 --prepare "bridge -batch $WORK/off.batch" -- \
    "$BIN enable --bridge br0 $ANY" "bridge -batch $WORK/on.batch" "$WORK/portsfloor $FLOORENABLE br0"
  x hyperfine --shell bash --runs 3 --prepare "bridge -batch $WORK/off.batch" --export-json "$WORK/enableloop.json" \
    "bash $WORK/runbook-enable.sh" >/dev/null 2>&1
  # Proof the timed enable did the work: all on after it.
  x bridge -batch "$WORK/off.batch"; x "$BIN" enable --bridge br0 $ANY >/dev/null
  off=$(x "$BIN" ports -q --hairpin off | wc -l)
  [ "$off" = 0 ] || { echo "enable left $off ports off" >&2; exit 1; }
  if [ "$layout" = pods ]; then
    known=$(x "$BIN" ports -o json $NOCACHE | python3 -c 'import json,sys; print(sum(1 for p in json.load(sys.stdin) if p["podIPs"]))')
    [ "$known" = "$n" ] || { echo "ports found $known of $n pod IPs" >&2; exit 1; }
  fi

  read -r hp br hq hello floor flinks fips <<<"$(median "$WORK/list.json")"
  read -r loop <<<"$(median "$WORK/listloop.json")"
  read -r he bb fe <<<"$(median "$WORK/enable.json")"
  read -r eloop <<<"$(median "$WORK/enableloop.json")"
  python3 - "$layout" "$n" "$hp" "$br" "$loop" "$he" "$bb" "$eloop" "$hq" "$hn" "${hp0:-0}" "$hello" "$floor" "$fe" "$flinks" "$fips" <<'PY'
import sys
layout, n = sys.argv[1:3]
hp, br, loop, he, bb, eloop, hq, hn, hp0, hello, floor, fe, flinks, fips = map(float, sys.argv[3:])
ms = lambda s: "%.2f ms" % (s * 1000)
rows = [
  ("hairpinctl ports (with pod IPs)", hp, "%.2f× bridge -d link show" % (hp / br)),
] + ([
  ("hairpinctl ports, pod names from a libcni cache of %s" % n, hn, "%.2f× ports without names (%.2f ms alongside)" % (hn / hp0, hp0 * 1000)),
] if hn else []) + [
  ("hairpinctl ports -q", hq, "%.2f× bridge -d link show" % (hq / br)),
  ("bridge -d link show", br, "1.00×"),
  ("Go floor: hello (start-up only)", hello, "%.2f× bridge -d link show" % (hello / br)),
  ("Go floor: portsfloor (dump, print names)", floor, "%.2f× bridge -d link show" % (floor / br)),
  ("Go floor: portsfloor links (the AF_UNSPEC dump)", flinks, "%.2f× bridge -d link show" % (flinks / br)),
  ("Go floor: portsfloor podips (and the pods' addresses)", fips, "%.2f× bridge -d link show" % (fips / br)),
  ("runbook list loop", loop, "hairpinctl %.0f× faster" % (loop / hp)),
  ("hairpinctl enable --bridge br0 (off→on)", he, "%.2f× bridge -batch" % (he / bb)),
  ("bridge -batch (off→on)", bb, "1.00×"),
  ("Go floor: portsfloor %s (off→on)" % ("enable" if layout == "pods" else "enable-any"), fe, "%.2f× bridge -batch" % (fe / bb)),
  ("runbook enable loop", eloop, "hairpinctl %.0f× faster" % (eloop / he)),
]
for name, t, r in rows:
    print("| %s | %s | %s | %s | %s |" % (layout, n, name, ms(t), r))
PY
done
done
