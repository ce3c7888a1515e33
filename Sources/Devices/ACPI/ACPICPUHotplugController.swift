import DeviceModel
import Synchronization

/// Cloud Hypervisor's CPU hotplug controller (`AcpiCpuHotplugController`): a 12-byte MMIO
/// block through which the DSDT's `\_SB_.PRES` methods learn which vCPUs are present and
/// which are being added or removed, and eject removed ones.
///
/// | offset | width | register |
/// |---|---|---|
/// | 0 | 4 bytes | selection (`CSEL`): the vCPU the status register is about |
/// | 4 | 1 byte | status: bit 0 enabled (`CPEN`), 1 inserting (`CINS`), 2 removing (`CRMV`), 3 eject (`CEJ0`, write only) |
/// | 8 | 4 bytes | data (`CDAT`): declared by the DSDT, reads 0 |
///
/// Writing the status register with bit 1 or 2 set acknowledges an insertion or removal
/// (the guest's `CSCN` does after notifying the processor device); writing it with bit 3
/// set ejects the selected vCPU: the device stops reporting it enabled and asks the
/// injected ``Ejector`` to stop its thread. Accesses of another width, or about a vCPU
/// beyond the maximum, are ignored (reads return 0), as in Cloud Hypervisor.
///
/// The VMM marks vCPUs with ``insert(_:)`` after starting their threads and with
/// ``markForRemoval(_:)``, then notifies the Generic Event Device's CPU hotplug cause.
public final class ACPICPUHotplugController: BusDevice {
    /// Stops the thread of a vCPU the guest ejected (called on the ejecting vCPU's thread,
    /// outside the device's lock).
    public typealias Ejector = @Sendable (UInt32) -> Void

    /// The size of the register block (Cloud Hypervisor's `CPU_MANAGER_ACPI_SIZE`).
    public static let registerSize: UInt64 = 0xc
    /// The offset of the selection register.
    public static let selectionOffset: UInt64 = 0
    /// The offset of the status register.
    public static let statusOffset: UInt64 = 4

    /// The bits of the status register (shared with the other hotplug controller).
    public typealias Status = ACPIHotplugStatus

    /// The controller's state: the guest's selection and each vCPU's flags.
    public struct State: Codable, Equatable, Sendable {
        /// The vCPU the guest selected last.
        public var selected: UInt32
        /// The ``Status`` bits (enabled, inserting, removing) of each vCPU up to the maximum.
        public var status: [UInt8]
        /// The vCPUs marked for removal that the guest has not ejected yet.
        public var pendingRemoval: [UInt32]

        /// A state for `maxVCPUs` vCPUs, the first `present` of them enabled.
        public init(maxVCPUs: Int, present: Int) {
            selected = 0
            status = (0..<maxVCPUs).map { $0 < present ? Status.enabled.rawValue : 0 }
            pendingRemoval = []
        }

        /// The JSON names, in snake case.
        enum CodingKeys: String, CodingKey {
            case selected, status
            case pendingRemoval = "pending_removal"
        }
    }

    /// The name used in logs and bus errors.
    public let name: String
    private let state: Mutex<State>
    private let ejector: Ejector

    /// Creates the controller for `maxVCPUs` vCPUs, the first `presentVCPUs` of them running.
    ///
    /// - Parameters:
    ///   - ejector: stops the thread of a vCPU the guest ejects.
    public init(maxVCPUs: Int, presentVCPUs: Int, name: String = "cpu-hotplug", ejector: @escaping Ejector) {
        self.name = name
        self.ejector = ejector
        state = Mutex(State(maxVCPUs: maxVCPUs, present: presentVCPUs))
    }

    /// How many vCPUs the controller describes.
    public var maxVCPUs: Int { state.withLock { $0.status.count } }

    /// The status bits of vCPU `id` (empty beyond the maximum).
    public func status(of id: UInt32) -> Status {
        state.withLock { Int(id) < $0.status.count ? Status(rawValue: $0.status[Int(id)]) : [] }
    }

    /// The vCPUs reported enabled, in order.
    public var enabledVCPUs: [UInt32] {
        state.withLock { state in state.status.indices.filter { Status(rawValue: state.status[$0]).contains(.enabled) }.map { UInt32($0) } }
    }

    /// The vCPUs marked for removal that the guest has not ejected yet.
    public var pendingRemoval: [UInt32] { state.withLock { $0.pendingRemoval } }

    /// Reports vCPU `id` enabled and inserting (its thread runs); the guest sees it on its next scan.
    public func insert(_ id: UInt32) {
        state.withLock { state in
            guard Int(id) < state.status.count else { return }
            state.status[Int(id)] |= Status.enabled.rawValue | Status.inserting.rawValue
        }
    }

    /// Reports vCPU `id` removing; it stays enabled until the guest ejects it.
    public func markForRemoval(_ id: UInt32) {
        state.withLock { state in
            guard Int(id) < state.status.count else { return }
            state.status[Int(id)] |= Status.removing.rawValue
            if !state.pendingRemoval.contains(id) { state.pendingRemoval.append(id) }
        }
    }

    /// The selection register (4-byte reads) or the selected vCPU's status (1-byte reads).
    public func read(offset: UInt64, size: Int) -> UInt64 {
        state.withLock { state in
            switch (offset, size) {
            case (Self.selectionOffset, 4):
                return UInt64(state.selected)
            case (Self.statusOffset, 1):
                guard Int(state.selected) < state.status.count else { return 0 }
                return UInt64(state.status[Int(state.selected)] & (Status.enabled.rawValue | Status.inserting.rawValue | Status.removing.rawValue))
            default:
                return 0
            }
        }
    }

    /// Selects a vCPU (4-byte writes at 0) or acknowledges and ejects (1-byte writes at 4).
    public func write(offset: UInt64, size: Int, value: UInt64) {
        let ejected: UInt32? = state.withLock { state in
            switch (offset, size) {
            case (Self.selectionOffset, 4):
                state.selected = UInt32(truncatingIfNeeded: value)
                return nil
            case (Self.statusOffset, 1):
                let id = state.selected
                guard Int(id) < state.status.count else { return nil }
                let written = Status(rawValue: UInt8(truncatingIfNeeded: value))
                var current = Status(rawValue: state.status[Int(id)])
                if written.contains(.inserting) { current.remove(.inserting) }
                if written.contains(.removing) { current.remove(.removing) }
                var ejected: UInt32?
                if written.contains(.eject), current.contains(.enabled) {
                    current.remove(.enabled)
                    ejected = id
                }
                state.status[Int(id)] = current.rawValue
                return ejected
            default:
                return nil
            }
        }
        guard let ejected else { return }
        // The removal stays pending until the thread has stopped: a grow must not reuse the
        // vCPU before that.
        ejector(ejected)
        state.withLock { $0.pendingRemoval.removeAll { $0 == ejected } }
    }
}

extension ACPICPUHotplugController {
    /// The state, taken under the device's lock.
    public func saveState() -> State { state.withLock { $0 } }

    /// Replaces the state; refuses, changing nothing, a state for another vCPU maximum or
    /// with bits other than enabled, inserting and removing.
    public func restoreState(_ saved: State) throws(DeviceStateError) {
        let count = maxVCPUs
        guard saved.status.count == count else {
            throw DeviceStateError(device: name, reason: "the state describes \(saved.status.count) vCPUs, the VM has at most \(count)")
        }
        guard saved.status.allSatisfy({ $0 & ~0x7 == 0 }) else {
            throw DeviceStateError(device: name, reason: "a vCPU's status sets bits other than enabled, inserting and removing (0x07)")
        }
        guard saved.pendingRemoval.allSatisfy({ Int($0) < count }) else {
            throw DeviceStateError(device: name, reason: "pending_removal names a vCPU beyond the \(count) the VM can have")
        }
        state.withLock { $0 = saved }
    }
}
