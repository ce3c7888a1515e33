# shellcheck shell=bash disable=SC2016  # the quoted lines are typed into the guest's shell
# The network scenario and benchmark of ch-e2e.sh, sourced by it inside level 1: they use
# its run_l2, pass, fail, captures, $in and $binary. Addresses exist only inside level 1.

# net_type LINE: types LINE into the guest's console (from a step that runs in level 1).
net_type() { printf '%s\n' "$1" >&"$in"; }

# scenario_net: two NICs on TAP interfaces the VMM creates and configures
# (--net tap=,mac=,ip=,mask=), the first with two queue pairs (num_queues=4) and 2 vCPUs.
# The guest configures eth0 and eth1, pings both host sides, sends 1 MiB of random bytes to
# level 1 and receives 4 MiB from it; the checksums must match on both sides. eth1 is rate
# limited (bw_size=,bw_refill_time=): 768 KiB sent over it take the time the limit says.
scenario_net() {
  local net_dir to_guest_sum
  net_dir="$(mktemp -d)"
  head -c 4194304 /dev/urandom >"$net_dir/to-guest"
  to_guest_sum="$(md5sum <"$net_dir/to-guest" | cut -c1-32)"
  net_l1_recv() { "$nested_netbench" recv 5001 "$net_dir/from-guest" >"$net_dir/recv.log" 2>&1 & net_recv_pid=$!; }
  net_push() { "$nested_netbench" send 192.168.249.2 5002 "$net_dir/to-guest" >"$net_dir/send.log" 2>&1; }
  local steps='L2-INIT-READY|||ip link set eth0 up && ip addr add 192.168.249.2/24 dev eth0 && ip link set eth1 up && ip addr add 192.168.250.2/24 dev eth1 && echo CH-NET-A-$(cat /sys/class/net/eth0/address)-$(ls -d /sys/class/net/eth0/queues/rx-* | wc -l)-$(cat /sys/class/net/eth1/address)
CH-NET-A-([0-9a-f:-]+)|||echo CH-NET-B-$(ping -c 3 -W 5 192.168.249.1 | grep -c "bytes from")-$(ping -c 3 -W 5 192.168.250.1 | grep -c "bytes from")
CH-NET-B-([0-9-]+)|||!net_l1_recv; net_type '"'"'head -c 1048576 /dev/urandom >/tmp/r && ch-netbench send 192.168.249.1 5001 /tmp/r >/dev/null && echo CH-NET-C-$(md5sum </tmp/r | cut -c1-32)'"'"'
CH-NET-C-([0-9a-f]+)|||ch-netbench recv 5002 /tmp/h >/tmp/h.log & echo CH-NET-D-READY
CH-NET-D-READY|||!net_push; net_type '"'"'wait; echo CH-NET-E-$(md5sum </tmp/h | cut -c1-32)'"'"'
CH-NET-E-([0-9a-f]+)|||!net_l1_recv_limited; net_type '"'"'head -c 786432 /dev/urandom >/tmp/l && s=$(cut -d" " -f1 /proc/uptime) && ch-netbench send 192.168.250.1 5003 /tmp/l >/dev/null && echo CH-NET-F-$s-$(cut -d" " -f1 /proc/uptime)-$(md5sum </tmp/l | cut -c1-32)'"'"'
CH-NET-F-([0-9a-f.-]+)|||poweroff -f'
  # eth1 is limited to 256 KiB/s each way: 768 KiB take 2 s at least (the first 256 KiB are the full bucket).
  local nets=(--net "tap=chtap0,mac=52:54:00:00:00:10,ip=192.168.249.1,mask=255.255.255.0,num_queues=4"
    "tap=chtap1,mac=52:54:00:00:00:11,ip=192.168.250.1,mask=255.255.255.0,bw_size=262144,bw_refill_time=1000")
  net_l1_recv_limited() { "$nested_netbench" recv 5003 "$net_dir/limited" >"$net_dir/recv-limited.log" 2>&1 & net_recv_pid2=$!; }
  net_recv_pid2=""
  net_recv_pid=""
  run_l2 net "$steps" "$binary" -v "${base[@]}" --cpus boot=2 --memory size=256M --cmdline "$append" "${nets[@]}"
  [[ -n $net_recv_pid ]] && wait "$net_recv_pid" 2>/dev/null
  [[ -n $net_recv_pid2 ]] && wait "$net_recv_pid2" 2>/dev/null
  local from_guest_sum limited_sum limited_s
  # A guest that never got this far left no file: the sums stay empty (set -e must not end level 1 here).
  from_guest_sum="$({ md5sum <"$net_dir/from-guest"; } 2>/dev/null | cut -c1-32 || true)"
  limited_sum="$({ md5sum <"$net_dir/limited"; } 2>/dev/null | cut -c1-32 || true)"
  limited_s="$(awk -v t="${captures[4]:-0-0-x}" 'BEGIN { split(t, a, "-"); printf "%.2f", a[2] - a[1] }')"
  if ((steps_done == 7)) && ((vmm_status == 0)) && [[ ${captures[0]} == 52:54:00:00:00:10-2-52:54:00:00:00:11 &&
    ${captures[1]} == 3-3 && ${captures[2]} == "$from_guest_sum" && ${captures[3]} == "$to_guest_sum" &&
    ${captures[4]##*-} == "$limited_sum" ]] && awk -v s="$limited_s" 'BEGIN { exit !(s >= 1.8) }'; then
    pass "net: two virtio-net NICs on TAPs created by the VMM (MACs as given, eth0 with 2 queue pairs), 3/3 pings to each host side, 1 MiB guest-to-host and 4 MiB host-to-guest over TCP with matching md5 on both sides; eth1 limited to 256 KiB/s (bw_size=262144,bw_refill_time=1000): 768 KiB sent in ${limited_s}s (2 s at least), md5 equal"
  else
    fail "net: steps $steps_done/7, VMM status $vmm_status, captures [${captures[*]:-}], md5 from the guest on level 1 $from_guest_sum, sent to the guest $to_guest_sum, limited transfer ${limited_s}s md5 $limited_sum; $(cat "$net_dir/recv.log" "$net_dir/send.log" "$net_dir/recv-limited.log" 2>/dev/null | tr '\n' ' ')"
  fi
  rm -rf "$net_dir"
}

# bench_net: TCP throughput both ways and ping round trip, through the same TAP interface
# (made here, 192.168.249.1/24) for cloud-hypervisor's virtio-net and QEMU's
# virtio-net-pci (TAP backend, no vhost); 1 vCPU, 256 MiB each.
bench_net() {
  local bytes=$((128 << 20)) net_dir
  net_dir="$(mktemp -d)"
  ip tuntap add dev chbtap0 mode tap vnet_hdr && ip addr add 192.168.249.1/24 dev chbtap0 && ip link set chbtap0 up ||
    { echo "ch-bench: virtio-net: cannot make the TAP interface"; return; }
  # bench_cpu LABEL: the CPU seconds (user+system) of each thread of the VMM under test so far.
  bench_cpu() {
    local vmm task ticks
    ticks="$(getconf CLK_TCK)"
    # run_l2's $pid is the timeout(1) wrapper; the VMM is its child.
    vmm="$(pgrep -P "$pid" | head -n 1 || true)"
    [[ -n $vmm && -d /proc/$vmm/task ]] || return 0
    for task in /proc/"$vmm"/task/*; do
      awk -v name="$(cat "$task/comm" 2>/dev/null)" -v hz="$ticks" '{ s = ($14 + $15) / hz; if (s >= 0.1) printf "%s=%.1fs ", name, s }' "$task/stat" 2>/dev/null || true
    done >>"$net_dir/cpu.log"
    echo "($1)" >>"$net_dir/cpu.log"
  }
  bench_l1_recv() { "$nested_netbench" recv 5201 - >"$net_dir/recv.log" 2>&1 & bench_recv_pid=$!; }
  bench_push() { "$nested_netbench" send 192.168.249.2 5202 "zero:$bytes" >/dev/null 2>&1; }
  local steps='L2-INIT-READY|||ip link set eth0 up && ip addr add 192.168.249.2/24 dev eth0 && ping -c 2 -W 5 192.168.249.1 >/dev/null; echo CH-NB-PING-$(ping -c 20 -i 0.2 -W 3 192.168.249.1 | sed -n "s|.*min/avg/max = [0-9.]*/\([0-9.]*\)/.*|\1|p")
CH-NB-PING-([0-9.]+)|||!bench_l1_recv; net_type "ch-netbench send 192.168.249.1 5201 zero:'"$bytes"' >/dev/null; echo CH-NB-TX-DONE"
CH-NB-TX-DONE|||!bench_cpu "after ping and guest-to-host"; net_type "ch-netbench recv 5202 - >/tmp/rx.log & echo CH-NB-RX-READY"
CH-NB-RX-READY|||!bench_push; bench_cpu "after host-to-guest"; net_type "wait; cat /tmp/rx.log"
CH-NETBENCH recv [0-9]+ [0-9.]+ ([0-9.]+)|||poweroff -f'
  local -a ch_net qemu_net
  bench_recv_pid=""
  run_l2 ch-net "$steps" "$binary" "${base[@]}" --cpus boot=1 --memory size=256M --cmdline "$append" \
    --net "tap=chbtap0,mac=52:54:00:00:00:20"
  [[ -n $bench_recv_pid ]] && wait "$bench_recv_pid" 2>/dev/null
  ch_net=("${captures[0]:-}" "$(awk '{print $5}' "$net_dir/recv.log" 2>/dev/null)" "${captures[1]:-}")
  echo "ch-bench: virtio-net cloud-hypervisor thread CPU time: $(tr '\n' ' ' <"$net_dir/cpu.log" 2>/dev/null)"
  rm -f "$net_dir/cpu.log"
  bench_recv_pid=""
  run_l2 qemu-net "$steps" qemu-system-x86_64 -enable-kvm -cpu host -smp 1 -m 256 -nographic -no-reboot \
    -kernel "$nested_vmlinux" -initrd "$nested_l2_initrd" -append "$append" \
    -netdev tap,id=n0,ifname=chbtap0,script=no,downscript=no,vhost=off -device virtio-net-pci,netdev=n0,mac=52:54:00:00:00:21
  [[ -n $bench_recv_pid ]] && wait "$bench_recv_pid" 2>/dev/null
  qemu_net=("${captures[0]:-}" "$(awk '{print $5}' "$net_dir/recv.log" 2>/dev/null)" "${captures[1]:-}")
  echo "ch-bench: virtio-net QEMU thread CPU time: $(tr '\n' ' ' <"$net_dir/cpu.log" 2>/dev/null)"
  ip link del chbtap0 2>/dev/null || true
  echo "ch-bench: virtio-net ping round trip (avg of 20): cloud-hypervisor ${ch_net[0]:-?} ms, QEMU ${qemu_net[0]:-?} ms, ratio $(awk -v c="${ch_net[0]}" -v q="${qemu_net[0]}" 'BEGIN { if (c > 0) printf "%.2f", q / c; else print "?" }')x QEMU (higher is better)"
  echo "ch-bench: virtio-net TCP guest to host ($((bytes >> 20)) MiB): cloud-hypervisor ${ch_net[1]:-?} MiB/s, QEMU ${qemu_net[1]:-?} MiB/s, ratio $(awk -v c="${ch_net[1]}" -v q="${qemu_net[1]}" 'BEGIN { if (q > 0) printf "%.2f", c / q; else print "?" }')x QEMU (target 1.0x or better)"
  echo "ch-bench: virtio-net TCP host to guest ($((bytes >> 20)) MiB): cloud-hypervisor ${ch_net[2]:-?} MiB/s, QEMU ${qemu_net[2]:-?} MiB/s, ratio $(awk -v c="${ch_net[2]}" -v q="${qemu_net[2]}" 'BEGIN { if (q > 0) printf "%.2f", c / q; else print "?" }')x QEMU (target 1.0x or better)"
  rm -rf "$net_dir"
}
