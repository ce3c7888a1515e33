# shellcheck shell=bash disable=SC2016  # the quoted lines are typed into the guest's shell
# The vhost-user back-end scenarios (blkbackend, netbackend) of ch-e2e.sh, sourced by it inside level 1: it uses its run_l2,
# pass, fail, captures, $base, $append and $binary.

# scenario_blkbackend: this package's vhost_user_block back-end serves a 16 MiB raw image of
# random bytes (--block-backend path=,socket=,num_queues=1) to QEMU as the front-end
# (-device vhost-user-blk-pci over memfd guest memory shared with the back-end). The guest
# reads /dev/vda whole (md5 and size as level 1's image), writes 64 KiB at offset 64 KiB with
# conv=fsync, and powers off; level 1 then finds the guest's bytes in the image, and the
# back-end exits 0 once QEMU has disconnected, as Cloud Hypervisor's does. Then the same with
# cloud-hypervisor as the front-end, over a qcow2 copy of the image.
scenario_blkbackend() {
  local dir sock image backend backend_pid backend_status=0 host_sum
  backend="$(dirname "$binary")/vhost_user_block"
  if [[ ! -x $backend ]]; then
    fail "blkbackend: no vhost_user_block beside $binary (swift build -c release --product vhost_user_block)"
    return
  fi
  dir="$(mktemp -d)"
  sock="$dir/blk.sock" image="$dir/disk.raw"
  head -c 16777216 /dev/urandom >"$image"
  host_sum="$(md5sum <"$image" | cut -c1-32)"

  # Refusals name the option and what it accepts, before anything is served.
  local refused status=0
  refused="$("$backend" --block-backend "path=$image,sockett=$sock" 2>&1)" || status=$?

  "$backend" --block-backend "path=$image,socket=$sock,num_queues=1,queue_size=128" >"$dir/backend.log" 2>&1 &
  backend_pid=$!
  local tries=0
  while [[ ! -S $sock ]] && ((tries < 100)); do sleep 0.1; tries=$((tries + 1)); done

  local steps='L2-INIT-READY|||echo BLK-A-$(md5sum </dev/vda | cut -c1-32)-$(cat /sys/block/vda/size)
  BLK-A-([0-9a-f]{32}-[0-9]+)|||head -c 65536 /dev/urandom >/tmp/w; dd if=/tmp/w of=/dev/vda bs=65536 seek=1 conv=fsync 2>/dev/null; echo BLK-B-$(md5sum </tmp/w | cut -c1-32)
  BLK-B-([0-9a-f]{32})|||poweroff -f'
  run_l2 blkbackend "$steps" qemu-system-x86_64 -enable-kvm -cpu host -smp 1 -m 512 -nographic -no-reboot -nic none \
    -object memory-backend-memfd,id=mem,size=512M,share=on -machine memory-backend=mem \
    -chardev "socket,id=vublk,path=$sock" -device vhost-user-blk-pci,chardev=vublk,num-queues=1 \
    -kernel "$nested_vmlinux" -initrd "$nested_l2_initrd" -append "$append"
  # The back-end ends by itself once its front-end has gone.
  tries=0
  while kill -0 "$backend_pid" 2>/dev/null && ((tries < 50)); do sleep 0.1; tries=$((tries + 1)); done
  kill "$backend_pid" 2>/dev/null && backend_status=killed
  [[ $backend_status == killed ]] || { wait "$backend_pid" || backend_status=$?; }
  local written="" qemu_captures qemu_steps
  written="$(dd if="$image" bs=65536 skip=1 count=1 status=none | md5sum | cut -c1-32)"
  qemu_captures=("${captures[@]}") qemu_steps=$steps_done

  # The same back-end with this VMM as the front-end (--disk vhost_user=on), over a qcow2
  # copy of the image as it now is: the guest reads the same bytes and writes 64 KiB more at
  # 128 KiB, which level 1 finds after converting the qcow2 image back to raw.
  local qcow="$dir/disk.qcow2" sum_now ch_status=0 ch_written=""
  sum_now="$(md5sum <"$image" | cut -c1-32)"
  qemu-img convert -O qcow2 "$image" "$qcow"
  rm -f "$sock"
  "$backend" --block-backend "path=$qcow,socket=$sock" >"$dir/backend2.log" 2>&1 &
  backend_pid=$!
  tries=0
  while [[ ! -S $sock ]] && ((tries < 100)); do sleep 0.1; tries=$((tries + 1)); done
  steps='L2-INIT-READY|||echo BLK-C-$(md5sum </dev/vda | cut -c1-32)-$(cat /sys/block/vda/size)
  BLK-C-([0-9a-f]{32}-[0-9]+)|||head -c 65536 /dev/urandom >/tmp/w; dd if=/tmp/w of=/dev/vda bs=65536 seek=2 conv=fsync 2>/dev/null; echo BLK-D-$(md5sum </tmp/w | cut -c1-32)
  BLK-D-([0-9a-f]{32})|||poweroff -f'
  run_l2 blkbackend-ch "$steps" "$binary" "${base[@]}" --cpus boot=1 --memory size=512M,shared=on --cmdline "$append" \
    --disk "vhost_user=on,socket=$sock"
  tries=0
  while kill -0 "$backend_pid" 2>/dev/null && ((tries < 50)); do sleep 0.1; tries=$((tries + 1)); done
  kill "$backend_pid" 2>/dev/null && ch_status=killed
  [[ $ch_status == killed ]] || { wait "$backend_pid" || ch_status=$?; }
  qemu-img convert -O raw "$qcow" "$dir/back.raw" 2>/dev/null &&
    ch_written="$(dd if="$dir/back.raw" bs=65536 skip=2 count=1 status=none | md5sum | cut -c1-32)"

  if ((qemu_steps == 3)) && [[ ${qemu_captures[0]:-} == "$host_sum-32768" && ${qemu_captures[1]:-} == "$written" ]] &&
    [[ $backend_status == 0 ]] && ((status != 0)) && [[ $refused == *"--block-backend"*"sockett"* ]] &&
    ((steps_done == 3)) && ((vmm_status == 0)) && [[ ${captures[0]:-} == "$sum_now-32768" && ${captures[1]:-} == "$ch_written" ]] &&
    [[ $ch_status == 0 ]]; then
    pass "blkbackend: vhost_user_block served a 16 MiB raw image to QEMU's vhost-user-blk-pci; the guest read it whole (md5 $host_sum, 32768 sectors), wrote 64 KiB (md5 $written) that level 1 finds in the image; then a qcow2 copy to cloud-hypervisor's --disk vhost_user=on: the guest read it (md5 $sum_now) and wrote 64 KiB (md5 $ch_written) found in the qcow2 image; the back-end exited 0 after each front-end left; an unknown key is refused (status $status)"
  else
    fail "blkbackend: QEMU steps $qemu_steps/3, captures [${qemu_captures[*]:-}], level 1: image md5 $host_sum, bytes at 64 KiB $written, back-end status $backend_status: $(tail -n 5 "$dir/backend.log" | tr '\n' ' '); cloud-hypervisor steps $steps_done/3, VMM status $vmm_status, captures [${captures[*]:-}], level 1: md5 $sum_now, bytes at 128 KiB '${ch_written}', back-end status $ch_status: $(tail -n 5 "$dir/backend2.log" | tr '\n' ' '); refusal (status $status): ${refused:0:300}"
  fi
  rm -rf "$dir"
}

# scenario_netbackend: this package's vhost_user_net back-end creates a TAP (tap=, ip=, mask=)
# and serves it to QEMU as the front-end (-netdev vhost-user, virtio-net-pci over memfd guest
# memory). The guest pings level 1 across it, and 8 MiB of random bytes go over TCP each way
# (ch-netbench) with the same md5 on both sides; the back-end exits 0 once QEMU has disconnected.
scenario_netbackend() {
  local dir sock backend backend_pid backend_status=0 recv_pid received=""
  backend="$(dirname "$binary")/vhost_user_net"
  if [[ ! -x $backend ]]; then
    fail "netbackend: no vhost_user_net beside $binary (swift build -c release --product vhost_user_net)"
    return
  fi
  dir="$(mktemp -d)"
  sock="$dir/net.sock"
  local refused status=0
  refused="$("$backend" --net-backend "socket=$sock,num_queues=4" 2>&1)" || status=$?
  "$backend" --net-backend "tap=vunet0,ip=192.168.250.1,mask=255.255.255.0,socket=$sock,num_queues=2,queue_size=256" \
    >"$dir/backend.log" 2>&1 &
  backend_pid=$!
  local tries=0
  while [[ ! -S $sock ]] && ((tries < 100)); do sleep 0.1; tries=$((tries + 1)); done
  head -c 8388608 /dev/urandom >"$dir/to-guest"
  local to_guest_sum
  to_guest_sum="$(md5sum <"$dir/to-guest" | cut -c1-32)"
  net_l1_recv() { "$nested_netbench" recv 5301 "$dir/from-guest" >"$dir/recv.log" 2>&1 & recv_pid=$!; }
  net_l1_send() { sleep 0.5; "$nested_netbench" send 192.168.250.2 5302 "$dir/to-guest" >"$dir/send.log" 2>&1 || echo "send failed" >>"$dir/send.log"; }
  local steps='L2-INIT-READY|||ip link set eth0 up && ip addr add 192.168.250.2/24 dev eth0 && echo NB-A-$(ping -c 5 -W 5 192.168.250.1 | grep -c "bytes from")
  NB-A-([0-9]+)|||!net_l1_recv; sleep 0.5; printf "%s\n" "head -c 8388608 /dev/urandom >/tmp/tx; ch-netbench send 192.168.250.1 5301 /tmp/tx >/dev/null; echo NB-B-\$((40+2))-\$?-\$(md5sum </tmp/tx | cut -c1-32)" 1>&"$in"
  NB-B-42-([0-9]+-[0-9a-f]{32})|||ch-netbench recv 5302 /tmp/rx >/dev/null & echo NB-RX-READY-$((40+2))
  NB-RX-READY-42|||!net_l1_send; printf "%s\n" "wait; echo NB-C-\$((40+2))-\$(md5sum </tmp/rx | cut -c1-32)" 1>&"$in"
  NB-C-42-([0-9a-f]{32})|||poweroff -f'
  run_l2 netbackend "$steps" qemu-system-x86_64 -enable-kvm -cpu host -smp 1 -m 256 -nographic -no-reboot \
    -object memory-backend-memfd,id=mem,size=256M,share=on -machine memory-backend=mem \
    -chardev "socket,id=vunet,path=$sock" -netdev vhost-user,id=n0,chardev=vunet -device virtio-net-pci,netdev=n0,mac=52:54:00:00:00:31 \
    -kernel "$nested_vmlinux" -initrd "$nested_l2_initrd" -append "$append"
  [[ -n ${recv_pid:-} ]] && wait "$recv_pid" 2>/dev/null
  received=""
  [[ -f $dir/from-guest ]] && received="$(md5sum <"$dir/from-guest" | cut -c1-32)"
  tries=0
  while kill -0 "$backend_pid" 2>/dev/null && ((tries < 50)); do sleep 0.1; tries=$((tries + 1)); done
  kill "$backend_pid" 2>/dev/null && backend_status=killed
  [[ $backend_status == killed ]] || { wait "$backend_pid" || backend_status=$?; }
  if ((steps_done == 5)) && [[ ${captures[0]:-} == 5 && ${captures[1]:-} == "0-$received" && ${captures[2]:-} == "$to_guest_sum" ]] &&
    [[ $backend_status == 0 ]] && ((status != 0)) && [[ $refused == *"--net-backend"*"num_queues"* ]]; then
    pass "netbackend: vhost_user_net served TAP vunet0 to QEMU's vhost-user netdev; 5/5 of the guest's pings to level 1 were answered; 8 MiB over TCP each way with the same md5 on both sides (guest to level 1 $received, level 1 to guest $to_guest_sum); the back-end exited 0 after QEMU left; num_queues=4 is refused (status $status)"
  else
    fail "netbackend: steps $steps_done/5, captures [${captures[*]:-}], level 1 received md5 '${received}', sent md5 $to_guest_sum ($(tr '\n' ' ' <"$dir/send.log" 2>/dev/null)); back-end status $backend_status: $(tail -n 5 "$dir/backend.log" | tr '\n' ' '); refusal (status $status): ${refused:0:300}"
  fi
  ip link del vunet0 2>/dev/null || true
  rm -rf "$dir"
}
