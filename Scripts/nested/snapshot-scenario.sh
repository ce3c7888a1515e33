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
  local loop='ip link set eth0 up; ip addr add 192.168.252.2/24 dev eth0; i=0; while :; do i=$((i+1)); p=no; ping -c 1 -W 2 192.168.252.1 >/dev/null 2>&1 && p=ok; echo CH-SNAP $i $(cut -d. -f1 /proc/uptime) $p; echo $i | dd of=/dev/vda bs=512 seek=$i 2>/dev/null; sync; sleep 1; done'
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
  if ((snapshot_status != 0)); then
    # Where each VMM thread was when the snapshot failed or hung.
    for task in /proc/"$vmm"/task/*; do
      echo "ch-e2e: [snapshot] thread $(cat "$task/comm" 2>/dev/null) state $(awk '{print $3}' "$task/stat" 2>/dev/null) wchan $(cat "$task/wchan" 2>/dev/null)"
    done
  fi
  snapshot_s=$((SECONDS - snapshot_s))
  kill -9 "$vmm" 2>/dev/null; wait "$vmm" 2>/dev/null || true
  last="$(counts "$dir/first.out" | awk '{ print $NF }')"
  first_uptime="$(field "$dir/first.out" "$last" 3)"
  local sparse pings_before
  sparse="$(du -k "$dir/memory-ranges" 2>/dev/null | cut -f1)"
  pings_before="$(tr -d '\r' <"$dir/first.out" | awk '$1 == "CH-SNAP" && $4 == "ok"' | wc -l)"

  local round mode results=() ok=1
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
        results+=("$round FAILED: counts [$after] after $last, uptime $first_uptime -> $uptime, pings $pings, kernel boots $boots")
      fi
    else
      ok=0
      results+=("$round FAILED: no count past $((last + 4)): $(tail -c 400 "$dir/$round.out" | tr '\r\n' '  ') $(tail -n 4 "$dir/$round.err" | tr '\n' ' ')")
    fi
    kill -9 "$vmm" 2>/dev/null; wait "$vmm" 2>/dev/null || true
  done

  # Every sector the guest wrote holds its count: sector 1 up to the one before the highest
  # count printed (the guest prints a count before writing it, and the VMM was killed anywhere).
  local highest bad=0 k
  highest="$(cat "$dir"/copy.out "$dir"/ondemand.out | tr -d '\r' | awk '$1 == "CH-SNAP" && $2 > n { n = $2 } END { print n + 0 }')"
  for ((k = 1; k < highest; k++)); do
    [[ "$(dd if="$dir/disk.img" bs=512 skip="$k" count=1 2>/dev/null | tr -d '\0' | sed -n 1p)" == "$k" ]] || bad=$((bad + 1))
  done
  if ((snapshot_status == 0)) && ((ok == 1)) && ((bad == 0)) && ((pings_before >= 3)) && [[ -n $last ]]; then
    pass "snapshot: a Linux guest (disk, TAP NIC, console, rng) counting to $last ($pings_before pings answered) was paused, snapshotted in ${snapshot_s}s (memory-ranges ${sparse} KiB on disk for 256 MiB of RAM) and killed; restored in new VMM processes it went on: ${results[*]}; sectors 1-$((highest - 1)) hold their counts"
  else
    fail "snapshot: $pings_before pings answered before the snapshot, snapshot status $snapshot_status ($(tr '\n' ' ' <"$dir/remote.log")), last count '$last', ${results[*]}, $bad sector(s) wrong; $(tail -n 6 "$dir/first.err" | tr '\n' ' ')"
  fi
  ip link del chstap0 2>/dev/null || true
  rm -rf "$dir"
}
