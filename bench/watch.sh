#!/usr/bin/env bash
# Benchmark: hairpinctl watch. Time from a port joining the bridge to hairpin
# on, p50/p99 over N joins (goal: p99 < 10 ms), one at a time (seq) and back
# to back (burst, queueing included); CPU per join; idle CPU and memory.
# Everything runs in a scratch namespace: watch --all --any-port --netns NS
# (the veths' peers stay in it, so they are not pods' ports), and
# bench/watchlat adding veth pairs there and watching for hairpin on through
# the bridge's own notifications. Needs root and Go (builds watchlat).
# Usage: bench/watch.sh [path/to/hairpinctl]   Prints a markdown section.
set -euo pipefail
BIN=$(readlink -f "${1:-./bin/hairpinctl}")
N=${WATCH_JOINS:-1000}
IDLE=${WATCH_IDLE_SECONDS:-10}
NS="hpbench-watch-$$"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
WPID=""
cleanup() {
  if [ -n "$WPID" ] && kill -0 "$WPID" 2>/dev/null; then kill -TERM "$WPID" 2>/dev/null; wait "$WPID" 2>/dev/null || true; fi
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
[ "$(id -u)" = 0 ] || { echo "bench/watch.sh: needs root" >&2; exit 1; }
[ -x "$BIN" ] || { echo "bench/watch.sh: $BIN is not executable (make build)" >&2; exit 1; }

(cd "$ROOT" && CGO_ENABLED=0 go build -o "$WORK/watchlat" ./bench/watchlat)
ip netns add "$NS"
for br in cni0 cni1; do
  ip -n "$NS" link add "$br" type bridge
  ip -n "$NS" link set "$br" up
done

"$BIN" watch --all --any-port --netns "$NS" --ready-file "$WORK/ready" >"$WORK/watch.log" 2>&1 &
WPID=$!
for _ in $(seq 1 1000); do [ -e "$WORK/ready" ] && break; sleep 0.01; done
[ -e "$WORK/ready" ] || { echo "bench/watch.sh: watch not ready:" >&2; cat "$WORK/watch.log" >&2; exit 1; }

CLK=$(getconf CLK_TCK)
# utime + stime of the watch process, in clock ticks (fields 14 and 15;
# the command name has no spaces).
ticks() { awk '{print $14 + $15}' "/proc/$WPID/stat"; }
cpu_ms() { echo "scale=1; ($2 - $1) * 1000 / $CLK" | bc; }

t0=$(ticks)
"$WORK/watchlat" -netns "$NS" -bridge cni0 -n "$N" -mode seq -prefix ws >"$WORK/seq.row"
t1=$(ticks)
"$WORK/watchlat" -netns "$NS" -bridge cni1 -n "$N" -mode burst -prefix wb >"$WORK/burst.row"
# A joined port's line waits up to 2 s for its pod's name (listing the
# ports again while it waits): that belongs to the burst, not to idling.
sleep 3
t2=$(ticks)
sleep "$IDLE"
t3=$(ticks)
rss=$(awk '/^VmRSS/ {print $2 " " $3}' "/proc/$WPID/status")
hwm=$(awk '/^VmHWM/ {print $2 " " $3}' "/proc/$WPID/status")

kill -TERM "$WPID"
code=0
wait "$WPID" || code=$?
WPID=""
enabled=$(grep -c 'hairpin on' "$WORK/watch.log" || true)
resyncs=$(grep -c 're-listing' "$WORK/watch.log" || true)
failed=$(grep -c 'failed' "$WORK/watch.log" || true)

idle_pct=$(echo "scale=3; ($t3 - $t2) * 100 / ($CLK * $IDLE)" | bc)
cat <<EOF
### hairpinctl watch: join → hairpin on

Machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), kernel $(uname -r).
\`hairpinctl watch --all --any-port\` in a scratch namespace. Ports are veth pairs,
created beforehand and joined to the bridge as the CNI bridge plugin does
(RTM_SETLINK, IFLA_MASTER). Each span runs from just before the joining call
to the bridge's notification of hairpin on, read on the benchmark's own
subscription: an upper bound, the call and the reader's wake-up included.
seq: one join at a time; burst: all joins back to back.

| mode | joins | join → on p50 | p90 | p99 | max | wall time |
|---|---|---|---|---|---|---|
$(cat "$WORK/seq.row")
$(cat "$WORK/burst.row")

| watch process | |
|---|---|
| CPU for the $N seq joins | $(cpu_ms "$t0" "$t1") ms ($(echo "scale=1; ($t1 - $t0) * 1000000 / $CLK / $N" | bc) µs per join) |
| CPU for the $N burst joins (and their lines' wait for pod names) | $(cpu_ms "$t1" "$t2") ms |
| idle CPU over ${IDLE} s ($((2 * N)) ports watched) | $(cpu_ms "$t2" "$t3") ms (${idle_pct} %; clock tick $((1000 / CLK)) ms) |
| memory (RSS now / peak) | $rss / $hwm |
| lines logged: hairpin on / re-listing / failed | $enabled / $resyncs / $failed |
| exit status after SIGTERM | $code |
EOF
[ "$code" = 0 ] && [ "$enabled" = $((2 * N)) ] && [ "$failed" = 0 ]
