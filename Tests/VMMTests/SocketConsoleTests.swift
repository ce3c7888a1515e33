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
