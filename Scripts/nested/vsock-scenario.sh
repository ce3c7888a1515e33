# shellcheck shell=bash disable=SC2016  # the quoted lines are typed into the guest's shell
# The vsock scenario of ch-e2e.sh, sourced by it inside level 1: it uses its run_l2, pass,
# fail, captures, $in, $base, $append and $binary.

# vsock_type LINE: types LINE into the guest's console (from a step that runs in level 1).
vsock_type() { printf '%s\n' "$1" >&"$in"; }

# scenario_vsock: --vsock cid=3,socket=PATH (Cloud Hypervisor's hybrid vsock). A program in
# the guest listens on vsock port 1234; level 1 connects to PATH, says `CONNECT 1234`, reads
# `OK <port>`, and both sides send each other several MiB at once (4 MiB to the guest, 3 MiB
# from it). Then the guest connects to host CID 2 port 5678, which reaches a listener at
# PATH_5678 in level 1, and 2 MiB cross each way. Then 16 connections at once through CONNECT
# (ports 2001-2016), 256 KiB each way on each. Every md5 must match on both sides.
scenario_vsock() {
  local vs_dir sock to_guest_sum to_guest2_sum
  vs_dir="$(mktemp -d)"
  sock="$vs_dir/v.sock"
  head -c 4194304 /dev/urandom >"$vs_dir/to-guest"
  head -c 2097152 /dev/urandom >"$vs_dir/to-guest2"
  to_guest_sum="$(md5sum <"$vs_dir/to-guest" | cut -c1-32)"
  to_guest2_sum="$(md5sum <"$vs_dir/to-guest2" | cut -c1-32)"
  vsock_host_connect() {
    "$nested_vsockbench" unix-connect "$sock" 1234 "$vs_dir/to-guest" "$vs_dir/from-guest" >"$vs_dir/connect.log" 2>&1 || true
  }
  vsock_host_listen() {
    "$nested_vsockbench" unix-listen "${sock}_5678" "$vs_dir/to-guest2" "$vs_dir/from-guest2" >"$vs_dir/listen.log" 2>&1 &
    vs_listen_pid=$!
    # The guest may connect only once the listener is there.
    local tries=0
    while [[ ! -S ${sock}_5678 ]] && ((tries < 100)); do sleep 0.1; tries=$((tries + 1)); done
  }
  # 16 connections at once through CONNECT, 256 KiB each way on each.
  head -c 262144 /dev/urandom >"$vs_dir/to-guest3"
  local to_guest3_sum
  to_guest3_sum="$(md5sum <"$vs_dir/to-guest3" | cut -c1-32)"
  vsock_host_many() {
    local i pids=()
    for i in $(seq 1 16); do
      "$nested_vsockbench" unix-connect "$sock" $((2000 + i)) "$vs_dir/to-guest3" "$vs_dir/from-guest3-$i" >"$vs_dir/many-$i.log" 2>&1 &
      pids+=($!)
    done
    wait "${pids[@]}" 2>/dev/null || true
  }
  local steps='L2-INIT-READY|||head -c 3145728 /dev/urandom >/tmp/g && ls /dev/vsock >/dev/null && (ch-vsockbench vsock-listen 1234 /tmp/g /tmp/h >/tmp/vl.log 2>&1 &) && sleep 1 && echo CH-VS-A-$(md5sum </tmp/g | cut -c1-32)
CH-VS-A-([0-9a-f]+)|||!vsock_host_connect; vsock_type '"'"'n=0; while ! grep -q "^CH-VSOCKBENCH vsock-listen" /tmp/vl.log && [ $n -lt 300 ]; do sleep 0.2; n=$((n+1)); done; echo CH-VS-B-$(md5sum </tmp/h | cut -c1-32)-$(grep -c "sent 3145728 received 4194304" /tmp/vl.log)'"'"'
CH-VS-B-([0-9a-f]+-[0-9]+)|||!vsock_host_listen; vsock_type '"'"'head -c 2097152 /dev/urandom >/tmp/g2 && ch-vsockbench vsock-connect 2 5678 /tmp/g2 /tmp/h2 >/tmp/vc.log 2>&1; echo CH-VS-C-$?-$(md5sum </tmp/g2 | cut -c1-32)-$(md5sum </tmp/h2 | cut -c1-32)'"'"'
CH-VS-C-([0-9a-f-]+)|||head -c 262144 /dev/urandom >/tmp/m; for i in $(seq 1 16); do (ch-vsockbench vsock-listen $((2000+i)) /tmp/m /tmp/m$i >/tmp/ml$i.log 2>&1 &); done; sleep 1; echo CH-VS-M-READY-$(md5sum </tmp/m | cut -c1-32)
CH-VS-M-READY-([0-9a-f]{32})|||!vsock_host_many; vsock_type '"'"'n=0; while [ $(grep -l "^CH-VSOCKBENCH vsock-listen" /tmp/ml*.log 2>/dev/null | wc -l) -lt 16 ] && [ $n -lt 300 ]; do sleep 0.2; n=$((n+1)); done; echo CH-VS-M-$(for i in $(seq 1 16); do md5sum </tmp/m$i | cut -c1-32; done | sort -u | tr "\n" "-")$(grep -l "sent 262144 received 262144" /tmp/ml*.log | wc -l)'"'"'
CH-VS-M-([0-9a-f-]+)|||poweroff -f'
  vs_listen_pid=""
  run_l2 vsock "$steps" "$binary" -v "${base[@]}" --cpus boot=2 --memory size=256M --cmdline "$append" --vsock "cid=3,socket=$sock"
  if ((stalled)); then
    # As for the other scenarios: a stalled guest (see run_l2) runs the scenario once more.
    echo "ch-e2e: [vsock] the guest stalled; running the scenario again"
    [[ -n $vs_listen_pid ]] && { kill "$vs_listen_pid" 2>/dev/null || true; wait "$vs_listen_pid" 2>/dev/null || true; }
    vs_listen_pid=""
    rm -f "$vs_dir"/from-guest* "$vs_dir"/*.log "$sock" "${sock}_5678"
    run_l2 vsock "$steps" "$binary" -v "${base[@]}" --cpus boot=2 --memory size=256M --cmdline "$append" --vsock "cid=3,socket=$sock"
  fi
  [[ -n $vs_listen_pid ]] && { wait "$vs_listen_pid" 2>/dev/null || true; }
  local from_guest_sum from_guest2_sum ok_line connect_line c_status c_sent c_received
  from_guest_sum="$(md5sum <"$vs_dir/from-guest" 2>/dev/null | cut -c1-32)"
  from_guest2_sum="$(md5sum <"$vs_dir/from-guest2" 2>/dev/null | cut -c1-32)"
  ok_line="$(grep -a '^CH-VSOCKBENCH ok' "$vs_dir/connect.log" 2>/dev/null || true)"
  connect_line="$(grep -a '^CH-VSOCKBENCH unix-connect' "$vs_dir/connect.log" 2>/dev/null || true)"
  IFS=- read -r c_status c_sent c_received <<<"${captures[2]:-x-x-x}"
  echo "ch-e2e: [vsock] level 1: ${ok_line:-no OK line}; ${connect_line:-no transfer line}; $(grep -a '^CH-VSOCKBENCH' "$vs_dir/listen.log" 2>/dev/null || echo 'no listener line')"
  local many_ok=0 i
  for i in $(seq 1 16); do
    [[ -f $vs_dir/from-guest3-$i && $(md5sum <"$vs_dir/from-guest3-$i" | cut -c1-32) == "${captures[3]:-}" ]] && many_ok=$((many_ok + 1))
  done
  if ((steps_done == 6)) && ((vmm_status == 0)) && ((many_ok == 16)) && [[ ${captures[4]:-} == "$to_guest3_sum-16" ]] && [[ $ok_line == "CH-VSOCKBENCH ok OK 1073741824" &&
    ${captures[0]} == "$from_guest_sum" && ${captures[1]} == "$to_guest_sum-1" &&
    $c_status == 0 && $c_sent == "$from_guest2_sum" && $c_received == "$to_guest2_sum" ]] && [[ ! -e $sock ]]; then
    pass "vsock: hybrid vsock at --vsock cid=3,socket=PATH: level 1 sent CONNECT 1234 and read 'OK 1073741824', then 4 MiB to the guest's AF_VSOCK listener and 3 MiB back at once with matching md5 ($connect_line); the guest connected to CID 2 port 5678, which reached PATH_5678 in level 1, 2 MiB each way with matching md5; 16 connections at once through CONNECT, 256 KiB each way on each, every md5 matching on both sides; the socket file was removed at exit (VMM status 0)"
  else
    fail "vsock: steps $steps_done/6, 16 connections: $many_ok matched on level 1, VMM status $vmm_status, captures [${captures[*]:-}], OK line '$ok_line', md5 from the guest on level 1 $from_guest_sum / $from_guest2_sum, sent $to_guest_sum / $to_guest2_sum, socket file $([[ -e $sock ]] && echo left || echo removed); $(cat "$vs_dir/connect.log" "$vs_dir/listen.log" 2>/dev/null | tr '\n' ' ')"
  fi
  rm -rf "$vs_dir"
}
