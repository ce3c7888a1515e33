// seccomp-probe: installs one thread kind's filter on a new thread and makes a system call
// there, for the Seccomp tests (a filter can never be removed, so tests never install one in
// their own process).
//
// Usage: seccomp-probe <kind> <true|log> <call>
//        seccomp-probe --list   (prints every kind's allow-list)
//   kind: vmm, vcpu, api, event-loop, signal-handler, watcher
//   call: none, socket (socket(AF_INET, SOCK_STREAM)), tty-ioctl (ioctl(0, TIOCGWINSZ)),
//         kvm-ioctl (ioctl(-1, KVM_RUN): allowed by the vCPU list, fails with EBADF),
//         thread (start and join a thread), fork (fork and reap a child)
// Prints `thread <state>` (the filtered thread, read from the main thread), `main <state>`,
// then `survived <call> = <result>` when the call came back. Exit status 0, 2 on bad usage,
// 1 when the filter could not be installed, 159 when the SIGSYS report ended the process.
import CLinux
import HostSystem
import Seccomp
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Writes `line` to standard output at once (no buffering: the process may end abruptly).
func say(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
}

let arguments = CommandLine.arguments
if arguments.count == 2 && arguments[1] == "--list" {
    // Each kind's allow-list: `<kind>: <count> allowed: <rule>; <rule>; ...`.
    for kind in ThreadKind.allCases {
        let rules = SeccompPolicy.rules(for: kind)
        say("\(kind): \(Seccomp.allowedSyscallCount(for: kind)) allowed: " + rules.map(\.description).joined(separator: "; "))
    }
    exit(0)
}
guard arguments.count == 4, let kind = ThreadKind(rawValue: arguments[1]), let action = SeccompAction(rawValue: arguments[2]),
      ["none", "socket", "tty-ioctl", "kvm-ioctl", "thread", "fork"].contains(arguments[3]) else {
    say("usage: seccomp-probe <\(ThreadKind.allCases.map(\.rawValue).joined(separator: "|"))> <true|log> <none|socket|tty-ioctl|kvm-ioctl|thread|fork>")
    exit(2)
}
let call = arguments[3]

/// 0 waiting, a thread id once installed, -1 when installing failed.
final class Handshake: Sendable {
    let tid = Atomic<Int32>(0)
    let go = Atomic<Bool>(false)
}
let handshake = Handshake()

let thread = try HostThread(name: "probe-\(kind)") {
    do {
        try Seccomp.install(for: kind, action: action)
    } catch {
        say("install failed: \(error)")
        handshake.tid.store(-1, ordering: .releasing)
        return
    }
    handshake.tid.store(clinux_gettid(), ordering: .releasing)
    while !handshake.go.load(ordering: .acquiring) { sched_yield() }
    let result: Int32
    switch call {
    case "socket": result = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    case "tty-ioctl":
        var size = winsize()
        result = clinux_ioctl_ptr(0, UInt(TIOCGWINSZ), &size)
    case "kvm-ioctl": result = clinux_ioctl_val(-1, IOCTL_KVM_RUN, 0)
    case "thread":
        // pthread_create: clone3, or clone with CLONE_THREAD when clone3 answers ENOSYS.
        let inner = try? HostThread(name: "probe-inner") {}
        inner?.join()
        result = inner == nil ? -1 : 0
    case "fork":
        let child = fork()
        if child == 0 { _exit(0) }
        if child > 0 { waitpid(child, nil, 0) }
        result = child > 0 ? 0 : -1
    default: result = 0
    }
    say("survived \(call) = \(result)")
}

var tid: Int32 = 0
while tid == 0 {
    tid = handshake.tid.load(ordering: .acquiring)
    if tid == 0 { sched_yield() }
}
guard tid > 0 else { thread.join(); exit(1) }
say("thread \(ThreadSeccompState.read(process: getpid(), thread: tid).map(\.description) ?? "unreadable")")
say("main \(ThreadSeccompState.read(process: getpid(), thread: clinux_gettid()).map(\.description) ?? "unreadable")")
handshake.go.store(true, ordering: .releasing)
thread.join()
exit(0)
