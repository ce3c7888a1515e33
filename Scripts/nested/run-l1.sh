#!/usr/bin/env bash
# Runs a command inside a level-1 Linux machine that has working KVM (nested test bench,
# see Scripts/nested/README.md).
#
# Usage: Scripts/nested/run-l1.sh COMMAND [ARG...]
#
# Level 1 is Debian's kernel under QEMU TCG (`-cpu max` emulates AMD SVM, so kvm-amd
# loads there). It mounts this machine's root tree read-only over 9p and runs COMMAND in
# a chroot of it, in the current directory, so binaries built here run unchanged and can
# open /dev/kvm. A fresh temporary directory is shared writable at the same path
# ($CH_NESTED_WORK inside level 1) for results. Exported CH_* variables are passed on.
# The serial console is streamed to stdout (carriage returns and terminal control
# sequences stripped); the exit status is COMMAND's.
#
# Environment:
#   CH_NESTED_TIMEOUT   seconds before level 1 is killed (default 600); exit status 124
#   CH_NESTED_BOOT_TIMEOUT seconds level 1 may take to start the command before it is
#                       booted once more (default 300)
#   CH_NESTED_SILENCE_TIMEOUT seconds without console output, once the command runs,
#                       after which level 1 counts as frozen and is stopped (default 360)
#   CH_NESTED_LOCKUP_LIMIT seconds of a soft lockup level 1's kernel reports after which it
#                       counts as frozen too (default 90)
#   CH_NESTED_HEARTBEAT_TIMEOUT seconds after which a level 1 whose heartbeat (its init
#                       rewrites a file in the shared directory every 10 s) and console both
#                       stopped counts as frozen too (default 120)
#   CH_NESTED_L1_MEM    level-1 memory in MiB (default 3072)
#   CH_NESTED_L1_SMP    level-1 vCPUs (default 2)
#   CH_NESTED_L1_APPEND extra level-1 kernel parameters (e.g. loglevel=7)
#   CH_NESTED_KEEP=1    keep the shared directory (with serial.log) afterwards
#   CH_NESTED_INTERACTIVE=1  connect this terminal to level 1's console (QEMU's serial on
#                       stdio) instead of streaming it: what is typed reaches COMMAND
#   CH_NESTED_CACHE     cache directory (see prepare.sh)
# Exit status: COMMAND's, 124 on timeout, 125 when level 1 ended without a status, 126 when
# level 1 froze (no output for CH_NESTED_SILENCE_TIMEOUT seconds, or a soft lockup) and was stopped.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$here/common.sh"

if (($# == 0)) || [[ $1 == -h || $1 == --help ]]; then
  sed -n '2,30p' "$0"
  exit 2
fi
timeout_s="${CH_NESTED_TIMEOUT:-600}"

# Step 1: make sure the cache is complete (fast when it is).
"$here/prepare.sh" >&2
[[ -s $nested_vmlinuz && -s $nested_l1_initrd ]] || nested_die "prepare.sh did not produce the images"

# Step 2: the shared directory. Its path goes on the kernel command line and into
# QEMU's -virtfs option, so it must be free of spaces, commas and quotes.
work="$(mktemp -d "${TMPDIR:-/tmp}/ch-nested.XXXXXX")"
work="$(cd "$work" && pwd -P)"
[[ $work =~ ^[A-Za-z0-9_./-]+$ ]] || nested_die "unusable temporary directory '$work' (set TMPDIR to a plain path)"
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  if [[ ${CH_NESTED_KEEP:-0} == 1 ]]; then nested_log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# Step 3: the command as a script in the shared directory: level 1's init runs it in the
# chroot, with a clean environment plus this one's CH_* variables (CH_NESTED_CACHE
# resolved, since HOME is /root there). printf %q quotes every word for bash, so
# arguments and values arrive unchanged.
export CH_NESTED_CACHE
{
  printf '#!/bin/bash\n'
  while IFS= read -r name; do
    [[ $name == CH_NESTED_WORK ]] || printf 'export %s=%q\n' "$name" "${!name}"
  done < <(compgen -e | grep '^CH_' || true)
  printf 'cd %q 2>/dev/null || cd /\n' "$PWD"
  printf 'exec'
  printf ' %q' "$@"
  printf '\n'
} >"$work/cmd.sh"
chmod 755 "$work/cmd.sh"

# Step 4: boot level 1. The host tree is shared read-only (tag hostroot); multidevs=remap
# keeps inode numbers unique across the host's mounts. stdin is /dev/null: nothing is
# typed into level 1. --foreground keeps QEMU in our process group so that Ctrl-C
# reaches it; -k kills it if it ignores the first signal.
append="console=ttyS0 panic=-1 quiet ch_work=$work ch_script=$work/cmd.sh ${CH_NESTED_L1_APPEND:-}"
# shellcheck disable=SC2054  # commas separate QEMU sub-options, not array elements
qemu=(qemu-system-x86_64
  -accel tcg,thread=multi -cpu max -smp "${CH_NESTED_L1_SMP:-2}" -m "${CH_NESTED_L1_MEM:-3072}"
  -nographic -no-reboot -nic none
  -kernel "$nested_vmlinuz" -initrd "$nested_l1_initrd" -append "$append"
  -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"
  -virtfs "local,path=$work,mount_tag=chwork,security_model=none,multidevs=remap")

# Stream the serial console: strip carriage returns, keep a copy in serial.log, and note
# when level 1 is ready (its init prints CH-L1-START just before running the command).
start_ns="$(nested_now_ns)"
shopt -s extglob
# A level 1 that prints nothing for CH_NESTED_SILENCE_TIMEOUT seconds after starting the
# command has frozen (QEMU's TCG once stopped mid-run in CI with no output for 3000 s while
# every scenario's own stall detector prints within 120 s): it is stopped, and the exit
# status 126 tells the caller so (ch-e2e.sh then runs the scenarios that had not finished).
silence_timeout="${CH_NESTED_SILENCE_TIMEOUT:-360}"
# A level-1 kernel that reports a CPU stuck (soft lockup) for this long has frozen too, even
# though its watchdog keeps printing (seen: both level-1 CPUs stuck in a level-2 guest's vCPU
# threads, every other thread starved).
lockup_limit="${CH_NESTED_LOCKUP_LIMIT:-90}"
# Level 1's init rewrites $work/alive every 10 s while the command runs: a level 1 that has
# neither printed nor beaten for this long is frozen (its user space no longer runs), which
# tells a freeze within two minutes instead of CH_NESTED_SILENCE_TIMEOUT's six.
heartbeat_timeout="${CH_NESTED_HEARTBEAT_TIMEOUT:-120}"
# Stops level 1 as frozen, once, saying why ($1).
stop_frozen() {
  [[ -e $work/silent ]] && return
  : >"$work/silent"
  nested_log "$1: it froze; stopping it"
  kill "$(cat "$work/qemu.pid" 2>/dev/null)" 2>/dev/null
}
stream() {
  local line read_status quiet_since=$SECONDS beat_age quiet pending=""
  while :; do
    line="" read_status=0
    IFS= read -r -t 15 line || read_status=$?
    if ((read_status > 128)); then
      # Timed out: keep any partial line for the rest of it, then stop a level 1 that runs
      # the command and has been silent too long.
      [[ -z $line ]] || { pending+="$line"; quiet_since=$SECONDS; }
      quiet=$((SECONDS - quiet_since))
      if [[ -e $work/ready ]]; then
        if ((quiet >= silence_timeout)); then
          stop_frozen "level 1 printed nothing for $quiet s (CH_NESTED_SILENCE_TIMEOUT $silence_timeout)"
        elif [[ -e $work/alive ]] && beat_age=$(($(date +%s) - $(stat -c %Y "$work/alive" 2>/dev/null || echo 0))) &&
          ((quiet >= heartbeat_timeout && beat_age >= heartbeat_timeout)); then
          stop_frozen "level 1 printed nothing and its heartbeat stopped for $quiet s (CH_NESTED_HEARTBEAT_TIMEOUT $heartbeat_timeout)"
        fi
      fi
      continue
    fi
    quiet_since=$SECONDS
    line="$pending$line" pending=""
    ((read_status == 0)) || [[ -n $line ]] || break
    line="${line//$'\r'/}"
    # Drop terminal control sequences (SeaBIOS and QEMU reset/clear the screen with
    # ESC c and CSI sequences, which would otherwise prefix the next console line).
    line="${line//$'\e'c/}"
    line="${line//$'\e'\[*([0-9;?])[A-Za-z]/}"
    printf '%s\n' "$line"
    printf '%s\n' "$line" >>"$work/serial.log"
    if [[ $line =~ soft\ lockup\ -\ CPU#[0-9]+\ stuck\ for\ ([0-9]+)s ]] && ((BASH_REMATCH[1] >= lockup_limit)); then
      stop_frozen "level 1's kernel reports a CPU stuck for ${BASH_REMATCH[1]} s"
    fi
    if [[ $line == *CH-L1-START* ]]; then
      : >"$work/ready"
      nested_log "level 1 ready after $(nested_secs "$start_ns" "$(nested_now_ns)") s (QEMU start to command start)"
    fi
    ((read_status == 0)) || break
  done
}
# A level 1 that has not started the command after CH_NESTED_BOOT_TIMEOUT seconds (it
# normally does in 5-60 s) is stopped and booted once more: a CI run once saw level 1 print
# nothing after SeaBIOS for its whole 2400 s.
boot_timeout="${CH_NESTED_BOOT_TIMEOUT:-300}"
set +e
if [[ ${CH_NESTED_INTERACTIVE:-0} == 1 ]]; then
  # QEMU puts this terminal in raw mode itself and restores it; Ctrl-A x quits QEMU.
  timeout --foreground -k 10 "$timeout_s" "${qemu[@]}"
  qemu_rc=$?
else
  for attempt in 1 2; do
    rm -f "$work/ready" "$work/boot-stalled" "$work/qemu.pid" "$work/alive"
    (
      sleep "$boot_timeout"
      if [[ ! -e $work/ready ]]; then
        : >"$work/boot-stalled"
        kill "$(cat "$work/qemu.pid" 2>/dev/null)" 2>/dev/null
      fi
      # Away from this script's output: killing the subshell leaves its sleep running, which
      # would otherwise hold the caller's output pipe (and the nested lock) until it ends.
    ) </dev/null >/dev/null 2>&1 &
    watchdog=$!
    timeout --foreground -k 10 "$timeout_s" "${qemu[@]}" -pidfile "$work/qemu.pid" </dev/null 2>&1 | stream
    qemu_rc="${PIPESTATUS[0]}"
    pkill -P "$watchdog" sleep 2>/dev/null
    kill "$watchdog" 2>/dev/null
    wait "$watchdog" 2>/dev/null
    [[ -e $work/boot-stalled ]] || break
    nested_log "level 1 did not start the command within $boot_timeout s (attempt $attempt)$( ((attempt == 1)) && echo '; booting it again')"
  done
fi
set -e
total="$(nested_secs "$start_ns" "$(nested_now_ns)")"

# Step 5: the exit status, as level 1's init wrote it into the shared directory.
if [[ -s $work/status ]]; then
  rc="$(tr -dc '0-9' <"$work/status")"
  nested_log "command exited with status $rc; level 1 ran ${total} s"
  exit "${rc:-125}"
fi
if [[ -e $work/silent ]]; then
  nested_log "level 1 froze (silent with no heartbeat, or a CPU stuck) and was stopped after ${total} s"
  exit 126
fi
if ((qemu_rc == 124 || qemu_rc == 137)); then
  nested_log "timed out after $timeout_s s (CH_NESTED_TIMEOUT)"
  exit 124
fi
nested_log "level 1 ended without a status (QEMU exit status $qemu_rc) after ${total} s"
exit 125
