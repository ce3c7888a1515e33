# shellcheck shell=bash disable=SC2016  # the guest's loop is quoted for the kernel command line
# The snapshot/restore scenario of ch-e2e.sh, sourced by it inside level 1 (uses pass, fail,
# $nested_vmlinux, $nested_l2_initrd).
#
# snapshot_scenario BINARY REMOTE: a Linux guest with a raw disk, a NIC on a TAP the VMM
# makes, the virtio console and rng runs a loop that prints a counter and its uptime on the
# serial port, writes the counter into sector N of the disk and pings level 1, once a second.
# ch-remote pauses the VMM and snapshots it; the VMM is killed (SIGKILL); a new VMM restores
# the snapshot (--restore ...,resume=on) and the loop must go on: the next count follows the
# last one without a gap or reset, the uptime continues, the kernel never boots again, the
# pings still answer and every sector holds its count. Then the same snapshot is restored
# once more with memory_restore_mode=ondemand (userfaultfd): the count continues from the
# snapshot again. Serial output goes to each VMM's own standard output (--serial tty).
snapshot_scenario() {
  local binary="$1" remote="$2" dir vmm last first_uptime
  dir="$(mktemp -d)"
  truncate -s 4M "$dir/disk.img"
  # Besides the counter, a writer keeps the disk busy (1 MiB from sector 2048, far past the counts).
  local loop='ip link set eth0 up; ip addr add 192.168.252.2/24 dev eth0; (while :; do dd if=/dev/zero of=/dev/vda bs=4k seek=512 count=256 conv=fsync 2>/dev/null; done) & i=0; while :; do i=$((i+1)); p=no; ping -c 1 -W 2 192.168.252.1 >/dev/null 2>&1 && p=ok; echo CH-SNAP $i $(cut -d. -f1 /proc/uptime) $p; echo $i | dd of=/dev/vda bs=512 seek=$i 2>/dev/null; sync; sleep 1; done'
  local vm=(--kernel "$nested_vmlinux" --initramfs "$nested_l2_initrd" --cmdline "console=ttyS0 panic=-1 ch_test=\"$loop\""
    --cpus boot=2 --memory size=256M --serial tty --console "file=$dir/hvc.log" --rng
    --disk "path=$dir/disk.img" --net "tap=chstap0,mac=52:54:00:00:00:30,host_mac=52:54:00:00:00:31,ip=192.168.252.1,mask=255.255.255.0")
  # host_mac: the TAP made by each restored VMM keeps the MAC in the guest's ARP cache.

  # wait_count FILE N SECONDS: waits until FILE has a CH-SNAP line with count N or more.
  wait_count() {
    local deadline=$((SECONDS + $3))
    while ((SECONDS < deadline)); do
      [[ $(awk '{ sub(/\r$/, "") } $1 == "CH-SNAP" { n = $2 } END { print n + 0 }' "$1") -ge $2 ]] && return 0
      sleep 1
    done
    return 1
  }
  # (awk reads whole files here: with pipefail, a reader that stops early would fail the pipeline.)
  counts() { awk '{ sub(/\r$/, "") } $1 == "CH-SNAP" { printf "%s ", $2 }' "$1"; }
  field() { awk -v n="$2" -v f="$3" '{ sub(/\r$/, "") } $1 == "CH-SNAP" && $2 == n && !done { print $f; done = 1 }' "$1"; }

  echo "ch-e2e: [snapshot] booting the guest"
  # Each VMM in its own session, its terminal input from /dev/null: the level-1 console stays out of it.
  setsid "$binary" -v "${vm[@]}" --api-socket "$dir/api.sock" </dev/null >"$dir/first.out" 2>"$dir/first.err" &
  vmm=$!
  if ! wait_count "$dir/first.out" 5 300; then
    fail "snapshot: the guest never counted to 5: $(tail -c 600 "$dir/first.out" | tr '\r\n' '  ') $(tail -n 5 "$dir/first.err" | tr '\n' ' ')"
    kill -9 "$vmm" 2>/dev/null; wait "$vmm" 2>/dev/null || true; rm -rf "$dir"; return
  fi
  echo "ch-e2e: [snapshot] the guest counts; pausing and snapshotting"
  local snapshot_s=$SECONDS
  local snapshot_status=0
  # Bounded: a pause or snapshot that never answers is a failure, not a stuck bench.
  timeout 120 "$remote" --api-socket "$dir/api.sock" pause >"$dir/remote.log" 2>&1 &&
    timeout 300 "$remote" --api-socket "$dir/api.sock" snapshot "file://$dir" >>"$dir/remote.log" 2>&1 || snapshot_status=$?
  snapshot_s=$((SECONDS - snapshot_s))
  # While paused, no byte of guest memory changes: with the NIC flooded from level 1 and the
  # disk writer stopped mid-stream, a second snapshot three seconds later holds the same memory.
  local paused_same=unchecked
  if ((snapshot_status == 0)); then
    mkdir -p "$dir/second"
    timeout 10 ping -f -c 5000 -s 1200 192.168.252.2 >/dev/null 2>&1 || true
    sleep 3
    if timeout 300 "$remote" --api-socket "$dir/api.sock" snapshot "file://$dir/second" >>"$dir/remote.log" 2>&1; then
      if cmp -s "$dir/memory-ranges" "$dir/second/memory-ranges"; then paused_same=yes; else paused_same="NO ($(cmp -l "$dir/memory-ranges" "$dir/second/memory-ranges" 2>/dev/null | wc -l) bytes differ)"; fi
    else
      snapshot_status=$?
    fi
    rm -rf "$dir/second"
  fi
  if ((snapshot_status != 0)); then
    # Where each VMM thread was when the snapshot failed or hung.
    for task in /proc/"$vmm"/task/*; do
      echo "ch-e2e: [snapshot] thread $(cat "$task/comm" 2>/dev/null) state $(awk '{print $3}' "$task/stat" 2>/dev/null) wchan $(cat "$task/wchan" 2>/dev/null)"
    done
  fi
  kill -9 "$vmm" 2>/dev/null; wait "$vmm" 2>/dev/null || true
  last="$(counts "$dir/first.out" | awk '{ print $NF }')"
  first_uptime="$(field "$dir/first.out" "$last" 3)"
  local sparse pings_before
  sparse="$(du -k "$dir/memory-ranges" 2>/dev/null | cut -f1)"
  pings_before="$(tr -d '\r' <"$dir/first.out" | awk '$1 == "CH-SNAP" && $4 == "ok"' | wc -l)"

  # The fork's own copy of the snapshot, naming its own copy of the disk as it was at the snapshot
  # (the image lock keeps two VMMs off one disk), as a VM template is cloned.
  mkdir -p "$dir/fork"
  cp --sparse=always "$dir/disk.img" "$dir/fork/disk.img"
  cp --sparse=always "$dir/memory-ranges" "$dir/state.json" "$dir/fork/" 2>/dev/null || true
  python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); c["disks"][0]["path"]=sys.argv[3]; json.dump(c, open(sys.argv[2], "w"))' \
    "$dir/config.json" "$dir/fork/config.json" "$dir/fork/disk.img" 2>/dev/null || true

  local round mode results=() ok=1 ondemand_vmm=
  for round in copy ondemand; do
    local restore_s=$SECONDS
    echo "ch-e2e: [snapshot] restoring ($round)"
    setsid "$binary" -v --restore "source_url=file://$dir,resume=on,memory_restore_mode=$round" </dev/null >"$dir/$round.out" 2>"$dir/$round.err" &
    vmm=$!
    if wait_count "$dir/$round.out" $((last + 4)) 180; then
      restore_s=$((SECONDS - restore_s))
      local after next uptime pings boots
      after="$(counts "$dir/$round.out")"
      next="$(echo "$after" | awk '{ print $1 }')"
      uptime="$(field "$dir/$round.out" "$next" 3)"
      pings="$(tr -d '\r' <"$dir/$round.out" | awk '$1 == "CH-SNAP" && $4 == "ok"' | wc -l)"
      boots="$(grep -c "Linux version" "$dir/$round.out" || true)"
      # Contiguous: each count is the one before plus one, starting right after the snapshot's last.
      if [[ $next == $((last + 1)) ]] && echo "$after" | awk '{ for (i = 2; i <= NF; i++) if ($i != $(i-1) + 1) exit 1 }' &&
        ((uptime >= first_uptime)) && ((pings >= 3)) && ((boots == 0)); then
        results+=("$round: counts $after after $last, uptime ${first_uptime}s -> ${uptime}s, $pings pings answered, four more counts ${restore_s}s after the VMM started")
      else
        ok=0
        # What the guest said before it went wrong: the kernel's complaints, and the lines before a new boot.
        local said
        said="$(tr -d '\r' <"$dir/$round.out" | awk '/Kernel panic|BUG:|Oops|general protection|RIP:|traps:|Unexpected|unhandled|reboot:/ { print; if (++n >= 12) exit }' | tr '\n' '|')"
        said+=" before the boot: $(tr -d '\r' <"$dir/$round.out" | awk '/Linux version/ { exit } { lines[NR % 6] = $0; last = NR } END { for (i = last - 5; i <= last; i++) if (i > 0) printf "%s|", lines[i % 6] }')"
        said+="; VMM: $(grep -aiE 'warn|error|fault|reset|reboot' "$dir/$round.err" | head -n 6 | tr '\n' '|')"
        results+=("$round FAILED: counts [$after] after $last, uptime $first_uptime -> $uptime, pings $pings, kernel boots $boots; guest: $said")
      fi
    else
      ok=0
      results+=("$round FAILED: no count past $((last + 4)): $(tail -c 400 "$dir/$round.out" | tr '\r\n' '  ') $(tail -n 4 "$dir/$round.err" | tr '\n' ' ')")
    fi
    # The on-demand VMM keeps running while a fork of the same snapshot runs beside it.
    if [[ $round == ondemand ]]; then ondemand_vmm=$vmm; else kill -9 "$vmm" 2>/dev/null; wait "$vmm" 2>/dev/null || true; fi
  done

  # A fork: the same snapshot restored once more beside the on-demand VMM, through the API
  # (an empty VMM, `ch-remote restore` with net_fds: a TAP opened here and passed in
  # SCM_RIGHTS, in its own network namespace with level 1's address). Both guests count on.
  local fork_result="fork FAILED: not started" ondemand_before ondemand_after
  ondemand_before="$(counts "$dir/ondemand.out" | awk '{ print $NF }')"
  ip netns add chfork 2>/dev/null || true
  setsid "$binary" -v --api-socket "$dir/fork.sock" </dev/null >"$dir/fork.out" 2>"$dir/fork.err" &
  local fork_vmm=$! net_id
  net_id="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["net"][0].get("id") or "_net0")' "$dir/config.json" 2>/dev/null || echo "?")"
  # Opens the TAP as Kata does (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR) and runs ch-remote with it as descriptor 3.
  if timeout 60 python3 - "$remote" "$dir" "$net_id" >>"$dir/remote.log" 2>&1 <<'PYTHON'
import fcntl, os, struct, subprocess, sys, time
remote, directory, net_id = sys.argv[1:4]
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", b"chsfork0", 0x0002 | 0x1000 | 0x4000))  # TUNSETIFF
os.dup2(fd, 3)
deadline = time.time() + 20
while not os.path.exists(directory + "/fork.sock") and time.time() < deadline:
    time.sleep(0.05)
subprocess.run(["ip", "link", "set", "chsfork0", "netns", "chfork"], check=True)
subprocess.run(["ip", "-n", "chfork", "addr", "add", "192.168.252.1/24", "dev", "chsfork0"], check=True)
# The guest's ARP cache holds the host MAC of the snapshot's TAP (host_mac=): the fork's TAP takes it.
subprocess.run(["ip", "-n", "chfork", "link", "set", "chsfork0", "address", "52:54:00:00:00:31"], check=True)
subprocess.run(["ip", "-n", "chfork", "link", "set", "chsfork0", "up"], check=True)
subprocess.run([remote, "--api-socket", directory + "/fork.sock", "restore",
                f"source_url=file://{directory}/fork,net_fds=[{net_id}@[3]]"], check=True, pass_fds=[3])
subprocess.run([remote, "--api-socket", directory + "/fork.sock", "resume"], check=True)
PYTHON
  then
    if wait_count "$dir/fork.out" $((last + 4)) 180; then
      local fork_counts fork_pings
      fork_counts="$(counts "$dir/fork.out")"
      fork_pings="$(tr -d '\r' <"$dir/fork.out" | awk '$1 == "CH-SNAP" && $4 == "ok"' | wc -l)"
      ondemand_after="$(counts "$dir/ondemand.out" | awk '{ print $NF }')"
      if [[ "$(echo "$fork_counts" | awk '{ print $1 }')" == $((last + 1)) ]] && ((fork_pings >= 3)) && ((ondemand_after > ondemand_before)) &&
        echo "$fork_counts" | awk '{ for (i = 2; i <= NF; i++) if ($i != $(i-1) + 1) exit 1 }'; then
        fork_result="fork (ch-remote restore, TAP in net_fds): counts $fork_counts after $last, $fork_pings pings answered in its own namespace, while the on-demand VMM counted from $ondemand_before to $ondemand_after"
      else
        ok=0
        fork_result="fork FAILED: counts [$fork_counts] after $last, pings $fork_pings, on-demand VMM $ondemand_before -> $ondemand_after"
      fi
    else
      ok=0
      fork_result="fork FAILED: no count past $((last + 4)): $(tail -c 300 "$dir/fork.out" | tr '\r\n' '  ') $(tail -n 4 "$dir/fork.err" | tr '\n' ' ')"
    fi
  else
    ok=0
    fork_result="fork FAILED: the restore request failed: $(tail -n 4 "$dir/remote.log" | tr '\n' ' ') $(tail -n 4 "$dir/fork.err" | tr '\n' ' ')"
  fi
  results+=("$fork_result")
  kill -9 "$fork_vmm" "${ondemand_vmm:-}" 2>/dev/null || true
  wait "$fork_vmm" 2>/dev/null || true
  wait "${ondemand_vmm:-}" 2>/dev/null || true
  ip netns del chfork 2>/dev/null || true

  # Every sector the guest wrote holds its count: sector 1 up to the one before the highest
  # count printed (the guest prints a count before writing it, and the VMM was killed anywhere).
  local highest bad=0 k
  highest="$(cat "$dir"/copy.out "$dir"/ondemand.out | tr -d '\r' | awk '$1 == "CH-SNAP" && $2 > n { n = $2 } END { print n + 0 }')"
  for ((k = 1; k < highest; k++)); do
    [[ "$(dd if="$dir/disk.img" bs=512 skip="$k" count=1 2>/dev/null | tr -d '\0' | sed -n 1p)" == "$k" ]] || bad=$((bad + 1))
  done
  if ((snapshot_status == 0)) && [[ $paused_same == yes ]] && ((ok == 1)) && ((bad == 0)) && ((pings_before >= 3)) && [[ -n $last ]]; then
    pass "snapshot: a Linux guest (disk, TAP NIC, console, rng) counting to $last ($pings_before pings answered) was paused, snapshotted in ${snapshot_s}s (memory-ranges ${sparse} KiB on disk for 256 MiB of RAM), snapshotted again after 3 s of NIC flood with the same memory, and killed; restored in new VMM processes it went on: ${results[*]}; sectors 1-$((highest - 1)) hold their counts"
  else
    fail "snapshot: $pings_before pings answered before the snapshot, snapshot status $snapshot_status, memory unchanged while paused: $paused_same ($(tr '\n' ' ' <"$dir/remote.log")), last count '$last', ${results[*]}, $bad sector(s) wrong; $(tail -n 6 "$dir/first.err" | tr '\n' ' ')"
  fi
  ip link del chstap0 2>/dev/null || true
  rm -rf "$dir"
}
