#!/usr/bin/env bash
# init-floor.sh [ROUNDS]: the floor of a container init's setup done in C
# (see init-floor.c), to hold against libcontainer's phase of a start
# (`nixcell start --trace`: "namespaces, cgroup, mounts"). Root; needs gcc
# and the Nix directories a container binds (/nix/store, /nix/var/nix/...).
set -euo pipefail
cd "$(dirname "$0")"
[ "$(id -u)" = 0 ] || { echo "init-floor.sh: run it as root" >&2; exit 2; }
w=$(mktemp -d /tmp/nixcell-init-floor.XXXXXX)
trap 'rm -rf "$w"' EXIT
chmod 755 "$w"
gcc -O2 -Wall -o "$w/init-floor" init-floor.c
mkdir -p "$w"/root/{proc,dev,sys,run,tmp,nix/store} "$w"/root/nix/var/nix/{db,daemon-socket,gcroots} \
  "$w"/root/nix/var/nix/profiles/per-user "$w"/dev/{pts,shm,mqueue}
"$w/init-floor" "$w/root" "$w/dev" "${1:-25}"
