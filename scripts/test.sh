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
(cd nomad-driver-nixcell && go vet -tags seccomp ./... && cd tests && go vet ./...)
echo "== unit tests (race detector)"
go test -tags seccomp -race -count=1 $(go list ./... | grep -v /e2e | grep -vx github.com/nixcell/nixcell/nix)
# Each fuzz target's seeds and testdata/fuzz corpus ran above as tests; here
# each target is fuzzed for a few seconds, one at a time (go test -fuzz takes
# one target of one package). A failure prints the input, which go test also
# keeps in the package's testdata/fuzz/TARGET: commit it with the fix.
fuzztime=${NIXCELL_FUZZTIME:-4s}
echo "== fuzz targets, $fuzztime each"
start=$SECONDS
inputs() { if [ -d "$1" ]; then find "$1" -type f | wc -l; else echo 0; fi; }
targets=$(grep -Ho '^func Fuzz[A-Za-z0-9_]*' $(git ls-files 'internal/*_test.go' 2>/dev/null || find internal -name '*_test.go') | sed 's/:func / /')
while read -r file target; do
	pkg=./$(dirname "$file")
	corpus=$pkg/testdata/fuzz/$target
	t0=$SECONDS
	note=
	before=$(inputs "$corpus")
	if ! out=$(go test -tags seccomp -run='^$' -fuzz="^$target\$" -fuzztime="$fuzztime" -parallel=2 "$pkg" 2>&1); then
		# Go 1.26's fuzzing coordinator may report its own -fuzztime
		# deadline as a failure (golang/go#75804, fixed in Go 1.27): then
		# no input failed, and none was written.
		if [ "$(inputs "$corpus")" = "$before" ] && grep -q '^    context deadline exceeded$' <<<"$out"; then
			note=" (ended by Go's -fuzztime deadline race, golang/go#75804; no input failed)"
		else
			echo "$out" >&2
			echo "fuzz target $target of $pkg failed: the input is above and in $corpus" >&2
			exit 1
		fi
	fi
	execs=$(grep -o 'execs: [0-9]*' <<<"$out" | tail -1 || true)
	echo "   $target ($pkg): ${execs:-no execs reported}, $((SECONDS - t0)) s$note"
done <<<"$targets"
echo "   fuzz targets: $((SECONDS - start)) s"
echo "== Nix files: package (offline nix-build), flake, NixOS module, vendor hash, binary caches (nix/)"
start=$SECONDS
go test -tags seccomp -count=1 ./nix/
echo "   Nix files: $((SECONDS - start)) s"
echo "== stand-in nixpkgs (fixtures/nixpkgs/tests)"
bash fixtures/nixpkgs/tests/eval.sh
bash fixtures/nixpkgs/tests/boot-smoke.sh
echo "== end-to-end tests (root, real namespaces, real Nix)"
go test -tags seccomp -count=1 -timeout 40m ./e2e/ "$@"
echo "== Nomad driver (nomad-driver-nixcell): the Nomad agent, the driver harness and a dev agent"
(cd nomad-driver-nixcell && go test -tags seccomp -race -count=1 ./...)
t0=$(date +%s)
NOMAD_BIN=$(bash scripts/build-nomad.sh)
t1=$(date +%s)
(cd nomad-driver-nixcell/tests && NOMAD_BIN="$NOMAD_BIN" go test -count=1 -timeout 20m ./... "$@")
t2=$(date +%s)
echo "== Nomad driver: agent build $((t1 - t0))s, tests $((t2 - t1))s"
echo "== guest tier: the end-to-end tests on a Debian 12 systemd + cgroup v2 host (kernel 6.1) under qemu"
guest_start=$SECONDS
go test -tags seccomp -count=1 -timeout 30m ./e2e/guest/ "$@"
echo "guest tier took $((SECONDS - guest_start)) s"
