import Foundation
import HostSystem
import HypervisorTesting
import Testing

extension BinaryTests {
    @Test("--serial socket=PATH: a client of the socket types to the guest and reads what it writes; the VMM removes the socket when it ends",
          .enabled(if: kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func serialOnSocket() throws {
        // echoUntilNewline's echo loop, then `jmp` back to it: echoes for ever.
        let kernel = try Self.temporaryFile("socket-echo.elf", TinyKernel.pvhELF(code: Array(Self.echoUntilNewline.prefix(19)) + [0xEB, 0xEB]))
        let path = NSTemporaryDirectory() + "ch-serial-\(getpid()).sock"
        defer { try? FileManager.default.removeItem(atPath: kernel) }
        let vmm = Process()
        vmm.executableURL = URL(fileURLWithPath: Self.binary)
        vmm.arguments = ["--kernel", kernel, "--serial", "socket=\(path)", "--console", "off", "--memory", "size=32M"]
        vmm.standardOutput = FileHandle.nullDevice
        let log = path + ".log"
        FileManager.default.createFile(atPath: log, contents: nil)
        vmm.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        defer { try? FileManager.default.removeItem(atPath: log) }
        try vmm.run()
        defer { if vmm.isRunning { vmm.terminate(); vmm.waitUntilExit() } }
        var waited = 0
        while !UnixSocket.hasListener(at: path) && waited < 1000 { usleep(10_000); waited += 1 }

        func vmmLog() -> String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
        let client = try UnixSocket.connect(to: path)
        // The line may reach the guest before the VMM accepted the client: the echo is read
        // back whole either way, because input waits in the socket until then.
        let line = Array("hello over a socket\n".utf8)
        try client.sendAll(line)
        var echoed: [UInt8] = []
        while echoed.count < line.count, try client.wait(for: [.readable], timeoutMilliseconds: 10_000) {
            guard let message = try? client.receive(), !message.isEndOfStream else { break }
            echoed += message.bytes
        }
        #expect(echoed == line, "\(String(decoding: echoed, as: UTF8.self)) \(vmmLog())")
        // A second client takes over from the first.
        let second = try UnixSocket.connect(to: path)
        try second.sendAll(Array("again\n".utf8))
        echoed = []
        while echoed.count < 6, try second.wait(for: [.readable], timeoutMilliseconds: 10_000) {
            guard let message = try second.receive(), !message.isEndOfStream else { break }
            echoed += message.bytes
        }
        #expect(echoed == Array("again\n".utf8))
        vmm.terminate()
        vmm.waitUntilExit()
        #expect(vmm.terminationStatus == 0)
        #expect(!FileManager.default.fileExists(atPath: path), "the socket file is removed")
    }
}

extension BinaryTests {
    @Test("--event-monitor path= on a FIFO whose reader opens late: every event arrives, in Cloud Hypervisor's order, ending with vmm:shutdown",
          .enabled(if: kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func eventsToALateFIFOReader() throws {
        let kernel = try Self.temporaryFile("fifo.elf", TinyKernel.pvhELF(code: Self.printAndPowerOff))
        let fifo = NSTemporaryDirectory() + "ch-events-\(getpid()).fifo"
        defer { try? FileManager.default.removeItem(atPath: kernel); try? FileManager.default.removeItem(atPath: fifo) }
        #expect(mkfifo(fifo, 0o600) == 0)
        let vmm = Process()
        vmm.executableURL = URL(fileURLWithPath: Self.binary)
        vmm.arguments = ["--kernel", kernel, "--serial", "null", "--console", "off", "--memory", "size=32M", "--event-monitor", "path=\(fifo)"]
        vmm.standardOutput = FileHandle.nullDevice
        vmm.standardError = FileHandle.nullDevice
        try vmm.run()
        defer { if vmm.isRunning { vmm.terminate(); vmm.waitUntilExit() } }
        usleep(300_000)  // the VMM waits for a reader, as Cloud Hypervisor does
        let reader = try FileHandle(forReadingFrom: URL(fileURLWithPath: fifo))
        let text = String(decoding: reader.readDataToEndOfFile(), as: UTF8.self)
        vmm.waitUntilExit()
        #expect(vmm.terminationStatus == 0)
        let events = text.split(separator: "\n").compactMap { line -> String? in
            guard line.contains("\"event\"") else { return nil }
            return line.split(separator: "\"").dropFirst(3).first.map(String.init)
        }
        let sources = text.split(separator: "\n").compactMap { line -> String? in
            guard line.contains("\"source\"") else { return nil }
            return line.split(separator: "\"").dropFirst(3).first.map(String.init)
        }
        #expect(zip(sources, events).map { "\($0):\($1)" } == [
            "vmm:starting", "vm:booting", "vm:booted", "vm:shutdown", "vm:deleted", "vmm:shutdown",
        ], "\(text)")
    }
}
