/// A device whose whole state is one `Codable` value (vm-superio's `SerialState` shape), for
/// snapshot, restore and migration.
///
/// `saveState()` takes the state under the device's own lock, so it is never torn; the VMM
/// calls it while the machine is paused. Restoring goes into a device built the normal way
/// from the same configuration and backends: `restoreState(_:)` checks the value first and
/// refuses an inconsistent one with the reason, leaving the device as it was.
///
/// ```swift
/// let saved = try JSONCoding.encode(serial.saveState(), sortedKeys: true)   // import JSONCoding
/// let fresh = Serial16550(interrupt: line, output: output)
/// try fresh.restoreState(JSONCoding.decode(Serial16550.State.self, from: saved))
/// ```
public protocol StatefulDevice: AnyObject {
    /// Everything the device keeps (registers, FIFOs, queue positions...), nothing the VMM
    /// rebuilds from configuration (backends, file descriptors, addresses of host memory).
    associatedtype State: Codable, Equatable, Sendable
    /// The device's current state.
    func saveState() -> State
    /// Replaces the device's state with `state`, or throws (changing nothing) when `state`
    /// could not have been saved from a device of this configuration.
    func restoreState(_ state: State) throws(DeviceStateError)
}

/// Why a device refused a saved state.
public struct DeviceStateError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The device (its name or kind).
    public var device: String
    /// What is wrong with the state, naming the field.
    public var reason: String

    /// An error for `device`.
    public init(device: String, reason: String) {
        self.device = device
        self.reason = reason
    }

    /// One sentence: the device and the reason.
    public var description: String { "cannot restore \(device): \(reason)" }
}
