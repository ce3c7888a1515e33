import Testing
import Foundation
import GuestMemory
@testable import Arch

/// Where a device-tree-compiler program lives, or nil when the package is not installed.
func dtcTool(_ name: String) -> String? {
    ["/usr/bin/", "/usr/local/bin/"].map { $0 + name }.first { FileManager.default.isExecutableFile(atPath: $0) }
}

/// Runs `path` with `arguments`; returns the exit status, stdout and stderr.
func runDTCTool(_ path: String, _ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
}

func bigEndian32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
    bytes[offset..<(offset + 4)].reduce(0) { $0 << 8 | UInt32($1) }
}

/// A device-tree blob written to a temporary file and decompiled by `dtc`, with `fdtget` on it.
final class DecompiledTree {
    let directory: URL
    let path: String
    let dts: (status: Int32, out: String, err: String)

    init(_ blob: [UInt8], name: String) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        path = directory.appendingPathComponent("vm.dtb").path
        try Data(blob).write(to: URL(fileURLWithPath: path))
        dts = try runDTCTool(dtcTool("dtc")!, ["-I", "dtb", "-O", "dts", path])
    }

    deinit { try? FileManager.default.removeItem(at: directory) }

    /// `fdtget` on the blob; expects it to succeed.
    func get(_ arguments: String...) throws -> String {
        let result = try runDTCTool(dtcTool("fdtget")!, [path] + arguments)
        #expect(result.status == 0, "fdtget \(arguments): \(result.err)")
        return result.out.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// `fdtget`'s exit status alone (non-zero when the node or property is absent).
    func status(_ arguments: String...) throws -> Int32 {
        try runDTCTool(dtcTool("fdtget")!, [path] + arguments).status
    }
}

@Suite("FDT encoder")
struct FDTWriterTests {
    @Test func headerAndBlocksAreLaidOut() throws {
        var fdt = FDTWriter(reservations: [(address: 0x1000, size: 0x2000)], bootCPUID: 3)
        try fdt.beginNode("")
        try fdt.property("a", u32: 0x1234_5678)
        try fdt.property("compatible", strings: ["x,y", "z"])
        try fdt.beginNode("child@10")
        try fdt.property("a", u64: 0x1_0000_0002)
        try fdt.endNode()
        try fdt.endNode()
        let blob = try fdt.finish()
        #expect(bigEndian32(blob, 0) == 0xD00D_FEED)
        #expect(Int(bigEndian32(blob, 4)) == blob.count)
        let structOffset = Int(bigEndian32(blob, 8)), stringsOffset = Int(bigEndian32(blob, 12))
        #expect(bigEndian32(blob, 16) == 40 && bigEndian32(blob, 20) == 17 && bigEndian32(blob, 24) == 16)
        #expect(bigEndian32(blob, 28) == 3)
        // Reservation block: (0x1000, 0x2000) then the (0, 0) terminator.
        #expect(Array(blob[40..<72]) == FDTWriter.bigEndian(UInt64(0x1000)) + FDTWriter.bigEndian(UInt64(0x2000)) + Array(repeating: 0, count: 16))
        #expect(structOffset == 72)
        #expect(Int(bigEndian32(blob, 36)) == stringsOffset - structOffset)
        // "a" is stored once in the strings block.
        #expect(Array(blob[stringsOffset...]) == Array("a\0compatible\0".utf8))
        #expect(bigEndian32(blob, structOffset) == 1)                         // FDT_BEGIN_NODE
        #expect(bigEndian32(blob, stringsOffset - 4) == 9)                     // FDT_END
        #expect(structOffset.isMultiple(of: 8) && (stringsOffset - structOffset).isMultiple(of: 4))
    }

    @Test func misuseIsRefused() throws {
        var fdt = FDTWriter()
        #expect(throws: AArch64Error.self) { try fdt.property("x", u32: 1) }
        #expect(throws: AArch64Error.self) { try fdt.endNode() }
        #expect(throws: AArch64Error.self) { try fdt.beginNode("root") }
        #expect(throws: AArch64Error.self) { try fdt.finish() }
        try fdt.beginNode("")
        try fdt.property("x", u32: 1)
        #expect(throws: AArch64Error.self) { try fdt.property("x", u32: 2) }
        #expect(throws: AArch64Error.self) { try fdt.property("bad name", u32: 2) }
        #expect(throws: AArch64Error.self) { try fdt.property("s", string: "a\0b") }
        #expect(throws: AArch64Error.self) { try fdt.beginNode("9lives") }
        #expect(throws: AArch64Error.self) { try fdt.beginNode("node@") }
        #expect(throws: AArch64Error.self) { try fdt.beginNode(String(repeating: "n", count: 32)) }
        try fdt.beginNode("n@1")
        try fdt.phandle(5)
        #expect(throws: AArch64Error.self) { try fdt.phandle(0) }
        try fdt.endNode()
        #expect(throws: AArch64Error.self) { try fdt.beginNode("n@1") }
        #expect(throws: AArch64Error.self) { try fdt.property("late", u32: 1) }
        try fdt.beginNode("m")
        #expect(throws: AArch64Error.self) { try fdt.phandle(5) }
        try fdt.endNode()
        #expect(throws: AArch64Error.self) { try fdt.finish() }
        try fdt.endNode()
        #expect(throws: AArch64Error.self) { try fdt.beginNode("") }
        _ = try fdt.finish()
    }
}

@Suite("arm64 device tree")
struct ARM64DeviceTreeTests {
    static func configuration(vcpus: Int, initramfs: Bool, pci: Bool = true, ram: UInt64 = 1 << 30) throws
        -> ARM64DeviceTree.Configuration {
        let memory = try AArch64Layout.ramRegions(size: ram)
        var config = ARM64DeviceTree.Configuration(
            memory: memory, mpidrs: (0..<vcpus).map(ARM64DeviceTree.defaultMPIDR),
            commandLine: "console=ttyAMA0 root=/dev/vda1 rw")
        if initramfs {
            let end = memory.last!.start.rawValue + memory.last!.size
            let start = try AArch64Layout.initramfsAddress(size: 5 << 20, ramEnd: GuestAddress(end), lowest: AArch64Layout.kernelStart)
            config.initramfs = (start, 5 << 20)
        }
        if pci {
            let top = memory.last!.start.rawValue + memory.last!.size
            config.pciSegments = [ARM64DeviceTree.PCISegment(
                id: 0, ecamAddress: AArch64Layout.pciMMConfigStart, mmio64Start: GuestAddress(top), mmio64Size: 64 << 30)]
        }
        config.pmu = vcpus == 4
        return config
    }

    @Test func mpidrsFollowKVM() {
        #expect(ARM64DeviceTree.defaultMPIDR(0) == 0x8000_0000)
        #expect(ARM64DeviceTree.defaultMPIDR(15) == 0x8000_000F)
        #expect(ARM64DeviceTree.defaultMPIDR(16) == 0x8000_0100)
        #expect(ARM64DeviceTree.defaultMPIDR(63) == 0x8000_030F)
    }

    @Test func badConfigurationsAreRefused() throws {
        var config = try Self.configuration(vcpus: 1, initramfs: false)
        config.mpidrs = []
        #expect(throws: AArch64Error.invalidVCPUCount(count: 0, max: 255)) { try ARM64DeviceTree.build(config) }
        config.mpidrs = [0x8000_0000, 0x8000_0000]
        #expect(throws: AArch64Error.self) { try ARM64DeviceTree.build(config) }
        config = try Self.configuration(vcpus: 1, initramfs: false)
        config.initramfs = (GuestAddress(0x1000), 10)
        #expect(throws: AArch64Error.self) { try ARM64DeviceTree.build(config) }
        config.initramfs = nil
        config.serial?.irq = 5
        #expect(throws: AArch64Error.self) { try ARM64DeviceTree.build(config) }
    }

    @Test(.enabled(if: dtcTool("dtc") != nil && dtcTool("fdtget") != nil,
                   "device-tree-compiler is not installed (Scripts/install-deps.sh installs it)"),
          arguments: [(1, false, false, false), (1, true, true, false), (4, false, true, true), (4, true, false, false),
                      (64, false, true, true), (64, true, false, true)])
    func dtcReadsTheTreeWithoutWarnings(vcpus: Int, initramfs: Bool, pci: Bool, numa: Bool) throws {
        var config = try Self.configuration(vcpus: vcpus, initramfs: initramfs, pci: pci, ram: vcpus == 64 ? 8 << 30 : 1 << 30)
        if numa {
            // Two nodes: the first half of the vCPUs with the first RAM region, the rest with the others.
            config.numaNodes = [
                ARM64DeviceTree.NUMANode(id: 0, vcpus: Array(0..<(vcpus / 2)), memory: [config.memory[0]]),
                ARM64DeviceTree.NUMANode(id: 1, vcpus: Array((vcpus / 2)..<vcpus),
                                         memory: config.memory.count > 1 ? Array(config.memory.dropFirst()) : [], distances: [0: 30]),
            ]
            if config.memory.count == 1 {
                let half = config.memory[0].size / 2
                config.numaNodes[0].memory = [(config.memory[0].start, half)]
                config.numaNodes[1].memory = [(GuestAddress(config.memory[0].start.rawValue + half), half)]
            }
        }
        let tree = try DecompiledTree(try ARM64DeviceTree.build(config), name: "arm64-dtb")
        let dts = tree.dts
        #expect(dts.status == 0)
        #expect(dts.err.isEmpty, "dtc warned: \(dts.err)")
        #expect(dts.out.contains(#"compatible = "arm,psci-1.0\0arm,psci-0.2";"#))
        #expect(dts.out.contains(#"compatible = "arm,pl011\0arm,primecell";"#))

        #expect(try tree.get("/", "compatible") == "linux,dummy-virt")
        #expect(try tree.get("-t", "x", "/", "interrupt-parent") == "1")
        let cpus = try tree.get("-l", "/cpus").split(separator: "\n")
        #expect(cpus.count == vcpus)
        #expect(try tree.get("-t", "x", "/cpus/cpu@0", "reg") == "0")
        if vcpus == 64 {
            #expect(try tree.get("-t", "x", "/cpus/cpu@30f", "reg") == "30f")
            #expect(try tree.get("/cpus/cpu@30f", "enable-method") == "psci")
        }
        if vcpus == 1 { #expect(try tree.status("/cpus/cpu@0", "enable-method") != 0) }
        #expect(try tree.get("/psci", "method") == "hvc")
        #expect(try tree.get("-t", "u", "/timer", "interrupts") == "1 13 4 1 14 4 1 11 4 1 10 4")
        let redist = try AArch64Layout.gicRedistributorRegion(vcpuCount: vcpus)
        #expect(try tree.get("/intc@8ff0000", "compatible") == "arm,gic-v3")
        #expect(try tree.get("-t", "x", "/intc@8ff0000", "reg")
                == "0 8ff0000 0 10000 0 \(String(redist.start.rawValue, radix: 16)) 0 \(String(redist.size, radix: 16))")
        let its = try AArch64Layout.gicITSRegion(vcpuCount: vcpus)
        #expect(try tree.get("/intc@8ff0000/msic@\(String(its.start.rawValue, radix: 16))", "compatible") == "arm,gic-v3-its")
        #expect(try tree.get("/pl011@9000000", "compatible") == "arm,pl011 arm,primecell")
        #expect(try tree.get("-t", "u", "/pl011@9000000", "interrupts") == "0 1 1")
        #expect(try tree.get("-t", "x", "/pl011@9000000", "clocks") == "3")
        #expect(try tree.get("-t", "u", "/apb-pclk", "clock-frequency") == "24000000")
        #expect(try tree.get("/rtc@9010000", "compatible") == "arm,pl031 arm,primecell")
        #expect(try tree.get("/pl061@9020000", "compatible") == "arm,pl061 arm,primecell")
        #expect(try tree.get("-t", "u", "/gpio-keys/button-poweroff", "linux,code") == "116")
        #expect(try tree.get("-t", "u", "/gpio-keys/button-poweroff", "gpios") == "4 3 0")
        if numa {
            #expect(try tree.get("-t", "u", "/cpus/cpu@0", "numa-node-id") == "0")
            #expect(try tree.get("-t", "u", "/distance-map", "distance-matrix") == "0 0 10 0 1 30 1 0 30 1 1 10")
            #expect(try tree.get("-t", "u", "/memory@40000000", "numa-node-id") == "0")
        } else {
            #expect(try tree.status("/distance-map", "compatible") != 0)
        }
        func cells(_ value: UInt64) -> String { "\(String(value >> 32, radix: 16)) \(String(value & 0xFFFF_FFFF, radix: 16))" }
        if !pci {
            #expect(try tree.status("/pci@30000000", "compatible") != 0)
        } else {
            #expect(try tree.get("/pci@30000000", "compatible") == "pci-host-ecam-generic")
            #expect(try tree.get("-t", "x", "/pci@30000000", "reg") == "0 30000000 0 100000")
            #expect(try tree.get("-t", "x", "/pci@30000000", "msi-map") == "0 2 0 100")
            let window = config.pciSegments[0]
            let base64 = max(window.mmio64Start.rawValue, AArch64Layout.pciHighBase.rawValue)
            let size64 = window.mmio64Size - (base64 - window.mmio64Start.rawValue)
            #expect(try tree.get("-t", "x", "/pci@30000000", "ranges")
                    == "1000000 0 0 0 9050000 0 10000 2000000 0 10000000 0 10000000 0 20000000 3000000 "
                    + "\(cells(base64)) \(cells(base64)) \(cells(size64))")
        }
        #expect(try tree.get("/chosen", "bootargs") == "console=ttyAMA0 root=/dev/vda1 rw")
        #expect(try tree.get("/chosen", "stdout-path") == "/pl011@9000000")
        #expect(try tree.get("-t", "x", "/memory@40000000", "reg").hasPrefix("0 40000000 0"))
        if vcpus == 64 {
            #expect(try tree.get("-t", "x", "/memory@100000000", "reg") == "1 0 \(cells((8 << 30) - (0xFC00_0000 - 0x4000_0000)))")
        }
        if let initrd = config.initramfs {
            let start = try tree.get("-t", "x", "/chosen", "linux,initrd-start")
            let end = try tree.get("-t", "x", "/chosen", "linux,initrd-end")
            func hi(_ v: UInt64) -> String { "\(String(v >> 32, radix: 16)) \(String(v & 0xFFFF_FFFF, radix: 16))" }
            #expect(start == hi(initrd.start.rawValue) && end == hi(initrd.start.rawValue + initrd.size))
        } else {
            #expect(try tree.status("/chosen", "linux,initrd-start") != 0)
        }
        if vcpus == 4 { #expect(try tree.get("/pmu", "compatible") == "arm,armv8-pmuv3") }
    }
}

@Suite("arm64 device tree: NUMA")
struct ARM64DeviceTreeNUMATests {
    /// 4 vCPUs and 2 GiB in two nodes (vCPUs 0-1 and the first GiB; vCPUs 2-3 and the second).
    static func configuration(distances: [UInt32: UInt8] = [1: 25]) throws -> ARM64DeviceTree.Configuration {
        var config = try ARM64DeviceTreeTests.configuration(vcpus: 4, initramfs: true, ram: 2 << 30)
        let base = config.memory[0].start.rawValue
        config.numaNodes = [
            ARM64DeviceTree.NUMANode(id: 0, vcpus: [0, 1], memory: [(GuestAddress(base), 1 << 30)], distances: distances),
            ARM64DeviceTree.NUMANode(id: 1, vcpus: [2, 3], memory: [(GuestAddress(base + (1 << 30)), 1 << 30)]),
        ]
        return config
    }

    @Test(.enabled(if: dtcTool("dtc") != nil && dtcTool("fdtget") != nil,
                   "device-tree-compiler is not installed (Scripts/install-deps.sh installs it)"))
    func nodesAreDescribedAndDtcIsSilent() throws {
        let tree = try DecompiledTree(try ARM64DeviceTree.build(try Self.configuration()), name: "arm64-numa")
        let dts = tree.dts
        #expect(dts.status == 0)
        #expect(dts.err.isEmpty, "dtc warned: \(dts.err)")
        #expect(try tree.get("-t", "u", "/cpus/cpu@1", "numa-node-id") == "0")
        #expect(try tree.get("-t", "u", "/cpus/cpu@2", "numa-node-id") == "1")
        #expect(try tree.get("-t", "u", "/memory@40000000", "numa-node-id") == "0")
        #expect(try tree.get("-t", "x", "/memory@80000000", "reg") == "0 80000000 0 40000000")
        #expect(try tree.get("-t", "u", "/memory@80000000", "numa-node-id") == "1")
        #expect(try tree.get("/distance-map", "compatible") == "numa-distance-map-v1")
        // Node 1 gives no distance to node 0: node 0's entry for node 1 is used both ways.
        #expect(try tree.get("-t", "u", "/distance-map", "distance-matrix") == "0 0 10 0 1 25 1 0 25 1 1 10")
    }

    @Test func oneNodeDescribesNoNUMA() throws {
        var config = try Self.configuration()
        config.numaNodes = [ARM64DeviceTree.NUMANode(id: 0, vcpus: [0, 1, 2, 3], memory: config.memory)]
        let withOne = try ARM64DeviceTree.build(config)
        config.numaNodes = []
        #expect(withOne == (try ARM64DeviceTree.build(config)))
    }

    @Test func inconsistentNodesAreRefusedWithTheReason() throws {
        func refusal(_ change: (inout ARM64DeviceTree.Configuration) -> Void) throws -> String {
            var config = try Self.configuration()
            change(&config)
            do {
                _ = try ARM64DeviceTree.build(config)
                return "accepted"
            } catch {
                return error.description
            }
        }
        #expect(try refusal { $0.numaNodes[1].id = 0 }.contains("same id"))
        #expect(try refusal { $0.numaNodes[1].vcpus = [1, 2, 3] }.contains("vCPU 1 is in nodes 0 and 1"))
        #expect(try refusal { $0.numaNodes[1].vcpus = [2, 3, 9] }.contains("names vCPU 9"))
        #expect(try refusal { $0.numaNodes[0].distances = [1: 10] }.contains("farther than 10"))
        #expect(try refusal { $0.numaNodes[0].distances = [7: 20] }.contains("does not exist"))
        #expect(try refusal { $0.numaNodes[0].distances = [0: 20] }.contains("itself"))
        #expect(try refusal { $0.numaNodes[1].memory = [] }.contains("every byte of RAM"))
        #expect(try refusal { $0.numaNodes[1].memory = $0.numaNodes[0].memory }.contains("share memory"))
        #expect(try refusal { $0.numaNodes[1].memory = [(GuestAddress(0x1000), 4096)] }.contains("not inside one RAM region"))
    }
}
