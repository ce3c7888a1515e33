# shellcheck shell=bash disable=SC2016  # the quoted lines are typed into the guest's shell
# The balloon scenario of ch-e2e.sh, sourced by it inside level 1: it uses its run_l2, pass,
# fail, captures, $in, $pid, $base, $append, $binary and $remote.

# bl_type LINE: types LINE into the guest's console (from a step that runs in level 1).
bl_type() { printf '%s\n' "$1" >&"$in"; }

# bl_rss_kib: the VMM's (the child of run_l2's timeout) resident memory in KiB.
bl_rss_kib() {
  local vmm
  vmm="$(pgrep -P "$pid" | head -n 1 || true)"
  awk '/^VmRSS:/{print $2}' "/proc/${vmm:-$pid}/status" 2>/dev/null || echo 0
}

# bl_actual SOCKET: vm.info's memory_actual_size.
bl_actual() { "$remote" --api-socket "$1" info 2>/dev/null | grep -o '"memory_actual_size":[0-9]*' | cut -d: -f2; }

# scenario_balloon: a 512 MiB guest with --balloon size=0 (deflate_on_oom off, so the guest's
# MemTotal follows the balloon). The guest fills its free memory through tmpfs and frees it
# again, so the VMM holds those pages. `ch-remote resize --balloon 256M`: the guest's driver
# inflates (MemTotal drops by 256 MiB), vm.info's memory_actual_size drops to 256 MiB and the
# VMM's RSS drops (the pages went back to level 1). `resize --balloon 0`: the guest gets its
# memory back and fills 320 MiB of tmpfs, more than it had while inflated. It runs twice: with
# private anonymous guest memory (pages dropped with MADV_DONTNEED) and with --memory shared=on
# (memfd-backed: pages punched out of the file, then dropped). A VM without a balloon refuses
# `resize --balloon` (checked on /dev/kvm by BalloonBinaryTests).
scenario_balloon() {
  bl_run private size=512M
  bl_run shared size=512M,shared=on
}

# bl_run LABEL MEMORY: one run of the scenario with --memory MEMORY.
bl_run() {
  local label="$1" memory="$2" bl_dir sock
  bl_dir="$(mktemp -d)"
  sock="$bl_dir/api.sock"
  bl_inflate() {
    echo "rss-before $(bl_rss_kib)" >"$bl_dir/inflate.out"
    echo "actual-before $(bl_actual "$sock")" >>"$bl_dir/inflate.out"
    "$remote" --api-socket "$sock" resize --balloon 256M >>"$bl_dir/inflate.out" 2>&1 && echo resized >>"$bl_dir/inflate.out"
    bl_type 'n=0; while [ $(awk "/MemTotal/{print \$2}" /proc/meminfo) -gt $((t0-262144+2048)) ] && [ $n -lt 600 ]; do sleep 0.2; n=$((n+1)); done; sleep 1; echo BL-INFLATED-$(awk "/MemTotal/{print \$2}" /proc/meminfo)'
  }
  bl_measure() {
    local tries=0 actual=""
    while ((tries < 50)); do
      actual="$(bl_actual "$sock")"
      [[ $actual == 268435456 ]] && break
      sleep 0.2
      tries=$((tries + 1))
    done
    echo "actual-inflated $actual" >>"$bl_dir/inflate.out"
    echo "rss-inflated $(bl_rss_kib)" >>"$bl_dir/inflate.out"
    "$remote" --api-socket "$sock" resize --balloon 0 >"$bl_dir/deflate.out" 2>&1 && echo resized >>"$bl_dir/deflate.out"
    bl_type 'n=0; while [ $(awk "/MemTotal/{print \$2}" /proc/meminfo) -lt $t0 ] && [ $n -lt 600 ]; do sleep 0.2; n=$((n+1)); done; dd if=/dev/zero of=/tmp/again bs=1048576 count=320 2>/dev/null; s=$?; echo BL-DEFLATED-$(awk "/MemTotal/{print \$2}" /proc/meminfo)-$s-$(du -m /tmp/again | cut -f1)'
  }
  bl_final() {
    local tries=0 actual=""
    while ((tries < 50)); do
      actual="$(bl_actual "$sock")"
      [[ $actual == 536870912 ]] && break
      sleep 0.2
      tries=$((tries + 1))
    done
    echo "actual-deflated $actual" >>"$bl_dir/deflate.out"
    "$remote" --api-socket "$sock" info >"$bl_dir/info.json" 2>&1 || true
    bl_type 'rm -f /tmp/again; echo BL-DONE-$((40+2))'
  }
  # The guest fills what is free but 48 MiB through tmpfs (the VMM then holds those pages), frees it again.
  local fill='mkdir -p /tmp && mount -t tmpfs -o size=90% tmpfs /tmp; t0=$(awk "/MemTotal/{print \$2}" /proc/meminfo); n=$(($(awk "/MemFree/{print \$2}" /proc/meminfo)/1024-48)); dd if=/dev/zero of=/tmp/fill bs=1048576 count=$n 2>/dev/null; rm -f /tmp/fill; echo BL-TOUCHED-$t0-$n'
  local steps="L2-INIT-READY|||$fill
  BL-TOUCHED-([0-9]+-[0-9]+)|||!bl_inflate
  BL-INFLATED-([0-9]+)|||!bl_measure
  BL-DEFLATED-([0-9]+-[0-9]+-[0-9]+)|||!bl_final
  BL-DONE-([0-9]+)|||poweroff -f"
  run_l2 "balloon-$label" "$steps" "$binary" --api-socket "path=$sock" "${base[@]}" --cpus boot=1 --memory "$memory" \
    --balloon size=0,deflate_on_oom=off,free_page_reporting=off --cmdline "$append"
  local total0="${captures[0]%%-*}" filled="${captures[0]#*-}" inflated="${captures[1]:-0}"
  local rss_before rss_inflated actual_before actual_inflated actual_deflated
  rss_before="$(awk '/^rss-before/{print $2}' "$bl_dir/inflate.out" 2>/dev/null)"
  rss_inflated="$(awk '/^rss-inflated/{print $2}' "$bl_dir/inflate.out" 2>/dev/null)"
  actual_before="$(awk '/^actual-before/{print $2}' "$bl_dir/inflate.out" 2>/dev/null)"
  actual_inflated="$(awk '/^actual-inflated/{print $2}' "$bl_dir/inflate.out" 2>/dev/null)"
  actual_deflated="$(awk '/^actual-deflated/{print $2}' "$bl_dir/deflate.out" 2>/dev/null)"
  local deflated_total=0 dd_status=1 dd_mib=0
  IFS=- read -r deflated_total dd_status dd_mib <<<"${captures[2]:-0-1-0}"
  echo "ch-e2e: [balloon-$label] inflate: $(tr '\n' ' ' <"$bl_dir/inflate.out" 2>/dev/null); deflate: $(tr '\n' ' ' <"$bl_dir/deflate.out" 2>/dev/null)"
  if ((steps_done == 5)) && ((vmm_status == 0)) && grep -q resized "$bl_dir/inflate.out" && grep -q resized "$bl_dir/deflate.out" &&
    ((total0 - inflated >= 262144 - 2048)) && [[ $actual_before == 536870912 && $actual_inflated == 268435456 && $actual_deflated == 536870912 ]] &&
    ((${rss_before:-0} - ${rss_inflated:-0} >= 131072)) && ((deflated_total >= total0)) && ((dd_status == 0 && dd_mib >= 320)) &&
    grep -o '"balloon": *{[^}]*' "$bl_dir/info.json" | grep -q '"size": *0[,}]*'; then
    pass "balloon ($label memory, --memory $memory): guest with --balloon size=0 filled $filled MiB and freed it; ch-remote resize --balloon 256M: guest MemTotal $total0 -> $inflated kB, vm.info memory_actual_size 536870912 -> $actual_inflated, VMM RSS $rss_before -> $rss_inflated kB; resize --balloon 0: MemTotal back to $deflated_total kB, memory_actual_size $actual_deflated, the guest wrote $dd_mib MiB to tmpfs (more than it had while inflated); VMM status 0"
  else
    fail "balloon ($label memory): steps $steps_done/5, VMM status $vmm_status, captures [${captures[*]:-}], RSS $rss_before -> $rss_inflated kB, memory_actual_size $actual_before -> $actual_inflated -> $actual_deflated, info: $(grep -o '"balloon":[^}]*}' "$bl_dir/info.json" 2>/dev/null)"
  fi
  rm -rf "$bl_dir"
}
