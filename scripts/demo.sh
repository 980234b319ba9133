#!/usr/bin/env bash
# demo.sh: set up the host, build nixcell, and boot a demo container from the
# stand-in nixpkgs in fixtures/ (this host needs no real nixpkgs for it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
bash scripts/build.sh
install -m 0755 bin/nixcell /usr/local/bin/nixcell
nixcell exists demo >/dev/null 2>&1 && nixcell destroy demo
nixcell create demo fixtures/demo.nix -n "-I nixpkgs=$PWD/fixtures/nixpkgs"
nixcell start demo
nixcell list
echo "--- nixcell exec demo -- wget -qO- http://127.0.0.1/"
# The web server starts just after the init does.
for _ in $(seq 50); do
  nixcell exec demo -- wget -qO- http://127.0.0.1/ 2>/dev/null && exit 0
  sleep 0.1
done
nixcell exec demo -- wget -qO- http://127.0.0.1/
