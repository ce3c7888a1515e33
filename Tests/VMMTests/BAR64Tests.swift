import DeviceModel
import GuestMemory
import HostSystem
import Interrupts
import Logging
import PCI
import Testing
import VirtioDevices
import VMAllocator
@testable import VMM

/// Virtio BARs in the segments' 64-bit windows above RAM, as Cloud Hypervisor places them.
@Suite("64-bit BAR windows")
struct BAR64Tests {
    /// The BAR windows of a two-segment machine whose 64-bit device area starts at 256 GiB.
    static func windows() throws -> [BARWindows] {
        let plan = try PCISegmentLayout.plan(weights: ([1, 1], [1, 1]), deviceArea: (0x40_0000_0000, 0xbf_fff0_0000))
        return plan.map {
            BARWindows(mmio32: AddressAllocator(name: "s\($0.id) 32", pool: $0.mmio32),
                       mmio64: AddressAllocator(name: "s\($0.id) 64", pool: $0.mmio64))
        }
    }

    @Test("every virtio device gets a 64-bit BAR but a virtio-blk disk present at boot on segment 0 (Cloud Hypervisor's use_64bit_bar_for_virtio_device)")
    func whichWindow() {
        #expect(!BARWindows.uses64BitBAR(deviceType: .block, segment: 0, hotplug: false))
        #expect(BARWindows.uses64BitBAR(deviceType: .block, segment: 0, hotplug: true))
        #expect(BARWindows.uses64BitBAR(deviceType: .block, segment: 1, hotplug: false))
        for type in [VirtioDeviceType.net, .rng, .console, .pmem, .vsock, .balloon, .fs] {
            #expect(BARWindows.uses64BitBAR(deviceType: type, segment: 0, hotplug: false), "\(type)")
        }
    }

    @Test("a 64-bit BAR comes top-down, 8 MiB aligned, from the segment's 64-bit window; a 32-bit one from its 32-bit window; a saved placement is reused; frees go back to the right window")
    func allocation() throws {
        var windows = try Self.windows()
        let top = windows[1].mmio64!.pool.end
        let bar64 = try windows[1].allocateBAR(index: 0, size: 0x8_0000, use64Bit: true)
        #expect(bar64.kind == .memory64 && !bar64.prefetchable)
        #expect(bar64.address % BARWindows.bar64Alignment == 0 && bar64.address >= 0x80_0000_0000)
        #expect(bar64.address + 0x8_0000 - 1 <= top && top - bar64.address < 2 * BARWindows.bar64Alignment, "the highest aligned slot")
        let second = try windows[1].allocateBAR(index: 0, size: 0x8_0000, use64Bit: true)
        #expect(second.address == bar64.address - BARWindows.bar64Alignment)
        let bar32 = try windows[0].allocateBAR(index: 0, size: 0x8_0000, use64Bit: false)
        #expect(bar32.kind == .memory32 && bar32.address == windows[0].mmio32.pool.start)

        // A pmem range shares the 64-bit allocator: it cannot land on a BAR.
        var area = windows[1].mmio64!
        let pmem = try area.allocate(size: 0x20_0000, alignment: 0x20_0000, policy: .lastFit)
        #expect(pmem.end < second.address || pmem.start > bar64.address + 0x8_0000 - 1)

        // A restore puts the BAR where the snapshot says, with its kind, whatever the device is.
        var fresh = try Self.windows()
        let saved = DevicePlacement.BAR(second)
        let again = try fresh[1].allocateBAR(index: 0, size: 0x8_0000, use64Bit: false, saved: saved)
        #expect(again == second)
        #expect(throws: (any Error).self) { _ = try fresh[1].allocateBAR(index: 0, size: 0x8_0000, use64Bit: true, saved: saved) }

        let freed = windows[1].free(second)
        let freedTwice = windows[1].free(second)
        #expect(freed && !freedTwice, "freed once")
        #expect(try windows[1].allocateBAR(index: 0, size: 0x8_0000, use64Bit: true) == second, "the freed slot is the next one")
        let freed32 = windows[0].free(bar32)
        #expect(freed32 && windows[0].mmio32.allocations.isEmpty)
    }

    @Test("the device manager gives an ejected device's 64-bit BAR back to its segment's 64-bit window")
    func freeOnUnplug() throws {
        let manager = DeviceManager(windows: try Self.windows())
        var bar: PCIBAR?
        try manager.withAllocators(segment: 0) { windows in bar = try windows.allocateBAR(index: 0, size: 0x8_0000, use64Bit: true) }
        let allocated = try #require(bar)
        #expect(manager.windows(segment: 0)?.mmio64?.allocations.count == 1)
        manager.freeBAR(allocated)
        #expect(manager.windows(segment: 0)?.mmio64?.allocations.isEmpty == true)
        #expect(manager.windows(segment: 1)?.mmio64?.allocations.isEmpty == true)
    }

    @Test("a snapshot's device entry records the BARs with their types and a pmem range, and decodes back")
    func placementRecord() throws {
        var resources = DeviceResources(pciBDF: "0001:00:01.0", mmio: [(0xff_ff80_0000, 0x8_0000)],
                                        bars: [PCIBAR(index: 0, kind: .memory64, size: 0x8_0000, address: 0xff_ff80_0000)])
        resources.range64 = (0xff_fe00_0000, 0x20_0000)
        let entry = DeviceManagerSection.Entry(id: "_pmem0", kind: "virtio-pmem", placement: resources.placement)
        let text = try SnapshotJSON.text(DeviceManagerSection(devices: [entry, .init(id: "serial", kind: "serial-16550")]))
        #expect(text.contains("\"type\":\"mmio64\""))
        let decoded = try SnapshotJSON.value(DeviceManagerSection.self, from: text)
        #expect(decoded.placements == ["_pmem0": DevicePlacement(bars: [.init(PCIBAR(index: 0, kind: .memory64, size: 0x8_0000, address: 0xff_ff80_0000))],
                                                                range64: [0xff_fe00_0000, 0x20_0000])])
        // A section written before placements were recorded still decodes, with none.
        let old = try SnapshotJSON.value(DeviceManagerSection.self, from: "{\"devices\":[{\"id\":\"_rng\",\"kind\":\"virtio-rng\"}]}")
        #expect(old.placements.isEmpty)
    }

    @Test("a virtio BAR above 4 GiB: both dwords encode it (64-bit, not prefetchable), sizing with all ones on both reads the size and moves nothing, and a guest move of both halves moves the MMIO window and the notifiers")
    func guestReprogramsBothHalves() throws {
        let memory = try GuestMemory.anonymous([(GuestAddress(0), 1 << 20)])
        let vm = InertVM()
        let routing = try KVMMSIXRouting(router: try GSIRouter(vm: vm), count: 2)
        let source = try OwnedFileDescriptor(path: "/dev/urandom", flags: 0)
        let old: UInt64 = 0xff_ff80_0000
        let transport = try VirtioPCIDevice(device: VirtioRng(source: FileEntropySource(fileDescriptor: source.rawValue)), memory: memory,
                                            msixRouting: routing, barAddress: old)
        let mmio = Bus(name: "MMIO bus")
        let events = try EventManager()
        let mover = BARMover(mmio: mmio, vm: vm, events: events, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        let bus = PCIBus(relocation: mover)
        let slot = try bus.add(transport)
        try mmio.insert(PCIBARRegion(device: transport, index: 0), base: old, length: VirtioPCILayout.barSize)
        let attachment = VirtioPCIAttachment(transport: transport, routing: routing, backend: nil, slot: slot)
        try attachment.registerNotifiers(vm: vm, events: events)
        mover.track(attachment)
        func read(_ register: Int) -> UInt32 { bus.readConfig(bus: 0, device: slot, function: 0, offset: register * 4, size: 4) }
        func write(_ register: Int, _ value: UInt32) { bus.writeConfig(bus: 0, device: slot, function: 0, offset: register * 4, size: 4, value: value) }

        #expect(read(4) == 0xff80_0004, "low dword: address bits 31-4 and type 10b (64-bit), not prefetchable")
        #expect(read(5) == 0xff, "high dword")
        // Linux's __pci_read_base: all ones into both halves, read, put both back.
        write(4, 0xffff_ffff)
        write(5, 0xffff_ffff)
        #expect(read(4) == 0xfff8_0004 && read(5) == 0xffff_ffff, "the size mask (512 KiB) across both dwords")
        write(4, 0xff80_0004)
        write(5, 0xff)
        #expect(transport.bars.first?.address == old)
        #expect(BARMover.isWindow(of: transport, index: 0, at: old, on: mmio), "sizing moved nothing")

        // A move to another 64-bit address changes both halves; it takes effect with the upper one.
        let new: UInt64 = 0xc0_0010_0000
        write(4, 0x0010_0000)
        #expect(BARMover.isWindow(of: transport, index: 0, at: old, on: mmio), "nothing moves on the lower half alone")
        write(5, 0xc0)
        #expect(transport.bars.first?.address == new)
        #expect(mmio.resolve(old) == nil)
        #expect(BARMover.isWindow(of: transport, index: 0, at: new, on: mmio))
        #expect(transport.notifyAddress(queue: 0).map { $0 >= new && $0 < new + VirtioPCILayout.barSize } == true,
                "the notify address follows the BAR")
    }
}
