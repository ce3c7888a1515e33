import GuestMemory
import DeviceModel
import PCI
import Synchronization
import VMAllocator

/// What the device manager records of one device's place in the machine.
struct DeviceResources: Equatable, Sendable {
    /// The PCI address as Cloud Hypervisor prints it (`0000:00:03.0`), for PCI functions.
    var pciBDF: String?
    /// MMIO ranges (BARs, platform registers) as (base, length).
    var mmio: [(base: UInt64, length: UInt64)] = []
    /// Port I/O ranges as (base, length).
    var pio: [(base: UInt64, length: UInt64)] = []
    /// Interrupt lines (GSIs) the device raises directly.
    var gsis: [UInt32] = []
    /// The PCI BARs as they were allocated (also in ``mmio``), with their kinds.
    var bars: [PCIBAR] = []
    /// A range of the segment's 64-bit window besides the BARs (a pmem device's memory), as (base, size).
    var range64: (base: UInt64, size: UInt64)?

    /// Where the device sits, as a snapshot records it; nil for a device without BARs.
    var placement: DevicePlacement? {
        guard !bars.isEmpty else { return nil }
        return DevicePlacement(bars: bars.map(DevicePlacement.BAR.init), range64: range64.map { [$0.base, $0.size] })
    }

    /// The device number on the segment's bus, from ``pciBDF`` (`0000:00:05.0` is 5).
    var pciSlot: Int? {
        guard let bdf = pciBDF else { return nil }
        let parts = bdf.split(separator: ":")
        guard parts.count == 3 else { return nil }
        return Int(parts[2].prefix { $0 != "." }, radix: 16)
    }

    static func == (lhs: DeviceResources, rhs: DeviceResources) -> Bool {
        lhs.pciBDF == rhs.pciBDF && lhs.gsis == rhs.gsis
            && lhs.mmio.map { [$0.base, $0.length] } == rhs.mmio.map { [$0.base, $0.length] }
            && lhs.pio.map { [$0.base, $0.length] } == rhs.pio.map { [$0.base, $0.length] }
            && lhs.bars == rhs.bars && lhs.range64.map { [$0.base, $0.size] } == rhs.range64.map { [$0.base, $0.size] }
    }
}

/// How the device manager reaches one device: its counters, and its state as JSON text
/// (each device's own versioned `State`, encoded by the device's adapter).
struct ManagedDevice: Sendable {
    /// Cloud Hypervisor's device id (`_disk0`, `_net1`, `_rng`, `_console`...) or a fixed name for
    /// platform devices (`serial`, `i8042`, `cmos`...).
    var id: String
    /// What it is (`virtio-block`, `serial-16550`...), recorded in the snapshot and checked on restore.
    var kind: String
    /// Where it sits.
    var resources: DeviceResources
    /// Cloud Hypervisor's counters for `vm.counters`, or nil for a device without any.
    var counters: (@Sendable () -> [String: UInt64])?
    /// The device's state as JSON text, or nil for a device that keeps none.
    var saveState: (@Sendable () throws -> String)?
    /// Restores the device from `saveState`'s text; throws with the reason, changing nothing.
    var restoreState: (@Sendable (String) throws -> Void)?
    /// Whether the device's state is restored before every other device's (a virtual IOMMU,
    /// whose mappings the other devices' queues translate through when restored).
    var restoresFirst = false
    /// Releases the host locks the device holds (a disk's image locks) so another VMM can
    /// take them (a live migration's destination); nil for a device without any.
    var releaseLocks: (@Sendable () -> Void)?
    /// Takes them again (a migration that failed).
    var retakeLocks: (@Sendable () throws -> Void)?
    /// Changes a disk's size in bytes (`vm.resize-disk`); nil for a device that is not a disk.
    var resize: (@Sendable (UInt64) throws -> Void)?
    /// Tells a device that maps guest memory itself (a vhost-user back-end) about a region
    /// hot-added to it, before the guest learns of it; nil for the others.
    var memoryAdded: (@Sendable (GuestMemoryRegion) throws -> Void)?
    /// Gives back everything the device holds once the guest ejected it (PCI slot, BARs,
    /// ioeventfds, MSI-X routes, host resources); nil for a device that cannot be removed.
    var unplug: (@Sendable (DeviceManager) -> Void)?
    /// Waits for the device's requests in flight and finishes them (a disk's io_uring
    /// requests), so a pause leaves no half-done request for a snapshot or migration to lose.
    var drain: (@Sendable () -> Void)?
    /// Closes what the device holds when the VM stops (a hot-added vsock's socket, a hot-added
    /// pmem's memory slot; the boot devices' are closed by `VMInstance.stop`).
    var onStop: (@Sendable () -> Void)?
    /// Instead of `onStop` when the VM reboots in place: gives the device's back-end connection
    /// (a vhost-user device's) to the machine built in its place, with the back-end's socket
    /// path; nil for a device without one.
    var detachBackend: (@Sendable () -> (socket: String, connection: KeptVhostUserConnection)?)?
}

/// The devices of one VM for as long as it lives: an ordered registry (boot order, which is
/// also restore order) with each device's id, kind, resources and the small protocol the VMM
/// drives (counters, state), plus the allocators that outlive `build()` so that hotplug adds
/// devices the same way boot did.
///
/// `vm.info`'s device tree, `vm.counters`, id checks and snapshots all read this one table.
final class DeviceManager: Sendable {
    private struct Table {
        var devices: [ManagedDevice] = []
        var windows: [BARWindows]
    }
    private let table: Mutex<Table>

    /// A registry with each PCI segment's BAR windows, by segment number: the 32-bit one (a
    /// boot disk's BAR on segment 0, the platform registers from segment 0's) and the 64-bit
    /// one (the other virtio BARs and pmem ranges).
    init(windows: [BARWindows]) {
        table = Mutex(Table(windows: windows))
    }

    /// A registry with each segment's 32-bit window and, where given, its 64-bit window.
    convenience init(mmio32: [AddressAllocator], mmio64: [AddressAllocator] = []) {
        self.init(windows: mmio32.indices.map { BARWindows(mmio32: mmio32[$0], mmio64: mmio64.indices.contains($0) ? mmio64[$0] : nil) })
    }

    /// Adds a device at the end of the order.
    ///
    /// - Throws: `VMMError` when the id is taken.
    func register(_ device: ManagedDevice) throws {
        try table.withLock { (table: inout Table) throws in
            guard !table.devices.contains(where: { $0.id == device.id }) else {
                throw VMMError(description: "two devices have the id '\(device.id)'")
            }
            table.devices.append(device)
        }
    }

    /// Removes a device by id and returns it (nil when unknown).
    @discardableResult
    func unregister(id: String) -> ManagedDevice? {
        table.withLock { table in
            guard let index = table.devices.firstIndex(where: { $0.id == id }) else { return nil }
            return table.devices.remove(at: index)
        }
    }

    /// Allocates an aligned range from PCI segment `segment`'s 32-bit MMIO window.
    func allocateMMIO32(segment: UInt16 = 0, size: UInt64, alignment: UInt64) throws -> (start: UInt64, size: UInt64) {
        try table.withLock { (table: inout Table) throws in
            guard table.windows.indices.contains(Int(segment)) else {
                throw VMMError(description: "the VM has no PCI segment \(segment) (it has \(table.windows.count))")
            }
            let range = try table.windows[Int(segment)].mmio32.allocate(size: size, alignment: alignment)
            return (range.start, size)
        }
    }

    /// Runs `body` with PCI segment `segment`'s BAR windows (a hot-added device takes its BAR
    /// and its pmem range from them), under the registry's lock.
    func withAllocators(segment: UInt16 = 0, _ body: (inout BARWindows) throws -> Void) throws {
        try table.withLock { (table: inout Table) throws in
            let index = Int(segment)
            guard table.windows.indices.contains(index) else {
                throw VMMError(description: "the VM has no PCI segment \(segment) (it has \(table.windows.count))")
            }
            try body(&table.windows[index])
        }
    }

    /// Gives back an ejected device's BAR to the window it came from (the 32-bit or the 64-bit
    /// one of whichever segment holds it).
    func freeBAR(_ bar: PCIBAR) {
        table.withLock { table in
            for index in table.windows.indices where table.windows[index].free(bar) { return }
        }
    }

    /// Gives back a range of a 64-bit window (an ejected pmem device's).
    func freeMMIO64(_ range: AddressRange) {
        table.withLock { table in
            for index in table.windows.indices {
                if (try? table.windows[index].mmio64?.free(range)) != nil { return }
            }
        }
    }

    /// A copy of segment `segment`'s BAR windows (nil for an absent segment), for inspection.
    func windows(segment: UInt16) -> BARWindows? {
        table.withLock { $0.windows.indices.contains(Int(segment)) ? $0.windows[Int(segment)] : nil }
    }

    /// The PCI slot of each device on segment 0, by id.
    var pciSlots: [String: UInt8] {
        var slots: [String: UInt8] = [:]
        for device in devices {
            if let slot = device.resources.pciSlot { slots[device.id] = UInt8(slot) }
        }
        return slots
    }

    /// Releases the removable device at `slot` of PCI segment `segment`, which the guest
    /// ejected, then forgets it; returns it (nil when the slot holds no removable device).
    /// The device stays listed until its release is done (its files closed, a TAP gone), so
    /// a client that sees it leave `vm.info` may reuse what it held at once. Ejections are
    /// carried out one at a time (on the VMM's main thread).
    @discardableResult
    func eject(segment: UInt16, slot: Int) -> ManagedDevice? {
        let prefix = hex4(segment) + ":"
        let found: ManagedDevice? = table.withLock { table in
            table.devices.first {
                $0.unplug != nil && $0.resources.pciSlot == slot && ($0.resources.pciBDF?.hasPrefix(prefix) ?? false)
            }
        }
        guard let found, let unplug = found.unplug else { return nil }
        unplug(self)
        table.withLock { table in table.devices.removeAll { $0.id == found.id } }
        return found
    }

    /// Every device, in order.
    var devices: [ManagedDevice] { table.withLock { $0.devices } }

    /// The device with `id`.
    func device(id: String) -> ManagedDevice? { table.withLock { table in table.devices.first { $0.id == id } } }

    /// `vm.info`'s `device_tree`: the devices with a Cloud Hypervisor id (a PCI function), by id.
    var deviceTree: [String: DeviceNode] {
        var tree: [String: DeviceNode] = [:]
        for device in devices where device.resources.pciBDF != nil {
            tree[device.id] = DeviceNode(id: device.id, pciBDF: device.resources.pciBDF)
        }
        return tree
    }

    /// Releases every device's host locks (before a migration's destination opens the disks).
    func releaseLocks() {
        for device in devices { device.releaseLocks?() }
    }

    /// Takes every device's host locks again; throws the first refusal.
    func retakeLocks() throws {
        for device in devices { try device.retakeLocks?() }
    }

    /// `vm.counters`: every device that counts, by id.
    func counters() -> [String: [String: UInt64]] {
        var result: [String: [String: UInt64]] = [:]
        for device in devices { if let counters = device.counters { result[device.id] = counters() } }
        return result
    }
}

extension ManagedDevice {
    /// An entry whose state is `device`'s `StatefulDevice` state, as JSON.
    static func stateful<D: StatefulDevice & Sendable>(_ device: D, id: String, kind: String, resources: DeviceResources,
                                                       counters: (@Sendable () -> [String: UInt64])? = nil) -> ManagedDevice {
        ManagedDevice(
            id: id, kind: kind, resources: resources, counters: counters,
            saveState: { try SnapshotJSON.text(device.saveState()) },
            restoreState: { text in
                let state: D.State
                do { state = try SnapshotJSON.value(D.State.self, from: text) } catch {
                    throw DeviceStateError(device: id, reason: "its state does not decode: \(error)")
                }
                try device.restoreState(state)
            })
    }
}
