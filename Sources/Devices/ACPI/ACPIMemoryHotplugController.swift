import DeviceModel
import Synchronization

/// Cloud Hypervisor's memory hotplug registers (the `BusDevice` side of its
/// `MemoryManager`): a 0x18-byte MMIO block through which the DSDT's `\_SB_.MHPC` methods
/// learn which of the hotplug slots ("DIMMs") hold memory, where, and which were just added.
///
/// | offset | access | register |
/// |---|---|---|
/// | 0x00 | write | selection (`MSEL`, only its low byte counts): the slot the others are about |
/// | 0x00 / 0x04 | 4-byte read | the selected slot's base address, low / high half (`MHBL` / `MHBH`) |
/// | 0x08 / 0x0c | 4-byte read | its length, low / high half (`MHLL` / `MHLH`) |
/// | 0x14 | read | status: bit 0 enabled (`MEN_`), 1 inserting (`MINS`), 2 removing (`MRMV`) |
/// | 0x14 | write | bit 1 or 2 acknowledges the insertion or removal; bit 3 (`MEJ0`) asks for an ejection, which is not supported and ignored |
///
/// As in Cloud Hypervisor, base and length reads of another width, other offsets, and any
/// access while the selection is beyond the last slot change nothing and read 0.
///
/// The VMM records a region it mapped for the guest with ``insert(base:length:)`` and then
/// notifies the Generic Event Device's memory hotplug cause; the guest's `MSCN` then
/// notifies the slot's memory device, which reads `_STA` and `_CRS` and acknowledges.
public final class ACPIMemoryHotplugController: BusDevice {
    /// The size of the register block (Cloud Hypervisor's `MEMORY_MANAGER_ACPI_SIZE`).
    public static let registerSize: UInt64 = 0x18
    /// How many hotplug slots there are (Cloud Hypervisor's `HOTPLUG_COUNT`).
    public static let slotCount = 8
    /// The offset of the selection register (writes) and of the base's low half (reads).
    public static let selectionOffset: UInt64 = 0
    /// The offset of the base's high half.
    public static let baseHighOffset: UInt64 = 0x4
    /// The offset of the length's low half.
    public static let lengthLowOffset: UInt64 = 0x8
    /// The offset of the length's high half.
    public static let lengthHighOffset: UInt64 = 0xc
    /// The offset of the status register.
    public static let statusOffset: UInt64 = 0x14

    /// The bits of the status register (shared with the other hotplug controller).
    public typealias Status = ACPIHotplugStatus

    /// One hotplug slot (Cloud Hypervisor's `HotPlugState`).
    public struct Slot: Codable, Equatable, Sendable {
        /// The guest-physical base of the slot's memory.
        public var base: UInt64
        /// The length of the slot's memory in bytes.
        public var length: UInt64
        /// The slot holds memory.
        public var active: Bool
        /// The guest has not acknowledged the insertion yet.
        public var inserting: Bool
        /// The guest has not acknowledged the removal yet.
        public var removing: Bool

        /// An empty slot.
        public init(base: UInt64 = 0, length: UInt64 = 0, active: Bool = false, inserting: Bool = false, removing: Bool = false) {
            self.base = base
            self.length = length
            self.active = active
            self.inserting = inserting
            self.removing = removing
        }
    }

    /// The controller's state: the slots, the guest's selection and the next free slot.
    public struct State: Codable, Equatable, Sendable {
        /// The ``slotCount`` slots.
        public var slots: [Slot]
        /// The slot the guest selected last (may be beyond the last slot).
        public var selected: Int
        /// The slot the next insertion takes.
        public var nextSlot: Int

        /// All slots empty.
        public init() {
            slots = Array(repeating: Slot(), count: ACPIMemoryHotplugController.slotCount)
            selected = 0
            nextSlot = 0
        }

        /// The JSON names, in snake case as Cloud Hypervisor's serde writes them.
        enum CodingKeys: String, CodingKey {
            case slots = "hotplug_slots", selected = "selected_slot", nextSlot = "next_hotplug_slot"
        }
    }

    /// Why an insertion was refused.
    public enum InsertError: Error, Equatable, Sendable, CustomStringConvertible {
        /// Every slot holds memory already (Cloud Hypervisor's `NoSlotAvailable`).
        case noSlotAvailable(slots: Int)

        /// A sentence naming the limit.
        public var description: String {
            switch self {
            case let .noSlotAvailable(slots):
                return "all \(slots) memory hotplug slots hold memory already: no more memory can be hot-added to this VM"
            }
        }
    }

    /// The name used in logs and bus errors.
    public let name: String
    private let state = Mutex(State())

    /// Creates the controller with every slot empty.
    public init(name: String = "memory-hotplug") {
        self.name = name
    }

    /// The slots, in order.
    public var slots: [Slot] { state.withLock { $0.slots } }

    /// Whether a slot is free for ``insert(base:length:)``.
    public var hasFreeSlot: Bool { state.withLock { $0.nextSlot < $0.slots.count } }

    /// Records memory at `base` of `length` bytes in the next free slot, enabled and
    /// inserting; returns the slot's index. The guest sees it on its next scan.
    ///
    /// - Throws: ``InsertError/noSlotAvailable(slots:)`` when every slot is taken.
    @discardableResult
    public func insert(base: UInt64, length: UInt64) throws(InsertError) -> Int {
        try state.withLock { (state: inout State) throws(InsertError) -> Int in
            guard state.nextSlot < state.slots.count else { throw .noSlotAvailable(slots: state.slots.count) }
            let index = state.nextSlot
            state.slots[index] = Slot(base: base, length: length, active: true, inserting: true)
            state.nextSlot += 1
            return index
        }
    }

    /// Base and length halves (4-byte reads) or the status (any width) of the selected slot.
    public func read(offset: UInt64, size: Int) -> UInt64 {
        state.withLock { state in
            guard state.selected >= 0, state.selected < state.slots.count else { return 0 }
            let slot = state.slots[state.selected]
            switch offset {
            case Self.selectionOffset, Self.baseHighOffset, Self.lengthLowOffset, Self.lengthHighOffset:
                guard size == 4 else { return 0 }
                let value = offset < Self.lengthLowOffset ? slot.base : slot.length
                return offset % 8 == 0 ? value & 0xffff_ffff : value >> 32
            case Self.statusOffset:
                var status: Status = []
                if slot.active { status.insert(.enabled) }
                if slot.inserting { status.insert(.inserting) }
                if slot.removing { status.insert(.removing) }
                return UInt64(status.rawValue)
            default:
                return 0
            }
        }
    }

    /// Selects a slot (offset 0, the low byte) or acknowledges an insertion or removal
    /// (offset 0x14); ejection requests are ignored.
    public func write(offset: UInt64, size: Int, value: UInt64) {
        state.withLock { state in
            switch offset {
            case Self.selectionOffset:
                state.selected = Int(value & 0xff)
            case Self.statusOffset:
                guard state.selected >= 0, state.selected < state.slots.count else { return }
                let written = Status(rawValue: UInt8(truncatingIfNeeded: value))
                if written.contains(.inserting) { state.slots[state.selected].inserting = false }
                if written.contains(.removing) { state.slots[state.selected].removing = false }
            default:
                break
            }
        }
    }
}

extension ACPIMemoryHotplugController: StatefulDevice {
    /// The state, taken under the device's lock.
    public func saveState() -> State { state.withLock { $0 } }

    /// Replaces the state; refuses, changing nothing, a state with another number of slots
    /// or whose next free slot is out of range.
    public func restoreState(_ saved: State) throws(DeviceStateError) {
        guard saved.slots.count == Self.slotCount else {
            throw DeviceStateError(device: name, reason: "the state has \(saved.slots.count) memory hotplug slots, the controller has \(Self.slotCount)")
        }
        guard (0...Self.slotCount).contains(saved.nextSlot) else {
            throw DeviceStateError(device: name, reason: "next_hotplug_slot \(saved.nextSlot) is outside 0...\(Self.slotCount)")
        }
        state.withLock { $0 = saved }
    }
}
