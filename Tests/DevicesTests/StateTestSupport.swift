import DeviceModel
import Devices
import Foundation
import Testing

/// Saves `device`'s state and passes it through JSON, as a snapshot file would.
func savedThroughJSON<Device: StatefulDevice>(_ device: Device) throws -> Device.State {
    let data = try JSONEncoder().encode(device.saveState())
    return try JSONDecoder().decode(Device.State.self, from: data)
}

/// The JSON text of `device`'s state.
func stateJSON<Device: StatefulDevice>(_ device: Device) throws -> String {
    String(decoding: try JSONEncoder().encode(device.saveState()), as: UTF8.self)
}

/// Checks that `device` refuses `state` with a reason naming `field`, and that the refusal
/// changed nothing.
func expectRefusal<Device: StatefulDevice>(
    _ device: Device, _ state: Device.State, naming field: String, sourceLocation: SourceLocation = #_sourceLocation
) {
    let before = device.saveState()
    let error = #expect(throws: DeviceStateError.self, sourceLocation: sourceLocation) {
        try device.restoreState(state)
    }
    #expect(error?.reason.contains(field) == true, "\(String(describing: error))", sourceLocation: sourceLocation)
    #expect(device.saveState() == before, sourceLocation: sourceLocation)
}
