import Foundation
import HostSystem
import Synchronization
import Testing
import VirtioDevices
@testable import VMM

@Suite("--vsock: validation, and the hybrid vsock's Unix sockets on the event loop")
struct VsockTests {
    func config(_ vsock: String) throws -> VMConfig {
        var config = VMConfig()
        config.payload = PayloadConfig()
        config.payload?.kernel = "/k"
        config.vsock = try VsockConfig.parse(vsock)
        return config
    }

    @Test("special context ids, other PCI segments and duplicate ids are refused, iommu=on is taken; the id defaults to _vsock0")
    func validation() throws {
        try config("cid=3,socket=/tmp/v.sock").validate()
        #expect(try config("cid=3,socket=/tmp/v.sock").vsockID == "_vsock0")
        #expect(try config("cid=3,socket=/tmp/v.sock,id=agent").vsockID == "agent")
        for cid in ["0", "1", "2", "4294967295"] {
            #expect(throws: ConfigError.self) { try config("cid=\(cid),socket=/tmp/v.sock").validate() }
        }
        let iommu = try config("cid=3,socket=/tmp/v.sock,iommu=on")
        #expect(iommu.absentFeatures.isEmpty && iommu.hasVirtualIOMMU)
        try iommu.validate()
        // A vsock on segment 1 needs a second segment (Cloud Hypervisor's InvalidPciSegment).
        var segmentOne = try config("cid=3,socket=/tmp/v.sock,pci_segment=1")
        #expect(segmentOne.absentFeatures.isEmpty)
        let beyond = #expect(throws: ConfigError.self) { try segmentOne.validate() }
        #expect(beyond?.option == "--vsock" && beyond?.message.hasPrefix("Invalid PCI segment id: 1") == true)
        segmentOne.platform = try PlatformConfig.parse("num_pci_segments=2")
        try segmentOne.validate()
        var clash = try config("cid=3,socket=/tmp/v.sock,id=d")
        clash.disks = [try DiskConfig.parse("path=/tmp/x,id=d")]
        #expect(throws: ConfigError.self) { try clash.validate() }
    }

    @Test("vm.add-vsock before boot puts the device in the configuration, once; vm.remove-device takes it out")
    func addBeforeBoot() throws {
        let controller = try VMMController(logger: .init(label: "test"))
        var config = VMConfig()
        config.payload = PayloadConfig()
        config.payload?.kernel = "/k"
        #expect(throws: ControlError.self) { _ = try controller.addVsock(try VsockConfig.parse("cid=3,socket=/tmp/v.sock")) }
        try controller.create(config)
        #expect(try controller.addVsock(try VsockConfig.parse("cid=3,socket=/tmp/v.sock")) == nil)
        #expect(throws: ControlError.self) { _ = try controller.addVsock(try VsockConfig.parse("cid=4,socket=/tmp/w.sock")) }
        try controller.removeDevice(id: "_vsock0")
        #expect(throws: ControlError.self) { try controller.removeDevice(id: "_vsock0") }
        #expect(throws: ControlError.self) { _ = try controller.addVsock(try VsockConfig.parse("cid=2,socket=/tmp/w.sock")) }
        #expect(try controller.addVsock(try VsockConfig.parse("cid=5,socket=/tmp/v.sock,id=agent")) == nil)
        try controller.removeDevice(id: "agent")
    }

    /// Records readiness the watcher delivers.
    final class Target: Sendable {
        let events = Mutex<[(Int32, VsockInterest)]>([])
    }

    @Test("the Unix backend listens at PATH, connects guest requests to PATH_<port>, and moves bytes without blocking")
    func unixBackend() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vsock-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("v.sock").path
        let backend = try UnixVsockBackend(path: path)
        #expect(backend.accept() == nil)

        // A host client at PATH.
        let client = try UnixSocket.connect(to: path)
        let accepted = try #require(backend.accept())
        try client.sendAll(Array("CONNECT 5\n".utf8))
        _ = try UnixSocket(adopting: OwnedFileDescriptor(adopting: dup(accepted.pollDescriptor))).wait(for: .readable, timeoutMilliseconds: 2000)
        let (result, bytes) = accepted.read(maxCount: 64)
        #expect(result == .bytes(10) && bytes == Array("CONNECT 5\n".utf8))
        #expect(accepted.read(maxCount: 64).0 == .wouldBlock)
        #expect(accepted.write(Array("OK 1073741824\n".utf8)[...]) == .bytes(14))
        #expect(try client.receive()?.bytes == Array("OK 1073741824\n".utf8))

        // A guest request for port 7 reaches PATH_7; nobody at PATH_8.
        let portListener = try UnixSocket.listening(at: path + "_7")
        let stream = try backend.connect(port: 7)
        #expect(throws: VirtioDeviceError.self) { try backend.connect(port: 8) }
        _ = try portListener.wait(for: .readable, timeoutMilliseconds: 2000)
        let server = try #require(try portListener.accept())
        #expect(stream.write([1, 2, 3][...]) == .bytes(3))
        _ = try server.wait(for: .readable, timeoutMilliseconds: 2000)
        #expect(try server.receive()?.bytes == [1, 2, 3])
        stream.shutdownWrite()
        _ = try server.wait(for: .readable, timeoutMilliseconds: 2000)
        #expect(try server.receive()?.isEndOfStream == true)
        try server.shutdown(.writing)
        var end = stream.read(maxCount: 16)
        for _ in 0..<100 where end.0 == .wouldBlock {
            usleep(10_000)
            end = stream.read(maxCount: 16)
        }
        #expect(end.0 == .endOfStream)

        // A full host stream would block: the write says so instead.
        var filled = 0
        var last = VsockIOResult.bytes(0)
        while filled < 64 << 20 {
            last = stream.write([UInt8](repeating: 0, count: 65536)[...])
            guard case .bytes(let count) = last else { break }
            filled += count
        }
        #expect(last == .wouldBlock || { if case .failed = last { return true } else { return false } }())

        backend.removeSocketFile()
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test("the event-loop watcher delivers readiness to the device until detached")
    func watcher() throws {
        let events = try EventManager()
        let watcher = EventLoopVsockWatcher(events: events, logger: .init(label: "test"))
        let (a, b) = try UnixSocket.pair()
        watcher.watch(a.rawValue, interest: .readable)
        #expect(events.registeredCount == 1)
        watcher.watch(a.rawValue, interest: [.readable, .writable])
        #expect(events.registeredCount == 1)
        watcher.unwatch(a.rawValue)
        #expect(events.registeredCount == 0)
        _ = b
    }
}
