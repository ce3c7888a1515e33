import Foundation
import Seccomp
import Testing

/// The allow-lists and filter building, in this process (nothing is installed here: a filter
/// cannot be removed, so installing is tested in the probe process, see ProbeTests).
@Suite("Seccomp allow-lists and filters")
struct SeccompFilterTests {
    @Test("Every thread kind's filter builds, for both actions, and counts what it allows",
          arguments: ThreadKind.allCases)
    func everyKindBuilds(kind: ThreadKind) throws {
        for action in SeccompAction.allCases {
            let filter = try SeccompFilter(kind: kind, action: action)
            #expect(filter.list == kind.description)
            #expect(filter.allowedSyscallCount == Seccomp.allowedSyscallCount(for: kind))
        }
        let names = SeccompPolicy.allowedSyscalls(for: kind)
        #expect(names == names.sorted() && Set(names).count == names.count, "one rule per call, sorted")
        // What the SIGSYS report and any thread's exit need.
        for needed in ["write", "exit", "exit_group", "rt_sigreturn", "futex", "mmap", "munmap"] {
            #expect(names.contains(needed), "\(kind) allows \(needed)")
        }
    }

    @Test("The counts are in proportion: vCPU and helper threads small, the VMM thread the largest")
    func countsAreSane() {
        let count = Dictionary(uniqueKeysWithValues: ThreadKind.allCases.map { ($0, Seccomp.allowedSyscallCount(for: $0)) })
        #expect(count[.watcher]! < count[.signalHandler]!)
        #expect(count[.signalHandler]! <= count[.vcpu]!)
        #expect(count[.vcpu]! < count[.eventLoop]!)
        #expect(count[.signalHandler]! < count[.api]!)
        #expect(count[.api]! < count[.eventLoop]!)
        #expect(count[.eventLoop]! < count[.vmm]!)
        #expect(count[.vcpu]! <= 30, "Firecracker's vCPU filter allows 27 calls; this one \(count[.vcpu]!)")
        #expect(count[.vmm]! < 120)
    }

    @Test("The VMM list holds every other list: threads start under the VMM filter and keep it")
    func vmmListHoldsEveryList() {
        let vmm = Dictionary(uniqueKeysWithValues: SeccompPolicy.rules(for: .vmm).map { ($0.name, $0) })
        for kind in ThreadKind.allCases where kind != .vmm {
            for rule in SeccompPolicy.rules(for: kind) {
                guard let outer = vmm[rule.name] else {
                    Issue.record("\(kind) allows \(rule.name), the VMM filter does not")
                    continue
                }
                if let errno = rule.errno {
                    #expect(outer.errno == errno, "\(kind) fails \(rule.name) with \(errno), the VMM filter: \(outer)")
                    continue
                }
                if outer.isUnconditional { continue }
                #expect(!rule.isUnconditional, "\(kind) allows \(rule.name) unconditionally, the VMM filter only \(outer)")
                for alternative in rule.alternatives {
                    #expect(outer.alternatives.contains(alternative), "\(kind): \(rule.name) with \(alternative) is refused by the VMM filter")
                }
            }
        }
    }

    @Test("Argument tests: ioctl by request on vCPUs, no executable mappings anywhere, nothing spawns a process")
    func argumentTests() throws {
        let vcpu = Dictionary(uniqueKeysWithValues: SeccompPolicy.rules(for: .vcpu).map { ($0.name, $0) })
        let ioctl = try #require(vcpu["ioctl"])
        #expect(!ioctl.isUnconditional)
        #expect(ioctl.alternatives.contains([.lowHalfEquals(1, 0xAE80)]), "KVM_RUN is _IO(0xAE, 0x80)")
        #expect(!ioctl.alternatives.contains([.lowHalfEquals(1, 0x5413)]), "no terminal ioctls on a vCPU")
        for kind in ThreadKind.allCases {
            let rules = Dictionary(uniqueKeysWithValues: SeccompPolicy.rules(for: kind).map { ($0.name, $0) })
            #expect(rules["mmap"]?.alternatives == [[.clear(2, 0x4)]], "\(kind): mmap without PROT_EXEC")
            #expect(rules["mprotect"]?.alternatives == [[.clear(2, 0x4)]], "\(kind): mprotect without PROT_EXEC")
            for never in ["execve", "execveat", "fork", "vfork", "ptrace", "kill", "process_vm_writev", "init_module"] {
                #expect(rules[never] == nil, "\(kind) allows \(never)")
            }
            if kind == .vmm {
                // Threads, never processes: clone only with CLONE_THREAD, clone3 answered ENOSYS.
                #expect(rules["clone"]?.alternatives == [[.set(0, 0x1_0000)]], "\(kind): \(rules["clone"].map(\.description) ?? "no clone")")
                #expect(rules["clone3"] == .fail("clone3", errno: ENOSYS))
            } else {
                #expect(rules["clone"] == nil && rules["clone3"] == nil, "\(kind) starts threads")
            }
            if kind != .vmm { #expect(rules["openat"] == nil, "\(kind) opens files") }
        }
    }

    @Test("A name libseccomp does not know is refused with the name and the list")
    func unknownNames() {
        #expect(throws: SeccompError.unknownSyscall(name: "not_a_syscall", list: "test")) {
            try SeccompFilter(rules: [.allow("read"), .allow("not_a_syscall")], action: .trap, list: "test")
        }
        // A real system call, but of 32-bit x86 only: libseccomp answers with a pseudo number.
        #expect(throws: SeccompError.unknownSyscall(name: "socketcall", list: "test")) {
            try SeccompFilter(rules: [.allow("socketcall")], action: .log, list: "test")
        }
        let error = SeccompError.unknownSyscall(name: "not_a_syscall", list: "vcpu")
        #expect(error.description == "seccomp: the vcpu allow-list names system call 'not_a_syscall', which libseccomp does not know on this architecture")
        #expect(SeccompError.library(call: "seccomp_load", list: "api", errno: 22).description
            == "seccomp: seccomp_load failed for the api filter: Invalid argument (errno 22)")
    }

    @Test("Merging rules: an unconditional rule wins, argument tests add up without repeats, a failing rule wins over allowing ones")
    func merging() {
        let merged = SyscallRule.merge([
            .ioctl([1, 2]), .allow("read"), .ioctl([2, 3]), .allow("write", when: .equals(0, 1)), .allow("write"),
            .allow("clone3"), .fail("clone3", errno: 38),
        ])
        #expect(merged.map(\.name) == ["clone3", "ioctl", "read", "write"])
        #expect(merged[0] == .fail("clone3", errno: 38) && merged[0].description == "clone3 fails with errno 38")
        #expect(merged[1].alternatives == [[.lowHalfEquals(1, 1)], [.lowHalfEquals(1, 2)], [.lowHalfEquals(1, 3)]])
        #expect(merged[3].isUnconditional)
        #expect(merged[1].description == "ioctl if arg1 & 0xffffffff == 0x1 || arg1 & 0xffffffff == 0x2 || arg1 & 0xffffffff == 0x3")
        #expect(SyscallRule.allow("mmap", when: .clear(2, 4)).description == "mmap if arg2 & 0x4 == 0")
    }
}

/// Filters installed for real, in a child process (`seccomp-probe`): a thread installs one
/// kind's filter, the probe's main thread reads its /proc status, then the thread makes a call.
@Suite("Seccomp filters in a child process")
struct ProbeTests {
    struct Run {
        var status: Int32
        var killed: Bool
        var stdout: String
        var stderr: String
    }

    /// The probe sits next to the test bundle in the build folder.
    static var probe: String {
        let testBinary = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        return testBinary.deletingLastPathComponent().appendingPathComponent("seccomp-probe").path
    }

    static func run(_ kind: ThreadKind, _ action: String, _ call: String) throws -> Run {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: probe)
        process.arguments = [kind.rawValue, action, call]
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return Run(status: process.terminationStatus, killed: process.terminationReason == .uncaughtSignal,
                   stdout: String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self),
                   stderr: String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
    }

    @Test("The installing thread alone is filtered: Seccomp 2 with one filter, the main thread 0",
          arguments: ThreadKind.allCases)
    func onlyTheCallingThread(kind: ThreadKind) throws {
        let run = try Self.run(kind, "true", "none")
        #expect(run.status == 0, "\(run)")
        #expect(run.stdout.contains("thread Seccomp: 2, 1 filter(s)"), "\(run.stdout)")
        #expect(run.stdout.contains("main Seccomp: 0, 0 filter(s)"), "\(run.stdout)")
        #expect(run.stdout.contains("survived none = 0"))
    }

    @Test("A forbidden call ends the process with status 159 and a message naming the thread and the call")
    func forbiddenCallIsReported() throws {
        let run = try Self.run(.vcpu, "true", "socket")
        #expect(run.status == 159, "\(run)")
        #expect(run.stderr == "seccomp: thread probe-vcpu made forbidden syscall 41 (socket)\n", "\(run.stderr)")
        #expect(!run.stdout.contains("survived"))
        let api = try Self.run(.api, "true", "socket")
        #expect(api.status == 159 && api.stderr.contains("thread probe-api made forbidden syscall 41 (socket)"),
                "the API thread opens no sockets (the server's are made before its filter goes on): \(api)")
    }

    @Test("ioctl is filtered by request: KVM_RUN passes a vCPU filter, a terminal request does not")
    func ioctlByRequest() throws {
        let kvm = try Self.run(.vcpu, "true", "kvm-ioctl")
        #expect(kvm.status == 0 && kvm.stdout.contains("survived kvm-ioctl = -1"), "allowed, then EBADF: \(kvm)")
        let tty = try Self.run(.vcpu, "true", "tty-ioctl")
        #expect(tty.status == 159 && tty.stderr.contains("thread probe-vcpu made forbidden syscall 16 (ioctl)"), "\(tty)")
        let loop = try Self.run(.eventLoop, "true", "tty-ioctl")
        #expect(loop.status == 0, "the event loop reads the terminal size for the virtio console: \(loop)")
    }

    @Test("Threads but not processes: the VMM thread starts a thread (clone3 answers ENOSYS, clone with CLONE_THREAD passes), not a child process")
    func threadsNotProcesses() throws {
        let thread = try Self.run(.vmm, "true", "thread")
        #expect(thread.status == 0 && thread.stdout.contains("survived thread = 0"), "\(thread)")
        let fork = try Self.run(.vmm, "true", "fork")
        #expect(fork.status == 159 && fork.stderr.contains("thread probe-vmm made forbidden syscall 56 (clone)"), "\(fork)")
        // The API thread starts none.
        let api = try Self.run(.api, "true", "thread")
        #expect(api.killed && api.status == SIGSYS, "\(api)")
        // pthread_create blocks every signal around clone3: a trap then cannot reach the
        // handler, and the kernel kills the process with SIGSYS itself (no message).
        let vcpu = try Self.run(.vcpu, "true", "thread")
        #expect(vcpu.killed && vcpu.status == SIGSYS, "\(vcpu)")
        #expect(!vcpu.stdout.contains("survived"))
    }

    @Test("With log the forbidden call proceeds")
    func logLetsTheCallProceed() throws {
        let run = try Self.run(.vcpu, "log", "socket")
        #expect(run.status == 0, "\(run)")
        #expect(run.stdout.contains("thread Seccomp: 2, 1 filter(s)"))
        let result = run.stdout.split(separator: "\n").first { $0.hasPrefix("survived socket = ") }
        #expect(result.flatMap { Int($0.dropFirst("survived socket = ".count)) }.map { $0 >= 0 } == true, "a socket came back: \(run.stdout)")
        #expect(run.stderr.isEmpty)
    }
}
