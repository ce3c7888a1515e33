# shellcheck shell=bash disable=SC2016  # the quoted lines are typed into the guest's shell
# The virtual IOMMU scenario of ch-e2e.sh, sourced by it inside level 1: it uses its run_l2,
# pass, fail, captures and $binary. Its guest is bookworm-backports' 6.12 cloud kernel with
# the level-2 initramfs remade for it (iommu-kernel.sh), booted as a bzImage: Debian's 6.1
# kernel has no virtio-iommu driver.

# scenario_iommu: --platform num_pci_segments=2,iommu_segments=[1]: a disk on segment 1
# (iommu=on, as every device of an IOMMU segment must be), a disk and a pmem on segment 0
# with iommu=on, the rng on segment 0 without. The guest's virtio_iommu (loaded before the
# endpoint drivers) finds the IOMMU through the VIOT; the functions of the two disks and the
# pmem must be in IOMMU groups, all of one translating type (DMA or DMA-FQ), the rng's and the
# IOMMU's in none; the guest reads both
# disks (md5 as level 1's), writes 1 MiB to the segment-0 disk with O_DIRECT and conv=fsync
# (found by level 1 in the image afterwards), reads the pmem's first MiB and flushes a
# 64 KiB write to it (the flush request goes through the translated queue), and dmesg has
# three "Adding to iommu group" lines and no IOMMU fault, DMA error or I/O error.
scenario_iommu() {
  local io_dir zero_sum one_sum pm_sum
  io_dir="$(mktemp -d)"
  head -c 4194304 /dev/urandom >"$io_dir/zero.raw"
  head -c 4194304 /dev/urandom >"$io_dir/one.raw"
  head -c 4194304 /dev/urandom >"$io_dir/pmem.img"
  zero_sum="$(md5sum <"$io_dir/zero.raw" | cut -c1-32)"
  one_sum="$(md5sum <"$io_dir/one.raw" | cut -c1-32)"
  pm_sum="$(head -c 1048576 "$io_dir/pmem.img" | md5sum | cut -c1-32)"
  # seg N: the /dev/vdX whose PCI function is on segment N; grp: the IOMMU groups' types.
  local steps='L2-INIT-READY|||seg() { r=/missing-disk-$1; for d in /sys/block/vd*; do readlink -f $d | grep -q "/pci000$1:00/" && r=/dev/${d##*/}; done; echo $r; }; dmesg | grep -iE "viot|virtio_iommu|iommu" | head -n 20; ls -l /sys/kernel/iommu_groups/*/devices; e=$(for v in /sys/bus/virtio/devices/*; do d=$(basename $(readlink -f $v/driver)); [ -e $(readlink -f $v/..)/iommu_group ] && echo $d+ || echo $d-; done | sort | tr "\n" _); echo IO-A-${e}$(cat /sys/kernel/iommu_groups/*/type | sort -u | tr "\n" _)
  IO-A-([a-z_+-]+[A-Z][A-Za-z_-]*)|||echo IO-B-$(md5sum <$(seg 0) | cut -c1-32)-$(md5sum <$(seg 1) | cut -c1-32)
  IO-B-([0-9a-f]{32}-[0-9a-f]{32})|||head -c 1048576 /dev/urandom >/tmp/w; dd if=/tmp/w of=$(seg 0) bs=65536 seek=16 oflag=direct conv=fsync 2>/dev/null; echo IO-C-$?-$(md5sum </tmp/w | cut -c1-32)
  IO-C-([0-9]+-[0-9a-f]{32})|||p=$(ls /dev/pmem* | head -n 1); head -c 65536 /tmp/w >/tmp/p; dd if=/tmp/p of=$p bs=65536 seek=32 count=1 conv=fsync 2>/dev/null; echo IO-D-$?-$(head -c 1048576 $p | md5sum | cut -c1-32)-$(md5sum </tmp/p | cut -c1-32)
  IO-D-([0-9]+-[0-9a-f]{32}-[0-9a-f]{32})|||f="(^|[^a-z])fault|dma.*(error|fail)|i/o error|iommu.*(fail|error)"; dmesg | grep -iE "$f"; echo IO-E-$(dmesg | grep -ciE "$f")-$(dmesg | grep -c "Adding to iommu group")
  IO-E-([0-9]+-[0-9]+)|||poweroff -f'
  local iommu_base=(--kernel "$nested_iommu_vmlinuz" --initramfs "$nested_iommu_initrd" --serial tty --console off)
  local start_s=$SECONDS
  run_l2 iommu "$steps" "$binary" -v "${iommu_base[@]}" --cpus boot=1 --memory size=512M --cmdline "console=ttyS0 panic=-1" \
    --platform "num_pci_segments=2,iommu_segments=[1]" \
    --disk "path=$io_dir/zero.raw,iommu=on" "path=$io_dir/one.raw,pci_segment=1,iommu=on" \
    --pmem "file=$io_dir/pmem.img,iommu=on"
  local took=$((SECONDS - start_s)) written_sum pmem_written
  written_sum="$(dd if="$io_dir/zero.raw" bs=65536 skip=16 count=16 2>/dev/null | md5sum | cut -c1-32)"
  pmem_written="$(dd if="$io_dir/pmem.img" bs=65536 skip=32 count=1 2>/dev/null | md5sum | cut -c1-32)"
  local groups="${captures[0]:-x}"
  if ((steps_done == 6)) && ((vmm_status == 0)) && [[ $groups =~ ^virtio_blk\+_virtio_blk\+_virtio_iommu-_virtio_pmem\+_virtio_rng-_(DMA|DMA-FQ)_$ &&
    ${captures[1]} == "$zero_sum-$one_sum" && ${captures[2]} == "0-$written_sum" &&
    ${captures[3]} == "0-$pm_sum-$pmem_written" && ${captures[4]} == 0-3 ]]; then
    pass "iommu: 6.12 guest with --platform num_pci_segments=2,iommu_segments=[1] and iommu=on on two disks and a pmem: the two disks and the pmem in IOMMU groups of type ${groups##*_virtio_rng-_}, the rng and the IOMMU itself outside; both disks read through the virtio-iommu (md5 $zero_sum, $one_sum, level 1's), 1 MiB O_DIRECT write found by level 1 (md5 $written_sum), pmem read (md5 $pm_sum) and a flushed 64 KiB write found by level 1, the kernel added three devices to IOMMU groups and logged no IOMMU fault or DMA/I/O error (VMM status 0, ${took}s)"
  else
    fail "iommu: steps $steps_done/6, VMM status $vmm_status, captures [${captures[*]:-}], level 1: disks $zero_sum $one_sum, written $written_sum, pmem first MiB $pm_sum, pmem written $pmem_written (${took}s)"
  fi
  rm -rf "$io_dir"
}
