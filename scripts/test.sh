#!/usr/bin/env bash
# test.sh: set up the host and run every check and test, as root.
# Tests that need root or a kernel feature fail instead of skipping when
# CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
export CGO_ENABLED=1

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
[ -z "$unformatted" ] || { echo "gofmt would change: $unformatted" >&2; exit 1; }
echo "== go vet"
go vet -tags seccomp ./...
echo "== unit tests (race detector)"
go test -tags seccomp -race -count=1 $(go list ./... | grep -v /e2e)
echo "== stand-in nixpkgs (fixtures/nixpkgs/tests)"
bash fixtures/nixpkgs/tests/eval.sh
bash fixtures/nixpkgs/tests/boot-smoke.sh
echo "== end-to-end tests (root, real namespaces, real Nix)"
go test -tags seccomp -count=1 -timeout 40m ./e2e/ "$@"
echo "== guest tier: the end-to-end tests on a Debian 12 systemd + cgroup v2 host (kernel 6.1) under qemu"
guest_start=$SECONDS
go test -tags seccomp -count=1 -timeout 30m ./e2e/guest/ "$@"
echo "guest tier took $((SECONDS - guest_start)) s"
