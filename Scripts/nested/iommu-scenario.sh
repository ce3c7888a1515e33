# shellcheck shell=bash disable=SC2016  # the quoted lines are typed into the guest's shell
# The virtual IOMMU scenario of ch-e2e.sh, sourced by it inside level 1: it uses its run_l2,
# pass, fail, captures and $binary. Its guest is bookworm-backports' 6.12 cloud kernel with
# the level-2 initramfs remade for it (iommu-kernel.sh), booted as a bzImage: Debian's 6.1
# kernel has no virtio-iommu driver.
# shellcheck source-path=SCRIPTDIR source=restore-step.sh
source "$here/restore-step.sh"

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
# Then the VM is paused, snapshotted (the virtio-iommu's domains and mappings with it), its VMM
# killed and restored in a new VMM (restore-step.sh): without booting again, the guest reads
# both disks with O_DIRECT through the mappings its driver made before the snapshot (md5s as
# level 1's), writes another 1 MiB with O_DIRECT (found by level 1), and logs no fault.
scenario_iommu() {
  local io_dir zero_sum one_sum pm_sum sock
  io_dir="$(mktemp -d)"
  sock="$io_dir/api.sock"
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
  IO-E-([0-9]+-[0-9]+)|||!io_restore'
  # io_restore: snapshot, kill, restore in a new VMM; the restored guest reads both disks with
  # O_DIRECT (so through the IOMMU, not its page cache), writes 1 MiB at 2.5 MiB and counts faults.
  io_restore() {
    restore_in_new_vmm "$io_dir" "$sock" 'f="(^|[^a-z])fault|dma.*(error|fail)|i/o error|iommu.*(fail|error)"; head -c 1048576 /dev/urandom >/tmp/w2; dd if=/tmp/w2 of=$(seg 0) bs=65536 seek=40 oflag=direct conv=fsync 2>/dev/null; w=$?; echo IO-R-$(dd if=$(seg 0) bs=65536 iflag=direct 2>/dev/null | md5sum | cut -c1-32)-$(dd if=$(seg 1) bs=65536 iflag=direct 2>/dev/null | md5sum | cut -c1-32)-$w-$(md5sum </tmp/w2 | cut -c1-32)-$(dmesg | grep -ciE "$f")-$((6*7))' 'IO-R-[0-9a-f]*-[0-9a-f]*-[0-9]*-[0-9a-f]*-[0-9]*-42'
  }
  local restored_status=-1
  local iommu_base=(--kernel "$nested_iommu_vmlinuz" --initramfs "$nested_iommu_initrd" --serial tty --console off)
  local start_s=$SECONDS
  run_l2 iommu "$steps" "$binary" -v --api-socket "path=$sock" "${iommu_base[@]}" --cpus boot=1 --memory size=512M --cmdline "console=ttyS0 panic=-1" \
    --platform "num_pci_segments=2,iommu_segments=[1]" \
    --disk "path=$io_dir/zero.raw,iommu=on" "path=$io_dir/one.raw,pci_segment=1,iommu=on" \
    --pmem "file=$io_dir/pmem.img,iommu=on"
  local took=$((SECONDS - start_s)) written_sum pmem_written
  written_sum="$(dd if="$io_dir/zero.raw" bs=65536 skip=16 count=16 2>/dev/null | md5sum | cut -c1-32)"
  pmem_written="$(dd if="$io_dir/pmem.img" bs=65536 skip=32 count=1 2>/dev/null | md5sum | cut -c1-32)"
  local groups="${captures[0]:-x}"
  # After the restore: the disks as level 1 has them now, the second write, the guest's line.
  local zero_now one_now second_written restored_line boots
  zero_now="$(md5sum <"$io_dir/zero.raw" | cut -c1-32)"
  one_now="$(md5sum <"$io_dir/one.raw" | cut -c1-32)"
  second_written="$(dd if="$io_dir/zero.raw" bs=65536 skip=40 count=16 2>/dev/null | md5sum | cut -c1-32)"
  restored_line="$(tr -d '\r' <"$io_dir/restored.out" 2>/dev/null | grep -ao 'IO-R-[0-9a-f]*-[0-9a-f]*-[0-9]*-[0-9a-f]*-[0-9]*-42' | tail -n 1 || true)"
  boots="$(grep -ac 'Linux version' "$io_dir/restored.out" 2>/dev/null || true)"
  if ((steps_done == 6)) && [[ $groups =~ ^virtio_blk\+_virtio_blk\+_virtio_iommu-_virtio_pmem\+_virtio_rng-_(DMA|DMA-FQ)_$ &&
    ${captures[1]} == "$zero_sum-$one_sum" && ${captures[2]} == "0-$written_sum" &&
    ${captures[3]} == "0-$pm_sum-$pmem_written" && ${captures[4]} == 0-3 ]] && grep -q snapshotted "$io_dir/snap.out" &&
    [[ $restored_line == "IO-R-$zero_now-$one_now-0-$second_written-0-42" ]] && ((boots == 0)) && ((restored_status == 0)); then
    pass "iommu: 6.12 guest with --platform num_pci_segments=2,iommu_segments=[1] and iommu=on on two disks and a pmem: the two disks and the pmem in IOMMU groups of type ${groups##*_virtio_rng-_}, the rng and the IOMMU itself outside; both disks read through the virtio-iommu (md5 $zero_sum, $one_sum, level 1's), 1 MiB O_DIRECT write found by level 1 (md5 $written_sum), pmem read (md5 $pm_sum) and a flushed 64 KiB write found by level 1, the kernel added three devices to IOMMU groups and logged no IOMMU fault or DMA/I/O error; then paused, snapshotted with the IOMMU's mappings, VMM killed, restored in a new VMM: no kernel boot, both disks read again with O_DIRECT through the restored mappings (md5 $zero_now, $one_now, level 1's), a second 1 MiB O_DIRECT write found by level 1 (md5 $second_written), no fault, poweroff status 0 (${took}s)"
  else
    fail "iommu: steps $steps_done/6, first VMM status $vmm_status (killed after the snapshot), captures [${captures[*]:-}], level 1: disks $zero_sum $one_sum, written $written_sum, pmem first MiB $pm_sum, pmem written $pmem_written; snapshot: $(tr '\n' ' ' <"$io_dir/snap.out" 2>/dev/null); restored [${restored_line:-none}] (level 1 now: $zero_now $one_now, second write $second_written), kernel boots ${boots:-?}, restored VMM status $restored_status: $(tail -n 3 "$io_dir/restored.err" 2>/dev/null | tr '\n' ' ') (${took}s)"
  fi
  rm -rf "$io_dir"
}
