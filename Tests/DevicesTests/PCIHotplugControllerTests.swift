import DeviceModel
import Devices
import Synchronization
import Testing

/// Records the (segment, slot) pairs the controller asks to eject.
final class SlotEjectRecorder: Sendable {
    private let slots = Mutex<[String]>([])

    var ejected: [String] { slots.withLock { $0 } }

    var ejector: ACPIPCIHotplugController.Ejector { { segment, slot in self.slots.withLock { $0.append("\(segment):\(slot)") } } }
}

@Suite("ACPI PCI hotplug controller")
struct PCIHotplugControllerTests {
    @Test func upAndDownBitmapsAreReadOnceAndCleared() {
        let recorder = SlotEjectRecorder()
        let controller = ACPIPCIHotplugController(ejector: recorder.ejector)
        #expect(ACPIPCIHotplugController.registerSize == 0x10)
        controller.markInserted(segment: 0, slot: 5)
        controller.markInserted(segment: 0, slot: 7)
        controller.markRemoving(segment: 0, slot: 3)
        #expect(controller.pending(segment: 0) == (up: 0xa0, down: 0x8))
        #expect(controller.read(offset: 0, size: 4) == 0xa0)
        #expect(controller.read(offset: 0, size: 4) == 0)
        #expect(controller.read(offset: 4, size: 4) == 0x8)
        #expect(controller.read(offset: 4, size: 4) == 0)
        #expect(controller.read(offset: 8, size: 4) == 0)  // B0EJ reads 0
        #expect(recorder.ejected.isEmpty)
    }

    @Test func ejectWritesEjectEachSetSlotLowestFirst() {
        let recorder = SlotEjectRecorder()
        let controller = ACPIPCIHotplugController(ejector: recorder.ejector)
        controller.write(offset: 8, size: 4, value: (1 << 9) | (1 << 4))
        #expect(recorder.ejected == ["0:4", "0:9"])
    }

    @Test func otherWidthsAndOffsetsAreIgnored() {
        let recorder = SlotEjectRecorder()
        let controller = ACPIPCIHotplugController(ejector: recorder.ejector)
        controller.markInserted(segment: 0, slot: 1)
        #expect(controller.read(offset: 0, size: 1) == 0)
        #expect(controller.read(offset: 0, size: 2) == 0)
        #expect(controller.pending(segment: 0).up == 2)  // a narrow read clears nothing
        controller.write(offset: 8, size: 1, value: 1)
        controller.write(offset: 8, size: 8, value: 1)
        controller.write(offset: 0, size: 4, value: 1)  // PCIU is read-only
        #expect(recorder.ejected.isEmpty && controller.pending(segment: 0).up == 2)
        #expect(controller.read(offset: 16, size: 4) == 0)
    }

    @Test func segmentSelectionChoosesTheBitmapsAndTheEjectedSegment() {
        let recorder = SlotEjectRecorder()
        let controller = ACPIPCIHotplugController(segments: 2, ejector: recorder.ejector)
        controller.markInserted(segment: 1, slot: 2)
        controller.markInserted(segment: 0, slot: 3)
        #expect(controller.read(offset: 12, size: 4) == 0)
        controller.write(offset: 12, size: 4, value: 1)
        #expect(controller.read(offset: 12, size: 4) == 1)
        #expect(controller.read(offset: 0, size: 4) == 4)
        controller.write(offset: 8, size: 4, value: 1 << 2)
        #expect(recorder.ejected == ["1:2"])
        // A segment the VM does not have is refused: the selection stays.
        controller.write(offset: 12, size: 4, value: 2)
        #expect(controller.read(offset: 12, size: 4) == 1)
        controller.write(offset: 12, size: 4, value: 0)
        #expect(controller.read(offset: 0, size: 4) == 8)
    }

    @Test func stateRoundTripsAndBadStatesAreRefused() throws {
        let controller = ACPIPCIHotplugController(segments: 2, ejector: { _, _ in })
        controller.markRemoving(segment: 1, slot: 6)
        controller.write(offset: 12, size: 4, value: 1)
        let saved = controller.saveState()
        let fresh = ACPIPCIHotplugController(segments: 2, ejector: { _, _ in })
        try fresh.restoreState(saved)
        #expect(fresh.saveState() == saved && fresh.read(offset: 4, size: 4) == 1 << 6)
        #expect(throws: DeviceStateError.self) { try ACPIPCIHotplugController(ejector: { _, _ in }).restoreState(saved) }
        var beyond = saved
        beyond.selectedSegment = 2
        #expect(throws: DeviceStateError.self) { try fresh.restoreState(beyond) }
    }
}
