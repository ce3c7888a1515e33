import ACPITables
import Arch
import DeviceModel
import Foundation
import Hypervisor
import HypervisorTesting
import Logging
import PCI
import Testing
import VMAllocator
@testable import CloudHypervisor
@testable import VMM

@Suite("PCI segments: Cloud Hypervisor's layout, validation and buses")
struct PCISegmentTests {
    /// The 64-bit device area of a 256 MiB guest with 40 address bits (as in the nested bench).
    static let area = (base: UInt64(0x1_0000_0000), size: UInt64(0xFF_FFEF_0000 - 0x1_0000_0000))

    @Test("one segment has the whole 32-bit device window and the whole 64-bit device area, ECAM at 0xE8000000")
    func oneSegment() throws {
        let windows = try PCISegmentLayout.plan(weights: ([1], [1]), deviceArea: Self.area)
        #expect(windows.count == 1)
        #expect(windows[0].ecamBase == 0xE800_0000)
        #expect(windows[0].mmio32.start == 0xC000_0000 && windows[0].mmio32.size == 640 << 20)
        #expect(windows[0].mmio64.start == Self.area.base && windows[0].mmio64.size == Self.area.size)
    }

    @Test("two segments split both windows in halves (the 64-bit share 4 GiB aligned, the last one to the top); ECAM 1 MiB apart")
    func twoSegments() throws {
        let windows = try PCISegmentLayout.plan(weights: ([1, 1], [1, 1]), deviceArea: Self.area)
        #expect(windows.map(\.id) == [0, 1])
        #expect(windows.map(\.ecamBase) == [0xE800_0000, 0xE810_0000])
        #expect(windows.map(\.mmio32.start) == [0xC000_0000, 0xD400_0000])
        #expect(windows.map(\.mmio32.end) == [0xD3FF_FFFF, 0xE7FF_FFFF])
        #expect(windows.map(\.mmio64.start) == [0x1_0000_0000, 0x80_0000_0000])
        #expect(windows.map(\.mmio64.end) == [0x7F_FFFF_FFFF, 0xFF_FFEE_FFFF])
        #expect(windows[1].hostBridge.segment == 1 && windows[1].hostBridge.mmio32.base == 0xD400_0000)
        #expect(windows[1].mcfg == MCFG.Allocation(baseAddress: 0xE810_0000, segment: 1))
    }

    @Test("weights share the windows in proportion; 96 segments fit; too small a 64-bit area for the count is refused")
    func weights() throws {
        let ranges = try PCISegmentLayout.split(base: 0xC000_0000, size: 640 << 20, weights: [3, 1], alignment: 4 << 10, what: "test")
        #expect(ranges.map(\.size) == [480 << 20, 160 << 20])
        let many = try PCISegmentLayout.plan(weights: ([UInt32](repeating: 1, count: 96), [UInt32](repeating: 1, count: 96)),
                                             deviceArea: Self.area)
        #expect(many.count == 96 && many.last?.ecamBase == 0xE800_0000 + 95 << 20)
        #expect(many.last?.mmio32.end == 0xE7FF_FFFF && many.last?.mmio64.end == 0xFF_FFEE_FFFF)
        for (a, b) in zip(many, many.dropFirst()) {
            #expect(a.mmio32.end + 1 == b.mmio32.start && a.mmio64.end + 1 == b.mmio64.start)
            #expect(b.mmio64.start % (4 << 30) == 0)
        }
        #expect(throws: VMMError.self) {
            _ = try PCISegmentLayout.plan(weights: ([1, 1], [1, 1]), deviceArea: (base: 0x1_0000_0000, size: 4 << 30))
        }
    }

    func config(_ arguments: [String]) throws -> VMConfig {
        let command = try CloudHypervisorCommand.parse(CloudHypervisorCommand.normalize(["--kernel", "/k"] + arguments))
        let config = try command.makeConfig()
        return try #require(config)
    }

    @Test("--platform num_pci_segments= and pci_segment= on every PCI device parse and validate below the count")
    func commandLine() throws {
        let config = try config(["--platform", "num_pci_segments=2", "--disk", "path=/tmp/a", "path=/tmp/b,pci_segment=1",
                                 "--net", "tap=t0,pci_segment=1", "--rng", "src=/dev/urandom,pci_segment=1",
                                 "--console", "off,pci_segment=1", "--pmem", "file=/tmp/p,size=2M,pci_segment=1",
                                 "--vsock", "cid=3,socket=/tmp/v,pci_segment=1",
                                 "--pci-segment", "pci_segment=1,mmio32_aperture_weight=3,mmio64_aperture_weight=2"])
        #expect(config.pciSegmentCount == 2)
        #expect(config.disks?.map(\.pciSegment) == [0, 1] && config.net?.first?.pciSegment == 1)
        #expect(config.rng.pci.pciSegment == 1 && config.console.pci.pciSegment == 1)
        #expect(config.pmem?.first?.pci.pciSegment == 1 && config.vsock?.pci.pciSegment == 1)
        #expect(config.absentFeatures.isEmpty)
        try config.validate()
        #expect(config.pciApertureWeights.mmio32 == [1, 3] && config.pciApertureWeights.mmio64 == [1, 2])
    }

    @Test("Cloud Hypervisor's refusals: a count outside 1...96, a segment at or above the count, an aperture weight of 0",
          arguments: [
              (["--platform", "num_pci_segments=0"], "--platform", "Number of PCI segments (0) not in range of 1 to 96"),
              (["--platform", "num_pci_segments=97"], "--platform", "Number of PCI segments (97) not in range of 1 to 96"),
              (["--disk", "path=/tmp/a,pci_segment=1"], "--disk", "Invalid PCI segment id: 1"),
              (["--platform", "num_pci_segments=2", "--net", "tap=t0,pci_segment=2"], "--net", "Invalid PCI segment id: 2"),
              (["--rng", "src=/dev/urandom,pci_segment=1"], "--rng", "Invalid PCI segment id: 1"),
              (["--console", "off,pci_segment=3"], "--console", "Invalid PCI segment id: 3"),
              (["--pmem", "file=/tmp/p,size=2M,pci_segment=1"], "--pmem", "Invalid PCI segment id: 1"),
              (["--vsock", "cid=3,socket=/tmp/v,pci_segment=1"], "--vsock", "Invalid PCI segment id: 1"),
              (["--pci-segment", "pci_segment=1"], "--pci-segment", "Invalid PCI segment id: 1"),
              (["--pci-segment", "pci_segment=0,mmio64_aperture_weight=0"], "--pci-segment", "Invalid PCI segment aperture weight: 0"),
          ])
    func refusals(arguments: [String], option: String, message: String) throws {
        // The binary's parsing validates too: the refusal comes from there.
        let error = #expect(throws: ConfigError.self) { try self.config(arguments).validate() }
        #expect(error?.option == option, "\(error?.description ?? "")")
        #expect(error?.message.hasPrefix(message) == true, "\(error?.description ?? "")")
    }

    @Test("the device manager allocates from each segment's own 32-bit window and names an absent segment")
    func deviceManager() throws {
        let windows = try PCISegmentLayout.plan(weights: ([1, 1], [1, 1]), deviceArea: Self.area)
        let manager = DeviceManager(mmio32: windows.map { AddressAllocator(name: "s\($0.id)", pool: $0.mmio32) },
                                    mmio64: windows.map { AddressAllocator(name: "s\($0.id)", pool: $0.mmio64) })
        #expect(try manager.allocateMMIO32(size: 0x1000, alignment: 0x1000).start == 0xC000_0000)
        #expect(try manager.allocateMMIO32(segment: 1, size: 0x1000, alignment: 0x1000).start == 0xD400_0000)
        #expect(throws: VMMError.self) { _ = try manager.allocateMMIO32(segment: 2, size: 0x1000, alignment: 0x1000) }
    }

    struct NoRelocation: PCIDeviceRelocation {
        func moveBAR(_ change: BARReprogram, of device: any PCIDevice) {}
    }

    @Test("each segment's bus answers at its own ECAM window; the 0xCF8 ports reach segment 0 only",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func buses() throws {
        let builder = VMBuilder(hypervisor: try KVMHypervisor(), logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        let pio = Bus(name: "pio"), mmio = Bus(name: "mmio")
        let windows = try PCISegmentLayout.plan(weights: ([1, 1], [1, 1]), deviceArea: Self.area)
        let segments = try builder.attachPCISegments(windows, pio: pio, mmio: mmio, relocation: NoRelocation())
        #expect(segments.map(\.id) == [0, 1])
        // A second host bridge stands in for a device at 0001:00:05.0.
        try segments[1].bus.add(PCIHostBridge(name: "probe"), at: 5)
        let slot5 = PCIConfigMMIO.offset(bus: 0, device: 5, function: 0, register: 0)
        #expect(mmio.read(address: 0xE810_0000 + slot5, size: 4) == 0x0D57_8086)
        #expect(mmio.read(address: 0xE800_0000 + slot5, size: 4) == 0xFFFF_FFFF)
        #expect(mmio.read(address: 0xE810_0000, size: 4) == 0x0D57_8086)
        // 0xCF8 selects bus 0 device 5 of segment 0: nobody answers there.
        #expect(pio.write(address: 0xCF8, size: 4, value: 0x8000_0000 | 5 << 11))
        #expect(pio.read(address: 0xCFC, size: 4) == 0xFFFF_FFFF)
        #expect(pio.write(address: 0xCF8, size: 4, value: 0x8000_0000))
        #expect(pio.read(address: 0xCFC, size: 4) == 0x0D57_8086)
    }

    @Test("cloud-hypervisor --platform num_pci_segments=2 puts a disk and the rng on segment 1 (0001:00:SS.0) and boots; a segment beyond the count is refused",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func binary() throws {
        let kernel = try BinaryTests.temporaryFile("segments.elf", TinyKernel.pvhELF(code: BinaryTests.printAndPowerOff))
        let image = try BinaryTests.temporaryFile("segments.img", [UInt8](repeating: 0, count: 1 << 20))
        defer { try? FileManager.default.removeItem(atPath: kernel); try? FileManager.default.removeItem(atPath: image) }
        let run = try BinaryTests.run(["-v", "--kernel", kernel, "--serial", "tty", "--console", "off", "--memory", "size=64M",
                                       "--platform", "num_pci_segments=2", "--rng", "src=/dev/urandom,pci_segment=1",
                                       "--disk", "path=\(image),pci_segment=1"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stderr.contains("PCI segment 1: ECAM at 0xe8100000, 32-bit window [0xd4000000-0xe7ffffff]"), "\(run.stderr)")
        // Both take 64-bit BARs from segment 1's 64-bit window (Cloud Hypervisor's rule for any
        // segment above 0), top-down.
        func hexAfter(_ marker: String, until end: Character) -> UInt64? {
            guard let range = run.stderr.range(of: marker) else { return nil }
            return UInt64(run.stderr[range.upperBound...].prefix { $0 != end && $0 != "\n" }, radix: 16)
        }
        let windowStart = try #require(hexAfter("PCI segment 1: ECAM at 0xe8100000, 32-bit window [0xd4000000-0xe7ffffff], 64-bit window [0x", until: "-"))
        let rng = try #require(hexAfter("virtio-rng at 0001:00:01.0, BAR 0 (64-bit memory) at 0x", until: " "), "\(run.stderr)")
        let block = try #require(hexAfter("virtio-block at 0001:00:02.0, BAR 0 (64-bit memory) at 0x", until: " "), "\(run.stderr)")
        #expect(rng >= windowStart && rng % 0x80_0000 == 0 && block == rng - 0x80_0000, "\(run.stderr)")
        let beyond = try BinaryTests.run(["--kernel", kernel, "--platform", "num_pci_segments=2", "--disk", "path=\(image),pci_segment=2"])
        #expect(beyond.status != 0 && beyond.stderr.contains("Invalid PCI segment id: 2"), "\(beyond.stderr)")
    }

    @Test("a VM with devices on segment 1 is snapshotted and restored with them at the same addresses, its count going on",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func snapshotKeepsSegments() throws {
        let work = NSTemporaryDirectory() + "ch-segments-snapshot-\(getpid())"
        try? FileManager.default.removeItem(atPath: work)
        try FileManager.default.createDirectory(atPath: work + "/snap", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let kernel = work + "/counter.elf", serial = work + "/serial", socket = work + "/api.sock", image = work + "/disk.img"
        try Data(TinyKernel.pvhELF(code: SnapshotBinaryTests.counter)).write(to: URL(fileURLWithPath: kernel))
        try Data(count: 1 << 20).write(to: URL(fileURLWithPath: image))
        let first = try SnapshotBinaryTests.start(["-v", "--kernel", kernel, "--serial", "file=\(serial)", "--console", "off",
                                                   "--memory", "size=32M", "--api-socket", "path=\(socket)",
                                                   "--platform", "num_pci_segments=2", "--rng", "src=/dev/urandom,pci_segment=1",
                                                   "--disk", "path=\(image),pci_segment=1"], log: work + "/first.log")
        defer { SnapshotBinaryTests.kill(first) }
        #expect(SnapshotBinaryTests.waitFor({ SnapshotBinaryTests.contents(serial).utf8.count >= 8 }, seconds: 60))
        try APILifecycleTests.chRemote(socket, ["pause"])
        try APILifecycleTests.chRemote(socket, ["snapshot", "file://\(work)/snap"])
        SnapshotBinaryTests.kill(first)
        let before = try #require(SnapshotBinaryTests.counts(SnapshotBinaryTests.contents(serial)))
        let config = SnapshotBinaryTests.contents(work + "/snap/config.json")
        #expect(config.contains("\"num_pci_segments\":2"), "\(config)")

        let start = SnapshotBinaryTests.contents(serial).utf8.count
        let restored = try SnapshotBinaryTests.start(["-v", "--restore", "source_url=file://\(work)/snap,resume=on"], log: work + "/restore.log")
        defer { SnapshotBinaryTests.kill(restored) }
        #expect(SnapshotBinaryTests.waitFor({ SnapshotBinaryTests.contents(serial).utf8.count >= start + 8 }, seconds: 60),
                "\(SnapshotBinaryTests.contents(work + "/restore.log"))")
        SnapshotBinaryTests.kill(restored)
        let log = SnapshotBinaryTests.contents(work + "/restore.log")
        for line in ["PCI segment 1: ECAM at 0xe8100000", "virtio-rng at 0001:00:01.0", "virtio-block at 0001:00:02.0"] {
            #expect(log.contains(line), "the restored VM lacks \(line): \(log)")
        }
        let after = try #require(SnapshotBinaryTests.counts(String(SnapshotBinaryTests.contents(serial).dropFirst(start))))
        #expect(after == Array((before.count + 1)...(before.count + after.count)), "\(after) after \(before.count)")
    }
}
