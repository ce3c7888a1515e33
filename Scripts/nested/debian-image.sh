#!/usr/bin/env bash
# Builds (once) the Debian 12 guest of the nested bench's `debian` scenario: an ext4 root
# filesystem made by debootstrap, with systemd, and an initramfs that mounts it from
# virtio-blk. Everything goes into the nested cache (see common.sh), outside the repository:
#
#   $CH_NESTED_CACHE/debian/rootfs.ext4   sparse 1 GiB ext4 image (label ch-debian), the root
#   $CH_NESTED_CACHE/debian/initrd.img    initramfs-tools image for the cached kernel
#   $CH_NESTED_CACHE/debian/stamp         hash of this script and the kernel release
#   $CH_NESTED_CACHE/debian/build.log     the last build's output and its figures
#
# Usage: Scripts/nested/debian-image.sh [--force]
#
# The image is remade only when this script or the kernel release changes (or --force).
# It runs prepare.sh first (for the kernel in $CH_NESTED_CACHE/kernel) and installs
# debootstrap and e2fsprogs when missing (needs root: debootstrap, chroot, mknod).
#
# The guest (a test guest: root has no password):
#   - Debian bookworm, debootstrap's minbase variant plus systemd-sysv, udev, iproute2,
#     dbus (for logind), util-linux(-extra) for hwclock, kmod, iputils-ping, initramfs-tools;
#   - /lib/modules/<release>: the cached kernel's modules (sound, GPU, media, wireless,
#     InfiniBand and staging drivers left out), depmod run in the chroot;
#   - systemd-networkd gives the virtio-net NIC 192.168.249.2/24 (the host side the
#     scenario hands the VMM: --net tap=,ip=192.168.249.1,mask=255.255.255.0);
#   - ch-report.service: once the boot has finished (multi-user.target reached), prints
#     `CH-DEBIAN ...` lines on ttyS0 (system state, failed units, /dev/rtc0 and hwclock,
#     the NIC's address, a ping of the host side, the boot times) and powers off.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$here/common.sh"

force=0
case "${1:-}" in
  "") ;;
  --force) force=1 ;;
  -h | --help) sed -n '2,27p' "$0"; exit 0 ;;
  *) nested_die "unknown argument: $1 (usage: debian-image.sh [--force])" ;;
esac

out="$CH_NESTED_CACHE/debian"
image="$out/rootfs.ext4"
initrd="$out/initrd.img"
image_size=1G
suite=bookworm
# The guest's address and the host side of its NIC (the scenario passes the same to the VMM).
guest_cidr=192.168.249.2/24
host_ip=192.168.249.1

"$here/prepare.sh" >&2
kver="$(cat "$CH_NESTED_CACHE/kernel-release")"
moddir="$CH_NESTED_CACHE/kernel/lib/modules/$kver"

stamp="$(cat "$0" <(printf '%s\n' "$kver") | sha256sum | cut -d' ' -f1)"
if [[ $force == 0 && -s $image && -s $initrd && "$(cat "$out/stamp" 2>/dev/null || true)" == "$stamp" ]]; then
  nested_log "ready: $image ($(du -h --apparent-size "$image" | cut -f1) apparent, $(du -h "$image" | cut -f1) used), $initrd"
  exit 0
fi
[[ $EUID -eq 0 ]] || nested_die "building the Debian image needs root (debootstrap, chroot)"

# --- Host tools ----------------------------------------------------------------------------
missing=()
for pkg in debootstrap e2fsprogs; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  nested_log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# The Debian mirror this machine's apt uses: the one apt-cache policy lists for the suite's
# main component (so deb822 and one-line sources alike). No other host is contacted.
mirror="$(apt-cache policy | awk -v want="$suite/main" '$1 ~ /^[0-9]+$/ && $2 ~ /^[a-z]+:\/\// && $3 == want { print $2; exit }')"
if [[ -z $mirror ]]; then
  apt-get update -qq
  mirror="$(apt-cache policy | awk -v want="$suite/main" '$1 ~ /^[0-9]+$/ && $2 ~ /^[a-z]+:\/\// && $3 == want { print $2; exit }')"
fi
[[ -n $mirror ]] || nested_die "apt knows no mirror of $suite/main (see /etc/apt/sources.list*)"

mkdir -p "$out"
log="$out/build.log"
: >"$log"
start_ns="$(nested_now_ns)"
work="$(mktemp -d "$out/build.XXXXXX")"
root="$work/root"
mounted=()
cleanup() {
  local m
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

nested_log "debootstrap $suite from $mirror (kernel $kver); log in $log"
packages=systemd-sysv,udev,dbus,iproute2,util-linux,util-linux-extra,kmod,iputils-ping,initramfs-tools
debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >>"$log" 2>&1 ||
  nested_die "debootstrap failed (see $log: $(tail -n 3 "$log" | tr '\n' ' '))"
debootstrap_ns="$(nested_now_ns)"

# --- The kernel's modules ------------------------------------------------------------------
mkdir -p "$root/lib/modules"
cp -a "$moddir" "$root/lib/modules/"
for dir in sound drivers/gpu drivers/media drivers/net/wireless drivers/infiniband drivers/staging \
  drivers/bluetooth net/wireless net/mac80211 net/bluetooth; do
  rm -rf "$root/lib/modules/$kver/kernel/$dir"
done
rm -f "$root/lib/modules/$kver"/{build,source}
cp "$CH_NESTED_CACHE/kernel/boot/config-$kver" "$root/boot/"

# --- Configuration -------------------------------------------------------------------------
printf 'ch-debian\n' >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tch-debian\n' >"$root/etc/hosts"
printf '/dev/vda\t/\text4\tdefaults\t0\t1\n' >"$root/etc/fstab"
# A fixed machine ID: every boot of an overlay is then an ordinary boot, not a first boot.
printf '%s\n' "$(printf 'ch-debian' | md5sum | cut -c1-32)" >"$root/etc/machine-id"
chroot "$root" passwd -d root >>"$log" 2>&1

mkdir -p "$root/etc/systemd/network"
cat >"$root/etc/systemd/network/10-virtio.network" <<EOF
[Match]
Driver=virtio_net

[Network]
Address=$guest_cidr
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF

cat >"$root/usr/local/sbin/ch-report" <<EOF
#!/bin/sh
# Reports the booted system's state on the serial console, then powers off.
exec >/dev/ttyS0 2>&1
systemctl is-system-running --wait >/dev/null 2>&1
state=\$(systemctl is-system-running)
failed=\$(systemctl --failed --no-legend | wc -l)
echo "CH-DEBIAN-STATE \$state"
echo "CH-DEBIAN-FAILED \$failed"
systemctl --failed --no-legend --plain | while read -r unit rest; do
  echo "CH-DEBIAN-FAILED-UNIT \$unit \$rest"
  journalctl -b -o cat --no-pager -n 8 -u "\$unit" | sed 's/^/CH-DEBIAN-LOG /'
done
if [ -c /dev/rtc0 ]; then rtc=yes; else rtc=no; fi
if clock=\$(hwclock -r 2>&1); then hw=ok; else hw=fail; fi
echo "CH-DEBIAN-RTC rtc0=\$rtc hwclock=\$hw \$(echo "\$clock" | tr '\n' ' ')"
dmesg | grep -i -E 'rtc|cmos' | sed 's/^/CH-DEBIAN-DMESG /'
addr=\$(ip -4 -o addr show scope global | awk '{ print \$2 "=" \$4; exit }')
received=\$(ping -c 3 -W 5 $host_ip 2>/dev/null | grep -c 'bytes from')
echo "CH-DEBIAN-NET \${addr:-none} ping=\$received/3"
echo "CH-DEBIAN-TIME \$(systemd-analyze time 2>/dev/null | tr '\n' ' ')"
echo "CH-DEBIAN-UPTIME \$(cut -d' ' -f1 /proc/uptime)"
echo "CH-DEBIAN-DONE"
systemctl poweroff
EOF
chmod 755 "$root/usr/local/sbin/ch-report"
# Pulled in by multi-user.target but ordered after it; a simple service (no start job left
# pending while it runs), so that `is-system-running --wait` sees the boot finish.
cat >"$root/etc/systemd/system/ch-report.service" <<EOF
[Unit]
Description=Report the boot result on the serial console and power off
After=multi-user.target

[Service]
Type=simple
ExecStart=/usr/local/sbin/ch-report

[Install]
WantedBy=multi-user.target
EOF
chroot "$root" systemctl enable systemd-networkd.service ch-report.service >>"$log" 2>&1
# No login prompt on the serial console: the getty's vhangup of ttyS0 would cut the report's
# output off (seen in a run: the report never reached the host, then the guest powered off).
chroot "$root" systemctl mask serial-getty@ttyS0.service >>"$log" 2>&1

# --- The initramfs -------------------------------------------------------------------------
# initramfs-tools in the chroot, for the cached kernel: only the listed modules (and what
# modules.dep says they need, which modprobe loads first) instead of most of the tree.
cat >"$root/etc/initramfs-tools/conf.d/ch.conf" <<EOF
MODULES=list
COMPRESS=gzip
EOF
printf '%s\n' virtio_pci virtio_blk ext4 crc32c_generic >"$root/etc/initramfs-tools/modules"
for fs in proc sys dev; do
  mount --bind "/$fs" "$root/$fs"
  mounted+=("$root/$fs")
done
chroot "$root" depmod "$kver" >>"$log" 2>&1
chroot "$root" mkinitramfs -o "/boot/initrd.img-$kver" "$kver" >>"$log" 2>&1 ||
  nested_die "mkinitramfs failed (see $log)"
for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount "${mounted[$i]}"; done
mounted=()
cp "$root/boot/initrd.img-$kver" "$initrd.tmp"
# No package caches in the image.
chroot "$root" apt-get clean >>"$log" 2>&1
rm -rf "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/*

# --- The filesystem image ------------------------------------------------------------------
rm -f "$image.tmp"
truncate -s "$image_size" "$image.tmp"
mkfs.ext4 -q -F -L ch-debian -d "$root" "$image.tmp" >>"$log" 2>&1 || nested_die "mkfs.ext4 -d failed (see $log)"
mv "$image.tmp" "$image"
mv "$initrd.tmp" "$initrd"
printf '%s\n' "$stamp" >"$out/stamp"
end_ns="$(nested_now_ns)"
summary="built in $(nested_secs "$start_ns" "$end_ns") s (debootstrap $(nested_secs "$start_ns" "$debootstrap_ns") s): $image $(du -h --apparent-size "$image" | cut -f1) apparent, $(du -h "$image" | cut -f1) allocated; $initrd $(du -h "$initrd" | cut -f1)"
printf '%s\n' "$summary" >>"$log"
nested_log "$summary"
