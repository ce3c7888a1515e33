import Foundation
import Testing
@testable import VMM

/// Snapshot files written with Foundation's encoder (before JSONCoding: sorted keys, '/'
/// escaped as "\/", whole doubles without ".0") still decode, and what SnapshotJSON writes now
/// decodes with Foundation's decoder to the same values (older readers keep working).
@Suite("snapshot JSON: the files Foundation's encoder wrote and the ones JSONCoding writes")
struct SnapshotJSONCompatibilityTests {
    /// A configuration with paths, nested sections, optional and repeated devices.
    static func config() throws -> VMConfig {
        var config = VMConfig()
        config.payload = PayloadConfig(kernel: "/boot/vmlinux", cmdline: "console=ttyS0 root=/dev/vda1 rw", initramfs: "/boot/initrd.img")
        config.cpus = try CpusConfig.parse("boot=2,max=4")
        config.memory = try MemoryConfig.parse("size=1G,shared=on,hotplug_size=2G")
        config.disks = [try DiskConfig.parse("path=/images/a b/disk.raw,num_queues=2,readonly=on,id=d0"),
                        try DiskConfig.parse("path=/images/é.qcow2,direct=on")]
        config.net = [try NetConfig.parse("tap=tap0,mac=52:54:00:12:34:56,ip=192.168.249.1,mask=255.255.255.0")]
        config.fs = [try FsConfig.parse("tag=share,socket=/run/virtiofsd.sock,num_queues=1,queue_size=512")]
        config.vsock = try VsockConfig.parse("cid=3,socket=/run/vsock.sock")
        config.serial = try ConsoleConfig.parse("file=/var/log/serial.log", option: "--serial")
        return config
    }

    static func tree() throws -> SnapshotNode {
        SnapshotNode(snapshots: [
            "cpu-manager": SnapshotNode(snapshots: ["0": SnapshotNode(state: #"{"regs":[1,18446744073709551615]}"#)]),
            "device-manager": try SnapshotNode.leaf(DeviceManagerSection(devices: [.init(id: "_disk0", kind: "virtio-blk/path", placement: nil)])),
        ], state: #"{"vmm_version":"v53.0.0/swift"}"#)
    }

    @Test("config.json and state.json written by Foundation's encoder decode to the same values")
    func foundationWritten() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let config = try Self.config(), tree = try Self.tree()
        let oldConfig = Array(try encoder.encode(config)), oldTree = Array(try encoder.encode(tree))
        #expect(String(decoding: oldConfig, as: UTF8.self).contains(#"\/boot\/vmlinux"#))
        #expect(try SnapshotJSON.value(VMConfig.self, from: oldConfig) == config)
        #expect(try SnapshotJSON.value(SnapshotNode.self, from: oldTree) == tree)
    }

    @Test("what SnapshotJSON writes decodes with Foundation's decoder, and has the same keys in the same order")
    func jsonCodingWritten() throws {
        let config = try Self.config(), tree = try Self.tree()
        let newConfig = try SnapshotJSON.data(config), newTree = try SnapshotJSON.data(tree)
        #expect(try JSONDecoder().decode(VMConfig.self, from: Data(newConfig)) == config)
        #expect(try JSONDecoder().decode(SnapshotNode.self, from: Data(newTree)) == tree)
        // The same text as Foundation's, but for the escaped slashes.
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        #expect(newConfig == Array(try encoder.encode(config)))
        #expect(newTree == Array(try encoder.encode(tree)))
    }
}
