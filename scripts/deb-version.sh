#!/usr/bin/env bash
# Prints the Debian package version: from the latest tag (without its "v",
# "-N-gHASH" after it for later commits), or 0.0.0~git.HASH when there is
# no tag. A Debian version starts with a digit; "~" sorts before a release.
if v=$(git describe --tags 2>/dev/null); then
  v=${v#v}
else
  v=0.0.0~git.$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
fi
echo "${v//-/\~}"
