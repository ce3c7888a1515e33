import DeviceModel
import Devices
import Synchronization
import Testing

/// Records the vCPUs the controller asks to stop.
final class EjectRecorder: Sendable {
    private let ids = Mutex<[UInt32]>([])

    var ejected: [UInt32] { ids.withLock { $0 } }

    var ejector: ACPICPUHotplugController.Ejector { { id in self.ids.withLock { $0.append(id) } } }
}

@Suite("ACPI CPU hotplug controller")
struct CPUHotplugControllerTests {
    /// Selects `id` as the DSDT's `CSEL` store does (a 4-byte write at 0).
    func select(_ controller: ACPICPUHotplugController, _ id: UInt32) {
        controller.write(offset: 0, size: 4, value: UInt64(id))
    }

    /// The status byte (offset 4) of vCPU `id`.
    func status(_ controller: ACPICPUHotplugController, _ id: UInt32) -> UInt64 {
        select(controller, id)
        return controller.read(offset: 4, size: 1)
    }

    @Test func selectionReadsBackAndBootVCPUsAreEnabled() {
        let recorder = EjectRecorder()
        let controller = ACPICPUHotplugController(maxVCPUs: 4, presentVCPUs: 2, ejector: recorder.ejector)
        #expect(ACPICPUHotplugController.registerSize == 0xc)
        select(controller, 3)
        #expect(controller.read(offset: 0, size: 4) == 3)
        #expect(status(controller, 0) == 0x1 && status(controller, 1) == 0x1)
        #expect(status(controller, 2) == 0 && status(controller, 3) == 0)
        #expect(controller.enabledVCPUs == [0, 1])
    }

    @Test func otherWidthsAndOffsetsAreIgnored() {
        let recorder = EjectRecorder()
        let controller = ACPICPUHotplugController(maxVCPUs: 2, presentVCPUs: 1, ejector: recorder.ejector)
        controller.write(offset: 0, size: 1, value: 1)  // a byte write does not select
        #expect(controller.read(offset: 0, size: 4) == 0)
        #expect(controller.read(offset: 4, size: 4) == 0)  // the status is a byte register
        #expect(controller.read(offset: 0, size: 1) == 0)
        #expect(controller.read(offset: 8, size: 4) == 0)  // CDAT reads 0
        controller.write(offset: 4, size: 4, value: 0x8)  // a wide eject write does nothing
        #expect(recorder.ejected.isEmpty && status(controller, 0) == 1)
    }

    @Test func beyondTheMaximumReadsZeroAndEjectsNothing() {
        let recorder = EjectRecorder()
        let controller = ACPICPUHotplugController(maxVCPUs: 2, presentVCPUs: 2, ejector: recorder.ejector)
        select(controller, 7)
        #expect(controller.read(offset: 4, size: 1) == 0)
        controller.write(offset: 4, size: 1, value: 0x8)
        #expect(recorder.ejected.isEmpty && controller.enabledVCPUs == [0, 1])
    }

    @Test func insertionIsReportedUntilAcknowledged() {
        let recorder = EjectRecorder()
        let controller = ACPICPUHotplugController(maxVCPUs: 4, presentVCPUs: 1, ejector: recorder.ejector)
        controller.insert(1)
        controller.insert(2)
        #expect(status(controller, 1) == 0x3)  // CPEN | CINS
        controller.write(offset: 4, size: 1, value: 0x2)  // CSCN stores One to CINS
        #expect(status(controller, 1) == 0x1)
        #expect(status(controller, 2) == 0x3)  // the other one is still announced
        #expect(recorder.ejected.isEmpty)
    }

    @Test func removalIsAcknowledgedThenEjectStopsTheVCPU() {
        let recorder = EjectRecorder()
        let controller = ACPICPUHotplugController(maxVCPUs: 4, presentVCPUs: 3, ejector: recorder.ejector)
        controller.markForRemoval(2)
        #expect(controller.pendingRemoval == [2])
        #expect(status(controller, 2) == 0x5)  // CPEN | CRMV
        controller.write(offset: 4, size: 1, value: 0x4)  // CSCN acknowledges CRMV
        #expect(status(controller, 2) == 0x1)
        #expect(controller.pendingRemoval == [2])  // still running until ejected
        controller.write(offset: 4, size: 1, value: 0x8)  // CEJ0 (the byte field writes zeros around it)
        #expect(recorder.ejected == [2])
        #expect(status(controller, 2) == 0)
        #expect(controller.pendingRemoval.isEmpty)
        #expect(controller.enabledVCPUs == [0, 1])
        controller.write(offset: 4, size: 1, value: 0x8)  // ejecting an absent vCPU again does nothing
        #expect(recorder.ejected == [2])
    }

    @Test func anEjectedVCPUCanBeInsertedAgain() {
        let recorder = EjectRecorder()
        let controller = ACPICPUHotplugController(maxVCPUs: 2, presentVCPUs: 2, ejector: recorder.ejector)
        controller.markForRemoval(1)
        select(controller, 1)
        controller.write(offset: 4, size: 1, value: 0x8)
        #expect(status(controller, 1) == 0x4)  // ejected before acknowledging: removing still reads
        controller.write(offset: 4, size: 1, value: 0x4)
        controller.insert(1)
        #expect(status(controller, 1) == 0x3)
    }

    @Test func stateRoundTripsAndBadStatesAreRefused() throws {
        let recorder = EjectRecorder()
        let controller = ACPICPUHotplugController(maxVCPUs: 3, presentVCPUs: 1, ejector: recorder.ejector)
        controller.insert(1)
        controller.markForRemoval(1)
        select(controller, 2)
        let saved = controller.saveState()
        #expect(saved.status == [0x1, 0x7, 0x0] && saved.selected == 2 && saved.pendingRemoval == [1])
        let other = ACPICPUHotplugController(maxVCPUs: 3, presentVCPUs: 3, ejector: recorder.ejector)
        try other.restoreState(saved)
        #expect(other.saveState() == saved)
        var wrongCount = saved
        wrongCount.status.append(0)
        #expect(throws: DeviceStateError.self) { try other.restoreState(wrongCount) }
        var badBits = saved
        badBits.status[0] = 0x9
        #expect(throws: DeviceStateError.self) { try other.restoreState(badBits) }
        var badPending = saved
        badPending.pendingRemoval = [5]
        #expect(throws: DeviceStateError.self) { try other.restoreState(badPending) }
        #expect(other.saveState() == saved)
    }

    @Test func decodesTwelveBytesOnTheBus() throws {
        let recorder = EjectRecorder()
        let mmio = Bus(name: "MMIO bus")
        let controller = ACPICPUHotplugController(maxVCPUs: 2, presentVCPUs: 1, ejector: recorder.ejector)
        try mmio.insert(controller, base: 0xc000_0000, length: ACPICPUHotplugController.registerSize)
        controller.insert(1)
        mmio.write(address: 0xc000_0000, size: 4, value: 1)
        #expect(mmio.readOrAllOnes(address: 0xc000_0004, size: 1) == 0x3)
        mmio.write(address: 0xc000_0004, size: 1, value: 0x2)
        #expect(mmio.readOrAllOnes(address: 0xc000_0004, size: 1) == 0x1)
    }
}
