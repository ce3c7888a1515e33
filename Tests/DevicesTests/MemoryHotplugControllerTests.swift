import DeviceModel
import Devices
import Testing

@Suite("ACPI memory hotplug controller")
struct MemoryHotplugControllerTests {
    /// Selects `slot` as the DSDT's `MSEL` store does (a 4-byte write at 0).
    func select(_ controller: ACPIMemoryHotplugController, _ slot: Int) {
        controller.write(offset: 0, size: 4, value: UInt64(slot))
    }

    /// The status byte (offset 0x14) of `slot`.
    func status(_ controller: ACPIMemoryHotplugController, _ slot: Int) -> UInt64 {
        select(controller, slot)
        return controller.read(offset: 0x14, size: 1)
    }

    @Test func slotsStartEmpty() {
        let controller = ACPIMemoryHotplugController()
        #expect(ACPIMemoryHotplugController.registerSize == 0x18 && ACPIMemoryHotplugController.slotCount == 8)
        for slot in 0..<8 {
            #expect(status(controller, slot) == 0)
            #expect(controller.read(offset: 0, size: 4) == 0 && controller.read(offset: 8, size: 4) == 0)
        }
        #expect(controller.hasFreeSlot)
    }

    @Test func insertionReportsBaseLengthAndStatusUntilAcknowledged() throws {
        let controller = ACPIMemoryHotplugController()
        #expect(try controller.insert(base: 0x1_2000_0000, length: 0x2_0800_0000) == 0)
        #expect(try controller.insert(base: 0x1_0000_0000, length: 0x800_0000) == 1)
        select(controller, 0)
        #expect(controller.read(offset: 0x0, size: 4) == 0x2000_0000)
        #expect(controller.read(offset: 0x4, size: 4) == 0x1)
        #expect(controller.read(offset: 0x8, size: 4) == 0x0800_0000)
        #expect(controller.read(offset: 0xc, size: 4) == 0x2)
        // Enabled and inserting; writing the inserting bit back acknowledges it.
        #expect(status(controller, 0) == 0x3)
        controller.write(offset: 0x14, size: 1, value: 0x2)
        #expect(status(controller, 0) == 0x1)
        #expect(status(controller, 1) == 0x3)
        #expect(status(controller, 2) == 0)
    }

    @Test func otherWidthsOffsetsAndEjectionChangeNothing() throws {
        let controller = ACPIMemoryHotplugController()
        try controller.insert(base: 0x1_0000_0000, length: 0x800_0000)
        select(controller, 0)
        // Base and length halves need 4-byte reads; 0x10 (MHPX) is not a register here.
        #expect(controller.read(offset: 0x4, size: 1) == 0 && controller.read(offset: 0x8, size: 8) == 0)
        #expect(controller.read(offset: 0x10, size: 4) == 0)
        // Ejection is not supported: the memory stays enabled and inserting.
        controller.write(offset: 0x14, size: 1, value: 0x8)
        #expect(status(controller, 0) == 0x3)
        // Only the selection's low byte counts (256 + 0 selects slot 0).
        controller.write(offset: 0, size: 4, value: 0x100)
        #expect(controller.read(offset: 0x14, size: 1) == 0x3)
        // A selection beyond the slots reads 0 and acknowledges nothing.
        select(controller, 9)
        #expect(controller.read(offset: 0x14, size: 1) == 0 && controller.read(offset: 0xc, size: 4) == 0)
        controller.write(offset: 0x14, size: 1, value: 0x2)
        #expect(status(controller, 0) == 0x3)
    }

    @Test func refusesANinthInsertion() throws {
        let controller = ACPIMemoryHotplugController()
        for index in 0..<8 { try controller.insert(base: 0x1_0000_0000 + UInt64(index) << 27, length: 1 << 27) }
        #expect(!controller.hasFreeSlot)
        #expect(throws: ACPIMemoryHotplugController.InsertError.noSlotAvailable(slots: 8)) {
            try controller.insert(base: 0x2_0000_0000, length: 1 << 27)
        }
        #expect("\(ACPIMemoryHotplugController.InsertError.noSlotAvailable(slots: 8))".contains("8 memory hotplug slots"))
    }

    @Test func stateRoundTripsAndRefusesAnotherShape() throws {
        let controller = ACPIMemoryHotplugController()
        try controller.insert(base: 0x1_0000_0000, length: 0x800_0000)
        select(controller, 0)
        let saved = controller.saveState()
        #expect(saved.slots[0] == .init(base: 0x1_0000_0000, length: 0x800_0000, active: true, inserting: true))
        #expect(saved.nextSlot == 1)
        let copy = ACPIMemoryHotplugController()
        try copy.restoreState(saved)
        #expect(copy.saveState() == saved)
        #expect(status(copy, 0) == 0x3)
        var short = saved
        short.slots.removeLast()
        #expect(throws: DeviceStateError.self) { try copy.restoreState(short) }
        var beyond = saved
        beyond.nextSlot = 9
        #expect(throws: DeviceStateError.self) { try copy.restoreState(beyond) }
        #expect(copy.saveState() == saved)
    }
}
