# shellcheck shell=bash disable=SC2016  # the quoted lines are typed into the guest's shell
# The Kata Containers scenario of ch-e2e.sh, sourced by it inside level 1 (uses its run_l2,
# pass, fail, captures, $here, $binary, $nested_vmlinux, $nested_l2_initrd).
#
# kata_scenario BINARY: the VMM is started as Kata starts it (`--api-socket PATH` and nothing
# else; -v only to see when it listens); Scripts/kata/kata-client.py replays Kata's requests
# (ping, Kata's full vm.create body created and deleted (every device it asks for exists), the
# body without virtio-fs (no virtiofsd at Kata's path here; with Kata's two PCI segments and its
# vsock, the socket moved to a directory that exists), vm.info,
# vm.add-net with a TAP descriptor in SCM_RIGHTS on its own connection, vm.boot, vm.info, the no-op vm.resize). The Debian guest's NIC is the passed
# TAP: it pings the host side; then the client stops the VMM with vmm.shutdown as Kata does.
kata_scenario() {
  local binary="$1" dir client
  dir="$(mktemp -d)"
  client="$here/../kata/kata-client.py"
  truncate -s 1M "$dir/rootfs.img"
  kata_start() {
    python3 "$client" start "$dir/api.sock" "$nested_vmlinux" "$nested_l2_initrd" "console=ttyS0 panic=-1" \
      "$dir/rootfs.img" katatap0 192.168.249.1/24 >"$dir/client.log" 2>&1 &
  }
  kata_stop() { python3 "$client" stop "$dir/api.sock" >>"$dir/client.log" 2>&1; }
  local steps='API server on|||!kata_start
  L2-INIT-READY|||ip link set eth0 up && ip addr add 192.168.249.2/24 dev eth0 && ls /sys/bus/pci/devices; echo CH-KATA-PING-$(ping -c 3 -W 5 192.168.249.1 | grep -c "bytes from")-$(cat /sys/class/net/eth0/address)-$(ls /sys/bus/pci/devices | grep -c "^0001:00:")-$(cat /sys/bus/virtio/devices/*/device | grep -c 0x0013)
  CH-KATA-PING-([0-9]+-[0-9a-f:]+-[0-9]+-[0-9]+)|||!kata_stop'
  run_l2 kata "$steps" "$binary" -v --api-socket "$dir/api.sock"
  local log
  log="$(tr '\n' ' ' <"$dir/client.log" 2>/dev/null)"
  if ((steps_done == 3)) && ((vmm_status == 0)) && [[ ${captures[0]} == 3-a6:2f:52:7e:01:3c-1-1 ]] &&
    [[ $log == *"OK vm.add-net with the TAP in SCM_RIGHTS"* && $log == *"OK vm.resize"* && $log == *"OK vmm.shutdown"* ]] &&
    [[ $log != *FAIL* ]]; then
    pass "kata: Kata's requests replayed (its full vm.create (virtio-fs on PCI segment 1, vsock) created and deleted; created again without fs, with Kata's two PCI segments (the guest sees segment 1's host bridge) and its vsock device; vm.add-net with a TAP passed in SCM_RIGHTS; boot; info; no-op resize); the guest's NIC (Kata's MAC) on the passed TAP answered 3/3 pings; vmm.shutdown ended the VMM with status 0"
  else
    fail "kata: steps $steps_done/3, VMM status $vmm_status, captures [${captures[*]:-}], client: $log"
  fi
  ip link del katatap0 2>/dev/null || true
  rm -rf "$dir"
}
