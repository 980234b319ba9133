#!/usr/bin/env bash
# build-nomad-driver.sh: build the Nomad task driver into
# ./bin/nomad-driver-nixcell (or the path given), with nixcell's version.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
out=$(realpath -m "${1:-bin/nomad-driver-nixcell}")
version=$(git describe --always --dirty 2>/dev/null || echo devel)
cd nomad-driver-nixcell
CGO_ENABLED=1 go build -tags seccomp -trimpath \
  -ldflags "-X github.com/nixcell/nixcell/nomad-driver-nixcell/driver.Version=$version" -o "$out" .
