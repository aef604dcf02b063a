#!/usr/bin/env bash
# Installs what hairpinctl's tests (or, with "bench", its benchmarks) need
# and the machine lacks, with apt-get when root. Without root it only says
# what is missing.
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have ip || need+=(iproute2)
have bridge || need+=(iproute2)
have iptables || need+=(iptables)
have iptables-legacy || need+=(iptables)
have nft || need+=(nftables)
have conntrack || need+=(conntrack)
have ping || need+=(iputils-ping)
have mandoc || need+=(mandoc)
have man || need+=(man-db)
have zsh || need+=(zsh)
have fish || need+=(fish)
have systemd-analyze || need+=(systemd)
[ -f /usr/share/bash-completion/bash_completion ] || need+=(bash-completion)
have gcc || need+=(gcc)
# The kube-proxy goldens: nfacct objects their iptables rules count into.
have nfacct || need+=(nfacct)
# Pods as a runtime makes them: the real CNI plugins through libcni (which
# writes the result cache pods are named from), and containerd and runc
# for the CRI sandbox tests and the image (the tests start their own
# containerd; policy-rc.d or not, a service the package may have started
# is not used).
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
have containerd || need+=(containerd)
have ctr || need+=(containerd)
have runc || need+=(runc)
if [ "${1:-}" = kube ]; then
  # The kube lab: nsenter and modprobe for its components.
  have nsenter || need+=(util-linux)
  have modprobe || need+=(kmod)
  # skopeo reads the image archive as podman and buildah would.
  have skopeo || need+=(skopeo)
fi
if [ "${1:-}" = bench ]; then
  have hyperfine || need+=(hyperfine)
  [ -x /usr/bin/time ] || need+=(time)
  have python3 || need+=(python3)
fi
[ ${#need[@]} -eq 0 ] && exit 0
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
if [ "$(id -u)" != 0 ]; then
  echo "test-deps: missing ${need[*]}; run as root (or apt-get install them) for the privileged tests" >&2
  exit 0
fi
echo "test-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
