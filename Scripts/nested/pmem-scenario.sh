# shellcheck shell=bash disable=SC2016  # the quoted lines are typed into the guest's shell
# The pmem scenario of ch-e2e.sh, sourced by it inside level 1: it uses its run_l2, pass,
# fail, captures, $base, $append and $binary.

# scenario_pmem: three --pmem devices, told apart in the guest by their sizes:
#   an 8 MiB file of random bytes: the guest reads its first MiB from /dev/pmemN (md5 as
#     level 1's), then writes 64 KiB at 1 MiB with dd conv=fsync (a flush request);
#     after the VM ends the file holds the guest's bytes;
#   a 32 MiB ext4 image made in level 1 with mkfs.ext4 -d: the guest mounts it from its
#     /dev/pmemN and reads the file level 1 put there;
#   a 4 MiB file with discard_writes=on: the guest writes 64 KiB at its start, drops its
#     caches and reads its own bytes back; the file in level 1 is unchanged.
scenario_pmem() {
  local pm_dir marker first_sum pattern_before discard_before
  pm_dir="$(mktemp -d)"
  head -c 8388608 /dev/urandom >"$pm_dir/pattern.img"
  head -c 4194304 /dev/urandom >"$pm_dir/discard.img"
  first_sum="$(head -c 1048576 "$pm_dir/pattern.img" | md5sum | cut -c1-32)"
  pattern_before="$(md5sum <"$pm_dir/pattern.img" | cut -c1-32)"
  discard_before="$(md5sum <"$pm_dir/discard.img" | cut -c1-32)"
  marker="ext4-on-pmem-$RANDOM$RANDOM"
  mkdir -p "$pm_dir/tree"
  printf '%s\n' "$marker" >"$pm_dir/tree/hello.txt"
  local mkfs
  mkfs="$(command -v mkfs.ext4 || echo /usr/sbin/mkfs.ext4)"
  if ! "$mkfs" -q -F -O ^metadata_csum -d "$pm_dir/tree" "$pm_dir/ext4.img" 32M >"$pm_dir/mkfs.log" 2>&1; then
    fail "pmem: mkfs.ext4 failed in level 1: $(tr '\n' ' ' <"$pm_dir/mkfs.log")"
    rm -rf "$pm_dir"
    return
  fi
  # pm SECTORS: the /dev/pmemN of that size (in 512-byte sectors), or a path that does not
  # exist (never an empty word: a command would then read the console).
  local steps='L2-INIT-READY|||pm() { r=/missing-pmem-$1; for d in /sys/block/pmem*; do [ "$(cat $d/size 2>/dev/null)" = "$1" ] && r=/dev/${d##*/}; done; echo $r; }; grep -m1 "address sizes" /proc/cpuinfo; grep -i "pmem\|nvdimm\|PCI Bus 0000:00" /proc/iomem; ls /sys/block; echo PM-A-$(head -c 1048576 $(pm 16384) | md5sum | cut -c1-32)-$(cat /sys/block/$(basename $(pm 16384))/queue/write_cache | tr " " _)
  PM-A-([0-9a-f]{32}-[a-z_]*)|||mkdir -p /mnt && mount -t ext4 $(pm 65536) /mnt; echo PM-B-$(cat /mnt/hello.txt)-$(umount /mnt && echo unmounted)
  PM-B-([a-z0-9-]+)|||head -c 65536 /dev/urandom >/tmp/w; dd if=/tmp/w of=$(pm 16384) bs=65536 seek=16 count=1 conv=fsync 2>/dev/null; echo PM-C-$?-$(md5sum </tmp/w | cut -c1-32)
  PM-C-([0-9]+-[0-9a-f]{32})|||dd if=/tmp/w of=$(pm 8192) bs=65536 count=1 conv=fsync 2>/dev/null; s=$?; sync; echo 3 >/proc/sys/vm/drop_caches; echo PM-D-$s-$(head -c 65536 $(pm 8192) | md5sum | cut -c1-32)
  PM-D-([0-9]+-[0-9a-f]{32})|||poweroff -f'
  run_l2 pmem "$steps" "$binary" -v "${base[@]}" --cpus boot=1 --memory size=256M --cmdline "$append" \
    --pmem "file=$pm_dir/pattern.img" --pmem "file=$pm_dir/ext4.img,id=rootfs" --pmem "file=$pm_dir/discard.img,discard_writes=on"
  local written_sum pattern_after discard_after write_cache
  written_sum="$(dd if="$pm_dir/pattern.img" bs=65536 skip=16 count=1 2>/dev/null | md5sum | cut -c1-32)"
  pattern_after="$(md5sum <"$pm_dir/pattern.img" | cut -c1-32)"
  discard_after="$(md5sum <"$pm_dir/discard.img" | cut -c1-32)"
  write_cache="${captures[0]#*-}"
  local guest_write="${captures[2]:-x-x}"
  if ((steps_done == 5)) && ((vmm_status == 0)) && [[ ${captures[0]%%-*} == "$first_sum" && ${captures[1]} == "$marker-unmounted" &&
    $guest_write == "0-$written_sum" && $pattern_after != "$pattern_before" && ${captures[3]} == "$guest_write" &&
    $discard_after == "$discard_before" ]]; then
    pass "pmem: three --pmem devices: the guest read level 1's bytes from /dev/pmem (md5 $first_sum, write cache '$write_cache'), mounted the ext4 image made with mkfs.ext4 and read its file, wrote 64 KiB with dd conv=fsync (flush answered OK) that level 1 finds in the file; with discard_writes=on the guest reads back its own write while the file stays unchanged (VMM status 0)"
  else
    fail "pmem: steps $steps_done/5, VMM status $vmm_status, captures [${captures[*]:-}], level 1: first MiB $first_sum, marker $marker, bytes at 1 MiB $written_sum, pattern file $pattern_before -> $pattern_after, discard file $discard_before -> $discard_after"
  fi
  rm -rf "$pm_dir"
}
