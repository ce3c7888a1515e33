import DeviceModel
import Synchronization
import VirtioQueue

extension VirtioConsole {
    /// A console's own state (its two queues are saved by the transport).
    public struct State: Codable, Equatable, Sendable {
        /// The features the driver accepted.
        public var features: UInt64
        /// The terminal width the configuration reports.
        public var cols: UInt16
        /// The terminal height the configuration reports.
        public var rows: UInt16
        /// Host input accepted but not yet delivered to the guest, in order.
        public var pendingInput: [UInt8]
        /// A receive failure waiting to be reported at the next notification, as text.
        public var inputError: String?

        /// A state with every field given.
        public init(features: UInt64, cols: UInt16, rows: UInt16, pendingInput: [UInt8], inputError: String?) {
            self.features = features
            self.cols = cols
            self.rows = rows
            self.pendingInput = pendingInput
            self.inputError = inputError
        }
    }

    /// The state and both running queues, taken with the receive, transmit and settings
    /// locks held together.
    public func saveDeviceState() -> VirtioDeviceSnapshot {
        receiver.withLock { receiver in
            transmitter.withLock { transmitter in
                settings.withLock { settings in
                    var queues: [Int: SplitQueueState] = [:]
                    if let link = receiver.link { queues[Self.receiveQueue] = link.queue.state }
                    if let link = transmitter { queues[Self.transmitQueue] = link.queue.state }
                    let state = State(features: settings.acknowledged, cols: settings.cols, rows: settings.rows,
                                      pendingInput: receiver.pending.peek(receiver.pending.count),
                                      inputError: receiver.failure.map { "\($0)" })
                    return VirtioDeviceSnapshot(state: .console(state), queues: queues)
                }
            }
        }
    }

    /// Takes the negotiated features, terminal size and waiting input (delivered when
    /// the driver next notifies the receive queue).
    ///
    /// - Throws: `DeviceStateError` naming the field: another device type, feature bits
    ///   not offered, or more waiting input than ``inputCapacity``.
    public func restoreDeviceState(_ state: VirtioDeviceState) throws(DeviceStateError) {
        guard case .console(let saved) = state else { throw wrongKind(state) }
        func refuse(_ reason: String) -> DeviceStateError { DeviceStateError(device: "virtio-console", reason: reason) }
        let extra = saved.features & ~(features | VirtioFeature.transportOffered)
        guard extra == 0 else { throw refuse("features: bits 0x\(String(extra, radix: 16)) were not offered by this device") }
        let capacity = inputCapacity
        guard saved.pendingInput.count <= capacity else {
            throw refuse("pendingInput: \(saved.pendingInput.count) bytes exceed the input capacity \(capacity)")
        }
        receiver.withLock { receiver in
            var pending = ConsoleInputBuffer(capacity: capacity)
            _ = pending.append(saved.pendingInput[...])
            receiver.pending = pending
            receiver.failure = saved.inputError.map { .backend("restored input failure: \($0)") }
        }
        settings.withLock { settings in
            settings.acknowledged = saved.features
            settings.cols = saved.cols
            settings.rows = saved.rows
        }
    }
}
