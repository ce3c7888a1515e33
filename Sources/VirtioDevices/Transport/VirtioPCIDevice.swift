import GuestMemory
import PCI
import Synchronization
import VirtioQueue

/// The modern (virtio 1.x, non-transitional) virtio-pci transport for one
/// ``VirtioDevice``, laid out as Cloud Hypervisor does (see ``VirtioPCILayout``).
///
/// The guest drives it through configuration space (identity, the vendor-specific
/// capabilities and MSI-X) and BAR 0 (common configuration, ISR, device configuration,
/// notifications and the MSI-X table and PBA). When the driver sets DRIVER_OK the
/// transport builds the ``VirtioQueue/SplitQueue``s and activates the device; a
/// notification of queue `i` (a BAR write, or ``notifyQueue(_:)`` from the VMM's
/// ioeventfd handler) runs ``VirtioDevice/processQueue(_:)``. Any device error sets
/// `DEVICE_NEEDS_RESET` and raises a configuration interrupt; the device stays quiet
/// until the driver writes status 0.
///
/// ```swift
/// let rng = try VirtioRng(source: FileEntropySource(fileDescriptor: urandomFD))
/// let transport = try VirtioPCIDevice(device: rng, memory: memory, msixRouting: routing,
///                                     barAddress: 0xe000_0000)
/// _ = try bus.add(transport)
/// ```
public final class VirtioPCIDevice: PCIDevice {
    /// The transport's registers and queues, behind one lock.
    struct Live {
        var configuration: PCIConfiguration
        var deviceFeatureSelect: UInt32 = 0
        var driverFeatureSelect: UInt32 = 0
        var driverFeatures: UInt64 = 0
        var status: UInt8 = 0
        var queueSelect: UInt16 = 0
        var queues: [SplitQueue]
        var queueEnabled: [Bool]
        var activated = false
        var lastError: VirtioDeviceError?
    }

    /// The device behind the transport.
    public let device: any VirtioDevice
    /// A name for logs: `virtio-` and the device type.
    public let name: String
    /// The features offered: the device's plus ``VirtioFeature/version1``.
    public let offeredFeatures: UInt64
    let memory: GuestMemory
    let interrupt: VirtioPCIInterrupt
    let state: Mutex<Live>
    private let forwarder = Mutex<(@Sendable (Int) -> Void)?>(nil)

    /// Builds the transport with BAR 0 at `barAddress` and one MSI-X vector per queue
    /// plus one for configuration changes. BAR 0 is a 64-bit memory BAR, or a 32-bit one with
    /// `barKind: .memory32` (Cloud Hypervisor's choice for a boot disk on segment 0); neither
    /// is prefetchable.
    ///
    /// - Throws: ``VirtioPCIError`` when the device's queues are unusable, or the BAR or
    ///   capabilities do not fit.
    ///
    /// With a `translator` (the device sits behind a virtual IOMMU, `iommu=on`) the transport
    /// also offers `VIRTIO_F_ACCESS_PLATFORM` and every queue translates the driver's
    /// addresses through it.
    public init(device: any VirtioDevice, memory: GuestMemory, msixRouting: any MSIXRouting, barAddress: UInt64,
                barKind: PCIBARKind = .memory64, translator: (any AddressTranslator)? = nil) throws(VirtioPCIError) {
        let maxSizes = device.queueMaxSizes
        guard !maxSizes.isEmpty, maxSizes.count < MSIXConfiguration.maxVectors else {
            throw .invalidQueueCount(maxSizes.count)
        }
        var queues: [SplitQueue] = []
        for (index, maxSize) in maxSizes.enumerated() {
            do { queues.append(try SplitQueue(maxSize: maxSize)) } catch { throw .invalidQueue(index: index, error) }
            queues[index].translator = translator
        }
        let deviceID = VirtioPCILayout.deviceIDBase &+ device.deviceType.rawValue
        var configuration = PCIConfiguration(
            vendorID: VirtioPCILayout.vendorID, deviceID: deviceID, revision: VirtioPCILayout.revision,
            classCode: device.pciClassCode, subsystemVendorID: VirtioPCILayout.vendorID, subsystemID: deviceID)
        let msix: MSIXConfiguration
        do {
            msix = try MSIXConfiguration(vectors: maxSizes.count + 1, routing: msixRouting)
            try configuration.addBAR(PCIBAR(index: VirtioPCILayout.barIndex, kind: barKind,
                                            size: VirtioPCILayout.barSize, address: barAddress))
            _ = try configuration.addCapability(msix.capability(
                tableBAR: UInt8(VirtioPCILayout.barIndex), tableOffset: UInt32(VirtioPCILayout.msixTableOffset),
                pbaBAR: UInt8(VirtioPCILayout.barIndex), pbaOffset: UInt32(VirtioPCILayout.msixPBAOffset)))
            typealias T = VirtioPCILayout.CapabilityType
            _ = try configuration.addCapability(VirtioPCILayout.capability(
                type: T.common, offset: VirtioPCILayout.commonConfigOffset, length: VirtioPCILayout.commonConfigLength))
            _ = try configuration.addCapability(VirtioPCILayout.capability(
                type: T.isr, offset: VirtioPCILayout.isrOffset, length: VirtioPCILayout.isrLength))
            _ = try configuration.addCapability(VirtioPCILayout.capability(
                type: T.device, offset: VirtioPCILayout.deviceConfigOffset, length: VirtioPCILayout.deviceConfigLength))
            _ = try configuration.addCapability(VirtioPCILayout.capability(
                type: T.notify, offset: VirtioPCILayout.notifyOffset, length: VirtioPCILayout.notifyLength,
                notifyOffMultiplier: VirtioPCILayout.notifyOffMultiplier))
        } catch {
            throw .pci(error)
        }
        self.device = device
        self.name = "virtio-\(device.deviceType)"
        self.offeredFeatures = device.features | VirtioFeature.version1 | (translator == nil ? 0 : VirtioFeature.accessPlatform)
        self.memory = memory
        self.interrupt = VirtioPCIInterrupt(msix: msix, queueCount: maxSizes.count)
        self.state = Mutex(Live(configuration: configuration, queues: queues,
                                 queueEnabled: Array(repeating: false, count: maxSizes.count)))
    }

    // MARK: - Observation

    /// The device status byte as the driver reads it.
    public var status: UInt8 { state.withLock { $0.status } }
    /// Whether the device is running (DRIVER_OK accepted and no reset since).
    public var isActivated: Bool { state.withLock { $0.activated } }
    /// The error that set `DEVICE_NEEDS_RESET`, if any since the last reset.
    public var lastError: VirtioDeviceError? { state.withLock { $0.lastError } }
    /// The features the driver wrote.
    public var driverFeatures: UInt64 { state.withLock { $0.driverFeatures } }
    /// A copy of the configuration space.
    public var configuration: PCIConfiguration { state.withLock { $0.configuration } }
    /// A copy of the MSI-X state.
    public var msix: MSIXConfiguration { interrupt.state.withLock { $0.msix } }

    /// The guest address a driver writes to notify queue `queue` (for an ioeventfd),
    /// or `nil` for a queue the device does not have.
    public func notifyAddress(queue: Int) -> UInt64? {
        state.withLock { state in
            guard state.queues.indices.contains(queue), let bar = state.configuration.bar(VirtioPCILayout.barIndex) else {
                return nil
            }
            return bar.address + VirtioPCILayout.notifyOffset + UInt64(queue) * UInt64(VirtioPCILayout.notifyOffMultiplier)
        }
    }

    /// The MSI-X table entry the driver chose for queue `queue`, or `nil` when it chose none
    /// (or the queue does not exist). A device served by another process (vhost-user) gives
    /// that vector's irqfd to its back-end.
    public func queueVector(_ queue: Int) -> Int? {
        interrupt.state.withLock { state in
            guard state.queueVectors.indices.contains(queue), state.queueVectors[queue] != VirtioPCIInterrupt.noVector else { return nil }
            return Int(state.queueVectors[queue])
        }
    }

    // MARK: - PCIDevice

    /// Reads a configuration dword.
    public func readConfigRegister(_ register: Int) -> UInt32 {
        state.withLock { $0.configuration.readRegister(register) }
    }

    /// Writes configuration space, forwarding MSI-X message control changes.
    public func writeConfigRegister(_ register: Int, offset: Int, size: Int, value: UInt32) -> BARReprogram? {
        state.withLock { state in
            guard register >= 0, register < state.configuration.size / 4, (0...3).contains(offset) else { return nil }
            let result = state.configuration.write(offset: register * 4 + offset, size: size, value: value)
            if let control = result.msixMessageControl {
                interrupt.state.withLock { $0.msix.setMessageControl(control) }
            }
            return result.barReprogram
        }
    }

    /// BAR 0 as the VMM maps it.
    public var bars: [PCIBAR] { state.withLock { $0.configuration.bars } }

    /// Reads BAR 0: the structure the offset falls in decides.
    public func readBAR(index: Int, offset: UInt64, size: Int) -> UInt64 {
        guard index == VirtioPCILayout.barIndex, [1, 2, 4, 8].contains(size) else { return 0 }
        typealias L = VirtioPCILayout
        switch offset {
        case L.commonConfigOffset..<(L.commonConfigOffset + L.commonConfigLength):
            return readCommon(offset: offset - L.commonConfigOffset, size: size)
        case L.isrOffset..<(L.isrOffset + L.isrLength):
            return UInt64(interrupt.readAndClearISR())
        case L.deviceConfigOffset..<(L.deviceConfigOffset + L.deviceConfigLength):
            return device.readConfig(offset: offset - L.deviceConfigOffset, size: size)
        case L.msixTableOffset..<(L.msixTableOffset + L.msixTableLength):
            return interrupt.state.withLock { $0.msix.readTable(offset: offset - L.msixTableOffset, size: size) }
        case L.msixPBAOffset..<(L.msixPBAOffset + L.msixPBALength):
            return interrupt.state.withLock { $0.msix.readPBA(offset: offset - L.msixPBAOffset, size: size) }
        default:
            return 0
        }
    }

    /// Writes BAR 0: common configuration, device configuration, notifications or MSI-X.
    public func writeBAR(index: Int, offset: UInt64, size: Int, value: UInt64) {
        guard index == VirtioPCILayout.barIndex, [1, 2, 4, 8].contains(size) else { return }
        typealias L = VirtioPCILayout
        switch offset {
        case L.commonConfigOffset..<(L.commonConfigOffset + L.commonConfigLength):
            writeCommon(offset: offset - L.commonConfigOffset, size: size, value: value)
        case L.deviceConfigOffset..<(L.deviceConfigOffset + L.deviceConfigLength):
            device.writeConfig(offset: offset - L.deviceConfigOffset, size: size, value: value)
        case L.notifyOffset..<(L.notifyOffset + L.notifyLength):
            let relative = offset - L.notifyOffset
            guard relative % UInt64(L.notifyOffMultiplier) == 0 else { return }
            let queue = Int(relative / UInt64(L.notifyOffMultiplier))
            if let forward = forwarder.withLock({ $0 }) {
                forward(queue)
            } else {
                notifyQueue(queue)
            }
        case L.msixTableOffset..<(L.msixTableOffset + L.msixTableLength):
            interrupt.state.withLock { $0.msix.writeTable(offset: offset - L.msixTableOffset, size: size, value: value) }
        default:
            break
        }
    }

    // MARK: - Notifications

    /// Hands notify-region writes to `handler` (with the queue index) instead of serving
    /// the queue on the writing thread. A VMM whose ioeventfds catch the driver's usual
    /// notifications passes the rest (other widths, writes it did not register) to its event
    /// loop this way, so device I/O never runs on a vCPU thread (whose seccomp filter does
    /// not allow it). `nil` serves notifications inline again.
    public func forwardNotifications(to handler: (@Sendable (Int) -> Void)?) {
        forwarder.withLock { $0 = handler }
    }

    /// Runs the device on queue `index` after the driver notified it (a write to the
    /// notify region, or the VMM's ioeventfd). Ignored unless the device is running;
    /// a device error sets `DEVICE_NEEDS_RESET`.
    public func notifyQueue(_ index: Int) {
        let live = state.withLock { $0.activated && $0.status & VirtioStatus.deviceNeedsReset == 0 }
        guard live else { return }
        do {
            try device.processQueue(index)
        } catch .notActivated {
            // A reset raced with the notification: nothing to report.
        } catch {
            markNeedsReset(error)
        }
    }

    /// Runs device work that no notification started (a disk's asynchronous completions)
    /// the way ``notifyQueue(_:)`` runs queue processing: skipped unless the device is
    /// running, and a device error sets `DEVICE_NEEDS_RESET`.
    public func serveDeviceEvent(_ body: () throws(VirtioDeviceError) -> Void) {
        let live = state.withLock { $0.activated && $0.status & VirtioStatus.deviceNeedsReset == 0 }
        guard live else { return }
        do {
            try body()
        } catch .notActivated {
            // A reset raced with the event.
        } catch {
            markNeedsReset(error)
        }
    }

    /// Sets `DEVICE_NEEDS_RESET`, records `error` and tells the driver.
    private func markNeedsReset(_ error: VirtioDeviceError) {
        state.withLock { state in
            state.status |= VirtioStatus.deviceNeedsReset
            state.lastError = error
        }
        interrupt.signalConfig()
    }

    // MARK: - Common configuration

    private func readCommon(offset: UInt64, size: Int) -> UInt64 {
        typealias C = VirtioCommonConfig
        let vectors = interrupt.state.withLock { ($0.configVector, $0.queueVectors, $0.configGeneration) }
        return state.withLock { state in
            let selected = Int(state.queueSelect)
            let hasQueue = state.queues.indices.contains(selected)
            switch (offset, size) {
            case (C.deviceFeatureSelect, 4): return UInt64(state.deviceFeatureSelect)
            case (C.deviceFeature, 4): return Self.half(offeredFeatures, select: state.deviceFeatureSelect)
            case (C.driverFeatureSelect, 4): return UInt64(state.driverFeatureSelect)
            case (C.driverFeature, 4): return Self.half(state.driverFeatures, select: state.driverFeatureSelect)
            case (C.msixConfig, 2): return UInt64(vectors.0)
            case (C.numQueues, 2): return UInt64(state.queues.count)
            case (C.deviceStatus, 1): return UInt64(state.status)
            case (C.configGeneration, 1): return UInt64(vectors.2)
            case (C.queueSelect, 2): return UInt64(state.queueSelect)
            case (C.queueSize, 2): return hasQueue ? UInt64(state.queues[selected].size) : 0
            case (C.queueMSIXVector, 2): return hasQueue ? UInt64(vectors.1[selected]) : UInt64(VirtioPCIInterrupt.noVector)
            case (C.queueEnable, 2): return hasQueue && state.queueEnabled[selected] ? 1 : 0
            case (C.queueNotifyOff, 2): return hasQueue ? UInt64(selected) : 0
            case (C.queueDescriptor..<(C.queueDevice + 8), _):
                guard hasQueue, let (field, shift, mask) = Self.addressSlice(offset: offset, size: size) else { return 0 }
                let queue = state.queues[selected]
                let address = [queue.descriptorTable, queue.availableRing, queue.usedRing][field].rawValue
                return (address >> shift) & mask
            default: return 0
            }
        }
    }

    private func writeCommon(offset: UInt64, size: Int, value: UInt64) {
        typealias C = VirtioCommonConfig
        var signalNeedsReset = false
        state.withLock { state in
            let selected = Int(state.queueSelect)
            // Queue fields are frozen once the device runs or the queue is enabled.
            let queueWritable = state.queues.indices.contains(selected) && !state.activated && !state.queueEnabled[selected]
            switch (offset, size) {
            case (C.deviceFeatureSelect, 4): state.deviceFeatureSelect = UInt32(truncatingIfNeeded: value)
            case (C.driverFeatureSelect, 4): state.driverFeatureSelect = UInt32(truncatingIfNeeded: value)
            case (C.driverFeature, 4):
                guard state.status & VirtioStatus.featuresOK == 0, state.driverFeatureSelect < 2 else { return }
                let shift = UInt64(state.driverFeatureSelect) * 32
                state.driverFeatures = (state.driverFeatures & ~(0xffff_ffff << shift)) | ((value & 0xffff_ffff) << shift)
            case (C.msixConfig, 2):
                let vector = interrupt.checkedVector(UInt16(truncatingIfNeeded: value))
                interrupt.state.withLock { $0.configVector = vector }
            case (C.deviceStatus, 1):
                signalNeedsReset = writeStatus(UInt8(truncatingIfNeeded: value), state: &state)
            case (C.queueSelect, 2): state.queueSelect = UInt16(truncatingIfNeeded: value)
            case (C.queueSize, 2) where queueWritable:
                state.queues[selected].size = UInt16(truncatingIfNeeded: value)
            case (C.queueMSIXVector, 2) where state.queues.indices.contains(selected):
                let vector = interrupt.checkedVector(UInt16(truncatingIfNeeded: value))
                interrupt.state.withLock { $0.queueVectors[selected] = vector }
            case (C.queueEnable, 2) where queueWritable:
                if value & 1 == 1 { state.queueEnabled[selected] = true }
            case (C.queueDescriptor..<(C.queueDevice + 8), _) where queueWritable:
                guard let (field, shift, mask) = Self.addressSlice(offset: offset, size: size) else { return }
                func merge(_ old: GuestAddress) -> GuestAddress {
                    GuestAddress((old.rawValue & ~(mask << shift)) | ((value & mask) << shift))
                }
                switch field {
                case 0: state.queues[selected].descriptorTable = merge(state.queues[selected].descriptorTable)
                case 1: state.queues[selected].availableRing = merge(state.queues[selected].availableRing)
                default: state.queues[selected].usedRing = merge(state.queues[selected].usedRing)
                }
            default: break
            }
        }
        if signalNeedsReset { interrupt.signalConfig() }
    }

    /// Applies a device status write. Returns whether activation failed and the driver
    /// must be told through a configuration interrupt.
    private func writeStatus(_ value: UInt8, state: inout Live) -> Bool {
        if value == 0 {
            resetLocked(&state)
            return false
        }
        var newStatus = value & ~VirtioStatus.deviceNeedsReset | (state.status & VirtioStatus.deviceNeedsReset)
        if newStatus & VirtioStatus.featuresOK != 0, state.status & VirtioStatus.featuresOK == 0 {
            // Refuse features the device did not offer, and a driver that is not virtio 1.x.
            let accepted = state.driverFeatures & ~offeredFeatures == 0
                && state.driverFeatures & VirtioFeature.version1 != 0
            if accepted {
                device.acknowledgeFeatures(state.driverFeatures)
            } else {
                newStatus &= ~VirtioStatus.featuresOK
            }
        }
        state.status = newStatus
        let ready = newStatus & (VirtioStatus.featuresOK | VirtioStatus.driverOK) == VirtioStatus.featuresOK | VirtioStatus.driverOK
        guard ready, !state.activated, newStatus & (VirtioStatus.failed | VirtioStatus.deviceNeedsReset) == 0 else {
            return false
        }
        return !activateLocked(&state)
    }

    /// Validates the enabled queues and activates the device; on failure sets
    /// `DEVICE_NEEDS_RESET` and returns `false`.
    private func activateLocked(_ state: inout Live) -> Bool {
        let eventIndex = state.driverFeatures & VirtioFeature.eventIndex != 0
        var queues = state.queues
        for index in queues.indices {
            queues[index].eventIndex = eventIndex
            guard state.queueEnabled[index] else { continue }
            do {
                try queues[index].activate(in: memory)
            } catch {
                state.status |= VirtioStatus.deviceNeedsReset
                state.lastError = .queue(index: index, error)
                return false
            }
        }
        do {
            try device.activate(memory: memory, queues: queues, interrupt: interrupt)
        } catch {
            state.status |= VirtioStatus.deviceNeedsReset
            state.lastError = error
            return false
        }
        state.queues = queues
        state.activated = true
        return true
    }

    /// Returns the transport and the device to their reset state.
    private func resetLocked(_ state: inout Live) {
        device.reset()
        interrupt.reset()
        state.deviceFeatureSelect = 0
        state.driverFeatureSelect = 0
        state.driverFeatures = 0
        state.status = 0
        state.queueSelect = 0
        for index in state.queues.indices {
            state.queues[index].reset()
            state.queueEnabled[index] = false
        }
        state.activated = false
        state.lastError = nil
    }

    /// The 32-bit half `select` of `features` (0 beyond the second half).
    private static func half(_ features: UInt64, select: UInt32) -> UInt64 {
        switch select {
        case 0: features & 0xffff_ffff
        case 1: features >> 32
        default: 0
        }
    }

    /// Decodes an access to the queue address fields into (field, bit shift, value
    /// mask): a 32-bit half at a dword-aligned offset, or the whole 64-bit field.
    private static func addressSlice(offset: UInt64, size: Int) -> (Int, UInt64, UInt64)? {
        let relative = offset - VirtioCommonConfig.queueDescriptor
        let field = Int(relative / 8)
        switch (relative % 8, size) {
        case (0, 8): return (field, 0, UInt64.max)
        case (0, 4): return (field, 0, 0xffff_ffff)
        case (4, 4): return (field, 32, 0xffff_ffff)
        default: return nil
        }
    }
}

/// Why a virtio-pci transport could not be built.
public enum VirtioPCIError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The device has no queues, or more than MSI-X vectors allow (2047).
    case invalidQueueCount(Int)
    /// The device's maximum size for queue `index` is unusable.
    case invalidQueue(index: Int, QueueError)
    /// The configuration space refused the BAR or a capability.
    case pci(PCIError)

    /// A sentence that explains the failure.
    public var description: String {
        switch self {
        case let .invalidQueueCount(count):
            "a virtio device needs between 1 and 2047 queues, this one has \(count)"
        case let .invalidQueue(index, error):
            "queue \(index) of the device cannot be built: \(error)"
        case let .pci(error):
            "the virtio-pci configuration space could not be built: \(error)"
        }
    }
}
