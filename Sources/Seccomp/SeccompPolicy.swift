// The allow-lists: which system calls each kind of VMM thread may make. Found by running the
// VMM under `strace -f` through its scenarios (tiny guests on this host's /dev/kvm, the REST
// API lifecycle, raw and qcow2 disks with O_DIRECT, consoles on a pty and a terminal, the
// nested Linux boots) and grouping the calls by thread name; see Sources/Seccomp/README.md.
import CLinux

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The system calls each ``ThreadKind`` may make.
///
/// Every thread gets the ``runtime`` calls that the Swift runtime, glibc and the SIGSYS
/// report need; each kind adds its own. Because threads start under the VMM thread's
/// filter and keep it, the ``ThreadKind/vmm`` list is the union of every list plus the
/// calls only the VMM thread makes (opening images, creating VMs and threads).
public enum SeccompPolicy {
    /// The rules for `kind`, one per system call, sorted by name.
    public static func rules(for kind: ThreadKind) -> [SyscallRule] {
        switch kind {
        case .vmm:
            return SyscallRule.merge(runtime + vmmOnly + apiSetup + threadStart + vcpu + api + eventLoop + signalHandler + watcher)
        case .vcpu: return SyscallRule.merge(runtime + vcpu)
        case .api: return SyscallRule.merge(runtime + api)
        case .eventLoop: return SyscallRule.merge(runtime + eventLoop)
        case .signalHandler: return SyscallRule.merge(runtime + signalHandler)
        case .watcher: return SyscallRule.merge(runtime + watcher)
        }
    }

    /// The names of the system calls `kind` may make, sorted (calls its filter answers
    /// with an error, such as `clone3`, are not counted).
    public static func allowedSyscalls(for kind: ThreadKind) -> [String] {
        rules(for: kind).filter(\.allows).map(\.name)
    }

    // MARK: - Every thread

    /// Memory, locks, time, signals and thread exit for the Swift runtime and glibc; `write`
    /// and `exit_group` for logging and the SIGSYS report; `close` for objects whose last
    /// reference a thread drops. No mapping may be made executable.
    static var runtime: [SyscallRule] {
        let noExec = ArgumentCondition.clear(2, UInt64(PROT_EXEC))
        return [
            .allow("brk"), .allow("mmap", when: noExec), .allow("mprotect", when: noExec), .allow("munmap"),
            .allow("mremap"), .allow("madvise"),
            .allow("futex"), .allow("sched_yield"), .allow("nanosleep"), .allow("clock_nanosleep"),
            .allow("clock_gettime"), .allow("getrandom"),
            .allow("rt_sigprocmask"), .allow("rt_sigreturn"), .allow("restart_syscall"),
            .allow("gettid"), .allow("getpid"),
            // Only to this process's own threads: kicking a vCPU, abort().
            .allow("tgkill", when: .equals(0, UInt64(getpid()))),
            .allow("exit"), .allow("exit_group"), .allow("write"), .allow("close"),
        ]
    }

    /// Starting threads, and what a new thread does before it installs a filter of its own:
    /// threads only (`clone` with `CLONE_THREAD`; `clone3`, whose flags sit in memory a filter
    /// cannot read, fails with `ENOSYS` so that glibc falls back to `clone`), their name,
    /// and libdispatch's worker threads resetting their priority.
    static var threadStart: [SyscallRule] {
        [
            .allow("clone", when: .set(0, cloneThread)), .fail("clone3", errno: ENOSYS),
            .allow("set_robust_list"), .allow("rseq"),
            .allow("prctl", when: .equals(0, PrctlOption.setName)),
            .allow("setpriority", when: .equals(0, 0)),
        ]
    }

    /// `CLONE_THREAD` (linux/sched.h).
    static let cloneThread: UInt64 = 0x0001_0000

    // MARK: - Per kind

    /// `KVM_RUN`, the vCPU state it may read or write, and what the device emulation its
    /// exits reach does: guest writes to a virtio-pci BAR or an MSI-X table move ioeventfds
    /// and reprogram interrupt routes; the serial port writes to its host side.
    static var vcpu: [SyscallRule] {
        [
            .ioctl(Ioctl.vcpuRuntime + Ioctl.deviceFromVCPU),
            // A guest that moves a virtio BAR: new notify eventfds, registered with the event loop.
            .allow("eventfd2"), .allow("epoll_ctl"),
            // The serial port's output to its socket client (`--serial socket=`), and the timer
            // that drains its coalesced transmit writes, started by the byte that registers them.
            .allow("sendmsg"), .allow("timerfd_settime"),
            // A vhost-user device (virtio-fs) started or reset by the driver's status write: the
            // requests to its back-end and the replies, waited for with a timeout.
            .allow("recvmsg"), .allow("poll"),
            // A virtio-blk reset by the driver waits for the disk's io_uring requests in flight.
            .allow("io_uring_enter"),
        ]
    }

    /// The device event loop: epoll, eventfds and timers, positional and vectored disk I/O
    /// (raw and qcow2 images, O_DIRECT), flushes and discards (virtio-pmem's flush is an
    /// `fsync` of its file here too), host input, tap frames.
    static var eventLoop: [SyscallRule] {
        [
            .allow("epoll_wait"), .allow("epoll_pwait"), .allow("epoll_ctl"),
            .allow("read"), .allow("readv"), .allow("writev"),
            .allow("pread64"), .allow("pwrite64"), .allow("preadv"), .allow("pwritev"), .allow("preadv2"), .allow("pwritev2"),
            .allow("fsync"), .allow("fdatasync"), .allow("fallocate"), .allow("ftruncate"), .allow("lseek"), .allow("fstat"),
            .allow("timerfd_settime"),
            // virtio-blk over io_uring: submitting requests and waiting for completions.
            .allow("io_uring_enter"),
            // A console or serial port on a socket: accepting its client, writing to it, and the
            // retry timer of the client's input pump.
            .allow("accept4"), .allow("sendmsg"), .allow("timerfd_create"),
            // virtio-vsock: host clients accepted at its socket, guest connections to `socket_<port>`,
            // bytes both ways, half-closes.
            .allow("socket", argument: 0, oneOf: [UInt64(AF_UNIX)]), .allow("connect"), .allow("recvmsg"), .allow("shutdown"),
            // A vhost-user back-end that hung up: connecting again (or accepting it) and the
            // requests and replies that hand its queues over again, waited for with a timeout.
            .allow("poll"),
            .ioctl(Ioctl.eventLoop),
        ]
    }

    /// The REST API's event loop thread (`ch-api`): epoll (its eventfd and wake-ups),
    /// accepting connections, and moving bytes and passed descriptors on them. The sockets,
    /// the epoll instance and the eventfds are made on the thread that starts the server.
    static var api: [SyscallRule] {
        [
            .allow("epoll_wait"), .allow("epoll_pwait"), .allow("epoll_ctl"), .allow("read"),
            .allow("accept4"), .allow("recvmsg"), .allow("sendmsg"),
        ]
    }

    /// What the VMM thread does to start and stop the API server: bind or adopt the socket,
    /// probe a path for a live server, remove the socket file.
    static var apiSetup: [SyscallRule] {
        [.allow("bind"), .allow("listen"), .allow("connect"), .allow("getsockopt"), .allow("shutdown")]
    }

    /// The signalfd reader.
    static var signalHandler: [SyscallRule] {
        [.allow("epoll_wait"), .allow("epoll_pwait"), .allow("read")]
    }

    /// The VM watcher: reads its eventfd.
    static var watcher: [SyscallRule] {
        [.allow("read")]
    }

    /// What only the VMM thread does: open images, devices and sockets; create the VM and its
    /// vCPUs; set terminals up; install the other threads' filters.
    static var vmmOnly: [SyscallRule] {
        [
            .allow("openat"), .allow("newfstatat"), .allow("statx"), .allow("readlink"), .allow("getcwd"), .allow("unlink"),
            // Snapshots: state.json's atomic rename; restores: the userfaultfd and its handler's poll.
            .allow("rename"), .allow("renameat"), .allow("userfaultfd"), .allow("ppoll"), .allow("poll"),
            .allow("fcntl"), .allow("dup"), .allow("dup3"), .allow("pipe2"), .allow("flock"),
            .allow("eventfd2"), .allow("epoll_create1"), .allow("signalfd4"), .allow("timerfd_create"),
            .allow("sched_getaffinity"), .allow("rt_sigaction"), .allow("sigaltstack"), .allow("prlimit64"),
            .allow("prctl", argument: 0, oneOf: [PrctlOption.setName, PrctlOption.getName, PrctlOption.setNoNewPrivs]),
            .allow("seccomp", argument: 0, oneOf: [SeccompOperation.setModeFilter, SeccompOperation.getActionAvail]),
            // --landlock: the VMM thread and the API worker make and enforce the VM's ruleset; the
            // API event loop and the signal thread drop all file access before their own filters go on.
            .allow("landlock_create_ruleset"), .allow("landlock_add_rule"), .allow("landlock_restrict_self"),
            .allow("socket", argument: 0, oneOf: [UInt64(AF_UNIX), UInt64(AF_INET), UInt64(AF_INET6)]),
            // Live migration over tcp: (TCP_NODELAY, SO_REUSEADDR, the bound port) and shared
            // guest memory in memory files.
            .allow("setsockopt"), .allow("getsockname"), .allow("sendto"), .allow("memfd_create"),
            // virtio-blk's io_uring rings (boot and hotplug): setup, the probe of its opcodes, the
            // completion eventfd's registration.
            .allow("io_uring_setup"), .allow("io_uring_register"),
            .ioctl(Ioctl.vmm),
        ]
    }
}

/// `prctl(2)` options (linux/prctl.h): thread names, and the no-new-privileges bit that
/// loading a filter sets.
enum PrctlOption {
    static let setName: UInt64 = 15
    static let getName: UInt64 = 16
    static let setNoNewPrivs: UInt64 = 38
}

/// `seccomp(2)` operations (linux/seccomp.h).
enum SeccompOperation {
    static let setModeFilter: UInt64 = 1
    static let getActionAvail: UInt64 = 2
}
