#!/usr/bin/env bash
# Benchmark: hairpinctl conntrack against conntrack-tools' `conntrack -E`
# on the same connection storm. A lab node (netops/lab, the tests' lab:
# bridge cni0, two pods, kube-proxy iptables NAT for 10.96.0.10:80 → pod 1)
# is built by bench/conntrack's helper; pod 2 (and pod 1, hairpinning)
# make as many short TCP connections to the Service as they can for
# STORM_SECONDS. Both listeners follow the node namespace at the same time:
#   hairpinctl conntrack 10.96.0.10 --netns NODE -o json --no-dump
#   ip netns exec NODE conntrack -E -d 10.96.0.10
# Reported per tool: events shown, overflows (ENOBUFS), events the kernel
# dropped for its socket (Drops in /proc/net/netlink), CPU time
# (utime+stime) per event shown, and RSS sampled every second while
# following. Needs root, Go (builds the helper) and conntrack-tools.
# Usage: bench/conntrack.sh [path/to/hairpinctl]   Prints a markdown section.
# STORM_SECONDS, STORM_WORKERS; CONNTRACK_ARGS adds options to conntrack -E
# (e.g. "-b 33554432" for the receive buffer hairpinctl uses).
set -euo pipefail
BIN=$(readlink -f "${1:-./bin/hairpinctl}")
SECS=${STORM_SECONDS:-10}
WORKERS=${STORM_WORKERS:-$(( $(nproc) * 4 ))}
CTARGS=${CONNTRACK_ARGS:-}
SVC=10.96.0.10
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
LABPID="" HPPID="" CTPID=""
cleanup() {
  for p in $HPPID $CTPID; do kill -INT "$p" 2>/dev/null || true; done
  exec 3>&- 2>/dev/null || true # EOF on the helper's stdin: it removes the lab
  [ -n "$LABPID" ] && { wait "$LABPID" 2>/dev/null || true; }
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
die() { echo "bench/conntrack.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root"
command -v conntrack >/dev/null || die "conntrack-tools missing (apt-get install conntrack)"
[ -x "$BIN" ] || die "$BIN is not executable (make build)"
. "$HERE/lab.bash"
start_lab

"$BIN" conntrack "$SVC" --netns "$NODE" -o json --no-dump >"$WORK/hp.out" 2>"$WORK/hp.err" &
HPPID=$!
# shellcheck disable=SC2086 # CONNTRACK_ARGS is a list of options
ip netns exec "$NODE" conntrack -E -d "$SVC" $CTARGS >"$WORK/ct.out" 2>"$WORK/ct.err" &
CTPID=$! # ip netns exec execs conntrack: same PID

# Inode of a process's netlink socket in the node, to find it in /proc/net/netlink.
sockinode() { ls -l "/proc/$1/fd" 2>/dev/null | sed -n 's/.*socket:\[\([0-9]*\)\]$/\1/p'; }
# Field of /proc/net/netlink (5 Rmem, 9 Drops) for the conntrack event socket of PID.
nlfield() {
  local inodes; inodes=$(sockinode "$1" | tr '\n' ' ')
  ip netns exec "$NODE" awk -v ino=" $inodes" -v f="$2" \
    '$2==12 && $4 ~ /7$/ && index(ino, " " $10 " ") {print $f; found=1} END {if (!found) print "-"}' /proc/net/netlink
}
# Both subscribed (a NETLINK_NETFILTER socket in groups 1-3) before the storm.
for _ in $(seq 100); do
  [ "$(nlfield "$HPPID" 9)" != - ] && [ "$(nlfield "$CTPID" 9)" != - ] && break
  sleep 0.1
done
[ "$(nlfield "$HPPID" 9)" != - ] || die "hairpinctl did not subscribe: $(cat "$WORK/hp.err")"
[ "$(nlfield "$CTPID" 9)" != - ] || die "conntrack -E did not subscribe: $(cat "$WORK/ct.err")"

rss() { awk '/^VmRSS/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm() { awk '/^VmHWM/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # clock ticks
HPRSS="" CTRSS=""
ip netns exec "$POD2" "$WORK/ctbench" storm "$SVC:80" "${SECS}s" "$WORKERS" >"$WORK/storm2.txt" 2>"$WORK/storm2.err" &
S2=$!
ip netns exec "$POD1" "$WORK/ctbench" storm "$SVC:80" "${SECS}s" "$(( WORKERS / 4 + 1 ))" >"$WORK/storm1.txt" 2>"$WORK/storm1.err" &
S1=$!
for _ in $(seq "$SECS"); do
  sleep 1
  HPRSS="$HPRSS $(( $(rss "$HPPID") / 1024 ))"
  CTRSS="$CTRSS $(( $(rss "$CTPID") / 1024 ))"
done
wait "$S2" "$S1"
# Let both drain what is queued (receive queue empty), then stop them.
for _ in $(seq 100); do
  [ "$(nlfield "$HPPID" 5)" = 0 ] && [ "$(nlfield "$CTPID" 5)" = 0 ] && break
  sleep 0.1
done
HPCPU=$(cpu "$HPPID") CTCPU=$(cpu "$CTPID")
HPDROPS=$(nlfield "$HPPID" 9) CTDROPS=$(nlfield "$CTPID" 9)
HPHWM=$(hwm "$HPPID") CTHWM=$(hwm "$CTPID")
kill -INT "$HPPID" "$CTPID"
wait "$HPPID" || die "hairpinctl failed: $(cat "$WORK/hp.err")"
wait "$CTPID" || true # conntrack -E exits non-zero on SIGINT
HPPID="" CTPID=""

CONNS=$(awk '{s += $2} END {print s}' "$WORK/storm1.txt" "$WORK/storm2.txt")
FAILED=$(awk '{s += $4} END {print s}' "$WORK/storm1.txt" "$WORK/storm2.txt")
FIRSTFAIL=$(sed -n 's/^first failure: //p' "$WORK/storm2.err" "$WORK/storm1.err" | head -1)
HPEV=$(grep -c '"event":"\(new\|update\|destroy\)"' "$WORK/hp.out" || true)
HPOV=$(grep -c '"event":"overflow"' "$WORK/hp.out" || true)
HPLOST=$(sed -n 's/.*(\([0-9]*\) events lost).*/\1/p' "$WORK/hp.err" | tail -1)
CTEV=$(grep -c '^ *\[\(NEW\|UPDATE\|DESTROY\)\]' "$WORK/ct.out" || true)
CTOV=$(grep -c 'ENOBUFS' "$WORK/ct.err" || true)
TICK=$(getconf CLK_TCK)

python3 - "$SECS" "$CONNS" "$FAILED" "$TICK" \
  "$HPEV" "$HPOV" "$HPLOST" "$HPDROPS" "$HPCPU" "$HPHWM" "$HPRSS" \
  "$CTEV" "$CTOV" "$CTDROPS" "$CTCPU" "$CTHWM" "$CTRSS" "$CTARGS" "$FIRSTFAIL" <<'PY'
import sys
a = sys.argv[1:]
secs, conns, failed, tick = int(a[0]), int(a[1]), int(a[2]), int(a[3])
hp = dict(ev=int(a[4]), ov=int(a[5]), lost=a[6], drops=int(a[7]), cpu=int(a[8]) / tick,
          hwm=int(a[9]) / 1024, rss=a[10].split())
ct = dict(ev=int(a[11]), ov=int(a[12]), drops=int(a[13]), cpu=int(a[14]) / tick,
          hwm=int(a[15]) / 1024, rss=a[16].split())
# Every event the kernel sent to a listener was either read or dropped.
kernel = hp["ev"] + hp["drops"]
us = lambda t: t["cpu"] / t["ev"] * 1e6 if t["ev"] else float("nan")
fail = " (first: %s)" % a[18] if failed and a[18] else ""
print("Storm: %d short connections to the Service in %d s (%d/s, %d failed%s); the kernel "
      "sent %d events for them to each listener." % (conns, secs, conns // secs, failed, fail, kernel))
print()
print("| tool | events shown | of sent | overflows (ENOBUFS) | events dropped | CPU time | CPU per event | peak RSS | RSS each second (MiB) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
ctname = "conntrack -E -d %s(conntrack-tools)" % (a[17] + " " if a[17] else "")
for name, t in (("hairpinctl conntrack -o json", hp), (ctname, ct)):
    print("| %s | %d | %.1f%% | %d | %d | %.2f s | %.2f µs | %.1f MiB | %s |" % (
        name, t["ev"], 100.0 * t["ev"] / kernel if kernel else 0, t["ov"], t["drops"],
        t["cpu"], us(t), t["hwm"], " ".join(t["rss"])))
print()
print("hairpinctl / conntrack-tools: CPU per event %.2f×, events shown %.2f×, peak RSS %.2f×." % (
    us(hp) / us(ct), hp["ev"] / ct["ev"] if ct["ev"] else float("inf"), hp["hwm"] / ct["hwm"]))
if hp["lost"] != str(hp["drops"]):
    print()
    print("NOTE: hairpinctl's summary says %s events lost, /proc/net/netlink %d dropped." % (hp["lost"], hp["drops"]))
PY
