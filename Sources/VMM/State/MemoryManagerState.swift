// The memory manager's part of a snapshot and of a migration's `Config`, in the shape of Cloud
// Hypervisor's `MemoryManagerSnapshotData`: the RAM ranges in memory-ranges' order, one entry
// per KVM slot of guest RAM, boot and current RAM, and the ACPI memory hotplug controller's
// slots, so that the regions vm.resize hot-added come back at their addresses and slots.
import Devices
import GuestMemory

/// One KVM memory slot of guest RAM (Cloud Hypervisor's `GuestRamMapping`).
struct GuestRamMapping: Codable, Equatable, Sendable {
    /// The KVM slot number.
    var slot: UInt32
    /// The guest-physical start.
    var gpa: UInt64
    /// The length in bytes.
    var size: UInt64
    /// Whether this is virtio-mem's region.
    var virtioMem: Bool

    enum CodingKeys: String, CodingKey { case slot, gpa, size, virtioMem = "virtio_mem" }
}

/// The `memory-manager` section of `state.json` and a migration's `memory_manager_data`.
struct MemoryManagerSnapshotData: Codable, Equatable, Sendable {
    /// The guest memory's ranges (the order of `memory-ranges`).
    var memoryRanges: MemoryRangeTable
    /// Every region of guest RAM with its KVM slot, by address.
    var guestRAMMappings: [GuestRamMapping]
    /// The RAM the VM booted with (`memory.size` at boot).
    var bootRAM: UInt64
    /// The RAM it has now: boot RAM plus what vm.resize added (ACPI) or asked for (virtio-mem).
    var currentRAM: UInt64
    /// The ACPI memory hotplug controller's slots (empty without ACPI memory hotplug).
    var hotplugSlots: [ACPIMemoryHotplugController.Slot]
    /// The slot the guest selected last.
    var selectedSlot: Int
    /// The slot the next hot-add takes.
    var nextHotplugSlot: Int

    enum CodingKeys: String, CodingKey {
        case memoryRanges = "memory_ranges", guestRAMMappings = "guest_ram_mappings", bootRAM = "boot_ram", currentRAM = "current_ram"
        case hotplugSlots = "hotplug_slots", selectedSlot = "selected_slot", nextHotplugSlot = "next_hotplug_slot"
    }

    /// The memory manager of `built` now (paused, or not running a resize).
    static func capture(_ built: BuiltVM) throws(SnapshotError) -> MemoryManagerSnapshotData {
        let slots = built.vm.memorySlots
        let virtioMemStart = built.virtioMem.flatMap { _ in try? VirtioMemSupport.region(built.config.memory)?.start }
        var mappings: [GuestRamMapping] = []
        for region in built.memory.regions {
            guard let slot = slots.first(where: { $0.guestAddress == region.start.rawValue && $0.size == region.size }) else {
                throw .io("guest memory at \(region.start) has no KVM memory slot")
            }
            mappings.append(GuestRamMapping(slot: slot.slot, gpa: region.start.rawValue, size: region.size,
                                            virtioMem: region.start.rawValue == virtioMemStart))
        }
        let config = built.config.memory
        var data = MemoryManagerSnapshotData(memoryRanges: built.memory.rangeTable, guestRAMMappings: mappings, bootRAM: config.size,
                                             currentRAM: config.size, hotplugSlots: [], selectedSlot: 0, nextHotplugSlot: 0)
        if let hotplug = built.memoryHotplug {
            (data.bootRAM, data.currentRAM) = (hotplug.bootRAM, hotplug.currentRAM)
            let state = hotplug.controller.saveState()
            (data.hotplugSlots, data.selectedSlot, data.nextHotplugSlot) = (state.slots, state.selected, state.nextSlot)
        } else if built.virtioMem != nil {
            data.currentRAM = config.size + (config.hotpluggedSize ?? 0)
        }
        return data
    }

    /// The ACPI controller's state these fields hold.
    var hotplugState: ACPIMemoryHotplugController.State {
        var state = ACPIMemoryHotplugController.State()
        (state.slots, state.selected, state.nextSlot) = (hotplugSlots, selectedSlot, nextHotplugSlot)
        return state
    }

    /// The regions ACPI memory hotplug added (one per enabled hotplug slot, in slot order), each
    /// with its KVM slot; checked against the mappings and the RAM sizes.
    func hotAddedMappings() throws(SnapshotError) -> [GuestRamMapping] {
        var result: [GuestRamMapping] = []
        for (index, slot) in hotplugSlots.enumerated() where slot.active {
            guard let mapping = guestRAMMappings.first(where: { $0.gpa == slot.base && $0.size == slot.length && !$0.virtioMem }) else {
                throw .damaged("memory hotplug slot \(index) holds \(slot.length) bytes at \(slot.base), which no guest RAM mapping has")
            }
            result.append(mapping)
        }
        let added = result.reduce(UInt64(0)) { $0 + $1.size }
        if !result.isEmpty, bootRAM + added != currentRAM {
            throw .damaged("boot_ram \(bootRAM) plus the hot-added \(added) bytes is not current_ram \(currentRAM)")
        }
        return result
    }
}
