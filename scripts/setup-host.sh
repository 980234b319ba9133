#!/usr/bin/env bash
# setup-host.sh: install what nixcell needs on a Debian 12 host, as root.
# Idempotent. Go (>= 1.26, with cgo) must already be installed: Debian 12's
# golang package is too old.
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "setup-host.sh: run as root" >&2; exit 1; }
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "setup-host.sh: Go >= 1.26 is required (https://go.dev/dl)" >&2; exit 1; }

pkgs=(nix-bin busybox-static libseccomp-dev pkg-config gcc nftables iproute2 uidmap debootstrap curl groff-base e2fsprogs btrfs-progs criu iptables)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-host.sh: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Nix without a build sandbox (Debian's Nix cannot use it without its
# daemon) and, on hosts that cannot reach them, without binary caches that
# every build would otherwise wait for (NIXCELL_OFFLINE=1 or 0 decides).
conf=/etc/nix/nix.conf
mkdir -p /etc/nix
touch "$conf"
grep -q '^sandbox *=' "$conf" || echo 'sandbox = false' >> "$conf"
bash "$(dirname "$0")/nix-substituters.sh"
