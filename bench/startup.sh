#!/usr/bin/env bash
# Benchmark: where hairpinctl's start-up goes. Go runs the init of every
# package linked into a binary before main, whatever the subcommand, so a
# command's fixed cost is the Go runtime's plus the inits of everything
# the binary links. This times, in one hyperfine run, static Go programs
# that print one line and link more and more of what hairpinctl links
# (each package imported for its inits alone), then `hairpinctl version`
# and bridge(8)'s own start-up. Built as hairpinctl is (CGO_ENABLED=0,
# -trimpath, -s -w, urfave_cli_no_docs). Nothing is asserted.
# Usage: bench/startup.sh [path/to/hairpinctl]   Prints a markdown section.
set -euo pipefail
BIN=$(readlink -f "${1:-./bin/hairpinctl}")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
command -v hyperfine >/dev/null || { echo "bench/startup.sh: hyperfine missing (apt-get install hyperfine)" >&2; exit 1; }
WORK=$(mktemp -d)
# The programs are built inside the module (a scratch directory under
# bench/) so that they may import hairpinctl's own packages.
SRC="$ROOT/bench/.startup-$$"
cleanup() { rm -rf "$WORK" "$SRC"; }
trap cleanup EXIT INT TERM

# name|imports (space-separated; each import adds to the one before).
DESIGN="github.com/urfave/cli/v2 github.com/vishvananda/netlink github.com/ti-mo/conntrack github.com/coreos/go-iptables/iptables github.com/containernetworking/cni/libcni github.com/google/nftables"
VARIANTS=(
  "go-runtime|"
  "design-card-libraries|$DESIGN"
  "plus-net-http|$DESIGN net/http"
  "all-hairpinctl-packages|$DESIGN net/http github.com/hairpinctl/hairpinctl/commands"
)
for v in "${VARIANTS[@]}"; do
  name=${v%%|*}
  imports=${v#*|}
  mkdir -p "$SRC/$name"
  {
    echo "// Command $name prints one line; it links what it imports for their inits."
    echo "package main"
    echo
    echo "import ("
    echo "	\"os\""
    for i in $imports; do echo "	_ \"$i\""; done
    echo ")"
    echo
    echo "func main() { os.Stdout.WriteString(\"hello\\n\") }"
  } >"$SRC/$name/main.go"
  (cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -tags urfave_cli_no_docs -ldflags "-s -w" -o "$WORK/$name" "./bench/.startup-$$/$name") ||
    { echo "bench/startup.sh: cannot build $name" >&2; exit 1; }
done

cmds=()
for v in "${VARIANTS[@]}"; do cmds+=("$WORK/${v%%|*}"); done
cmds+=("$BIN version" "bridge -V")
hyperfine -N --warmup 20 --min-runs 200 --export-json "$WORK/t.json" "${cmds[@]}" >/dev/null 2>&1

inits() { GODEBUG=inittrace=1 "$@" 2>&1 >/dev/null | grep -c '^init ' || true; }
sizes=() ninits=()
for v in "${VARIANTS[@]}"; do
  sizes+=("$(stat -c %s "$WORK/${v%%|*}")")
  ninits+=("$(inits "$WORK/${v%%|*}")")
done
sizes+=("$(stat -c %s "$BIN")" "-")
ninits+=("$(inits "$BIN" version)" "-")

python3 - "$WORK/t.json" "${sizes[*]}" "${ninits[*]}" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))["results"]
sizes, inits = sys.argv[2].split(), sys.argv[3].split()
names = [
    "Go runtime alone (prints one line)",
    "+ the design card's libraries (urfave/cli, netlink, conntrack, go-iptables, libcni, nftables)",
    "+ net/http (the CRI client, the metrics endpoint)",
    "+ all of hairpinctl's packages",
    "`hairpinctl version` (+ the CLI)",
    "`bridge -V`",
]
base = d[0]["median"]
print("| binary | size | package inits | median | over the Go runtime |")
print("|---|---:|---:|---:|---:|")
for name, r, size, n in zip(names, d, sizes, inits):
    size = "%.1f MB" % (int(size) / 1e6) if size != "-" else "-"
    print("| %s | %s | %s | %.2f ms | %+.2f ms |" % (name, size, n, r["median"] * 1000, (r["median"] - base) * 1000))
PY
