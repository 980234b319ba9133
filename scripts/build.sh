#!/usr/bin/env bash
# build.sh: build the nixcell binary into ./bin/nixcell.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
CGO_ENABLED=1 go build -tags seccomp -trimpath -o bin/nixcell ./cmd/nixcell
