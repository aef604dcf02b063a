#!/usr/bin/env bash
# Benchmark: hairpinctl services against the tools an admin would run, on
# 10,000 services x 5 endpoints generated as kube-proxy writes them and
# loaded into scratch namespaces: with iptables-nft-restore, with
# iptables-legacy-restore, and (as kube-proxy's nftables mode) with nft -f.
#   full dump:   hairpinctl services -o json     vs  <backend>-save -t nat
#                                                   (nft list table ip kube-proxy)
#   one service: hairpinctl services 10.96.x.y   vs  <the same> | grep 10.96.x.y
#   peak RSS:    hairpinctl's own (VmHWM, sampled; /usr/bin/time would report
#                its iptables-save child's) and the reference tool's.
# nftables mode is measured on the table the real kube-proxy 1.37 wrote for
# BENCH_NFT_SERVICES × BENCH_NFT_ENDPOINTS Services of the lab's API
# (BENCH_NFT_FIXTURE, made once by `make kube-bench-fixture`; the Services of
# namespace bench, one endpoint of each on this node), when the file
# exists; else on the generated table above, and says so.
# Whole processes, medians of runs interleaved with the reference's (the
# machine is shared, so load drifts between hyperfine batches): FULL_RUNS
# for the full dumps, RUNS for the rest. Needs root,
# python3 and /usr/bin/time (apt-get install time).
# Usage: bench/services.sh [path/to/hairpinctl]   Prints a markdown section.
set -euo pipefail
BIN=$(readlink -f "${1:-./bin/hairpinctl}")
SERVICES=${SERVICES:-10000}
ENDPOINTS=${ENDPOINTS:-5}
RUNS=${RUNS:-11}
# The full dumps carry the budgets: on the shared machine of
# docs/benchmarks.md the ratio of two medians of 11 runs ranged from 0.92
# to 1.20× for the same code.
FULL_RUNS=${FULL_RUNS:-31}
BACKENDS=${BACKENDS:-"iptables-nft iptables-legacy nftables"}
BENCH_NFT_SERVICES=${BENCH_NFT_SERVICES:-10000}
BENCH_NFT_ENDPOINTS=${BENCH_NFT_ENDPOINTS:-5}
BENCH_NFT_FIXTURE=${BENCH_NFT_FIXTURE:-${KUBE_LAB_CACHE:-/var/cache/hairpinctl-kube-lab}/bench/nft-v1.37.2-${BENCH_NFT_SERVICES}x${BENCH_NFT_ENDPOINTS}.txt}
MID=$((SERVICES / 2 + 6)) # a service in the middle of the table
TARGET_IP="10.96.$((MID / 250)).$((MID % 250 + 1))"
PRE="hpbench-svc-$$"
WORK=$(mktemp -d)
cleanup() {
  for b in $BACKENDS; do ip netns del "$PRE-$b" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
[ "$(id -u)" = 0 ] || { echo "bench/services.sh: run as root" >&2; exit 1; }
[ -x "$BIN" ] || { echo "bench/services.sh: no hairpinctl at $BIN (make build)" >&2; exit 1; }
for t in python3 iptables-nft-restore iptables-legacy-restore nft; do
  command -v "$t" >/dev/null || { echo "bench/services.sh: $t missing" >&2; exit 1; }
done
for n in "$RUNS" "$FULL_RUNS"; do
  [[ $n =~ ^[0-9]*[13579]$ ]] || { echo "bench/services.sh: RUNS and FULL_RUNS must be odd numbers of runs, not $n" >&2; exit 2; }
done
[ -x /usr/bin/time ] || { echo "bench/services.sh: /usr/bin/time missing (apt-get install time)" >&2; exit 1; }

# kube-proxy's text: chain names hashed as kube-proxy hashes them, the
# comments and option order it writes, the masquerade plumbing.
python3 - "$SERVICES" "$ENDPOINTS" "$WORK" <<'PY'
import base64, hashlib, sys
n, e, work = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
h16 = lambda s: base64.b32encode(hashlib.sha256(s.encode()).digest()).decode()[:16]
h8 = lambda s: base64.b32encode(hashlib.sha256(s.encode()).digest()).decode()[:8]
def svc(i):
    return "ns%d/svc%d:http" % (i % 100, i), "10.96.%d.%d" % (i // 250, i % 250 + 1)
def ep(k):
    return "10.244.%d.%d" % (k // 250, k % 250 + 1)
decl, rules = [], []
for i in range(n):
    name, ip = svc(i)
    sc = "KUBE-SVC-" + h16(name + "tcp")
    decl.append(":%s - [0:0]" % sc)
    rules.append('-A KUBE-SERVICES -m comment --comment "%s cluster IP" -m tcp -p tcp -d %s --dport 80 -j %s' % (name, ip, sc))
    rules.append('-A %s -m comment --comment "%s cluster IP" -m tcp -p tcp -d %s --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ' % (sc, name, ip))
    for j in range(e):
        a = ep(i * e + j)
        sep = "KUBE-SEP-" + h16(name + "tcp" + a + ":8080")
        decl.append(":%s - [0:0]" % sep)
        stat = " -m statistic --mode random --probability %.10f" % (1.0 / (e - j)) if j < e - 1 else ""
        rules.append('-A %s -m comment --comment "%s -> %s:8080"%s -j %s' % (sc, name, a, stat, sep))
        rules.append("-A %s -m comment --comment %s -s %s -j KUBE-MARK-MASQ" % (sep, name, a))
        rules.append("-A %s -m comment --comment %s -m tcp -p tcp -j DNAT --to-destination %s:8080" % (sep, name, a))
with open(work + "/rules", "w") as f:
    f.write("""*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
""")
    f.write("\n".join(decl) + "\n")
    f.write("""-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
""")
    f.write("\n".join(rules) + "\n")
    f.write('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\nCOMMIT\n')

# nftables mode: the same services as kube-proxy's transaction writes them.
T = "ip kube-proxy"
out = ['add table %s { comment "rules for kube-proxy" ; }' % T,
       'add map %s service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }' % T,
       'add set %s cluster-ips { type ipv4_addr ; }' % T]
for c in ["nat-prerouting { type nat hook prerouting priority -100 ; }", "nat-output { type nat hook output priority -100 ; }",
          "nat-postrouting { type nat hook postrouting priority 100 ; }", "services", "masquerading", "mark-for-masquerade"]:
    out.append("add chain %s %s" % (T, c))
chains, nrules, elems = [], [], []
for i in range(n):
    name, ip = svc(i)
    base = "ns%d/svc%d/tcp/http" % (i % 100, i)
    sc = "service-%s-%s" % (h8(base), base)
    chains.append("add chain %s %s" % (T, sc))
    eps = []
    for j in range(e):
        a = ep(i * e + j)
        eb = "%s__%s/8080" % (base, a)
        ec = "endpoint-%s-%s" % (h8(eb), eb)
        eps.append(ec)
        chains.append("add chain %s %s" % (T, ec))
        nrules.append("add rule %s %s ip saddr %s jump mark-for-masquerade" % (T, ec, a))
        nrules.append("add rule %s %s meta l4proto tcp dnat to %s:8080" % (T, ec, a))
    nrules.append("add rule %s %s ip daddr %s ip saddr != 10.244.0.0/16 jump mark-for-masquerade" % (T, sc, ip))
    nrules.append("add rule %s %s numgen random mod %d vmap { %s }" % (T, sc, e, " , ".join("%d : goto %s" % (j, c) for j, c in enumerate(eps))))
    elems.append("add element %s cluster-ips { %s }" % (T, ip))
    elems.append("add element %s service-ips { %s . tcp . 80 : goto %s }" % (T, ip, sc))
base_rules = ["mark-for-masquerade mark set mark or 0x4000", "masquerading mark and 0x4000 == 0 return",
              "masquerading mark set mark xor 0x4000", "masquerading masquerade fully-random",
              "nat-output jump services", "nat-postrouting jump masquerading", "nat-prerouting jump services",
              "services ip daddr . meta l4proto . th dport vmap @service-ips"]
with open(work + "/nft", "w") as f:
    f.write("\n".join(out + chains + ["add rule %s %s" % (T, r) for r in base_rules] + nrules + elems) + "\n")
PY

# now: microseconds since the epoch, without a fork.
now() { local t=${EPOCHREALTIME/./}; echo "$t"; }

# peak_rss CMD...: runs CMD and prints its own peak RSS in KiB, sampled
# from /proc/PID/status every ~2 ms until it exits.
exec {SLEEPFD}<> <(:)
peak_rss() {
  "$@" >/dev/null 2>&1 &
  local pid=$! peak=0 k v state
  while :; do
    state=
    while read -r k v _; do
      case $k in
        State:) state=$v ;;
        VmHWM:) [ "$v" -gt "$peak" ] && peak=$v ;;
      esac
    done 2>/dev/null <"/proc/$pid/status" || break
    [ "$state" = Z ] && break
    read -r -t 0.002 -u "$SLEEPFD" _ || true
  done
  wait "$pid"
  echo "$peak"
}

# tree_rss CMD...: /usr/bin/time's maximum RSS, the largest of CMD and its children.
tree_rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# quartiles V...: the 25th, 50th and 75th percentiles, nearest rank.
quartiles() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {printf "%.2f %.2f %.2f", a[int((NR+3)/4)], a[int((NR+1)/2)], a[NR+1-int((NR+3)/4)]}'; }

# bench N REF OURS: N interleaved runs of the two shell commands
# (alternating which goes first); sets REF_MED and OURS_MED in seconds for
# display, RATIO (OURS over REF) and SPEEDUP (REF over OURS) from the
# unrounded medians, and PAIRS to the quartiles of the per-pair ratios
# (each run of OURS over the run of REF beside it).
bench() {
  local n=$1 ref=$2 ours=$3 r=() o=() q=() t i
  # Exit statuses are not the point (doctor exits 4 on a node without pods).
  bash -c "$ref" >/dev/null 2>&1 || true; bash -c "$ours" >/dev/null 2>&1 || true # warm-up
  for ((i = 0; i < n; i++)); do
    if ((i % 2)); then
      t=$(now); bash -c "$ours" >/dev/null 2>&1 || true; o+=($(($(now) - t)))
      t=$(now); bash -c "$ref" >/dev/null 2>&1 || true; r+=($(($(now) - t)))
    else
      t=$(now); bash -c "$ref" >/dev/null 2>&1 || true; r+=($(($(now) - t)))
      t=$(now); bash -c "$ours" >/dev/null 2>&1 || true; o+=($(($(now) - t)))
    fi
  done
  for ((i = 0; i < n; i++)); do q+=("$(awk -v a="${o[i]}" -v b="${r[i]}" 'BEGIN {printf "%.4f", a / b}')"); done
  PAIRS=$(quartiles "${q[@]}")
  local ru ou
  ru=$(median "${r[@]}") ou=$(median "${o[@]}")
  REF_MED=$(awk -v u="$ru" 'BEGIN {printf "%.3f", u / 1e6}')
  OURS_MED=$(awk -v u="$ou" 'BEGIN {printf "%.3f", u / 1e6}')
  RATIO=$(awk -v a="$ou" -v b="$ru" 'BEGIN {printf "%.6f", a / b}')
  SPEEDUP=$(awk -v a="$ou" -v b="$ru" 'BEGIN {printf "%.6f", b / a}')
}

ROWS=()
PAIRNOTES=()
row() { ROWS+=("$(printf '| %s | %s | %s | %s | %s | %s | %s |' "$@")"); }
check() { awk -v v="$1" -v op="$2" -v lim="$3" 'BEGIN { ok = (op == "le") ? v <= lim : v >= lim; print ok ? "met" : "**missed**" }'; }

for b in $BACKENDS; do
  ns="$PRE-$b"
  ip netns add "$ns"
  x="ip netns exec $ns"
  case $b in
    iptables-nft | iptables-legacy)
      $x "$b-restore" <"$WORK/rules"
      ref="$x $b-save -t nat"
      refname="$b-save -t nat"
      ;;
    nftables)
      if [ -s "${BENCH_NFT_FIXTURE:-}" ]; then
        $x nft -f "$BENCH_NFT_FIXTURE"
        NFT_REAL=1
      else
        $x nft -f "$WORK/nft"
      fi
      ref="$x nft list table ip kube-proxy"
      refname="nft list table ip kube-proxy"
      ;;
  esac
  if [ "$b" = nftables ] && [ -n "${NFT_REAL:-}" ]; then
    # The lab's Services of namespace bench, as the API holds them: N
    # Services of E endpoints, the first of each on this node.
    n=$BENCH_NFT_SERVICES e=$BENCH_NFT_ENDPOINTS
    target=$(grep -oE "[0-9.]+ \. tcp \. 80 : goto service-[A-Z0-9]+-bench/svc-$((n / 2 + 6))/tcp/http" "$BENCH_NFT_FIXTURE" | head -1 | cut -d' ' -f1)
    [ -n "$target" ] || { echo "bench/services.sh: bench/svc-$((n / 2 + 6)) not in $BENCH_NFT_FIXTURE" >&2; exit 1; }
    got=$("$BIN" services --netns "$ns" -o json | python3 -c '
import json, sys
s = [x for x in json.load(sys.stdin) if x.get("namespace") == "bench"]
print(len(s), sum(len(x["endpoints"]) for x in s), sum(e["hairpinMasq"] for x in s for e in x["endpoints"]))')
    [ "$got" = "$n $((n * e)) $n" ] || { echo "bench/services.sh: $BENCH_NFT_FIXTURE read back as: $got (want $n $((n * e)) $n)" >&2; exit 1; }
    one=$("$BIN" services --netns "$ns" "$target" -o json | python3 -c 'import json,sys; s=json.load(sys.stdin); print(len(s), len(s[0]["endpoints"]))')
    [ "$one" = "1 $e" ] || { echo "bench/services.sh: lookup of $target on $b: $one" >&2; exit 1; }
    NFT_NOTE="nftables: the table the real kube-proxy 1.37 wrote for $n Services × $e endpoints of the lab's API ($(basename "$BENCH_NFT_FIXTURE"), $(grep -c '' "$BENCH_NFT_FIXTURE") lines of nft list), with the lab's own Services beside them."
    TIP=$target
  else
    TIP=$TARGET_IP
    # Proof the fixture is read whole and right before timing anything.
    got=$("$BIN" services --netns "$ns" -o json | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(len(s), sum(len(x["endpoints"]) for x in s), sum(e["hairpinMasq"] for x in s for e in x["endpoints"]), s[0]["backend"])')
    [ "$got" = "$SERVICES $((SERVICES * ENDPOINTS)) $((SERVICES * ENDPOINTS)) $b" ] || { echo "bench/services.sh: $b read back as: $got" >&2; exit 1; }
    one=$("$BIN" services --netns "$ns" "$TARGET_IP" -o json | python3 -c 'import json,sys; s=json.load(sys.stdin); print(len(s), len(s[0]["endpoints"]))')
    [ "$one" = "1 $ENDPOINTS" ] || { echo "bench/services.sh: lookup of $TARGET_IP on $b: $one" >&2; exit 1; }
  fi

  bench "$FULL_RUNS" "$ref" "$BIN services --netns $ns -o json"
  # Issue 16's budgets, judged unrounded: 1.3007 prints as 1.30 but misses.
  ratio=$(awk -v r="$RATIO" 'BEGIN {printf "%.2f", r}')
  case $b in
    iptables-legacy) tgt="≤ 1.3×"; met=$(check "$RATIO" le 1.3) ;;
    iptables-nft) tgt="≤ 1× (below the save)"; met=$(check "$RATIO" le 1) ;;
    nftables) tgt="-"; met="-" ;;
  esac
  row "$b" "all services, JSON" "\`$refname\` ${REF_MED} s" "\`services -o json\` ${OURS_MED} s" "${ratio}×" "$tgt" "$met"
  read -r q1 q2 q3 <<<"$PAIRS"
  PAIRNOTES+=("- $b: per-pair ratios of the full dumps: median ${q2}×, middle half ${q1}–${q3}×.")

  bench "$RUNS" "$ref | grep -F -- $TIP" "$BIN services --netns $ns $TIP"
  speed=$(awk -v r="$SPEEDUP" 'BEGIN {printf "%.1f", r}')
  tgt="≥ 10× faster"; met=$(check "$SPEEDUP" ge 10)
  [ "$b" = iptables-legacy ] && { tgt="-"; met="-"; }
  row "$b" "one service" "\`… \\| grep $TIP\` ${REF_MED} s" "\`services $TIP\` ${OURS_MED} s" "${speed}× faster" "$tgt" "$met"

  if [ "$b" = iptables-nft ]; then
    # A lookup's floor: the kernel's dump of KUBE-SERVICES, which holds a
    # rule per Service address; iptables-nft -S lists it the same way.
    bench "$RUNS" "$x iptables-nft -t nat -S KUBE-SERVICES" "$BIN services --netns $ns $TIP"
    ratio=$(awk -v r="$RATIO" 'BEGIN {printf "%.2f", r}')
    row "$b" "one service, its floor" "\`iptables-nft -S KUBE-SERVICES\` ${REF_MED} s" "\`services $TIP\` ${OURS_MED} s" "${ratio}×" "-" "-"
  fi

  # doctor reads the same rules and judges them: ≤ 1.5× the dump.
  bench "$RUNS" "$BIN services --netns $ns -o json" "$BIN doctor --netns $ns -o json"
  ratio=$(awk -v r="$RATIO" 'BEGIN {printf "%.2f", r}')
  row "$b" "doctor" "\`services -o json\` ${REF_MED} s" "\`doctor -o json\` ${OURS_MED} s" "${ratio}×" "≤ 1.5×" "$(check "$RATIO" le 1.5)"

  own=$(peak_rss "$BIN" services --netns "$ns" -o json)
  tree=$(tree_rss "$BIN" services --netns "$ns" -o json)
  refrss=$(tree_rss $ref)
  mib() { awk -v k="$1" 'BEGIN {printf "%.0f MiB", k / 1024}'; }
  row "$b" "peak RSS" "\`$refname\` $(mib "$refrss")" "hairpinctl $(mib "$own") (with child $(mib "$tree"))" "-" "≤ 100 MiB" "$(check "$own" le 102400)"
  ip netns del "$ns"
done

echo "Fixture: $SERVICES services × $ENDPOINTS endpoints ($((SERVICES * (2 + 3 * ENDPOINTS) + 1)) nat rules, $((SERVICES * (1 + ENDPOINTS))) service chains). Medians of $FULL_RUNS interleaved runs for the full dumps, $RUNS for the rest."
echo
echo "| backend | measurement | reference | hairpinctl | ratio | target | |"
echo "|---|---|---|---|---:|---|---|"
printf '%s\n' "${ROWS[@]}"
echo
printf '%s\n' "${PAIRNOTES[@]}"
[ -z "${NFT_NOTE:-}" ] || echo "- $NFT_NOTE"
