# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this
# Shared settings for the nested-virtualisation test bench (Scripts/nested/*.sh).
# Sourced, never executed: it only defines variables and helpers.

# Where prepare.sh keeps everything it downloads or builds. It lives outside the
# repository so that kernel packages and images never end up in a commit.
CH_NESTED_CACHE="${CH_NESTED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cloud-hypervisor-swift/nested}"

# Files inside the cache that the other scripts use.
nested_vmlinuz="$CH_NESTED_CACHE/vmlinuz"              # bzImage, boots level 1 (and level 2)
nested_vmlinux="$CH_NESTED_CACHE/vmlinux"              # uncompressed ELF with the PVH entry note
nested_l1_initrd="$CH_NESTED_CACHE/l1-initramfs.cpio.gz"
nested_l2_initrd="$CH_NESTED_CACHE/l2-initramfs.cpio.gz"
nested_netbench="$CH_NESTED_CACHE/ch-netbench"         # the level-1 end of the network transfers
nested_vsockbench="$CH_NESTED_CACHE/ch-vsockbench"     # the level-1 end of the vsock transfers
nested_iommu_vmlinuz="$CH_NESTED_CACHE/iommu-vmlinuz"   # 6.12 cloud bzImage with virtio-iommu (iommu-kernel.sh)
nested_iommu_initrd="$CH_NESTED_CACHE/l2-iommu-initramfs.cpio.gz"  # level-2 initramfs with its modules

# Prefix every message with the name of the script that prints it.
nested_log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
nested_die() { nested_log "error: $*"; exit 1; }

# Nanoseconds since the epoch, and a difference of two of them in seconds (1 decimal).
nested_now_ns() { date +%s%N; }
nested_secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1e9 }'; }
