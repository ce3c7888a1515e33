import Devices
import Foundation
import HostSystem
import Hypervisor
import Logging
import Testing
@testable import VMM

/// PCI hotplug on a machine built on /dev/kvm (not run: the guest's part is played by writing
/// the hotplug registers as its `_EJ0` would): a hot-added disk gets a slot, a BAR, MSI-X
/// vectors and ioeventfds and holds its image's lock; the ejection gives every one back.
@Suite("PCI hotplug on a built machine", .enabled(if: BinaryTests.kvmAvailable, "needs /dev/kvm"))
struct PCIHotplugTests {
    /// How many descriptors this process has open on `path` (other tests run alongside, so
    /// only the image's own descriptors are counted).
    static func openDescriptors(on path: String) -> Int {
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return fds.filter { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\($0)")) == path }.count
    }

    static func image(_ directory: URL, _ name: String) throws -> String {
        let path = directory.appendingPathComponent(name).path
        #expect(FileManager.default.createFile(atPath: path, contents: Data(count: 1 << 20)))
        return path
    }

    /// A machine with 64 MiB, no console and no serial (and what `configure` adds), built on
    /// /dev/kvm as a restore would build it: no kernel loaded, nothing run.
    static func machine(events: EventManager, _ configure: (inout VMConfig) throws -> Void = { _ in }) throws -> BuiltVM {
        var config = VMConfig()
        config.memory.size = 64 << 20
        config.console = ConsoleConfig(mode: .off)
        config.serial = ConsoleConfig(mode: .off)
        try configure(&config)
        return try VMBuilder(hypervisor: try KVMHypervisor(), logger: Logger(label: "test")).build(config, events: events, exits: try ExitSignal(),
                                                                                                  restoring: true)
    }

    @Test("A hot-added disk is announced, holds its lock and resources; the guest's B0EJ write releases all of them")
    func addEjectAndAddAgain() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("pcihp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let boot = try Self.image(directory, "boot.raw")
        let hot = try Self.image(directory, "hot.raw")
        let events = try EventManager()
        let built = try Self.machine(events: events) { $0.disks = [DiskConfig(path: boot)] }
        let support = try #require(built.pciHotplug)
        let registers = try #require(built.deviceManager.device(id: "pci-hotplug")?.resources.mmio.first?.base)
        #expect(built.deviceManager.pciSlots == ["_rng": 1, "_disk0": 2])

        #expect(Self.openDescriptors(on: hot) == 0)
        let first = try built.hotAddDisk(DiskConfig(path: hot), id: "_disk1")
        #expect(first.slot == 3 && first.bdf == "0000:00:03.0")
        #expect(built.pciSegment.bus.device(at: 3) != nil)
        #expect(built.deviceManager.deviceTree["_disk1"]?.pciBDF == "0000:00:03.0")
        #expect(support.controller.pending(segment: 0).up == 1 << 3)
        #expect(support.ged.pendingEvents.contains(.pciHotplug))
        let bar = try #require(built.deviceManager.device(id: "_disk1")?.resources.mmio.first?.base)
        #expect(built.mmio.resolve(bar) != nil)
        #expect(Self.openDescriptors(on: hot) >= 1)
        // The image is locked by the VM: a second opener is refused.
        #expect(throws: (any Error).self) { _ = try DiskImageOpener.open(DiskConfig(path: hot)) }
        // Only removable devices can be removed.
        #expect(throws: VMMError.self) { try built.requestRemoval(id: "_rng") }
        try built.requestRemoval(id: "_disk1")
        #expect(support.controller.pending(segment: 0).down == 1 << 3)

        // The guest's PCEJ: PSEG = 0, then B0EJ = 1 << slot (4-byte writes).
        #expect(built.mmio.write(address: registers + 12, size: 4, value: 0))
        #expect(built.mmio.write(address: registers + 8, size: 4, value: 1 << 3))
        #expect(built.deviceManager.device(id: "_disk1") == nil)
        #expect(built.pciSegment.bus.device(at: 3) == nil)
        #expect(built.mmio.resolve(bar) == nil)
        #expect(Self.openDescriptors(on: hot) == 0)
        do { _ = try DiskImageOpener.open(DiskConfig(path: hot)) }  // the lock went with the device (closed again at once)

        // The slot, the BAR and the vectors are reused.
        let again = try built.hotAddDisk(DiskConfig(path: hot), id: "_disk1")
        #expect(again.slot == 3)
        #expect(built.deviceManager.device(id: "_disk1")?.resources.mmio.first?.base == bar)
        // Ejecting a slot without a removable device (the rng) changes nothing.
        #expect(built.mmio.write(address: registers + 8, size: 4, value: 1 << 1))
        #expect(built.deviceManager.device(id: "_rng") != nil && built.pciSegment.bus.device(at: 1) != nil)
        events.stop()
    }

    @Test("An ejected NIC's TAP is gone when the device leaves the registry, so its name can be taken again at once",
          .enabled(if: tapUsable, "needs CAP_NET_ADMIN and /dev/net/tun"))
    func ejectedNICClosesItsTAP() throws {
        let events = try EventManager()
        defer { events.stop() }
        let built = try Self.machine(events: events)
        let registers = try #require(built.deviceManager.device(id: "pci-hotplug")?.resources.mmio.first?.base)
        let name = "chej\(getpid() % 100000)"
        let added = try built.hotAddNet(NetConfig(tap: name), id: "_net0")
        #expect(FileManager.default.fileExists(atPath: "/sys/class/net/\(name)"))
        // Another thread still holding the device's entry (an API request reading the
        // registry, say) must not keep the interface alive.
        let held = built.deviceManager.device(id: "_net0")
        try built.requestRemoval(id: "_net0")
        #expect(built.mmio.write(address: registers + 12, size: 4, value: 0))
        #expect(built.mmio.write(address: registers + 8, size: 4, value: UInt64(1) << UInt64(added.slot)))
        #expect(built.deviceManager.device(id: "_net0") == nil)
        #expect(!FileManager.default.fileExists(atPath: "/sys/class/net/\(name)"))
        let again = try TapInterface.open(name: name)
        #expect(again.name == name)
        #expect(held?.id == "_net0")
    }

    @Test("The configuration pins ids and PCI slots: removing a device does not renumber the others")
    func pinning() {
        var config = VMConfig()
        config.disks = [DiskConfig(path: "/a"), DiskConfig(path: "/b")]
        config.pinDevices(slots: ["_disk0": 2, "_disk1": 5])
        #expect(config.disks?.map(\.id) == ["_disk0", "_disk1"])
        #expect(config.disks?.map(\.pciDeviceID) == [2, 5])
        config.disks?.remove(at: 0)
        #expect(config.diskIDs == ["_disk1"])
        #expect(config.absentFeatures.isEmpty)
    }
}
