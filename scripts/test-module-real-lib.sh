#!/usr/bin/env bash
# test-module-real-lib.sh: the NixOS module's tests (nix/: TestModule*, TestOptionsMatchSpec) on
# nixpkgs' own module system, besides the stand-in's that scripts/test.sh runs. NIXPKGS_LIB is nixpkgs' lib/ directory: a nixpkgs checkout's, or
# the repository nix-community/nixpkgs.lib, which publishes lib/ alone (about 8 MB):
#
#   git clone --depth 1 https://github.com/nix-community/nixpkgs.lib /tmp/nixpkgs.lib
#   NIXPKGS_LIB=/tmp/nixpkgs.lib/lib scripts/test-module-real-lib.sh
#
# It is not part of scripts/test.sh: CI has neither that library nor the network to fetch it.
# What it covers and what only a full nixpkgs would: README, "NixOS module".
set -euo pipefail
cd "$(dirname "$0")/.."
: "${NIXPKGS_LIB:?set NIXPKGS_LIB to nixpkgs lib/ directory (see the top of this script)}"
[ -f "$NIXPKGS_LIB/modules.nix" ] || [ ! -f "$NIXPKGS_LIB/lib/modules.nix" ] || NIXPKGS_LIB=$NIXPKGS_LIB/lib
[ -f "$NIXPKGS_LIB/modules.nix" ] || { echo "test-module-real-lib.sh: $NIXPKGS_LIB is not nixpkgs' lib/ (no modules.nix)" >&2; exit 1; }
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
echo "nixpkgs lib $(nix-instantiate --eval -E "(import $NIXPKGS_LIB).version") at $NIXPKGS_LIB"
out=$(NIXCELL_TEST_NIXPKGS_LIB="$NIXPKGS_LIB" go test -count=1 -v -run 'TestModule|TestOptionsMatchSpec' ./nix/ 2>&1) ||
  { echo "$out"; exit 1; }
echo "$out" | grep -E '^\s*--- '
tests=$(echo "$out" | grep -c -- '^--- PASS' || true)
ran=$(echo "$out" | grep -c -- '--- PASS: .*/nixpkgs-lib' || true)
[ "$tests" -gt 0 ] && [ "$ran" = "$tests" ] ||
  { echo "test-module-real-lib.sh: $ran of $tests tests ran on nixpkgs' lib" >&2; exit 1; }
echo "ok: all $ran tests passed on nixpkgs' module system as well as on the stand-in's"
