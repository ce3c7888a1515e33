import DeviceModel
import Synchronization

/// Cloud Hypervisor's PCI hotplug register block (the `BusDevice` of its `DeviceManager`, at
/// the address the DSDT's `\_SB_.PHPR` describes): 16 bytes through which the guest's
/// `PCNT` methods learn which slots of the selected segment gained or lost a device, and
/// through which `_EJ0` ejects one.
///
/// | offset | width | register |
/// |---|---|---|
/// | 0 | 4 bytes | `PCIU`: slots with a new device (bit N = device number N); a read clears it |
/// | 4 | 4 bytes | `PCID`: slots whose device is to be removed; a read clears it |
/// | 8 | 4 bytes | `B0EJ`: writing bit N ejects the device at slot N of the selected segment; reads 0 |
/// | 12 | 4 bytes | `PSEG`: the selected segment |
///
/// Accesses of another width are ignored (reads return 0), and a segment selection beyond
/// the segments the VM has is refused, as in Cloud Hypervisor.
///
/// The VMM marks slots with ``markInserted(segment:slot:)`` and ``markRemoving(segment:slot:)``
/// and then notifies the Generic Event Device's PCI cause.
public final class ACPIPCIHotplugController: BusDevice {
    /// Releases the device at a slot the guest ejected (called on the ejecting vCPU's
    /// thread, outside the device's lock): (segment, device number).
    public typealias Ejector = @Sendable (UInt16, UInt8) -> Void

    /// The size of the register block (Cloud Hypervisor's `DEVICE_MANAGER_ACPI_SIZE`).
    public static let registerSize: UInt64 = 0x10
    /// The offset of `PCIU`.
    public static let upOffset: UInt64 = 0
    /// The offset of `PCID`.
    public static let downOffset: UInt64 = 4
    /// The offset of `B0EJ`.
    public static let ejectOffset: UInt64 = 8
    /// The offset of `PSEG`.
    public static let segmentOffset: UInt64 = 12

    /// The controller's state: the selected segment and each segment's pending bitmaps.
    public struct State: Codable, Equatable, Sendable {
        /// The segment `PSEG` selects.
        public var selectedSegment: UInt32
        /// Per segment, the slots with a device the guest has not been told about (`PCIU`).
        public var devicesUp: [UInt32]
        /// Per segment, the slots whose device is to be removed (`PCID`).
        public var devicesDown: [UInt32]

        /// A state for `segments` segments with nothing pending.
        public init(segments: Int) {
            selectedSegment = 0
            devicesUp = Array(repeating: 0, count: segments)
            devicesDown = Array(repeating: 0, count: segments)
        }

        /// The JSON names, in snake case.
        enum CodingKeys: String, CodingKey {
            case selectedSegment = "selected_segment"
            case devicesUp = "pci_devices_up"
            case devicesDown = "pci_devices_down"
        }
    }

    /// The name used in logs and bus errors.
    public let name: String
    private let state: Mutex<State>
    private let ejector: Ejector

    /// Creates the controller for `segments` PCI segments.
    ///
    /// - Parameters:
    ///   - ejector: releases the device the guest ejects.
    public init(segments: Int = 1, name: String = "pci-hotplug", ejector: @escaping Ejector) {
        self.name = name
        self.ejector = ejector
        state = Mutex(State(segments: max(1, segments)))
    }

    /// Reports a new device at `slot` of `segment` (the guest sees it on its next scan).
    public func markInserted(segment: UInt16, slot: UInt8) {
        state.withLock { state in
            guard Int(segment) < state.devicesUp.count, slot < 32 else { return }
            state.devicesUp[Int(segment)] |= 1 << UInt32(slot)
        }
    }

    /// Asks the guest to release the device at `slot` of `segment` (it ejects it through `B0EJ`).
    public func markRemoving(segment: UInt16, slot: UInt8) {
        state.withLock { state in
            guard Int(segment) < state.devicesDown.count, slot < 32 else { return }
            state.devicesDown[Int(segment)] |= 1 << UInt32(slot)
        }
    }

    /// The pending bitmaps of `segment`, without clearing them.
    public func pending(segment: UInt16) -> (up: UInt32, down: UInt32) {
        state.withLock { state in
            guard Int(segment) < state.devicesUp.count else { return (0, 0) }
            return (state.devicesUp[Int(segment)], state.devicesDown[Int(segment)])
        }
    }

    /// `PCIU` and `PCID` (each cleared by the read), `B0EJ` (0) and `PSEG`, in 4-byte reads.
    public func read(offset: UInt64, size: Int) -> UInt64 {
        guard size == 4 else { return 0 }
        return state.withLock { state in
            let segment = Int(state.selectedSegment)
            switch offset {
            case Self.upOffset:
                defer { state.devicesUp[segment] = 0 }
                return UInt64(state.devicesUp[segment])
            case Self.downOffset:
                defer { state.devicesDown[segment] = 0 }
                return UInt64(state.devicesDown[segment])
            case Self.segmentOffset:
                return UInt64(state.selectedSegment)
            default:
                return 0
            }
        }
    }

    /// Ejects the slots set in a `B0EJ` write, lowest first, or selects a segment (`PSEG`).
    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard size == 4 else { return }
        let ejected: (segment: UInt16, bitmap: UInt32)? = state.withLock { state in
            switch offset {
            case Self.ejectOffset:
                return (UInt16(state.selectedSegment), UInt32(truncatingIfNeeded: value))
            case Self.segmentOffset:
                let selected = UInt32(truncatingIfNeeded: value)
                if Int(selected) < state.devicesUp.count { state.selectedSegment = selected }
                return nil
            default:
                return nil
            }
        }
        guard let ejected else { return }
        var bitmap = ejected.bitmap
        while bitmap != 0 {
            let slot = UInt8(bitmap.trailingZeroBitCount)
            ejector(ejected.segment, slot)
            bitmap &= ~(1 << UInt32(slot))
        }
    }
}

extension ACPIPCIHotplugController: StatefulDevice {
    /// The state, taken under the device's lock.
    public func saveState() -> State { state.withLock { $0 } }

    /// Replaces the state; refuses, changing nothing, a state for another number of segments
    /// or selecting a segment beyond them.
    public func restoreState(_ saved: State) throws(DeviceStateError) {
        let count = state.withLock { $0.devicesUp.count }
        guard saved.devicesUp.count == count, saved.devicesDown.count == count else {
            throw DeviceStateError(device: name, reason: "the state describes \(saved.devicesUp.count) PCI segments, the VM has \(count)")
        }
        guard Int(saved.selectedSegment) < count else {
            throw DeviceStateError(device: name, reason: "selected_segment \(saved.selectedSegment) is beyond the VM's \(count) PCI segments")
        }
        state.withLock { $0 = saved }
    }
}
