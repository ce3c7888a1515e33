# shellcheck shell=bash disable=SC2016  # the guest's loop is quoted for the kernel command line
# The live-migration scenario of ch-e2e.sh, sourced by it inside level 1 (uses pass, fail,
# $nested_vmlinux, $nested_l2_initrd).
#
# migration_scenario BINARY REMOTE: a Linux guest (shared memory, a raw disk, a two-queue-pair
# NIC on a TAP, rng) prints a counter and its uptime on the serial port, writes the counter into
# sector N of the disk and pings level 1 once a second, while a second loop keeps rewriting 4 MiB
# of a tmpfs file (memory the pre-copy rounds must chase). It migrates between VMM processes:
# A -> B over tcp: on loopback, B -> C over unix:, C -> D with local=on (memory handed over), then
# D -> E with E killed mid-way: D must go on. Each destination continues the count without a gap
# or reset, each source VMM exits with status 0, the pings answer, every sector holds its count.
# The destinations open the same TAP (multi-queue, so both VMMs may hold it during the hand-over).
migration_scenario() {
  local binary="$1" remote="$2" dir
  # Level 1's init leaves the loopback interface down; tcp: migrations run over it.
  ip link set lo up
  dir="$(mktemp -d)"
  truncate -s 4M "$dir/disk.img"
  local loop='ip link set eth0 up; ip addr add 192.168.251.2/24 dev eth0; (while :; do dd if=/dev/urandom of=/tmp/churn bs=64k count=64 conv=notrunc 2>/dev/null; done) & i=0; while :; do i=$((i+1)); p=no; ping -c 1 -W 2 192.168.251.1 >/dev/null 2>&1 && p=ok; echo CH-MIG $i $(cut -d. -f1 /proc/uptime) $p; echo $i | dd of=/dev/vda bs=512 seek=$i 2>/dev/null; sync; sleep 1; done'
  local vm=(--kernel "$nested_vmlinux" --initramfs "$nested_l2_initrd" --cmdline "console=ttyS0 panic=-1 ch_test=\"$loop\""
    --cpus boot=2 --memory size=256M,shared=on --serial tty --console off --rng
    --disk "path=$dir/disk.img" --net "tap=chmtap0,mac=52:54:00:00:00:40,host_mac=52:54:00:00:00:41,ip=192.168.251.1,mask=255.255.255.0,num_queues=4")

  last_count() { awk '{ sub(/\r$/, "") } $1 == "CH-MIG" { n = $2 } END { print n + 0 }' "$1"; }
  wait_count() {
    local deadline=$((SECONDS + $3))
    while ((SECONDS < deadline)); do
      (($(last_count "$1") >= $2)) && return 0
      sleep 1
    done
    return 1
  }
  # An empty VMM waiting for a migration at URL; sets its pid in `receiver_vmm` and the
  # ch-remote receive-migration's in `receiver_call`.
  start_receiver() {
    local name="$1" url="$2"
    setsid "$binary" -v --api-socket "$dir/$name.sock" </dev/null >"$dir/$name.out" 2>"$dir/$name.err" &
    receiver_vmm=$!
    local deadline=$((SECONDS + 20))
    until [[ -S $dir/$name.sock ]] || ((SECONDS > deadline)); do sleep 0.1; done
    timeout 300 "$remote" --api-socket "$dir/$name.sock" receive-migration "receiver_url=$url" >"$dir/$name.receive" 2>&1 &
    receiver_call=$!
    # Listening once its event says so; a short wait is enough on loopback.
    sleep 1
  }
  # migrate FROM_PID FROM TO URL [local]: sends, waits for both ends; prints the result.
  migrate() {
    local from_pid="$1" from="$2" to="$3" url="$4" extra="${5:-}" status=0 before
    before="$(last_count "$dir/$from.out")"
    timeout 30 "$remote" --api-socket "$dir/$from.sock" send-migration "destination_url=$url$extra" >"$dir/$from.send" 2>&1 || status=$?
    wait "$receiver_call" || status=$?
    local deadline=$((SECONDS + 60))
    while kill -0 "$from_pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    local source_status=0
    if kill -0 "$from_pid" 2>/dev/null; then source_status=alive; else wait "$from_pid" || source_status=$?; fi
    if ((status == 0)) && [[ $source_status == 0 ]] && wait_count "$dir/$to.out" $((before + 3)) 120; then
      local figures
      figures="$(grep -o 'migration completed: .*' "$dir/$from.err" | head -n 1 | sed 's/migration completed: //' || true)"
      results+=("$from -> $to over ${url%%:*}$extra ($figures)")
    else
      ok=0
      results+=("$from -> $to FAILED: send/receive status $status, source $source_status: $(tr '\n' ' ' <"$dir/$from.send") $(tr '\n' ' ' <"$dir/$to.receive") $(grep -a 'ERROR' "$dir/$from.err" "$dir/$to.err" | tail -n 3 | tr '\n' ' ' || true)")
      # What the source's guest and VMM said last: a reset or a panic shows there.
      echo "ch-e2e: [migration] $from's console, last lines:"; tail -n 40 "$dir/$from.out" | tr -d '\r' | sed 's/^/  | /'
      echo "ch-e2e: [migration] $from's VMM log, warnings and state changes:"
      grep -a -E 'WARN|ERROR|stopped|reboot|migration' "$dir/$from.err" | tail -n 20 | sed 's/^/  | /' || true
    fi
  }

  local results=() ok=1 receiver_vmm receiver_call
  echo "ch-e2e: [migration] booting the guest"
  setsid "$binary" -v "${vm[@]}" --api-socket "$dir/a.sock" </dev/null >"$dir/a.out" 2>"$dir/a.err" &
  local a=$!
  if ! wait_count "$dir/a.out" 5 300; then
    fail "migration: the guest never counted to 5: $(tail -c 600 "$dir/a.out" | tr '\r\n' '  ') $(tail -n 5 "$dir/a.err" | tr '\n' ' ')"
    kill -9 "$a" 2>/dev/null; wait "$a" 2>/dev/null || true; ip link del chmtap0 2>/dev/null || true; rm -rf "$dir"; return
  fi
  echo "ch-e2e: [migration] A -> B over tcp:"
  start_receiver b "tcp:127.0.0.1:6789"
  local b=$receiver_vmm
  migrate "$a" a b "tcp:127.0.0.1:6789"
  echo "ch-e2e: [migration] B -> C over unix:"
  start_receiver c "unix:$dir/c.mig"
  local c=$receiver_vmm
  ((ok)) && migrate "$b" b c "unix:$dir/c.mig"
  echo "ch-e2e: [migration] C -> D with local=on"
  start_receiver d "unix:$dir/d.mig"
  local d=$receiver_vmm
  ((ok)) && migrate "$c" c d "unix:$dir/d.mig" ",local=on"

  # D -> E, with E killed as soon as the first memory round is under way: D goes on.
  echo "ch-e2e: [migration] D -> E, E killed mid-way"
  start_receiver e "tcp:127.0.0.1:6790"
  local e=$receiver_vmm failed_ok=0 before_fail
  before_fail="$(last_count "$dir/d.out")"
  if ((ok)); then
    timeout 30 "$remote" --api-socket "$dir/d.sock" send-migration "destination_url=tcp:127.0.0.1:6790" >"$dir/d.send" 2>&1 || true
    sleep 0.3
    kill -9 "$e" 2>/dev/null || true
    wait "$receiver_call" 2>/dev/null || true
    # D logs the failure once its connection breaks, then counts on.
    local deadline=$((SECONDS + 120))
    until grep -q 'migration failed' "$dir/d.err" || ((SECONDS > deadline)); do sleep 1; done
    before_fail="$(last_count "$dir/d.out")"
    local pings_after=0
    if grep -q 'migration failed' "$dir/d.err" && wait_count "$dir/d.out" $((before_fail + 4)) 120 && kill -0 "$d" 2>/dev/null; then
      # ...and its NIC still answers: pings of the counts after the failure.
      pings_after="$(tr -d '\r' <"$dir/d.out" | awk -v from="$before_fail" '$1 == "CH-MIG" && $2 > from && $4 == "ok"' | wc -l)"
    fi
    if ((pings_after >= 2)); then
      failed_ok=1
      results+=("D -> E with E killed: D went on counting and pinging ($pings_after pings answered after it; $(grep -c 'migration failed' "$dir/d.err" || true) failure logged: $(grep -o 'migration failed: .*' "$dir/d.err" | head -n 1 || true))")
    else
      results+=("D -> E with E killed: D FAILED to go on ($pings_after pings after the failure): $(tail -n 4 "$dir/d.err" | tr '\n' ' ' || true)")
    fi
  fi

  # One count across A, B, C, D: contiguous from 1.
  local counts pings gaps boots
  counts="$(cat "$dir/a.out" "$dir/b.out" "$dir/c.out" "$dir/d.out" | tr -d '\r' | awk '$1 == "CH-MIG" { printf "%s ", $2 }')"
  gaps="$(echo "$counts" | awk '{ for (i = 2; i <= NF; i++) if ($i != $(i-1) + 1) g++; print g + 0 }')"
  pings="$(cat "$dir/b.out" "$dir/c.out" "$dir/d.out" | tr -d '\r' | awk '$1 == "CH-MIG" && $4 == "ok"' | wc -l)"
  boots="$(cat "$dir/b.out" "$dir/c.out" "$dir/d.out" | grep -c "Linux version" || true)"
  kill -9 "$a" "$b" "$c" "$d" "$e" 2>/dev/null || true
  wait 2>/dev/null || true
  local highest bad=0 k
  highest="$(echo "$counts" | awk '{ print $NF }')"
  for ((k = 1; k < highest; k++)); do
    [[ "$(dd if="$dir/disk.img" bs=512 skip="$k" count=1 2>/dev/null | tr -d '\0' | sed -n 1p)" == "$k" ]] || bad=$((bad + 1))
  done
  if ((ok && failed_ok && gaps == 0 && boots == 0 && bad == 0 && pings >= 6)); then
    pass "migration: a Linux guest (shared memory, disk, 2-queue-pair TAP NIC, rng, 4 MiB of tmpfs rewritten without pause) migrated ${results[*]}; the count ran 1-$highest without a gap or reset across the four VMMs, $pings pings answered after the first migration, sectors 1-$((highest - 1)) hold their counts"
  else
    # Which VMM's guest booted again, what it said before, and what that VMM logged.
    local said="" name
    for name in b c d; do
      grep -q "Linux version" "$dir/$name.out" 2>/dev/null || continue
      said+=" $name's guest: $(tr -d '\r' <"$dir/$name.out" | awk '/Kernel panic|BUG:|Oops|general protection|RIP:|traps:|Unexpected|unhandled|reboot:|watchdog/ { print; if (++n >= 12) exit }' | tr '\n' '|')"
      said+=" before the boot: $(tr -d '\r' <"$dir/$name.out" | awk '/Linux version/ { exit } { lines[NR % 6] = $0; last = NR } END { for (i = last - 5; i <= last; i++) if (i > 0) printf "%s|", lines[i % 6] }')"
      said+="; $name's VMM: $(grep -aiE 'warn|error|fault|reset|reboot' "$dir/$name.err" | head -n 8 | tr '\n' '|')"
    done
    fail "migration: ${results[*]}; counts [$counts] ($gaps gap(s)), $pings pings after the first migration, kernel boots $boots, $bad sector(s) wrong;$said"
  fi
  ip link del chmtap0 2>/dev/null || true
  rm -rf "$dir"
}
