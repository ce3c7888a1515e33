# shellcheck shell=bash disable=SC2016  # the quoted lines are typed into the guest's shell
# A step shared by the memhotplug and virtiomem scenarios of ch-e2e.sh (sourced inside level 1,
# where run_l2's $pid, $binary and $remote are set).

# restore_in_new_vmm DIR SOCK LINE MARKER: pauses the VM behind the API socket SOCK, snapshots
# it into DIR/snap, SIGKILLs the VMM run_l2 started ($pid is its timeout wrapper), restores it in
# a new VMM (--restore ...,resume=on) whose serial console is a FIFO here, types LINE into the
# guest, waits up to 300 s for MARKER on the console, then powers the guest off. Leaves
# DIR/snap.out ("snapshotted" once done), DIR/restored.out (the console), DIR/restored.err,
# DIR/restored-info.json (the new VMM's vm.info) and sets restored_status (the new VMM's status).
restore_in_new_vmm() {
  local dir="$1" sock="$2" line="$3" marker="$4" vmm w restored deadline
  mkdir -p "$dir/snap"
  { timeout 120 "$remote" --api-socket "$sock" pause && timeout 600 "$remote" --api-socket "$sock" snapshot "file://$dir/snap" &&
    echo snapshotted; } >"$dir/snap.out" 2>&1 || true
  vmm="$(pgrep -P "$pid" | head -n 1 || true)"
  kill -9 "${vmm:-$pid}" 2>/dev/null || true
  mkfifo "$dir/in"
  setsid "$binary" -v --api-socket "path=$dir/restored.sock" --restore "source_url=file://$dir/snap,resume=on" \
    <"$dir/in" >"$dir/restored.out" 2>"$dir/restored.err" &
  restored=$!
  exec {w}>"$dir/in"
  deadline=$((SECONDS + 120))
  while ((SECONDS < deadline)) && [[ ! -S $dir/restored.sock ]]; do sleep 1; done
  sleep 2
  "$remote" --api-socket "$dir/restored.sock" info >"$dir/restored-info.json" 2>&1 || true
  # A restored VMM that died closes the FIFO: a write then raises SIGPIPE, which must end only
  # the subshell, not the scenario (the failure is reported from restored.err).
  (printf '%s\n' "$line" >&"$w") 2>/dev/null || true
  deadline=$((SECONDS + 300))
  while ((SECONDS < deadline)) && ! grep -qa "$marker" "$dir/restored.out"; do sleep 1; done
  (printf 'poweroff -f\n' >&"$w") 2>/dev/null || true
  deadline=$((SECONDS + 60))
  while ((SECONDS < deadline)) && kill -0 "$restored" 2>/dev/null; do sleep 1; done
  kill -9 "$restored" 2>/dev/null || true
  restored_status=0
  wait "$restored" || restored_status=$?
  exec {w}>&-
}
