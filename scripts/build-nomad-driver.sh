#!/usr/bin/env bash
# build-nomad-driver.sh: build the Nomad task driver into
# ./bin/nomad-driver-nixcell (or the path given), with nixcell's version.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
out=$(realpath -m "${1:-bin/nomad-driver-nixcell}")
# Nomad wants a semantic version: a tag vX.Y.Z, else 0.0.0-COMMIT.
version=$(git describe --tags --always --dirty 2>/dev/null || echo unknown)
case $version in
  v[0-9]*) version=${version#v} ;;
  *) version=0.0.0-$version ;;
esac
cd nomad-driver-nixcell
CGO_ENABLED=1 go build -tags seccomp -trimpath \
  -ldflags "-X github.com/nixcell/nixcell/nomad-driver-nixcell/driver.Version=$version" -o "$out" .
