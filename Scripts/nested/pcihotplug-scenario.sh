# shellcheck shell=bash disable=SC2016  # the quoted lines are typed into the guest's shell
# The pcihotplug scenario of ch-e2e.sh, sourced by it inside level 1: it uses its run_l2,
# pass, fail, captures, $in, $pid, $base, $append, $binary and $remote.

# ph_type LINE: types LINE into the guest's console (from a step that runs in level 1).
ph_type() { printf '%s\n' "$1" >&"$in"; }

# ph_vmm: the VMM's pid (the child of run_l2's timeout).
ph_vmm() {
  local vmm
  vmm="$(pgrep -P "$pid" | head -n 1 || true)"
  echo "${vmm:-$pid}"
}

# ph_gone SOCK ID: waits (up to 60 s) until vm.info's device tree no longer lists ID (the
# guest ejected it); fails when it still does.
ph_gone() {
  local tries=0
  while "$remote" --api-socket "$1" info 2>/dev/null | grep -q "\"$2\""; do
    ((tries < 300)) || return 1
    sleep 0.2
    tries=$((tries + 1))
  done
}

# ph_probed SOCK ID: waits (up to 60 s) until the guest's driver has read from disk ID (its
# counters show read bytes: the guest enumerated it and read its partition table).
ph_probed() {
  local tries=0
  until "$remote" --api-socket "$1" counters 2>/dev/null | tr -d ' \n' | grep -q "\"$2\":{[^}]*\"read_bytes\":[1-9]"; do
    ((tries < 300)) || return 1
    sleep 0.2
    tries=$((tries + 1))
  done
}

# scenario_pcihotplug: a guest booted with --api-socket and one disk (_disk0). ch-remote
# add-disk hot-adds a raw image (ACPI PCI hotplug as Cloud Hypervisor describes it: the GED's
# PCI cause, \_SB_.PHPR and the slots under \_SB_.PC00): the guest's kernel (acpiphp) finds a
# new /dev/vdb, reads level 1's random bytes from it and writes bytes level 1 then finds in the
# image. remove-device _disk1: the guest ejects it (_EJ0, B0EJ) and /sys/block/vdb goes; the
# VMM releases it (the image's lock too: the same image is added again). 20 add/remove cycles
# of that disk and of a NIC on a TAP the VMM creates leave the VMM's open descriptors as they
# were, its resident memory within 8 MiB, and no TAP behind. add-net with a TAP the VMM creates gives the
# guest a NIC that pings level 1; add-pmem gives it /dev/pmem0 with level 1's bytes and add-vsock
# a vsock device its driver binds; remove-device of an unknown id is refused naming it.
scenario_pcihotplug() {
  local ph_dir sock
  # 20 add/remove cycles in a nested guest take minutes: run_l2 reads this timeout.
  local l2_timeout=$((${CH_NESTED_L2_TIMEOUT:-300} + 300))
  ph_dir="$(mktemp -d)"
  sock="$ph_dir/api.sock"
  truncate -s 16M "$ph_dir/boot.raw"
  truncate -s 8M "$ph_dir/hot.raw"
  head -c 4096 /dev/urandom >"$ph_dir/pattern"
  dd if="$ph_dir/pattern" of="$ph_dir/hot.raw" conv=notrunc status=none
  truncate -s 2M "$ph_dir/pmem.raw"
  dd if="$ph_dir/pattern" of="$ph_dir/pmem.raw" conv=notrunc status=none
  local pattern_md5
  pattern_md5="$(md5sum <"$ph_dir/pattern" | cut -d' ' -f1)"
  ph_add() {
    "$remote" --api-socket "$sock" add-disk "path=$ph_dir/hot.raw" >"$ph_dir/add.out" 2>&1 || echo "add failed" >>"$ph_dir/add.out"
    ph_type 'n=0; while [ ! -e /sys/block/vdb ] && [ $n -lt 300 ]; do sleep 0.2; n=$((n+1)); done; [ -b /dev/vdb ] || mknod /dev/vdb b $(sed "s/:/ /" /sys/block/vdb/dev); printf "guest-wrote-%d" $((6*7)) | dd of=/dev/vdb bs=512 seek=2048 conv=fsync 2>/dev/null; echo CH-PH-ADDED-$(head -c 4096 /dev/vdb | md5sum | cut -c1-32)'
  }
  ph_remove() {
    "$remote" --api-socket "$sock" remove-device _disk1 >"$ph_dir/remove.out" 2>&1 && echo removed >>"$ph_dir/remove.out"
    ph_type 'n=0; while [ -e /sys/block/vdb ] && [ $n -lt 300 ]; do sleep 0.2; n=$((n+1)); done; echo CH-PH-REMOVED-$(ls /sys/block | grep vd | tr "\n" _)'
  }
  # What each descriptor of the VMM refers to (file, socket, anon_inode:[eventfd]...), sorted.
  ph_fd_list() { local fd; for fd in /proc/"$1"/fd/*; do readlink "$fd"; done 2>/dev/null | sed 's/[0-9][0-9]*]$/N]/' | sort; }
  ph_cycle() {
    local vmm i id nid
    vmm="$(ph_vmm)"
    ph_gone "$sock" _disk1 && echo "ejected" >"$ph_dir/cycle.out"
    dd if="$ph_dir/hot.raw" bs=512 skip=2048 count=1 status=none | head -c 14 >"$ph_dir/written"
    # The image's lock went with the device: the same image is added again, 20 times.
    # A NIC on a TAP the VMM creates is added and removed alongside, 20 times too: the TAP
    # goes with it (the same name is taken again), and so do its descriptors.
    ls /proc/"$vmm"/fd | wc -l >"$ph_dir/fds.before"
    ph_fd_list "$vmm" >"$ph_dir/fds.before.list"
    awk '/^VmRSS/ { print $2 }' /proc/"$vmm"/status >"$ph_dir/rss.before"
    for i in $(seq 1 20); do
      "$remote" --api-socket "$sock" add-disk "path=$ph_dir/hot.raw" >"$ph_dir/cycle-add.out" 2>&1 || { echo "add $i failed: $(cat "$ph_dir/cycle-add.out")" >>"$ph_dir/cycle.out"; break; }
      id="$(grep -o '"id":"[^"]*"' "$ph_dir/cycle-add.out" | cut -d'"' -f4)" || true
      "$remote" --api-socket "$sock" add-net "tap=chphcyc0,mac=52:54:00:00:00:3f" >"$ph_dir/cycle-net.out" 2>&1 || { echo "add-net $i failed: $(cat "$ph_dir/cycle-net.out")" >>"$ph_dir/cycle.out"; break; }
      nid="$(grep -o '"id":"[^"]*"' "$ph_dir/cycle-net.out" | cut -d'"' -f4)" || true
      ph_probed "$sock" "$id" || { echo "cycle $i: $id not probed" >>"$ph_dir/cycle.out"; break; }
      "$remote" --api-socket "$sock" remove-device "$id" >>"$ph_dir/cycle.out" 2>&1 || { echo "remove $i failed" >>"$ph_dir/cycle.out"; break; }
      "$remote" --api-socket "$sock" remove-device "$nid" >>"$ph_dir/cycle.out" 2>&1 || { echo "remove-net $i failed" >>"$ph_dir/cycle.out"; break; }
      ph_gone "$sock" "$id" || { echo "cycle $i: $id not ejected" >>"$ph_dir/cycle.out"; break; }
      ph_gone "$sock" "$nid" || { echo "cycle $i: $nid not ejected" >>"$ph_dir/cycle.out"; break; }
      # The VMM closes the TAP before vm.info drops the NIC, so the next cycle can take the
      # name again at once (TUNSETIFF would answer EBUSY while the old queue is open).
      if ip link show chphcyc0 >/dev/null 2>&1; then echo "cycle $i: tap chphcyc0 left behind after $nid left vm.info" >>"$ph_dir/cycle.out"; break; fi
      echo "cycle $i $id $nid" >>"$ph_dir/cycle.out"
    done
    ls /proc/"$vmm"/fd | wc -l >"$ph_dir/fds.after"
    ph_fd_list "$vmm" >"$ph_dir/fds.after.list"
    awk '/^VmRSS/ { print $2 }' /proc/"$vmm"/status >"$ph_dir/rss.after"
    ip link show chphcyc0 >/dev/null 2>&1 && echo "tap chphcyc0 left behind" >>"$ph_dir/cycle.out"
    local status=0
    "$remote" --api-socket "$sock" remove-device _nope >"$ph_dir/unknown.out" 2>&1 || status=$?
    echo "status $status" >>"$ph_dir/unknown.out"
    "$remote" --api-socket "$sock" add-net "tap=chphtap0,ip=192.168.251.1,mask=255.255.255.0,mac=52:54:00:00:00:31" >"$ph_dir/net.out" 2>&1 ||
      echo "add-net failed" >>"$ph_dir/net.out"
    ph_type 'n=0; while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 300 ]; do sleep 0.2; n=$((n+1)); done; ip link set eth0 up && ip addr add 192.168.251.2/24 dev eth0 && ping -c 3 -W 5 192.168.251.1 >/dev/null && r=ok || r=no; echo CH-PH-NET-$r-$(cat /sys/class/net/eth0/address)_$(ls /sys/block | grep vd | tr "\n" _)'
  }
  ph_final() {
    # A pmem file and a vsock device hot-added too: the guest finds /dev/pmem0 with level 1's
    # pattern and binds its vsock driver to the new device.
    "$remote" --api-socket "$sock" add-pmem "file=$ph_dir/pmem.raw" >"$ph_dir/pmem.out" 2>&1 || echo "add-pmem failed" >>"$ph_dir/pmem.out"
    "$remote" --api-socket "$sock" add-vsock "cid=3,socket=$ph_dir/vsock.sock" >"$ph_dir/vsock.out" 2>&1 || echo "add-vsock failed" >>"$ph_dir/vsock.out"
    # A NIC on a TAP the client opened and passed (as Kata hot-adds one): ch-remote add-net fd=
    # sends the descriptor in SCM_RIGHTS; the TAP lives as long as the VMM holds it.
    python3 - "$remote" "$sock" >"$ph_dir/fdnet.out" 2>&1 <<'PY' || echo "add-net fd= failed" >>"$ph_dir/fdnet.out"
import fcntl, os, struct, sys
remote, sock = sys.argv[1:3]
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", b"chphfd0", 0x0002 | 0x1000 | 0x4000))  # TUNSETIFF: TAP, NO_PI, VNET_HDR
os.set_inheritable(fd, True)
os.execv(remote, [remote, "--api-socket", sock, "add-net", f"fd=[{fd}],mac=52:54:00:00:00:32"])
PY
    { ip addr add 192.168.252.1/24 dev chphfd0 && ip link set chphfd0 up; } >>"$ph_dir/fdnet.out" 2>&1 || echo "no TAP chphfd0" >>"$ph_dir/fdnet.out"
    "$remote" --api-socket "$sock" info >"$ph_dir/info.json" 2>&1 || true
    ph_type 'n=0; while [ ! -e /dev/pmem0 ] && [ $n -lt 300 ]; do sleep 0.2; n=$((n+1)); done; v=no; n=0; while [ $n -lt 300 ]; do ls /sys/bus/virtio/drivers/vmw_vsock_virtio_transport 2>/dev/null | grep -q virtio && { v=yes; break; }; sleep 0.2; n=$((n+1)); done; n=0; while [ ! -e /sys/class/net/eth1 ] && [ $n -lt 300 ]; do sleep 0.2; n=$((n+1)); done; ip link set eth1 up && ip addr add 192.168.252.2/24 dev eth1 && ping -c 3 -W 5 192.168.252.1 >/dev/null && f=ok || f=no; echo CH-PH-DONE-$((40+2))-$(head -c 4096 /dev/pmem0 | md5sum | cut -c1-32)-$v-$f'
  }
  local steps="L2-INIT-READY|||!ph_add
  CH-PH-ADDED-([0-9a-f]+)|||!ph_remove
  CH-PH-REMOVED-([a-z_]+)|||!ph_cycle
  CH-PH-NET-([a-z]+-[0-9a-f:]+_[a-z_]*)|||!ph_final
  CH-PH-DONE-([0-9]+-[0-9a-f]+-[a-z]+-[a-z]+)|||poweroff -f"
  local vm=(--api-socket "path=$sock" "${base[@]}" --cpus boot=1 --memory size=256M --cmdline "$append" --disk "path=$ph_dir/boot.raw")
  run_l2 pcihotplug "$steps" "$binary" "${vm[@]}"
  if ((stalled)); then
    echo "ch-e2e: [pcihotplug] the guest stalled; running the scenario again"
    run_l2 pcihotplug "$steps" "$binary" "${vm[@]}"
  fi
  local before after cycles
  before="$(cat "$ph_dir/fds.before" 2>/dev/null || echo ?)"
  after="$(cat "$ph_dir/fds.after" 2>/dev/null || echo ?)"
  cycles="$(grep -c '^cycle [0-9]* _disk[0-9]* _net[0-9]' "$ph_dir/cycle.out" 2>/dev/null || true)"
  local rss_before rss_after
  rss_before="$(cat "$ph_dir/rss.before" 2>/dev/null || echo 0)"
  rss_after="$(cat "$ph_dir/rss.after" 2>/dev/null || echo 999999)"
  echo "ch-e2e: [pcihotplug] add: $(tr '\n' ' ' <"$ph_dir/add.out" 2>/dev/null); remove: $(tr '\n' ' ' <"$ph_dir/remove.out" 2>/dev/null); written: $(cat "$ph_dir/written" 2>/dev/null); cycles: $cycles, last: $(tail -n 2 "$ph_dir/cycle.out" 2>/dev/null | tr '\n' ' '); fds $before -> $after, VmRSS $rss_before -> $rss_after kB; unknown id: $(tr '\n' ' ' <"$ph_dir/unknown.out" 2>/dev/null); add-net: $(tr '\n' ' ' <"$ph_dir/net.out" 2>/dev/null); add-pmem: $(tr '\n' ' ' <"$ph_dir/pmem.out" 2>/dev/null); add-net fd=: $(tr '\n' ' ' <"$ph_dir/fdnet.out" 2>/dev/null); add-vsock: $(tr '\n' ' ' <"$ph_dir/vsock.out" 2>/dev/null)"
  if ((steps_done == 5)) && ((vmm_status == 0)) && [[ ${captures[0]} == "$pattern_md5" && ${captures[1]} == vda_ ]] &&
    grep -q '"id":"_disk1"' "$ph_dir/add.out" && grep -q '"bdf":"0000:00:0' "$ph_dir/add.out" && grep -q removed "$ph_dir/remove.out" &&
    grep -q ejected "$ph_dir/cycle.out" && [[ $(cat "$ph_dir/written" 2>/dev/null) == guest-wrote-42 ]] && ((cycles == 20)) &&
    [[ $before == "$after" ]] && ((rss_after - rss_before < 8192)) && ! grep -q 'left behind' "$ph_dir/cycle.out" && grep -q _nope "$ph_dir/unknown.out" && ! grep -q 'status 0' "$ph_dir/unknown.out" &&
    grep -q '"id":"_net0"' "$ph_dir/net.out" && [[ ${captures[2]} == ok-52:54:00:00:00:31_vda_ ]] &&
    grep -q '"_net0"' "$ph_dir/info.json" && ! grep -q hot.raw "$ph_dir/info.json" &&
    grep -q '"id":"_pmem0"' "$ph_dir/pmem.out" && grep -q '"id":"_vsock0"' "$ph_dir/vsock.out" && grep -q '"id":"_net1"' "$ph_dir/fdnet.out" && [[ ${captures[3]} == "42-$pattern_md5-yes-ok" ]]; then
    pass "pcihotplug: ch-remote add-disk: the guest saw /dev/vdb (_disk1), read level 1's pattern and wrote bytes level 1 found in the image; remove-device _disk1: the guest ejected it; the same image and a NIC on a TAP the VMM created added and removed 20 times (the lock and the TAP released each time), the VMM's open descriptors $before before and $after after, its VmRSS $rss_before kB before and $rss_after kB after; add-net: the new NIC (_net0) pinged level 1; add-pmem: the guest read level 1's pattern from /dev/pmem0 (_pmem0); add-vsock: the guest's vsock driver bound the new device (_vsock0); add-net fd= with a TAP the client opened and passed in SCM_RIGHTS: the new NIC (_net1) pinged level 1; remove-device _nope refused naming it; VMM status 0"
  else
    if [[ $before != "$after" ]]; then
      echo "ch-e2e: [pcihotplug] descriptors the VMM held after the cycles and not before: $(comm -13 "$ph_dir/fds.before.list" "$ph_dir/fds.after.list" 2>/dev/null | uniq -c | tr -s ' \n' ' ')"
    fi
    fail "pcihotplug: steps $steps_done/5, VMM status $vmm_status, captures [${captures[*]:-}] (pattern $pattern_md5)"
  fi
  ip link del chphtap0 2>/dev/null || true
  ip link del chphfd0 2>/dev/null || true
  rm -rf "$ph_dir"
}
