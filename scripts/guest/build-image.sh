#!/usr/bin/env bash
# build-image.sh: make the Debian 12 test host that the guest tier boots
# (e2e/guest), once, and print the directory that holds it:
#   disk.raw            ext4 root file system (made with mkfs.ext4 -d, no loop device)
#   vmlinuz, initrd.img Debian's 6.1 kernel and its initramfs, booted by qemu directly
#   id_ed25519          the key that logs in as root over ssh
# The image is cached in /var/cache/nixcell-test/guest-KEY, where KEY hashes
# this recipe and the stand-in nixpkgs it prebuilds from, so a changed
# recipe makes a new image (and removes the old ones). Run as root; the
# packages it needs on this host are installed first.
set -euo pipefail
cd "$(dirname "$0")/../.."

[ "$(id -u)" = 0 ] || { echo "build-image.sh: run as root" >&2; exit 1; }

cache=/var/cache/nixcell-test
debian=$cache/debian-bookworm # shared with e2e/systemd_test.go; only ever copied here
key=$({ cat scripts/guest/build-image.sh; find fixtures/nixpkgs -type f | LC_ALL=C sort | xargs cat; } | sha256sum | cut -c1-16)
out=$cache/guest-$key
if [ -e "$out/ready" ]; then echo "$out"; exit 0; fi

# What this host needs to make and boot the image.
hostpkgs=(qemu-system-x86 qemu-utils openssh-client e2fsprogs debootstrap)
missing=()
for p in "${hostpkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "build-image.sh: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p "$cache"
exec 8>"$cache/guest.lock"
flock 8
if [ -e "$out/ready" ]; then echo "$out"; exit 0; fi # made while we waited
start=$SECONDS
log() { echo "build-image.sh: [$((SECONDS - start))s] $*" >&2; }

# The base tree: the e2e suite's debootstrap of Debian 12 with systemd,
# made here (under the same lock, the same way) when the suite has not.
if [ ! -f "$debian/lib/systemd/systemd" ]; then
  log "debootstrap of $debian"
  exec 9>"$debian.lock"
  flock 9
  if [ ! -f "$debian/lib/systemd/systemd" ]; then
    rm -rf "$debian.tmp-$$"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,iproute2 bookworm "$debian.tmp-$$" >/dev/null
    rm -rf "$debian"
    mv "$debian.tmp-$$" "$debian"
  fi
  exec 9>&-
fi

work=$(mktemp -d "$cache/guest-build.XXXXXX")
tree=$work/tree
mounted=()
cleanup() {
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
bindmount() { mkdir -p "$2"; mount --rbind "$1" "$2"; mount --make-rslave "$2"; mounted+=("$2"); }

log "copying $debian"
cp -a "$debian" "$tree"
bindmount /proc "$tree/proc"
bindmount /sys "$tree/sys"
bindmount /dev "$tree/dev"
mount -t tmpfs tmpfs "$tree/tmp" && mounted+=("$tree/tmp")
inroot() { chroot "$tree" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"; }

# apt reaches the archive the way this host does; no service starts in the chroot.
rm -f "$tree/etc/apt/sources.list"
cp /etc/apt/sources.list.d/debian.sources "$tree/etc/apt/sources.list.d/" 2>/dev/null ||
  cp /etc/apt/sources.list "$tree/etc/apt/sources.list"
printf '#!/bin/sh\nexit 101\n' >"$tree/usr/sbin/policy-rc.d"
chmod 755 "$tree/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$tree/etc/resolv.conf"

log "installing the kernel and the packages"
inroot apt-get update -qq
# strace and procps are for looking at a test that went wrong; criu is for
# checkpoint and restore-checkpoint (which need a kernel before 6.13), and
# iptables for CRIU, which locks a container's network with it.
inroot apt-get install -y -qq --no-install-recommends \
  linux-image-amd64 initramfs-tools udev kmod \
  nix-bin nix-setup-systemd busybox-static nftables iproute2 uidmap systemd-container libseccomp2 \
  openssh-server procps strace criu iptables >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; exit 1; }
inroot apt-get clean
rm -rf "$tree"/var/lib/apt/lists/*
rm -f "$tree/usr/sbin/policy-rc.d" "$tree/etc/resolv.conf"

log "configuring"
echo nixcell-guest >"$tree/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 nixcell-guest\n::1 localhost\n' >"$tree/etc/hosts"
echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' >"$tree/etc/fstab"
# qemu's user network (restricted: it reaches nothing but the host's
# forwarded port), addressed statically so boot does not wait for DHCP.
cat >"$tree/etc/systemd/network/10-user.network" <<'EOF'
[Match]
Name=en* eth*
[Network]
Address=10.0.2.15/24
# No address from qemu's router advertisements: its lifetime would count
# down, and tests compare the host's addresses before and after.
IPv6AcceptRA=no
EOF
inroot systemctl enable -q systemd-networkd ssh
inroot systemctl mask -q systemd-networkd-wait-online apt-daily.timer apt-daily-upgrade.timer \
  e2scrub_all.timer e2scrub_reap fstrim.timer man-db.timer
# Root logs in with the image's key only; no DNS lookups slow the login.
ssh-keygen -q -t ed25519 -N '' -C nixcell-guest -f "$work/id_ed25519"
install -d -m 700 "$tree/root/.ssh"
install -m 600 "$work/id_ed25519.pub" "$tree/root/.ssh/authorized_keys"
printf 'UseDNS no\nPermitRootLogin prohibit-password\n' >"$tree/etc/ssh/sshd_config.d/nixcell.conf"
# Nix as scripts/setup-host.sh sets it up.
mkdir -p "$tree/etc/nix"
printf 'sandbox = false\nsubstituters =\n' >>"$tree/etc/nix/nix.conf"

# Building the stand-in's busybox forks once per applet, which takes long
# under emulation: build it here, natively, so the guest's store has it.
log "prebuilding the stand-in nixpkgs' busybox"
mkdir -p "$tree/tmp/nixpkgs"
cp -a fixtures/nixpkgs/. "$tree/tmp/nixpkgs/"
inroot nix-build --no-out-link -I nixpkgs=/tmp/nixpkgs -E '(import <nixpkgs> { }).busybox' >/dev/null

# A Debian systemd tree for a container inside the guest (--rootfs), below
# a directory only root can enter, as nixcell asks of plain roots.
log "placing a Debian systemd tree at /var/lib/machines/deb"
install -d -m 0700 "$tree/var/lib/machines"
cp -a "$debian" "$tree/var/lib/machines/deb"

kernel=$(cd "$tree/boot" && ls vmlinuz-* | head -1)
version=${kernel#vmlinuz-}
cp "$tree/boot/$kernel" "$work/vmlinuz"
cp "$tree/boot/initrd.img-$version" "$work/initrd.img"
for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}"; done
mounted=()

log "making the disk"
truncate -s 5G "$work/disk.raw"
mkfs.ext4 -q -L nixcell-guest -d "$tree" "$work/disk.raw"
rm -rf "$tree"

echo "kernel $version" >"$work/ready"
# Images of other recipes go once nothing can be using them any more (a
# test tier of another checkout may be booting one right now).
find "$cache" -maxdepth 1 -name 'guest-????????????????' -mmin +180 -exec rm -rf {} +
mv "$work" "$out"
trap - EXIT
log "made $out (kernel $version)"
echo "$out"
