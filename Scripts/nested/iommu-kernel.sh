#!/usr/bin/env bash
# Prepares the kernel of the nested `iommu` scenario (see Scripts/nested/README.md): Debian
# 12's own 6.1 kernel has no virtio-iommu driver, bookworm-backports' cloud kernel has it
# (CONFIG_VIRTIO_IOMMU=m, CONFIG_ACPI_VIOT=y). Run by ch-e2e.sh on this machine when the
# scenario is selected; prepare.sh must have run (the level-2 initramfs is the base).
#
# Into $CH_NESTED_CACHE (see common.sh), each made only when missing or stale:
#   iommu-kernel/            the unpacked linux-image package (boot/, lib/modules/)
#   iommu-vmlinuz            its bzImage (booted by the VMM under test as a bzImage)
#   l2-iommu-initramfs.cpio.gz  the level-2 initramfs with this kernel's modules instead:
#                            virtio_iommu first, then virtio_blk, the virtio-pmem stack, virtio-rng
# The package is downloaded from deb.debian.org, or taken from CH_NESTED_IOMMU_DEB (a local
# copy of the same .deb).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$here/common.sh"

kver="6.12.57+deb12-cloud-amd64"
deb_name="linux-image-${kver}_6.12.57-1~bpo12+1_amd64.deb"
deb_url="http://deb.debian.org/debian/pool/main/l/linux-signed-amd64/$deb_name"
# Loaded in this order (dependencies first, each once): the IOMMU driver before the endpoint
# drivers, so that the disk and the pmem are probed behind it (the built-in virtio_pci
# defers their probe until the IOMMU registers).
modules=(virtio_iommu virtio_blk virtio_pmem nd_pmem nd_btt virtio-rng)

# current_cloud_kernel: sets deb_name, deb_url and kver to bookworm-backports' newest cloud
# kernel (the archive keeps only the current backport, so the pinned one may be gone).
current_cloud_kernel() {
  local file
  file="$(curl -fsSL http://deb.debian.org/debian/dists/bookworm-backports/main/binary-amd64/Packages.xz | xz -dc |
    awk '/^Package: linux-image-[0-9.]+\+deb12-cloud-amd64$/ { p = 1 } p && /^Filename:/ { print $2; p = 0 }' | sort -V | tail -n 1)" || return 1
  [[ -n $file ]] || return 1
  deb_name="${file##*/}"
  deb_url="http://deb.debian.org/debian/$file"
  kver="${deb_name#linux-image-}"
  kver="${kver%%_*}"
}

root="$CH_NESTED_CACHE/iommu-kernel"
[[ -s $nested_l2_initrd ]] || nested_die "no $nested_l2_initrd: run Scripts/nested/prepare.sh first"
# A kernel unpacked before (the pinned one or a newer backport) is used as it is.
for dir in "$root"/lib/modules/*/; do [[ -d $dir ]] && kver="$(basename "$dir")"; done
if [[ ! -d $root/lib/modules/$kver ]]; then
  mkdir -p "$CH_NESTED_CACHE/debs-iommu"
  deb="$CH_NESTED_CACHE/debs-iommu/$deb_name"
  if [[ ! -s $deb ]]; then
    if [[ -n ${CH_NESTED_IOMMU_DEB:-} ]]; then
      cp "$CH_NESTED_IOMMU_DEB" "$deb.tmp"
    else
      nested_log "downloading $deb_url"
      if ! curl -fsSL -o "$deb.tmp" "$deb_url"; then
        current_cloud_kernel || nested_die "cannot download $deb_url nor find bookworm-backports' current cloud kernel"
        nested_log "the pinned kernel is gone from the archive; downloading $deb_url"
        deb="$CH_NESTED_CACHE/debs-iommu/$deb_name"
        curl -fsSL -o "$deb.tmp" "$deb_url" || nested_die "cannot download $deb_url"
      fi
    fi
    mv "$deb.tmp" "$deb"
  fi
  rm -rf "$root.tmp"
  dpkg-deb -x "$deb" "$root.tmp"
  [[ -d $root.tmp/lib/modules/$kver ]] || nested_die "$deb has no lib/modules/$kver"
  grep -q '^CONFIG_VIRTIO_IOMMU=[ym]' "$root.tmp/boot/config-$kver" || nested_die "$kver has no virtio-iommu driver"
  depmod -b "$root.tmp" "$kver"
  rm -rf "$root"
  mv "$root.tmp" "$root"
fi
cp -u "$root/boot/vmlinuz-$kver" "$nested_iommu_vmlinuz"

# The initramfs: the level-2 one (busybox, l2-init.sh, the test tools) with this kernel's
# modules. Remade when the level-2 initramfs or this script changes.
stamp="$(cat "$0" "$nested_l2_initrd" | sha256sum | cut -d' ' -f1)"
if [[ ! -s $nested_iommu_initrd || "$(cat "$CH_NESTED_CACHE/iommu-initramfs.stamp" 2>/dev/null || true)" != "$stamp" ]]; then
  stage="$(mktemp -d "$CH_NESTED_CACHE/stage.XXXXXX")"
  (cd "$stage" && gzip -dc "$nested_l2_initrd" | cpio -id --quiet 2>/dev/null)
  rm -f "$stage"/lib/modules/*
  : >"$stage/etc/ch-modules"
  declare -A seen=()
  for module in "${modules[@]}"; do
    # modprobe lists "insmod PATH" lines, dependencies first; built-in ones as "builtin NAME".
    while read -r what path _; do
      [[ $what == insmod && -z ${seen[$path]:-} ]] || continue
      seen[$path]=1
      name="${path##*/}"
      case "$name" in
        *.ko.xz) xz -dc "$path" >"$stage/lib/modules/${name%.xz}" ;;
        *.ko.zst) zstd -qdc "$path" >"$stage/lib/modules/${name%.zst}" ;;
        *.ko) cp "$path" "$stage/lib/modules/$name" ;;
        *) nested_die "unexpected module file $path" ;;
      esac
      printf '%s\n' "${name%.ko*}.ko" >>"$stage/etc/ch-modules"
    done < <(modprobe -d "$root" -S "$kver" --show-depends "$module" || nested_die "no module $module in $kver")
  done
  (cd "$stage" && find . -mindepth 1 -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) | gzip -9n >"$nested_iommu_initrd.tmp"
  mv "$nested_iommu_initrd.tmp" "$nested_iommu_initrd"
  nested_log "built ${nested_iommu_initrd##*/}; modules loaded in order: $(paste -sd' ' "$stage/etc/ch-modules")"
  rm -rf "$stage"
  printf '%s\n' "$stamp" >"$CH_NESTED_CACHE/iommu-initramfs.stamp"
fi
nested_log "ready: $nested_iommu_vmlinuz ($kver), $nested_iommu_initrd"
