import Arch
import DeviceModel
import Devices
import GuestMemory
import HostSystem
import Hypervisor
import Synchronization

/// ACPI memory hotplug of a running VM, as Cloud Hypervisor's memory manager does it with
/// `hotplug_method=acpi`: vm.resize maps a new RAM region above the last one (in the room
/// `hotplug_size` kept before the 64-bit device area), registers it as a KVM memory slot of
/// its own, appends it to the guest memory every device reads through, records it in a
/// hotplug slot of the ``ACPIMemoryHotplugController`` and notifies the Generic Event
/// Device's memory cause; the guest's `\_SB_.MHPC.MSCN` then adds the memory device.
final class MemoryHotplugSupport: @unchecked Sendable {
    // SAFETY (Sendable): the members are thread-safe objects; `sizes` is behind its lock.
    /// Hot-added memory must come in multiples of 128 MiB (Cloud Hypervisor's "DIMM" size rule).
    static let granularity: UInt64 = 128 << 20

    /// The controller the DSDT's `\_SB_.MHPC` reads.
    let controller: ACPIMemoryHotplugController
    /// The MMIO base of the controller's registers.
    let address: UInt64
    private let ged: ACPIGenericEventDevice
    private let vm: any VirtualMachine
    private let memory: GuestMemory
    private let config: MemoryConfig
    /// The first address past the hotplug room (the 64-bit device area's base).
    private let roomEnd: UInt64
    /// The RAM the VM booted with and the RAM it has now (boot plus hot-added).
    private let sizes: Mutex<(boot: UInt64, current: UInt64)>

    init(controller: ACPIMemoryHotplugController, address: UInt64, ged: ACPIGenericEventDevice, vm: any VirtualMachine,
         memory: GuestMemory, config: MemoryConfig, roomEnd: UInt64) {
        self.controller = controller
        self.address = address
        self.ged = ged
        self.vm = vm
        self.memory = memory
        self.config = config
        self.roomEnd = roomEnd
        sizes = Mutex((config.size, config.size))
    }

    /// The RAM the guest has now, boot RAM plus what was hot-added.
    var currentRAM: UInt64 { sizes.withLock { $0.current } }
    /// The RAM the VM booted with.
    var bootRAM: UInt64 { sizes.withLock { $0.boot } }

    /// Brings the guest's RAM to `desired` bytes. Growing hot-adds one region of the
    /// difference; asking for the current size or less changes nothing (Cloud Hypervisor's
    /// ACPI memory hotplug cannot remove memory). Returns whether memory was added.
    ///
    /// - Throws: a ``MemoryResizeRefusal`` with Cloud Hypervisor's reason, changing nothing,
    ///   when every hotplug slot is taken, the addition is not a multiple of 128 MiB, or it
    ///   does not fit the room `hotplug_size` kept; another error when mapping or registering
    ///   the region fails.
    /// `announce` runs once the region is guest memory and before the guest is told (the
    /// vhost-user back-ends map it there); its failure fails the resize.
    func resize(to desired: UInt64, beforeAnnouncing announce: (GuestMemoryRegion) throws -> Void = { _ in }) throws -> Bool {
        try sizes.withLock { sizes in
            guard desired > sizes.current else { return false }
            let added = desired - sizes.current
            guard controller.hasFreeSlot else {
                throw MemoryResizeRefusal(description: "No ACPI slot available: all \(ACPIMemoryHotplugController.slotCount) memory hotplug slots are used")
            }
            guard added % Self.granularity == 0 else {
                throw MemoryResizeRefusal(description: "The requested hotplug memory addition is not a valid size: \(added) bytes is not a multiple of 128 MiB")
            }
            let start = Self.regionStart(after: memory.lastAddress?.rawValue ?? 0)
            guard start <= roomEnd, added <= roomEnd - start else {
                let room = roomEnd > start ? roomEnd - start : 0
                throw MemoryResizeRefusal(description: "Not enough space in the hotplug RAM region: \(added) bytes asked, \(room) left of hotplug_size")
            }
            let region = try Self.makeRegion(start: GuestAddress(start), size: added, index: memory.regions.count, config: config)
            let slot = (vm.memorySlots.map(\.slot).max() ?? 0) + 1
            try vm.setMemorySlot(MemorySlot(slot: slot, guestAddress: start, size: added, hostAddress: region.hostAddress))
            do {
                try memory.append(region)
            } catch {
                try? vm.removeMemorySlot(slot)
                throw error
            }
            do {
                try controller.insert(base: start, length: added)
            } catch {
                // Checked above under the same lock: no other insertion can take the slot.
                throw VMMError(description: "\(error)")
            }
            sizes.current = desired
            try announce(region)
            try ged.notify(.memoryHotplug)
            return true
        }
    }

    /// Where the next hot-added region starts (Cloud Hypervisor's `start_addr` with hotplug
    /// allowed): the next 128 MiB boundary after the last RAM byte, or 4 GiB while RAM ends
    /// below the 32-bit device hole.
    static func regionStart(after lastAddress: UInt64) -> UInt64 {
        if lastAddress < X86Layout.mem32BitReservedStart.rawValue { return X86Layout.ram64BitStart.rawValue }
        return (lastAddress | (granularity - 1)) &+ 1
    }

    /// A region backed as `--memory` asks (a memory file when RAM is shared without huge
    /// pages, as the boot regions are), or mapping `file` (a local migration's, handed over).
    static func makeRegion(start: GuestAddress, size: UInt64, index: Int, config: MemoryConfig,
                           file passed: OwnedFileDescriptor? = nil) throws -> GuestMemoryRegion {
        var options: MemoryMapping.Options = [.noReserve]
        if config.shared { options.insert(.shared) }
        if config.hugepages { options.insert(.hugePages) }
        if config.prefault { options.insert(.populate) }
        let region: GuestMemoryRegion
        if let passed {
            guard try passed.size() >= Int64(size) else {
                throw VMMError(description: "the memory descriptor of region \(index) holds \(try passed.size()) bytes, the hot-added region needs \(size)")
            }
            region = try GuestMemoryRegion(start: start, mapping: try MemoryMapping(file: passed, size: Int(size), options: options.union(.shared)))
        } else if config.shared && !config.hugepages {
            let file = try OwnedFileDescriptor.memoryFile(name: "ch_ram\(index)", size: Int64(size))
            region = try GuestMemoryRegion(start: start, mapping: try MemoryMapping(file: file, size: Int(size), options: options))
        } else {
            region = try GuestMemoryRegion(start: start, size: size, options: options)
        }
        if config.mergeable { try region.mapping.advise(offset: 0, length: region.mapping.size, advice: 12 /* MADV_MERGEABLE */) }
        TransparentHugePages.apply(config, to: region.mapping, logger: nil)
        return region
    }

    /// Maps again, after the boot regions of `memory`, the regions a snapshot's or a migration's
    /// memory manager says ACPI memory hotplug added (Cloud Hypervisor's restore of
    /// `guest_ram_mappings`); `files` are a local migration's descriptors by region index. The
    /// KVM slots come with ``restore(_:)`` once the devices took theirs, as on the source.
    static func appendHotAdded(_ data: MemoryManagerSnapshotData, to memory: GuestMemory, config: MemoryConfig,
                               files: [UInt32: OwnedFileDescriptor] = [:]) throws {
        let hotAdded = try data.hotAddedMappings()
        if !hotAdded.isEmpty, !VMBuilder.hasACPIMemoryHotplug(config) {
            throw SnapshotError.damaged("the memory manager holds hot-added memory but the configuration has no ACPI memory hotplug (hotplug_size)")
        }
        for mapping in hotAdded {
            let index = memory.regions.count
            let region = try makeRegion(start: GuestAddress(mapping.gpa), size: mapping.size, index: index, config: config,
                                        file: files[UInt32(index)])
            try memory.append(region)
        }
    }

    /// Takes a snapshot's or a migration's memory manager state into this VM, built with the
    /// hot-added regions appended (``appendHotAdded(_:to:config:files:)``): each gets its KVM
    /// slot of the source, the controller its slots and the guest's selection, and the sizes
    /// are the source's. Refuses, before changing anything, a state whose regions are not in
    /// the guest memory or whose slots are taken here.
    func restore(_ data: MemoryManagerSnapshotData) throws(SnapshotError) {
        let hotAdded = try data.hotAddedMappings()
        let taken = Set(vm.memorySlots.map(\.slot))
        var slots: [MemorySlot] = []
        for mapping in hotAdded {
            guard let region = memory.regions.first(where: { $0.start.rawValue == mapping.gpa && $0.size == mapping.size }) else {
                throw .damaged("the hot-added region of \(mapping.size) bytes at \(mapping.gpa) is not in the guest memory built")
            }
            guard !taken.contains(mapping.slot) else {
                throw .damaged("KVM memory slot \(mapping.slot) of the hot-added region at \(mapping.gpa) is taken by the machine built")
            }
            slots.append(MemorySlot(slot: mapping.slot, guestAddress: mapping.gpa, size: mapping.size, hostAddress: region.hostAddress))
        }
        guard data.bootRAM == bootRAM else {
            throw .damaged("boot_ram \(data.bootRAM) differs from the \(bootRAM) bytes of boot RAM built")
        }
        do throws(DeviceStateError) { try controller.restoreState(data.hotplugState) } catch { throw .damaged("\(error)") }
        do {
            for slot in slots { try vm.setMemorySlot(slot) }
        } catch {
            throw .damaged("KVM refused a hot-added memory slot: \(error)")
        }
        sizes.withLock { $0 = (data.bootRAM, data.currentRAM) }
    }
}

/// A `desired_ram` ACPI memory hotplug cannot give (Cloud Hypervisor's `NoSlotAvailable`,
/// `InvalidSize`, `InsufficientHotplugRam`), with its sentence; nothing was changed.
struct MemoryResizeRefusal: Error, CustomStringConvertible {
    /// The reason, starting with Cloud Hypervisor's words.
    let description: String
}

extension VMBuilder {
    /// Whether `config` asks for ACPI memory hotplug (a `hotplug_size` with the ACPI method),
    /// which reserves guest memory slots and the controller's registers.
    static func hasACPIMemoryHotplug(_ config: MemoryConfig) -> Bool {
        config.hotplugMethod == .acpi && (config.hotplugSize ?? 0) > 0
    }

    /// Cloud Hypervisor's memory hotplug controller on the MMIO bus at `base` (a page of the
    /// 32-bit device window, described by the DSDT's `\_SB_.MHPC`).
    func attachMemoryHotplug(mmio: Bus, base: UInt64, ged: ACPIGenericEventDevice, vm: any VirtualMachine, memory: GuestMemory,
                             config: MemoryConfig, roomEnd: UInt64) throws -> MemoryHotplugSupport {
        let controller = ACPIMemoryHotplugController()
        try mmio.insert(controller, base: base, length: ACPIMemoryHotplugController.registerSize)
        return MemoryHotplugSupport(controller: controller, address: base, ged: ged, vm: vm, memory: memory, config: config, roomEnd: roomEnd)
    }
}
