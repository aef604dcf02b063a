#!/usr/bin/env bash
# Tests the .deb: its metadata and contents, then (as root, with dpkg)
# installs it, uses what it installed, and removes it again.
# Usage: scripts/test-deb.sh dist/hairpinctl_VERSION_ARCH.deb
set -euo pipefail
deb=${1:?usage: scripts/test-deb.sh PACKAGE.deb}
fail() { echo "test-deb: $*" >&2; exit 1; }
[ -f "$deb" ] || fail "$deb not found (run make deb)"
info=$(dpkg-deb --info "$deb")
grep -q '^ Package: hairpinctl$' <<<"$info" || fail "no Package: hairpinctl in --info"
contents=$(dpkg-deb --contents "$deb")
for f in ./usr/bin/hairpinctl ./usr/share/man/man8/hairpinctl.8 \
         ./usr/share/bash-completion/completions/hairpinctl \
         ./usr/share/zsh/vendor-completions/_hairpinctl \
         ./usr/share/fish/vendor_completions.d/hairpinctl.fish \
         ./usr/lib/systemd/system/hairpinctl-enable.service \
         ./usr/lib/systemd/system/hairpinctl-watch.service; do
  grep -q " $f\$" <<<"$contents" || fail "$f missing from the package"
done
if [ "$(id -u)" != 0 ] || ! command -v dpkg >/dev/null; then
  echo "test-deb: contents checked; install test needs root and dpkg" >&2
  exit 0
fi
if dpkg -s hairpinctl >/dev/null 2>&1; then fail "hairpinctl is already installed as a package; not touching it"; fi
trap 'dpkg -r hairpinctl >/dev/null 2>&1 || true' EXIT
dpkg -i "$deb" >/dev/null
/usr/bin/hairpinctl version | grep -q '^hairpinctl ' || fail "installed hairpinctl version failed"
[ "$(man -w hairpinctl)" = /usr/share/man/man8/hairpinctl.8.gz ] || [ "$(man -w hairpinctl)" = /usr/share/man/man8/hairpinctl.8 ] || fail "man -w hairpinctl: $(man -w hairpinctl 2>&1)"
grep -q '^ExecStart=/usr/bin/hairpinctl ' /usr/lib/systemd/system/hairpinctl-watch.service || fail "watch unit does not run /usr/bin/hairpinctl"
dpkg -r hairpinctl >/dev/null
trap - EXIT
[ ! -e /usr/bin/hairpinctl ] || fail "/usr/bin/hairpinctl left after dpkg -r"
[ ! -e /usr/share/man/man8/hairpinctl.8 ] || fail "man page left after dpkg -r"
echo "test-deb: $deb: contents, install, version, man -w, removal: ok"
