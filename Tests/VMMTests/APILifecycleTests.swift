import Foundation
import HypervisorTesting
import Testing

/// cloud-hypervisor started with only --api-socket, driven by ch-remote through a whole
/// lifecycle with a tiny guest that writes to its serial port without pause.
@Suite("REST API lifecycle (cloud-hypervisor + ch-remote)")
struct APILifecycleTests {
    /// mov dx,0x3f8; mov al,'.'; 1: out dx,al; jmp 1b   (serial output for as long as it runs)
    static let writeForever: [UInt8] = [0x66, 0xBA, 0xF8, 0x03, 0xB0, 0x2E, 0xEE, 0xEB, 0xFD]

    static var remote: String {
        URL(fileURLWithPath: BinaryTests.binary).deletingLastPathComponent().appendingPathComponent("ch-remote").path
    }

    @discardableResult
    static func chRemote(_ socket: String, _ arguments: [String], expect status: Int32 = 0) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: remote)
        process.arguments = ["--api-socket", socket] + arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        process.waitUntilExit()
        let stdout = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == status, "ch-remote \(arguments): \(stdout) \(stderr)")
        return stdout + stderr
    }

    static func size(_ path: String) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int) ?? 0
    }

    static func state(_ socket: String) throws -> String {
        let info = try chRemote(socket, ["info"])
        guard let data = info.data(using: .utf8),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return "?" }
        return object["state"] as? String ?? "?"
    }

    @Test("create, boot, pause (the guest stops), resume, shutdown, boot, reboot, power-button, shutdown-vmm",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func lifecycle() throws {
        let kernel = try BinaryTests.temporaryFile("api.elf", TinyKernel.pvhELF(code: Self.writeForever))
        let socket = NSTemporaryDirectory() + "ch-api-\(getpid()).sock"
        let serial = kernel + ".serial"
        let events = kernel + ".events"
        let configPath = kernel + ".json"
        let disk = try BinaryTests.temporaryFile("api-disk.raw", [UInt8](repeating: 0, count: 1 << 20))
        defer { for path in [kernel, socket, serial, events, configPath, disk] { try? FileManager.default.removeItem(atPath: path) } }

        let vmm = Process()
        vmm.executableURL = URL(fileURLWithPath: BinaryTests.binary)
        vmm.arguments = ["-v", "--api-socket", "path=\(socket)", "--event-monitor", "path=\(events)"]
        let err = Pipe()
        vmm.standardError = err
        vmm.standardOutput = FileHandle.nullDevice
        vmm.standardInput = FileHandle.nullDevice
        try vmm.run()
        defer { if vmm.isRunning { vmm.terminate(); vmm.waitUntilExit() } }
        var waited = 0
        while !FileManager.default.fileExists(atPath: socket) && waited < 1000 { usleep(10_000); waited += 1 }

        #expect(try Self.chRemote(socket, ["ping"]).contains("\"version\""))
        #expect(try Self.chRemote(socket, ["info"], expect: 1).contains("404"))
        let config = #"{"cpus":{"boot_vcpus":1,"max_vcpus":1},"memory":{"size":33554432},"payload":{"kernel":"\#(kernel)"},"serial":{"mode":"File","file":"\#(serial)"},"console":{"mode":"Off"},"disks":[{"path":"\#(disk)"}]}"#
        try config.write(toFile: configPath, atomically: true, encoding: .utf8)
        try Self.chRemote(socket, ["create", configPath])
        #expect(try Self.state(socket) == "Created")
        try Self.chRemote(socket, ["pause"], expect: 1)
        #expect(try Self.chRemote(socket, ["resize-disk", "--disk", "_disk0", "--size", "2M"], expect: 1).contains("not booted"))

        try Self.chRemote(socket, ["boot"])
        #expect(try Self.state(socket) == "Running")
        // vm.resize-disk on the running VM: the image file follows; bad requests change nothing.
        try Self.chRemote(socket, ["resize-disk", "--disk", "_disk0", "--size", "2M"])
        #expect(Self.size(disk) == 2 << 20)
        #expect(try Self.chRemote(socket, ["resize-disk", "--disk", "_disk7", "--size", "4M"], expect: 1).contains("Unknown device id: _disk7"))
        #expect(try Self.chRemote(socket, ["resize-disk", "--disk", "_disk0", "--size", "1000"], expect: 1).contains("multiple of 512"))
        #expect(try Self.chRemote(socket, ["resize-disk", "--disk", "serial", "--size", "4M"], expect: 1).contains("not a disk"))
        #expect(Self.size(disk) == 2 << 20)
        waited = 0
        while Self.size(serial) == 0 && waited < 500 { usleep(10_000); waited += 1 }
        #expect(Self.size(serial) > 0, "the guest wrote to its serial port")

        try Self.chRemote(socket, ["pause"])
        #expect(try Self.state(socket) == "Paused")
        let paused = Self.size(serial)
        usleep(300_000)
        #expect(Self.size(serial) == paused, "a paused guest makes no progress")
        try Self.chRemote(socket, ["pause"], expect: 1)
        try Self.chRemote(socket, ["resume"])
        usleep(200_000)
        #expect(Self.size(serial) > paused, "the resumed guest runs again")
        #expect(try Self.state(socket) == "Running")

        try Self.chRemote(socket, ["shutdown"])
        #expect(try Self.state(socket) == "Shutdown")
        try Self.chRemote(socket, ["resume"], expect: 1)
        try Self.chRemote(socket, ["boot"])
        #expect(try Self.state(socket) == "Running")
        // The rebooted VM opens the same disk image: the stopped VM must have let go of its lock.
        try Self.chRemote(socket, ["reboot"])
        #expect(try Self.state(socket) == "Running")
        try Self.chRemote(socket, ["reboot"])
        #expect(try Self.state(socket) == "Running")
        try Self.chRemote(socket, ["power-button"])
        #expect(try Self.chRemote(socket, ["counters"]).contains("_disk0"))

        try Self.chRemote(socket, ["shutdown-vmm"])
        waited = 0
        while vmm.isRunning && waited < 1000 { usleep(10_000); waited += 1 }
        #expect(!vmm.isRunning && vmm.terminationStatus == 0)
        let log = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(log.contains("vmm.shutdown"), "\(log)")
        let monitor = (try? String(contentsOfFile: events, encoding: .utf8)) ?? ""
        for event in ["starting", "booting", "booted", "pausing", "paused", "resuming", "resumed", "rebooting", "rebooted", "shutdown", "deleted"] {
            #expect(monitor.contains("\"event\": \"\(event)\""), "event \(event) in \(monitor)")
        }
        // Cloud Hypervisor's vmm_shutdown: the VM is deleted, then the VMM says it shuts down, last.
        #expect(monitor.contains("\"source\": \"vmm\",\n  \"event\": \"shutdown\""), "\(monitor)")
        #expect(!monitor.contains("\"created\""), "\(monitor)")
    }
}
