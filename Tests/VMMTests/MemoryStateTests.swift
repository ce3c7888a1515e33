import Devices
import Foundation
import GuestMemory
import HostSystem
import Hypervisor
import Logging
import Testing
import VirtioDevices
@testable import VMM

/// The memory manager's state through a snapshot, in one process on `/dev/kvm`: a machine
/// built, grown by ACPI memory hotplug (or with virtio-mem blocks plugged), saved with
/// `VMSnapshotter`, and a second machine built and restored from the files.
@Suite("memory manager state: hot-added memory and virtio-mem across snapshot and restore", .serialized)
struct MemoryStateTests {
    static let quiet = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    func build(_ config: VMConfig, state: MemoryManagerSnapshotData? = nil) throws -> BuiltVM {
        try VMBuilder(hypervisor: try KVMHypervisor(), logger: Self.quiet)
            .build(config, events: try EventManager(), exits: try ExitSignal(), restoring: true, memoryState: state)
    }

    static func baseConfig() -> VMConfig {
        var config = VMConfig()
        config.payload = PayloadConfig()
        config.payload?.kernel = "/nonexistent/vmlinux"
        config.console = ConsoleConfig(mode: .off)
        config.serial = ConsoleConfig(mode: .off)
        config.memory.size = 32 << 20
        return config
    }

    /// A fresh snapshot directory; the caller removes it.
    static func directory(_ name: String) throws -> String {
        let path = NSTemporaryDirectory() + "ch-memstate-\(name)-\(getpid())"
        try? FileManager.default.removeItem(atPath: path)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    static func slots(_ built: BuiltVM) -> [[UInt64]] {
        built.vm.memorySlots.map { [UInt64($0.slot), $0.guestAddress, $0.size] }.sorted { $0[0] < $1[0] }
    }

    @Test("Memory hot-added by ACPI comes back at its address, in its KVM slot (after a pmem's), with its bytes and the controller's slots",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func acpiHotAddedRoundTrip() throws {
        let work = try Self.directory("acpi")
        defer { try? FileManager.default.removeItem(atPath: work) }
        _ = FileManager.default.createFile(atPath: work + "/pmem.img", contents: Data(count: 2 << 20))
        try FileManager.default.createDirectory(atPath: work + "/snap", withIntermediateDirectories: true)
        var config = Self.baseConfig()
        config.memory.hotplugSize = 256 << 20
        config.pmem = [PmemConfig(file: work + "/pmem.img")]
        let source = try build(config)
        let hotplug = try #require(source.memoryHotplug)
        #expect(try hotplug.resize(to: 160 << 20))
        source.setMemorySize(160 << 20)
        // The guest selected slot 0 and acknowledged the insertion.
        hotplug.controller.write(offset: ACPIMemoryHotplugController.selectionOffset, size: 4, value: 0)
        hotplug.controller.write(offset: ACPIMemoryHotplugController.statusOffset, size: 1, value: UInt64(ACPIMemoryHotplugController.Status.inserting.rawValue))
        let marker: UInt64 = 0x1234_5678_9abc_def0
        try source.memory.write(marker, at: GuestAddress((4 << 30) + 0x10_0000))
        // Boot RAM in slot 0, the pmem in slot 1, the hot-added region in slot 2.
        let before = Self.slots(source)
        #expect(before.count == 3 && before[0] == [0, 0, 32 << 20] && before[1][0] == 1 && before[1][2] == 2 << 20
                && before[2] == [2, 4 << 30, 128 << 20], "\(before)")

        try VMSnapshotter.save(source, to: try SnapshotDirectory(url: "file://\(work)/snap"), vmmVersion: "test")
        let loaded = try VMSnapshotter.load(from: try SnapshotDirectory(url: "file://\(work)/snap"))
        let state = try VMSnapshotter.memoryState(loaded.tree)
        #expect(state.bootRAM == 32 << 20 && state.currentRAM == 160 << 20 && loaded.config.memory.size == 160 << 20)
        #expect(try state.hotAddedMappings() == [GuestRamMapping(slot: 2, gpa: 4 << 30, size: 128 << 20, virtioMem: false)])
        #expect(state.hotplugSlots.count == ACPIMemoryHotplugController.slotCount && state.nextHotplugSlot == 1)

        let restored = try build(loaded.config, state: state)
        _ = try VMSnapshotter.restore(loaded, into: restored, onDemand: false, prefault: false)
        #expect(Self.slots(restored) == Self.slots(source))
        #expect(try restored.memory.read(UInt64.self, at: GuestAddress((4 << 30) + 0x10_0000)) == marker)
        let again = try #require(restored.memoryHotplug)
        #expect(again.controller.saveState() == hotplug.controller.saveState())
        #expect(again.controller.slots[0] == .init(base: 4 << 30, length: 128 << 20, active: true, inserting: false))
        #expect(again.bootRAM == 32 << 20 && again.currentRAM == 160 << 20)
        // It grows on from there: the next region after the first, the next controller and KVM slots.
        #expect(try again.resize(to: 288 << 20))
        #expect(Self.slots(restored).last == [3, (4 << 30) + (128 << 20), 128 << 20])
        #expect(again.controller.slots[1] == .init(base: (4 << 30) + (128 << 20), length: 128 << 20, active: true, inserting: true))

        // A state whose hot-added slot another memory region holds here is refused with the reason.
        var clash = state
        clash.guestRAMMappings = clash.guestRAMMappings.map { $0.gpa == 4 << 30 ? GuestRamMapping(slot: 1, gpa: $0.gpa, size: $0.size, virtioMem: false) : $0 }
        #expect { _ = try build(loaded.config, state: clash) } throws: { "\($0)".contains("KVM memory slot 1 of the hot-added region") }
        // Hot-added memory without ACPI memory hotplug in the configuration is refused too.
        var plain = loaded.config
        plain.memory.hotplugSize = nil
        #expect { _ = try build(plain, state: state) } throws: { "\($0)".contains("no ACPI memory hotplug") }
        // So is a slot the mappings do not have.
        var lost = state
        lost.guestRAMMappings.removeLast()
        #expect { _ = try lost.hotAddedMappings() } throws: { "\($0)".contains("which no guest RAM mapping has") }
    }

    @Test("virtio-mem's region, its plugged blocks and their bytes come back from a snapshot",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func virtioMemRoundTrip() throws {
        let work = try Self.directory("virtiomem")
        defer { try? FileManager.default.removeItem(atPath: work) }
        var config = Self.baseConfig()
        config.memory.hotplugMethod = .virtioMem
        config.memory.hotplugSize = 128 << 20
        config.memory.hotpluggedSize = 64 << 20
        let source = try build(config)
        let device = try #require(source.virtioMem).device
        // What a driver would have done: plug the first 64 MiB (blocks of 2 MiB).
        guard case .mem(var state) = device.saveDeviceState().state else { Issue.record("not a virtio-mem state"); return }
        let blocks = Int((64 << 20) / state.configuration.blockSize)
        for index in 0..<blocks { state.plugged[index] = true }
        state.configuration.pluggedSize = 64 << 20
        try device.restoreDeviceState(.mem(state))
        let region = try #require(try VirtioMemSupport.region(config.memory))
        try source.memory.write(UInt64(0xfeed_f00d), at: GuestAddress(region.start + 0x20_0000))

        try VMSnapshotter.save(source, to: try SnapshotDirectory(url: "file://\(work)"), vmmVersion: "test")
        let loaded = try VMSnapshotter.load(from: try SnapshotDirectory(url: "file://\(work)"))
        let memoryState = try VMSnapshotter.memoryState(loaded.tree)
        #expect(memoryState.bootRAM == 32 << 20 && memoryState.currentRAM == 96 << 20)
        #expect(memoryState.guestRAMMappings.map(\.virtioMem) == [false, true] && memoryState.guestRAMMappings[1].gpa == region.start)
        let restored = try build(loaded.config, state: memoryState)
        _ = try VMSnapshotter.restore(loaded, into: restored, onDemand: false, prefault: false)
        let copy = try #require(restored.virtioMem).device
        #expect(copy.pluggedBlocks == device.pluggedBlocks && copy.pluggedBlocks.filter { $0 }.count == blocks)
        #expect(copy.configuration == device.configuration && copy.pluggedSize == 64 << 20)
        #expect(try restored.memory.read(UInt64.self, at: GuestAddress(region.start + 0x20_0000)) == 0xfeed_f00d)
        #expect(Self.slots(restored) == Self.slots(source))
    }
}
