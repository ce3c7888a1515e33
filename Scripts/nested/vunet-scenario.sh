# shellcheck shell=bash disable=SC2016  # the quoted lines are typed into the guest's shell
# The vhost-user-net scenario of ch-e2e.sh, sourced by it inside level 1: it uses its run_l2,
# pass, fail, captures, $in, $base, $append, $binary, $remote and $nested_netbench.

# vn_type LINE: types LINE into the guest's console (from a step that runs in level 1).
vn_type() { printf '%s\n' "$1" >&"$in"; }

# vn_wait_gone PID: waits up to 5 s for the back-end to exit, then kills it; prints its status.
vn_wait_gone() {
  local pid="$1" tries=0 status=0
  while kill -0 "$pid" 2>/dev/null && ((tries < 50)); do sleep 0.1; tries=$((tries + 1)); done
  if kill "$pid" 2>/dev/null; then status=killed; else wait "$pid" || status=$?; fi
  echo "$status"
}

# scenario_vunet: this package's vhost_user_net creates TAP vunet1 (192.168.252.1/24) and
# serves it over vhost-user. The guest (--memory shared=on, --net vhost_user=on,socket=PATH,
# mac=...) sees the MAC the VMM put in the configuration space, pings level 1 and sends 8 MiB
# over TCP that level 1 counts (ch-netbench); ch-remote snapshot of the paused VM is refused
# naming the vhost-user-net NIC and the VM resumes; ch-remote add-net vhost_user=on hot-adds a
# second NIC on another vhost_user_net (TAP vunet3, 192.168.253.1/24) that the guest brings up
# as eth1 and pings through. Then vhost_mode=server: the VMM listens on
# the socket and the back-end (client=on) connects; the guest pings and sends 4 MiB again;
# after `reboot -f` the rebuilt VM keeps the back-end's connection and the guest pings again.
# Both back-ends exit 0 when the VMM leaves. Also: --net vhost_user=on without shared=on is
# refused with Cloud Hypervisor's words before anything starts.
scenario_vunet() {
  local vn_dir backend sock hot_sock api backend_pid hot_pid recv_pid="" received="" served_status hot_status
  backend="$(dirname "$binary")/vhost_user_net"
  if [[ ! -x $backend ]]; then
    fail "vunet: no vhost_user_net beside $binary (swift build -c release --product vhost_user_net)"
    return
  fi
  vn_dir="$(mktemp -d)"
  sock="$vn_dir/net.sock" hot_sock="$vn_dir/hot.sock" api="$vn_dir/api.sock"

  local refused status=0
  refused="$("$binary" "${base[@]}" --cpus boot=1 --memory size=256M --cmdline "$append" --net "vhost_user=on,socket=$sock" 2>&1)" || status=$?

  # Client mode (the default): the back-end listens, the VMM connects.
  "$backend" --net-backend "tap=vunet1,ip=192.168.252.1,mask=255.255.255.0,socket=$sock,num_queues=2,queue_size=256" \
    >"$vn_dir/backend.log" 2>&1 &
  backend_pid=$!
  "$backend" --net-backend "tap=vunet3,ip=192.168.253.1,mask=255.255.255.0,socket=$hot_sock,num_queues=2,queue_size=256" \
    >"$vn_dir/hot-backend.log" 2>&1 &
  hot_pid=$!
  local tries=0
  while [[ ! -S $sock || ! -S $hot_sock ]] && ((tries < 100)); do sleep 0.1; tries=$((tries + 1)); done
  vn_recv() {
    "$nested_netbench" recv 5302 - >"$vn_dir/recv.log" 2>&1 &
    recv_pid=$!
    sleep 0.5
    vn_type 'ch-netbench send 192.168.252.1 5302 zero:8388608 >/dev/null; echo VN-B-$((40+2))-$?'
  }
  vn_snapshot() {
    local snap_status=0
    mkdir -p "$vn_dir/snap"
    { timeout 120 "$remote" --api-socket "$api" pause &&
      timeout 120 "$remote" --api-socket "$api" snapshot "file://$vn_dir/snap"; } >"$vn_dir/snap.out" 2>&1 || snap_status=$?
    echo "status $snap_status" >>"$vn_dir/snap.out"
    timeout 120 "$remote" --api-socket "$api" resume >>"$vn_dir/snap.out" 2>&1 || echo "resume failed" >>"$vn_dir/snap.out"
    vn_type 'echo VN-D-$(ping -c 2 -W 5 192.168.252.1 | grep -c "bytes from")'
  }
  vn_hotadd() {
    "$remote" --api-socket "$api" add-net "vhost_user=on,socket=$hot_sock,mac=52:54:00:00:00:43" >"$vn_dir/add.out" 2>&1 || echo "add failed" >>"$vn_dir/add.out"
    vn_type 'n=0; while [ ! -e /sys/class/net/eth1 ] && [ $n -lt 300 ]; do sleep 0.2; n=$((n+1)); done; ip link set eth1 up && ip addr add 192.168.253.2/24 dev eth1; echo VN-E-$(cat /sys/class/net/eth1/address)-$(ping -c 3 -W 5 192.168.253.1 | grep -c "bytes from")'
  }
  local steps='L2-INIT-READY|||ip link set eth0 up && ip addr add 192.168.252.2/24 dev eth0 && echo VN-A-$(cat /sys/class/net/eth0/address)-$(ping -c 5 -W 5 192.168.252.1 | grep -c "bytes from")
  VN-A-([0-9a-f:]+-[0-9]+)|||!vn_recv
  VN-B-42-([0-9]+)|||!vn_snapshot
  VN-D-([0-9]+)|||!vn_hotadd
  VN-E-([0-9a-f:]+-[0-9]+)|||poweroff -f'
  run_l2 vunet "$steps" "$binary" -v --api-socket "path=$api" "${base[@]}" --cpus boot=1 --memory size=512M,shared=on --cmdline "$append" \
    --net "vhost_user=on,socket=$sock,mac=52:54:00:00:00:41"
  [[ -n $recv_pid ]] && wait "$recv_pid" 2>/dev/null
  received="$(awk '{ print $3 }' "$vn_dir/recv.log" 2>/dev/null || true)"
  served_status="$(vn_wait_gone "$backend_pid")"
  hot_status="$(vn_wait_gone "$hot_pid")"
  local client_steps=$steps_done client_vmm=$vmm_status
  local -a client_captures=("${captures[@]}")
  echo "ch-e2e: [vunet] snapshot: $(tr '\n' ' ' <"$vn_dir/snap.out" 2>/dev/null | cut -c1-400); add-net: $(tr '\n' ' ' <"$vn_dir/add.out" 2>/dev/null); back-ends: $(tail -n 3 "$vn_dir/backend.log" | tr '\n' ' ') / $(tail -n 3 "$vn_dir/hot-backend.log" | tr '\n' ' ')"
  ip link del vunet1 2>/dev/null || true
  ip link del vunet3 2>/dev/null || true

  # Server mode: the VMM listens on the socket, the back-end (client=on) connects to it.
  local server_sock="$vn_dir/server.sock" server_pid server_received="" server_status
  recv_pid=""
  local server_backend=(--net-backend "tap=vunet2,ip=192.168.252.1,mask=255.255.255.0,host_mac=52:54:00:00:00:99,socket=$server_sock,client=on,num_queues=2,queue_size=256")
  "$backend" "${server_backend[@]}" >"$vn_dir/server-backend.log" 2>&1 &
  server_pid=$!
  vs_recv() {
    "$nested_netbench" recv 5303 - >"$vn_dir/server-recv.log" 2>&1 &
    recv_pid=$!
    sleep 0.5
    vn_type 'ch-netbench send 192.168.252.1 5303 zero:4194304 >/dev/null; echo VS-B-$((40+2))-$?'
  }
  vs_restart() {
    # The back-end dies and a new one connects to the VMM's socket again (the VMM reconnects).
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    ip link del vunet2 2>/dev/null || true
    "$backend" "${server_backend[@]}" >"$vn_dir/server-backend2.log" 2>&1 &
    server_pid=$!
    sleep 2
    vn_type 'ip neigh flush dev eth0 2>/dev/null; echo VS-C-$(ping -c 5 -W 5 192.168.252.1 | grep -c "bytes from")'
  }
  steps='L2-INIT-READY|||ip link set eth0 up && ip addr add 192.168.252.2/24 dev eth0 && echo VS-A-$(ping -c 5 -W 5 192.168.252.1 | grep -c "bytes from")
  VS-A-([0-9]+)|||!vs_recv
  VS-B-42-([0-9]+)|||!vs_restart
  VS-C-([0-9]+)|||reboot -f
  L2-INIT-READY|||ip link set eth0 up && ip addr add 192.168.252.2/24 dev eth0 && echo VS-D-$(ping -c 5 -W 5 192.168.252.1 | grep -c "bytes from")
  VS-D-([0-9]+)|||poweroff -f'
  run_l2 vunet-server "$steps" "$binary" -v "${base[@]}" --cpus boot=1 --memory size=512M,shared=on --cmdline "$append" \
    --net "vhost_user=on,socket=$server_sock,vhost_mode=server,mac=52:54:00:00:00:42"
  [[ -n $recv_pid ]] && wait "$recv_pid" 2>/dev/null
  server_received="$(awk '{ print $3 }' "$vn_dir/server-recv.log" 2>/dev/null || true)"
  server_status="$(vn_wait_gone "$server_pid")"
  ip link del vunet2 2>/dev/null || true

  if ((client_steps == 5)) && ((client_vmm == 0)) && [[ ${client_captures[0]:-} == 52:54:00:00:00:41-5 && ${client_captures[1]:-} == 0 &&
    ${client_captures[2]:-} == 2 && ${client_captures[3]:-} == 52:54:00:00:00:43-3 && $received == 8388608 && $served_status == 0 && $hot_status == 0 ]] &&
    grep -q '"id":"_net1"' "$vn_dir/add.out" &&
    grep -q 'vhost-user-net' "$vn_dir/snap.out" && ! grep -q 'status 0' "$vn_dir/snap.out" && ! grep -q 'resume failed' "$vn_dir/snap.out" &&
    ((steps_done == 6)) && ((vmm_status == 0)) && [[ ${captures[0]:-} == 5 && ${captures[1]:-} == 0 && ${captures[2]:-} -ge 4 && ${captures[3]:-} -ge 4 && $server_received == 4194304 && $server_status == 0 ]] &&
    ((status != 0)) && [[ $refused == *"Using vhost-user requires using shared memory or huge pages"* ]]; then
    pass "vunet: vhost_user_net served TAP vunet1 to the VMM's vhost-user-net front-end; the guest (--memory shared=on) saw MAC 52:54:00:00:00:41, 5/5 pings to level 1 were answered and it sent 8 MiB over TCP that level 1 received whole; the snapshot was refused naming the vhost-user-net NIC and the VM resumed (2/2 pings after); ch-remote add-net vhost_user=on hot-added _net1 (eth1, MAC 52:54:00:00:00:43, 3/3 pings through TAP vunet3); with vhost_mode=server the VMM listened, the back-end (client=on) connected, 5/5 pings and 4 MiB received whole, then it was killed and a new one connected to the same socket: ${captures[2]}/5 pings through it (the VMM reconnected); after reboot -f the rebuilt VM kept that back-end's connection: ${captures[3]}/5 pings; the back-ends exited 0; VMM status 0 twice; without shared=on the NIC is refused (status $status)"
  else
    fail "vunet: client mode steps $client_steps/5, VMM status $client_vmm, captures [${client_captures[*]:-}], received '${received}', back-ends $served_status/$hot_status; server mode steps $steps_done/6, VMM status $vmm_status, captures [${captures[*]:-}], received '${server_received}', back-end $server_status: $(tail -n 3 "$vn_dir/server-backend.log" | tr '\n' ' ') / $(tail -n 3 "$vn_dir/server-backend2.log" 2>/dev/null | tr '\n' ' '); refusal (status $status): ${refused:0:300}"
  fi
  rm -rf "$vn_dir"
}
