# shellcheck shell=bash disable=SC2016  # the quoted lines are typed into the guest's shell
# The vhost-user-blk scenario of ch-e2e.sh, sourced by it inside level 1: it uses its run_l2,
# pass, fail, captures, $in, $base, $append, $binary and $remote.

# vb_type LINE: types LINE into the guest's console (from a step that runs in level 1).
vb_type() { printf '%s\n' "$1" >&"$in"; }

# scenario_vhostblk: Debian's qemu-storage-daemon (qemu-system-common) exports two raw images
# of level 1 as vhost-user-blk (writable=on). The guest boots with --memory shared=on and
# --disk vhost_user=on,socket=PATH: it sees /dev/vda with the image's size (from the
# back-end's configuration space, GET_CONFIG), reads level 1's random first 4 KiB (md5 as
# level 1's) and writes 64 KiB with conv=fsync that level 1 finds in the image after the VMM
# exits. ch-remote add-disk vhost_user=on,socket= hot-adds the second export: the guest sees
# /dev/vdb with its size and pattern; remove-device takes it away. ch-remote snapshot of the paused VM is refused naming
# the vhost-user-blk disk, and the VM resumes. Then qemu-storage-daemon is killed (SIGKILL) and
# started again on the same socket: the VMM reconnects and hands the queue over again, and the
# guest reads the pattern (page cache dropped) and writes 64 KiB more that level 1 finds in the
# image. Also: the same --disk without shared=on is refused with Cloud Hypervisor's words
# before anything starts.
scenario_vhostblk() {
  local vb_dir qsd=/usr/bin/qemu-storage-daemon qsd_pid sock hot_sock api
  if [[ ! -x $qsd ]]; then
    fail "vhostblk: $qsd is missing in level 1 (Debian's qemu-system-common provides it)"
    return
  fi
  vb_dir="$(mktemp -d)"
  sock="$vb_dir/blk.sock" hot_sock="$vb_dir/hot.sock" api="$vb_dir/api.sock"
  truncate -s 32M "$vb_dir/disk.raw"
  truncate -s 8M "$vb_dir/hot.raw"
  head -c 4096 /dev/urandom >"$vb_dir/pattern"
  head -c 4096 /dev/urandom >"$vb_dir/hot-pattern"
  dd if="$vb_dir/pattern" of="$vb_dir/disk.raw" conv=notrunc status=none
  dd if="$vb_dir/hot-pattern" of="$vb_dir/hot.raw" conv=notrunc status=none
  local pattern_md5 hot_md5
  pattern_md5="$(md5sum <"$vb_dir/pattern" | cut -c1-32)"
  hot_md5="$(md5sum <"$vb_dir/hot-pattern" | cut -c1-32)"

  # Without shared memory a vhost-user disk is refused before the VM is built.
  local refused status=0
  refused="$("$binary" "${base[@]}" --cpus boot=1 --memory size=256M --cmdline "$append" --disk "vhost_user=on,socket=$sock" 2>&1)" || status=$?

  local main_export=(--blockdev "driver=file,node-name=f,filename=$vb_dir/disk.raw" --blockdev driver=raw,node-name=d,file=f
    --export "type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path=$sock,writable=on")
  "$qsd" "${main_export[@]}" \
    --blockdev "driver=file,node-name=hf,filename=$vb_dir/hot.raw" --blockdev driver=raw,node-name=hd,file=hf \
    --export "type=vhost-user-blk,id=he,node-name=hd,addr.type=unix,addr.path=$hot_sock,writable=on" \
    >"$vb_dir/qsd.log" 2>&1 &
  qsd_pid=$!
  local tries=0
  while [[ ! -S $sock || ! -S $hot_sock ]] && ((tries < 100)); do sleep 0.1; tries=$((tries + 1)); done

  vb_hotadd() {
    "$remote" --api-socket "$api" add-disk "vhost_user=on,socket=$hot_sock" >"$vb_dir/add.out" 2>&1 || echo "add failed" >>"$vb_dir/add.out"
    vb_type 'n=0; while [ ! -e /sys/block/vdb ] && [ $n -lt 300 ]; do sleep 0.2; n=$((n+1)); done; [ -b /dev/vdb ] || mknod /dev/vdb b $(sed "s/:/ /" /sys/block/vdb/dev); echo VB-C-$(cat /sys/block/vdb/size)-$(head -c 4096 /dev/vdb | md5sum | cut -c1-32)'
  }
  vb_remove() {
    "$remote" --api-socket "$api" remove-device _disk1 >"$vb_dir/remove.out" 2>&1 && echo removed >>"$vb_dir/remove.out"
    vb_type 'n=0; while [ -e /sys/block/vdb ] && [ $n -lt 300 ]; do sleep 0.2; n=$((n+1)); done; echo VB-R-$(ls /sys/block | grep vd | tr "\n" _)'
  }
  vb_snapshot() {
    local snap_status=0 tries=0
    # The VMM releases _disk1 when the guest ejects it (vm.info stops listing it).
    while "$remote" --api-socket "$api" info 2>/dev/null | grep -q '"_disk1"' && ((tries < 300)); do sleep 0.2; tries=$((tries + 1)); done
    mkdir -p "$vb_dir/snap"
    { timeout 120 "$remote" --api-socket "$api" pause &&
      timeout 120 "$remote" --api-socket "$api" snapshot "file://$vb_dir/snap"; } >"$vb_dir/snap.out" 2>&1 || snap_status=$?
    echo "status $snap_status" >>"$vb_dir/snap.out"
    timeout 120 "$remote" --api-socket "$api" resume >>"$vb_dir/snap.out" 2>&1 || echo "resume failed" >>"$vb_dir/snap.out"
    vb_type 'echo VB-D-$((40+2))'
  }
  vb_restart() {
    # The back-end dies with the guest idle and comes back on the same socket.
    kill -9 "$qsd_pid" 2>/dev/null || true
    wait "$qsd_pid" 2>/dev/null || true
    rm -f "$sock"
    sleep 1
    "$qsd" "${main_export[@]}" >"$vb_dir/qsd2.log" 2>&1 &
    qsd_pid=$!
    local tries=0
    while [[ ! -S $sock ]] && ((tries < 100)); do sleep 0.1; tries=$((tries + 1)); done
    vb_type 'echo 3 >/proc/sys/vm/drop_caches; head -c 65536 /dev/urandom >/tmp/w2; dd if=/tmp/w2 of=/dev/vda bs=4096 seek=2048 conv=fsync 2>/dev/null; echo 3 >/proc/sys/vm/drop_caches; echo VB-E-$(head -c 4096 /dev/vda | md5sum | cut -c1-32)-$(md5sum </tmp/w2 | cut -c1-32)'
  }
  local steps='L2-INIT-READY|||echo VB-A-$(cat /sys/block/vda/size)-$(head -c 4096 /dev/vda | md5sum | cut -c1-32)
  VB-A-([0-9]+-[0-9a-f]{32})|||head -c 65536 /dev/urandom >/tmp/w; dd if=/tmp/w of=/dev/vda bs=4096 seek=1024 conv=fsync 2>/dev/null; echo VB-B-$(md5sum </tmp/w | cut -c1-32)
  VB-B-([0-9a-f]{32})|||!vb_hotadd
  VB-C-([0-9]+-[0-9a-f]{32})|||!vb_remove
  VB-R-([a-z_]+)|||!vb_snapshot
  VB-D-([0-9]+)|||!vb_restart
  VB-E-([0-9a-f]{32}-[0-9a-f]{32})|||poweroff -f'
  run_l2 vhostblk "$steps" "$binary" -v --api-socket "path=$api" "${base[@]}" --cpus boot=1 --memory size=512M,shared=on --cmdline "$append" \
    --disk "vhost_user=on,socket=$sock"
  kill "$qsd_pid" 2>/dev/null || true
  wait "$qsd_pid" 2>/dev/null || true
  local written rewritten
  written="$(dd if="$vb_dir/disk.raw" bs=4096 skip=1024 count=16 status=none | md5sum | cut -c1-32)"
  rewritten="$(dd if="$vb_dir/disk.raw" bs=4096 skip=2048 count=16 status=none | md5sum | cut -c1-32)"
  echo "ch-e2e: [vhostblk] add: $(tr '\n' ' ' <"$vb_dir/add.out" 2>/dev/null); remove: $(tr '\n' ' ' <"$vb_dir/remove.out" 2>/dev/null); snapshot: $(tr '\n' ' ' <"$vb_dir/snap.out" 2>/dev/null | cut -c1-400)"
  if ((steps_done == 7)) && ((vmm_status == 0)) && [[ ${captures[0]} == "65536-$pattern_md5" && ${captures[1]} == "$written" &&
    ${captures[2]} == "16384-$hot_md5" && ${captures[3]} == vda_ && ${captures[4]} == 42 && ${captures[5]} == "$pattern_md5-$rewritten" ]] && grep -q '"id":"_disk1"' "$vb_dir/add.out" &&
    grep -q removed "$vb_dir/remove.out" &&
    grep -q 'vhost-user-blk' "$vb_dir/snap.out" && ! grep -q 'status 0' "$vb_dir/snap.out" && ! grep -q 'resume failed' "$vb_dir/snap.out" &&
    ((status != 0)) && [[ $refused == *"Using vhost-user requires using shared memory or huge pages"* ]]; then
    pass "vhostblk: qemu-storage-daemon served two raw images over vhost-user-blk; the guest (--memory shared=on) saw /dev/vda of 65536 sectors, read level 1's pattern (md5 $pattern_md5), wrote 64 KiB that level 1 found in the image after the VMM exited (md5 $written); ch-remote add-disk vhost_user=on hot-added /dev/vdb (_disk1, 16384 sectors, pattern md5 $hot_md5) and remove-device _disk1 took it away; the snapshot was refused naming the vhost-user-blk disk and the VM resumed; qemu-storage-daemon killed and started again: the VMM reconnected, the guest read the pattern again and wrote 64 KiB more that level 1 found (md5 $rewritten); VMM status 0; without shared=on the disk is refused (status $status)"
  else
    fail "vhostblk: steps $steps_done/7, VMM status $vmm_status, captures [${captures[*]:-}], level 1: pattern $pattern_md5, hot $hot_md5, written $written, rewritten $rewritten, refusal (status $status): ${refused:0:300}; qemu-storage-daemon: $(tail -n 5 "$vb_dir/qsd.log" | tr '\n' ' ')"
  fi
  rm -rf "$vb_dir"
}
