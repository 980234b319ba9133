#!/usr/bin/env bash
# build-nomad.sh: build the Nomad agent that the Nomad driver's integration
# tests run, from the module tools/nomad (Nomad v1.6.1, MPL-2.0, built from
# the Go module proxy), and print its path. The binary is cached under
# /var/cache/nixcell-test/, keyed by Nomad's version and a digest of the
# module and the Go version; a build takes a few minutes. A failed build
# fails (exit status != 0).
set -euo pipefail
cd "$(dirname "$0")/../tools/nomad"
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
version=$(go list -m -f '{{.Version}}' github.com/hashicorp/nomad)
key=$( (cat go.mod go.sum; go version) | sha256sum | cut -c1-12)
out=/var/cache/nixcell-test/nomad-$version-$key/nomad
if [ ! -x "$out" ]; then
  start=$(date +%s)
  echo "build-nomad.sh: building Nomad $version into $out" >&2
  mkdir -p "$(dirname "$out")"
  CGO_ENABLED=1 go build -trimpath -o "$out.tmp" github.com/hashicorp/nomad
  mv "$out.tmp" "$out"
  echo "build-nomad.sh: built Nomad $version in $(( $(date +%s) - start ))s" >&2
fi
echo "$out"
