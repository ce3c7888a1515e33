#!/usr/bin/env bash
# Prepares the nested-virtualisation test bench (see Scripts/nested/README.md).
#
# Usage: Scripts/nested/prepare.sh [--force]
#
# Everything goes into $CH_NESTED_CACHE (default
# ${XDG_CACHE_HOME:-$HOME/.cache}/cloud-hypervisor-swift/nested), outside the repository:
#   vmlinuz               Debian's bzImage (boots level 1 under QEMU TCG, and level 2)
#   vmlinux               the uncompressed ELF inside it (PVH boot: Xen ELF note type 18)
#   l1-initramfs.cpio.gz  busybox init for level 1: kvm + kvm-amd, host tree over 9p, chroot
#   l2-initramfs.cpio.gz  busybox init for level 2: virtio modules, marker, test or shell
#   kernel-release        the kernel version the images were made from
#
# Each output is made only when it is missing. The initramfs images are also remade when
# this script or an init script changes (a hash of them is kept in initramfs.stamp).
# --force (or CH_NESTED_REFRESH=1) looks up the current Debian kernel again and remakes all.
# Host packages are installed with apt-get when missing (that step needs root).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$here/common.sh"

force="${CH_NESTED_REFRESH:-0}"
case "${1:-}" in
  "") ;;
  --force) force=1 ;;
  -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
  *) nested_die "unknown argument: $1 (usage: prepare.sh [--force])" ;;
esac

# Modules that level 1 loads, in this order (their dependencies are added in front):
# KVM for AMD SVM (which QEMU's `-cpu max` emulates), then virtio-pci and 9p so that the
# host's root tree can be mounted from the `-virtfs` devices; tun for the TAP interfaces
# of the network scenarios; vhost_vsock for QEMU's vhost-vsock-pci in the devices benchmark.
l1_modules=(irqbypass kvm ccp kvm-amd
  virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
  netfs fscache 9pnet 9pnet_virtio 9p tun vhost_vsock)
# Modules that level 2 loads when they exist: the virtio drivers a VMM's devices need, for
# virtio-pmem the nvdimm stack and ext4 (the pmem scenario mounts a file system from it), and
# fuse with virtiofs for the fs scenario, virtio_balloon for the balloon scenario, virtio_mem
# for the virtiomem scenario.
l2_modules=(virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
  virtio_blk failover net_failover virtio_net virtio_console virtio-rng button evdev
  vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport
  libnvdimm nd_btt nd_pmem nd_virtio virtio_pmem crc16 mbcache jbd2 crc32c_generic ext4
  fuse virtiofs virtio_balloon virtio_mem)
# Modules level 1 cannot work without (a missing one is an error, not a warning).
l1_required=(kvm kvm-amd 9pnet_virtio 9p)

mkdir -p "$CH_NESTED_CACHE"

# --- Step 1: host packages -----------------------------------------------------------
# qemu-system-x86 runs level 1 (and level 2 inside it, from the shared host tree),
# busybox-static and cpio make the initramfs images, xz-utils unpacks the kernel
# payload, kmod's depmod computes module dependencies, binutils' readelf checks vmlinux.
packages=(qemu-system-x86 busybox-static cpio xz-utils kmod binutils gzip)
missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  [[ $EUID -eq 0 ]] || nested_die "missing packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})"
  nested_log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
busybox=/bin/busybox
[[ -x $busybox ]] || nested_die "$busybox missing although busybox-static is installed"

# --- Step 2: the Debian kernel package --------------------------------------------------
# linux-image-amd64 is a meta package; the real image is the linux-image-*-amd64 package
# it depends on. It is downloaded (not installed) and unpacked into the cache.
kernel_root="$CH_NESTED_CACHE/kernel"
if [[ $force == 1 || ! -s $CH_NESTED_CACHE/kernel-release || ! -d $kernel_root/lib/modules ]]; then
  kpkg="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')"
  if [[ -z $kpkg && $EUID -eq 0 ]]; then
    apt-get update -qq # an empty package list (fresh machine) knows no linux-image-amd64
    kpkg="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')"
  fi
  [[ -n $kpkg ]] || nested_die "cannot resolve linux-image-amd64 (run apt-get update)"
  nested_log "downloading $kpkg"
  debs="$CH_NESTED_CACHE/debs"
  rm -rf "$debs" "$kernel_root" "$CH_NESTED_CACHE/kernel-release"
  mkdir -p "$debs"
  # apt-get download writes into the current directory; the subshell keeps ours. As root,
  # apt would fetch as the _apt user, who usually cannot reach a cache under $HOME (apt
  # then warns and downloads as root anyway): ask for root directly.
  sandbox=()
  if [[ $EUID -eq 0 ]]; then sandbox=(-o APT::Sandbox::User=root); fi
  (cd "$debs" && apt-get download -q "${sandbox[@]}" "$kpkg" >&2)
  deb="$(find "$debs" -maxdepth 1 -name "${kpkg}_*.deb" | head -n 1)"
  [[ -n $deb ]] || nested_die "apt-get download $kpkg produced no .deb"
  dpkg-deb -x "$deb" "$kernel_root"
  kver="${kpkg#linux-image-}"
  [[ -d $kernel_root/lib/modules/$kver ]] || nested_die "$deb has no lib/modules/$kver"
  # The package ships no modules.dep (its postinst makes one); make it in the cache.
  depmod -b "$kernel_root" "$kver"
  rm -f "$CH_NESTED_CACHE/vmlinuz" "$CH_NESTED_CACHE/vmlinux"
  printf '%s\n' "$kver" >"$CH_NESTED_CACHE/kernel-release"
fi
kver="$(cat "$CH_NESTED_CACHE/kernel-release")"
moddir="$kernel_root/lib/modules/$kver"

# --- Step 3: vmlinuz and vmlinux ---------------------------------------------------------
if [[ ! -s $nested_vmlinuz ]]; then
  cp "$kernel_root/boot/vmlinuz-$kver" "$nested_vmlinuz.tmp"
  mv "$nested_vmlinuz.tmp" "$nested_vmlinuz"
fi
if [[ ! -s $nested_vmlinux ]]; then
  # The bzImage's payload is an xz stream: find the first xz magic (FD 37 7A 58 5A 00),
  # cut the file there and decompress exactly one stream (the bzImage has more after it).
  offset="$(LC_ALL=C grep -obUaP '\xFD7zXZ\x00' "$nested_vmlinuz" | head -n 1 | cut -d: -f1 || true)"
  [[ -n $offset ]] || nested_die "no xz payload in $nested_vmlinuz"
  tail -c "+$((offset + 1))" "$nested_vmlinuz" >"$nested_vmlinux.xz"
  xz -dc --single-stream "$nested_vmlinux.xz" >"$nested_vmlinux.tmp"
  rm -f "$nested_vmlinux.xz"
  # It must be an ELF executable with the PVH entry point: Xen ELF note type 18 (0x12,
  # XEN_ELFNOTE_PHYS32_ENTRY), which readelf lists as an unknown Xen note type.
  readelf -h "$nested_vmlinux.tmp" | grep -q 'Type:[[:space:]]*EXEC' ||
    nested_die "the payload of $nested_vmlinuz is not an ELF executable"
  readelf -n "$nested_vmlinux.tmp" | grep -Eq '^[[:space:]]*Xen[[:space:]].*(\(0x00000012\)|PHYS32_ENTRY)' ||
    nested_die "vmlinux has no Xen PVH note (type 18)"
  mv "$nested_vmlinux.tmp" "$nested_vmlinux"
  nested_log "vmlinux extracted (xz payload at offset $offset, PVH note present)"
fi

# --- Step 4: module lists ------------------------------------------------------------
# resolve_modules NAME...: prints the module files (relative to $moddir) to load for
# NAME..., dependencies first, each once. modules.dep lists every (transitive) dependency
# of a module, the ones to load first at the end. Built-in modules (modules.builtin) need
# no file; a name that is neither is reported on stderr as "missing NAME".
resolve_modules() {
  awk -v want="$*" '
    function norm(s) { gsub(/-/, "_", s); return s }
    function base(p) { sub(/.*\//, "", p); sub(/\.ko(\.[a-z]+)?$/, "", p); return norm(p) }
    FILENAME ~ /modules\.builtin$/ { builtin[base($1)] = 1; next }
    {
      path = $1; sub(/:$/, "", path); name = base(path)
      file[name] = path
      deps[name] = ""
      for (i = NF; i >= 2; i--) deps[name] = deps[name] " " $i
    }
    END {
      n = split(want, names, " ")
      for (k = 1; k <= n; k++) {
        m = norm(names[k])
        if (!(m in file)) {
          if (m in builtin) printf "builtin %s\n", m > "/dev/stderr"
          else printf "missing %s\n", m > "/dev/stderr"
          continue
        }
        c = split(deps[m], d, " ")
        for (j = 1; j <= c; j++) if (!(d[j] in seen)) { seen[d[j]] = 1; print d[j] }
        if (!(file[m] in seen)) { seen[file[m]] = 1; print file[m] }
      }
    }' "$moddir/modules.builtin" "$moddir/modules.dep"
}

# --- Step 5: the initramfs images -----------------------------------------------------
# build_initramfs OUT INIT_SCRIPT REQUIRED_LIST MODULE...: a busybox root with INIT_SCRIPT
# as /init, the modules (decompressed if the kernel ships them compressed) under
# /lib/modules and their load order in /etc/ch-modules, packed as a gzip'ed newc cpio.
build_initramfs() {
  local out="$1" init="$2" required="$3"
  shift 3
  local stage
  stage="$(mktemp -d "$CH_NESTED_CACHE/stage.XXXXXX")"
  mkdir -p "$stage"/{bin,dev,etc,lib/modules,proc,sys,tmp,host,root,run}
  cp "$busybox" "$stage/bin/busybox"
  # One symlink per applet, so that the init scripts can call mount, insmod, ... by name.
  local applet
  for applet in $("$busybox" --list); do
    [[ $applet == busybox ]] || ln -sf busybox "$stage/bin/$applet"
  done
  # The kernel opens /dev/console for init before anything is mounted: without the node
  # init's output is lost (the init scripts also reopen it after mounting devtmpfs).
  if [[ $EUID -eq 0 ]]; then mknod -m 600 "$stage/dev/console" c 5 1; fi
  install -m 755 "$init" "$stage/init"
  # The timed block I/O tool of the disk benchmark (busybox has none), linked statically.
  gcc -static -O2 -o "$stage/bin/ch-blkbench" "$here/blkbench.c" || nested_die "cannot build ch-blkbench (gcc and libc6-dev are needed)"
  # The timed TCP transfer of the network tests (busybox has no iperf).
  gcc -static -O2 -o "$stage/bin/ch-netbench" "$here/netbench.c" || nested_die "cannot build ch-netbench"
  # Both ends of the vsock transfers (AF_VSOCK in the guest).
  gcc -static -O2 -o "$stage/bin/ch-vsockbench" "$here/vsockbench.c" || nested_die "cannot build ch-vsockbench"

  local report mod rel
  report="$(mktemp)"
  : >"$stage/etc/ch-modules"
  while IFS= read -r rel; do
    mod="${rel##*/}"
    case "$rel" in
      *.ko) cp "$moddir/$rel" "$stage/lib/modules/$mod" ;;
      *.ko.xz) xz -dc "$moddir/$rel" >"$stage/lib/modules/${mod%.xz}" ;;
      *.ko.zst) zstd -qdc "$moddir/$rel" >"$stage/lib/modules/${mod%.zst}" ;;
      *.ko.gz) gzip -dc "$moddir/$rel" >"$stage/lib/modules/${mod%.gz}" ;;
      *) nested_die "unexpected module file $rel" ;;
    esac
    printf '%s\n' "${mod%.ko*}.ko" >>"$stage/etc/ch-modules"
  done < <(resolve_modules "$@" 2>"$report")
  # Built-in modules are fine; a missing one is fatal only when it is required.
  while read -r what name; do
    if [[ $what == missing && " $required " == *" ${name} "* ]]; then
      nested_die "module $name is neither a module nor built in for $kver"
    fi
    nested_log "${out##*/}: $name is $what"
  done <"$report"
  rm -f "$report"

  (cd "$stage" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
    cpio --null -o -H newc --quiet -R 0:0) | gzip -9n >"$out.tmp"
  mv "$out.tmp" "$out"
  nested_log "built ${out##*/}; modules loaded in order: $(paste -sd' ' "$stage/etc/ch-modules")"
  rm -rf "$stage"
}

# The images depend on this script, the init scripts and the kernel: remake them when any
# of those changed since the last build.
stamp="$(cat "$0" "$here/l1-init.sh" "$here/l2-init.sh" "$here/blkbench.c" "$here/netbench.c" "$here/vsockbench.c" <(printf '%s\n' "$kver") | sha256sum | cut -d' ' -f1)"
if [[ $force == 1 || ! -s $nested_l1_initrd || ! -s $nested_l2_initrd ||
  "$(cat "$CH_NESTED_CACHE/initramfs.stamp" 2>/dev/null || true)" != "$stamp" ]]; then
  required="${l1_required[*]}"
  build_initramfs "$nested_l1_initrd" "$here/l1-init.sh" "${required//-/_}" "${l1_modules[@]}"
  build_initramfs "$nested_l2_initrd" "$here/l2-init.sh" "" "${l2_modules[@]}"
  # Level 1 runs the other end of the network transfers from the host tree.
  gcc -static -O2 -o "$nested_netbench" "$here/netbench.c" || nested_die "cannot build ch-netbench"
  # ... and of the vsock transfers (the hybrid vsock's Unix sockets in level 1).
  gcc -static -O2 -o "$nested_vsockbench" "$here/vsockbench.c" || nested_die "cannot build ch-vsockbench"
  printf '%s\n' "$stamp" >"$CH_NESTED_CACHE/initramfs.stamp"
fi

nested_log "ready: $CH_NESTED_CACHE (kernel $kver)"
