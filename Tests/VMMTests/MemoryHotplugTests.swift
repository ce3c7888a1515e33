import DeviceModel
import Devices
import GuestMemory
import HostSystem
import Hypervisor
import Synchronization
import Testing
@testable import VMM

/// A VM that only records its memory slots.
final class SlotRecordingVM: VirtualMachine, @unchecked Sendable {
    private let slots: Mutex<[MemorySlot]>
    init(boot: GuestMemory) {
        slots = Mutex([MemorySlot(slot: 0, guestAddress: 0, size: boot.totalSize, hostAddress: boot.regions[0].hostAddress)])
    }
    var memorySlots: [MemorySlot] { slots.withLock { $0 } }
    func setMemorySlot(_ slot: MemorySlot) throws(HypervisorError) { slots.withLock { $0.append(slot) } }
    func removeMemorySlot(_ slot: UInt32) throws(HypervisorError) { slots.withLock { $0.removeAll { $0.slot == slot } } }
    func createVCPU(id: UInt32) throws(HypervisorError) -> any VirtualCPU { throw .invalidArgument("no vCPUs in this fake") }
    func registerIRQFD(_ eventfd: EventFD, gsi: UInt32, resample: EventFD?) throws(HypervisorError) {}
    func unregisterIRQFD(_ eventfd: EventFD, gsi: UInt32) throws(HypervisorError) {}
    func registerIOEventFD(_ eventfd: EventFD, address: IOEventAddress, length: UInt32, datamatch: UInt64?) throws(HypervisorError) {}
    func unregisterIOEventFD(_ eventfd: EventFD, address: IOEventAddress, length: UInt32, datamatch: UInt64?) throws(HypervisorError) {}
    func setGSIRouting(_ routes: [InterruptRoute]) throws(HypervisorError) {}
    func setIRQLine(_ irq: UInt32, active: Bool) throws(HypervisorError) {}
    func signalMSI(address: UInt64, data: UInt32) throws(HypervisorError) {}
    func dirtyLog(slot: UInt32) throws(HypervisorError) -> [UInt64] { [] }
}

/// An interrupt line that counts its edges.
final class CountingLine: InterruptLine {
    private let edges = Atomic<Int>(0)
    var count: Int { edges.load(ordering: .relaxed) }
    func trigger() throws { edges.add(1, ordering: .relaxed) }
    func setLevel(_ asserted: Bool) throws {}
}

@Suite("ACPI memory hotplug: vm.resize desired_ram")
struct MemoryHotplugTests {
    /// 512 MiB of boot RAM at 0 with ACPI hotplug room of `room` bytes from 4 GiB.
    func support(room: UInt64 = 512 << 20) throws -> (MemoryHotplugSupport, SlotRecordingVM, GuestMemory, CountingLine, ACPIGenericEventDevice) {
        var config = MemoryConfig()
        config.size = 512 << 20
        config.hotplugSize = room
        let memory = try GuestMemory.anonymous([(GuestAddress(0), config.size)], options: [.noReserve], spareRegions: 8)
        let vm = SlotRecordingVM(boot: memory)
        let line = CountingLine()
        let ged = ACPIGenericEventDevice(interrupt: line)
        let support = MemoryHotplugSupport(controller: ACPIMemoryHotplugController(), address: 0xc000_3000, ged: ged, vm: vm,
                                           memory: memory, config: config, roomEnd: (4 << 30) + room)
        return (support, vm, memory, line, ged)
    }

    @Test func regionsStartAt4GiBOrTheNext128MiBBoundary() {
        #expect(MemoryHotplugSupport.regionStart(after: (512 << 20) - 1) == 4 << 30)
        #expect(MemoryHotplugSupport.regionStart(after: (4 << 30) + (512 << 20) - 1) == (4 << 30) + (512 << 20))
        #expect(MemoryHotplugSupport.regionStart(after: (4 << 30) + (100 << 20)) == (4 << 30) + (128 << 20))
        var config = MemoryConfig()
        #expect(!VMBuilder.hasACPIMemoryHotplug(config))
        config.hotplugSize = 512 << 20
        #expect(VMBuilder.hasACPIMemoryHotplug(config))
        config.hotplugMethod = .virtioMem
        #expect(!VMBuilder.hasACPIMemoryHotplug(config))
    }

    @Test func growingAddsASlotARegionAndNotifiesTheGED() throws {
        let (support, vm, memory, line, ged) = try support()
        #expect(try support.resize(to: 1024 << 20))
        #expect(support.currentRAM == 1024 << 20 && support.bootRAM == 512 << 20)
        let slot = try #require(vm.memorySlots.last)
        #expect(slot.slot == 1 && slot.guestAddress == 4 << 30 && slot.size == 512 << 20)
        #expect(memory.regions.map(\.start) == [GuestAddress(0), GuestAddress(4 << 30)])
        // The devices' guest memory reaches the new region through the same object.
        try memory.write(UInt64(0x1234), at: GuestAddress((4 << 30) + 0x1000))
        #expect(try memory.read(UInt64.self, at: GuestAddress((4 << 30) + 0x1000)) == 0x1234)
        #expect(support.controller.slots[0] == .init(base: 4 << 30, length: 512 << 20, active: true, inserting: true))
        #expect(line.count == 1 && ged.pendingEvents == .memoryHotplug)
    }

    @Test func shrinkingOrTheSameSizeChangesNothing() throws {
        let (support, vm, memory, line, _) = try support()
        #expect(try !support.resize(to: 512 << 20))
        #expect(try !support.resize(to: 256 << 20))
        #expect(vm.memorySlots.count == 1 && memory.regions.count == 1 && line.count == 0 && support.currentRAM == 512 << 20)
    }

    @Test func refusesWithCloudHypervisorsReasons() throws {
        let (support, vm, memory, line, _) = try support()
        #expect { try support.resize(to: (512 << 20) + (100 << 20)) } throws: { $0 is MemoryResizeRefusal && "\($0)".contains("not a valid size") }
        #expect { try support.resize(to: 2048 << 20) } throws: { $0 is MemoryResizeRefusal && "\($0)".contains("Not enough space in the hotplug RAM region") }
        #expect(vm.memorySlots.count == 1 && memory.regions.count == 1 && line.count == 0 && support.currentRAM == 512 << 20)
        // Two steps fill the room; the second region follows the first.
        #expect(try support.resize(to: 640 << 20))
        #expect(try support.resize(to: 1024 << 20))
        #expect(memory.regions.map(\.start) == [GuestAddress(0), GuestAddress(4 << 30), GuestAddress((4 << 30) + (128 << 20))])
        #expect { try support.resize(to: 1152 << 20) } throws: { "\($0)".contains("Not enough space") }
    }

    @Test func refusesANinthSlot() throws {
        let (support, _, _, _, _) = try support(room: 2 << 30)
        for step in 1...8 { #expect(try support.resize(to: (512 << 20) + UInt64(step) * (128 << 20))) }
        #expect { try support.resize(to: (512 << 20) + 9 * (128 << 20)) } throws: { "\($0)".contains("No ACPI slot available") }
    }

    @Test("vm.resize before boot records desired_ram as memory.size, as Cloud Hypervisor")
    func resizeBeforeBoot() throws {
        let controller = try VMMController(logger: .init(label: "test"))
        var config = VMConfig()
        config.payload = PayloadConfig()
        config.payload?.kernel = "/k"
        try controller.create(config)
        try controller.resize(VMResize(desiredRAM: 1 << 30))
        #expect(try controller.info().config.memory.size == 1 << 30)
        // The size is checked as vm.create checks it; a refused one changes nothing.
        #expect(throws: ControlError.self) { try controller.resize(VMResize(desiredRAM: 4096)) }
        #expect(try controller.info().config.memory.size == 1 << 30)
    }
}
