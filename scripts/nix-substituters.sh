#!/usr/bin/env bash
# nix-substituters.sh: turn Nix's binary caches off on a host that cannot reach them, and only
# there (setup-host.sh runs it). On a connected host the default cache stays: without it every
# user would build everything from source. Idempotent; it says what it did.
#
#   NIXCELL_OFFLINE=1     caches off, whatever the probe says
#   NIXCELL_OFFLINE=0     caches on (the default ones), whatever the probe says
#   unset                 a short probe (5 s at most) of NIXCELL_SUBSTITUTER's nix-cache-info
#                         (default https://cache.nixos.org) decides
#   NIXCELL_NIX_CONF      the file (default /etc/nix/nix.conf)
#
# It only ever changes a setting it wrote itself (the line after its marker); a `substituters`
# setting of the administrator's is left as it is.
set -euo pipefail
conf=${NIXCELL_NIX_CONF:-/etc/nix/nix.conf}
url=${NIXCELL_SUBSTITUTER:-https://cache.nixos.org}
marker='# nixcell setup-host.sh: no binary cache reachable; NIXCELL_OFFLINE=0 scripts/setup-host.sh turns them back on'
say() { echo "nix-substituters.sh: $*"; }

mkdir -p "$(dirname "$conf")"
touch "$conf"
ours=no
grep -qxF "$marker" "$conf" && ours=yes
if [ $ours = no ] && grep -q '^ *substituters *=' "$conf"; then
  say "$conf sets substituters itself; left as it is"
  exit 0
fi

case "${NIXCELL_OFFLINE:-}" in
1) off=yes why="NIXCELL_OFFLINE=1" ;;
0) off=no why="NIXCELL_OFFLINE=0" ;;
*)
  if curl -fsS --max-time 5 -o /dev/null "$url/nix-cache-info" 2>/dev/null; then
    off=no why="$url answers"
  else
    off=yes why="$url does not answer within 5 s"
  fi
  ;;
esac

if [ $off = yes ] && [ $ours = yes ]; then
  say "binary caches stay off ($why)"
elif [ $off = yes ]; then
  printf '%s\nsubstituters =\n' "$marker" >>"$conf"
  say "binary caches turned off in $conf ($why)"
elif [ $ours = yes ]; then
  tmp=$(mktemp "$conf.XXXXXX")
  awk -v m="$marker" '$0 == m { skip = 1; next } skip && /^substituters *=/ { skip = 0; next } { skip = 0; print }' "$conf" >"$tmp"
  chmod --reference="$conf" "$tmp"
  mv "$tmp" "$conf"
  say "binary caches turned back on in $conf ($why)"
else
  say "binary caches left on ($why)"
fi
