# shellcheck shell=bash
# The libvirt scenario of ch-e2e.sh, sourced by it inside level 1 (it uses its pass, fail,
# $l2_timeout, $nested_vmlinux and $nested_l2_initrd): libvirt's own Cloud Hypervisor driver
# (virtchd and virsh, built by Scripts/libvirt/build-libvirt.sh into
# $CH_LIBVIRT_CACHE) drives the cloud-hypervisor under test as a real client would.
#
# libvirt_scenario BINARY
#   starts virtchd (configuration and logs in a temporary directory, runtime under
#   /run/ch-libvirt, both writable in level 1) with a directory first on its PATH whose
#   `cloud-hypervisor` runs BINARY (virtchd runs `cloud-hypervisor --version` when it starts,
#   and `cloud-hypervisor --api-socket fd=N` for each domain);
#   defines Scripts/libvirt/domain.xml (the PVH vmlinux, the level-2 initramfs, console=hvc0,
#   2 vCPUs, 512 MiB, one raw virtio disk, a pty console), starts it (vm.create, vm.boot,
#   vm.info), checks `virsh dominfo` (running, 2 CPUs) and the VMM's vCPU threads (libvirt
#   finds them by their names, vcpu0 and vcpu1), reads the guest's console on the PTY that
#   vm.info reported (`virsh ttyconsole`) until the level-2 init marker, types a command
#   there and reads its answer, closes the PTY and opens it again (a second console client)
#   and does the same, suspends (vm.pause: dominfo "paused"), resumes (vm.resume:
#   "running"), destroys (SIGTERM to the VMM: "shut off", the process gone), and checks
#   that virtchd logged no error.

# Everything here runs under ch-e2e.sh's `set -euo pipefail`: commands that may fail are
# tested or end in `|| true`.

# libvirt_scenario_virsh ARG...: virsh against the system ch driver, bounded in time.
libvirt_scenario_virsh() {
  timeout -k 5 120 "$libvirt_prefix/bin/virsh" -q -c ch:///system "$@"
}

# libvirt_scenario_state DOMAIN: "State" and "CPU(s)" of `virsh dominfo`, as "state/cpus".
libvirt_scenario_state() {
  { libvirt_scenario_virsh dominfo "$1" 2>&1 || true; } | awk -F': *' '/^State:/ { s = $2 } /^CPU\(s\):/ { c = $2 } END { printf "%s/%s", s, c }'
}

# libvirt_console_open PTY LOG: opens the guest's console PTY as a console client does (one
# descriptor held open, raw and without echo, as `virsh console` sets it: the line discipline
# must not send the guest's output back as input) and copies what arrives into LOG.
libvirt_console_open() {
  exec {libvirt_pty_fd}<>"$1" || return 1
  stty raw -echo <&"$libvirt_pty_fd" 2>/dev/null || true
  timeout "$l2_timeout" cat <&"$libvirt_pty_fd" >"$2" 2>/dev/null &
  libvirt_reader_pid=$!
}

# libvirt_console_close: the console client goes away (its last descriptor closes).
libvirt_console_close() {
  if [[ -n ${libvirt_reader_pid:-} ]]; then
    kill "$libvirt_reader_pid" 2>/dev/null || true
    wait "$libvirt_reader_pid" 2>/dev/null || true
  fi
  if [[ -n ${libvirt_pty_fd:-} ]]; then exec {libvirt_pty_fd}>&-; fi
  libvirt_reader_pid="" libvirt_pty_fd=""
}

# libvirt_console_ask LINE ANSWER LOG: types LINE on the open console; true once ANSWER
# (which the echo of LINE cannot contain) shows in LOG, within 60 s.
libvirt_console_ask() {
  local i
  printf '%s\n' "$1" >&"$libvirt_pty_fd" || return 1
  for ((i = 0; i < 60; i++)); do
    grep -aq "$2" "$3" && return 0
    sleep 1
  done
  return 1
}

libvirt_scenario() {
  local binary="$1"
  local cache="${CH_LIBVIRT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cloud-hypervisor-swift/libvirt}"
  local here_lv
  here_lv="$(cd "$(dirname "${BASH_SOURCE[0]}")/../libvirt" && pwd)"
  libvirt_prefix="$cache/prefix"
  if [[ ! -x $libvirt_prefix/sbin/virtchd || ! -x $libvirt_prefix/bin/virsh ]]; then
    fail "libvirt: no libvirt build in $cache (run Scripts/libvirt/build-libvirt.sh on the host first)"
    return
  fi
  binary="$(readlink -f "$binary")"
  local dir name=ch-e2e-libvirt start_ns
  dir="$(mktemp -d)"
  # libvirt's clients find the system daemon's socket under its runstatedir, which
  # build-libvirt.sh set to /run/ch-libvirt/run; the pid file goes there too.
  rm -rf /run/ch-libvirt
  mkdir -p "$dir/bin" /run/ch-libvirt/run
  # virtchd starts the VMM with stdin, stdout and stderr on /dev/null: the wrapper keeps the
  # VMM's messages (the process is BINARY itself after exec).
  printf '#!/bin/sh\nexec %q "$@" 2>>%q\n' "$binary" "$dir/vmm.log" >"$dir/bin/cloud-hypervisor"
  chmod 755 "$dir/bin/cloud-hypervisor"
  cat >"$dir/virtchd.conf" <<EOF
log_filters="1:ch 3:util 3:rpc 3:conf 3:object 3:event 3:remote 3:access"
log_outputs="1:file:$dir/virtchd.log"
EOF
  truncate -s 16M "$dir/disk.raw"
  local cmdline="console=hvc0 panic=-1 ${CH_NESTED_L2_APPEND:-}"
  cmdline="${cmdline%"${cmdline##*[! ]}"}"
  sed -e "s|@NAME@|$name|" -e "s|@KERNEL@|$nested_vmlinux|" -e "s|@INITRD@|$nested_l2_initrd|" \
    -e "s|@CMDLINE@|$cmdline|" -e "s|@DISK@|$dir/disk.raw|" "$here_lv/domain.xml" >"$dir/domain.xml"

  # virtchd must not read the terminal: with no body to send, libcurl's PUT reads stdin.
  PATH="$dir/bin:$PATH" "$libvirt_prefix/sbin/virtchd" --config "$dir/virtchd.conf" </dev/null >"$dir/virtchd.out" 2>&1 &
  local daemon_pid=$! i
  for ((i = 0; i < 300; i++)); do
    [[ -S /run/ch-libvirt/run/libvirt/virtchd-sock ]] && break
    kill -0 "$daemon_pid" 2>/dev/null || break
    sleep 0.2
  done
  local problem="" state pty="" vmm_pid="" vcpus="" ready_s="" answer=""
  libvirt_reader_pid="" libvirt_pty_fd=""
  if ! libvirt_scenario_virsh uri >/dev/null 2>"$dir/virsh.err"; then
    problem="virtchd did not come up: $(tr '\n' ' ' <"$dir/virsh.err") $(grep -h ' error : ' "$dir/virtchd.log" "$dir/virtchd.out" 2>/dev/null | tail -n 3 | tr '\n' ' ')"
  elif ! libvirt_scenario_virsh define "$dir/domain.xml" >/dev/null 2>"$dir/virsh.err"; then
    problem="virsh define failed: $(tr '\n' ' ' <"$dir/virsh.err")"
  else
    start_ns="$(nested_now_ns)"
    echo "ch-e2e: [libvirt] virsh start $name (virtchd runs $binary)"
    if ! libvirt_scenario_virsh start "$name" >/dev/null 2>"$dir/virsh.err"; then
      problem="virsh start failed: $(tr '\n' ' ' <"$dir/virsh.err")"
    else
      # The domain's id is the VMM's pid.
      vmm_pid="$(libvirt_scenario_virsh domid "$name" 2>/dev/null | tr -d ' ' || true)"
    fi
  fi
  if [[ -z $problem ]]; then
    pty="$(libvirt_scenario_virsh ttyconsole "$name" 2>/dev/null || true)"
    if [[ -c $pty ]]; then
      libvirt_console_open "$pty" "$dir/console.log" || problem="cannot open the console PTY $pty"
    else
      problem="no console PTY: virsh ttyconsole said '$pty' (libvirt takes it from vm.info's config.console.file)"
    fi
  fi
  if [[ -z $problem ]]; then
    state="$(libvirt_scenario_state "$name")"
    [[ $state == running/2 ]] || problem="dominfo after start says '$state' (running/2 expected)"
  fi
  if [[ -z $problem ]]; then
    # libvirt pins and reports vCPUs by the VMM's thread names vcpu<N> (/proc/PID/task/*/comm).
    vcpus="$(cat /proc/"$vmm_pid"/task/*/comm 2>/dev/null | grep -c '^vcpu[0-9]' || true)"
    local deadline=$((SECONDS + l2_timeout))
    while ((SECONDS < deadline)) && ! grep -aq L2-INIT-READY "$dir/console.log"; do
      kill -0 "$libvirt_reader_pid" 2>/dev/null || break
      sleep 1
    done
    if grep -aq L2-INIT-READY "$dir/console.log"; then
      ready_s="$(nested_secs "$start_ns" "$(nested_now_ns)")"
      # shellcheck disable=SC2016  # typed into the guest's shell
      libvirt_console_ask 'echo CH-LIBVIRT-$((6*7))' CH-LIBVIRT-42 "$dir/console.log" && answer=42
      if [[ $answer == 42 ]]; then
        # A second console client, as when `virsh console` is left and entered again: the
        # first one closes the terminal side (the VMM's end sees a hang-up), a new one opens it.
        libvirt_console_close
        libvirt_console_open "$pty" "$dir/console2.log" || true
        # shellcheck disable=SC2016  # typed into the guest's shell
        libvirt_console_ask 'echo CH-LIBVIRT-$((6*8))' CH-LIBVIRT-48 "$dir/console2.log" && answer=48
        cat "$dir/console2.log" >>"$dir/console.log" || true
      fi
    fi
    sed -e 's/\r//g' -e 's/^/libvirt| /' "$dir/console.log"
    if [[ -z $ready_s ]]; then
      problem="no L2-INIT-READY on the console PTY $pty within ${l2_timeout}s (VMM: $(tail -n 3 "$dir/vmm.log" 2>/dev/null | tr '\n' ' '))"
    elif [[ -z $answer ]]; then
      problem="a command typed on the console PTY got no answer within 60 s (the guest's output did arrive there)"
    elif [[ $answer != 48 ]]; then
      problem="after the first console client closed the PTY and a second one opened it, a typed command got no answer within 60 s: the VMM stopped reading console input when the terminal side was hung up"
    elif ((vcpus != 2)); then
      problem="the VMM (pid $vmm_pid) has $vcpus threads named vcpu<N> (2 expected: libvirt looks vCPUs up by these names)"
    fi
  fi
  if [[ -z $problem ]]; then
    if ! libvirt_scenario_virsh suspend "$name" >/dev/null 2>"$dir/virsh.err"; then
      problem="virsh suspend failed: $(tr '\n' ' ' <"$dir/virsh.err")"
    elif state="$(libvirt_scenario_state "$name")" && [[ $state != paused/2 ]]; then
      problem="dominfo after suspend says '$state' (paused expected)"
    elif ! libvirt_scenario_virsh resume "$name" >/dev/null 2>"$dir/virsh.err"; then
      problem="virsh resume failed: $(tr '\n' ' ' <"$dir/virsh.err")"
    elif state="$(libvirt_scenario_state "$name")" && [[ $state != running/2 ]]; then
      problem="dominfo after resume says '$state' (running expected)"
    fi
  fi
  # destroy always runs when the domain was started, so that no VMM outlives the scenario.
  if [[ -n $vmm_pid ]] || [[ -z $problem ]]; then
    if ! libvirt_scenario_virsh destroy "$name" >/dev/null 2>"$dir/virsh.err"; then
      [[ -n $problem ]] || problem="virsh destroy failed: $(tr '\n' ' ' <"$dir/virsh.err")"
    elif [[ -z $problem ]] && libvirt_scenario_virsh list --all --name 2>/dev/null | grep -qx "$name" &&
      state="$(libvirt_scenario_state "$name")" && [[ $state != "shut off/2" ]]; then
      # libvirt 9.0 forgets a defined domain when it is destroyed (virCHDomainRemoveInactive
      # removes persistent domains): gone from the list counts as shut off too.
      problem="dominfo after destroy says '$state' (shut off expected)"
    elif [[ -n $vmm_pid ]] && kill -0 "$vmm_pid" 2>/dev/null && [[ -z $problem ]]; then
      problem="the VMM (pid $vmm_pid) still runs after virsh destroy"
    fi
  fi
  if libvirt_scenario_virsh list --all --name 2>/dev/null | grep -qx "$name"; then
    libvirt_scenario_virsh undefine "$name" >/dev/null 2>&1 || true
  fi
  libvirt_console_close
  kill "$daemon_pid" 2>/dev/null || true
  wait "$daemon_pid" 2>/dev/null || true
  local errors
  # `virsh dominfo` asks for things libvirt 9.0's ch driver does not implement (OS type,
  # persistence, autostart, managed save, security model, messages): those errors are
  # libvirt's own and are left out.
  errors="$(grep -a ' error : ' "$dir/virtchd.log" 2>/dev/null | grep -v 'this function is not supported by the connection driver' || true)"
  if grep -aq 'Mismatch in the number of cpus' "$dir/virtchd.log" 2>/dev/null && [[ -z $problem ]]; then
    problem="virtchd found no vCPU threads right after vm.boot ($(grep -a -m1 -o 'Mismatch in the number of cpus.*' "$dir/virtchd.log")): libvirt reads /proc/PID/task/*/comm for vcpu<N> as soon as vm.boot answers"
  fi
  if [[ -n $errors ]]; then
    echo "ch-e2e: [libvirt] virtchd logged errors:"
    printf '%s\n' "$errors" | sed 's/^/libvirt-log| /'
    [[ -n $problem ]] || problem="virtchd logged $(printf '%s\n' "$errors" | wc -l) error line(s), the first: $(printf '%s\n' "$errors" | head -n 1)"
  fi
  if [[ -s $dir/vmm.log ]]; then sed 's/^/libvirt-vmm| /' "$dir/vmm.log"; fi
  if [[ -z $problem ]]; then
    pass "libvirt: virtchd (libvirt $(cat "$cache/version" 2>/dev/null)) defined and started the domain (vm.create, vm.boot, vm.info), dominfo running with 2 CPUs, vCPU threads vcpu0/vcpu1 found, init's marker ${ready_s}s after virsh start on the console PTY $pty, typed commands answered there before and after a console client reconnected, suspend (paused), resume (running), destroy (shut off, VMM gone), no error in virtchd's log"
  else
    fail "libvirt: $problem"
  fi
  rm -rf "$dir" /run/ch-libvirt
}
