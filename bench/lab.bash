# Sourced by bench/conntrack.sh and bench/probe.sh (not a benchmark: make
# bench runs bench/*.sh only). start_lab builds bench/conntrack's helper
# and starts its lab node (netops/lab: cni0, two pods, kube-proxy iptables
# NAT for 10.96.0.10:80 → pod 1, hairpin on), which lives as long as the
# helper's stdin, fd 3, stays open: the caller's cleanup closes fd 3 and
# waits for LABPID. Sets LABPID, NODE, POD1 and POD2; needs HERE, WORK and
# die.
start_lab() {
  (cd "$HERE/.." && CGO_ENABLED=0 go build -o "$WORK/ctbench" ./bench/conntrack) || die "cannot build bench/conntrack"
  mkfifo "$WORK/labin"
  "$WORK/ctbench" lab <"$WORK/labin" >"$WORK/lab.txt" 2>"$WORK/lab.err" &
  LABPID=$!
  exec 3>"$WORK/labin"
  for _ in $(seq 100); do grep -q '^pod2 ' "$WORK/lab.txt" 2>/dev/null && break; sleep 0.1; done
  grep -q '^pod2 ' "$WORK/lab.txt" || die "lab did not come up: $(cat "$WORK/lab.err")"
  NODE=$(awk '$1=="node"{print $2}' "$WORK/lab.txt")
  POD1=$(awk '$1=="pod1"{print $2}' "$WORK/lab.txt")
  POD2=$(awk '$1=="pod2"{print $2}' "$WORK/lab.txt")
}
