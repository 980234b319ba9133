#!/usr/bin/env bash
# update-vendor-hash.sh [--check]: keep nix/package.nix's vendorHash current. It is the hash of
# the vendor directory that `go mod vendor` makes (what buildGoModule's fixed-output derivation
# holds), computed here with the same Go from the local module cache. Without --check it writes
# a changed hash into nix/package.nix; with --check it only compares and exits 1 when stale.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
tmp=$(mktemp -d)
trap 'chmod -R u+w "$tmp"; rm -rf "$tmp"' EXIT
go mod vendor -o "$tmp/vendor"
want=$(nix --extra-experimental-features nix-command hash path --type sha256 "$tmp/vendor")
have=$(sed -n 's/^ *vendorHash = "\(sha256-[^"]*\)";.*/\1/p' nix/package.nix)
if [ "$want" = "$have" ]; then
  echo "vendorHash is current: $want"
  exit 0
fi
if [ "${1:-}" = --check ]; then
  echo "nix/package.nix: vendorHash is stale: it is $have, go mod vendor hashes to $want (run scripts/update-vendor-hash.sh)" >&2
  exit 1
fi
sed -i "s|^\( *vendorHash = \)\"[^\"]*\";|\1\"$want\";|" nix/package.nix
echo "vendorHash: $have -> $want"
