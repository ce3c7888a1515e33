import Foundation
import HypervisorTesting
import Testing
@testable import VMM

@Suite("virtio-balloon: vm.resize desired_balloon, memory_actual_size, snapshot (cloud-hypervisor + ch-remote)", .serialized)
struct BalloonBinaryTests {
    /// vm.info's `memory_actual_size` and `config.balloon.size`.
    static func sizes(_ socket: String) throws -> (actual: Int?, balloon: Int?) {
        let info = try APILifecycleTests.chRemote(socket, ["info"])
        let object = try JSONSerialization.jsonObject(with: Data(info.utf8)) as? [String: Any]
        let config = object?["config"] as? [String: Any]
        return (object?["memory_actual_size"] as? Int, (config?["balloon"] as? [String: Any])?["size"] as? Int)
    }

    @Test("before boot desired_balloon sets the configuration's balloon size, and changes nothing without a balloon")
    func resizeBeforeBoot() throws {
        let controller = try VMMController(logger: .init(label: "test"))
        var config = VMConfig()
        config.payload = PayloadConfig()
        config.payload?.kernel = "/k"
        try controller.create(config)
        try controller.resize(VMResize(desiredBalloon: 1 << 20))
        #expect(try controller.info().config.balloon == nil)
        try controller.delete()
        config.balloon = BalloonConfig(size: 0)
        try controller.create(config)
        try controller.resize(VMResize(desiredBalloon: 1 << 20))
        #expect(try controller.info().config.balloon?.size == 1 << 20)
        #expect(try controller.info().memoryActualSize == config.memory.size)
    }

    @Test("a running VM's balloon takes resize --balloon into its configuration, is saved and restored; without one the resize is refused",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func resizeSnapshotRestore() throws {
        let work = NSTemporaryDirectory() + "ch-balloon-test-\(getpid())"
        try? FileManager.default.removeItem(atPath: work)
        try FileManager.default.createDirectory(atPath: work + "/snap", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let kernel = work + "/counter.elf", serial = work + "/serial", socket = work + "/api.sock"
        try Data(TinyKernel.pvhELF(code: SnapshotBinaryTests.counter)).write(to: URL(fileURLWithPath: kernel))
        let common = ["-v", "--kernel", kernel, "--serial", "file=\(serial)", "--console", "off", "--memory", "size=32M", "--api-socket", "path=\(socket)"]

        // Without a balloon, resize --balloon is refused as Cloud Hypervisor's MissingVirtioBalloon.
        let plain = try SnapshotBinaryTests.start(common, log: work + "/plain.log")
        defer { SnapshotBinaryTests.kill(plain) }
        #expect(SnapshotBinaryTests.waitFor({ SnapshotBinaryTests.contents(serial).utf8.count >= 4 }, seconds: 60))
        let refused = try APILifecycleTests.chRemote(socket, ["resize", "--balloon", "8M"], expect: 1)
        #expect(refused.contains("Missing virtio-balloon"), "\(refused)")
        SnapshotBinaryTests.kill(plain)
        try? FileManager.default.removeItem(atPath: socket)
        try? FileManager.default.removeItem(atPath: serial)

        let first = try SnapshotBinaryTests.start(common + ["--balloon", "size=4M,deflate_on_oom=on"], log: work + "/first.log")
        defer { SnapshotBinaryTests.kill(first) }
        #expect(SnapshotBinaryTests.waitFor({ SnapshotBinaryTests.contents(serial).utf8.count >= 8 }, seconds: 60))
        #expect(SnapshotBinaryTests.contents(work + "/first.log").contains("__balloon: balloon of 4194304 bytes, deflate on OOM"))
        // The tiny guest has no balloon driver: actual stays 0, so memory_actual_size is the RAM.
        #expect(try Self.sizes(socket) == (32 << 20, 4 << 20))
        try APILifecycleTests.chRemote(socket, ["resize", "--balloon", "8M"])
        #expect(try Self.sizes(socket) == (32 << 20, 8 << 20))
        try APILifecycleTests.chRemote(socket, ["pause"])
        try APILifecycleTests.chRemote(socket, ["snapshot", "file://\(work)/snap"])
        SnapshotBinaryTests.kill(first)
        try? FileManager.default.removeItem(atPath: socket)

        let start = SnapshotBinaryTests.contents(serial).utf8.count
        let restored = try SnapshotBinaryTests.start(["-v", "--api-socket", "path=\(socket)", "--restore", "source_url=file://\(work)/snap,resume=on"],
                                                     log: work + "/restore.log")
        defer { SnapshotBinaryTests.kill(restored) }
        #expect(SnapshotBinaryTests.waitFor({ SnapshotBinaryTests.contents(serial).utf8.count >= start + 8 }, seconds: 60),
                "\(SnapshotBinaryTests.contents(work + "/restore.log"))")
        #expect(SnapshotBinaryTests.contents(work + "/restore.log").contains("__balloon: balloon of 8388608 bytes"))
        #expect(try Self.sizes(socket) == (32 << 20, 8 << 20))
        let snapshotState = SnapshotBinaryTests.contents(work + "/snap/state.json")
        #expect(snapshotState.contains("__balloon") && snapshotState.contains("numPages"), "\(snapshotState.prefix(2000))")
    }
}
