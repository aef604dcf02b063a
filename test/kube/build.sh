#!/usr/bin/env bash
# Builds the real Kubernetes components the lab runs, from the Go module proxy,
# into a cache outside the work tree (reused when present).
#
#   test/kube/build.sh kube-proxy v1.37.2     -> $CACHE/v1.37.2/kube-proxy
#   test/kube/build.sh kube-apiserver v1.37.2 -> $CACHE/v1.37.2/kube-apiserver
#   test/kube/build.sh etcd v3.6.17           -> $CACHE/etcd-v3.6.17/etcd
#
# k8s.io/kubernetes replaces its staging modules with ./staging/..., which a
# module that requires it cannot follow; a scratch module per release pins each
# staging module to its published v0.X.Y instead. Prints the binary's path.
set -euo pipefail
CACHE=${KUBE_LAB_CACHE:-/var/cache/hairpinctl-kube-lab}
GO=${GO:-go}
what=${1:?usage: build.sh kube-proxy|kube-apiserver|etcd VERSION}
ver=${2:?usage: build.sh kube-proxy|kube-apiserver|etcd VERSION}
export GOFLAGS=-mod=mod CGO_ENABLED=0

say() { echo "kube-lab: $*" >&2; }

if [[ $what == etcd ]]; then
  out=$CACHE/etcd-$ver/etcd
  if [[ -x $out ]]; then echo "$out"; exit 0; fi
  src=$CACHE/src/etcd-$ver
  mkdir -p "$src"
  cat >"$src/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$src" && rm -f go.mod go.sum && $GO mod init kubelab/etcd >/dev/null 2>&1 &&
    $GO get "go.etcd.io/etcd/server/v3@$ver" >/dev/null 2>&1 && $GO mod tidy >/dev/null 2>&1)
  say "building etcd $ver (about 2 minutes the first time)"
  start=$SECONDS
  (cd "$src" && $GO build -trimpath -ldflags "-s -w" -o "$out.tmp" .)
  mv "$out.tmp" "$out"
  say "etcd $ver built in $((SECONDS - start)) s"
  echo "$out"
  exit 0
fi

case $what in kube-proxy|kube-apiserver|kubectl) ;; *) say "unknown component $what"; exit 2 ;; esac
out=$CACHE/$ver/$what
if [[ -x $out ]]; then echo "$out"; exit 0; fi
src=$CACHE/src/kubernetes-$ver
mkdir -p "$src" "$CACHE/$ver"
if [[ ! -f $src/go.sum ]]; then
  say "preparing a build module for k8s.io/kubernetes $ver"
  mod=$(cd /tmp && $GO mod download -json "k8s.io/kubernetes@$ver" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
  [[ -f $mod ]] || { say "k8s.io/kubernetes@$ver is not served by the module proxy"; exit 1; }
  # v1.37.2 -> staging modules at v0.37.2
  sv=v0.${ver#v1.}
  {
    echo "module kubelab/kubernetes"
    echo
    grep -m1 '^go ' "$mod"
    echo
    echo "require k8s.io/kubernetes $ver"
    echo
    echo "replace ("
    grep -E '=> \./staging/src/' "$mod" | awk -v sv="$sv" '
      $1 ~ /sample-(cli-plugin|controller)$/ { next }
      { print "\t" $1 " => " $1 " " sv }'
    echo ")"
  } >"$src/go.mod"
  cat >"$src/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  (cd "$src" && $GO mod tidy -e >"$src/tidy.log" 2>&1) || { say "go mod tidy failed for $ver: $src/tidy.log"; exit 1; }
fi
IFS=. read -r major minor _ <<<"${ver#v}"
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$ver -X k8s.io/component-base/version.gitMajor=$major -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
say "building $what $ver (several minutes the first time, 2 GB of memory)"
start=$SECONDS
# The module proxy refuses a few staging modules' patch releases (seen:
# k8s.io/kube-proxy v0.31.12-v0.31.14, its config types only). Such a
# module is pinned to the newest patch of its minor that is served, and the
# substitution is said and recorded beside the binary.
for attempt in 1 2 3 4 5; do
  if (cd "$src" && $GO build -trimpath -ldflags "$ldflags" -o "$out.tmp" "k8s.io/kubernetes/cmd/$what") >"$src/build-$what.log" 2>&1; then
    break
  fi
  refused=$(grep -o 'k8s\.io/[a-z0-9-]*@v0\.[0-9]*\.[0-9]*: reading https://proxy.golang.org[^ ]* 403' "$src/build-$what.log" | head -1 | cut -d: -f1)
  if [[ -z $refused || $attempt == 5 ]]; then
    say "building $what $ver failed: $src/build-$what.log"; tail -20 "$src/build-$what.log" >&2; exit 1
  fi
  m=${refused%@*} v=${refused#*@}
  minor=${v%.*}
  alt=""
  for cand in $(cd /tmp && $GO list -m -versions "$m" | tr ' ' '\n' | grep "^$minor\." | sort -Vr); do
    [[ $cand == "$v" ]] && continue
    if (cd /tmp && $GO mod download "$m@$cand") >/dev/null 2>&1; then alt=$cand; break; fi
  done
  [[ -n $alt ]] || { say "$m@$v is refused by the module proxy and no other $minor.x is served"; exit 1; }
  say "$m@$v is refused by the module proxy: using $alt"
  echo "$m $v -> $alt (refused by the module proxy)" >>"$CACHE/$ver/substitutions.txt"
  sed -i "s|^\t$m => $m $v\$|\t$m => $m $alt|" "$src/go.mod"
  (cd "$src" && $GO mod tidy -e >"$src/tidy.log" 2>&1)
done
mv "$out.tmp" "$out"
say "$what $ver built in $((SECONDS - start)) s"
echo "$out"
