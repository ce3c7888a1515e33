import DeviceModel
import Synchronization
import Testing
import VMAllocator
@testable import VMM

/// A device with a one-number state, for the registry's state plumbing.
final class NumberDevice: StatefulDevice, @unchecked Sendable {
    struct State: Codable, Equatable, Sendable { var value: Int }
    let value = Mutex(0)
    func saveState() -> State { State(value: value.withLock { $0 }) }
    func restoreState(_ state: State) throws(DeviceStateError) {
        guard state.value >= 0 else { throw DeviceStateError(device: "number", reason: "value \(state.value) is negative") }
        value.withLock { $0 = state.value }
    }
}

@Suite("device manager registry")
struct DeviceManagerTests {
    func manager() throws -> DeviceManager {
        DeviceManager(mmio32: [try AddressAllocator(name: "test MMIO", base: 0xC000_0000, size: 0x1000_0000)])
    }

    @Test("Devices keep their order; ids are unique; the device tree and counters come from the table")
    func registry() throws {
        let devices = try manager()
        try devices.register(ManagedDevice(id: "serial", kind: "serial-16550", resources: DeviceResources(pio: [(0x3F8, 8)], gsis: [4])))
        try devices.register(ManagedDevice(id: "_disk0", kind: "virtio-block", resources: DeviceResources(pciBDF: "0000:00:02.0"),
                                           counters: { ["read_bytes": 512] }))
        try devices.register(ManagedDevice(id: "_net0", kind: "virtio-net", resources: DeviceResources(pciBDF: "0000:00:03.0"),
                                           counters: { ["rx_bytes": 64] }))
        #expect(throws: VMMError.self) {
            try devices.register(ManagedDevice(id: "_disk0", kind: "virtio-block", resources: DeviceResources()))
        }
        #expect(devices.devices.map(\.id) == ["serial", "_disk0", "_net0"])
        #expect(devices.deviceTree == ["_disk0": DeviceNode(id: "_disk0", pciBDF: "0000:00:02.0"),
                                       "_net0": DeviceNode(id: "_net0", pciBDF: "0000:00:03.0")])
        #expect(devices.counters() == ["_disk0": ["read_bytes": 512], "_net0": ["rx_bytes": 64]])
        #expect(devices.unregister(id: "_disk0")?.kind == "virtio-block")
        #expect(devices.devices.map(\.id) == ["serial", "_net0"])
        #expect(devices.unregister(id: "nothing") == nil)
    }

    @Test("The 32-bit window's allocator outlives the build: later allocations do not overlap earlier ones")
    func allocatorSurvives() throws {
        let devices = try manager()
        let first = try devices.allocateMMIO32(size: 0x1000, alignment: 0x1000)
        let second = try devices.allocateMMIO32(size: 0x4000, alignment: 0x4000)
        #expect(first.start + first.size <= second.start || second.start + second.size <= first.start)
    }

    @Test("A stateful entry saves JSON and restores it; a bad state is refused with the reason and changes nothing")
    func statePlumbing() throws {
        let device = NumberDevice()
        device.value.withLock { $0 = 41 }
        let entry = ManagedDevice.stateful(device, id: "n", kind: "number", resources: DeviceResources())
        let saved = try #require(try entry.saveState?())
        #expect(saved == #"{"value":41}"#)
        let fresh = NumberDevice()
        let restoring = ManagedDevice.stateful(fresh, id: "n", kind: "number", resources: DeviceResources())
        try restoring.restoreState?(saved)
        #expect(fresh.value.withLock { $0 } == 41)
        #expect(throws: DeviceStateError.self) { try restoring.restoreState?(#"{"value":-1}"#) }
        #expect(throws: DeviceStateError.self) { try restoring.restoreState?(#"{"volume":3}"#) }
        #expect(fresh.value.withLock { $0 } == 41)
    }
}
