import Foundation
import HypervisorTesting
import Seccomp
import Testing

/// `--seccomp` on the real binary: every thread of a running VMM (VM threads, signal thread,
/// API threads) is filtered, or none is.
@Suite("cloud-hypervisor --seccomp")
struct SeccompBinaryTests {
    /// mov dx,0x3f8; mov al,'!'; out dx,al; 1: hlt; jmp 1b   (prints, then idles for ever)
    static let printAndIdle: [UInt8] = [0x66, 0xBA, 0xF8, 0x03, 0xB0, 0x21, 0xEE, 0xF4, 0xEB, 0xFD]

    struct Thread: CustomStringConvertible {
        let name: String
        let state: ThreadSeccompState?
        var description: String { "\(name): \(state.map(\.description) ?? "?")" }
    }

    /// Starts the VMM with a 2-vCPU idle guest and an API socket, waits until the guest ran
    /// and the API answers, reads every thread's name and seccomp state, then stops it with
    /// SIGTERM and expects exit status 0.
    static func threads(seccomp: String) throws -> [Thread] {
        let kernel = try BinaryTests.temporaryFile("seccomp-\(seccomp).elf", TinyKernel.pvhELF(code: printAndIdle))
        let socket = NSTemporaryDirectory() + "ch-seccomp-\(getpid())-\(seccomp).sock"
        defer { for path in [kernel, socket] { try? FileManager.default.removeItem(atPath: path) } }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: BinaryTests.binary)
        process.arguments = ["--seccomp", seccomp, "--kernel", kernel, "--serial", "tty", "--console", "off",
                             "--cpus", "boot=2", "--memory", "size=32M", "--api-socket", "path=\(socket)"]
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { process.terminate(); process.waitUntilExit() } }
        #expect(out.fileHandleForReading.readData(ofLength: 1) == Data("!".utf8), "the guest runs")
        // The API answers: its threads have run their setup.
        _ = try APILifecycleTests.chRemote(socket, ["ping"])
        let pid = process.processIdentifier
        let tasks = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task").compactMap { Int32($0) }
        let threads = tasks.map { tid in
            let name = (try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/comm", encoding: .utf8)) ?? "?"
            return Thread(name: name.trimmingCharacters(in: .whitespacesAndNewlines), state: ThreadSeccompState.read(process: pid, thread: tid))
        }
        process.terminate()
        process.waitUntilExit()
        let log = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationReason == .exit && process.terminationStatus == 0, "\(log)")
        return threads
    }

    @Test("--seccomp true (the default): every thread is filtered, each non-main thread by a filter of its own",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func everyThreadFiltered() throws {
        let threads = try Self.threads(seccomp: "true")
        let names = threads.map(\.name)
        for expected in ["cloud-hyperviso", "ch-signals", "ch-event-loop", "vcpu0", "vcpu1", "ch-vm-watch", "ch-api", "ch-api-worker"] {
            #expect(names.contains(expected), "thread \(expected) in \(names)")
        }
        for thread in threads {
            #expect(thread.state?.mode == 2, "\(thread)")
            // The main thread's own filter; the others add theirs on top of the one they inherited.
            let least = thread.name == "cloud-hyperviso" ? 1 : 2
            #expect((thread.state?.filters ?? 0) >= least, "\(thread)")
        }
    }

    @Test("--seccomp false: no thread is filtered", .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func noThreadFiltered() throws {
        let threads = try Self.threads(seccomp: "false")
        #expect(threads.count >= 8, "\(threads)")
        for thread in threads { #expect(thread.state == ThreadSeccompState(mode: 0, filters: 0), "\(thread)") }
    }

    @Test("--seccomp log boots and powers off; a bad value names the option and the accepted values")
    func logAndBadValue() throws {
        if BinaryTests.kvmAvailable {
            let kernel = try BinaryTests.temporaryFile("seccomp-log.elf", TinyKernel.pvhELF(code: BinaryTests.printAndPowerOff))
            defer { try? FileManager.default.removeItem(atPath: kernel) }
            let run = try BinaryTests.run(["--seccomp", "log", "--kernel", kernel, "--serial", "tty", "--console", "off", "--memory", "size=32M"])
            #expect(run.status == 0 && run.stdout == "!OK\n", "\(run)")
        }
        let bad = try BinaryTests.run(["--seccomp", "yes", "--kernel", "/k"])
        #expect(bad.status == 64, "\(bad)")
        #expect(bad.stderr.contains("--seccomp: 'yes' is not accepted; accepted values: true, false, log"), "\(bad.stderr)")
    }
}
