import CLinux
import Foundation
import HostSystem
import HypervisorTesting
import Testing

/// Whether this process may create TAP interfaces (root or CAP_NET_ADMIN and /dev/net/tun);
/// `CH_REQUIRE_TAP=1` (set by .ci/run) turns their absence into a failure.
let tapUsable: Bool = {
    if ProcessInfo.processInfo.environment["CH_REQUIRE_TAP"] == "1" { return true }
    return geteuid() == 0 && FileManager.default.fileExists(atPath: "/dev/net/tun")
}()

extension BinaryTests {
    /// Reads `/sys/class/net/<name>/<file>` without its newline.
    static func interfaceAttribute(_ name: String, _ file: String) -> String? {
        (try? String(contentsOfFile: "/sys/class/net/\(name)/\(file)", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test("--net creates the TAP with one queue per pair, configures its host side, and the TAP goes away with the VMM",
          .enabled(if: kvmAvailable && tapUsable, "skipped: needs /dev/kvm and CAP_NET_ADMIN"))
    func netCreatesAndConfiguresTheTap() throws {
        // mov dx,0x3f8; mov al,'!'; out dx,al; 1: hlt; jmp 1b   (prints, then idles for ever)
        let kernel = try Self.temporaryFile("net.elf", TinyKernel.pvhELF(code: [0x66, 0xBA, 0xF8, 0x03, 0xB0, 0x21, 0xEE, 0xF4, 0xEB, 0xFD]))
        defer { try? FileManager.default.removeItem(atPath: kernel) }
        let name = "chbt\(getpid() % 100_000)"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = ["-v", "--kernel", kernel, "--serial", "tty", "--console", "off", "--memory", "size=32M",
                             "--net", "tap=\(name),mac=52:54:00:00:00:33,ip=10.213.10.1,mask=255.255.255.0,host_mac=52:54:00:aa:00:01,mtu=1400,num_queues=4"]
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let first = out.fileHandleForReading.readData(ofLength: 1)
        #expect(first == Data("!".utf8), "the VM did not start")
        #expect(Self.interfaceAttribute(name, "address") == "52:54:00:aa:00:01")
        #expect(Self.interfaceAttribute(name, "mtu") == "1400")
        let flags = Int(Self.interfaceAttribute(name, "flags")?.dropFirst(2) ?? "", radix: 16) ?? 0
        #expect(flags & 1 == 1, "the interface is up")
        let tunFlags = Int(Self.interfaceAttribute(name, "tun_flags")?.dropFirst(2) ?? "", radix: 16) ?? 0
        #expect(tunFlags & 0x0100 != 0 && tunFlags & 0x4000 != 0, "multi-queue with a virtio-net header")
        // The route to 10.213.10.0/24 through the interface (destination in little-endian hex).
        let routes = (try? String(contentsOfFile: "/proc/net/route", encoding: .utf8)) ?? ""
        #expect(routes.split(separator: "\n").contains { $0.hasPrefix(name) && $0.contains("000AD50A") }, "\(routes)")
        process.terminate()
        process.waitUntilExit()
        let log = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 0, "\(log)")
        #expect(log.contains("_net0: \(name), guest MAC 52:54:00:00:00:33, 2 queue pair(s)"), "\(log)")
        #expect(!FileManager.default.fileExists(atPath: "/sys/class/net/\(name)"), "the TAP outlived the VMM")
    }

    @Test("--net refusals name the option: a descriptor that is not a TAP, an odd queue count")
    func netRefusals() throws {
        let kernel = try Self.temporaryFile("netbad.elf", TinyKernel.pvhELF(code: [0xF4, 0xEB, 0xFD]))
        defer { try? FileManager.default.removeItem(atPath: kernel) }
        let odd = try Self.run(["--kernel", kernel, "--console", "off", "--net", "tap=x0,num_queues=3"])
        #expect(odd.status != 0 && odd.stderr.contains("--net") && odd.stderr.contains("num_queues=3"), "\(odd.stderr)")
        if Self.kvmAvailable {
            let closed = try Self.run(["--kernel", kernel, "--console", "off", "--memory", "size=32M", "--net", "fd=987"])
            #expect(closed.status != 0 && closed.stderr.contains("fd 987"), "\(closed.stderr)")
        }
    }
}

extension BinaryTests {
    @Test("--net fd= takes over a TAP descriptor opened by the caller (how orchestrators hand TAPs over)",
          .enabled(if: kvmAvailable && tapUsable, "skipped: needs /dev/kvm and CAP_NET_ADMIN"))
    func netAdoptsAHandedOverTap() throws {
        let kernel = try Self.temporaryFile("netfd.elf", TinyKernel.pvhELF(code: [0x66, 0xBA, 0xF8, 0x03, 0xB0, 0x21, 0xEE, 0xF4, 0xEB, 0xFD]))
        defer { try? FileManager.default.removeItem(atPath: kernel) }
        let tap = try TapInterface.open(name: nil)
        let descriptor = tap.queues[0].rawValue
        // Foundation's Process closes inherited descriptors: spawn directly, with the TAP
        // descriptor inherited (close-on-exec cleared for the child only) and the output
        // in pipes.
        var out: [Int32] = [-1, -1], err: [Int32] = [-1, -1]
        #expect(pipe(&out) == 0 && pipe(&err) == 0)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, out[1], 1)
        posix_spawn_file_actions_adddup2(&actions, err[1], 2)
        posix_spawn_file_actions_adddup2(&actions, descriptor, 40)
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        let arguments = [Self.binary, "-v", "--kernel", kernel, "--serial", "tty", "--console", "off", "--memory", "size=32M",
                         "--net", "fd=40,mac=52:54:00:00:00:44"]
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        #expect(posix_spawn(&pid, Self.binary, &actions, nil, &argv, environ) == 0)
        close(out[1])
        close(err[1])
        var first: UInt8 = 0
        let got = read(out[0], &first, 1)
        kill(pid, SIGTERM)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        close(out[0])
        let log = String(decoding: FileHandle(fileDescriptor: err[0], closeOnDealloc: true).readDataToEndOfFile(), as: UTF8.self)
        #expect(got == 1 && first == UInt8(ascii: "!"), "the VM did not start: \(log)")
        #expect(status == 0, "exit status \(status): \(log)")
        #expect(log.contains("_net0: \(tap.name), guest MAC 52:54:00:00:00:44, 1 queue pair(s)") && log.contains("handed-over fd"), "\(log)")
    }
}
