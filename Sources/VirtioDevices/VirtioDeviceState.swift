import DeviceModel
import VirtioQueue

/// The device-specific part of a virtio device's saved state, one case per device type,
/// so that the transport saves and restores any device the same way.
public enum VirtioDeviceState: Codable, Equatable, Sendable {
    /// A ``VirtioBlock``'s state.
    case block(VirtioBlock.State)
    /// A ``VirtioNet``'s state.
    case net(VirtioNet.State)
    /// A ``VirtioRng`` keeps nothing beyond its queue.
    case rng
    /// A ``VirtioConsole``'s state.
    case console(VirtioConsole.State)
    /// A ``VirtioVsock``'s state.
    case vsock(VirtioVsock.State)
    /// A ``VirtioPmem``'s state.
    case pmem(VirtioPmem.State)
    /// A ``VirtioBalloon``'s state.
    case balloon(VirtioBalloon.State)
    /// A ``VirtioMem``'s state.
    case mem(VirtioMem.State)
    /// A ``VirtioIommu``'s state: its own fields and the translation table.
    case iommu(VirtioIommu.State, table: IommuTable)
    /// A device that cannot save its state (restoring it is refused).
    case unsupported(type: UInt16)

    /// The case's name, for messages.
    var kind: String {
        switch self {
        case .block: "block"
        case .net: "net"
        case .rng: "rng"
        case .console: "console"
        case .vsock: "vsock"
        case .pmem: "pmem"
        case .balloon: "balloon"
        case .mem: "mem"
        case .iommu: "iommu"
        case .unsupported(let type): "unsupported type \(type)"
        }
    }
}

/// What a device hands the transport when saved: its own state and, while it runs, the
/// queues it serves at their current positions (by queue index), taken together.
public struct VirtioDeviceSnapshot: Sendable {
    /// The device-specific state.
    public var state: VirtioDeviceState
    /// The running queues' states by queue index (empty while the device is not running).
    /// A queue that holds popped but unfinished chains is saved with `nextAvailable` moved
    /// back before them, so the restored device pops them again.
    public var queues: [Int: SplitQueueState]

    /// A snapshot with both parts.
    public init(state: VirtioDeviceState, queues: [Int: SplitQueueState]) {
        self.state = state
        self.queues = queues
    }
}

extension VirtioDevice {
    /// A device without state support saves ``VirtioDeviceState/unsupported(type:)``.
    public func saveDeviceState() -> VirtioDeviceSnapshot {
        VirtioDeviceSnapshot(state: .unsupported(type: deviceType.rawValue), queues: [:])
    }

    /// A device without state support refuses every state.
    public func restoreDeviceState(_ state: VirtioDeviceState) throws(DeviceStateError) {
        throw DeviceStateError(device: "virtio-\(deviceType)", reason: "this device type cannot restore a saved state")
    }

    /// The error for a state of another device type.
    func wrongKind(_ state: VirtioDeviceState) -> DeviceStateError {
        DeviceStateError(device: "virtio-\(deviceType)", reason: "device: the state is for a \(state.kind) device")
    }
}
