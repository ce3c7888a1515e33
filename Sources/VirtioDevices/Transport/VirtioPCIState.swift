import DeviceModel
import GuestMemory
import PCI
import Synchronization
import VirtioQueue

extension VirtioPCIDevice: StatefulDevice {
    /// One queue as the transport saves it: configuration and positions, enable bit and vector.
    public struct QueueState: Codable, Equatable, Sendable {
        /// Size, ring addresses, ready bit and ring positions (from the device while it runs).
        public var queue: SplitQueueState
        /// Whether the driver wrote `queue_enable`.
        public var enabled: Bool
        /// The MSI-X vector the driver chose for the queue (`0xffff`: none).
        public var vector: UInt16

        /// A queue state with every field given.
        public init(queue: SplitQueueState, enabled: Bool, vector: UInt16) {
            self.queue = queue
            self.enabled = enabled
            self.vector = vector
        }
    }

    /// The whole state of a virtio-pci function and its device, for snapshot and restore.
    public struct State: Codable, Equatable, Sendable {
        /// The configuration space (command, BARs, capabilities' writable bytes).
        public var configuration: PCIConfigurationState
        /// The MSI-X table, pending bits and function bits.
        public var msix: MSIXState
        /// `device_feature_select`.
        public var deviceFeatureSelect: UInt32
        /// `driver_feature_select`.
        public var driverFeatureSelect: UInt32
        /// The features the driver wrote.
        public var driverFeatures: UInt64
        /// The device status byte.
        public var status: UInt8
        /// `queue_select`.
        public var queueSelect: UInt16
        /// Every queue, in index order.
        public var queues: [QueueState]
        /// The MSI-X vector for configuration changes (`0xffff`: none).
        public var configVector: UInt16
        /// `config_generation`.
        public var configGeneration: UInt8
        /// The ISR byte not yet read by the driver.
        public var isr: UInt8
        /// Whether the device was running (DRIVER_OK accepted and no reset since).
        public var activated: Bool
        /// The error that set `DEVICE_NEEDS_RESET`, as text.
        public var lastError: String?
        /// The device-specific state.
        public var device: VirtioDeviceState

        /// A state with every field given.
        public init(configuration: PCIConfigurationState, msix: MSIXState, deviceFeatureSelect: UInt32,
                    driverFeatureSelect: UInt32, driverFeatures: UInt64, status: UInt8, queueSelect: UInt16,
                    queues: [QueueState], configVector: UInt16, configGeneration: UInt8, isr: UInt8,
                    activated: Bool, lastError: String?, device: VirtioDeviceState) {
            self.configuration = configuration
            self.msix = msix
            self.deviceFeatureSelect = deviceFeatureSelect
            self.driverFeatureSelect = driverFeatureSelect
            self.driverFeatures = driverFeatures
            self.status = status
            self.queueSelect = queueSelect
            self.queues = queues
            self.configVector = configVector
            self.configGeneration = configGeneration
            self.isr = isr
            self.activated = activated
            self.lastError = lastError
            self.device = device
        }
    }

    /// The transport's and the device's state, taken under the transport's lock, then
    /// the device's locks, then the interrupt lock (the order register writes take them in).
    public func saveState() -> State {
        state.withLock { live in
            let snapshot = device.saveDeviceState()
            return interrupt.state.withLock { irq in
                let queues = live.queues.indices.map { index in
                    QueueState(queue: snapshot.queues[index] ?? live.queues[index].state,
                               enabled: live.queueEnabled[index], vector: irq.queueVectors[index])
                }
                return State(configuration: live.configuration.saveState(), msix: irq.msix.saveState(),
                             deviceFeatureSelect: live.deviceFeatureSelect, driverFeatureSelect: live.driverFeatureSelect,
                             driverFeatures: live.driverFeatures, status: live.status, queueSelect: live.queueSelect,
                             queues: queues, configVector: irq.configVector, configGeneration: irq.configGeneration,
                             isr: irq.isr, activated: live.activated, lastError: live.lastError.map { "\($0)" },
                             device: snapshot.state)
            }
        }
    }

    /// Restores a saved function into this one, built the normal way from the same
    /// configuration (device, memory, BAR address). A state whose device was running is
    /// activated as DRIVER_OK activates it, with every queue at its saved position, so the
    /// next notification serves exactly the buffers left; a state with `DEVICE_NEEDS_RESET`
    /// stays failed until the driver resets it. The configuration space may carry a BAR
    /// the guest moved: the VMM maps ``bars`` after restoring.
    ///
    /// - Throws: `DeviceStateError` naming the field, with the function unchanged: another
    ///   queue count or size, features not offered, an inconsistent status, a vector
    ///   beyond the MSI-X table, bad queue rings, or a refused configuration space, MSI-X
    ///   or device state.
    public func restoreState(_ saved: State) throws(DeviceStateError) {
        try state.withLock { (live) throws(DeviceStateError) in
            let (configuration, queues) = try check(saved, live: live)
            device.reset()
            if saved.status & VirtioStatus.featuresOK != 0 { device.acknowledgeFeatures(saved.driverFeatures) }
            let running = saved.activated && saved.status & VirtioStatus.deviceNeedsReset == 0
            if running {
                do {
                    try device.activate(memory: memory, queues: queues, interrupt: interrupt)
                } catch {
                    device.reset()
                    throw refuse("activated: the device cannot run with the saved queues: \(error)")
                }
            }
            do throws(DeviceStateError) {
                try device.restoreDeviceState(saved.device)
            } catch {
                device.reset()
                throw error
            }
            live.configuration = configuration
            live.deviceFeatureSelect = saved.deviceFeatureSelect
            live.driverFeatureSelect = saved.driverFeatureSelect
            live.driverFeatures = saved.driverFeatures
            live.status = saved.status
            live.queueSelect = saved.queueSelect
            live.queues = queues
            live.queueEnabled = saved.queues.map(\.enabled)
            live.activated = saved.activated
            live.lastError = saved.lastError.map { .backend("restored: \($0)") }
            interrupt.state.withLock { irq in
                try? irq.msix.restoreState(saved.msix)
                irq.configVector = saved.configVector
                irq.queueVectors = saved.queues.map(\.vector)
                irq.configGeneration = saved.configGeneration
                irq.isr = saved.isr
            }
        }
    }

    private func refuse(_ reason: String) -> DeviceStateError { DeviceStateError(device: name, reason: reason) }

    /// Checks everything that does not need the device; returns the configuration space
    /// and the queues to install.
    private func check(_ saved: State, live: Live) throws(DeviceStateError) -> (PCIConfiguration, [SplitQueue]) {
        guard saved.queues.count == live.queues.count else {
            throw refuse("queues: \(saved.queues.count) saved, this device has \(live.queues.count)")
        }
        let status = saved.status
        if status & VirtioStatus.featuresOK != 0 {
            let extra = saved.driverFeatures & ~offeredFeatures
            guard extra == 0 else {
                throw refuse("driverFeatures: bits 0x\(String(extra, radix: 16)) were not offered by the device")
            }
            guard saved.driverFeatures & VirtioFeature.version1 != 0 else {
                throw refuse("driverFeatures: FEATURES_OK is set without VIRTIO_F_VERSION_1")
            }
        }
        let ready = status & (VirtioStatus.featuresOK | VirtioStatus.driverOK) == VirtioStatus.featuresOK | VirtioStatus.driverOK
        let failed = status & (VirtioStatus.failed | VirtioStatus.deviceNeedsReset) != 0
        if saved.activated, !ready {
            throw refuse("activated: set, but the status 0x\(String(status, radix: 16)) lacks FEATURES_OK or DRIVER_OK")
        }
        if ready, !failed, !saved.activated {
            throw refuse("activated: not set, but the status 0x\(String(status, radix: 16)) has DRIVER_OK and no failure")
        }
        guard saved.isr & ~(VirtioPCIInterrupt.isrQueue | VirtioPCIInterrupt.isrConfig) == 0 else {
            throw refuse("isr: 0x\(String(saved.isr, radix: 16)) has bits besides the queue and configuration bits")
        }
        var configuration = live.configuration
        try configuration.restoreState(saved.configuration)
        let vectorCount = interrupt.state.withLock { $0.msix.vectorCount }
        try interrupt.state.withLock { (irq) throws(DeviceStateError) in try irq.msix.checkState(saved.msix) }
        if let offset = configuration.msixCapabilityOffset {
            let control = configuration.read(offset: offset + 2, size: 2)
            guard (control & 0x8000 != 0) == saved.msix.enabled, (control & 0x4000 != 0) == saved.msix.functionMasked else {
                throw refuse("msix: enable and mask bits differ from the configuration space's message control 0x\(String(control, radix: 16))")
            }
        }
        let vectors = [("configVector", saved.configVector)] + saved.queues.enumerated().map { ("queues[\($0.offset)].vector", $0.element.vector) }
        for (field, vector) in vectors where vector != VirtioPCIInterrupt.noVector && Int(vector) >= vectorCount {
            throw refuse("\(field): vector \(vector) is beyond the MSI-X table of \(vectorCount)")
        }
        let running = saved.activated && status & VirtioStatus.deviceNeedsReset == 0
        let eventIndex = saved.driverFeatures & VirtioFeature.eventIndex != 0
        var queues: [SplitQueue] = []
        for (index, queueState) in saved.queues.enumerated() {
            guard queueState.queue.maxSize == live.queues[index].maxSize else {
                throw refuse("queues[\(index)].maxSize: saved \(queueState.queue.maxSize), this device offers \(live.queues[index].maxSize)")
            }
            if running, queueState.queue.ready != queueState.enabled {
                throw refuse("queues[\(index)].ready: \(queueState.queue.ready) but enabled is \(queueState.enabled) on a running device")
            }
            if saved.activated, queueState.queue.eventIndex != eventIndex {
                throw refuse("queues[\(index)].eventIndex: \(queueState.queue.eventIndex) disagrees with the negotiated features")
            }
            do {
                queues.append(try SplitQueue(restoring: queueState.queue, memory: running ? memory : nil,
                                             translator: live.queues[index].translator))
            } catch {
                throw refuse("queues[\(index)]: \(error)")
            }
        }
        return (configuration, queues)
    }
}
